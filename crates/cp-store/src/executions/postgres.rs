//! The execution engine's hot writes on PostgreSQL. Each is one statement where it can be:
//! the database is a round trip away, and on a small machine the round trips, not the work
//! in them, are what an execution costs (a transaction is a `BEGIN`, its statements and a
//! `COMMIT`, each a trip). So the execution and its first events are one insert, a claim
//! also reads what the run context needs, and a status change is a read and a guarded
//! write instead of a locked transaction.
//!
//! The transactional versions stay for what one statement cannot do: writing webhook
//! deliveries, whose payload is made from the changed row in Rust. An organization with
//! enabled webhooks takes them; one without never pays for webhooks it does not have.

use std::collections::HashMap;
use std::sync::Arc;

use cp_types::Timestamp;
use cp_types::execution::{ExecutionEvent, NewEvent};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{FromRow, PgPool, Postgres, Row};
use uuid::Uuid;

use super::{
    Changed, Claimed, Draft, EventRow, ExecutionRecord, ExecutionRow, NewExecution, NewTypedEvent, claim_event,
    creation, numbered, stamp, webhook_data, webhook_event,
};
use crate::db::PgEngine;
use crate::error::{StoreError, StoreResult};
use crate::pg_batch::BatchFuture;
use crate::webhooks::enqueue_webhooks;

/// Whether the organization has any enabled webhook: then a change that emits a webhook
/// event takes the transactional path.
macro_rules! hooked_sql {
    () => {
        "EXISTS (SELECT 1 FROM webhooks WHERE organization_id = $2 AND enabled)"
    };
}

/// Stores `(type, data)` events of one execution, numbered from `first`, in one statement.
async fn insert_events<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    org: &str,
    id: Uuid,
    first: i64,
    at: Timestamp,
    events: Vec<NewTypedEvent>,
) -> StoreResult<Vec<ExecutionEvent>> {
    let stored = stamp(first, at, events);
    if !stored.is_empty() {
        let (types, data) = columns(&stored);
        sqlx::query(
            "INSERT INTO execution_events (execution_id, seq, organization_id, event_type, data, created_at) \
             SELECT $1, $2 + e.ord - 1, $3, e.event_type, e.data, $4 \
             FROM UNNEST($5::text[], $6::text[]) WITH ORDINALITY AS e(event_type, data, ord)",
        )
        .bind(id)
        .bind(first)
        .bind(org)
        .bind(at)
        .bind(&types)
        .bind(&data)
        .execute(conn)
        .await?;
    }
    Ok(stored)
}

/// The type and data columns of events, as arrays for `UNNEST`.
fn columns(events: &[ExecutionEvent]) -> (Vec<&str>, Vec<String>) {
    events
        .iter()
        .map(|e| (e.event_type.as_str(), e.data.to_string()))
        .unzip()
}

/// See `Executions::create`: the execution and its first events, stored against the queue
/// as the execute read it, in the next batch of creates.
pub(super) async fn create(
    pg: &Arc<PgEngine>,
    org: &str,
    id: Uuid,
    new: NewExecution,
    at: Timestamp,
) -> StoreResult<(ExecutionRecord, Vec<ExecutionEvent>)> {
    let (metadata, max_attempts, events) = creation(id, &new, new.queue_seen.clone(), at)?;
    let stored = stamp(1, at, events);
    let (types, data) = columns(&stored);
    let request = NewRow {
        id,
        org: org.to_owned(),
        kind: new.execution_type.as_str(),
        entity: new.entity_id,
        name: new.entity_name,
        queue: new.worker_queue_id,
        prompt: new.prompt,
        system_prompt: new.system_prompt,
        metadata: metadata.to_string(),
        user_metadata: new.user_metadata.to_string(),
        environment: serde_json::to_string(&new.execution_environment)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        max_attempts,
        created_by: new.created_by,
        at,
        types: types.into_iter().map(str::to_owned).collect(),
        data,
    };
    let row = pg.creates.submit(pg, request).await?;
    Ok((row.into_record()?, stored))
}

