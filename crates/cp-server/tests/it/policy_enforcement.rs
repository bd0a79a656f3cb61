//! Policy associations, resolution, evaluation and enforcement (API §4), on both backends:
//! layering and priority, both path styles, blocking vs monitoring vs off at execute, fail
//! closed, tool-call enforcement as the worker sends it, the decision log, and tenancy.

use crate::common::worker::TestWorker;
use crate::common::{Backend, TestApp, assert_error, json};
use cp_types::org::Role;
use reqwest::Method;
use serde_json::{Value, json};

async fn send(app: &TestApp, method: Method, path: &str, body: Value) -> reqwest::Response {
    app.req(method, path).json(&body).send().await.unwrap()
}

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

async fn policy(app: &TestApp, name: &str, content: &str) -> String {
    id(&created(
        app,
        "/api/v1/policies",
        json!({"name": name, "policy_content": content}),
    )
    .await)
}

async fn associate(app: &TestApp, policy: &str, kind: &str, entity: &str) -> Value {
    created(
        app,
        "/api/v1/policies/associations",
        json!({"policy_id": policy, "entity_type": kind, "entity_id": entity}),
    )
    .await
}

/// A policy denying `action` with `message`.
fn deny_action(package: &str, action: &str, message: &str) -> String {
    format!("package {package}\n\ndeny contains \"{message}\" if input.action == \"{action}\"\n")
}

async fn settings(app: &TestApp, mode: &str) {
    let r = send(
        app,
        Method::PATCH,
        "/api/v1/organization/settings",
        json!({"policy_enforcement": mode}),
    )
    .await;
    assert_eq!(r.status(), 200);
}

async fn decisions(app: &TestApp, query: &str) -> Value {
    json(app.get(&format!("/api/v1/policies/decisions?{query}")).await).await
}

async fn default_env(app: &TestApp) -> String {
    let page = json(app.get("/api/v1/environments").await).await;
    id(page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "default")
        .unwrap())
}

async fn queue_in(app: &TestApp, env: &str, name: &str) -> String {
    id(&created(
        app,
        &format!("/api/v1/environments/{env}/worker-queues"),
        json!({"name": name}),
    )
    .await)
}

