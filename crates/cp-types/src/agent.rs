//! Agents (API §3, Agent row) and the small views of related entities embedded in responses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::common::nullable;
use crate::environment::ExecutionEnvironment;
use crate::runtime::Runtime;
use crate::validate::Issues;
use crate::{FieldIssue, wire_enum};
use chrono::{DateTime, Utc};

wire_enum! {
    /// `idle` until the agent runs; `archived` agents are kept but not offered for new work.
    AgentStatus {
        Idle = "idle", Active = "active", Running = "running", Paused = "paused",
        Completed = "completed", Failed = "failed", Stopped = "stopped", Archived = "archived",
    }
}

/// A project an agent or team belongs to.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectRef {
    pub id: Uuid,
    pub name: String,
    pub key: String,
    pub description: Option<String>,
}

/// An environment an agent or team runs in.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentRef {
    pub id: Uuid,
    pub name: String,
    pub display_name: Option<String>,
    pub status: String,
}

/// A skill attached to an agent or team, with the association's override merged in.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SkillRef {
    pub id: Uuid,
    pub name: String,
    #[serde(rename = "type")]
    pub skill_type: String,
    pub description: Option<String>,
    pub enabled: bool,
    #[schema(value_type = Object)]
    pub configuration: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Agent {
    pub id: Uuid,
    pub organization_id: String,
    pub name: String,
    pub description: Option<String>,
    pub system_prompt: Option<String>,
    pub status: AgentStatus,
    pub runtime: Runtime,
    /// The model's value (`anthropic/claude-sonnet-4-5`).
    pub model_id: Option<String>,
    #[schema(value_type = Object)]
    pub llm_config: Value,
    pub capabilities: Vec<String>,
    #[schema(value_type = Object)]
    pub configuration: Value,
    /// The first team the agent is a member of (see `team_ids` for all of them).
    pub team_id: Option<Uuid>,
    pub team_ids: Vec<Uuid>,
    pub runner_name: Option<String>,
    pub execution_environment: ExecutionEnvironment,
    #[schema(value_type = Object)]
    pub state: Value,
    pub error_message: Option<String>,
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
pub struct CreateAgent {
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    pub name: String,
    #[schema(max_length = 10000)]
    pub description: Option<String>,
    #[schema(max_length = 200000)]
    pub system_prompt: Option<String>,
    /// The model's id or value; the organization's default model when absent.
    pub model_id: Option<String>,
    /// Alias of `model_id` (wins when both are given).
    pub model: Option<String>,
    pub runtime: Option<Runtime>,
    #[schema(value_type = Option<Object>)]
    pub llm_config: Option<Value>,
    #[schema(max_items = 100)]
    pub capabilities: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub configuration: Option<Value>,
    /// Joins this team (adds the agent to its `configuration.member_ids`).
    pub team_id: Option<Uuid>,
    pub runner_name: Option<String>,
    #[schema(max_items = 100)]
    pub environment_ids: Option<Vec<Uuid>>,
    #[schema(max_items = 100)]
    pub skill_ids: Option<Vec<Uuid>>,
    /// Per-skill configuration overrides, keyed by skill id.
    #[schema(value_type = Option<Object>)]
    pub skill_configurations: Option<BTreeMap<Uuid, Value>>,
    pub execution_environment: Option<ExecutionEnvironment>,
    pub status: Option<AgentStatus>,
}

/// Partial update: absent fields stay, `null` clears a nullable field, lists replace.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UpdateAgent {
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 200000)]
    pub system_prompt: Option<Option<String>>,
    pub model_id: Option<String>,
    pub model: Option<String>,
    pub runtime: Option<Runtime>,
    #[schema(value_type = Option<Object>)]
    pub llm_config: Option<Value>,
    #[schema(max_items = 100)]
    pub capabilities: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub configuration: Option<Value>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub runner_name: Option<Option<String>>,
    #[schema(max_items = 100)]
    pub environment_ids: Option<Vec<Uuid>>,
    #[schema(max_items = 100)]
    pub skill_ids: Option<Vec<Uuid>>,
    #[schema(value_type = Option<Object>)]
    pub skill_configurations: Option<BTreeMap<Uuid, Value>>,
    pub execution_environment: Option<ExecutionEnvironment>,
    pub status: Option<AgentStatus>,
    #[schema(value_type = Option<Object>)]
    pub state: Option<Value>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub error_message: Option<Option<String>>,
}

