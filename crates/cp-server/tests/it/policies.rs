//! Policies (API §4): compile-on-write, versions, validation, tenancy, on both backends.

use crate::common::{TestApp, assert_error, json};
use cp_types::org::Role;
use reqwest::Method;
use serde_json::{Value, json};

const DESTRUCTIVE: &str = r#"package kubiya.tools

deny contains msg if {
    input.action == "tool_execution"
    regex.match(`rm\s+-rf\s+/(\s|$)`, input.tool.arguments.command)
    msg := "destructive command refused"
}
"#;

async fn send(app: &TestApp, method: Method, path: &str, body: Value) -> reqwest::Response {
    app.req(method, path).json(&body).send().await.unwrap()
}

both_backends! {
    async fn policies_compile_on_write_and_version_on_content(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let r = app.post("/api/v1/policies", json!({"name": "no-rm", "policy_content": DESTRUCTIVE, "tags": ["shell"]})).await;
        assert_eq!(r.status(), 201);
        let p = json(r).await;
        assert_eq!((p["version"].as_i64(), p["package"].as_str(), p["enabled"].as_bool()), (Some(1), Some("data.kubiya.tools"), Some(true)));
        let id = p["id"].as_str().unwrap().to_string();

        // Content that does not compile: 422 naming the field and the line.
        let broken = "package broken\n\nallow if {\n    input.x ==\n}\n";
        let err = assert_error(app.post("/api/v1/policies", json!({"name": "broken", "policy_content": broken})).await, 422, "VALIDATION_ERROR").await;
        assert_eq!(err["details"]["field"], "policy_content");
        assert!(err["details"]["line"].is_number(), "{err}");
        assert_error(app.post("/api/v1/policies", json!({"name": "no-rm", "policy_content": DESTRUCTIVE})).await, 409, "CONFLICT").await;
        assert_error(app.post("/api/v1/policies", json!({"name": "empty", "policy_content": "  "})).await, 422, "VALIDATION_ERROR").await;
        assert_error(app.post("/api/v1/policies", json!({"name": "typed", "policy_content": 7})).await, 422, "VALIDATION_ERROR").await;

        // The version moves only when the content changes; a refused change changes nothing.
        let path = format!("/api/v1/policies/{id}");
        assert_eq!(json(send(&app, Method::PATCH, &path, json!({"description": "rm guard"})).await).await["version"], 1);
        assert_eq!(json(send(&app, Method::PUT, &path, json!({"policy_content": DESTRUCTIVE})).await).await["version"], 1);
        let changed = DESTRUCTIVE.replace("destructive command refused", "refused");
        let p = json(send(&app, Method::PUT, &path, json!({"policy_content": changed})).await).await;
        assert_eq!(p["version"], 2);
        assert_error(send(&app, Method::PUT, &path, json!({"policy_content": broken})).await, 422, "VALIDATION_ERROR").await;
        let p = json(app.get(&path).await).await;
        assert_eq!((p["version"].as_i64(), p["description"].as_str()), (Some(2), Some("rm guard")));
        assert_eq!(p["policy_content"], changed.as_str());

        // Validate without storing, and a stored policy.
        let v = json(app.post("/api/v1/policies/validate", json!({"policy_content": broken})).await).await;
        assert_eq!(v["valid"], false);
        assert!(v["errors"][0]["line"].is_number(), "{v}");
        let v = json(app.post("/api/v1/policies/validate", json!({"policy_content": DESTRUCTIVE})).await).await;
        assert_eq!((v["valid"].as_bool(), v["package"].as_str()), (Some(true), Some("data.kubiya.tools")));
        assert_eq!(json(app.post(&format!("{path}/validate"), json!({})).await).await["valid"], true);

        // Lists and filters.
        assert_eq!(json(app.get("/api/v1/policies").await).await["total"], 1);
        send(&app, Method::PATCH, &path, json!({"enabled": false})).await;
        assert_eq!(json(app.get("/api/v1/policies?enabled=true").await).await["total"], 0);

        // Another organization sees none of it; a viewer reads but does not write.
        let other = app.org_with_key("policy-other", Role::Admin).await;
        for (method, p) in [(Method::GET, path.clone()), (Method::PUT, path.clone()), (Method::DELETE, path.clone()), (Method::POST, format!("{path}/validate"))] {
            let r = app.req_as(&other, method, &p).json(&json!({})).send().await.unwrap();
            assert_error(r, 404, "NOT_FOUND").await;
        }
        assert_eq!(json(app.req_as(&other, Method::GET, "/api/v1/policies").send().await.unwrap()).await["total"], 0);
        let viewer = app.key("default", Role::Viewer).await;
        assert_eq!(app.req_as(&viewer, Method::GET, &path).send().await.unwrap().status(), 200);
        let r = app.req_as(&viewer, Method::POST, "/api/v1/policies").json(&json!({"name": "v", "policy_content": DESTRUCTIVE})).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;

        let r = app.req(Method::DELETE, &path).send().await.unwrap();
        assert_eq!(json(r).await, json!({"id": id, "deleted": true}));
        assert_error(app.get(&path).await, 404, "NOT_FOUND").await;
    }
}

