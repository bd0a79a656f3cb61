//! Policies (API §4): Rego documents, validated when written.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::FieldIssue;
use crate::common::nullable;
use crate::validate::Issues;
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Policy {
    pub id: Uuid,
    pub organization_id: String,
    pub name: String,
    pub description: Option<String>,
    /// Rego v1.
    pub policy_content: String,
    /// The Rego package (`data.…`) the content declares.
    pub package: String,
    pub enabled: bool,
    pub tags: Vec<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// 1 at creation; each change of `policy_content` adds one.
    pub version: i64,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// The largest policy document accepted.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreatePolicy {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[schema(max_length = 10000)]
    pub description: Option<String>,
    #[schema(min_length = 1, max_length = 262144)]
    pub policy_content: String,
    pub enabled: Option<bool>,
    #[schema(max_items = 100)]
    pub tags: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// Partial update: absent fields stay, `null` clears the description.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UpdatePolicy {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub description: Option<Option<String>>,
    #[schema(min_length = 1, max_length = 262144)]
    pub policy_content: Option<String>,
    pub enabled: Option<bool>,
    #[schema(max_items = 100)]
    pub tags: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

fn check_common(v: &mut Issues, content: Option<&str>, tags: Option<&Vec<String>>, metadata: Option<&Value>) {
    if let Some(c) = content {
        v.check(!c.trim().is_empty(), "policy_content", "must not be empty");
        v.check(c.len() <= MAX_POLICY_BYTES, "policy_content", "at most 262144 bytes");
    }
    if let Some(tags) = tags {
        v.check(tags.len() <= 100, "tags", "at most 100 tags");
        v.check(
            tags.iter().all(|t| t.chars().count() <= 100),
            "tags",
            "each tag has at most 100 characters",
        );
    }
    v.object("metadata", metadata);
}

impl CreatePolicy {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        v.length("name", &self.name, 1, 200);
        v.max_length("description", self.description.as_deref(), 10_000);
        check_common(
            &mut v,
            Some(&self.policy_content),
            self.tags.as_ref(),
            self.metadata.as_ref(),
        );
        v.finish()
    }
}

impl UpdatePolicy {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        if let Some(name) = &self.name {
            v.length("name", name, 1, 200);
        }
        v.max_length("description", self.description.clone().flatten().as_deref(), 10_000);
        check_common(
            &mut v,
            self.policy_content.as_deref(),
            self.tags.as_ref(),
            self.metadata.as_ref(),
        );
        v.finish()
    }
}

/// `POST /policies/validate`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ValidatePolicy {
    #[schema(max_length = 262144)]
    pub policy_content: String,
}

/// One compiler complaint.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyError {
    pub message: String,
    pub line: Option<u32>,
}

/// `{valid, errors[]}` of both validate endpoints.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyValidation {
    pub valid: bool,
    pub errors: Vec<PolicyError>,
    /// The package the content declares, when it compiles.
    pub package: Option<String>,
}
