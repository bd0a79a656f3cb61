//! Workflow definitions (issue 20, point 1): CRUD, versions, roles and tenancy, and a 422
//! naming the step and field for every kind of bad definition.

use crate::common::worker::read_sse;
use crate::common::{TestApp, assert_error, json};
use cp_types::org::Role;
use reqwest::Method;
use serde_json::{Value, json};

/// The fields of a 422's issues (one issue or several).
fn fields(err: &Value) -> Vec<String> {
    match err["details"]["errors"].as_array() {
        Some(all) => all.iter().map(|e| e["field"].as_str().unwrap().to_string()).collect(),
        None => vec![err["details"]["field"].as_str().unwrap_or_default().to_string()],
    }
}

fn messages(err: &Value) -> String {
    err["details"].to_string()
}

async fn id_of(app: &TestApp, path: &str, body: Value) -> String {
    app.id_of(path, body).await
}

async fn queue(app: &TestApp) -> String {
    let envs = json(app.get("/api/v1/environments").await).await;
    let env = envs["items"][0]["id"].as_str().unwrap().to_string();
    id_of(
        app,
        &format!("/api/v1/environments/{env}/worker-queues"),
        json!({"name": "flows"}),
    )
    .await
}

/// A diamond: `fetch` → (`summarize`, `count`) → `report`, which reads both branches.
fn diamond(agent: &str, queue: &str) -> Value {
    json!({
        "name": "release notes",
        "description": "summarize what changed",
        "inputs_schema": {"type": "object", "properties": {"repo": {"type": "string"}}, "required": ["repo"]},
        "default_worker_queue_id": queue,
        "tags": ["release"],
        "steps": [
            {"id": "fetch", "type": "command", "command": "git -C {{ inputs.repo }} log --oneline -20"},
            {"id": "summarize", "type": "agent", "agent_id": agent, "depends_on": ["fetch"],
             "prompt": "Summarize: {{ steps.fetch.output }}", "retry": {"max_attempts": 3, "backoff_seconds": 1}},
            {"id": "count", "type": "command", "depends_on": ["fetch"], "command": "echo {{ steps.fetch.output | length }}",
             "condition": "steps.fetch.status == 'completed'"},
            {"id": "report", "type": "agent", "agent_id": agent, "depends_on": ["summarize", "count"],
             "prompt": "{{ steps.summarize.output }} ({{ steps.count.output }} lines, run {{ run.id }})"}
        ]
    })
}

