//! SQLite's one writer on a thread of its own, fed whole transactions.
//!
//! sqlx runs every SQLite statement on a per-connection thread and hands each one over through
//! a channel: a write transaction of six statements is twelve thread switches, all of them
//! while the database's single write lock is held, so under load writers spend their time
//! queueing for each other's switches. The execution engine's hot writes (execute, claim,
//! events, end of run) instead run here as plain function calls on one connection, several
//! jobs to a transaction (group commit), each in a savepoint so a job that fails takes only
//! its own statements back. The writer takes the same lock as `write_tx!`, so the two paths
//! never write at once.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use cp_types::Timestamp;
use rusqlite::trace::{TraceEvent, TraceEventCodes};
use rusqlite::{Connection, OpenFlags, ToSql};
use tokio::sync::{Mutex, oneshot};
use uuid::Uuid;

use crate::error::{StoreError, StoreResult};

/// Most jobs one transaction commits.
const MAX_BATCH: usize = 128;

/// A job in the queue: its statements, then its answer once the batch is committed.
trait Job: Send {
    /// Runs the job inside the open transaction; false when it failed (and must be undone).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller; `committed` is the batch's commit.
    fn answer(self: Box<Self>, committed: Result<(), &str>);
}

struct Pending<F, R> {
    work: Option<F>,
    out: Option<StoreResult<R>>,
    reply: oneshot::Sender<StoreResult<R>>,
}

impl<F, R> Job for Pending<F, R>
where
    F: FnOnce(&Connection) -> StoreResult<R> + Send,
    R: Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        // A bug in one job must not take the writer (and every later write) down with it.
        let out = std::panic::catch_unwind(AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(StoreError::Corrupt("a write job panicked".into())));
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn answer(self: Box<Self>, committed: Result<(), &str>) {
        let out = match (committed, self.out) {
            // A failed job was rolled back on its own: its error stands whatever the commit did.
            (_, Some(Err(e))) => Err(e),
            (Ok(()), Some(ok)) => ok,
            (Err(why), _) => Err(StoreError::Unavailable(format!("the write was not committed: {why}"))),
            (Ok(()), None) => Err(StoreError::Unavailable("the write job did not run".into())),
        };
        // The caller may have gone away (its request was dropped): the write stands.
        let _ = self.reply.send(out);
    }
}

/// The handle: the lock every SQLite write transaction takes, and the writer thread's queue.
#[derive(Debug)]
pub(crate) struct SqliteWriter {
    /// Held by `write_tx!` for its whole transaction and by the writer thread for each batch.
    pub(crate) lock: Arc<Mutex<()>>,
    jobs: mpsc::Sender<Box<dyn Job>>,
    /// Dropped with the store, which ends the checkpointer.
    _stop: mpsc::Sender<()>,
}

/// The target of the writer's statement log.
const STATEMENT_TARGET: &str = "kubiya_cp::sqlite_writer";

fn log_statement(event: TraceEvent<'_>) {
    if let TraceEvent::Stmt(_, sql) = event {
        tracing::debug!(target: STATEMENT_TARGET, writer = true, db.statement = sql);
    }
}

impl SqliteWriter {
    /// Opens the writer's connection to the database file and starts its thread.
    pub(crate) fn open(path: &Path, busy_timeout: Duration) -> StoreResult<SqliteWriter> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(busy_timeout)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA wal_autocheckpoint = 0;",
        )?;
        conn.set_prepared_statement_cache_capacity(64);
        // The writer's statements are logged as sqlx logs its own (`db.statement`), so whoever
        // watches statements sees every one. Only when someone listens: it costs a callback each.
        if tracing::enabled!(target: STATEMENT_TARGET, tracing::Level::DEBUG) {
            conn.trace_v2(TraceEventCodes::SQLITE_TRACE_STMT, Some(log_statement));
        }
        let checkpointer = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        checkpointer.busy_timeout(busy_timeout)?;
        let (stop, stopped) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint(checkpointer, stopped))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the SQLite checkpointer: {e}")))?;
        let lock = Arc::new(Mutex::new(()));
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        let thread_lock = lock.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || serve(conn, queue, thread_lock))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the SQLite writer: {e}")))?;
        Ok(SqliteWriter {
            lock,
            jobs,
            _stop: stop,
        })
    }

    /// Runs `work` in a write transaction on the writer thread and answers once it is committed.
    pub(crate) async fn run<R, F>(&self, work: F) -> StoreResult<R>
    where
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending {
            work: Some(work),
            out: None,
            reply,
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?
    }
}

