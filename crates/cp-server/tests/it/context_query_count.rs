//! Reading, writing and resolving a context are one statement each, however long the chain:
//! counted from sqlx's own statement log.
//!
//! It runs in a process of its own (`statements::alone`): the log is process-wide.

use crate::common::{Backend, TestApp, json, statements};
use reqwest::Method;
use serde_json::{Value, json};

async fn statements_for(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> usize {
    // Warm the key cache so authentication costs no statement in the measured request.
    app.get("/api/v1/auth/validate").await;
    statements::take();
    let mut req = app.req(method, path);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    statements::take().len()
}

async fn create(app: &TestApp, path: &str, body: Value) -> String {
    let r = app.post(path, body).await;
    assert_eq!(r.status(), 201, "{path}");
    json(r).await["id"].as_str().unwrap().to_string()
}

async fn check(backend: Backend) {
    let app = TestApp::spawn_quiet(backend).await;
    app.unlimited().await;
    let mut envs = Vec::new();
    for i in 0..6 {
        envs.push(create(&app, "/api/v1/environments", json!({"name": format!("env-{i}")})).await);
    }
    let mut teams = Vec::new();
    for i in 0..3 {
        let body = json!({"name": format!("team-{i}"), "environment_ids": envs[i * 2..i * 2 + 2]});
        teams.push(create(&app, "/api/v1/teams", body).await);
    }
    let agent = create(
        &app,
        "/api/v1/agents",
        json!({"name": "a", "environment_ids": envs[..3]}),
    )
    .await;
    for team in &teams {
        let r = app
            .req(Method::POST, &format!("/api/v1/teams/{team}/agents/{agent}"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    for i in 0..3 {
        let p = create(
            &app,
            "/api/v1/projects",
            json!({"name": format!("p{i}"), "key": format!("P{i}")}),
        )
        .await;
        let r = app
            .post(&format!("/api/v1/projects/{p}/agents"), json!({"agent_id": agent}))
            .await;
        assert_eq!(r.status(), 201);
    }
    let mut entities: Vec<String> = envs.iter().map(|e| format!("environment/{e}")).collect();
    entities.extend(teams.iter().map(|t| format!("team/{t}")));
    entities.push(format!("agent/{agent}"));
    entities.push("organization/default".into());
    let item = create(&app, "/api/v1/knowledge", json!({"title": "t", "content": "c"})).await;
    for entity in &entities {
        let body = Some(json!({"variables": {"who": entity}}));
        let n = statements_for(&app, Method::PUT, &format!("/api/v1/context/{entity}"), body).await;
        assert_eq!(n, 1, "{backend:?} PUT {entity}");
        // Naming knowledge items costs the one statement that checks they are the organization's.
        let body = Some(json!({"knowledge_uuids": [item]}));
        let n = statements_for(&app, Method::PUT, &format!("/api/v1/context/{entity}"), body).await;
        assert_eq!(n, 2, "{backend:?} PUT {entity} with knowledge");
        let n = statements_for(&app, Method::GET, &format!("/api/v1/context/{entity}"), None).await;
        assert_eq!(n, 1, "{backend:?} GET {entity}");
    }

    let path = format!("/api/v1/agents/{agent}/context/resolved");
    assert_eq!(
        statements_for(&app, Method::GET, &path, None).await,
        1,
        "{backend:?} {path}"
    );
    let resolved = json(app.get(&path).await).await;
    // organization, DEFAULT + 3 projects, 6 environments, 3 teams, the agent.
    assert_eq!(resolved["layers"].as_array().unwrap().len(), 15, "{resolved}");
    assert_eq!(resolved["variables"]["who"], format!("agent/{agent}"));
    let path = format!("/api/v1/teams/{}/context/resolved", teams[0]);
    assert_eq!(
        statements_for(&app, Method::GET, &path, None).await,
        1,
        "{backend:?} {path}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_reads_writes_and_resolution_are_one_statement() {
    if !statements::alone(module_path!(), "context_reads_writes_and_resolution_are_one_statement").await {
        return;
    }
    check(Backend::Sqlite).await;
    check(Backend::Postgres).await;
}
