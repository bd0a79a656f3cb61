//! Jobs (issue 21): definitions and every 422, roles and tenancy, cron firing on a test clock
//! (on time, once per due time with two replicas, across daylight-saving changes, after a
//! downtime), overlap, pausing after failures, and inbound webhooks with each signature.

use chrono::{DateTime, Utc};
use cp_server::config::Clock;
use cp_server::services::jobs;
use cp_types::org::Role;
use hmac::{KeyInit, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::common::{TestApp, assert_error, json};

/// A server whose job scheduler runs only when the test calls `jobs::tick`, on `clock`.
fn on_the_clock(c: &mut cp_server::ServerConfig, clock: &Clock) {
    c.clock = clock.clone();
    c.job_scheduler = false;
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn id_of(app: &TestApp, path: &str, body: Value) -> String {
    app.id_of(path, body).await
}

/// An agent and a queue of the default organization.
async fn agent_and_queue(app: &TestApp) -> (String, String) {
    let agent = id_of(app, "/api/v1/agents", json!({"name": "summarizer"})).await;
    let envs = json(app.get("/api/v1/environments").await).await;
    let env = envs["items"][0]["id"].as_str().unwrap().to_string();
    let queue = id_of(
        app,
        &format!("/api/v1/environments/{env}/worker-queues"),
        json!({"name": "jobs"}),
    )
    .await;
    (agent, queue)
}

async fn create(app: &TestApp, body: Value) -> Value {
    let r = app.post("/api/v1/jobs", body).await;
    let status = r.status();
    let v = json(r).await;
    assert_eq!(status, 201, "{v}");
    v
}

async fn firings(app: &TestApp, job: &str) -> Vec<Value> {
    let v = json(app.get(&format!("/api/v1/jobs/{job}/executions?limit=500")).await).await;
    v["items"].as_array().unwrap_or_else(|| panic!("{v}")).clone()
}

async fn job(app: &TestApp, id: &str) -> Value {
    json(app.get(&format!("/api/v1/jobs/{id}")).await).await
}

fn cron_job(agent: &str, queue: &str, schedule: &str, tz: &str) -> Value {
    json!({
        "name": format!("every {schedule} {tz}"), "trigger_type": "cron", "cron_schedule": schedule,
        "cron_timezone": tz, "entity_type": "agent", "entity_id": agent, "worker_queue_id": queue,
        "prompt_template": "Summarize last night's alerts ({{ now }}, job {{ job.name }})"
    })
}

/// The fields of a 422's issues.
fn fields(err: &Value) -> Vec<String> {
    match err["details"]["errors"].as_array() {
        Some(all) => all.iter().map(|e| e["field"].as_str().unwrap().to_string()).collect(),
        None => vec![err["details"]["field"].as_str().unwrap_or_default().to_string()],
    }
}

both_backends! {
    async fn definitions_are_checked_field_by_field(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let (agent, queue) = agent_and_queue(&app).await;
        let other = app.org_with_key("other", Role::Admin).await;
        let foreign = json(app.req_as(&other, Method::POST, "/api/v1/agents").json(&json!({"name": "theirs"})).send().await.unwrap()).await;
        let good = cron_job(&agent, &queue, "0 9 * * 1-5", "Europe/Berlin");
        let with = |patch: Value| {
            let mut b = good.clone();
            for (k, v) in patch.as_object().unwrap() {
                b[k] = v.clone();
            }
            b
        };
        let cases = [
            (with(json!({"name": ""})), "name"),
            (with(json!({"trigger_type": "sometimes"})), "trigger_type"),
            (with(json!({"cron_schedule": null})), "cron_schedule"),
            (with(json!({"cron_schedule": "every morning"})), "cron_schedule"),
            (with(json!({"cron_schedule": "0 0 9 * * 1 2030"})), "cron_schedule"),
            (with(json!({"cron_schedule": "61 * * * *"})), "cron_schedule"),
            (with(json!({"cron_timezone": "Mars/Olympus"})), "cron_timezone"),
            (with(json!({"entity_type": "robot"})), "entity_type"),
            (with(json!({"entity_id": "not-a-uuid"})), "entity_id"),
            (with(json!({"entity_id": foreign["id"]})), "entity_id"),
            (with(json!({"entity_id": uuid::Uuid::now_v7()})), "entity_id"),
            (with(json!({"worker_queue_id": uuid::Uuid::now_v7()})), "worker_queue_id"),
            (with(json!({"environment_id": uuid::Uuid::now_v7(), "worker_queue_id": null})), "environment_id"),
            (with(json!({"worker_queue_id": null})), "worker_queue_id"),
            (with(json!({"prompt_template": null})), "prompt_template"),
            (with(json!({"prompt_template": "{{ secrets.token }}"})), "prompt_template"),
            (with(json!({"prompt_template": "{{ payload.x }}"})), "prompt_template"),
            (with(json!({"prompt_template": "{% if %}"})), "prompt_template"),
            (with(json!({"inputs_template": {"a": 1}})), "inputs_template"),
            (with(json!({"overlap": "sometimes"})), "overlap"),
            (with(json!({"jitter_seconds": -1})), "jitter_seconds"),
            (with(json!({"catchup_window_seconds": 86401})), "catchup_window_seconds"),
            (with(json!({"pause_after_failures": 0})), "pause_after_failures"),
        ];
        for (body, field) in cases {
            let err = assert_error(app.post("/api/v1/jobs", body.clone()).await, 422, "VALIDATION_ERROR").await;
            assert!(fields(&err).iter().any(|f| f == field), "{field}: {err} for {body}");
        }
        let flow = id_of(&app, "/api/v1/workflows", json!({"name": "f", "steps": [{"id": "a", "type": "sleep", "seconds": 0}]})).await;
        let err = assert_error(app.post("/api/v1/jobs", json!({
            "name": "w", "trigger_type": "manual", "entity_type": "workflow", "entity_id": flow,
            "inputs_template": {"x": "{{ nope }}"}
        })).await, 422, "VALIDATION_ERROR").await;
        assert_eq!(fields(&err), ["inputs_template.x"], "{err}");

        let created = create(&app, good.clone()).await;
        assert_eq!(created["status"], "active");
        assert_eq!(created["overlap"], "skip");
        assert_eq!(created["entity_name"], "summarizer");
        assert!(created["next_run_at"].is_string(), "{created}");
        assert!(created.get("webhook_secret").is_none() && created["webhook_url"].is_null(), "{created}");
        assert_error(app.post("/api/v1/jobs", good).await, 409, "CONFLICT").await;
    }
}

both_backends! {
    async fn roles_tenancy_secrets_and_enable(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let (agent, queue) = agent_and_queue(&app).await;
        let hook = create(&app, json!({
            "name": "on push", "trigger_type": "webhook", "entity_type": "agent", "entity_id": agent,
            "worker_queue_id": queue, "prompt_template": "{{ payload.head_commit.message }}"
        })).await;
        let id = hook["id"].as_str().unwrap().to_string();
        let secret = hook["webhook_secret"].as_str().unwrap().to_string();
        let path = hook["webhook_path"].as_str().unwrap();
        assert_eq!(hook["webhook_url"], json!(format!("{}/api/v1/jobs/webhook/{path}", app.url)));
        assert!(hook["next_run_at"].is_null());
        for v in [job(&app, &id).await, json(app.get("/api/v1/jobs").await).await["items"][0].clone()] {
            assert!(v.get("webhook_secret").is_none() && !v.to_string().contains(&secret), "{v}");
            assert_eq!(v["webhook_path"], hook["webhook_path"]);
        }
        let rotated = json(app.post(&format!("/api/v1/jobs/{id}/rotate-secret"), json!({})).await).await;
        assert!(rotated["webhook_secret"].as_str().unwrap() != secret);

        let viewer = app.key("default", Role::Viewer).await;
        let r = app.req_as(&viewer, Method::GET, &format!("/api/v1/jobs/{id}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        for (m, p) in [(Method::POST, "/api/v1/jobs".to_string()), (Method::POST, format!("/api/v1/jobs/{id}/trigger")),
                       (Method::DELETE, format!("/api/v1/jobs/{id}")), (Method::POST, format!("/api/v1/jobs/{id}/disable"))] {
            let r = app.req_as(&viewer, m, &p).json(&json!({})).send().await.unwrap();
            assert_error(r, 403, "FORBIDDEN").await;
        }
        let other = app.org_with_key("other", Role::Admin).await;
        for (m, p) in [(Method::GET, format!("/api/v1/jobs/{id}")), (Method::POST, format!("/api/v1/jobs/{id}/trigger")),
                       (Method::GET, format!("/api/v1/jobs/{id}/executions")), (Method::PATCH, format!("/api/v1/jobs/{id}")),
                       (Method::POST, format!("/api/v1/jobs/{id}/rotate-secret")), (Method::DELETE, format!("/api/v1/jobs/{id}"))] {
            let r = app.req_as(&other, m, &p).json(&json!({})).send().await.unwrap();
            assert_error(r, 404, "NOT_FOUND").await;
        }
        let theirs = json(app.req_as(&other, Method::GET, "/api/v1/jobs").send().await.unwrap()).await;
        assert_eq!(theirs["total"], 0);

        // A manual job has no secret to rotate; turning it into a cron job schedules it.
        let manual = create(&app, json!({"name": "by hand", "trigger_type": "manual", "entity_type": "agent",
            "entity_id": agent, "worker_queue_id": queue, "prompt_template": "go"})).await;
        let mid = manual["id"].as_str().unwrap();
        assert_error(app.post(&format!("/api/v1/jobs/{mid}/rotate-secret"), json!({})).await, 409, "CONFLICT").await;
        let r = app.req(Method::PATCH, &format!("/api/v1/jobs/{mid}")).json(&json!({"trigger_type": "cron"})).send().await.unwrap();
        let err = assert_error(r, 422, "VALIDATION_ERROR").await;
        assert_eq!(fields(&err), ["cron_schedule"]);
        let r = app.req(Method::PATCH, &format!("/api/v1/jobs/{mid}"))
            .json(&json!({"trigger_type": "cron", "cron_schedule": "@hourly"})).send().await.unwrap();
        assert!(json(r).await["next_run_at"].is_string());
        let off = json(app.post(&format!("/api/v1/jobs/{mid}/disable"), json!({})).await).await;
        assert_eq!((off["enabled"].clone(), off["status"].clone(), off["next_run_at"].clone()), (json!(false), json!("disabled"), Value::Null));
        assert_error(app.post(&format!("/api/v1/jobs/{mid}/trigger"), json!({})).await, 409, "CONFLICT").await;
        let on = json(app.post(&format!("/api/v1/jobs/{mid}/enable"), json!({})).await).await;
        assert!(on["enabled"] == json!(true) && on["next_run_at"].is_string(), "{on}");
        let r = app.req(Method::DELETE, &format!("/api/v1/jobs/{mid}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_error(app.get(&format!("/api/v1/jobs/{mid}")).await, 404, "NOT_FOUND").await;
    }
}

// Weekdays at 9:00 in Berlin, on a clock the test sets: nothing before the time, one firing at
// it however often the scheduler looks, and the next due time the next weekday.
both_backends! {
    async fn a_cron_job_fires_on_time_once(backend: Backend) {
        let clock = Clock::manual(at("2026-03-02T07:58:00Z"));
        let app = TestApp::spawn_with(backend, |c| on_the_clock(c, &clock)).await;
        let (agent, queue) = agent_and_queue(&app).await;
        let created = create(&app, cron_job(&agent, &queue, "0 9 * * 1-5", "Europe/Berlin")).await;
        let id = created["id"].as_str().unwrap().to_string();
        assert_eq!(created["next_run_at"], "2026-03-02T08:00:00.000000Z");
        clock.set(at("2026-03-02T07:59:59Z"));
        jobs::tick(&app.state).await;
        assert!(firings(&app, &id).await.is_empty());
        clock.set(at("2026-03-02T08:00:00Z"));
        jobs::tick(&app.state).await;
        jobs::tick(&app.state).await;
        let fired = firings(&app, &id).await;
        assert_eq!(fired.len(), 1, "{fired:?}");
        let f = &fired[0];
        assert_eq!((f["trigger_source"].clone(), f["status"].clone()), (json!("cron"), json!("queued")), "{f}");
        assert_eq!(f["due_at"], "2026-03-02T08:00:00.000000Z");
        let execution = json(app.get(&format!("/api/v1/executions/{}", f["execution_id"].as_str().unwrap())).await).await;
        assert_eq!(execution["prompt"], "Summarize last night's alerts (2026-03-02T08:00:00Z, job every 0 9 * * 1-5 Europe/Berlin)");
        assert_eq!(execution["worker_queue_id"], json!(queue));
        let after = job(&app, &id).await;
        assert_eq!(after["next_run_at"], "2026-03-03T08:00:00.000000Z");
        assert_eq!(after["last_status"], "queued");
        assert!(after["last_run_at"].is_string());
    }
}

// 02:30 every day in Berlin: on 29 March 2026 that time does not exist (02:00 → 03:00) and
// the job fires once right after the gap; on 25 October it happens twice and fires once.
both_backends! {
    async fn daylight_saving_changes_fire_once(backend: Backend) {
        let clock = Clock::manual(at("2026-03-28T23:00:00Z"));
        let app = TestApp::spawn_with(backend, |c| on_the_clock(c, &clock)).await;
        let (agent, queue) = agent_and_queue(&app).await;
        let created = create(&app, cron_job(&agent, &queue, "30 2 * * *", "Europe/Berlin")).await;
        let id = created["id"].as_str().unwrap().to_string();
        assert_eq!(created["next_run_at"], "2026-03-29T01:00:00.000000Z", "03:00 CEST, right after the gap");
        clock.set(at("2026-03-29T01:00:00Z"));
        jobs::tick(&app.state).await;
        assert_eq!(firings(&app, &id).await.len(), 1);
        assert_eq!(job(&app, &id).await["next_run_at"], "2026-03-30T00:30:00.000000Z");

        let r = app.req(Method::PATCH, &format!("/api/v1/jobs/{id}")).json(&json!({"enabled": false})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        clock.set(at("2026-10-24T23:00:00Z"));
        let on = json(app.post(&format!("/api/v1/jobs/{id}/enable"), json!({})).await).await;
        assert_eq!(on["next_run_at"], "2026-10-25T00:30:00.000000Z", "the first 02:30, in CEST");
        clock.set(at("2026-10-25T00:30:00Z"));
        jobs::tick(&app.state).await;
        assert_eq!(job(&app, &id).await["next_run_at"], "2026-10-26T01:30:00.000000Z", "not the second 02:30 (CET)");
        clock.set(at("2026-10-25T01:30:00Z"));
        jobs::tick(&app.state).await;
        assert_eq!(firings(&app, &id).await.len(), 2);
    }
}

// Two replicas on one database, both looking at every due time of an every-second schedule:
// each due time fires once.
both_backends! {
    async fn two_replicas_fire_each_due_time_once(backend: Backend) {
        let clock = Clock::manual(at("2026-05-01T12:00:00Z"));
        let app = TestApp::spawn_with(backend, |c| on_the_clock(c, &clock)).await;
        let replica = app.replica_with(|c| on_the_clock(c, &clock)).await;
        let (agent, queue) = agent_and_queue(&app).await;
        let mut body = cron_job(&agent, &queue, "* * * * * *", "UTC");
        body["overlap"] = json!("allow");
        let id = create(&app, body).await["id"].as_str().unwrap().to_string();
        for s in 1..=5 {
            clock.set(at(&format!("2026-05-01T12:00:0{s}Z")));
            tokio::join!(jobs::tick(&app.state), jobs::tick(&replica.state), jobs::tick(&app.state));
        }
        let fired = firings(&app, &id).await;
        let mut due: Vec<String> = fired.iter().map(|f| f["due_at"].as_str().unwrap().to_string()).collect();
        due.sort();
        due.dedup();
        assert_eq!((fired.len(), due.len()), (5, 5), "{fired:?}");
        assert!(fired.iter().all(|f| f["execution_id"].is_string()), "{fired:?}");
    }
}

// The server was down for an hour: the due times it slept through are one `missed` record,
// the latest (a few seconds late) fires once, and nothing fires in a burst.
both_backends! {
    async fn a_downtime_is_missed_not_fired_in_a_burst(backend: Backend) {
        let clock = Clock::manual(at("2026-01-01T00:00:00Z"));
        let app = TestApp::spawn_with(backend, |c| on_the_clock(c, &clock)).await;
        let (agent, queue) = agent_and_queue(&app).await;
        let mut body = cron_job(&agent, &queue, "*/5 * * * *", "UTC");
        body["overlap"] = json!("allow");
        let id = create(&app, body).await["id"].as_str().unwrap().to_string();
        clock.set(at("2026-01-01T01:00:20Z"));
        jobs::tick(&app.state).await;
        let fired = firings(&app, &id).await;
        assert_eq!(fired.len(), 2, "{fired:?}");
        let missed = fired.iter().find(|f| f["status"] == "missed").unwrap();
        assert_eq!(missed["missed_count"], 11, "00:05 … 00:55: {missed}");
        assert!(missed["error"].as_str().unwrap().contains("2026-01-01T00:05:00Z"), "{missed}");
        let ran = fired.iter().find(|f| f["status"] != "missed").unwrap();
        assert_eq!(ran["due_at"], "2026-01-01T01:00:00.000000Z");
        assert_eq!(job(&app, &id).await["next_run_at"], "2026-01-01T01:05:00.000000Z");
    }
}

// `skip` fires nothing while the previous firing's execution is active; `buffer_one` keeps one
// firing back and starts it when the previous one ends.
both_backends! {
    async fn overlap_skips_or_buffers_one(backend: Backend) {
        let clock = Clock::manual(at("2026-06-01T10:00:30Z"));
        let app = TestApp::spawn_with(backend, |c| on_the_clock(c, &clock)).await;
        app.unlimited().await;
        let (agent, queue) = agent_and_queue(&app).await;
        let skip = create(&app, cron_job(&agent, &queue, "* * * * *", "UTC")).await["id"].as_str().unwrap().to_string();
        let mut body = cron_job(&agent, &queue, "* * * * *", "Etc/UTC");
        body["overlap"] = json!("buffer_one");
        let buffer = create(&app, body).await["id"].as_str().unwrap().to_string();
        for m in 1..=3 {
            clock.set(at(&format!("2026-06-01T10:0{m}:00Z")));
            jobs::tick(&app.state).await;
        }
        let statuses = |f: &[Value]| f.iter().rev().map(|f| f["status"].as_str().unwrap().to_string()).collect::<Vec<_>>();
        assert_eq!(statuses(&firings(&app, &skip).await), ["queued", "skipped", "skipped"]);
        let fired = firings(&app, &buffer).await;
        assert_eq!(statuses(&fired), ["queued", "buffered", "skipped"]);
        let first = fired.last().unwrap()["execution_id"].as_str().unwrap().to_string();
        let r = app.post(&format!("/api/v1/executions/{first}/cancel"), json!({})).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        jobs::tick(&app.state).await;
        let fired = firings(&app, &buffer).await;
        assert_eq!(statuses(&fired), ["cancelled", "queued", "skipped"], "{fired:?}");
        assert!(fired[1]["execution_id"].is_string());
    }
}

// A firing that cannot start (its queue is not active) fails with the reason; after
// `pause_after_failures` of them the job pauses itself; enabling it starts over.
both_backends! {
    async fn failures_in_a_row_pause_the_job(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let (agent, queue) = agent_and_queue(&app).await;
        let body = json!({"name": "fragile", "trigger_type": "manual", "entity_type": "agent", "entity_id": agent,
            "worker_queue_id": queue, "prompt_template": "hello {{ parameters.who }}", "pause_after_failures": 2});
        let id = create(&app, body).await["id"].as_str().unwrap().to_string();
        let r = app.req(Method::PATCH, &format!("/api/v1/worker-queues/{queue}")).json(&json!({"status": "inactive"})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        for n in 1..=2 {
            let r = app.post(&format!("/api/v1/jobs/{id}/trigger"), json!({"parameters": {"who": "me"}})).await;
            assert_eq!(r.status(), 201);
            let f = json(r).await;
            assert_eq!(f["status"], "failed", "{f}");
            assert!(f["error"].as_str().unwrap().contains("not active"), "{f}");
            assert_eq!(job(&app, &id).await["consecutive_failures"], n);
        }
        let paused = job(&app, &id).await;
        assert_eq!((paused["status"].clone(), paused["enabled"].clone()), (json!("paused"), json!(false)), "{paused}");
        assert!(paused["paused_reason"].as_str().unwrap().contains("2 failed firings"), "{paused}");
        assert_error(app.post(&format!("/api/v1/jobs/{id}/trigger"), json!({})).await, 409, "CONFLICT").await;
        let r = app.req(Method::PATCH, &format!("/api/v1/worker-queues/{queue}")).json(&json!({"status": "active"})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let on = json(app.post(&format!("/api/v1/jobs/{id}/enable"), json!({})).await).await;
        assert_eq!((on["status"].clone(), on["consecutive_failures"].clone()), (json!("active"), json!(0)));
        let f = json(app.post(&format!("/api/v1/jobs/{id}/trigger"), json!({"parameters": {"who": "you"}})).await).await;
        assert_eq!(f["status"], "queued", "{f}");
        let e = json(app.get(&format!("/api/v1/executions/{}", f["execution_id"].as_str().unwrap())).await).await;
        assert_eq!(e["prompt"], "hello you");
        // A template that does not render fails the firing, not the request.
        let f = json(app.post(&format!("/api/v1/jobs/{id}/trigger"), json!({"parameters": {}})).await).await;
        assert_eq!(f["status"], "failed");
        assert!(f["error"].as_str().unwrap().contains("prompt_template"), "{f}");
        let err = assert_error(app.post(&format!("/api/v1/jobs/{id}/trigger"), json!({"parameters": [1]})).await, 422, "VALIDATION_ERROR").await;
        assert_eq!(fields(&err), ["parameters"]);
        // Retention deletes settled firings; one whose execution still runs stays.
        let later = Utc::now() + chrono::Duration::minutes(1);
        let swept = cp_server::services::retention::sweep_org(&app.store, "default", later).await.unwrap();
        assert_eq!(swept.firings, 3, "{swept:?}");
        let left = firings(&app, &id).await;
        assert_eq!((left.len(), left[0]["status"].clone()), (1, json!("queued")), "{left:?}");
    }
}

fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    for p in parts {
        mac.update(p);
    }
    hex::encode(mac.finalize().into_bytes())
}

both_backends! {
    async fn inbound_webhooks_fire_only_when_signed(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let (agent, queue) = agent_and_queue(&app).await;
        let hook = create(&app, json!({
            "name": "reviews", "trigger_type": "webhook", "entity_type": "agent", "entity_id": agent,
            "worker_queue_id": queue, "overlap": "allow",
            "prompt_template": "Review '{{ payload.pull_request.title }}' ({{ headers['x-github-event'] }})"
        })).await;
        let id = hook["id"].as_str().unwrap().to_string();
        let secret = hook["webhook_secret"].as_str().unwrap().to_string();
        let url = hook["webhook_url"].as_str().unwrap().to_string();
        let body = json!({"action": "opened", "pull_request": {"title": "Fix the flaky test"}}).to_string();
        let post = |headers: Vec<(&'static str, String)>, body: String| {
            let mut r = app.client.post(&url).header("content-type", "application/json");
            for (k, v) in headers {
                r = r.header(k, v);
            }
            r.body(body).send()
        };
        let gh = |delivery: &str, sig: String| vec![
            ("x-github-event", "pull_request".to_string()), ("x-github-delivery", delivery.to_string()),
            ("x-hub-signature-256", sig),
        ];
        let good = format!("sha256={}", hmac_hex(&secret, &[body.as_bytes()]));
        // Unsigned, wrongly signed, or signed for another body: 401 and nothing fired.
        for headers in [vec![], gh("d0", "sha256=00".into()), gh("d0", format!("sha256={}", hmac_hex(&secret, &[b"{}"]))),
                        gh("d0", format!("sha256={}", hmac_hex("wrong", &[body.as_bytes()]))),
                        vec![("x-gitlab-token", "wrong".to_string())]] {
            assert_error(post(headers, body.clone()).await.unwrap(), 401, "UNAUTHORIZED").await;
        }
        assert!(firings(&app, &id).await.is_empty());

        let r = post(gh("d1", good.clone()), body.clone()).await.unwrap();
        assert_eq!(r.status(), 201);
        let fired = json(r).await;
        assert_eq!(fired["result"], "fired");
        let execution = fired["firing"]["execution_id"].as_str().unwrap().to_string();
        let e = json(app.get(&format!("/api/v1/executions/{execution}")).await).await;
        assert_eq!(e["prompt"], "Review 'Fix the flaky test' (pull_request)");
        // The same delivery again: answered, not fired.
        let again = json(post(gh("d1", good.clone()), body.clone()).await.unwrap()).await;
        assert_eq!(again["result"], "duplicate");
        // GitHub's ping: answered, not fired.
        let ping = vec![("x-github-event", "ping".to_string()), ("x-hub-signature-256", good.clone())];
        assert_eq!(json(post(ping, body.clone()).await.unwrap()).await["result"], "pong");
        // GitLab's token.
        let gl = vec![("x-gitlab-token", secret.clone()), ("x-gitlab-event-uuid", "g1".to_string())];
        assert_eq!(post(gl, body.clone()).await.unwrap().status(), 201);
        // The plain scheme, with a fresh timestamp signed with the body, then a stale one.
        let now = Utc::now().timestamp().to_string();
        let plain = vec![("x-webhook-signature", format!("sha256={}", hmac_hex(&secret, &[body.as_bytes()]))),
                         ("x-webhook-timestamp", now.clone()), ("x-webhook-id", "p1".to_string())];
        assert_eq!(post(plain, body.clone()).await.unwrap().status(), 201);
        let stale = (Utc::now().timestamp() - 600).to_string();
        let old = vec![("x-webhook-signature", format!("sha256={}", hmac_hex(&secret, &[body.as_bytes()]))),
                       ("x-webhook-timestamp", stale), ("x-webhook-id", "p2".to_string())];
        assert_error(post(old, body.clone()).await.unwrap(), 401, "UNAUTHORIZED").await;
        let fired = firings(&app, &id).await;
        assert_eq!(fired.len(), 3, "{fired:?}");
        assert!(fired.iter().all(|f| f["trigger_source"] == "webhook"));

        // A rotated secret replaces the old one at once; a disabled job answers 409 once signed.
        let rotated = json(app.post(&format!("/api/v1/jobs/{id}/rotate-secret"), json!({})).await).await;
        let new_secret = rotated["webhook_secret"].as_str().unwrap().to_string();
        assert_error(post(gh("d9", good.clone()), body.clone()).await.unwrap(), 401, "UNAUTHORIZED").await;
        app.post(&format!("/api/v1/jobs/{id}/disable"), json!({})).await;
        let signed = format!("sha256={}", hmac_hex(&new_secret, &[body.as_bytes()]));
        assert_error(post(gh("d10", signed), body.clone()).await.unwrap(), 409, "CONFLICT").await;
        let r = app.client.post(format!("{}/api/v1/jobs/webhook/nope", app.url)).body("{}").send().await.unwrap();
        assert_error(r, 404, "NOT_FOUND").await;
    }
}

// A replica that wrote a firing stopped before it started it, or after it started the
// execution but before it recorded that: once the lease runs out, another replica starts
// the first and finds the second's execution, never starting one twice.
both_backends! {
    async fn a_firing_left_pending_by_a_crash_starts_once(backend: Backend) {
        let app = TestApp::spawn_with(backend, |c| c.job_scheduler = false).await;
        let (agent, queue) = agent_and_queue(&app).await;
        let body = json!({"name": "j", "trigger_type": "manual", "entity_type": "agent", "entity_id": agent,
            "worker_queue_id": queue, "prompt_template": "go"});
        let id = create(&app, body).await["id"].as_str().unwrap().to_string();
        let first = json(app.post(&format!("/api/v1/jobs/{id}/trigger"), json!({})).await).await;
        let execution = first["execution_id"].as_str().unwrap().to_string();
        let firing = first["id"].as_str().unwrap().to_string();
        // As if the replica died between the execution's insert and the firing's update.
        let key = match backend { crate::common::Backend::Postgres => format!("'{firing}'"), _ => format!("X'{}'", firing.replace('-', "")) };
        app.exec_sql(&format!("UPDATE job_firings SET status = 'pending', execution_id = NULL, lease_until = 1 WHERE id = {key}")).await;
        jobs::tick(&app.state).await;
        let fired = firings(&app, &id).await;
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0]["execution_id"], json!(execution), "{fired:?}");
        let all = json(app.get(&format!("/api/v1/executions?entity_id={agent}&limit=100")).await).await;
        assert_eq!(all["total"], 1, "{all}");
        // As if it died before anything started: the lease holds until it runs out.
        let pending = uuid::Uuid::now_v7();
        let job_id: uuid::Uuid = id.parse().unwrap();
        let new = cp_store::jobs::NewFiring {
            id: pending, source: cp_types::job::TriggerSource::Manual, status: "pending",
            work: Some(json!({"prompt": "later"})), due_at: None, error: None, missed_count: None,
            delivery_id: None, lease_until: Some(i64::MAX),
        };
        app.store.jobs("default").add_firing(job_id, &new).await.unwrap();
        jobs::tick(&app.state).await;
        assert_eq!(firings(&app, &id).await[0]["status"], "pending", "leased to the replica that wrote it");
        let key = match backend { crate::common::Backend::Postgres => format!("'{pending}'"), _ => format!("X'{}'", pending.simple()) };
        app.exec_sql(&format!("UPDATE job_firings SET lease_until = 1 WHERE id = {key}")).await;
        jobs::tick(&app.state).await;
        let fired = firings(&app, &id).await;
        assert_eq!((fired[0]["status"].clone(), fired[0]["execution_id"].clone()), (json!("queued"), json!(pending)), "{fired:?}");
        let e = json(app.get(&format!("/api/v1/executions/{pending}")).await).await;
        assert_eq!(e["prompt"], "later");
    }
}

// A job that names an environment runs on its first active queue, read at fire time; an
// environment without one fails the firing with the reason.
both_backends! {
    async fn the_queue_is_resolved_when_the_job_fires(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let agent = id_of(&app, "/api/v1/agents", json!({"name": "a"})).await;
        let env = id_of(&app, "/api/v1/environments", json!({"name": "staging"})).await;
        let old = id_of(&app, &format!("/api/v1/environments/{env}/worker-queues"), json!({"name": "old"})).await;
        let body = json!({"name": "j", "trigger_type": "manual", "entity_type": "agent", "entity_id": agent,
            "environment_id": env, "prompt_template": "go"});
        let id = create(&app, body).await["id"].as_str().unwrap().to_string();
        let path = format!("/api/v1/jobs/{id}/trigger");
        let trigger = || app.post(&path, json!({}));
        let f = json(trigger().await).await;
        let e = json(app.get(&format!("/api/v1/executions/{}", f["execution_id"].as_str().unwrap())).await).await;
        assert_eq!(e["worker_queue_id"], json!(old));
        let new = id_of(&app, &format!("/api/v1/environments/{env}/worker-queues"), json!({"name": "new"})).await;
        let r = app.req(Method::PATCH, &format!("/api/v1/worker-queues/{old}")).json(&json!({"status": "inactive"})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let f = json(trigger().await).await;
        let e = json(app.get(&format!("/api/v1/executions/{}", f["execution_id"].as_str().unwrap())).await).await;
        assert_eq!(e["worker_queue_id"], json!(new));
        let r = app.req(Method::PATCH, &format!("/api/v1/worker-queues/{new}")).json(&json!({"status": "maintenance"})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let f = json(trigger().await).await;
        assert_eq!(f["status"], "failed");
        assert!(f["error"].as_str().unwrap().contains("no active worker queue"), "{f}");
    }
}

// Scheduled firings act for the key that last wrote the job: once it is revoked they start
// nothing; a job whose target is gone can still be turned off; an update does not set back
// a schedule that fired meanwhile.
both_backends! {
    async fn firings_act_for_a_live_author(backend: Backend) {
        let clock = Clock::manual(at("2026-07-01T09:59:00Z"));
        let app = TestApp::spawn_with(backend, |c| on_the_clock(c, &clock)).await;
        let (agent, queue) = agent_and_queue(&app).await;
        let member = json(app.post("/api/v1/api-keys", json!({"name": "ops", "role": "member"})).await).await;
        let key = member["key"].as_str().unwrap();
        let r = app.req_as(key, Method::POST, "/api/v1/jobs").json(&cron_job(&agent, &queue, "0 10 * * *", "UTC")).send().await.unwrap();
        let id = json(r).await["id"].as_str().unwrap().to_string();
        let r = app.req(Method::DELETE, &format!("/api/v1/api-keys/{}", member["id"].as_str().unwrap())).send().await.unwrap();
        assert_eq!(r.status(), 200);
        clock.set(at("2026-07-01T10:00:00Z"));
        jobs::tick(&app.state).await;
        let fired = firings(&app, &id).await;
        assert_eq!(fired[0]["status"], "failed", "{fired:?}");
        assert!(fired[0]["error"].as_str().unwrap().contains("revoked"), "{fired:?}");
        // Written again by a live key, it fires for that key.
        let r = app.req(Method::PATCH, &format!("/api/v1/jobs/{id}")).json(&json!({"description": "mine now"})).send().await.unwrap();
        let updated = json(r).await;
        assert_eq!(updated["next_run_at"], "2026-07-02T10:00:00.000000Z", "the claim stays: {updated}");
        clock.set(at("2026-07-02T10:00:00Z"));
        jobs::tick(&app.state).await;
        assert_eq!(firings(&app, &id).await[0]["status"], "queued");
        // Its agent deleted, the job can still be disabled.
        let r = app.req(Method::DELETE, &format!("/api/v1/agents/{agent}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let off = json(app.post(&format!("/api/v1/jobs/{id}/disable"), json!({})).await).await;
        assert_eq!(off["enabled"], false, "{off}");
    }
}
