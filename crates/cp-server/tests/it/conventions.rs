//! API §1 conventions, each on both backends: the error envelope for every failure class,
//! request ids, pagination, partial updates, deletes, idempotency, unknown fields.

use crate::common::{TestApp, assert_error, json};
use reqwest::Method;
use serde_json::json;

both_backends! {
    async fn unknown_routes_and_methods_answer_the_envelope(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        // Unknown route: 404 with or without a key.
        assert_error(app.anon(Method::GET, "/api/v1/nope").send().await.unwrap(), 404, "NOT_FOUND").await;
        assert_error(app.get("/api/v1/nope").await, 404, "NOT_FOUND").await;
        assert_error(app.anon(Method::GET, "/totally/else").send().await.unwrap(), 404, "NOT_FOUND").await;
        // Known route, wrong method: 405, keeping the Allow header.
        let resp = app.req(Method::DELETE, "/api/health").send().await.unwrap();
        assert!(resp.headers().get("allow").is_some());
        assert_error(resp, 405, "METHOD_NOT_ALLOWED").await;
        let resp = app.req(Method::PUT, "/api/v1/projects").json(&json!({})).send().await.unwrap();
        assert_error(resp, 405, "METHOD_NOT_ALLOWED").await;
    }

    async fn bad_bodies_answer_the_envelope(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let post = |body: &'static str, ct: Option<&'static str>| {
            let mut r = app.req(Method::POST, "/api/v1/projects").body(body);
            if let Some(ct) = ct {
                r = r.header("content-type", ct);
            }
            r.send()
        };
        let json_ct = Some("application/json");
        assert_error(post(r#"{"name": "x","#, json_ct).await.unwrap(), 400, "BAD_REQUEST").await;
        assert_error(post(r#"{"name": "x", "key": "XY"} trailing"#, json_ct).await.unwrap(), 400, "BAD_REQUEST").await;
        // PostgreSQL cannot store NUL in text or jsonb; both backends refuse it the same way.
        let err = assert_error(post(r#"{"name": "a\u0000b", "key": "NU"}"#, json_ct).await.unwrap(), 422, "VALIDATION_ERROR").await;
        assert_eq!(err["details"]["field"], "name");
        let err = assert_error(post(r#"{"name": "n", "key": "NU", "settings": {"deep": ["ok", "\u0000"]}}"#, json_ct).await.unwrap(), 422, "VALIDATION_ERROR").await;
        assert_eq!(err["details"]["field"], "settings.deep.1");
        assert_error(post("", json_ct).await.unwrap(), 400, "BAD_REQUEST").await;
        assert_error(post(r#"{"name":"a","key":"AB"}"#, None).await.unwrap(), 415, "UNSUPPORTED_MEDIA_TYPE").await;
        assert_error(post(r#"{"name":"a","key":"AB"}"#, Some("text/plain")).await.unwrap(), 415, "UNSUPPORTED_MEDIA_TYPE").await;

        let err = assert_error(post(r#"{"name": "x"}"#, json_ct).await.unwrap(), 422, "VALIDATION_ERROR").await;
        assert_eq!(err["details"]["field"], "key");
        let err = assert_error(post(r#"{"name": 5, "key": "AB"}"#, json_ct).await.unwrap(), 422, "VALIDATION_ERROR").await;
        assert_eq!(err["details"]["field"], "name");
        let err = assert_error(post(r#"{"name": "x", "key": "AB", "status": "weird"}"#, json_ct).await.unwrap(), 422, "VALIDATION_ERROR").await;
        assert_eq!(err["details"]["field"], "status");
        let err = assert_error(post(r#"{"name": "", "key": "A"}"#, json_ct).await.unwrap(), 422, "VALIDATION_ERROR").await;
        let fields: Vec<_> = err["details"]["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap().to_string()).collect();
        assert_eq!(fields, ["name", "key"]);
        assert_error(post("[1, 2]", json_ct).await.unwrap(), 422, "VALIDATION_ERROR").await;

        // Over the 1 MiB default limit.
        let big = format!(r#"{{"name": "x", "key": "AB", "description": "{}"}}"#, "a".repeat(1_100_000));
        let resp = app.req(Method::POST, "/api/v1/projects").header("content-type", "application/json").body(big).send().await.unwrap();
        assert_error(resp, 413, "PAYLOAD_TOO_LARGE").await;

        // Path ids: malformed is 400, unknown is 404, never 500.
        let err = assert_error(app.get("/api/v1/projects/not-a-uuid").await, 400, "BAD_REQUEST").await;
        assert!(err["message"].as_str().unwrap().contains("id"));
        assert_error(app.get(&format!("/api/v1/projects/{}", uuid::Uuid::now_v7())).await, 404, "NOT_FOUND").await;
        assert_error(app.get("/api/v1/environments/123").await, 400, "BAD_REQUEST").await;
        // Query of the wrong type.
        assert_error(app.get("/api/v1/projects?limit=many").await, 422, "VALIDATION_ERROR").await;
        assert_error(app.get("/api/v1/projects?status_filter=bogus").await, 422, "VALIDATION_ERROR").await;
    }

    async fn request_ids_are_echoed_or_generated(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let resp = app.anon(Method::GET, "/api/health").header("x-request-id", "trace-abc-123").send().await.unwrap();
        assert_eq!(resp.headers()["x-request-id"], "trace-abc-123");
        let resp = app.get("/api/v1/projects").await;
        let generated = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        assert!(generated.len() >= 16);
        let resp = app.get("/api/v1/projects").await;
        assert_ne!(resp.headers()["x-request-id"].to_str().unwrap(), generated);
        // An error carries the same id in the header and the body.
        let resp = app.req(Method::GET, "/api/v1/nope").header("x-request-id", "mine-1").send().await.unwrap();
        let err = assert_error(resp, 404, "NOT_FOUND").await;
        assert_eq!(err["request_id"], "mine-1");
    }

    async fn pagination_has_bounds_totals_and_the_skip_alias(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        for i in 0..120 {
            let r = app.post("/api/v1/projects", json!({"name": format!("p{i:03}"), "key": format!("K{i:03}")})).await;
            assert_eq!(r.status(), 201);
        }
        let page = json(app.get("/api/v1/projects").await).await;
        assert_eq!(page["total"], 121, "120 plus DEFAULT");
        assert_eq!(page["limit"], 50);
        assert_eq!(page["offset"], 0);
        assert_eq!(page["items"].as_array().unwrap().len(), 50);
        // Newest first.
        assert_eq!(page["items"][0]["name"], "p119");

        let mut seen = std::collections::HashSet::new();
        for offset in [0, 100] {
            let p = json(app.get(&format!("/api/v1/projects?limit=100&offset={offset}")).await).await;
            for item in p["items"].as_array().unwrap() {
                assert!(seen.insert(item["id"].as_str().unwrap().to_string()), "duplicate across pages");
            }
            assert_eq!(p["total"], 121);
        }
        assert_eq!(seen.len(), 121);

        let p = json(app.get("/api/v1/projects?limit=10&skip=115").await).await;
        assert_eq!(p["offset"], 115);
        assert_eq!(p["items"].as_array().unwrap().len(), 6);
        let p = json(app.get("/api/v1/projects?offset=500").await).await;
        assert_eq!(p["items"].as_array().unwrap().len(), 0);
        assert_eq!(p["total"], 121, "total is known past the end");
        let p = json(app.get("/api/v1/projects?limit=500").await).await;
        assert_eq!(p["items"].as_array().unwrap().len(), 121);

        for bad in ["limit=0", "limit=501", "offset=-1", "skip=-5"] {
            let err = assert_error(app.get(&format!("/api/v1/projects?{bad}")).await, 422, "VALIDATION_ERROR").await;
            assert!(err["details"]["field"].is_string(), "{err}");
        }
        // Other collections use the same envelope.
        for path in ["/api/v1/environments", "/api/v1/api-keys"] {
            let p = json(app.get(path).await).await;
            assert!(p["items"].is_array() && p["total"].is_i64() && p["limit"] == 50 && p["offset"] == 0, "{p}");
        }
    }

    async fn patch_and_put_are_partial_updates(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let p = json(app.post("/api/v1/projects", json!({"name": "Alpha", "key": "alp", "description": "first", "goals": "ship"})).await).await;
        assert_eq!(p["key"], "ALP", "keys are stored uppercase");
        let id = p["id"].as_str().unwrap();

        let r = app.req(Method::PATCH, &format!("/api/v1/projects/{id}")).json(&json!({"name": "Alpha 2"})).send().await.unwrap();
        let p = json(r).await;
        assert_eq!(p["name"], "Alpha 2");
        assert_eq!(p["description"], "first", "absent fields stay");
        assert_eq!(p["goals"], "ship");

        let r = app.req(Method::PUT, &format!("/api/v1/projects/{id}")).json(&json!({"description": null, "status": "archived"})).send().await.unwrap();
        let p = json(r).await;
        assert_eq!(p["description"], serde_json::Value::Null, "null clears");
        assert_eq!(p["name"], "Alpha 2");
        assert_eq!(p["status"], "archived");
        assert!(p["archived_at"].is_string());
        assert_ne!(p["updated_at"], p["created_at"]);

        let r = app.req(Method::PATCH, &format!("/api/v1/projects/{id}")).json(&json!({"status": "active"})).send().await.unwrap();
        let p = json(r).await;
        assert!(p["archived_at"].is_null());

        // Environments behave the same.
        let e = json(app.post("/api/v1/environments", json!({"name": "staging", "description": "d", "tags": ["a"]})).await).await;
        let eid = e["id"].as_str().unwrap();
        let r = app.req(Method::PUT, &format!("/api/v1/environments/{eid}")).json(&json!({"display_name": "Staging"})).send().await.unwrap();
        let e = json(r).await;
        assert_eq!(e["display_name"], "Staging");
        assert_eq!(e["description"], "d");
        assert_eq!(e["tags"], json!(["a"]));
        // An empty patch changes nothing but is fine.
        let r = app.req(Method::PATCH, &format!("/api/v1/environments/{eid}")).json(&json!({})).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }

    async fn deletes_answer_id_and_deleted(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let p = json(app.post("/api/v1/projects", json!({"name": "Gone", "key": "GONE"})).await).await;
        let id = p["id"].as_str().unwrap();
        let r = app.req(Method::DELETE, &format!("/api/v1/projects/{id}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(json(r).await, json!({"id": id, "deleted": true}));
        assert_error(app.get(&format!("/api/v1/projects/{id}")).await, 404, "NOT_FOUND").await;
        let r = app.req(Method::DELETE, &format!("/api/v1/projects/{id}")).send().await.unwrap();
        assert_error(r, 404, "NOT_FOUND").await;
    }

    async fn idempotency_keys_replay_the_first_answer(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let send = |key: &'static str, body: serde_json::Value| {
            app.req(Method::POST, "/api/v1/projects").header("idempotency-key", key).json(&body).send()
        };
        let first = send("k-1", json!({"name": "Once", "key": "ONCE"})).await.unwrap();
        assert_eq!(first.status(), 201);
        assert_eq!(first.headers()["idempotent-replayed"], "false");
        let first = json(first).await;
        let again = send("k-1", json!({"name": "Once", "key": "ONCE"})).await.unwrap();
        assert_eq!(again.status(), 201);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(json(again).await, first);
        let list = json(app.get("/api/v1/projects").await).await;
        assert_eq!(list["total"], 2, "DEFAULT and one created");

        // Same key, different body.
        let other = send("k-1", json!({"name": "Twice", "key": "TWICE"})).await.unwrap();
        assert_error(other, 409, "CONFLICT").await;
        // A refused attempt is not remembered: the retry runs again (and is refused again here).
        let bad = send("k-2", json!({"name": "Once", "key": "ONCE"})).await.unwrap();
        assert_error(bad, 409, "CONFLICT").await;
        let bad_again = send("k-2", json!({"name": "Once", "key": "ONCE"})).await.unwrap();
        assert_error(bad_again, 409, "CONFLICT").await;
        // Keys are per organization.
        let other_org = app.org_with_key("other-org", cp_types::org::Role::Admin).await;
        let r = app.req_as(&other_org, Method::POST, "/api/v1/projects").header("idempotency-key", "k-1")
            .json(&json!({"name": "Twice", "key": "TWICE"})).send().await.unwrap();
        assert_eq!(r.status(), 201);
        // Records belong to the key that made them: another key of the same org runs its own request.
        let member = app.key("default", cp_types::org::Role::Member).await;
        let r = app.req_as(&member, Method::POST, "/api/v1/projects").header("idempotency-key", "k-3")
            .json(&json!({"name": "Member", "key": "MEMB"})).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let r = app.req(Method::POST, "/api/v1/projects").header("idempotency-key", "k-3")
            .json(&json!({"name": "Member", "key": "MEMB"})).send().await.unwrap();
        assert_error(r, 409, "CONFLICT").await;
        // A new API key is a secret shown once: never stored for replay.
        let mint = || app.req(Method::POST, "/api/v1/api-keys").header("idempotency-key", "k-4")
            .json(&json!({"name": "minted", "role": "viewer"})).send();
        let a = json(mint().await.unwrap()).await;
        let b = json(mint().await.unwrap()).await;
        assert_ne!(a["key"], b["key"]);
        // Without the header nothing is remembered.
        let r = app.post("/api/v1/projects", json!({"name": "Free", "key": "FREE"})).await;
        assert!(r.headers().get("idempotent-replayed").is_none());
    }

    async fn unknown_request_fields_are_ignored(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let r = app.post("/api/v1/projects", json!({
            "name": "Extra", "key": "EXTRA", "owner_email": "x@y.z", "something_new": {"a": 1}
        })).await;
        assert_eq!(r.status(), 201);
        let r = app.post("/api/v1/environments", json!({"name": "extra-env", "worker_token": "zzz", "foo": [1]})).await;
        assert_eq!(r.status(), 201);
        let body = json(r).await;
        assert!(body.get("worker_token").is_none());
    }
}
