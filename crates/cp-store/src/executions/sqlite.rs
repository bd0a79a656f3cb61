//! The execution engine's hot writes on SQLite, as jobs of the writer thread
//! ([`crate::sqlite_writer`]): the same statements as the sqlx path, run as plain calls.

use cp_types::execution::{ExecutionEvent, NewEvent};
use cp_types::{Timestamp, now};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row, ToSql};
use serde::de::DeserializeOwned;
use sqlx::types::Json;
use uuid::Uuid;

use super::{
    Changed, Claimed, Draft, EventRow, ExecutionRecord, ExecutionRow, NewExecution, NewTypedEvent, change_webhooks,
    claim_event, creation, numbered, stamp,
};
use crate::error::{StoreError, StoreResult};
use crate::sqlite_writer::{bind_numbered, ts_parse, ts_text, uuid_blob, uuid_of};
use crate::workers::{SeatRow, WorkerSeat, seat_sql};

fn column<T: rusqlite::types::FromSql>(r: &Row<'_>, i: usize) -> StoreResult<T> {
    Ok(r.get(i)?)
}

fn uuid_at(r: &Row<'_>, i: usize) -> StoreResult<Uuid> {
    uuid_of(r.get_ref(i)?)
}

fn opt_uuid_at(r: &Row<'_>, i: usize) -> StoreResult<Option<Uuid>> {
    match r.get_ref(i)? {
        ValueRef::Null => Ok(None),
        v => uuid_of(v).map(Some),
    }
}

fn ts_at(r: &Row<'_>, i: usize) -> StoreResult<Timestamp> {
    ts_parse(&column::<String>(r, i)?)
}

fn opt_ts_at(r: &Row<'_>, i: usize) -> StoreResult<Option<Timestamp>> {
    column::<Option<String>>(r, i)?.map(|s| ts_parse(&s)).transpose()
}

fn json_at<T: DeserializeOwned>(r: &Row<'_>, i: usize) -> StoreResult<Json<T>> {
    let text: String = column(r, i)?;
    serde_json::from_str(&text)
        .map(Json)
        .map_err(|e| StoreError::Corrupt(format!("json column {i}: {e}")))
}

/// A row selected with `exec_columns!()`, in that order.
fn execution_row(r: &Row<'_>) -> StoreResult<ExecutionRow> {
    Ok(ExecutionRow {
        id: uuid_at(r, 0)?,
        organization_id: column(r, 1)?,
        execution_type: column(r, 2)?,
        entity_id: uuid_at(r, 3)?,
        entity_name: column(r, 4)?,
        worker_queue_id: opt_uuid_at(r, 5)?,
        prompt: column(r, 6)?,
        system_prompt: column(r, 7)?,
        status: column(r, 8)?,
        response: column(r, 9)?,
        error_message: column(r, 10)?,
        usage: json_at(r, 11)?,
        execution_metadata: json_at(r, 12)?,
        user_metadata: json_at(r, 13)?,
        execution_environment: json_at(r, 14)?,
        attempt: column(r, 15)?,
        max_attempts: column(r, 16)?,
        worker_id: opt_uuid_at(r, 17)?,
        lease_id: opt_uuid_at(r, 18)?,
        lease_until: column(r, 19)?,
        cancel_deadline: column(r, 20)?,
        last_seq: column(r, 21)?,
        created_at: ts_at(r, 22)?,
        started_at: opt_ts_at(r, 23)?,
        completed_at: opt_ts_at(r, 24)?,
        updated_at: ts_at(r, 25)?,
        workflow_run_id: opt_uuid_at(r, 26)?,
        step_id: column(r, 27)?,
    })
}

/// Runs a statement that returns at most one execution row.
fn one_row(conn: &Connection, sql: &str, args: &[&dyn ToSql]) -> StoreResult<Option<ExecutionRecord>> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind_numbered(&mut stmt, args)?;
    let mut rows = stmt.raw_query();
    match rows.next()? {
        Some(r) => Ok(Some(execution_row(r)?.into_record()?)),
        None => Ok(None),
    }
}

/// Stores events of one execution, numbered by the caller.
fn write_events(conn: &Connection, org: &str, id: Uuid, events: &[ExecutionEvent]) -> StoreResult<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO execution_events (execution_id, seq, organization_id, event_type, data, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for e in events {
        stmt.execute(rusqlite::params![
            uuid_blob(&id),
            e.seq,
            org,
            e.event_type,
            e.data.to_string(),
            ts_text(&e.timestamp)
        ])?;
    }
    Ok(())
}

