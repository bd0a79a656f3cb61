//! Outbound webhooks: signing secrets, the target check, and the sender that delivers the
//! outbox (Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`).
//!
//! The sender claims due deliveries in small batches and sends each on a task of its own, so
//! a slow or dead endpoint holds only its own deliveries. A failed attempt is retried on a
//! fixed schedule with jitter that spans more than 72 hours, then the delivery fails; a 410
//! answer disables the endpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use cp_store::webhooks::{Attempt, AttemptResult, DueDelivery};
use dashmap::DashMap;
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::{Notify, Semaphore};
use uuid::Uuid;

use super::crypto::{Cipher, webhook_aad};
use crate::state::AppState;

/// Delays before the 2nd, 3rd, … attempt, in retry units (seconds unless a test shrinks
/// them): 5 s, 5 min, 30 min, 2 h, 5 h, then 10 h eight times: the last attempt comes about
/// 87.6 h after the first (more than 72 h even with every jitter at its low end).
const RETRY_DELAYS: &[u64] = &[
    5, 300, 1800, 7200, 18_000, 36_000, 36_000, 36_000, 36_000, 36_000, 36_000, 36_000, 36_000,
];
/// How long one attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a claimed delivery stays with its sender before another may take it.
const CLAIM_MS: i64 = 60_000;
/// Deliveries in flight per replica.
const IN_FLIGHT: usize = 64;
/// Deliveries in flight per endpoint and replica: a slow endpoint holds at most these slots.
const PER_ENDPOINT: usize = 4;
/// How long a delivery whose endpoint is busy waits before it may be claimed again.
const DEFER_MS: i64 = 500;
/// How long the previous secret keeps signing after a rotation.
pub const ROTATION_OVERLAP_MS: i64 = 24 * 3600 * 1000;

fn http_client(public_only: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve the name itself, past the address check.
        .no_proxy()
        .user_agent(concat!("kubiya-cp-webhooks/", env!("CARGO_PKG_VERSION")));
    let builder = if public_only {
        cp_net::public_only(builder)
    } else {
        builder
    };
    builder.build().expect("a TLS backend is compiled in")
}

/// Shared by the sender and the handlers.
pub struct WebhookSender {
    /// For organizations that do not allow private targets: connects to public addresses only.
    public_client: reqwest::Client,
    /// For organizations that allow private targets.
    any_client: reqwest::Client,
    /// Rung when an outbox row may have been written, so deliveries go out at once.
    pub wake: Notify,
    slots: Arc<Semaphore>,
    /// Attempts in flight by endpoint.
    in_flight: DashMap<Uuid, usize>,
}

impl WebhookSender {
    /// Takes one of the endpoint's slots, unless all are taken.
    fn reserve(&self, endpoint: Uuid) -> bool {
        let mut n = self.in_flight.entry(endpoint).or_insert(0);
        if *n >= PER_ENDPOINT {
            return false;
        }
        *n += 1;
        true
    }

    fn release(&self, endpoint: Uuid) {
        if let Some(mut n) = self.in_flight.get_mut(&endpoint) {
            *n = n.saturating_sub(1);
        }
        self.in_flight.remove_if(&endpoint, |_, n| *n == 0);
    }

    fn busy(&self) -> Vec<Uuid> {
        self.in_flight
            .iter()
            .filter(|e| *e.value() >= PER_ENDPOINT)
            .map(|e| *e.key())
            .collect()
    }
}

impl Default for WebhookSender {
    fn default() -> Self {
        WebhookSender {
            public_client: http_client(true),
            any_client: http_client(false),
            wake: Notify::new(),
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
            in_flight: DashMap::new(),
        }
    }
}

/// One endpoint's sending slot, given back (and the sender woken) when dropped.
struct Slot(Arc<WebhookSender>, Uuid);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release(self.1);
        self.0.wake.notify_one();
    }
}

/// A new signing secret: `whsec_` and the base64 of 32 random bytes.
pub fn new_secret() -> String {
    format!("whsec_{}", BASE64.encode(rand::random::<[u8; 32]>()))
}

/// Seals a signing secret for storage.
pub fn seal_secret(state: &AppState, org: &str, id: Uuid, secret: &str) -> anyhow::Result<Vec<u8>> {
    Ok(Cipher::new(&state.config.master_key).seal(secret.as_bytes(), &webhook_aad(org, id))?)
}

/// `v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>`, the key being the secret's bytes after
/// `whsec_`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let key = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = BASE64.decode(key).unwrap_or_else(|_| key.as_bytes().to_vec());
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// Refuses a URL whose host is or resolves to a private address (unless `allow_private`), or
/// that does not parse or resolve (the rule the worker's http tool follows too). The check runs
/// when the endpoint is written and again before each attempt (the name may resolve elsewhere
/// by then).
pub async fn check_target(url: &str, allow_private: bool) -> Result<(), String> {
    cp_net::check_target(url, allow_private).await.map_err(|e| {
        if e.contains("private") {
            format!("{e} (allowed only with the organization setting webhook_allow_private_targets)")
        } else {
            e
        }
    })
}

