//! Workflow runs (issue 20) on the real `serve` and `worker` processes with the fake model: a
//! diamond whose last step reads both branches, a `for_each` that never runs more than
//! `max_parallel` items at once, a condition that skips a branch, a step retried after a
//! failure, approvals approved and rejected, pause and resume, cancel mid-run, and the 422s
//! of a start.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use reqwest::Method;
use serde_json::{Value, json};

use crate::worker::{Api, fake_llm, one_agent, spawn_worker_with, start_server};

on_both_backends!(
    workflows_run_steps_on_a_real_worker,
    runs_pause_resume_cancel_and_wait_for_approval,
    a_run_survives_kill_9_of_the_control_plane,
);

/// What the test's own HTTP endpoints have seen: calls by name, and the open gates; `changed`
/// wakes whoever waits on either.
#[derive(Clone, Default)]
pub struct Hooks {
    pub calls: Arc<Mutex<HashMap<String, usize>>>,
    open: Arc<Mutex<HashSet<String>>>,
    changed: Arc<Notify>,
}

impl Hooks {
    /// Returns once `ready` holds (checked again on each change); panics after `within`.
    pub async fn until(&self, within: Duration, what: &str, ready: impl Fn(&Hooks) -> bool) {
        let waited = tokio::time::timeout(within, async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                // Registered before the check: a change in between still wakes us.
                changed.as_mut().enable();
                if ready(self) {
                    return;
                }
                changed.await;
            }
        })
        .await;
        assert!(waited.is_ok(), "{what} within {within:?}");
    }

    fn called(&self, name: &str) {
        *self.calls.lock().unwrap().entry(name.into()).or_default() += 1;
        self.changed.notify_waiters();
    }

    pub fn open(&self, gate: &str) {
        self.open.lock().unwrap().insert(gate.into());
        self.changed.notify_waiters();
    }
}

/// The test's endpoints for http steps: `/flaky/{name}` refuses its first call (400) and
/// answers the next ones; `/gate/{name}` answers once the test opened the gate. The base URL.
pub async fn hooks() -> (String, Hooks) {
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    let hooks = Hooks::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route(
            "/flaky/{name}",
            axum::routing::get(|State(h): State<Hooks>, Path(name): Path<String>| async move {
                h.called(&name);
                let n = h.calls.lock().unwrap()[&name];
                if n == 1 {
                    (StatusCode::BAD_REQUEST, "not yet".to_string())
                } else {
                    (StatusCode::OK, format!("{{\"call\": {n}}}"))
                }
            }),
        )
        .route(
            "/gate/{name}",
            axum::routing::get(|State(h): State<Hooks>, Path(name): Path<String>| async move {
                h.called(&name);
                h.until(Duration::from_secs(300), "the gate opened", |h| {
                    h.open.lock().unwrap().contains(&name)
                })
                .await;
                "opened"
            }),
        )
        .with_state(hooks.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, hooks)
}

/// The run's stream read to its end: `(id, event, data)`.
async fn sse(api: &Api, run: &str, after: Option<i64>) -> Vec<(i64, String, Value)> {
    let mut req = api
        .http
        .get(format!("{}/api/v1/workflow-runs/{run}/stream", api.base))
        .bearer_auth(&api.key)
        .timeout(Duration::from_secs(30));
    if let Some(n) = after {
        req = req.header("Last-Event-ID", n.to_string());
    }
    let text = req.send().await.unwrap().text().await.unwrap();
    text.split("\n\n")
        .filter_map(|message| {
            let (mut id, mut event, mut data) = (None, String::new(), Value::Null);
            for line in message.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).unwrap_or(Value::Null);
                }
            }
            Some((id?, event, data))
        })
        .collect()
}

