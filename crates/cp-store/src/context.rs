//! Context of organizations, projects, environments, teams and agents, and its resolution.
//!
//! Every statement binds `$1` = the organization and `$2` = the entity's UUID (NULL for the
//! organization itself), so one code path serves all five kinds; only the SQL text differs.

use std::collections::HashSet;

use cp_types::context::{Context, ContextEntity, ContextEntityType, ContextLayer, ResolvedContext, UpdateContext};
use cp_types::{Timestamp, now};
use serde_json::{Map, Value};
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db};
use crate::error::{StoreError, StoreResult, parse};

/// The stored lists and variables of `contexts c` (NULL when nothing is stored).
macro_rules! ctx_columns {
    () => {
        "c.knowledge_uuids, c.resource_ids, c.policy_ids, c.variables"
    };
}

/// The context row of one entity, or an empty one when the entity has none yet.
macro_rules! get_sql {
    ($entity:literal, $col:literal) => {
        concat!(
            "SELECT c.id, ",
            ctx_columns!(),
            ", c.created_at, c.updated_at FROM ",
            $entity,
            " e LEFT JOIN contexts c ON c.",
            $col,
            " = e.id AND c.organization_id = $1 WHERE e.organization_id = $1 AND e.id = $2"
        )
    };
}

/// The partial update as one upsert: the row is inserted only when the entity exists in the
/// organization (the `SELECT` finds it), a given list replaces the stored one, and an absent
/// one (`NULL`) keeps it.
macro_rules! put_sql {
    ($entity:literal, $col:literal, $kind:literal) => {
        concat!(
            "INSERT INTO contexts (id, organization_id, entity_type, ",
            $col,
            ", knowledge_uuids, resource_ids, policy_ids, variables, created_at, updated_at) \
             SELECT $3, e.organization_id, '",
            $kind,
            "', e.id, COALESCE($4, '[]'), COALESCE($5, '[]'), COALESCE($6, '[]'), COALESCE($7, '{}'), $8, $8 \
             FROM ",
            $entity,
            " e WHERE e.organization_id = $1 AND e.id = $2 ON CONFLICT (",
            $col,
            ") DO UPDATE SET ",
            upsert_set!()
        )
    };
}

macro_rules! upsert_set {
    () => {
        "knowledge_uuids = COALESCE($4, contexts.knowledge_uuids), \
         resource_ids = COALESCE($5, contexts.resource_ids), \
         policy_ids = COALESCE($6, contexts.policy_ids), \
         variables = COALESCE($7, contexts.variables), \
         updated_at = $8 \
         RETURNING id, knowledge_uuids, resource_ids, policy_ids, variables, created_at, updated_at"
    };
}

macro_rules! delete_sql {
    ($col:literal) => {
        concat!("DELETE FROM contexts WHERE organization_id = $1 AND ", $col, " = $2")
    };
}

/// The organization's layer, first in every chain. Its NULL sort and id columns are typed so
/// PostgreSQL can match them with the other branches of the `UNION ALL`.
macro_rules! org_layer {
    () => {
        concat!(
            "SELECT 0 AS ord, CAST(NULL AS TIMESTAMPTZ) AS k_time, CAST(NULL AS UUID) AS k_uuid, 0 AS k_pos, \
             'organization' AS kind, CAST(NULL AS UUID) AS entity_uuid, ",
            ctx_columns!(),
            " FROM organizations o LEFT JOIN contexts c \
             ON c.organization_id = o.id AND c.entity_type = 'organization' WHERE o.id = $1"
        )
    };
}

/// One branch of a chain: layer `$kind` for each entity `$id` of `$from` matching `$filter`,
/// with its stored context (joined on `contexts.$col`). Rows sort by `ord`, then `k_time`,
/// `k_uuid` and `k_pos` (e.g. when the agent joined the team, the team, then the environment's
/// position in it): the order in which agents and teams list their links. A plain `NULL` sort
/// key is fine here: the organization's branch, always first, gives the columns their types.
macro_rules! layer {
    ($ord:literal, $kind:literal $id:literal on $col:literal,
     sort $k_time:literal $k_uuid:literal $k_pos:literal, from $from:literal where $filter:literal) => {
        concat!(
            " UNION ALL SELECT ",
            $ord,
            ", ",
            $k_time,
            ", ",
            $k_uuid,
            ", ",
            $k_pos,
            ", '",
            $kind,
            "', ",
            $id,
            ", ",
            ctx_columns!(),
            " FROM ",
            $from,
            " LEFT JOIN contexts c ON c.",
            $col,
            " = ",
            $id,
            " AND c.organization_id = $1 WHERE ",
            $filter
        )
    };
}

