//! Environments (API §3, Environment row).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::common::nullable;
use crate::validate::Issues;
use crate::{FieldIssue, wire_enum};
use chrono::{DateTime, Utc};

/// The name of the per-organization environment that cannot be deleted.
pub const DEFAULT_ENVIRONMENT_NAME: &str = "default";

wire_enum! {
    EnvironmentStatus { Active = "active", Inactive = "inactive", Archived = "archived" }
}

/// What an execution running in this environment gets: env vars, secret names,
/// integrations and MCP servers. Later layers (agent) override earlier ones (environment).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExecutionEnvironment {
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub integration_ids: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub mcp_servers: serde_json::Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

/// Env var and secret names: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl ExecutionEnvironment {
    pub fn check(&self, v: &mut Issues, field: &str) {
        for name in self.env_vars.keys() {
            v.check(
                is_env_name(name),
                &format!("{field}.env_vars"),
                format!("'{name}' is not a valid variable name"),
            );
        }
        for name in &self.secrets {
            v.check(
                is_env_name(name),
                &format!("{field}.secrets"),
                format!("'{name}' is not a valid secret name"),
            );
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Environment {
    pub id: Uuid,
    pub organization_id: String,
    pub name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub tags: Vec<String>,
    #[schema(value_type = Object)]
    pub settings: Value,
    pub status: EnvironmentStatus,
    pub execution_environment: ExecutionEnvironment,
    /// True for the organization's `default` environment, which cannot be deleted.
    pub is_default: bool,
    /// Workers registered on this environment's queues and heard from recently.
    pub active_workers: i64,
    pub idle_workers: i64,
    pub busy_workers: i64,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateEnvironment {
    #[schema(min_length = 2, max_length = 100, pattern = r"\S[\s\S]*\S")]
    pub name: String,
    #[schema(max_length = 200)]
    pub display_name: Option<String>,
    #[schema(max_length = 10000)]
    pub description: Option<String>,
    #[schema(max_items = 100)]
    pub tags: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Value>,
    pub status: Option<EnvironmentStatus>,
    pub execution_environment: Option<ExecutionEnvironment>,
}

/// Partial update: absent fields stay, `null` clears a nullable field.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UpdateEnvironment {
    #[schema(min_length = 2, max_length = 100, pattern = r"\S[\s\S]*\S")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 200)]
    pub display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub description: Option<Option<String>>,
    #[schema(max_items = 100)]
    pub tags: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Value>,
    pub status: Option<EnvironmentStatus>,
    pub execution_environment: Option<ExecutionEnvironment>,
}

impl CreateEnvironment {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        v.length("name", &self.name, 2, 100);
        v.max_length("display_name", self.display_name.as_deref(), 200);
        v.max_length("description", self.description.as_deref(), 10_000);
        v.object("settings", self.settings.as_ref());
        if let Some(tags) = &self.tags {
            check_tags(&mut v, tags);
        }
        if let Some(ee) = &self.execution_environment {
            ee.check(&mut v, "execution_environment");
        }
        v.finish()
    }
}

fn check_tags(v: &mut Issues, tags: &[String]) {
    v.check(tags.len() <= 100, "tags", "at most 100 tags");
    v.check(
        tags.iter().all(|t| t.chars().count() <= 100),
        "tags",
        "each tag has at most 100 characters",
    );
}

impl UpdateEnvironment {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        if let Some(name) = &self.name {
            v.length("name", name, 2, 100);
        }
        if let Some(Some(d)) = &self.display_name {
            v.max_length("display_name", Some(d), 200);
        }
        if let Some(Some(d)) = &self.description {
            v.max_length("description", Some(d), 10_000);
        }
        if let Some(tags) = &self.tags {
            check_tags(&mut v, tags);
        }
        v.object("settings", self.settings.as_ref());
        if let Some(ee) = &self.execution_environment {
            ee.check(&mut v, "execution_environment");
        }
        v.finish()
    }
}

/// `GET /environments/{id}/worker-command`: how to start a worker for this environment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerCommand {
    pub environment_id: Uuid,
    pub environment_name: String,
    pub control_plane_url: String,
    /// False when the environment is not active: workers would be refused.
    pub can_register: bool,
    /// A shell command with placeholders `<WORKER_QUEUE_ID>` and `$KUBIYA_API_KEY`.
    pub command: String,
    pub command_parts: Vec<String>,
    /// The exact command for each worker queue of the environment.
    pub queues: Vec<QueueCommand>,
}

/// The exact worker command for one queue.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueCommand {
    pub worker_queue_id: Uuid,
    pub name: String,
    pub command: String,
}
