//! Webhook endpoints and their outbox of deliveries.
//!
//! Events are enqueued with the change that causes them (by [`enqueue_webhooks!`] inside its
//! transaction, or, for an execution's, by the engine's own statement), so a committed change
//! always has its deliveries and a rolled-back one has none. An execution's deliveries name the
//! event that caused them and get their payload on their first attempt. The sender claims due
//! rows with a lease (`claimed_until`), with `SKIP LOCKED` on PostgreSQL, so replicas never
//! send one delivery twice at the same time.

use std::collections::HashMap;

use cp_types::page::PageRequest;
use cp_types::webhook::{
    CreateWebhook, DeliveryStatus, MAX_WEBHOOKS, TEST_EVENT, UpdateWebhook, Webhook, WebhookDelivery, WebhookEvent,
};
use cp_types::{Page, Timestamp, now};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db, with_db_sql, write_tx};
use crate::error::{StoreError, StoreResult, parse};
use crate::executions::webhook_data;
use crate::page::page_of;

/// Inserts one delivery of `$event_type` with `$data` for every enabled endpoint of `$org`
/// subscribed to it, on `$conn` (inside the caller's transaction). `$pg` tells the dialect.
macro_rules! enqueue_webhooks {
    ($conn:expr, $pg:expr, $org:expr, $event_type:expr, $data:expr) => {{
        let event_type: &str = $event_type;
        // On PostgreSQL the endpoints are key-share locked: one deleted meanwhile would make
        // the insert below fail its foreign key and roll back the change that caused the event.
        let sql = if $pg {
            "SELECT id FROM webhooks WHERE organization_id = $1 AND enabled \
             AND (jsonb_exists(events, $2) OR jsonb_exists(events, '*')) FOR KEY SHARE"
        } else {
            "SELECT id FROM webhooks w WHERE organization_id = $1 AND enabled \
             AND EXISTS (SELECT 1 FROM json_each(w.events) WHERE value = $2 OR value = '*')"
        };
        let endpoints: Vec<uuid::Uuid> = sqlx::query_scalar(sql)
            .bind($org)
            .bind(event_type)
            .fetch_all(&mut *$conn)
            .await?;
        if !endpoints.is_empty() {
            let payload = $crate::webhooks::payload(event_type, $data);
            let event_id = uuid::Uuid::now_v7();
            let at = cp_types::now();
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO webhook_deliveries (id, organization_id, webhook_id, event_id, event_type, payload, \
                 status, attempts, next_attempt_at, created_at, updated_at) ",
            );
            q.push_values(&endpoints, |mut b, endpoint| {
                b.push_bind(uuid::Uuid::now_v7())
                    .push_bind($org)
                    .push_bind(*endpoint)
                    .push_bind(event_id)
                    .push_bind(event_type)
                    .push_bind(payload.clone())
                    .push_bind("pending")
                    .push_bind(0i64)
                    .push_bind(at.timestamp_millis())
                    .push_bind(at)
                    .push_bind(at);
            });
            q.build().execute(&mut *$conn).await?;
        }
        endpoints.len()
    }};
}
pub(crate) use enqueue_webhooks;

/// The body of a delivery made now: `{type, timestamp, data}`.
pub fn payload(event_type: &str, data: Value) -> String {
    payload_at(event_type, data, now())
}

/// The body of a delivery of an event that happened `at`.
fn payload_at(event_type: &str, data: Value, at: Timestamp) -> String {
    let event = WebhookEvent {
        event_type: event_type.to_string(),
        timestamp: at,
        data,
    };
    serde_json::to_string(&event).unwrap_or_default()
}

/// `scheme://host[:port]` of an endpoint's URL, for alerts that go to other endpoints
/// (possibly other parties): its path, query or credentials may hold a token.
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}")
}

macro_rules! webhook_columns {
    () => {
        "id, organization_id, url, events, description, enabled, disabled_reason, created_at, updated_at"
    };
}

macro_rules! delivery_columns {
    () => {
        "id, webhook_id, event_id, event_type, status, attempts, last_status_code, last_latency_ms, last_error, \
         next_attempt_at, created_at, updated_at"
    };
}

