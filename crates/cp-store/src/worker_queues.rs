//! Worker queues with their live counts (online workers, queued and running executions).

use cp_types::page::PageRequest;
use cp_types::worker_queue::{
    CreateWorkerQueue, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_MAX_ATTEMPTS, QueueStatus, UpdateWorkerQueue, WorkerQueue,
};
use cp_types::{Page, Timestamp, now};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db, write_tx};
use crate::error::{StoreError, StoreResult, parse};
use crate::page::page_of;

/// Queue columns plus the live counts; `$1` is the current time in Unix milliseconds.
macro_rules! queue_select {
    () => {
        "SELECT q.id, q.organization_id, q.environment_id, q.name, q.display_name, q.description, q.status, \
           q.max_workers, q.heartbeat_interval, q.max_attempts, q.tags, q.settings, q.created_by, q.created_at, \
           q.updated_at, \
           (SELECT COUNT(*) FROM workers w WHERE w.worker_queue_id = q.id \
              AND w.status NOT IN ('offline', 'disconnected') AND w.alive_until > $1) AS active_workers, \
           (SELECT COUNT(*) FROM executions e WHERE e.worker_queue_id = q.id AND e.status = 'queued') AS queued_executions, \
           (SELECT COUNT(*) FROM executions e WHERE e.worker_queue_id = q.id \
              AND e.status IN ('running', 'cancelling')) AS running_executions \
         FROM worker_queues q"
    };
}

#[derive(sqlx::FromRow)]
struct QueueRow {
    id: Uuid,
    organization_id: String,
    environment_id: Uuid,
    name: String,
    display_name: Option<String>,
    description: Option<String>,
    status: String,
    max_workers: Option<i64>,
    heartbeat_interval: i64,
    max_attempts: i64,
    tags: Json<Vec<String>>,
    settings: Json<Value>,
    created_by: Option<String>,
    created_at: Timestamp,
    updated_at: Timestamp,
    active_workers: i64,
    queued_executions: i64,
    running_executions: i64,
}

impl QueueRow {
    fn into_queue(self) -> StoreResult<WorkerQueue> {
        Ok(WorkerQueue {
            task_queue_name: self.id.to_string(),
            id: self.id,
            organization_id: self.organization_id,
            environment_id: self.environment_id,
            name: self.name,
            display_name: self.display_name,
            description: self.description,
            status: parse(&self.status)?,
            max_workers: self.max_workers,
            heartbeat_interval: self.heartbeat_interval,
            max_attempts: self.max_attempts,
            tags: self.tags.0,
            settings: self.settings.0,
            created_by: self.created_by,
            active_workers: self.active_workers,
            queued_executions: self.queued_executions,
            running_executions: self.running_executions,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// The current time in Unix milliseconds, the unit of every deadline column.
pub(crate) fn now_ms() -> i64 {
    now().timestamp_millis()
}

impl Store {
    /// The worker queues of one organization.
    pub fn worker_queues<'a>(&'a self, org: &'a str) -> WorkerQueues<'a> {
        WorkerQueues { db: &self.db, org }
    }
}

/// The worker queues of one organization.
pub struct WorkerQueues<'a> {
    db: &'a Db,
    org: &'a str,
}

fn conflict(e: sqlx::Error) -> StoreError {
    StoreError::unique(e, "worker queue", &["name"])
}

impl WorkerQueues<'_> {
    /// Queues, newest first; only those of `environment` when given.
    pub async fn list(&self, environment: Option<Uuid>, page: PageRequest) -> StoreResult<Page<WorkerQueue>> {
        let rows: Vec<QueueRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!(queue_select!(),
                " WHERE q.organization_id = $2 AND ($3 IS NULL OR q.environment_id = $3) ORDER BY q.id DESC LIMIT $4 OFFSET $5"))
                .bind(now_ms()).bind(self.org).bind(environment).bind(page.limit).bind(page.offset)
                .fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar("SELECT COUNT(*) FROM worker_queues WHERE organization_id = $1 AND ($2 IS NULL OR environment_id = $2)")
                    .bind(self.org).bind(environment).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, QueueRow::into_queue).await
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<WorkerQueue> {
        let row: QueueRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!(queue_select!(), " WHERE q.organization_id = $2 AND q.id = $3"))
                .bind(now_ms()).bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_queue()
    }

