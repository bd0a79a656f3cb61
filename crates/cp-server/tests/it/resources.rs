//! Projects, project membership and environments (API §3 rows), on both backends.

use crate::common::worker::TestWorker;
use crate::common::{TestApp, assert_error, json};
use cp_types::org::Role;
use reqwest::Method;
use serde_json::json;

both_backends! {
    async fn projects_crud_uniqueness_and_the_default_project(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let default = json(app.get("/api/v1/projects/default").await).await;
        assert_eq!(default["key"], "DEFAULT");
        assert_eq!(default["is_default"], true);
        assert_eq!(default["visibility"], "org");

        let r = app.post("/api/v1/projects", json!({
            "name": "Platform", "key": "plat", "description": "infra", "goals": "uptime",
            "settings": {"x": 1}, "visibility": "org", "default_model": "anthropic/claude-sonnet-4-5",
            "policy_ids": ["p1"], "restrict_to_environment": true
        })).await;
        assert_eq!(r.status(), 201);
        let p = json(r).await;
        for (field, value) in [
            ("organization_id", json!("default")), ("name", json!("Platform")), ("key", json!("PLAT")),
            ("description", json!("infra")), ("goals", json!("uptime")), ("settings", json!({"x": 1})),
            ("status", json!("active")), ("visibility", json!("org")),
            ("default_model", json!("anthropic/claude-sonnet-4-5")), ("policy_ids", json!(["p1"])),
            ("restrict_to_environment", json!(true)), ("is_default", json!(false)),
            ("agent_count", json!(0)), ("team_count", json!(0)),
        ] {
            assert_eq!(p[field], value, "{field}");
        }
        let created_at = p["created_at"].as_str().unwrap();
        assert!(created_at.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(created_at).is_ok());
        let id = p["id"].as_str().unwrap().to_string();
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
        assert_eq!(json(app.get(&format!("/api/v1/projects/{id}")).await).await, p);

        // Name and key are unique per organization (the key regardless of case).
        let err = assert_error(app.post("/api/v1/projects", json!({"name": "Platform", "key": "OTHER"})).await, 409, "CONFLICT").await;
        assert!(err["message"].as_str().unwrap().contains("name"), "{err}");
        let err = assert_error(app.post("/api/v1/projects", json!({"name": "Other", "key": "PLAT"})).await, 409, "CONFLICT").await;
        assert!(err["message"].as_str().unwrap().contains("key"), "{err}");
        let other = json(app.post("/api/v1/projects", json!({"name": "Other", "key": "OTH"})).await).await;
        let r = app.req(Method::PATCH, &format!("/api/v1/projects/{}", other["id"].as_str().unwrap()))
            .json(&json!({"key": "plat"})).send().await.unwrap();
        assert_error(r, 409, "CONFLICT").await;

        // Filters.
        app.req(Method::PATCH, &format!("/api/v1/projects/{id}")).json(&json!({"status": "draft"})).send().await.unwrap();
        let drafts = json(app.get("/api/v1/projects?status_filter=draft").await).await;
        assert_eq!(drafts["total"], 1);
        assert_eq!(drafts["items"][0]["id"], id.as_str());

        // DEFAULT cannot be deleted or re-keyed.
        let did = default["id"].as_str().unwrap();
        assert_error(app.req(Method::DELETE, &format!("/api/v1/projects/{did}")).send().await.unwrap(), 409, "CONFLICT").await;
        let r = app.req(Method::PATCH, &format!("/api/v1/projects/{did}")).json(&json!({"key": "MINE"})).send().await.unwrap();
        assert_error(r, 409, "CONFLICT").await;
        let r = app.req(Method::PATCH, &format!("/api/v1/projects/{did}")).json(&json!({"description": "everything"})).send().await.unwrap();
        assert_eq!(json(r).await["description"], "everything");
    }

    async fn project_membership_of_agents_and_teams(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let agent = app.insert_member_row("agents", "default", "builder").await;
        let team = app.insert_member_row("teams", "default", "ops").await;
        let p = json(app.post("/api/v1/projects", json!({"name": "Members", "key": "MEM"})).await).await;
        let pid = p["id"].as_str().unwrap();

        let r = app.post(&format!("/api/v1/projects/{pid}/agents"), json!({"agent_id": agent, "role": "owner"})).await;
        assert_eq!(r.status(), 201);
        let m = json(r).await;
        assert_eq!(m["agent_id"], agent.to_string());
        assert_eq!(m["name"], "builder");
        assert_eq!(m["role"], "owner");
        assert_eq!(m["member_type"], "agent");
        assert_error(app.post(&format!("/api/v1/projects/{pid}/agents"), json!({"agent_id": agent})).await, 409, "CONFLICT").await;
        assert_error(app.post(&format!("/api/v1/projects/{pid}/agents"), json!({"agent_id": uuid::Uuid::now_v7()})).await, 404, "NOT_FOUND").await;
        assert_error(app.post(&format!("/api/v1/projects/{pid}/agents"), json!({"agent_id": "nope"})).await, 422, "VALIDATION_ERROR").await;
        let r = app.post(&format!("/api/v1/projects/{pid}/teams"), json!({"team_id": team})).await;
        assert_eq!(r.status(), 201);
        assert_eq!(json(r).await["team_id"], team.to_string());

        let agents = json(app.get(&format!("/api/v1/projects/{pid}/agents")).await).await;
        assert_eq!(agents["total"], 1);
        assert_eq!(agents["items"][0]["agent_id"], agent.to_string());
        let teams = json(app.get(&format!("/api/v1/projects/{pid}/teams")).await).await;
        assert_eq!(teams["total"], 1);
        let p = json(app.get(&format!("/api/v1/projects/{pid}")).await).await;
        assert_eq!((p["agent_count"].as_i64(), p["team_count"].as_i64()), (Some(1), Some(1)));
        let listed = json(app.get("/api/v1/projects").await).await;
        let row = listed["items"].as_array().unwrap().iter().find(|i| i["id"] == pid).unwrap().clone();
        assert_eq!(row["agent_count"], 1);

        let r = app.req(Method::DELETE, &format!("/api/v1/projects/{pid}/agents/{agent}")).send().await.unwrap();
        assert_eq!(json(r).await, json!({"id": agent.to_string(), "deleted": true}));
        // The list (served from the list cache) follows the membership change at once.
        let listed = json(app.get("/api/v1/projects").await).await;
        let row = listed["items"].as_array().unwrap().iter().find(|i| i["id"] == pid).unwrap().clone();
        assert_eq!((row["agent_count"].as_i64(), row["team_count"].as_i64()), (Some(0), Some(1)), "{row}");
        assert_error(app.req(Method::DELETE, &format!("/api/v1/projects/{pid}/agents/{agent}")).send().await.unwrap(), 404, "NOT_FOUND").await;
        // Deleting the team removes its memberships (the catalog deletes through the same cascade).
        app.exec_sql("DELETE FROM teams WHERE name = 'ops'").await;
        assert_eq!(json(app.get(&format!("/api/v1/projects/{pid}/teams")).await).await["total"], 0);
        // Deleting a project with members is fine and leaves the agent alone.
        app.post(&format!("/api/v1/projects/{pid}/agents"), json!({"agent_id": agent})).await;
        assert_eq!(app.req(Method::DELETE, &format!("/api/v1/projects/{pid}")).send().await.unwrap().status(), 200);
        assert_error(app.get(&format!("/api/v1/projects/{pid}/agents")).await, 404, "NOT_FOUND").await;
    }

    async fn environments_crud_uniqueness_and_the_default_environment(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let envs = json(app.get("/api/v1/environments").await).await;
        assert_eq!(envs["total"], 1);
        let default = envs["items"][0].clone();
        assert_eq!(default["name"], "default");
        assert_eq!(default["is_default"], true);

        let body = json!({
            "name": "production", "display_name": "Production", "description": "prod", "tags": ["prod"],
            "settings": {"region": "eu"},
            "execution_environment": {"env_vars": {"KUBE_CONTEXT": "prod"}, "secrets": ["KUBECONFIG_B64"],
                                      "integration_ids": ["gh"], "mcp_servers": {"fs": {"command": "x"}}}
        });
        let r = app.post("/api/v1/environments", body.clone()).await;
        assert_eq!(r.status(), 201);
        let e = json(r).await;
        assert_eq!(e["execution_environment"], body["execution_environment"]);
        assert_eq!(e["tags"], json!(["prod"]));
        assert_eq!(e["status"], "active");
        for counter in ["active_workers", "idle_workers", "busy_workers"] {
            assert_eq!(e[counter], 0);
        }
        let id = e["id"].as_str().unwrap().to_string();
        assert_error(app.post("/api/v1/environments", json!({"name": "production"})).await, 409, "CONFLICT").await;
        assert_error(app.post("/api/v1/environments", json!({"name": "p"})).await, 422, "VALIDATION_ERROR").await;
        assert_error(app.post("/api/v1/environments", json!({"name": "x".repeat(101)})).await, 422, "VALIDATION_ERROR").await;
        let err = assert_error(app.post("/api/v1/environments", json!({"name": "bad-vars", "execution_environment": {"env_vars": {"1X": "y"}}})).await, 422, "VALIDATION_ERROR").await;
        assert_eq!(err["details"]["field"], "execution_environment.env_vars");
        assert_error(app.post("/api/v1/environments", json!({"name": "bad-status", "status": "exploded"})).await, 422, "VALIDATION_ERROR").await;

        let r = app.req(Method::PATCH, &format!("/api/v1/environments/{id}"))
            .json(&json!({"status": "inactive", "execution_environment": {"env_vars": {"A": "1"}}})).send().await.unwrap();
        let e = json(r).await;
        assert_eq!(e["status"], "inactive");
        assert_eq!(e["execution_environment"]["env_vars"], json!({"A": "1"}));
        let inactive = json(app.get("/api/v1/environments?status_filter=inactive").await).await;
        assert_eq!(inactive["total"], 1);

        let cmd = json(app.get(&format!("/api/v1/environments/{id}/worker-command")).await).await;
        assert_eq!(cmd["environment_name"], "production");
        assert_eq!(cmd["can_register"], false, "inactive environments refuse workers");
        assert_eq!(cmd["control_plane_url"], app.url);
        let command = cmd["command"].as_str().unwrap();
        assert!(command.starts_with("kubiya-cp worker --queue-id "), "{command}");
        assert!(command.contains(&format!("--control-plane-url {}", app.url)));
        assert_eq!(cmd["command_parts"].as_array().unwrap().len(), 6);
        assert!(!command.contains("api-key") && !command.contains("KUBIYA_API_KEY"), "keys stay off command lines: {command}");

        let did = default["id"].as_str().unwrap();
        assert_error(app.req(Method::DELETE, &format!("/api/v1/environments/{did}")).send().await.unwrap(), 409, "CONFLICT").await;
        let r = app.req(Method::PATCH, &format!("/api/v1/environments/{did}")).json(&json!({"name": "renamed"})).send().await.unwrap();
        assert_error(r, 409, "CONFLICT").await;
        let r = app.req(Method::DELETE, &format!("/api/v1/environments/{id}")).send().await.unwrap();
        assert_eq!(json(r).await, json!({"id": id, "deleted": true}));
        assert_error(app.get(&format!("/api/v1/environments/{id}")).await, 404, "NOT_FOUND").await;
    }

    async fn health_readiness_metrics_and_docs(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let h = json(app.anon(Method::GET, "/api/health").send().await.unwrap()).await;
        assert_eq!(h["status"], "healthy");
        assert!(h["version"].is_string() && h["service"].is_string() && h["timestamp"].is_string());
        assert_eq!(json(app.anon(Method::GET, "/api/ready").send().await.unwrap()).await["status"], "ready");
        let d = json(app.anon(Method::GET, "/api/health/detailed").send().await.unwrap()).await;
        assert_eq!(d["status"], "healthy");
        assert_eq!(d["database"]["status"], "healthy");
        assert!(d["database"]["latency_ms"].is_f64());
        assert!(d["uptime_seconds"].is_u64());
        // Counts are an organization's business: none without an admin key, the admin's own with one.
        for key in [None, Some(app.key("default", Role::Member).await)] {
            let mut r = app.anon(Method::GET, "/api/health/detailed");
            if let Some(k) = &key {
                r = r.bearer_auth(k);
            }
            let d = json(r.send().await.unwrap()).await;
            assert_eq!(d["status"], "healthy");
            for part in ["workers", "queues", "webhooks"] {
                assert!(d.get(part).is_none(), "{part} shown to {key:?}: {d}");
            }
        }
        let d = json(app.get("/api/health/detailed").await).await;
        for path in ["/workers/online", "/queues/queued", "/queues/running", "/webhooks/pending_deliveries"] {
            assert!(d.pointer(path).is_some_and(|v| v.is_i64()), "{path}");
        }
        let envs = json(app.get("/api/v1/environments").await).await;
        let env = envs["items"][0]["id"].as_str().unwrap().to_string();
        let q = json(app.post(&format!("/api/v1/environments/{env}/worker-queues"), json!({"name": "health-q"})).await).await;
        let qid = q["id"].as_str().unwrap().to_string();
        let worker_key = app.key("default", Role::Worker).await;
        let w = TestWorker::start(&app.url, &worker_key, &qid, "health-host").await;
        // The official client's worker calls: get by runner name, and start a registered worker.
        let runner = json(app.get("/api/v1/workers/health-host").await).await;
        assert_eq!((runner["name"].as_str(), runner["worker_count"].as_i64()), (Some("health-host"), Some(1)), "{runner}");
        assert_eq!(json(app.get(&format!("/api/v1/workers/{}", w.id)).await).await["id"], w.id.as_str());
        assert_error(app.get("/api/v1/workers/no-such-runner").await, 404, "NOT_FOUND").await;
        let started = json(w.post(&format!("/api/v1/workers/{}/start", w.id)).json(&json!({})).send().await.unwrap()).await;
        assert_eq!((started["worker_id"].as_str(), started["worker_queue_id"].as_str()), (Some(w.id.as_str()), Some(qid.as_str())), "{started}");
        let stranger = app.key("default", Role::Worker).await;
        let r = app.req_as(&stranger, Method::POST, &format!("/api/v1/workers/{}/start", w.id)).json(&json!({})).send().await.unwrap();
        assert_error(r, 404, "NOT_FOUND").await;
        assert_eq!(json(app.get("/api/health/detailed").await).await["workers"]["online"], 1);
        let other_admin = app.org_with_key("other-health", Role::Admin).await;
        let d = json(app.req_as(&other_admin, Method::GET, "/api/health/detailed").send().await.unwrap()).await;
        assert_eq!(d["workers"]["online"], 0, "another organization's workers are not counted: {d}");

        // Metrics count requests per route template, with latency histograms.
        app.get("/api/v1/projects").await;
        let pid = json(app.get("/api/v1/projects/default").await).await["id"].as_str().unwrap().to_string();
        app.get(&format!("/api/v1/projects/{pid}")).await;
        let text = app.anon(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
        assert!(text.contains(r#"http_requests_total{method="GET",route="/api/v1/projects/{id}",status="200"}"#), "{text}");
        assert!(text.contains("http_request_duration_seconds_bucket"));
        assert!(!text.contains(&pid), "concrete ids never become labels");

        // The OpenAPI document comes from the code; the docs are served by us (offline).
        let doc = json(app.anon(Method::GET, "/openapi.json").send().await.unwrap()).await;
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for path in ["/api/v1/projects", "/api/v1/projects/{id}", "/api/v1/environments/{id}/worker-command",
                     "/api/v1/api-keys", "/api/v1/organization/settings", "/api/health"] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
        }
        assert!(doc["paths"]["/api/v1/projects/{id}"].get("put").is_some());
        assert!(doc["paths"]["/api/v1/projects/{id}"].get("patch").is_some());
        let page = app.anon(Method::GET, "/docs/").send().await.unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(html.contains("swagger-ui") && !html.contains("cdn"), "assets come from us");
        let js = app.anon(Method::GET, "/docs/swagger-ui-bundle.js").send().await.unwrap();
        assert_eq!(js.status(), 200);
        assert!(js.bytes().await.unwrap().len() > 100_000);

        // Not ready when the schema is not fully migrated.
        app.exec_sql("DELETE FROM _sqlx_migrations").await;
        assert_error(app.anon(Method::GET, "/api/ready").send().await.unwrap(), 503, "SERVICE_UNAVAILABLE").await;
    }
}
