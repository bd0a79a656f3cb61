//! The execution engine's hot writes on PostgreSQL. Each is one statement where it can be:
//! the database is a round trip away, and on a small machine the round trips, not the work
//! in them, are what an execution costs (a transaction is a `BEGIN`, its statements and a
//! `COMMIT`, each a trip). So the execution and its first events are one insert, a claim
//! also reads what the run context needs, and a status change is a read and a guarded
//! write instead of a locked transaction.
//!
//! Webhook deliveries are part of the same statements: they refer to the event that caused
//! them, and the sender makes their payload (see `webhook_payload`), so an organization with
//! webhooks takes the same path as one without.

use cp_types::Timestamp;
use cp_types::execution::{ExecutionEvent, NewEvent};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, PgPool, Postgres, Row};
use uuid::Uuid;

use super::{
    Changed, Claimed, Draft, EventRow, ExecutionRecord, ExecutionRow, NewExecution, change_webhooks, claim_event,
    creation, numbered, stamp,
};
use crate::error::{StoreError, StoreResult};
use crate::pg_conns::HotConns;
use crate::workers::{SeatRow, WorkerSeat, seat_sql};

/// A statement's last CTE `wh`: one delivery of each webhook event of the array `$types`
/// (message ids in the array `$event_ids`) for every enabled endpoint of organization `$org`
/// subscribed to it, made later from event `$seq` of execution `$exec` (`u` or `c` the CTE
/// holding it); `$ms` and `$at` are now in Unix ms and as a timestamp. The endpoints are
/// key-share locked, so one deleted meanwhile is skipped instead of failing the foreign key.
macro_rules! deliveries_sql {
    ($from:literal, $org:literal, $types:literal, $event_ids:literal, $exec:literal, $seq:literal, $ms:literal, $at:literal) => {
        concat!(
            "wh AS (INSERT INTO webhook_deliveries (id, organization_id, webhook_id, event_id, event_type, execution_id, \
               event_seq, status, attempts, next_attempt_at, created_at, updated_at) \
             SELECT kcp_uuid_v7(), w.organization_id, w.id, t.event_id, t.event_type, ", $exec, ", ", $seq,
            ", 'pending', 0, ", $ms, ", ", $at, ", ", $at, " FROM ", $from, ", webhooks w, \
               UNNEST(", $types, "::text[], ", $event_ids, "::uuid[]) AS t(event_type, event_id) \
             WHERE w.organization_id = ", $org, " AND w.enabled \
               AND (jsonb_exists(w.events, t.event_type) OR jsonb_exists(w.events, '*')) \
             FOR KEY SHARE OF w RETURNING 1)"
        )
    };
}

/// The type and data columns of events, as arrays for `UNNEST`.
fn columns(events: &[ExecutionEvent]) -> (Vec<&str>, Vec<String>) {
    events
        .iter()
        .map(|e| (e.event_type.as_str(), e.data.to_string()))
        .unzip()
}

/// See `Executions::create`: the execution and its first events in one statement, stored
/// against the queue as the execute read it.
pub(super) async fn create(
    conns: &HotConns,
    org: &str,
    id: Uuid,
    new: NewExecution,
    at: Timestamp,
) -> StoreResult<(ExecutionRecord, Vec<ExecutionEvent>)> {
    let mut conn = conns.get().await?;
    let created = create_on(&mut conn, org, id, new, at).await?;
    conn.release();
    Ok(created)
}

/// `create` on `conn` (a workflow's advance creates its steps' executions in its transaction).
pub(crate) async fn create_on(
    conn: &mut PgConnection,
    org: &str,
    id: Uuid,
    new: NewExecution,
    at: Timestamp,
) -> StoreResult<(ExecutionRecord, Vec<ExecutionEvent>)> {
    let (metadata, max_attempts, events) = creation(id, &new, new.queue_seen.clone(), at)?;
    let stored = stamp(1, at, events);
    let (types, data) = columns(&stored);
    let row: ExecutionRow = sqlx::query_as(concat!(
        "WITH x AS (",
        create_sql!(),
        "), ev AS (INSERT INTO execution_events (execution_id, seq, organization_id, event_type, data, created_at) \
           SELECT x.id, e.ord, x.organization_id, e.event_type, e.data, x.created_at \
           FROM x, UNNEST($19::text[], $20::text[]) WITH ORDINALITY AS e(event_type, data, ord)) \
         SELECT * FROM x"
    ))
    .bind(id)
    .bind(org)
    .bind(new.execution_type.as_str())
    .bind(new.entity_id)
    .bind(&new.entity_name)
    .bind(new.worker_queue_id)
    .bind(&new.prompt)
    .bind(&new.system_prompt)
    .bind(Json(&metadata))
    .bind(Json(&new.user_metadata))
    .bind(Json(&new.execution_environment))
    .bind(max_attempts)
    .bind(stored.len() as i64)
    .bind(&new.created_by)
    .bind(at)
    .bind(new.workflow_run_id)
    .bind(&new.step_id)
    .bind(new.model_id)
    .bind(&types)
    .bind(&data)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| match e {
        // The queue was deleted since the execute read it.
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
        e => e.into(),
    })?;
    Ok((row.into_record()?, stored))
}

