//! Workflow runs: starting one, advancing it (the scheduler's work and every control), and
//! the scheduler loop of `serve`. An advance reads the run, its version and its step
//! executions, lets `workflow_engine` plan, checks each new step execution as an execute is
//! checked (its queue, its agent or team, the organization's policies), and commits it all in
//! one write guarded by the run's `last_seq`; a write that finds the run moved starts over.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cp_store::StoreError;
use cp_store::executions::{Control, NewExecution, QueueSeen};
use cp_store::workflow_runs::{Advance, NewRun};
use cp_types::context::ContextEntity;
use cp_types::execution::Execution;
use cp_types::execution::ExecutionType;
use cp_types::ids::{ExecutionId, QueueId};
use cp_types::org::Role;
use cp_types::skill::{EntityRef, ResolvedSkill, SkillEntityType, SkillType};
use cp_types::workflow::{CreateWorkflow, Workflow};
use cp_types::workflow::{StepType, WorkflowVersion};
use cp_types::workflow_run::{StartWorkflow, ToolRunRequest, WorkflowRun};
use cp_types::{ErrorCode, FieldIssue, now};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::Notify;
use uuid::Uuid;

use super::caller::Caller;
use super::error::{ServiceError, ServiceResult};
use super::keys::StreamSlot;
use super::notify::{Notice, notify};
use super::policy;
use super::stream::{Follower, Source};
use super::workflow_engine::{self, Denials, Inputs, Refusal, RunControl, Start};
use super::{workers, workflows};
use crate::state::AppState;

/// Most tries of one advance against a run that keeps moving.
const TRIES: usize = 20;
/// Versions kept in memory (a version never changes once written).
const MAX_VERSIONS: usize = 1024;

/// The scheduler's wake-up and the versions it has read.
#[derive(Default)]
pub struct Scheduler {
    /// Notified when a step's execution ends on this replica.
    pub wake: Notify,
    versions: Mutex<HashMap<(Uuid, i64), Arc<WorkflowVersion>>>,
}

impl Scheduler {
    async fn version(
        &self,
        state: &AppState,
        org: &str,
        workflow: Uuid,
        version: i64,
    ) -> ServiceResult<Arc<WorkflowVersion>> {
        if let Some(v) = self.versions.lock().get(&(workflow, version)) {
            return Ok(v.clone());
        }
        let v = Arc::new(
            state
                .store
                .workflows(org)
                .version(workflow, version)
                .await
                .map_err(|e| ServiceError::from_store(e, "workflow"))?,
        );
        let mut versions = self.versions.lock();
        if versions.len() >= MAX_VERSIONS {
            versions.clear();
        }
        versions.insert((workflow, version), v.clone());
        Ok(v)
    }
}

/// `POST /workflows/{id}/start`: checks the inputs against the version's schema (every error
/// listed) and that every working step has a queue of the organization, stores the run and
/// advances it once, so the 201 already shows its first steps started. The run gets `id`.
pub async fn start(
    state: &AppState,
    caller: &Caller,
    workflow_id: Uuid,
    req: StartWorkflow,
    id: Uuid,
    parent_execution_id: Option<Uuid>,
) -> ServiceResult<WorkflowRun> {
    let org = caller.org_id.as_str();
    let workflow = state
        .store
        .workflows(org)
        .get(workflow_id)
        .await
        .map_err(|e| ServiceError::from_store(e, "workflow"))?;
    let mut inputs = req.inputs.unwrap_or_else(|| json!({}));
    with_defaults(&workflow.inputs_schema, &mut inputs);
    let mut issues = input_issues(&workflow.inputs_schema, &inputs);
    let default = workflow.default_worker_queue_id;
    for step in workflow_engine::steps_without_queue(&workflow.steps, req.worker_queue_id, default) {
        issues.push(FieldIssue::new(
            "worker_queue_id",
            format!("step '{step}' runs on a worker and has no queue: name one here, on the step, or as the workflow's default_worker_queue_id"),
        ));
    }
    for queue in workflow_engine::queues_of(&workflow.steps, req.worker_queue_id, default) {
        if let Err(StoreError::NotFound) = state.store.worker_queues(org).get(queue).await {
            issues.push(FieldIssue::new(
                "worker_queue_id",
                format!("no worker queue {queue} in this organization"),
            ));
        }
    }
    if !issues.is_empty() {
        return Err(issues.into());
    }
    let run = state
        .store
        .workflow_runs(org)
        .create(NewRun {
            id,
            workflow_id,
            workflow_name: workflow.name.clone(),
            version: workflow.version,
            inputs,
            worker_queue_id: req.worker_queue_id,
            steps: workflow_engine::new_steps(&workflow.steps),
            created_by: caller.key_id,
            created_by_name: caller.key_name.clone(),
            created_by_role: caller.role.as_str().to_owned(),
            parent_execution_id,
        })
        .await?;
    // Stored with `wake_at` 0: if this advance does not happen, the scheduler's does.
    match advance(state, org, run.id, None).await {
        Ok(run) => Ok(run),
        Err(e) => {
            tracing::warn!(run = %run.id, error = %e.message, "the first advance of a run failed; the scheduler retries it");
            Ok(run)
        }
    }
}

