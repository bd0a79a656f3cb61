//! Custom integrations (API §3, Integration row; reference §9): a bundle of env vars, secret
//! names and files that an execution gets when it references the integration.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::common::nullable;
use crate::environment::is_env_name;
use crate::secret::check_secret_name;
use crate::validate::Issues;
use crate::{FieldIssue, wire_enum};

wire_enum! {
    CustomIntegrationStatus { Active = "active", Inactive = "inactive" }
}

/// The type given when none is: `custom`.
pub const DEFAULT_CUSTOM_TYPE: &str = "custom";

/// A file written into the execution's workspace: inline `content` or the value of the
/// secret named by `secret_ref` (exactly one of the two).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CustomFile {
    #[schema(min_length = 1, max_length = 4096)]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
    /// Octal permissions, e.g. `0600` (default `0644`).
    #[serde(default = "default_mode")]
    #[schema(pattern = r"^0?[0-7]{3}$")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn default_mode() -> String {
    "0644".to_string()
}

/// A command the worker may run to check that the integration works.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConnectionTest {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[schema(max_length = 10000)]
    pub command: String,
    /// Seconds, 1..300 (default 5).
    #[serde(default = "default_timeout")]
    #[schema(minimum = 1, maximum = 300)]
    pub timeout: i64,
}

fn yes() -> bool {
    true
}

fn default_timeout() -> i64 {
    5
}

/// What a custom integration provides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CustomIntegrationConfig {
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    /// Names of the organization's secrets, each given as an env var of the same name.
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub files: Vec<CustomFile>,
    /// Text added to the agent's context when the integration is in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_test: Option<ConnectionTest>,
}

impl CustomIntegrationConfig {
    pub fn check(&self, v: &mut Issues) {
        for name in self.env_vars.keys() {
            v.check(
                is_env_name(name),
                "config.env_vars",
                format!("'{name}' is not a valid variable name"),
            );
        }
        for name in &self.secrets {
            check_secret_name(v, "config.secrets", name);
        }
        v.check(self.files.len() <= 100, "config.files", "at most 100 files");
        for (i, f) in self.files.iter().enumerate() {
            let field = format!("config.files.{i}");
            let path_ok = !f.path.trim().is_empty()
                && f.path.len() <= 4096
                && !f.path.split(['/', '\\']).any(|part| part == "..");
            v.check(
                path_ok,
                &format!("{field}.path"),
                "must be a non-empty path of at most 4096 characters without '..'",
            );
            v.check(
                f.content.is_some() != f.secret_ref.is_some(),
                &field,
                "give exactly one of 'content' and 'secret_ref'",
            );
            if let Some(r) = &f.secret_ref {
                check_secret_name(v, &format!("{field}.secret_ref"), r);
            }
            let mode = f.mode.strip_prefix('0').unwrap_or(&f.mode);
            v.check(
                mode.len() == 3 && mode.bytes().all(|b| (b'0'..=b'7').contains(&b)),
                &format!("{field}.mode"),
                "must be octal permissions such as 0644",
            );
            v.max_length(&format!("{field}.content"), f.content.as_deref(), 1024 * 1024);
        }
        v.max_length("config.context_prompt", self.context_prompt.as_deref(), 100_000);
        if let Some(t) = &self.connection_test {
            v.check(
                (1..=300).contains(&t.timeout),
                "config.connection_test.timeout",
                "must be between 1 and 300 seconds",
            );
            v.check(
                !t.enabled || !t.command.trim().is_empty(),
                "config.connection_test.command",
                "must not be empty when the test is enabled",
            );
            v.max_length("config.connection_test.command", Some(&t.command), 10_000);
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CustomIntegration {
    pub id: Uuid,
    pub organization_id: String,
    pub name: String,
    pub integration_type: String,
    pub description: Option<String>,
    pub status: CustomIntegrationStatus,
    pub config: CustomIntegrationConfig,
    pub tags: Vec<String>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// `POST /api/v1/custom-integrations`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateCustomIntegration {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    /// Free-form kind (`postgres`, `datadog`, …): lowercase letters, digits, `_` and `-`; default `custom`.
    #[schema(pattern = r"^[a-z0-9_-]{1,50}$")]
    pub integration_type: Option<String>,
    #[schema(max_length = 10000)]
    pub description: Option<String>,
    pub status: Option<CustomIntegrationStatus>,
    pub config: Option<CustomIntegrationConfig>,
    #[schema(max_items = 100)]
    pub tags: Option<Vec<String>>,
}

/// Partial update (PATCH and PUT); `config` and `tags` are replaced whole when given.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UpdateCustomIntegration {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: Option<String>,
    #[schema(pattern = r"^[a-z0-9_-]{1,50}$")]
    pub integration_type: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub description: Option<Option<String>>,
    pub status: Option<CustomIntegrationStatus>,
    pub config: Option<CustomIntegrationConfig>,
    #[schema(max_items = 100)]
    pub tags: Option<Vec<String>>,
}

fn check_type(v: &mut Issues, t: &str) {
    v.check(
        (1..=50).contains(&t.len())
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'),
        "integration_type",
        "must be 1 to 50 lowercase letters, digits, '_' or '-'",
    );
}

fn check_tags(v: &mut Issues, tags: &[String]) {
    v.check(tags.len() <= 100, "tags", "at most 100 tags");
    v.check(
        tags.iter().all(|t| t.chars().count() <= 100),
        "tags",
        "each tag has at most 100 characters",
    );
}

impl CreateCustomIntegration {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        v.length("name", &self.name, 1, 200);
        if let Some(t) = &self.integration_type {
            check_type(&mut v, t);
        }
        v.max_length("description", self.description.as_deref(), 10_000);
        if let Some(c) = &self.config {
            c.check(&mut v);
        }
        if let Some(t) = &self.tags {
            check_tags(&mut v, t);
        }
        v.finish()
    }
}

impl UpdateCustomIntegration {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        if let Some(name) = &self.name {
            v.length("name", name, 1, 200);
        }
        if let Some(t) = &self.integration_type {
            check_type(&mut v, t);
        }
        if let Some(Some(d)) = &self.description {
            v.max_length("description", Some(d), 10_000);
        }
        if let Some(c) = &self.config {
            c.check(&mut v);
        }
        if let Some(t) = &self.tags {
            check_tags(&mut v, t);
        }
        v.finish()
    }
}
