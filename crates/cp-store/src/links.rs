//! What agents and teams link to (environments, skills, projects, team members): the SQL that
//! embeds those links in one row, and the statements that write them.

use cp_types::agent::{EnvironmentRef, ProjectRef, SkillRef};
use serde_json::Value;
use uuid::Uuid;

use crate::error::StoreError;

/// `[id, name, display_name, status]` of a linked environment.
pub(crate) type EnvTuple = (Uuid, String, Option<String>, String);
/// `[id, name, type, description, enabled, configuration, override]` of an attached skill.
pub(crate) type SkillTuple = (Uuid, String, String, Option<String>, bool, Value, Option<Value>);
/// `[id, name, key, description]` of a project.
pub(crate) type ProjectTuple = (Uuid, String, String, Option<String>);

pub(crate) fn env_ref((id, name, display_name, status): EnvTuple) -> EnvironmentRef {
    EnvironmentRef {
        id,
        name,
        display_name,
        status,
    }
}

/// The skill with the association's override merged over its configuration (top-level keys).
pub(crate) fn skill_ref((id, name, skill_type, description, enabled, config, over): SkillTuple) -> SkillRef {
    SkillRef {
        id,
        name,
        skill_type,
        description,
        enabled,
        configuration: cp_types::skill::merge_configuration(&config, over.as_ref()),
    }
}

pub(crate) fn project_ref((id, name, key, description): ProjectTuple) -> ProjectRef {
    ProjectRef {
        id,
        name,
        key,
        description,
    }
}

// Correlated subqueries returning one JSON array per row. SQLite aggregates in the order of
// the inner query; uuids are BLOBs there, rendered as 32 hex digits (a form `Uuid` parses).

macro_rules! sqlite_envs {
    ($junction:literal, $col:literal, $outer:literal) => {
        concat!(
            "(SELECT json_group_array(json_array(lower(hex(x.id)), x.name, x.display_name, x.status)) FROM \
             (SELECT e.id, e.name, e.display_name, e.status FROM ",
            $junction,
            " j JOIN environments e ON e.id = j.environment_id WHERE j.",
            $col,
            " = ",
            $outer,
            " ORDER BY j.position) x)"
        )
    };
}
pub(crate) use sqlite_envs;

macro_rules! pg_envs {
    ($junction:literal, $col:literal, $outer:literal) => {
        concat!(
            "(SELECT COALESCE(json_agg(json_build_array(e.id, e.name, e.display_name, e.status) ORDER BY j.position), \
             '[]'::json) FROM ",
            $junction,
            " j JOIN environments e ON e.id = j.environment_id WHERE j.",
            $col,
            " = ",
            $outer,
            ")"
        )
    };
}
pub(crate) use pg_envs;

macro_rules! sqlite_skills {
    ($col:literal, $outer:literal) => {
        concat!(
            "(SELECT json_group_array(json_array(lower(hex(x.id)), x.name, x.skill_type, x.description, \
             json(CASE WHEN x.enabled THEN 'true' ELSE 'false' END), json(x.configuration), \
             json(x.configuration_override))) FROM (SELECT s.id, s.name, s.skill_type, s.description, s.enabled, \
             s.configuration, sa.configuration_override FROM skill_associations sa JOIN skills s ON s.id = sa.skill_id \
             WHERE sa.",
            $col,
            " = ",
            $outer,
            " ORDER BY sa.created_at, sa.id) x)"
        )
    };
}
pub(crate) use sqlite_skills;

macro_rules! pg_skills {
    ($col:literal, $outer:literal) => {
        concat!(
            "(SELECT COALESCE(json_agg(json_build_array(s.id, s.name, s.skill_type, s.description, s.enabled, \
             s.configuration, sa.configuration_override) ORDER BY sa.created_at, sa.id), '[]'::json) \
             FROM skill_associations sa JOIN skills s ON s.id = sa.skill_id WHERE sa.",
            $col,
            " = ",
            $outer,
            ")"
        )
    };
}
pub(crate) use pg_skills;

macro_rules! sqlite_projects {
    ($junction:literal, $col:literal, $outer:literal) => {
        concat!(
            "(SELECT json_group_array(json_array(lower(hex(x.id)), x.name, x.key, x.description)) FROM \
             (SELECT p.id, p.name, p.key, p.description FROM ",
            $junction,
            " j JOIN projects p ON p.id = j.project_id WHERE j.",
            $col,
            " = ",
            $outer,
            " ORDER BY j.added_at, j.id) x)"
        )
    };
}
pub(crate) use sqlite_projects;

macro_rules! pg_projects {
    ($junction:literal, $col:literal, $outer:literal) => {
        concat!(
            "(SELECT COALESCE(json_agg(json_build_array(p.id, p.name, p.key, p.description) ORDER BY j.added_at, j.id), \
             '[]'::json) FROM ",
            $junction,
            " j JOIN projects p ON p.id = j.project_id WHERE j.",
            $col,
            " = ",
            $outer,
            ")"
        )
    };
}
pub(crate) use pg_projects;

/// Links to environments, for agents or teams (table names cannot be bound).
pub(crate) struct EnvLinkSql {
    pub insert: &'static str,
}

pub(crate) const AGENT_ENVS: EnvLinkSql = EnvLinkSql {
    insert: "INSERT INTO agent_environments (agent_id, environment_id, organization_id, position) \
             SELECT $1, e.id, $2, $3 FROM environments e WHERE e.organization_id = $2 AND e.id = $4",
};
pub(crate) const TEAM_ENVS: EnvLinkSql = EnvLinkSql {
    insert: "INSERT INTO team_environments (team_id, environment_id, organization_id, position) \
             SELECT $1, e.id, $2, $3 FROM environments e WHERE e.organization_id = $2 AND e.id = $4",
};

