//! Models, runtimes, agents and teams (API §3 rows), on both backends.

use crate::common::{Backend, TestApp, assert_error, json};
use cp_types::org::Role;
use reqwest::Method;
use serde_json::{Value, json};

/// A skill row for `org` (the skills API is exercised in tests/skills.rs).
async fn insert_skill(app: &TestApp, org: &str, name: &str, config: &str) -> String {
    let id = uuid::Uuid::now_v7();
    let lit = match app.backend {
        Backend::Sqlite => format!("X'{}'", id.simple()),
        Backend::Postgres => format!("'{id}'"),
    };
    app.exec_sql(&format!(
        "INSERT INTO skills (id, organization_id, name, skill_type, configuration, created_at, updated_at) \
         VALUES ({lit}, '{org}', '{name}', 'shell', '{config}', '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')"
    ))
    .await;
    id.to_string()
}

async fn send(app: &TestApp, method: Method, path: &str, body: Value) -> reqwest::Response {
    app.req(method, path).json(&body).send().await.unwrap()
}

async fn env_id(app: &TestApp, name: &str) -> String {
    let r = app.post("/api/v1/environments", json!({"name": name})).await;
    assert_eq!(r.status(), 201);
    json(r).await["id"].as_str().unwrap().to_string()
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list of ids: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

both_backends! {
    async fn a_new_org_has_a_seeded_catalog_with_one_default(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let page = json(app.get("/api/v1/models").await).await;
        assert_eq!(page["total"], 5, "{page}");
        let values: Vec<&str> = page["items"].as_array().unwrap().iter().map(|m| m["value"].as_str().unwrap()).collect();
        assert!(values.contains(&"anthropic/claude-sonnet-4-5") && values.contains(&"openai/gpt-4.1"), "{values:?}");
        let defaults: Vec<&Value> = page["items"].as_array().unwrap().iter().filter(|m| m["is_default"] == true).collect();
        assert_eq!(defaults.len(), 1);
        let local = page["items"].as_array().unwrap().iter().find(|m| m["provider"] == "ollama").unwrap();
        assert_eq!(local["base_url"], "http://127.0.0.1:11434/v1");

        let d = json(app.get("/api/v1/models/default").await).await;
        assert_eq!(d["value"], "anthropic/claude-sonnet-4-5");
        assert_eq!(d["compatible_runtimes"], json!(["default", "claude_code"]));
        // By value with its slash as is, and by id.
        assert_eq!(json(app.get("/api/v1/models/anthropic/claude-sonnet-4-5").await).await, d);
        assert_eq!(json(app.get("/api/v1/models/anthropic%2Fclaude-sonnet-4-5").await).await, d);
        assert_eq!(json(app.get(&format!("/api/v1/models/{}", d["id"].as_str().unwrap())).await).await, d);
        assert_error(app.get("/api/v1/models/anthropic/nope").await, 404, "NOT_FOUND").await;

        let providers = json(app.get("/api/v1/models/providers").await).await;
        assert_eq!(providers["items"], json!(["anthropic", "ollama", "openai"]));
        assert_eq!(providers["total"], 3);

        let f = json(app.get("/api/v1/models?runtime=claude_code").await).await;
        assert_eq!(f["total"], 2);
        let f = json(app.get("/api/v1/models?provider=OpenAI&enabled_only=true").await).await;
        assert_eq!(f["total"], 2);
        let f = json(app.get("/api/v1/models?recommended=true").await).await;
        assert_eq!(f["total"], 1);
        assert_error(app.get("/api/v1/models?runtime=nope").await, 422, "VALIDATION_ERROR").await;
        assert_error(app.get("/api/v1/models?enabled_only=maybe").await, 422, "VALIDATION_ERROR").await;
        // The Python client sends booleans as `True`/`False`.
        let f = json(app.get("/api/v1/models?enabled_only=True&recommended=False&limit=2").await).await;
        assert_eq!((f["total"].as_i64(), f["items"].as_array().unwrap().len()), (Some(4), 2), "{f}");
    }

    async fn models_crud_default_rules_and_roles(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let r = app.post("/api/v1/models", json!({
            "value": "vllm/qwen2.5-coder", "label": "Qwen coder", "provider": "vLLM",
            "base_url": "http://10.0.0.5:8000/v1", "api_key_secret": "VLLM_KEY", "context_window": 32768,
            "pricing": {"input_per_1k": 0.0, "output_per_1k": 0.0}, "capabilities": {"tool_calling": true}
        })).await;
        assert_eq!(r.status(), 201);
        let m = json(r).await;
        assert_eq!(m["provider"], "vllm");
        assert_eq!(m["model_type"], "text-generation");
        assert_eq!(m["compatible_runtimes"], json!(["default"]));
        assert_eq!(m["is_default"], false);
        let id = m["id"].as_str().unwrap().to_string();

        assert_error(app.post("/api/v1/models", json!({"value": "vllm/qwen2.5-coder", "label": "x", "provider": "vllm"})).await, 409, "CONFLICT").await;
        for bad in [
            json!({"value": "", "label": "x", "provider": "p"}),
            json!({"value": "a b", "label": "x", "provider": "p"}),
            json!({"value": "p/x", "label": "x", "provider": "p q"}),
            json!({"value": "p/x", "label": "x", "provider": "p", "base_url": "ftp://x"}),
            json!({"value": "p/x", "label": "x", "provider": "p", "api_key_secret": "not-a-name"}),
            json!({"value": "p/x", "label": "x", "provider": "p", "pricing": {"input_per_1k": -1, "output_per_1k": 0}}),
            json!({"value": "p/x", "label": "x", "provider": "p", "model_type": "chat"}),
            json!({"value": "p/x", "label": "x", "provider": "p", "compatible_runtimes": ["nope"]}),
            json!({"value": "p/x", "label": "x", "provider": "p", "context_window": 0}),
            json!({"value": 5, "label": "x", "provider": "p"}),
        ] {
            assert_error(app.post("/api/v1/models", bad.clone()).await, 422, "VALIDATION_ERROR").await;
        }

        // PUT (the Python client) and PATCH are partial; making this the default moves the flag.
        let r = send(&app, Method::PUT, &format!("/api/v1/models/{id}"), json!({"label": "Qwen", "is_default": true})).await;
        assert_eq!(r.status(), 200);
        let m = json(r).await;
        assert_eq!((m["label"].as_str(), m["is_default"].as_bool(), m["base_url"].as_str()), (Some("Qwen"), Some(true), Some("http://10.0.0.5:8000/v1")));
        let all = json(app.get("/api/v1/models?limit=100").await).await;
        assert_eq!(all["items"].as_array().unwrap().iter().filter(|m| m["is_default"] == true).count(), 1);
        assert_eq!(json(app.get("/api/v1/models/default").await).await["id"], id.as_str());
        assert_error(send(&app, Method::PATCH, &format!("/api/v1/models/{id}"), json!({"is_default": false})).await, 409, "CONFLICT").await;
        assert_error(send(&app, Method::PATCH, &format!("/api/v1/models/{id}"), json!({"enabled": false})).await, 409, "CONFLICT").await;
        assert_error(app.req(Method::DELETE, &format!("/api/v1/models/{id}")).send().await.unwrap(), 409, "CONFLICT").await;
        // Clearing a nullable field.
        let m = json(send(&app, Method::PATCH, "/api/v1/models/vllm/qwen2.5-coder", json!({"base_url": null})).await).await;
        assert_eq!(m["base_url"], Value::Null);

        // A model in use by an agent cannot be deleted; an unused one can (by value too).
        let r = app.post("/api/v1/agents", json!({"name": "a1", "model_id": "openai/gpt-4.1"})).await;
        assert_eq!(r.status(), 201);
        assert_error(app.req(Method::DELETE, "/api/v1/models/openai/gpt-4.1").send().await.unwrap(), 409, "CONFLICT").await;
        let r = app.req(Method::DELETE, "/api/v1/models/openai/gpt-4.1-mini").send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(json(r).await["deleted"], true);
        assert_error(app.get("/api/v1/models/openai/gpt-4.1-mini").await, 404, "NOT_FOUND").await;

        // Members and viewers read; only admins change the catalog.
        let member = app.key("default", Role::Member).await;
        let viewer = app.key("default", Role::Viewer).await;
        assert_eq!(app.req_as(&viewer, Method::GET, "/api/v1/models").send().await.unwrap().status(), 200);
        let r = app.req_as(&member, Method::POST, "/api/v1/models").json(&json!({"value": "x/y", "label": "y", "provider": "x"})).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;

        // Tenancy: another organization sees its own seeded catalog, never this one's rows.
        let other = app.org_with_key("acme", Role::Admin).await;
        let r = app.req_as(&other, Method::GET, &format!("/api/v1/models/{id}")).send().await.unwrap();
        assert_error(r, 404, "NOT_FOUND").await;
        let r = app.req_as(&other, Method::GET, "/api/v1/models/vllm/qwen2.5-coder").send().await.unwrap();
        assert_error(r, 404, "NOT_FOUND").await;
        let r = app.req_as(&other, Method::PATCH, &format!("/api/v1/models/{id}")).json(&json!({"label": "mine"})).send().await.unwrap();
        assert_error(r, 404, "NOT_FOUND").await;
        let r = app.req_as(&other, Method::DELETE, &format!("/api/v1/models/{id}")).send().await.unwrap();
        assert_error(r, 404, "NOT_FOUND").await;
        let theirs = json(app.req_as(&other, Method::GET, "/api/v1/models").send().await.unwrap()).await;
        assert_eq!(theirs["total"], 5);
        let theirs_default = json(app.req_as(&other, Method::GET, "/api/v1/models/default").send().await.unwrap()).await;
        assert_eq!(theirs_default["value"], "anthropic/claude-sonnet-4-5");
    }

    async fn runtimes_list_requirements_and_validate(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let page = json(app.get("/api/v1/runtimes").await).await;
        assert_eq!(page["total"], 2);
        assert_eq!(page["items"][0]["id"], "default");
        assert_eq!(page["items"][1]["id"], "claude_code");
        let req = json(app.get("/api/v1/runtimes/claude_code/requirements").await).await;
        assert_eq!(req["model_requirement"]["supported_providers"], json!(["anthropic"]));
        assert_error(app.get("/api/v1/runtimes/nope/requirements").await, 404, "NOT_FOUND").await;

        let v = json(app.post("/api/v1/runtimes/validate", json!({"runtime_type": "claude_code", "model_id": "openai/gpt-4.1"})).await).await;
        assert_eq!(v["valid"], false, "{v}");
        assert!(v["errors"][0].as_str().unwrap().contains("Claude"), "{v}");
        let v = json(app.post("/api/v1/runtimes/validate", json!({"runtime_type": "claude_code"})).await).await;
        assert_eq!((v["valid"].as_bool(), v["model"].as_str()), (Some(true), Some("anthropic/claude-sonnet-4-5")), "{v}");
        let v = json(app.post("/api/v1/runtimes/validate", json!({"runtime_type": "default", "model_id": "nope/x"})).await).await;
        assert_eq!(v["valid"], false);
        let v = json(app.post("/api/v1/runtimes/validate", json!({"runtime_type": "agno"})).await).await;
        assert_eq!(v["valid"], false);
        assert_error(app.post("/api/v1/runtimes/validate", json!({})).await, 422, "VALIDATION_ERROR").await;
    }

    async fn agents_crud_links_and_runtime_rules(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let prod = env_id(&app, "production").await;
        let stage = env_id(&app, "staging").await;
        let sh = insert_skill(&app, "default", "shell", r#"{"timeout": 30, "allowed_commands": ["ls"]}"#).await;
        let web = insert_skill(&app, "default", "web", "{}").await;

        // Minimal: the default model, the default runtime, the DEFAULT project.
        let r = app.post("/api/v1/agents", json!({"name": "min"})).await;
        assert_eq!(r.status(), 201);
        let a = json(r).await;
        assert_eq!(a["model_id"], "anthropic/claude-sonnet-4-5");
        assert_eq!(a["runtime"], "default");
        assert_eq!(a["status"], "idle");
        assert_eq!(a["projects"][0]["key"], "DEFAULT");
        assert_eq!(a["skills"], json!([]));

        let r = app.post("/api/v1/agents", json!({
            "name": "k8s-helper", "description": "Kubernetes helper", "system_prompt": "You are an SRE.",
            "model_id": "openai/gpt-4.1", "runtime": "default", "capabilities": ["kubernetes"],
            "llm_config": {"temperature": 0.2, "max_turns": 8}, "environment_ids": [stage, prod],
            "skill_ids": [sh, web], "skill_configurations": {sh.clone(): {"timeout": 60}},
            "execution_environment": {"env_vars": {"REGION": "us-east-1"}, "secrets": ["GH_TOKEN"], "working_dir": "/srv"},
            "some_unknown_field": true
        })).await;
        assert_eq!(r.status(), 201);
        let a = json(r).await;
        let id = a["id"].as_str().unwrap().to_string();
        assert_eq!(a["model_id"], "openai/gpt-4.1");
        assert_eq!(a["system_prompt"], "You are an SRE.");
        assert_eq!(a["llm_config"], json!({"temperature": 0.2, "max_turns": 8}));
        assert_eq!(ids(&a["environment_ids"]), vec![stage.clone(), prod.clone()]);
        assert_eq!(a["environments"][0]["name"], "staging");
        assert_eq!(ids(&a["skill_ids"]), vec![sh.clone(), web.clone()]);
        assert_eq!(a["skills"][0]["configuration"], json!({"timeout": 60, "allowed_commands": ["ls"]}));
        assert_eq!(a["skills"][0]["type"], "shell");
        assert_eq!(a["execution_environment"]["env_vars"]["REGION"], "us-east-1");
        assert_eq!(a["execution_environment"]["working_dir"], "/srv");
        assert_eq!(json(app.get(&format!("/api/v1/agents/{id}")).await).await, a);

        // Rules: unknown runtime, claude_code with a GPT model, unknown or disabled model.
        let e = assert_error(app.post("/api/v1/agents", json!({"name": "x", "runtime": "agno"})).await, 422, "VALIDATION_ERROR").await;
        assert_eq!(e["details"]["field"], "runtime", "{e}");
        let e = assert_error(app.post("/api/v1/agents", json!({"name": "x", "runtime": "claude_code", "model_id": "openai/gpt-4.1"})).await, 422, "VALIDATION_ERROR").await;
        assert_eq!(e["details"]["field"], "runtime", "{e}");
        let e = assert_error(app.post("/api/v1/agents", json!({"name": "x", "model_id": "nope/model"})).await, 422, "VALIDATION_ERROR").await;
        assert_eq!(e["details"]["field"], "model_id");
        send(&app, Method::PATCH, "/api/v1/models/ollama/llama3.1", json!({"enabled": false})).await;
        let e = assert_error(app.post("/api/v1/agents", json!({"name": "x", "model": "ollama/llama3.1"})).await, 422, "VALIDATION_ERROR").await;
        assert!(e["message"].as_str().unwrap().contains("disabled"), "{e}");
        let r = app.post("/api/v1/agents", json!({"name": "cc", "runtime": "claude_code"})).await;
        assert_eq!(r.status(), 201, "claude_code on the default Claude model");

        // Bad references leave nothing behind; names are unique (409, not 500).
        let ghost = uuid::Uuid::now_v7().to_string();
        let e = assert_error(app.post("/api/v1/agents", json!({"name": "x", "environment_ids": [prod, ghost]})).await, 422, "VALIDATION_ERROR").await;
        assert_eq!(e["details"]["field"], "environment_ids");
        let e = assert_error(app.post("/api/v1/agents", json!({"name": "x", "skill_ids": [ghost]})).await, 422, "VALIDATION_ERROR").await;
        assert_eq!(e["details"]["field"], "skill_ids");
        assert_error(app.post("/api/v1/agents", json!({"name": "x", "team_id": ghost})).await, 422, "VALIDATION_ERROR").await;
        assert_error(app.post("/api/v1/agents", json!({"name": "x", "environment_ids": ["not-a-uuid"]})).await, 422, "VALIDATION_ERROR").await;
        assert_error(app.post("/api/v1/agents", json!({"name": "x", "llm_config": {"temperature": 5}})).await, 422, "VALIDATION_ERROR").await;
        assert_error(app.post("/api/v1/agents", json!({"name": ""})).await, 422, "VALIDATION_ERROR").await;
        assert_error(app.post("/api/v1/agents", json!({"name": "x", "skill_configurations": {sh.clone(): {}}})).await, 422, "VALIDATION_ERROR").await;
        assert_error(app.post("/api/v1/agents", json!({"name": "k8s-helper"})).await, 409, "CONFLICT").await;
        assert_eq!(app.post("/api/v1/agents", json!({"name": "x"})).await.status(), 201, "failed creates left no row");

        // Partial update: model by value, links replaced, kept skills keep their override.
        let r = send(&app, Method::PATCH, &format!("/api/v1/agents/{id}"), json!({
            "model_id": "anthropic/claude-haiku-4-5", "environment_ids": [prod], "skill_ids": [web, sh],
            "description": null
        })).await;
        assert_eq!(r.status(), 200);
        let a = json(r).await;
        assert_eq!(a["model_id"], "anthropic/claude-haiku-4-5");
        assert_eq!(a["description"], Value::Null);
        assert_eq!(a["system_prompt"], "You are an SRE.");
        assert_eq!(ids(&a["environment_ids"]), vec![prod.clone()]);
        let shell = a["skills"].as_array().unwrap().iter().find(|s| s["id"] == sh.as_str()).unwrap();
        assert_eq!(shell["configuration"]["timeout"], 60);
        let a = json(send(&app, Method::PUT, &format!("/api/v1/agents/{id}"), json!({"skill_configurations": {sh.clone(): {"timeout": 5}}})).await).await;
        let shell = a["skills"].as_array().unwrap().iter().find(|s| s["id"] == sh.as_str()).unwrap();
        assert_eq!(shell["configuration"]["timeout"], 5);
        let r = send(&app, Method::PATCH, &format!("/api/v1/agents/{id}"), json!({"model_id": "openai/gpt-4.1", "runtime": "claude_code"})).await;
        assert_error(r, 422, "VALIDATION_ERROR").await;
        let r = send(&app, Method::PATCH, &format!("/api/v1/agents/{id}"), json!({"name": "min"})).await;
        assert_error(r, 409, "CONFLICT").await;
        let r = send(&app, Method::PATCH, &format!("/api/v1/agents/{id}"), json!({"environment_ids": [ghost]})).await;
        assert_error(r, 422, "VALIDATION_ERROR").await;
        assert_eq!(ids(&json(app.get(&format!("/api/v1/agents/{id}")).await).await["environment_ids"]), vec![prod.clone()], "a failed update changes nothing");

        // Filters.
        let page = json(app.get(&format!("/api/v1/agents?environment_id={prod}")).await).await;
        assert_eq!(page["total"], 1);
        let page = json(app.get("/api/v1/agents?status_filter=idle&limit=2").await).await;
        assert_eq!((page["total"].as_i64(), page["items"].as_array().unwrap().len()), (Some(4), 2));
        assert_error(app.get("/api/v1/agents?status_filter=sleepy").await, 422, "VALIDATION_ERROR").await;
        assert_error(app.get("/api/v1/agents/not-a-uuid").await, 400, "BAD_REQUEST").await;
        assert_error(app.get(&format!("/api/v1/agents/{ghost}")).await, 404, "NOT_FOUND").await;

        // Delete removes the agent from its projects and associations.
        let r = app.req(Method::DELETE, &format!("/api/v1/agents/{id}")).send().await.unwrap();
        assert_eq!(json(r).await, json!({"id": id, "deleted": true}));
        assert_error(app.get(&format!("/api/v1/agents/{id}")).await, 404, "NOT_FOUND").await;
        let default = json(app.get("/api/v1/projects/default").await).await;
        assert_eq!(default["agent_count"], 3);
    }

    async fn teams_membership_is_member_ids(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let a1 = json(app.post("/api/v1/agents", json!({"name": "a1", "capabilities": ["k8s"]})).await).await["id"].as_str().unwrap().to_string();
        let a2 = json(app.post("/api/v1/agents", json!({"name": "a2"})).await).await["id"].as_str().unwrap().to_string();
        let a3 = json(app.post("/api/v1/agents", json!({"name": "a3"})).await).await["id"].as_str().unwrap().to_string();
        let prod = env_id(&app, "production").await;

        let r = app.post("/api/v1/teams", json!({
            "name": "sre", "environment_ids": [prod],
            "configuration": {"member_ids": [a2, a1, a2], "instructions": ["Triage first"],
                              "llm": {"model": "openai/gpt-4.1", "temperature": 0.3}, "max_rounds": 4}
        })).await;
        assert_eq!(r.status(), 201);
        let t = json(r).await;
        let tid = t["id"].as_str().unwrap().to_string();
        assert_eq!(ids(&t["configuration"]["member_ids"]), vec![a2.clone(), a1.clone()], "order kept, repeats dropped");
        assert_eq!(t["agents"][1]["name"], "a1");
        assert_eq!(t["agents"][1]["capabilities"], json!(["k8s"]));
        assert_eq!(t["configuration"]["llm"], json!({"model": "openai/gpt-4.1", "temperature": 0.3}));
        assert_eq!(t["configuration"]["instructions"], json!(["Triage first"]));
        assert_eq!(t["model_id"], "openai/gpt-4.1");
        assert_eq!(t["status"], "active");
        assert_eq!(t["projects"][0]["key"], "DEFAULT");
        assert_eq!(ids(&t["environment_ids"]), vec![prod.clone()]);
        assert_eq!(json(app.get(&format!("/api/v1/agents/{a1}")).await).await["team_id"], tid.as_str());
        assert_eq!(json(app.get(&format!("/api/v1/agents?team_id={tid}")).await).await["total"], 2);

        // Unknown members, bad shapes, unsupported models.
        let ghost = uuid::Uuid::now_v7().to_string();
        let e = assert_error(app.post("/api/v1/teams", json!({"name": "x", "configuration": {"member_ids": [ghost]}})).await, 422, "VALIDATION_ERROR").await;
        assert_eq!(e["details"]["field"], "configuration.member_ids");
        assert_error(app.post("/api/v1/teams", json!({"name": "x", "configuration": {"member_ids": "a1"}})).await, 422, "VALIDATION_ERROR").await;
        assert_error(app.post("/api/v1/teams", json!({"name": "x", "configuration": {"max_rounds": 0}})).await, 422, "VALIDATION_ERROR").await;
        assert_error(app.post("/api/v1/teams", json!({"name": "x", "configuration": {"llm": {"model": "nope/x"}}})).await, 422, "VALIDATION_ERROR").await;
        assert_error(app.post("/api/v1/teams", json!({"name": "x", "runtime": "claude_code", "model_id": "openai/gpt-4.1"})).await, 422, "VALIDATION_ERROR").await;
        assert_error(app.post("/api/v1/teams", json!({"name": "sre"})).await, 409, "CONFLICT").await;

        // The membership endpoints edit member_ids.
        let t = json(app.req(Method::POST, &format!("/api/v1/teams/{tid}/agents/{a3}")).send().await.unwrap()).await;
        assert!(t["configuration"]["member_ids"].is_array(), "{t}");
        assert_eq!(ids(&t["configuration"]["member_ids"]), vec![a2.clone(), a1.clone(), a3.clone()]);
        let again = json(app.req(Method::POST, &format!("/api/v1/teams/{tid}/agents/{a3}")).send().await.unwrap()).await;
        assert_eq!(again["configuration"]["member_ids"], t["configuration"]["member_ids"], "adding twice changes nothing");
        let t = json(app.req(Method::DELETE, &format!("/api/v1/teams/{tid}/agents/{a2}")).send().await.unwrap()).await;
        assert_eq!(ids(&t["configuration"]["member_ids"]), vec![a1.clone(), a3.clone()]);
        assert_error(app.req(Method::DELETE, &format!("/api/v1/teams/{tid}/agents/{a2}")).send().await.unwrap(), 404, "NOT_FOUND").await;
        assert_error(app.req(Method::POST, &format!("/api/v1/teams/{tid}/agents/{ghost}")).send().await.unwrap(), 404, "NOT_FOUND").await;
        assert_error(app.req(Method::POST, &format!("/api/v1/teams/{ghost}/agents/{a1}")).send().await.unwrap(), 404, "NOT_FOUND").await;

        // A configuration without member_ids keeps the members; with them, replaces them.
        let t = json(send(&app, Method::PATCH, &format!("/api/v1/teams/{tid}"), json!({"configuration": {"instructions": "Be brief"}})).await).await;
        assert_eq!(ids(&t["configuration"]["member_ids"]), vec![a1.clone(), a3.clone()]);
        assert_eq!(t["configuration"]["instructions"], "Be brief");
        assert_eq!(t["model_id"], "openai/gpt-4.1", "the model stays when the configuration does not name one");
        let t = json(send(&app, Method::PATCH, &format!("/api/v1/teams/{tid}"), json!({"configuration": {"member_ids": [a3]}, "status": "inactive"})).await).await;
        assert_eq!(ids(&t["configuration"]["member_ids"]), vec![a3.clone()]);
        assert_eq!(t["status"], "inactive");
        assert_eq!(json(app.get(&format!("/api/v1/agents/{a1}")).await).await["team_id"], Value::Null);

        // Deleting an agent removes it from the team.
        app.req(Method::DELETE, &format!("/api/v1/agents/{a3}")).send().await.unwrap();
        let t = json(app.get(&format!("/api/v1/teams/{tid}")).await).await;
        assert_eq!(t["configuration"]["member_ids"], json!([]));
        assert_eq!(t["agents"], json!([]));

        let list = json(app.get("/api/v1/teams?status_filter=inactive").await).await;
        assert_eq!(list["total"], 1);
        let r = app.req(Method::DELETE, &format!("/api/v1/teams/{tid}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_error(app.get(&format!("/api/v1/teams/{tid}")).await, 404, "NOT_FOUND").await;
    }

    async fn agents_and_teams_never_cross_organizations(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let mine_env = env_id(&app, "production").await;
        let mine_skill = insert_skill(&app, "default", "shell", "{}").await;
        let agent = json(app.post("/api/v1/agents", json!({"name": "mine"})).await).await["id"].as_str().unwrap().to_string();
        let team = json(app.post("/api/v1/teams", json!({"name": "mine", "configuration": {"member_ids": [agent]}})).await).await["id"].as_str().unwrap().to_string();
        let custom = json(app.post("/api/v1/models", json!({"value": "private/m", "label": "m", "provider": "private"})).await).await["id"].as_str().unwrap().to_string();

        let other = app.org_with_key("acme", Role::Admin).await;
        let as_other = |m: Method, p: String| app.req_as(&other, m, &p);
        for path in [format!("/api/v1/agents/{agent}"), format!("/api/v1/teams/{team}")] {
            assert_error(as_other(Method::GET, path.clone()).send().await.unwrap(), 404, "NOT_FOUND").await;
            assert_error(as_other(Method::PATCH, path.clone()).json(&json!({"name": "stolen"})).send().await.unwrap(), 404, "NOT_FOUND").await;
            assert_error(as_other(Method::DELETE, path.clone()).send().await.unwrap(), 404, "NOT_FOUND").await;
        }
        assert_eq!(json(as_other(Method::GET, "/api/v1/agents".into()).send().await.unwrap()).await["total"], 0);
        assert_eq!(json(as_other(Method::GET, "/api/v1/teams".into()).send().await.unwrap()).await["total"], 0);
        // References to the other organization's rows are refused as unknown.
        for body in [
            json!({"name": "x", "environment_ids": [mine_env]}),
            json!({"name": "x", "skill_ids": [mine_skill]}),
            json!({"name": "x", "team_id": team}),
            json!({"name": "x", "model_id": custom}),
            json!({"name": "x", "model_id": "private/m"}),
        ] {
            let r = as_other(Method::POST, "/api/v1/agents".into()).json(&body).send().await.unwrap();
            assert_error(r, 422, "VALIDATION_ERROR").await;
        }
        let r = as_other(Method::POST, "/api/v1/teams".into()).json(&json!({"name": "x", "configuration": {"member_ids": [agent]}})).send().await.unwrap();
        assert_error(r, 422, "VALIDATION_ERROR").await;
        let theirs = json(as_other(Method::POST, "/api/v1/teams".into()).json(&json!({"name": "theirs"})).send().await.unwrap()).await["id"].as_str().unwrap().to_string();
        let r = as_other(Method::POST, format!("/api/v1/teams/{theirs}/agents/{agent}")).send().await.unwrap();
        assert_error(r, 404, "NOT_FOUND").await;
        let r = as_other(Method::GET, format!("/api/v1/agents?team_id={team}")).send().await.unwrap();
        assert_eq!(json(r).await["total"], 0);
        // Nothing changed on our side.
        let t = json(app.get(&format!("/api/v1/teams/{team}")).await).await;
        assert_eq!(ids(&t["configuration"]["member_ids"]), vec![agent.clone()]);

        // Viewers read, never write.
        let viewer = app.key("default", Role::Viewer).await;
        assert_eq!(app.req_as(&viewer, Method::GET, "/api/v1/agents").send().await.unwrap().status(), 200);
        let r = app.req_as(&viewer, Method::POST, "/api/v1/agents").json(&json!({"name": "v"})).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;
    }
}

both_backends! {
    async fn cached_lists_follow_every_write_they_embed(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let env = env_id(&app, "env-a").await;
        let agent = json(app.post("/api/v1/agents", json!({"name": "cached", "environment_ids": [env]})).await).await;
        let agent_id = agent["id"].as_str().unwrap().to_string();
        let team = json(app.post("/api/v1/teams", json!({"name": "crew"})).await).await;
        let team_id = team["id"].as_str().unwrap().to_string();
        let agents = || async { json(app.get("/api/v1/agents?limit=100").await).await["items"][0].clone() };
        let teams = || async { json(app.get("/api/v1/teams").await).await["items"][0].clone() };
        // Fill the cache, then change each embedded thing through its own endpoint.
        assert_eq!(agents().await["environments"][0]["name"], "env-a");
        assert_eq!(teams().await["agents"], json!([]));

        let r = send(&app, Method::PATCH, &format!("/api/v1/environments/{env}"), json!({"name": "env-b"})).await;
        assert_eq!(r.status(), 200);
        assert_eq!(agents().await["environments"][0]["name"], "env-b");

        let skill = json(app.post("/api/v1/skills", json!({"name": "sh", "type": "shell"})).await).await;
        let skill_id = skill["id"].as_str().unwrap().to_string();
        let r = send(&app, Method::PATCH, &format!("/api/v1/agents/{agent_id}"), json!({"skill_ids": [skill_id]})).await;
        assert_eq!(r.status(), 200);
        assert_eq!(agents().await["skills"][0]["name"], "sh");
        let r = send(&app, Method::PUT, &format!("/api/v1/skills/{skill_id}"), json!({"name": "shell-2"})).await;
        assert_eq!(r.status(), 200);
        assert_eq!(agents().await["skills"][0]["name"], "shell-2");

        let r = app.post(&format!("/api/v1/teams/{team_id}/agents/{agent_id}"), json!({})).await;
        assert!(r.status().is_success(), "{}", r.status());
        assert_eq!(agents().await["team_ids"], json!([team_id]));
        assert_eq!(teams().await["agents"][0]["id"], agent_id.as_str());

        let default = json(app.get("/api/v1/projects/default").await).await;
        let r = send(&app, Method::PATCH, &format!("/api/v1/projects/{}", default["id"].as_str().unwrap()), json!({"name": "Home"})).await;
        assert_eq!(r.status(), 200);
        assert_eq!(agents().await["projects"][0]["name"], "Home");

        // A write that bypasses every handler is seen too: the database's triggers move the version.
        app.exec_sql("UPDATE environments SET name = 'from-sql' WHERE name = 'env-b'").await;
        assert_eq!(agents().await["environments"][0]["name"], "from-sql");

        // Another organization never sees this one's cached page.
        let other = app.org_with_key("cache-other", Role::Admin).await;
        let page = json(app.req_as(&other, Method::GET, "/api/v1/agents?limit=100").send().await.unwrap()).await;
        assert_eq!(page["items"], json!([]), "{page}");

        let r = app.req(Method::DELETE, &format!("/api/v1/agents/{agent_id}")).send().await.unwrap();
        assert!(r.status().is_success());
        assert_eq!(json(app.get("/api/v1/agents?limit=100").await).await["total"], 0);
        assert_eq!(teams().await["agents"], json!([]));
    }
}
