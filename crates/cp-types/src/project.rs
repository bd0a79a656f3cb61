//! Projects and their membership (API §3, Project row).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::common::nullable;
use crate::validate::Issues;
use crate::{FieldIssue, wire_enum};
use chrono::{DateTime, Utc};

/// The key of the per-organization project that every new agent and team joins.
pub const DEFAULT_PROJECT_KEY: &str = "DEFAULT";

wire_enum! {
    ProjectStatus { Active = "active", Archived = "archived", Draft = "draft" }
}

wire_enum! {
    Visibility { Private = "private", Org = "org" }
}

wire_enum! {
    /// What kind of entity is a member of a project.
    MemberKind { Agent = "agent", Team = "team" }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Project {
    pub id: Uuid,
    pub organization_id: String,
    pub name: String,
    pub key: String,
    pub description: Option<String>,
    pub goals: Option<String>,
    #[schema(value_type = Object)]
    pub settings: Value,
    pub status: ProjectStatus,
    pub visibility: Visibility,
    pub default_model: Option<String>,
    pub policy_ids: Vec<String>,
    pub restrict_to_environment: bool,
    /// True for the organization's `DEFAULT` project, which cannot be deleted.
    pub is_default: bool,
    pub agent_count: i64,
    pub team_count: i64,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
    #[serde(default, serialize_with = "crate::common::rfc3339::option::serialize")]
    pub archived_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateProject {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    /// 2 to 50 letters, digits, `-` or `_`; stored uppercase.
    #[schema(pattern = r"^[A-Za-z0-9_-]{2,50}$")]
    pub key: String,
    #[schema(max_length = 10000)]
    pub description: Option<String>,
    pub goals: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Value>,
    pub status: Option<ProjectStatus>,
    pub visibility: Option<Visibility>,
    pub default_model: Option<String>,
    pub policy_ids: Option<Vec<String>>,
    pub restrict_to_environment: Option<bool>,
}

/// Partial update: absent fields stay, `null` clears a nullable field.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UpdateProject {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: Option<String>,
    #[schema(pattern = r"^[A-Za-z0-9_-]{2,50}$")]
    pub key: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub goals: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Value>,
    pub status: Option<ProjectStatus>,
    pub visibility: Option<Visibility>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub default_model: Option<Option<String>>,
    pub policy_ids: Option<Vec<String>>,
    pub restrict_to_environment: Option<bool>,
}

fn check_key(v: &mut Issues, key: &str) {
    v.length("key", key, 2, 50);
    v.check(
        key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "key",
        "may contain only letters, digits, '-' and '_'",
    );
}

impl CreateProject {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        v.length("name", &self.name, 1, 200);
        check_key(&mut v, &self.key);
        v.max_length("description", self.description.as_deref(), 10_000);
        v.object("settings", self.settings.as_ref());
        v.finish()
    }
}

impl UpdateProject {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        if let Some(name) = &self.name {
            v.length("name", name, 1, 200);
        }
        if let Some(key) = &self.key {
            check_key(&mut v, key);
        }
        if let Some(Some(d)) = &self.description {
            v.max_length("description", Some(d), 10_000);
        }
        v.object("settings", self.settings.as_ref());
        v.finish()
    }
}

/// `POST /projects/{id}/agents` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct AddProjectAgent {
    pub agent_id: Uuid,
    pub role: Option<String>,
}

/// `POST /projects/{id}/teams` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct AddProjectTeam {
    pub team_id: Uuid,
    pub role: Option<String>,
}

/// One agent or team in a project.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectMember {
    pub id: Uuid,
    pub project_id: Uuid,
    pub member_type: MemberKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<Uuid>,
    pub name: String,
    pub description: Option<String>,
    pub role: Option<String>,
    pub added_by: Option<String>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub added_at: DateTime<Utc>,
}