/// Checks the well-known keys of an `llm_config` (others are passed to the provider as they are).
pub fn check_llm_config(v: &mut Issues, field: &str, config: &Value) {
    let Some(map) = config.as_object() else {
        v.push(field, "must be an object");
        return;
    };
    let number = |key: &str, lo: f64, hi: f64, v: &mut Issues| {
        if let Some(x) = map.get(key).filter(|x| !x.is_null()) {
            v.check(
                x.as_f64().is_some_and(|x| (lo..=hi).contains(&x)),
                &format!("{field}.{key}"),
                format!("must be a number between {lo} and {hi}"),
            );
        }
    };
    let integer = |key: &str, lo: i64, hi: i64, v: &mut Issues| {
        if let Some(x) = map.get(key).filter(|x| !x.is_null()) {
            v.check(
                x.as_i64().is_some_and(|x| (lo..=hi).contains(&x)),
                &format!("{field}.{key}"),
                format!("must be an integer between {lo} and {hi}"),
            );
        }
    };
    number("temperature", 0.0, 2.0, v);
    number("top_p", 0.0, 1.0, v);
    number("frequency_penalty", -2.0, 2.0, v);
    number("presence_penalty", -2.0, 2.0, v);
    integer("max_tokens", 1, 1_000_000, v);
    integer("max_turns", 1, 500, v);
    integer("top_k", 0, 1_000_000, v);
}

/// The model an agent or team names: `model` wins over `model_id`.
pub fn requested_model<'a>(model: &'a Option<String>, model_id: &'a Option<String>) -> Option<&'a str> {
    model
        .as_deref()
        .or(model_id.as_deref())
        .map(str::trim)
        .filter(|m| !m.is_empty())
}

/// Size limits of the lists agents and teams link to (shared by both).
pub(crate) fn check_lists(
    v: &mut Issues,
    capabilities: Option<&Vec<String>>,
    environment_ids: Option<&Vec<Uuid>>,
    skill_ids: Option<&Vec<Uuid>>,
    skill_configurations: Option<&BTreeMap<Uuid, Value>>,
) {
    if let Some(c) = capabilities {
        v.check(c.len() <= 100, "capabilities", "at most 100 capabilities");
        v.check(
            c.iter().all(|c| c.chars().count() <= 200),
            "capabilities",
            "each has at most 200 characters",
        );
    }
    if let Some(e) = environment_ids {
        v.check(e.len() <= 100, "environment_ids", "at most 100 environments");
    }
    if let Some(s) = skill_ids {
        v.check(s.len() <= 100, "skill_ids", "at most 100 skills");
    }
    if let Some(sc) = skill_configurations {
        for (id, cfg) in sc {
            v.check(
                cfg.is_object(),
                &format!("skill_configurations.{id}"),
                "must be an object",
            );
        }
    }
}

impl CreateAgent {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        v.length("name", &self.name, 1, 255);
        v.max_length("description", self.description.as_deref(), 10_000);
        v.max_length("system_prompt", self.system_prompt.as_deref(), 200_000);
        v.max_length("runner_name", self.runner_name.as_deref(), 200);
        if let Some(c) = &self.llm_config {
            check_llm_config(&mut v, "llm_config", c);
        }
        v.object("configuration", self.configuration.as_ref());
        check_lists(
            &mut v,
            self.capabilities.as_ref(),
            self.environment_ids.as_ref(),
            self.skill_ids.as_ref(),
            self.skill_configurations.as_ref(),
        );
        if let Some(ee) = &self.execution_environment {
            ee.check(&mut v, "execution_environment");
        }
        v.finish()
    }

    /// The system prompt, also accepted inside `configuration.system_prompt` as the reference stores it.
    pub fn effective_system_prompt(&self) -> Option<String> {
        self.system_prompt.clone().or_else(|| {
            self.configuration
                .as_ref()
                .and_then(|c| c.get("system_prompt"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
    }
}

impl UpdateAgent {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        if let Some(name) = &self.name {
            v.length("name", name, 1, 255);
        }
        if let Some(Some(d)) = &self.description {
            v.max_length("description", Some(d), 10_000);
        }
        if let Some(Some(p)) = &self.system_prompt {
            v.max_length("system_prompt", Some(p), 200_000);
        }
        if let Some(Some(r)) = &self.runner_name {
            v.max_length("runner_name", Some(r), 200);
        }
        if let Some(Some(e)) = &self.error_message {
            v.max_length("error_message", Some(e), 10_000);
        }
        if let Some(c) = &self.llm_config {
            check_llm_config(&mut v, "llm_config", c);
        }
        v.object("configuration", self.configuration.as_ref());
        v.object("state", self.state.as_ref());
        check_lists(
            &mut v,
            self.capabilities.as_ref(),
            self.environment_ids.as_ref(),
            self.skill_ids.as_ref(),
            self.skill_configurations.as_ref(),
        );
        if let Some(ee) = &self.execution_environment {
            ee.check(&mut v, "execution_environment");
        }
        v.finish()
    }
}
