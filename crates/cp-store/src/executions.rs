//! Executions and their events: the state machine's storage, claims with leases, and the
//! reaper's sweeps.
//!
//! Every status change goes through `Executions::apply`: it reads the row, checks the
//! transition against [`ExecutionStatus::can_become`], writes the row and appends the `status`
//! event (plus `done` when a run ends) with the next sequence numbers, all atomically.
//! Callers get the new row and the stored events back, to notify followers and workers after
//! the commit.

use cp_types::environment::ExecutionEnvironment;
use cp_types::execution::{
    Execution, ExecutionEvent, ExecutionStatus, ExecutionType, FailureKind, NewEvent, SessionMessage, Usage,
};
use cp_types::ids::{ExecutionId, LeaseId, OrgId, WorkerId};
use cp_types::page::PageRequest;
use cp_types::{Page, Timestamp, now};
use serde_json::{Value, json};
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db, with_hot_db};
use crate::error::{StoreError, StoreResult, parse};
use crate::page::page_of;
use crate::worker_queues::now_ms;
use crate::workers::WorkerSeat;

macro_rules! exec_columns {
    () => {
        "id, organization_id, execution_type, entity_id, entity_name, worker_queue_id, prompt, system_prompt, \
         status, response, error_message, usage, execution_metadata, user_metadata, execution_environment, attempt, \
         max_attempts, worker_id, lease_id, lease_until, cancel_deadline, last_seq, created_at, started_at, \
         completed_at, updated_at, workflow_run_id, step_id"
    };
}

#[derive(sqlx::FromRow)]
pub(crate) struct ExecutionRow {
    id: Uuid,
    organization_id: String,
    execution_type: String,
    entity_id: Uuid,
    entity_name: Option<String>,
    worker_queue_id: Option<Uuid>,
    prompt: String,
    system_prompt: Option<String>,
    status: String,
    response: Option<String>,
    error_message: Option<String>,
    usage: Json<Usage>,
    execution_metadata: Json<Value>,
    user_metadata: Json<Value>,
    execution_environment: Json<ExecutionEnvironment>,
    attempt: i64,
    max_attempts: i64,
    worker_id: Option<Uuid>,
    lease_id: Option<Uuid>,
    lease_until: Option<i64>,
    cancel_deadline: Option<i64>,
    last_seq: i64,
    created_at: Timestamp,
    started_at: Option<Timestamp>,
    completed_at: Option<Timestamp>,
    updated_at: Timestamp,
    workflow_run_id: Option<Uuid>,
    step_id: Option<String>,
}

/// An execution with the bookkeeping the API does not show (lease, deadlines).
#[derive(Debug, Clone)]
pub struct ExecutionRecord {
    pub execution: Execution,
    pub lease_id: Option<LeaseId>,
    pub lease_until: Option<i64>,
    pub cancel_deadline: Option<i64>,
}

impl ExecutionRow {
    fn into_record(self) -> StoreResult<ExecutionRecord> {
        Ok(ExecutionRecord {
            lease_id: self.lease_id.map(LeaseId),
            lease_until: self.lease_until,
            cancel_deadline: self.cancel_deadline,
            execution: Execution {
                id: self.id,
                organization_id: self.organization_id,
                execution_type: parse(&self.execution_type)?,
                entity_id: self.entity_id,
                entity_name: self.entity_name,
                worker_queue_id: self.worker_queue_id,
                prompt: self.prompt,
                system_prompt: self.system_prompt,
                status: parse(&self.status)?,
                response: self.response,
                error_message: self.error_message,
                usage: self.usage.0,
                execution_metadata: self.execution_metadata.0,
                user_metadata: self.user_metadata.0,
                execution_environment: self.execution_environment.0,
                attempt: self.attempt,
                max_attempts: self.max_attempts,
                worker_id: self.worker_id,
                event_count: self.last_seq,
                workflow_run_id: self.workflow_run_id,
                step_id: self.step_id,
                created_at: self.created_at,
                started_at: self.started_at,
                completed_at: self.completed_at,
                updated_at: self.updated_at,
            },
        })
    }

    fn into_execution(self) -> StoreResult<Execution> {
        Ok(self.into_record()?.execution)
    }
}

/// A stored event; also read from a JSON array of its fields in this order.
#[derive(sqlx::FromRow, serde::Deserialize)]
struct EventRow {
    seq: i64,
    event_type: String,
    data: String,
    created_at: Timestamp,
}

impl EventRow {
    fn into_event(self) -> ExecutionEvent {
        ExecutionEvent {
            seq: self.seq,
            event_type: self.event_type,
            // Written by this module from a `Value`; a hand-edited row still reads as a string.
            data: serde_json::from_str(&self.data).unwrap_or(Value::String(self.data)),
            timestamp: self.created_at,
        }
    }
}

