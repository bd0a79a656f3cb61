//! Executions, their events and the run context a worker claims (API §5).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::agent::Agent;
use crate::environment::ExecutionEnvironment;
use crate::exec_env::ResolvedExecutionEnvironment;
use crate::org::PolicyEnforcement;
use crate::skill::ResolvedSkill;
use crate::team::Team;
use crate::validate::Issues;
use crate::{FieldIssue, wire_enum};
use chrono::{DateTime, Utc};

wire_enum! {
    ExecutionStatus {
        Pending = "pending", Queued = "queued", Running = "running", WaitingForInput = "waiting_for_input",
        Paused = "paused", Cancelling = "cancelling", Completed = "completed", Failed = "failed",
        Cancelled = "cancelled"
    }
}

wire_enum! {
    ExecutionType { Agent = "agent", Team = "team", WorkflowStep = "workflow_step" }
}

wire_enum! {
    /// Why a run failed when an operator, not the run's author, must act: the `kind` of the
    /// `error` webhook event it sends (docs/webhook-events.md).
    FailureKind {
        WorkerLost = "worker_lost", ProviderAuthRefused = "provider_auth_refused",
        RuntimeUnavailable = "runtime_unavailable", RunNotPrepared = "run_not_prepared"
    }
}

impl ExecutionStatus {
    /// The state machine the server enforces; anything else is a 409.
    pub fn can_become(self, to: ExecutionStatus) -> bool {
        use ExecutionStatus::*;
        matches!(
            (self, to),
            (Pending, Queued | Cancelled | Failed)
                | (Queued, Running | Cancelled | Paused | Failed)
                | (
                    Running,
                    Completed | Failed | WaitingForInput | Cancelling | Paused | Queued
                )
                | (Cancelling, Cancelled | Completed | Failed)
                | (WaitingForInput, Queued | Paused | Cancelled | Completed | Failed)
                | (Paused, Queued | Cancelled)
                | (Completed, Queued)
        )
    }

    /// A run has ended (a `completed` one may still be continued by a message).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExecutionStatus::Completed | ExecutionStatus::Failed | ExecutionStatus::Cancelled
        )
    }

    /// A worker holds a lease on it.
    pub fn is_held(self) -> bool {
        matches!(self, ExecutionStatus::Running | ExecutionStatus::Cancelling)
    }
}

/// Token counts and cost, summed over the runs of an execution.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: i64,
    #[serde(default)]
    pub completion_tokens: i64,
    #[serde(default)]
    pub total_tokens: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

impl Usage {
    /// Saturating: the figures are a worker's word, and an absurd one must not overflow.
    pub fn add(&mut self, other: &Usage) {
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(other.completion_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
        if let Some(c) = other.cost_usd {
            self.cost_usd = Some(self.cost_usd.unwrap_or(0.0) + c);
        }
    }
}

/// `POST /agents/{id}/execute` and `POST /teams/{id}/execute`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ExecuteRequest {
    #[schema(min_length = 1, max_length = 200000)]
    pub prompt: String,
    /// A string so that a non-UUID is a 422 on this field rather than a body error.
    pub worker_queue_id: String,
    #[schema(max_length = 200000)]
    pub system_prompt: Option<String>,
    #[serde(default)]
    pub stream: bool,
    #[schema(value_type = Option<Object>)]
    pub user_metadata: Option<Value>,
    pub execution_environment: Option<ExecutionEnvironment>,
    #[schema(value_type = Option<Object>)]
    pub execution_metadata: Option<Value>,
}

impl ExecuteRequest {
    /// Validates the body; returns the queue id.
    pub fn validate(&self) -> Result<Uuid, Vec<FieldIssue>> {
        let mut v = Issues::new();
        v.check(!self.prompt.trim().is_empty(), "prompt", "must not be empty");
        v.check(self.prompt.len() <= 200_000, "prompt", "at most 200000 bytes");
        v.max_length("system_prompt", self.system_prompt.as_deref(), 200_000);
        v.object("user_metadata", self.user_metadata.as_ref());
        v.object("execution_metadata", self.execution_metadata.as_ref());
        if let Some(ee) = &self.execution_environment {
            ee.check(&mut v, "execution_environment");
        }
        let queue = Uuid::parse_str(self.worker_queue_id.trim());
        v.check(queue.is_ok(), "worker_queue_id", "must be a UUID");
        v.finish()?;
        queue.map_err(|_| vec![FieldIssue::new("worker_queue_id", "must be a UUID")])
    }
}

