//! Agents, with their environments, skills, teams and projects embedded in one query.

use std::collections::BTreeMap;

use cp_types::agent::{Agent, AgentStatus, EnvironmentRef, ProjectRef, SkillRef};
use cp_types::environment::ExecutionEnvironment;
use cp_types::page::PageRequest;
use cp_types::runtime::Runtime;
use cp_types::{Page, Timestamp, now};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db, with_db_sql};
use crate::error::{StoreError, StoreResult, parse};
use crate::links::{self, EnvTuple, ProjectTuple, SkillTuple};
use crate::page::page_of;

/// The agent columns plus one JSON array per embedded relation, built by correlated
/// subqueries so a page of agents is a single statement (SQLite: uuids rendered as hex).
macro_rules! agent_select_sqlite {
    () => {
        concat!(
            "SELECT a.id, a.organization_id, a.name, a.description, a.system_prompt, a.status, a.runtime, \
             m.value AS model_value, a.llm_config, a.capabilities, a.configuration, a.runner_name, \
             a.execution_environment, a.state, a.error_message, a.created_at, a.updated_at, a.last_active_at, \
             (SELECT json_group_array(lower(hex(t.team_id))) FROM (SELECT team_id FROM team_members \
                WHERE agent_id = a.id ORDER BY added_at, team_id) t) AS teams, ",
            links::sqlite_envs!("agent_environments", "agent_id", "a.id"),
            " AS environments, ",
            links::sqlite_skills!("agent_id", "a.id"),
            " AS skills, ",
            links::sqlite_projects!("project_agents", "agent_id", "a.id"),
            " AS projects FROM agents a LEFT JOIN models m ON m.id = a.model_id"
        )
    };
}

macro_rules! agent_select_postgres {
    () => {
        concat!(
            "SELECT a.id, a.organization_id, a.name, a.description, a.system_prompt, a.status, a.runtime, \
             m.value AS model_value, a.llm_config, a.capabilities, a.configuration, a.runner_name, \
             a.execution_environment, a.state, a.error_message, a.created_at, a.updated_at, a.last_active_at, \
             (SELECT COALESCE(json_agg(t.team_id ORDER BY t.added_at, t.team_id), '[]'::json) FROM team_members t \
                WHERE t.agent_id = a.id) AS teams, ",
            links::pg_envs!("agent_environments", "agent_id", "a.id"),
            " AS environments, ",
            links::pg_skills!("agent_id", "a.id"),
            " AS skills, ",
            links::pg_projects!("project_agents", "agent_id", "a.id"),
            " AS projects FROM agents a LEFT JOIN models m ON m.id = a.model_id"
        )
    };
}

macro_rules! agent_filter {
    () => {
        " WHERE a.organization_id = $1 AND ($2 IS NULL OR a.status = $2) \
          AND ($3 IS NULL OR EXISTS (SELECT 1 FROM team_members tf WHERE tf.agent_id = a.id AND tf.team_id = $3)) \
          AND ($4 IS NULL OR EXISTS (SELECT 1 FROM project_agents pf WHERE pf.agent_id = a.id AND pf.project_id = $4)) \
          AND ($5 IS NULL OR EXISTS (SELECT 1 FROM agent_environments ef WHERE ef.agent_id = a.id AND ef.environment_id = $5))"
    };
}

const LIST_SQLITE: &str = concat!(
    agent_select_sqlite!(),
    agent_filter!(),
    " ORDER BY a.id DESC LIMIT $6 OFFSET $7"
);
const LIST_PG: &str = concat!(
    agent_select_postgres!(),
    agent_filter!(),
    " ORDER BY a.id DESC LIMIT $6 OFFSET $7"
);
const COUNT: &str = concat!("SELECT COUNT(*) FROM agents a", agent_filter!());
const GET_SQLITE: &str = concat!(agent_select_sqlite!(), " WHERE a.organization_id = $1 AND a.id = $2");
const GET_PG: &str = concat!(agent_select_postgres!(), " WHERE a.organization_id = $1 AND a.id = $2");

#[derive(sqlx::FromRow)]
struct AgentRow {
    id: Uuid,
    organization_id: String,
    name: String,
    description: Option<String>,
    system_prompt: Option<String>,
    status: String,
    runtime: String,
    model_value: Option<String>,
    llm_config: Json<Value>,
    capabilities: Json<Vec<String>>,
    configuration: Json<Value>,
    runner_name: Option<String>,
    execution_environment: Json<ExecutionEnvironment>,
    state: Json<Value>,
    error_message: Option<String>,
    created_at: Timestamp,
    updated_at: Timestamp,
    last_active_at: Option<Timestamp>,
    teams: Json<Vec<Uuid>>,
    environments: Json<Vec<EnvTuple>>,
    skills: Json<Vec<SkillTuple>>,
    projects: Json<Vec<ProjectTuple>>,
}

