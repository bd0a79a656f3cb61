//! The policies of `examples/policies/`, loaded through the API and enforced end to end, on
//! both backends.

use crate::common::worker::TestWorker;
use crate::common::{TestApp, assert_error, json};
use cp_types::org::Role;
use reqwest::Method;
use serde_json::{Value, json};

const DESTRUCTIVE: &str = include_str!("../../../../examples/policies/destructive_commands.rego");
const PRODUCTION_HOURS: &str = include_str!("../../../../examples/policies/production_hours.rego");
const TEAM_MODELS: &str = include_str!("../../../../examples/policies/team_models.rego");

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

async fn created(app: &TestApp, path: &str, body: Value) -> Value {
    let r = app.post(path, body).await;
    let status = r.status();
    let v = json(r).await;
    assert_eq!(status, 201, "{path}: {v}");
    v
}

/// Stores `content` as a policy and attaches it to `kind`/`entity`; the policy's path.
async fn attach(app: &TestApp, name: &str, content: &str, kind: &str, entity: &str) -> String {
    let p = id(&created(
        app,
        "/api/v1/policies",
        json!({"name": name, "policy_content": content}),
    )
    .await);
    created(
        app,
        "/api/v1/policies/associations",
        json!({"policy_id": p, "entity_type": kind, "entity_id": entity}),
    )
    .await;
    format!("/api/v1/policies/{p}")
}

async fn execute(app: &TestApp, agent: &str, queue: &str) -> reqwest::Response {
    app.post(
        &format!("/api/v1/agents/{agent}/execute"),
        json!({"prompt": "ship it", "worker_queue_id": queue}),
    )
    .await
}

