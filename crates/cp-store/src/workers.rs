//! Workers: registrations on a queue, heartbeats that keep them and their leases alive, and
//! the live view. A worker silent past `alive_until` (3 heartbeat intervals) is offline.

use std::collections::HashSet;

use cp_types::ids::{ExecutionId, QueueId, WorkerId};
use cp_types::page::PageRequest;
use cp_types::worker::{Heartbeat, HeartbeatAck, RegisterWorker, Worker, WorkerCapabilities, WorkerStatus};
use cp_types::{Page, Timestamp, now};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db, write_tx};
use crate::error::{StoreError, StoreResult, parse};
use crate::page::page_of;
use crate::webhooks::enqueue_webhooks;
use crate::worker_queues::now_ms;

macro_rules! worker_columns {
    () => {
        "id, organization_id, worker_queue_id, hostname, runner_name, version, capabilities, system_info, status, \
         current_executions, tasks_processed, drain, registered_at, last_heartbeat_at, alive_until"
    };
}

#[derive(sqlx::FromRow)]
struct WorkerRow {
    id: Uuid,
    organization_id: String,
    worker_queue_id: Uuid,
    hostname: String,
    runner_name: String,
    version: Option<String>,
    capabilities: Json<WorkerCapabilities>,
    system_info: Json<Value>,
    status: String,
    current_executions: Json<Vec<Uuid>>,
    tasks_processed: i64,
    drain: bool,
    registered_at: Timestamp,
    last_heartbeat_at: Timestamp,
    alive_until: i64,
}

impl WorkerRow {
    fn into_worker(self, now_ms: i64) -> StoreResult<Worker> {
        let mut status: WorkerStatus = parse(&self.status)?;
        // Between the deadline and the reaper's next sweep the row still says online.
        if self.alive_until <= now_ms && status != WorkerStatus::Disconnected {
            status = WorkerStatus::Offline;
        }
        let live = !matches!(status, WorkerStatus::Offline | WorkerStatus::Disconnected);
        Ok(Worker {
            id: self.id,
            organization_id: self.organization_id,
            worker_queue_id: self.worker_queue_id,
            runner_name: self.runner_name,
            hostname: self.hostname,
            version: self.version,
            status,
            capabilities: self.capabilities.0,
            system_info: self.system_info.0,
            current_executions: if live { self.current_executions.0 } else { Vec::new() },
            tasks_processed: self.tasks_processed,
            drain: self.drain,
            registered_at: self.registered_at,
            last_heartbeat_at: self.last_heartbeat_at,
        })
    }
}

/// The queue a worker registered on, as the registration answer needs it.
#[derive(Debug, Clone)]
pub struct Registered {
    pub worker: Worker,
    pub queue_name: String,
    pub environment_name: String,
    pub heartbeat_interval: i64,
    /// The interval as it is enforced (see `Store::with_second_ms`).
    pub heartbeat_ms: i64,
}

/// A worker's queue and timing, for its polls and claims.
#[derive(Debug, Clone, Copy)]
pub struct WorkerSeat {
    pub worker_queue_id: QueueId,
    /// The key that registered the worker.
    pub key_id: Option<Uuid>,
    /// Time between heartbeats.
    pub heartbeat_ms: i64,
    pub drain: bool,
    pub online: bool,
    /// One of its runs is being cancelled (its poll answers that first).
    pub cancelling: bool,
}

impl WorkerSeat {
    /// A run's lease: 3 heartbeat intervals.
    pub fn lease_ms(&self) -> i64 {
        3 * self.heartbeat_ms
    }

    /// Whether a poll by `key` (none for an admin) may claim a run: the worker is the key's,
    /// alive, not draining, and has no run being cancelled (its poll answers that first).
    /// PostgreSQL's claim statement says the same in SQL (`seat_may_claim_sql!`).
    pub fn may_claim(&self, key: Option<Uuid>) -> bool {
        self.online && !self.drain && !self.cancelling && self.answers_to(key)
    }

    /// Whether the worker is `key`'s: the key that registered it, or any for an admin (none).
    pub fn answers_to(&self, key: Option<Uuid>) -> bool {
        key.is_none_or(|k| self.key_id == Some(k))
    }
}

