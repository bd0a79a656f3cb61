//! Jobs (issue 21) on the real `serve` and `worker` processes with the fake model: a manual
//! trigger of an agent, a team and a workflow, inbound webhooks signed the GitHub, GitLab and
//! plain ways whose payload reaches the model's prompt, and a schedule fired by `serve`'s own
//! scheduler on the wall clock.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::worker::{Api, fake_llm, one_agent, spawn_worker, spawn_worker_with, start_server};
use crate::workflow_runs::{ended, hooks};

on_both_backends!(
    triggers_run_agents_teams_and_workflows,
    signed_webhooks_put_their_payload_in_the_prompt,
    a_schedule_fires_from_serve_on_a_real_worker,
);

async fn job(api: &Api, body: Value) -> Value {
    let v = api.post("/api/v1/jobs", body).await;
    assert!(v["id"].is_string(), "{v}");
    v
}

async fn finished(api: &Api, execution: &str) -> Value {
    api.execution_when(execution, Duration::from_secs(30), |x| {
        ["completed", "failed", "cancelled"].contains(&x["status"].as_str().unwrap_or_default())
    })
    .await
}

async fn triggers_run_agents_teams_and_workflows(postgres: bool) {
    let llm_url = fake_llm().await;
    let (_server, api, _data) = start_server(postgres).await;
    let (agent, queue, key) = one_agent(&api, &llm_url, "jobs", json!({"name": "jobs"})).await;
    let _worker = spawn_worker(&queue, &api.base, &key);

    let agent_job = job(
        &api,
        json!({"name": "greet", "trigger_type": "manual", "entity_type": "agent",
        "entity_id": agent, "worker_queue_id": queue, "prompt_template": "say: hello {{ parameters.who }}"}),
    )
    .await;
    let firing = api
        .post(
            &format!("/api/v1/jobs/{}/trigger", agent_job["id"].as_str().unwrap()),
            json!({"parameters": {"who": "ops"}}),
        )
        .await;
    assert_eq!(firing["trigger_source"], "manual", "{firing}");
    let done = finished(&api, firing["execution_id"].as_str().unwrap()).await;
    assert_eq!(
        (done["status"].clone(), done["response"].clone()),
        (json!("completed"), json!("hello ops")),
        "{done}"
    );
    let history = api
        .get(&format!(
            "/api/v1/jobs/{}/executions",
            agent_job["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(history["items"][0]["status"], "completed", "{history}");

    let team = api
        .post(
            "/api/v1/teams",
            json!({"name": "duo", "configuration": {"member_ids": [agent],
        "instructions": "Work together.", "llm": {"model": "fake/jobs"}, "max_rounds": 3}}),
        )
        .await;
    let team_job = job(
        &api,
        json!({"name": "team", "trigger_type": "manual", "entity_type": "team",
        "entity_id": team["id"], "worker_queue_id": queue, "prompt_template": "ask the team"}),
    )
    .await;
    let firing = api
        .post(
            &format!("/api/v1/jobs/{}/trigger", team_job["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    let done = finished(&api, firing["execution_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["execution_type"], "team", "{done}");

    let flow = api
        .post(
            "/api/v1/workflows",
            json!({"name": "notes", "default_worker_queue_id": queue,
        "inputs_schema": {"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]},
        "steps": [{"id": "write", "type": "agent", "agent_id": agent, "prompt": "say: notes on {{ inputs.topic }}"}]}),
        )
        .await;
    let flow_job = job(
        &api,
        json!({"name": "flow", "trigger_type": "manual", "entity_type": "workflow",
        "entity_id": flow["id"], "inputs_template": {"topic": "{{ parameters.topic }} ({{ job.name }})"}}),
    )
    .await;
    let firing = api
        .post(
            &format!("/api/v1/jobs/{}/trigger", flow_job["id"].as_str().unwrap()),
            json!({"parameters": {"topic": "the release"}}),
        )
        .await;
    let run = ended(&api, firing["workflow_run_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["steps"][0]["output"], "notes on the release (flow)", "{run}");
}

/// A sender's headers for a body.
type Signer<'a> = Box<dyn Fn(&str) -> Vec<(&'static str, String)> + 'a>;

fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    for p in parts {
        mac.update(p);
    }
    hex::encode(mac.finalize().into_bytes())
}

async fn signed_webhooks_put_their_payload_in_the_prompt(postgres: bool) {
    let llm_url = fake_llm().await;
    let (_server, api, _data) = start_server(postgres).await;
    let (agent, queue, key) = one_agent(&api, &llm_url, "hooks", json!({"name": "hooks"})).await;
    let _worker = spawn_worker(&queue, &api.base, &key);
    let hook = job(
        &api,
        json!({"name": "review", "trigger_type": "webhook", "entity_type": "agent", "entity_id": agent,
        "worker_queue_id": queue, "overlap": "allow",
        "prompt_template": "say: review {{ payload.pull_request.title }}"}),
    )
    .await;
    let secret = hook["webhook_secret"].as_str().unwrap().to_string();
    let url = hook["webhook_url"].as_str().unwrap().to_string();
    let now = chrono::Utc::now().timestamp().to_string();
    let senders: Vec<(&str, Signer)> = vec![
        (
            "github",
            Box::new(|body: &str| {
                vec![
                    ("x-github-event", "pull_request".into()),
                    ("x-github-delivery", "gh-1".into()),
                    (
                        "x-hub-signature-256",
                        format!("sha256={}", hmac_hex(&secret, &[body.as_bytes()])),
                    ),
                ]
            }),
        ),
        (
            "gitlab",
            Box::new(|_: &str| {
                vec![
                    ("x-gitlab-token", secret.clone()),
                    ("x-gitlab-event-uuid", "gl-1".into()),
                ]
            }),
        ),
        (
            "plain",
            Box::new(|body: &str| {
                vec![
                    (
                        "x-webhook-signature",
                        format!("sha256={}", hmac_hex(&secret, &[body.as_bytes()])),
                    ),
                    ("x-webhook-timestamp", now.clone()),
                    ("x-webhook-id", "p-1".into()),
                ]
            }),
        ),
    ];
    for (sender, sign) in &senders {
        let body = json!({"pull_request": {"title": format!("{sender} change")}}).to_string();
        let mut req = api.http.post(&url).header("content-type", "application/json");
        for (k, v) in sign(&body) {
            req = req.header(k, v);
        }
        let resp = req.body(body.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 201, "{sender}");
        let answer: Value = resp.json().await.unwrap();
        let done = finished(&api, answer["firing"]["execution_id"].as_str().unwrap()).await;
        assert_eq!(
            done["response"],
            json!(format!("review {sender} change")),
            "{sender}: {done}"
        );
    }
}

async fn a_schedule_fires_from_serve_on_a_real_worker(postgres: bool) {
    let llm_url = fake_llm().await;
    let (hook_url, hooks) = hooks().await;
    hooks.open("tick");
    let (_server, api, _data) = start_server(postgres).await;
    let (agent, queue, key) = one_agent(&api, &llm_url, "ticks", json!({"name": "ticks"})).await;
    let _worker = spawn_worker_with(&queue, &api.base, &key, &["--allow-private-http"]);
    // The schedule starts a workflow whose first step calls the test: that call is the
    // condition waited on, and the run's id is the firing's.
    let flow = api.post("/api/v1/workflows", json!({"name": "ticker", "default_worker_queue_id": queue,
        "inputs_schema": {"type": "object", "properties": {"who": {"type": "string"}}},
        "steps": [
            {"id": "call", "type": "http", "url": format!("{hook_url}/gate/tick")},
            {"id": "say", "type": "agent", "agent_id": agent, "depends_on": ["call"], "prompt": "say: {{ inputs.who }} ran"}
        ]})).await;
    let every = job(
        &api,
        json!({"name": "tick", "trigger_type": "cron", "cron_schedule": "* * * * * *",
        "entity_type": "workflow", "entity_id": flow["id"], "inputs_template": {"who": "{{ job.name }}"}}),
    )
    .await;
    let id = every["id"].as_str().unwrap().to_string();
    hooks
        .until(Duration::from_secs(20), "the scheduled run called the test", |h| {
            h.calls.lock().unwrap().contains_key("tick")
        })
        .await;
    let off = api.post(&format!("/api/v1/jobs/{id}/disable"), json!({})).await;
    assert!(off["next_run_at"].is_null(), "{off}");
    let history = api.get(&format!("/api/v1/jobs/{id}/executions?limit=500")).await;
    let first = history["items"].as_array().unwrap().last().unwrap().clone();
    assert!(
        first["trigger_source"] == "cron" && first["due_at"].is_string(),
        "{first}"
    );
    let run = ended(&api, first["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "completed", "{run}");
    let say = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step_id"] == "say")
        .unwrap();
    assert_eq!(say["output"], "tick ran", "{run}");
    let history = api.get(&format!("/api/v1/jobs/{id}/executions?limit=500")).await;
    let first = history["items"].as_array().unwrap().last().unwrap();
    assert_eq!(
        (first["workflow_run_id"].clone(), first["status"].clone()),
        (json!(run["id"]), json!("completed"))
    );
}