/// Agent: organization → its projects (oldest membership first) → its environments (by
/// position) → its teams' environments (team by team, by position) → its teams (oldest
/// membership first) → the agent. Duplicates are dropped in Rust, keeping the first place.
const RESOLVE_AGENT: &str = concat!(
    org_layer!(),
    layer!("1", "project" "pa.project_id" on "project_id", sort "pa.added_at" "pa.id" "0",
        from "project_agents pa" where "pa.organization_id = $1 AND pa.agent_id = $2"),
    layer!("2", "environment" "ae.environment_id" on "environment_id", sort "NULL" "ae.agent_id" "ae.position",
        from "agent_environments ae" where "ae.organization_id = $1 AND ae.agent_id = $2"),
    layer!("3", "environment" "te.environment_id" on "environment_id", sort "tm.added_at" "tm.team_id" "te.position",
        from "team_members tm JOIN team_environments te ON te.team_id = tm.team_id"
        where "tm.organization_id = $1 AND tm.agent_id = $2"),
    layer!("4", "team" "tm.team_id" on "team_id", sort "tm.added_at" "tm.team_id" "0",
        from "team_members tm" where "tm.organization_id = $1 AND tm.agent_id = $2"),
    layer!("5", "agent" "a.id" on "agent_id", sort "NULL" "a.id" "0",
        from "agents a" where "a.organization_id = $1 AND a.id = $2"),
    " ORDER BY ord, k_time, k_uuid, k_pos"
);

/// Team: organization → its projects (oldest membership first) → its environments (by
/// position) → the team.
const RESOLVE_TEAM: &str = concat!(
    org_layer!(),
    layer!("1", "project" "pt.project_id" on "project_id", sort "pt.added_at" "pt.id" "0",
        from "project_teams pt" where "pt.organization_id = $1 AND pt.team_id = $2"),
    layer!("2", "environment" "te.environment_id" on "environment_id", sort "NULL" "te.team_id" "te.position",
        from "team_environments te" where "te.organization_id = $1 AND te.team_id = $2"),
    layer!("4", "team" "t.id" on "team_id", sort "NULL" "t.id" "0",
        from "teams t" where "t.organization_id = $1 AND t.id = $2"),
    " ORDER BY ord, k_time, k_uuid, k_pos"
);

const RESOLVE_ENVIRONMENT: &str = concat!(
    org_layer!(),
    layer!("2", "environment" "e.id" on "environment_id", sort "NULL" "e.id" "0",
        from "environments e" where "e.organization_id = $1 AND e.id = $2"),
    " ORDER BY ord, k_time, k_uuid, k_pos"
);

const RESOLVE_PROJECT: &str = concat!(
    org_layer!(),
    layer!("1", "project" "p.id" on "project_id", sort "NULL" "p.id" "0",
        from "projects p" where "p.organization_id = $1 AND p.id = $2"),
    " ORDER BY ord, k_time, k_uuid, k_pos"
);

/// The statements of one entity kind; table and column names cannot be bound.
struct KindSql {
    get: &'static str,
    put: &'static str,
    delete: &'static str,
}

const PROJECT: KindSql = KindSql {
    get: get_sql!("projects", "project_id"),
    put: put_sql!("projects", "project_id", "project"),
    delete: delete_sql!("project_id"),
};
const ENVIRONMENT: KindSql = KindSql {
    get: get_sql!("environments", "environment_id"),
    put: put_sql!("environments", "environment_id", "environment"),
    delete: delete_sql!("environment_id"),
};
const TEAM: KindSql = KindSql {
    get: get_sql!("teams", "team_id"),
    put: put_sql!("teams", "team_id", "team"),
    delete: delete_sql!("team_id"),
};
const AGENT: KindSql = KindSql {
    get: get_sql!("agents", "agent_id"),
    put: put_sql!("agents", "agent_id", "agent"),
    delete: delete_sql!("agent_id"),
};
/// The organization's row sets no entity column; `$2` is NULL and only keeps the binds uniform.
const ORGANIZATION: KindSql = KindSql {
    get: concat!(
        "SELECT c.id, ",
        ctx_columns!(),
        ", c.created_at, c.updated_at FROM organizations e LEFT JOIN contexts c \
         ON c.organization_id = e.id AND c.entity_type = 'organization' WHERE e.id = $1 AND $2 IS NULL"
    ),
    put: concat!(
        "INSERT INTO contexts (id, organization_id, entity_type, knowledge_uuids, resource_ids, policy_ids, \
           variables, created_at, updated_at) \
         SELECT $3, e.id, 'organization', COALESCE($4, '[]'), COALESCE($5, '[]'), COALESCE($6, '[]'), \
           COALESCE($7, '{}'), $8, $8 \
         FROM organizations e WHERE e.id = $1 AND $2 IS NULL \
         ON CONFLICT (organization_id) WHERE entity_type = 'organization' DO UPDATE SET ",
        upsert_set!()
    ),
    delete: "DELETE FROM contexts WHERE organization_id = $1 AND entity_type = 'organization' AND $2 IS NULL",
};

