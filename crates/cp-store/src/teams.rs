//! Teams of agents. Membership is the ordered `team_members` rows, which is what
//! `configuration.member_ids` reads and writes; the rest of the configuration is stored as given.

use std::collections::BTreeMap;

use cp_types::agent::{EnvironmentRef, ProjectRef, SkillRef};
use cp_types::environment::ExecutionEnvironment;
use cp_types::page::PageRequest;
use cp_types::runtime::Runtime;
use cp_types::team::{Team, TeamMember, TeamStatus};
use cp_types::{Page, Timestamp, now};
use serde_json::{Map, Value};
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db, with_db_sql};
use crate::error::{StoreError, StoreResult, parse};
use crate::links::{self, EnvTuple, ProjectTuple, SkillTuple};
use crate::page::page_of;

macro_rules! team_select_sqlite {
    () => {
        concat!(
            "SELECT t.id, t.organization_id, t.name, t.description, t.status, t.runtime, m.value AS model_value, \
             t.configuration, t.execution_environment, t.created_at, t.updated_at, t.last_active_at, \
             (SELECT json_group_array(json_array(lower(hex(x.id)), x.name, x.status, x.description, \
                json(x.capabilities), x.runtime, x.model_value)) FROM (SELECT a.id, a.name, a.status, a.description, \
                a.capabilities, a.runtime, am.value AS model_value FROM team_members tm JOIN agents a ON a.id = tm.agent_id \
                LEFT JOIN models am ON am.id = a.model_id WHERE tm.team_id = t.id ORDER BY tm.position) x) AS agents, ",
            links::sqlite_envs!("team_environments", "team_id", "t.id"),
            " AS environments, ",
            links::sqlite_skills!("team_id", "t.id"),
            " AS skills, ",
            links::sqlite_projects!("project_teams", "team_id", "t.id"),
            " AS projects FROM teams t LEFT JOIN models m ON m.id = t.model_id"
        )
    };
}

macro_rules! team_select_postgres {
    () => {
        concat!(
            "SELECT t.id, t.organization_id, t.name, t.description, t.status, t.runtime, m.value AS model_value, \
             t.configuration, t.execution_environment, t.created_at, t.updated_at, t.last_active_at, \
             (SELECT COALESCE(json_agg(json_build_array(a.id, a.name, a.status, a.description, a.capabilities, \
                a.runtime, am.value) ORDER BY tm.position), '[]'::json) FROM team_members tm \
                JOIN agents a ON a.id = tm.agent_id LEFT JOIN models am ON am.id = a.model_id \
                WHERE tm.team_id = t.id) AS agents, ",
            links::pg_envs!("team_environments", "team_id", "t.id"),
            " AS environments, ",
            links::pg_skills!("team_id", "t.id"),
            " AS skills, ",
            links::pg_projects!("project_teams", "team_id", "t.id"),
            " AS projects FROM teams t LEFT JOIN models m ON m.id = t.model_id"
        )
    };
}

macro_rules! team_filter {
    () => {
        " WHERE t.organization_id = $1 AND ($2 IS NULL OR t.status = $2) \
          AND ($3 IS NULL OR EXISTS (SELECT 1 FROM project_teams pf WHERE pf.team_id = t.id AND pf.project_id = $3))"
    };
}

const LIST_SQLITE: &str = concat!(
    team_select_sqlite!(),
    team_filter!(),
    " ORDER BY t.id DESC LIMIT $4 OFFSET $5"
);
const LIST_PG: &str = concat!(
    team_select_postgres!(),
    team_filter!(),
    " ORDER BY t.id DESC LIMIT $4 OFFSET $5"
);
const COUNT: &str = concat!("SELECT COUNT(*) FROM teams t", team_filter!());
const GET_SQLITE: &str = concat!(team_select_sqlite!(), " WHERE t.organization_id = $1 AND t.id = $2");
const GET_PG: &str = concat!(team_select_postgres!(), " WHERE t.organization_id = $1 AND t.id = $2");

