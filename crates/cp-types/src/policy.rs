//! Policies (API §4): Rego documents, validated when written.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::common::nullable;
use crate::context::{ContextEntity, ContextEntityType};
use crate::org::PolicyEnforcement;
use crate::validate::Issues;
use crate::{FieldIssue, wire_enum};
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

/// Default priority of an association by the kind of entity it attaches to: the broader the
/// scope, the earlier its policies are listed (environment 300, team 200 and agent 100 as the
/// reference has them).
pub fn default_priority(kind: ContextEntityType) -> i64 {
    match kind {
        ContextEntityType::Organization => 500,
        ContextEntityType::Project => 400,
        ContextEntityType::Environment => 300,
        ContextEntityType::Team => 200,
        ContextEntityType::Agent => 100,
    }
}

/// A policy attached to the organization, a project, an environment, a team or an agent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyAssociation {
    pub id: Uuid,
    pub organization_id: String,
    pub policy_id: Uuid,
    pub policy_name: String,
    pub entity_type: ContextEntityType,
    /// The organization's slug, or the UUID of the project, environment, team or agent.
    pub entity_id: String,
    pub enabled: bool,
    pub priority: i64,
    #[schema(value_type = Object)]
    pub metadata: Value,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// `POST /policies/associations`. `policy_name`, which the reference's clients send, is
/// ignored: the name is the policy's own.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreatePolicyAssociation {
    pub policy_id: Uuid,
    pub entity_type: ContextEntityType,
    #[schema(min_length = 1, max_length = 100)]
    pub entity_id: String,
    pub enabled: Option<bool>,
    #[schema(minimum = -1000000, maximum = 1000000)]
    pub priority: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// `PATCH /policies/associations/{id}`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UpdatePolicyAssociation {
    pub enabled: Option<bool>,
    #[schema(minimum = -1000000, maximum = 1000000)]
    pub priority: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

fn check_priority(v: &mut Issues, priority: Option<i64>) {
    if let Some(p) = priority {
        v.check(
            (-1_000_000..=1_000_000).contains(&p),
            "priority",
            "between -1000000 and 1000000",
        );
    }
}

impl CreatePolicyAssociation {
    /// The entity named by `entity_type`/`entity_id`, once the fields are valid.
    pub fn validate(&self) -> Result<ContextEntity, Vec<FieldIssue>> {
        let mut v = Issues::new();
        check_priority(&mut v, self.priority);
        v.object("metadata", self.metadata.as_ref());
        let entity = ContextEntity::parse(self.entity_type, self.entity_id.trim());
        if let Err(issue) = &entity {
            v.push("entity_id", issue.clone());
        }
        v.finish()?;
        Ok(entity.expect("checked above"))
    }
}

impl UpdatePolicyAssociation {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        check_priority(&mut v, self.priority);
        v.object("metadata", self.metadata.as_ref());
        v.finish()
    }
}

wire_enum! {
    /// Where a resolved policy comes from: an association, or the `policy_ids` of a context.
    PolicySource { Association = "association", Context = "context" }
}

/// A policy that applies to an entity, with where it comes from. A policy reached several ways
/// is listed once, from its highest-priority source.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResolvedPolicy {
    pub policy_id: Uuid,
    pub policy_name: String,
    /// The Rego package (`data.…`).
    pub package: String,
    pub version: i64,
    pub source: PolicySource,
    /// The kind of entity the policy is attached to (through an association or a context).
    pub source_type: ContextEntityType,
    pub source_id: String,
    /// The association, when the source is one.
    pub association_id: Option<Uuid>,
    pub priority: i64,
}

/// `POST /policies/evaluate/{entity_type}/{entity_id}`: the input document to evaluate, as
/// Rego's `input` (the organization, caller and entity are filled in where it leaves them out).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct EvaluatePolicies {
    #[schema(value_type = Object)]
    pub input_data: Value,
    /// Accepted for the reference's clients and ignored: the policies are the entity's.
    #[schema(value_type = Option<Vec<String>>)]
    pub policy_ids: Option<Value>,
}

/// `POST /policies/check-authorization/{entity_type}/{entity_id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CheckAuthorization {
    #[schema(min_length = 1, max_length = 200)]
    pub action: String,
    /// A string or an object.
    #[schema(value_type = Option<Object>)]
    pub resource: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
}