/// How often the log is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Copies the write-ahead log back into the database file, off the writer's path: a checkpoint
/// run by a committing writer (SQLite's default) copies pages and syncs the file while every
/// other writer waits. A passive checkpoint never waits for readers or the writer; the log is
/// reused from its start once a checkpoint has caught up. Ends with the store.
fn checkpoint(conn: Connection, stopped: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "SQLite checkpoint failed");
        }
    }
}

/// The writer thread: takes what is queued (up to [`MAX_BATCH`]), runs it in one transaction,
/// commits, answers; ends when the store is dropped.
fn serve(conn: Connection, queue: mpsc::Receiver<Box<dyn Job>>, lock: Arc<Mutex<()>>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let guard = lock.blocking_lock();
        let committed = run_batch(&conn, &mut batch);
        drop(guard);
        let committed = committed.map_err(|e| e.to_string());
        for job in batch {
            job.answer(committed.as_ref().map(|_| ()).map_err(String::as_str));
        }
    }
}

fn run_batch(conn: &Connection, batch: &mut [Box<dyn Job>]) -> rusqlite::Result<()> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let outcome = (|| {
        if let [job] = batch {
            // Alone in its transaction, a job that fails takes the whole of it back.
            if !job.run(conn) {
                conn.prepare_cached("ROLLBACK")?.execute([])?;
                return Ok(());
            }
        } else {
            for job in batch.iter_mut() {
                conn.prepare_cached("SAVEPOINT job")?.execute([])?;
                if !job.run(conn) {
                    conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
                }
                conn.prepare_cached("RELEASE job")?.execute([])?;
            }
        }
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    })();
    if outcome.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    outcome
}

/// Binds `$1`, `$2`, … by their number, as sqlx does (SQLite numbers named parameters by first
/// appearance, which is not their number when a statement uses `$3` before `$2`).
pub(crate) fn bind_numbered(stmt: &mut rusqlite::Statement<'_>, args: &[&dyn ToSql]) -> rusqlite::Result<()> {
    for (i, arg) in args.iter().enumerate() {
        if let Some(index) = stmt.parameter_index(&format!("${}", i + 1))? {
            stmt.raw_bind_parameter(index, arg)?;
        }
    }
    Ok(())
}

/// A UUID as sqlx stores it in SQLite: 16 bytes.
pub(crate) fn uuid_blob(id: &Uuid) -> &[u8] {
    id.as_bytes()
}

/// A timestamp as sqlx stores it in SQLite (RFC 3339 with the offset spelled out).
pub(crate) fn ts_text(t: &Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

/// Reads a timestamp column written by either path.
pub(crate) fn ts_parse(s: &str) -> StoreResult<Timestamp> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDateTime::parse_from_str(s, "%F %T%.f")
        .map(|t| t.and_utc())
        .map_err(|e| StoreError::Corrupt(format!("timestamp '{s}': {e}")))
}

/// Reads a UUID column (a 16-byte blob, or text from a hand-edited row).
pub(crate) fn uuid_of(v: rusqlite::types::ValueRef<'_>) -> StoreResult<Uuid> {
    match v {
        rusqlite::types::ValueRef::Blob(b) => {
            Uuid::from_slice(b).map_err(|e| StoreError::Corrupt(format!("uuid: {e}")))
        }
        rusqlite::types::ValueRef::Text(t) => std::str::from_utf8(t)
            .ok()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| StoreError::Corrupt("uuid text".into())),
        other => Err(StoreError::Corrupt(format!(
            "uuid column holds {:?}",
            other.data_type()
        ))),
    }
}
