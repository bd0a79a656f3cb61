//! Test harness: a real server on an ephemeral loopback port, over a fresh SQLite file or a
//! fresh PostgreSQL schema, talked to with a real HTTP client.
#![allow(dead_code)]

pub mod child;
pub mod statements;
pub mod worker;

use std::net::SocketAddr;

use cp_server::{AppState, ServerConfig};
use cp_store::Store;
use cp_types::org::Role;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use sqlx::Connection;
use tokio::sync::oneshot;

/// The server settings of every test app: the operator's ceilings lifted, since tests lift
/// their organization's rate limit and send webhooks to loopback receivers.
pub fn test_config(addr: SocketAddr) -> ServerConfig {
    let mut config = ServerConfig::new(addr, [7u8; 32]);
    // The test binary is not kubiya-cp: policies are decided by the sandbox's own small binary.
    config.policy_sandbox = cp_policy::SandboxConfig::new(env!("CARGO_BIN_EXE_kcp-policy-sandbox"), Vec::new());
    config.max_org_rate_limit = 1_000_000;
    config.allow_private_webhook_targets = true;
    config.allow_private_model_urls = true;
    config
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server the tests use (CI sets it; this default is the machine's own).
pub fn postgres_base_url() -> String {
    std::env::var("KUBIYA_CP_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh database for one test: a temp SQLite file, or a new PostgreSQL schema.
pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
    schema: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => TestDb {
                url: Store::sqlite_url(dir.path()),
                dir,
                schema: None,
            },
            Backend::Postgres => {
                let base = postgres_base_url();
                let schema = format!("kcp_t_{}", uuid::Uuid::now_v7().simple());
                let mut conn = sqlx::PgConnection::connect(&base).await.expect(
                    "PostgreSQL is not reachable: start it (scripts/test.sh does) or set KUBIYA_CP_TEST_DATABASE_URL",
                );
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&mut conn)
                    .await
                    .expect("create schema");
                let sep = if base.contains('?') { '&' } else { '?' };
                let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
                TestDb {
                    url,
                    dir,
                    schema: Some(schema),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            // Drop the schema from a separate thread: Drop cannot await, and the test's runtime
            // may already be shutting down.
            let base = postgres_base_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let mut conn = sqlx::PgConnection::connect(&base).await.ok()?;
                    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
                        .execute(&mut conn)
                        .await
                        .ok()
                })
            })
            .join();
        }
    }
}

pub struct TestApp {
    pub backend: Backend,
    pub addr: SocketAddr,
    pub url: String,
    pub client: reqwest::Client,
    /// Admin key of org `default`.
    pub admin_key: String,
    pub store: Store,
    pub db: TestDb,
    /// The running server's state (its hub, to wait on what it does).
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Starts a server whose background work (the reaper, the webhook sender) stays quiet, for
    /// tests that count what a request costs.
    pub async fn spawn_quiet(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |c| {
            c.reaper_interval = std::time::Duration::from_secs(3600);
            c.webhook_sender = false;
        })
        .await
    }

    /// Starts a server with a configuration adjusted by `configure`.
    pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut ServerConfig)) -> TestApp {
        Self::spawn_on(backend, TestDb::new(backend).await, configure).await
    }

    /// Starts a server on a prepared database (e.g. one reached through a fault-injecting proxy).
    pub async fn spawn_on(backend: Backend, db: TestDb, configure: impl FnOnce(&mut ServerConfig)) -> TestApp {
        let store = Store::connect(&db.url).await.expect("connect");
        store.migrate().await.expect("migrate");
        let admin_key = store
            .bootstrap(None)
            .await
            .expect("bootstrap")
            .admin_key
            .expect("fresh database");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = test_config(addr);
        configure(&mut config);
        let state = AppState::new(store.clone(), config);
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(cp_server::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        TestApp {
            backend,
            addr,
            url: format!("http://{addr}"),
            client: reqwest::Client::new(),
            admin_key,
            store,
            db,
            state,
            shutdown: Some(tx),
        }
    }

    /// A request with the default org's admin key.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.req_as(&self.admin_key, method, path)
    }

    pub fn req_as(&self, key: &str, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(key)
    }

    pub fn anon(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.url))
    }

    pub async fn get(&self, path: &str) -> Response {
        self.req(Method::GET, path).send().await.expect("send")
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.req(Method::POST, path).json(&body).send().await.expect("send")
    }

    /// Creates what `body` describes at `path` (201 or the test fails); its id.
    pub async fn id_of(&self, path: &str, body: Value) -> String {
        let r = self.post(path, body).await;
        let status = r.status();
        let v = json(r).await;
        assert_eq!(status, 201, "{path}: {v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// A new organization and a key of `role` in it.
    pub async fn org_with_key(&self, slug: &str, role: Role) -> String {
        if self.store.get_org(slug).await.is_err() {
            self.store.create_org(slug, slug).await.expect("create org");
        }
        self.key(slug, role).await
    }

    pub async fn key(&self, org: &str, role: Role) -> String {
        self.store
            .create_key_for_org(org, "test", role, None)
            .await
            .expect("create key")
            .key
    }

    /// Lifts the default org's rate limit for tests that make many requests.
    pub async fn unlimited(&self) {
        let r = self
            .req(Method::PATCH, "/api/v1/organization/settings")
            .json(&serde_json::json!({"rate_limit_tier": "enterprise", "rate_limit_per_minute": 1_000_000}))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
    }

    /// Inserts an agent or team row (`table` = "agents" | "teams"): no API creates them before
    /// the catalog lands, and project membership references them.
    pub async fn insert_member_row(&self, table: &str, org: &str, name: &str) -> uuid::Uuid {
        let id = uuid::Uuid::now_v7();
        let id_literal = match self.backend {
            Backend::Sqlite => format!("X'{}'", id.simple()),
            Backend::Postgres => format!("'{id}'"),
        };
        self.exec_sql(&format!(
            "INSERT INTO {table} (id, organization_id, name, created_at, updated_at) \
             VALUES ({id_literal}, '{org}', '{name}', '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')"
        ))
        .await;
        id
    }

    /// Runs SQL on the test database (rows that no API creates yet, such as agents).
    pub async fn exec_sql(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.db.url).await.expect("connect");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut c)
                    .await
                    .expect("sql");
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.db.url).await.expect("connect");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut c)
                    .await
                    .expect("sql");
            }
        }
    }
}