both_backends! {
    async fn policies_layer_along_the_chain_and_evaluate_through_both_path_styles(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let env = id(&created(&app, "/api/v1/environments", json!({"name": "staging"})).await);
        let team = id(&created(&app, "/api/v1/teams", json!({"name": "ops"})).await);
        let agent = id(&created(&app, "/api/v1/agents", json!({"name": "deployer", "team_id": team, "environment_ids": [env]})).await);
        let loner = id(&created(&app, "/api/v1/agents", json!({"name": "loner"})).await);
        let project = id(&json(app.get("/api/v1/projects/default").await).await);

        let p_org = policy(&app, "org-no-prod", "package org\n\ndeny contains \"prod is off limits\" if input.resource == \"cluster/prod\"\n").await;
        let p_env = policy(&app, "env-audit", "package envp\n\nx := 1\n").await;
        let p_team = policy(&app, "team-no-drop", &deny_action("teamp", "drop", "ops may not drop")).await;
        let p_agent = policy(&app, "agent-no-delete", "package agentp\n\ndefault allow := true\n\nallow := false if input.action == \"delete\"\n").await;
        let _ctx = policy(&app, "project-ctx", &deny_action("ctxp", "exfiltrate", "no exfiltration")).await;
        let _unused = policy(&app, "unattached", &deny_action("unused", "read", "never applies")).await;

        let a_org = associate(&app, &p_org, "organization", "default").await;
        assert_eq!((a_org["priority"].as_i64(), a_org["policy_name"].as_str()), (Some(500), Some("org-no-prod")));
        associate(&app, &p_env, "environment", &env).await;
        let a_team = associate(&app, &p_team, "team", &team).await;
        assert_eq!(a_team["priority"], 200);
        let a_agent = associate(&app, &p_agent, "agent", &agent).await;
        assert_eq!(a_agent["priority"], 100);
        // A context names a policy by name; the project is in every agent's chain.
        let r = send(&app, Method::PUT, &format!("/api/v1/context/project/{project}"), json!({"policy_ids": ["project-ctx", "no-such-policy"]})).await;
        assert_eq!(r.status(), 200);

        let resolved = json(app.get(&format!("/api/v1/policies/resolved/agent/{agent}")).await).await;
        let rows = resolved["items"].as_array().unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r["policy_name"].as_str().unwrap()).collect();
        assert_eq!(names, ["org-no-prod", "project-ctx", "env-audit", "team-no-drop", "agent-no-delete"], "{resolved}");
        assert_eq!(resolved["total"], 5);
        let sources: Vec<(&str, &str)> = rows.iter().map(|r| (r["source"].as_str().unwrap(), r["source_type"].as_str().unwrap())).collect();
        assert_eq!(sources, [("association", "organization"), ("context", "project"), ("association", "environment"), ("association", "team"), ("association", "agent")]);
        assert_eq!(rows[1]["source_id"], project.as_str());
        assert_eq!(rows[4]["association_id"], a_agent["id"]);
        // The agent outside the team and environment gets the org's and the project's only.
        let other = json(app.get(&format!("/api/v1/policies/resolved/agent/{loner}")).await).await;
        assert_eq!(other["total"], 2, "{other}");
        let team_view = json(app.get(&format!("/api/v1/policies/resolved/team/{team}")).await).await;
        assert_eq!(team_view["total"], 3, "{team_view}");

        // Priority decides the order; raising the agent's association puts it first.
        let apath = format!("/api/v1/policies/associations/{}", id(&a_agent));
        let r = send(&app, Method::PATCH, &apath, json!({"priority": 900})).await;
        assert_eq!(json(r).await["priority"], 900);
        let resolved = json(app.get(&format!("/api/v1/policies/resolved/agent/{agent}?limit=1")).await).await;
        assert_eq!((resolved["items"][0]["policy_name"].as_str(), resolved["total"].as_i64()), (Some("agent-no-delete"), Some(5)));

        // Evaluate, path style: input_data is the input.
        let path = format!("/api/v1/policies/evaluate/agent/{agent}");
        let v = json(app.post(&path, json!({"input_data": {"action": "read", "resource": "cluster/prod"}})).await).await;
        assert_eq!((v["allowed"].as_bool(), v["policies_evaluated"].as_u64()), (Some(false), Some(5)), "{v}");
        assert_eq!(v["violations"], json!(["prod is off limits"]));
        assert_eq!(v["policy_results"][&p_org]["decision"], "deny");
        assert_eq!(v["policy_results"][&p_agent]["decision"], "permit");
        assert!(v.get("authorized").is_none());
        let v = json(app.post(&path, json!({"input_data": {"action": "read", "resource": "cluster/dev"}})).await).await;
        assert_eq!(v["allowed"], true, "{v}");
        // The short path of the Python client infers the entity.
        let v = json(app.post("/api/v1/policies/evaluate", json!({"entity_id": agent, "action": "delete"})).await).await;
        assert_eq!((v["allowed"].as_bool(), v["entity_type"].as_str()), (Some(false), Some("agent")), "{v}");
        assert_eq!(v["policy_results"][&p_agent]["allow"], false);
        let v = json(app.post("/api/v1/policies/evaluate", json!({"entity_id": team, "action": "drop"})).await).await;
        assert_eq!((v["allowed"].as_bool(), v["entity_type"].as_str()), (Some(false), Some("team")), "{v}");
        let v = json(app.post("/api/v1/policies/evaluate", json!({"entity_id": env, "action": "exfiltrate"})).await).await;
        assert_eq!((v["allowed"].as_bool(), v["entity_type"].as_str(), v["policies_evaluated"].as_u64()), (Some(true), Some("environment"), Some(2)), "{v}");
        // Authorization, both styles.
        let v = json(app.post(&format!("/api/v1/policies/check-authorization/agent/{agent}"), json!({"action": "exfiltrate", "resource": {"bucket": "x"}, "context": {"ticket": 7}})).await).await;
        assert_eq!((v["authorized"].as_bool(), v["allowed"].as_bool()), (Some(false), Some(false)), "{v}");
        assert_eq!(v["violations"], json!(["no exfiltration"]));
        let v = json(app.post("/api/v1/policies/authorize", json!({"entity_id": agent, "resource": "cluster/dev", "action": "read"})).await).await;
        assert_eq!(v["authorized"], true, "{v}");

        // Disabled associations and disabled policies stop applying.
        send(&app, Method::PATCH, &apath, json!({"enabled": false})).await;
        send(&app, Method::PATCH, &format!("/api/v1/policies/{p_org}"), json!({"enabled": false})).await;
        let resolved = json(app.get(&format!("/api/v1/policies/resolved/agent/{agent}")).await).await;
        assert_eq!(resolved["total"], 3, "{resolved}");
        let v = json(app.post("/api/v1/policies/evaluate", json!({"entity_id": agent, "action": "delete", "resource": "cluster/prod"})).await).await;
        assert_eq!(v["allowed"], true, "{v}");

        // Association rules: bad fields, unknown references, duplicates.
        let bad = [
            json!({"policy_id": p_env, "entity_type": "galaxy", "entity_id": agent}),
            json!({"policy_id": p_env, "entity_type": "agent", "entity_id": "not-a-uuid"}),
            json!({"policy_id": p_env, "entity_type": "agent", "entity_id": uuid::Uuid::now_v7()}),
            json!({"policy_id": uuid::Uuid::now_v7(), "entity_type": "agent", "entity_id": agent}),
            json!({"policy_id": p_env, "entity_type": "organization", "entity_id": "someone-else"}),
            json!({"policy_id": p_env, "entity_type": "agent", "entity_id": agent, "priority": "high"}),
            json!({"policy_id": "nope", "entity_type": "agent", "entity_id": agent}),
        ];
        for body in bad {
            assert_error(app.post("/api/v1/policies/associations", body.clone()).await, 422, "VALIDATION_ERROR").await;
        }
        assert_error(app.post("/api/v1/policies/associations", json!({"policy_id": p_team, "entity_type": "team", "entity_id": team})).await, 409, "CONFLICT").await;
        let listed = json(app.get(&format!("/api/v1/policies/associations?entity_type=team&entity_id={team}")).await).await;
        assert_eq!(listed["total"], 1);
        assert_eq!(json(app.get(&format!("/api/v1/policies/associations?policy_id={p_org}")).await).await["total"], 1);
        assert_eq!(json(app.get("/api/v1/policies/associations?enabled=false").await).await["total"], 1);
        assert_eq!(json(app.get("/api/v1/policies/associations").await).await["total"], 4);
        assert_error(app.get(&format!("/api/v1/policies/resolved/agent/{}", uuid::Uuid::now_v7())).await, 404, "NOT_FOUND").await;
        assert_error(app.get("/api/v1/policies/resolved/agent/xyz").await, 400, "BAD_REQUEST").await;
        assert_error(app.post("/api/v1/policies/evaluate", json!({"entity_id": uuid::Uuid::now_v7(), "action": "x"})).await, 404, "NOT_FOUND").await;
        assert_error(app.post(&path, json!({"input_data": "not an object"})).await, 422, "VALIDATION_ERROR").await;
        assert_error(app.post("/api/v1/policies/authorize", json!({"entity_id": agent})).await, 422, "VALIDATION_ERROR").await;
        // Viewers read; they do not POST, questions included.
        let viewer = app.key("default", Role::Viewer).await;
        assert_eq!(app.req_as(&viewer, Method::GET, &format!("/api/v1/policies/resolved/agent/{agent}")).send().await.unwrap().status(), 200);
        let r = app.req_as(&viewer, Method::POST, "/api/v1/policies/evaluate").json(&json!({"entity_id": agent, "action": "read"})).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;

        // Tenancy: another organization sees, evaluates and reaches none of it.
        let stranger = app.org_with_key("policy-stranger", Role::Admin).await;
        let get = |path: String| app.req_as(&stranger, Method::GET, &path).send();
        assert_error(get(apath.clone()).await.unwrap(), 404, "NOT_FOUND").await;
        assert_error(get(format!("/api/v1/policies/resolved/agent/{agent}")).await.unwrap(), 404, "NOT_FOUND").await;
        assert_eq!(json(get("/api/v1/policies/associations".into()).await.unwrap()).await["total"], 0);
        let r = app.req_as(&stranger, Method::POST, "/api/v1/policies/authorize").json(&json!({"entity_id": agent, "action": "read"})).send().await.unwrap();
        assert_error(r, 404, "NOT_FOUND").await;
        // Nor can it attach its policy to our agent, or ours to its org.
        let theirs = app.req_as(&stranger, Method::POST, "/api/v1/policies").json(&json!({"name": "x", "policy_content": "package x\n"})).send().await.unwrap();
        let theirs = id(&json(theirs).await);
        let r = app.post("/api/v1/policies/associations", json!({"policy_id": theirs, "entity_type": "agent", "entity_id": agent})).await;
        assert_error(r, 422, "VALIDATION_ERROR").await;
        let r = app.req_as(&stranger, Method::POST, "/api/v1/policies/associations").json(&json!({"policy_id": p_team, "entity_type": "organization", "entity_id": "policy-stranger"})).send().await.unwrap();
        assert_error(r, 422, "VALIDATION_ERROR").await;

        // Deleting the association, then the entity, cleans up.
        let r = app.req(Method::DELETE, &format!("/api/v1/policies/associations/{}", id(&a_team))).send().await.unwrap();
        assert_eq!(json(r).await["deleted"], true);
        app.req(Method::DELETE, &format!("/api/v1/agents/{agent}")).send().await.unwrap();
        assert_eq!(json(app.get("/api/v1/policies/associations").await).await["total"], 2);
    }

    async fn execute_is_enforced_per_the_org_mode_and_every_decision_is_logged(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let env = default_env(&app).await;
        let queue = queue_in(&app, &env, "main").await;
        let agent = id(&created(&app, "/api/v1/agents", json!({"name": "runner"})).await);
        let plain = id(&created(&app, "/api/v1/agents", json!({"name": "plain"})).await);
        let guard = policy(&app, "no-secrets-talk", r#"package guard

deny contains msg if {
    input.action == "execute"
    contains(input.execution.prompt, "forbidden")
    msg := sprintf("%s may not be asked that", [input.entity.name])
}
"#).await;
        associate(&app, &guard, "agent", &agent).await;
        let execute = |agent: String, prompt: &'static str| {
            app.req(Method::POST, &format!("/api/v1/agents/{agent}/execute"))
                .json(&json!({"prompt": prompt, "worker_queue_id": queue}))
                .send()
        };
        let count = || async { json(app.get("/api/v1/executions").await).await["total"].as_i64().unwrap() };

        // Blocking (the default): 403 with the violations, nothing stored, the decision logged.
        let err = assert_error(execute(agent.clone(), "say the forbidden word").await.unwrap(), 403, "POLICY_DENIED").await;
        assert_eq!(err["details"]["violations"], json!(["runner may not be asked that"]), "{err}");
        assert_eq!(err["details"]["policies_evaluated"], 1);
        assert_eq!(count().await, 0);
        let r = execute(agent.clone(), "say hello").await.unwrap();
        assert_eq!(r.status(), 201);
        // An agent without policies is not decided (and not logged).
        assert_eq!(execute(plain.clone(), "forbidden is fine here").await.unwrap().status(), 201);
        assert_eq!(count().await, 2);
        let log = decisions(&app, &format!("entity_id={agent}")).await;
        assert_eq!(log["total"], 2, "{log}");
        let denied = &log["items"][1];
        assert_eq!((denied["action"].as_str(), denied["allowed"].as_bool(), denied["blocked"].as_bool(), denied["mode"].as_str()),
            (Some("execute"), Some(false), Some(true), Some("blocking")), "{denied}");
        assert_eq!(denied["id"], err["details"]["decision_id"]);
        assert_eq!(denied["policy_ids"], json!([guard]));
        assert_eq!(denied["input_digest"].as_str().unwrap().len(), 64);
        assert!(denied["latency_us"].as_i64().unwrap() >= 0);
        assert_eq!(log["items"][0]["allowed"], true);
        assert_eq!(decisions(&app, "allowed=false").await["total"], 1);
        assert_eq!(decisions(&app, &format!("entity_id={plain}")).await["total"], 0);

        // Monitoring: allowed, but recorded as a denial that was not blocked.
        settings(&app, "monitoring").await;
        assert_eq!(execute(agent.clone(), "the forbidden word again").await.unwrap().status(), 201);
        let log = decisions(&app, "allowed=false").await;
        assert_eq!(log["total"], 2);
        assert_eq!((log["items"][0]["blocked"].as_bool(), log["items"][0]["mode"].as_str()), (Some(false), Some("monitoring")));

        // Off: nothing is evaluated or recorded.
        settings(&app, "off").await;
        assert_eq!(execute(agent.clone(), "forbidden, off the record").await.unwrap().status(), 201);
        assert_eq!(decisions(&app, "").await["total"], 3);
        assert_eq!(count().await, 4);

        // Fail closed: a policy that errors denies in blocking mode and is recorded with the error;
        // monitoring lets the run through.
        settings(&app, "blocking").await;
        let broken = policy(&app, "broken", "package broken\n\nallow := \"yes\"\n").await;
        associate(&app, &broken, "agent", &plain).await;
        let err = assert_error(execute(plain.clone(), "hi").await.unwrap(), 403, "POLICY_DENIED").await;
        assert!(err["message"].as_str().unwrap().contains("broken"), "{err}");
        let log = decisions(&app, &format!("entity_id={plain}")).await;
        assert!(log["items"][0]["error"].as_str().unwrap().contains("allow"), "{log}");
        settings(&app, "monitoring").await;
        assert_eq!(execute(plain.clone(), "hi").await.unwrap().status(), 201);

        // Filters: since, action.
        let since = "2000-01-01T00:00:00Z";
        assert_eq!(decisions(&app, &format!("since={since}&action=execute")).await["total"], 5);
        assert_eq!(decisions(&app, "since=2999-01-01T00:00:00Z").await["total"], 0);
        assert_eq!(decisions(&app, "action=tool_execution").await["total"], 0);
        assert_error(app.get("/api/v1/policies/decisions?since=yesterday").await, 422, "VALIDATION_ERROR").await;

        // A follow-up message is decided like an execute, with the message as the prompt.
        settings(&app, "blocking").await;
        let worker_key = app.key("default", Role::Worker).await;
        let worker = TestWorker::start(&app.url, &worker_key, &queue, "msg-host").await;
        let r = execute(agent.clone(), "a fine question").await.unwrap();
        let id = json(r).await["execution_id"].as_str().unwrap().to_string();
        loop {
            let claim = worker.claim(20).await;
            let done = worker.complete(&claim, "answered").await;
            assert_eq!(done.status(), 200);
            if claim["execution"]["id"] == id.as_str() {
                break;
            }
        }
        let msg = |text: &'static str| app.req(Method::POST, &format!("/api/v1/executions/{id}/message")).json(&json!({"message": text})).send();
        assert_error(msg("now the forbidden part").await.unwrap(), 403, "POLICY_DENIED").await;
        assert_eq!(json(app.get(&format!("/api/v1/executions/{id}")).await).await["status"], "completed");
        assert_eq!(msg("and a fine follow-up").await.unwrap().status(), 200);

        // Another organization's log is its own.
        let stranger = app.org_with_key("decisions-stranger", Role::Admin).await;
        let r = app.req_as(&stranger, Method::GET, "/api/v1/policies/decisions").send().await.unwrap();
        assert_eq!(json(r).await["total"], 0);
    }

    async fn tool_calls_are_decided_as_the_worker_sends_them(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let env = default_env(&app).await;
        let queue = queue_in(&app, &env, "tools").await;
        let agent = id(&created(&app, "/api/v1/agents", json!({"name": "shell-user"})).await);
        let destructive = include_str!("../../../../examples/policies/destructive_commands.rego");
        let p = policy(&app, "no-destructive-commands", destructive).await;
        associate(&app, &p, "organization", "default").await;
        let execution = json(app.post(&format!("/api/v1/agents/{agent}/execute"), json!({"prompt": "clean up", "worker_queue_id": queue})).await).await;
        let execution_id = execution["execution_id"].as_str().unwrap().to_string();

        let worker_key = app.key("default", Role::Worker).await;
        let worker = TestWorker::start(&app.url, &worker_key, &queue, "host").await;
        let claim = worker.claim(20).await;
        assert_eq!(claim["execution"]["id"], execution_id.as_str());

        let enforce = |key: &str, body: Value| {
            app.req_as(key, Method::POST, "/api/v1/policies/enforce").json(&body).send()
        };
        let call = |command: &str| json!({
            "action": "tool_execution",
            "execution_id": execution_id,
            "tool": {"name": "shell", "arguments": {"command": command}, "risk_level": "critical", "source": "builtin"},
        });
        let r = enforce(&worker_key, call("sudo rm -rf / --no-preserve-root")).await.unwrap();
        assert_eq!(r.status(), 200);
        let d = json(r).await;
        assert_eq!((d["allowed"].as_bool(), d["blocked"].as_bool(), d["tool_name"].as_str()), (Some(false), Some(true), Some("shell")), "{d}");
        assert_eq!(d["violations"], json!(["destructive command refused: sudo rm -rf / --no-preserve-root"]));
        assert_eq!(d["execution_id"], execution_id.as_str());
        let d = json(enforce(&worker_key, call("ls -la /tmp && rm -rf /tmp/build")).await.unwrap()).await;
        assert_eq!((d["allowed"].as_bool(), d["blocked"].as_bool()), (Some(true), Some(false)), "{d}");
        // Without `action` the call is a tool execution; a member may ask too.
        let member = app.key("default", Role::Member).await;
        let mut body = call("dd if=/dev/zero of=/dev/sda bs=1M");
        body.as_object_mut().unwrap().remove("action");
        let d = json(enforce(&member, body).await.unwrap()).await;
        assert_eq!(d["blocked"], true, "{d}");

        // In monitoring mode the worker is told not to block, and the denial is recorded.
        settings(&app, "monitoring").await;
        let d = json(enforce(&worker_key, call("mkfs.ext4 /dev/sdb1")).await.unwrap()).await;
        assert_eq!((d["allowed"].as_bool(), d["blocked"].as_bool(), d["mode"].as_str()), (Some(false), Some(false), Some("monitoring")), "{d}");
        let log = decisions(&app, &format!("execution_id={execution_id}")).await;
        assert_eq!(log["total"], 4, "{log}");
        assert_eq!(decisions(&app, "action=tool_execution&allowed=false").await["total"], 3);

        // Bad input, someone else's run, and runs that ended.
        assert_error(enforce(&worker_key, json!({"execution_id": execution_id})).await.unwrap(), 422, "VALIDATION_ERROR").await;
        assert_error(enforce(&worker_key, json!({"execution_id": "x", "tool": {"name": "shell"}})).await.unwrap(), 422, "VALIDATION_ERROR").await;
        assert_error(enforce(&worker_key, json!({"execution_id": uuid::Uuid::now_v7(), "tool": {"name": "shell"}})).await.unwrap(), 404, "NOT_FOUND").await;
        let viewer = app.key("default", Role::Viewer).await;
        assert_error(enforce(&viewer, call("ls")).await.unwrap(), 403, "FORBIDDEN").await;
        let other_worker = app.key("default", Role::Worker).await;
        assert_error(enforce(&other_worker, call("ls")).await.unwrap(), 403, "FORBIDDEN").await;
        let stranger = app.org_with_key("tools-stranger", Role::Worker).await;
        assert_error(enforce(&stranger, call("ls")).await.unwrap(), 404, "NOT_FOUND").await;
        let r = worker.complete(&claim, "done").await;
        assert_eq!(r.status(), 200);
        assert_error(enforce(&worker_key, call("ls")).await.unwrap(), 409, "CONFLICT").await;
    }
}

