//! The workflow state machine, without IO: given a run, the version it follows, how its
//! step executions stand and what a client asks, it works out the run's next state, the
//! executions to create, the ones to cancel, and the events to record. The service
//! (`workflow_runs`) reads the inputs, checks policies and commits the result in one guarded
//! write, so this runs again from scratch whenever a write finds the run moved.

use std::collections::{HashMap, HashSet};

use cp_store::workflow_runs::StepExecution;
use cp_types::Timestamp;
use cp_types::execution::ExecutionStatus;
use cp_types::org::Role;
use cp_types::workflow::{ApprovalTimeout, MAX_PARALLEL, StepType, WorkflowStep};
use cp_types::workflow_run::{ApprovalDecision, ItemRun, RunStatus, StepRun, StepStatus, StepWork, WorkflowRun};
use minijinja::Environment;
use serde_json::{Value, json};
use uuid::Uuid;

use super::templates;

/// Most items a `for_each` list may have.
pub const MAX_ITEMS: usize = 1000;

/// What a client asks of a run.
#[derive(Debug, Clone)]
pub enum RunControl {
    Pause,
    Resume,
    Cancel,
    /// Re-runs the failed and cancelled steps of an ended run.
    Retry,
    Decide {
        step_id: String,
        approved: bool,
        by: String,
        key_id: Uuid,
        role: Role,
        comment: Option<String>,
    },
}

/// Why a control cannot be applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    Conflict(String),
    NoSuchStep(String),
    Forbidden(String),
}

/// A step execution to create.
#[derive(Debug, Clone)]
pub struct Start {
    pub execution_id: Uuid,
    pub step_id: String,
    /// The item of a `for_each` step.
    pub index: Option<usize>,
    pub queue: Uuid,
    /// The agent or team the step runs (`None` for command and http steps).
    pub entity: Option<(StepType, Uuid)>,
    /// The rendered prompt (the command, or `METHOD url`, for other steps).
    pub prompt: String,
    pub work: StepWork,
}

/// A policy denial found for a start in an earlier pass: `(step, item)` → the error.
pub type Denials = HashMap<(String, Option<usize>), String>;

/// The outcome of one pass.
#[derive(Debug)]
pub struct Planned {
    pub run: WorkflowRun,
    pub events: Vec<(String, Value)>,
    pub starts: Vec<Start>,
    /// Executions to cancel once the advance is committed.
    pub cancels: Vec<Uuid>,
    /// Step executions whose end this pass took in: `(step, item, execution)`.
    pub settled: Vec<(String, Option<usize>, Uuid)>,
    pub wake_at: Option<i64>,
    /// Whether anything changed (a pass that changed nothing need not be written).
    pub changed: bool,
}

/// The inputs of one pass.
pub struct Inputs<'a> {
    pub steps: &'a [WorkflowStep],
    pub default_queue: Option<Uuid>,
    pub executions: &'a [StepExecution],
    pub denied: &'a Denials,
    pub now: Timestamp,
}

/// One pass over `run`: the control first (refused controls change nothing), then every
/// step that can move.
pub fn plan(run: &WorkflowRun, inputs: &Inputs<'_>, control: Option<&RunControl>) -> Result<Planned, Refusal> {
    let mut p = Pass {
        run: run.clone(),
        inputs,
        events: Vec::new(),
        starts: Vec::new(),
        cancels: Vec::new(),
        settled: Vec::new(),
        executions: inputs.executions.iter().map(|e| (e.id, e)).collect(),
        env: templates::environment(),
        shell: templates::shell_environment(),
        now_ms: inputs.now.timestamp_millis(),
    };
    if let Some(c) = control {
        p.control(c)?;
    }
    if !p.run.status.is_terminal() {
        p.advance();
    }
    let wake_at = p.wake_at();
    let changed = !p.events.is_empty() || !p.starts.is_empty() || p.run.steps != run.steps;
    Ok(Planned {
        run: p.run,
        events: p.events,
        starts: p.starts,
        cancels: p.cancels,
        settled: p.settled,
        wake_at,
        changed,
    })
}

