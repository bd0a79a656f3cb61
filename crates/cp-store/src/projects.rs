//! Projects and project membership of agents and teams.

use cp_types::page::PageRequest;
use cp_types::project::{
    CreateProject, DEFAULT_PROJECT_KEY, MemberKind, Project, ProjectMember, ProjectStatus, UpdateProject,
};
use cp_types::{Page, Timestamp, now};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db};
use crate::error::{StoreError, StoreResult, parse};
use crate::page::page_of;

macro_rules! project_select {
    () => {
        "SELECT p.id, p.organization_id, p.name, p.key, p.description, p.goals, p.settings, p.status, \
         p.visibility, p.default_model, p.policy_ids, p.restrict_to_environment, p.is_default, \
         p.created_at, p.updated_at, p.archived_at, \
         (SELECT COUNT(*) FROM project_agents pa WHERE pa.project_id = p.id) AS agent_count, \
         (SELECT COUNT(*) FROM project_teams pt WHERE pt.project_id = p.id) AS team_count"
    };
}

#[derive(sqlx::FromRow)]
struct ProjectRow {
    id: Uuid,
    organization_id: String,
    name: String,
    key: String,
    description: Option<String>,
    goals: Option<String>,
    settings: Json<Value>,
    status: String,
    visibility: String,
    default_model: Option<String>,
    policy_ids: Json<Vec<String>>,
    restrict_to_environment: bool,
    is_default: bool,
    created_at: Timestamp,
    updated_at: Timestamp,
    archived_at: Option<Timestamp>,
    agent_count: i64,
    team_count: i64,
}
impl ProjectRow {
    fn into_project(self) -> StoreResult<Project> {
        Ok(Project {
            id: self.id,
            organization_id: self.organization_id,
            name: self.name,
            key: self.key,
            description: self.description,
            goals: self.goals,
            settings: self.settings.0,
            status: parse(&self.status)?,
            visibility: parse(&self.visibility)?,
            default_model: self.default_model,
            policy_ids: self.policy_ids.0,
            restrict_to_environment: self.restrict_to_environment,
            is_default: self.is_default,
            agent_count: self.agent_count,
            team_count: self.team_count,
            created_at: self.created_at,
            updated_at: self.updated_at,
            archived_at: self.archived_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    id: Uuid,
    project_id: Uuid,
    member_id: Uuid,
    name: String,
    description: Option<String>,
    role: Option<String>,
    added_by: Option<String>,
    added_at: Timestamp,
}

impl MemberRow {
    fn into_member(self, kind: MemberKind) -> ProjectMember {
        ProjectMember {
            id: self.id,
            project_id: self.project_id,
            member_type: kind,
            agent_id: (kind == MemberKind::Agent).then_some(self.member_id),
            team_id: (kind == MemberKind::Team).then_some(self.member_id),
            name: self.name,
            description: self.description,
            role: self.role,
            added_by: self.added_by,
            added_at: self.added_at,
        }
    }
}

/// The statements for one kind of membership (agents or teams); table names cannot be bound.
struct MemberSql {
    entity: &'static str,
    insert: &'static str,
    list: &'static str,
    count: &'static str,
    delete: &'static str,
}

macro_rules! member_sql {
    ($junction:literal, $entity:literal, $col:literal) => {
        MemberSql {
            entity: concat!(
                "SELECT name, description FROM ",
                $entity,
                " WHERE organization_id = $1 AND id = $2"
            ),
            insert: concat!(
                "INSERT INTO ",
                $junction,
                " (id, organization_id, project_id, ",
                $col,
                ", role, added_by, added_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ),
            list: concat!(
                "SELECT j.id, j.project_id, j.",
                $col,
                " AS member_id, e.name, e.description, j.role, j.added_by, ",
                "j.added_at FROM ",
                $junction,
                " j JOIN ",
                $entity,
                " e ON e.id = j.",
                $col,
                " WHERE j.organization_id = $1 AND j.project_id = $2 ORDER BY j.id DESC LIMIT $3 OFFSET $4"
            ),
            count: concat!(
                "SELECT COUNT(*) FROM ",
                $junction,
                " WHERE organization_id = $1 AND project_id = $2"
            ),
            delete: concat!(
                "DELETE FROM ",
                $junction,
                " WHERE organization_id = $1 AND project_id = $2 AND ",
                $col,
                " = $3"
            ),
        }
    };
}

const AGENT_MEMBERS: MemberSql = member_sql!("project_agents", "agents", "agent_id");
const TEAM_MEMBERS: MemberSql = member_sql!("project_teams", "teams", "team_id");

fn member_sql(kind: MemberKind) -> &'static MemberSql {
    match kind {
        MemberKind::Agent => &AGENT_MEMBERS,
        MemberKind::Team => &TEAM_MEMBERS,
    }
}

/// Filters of `GET /projects`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProjectFilter {
    pub status: Option<ProjectStatus>,
}

impl Store {
    /// The projects of one organization.
    pub fn projects<'a>(&'a self, org: &'a str) -> Projects<'a> {
        Projects { db: &self.db, org }
    }
}

/// The projects of one organization.
pub struct Projects<'a> {
    db: &'a Db,
    org: &'a str,
}

fn conflict(e: sqlx::Error) -> StoreError {
    StoreError::unique(e, "project", &["key", "name"])
}

impl Projects<'_> {
    pub async fn list(&self, filter: ProjectFilter, page: PageRequest) -> StoreResult<Page<Project>> {
        let status = filter.status.map(|s| s.as_str());
        let rows: Vec<ProjectRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!(project_select!(), " FROM projects p \
                WHERE p.organization_id = $1 AND ($2 IS NULL OR p.status = $2) ORDER BY p.id DESC LIMIT $3 OFFSET $4"))
                .bind(self.org).bind(status).bind(page.limit).bind(page.offset).fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar("SELECT COUNT(*) FROM projects WHERE organization_id = $1 AND ($2 IS NULL OR status = $2)")
                    .bind(self.org).bind(status).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, ProjectRow::into_project).await
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<Project> {
        let row: ProjectRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!(project_select!(), " FROM projects p WHERE p.organization_id = $1 AND p.id = $2"))
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_project()
    }

    /// The organization's `DEFAULT` project.
    pub async fn get_default(&self) -> StoreResult<Project> {
        let row: ProjectRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!(project_select!(), " FROM projects p WHERE p.organization_id = $1 AND p.is_default"))
                .bind(self.org).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_project()
    }

    pub async fn create(&self, req: &CreateProject) -> StoreResult<Project> {
        let id = Uuid::now_v7();
        let at = now();
        let status = req.status.unwrap_or(ProjectStatus::Active);
        let archived_at = (status == ProjectStatus::Archived).then_some(at);
        with_db!(self.db, pool =>
            sqlx::query(
                "INSERT INTO projects (id, organization_id, name, key, description, goals, settings, status, \
                   visibility, default_model, policy_ids, restrict_to_environment, is_default, created_at, \
                   updated_at, archived_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, FALSE, $13, $13, $14)")
                .bind(id)
                .bind(self.org)
                .bind(req.name.trim())
                .bind(req.key.trim().to_uppercase())
                .bind(&req.description)
                .bind(&req.goals)
                .bind(Json(req.settings.clone().unwrap_or_else(|| Value::Object(Default::default()))))
                .bind(status.as_str())
                .bind(req.visibility.unwrap_or(cp_types::project::Visibility::Private).as_str())
                .bind(&req.default_model)
                .bind(Json(req.policy_ids.clone().unwrap_or_default()))
                .bind(req.restrict_to_environment.unwrap_or(false))
                .bind(at)
                .bind(archived_at)
                .execute(pool).await.map(|r| r.rows_affected()))
        .map_err(conflict)?;
        self.get(id).await
    }

    /// Applies a partial update in one statement (no read-modify-write race between fields).
    pub async fn update(&self, id: Uuid, req: &UpdateProject) -> StoreResult<Project> {
        let current = self.get(id).await?;
        let key = req.key.as_ref().map(|k| k.trim().to_uppercase());
        if current.is_default && key.as_deref().is_some_and(|k| k != DEFAULT_PROJECT_KEY) {
            return Err(StoreError::Conflict("the DEFAULT project keeps its key".into()));
        }
        let at = now();
        let updated = with_db!(self.db, pool =>
            sqlx::query(
                "UPDATE projects SET \
                   name = COALESCE($3, name), \
                   key = COALESCE($4, key), \
                   description = CASE WHEN $5 THEN $6 ELSE description END, \
                   goals = CASE WHEN $7 THEN $8 ELSE goals END, \
                   settings = COALESCE($9, settings), \
                   status = COALESCE($10, status), \
                   visibility = COALESCE($11, visibility), \
                   default_model = CASE WHEN $12 THEN $13 ELSE default_model END, \
                   policy_ids = COALESCE($14, policy_ids), \
                   restrict_to_environment = COALESCE($15, restrict_to_environment), \
                   archived_at = CASE WHEN $10 IS NULL THEN archived_at \
                                      WHEN $10 = 'archived' THEN COALESCE(archived_at, $16) ELSE NULL END, \
                   updated_at = $16 \
                 WHERE organization_id = $1 AND id = $2")
                .bind(self.org)
                .bind(id)
                .bind(req.name.as_deref().map(str::trim))
                .bind(key)
                .bind(req.description.is_some())
                .bind(req.description.clone().flatten())
                .bind(req.goals.is_some())
                .bind(req.goals.clone().flatten())
                .bind(req.settings.clone().map(Json))
                .bind(req.status.map(|s| s.as_str()))
                .bind(req.visibility.map(|v| v.as_str()))
                .bind(req.default_model.is_some())
                .bind(req.default_model.clone().flatten())
                .bind(req.policy_ids.clone().map(Json))
                .bind(req.restrict_to_environment)
                .bind(at)
                .execute(pool).await.map(|r| r.rows_affected()))
        .map_err(conflict)?;
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        self.get(id).await
    }

    /// Deletes a project and its memberships; the `DEFAULT` project cannot be deleted.
    pub async fn delete(&self, id: Uuid) -> StoreResult<()> {
        let project = self.get(id).await?;
        if project.is_default {
            return Err(StoreError::Conflict("the DEFAULT project cannot be deleted".into()));
        }
        with_db!(self.db, pool =>
            sqlx::query("DELETE FROM projects WHERE organization_id = $1 AND id = $2 AND NOT is_default")
                .bind(self.org).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Adds an agent or team of this organization to a project (409 if already a member).
    pub async fn add_member(
        &self,
        project_id: Uuid,
        kind: MemberKind,
        member_id: Uuid,
        role: Option<&str>,
        added_by: Option<&str>,
    ) -> StoreResult<ProjectMember> {
        self.get(project_id).await?;
        let sql = member_sql(kind);
        let entity: Option<(String, Option<String>)> = with_db!(self.db, pool =>
            sqlx::query_as(sql.entity).bind(self.org).bind(member_id).fetch_optional(pool).await)?;
        let (name, description) = entity.ok_or(StoreError::NotFound)?;
        let row = MemberRow {
            id: Uuid::now_v7(),
            project_id,
            member_id,
            name,
            description,
            role: role.map(str::to_string),
            added_by: added_by.map(str::to_string),
            added_at: now(),
        };
        with_db!(self.db, pool =>
            sqlx::query(sql.insert)
                .bind(row.id).bind(self.org).bind(project_id).bind(member_id)
                .bind(&row.role).bind(&row.added_by).bind(row.added_at)
                .execute(pool).await.map(|r| r.rows_affected()))
        .map_err(|e| StoreError::unique(e, &format!("{kind} membership"), &[]))?;
        Ok(row.into_member(kind))
    }

    pub async fn list_members(
        &self,
        project_id: Uuid,
        kind: MemberKind,
        page: PageRequest,
    ) -> StoreResult<Page<ProjectMember>> {
        self.get(project_id).await?;
        let sql = member_sql(kind);
        let rows: Vec<MemberRow> = with_db!(self.db, pool =>
            sqlx::query_as(sql.list).bind(self.org).bind(project_id).bind(page.limit).bind(page.offset)
                .fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar(sql.count).bind(self.org).bind(project_id).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, |r| Ok(r.into_member(kind))).await
    }

    pub async fn remove_member(&self, project_id: Uuid, kind: MemberKind, member_id: Uuid) -> StoreResult<()> {
        let done = with_db!(self.db, pool =>
            sqlx::query(member_sql(kind).delete).bind(self.org).bind(project_id).bind(member_id)
                .execute(pool).await.map(|r| r.rows_affected()))?;
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