    /// Creates a queue in one of the organization's environments (`NotFound` otherwise).
    pub async fn create(
        &self,
        environment: Uuid,
        req: &CreateWorkerQueue,
        created_by: &str,
    ) -> StoreResult<WorkerQueue> {
        let id = Uuid::now_v7();
        let at = now();
        let inserted = with_db!(self.db, pool =>
            sqlx::query(
                "INSERT INTO worker_queues (id, organization_id, environment_id, name, display_name, description, status, \
                   max_workers, heartbeat_interval, max_attempts, tags, settings, created_by, created_at, updated_at) \
                 SELECT $1, $2, e.id, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14 \
                 FROM environments e WHERE e.organization_id = $2 AND e.id = $3")
                .bind(id)
                .bind(self.org)
                .bind(environment)
                .bind(req.name.trim())
                .bind(&req.display_name)
                .bind(&req.description)
                .bind(req.status.unwrap_or(QueueStatus::Active).as_str())
                .bind(req.max_workers)
                .bind(req.heartbeat_interval.unwrap_or(DEFAULT_HEARTBEAT_INTERVAL))
                .bind(req.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS))
                .bind(Json(req.tags.clone().unwrap_or_default()))
                .bind(Json(req.settings.clone().unwrap_or_else(|| Value::Object(Default::default()))))
                .bind(created_by)
                .bind(at)
                .execute(pool).await.map(|r| r.rows_affected()))
        .map_err(conflict)?;
        if inserted == 0 {
            return Err(StoreError::NotFound);
        }
        self.get(id).await
    }

    pub async fn update(&self, id: Uuid, req: &UpdateWorkerQueue) -> StoreResult<WorkerQueue> {
        let updated = with_db!(self.db, pool =>
            sqlx::query(
                "UPDATE worker_queues SET \
                   name = COALESCE($3, name), \
                   display_name = CASE WHEN $4 THEN $5 ELSE display_name END, \
                   description = CASE WHEN $6 THEN $7 ELSE description END, \
                   status = COALESCE($8, status), \
                   max_workers = CASE WHEN $9 THEN $10 ELSE max_workers END, \
                   heartbeat_interval = COALESCE($11, heartbeat_interval), \
                   max_attempts = COALESCE($12, max_attempts), \
                   tags = COALESCE($13, tags), \
                   settings = COALESCE($14, settings), \
                   updated_at = $15 \
                 WHERE organization_id = $1 AND id = $2")
                .bind(self.org)
                .bind(id)
                .bind(req.name.as_deref().map(str::trim))
                .bind(req.display_name.is_some())
                .bind(req.display_name.clone().flatten())
                .bind(req.description.is_some())
                .bind(req.description.clone().flatten())
                .bind(req.status.map(|s| s.as_str()))
                .bind(req.max_workers.is_some())
                .bind(req.max_workers.flatten())
                .bind(req.heartbeat_interval)
                .bind(req.max_attempts)
                .bind(req.tags.clone().map(Json))
                .bind(req.settings.clone().map(Json))
                .bind(now())
                .execute(pool).await.map(|r| r.rows_affected()))
        .map_err(conflict)?;
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        self.get(id).await
    }

    /// Deletes a queue that has no online worker and no execution waiting or running on it
    /// (409 otherwise: queued work must be cancelled or moved first, so nothing accepted is
    /// dropped silently).
    pub async fn delete(&self, id: Uuid) -> StoreResult<()> {
        let org = self.org;
        write_tx!(self.db, tx, _pg => {
            let q: Option<(i64, i64)> = sqlx::query_as(
                "SELECT \
                   (SELECT COUNT(*) FROM workers w WHERE w.worker_queue_id = q.id \
                      AND w.status NOT IN ('offline', 'disconnected') AND w.alive_until > $3), \
                   (SELECT COUNT(*) FROM executions e WHERE e.worker_queue_id = q.id \
                      AND e.status IN ('queued', 'running', 'cancelling')) \
                 FROM worker_queues q WHERE q.organization_id = $1 AND q.id = $2")
                .bind(org).bind(id).bind(now_ms()).fetch_optional(&mut *tx).await?;
            let (workers, executions) = q.ok_or(StoreError::NotFound)?;
            if workers > 0 {
                return Err(StoreError::Conflict(format!("the queue has {workers} online worker(s)")));
            }
            if executions > 0 {
                return Err(StoreError::Conflict(format!(
                    "the queue has {executions} queued or running execution(s); cancel them first")));
            }
            sqlx::query("DELETE FROM worker_queues WHERE organization_id = $1 AND id = $2")
                .bind(org).bind(id).execute(&mut *tx).await?;
        });
        Ok(())
    }
}

/// Raw figures behind `GET /worker-queues/{id}/metrics`.
#[derive(Debug, Clone, Default)]
pub struct QueueFigures {
    pub completed_last_minute: i64,
    pub completed_last_hour: i64,
    pub failed_last_hour: i64,
    /// Seconds from creation to start of the latest (at most 1,000) started executions.
    pub waits: Vec<f64>,
}

impl WorkerQueues<'_> {
    pub async fn figures(&self, id: Uuid) -> StoreResult<QueueFigures> {
        let at = now();
        let minute = at - chrono::Duration::minutes(1);
        let hour = at - chrono::Duration::hours(1);
        let (completed_last_minute, completed_last_hour, failed_last_hour): (i64, i64, i64) = with_db!(self.db, pool =>
            sqlx::query_as(
                "SELECT \
                   COUNT(CASE WHEN status = 'completed' AND completed_at >= $3 THEN 1 END), \
                   COUNT(CASE WHEN status = 'completed' AND completed_at >= $4 THEN 1 END), \
                   COUNT(CASE WHEN status = 'failed' AND completed_at >= $4 THEN 1 END) \
                 FROM executions WHERE organization_id = $1 AND worker_queue_id = $2 AND completed_at >= $4")
                .bind(self.org).bind(id).bind(minute).bind(hour).fetch_one(pool).await)?;
        let started: Vec<(Timestamp, Timestamp)> = with_db!(self.db, pool =>
            sqlx::query_as(
                "SELECT created_at, started_at FROM executions WHERE organization_id = $1 AND worker_queue_id = $2 \
                   AND started_at IS NOT NULL ORDER BY id DESC LIMIT 1000")
                .bind(self.org).bind(id).fetch_all(pool).await)?;
        let waits = started
            .into_iter()
            .map(|(c, s)| (s - c).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6)
            .collect();
        Ok(QueueFigures {
            completed_last_minute,
            completed_last_hour,
            failed_last_hour,
            waits,
        })
    }
}
