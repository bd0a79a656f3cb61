//! Upgrades: a database filled through the API of an earlier build (commit b1118a0, migrations
//! up to 0010; see `tests/fixtures/upgrade-0010/fill.py`) is loaded from its dump, `serve`
//! applies the remaining migrations, and every row it held is read back through today's API,
//! on both backends. A migration edited after it shipped fails this too (sqlx compares the
//! checksums the old build recorded).

use std::path::PathBuf;

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::db::{Db, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    an_old_database_upgrades_and_reads_back(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    an_old_database_upgrades_and_reads_back(true).await
}

/// The bootstrap admin key the fixture's server was started with.
const ADMIN: &str = "kby_upgrade-fixture-bootstrap-key-0123456789";
/// The PostgreSQL schema the fixture was dumped from.
const FIXTURE_SCHEMA: &str = "kcp_upgrade_fixture";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/upgrade-0010")
        .join(name)
}

/// Loads the dump into `db` and puts the old master key in its data dir. The idempotency
/// record is dated now: it answers replays for 24 h only, and the fixture is older than that.
async fn load(db: &Db) {
    if let Some(url) = &db.url {
        let schema = url.rsplit("search_path%3D").next().unwrap();
        let dump = std::fs::read_to_string(fixture("postgres.sql")).unwrap();
        let dump = dump
            .replace(&format!("CREATE SCHEMA {FIXTURE_SCHEMA};"), "")
            .replace(FIXTURE_SCHEMA, schema);
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(dump))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "UPDATE {schema}.idempotency_keys SET created_at = now()"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    } else {
        let file = db.dir.path().join("control-plane.db");
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", file.display()))
            .await
            .unwrap();
        let dump = std::fs::read_to_string(fixture("sqlite.sql")).unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(dump))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::raw_sql("UPDATE idempotency_keys SET created_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    let key = db.dir.path().join("master.key");
    std::fs::copy(fixture("master.key"), &key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn send(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or_default())
    }

    /// A read as the old admin that must answer 200.
    async fn get(&self, path: &str) -> Value {
        let (status, v) = self.send(Method::GET, path, ADMIN, None).await;
        assert_eq!(status, 200, "{path}: {v}");
        v
    }
}

/// The `field` of every item of a list answer.
fn all(list: &Value, field: &str) -> Vec<String> {
    let items = list["items"]
        .as_array()
        .or(list.as_array())
        .cloned()
        .unwrap_or_default();
    items
        .iter()
        .filter_map(|i| i[field].as_str().map(String::from))
        .collect()
}