impl AgentRow {
    fn into_agent(self) -> StoreResult<Agent> {
        let environments: Vec<EnvironmentRef> = self.environments.0.into_iter().map(links::env_ref).collect();
        let skills: Vec<SkillRef> = self.skills.0.into_iter().map(links::skill_ref).collect();
        let projects: Vec<ProjectRef> = self.projects.0.into_iter().map(links::project_ref).collect();
        Ok(Agent {
            id: self.id,
            organization_id: self.organization_id,
            name: self.name,
            description: self.description,
            system_prompt: self.system_prompt,
            status: parse(&self.status)?,
            runtime: parse(&self.runtime)?,
            model_id: self.model_value,
            llm_config: self.llm_config.0,
            capabilities: self.capabilities.0,
            configuration: self.configuration.0,
            team_id: self.teams.0.first().copied(),
            team_ids: self.teams.0,
            runner_name: self.runner_name,
            execution_environment: self.execution_environment.0,
            state: self.state.0,
            error_message: self.error_message,
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

/// Filters of `GET /agents`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentFilter {
    pub status: Option<AgentStatus>,
    pub team_id: Option<Uuid>,
    pub project_id: Option<Uuid>,
    pub environment_id: Option<Uuid>,
}

/// A new agent, validated and with its model resolved by the caller.
#[derive(Debug, Clone)]
pub struct NewAgent {
    pub name: String,
    pub description: Option<String>,
    pub system_prompt: Option<String>,
    pub status: AgentStatus,
    pub runtime: Runtime,
    pub model_id: Uuid,
    pub llm_config: Value,
    pub capabilities: Vec<String>,
    pub configuration: Value,
    pub runner_name: Option<String>,
    pub execution_environment: ExecutionEnvironment,
    pub team_id: Option<Uuid>,
    pub environment_ids: Vec<Uuid>,
    pub skill_ids: Vec<Uuid>,
    pub skill_configurations: BTreeMap<Uuid, Value>,
}

/// A partial update, validated and with its model resolved by the caller.
#[derive(Debug, Clone, Default)]
pub struct AgentPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub system_prompt: Option<Option<String>>,
    pub status: Option<AgentStatus>,
    pub runtime: Option<Runtime>,
    pub model_id: Option<Uuid>,
    pub llm_config: Option<Value>,
    pub capabilities: Option<Vec<String>>,
    pub configuration: Option<Value>,
    pub runner_name: Option<Option<String>>,
    pub execution_environment: Option<ExecutionEnvironment>,
    pub state: Option<Value>,
    pub error_message: Option<Option<String>>,
    pub environment_ids: Option<Vec<Uuid>>,
    pub skill_ids: Option<Vec<Uuid>>,
    pub skill_configurations: Option<BTreeMap<Uuid, Value>>,
}

impl Store {
    /// The agents of one organization.
    pub fn agents<'a>(&'a self, org: &'a str) -> Agents<'a> {
        Agents { db: &self.db, org }
    }
}

/// The agents of one organization.
pub struct Agents<'a> {
    db: &'a Db,
    org: &'a str,
}

fn conflict(e: sqlx::Error) -> StoreError {
    links::conflict_or_reference(e, "agent", &["name"])
}

impl Agents<'_> {
    /// The agents of team `team` (as many as one page may hold).
    pub async fn team_members(&self, team: Uuid) -> StoreResult<Vec<Agent>> {
        let filter = AgentFilter {
            team_id: Some(team),
            ..Default::default()
        };
        let page = PageRequest {
            limit: cp_types::page::MAX_LIMIT,
            offset: 0,
        };
        Ok(self.list(filter, page).await?.items)
    }