/// A worker's seat, `$org` and `$worker` its parameters. Read alone, or as the first part of
/// PostgreSQL's claim.
macro_rules! seat_sql {
    ($org:literal, $worker:literal) => {
        concat!(
            "SELECT w.worker_queue_id AS seat_queue_id, w.key_id, q.heartbeat_interval, w.drain, \
               w.status AS worker_status, w.alive_until, \
               EXISTS (SELECT 1 FROM executions e WHERE e.worker_id = w.id AND e.status = 'cancelling') AS cancelling \
             FROM workers w JOIN worker_queues q ON q.id = w.worker_queue_id \
             WHERE w.organization_id = ",
            $org,
            " AND w.id = ",
            $worker
        )
    };
}
pub(crate) use seat_sql;

#[derive(sqlx::FromRow)]
pub(crate) struct SeatRow {
    pub(crate) seat_queue_id: Uuid,
    pub(crate) key_id: Option<Uuid>,
    pub(crate) heartbeat_interval: i64,
    pub(crate) drain: bool,
    pub(crate) worker_status: String,
    pub(crate) alive_until: i64,
    pub(crate) cancelling: bool,
}

impl SeatRow {
    /// The seat as of `now_ms`, its interval in units of `second_ms`.
    pub(crate) fn into_seat(self, second_ms: i64, now_ms: i64) -> WorkerSeat {
        WorkerSeat {
            worker_queue_id: QueueId(self.seat_queue_id),
            key_id: self.key_id,
            heartbeat_ms: self.heartbeat_interval * second_ms,
            drain: self.drain,
            online: self.worker_status != "disconnected"
                && self.worker_status != "offline"
                && self.alive_until > now_ms,
            cancelling: self.cancelling,
        }
    }
}

/// Filters of `GET /workers`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerFilter {
    pub worker_queue_id: Option<Uuid>,
    pub online_only: bool,
}

/// A run one of a key's workers holds.
#[derive(Debug, Clone, Copy)]
pub struct HeldRun {
    pub execution_id: Uuid,
    /// A team's run (else an agent's).
    pub team: bool,
    pub entity_id: Uuid,
    /// The key that started the run.
    pub started_by: Option<Uuid>,
}

impl Store {
    /// The workers of one organization.
    pub fn workers<'a>(&'a self, org: &'a str) -> Workers<'a> {
        Workers {
            db: &self.db,
            org,
            second_ms: self.second_ms,
        }
    }

    /// Marks workers silent past their deadline offline; returns how many.
    pub async fn mark_silent_workers_offline(&self, now_ms: i64) -> StoreResult<u64> {
        Ok(write_tx!(&self.db, tx, pg => {
            let gone: Vec<StatusRow> = sqlx::query_as(
                "UPDATE workers SET status = 'offline', current_executions = '[]' \
                 WHERE alive_until <= $1 AND status NOT IN ('offline', 'disconnected') \
                 RETURNING id, organization_id, worker_queue_id, hostname, runner_name")
                .bind(now_ms).fetch_all(&mut *tx).await?;
            for w in &gone {
                enqueue_webhooks!(tx, pg, w.organization_id.as_str(), "worker.status_changed", w.event("offline"));
            }
            gone.len() as u64
        }))
    }
}

/// A worker as its status-change webhook shows it.
#[derive(sqlx::FromRow)]
struct StatusRow {
    id: Uuid,
    organization_id: String,
    worker_queue_id: Uuid,
    hostname: Option<String>,
    runner_name: Option<String>,
}

impl StatusRow {
    fn event(&self, status: &str) -> Value {
        serde_json::json!({"worker": {
            "id": self.id,
            "worker_queue_id": self.worker_queue_id,
            "hostname": self.hostname,
            "runner_name": self.runner_name,
            "status": status,
        }})
    }
}

/// The workers of one organization.
pub struct Workers<'a> {
    db: &'a Db,
    org: &'a str,
    second_ms: i64,
}

