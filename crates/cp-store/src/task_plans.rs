//! Task plans: the task, every iteration the planner answered, and the workflow runs a plan
//! started (their state read from the runs themselves).

use cp_types::page::PageRequest;
use cp_types::plan::{PlanIteration, PlanRun, Planner, PlanningUsage, Priority, StoredPlan, TaskPlan};
use cp_types::{Page, Timestamp, now};
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db, write_tx};
use crate::error::{StoreError, StoreResult, parse};
use crate::page::page_of;

/// Inserts iteration `$n` (a [`NewIteration`]) of plan `$id` in transaction `$tx`.
macro_rules! insert_iteration {
    ($tx:ident, $id:expr, $n:expr, $it:expr, $at:expr) => {
        sqlx::query(
            "INSERT INTO task_plan_iterations (plan_id, iteration, feedback, plan, planner, model, planner_reason, \
               usage, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind($id)
        .bind($n)
        .bind($it.feedback)
        .bind(Json($it.plan))
        .bind($it.planner.as_str())
        .bind($it.model)
        .bind($it.planner_reason)
        .bind($it.usage.map(Json))
        .bind($at)
        .execute(&mut *$tx)
        .await?
    };
}

/// A plan's columns joined with its latest iteration's.
macro_rules! plan_columns {
    () => {
        "p.id, p.organization_id, p.description, p.priority, p.project_id, p.iteration, p.created_by, p.created_at, \
         p.updated_at, i.plan, i.planner, i.model, i.planner_reason \
         FROM task_plans p JOIN task_plan_iterations i ON i.plan_id = p.id AND i.iteration = p.iteration"
    };
}

#[derive(sqlx::FromRow)]
struct PlanRow {
    id: Uuid,
    organization_id: String,
    description: String,
    priority: Option<String>,
    project_id: Option<Uuid>,
    iteration: i64,
    created_by: String,
    created_at: Timestamp,
    updated_at: Timestamp,
    plan: Json<TaskPlan>,
    planner: String,
    model: Option<String>,
    planner_reason: Option<String>,
}

impl PlanRow {
    fn into_plan(self) -> StoreResult<StoredPlan> {
        Ok(StoredPlan {
            id: self.id,
            organization_id: self.organization_id,
            description: self.description,
            priority: self.priority.as_deref().map(parse::<Priority>).transpose()?,
            project_id: self.project_id,
            title: self.plan.0.title.clone(),
            iteration: self.iteration,
            plan: self.plan.0,
            planner: parse(&self.planner)?,
            model: self.model,
            planner_reason: self.planner_reason,
            iterations: None,
            runs: None,
            created_by: self.created_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct IterationRow {
    iteration: i64,
    feedback: Option<String>,
    plan: Json<TaskPlan>,
    planner: String,
    model: Option<String>,
    planner_reason: Option<String>,
    usage: Option<Json<PlanningUsage>>,
    created_at: Timestamp,
}

impl IterationRow {
    fn into_iteration(self) -> StoreResult<PlanIteration> {
        Ok(PlanIteration {
            iteration: self.iteration,
            feedback: self.feedback,
            plan: self.plan.0,
            planner: parse(&self.planner)?,
            model: self.model,
            planner_reason: self.planner_reason,
            usage: self.usage.map(|u| u.0),
            created_at: self.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct RunRow {
    workflow_id: Uuid,
    workflow_run_id: Uuid,
    iteration: i64,
    status: Option<String>,
    created_at: Timestamp,
}

/// What the planner answered, to store as an iteration.
#[derive(Debug, Clone)]
pub struct NewIteration<'a> {
    pub feedback: Option<&'a str>,
    pub plan: &'a TaskPlan,
    pub planner: Planner,
    pub model: Option<&'a str>,
    pub planner_reason: Option<&'a str>,
    pub usage: Option<PlanningUsage>,
}

/// A new plan's task.
#[derive(Debug, Clone)]
pub struct NewPlan<'a> {
    pub description: &'a str,
    pub priority: Option<Priority>,
    pub project_id: Option<Uuid>,
    pub created_by: &'a str,
}

impl Store {
    /// The task plans of one organization.
    pub fn task_plans<'a>(&'a self, org: &'a str) -> TaskPlans<'a> {
        TaskPlans { db: &self.db, org }
    }
}

pub struct TaskPlans<'a> {
    db: &'a Db,
    org: &'a str,
}

impl TaskPlans<'_> {
    /// Stores a plan with its first iteration.
    pub async fn create(&self, new: NewPlan<'_>, first: NewIteration<'_>) -> StoreResult<StoredPlan> {
        let (id, at) = (Uuid::now_v7(), now());
        write_tx!(self.db, tx, _pg => {
            sqlx::query(
                "INSERT INTO task_plans (id, organization_id, description, priority, project_id, iteration, created_by, \
                   created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $7)")
                .bind(id).bind(self.org).bind(new.description).bind(new.priority.map(|p| p.as_str()))
                .bind(new.project_id).bind(new.created_by).bind(at)
                .execute(&mut *tx).await?;
            insert_iteration!(tx, id, 1i64, first, at);
        });
        self.get(id).await
    }

    /// Adds the next iteration of plan `id` (a refinement of the task, now `description`); the
    /// plan shows it from now on.
    pub async fn refine(&self, id: Uuid, description: &str, next: NewIteration<'_>) -> StoreResult<StoredPlan> {
        let at = now();
        write_tx!(self.db, tx, _pg => {
            let iteration: Option<i64> = sqlx::query_scalar(
                "UPDATE task_plans SET iteration = iteration + 1, updated_at = $3, description = $4 \
                 WHERE organization_id = $1 AND id = $2 RETURNING iteration")
                .bind(self.org).bind(id).bind(at).bind(description).fetch_optional(&mut *tx).await?;
            let iteration = iteration.ok_or(StoreError::NotFound)?;
            insert_iteration!(tx, id, iteration, next, at);
        });
        self.get(id).await
    }

    /// The plan with its latest iteration (no history).
    pub async fn get(&self, id: Uuid) -> StoreResult<StoredPlan> {
        let row: PlanRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", plan_columns!(), " WHERE p.organization_id = $1 AND p.id = $2"))
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_plan()
    }

    /// The plan with every iteration (oldest first) and every run it started (newest first).
    pub async fn get_with_history(&self, id: Uuid) -> StoreResult<StoredPlan> {
        let mut plan = self.get(id).await?;
        let iterations: Vec<IterationRow> = with_db!(self.db, pool =>
            sqlx::query_as(
                "SELECT iteration, feedback, plan, planner, model, planner_reason, usage, created_at \
                 FROM task_plan_iterations WHERE plan_id = $1 ORDER BY iteration")
                .bind(id).fetch_all(pool).await)?;
        let runs: Vec<RunRow> = with_db!(self.db, pool =>
            sqlx::query_as(
                "SELECT t.workflow_id, t.workflow_run_id, t.iteration, r.status, t.created_at \
                 FROM task_plan_runs t LEFT JOIN workflow_runs r ON r.id = t.workflow_run_id \
                 WHERE t.plan_id = $1 ORDER BY t.workflow_run_id DESC")
                .bind(id).fetch_all(pool).await)?;
        plan.iterations = Some(
            iterations
                .into_iter()
                .map(IterationRow::into_iteration)
                .collect::<StoreResult<_>>()?,
        );
        plan.runs = Some(
            runs.into_iter()
                .map(|r| PlanRun {
                    workflow_id: r.workflow_id,
                    workflow_run_id: r.workflow_run_id,
                    iteration: r.iteration,
                    status: r.status.unwrap_or_else(|| "deleted".into()),
                    created_at: r.created_at,
                })
                .collect(),
        );
        Ok(plan)
    }

    /// Newest first, each with its latest iteration.
    pub async fn list(&self, page: PageRequest) -> StoreResult<Page<StoredPlan>> {
        let rows: Vec<PlanRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", plan_columns!(), " WHERE p.organization_id = $1 \
                ORDER BY p.id DESC LIMIT $2 OFFSET $3"))
                .bind(self.org).bind(page.limit).bind(page.offset).fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar("SELECT COUNT(*) FROM task_plans WHERE organization_id = $1")
                    .bind(self.org).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, PlanRow::into_plan).await
    }

    /// Records a workflow run the plan's `iteration` started.
    pub async fn add_run(&self, id: Uuid, iteration: i64, workflow_id: Uuid, run_id: Uuid) -> StoreResult<()> {
        let done = with_db!(self.db, pool =>
            sqlx::query(
                "INSERT INTO task_plan_runs (plan_id, workflow_run_id, workflow_id, iteration, created_at) \
                 SELECT id, $3, $4, $5, $6 FROM task_plans WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).bind(run_id).bind(workflow_id).bind(iteration).bind(now())
                .execute(pool).await.map(|r| r.rows_affected()))?;
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Deletes the plan and its history (the workflows and runs it started stay).
    pub async fn delete(&self, id: Uuid) -> StoreResult<()> {
        let done = with_db!(self.db, pool =>
            sqlx::query("DELETE FROM task_plans WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
