//! Secrets, integrations, custom integrations and the resolved execution environment
//! (API §3 Secret and Integration rows), on both backends.

use crate::common::{Backend, TestApp, assert_error, json};
use cp_server::services::exec_env::{Target, resolve};
use cp_store::secrets::Reader;
use cp_types::org::Role;
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Connection;
use uuid::Uuid;

/// The master key `TestApp` configures.
const MASTER_KEY: [u8; 32] = [7u8; 32];

fn id_literal(app: &TestApp, id: Uuid) -> String {
    match app.backend {
        Backend::Sqlite => format!("X'{}'", id.simple()),
        Backend::Postgres => format!("'{id}'"),
    }
}

/// An agent or team row with its own execution environment (no API creates them yet).
async fn insert_entity(app: &TestApp, table: &str, org: &str, name: &str, ee: Value) -> Uuid {
    let id = app.insert_member_row(table, org, name).await;
    app.exec_sql(&format!(
        "UPDATE {table} SET execution_environment = '{ee}' WHERE id = {}",
        id_literal(app, id)
    ))
    .await;
    id
}

/// Links an environment to an agent (`agent_environments`) or team (`team_environments`).
async fn link_environment(app: &TestApp, kind: &str, entity: Uuid, env: &str, org: &str, position: i64) {
    let env = Uuid::parse_str(env).unwrap();
    app.exec_sql(&format!(
        "INSERT INTO {kind}_environments ({kind}_id, environment_id, organization_id, position) \
         VALUES ({}, {}, '{org}', {position})",
        id_literal(app, entity),
        id_literal(app, env)
    ))
    .await;
}

/// One bytes column of one row, read straight from the database.
async fn raw_bytes(app: &TestApp, sql: &str) -> Vec<u8> {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match app.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&app.db.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
        }
    }
}

async fn send(app: &TestApp, key: &str, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut r = app.req_as(key, method, path);
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.unwrap()
}

/// The body as text, asserting the status.
async fn text(resp: reqwest::Response, status: u16) -> String {
    let got = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert_eq!(got, status, "{body}");
    body
}

