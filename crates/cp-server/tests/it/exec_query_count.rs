//! An execution's life (execute, claim, events, complete) costs a bounded number of
//! statements, and a claim of an agent claimed before reads nothing of the catalog: counted
//! from sqlx's own statement log.
//!
//! It runs in a process of its own (`statements::alone`): the log is process-wide.

use crate::common::worker::TestWorker;
use crate::common::{Backend, TestApp, json, statements};
use cp_types::org::Role;
use serde_json::json;
use statements::take;

/// Runs one execution's life; returns the statements of each step.
async fn life(app: &TestApp, w: &TestWorker, agent: &str, queue: &str) -> [Vec<String>; 4] {
    take();
    let r = app
        .post(
            &format!("/api/v1/agents/{agent}/execute"),
            json!({"prompt": "p", "worker_queue_id": queue}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let execute = take();
    let claim = w.claim(3).await;
    let claimed = take();
    let id = claim["execution"]["id"].as_str().unwrap();
    let r = w
        .events(
            &claim,
            json!([{"type": "run_started", "data": {}}, {"type": "message", "data": {"content": "ok"}}]),
        )
        .await;
    assert_eq!(r.status(), 201, "{id}");
    let events = take();
    assert_eq!(w.complete(&claim, "ok").await.status(), 200);
    [execute, claimed, events, take()]
}

/// A quiet server without rate limit, with a queue and an agent named `name` and a worker on
/// that queue: the server, the worker, the agent's id and the queue's id.
async fn setup(backend: Backend, name: &str) -> (TestApp, TestWorker, String, String) {
    let app = TestApp::spawn_quiet(backend).await;
    app.unlimited().await;
    let envs = json(app.get("/api/v1/environments").await).await;
    let env = envs["items"][0]["id"].as_str().unwrap().to_string();
    let q = json(
        app.post(
            &format!("/api/v1/environments/{env}/worker-queues"),
            json!({"name": name}),
        )
        .await,
    )
    .await;
    let q = q["id"].as_str().unwrap().to_string();
    let a = json(
        app.post("/api/v1/agents", json!({"name": name, "system_prompt": "x"}))
            .await,
    )
    .await;
    let a = a["id"].as_str().unwrap().to_string();
    let key = app.key("default", Role::Worker).await;
    let w = TestWorker::start(&app.url, &key, &q, &format!("{name}-host")).await;
    (app, w, a, q)
}

async fn check(backend: Backend) {
    let (app, w, a, q) = setup(backend, "counted").await;
    let first = life(&app, &w, &a, &q).await;
    assert!(
        first[1].iter().any(|s| s.contains("FROM agents")),
        "a cold claim reads the agent: {:?}",
        first[1]
    );
    let warm = life(&app, &w, &a, &q).await;
    // A warm claim reads nothing of the catalog: the agent's context comes from the cache.
    for table in ["agents", "models", "skill", "environments", "secrets", "organizations"] {
        let hit: Vec<&String> = warm[1]
            .iter()
            .filter(|s| s.contains(&format!("FROM {table}")))
            .collect();
        assert!(hit.is_empty(), "{backend:?}: a warm claim read {table}: {hit:?}");
    }
    let counts: Vec<usize> = warm.iter().map(Vec::len).collect();
    println!("{backend:?}: statements per step of a warm execution: {counts:?}");
    // An organization with webhooks takes the same path: its deliveries are written by the
    // same statements (the sender is off here, so they stay pending). The settings change
    // moves the catalog version: one life warms the cache again first.
    crate::webhooks::allow_private(&app).await;
    let hook = json(
        app.post(
            "/api/v1/webhooks",
            json!({"url": "http://127.0.0.1:9/hook", "events": ["execution.started", "execution.completed"]}),
        )
        .await,
    )
    .await;
    life(&app, &w, &a, &q).await;
    let hooked = life(&app, &w, &a, &q).await;
    let hooked_counts: Vec<usize> = hooked.iter().map(Vec::len).collect();
    // SQLite's writer inserts each delivery row with a call of its own (no round trip).
    let rows = match backend {
        Backend::Sqlite => [0, 1, 0, 1],
        Backend::Postgres => [0; 4],
    };
    let expected: Vec<usize> = counts.iter().zip(rows).map(|(n, r)| n + r).collect();
    assert_eq!(hooked_counts, expected, "{backend:?}: with webhooks {hooked:?}");
    let log = json(
        app.get(&format!("/api/v1/webhooks/{}/deliveries", hook["id"].as_str().unwrap()))
            .await,
    )
    .await;
    let mut kinds: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event_type"].as_str().unwrap())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "execution.completed",
            "execution.completed",
            "execution.started",
            "execution.started"
        ],
        "{log}"
    );
    // Every statement, the SQLite writer thread's included (its BEGIN and COMMIT are in-process
    // calls, not round trips). On PostgreSQL a poll's claim reads the worker's seat in the same
    // statement, and a status change reads the row and writes it.
    let most = match backend {
        Backend::Sqlite => [7, 8, 5, 7],
        Backend::Postgres => [2, 1, 1, 2],
    };
    for (step, (n, max)) in counts.iter().zip(most).enumerate() {
        assert!(
            *n <= max,
            "{backend:?} step {step}: {n} statements > {max}: {:?}",
            warm[step]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_execution_reads_no_catalog_rows() {
    if !statements::alone(module_path!(), "a_warm_execution_reads_no_catalog_rows").await {
        return;
    }
    check(Backend::Sqlite).await;
    check(Backend::Postgres).await;
}

/// Followers caught up with a run get its new events live: a post of events costs them no
/// read of the database, however many follow (one read each per event made a 1,000-client
/// fan-out miss its 50 ms).
async fn followers(backend: Backend) {
    let (app, w, a, q) = setup(backend, "followed").await;
    let r = app
        .post(
            &format!("/api/v1/agents/{a}/execute"),
            json!({"prompt": "p", "worker_queue_id": q}),
        )
        .await;
    let id = json(r).await["execution_id"].as_str().unwrap().to_string();
    let claim = w.claim(3).await;
    // Each follower reports the last `id:` it read.
    let (seen_tx, seen) = tokio::sync::watch::channel(vec![0i64; 20]);
    let seen_tx = std::sync::Arc::new(seen_tx);
    for i in 0..20 {
        let resp = app
            .req(reqwest::Method::GET, &format!("/api/v1/executions/{id}/stream"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let seen_tx = seen_tx.clone();
        tokio::spawn(async move {
            let mut resp = resp;
            let mut text = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
                let last = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("id:"))
                    .filter_map(|v| v.trim().parse().ok())
                    .max();
                if let Some(last) = last {
                    seen_tx.send_modify(|s| s[i] = last);
                }
            }
        });
    }
    let all_at = |seq: i64| {
        let mut seen = seen.clone();
        async move {
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                seen.wait_for(|s| s.iter().all(|n| *n >= seq)),
            )
            .await
            .expect("every follower got the event")
            .unwrap();
        }
    };
    let stored = json(app.get(&format!("/api/v1/executions/{id}")).await).await["event_count"]
        .as_i64()
        .unwrap();
    all_at(stored).await;
    take();
    for n in 1..=5 {
        let r = w
            .events(
                &claim,
                json!([{"type": "message_chunk", "data": {"content": format!("chunk {n}")}}]),
            )
            .await;
        assert_eq!(r.status(), 201);
        all_at(stored + n).await;
    }
    let reads: Vec<String> = take()
        .into_iter()
        .filter(|s| s.contains("FROM execution_events"))
        .collect();
    // One read per follower per event would be 100. On PostgreSQL another server on the same
    // database (a test running alongside) is a replica: its arrival wakes every follower
    // once, to look at the database for events it may have stored.
    let allowed = if backend == Backend::Sqlite { 0 } else { 20 };
    assert!(
        reads.len() <= allowed,
        "{backend:?}: followers read the database for live events: {reads:?}"
    );
    assert_eq!(w.complete(&claim, "ok").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_cost_followers_no_reads() {
    if !statements::alone(module_path!(), "live_events_cost_followers_no_reads").await {
        return;
    }
    followers(Backend::Sqlite).await;
    followers(Backend::Postgres).await;
}