both_backends! {
    async fn a_policy_that_blows_up_on_an_input_denies_and_the_server_lives(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let env = default_env(&app).await;
        let queue = queue_in(&app, &env, "main").await;
        let agent = id(&created(&app, "/api/v1/agents", json!({"name": "counter"})).await);
        // Fine when written (the input is empty then); a bomb for a prompt of a huge number.
        let bomb = "package bomb\n\ndeny contains \"odd\" if {\n    n := to_number(input.execution.prompt)\n    count(numbers.range(1, n)) == 7\n}\n";
        let p = policy(&app, "counts", bomb).await;
        associate(&app, &p, "agent", &agent).await;
        let execute = |prompt: &'static str| {
            app.req(Method::POST, &format!("/api/v1/agents/{agent}/execute"))
                .json(&json!({"prompt": prompt, "worker_queue_id": queue}))
                .send()
        };
        let stranger = app.org_with_key("bomb-victim", Role::Admin).await;
        for _ in 0..2 {
            // Blocking: the decision carries the error naming the limit and denies.
            let err = assert_error(execute("100000000000").await.unwrap(), 403, "POLICY_DENIED").await;
            assert!(err["message"].as_str().unwrap().contains("memory limit"), "{err}");
            let log = decisions(&app, &format!("entity_id={agent}&allowed=false")).await;
            assert!(log["items"][0]["error"].as_str().unwrap().contains("memory limit"), "{log}");
            // The server lives: health, this org's next decision and another tenant's request.
            assert_eq!(app.anon(Method::GET, "/api/health").send().await.unwrap().status(), 200);
            assert_eq!(execute("3").await.unwrap().status(), 201);
            assert_error(execute("7").await.unwrap(), 403, "POLICY_DENIED").await;
            let r = app.req_as(&stranger, Method::GET, "/api/v1/policies").send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
        // A question gets the error per policy rather than an answer.
        let v = json(app.post(&format!("/api/v1/policies/evaluate/agent/{agent}"), json!({"input_data": {"execution": {"prompt": "100000000000"}}})).await).await;
        assert_eq!(v["allowed"], false, "{v}");
        assert!(v["policy_results"][&p]["error"].as_str().unwrap().contains("memory limit"), "{v}");
        // Monitoring lets the run through and still records the error.
        settings(&app, "monitoring").await;
        assert_eq!(execute("100000000000").await.unwrap().status(), 201);
    }
}