#[derive(sqlx::FromRow)]
struct WebhookRow {
    id: Uuid,
    organization_id: String,
    url: String,
    events: Json<Vec<String>>,
    description: Option<String>,
    enabled: bool,
    disabled_reason: Option<String>,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl WebhookRow {
    fn into_webhook(self) -> StoreResult<Webhook> {
        Ok(Webhook {
            id: self.id,
            organization_id: self.organization_id,
            url: self.url,
            events: self.events.0,
            description: self.description,
            enabled: self.enabled,
            disabled_reason: self.disabled_reason,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: Uuid,
    webhook_id: Uuid,
    event_id: Uuid,
    event_type: String,
    status: String,
    attempts: i64,
    last_status_code: Option<i64>,
    last_latency_ms: Option<i64>,
    last_error: Option<String>,
    next_attempt_at: i64,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl DeliveryRow {
    fn into_delivery(self) -> StoreResult<WebhookDelivery> {
        let status: DeliveryStatus = parse(&self.status)?;
        Ok(WebhookDelivery {
            id: self.id,
            webhook_id: self.webhook_id,
            event_id: self.event_id,
            event_type: self.event_type,
            status,
            attempts: self.attempts,
            last_status_code: self.last_status_code,
            last_latency_ms: self.last_latency_ms,
            last_error: self.last_error,
            next_attempt_at: (status == DeliveryStatus::Pending)
                .then(|| chrono::DateTime::from_timestamp_millis(self.next_attempt_at))
                .flatten(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// The sealed signing secrets of an endpoint and where it sends.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Endpoint {
    pub url: String,
    pub enabled: bool,
    pub secret: Vec<u8>,
    pub previous_secret: Option<Vec<u8>>,
    /// Unix ms until which the previous secret signs too.
    pub previous_secret_until: Option<i64>,
}

/// A due delivery as claimed: an execution's has no payload until its first attempt.
#[derive(sqlx::FromRow)]
struct DueRow {
    id: Uuid,
    claim_token: Uuid,
    organization_id: String,
    webhook_id: Uuid,
    event_id: Uuid,
    event_type: String,
    payload: Option<String>,
    execution_id: Option<Uuid>,
    event_seq: Option<i64>,
    attempts: i64,
}

/// A due delivery, claimed by one sender.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: Uuid,
    /// This claim's token: only it may record the attempt.
    pub claim_token: Uuid,
    pub organization_id: String,
    pub webhook_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub payload: String,
    pub attempts: i64,
}

/// What one attempt did.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
    /// Succeeded, failed for good, or pending again at this Unix ms.
    pub result: AttemptResult,
}

#[derive(Debug, Clone, Copy)]
pub enum AttemptResult {
    Succeeded,
    Failed,
    RetryAt(i64),
}

impl Store {
    /// The webhook endpoints of one organization.
    pub fn webhooks<'a>(&'a self, org: &'a str) -> Webhooks<'a> {
        Webhooks { db: &self.db, org }
    }

    /// Claims up to `limit` due deliveries of every organization for `lease_ms`, leaving out
    /// those of the `busy` endpoints (which already have as many attempts in flight as they
    /// may), so one slow endpoint cannot take every sending slot.
    pub async fn claim_due_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
        busy: &[Uuid],
    ) -> StoreResult<Vec<DueDelivery>> {
        // A read first: most sweeps find nothing due, and on SQLite the update would wait for
        // the write lock, which the execution writer holds most of the time under load.
        let due: Option<Uuid> = with_db!(&self.db, pool =>
            sqlx::query_scalar(
                "SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 \
                 AND (claimed_until IS NULL OR claimed_until <= $1) LIMIT 1")
                .bind(now_ms).fetch_optional(pool).await)?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let busy: Vec<String> = busy.iter().map(|id| id.simple().to_string()).collect();
        let token = Uuid::now_v7();
        let rows: Vec<DueRow> = with_db_sql!(&self.db, pool, sql = (
            "UPDATE webhook_deliveries SET claimed_until = $2, claim_token = $5 WHERE id IN (SELECT id FROM webhook_deliveries \
               WHERE status = 'pending' AND next_attempt_at <= $1 AND (claimed_until IS NULL OR claimed_until <= $1) \
               AND lower(hex(webhook_id)) NOT IN (SELECT value FROM json_each($4)) \
               ORDER BY next_attempt_at LIMIT $3) \
             RETURNING id, claim_token, organization_id, webhook_id, event_id, event_type, payload, execution_id, \
               event_seq, attempts",
            "UPDATE webhook_deliveries SET claimed_until = $2, claim_token = $5 WHERE id IN (SELECT id FROM webhook_deliveries \
               WHERE status = 'pending' AND next_attempt_at <= $1 AND (claimed_until IS NULL OR claimed_until <= $1) \
               AND replace(webhook_id::text, '-', '') NOT IN (SELECT jsonb_array_elements_text($4)) \
               ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING id, claim_token, organization_id, webhook_id, event_id, event_type, payload, execution_id, \
               event_seq, attempts"
        ) => sqlx::query_as(sql).bind(now_ms).bind(now_ms + lease_ms).bind(limit).bind(Json(&busy)).bind(token).fetch_all(pool).await)?;
        let mut due = Vec::with_capacity(rows.len());
        // One event's deliveries to several endpoints share their body: made once per sweep.
        let mut made: HashMap<(Uuid, i64, String), String> = HashMap::new();
        for r in rows {
            let payload = match (r.payload, r.execution_id, r.event_seq) {
                (Some(p), _, _) => p,
                (None, Some(execution), Some(seq)) => {
                    let key = (execution, seq, r.event_type.clone());
                    let payload = match made.get(&key) {
                        Some(p) => p.clone(),
                        None => {
                            let p = self
                                .execution_payload(&r.organization_id, &r.event_type, execution, seq)
                                .await?;
                            made.entry(key).or_insert(p).clone()
                        }
                    };
                    // Kept, so every attempt signs the same body.
                    with_db!(&self.db, pool =>
                        sqlx::query("UPDATE webhook_deliveries SET payload = $2 WHERE id = $1 AND payload IS NULL")
                            .bind(r.id).bind(&payload).execute(pool).await.map(|r| r.rows_affected()))?;
                    payload
                }
                (None, ..) => return Err(StoreError::Corrupt(format!("delivery {} has no payload", r.id))),
            };
            due.push(DueDelivery {
                id: r.id,
                claim_token: r.claim_token,
                organization_id: r.organization_id,
                webhook_id: r.webhook_id,
                event_id: r.event_id,
                event_type: r.event_type,
                payload,
                attempts: r.attempts,
            });
        }
        Ok(due)
    }

    /// The body of an execution's `event_type` caused by its event `seq`. An execution deleted
    /// meanwhile leaves its id alone.
    async fn execution_payload(&self, org: &str, event_type: &str, execution: Uuid, seq: i64) -> StoreResult<String> {
        let executions = self.executions(org);
        let event = executions.events(execution, seq - 1, 1).await?.into_iter().next();
        let payload = match (executions.get(execution).await, event) {
            (Ok(e), Some(event)) if event_type == "error" => {
                let mut data = webhook_data(&e, &event);
                data["kind"] = event.data.get("error_kind").cloned().unwrap_or(Value::Null);
                data["message"] = Value::String(format!(
                    "execution {execution} failed: {}",
                    event
                        .data
                        .get("error_message")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given")
                ));
                payload_at(event_type, data, event.timestamp)
            }
            (Ok(e), Some(event)) => payload_at(event_type, webhook_data(&e, &event), event.timestamp),
            (Err(StoreError::NotFound), _) | (Ok(_), None) => {
                payload(event_type, serde_json::json!({"execution": {"id": execution}}))
            }
            (Err(e), _) => return Err(e),
        };
        Ok(payload)
    }

    /// Gives a claimed delivery back, to be claimed again from `at_ms` (its endpoint was busy).
    pub async fn defer_delivery(&self, id: Uuid, at_ms: i64) -> StoreResult<()> {
        with_db!(&self.db, pool =>
            sqlx::query("UPDATE webhook_deliveries SET claimed_until = $2 WHERE id = $1")
                .bind(id).bind(at_ms).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Records an attempt of a claimed delivery and releases the claim, unless the claim was
    /// lost meanwhile (its lease ran out and another sender took it, or it was redelivered):
    /// then the newer claim's result counts and this one is dropped.
    pub async fn record_attempt(&self, id: Uuid, token: Uuid, attempt: &Attempt) -> StoreResult<()> {
        let (status, next) = match attempt.result {
            AttemptResult::Succeeded => ("succeeded", None),
            AttemptResult::Failed => ("failed", None),
            AttemptResult::RetryAt(at) => ("pending", Some(at)),
        };
        with_db!(&self.db, pool =>
            sqlx::query(
                "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, \
                   next_attempt_at = COALESCE($3, next_attempt_at), claimed_until = NULL, last_status_code = $4, \
                   last_latency_ms = $5, last_error = $6, updated_at = $7, claim_token = NULL \
                 WHERE id = $1 AND claim_token = $8")
                .bind(id).bind(status).bind(next).bind(attempt.status_code).bind(attempt.latency_ms)
                .bind(&attempt.error).bind(now()).bind(token)
                .execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }
}

/// The webhook endpoints of one organization.
pub struct Webhooks<'a> {
    db: &'a Db,
    org: &'a str,
}

impl Webhooks<'_> {
    pub async fn list(&self, page: PageRequest) -> StoreResult<Page<Webhook>> {
        let rows: Vec<WebhookRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", webhook_columns!(), " FROM webhooks WHERE organization_id = $1 \
                ORDER BY id DESC LIMIT $2 OFFSET $3"))
                .bind(self.org).bind(page.limit).bind(page.offset).fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar("SELECT COUNT(*) FROM webhooks WHERE organization_id = $1")
                    .bind(self.org).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, WebhookRow::into_webhook).await
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<Webhook> {
        let row: WebhookRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", webhook_columns!(), " FROM webhooks WHERE organization_id = $1 AND id = $2"))
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_webhook()
    }

    /// Stores an endpoint with its sealed secret; at most [`MAX_WEBHOOKS`] per organization.
    pub async fn create(&self, id: Uuid, req: &CreateWebhook, sealed_secret: &[u8]) -> StoreResult<Webhook> {
        let at = now();
        write_tx!(self.db, tx, _pg => {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhooks WHERE organization_id = $1")
                .bind(self.org).fetch_one(&mut *tx).await?;
            if count >= MAX_WEBHOOKS {
                return Err(StoreError::Conflict(format!("an organization has at most {MAX_WEBHOOKS} webhooks")));
            }
            sqlx::query(
                "INSERT INTO webhooks (id, organization_id, url, events, description, enabled, secret, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)")
                .bind(id).bind(self.org).bind(req.url.trim()).bind(Json(&req.events)).bind(&req.description)
                .bind(req.enabled.unwrap_or(true)).bind(sealed_secret).bind(at)
                .execute(&mut *tx).await?;
        });
        self.get(id).await
    }

    /// Partial update; re-enabling clears the reason the server disabled it.
    pub async fn update(&self, id: Uuid, req: &UpdateWebhook) -> StoreResult<Webhook> {
        let updated = with_db!(self.db, pool =>
            sqlx::query(
                "UPDATE webhooks SET url = COALESCE($3, url), events = COALESCE($4, events), \
                   description = CASE WHEN $5 THEN $6 ELSE description END, enabled = COALESCE($7, enabled), \
                   disabled_reason = CASE WHEN $7 THEN NULL ELSE disabled_reason END, updated_at = $8 \
                 WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).bind(req.url.as_deref().map(str::trim)).bind(req.events.as_ref().map(Json))
                .bind(req.description.is_some()).bind(req.description.clone().flatten()).bind(req.enabled).bind(now())
                .execute(pool).await.map(|r| r.rows_affected()))?;
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        self.get(id).await
    }

    pub async fn delete(&self, id: Uuid) -> StoreResult<()> {
        let deleted = with_db!(self.db, pool =>
            sqlx::query("DELETE FROM webhooks WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Replaces the signing secret; the current one keeps signing until `previous_until_ms`.
    pub async fn rotate(&self, id: Uuid, sealed_secret: &[u8], previous_until_ms: i64) -> StoreResult<Webhook> {
        let updated = with_db!(self.db, pool =>
            sqlx::query(
                "UPDATE webhooks SET previous_secret = secret, previous_secret_until = $4, secret = $3, updated_at = $5 \
                 WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).bind(sealed_secret).bind(previous_until_ms).bind(now())
                .execute(pool).await.map(|r| r.rows_affected()))?;
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        self.get(id).await
    }

    /// Where and with which secrets a delivery of this endpoint is sent.
    pub async fn endpoint(&self, id: Uuid) -> StoreResult<Endpoint> {
        with_db!(self.db, pool =>
            sqlx::query_as("SELECT url, enabled, secret, previous_secret, previous_secret_until FROM webhooks \
                            WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)
    }

    /// Stops deliveries to the endpoint, saying why, and tells the organization's other
    /// endpoints that take `error` events: nobody may be watching the one that went away.
    pub async fn disable(&self, id: Uuid, reason: &str) -> StoreResult<()> {
        let org = self.org;
        write_tx!(self.db, tx, pg => {
            let url: Option<String> = sqlx::query_scalar(
                "UPDATE webhooks SET enabled = FALSE, disabled_reason = $3, updated_at = $4 \
                 WHERE organization_id = $1 AND id = $2 AND enabled RETURNING url")
                .bind(org).bind(id).bind(reason).bind(now()).fetch_optional(&mut *tx).await?;
            if let Some(url) = url {
                let origin = origin(&url);
                let data = serde_json::json!({
                    "kind": "webhook_disabled",
                    "message": format!("webhook endpoint {id} ({origin}) was disabled: {reason}"),
                    "webhook": {"id": id, "origin": origin, "disabled_reason": reason},
                });
                enqueue_webhooks!(tx, pg, org, "error", data);
            }
        });
        Ok(())
    }

    /// The deliveries of an endpoint, newest first.
    pub async fn deliveries(&self, webhook: Uuid, page: PageRequest) -> StoreResult<Page<WebhookDelivery>> {
        self.get(webhook).await?;
        let rows: Vec<DeliveryRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", delivery_columns!(), " FROM webhook_deliveries \
                WHERE organization_id = $1 AND webhook_id = $2 ORDER BY id DESC LIMIT $3 OFFSET $4"))
                .bind(self.org).bind(webhook).bind(page.limit).bind(page.offset).fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE organization_id = $1 AND webhook_id = $2")
                    .bind(self.org).bind(webhook).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, DeliveryRow::into_delivery).await
    }

    pub async fn delivery(&self, webhook: Uuid, id: Uuid) -> StoreResult<WebhookDelivery> {
        let row: DeliveryRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", delivery_columns!(), " FROM webhook_deliveries \
                WHERE organization_id = $1 AND webhook_id = $2 AND id = $3"))
                .bind(self.org).bind(webhook).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_delivery()
    }

    /// Sends a delivery again now (same message id), whatever its status; a conflict while an
    /// attempt of it is in flight.
    pub async fn redeliver(&self, webhook: Uuid, id: Uuid) -> StoreResult<WebhookDelivery> {
        let at = now();
        let updated = with_db!(self.db, pool =>
            sqlx::query("UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $4, claimed_until = NULL, \
                           claim_token = NULL, updated_at = $5 \
                         WHERE organization_id = $1 AND webhook_id = $2 AND id = $3 \
                           AND (claimed_until IS NULL OR claimed_until <= $4)")
                .bind(self.org).bind(webhook).bind(id).bind(at.timestamp_millis()).bind(at)
                .execute(pool).await.map(|r| r.rows_affected()))?;
        if updated == 0 {
            self.delivery(webhook, id).await?;
            return Err(StoreError::Conflict(
                "an attempt of this delivery is in flight; try again in a moment".into(),
            ));
        }
        self.delivery(webhook, id).await
    }

    /// Queues a `webhook.test` event for this endpoint only.
    pub async fn enqueue_test(&self, webhook: Uuid) -> StoreResult<WebhookDelivery> {
        self.get(webhook).await?;
        let id = Uuid::now_v7();
        let at = now();
        let data = serde_json::json!({"webhook_id": webhook, "message": "a test event from the control plane"});
        with_db!(self.db, pool =>
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, organization_id, webhook_id, event_id, event_type, payload, status, \
                   attempts, next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $8, $8)")
                .bind(id).bind(self.org).bind(webhook).bind(Uuid::now_v7()).bind(TEST_EVENT)
                .bind(payload(TEST_EVENT, data)).bind(at.timestamp_millis()).bind(at)
                .execute(pool).await.map(|r| r.rows_affected()))?;
        self.delivery(webhook, id).await
    }
}

#[cfg(test)]
mod origin_tests {
    use super::origin;

    #[test]
    fn an_alert_names_only_the_endpoint_s_origin() {
        assert_eq!(
            origin("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com"
        );
        assert_eq!(
            origin("https://user:pw@example.com:8443/x?token=1"),
            "https://example.com:8443"
        );
        assert_eq!(origin("http://127.0.0.1:9/hook#frag"), "http://127.0.0.1:9");
    }
}