/// `WorkerSeat::may_claim` in SQL, over the seat CTE `s`: `$1` the polling key (null for an
/// admin), `$5` now in Unix ms.
macro_rules! seat_may_claim_sql {
    () => {
        "($1::uuid IS NULL OR s.key_id = $1::uuid) AND s.worker_status NOT IN ('disconnected', 'offline') \
         AND s.alive_until > $5 AND NOT s.drain AND NOT s.cancelling"
    };
}

/// See `Executions::claim`: the worker's seat, and when it lets the poll claim, the claim, its
/// `status` event, its `execution.started` deliveries, the catalog version and the
/// conversation, in one statement. No row: no such worker.
pub(super) async fn claim(
    conns: &HotConns,
    org: &str,
    worker: Uuid,
    key: Option<Uuid>,
    lease_id: Uuid,
    at: Timestamp,
    second_ms: i64,
) -> StoreResult<(WorkerSeat, Option<Claimed>)> {
    // The event's data is made here; only the attempt comes from the claimed row.
    let (event_type, template) = claim_event(0, worker);
    let now_ms = at.timestamp_millis();
    let mut conn = conns.get().await?;
    let row: Option<PgRow> = sqlx::query(concat!(
        "WITH s AS (",
        seat_sql!("$2", "$3"),
        "), c AS (",
        claim_sql!(
            "FOR UPDATE SKIP LOCKED",
            concat!("(SELECT s.seat_queue_id FROM s WHERE ", seat_may_claim_sql!(), ")"),
            "$5 + 3 * $10 * (SELECT s.heartbeat_interval FROM s)"
        ),
        "), ev AS (INSERT INTO execution_events (execution_id, seq, organization_id, event_type, data, created_at) \
           SELECT c.id, c.last_seq, c.organization_id, $7, jsonb_set($8::jsonb, '{attempt}', to_jsonb(c.attempt))::text, $6 \
           FROM c), ",
        deliveries_sql!("c", "$2", "ARRAY['execution.started']", "ARRAY[$9::uuid]", "c.id", "c.last_seq", "$5", "$6"),
        " SELECT s.*, (SELECT COUNT(*) FROM wh) AS deliveries, \
           (SELECT version FROM catalog_versions WHERE organization_id = $2) AS catalog_version, \
           (SELECT json_agg(json_build_array(h.seq, h.event_type, h.data, h.created_at) ORDER BY h.seq) \
            FROM execution_events h WHERE h.execution_id = c.id AND h.organization_id = $2 \
              AND h.event_type = 'message') AS history, c.* \
         FROM s LEFT JOIN c ON true"
    ))
    .bind(key)
    .bind(org)
    .bind(worker)
    .bind(lease_id)
    .bind(now_ms)
    .bind(at)
    .bind(&event_type)
    .bind(Json(&template))
    .bind(Uuid::now_v7())
    .bind(second_ms)
    .fetch_optional(&mut *conn)
    .await?;
    conn.release();
    let row = row.ok_or(StoreError::NotFound)?;
    let seat = SeatRow::from_row(&row)?.into_seat(second_ms, now_ms);
    if row.try_get::<Option<Uuid>, _>("id")?.is_none() {
        return Ok((seat, None));
    }
    let record = ExecutionRow::from_row(&row)?.into_record()?;
    let e = &record.execution;
    let events = stamp(e.event_count, at, vec![claim_event(e.attempt, worker)]);
    let history: Option<Json<Vec<EventRow>>> = row.try_get("history")?;
    let history = history.map(|h| h.0).unwrap_or_default();
    let catalog_version = row.try_get("catalog_version")?;
    let deliveries = row.try_get::<i64, _>("deliveries")? > 0;
    Ok((
        seat,
        Some(Claimed::new(record, events, deliveries, catalog_version, history)),
    ))
}

