//! The layers of an agent's or team's execution environment, in merge order: its environments
//! (by `position`), then its own `execution_environment`.

use cp_types::environment::ExecutionEnvironment;
use cp_types::exec_env::LayerKind;
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db};
use crate::error::{StoreError, StoreResult};

/// One layer: an environment, the team or the agent, with what it contributes.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvLayer {
    pub kind: LayerKind,
    pub id: Uuid,
    pub name: String,
    pub execution_environment: ExecutionEnvironment,
}

#[derive(sqlx::FromRow)]
struct LayerRow {
    id: Uuid,
    name: String,
    execution_environment: Json<Value>,
}

impl LayerRow {
    fn into_layer(self, kind: LayerKind) -> StoreResult<EnvLayer> {
        let execution_environment = serde_json::from_value(self.execution_environment.0)
            .map_err(|e| StoreError::Corrupt(format!("execution_environment of {kind} {}: {e}", self.id)))?;
        Ok(EnvLayer {
            kind,
            id: self.id,
            name: self.name,
            execution_environment,
        })
    }
}

impl Store {
    /// The execution-environment layers of one organization's agents and teams.
    pub fn execution_environments<'a>(&'a self, org: &'a str) -> ExecutionEnvironments<'a> {
        ExecutionEnvironments { db: &self.db, org }
    }
}

/// The execution-environment layers of one organization's agents and teams.
pub struct ExecutionEnvironments<'a> {
    db: &'a Db,
    org: &'a str,
}

impl ExecutionEnvironments<'_> {
    /// The agent's environments in `position` order, then the agent itself; `NotFound` when
    /// the agent is not one of this organization's.
    pub async fn agent_layers(&self, agent_id: Uuid) -> StoreResult<Vec<EnvLayer>> {
        let own: LayerRow = with_db!(self.db, pool =>
            sqlx::query_as("SELECT id, name, execution_environment FROM agents WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(agent_id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        let envs: Vec<LayerRow> = with_db!(self.db, pool =>
            sqlx::query_as("SELECT e.id, e.name, e.execution_environment FROM agent_environments l \
                JOIN environments e ON e.id = l.environment_id AND e.organization_id = l.organization_id \
                WHERE l.organization_id = $1 AND l.agent_id = $2 ORDER BY l.position, e.id")
                .bind(self.org).bind(agent_id).fetch_all(pool).await)?;
        layers(envs, own, LayerKind::Agent)
    }

    /// The team's environments in `position` order, then the team itself; `NotFound` when the
    /// team is not one of this organization's.
    pub async fn team_layers(&self, team_id: Uuid) -> StoreResult<Vec<EnvLayer>> {
        let own: LayerRow = with_db!(self.db, pool =>
            sqlx::query_as("SELECT id, name, execution_environment FROM teams WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(team_id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        let envs: Vec<LayerRow> = with_db!(self.db, pool =>
            sqlx::query_as("SELECT e.id, e.name, e.execution_environment FROM team_environments l \
                JOIN environments e ON e.id = l.environment_id AND e.organization_id = l.organization_id \
                WHERE l.organization_id = $1 AND l.team_id = $2 ORDER BY l.position, e.id")
                .bind(self.org).bind(team_id).fetch_all(pool).await)?;
        layers(envs, own, LayerKind::Team)
    }
}

fn layers(envs: Vec<LayerRow>, own: LayerRow, kind: LayerKind) -> StoreResult<Vec<EnvLayer>> {
    let mut out = envs
        .into_iter()
        .map(|r| r.into_layer(LayerKind::Environment))
        .collect::<StoreResult<Vec<_>>>()?;
    out.push(own.into_layer(kind)?);
    Ok(out)
}
