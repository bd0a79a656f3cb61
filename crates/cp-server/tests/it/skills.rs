//! Skills (API §3 Skill row, §10): CRUD and per-type validation, definitions, types, templates,
//! both validate endpoints, associations, inference, resolution and tenancy, on both backends.

use crate::common::{Backend, TestApp, assert_error, json};
use cp_types::org::Role;
use reqwest::{Method, Response};
use serde_json::{Value, json};
use sqlx::Connection;
use uuid::Uuid;

async fn agent(app: &TestApp, key: &str, name: &str) -> Uuid {
    created_id(send(app, key, Method::POST, "/api/v1/agents", Some(json!({"name": name}))).await).await
}

async fn team(app: &TestApp, key: &str, name: &str) -> Uuid {
    created_id(send(app, key, Method::POST, "/api/v1/teams", Some(json!({"name": name}))).await).await
}

async fn created_id(r: Response) -> Uuid {
    let status = r.status();
    let body = json(r).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().parse().unwrap()
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match app.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&app.db.url).await.expect("connect");
            sqlx::query_scalar(sql).fetch_one(&mut c).await.expect("count")
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&app.db.url).await.expect("connect");
            sqlx::query_scalar(sql).fetch_one(&mut c).await.expect("count")
        }
    }
}

async fn send(app: &TestApp, key: &str, method: Method, path: &str, body: Option<Value>) -> Response {
    let mut r = app.req_as(key, method, path);
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.expect("send")
}

async fn environment(app: &TestApp, key: &str, name: &str) -> Uuid {
    let r = send(
        app,
        key,
        Method::POST,
        "/api/v1/environments",
        Some(json!({"name": name})),
    )
    .await;
    assert_eq!(r.status(), 201);
    json(r).await["id"].as_str().unwrap().parse().unwrap()
}

async fn create_skill(app: &TestApp, key: &str, body: Value) -> Value {
    let r = send(app, key, Method::POST, "/api/v1/skills", Some(body)).await;
    assert_eq!(r.status(), 201);
    json(r).await
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// Asserts a 422 whose issues name exactly `fields` (in any order).
async fn assert_invalid(resp: Response, fields: &[&str]) {
    let err = assert_error(resp, 422, "VALIDATION_ERROR").await;
    let details = &err["details"];
    let mut got: Vec<String> = match details["errors"].as_array() {
        Some(list) => list.iter().map(|e| e["field"].as_str().unwrap().to_string()).collect(),
        None => vec![details["field"].as_str().unwrap_or_default().to_string()],
    };
    got.sort();
    let mut want: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "{err}");
}

