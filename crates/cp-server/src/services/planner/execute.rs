//! Running a plan: its steps become a workflow (one agent or team step each, dependencies
//! kept) whose prompts carry each step's task and its dependencies' outputs, and a run of it
//! starts. The plan's text reaches the prompts as the workflow's input defaults, never as
//! template source, so nothing a model wrote is evaluated as a template.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cp_store::StoreError;
use cp_types::ErrorCode;
use cp_types::plan::{ExecuteInlinePlan, ExecutePlan, PlanExecution, TaskPlan};
use cp_types::workflow::{CreateWorkflow, Workflow, WorkflowStep};
use cp_types::workflow_run::StartWorkflow;
use serde_json::{Value, json};
use uuid::Uuid;

use super::heuristic::clip;
use crate::services::caller::Caller;
use crate::services::error::{ServiceError, ServiceResult, or_not_found};
use crate::services::{workflow_runs, workflows};
use crate::state::AppState;

/// What the caller adds to a plan's run.
struct RunOptions<'a> {
    worker_queue_id: Option<Uuid>,
    inputs: Option<&'a Value>,
    answers: &'a [String],
    force: bool,
}

/// `POST /tasks/plans/{id}/execute`: runs the plan's latest iteration.
pub async fn stored(state: &AppState, caller: &Caller, id: Uuid, req: ExecutePlan) -> ServiceResult<PlanExecution> {
    req.validate()?;
    let plans = state.store.task_plans(&caller.org_id);
    let plan = plans.get(id).await.map_err(or_not_found("plan"))?;
    let name = format!("plan-{}-{}", plan.id, plan.iteration);
    let options = RunOptions {
        worker_queue_id: req.worker_queue_id,
        inputs: req.inputs.as_ref(),
        answers: &req.answers,
        force: req.force,
    };
    let (workflow_id, workflow_run_id) = run(state, caller, &plan.plan, &name, &plan.description, options).await?;
    plans
        .add_run(id, plan.iteration, workflow_id, workflow_run_id)
        .await
        .map_err(or_not_found("plan"))?;
    Ok(PlanExecution {
        workflow_id,
        workflow_run_id,
        plan_id: Some(id),
    })
}

/// `POST /tasks/plan/execute`: runs a plan the client holds; the workflow's checks refuse
/// steps that name no agent or team of the organization.
pub async fn inline(state: &AppState, caller: &Caller, req: ExecuteInlinePlan) -> ServiceResult<PlanExecution> {
    req.validate()?;
    let options = RunOptions {
        worker_queue_id: Some(req.worker_queue_id),
        inputs: req.inputs.as_ref(),
        answers: &req.answers,
        force: req.force,
    };
    let name = format!("plan-{}", Uuid::now_v7());
    let task = req.plan.title.clone();
    let (workflow_id, workflow_run_id) = match run(state, caller, &req.plan, &name, &task, options).await {
        Ok(started) => started,
        Err(e) => {
            // The name is this request's own: a workflow it made for a run that did not start goes.
            let workflows = state.store.workflows(&caller.org_id);
            if let Ok(w) = workflows.by_name(&name).await
                && let Err(gone) = workflows.delete(w.id).await
            {
                tracing::warn!(workflow = %w.id, error = %gone, "could not delete an unstarted plan's workflow");
            }
            return Err(e);
        }
    };
    Ok(PlanExecution {
        workflow_id,
        workflow_run_id,
        plan_id: None,
    })
}

async fn run(
    state: &AppState,
    caller: &Caller,
    plan: &TaskPlan,
    name: &str,
    task: &str,
    options: RunOptions<'_>,
) -> ServiceResult<(Uuid, Uuid)> {
    let unanswered: Vec<&String> = plan.questions.iter().skip(options.answers.len()).collect();
    if !unanswered.is_empty() && !options.force {
        return Err(ServiceError::new(
            ErrorCode::Conflict,
            format!(
                "the plan has {} unanswered question(s): send their answers in order as `answers`, refine the plan, or set `force`",
                unanswered.len()
            ),
        )
        .with_details(json!({ "questions": unanswered })));
    }
    if plan.steps.is_empty() {
        return Err(ServiceError::invalid("plan", "the plan has no steps"));
    }
    let queue = options
        .worker_queue_id
        .or(plan.recommended_execution.worker_queue_id)
        .ok_or_else(|| ServiceError::invalid("worker_queue_id", "the plan recommends no queue: name one"))?;
    let workflow = workflow_for(state, caller, plan, name, task).await?;
    let start = StartWorkflow {
        inputs: Some(json!({"context": context(plan, &options)})),
        worker_queue_id: Some(queue),
    };
    let run = workflow_runs::start(state, caller, workflow.id, start, Uuid::now_v7(), None).await?;
    Ok((workflow.id, run.id))
}

