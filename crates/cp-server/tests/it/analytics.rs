//! `GET /api/v1/analytics/usage`: runs, failures, tokens, cost and duration percentiles of the
//! stored executions, by agent, team, model and day, on both backends.

use crate::common::worker::TestWorker;
use crate::common::{Backend, TestApp, assert_error, json};
use cp_types::org::Role;
use serde_json::{Value, json};

async fn id_of(app: &TestApp, path: &str, body: Value) -> String {
    let r = app.post(path, body).await;
    assert_eq!(r.status(), 201, "{path}");
    json(r).await["id"].as_str().unwrap().to_string()
}

/// Runs `entity` once on `queue` through `worker`: completed with `usage`, or failed.
async fn execute_once(app: &TestApp, worker: &TestWorker, entity: &str, queue: &str, usage: Option<Value>) -> String {
    let r = app
        .post(
            &format!("/api/v1/{entity}/execute"),
            json!({"prompt": "go", "worker_queue_id": queue}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let id = json(r).await["execution_id"].as_str().unwrap().to_string();
    let claim = worker.claim(10).await;
    assert_eq!(claim["execution"]["id"], id.as_str());
    let lease = claim["lease_id"].as_str().unwrap();
    let r = match usage {
        Some(usage) => worker
            .post(&format!("/api/v1/executions/{id}/complete"))
            .header("X-Lease-Id", lease)
            .json(&json!({"response": "done", "usage": usage}))
            .send()
            .await
            .unwrap(),
        None => worker.fail(&claim, "boom", false).await,
    };
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    id
}

/// Makes the run last `ms` milliseconds, so the percentiles are known.
async fn lasted(app: &TestApp, id: &str, ms: u32) {
    let hex = id.replace('-', "");
    let id_sql = match app.backend {
        Backend::Sqlite => format!("x'{hex}'"),
        Backend::Postgres => format!("'{id}'::uuid"),
    };
    app.exec_sql(&format!(
        "UPDATE executions SET started_at = '2026-12-01T10:00:00+00:00', \
         completed_at = '2026-12-01T10:00:{:02}.{:03}+00:00' WHERE id = {id_sql}",
        ms / 1000,
        ms % 1000
    ))
    .await;
}

fn item<'a>(report: &'a Value, key: &str) -> &'a Value {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == key)
        .unwrap_or_else(|| panic!("no item {key} in {report}"))
}

