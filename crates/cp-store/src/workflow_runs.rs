//! Workflow runs: each run's row holds its step states as one document, so an advance of the
//! run (step states, its new executions, its events, the outbox rows it consumed) is one
//! transaction guarded by the run's `last_seq`. Two advances of the same run (two replicas,
//! or a control request racing the scheduler) cannot both commit: the second finds the row
//! moved and starts over from what the first wrote, so no step starts twice.

use cp_types::execution::{Execution, ExecutionEvent, ExecutionStatus};
use cp_types::ids::OrgId;
use cp_types::page::PageRequest;
use cp_types::workflow_run::{RunFilter, RunStatus, StepRun, WorkflowRun};
use cp_types::{Page, Timestamp, now};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db, write_tx};
use crate::error::{StoreError, StoreResult, parse};
use crate::executions::NewExecution;
use crate::page::page_of;

macro_rules! run_columns {
    () => {
        "id, organization_id, workflow_id, workflow_name, version, status, inputs, worker_queue_id, steps, attempt, \
         error, wake_at, last_seq, created_by, created_by_name, created_by_role, created_at, started_at, \
         completed_at, updated_at, parent_execution_id"
    };
}

#[derive(sqlx::FromRow)]
struct RunRow {
    id: Uuid,
    organization_id: String,
    workflow_id: Uuid,
    workflow_name: String,
    version: i64,
    status: String,
    inputs: Json<Value>,
    worker_queue_id: Option<Uuid>,
    steps: Json<Vec<StepRun>>,
    attempt: i64,
    error: Option<String>,
    wake_at: Option<i64>,
    last_seq: i64,
    created_by: String,
    created_by_name: String,
    created_by_role: String,
    created_at: Timestamp,
    started_at: Option<Timestamp>,
    completed_at: Option<Timestamp>,
    updated_at: Timestamp,
    parent_execution_id: Option<Uuid>,
}

/// A run with what the API does not show: when the scheduler looks again, and who started
/// it (the steps act for that key: its policies, its access logs).
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub run: WorkflowRun,
    pub wake_at: Option<i64>,
    pub created_by_name: String,
    pub created_by_role: String,
}

impl RunRow {
    fn into_record(self) -> StoreResult<RunRecord> {
        Ok(RunRecord {
            wake_at: self.wake_at,
            created_by_name: self.created_by_name,
            created_by_role: self.created_by_role,
            run: WorkflowRun {
                id: self.id,
                organization_id: self.organization_id,
                workflow_id: self.workflow_id,
                workflow_name: self.workflow_name,
                workflow_version: self.version,
                status: parse(&self.status)?,
                inputs: self.inputs.0,
                worker_queue_id: self.worker_queue_id,
                attempt: self.attempt,
                error: self.error,
                steps: self.steps.0,
                event_count: self.last_seq,
                created_by: self.created_by,
                created_at: self.created_at,
                started_at: self.started_at,
                completed_at: self.completed_at,
                updated_at: self.updated_at,
                parent_execution_id: self.parent_execution_id,
            },
        })
    }

    fn into_run(self) -> StoreResult<WorkflowRun> {
        Ok(self.into_record()?.run)
    }
}

/// A run to store, `pending`, for the scheduler to start at once.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: Uuid,
    pub workflow_id: Uuid,
    pub workflow_name: String,
    pub version: i64,
    pub inputs: Value,
    pub worker_queue_id: Option<Uuid>,
    pub steps: Vec<StepRun>,
    pub created_by: Uuid,
    pub created_by_name: String,
    pub created_by_role: String,
    /// The execution whose tool started the run.
    pub parent_execution_id: Option<Uuid>,
}

/// What one advance of a run writes.
#[derive(Debug, Clone)]
pub struct Advance {
    /// The run as the advance leaves it (`event_count` as it was read: the guard).
    pub run: WorkflowRun,
    /// Events of the run's stream, `(type, data)`.
    pub events: Vec<(String, Value)>,
    /// Step executions to create, with the ids the steps already name.
    pub executions: Vec<(Uuid, NewExecution)>,
    pub wake_at: Option<i64>,
    /// The outbox rows the advance read (their executions' ends are in `run`).
    pub consumed: Vec<Uuid>,
}

