//! Running a compiled Cypher query (`cp_cypher`) on the graph tables: read only, within a
//! time limit, scoped to the organization (`$1`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use cp_cypher::{Bind, ColumnKind, Compiled, Dialect};
use futures::TryStreamExt;
use serde_json::{Map, Value, json};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

use super::Graph;
use crate::db::Db;
use crate::error::{StoreError, StoreResult};

/// A query's answer: column names and one object per row keyed by them.
#[derive(Debug, Clone)]
pub struct QueryRows {
    pub columns: Vec<String>,
    pub rows: Vec<Map<String, Value>>,
}

/// SQLite virtual-machine steps between two looks at the clock.
const STEPS_PER_CHECK: i32 = 10_000;
/// Serialized bytes an answer may hold; past them the query is refused (narrow it).
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

const RUNNING: u8 = 0;
const FINISHED: u8 = 1;
const ABANDONED: u8 = 2;

/// A pooled SQLite connection running a user's query under a progress handler. Dropped
/// before the query finished (the request was cancelled), it stops the statement at the next
/// check and closes the connection rather than pool it, so no later query inherits the
/// handler or waits behind the abandoned statement.
struct Watched {
    conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
    state: Arc<AtomicU8>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        if self.state.load(Ordering::Relaxed) != FINISHED {
            self.state.store(ABANDONED, Ordering::Relaxed);
            self.conn.close_on_drop();
        }
    }
}

/// Adds one decoded row to the answer, refusing it past [`MAX_ANSWER_BYTES`].
fn push_row(rows: &mut Vec<Map<String, Value>>, bytes: &mut usize, row: Map<String, Value>) -> StoreResult<()> {
    *bytes += serde_json::to_vec(&row).map(|b| b.len()).unwrap_or(usize::MAX);
    if *bytes > MAX_ANSWER_BYTES {
        return Err(StoreError::LimitExceeded(format!(
            "the answer grew past {} MiB; return fewer or smaller columns, or lower the LIMIT",
            MAX_ANSWER_BYTES >> 20
        )));
    }
    rows.push(row);
    Ok(())
}

macro_rules! bind_all {
    ($q:expr, $binds:expr, $pg:expr) => {{
        let mut q = $q;
        for b in $binds {
            q = match b {
                Bind::Text(t) => q.bind(t.clone()),
                Bind::Int(i) => q.bind(*i),
                Bind::Float(f) => q.bind(*f),
                Bind::Bool(v) => q.bind(*v),
                Bind::Json(v) if $pg => q.bind(Json(v.clone())),
                Bind::Json(v) => q.bind(v.to_string()),
                Bind::Uuid(u) => q.bind(*u),
            };
        }
        q
    }};
}