both_backends! {
    async fn secrets_crud_and_values_never_appear_in_metadata(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let admin = app.admin_key.clone();
        let value = "s3cr3t-VALUE-4242";

        let r = app.post("/api/v1/secrets", json!({"name": "DB_PASSWORD", "value": value, "description": "db"})).await;
        let body = text(r, 201).await;
        assert!(!body.contains(value), "{body}");
        let s: Value = serde_json::from_str(&body).unwrap();
        for (field, want) in [("organization_id", json!("default")), ("name", json!("DB_PASSWORD")),
            ("description", json!("db")), ("version", json!(1)), ("last_rotated_at", Value::Null)] {
            assert_eq!(s[field], want, "{field}");
        }
        assert!(s.get("value").is_none());
        assert!(s["created_at"].as_str().unwrap().ends_with('Z'));
        let id = s["id"].as_str().unwrap().to_string();

        // Duplicates, names, values.
        let err = assert_error(app.post("/api/v1/secrets", json!({"name": "DB_PASSWORD", "value": "x"})).await, 409, "CONFLICT").await;
        assert!(err["message"].as_str().unwrap().contains("name"), "{err}");
        for bad in ["1ABC", "has-dash", "", "with space", "ünï"] {
            let err = assert_error(app.post("/api/v1/secrets", json!({"name": bad, "value": "x"})).await, 422, "VALIDATION_ERROR").await;
            assert_eq!(err["details"]["field"], "name", "{bad}: {err}");
        }
        assert_error(app.post("/api/v1/secrets", json!({"name": "X"})).await, 422, "VALIDATION_ERROR").await;
        assert_error(app.post("/api/v1/secrets", json!({"name": "X", "value": ""})).await, 422, "VALIDATION_ERROR").await;
        let r = app.post("/api/v1/secrets", json!({"name": "X", "value": 987654321})).await;
        let body = text(r, 422).await;
        assert!(!body.contains("987654321"), "a wrongly typed value is not echoed: {body}");
        let big = "v".repeat(64 * 1024 + 1);
        assert_error(app.post("/api/v1/secrets", json!({"name": "X", "value": big})).await, 422, "VALIDATION_ERROR").await;

        // List and get never show the value.
        let body = text(app.get("/api/v1/secrets").await, 200).await;
        assert!(!body.contains(value), "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(page["total"], 1);
        assert_eq!(page["items"][0]["name"], "DB_PASSWORD");
        let body = text(app.get("/api/v1/secrets/DB_PASSWORD").await, 200).await;
        assert!(!body.contains(value));
        assert_error(app.get("/api/v1/secrets/NOPE").await, 404, "NOT_FOUND").await;

        // Description edits keep the version; a new value rotates it and keeps the name.
        let r = send(&app, &admin, Method::PATCH, "/api/v1/secrets/DB_PASSWORD", Some(json!({"description": "primary"}))).await;
        let s = json(r).await;
        assert_eq!((s["description"].as_str(), s["version"].as_i64()), (Some("primary"), Some(1)));
        let r = send(&app, &admin, Method::PUT, "/api/v1/secrets/DB_PASSWORD", Some(json!({"value": "rotated-1"}))).await;
        let body = text(r, 200).await;
        assert!(!body.contains("rotated-1"));
        let s: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(s["name"], "DB_PASSWORD");
        assert_eq!(s["id"], id.as_str());
        assert_eq!(s["version"], 2);
        assert_eq!(s["description"], "primary");
        assert!(s["last_rotated_at"].is_string());
        let v = json(app.get("/api/v1/secrets/value/DB_PASSWORD").await).await;
        assert_eq!(v, json!({"name": "DB_PASSWORD", "value": "rotated-1"}));
        let r = send(&app, &admin, Method::PATCH, "/api/v1/secrets/DB_PASSWORD", Some(json!({"description": null}))).await;
        assert_eq!(json(r).await["description"], Value::Null);
        let r = send(&app, &admin, Method::PATCH, "/api/v1/secrets/DB_PASSWORD", Some(json!({"name": "OTHER"}))).await;
        assert_error(r, 422, "VALIDATION_ERROR").await;
        let r = send(&app, &admin, Method::PATCH, "/api/v1/secrets/DB_PASSWORD", Some(json!({"value": ""}))).await;
        assert_error(r, 422, "VALIDATION_ERROR").await;
        let r = send(&app, &admin, Method::PATCH, "/api/v1/secrets/NOPE", Some(json!({"value": "x"}))).await;
        assert_error(r, 404, "NOT_FOUND").await;

        // Values: admin keys, and worker keys for the runs their workers hold (none here).
        let worker = app.key("default", Role::Worker).await;
        let member = app.key("default", Role::Member).await;
        let viewer = app.key("default", Role::Viewer).await;
        for key in [&member, &viewer, &worker] {
            let r = send(&app, key, Method::GET, "/api/v1/secrets/value/DB_PASSWORD", None).await;
            let body = text(r, 403).await;
            assert!(!body.contains("rotated-1"));
        }
        assert_error(app.get("/api/v1/secrets/value/NOPE").await, 404, "NOT_FOUND").await;
        // Members manage secrets without reading them; viewers only see metadata.
        let r = send(&app, &member, Method::POST, "/api/v1/secrets", Some(json!({"name": "MEMBER_MADE", "value": "m"}))).await;
        assert_eq!(r.status(), 201);
        assert_eq!(send(&app, &viewer, Method::GET, "/api/v1/secrets", None).await.status(), 200);
        assert_error(send(&app, &viewer, Method::POST, "/api/v1/secrets", Some(json!({"name": "V", "value": "v"}))).await, 403, "FORBIDDEN").await;
        assert_error(send(&app, &worker, Method::GET, "/api/v1/secrets", None).await, 403, "FORBIDDEN").await;

        // A secret may be called "value".
        app.post("/api/v1/secrets", json!({"name": "value", "value": "vv"})).await;
        assert_eq!(json(app.get("/api/v1/secrets/value").await).await["name"], "value");
        assert_eq!(json(app.get("/api/v1/secrets/value/value").await).await["value"], "vv");

        // Delete.
        let r = send(&app, &admin, Method::DELETE, "/api/v1/secrets/DB_PASSWORD", None).await;
        assert_eq!(json(r).await, json!({"id": id, "deleted": true}));
        assert_error(app.get("/api/v1/secrets/DB_PASSWORD").await, 404, "NOT_FOUND").await;
        assert_error(app.get("/api/v1/secrets/value/DB_PASSWORD").await, 404, "NOT_FOUND").await;
        assert_error(send(&app, &admin, Method::DELETE, "/api/v1/secrets/DB_PASSWORD", None).await, 404, "NOT_FOUND").await;
        // The name is free again.
        assert_eq!(app.post("/api/v1/secrets", json!({"name": "DB_PASSWORD", "value": "again"})).await.status(), 201);
    }

    async fn every_value_read_is_in_the_access_log(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.post("/api/v1/secrets", json!({"name": "API_TOKEN", "value": "tok"})).await;
        app.post("/api/v1/secrets", json!({"name": "UNRELATED", "value": "no"})).await;
        let worker = app.key("default", Role::Worker).await;
        let member = app.key("default", Role::Member).await;

        assert_eq!(json(app.get("/api/v1/secrets/API_TOKEN/access-log").await).await["total"], 0);
        app.get("/api/v1/secrets/value/API_TOKEN").await;
        // A worker key without a run needing the secret is refused; once its worker holds a run
        // of an agent whose environment names the secret, it may read it. The claim itself hands
        // the value over too, recorded with purpose `execution`.
        assert_error(send(&app, &worker, Method::GET, "/api/v1/secrets/value/API_TOKEN", None).await, 403, "FORBIDDEN").await;
        let agent = json(app.post("/api/v1/agents", json!({"name": "needs-token", "execution_environment": {"secrets": ["API_TOKEN"]}})).await).await;
        let envs = json(app.get("/api/v1/environments").await).await;
        let env = envs["items"][0]["id"].as_str().unwrap().to_string();
        let q = json(app.post(&format!("/api/v1/environments/{env}/worker-queues"), json!({"name": "tokens"})).await).await;
        let q = q["id"].as_str().unwrap();
        let r = app.post(&format!("/api/v1/agents/{}/execute", agent["id"].as_str().unwrap()), json!({"prompt": "go", "worker_queue_id": q})).await;
        assert_eq!(r.status(), 201);
        let execution = json(r).await["execution_id"].as_str().unwrap().to_string();
        let w = crate::common::worker::TestWorker::start(&app.url, &worker, q, "reader").await;
        let claim = w.claim(3).await;
        assert_eq!(claim["env_vars"]["API_TOKEN"], "tok");
        let v = json(send(&app, &worker, Method::GET, "/api/v1/secrets/value/API_TOKEN", None).await).await;
        assert_eq!(v["value"], "tok");
        assert_error(send(&app, &worker, Method::GET, "/api/v1/secrets/value/UNRELATED", None).await, 403, "FORBIDDEN").await;
        send(&app, &member, Method::GET, "/api/v1/secrets/value/API_TOKEN", None).await;

        let admin_info = json(app.get("/api/v1/auth/validate").await).await;
        let worker_info = json(send(&app, &worker, Method::GET, "/api/v1/auth/validate", None).await).await;
        let log = json(app.get("/api/v1/secrets/API_TOKEN/access-log").await).await;
        assert_eq!(log["total"], 4, "{log}");
        let rows = log["items"].as_array().unwrap();
        assert_eq!(rows[0]["key_id"], worker_info["key_id"], "newest first");
        assert_eq!(rows[0]["role"], "worker");
        assert_eq!(rows[0]["key_name"], worker_info["key_name"]);
        assert_eq!(rows[0]["purpose"], "api");
        assert_eq!((rows[1]["key_id"].as_str(), rows[1]["purpose"].as_str()), (worker_info["key_id"].as_str(), Some("execution")));
        // A worker's reads name the run they were for and the key that started it.
        for row in &rows[..2] {
            assert_eq!(row["execution_id"], execution.as_str(), "{row}");
            assert_eq!(row["started_by"]["key_id"], admin_info["key_id"], "{row}");
            assert!(row["started_by"]["key_name"].is_string(), "{row}");
        }
        // The refused attempt is in the log too, with no run.
        assert_eq!((rows[2]["key_id"].as_str(), rows[2]["purpose"].as_str()), (worker_info["key_id"].as_str(), Some("refused")));
        assert!(rows[2].get("execution_id").is_none());
        assert_eq!(rows[3]["key_id"], admin_info["key_id"]);
        assert_eq!(rows[3]["role"], "admin");
        assert_eq!(rows[3]["purpose"], "api");
        assert!(rows[3].get("started_by").is_none());
        for row in rows {
            assert_eq!(row["secret_name"], "API_TOKEN");
            assert!(row["accessed_at"].as_str().unwrap().ends_with('Z'));
            assert!(row.get("value").is_none());
        }
        let page = json(app.get("/api/v1/secrets/API_TOKEN/access-log?limit=1&offset=1").await).await;
        assert_eq!((page["total"].as_i64(), page["items"].as_array().unwrap().len()), (Some(4), 1));

        // Admin only.
        for key in [&worker, &member] {
            assert_error(send(&app, key, Method::GET, "/api/v1/secrets/API_TOKEN/access-log", None).await, 403, "FORBIDDEN").await;
        }
        assert_error(app.get("/api/v1/secrets/NOPE/access-log").await, 404, "NOT_FOUND").await;
    }

    async fn ciphertexts_at_rest_are_bound_to_their_row(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.post("/api/v1/secrets", json!({"name": "ALPHA", "value": "alpha-plaintext"})).await;
        app.post("/api/v1/secrets", json!({"name": "BETA", "value": "beta-plaintext"})).await;

        let stored = raw_bytes(&app, "SELECT ciphertext FROM secrets WHERE name = 'ALPHA'").await;
        assert_eq!(stored.len(), 12 + "alpha-plaintext".len() + 16, "nonce || ciphertext || tag");
        assert!(!stored.windows(5).any(|w| w == b"alpha"), "the plaintext is not stored");

        // Rotation stores a new ciphertext under a new nonce.
        send(&app, &app.admin_key, Method::PATCH, "/api/v1/secrets/ALPHA", Some(json!({"value": "alpha-plaintext"}))).await;
        let rotated = raw_bytes(&app, "SELECT ciphertext FROM secrets WHERE name = 'ALPHA'").await;
        assert_ne!(rotated, stored);
        assert_ne!(rotated[..12], stored[..12]);

        // A ciphertext copied into another row does not decrypt there: a clean 500 that leaks nothing.
        app.exec_sql("UPDATE secrets SET ciphertext = (SELECT ciphertext FROM secrets WHERE name = 'ALPHA') WHERE name = 'BETA'").await;
        let r = app.get("/api/v1/secrets/value/BETA").await;
        assert_eq!(r.status(), 500);
        let body = r.text().await.unwrap();
        assert!(body.contains("INTERNAL_ERROR") && !body.contains("plaintext"), "{body}");
        assert_eq!(json(app.get("/api/v1/secrets/BETA/access-log").await).await["total"], 0, "no value, no read");
        assert_eq!(json(app.get("/api/v1/secrets/value/ALPHA").await).await["value"], "alpha-plaintext");

        // Integration credentials too.
        let i = json(app.post("/api/v1/integrations", json!({"name": "gh", "integration_type": "github",
            "credentials": {"token": "ghp_plaintext_token"}})).await).await;
        let stored = raw_bytes(&app, "SELECT credentials FROM integrations WHERE name = 'gh'").await;
        assert!(!stored.windows(9).any(|w| w == b"plaintext"));
        app.post("/api/v1/integrations", json!({"name": "gh2", "integration_type": "github", "credentials": {"token": "other"}})).await;
        app.exec_sql("UPDATE integrations SET credentials = (SELECT credentials FROM integrations WHERE name = 'gh') WHERE name = 'gh2'").await;
        let gh2 = json(app.get("/api/v1/integrations?integration_type=github").await).await["items"][0]["id"].as_str().unwrap().to_string();
        assert_ne!(gh2, i["id"].as_str().unwrap());
        let r = app.get(&format!("/api/v1/integrations/github/{gh2}/token")).await;
        assert_eq!(r.status(), 500);
        assert!(!r.text().await.unwrap().contains("plaintext"));
    }

    async fn organizations_never_see_each_others_secrets_or_integrations(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.post("/api/v1/secrets", json!({"name": "SHARED_NAME", "value": "org-a-value"})).await;
        let integ = json(app.post("/api/v1/integrations", json!({"name": "gh", "integration_type": "github",
            "credentials": {"token": "org-a-token"}})).await).await;
        let iid = integ["id"].as_str().unwrap().to_string();
        let custom = json(app.post("/api/v1/custom-integrations", json!({"name": "pg"})).await).await;
        let cid = custom["id"].as_str().unwrap().to_string();
        let b = app.org_with_key("org-b", Role::Admin).await;
        let b_worker = app.key("org-b", Role::Worker).await;

        assert_eq!(json(send(&app, &b, Method::GET, "/api/v1/secrets", None).await).await["total"], 0);
        for (method, path, body) in [
            (Method::GET, "/api/v1/secrets/SHARED_NAME".to_string(), None),
            (Method::PATCH, "/api/v1/secrets/SHARED_NAME".to_string(), Some(json!({"value": "x"}))),
            (Method::DELETE, "/api/v1/secrets/SHARED_NAME".to_string(), None),
            (Method::GET, "/api/v1/secrets/value/SHARED_NAME".to_string(), None),
            (Method::GET, "/api/v1/secrets/SHARED_NAME/access-log".to_string(), None),
            (Method::GET, format!("/api/v1/integrations/{iid}"), None),
            (Method::PATCH, format!("/api/v1/integrations/{iid}"), Some(json!({"name": "mine"}))),
            (Method::DELETE, format!("/api/v1/integrations/{iid}"), None),
            (Method::GET, format!("/api/v1/integrations/github/{iid}/token"), None),
            (Method::GET, format!("/api/v1/integrations/github/creds/{iid}"), None),
            (Method::GET, "/api/v1/integrations/github/creds/0".to_string(), None),
            (Method::GET, format!("/api/v1/integrations/{iid}/access-log"), None),
            (Method::GET, format!("/api/v1/custom-integrations/{cid}"), None),
            (Method::PUT, format!("/api/v1/custom-integrations/{cid}"), Some(json!({"name": "mine"}))),
            (Method::DELETE, format!("/api/v1/custom-integrations/{cid}"), None),
        ] {
            let r = send(&app, &b, method.clone(), &path, body).await;
            let err = assert_error(r, 404, "NOT_FOUND").await;
            assert!(!err.to_string().contains("org-a"), "{method} {path}: {err}");
        }
        // Org B's worker key holds no run, so it reads no secret at all (it learns nothing of A's).
        let err = assert_error(send(&app, &b_worker, Method::GET, "/api/v1/secrets/value/SHARED_NAME", None).await, 403, "FORBIDDEN").await;
        assert!(!err.to_string().contains("org-a"));
        assert_eq!(json(send(&app, &b, Method::GET, "/api/v1/integrations", None).await).await["total"], 0);
        assert_eq!(json(send(&app, &b, Method::GET, "/api/v1/custom-integrations", None).await).await["total"], 0);

        // The same names are free in org B, and its value is its own.
        let r = send(&app, &b, Method::POST, "/api/v1/secrets", Some(json!({"name": "SHARED_NAME", "value": "org-b-value"}))).await;
        assert_eq!(r.status(), 201);
        let v = json(send(&app, &b, Method::GET, "/api/v1/secrets/value/SHARED_NAME", None).await).await;
        assert_eq!(v["value"], "org-b-value");
        assert_eq!(json(app.get("/api/v1/secrets/value/SHARED_NAME").await).await["value"], "org-a-value");
        let r = send(&app, &b, Method::POST, "/api/v1/integrations", Some(json!({"name": "gh", "integration_type": "github"}))).await;
        assert_eq!(r.status(), 201);
        // Nothing of A changed.
        assert_eq!(json(app.get(&format!("/api/v1/integrations/{iid}")).await).await["name"], "gh");
        assert_eq!(json(app.get("/api/v1/secrets/SHARED_NAME/access-log").await).await["total"], 1);
    }

    async fn integrations_crud_tokens_and_the_connected_filter(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let admin = app.admin_key.clone();
        let worker = app.key("default", Role::Worker).await;
        let member = app.key("default", Role::Member).await;
        let viewer = app.key("default", Role::Viewer).await;

        let r = app.post("/api/v1/integrations", json!({"name": "GitHub", "integration_type": "github",
            "config": {"org": "acme"}, "description": "code", "credentials": {"token": "ghp_secret_1"}})).await;
        let body = text(r, 201).await;
        assert!(!body.contains("ghp_secret_1"), "{body}");
        let gh: Value = serde_json::from_str(&body).unwrap();
        for (field, want) in [("name", json!("GitHub")), ("integration_type", json!("github")), ("config", json!({"org": "acme"})),
            ("status", json!("active")), ("connected", json!(true)), ("has_credentials", json!(true)),
            ("env_vars", json!(["GH_TOKEN"])), ("organization_id", json!("default"))] {
            assert_eq!(gh[field], want, "{field}");
        }
        assert!(gh.get("credentials").is_none());
        let gh_id = gh["id"].as_str().unwrap().to_string();
        let jira = json(app.post("/api/v1/integrations", json!({"name": "Jira", "integration_type": "jira"})).await).await;
        assert_eq!((jira["connected"].as_bool(), jira["has_credentials"].as_bool()), (Some(false), Some(false)));
        let jira_id = jira["id"].as_str().unwrap().to_string();
        let aws = json(app.post("/api/v1/integrations", json!({"name": "AWS", "integration_type": "aws",
            "credentials": {"access_key_id": "AKIAEXAMPLE", "secret_access_key": "aws-secret-key"}})).await).await;
        assert_eq!(aws["env_vars"], json!(["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]));
        let aws_id = aws["id"].as_str().unwrap().to_string();

        // Validation and uniqueness.
        assert_error(app.post("/api/v1/integrations", json!({"name": "GitHub", "integration_type": "slack"})).await, 409, "CONFLICT").await;
        for bad in [
            json!({"name": "x", "integration_type": "bitbucket"}),
            json!({"name": "x"}),
            json!({"name": "", "integration_type": "slack"}),
            json!({"name": "x", "integration_type": "slack", "config": [1]}),
            json!({"name": "x", "integration_type": "slack", "credentials": "tok"}),
            json!({"name": "x", "integration_type": "slack", "credentials": {}}),
            json!({"name": "x", "integration_type": "aws", "credentials": {"access_key_id": "A"}}),
            json!({"name": "x", "integration_type": "slack", "credentials": {"token": ""}}),
            json!({"name": "x", "integration_type": "slack", "status": "connected"}),
        ] {
            assert_error(app.post("/api/v1/integrations", bad.clone()).await, 422, "VALIDATION_ERROR").await;
        }
        let body = text(app.post("/api/v1/integrations", json!({"name": "x", "integration_type": "slack",
            "credentials": {"token": 13572468}})).await, 422).await;
        assert!(!body.contains("13572468"), "{body}");
        assert_error(send(&app, &viewer, Method::POST, "/api/v1/integrations", Some(json!({"name": "v", "integration_type": "slack"}))).await, 403, "FORBIDDEN").await;

        // List, filters, get.
        let all = text(app.get("/api/v1/integrations").await, 200).await;
        assert!(!all.contains("ghp_secret_1") && !all.contains("aws-secret-key"));
        assert_eq!(serde_json::from_str::<Value>(&all).unwrap()["total"], 3);
        let names = |page: Value| -> Vec<String> {
            page["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_string()).collect()
        };
        assert_eq!(names(json(app.get("/api/v1/integrations?connected_only=true").await).await), ["AWS", "GitHub"]);
        assert_eq!(json(app.get("/api/v1/integrations?connected_only=false").await).await["total"], 3);
        assert_eq!(names(json(app.get("/api/v1/integrations?integration_type=jira").await).await), ["Jira"]);
        assert_error(app.get("/api/v1/integrations?connected_only=maybe").await, 422, "VALIDATION_ERROR").await;
        assert_eq!(send(&app, &viewer, Method::GET, &format!("/api/v1/integrations/{gh_id}"), None).await.status(), 200);
        assert_error(app.get(&format!("/api/v1/integrations/{}", Uuid::now_v7())).await, 404, "NOT_FOUND").await;
        assert_error(app.get("/api/v1/integrations/not-a-uuid").await, 400, "BAD_REQUEST").await;

        // Token endpoint and the Python client's alias.
        let t = json(app.get(&format!("/api/v1/integrations/github/{gh_id}/token")).await).await;
        assert_eq!(t["token"], "ghp_secret_1");
        assert_eq!(t["env_var"], "GH_TOKEN");
        assert_eq!(t["integration_id"], gh_id.as_str());
        assert_eq!(t["integration_type"], "github");
        // A worker key whose workers hold no run using the integration gets nothing.
        let body = text(send(&app, &worker, Method::GET, &format!("/api/v1/integrations/github/creds/{gh_id}"), None).await, 403).await;
        assert!(!body.contains("ghp_secret_1"));
        let t = json(app.get("/api/v1/integrations/github/creds/0").await).await;
        assert_eq!(t["integration_id"], gh_id.as_str(), "0: the organization's one github integration");
        let t = json(app.get(&format!("/api/v1/integrations/aws/{aws_id}/token")).await).await;
        assert_eq!(t["env_vars"], json!({"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "aws-secret-key"}));
        assert_eq!((t["env_var"].as_str(), t["token"].as_str()), (Some("AWS_ACCESS_KEY_ID"), Some("AKIAEXAMPLE")));
        for key in [&member, &viewer] {
            let body = text(send(&app, key, Method::GET, &format!("/api/v1/integrations/github/{gh_id}/token"), None).await, 403).await;
            assert!(!body.contains("ghp_secret_1"));
        }
        assert_error(app.get(&format!("/api/v1/integrations/slack/{gh_id}/token")).await, 404, "NOT_FOUND").await;
        assert_error(app.get(&format!("/api/v1/integrations/bitbucket/{gh_id}/token")).await, 404, "NOT_FOUND").await;
        assert_error(app.get("/api/v1/integrations/github/nope/token").await, 400, "BAD_REQUEST").await;
        assert_error(app.get(&format!("/api/v1/integrations/github/{}/token", Uuid::now_v7())).await, 404, "NOT_FOUND").await;
        assert_error(app.get("/api/v1/integrations/slack/creds/0").await, 404, "NOT_FOUND").await;
        // Jira has no credentials yet; the client's "0" finds it, then says why there is no token.
        assert_error(app.get("/api/v1/integrations/jira/creds/0").await, 409, "CONFLICT").await;
        let r = send(&app, &admin, Method::PUT, &format!("/api/v1/integrations/{jira_id}"),
            Some(json!({"credentials": {"token": "jira-tok"}}))).await;
        let j = json(r).await;
        assert_eq!((j["connected"].as_bool(), j["name"].as_str()), (Some(true), Some("Jira")));
        assert!(j["credentials_updated_at"].is_string());
        assert_eq!(json(app.get("/api/v1/integrations/jira/creds/0").await).await["token"], "jira-tok");
        // Two connected github integrations: "0" is ambiguous.
        app.post("/api/v1/integrations", json!({"name": "GitHub 2", "integration_type": "github", "credentials": {"token": "t2"}})).await;
        assert_error(app.get("/api/v1/integrations/github/creds/0").await, 404, "NOT_FOUND").await;

        // Every credential read is logged.
        let log = json(app.get(&format!("/api/v1/integrations/{gh_id}/access-log")).await).await;
        assert_eq!(log["total"], 3);
        assert_eq!(log["items"][0]["role"], "admin");
        assert_eq!(log["items"][1]["role"], "worker");
        assert_eq!(log["items"][1]["purpose"], "refused");
        assert_eq!(log["items"][0]["integration_type"], "github");
        assert_error(send(&app, &member, Method::GET, &format!("/api/v1/integrations/{gh_id}/access-log"), None).await, 403, "FORBIDDEN").await;

        // Updates: status, type, credentials removal, name clash.
        let r = send(&app, &admin, Method::PATCH, &format!("/api/v1/integrations/{gh_id}"), Some(json!({"status": "inactive"}))).await;
        let g = json(r).await;
        assert_eq!((g["connected"].as_bool(), g["has_credentials"].as_bool()), (Some(false), Some(true)));
        assert_error(app.get(&format!("/api/v1/integrations/github/{gh_id}/token")).await, 409, "CONFLICT").await;
        assert_eq!(names(json(app.get("/api/v1/integrations?connected_only=true").await).await), ["GitHub 2", "AWS", "Jira"]);
        let r = send(&app, &admin, Method::PATCH, &format!("/api/v1/integrations/{gh_id}"), Some(json!({"integration_type": "gitlab"}))).await;
        assert_error(r, 422, "VALIDATION_ERROR").await;
        let r = send(&app, &admin, Method::PATCH, &format!("/api/v1/integrations/{gh_id}"), Some(json!({"credentials": {"nope": "x"}}))).await;
        assert_error(r, 422, "VALIDATION_ERROR").await;
        let r = send(&app, &admin, Method::PATCH, &format!("/api/v1/integrations/{gh_id}"), Some(json!({"name": "Jira"}))).await;
        assert_error(r, 409, "CONFLICT").await;
        let r = send(&app, &admin, Method::PATCH, &format!("/api/v1/integrations/{aws_id}"),
            Some(json!({"credentials": null, "description": "off", "config": {"region": "eu-west-1"}}))).await;
        let a = json(r).await;
        assert_eq!((a["has_credentials"].as_bool(), a["connected"].as_bool()), (Some(false), Some(false)));
        assert_eq!(a["config"], json!({"region": "eu-west-1"}));
        assert_error(app.get(&format!("/api/v1/integrations/aws/{aws_id}/token")).await, 409, "CONFLICT").await;

        // Delete.
        let r = send(&app, &admin, Method::DELETE, &format!("/api/v1/integrations/{aws_id}"), None).await;
        assert_eq!(json(r).await, json!({"id": aws_id, "deleted": true}));
        assert_error(app.get(&format!("/api/v1/integrations/{aws_id}")).await, 404, "NOT_FOUND").await;
        assert_error(send(&app, &admin, Method::DELETE, &format!("/api/v1/integrations/{aws_id}"), None).await, 404, "NOT_FOUND").await;
    }

    async fn custom_integrations_crud_and_validation(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let admin = app.admin_key.clone();
        let body = json!({
            "name": "postgres", "integration_type": "database", "description": "main db", "tags": ["db"],
            "config": {
                "env_vars": {"PGHOST": "db.internal", "PGPORT": "5432"},
                "secrets": ["PGPASSWORD"],
                "files": [{"path": "~/.pgpass", "secret_ref": "PGPASS_FILE", "mode": "0600"},
                          {"path": "/etc/pg/service.conf", "content": "[main]\nhost=db"}],
                "context_prompt": "Use psql.",
                "connection_test": {"command": "pg_isready", "timeout": 3}
            }
        });
        let r = app.post("/api/v1/custom-integrations", body).await;
        assert_eq!(r.status(), 201);
        let c = json(r).await;
        assert_eq!(c["integration_type"], "database");
        assert_eq!(c["status"], "active");
        assert_eq!(c["config"]["files"][1]["mode"], "0644", "default mode");
        assert_eq!(c["config"]["connection_test"], json!({"enabled": true, "command": "pg_isready", "timeout": 3}));
        assert_eq!(c["tags"], json!(["db"]));
        let id = c["id"].as_str().unwrap().to_string();
        assert_eq!(json(app.get(&format!("/api/v1/custom-integrations/{id}")).await).await, c);
        let minimal = json(app.post("/api/v1/custom-integrations", json!({"name": "bare"})).await).await;
        assert_eq!(minimal["integration_type"], "custom");
        assert_eq!(minimal["config"], json!({"env_vars": {}, "secrets": [], "files": []}));

        assert_error(app.post("/api/v1/custom-integrations", json!({"name": "postgres"})).await, 409, "CONFLICT").await;
        for (bad, field) in [
            (json!({"name": "x", "config": {"env_vars": {"BAD-NAME": "v"}}}), "config.env_vars"),
            (json!({"name": "x", "config": {"secrets": ["1BAD"]}}), "config.secrets"),
            (json!({"name": "x", "config": {"files": [{"path": "a"}]}}), "config.files.0"),
            (json!({"name": "x", "config": {"files": [{"path": "a", "content": "c", "secret_ref": "S"}]}}), "config.files.0"),
            (json!({"name": "x", "config": {"files": [{"path": "../../etc/passwd", "content": "c"}]}}), "config.files.0.path"),
            (json!({"name": "x", "config": {"files": [{"path": "a", "secret_ref": "no-dash"}]}}), "config.files.0.secret_ref"),
            (json!({"name": "x", "config": {"files": [{"path": "a", "content": "c", "mode": "999"}]}}), "config.files.0.mode"),
            (json!({"name": "x", "config": {"connection_test": {"command": "true", "timeout": 0}}}), "config.connection_test.timeout"),
            (json!({"name": "x", "config": {"connection_test": {"command": " "}}}), "config.connection_test.command"),
            (json!({"name": "x", "integration_type": "Has Space"}), "integration_type"),
            (json!({"name": "x", "status": "deleted"}), "status"),
            (json!({"name": " "}), "name"),
        ] {
            let err = assert_error(app.post("/api/v1/custom-integrations", bad.clone()).await, 422, "VALIDATION_ERROR").await;
            assert_eq!(err["details"]["field"], field, "{bad}: {err}");
        }

        // PUT and PATCH are partial.
        let r = send(&app, &admin, Method::PUT, &format!("/api/v1/custom-integrations/{id}"), Some(json!({"status": "inactive"}))).await;
        let u = json(r).await;
        assert_eq!(u["status"], "inactive");
        assert_eq!(u["config"], c["config"]);
        assert_eq!(u["description"], "main db");
        let r = send(&app, &admin, Method::PATCH, &format!("/api/v1/custom-integrations/{id}"),
            Some(json!({"description": null, "tags": [], "config": {"env_vars": {"PGHOST": "other"}}}))).await;
        let u = json(r).await;
        assert_eq!(u["description"], Value::Null);
        assert_eq!(u["config"]["env_vars"], json!({"PGHOST": "other"}));
        assert_eq!(u["config"]["secrets"], json!([]));
        let r = send(&app, &admin, Method::PATCH, &format!("/api/v1/custom-integrations/{id}"), Some(json!({"name": "bare"}))).await;
        assert_error(r, 409, "CONFLICT").await;
        let r = send(&app, &admin, Method::PATCH, &format!("/api/v1/custom-integrations/{id}"), Some(json!({"config": {"secrets": ["a-b"]}}))).await;
        assert_error(r, 422, "VALIDATION_ERROR").await;

        let list = json(app.get("/api/v1/custom-integrations").await).await;
        assert_eq!(list["total"], 2);
        assert_eq!(list["items"][0]["name"], "bare", "newest first");
        let r = send(&app, &admin, Method::DELETE, &format!("/api/v1/custom-integrations/{id}"), None).await;
        assert_eq!(json(r).await, json!({"id": id, "deleted": true}));
        assert_error(app.get(&format!("/api/v1/custom-integrations/{id}")).await, 404, "NOT_FOUND").await;
        assert_error(app.get("/api/v1/custom-integrations/xyz").await, 400, "BAD_REQUEST").await;
    }

    async fn the_resolver_merges_layers_resolves_references_and_masks(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        app.post("/api/v1/secrets", json!({"name": "DB_PASSWORD", "value": "db-pass-value"})).await;
        app.post("/api/v1/secrets", json!({"name": "PGPASS_FILE", "value": "pgpass-file-value"})).await;
        app.post("/api/v1/secrets", json!({"name": "OVERRIDE_ME", "value": "from-secret"})).await;
        let gh = json(app.post("/api/v1/integrations", json!({"name": "gh", "integration_type": "github",
            "credentials": {"token": "ghp-resolver-token"}})).await).await;
        let gh_id = gh["id"].as_str().unwrap().to_string();
        let off = json(app.post("/api/v1/integrations", json!({"name": "off", "integration_type": "slack"})).await).await;
        let off_id = off["id"].as_str().unwrap().to_string();
        let custom = json(app.post("/api/v1/custom-integrations", json!({"name": "pg", "config": {
            "env_vars": {"PGHOST": "db.internal", "A": "from-custom"},
            "secrets": ["DB_PASSWORD", "PG_MISSING"],
            "files": [{"path": ".pgpass", "secret_ref": "PGPASS_FILE", "mode": "0600"}, {"path": "x.conf", "content": "x=1"}],
            "context_prompt": "Use psql."
        }})).await).await;
        let custom_id = custom["id"].as_str().unwrap().to_string();

        // Created in the reverse of their position, so id order is not merge order.
        let second = json(app.post("/api/v1/environments", json!({"name": "second", "execution_environment": {
            "env_vars": {"B": "second", "C": "second", "OVERRIDE_ME": "from-env"}, "secrets": ["NOT_THERE"],
            "integration_ids": [off_id, gh_id], "mcp_servers": {"fs": {"cmd": "second"}}, "working_dir": "/second"
        }})).await).await;
        let first = json(app.post("/api/v1/environments", json!({"name": "first", "execution_environment": {
            "env_vars": {"A": "first", "B": "first"}, "secrets": ["DB_PASSWORD", "OVERRIDE_ME"],
            "integration_ids": [gh_id], "mcp_servers": {"fs": {"cmd": "first"}, "git": {"cmd": "git"}}
        }})).await).await;
        let agent = insert_entity(&app, "agents", "default", "builder", json!({
            "env_vars": {"C": "agent"}, "integration_ids": [custom_id, "not-a-uuid", Uuid::now_v7().to_string()],
            "working_dir": "/agent"
        })).await;
        link_environment(&app, "agent", agent, first["id"].as_str().unwrap(), "default", 0).await;
        link_environment(&app, "agent", agent, second["id"].as_str().unwrap(), "default", 1).await;

        let r = app.get(&format!("/api/v1/execution-environment/agents/{agent}/resolved")).await;
        let body = text(r, 200).await;
        for secret in ["db-pass-value", "pgpass-file-value", "from-secret", "ghp-resolver-token"] {
            assert!(!body.contains(secret), "{secret} leaked: {body}");
        }
        let env: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(env["masked"], true);
        assert_eq!(env["env_vars"], json!({
            "A": "first", "B": "second", "C": "agent", "PGHOST": "db.internal",
            "GH_TOKEN": "********", "DB_PASSWORD": "********", "OVERRIDE_ME": "********",
        }));
        assert_eq!(env["sources"]["A"], json!({"kind": "environment", "id": first["id"], "name": "first"}));
        assert_eq!(env["sources"]["B"]["name"], "second");
        assert_eq!(env["sources"]["C"], json!({"kind": "agent", "id": agent.to_string(), "name": "builder"}));
        assert_eq!(env["sources"]["PGHOST"], json!({"kind": "custom_integration", "id": custom_id, "name": "pg"}));
        assert_eq!(env["sources"]["GH_TOKEN"], json!({"kind": "integration", "id": gh_id, "name": "gh"}));
        assert_eq!(env["sources"]["OVERRIDE_ME"], json!({"kind": "secret", "name": "OVERRIDE_ME"}));
        assert_eq!(env["secrets"], json!(["DB_PASSWORD", "OVERRIDE_ME", "NOT_THERE", "PG_MISSING"]));
        assert_eq!(env["integration_ids"].as_array().unwrap().len(), 5);
        assert_eq!(env["integration_ids"][0], gh_id.as_str());
        assert_eq!(env["integration_ids"][1], off_id.as_str());
        assert_eq!(env["mcp_servers"], json!({"fs": {"cmd": "second"}, "git": {"cmd": "git"}}));
        assert_eq!(env["working_dir"], "/agent");
        assert_eq!(env["context_prompts"], json!(["Use psql."]));
        assert_eq!(env["files"][0]["content"], "********");
        assert_eq!(env["files"][1]["content"], "x=1");
        let layers: Vec<&str> = env["layers"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
        assert_eq!(layers, ["first", "second", "builder"]);
        let missing: Vec<(String, String)> = env["missing"].as_array().unwrap().iter()
            .map(|m| (m["reference"].as_str().unwrap().to_string(), m["reason"].as_str().unwrap().to_string()))
            .collect();
        assert!(missing.contains(&(off_id.clone(), "inactive".into())) || missing.contains(&(off_id.clone(), "no_credentials".into())), "{missing:?}");
        assert!(missing.contains(&("not-a-uuid".into(), "not_found".into())), "{missing:?}");
        assert!(missing.contains(&("NOT_THERE".into(), "not_found".into())), "{missing:?}");
        assert!(missing.contains(&("PG_MISSING".into(), "not_found".into())), "{missing:?}");
        assert_eq!(missing.len(), 5, "{missing:?}");
        // The admin view reads nothing secret, so it is not an access.
        assert_eq!(json(app.get("/api/v1/secrets/DB_PASSWORD/access-log").await).await["total"], 0);

        // The engine's call gets the real values, and with an audit reader the reads are logged.
        let resolved = resolve(&app.store, &MASTER_KEY, "default", Target::Agent(agent), Some(Reader {
            key_id: Uuid::now_v7(), key_name: "worker-1", role: Role::Worker, purpose: "execution", run: None,
        })).await.unwrap();
        assert!(!resolved.masked);
        assert_eq!(resolved.env_vars["DB_PASSWORD"], "db-pass-value");
        assert_eq!(resolved.env_vars["OVERRIDE_ME"], "from-secret", "a secret beats a plain env var");
        assert_eq!(resolved.env_vars["GH_TOKEN"], "ghp-resolver-token");
        assert_eq!(resolved.files[0].content, "pgpass-file-value");
        assert!(!format!("{resolved:?}").contains("db-pass-value"), "Debug hides values");
        let log = json(app.get("/api/v1/secrets/DB_PASSWORD/access-log").await).await;
        assert_eq!(log["total"], 1);
        assert_eq!(log["items"][0]["purpose"], "execution");
        assert_eq!(log["items"][0]["key_name"], "worker-1");
        assert_eq!(json(app.get("/api/v1/secrets/PGPASS_FILE/access-log").await).await["total"], 1);
        assert_eq!(json(app.get(&format!("/api/v1/integrations/{gh_id}/access-log")).await).await["total"], 1);

        // Admins only; unknown and malformed ids.
        let member = app.key("default", Role::Member).await;
        assert_error(send(&app, &member, Method::GET, &format!("/api/v1/execution-environment/agents/{agent}/resolved"), None).await, 403, "FORBIDDEN").await;
        assert_error(app.get(&format!("/api/v1/execution-environment/agents/{}/resolved", Uuid::now_v7())).await, 404, "NOT_FOUND").await;
        assert_error(app.get("/api/v1/execution-environment/agents/nope/resolved").await, 400, "BAD_REQUEST").await;

        // Teams: the team's environments, then the team itself.
        let team = insert_entity(&app, "teams", "default", "ops", json!({"env_vars": {"B": "team"}, "secrets": ["DB_PASSWORD"]})).await;
        link_environment(&app, "team", team, second["id"].as_str().unwrap(), "default", 0).await;
        let env = json(app.get(&format!("/api/v1/execution-environment/teams/{team}/resolved")).await).await;
        assert_eq!(env["env_vars"]["B"], "team");
        assert_eq!(env["env_vars"]["C"], "second");
        assert_eq!(env["env_vars"]["DB_PASSWORD"], "********");
        assert_eq!(env["sources"]["B"]["kind"], "team");
        assert_eq!(env["working_dir"], "/second");
        let layers: Vec<&str> = env["layers"].as_array().unwrap().iter().map(|l| l["kind"].as_str().unwrap()).collect();
        assert_eq!(layers, ["environment", "team"]);
        assert_error(app.get(&format!("/api/v1/execution-environment/teams/{agent}/resolved")).await, 404, "NOT_FOUND").await;
    }

    async fn another_organizations_references_resolve_as_missing(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.post("/api/v1/secrets", json!({"name": "A_ONLY", "value": "org-a-secret"})).await;
        let gh = json(app.post("/api/v1/integrations", json!({"name": "gh", "integration_type": "github",
            "credentials": {"token": "org-a-token"}})).await).await;
        let gh_id = gh["id"].as_str().unwrap().to_string();
        let custom = json(app.post("/api/v1/custom-integrations", json!({"name": "c", "config": {"env_vars": {"X": "1"}}})).await).await;
        let a_agent = insert_entity(&app, "agents", "default", "a-agent", json!({})).await;

        let b = app.org_with_key("org-b", Role::Admin).await;
        let b_agent = insert_entity(&app, "agents", "org-b", "b-agent", json!({
            "secrets": ["A_ONLY"], "integration_ids": [gh_id, custom["id"]]
        })).await;
        let r = send(&app, &b, Method::GET, &format!("/api/v1/execution-environment/agents/{b_agent}/resolved"), None).await;
        let body = text(r, 200).await;
        assert!(!body.contains("org-a-secret") && !body.contains("org-a-token"));
        let env: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(env["env_vars"], json!({}));
        assert_eq!(env["missing"].as_array().unwrap().len(), 3, "{env}");
        assert!(env["missing"].as_array().unwrap().iter().all(|m| m["reason"] == "not_found"));
        let real = resolve(&app.store, &MASTER_KEY, "org-b", Target::Agent(b_agent), None).await.unwrap();
        assert!(real.env_vars.is_empty());

        // Another organization's agent is not found, through the API and the resolver alike.
        assert_error(send(&app, &b, Method::GET, &format!("/api/v1/execution-environment/agents/{a_agent}/resolved"), None).await, 404, "NOT_FOUND").await;
        assert!(matches!(
            resolve(&app.store, &MASTER_KEY, "org-b", Target::Agent(a_agent), None).await,
            Err(cp_store::StoreError::NotFound)
        ));
    }
}

/// A queue in the default environment.
async fn queue(app: &TestApp, name: &str) -> String {
    let envs = json(app.get("/api/v1/environments").await).await;
    let env = envs["items"][0]["id"].as_str().unwrap().to_string();
    let q = json(
        app.post(
            &format!("/api/v1/environments/{env}/worker-queues"),
            json!({"name": name}),
        )
        .await,
    )
    .await;
    q["id"].as_str().unwrap().to_string()
}

/// Whether `needle` is anywhere in the database: every SQLite file (WAL included) byte by
/// byte, or on PostgreSQL every stored idempotent answer.
async fn stored_anywhere(app: &TestApp, needle: &str) -> bool {
    match app.backend {
        Backend::Sqlite => std::fs::read_dir(app.db.dir.path()).unwrap().any(|f| {
            let bytes = std::fs::read(f.unwrap().path()).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        }),
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
            let bodies: Vec<Option<Vec<u8>>> = sqlx::query_scalar("SELECT response_body FROM idempotency_keys")
                .fetch_all(&mut c)
                .await
                .unwrap();
            bodies
                .iter()
                .flatten()
                .any(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        }
    }
}

both_backends! {
    async fn worker_keys_open_only_what_their_runs_use(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let gh = json(app.post("/api/v1/integrations", json!({"name": "GitHub", "integration_type": "github", "credentials": {"token": "ghp_run_only"}})).await).await;
        let gh_id = gh["id"].as_str().unwrap().to_string();
        let other = json(app.post("/api/v1/integrations", json!({"name": "Jira", "integration_type": "jira", "credentials": {"token": "jira_not_yours"}})).await).await;
        let other_id = other["id"].as_str().unwrap().to_string();
        let agent = json(app.post("/api/v1/agents", json!({"name": "gh-user", "execution_environment": {"integration_ids": [gh_id]}})).await).await;
        let q = queue(&app, "scoped").await;
        let worker = app.key("default", Role::Worker).await;
        let token_path = format!("/api/v1/integrations/github/{gh_id}/token");
        assert_error(send(&app, &worker, Method::GET, &token_path, None).await, 403, "FORBIDDEN").await;

        let r = app.post(&format!("/api/v1/agents/{}/execute", agent["id"].as_str().unwrap()), json!({"prompt": "go", "worker_queue_id": q})).await;
        let execution = json(r).await["execution_id"].as_str().unwrap().to_string();
        let w = crate::common::worker::TestWorker::start(&app.url, &worker, &q, "scoped").await;
        w.claim(3).await;
        // Held now: the integration the agent names opens; another one does not.
        let t = json(send(&app, &worker, Method::GET, &token_path, None).await).await;
        assert_eq!(t["token"], "ghp_run_only");
        let body = text(send(&app, &worker, Method::GET, &format!("/api/v1/integrations/jira/{other_id}/token"), None).await, 403).await;
        assert!(!body.contains("jira_not_yours"));
        let log = json(app.get(&format!("/api/v1/integrations/{gh_id}/access-log")).await).await;
        let api_read = log["items"].as_array().unwrap().iter().find(|r| r["purpose"] == "api").unwrap().clone();
        assert_eq!(api_read["execution_id"], execution.as_str(), "{log}");
        let refused = json(app.get(&format!("/api/v1/integrations/{other_id}/access-log")).await).await;
        assert_eq!(refused["items"][0]["purpose"], "refused", "{refused}");
        // Another worker key of the same organization holds nothing, so it opens nothing.
        let idle = app.key("default", Role::Worker).await;
        assert_error(send(&app, &idle, Method::GET, &token_path, None).await, 403, "FORBIDDEN").await;

        // A key made for one queue registers only there; a worker key never on another org's queue.
        let q2 = queue(&app, "elsewhere").await;
        let made = json(app.post("/api/v1/api-keys", json!({"name": "q-bound", "role": "worker", "worker_queue_id": q})).await).await;
        assert_eq!(made["worker_queue_id"], q.as_str(), "{made}");
        let bound = made["key"].as_str().unwrap().to_string();
        let r = send(&app, &bound, Method::POST, &format!("/api/v1/worker-queues/{q2}/start"), Some(json!({"hostname": "h"}))).await;
        let err = assert_error(r, 403, "FORBIDDEN").await;
        assert!(err["message"].as_str().unwrap().contains(&q), "{err}");
        let r = send(&app, &bound, Method::POST, "/api/v1/workers/register", Some(json!({"worker_queue_id": q2, "hostname": "h"}))).await;
        assert_error(r, 403, "FORBIDDEN").await;
        crate::common::worker::TestWorker::start(&app.url, &bound, &q, "bound-host").await;
        let r = app.post("/api/v1/api-keys", json!({"name": "x", "role": "member", "worker_queue_id": q})).await;
        assert_error(r, 422, "VALIDATION_ERROR").await;
        let r = app.post("/api/v1/api-keys", json!({"name": "x", "role": "worker", "worker_queue_id": Uuid::now_v7()})).await;
        assert_error(r, 404, "NOT_FOUND").await;
        let foreign = app.org_with_key("org-foreign", Role::Worker).await;
        let r = send(&app, &foreign, Method::POST, &format!("/api/v1/worker-queues/{q}/start"), Some(json!({"hostname": "h"}))).await;
        assert_error(r, 404, "NOT_FOUND").await;
    }

    async fn idempotent_answers_keep_no_plaintext_secret(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let value = "s3cr3t-value-never-at-rest-0x51";
        app.post("/api/v1/secrets", json!({"name": "DEPLOY_TOKEN", "value": value})).await;
        let agent = json(app.post("/api/v1/agents", json!({"name": "deployer", "execution_environment": {"secrets": ["DEPLOY_TOKEN"]}})).await).await;
        let q = queue(&app, "deploys").await;
        app.post(&format!("/api/v1/agents/{}/execute", agent["id"].as_str().unwrap()), json!({"prompt": "go", "worker_queue_id": q})).await;
        let worker = app.key("default", Role::Worker).await;
        let w = crate::common::worker::TestWorker::start(&app.url, &worker, &q, "idem").await;
        let poll = |k: &'static str| w.post(&format!("/api/v1/workers/{}/poll?wait=5", w.id)).header("Idempotency-Key", k).send();
        let first = poll("poll-1").await.unwrap();
        assert_eq!(first.headers()["idempotent-replayed"], "false");
        let first: Value = first.json().await.unwrap();
        assert_eq!(first["claim"]["env_vars"]["DEPLOY_TOKEN"], value);
        // The retry of a lost answer gets the same claim back, secret included.
        let again = poll("poll-1").await.unwrap();
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.json::<Value>().await.unwrap(), first);

        // A webhook's signing secret, on create and on rotation.
        app.req(Method::PATCH, "/api/v1/organization/settings").json(&json!({"webhook_allow_private_targets": true})).send().await.unwrap();
        let mut hooks = Vec::new();
        for (i, path) in ["/api/v1/webhooks", "rotate"].into_iter().enumerate() {
            let r = if path == "rotate" {
                app.req(Method::POST, &format!("/api/v1/webhooks/{}/rotate-secret", hooks[0]))
            } else {
                app.req(Method::POST, path).json(&json!({"url": "http://127.0.0.1:9/x", "events": ["execution.completed"]}))
            };
            let r = r.header("Idempotency-Key", format!("hook-{i}")).send().await.unwrap();
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
            let body: Value = r.json().await.unwrap();
            hooks.push(body["id"].as_str().unwrap().to_string());
            let secret = body["secret"].as_str().unwrap().to_string();
            assert!(!stored_anywhere(&app, &secret).await, "a webhook secret is stored in plaintext");
        }
        assert!(!stored_anywhere(&app, value).await, "a claimed secret is stored in plaintext");
    }

    async fn members_cannot_hand_secrets_to_runs(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.post("/api/v1/secrets", json!({"name": "PROD_DB_PASSWORD", "value": "pw"})).await;
        let gh = json(app.post("/api/v1/integrations", json!({"name": "GitHub", "integration_type": "github", "credentials": {"token": "t"}})).await).await;
        let gh_id = gh["id"].as_str().unwrap().to_string();
        let member = app.key("default", Role::Member).await;
        let secret_ee = json!({"execution_environment": {"secrets": ["PROD_DB_PASSWORD"]}});
        let integration_ee = json!({"execution_environment": {"integration_ids": [gh_id]}});
        let forbidden = |r: reqwest::Response| async move {
            let err = assert_error(r, 403, "FORBIDDEN").await;
            assert!(err["message"].as_str().unwrap().contains("admin"), "{err}");
        };
        let with = |base: Value, extra: &Value| {
            let mut b = base;
            b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            b
        };
        for extra in [&secret_ee, &integration_ee] {
            forbidden(send(&app, &member, Method::POST, "/api/v1/agents", Some(with(json!({"name": "a"}), extra))).await).await;
            forbidden(send(&app, &member, Method::POST, "/api/v1/teams", Some(with(json!({"name": "t"}), extra))).await).await;
            forbidden(send(&app, &member, Method::POST, "/api/v1/environments", Some(with(json!({"name": "env-x"}), extra))).await).await;
        }
        let r = send(&app, &member, Method::POST, "/api/v1/custom-integrations", Some(json!({"name": "db", "config": {"secrets": ["PROD_DB_PASSWORD"]}}))).await;
        forbidden(r).await;
        let r = send(&app, &member, Method::POST, "/api/v1/custom-integrations",
            Some(json!({"name": "db", "config": {"files": [{"path": "/tmp/pw", "secret_ref": "PROD_DB_PASSWORD"}]}}))).await;
        forbidden(r).await;

        // A member edits an agent an admin gave a secret: keeping it is fine, adding one is not.
        let agent = json(app.post("/api/v1/agents", with(json!({"name": "admins"}), &secret_ee)).await).await;
        let path = format!("/api/v1/agents/{}", agent["id"].as_str().unwrap());
        let r = send(&app, &member, Method::PATCH, &path, Some(json!({"description": "tidied", "execution_environment": {"secrets": ["PROD_DB_PASSWORD"], "env_vars": {"A": "1"}}}))).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        app.post("/api/v1/secrets", json!({"name": "OTHER", "value": "o"})).await;
        let r = send(&app, &member, Method::PATCH, &path, Some(json!({"execution_environment": {"secrets": ["PROD_DB_PASSWORD", "OTHER"]}}))).await;
        forbidden(r).await;
        let env_id = json(app.get("/api/v1/environments").await).await["items"][0]["id"].as_str().unwrap().to_string();
        let r = send(&app, &member, Method::PATCH, &format!("/api/v1/environments/{env_id}"), Some(secret_ee.clone())).await;
        forbidden(r).await;
        let q = queue(&app, "member-q").await;
        let r = send(&app, &member, Method::POST, &format!("{path}/execute"),
            Some(json!({"prompt": "x", "worker_queue_id": q, "execution_environment": {"secrets": ["OTHER"]}}))).await;
        forbidden(r).await;
        // The admin may.
        assert_eq!(app.req(Method::PATCH, &path).json(&json!({"execution_environment": {"secrets": ["PROD_DB_PASSWORD", "OTHER"]}})).send().await.unwrap().status(), 200);
        assert_eq!(app.post("/api/v1/custom-integrations", json!({"name": "db", "config": {"secrets": ["OTHER"]}})).await.status(), 201);
    }
}
