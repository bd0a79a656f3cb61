//! Context of organizations, projects, environments, teams and agents, and its resolution
//! (API §3, Context row), on both backends.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use crate::common::{Backend, TestApp, assert_error};
use cp_types::org::Role;
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Connection;
use uuid::Uuid;

/// Contexts name knowledge items and graph nodes by id. These tests write names (`k-org`,
/// `r1`) instead: each name becomes an item (or node) of the writer's organization on first
/// use, and answers show names again.
/// (server, key, field/name) → id.
type Slot = (String, String, String);
static NAMED: LazyLock<Mutex<HashMap<Slot, String>>> = LazyLock::new(Mutex::default);
static NAMES: LazyLock<Mutex<HashMap<String, String>>> = LazyLock::new(Mutex::default);

/// `body` with the names in its lists replaced by ids, made with `key` when new.
async fn real(app: &TestApp, key: &str, mut body: Value) -> Value {
    for field in ["knowledge_uuids", "resource_ids"] {
        let Some(list) = body.get_mut(field).and_then(Value::as_array_mut) else {
            continue;
        };
        if list.len() > 1000 {
            continue;
        }
        for entry in list.iter_mut() {
            let Some(name) = entry.as_str().map(str::to_string) else {
                continue;
            };
            if name.trim().is_empty() || name.len() > 500 || Uuid::parse_str(&name).is_ok() {
                continue;
            }
            let slot = (app.url.clone(), key.to_string(), format!("{field}/{name}"));
            let known = NAMED.lock().unwrap().get(&slot).cloned();
            let id = match known {
                Some(id) => id,
                None => {
                    let id =
                        if field == "knowledge_uuids" {
                            let r = app
                                .req_as(key, Method::POST, "/api/v1/knowledge")
                                .json(&json!({"title": name, "content": name}))
                                .send()
                                .await
                                .unwrap();
                            crate::common::json(r).await["id"].as_str().unwrap().to_string()
                        } else {
                            let r = app.req_as(key, Method::POST, "/api/v1/graph/nodes")
                            .json(&json!({"nodes": [{"external_id": name, "labels": ["Test"], "integration": "test"}]}))
                            .send().await.unwrap();
                            crate::common::json(r).await["nodes"][0]["id"]
                                .as_str()
                                .unwrap()
                                .to_string()
                        };
                    NAMED.lock().unwrap().insert(slot, id.clone());
                    NAMES.lock().unwrap().insert(id.clone(), name.clone());
                    id
                }
            };
            *entry = json!(id);
        }
    }
    body
}

/// `v` with every id made by [`real`] shown as its name again.
fn named(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(NAMES.lock().unwrap().get(&s).cloned().unwrap_or(s)),
        Value::Array(items) => Value::Array(items.into_iter().map(named).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, named(v))).collect()),
        other => other,
    }
}

async fn json(r: reqwest::Response) -> Value {
    named(crate::common::json(r).await)
}