/// What a committed advance stored.
#[derive(Debug, Clone)]
pub struct Advanced {
    pub run: WorkflowRun,
    pub events: Vec<ExecutionEvent>,
    pub executions: Vec<(Execution, Vec<ExecutionEvent>)>,
    /// Webhook deliveries were written: the sender has work.
    pub deliveries: bool,
}

/// The webhook events of an advance's stored events: `workflow.run.state_changed` for each
/// `run_status`, `workflow.step.state_changed` for each `step_status`, as `(type, payload)`.
fn webhook_events(run: &WorkflowRun, events: &[ExecutionEvent]) -> Vec<(&'static str, String)> {
    let about = serde_json::json!({
        "id": run.id, "workflow_id": run.workflow_id, "workflow_name": run.workflow_name,
        "workflow_version": run.workflow_version, "attempt": run.attempt,
    });
    events
        .iter()
        .filter_map(|e| {
            let mut about = about.clone();
            let (event_type, data) = match e.event_type.as_str() {
                "run_status" => {
                    about["status"] = e.data["status"].clone();
                    about["error"] = e.data["error"].clone();
                    ("workflow.run.state_changed", serde_json::json!({"run": about}))
                }
                "step_status" => (
                    "workflow.step.state_changed",
                    serde_json::json!({"run": about, "step": e.data}),
                ),
                _ => return None,
            };
            let event = cp_types::webhook::WebhookEvent {
                event_type: event_type.into(),
                timestamp: e.timestamp,
                data,
            };
            Some((event_type, serde_json::to_string(&event).unwrap_or_default()))
        })
        .collect()
}

/// The enabled endpoints of an organization with the event types they take.
fn subscribed<'a>(endpoints: &'a [(Uuid, String)], event_type: &str) -> impl Iterator<Item = Uuid> + 'a {
    let event_type = event_type.to_owned();
    endpoints.iter().filter_map(move |(id, events)| {
        let events: Vec<String> = serde_json::from_str(events).unwrap_or_default();
        events.iter().any(|e| *e == event_type || e == "*").then_some(*id)
    })
}

/// How a step's execution ended, as an advance reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StepExecution {
    pub id: Uuid,
    pub status: String,
    pub response: Option<String>,
    pub error_message: Option<String>,
    pub completed_at: Option<Timestamp>,
}

impl StepExecution {
    pub fn status(&self) -> StoreResult<ExecutionStatus> {
        parse(&self.status)
    }
}

impl Store {
    /// The workflow runs of one organization.
    pub fn workflow_runs<'a>(&'a self, org: &'a str) -> WorkflowRuns<'a> {
        WorkflowRuns { db: &self.db, org }
    }

    /// Runs the scheduler must advance now: those with an ended step execution in the outbox,
    /// and those whose `wake_at` passed; `(organization, run)`, at most `limit`.
    pub async fn due_workflow_runs(&self, now_ms: i64, limit: i64) -> StoreResult<Vec<(OrgId, Uuid)>> {
        let due: Vec<(String, Uuid)> = with_db!(&self.db, pool =>
            sqlx::query_as(
                "SELECT e.organization_id, e.workflow_run_id FROM workflow_wakeups w \
                   JOIN executions e ON e.id = w.execution_id WHERE e.workflow_run_id IS NOT NULL \
                 UNION SELECT organization_id, id FROM workflow_runs WHERE wake_at IS NOT NULL AND wake_at <= $1 \
                 LIMIT $2")
                .bind(now_ms).bind(limit).fetch_all(pool).await)?;
        Ok(due.into_iter().map(|(org, id)| (OrgId(org), id)).collect())
    }
}

impl Store {
    /// Step executions still queued, running or paused whose run has ended (or was deleted
    /// with its workflow): `(organization, execution)`, at most `limit`. The run's advance cancels them after it commits; a crash
    /// in between leaves them to this.
    pub async fn orphaned_step_executions(&self, limit: i64) -> StoreResult<Vec<(OrgId, Uuid)>> {
        let rows: Vec<(String, Uuid)> = with_db!(&self.db, pool =>
            sqlx::query_as(
                "SELECT e.organization_id, e.id FROM executions e LEFT JOIN workflow_runs r ON r.id = e.workflow_run_id \
                 WHERE e.workflow_run_id IS NOT NULL AND e.status IN ('queued', 'running', 'paused') \
                   AND (r.id IS NULL OR r.status IN ('completed', 'failed', 'cancelled')) LIMIT $1")
                .bind(limit).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(|(org, id)| (OrgId(org), id)).collect())
    }
}