/// The plan's workflow: the one an earlier run of the same iteration made, or a new one. A
/// workflow of that name with other steps is not reused (someone else wrote it).
async fn workflow_for(
    state: &AppState,
    caller: &Caller,
    plan: &TaskPlan,
    name: &str,
    task: &str,
) -> ServiceResult<Workflow> {
    let steps = steps(plan)?;
    let inputs_schema = inputs_schema(plan, task);
    let workflows_of = state.store.workflows(&caller.org_id);
    let ours = |w: Workflow| {
        if w.steps == steps && w.inputs_schema == inputs_schema {
            Ok(w)
        } else {
            Err(ServiceError::conflict(format!(
                "workflow '{name}' exists and is not this plan's: rename or delete it"
            )))
        }
    };
    match workflows_of.by_name(name).await {
        Ok(w) => return ours(w),
        Err(StoreError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    let req = CreateWorkflow {
        name: name.to_owned(),
        description: Some(clip(&format!("{}: {}", plan.title, plan.summary), 10_000)),
        inputs_schema: Some(inputs_schema.clone()),
        steps: steps.clone(),
        default_worker_queue_id: None,
        project_id: None,
        tags: Some(vec!["task-plan".into()]),
    };
    match workflows::create(state, caller, req).await {
        Ok(w) => Ok(w),
        // Two executions of the same iteration at once: the other one made it.
        Err(e) if e.code == ErrorCode::Conflict => {
            ours(workflows_of.by_name(name).await.map_err(workflows::not_found)?)
        }
        Err(e) => Err(e),
    }
}

/// One agent or team step per plan step. The prompt reads the step's text from the inputs'
/// defaults and appends each dependency's output.
fn steps(plan: &TaskPlan) -> ServiceResult<Vec<WorkflowStep>> {
    let titles: BTreeMap<&str, &str> = plan.steps.iter().map(|s| (s.id.as_str(), s.title.as_str())).collect();
    plan.steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut prompt = format!(
                "You are doing one step of a plan for this task:\n{{{{ inputs.plan.task }}}}\n\n\
                 {{{{ inputs.plan.steps[{id:?}] }}}}{{% if inputs.context %}}\n\n{{{{ inputs.context }}}}{{% endif %}}",
                id = s.id
            );
            for dep in &s.depends_on {
                if titles.contains_key(dep.as_str()) {
                    let _ = write!(
                        prompt,
                        "\n\nResult of the step \"{{{{ inputs.plan.titles[{dep:?}] }}}}\" this one depends on:\n{{{{ steps.{dep}.output }}}}"
                    );
                }
            }
            let (kind, entity) = match (s.agent_id, s.team_id) {
                (Some(a), None) => ("agent", json!({"agent_id": a})),
                (None, Some(t)) => ("team", json!({"team_id": t})),
                _ => {
                    return Err(ServiceError::invalid(
                        &format!("plan.steps[{i}]"),
                        "must name exactly one of agent_id and team_id",
                    ));
                }
            };
            let mut step = json!({
                "id": s.id, "name": clip(&s.title, 200), "type": kind,
                "depends_on": s.depends_on, "prompt": prompt,
            });
            if let (Some(obj), Some(extra)) = (step.as_object_mut(), entity.as_object()) {
                obj.extend(extra.clone());
            }
            serde_json::from_value(step).map_err(|e| ServiceError::invalid(&format!("plan.steps[{i}]"), e.to_string()))
        })
        .collect()
}

/// The workflow's inputs: the task once, the steps' texts and titles as defaults, and
/// `context` (the run's answers and inputs).
fn inputs_schema(plan: &TaskPlan, task: &str) -> Value {
    let mut texts = serde_json::Map::new();
    let mut titles = serde_json::Map::new();
    for s in &plan.steps {
        let mut text = format!("The step: {}\n{}", s.title, s.description);
        if !s.skills_to_use.is_empty() {
            let _ = write!(text, "\n\nSkills to use: {}", s.skills_to_use.join(", "));
        }
        if !s.expected_output.is_empty() {
            let _ = write!(text, "\nExpected output: {}", s.expected_output);
        }
        texts.insert(s.id.clone(), Value::String(text));
        titles.insert(s.id.clone(), Value::String(s.title.clone()));
    }
    json!({
        "type": "object",
        "properties": {
            "plan": {"type": "object", "default": {"task": task.trim(), "steps": texts, "titles": titles}},
            "context": {"type": "string", "default": ""}
        }
    })
}

/// The answers to the plan's questions and the run's inputs, as text every step reads.
fn context(plan: &TaskPlan, options: &RunOptions<'_>) -> String {
    let mut text = String::new();
    let answered: Vec<(&String, &String)> = plan.questions.iter().zip(options.answers).collect();
    if !answered.is_empty() {
        text.push_str("Answers to the plan's questions:");
        for (q, a) in answered {
            let _ = write!(text, "\n- {q}\n  {a}");
        }
    }
    if let Some(inputs) = options.inputs.filter(|i| i.as_object().is_some_and(|o| !o.is_empty())) {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        let _ = write!(text, "Inputs of this run (JSON): {inputs}");
    }
    text
}