/// See `Executions::append`: one statement, so one round trip and no explicit transaction.
/// The events are numbered from the `last_seq` the lease-guarded update returns, and nothing
/// is stored when the lease is stale (`None`).
pub(super) async fn append(
    conns: &HotConns,
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
    let mut conn = conns.get().await?;
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
/// events and webhook deliveries in one statement guarded by what the read saw (`last_seq`,
/// which every other change and every stored event bumps, and `lease_until`, which heartbeats
/// extend). A row that moved meanwhile is read again; after [`OPTIMISTIC_TRIES`] the same read
/// and write run in a transaction that holds the row lock between them.
pub(super) async fn apply<F>(pool: &PgPool, conns: &HotConns, org: &str, id: Uuid, change: F) -> StoreResult<Changed>
where
    F: Fn(&mut Draft) -> StoreResult<()>,
{
    let mut conn = conns.get().await?;
    for _ in 0..OPTIMISTIC_TRIES {
        // An error out of `?` drops the connection: it may be broken.
        match apply_once(&mut conn, false, org, id, &change).await? {
            Tried::Moved => continue,
            Tried::Written(changed) => {
                conn.release();
                return Ok(*changed);
            }
            Tried::Refused(e) => {
                conn.release();
                return Err(e);
            }
        }
    }
    conn.release();
    let mut tx = pool.begin().await?;
    let tried = apply_once(&mut tx, true, org, id, &change).await?;
    tx.commit().await?;
    match tried {
        Tried::Written(changed) => Ok(*changed),
        Tried::Refused(e) => Err(e),
        Tried::Moved => Err(StoreError::Unavailable("a locked execution moved".into())),
    }
}

/// What one try of a change did.
enum Tried {
    Written(Box<Changed>),
    /// The row moved between the read and the write: nothing was written.
    Moved,
    /// The change refused the row (the state machine's answer, or no such execution).
    Refused(StoreError),
}

/// One read and guarded write of `apply`; `lock` holds the row from the read on (inside the
/// caller's transaction).
async fn apply_once<F>(conn: &mut PgConnection, lock: bool, org: &str, id: Uuid, change: &F) -> StoreResult<Tried>
where
    F: Fn(&mut Draft) -> StoreResult<()>,
{
    let read = if lock {
        concat!(
            "SELECT ",
            exec_columns!(),
            " FROM executions WHERE id = $1 AND organization_id = $2 FOR UPDATE"
        )
    } else {
        concat!(
            "SELECT ",
            exec_columns!(),
            " FROM executions WHERE id = $1 AND organization_id = $2"
        )
    };
    let row: Option<ExecutionRow> = sqlx::query_as(read)
        .bind(id)
        .bind(org)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(Tried::Refused(StoreError::NotFound));
    };
    let record = row.into_record()?;
    let seen = (record.execution.event_count, record.lease_until);
    let (mut draft, first) = match Draft::edit(record, change) {
        Ok(edited) => edited,
        Err(e) => return Ok(Tried::Refused(e)),
    };
    let stored = stamp(first, draft.at, std::mem::take(&mut draft.events));
    let (types, data) = columns(&stored);
    let (hooks, hook_seq) = change_webhooks(&draft, &stored);
    let hook_ids: Vec<Uuid> = hooks.iter().map(|_| Uuid::now_v7()).collect();
    let row = bind_change(
        sqlx::query(concat!(
            "WITH u AS (",
            update_sql!(),
            " AND last_seq = $16 AND lease_until IS NOT DISTINCT FROM $17::bigint RETURNING id), \
             ev AS (INSERT INTO execution_events (execution_id, seq, organization_id, event_type, data, created_at) \
               SELECT u.id, $18 + e.ord - 1, $1, e.event_type, e.data, $15 \
               FROM u, UNNEST($19::text[], $20::text[]) WITH ORDINALITY AS e(event_type, data, ord)), ",
            deliveries_sql!("u", "$1", "$21", "$23", "u.id", "$22", "$24", "$15"),
            ", wk AS (INSERT INTO workflow_wakeups (execution_id, organization_id, created_at) \
               SELECT u.id, $1, $15 FROM u WHERE $25 ON CONFLICT DO NOTHING) \
             SELECT (SELECT COUNT(*) FROM u) AS written, (SELECT COUNT(*) FROM wh) AS deliveries"
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
    .bind(&hooks)
    .bind(hook_seq)
    .bind(&hook_ids)
    .bind(draft.at.timestamp_millis())
    .bind(draft.wakes_workflow())
    .fetch_one(&mut *conn)
    .await?;
    if row.try_get::<i64, _>("written")? != 1 {
        return Ok(Tried::Moved);
    }
    let deliveries = row.try_get::<i64, _>("deliveries")? > 0;
    Ok(Tried::Written(Box::new(draft.into_changed(stored, deliveries))))
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
        .bind(draft.row.lease_id.map(Uuid::from))
        .bind(draft.row.lease_until)
        .bind(draft.row.cancel_deadline)
        .bind(e.event_count)
        .bind(e.started_at)
        .bind(e.completed_at)
        .bind(e.updated_at)
}
