//! Task planning against a fake provider that speaks the OpenAI-compatible streaming format:
//! a valid plan, an unknown agent repaired or dropped with a note, invalid answers (the
//! heuristic plans), no key, a provider that is down, the stream's event order, refinement
//! history, executing a plan as a workflow, questions that block it, and other
//! organizations' plans.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::response::IntoResponse;
use cp_types::org::Role;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestApp, assert_error, json};

/// One answer of the fake provider.
#[derive(Clone)]
enum Answer {
    /// A `submit_plan` call with these arguments.
    Plan(Value),
    Text(&'static str),
    /// The answer after a pause.
    Late(Duration, Box<Answer>),
    /// A 307 to this URL.
    Redirect(String),
}

#[derive(Clone, Default)]
struct Provider {
    script: Arc<Mutex<VecDeque<Answer>>>,
    requests: Arc<Mutex<Vec<Value>>>,
}

impl Provider {
    fn then(&self, a: Answer) {
        self.script.lock().unwrap().push_back(a);
    }

    fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }
}

fn sse(text: Option<&str>, plan: Option<&Value>) -> axum::response::Response {
    let chunk =
        |delta: Value, finish: Value| json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    let mut events = Vec::new();
    if let Some(t) = text {
        for piece in t.split_inclusive(' ') {
            events.push(chunk(json!({"content": piece}), Value::Null));
        }
        events.push(chunk(json!({}), json!("stop")));
    }
    if let Some(p) = plan {
        let args = p.to_string();
        let (a, b) = args.split_at(args.len() / 2);
        events.push(chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "submit_plan", "arguments": a}}]}), Value::Null));
        events.push(chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": b}}]}),
            Value::Null,
        ));
        events.push(chunk(json!({}), json!("tool_calls")));
    }
    events.push(json!({"choices": [], "usage": {"prompt_tokens": 1000, "completion_tokens": 200}}));
    let mut body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    ([("content-type", "text/event-stream")], body).into_response()
}

async fn chat(
    axum::extract::State(p): axum::extract::State<Provider>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    p.requests.lock().unwrap().push(body);
    let mut next = p
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Answer::Text("no plan today"));
    loop {
        match next {
            Answer::Late(pause, then) => {
                tokio::time::sleep(pause).await;
                next = *then;
            }
            Answer::Plan(v) => return sse(None, Some(&v)),
            Answer::Text(t) => return sse(Some(t), None),
            Answer::Redirect(to) => {
                return (axum::http::StatusCode::TEMPORARY_REDIRECT, [("location", to)]).into_response();
            }
        }
    }
}

/// The fake provider on a loopback port: its OpenAI-style base URL.
async fn provider() -> (String, Provider) {
    let p = Provider::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(p.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, p)
}

/// The organization's catalog: a default model on the fake provider (its key in a secret),
/// a shell skill, two agents, a team, a queue.
struct Org {
    dba: String,
    deployer: String,
    team: String,
    queue: String,
}

async fn org(app: &TestApp, llm_url: &str) -> Org {
    app.unlimited().await;
    app.id_of("/api/v1/secrets", json!({"name": "FAKE_KEY", "value": "sk-fake"}))
        .await;
    app.id_of(
        "/api/v1/models",
        json!({"value": "fake/planner", "label": "Planner", "provider": "openai", "base_url": llm_url,
               "api_key_secret": "FAKE_KEY", "is_default": true,
               "pricing": {"input_per_1k": 0.003, "output_per_1k": 0.015}}),
    )
    .await;
    let shell = app
        .id_of(
            "/api/v1/skills",
            json!({"name": "psql", "type": "shell", "description": "runs pg_dump and psql"}),
        )
        .await;
    let dba = app
        .id_of(
            "/api/v1/agents",
            json!({"name": "dba", "description": "Backs up and restores PostgreSQL databases", "skill_ids": [shell]}),
        )
        .await;
    let deployer = app
        .id_of(
            "/api/v1/agents",
            json!({"name": "deployer", "description": "Deploys services to Kubernetes clusters"}),
        )
        .await;
    let team = app
        .id_of(
            "/api/v1/teams",
            json!({"name": "ops", "description": "Operations", "configuration": {"member_ids": [dba, deployer]}}),
        )
        .await;
    let envs = json(app.get("/api/v1/environments").await).await;
    let env = envs["items"][0]["id"].as_str().unwrap().to_string();
    let queue = app
        .id_of(
            &format!("/api/v1/environments/{env}/worker-queues"),
            json!({"name": "main"}),
        )
        .await;
    Org {
        dba,
        deployer,
        team,
        queue,
    }
}