/// Creates a workflow; its id.
async fn workflow(api: &Api, body: Value) -> String {
    api.post("/api/v1/workflows", body).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Starts a run; its id.
async fn start(api: &Api, workflow: &str, inputs: Value) -> String {
    let run = api
        .post(
            &format!("/api/v1/workflows/{workflow}/start"),
            json!({"inputs": inputs}),
        )
        .await;
    run["id"].as_str().unwrap().to_string()
}

/// Run `id` once `ready` holds for it, looked at again after each event of the run's stream
/// (opened after the run as read, so no change slips between); the test fails after `within`.
pub async fn run_when(api: &Api, id: &str, within: Duration, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    let mut events: Option<reqwest::Response> = None;
    loop {
        let run = api.get(&format!("/api/v1/workflow-runs/{id}")).await;
        if ready(&run) {
            return run;
        }
        let stream = match events.as_mut() {
            Some(s) => s,
            None => {
                let opened = api
                    .http
                    .get(format!("{}/api/v1/workflow-runs/{id}/stream", api.base))
                    .bearer_auth(&api.key)
                    .header("Last-Event-ID", run["event_count"].to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(opened.status(), 200, "the run's stream");
                events.insert(opened)
            }
        };
        match tokio::time::timeout_at(deadline, stream.chunk()).await {
            Err(_) => panic!("run {id} not as awaited in {within:?}: {run:#}"),
            Ok(Ok(Some(_))) => {}
            // The stream ended (after `done`, or a server going away): follow it anew.
            Ok(_) => events = None,
        }
    }
}

pub async fn ended(api: &Api, id: &str) -> Value {
    run_when(api, id, Duration::from_secs(60), |r| {
        ["completed", "failed", "cancelled"].contains(&r["status"].as_str().unwrap_or_default())
    })
    .await
}

fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step_id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {run}"))
}

fn status(run: &Value, id: &str) -> String {
    step(run, id)["status"].as_str().unwrap().to_string()
}

/// A request that must be refused with `status`; the error body.
async fn refused(api: &Api, method: Method, path: &str, body: Value, want: u16) -> Value {
    let resp = api
        .http
        .request(method, format!("{}{path}", api.base))
        .bearer_auth(&api.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let got = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(got, want, "{path}: {v}");
    v["error"].clone()
}

async fn workflows_run_steps_on_a_real_worker(postgres: bool) {
    let llm_url = fake_llm().await;
    let (hook_url, _hooks) = hooks().await;
    let (_server, api, _data) = start_server(postgres).await;
    let (agent, queue, key) = one_agent(&api, &llm_url, "flows", json!({"name": "flows"})).await;
    let _worker = spawn_worker_with(&queue, &api.base, &key, &["--allow-private-http"]);

    // A diamond: the last step's prompt reads both branches' outputs.
    let diamond = workflow(
        &api,
        json!({
            "name": "diamond", "default_worker_queue_id": queue,
            "inputs_schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
            "steps": [
                {"id": "fetch", "type": "command", "command": "echo '{\"n\": {{ inputs.n }}}'"},
                {"id": "summarize", "type": "agent", "agent_id": agent, "depends_on": ["fetch"],
                 "prompt": "say: got {{ steps.fetch.output.n }}"},
                {"id": "double", "type": "command", "depends_on": ["fetch"],
                 "command": "echo {{ steps.fetch.output.n * 2 }}"},
                {"id": "report", "type": "agent", "agent_id": agent, "depends_on": ["summarize", "double"],
                 "prompt": "say: {{ steps.summarize.output }} and {{ steps.double.output }}"}
            ]
        }),
    )
    .await;
    let id = start(&api, &diamond, json!({"n": 21})).await;
    let run = ended(&api, &id).await;
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(step(&run, "fetch")["output"], json!({"n": 21}));
    assert_eq!(step(&run, "double")["output"], json!(42));
    assert_eq!(step(&run, "report")["output"], "got 21 and 42", "{run:#}");
    let report = step(&run, "report")["execution_id"].as_str().unwrap().to_string();
    let execution = api.get(&format!("/api/v1/executions/{report}")).await;
    assert_eq!(
        (
            &execution["execution_type"],
            &execution["workflow_run_id"],
            &execution["step_id"]
        ),
        (&json!("workflow_step"), &json!(id), &json!("report"))
    );
    // The run's own stream: its events numbered 1.., the steps' messages tagged with their
    // step, `done` last; `Last-Event-ID` resumes it.
    let events = sse(&api, &id, None).await;
    let ids: Vec<i64> = events.iter().map(|e| e.0).collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>(), "{events:?}");
    assert_eq!(events.last().unwrap().1, "done");
    assert!(
        events.iter().any(|(_, t, d)| t == "message"
            && d["step_id"] == "report"
            && d["role"] == "assistant"
            && d["content"] == "got 21 and 42"),
        "{events:?}"
    );
    let last = ids.len() as i64;
    let resumed = sse(&api, &id, Some(last - 2)).await;
    assert_eq!(resumed.iter().map(|e| e.0).collect::<Vec<_>>(), vec![last - 1, last]);
    // Independent branches ran side by side: both started before either's dependent.
    let started = |s: &str| step(&run, s)["started_at"].as_str().unwrap().to_string();
    assert!(started("summarize") < started("report") && started("double") < started("report"));

    // for_each over 5 items, at most 2 at once; the output keeps the items' order.
    let fan = workflow(
        &api,
        json!({
            "name": "fan out", "default_worker_queue_id": queue,
            "steps": [
                {"id": "each", "type": "command", "for_each": [5, 4, 3, 2, 1], "max_parallel": 2,
                 "command": "sleep 0.{{ item }}; echo {{ index }}"}
            ]
        }),
    )
    .await;
    let id = start(&api, &fan, json!({})).await;
    let run = ended(&api, &id).await;
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(step(&run, "each")["output"], json!([0, 1, 2, 3, 4]));
    let mut spans = Vec::new();
    for item in step(&run, "each")["items"].as_array().unwrap() {
        let e = api
            .get(&format!(
                "/api/v1/executions/{}",
                item["execution_id"].as_str().unwrap()
            ))
            .await;
        let at = |k: &str| chrono::DateTime::parse_from_rfc3339(e[k].as_str().unwrap()).unwrap();
        spans.push((at("created_at"), at("completed_at")));
    }
    for (start, _) in &spans {
        let overlapping = spans.iter().filter(|(s, e)| s <= start && start < e).count();
        assert!(overlapping <= 2, "more than 2 items at once: {spans:?}");
    }

    // A condition skips a branch, and the step after it is skipped too; a step that fails
    // once is tried again and succeeds.
    let branches = workflow(
        &api,
        json!({
            "name": "branches", "default_worker_queue_id": queue,
            "steps": [
                {"id": "check", "type": "command", "command": "echo '{\"deploy\": false}'"},
                {"id": "deploy", "type": "command", "depends_on": ["check"], "command": "echo deploying",
                 "condition": "steps.check.output.deploy"},
                {"id": "announce", "type": "command", "depends_on": ["deploy"], "command": "echo done"},
                {"id": "flaky", "type": "http", "depends_on": ["check"], "url": format!("{hook_url}/flaky/one"),
                 "retry": {"max_attempts": 3, "backoff_seconds": 0.2}}
            ]
        }),
    )
    .await;
    let id = start(&api, &branches, json!({})).await;
    let run = ended(&api, &id).await;
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(
        (status(&run, "deploy"), status(&run, "announce")),
        ("skipped".into(), "skipped".into())
    );
    assert_eq!(step(&run, "flaky")["attempts"], 2, "{run:#}");
    assert_eq!(step(&run, "flaky")["output"], json!({"call": 2}));

    // A failing step fails the run; retrying the run re-runs it and keeps what completed.
    let failing = workflow(
        &api,
        json!({
            "name": "failing", "default_worker_queue_id": queue,
            "steps": [
                {"id": "first", "type": "command", "command": "echo first"},
                {"id": "second", "type": "http", "depends_on": ["first"], "url": format!("{hook_url}/flaky/two")},
                {"id": "third", "type": "command", "depends_on": ["second"], "command": "echo third"}
            ]
        }),
    )
    .await;
    let id = start(&api, &failing, json!({})).await;
    let run = ended(&api, &id).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    assert_eq!(
        (status(&run, "second"), status(&run, "third")),
        ("failed".into(), "cancelled".into())
    );
    assert!(
        run["error"].as_str().unwrap().contains("step 'second' failed"),
        "{run:#}"
    );
    let first = step(&run, "first")["execution_id"].clone();
    api.post(&format!("/api/v1/workflow-runs/{id}/retry"), json!({})).await;
    let run = ended(&api, &id).await;
    assert_eq!(
        (run["status"].as_str(), run["attempt"].as_i64()),
        (Some("completed"), Some(2)),
        "{run:#}"
    );
    assert_eq!(step(&run, "first")["execution_id"], first, "completed steps are kept");
    assert_eq!(step(&run, "third")["output"], "third");

    // The 422s of a start: every input error at once, and a working step without a queue.
    let err = refused(
        &api,
        Method::POST,
        &format!("/api/v1/workflows/{diamond}/start"),
        json!({"inputs": {"n": "many", "extra": 1}}),
        422,
    )
    .await;
    assert!(err.to_string().contains("inputs.n"), "{err}");
    let no_queue = workflow(
        &api,
        json!({"name": "nowhere", "steps": [{"id": "a", "type": "command", "command": "true"}]}),
    )
    .await;
    let err = refused(
        &api,
        Method::POST,
        &format!("/api/v1/workflows/{no_queue}/start"),
        json!({}),
        422,
    )
    .await;
    assert!(err.to_string().contains("step 'a'"), "{err}");
    // Named at start, the queue is enough.
    let run = api
        .post(
            &format!("/api/v1/workflows/{no_queue}/start"),
            json!({"worker_queue_id": queue}),
        )
        .await;
    let run = ended(&api, run["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "completed", "{run:#}");
    // A value in a command is one shell word, whatever it holds (an input here; a model's
    // output alike).
    let echo = workflow(
        &api,
        json!({"name": "echo", "default_worker_queue_id": queue,
               "steps": [{"id": "say", "type": "command", "command": "echo {{ inputs.text }}"}]}),
    )
    .await;
    let hostile = "$(id); echo pwned `whoami` 'quoted' && exit 7";
    let id = start(&api, &echo, json!({"text": hostile})).await;
    let run = ended(&api, &id).await;
    assert_eq!(step(&run, "say")["output"], hostile, "{run:#}");

    // A chain imported from the Python client's DSL document: a command step, then an agent
    // step that reads its output; the DSL's params are the inputs' defaults.
    let doc = json!({
        "name": "dsl chain", "description": "from kubiya.dsl", "params": {"WHO": "world"},
        "default_worker_queue_id": queue,
        "steps": [
            {"name": "greet", "command": "echo hello ${WHO}", "output": "GREETING",
             "executor": {"type": "command", "config": {}}},
            {"name": "relay", "executor": {"type": "agent",
             "config": {"agent_name": "flows", "message": "say: relayed ${GREETING}"}}}
        ]
    });
    let imported = api.post("/api/v1/workflows/import", doc).await;
    let id = start(&api, imported["id"].as_str().unwrap(), json!({})).await;
    let run = ended(&api, &id).await;
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(run["steps"][1]["output"], "relayed hello world", "{run:#}");

    // Prometheus: runs by the state they entered, and the step-to-step overhead.
    let metrics = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("workflow_runs_total{status=\"completed\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("workflow_step_overhead_seconds_count"), "{metrics}");
    // Another organization's run, or none at all, is 404.
    refused(
        &api,
        Method::GET,
        &format!("/api/v1/workflow-runs/{}", uuid::Uuid::now_v7()),
        json!({}),
        404,
    )
    .await;
}

async fn runs_pause_resume_cancel_and_wait_for_approval(postgres: bool) {
    let llm_url = fake_llm().await;
    let (hook_url, hooks) = hooks().await;
    let (_server, api, _data) = start_server(postgres).await;
    let (_agent, queue, key) = one_agent(&api, &llm_url, "control", json!({"name": "control"})).await;
    let _worker = spawn_worker_with(&queue, &api.base, &key, &["--allow-private-http"]);

    // Paused while its first step runs: the second does not start until the run resumes.
    let chain = workflow(
        &api,
        json!({
            "name": "chain", "default_worker_queue_id": queue,
            "steps": [
                {"id": "a", "type": "http", "url": format!("{hook_url}/gate/a")},
                {"id": "b", "type": "command", "depends_on": ["a"], "command": "echo b"}
            ]
        }),
    )
    .await;
    let id = start(&api, &chain, json!({})).await;
    run_when(&api, &id, Duration::from_secs(20), |r| status(r, "a") == "running").await;
    let paused = api.post(&format!("/api/v1/workflow-runs/{id}/pause"), json!({})).await;
    assert_eq!(paused["status"], "paused");
    hooks.open("a");
    let run = run_when(&api, &id, Duration::from_secs(20), |r| status(r, "a") == "completed").await;
    assert_eq!(
        (run["status"].as_str(), status(&run, "b")),
        (Some("paused"), "pending".into()),
        "{run:#}"
    );
    refused(
        &api,
        Method::POST,
        &format!("/api/v1/workflow-runs/{id}/pause"),
        json!({}),
        409,
    )
    .await;
    api.post(&format!("/api/v1/workflow-runs/{id}/resume"), json!({})).await;
    let run = ended(&api, &id).await;
    assert_eq!(
        (run["status"].as_str(), &step(&run, "b")["output"]),
        (Some("completed"), &json!("b"))
    );

    // Cancelled mid-run: the running step's execution is cancelled, the rest never runs.
    let long = workflow(
        &api,
        json!({
            "name": "long", "default_worker_queue_id": queue,
            "steps": [
                {"id": "nap", "type": "command", "command": "sleep 30"},
                {"id": "after", "type": "command", "depends_on": ["nap"], "command": "echo after"}
            ]
        }),
    )
    .await;
    let id = start(&api, &long, json!({})).await;
    let run = run_when(&api, &id, Duration::from_secs(20), |r| status(r, "nap") == "running").await;
    let nap = step(&run, "nap")["execution_id"].as_str().unwrap().to_string();
    let cancelled = api.post(&format!("/api/v1/workflow-runs/{id}/cancel"), json!({})).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(
        (status(&cancelled, "nap"), status(&cancelled, "after")),
        ("cancelled".into(), "cancelled".into())
    );
    api.execution_when(&nap, Duration::from_secs(10), |e| e["status"] == "cancelled")
        .await;

    // A step past its timeout_seconds fails, and its execution is cancelled.
    let slow = workflow(
        &api,
        json!({"name": "slow", "default_worker_queue_id": queue, "steps": [
            {"id": "wait", "type": "http", "url": format!("{hook_url}/gate/never"), "timeout_seconds": 1}
        ]}),
    )
    .await;
    let id = start(&api, &slow, json!({})).await;
    let run = ended(&api, &id).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    assert_eq!(step(&run, "wait")["error"], "timed out after 1 s", "{run:#}");
    let wait = step(&run, "wait")["execution_id"].as_str().unwrap().to_string();
    api.execution_when(&wait, Duration::from_secs(10), |e| e["status"] == "cancelled")
        .await;

    // Approvals: one approved (the next step runs), one rejected (its dependent never runs).
    let gated = workflow(
        &api,
        json!({
            "name": "gated", "default_worker_queue_id": queue,
            "steps": [
                {"id": "ok", "type": "approval", "message": "ship {{ inputs.version }}?"},
                {"id": "ship", "type": "command", "depends_on": ["ok"], "command": "echo shipped"}
            ]
        }),
    )
    .await;
    let id = start(&api, &gated, json!({"version": "1.2"})).await;
    let run = run_when(&api, &id, Duration::from_secs(10), |r| {
        r["status"] == "waiting_for_approval"
    })
    .await;
    assert_eq!(step(&run, "ok")["output"]["message"], "ship 1.2?");
    let events = api.get(&format!("/api/v1/workflow-runs/{id}/events")).await;
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "approval_requested"),
        "{events}"
    );
    refused(
        &api,
        Method::POST,
        &format!("/api/v1/workflow-runs/{id}/steps/ship/approve"),
        json!({}),
        409,
    )
    .await;
    refused(
        &api,
        Method::POST,
        &format!("/api/v1/workflow-runs/{id}/steps/nope/approve"),
        json!({}),
        404,
    )
    .await;
    api.post(
        &format!("/api/v1/workflow-runs/{id}/steps/ok/approve"),
        json!({"comment": "go"}),
    )
    .await;
    let run = ended(&api, &id).await;
    assert_eq!(run["status"], "completed", "{run:#}");
    let decision = &step(&run, "ok")["approval"];
    assert_eq!(
        (decision["approved"].as_bool(), decision["comment"].as_str()),
        (Some(true), Some("go"))
    );
    assert!(decision["at"].is_string() && decision["by"].is_string(), "{decision}");

    let id = start(&api, &gated, json!({"version": "1.3"})).await;
    run_when(&api, &id, Duration::from_secs(10), |r| {
        r["status"] == "waiting_for_approval"
    })
    .await;
    api.post(
        &format!("/api/v1/workflow-runs/{id}/steps/ok/reject"),
        json!({"comment": "not today"}),
    )
    .await;
    let run = ended(&api, &id).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    assert_eq!(
        (status(&run, "ok"), status(&run, "ship")),
        ("failed".into(), "cancelled".into())
    );
    assert!(step(&run, "ok")["error"].as_str().unwrap().contains("not today"));
    assert!(
        step(&run, "ship")["execution_id"].is_null(),
        "a rejected step's dependent never runs"
    );
}

/// Every step execution of the organization, as `(run, step, item index)` → how many.
async fn step_executions(api: &Api) -> HashMap<(String, String, Value), usize> {
    let mut counts = HashMap::new();
    let mut offset = 0;
    loop {
        let page = api
            .get(&format!(
                "/api/v1/executions?execution_type=workflow_step&limit=100&offset={offset}"
            ))
            .await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        for e in &items {
            let key = (
                e["workflow_run_id"].as_str().unwrap().to_string(),
                e["step_id"].as_str().unwrap().to_string(),
                e["execution_metadata"]["item_index"].clone(),
            );
            *counts.entry(key).or_default() += 1;
        }
        if items.len() < 100 {
            return counts;
        }
        offset += 100;
    }
}

/// `serve` is killed (SIGKILL) twice while a run's steps are running; each time it comes back
/// on the same database and the run goes on: every step ran, none twice.
async fn a_run_survives_kill_9_of_the_control_plane(postgres: bool) {
    let llm_url = fake_llm().await;
    let (hook_url, hooks) = hooks().await;
    let (server, api, data) = start_server(postgres).await;
    let (_agent, queue, key) = one_agent(&api, &llm_url, "durable", json!({"name": "durable"})).await;
    let _worker = spawn_worker_with(&queue, &api.base, &key, &["--allow-private-http"]);
    let port: u16 = api.base.rsplit(':').next().unwrap().parse().unwrap();
    let flow = workflow(
        &api,
        json!({
            "name": "durable", "default_worker_queue_id": queue,
            "steps": [
                {"id": "a", "type": "http", "url": format!("{hook_url}/gate/a")},
                {"id": "b", "type": "command", "depends_on": ["a"], "command": "echo b"},
                {"id": "c", "type": "command", "depends_on": ["a"], "command": "echo c"},
                {"id": "d", "type": "http", "depends_on": ["b", "c"], "url": format!("{hook_url}/gate/d")},
                {"id": "e", "type": "command", "depends_on": ["d"], "for_each": [1, 2, 3], "command": "echo {{ item }}"}
            ]
        }),
    )
    .await;
    let id = start(&api, &flow, json!({})).await;
    let mut server = Some(server);
    for gate in ["a", "d"] {
        // Killed while the worker is inside the step (a claim whose answer the kill cut off
        // would wait out its lease instead).
        hooks
            .until(Duration::from_secs(30), &format!("step {gate} ran"), |h| {
                h.calls.lock().unwrap().contains_key(gate)
            })
            .await;
        drop(server.take());
        // The step's work ends while nobody answers: the worker keeps its result until then.
        hooks.open(gate);
        server = Some(crate::worker::serve_on(&data, port).await);
    }
    let run = run_when(&api, &id, Duration::from_secs(90), |r| r["status"] == "completed").await;
    assert_eq!(step(&run, "e")["output"], json!([1, 2, 3]), "{run:#}");
    let counts = step_executions(&api).await;
    let mine: Vec<_> = counts.iter().filter(|((run, ..), _)| *run == id).collect();
    assert_eq!(mine.len(), 4 + 3, "every step (and item) ran: {mine:?}");
    assert!(mine.iter().all(|(_, n)| **n == 1), "a step ran twice: {mine:?}");
}

/// Two `serve` replicas on one PostgreSQL database: runs started on one, their steps ended on
/// the other (where the worker is), and both schedulers advancing them: each step runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_advance_each_run_once() {
    let llm_url = fake_llm().await;
    let (_a, api, data) = start_server(true).await;
    let port_b = crate::db::free_port();
    let _b = crate::worker::serve_on(&data, port_b).await;
    let b = Api {
        base: format!("http://127.0.0.1:{port_b}"),
        key: api.key.clone(),
        http: reqwest::Client::new(),
    };
    let (_agent, queue, key) = one_agent(&api, &llm_url, "replicas", json!({"name": "replicas"})).await;
    let _worker = spawn_worker_with(&queue, &api.base, &key, &["--concurrency", "8"]);
    let flow = workflow(
        &b,
        json!({
            "name": "busy", "default_worker_queue_id": queue,
            "steps": [
                {"id": "s1", "type": "command", "command": "echo 1"},
                {"id": "s2", "type": "command", "depends_on": ["s1"], "command": "echo 2"},
                {"id": "fan", "type": "command", "depends_on": ["s1"], "for_each": [1, 2, 3], "command": "echo {{ item }}"},
                {"id": "s3", "type": "command", "depends_on": ["s2", "fan"], "command": "echo 3"}
            ]
        }),
    )
    .await;
    let mut runs = Vec::new();
    for _ in 0..8 {
        runs.push(start(&b, &flow, json!({})).await);
    }
    for id in &runs {
        let run = run_when(&api, id, Duration::from_secs(60), |r| r["status"] == "completed").await;
        assert_eq!(step(&run, "s3")["output"], json!(3), "{run:#}");
    }
    let counts = step_executions(&api).await;
    assert_eq!(counts.len(), runs.len() * (3 + 3), "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "a step ran twice: {counts:?}");
}