/// A stored `message` event as a turn of the conversation.
fn session_message(execution: Uuid, row: EventRow) -> SessionMessage {
    let e = row.into_event();
    let text = |k: &str| e.data.get(k).and_then(Value::as_str).map(str::to_owned);
    SessionMessage {
        role: text("role").unwrap_or_else(|| "assistant".into()),
        content: text("content").unwrap_or_default(),
        timestamp: text("timestamp").unwrap_or_else(|| e.timestamp.to_rfc3339()),
        message_id: text("message_id").unwrap_or_else(|| format!("{execution}_{}", e.seq)),
        tool_name: text("tool_name"),
        tool_input: e.data.get("tool_input").cloned(),
        tool_output: e.data.get("tool_output").cloned(),
    }
}

/// What a claim took: the change, and what the run context needs that only the database
/// knows at that moment (read in the claim's own transaction on SQLite).
#[derive(Debug, Clone)]
pub struct Claimed {
    pub changed: Changed,
    /// The organization's catalog version: equal versions mean an equal run context.
    pub catalog_version: i64,
    /// The conversation so far (the user's first message at least).
    pub history: Vec<SessionMessage>,
}

impl Claimed {
    /// The claim of `record`, which stored `events` (and webhook deliveries, if `deliveries`);
    /// `history` is the execution's stored `message` events.
    fn new(
        record: ExecutionRecord,
        events: Vec<ExecutionEvent>,
        deliveries: bool,
        catalog_version: Option<i64>,
        history: Vec<EventRow>,
    ) -> Claimed {
        let id = record.execution.id;
        Claimed {
            changed: Changed {
                record,
                from: ExecutionStatus::Queued,
                events,
                released_worker: None,
                deliveries,
            },
            catalog_version: catalog_version.unwrap_or(0),
            history: history.into_iter().map(|r| session_message(id, r)).collect(),
        }
    }
}

/// The conversation of one execution, oldest first.
macro_rules! session_sql {
    () => {
        "SELECT seq, event_type, data, created_at FROM execution_events \
         WHERE execution_id = $1 AND organization_id = $2 AND event_type = 'message' ORDER BY seq"
    };
}

/// A new execution, validated by the caller.
#[derive(Debug, Clone)]
pub struct NewExecution {
    pub execution_type: ExecutionType,
    pub entity_id: Uuid,
    pub entity_name: String,
    pub worker_queue_id: Uuid,
    pub prompt: String,
    pub system_prompt: Option<String>,
    pub user_metadata: Value,
    pub execution_metadata: Value,
    pub execution_environment: ExecutionEnvironment,
    pub created_by: String,
    /// The queue as read with the [`Subject`]. PostgreSQL stores against it, which is the
    /// read a transaction would have made (a queue deactivated in between is the same race
    /// either way; one deleted fails the foreign key); SQLite's writer reads it again.
    pub queue_seen: Option<QueueSeen>,
    /// A workflow step's execution: its run and step.
    pub workflow_run_id: Option<Uuid>,
    pub step_id: Option<String>,
    /// The agent's or team's model as the execute read it.
    pub model_id: Option<Uuid>,
}

/// Filters of `GET /executions`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecutionFilter {
    pub status: Option<ExecutionStatus>,
    pub execution_type: Option<ExecutionType>,
    pub entity_id: Option<Uuid>,
    pub worker_queue_id: Option<Uuid>,
    pub since: Option<Timestamp>,
}

/// Whether a change of `e` from `from` ends a workflow step's execution (or stops it for
/// input): its run must advance.
fn wakes_workflow(e: &Execution, from: ExecutionStatus) -> bool {
    e.workflow_run_id.is_some()
        && from != e.status
        && (e.status.is_terminal() || e.status == ExecutionStatus::WaitingForInput)
}

impl Changed {
    /// The change ended a workflow step's execution: its run's scheduler has work.
    pub fn wakes_workflow(&self) -> bool {
        wakes_workflow(&self.record.execution, self.from)
    }
}

/// A status change and what it wrote.
#[derive(Debug, Clone)]
pub struct Changed {
    pub record: ExecutionRecord,
    /// The status before the change.
    pub from: ExecutionStatus,
    /// The events stored by the change, in `seq` order.
    pub events: Vec<ExecutionEvent>,
    /// The worker that held the run before the change, if the change took it away.
    pub released_worker: Option<WorkerId>,
    /// Webhook deliveries were written with the change: the sender has work.
    pub deliveries: bool,
}

/// What a worker reports at the end of its run.
#[derive(Debug, Clone)]
pub enum Outcome {
    Completed {
        response: Option<String>,
        usage: Option<Usage>,
        waiting_for_input: bool,
    },
    Failed {
        error_message: Option<String>,
        retryable: bool,
        usage: Option<Usage>,
        /// The failure needs an operator: see [`FailureKind`].
        error_kind: Option<FailureKind>,
    },
}

/// What a client asks of an execution.
#[derive(Debug, Clone)]
pub enum Control {
    /// A running run gets 2 heartbeat intervals to confirm before it ends `cancelled` anyway.
    Cancel,
    Pause,
    Resume,
    Message {
        text: String,
    },
}