/// An execute's row and its first events, as a batch of creates takes them.
pub(crate) struct NewRow {
    id: Uuid,
    org: String,
    kind: &'static str,
    entity: Uuid,
    name: String,
    queue: Uuid,
    prompt: String,
    system_prompt: Option<String>,
    metadata: String,
    user_metadata: String,
    environment: String,
    max_attempts: i64,
    created_by: String,
    at: Timestamp,
    types: Vec<String>,
    data: Vec<String>,
}

/// A batch of creates: the rows and their events in one statement, the rows answered in the
/// requests' order.
pub(crate) fn create_batch<'a>(pg: &'a PgEngine, rows: &'a [NewRow]) -> BatchFuture<'a, ExecutionRow> {
    Box::pin(async move {
        fn col<'r, T>(rows: &'r [NewRow], f: impl Fn(&'r NewRow) -> T) -> Vec<T> {
            rows.iter().map(f).collect()
        }
        // The events flattened, each with its execution and seq.
        let (mut ev_ids, mut ev_seqs, mut ev_types, mut ev_data) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in rows {
            for (i, (t, d)) in r.types.iter().zip(&r.data).enumerate() {
                ev_ids.push(r.id);
                ev_seqs.push(i as i64 + 1);
                ev_types.push(t.as_str());
                ev_data.push(d.as_str());
            }
        }
        let mut conn = pg.conns.get().await?;
        let stored: Vec<ExecutionRow> = sqlx::query_as(concat!(
            "WITH x AS (INSERT INTO executions (",
            create_columns!(),
            ") SELECT n.id, n.org, n.kind, n.entity, n.name, n.queue, n.prompt, n.system_prompt, 'queued', \
               n.metadata::jsonb, n.user_metadata::jsonb, n.environment::jsonb, 1, n.max_attempts, n.last_seq, \
               n.created_by, n.at, n.at \
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::uuid[], $7::text[], \
               $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[], $13::bigint[], $14::text[], \
               $15::timestamptz[]) AS n(id, org, kind, entity, name, queue, prompt, system_prompt, metadata, \
               user_metadata, environment, max_attempts, last_seq, created_by, at) \
             RETURNING ",
            exec_columns!(),
            "), ev AS (INSERT INTO execution_events (execution_id, seq, organization_id, event_type, data, created_at) \
               SELECT e.id, e.seq, x.organization_id, e.event_type, e.data, x.created_at \
               FROM UNNEST($16::uuid[], $17::bigint[], $18::text[], $19::text[]) AS e(id, seq, event_type, data) \
               JOIN x ON x.id = e.id) \
             SELECT * FROM x"
        ))
        .bind(col(rows, |r| r.id))
        .bind(col(rows, |r| r.org.as_str()))
        .bind(col(rows, |r| r.kind))
        .bind(col(rows, |r| r.entity))
        .bind(col(rows, |r| r.name.as_str()))
        .bind(col(rows, |r| r.queue))
        .bind(col(rows, |r| r.prompt.as_str()))
        .bind(col(rows, |r| r.system_prompt.as_deref()))
        .bind(col(rows, |r| r.metadata.as_str()))
        .bind(col(rows, |r| r.user_metadata.as_str()))
        .bind(col(rows, |r| r.environment.as_str()))
        .bind(col(rows, |r| r.max_attempts))
        .bind(col(rows, |r| r.types.len() as i64))
        .bind(col(rows, |r| r.created_by.as_str()))
        .bind(col(rows, |r| r.at))
        .bind(&ev_ids)
        .bind(&ev_seqs)
        .bind(&ev_types)
        .bind(&ev_data)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| match e {
            // The queue was deleted since the execute read it.
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
            e => e.into(),
        })?;
        conn.release();
        // Answered in the requests' order.
        let mut by_id: HashMap<Uuid, ExecutionRow> = stored.into_iter().map(|s| (s.id, s)).collect();
        rows.iter()
            .map(|r| {
                by_id
                    .remove(&r.id)
                    .ok_or_else(|| StoreError::Unavailable("a batch answered out of step".into()))
            })
            .collect()
    })
}

