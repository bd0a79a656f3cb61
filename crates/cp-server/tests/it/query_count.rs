//! Lists are one statement each (plus a count when the page is full), whatever the page size
//! and however many links each row embeds: counted from sqlx's own statement log.
//!
//! It runs in a process of its own (`statements::alone`): the log is process-wide.

use crate::common::{Backend, TestApp, json, statements};
use serde_json::json;

async fn statements_for(app: &TestApp, path: &str) -> usize {
    // Warm the key cache so authentication costs no statement in the measured request.
    app.get("/api/v1/auth/validate").await;
    statements::take();
    let page = json(app.get(path).await).await;
    assert!(page["items"].as_array().is_some_and(|i| !i.is_empty()), "{page}");
    statements::take().len()
}

async fn check(backend: Backend) {
    let app = TestApp::spawn_quiet(backend).await;
    app.unlimited().await;
    let mut envs = Vec::new();
    for i in 0..2 {
        let e = json(
            app.post("/api/v1/environments", json!({"name": format!("env-{i}")}))
                .await,
        )
        .await;
        envs.push(e["id"].as_str().unwrap().to_string());
    }
    let mut agents = Vec::new();
    for i in 0..30 {
        let a = json(
            app.post(
                "/api/v1/agents",
                json!({"name": format!("agent {i}"), "environment_ids": envs}),
            )
            .await,
        )
        .await;
        agents.push(a["id"].as_str().unwrap().to_string());
    }
    for i in 0..12 {
        let members = &agents[i..i + 3];
        let r = app
            .post(
                "/api/v1/teams",
                json!({"name": format!("team {i}"), "environment_ids": envs,
            "configuration": {"member_ids": members}}),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    for path in [
        "/api/v1/agents?limit=5",
        "/api/v1/agents?limit=100",
        "/api/v1/teams?limit=5",
        "/api/v1/teams?limit=100",
    ] {
        // The catalog version, the page, and the count only if the page is full.
        let n = statements_for(&app, path).await;
        assert!((2..=3).contains(&n), "{backend:?} {path}: {n} statements");
        // Unchanged catalog: the cached page after reading the version.
        assert_eq!(statements_for(&app, path).await, 1, "{backend:?} {path} again");
    }
    // A page that is not full needs no count.
    assert_eq!(statements_for(&app, "/api/v1/agents?limit=500").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_one_statement_whatever_the_page_size() {
    if !statements::alone(module_path!(), "lists_are_one_statement_whatever_the_page_size").await {
        return;
    }
    check(Backend::Sqlite).await;
    check(Backend::Postgres).await;
}