/// The agent or team of an execution, its model and where it runs: what a policy decision
/// about it needs besides the request.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Subject {
    pub entity_name: String,
    /// The model's value (`anthropic/claude-sonnet-4-5`) and id.
    pub model: Option<String>,
    pub model_id: Option<Uuid>,
    pub environment_id: Option<Uuid>,
    pub environment_name: Option<String>,
    /// The organization's `policy_enforcement` and catalog version, read in the same
    /// statement so the policy check before an execute costs no read of its own.
    pub policy_enforcement: String,
    pub catalog_version: Option<i64>,
    /// The queue as read in the same statement (`None` for an unknown queue).
    pub queue_name: Option<String>,
    pub queue_status: Option<String>,
    pub queue_max_attempts: Option<i64>,
}

impl Subject {
    /// The organization's enforcement mode and catalog version.
    pub fn policy_state(&self) -> StoreResult<(cp_types::org::PolicyEnforcement, i64)> {
        Ok((parse(&self.policy_enforcement)?, self.catalog_version.unwrap_or(0)))
    }

    /// The queue as [`NewExecution::queue_seen`] wants it.
    pub fn queue_seen(&self) -> Option<QueueSeen> {
        Some((
            self.queue_name.clone()?,
            self.queue_status.clone()?,
            self.queue_max_attempts?,
        ))
    }
}

/// A worker queue as an execute read it: `name, status, max_attempts`.
pub type QueueSeen = (String, String, i64);

macro_rules! subject_sql {
    ($table:literal) => {
        concat!(
            "SELECT x.name AS entity_name, m.value AS model, m.id AS model_id, q.environment_id, e.name AS environment_name, \
             o.policy_enforcement, v.version AS catalog_version, q.name AS queue_name, q.status AS queue_status, \
             q.max_attempts AS queue_max_attempts FROM ",
            $table,
            " x JOIN organizations o ON o.id = x.organization_id \
             LEFT JOIN catalog_versions v ON v.organization_id = x.organization_id \
             LEFT JOIN models m ON m.id = x.model_id \
             LEFT JOIN worker_queues q ON q.organization_id = x.organization_id AND q.id = $3 \
             LEFT JOIN environments e ON e.id = q.environment_id WHERE x.organization_id = $1 AND x.id = $2"
        )
    };
}

impl Store {
    /// The executions of one organization.
    pub fn executions<'a>(&'a self, org: &'a str) -> Executions<'a> {
        Executions {
            db: &self.db,
            org,
            second_ms: self.second_ms,
        }
    }
}

/// The executions of one organization.
pub struct Executions<'a> {
    db: &'a Db,
    org: &'a str,
    /// See `Store::with_second_ms`.
    second_ms: i64,
}

/// The list's filters; `entity` spells the entity test plainly, so the organization-entity
/// index serves an agent's or team's runs (a `$4 IS NULL OR` test hides it from the planner).
macro_rules! exec_filter {
    () => {
        exec_filter!("($4 IS NULL OR entity_id = $4)")
    };
    (entity) => {
        exec_filter!("entity_id = $4")
    };
    ($entity:literal) => {
        concat!(
            " WHERE organization_id = $1 AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR execution_type = $3) AND ",
            $entity,
            " AND ($5 IS NULL OR worker_queue_id = $5) AND ($6 IS NULL OR created_at >= $6)"
        )
    };
}

fn stale_lease() -> StoreError {
    StoreError::Conflict(
        "the lease is no longer valid: the execution moved on (cancelled, paused, re-queued or ended)".into(),
    )
}

/// The working copy [`apply`] hands to a change.
struct Draft {
    row: ExecutionRecord,
    from: ExecutionStatus,
    events: Vec<(String, Value)>,
    released_worker: Option<WorkerId>,
    /// Set when the run ends `failed` for a reason an operator must see.
    error_kind: Option<FailureKind>,
    at: Timestamp,
}

impl Draft {
    /// Lets `change` edit `row`, then stamps it and numbers its events; returns the draft and
    /// the seq of its first new event. Both backends' `apply` go through here.
    fn edit(row: ExecutionRecord, change: impl FnOnce(&mut Draft) -> StoreResult<()>) -> StoreResult<(Draft, i64)> {
        let mut draft = Draft {
            from: row.execution.status,
            row,
            events: Vec::new(),
            released_worker: None,
            error_kind: None,
            at: now(),
        };
        change(&mut draft)?;
        let e = &mut draft.row.execution;
        e.updated_at = draft.at;
        let first = e.event_count + 1;
        e.event_count += draft.events.len() as i64;
        Ok((draft, first))
    }