/// The workflow runs of one organization.
pub struct WorkflowRuns<'a> {
    db: &'a Db,
    org: &'a str,
}

macro_rules! run_filter {
    () => {
        " WHERE organization_id = $1 AND ($2 IS NULL OR workflow_id = $2) AND ($3 IS NULL OR status = $3) \
         AND ($4 IS NULL OR created_at >= $4) AND ($5 IS NULL OR parent_execution_id = $5)"
    };
}

impl WorkflowRuns<'_> {
    /// Stores a `pending` run with its first event; the scheduler picks it up at once
    /// (`wake_at` 0) if the caller does not advance it first.
    pub async fn create(&self, new: NewRun) -> StoreResult<WorkflowRun> {
        let (id, at) = (new.id, now());
        let event = serde_json::json!({"status": "pending", "attempt": 1}).to_string();
        let row: RunRow = write_tx!(self.db, tx, _pg => {
            let row: RunRow = sqlx::query_as(concat!(
                "INSERT INTO workflow_runs (id, organization_id, workflow_id, workflow_name, version, status, inputs, \
                   worker_queue_id, steps, attempt, wake_at, last_seq, created_by, created_by_name, created_by_role, \
                   created_at, updated_at, parent_execution_id) \
                 VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, 1, 0, 1, $9, $10, $11, $12, $12, $13) RETURNING ",
                run_columns!()))
                .bind(id).bind(self.org).bind(new.workflow_id).bind(&new.workflow_name).bind(new.version)
                .bind(Json(&new.inputs)).bind(new.worker_queue_id).bind(Json(&new.steps))
                .bind(new.created_by.to_string()).bind(&new.created_by_name).bind(&new.created_by_role).bind(at)
                .bind(new.parent_execution_id).fetch_one(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO workflow_run_events (run_id, seq, organization_id, event_type, data, created_at) \
                 VALUES ($1, 1, $2, 'run_status', $3, $4)")
                .bind(id).bind(self.org).bind(&event).bind(at).execute(&mut *tx).await?;
            row
        });
        row.into_run()
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<RunRecord> {
        let row: RunRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", run_columns!(), " FROM workflow_runs WHERE organization_id = $1 AND id = $2"))
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_record()
    }

    /// Runs, newest first.
    pub async fn list(&self, filter: RunFilter, page: PageRequest) -> StoreResult<Page<WorkflowRun>> {
        let status = filter.status.map(RunStatus::as_str);
        let rows: Vec<RunRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", run_columns!(), " FROM workflow_runs", run_filter!(),
                " ORDER BY id DESC LIMIT $6 OFFSET $7"))
                .bind(self.org).bind(filter.workflow_id).bind(status).bind(filter.since).bind(filter.execution_id)
                .bind(page.limit).bind(page.offset).fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar(concat!("SELECT COUNT(*) FROM workflow_runs", run_filter!()))
                    .bind(self.org).bind(filter.workflow_id).bind(status).bind(filter.since)
                    .bind(filter.execution_id).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, RunRow::into_run).await
    }

    /// The ended-or-not executions of the run's steps, and the outbox rows of the run, read
    /// in that order: an outbox row seen here means its execution's end is seen too.
    pub async fn step_executions(&self, run: Uuid) -> StoreResult<(Vec<Uuid>, Vec<StepExecution>)> {
        let woken: Vec<Uuid> = with_db!(self.db, pool =>
            sqlx::query_scalar(
                "SELECT w.execution_id FROM workflow_wakeups w JOIN executions e ON e.id = w.execution_id \
                 WHERE e.workflow_run_id = $1 AND e.organization_id = $2")
                .bind(run).bind(self.org).fetch_all(pool).await)?;
        let executions: Vec<StepExecution> = with_db!(self.db, pool =>
            sqlx::query_as(
                "SELECT id, status, response, error_message, completed_at FROM executions \
                 WHERE workflow_run_id = $1 AND organization_id = $2")
                .bind(run).bind(self.org).fetch_all(pool).await)?;
        Ok((woken, executions))
    }

    /// Drops the outbox rows of a run that is gone (deleted with its workflow).
    pub async fn forget(&self, run: Uuid) -> StoreResult<()> {
        with_db!(self.db, pool =>
            sqlx::query(
                "DELETE FROM workflow_wakeups WHERE execution_id IN \
                   (SELECT id FROM executions WHERE workflow_run_id = $1 AND organization_id = $2)")
                .bind(run).bind(self.org).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Stored events of the run with `seq > after`, oldest first, at most `limit`.
    pub async fn events(&self, id: Uuid, after: i64, limit: i64) -> StoreResult<Vec<ExecutionEvent>> {
        let rows: Vec<(i64, String, String, Timestamp)> = with_db!(self.db, pool =>
            sqlx::query_as(
                "SELECT seq, event_type, data, created_at FROM workflow_run_events \
                 WHERE run_id = $1 AND organization_id = $2 AND seq > $3 ORDER BY seq LIMIT $4")
                .bind(id).bind(self.org).bind(after).bind(limit).fetch_all(pool).await)?;
        Ok(rows
            .into_iter()
            .map(|(seq, event_type, data, timestamp)| ExecutionEvent {
                seq,
                event_type,
                data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
                timestamp,
            })
            .collect())
    }

    /// Writes an advance if the run is still as it was read (`Ok(None)` otherwise: nothing
    /// was written, read it again).
    pub async fn commit(&self, advance: Advance) -> StoreResult<Option<Advanced>> {
        let at = now();
        let first = advance.run.event_count + 1;
        let events = crate::executions::stamp(first, at, advance.events.clone());
        let org = self.org.to_owned();
        match self.db {
            Db::Sqlite(_, writer) => {
                writer
                    .run(move |conn| sqlite::commit(conn, &org, advance, events, at))
                    .await
            }
            Db::Postgres(pool, _) => postgres::commit(pool, &org, advance, events, at).await,
        }
    }
}

mod postgres {
    use super::*;
    use sqlx::PgPool;

    pub(super) async fn commit(
        pool: &PgPool,
        org: &str,
        advance: Advance,
        events: Vec<ExecutionEvent>,
        at: Timestamp,
    ) -> StoreResult<Option<Advanced>> {
        let run = &advance.run;
        let mut tx = pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE workflow_runs SET status = $3, steps = $4, attempt = $5, error = $6, wake_at = $7, \
               last_seq = last_seq + $8, started_at = $9, completed_at = $10, updated_at = $11 \
             WHERE organization_id = $1 AND id = $2 AND last_seq = $12",
        )
        .bind(org)
        .bind(run.id)
        .bind(run.status.as_str())
        .bind(Json(&run.steps))
        .bind(run.attempt)
        .bind(&run.error)
        .bind(advance.wake_at)
        .bind(events.len() as i64)
        .bind(run.started_at)
        .bind(run.completed_at)
        .bind(at)
        .bind(run.event_count)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved != 1 {
            return Ok(None);
        }
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let data: Vec<String> = events.iter().map(|e| e.data.to_string()).collect();
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        sqlx::query(
            "INSERT INTO workflow_run_events (run_id, seq, organization_id, event_type, data, created_at) \
             SELECT $1, e.seq, $2, e.event_type, e.data, $3 FROM UNNEST($4::bigint[], $5::text[], $6::text[]) \
               AS e(seq, event_type, data)",
        )
        .bind(run.id)
        .bind(org)
        .bind(at)
        .bind(&seqs)
        .bind(&types)
        .bind(&data)
        .execute(&mut *tx)
        .await?;
        if !advance.consumed.is_empty() {
            sqlx::query("DELETE FROM workflow_wakeups WHERE execution_id = ANY($1)")
                .bind(&advance.consumed)
                .execute(&mut *tx)
                .await?;
        }
        let hooks = webhook_events(&advance.run, &events);
        let mut deliveries = false;
        if !hooks.is_empty() {
            // Key-share locked: an endpoint deleted meanwhile must not fail the insert below.
            let endpoints: Vec<(Uuid, String)> = sqlx::query_as(
                "SELECT id, events::text FROM webhooks WHERE organization_id = $1 AND enabled FOR KEY SHARE",
            )
            .bind(org)
            .fetch_all(&mut *tx)
            .await?;
            for (event_type, payload) in &hooks {
                let event_id = Uuid::now_v7();
                for endpoint in subscribed(&endpoints, event_type) {
                    deliveries = true;
                    sqlx::query(
                        "INSERT INTO webhook_deliveries (id, organization_id, webhook_id, event_id, event_type, \
                           payload, status, attempts, next_attempt_at, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $8, $8)",
                    )
                    .bind(Uuid::now_v7())
                    .bind(org)
                    .bind(endpoint)
                    .bind(event_id)
                    .bind(event_type)
                    .bind(payload)
                    .bind(at.timestamp_millis())
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        let mut created = Vec::new();
        for (id, new) in advance.executions {
            let (record, stored) = crate::executions::postgres::create_on(&mut tx, org, id, new, at).await?;
            created.push((record.execution, stored));
        }
        tx.commit().await?;
        let mut run = advance.run;
        run.event_count += events.len() as i64;
        run.updated_at = at;
        Ok(Some(Advanced {
            run,
            events,
            executions: created,
            deliveries,
        }))
    }
}

mod sqlite {
    use super::*;
    use crate::sqlite_writer::{ts_text, uuid_blob, uuid_of};
    use rusqlite::Connection;

    pub(super) fn commit(
        conn: &Connection,
        org: &str,
        advance: Advance,
        events: Vec<ExecutionEvent>,
        at: Timestamp,
    ) -> StoreResult<Option<Advanced>> {
        let run = &advance.run;
        let steps = serde_json::to_string(&run.steps).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let moved = conn
            .prepare_cached(
                "UPDATE workflow_runs SET status = ?3, steps = ?4, attempt = ?5, error = ?6, wake_at = ?7, \
                   last_seq = last_seq + ?8, started_at = ?9, completed_at = ?10, updated_at = ?11 \
                 WHERE organization_id = ?1 AND id = ?2 AND last_seq = ?12",
            )?
            .execute(rusqlite::params![
                org,
                uuid_blob(&run.id),
                run.status.as_str(),
                steps,
                run.attempt,
                run.error,
                advance.wake_at,
                events.len() as i64,
                run.started_at.as_ref().map(ts_text),
                run.completed_at.as_ref().map(ts_text),
                ts_text(&at),
                run.event_count,
            ])?;
        if moved != 1 {
            return Ok(None);
        }
        let mut insert = conn.prepare_cached(
            "INSERT INTO workflow_run_events (run_id, seq, organization_id, event_type, data, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for e in &events {
            insert.execute(rusqlite::params![
                uuid_blob(&run.id),
                e.seq,
                org,
                e.event_type,
                e.data.to_string(),
                ts_text(&at)
            ])?;
        }
        let mut delete = conn.prepare_cached("DELETE FROM workflow_wakeups WHERE execution_id = ?1")?;
        for id in &advance.consumed {
            delete.execute([uuid_blob(id)])?;
        }
        let hooks = webhook_events(&advance.run, &events);
        let mut deliveries = false;
        if !hooks.is_empty() {
            let mut endpoints = Vec::new();
            let mut stmt =
                conn.prepare_cached("SELECT id, events FROM webhooks WHERE organization_id = ?1 AND enabled")?;
            let mut rows = stmt.query([org])?;
            while let Some(r) = rows.next()? {
                endpoints.push((uuid_of(r.get_ref(0)?)?, r.get::<_, String>(1)?));
            }
            let mut insert = conn.prepare_cached(
                "INSERT INTO webhook_deliveries (id, organization_id, webhook_id, event_id, event_type, payload, \
                   status, attempts, next_attempt_at, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, ?8, ?8)",
            )?;
            for (event_type, payload) in &hooks {
                let event_id = Uuid::now_v7();
                for endpoint in subscribed(&endpoints, event_type) {
                    deliveries = true;
                    insert.execute(rusqlite::params![
                        uuid_blob(&Uuid::now_v7()),
                        org,
                        uuid_blob(&endpoint),
                        uuid_blob(&event_id),
                        event_type,
                        payload,
                        at.timestamp_millis(),
                        ts_text(&at)
                    ])?;
                }
            }
        }
        let mut created = Vec::new();
        for (id, new) in advance.executions {
            let (record, stored) = crate::executions::sqlite::create(conn, org, id, new, at)?;
            created.push((record.execution, stored));
        }
        let mut run = advance.run;
        run.event_count += events.len() as i64;
        run.updated_at = at;
        Ok(Some(Advanced {
            run,
            events,
            executions: created,
            deliveries,
        }))
    }
}