/// Rego that blows a budget as soon as it is evaluated, and the limits it may name.
const BOMBS: [(&str, &str, &[&str]); 4] = [
    (
        "range",
        "package bomb\n\nallow if count(numbers.range(1, 100000000000)) > 0\n",
        &["memory"],
    ),
    (
        "nesting",
        "package bomb\n\nallow if [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
        &["nesting", "time"],
    ),
    (
        "concat",
        "package bomb\n\nallow if {\n    s := concat(\"\", [sprintf(\"%v-%v\", [x, x]) | some x in numbers.range(1, 40000000)])\n    count(s) > 0\n}\n",
        &["memory", "time"],
    ),
    (
        "comprehension",
        "package bomb\n\nallow if count([x | some x in numbers.range(1, 3000); some y in numbers.range(1, 3000)]) > 0\n",
        &["time"],
    ),
];

both_backends! {
    async fn policies_over_a_budget_are_refused_naming_the_limit_and_the_server_lives(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let member = app.key("default", Role::Member).await;
        let stranger = app.org_with_key("bomb-stranger", Role::Admin).await;
        for (name, content, limits) in BOMBS {
            for path in ["/api/v1/policies/validate", "/api/v1/policies"] {
                let r = app.req_as(&member, Method::POST, path).json(&json!({"name": name, "policy_content": content})).send().await.unwrap();
                let err = assert_error(r, 422, "VALIDATION_ERROR").await;
                let limit = err["details"]["limit"].as_str().unwrap_or_else(|| panic!("{name} {path}: {err}"));
                assert!(limits.contains(&limit), "{name} {path}: {err}");
                assert!(err["message"].as_str().unwrap().contains(&format!("{limit} limit")) || limit == "nesting", "{err}");
            }
            // The server answers, and another tenant's policies compile and evaluate.
            assert_eq!(app.anon(Method::GET, "/api/health").send().await.unwrap().status(), 200, "after {name}");
            let body = json!({"name": format!("fine-{name}"), "policy_content": DESTRUCTIVE});
            let r = app.req_as(&stranger, Method::POST, "/api/v1/policies").json(&body).send().await.unwrap();
            assert_eq!(r.status(), 201, "after {name}");
        }
        let r = app.req_as(&stranger, Method::POST, "/api/v1/policies/validate").json(&json!({"policy_content": DESTRUCTIVE})).send().await.unwrap();
        assert_eq!(json(r).await["valid"], true);
        // Stored content is never rewritten past the compiler: no bomb was stored.
        assert_eq!(json(app.get("/api/v1/policies").await).await["total"], 0);
        // The engine is healthy after every bomb (the official client's GET /policies/health).
        let h = json(app.get("/api/v1/policies/health").await).await;
        assert_eq!(h["status"], "healthy", "{h}");
    }
}