/// Skill associations of agents or teams.
pub(crate) struct SkillLinkSql {
    pub insert: &'static str,
    pub existing: &'static str,
    pub delete_all: &'static str,
    pub set_override: &'static str,
}

macro_rules! skill_link_sql {
    ($col:literal) => {
        SkillLinkSql {
            insert: concat!(
                "INSERT INTO skill_associations (id, organization_id, skill_id, ",
                $col,
                ", configuration_override, created_at) SELECT $1, $2, s.id, $3, $4, $5 FROM skills s \
                 WHERE s.organization_id = $2 AND s.id = $6"
            ),
            existing: concat!(
                "SELECT skill_id, configuration_override FROM skill_associations WHERE ",
                $col,
                " = $1"
            ),
            delete_all: concat!("DELETE FROM skill_associations WHERE ", $col, " = $1"),
            set_override: concat!(
                "UPDATE skill_associations SET configuration_override = $3 WHERE ",
                $col,
                " = $1 AND skill_id = $2"
            ),
        }
    };
}

pub(crate) const AGENT_SKILLS: SkillLinkSql = skill_link_sql!("agent_id");
pub(crate) const TEAM_SKILLS: SkillLinkSql = skill_link_sql!("team_id");

/// Adds an agent at the end of a team's member list (no row when the team is not in the org).
pub(crate) const JOIN_TEAM: &str = "INSERT INTO team_members (team_id, agent_id, organization_id, position, added_at) \
     SELECT t.id, $1, $2, COALESCE((SELECT MAX(tm.position) + 1 FROM team_members tm WHERE tm.team_id = t.id), 0), $3 \
     FROM teams t WHERE t.organization_id = $2 AND t.id = $4";

/// Ids without repeats, first occurrence kept.
pub(crate) fn dedup(ids: &[Uuid]) -> Vec<Uuid> {
    let mut seen = std::collections::HashSet::new();
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

/// Links `$id` to each environment in order; an id that is not an environment of the
/// organization fails the whole transaction with a 422 on `environment_ids`.
macro_rules! link_environments {
    ($tx:ident, $sql:expr, $org:expr, $id:expr, $ids:expr) => {
        for (pos, env) in $crate::links::dedup($ids).into_iter().enumerate() {
            let n = sqlx::query($sql.insert)
                .bind($id)
                .bind($org)
                .bind(pos as i32)
                .bind(env)
                .execute(&mut *$tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err($crate::error::StoreError::reference(
                    "environment_ids",
                    format!("no environment {env} in this organization"),
                ));
            }
        }
    };
}
pub(crate) use link_environments;

/// Attaches skills with their configuration overrides; unknown skills fail with 422 on `skill_ids`.
macro_rules! link_skills {
    ($tx:ident, $sql:expr, $org:expr, $id:expr, $ids:expr, $configs:expr, $at:expr) => {
        for skill in $crate::links::dedup($ids) {
            let over = $configs.get(&skill).map(sqlx::types::Json);
            let n = sqlx::query($sql.insert)
                .bind(uuid::Uuid::now_v7())
                .bind($org)
                .bind($id)
                .bind(over)
                .bind($at)
                .bind(skill)
                .execute(&mut *$tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err($crate::error::StoreError::reference(
                    "skill_ids",
                    format!("no skill {skill} in this organization"),
                ));
            }
        }
    };
}
pub(crate) use link_skills;

/// Replaces the attached skills (keeping the overrides of skills that stay) and/or sets overrides.
macro_rules! relink_skills {
    ($tx:ident, $sql:expr, $org:expr, $id:expr, $ids:expr, $configs:expr, $at:expr) => {
        let configs: Option<&std::collections::BTreeMap<uuid::Uuid, serde_json::Value>> = $configs;
        if let Some(ids) = $ids {
            let existing: Vec<(uuid::Uuid, Option<sqlx::types::Json<serde_json::Value>>)> =
                sqlx::query_as($sql.existing).bind($id).fetch_all(&mut *$tx).await?;
            let mut merged: std::collections::BTreeMap<uuid::Uuid, serde_json::Value> =
                existing.into_iter().filter_map(|(s, o)| o.map(|o| (s, o.0))).collect();
            if let Some(c) = configs {
                merged.extend(c.iter().map(|(k, v)| (*k, v.clone())));
            }
            sqlx::query($sql.delete_all).bind($id).execute(&mut *$tx).await?;
            $crate::links::link_skills!($tx, $sql, $org, $id, ids, merged, $at);
        } else if let Some(c) = configs {
            for (skill, over) in c {
                let n = sqlx::query($sql.set_override)
                    .bind($id)
                    .bind(*skill)
                    .bind(sqlx::types::Json(over))
                    .execute(&mut *$tx)
                    .await?
                    .rows_affected();
                if n == 0 {
                    return Err($crate::error::StoreError::reference(
                        format!("skill_configurations.{skill}"),
                        "this skill is not attached",
                    ));
                }
            }
        }
    };
}
pub(crate) use relink_skills;

/// A unique violation names the field (409); a foreign-key violation means something the
/// request referenced was deleted meanwhile (409 as well).
pub(crate) fn conflict_or_reference(e: sqlx::Error, what: &str, fields: &[&str]) -> StoreError {
    if let sqlx::Error::Database(db) = &e
        && db.is_foreign_key_violation()
    {
        return StoreError::Conflict(format!("something this {what} refers to was deleted meanwhile; retry"));
    }
    StoreError::unique(e, what, fields)
}