async fn an_old_database_upgrades_and_reads_back(postgres: bool) {
    let manifest = if postgres {
        "manifest-postgres.json"
    } else {
        "manifest-sqlite.json"
    };
    let m: Value = serde_json::from_str(&std::fs::read_to_string(fixture(manifest)).unwrap()).unwrap();
    let s = |v: &Value| v.as_str().unwrap().to_string();
    let db = Db::new(postgres).await;
    load(&db).await;
    let port = free_port();
    let _server = db.serve(port, None).await;
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    };

    // Keys: the old admin and member keys still sign in.
    assert_eq!(api.get("/api/v1/organization").await["id"], "default");
    let (status, _) = api
        .send(Method::GET, "/api/v1/agents", &s(&m["member_key"]["key"]), None)
        .await;
    assert_eq!(status, 200);
    assert!(all(&api.get("/api/v1/api-keys").await, "id").contains(&s(&m["member_key"]["id"])));

    // The catalog.
    let env = api
        .get(&format!("/api/v1/environments/{}", s(&m["environment"]["id"])))
        .await;
    assert_eq!(env["name"], m["environment"]["name"], "{env}");
    let model = api.get(&format!("/api/v1/models/{}", s(&m["model"]["id"]))).await;
    assert_eq!(model["value"], m["model"]["value"], "{model}");
    let skill = api.get(&format!("/api/v1/skills/{}", s(&m["skill"]["id"]))).await;
    assert_eq!(skill["name"], m["skill"]["name"], "{skill}");
    let [deployer, forbidden] = [0, 1].map(|i| s(&m["agents"][i]["id"]));
    let agent = api.get(&format!("/api/v1/agents/{deployer}")).await;
    assert_eq!(
        (agent["name"].as_str(), agent["model_id"].as_str()),
        (Some("deployer"), Some("fixture/gpt")),
        "{agent}"
    );
    assert_eq!(agent["skill_ids"], json!([m["skill"]["id"]]), "{agent}");
    assert_eq!(agent["environment_ids"], json!([m["environment"]["id"]]), "{agent}");
    assert_eq!(
        api.get(&format!("/api/v1/agents/{forbidden}")).await["name"],
        "forbidden"
    );
    let team = api.get(&format!("/api/v1/teams/{}", s(&m["team"]["id"]))).await;
    assert_eq!(
        team["configuration"]["member_ids"].as_array().map(Vec::len),
        Some(2),
        "{team}"
    );
    let project = s(&m["project"]["id"]);
    assert_eq!(
        api.get(&format!("/api/v1/projects/{project}")).await["name"],
        "Platform"
    );
    let members = api.get(&format!("/api/v1/projects/{project}/agents")).await;
    assert_eq!(all(&members, "agent_id"), [deployer.as_str()]);
    let members = api.get(&format!("/api/v1/projects/{project}/teams")).await;
    assert_eq!(all(&members, "team_id"), [s(&m["team"]["id"])]);
    // The context graph's migration projected what was there: the agent, with its model,
    // skill, environment, team and project.
    let node = api.get(&format!("/api/v1/graph/nodes/{deployer}")).await;
    assert_eq!(
        (node["labels"].clone(), node["properties"]["name"].clone()),
        (json!(["Agent"]), json!("deployer")),
        "{node}"
    );
    let rels = api
        .get(&format!(
            "/api/v1/graph/nodes/{deployer}/relationships?direction=outgoing"
        ))
        .await;
    let mut types: Vec<&str> = rels["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["type"].as_str())
        .collect();
    types.sort();
    types.dedup();
    assert_eq!(
        types,
        ["BELONGS_TO", "MEMBER_OF", "RUNS_IN", "USES_MODEL", "USES_SKILL"],
        "{rels}"
    );
    let context = api.get(&format!("/api/v1/context/agent/{deployer}")).await;
    assert_eq!(context["knowledge_uuids"], m["context"]["knowledge_uuids"], "{context}");

    // Secrets and credentials unseal with the old master key; their access logs are kept.
    let secret = api
        .get(&format!("/api/v1/secrets/value/{}", s(&m["secret"]["name"])))
        .await;
    assert_eq!(secret["value"], m["secret"]["value"]);
    let log = api
        .get(&format!("/api/v1/secrets/{}/access-log", s(&m["secret"]["name"])))
        .await;
    assert!(!log["items"].as_array().unwrap().is_empty(), "{log}");
    let integration = s(&m["integration"]["id"]);
    assert_eq!(
        api.get(&format!("/api/v1/integrations/{integration}")).await["name"],
        "gh"
    );
    let log = api.get(&format!("/api/v1/integrations/{integration}/access-log")).await;
    assert!(!log["items"].as_array().unwrap().is_empty(), "{log}");
    let token = api
        .get(&format!("/api/v1/integrations/github/{integration}/token"))
        .await;
    assert!(token.to_string().contains(&s(&m["integration"]["token"])), "{token}");
    let custom = api
        .get(&format!(
            "/api/v1/custom-integrations/{}",
            s(&m["custom_integration"]["id"])
        ))
        .await;
    assert_eq!(custom["name"], "pg");

    // Policies, their association and the denial they recorded.
    assert_eq!(
        api.get(&format!("/api/v1/policies/{}", s(&m["policy"]["id"]))).await["name"],
        "no-forbidden"
    );
    let association = api
        .get(&format!(
            "/api/v1/policies/associations/{}",
            s(&m["policy"]["association_id"])
        ))
        .await;
    assert_eq!(
        association["entity_id"].as_str(),
        Some(forbidden.as_str()),
        "{association}"
    );
    let decisions = api.get("/api/v1/policies/decisions").await;
    assert!(
        decisions["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["entity_id"] == forbidden.as_str() && d["blocked"] == true),
        "{decisions}"
    );

    // Queues, workers, runs and their events, webhooks and their deliveries.
    let queue = s(&m["queue"]["id"]);
    assert_eq!(api.get(&format!("/api/v1/worker-queues/{queue}")).await["name"], "main");
    let worker = api.get(&format!("/api/v1/workers/{}", s(&m["worker"]["id"]))).await;
    assert_eq!(worker["hostname"], "old-host", "{worker}");
    let done = s(&m["executions"]["completed"]);
    let run = api.get(&format!("/api/v1/executions/{done}")).await;
    assert_eq!(
        (run["status"].as_str(), run["response"].as_str()),
        (Some("completed"), Some("deployed")),
        "{run}"
    );
    let events = api.get(&format!("/api/v1/executions/{done}/events?limit=500")).await;
    let types: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(
        types.contains(&"message_chunk") && types.last() == Some(&"done"),
        "{types:?}"
    );
    let hook = s(&m["webhook"]["id"]);
    assert_eq!(
        api.get(&format!("/api/v1/webhooks/{hook}")).await["url"],
        m["webhook"]["url"]
    );
    let deliveries = api.get(&format!("/api/v1/webhooks/{hook}/deliveries")).await;
    assert!(!deliveries["items"].as_array().unwrap().is_empty(), "{deliveries}");

    // The idempotency record still answers its replay with the run it made.
    let r = api
        .http
        .post(format!("{}/api/v1/agents/{deployer}/execute", api.base))
        .bearer_auth(ADMIN)
        .header("Idempotency-Key", s(&m["idempotency"]["key"]))
        .header("content-type", "application/json")
        .body(s(&m["idempotency"]["body_text"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let replayed: Value = r.json().await.unwrap();
    assert_eq!(replayed["execution_id"], m["idempotency"]["execution_id"], "{replayed}");

    // And the old queued run is claimed and finished by today's worker protocol.
    let worker_key = s(&m["worker_key"]);
    let (status, registered) = api
        .send(
            Method::POST,
            "/api/v1/workers/register",
            &worker_key,
            Some(json!({"hostname": "new-host", "worker_queue_id": queue})),
        )
        .await;
    assert_eq!(status, 201, "{registered}");
    let worker = registered["worker_id"]
        .as_str()
        .or(registered["id"].as_str())
        .unwrap()
        .to_string();
    let queued = s(&m["executions"]["queued"]);
    let mut claim = Value::Null;
    for _ in 0..20 {
        let (status, polled) = api
            .send(
                Method::POST,
                &format!("/api/v1/workers/{worker}/poll"),
                &worker_key,
                Some(json!({"wait_seconds": 1})),
            )
            .await;
        // The poll itself waits for work (204 when none came within its wait).
        assert!(status == 200 || status == 204, "{status} {polled}");
        if polled["claim"]["execution"]["id"] == queued.as_str() {
            claim = polled["claim"].clone();
            break;
        }
    }
    assert!(claim != Value::Null, "the old queued run was never claimed");
    let r = api
        .http
        .post(format!("{}/api/v1/executions/{queued}/complete", api.base))
        .bearer_auth(&worker_key)
        .header("X-Lease-Id", s(&claim["lease_id"]))
        .json(&json!({"response": "done after the upgrade"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        api.get(&format!("/api/v1/executions/{queued}")).await["status"],
        "completed"
    );
}