/// `$2` is now in Unix milliseconds, `$4` whether only online workers count.
macro_rules! worker_filter {
    () => {
        " WHERE organization_id = $1 AND ($3 IS NULL OR worker_queue_id = $3) \
         AND (NOT $4 OR (status NOT IN ('offline', 'disconnected') AND alive_until > $2))"
    };
}

impl Workers<'_> {
    /// Registers a worker on an active queue of the organization, unless the queue already has
    /// `max_workers` online (conflict). The count and the insert happen under the queue's row
    /// lock, so concurrent registrations cannot both take the last seat.
    pub async fn register(
        &self,
        queue: Uuid,
        req: &RegisterWorker,
        hostname: &str,
        runner_name: &str,
        key_id: Uuid,
    ) -> StoreResult<Registered> {
        let org = self.org;
        let id = Uuid::now_v7();
        let at = now();
        let now_ms = at.timestamp_millis();
        let (queue_name, environment_name, interval) = write_tx!(self.db, tx, pg => {
            let sql = if pg {
                "SELECT q.name, e.name, q.status, q.max_workers, q.heartbeat_interval FROM worker_queues q \
                 JOIN environments e ON e.id = q.environment_id WHERE q.organization_id = $1 AND q.id = $2 FOR UPDATE OF q"
            } else {
                "SELECT q.name, e.name, q.status, q.max_workers, q.heartbeat_interval FROM worker_queues q \
                 JOIN environments e ON e.id = q.environment_id WHERE q.organization_id = $1 AND q.id = $2"
            };
            let row: Option<(String, String, String, Option<i64>, i64)> =
                sqlx::query_as(sql).bind(org).bind(queue).fetch_optional(&mut *tx).await?;
            let (name, env, status, max_workers, interval) = row.ok_or(StoreError::NotFound)?;
            if status != "active" {
                return Err(StoreError::Conflict(format!("worker queue '{name}' is {status}, not active")));
            }
            if let Some(max) = max_workers {
                let online: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM workers WHERE worker_queue_id = $1 \
                     AND status NOT IN ('offline', 'disconnected') AND alive_until > $2")
                    .bind(queue).bind(now_ms).fetch_one(&mut *tx).await?;
                if online >= max {
                    return Err(StoreError::Conflict(format!(
                        "worker queue '{name}' already has {online} of at most {max} workers online")));
                }
            }
            sqlx::query(
                "INSERT INTO workers (id, organization_id, worker_queue_id, hostname, runner_name, version, capabilities, \
                   system_info, status, registered_at, last_heartbeat_at, alive_until, key_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'online', $9, $9, $10, $11)")
                .bind(id).bind(org).bind(queue).bind(hostname).bind(runner_name)
                .bind(req.version.as_ref().or(req.worker_sdk_version.as_ref()))
                .bind(Json(&req.capabilities))
                .bind(Json(req.system_info.clone().unwrap_or_else(|| Value::Object(Default::default()))))
                .bind(at).bind(now_ms + 3 * self.second_ms * interval).bind(key_id)
                .execute(&mut *tx).await?;
            let registered = StatusRow {
                id,
                organization_id: org.to_string(),
                worker_queue_id: queue,
                hostname: Some(hostname.to_string()),
                runner_name: Some(runner_name.to_string()),
            };
            enqueue_webhooks!(tx, pg, org, "worker.status_changed", registered.event("online"));
            (name, env, interval)
        });
        Ok(Registered {
            worker: self.get(id).await?,
            queue_name,
            environment_name,
            heartbeat_interval: interval,
            heartbeat_ms: interval * self.second_ms,
        })
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<Worker> {
        let row: WorkerRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", worker_columns!(), " FROM workers WHERE organization_id = $1 AND id = $2"))
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_worker(now_ms())
    }

    /// Workers, newest first.
    pub async fn list(&self, filter: WorkerFilter, page: PageRequest) -> StoreResult<Page<Worker>> {
        let now = now_ms();
        let rows: Vec<WorkerRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", worker_columns!(), " FROM workers", worker_filter!(), " ORDER BY id DESC LIMIT $5 OFFSET $6"))
                .bind(self.org).bind(now).bind(filter.worker_queue_id).bind(filter.online_only)
                .bind(page.limit).bind(page.offset)
                .fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar(concat!("SELECT COUNT(*) FROM workers", worker_filter!()))
                    .bind(self.org).bind(now).bind(filter.worker_queue_id).bind(filter.online_only)
                    .fetch_one(pool).await)?)
        };
        page_of(rows, page, count, |r| r.into_worker(now)).await
    }

    /// Every worker of the organization (for the runner view), newest first, at most `limit`.
    pub async fn all(&self, limit: i64) -> StoreResult<Vec<Worker>> {
        let now = now_ms();
        let rows: Vec<WorkerRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", worker_columns!(), " FROM workers WHERE organization_id = $1 ORDER BY id DESC LIMIT $2"))
                .bind(self.org).bind(limit).fetch_all(pool).await)?;
        rows.into_iter().map(|r| r.into_worker(now)).collect()
    }

    /// Whether `key` registered worker `id`; `NotFound` for a worker of another organization.
    pub async fn registered_by(&self, id: Uuid, key: Uuid) -> StoreResult<bool> {
        let owner: Option<Option<Uuid>> = with_db!(self.db, pool =>
            sqlx::query_scalar("SELECT key_id FROM workers WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).fetch_optional(pool).await)?;
        Ok(owner.ok_or(StoreError::NotFound)? == Some(key))
    }

    /// The runs that workers registered with `key` hold right now, with the agent or team
    /// each runs and the key that started it.
    pub async fn held_runs(&self, key: Uuid) -> StoreResult<Vec<HeldRun>> {
        let rows: Vec<(Uuid, String, Uuid, String)> = with_db!(self.db, pool =>
            sqlx::query_as(
                "SELECT e.id, e.execution_type, e.entity_id, e.created_by FROM executions e JOIN workers w ON w.id = e.worker_id \
                 WHERE e.organization_id = $1 AND w.key_id = $2 AND e.status IN ('running', 'cancelling')")
                .bind(self.org).bind(key).fetch_all(pool).await)?;
        Ok(rows
            .into_iter()
            .map(|(execution_id, kind, entity_id, created_by)| HeldRun {
                execution_id,
                team: kind == "team",
                entity_id,
                started_by: Uuid::parse_str(&created_by).ok(),
            })
            .collect())
    }

    /// Records a heartbeat: the worker is alive for 3 more intervals and so are the leases of
    /// the runs it holds and lists in `current_executions` (a run it forgot lapses and goes back
    /// to the queue). Answers the runs it must stop: those being cancelled, and those it
    /// reports but no longer holds (paused, re-queued after it went silent, ended).
    pub async fn heartbeat(&self, id: Uuid, hb: &Heartbeat) -> StoreResult<HeartbeatAck> {
        let org = self.org;
        let at = now();
        let now_ms = at.timestamp_millis();
        let status = match hb.status.as_deref() {
            Some("busy") => WorkerStatus::Busy,
            Some("draining") => WorkerStatus::Draining,
            _ => WorkerStatus::Online,
        };
        let ack = write_tx!(self.db, tx, pg => {
            // A worker the reaper marked offline comes back with its heartbeat; a disconnected
            // one must register again.
            let seat: Option<(String, i64, bool)> = sqlx::query_as(
                "SELECT w.status, q.heartbeat_interval, w.drain FROM workers w JOIN worker_queues q ON q.id = w.worker_queue_id \
                 WHERE w.organization_id = $1 AND w.id = $2")
                .bind(org).bind(id).fetch_optional(&mut *tx).await?;
            let (current, interval, drain) = seat.ok_or(StoreError::NotFound)?;
            if current == "disconnected" {
                return Err(StoreError::Conflict("the worker disconnected; register again".into()));
            }
            let alive_until = now_ms + 3 * self.second_ms * interval;
            // Every change is an event: back from offline, busy, idle again, draining.
            if current != status.as_str() {
                let back: Option<StatusRow> = sqlx::query_as(
                    "SELECT id, organization_id, worker_queue_id, hostname, runner_name FROM workers WHERE id = $1")
                    .bind(id).fetch_optional(&mut *tx).await?;
                if let Some(w) = back {
                    enqueue_webhooks!(tx, pg, org, "worker.status_changed", w.event(status.as_str()));
                }
            }
            sqlx::query(
                "UPDATE workers SET status = $3, current_executions = $4, tasks_processed = COALESCE($5, tasks_processed), \
                   system_info = COALESCE($6, system_info), last_heartbeat_at = $7, alive_until = $8 \
                 WHERE organization_id = $1 AND id = $2")
                .bind(org).bind(id).bind(status.as_str()).bind(Json(&hb.current_executions)).bind(hb.tasks_processed)
                .bind(hb.system_info.clone().map(Json)).bind(at).bind(alive_until)
                .execute(&mut *tx).await?;
            // Ids compared in each backend's text form of its uuid column.
            let (listed_sql, listed): (&str, Vec<String>) = if pg {
                ("id::text IN (SELECT jsonb_array_elements_text($4))",
                 hb.current_executions.iter().map(Uuid::to_string).collect())
            } else {
                ("hex(id) IN (SELECT value FROM json_each($4))",
                 hb.current_executions.iter().map(|u| u.simple().to_string().to_uppercase()).collect())
            };
            let held: Vec<(Uuid, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE executions SET lease_until = CASE WHEN {listed_sql} THEN $3 ELSE lease_until END \
                 WHERE organization_id = $1 AND worker_id = $2 AND status IN ('running', 'cancelling') \
                 RETURNING id, status")))
                .bind(org).bind(id).bind(alive_until).bind(Json(listed)).fetch_all(&mut *tx).await?;
            let running: HashSet<Uuid> = held.iter().filter(|(_, s)| s == "running").map(|(id, _)| *id).collect();
            let mut cancel: Vec<Uuid> = held.iter().filter(|(_, s)| s == "cancelling").map(|(id, _)| *id).collect();
            for e in &hb.current_executions {
                if !running.contains(e) && !cancel.contains(e) {
                    cancel.push(*e);
                }
            }
            HeartbeatAck { ok: true, cancel_execution_ids: cancel, drain }
        });
        Ok(ack)
    }

    /// The runs `worker` holds that are being cancelled.
    pub async fn cancelling(&self, worker: WorkerId) -> StoreResult<Vec<ExecutionId>> {
        let ids: Vec<Uuid> = with_db!(self.db, pool =>
            sqlx::query_scalar("SELECT id FROM executions WHERE organization_id = $1 AND worker_id = $2 AND status = 'cancelling'")
                .bind(self.org).bind(worker.uuid()).fetch_all(pool).await)?;
        Ok(ids.into_iter().map(ExecutionId).collect())
    }

    /// The runs `worker` holds.
    pub async fn held(&self, worker: WorkerId) -> StoreResult<Vec<ExecutionId>> {
        let ids: Vec<Uuid> = with_db!(self.db, pool =>
            sqlx::query_scalar("SELECT id FROM executions WHERE organization_id = $1 AND worker_id = $2 \
                                AND status IN ('running', 'cancelling')")
                .bind(self.org).bind(worker.uuid()).fetch_all(pool).await)?;
        Ok(ids.into_iter().map(ExecutionId).collect())
    }

    /// Marks the worker disconnected; it must register again to get work.
    pub async fn disconnect(&self, id: Uuid) -> StoreResult<()> {
        write_tx!(self.db, tx, pg => {
            let row: Option<StatusRow> = sqlx::query_as(
                "UPDATE workers SET status = 'disconnected', alive_until = 0, current_executions = '[]' \
                 WHERE organization_id = $1 AND id = $2 \
                 RETURNING id, organization_id, worker_queue_id, hostname, runner_name")
                .bind(self.org).bind(id).fetch_optional(&mut *tx).await?;
            let row = row.ok_or(StoreError::NotFound)?;
            enqueue_webhooks!(tx, pg, self.org, "worker.status_changed", row.event("disconnected"));
        });
        Ok(())
    }

    /// Asks the worker to drain (finish its runs, take no more).
    pub async fn set_drain(&self, id: Uuid, drain: bool) -> StoreResult<()> {
        let updated = with_db!(self.db, pool =>
            sqlx::query("UPDATE workers SET drain = $3 WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).bind(drain).execute(pool).await.map(|r| r.rows_affected()))?;
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