both_backends! {
    async fn workflows_are_stored_versioned_listed_and_deleted(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let agent = id_of(&app, "/api/v1/agents", json!({"name": "writer"})).await;
        let q = queue(&app).await;
        let r = app.post("/api/v1/workflows", diamond(&agent, &q)).await;
        assert_eq!(r.status(), 201);
        let w = json(r).await;
        let id = w["id"].as_str().unwrap().to_string();
        assert_eq!((w["version"].as_i64(), w["name"].as_str()), (Some(1), Some("release notes")), "{w}");
        assert_eq!(w["steps"].as_array().unwrap().len(), 4);
        assert_eq!(w["steps"][1]["retry"], json!({"max_attempts": 3, "backoff_seconds": 1.0, "backoff_factor": 2.0}));
        assert_eq!(json(app.get(&format!("/api/v1/workflows/{id}")).await).await["steps"], w["steps"]);
        // The same name twice is a conflict.
        assert_error(app.post("/api/v1/workflows", diamond(&agent, &q)).await, 409, "CONFLICT").await;

        // An update is a new version; the old one stays readable.
        let r = app.req(Method::PATCH, &format!("/api/v1/workflows/{id}"))
            .json(&json!({"description": "v2", "steps": [{"id": "only", "type": "sleep", "seconds": 1}]}))
            .send().await.unwrap();
        assert_eq!(r.status(), 200);
        let w2 = json(r).await;
        assert_eq!((w2["version"].as_i64(), w2["name"].as_str(), w2["description"].as_str()), (Some(2), Some("release notes"), Some("v2")));
        assert_eq!(w2["default_worker_queue_id"], q.as_str(), "untouched fields stay");
        let versions = json(app.get(&format!("/api/v1/workflows/{id}/versions")).await).await;
        let items = versions["items"].as_array().unwrap();
        assert_eq!(items.iter().map(|v| v["version"].as_i64().unwrap()).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(items[1]["steps"], w["steps"]);
        assert_eq!(items[0]["steps"][0]["id"], "only");
        // A rejected update changes nothing.
        let r = app.req(Method::PUT, &format!("/api/v1/workflows/{id}"))
            .json(&json!({"steps": []})).send().await.unwrap();
        assert_error(r, 422, "VALIDATION_ERROR").await;
        assert_eq!(json(app.get(&format!("/api/v1/workflows/{id}")).await).await["version"], 2);

        let list = json(app.get("/api/v1/workflows").await).await;
        assert_eq!(list["total"], 1);
        assert_eq!(app.req(Method::DELETE, &format!("/api/v1/workflows/{id}")).send().await.unwrap().status(), 200);
        assert_error(app.get(&format!("/api/v1/workflows/{id}")).await, 404, "NOT_FOUND").await;
        assert_error(app.get(&format!("/api/v1/workflows/{id}/versions")).await, 404, "NOT_FOUND").await;
    }

    async fn roles_and_organizations_keep_workflows_apart(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let agent = id_of(&app, "/api/v1/agents", json!({"name": "writer"})).await;
        let q = queue(&app).await;
        let w = json(app.post("/api/v1/workflows", diamond(&agent, &q)).await).await;
        let id = w["id"].as_str().unwrap();
        let viewer = app.key("default", Role::Viewer).await;
        let worker = app.key("default", Role::Worker).await;
        assert_eq!(app.req_as(&viewer, Method::GET, &format!("/api/v1/workflows/{id}")).send().await.unwrap().status(), 200);
        let r = app.req_as(&viewer, Method::POST, "/api/v1/workflows").json(&diamond(&agent, &q)).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;
        let r = app.req_as(&worker, Method::GET, "/api/v1/workflows").send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;
        // Another organization sees nothing, and cannot name this one's agent or queue.
        let other = app.org_with_key("flows-b", Role::Admin).await;
        let r = app.req_as(&other, Method::GET, &format!("/api/v1/workflows/{id}")).send().await.unwrap();
        assert_error(r, 404, "NOT_FOUND").await;
        let r = app.req_as(&other, Method::DELETE, &format!("/api/v1/workflows/{id}")).send().await.unwrap();
        assert_error(r, 404, "NOT_FOUND").await;
        let list = json(app.req_as(&other, Method::GET, "/api/v1/workflows").send().await.unwrap()).await;
        assert_eq!(list["total"], 0);
        let r = app.req_as(&other, Method::POST, "/api/v1/workflows").json(&diamond(&agent, &q)).send().await.unwrap();
        let err = assert_error(r, 422, "VALIDATION_ERROR").await;
        let f = fields(&err);
        for field in ["steps[1].agent_id", "steps[3].agent_id", "default_worker_queue_id"] {
            assert!(f.contains(&field.to_string()), "{field} missing: {err}");
        }
    }

    async fn every_bad_definition_is_a_422_naming_the_step_and_field(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let agent = id_of(&app, "/api/v1/agents", json!({"name": "writer"})).await;
        let q = queue(&app).await;
        let bad = |steps: Value| json!({"name": "bad", "steps": steps});
        let cases: Vec<(Value, &str, &str)> = vec![
            (bad(json!([
                {"id": "a", "type": "command", "command": "true", "depends_on": ["b"]},
                {"id": "b", "type": "command", "command": "true", "depends_on": ["a"]}])),
             "steps[0].depends_on", "cycle"),
            (bad(json!([{"id": "a", "type": "command", "command": "true", "depends_on": ["ghost"]}])),
             "steps[0].depends_on", "'ghost'"),
            (bad(json!([{"id": "a", "type": "agent", "agent_id": uuid::Uuid::now_v7(), "prompt": "hi"}])),
             "steps[0].agent_id", "no agent"),
            (bad(json!([{"id": "a", "type": "team", "team_id": uuid::Uuid::now_v7(), "prompt": "hi"}])),
             "steps[0].team_id", "no team"),
            (bad(json!([{"id": "a", "type": "command", "command": "true", "worker_queue_id": uuid::Uuid::now_v7()}])),
             "steps[0].worker_queue_id", "no worker queue"),
            (bad(json!([
                {"id": "a", "type": "command", "command": "true"},
                {"id": "b", "type": "command", "command": "echo {{ steps.c.output }}", "depends_on": ["a"]},
                {"id": "c", "type": "command", "command": "true"}])),
             "steps[1].command", "step 'c'"),
            (bad(json!([{"id": "a", "type": "agent", "agent_id": agent, "prompt": "{{ inputs.x "}])),
             "steps[0].prompt", "syntax error"),
            (bad(json!([{"id": "a", "type": "command", "command": "true", "condition": "inputs.go and"}])),
             "steps[0].condition", "step 'a'"),
            (bad(json!([{"id": "a", "type": "command", "command": "echo {{ item }}"}])),
             "steps[0].command", "for_each"),
            (bad(json!([{"id": "a", "type": "agent", "agent_id": agent}])), "steps[0].prompt", "needs 'prompt'"),
            (bad(json!([{"id": "a", "type": "http"}])), "steps[0].url", "needs 'url'"),
            (bad(json!([{"id": "a", "type": "approval", "message": "ok?", "approvers": ["worker"]}])),
             "steps[0].approvers", "admin and member"),
            (bad(json!([{"id": "a", "type": "sleep", "seconds": 1, "until": "2030-01-01T00:00:00Z"}])),
             "steps[0].seconds", "not both"),
            (bad(json!([{"id": "a", "type": "command", "command": "true"}, {"id": "a", "type": "command", "command": "true"}])),
             "steps[1].id", "another step"),
            (bad(json!([{"id": "has-dash", "type": "command", "command": "true"}])), "steps[0].id", "letter"),
            (bad(json!([])), "steps", "at least one"),
            (json!({"name": "bad", "inputs_schema": {"type": "nonsense"}, "steps": [{"id": "a", "type": "sleep", "seconds": 1}]}),
             "inputs_schema", "JSON Schema"),
            (json!({"name": "bad", "project_id": uuid::Uuid::now_v7(), "steps": [{"id": "a", "type": "sleep", "seconds": 1}]}),
             "project_id", "no project"),
            (json!({"name": "bad", "default_worker_queue_id": uuid::Uuid::now_v7(), "steps": [{"id": "a", "type": "sleep", "seconds": 1}]}),
             "default_worker_queue_id", "no worker queue"),
        ];
        for (body, field, says) in cases {
            let err = assert_error(app.post("/api/v1/workflows", body.clone()).await, 422, "VALIDATION_ERROR").await;
            assert!(fields(&err).contains(&field.to_string()), "{field} not named for {body}: {err}");
            assert!(messages(&err).contains(says), "'{says}' not said for {body}: {err}");
        }
        // A wrong type is the usual 422 too, and nothing was stored.
        let err = assert_error(app.post("/api/v1/workflows", json!({"name": "bad", "steps": [{"id": "a", "type": "teleport"}]})).await, 422, "VALIDATION_ERROR").await;
        assert!(err["message"].as_str().unwrap().contains("teleport"), "{err}");
        assert_eq!(json(app.get("/api/v1/workflows").await).await["total"], 0);
        let _ = q;
    }
}

/// A document as kubiya-sdk 2.1.6's DSL builds it (`kubiya.dsl.workflow("deploy").type("chain")
/// .step("build", "make build", callback=lambda s: s.output("BUILD_ID").retries(3))
/// .step("review", callback=lambda s: s.agent(name="reviewer", message="Review ${BUILD_ID}"))
/// .step("notify", callback=lambda s: s.http(url=…, method="POST", body={"id": "${BUILD_ID}"}))
/// .parallel_steps("fan out", items=["a", "b"], command="echo ${ITEM}", max_concurrent=2)
/// .to_dict()`, printed by the SDK itself); tests/sdk/compat.py imports one built live.
fn sdk_chain() -> Value {
    json!({
        "name": "deploy", "type": "chain", "params": {"ENV": "staging"}, "env": {"REGION": "eu"},
        "steps": [
            {"name": "build", "command": "make build ENV=${ENV} REGION=${REGION}",
             "executor": {"type": "command", "config": {}}, "output": "BUILD_ID", "retries": 3},
            {"name": "review", "executor": {"type": "agent", "config": {"agent_name": "reviewer", "message": "Review ${BUILD_ID}"}}},
            {"name": "notify", "executor": {"type": "http", "config": {"url": "https://example.com/hook", "method": "POST", "body": {"id": "${BUILD_ID}"}}}},
            {"name": "fan out", "command": "echo ${ITEM}", "executor": {"type": "command", "config": {}},
             "parallel": {"items": {"items": ["a", "b"], "maxConcurrent": 2}}}
        ]
    })
}

both_backends! {
    async fn a_dsl_document_imports_as_a_workflow(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let reviewer = id_of(&app, "/api/v1/agents", json!({"name": "reviewer"})).await;
        let q = queue(&app).await;
        let mut doc = sdk_chain();
        doc["default_worker_queue_id"] = json!(q);
        let r = app.post("/api/v1/workflows/import", doc).await;
        assert_eq!(r.status(), 201);
        let w = json(r).await;
        let steps = w["steps"].as_array().unwrap();
        let ids: Vec<&str> = steps.iter().map(|s| s["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["build", "review", "notify", "fan_out"]);
        assert_eq!(steps[3]["name"], "fan out");
        // A chain: each step after the one before.
        assert_eq!(steps[0]["depends_on"], json!([]));
        assert_eq!(steps[2]["depends_on"], json!(["review"]));
        assert_eq!(steps[0]["command"], "make build ENV={{ inputs.ENV }} REGION=eu");
        assert_eq!(steps[0]["retry"]["max_attempts"], 4);
        assert_eq!((steps[1]["type"].as_str(), steps[1]["agent_id"].as_str()), (Some("agent"), Some(reviewer.as_str())));
        assert_eq!(steps[1]["prompt"], "Review {{ steps.build.output }}");
        assert_eq!((steps[2]["type"].as_str(), steps[2]["method"].as_str()), (Some("http"), Some("POST")));
        assert_eq!(steps[2]["body"], r#"{"id":"{{ steps.build.output }}"}"#);
        assert_eq!(steps[3]["command"], "echo {{ item }}");
        assert_eq!((steps[3]["for_each"].clone(), steps[3]["max_parallel"].as_i64()), (json!(["a", "b"]), Some(2)));
        assert_eq!(w["inputs_schema"]["properties"]["ENV"]["default"], "staging");
        assert_eq!(w["default_worker_queue_id"], q.as_str());

        // A graph keeps the document's own dependencies; a precondition on a param is a condition.
        let graph = json!({"name": "graph", "type": "graph", "params": {"ENV": "prod"}, "steps": [
            {"name": "a", "command": "echo a", "executor": {"type": "command", "config": {}}},
            {"name": "b", "command": "echo b", "executor": {"type": "command", "config": {}}},
            {"name": "c", "command": "echo c", "executor": {"type": "command", "config": {}}, "depends": ["a", "b"],
             "preconditions": [{"condition": "${ENV}", "expected": "prod"}], "continueOn": {"failure": true}}]});
        let w = json(app.post("/api/v1/workflows/import", graph).await).await;
        assert_eq!(w["steps"][1]["depends_on"], json!([]), "{w}");
        assert_eq!(w["steps"][2]["depends_on"], json!(["a", "b"]));
        assert_eq!(w["steps"][2]["condition"], r#"(inputs.ENV) | string == "prod""#);
        assert_eq!(w["steps"][2]["continue_on_failure"], true);

        // What cannot be imported is named.
        let mut doc = sdk_chain();
        doc["name"] = json!("unknown agent");
        doc["steps"][1]["executor"]["config"]["agent_name"] = json!("nobody");
        let err = assert_error(app.post("/api/v1/workflows/import", doc).await, 422, "VALIDATION_ERROR").await;
        assert!(fields(&err).contains(&"steps[1].executor.config.agent_name".to_string()), "{err}");
        let docker = json!({"name": "docker", "steps": [{"name": "d", "executor": {"type": "docker", "config": {"image": "alpine"}}}]});
        let err = assert_error(app.post("/api/v1/workflows/import", docker).await, 422, "VALIDATION_ERROR").await;
        assert_eq!(fields(&err), ["steps[0].executor.type"]);
        assert!(messages(&err).contains("'docker' executor"), "{err}");
        let shell_check = json!({"name": "pre", "steps": [{"name": "p", "command": "true", "preconditions": ["test -f x"]}]});
        let err = assert_error(app.post("/api/v1/workflows/import", shell_check).await, 422, "VALIDATION_ERROR").await;
        assert_eq!(fields(&err), ["steps[0].preconditions"]);
        // An output used before the step that makes it is caught by the definition's own rules.
        let early = json!({"name": "early", "type": "graph", "steps": [
            {"name": "use", "command": "echo ${LATER}"},
            {"name": "make", "command": "date", "output": "LATER"}]});
        let err = assert_error(app.post("/api/v1/workflows/import", early).await, 422, "VALIDATION_ERROR").await;
        assert_eq!(fields(&err), ["steps[0].command"], "{err}");
        assert_error(app.post("/api/v1/workflows/import", json!(["not", "a", "document"])).await, 422, "VALIDATION_ERROR").await;
    }
}

both_backends! {
    async fn runs_keep_to_their_organization_and_roles(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let agent = id_of(&app, "/api/v1/agents", json!({"name": "writer"})).await;
        let q = queue(&app).await;
        let w = id_of(&app, "/api/v1/workflows", json!({"name": "gated", "default_worker_queue_id": q, "steps": [
            {"id": "ok", "type": "approval", "message": "go?", "approvers": ["admin"]},
            {"id": "write", "type": "agent", "agent_id": agent, "prompt": "write it", "depends_on": ["ok"]}
        ]})).await;
        let viewer = app.key("default", Role::Viewer).await;
        let member = app.key("default", Role::Member).await;
        let worker = app.key("default", Role::Worker).await;
        let start = format!("/api/v1/workflows/{w}/start");
        let r = app.req_as(&viewer, Method::POST, &start).json(&json!({})).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;
        let r = app.req_as(&member, Method::POST, &start).json(&json!({})).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let run = json(r).await;
        let id = run["id"].as_str().unwrap().to_string();
        assert_eq!(run["status"], "waiting_for_approval", "{run}");
        let path = format!("/api/v1/workflow-runs/{id}");
        assert_eq!(app.req_as(&viewer, Method::GET, &path).send().await.unwrap().status(), 200);
        let r = app.req_as(&worker, Method::GET, &path).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;
        // Only the step's approvers decide it.
        let approve = format!("{path}/steps/ok/approve");
        let r = app.req_as(&member, Method::POST, &approve).json(&json!({})).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;
        let r = app.req_as(&viewer, Method::POST, &approve).json(&json!({})).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;

        // Another organization sees none of it.
        let other = app.org_with_key("runs-b", Role::Admin).await;
        for (m, p) in [(Method::GET, path.clone()), (Method::POST, format!("{path}/cancel")), (Method::POST, format!("{path}/pause")),
                       (Method::POST, format!("{path}/retry")), (Method::POST, approve.clone()), (Method::GET, format!("{path}/events")),
                       (Method::GET, format!("{path}/stream")), (Method::POST, start.clone()), (Method::GET, format!("/api/v1/workflows/{w}/runs"))] {
            let r = app.req_as(&other, m, &p).json(&json!({})).send().await.unwrap();
            assert_error(r, 404, "NOT_FOUND").await;
        }
        let list = json(app.req_as(&other, Method::GET, "/api/v1/workflow-runs").send().await.unwrap()).await;
        assert_eq!(list["total"], 0);

        // Approved by an admin: the agent step's execution is queued, tagged with its run and
        // step; cancelling the run cancels it through the executions' own path.
        let r = app.post(&approve, json!({"comment": "ship it"})).await;
        let run = json(r).await;
        assert_eq!((run["status"].as_str(), run["steps"][1]["status"].as_str()), (Some("running"), Some("running")), "{run}");
        let e = run["steps"][1]["execution_id"].as_str().unwrap().to_string();
        let execution = json(app.get(&format!("/api/v1/executions/{e}")).await).await;
        assert_eq!((execution["status"].as_str(), execution["workflow_run_id"].as_str(), execution["step_id"].as_str()),
                   (Some("queued"), Some(id.as_str()), Some("write")));
        assert_eq!(execution["prompt"], "write it");
        let listed = json(app.get("/api/v1/workflow-runs?status=running").await).await;
        // A bad filter is the 422 envelope, as on every other list.
        assert_error(app.get("/api/v1/workflow-runs?status=bogus").await, 422, "VALIDATION_ERROR").await;
        assert_eq!(listed["total"], 1, "{listed}");
        let listed = json(app.get(&format!("/api/v1/workflows/{w}/runs")).await).await;
        assert_eq!(listed["items"][0]["id"], json!(id));
        let cancelled = json(app.post(&format!("{path}/cancel"), json!({})).await).await;
        assert_eq!(cancelled["status"], "cancelled");
        assert_eq!(json(app.get(&format!("/api/v1/executions/{e}")).await).await["status"], "cancelled");
        assert_error(app.post(&format!("{path}/cancel"), json!({})).await, 409, "CONFLICT").await;
        let events = json(app.get(&format!("{path}/events")).await).await;
        let types: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types.last(), Some(&"done"), "{types:?}");
        assert!(types.contains(&"approval_requested"), "{types:?}");
    }

    async fn a_step_execution_left_by_an_ended_run_is_cancelled(backend: Backend) {
        // As if the server stopped between a run's cancel and its step's: the run is over, its
        // step execution still queued. The scheduler's sweep cancels it.
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let agent = id_of(&app, "/api/v1/agents", json!({"name": "writer"})).await;
        let q = queue(&app).await;
        let w = id_of(&app, "/api/v1/workflows", json!({"name": "one", "default_worker_queue_id": q, "steps": [
            {"id": "write", "type": "agent", "agent_id": agent, "prompt": "write it"}
        ]})).await;
        let run = json(app.post(&format!("/api/v1/workflows/{w}/start"), json!({})).await).await;
        let e = run["steps"][0]["execution_id"].as_str().unwrap().to_string();
        app.exec_sql("UPDATE workflow_runs SET status = 'cancelled'").await;
        // The execution's stream ends with its `done`: read it to the end.
        let stream = app.get(&format!("/api/v1/executions/{e}/stream")).await;
        let events = tokio::time::timeout(std::time::Duration::from_secs(30), read_sse(stream)).await
            .expect("the sweep cancels the execution within 30 s");
        assert_eq!(events.last().map(|e| (e.1.as_str(), e.2["status"].clone())), Some(("done", json!("cancelled"))), "{events:?}");
        assert_eq!(json(app.get(&format!("/api/v1/executions/{e}")).await).await["status"], "cancelled");
    }

    async fn a_step_denied_by_policy_fails_with_its_violations(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let agent = id_of(&app, "/api/v1/agents", json!({"name": "deployer"})).await;
        let q = queue(&app).await;
        let policy = id_of(&app, "/api/v1/policies", json!({"name": "no-prod",
            "policy_content": "package noprod\n\ndeny contains \"no deploys to prod\" if contains(input.execution.prompt, \"prod\")\n"})).await;
        app.post("/api/v1/policies/associations", json!({"policy_id": policy, "entity_type": "agent", "entity_id": agent})).await;
        let w = id_of(&app, "/api/v1/workflows", json!({"name": "deploy", "default_worker_queue_id": q, "steps": [
            {"id": "deploy", "type": "agent", "agent_id": agent, "prompt": "deploy to {{ inputs.env }}"}
        ]})).await;
        let run = json(app.post(&format!("/api/v1/workflows/{w}/start"), json!({"inputs": {"env": "prod"}})).await).await;
        assert_eq!(run["status"], "failed", "{run}");
        let error = run["steps"][0]["error"].as_str().unwrap();
        assert!(error.contains("POLICY_DENIED") && error.contains("no deploys to prod"), "{error}");
        assert!(run["steps"][0]["execution_id"].is_null(), "a denied step has no execution: {run}");
        // Allowed inputs run.
        let run = json(app.post(&format!("/api/v1/workflows/{w}/start"), json!({"inputs": {"env": "staging"}})).await).await;
        assert_eq!((run["status"].as_str(), run["steps"][0]["status"].as_str()), (Some("running"), Some("running")), "{run}");
    }
}
