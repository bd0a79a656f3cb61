//! Skills, their associations with agents, teams and environments, and the resolution of the
//! skills an agent or team inherits.

use cp_types::page::PageRequest;
use cp_types::skill::{
    AssociatedSkill, CreateSkill, EntityRef, ResolvedSkill, Skill, SkillAssociation, SkillEntityType, SkillLayer,
    SkillType, UpdateSkill, default_icon, merge_configuration, resolve_layers,
};
use cp_types::{Page, Timestamp, now};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db};
use crate::error::{StoreError, StoreResult, parse};
use crate::page::page_of;

macro_rules! skill_columns {
    () => {
        "id, organization_id, name, skill_type, description, icon, enabled, configuration, created_at, updated_at"
    };
}

#[derive(sqlx::FromRow)]
struct SkillRow {
    id: Uuid,
    organization_id: String,
    name: String,
    skill_type: String,
    description: Option<String>,
    icon: Option<String>,
    enabled: bool,
    configuration: Json<Value>,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl SkillRow {
    fn into_skill(self) -> StoreResult<Skill> {
        Ok(Skill {
            id: self.id,
            organization_id: self.organization_id,
            name: self.name,
            skill_type: parse(&self.skill_type)?,
            description: self.description,
            icon: self.icon,
            enabled: self.enabled,
            configuration: self.configuration.0,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct AssociatedRow {
    id: Uuid,
    association_id: Uuid,
    name: String,
    skill_type: String,
    description: Option<String>,
    icon: Option<String>,
    enabled: bool,
    configuration: Json<Value>,
    configuration_override: Option<Json<Value>>,
    associated_at: Timestamp,
}

impl AssociatedRow {
    fn into_associated(self) -> StoreResult<AssociatedSkill> {
        let configuration_override = self.configuration_override.map(|o| o.0);
        Ok(AssociatedSkill {
            id: self.id,
            association_id: self.association_id,
            name: self.name,
            skill_type: parse(&self.skill_type)?,
            description: self.description,
            icon: self.icon,
            enabled: self.enabled,
            configuration: merge_configuration(&self.configuration.0, configuration_override.as_ref()),
            configuration_override,
            associated_at: self.associated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct LayerRow {
    skill_id: Uuid,
    name: String,
    skill_type: String,
    description: Option<String>,
    icon: Option<String>,
    enabled: bool,
    configuration: Json<Value>,
    configuration_override: Option<Json<Value>>,
    source: String,
    source_id: Uuid,
}

impl LayerRow {
    fn into_layer(self) -> StoreResult<SkillLayer> {
        Ok(SkillLayer {
            skill_id: self.skill_id,
            name: self.name,
            skill_type: parse(&self.skill_type)?,
            description: self.description,
            icon: self.icon,
            enabled: self.enabled,
            configuration: self.configuration.0,
            configuration_override: self.configuration_override.map(|o| o.0),
            source: parse(&self.source)?,
            source_id: self.source_id,
        })
    }
}

/// The statements for associations of one kind of entity; column and table names cannot be bound.
struct EntitySql {
    exists: &'static str,
    insert: &'static str,
    insert_missing: &'static str,
    list: &'static str,
    count: &'static str,
    delete: &'static str,
    resolve: &'static str,
}

// The insert selects the skill and the entity under the organization, so an association can
// only join rows of one organization even if either is deleted or moved concurrently.
macro_rules! insert_association {
    ($table:literal, $col:literal) => {
        concat!(
            "INSERT INTO skill_associations (id, organization_id, skill_id, ",
            $col,
            ", configuration_override, created_at) SELECT $1, $2, s.id, e.id, $5, $6 FROM skills s JOIN ",
            $table,
            " e ON e.organization_id = s.organization_id WHERE s.organization_id = $2 AND s.id = $3 AND e.id = $4"
        )
    };
}

macro_rules! entity_sql {
    ($table:literal, $col:literal, $resolve:expr) => {
        EntitySql {
            exists: concat!(
                "SELECT COUNT(*) FROM ",
                $table,
                " WHERE organization_id = $1 AND id = $2"
            ),
            insert: insert_association!($table, $col),
            insert_missing: concat!(insert_association!($table, $col), " ON CONFLICT DO NOTHING"),
            list: concat!(
                "SELECT s.id, sa.id AS association_id, s.name, s.skill_type, s.description, s.icon, s.enabled, \
                 s.configuration, sa.configuration_override, sa.created_at AS associated_at \
                 FROM skill_associations sa JOIN skills s ON s.id = sa.skill_id \
                 WHERE sa.organization_id = $1 AND sa.",
                $col,
                " = $2 ORDER BY sa.id DESC LIMIT $3 OFFSET $4"
            ),
            count: concat!(
                "SELECT COUNT(*) FROM skill_associations WHERE organization_id = $1 AND ",
                $col,
                " = $2"
            ),
            delete: concat!(
                "DELETE FROM skill_associations WHERE organization_id = $1 AND ",
                $col,
                " = $2 AND skill_id = $3 RETURNING id"
            ),
            resolve: $resolve,
        }
    };
}

/// The skill columns of a resolution, over a `layers` CTE ordered by its rank columns.
macro_rules! resolve_select {
    ($layers:expr) => {
        concat!(
            "WITH layers AS (",
            $layers,
            ") SELECT s.id AS skill_id, s.name, s.skill_type, s.description, s.icon, s.enabled, s.configuration, \
             l.configuration_override, l.source, l.source_id \
             FROM layers l JOIN skills s ON s.id = l.skill_id \
             WHERE s.organization_id = $1 AND s.enabled \
             ORDER BY l.r1, l.r2, l.r3, l.r4, l.association_id"
        )
    };
}

// Layers of an agent, earliest first: its environments (by position); then for each of its teams
// (in team id order) that team's environments and the team itself; then the agent.
const RESOLVE_AGENT: &str = resolve_select!(
    "SELECT sa.id AS association_id, sa.skill_id, sa.configuration_override, 'environment' AS source, \
       ae.environment_id AS source_id, 0 AS r1, ae.agent_id AS r2, 0 AS r3, ae.position AS r4 \
     FROM agent_environments ae JOIN skill_associations sa ON sa.environment_id = ae.environment_id \
     WHERE ae.organization_id = $1 AND ae.agent_id = $2 AND sa.organization_id = $1 \
     UNION ALL \
     SELECT sa.id, sa.skill_id, sa.configuration_override, 'environment', te.environment_id, 1, tm.team_id, 0, \
       te.position \
     FROM team_members tm JOIN team_environments te ON te.team_id = tm.team_id \
       JOIN skill_associations sa ON sa.environment_id = te.environment_id \
     WHERE tm.organization_id = $1 AND tm.agent_id = $2 AND sa.organization_id = $1 \
     UNION ALL \
     SELECT sa.id, sa.skill_id, sa.configuration_override, 'team', tm.team_id, 1, tm.team_id, 1, 0 \
     FROM team_members tm JOIN skill_associations sa ON sa.team_id = tm.team_id \
     WHERE tm.organization_id = $1 AND tm.agent_id = $2 AND sa.organization_id = $1 \
     UNION ALL \
     SELECT sa.id, sa.skill_id, sa.configuration_override, 'agent', sa.agent_id, 2, sa.agent_id, 0, 0 \
     FROM skill_associations sa WHERE sa.organization_id = $1 AND sa.agent_id = $2"
);

// Layers of a team: its environments (by position), then the team.
const RESOLVE_TEAM: &str = resolve_select!(
    "SELECT sa.id AS association_id, sa.skill_id, sa.configuration_override, 'environment' AS source, \
       te.environment_id AS source_id, 0 AS r1, te.team_id AS r2, 0 AS r3, te.position AS r4 \
     FROM team_environments te JOIN skill_associations sa ON sa.environment_id = te.environment_id \
     WHERE te.organization_id = $1 AND te.team_id = $2 AND sa.organization_id = $1 \
     UNION ALL \
     SELECT sa.id, sa.skill_id, sa.configuration_override, 'team', sa.team_id, 1, sa.team_id, 0, 0 \
     FROM skill_associations sa WHERE sa.organization_id = $1 AND sa.team_id = $2"
);

// An environment has one layer: itself.
const RESOLVE_ENVIRONMENT: &str = resolve_select!(
    "SELECT sa.id AS association_id, sa.skill_id, sa.configuration_override, 'environment' AS source, \
       sa.environment_id AS source_id, 0 AS r1, sa.environment_id AS r2, 0 AS r3, 0 AS r4 \
     FROM skill_associations sa WHERE sa.organization_id = $1 AND sa.environment_id = $2"
);

const AGENT_SQL: EntitySql = entity_sql!("agents", "agent_id", RESOLVE_AGENT);
const TEAM_SQL: EntitySql = entity_sql!("teams", "team_id", RESOLVE_TEAM);
const ENVIRONMENT_SQL: EntitySql = entity_sql!("environments", "environment_id", RESOLVE_ENVIRONMENT);

fn entity_sql(kind: SkillEntityType) -> &'static EntitySql {
    match kind {
        SkillEntityType::Agent => &AGENT_SQL,
        SkillEntityType::Team => &TEAM_SQL,
        SkillEntityType::Environment => &ENVIRONMENT_SQL,
    }
}

// Agents, teams, environments, then projects: the order of API §10 "Entity inference".
const FIND_ENTITY: &str = "SELECT kind FROM (\
     SELECT 'agent' AS kind, 1 AS ord FROM agents WHERE organization_id = $1 AND id = $2 \
     UNION ALL SELECT 'team', 2 FROM teams WHERE organization_id = $1 AND id = $2 \
     UNION ALL SELECT 'environment', 3 FROM environments WHERE organization_id = $1 AND id = $2 \
     UNION ALL SELECT 'project', 4 FROM projects WHERE organization_id = $1 AND id = $2\
     ) found ORDER BY ord LIMIT 1";

/// What an id names, when it is looked up without its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundEntity {
    /// An agent, team or environment: something skills attach to.
    Skillable(SkillEntityType),
    /// A project, which has no skills.
    Project,
}

/// A skill id that names no skill of the organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingSkill(pub Uuid);

/// Filters of `GET /skills`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SkillFilter {
    pub skill_type: Option<SkillType>,
    pub enabled: Option<bool>,
}

impl Store {
    /// The skills of one organization.
    pub fn skills<'a>(&'a self, org: &'a str) -> Skills<'a> {
        Skills { db: &self.db, org }
    }
}

/// The skills of one organization.
pub struct Skills<'a> {
    db: &'a Db,
    org: &'a str,
}

fn conflict(e: sqlx::Error) -> StoreError {
    StoreError::unique(e, "skill", &["name"])
}

fn association_conflict(e: sqlx::Error, kind: SkillEntityType) -> StoreError {
    if let sqlx::Error::Database(db) = &e
        && db.is_unique_violation()
    {
        return StoreError::Conflict(format!("the skill is already associated with this {kind}"));
    }
    e.into()
}

impl Skills<'_> {
    pub async fn list(&self, filter: SkillFilter, page: PageRequest) -> StoreResult<Page<Skill>> {
        let ty = filter.skill_type.map(|t| t.as_str());
        let rows: Vec<SkillRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", skill_columns!(), " FROM skills WHERE organization_id = $1 \
                AND ($2 IS NULL OR skill_type = $2) AND ($3 IS NULL OR enabled = $3) \
                ORDER BY id DESC LIMIT $4 OFFSET $5"))
                .bind(self.org).bind(ty).bind(filter.enabled).bind(page.limit).bind(page.offset)
                .fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar("SELECT COUNT(*) FROM skills WHERE organization_id = $1 \
                    AND ($2 IS NULL OR skill_type = $2) AND ($3 IS NULL OR enabled = $3)")
                    .bind(self.org).bind(ty).bind(filter.enabled).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, SkillRow::into_skill).await
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<Skill> {
        let row: SkillRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", skill_columns!(), " FROM skills WHERE organization_id = $1 AND id = $2"))
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_skill()
    }

    /// Creates a skill with its already validated and normalized `configuration`.
    pub async fn create(&self, req: &CreateSkill, configuration: &Value) -> StoreResult<Skill> {
        let id = Uuid::now_v7();
        let at = now();
        let icon = req
            .icon
            .clone()
            .unwrap_or_else(|| default_icon(req.skill_type).to_string());
        with_db!(self.db, pool =>
            sqlx::query(
                "INSERT INTO skills (id, organization_id, name, skill_type, description, icon, enabled, configuration, \
                   created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)")
                .bind(id)
                .bind(self.org)
                .bind(req.name.trim())
                .bind(req.skill_type.as_str())
                .bind(&req.description)
                .bind(icon)
                .bind(req.enabled.unwrap_or(true))
                .bind(Json(configuration))
                .bind(at)
                .execute(pool).await.map(|r| r.rows_affected()))
        .map_err(conflict)?;
        self.get(id).await
    }

    /// Applies a partial update in one statement; `configuration` is the validated, normalized
    /// replacement when the request carried one.
    pub async fn update(&self, id: Uuid, req: &UpdateSkill, configuration: Option<&Value>) -> StoreResult<Skill> {
        let updated = with_db!(self.db, pool =>
            sqlx::query(
                "UPDATE skills SET \
                   name = COALESCE($3, name), \
                   description = CASE WHEN $4 THEN $5 ELSE description END, \
                   icon = CASE WHEN $6 THEN $7 ELSE icon END, \
                   enabled = COALESCE($8, enabled), \
                   configuration = COALESCE($9, configuration), \
                   updated_at = $10 \
                 WHERE organization_id = $1 AND id = $2")
                .bind(self.org)
                .bind(id)
                .bind(req.name.as_deref().map(str::trim))
                .bind(req.description.is_some())
                .bind(req.description.clone().flatten())
                .bind(req.icon.is_some())
                .bind(req.icon.clone().flatten())
                .bind(req.enabled)
                .bind(configuration.map(Json))
                .bind(now())
                .execute(pool).await.map(|r| r.rows_affected()))
        .map_err(conflict)?;
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        self.get(id).await
    }

    /// Deletes a skill; its associations go with it (foreign key cascade).
    pub async fn delete(&self, id: Uuid) -> StoreResult<()> {
        let done = with_db!(self.db, pool =>
            sqlx::query("DELETE FROM skills WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Fails with `NotFound` unless the agent, team or environment belongs to this organization.
    pub async fn require_entity(&self, entity: EntityRef) -> StoreResult<()> {
        let n: i64 = with_db!(self.db, pool =>
            sqlx::query_scalar(entity_sql(entity.kind).exists).bind(self.org).bind(entity.id).fetch_one(pool).await)?;
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// What kind of entity of this organization `id` names: agents first, then teams,
    /// environments and projects; `None` when nothing does.
    pub async fn find_entity(&self, id: Uuid) -> StoreResult<Option<FoundEntity>> {
        let kind: Option<String> = with_db!(self.db, pool =>
            sqlx::query_scalar(FIND_ENTITY).bind(self.org).bind(id).fetch_optional(pool).await)?;
        Ok(match kind.as_deref() {
            None => None,
            Some("project") => Some(FoundEntity::Project),
            Some(k) => Some(FoundEntity::Skillable(parse(k)?)),
        })
    }

    /// Attaches a skill to an entity of this organization; 409 if it already is.
    ///
    /// `NotFound` when the skill or the entity is not in the organization; callers wanting to
    /// say which check both first.
    pub async fn associate(
        &self,
        entity: EntityRef,
        skill_id: Uuid,
        configuration_override: Option<&Value>,
    ) -> StoreResult<SkillAssociation> {
        let association = SkillAssociation {
            id: Uuid::now_v7(),
            organization_id: self.org.to_string(),
            skill_id,
            entity_type: entity.kind,
            entity_id: entity.id,
            configuration_override: configuration_override.cloned(),
            created_at: now(),
        };
        let inserted = with_db!(self.db, pool =>
            sqlx::query(entity_sql(entity.kind).insert)
                .bind(association.id)
                .bind(self.org)
                .bind(skill_id)
                .bind(entity.id)
                .bind(configuration_override.map(Json))
                .bind(association.created_at)
                .execute(pool).await.map(|r| r.rows_affected()))
        .map_err(|e| association_conflict(e, entity.kind))?;
        if inserted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(association)
    }

    /// Attaches several skills at once, skipping those already attached; answers how many were
    /// new. All or nothing: `NotFound` if the entity is not in the organization, `MissingSkill`
    /// if one of the skills is not, and then nothing changes.
    pub async fn associate_missing(
        &self,
        entity: EntityRef,
        skill_ids: &[Uuid],
    ) -> StoreResult<Result<usize, MissingSkill>> {
        let sql = entity_sql(entity.kind);
        let at = now();
        with_db!(self.db, pool => {
            let mut tx = pool.begin().await?;
            let n: i64 = sqlx::query_scalar(sql.exists).bind(self.org).bind(entity.id).fetch_one(&mut *tx).await?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            let mut added = 0;
            for skill_id in skill_ids {
                let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM skills WHERE organization_id = $1 AND id = $2")
                    .bind(self.org).bind(skill_id).fetch_one(&mut *tx).await?;
                if exists == 0 {
                    return Ok(Err(MissingSkill(*skill_id)));
                }
                let inserted = sqlx::query(sql.insert_missing)
                    .bind(Uuid::now_v7())
                    .bind(self.org)
                    .bind(skill_id)
                    .bind(entity.id)
                    .bind(None::<Json<Value>>)
                    .bind(at)
                    .execute(&mut *tx).await?.rows_affected();
                added += inserted as usize;
            }
            tx.commit().await?;
            Ok(Ok(added))
        })
    }

    /// The skills attached to one entity, newest association first, each with its override applied.
    pub async fn list_associated(&self, entity: EntityRef, page: PageRequest) -> StoreResult<Page<AssociatedSkill>> {
        self.require_entity(entity).await?;
        let sql = entity_sql(entity.kind);
        let rows: Vec<AssociatedRow> = with_db!(self.db, pool =>
            sqlx::query_as(sql.list).bind(self.org).bind(entity.id).bind(page.limit).bind(page.offset)
                .fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar(sql.count).bind(self.org).bind(entity.id).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, AssociatedRow::into_associated).await
    }

    /// Detaches a skill from an entity; answers the association's id.
    pub async fn dissociate(&self, entity: EntityRef, skill_id: Uuid) -> StoreResult<Uuid> {
        let id: Option<Uuid> = with_db!(self.db, pool =>
            sqlx::query_scalar(entity_sql(entity.kind).delete).bind(self.org).bind(entity.id).bind(skill_id)
                .fetch_optional(pool).await)?;
        id.ok_or(StoreError::NotFound)
    }

    /// The enabled skills an entity gets after inheritance (API §3, Skill row): for an agent its
    /// environments, then each of its teams' environments and the team, then the agent itself;
    /// for a team its environments, then the team. A later layer overrides an earlier one.
    /// Two queries whatever the number of layers.
    pub async fn resolved(&self, entity: EntityRef) -> StoreResult<Vec<ResolvedSkill>> {
        self.require_entity(entity).await?;
        let rows: Vec<LayerRow> = with_db!(self.db, pool =>
            sqlx::query_as(entity_sql(entity.kind).resolve).bind(self.org).bind(entity.id).fetch_all(pool).await)?;
        let layers = rows
            .into_iter()
            .map(LayerRow::into_layer)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(resolve_layers(entity, layers))
    }
}
