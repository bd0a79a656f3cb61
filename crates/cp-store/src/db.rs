//! Connecting, migrating and the backend switch.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::error::{StoreError, StoreResult};
use crate::pg_conns::HotConns;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Db {
    /// The pool, and the writer: its lock is what write transactions queue on (SQLite has one
    /// writer at a time, and waiting for it in SQLite's busy handler means sleeping in steps of
    /// milliseconds, while waiting on this lock hands over the moment the previous writer
    /// commits); its thread runs the execution engine's hot writes.
    Sqlite(SqlitePool, std::sync::Arc<crate::sqlite_writer::SqliteWriter>),
    /// The pool, and the connections the execution engine keeps checked out of it.
    Postgres(PgPool, std::sync::Arc<HotConns>),
}

/// Runs the same code against either pool: `with_db!(self.db, pool => query.fetch_all(pool).await)`.
///
/// The body is compiled once per backend, so shared SQL text stays shared while each backend
/// keeps its native types (uuid, jsonb and timestamptz on PostgreSQL).
macro_rules! with_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool, _) => $body,
            $crate::db::Db::Postgres($pool, _) => $body,
        }
    };
}
pub(crate) use with_db;

/// [`with_db!`] for the reads on the execution engine's hot path: on PostgreSQL the body gets
/// a connection of `pg_conns` (no ping after the statement), given back when it succeeded.
macro_rules! with_hot_db {
    ($db:expr, $conn:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($conn, _) => $body,
            $crate::db::Db::Postgres(_, hot) => {
                let mut guard = hot.get().await?;
                let $conn = &mut *guard;
                let out = $body;
                if out.is_ok() {
                    guard.release();
                }
                out
            }
        }
    };
}
pub(crate) use with_hot_db;

/// Like [`with_db!`] for the few statements whose text differs per backend (JSON aggregation):
/// `with_db_sql!(db, pool, sql = (SQLITE_TEXT, POSTGRES_TEXT) => body using sql)`.
macro_rules! with_db_sql {
    ($db:expr, $pool:ident, $sql:ident = ($lite:expr, $pg:expr) => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool, _) => {
                let $sql: &'static str = $lite;
                $body
            }
            $crate::db::Db::Postgres($pool, _) => {
                let $sql: &'static str = $pg;
                $body
            }
        }
    };
}
pub(crate) use with_db_sql;