/// See `Executions::claim`: the claim, its `status` event, the catalog version and the
/// conversation in one statement, unless the organization has webhooks (then
/// [`claim_in_transaction`]).
pub(super) async fn claim(
    pool: &PgPool,
    pg: &PgEngine,
    org: &str,
    queue: Uuid,
    worker: Uuid,
    (lease_id, lease_until): (Uuid, i64),
    at: Timestamp,
) -> StoreResult<Option<Claimed>> {
    // The event's data is made here; only the attempt comes from the claimed row.
    let (event_type, template) = claim_event(0, worker);
    let mut conn = pg.conns.get().await?;
    let row: PgRow = sqlx::query(concat!(
        "WITH c AS (",
        claim_sql!("FOR UPDATE SKIP LOCKED", concat!("AND NOT ", hooked_sql!())),
        "), ev AS (INSERT INTO execution_events (execution_id, seq, organization_id, event_type, data, created_at) \
           SELECT c.id, c.last_seq, c.organization_id, $7, jsonb_set($8::jsonb, '{attempt}', to_jsonb(c.attempt))::text, $6 \
           FROM c) \
         SELECT ",
        hooked_sql!(),
        // Whether the gate held something back matters only with webhooks: the index walk it
        // costs (past the entries of every run claimed since the last vacuum) is skipped
        // otherwise.
        " AS hooked, CASE WHEN ",
        hooked_sql!(),
        " THEN EXISTS (SELECT 1 FROM executions WHERE worker_queue_id = $1 AND organization_id = $2 \
           AND status = 'queued') ELSE false END AS claimable, \
           (SELECT version FROM catalog_versions WHERE organization_id = $2) AS catalog_version, \
           (SELECT json_agg(json_build_array(h.seq, h.event_type, h.data, h.created_at) ORDER BY h.seq) \
            FROM execution_events h WHERE h.execution_id = c.id AND h.organization_id = $2 \
              AND h.event_type = 'message') AS history, c.* \
         FROM (SELECT 1) AS one LEFT JOIN c ON true"
    ))
    .bind(queue)
    .bind(org)
    .bind(worker)
    .bind(lease_id)
    .bind(lease_until)
    .bind(at)
    .bind(&event_type)
    .bind(Json(&template))
    .fetch_one(&mut *conn)
    .await?;
    conn.release();
    if row.try_get::<Option<Uuid>, _>("id")?.is_none() {
        // Nothing claimed: nothing waits, or the webhooks' gate held back what does.
        let gated: bool = row.try_get::<bool, _>("hooked")? && row.try_get::<bool, _>("claimable")?;
        if !gated {
            return Ok(None);
        }
        // Not kept: the end of a run of an organization with webhooks takes the locked path.
        return claim_in_transaction(pool, org, queue, worker, (lease_id, lease_until), at).await;
    }
    let record = ExecutionRow::from_row(&row)?.into_record()?;
    let e = &record.execution;
    let events = stamp(e.event_count, at, vec![claim_event(e.attempt, worker)]);
    let history: Option<Json<Vec<EventRow>>> = row.try_get("history")?;
    let history = history.map(|h| h.0).unwrap_or_default();
    let catalog_version = row.try_get("catalog_version")?;
    Ok(Some(Claimed::new(record, events, false, catalog_version, history)))
}