    /// Moves to `to` if the state machine allows it (409 otherwise) and records the `status`
    /// event, and the terminal `done` event when the run ends.
    fn become_(&mut self, to: ExecutionStatus, reason: Option<&str>) -> StoreResult<()> {
        let e = &mut self.row.execution;
        if !e.status.can_become(to) {
            return Err(StoreError::Conflict(format!(
                "an execution that is {} cannot become {}",
                e.status, to
            )));
        }
        e.status = to;
        let mut data = json!({"status": to.as_str(), "attempt": e.attempt});
        if let Some(reason) = reason {
            data["reason"] = json!(reason);
        }
        self.events.push(("status".into(), data));
        if to.is_held() && e.started_at.is_none() {
            e.started_at = Some(self.at);
        }
        if !to.is_held() && e.worker_id.is_some() {
            // An ended run keeps the worker of its last attempt (who ran it); one put back
            // in the queue belongs to no worker.
            self.released_worker = if to.is_terminal() {
                e.worker_id
            } else {
                e.worker_id.take()
            }
            .map(WorkerId);
            self.row.lease_id = None;
            self.row.lease_until = None;
        }
        if to != ExecutionStatus::Cancelling {
            self.row.cancel_deadline = None;
        }
        if to.is_terminal() {
            e.completed_at = Some(self.at);
            let error_kind = self.error_kind.filter(|_| to == ExecutionStatus::Failed);
            self.events.push((
                "done".into(),
                json!({"status": to.as_str(), "response": e.response, "error_message": e.error_message,
                       "usage": e.usage, "attempt": e.attempt, "worker_id": e.worker_id, "error_kind": error_kind}),
            ));
        } else {
            e.completed_at = None;
        }
        Ok(())
    }

    /// A workflow step's execution that just ended (or stopped for input): its run must
    /// advance, so the change also writes the run's outbox row.
    fn wakes_workflow(&self) -> bool {
        wakes_workflow(&self.row.execution, self.from)
    }

    /// What the change did, once its `events` (and webhook deliveries, if `deliveries`)
    /// are stored.
    fn into_changed(self, events: Vec<ExecutionEvent>, deliveries: bool) -> Changed {
        Changed {
            record: self.row,
            from: self.from,
            events,
            released_worker: self.released_worker,
            deliveries,
        }
    }

    fn add_usage(&mut self, usage: Option<&Usage>) {
        if let Some(u) = usage {
            self.row.execution.usage.add(u);
        }
    }
}

fn user_message(execution: Uuid, text: &str, at: Timestamp) -> (String, Value) {
    (
        "message".into(),
        json!({"role": "user", "content": text, "timestamp": at, "message_id": format!("{execution}_user_{}", at.timestamp_micros())}),
    )
}

/// The webhook event of a change from `from` into `status`, if it has one
/// (`execution.started` is the claim's).
fn webhook_event(from: ExecutionStatus, status: ExecutionStatus) -> Option<&'static str> {
    if from == status {
        return None;
    }
    match status {
        ExecutionStatus::Completed => Some("execution.completed"),
        ExecutionStatus::Failed => Some("execution.failed"),
        ExecutionStatus::Cancelled => Some("execution.cancelled"),
        _ => None,
    }
}

/// Longest response excerpt a webhook carries.
const WEBHOOK_RESPONSE_CHARS: usize = 1000;

/// The data of an execution webhook, made from the event that caused it (the claim's `status`
/// event for `execution.started`, the `done` event for the end of a run) and the fields of
/// the execution no change rewrites; so it is the same whenever it is made. Never the
/// execution environment (it may carry values given at execute).
pub(crate) fn webhook_data(e: &Execution, event: &ExecutionEvent) -> Value {
    let field = |k: &str| event.data.get(k).cloned().unwrap_or(Value::Null);
    let excerpt = event.data.get("response").and_then(Value::as_str).map(|r| {
        match r.char_indices().nth(WEBHOOK_RESPONSE_CHARS) {
            Some((cut, _)) => format!("{}…", &r[..cut]),
            None => r.to_owned(),
        }
    });
    json!({"execution": {
        "id": e.id,
        "execution_type": e.execution_type,
        "entity_id": e.entity_id,
        "entity_name": e.entity_name,
        "status": field("status"),
        "worker_queue_id": e.worker_queue_id,
        "worker_id": field("worker_id"),
        "attempt": field("attempt"),
        "response": excerpt,
        "error_message": field("error_message"),
        "usage": field("usage"),
        "created_at": e.created_at,
        "started_at": e.started_at,
        "completed_at": (event.event_type == "done").then_some(event.timestamp),
    }})
}

/// The webhook events a change emits (none, its `execution.*` one, and `error` too when the
/// run failed for a reason an operator must see) and the `seq` of the stored event they are
/// made from (the last one: `done`).
fn change_webhooks(draft: &Draft, events: &[ExecutionEvent]) -> (Vec<&'static str>, i64) {
    let seq = events.last().map_or(0, |e| e.seq);
    let Some(event_type) = webhook_event(draft.from, draft.row.execution.status) else {
        return (Vec::new(), seq);
    };
    let mut types = vec![event_type];
    if draft.error_kind.is_some() && draft.row.execution.status == ExecutionStatus::Failed {
        types.push("error");
    }
    (types, seq)
}