/// The 201 answer to an execute.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecutionAccepted {
    pub execution_id: Uuid,
    pub status: ExecutionStatus,
    pub worker_queue_id: Uuid,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    pub stream_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Execution {
    pub id: Uuid,
    pub organization_id: String,
    pub execution_type: ExecutionType,
    pub entity_id: Uuid,
    pub entity_name: Option<String>,
    pub worker_queue_id: Option<Uuid>,
    pub prompt: String,
    pub system_prompt: Option<String>,
    pub status: ExecutionStatus,
    pub response: Option<String>,
    pub error_message: Option<String>,
    pub usage: Usage,
    #[schema(value_type = Object)]
    pub execution_metadata: Value,
    #[schema(value_type = Object)]
    pub user_metadata: Value,
    /// The request's own execution environment, applied after the entity's layers.
    pub execution_environment: ExecutionEnvironment,
    /// 1 for the first dispatch; each re-queue after a lost worker adds one.
    pub attempt: i64,
    pub max_attempts: i64,
    /// The worker holding the lease, while running.
    pub worker_id: Option<Uuid>,
    /// Events stored so far (the last `seq`).
    pub event_count: i64,
    /// For a workflow step's execution: its run and step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_run_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::option::serialize")]
    #[schema(value_type = Option<String>)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::common::rfc3339::option::serialize")]
    #[schema(value_type = Option<String>)]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// One event as a worker posts it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewEvent {
    /// `type`, or `event_type` as the reference worker sends it.
    #[serde(alias = "event_type", rename = "type")]
    #[schema(max_length = 64)]
    pub event_type: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: Value,
    pub timestamp: Option<DateTime<Utc>>,
}

/// `POST /executions/{id}/events`: a batch, or one event without the wrapper.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EventBatch {
    Batch { events: Vec<NewEvent> },
    One(NewEvent),
}

/// The most events one post may carry.
pub const MAX_EVENTS_PER_POST: usize = 1000;

impl EventBatch {
    pub fn into_events(self) -> Result<Vec<NewEvent>, Vec<FieldIssue>> {
        let events = match self {
            EventBatch::Batch { events } => events,
            EventBatch::One(e) => vec![e],
        };
        let mut v = Issues::new();
        v.check(!events.is_empty(), "events", "must not be empty");
        v.check(
            events.len() <= MAX_EVENTS_PER_POST,
            "events",
            "at most 1000 events per post",
        );
        for e in &events {
            let ok = !e.event_type.is_empty()
                && e.event_type.len() <= 64
                && e.event_type
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
            v.check(
                ok,
                "events.type",
                "1 to 64 characters of letters, digits, '_', '-', '.'",
            );
            v.check(
                e.event_type != "done",
                "events.type",
                "'done' is written by the server when a run ends",
            );
        }
        v.finish()?;
        Ok(events)
    }
}

/// A stored event: `seq` is gap-free per execution.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecutionEvent {
    pub seq: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    #[schema(value_type = Object)]
    pub data: Value,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventsStored {
    pub execution_id: Uuid,
    /// The `seq` of the first and last stored event of this post.
    pub first_seq: i64,
    pub last_seq: i64,
}

/// `POST /executions/{id}/complete`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct CompleteExecution {
    #[schema(max_length = 1000000)]
    pub response: Option<String>,
    pub usage: Option<Usage>,
    /// `waiting_for_input` instead of `completed` when the run asks the user something.
    #[serde(default)]
    pub waiting_for_input: bool,
}

/// `POST /executions/{id}/fail`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct FailExecution {
    #[schema(max_length = 100000)]
    pub error_message: Option<String>,
    /// Re-queue for another attempt (if any are left) instead of failing now.
    #[serde(default)]
    pub retryable: bool,
    pub usage: Option<Usage>,
    /// Set when the failure needs an operator (a refused provider key, a runtime the worker
    /// host lacks): the run's end also sends an `error` webhook event of this kind.
    pub error_kind: Option<FailureKind>,
}

/// `PATCH /executions/{id}`: a worker reporting its run's status.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct PatchExecution {
    pub status: Option<ExecutionStatus>,
    #[schema(max_length = 1000000)]
    pub response: Option<String>,
    #[schema(max_length = 100000)]
    pub error_message: Option<String>,
    pub usage: Option<Usage>,
    #[schema(value_type = Option<Object>)]
    pub execution_metadata: Option<Value>,
}

/// `POST /executions/{id}/message`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ExecutionMessage {
    #[schema(min_length = 1, max_length = 200000)]
    pub message: String,
}