both_backends! {
    async fn production_executions_only_inside_the_time_window(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let prod = id(&created(&app, "/api/v1/environments", json!({"name": "production"})).await);
        let dev = id(&created(&app, "/api/v1/environments", json!({"name": "development"})).await);
        let prod_q = id(&created(&app, &format!("/api/v1/environments/{prod}/worker-queues"), json!({"name": "prod-q"})).await);
        let dev_q = id(&created(&app, &format!("/api/v1/environments/{dev}/worker-queues"), json!({"name": "dev-q"})).await);
        let agent = id(&created(&app, "/api/v1/agents", json!({"name": "releaser"})).await);

        // A window that never opens: production is refused, development is not.
        let closed = PRODUCTION_HOURS.replace("end_hour := 18", "end_hour := 0");
        assert_ne!(closed, PRODUCTION_HOURS, "the example's window is set by `end_hour := 18`");
        let path = attach(&app, "production-hours", &closed, "organization", "default").await;
        let err = assert_error(execute(&app, &agent, &prod_q).await, 403, "POLICY_DENIED").await;
        let violation = err["details"]["violations"][0].as_str().unwrap().to_string();
        assert!(violation.contains("executions in production are allowed on weekdays"), "{err}");
        assert_eq!(execute(&app, &agent, &dev_q).await.status(), 201);

        // A window open all day, every day: production runs.
        let open = PRODUCTION_HOURS
            .replace("start_hour := 9", "start_hour := 0")
            .replace("end_hour := 18", "end_hour := 24")
            .replace("weekend := {\"Saturday\", \"Sunday\"}", "weekend := set()");
        let r = app.req(Method::PUT, &path).json(&json!({"policy_content": open})).send().await.unwrap();
        assert_eq!(json(r).await["version"], 2);
        assert_eq!(execute(&app, &agent, &prod_q).await.status(), 201);

        // The example as shipped decides by the clock: whatever it says now, it says it
        // consistently with the window it declares (weekdays 09:00-18:00 UTC).
        app.req(Method::PUT, &path).json(&json!({"policy_content": PRODUCTION_HOURS})).send().await.unwrap();
        let now = chrono::Utc::now();
        use chrono::{Datelike, Timelike};
        let inside = (9..18).contains(&now.hour()) && now.weekday().number_from_monday() <= 5;
        let status = execute(&app, &agent, &prod_q).await.status().as_u16();
        // The minute may turn between the two clocks; only a flip exactly at a boundary could differ.
        if now.minute() != 59 && now.minute() != 0 {
            assert_eq!(status, if inside { 201 } else { 403 });
        }
    }

    async fn a_team_restricts_the_models_of_its_agents(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let env = json(app.get("/api/v1/environments").await).await;
        let env = id(env["items"].as_array().unwrap().iter().find(|e| e["name"] == "default").unwrap());
        let queue = id(&created(&app, &format!("/api/v1/environments/{env}/worker-queues"), json!({"name": "main-q"})).await);
        let team = id(&created(&app, "/api/v1/teams", json!({"name": "frugal"})).await);
        attach(&app, "team-models", TEAM_MODELS, "team", &team).await;
        let agent = |name: &'static str, model: &'static str, team: Option<String>| {
            let app = &app;
            async move {
                let mut body = json!({"name": name, "model_id": model});
                if let Some(t) = team {
                    body["team_id"] = json!(t);
                }
                id(&created(app, "/api/v1/agents", body).await)
            }
        };
        let cheap = agent("cheap", "anthropic/claude-haiku-4-5", Some(team.clone())).await;
        let pricey = agent("pricey", "anthropic/claude-sonnet-4-5", Some(team.clone())).await;
        let outsider = agent("outsider", "anthropic/claude-sonnet-4-5", None).await;

        assert_eq!(execute(&app, &cheap, &queue).await.status(), 201);
        let err = assert_error(execute(&app, &pricey, &queue).await, 403, "POLICY_DENIED").await;
        assert_eq!(err["details"]["violations"], json!(["model anthropic/claude-sonnet-4-5 is not allowed for pricey"]));
        assert_eq!(execute(&app, &outsider, &queue).await.status(), 201);
        // Moving the agent to an allowed model lets it run.
        let r = app.req(Method::PATCH, &format!("/api/v1/agents/{pricey}")).json(&json!({"model_id": "openai/gpt-4.1-mini"})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(execute(&app, &pricey, &queue).await.status(), 201);
        // Leaving the team lifts the restriction.
        let r = app.req(Method::PATCH, &format!("/api/v1/agents/{pricey}")).json(&json!({"model_id": "anthropic/claude-sonnet-4-5"})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_error(execute(&app, &pricey, &queue).await, 403, "POLICY_DENIED").await;
        let r = app.req(Method::DELETE, &format!("/api/v1/teams/{team}/agents/{pricey}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(execute(&app, &pricey, &queue).await.status(), 201);
    }

    async fn destructive_shell_commands_are_refused_at_the_tool_call(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let env = json(app.get("/api/v1/environments").await).await;
        let env = id(env["items"].as_array().unwrap().iter().find(|e| e["name"] == "default").unwrap());
        let queue = id(&created(&app, &format!("/api/v1/environments/{env}/worker-queues"), json!({"name": "main-q"})).await);
        let agent = id(&created(&app, "/api/v1/agents", json!({"name": "operator"})).await);
        attach(&app, "destructive-commands", DESTRUCTIVE, "agent", &agent).await;
        let execution = json(execute(&app, &agent, &queue).await).await["execution_id"].as_str().unwrap().to_string();
        let key = app.key("default", Role::Worker).await;
        let worker = TestWorker::start(&app.url, &key, &queue, "host").await;
        worker.claim(20).await;

        let blocked = [
            "rm -rf /",
            "rm -rf /*",
            "sudo rm -fr / --no-preserve-root",
            "cd /tmp; rm -r -f /",
            "mkfs.ext4 /dev/sdb1",
            "mkfs -t xfs /dev/nvme0n1",
            "dd if=/dev/zero of=/dev/sda bs=1M",
            "echo ok && dd if=image.iso of=/dev/disk2",
        ];
        let allowed = ["ls -la /", "rm -rf /tmp/build", "rm -rf ./dist", "dd if=/dev/zero of=./blank.img count=1", "echo mkfs is a word", "git status"];
        for (command, expect_blocked) in blocked.iter().map(|c| (*c, true)).chain(allowed.iter().map(|c| (*c, false))) {
            let d = json(worker.post("/api/v1/policies/enforce").json(&json!({
                "action": "tool_execution",
                "execution_id": execution,
                "tool": {"name": "shell", "arguments": {"command": command}, "risk_level": "high"},
            })).send().await.unwrap()).await;
            assert_eq!(d["blocked"].as_bool(), Some(expect_blocked), "{command}: {d}");
        }
        // Other argument names of shell tools are checked too; other tools' arguments are not.
        for (tool, args, expect) in [("bash", json!({"cmd": "rm -rf /"}), true), ("python", json!({"code": "rm -rf /"}), false)] {
            let d = json(worker.post("/api/v1/policies/enforce").json(&json!({
                "execution_id": execution, "tool": {"name": tool, "arguments": args},
            })).send().await.unwrap()).await;
            assert_eq!(d["blocked"].as_bool(), Some(expect), "{tool}: {d}");
        }
        let log = json(app.get(&format!("/api/v1/policies/decisions?execution_id={execution}&allowed=false")).await).await;
        assert_eq!(log["total"], blocked.len() + 1);
    }
}