async fn count_contexts(app: &TestApp) -> i64 {
    let sql = "SELECT COUNT(*) FROM contexts";
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

async fn create(app: &TestApp, path: &str, body: Value) -> Uuid {
    let r = app.post(path, body).await;
    assert_eq!(r.status(), 201, "{path}");
    json(r).await["id"].as_str().unwrap().parse().unwrap()
}

async fn new_agent(app: &TestApp, name: &str, environment_ids: &[Uuid], team_id: Option<Uuid>) -> Uuid {
    let body = json!({"name": name, "environment_ids": environment_ids, "team_id": team_id});
    create(app, "/api/v1/agents", body).await
}

async fn new_team(app: &TestApp, name: &str, environment_ids: &[Uuid]) -> Uuid {
    create(
        app,
        "/api/v1/teams",
        json!({"name": name, "environment_ids": environment_ids}),
    )
    .await
}

async fn env(app: &TestApp, name: &str) -> Uuid {
    create(app, "/api/v1/environments", json!({"name": name})).await
}

async fn project(app: &TestApp, name: &str) -> Uuid {
    create(app, "/api/v1/projects", json!({"name": name, "key": name})).await
}

async fn put(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    let body = real(app, &app.admin_key, body).await;
    app.req(Method::PUT, path).json(&body).send().await.unwrap()
}

async fn delete(app: &TestApp, path: &str) -> reqwest::Response {
    app.req(Method::DELETE, path).send().await.unwrap()
}

/// Stores a context whose every list holds `tag` and whose variables are `vars`.
async fn store(app: &TestApp, entity: &str, tag: &str, vars: Value) {
    let body = json!({
        "knowledge_uuids": [format!("k-{tag}"), "k-shared"],
        "resource_ids": [format!("r-{tag}")],
        "policy_ids": ["p-shared", format!("p-{tag}")],
        "variables": vars,
    });
    let r = put(app, &format!("/api/v1/context/{entity}"), body).await;
    assert_eq!(r.status(), 200, "{entity}");
}

both_backends! {
    async fn get_put_partial_put_and_delete_for_every_kind(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let agent = new_agent(&app, "builder", &[], None).await;
        let team = new_team(&app, "ops", &[]).await;
        let entities = [
            ("organization", "default".to_string()),
            ("project", project(&app, "CTX").await.to_string()),
            ("environment", env(&app, "staging").await.to_string()),
            ("team", team.to_string()),
            ("agent", agent.to_string()),
        ];
        for (kind, id) in &entities {
            let path = format!("/api/v1/context/{kind}/{id}");
            // Nothing stored: empty, and reading creates nothing.
            let empty = json(app.get(&path).await).await;
            assert_eq!(empty, json!({
                "id": null, "entity_type": kind, "entity_id": id, "organization_id": "default",
                "knowledge_uuids": [], "resource_ids": [], "policy_ids": [], "variables": {},
                "created_at": null, "updated_at": null,
            }), "{kind}");
            assert_eq!(count_contexts(&app).await, 0, "{kind}");

            let r = put(&app, &path, json!({
                "knowledge_uuids": ["k1", "k2"], "resource_ids": ["r1"], "policy_ids": ["p1"],
                "variables": {"region": "eu", "limits": {"cpu": 2}}, "unknown": "ignored",
            })).await;
            assert_eq!(r.status(), 200, "{kind}");
            let stored = json(r).await;
            assert_eq!(stored["entity_type"], *kind);
            assert_eq!(stored["entity_id"], id.as_str());
            assert_eq!(stored["organization_id"], "default");
            assert_eq!(stored["knowledge_uuids"], json!(["k1", "k2"]));
            assert_eq!(stored["resource_ids"], json!(["r1"]));
            assert_eq!(stored["policy_ids"], json!(["p1"]));
            assert_eq!(stored["variables"], json!({"region": "eu", "limits": {"cpu": 2}}));
            let row_id = stored["id"].as_str().unwrap().to_string();
            assert_eq!(Uuid::parse_str(&row_id).unwrap().get_version_num(), 7);
            let created = stored["created_at"].as_str().unwrap().to_string();
            assert!(created.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(&created).is_ok());
            assert_eq!(json(app.get(&path).await).await, stored, "{kind}");

            // Partial: fields left out stay; a given list replaces; `variables` replaces them all.
            let r = put(&app, &path, json!({"resource_ids": [], "variables": {"region": "us"}})).await;
            let updated = json(r).await;
            assert_eq!(updated["id"], row_id.as_str(), "one row per entity");
            assert_eq!(updated["created_at"], created.as_str());
            assert!(updated["updated_at"].as_str().unwrap() >= created.as_str());
            assert_eq!(updated["knowledge_uuids"], json!(["k1", "k2"]));
            assert_eq!(updated["resource_ids"], json!([]));
            assert_eq!(updated["policy_ids"], json!(["p1"]));
            assert_eq!(updated["variables"], json!({"region": "us"}));
            let r = put(&app, &path, json!({})).await;
            assert_eq!(json(r).await["knowledge_uuids"], json!(["k1", "k2"]));
            assert_eq!(count_contexts(&app).await, 1, "{kind}");

            let r = delete(&app, &path).await;
            assert_eq!(r.status(), 200);
            assert_eq!(json(r).await, json!({"id": format!("{kind}/{id}"), "deleted": true}));
            assert_eq!(json(app.get(&path).await).await, empty, "{kind}");
            assert_eq!(count_contexts(&app).await, 0);
            // Deleting again: nothing stored, the entity exists, still 200.
            assert_eq!(delete(&app, &path).await.status(), 200, "{kind}");
        }
    }

    async fn unknown_foreign_and_malformed_entities(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let other = app.org_with_key("org-b", Role::Admin).await;
        // Org B's environment and stored context, and an agent of org B.
        let r = app.req_as(&other, Method::POST, "/api/v1/environments").json(&json!({"name": "theirs"})).send().await.unwrap();
        let theirs = json(r).await["id"].as_str().unwrap().to_string();
        let body = real(&app, &other, json!({"knowledge_uuids": ["secret"]})).await;
        let r = app.req_as(&other, Method::PUT, &format!("/api/v1/context/environment/{theirs}"))
            .json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = app.req_as(&other, Method::PUT, "/api/v1/context/organization/org-b")
            .json(&json!({"variables": {"b": true}})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = app.req_as(&other, Method::POST, "/api/v1/agents").json(&json!({"name": "spy"})).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let their_agent = json(r).await["id"].as_str().unwrap().to_string();

        let unknown = Uuid::now_v7();
        let mut paths = vec![
            format!("environment/{theirs}"),
            format!("agent/{their_agent}"),
            "organization/org-b".to_string(),
            "organization/nobody".to_string(),
        ];
        for kind in ["project", "environment", "team", "agent"] {
            paths.push(format!("{kind}/{unknown}"));
        }
        for p in &paths {
            let err = assert_error(app.get(&format!("/api/v1/context/{p}")).await, 404, "NOT_FOUND").await;
            let kind = p.split('/').next().unwrap();
            assert_eq!(err["message"], format!("{kind} not found"));
            assert_error(put(&app, &format!("/api/v1/context/{p}"), json!({"policy_ids": ["x"]})).await, 404, "NOT_FOUND").await;
            assert_error(delete(&app, &format!("/api/v1/context/{p}")).await, 404, "NOT_FOUND").await;
            assert_error(app.get(&format!("/api/v1/context/resolve/{p}")).await, 404, "NOT_FOUND").await;
        }
        assert_error(app.get(&format!("/api/v1/agents/{their_agent}/context/resolved")).await, 404, "NOT_FOUND").await;
        assert_error(app.get(&format!("/api/v1/teams/{unknown}/context/resolved")).await, 404, "NOT_FOUND").await;
        // Org B's rows are untouched.
        let r = app.req_as(&other, Method::GET, &format!("/api/v1/context/environment/{theirs}")).send().await.unwrap();
        assert_eq!(json(r).await["knowledge_uuids"], json!(["secret"]));
        let r = app.req_as(&other, Method::GET, "/api/v1/context/resolve/organization/org-b").send().await.unwrap();
        assert_eq!(json(r).await["variables"], json!({"b": true}));

        // Unknown type: 422 naming the field; not a UUID: 400; neither is ever a 500.
        let err = assert_error(app.get("/api/v1/context/workspace/default").await, 422, "VALIDATION_ERROR").await;
        assert_eq!(err["details"]["field"], "entity_type");
        assert_error(put(&app, "/api/v1/context/Agent/x", json!({})).await, 422, "VALIDATION_ERROR").await;
        assert_error(app.get("/api/v1/context/resolve/user/1").await, 422, "VALIDATION_ERROR").await;
        for p in ["agent/not-a-uuid", "team/default", "project/1", "environment/%20"] {
            let err = assert_error(app.get(&format!("/api/v1/context/{p}")).await, 400, "BAD_REQUEST").await;
            assert_eq!(err["details"]["field"], "entity_id", "{p}");
            assert_error(delete(&app, &format!("/api/v1/context/{p}")).await, 400, "BAD_REQUEST").await;
            assert_error(app.get(&format!("/api/v1/context/resolve/{p}")).await, 400, "BAD_REQUEST").await;
        }
        assert_error(app.get("/api/v1/agents/nope/context/resolved").await, 400, "BAD_REQUEST").await;
        assert_error(app.req(Method::POST, "/api/v1/context/organization/default").send().await.unwrap(), 405, "METHOD_NOT_ALLOWED").await;
    }

    async fn validation_and_roles(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let path = "/api/v1/context/organization/default";
        let long = "x".repeat(513);
        let many: Vec<String> = (0..1001).map(|i| format!("k{i}")).collect();
        for (body, field) in [
            (json!({"variables": [1]}), "variables"),
            (json!({"variables": "a=b"}), "variables"),
            (json!({"knowledge_uuids": "k1"}), "knowledge_uuids"),
            (json!({"resource_ids": [1]}), "resource_ids[0]"),
            (json!({"policy_ids": ["ok", ""]}), "policy_ids[1]"),
            (json!({"policy_ids": ["  "]}), "policy_ids[0]"),
            (json!({"resource_ids": ["ok", long]}), "resource_ids[1]"),
            (json!({"knowledge_uuids": many}), "knowledge_uuids"),
        ] {
            let err = assert_error(put(&app, path, body.clone()).await, 422, "VALIDATION_ERROR").await;
            assert_eq!(err["details"]["field"], field, "{body}");
        }
        // Several bad fields are reported together.
        let err = assert_error(put(&app, path, json!({"variables": 1, "policy_ids": [""]})).await, 422, "VALIDATION_ERROR").await;
        assert_eq!(err["details"]["errors"].as_array().unwrap().len(), 2);
        // Only ids of the organization's knowledge items and graph nodes: 422 naming the entry.
        let stranger = app.org_with_key("org-b", Role::Admin).await;
        let theirs = real(&app, &stranger, json!({"knowledge_uuids": ["theirs"], "resource_ids": ["their-node"]})).await;
        let unknown = Uuid::now_v7().to_string();
        for (body, field) in [
            (json!({"knowledge_uuids": ["k1", unknown]}), "knowledge_uuids[1]"),
            (json!({"knowledge_uuids": [theirs["knowledge_uuids"][0]]}), "knowledge_uuids[0]"),
            (json!({"resource_ids": ["r1", theirs["resource_ids"][0]]}), "resource_ids[1]"),
            (json!({"resource_ids": [unknown]}), "resource_ids[0]"),
        ] {
            let err = assert_error(put(&app, path, body.clone()).await, 422, "VALIDATION_ERROR").await;
            assert_eq!(err["details"]["field"], field, "{body}");
        }
        let r = app.req(Method::PUT, path).json(&json!({"knowledge_uuids": ["k-free-text"]})).send().await.unwrap();
        let err = assert_error(r, 422, "VALIDATION_ERROR").await;
        assert_eq!(err["details"]["field"], "knowledge_uuids[0]");
        // Exactly at the limit is fine.
        let at_limit: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
        let r = put(&app, path, json!({"knowledge_uuids": at_limit, "resource_ids": ["z"]})).await;
        assert_eq!(r.status(), 200);
        assert_eq!(json(r).await["knowledge_uuids"].as_array().unwrap().len(), 1000);
        assert_error(app.req(Method::PUT, path).body("{").header("content-type", "application/json").send().await.unwrap(), 400, "BAD_REQUEST").await;
        assert_error(app.req(Method::PUT, path).body("{}").send().await.unwrap(), 415, "UNSUPPORTED_MEDIA_TYPE").await;
        assert_eq!(count_contexts(&app).await, 1, "refused updates store nothing");

        // Viewers read, never write.
        let viewer = app.key("default", Role::Viewer).await;
        let r = app.req_as(&viewer, Method::GET, path).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = app.req_as(&viewer, Method::GET, "/api/v1/context/resolve/organization/default").send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = app.req_as(&viewer, Method::PUT, path).json(&json!({"policy_ids": []})).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;
        assert_error(app.req_as(&viewer, Method::DELETE, path).send().await.unwrap(), 403, "FORBIDDEN").await;
        let member = app.key("default", Role::Member).await;
        let r = app.req_as(&member, Method::PUT, path).json(&json!({"policy_ids": ["p"]})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_error(app.anon(Method::GET, path).send().await.unwrap(), 401, "UNAUTHORIZED").await;
    }

    async fn deleting_an_entity_deletes_its_context(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let agent = new_agent(&app, "gone", &[], None).await;
        let team = new_team(&app, "gone-team", &[]).await;
        let e = env(&app, "temporary").await;
        let p = project(&app, "TMP").await;
        for entity in [format!("agent/{agent}"), format!("team/{team}"), format!("environment/{e}"), format!("project/{p}"), "organization/default".into()] {
            store(&app, &entity, "x", json!({})).await;
        }
        assert_eq!(count_contexts(&app).await, 5);
        assert_eq!(delete(&app, &format!("/api/v1/agents/{agent}")).await.status(), 200);
        assert_eq!(count_contexts(&app).await, 4);
        assert_error(app.get(&format!("/api/v1/context/agent/{agent}")).await, 404, "NOT_FOUND").await;
        assert_eq!(delete(&app, &format!("/api/v1/teams/{team}")).await.status(), 200);
        assert_eq!(delete(&app, &format!("/api/v1/environments/{e}")).await.status(), 200);
        assert_eq!(delete(&app, &format!("/api/v1/projects/{p}")).await.status(), 200);
        assert_eq!(count_contexts(&app).await, 1);
        // A recreated entity starts empty.
        let e = env(&app, "temporary").await;
        assert_eq!(json(app.get(&format!("/api/v1/context/environment/{e}")).await).await["knowledge_uuids"], json!([]));
    }

    async fn an_agent_resolves_through_org_projects_environments_teams(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let default = json(app.get("/api/v1/projects/default").await).await["id"].as_str().unwrap().to_string();
        let (p1, p2) = (project(&app, "ONE").await, project(&app, "TWO").await);
        let (e1, e2, e3, e4) =
            (env(&app, "first").await, env(&app, "second").await, env(&app, "third").await, env(&app, "fourth").await);
        // The agent joins DEFAULT when created, then p2, then p1 (oldest membership first); its
        // environments are e2 then e1; it joins `platform` (bringing e3 and e1, already seen)
        // before `older` (created first, bringing e4): teams come in the order the agent joined.
        let older = new_team(&app, "older", &[e4]).await;
        let team = new_team(&app, "platform", &[e1, e3]).await;
        let agent = new_agent(&app, "resolver", &[e2, e1], Some(team)).await;
        let r = app.req(Method::POST, &format!("/api/v1/teams/{older}/agents/{agent}")).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        for p in [p2, p1] {
            let r = app.post(&format!("/api/v1/projects/{p}/agents"), json!({"agent_id": agent})).await;
            assert_eq!(r.status(), 201);
        }

        store(&app, "organization/default", "org", json!({"a": "org", "b": "org", "tier": {"x": 1}})).await;
        store(&app, &format!("project/{p2}"), "p2", json!({"b": "p2", "c": "p2"})).await;
        store(&app, &format!("project/{p1}"), "p1", json!({"c": "p1"})).await;
        store(&app, &format!("environment/{e2}"), "e2", json!({"d": "e2"})).await;
        store(&app, &format!("environment/{e1}"), "e1", json!({"d": "e1", "e": "e1"})).await;
        store(&app, &format!("environment/{e3}"), "e3", json!({"e": "e3"})).await;
        store(&app, &format!("team/{team}"), "team", json!({"f": "team", "tier": null})).await;
        store(&app, &format!("team/{older}"), "older", json!({"f": "older"})).await;
        store(&app, &format!("agent/{agent}"), "agent", json!({"g": "agent", "a": "agent"})).await;

        let resolved = json(app.get(&format!("/api/v1/context/resolve/agent/{agent}")).await).await;
        let order = ["org", "p2", "p1", "e2", "e1", "e3", "team", "older", "agent"];
        let chain: Vec<(String, String)> = resolved["layers"].as_array().unwrap().iter()
            .map(|l| (l["layer"].as_str().unwrap().to_string(), l["entity_id"].as_str().unwrap().to_string()))
            .collect();
        let expected: Vec<(String, String)> = [
            ("organization", "default".to_string()), ("project", default.clone()), ("project", p2.to_string()),
            ("project", p1.to_string()), ("environment", e2.to_string()), ("environment", e1.to_string()),
            ("environment", e3.to_string()), ("environment", e4.to_string()), ("team", team.to_string()),
            ("team", older.to_string()), ("agent", agent.to_string()),
        ].into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        assert_eq!(chain, expected);
        assert_eq!(resolved["entity_type"], "agent");
        assert_eq!(resolved["entity_id"], agent.to_string());
        let mut knowledge: Vec<String> = vec!["k-org".into(), "k-shared".into()];
        knowledge.extend(order[1..].iter().map(|t| format!("k-{t}")));
        assert_eq!(resolved["knowledge_uuids"], json!(knowledge));
        let resources: Vec<String> = order.iter().map(|t| format!("r-{t}")).collect();
        assert_eq!(resolved["resource_ids"], json!(resources));
        let mut policies: Vec<String> = vec!["p-shared".into()];
        policies.extend(order.iter().map(|t| format!("p-{t}")));
        assert_eq!(resolved["policy_ids"], json!(policies));
        assert_eq!(resolved["variables"], json!({
            "a": "agent", "b": "p2", "c": "p1", "d": "e1", "e": "e3", "f": "older", "g": "agent", "tier": null,
        }));
        // DEFAULT and e4 have nothing stored: in the chain, empty.
        assert_eq!(resolved["layers"][1]["knowledge_uuids"], json!([]));
        assert_eq!(resolved["layers"][7]["variables"], json!({}));
        let team_layer = &resolved["layers"][8];
        assert_eq!(team_layer["variables"], json!({"f": "team", "tier": null}));
        assert_eq!(team_layer["knowledge_uuids"], json!(["k-team", "k-shared"]));

        // The shortcut answers the same.
        assert_eq!(json(app.get(&format!("/api/v1/agents/{agent}/context/resolved")).await).await, resolved);

        // Layers without stored context still show the chain, empty.
        assert_eq!(delete(&app, &format!("/api/v1/context/environment/{e3}")).await.status(), 200);
        let resolved = json(app.get(&format!("/api/v1/agents/{agent}/context/resolved")).await).await;
        assert_eq!(resolved["layers"][6], json!({
            "layer": "environment", "entity_id": e3.to_string(),
            "knowledge_uuids": [], "resource_ids": [], "policy_ids": [], "variables": {},
        }));
        assert_eq!(resolved["variables"]["e"], "e1");

        // An agent with no other links resolves to the organization, DEFAULT and itself.
        let lone = new_agent(&app, "lone", &[], None).await;
        let resolved = json(app.get(&format!("/api/v1/context/resolve/agent/{lone}")).await).await;
        let kinds: Vec<&str> = resolved["layers"].as_array().unwrap().iter().map(|l| l["layer"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["organization", "project", "agent"]);
        assert_eq!(resolved["variables"], json!({"a": "org", "b": "org", "tier": {"x": 1}}));
    }

    async fn teams_environments_projects_and_the_organization_resolve(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let default = json(app.get("/api/v1/projects/default").await).await["id"].as_str().unwrap().to_string();
        let p = project(&app, "SRE").await;
        let (e1, e2) = (env(&app, "east").await, env(&app, "west").await);
        let team = new_team(&app, "sre", &[e2, e1]).await;
        let r = app.post(&format!("/api/v1/projects/{p}/teams"), json!({"team_id": team})).await;
        assert_eq!(r.status(), 201);
        store(&app, "organization/default", "org", json!({"v": "org"})).await;
        store(&app, &format!("project/{p}"), "p", json!({"v": "p"})).await;
        store(&app, &format!("environment/{e1}"), "e1", json!({"v": "e1"})).await;
        store(&app, &format!("team/{team}"), "team", json!({"w": "team"})).await;

        let resolved = json(app.get(&format!("/api/v1/teams/{team}/context/resolved")).await).await;
        let chain: Vec<String> = resolved["layers"].as_array().unwrap().iter()
            .map(|l| format!("{}/{}", l["layer"].as_str().unwrap(), l["entity_id"].as_str().unwrap()))
            .collect();
        assert_eq!(chain, [
            "organization/default".to_string(), format!("project/{default}"), format!("project/{p}"), format!("environment/{e2}"),
            format!("environment/{e1}"), format!("team/{team}"),
        ]);
        assert_eq!(resolved["variables"], json!({"v": "e1", "w": "team"}));
        assert_eq!(resolved["resource_ids"], json!(["r-org", "r-p", "r-e1", "r-team"]));
        assert_eq!(json(app.get(&format!("/api/v1/context/resolve/team/{team}")).await).await, resolved);

        let resolved = json(app.get(&format!("/api/v1/context/resolve/environment/{e1}")).await).await;
        assert_eq!(resolved["layers"].as_array().unwrap().len(), 2);
        assert_eq!(resolved["variables"], json!({"v": "e1"}));
        assert_eq!(resolved["knowledge_uuids"], json!(["k-org", "k-shared", "k-e1"]));

        let resolved = json(app.get(&format!("/api/v1/context/resolve/project/{p}")).await).await;
        assert_eq!(resolved["layers"][1]["layer"], "project");
        assert_eq!(resolved["variables"], json!({"v": "p"}));

        let resolved = json(app.get("/api/v1/context/resolve/organization/default").await).await;
        assert_eq!(resolved, json!({
            "entity_type": "organization", "entity_id": "default",
            "knowledge_uuids": ["k-org", "k-shared"], "resource_ids": ["r-org"], "policy_ids": ["p-shared", "p-org"],
            "variables": {"v": "org"},
            "layers": [{
                "layer": "organization", "entity_id": "default",
                "knowledge_uuids": ["k-org", "k-shared"], "resource_ids": ["r-org"], "policy_ids": ["p-shared", "p-org"],
                "variables": {"v": "org"},
            }],
        }));
        // Nothing stored anywhere: the chain with empty layers.
        assert_eq!(delete(&app, "/api/v1/context/organization/default").await.status(), 200);
        let resolved = json(app.get("/api/v1/context/resolve/organization/default").await).await;
        assert_eq!(resolved["layers"][0]["knowledge_uuids"], json!([]));
        assert_eq!(resolved["variables"], json!({}));
    }
}

#[tokio::test]
async fn the_openapi_document_describes_context() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let doc = json(app.anon(Method::GET, "/openapi.json").send().await.unwrap()).await;
    let schemas = &doc["components"]["schemas"];
    // Always present, null until something is stored.
    let required = schemas["Context"]["required"].as_array().unwrap();
    for field in ["id", "created_at", "updated_at", "entity_id", "variables"] {
        assert!(required.contains(&json!(field)), "{field}");
    }
    assert_eq!(
        schemas["Context"]["properties"]["created_at"]["type"],
        json!(["string", "null"])
    );
    assert_eq!(
        schemas["ContextEntityType"]["enum"],
        json!(["organization", "project", "environment", "team", "agent"])
    );
    for path in [
        "/api/v1/context/{entity_type}/{entity_id}",
        "/api/v1/context/resolve/{entity_type}/{entity_id}",
        "/api/v1/agents/{id}/context/resolved",
        "/api/v1/teams/{id}/context/resolved",
    ] {
        assert!(doc["paths"][path]["get"].is_object(), "{path}");
    }
}