const ADD_MEMBER: &str = "INSERT INTO team_members (team_id, agent_id, organization_id, position, added_at) \
     SELECT $1, a.id, $2, $3, $4 FROM agents a WHERE a.organization_id = $2 AND a.id = $5 \
     ON CONFLICT (team_id, agent_id) DO UPDATE SET position = excluded.position";

/// `[id, name, status, description, capabilities, runtime, model]` of a member agent.
type MemberTuple = (
    Uuid,
    String,
    String,
    Option<String>,
    Vec<String>,
    Runtime,
    Option<String>,
);

#[derive(sqlx::FromRow)]
struct TeamRow {
    id: Uuid,
    organization_id: String,
    name: String,
    description: Option<String>,
    status: String,
    runtime: String,
    model_value: Option<String>,
    configuration: Json<Map<String, Value>>,
    execution_environment: Json<ExecutionEnvironment>,
    created_at: Timestamp,
    updated_at: Timestamp,
    last_active_at: Option<Timestamp>,
    agents: Json<Vec<MemberTuple>>,
    environments: Json<Vec<EnvTuple>>,
    skills: Json<Vec<SkillTuple>>,
    projects: Json<Vec<ProjectTuple>>,
}

impl TeamRow {
    fn into_team(self) -> StoreResult<Team> {
        let agents: Vec<TeamMember> = self
            .agents
            .0
            .into_iter()
            .map(
                |(id, name, status, description, capabilities, runtime, model_id)| TeamMember {
                    id,
                    name,
                    status,
                    description,
                    capabilities,
                    runtime,
                    model_id,
                },
            )
            .collect();
        let environments: Vec<EnvironmentRef> = self.environments.0.into_iter().map(links::env_ref).collect();
        let skills: Vec<SkillRef> = self.skills.0.into_iter().map(links::skill_ref).collect();
        let projects: Vec<ProjectRef> = self.projects.0.into_iter().map(links::project_ref).collect();
        // The configuration as the client wrote it: members and model come from their columns.
        let mut configuration = self.configuration.0;
        configuration.insert(
            "member_ids".into(),
            Value::Array(agents.iter().map(|a| Value::String(a.id.to_string())).collect()),
        );
        if let Some(model) = &self.model_value {
            let llm = configuration.entry("llm").or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(llm) = llm {
                llm.insert("model".into(), Value::String(model.clone()));
            }
        }
        Ok(Team {
            id: self.id,
            organization_id: self.organization_id,
            name: self.name,
            description: self.description,
            status: parse(&self.status)?,
            runtime: parse(&self.runtime)?,
            model_id: self.model_value,
            configuration: Value::Object(configuration),
            execution_environment: self.execution_environment.0,
            agents,
            environment_ids: environments.iter().map(|e| e.id).collect(),
            environments,
            skill_ids: skills.iter().map(|s| s.id).collect(),
            skills,
            projects,
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_active_at: self.last_active_at,
        })
    }
}

/// Filters of `GET /teams`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TeamFilter {
    pub status: Option<TeamStatus>,
    pub project_id: Option<Uuid>,
}

/// A new team, validated and with its model resolved by the caller.
#[derive(Debug, Clone)]
pub struct NewTeam {
    pub name: String,
    pub description: Option<String>,
    pub status: TeamStatus,
    pub runtime: Runtime,
    pub model_id: Uuid,
    /// The configuration without `member_ids` and `llm.model`.
    pub configuration: Map<String, Value>,
    pub member_ids: Vec<Uuid>,
    pub execution_environment: ExecutionEnvironment,
    pub environment_ids: Vec<Uuid>,
    pub skill_ids: Vec<Uuid>,
    pub skill_configurations: BTreeMap<Uuid, Value>,
}

/// A partial update, validated and with its model resolved by the caller.
#[derive(Debug, Clone, Default)]
pub struct TeamPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub status: Option<TeamStatus>,
    pub runtime: Option<Runtime>,
    pub model_id: Option<Uuid>,
    /// Replaces the stored configuration (members and model aside).
    pub configuration: Option<Map<String, Value>>,
    pub member_ids: Option<Vec<Uuid>>,
    pub execution_environment: Option<ExecutionEnvironment>,
    pub environment_ids: Option<Vec<Uuid>>,
    pub skill_ids: Option<Vec<Uuid>>,
    pub skill_configurations: Option<BTreeMap<Uuid, Value>>,
}

