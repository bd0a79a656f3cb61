//! The database of one test, SQLite or PostgreSQL, and the binary under test.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;

pub const BIN: &str = env!("CARGO_BIN_EXE_kubiya-cp");

/// A database for one test: a SQLite file in `dir`, or a fresh PostgreSQL schema.
pub struct Db {
    pub dir: tempfile::TempDir,
    pub url: Option<String>,
    schema: Option<String>,
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pg_base() -> String {
    std::env::var("KUBIYA_CP_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

impl Db {
    pub async fn new(postgres: bool) -> Db {
        let dir = tempfile::tempdir().unwrap();
        if !postgres {
            return Db {
                dir,
                url: None,
                schema: None,
            };
        }
        let schema = format!("kcp_t_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect(&pg_base())
            .await
            .expect("PostgreSQL must be running");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = pg_base();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        Db {
            dir,
            url: Some(url),
            schema: Some(schema),
        }
    }

    /// The binary with this database's flags (given after the subcommand's words, as users may).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args).arg("--data-dir").arg(self.dir.path());
        if let Some(url) = &self.url {
            c.arg("--database-url").arg(url);
        }
        c.env_remove("KUBIYA_CP_DATABASE_URL")
            .env_remove("DATABASE_URL")
            .env_remove("KUBIYA_CP_BOOTSTRAP_API_KEY")
            .env("KUBIYA_CP_LOG", "warn");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run kubiya-cp")
    }

    /// `kubiya-cp serve` on this database at `port`, with `key` as its bootstrap admin key
    /// when given and the per-organization rate limit ceiling lifted, once it answers ready.
    pub async fn serve(&self, port: u16, key: Option<&str>) -> Killed {
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = self.cmd(&["serve", "--max-org-rate-limit", "1000000", "--listen", &listen]);
        // The task planner's model is the fake provider on loopback.
        cmd.env("KUBIYA_CP_ALLOW_PRIVATE_MODEL_URLS", "true");
        if let Some(key) = key {
            cmd.env("KUBIYA_CP_BOOTSTRAP_API_KEY", key);
        }
        // KUBIYA_CP_TEST_SERVER_LOGS=1 shows the servers' warnings, to debug a failing test.
        let logs = if std::env::var_os("KUBIYA_CP_TEST_SERVER_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let server = Killed(cmd.stdout(Stdio::null()).stderr(logs).spawn().unwrap());
        let started = Instant::now();
        while reqwest::get(format!("http://127.0.0.1:{port}/api/ready"))
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
        {
            assert!(started.elapsed() < Duration::from_secs(30), "server not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    pub async fn drop_schema(&self) {
        if let Some(schema) = &self.schema
            && let Ok(mut conn) = sqlx::PgConnection::connect(&pg_base()).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
                .execute(&mut conn)
                .await;
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else { return };
        // From a thread of its own: Drop cannot await, and the test's runtime may be ending.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&pg_base()).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// A child process, killed (SIGKILL) when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
