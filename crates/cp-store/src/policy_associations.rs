//! Policy associations (a policy attached to the organization, a project, an environment, a
//! team or an agent) and the resolution of the policies that apply to an entity.

use std::collections::HashMap;

use cp_types::context::{ContextEntity, ContextEntityType, ContextLayer};
use cp_types::page::PageRequest;
use cp_types::policy::{
    CreatePolicyAssociation, PolicyAssociation, PolicySource, ResolvedPolicy, UpdatePolicyAssociation, default_priority,
};
use cp_types::{Page, Timestamp, now};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db, with_db_sql};
use crate::error::{StoreError, StoreResult, parse};
use crate::page::page_of;

macro_rules! association_columns {
    () => {
        "a.id, a.organization_id, a.policy_id, p.name AS policy_name, a.entity_type, a.entity_id, a.enabled, \
         a.priority, a.metadata, a.created_at, a.updated_at"
    };
}

/// The policy columns of a resolution row.
macro_rules! source_columns {
    () => {
        "p.id AS policy_id, p.name AS policy_name, p.package, p.version, p.policy_content"
    };
}

macro_rules! association_filter {
    () => {
        " WHERE a.organization_id = $1 AND ($2 IS NULL OR a.entity_type = $2) AND ($3 IS NULL OR a.entity_id = $3) \
         AND ($4 IS NULL OR a.policy_id = $4) AND ($5 IS NULL OR a.enabled = $5)"
    };
}