    pub async fn list(&self, filter: AgentFilter, page: PageRequest) -> StoreResult<Page<Agent>> {
        let status = filter.status.map(|s| s.as_str());
        let rows: Vec<AgentRow> = with_db_sql!(self.db, pool, sql = (LIST_SQLITE, LIST_PG) =>
            sqlx::query_as(sql)
                .bind(self.org).bind(status).bind(filter.team_id).bind(filter.project_id).bind(filter.environment_id)
                .bind(page.limit).bind(page.offset)
                .fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar(COUNT)
                    .bind(self.org).bind(status).bind(filter.team_id).bind(filter.project_id)
                    .bind(filter.environment_id)
                    .fetch_one(pool).await)?)
        };
        page_of(rows, page, count, AgentRow::into_agent).await
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<Agent> {
        let row: AgentRow = with_db_sql!(self.db, pool, sql = (GET_SQLITE, GET_PG) =>
            sqlx::query_as(sql).bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_agent()
    }

    /// The id of the agent named `name`, if there is one.
    pub async fn id_by_name(&self, name: &str) -> StoreResult<Option<Uuid>> {
        Ok(with_db!(self.db, pool =>
            sqlx::query_scalar("SELECT id FROM agents WHERE organization_id = $1 AND name = $2")
                .bind(self.org).bind(name).fetch_optional(pool).await)?)
    }

    pub async fn exists(&self, id: Uuid) -> StoreResult<bool> {
        let n: i64 = with_db!(self.db, pool =>
            sqlx::query_scalar("SELECT COUNT(*) FROM agents WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).fetch_one(pool).await)?;
        Ok(n > 0)
    }

    /// Creates the agent, puts it in the `DEFAULT` project, links its environments and skills
    /// and joins its team, all in one transaction: a bad reference leaves nothing behind.
    pub async fn create(&self, new: &NewAgent) -> StoreResult<Agent> {
        let id = Uuid::now_v7();
        let at = now();
        with_db!(self.db, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO agents (id, organization_id, name, description, system_prompt, status, runtime, model_id, \
                   llm_config, capabilities, configuration, runner_name, execution_environment, state, created_at, \
                   updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)")
                .bind(id).bind(self.org).bind(new.name.trim()).bind(&new.description).bind(&new.system_prompt)
                .bind(new.status.as_str()).bind(new.runtime.as_str()).bind(new.model_id)
                .bind(Json(&new.llm_config)).bind(Json(&new.capabilities)).bind(Json(&new.configuration))
                .bind(&new.runner_name).bind(Json(&new.execution_environment))
                .bind(Json(serde_json::json!({}))).bind(at)
                .execute(&mut *tx).await.map_err(conflict)?;
            sqlx::query(
                "INSERT INTO project_agents (id, organization_id, project_id, agent_id, added_at) \
                 SELECT $1, $2, p.id, $3, $4 FROM projects p WHERE p.organization_id = $2 AND p.is_default")
                .bind(Uuid::now_v7()).bind(self.org).bind(id).bind(at)
                .execute(&mut *tx).await?;
            links::link_environments!(tx, links::AGENT_ENVS, self.org, id, &new.environment_ids);
            links::link_skills!(tx, links::AGENT_SKILLS, self.org, id, &new.skill_ids, &new.skill_configurations, at);
            if let Some(team) = new.team_id {
                let n = sqlx::query(links::JOIN_TEAM)
                    .bind(id).bind(self.org).bind(at).bind(team)
                    .execute(&mut *tx).await?.rows_affected();
                if n == 0 {
                    return Err(StoreError::reference("team_id", format!("no team {team} in this organization")));
                }
            }
            tx.commit().await?;
            Ok::<_, StoreError>(())
        })?;
        self.get(id).await
    }

    /// Applies a partial update; `environment_ids` and `skill_ids` replace the links (skills
    /// kept keep their configuration override unless `skill_configurations` names them).
    pub async fn update(&self, id: Uuid, patch: &AgentPatch) -> StoreResult<Agent> {
        let at = now();
        with_db!(self.db, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(
                "UPDATE agents SET \
                   name = COALESCE($3, name), \
                   description = CASE WHEN $4 THEN $5 ELSE description END, \
                   system_prompt = CASE WHEN $6 THEN $7 ELSE system_prompt END, \
                   status = COALESCE($8, status), \
                   runtime = COALESCE($9, runtime), \
                   model_id = COALESCE($10, model_id), \
                   llm_config = COALESCE($11, llm_config), \
                   capabilities = COALESCE($12, capabilities), \
                   configuration = COALESCE($13, configuration), \
                   runner_name = CASE WHEN $14 THEN $15 ELSE runner_name END, \
                   execution_environment = COALESCE($16, execution_environment), \
                   state = COALESCE($17, state), \
                   error_message = CASE WHEN $18 THEN $19 ELSE error_message END, \
                   updated_at = $20 \
                 WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id)
                .bind(patch.name.as_deref().map(str::trim))
                .bind(patch.description.is_some()).bind(patch.description.clone().flatten())
                .bind(patch.system_prompt.is_some()).bind(patch.system_prompt.clone().flatten())
                .bind(patch.status.map(|s| s.as_str()))
                .bind(patch.runtime.map(|r| r.as_str()))
                .bind(patch.model_id)
                .bind(patch.llm_config.as_ref().map(Json))
                .bind(patch.capabilities.as_ref().map(Json))
                .bind(patch.configuration.as_ref().map(Json))
                .bind(patch.runner_name.is_some()).bind(patch.runner_name.clone().flatten())
                .bind(patch.execution_environment.as_ref().map(Json))
                .bind(patch.state.as_ref().map(Json))
                .bind(patch.error_message.is_some()).bind(patch.error_message.clone().flatten())
                .bind(at)
                .execute(&mut *tx).await.map_err(conflict)?.rows_affected();
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            if let Some(envs) = &patch.environment_ids {
                sqlx::query("DELETE FROM agent_environments WHERE agent_id = $1").bind(id).execute(&mut *tx).await?;
                links::link_environments!(tx, links::AGENT_ENVS, self.org, id, envs);
            }
            links::relink_skills!(tx, links::AGENT_SKILLS, self.org, id, patch.skill_ids.as_ref(),
                patch.skill_configurations.as_ref(), at);
            tx.commit().await?;
            Ok::<_, StoreError>(())
        })?;
        self.get(id).await
    }

    /// Deletes the agent; its team memberships, project memberships, environment links and
    /// skill associations go with it (foreign keys cascade).
    pub async fn delete(&self, id: Uuid) -> StoreResult<()> {
        let n = with_db!(self.db, pool =>
            sqlx::query("DELETE FROM agents WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