impl TestApp {
    /// Stops this server and starts a new one (new pool, new port) on the same database, as
    /// a restarted process would; the admin key stays valid.
    pub async fn restart(&mut self, configure: impl FnOnce(&mut ServerConfig)) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let store = Store::connect(&self.db.url).await.expect("connect");
        store.migrate().await.expect("migrate");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = test_config(addr);
        configure(&mut config);
        let state = AppState::new(store.clone(), config);
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(cp_server::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        self.state = state;
        self.addr = addr;
        self.url = format!("http://{addr}");
        self.store = store;
        self.shutdown = Some(tx);
    }
}

/// A second server process on a test app's database (scale-out tests).
pub struct Replica {
    pub url: String,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestApp {
    /// Starts another server on this app's database, as a second replica would run.
    pub async fn replica(&self) -> Replica {
        self.replica_with(|_| {}).await
    }

    /// [`Self::replica`] with its configuration adjusted by `configure`.
    pub async fn replica_with(&self, configure: impl FnOnce(&mut ServerConfig)) -> Replica {
        let store = Store::connect(&self.db.url).await.expect("connect");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = test_config(addr);
        configure(&mut config);
        let state = AppState::new(store, config);
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(cp_server::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Replica {
            url: format!("http://{addr}"),
            state,
            shutdown: Some(tx),
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Percent-encodes every byte but letters and digits (a query value, a form field).
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub async fn json(resp: Response) -> Value {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("status {status}: not JSON ({e}): {text}"))
}

/// Asserts an error envelope with `status` and `code`; returns the `error` object.
pub async fn assert_error(resp: Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status, "unexpected status");
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("application/json"), "content type {ct}");
    let header_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = json(resp).await;
    let err = body
        .get("error")
        .unwrap_or_else(|| panic!("no envelope: {body}"))
        .clone();
    assert_eq!(err["code"], code, "{body}");
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(
        err["request_id"].as_str(),
        header_id.as_deref(),
        "request id in body and header"
    );
    err
}

/// Waits until `state`'s server has at least `n` worker polls waiting.
pub async fn until_parked(state: &AppState, n: usize) {
    until_polls(state, "a poll to park", |parked| parked >= n).await
}

/// Waits until the number of worker polls waiting on `state`'s server satisfies `enough`
/// (it moves with each poll that starts waiting or ends, here or cut off).
pub async fn until_polls(state: &AppState, what: &str, enough: impl Fn(usize) -> bool) {
    let started = std::time::Instant::now();
    while !enough(state.hub.parked_polls()) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "waited 20 s for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Declares each test once and runs it on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($(async fn $name:ident($app:ident: Backend) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($app: $crate::common::Backend) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run($crate::common::Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                run($crate::common::Backend::Postgres).await
            }
        }
    )*};
}
