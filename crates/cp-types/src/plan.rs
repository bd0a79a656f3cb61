//! Task planning (API §6): a task turned into steps over the organization's agents and teams,
//! kept as a resource with every refinement, and run as a workflow.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::validate::Issues;
use crate::{FieldIssue, wire_enum};

/// Longest task description, in characters.
pub const MAX_DESCRIPTION: usize = 20_000;
/// Most steps a plan keeps (the rest is dropped with a note).
pub const MAX_PLAN_STEPS: usize = 30;
/// Most iterations one plan keeps (its first and its refinements).
pub const MAX_PLAN_ITERATIONS: i64 = 50;

wire_enum! {
    Priority { Low = "low", Medium = "medium", High = "high", Critical = "critical" }
}

wire_enum! {
    /// Who made a plan: the organization's model, or matching when no model could.
    Planner { Llm = "llm", Heuristic = "heuristic" }
}

/// `POST /tasks/plan` (and `/planning/plan`, whose client sends `task_description`).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct PlanRequest {
    #[serde(alias = "task_description")]
    #[schema(min_length = 1, max_length = 20000)]
    pub description: String,
    pub priority: Option<Priority>,
    pub project_id: Option<Uuid>,
    /// Anything the planner should know (shown to the model as JSON, at most 64 KiB).
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
    /// Fewer, larger steps and a shorter answer.
    pub quick_mode: Option<bool>,
    /// Refines that stored plan: the answer is its next iteration.
    pub previous_plan_id: Option<Uuid>,
    /// What to change, with `previous_plan_id`.
    #[schema(max_length = 20000)]
    pub feedback: Option<String>,
    /// The model to plan with (id or value); the organization's default model otherwise.
    #[schema(max_length = 200)]
    pub planner_model_id: Option<String>,
}

impl PlanRequest {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        v.length("description", self.description.trim(), 1, MAX_DESCRIPTION);
        v.max_length("feedback", self.feedback.as_deref(), MAX_DESCRIPTION);
        v.max_length("planner_model_id", self.planner_model_id.as_deref(), 200);
        if let Some(context) = &self.context {
            v.check(context.is_object(), "context", "must be a JSON object");
            v.check(
                context.to_string().len() <= 64 << 10,
                "context",
                "must be at most 64 KiB as JSON",
            );
        }
        v.check(
            self.feedback.is_none() || self.previous_plan_id.is_some(),
            "feedback",
            "refines a plan: name it with previous_plan_id",
        );
        v.finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Complexity {
    /// Fibonacci-like: 1, 2, 3, 5, 8, 13 or 21.
    pub story_points: i64,
    /// `low`, `medium` or `high`.
    pub confidence: String,
    pub reasoning: String,
}

/// One step: who does it, after which steps, with which skills.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PlanStep {
    pub id: String,
    pub title: String,
    pub description: String,
    pub agent_id: Option<Uuid>,
    pub team_id: Option<Uuid>,
    /// The agent's or team's name.
    pub entity_name: Option<String>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub skills_to_use: Vec<String>,
    #[serde(default)]
    pub expected_output: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecommendedExecution {
    /// `agent` or `team`.
    pub entity_type: String,
    pub entity_id: Option<Uuid>,
    pub entity_name: Option<String>,
    /// A queue with an online worker, when there is one.
    pub worker_queue_id: Option<Uuid>,
    pub reasoning: String,
}

/// One model's share of running the plan, estimated from its pricing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LlmCost {
    /// The model's value.
    pub model: String,
    /// The steps it runs.
    pub steps: Vec<String>,
    pub estimated_input_tokens: u64,
    pub estimated_output_tokens: u64,
    /// `null` when the model has no pricing.
    pub cost_usd: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CostEstimate {
    /// The sum over models with a pricing.
    pub estimated_cost_usd: f64,
    pub llm_costs: Vec<LlmCost>,
}

/// A plan (API §6).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskPlan {
    pub title: String,
    pub summary: String,
    pub complexity: Complexity,
    pub steps: Vec<PlanStep>,
    pub recommended_execution: RecommendedExecution,
    pub cost_estimate: CostEstimate,
    #[serde(default)]
    pub risks: Vec<String>,
    #[serde(default)]
    pub prerequisites: Vec<String>,
    #[serde(default)]
    pub success_criteria: Vec<String>,
    /// What the planner needs answered before the plan runs.
    #[serde(default)]
    pub questions: Vec<String>,
    /// What the server changed in the model's answer (unknown ids dropped, say).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Tokens the planner's model call used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PlanningUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: Option<f64>,
}

