//! Teams of agents (API §3, Team row). Membership is `configuration.member_ids`, nothing else.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::agent::{EnvironmentRef, ProjectRef, SkillRef, check_lists, check_llm_config};
use crate::common::nullable;
use crate::environment::ExecutionEnvironment;
use crate::runtime::Runtime;
use crate::validate::Issues;
use crate::{FieldIssue, wire_enum};
use chrono::{DateTime, Utc};

wire_enum! {
    TeamStatus { Active = "active", Inactive = "inactive", Archived = "archived" }
}

/// A member agent as a team response shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TeamMember {
    pub id: Uuid,
    pub name: String,
    pub status: String,
    pub description: Option<String>,
    pub capabilities: Vec<String>,
    pub runtime: Runtime,
    pub model_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Team {
    pub id: Uuid,
    pub organization_id: String,
    pub name: String,
    pub description: Option<String>,
    pub status: TeamStatus,
    pub runtime: Runtime,
    /// The coordinator's model, as its value (also in `configuration.llm.model`).
    pub model_id: Option<String>,
    /// `{member_ids[], instructions, llm{model, temperature, …}, max_rounds, …}`.
    #[schema(value_type = Object)]
    pub configuration: Value,
    pub execution_environment: ExecutionEnvironment,
    pub agents: Vec<TeamMember>,
    pub environment_ids: Vec<Uuid>,
    pub environments: Vec<EnvironmentRef>,
    pub skill_ids: Vec<Uuid>,
    pub skills: Vec<SkillRef>,
    pub projects: Vec<ProjectRef>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
    #[serde(default, serialize_with = "crate::common::rfc3339::option::serialize")]
    pub last_active_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct CreateTeam {
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    pub name: String,
    #[schema(max_length = 10000)]
    pub description: Option<String>,
    pub runtime: Option<Runtime>,
    /// The coordinator's model (id or value); also read from `configuration.llm.model`;
    /// the organization's default model when neither is given.
    pub model_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub configuration: Option<Value>,
    #[schema(max_items = 100)]
    pub environment_ids: Option<Vec<Uuid>>,
    #[schema(max_items = 100)]
    pub skill_ids: Option<Vec<Uuid>>,
    #[schema(value_type = Option<Object>)]
    pub skill_configurations: Option<BTreeMap<Uuid, Value>>,
    pub execution_environment: Option<ExecutionEnvironment>,
    pub status: Option<TeamStatus>,
}

/// Partial update: absent fields stay; `configuration` keys given replace stored ones.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UpdateTeam {
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub description: Option<Option<String>>,
    pub runtime: Option<Runtime>,
    pub model_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub configuration: Option<Value>,
    #[schema(max_items = 100)]
    pub environment_ids: Option<Vec<Uuid>>,
    #[schema(max_items = 100)]
    pub skill_ids: Option<Vec<Uuid>>,
    #[schema(value_type = Option<Object>)]
    pub skill_configurations: Option<BTreeMap<Uuid, Value>>,
    pub execution_environment: Option<ExecutionEnvironment>,
    pub status: Option<TeamStatus>,
}

/// What the server takes out of a team configuration: members and model live in their own
/// columns (so deleting an agent or a model is tracked by the database), the rest is stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TeamConfigParts {
    /// `Some` when the configuration names its members.
    pub member_ids: Option<Vec<Uuid>>,
    /// `configuration.llm.model`, when given.
    pub model: Option<String>,
    /// The configuration without `member_ids` and `llm.model`.
    pub rest: serde_json::Map<String, Value>,
}

/// Validates a team configuration and splits it (issues are reported under `configuration.*`).
pub fn split_team_config(v: &mut Issues, config: &Value) -> TeamConfigParts {
    let Some(map) = config.as_object() else {
        v.push("configuration", "must be an object");
        return TeamConfigParts::default();
    };
    let mut parts = TeamConfigParts {
        rest: map.clone(),
        ..Default::default()
    };
    if let Some(ids) = parts.rest.remove("member_ids").filter(|x| !x.is_null()) {
        match serde_json::from_value::<Vec<Uuid>>(ids) {
            Ok(ids) if ids.len() <= 100 => {
                let mut seen = std::collections::HashSet::new();
                parts.member_ids = Some(ids.into_iter().filter(|id| seen.insert(*id)).collect());
            }
            Ok(_) => v.push("configuration.member_ids", "at most 100 members"),
            Err(_) => v.push("configuration.member_ids", "must be a list of agent ids (UUIDs)"),
        }
    }
    if let Some(instructions) = parts.rest.get("instructions").filter(|x| !x.is_null()) {
        let ok = instructions.is_string() || instructions.as_array().is_some_and(|a| a.iter().all(Value::is_string));
        v.check(
            ok,
            "configuration.instructions",
            "must be a string or a list of strings",
        );
    }
    if let Some(rounds) = parts.rest.get("max_rounds").filter(|x| !x.is_null()) {
        v.check(
            rounds.as_i64().is_some_and(|r| (1..=100).contains(&r)),
            "configuration.max_rounds",
            "must be an integer between 1 and 100",
        );
    }
    if let Some(llm) = parts.rest.get_mut("llm").filter(|x| !x.is_null()) {
        check_llm_config(v, "configuration.llm", llm);
        if let Some(obj) = llm.as_object_mut() {
            match obj.remove("model") {
                Some(Value::String(m)) if !m.trim().is_empty() => parts.model = Some(m.trim().to_string()),
                None | Some(Value::Null) => {}
                Some(_) => v.push("configuration.llm.model", "must be a model id or value"),
            }
        }
    }
    parts
}

impl CreateTeam {
    /// Validates the request and returns the split configuration.
    pub fn validate(&self) -> Result<TeamConfigParts, Vec<FieldIssue>> {
        let mut v = Issues::new();
        v.length("name", &self.name, 1, 255);
        v.max_length("description", self.description.as_deref(), 10_000);
        let parts = match &self.configuration {
            Some(c) => split_team_config(&mut v, c),
            None => TeamConfigParts::default(),
        };
        check_lists(
            &mut v,
            None,
            self.environment_ids.as_ref(),
            self.skill_ids.as_ref(),
            self.skill_configurations.as_ref(),
        );
        if let Some(ee) = &self.execution_environment {
            ee.check(&mut v, "execution_environment");
        }
        v.finish().map(|_| parts)
    }
}

impl UpdateTeam {
    pub fn validate(&self) -> Result<Option<TeamConfigParts>, Vec<FieldIssue>> {
        let mut v = Issues::new();
        if let Some(name) = &self.name {
            v.length("name", name, 1, 255);
        }
        if let Some(Some(d)) = &self.description {
            v.max_length("description", Some(d), 10_000);
        }
        let parts = self.configuration.as_ref().map(|c| split_team_config(&mut v, c));
        check_lists(
            &mut v,
            None,
            self.environment_ids.as_ref(),
            self.skill_ids.as_ref(),
            self.skill_configurations.as_ref(),
        );
        if let Some(ee) = &self.execution_environment {
            ee.check(&mut v, "execution_environment");
        }
        v.finish().map(|_| parts)
    }
}
