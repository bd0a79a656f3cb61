//! Task planning (API §6): the organization's model turns a task into steps over its agents
//! and teams, checked against the database; with no usable model a deterministic heuristic
//! plans instead. Plans are stored with every refinement and run as workflows (`execute`).

pub mod catalog;
mod check;
mod cost;
pub mod execute;
mod heuristic;
mod model;

use std::time::Duration;

use cp_llm::{Delta, LlmError, Message, Usage};
use cp_store::task_plans::{NewIteration, NewPlan};
use cp_types::plan::{MAX_PLAN_ITERATIONS, PlanRequest, PlanResponse, Planner, PlanningUsage, StoredPlan, TaskPlan};
use serde_json::Value;
use tokio::sync::mpsc;

use self::catalog::Catalog;
use self::check::{Checked, check, json_in, parse};
use self::heuristic::Index;
use super::caller::Caller;
use super::error::{ServiceError, ServiceResult, or_not_found};
use crate::state::AppState;

/// The longest a model may take over a plan, both attempts included.
const PLAN_DEADLINE: Duration = Duration::from_secs(240);

/// What a plan's stream shows while the plan is made.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A stage began: `context`, `planning`, `repairing`, `heuristic`, `storing`.
    Stage { stage: &'static str, message: String },
    /// Text or tool arguments as the model produces them.
    Chunk(String),
}

/// Where progress goes: nowhere for a plain request, to the stream for `/tasks/plan/stream`.
#[derive(Clone, Default)]
pub struct Events(Option<mpsc::UnboundedSender<Progress>>);

impl Events {
    pub fn channel() -> (Events, mpsc::UnboundedReceiver<Progress>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Events(Some(tx)), rx)
    }

    fn send(&self, p: Progress) {
        if let Some(tx) = &self.0 {
            // A client that left does not stop the plan: it is stored all the same.
            let _ = tx.send(p);
        }
    }

    fn stage(&self, stage: &'static str, message: String) {
        self.send(Progress::Stage { stage, message });
    }
}

/// A request checked, with what it plans over: everything that can fail with a status
/// before a stream starts.
pub struct Prepared {
    req: PlanRequest,
    catalog: Catalog,
    previous: Option<StoredPlan>,
}

pub async fn prepare(state: &AppState, caller: &Caller, req: PlanRequest) -> ServiceResult<Prepared> {
    req.validate()?;
    let org = caller.org_id.as_str();
    let previous = match req.previous_plan_id {
        Some(id) => Some(
            state
                .store
                .task_plans(org)
                .get(id)
                .await
                .map_err(or_not_found("plan"))?,
        ),
        None => None,
    };
    let mut req = req;
    if let Some(p) = &previous {
        if p.iteration >= MAX_PLAN_ITERATIONS {
            return Err(ServiceError::conflict(format!(
                "the plan has {MAX_PLAN_ITERATIONS} iterations, the most one plan keeps: start a new plan"
            )));
        }
        // A refinement plans over the same project unless it names another.
        req.project_id = req.project_id.or(p.project_id);
    }
    if let Some(project) = req.project_id
        && let Err(e) = state.store.projects(org).get(project).await
    {
        return Err(match e {
            cp_store::StoreError::NotFound => {
                ServiceError::invalid("project_id", "no project with this id in the organization")
            }
            other => other.into(),
        });
    }
    let catalog = catalog::load(state, org, req.project_id).await?;
    if !catalog.has_agent() {
        return Err(ServiceError::invalid(
            "description",
            match req.project_id {
                Some(_) => "the project has no agent to plan with: add an agent to it first",
                None => "the organization has no agent to plan with: create an agent first",
            },
        ));
    }
    Ok(Prepared { req, catalog, previous })
}

