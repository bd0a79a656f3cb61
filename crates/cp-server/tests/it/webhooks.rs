//! Outbound webhooks (API §8) against a real HTTP receiver on loopback: CRUD and target rules,
//! Standard Webhooks signatures checked with an independent HMAC, retries, filters, the
//! delivery log, redelivery, test events, 410, a restart before delivery, and (PostgreSQL)
//! two replicas sending each delivery once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::worker::TestWorker;
use crate::common::{TestApp, assert_error, json};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use cp_types::org::Role;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A webhook receiver: records every request and answers with the next status of `script`
/// (200 once the script is spent).
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Vec<u16>>>,
    /// A status for the first request of one event type, before the script is consulted
    /// (deliveries of different events may arrive in either order).
    first_of: Arc<Mutex<Option<(String, u16)>>>,
    /// How long each answer takes.
    delay: Arc<Mutex<Duration>>,
}

impl Receiver {
    async fn start(&self) -> String {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    fn answer(&self, statuses: &[u16]) {
        *self.script.lock().unwrap() = statuses.to_vec();
    }

    /// Answers the next request of `event_type` with `status`.
    fn answer_first_of(&self, event_type: &str, status: u16) {
        *self.first_of.lock().unwrap() = Some((event_type.to_string(), status));
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests of `event_type` came in; all of that type. The deadline is
    /// generous: a loaded 2-core CI machine was seen needing more than 5 s.
    async fn wait_for(&self, event_type: &str, n: usize) -> Vec<Received> {
        for _ in 0..400 {
            let of_type: Vec<Received> = self
                .got()
                .into_iter()
                .filter(|r| r.json()["type"] == event_type)
                .collect();
            if of_type.len() >= n {
                return of_type;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {n} {event_type} deliveries: {:?}", self.got());
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let delay = *r.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let event_type = serde_json::from_str::<Value>(&body).ok().map(|b| b["type"].clone());
    r.got.lock().unwrap().push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body,
    });
    let mut first_of = r.first_of.lock().unwrap();
    if let Some((wanted, status)) = first_of.clone()
        && event_type.is_some_and(|t| t == wanted.as_str())
    {
        *first_of = None;
        return StatusCode::from_u16(status).unwrap();
    }
    let mut script = r.script.lock().unwrap();
    let status = if script.is_empty() { 200 } else { script.remove(0) };
    StatusCode::from_u16(status).unwrap()
}

/// HMAC-SHA256 written out from its definition (RFC 2104), independent of the server's.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::digest([pad(0x36), message.to_vec()].concat());
    Sha256::digest([pad(0x5c), inner.to_vec()].concat()).to_vec()
}

/// Whether one of the `v1,` signatures of `r` was made with `secret`.
fn signed_with(r: &Received, secret: &str) -> bool {
    let key = BASE64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let expected = BASE64.encode(hmac_sha256(
        &key,
        format!("{}.{}.{}", r.id, r.timestamp, r.body).as_bytes(),
    ));
    r.signature.split(' ').any(|s| s == format!("v1,{expected}"))
}

pub(crate) async fn allow_private(app: &TestApp) {
    let r = app
        .req(Method::PATCH, "/api/v1/organization/settings")
        .json(&json!({"webhook_allow_private_targets": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn webhook(app: &TestApp, url: &str, events: Value) -> Value {
    let r = app
        .post("/api/v1/webhooks", json!({"url": url, "events": events}))
        .await;
    let status = r.status();
    let v = json(r).await;
    assert_eq!(status, 201, "{v}");
    v
}

/// Runs one execution to `completed` through a worker speaking the protocol.
async fn run_one(app: &TestApp, worker_key: &str, queue: &str, agent: &str) -> String {
    let r = app
        .post(
            &format!("/api/v1/agents/{agent}/execute"),
            json!({"prompt": "hi", "worker_queue_id": queue}),
        )
        .await;
    let id = json(r).await["execution_id"].as_str().unwrap().to_string();
    let worker = TestWorker::start(&app.url, worker_key, queue, "hook-host").await;
    let claim = worker.claim(20).await;
    assert_eq!(worker.complete(&claim, "the answer").await.status(), 200);
    worker.disconnect().await;
    id
}

async fn setup_run(app: &TestApp) -> (String, String, String) {
    let envs = json(app.get("/api/v1/environments").await).await;
    let env = envs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "default")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let q = json(
        app.post(
            &format!("/api/v1/environments/{env}/worker-queues"),
            json!({"name": "hooks"}),
        )
        .await,
    )
    .await;
    let agent = json(app.post("/api/v1/agents", json!({"name": "hooked"})).await).await;
    let key = app.key("default", Role::Worker).await;
    (
        q["id"].as_str().unwrap().to_string(),
        agent["id"].as_str().unwrap().to_string(),
        key,
    )
}

fn fast(c: &mut cp_server::ServerConfig) {
    c.webhook_retry_unit = Duration::from_millis(2);
}

both_backends! {
    async fn webhooks_crud_secrets_and_target_rules(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let local = "http://127.0.0.1:9/hook";
        // Private targets are refused until the organization allows them.
        for url in [local, "http://10.0.0.7/x", "http://[::1]:8080/", "http://169.254.169.254/latest", "http://localhost:9/"] {
            let err = assert_error(app.post("/api/v1/webhooks", json!({"url": url, "events": ["*"]})).await, 422, "VALIDATION_ERROR").await;
            assert_eq!(err["details"]["field"], "url", "{url}: {err}");
        }
        for bad in [json!({"url": "ftp://example.com", "events": ["*"]}), json!({"url": local, "events": []}),
                    json!({"url": local, "events": ["execution.exploded"]}), json!({"url": 5, "events": ["*"]})] {
            assert_error(app.post("/api/v1/webhooks", bad).await, 422, "VALIDATION_ERROR").await;
        }
        allow_private(&app).await;
        let w = webhook(&app, local, json!(["execution.completed", "policy.denied"])).await;
        let secret = w["secret"].as_str().unwrap().to_string();
        assert!(secret.starts_with("whsec_") && BASE64.decode(&secret[6..]).unwrap().len() == 32, "{w}");
        assert_eq!((w["enabled"].as_bool(), w["events"].clone()), (Some(true), json!(["execution.completed", "policy.denied"])));
        let path = format!("/api/v1/webhooks/{}", w["id"].as_str().unwrap());
        let got = json(app.get(&path).await).await;
        assert!(got.get("secret").is_none(), "{got}");
        let listed = json(app.get("/api/v1/webhooks").await).await;
        assert_eq!(listed["total"], 1);
        assert!(!listed.to_string().contains(&secret));
        let r = app.req(Method::PATCH, &path).json(&json!({"events": ["*"], "description": "all"})).send().await.unwrap();
        assert_eq!(json(r).await["events"], json!(["*"]));
        let rotated = json(app.post(&format!("{path}/rotate-secret"), json!({})).await).await;
        let new_secret = rotated["secret"].as_str().unwrap();
        assert!(new_secret.starts_with("whsec_") && new_secret != secret);

        // Another organization sees none of it.
        let other = app.org_with_key("hooks-other", Role::Admin).await;
        for (m, p) in [(Method::GET, path.clone()), (Method::PATCH, path.clone()), (Method::DELETE, path.clone()),
                       (Method::POST, format!("{path}/rotate-secret")), (Method::POST, format!("{path}/test")),
                       (Method::GET, format!("{path}/deliveries"))] {
            let r = app.req_as(&other, m, &p).json(&json!({})).send().await.unwrap();
            assert_error(r, 404, "NOT_FOUND").await;
        }
        let viewer = app.key("default", Role::Viewer).await;
        let r = app.req_as(&viewer, Method::POST, "/api/v1/webhooks").json(&json!({"url": local, "events": ["*"]})).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;
        let r = app.req(Method::DELETE, &path).send().await.unwrap();
        assert_eq!(json(r).await["deleted"], true);
        assert_error(app.get(&path).await, 404, "NOT_FOUND").await;
    }

    async fn deliveries_are_signed_filtered_retried_and_logged(backend: Backend) {
        let app = TestApp::spawn_with(backend, fast).await;
        app.unlimited().await;
        allow_private(&app).await;
        let receiver = Receiver::default();
        let url = receiver.start().await;
        let w = webhook(&app, &url, json!(["execution.started", "execution.completed"])).await;
        let secret = w["secret"].as_str().unwrap().to_string();
        let hook = format!("/api/v1/webhooks/{}", w["id"].as_str().unwrap());
        // An endpoint for failures only gets nothing from a run that completes.
        let failures = webhook(&app, &url.replace("/hook", "/never"), json!(["execution.failed"])).await;

        // The first attempt of `execution.started` fails, then it is retried.
        receiver.answer_first_of("execution.started", 500);
        let (queue, agent, key) = setup_run(&app).await;
        let execution = run_one(&app, &key, &queue, &agent).await;
        let started = receiver.wait_for("execution.started", 2).await;
        let completed = receiver.wait_for("execution.completed", 1).await;
        assert_eq!(started[0].id, started[1].id, "a retry keeps the message id");
        assert_ne!(started[0].id, completed[0].id);
        for r in receiver.got() {
            assert!(signed_with(&r, &secret), "bad signature: {r:?}");
            assert!(!signed_with(&r, "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="));
            let ts: i64 = r.timestamp.parse().unwrap();
            assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
        }
        let body = completed[0].json();
        assert_eq!(body["data"]["execution"]["id"], execution.as_str());
        assert_eq!(body["data"]["execution"]["status"], "completed");
        assert_eq!(body["data"]["execution"]["response"], "the answer");
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(body["data"]["execution"].get("execution_environment").is_none());

        // The delivery log (the last attempt is recorded just after its answer).
        let mut first = json!(null);
        for _ in 0..50 {
            let log = json(app.get(&format!("{hook}/deliveries")).await).await;
            assert_eq!(log["total"], 2, "{log}");
            first = log["items"].as_array().unwrap().iter().find(|d| d["event_type"] == "execution.started").unwrap().clone();
            if first["status"] != "pending" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!((first["status"].as_str(), first["attempts"].as_i64(), first["last_status_code"].as_i64()),
            (Some("succeeded"), Some(2), Some(200)), "{first}");
        assert!(first["last_latency_ms"].is_number() && first["next_attempt_at"].is_null());
        assert_eq!(json(app.get(&format!("/api/v1/webhooks/{}/deliveries", failures["id"].as_str().unwrap())).await).await["total"], 0);

        // Redelivery sends the same message again; a test event goes to this endpoint only.
        let again = json(app.post(&format!("{hook}/deliveries/{}/redeliver", first["id"].as_str().unwrap()), json!({})).await).await;
        assert_eq!(again["status"], "pending");
        let started = receiver.wait_for("execution.started", 3).await;
        assert_eq!(started[2].id, started[0].id);
        let test = json(app.post(&format!("{hook}/test"), json!({})).await).await;
        assert_eq!(test["event_type"], "webhook.test");
        receiver.wait_for("webhook.test", 1).await;
        assert_error(app.post(&format!("{hook}/deliveries/{}/redeliver", uuid::Uuid::now_v7()), json!({})).await, 404, "NOT_FOUND").await;

        // After a rotation both secrets sign.
        let rotated = json(app.post(&format!("{hook}/rotate-secret"), json!({})).await).await;
        let new_secret = rotated["secret"].as_str().unwrap().to_string();
        app.post(&format!("{hook}/test"), json!({})).await;
        let tests = receiver.wait_for("webhook.test", 2).await;
        assert!(signed_with(&tests[1], &secret) && signed_with(&tests[1], &new_secret), "{:?}", tests[1]);

        // A 410 disables the endpoint for good, and the endpoints that take `error` events
        // are told (the disabled one is not).
        let watcher = Receiver::default();
        let watcher_url = watcher.start().await;
        webhook(&app, &watcher_url, json!(["error"])).await;
        receiver.answer(&[410]);
        app.post(&format!("{hook}/test"), json!({})).await;
        receiver.wait_for("webhook.test", 3).await;
        let mut disabled = json!(null);
        for _ in 0..50 {
            disabled = json(app.get(&hook).await).await;
            if disabled["enabled"] == false {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(disabled["enabled"], false, "{disabled}");
        assert!(disabled["disabled_reason"].as_str().unwrap().contains("410"));
        let failed = json(app.get(&format!("{hook}/deliveries?limit=1")).await).await;
        assert_eq!(failed["items"][0]["status"], "failed");
        let alert = watcher.wait_for("error", 1).await[0].json();
        assert_eq!((alert["data"]["kind"].as_str(), alert["data"]["webhook"]["id"].as_str()),
            (Some("webhook_disabled"), w["id"].as_str()), "{alert}");
        assert!(alert["data"]["webhook"]["disabled_reason"].as_str().unwrap().contains("410"), "{alert}");
        // Only the endpoint's origin travels: its path may hold a token.
        assert_eq!(alert["data"]["webhook"]["origin"].as_str(), url.strip_suffix("/hook"), "{alert}");
        assert!(!alert.to_string().contains("/hook"), "{alert}");
        assert!(receiver.got().iter().all(|r| r.json()["type"] != "error"), "the disabled endpoint got the alert");
    }

    async fn a_denial_and_worker_changes_are_announced(backend: Backend) {
        let app = TestApp::spawn_with(backend, fast).await;
        app.unlimited().await;
        allow_private(&app).await;
        let receiver = Receiver::default();
        let url = receiver.start().await;
        webhook(&app, &url, json!(["policy.denied", "worker.status_changed"])).await;
        let (queue, agent, key) = setup_run(&app).await;
        let p = json(app.post("/api/v1/policies", json!({"name": "no", "policy_content": "package no\n\ndeny contains \"never\" if input.action == \"execute\"\n"})).await).await;
        app.post("/api/v1/policies/associations", json!({"policy_id": p["id"], "entity_type": "agent", "entity_id": agent})).await;
        let r = app.post(&format!("/api/v1/agents/{agent}/execute"), json!({"prompt": "x", "worker_queue_id": queue})).await;
        assert_eq!(r.status(), 403);
        let denied = receiver.wait_for("policy.denied", 1).await;
        let d = denied[0].json();
        assert_eq!((d["data"]["decision"]["entity_id"].as_str(), d["data"]["decision"]["blocked"].as_bool()), (Some(agent.as_str()), Some(true)), "{d}");
        let worker = TestWorker::start(&app.url, &key, &queue, "announced").await;
        // Every change of status is announced: busy, idle again, draining; a heartbeat that
        // changes nothing is not.
        for status in ["busy", "busy", "online", "draining"] {
            let r = worker.post(&format!("/api/v1/workers/{}/heartbeat", worker.id)).json(&json!({"status": status})).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
        worker.disconnect().await;
        let changes = receiver.wait_for("worker.status_changed", 5).await;
        // Deliveries are concurrent, so they may arrive in any order (as Standard Webhooks allows).
        let mut statuses: Vec<String> = changes.iter().map(|c| c.json()["data"]["worker"]["status"].as_str().unwrap().to_string()).collect();
        statuses.sort();
        assert_eq!(statuses, ["busy", "disconnected", "draining", "online", "online"]);
    }

    async fn a_run_the_platform_fails_raises_an_error(backend: Backend) {
        let app = TestApp::spawn_with(backend, fast).await;
        app.unlimited().await;
        allow_private(&app).await;
        let receiver = Receiver::default();
        let url = receiver.start().await;
        let hook = webhook(&app, &url, json!(["error", "execution.failed"])).await;
        let (queue, agent, key) = setup_run(&app).await;
        let r = app.req(Method::PATCH, &format!("/api/v1/worker-queues/{queue}")).json(&json!({"max_attempts": 1})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let execute = || async {
            let r = app.post(&format!("/api/v1/agents/{agent}/execute"), json!({"prompt": "x", "worker_queue_id": queue})).await;
            json(r).await["execution_id"].as_str().unwrap().to_string()
        };
        // The author's failure is the author's business: `execution.failed` only.
        let plain = execute().await;
        let worker = TestWorker::start(&app.url, &key, &queue, "alerting").await;
        let claim = worker.claim(20).await;
        assert_eq!(worker.fail(&claim, "the task was impossible", false).await.status(), 200);
        // The provider refused the model's key: an operator must act.
        let refused = execute().await;
        let claim = worker.claim(20).await;
        let r = worker.post(&format!("/api/v1/executions/{refused}/fail")).header("X-Lease-Id", claim["lease_id"].as_str().unwrap())
            .json(&json!({"error_message": "the provider refused the API key: invalid x-api-key", "error_kind": "provider_auth_refused"})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        // An unknown kind is the worker's mistake.
        let r = worker.post(&format!("/api/v1/executions/{refused}/fail")).header("X-Lease-Id", claim["lease_id"].as_str().unwrap())
            .json(&json!({"error_kind": "bored"})).send().await.unwrap();
        assert_eq!(r.status(), 422);
        // The worker went away holding the run's last attempt.
        let lost = execute().await;
        worker.claim(20).await;
        assert_eq!(worker.disconnect().await.status(), 200);
        let failed = receiver.wait_for("execution.failed", 3).await;
        let alerts = receiver.wait_for("error", 2).await;
        let mut kinds: Vec<(String, String)> = alerts.iter().map(|a| {
            let a = a.json();
            (a["data"]["execution"]["id"].as_str().unwrap().to_string(), a["data"]["kind"].as_str().unwrap().to_string())
        }).collect();
        kinds.sort();
        let mut expected = vec![(refused.clone(), "provider_auth_refused".to_string()), (lost.clone(), "worker_lost".to_string())];
        expected.sort();
        assert_eq!(kinds, expected);
        for alert in &alerts {
            let a = alert.json();
            let id = a["data"]["execution"]["id"].as_str().unwrap();
            assert!(a["data"]["message"].as_str().unwrap().starts_with(&format!("execution {id} failed: ")), "{a}");
            assert_eq!(a["data"]["execution"]["status"], "failed", "{a}");
            // The alert and the failure are two events: two message ids.
            let twin = failed.iter().find(|f| f.json()["data"]["execution"]["id"] == id).unwrap();
            assert_ne!(twin.id, alert.id);
        }
        // The run's own record says why too.
        let events = json(app.get(&format!("/api/v1/executions/{lost}/events")).await).await;
        let done = events["items"].as_array().unwrap().iter().find(|e| e["type"] == "done").cloned().unwrap();
        assert_eq!(done["data"]["error_kind"], "worker_lost", "{done}");
        // Deliveries are written with the change that causes them: once the three failures'
        // are known, the log holds every `error` there will be, sent or not.
        let log = json(app.get(&format!("/api/v1/webhooks/{}/deliveries?limit=100", hook["id"].as_str().unwrap())).await).await;
        let logged = log["items"].as_array().unwrap().iter().filter(|d| d["event_type"] == "error").count();
        assert_eq!(logged, 2, "{log}");
        assert!(failed.iter().any(|f| f.json()["data"]["execution"]["id"] == plain.as_str()));
    }

    async fn an_event_written_before_a_restart_is_delivered_once(backend: Backend) {
        // The first server never sends: the completion waits in the outbox across the restart.
        let mut app = TestApp::spawn_with(backend, |c| c.webhook_sender = false).await;
        app.unlimited().await;
        allow_private(&app).await;
        let receiver = Receiver::default();
        let url = receiver.start().await;
        webhook(&app, &url, json!(["execution.completed"])).await;
        let (queue, agent, key) = setup_run(&app).await;
        let execution = run_one(&app, &key, &queue, &agent).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(receiver.got().is_empty());
        let health = json(app.get("/api/health/detailed").await).await;
        assert_eq!(health["webhooks"]["pending_deliveries"], 1, "{health}");
        app.restart(fast).await;
        let got = receiver.wait_for("execution.completed", 1).await;
        assert_eq!(got[0].json()["data"]["execution"]["id"], execution.as_str());
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(receiver.got().len(), 1, "{:?}", receiver.got());
        let health = json(app.get("/api/health/detailed").await).await;
        assert_eq!(health["webhooks"]["pending_deliveries"], 0, "{health}");
    }
}

/// One endpoint that answers slowly holds a few sending slots, not all of them: another
/// endpoint's delivery goes out at once while the slow one has a backlog larger than the
/// sender's total capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_does_not_delay_the_others() {
    let app = TestApp::spawn_with(crate::common::Backend::Sqlite, fast).await;
    app.unlimited().await;
    allow_private(&app).await;
    let slow = Receiver::default();
    *slow.delay.lock().unwrap() = Duration::from_secs(3);
    let slow_url = slow.start().await;
    let quick = Receiver::default();
    let quick_url = quick.start().await;
    let s = webhook(&app, &slow_url, json!(["*"])).await;
    let q = webhook(&app, &quick_url, json!(["*"])).await;
    for _ in 0..80 {
        app.post(
            &format!("/api/v1/webhooks/{}/test", s["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    app.post(
        &format!("/api/v1/webhooks/{}/test", q["id"].as_str().unwrap()),
        json!({}),
    )
    .await;
    quick.wait_for("webhook.test", 1).await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

/// PostgreSQL only: two replicas share the outbox and send each delivery once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_send_each_delivery_once() {
    let app = TestApp::spawn_with(crate::common::Backend::Postgres, fast).await;
    app.unlimited().await;
    allow_private(&app).await;
    let _b = app.replica().await;
    let receiver = Receiver::default();
    let url = receiver.start().await;
    let w = webhook(&app, &url, json!(["*"])).await;
    let hook = format!("/api/v1/webhooks/{}", w["id"].as_str().unwrap());
    for _ in 0..30 {
        app.post(&format!("{hook}/test"), json!({})).await;
    }
    let got = receiver.wait_for("webhook.test", 30).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut ids: Vec<String> = receiver.got().into_iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 30, "{got:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30);
}

both_backends! {
    async fn what_is_past_retention_is_swept_and_nothing_else(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.req(Method::PATCH, "/api/v1/organization/settings").json(&json!({"webhook_allow_private_targets": true, "event_retention_days": 1})).send().await.unwrap();
        let receiver = Receiver::default();
        let url = receiver.start().await;
        let delivered = webhook(&app, &url, json!(["execution.completed"])).await;
        // Nothing listens on port 9: its delivery stays pending (retried), and is kept.
        let retried = webhook(&app, "http://127.0.0.1:9/hook", json!(["execution.completed"])).await;
        let p = json(app.post("/api/v1/policies", json!({"name": "keep", "policy_content": "package keep\n\nallow := true\n"})).await).await;
        app.post("/api/v1/policies/associations", json!({"policy_id": p["id"], "entity_type": "organization", "entity_id": "default"})).await;
        let (queue, agent, key) = setup_run(&app).await;
        let ended = run_one(&app, &key, &queue, &agent).await;
        receiver.wait_for("execution.completed", 1).await;
        let running = app.req(Method::POST, &format!("/api/v1/agents/{agent}/execute")).header("Idempotency-Key", "once")
            .json(&json!({"prompt": "still going", "worker_queue_id": queue})).send().await.unwrap();
        let running = json(running).await;
        let running = running["execution_id"].as_str().unwrap().to_string();
        let w = TestWorker::start(&app.url, &key, &queue, "keeper").await;
        w.claim(20).await;
        // Stored rows (an execution's `total` is its event count, which stays).
        let count = |path: String| {
            let app = &app;
            async move { json(app.get(&path).await).await["items"].as_array().unwrap().len() as i64 }
        };
        let deliveries = |id: &Value| format!("/api/v1/webhooks/{}/deliveries", id["id"].as_str().unwrap());
        assert!(count(format!("/api/v1/executions/{ended}/events")).await > 0);
        let decisions_before = count("/api/v1/policies/decisions".into()).await;
        assert!(decisions_before >= 2, "{decisions_before}");
        assert_eq!(count(deliveries(&delivered)).await, 1);
        assert_eq!(count(deliveries(&retried)).await, 1);
        // Another organization keeps its default retention.
        let other = app.org_with_key("other-retention", Role::Admin).await;
        assert_eq!(app.req_as(&other, Method::GET, "/api/v1/organization").send().await.unwrap().status(), 200);

        // Within the retention nothing goes; two days later what is past one day does.
        let now = cp_types::now();
        assert_eq!(cp_server::services::retention::sweep(&app.store, now).await.unwrap(), Default::default());
        let later = now + chrono::Duration::days(2);
        let swept = cp_server::services::retention::sweep(&app.store, later).await.unwrap();
        assert!(swept.events > 0 && swept.decisions as i64 == decisions_before && swept.deliveries == 1, "{swept:?}");
        assert_eq!(swept.idempotency_records, 1, "{swept:?}");
        assert_eq!(count(format!("/api/v1/executions/{ended}/events")).await, 0);
        assert!(count(format!("/api/v1/executions/{running}/events")).await > 0, "a running execution keeps its events");
        assert_eq!(json(app.get(&format!("/api/v1/executions/{ended}")).await).await["status"], "completed", "the run itself stays");
        assert_eq!(count("/api/v1/policies/decisions".into()).await, 0);
        assert_eq!(count(deliveries(&delivered)).await, 0);
        assert_eq!(count(deliveries(&retried)).await, 1, "a pending delivery is still being retried");
    }
}

// A workflow run's state changes and its steps' are delivered, written with the advance that
// made them (an approval-only run needs no worker).
both_backends! {
    async fn workflow_runs_announce_their_states(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        allow_private(&app).await;
        let receiver = Receiver::default();
        let url = receiver.start().await;
        webhook(&app, &url, json!(["workflow.run.state_changed", "workflow.step.state_changed"])).await;
        let flow = json(app.post("/api/v1/workflows", json!({"name": "gate", "steps": [
            {"id": "ok", "type": "approval", "message": "go?"},
            {"id": "rest", "type": "sleep", "seconds": 0, "depends_on": ["ok"]}
        ]})).await).await;
        let run = json(app.post(&format!("/api/v1/workflows/{}/start", flow["id"].as_str().unwrap()), json!({})).await).await;
        let id = run["id"].as_str().unwrap().to_string();
        assert_eq!(run["status"], "waiting_for_approval", "{run}");
        let r = app.post(&format!("/api/v1/workflow-runs/{id}/steps/ok/approve"), json!({"comment": "fine"})).await;
        assert_eq!(json(r).await["status"], "completed");
        // Deliveries are sent side by side: their order is not the events' order.
        let runs = receiver.wait_for("workflow.run.state_changed", 3).await;
        let mut states: Vec<String> = runs.iter().map(|r| r.json()["data"]["run"]["status"].as_str().unwrap().to_string()).collect();
        states.sort();
        assert_eq!(states, ["completed", "running", "waiting_for_approval"]);
        assert!(runs.iter().all(|r| r.json()["data"]["run"]["id"] == json!(id)));
        let steps = receiver.wait_for("workflow.step.state_changed", 4).await;
        let seen: Vec<(Value, Value)> = steps.iter().map(|r| {
            let d = r.json()["data"]["step"].clone();
            (d["step_id"].clone(), d["status"].clone())
        }).collect();
        for want in [("ok", "waiting_for_approval"), ("ok", "completed"), ("rest", "running"), ("rest", "completed")] {
            assert!(seen.contains(&(json!(want.0), json!(want.1))), "{want:?} missing from {seen:?}");
        }
    }
}

// A job's firings are delivered as `job.fired` (what fired it and what it started, or why
// nothing started), written with the firing's outcome.
both_backends! {
    async fn jobs_announce_their_firings(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        allow_private(&app).await;
        let receiver = Receiver::default();
        let url = receiver.start().await;
        webhook(&app, &url, json!(["job.fired", "error"])).await;
        let agent = json(app.post("/api/v1/agents", json!({"name": "a"})).await).await;
        let envs = json(app.get("/api/v1/environments").await).await;
        let env = envs["items"][0]["id"].as_str().unwrap().to_string();
        let queue = json(app.post(&format!("/api/v1/environments/{env}/worker-queues"), json!({"name": "jobs"})).await).await;
        assert!(queue["id"].is_string(), "{queue}");
        let job = json(app.post("/api/v1/jobs", json!({"name": "j", "trigger_type": "manual", "entity_type": "agent",
            "entity_id": agent["id"], "worker_queue_id": queue["id"], "prompt_template": "go"})).await).await;
        let id = job["id"].as_str().unwrap();
        let firing = json(app.post(&format!("/api/v1/jobs/{id}/trigger"), json!({})).await).await;
        let got = receiver.wait_for("job.fired", 1).await;
        let data = got[0].json()["data"].clone();
        assert_eq!(data["job_id"], json!(id), "{data} {firing}");
        assert_eq!(data["firing_id"], firing["id"]);
        assert_eq!(data["trigger_source"], "manual");
        assert_eq!(data["execution_id"], firing["execution_id"]);
        assert_eq!(data["status"], "queued", "{data} {firing}");
        // A firing that starts nothing is an `error` of kind `job_failed` as well.
        let r = app.req(Method::PATCH, &format!("/api/v1/worker-queues/{}", queue["id"].as_str().unwrap()))
            .json(&json!({"status": "inactive"})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let failed = json(app.post(&format!("/api/v1/jobs/{id}/trigger"), json!({})).await).await;
        let alert = receiver.wait_for("error", 1).await[0].json()["data"].clone();
        assert_eq!(alert["kind"], "job_failed", "{alert}");
        assert_eq!(alert["firing"]["firing_id"], failed["id"]);
        assert!(alert["message"].as_str().unwrap().contains("not active"), "{alert}");
        assert_eq!(receiver.wait_for("job.fired", 2).await.len(), 2);
    }
}
