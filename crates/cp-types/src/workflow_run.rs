//! Workflow runs (API §7): one start of a workflow version, its steps' states, and what a
//! client may ask of it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::validate::Issues;
use crate::{FieldIssue, wire_enum};

wire_enum! {
    RunStatus {
        Pending = "pending", Running = "running", Paused = "paused",
        WaitingForApproval = "waiting_for_approval", Completed = "completed", Failed = "failed",
        Cancelled = "cancelled"
    }
}

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled)
    }
}

wire_enum! {
    StepStatus {
        Pending = "pending", Ready = "ready", Running = "running",
        WaitingForApproval = "waiting_for_approval", Completed = "completed", Failed = "failed",
        Skipped = "skipped", Cancelled = "cancelled"
    }
}

impl StepStatus {
    pub fn is_ended(self) -> bool {
        matches!(
            self,
            StepStatus::Completed | StepStatus::Failed | StepStatus::Skipped | StepStatus::Cancelled
        )
    }
}

/// Who decided an approval step, and how.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ApprovalDecision {
    pub approved: bool,
    /// The deciding key's name (`timeout` when nobody decided in time).
    pub by: String,
    pub key_id: Option<Uuid>,
    pub comment: Option<String>,
    pub at: DateTime<Utc>,
}

/// One item of a `for_each` step.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ItemRun {
    pub index: usize,
    #[schema(value_type = Object)]
    pub item: Value,
    pub status: StepStatus,
    pub attempts: i64,
    pub execution_id: Option<Uuid>,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub error: Option<String>,
    /// Not started again before this time (Unix ms): a retry's backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
}

/// One step of a run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct StepRun {
    pub step_id: String,
    pub status: StepStatus,
    /// Tries so far (each retry adds one; a run retry starts again from 0).
    pub attempts: i64,
    pub execution_id: Option<Uuid>,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// Not started again before this time (Unix ms): a retry's backoff, or a sleep's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<i64>,
    /// A `for_each` step's items, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemRun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalDecision>,
}

impl StepRun {
    pub fn new(step_id: &str) -> StepRun {
        StepRun {
            step_id: step_id.to_owned(),
            status: StepStatus::Pending,
            attempts: 0,
            execution_id: None,
            output: None,
            error: None,
            started_at: None,
            completed_at: None,
            not_before_ms: None,
            items: Vec::new(),
            approval: None,
        }
    }
}

/// A run as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowRun {
    pub id: Uuid,
    pub organization_id: String,
    pub workflow_id: Uuid,
    pub workflow_name: String,
    /// The workflow version the run follows, whatever updates came since.
    pub workflow_version: i64,
    pub status: RunStatus,
    #[schema(value_type = Object)]
    pub inputs: Value,
    /// The start request's queue, if it named one.
    pub worker_queue_id: Option<Uuid>,
    /// 1, plus one per `retry`.
    pub attempt: i64,
    pub error: Option<String>,
    /// In the definition's order.
    pub steps: Vec<StepRun>,
    /// The run's events so far (the last `seq` of its stream).
    pub event_count: i64,
    pub created_by: String,
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
    /// The execution whose workflow_executor tool started the run.
    pub parent_execution_id: Option<Uuid>,
}

impl WorkflowRun {
    pub fn step(&self, id: &str) -> Option<&StepRun> {
        self.steps.iter().find(|s| s.step_id == id)
    }
}

/// `POST /workflows/{id}/start`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct StartWorkflow {
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<Value>,
    /// The queue of working steps that name none (before the workflow's default).
    pub worker_queue_id: Option<Uuid>,
}

/// `POST /executions/{id}/workflow-runs`: a run's workflow_executor tool starts one of the
/// organization's workflows (by id or name) or an inline definition, linked to the run.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct ToolRunRequest {
    /// The run's id, chosen by the tool so a retried request finds the run it started.
    pub id: Option<Uuid>,
    /// The id or name of one of the organization's workflows.
    #[schema(max_length = 200)]
    pub workflow: Option<String>,
    /// An inline definition (a workflow's create body; `name` optional). It is stored once as
    /// a workflow named after it and its content, so its runs are kept like any other's.
    #[schema(value_type = Option<Object>)]
    pub definition: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<Value>,
}

impl ToolRunRequest {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        v.check(
            self.workflow.is_some() != self.definition.is_some(),
            "workflow",
            "name exactly one of workflow (an id or a name) and definition",
        );
        v.max_length("workflow", self.workflow.as_deref(), 200);
        if let Some(d) = &self.definition {
            v.check(d.is_object(), "definition", "must be an object");
        }
        if let Some(i) = &self.inputs {
            v.check(i.is_object(), "inputs", "must be an object");
        }
        v.finish()
    }
}

/// `POST /workflow-runs/{id}/steps/{step_id}/approve|reject`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct StepDecision {
    #[schema(max_length = 10000)]
    pub comment: Option<String>,
}

/// What a step execution does besides an agent's or team's run: the worker reads it from the
/// execution's metadata (`workflow_step`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepWork {
    Agent,
    Team,
    /// Run by the worker's shell in its sandbox; the output is what the command printed.
    Command {
        command: String,
    },
    /// Sent by the worker (private addresses as for the http tool); the output is the body.
    Http {
        method: String,
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        body: Option<String>,
    },
}

/// Filters of `GET /workflow-runs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunFilter {
    pub workflow_id: Option<Uuid>,
    /// Runs started by this execution's tools.
    pub execution_id: Option<Uuid>,
    pub status: Option<RunStatus>,
    pub since: Option<DateTime<Utc>>,
}