/// `POST /policies/evaluate` and `POST /policies/authorize` (the Python client's short paths):
/// the entity is found by id among the organization's agents, teams, environments and projects.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct EntityAuthorization {
    #[schema(min_length = 1, max_length = 100)]
    pub entity_id: String,
    #[schema(min_length = 1, max_length = 200)]
    pub action: String,
    /// A string or an object.
    #[schema(value_type = Option<Object>)]
    pub resource: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
}

fn check_action(v: &mut Issues, action: &str) {
    v.length("action", action, 1, 200);
}

impl EvaluatePolicies {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        v.object("input_data", Some(&self.input_data));
        v.finish()
    }
}

impl CheckAuthorization {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        check_action(&mut v, &self.action);
        v.object("context", self.context.as_ref());
        v.finish()
    }
}

impl EntityAuthorization {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        check_action(&mut v, &self.action);
        v.length("entity_id", &self.entity_id, 1, 100);
        v.object("context", self.context.as_ref());
        v.finish()
    }
}

wire_enum! {
    /// What one policy said: `permit`, `deny`, or `error` (it failed or ran out of time).
    PolicyOutcome { Permit = "permit", Deny = "deny", Error = "error" }
}

/// One policy's part of a decision.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyResult {
    pub policy_name: String,
    pub version: i64,
    /// The policy's `allow` rule, when it defines one for this input.
    pub allow: Option<bool>,
    pub decision: PolicyOutcome,
    pub violations: Vec<String>,
    /// Why the policy could not be evaluated.
    pub error: Option<String>,
}

/// The answer of evaluate, check-authorization and authorize.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyEvaluation {
    /// No evaluated policy yields a violation or `allow == false` (an error counts as a denial).
    pub allowed: bool,
    /// Equal to `allowed`; set by check-authorization and authorize.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorized: Option<bool>,
    pub violations: Vec<String>,
    /// By policy id.
    #[schema(value_type = Object)]
    pub policy_results: std::collections::BTreeMap<Uuid, PolicyResult>,
    pub policies_evaluated: usize,
    /// The organization's enforcement setting (informational here: nothing is enforced).
    pub mode: PolicyEnforcement,
    pub entity_type: ContextEntityType,
    pub entity_id: String,
}

/// The tool a worker is about to call.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ToolCall {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub arguments: Value,
    /// low, medium, high or critical, as the worker rates it.
    #[schema(max_length = 50)]
    pub risk_level: Option<String>,
    /// builtin, skill or mcp.
    #[schema(max_length = 50)]
    pub source: Option<String>,
}

/// `POST /policies/enforce`: the decision on one tool call of a running execution.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct EnforceRequest {
    /// `tool_execution` unless given.
    #[schema(max_length = 200)]
    pub action: Option<String>,
    pub execution_id: Uuid,
    pub tool: ToolCall,
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
}

impl EnforceRequest {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        if let Some(a) = &self.action {
            check_action(&mut v, a);
        }
        v.length("tool.name", &self.tool.name, 1, 200);
        v.max_length("tool.risk_level", self.tool.risk_level.as_deref(), 50);
        v.max_length("tool.source", self.tool.source.as_deref(), 50);
        v.object("context", self.context.as_ref());
        v.finish()
    }
}

/// An enforcement decision (execute or tool call), as answered and as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyDecision {
    pub id: Uuid,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    pub action: String,
    pub entity_type: ContextEntityType,
    pub entity_id: String,
    pub execution_id: Option<Uuid>,
    pub tool_name: Option<String>,
    /// The API key whose request was decided.
    pub key_id: Option<Uuid>,
    /// What the policies said.
    pub allowed: bool,
    /// Whether the action was stopped: a denial in blocking mode. In monitoring mode a denial
    /// is recorded but not blocked.
    pub blocked: bool,
    pub mode: PolicyEnforcement,
    pub violations: Vec<String>,
    pub policies_evaluated: usize,
    pub policy_ids: Vec<Uuid>,
    /// Why an evaluation failed (a failure denies in blocking mode).
    pub error: Option<String>,
    /// SHA-256 of the input document, hex.
    pub input_digest: String,
    pub latency_us: i64,
}

/// `GET /policies/decisions` filters.
#[derive(Debug, Clone, Default)]
pub struct DecisionFilter {
    pub entity_id: Option<String>,
    pub execution_id: Option<Uuid>,
    pub allowed: Option<bool>,
    pub action: Option<String>,
    pub since: Option<DateTime<Utc>>,
}