impl Store {
    /// The teams of one organization.
    pub fn teams<'a>(&'a self, org: &'a str) -> Teams<'a> {
        Teams { db: &self.db, org }
    }
}

/// The teams of one organization.
pub struct Teams<'a> {
    db: &'a Db,
    org: &'a str,
}

fn conflict(e: sqlx::Error) -> StoreError {
    links::conflict_or_reference(e, "team", &["name"])
}

/// Writes the member list in order; an id that is not an agent of the organization fails the
/// transaction with a 422 on `configuration.member_ids`.
macro_rules! set_members {
    ($tx:ident, $org:expr, $team:expr, $ids:expr, $at:expr) => {
        for (pos, agent) in links::dedup($ids).into_iter().enumerate() {
            let n = sqlx::query(ADD_MEMBER)
                .bind($team)
                .bind($org)
                .bind(pos as i32)
                .bind($at)
                .bind(agent)
                .execute(&mut *$tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(StoreError::reference(
                    "configuration.member_ids",
                    format!("no agent {agent} in this organization"),
                ));
            }
        }
    };
}

impl Teams<'_> {
    pub async fn list(&self, filter: TeamFilter, page: PageRequest) -> StoreResult<Page<Team>> {
        let status = filter.status.map(|s| s.as_str());
        let rows: Vec<TeamRow> = with_db_sql!(self.db, pool, sql = (LIST_SQLITE, LIST_PG) =>
            sqlx::query_as(sql)
                .bind(self.org).bind(status).bind(filter.project_id).bind(page.limit).bind(page.offset)
                .fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar(COUNT).bind(self.org).bind(status).bind(filter.project_id)
                    .fetch_one(pool).await)?)
        };
        page_of(rows, page, count, TeamRow::into_team).await
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<Team> {
        let row: TeamRow = with_db_sql!(self.db, pool, sql = (GET_SQLITE, GET_PG) =>
            sqlx::query_as(sql).bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_team()
    }

    /// Creates the team with its members, environments and skills, and puts it in the
    /// `DEFAULT` project, in one transaction.
    pub async fn create(&self, new: &NewTeam) -> StoreResult<Team> {
        let id = Uuid::now_v7();
        let at = now();
        with_db!(self.db, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO teams (id, organization_id, name, description, status, runtime, model_id, configuration, \
                   execution_environment, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)")
                .bind(id).bind(self.org).bind(new.name.trim()).bind(&new.description).bind(new.status.as_str())
                .bind(new.runtime.as_str()).bind(new.model_id).bind(Json(&new.configuration))
                .bind(Json(&new.execution_environment)).bind(at)
                .execute(&mut *tx).await.map_err(conflict)?;
            sqlx::query(
                "INSERT INTO project_teams (id, organization_id, project_id, team_id, added_at) \
                 SELECT $1, $2, p.id, $3, $4 FROM projects p WHERE p.organization_id = $2 AND p.is_default")
                .bind(Uuid::now_v7()).bind(self.org).bind(id).bind(at)
                .execute(&mut *tx).await?;
            set_members!(tx, self.org, id, &new.member_ids, at);
            links::link_environments!(tx, links::TEAM_ENVS, self.org, id, &new.environment_ids);
            links::link_skills!(tx, links::TEAM_SKILLS, self.org, id, &new.skill_ids, &new.skill_configurations, at);
            tx.commit().await?;
            Ok::<_, StoreError>(())
        })?;
        self.get(id).await
    }

    /// Applies a partial update. `member_ids` replaces the membership (agents that stay keep
    /// when they joined), `environment_ids` and `skill_ids` replace their links.
    pub async fn update(&self, id: Uuid, patch: &TeamPatch) -> StoreResult<Team> {
        let at = now();
        with_db!(self.db, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(
                "UPDATE teams SET \
                   name = COALESCE($3, name), \
                   description = CASE WHEN $4 THEN $5 ELSE description END, \
                   status = COALESCE($6, status), \
                   runtime = COALESCE($7, runtime), \
                   model_id = COALESCE($8, model_id), \
                   configuration = COALESCE($9, configuration), \
                   execution_environment = COALESCE($10, execution_environment), \
                   updated_at = $11 \
                 WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id)
                .bind(patch.name.as_deref().map(str::trim))
                .bind(patch.description.is_some()).bind(patch.description.clone().flatten())
                .bind(patch.status.map(|s| s.as_str()))
                .bind(patch.runtime.map(|r| r.as_str()))
                .bind(patch.model_id)
                .bind(patch.configuration.as_ref().map(Json))
                .bind(patch.execution_environment.as_ref().map(Json))
                .bind(at)
                .execute(&mut *tx).await.map_err(conflict)?.rows_affected();
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            if let Some(members) = &patch.member_ids {
                let current: Vec<(Uuid,)> = sqlx::query_as("SELECT agent_id FROM team_members WHERE team_id = $1")
                    .bind(id).fetch_all(&mut *tx).await?;
                for (agent,) in current.into_iter().filter(|(a,)| !members.contains(a)) {
                    sqlx::query("DELETE FROM team_members WHERE team_id = $1 AND agent_id = $2")
                        .bind(id).bind(agent).execute(&mut *tx).await?;
                }
                set_members!(tx, self.org, id, members, at);
            }
            if let Some(envs) = &patch.environment_ids {
                sqlx::query("DELETE FROM team_environments WHERE team_id = $1").bind(id).execute(&mut *tx).await?;
                links::link_environments!(tx, links::TEAM_ENVS, self.org, id, envs);
            }
            links::relink_skills!(tx, links::TEAM_SKILLS, self.org, id, patch.skill_ids.as_ref(),
                patch.skill_configurations.as_ref(), at);
            tx.commit().await?;
            Ok::<_, StoreError>(())
        })?;
        self.get(id).await
    }

    /// Adds an agent at the end of the member list (no change if it is already a member).
    pub async fn add_member(&self, id: Uuid, agent: Uuid) -> StoreResult<Team> {
        let at = now();
        with_db!(self.db, pool => {
            let mut tx = pool.begin().await?;
            let team: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM teams WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).fetch_optional(&mut *tx).await?;
            if team.is_none() {
                return Err(StoreError::NotFound);
            }
            let member: Option<(Uuid,)> = sqlx::query_as(
                "SELECT agent_id FROM team_members WHERE team_id = $1 AND agent_id = $2")
                .bind(id).bind(agent).fetch_optional(&mut *tx).await?;
            if member.is_none() {
                // Checked first: the insert only verifies the team, and an agent id of another
                // organization would otherwise satisfy the foreign key.
                let exists: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM agents WHERE organization_id = $1 AND id = $2")
                    .bind(self.org).bind(agent).fetch_optional(&mut *tx).await?;
                if exists.is_none() {
                    return Err(StoreError::reference("agent_id", format!("no agent {agent} in this organization")));
                }
                sqlx::query(links::JOIN_TEAM)
                    .bind(agent).bind(self.org).bind(at).bind(id)
                    .execute(&mut *tx).await.map_err(conflict)?;
                sqlx::query("UPDATE teams SET updated_at = $2 WHERE id = $1").bind(id).bind(at).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, StoreError>(())
        })?;
        self.get(id).await
    }

    /// Removes an agent from the member list (404 if it is not a member).
    pub async fn remove_member(&self, id: Uuid, agent: Uuid) -> StoreResult<Team> {
        let n = with_db!(self.db, pool =>
            sqlx::query("DELETE FROM team_members WHERE organization_id = $1 AND team_id = $2 AND agent_id = $3")
                .bind(self.org).bind(id).bind(agent).execute(pool).await.map(|r| r.rows_affected()))?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        with_db!(self.db, pool =>
            sqlx::query("UPDATE teams SET updated_at = $3 WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).bind(now()).execute(pool).await.map(|r| r.rows_affected()))?;
        self.get(id).await
    }

    /// Deletes the team; memberships, links and associations go with it (foreign keys cascade).
    pub async fn delete(&self, id: Uuid) -> StoreResult<()> {
        let n = with_db!(self.db, pool =>
            sqlx::query("DELETE FROM teams WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