fn kind_sql(kind: ContextEntityType) -> &'static KindSql {
    match kind {
        ContextEntityType::Organization => &ORGANIZATION,
        ContextEntityType::Project => &PROJECT,
        ContextEntityType::Environment => &ENVIRONMENT,
        ContextEntityType::Team => &TEAM,
        ContextEntityType::Agent => &AGENT,
    }
}

/// A stored context row; every column is NULL when the entity exists but has none.
#[derive(sqlx::FromRow)]
struct ContextRow {
    id: Option<Uuid>,
    knowledge_uuids: Option<Json<Vec<String>>>,
    resource_ids: Option<Json<Vec<String>>>,
    policy_ids: Option<Json<Vec<String>>>,
    variables: Option<Json<Map<String, Value>>>,
    created_at: Option<Timestamp>,
    updated_at: Option<Timestamp>,
}

impl ContextRow {
    fn into_context(self, org: &str, entity: &ContextEntity) -> Context {
        Context {
            id: self.id,
            entity_type: entity.kind(),
            entity_id: entity.id(),
            organization_id: org.to_string(),
            knowledge_uuids: self.knowledge_uuids.map(|j| j.0).unwrap_or_default(),
            resource_ids: self.resource_ids.map(|j| j.0).unwrap_or_default(),
            policy_ids: self.policy_ids.map(|j| j.0).unwrap_or_default(),
            variables: self.variables.map(|j| j.0).unwrap_or_default(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// One entity of a resolution chain with its stored context, if any.
#[derive(sqlx::FromRow)]
struct LayerRow {
    kind: String,
    entity_uuid: Option<Uuid>,
    knowledge_uuids: Option<Json<Vec<String>>>,
    resource_ids: Option<Json<Vec<String>>>,
    policy_ids: Option<Json<Vec<String>>>,
    variables: Option<Json<Map<String, Value>>>,
}

impl Store {
    /// The context of one organization's entities.
    pub fn contexts<'a>(&'a self, org: &'a str) -> Contexts<'a> {
        Contexts { db: &self.db, org }
    }
}

/// The context of one organization's entities.
pub struct Contexts<'a> {
    db: &'a Db,
    org: &'a str,
}

impl Contexts<'_> {
    /// Another organization's slug is as unknown as a missing entity.
    fn check_org(&self, entity: &ContextEntity) -> StoreResult<()> {
        match entity {
            ContextEntity::Organization(slug) if slug != self.org => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    /// The stored context (empty when nothing is stored); `NotFound` when the entity is not
    /// one of this organization's.
    pub async fn get(&self, entity: &ContextEntity) -> StoreResult<Context> {
        self.check_org(entity)?;
        let sql = kind_sql(entity.kind()).get;
        let row: Option<ContextRow> = with_db!(self.db, pool =>
            sqlx::query_as(sql).bind(self.org).bind(entity.uuid()).fetch_optional(pool).await)?;
        Ok(row.ok_or(StoreError::NotFound)?.into_context(self.org, entity))
    }

    /// Stores the given fields, keeping the others, in one statement.
    pub async fn update(&self, entity: &ContextEntity, req: &UpdateContext) -> StoreResult<Context> {
        self.check_org(entity)?;
        let sql = kind_sql(entity.kind()).put;
        let row: Option<ContextRow> = with_db!(self.db, pool =>
            sqlx::query_as(sql)
                .bind(self.org)
                .bind(entity.uuid())
                .bind(Uuid::now_v7())
                .bind(req.knowledge_uuids.as_ref().map(Json))
                .bind(req.resource_ids.as_ref().map(Json))
                .bind(req.policy_ids.as_ref().map(Json))
                .bind(req.variables.as_ref().map(Json))
                .bind(now())
                .fetch_optional(pool).await)?;
        Ok(row.ok_or(StoreError::NotFound)?.into_context(self.org, entity))
    }

    /// Removes what is stored for the entity (nothing stored is fine); `NotFound` when the
    /// entity is not one of this organization's.
    pub async fn delete(&self, entity: &ContextEntity) -> StoreResult<()> {
        self.check_org(entity)?;
        let sql = kind_sql(entity.kind()).delete;
        let deleted = with_db!(self.db, pool =>
            sqlx::query(sql).bind(self.org).bind(entity.uuid()).execute(pool).await.map(|r| r.rows_affected()))?;
        if deleted == 0 {
            // Nothing was stored: tell an existing entity from an unknown one.
            self.get(entity).await?;
        }
        Ok(())
    }

    /// The entity's name (the organization's display name); `NotFound` when it is not one of
    /// this organization's.
    pub async fn entity_name(&self, entity: &ContextEntity) -> StoreResult<String> {
        self.check_org(entity)?;
        let sql = match entity.kind() {
            ContextEntityType::Organization => "SELECT name FROM organizations WHERE id = $1 AND $2 IS NULL",
            ContextEntityType::Project => "SELECT name FROM projects WHERE organization_id = $1 AND id = $2",
            ContextEntityType::Environment => "SELECT name FROM environments WHERE organization_id = $1 AND id = $2",
            ContextEntityType::Team => "SELECT name FROM teams WHERE organization_id = $1 AND id = $2",
            ContextEntityType::Agent => "SELECT name FROM agents WHERE organization_id = $1 AND id = $2",
        };
        let name: Option<String> = with_db!(self.db, pool =>
            sqlx::query_scalar(sql).bind(self.org).bind(entity.uuid()).fetch_optional(pool).await)?;
        name.ok_or(StoreError::NotFound)
    }

    /// The entity with this id among the organization's agents, teams, environments and
    /// projects, in that order (API §10, entity inference); `NotFound` when none has it.
    pub async fn infer(&self, id: &str) -> StoreResult<ContextEntity> {
        let uuid = Uuid::parse_str(id).map_err(|_| StoreError::NotFound)?;
        let kind: Option<String> = with_db!(self.db, pool =>
            sqlx::query_scalar(
                "SELECT kind FROM (\
                   SELECT 1 AS ord, 'agent' AS kind FROM agents WHERE organization_id = $1 AND id = $2 \
                   UNION ALL SELECT 2, 'team' FROM teams WHERE organization_id = $1 AND id = $2 \
                   UNION ALL SELECT 3, 'environment' FROM environments WHERE organization_id = $1 AND id = $2 \
                   UNION ALL SELECT 4, 'project' FROM projects WHERE organization_id = $1 AND id = $2) found \
                 ORDER BY ord LIMIT 1")
                .bind(self.org).bind(uuid).fetch_optional(pool).await)?;
        let kind: ContextEntityType = parse(&kind.ok_or(StoreError::NotFound)?)?;
        ContextEntity::parse(kind, id).map_err(StoreError::Corrupt)
    }

    /// The context that applies to `entity`: every layer of its chain (organization →
    /// projects → environments → teams → the entity), stored or empty, and their merge.
    /// One query, whatever the length of the chain.
    pub async fn resolve(&self, entity: &ContextEntity) -> StoreResult<ResolvedContext> {
        self.check_org(entity)?;
        let sql = match entity.kind() {
            ContextEntityType::Organization => {
                let own = self.get(entity).await?;
                let layer = ContextLayer {
                    layer: ContextEntityType::Organization,
                    entity_id: own.entity_id,
                    knowledge_uuids: own.knowledge_uuids,
                    resource_ids: own.resource_ids,
                    policy_ids: own.policy_ids,
                    variables: own.variables,
                };
                return Ok(ResolvedContext::merge(entity, vec![layer]));
            }
            ContextEntityType::Project => RESOLVE_PROJECT,
            ContextEntityType::Environment => RESOLVE_ENVIRONMENT,
            ContextEntityType::Team => RESOLVE_TEAM,
            ContextEntityType::Agent => RESOLVE_AGENT,
        };
        let rows: Vec<LayerRow> = with_db!(self.db, pool =>
            sqlx::query_as(sql).bind(self.org).bind(entity.uuid()).fetch_all(pool).await)?;
        // The organization's layer comes back even for an unknown entity; the entity's own
        // layer is what proves it exists here.
        let found = rows
            .iter()
            .any(|r| r.kind == entity.kind().as_str() && r.entity_uuid == entity.uuid());
        if !found {
            return Err(StoreError::NotFound);
        }
        let mut seen = HashSet::new();
        let mut layers = Vec::with_capacity(rows.len());
        for row in rows {
            // An environment shared by the agent and one of its teams, or by two teams, is
            // one layer, at its first place.
            if !seen.insert((row.kind.clone(), row.entity_uuid)) {
                continue;
            }
            let kind: ContextEntityType = parse(&row.kind)?;
            layers.push(ContextLayer {
                layer: kind,
                entity_id: match row.entity_uuid {
                    Some(id) => id.to_string(),
                    None => self.org.to_string(),
                },
                knowledge_uuids: row.knowledge_uuids.map(|j| j.0).unwrap_or_default(),
                resource_ids: row.resource_ids.map(|j| j.0).unwrap_or_default(),
                policy_ids: row.policy_ids.map(|j| j.0).unwrap_or_default(),
                variables: row.variables.map(|j| j.0).unwrap_or_default(),
            });
        }
        Ok(ResolvedContext::merge(entity, layers))
    }
}