/// The statements both backends share (the SQLite writer's jobs in [`sqlite`], PostgreSQL's
/// in [`postgres`]): a new execution, `queued`, on its first attempt.
macro_rules! create_sql {
    () => {
        concat!(
            "INSERT INTO executions (id, organization_id, execution_type, entity_id, entity_name, worker_queue_id, \
               prompt, system_prompt, status, execution_metadata, user_metadata, execution_environment, attempt, \
               max_attempts, last_seq, created_by, created_at, updated_at, workflow_run_id, step_id, model_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9, $10, $11, 1, $12, $13, $14, $15, $15, $16, $17, $18) \
             RETURNING ",
            exec_columns!()
        )
    };
}

/// The claim: the oldest queued execution of queue `$queue` becomes `running` for worker `$3`
/// under lease `$4` until `$lease_until`, at `$6`; `$2` is the organization. `$lock` is
/// PostgreSQL's `FOR UPDATE SKIP LOCKED` (SQLite has one writer anyway).
macro_rules! claim_sql {
    ($lock:literal, $queue:expr, $lease_until:literal) => {
        concat!(
            "UPDATE executions SET status = 'running', worker_id = $3, lease_id = $4, lease_until = ",
            $lease_until,
            ", started_at = COALESCE(started_at, $6), updated_at = $6, last_seq = last_seq + 1 \
             WHERE id = (SELECT id FROM executions WHERE worker_queue_id = ",
            $queue,
            " AND organization_id = $2 AND status = 'queued' ORDER BY id LIMIT 1 ",
            $lock,
            ") AND status = 'queued' RETURNING ",
            exec_columns!()
        )
    };
}

/// Numbers a batch of worker events under the current lease and extends the lease to 3
/// heartbeat intervals, once less than 2 are left: most batches leave it as it is, which
/// keeps their update off the indexes on PostgreSQL (see migration 0012).
macro_rules! append_sql {
    () => {
        "UPDATE executions SET last_seq = last_seq + $4, lease_until = CASE \
           WHEN lease_until >= $5 + 2 * $6 * COALESCE( \
             (SELECT q.heartbeat_interval FROM worker_queues q WHERE q.id = executions.worker_queue_id), 30) \
           THEN lease_until \
           ELSE $5 + 3 * $6 * COALESCE( \
             (SELECT q.heartbeat_interval FROM worker_queues q WHERE q.id = executions.worker_queue_id), 30) END \
         WHERE organization_id = $1 AND id = $2 AND lease_id = $3 AND status IN ('running', 'cancelling') \
         RETURNING last_seq, lease_until"
    };
}

/// Writes back what a change did to the row.
macro_rules! update_sql {
    () => {
        "UPDATE executions SET status = $3, response = $4, error_message = $5, usage = $6, attempt = $7, \
           worker_id = $8, lease_id = $9, lease_until = $10, cancel_deadline = $11, last_seq = $12, \
           started_at = $13, completed_at = $14, updated_at = $15 \
         WHERE organization_id = $1 AND id = $2"
    };
}

pub(crate) mod postgres;
pub(crate) mod sqlite;

/// An event to store, as `(type, data)`.
type NewTypedEvent = (String, Value);

/// What a new execution on a queue (`name, status, max_attempts`, as read) stores: its
/// metadata (with the queue's name), its attempts and its first events (`status`, then the
/// user's `message`). `NotFound` for an unknown queue, a conflict for one that is not active.
fn creation(
    id: Uuid,
    new: &NewExecution,
    queue: Option<QueueSeen>,
    at: Timestamp,
) -> StoreResult<(Value, i64, Vec<NewTypedEvent>)> {
    let (queue_name, status, max_attempts) = queue.ok_or(StoreError::NotFound)?;
    if status != "active" {
        return Err(StoreError::Conflict(format!(
            "worker queue '{queue_name}' is {status}, not active"
        )));
    }
    let mut metadata = new.execution_metadata.clone();
    if let Value::Object(m) = &mut metadata {
        m.insert("worker_queue_name".into(), json!(queue_name));
    }
    let events = vec![
        ("status".to_string(), json!({"status": "queued", "attempt": 1})),
        user_message(id, &new.prompt, at),
    ];
    Ok((metadata, max_attempts, events))
}

/// The `status` event a claim stores, for the claimed run's `attempt`.
fn claim_event(attempt: i64, worker: Uuid) -> NewTypedEvent {
    (
        "status".to_string(),
        json!({"status": "running", "attempt": attempt, "worker_id": worker}),
    )
}

/// `(type, data)` events numbered from `first` and stamped `at`, as they are stored.
pub(crate) fn stamp(first: i64, at: Timestamp, events: Vec<NewTypedEvent>) -> Vec<ExecutionEvent> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, (event_type, data))| ExecutionEvent {
            seq: first + i as i64,
            event_type,
            data,
            timestamp: at,
        })
        .collect()
}

/// A worker's batch as stored, numbered up to `last` (the execution's new `last_seq`).
fn numbered(events: Vec<NewEvent>, last: i64, at: Timestamp) -> Vec<ExecutionEvent> {
    let first = last - events.len() as i64 + 1;
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| ExecutionEvent {
            seq: first + i as i64,
            event_type: e.event_type,
            data: e.data,
            timestamp: e.timestamp.unwrap_or(at),
        })
        .collect()
}