/// One message of `GET /executions/{id}/session`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionMessage {
    pub role: String,
    pub content: String,
    pub timestamp: String,
    pub message_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub tool_input: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub tool_output: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Session {
    pub session_id: String,
    pub execution_id: Uuid,
    pub messages: Vec<SessionMessage>,
    pub message_count: i64,
}

/// The model a run uses, with where and how to reach its provider.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunModel {
    pub id: Uuid,
    pub value: String,
    pub provider: String,
    /// The name sent to the provider: `provider_model`, else `value` after its first `/`.
    pub provider_model: String,
    pub base_url: Option<String>,
    /// The provider key, read from the secret named by `api_key_secret`; null when no such
    /// secret is stored (the worker then reads the variable of that name on its host).
    pub api_key: Option<String>,
    pub api_key_secret: Option<String>,
    #[schema(value_type = Object)]
    pub llm_config: Value,
    /// Prices per 1,000 tokens, for the run's cost.
    #[serde(default)]
    pub pricing: Option<crate::model::Pricing>,
}

impl RunModel {
    /// What `usage` costs at this model's prices (none without prices).
    pub fn cost(&self, usage: &Usage) -> Option<f64> {
        self.pricing.as_ref().map(|p| {
            (usage.prompt_tokens as f64 * p.input_per_1k + usage.completion_tokens as f64 * p.output_per_1k) / 1000.0
        })
    }
}

/// Everything a worker needs to run a claimed execution.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Claim {
    /// Must accompany every event, complete and fail of this run (`X-Lease-Id`).
    pub lease_id: Uuid,
    /// The lease lasts this long past each heartbeat.
    pub lease_seconds: i64,
    pub execution: Execution,
    pub agent: Option<Agent>,
    pub team: Option<Team>,
    /// A team's member agents, in member order.
    pub members: Vec<Agent>,
    /// The models of a team's members, by model value (each member runs on its own model).
    #[serde(default)]
    pub member_models: BTreeMap<String, RunModel>,
    /// The resolved skills of a team's members, by agent id.
    #[serde(default)]
    pub member_skills: BTreeMap<Uuid, Vec<ResolvedSkill>>,
    /// The request's system prompt, else the entity's.
    pub system_prompt: Option<String>,
    pub model: Option<RunModel>,
    pub skills: Vec<ResolvedSkill>,
    /// Env vars with secret and integration values resolved.
    pub environment: ResolvedExecutionEnvironment,
    pub env_vars: BTreeMap<String, String>,
    pub policy_enforcement: PolicyEnforcement,
    /// Earlier messages of this conversation, oldest first (continuations).
    pub history: Vec<SessionMessage>,
    /// A workflow step's work when it is not an agent's or team's run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<crate::workflow_run::StepWork>,
}

/// `POST /workers/{id}/poll`: a claim, or things to stop, or both.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct PollAnswer {
    pub claim: Option<Box<Claim>>,
    pub cancel_execution_ids: Vec<Uuid>,
    pub drain: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ExecutionStatus::*;

    #[test]
    fn terminal_states_only_leave_by_a_new_message() {
        for to in ExecutionStatus::ALL {
            assert!(!Failed.can_become(*to) && !Cancelled.can_become(*to));
            assert_eq!(Completed.can_become(*to), *to == Queued);
        }
    }

    #[test]
    fn a_run_ends_only_through_running_or_cancelling() {
        assert!(Queued.can_become(Running) && Running.can_become(Completed));
        assert!(!Queued.can_become(Completed) && !Paused.can_become(Running));
        assert!(Running.can_become(Cancelling) && Cancelling.can_become(Cancelled));
        assert!(!Cancelling.can_become(Running) && !Cancelling.can_become(Queued));
    }

    #[test]
    fn event_batches_accept_both_shapes_and_refuse_done() {
        let one: EventBatch = serde_json::from_str(r#"{"event_type":"message","data":{"content":"hi"}}"#).unwrap();
        assert_eq!(one.into_events().unwrap().len(), 1);
        let many: EventBatch = serde_json::from_str(r#"{"events":[{"type":"a"},{"type":"b","data":{}}]}"#).unwrap();
        assert_eq!(many.into_events().unwrap().len(), 2);
        let done: EventBatch = serde_json::from_str(r#"{"type":"done"}"#).unwrap();
        assert!(done.into_events().is_err());
        let empty: EventBatch = serde_json::from_str(r#"{"events":[]}"#).unwrap();
        assert!(empty.into_events().is_err());
    }
}