struct Pass<'a> {
    run: WorkflowRun,
    inputs: &'a Inputs<'a>,
    events: Vec<(String, Value)>,
    starts: Vec<Start>,
    cancels: Vec<Uuid>,
    settled: Vec<(String, Option<usize>, Uuid)>,
    executions: HashMap<Uuid, &'a StepExecution>,
    env: Environment<'static>,
    /// `command` templates: every value shell-quoted.
    shell: Environment<'static>,
    now_ms: i64,
}

/// How an execution ended, for a step: `Ok(output)` or `Err(error)`.
fn ended(e: &StepExecution) -> Option<Result<Value, String>> {
    match e.status().ok()? {
        ExecutionStatus::Completed | ExecutionStatus::WaitingForInput => {
            let text = e.response.clone().unwrap_or_default();
            Some(Ok(serde_json::from_str(&text).unwrap_or(Value::String(text))))
        }
        ExecutionStatus::Failed => Some(Err(e
            .error_message
            .clone()
            .unwrap_or_else(|| "its execution failed".into()))),
        ExecutionStatus::Cancelled => Some(Err("its execution was cancelled".into())),
        _ => None,
    }
}

/// The pause before try `attempts + 1`.
fn backoff_ms(step: &WorkflowStep, attempts: i64) -> i64 {
    let Some(r) = &step.retry else { return 0 };
    let pause = r.backoff_seconds * r.backoff_factor.powi((attempts - 1).max(0) as i32);
    (pause.min(86_400.0) * 1000.0) as i64
}

fn max_attempts(step: &WorkflowStep) -> i64 {
    step.retry.as_ref().map_or(1, |r| r.max_attempts)
}

