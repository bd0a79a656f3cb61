//! The execution engine (API §5): worker queues, workers, dispatch with leases, events and
//! streams, on both backends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::common::worker::{Polled, TestWorker, parse_sse, read_sse};
use crate::common::{Backend, TestApp, assert_error, json};
use cp_types::org::Role;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;

async fn send(app: &TestApp, method: Method, path: &str, body: Value) -> reqwest::Response {
    app.req(method, path).json(&body).send().await.unwrap()
}

/// The id of org `default`'s `default` environment.
async fn default_env(app: &TestApp) -> String {
    let page = json(app.get("/api/v1/environments").await).await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "default")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn queue(app: &TestApp, name: &str, extra: Value) -> String {
    let env = default_env(app).await;
    let mut body = json!({"name": name});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let r = app
        .post(&format!("/api/v1/environments/{env}/worker-queues"), body)
        .await;
    assert_eq!(r.status(), 201);
    json(r).await["id"].as_str().unwrap().to_string()
}

async fn agent(app: &TestApp, name: &str) -> String {
    let r = app
        .post(
            "/api/v1/agents",
            json!({"name": name, "system_prompt": "You are terse."}),
        )
        .await;
    assert_eq!(r.status(), 201);
    json(r).await["id"].as_str().unwrap().to_string()
}

async fn execute(app: &TestApp, agent: &str, queue: &str, prompt: &str) -> String {
    let r = app
        .post(
            &format!("/api/v1/agents/{agent}/execute"),
            json!({"prompt": prompt, "worker_queue_id": queue}),
        )
        .await;
    assert_eq!(r.status(), 201);
    json(r).await["execution_id"].as_str().unwrap().to_string()
}

/// A server with a queue and an agent to run on it, both named as given, and a worker-role key.
async fn ready(backend: Backend, queue_name: &str, agent_name: &str) -> (TestApp, String, String, String) {
    let app = TestApp::spawn(backend).await;
    app.unlimited().await;
    let q = queue(&app, queue_name, json!({})).await;
    let a = agent(&app, agent_name).await;
    let worker_key = app.key("default", Role::Worker).await;
    (app, q, a, worker_key)
}

async fn execution(app: &TestApp, id: &str) -> Value {
    json(app.get(&format!("/api/v1/executions/{id}")).await).await
}