/// How deep runs started by tools may nest (a run's step whose tool starts a run, …).
const MAX_TOOL_NESTING: usize = 3;

/// Starts a run for the workflow_executor tool of a live execution (`req.id` again: the run
/// that id started). Only a workflow one of the run's workflow_executor skills names (or any,
/// for a skill that lets the model choose) starts, on the execution's queue. A worker acts for
/// the key that started the execution; any other caller acts as itself.
pub async fn start_for_execution(
    state: &AppState,
    caller: &Caller,
    execution_id: Uuid,
    req: ToolRunRequest,
) -> ServiceResult<(WorkflowRun, bool)> {
    req.validate()?;
    let org = caller.org_id.as_str();
    let execution = live_execution(state, caller, execution_id).await?;
    let id = req.id.unwrap_or_else(Uuid::now_v7);
    if let Some(run) = started_by_tool(state, org, id, execution_id).await? {
        return Ok((run, false));
    }
    let target = ToolTarget::of(&req)?;
    check_skill_allows(state, org, &execution, &target).await?;
    check_nesting(state, org, &execution).await?;
    let acting = match caller.role {
        Role::Worker => execution_author(state, caller, execution_id).await?,
        _ => caller.clone(),
    };
    let workflow = match target {
        ToolTarget::Named(named) => {
            let workflows = state.store.workflows(org);
            let found = match Uuid::parse_str(named.trim()) {
                Ok(id) => workflows.get(id).await,
                Err(_) => workflows.by_name(named).await,
            };
            found.map_err(|e| ServiceError::from_store(e, "workflow"))?
        }
        ToolTarget::Inline(definition) => inline_workflow(state, &acting, definition.clone()).await?,
    };
    let start_req = StartWorkflow {
        inputs: req.inputs,
        worker_queue_id: execution.worker_queue_id,
    };
    match start(state, &acting, workflow.id, start_req, id, Some(execution_id)).await {
        Ok(run) => Ok((run, true)),
        // A retry of the same request that crossed this one: its run is the answer.
        Err(e) => match started_by_tool(state, org, id, execution_id).await? {
            Some(run) => Ok((run, false)),
            None => Err(e),
        },
    }
}