/// Runs `body` in a write transaction and commits it when the body finishes (a `?` inside
/// drops the transaction, which rolls it back). `$pg` is a `bool` telling the body which
/// dialect it talks to. SQLite transactions start `IMMEDIATE`: a deferred one that reads and
/// then writes fails at once with `SQLITE_BUSY` when another writer got in between, while an
/// immediate one waits its turn under the busy timeout.
macro_rules! write_tx {
    ($db:expr, $tx:ident, $pg:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite(pool, writer) => {
                let $pg = false;
                let _writing = writer.lock.lock().await;
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            $crate::db::Db::Postgres(pool, _) => {
                let $pg = true;
                let mut $tx = pool.begin().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}
pub(crate) use write_tx;

/// Whether a PostgreSQL host is this machine: a loopback address, `localhost`, or a Unix
/// socket folder.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.starts_with('/')
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The database handle shared by the whole server; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) db: Db,
    /// How many milliseconds one second of a queue's `heartbeat_interval` lasts when leases
    /// and worker deadlines are computed: 1000, except in tests that need a worker's death
    /// noticed within a second or two.
    pub(crate) second_ms: i64,
}

impl Store {
    /// Connects to `url` (`sqlite://path` or `postgres://…`). SQLite files (and their folder)
    /// are created on first use and run in WAL mode.
    pub async fn connect(url: &str) -> StoreResult<Store> {
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut opts = PgConnectOptions::from_str(url)?.application_name("kubiya-cp");
            // sqlx, like libpq, tries TLS first unless told otherwise. To a database on this
            // host it protects nothing and costs every statement an encryption on both ends (a
            // tenth of the executions bench), so a loopback URL connects in plain text unless
            // the URL or `PGSSLMODE` chose a mode.
            let mode_chosen = std::env::var_os("PGSSLMODE").is_some()
                || url.contains("sslmode=")
                || url.contains("ssl-mode=")
                || !matches!(opts.get_ssl_mode(), sqlx::postgres::PgSslMode::Prefer);
            if !mode_chosen && is_loopback(opts.get_host()) {
                opts = opts.ssl_mode(sqlx::postgres::PgSslMode::Disable);
            }
            let pool = PgPoolOptions::new()
                // sqlx pings a connection before every checkout by default: one more round
                // trip per statement. One that was in use a moment ago is alive; only one that
                // sat idle (the database may have restarted meanwhile) is pinged.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= crate::pg_conns::PING_WHEN_IDLE_FOR {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                })
                // One bound for the replica: the hot connections (`pg_conns`) are half of it.
                .max_connections(2 * crate::pg_conns::MAX_CONNECTIONS as u32)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(3))
                .connect_with(opts)
                .await?;
            Db::Postgres(pool.clone(), std::sync::Arc::new(HotConns::new(pool)))
        } else if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5))
                // The writer's checkpointer thread copies the log back (see `sqlite_writer`).
                .pragma("wal_autocheckpoint", "0")
                // sqlx hands rows from its SQLite thread to the caller through a bounded channel
                // (50 by default); a 100-row page then stalls the producer mid-page and costs
                // extra thread switches. Room for a full page keeps the handoff in one go.
                .row_buffer_size(crate::SQLITE_ROW_CHANNEL);
            if let Some(dir) = opts.get_filename().parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
            }
            let pool = SqlitePoolOptions::new()
                // A local file does not drop connections; the default ping before each checkout
                // is one more hop to sqlx's SQLite thread per query.
                .test_before_acquire(false)
                .max_connections(8)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(3))
                .connect_with(opts.clone())
                .await?;
            let writer = crate::sqlite_writer::SqliteWriter::open(opts.get_filename(), Duration::from_secs(5))?;
            Db::Sqlite(pool, std::sync::Arc::new(writer))
        } else {
            return Err(StoreError::Unavailable(format!(
                "unsupported database URL '{url}': use sqlite://PATH or postgres://…"
            )));
        };
        Ok(Store { db, second_ms: 1000 })
    }

    /// Scales heartbeat intervals for leases and worker deadlines (see `second_ms`).
    pub fn with_second_ms(mut self, ms: i64) -> Store {
        self.second_ms = ms.max(1);
        self
    }

    /// The default SQLite URL inside a data directory.
    pub fn sqlite_url(data_dir: &Path) -> String {
        format!("sqlite://{}", data_dir.join("control-plane.db").display())
    }

    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Sqlite(..) => Backend::Sqlite,
            Db::Postgres(..) => Backend::Postgres,
        }
    }

    /// Applies pending migrations. Safe to run from several replicas at once (sqlx takes a lock).
    pub async fn migrate(&self) -> StoreResult<()> {
        match &self.db {
            Db::Sqlite(p, _) => SQLITE_MIGRATIONS.run(p).await?,
            Db::Postgres(p, _) => POSTGRES_MIGRATIONS.run(p).await?,
        }
        Ok(())
    }

    /// The number of migrations this build knows.
    pub(crate) fn known_migrations(&self) -> usize {
        match &self.db {
            Db::Sqlite(..) => SQLITE_MIGRATIONS.iter().count(),
            Db::Postgres(..) => POSTGRES_MIGRATIONS.iter().count(),
        }
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        if let Db::Postgres(_, hot) = &self.db {
            hot.close();
        }
        with_db!(&self.db, pool => pool.close().await)
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn only_this_machine_counts_as_loopback() {
        for host in [
            "localhost",
            "127.0.0.1",
            "127.0.0.2",
            "::1",
            "[::1]",
            "/var/run/postgresql",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "db.internal",
            "10.0.0.5",
            "::ffff:10.0.0.5",
            "",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