impl Pass<'_> {
    fn def(&self, i: usize) -> &WorkflowStep {
        &self.inputs.steps[i]
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.inputs.steps.iter().position(|s| s.id == id)
    }

    fn set_run(&mut self, status: RunStatus) {
        if self.run.status == status {
            return;
        }
        self.run.status = status;
        let now = self.inputs.now;
        if status == RunStatus::Running && self.run.started_at.is_none() {
            self.run.started_at = Some(now);
        }
        if status.is_terminal() {
            self.run.completed_at = Some(now);
        }
        self.events.push((
            "run_status".into(),
            json!({"status": status, "attempt": self.run.attempt, "error": self.run.error}),
        ));
        if status.is_terminal() {
            self.events.push((
                "done".into(),
                json!({"status": status, "attempt": self.run.attempt, "error": self.run.error}),
            ));
        }
    }

    /// Moves step `i` to `status` and records the change.
    fn set_step(&mut self, i: usize, status: StepStatus) {
        let now = self.inputs.now;
        let s = &mut self.run.steps[i];
        s.status = status;
        if status == StepStatus::Running && s.started_at.is_none() {
            s.started_at = Some(now);
        }
        if status.is_ended() {
            s.completed_at = Some(now);
            s.not_before_ms = None;
        }
        let data = json!({"step_id": s.step_id, "status": status, "attempt": s.attempts,
                          "execution_id": s.execution_id, "error": s.error});
        self.events.push(("step_status".into(), data));
    }

    fn fail_step(&mut self, i: usize, error: String) {
        self.run.steps[i].error = Some(error);
        self.set_step(i, StepStatus::Failed);
    }

    fn control(&mut self, c: &RunControl) -> Result<(), Refusal> {
        let status = self.run.status;
        let conflict = |what: &str| Refusal::Conflict(format!("a run that is {status} cannot be {what}"));
        match c {
            RunControl::Pause => {
                if status.is_terminal() || status == RunStatus::Paused {
                    return Err(conflict("paused"));
                }
                self.set_run(RunStatus::Paused);
            }
            RunControl::Resume => {
                if status != RunStatus::Paused {
                    return Err(conflict("resumed"));
                }
                self.set_run(RunStatus::Running);
            }
            RunControl::Cancel => {
                if status.is_terminal() {
                    return Err(conflict("cancelled"));
                }
                self.run.error = Some("cancelled by user".into());
                self.stop_all(StepStatus::Cancelled, "the run was cancelled");
                self.set_run(RunStatus::Cancelled);
            }
            RunControl::Retry => {
                if !matches!(status, RunStatus::Failed | RunStatus::Cancelled) {
                    return Err(conflict("retried (only a failed or cancelled run is)"));
                }
                for i in 0..self.run.steps.len() {
                    if matches!(self.run.steps[i].status, StepStatus::Failed | StepStatus::Cancelled) {
                        let id = self.run.steps[i].step_id.clone();
                        self.run.steps[i] = StepRun::new(&id);
                        self.set_step(i, StepStatus::Pending);
                    }
                }
                self.run.attempt += 1;
                self.run.error = None;
                self.run.completed_at = None;
                self.set_run(RunStatus::Running);
            }
            RunControl::Decide {
                step_id,
                approved,
                by,
                key_id,
                role,
                comment,
            } => {
                let i = self
                    .index_of(step_id)
                    .ok_or_else(|| Refusal::NoSuchStep(step_id.clone()))?;
                let def = self.def(i);
                if def.step_type != StepType::Approval {
                    return Err(Refusal::Conflict(format!("step '{step_id}' is not an approval step")));
                }
                let approvers: &[Role] = if def.approvers.is_empty() {
                    &[Role::Admin, Role::Member]
                } else {
                    &def.approvers
                };
                if !approvers.contains(role) {
                    return Err(Refusal::Forbidden(format!(
                        "step '{step_id}' is decided by {} only",
                        approvers.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
                    )));
                }
                let current = self.run.steps[i].status;
                if current != StepStatus::WaitingForApproval || status.is_terminal() {
                    return Err(Refusal::Conflict(format!(
                        "step '{step_id}' is {current}, not waiting_for_approval"
                    )));
                }
                self.decide(i, *approved, by.clone(), Some(*key_id), comment.clone());
            }
        }
        Ok(())
    }

    fn decide(&mut self, i: usize, approved: bool, by: String, key_id: Option<Uuid>, comment: Option<String>) {
        let decision = ApprovalDecision {
            approved,
            by: by.clone(),
            key_id,
            comment: comment.clone(),
            at: self.inputs.now,
        };
        let s = &mut self.run.steps[i];
        s.approval = Some(decision.clone());
        if approved {
            s.output = Some(json!({"approved": true, "by": by, "comment": comment}));
            self.set_step(i, StepStatus::Completed);
        } else {
            let why = match &comment {
                Some(c) => format!("rejected by {by}: {c}"),
                None => format!("rejected by {by}"),
            };
            self.fail_step(i, why);
        }
    }

    /// Ends every step that has not ended with `status`; running executions are cancelled.
    fn stop_all(&mut self, status: StepStatus, why: &str) {
        for i in 0..self.run.steps.len() {
            let s = &mut self.run.steps[i];
            if s.status.is_ended() {
                continue;
            }
            let mut cancel: Vec<Uuid> = s.execution_id.into_iter().collect();
            for item in &mut s.items {
                if !item.status.is_ended() {
                    cancel.extend(item.execution_id);
                    item.status = StepStatus::Cancelled;
                }
            }
            if s.status == StepStatus::Running {
                self.cancels.extend(
                    cancel
                        .iter()
                        .filter(|id| self.executions.get(id).is_none_or(|e| ended(e).is_none())),
                );
            }
            if s.error.is_none() {
                s.error = Some(why.to_owned());
            }
            self.set_step(i, status);
        }
    }

    /// Everything that can move, until nothing does.
    fn advance(&mut self) {
        if self.run.status == RunStatus::Pending {
            self.set_run(RunStatus::Running);
        }
        for i in 0..self.run.steps.len() {
            self.settle(i);
        }
        loop {
            let before = self.events.len() + self.starts.len();
            for i in 0..self.run.steps.len() {
                if self.run.steps[i].status == StepStatus::Pending {
                    self.try_start(i);
                }
            }
            if self.events.len() + self.starts.len() == before {
                break;
            }
        }
        self.conclude();
    }

    /// A running or waiting step whose work ended, timed out, or slept long enough.
    fn settle(&mut self, i: usize) {
        let def = self.def(i).clone();
        let s = &self.run.steps[i];
        let timed_out = def
            .timeout_seconds
            .zip(s.started_at)
            .is_some_and(|(t, at)| at.timestamp_millis() + t * 1000 <= self.now_ms);
        match (s.status, def.step_type) {
            (StepStatus::WaitingForApproval, _) if timed_out => {
                let approve = def.on_timeout == Some(ApprovalTimeout::Approve);
                let comment = Some(format!("nobody decided within {} s", def.timeout_seconds.unwrap_or(0)));
                self.decide(i, approve, "timeout".into(), None, comment);
            }
            (StepStatus::Running, StepType::Sleep) if s.not_before_ms.is_none_or(|t| t <= self.now_ms) => {
                self.set_step(i, StepStatus::Completed);
            }
            (StepStatus::Running, StepType::Sleep) => {}
            (StepStatus::Running, _) if !s.items.is_empty() || def.for_each.is_some() => {
                self.settle_items(i, &def, timed_out)
            }
            (StepStatus::Running, _) => {
                let outcome = s
                    .execution_id
                    .and_then(|id| self.executions.get(&id))
                    .and_then(|e| ended(e));
                if outcome.is_some()
                    && let Some(id) = s.execution_id
                {
                    self.settled.push((def.id.clone(), None, id));
                }
                match outcome {
                    Some(Ok(output)) => {
                        let s = &mut self.run.steps[i];
                        s.output = Some(output);
                        s.error = None;
                        self.set_step(i, StepStatus::Completed);
                    }
                    Some(Err(error)) => self.retry_or_fail(i, &def, error),
                    None if timed_out => {
                        self.cancels.extend(s.execution_id);
                        let error = format!("timed out after {} s", def.timeout_seconds.unwrap_or(0));
                        self.retry_or_fail(i, &def, error);
                    }
                    None => {}
                }
            }
            _ => {}
        }
    }

    /// A failed try: back to `pending` after the backoff while tries remain, else `failed`.
    fn retry_or_fail(&mut self, i: usize, def: &WorkflowStep, error: String) {
        let s = &mut self.run.steps[i];
        if s.attempts < max_attempts(def) {
            s.not_before_ms = Some(self.now_ms + backoff_ms(def, s.attempts));
            s.error = Some(error);
            s.execution_id = None;
            // The next try's timeout counts from its own start.
            s.started_at = None;
            self.set_step(i, StepStatus::Pending);
        } else {
            self.fail_step(i, error);
        }
    }

    fn settle_items(&mut self, i: usize, def: &WorkflowStep, timed_out: bool) {
        let now_ms = self.now_ms;
        let mut items = std::mem::take(&mut self.run.steps[i].items);
        for item in &mut items {
            if item.status != StepStatus::Running {
                continue;
            }
            let outcome = item
                .execution_id
                .and_then(|id| self.executions.get(&id))
                .and_then(|e| ended(e));
            if let (Some(_), Some(id)) = (&outcome, item.execution_id) {
                self.settled.push((def.id.clone(), Some(item.index), id));
            }
            match outcome {
                Some(Ok(output)) => {
                    item.output = Some(output);
                    item.error = None;
                    item.status = StepStatus::Completed;
                }
                Some(Err(error)) if item.attempts < max_attempts(def) => {
                    item.error = Some(error);
                    item.status = StepStatus::Pending;
                    item.execution_id = None;
                    item.not_before_ms = Some(now_ms + backoff_ms(def, item.attempts));
                }
                Some(Err(error)) => {
                    item.error = Some(error);
                    item.status = StepStatus::Failed;
                }
                None => {}
            }
        }
        self.run.steps[i].items = items;
        if timed_out {
            let error = format!("timed out after {} s", def.timeout_seconds.unwrap_or(0));
            for item in &mut self.run.steps[i].items {
                if !item.status.is_ended() {
                    if item.status == StepStatus::Running {
                        self.cancels.extend(item.execution_id);
                    }
                    item.status = StepStatus::Cancelled;
                }
            }
            self.fail_step(i, error);
            return;
        }
        self.pump_items(i, def);
    }

    /// Starts items while fewer than `max_parallel` run, then ends the step once every item
    /// has ended. A failed item stops new items unless the step continues on failure.
    fn pump_items(&mut self, i: usize, def: &WorkflowStep) {
        let limit = def.max_parallel.unwrap_or(MAX_PARALLEL) as usize;
        let items = &self.run.steps[i].items;
        let failed = items.iter().any(|it| it.status == StepStatus::Failed);
        let stop = failed && !def.continue_on_failure;
        let mut running = items.iter().filter(|it| it.status == StepStatus::Running).count();
        for k in 0..self.run.steps[i].items.len() {
            if stop || running >= limit || self.run.status == RunStatus::Paused {
                break;
            }
            let item = &self.run.steps[i].items[k];
            if item.status != StepStatus::Pending || item.not_before_ms.is_some_and(|t| t > self.now_ms) {
                continue;
            }
            let (value, index) = (item.item.clone(), item.index);
            self.run.steps[i].items[k].attempts += 1;
            match self.start_work(i, def, Some((index, value))) {
                Ok(id) => {
                    let item = &mut self.run.steps[i].items[k];
                    item.execution_id = Some(id);
                    item.not_before_ms = None;
                    item.status = StepStatus::Running;
                    item.started_at = Some(self.inputs.now);
                    running += 1;
                }
                Err(error) => {
                    let item = &mut self.run.steps[i].items[k];
                    item.error = Some(error);
                    item.status = StepStatus::Failed;
                }
            }
        }
        let items = &self.run.steps[i].items;
        let active = items
            .iter()
            .any(|it| it.status == StepStatus::Running || (it.status == StepStatus::Pending && !stop));
        if active {
            return;
        }
        let first_failure = items
            .iter()
            .find(|it| it.status == StepStatus::Failed)
            .map(|it| format!("item {} failed: {}", it.index, it.error.clone().unwrap_or_default()));
        match first_failure {
            Some(error) if !def.continue_on_failure => {
                for item in &mut self.run.steps[i].items {
                    if item.status == StepStatus::Pending {
                        item.status = StepStatus::Cancelled;
                    }
                }
                self.fail_step(i, error);
            }
            failure => {
                let output: Vec<Value> = items
                    .iter()
                    .map(|it| it.output.clone().unwrap_or(Value::Null))
                    .collect();
                let s = &mut self.run.steps[i];
                s.output = Some(Value::Array(output));
                s.error = failure;
                self.set_step(i, StepStatus::Completed);
            }
        }
    }

    /// Whether a dependency lets its dependents run.
    fn lets_through(&self, dep: usize) -> Option<bool> {
        let s = &self.run.steps[dep];
        match s.status {
            StepStatus::Completed | StepStatus::Skipped => Some(true),
            StepStatus::Failed => Some(self.def(dep).continue_on_failure),
            StepStatus::Cancelled => Some(false),
            _ => None,
        }
    }

    /// A pending step whose dependencies have all ended: skipped, or started.
    fn try_start(&mut self, i: usize) {
        if self.run.status == RunStatus::Paused {
            return;
        }
        let def = self.def(i).clone();
        let mut deps = Vec::new();
        for d in &def.depends_on {
            let Some(j) = self.index_of(d) else { return };
            match self.lets_through(j) {
                None => return,
                Some(false) => {
                    // A failure that stops the run is handled by `conclude`.
                    return;
                }
                Some(true) => deps.push(j),
            }
        }
        if !deps.is_empty() && deps.iter().all(|&j| self.run.steps[j].status == StepStatus::Skipped) {
            self.run.steps[i].error = Some("every step it depends on was skipped".into());
            self.set_step(i, StepStatus::Skipped);
            return;
        }
        if self.run.steps[i].not_before_ms.is_some_and(|t| t > self.now_ms) {
            return;
        }
        if let Some(condition) = &def.condition {
            match self.evaluate(condition) {
                Ok(true) => {}
                Ok(false) => {
                    self.run.steps[i].error = None;
                    self.set_step(i, StepStatus::Skipped);
                    return;
                }
                Err(e) => return self.fail_step(i, format!("condition: {e}")),
            }
        }
        match def.step_type {
            StepType::Approval => {
                let message = match self.render(def.message.as_deref().unwrap_or_default(), None) {
                    Ok(m) => m,
                    Err(e) => return self.fail_step(i, format!("message: {e}")),
                };
                let approvers: Vec<Role> = if def.approvers.is_empty() {
                    vec![Role::Admin, Role::Member]
                } else {
                    def.approvers.clone()
                };
                self.run.steps[i].started_at = Some(self.inputs.now);
                self.run.steps[i].output = Some(json!({"message": message}));
                self.set_step(i, StepStatus::WaitingForApproval);
                self.events.push((
                    "approval_requested".into(),
                    json!({"step_id": def.id, "message": message, "approvers": approvers,
                           "timeout_seconds": def.timeout_seconds, "on_timeout": def.on_timeout}),
                ));
            }
            StepType::Sleep => {
                let until = match (&def.seconds, &def.until) {
                    (Some(n), _) => Ok(self.now_ms + n * 1000),
                    (None, Some(t)) => self.render(t, None).and_then(|t| {
                        chrono::DateTime::parse_from_rfc3339(t.trim())
                            .map(|t| t.timestamp_millis())
                            .map_err(|e| format!("'{t}' is not an RFC 3339 time: {e}"))
                    }),
                    (None, None) => Ok(self.now_ms),
                };
                match until {
                    Ok(t) => {
                        self.run.steps[i].attempts += 1;
                        self.run.steps[i].not_before_ms = Some(t);
                        self.set_step(i, StepStatus::Running);
                        self.settle(i);
                    }
                    Err(e) => self.fail_step(i, format!("until: {e}")),
                }
            }
            _ if def.for_each.is_some() => {
                let items = match self.items(def.for_each.as_ref().unwrap_or(&Value::Null)) {
                    Ok(items) => items,
                    Err(e) => return self.fail_step(i, format!("for_each: {e}")),
                };
                let s = &mut self.run.steps[i];
                s.attempts += 1;
                s.items = items
                    .into_iter()
                    .enumerate()
                    .map(|(index, item)| ItemRun {
                        index,
                        item,
                        status: StepStatus::Pending,
                        attempts: 0,
                        execution_id: None,
                        output: None,
                        error: None,
                        not_before_ms: None,
                        started_at: None,
                    })
                    .collect();
                self.set_step(i, StepStatus::Running);
                self.pump_items(i, &def);
            }
            _ => {
                self.run.steps[i].attempts += 1;
                match self.start_work(i, &def, None) {
                    Ok(id) => {
                        let s = &mut self.run.steps[i];
                        s.execution_id = Some(id);
                        s.error = None;
                        s.not_before_ms = None;
                        self.set_step(i, StepStatus::Running);
                    }
                    Err(e) => self.fail_step(i, e),
                }
            }
        }
    }

    /// The list a `for_each` runs over.
    fn items(&self, source: &Value) -> Result<Vec<Value>, String> {
        let list = match source {
            Value::Array(a) => a.clone(),
            Value::String(t) => {
                let text = self.render(t, None)?;
                match serde_json::from_str(text.trim()) {
                    Ok(Value::Array(a)) => a,
                    _ => return Err(format!("renders to {text:.200}, not a JSON list")),
                }
            }
            _ => return Err("must be a list or a template".into()),
        };
        if list.len() > MAX_ITEMS {
            return Err(format!("{} items; at most {MAX_ITEMS}", list.len()));
        }
        Ok(list)
    }

    /// Renders the step's work and queues its execution; the error fails the step (or item).
    fn start_work(&mut self, i: usize, def: &WorkflowStep, item: Option<(usize, Value)>) -> Result<Uuid, String> {
        let index = item.as_ref().map(|(k, _)| *k);
        if let Some(why) = self.inputs.denied.get(&(def.id.clone(), index)) {
            return Err(why.clone());
        }
        let queue = def
            .worker_queue_id
            .or(self.run.worker_queue_id)
            .or(self.inputs.default_queue)
            .ok_or("no worker queue: the step, the start request and the workflow name none")?;
        let r = |field: &str, source: &str| self.render(source, item.as_ref()).map_err(|e| format!("{field}: {e}"));
        let (entity, prompt, work) = match def.step_type {
            StepType::Agent | StepType::Team => {
                let prompt = r("prompt", def.prompt.as_deref().unwrap_or_default())?;
                let (entity, work) = if def.step_type == StepType::Agent {
                    (def.agent_id, StepWork::Agent)
                } else {
                    (def.team_id, StepWork::Team)
                };
                let entity = entity.ok_or("the step names no agent or team")?;
                (Some((def.step_type, entity)), prompt, work)
            }
            StepType::Command => {
                let command = self
                    .render_with(&self.shell, def.command.as_deref().unwrap_or_default(), item.as_ref())
                    .map_err(|e| format!("command: {e}"))?;
                (None, command.clone(), StepWork::Command { command })
            }
            StepType::Http => {
                let method = def.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
                let url = r("url", def.url.as_deref().unwrap_or_default())?;
                let mut headers = std::collections::BTreeMap::new();
                for (k, v) in &def.headers {
                    headers.insert(k.clone(), r("headers", v)?);
                }
                let body = def.body.as_deref().map(|b| r("body", b)).transpose()?;
                let prompt = format!("{method} {url}");
                (
                    None,
                    prompt,
                    StepWork::Http {
                        method,
                        url,
                        headers,
                        body,
                    },
                )
            }
            StepType::Approval | StepType::Sleep => return Err("not a working step".into()),
        };
        let id = Uuid::now_v7();
        self.starts.push(Start {
            execution_id: id,
            step_id: self.run.steps[i].step_id.clone(),
            index,
            queue,
            entity,
            prompt,
            work,
        });
        Ok(id)
    }

    /// What templates read: inputs, every step's result so far, the run, and the item.
    fn context(&self, item: Option<&(usize, Value)>) -> Value {
        let steps: serde_json::Map<String, Value> = self
            .run
            .steps
            .iter()
            .map(|s| {
                (
                    s.step_id.clone(),
                    json!({"output": s.output, "status": s.status, "error": s.error, "execution_id": s.execution_id}),
                )
            })
            .collect();
        let mut ctx = json!({
            "inputs": self.run.inputs,
            "steps": steps,
            "run": {"id": self.run.id, "started_at": self.run.started_at},
        });
        if let Some((index, value)) = item {
            ctx["item"] = value.clone();
            ctx["index"] = json!(index);
        }
        ctx
    }

    fn render(&self, source: &str, item: Option<&(usize, Value)>) -> Result<String, String> {
        self.render_with(&self.env, source, item)
    }

    fn render_with(
        &self,
        env: &Environment<'_>,
        source: &str,
        item: Option<&(usize, Value)>,
    ) -> Result<String, String> {
        let ctx = minijinja::Value::from_serialize(self.context(item));
        env.render_str(source, ctx).map_err(|e| templates::describe(&e))
    }

    fn evaluate(&self, condition: &str) -> Result<bool, String> {
        let expr = self
            .env
            .compile_expression(condition)
            .map_err(|e| templates::describe(&e))?;
        let ctx = minijinja::Value::from_serialize(self.context(None));
        expr.eval(ctx).map(|v| v.is_true()).map_err(|e| templates::describe(&e))
    }

    /// The run's state from its steps': a failure that stops the run stops everything.
    fn conclude(&mut self) {
        if self.run.status.is_terminal() {
            return;
        }
        let stopping = (0..self.run.steps.len())
            .find(|&i| self.run.steps[i].status == StepStatus::Failed && !self.def(i).continue_on_failure);
        if let Some(i) = stopping {
            let s = &self.run.steps[i];
            self.run.error = Some(format!(
                "step '{}' failed: {}",
                s.step_id,
                s.error.clone().unwrap_or_default()
            ));
            self.stop_all(StepStatus::Cancelled, "the run failed before it ran");
            self.set_run(RunStatus::Failed);
            return;
        }
        if self.run.steps.iter().all(|s| s.status.is_ended()) {
            self.set_run(RunStatus::Completed);
            return;
        }
        if self.run.status == RunStatus::Paused {
            return;
        }
        let busy = self
            .run
            .steps
            .iter()
            .any(|s| matches!(s.status, StepStatus::Running | StepStatus::Ready));
        let waiting = self
            .run
            .steps
            .iter()
            .any(|s| s.status == StepStatus::WaitingForApproval);
        self.set_run(if waiting && !busy {
            RunStatus::WaitingForApproval
        } else {
            RunStatus::Running
        });
    }

    /// When the scheduler must look at the run again without an execution ending: a retry's
    /// backoff, a sleep, a timeout.
    fn wake_at(&self) -> Option<i64> {
        if self.run.status.is_terminal() {
            return None;
        }
        let mut at: Option<i64> = None;
        // A time already past is one this pass could not act on (a paused run, an item held
        // back by max_parallel): what unblocks it is an event of its own, not a timer.
        let now_ms = self.now_ms;
        let mut soonest = |t: i64| {
            if t > now_ms {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        for (s, def) in self.run.steps.iter().zip(self.inputs.steps) {
            if let (Some(t), Some(started)) = (def.timeout_seconds, s.started_at)
                && matches!(s.status, StepStatus::Running | StepStatus::WaitingForApproval)
            {
                soonest(started.timestamp_millis() + t * 1000);
            }
            if matches!(s.status, StepStatus::Pending | StepStatus::Running)
                && let Some(t) = s.not_before_ms
            {
                soonest(t);
            }
            for item in &s.items {
                if item.status == StepStatus::Pending
                    && let Some(t) = item.not_before_ms
                {
                    soonest(t);
                }
            }
        }
        at
    }
}

/// The step states a new run starts with.
pub fn new_steps(steps: &[WorkflowStep]) -> Vec<StepRun> {
    steps.iter().map(|s| StepRun::new(&s.id)).collect()
}

/// Every step that needs a worker queue and would have none, by id.
pub fn steps_without_queue(steps: &[WorkflowStep], start: Option<Uuid>, default: Option<Uuid>) -> Vec<&str> {
    steps
        .iter()
        .filter(|s| s.step_type.runs_on_worker() && s.worker_queue_id.or(start).or(default).is_none())
        .map(|s| s.id.as_str())
        .collect()
}

/// The queues a run's steps use, each once.
pub fn queues_of(steps: &[WorkflowStep], start: Option<Uuid>, default: Option<Uuid>) -> Vec<Uuid> {
    let mut seen = HashSet::new();
    steps
        .iter()
        .filter(|s| s.step_type.runs_on_worker())
        .filter_map(|s| s.worker_queue_id.or(start).or(default))
        .filter(|q| seen.insert(*q))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_of(steps: &[WorkflowStep], status: RunStatus) -> WorkflowRun {
        let at = cp_types::now();
        WorkflowRun {
            id: Uuid::now_v7(),
            organization_id: "o".into(),
            workflow_id: Uuid::now_v7(),
            workflow_name: "w".into(),
            workflow_version: 1,
            status,
            inputs: json!({}),
            worker_queue_id: Some(Uuid::now_v7()),
            attempt: 1,
            error: None,
            steps: new_steps(steps),
            event_count: 1,
            created_by: Uuid::nil().to_string(),
            created_at: at,
            started_at: Some(at),
            completed_at: None,
            updated_at: at,
            parent_execution_id: None,
        }
    }

    /// A timer already past that the pass cannot act on (a paused run's retry) must not keep
    /// the run due: the scheduler would advance it every round for nothing.
    #[test]
    fn a_timer_the_pass_cannot_act_on_does_not_keep_the_run_due() {
        let steps: Vec<WorkflowStep> =
            serde_json::from_value(json!([{"id": "a", "type": "command", "command": "true"}])).unwrap();
        let mut run = run_of(&steps, RunStatus::Paused);
        let now = cp_types::now();
        run.steps[0].not_before_ms = Some(now.timestamp_millis() - 1000);
        let denied = Denials::new();
        let inputs = Inputs {
            steps: &steps,
            default_queue: None,
            executions: &[],
            denied: &denied,
            now,
        };
        let planned = plan(&run, &inputs, None).unwrap();
        assert!(planned.starts.is_empty() && !planned.changed);
        assert_eq!(planned.wake_at, None);
        // Resumed, it starts, and the spent timer is gone.
        let planned = plan(&run, &inputs, Some(&RunControl::Resume)).unwrap();
        assert_eq!(planned.starts.len(), 1);
        assert_eq!((planned.run.steps[0].not_before_ms, planned.wake_at), (None, None));
    }
}