impl Executions<'_> {
    /// Lets `change` edit the row and writes it back with the change's events: the one place
    /// a status changes. `change` may run more than once (PostgreSQL re-reads the row when it
    /// moved on between the read and the write).
    async fn apply<F>(&self, id: ExecutionId, change: F) -> StoreResult<Changed>
    where
        F: Fn(&mut Draft) -> StoreResult<()> + Send + Sync + 'static,
    {
        let id = id.uuid();
        match self.db {
            Db::Sqlite(_, writer) => {
                let org = self.org.to_owned();
                writer.run(move |conn| sqlite::apply(conn, &org, id, change)).await
            }
            Db::Postgres(pool, pg) => postgres::apply(pool, pg, self.org, id, change).await,
        }
    }
}

impl Executions<'_> {
    /// Stores a `queued` execution on an active queue of the organization with its first
    /// events (`status`, then the user's `message`). `NotFound` for an unknown queue, a
    /// conflict for one that is not active.
    pub async fn create(&self, id: Uuid, new: NewExecution) -> StoreResult<(Execution, Vec<ExecutionEvent>)> {
        let at = now();
        let (row, stored) = match self.db {
            Db::Sqlite(_, writer) => {
                let org = self.org.to_owned();
                writer.run(move |conn| sqlite::create(conn, &org, id, new, at)).await?
            }
            Db::Postgres(_, pg) => postgres::create(pg, self.org, id, new, at).await?,
        };
        Ok((row.execution, stored))
    }

    /// What an execution of `kind` on `queue` would run, as policies see it: the agent's or
    /// team's name and model (its value), and the queue's environment (none for an unknown
    /// queue, which `create` refuses). `NotFound` when the organization has no such entity.
    pub async fn subject(&self, kind: ExecutionType, id: Uuid, queue: Option<Uuid>) -> StoreResult<Subject> {
        let sql = match kind {
            ExecutionType::Team => subject_sql!("teams"),
            _ => subject_sql!("agents"),
        };
        let subject: Option<Subject> = with_hot_db!(self.db, conn =>
            sqlx::query_as(sql).bind(self.org).bind(id).bind(queue).fetch_optional(conn).await)?;
        subject.ok_or(StoreError::NotFound)
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<Execution> {
        self.record(id).await.map(|r| r.execution)
    }

    /// The key that started an execution (for the access logs of the values its run reads).
    pub async fn started_by(&self, id: Uuid) -> StoreResult<Option<Uuid>> {
        let created_by: Option<String> = with_db!(self.db, pool =>
            sqlx::query_scalar("SELECT created_by FROM executions WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        Ok(created_by.and_then(|c| Uuid::parse_str(&c).ok()))
    }

    /// The execution with its lease bookkeeping.
    pub async fn record(&self, id: Uuid) -> StoreResult<ExecutionRecord> {
        let row: ExecutionRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", exec_columns!(), " FROM executions WHERE organization_id = $1 AND id = $2"))
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_record()
    }

    /// Executions, newest first.
    pub async fn list(&self, filter: ExecutionFilter, page: PageRequest) -> StoreResult<Page<Execution>> {
        let status = filter.status.map(|s| s.as_str());
        let kind = filter.execution_type.map(|s| s.as_str());
        let (rows_sql, count_sql) = match filter.entity_id {
            Some(_) => (
                concat!(
                    "SELECT ",
                    exec_columns!(),
                    " FROM executions",
                    exec_filter!(entity),
                    " ORDER BY id DESC LIMIT $7 OFFSET $8"
                ),
                concat!("SELECT COUNT(*) FROM executions", exec_filter!(entity)),
            ),
            None => (
                concat!(
                    "SELECT ",
                    exec_columns!(),
                    " FROM executions",
                    exec_filter!(),
                    " ORDER BY id DESC LIMIT $7 OFFSET $8"
                ),
                concat!("SELECT COUNT(*) FROM executions", exec_filter!()),
            ),
        };
        let rows: Vec<ExecutionRow> = with_db!(self.db, pool =>
            sqlx::query_as(rows_sql)
                .bind(self.org).bind(status).bind(kind).bind(filter.entity_id).bind(filter.worker_queue_id)
                .bind(filter.since).bind(page.limit).bind(page.offset)
                .fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar(count_sql)
                    .bind(self.org).bind(status).bind(kind).bind(filter.entity_id).bind(filter.worker_queue_id)
                    .bind(filter.since).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, ExecutionRow::into_execution).await
    }

    /// Stored events with `seq > after`, oldest first, at most `limit`.
    pub async fn events(&self, id: Uuid, after: i64, limit: i64) -> StoreResult<Vec<ExecutionEvent>> {
        let rows: Vec<EventRow> = with_db!(self.db, pool =>
            sqlx::query_as(
                "SELECT seq, event_type, data, created_at FROM execution_events \
                 WHERE execution_id = $1 AND organization_id = $2 AND seq > $3 ORDER BY seq LIMIT $4")
                .bind(id).bind(self.org).bind(after).bind(limit).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(EventRow::into_event).collect())
    }

    /// The conversation: every `message` event, oldest first.
    pub async fn session(&self, id: Uuid) -> StoreResult<Vec<SessionMessage>> {
        let rows: Vec<EventRow> = with_db!(self.db, pool =>
            sqlx::query_as(session_sql!()).bind(id).bind(self.org).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(|r| session_message(id, r)).collect())
    }

    /// A client's cancel, pause, resume or message.
    pub async fn control(&self, id: ExecutionId, control: Control) -> StoreResult<Changed> {
        let grace_ms = 2 * self.second_ms * self.heartbeat_interval(id.uuid()).await?;
        self.apply(id, move |d: &mut Draft| -> StoreResult<()> {
            use ExecutionStatus::*;
            match &control {
                Control::Cancel => match d.row.execution.status {
                    // Already on its way out: cancelling twice changes nothing.
                    Cancelling => {}
                    Running => {
                        d.row.cancel_deadline = Some(now_ms() + grace_ms);
                        d.become_(Cancelling, Some("cancelled by user"))?;
                    }
                    _ => {
                        d.row.execution.error_message = Some("Cancelled by user".into());
                        d.become_(Cancelled, Some("cancelled by user"))?;
                    }
                },
                Control::Pause => d.become_(Paused, Some("paused by user"))?,
                Control::Resume => d.become_(Queued, Some("resumed by user"))?,
                Control::Message { text } => {
                    let status = d.row.execution.status;
                    if !matches!(status, Completed | WaitingForInput) {
                        return Err(StoreError::Conflict(format!(
                            "a message continues a completed or waiting_for_input execution; this one is {status}"
                        )));
                    }
                    d.events.push(user_message(d.row.execution.id, text, d.at));
                    d.row.execution.response = None;
                    d.row.execution.error_message = None;
                    d.become_(Queued, Some("new message"))?;
                }
            }
            Ok(())
        })
        .await
    }

    /// The heartbeat interval (seconds) of the execution's queue; the default for a run whose
    /// queue was deleted.
    async fn heartbeat_interval(&self, id: Uuid) -> StoreResult<i64> {
        let interval: Option<Option<i64>> = with_db!(self.db, pool =>
            sqlx::query_scalar(
                "SELECT q.heartbeat_interval FROM executions e LEFT JOIN worker_queues q ON q.id = e.worker_queue_id \
                 WHERE e.organization_id = $1 AND e.id = $2")
                .bind(self.org).bind(id).fetch_optional(pool).await)?;
        Ok(interval
            .ok_or(StoreError::NotFound)?
            .unwrap_or(cp_types::worker_queue::DEFAULT_HEARTBEAT_INTERVAL))
    }

    /// A worker's poll: reads its seat and, when the seat lets a poll by `key` claim (none for
    /// an admin; see `WorkerSeat::may_claim`), takes the oldest queued execution of its queue
    /// with a lease of 3 heartbeat intervals; one statement on PostgreSQL, one writer job on
    /// SQLite. Concurrent claimers never get the same row (`SKIP LOCKED` on PostgreSQL, the
    /// single writer on SQLite). `NotFound` for another organization's worker.
    pub async fn claim(&self, worker: WorkerId, key: Option<Uuid>) -> StoreResult<(WorkerSeat, Option<Claimed>)> {
        let worker = worker.uuid();
        let lease_id = Uuid::now_v7();
        let at = now();
        let second_ms = self.second_ms;
        match self.db {
            // A claim that finds nothing costs the writer thread one empty statement: cheaper
            // than a read on sqlx's threads first.
            Db::Sqlite(_, writer) => {
                let org = self.org.to_owned();
                writer
                    .run(move |conn| sqlite::claim(conn, &org, worker, key, lease_id, at, second_ms))
                    .await
            }
            Db::Postgres(_, pg) => postgres::claim(pg, self.org, worker, key, lease_id, at, second_ms).await,
        }
    }

    /// Stores a worker's events under its lease, numbered after the last stored one; also
    /// keeps the lease at least 2 heartbeat intervals ahead (posting events proves the worker
    /// alive).
    pub async fn append(
        &self,
        id: ExecutionId,
        lease_id: LeaseId,
        events: Vec<NewEvent>,
    ) -> StoreResult<Vec<ExecutionEvent>> {
        let (id, lease_id) = (id.uuid(), lease_id.uuid());
        let at = now();
        let stored = match self.db {
            Db::Sqlite(_, writer) => {
                let (org, second_ms) = (self.org.to_owned(), self.second_ms);
                writer
                    .run(move |conn| sqlite::append(conn, &org, id, lease_id, events, at, second_ms))
                    .await?
            }
            Db::Postgres(_, pg) => postgres::append(pg, self.org, id, lease_id, events, at, self.second_ms).await?,
        };
        match stored {
            Some(s) => Ok(s),
            None => {
                self.get(id).await?;
                Err(stale_lease())
            }
        }
    }

    /// A worker's end of run. Needs the current lease. A retryable failure goes back to the
    /// queue while attempts remain; a run being cancelled ends `cancelled` unless it completed.
    pub async fn finish(&self, id: ExecutionId, lease_id: LeaseId, outcome: Outcome) -> StoreResult<Changed> {
        self.apply(id, move |d: &mut Draft| -> StoreResult<()> {
            use ExecutionStatus::*;
            if d.row.lease_id != Some(lease_id) || !d.row.execution.status.is_held() {
                return Err(stale_lease());
            }
            let cancelling = d.row.execution.status == Cancelling;
            match &outcome {
                Outcome::Completed {
                    response,
                    usage,
                    waiting_for_input,
                } => {
                    d.add_usage(usage.as_ref());
                    d.row.execution.response = response.clone();
                    d.row.execution.error_message = None;
                    let to = if *waiting_for_input && !cancelling {
                        WaitingForInput
                    } else {
                        Completed
                    };
                    d.become_(to, None)?;
                }
                Outcome::Failed {
                    error_message,
                    retryable,
                    usage,
                    error_kind,
                } => {
                    d.add_usage(usage.as_ref());
                    if cancelling {
                        d.row.execution.error_message = Some("Cancelled by user".into());
                        d.become_(Cancelled, Some("cancelled by user"))?;
                    } else if *retryable && d.row.execution.attempt < d.row.execution.max_attempts {
                        d.row.execution.attempt += 1;
                        d.become_(Queued, error_message.as_deref().or(Some("retryable failure")))?;
                    } else {
                        d.row.execution.error_message = Some(error_message.clone().unwrap_or_else(|| "failed".into()));
                        d.error_kind = *error_kind;
                        d.become_(Failed, error_message.as_deref())?;
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// Gives a run back to its queue because its worker is gone (`attempt + 1`), or fails it
    /// when its attempts are used up; a run being cancelled ends `cancelled`. `worker` guards
    /// against a run that has meanwhile been claimed by someone else.
    pub async fn release(&self, id: ExecutionId, worker: WorkerId, reason: &str) -> StoreResult<Changed> {
        let reason = reason.to_owned();
        self.apply(id, move |d: &mut Draft| -> StoreResult<()> {
            if d.row.execution.worker_id != Some(worker.uuid()) || !d.row.execution.status.is_held() {
                return Err(stale_lease());
            }
            release_draft(d, &reason)
        })
        .await
    }

    /// Ends a run whose cancel grace period passed, or re-queues one whose lease expired:
    /// both re-checked under the row lock, so a heartbeat that arrived meanwhile wins.
    pub async fn expire(&self, id: ExecutionId, now_ms: i64) -> StoreResult<Changed> {
        self.apply(id, move |d: &mut Draft| -> StoreResult<()> {
            use ExecutionStatus::*;
            let e = &d.row.execution;
            if e.status == Cancelling && d.row.cancel_deadline.is_some_and(|t| t <= now_ms) {
                d.row.execution.error_message = Some("Cancelled by user (the worker did not confirm in time)".into());
                return d.become_(Cancelled, Some("cancel grace period passed"));
            }
            if e.status.is_held() && d.row.lease_until.is_some_and(|t| t <= now_ms) {
                return release_draft(d, "worker lost: no heartbeat within the lease");
            }
            Err(StoreError::Conflict("nothing to expire".into()))
        })
        .await
    }
}

fn release_draft(d: &mut Draft, reason: &str) -> StoreResult<()> {
    use ExecutionStatus::*;
    let e = &mut d.row.execution;
    if e.status == Cancelling {
        e.error_message = Some("Cancelled by user".into());
        return d.become_(Cancelled, Some(reason));
    }
    if e.attempt < e.max_attempts {
        e.attempt += 1;
        d.become_(Queued, Some(reason))
    } else {
        e.error_message = Some(format!("{reason} (after {} attempts)", e.attempt));
        d.error_kind = Some(FailureKind::WorkerLost);
        d.become_(Failed, Some(reason))
    }
}

/// Runs needing the reaper: `(organization, execution)` pairs whose lease or cancel grace
/// period ran out before `now_ms`.
impl Store {
    pub async fn expired_executions(&self, now_ms: i64, limit: i64) -> StoreResult<Vec<(OrgId, ExecutionId)>> {
        let due: Vec<(String, Uuid)> = with_db!(&self.db, pool =>
            sqlx::query_as(
                "SELECT organization_id, id FROM executions \
                 WHERE (lease_until IS NOT NULL AND lease_until <= $1 AND status IN ('running', 'cancelling')) \
                    OR (cancel_deadline IS NOT NULL AND cancel_deadline <= $1 AND status = 'cancelling') \
                 ORDER BY id LIMIT $2")
                .bind(now_ms).bind(limit).fetch_all(pool).await)?;
        Ok(due.into_iter().map(|(org, id)| (OrgId(org), ExecutionId(id))).collect())
    }
}