/// Delivers the outbox until the server stops: claims due deliveries when woken or every
/// `poll`, and sends each on a task of its own.
pub async fn run(state: AppState, poll: Duration) {
    let sender = state.webhooks.clone();
    loop {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let free = sender.slots.available_permits() as i64;
        let due = if free == 0 {
            Ok(Vec::new())
        } else {
            let busy = sender.busy();
            state.store.claim_due_deliveries(now_ms, CLAIM_MS, free, &busy).await
        };
        match due {
            Ok(due) => {
                let full = !due.is_empty() && due.len() as i64 == free;
                for d in due {
                    if !sender.reserve(d.webhook_id) {
                        if let Err(e) = state.store.defer_delivery(d.id, now_ms + DEFER_MS).await {
                            tracing::warn!(error = %e, "cannot defer a webhook delivery");
                        }
                        continue;
                    }
                    let Ok(permit) = sender.slots.clone().acquire_owned().await else {
                        return;
                    };
                    let state = state.clone();
                    tokio::spawn(async move {
                        // Released however the attempt ends, a panic included.
                        let _slot = Slot(state.webhooks.clone(), d.webhook_id);
                        attempt(&state, d).await;
                        drop(permit);
                    });
                }
                if full {
                    continue;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot claim webhook deliveries"),
        }
        let _ = tokio::time::timeout(poll, sender.wake.notified()).await;
    }
}

/// One attempt of one delivery, recorded whatever happens.
async fn attempt(state: &AppState, d: DueDelivery) {
    let started = Instant::now();
    let outcome = send(state, &d).await;
    let latency_ms = started.elapsed().as_millis() as i64;
    let (status_code, error, result) = match outcome {
        Sent::Ok(code) => (Some(code), None, AttemptResult::Succeeded),
        Sent::Gone(code) => {
            let reason = format!("the endpoint answered {code} Gone");
            if let Err(e) = state
                .store
                .webhooks(&d.organization_id)
                .disable(d.webhook_id, &reason)
                .await
            {
                tracing::warn!(error = %e, "cannot disable a gone webhook");
            }
            (Some(code), Some(reason), AttemptResult::Failed)
        }
        Sent::Final(message) => (None, Some(message), AttemptResult::Failed),
        Sent::Retry(code, message) => (code, Some(message), retry(state, d.attempts)),
    };
    let record = Attempt {
        status_code,
        latency_ms,
        error,
        result,
    };
    if let Err(e) = state.store.record_attempt(d.id, d.claim_token, &record).await {
        // The claim runs out and the delivery is attempted again: at least once, never lost.
        tracing::warn!(error = %e, delivery = %d.id, "cannot record a webhook attempt");
    }
}

/// When the next attempt is due after `attempts` earlier ones and this failure, or failed for
/// good when the schedule is spent. ±10% jitter spreads retries of many deliveries.
fn retry(state: &AppState, attempts: i64) -> AttemptResult {
    let Some(units) = RETRY_DELAYS.get(attempts as usize) else {
        return AttemptResult::Failed;
    };
    let unit_ms = state.config.webhook_retry_unit.as_millis() as f64;
    let jitter = 0.9 + rand::random::<f64>() * 0.2;
    let delay_ms = (*units as f64 * unit_ms * jitter) as i64;
    AttemptResult::RetryAt(chrono::Utc::now().timestamp_millis() + delay_ms.max(1))
}

enum Sent {
    Ok(i64),
    Gone(i64),
    Retry(Option<i64>, String),
    Final(String),
}

async fn send(state: &AppState, d: &DueDelivery) -> Sent {
    let org = d.organization_id.as_str();
    let endpoint = match state.store.webhooks(org).endpoint(d.webhook_id).await {
        Ok(e) => e,
        Err(cp_store::StoreError::NotFound) => return Sent::Final("the endpoint was deleted".into()),
        Err(e) => return Sent::Retry(None, format!("cannot load the endpoint: {e}")),
    };
    if !endpoint.enabled {
        return Sent::Final("the endpoint is disabled".into());
    }
    let allow_private = match state.store.org_settings(org).await {
        Ok(s) => s.webhook_allow_private_targets && state.config.allow_private_webhook_targets,
        Err(e) => return Sent::Retry(None, format!("cannot read the organization's settings: {e}")),
    };
    if let Err(reason) = check_target(&endpoint.url, allow_private).await {
        return Sent::Retry(None, reason);
    }
    let cipher = Cipher::new(&state.config.master_key);
    let aad = webhook_aad(org, d.webhook_id);
    let Ok(secret) = cipher.open_string(&endpoint.secret, &aad) else {
        return Sent::Final("the signing secret does not decrypt (was the master key changed?)".into());
    };
    let id = format!("msg_{}", d.event_id.simple());
    let timestamp = chrono::Utc::now().timestamp();
    let mut signature = sign(&secret, &id, timestamp, &d.payload);
    // During a rotation both secrets sign, so receivers can switch at their pace.
    let now_ms = chrono::Utc::now().timestamp_millis();
    if let (Some(previous), Some(until)) = (&endpoint.previous_secret, endpoint.previous_secret_until)
        && until > now_ms
        && let Ok(previous) = cipher.open_string(previous, &aad)
    {
        signature = format!("{signature} {}", sign(&previous, &id, timestamp, &d.payload));
    }
    let client = if allow_private {
        &state.webhooks.any_client
    } else {
        &state.webhooks.public_client
    };
    let answer = client
        .post(&endpoint.url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(d.payload.clone())
        .send()
        .await;
    match answer {
        Ok(r) => {
            let code = i64::from(r.status().as_u16());
            match code {
                200..=299 => Sent::Ok(code),
                410 => Sent::Gone(code),
                _ => Sent::Retry(Some(code), format!("the endpoint answered {code}")),
            }
        }
        Err(e) if e.is_timeout() => Sent::Retry(None, format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())),
        Err(e) => Sent::Retry(None, format!("cannot reach the endpoint: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_spans_more_than_72_hours() {
        let total: u64 = RETRY_DELAYS.iter().sum();
        assert!(total * 9 / 10 > 72 * 3600, "{total}");
    }

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