impl Graph<'_> {
    /// The dialect queries for this store are compiled to.
    pub fn dialect(&self) -> Dialect {
        match self.db {
            Db::Sqlite(..) => Dialect::Sqlite,
            Db::Postgres(..) => Dialect::Postgres,
        }
    }

    /// Runs `compiled` (compiled for [`Graph::dialect`]); a query still running after `limit`
    /// is stopped with [`StoreError::LimitExceeded`].
    pub async fn query(&self, compiled: &Compiled, limit: Duration) -> StoreResult<QueryRows> {
        let sql = compiled.sql.clone();
        let (mut rows, mut bytes) = (Vec::new(), 0usize);
        match self.db {
            Db::Sqlite(pool, _) => {
                let state = Arc::new(AtomicU8::new(RUNNING));
                let mut watched = Watched {
                    conn: pool.acquire().await?,
                    state: state.clone(),
                };
                let deadline = Instant::now() + limit;
                let seen = state.clone();
                watched
                    .conn
                    .lock_handle()
                    .await?
                    .set_progress_handler(STEPS_PER_CHECK, move || match seen.load(Ordering::Relaxed) {
                        RUNNING => Instant::now() < deadline,
                        FINISHED => true,
                        _ => false,
                    });
                {
                    let q = bind_all!(sqlx::query(AssertSqlSafe(sql)).bind(self.org), &compiled.binds, false);
                    let mut stream = q.fetch(&mut *watched.conn);
                    while let Some(row) = stream.try_next().await.map_err(|e| timed_out(e, limit))? {
                        push_row(&mut rows, &mut bytes, decode(&row, compiled, sqlite_json)?)?;
                    }
                }
                state.store(FINISHED, Ordering::Relaxed);
                watched.conn.lock_handle().await?.remove_progress_handler();
            }
            Db::Postgres(pool, _) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SET TRANSACTION READ ONLY").execute(&mut *tx).await?;
                sqlx::query("SELECT set_config('statement_timeout', $1, true)")
                    .bind(limit.as_millis().to_string())
                    .execute(&mut *tx)
                    .await?;
                {
                    let q = bind_all!(sqlx::query(AssertSqlSafe(sql)).bind(self.org), &compiled.binds, true);
                    let mut stream = q.fetch(&mut *tx);
                    while let Some(row) = stream.try_next().await.map_err(|e| timed_out(e, limit))? {
                        push_row(&mut rows, &mut bytes, decode(&row, compiled, pg_json)?)?;
                    }
                }
                tx.rollback().await?;
            }
        }
        Ok(QueryRows {
            columns: compiled.columns.iter().map(|c| c.name.clone()).collect(),
            rows,
        })
    }
}

/// An interrupted SQLite statement or a cancelled PostgreSQL one is the time limit's doing.
fn timed_out(e: sqlx::Error, limit: Duration) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        let code = db.code().unwrap_or_default();
        if code == "9" || code == "57014" {
            return StoreError::LimitExceeded(format!("the query ran longer than {} s", limit.as_secs_f64()));
        }
    }
    e.into()
}

fn sqlite_json(row: &sqlx::sqlite::SqliteRow, i: usize) -> StoreResult<Value> {
    match row.try_get::<Option<String>, _>(i)? {
        Some(text) => serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("graph JSON: {e}"))),
        None => Ok(Value::Null),
    }
}

fn pg_json(row: &sqlx::postgres::PgRow, i: usize) -> StoreResult<Value> {
    Ok(row
        .try_get::<Option<Json<Value>>, _>(i)?
        .map(|j| j.0)
        .unwrap_or(Value::Null))
}

/// One row as an object keyed by the query's columns; nodes and relationships as objects.
fn decode<R>(
    row: &R,
    compiled: &Compiled,
    json_at: fn(&R, usize) -> StoreResult<Value>,
) -> StoreResult<Map<String, Value>>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<Uuid>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut out = Map::with_capacity(compiled.columns.len());
    let mut i = 0;
    for col in &compiled.columns {
        let value = match col.kind {
            ColumnKind::Node => match row.try_get::<Option<Uuid>, _>(i)? {
                None => Value::Null,
                Some(id) => json!({
                    "id": id,
                    "labels": json_at(row, i + 1)?,
                    "properties": json_at(row, i + 2)?,
                    "integration": row.try_get::<String, _>(i + 3)?,
                    "external_id": row.try_get::<String, _>(i + 4)?,
                }),
            },
            ColumnKind::Relationship => match row.try_get::<Option<Uuid>, _>(i)? {
                None => Value::Null,
                Some(id) => json!({
                    "id": id,
                    "type": row.try_get::<String, _>(i + 1)?,
                    "from": row.try_get::<Uuid, _>(i + 2)?,
                    "to": row.try_get::<Uuid, _>(i + 3)?,
                    "properties": json_at(row, i + 4)?,
                }),
            },
            ColumnKind::Value | ColumnKind::Labels => json_at(row, i)?,
            ColumnKind::Count => json!(row.try_get::<i64, _>(i)?),
            ColumnKind::Id => json!(row.try_get::<Option<Uuid>, _>(i)?),
            ColumnKind::Type => json!(row.try_get::<Option<String>, _>(i)?),
        };
        out.insert(col.name.clone(), value);
        i += col.kind.width();
    }
    Ok(out)
}