/// Makes the plan, stores it (a new plan, or the next iteration of `previous_plan_id`) and
/// answers it.
pub async fn plan(
    state: &AppState,
    caller: &Caller,
    prepared: Prepared,
    events: &Events,
) -> ServiceResult<PlanResponse> {
    let Prepared { req, catalog, previous } = prepared;
    let agents = catalog
        .candidates
        .iter()
        .filter(|c| c.kind == catalog::Kind::Agent)
        .count();
    events.stage(
        "context",
        format!(
            "Planning over {agents} agent(s), {} team(s) and {} active queue(s)",
            catalog.candidates.len() - agents,
            catalog.queues.len()
        ),
    );
    let index = catalog.index.clone();
    let quick = req.quick_mode == Some(true);
    let task = req.description.trim();
    let (made, usage) = match model::choose(state, caller, &catalog.models, req.planner_model_id.as_deref()).await? {
        Err(reason) => (Err(reason), None),
        Ok(planner) => {
            events.stage("planning", format!("Asking model {}", planner.model.value));
            let previous_plan = previous.as_ref().map(|p| &p.plan);
            let asked = ask(&planner, &req, &catalog, &index, previous_plan, events);
            let (made, used) = match tokio::time::timeout(PLAN_DEADLINE, asked).await {
                Ok(answer) => answer,
                Err(_) => (
                    Err(format!(
                        "model {} did not plan within {PLAN_DEADLINE:?}",
                        planner.model.value
                    )),
                    Usage::default(),
                ),
            };
            let cost = planner
                .model
                .pricing
                .map(|p| {
                    (used.prompt_tokens as f64 * p.input_per_1k + used.completion_tokens as f64 * p.output_per_1k)
                        / 1000.0
                })
                .filter(|c| c.is_finite());
            let usage = PlanningUsage {
                prompt_tokens: used.prompt_tokens,
                completion_tokens: used.completion_tokens,
                cost_usd: cost,
            };
            (made.map(|p| (p, planner.model.value)), Some(usage))
        }
    };
    let (mut plan, planner, model, reason) = match made {
        Ok((plan, model)) => (plan, Planner::Llm, Some(model), None),
        Err(reason) => {
            tracing::info!(org = %caller.org_id, %reason, "planning with the heuristic");
            events.stage("heuristic", format!("Planning without a model: {reason}"));
            let text = match &req.feedback {
                Some(f) => format!("{task}\n{f}"),
                None => task.to_owned(),
            };
            (
                heuristic::plan(&catalog, &index, &text, quick, &reason),
                Planner::Heuristic,
                None,
                Some(reason),
            )
        }
    };
    let default_model = catalog.models.values().find(|m| m.is_default).map(|m| m.value.as_str());
    plan.cost_estimate = cost::estimate(&plan, &catalog, default_model);
    events.stage("storing", "Storing the plan".into());
    let by = caller.key_id.to_string();
    let iteration = NewIteration {
        feedback: req.feedback.as_deref(),
        plan: &plan,
        planner,
        model: model.as_deref(),
        planner_reason: reason.as_deref(),
        usage,
    };
    let plans = state.store.task_plans(&caller.org_id);
    let stored = match &previous {
        Some(p) => plans.refine(p.id, task, iteration).await,
        None => {
            let new = NewPlan {
                description: task,
                priority: req.priority,
                project_id: req.project_id,
                created_by: &by,
            };
            plans.create(new, iteration).await
        }
    }
    .map_err(or_not_found("plan"))?;
    Ok(PlanResponse {
        id: stored.id,
        iteration: stored.iteration,
        plan,
        planner,
        model,
        planner_reason: reason,
        usage,
    })
}

/// Asks the model, and once more with the problems of its answer; the plan (fixed where it
/// is still wrong), or why the heuristic must plan. With the tokens used either way.
async fn ask(
    planner: &model::Planner,
    req: &PlanRequest,
    catalog: &Catalog,
    index: &Index,
    previous: Option<&TaskPlan>,
    events: &Events,
) -> (Result<TaskPlan, String>, Usage) {
    let mut chat = model::request(req, catalog, index, previous);
    let mut used = Usage::default();
    let mut first: Option<Checked> = None;
    for attempt in 0..2 {
        let completion = planner
            .client
            .stream(&chat, |d| match d {
                Delta::Text(t) => events.send(Progress::Chunk(t)),
                Delta::ToolCall(c) => events.send(Progress::Chunk(c.arguments.to_string())),
                Delta::Thinking(_) => {}
            })
            .await;
        let completion = match completion {
            Ok(c) => c,
            Err(e) => {
                // The provider's own words may echo a key: a refused key is said without them.
                let why = match e {
                    LlmError::Auth(_) => "the provider refused the model's API key".to_owned(),
                    other => heuristic::clip(&other.to_string(), 300),
                };
                let reason = format!("model {} could not answer: {why}", planner.model.value);
                return (first.map(|c| c.plan).ok_or(reason), used);
            }
        };
        used.prompt_tokens = used.prompt_tokens.saturating_add(completion.usage.prompt_tokens);
        used.completion_tokens = used
            .completion_tokens
            .saturating_add(completion.usage.completion_tokens);
        let call = completion.tool_calls.iter().find(|c| c.name == model::SUBMIT_PLAN);
        let answer: Option<Value> = call.map(|c| c.arguments.clone()).or_else(|| json_in(&completion.text));
        let outcome = match answer {
            None => Err(vec![format!(
                "no plan was submitted: call {} with the plan as its arguments",
                model::SUBMIT_PLAN
            )]),
            Some(v) => parse(&v).and_then(|v| check(v, catalog, index, req.description.trim())),
        };
        let problems = match outcome {
            Ok(c) if c.problems.is_empty() || attempt == 1 => return (Ok(c.plan), used),
            Ok(c) => {
                let problems = c.problems.clone();
                first = Some(c);
                problems
            }
            Err(errors) if attempt == 1 => {
                let reason = format!(
                    "model {}'s answer was not a valid plan twice: {}",
                    planner.model.value,
                    heuristic::clip(&errors.join("; "), 1000)
                );
                return (first.map(|c| c.plan).ok_or(reason), used);
            }
            Err(errors) => errors,
        };
        events.stage(
            "repairing",
            format!(
                "The answer had {} problem(s); asking the model to correct them",
                problems.len()
            ),
        );
        let feedback = format!(
            "The plan has these problems:\n- {}\nCall {} again with the whole corrected plan, using only the ids listed.",
            problems.join("\n- "),
            model::SUBMIT_PLAN
        );
        let calls = completion.tool_calls.clone();
        chat.messages.push(Message::Assistant {
            content: completion.text,
            tool_calls: calls.clone(),
        });
        if calls.is_empty() {
            chat.messages.push(Message::User { content: feedback });
        } else {
            for c in calls {
                let content = if c.name == model::SUBMIT_PLAN {
                    feedback.clone()
                } else {
                    format!("There is no tool {}; call {}.", c.name, model::SUBMIT_PLAN)
                };
                chat.messages.push(Message::Tool {
                    call_id: c.id,
                    content,
                    is_error: true,
                });
            }
        }
    }
    (Err("the model was asked twice".into()), used)
}