/// Numbers `(type, data)` events from `first`, stamped `at`, and stores them.
fn insert_events(
    conn: &Connection,
    org: &str,
    id: Uuid,
    first: i64,
    at: Timestamp,
    events: Vec<NewTypedEvent>,
) -> StoreResult<Vec<ExecutionEvent>> {
    let stored = stamp(first, at, events);
    write_events(conn, org, id, &stored)?;
    Ok(stored)
}

/// One delivery of `event_type` for every enabled endpoint of `org` subscribed to it, made
/// from the execution's event `seq` when it is sent; whether there was any.
fn enqueue_webhooks(conn: &Connection, org: &str, event_type: &str, execution: Uuid, seq: i64) -> StoreResult<bool> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM webhooks w WHERE organization_id = ?1 AND enabled \
         AND EXISTS (SELECT 1 FROM json_each(w.events) WHERE value = ?2 OR value = '*')",
    )?;
    let mut endpoints = Vec::new();
    let mut rows = stmt.query(rusqlite::params![org, event_type])?;
    while let Some(r) = rows.next()? {
        endpoints.push(uuid_at(r, 0)?);
    }
    let event_id = Uuid::now_v7();
    let at = now();
    let mut insert = conn.prepare_cached(
        "INSERT INTO webhook_deliveries (id, organization_id, webhook_id, event_id, event_type, execution_id, \
         event_seq, status, attempts, next_attempt_at, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?9, ?9)",
    )?;
    for endpoint in &endpoints {
        insert.execute(rusqlite::params![
            uuid_blob(&Uuid::now_v7()),
            org,
            uuid_blob(endpoint),
            uuid_blob(&event_id),
            event_type,
            uuid_blob(&execution),
            seq,
            at.timestamp_millis(),
            ts_text(&at)
        ])?;
    }
    Ok(!endpoints.is_empty())
}

