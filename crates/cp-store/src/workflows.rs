//! Workflow definitions and their versions. The current definition is on the workflow's row;
//! every version (the current one included) is a row of `workflow_versions`, written in the
//! same transaction, so a run can always read the version it started with.

use cp_types::page::PageRequest;
use cp_types::workflow::{Workflow, WorkflowDefinition, WorkflowVersion};
use cp_types::{Page, Timestamp, now};
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db, write_tx};
use crate::error::{StoreError, StoreResult};
use crate::page::page_of;

macro_rules! workflow_columns {
    () => {
        "id, organization_id, name, description, project_id, tags, version, definition, created_by, created_at, \
         updated_at"
    };
}

#[derive(sqlx::FromRow)]
struct WorkflowRow {
    id: Uuid,
    organization_id: String,
    name: String,
    description: Option<String>,
    project_id: Option<Uuid>,
    tags: Json<Vec<String>>,
    version: i64,
    definition: Json<WorkflowDefinition>,
    created_by: Option<String>,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl WorkflowRow {
    fn into_workflow(self) -> StoreResult<Workflow> {
        let d = self.definition.0;
        Ok(Workflow {
            id: self.id,
            organization_id: self.organization_id,
            name: self.name,
            description: self.description,
            project_id: self.project_id,
            tags: self.tags.0,
            version: self.version,
            inputs_schema: d.inputs_schema,
            steps: d.steps,
            default_worker_queue_id: d.default_worker_queue_id,
            created_by: self.created_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct VersionRow {
    workflow_id: Uuid,
    version: i64,
    name: String,
    description: Option<String>,
    definition: Json<WorkflowDefinition>,
    created_by: Option<String>,
    created_at: Timestamp,
}

impl VersionRow {
    fn into_version(self) -> StoreResult<WorkflowVersion> {
        let d = self.definition.0;
        Ok(WorkflowVersion {
            workflow_id: self.workflow_id,
            version: self.version,
            name: self.name,
            description: self.description,
            inputs_schema: d.inputs_schema,
            steps: d.steps,
            default_worker_queue_id: d.default_worker_queue_id,
            created_by: self.created_by,
            created_at: self.created_at,
        })
    }
}

/// A workflow as a write leaves it: everything but the ids and times.
#[derive(Debug, Clone)]
pub struct WorkflowDraft {
    pub name: String,
    pub description: Option<String>,
    pub project_id: Option<Uuid>,
    pub tags: Vec<String>,
    pub definition: WorkflowDefinition,
}

/// Records `$row` as a version of its workflow made by `$by` on `$tx`, the write's
/// transaction (a macro: `write_tx!` expands its body once per backend).
macro_rules! insert_version {
    ($tx:ident, $org:expr, $row:expr, $by:expr) => {
        sqlx::query(
            "INSERT INTO workflow_versions (workflow_id, version, organization_id, name, description, definition, \
               created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind($row.id)
        .bind($row.version)
        .bind($org)
        .bind(&$row.name)
        .bind(&$row.description)
        .bind(&$row.definition)
        .bind($by)
        .bind($row.updated_at)
        .execute(&mut *$tx)
        .await?
    };
}

impl Store {
    /// The workflows of one organization.
    pub fn workflows<'a>(&'a self, org: &'a str) -> Workflows<'a> {
        Workflows { db: &self.db, org }
    }
}

/// The workflows of one organization.
pub struct Workflows<'a> {
    db: &'a Db,
    org: &'a str,
}

fn conflict(e: sqlx::Error) -> StoreError {
    StoreError::unique(e, "workflow", &["name"])
}

impl Workflows<'_> {
    /// Newest first.
    pub async fn list(&self, page: PageRequest) -> StoreResult<Page<Workflow>> {
        let rows: Vec<WorkflowRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", workflow_columns!(), " FROM workflows WHERE organization_id = $1 \
                ORDER BY id DESC LIMIT $2 OFFSET $3"))
                .bind(self.org).bind(page.limit).bind(page.offset).fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar("SELECT COUNT(*) FROM workflows WHERE organization_id = $1")
                    .bind(self.org).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, WorkflowRow::into_workflow).await
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<Workflow> {
        let row: WorkflowRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", workflow_columns!(), " FROM workflows WHERE organization_id = $1 AND id = $2"))
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_workflow()
    }

    pub async fn by_name(&self, name: &str) -> StoreResult<Workflow> {
        let row: WorkflowRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", workflow_columns!(), " FROM workflows WHERE organization_id = $1 AND name = $2"))
                .bind(self.org).bind(name.trim()).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_workflow()
    }

    /// Stores a new workflow and its version 1.
    pub async fn create(&self, draft: &WorkflowDraft, created_by: Option<&str>) -> StoreResult<Workflow> {
        let (id, at) = (Uuid::now_v7(), now());
        let row: WorkflowRow = write_tx!(self.db, tx, _pg => {
            let row: WorkflowRow = sqlx::query_as(concat!(
                "INSERT INTO workflows (id, organization_id, name, description, project_id, tags, version, definition, \
                   created_by, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $9, $9) RETURNING ", workflow_columns!()))
                .bind(id).bind(self.org).bind(draft.name.trim()).bind(&draft.description).bind(draft.project_id)
                .bind(Json(&draft.tags)).bind(Json(&draft.definition)).bind(created_by).bind(at)
                .fetch_one(&mut *tx).await.map_err(conflict)?;
            insert_version!(tx, self.org, row, created_by);
            row
        });
        row.into_workflow()
    }

    /// Replaces the workflow with `draft` as its next version; `expected` (the version the
    /// draft was made from) guards against a concurrent update, which answers 409.
    pub async fn update(
        &self,
        id: Uuid,
        expected: i64,
        draft: &WorkflowDraft,
        by: Option<&str>,
    ) -> StoreResult<Workflow> {
        let at = now();
        let row: WorkflowRow = write_tx!(self.db, tx, _pg => {
            let row: Option<WorkflowRow> = sqlx::query_as(concat!(
                "UPDATE workflows SET name = $3, description = $4, project_id = $5, tags = $6, definition = $7, \
                   version = version + 1, updated_at = $8 \
                 WHERE organization_id = $1 AND id = $2 AND version = $9 RETURNING ", workflow_columns!()))
                .bind(self.org).bind(id).bind(draft.name.trim()).bind(&draft.description).bind(draft.project_id)
                .bind(Json(&draft.tags)).bind(Json(&draft.definition)).bind(at).bind(expected)
                .fetch_optional(&mut *tx).await.map_err(conflict)?;
            let Some(row) = row else {
                return Err(StoreError::Conflict("the workflow changed meanwhile; read it again and retry".into()));
            };
            insert_version!(tx, self.org, row, by);
            row
        });
        row.into_workflow()
    }

    pub async fn delete(&self, id: Uuid) -> StoreResult<()> {
        let done = with_db!(self.db, pool =>
            sqlx::query("DELETE FROM workflows WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// One version of the workflow (a run follows the version it started with).
    pub async fn version(&self, id: Uuid, version: i64) -> StoreResult<WorkflowVersion> {
        let row: VersionRow = with_db!(self.db, pool =>
            sqlx::query_as(
                "SELECT workflow_id, version, name, description, definition, created_by, created_at \
                 FROM workflow_versions WHERE organization_id = $1 AND workflow_id = $2 AND version = $3")
                .bind(self.org).bind(id).bind(version).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_version()
    }

    /// The workflow's versions, newest first.
    pub async fn versions(&self, id: Uuid, page: PageRequest) -> StoreResult<Page<WorkflowVersion>> {
        self.get(id).await?;
        let rows: Vec<VersionRow> = with_db!(self.db, pool =>
            sqlx::query_as(
                "SELECT workflow_id, version, name, description, definition, created_by, created_at \
                 FROM workflow_versions WHERE organization_id = $1 AND workflow_id = $2 \
                 ORDER BY version DESC LIMIT $3 OFFSET $4")
                .bind(self.org).bind(id).bind(page.limit).bind(page.offset).fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar("SELECT COUNT(*) FROM workflow_versions WHERE organization_id = $1 AND workflow_id = $2")
                    .bind(self.org).bind(id).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, VersionRow::into_version).await
    }
}