/// Waits until the execution has `status` (the reaper works in the background).
async fn wait_for(app: &TestApp, id: &str, status: &str) -> Value {
    for _ in 0..100 {
        let e = execution(app, id).await;
        if e["status"] == status {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("execution {id} never became {status}: {}", execution(app, id).await);
}

fn seqs(events: &[(i64, String, Value)]) -> Vec<i64> {
    events.iter().map(|e| e.0).collect()
}

/// A server whose leases run out in 1.5 s (heartbeat interval 10 "seconds" of 50 ms).
async fn fast_app(backend: Backend) -> TestApp {
    let app = TestApp::spawn_with(backend, |c| {
        c.second_ms = 50;
        c.reaper_interval = Duration::from_millis(100);
    })
    .await;
    app.unlimited().await;
    app
}

both_backends! {
    async fn worker_queues_crud_and_registration_rules(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let env = default_env(&app).await;
        let path = format!("/api/v1/environments/{env}/worker-queues");
        let q = json(app.post(&path, json!({"name": "gpu-pool", "max_workers": 1, "tags": ["gpu"]})).await).await;
        assert_eq!(q["status"], "active");
        assert_eq!(q["heartbeat_interval"], 30);
        assert_eq!(q["active_workers"], 0);
        assert_eq!(q["task_queue_name"], q["id"]);
        let qid = q["id"].as_str().unwrap().to_string();
        assert_error(app.post(&path, json!({"name": "gpu-pool"})).await, 409, "CONFLICT").await;
        assert_error(app.post(&path, json!({"name": "x"})).await, 422, "VALIDATION_ERROR").await;
        assert_error(app.post(&path, json!({"name": "hb", "heartbeat_interval": 5})).await, 422, "VALIDATION_ERROR").await;
        assert_error(app.post(&path, json!({"name": "mw", "max_workers": 0})).await, 422, "VALIDATION_ERROR").await;
        let unknown = format!("/api/v1/environments/{}/worker-queues", uuid::Uuid::now_v7());
        assert_error(app.post(&unknown, json!({"name": "nope"})).await, 404, "NOT_FOUND").await;
        assert_eq!(json(app.get("/api/v1/worker-queues").await).await["total"], 1);
        assert_eq!(json(app.get(&path).await).await["total"], 1);

        let cmd = json(app.get(&format!("/api/v1/worker-queues/{qid}/worker-command")).await).await;
        assert!(cmd["command"].as_str().unwrap().contains(&format!("--queue-id {qid}")), "{cmd}");
        assert_eq!(cmd["can_register"], true);

        // max_workers is enforced at registration; a member key may not register.
        let worker_key = app.key("default", Role::Worker).await;
        let member = app.key("default", Role::Member).await;
        let r = app.req_as(&member, Method::POST, &format!("/api/v1/worker-queues/{qid}/start")).json(&json!({})).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;
        let w = TestWorker::start(&app.url, &worker_key, &qid, "host-a").await;
        let r = app.req_as(&worker_key, Method::POST, &format!("/api/v1/worker-queues/{qid}/start")).json(&json!({"hostname": "host-b"})).send().await.unwrap();
        assert_error(r, 409, "CONFLICT").await;
        let r = app.req_as(&worker_key, Method::POST, "/api/v1/workers/register").json(&json!({"hostname": "h"})).send().await.unwrap();
        assert_error(r, 422, "VALIDATION_ERROR").await;
        let got = json(app.get(&format!("/api/v1/worker-queues/{qid}")).await).await;
        assert_eq!(got["active_workers"], 1);
        assert_eq!(json(app.get(&format!("/api/v1/worker-queues/{qid}/workers")).await).await["total"], 1);
        let workers = json(app.get("/api/v1/workers").await).await;
        assert_eq!(workers["items"][0]["status"], "online");
        assert_eq!(workers["items"][0]["runner_name"], "host-a");
        let runners = json(app.get("/api/v1/runners").await).await;
        assert_eq!(runners["items"][0]["name"], "host-a");
        assert_eq!(runners["items"][0]["status"], "healthy");
        assert_eq!(json(app.get("/api/v1/runners/host-a/health").await).await["online_workers"], 1);
        assert_error(app.get("/api/v1/runners/nobody/health").await, 404, "NOT_FOUND").await;

        // A queue with an online worker cannot be deleted; after the worker leaves it can.
        let r = app.req(Method::DELETE, &format!("/api/v1/worker-queues/{qid}")).send().await.unwrap();
        assert_error(r, 409, "CONFLICT").await;
        assert_eq!(w.disconnect().await.status(), 200);
        // An inactive queue refuses workers and executions.
        let r = send(&app, Method::PATCH, &format!("/api/v1/worker-queues/{qid}"), json!({"status": "inactive", "max_workers": null})).await;
        assert_eq!(json(r).await["max_workers"], Value::Null);
        let r = app.req_as(&worker_key, Method::POST, &format!("/api/v1/worker-queues/{qid}/start")).json(&json!({})).send().await.unwrap();
        assert_error(r, 409, "CONFLICT").await;
        let a = agent(&app, "inactive-target").await;
        let r = app.post(&format!("/api/v1/agents/{a}/execute"), json!({"prompt": "hi", "worker_queue_id": qid})).await;
        assert_error(r, 409, "CONFLICT").await;
        let r = app.req(Method::DELETE, &format!("/api/v1/worker-queues/{qid}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_error(app.get(&format!("/api/v1/worker-queues/{qid}")).await, 404, "NOT_FOUND").await;
    }

    async fn execute_claim_events_complete_and_replay(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let q = queue(&app, "main", json!({})).await;
        let a = agent(&app, "runner").await;

        // Execute's validation: 422 non-UUID queue, 404 unknown queue or agent.
        let r = app.post(&format!("/api/v1/agents/{a}/execute"), json!({"prompt": "hi", "worker_queue_id": "nope"})).await;
        let err = assert_error(r, 422, "VALIDATION_ERROR").await;
        assert_eq!(err["details"]["field"], "worker_queue_id");
        let r = app.post(&format!("/api/v1/agents/{a}/execute"), json!({"prompt": "hi", "worker_queue_id": uuid::Uuid::now_v7()})).await;
        assert_error(r, 404, "NOT_FOUND").await;
        let r = app.post(&format!("/api/v1/agents/{}/execute", uuid::Uuid::now_v7()), json!({"prompt": "hi", "worker_queue_id": q})).await;
        assert_error(r, 404, "NOT_FOUND").await;
        let r = app.post(&format!("/api/v1/agents/{a}/execute"), json!({"prompt": "  ", "worker_queue_id": q})).await;
        assert_error(r, 422, "VALIDATION_ERROR").await;

        let r = app.post(&format!("/api/v1/agents/{a}/execute"), json!({"prompt": "list pods", "worker_queue_id": q})).await;
        assert_eq!(r.status(), 201);
        let accepted = json(r).await;
        assert_eq!(accepted["status"], "queued");
        let id = accepted["execution_id"].as_str().unwrap().to_string();
        assert_eq!(accepted["stream_url"], format!("/api/v1/executions/{id}/stream"));
        let e = execution(&app, &id).await;
        assert_eq!((e["status"].as_str(), e["attempt"].as_i64()), (Some("queued"), Some(1)));
        assert_eq!(json(app.get(&format!("/api/v1/worker-queues/{q}")).await).await["queued_executions"], 1);

        let worker_key = app.key("default", Role::Worker).await;
        let w = TestWorker::start(&app.url, &worker_key, &q, "host").await;
        let claim = w.claim(3).await;
        assert_eq!(claim["execution"]["id"], id.as_str());
        assert_eq!(claim["execution"]["status"], "running");
        assert_eq!(claim["agent"]["id"], a.as_str());
        assert_eq!(claim["system_prompt"], "You are terse.");
        assert_eq!(claim["model"]["value"], "anthropic/claude-sonnet-4-5");
        assert_eq!(claim["model"]["provider_model"], "claude-sonnet-4-5");
        assert_eq!(claim["policy_enforcement"], "blocking");
        assert_eq!(claim["history"][0]["content"], "list pods");
        assert!(claim["lease_id"].is_string());
        // Nothing else to claim.
        assert!(matches!(w.poll(0.0).await, Polled::Nothing));

        let r = w.events(&claim, json!([{"type": "message_chunk", "data": {"content": "3 "}}, {"type": "message_chunk", "data": {"content": "pods"}}])).await;
        assert_eq!(r.status(), 201);
        let stored = json(r).await;
        assert_eq!(stored["last_seq"].as_i64().unwrap() - stored["first_seq"].as_i64().unwrap(), 1);
        // One event without the wrapper, with the reference's field name.
        let r = w.post(&format!("/api/v1/executions/{id}/events")).header("X-Lease-Id", claim["lease_id"].as_str().unwrap())
            .json(&json!({"event_type": "message", "data": {"role": "assistant", "content": "3 pods running"}})).send().await.unwrap();
        assert_eq!(r.status(), 201);
        // A wrong lease, no lease, and `done` from a worker are refused.
        let r = w.post(&format!("/api/v1/executions/{id}/events")).header("X-Lease-Id", uuid::Uuid::now_v7().to_string())
            .json(&json!({"type": "x"})).send().await.unwrap();
        assert_error(r, 409, "CONFLICT").await;
        let r = w.post(&format!("/api/v1/executions/{id}/events")).json(&json!({"type": "x"})).send().await.unwrap();
        assert_error(r, 422, "VALIDATION_ERROR").await;
        assert_error(w.events(&claim, json!([{"type": "done"}])).await, 422, "VALIDATION_ERROR").await;
        // A member key cannot post a worker's events.
        let r = app.req(Method::POST, &format!("/api/v1/executions/{id}/events")).header("X-Lease-Id", claim["lease_id"].as_str().unwrap())
            .json(&json!({"type": "x"})).send().await.unwrap();
        assert_eq!(r.status(), 201, "admin keys may act as workers");
        let member = app.key("default", Role::Member).await;
        let r = app.req_as(&member, Method::POST, &format!("/api/v1/executions/{id}/events")).header("X-Lease-Id", claim["lease_id"].as_str().unwrap())
            .json(&json!({"type": "x"})).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;

        let r = w.complete(&claim, "3 pods running").await;
        assert_eq!(r.status(), 200);
        let done = json(r).await;
        assert_eq!(done["status"], "completed");
        assert_eq!(done["response"], "3 pods running");
        assert_eq!(done["usage"]["total_tokens"], 15);
        assert!(done["completed_at"].is_string() && done["started_at"].is_string());
        // The lease is gone with the run.
        assert_error(w.complete(&claim, "again").await, 409, "CONFLICT").await;
        assert_error(w.events(&claim, json!([{"type": "late"}])).await, 409, "CONFLICT").await;

        // Stored events are gap-free from 1 and end with `done`.
        let page = json(app.get(&format!("/api/v1/executions/{id}/events")).await).await;
        let items = page["items"].as_array().unwrap();
        let numbers: Vec<i64> = items.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        assert_eq!(numbers, (1..=items.len() as i64).collect::<Vec<_>>());
        assert_eq!(page["total"], items.len());
        assert_eq!(items.last().unwrap()["type"], "done");
        assert_eq!(items.last().unwrap()["data"]["status"], "completed");
        let after = json(app.get(&format!("/api/v1/executions/{id}/events?after=3&limit=2")).await).await;
        assert_eq!(after["items"][0]["seq"], 4);
        assert_eq!(after["items"].as_array().unwrap().len(), 2);

        // The stream replays everything and ends after `done`; a cursor skips what was seen.
        let all = read_sse(app.get(&format!("/api/v1/executions/{id}/stream")).await).await;
        assert_eq!(seqs(&all), numbers);
        assert_eq!(all.last().unwrap().1, "done");
        let n = numbers.len() as i64;
        let tail = read_sse(app.req(Method::GET, &format!("/api/v1/executions/{id}/stream")).header("Last-Event-ID", (n - 2).to_string()).send().await.unwrap()).await;
        assert_eq!(seqs(&tail), vec![n - 1, n]);
        let tail = read_sse(app.get(&format!("/api/v1/executions/{id}/stream?after={}", n - 1)).await).await;
        assert_eq!(seqs(&tail), vec![n]);

        let session = json(app.get(&format!("/api/v1/executions/{id}/session")).await).await;
        let roles: Vec<&str> = session["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(roles, vec!["user", "assistant"]);

        // A message continues the conversation: queued again, the claim carries the history.
        let r = app.post(&format!("/api/v1/executions/{id}/message"), json!({"message": "and nodes?"})).await;
        assert_eq!(json(r).await["status"], "queued");
        let again = w.claim(3).await;
        let history: Vec<&str> = again["history"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
        assert_eq!(history, vec!["list pods", "3 pods running", "and nodes?"]);
        assert_eq!(w.complete(&again, "2 nodes").await.status(), 200);

        let list = json(app.get(&format!("/api/v1/executions?status=completed&entity_id={a}")).await).await;
        assert_eq!(list["total"], 1);
        assert_eq!(json(app.get("/api/v1/executions?status=queued").await).await["total"], 0);
        let metrics = json(app.get(&format!("/api/v1/worker-queues/{q}/metrics")).await).await;
        assert_eq!(metrics["completed_last_hour"], 1);
        assert!(metrics["wait_seconds_p50"].is_number(), "{metrics}");
    }

    async fn illegal_transitions_answer_409(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let q = queue(&app, "main", json!({})).await;
        let a = agent(&app, "rules").await;
        let id = execute(&app, &a, &q, "hello").await;
        let path = |action: &str| format!("/api/v1/executions/{id}/{action}");
        assert_error(app.post(&path("resume"), json!({})).await, 409, "CONFLICT").await;
        assert_error(app.post(&path("message"), json!({"message": "x"})).await, 409, "CONFLICT").await;
        assert_eq!(json(app.post(&path("pause"), json!({})).await).await["status"], "paused");
        assert_error(app.post(&path("pause"), json!({})).await, 409, "CONFLICT").await;
        assert_eq!(json(app.post(&path("resume"), json!({})).await).await["status"], "queued");
        assert_eq!(json(app.post(&path("cancel"), json!({})).await).await["status"], "cancelled");
        for action in ["pause", "resume", "cancel"] {
            assert_error(app.post(&path(action), json!({})).await, 409, "CONFLICT").await;
        }
        assert_error(app.post(&path("message"), json!({"message": "x"})).await, 409, "CONFLICT").await;
        let events = read_sse(app.get(&format!("/api/v1/executions/{id}/stream")).await).await;
        let last = events.last().unwrap();
        assert_eq!((last.1.as_str(), last.2["status"].as_str()), ("done", Some("cancelled")));
        // Unknown and malformed ids.
        assert_error(app.get(&format!("/api/v1/executions/{}", uuid::Uuid::now_v7())).await, 404, "NOT_FOUND").await;
        assert_error(app.get("/api/v1/executions/not-a-uuid").await, 400, "BAD_REQUEST").await;
        assert_error(app.get(&format!("/api/v1/executions/{id}/events?after=-1")).await, 422, "VALIDATION_ERROR").await;
    }

    async fn executions_never_cross_organizations(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let q = queue(&app, "main", json!({})).await;
        let a = agent(&app, "private").await;
        let id = execute(&app, &a, &q, "secret plans").await;
        let other = app.org_with_key("other-org", Role::Admin).await;
        let get = |path: String| {
            let key = other.clone();
            let app = &app;
            async move { app.req_as(&key, Method::GET, &path).send().await.unwrap() }
        };
        for path in [format!("/api/v1/executions/{id}"), format!("/api/v1/executions/{id}/events"),
                     format!("/api/v1/executions/{id}/stream"), format!("/api/v1/executions/{id}/session"),
                     format!("/api/v1/worker-queues/{q}"), format!("/api/v1/worker-queues/{q}/executions")] {
            assert_error(get(path).await, 404, "NOT_FOUND").await;
        }
        assert_eq!(json(get("/api/v1/executions".into()).await).await["total"], 0);
        let r = app.req_as(&other, Method::POST, &format!("/api/v1/executions/{id}/cancel")).send().await.unwrap();
        assert_error(r, 404, "NOT_FOUND").await;
        // Their queue id does not work here, nor does our queue for their agents.
        let r = app.req_as(&other, Method::POST, &format!("/api/v1/worker-queues/{q}/start")).json(&json!({})).send().await.unwrap();
        assert_error(r, 404, "NOT_FOUND").await;
        let r = app.req_as(&other, Method::POST, &format!("/api/v1/agents/{a}/execute")).json(&json!({"prompt": "x", "worker_queue_id": q})).send().await.unwrap();
        assert_error(r, 404, "NOT_FOUND").await;
        // A worker of the other org polling with our worker's id finds nothing.
        let worker_key = app.key("default", Role::Worker).await;
        let w = TestWorker::start(&app.url, &worker_key, &q, "ours").await;
        let r = app.req_as(&other, Method::POST, &format!("/api/v1/workers/{}/poll?wait=0", w.id)).send().await.unwrap();
        assert_error(r, 404, "NOT_FOUND").await;
        // Another worker key of the same organization cannot act as this worker either.
        let second_key = app.key("default", Role::Worker).await;
        for action in ["poll?wait=0", "heartbeat", "disconnect"] {
            let r = app.req_as(&second_key, Method::POST, &format!("/api/v1/workers/{}/{action}", w.id)).json(&json!({})).send().await.unwrap();
            assert_error(r, 404, "NOT_FOUND").await;
        }
        assert_eq!(w.heartbeat(&[]).await.status(), 200);
        assert_eq!(execution(&app, &id).await["status"], "queued");
    }

    async fn two_hundred_executions_eight_pollers_each_claimed_once(backend: Backend) {
        let (app, q, a, worker_key) = ready(backend, "busy", "many").await;
        let mut workers = Vec::new();
        for i in 0..8 {
            workers.push(TestWorker::start(&app.url, &worker_key, &q, &format!("host-{i}")).await);
        }
        let claims: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let mut tasks = Vec::new();
        for w in workers {
            let claims = claims.clone();
            tasks.push(tokio::spawn(async move {
                let mut idle = 0;
                while idle < 3 {
                    match w.poll(0.5).await {
                        Polled::Claim(c) => {
                            idle = 0;
                            let id = c["execution"]["id"].as_str().unwrap().to_string();
                            *claims.lock().await.entry(id).or_default() += 1;
                            assert_eq!(w.events(&c, json!([{"type": "message", "data": {"role": "assistant", "content": "ok"}}])).await.status(), 201);
                            assert_eq!(w.complete(&c, "ok").await.status(), 200);
                        }
                        _ => idle += 1,
                    }
                }
            }));
        }
        let mut ids = Vec::new();
        for i in 0..200 {
            ids.push(execute(&app, &a, &q, &format!("task {i}")).await);
        }
        for t in tasks {
            t.await.unwrap();
        }
        let claims = claims.lock().await;
        assert_eq!(claims.len(), 200);
        assert!(claims.values().all(|n| *n == 1), "an execution was claimed twice");
        for id in &ids {
            assert_eq!(claims.get(id), Some(&1));
        }
        let done = json(app.get("/api/v1/executions?status=completed&limit=1").await).await;
        assert_eq!(done["total"], 200);
    }

    async fn cancel_reaches_a_running_worker_through_poll_and_heartbeat(backend: Backend) {
        let app = fast_app(backend).await;
        let q = queue(&app, "main", json!({"heartbeat_interval": 10})).await;
        let a = agent(&app, "cancellable").await;
        let worker_key = app.key("default", Role::Worker).await;
        let w = TestWorker::start(&app.url, &worker_key, &q, "host").await;
        let id = execute(&app, &a, &q, "long job").await;
        let claim = w.claim(3).await;
        // The worker is long-polling for more work when the cancel arrives: the poll answers at once.
        let poller = { let w = w.clone(); tokio::spawn(async move { w.poll(20.0).await }) };
        crate::common::until_parked(&app.state, 1).await;
        let started = std::time::Instant::now();
        let c = json(app.post(&format!("/api/v1/executions/{id}/cancel"), json!({})).await).await;
        assert_eq!(c["status"], "cancelling");
        match poller.await.unwrap() {
            Polled::Cancel(ids) => assert_eq!(ids, vec![id.clone()]),
            other => panic!("expected a cancel, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        let hb = json(w.heartbeat(&[&id]).await).await;
        assert_eq!(hb["cancel_execution_ids"], json!([id]));
        // Cancelling twice is harmless; the worker confirms by failing the run.
        assert_eq!(json(app.post(&format!("/api/v1/executions/{id}/cancel"), json!({})).await).await["status"], "cancelling");
        let r = w.fail(&claim, "stopped", false).await;
        assert_eq!(json(r).await["status"], "cancelled");

        // A worker that never confirms: the grace period (2 intervals) ends it anyway.
        let id2 = execute(&app, &a, &q, "stubborn").await;
        let _claim2 = w.claim(3).await;
        app.post(&format!("/api/v1/executions/{id2}/cancel"), json!({})).await;
        // A poll that begins after the cancel answers it at once, not after its wait.
        let polled = tokio::time::timeout(Duration::from_secs(3), w.poll(20.0)).await.expect("the poll saw the earlier cancel");
        assert!(matches!(polled, Polled::Cancel(ref ids) if ids == &vec![id2.clone()]), "{polled:?}");
        for _ in 0..5 {
            w.heartbeat(&[&id2]).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let e = wait_for(&app, &id2, "cancelled").await;
        assert!(e["error_message"].as_str().unwrap().contains("did not confirm"), "{e}");
        // A queued execution is cancelled at once.
        let id3 = execute(&app, &a, &q, "never mind").await;
        assert_eq!(json(app.post(&format!("/api/v1/executions/{id3}/cancel"), json!({})).await).await["status"], "cancelled");
    }

    async fn a_silent_worker_loses_its_run_to_another(backend: Backend) {
        let app = fast_app(backend).await;
        let q = queue(&app, "main", json!({"heartbeat_interval": 10, "max_attempts": 2})).await;
        let a = agent(&app, "resilient").await;
        let worker_key = app.key("default", Role::Worker).await;
        let dead = TestWorker::start(&app.url, &worker_key, &q, "dies").await;
        let id = execute(&app, &a, &q, "survive this").await;
        let first = dead.claim(3).await;
        assert_eq!(dead.events(&first, json!([{"type": "thinking", "data": {}}])).await.status(), 201);
        // The worker goes silent; after 3 intervals (1.5 s) its run is queued again.
        let e = wait_for(&app, &id, "queued").await;
        assert_eq!(e["attempt"], 2);
        assert_eq!(json(app.get(&format!("/api/v1/workers/{}", dead.id)).await).await["status"], "offline");
        let alive = TestWorker::start(&app.url, &worker_key, &q, "lives").await;
        let second = alive.claim(3).await;
        assert_eq!(second["execution"]["id"], id.as_str());
        assert_eq!(second["execution"]["attempt"], 2);
        // The dead worker's lease is void; the living one finishes.
        assert_error(dead.events(&first, json!([{"type": "zombie"}])).await, 409, "CONFLICT").await;
        let r = dead.post(&format!("/api/v1/workers/{}/poll?wait=0", dead.id)).send().await.unwrap();
        assert_error(r, 409, "CONFLICT").await;
        assert_eq!(alive.complete(&second, "done").await.status(), 200);
        let events = json(app.get(&format!("/api/v1/executions/{id}/events?limit=500")).await).await;
        let statuses: Vec<&str> = events["items"].as_array().unwrap().iter()
            .filter(|e| e["type"] == "status").map(|e| e["data"]["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, vec!["queued", "running", "queued", "running", "completed"]);

        // With its attempts used up, a run whose worker vanishes fails with the reason.
        let id2 = execute(&app, &a, &q, "unlucky").await;
        let _ = alive.claim(3).await;
        let e = wait_for(&app, &id2, "queued").await;
        assert_eq!(e["attempt"], 2);
        let again = TestWorker::start(&app.url, &worker_key, &q, "also-dies").await;
        let _ = again.claim(3).await;
        let e = wait_for(&app, &id2, "failed").await;
        assert!(e["error_message"].as_str().unwrap().contains("worker lost"), "{e}");
        // Disconnecting hands runs back at once.
        let id3 = execute(&app, &a, &q, "handed back").await;
        let polite = TestWorker::start(&app.url, &worker_key, &q, "polite").await;
        let _ = polite.claim(3).await;
        let bye = json(polite.disconnect().await).await;
        assert_eq!(bye["requeued_executions"], 1);
        assert_eq!(execution(&app, &id3).await["status"], "queued");
    }

    async fn a_follower_sees_every_live_event_once_and_resumes_after_a_drop(backend: Backend) {
        let (app, q, a, worker_key) = ready(backend, "main", "chatty").await;
        let w = TestWorker::start(&app.url, &worker_key, &q, "host").await;
        let id = execute(&app, &a, &q, "stream it").await;
        // Followers connect before the run starts and follow it live.
        let full = { let app_url = app.url.clone(); let key = app.admin_key.clone(); let id = id.clone();
            tokio::spawn(async move {
                let r = reqwest::Client::new().get(format!("{app_url}/api/v1/executions/{id}/stream")).bearer_auth(key).send().await.unwrap();
                assert_eq!(r.headers()["content-type"], "text/event-stream");
                read_sse(r).await
            }) };
        // This one drops its connection after the first few events.
        let mut partial = app.get(&format!("/api/v1/executions/{id}/stream")).await;
        let claim = w.claim(3).await;
        let writers: Vec<_> = (0..4).map(|t| { let w = w.clone(); let claim = claim.clone(); tokio::spawn(async move {
            for i in 0..10 {
                let batch: Vec<Value> = (0..3).map(|j| json!({"type": "message_chunk", "data": {"t": t, "i": i, "j": j}})).collect();
                assert_eq!(w.events(&claim, json!(batch)).await.status(), 201);
            }
        }) }).collect();
        let mut seen = String::new();
        while parse_sse(&seen).len() < 5 {
            let chunk = partial.chunk().await.unwrap().unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        drop(partial);
        // Keep only whole frames, as an SSE client would.
        let whole = &seen[..seen.rfind("\n\n").unwrap() + 2];
        let got = parse_sse(whole);
        let last = got.last().unwrap().0;
        for t in writers { t.await.unwrap(); }
        assert_eq!(w.complete(&claim, "ok").await.status(), 200);

        let everything = full.await.unwrap();
        let total = execution(&app, &id).await["event_count"].as_i64().unwrap();
        assert_eq!(seqs(&everything), (1..=total).collect::<Vec<_>>(), "live follower missed or repeated events");
        assert_eq!(everything.iter().filter(|e| e.1 == "message_chunk").count(), 120);
        let resumed = read_sse(app.req(Method::GET, &format!("/api/v1/executions/{id}/stream")).header("Last-Event-ID", last.to_string()).send().await.unwrap()).await;
        let mut joined = seqs(&got);
        joined.extend(seqs(&resumed));
        assert_eq!(joined, (1..=total).collect::<Vec<_>>(), "resume lost or repeated events");
        // `stream: true` on execute answers the stream itself.
        let r = app.post(&format!("/api/v1/agents/{a}/execute"), json!({"prompt": "inline", "worker_queue_id": q, "stream": true})).await;
        assert_eq!(r.status(), 200);
        let exec_id = r.headers()["x-execution-id"].to_str().unwrap().to_string();
        let reader = tokio::spawn(read_sse(r));
        let c = w.claim(3).await;
        assert_eq!(c["execution"]["id"], exec_id.as_str());
        w.complete(&c, "inline done").await;
        let frames = reader.await.unwrap();
        assert_eq!(frames.last().unwrap().2["response"], "inline done");
    }

    async fn nothing_is_lost_across_a_server_restart(backend: Backend) {
        let (mut app, q, a, worker_key) = ready(backend, "main", "durable").await;
        let mut w = TestWorker::start(&app.url, &worker_key, &q, "host").await;
        let running = execute(&app, &a, &q, "in flight").await;
        let claim = w.claim(3).await;
        assert_eq!(w.events(&claim, json!([{"type": "message_chunk", "data": {"n": 1}}])).await.status(), 201);
        let waiting = execute(&app, &a, &q, "still queued").await;
        // A long poll and a stream open on the old process end when it stops, rather than
        // holding its graceful shutdown open.
        let q2 = queue(&app, "idle", json!({})).await;
        let idle = TestWorker::start(&app.url, &worker_key, &q2, "idle").await;
        let long_poll = tokio::spawn(async move { idle.poll(30.0).await });
        let follower = tokio::spawn(read_sse(app.get(&format!("/api/v1/executions/{running}/stream")).await));
        tokio::time::sleep(Duration::from_millis(200)).await;

        app.restart(|_| {}).await;
        let polled = tokio::time::timeout(Duration::from_secs(5), long_poll).await.expect("poll ended").unwrap();
        assert!(matches!(polled, Polled::Nothing), "{polled:?}");
        let frames = tokio::time::timeout(Duration::from_secs(5), follower).await.expect("stream ended").unwrap();
        assert_eq!(seqs(&frames), vec![1, 2, 3, 4]);
        w.url = app.url.clone();
        // The worker carries on against the new process: same lease, next seq, and the queued one.
        assert_eq!(w.heartbeat(&[&running]).await.status(), 200);
        let r = json(w.events(&claim, json!([{"type": "message_chunk", "data": {"n": 2}}])).await).await;
        assert_eq!(r["first_seq"], 5);
        assert_eq!(w.complete(&claim, "survived").await.status(), 200);
        let next = w.claim(3).await;
        assert_eq!(next["execution"]["id"], waiting.as_str());
        assert_eq!(w.complete(&next, "also").await.status(), 200);
        assert_eq!(execution(&app, &running).await["status"], "completed");
        assert_eq!(execution(&app, &waiting).await["status"], "completed");
    }
}

both_backends! {
    async fn environments_count_live_workers_and_keep_queues_with_work(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let env = json(app.post("/api/v1/environments", json!({"name": "staging"})).await).await;
        let env_id = env["id"].as_str().unwrap().to_string();
        assert_eq!(env["active_workers"], 0);
        let r = app.post(&format!("/api/v1/environments/{env_id}/worker-queues"), json!({"name": "stage-q"})).await;
        let q = json(r).await["id"].as_str().unwrap().to_string();
        let cmd = json(app.get(&format!("/api/v1/environments/{env_id}/worker-command")).await).await;
        assert_eq!(cmd["queues"][0]["worker_queue_id"], q.as_str());
        assert!(cmd["queues"][0]["command"].as_str().unwrap().contains(&q));

        let worker_key = app.key("default", Role::Worker).await;
        let w = TestWorker::start(&app.url, &worker_key, &q, "stage-host").await;
        let env = json(app.get(&format!("/api/v1/environments/{env_id}")).await).await;
        assert_eq!((env["active_workers"].as_i64(), env["idle_workers"].as_i64(), env["busy_workers"].as_i64()), (Some(1), Some(1), Some(0)));
        let r = w.post(&format!("/api/v1/workers/{}/heartbeat", w.id)).json(&json!({"status": "busy"})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let listed = json(app.get("/api/v1/environments").await).await;
        let staging = listed["items"].as_array().unwrap().iter().find(|e| e["id"] == env_id.as_str()).unwrap().clone();
        assert_eq!(staging["busy_workers"], 1);
        let r = app.req(Method::DELETE, &format!("/api/v1/environments/{env_id}")).send().await.unwrap();
        assert_error(r, 409, "CONFLICT").await;
        w.disconnect().await;
        // Queued work also keeps the environment (and its queue) from going away.
        let a = agent(&app, "stage-agent").await;
        let id = execute(&app, &a, &q, "wait here").await;
        let r = app.req(Method::DELETE, &format!("/api/v1/environments/{env_id}")).send().await.unwrap();
        assert_error(r, 409, "CONFLICT").await;
        let r = app.req(Method::DELETE, &format!("/api/v1/worker-queues/{q}")).send().await.unwrap();
        assert_error(r, 409, "CONFLICT").await;
        app.post(&format!("/api/v1/executions/{id}/cancel"), json!({})).await;
        let r = app.req(Method::DELETE, &format!("/api/v1/environments/{env_id}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_error(app.get(&format!("/api/v1/worker-queues/{q}")).await, 404, "NOT_FOUND").await;
        assert_eq!(execution(&app, &id).await["status"], "cancelled");
    }
}

/// PostgreSQL only: two servers on one database behave as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgres_wake_and_stream_across() {
    let app = TestApp::spawn(Backend::Postgres).await;
    app.unlimited().await;
    let b = app.replica().await;
    // The replicas' subscriptions are made before they serve; give B's server a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let q = queue(&app, "shared", json!({})).await;
    let a = agent(&app, "everywhere").await;
    let worker_key = app.key("default", Role::Worker).await;
    // The worker long-polls replica A; the execute goes to replica B.
    let w = TestWorker::start(&app.url, &worker_key, &q, "on-a").await;
    let client = reqwest::Client::new();
    for round in 0..3 {
        let poller = {
            let w = w.clone();
            tokio::spawn(async move {
                let polled = w.poll(20.0).await;
                (polled, std::time::Instant::now())
            })
        };
        crate::common::until_parked(&app.state, 1).await;
        let sent = std::time::Instant::now();
        let r = client
            .post(format!("{}/api/v1/agents/{a}/execute", b.url))
            .bearer_auth(&app.admin_key)
            .json(&json!({"prompt": format!("round {round}"), "worker_queue_id": q}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let id = json(r).await["execution_id"].as_str().unwrap().to_string();
        let (polled, woke) = poller.await.unwrap();
        let Polled::Claim(claim) = polled else {
            panic!("expected a claim, got {polled:?}")
        };
        assert_eq!(claim["execution"]["id"], id.as_str());
        // A notification, not the 20 s poll timeout.
        assert!(woke - sent < Duration::from_secs(2), "woken after {:?}", woke - sent);

        // A follower on B sees every event the worker posts to A, once, in order.
        let follower = {
            let url = format!("{}/api/v1/executions/{id}/stream", b.url);
            let key = app.admin_key.clone();
            tokio::spawn(async move {
                read_sse(reqwest::Client::new().get(url).bearer_auth(key).send().await.unwrap()).await
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        for i in 0..5 {
            assert_eq!(
                w.events(&claim, json!([{"type": "message_chunk", "data": {"i": i}}]))
                    .await
                    .status(),
                201
            );
        }
        assert_eq!(w.complete(&claim, "done").await.status(), 200);
        let frames = tokio::time::timeout(Duration::from_secs(10), follower)
            .await
            .expect("stream ended")
            .unwrap();
        let total = execution(&app, &id).await["event_count"].as_i64().unwrap();
        assert_eq!(seqs(&frames), (1..=total).collect::<Vec<_>>());
        assert_eq!(frames.last().unwrap().1, "done");
    }
    // A cancel sent to B reaches the worker's poll on A.
    let id = execute(&app, &a, &q, "to cancel").await;
    let claim = w.claim(3).await;
    assert_eq!(claim["execution"]["id"], id.as_str());
    let poller = {
        let w = w.clone();
        tokio::spawn(async move { w.poll(20.0).await })
    };
    crate::common::until_parked(&app.state, 1).await;
    let r = client
        .post(format!("{}/api/v1/executions/{id}/cancel", b.url))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["status"], "cancelling");
    let polled = tokio::time::timeout(Duration::from_secs(3), poller)
        .await
        .expect("poll woke")
        .unwrap();
    assert!(
        matches!(polled, Polled::Cancel(ref ids) if ids == &vec![id.clone()]),
        "{polled:?}"
    );
}

/// The worker process of `a_killed_worker_process_loses_its_run_to_another`: the same test
/// started again as a child (role `worker`), with the worker's settings in its environment;
/// it claims the run, reports it and waits to be killed.
async fn worker_process() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let (url, key, queue, report) = (
        var("KCP_TEST_WORKER_URL"),
        var("KCP_TEST_WORKER_KEY"),
        var("KCP_TEST_WORKER_QUEUE"),
        var("KCP_TEST_WORKER_REPORT"),
    );
    let w = TestWorker::start(&url, &key, &queue, "doomed").await;
    let claim = w.claim(10).await;
    // Heartbeats extend the leases of the runs they list.
    let beating = w.clone();
    let held = claim["execution"]["id"].as_str().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            beating.heartbeat(&[held.as_str()]).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    assert_eq!(
        w.events(&claim, json!([{"type": "thinking", "data": {"step": 1}}]))
            .await
            .status(),
        201
    );
    // A file rather than stdout: the test harness may capture a test's output.
    std::fs::write(&report, claim["execution"]["id"].as_str().unwrap()).unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
}

both_backends! {
    async fn a_killed_worker_process_loses_its_run_to_another(backend: Backend) {
        if crate::common::child::role().as_deref() == Some("worker") {
            return worker_process().await;
        }
        let app = fast_app(backend).await;
        let q = queue(&app, "main", json!({"heartbeat_interval": 10})).await;
        let a = agent(&app, "outlives-its-worker").await;
        let worker_key = app.key("default", Role::Worker).await;
        let id = execute(&app, &a, &q, "do not get lost").await;
        let report = app.db.dir.path().join("claimed");
        let leaf = if backend == Backend::Sqlite { "sqlite" } else { "postgres" };
        let mut child = crate::common::child::command(&crate::common::child::test_name(module_path!(), leaf), "worker")
            .env("KCP_TEST_WORKER_URL", &app.url)
            .env("KCP_TEST_WORKER_KEY", &worker_key)
            .env("KCP_TEST_WORKER_QUEUE", &q)
            .env("KCP_TEST_WORKER_REPORT", &report)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut claimed = None;
        for _ in 0..200 {
            if let Ok(text) = std::fs::read_to_string(&report) {
                claimed = Some(text);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(claimed.as_deref(), Some(id.as_str()), "the worker process never claimed");
        // Alive and heartbeating, the worker keeps its run past several lease lengths...
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert_eq!(execution(&app, &id).await["status"], "running");
        // ...until its process dies.
        child.kill().await.unwrap();
        let e = wait_for(&app, &id, "queued").await;
        assert_eq!(e["attempt"], 2);
        let survivor = TestWorker::start(&app.url, &worker_key, &q, "survivor").await;
        let claim = survivor.claim(3).await;
        assert_eq!(claim["execution"]["id"], id.as_str());
        assert_eq!(survivor.complete(&claim, "finished elsewhere").await.status(), 200);
        let e = execution(&app, &id).await;
        assert_eq!((e["status"].as_str(), e["response"].as_str()), (Some("completed"), Some("finished elsewhere")));
    }
}

both_backends! {
    async fn drain_and_idempotent_execute(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let q = queue(&app, "main", json!({})).await;
        let a = agent(&app, "once").await;
        // The same Idempotency-Key submits once and answers the first answer again.
        let send_once = || async {
            app.req(Method::POST, &format!("/api/v1/agents/{a}/execute"))
                .header("Idempotency-Key", "submit-1")
                .json(&json!({"prompt": "only once", "worker_queue_id": q}))
                .send()
                .await
                .unwrap()
        };
        let first = json(send_once().await).await;
        let second = send_once().await;
        assert_eq!(second.headers()["idempotent-replayed"], "true");
        assert_eq!(json(second).await["execution_id"], first["execution_id"]);
        assert_eq!(json(app.get("/api/v1/executions").await).await["total"], 1);

        // A draining worker is told so by its poll (at once) and its heartbeats, and claims nothing.
        let worker_key = app.key("default", Role::Worker).await;
        let w = TestWorker::start(&app.url, &worker_key, &q, "host").await;
        let claim = w.claim(3).await;
        let poller = { let w = w.clone(); tokio::spawn(async move { w.poll(20.0).await }) };
        crate::common::until_parked(&app.state, 1).await;
        let r = app.post(&format!("/api/v1/workers/{}/drain", w.id), json!({"drain": true})).await;
        assert_eq!(json(r).await["drain"], true);
        let polled = tokio::time::timeout(Duration::from_secs(3), poller).await.expect("poll woke").unwrap();
        assert!(matches!(polled, Polled::Drain), "{polled:?}");
        assert_eq!(json(w.heartbeat(&[]).await).await["drain"], true);
        execute(&app, &a, &q, "not for a draining worker").await;
        assert!(matches!(w.poll(0.0).await, Polled::Drain));
        // Its current run still finishes.
        assert_eq!(w.complete(&claim, "done").await.status(), 200);
        let r = app.req_as(&worker_key, Method::POST, &format!("/api/v1/workers/{}/drain", w.id)).json(&json!({})).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;
        app.post(&format!("/api/v1/workers/{}/drain", w.id), json!({"drain": false})).await;
        assert!(matches!(w.poll(1.0).await, Polled::Claim(_)));
    }
}

both_backends! {
    async fn a_request_cut_off_releases_its_idempotency_key(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let q = queue(&app, "cut", json!({})).await;
        let worker_key = app.key("default", Role::Worker).await;
        let w = TestWorker::start(&app.url, &worker_key, &q, "host").await;
        let poll = |key: &'static str| {
            w.post(&format!("/api/v1/workers/{}/poll?wait=20", w.id)).header("Idempotency-Key", key).send()
        };
        let poll_now = |key: &'static str| {
            w.post(&format!("/api/v1/workers/{}/poll?wait=0", w.id)).header("Idempotency-Key", key).send()
        };
        // A long poll under a key, cut off while it waits (its client went away; a server
        // that stops mid-request drops it the same way).
        let cut = tokio::spawn(poll("poll-1"));
        crate::common::until_parked(&app.state, 1).await;
        cut.abort();
        // The server drops the request when its connection closes; the key's release is
        // spawned then and lands a moment later.
        crate::common::until_polls(&app.state, "the cut-off poll to end", |parked| parked == 0).await;
        // The retry under the same key runs instead of meeting "in progress" for a minute:
        // retried back to back (each retry is a round trip) for at most 30 s, half that minute.
        let started = std::time::Instant::now();
        let answer = loop {
            let r = poll_now("poll-1").await.unwrap();
            if r.status() != 409 {
                break r.status();
            }
            assert!(r.headers().contains_key("retry-after"), "an in-progress 409 says when to retry");
            assert!(started.elapsed() < Duration::from_secs(30), "the key stayed in progress");
        };
        assert_eq!(answer, reqwest::StatusCode::NO_CONTENT);
    }
}

both_backends! {
    async fn a_team_claim_carries_its_members_in_member_order(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let q = queue(&app, "teams", json!({})).await;
        let (first, second) = (agent(&app, "member-b").await, agent(&app, "member-a").await);
        let team = json(app.post("/api/v1/teams", json!({"name": "crew", "configuration": {"member_ids": [first, second]}})).await).await;
        let r = app.post(&format!("/api/v1/teams/{}/execute", team["id"].as_str().unwrap()), json!({"prompt": "together", "worker_queue_id": q})).await;
        assert_eq!(r.status(), 201);
        let worker_key = app.key("default", Role::Worker).await;
        let claim = TestWorker::start(&app.url, &worker_key, &q, "team-host").await.claim(3).await;
        assert_eq!(claim["execution"]["execution_type"], "team");
        assert_eq!(claim["team"]["id"], team["id"]);
        let members: Vec<&str> = claim["members"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(members, vec![first.as_str(), second.as_str()]);
    }
}

both_backends! {
    // The run context is cached per agent under the catalog version: every edit that could
    // change it (the agent, the organization's settings, a secret) shows in the next claim,
    // and a claim that hands out a secret is never served from the cache (each read is logged).
    async fn each_claim_sees_the_catalog_as_it_is_then(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let q = queue(&app, "fresh", json!({})).await;
        let r = app.post("/api/v1/models", json!({"value": "acme/m1", "label": "m1", "provider": "acme", "api_key_secret": "ACME_KEY"})).await;
        assert_eq!(r.status(), 201);
        let a = json(app.post("/api/v1/agents", json!({"name": "cached", "system_prompt": "one", "model_id": "acme/m1"})).await).await;
        let a = a["id"].as_str().unwrap().to_string();
        let worker_key = app.key("default", Role::Worker).await;
        let w = TestWorker::start(&app.url, &worker_key, &q, "cache-host").await;
        let run = || async {
            execute(&app, &a, &q, "go").await;
            let claim = w.claim(3).await;
            assert_eq!(w.complete(&claim, "ok").await.status(), 200);
            claim
        };
        for _ in 0..2 {
            let c = run().await;
            assert_eq!(c["system_prompt"], "one");
            assert_eq!(c["model"]["api_key"], Value::Null);
            assert_eq!(c["policy_enforcement"], "blocking");
        }
        let r = send(&app, Method::PATCH, &format!("/api/v1/agents/{a}"), json!({"system_prompt": "two"})).await;
        assert_eq!(r.status(), 200);
        assert_eq!(run().await["system_prompt"], "two");
        let r = send(&app, Method::PATCH, "/api/v1/organization/settings", json!({"policy_enforcement": "monitoring"})).await;
        assert_eq!(r.status(), 200);
        assert_eq!(run().await["policy_enforcement"], "monitoring");
        assert_eq!(app.post("/api/v1/secrets", json!({"name": "ACME_KEY", "value": "sk-1"})).await.status(), 201);
        for _ in 0..2 {
            assert_eq!(run().await["model"]["api_key"], "sk-1");
        }
        let log = json(app.get("/api/v1/secrets/ACME_KEY/access-log").await).await;
        assert_eq!(log["total"], 2, "{log}");
    }
}

both_backends! {
    // A client's change lands exactly once while the worker keeps the row moving (event
    // batches and heartbeats): on PostgreSQL a change whose row moved between its read and
    // its write reads again, so the cancel is neither lost nor doubled and no seq repeats.
    async fn a_cancel_racing_the_workers_events_lands_once(backend: Backend) {
        let (app, q, a, worker_key) = ready(backend, "racing", "racer").await;
        let w = TestWorker::start(&app.url, &worker_key, &q, "race-host").await;
        let id = execute(&app, &a, &q, "go").await;
        let claim = w.claim(3).await;
        let post = |k: i64| {
            let (w, claim, id) = (&w, &claim, &id);
            async move {
                for i in 0..20 {
                    let batch = json!([{"type": "message_chunk", "data": {"k": k, "n": i}}, {"type": "message_chunk", "data": {"k": k, "n": i}}]);
                    assert_eq!(w.events(claim, batch).await.status(), 201, "poster {k} batch {i}");
                    if i % 8 == 0 {
                        assert_eq!(w.heartbeat(&[id]).await.status(), 200);
                    }
                }
                40
            }
        };
        // Cancelling twice changes nothing, but each cancel is a guarded write of the row.
        let cancelling = async {
            let mut answers = Vec::new();
            for _ in 0..20 {
                answers.push(app.post(&format!("/api/v1/executions/{id}/cancel"), json!({})).await.status());
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            answers
        };
        let (a, b, c, d, answers) = tokio::join!(post(0), post(1), post(2), post(3), cancelling);
        let stored: i64 = a + b + c + d;
        assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
        let e = execution(&app, &id).await;
        assert_eq!(e["status"], "cancelling", "{e}");
        let events = json(app.get(&format!("/api/v1/executions/{id}/events?limit=500")).await).await;
        let items = events["items"].as_array().unwrap();
        let got: Vec<i64> = items.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        // queued, the user's message, running, the worker's events, cancelling.
        assert_eq!(got, (1..=stored + 4).collect::<Vec<i64>>(), "{events}");
        let cancels = items.iter().filter(|e| e["type"] == "status" && e["data"]["status"] == "cancelling").count();
        assert_eq!(cancels, 1, "{events}");
        assert_eq!(e["event_count"], stored + 4);
        // The worker still holds the run: a run that completed while being cancelled stays
        // completed.
        assert_eq!(w.complete(&claim, "done anyway").await.status(), 200);
        assert_eq!(execution(&app, &id).await["status"], "completed");
    }
}

both_backends! {
    // On PostgreSQL a queue's claims start past the run claimed last (the claim index still
    // holds every claimed run until a vacuum). A run that goes back to the queue sits behind
    // that point; while newer runs keep the queue busy it must still be claimed soon, not
    // only once the queue runs dry.
    async fn a_run_back_in_a_busy_queue_is_claimed_soon(backend: Backend) {
        let (app, q, a, worker_key) = ready(backend, "busy", "busy-runner").await;
        let first = TestWorker::start(&app.url, &worker_key, &q, "first-host").await;
        let busy = TestWorker::start(&app.url, &worker_key, &q, "busy-host").await;
        let old = execute(&app, &a, &q, "old").await;
        // A later run, created well after the old one (ids are ordered by creation time).
        tokio::time::sleep(Duration::from_millis(30)).await;
        execute(&app, &a, &q, "newer").await;
        let held = first.claim(3).await;
        assert_eq!(held["execution"]["id"], old.as_str());
        let newer = busy.claim(3).await;
        assert_eq!(busy.complete(&newer, "ok").await.status(), 200);
        // The old run goes back to the queue, behind the last claimed one.
        assert_eq!(first.fail(&held, "try again", true).await.status(), 200);
        assert_eq!(execution(&app, &old).await["status"], "queued");

        // Two new runs for each one claimed: the queue never runs dry.
        let started = std::time::Instant::now();
        let mut claimed = 0;
        loop {
            execute(&app, &a, &q, "more").await;
            execute(&app, &a, &q, "more").await;
            let claim = busy.claim(3).await;
            claimed += 1;
            let id = claim["execution"]["id"].as_str().unwrap().to_string();
            assert_eq!(busy.complete(&claim, "ok").await.status(), 200);
            if id == old {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{backend:?}: the old run was passed over by {claimed} newer claims"
            );
        }
        assert_eq!(execution(&app, &old).await["attempt"], 2);
    }
}

/// PostgreSQL only: a replica finishes a run from the row as its claim and the worker's event
/// batches left it, without reading it again. A change made meanwhile on another replica (a
/// cancel) or by a heartbeat must win over that kept row: a retryable failure of a run being
/// cancelled ends it `cancelled`, where the kept row (still `running`) would re-queue it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_another_replica_wins_over_the_row_a_replica_kept() {
    let app = TestApp::spawn(Backend::Postgres).await;
    app.unlimited().await;
    let b = app.replica().await;
    let q = queue(&app, "kept", json!({})).await;
    let a = agent(&app, "keeper").await;
    let worker_key = app.key("default", Role::Worker).await;
    let w = TestWorker::start(&app.url, &worker_key, &q, "on-a").await;
    let client = reqwest::Client::new();
    let on_b = |path: String| {
        client
            .post(format!("{}{path}", b.url))
            .bearer_auth(&app.admin_key)
            .json(&json!({}))
            .send()
    };

    // Cancelled on B between the worker's events and its failure on A.
    let id = execute(&app, &a, &q, "cancel me elsewhere").await;
    let claim = w.claim(3).await;
    let batch = json!([{"type": "message_chunk", "data": {"n": 1}}]);
    assert_eq!(w.events(&claim, batch.clone()).await.status(), 201);
    assert_eq!(
        on_b(format!("/api/v1/executions/{id}/cancel")).await.unwrap().status(),
        200
    );
    assert_eq!(w.fail(&claim, "boom", true).await.status(), 200);
    let e = execution(&app, &id).await;
    assert_eq!(e["status"], "cancelled", "{e}");
    assert_eq!(e["attempt"], 1, "{e}");

    // A heartbeat moves the lease without a new event; the kept row's lease is then out of
    // date, and the write that follows still lands once, with gap-free seqs.
    let id = execute(&app, &a, &q, "heartbeat in between").await;
    let claim = w.claim(3).await;
    assert_eq!(w.events(&claim, batch).await.status(), 201);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(w.heartbeat(&[id.as_str()]).await.status(), 200);
    assert_eq!(w.complete(&claim, "done").await.status(), 200);
    let e = execution(&app, &id).await;
    assert_eq!(e["status"], "completed", "{e}");
    let events = json(app.get(&format!("/api/v1/executions/{id}/events?limit=50")).await).await;
    let got: Vec<i64> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(
        got,
        (1..=e["event_count"].as_i64().unwrap()).collect::<Vec<_>>(),
        "{events}"
    );
}

both_backends! {
    async fn a_forgotten_run_lapses_and_binary_output_still_ends_it(backend: Backend) {
        let app = fast_app(backend).await;
        let q = queue(&app, "main", json!({"heartbeat_interval": 10})).await;
        let a = agent(&app, "forgetful").await;
        let worker_key = app.key("default", Role::Worker).await;
        let w = TestWorker::start(&app.url, &worker_key, &q, "forgetful").await;
        let id = execute(&app, &a, &q, "forget me").await;
        w.claim(3).await;
        // The worker stays alive but no longer lists the run: its lease is not extended, and
        // the run goes back to the queue.
        let started = std::time::Instant::now();
        loop {
            assert_eq!(w.heartbeat(&[]).await.status(), 200);
            let e = execution(&app, &id).await;
            if e["status"] == "queued" {
                assert_eq!(e["attempt"], 2);
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "the forgotten run kept its lease: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // Tool output with NUL (a binary file, /proc/*/environ) is stored, not refused.
        let claim = w.claim(3).await;
        let r = w.events(&claim, json!([{"type": "tool_completed", "data": {"tool_output": "bin\u{0}ary", "k\u{0}": 1}}])).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        assert_eq!(w.complete(&claim, "done\u{0}").await.status(), 200);
        let e = execution(&app, &id).await;
        assert_eq!((e["status"].as_str(), e["response"].as_str()), (Some("completed"), Some("done\u{FFFD}")));
        // The final record names the worker that ran it.
        assert_eq!(e["worker_id"], w.id.as_str(), "{e}");
        let events = json(app.get(&format!("/api/v1/executions/{id}/events")).await).await;
        let tool = events["items"].as_array().unwrap().iter().find(|e| e["event_type"] == "tool_completed" || e["type"] == "tool_completed").cloned();
        let tool = tool.unwrap_or_else(|| panic!("no tool event: {events}"));
        assert!(tool.to_string().contains("bin\u{FFFD}ary"), "{tool}");

        // Failed and cancelled runs keep their worker too.
        let failed = execute(&app, &a, &q, "fail me").await;
        let claim = w.claim(3).await;
        assert_eq!(w.fail(&claim, "broke\u{0}", false).await.status(), 200);
        let e = execution(&app, &failed).await;
        assert_eq!((e["status"].as_str(), e["worker_id"].as_str()), (Some("failed"), Some(w.id.as_str())), "{e}");
        let cancelled = execute(&app, &a, &q, "cancel me").await;
        w.claim(3).await;
        assert!(app.post(&format!("/api/v1/executions/{cancelled}/cancel"), json!({})).await.status().is_success());
        let e = wait_for(&app, &cancelled, "cancelled").await;
        assert_eq!(e["worker_id"], w.id.as_str(), "{e}");
    }
}

both_backends! {
    async fn streams_are_bounded_per_key_and_end_with_their_key(backend: Backend) {
        let (app, q, a, _) = ready(backend, "main", "streamed").await;
        let id = execute(&app, &a, &q, "keep streaming").await;
        let created = app.post("/api/v1/api-keys", json!({"name": "watcher", "role": "member"})).await;
        let created = json(created).await;
        let (key_id, member) = (created["id"].as_str().unwrap().to_string(), created["key"].as_str().unwrap().to_string());
        let path = format!("/api/v1/executions/{id}/stream");
        let client = reqwest::Client::new();
        let open = || client.get(format!("{}{path}", app.url)).bearer_auth(&member).send();
        let mut held = Vec::new();
        for i in 0..100 {
            let r = open().await.unwrap();
            assert_eq!(r.status(), 200, "stream {i}");
            held.push(r);
        }
        assert_error(open().await.unwrap(), 429, "RATE_LIMITED").await;
        // Another key has its own streams; closing one gives its place back.
        assert_eq!(app.get(&path).await.status(), 200);
        drop(held.pop());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut watched = loop {
            let r = open().await.unwrap();
            if r.status() == 200 {
                break r;
            }
            assert!(std::time::Instant::now() < deadline, "a closed stream kept its place");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(watched.chunk().await.unwrap().is_some(), "the stored events are replayed");

        // Revoking the key ends its open streams within seconds.
        assert_eq!(app.req(Method::DELETE, &format!("/api/v1/api-keys/{key_id}")).send().await.unwrap().status(), 200);
        let revoked = std::time::Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(Some(_)) = watched.chunk().await {}
        })
        .await;
        assert!(ended.is_ok(), "the stream outlived its key by {:?}", revoked.elapsed());
    }
}