both_backends! {
    async fn usage_by_agent_team_model_and_day(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let env = json(app.get("/api/v1/environments").await).await["items"][0]["id"].as_str().unwrap().to_string();
        let queue = id_of(&app, &format!("/api/v1/environments/{env}/worker-queues"), json!({"name": "usage-queue"})).await;
        let m1 = id_of(&app, "/api/v1/models", json!({"value": "vllm/one", "label": "One", "provider": "vllm"})).await;
        let m2 = id_of(&app, "/api/v1/models", json!({"value": "vllm/two", "label": "Two", "provider": "vllm"})).await;
        let a = id_of(&app, "/api/v1/agents", json!({"name": "alpha", "model_id": m1})).await;
        let b = id_of(&app, "/api/v1/agents", json!({"name": "beta", "model_id": m2})).await;
        let t = id_of(&app, "/api/v1/teams", json!({"name": "crew", "model_id": m1, "configuration": {"member_ids": [a]}})).await;
        let worker_key = app.key("default", Role::Worker).await;
        let worker = TestWorker::start(&app.url, &worker_key, &queue, "w1").await;

        let usage = |cost: f64| Some(json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cost_usd": cost}));
        let agent_path = format!("agents/{a}");
        let mut alpha_runs = Vec::new();
        for cost in [0.25, 0.5, 1.0] {
            alpha_runs.push(execute_once(&app, &worker, &agent_path, &queue, usage(cost)).await);
        }
        alpha_runs.push(execute_once(&app, &worker, &agent_path, &queue, None).await);
        for (id, ms) in alpha_runs.iter().zip([300, 100, 400, 200]) {
            lasted(&app, id, ms).await;
        }
        execute_once(&app, &worker, &format!("agents/{b}"), &queue, usage(2.0)).await;
        execute_once(&app, &worker, &format!("teams/{t}"), &queue, usage(0.125)).await;
        // Queued, never started: counted as a run, without a duration.
        app.post(&format!("/api/v1/agents/{b}/execute"), json!({"prompt": "later", "worker_queue_id": queue})).await;

        let by_agent = json(app.get("/api/v1/analytics/usage?group_by=agent").await).await;
        assert_eq!(by_agent["group_by"], "agent");
        assert_eq!(by_agent["items"].as_array().unwrap().len(), 2, "{by_agent}");
        assert_eq!(by_agent["items"][0]["key"], a.as_str(), "most runs first");
        let alpha = item(&by_agent, &a);
        assert_eq!(alpha["name"], "alpha");
        assert_eq!((alpha["runs"].as_i64(), alpha["failures"].as_i64()), (Some(4), Some(1)));
        assert_eq!(alpha["prompt_tokens"], 30);
        assert_eq!(alpha["completion_tokens"], 15);
        assert_eq!(alpha["total_tokens"], 45);
        assert!((alpha["cost_usd"].as_f64().unwrap() - 1.75).abs() < 1e-9, "{alpha}");
        // Nearest rank of 100, 200, 300, 400 ms: the 2nd and the 4th.
        assert!((alpha["p50_ms"].as_f64().unwrap() - 200.0).abs() < 1.0, "{alpha}");
        assert!((alpha["p95_ms"].as_f64().unwrap() - 400.0).abs() < 1.0, "{alpha}");
        let beta = item(&by_agent, &b);
        assert_eq!((beta["runs"].as_i64(), beta["failures"].as_i64()), (Some(2), Some(0)));
        assert!(beta["p50_ms"].as_f64().is_some(), "the ended run has a duration: {beta}");

        let by_team = json(app.get("/api/v1/analytics/usage?group_by=team").await).await;
        assert_eq!(by_team["items"].as_array().unwrap().len(), 1, "{by_team}");
        let crew = item(&by_team, &t);
        assert_eq!((crew["name"].as_str(), crew["runs"].as_i64()), (Some("crew"), Some(1)));

        let by_model = json(app.get("/api/v1/analytics/usage?group_by=model").await).await;
        let one = item(&by_model, &m1);
        assert_eq!((one["name"].as_str(), one["runs"].as_i64()), (Some("One"), Some(5)), "alpha's 4 and the team's: {by_model}");
        assert!((one["cost_usd"].as_f64().unwrap() - 1.875).abs() < 1e-9);
        assert_eq!(item(&by_model, &m2)["runs"], 2);

        let by_day = json(app.get("/api/v1/analytics/usage?group_by=day").await).await;
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let day = item(&by_day, &today);
        assert_eq!((day["name"].as_str(), day["runs"].as_i64(), day["failures"].as_i64()), (Some(today.as_str()), Some(7), Some(1)));

        // The window: nothing before it, nothing after it.
        let at = |hours: i64| (chrono::Utc::now() + chrono::Duration::hours(hours)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let empty = json(app.get(&format!("/api/v1/analytics/usage?group_by=day&since={}&until={}", at(1), at(2))).await).await;
        assert_eq!(empty["items"], json!([]), "{empty}");
        let empty = json(app.get(&format!("/api/v1/analytics/usage?group_by=day&until={}", at(-1))).await).await;
        assert_eq!(empty["items"], json!([]), "{empty}");

        // Another organization sees none of it; a viewer reads it.
        let other = app.org_with_key("other", Role::Admin).await;
        let theirs = json(app.req_as(&other, reqwest::Method::GET, "/api/v1/analytics/usage?group_by=agent").send().await.unwrap()).await;
        assert_eq!(theirs["items"], json!([]), "{theirs}");
        let viewer = app.key("default", Role::Viewer).await;
        let r = app.req_as(&viewer, reqwest::Method::GET, "/api/v1/analytics/usage?group_by=model").send().await.unwrap();
        assert_eq!(r.status(), 200);
    }

    async fn absurd_usage_does_not_break_the_report(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let env = json(app.get("/api/v1/environments").await).await["items"][0]["id"].as_str().unwrap().to_string();
        let queue = id_of(&app, &format!("/api/v1/environments/{env}/worker-queues"), json!({"name": "usage-queue"})).await;
        let a = id_of(&app, "/api/v1/agents", json!({"name": "liar"})).await;
        let worker_key = app.key("default", Role::Worker).await;
        let worker = TestWorker::start(&app.url, &worker_key, &queue, "w1").await;
        let huge = Some(json!({"prompt_tokens": i64::MAX - 1, "completion_tokens": i64::MAX, "total_tokens": i64::MAX, "cost_usd": 1e300}));
        for _ in 0..2 {
            execute_once(&app, &worker, &format!("agents/{a}"), &queue, huge.clone()).await;
        }
        let report = json(app.get("/api/v1/analytics/usage?group_by=agent").await).await;
        assert_eq!(report["items"][0]["prompt_tokens"], i64::MAX, "saturated: {report}");
        assert_eq!(report["items"][0]["runs"], 2);
        let r = app.get("/api/v1/analytics/usage?group_by=day").await;
        assert_eq!(r.status(), 200);
    }

    async fn usage_refuses_bad_queries(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        for bad in [
            "/api/v1/analytics/usage",
            "/api/v1/analytics/usage?group_by=week",
            "/api/v1/analytics/usage?group_by=day&since=yesterday",
            "/api/v1/analytics/usage?group_by=day&since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z",
            "/api/v1/analytics/usage?group_by=day&since=2026-12-01T00:00:00Z&until=2026-12-01T00:00:00Z",
            "/api/v1/analytics/usage?group_by=day&since=1970-01-01T00:00:00Z",
        ] {
            assert_error(app.get(bad).await, 422, "VALIDATION_ERROR").await;
        }
        let r = app.anon(reqwest::Method::GET, "/api/v1/analytics/usage?group_by=day").send().await.unwrap();
        assert_error(r, 401, "UNAUTHORIZED").await;
    }
}