/// The answer of `POST /tasks/plan`, and the `complete` event of its stream.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanResponse {
    /// The stored plan's id.
    pub id: Uuid,
    /// 1 for a new plan; each refinement adds one.
    pub iteration: i64,
    pub plan: TaskPlan,
    pub planner: Planner,
    /// The model that planned (`planner: llm`).
    pub model: Option<String>,
    /// Why the heuristic planned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planner_reason: Option<String>,
    pub usage: Option<PlanningUsage>,
}

/// One version of a stored plan: the first, then one per refinement.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanIteration {
    pub iteration: i64,
    /// The refinement's feedback (none for the first).
    pub feedback: Option<String>,
    pub plan: TaskPlan,
    pub planner: Planner,
    pub model: Option<String>,
    pub planner_reason: Option<String>,
    pub usage: Option<PlanningUsage>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
}

/// A workflow run a plan started, with its state now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanRun {
    pub workflow_id: Uuid,
    pub workflow_run_id: Uuid,
    /// The iteration it ran.
    pub iteration: i64,
    /// The run's status (`deleted` once the run is gone).
    pub status: String,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
}

/// A stored plan: its latest iteration, and (one plan read alone) every iteration and run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StoredPlan {
    pub id: Uuid,
    pub organization_id: String,
    /// The task as asked.
    pub description: String,
    pub priority: Option<Priority>,
    pub project_id: Option<Uuid>,
    pub title: String,
    pub iteration: i64,
    pub plan: TaskPlan,
    pub planner: Planner,
    pub model: Option<String>,
    pub planner_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<Vec<PlanIteration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<Vec<PlanRun>>,
    pub created_by: String,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// `POST /tasks/plans/{id}/execute`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct ExecutePlan {
    /// Where the steps run; the plan's recommended queue otherwise.
    pub worker_queue_id: Option<Uuid>,
    /// Given to every step with its task.
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<Value>,
    /// Answers to the plan's `questions`, in order.
    #[serde(default)]
    pub answers: Vec<String>,
    /// Runs the plan even with questions unanswered.
    #[serde(default)]
    pub force: bool,
}

impl ExecutePlan {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        v.object("inputs", self.inputs.as_ref());
        check_answers(&mut v, &self.answers);
        v.finish()
    }
}

/// `POST /tasks/plan/execute`: a plan held by the client (from the stream, say).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ExecuteInlinePlan {
    pub plan: TaskPlan,
    pub worker_queue_id: Uuid,
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<Value>,
    #[serde(default)]
    pub answers: Vec<String>,
    #[serde(default)]
    pub force: bool,
}

impl ExecuteInlinePlan {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        v.object("inputs", self.inputs.as_ref());
        check_answers(&mut v, &self.answers);
        let p = &self.plan;
        v.max_length("plan.title", Some(&p.title), 200);
        v.max_length("plan.summary", Some(&p.summary), 5_000);
        v.check(!p.steps.is_empty(), "plan.steps", "the plan has no steps");
        v.check(
            p.steps.len() <= MAX_PLAN_STEPS,
            "plan.steps",
            format!("at most {MAX_PLAN_STEPS} steps"),
        );
        v.check(p.questions.len() <= 20, "plan.questions", "at most 20");
        for (i, s) in p.steps.iter().enumerate().take(MAX_PLAN_STEPS) {
            let at = |f: &str| format!("plan.steps[{i}].{f}");
            v.check(
                crate::workflow::is_step_id(&s.id),
                &at("id"),
                "a letter or _, then letters, digits and _ (at most 64)",
            );
            v.max_length(&at("title"), Some(&s.title), 200);
            v.max_length(&at("description"), Some(&s.description), 10_000);
            v.max_length(&at("expected_output"), Some(&s.expected_output), 2_000);
            v.check(s.depends_on.len() <= MAX_PLAN_STEPS, &at("depends_on"), "too many");
            v.check(s.skills_to_use.len() <= 20, &at("skills_to_use"), "at most 20");
        }
        v.finish()
    }
}

fn check_answers(v: &mut Issues, answers: &[String]) {
    v.check(answers.len() <= 50, "answers", "at most 50");
    for (i, a) in answers.iter().enumerate().take(50) {
        v.max_length(&format!("answers[{i}]"), Some(a), 10_000);
    }
}

/// What executing a plan started.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanExecution {
    pub workflow_id: Uuid,
    pub workflow_run_id: Uuid,
    /// The stored plan (none for a plan sent inline).
    pub plan_id: Option<Uuid>,
}
