//! Environments: where executions run and what they get (env vars, secrets, integrations).

use cp_types::environment::{
    CreateEnvironment, Environment, EnvironmentStatus, ExecutionEnvironment, UpdateEnvironment,
};
use cp_types::page::PageRequest;
use cp_types::{Page, Timestamp, now};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db};
use crate::error::{StoreError, StoreResult, parse};
use crate::page::page_of;

macro_rules! env_columns {
    () => {
        "id, organization_id, name, display_name, description, tags, settings, status, execution_environment, \
         is_default, created_at, updated_at"
    };
}

#[derive(sqlx::FromRow)]
struct EnvironmentRow {
    id: Uuid,
    organization_id: String,
    name: String,
    display_name: Option<String>,
    description: Option<String>,
    tags: Json<Vec<String>>,
    settings: Json<Value>,
    status: String,
    execution_environment: Json<ExecutionEnvironment>,
    is_default: bool,
    created_at: Timestamp,
    updated_at: Timestamp,
}
/// Online workers of an environment's queues: `(active, busy)` per environment.
type WorkerCounts = std::collections::HashMap<Uuid, (i64, i64)>;

impl EnvironmentRow {
    fn into_environment(self, counts: &WorkerCounts) -> StoreResult<Environment> {
        let (active, busy) = counts.get(&self.id).copied().unwrap_or((0, 0));
        Ok(Environment {
            id: self.id,
            organization_id: self.organization_id,
            name: self.name,
            display_name: self.display_name,
            description: self.description,
            tags: self.tags.0,
            settings: self.settings.0,
            status: parse(&self.status)?,
            execution_environment: self.execution_environment.0,
            is_default: self.is_default,
            active_workers: active,
            idle_workers: active - busy,
            busy_workers: busy,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Filters of `GET /environments`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvironmentFilter {
    pub status: Option<EnvironmentStatus>,
}

impl Store {
    /// The environments of one organization.
    pub fn environments<'a>(&'a self, org: &'a str) -> Environments<'a> {
        Environments { db: &self.db, org }
    }
}

/// The environments of one organization.
pub struct Environments<'a> {
    db: &'a Db,
    org: &'a str,
}

fn conflict(e: sqlx::Error) -> StoreError {
    StoreError::unique(e, "environment", &["name"])
}

impl Environments<'_> {
    pub async fn list(&self, filter: EnvironmentFilter, page: PageRequest) -> StoreResult<Page<Environment>> {
        let status = filter.status.map(|s| s.as_str());
        let rows: Vec<EnvironmentRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", env_columns!(), " FROM environments \
                WHERE organization_id = $1 AND ($2 IS NULL OR status = $2) ORDER BY id DESC LIMIT $3 OFFSET $4"))
                .bind(self.org).bind(status).bind(page.limit).bind(page.offset).fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar("SELECT COUNT(*) FROM environments WHERE organization_id = $1 AND ($2 IS NULL OR status = $2)")
                    .bind(self.org).bind(status).fetch_one(pool).await)?)
        };
        let counts = self.worker_counts().await?;
        page_of(rows, page, count, |r| r.into_environment(&counts)).await
    }

    /// One grouped query for the whole organization: environments are few, and this keeps a
    /// list at two statements whatever the page size.
    async fn worker_counts(&self) -> StoreResult<WorkerCounts> {
        let rows: Vec<(Uuid, i64, i64)> = with_db!(self.db, pool =>
            sqlx::query_as(
                "SELECT q.environment_id, COUNT(*), COUNT(CASE WHEN w.status = 'busy' THEN 1 END) \
                 FROM workers w JOIN worker_queues q ON q.id = w.worker_queue_id \
                 WHERE w.organization_id = $1 AND w.status NOT IN ('offline', 'disconnected') AND w.alive_until > $2 \
                 GROUP BY q.environment_id")
                .bind(self.org).bind(crate::worker_queues::now_ms()).fetch_all(pool).await)?;
        Ok(rows
            .into_iter()
            .map(|(env, active, busy)| (env, (active, busy)))
            .collect())
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<Environment> {
        let row: EnvironmentRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", env_columns!(), " FROM environments WHERE organization_id = $1 AND id = $2"))
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_environment(&self.worker_counts().await?)
    }

    pub async fn create(&self, req: &CreateEnvironment) -> StoreResult<Environment> {
        let id = Uuid::now_v7();
        let at = now();
        with_db!(self.db, pool =>
            sqlx::query(
                "INSERT INTO environments (id, organization_id, name, display_name, description, tags, settings, \
                   status, execution_environment, is_default, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, FALSE, $10, $10)")
                .bind(id)
                .bind(self.org)
                .bind(req.name.trim())
                .bind(&req.display_name)
                .bind(&req.description)
                .bind(Json(req.tags.clone().unwrap_or_default()))
                .bind(Json(req.settings.clone().unwrap_or_else(|| Value::Object(Default::default()))))
                .bind(req.status.unwrap_or(EnvironmentStatus::Active).as_str())
                .bind(Json(req.execution_environment.clone().unwrap_or_default()))
                .bind(at)
                .execute(pool).await.map(|r| r.rows_affected()))
        .map_err(conflict)?;
        self.get(id).await
    }

    /// Applies a partial update in one statement.
    pub async fn update(&self, id: Uuid, req: &UpdateEnvironment) -> StoreResult<Environment> {
        let current = self.get(id).await?;
        if current.is_default && req.name.as_deref().is_some_and(|n| n.trim() != current.name) {
            return Err(StoreError::Conflict("the default environment keeps its name".into()));
        }
        let updated = with_db!(self.db, pool =>
            sqlx::query(
                "UPDATE environments SET \
                   name = COALESCE($3, name), \
                   display_name = CASE WHEN $4 THEN $5 ELSE display_name END, \
                   description = CASE WHEN $6 THEN $7 ELSE description END, \
                   tags = COALESCE($8, tags), \
                   settings = COALESCE($9, settings), \
                   status = COALESCE($10, status), \
                   execution_environment = COALESCE($11, execution_environment), \
                   updated_at = $12 \
                 WHERE organization_id = $1 AND id = $2")
                .bind(self.org)
                .bind(id)
                .bind(req.name.as_deref().map(str::trim))
                .bind(req.display_name.is_some())
                .bind(req.display_name.clone().flatten())
                .bind(req.description.is_some())
                .bind(req.description.clone().flatten())
                .bind(req.tags.clone().map(Json))
                .bind(req.settings.clone().map(Json))
                .bind(req.status.map(|s| s.as_str()))
                .bind(req.execution_environment.clone().map(Json))
                .bind(now())
                .execute(pool).await.map(|r| r.rows_affected()))
        .map_err(conflict)?;
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        self.get(id).await
    }

    /// Deletes an environment; the `default` environment cannot be deleted.
    pub async fn delete(&self, id: Uuid) -> StoreResult<()> {
        let env = self.get(id).await?;
        if env.is_default {
            return Err(StoreError::Conflict("the default environment cannot be deleted".into()));
        }
        if env.active_workers > 0 {
            return Err(StoreError::Conflict(format!(
                "the environment's queues have {} online worker(s)",
                env.active_workers
            )));
        }
        // Its queues go with it; executions waiting or running there would be stranded.
        let pending: i64 = with_db!(self.db, pool =>
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM executions e JOIN worker_queues q ON q.id = e.worker_queue_id \
                 WHERE q.organization_id = $1 AND q.environment_id = $2 AND e.status IN ('queued', 'running', 'cancelling')")
                .bind(self.org).bind(id).fetch_one(pool).await)?;
        if pending > 0 {
            return Err(StoreError::Conflict(format!(
                "the environment's queues have {pending} queued or running execution(s)"
            )));
        }
        with_db!(self.db, pool =>
            sqlx::query("DELETE FROM environments WHERE organization_id = $1 AND id = $2 AND NOT is_default")
                .bind(self.org).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }
}