/// The claim of an organization with webhooks: the `execution.started` deliveries are
/// written in the claim's transaction.
async fn claim_in_transaction(
    pool: &PgPool,
    org: &str,
    queue: Uuid,
    worker: Uuid,
    (lease_id, lease_until): (Uuid, i64),
    at: Timestamp,
) -> StoreResult<Option<Claimed>> {
    let mut tx = pool.begin().await?;
    let row: Option<ExecutionRow> = sqlx::query_as(claim_sql!("FOR UPDATE SKIP LOCKED", ""))
        .bind(queue)
        .bind(org)
        .bind(worker)
        .bind(lease_id)
        .bind(lease_until)
        .bind(at)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let record = row.into_record()?;
    let e = &record.execution;
    let events = insert_events(
        &mut *tx,
        org,
        e.id,
        e.event_count,
        at,
        vec![claim_event(e.attempt, worker)],
    )
    .await?;
    let deliveries = enqueue_webhooks!(tx, true, org, "execution.started", webhook_data(e)) > 0;
    let catalog_version: Option<i64> =
        sqlx::query_scalar("SELECT version FROM catalog_versions WHERE organization_id = $1")
            .bind(org)
            .fetch_optional(&mut *tx)
            .await?;
    let rows: Vec<EventRow> = sqlx::query_as(session_sql!())
        .bind(e.id)
        .bind(org)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(Claimed::new(record, events, deliveries, catalog_version, rows)))
}

/// See `Executions::append`: one statement, so one round trip and no explicit transaction.
/// The events are numbered from the `last_seq` the lease-guarded update returns, and nothing
/// is stored when the lease is stale (`None`).
pub(super) async fn append(
    pg: &PgEngine,
    org: &str,
    id: Uuid,
    lease_id: Uuid,
    events: Vec<NewEvent>,
    at: Timestamp,
    second_ms: i64,
) -> StoreResult<Option<Vec<ExecutionEvent>>> {
    let n = events.len() as i64;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let data: Vec<String> = events.iter().map(|e| e.data.to_string()).collect();
    let times: Vec<Timestamp> = events.iter().map(|e| e.timestamp.unwrap_or(at)).collect();
    let mut conn = pg.conns.get().await?;
    // An empty batch is the lease check and its extension alone: `UNNEST` yields no rows.
    let moved: Option<(i64, Option<i64>)> = sqlx::query_as(concat!(
        "WITH u AS (",
        append_sql!(),
        "), ev AS (INSERT INTO execution_events (execution_id, seq, organization_id, event_type, data, created_at) \
           SELECT $2, u.last_seq - $4 + e.ord, $1, e.event_type, e.data, e.created_at FROM u, \
             UNNEST($7::text[], $8::text[], $9::timestamptz[]) WITH ORDINALITY AS e(event_type, data, created_at, ord)) \
         SELECT last_seq, lease_until FROM u"
    ))
    .bind(org)
    .bind(id)
    .bind(lease_id)
    .bind(n)
    .bind(at.timestamp_millis())
    .bind(second_ms)
    .bind(&types)
    .bind(&data)
    .bind(&times)
    .fetch_optional(&mut *conn)
    .await?;
    conn.release();
    Ok(moved.map(|(last, _)| numbered(events, last, at)))
}

/// How often a change is tried against a row that keeps moving before it takes the row lock.
const OPTIMISTIC_TRIES: usize = 3;