both_backends! {
    async fn skills_crud_filters_and_uniqueness(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let r = app.post("/api/v1/skills", json!({
            "name": "ro-shell", "type": "shell", "description": "read only",
            "configuration": {"allowed_commands": ["ls", "cat"], "timeout": 45}
        })).await;
        assert_eq!(r.status(), 201);
        let s = json(r).await;
        for (field, value) in [
            ("organization_id", json!("default")), ("name", json!("ro-shell")), ("type", json!("shell")),
            ("description", json!("read only")), ("icon", json!("Terminal")), ("enabled", json!(true)),
            ("configuration", json!({"allowed_commands": ["ls", "cat"], "blocked_commands": [], "shell_args": [], "timeout": 45})),
        ] {
            assert_eq!(s[field], value, "{field}");
        }
        let id = id_of(&s);
        assert_eq!(Uuid::parse_str(&id).unwrap().get_version_num(), 7);
        assert!(s["created_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(json(app.get(&format!("/api/v1/skills/{id}")).await).await, s);

        // Name unique per organization.
        let err = assert_error(app.post("/api/v1/skills", json!({"name": "ro-shell", "type": "http"})).await, 409, "CONFLICT").await;
        assert!(err["message"].as_str().unwrap().contains("name"), "{err}");

        let fs = create_skill(&app, &app.admin_key, json!({"name": "files", "type": "file_system", "icon": "Folder", "enabled": false})).await;
        assert_eq!(fs["icon"], "Folder");
        assert_eq!(fs["configuration"], json!({
            "enable_read_file": true, "enable_save_file": true, "enable_list_files": true, "enable_search_files": true
        }));
        // The client's `skill_type` spelling is accepted too.
        create_skill(&app, &app.admin_key, json!({"name": "gh", "skill_type": "http", "configuration": {"allowed_hosts": ["api.github.com"]}})).await;

        let all = json(app.get("/api/v1/skills").await).await;
        assert_eq!(all["total"], 3);
        assert_eq!(all["items"][0]["name"], "gh", "newest first");
        let shells = json(app.get("/api/v1/skills?type=shell").await).await;
        assert_eq!((shells["total"].as_i64(), shells["items"][0]["id"].as_str()), (Some(1), Some(id.as_str())));
        let disabled = json(app.get("/api/v1/skills?enabled=false").await).await;
        assert_eq!(disabled["total"], 1);
        assert_eq!(disabled["items"][0]["name"], "files");
        assert_eq!(json(app.get("/api/v1/skills?enabled=true&type=http").await).await["total"], 1);
        let page = json(app.get("/api/v1/skills?limit=1&skip=1").await).await;
        assert_eq!((page["total"].as_i64(), page["items"].as_array().unwrap().len()), (Some(3), 1));
        assert_invalid(app.get("/api/v1/skills?type=laser").await, &["query"]).await;
        assert_invalid(app.get("/api/v1/skills?enabled=maybe").await, &["query"]).await;

        // PATCH and PUT are partial; configuration is replaced whole and re-validated.
        let r = app.req(Method::PATCH, &format!("/api/v1/skills/{id}"))
            .json(&json!({"description": null, "enabled": false})).send().await.unwrap();
        let p = json(r).await;
        assert_eq!((p["description"].clone(), p["enabled"].clone(), p["name"].clone()), (Value::Null, json!(false), json!("ro-shell")));
        assert_eq!(p["configuration"]["allowed_commands"], json!(["ls", "cat"]));
        let r = app.req(Method::PUT, &format!("/api/v1/skills/{id}"))
            .json(&json!({"name": "shell-2", "configuration": {"blocked_commands": ["rm"]}})).send().await.unwrap();
        let p = json(r).await;
        assert_eq!(p["name"], "shell-2");
        assert_eq!(p["configuration"], json!({"allowed_commands": [], "blocked_commands": ["rm"], "shell_args": [], "timeout": 30}));
        let r = app.req(Method::PUT, &format!("/api/v1/skills/{id}"))
            .json(&json!({"configuration": {"timeout": 601}})).send().await.unwrap();
        assert_invalid(r, &["configuration.timeout"]).await;
        let r = app.req(Method::PATCH, &format!("/api/v1/skills/{id}")).json(&json!({"name": "files"})).send().await.unwrap();
        assert_error(r, 409, "CONFLICT").await;
        let r = app.req(Method::PATCH, &format!("/api/v1/skills/{id}")).json(&json!({"name": " "})).send().await.unwrap();
        assert_invalid(r, &["name"]).await;
        let r = app.req(Method::PATCH, &format!("/api/v1/skills/{}", Uuid::now_v7())).json(&json!({})).send().await.unwrap();
        assert_error(r, 404, "NOT_FOUND").await;
        let unchanged = json(app.get(&format!("/api/v1/skills/{id}")).await).await;
        assert_eq!(unchanged["configuration"]["blocked_commands"], json!(["rm"]));

        // Delete.
        let r = app.req(Method::DELETE, &format!("/api/v1/skills/{id}")).send().await.unwrap();
        assert_eq!(json(r).await, json!({"id": id, "deleted": true}));
        assert_error(app.get(&format!("/api/v1/skills/{id}")).await, 404, "NOT_FOUND").await;
        assert_error(app.req(Method::DELETE, &format!("/api/v1/skills/{id}")).send().await.unwrap(), 404, "NOT_FOUND").await;
        assert_error(app.get("/api/v1/skills/not-a-uuid").await, 400, "BAD_REQUEST").await;
    }

    async fn configuration_is_validated_per_type(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let cases: Vec<(&str, Value, Vec<&str>)> = vec![
            ("shell", json!({"timeout": 0}), vec!["configuration.timeout"]),
            ("shell", json!({"timeout": 601}), vec!["configuration.timeout"]),
            ("shell", json!({"timeout": "30"}), vec!["configuration.timeout"]),
            ("shell", json!({"allowed_commands": "ls"}), vec!["configuration.allowed_commands"]),
            ("shell", json!({"commands": ["ls"]}), vec!["configuration.commands"]),
            ("file_system", json!({"enable_read_file": "yes", "base_dir": 1}), vec!["configuration.enable_read_file", "configuration.base_dir"]),
            ("http", json!({"allowed_hosts": ["https://api.github.com/x"]}), vec!["configuration.allowed_hosts[0]"]),
            ("http", json!({"timeout": 301}), vec!["configuration.timeout"]),
            ("http", json!({"allowed_methods": ["TRACE"]}), vec!["configuration.allowed_methods[0]"]),
            ("python", json!({"allowed_imports": "os", "enable_code_execution": 1}), vec!["configuration.allowed_imports", "configuration.enable_code_execution"]),
            ("docker", json!({"enable_image_management": "true"}), vec!["configuration.enable_image_management"]),
            ("workflow_executor", json!({"workflow_type": "yaml"}), vec!["configuration.workflow_type"]),
            ("workflow_executor", json!({"workflow_definition": "{not json"}), vec!["configuration.workflow_definition"]),
            ("workflow_executor", json!({"workflow_type": "python_dsl", "python_dsl_code": "x"}), vec!["configuration.workflow_type", "configuration.python_dsl_code"]),
            ("custom", json!({"custom_class": "no_colon"}), vec!["configuration.custom_class"]),
            ("mcp", json!({"type": "http"}), vec!["configuration.url"]),
            ("mcp", json!({"command": "srv", "env": {"TOKEN": 1}}), vec!["configuration.env"]),
            ("custom", json!({"custom_class": "m:C", "custom_config": {"parameters": {"type": "array"}}}), vec!["configuration.custom_config.parameters"]),
            ("custom", json!({}), vec!["configuration.custom_class"]),
            ("custom", json!({"custom_class": "pkg:Tool", "custom_config": "y"}), vec!["configuration.custom_config"]),
            ("file_generation", json!({"enable_pdf_generation": null, "extra": true}), vec!["configuration.extra"]),
            ("data_visualization", json!({"max_diagram_size": 10}), vec!["configuration.max_diagram_size"]),
            ("sleep", json!({"max_sleep_seconds": 3601}), vec!["configuration.max_sleep_seconds"]),
            ("shell", json!(["ls"]), vec!["configuration"]),
        ];
        for (i, (ty, config, fields)) in cases.into_iter().enumerate() {
            let r = app.post("/api/v1/skills", json!({"name": format!("s{i}"), "type": ty, "configuration": config})).await;
            assert_invalid(r, &fields).await;
        }
        // Every issue of the body at once, other fields included.
        let r = app.post("/api/v1/skills", json!({"name": "", "type": "shell", "configuration": {"timeout": 0}})).await;
        assert_invalid(r, &["name", "configuration.timeout"]).await;
        assert_invalid(app.post("/api/v1/skills", json!({"name": "x", "type": "laser"})).await, &["type"]).await;
        assert_invalid(app.post("/api/v1/skills", json!({"type": "shell"})).await, &["name"]).await;
        assert_invalid(app.post("/api/v1/skills", json!({"name": "x"})).await, &["type"]).await;
        assert_eq!(json(app.get("/api/v1/skills").await).await["total"], 0);

        // Boundaries pass, and each type's defaults are filled in.
        let s = create_skill(&app, &app.admin_key, json!({"name": "one", "type": "shell", "configuration": {"timeout": 1}})).await;
        assert_eq!(s["configuration"]["timeout"], 1);
        let s = create_skill(&app, &app.admin_key, json!({"name": "six", "type": "shell", "configuration": {"timeout": 600}})).await;
        assert_eq!(s["configuration"]["timeout"], 600);
        let s = create_skill(&app, &app.admin_key, json!({"name": "py", "type": "python"})).await;
        assert_eq!(s["configuration"]["blocked_imports"], json!(["os", "subprocess", "sys", "socket", "shutil"]));
        let s = create_skill(&app, &app.admin_key, json!({"name": "wf", "type": "workflow_executor", "configuration": {"workflow_definition": "{\"steps\": []}"}})).await;
        assert_eq!(s["configuration"]["workflow_type"], "json");
        let s = create_skill(&app, &app.admin_key, json!({"name": "web", "type": "http", "configuration": {"allowed_hosts": ["*.example.com"], "allowed_methods": ["get"]}})).await;
        assert_eq!(s["configuration"]["allowed_methods"], json!(["GET"]));
        assert_eq!(s["icon"], "Globe");
    }

    async fn definitions_types_templates_and_validation(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let defs = json(app.get("/api/v1/skills/definitions").await).await;
        assert_eq!(defs["total"], 12);
        assert_eq!(defs["limit"], 50);
        let types: Vec<&str> = defs["items"].as_array().unwrap().iter().map(|d| d["type"].as_str().unwrap()).collect();
        for t in ["shell", "file_system", "http", "python", "docker", "workflow_executor", "custom", "knowledge"] {
            assert!(types.contains(&t), "{t}");
        }
        let shell = json(app.get("/api/v1/skills/definitions/shell").await).await;
        assert_eq!(shell["name"], "Shell");
        assert_eq!(shell["icon"], "Terminal");
        let timeout = shell["config_schema"].as_array().unwrap().iter().find(|f| f["name"] == "timeout").unwrap().clone();
        assert_eq!(timeout, json!({
            "name": "timeout", "type": "integer", "description": timeout["description"], "default": 30,
            "required": false, "min": 1, "max": 600
        }));
        assert_eq!(shell["default_configuration"]["timeout"], 30);
        let custom = json(app.get("/api/v1/skills/definitions/custom").await).await;
        assert!(custom["config_schema"].as_array().unwrap().iter().any(|f| f["name"] == "custom_class" && f["required"] == true));
        // Each type says which tools it gives the model, and which flag turns each on.
        let tools = |def: &Value| -> Vec<(String, Value)> {
            def["tools"].as_array().unwrap().iter()
                .map(|t| (t["name"].as_str().unwrap().to_string(), t["enabled_by"].clone())).collect()
        };
        assert_eq!(tools(&shell), vec![("{skill}".to_string(), Value::Null)]);
        let generation = json(app.get("/api/v1/skills/definitions/file_generation").await).await;
        assert_eq!(tools(&generation), vec![
            ("generate_json".to_string(), json!("enable_json_generation")),
            ("generate_csv".to_string(), json!("enable_csv_generation")),
            ("generate_text".to_string(), json!("enable_txt_generation")),
            ("generate_pdf".to_string(), json!("enable_pdf_generation")),
        ]);
        for (ty, tool) in [("python", "run_python"), ("data_visualization", "create_diagram"), ("sleep", "sleep"),
            ("workflow_executor", "run_workflow"), ("docker", "docker_run_container"), ("mcp", "{skill}_{tool}"),
            ("knowledge", "search_knowledge"), ("knowledge", "query_graph")] {
            let def = json(app.get(&format!("/api/v1/skills/definitions/{ty}")).await).await;
            assert!(tools(&def).iter().any(|(name, _)| name == tool), "{ty}: {def}");
        }
        assert_error(app.get("/api/v1/skills/definitions/laser").await, 404, "NOT_FOUND").await;
        let page = json(app.get("/api/v1/skills/definitions?limit=2&offset=10").await).await;
        assert_eq!((page["total"].as_i64(), page["items"].as_array().unwrap().len()), (Some(12), 2));

        // /skills/types is a route of its own, not a skill id.
        let types = json(app.get("/api/v1/skills/types").await).await;
        assert_eq!(types["total"], 12);
        assert_eq!(types["items"][0], json!({"type": "shell", "name": "Shell", "description": shell["description"]}));

        let templates = json(app.get("/api/v1/skills/templates").await).await;
        let items = templates["items"].as_array().unwrap().clone();
        assert_eq!(templates["total"].as_u64(), Some(items.len() as u64));
        let ro = items.iter().find(|t| t["id"] == "read-only-shell").unwrap();
        assert_eq!(ro["type"], "shell");
        assert!(ro["configuration"]["allowed_commands"].as_array().unwrap().contains(&json!("ls")));
        let gh = items.iter().find(|t| t["id"] == "github-api").unwrap();
        assert_eq!(gh["configuration"]["allowed_hosts"], json!(["api.github.com"]));
        assert!(items.iter().any(|t| t["id"] == "file-system-sandbox" && t["type"] == "file_system"));
        // Every template can be created as it is.
        for t in &items {
            let s = create_skill(&app, &app.admin_key, json!({
                "name": t["name"], "type": t["type"], "icon": t["icon"], "configuration": t["configuration"]
            })).await;
            assert_eq!(s["configuration"], t["configuration"], "{}", t["id"]);
        }

        // Both validate endpoints answer 200 with the normalized configuration or the issues.
        let r = app.post("/api/v1/skills/definitions/shell/validate", json!({"allowed_commands": ["ls"]})).await;
        assert_eq!(r.status(), 200);
        let v = json(r).await;
        assert_eq!(v, json!({"valid": true, "errors": [],
            "configuration": {"allowed_commands": ["ls"], "blocked_commands": [], "shell_args": [], "timeout": 30}}));
        let v = json(app.post("/api/v1/skills/definitions/shell/validate", json!({"timeout": 0, "x": 1})).await).await;
        assert_eq!(v["valid"], false);
        assert_eq!(v["configuration"], Value::Null);
        let mut fields: Vec<&str> = v["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        fields.sort();
        assert_eq!(fields, vec!["configuration.timeout", "configuration.x"]);
        let v = json(app.post("/api/v1/skills/definitions/http/validate", json!([1])).await).await;
        assert_eq!(v["valid"], false);
        assert_error(app.post("/api/v1/skills/definitions/laser/validate", json!({})).await, 404, "NOT_FOUND").await;

        let v = json(app.post("/api/v1/skills/validate", json!({"type": "docker", "configuration": {"enable_volume_management": true}})).await).await;
        assert_eq!(v["valid"], true);
        assert_eq!(v["configuration"], json!({"enable_container_management": true, "enable_image_management": false,
            "enable_volume_management": true, "enable_network_management": false}));
        let v = json(app.post("/api/v1/skills/validate", json!({"type": "custom"})).await).await;
        assert_eq!(v["valid"], false);
        assert_eq!(v["errors"][0]["field"], "configuration.custom_class");
        let v = json(app.post("/api/v1/skills/validate", json!({"type": "http", "configuration": {"timeout": 0}})).await).await;
        assert_eq!((v["valid"].clone(), v["errors"][0]["field"].clone()), (json!(false), json!("configuration.timeout")));
        assert_invalid(app.post("/api/v1/skills/validate", json!({"type": "laser", "configuration": {}})).await, &["type"]).await;
    }

    async fn associations_by_path_and_by_inference(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let key = app.admin_key.clone();
        let a = agent(&app, &app.admin_key, "builder").await;
        let t = team(&app, &app.admin_key, "ops").await;
        let e = environment(&app, &key, "staging").await;
        let shell = id_of(&create_skill(&app, &key, json!({"name": "sh", "type": "shell", "configuration": {"allowed_commands": ["ls"]}})).await);
        let http = id_of(&create_skill(&app, &key, json!({"name": "web", "type": "http"})).await);

        let r = app.post(&format!("/api/v1/skills/associations/agents/{a}/skills"),
            json!({"skill_id": shell, "configuration_override": {"timeout": 120}})).await;
        assert_eq!(r.status(), 201);
        let assoc = json(r).await;
        assert_eq!(assoc["skill_id"], shell.as_str());
        assert_eq!(assoc["entity_type"], "agent");
        assert_eq!(assoc["entity_id"], a.to_string());
        assert_eq!(assoc["configuration_override"], json!({"timeout": 120}));
        assert!(assoc["id"].as_str().is_some() && assoc["created_at"].as_str().is_some());
        // Singular entity types are accepted.
        let r = app.post(&format!("/api/v1/skills/associations/team/{t}/skills"), json!({"skill_id": shell})).await;
        assert_eq!(r.status(), 201);
        assert_eq!(json(r).await["configuration_override"], Value::Null);
        let r = app.post(&format!("/api/v1/skills/associations/environments/{e}/skills"), json!({"skill_id": http})).await;
        assert_eq!(r.status(), 201);

        // Duplicates, unknown ids, bad types and bad overrides.
        let path = format!("/api/v1/skills/associations/agents/{a}/skills");
        assert_error(app.post(&path, json!({"skill_id": shell})).await, 409, "CONFLICT").await;
        let err = assert_error(app.post(&path, json!({"skill_id": Uuid::now_v7()})).await, 404, "NOT_FOUND").await;
        assert!(err["message"].as_str().unwrap().contains("skill"), "{err}");
        let err = assert_error(app.post(&format!("/api/v1/skills/associations/agents/{}/skills", Uuid::now_v7()),
            json!({"skill_id": shell})).await, 404, "NOT_FOUND").await;
        assert!(err["message"].as_str().unwrap().contains("agent"), "{err}");
        // An environment id is not an agent id.
        assert_error(app.post(&format!("/api/v1/skills/associations/agents/{e}/skills"), json!({"skill_id": shell})).await, 404, "NOT_FOUND").await;
        assert_error(app.post(&format!("/api/v1/skills/associations/projects/{a}/skills"), json!({"skill_id": shell})).await, 404, "NOT_FOUND").await;
        assert_error(app.post("/api/v1/skills/associations/agents/nope/skills", json!({"skill_id": shell})).await, 400, "BAD_REQUEST").await;
        assert_invalid(app.post(&path, json!({"skill_id": http, "configuration_override": {"timeout": 0, "bogus": 1}})).await,
            &["configuration_override.timeout", "configuration_override.bogus"]).await;
        assert_invalid(app.post(&path, json!({"skill_id": http, "configuration_override": []})).await, &["configuration_override"]).await;
        assert_invalid(app.post(&path, json!({"skill_id": "x"})).await, &["skill_id"]).await;

        // The entity's list carries the merged configuration.
        let list = json(app.get(&path).await).await;
        assert_eq!(list["total"], 1);
        let item = &list["items"][0];
        assert_eq!(item["id"], shell.as_str());
        assert_eq!(item["association_id"], assoc["id"]);
        assert_eq!(item["configuration"]["timeout"], 120);
        assert_eq!(item["configuration"]["allowed_commands"], json!(["ls"]));
        assert_eq!(item["configuration_override"], json!({"timeout": 120}));
        assert_eq!(json(app.get(&format!("/api/v1/skills/associations/environments/{e}/skills")).await).await["items"][0]["id"], http.as_str());
        assert_error(app.get(&format!("/api/v1/skills/associations/teams/{}/skills", Uuid::now_v7())).await, 404, "NOT_FOUND").await;

        let r = app.req(Method::DELETE, &format!("{path}/{shell}")).send().await.unwrap();
        assert_eq!(json(r).await, json!({"id": shell, "deleted": true}));
        assert_error(app.req(Method::DELETE, &format!("{path}/{shell}")).send().await.unwrap(), 404, "NOT_FOUND").await;
        assert_eq!(json(app.get(&path).await).await["total"], 0);

        // POST /skills/associate infers the entity type; already associated skills are skipped.
        let r = app.post("/api/v1/skills/associate", json!({"entity_id": a, "skill_ids": [shell, http, shell]})).await;
        assert_eq!(r.status(), 200);
        assert_eq!(json(r).await, json!({"entity_type": "agent", "entity_id": a, "skill_ids": [shell, http], "associated": 2}));
        let r = app.post("/api/v1/skills/associate", json!({"entity_id": a, "skill_ids": [http]})).await;
        assert_eq!(json(r).await["associated"], 0);
        let r = app.post("/api/v1/skills/associate", json!({"entity_id": t, "skill_ids": [shell, http]})).await;
        assert_eq!(json(r).await, json!({"entity_type": "team", "entity_id": t, "skill_ids": [shell, http], "associated": 1}));
        let r = app.post("/api/v1/skills/associate", json!({"entity_id": e, "skill_ids": [shell]})).await;
        assert_eq!(json(r).await["entity_type"], "environment");
        let r = app.post("/api/v1/skills/associate", json!({"entity_type": "agents", "entity_id": a, "skill_ids": []})).await;
        assert_eq!(json(r).await["associated"], 0);
        assert_eq!(json(app.get(&path).await).await["total"], 2);

        let project = json(app.post("/api/v1/projects", json!({"name": "P", "key": "PP"})).await).await;
        assert_invalid(app.post("/api/v1/skills/associate", json!({"entity_id": project["id"], "skill_ids": [shell]})).await, &["entity_id"]).await;
        assert_invalid(app.post("/api/v1/skills/associate", json!({"entity_type": "project", "entity_id": project["id"], "skill_ids": [shell]})).await, &["entity_type"]).await;
        assert_invalid(app.post("/api/v1/skills/associate", json!({"entity_type": "robot", "entity_id": a, "skill_ids": [shell]})).await, &["entity_type"]).await;
        assert_error(app.post("/api/v1/skills/associate", json!({"entity_id": Uuid::now_v7(), "skill_ids": [shell]})).await, 404, "NOT_FOUND").await;
        assert_error(app.post("/api/v1/skills/associate", json!({"entity_type": "team", "entity_id": a, "skill_ids": [shell]})).await, 404, "NOT_FOUND").await;
        let too_many: Vec<Uuid> = (0..101).map(|_| Uuid::now_v7()).collect();
        assert_invalid(app.post("/api/v1/skills/associate", json!({"entity_id": a, "skill_ids": too_many})).await, &["skill_ids"]).await;
        // An unknown skill in the list changes nothing.
        let fresh = id_of(&create_skill(&app, &key, json!({"name": "fresh", "type": "docker"})).await);
        let missing = Uuid::now_v7();
        let err = assert_error(app.post("/api/v1/skills/associate", json!({"entity_id": a, "skill_ids": [fresh, missing]})).await, 404, "NOT_FOUND").await;
        assert!(err["message"].as_str().unwrap().contains(&missing.to_string()), "{err}");
        assert_eq!(json(app.get(&path).await).await["total"], 2);

        // Skills attached through the agents API are the same associations, overrides included.
        let mut configs = serde_json::Map::new();
        configs.insert(http.clone(), json!({"timeout": 5}));
        let r = app.post("/api/v1/agents", json!({"name": "second", "skill_ids": [http], "skill_configurations": configs})).await;
        let second = created_id(r).await;
        let second_path = format!("/api/v1/skills/associations/agents/{second}/skills");
        let list = json(app.get(&second_path).await).await;
        assert_eq!(list["total"], 1);
        assert_eq!(list["items"][0]["configuration_override"], json!({"timeout": 5}));
        assert_eq!(list["items"][0]["configuration"]["timeout"], 5);
        let resolved = json(app.get(&format!("{second_path}/resolved")).await).await;
        assert_eq!((resolved["items"][0]["source"].clone(), resolved["items"][0]["configuration"]["timeout"].clone()),
            (json!("agent"), json!(5)));
        app.req(Method::DELETE, &format!("{second_path}/{http}")).send().await.unwrap();
        let agent_view = json(app.get(&format!("/api/v1/agents/{second}")).await).await;
        assert_eq!(agent_view["skill_ids"], json!([]), "{agent_view}");
    }

    async fn resolution_layers_environment_team_agent(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let key = app.admin_key.clone();
        let agent_env = environment(&app, &key, "agent-env").await;
        let team_env = environment(&app, &key, "team-env").await;
        let r = app.post("/api/v1/agents", json!({"name": "builder", "environment_ids": [agent_env]})).await;
        let a = created_id(r).await;
        let r = app.post("/api/v1/teams", json!({
            "name": "ops", "environment_ids": [team_env], "configuration": {"member_ids": [a]}
        })).await;
        let t = created_id(r).await;

        let shell = id_of(&create_skill(&app, &key, json!({"name": "sh", "type": "shell", "configuration": {"allowed_commands": ["ls"]}})).await);
        let web = id_of(&create_skill(&app, &key, json!({"name": "web", "type": "http"})).await);
        let files = id_of(&create_skill(&app, &key, json!({"name": "files", "type": "file_system"})).await);
        let off = id_of(&create_skill(&app, &key, json!({"name": "off", "type": "docker", "enabled": false})).await);

        let assoc = |kind: &'static str, id: Uuid, skill: String, o: Value| {
            let app = &app;
            async move {
                let mut body = json!({"skill_id": skill});
                if !o.is_null() {
                    body["configuration_override"] = o;
                }
                let r = app.post(&format!("/api/v1/skills/associations/{kind}/{id}/skills"), body).await;
                assert_eq!(r.status(), 201);
            }
        };
        assoc("environments", agent_env, shell.clone(), json!({"timeout": 60, "working_directory": "/env"})).await;
        assoc("teams", t, shell.clone(), json!({"timeout": 90})).await;
        assoc("agents", a, shell.clone(), json!({"allowed_commands": ["cat"]})).await;
        assoc("environments", team_env, web.clone(), json!({"timeout": 10})).await;
        assoc("teams", t, files.clone(), Value::Null).await;
        assoc("agents", a, off.clone(), Value::Null).await;

        let resolved = json(app.get(&format!("/api/v1/skills/associations/agents/{a}/skills/resolved")).await).await;
        assert_eq!(resolved["total"], 3, "{resolved}");
        let items = resolved["items"].as_array().unwrap();
        let by_id = |id: &str| items.iter().find(|i| i["id"] == id).unwrap_or_else(|| panic!("{id} missing: {resolved}")).clone();
        let sh = by_id(&shell);
        // The agent's own layer wins; every layer's override is applied in order.
        assert_eq!((sh["source"].clone(), sh["inherited"].clone()), (json!("agent"), json!(false)));
        assert_eq!(sh["source_id"], a.to_string());
        assert_eq!(sh["configuration"], json!({
            "allowed_commands": ["cat"], "blocked_commands": [], "shell_args": [], "timeout": 90, "working_directory": "/env"
        }));
        assert_eq!((sh["name"].clone(), sh["type"].clone(), sh["enabled"].clone()), (json!("sh"), json!("shell"), json!(true)));
        let w = by_id(&web);
        assert_eq!((w["source"].clone(), w["inherited"].clone()), (json!("environment"), json!(true)));
        assert_eq!(w["source_id"], team_env.to_string());
        assert_eq!(w["configuration"]["timeout"], 10);
        let f = by_id(&files);
        assert_eq!((f["source"].clone(), f["inherited"].clone()), (json!("team"), json!(true)));
        assert!(items.iter().all(|i| i["id"] != off.as_str()), "disabled skills are left out");
        // Order: the first layer that brings each skill (agent environments, then the team's).
        let order: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(order, vec![shell.as_str(), web.as_str(), files.as_str()]);

        let team_resolved = json(app.get(&format!("/api/v1/skills/associations/teams/{t}/skills/resolved")).await).await;
        assert_eq!(team_resolved["total"], 3);
        let items = team_resolved["items"].as_array().unwrap();
        let sh = items.iter().find(|i| i["id"] == shell.as_str()).unwrap();
        assert_eq!((sh["source"].clone(), sh["inherited"].clone()), (json!("team"), json!(false)));
        assert_eq!(sh["configuration"]["timeout"], 90);
        assert_eq!(sh["configuration"]["allowed_commands"], json!(["ls"]));
        assert!(sh["configuration"].get("working_directory").is_none(), "the agent's environment is not the team's");
        let w = items.iter().find(|i| i["id"] == web.as_str()).unwrap();
        assert_eq!((w["source"].clone(), w["inherited"].clone()), (json!("environment"), json!(true)));

        // Enabling a skill brings it in; pagination applies to the resolved list.
        app.req(Method::PATCH, &format!("/api/v1/skills/{off}")).json(&json!({"enabled": true})).send().await.unwrap();
        let page = json(app.get(&format!("/api/v1/skills/associations/agents/{a}/skills/resolved?limit=2&offset=2")).await).await;
        assert_eq!((page["total"].as_i64(), page["items"].as_array().unwrap().len()), (Some(4), 2));

        let env_resolved = json(app.get(&format!("/api/v1/skills/associations/environments/{agent_env}/skills/resolved")).await).await;
        assert_eq!(env_resolved["items"][0]["inherited"], false);
        assert_error(app.get(&format!("/api/v1/skills/associations/agents/{}/skills/resolved", Uuid::now_v7())).await, 404, "NOT_FOUND").await;
        assert_error(app.get(&format!("/api/v1/skills/associations/teams/{a}/skills/resolved")).await, 404, "NOT_FOUND").await;
    }

    async fn deleting_a_skill_or_an_entity_removes_its_associations(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let key = app.admin_key.clone();
        let a = agent(&app, &app.admin_key, "builder").await;
        let t = team(&app, &app.admin_key, "ops").await;
        let e = environment(&app, &key, "staging").await;
        let s1 = id_of(&create_skill(&app, &key, json!({"name": "one", "type": "shell"})).await);
        let s2 = id_of(&create_skill(&app, &key, json!({"name": "two", "type": "http"})).await);
        for id in [a, t, e] {
            let r = app.post("/api/v1/skills/associate", json!({"entity_id": id, "skill_ids": [s1, s2]})).await;
            assert_eq!(json(r).await["associated"], 2);
        }
        assert_eq!(count(&app, "SELECT COUNT(*) FROM skill_associations").await, 6);

        app.req(Method::DELETE, &format!("/api/v1/skills/{s1}")).send().await.unwrap();
        assert_eq!(count(&app, "SELECT COUNT(*) FROM skill_associations").await, 3);
        let list = json(app.get(&format!("/api/v1/skills/associations/agents/{a}/skills")).await).await;
        assert_eq!((list["total"].as_i64(), list["items"][0]["id"].as_str()), (Some(1), Some(s2.as_str())));

        assert_eq!(app.req(Method::DELETE, &format!("/api/v1/agents/{a}")).send().await.unwrap().status(), 200);
        assert_eq!(count(&app, "SELECT COUNT(*) FROM skill_associations").await, 2);
        assert_eq!(app.req(Method::DELETE, &format!("/api/v1/environments/{e}")).send().await.unwrap().status(), 200);
        assert_eq!(count(&app, "SELECT COUNT(*) FROM skill_associations").await, 1);
        assert_error(app.get(&format!("/api/v1/skills/associations/agents/{a}/skills")).await, 404, "NOT_FOUND").await;
    }

    async fn tenancy_and_roles(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let a_key = app.admin_key.clone();
        let b_key = app.org_with_key("beta", Role::Admin).await;
        app.req_as(&b_key, Method::PATCH, "/api/v1/organization/settings")
            .json(&json!({"rate_limit_tier": "enterprise", "rate_limit_per_minute": 1_000_000})).send().await.unwrap();

        let a_agent = agent(&app, &app.admin_key, "builder").await;
        let a_env = environment(&app, &a_key, "staging").await;
        let a_skill = id_of(&create_skill(&app, &a_key, json!({"name": "sh", "type": "shell"})).await);
        let r = app.post(&format!("/api/v1/skills/associations/agents/{a_agent}/skills"), json!({"skill_id": a_skill})).await;
        assert_eq!(r.status(), 201);
        let b_agent = agent(&app, &b_key, "builder").await;
        // The same name is free in another organization.
        let b_skill = id_of(&create_skill(&app, &b_key, json!({"name": "sh", "type": "shell"})).await);

        // Org B cannot see or change org A's skills.
        let listed = json(send(&app, &b_key, Method::GET, "/api/v1/skills", None).await).await;
        assert_eq!((listed["total"].as_i64(), listed["items"][0]["id"].as_str()), (Some(1), Some(b_skill.as_str())));
        let path = format!("/api/v1/skills/{a_skill}");
        assert_error(send(&app, &b_key, Method::GET, &path, None).await, 404, "NOT_FOUND").await;
        assert_error(send(&app, &b_key, Method::PATCH, &path, Some(json!({"name": "mine"}))).await, 404, "NOT_FOUND").await;
        assert_error(send(&app, &b_key, Method::PUT, &path, Some(json!({"configuration": {}}))).await, 404, "NOT_FOUND").await;
        assert_error(send(&app, &b_key, Method::DELETE, &path, None).await, 404, "NOT_FOUND").await;

        // Nor associate across organizations, in either direction, nor read A's entities.
        let b_assoc = format!("/api/v1/skills/associations/agents/{b_agent}/skills");
        assert_error(send(&app, &b_key, Method::POST, &b_assoc, Some(json!({"skill_id": a_skill}))).await, 404, "NOT_FOUND").await;
        let a_assoc = format!("/api/v1/skills/associations/agents/{a_agent}/skills");
        assert_error(send(&app, &b_key, Method::POST, &a_assoc, Some(json!({"skill_id": b_skill}))).await, 404, "NOT_FOUND").await;
        assert_error(send(&app, &b_key, Method::GET, &a_assoc, None).await, 404, "NOT_FOUND").await;
        assert_error(send(&app, &b_key, Method::DELETE, &format!("{a_assoc}/{a_skill}"), None).await, 404, "NOT_FOUND").await;
        assert_error(send(&app, &b_key, Method::GET, &format!("{a_assoc}/resolved"), None).await, 404, "NOT_FOUND").await;
        let env_assoc = format!("/api/v1/skills/associations/environments/{a_env}/skills");
        assert_error(send(&app, &b_key, Method::POST, &env_assoc, Some(json!({"skill_id": b_skill}))).await, 404, "NOT_FOUND").await;
        for body in [
            json!({"entity_id": a_agent, "skill_ids": [b_skill]}),
            json!({"entity_type": "agent", "entity_id": a_agent, "skill_ids": [b_skill]}),
        ] {
            assert_error(send(&app, &b_key, Method::POST, "/api/v1/skills/associate", Some(body)).await, 404, "NOT_FOUND").await;
        }
        let r = send(&app, &b_key, Method::POST, "/api/v1/skills/associate", Some(json!({"entity_id": b_agent, "skill_ids": [a_skill]}))).await;
        assert_error(r, 404, "NOT_FOUND").await;
        // Nothing leaked across: A's agent still has exactly A's skill, B's agent none.
        let a_list = json(app.get(&a_assoc).await).await;
        assert_eq!((a_list["total"].as_i64(), a_list["items"][0]["id"].as_str()), (Some(1), Some(a_skill.as_str())));
        assert_eq!(json(send(&app, &b_key, Method::GET, &b_assoc, None).await).await["total"], 0);
        assert_eq!(json(send(&app, &b_key, Method::GET, &format!("{b_assoc}/resolved"), None).await).await["total"], 0);

        // Viewers read but cannot write.
        let viewer = app.key("default", Role::Viewer).await;
        assert_eq!(send(&app, &viewer, Method::GET, "/api/v1/skills", None).await.status(), 200);
        assert_eq!(send(&app, &viewer, Method::GET, &path, None).await.status(), 200);
        assert_eq!(send(&app, &viewer, Method::GET, &format!("{a_assoc}/resolved"), None).await.status(), 200);
        assert_eq!(send(&app, &viewer, Method::GET, "/api/v1/skills/definitions", None).await.status(), 200);
        for (method, p, body) in [
            (Method::POST, "/api/v1/skills".to_string(), json!({"name": "v", "type": "shell"})),
            (Method::PATCH, path.clone(), json!({"name": "v"})),
            (Method::PUT, path.clone(), json!({"name": "v"})),
            (Method::DELETE, path.clone(), Value::Null),
            (Method::POST, a_assoc.clone(), json!({"skill_id": a_skill})),
            (Method::DELETE, format!("{a_assoc}/{a_skill}"), Value::Null),
            (Method::POST, "/api/v1/skills/associate".to_string(), json!({"entity_id": a_agent, "skill_ids": [a_skill]})),
        ] {
            let body = (!body.is_null()).then_some(body);
            assert_error(send(&app, &viewer, method, &p, body).await, 403, "FORBIDDEN").await;
        }
        assert_eq!(json(app.get(&a_assoc).await).await["total"], 1);
        // A worker key is not a catalog reader.
        let worker = app.key("default", Role::Worker).await;
        assert_error(send(&app, &worker, Method::GET, "/api/v1/skills", None).await, 403, "FORBIDDEN").await;
    }
}