/// See `Executions::create`.
pub(crate) fn create(
    conn: &Connection,
    org: &str,
    id: Uuid,
    new: NewExecution,
    at: Timestamp,
) -> StoreResult<(ExecutionRecord, Vec<ExecutionEvent>)> {
    let queue: Option<(String, String, i64)> = conn
        .prepare_cached("SELECT name, status, max_attempts FROM worker_queues WHERE organization_id = ?1 AND id = ?2")?
        .query_row(rusqlite::params![org, uuid_blob(&new.worker_queue_id)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let (metadata, max_attempts, events) = creation(id, &new, queue, at)?;
    let at_text = ts_text(&at);
    let row = one_row(
        conn,
        create_sql!(),
        &[
            &uuid_blob(&id),
            &org,
            &new.execution_type.as_str(),
            &uuid_blob(&new.entity_id),
            &new.entity_name,
            &uuid_blob(&new.worker_queue_id),
            &new.prompt,
            &new.system_prompt,
            &metadata.to_string(),
            &new.user_metadata.to_string(),
            &serde_json::to_string(&new.execution_environment).unwrap_or_else(|_| "{}".into()),
            &max_attempts,
            &(events.len() as i64),
            &new.created_by,
            &at_text,
            &new.workflow_run_id.as_ref().map(uuid_blob),
            &new.step_id,
            &new.model_id.as_ref().map(uuid_blob),
        ],
    )?
    .ok_or(StoreError::NotFound)?;
    let stored = insert_events(conn, org, id, 1, at, events)?;
    Ok((row, stored))
}

/// See `Executions::claim`.
pub(super) fn claim(
    conn: &Connection,
    org: &str,
    worker: Uuid,
    key: Option<Uuid>,
    lease_id: Uuid,
    at: Timestamp,
    second_ms: i64,
) -> StoreResult<(WorkerSeat, Option<Claimed>)> {
    let seat = {
        let mut stmt = conn.prepare_cached(seat_sql!("$1", "$2"))?;
        bind_numbered(&mut stmt, &[&org, &uuid_blob(&worker)])?;
        let mut rows = stmt.raw_query();
        let r = rows.next()?.ok_or(StoreError::NotFound)?;
        SeatRow {
            seat_queue_id: uuid_at(r, 0)?,
            key_id: opt_uuid_at(r, 1)?,
            heartbeat_interval: column(r, 2)?,
            drain: column(r, 3)?,
            worker_status: column(r, 4)?,
            alive_until: column(r, 5)?,
            cancelling: column(r, 6)?,
        }
        .into_seat(second_ms, at.timestamp_millis())
    };
    if !seat.may_claim(key) {
        return Ok((seat, None));
    }
    let lease = (lease_id, at.timestamp_millis() + seat.lease_ms());
    let claimed = take(conn, org, seat.worker_queue_id.uuid(), worker, lease, at)?;
    Ok((seat, claimed))
}

/// The claim proper, once the seat allowed it.
fn take(
    conn: &Connection,
    org: &str,
    queue: Uuid,
    worker: Uuid,
    (lease_id, lease_until): (Uuid, i64),
    at: Timestamp,
) -> StoreResult<Option<Claimed>> {
    let Some(record) = one_row(
        conn,
        claim_sql!("", "$1", "$5"),
        &[
            &uuid_blob(&queue),
            &org,
            &uuid_blob(&worker),
            &uuid_blob(&lease_id),
            &lease_until,
            &ts_text(&at),
        ],
    )?
    else {
        return Ok(None);
    };
    let e = &record.execution;
    let events = insert_events(conn, org, e.id, e.event_count, at, vec![claim_event(e.attempt, worker)])?;
    let deliveries = enqueue_webhooks(conn, org, "execution.started", e.id, events[0].seq)?;
    let id = e.id;
    let catalog_version: Option<i64> = conn
        .prepare_cached("SELECT version FROM catalog_versions WHERE organization_id = ?1")?
        .query_row([org], |r| r.get(0))
        .optional()?;
    let mut history = Vec::new();
    {
        let mut stmt = conn.prepare_cached(session_sql!())?;
        bind_numbered(&mut stmt, &[&uuid_blob(&id), &org])?;
        let mut rows = stmt.raw_query();
        while let Some(r) = rows.next()? {
            history.push(EventRow {
                seq: column(r, 0)?,
                event_type: column(r, 1)?,
                data: column(r, 2)?,
                created_at: ts_at(r, 3)?,
            });
        }
    }
    Ok(Some(Claimed::new(record, events, deliveries, catalog_version, history)))
}

/// See `Executions::append`: `None` when the lease is not the current one.
pub(super) fn append(
    conn: &Connection,
    org: &str,
    id: Uuid,
    lease_id: Uuid,
    events: Vec<NewEvent>,
    at: Timestamp,
    second_ms: i64,
) -> StoreResult<Option<Vec<ExecutionEvent>>> {
    let n = events.len() as i64;
    let last: Option<i64> = {
        let mut stmt = conn.prepare_cached(append_sql!())?;
        bind_numbered(
            &mut stmt,
            &[
                &org,
                &uuid_blob(&id),
                &uuid_blob(&lease_id),
                &n,
                &at.timestamp_millis(),
                &second_ms,
            ],
        )?;
        let mut rows = stmt.raw_query();
        match rows.next()? {
            Some(r) => Some(r.get(0)?),
            None => None,
        }
    };
    let Some(last) = last else {
        return Ok(None);
    };
    let stored = numbered(events, last, at);
    write_events(conn, org, id, &stored)?;
    Ok(Some(stored))
}

/// See `Executions::apply`.
pub(super) fn apply(
    conn: &Connection,
    org: &str,
    id: Uuid,
    change: impl FnOnce(&mut Draft) -> StoreResult<()>,
) -> StoreResult<Changed> {
    let row = one_row(
        conn,
        concat!(
            "SELECT ",
            exec_columns!(),
            " FROM executions WHERE organization_id = $1 AND id = $2"
        ),
        &[&org, &uuid_blob(&id)],
    )?
    .ok_or(StoreError::NotFound)?;
    let (mut draft, first) = Draft::edit(row, change)?;
    let e = &draft.row.execution;
    {
        let mut stmt = conn.prepare_cached(update_sql!())?;
        let usage = serde_json::to_string(&e.usage).unwrap_or_else(|_| "{}".into());
        bind_numbered(
            &mut stmt,
            &[
                &org,
                &uuid_blob(&id),
                &e.status.as_str(),
                &e.response,
                &e.error_message,
                &usage,
                &e.attempt,
                &e.worker_id.as_ref().map(uuid_blob),
                &draft.row.lease_id.as_ref().map(|l| uuid_blob(&l.0)),
                &draft.row.lease_until,
                &draft.row.cancel_deadline,
                &e.event_count,
                &e.started_at.as_ref().map(ts_text),
                &e.completed_at.as_ref().map(ts_text),
                &ts_text(&e.updated_at),
            ],
        )?;
        stmt.raw_execute()?;
    }
    let events = std::mem::take(&mut draft.events);
    let events = insert_events(conn, org, id, first, draft.at, events)?;
    if draft.wakes_workflow() {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO workflow_wakeups (execution_id, organization_id, created_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(rusqlite::params![uuid_blob(&id), org, ts_text(&draft.at)])?;
    }
    let (hooks, seq) = change_webhooks(&draft, &events);
    let mut deliveries = false;
    for event_type in hooks {
        deliveries |= enqueue_webhooks(conn, org, event_type, id, seq)?;
    }
    Ok(draft.into_changed(events, deliveries))
}