/// See `Executions::apply`: reads the row, lets `change` edit it, and writes it back with its
/// events in one statement guarded by what the read saw (`last_seq`, which every other change
/// and every stored event bumps, and `lease_until`, which heartbeats extend). A row that moved
/// meanwhile is read again; after [`OPTIMISTIC_TRIES`], or when the change writes webhook
/// deliveries (the organization has webhooks, read with the row and checked again by the
/// write), the row is locked in a transaction instead.
pub(super) async fn apply<F>(pool: &PgPool, pg: &PgEngine, org: &str, id: Uuid, change: F) -> StoreResult<Changed>
where
    F: Fn(&mut Draft) -> StoreResult<()>,
{
    let mut conn = pg.conns.get().await?;
    for _ in 0..OPTIMISTIC_TRIES {
        let row = sqlx::query(concat!(
            "SELECT ",
            exec_columns!(),
            ", ",
            hooked_sql!(),
            " AS hooked FROM executions WHERE id = $1 AND organization_id = $2"
        ))
        .bind(id)
        .bind(org)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else {
            conn.release();
            return Err(StoreError::NotFound);
        };
        let (record, hooked): (ExecutionRecord, bool) =
            (ExecutionRow::from_row(&row)?.into_record()?, row.try_get("hooked")?);
        let seen = (record.execution.event_count, record.lease_until);
        let (mut draft, first) = match Draft::edit(record, &change) {
            Ok(edited) => edited,
            // A change the state machine refuses is an answer, not a broken connection.
            Err(e) => {
                conn.release();
                return Err(e);
            }
        };
        let emits = webhook_event(draft.from, draft.row.execution.status).is_some();
        if hooked && emits {
            break;
        }
        let stored = stamp(first, draft.at, std::mem::take(&mut draft.events));
        let (types, data) = columns(&stored);
        let written = bind_change(
            sqlx::query(concat!(
                "WITH u AS (",
                update_sql!(),
                " AND last_seq = $16 AND lease_until IS NOT DISTINCT FROM $17::bigint \
               AND NOT ($21::boolean AND EXISTS (SELECT 1 FROM webhooks WHERE organization_id = $1 AND enabled)) \
             RETURNING id), \
             ev AS (INSERT INTO execution_events (execution_id, seq, organization_id, event_type, data, created_at) \
               SELECT u.id, $18 + e.ord - 1, $1, e.event_type, e.data, $15 \
               FROM u, UNNEST($19::text[], $20::text[]) WITH ORDINALITY AS e(event_type, data, ord)) \
             SELECT COUNT(*) FROM u"
            )),
            org,
            id,
            &draft,
        )
        .bind(seen.0)
        .bind(seen.1)
        .bind(first)
        .bind(&types)
        .bind(&data)
        // A webhook enabled since the read holds the write back; the next read sees it.
        .bind(emits)
        .fetch_one(&mut *conn)
        .await?
        .try_get::<i64, _>(0)?;
        if written == 1 {
            conn.release();
            return Ok(draft.into_changed(stored, false));
        }
    }
    conn.release();
    apply_locked(pool, org, id, change).await
}

/// `apply` under the row lock, in a transaction that also writes the change's webhook
/// deliveries.
async fn apply_locked<F>(pool: &PgPool, org: &str, id: Uuid, change: F) -> StoreResult<Changed>
where
    F: Fn(&mut Draft) -> StoreResult<()>,
{
    let mut tx = pool.begin().await?;
    let row: ExecutionRow = sqlx::query_as(concat!(
        "SELECT ",
        exec_columns!(),
        " FROM executions WHERE organization_id = $1 AND id = $2 FOR UPDATE"
    ))
    .bind(org)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(StoreError::NotFound)?;
    let (mut draft, first) = Draft::edit(row.into_record()?, &change)?;
    bind_change(sqlx::query(update_sql!()), org, id, &draft)
        .execute(&mut *tx)
        .await?;
    let e = &draft.row.execution;
    let deliveries = match webhook_event(draft.from, e.status) {
        Some(event_type) => enqueue_webhooks!(tx, true, org, event_type, webhook_data(e)) > 0,
        None => false,
    };
    let events = std::mem::take(&mut draft.events);
    let stored = insert_events(&mut *tx, org, id, first, draft.at, events).await?;
    tx.commit().await?;
    Ok(draft.into_changed(stored, deliveries))
}

/// Binds `update_sql!`'s parameters (`$1`–`$15`): the row as the change left it.
fn bind_change<'q>(
    q: Query<'q, Postgres, PgArguments>,
    org: &'q str,
    id: Uuid,
    draft: &'q Draft,
) -> Query<'q, Postgres, PgArguments> {
    let e = &draft.row.execution;
    q.bind(org)
        .bind(id)
        .bind(e.status.as_str())
        .bind(&e.response)
        .bind(&e.error_message)
        .bind(Json(&e.usage))
        .bind(e.attempt)
        .bind(e.worker_id)
        .bind(draft.row.lease_id)
        .bind(draft.row.lease_until)
        .bind(draft.row.cancel_deadline)
        .bind(e.event_count)
        .bind(e.started_at)
        .bind(e.completed_at)
        .bind(e.updated_at)
}