fn good_plan(o: &Org) -> Value {
    json!({
        "title": "Back up, then deploy",
        "summary": "Back up the billing database, then deploy the billing service.",
        "complexity": {"story_points": 3, "confidence": "high", "reasoning": "two known steps"},
        "steps": [
            {"id": "backup", "title": "Back up billing", "description": "Run pg_dump of billing", "agent_id": o.dba,
             "skills_to_use": ["psql"], "expected_output": "the dump's path"},
            {"id": "deploy", "title": "Deploy billing", "description": "Roll out billing v2", "agent_id": o.deployer,
             "depends_on": ["backup"], "expected_output": "the rollout status"}
        ],
        "recommended_execution": {"entity_type": "team", "entity_id": o.team, "worker_queue_id": o.queue,
                                  "reasoning": "ops has both"},
        "risks": ["the dump may be large"], "prerequisites": [], "success_criteria": ["billing v2 serves"],
        "questions": []
    })
}

async fn plan(app: &TestApp, path: &str, body: Value) -> Value {
    let r = app.post(path, body).await;
    let status = r.status();
    let v = json(r).await;
    assert_eq!(status, 201, "{v}");
    v
}

both_backends! {
    async fn a_model_plans_over_the_organization_and_the_plan_is_stored(backend: Backend) {
        let (url, llm) = provider().await;
        let app = TestApp::spawn(backend).await;
        let o = org(&app, &url).await;
        llm.then(Answer::Plan(good_plan(&o)));
        let answer = plan(&app, "/api/v1/planning/plan",
            json!({"task_description": "Back up the billing database and deploy billing v2", "context": {"env": "prod"}})).await;
        assert_eq!(answer["planner"], "llm", "{answer}");
        assert_eq!(answer["model"], "fake/planner");
        assert!(answer.get("planner_reason").is_none(), "{answer}");
        let p = &answer["plan"];
        assert_eq!(p["steps"][0]["agent_id"], o.dba.as_str());
        assert_eq!(p["steps"][0]["entity_name"], "dba");
        assert_eq!(p["steps"][0]["skills_to_use"], json!(["psql"]));
        assert_eq!(p["steps"][1]["depends_on"], json!(["backup"]));
        assert_eq!(p["recommended_execution"]["entity_id"], o.team.as_str());
        assert_eq!(p["recommended_execution"]["entity_name"], "ops");
        assert_eq!(p["notes"], json!([]));
        // Cost comes from the default model's pricing, not from the model's answer.
        let cost = &p["cost_estimate"];
        assert_eq!(cost["llm_costs"][0]["model"], "fake/planner");
        assert_eq!(cost["llm_costs"][0]["steps"], json!(["backup", "deploy"]));
        assert!(cost["estimated_cost_usd"].as_f64().unwrap() > 0.0, "{cost}");
        assert_eq!(answer["usage"]["prompt_tokens"], 1000);
        // The model was told the task, the context, the agents with their skills and tools,
        // the queues, and given the tool to answer with; the key came from the secret.
        let requests = llm.requests();
        assert_eq!(requests.len(), 1);
        let prompt = requests[0]["messages"][1]["content"].as_str().unwrap();
        for needle in ["Back up the billing database", "\"env\":\"prod\"", &o.dba, "psql (shell; tools: psql)", &o.queue, "members: dba, deployer"] {
            assert!(prompt.contains(needle), "{needle} not in {prompt}");
        }
        assert_eq!(requests[0]["tools"][0]["function"]["name"], "submit_plan");

        // Stored, listed, with its history.
        let id = answer["id"].as_str().unwrap();
        let stored = json(app.get(&format!("/api/v1/tasks/plans/{id}")).await).await;
        assert_eq!(stored["iterations"].as_array().unwrap().len(), 1, "{stored}");
        assert_eq!(stored["title"], "Back up, then deploy");
        assert_eq!(stored["runs"], json!([]));
        let list = json(app.get("/api/v1/tasks/plans").await).await;
        assert_eq!(list["items"][0]["id"], id);
        assert!(list["items"][0].get("iterations").is_none());

        // A refinement is the next iteration; the model saw its previous plan and the feedback.
        let mut refined = good_plan(&o);
        refined["title"] = json!("Deploy only");
        refined["steps"].as_array_mut().unwrap().remove(0);
        refined["steps"][0]["depends_on"] = json!([]);
        llm.then(Answer::Plan(refined));
        let answer = plan(&app, "/api/v1/tasks/plan", json!({"description": "Deploy billing v2",
            "previous_plan_id": id, "feedback": "skip the backup"})).await;
        assert_eq!(answer["id"], id);
        assert_eq!(answer["iteration"], 2);
        let prompt = llm.requests()[1]["messages"][1]["content"].as_str().unwrap().to_string();
        assert!(prompt.contains("Back up, then deploy") && prompt.contains("skip the backup"), "{prompt}");
        let stored = json(app.get(&format!("/api/v1/tasks/plans/{id}")).await).await;
        let iterations = stored["iterations"].as_array().unwrap();
        assert_eq!(iterations.len(), 2);
        assert_eq!(iterations[0]["plan"]["title"], "Back up, then deploy");
        assert_eq!(iterations[1]["feedback"], "skip the backup");
        assert_eq!(stored["plan"]["title"], "Deploy only");

        let r = app.req(Method::DELETE, &format!("/api/v1/tasks/plans/{id}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_error(app.get(&format!("/api/v1/tasks/plans/{id}")).await, 404, "NOT_FOUND").await;
    }

    async fn an_unknown_agent_is_repaired_once_then_dropped_with_a_note(backend: Backend) {
        let (url, llm) = provider().await;
        let app = TestApp::spawn(backend).await;
        let o = org(&app, &url).await;
        let mut wrong = good_plan(&o);
        wrong["steps"][1]["agent_id"] = json!(uuid::Uuid::now_v7().to_string());
        // Repaired: the second answer is right.
        llm.then(Answer::Plan(wrong.clone()));
        llm.then(Answer::Plan(good_plan(&o)));
        let answer = plan(&app, "/api/v1/tasks/plan", json!({"description": "Back up and deploy billing"})).await;
        assert_eq!(answer["planner"], "llm");
        assert_eq!(answer["plan"]["steps"][1]["agent_id"], o.deployer.as_str());
        assert_eq!(answer["plan"]["notes"], json!([]));
        let requests = llm.requests();
        assert_eq!(requests.len(), 2);
        let repair = requests[1]["messages"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(repair["role"], "tool", "{repair}");
        assert!(repair["content"].as_str().unwrap().contains("is not one of the agents listed"), "{repair}");

        // Wrong twice: the id is dropped, the step goes to the best match, and a note says so.
        llm.then(Answer::Plan(wrong.clone()));
        llm.then(Answer::Plan(wrong));
        let answer = plan(&app, "/api/v1/tasks/plan", json!({"description": "Back up and deploy billing"})).await;
        assert_eq!(answer["planner"], "llm");
        let step = &answer["plan"]["steps"][1];
        assert_eq!(step["agent_id"], o.deployer.as_str(), "{step}");
        let notes = answer["plan"]["notes"].as_array().unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].as_str().unwrap().contains("unknown agent"), "{notes:?}");
    }

    async fn without_a_usable_model_the_heuristic_plans(backend: Backend) {
        let (url, llm) = provider().await;
        let app = TestApp::spawn(backend).await;
        let o = org(&app, &url).await;
        let task = "Back up the PostgreSQL databases. Then deploy the services to the Kubernetes cluster.";
        // Invalid twice: text with no plan, then a plan without steps.
        llm.then(Answer::Text("I would rather not"));
        llm.then(Answer::Plan(json!({"title": "x", "summary": "y", "steps": []})));
        let answer = plan(&app, "/api/v1/tasks/plan", json!({"description": task})).await;
        assert_eq!(answer["planner"], "heuristic", "{answer}");
        let reason = answer["planner_reason"].as_str().unwrap();
        assert!(reason.contains("not a valid plan twice"), "{reason}");
        let steps = answer["plan"]["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0]["agent_id"], o.dba.as_str(), "{answer}");
        assert_eq!(steps[1]["agent_id"], o.deployer.as_str());
        assert_eq!(steps[1]["depends_on"], json!(["step_1"]));
        assert_eq!(answer["plan"]["recommended_execution"]["entity_id"], o.team.as_str());
        // The tokens the model spent are still counted.
        assert_eq!(answer["usage"]["prompt_tokens"], 2000);

        // No key: the default model names no secret and no base_url of its own.
        let no_key = app.id_of("/api/v1/models", json!({"value": "openai/gpt-x", "label": "x", "provider": "openai"})).await;
        let answer = plan(&app, "/api/v1/tasks/plan", json!({"description": task, "planner_model_id": "openai/gpt-x"})).await;
        assert_eq!(answer["planner"], "heuristic");
        assert!(answer["planner_reason"].as_str().unwrap().contains("no API key"), "{answer}");

        // The provider is down.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let r = app.post("/api/v1/models", json!({"value": "down/model", "label": "down", "provider": "openai",
            "base_url": format!("http://{closed}/v1")})).await;
        assert_eq!(r.status(), 201);
        let answer = plan(&app, "/api/v1/tasks/plan", json!({"description": task, "planner_model_id": "down/model"})).await;
        assert_eq!(answer["planner"], "heuristic");
        assert!(answer["planner_reason"].as_str().unwrap().contains("could not answer"), "{answer}");
        // A provider that redirects is not followed: the target sees nothing.
        let (target, seen) = provider().await;
        llm.then(Answer::Redirect(format!("{target}/chat/completions")));
        let answer = plan(&app, "/api/v1/tasks/plan", json!({"description": task})).await;
        assert_eq!(answer["planner"], "heuristic", "{answer}");
        assert!(seen.requests().is_empty());
        // The planner's copy of the catalog follows writes: a new agent is planned with at once.
        let writer = app
            .id_of("/api/v1/agents", json!({"name": "writer", "description": "Writes release notes"}))
            .await;
        let answer = plan(&app, "/api/v1/tasks/plan", json!({"description": "Write the release notes",
            "planner_model_id": no_key})).await;
        assert_eq!(answer["planner"], "heuristic");
        assert_eq!(answer["plan"]["steps"][0]["agent_id"], writer.as_str(), "{answer}");
        // A model that is not the organization's is a 422, not a heuristic plan.
        let r = app.post("/api/v1/tasks/plan", json!({"description": task, "planner_model_id": "nope/none"})).await;
        assert_error(r, 422, "VALIDATION_ERROR").await;
    }

    async fn private_model_urls_need_the_operator_s_consent(backend: Backend) {
        let (url, llm) = provider().await;
        let app = TestApp::spawn_with(backend, |c| c.allow_private_model_urls = false).await;
        org(&app, &url).await;
        let answer = plan(&app, "/api/v1/tasks/plan", json!({"description": "deploy"})).await;
        assert_eq!(answer["planner"], "heuristic");
        let reason = answer["planner_reason"].as_str().unwrap();
        assert!(reason.contains("--allow-private-model-urls"), "{reason}");
        assert!(!reason.contains("127.0.0.1"), "{reason}");
        assert!(llm.requests().is_empty());
    }

    async fn an_organization_without_agents_gets_422_and_others_plans_are_404(backend: Backend) {
        let (url, llm) = provider().await;
        let app = TestApp::spawn(backend).await;
        let r = app.post("/api/v1/tasks/plan", json!({"description": "anything"})).await;
        let e = assert_error(r, 422, "VALIDATION_ERROR").await;
        assert!(e["message"].as_str().unwrap().contains("no agent"), "{e}");
        let r = app.post("/api/v1/tasks/plan", json!({"description": "  "})).await;
        assert_error(r, 422, "VALIDATION_ERROR").await;
        let r = app.post("/api/v1/tasks/plan/stream", json!({"description": "anything"})).await;
        assert_error(r, 422, "VALIDATION_ERROR").await;

        let o = org(&app, &url).await;
        llm.then(Answer::Plan(good_plan(&o)));
        let mine = plan(&app, "/api/v1/tasks/plan", json!({"description": "deploy"})).await;
        let id = mine["id"].as_str().unwrap();
        let other = app.org_with_key("other-org", Role::Admin).await;
        for (method, path, body) in [
            (Method::GET, format!("/api/v1/tasks/plans/{id}"), None),
            (Method::DELETE, format!("/api/v1/tasks/plans/{id}"), None),
            (Method::POST, format!("/api/v1/tasks/plans/{id}/execute"), Some(json!({"force": true}))),
            (Method::POST, "/api/v1/tasks/plan".to_string(), Some(json!({"description": "x", "previous_plan_id": id, "feedback": "y"}))),
        ] {
            let mut r = app.req_as(&other, method, &path);
            if let Some(b) = body {
                r = r.json(&b);
            }
            assert_error(r.send().await.unwrap(), 404, "NOT_FOUND").await;
        }
        let list = json(app.req_as(&other, Method::GET, "/api/v1/tasks/plans").send().await.unwrap()).await;
        assert_eq!(list["items"], json!([]));
        // A viewer reads plans but does not make them.
        let viewer = app.key("default", Role::Viewer).await;
        let r = app.req_as(&viewer, Method::POST, "/api/v1/tasks/plan").json(&json!({"description": "x"})).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;
        let r = app.req_as(&viewer, Method::GET, &format!("/api/v1/tasks/plans/{id}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }

    async fn the_stream_shows_progress_at_once_then_chunks_then_the_plan(backend: Backend) {
        let (url, llm) = provider().await;
        let app = TestApp::spawn(backend).await;
        let o = org(&app, &url).await;
        // The model takes two seconds: progress must come well before it answers.
        llm.then(Answer::Late(Duration::from_secs(2), Box::new(Answer::Plan(good_plan(&o)))));
        let asked = Instant::now();
        let mut r = app.post("/api/v1/planning/plan/stream", json!({"task_description": "Back up and deploy billing"})).await;
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let mut seen = String::new();
        let mut first_event_after = None;
        while let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), r.chunk()).await.unwrap().unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if first_event_after.is_none() && seen.contains("event: progress") {
                first_event_after = Some(asked.elapsed());
            }
        }
        assert!(first_event_after.unwrap() < Duration::from_secs(1), "{first_event_after:?}");
        let events: Vec<&str> = seen.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        let first_chunk = events.iter().position(|e| *e == "plan_chunk").expect("plan chunks");
        assert!(events[..first_chunk].iter().all(|e| *e == "progress"), "{events:?}");
        assert!(events[..first_chunk].len() >= 2, "{events:?}");
        assert_eq!(events.last(), Some(&"complete"), "{events:?}");
        assert_eq!(events.iter().filter(|e| **e == "complete").count(), 1);
        let complete = seen.split("event: complete\ndata: ").nth(1).unwrap().lines().next().unwrap();
        let complete: Value = serde_json::from_str(complete).unwrap();
        assert_eq!(complete["planner"], "llm");
        assert_eq!(complete["plan"]["steps"][1]["agent_id"], o.deployer.as_str());
        // The streamed plan is stored like any other.
        let id = complete["id"].as_str().unwrap();
        assert_eq!(app.get(&format!("/api/v1/tasks/plans/{id}")).await.status(), 200);
    }

    async fn a_plan_runs_as_a_workflow_once_its_questions_are_answered(backend: Backend) {
        let (url, llm) = provider().await;
        let app = TestApp::spawn(backend).await;
        let o = org(&app, &url).await;
        let mut asking = good_plan(&o);
        asking["questions"] = json!(["Which billing version?", "May the backup take the database offline?"]);
        llm.then(Answer::Plan(asking));
        let answer = plan(&app, "/api/v1/tasks/plan", json!({"description": "Back up and deploy billing"})).await;
        let id = answer["id"].as_str().unwrap();
        let execute = format!("/api/v1/tasks/plans/{id}/execute");

        // Unanswered questions: 409 listing them; one answer of two is not enough.
        let e = assert_error(app.post(&execute, json!({})).await, 409, "CONFLICT").await;
        assert_eq!(e["details"]["questions"].as_array().unwrap().len(), 2, "{e}");
        let e = assert_error(app.post(&execute, json!({"answers": ["v2"]})).await, 409, "CONFLICT").await;
        assert_eq!(e["details"]["questions"], json!(["May the backup take the database offline?"]));

        let r = app.post(&execute, json!({"answers": ["v2", "yes"], "inputs": {"ticket": "OPS-7"}})).await;
        let started = json(r).await;
        let workflow = started["workflow_id"].as_str().expect("workflow_id");
        let run = started["workflow_run_id"].as_str().unwrap();
        let w = json(app.get(&format!("/api/v1/workflows/{workflow}")).await).await;
        let steps = w["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0]["type"], "agent");
        assert_eq!(steps[0]["agent_id"], o.dba.as_str(), "{answer}");
        assert_eq!(steps[1]["depends_on"], json!(["backup"]));
        assert!(steps[1]["prompt"].as_str().unwrap().contains("steps.backup.output"), "{w}");
        let r = json(app.get(&format!("/api/v1/workflow-runs/{run}")).await).await;
        let context = r["inputs"]["context"].as_str().unwrap();
        assert!(context.contains("Which billing version?\n  v2") && context.contains("OPS-7"), "{context}");
        // The plan shows its run; a second execution reuses the workflow.
        let stored = json(app.get(&format!("/api/v1/tasks/plans/{id}")).await).await;
        assert_eq!(stored["runs"][0]["workflow_run_id"], run);
        let status = stored["runs"][0]["status"].as_str().unwrap_or_default();
        assert!(["pending", "running"].contains(&status), "{stored}");
        let again = json(app.post(&execute, json!({"force": true})).await).await;
        assert_eq!(again["workflow_id"], workflow);
        assert_ne!(again["workflow_run_id"], run);

        // A workflow of the plan's name that someone else wrote is not run as the plan.
        llm.then(Answer::Plan(good_plan(&o)));
        let other = plan(&app, "/api/v1/tasks/plan", json!({"description": "deploy"})).await;
        let other_id = other["id"].as_str().unwrap();
        let r = app.post("/api/v1/workflows", json!({"name": format!("plan-{other_id}-1"), "default_worker_queue_id": o.queue,
            "steps": [{"id": "evil", "type": "agent", "agent_id": o.dba, "prompt": "drop the database"}]})).await;
        assert_eq!(r.status(), 201);
        let r = app.post(&format!("/api/v1/tasks/plans/{other_id}/execute"), json!({})).await;
        assert_error(r, 409, "CONFLICT").await;

        // A plan held by the client runs too; one naming another organization's agent does not,
        // nor one past the limits.
        let mut huge = answer["plan"].clone();
        let step = huge["steps"][0].clone();
        huge["steps"] = json!(vec![step; 31]);
        let r = app.post("/api/v1/tasks/plan/execute", json!({"plan": huge, "worker_queue_id": o.queue, "force": true})).await;
        assert_error(r, 422, "VALIDATION_ERROR").await;
        let mut inline = answer["plan"].clone();
        inline["questions"] = json!([]);
        let r = app.post("/api/v1/tasks/plan/execute", json!({"plan": inline, "worker_queue_id": o.queue})).await;
        assert_eq!(r.status(), 201, "{}", json(r).await);
        // A queue that is not the organization's: 422, and no workflow is left behind.
        let before = json(app.get("/api/v1/workflows").await).await["total"].clone();
        let r = app.post("/api/v1/tasks/plan/execute", json!({"plan": inline, "worker_queue_id": uuid::Uuid::now_v7()})).await;
        assert_error(r, 422, "VALIDATION_ERROR").await;
        assert_eq!(json(app.get("/api/v1/workflows").await).await["total"], before);
        inline["steps"][0]["agent_id"] = json!(uuid::Uuid::now_v7());
        let r = app.post("/api/v1/tasks/plan/execute", json!({"plan": inline, "worker_queue_id": o.queue})).await;
        assert_error(r, 422, "VALIDATION_ERROR").await;
    }
}
