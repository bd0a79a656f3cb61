//! Running a compiled Cypher query (`cp_cypher`) on the graph tables: read only, within a
//! time limit, scoped to the organization (`$1`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cp_cypher::{Bind, ColumnKind, Compiled, Dialect};
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

/// Turns off a connection's progress handler when the query ends, however it ends (even
/// when the caller's future is dropped mid-query and the connection goes back to the pool).
struct Armed(Arc<AtomicBool>);

impl Drop for Armed {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
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
    /// is stopped with [`StoreError::Timeout`].
    pub async fn query(&self, compiled: &Compiled, limit: Duration) -> StoreResult<QueryRows> {
        let sql = compiled.sql.clone();
        let rows = match self.db {
            Db::Sqlite(pool, _) => {
                let mut conn = pool.acquire().await?;
                let deadline = Instant::now() + limit;
                let armed = Armed(Arc::new(AtomicBool::new(true)));
                let live = armed.0.clone();
                conn.lock_handle()
                    .await?
                    .set_progress_handler(STEPS_PER_CHECK, move || {
                        !live.load(Ordering::Relaxed) || Instant::now() < deadline
                    });
                let q = bind_all!(sqlx::query(AssertSqlSafe(sql)).bind(self.org), &compiled.binds, false);
                let rows = q.fetch_all(&mut *conn).await;
                drop(armed);
                conn.lock_handle().await?.remove_progress_handler();
                let rows = rows.map_err(|e| timed_out(e, limit))?;
                rows.iter()
                    .map(|r| decode(r, compiled, sqlite_json))
                    .collect::<StoreResult<Vec<_>>>()?
            }
            Db::Postgres(pool, _) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SET TRANSACTION READ ONLY").execute(&mut *tx).await?;
                sqlx::query("SELECT set_config('statement_timeout', $1, true)")
                    .bind(limit.as_millis().to_string())
                    .execute(&mut *tx)
                    .await?;
                let q = bind_all!(sqlx::query(AssertSqlSafe(sql)).bind(self.org), &compiled.binds, true);
                let rows = q.fetch_all(&mut *tx).await.map_err(|e| timed_out(e, limit))?;
                tx.rollback().await?;
                rows.iter()
                    .map(|r| decode(r, compiled, pg_json))
                    .collect::<StoreResult<Vec<_>>>()?
            }
        };
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
            return StoreError::Timeout(format!("the query ran longer than {} s", limit.as_secs_f64()));
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