#[derive(sqlx::FromRow)]
struct AssociationRow {
    id: Uuid,
    organization_id: String,
    policy_id: Uuid,
    policy_name: String,
    entity_type: String,
    entity_id: String,
    enabled: bool,
    priority: i64,
    metadata: Json<Value>,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl AssociationRow {
    fn into_association(self) -> StoreResult<PolicyAssociation> {
        Ok(PolicyAssociation {
            id: self.id,
            organization_id: self.organization_id,
            policy_id: self.policy_id,
            policy_name: self.policy_name,
            entity_type: parse(&self.entity_type)?,
            entity_id: self.entity_id,
            enabled: self.enabled,
            priority: self.priority,
            metadata: self.metadata.0,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Filters of `GET /policies/associations`.
#[derive(Debug, Clone, Default)]
pub struct AssociationFilter {
    pub entity_type: Option<ContextEntityType>,
    pub entity_id: Option<String>,
    pub policy_id: Option<Uuid>,
    pub enabled: Option<bool>,
}

/// A policy that applies to an entity, with the content to compile it from.
#[derive(Debug, Clone)]
pub struct ApplicablePolicy {
    pub resolved: ResolvedPolicy,
    pub content: String,
}

impl Store {
    /// The policy associations of one organization.
    pub fn policy_associations<'a>(&'a self, org: &'a str) -> PolicyAssociations<'a> {
        PolicyAssociations { db: &self.db, org }
    }

    /// The enabled policies that apply to `entity`: those associated with any entity of its
    /// context chain (organization → projects → environments → teams → the entity) and those
    /// named by the `policy_ids` of the chain's contexts, plus both kinds for `environment`
    /// (the environment an execution runs in) when it is not in the chain already. Each policy
    /// appears once, from its highest-priority source; the list is by priority, highest first,
    /// then in chain order. `NotFound` when the entity is not one of the organization's.
    pub async fn applicable_policies(
        &self,
        org: &str,
        entity: &ContextEntity,
        environment: Option<Uuid>,
    ) -> StoreResult<Vec<ApplicablePolicy>> {
        let mut layers = self.contexts(org).resolve(entity).await?.layers;
        if let Some(env) = environment {
            let env_id = env.to_string();
            let in_chain = layers
                .iter()
                .any(|l| l.layer == ContextEntityType::Environment && l.entity_id == env_id);
            if !in_chain {
                let own = self.contexts(org).get(&ContextEntity::Environment(env)).await?;
                layers.push(ContextLayer {
                    layer: ContextEntityType::Environment,
                    entity_id: env_id,
                    knowledge_uuids: Vec::new(),
                    resource_ids: Vec::new(),
                    policy_ids: own.policy_ids,
                    variables: Default::default(),
                });
            }
        }
        let entity_ids: Vec<&str> = layers.iter().map(|l| l.entity_id.as_str()).collect();
        let associated: Vec<SourceRow> = with_db_sql!(&self.db, pool, sql = (
            concat!("SELECT a.id AS association_id, a.entity_type, a.entity_id, a.priority, ", source_columns!(),
                " FROM policy_associations a JOIN policies p ON p.id = a.policy_id WHERE a.organization_id = $1 \
                AND a.enabled AND p.enabled AND a.entity_id IN (SELECT value FROM json_each($2))"),
            concat!("SELECT a.id AS association_id, a.entity_type, a.entity_id, a.priority, ", source_columns!(),
                " FROM policy_associations a JOIN policies p ON p.id = a.policy_id WHERE a.organization_id = $1 \
                AND a.enabled AND p.enabled AND a.entity_id IN (SELECT jsonb_array_elements_text($2))")
        ) => sqlx::query_as(sql).bind(org).bind(Json(&entity_ids)).fetch_all(pool).await)?;

        // Context entries name a policy by id or by name.
        let (mut by_id, mut by_name) = (Vec::new(), Vec::new());
        for id in layers.iter().flat_map(|l| &l.policy_ids) {
            match Uuid::parse_str(id) {
                Ok(u) => by_id.push(u.simple().to_string()),
                Err(_) => by_name.push(id.as_str()),
            }
        }
        let named: Vec<SourceRow> = if by_id.is_empty() && by_name.is_empty() {
            Vec::new()
        } else {
            with_db_sql!(&self.db, pool, sql = (
                concat!("SELECT NULL AS association_id, NULL AS entity_type, NULL AS entity_id, NULL AS priority, ",
                    source_columns!(), " FROM policies p WHERE p.organization_id = $1 AND p.enabled \
                    AND (lower(hex(p.id)) IN (SELECT value FROM json_each($2)) OR p.name IN (SELECT value FROM json_each($3)))"),
                concat!("SELECT CAST(NULL AS UUID) AS association_id, CAST(NULL AS TEXT) AS entity_type, \
                    CAST(NULL AS TEXT) AS entity_id, CAST(NULL AS BIGINT) AS priority, ", source_columns!(),
                    " FROM policies p WHERE p.organization_id = $1 AND p.enabled \
                    AND (replace(p.id::text, '-', '') IN (SELECT jsonb_array_elements_text($2)) \
                         OR p.name IN (SELECT jsonb_array_elements_text($3)))")
            ) => sqlx::query_as(sql).bind(org).bind(Json(&by_id)).bind(Json(&by_name)).fetch_all(pool).await)?
        };
        Ok(merge_sources(&layers, associated, named))
    }
}

/// A way a policy reaches an entity: through an association (the `a.` columns are set) or
/// through a context's `policy_ids` (they are NULL).
#[derive(sqlx::FromRow)]
struct SourceRow {
    association_id: Option<Uuid>,
    entity_type: Option<String>,
    entity_id: Option<String>,
    priority: Option<i64>,
    policy_id: Uuid,
    policy_name: String,
    package: String,
    version: i64,
    policy_content: String,
}

/// One policy per id, from its highest-priority source (the earlier layer on a tie), sorted
/// by priority, highest first, then by chain order.
fn merge_sources(layers: &[ContextLayer], associated: Vec<SourceRow>, named: Vec<SourceRow>) -> Vec<ApplicablePolicy> {
    // (priority, position in the chain) decides between two sources of one policy.
    let mut best: HashMap<Uuid, (i64, usize, ApplicablePolicy)> = HashMap::new();
    let mut offer = |rank: (i64, usize), row: &SourceRow, source, layer: &ContextLayer, association_id| {
        let better = best
            .get(&row.policy_id)
            .is_none_or(|(p, pos, _)| rank.0 > *p || (rank.0 == *p && rank.1 < *pos));
        if better {
            let resolved = ResolvedPolicy {
                policy_id: row.policy_id,
                policy_name: row.policy_name.clone(),
                package: row.package.clone(),
                version: row.version,
                source,
                source_type: layer.layer,
                source_id: layer.entity_id.clone(),
                association_id,
                priority: rank.0,
            };
            let content = row.policy_content.clone();
            best.insert(row.policy_id, (rank.0, rank.1, ApplicablePolicy { resolved, content }));
        }
    };
    for (pos, layer) in layers.iter().enumerate() {
        for row in &associated {
            if row.entity_id.as_deref() == Some(layer.entity_id.as_str())
                && row.entity_type.as_deref() == Some(layer.layer.as_str())
            {
                let rank = (row.priority.unwrap_or_default(), pos);
                offer(rank, row, PolicySource::Association, layer, row.association_id);
            }
        }
        for id in &layer.policy_ids {
            let by_id = Uuid::parse_str(id).ok();
            for row in named
                .iter()
                .filter(|r| Some(r.policy_id) == by_id || r.policy_name == *id)
            {
                offer(
                    (default_priority(layer.layer), pos),
                    row,
                    PolicySource::Context,
                    layer,
                    None,
                );
            }
        }
    }
    let mut out: Vec<_> = best.into_values().collect();
    out.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.resolved.policy_name.cmp(&b.2.resolved.policy_name))
    });
    out.into_iter().map(|(_, _, p)| p).collect()
}

/// The policy associations of one organization.
pub struct PolicyAssociations<'a> {
    db: &'a Db,
    org: &'a str,
}

fn conflict(e: sqlx::Error) -> StoreError {
    StoreError::unique(e, "policy association", &["policy_id"])
}

impl PolicyAssociations<'_> {
    /// Associations, newest first.
    pub async fn list(&self, filter: &AssociationFilter, page: PageRequest) -> StoreResult<Page<PolicyAssociation>> {
        let kind = filter.entity_type.map(|k| k.as_str());
        let rows: Vec<AssociationRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", association_columns!(), " FROM policy_associations a \
                JOIN policies p ON p.id = a.policy_id", association_filter!(), " ORDER BY a.id DESC LIMIT $6 OFFSET $7"))
                .bind(self.org).bind(kind).bind(&filter.entity_id).bind(filter.policy_id).bind(filter.enabled)
                .bind(page.limit).bind(page.offset).fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar(concat!("SELECT COUNT(*) FROM policy_associations a", association_filter!()))
                    .bind(self.org).bind(kind).bind(&filter.entity_id).bind(filter.policy_id).bind(filter.enabled)
                    .fetch_one(pool).await)?)
        };
        page_of(rows, page, count, AssociationRow::into_association).await
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<PolicyAssociation> {
        let row: AssociationRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", association_columns!(), " FROM policy_associations a \
                JOIN policies p ON p.id = a.policy_id WHERE a.organization_id = $1 AND a.id = $2"))
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_association()
    }

    /// Attaches a policy to `entity`. The insert happens only when both the policy and the
    /// entity are the organization's; otherwise a `Reference` error names the missing one.
    pub async fn create(
        &self,
        req: &CreatePolicyAssociation,
        entity: &ContextEntity,
    ) -> StoreResult<PolicyAssociation> {
        let id = Uuid::now_v7();
        let at = now();
        let column = |kind| (entity.kind() == kind).then(|| entity.uuid()).flatten();
        let inserted = with_db!(self.db, pool =>
            sqlx::query(
                "INSERT INTO policy_associations (id, organization_id, policy_id, entity_type, entity_id, project_id, \
                   environment_id, team_id, agent_id, enabled, priority, metadata, created_at, updated_at) \
                 SELECT $1, p.organization_id, p.id, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12 FROM policies p \
                 WHERE p.organization_id = $13 AND p.id = $2 AND ( \
                   ($3 = 'organization' AND $4 = $13) \
                   OR EXISTS (SELECT 1 FROM projects e WHERE e.organization_id = $13 AND e.id = $5) \
                   OR EXISTS (SELECT 1 FROM environments e WHERE e.organization_id = $13 AND e.id = $6) \
                   OR EXISTS (SELECT 1 FROM teams e WHERE e.organization_id = $13 AND e.id = $7) \
                   OR EXISTS (SELECT 1 FROM agents e WHERE e.organization_id = $13 AND e.id = $8))")
                .bind(id).bind(req.policy_id).bind(entity.kind().as_str()).bind(entity.id())
                .bind(column(ContextEntityType::Project)).bind(column(ContextEntityType::Environment))
                .bind(column(ContextEntityType::Team)).bind(column(ContextEntityType::Agent))
                .bind(req.enabled.unwrap_or(true))
                .bind(req.priority.unwrap_or_else(|| default_priority(entity.kind())))
                .bind(Json(req.metadata.clone().unwrap_or_else(|| Value::Object(Default::default()))))
                .bind(at).bind(self.org)
                .execute(pool).await.map(|r| r.rows_affected()))
        .map_err(conflict)?;
        if inserted == 0 {
            let policy: Option<Uuid> = with_db!(self.db, pool =>
                sqlx::query_scalar("SELECT id FROM policies WHERE organization_id = $1 AND id = $2")
                    .bind(self.org).bind(req.policy_id).fetch_optional(pool).await)?;
            return Err(match policy {
                None => StoreError::reference("policy_id", "no such policy"),
                Some(_) => StoreError::reference("entity_id", format!("no such {}", entity.kind())),
            });
        }
        self.get(id).await
    }

    pub async fn update(&self, id: Uuid, req: &UpdatePolicyAssociation) -> StoreResult<PolicyAssociation> {
        let updated = with_db!(self.db, pool =>
            sqlx::query(
                "UPDATE policy_associations SET enabled = COALESCE($3, enabled), priority = COALESCE($4, priority), \
                   metadata = COALESCE($5, metadata), updated_at = $6 WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).bind(req.enabled).bind(req.priority)
                .bind(req.metadata.clone().map(Json)).bind(now())
                .execute(pool).await.map(|r| r.rows_affected()))?;
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        self.get(id).await
    }

    pub async fn delete(&self, id: Uuid) -> StoreResult<()> {
        let deleted = with_db!(self.db, pool =>
            sqlx::query("DELETE FROM policy_associations WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