/// A connection of the test's own that keeps the server from writing `policy_decisions`
/// until `release`.
enum DecisionsHeld {
    Postgres(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

impl DecisionsHeld {
    async fn take(app: &TestApp) -> DecisionsHeld {
        use sqlx::Connection;
        match app.backend {
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
                sqlx::raw_sql("BEGIN; LOCK TABLE policy_decisions IN SHARE ROW EXCLUSIVE MODE")
                    .execute(&mut c)
                    .await
                    .unwrap();
                DecisionsHeld::Postgres(c)
            }
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&app.db.url).await.unwrap();
                sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut c).await.unwrap();
                DecisionsHeld::Sqlite(c)
            }
        }
    }

    async fn release(&mut self) {
        match self {
            DecisionsHeld::Postgres(c) => sqlx::raw_sql("ROLLBACK").execute(c).await.map(drop),
            DecisionsHeld::Sqlite(c) => sqlx::raw_sql("ROLLBACK").execute(c).await.map(drop),
        }
        .unwrap();
    }

    /// Whether decision `id` is in the table, read past the server.
    async fn stored(&mut self, id: uuid::Uuid) -> bool {
        let sql = "SELECT COUNT(*) FROM policy_decisions WHERE id = $1";
        let n: i64 = match self {
            DecisionsHeld::Postgres(c) => sqlx::query_scalar(sql).bind(id).fetch_one(c).await,
            DecisionsHeld::Sqlite(c) => sqlx::query_scalar(sql).bind(id).fetch_one(c).await,
        }
        .unwrap();
        n == 1
    }
}

both_backends! {
    async fn a_denial_is_stored_before_it_is_answered(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let queue = queue_in(&app, &default_env(&app).await, "audited").await;
        let agent = id(&created(&app, "/api/v1/agents", json!({"name": "audited"})).await);
        let guard = policy(&app, "no-runs", &deny_action("audited", "execute", "not this agent")).await;
        associate(&app, &guard, "agent", &agent).await;
        let mut held = DecisionsHeld::take(&app).await;
        let request = app
            .req(Method::POST, &format!("/api/v1/agents/{agent}/execute"))
            .json(&json!({"prompt": "go", "worker_queue_id": queue}));
        let mut answer = tokio::spawn(request.send());
        // The denial cannot be stored while the table is held, so its 403 must not leave.
        let early = tokio::time::timeout(std::time::Duration::from_secs(1), &mut answer).await;
        assert!(early.is_err(), "answered before the denial was stored: {early:?}");
        held.release().await;
        let err = assert_error(answer.await.unwrap().unwrap(), 403, "POLICY_DENIED").await;
        let decision: uuid::Uuid = err["details"]["decision_id"].as_str().unwrap().parse().unwrap();
        assert!(held.stored(decision).await, "the answered denial {decision} is not in the database");
    }
}