/// What a tool asks to run.
enum ToolTarget<'a> {
    /// An id or a name.
    Named(&'a str),
    Inline(&'a Value),
}

impl<'a> ToolTarget<'a> {
    fn of(req: &'a ToolRunRequest) -> ServiceResult<ToolTarget<'a>> {
        match (&req.workflow, &req.definition) {
            (Some(named), None) => Ok(ToolTarget::Named(named)),
            (None, Some(definition)) => Ok(ToolTarget::Inline(definition)),
            _ => Err(ServiceError::invalid(
                "workflow",
                "name exactly one of workflow (an id or a name) and definition",
            )),
        }
    }
}

/// The run `id` when this execution's tool started it; a run of another execution (or of
/// another organization) with that id is a conflict.
async fn started_by_tool(state: &AppState, org: &str, id: Uuid, execution: Uuid) -> ServiceResult<Option<WorkflowRun>> {
    match state.store.workflow_runs(org).get(id).await {
        Ok(record) if record.run.parent_execution_id == Some(execution) => Ok(Some(record.run)),
        Ok(_) => Err(ServiceError::conflict(format!(
            "workflow run {id} belongs to another execution"
        ))),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The execution's agent (or its team and members) must have a workflow_executor skill that
/// names this target, or one that lets the model choose.
async fn check_skill_allows(
    state: &AppState,
    org: &str,
    execution: &Execution,
    target: &ToolTarget<'_>,
) -> ServiceResult<()> {
    let resolved = execution_skills(state, org, execution).await?;
    let executors: Vec<&Value> = resolved
        .iter()
        .filter(|s| s.enabled && s.skill_type == SkillType::WorkflowExecutor)
        .map(|s| &s.configuration)
        .collect();
    if executors.is_empty() {
        return Err(ServiceError::forbidden(
            "the execution's agent has no workflow_executor skill",
        ));
    }
    let allowed = executors.iter().any(|config| {
        let named = config["workflow"].as_str();
        let inline = config["workflow_definition"]
            .as_str()
            .and_then(|text| serde_json::from_str::<Value>(text).ok());
        match (target, named, &inline) {
            (ToolTarget::Named(_), None, None) => true,
            (ToolTarget::Named(asked), Some(named), _) => asked.trim() == named.trim(),
            (ToolTarget::Inline(asked), None, Some(inline)) => *asked == inline,
            _ => false,
        }
    });
    if !allowed {
        return Err(ServiceError::forbidden(
            "no workflow_executor skill of the execution's agent names this workflow",
        ));
    }
    Ok(())
}

/// The skills an execution's tools come from: its agent's, or its team's and every member's.
pub(crate) async fn execution_skills(
    state: &AppState,
    org: &str,
    execution: &Execution,
) -> ServiceResult<Vec<ResolvedSkill>> {
    let skills = state.store.skills(org);
    let entity = |kind, id| EntityRef { kind, id };
    let mut owners = vec![match execution.execution_type {
        ExecutionType::Team => entity(SkillEntityType::Team, execution.entity_id),
        _ => entity(SkillEntityType::Agent, execution.entity_id),
    }];
    if execution.execution_type == ExecutionType::Team {
        let members = state.store.agents(org).team_members(execution.entity_id).await?;
        owners.extend(members.iter().map(|a| entity(SkillEntityType::Agent, a.id)));
    }
    let resolved = futures::future::try_join_all(owners.into_iter().map(|e| skills.resolved(e))).await?;
    Ok(resolved.into_iter().flatten().collect())
}

/// Refuses a start that would nest runs started by tools deeper than `MAX_TOOL_NESTING`.
async fn check_nesting(state: &AppState, org: &str, execution: &Execution) -> ServiceResult<()> {
    let mut run = execution.workflow_run_id;
    for _ in 0..MAX_TOOL_NESTING {
        let Some(run_id) = run else {
            return Ok(());
        };
        let parent = match state.store.workflow_runs(org).get(run_id).await {
            Ok(record) => record.run.parent_execution_id,
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e.into()),
        };
        let Some(parent) = parent else {
            return Ok(());
        };
        run = match state.store.executions(org).get(parent).await {
            Ok(e) => e.workflow_run_id,
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e.into()),
        };
    }
    Err(ServiceError::conflict(format!(
        "workflows started by tools nest at most {MAX_TOOL_NESTING} deep"
    )))
}

/// The run `run_id` that execution `execution_id`'s tool started, once it ended or `wait`
/// passed, whichever comes first; `slot` opens the wait's stream when there is one.
pub async fn await_for_execution(
    state: &AppState,
    caller: &Caller,
    execution_id: Uuid,
    run_id: Uuid,
    wait: Duration,
    slot: impl FnOnce() -> ServiceResult<StreamSlot>,
) -> ServiceResult<WorkflowRun> {
    live_execution(state, caller, execution_id).await?;
    let org = caller.org_id.as_str();
    let read = async || {
        started_by_tool(state, org, run_id, execution_id)
            .await
            .and_then(|run| run.ok_or_else(|| ServiceError::not_found("workflow run")))
            .map_err(|e| match e.code {
                ErrorCode::Conflict => ServiceError::not_found("workflow run"),
                _ => e,
            })
    };
    let run = read().await?;
    if run.status.is_terminal() || wait.is_zero() {
        return Ok(run);
    }
    let mut follower = Follower::new(
        state.clone(),
        Source::WorkflowRun,
        org.to_owned(),
        run_id,
        run.event_count,
        slot()?,
    );
    let _ = tokio::time::timeout(wait, async {
        while let Some(e) = follower.next().await {
            if e.event_type == "done" {
                break;
            }
        }
    })
    .await;
    read().await
}

/// Execution `id`, when it is still going and the caller may act for it.
pub(crate) async fn live_execution(state: &AppState, caller: &Caller, id: Uuid) -> ServiceResult<Execution> {
    let execution = state
        .store
        .executions(&caller.org_id)
        .get(id)
        .await
        .map_err(|e| ServiceError::from_store(e, "execution"))?;
    if execution.status.is_terminal() {
        return Err(ServiceError::conflict(format!("the execution is {}", execution.status)));
    }
    workers::check_holds(state, caller, &execution).await?;
    Ok(execution)
}

/// The key that started execution `id`, as a caller, while it is still usable.
async fn execution_author(state: &AppState, caller: &Caller, id: Uuid) -> ServiceResult<Caller> {
    let org = caller.org_id.as_str();
    let key_id = state
        .store
        .executions(org)
        .started_by(id)
        .await?
        .ok_or_else(|| ServiceError::forbidden("the execution names no key to act for"))?;
    let key = match state.store.keys(org).get(key_id).await {
        Ok(key) => key,
        Err(StoreError::NotFound) => {
            return Err(ServiceError::forbidden("the key that started the execution is gone"));
        }
        Err(e) => return Err(e.into()),
    };
    if !key.is_usable(now()) {
        return Err(ServiceError::forbidden(
            "the key that started the execution is revoked or expired",
        ));
    }
    Ok(Caller {
        key_id,
        key_name: key.name,
        role: key.role,
        org_id: caller.org_id.clone(),
        org_name: caller.org_name.clone(),
        worker_queue_id: None,
    })
}

/// The workflow an inline definition is stored as: named after its `name` (or "inline") and a
/// digest of its content, created on first use, found afterwards while it still holds that
/// content (a workflow edited or made under that name since is not run in its place).
async fn inline_workflow(state: &AppState, caller: &Caller, definition: Value) -> ServiceResult<Workflow> {
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(definition.to_string().as_bytes()));
    let base: String = definition["name"]
        .as_str()
        .unwrap_or("inline")
        .trim()
        .chars()
        .take(150)
        .collect();
    let name = format!("{base} (inline {})", &digest[..12]);
    let mut body = definition;
    body["name"] = json!(name);
    let req: CreateWorkflow = serde_json::from_value(body)
        .map_err(|e| ServiceError::invalid("definition", format!("not a workflow definition: {e}")))?;
    let same = |found: &Workflow| {
        let wanted = json!([
            req.steps,
            req.inputs_schema.clone().unwrap_or_else(|| json!({"type": "object"})),
            req.default_worker_queue_id
        ]);
        json!([found.steps, found.inputs_schema, found.default_worker_queue_id]) == wanted
    };
    let workflows = state.store.workflows(&caller.org_id);
    let found = match workflows.by_name(&name).await {
        Ok(found) => Some(found),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(e.into()),
    };
    let workflow = match found {
        Some(found) => found,
        None => match workflows::create(state, caller, req.clone()).await {
            Ok(created) => return Ok(created),
            // Another call stored it meanwhile.
            Err(e) if e.code == ErrorCode::Conflict => workflows
                .by_name(&name)
                .await
                .map_err(|e| ServiceError::from_store(e, "workflow"))?,
            Err(e) => return Err(e),
        },
    };
    if !same(&workflow) {
        return Err(ServiceError::conflict(format!(
            "a workflow named '{name}' exists with other content; rename or delete it"
        )));
    }
    Ok(workflow)
}

/// Fills the inputs the schema gives a top-level `default` for and the start left out (the
/// DSL's `params` are such defaults).
fn with_defaults(schema: &Value, inputs: &mut Value) {
    let (Some(properties), Value::Object(given)) = (schema["properties"].as_object(), inputs) else {
        return;
    };
    for (name, property) in properties {
        if let Some(default) = property.get("default")
            && !given.contains_key(name)
        {
            given.insert(name.clone(), default.clone());
        }
    }
}

/// Every way `inputs` breaks `schema`.
fn input_issues(schema: &Value, inputs: &Value) -> Vec<FieldIssue> {
    let validator = match jsonschema::validator_for(schema) {
        Ok(v) => v,
        Err(e) => {
            return vec![FieldIssue::new(
                "inputs",
                format!("the workflow's inputs_schema is not usable: {e}"),
            )];
        }
    };
    validator
        .iter_errors(inputs)
        .map(|e| {
            let at = e.instance_path().to_string();
            let field = if at.is_empty() {
                "inputs".to_owned()
            } else {
                format!("inputs{}", at.replace('/', "."))
            };
            FieldIssue::new(field, e.to_string())
        })
        .collect()
}

pub async fn get(state: &AppState, caller: &Caller, id: Uuid) -> ServiceResult<WorkflowRun> {
    Ok(state
        .store
        .workflow_runs(&caller.org_id)
        .get(id)
        .await
        .map_err(|e| ServiceError::from_store(e, "workflow run"))?
        .run)
}

/// A client's control of a run (pause, resume, cancel, retry, an approval's decision).
pub async fn control(state: &AppState, caller: &Caller, id: Uuid, control: RunControl) -> ServiceResult<WorkflowRun> {
    // 404 for another organization's run before anything else is said about it.
    get(state, caller, id).await?;
    advance(state, &caller.org_id, id, Some(control)).await
}

/// Reads, plans and commits the run until a write lands (or the plan changes nothing).
pub async fn advance(state: &AppState, org: &str, id: Uuid, control: Option<RunControl>) -> ServiceResult<WorkflowRun> {
    let runs = state.store.workflow_runs(org);
    for _ in 0..TRIES {
        let record = runs
            .get(id)
            .await
            .map_err(|e| ServiceError::from_store(e, "workflow run"))?;
        let run = &record.run;
        let version = state
            .workflow_scheduler
            .version(state, org, run.workflow_id, run.workflow_version)
            .await?;
        let (woken, executions) = runs.step_executions(id).await?;
        let at = now();
        let mut denied = Denials::new();
        let mut queues: HashMap<Uuid, Option<QueueSeen>> = HashMap::new();
        // By (step, item): a replan after a denial renders the same starts again, and each
        // policy decision is logged, so each start is checked once.
        let mut checked: HashMap<(String, Option<usize>), Prepared> = HashMap::new();
        let planned = loop {
            let inputs = Inputs {
                steps: &version.steps,
                default_queue: version.default_worker_queue_id,
                executions: &executions,
                denied: &denied,
                now: at,
            };
            let planned = workflow_engine::plan(run, &inputs, control.as_ref()).map_err(refused)?;
            let mut more = false;
            for s in &planned.starts {
                let key = (s.step_id.clone(), s.index);
                if checked.contains_key(&key) {
                    continue;
                }
                match prepare(state, &record_caller(&record, org), s, &mut queues).await? {
                    Ok(prepared) => {
                        checked.insert(key, prepared);
                    }
                    Err(why) => {
                        denied.insert(key, why);
                        more = true;
                    }
                }
            }
            if !more {
                break planned;
            }
        };
        if !planned.changed && woken.is_empty() && planned.wake_at == record.wake_at {
            return Ok(planned.run);
        }
        let mut events = step_messages(state, org, &planned.settled).await?;
        events.extend(planned.events);
        let mut new_executions = Vec::new();
        for s in &planned.starts {
            let prepared = checked
                .remove(&(s.step_id.clone(), s.index))
                .ok_or_else(ServiceError::internal)?;
            new_executions.push((s.execution_id, new_execution(run, &version, s, prepared)));
        }
        let committed = runs
            .commit(Advance {
                run: planned.run,
                events,
                executions: new_executions,
                wake_at: planned.wake_at,
                consumed: woken,
            })
            .await
            .map_err(|e| ServiceError::from_store(e, "worker queue"))?;
        let Some(advanced) = committed else { continue };
        record_metrics(&advanced.events, &executions, &planned.settled, planned.starts.len());
        state.hub.publish(id, &advanced.events);
        if advanced.deliveries {
            notify(state, Notice::Deliveries);
        }
        for (execution, events) in &advanced.executions {
            if let Some(q) = execution.worker_queue_id {
                notify(
                    state,
                    Notice::Created {
                        execution: execution.id,
                        queue: QueueId(q),
                        events,
                    },
                );
            }
        }
        for e in planned.cancels {
            // Through the same path as a client's cancel; one that ended meanwhile is fine.
            if let Ok(changed) = state
                .store
                .executions(org)
                .control(ExecutionId(e), Control::Cancel)
                .await
            {
                notify(state, Notice::Changed(&changed));
            }
        }
        return Ok(advanced.run);
    }
    Err(ServiceError::new(
        ErrorCode::ServiceUnavailable,
        "the run kept changing; try again",
    ))
}

/// Counts the run states entered, and how long after a step's execution ended the steps it
/// let start were claimable (`workflow_step_overhead_seconds`).
fn record_metrics(
    events: &[cp_types::execution::ExecutionEvent],
    executions: &[cp_store::workflow_runs::StepExecution],
    settled: &[(String, Option<usize>, Uuid)],
    started: usize,
) {
    for e in events.iter().filter(|e| e.event_type == "run_status") {
        let status = e.data["status"].as_str().unwrap_or("unknown").to_owned();
        metrics::counter!("workflow_runs_total", "status" => status).increment(1);
    }
    let ended = settled
        .iter()
        .filter_map(|(_, _, id)| executions.iter().find(|e| e.id == *id)?.completed_at)
        .max();
    if let (Some(ended), true) = (ended, started > 0) {
        let overhead = (now() - ended).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
        for _ in 0..started {
            metrics::histogram!("workflow_step_overhead_seconds").record(overhead);
        }
    }
}

/// Most events of one step execution copied into its run's stream.
const MAX_COPIED: i64 = 500;

/// The `message` and `tool_*` events of step executions that just ended, tagged with their
/// step (and item), for the run's own stream: numbered in the run's sequence, so a client
/// resumes the run's stream alone. The chunks stay on the execution's stream.
async fn step_messages(
    state: &AppState,
    org: &str,
    settled: &[(String, Option<usize>, Uuid)],
) -> ServiceResult<Vec<(String, Value)>> {
    let executions = state.store.executions(org);
    let mut copied = Vec::new();
    for (step_id, index, execution) in settled {
        for e in executions.events(*execution, 0, MAX_COPIED).await? {
            if e.event_type != "message" && !e.event_type.starts_with("tool_") {
                continue;
            }
            let mut data = e.data;
            if let Value::Object(m) = &mut data {
                m.insert("step_id".into(), json!(step_id));
                m.insert("execution_id".into(), json!(execution));
                if let Some(i) = index {
                    m.insert("item_index".into(), json!(i));
                }
            }
            copied.push((e.event_type, data));
        }
    }
    Ok(copied)
}

fn refused(r: Refusal) -> ServiceError {
    match r {
        Refusal::Conflict(m) => ServiceError::conflict(m),
        Refusal::NoSuchStep(s) => ServiceError::not_found(&format!("step '{s}'")),
        Refusal::Forbidden(m) => ServiceError::forbidden(m),
    }
}

/// The steps act for the key that started the run.
fn record_caller(record: &cp_store::workflow_runs::RunRecord, org: &str) -> Caller {
    Caller {
        key_id: Uuid::parse_str(&record.run.created_by).unwrap_or_default(),
        key_name: record.created_by_name.clone(),
        role: record.created_by_role.parse().unwrap_or(cp_types::org::Role::Member),
        org_id: org.to_owned(),
        org_name: org.to_owned(),
        worker_queue_id: None,
    }
}

/// What a checked start needs to become an execution.
struct Prepared {
    entity_name: Option<String>,
    queue_seen: Option<QueueSeen>,
    model_id: Option<Uuid>,
}

/// Checks a start as an execute is checked: its queue exists and is active, its agent or team
/// exists, and the organization's policies allow it. `Ok(Err(why))` fails the step.
async fn prepare(
    state: &AppState,
    caller: &Caller,
    s: &Start,
    queues: &mut HashMap<Uuid, Option<QueueSeen>>,
) -> ServiceResult<Result<Prepared, String>> {
    let org = caller.org_id.as_str();
    let Some((kind, entity)) = s.entity else {
        let seen = match queues.get(&s.queue) {
            Some(seen) => seen.clone(),
            None => {
                let seen = match state.store.worker_queues(org).get(s.queue).await {
                    Ok(q) => Some((q.name, q.status.as_str().to_owned(), q.max_attempts)),
                    Err(StoreError::NotFound) => None,
                    Err(e) => return Err(e.into()),
                };
                queues.insert(s.queue, seen.clone());
                seen
            }
        };
        return Ok(match seen {
            None => Err(format!("worker queue {} not found", s.queue)),
            Some((name, status, _)) if status != "active" => {
                Err(format!("worker queue '{name}' is {status}, not active"))
            }
            seen => Ok(Prepared {
                entity_name: None,
                queue_seen: seen,
                model_id: None,
            }),
        });
    };
    let (execution_type, context_entity, what) = match kind {
        StepType::Team => (ExecutionType::Team, ContextEntity::Team(entity), "team"),
        _ => (ExecutionType::Agent, ContextEntity::Agent(entity), "agent"),
    };
    let subject = match state
        .store
        .executions(org)
        .subject(execution_type, entity, Some(s.queue))
        .await
    {
        Ok(subject) => subject,
        Err(StoreError::NotFound) => return Ok(Err(format!("{what} {entity} not found"))),
        Err(e) => return Err(e.into()),
    };
    match subject.queue_seen() {
        None => return Ok(Err(format!("worker queue {} not found", s.queue))),
        Some((name, status, _)) if status != "active" => {
            return Ok(Err(format!("worker queue '{name}' is {status}, not active")));
        }
        Some(_) => {}
    }
    match policy::check_execute(state, caller, context_entity, &s.prompt, Some(s.queue), &subject).await {
        Ok(()) => Ok(Ok(Prepared {
            queue_seen: subject.queue_seen(),
            entity_name: Some(subject.entity_name),
            model_id: subject.model_id,
        })),
        Err(e) if e.code == ErrorCode::PolicyDenied => {
            let violations = e
                .details
                .as_ref()
                .and_then(|d| d.get("violations"))
                .cloned()
                .unwrap_or(json!([]));
            Ok(Err(format!("POLICY_DENIED: {} (violations: {violations})", e.message)))
        }
        Err(e) => Err(e),
    }
}

fn new_execution(run: &WorkflowRun, version: &WorkflowVersion, s: &Start, prepared: Prepared) -> NewExecution {
    let entity_name = prepared
        .entity_name
        .unwrap_or_else(|| format!("{}.{}", version.name, s.step_id));
    NewExecution {
        execution_type: ExecutionType::WorkflowStep,
        entity_id: s.entity.map_or(run.workflow_id, |(_, id)| id),
        entity_name,
        worker_queue_id: s.queue,
        prompt: s.prompt.clone(),
        system_prompt: None,
        user_metadata: json!({"key_id": run.created_by}),
        execution_metadata: json!({
            "workflow_id": run.workflow_id,
            "workflow_run_id": run.id,
            "step_id": s.step_id,
            "item_index": s.index,
            "workflow_step": s.work,
        }),
        execution_environment: Default::default(),
        created_by: run.created_by.clone(),
        queue_seen: prepared.queue_seen,
        workflow_run_id: Some(run.id),
        step_id: Some(s.step_id.clone()),
        model_id: prepared.model_id,
    }
}

/// Scheduler rounds between two sweeps for step executions of ended runs.
const SWEEP_EVERY: u64 = 20;

/// Cancels step executions whose run ended without them: the run's own cancel of them did
/// not happen (the server stopped between the advance and the cancel).
async fn cancel_orphans(state: &AppState) {
    let orphans = match state.store.orphaned_step_executions(100).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "could not look for step executions of ended runs");
            return;
        }
    };
    for (org, id) in orphans {
        if let Ok(changed) = state
            .store
            .executions(&org.0)
            .control(ExecutionId(id), Control::Cancel)
            .await
        {
            notify(state, Notice::Changed(&changed));
        }
    }
}

/// Advances every run that is due: woken by a step execution's end on this replica, and
/// every `every` for the rest (ends seen by other replicas, timers, a restart's backlog).
pub async fn scheduler(state: AppState, every: Duration) {
    let mut round: u64 = 0;
    loop {
        round += 1;
        if round % SWEEP_EVERY == 1 {
            cancel_orphans(&state).await;
        }
        let due = match state.store.due_workflow_runs(now().timestamp_millis(), 100).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the workflow runs that are due");
                Vec::new()
            }
        };
        let full = due.len() == 100;
        for (org, run) in due {
            match advance(&state, &org.0, run, None).await {
                Ok(_) => {}
                Err(e) if e.code == ErrorCode::NotFound => {
                    let _ = state.store.workflow_runs(&org.0).forget(run).await;
                }
                Err(e) => tracing::warn!(%run, error = %e.message, "could not advance a workflow run"),
            }
        }
        if full {
            continue;
        }
        tokio::select! {
            _ = state.workflow_scheduler.wake.notified() => {}
            _ = tokio::time::sleep(every) => {}
            _ = state.hub.closed() => return,
        }
    }
}
