//! Jobs: their definitions, and their firings by the schedule, an inbound webhook or a
//! trigger. A firing is written first (claimed, for a schedule), its prompt or inputs rendered
//! into it, and then started: the execution or workflow run it starts has the firing's id.
//! The scheduler in `serve` claims due schedules, starts firings that wait (buffered, or left
//! pending by a replica that stopped), and records on each job how its firings ended.

use std::time::Duration;

use chrono::{DateTime, Utc};
use cp_store::StoreError;
use cp_store::jobs::{Author, FiringRecord, JobDraft, JobRecord, NewFiring, Started};
use cp_types::execution::{ExecuteRequest, ExecutionType};
use cp_types::ids::ExecutionId;
use cp_types::job::{
    Job, JobFiring, JobSpec, JobStatus, JobTarget, JobTrigger, JobWithSecret, MAX_JOBS, Overlap, TriggerSource,
    UpdateJob,
};
use cp_types::org::Role;
use cp_types::page::PageRequest;
use cp_types::worker_queue::QueueStatus;
use cp_types::workflow_run::StartWorkflow;
use cp_types::{ErrorCode, FieldIssue, Page};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::caller::Caller;
use super::error::{ServiceError, ServiceResult, or_not_found};
use super::job_schedule::{self, Schedule};
use super::notify::{Notice, notify};
use super::{dispatch, templates, workflow_runs};
use crate::state::AppState;

/// How long the replica that wrote a pending firing has to start it before another may.
const LEASE_MS: i64 = 60_000;
/// What a template may read.
const TEMPLATE_NAMES: &[&str] = &["job", "now", "parameters", "payload", "headers"];
/// Rows one scheduler round takes of each kind.
const BATCH: i64 = 100;

/// The path of a job's inbound webhook under the API.
pub const WEBHOOK_PREFIX: &str = "/api/v1/jobs/webhook/";

/// The job as the API shows it: with the full URL of its webhook.
fn shown(state: &AppState, record: JobRecord) -> Job {
    let mut job = record.job;
    job.webhook_url = job
        .webhook_path
        .as_ref()
        .map(|p| format!("{}{WEBHOOK_PREFIX}{p}", state.config.public_url.trim_end_matches('/')));
    job
}

/// A new inbound webhook secret: 32 random bytes, base64url.
fn new_secret() -> String {
    use base64::Engine as _;
    format!(
        "jwhsec_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    )
}

fn new_path() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>())
}

fn seal(state: &AppState, org: &str, id: Uuid, secret: &str) -> ServiceResult<Vec<u8>> {
    super::crypto::Cipher::new(&state.config.master_key)
        .seal(secret.as_bytes(), &super::crypto::job_aad(org, id))
        .map_err(|e| {
            tracing::error!(error = %e, "cannot seal a job's webhook secret");
            ServiceError::internal()
        })
}

/// Opens a job's sealed webhook secret.
pub fn open_secret(state: &AppState, org: &str, id: Uuid, sealed: &[u8]) -> Option<String> {
    super::crypto::Cipher::new(&state.config.master_key)
        .open_string(sealed, &super::crypto::job_aad(org, id))
        .map_err(|e| tracing::error!(job = %id, error = %e, "a job's webhook secret does not open"))
        .ok()
}

/// Everything a definition names or says that needs the database or the template engine:
/// the schedule and zone, the templates, the target, queue and environment (each in the
/// caller's organization). Answers the target's name.
async fn check(state: &AppState, org: &str, spec: &JobSpec) -> ServiceResult<String> {
    spec.validate()?;
    let mut issues: Vec<FieldIssue> = Vec::new();
    if spec.trigger_type == JobTrigger::Cron
        && let Err(mut e) = Schedule::parse(spec.cron_schedule.as_deref().unwrap_or_default(), &spec.cron_timezone)
    {
        issues.append(&mut e);
    } else if spec.cron_timezone.parse::<chrono_tz::Tz>().is_err() {
        issues.push(FieldIssue::new(
            "cron_timezone",
            format!("'{}' is not an IANA time zone", spec.cron_timezone),
        ));
    }
    let env = templates::environment();
    let webhook = spec.trigger_type == JobTrigger::Webhook;
    if let Some(t) = &spec.prompt_template
        && let Err(e) = check_template(&env, t, webhook)
    {
        issues.push(FieldIssue::new("prompt_template", e));
    }
    if let Some(inputs) = &spec.inputs_template {
        let mut strings = Vec::new();
        strings_of(inputs, "inputs_template".to_owned(), &mut strings);
        for (at, t) in strings {
            if let Err(e) = check_template(&env, t, webhook) {
                issues.push(FieldIssue::new(&at, e));
            }
        }
    }
    let name = match spec.entity_type {
        JobTarget::Agent => state.store.agents(org).get(spec.entity_id).await.map(|a| a.name),
        JobTarget::Team => state.store.teams(org).get(spec.entity_id).await.map(|t| t.name),
        JobTarget::Workflow => state.store.workflows(org).get(spec.entity_id).await.map(|w| w.name),
    };
    let name = known(name, &mut issues, "entity_id", || {
        format!("no {} {} in this organization", spec.entity_type, spec.entity_id)
    })?
    .unwrap_or_default();
    if let Some(q) = spec.worker_queue_id {
        let queue = state.store.worker_queues(org).get(q).await;
        known(queue, &mut issues, "worker_queue_id", || {
            format!("no worker queue {q} in this organization")
        })?;
    }
    if let Some(env) = spec.environment_id {
        let found = state.store.environments(org).get(env).await;
        known(found, &mut issues, "environment_id", || {
            format!("no environment {env} in this organization")
        })?;
    }
    if issues.is_empty() {
        Ok(name)
    } else {
        Err(issues.into())
    }
}

/// What a lookup found; `None` with an issue on `field` when the organization has no such
/// thing (another organization's looks the same).
fn known<T>(
    found: Result<T, StoreError>,
    issues: &mut Vec<FieldIssue>,
    field: &str,
    issue: impl FnOnce() -> String,
) -> ServiceResult<Option<T>> {
    match found {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::NotFound) => {
            issues.push(FieldIssue::new(field, issue()));
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Compiles a template and checks it reads only what a firing gives it.
fn check_template(env: &minijinja::Environment<'_>, source: &str, webhook: bool) -> Result<(), String> {
    let t = env.template_from_str(source).map_err(|e| templates::describe(&e))?;
    for name in t.undeclared_variables(false) {
        if !TEMPLATE_NAMES.contains(&name.as_str()) {
            return Err(format!(
                "'{name}' is not defined: a job's templates read {}",
                TEMPLATE_NAMES.join(", ")
            ));
        }
        if !webhook && (name == "payload" || name == "headers") {
            return Err(format!("'{name}' is only given to webhook jobs"));
        }
    }
    Ok(())
}

/// Every string in `v` with where it is (`inputs_template.a.b`).
fn strings_of<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) => out.push((at, s)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings_of(item, format!("{at}.{i}"), out);
            }
        }
        Value::Object(m) => {
            for (k, item) in m {
                strings_of(item, format!("{at}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// The schedule's next run (jitter included) and due time after `now`, for an enabled cron job.
fn next_run(id: Uuid, spec: &JobSpec, now: DateTime<Utc>) -> (Option<i64>, Option<i64>) {
    if !spec.enabled || spec.trigger_type != JobTrigger::Cron {
        return (None, None);
    }
    let Ok(schedule) = Schedule::parse(spec.cron_schedule.as_deref().unwrap_or_default(), &spec.cron_timezone) else {
        return (None, None);
    };
    match schedule.next_after(now) {
        Some(due) => {
            let due = due.timestamp_millis();
            (Some(due + job_schedule::jitter_ms(id, spec.jitter_seconds)), Some(due))
        }
        None => (None, None),
    }
}

fn author(caller: &Caller) -> Author {
    Author {
        key_id: caller.key_id,
        name: caller.key_name.clone(),
        role: caller.role.as_str().to_owned(),
    }
}

pub async fn create(state: &AppState, caller: &Caller, spec: JobSpec) -> ServiceResult<JobWithSecret> {
    let org = caller.org_id.as_str();
    let entity_name = check(state, org, &spec).await?;
    let id = Uuid::now_v7();
    let (next_run_at, next_due_at) = next_run(id, &spec, state.config.clock.now());
    let draft = JobDraft {
        status: if spec.enabled {
            JobStatus::Active
        } else {
            JobStatus::Disabled
        },
        spec,
        entity_name,
        next_run_at,
        next_due_at,
        fresh_start: true,
        rescheduled: true,
        enabled_changed: true,
    };
    let secret = (draft.spec.trigger_type == JobTrigger::Webhook).then(new_secret);
    let sealed = secret.as_deref().map(|s| seal(state, org, id, s)).transpose()?;
    let path = new_path();
    let webhook = sealed.as_deref().map(|s| (path.as_str(), s));
    let record = state
        .store
        .jobs(org)
        .create(id, &draft, webhook, &author(caller), MAX_JOBS)
        .await?;
    state.jobs_wake.notify_one();
    Ok(JobWithSecret {
        job: shown(state, record),
        webhook_secret: secret,
    })
}

/// The caller's organization's job `id` (404 for any other).
async fn record_of(state: &AppState, caller: &Caller, id: Uuid) -> ServiceResult<JobRecord> {
    state
        .store
        .jobs(&caller.org_id)
        .get(id)
        .await
        .map_err(or_not_found("job"))
}

pub async fn get(state: &AppState, caller: &Caller, id: Uuid) -> ServiceResult<Job> {
    let record = record_of(state, caller, id).await?;
    Ok(shown(state, record))
}

pub async fn list(
    state: &AppState,
    caller: &Caller,
    enabled: Option<bool>,
    trigger: Option<JobTrigger>,
    page: PageRequest,
) -> ServiceResult<Page<Job>> {
    let page = state.store.jobs(&caller.org_id).list(enabled, trigger, page).await?;
    Ok(page.map(|r| shown(state, r)))
}

/// Applies an update; a job that becomes a webhook job gets its path and secret (shown in
/// this answer, once). A changed schedule, zone or enabled flag restarts the schedule from now.
pub async fn update(state: &AppState, caller: &Caller, id: Uuid, req: UpdateJob) -> ServiceResult<JobWithSecret> {
    let org = caller.org_id.as_str();
    let jobs = state.store.jobs(org);
    let record = record_of(state, caller, id).await?;
    let was = record.job.spec.clone();
    let enabling = req.enabled == Some(true) && !was.enabled;
    let spec = req.apply(was.clone());
    // Turning a job off is always possible, even when what it names is gone.
    let only_disabling = !spec.enabled
        && JobSpec {
            enabled: was.enabled,
            ..spec.clone()
        } == was;
    let entity_name = if only_disabling {
        record.job.entity_name.clone()
    } else {
        check(state, org, &spec).await?
    };
    let rescheduled = spec.cron_schedule != was.cron_schedule
        || spec.cron_timezone != was.cron_timezone
        || spec.trigger_type != was.trigger_type
        || spec.enabled != was.enabled
        || spec.jitter_seconds != was.jitter_seconds;
    let (next_run_at, next_due_at) = if rescheduled {
        next_run(id, &spec, state.config.clock.now())
    } else {
        (record.job.next_run_at.map(|t| t.timestamp_millis()), record.next_due_at)
    };
    let status = match (spec.enabled, record.job.status) {
        (true, _) => JobStatus::Active,
        (false, JobStatus::Paused) => JobStatus::Paused,
        (false, _) => JobStatus::Disabled,
    };
    let needs_webhook = spec.trigger_type == JobTrigger::Webhook && record.job.webhook_path.is_none();
    let enabled_changed = spec.enabled != was.enabled;
    let draft = JobDraft {
        spec,
        entity_name,
        status,
        next_run_at,
        next_due_at,
        fresh_start: enabling,
        rescheduled,
        enabled_changed,
    };
    let secret = needs_webhook.then(new_secret);
    let sealed = secret.as_deref().map(|s| seal(state, org, id, s)).transpose()?;
    let path = new_path();
    let webhook = sealed.as_deref().map(|s| (path.as_str(), s));
    let record = jobs
        .update(id, &draft, webhook, &author(caller))
        .await
        .map_err(or_not_found("job"))?;
    state.jobs_wake.notify_one();
    Ok(JobWithSecret {
        job: shown(state, record),
        webhook_secret: secret,
    })
}

pub async fn set_enabled(state: &AppState, caller: &Caller, id: Uuid, enabled: bool) -> ServiceResult<Job> {
    let req = UpdateJob {
        enabled: Some(enabled),
        ..Default::default()
    };
    Ok(update(state, caller, id, req).await?.job)
}

pub async fn delete(state: &AppState, caller: &Caller, id: Uuid) -> ServiceResult<()> {
    state
        .store
        .jobs(&caller.org_id)
        .delete(id)
        .await
        .map_err(or_not_found("job"))
}

/// A new webhook secret for a webhook job, shown this once; the old one stops at once.
pub async fn rotate_secret(state: &AppState, caller: &Caller, id: Uuid) -> ServiceResult<JobWithSecret> {
    let org = caller.org_id.as_str();
    let record = record_of(state, caller, id).await?;
    if record.job.spec.trigger_type != JobTrigger::Webhook {
        return Err(ServiceError::conflict("only a webhook job has a webhook secret"));
    }
    let secret = new_secret();
    let record = state
        .store
        .jobs(org)
        .set_secret(id, &seal(state, org, id, &secret)?)
        .await
        .map_err(or_not_found("job"))?;
    Ok(JobWithSecret {
        job: shown(state, record),
        webhook_secret: Some(secret),
    })
}

pub async fn firings(state: &AppState, caller: &Caller, id: Uuid, page: PageRequest) -> ServiceResult<Page<JobFiring>> {
    state
        .store
        .jobs(&caller.org_id)
        .firings(id, page)
        .await
        .map_err(or_not_found("job"))
}

/// What fired a job, with what its templates read.
pub struct Trigger {
    pub source: TriggerSource,
    pub parameters: Value,
    pub payload: Option<Value>,
    pub headers: Option<Value>,
    pub delivery_id: Option<String>,
}

/// `POST /jobs/{id}/trigger`: fires the job now for the caller, whatever its trigger type and
/// overlap setting.
pub async fn trigger(state: &AppState, caller: &Caller, id: Uuid, parameters: Value) -> ServiceResult<JobFiring> {
    let record = record_of(state, caller, id).await?;
    if !record.job.spec.enabled {
        return Err(ServiceError::conflict(format!(
            "job '{}' is {}; enable it first",
            record.job.spec.name, record.job.status
        )));
    }
    let t = Trigger {
        source: TriggerSource::Manual,
        parameters,
        payload: None,
        headers: None,
        delivery_id: None,
    };
    Ok(fire_now(state, &record, t, Some(caller))
        .await?
        .expect("a manual firing has no delivery id"))
}

/// Writes a manual or webhook firing and starts it; `None` when the delivery fired already.
pub async fn fire_now(
    state: &AppState,
    record: &JobRecord,
    t: Trigger,
    caller: Option<&Caller>,
) -> ServiceResult<Option<JobFiring>> {
    let now = state.config.clock.now();
    let new = NewFiring {
        id: Uuid::now_v7(),
        source: t.source,
        status: "pending",
        work: Some(render(&record.job, now, &t)),
        due_at: None,
        error: None,
        missed_count: None,
        delivery_id: t.delivery_id.clone(),
        lease_until: Some(now.timestamp_millis() + LEASE_MS),
    };
    let org = record.job.organization_id.as_str();
    let Some(firing) = state.store.jobs(org).add_firing(record.job.id, &new).await? else {
        return Ok(None);
    };
    Ok(Some(start(state, record, firing, caller).await?.firing))
}

/// The firing's work: `{prompt}` or `{inputs}` rendered now, or `{error}` saying why not.
fn render(job: &Job, now: DateTime<Utc>, t: &Trigger) -> Value {
    let context = json!({
        "job": {
            "id": job.id, "name": job.spec.name, "description": job.spec.description,
            "trigger_type": job.spec.trigger_type, "entity_type": job.spec.entity_type,
            "entity_id": job.spec.entity_id, "entity_name": job.entity_name,
        },
        "now": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "parameters": t.parameters,
        "payload": t.payload.clone().unwrap_or_else(|| json!({})),
        "headers": t.headers.clone().unwrap_or_else(|| json!({})),
    });
    let env = templates::environment();
    let one = |source: &str| env.render_str(source, &context).map_err(|e| templates::describe(&e));
    match job.spec.entity_type {
        JobTarget::Workflow => {
            let mut inputs = job.spec.inputs_template.clone().unwrap_or_else(|| json!({}));
            match render_strings(&mut inputs, &one) {
                Ok(()) => json!({"inputs": inputs}),
                Err(e) => json!({"error": format!("inputs_template: {e}")}),
            }
        }
        _ => match one(job.spec.prompt_template.as_deref().unwrap_or_default()) {
            Ok(prompt) if prompt.trim().is_empty() => json!({"error": "prompt_template rendered an empty prompt"}),
            Ok(prompt) => json!({"prompt": prompt}),
            Err(e) => json!({"error": format!("prompt_template: {e}")}),
        },
    }
}

fn render_strings(v: &mut Value, one: &impl Fn(&str) -> Result<String, String>) -> Result<(), String> {
    match v {
        Value::String(s) => *s = one(s)?,
        Value::Array(items) => {
            for item in items {
                render_strings(item, one)?;
            }
        }
        Value::Object(m) => {
            for item in m.values_mut() {
                render_strings(item, one)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The caller a firing acts for: who triggered it by hand, else the job's author.
fn acting(record: &JobRecord, caller: Option<&Caller>) -> Caller {
    caller.cloned().unwrap_or_else(|| Caller {
        key_id: Uuid::parse_str(&record.job.created_by).unwrap_or_default(),
        key_name: record.created_by_name.clone(),
        role: record.created_by_role.parse().unwrap_or(Role::Member),
        org_id: record.job.organization_id.clone(),
        org_name: record.job.organization_id.clone(),
        worker_queue_id: None,
    })
}

/// Starts a pending (or buffered) firing, or records why it did not start, or leaves it
/// buffered behind the job's active firing.
async fn start(
    state: &AppState,
    record: &JobRecord,
    firing: FiringRecord,
    caller: Option<&Caller>,
) -> ServiceResult<FiringRecord> {
    let job = &record.job;
    let jobs = state.store.jobs(&job.organization_id);
    let f = &firing.firing;
    let off = !job.spec.enabled && f.trigger_source != TriggerSource::Manual;
    let wait = if off {
        Some(Wait::Skip(format!("the job is {}", job.status)))
    } else {
        waits(state, record, &firing).await?
    };
    let started = match wait {
        Some(Wait::Buffer) => {
            if firing.stored_status == "buffered" {
                jobs.release(f.id).await?;
            } else {
                jobs.buffer(f.id).await?;
            }
            return jobs.firing(f.id).await.map_err(Into::into);
        }
        Some(Wait::Skip(reason)) => Started::Not {
            status: "skipped",
            reason,
        },
        None => match launch(state, record, &firing, caller).await {
            Ok(started) => started,
            // The database or the server failed, not the job: the firing stays pending and
            // is started again once its lease runs out.
            Err(e) if matches!(e.code, ErrorCode::ServiceUnavailable | ErrorCode::InternalError) => return Err(e),
            Err(e) => Started::Not {
                status: "failed",
                reason: failure(&e),
            },
        },
    };
    let done = jobs
        .finish(&firing, &job.spec.name, &started, job.spec.pause_after_failures)
        .await?;
    if let Started::Not { status, reason } = &started {
        tracing::info!(job = %job.id, firing = %f.id, status, %reason, "a job's firing started nothing");
    }
    metrics::counter!("job_firings_total", "source" => f.trigger_source.as_str(), "status" => match &started {
        Started::Not { status, .. } => *status,
        _ => "started",
    })
    .increment(1);
    notify(state, Notice::Deliveries);
    Ok(done)
}

/// A service error as a firing's reason: its message with the fields or violations it names.
fn failure(e: &ServiceError) -> String {
    let code = serde_json::to_value(e.code).unwrap_or_default();
    let code = code.as_str().unwrap_or_default();
    match &e.details {
        Some(d) => format!("{code}: {} ({d})", e.message),
        None => format!("{code}: {}", e.message),
    }
}

enum Wait {
    Buffer,
    Skip(String),
}

/// Whether the job's overlap setting holds this firing back. A manual trigger always runs.
async fn waits(state: &AppState, record: &JobRecord, firing: &FiringRecord) -> ServiceResult<Option<Wait>> {
    let overlap = record.job.spec.overlap;
    if overlap == Overlap::Allow || firing.firing.trigger_source == TriggerSource::Manual {
        return Ok(None);
    }
    let jobs = state.store.jobs(&record.job.organization_id);
    let now_ms = state.config.clock.now().timestamp_millis();
    let (active, buffered) = jobs.busy(record.job.id, firing.firing.id, now_ms).await?;
    if !active {
        return Ok(None);
    }
    let still = "the job's previous firing is still active";
    Ok(Some(match overlap {
        Overlap::BufferOne if firing.stored_status == "buffered" => Wait::Buffer,
        Overlap::BufferOne if !buffered => Wait::Buffer,
        Overlap::BufferOne => Wait::Skip(format!("{still} and another firing waits behind it")),
        _ => Wait::Skip(format!("{still} (overlap: skip)")),
    }))
}

/// Starts the firing's execution or workflow run (with the firing's id), or finds the one a
/// replica that stopped had started.
async fn launch(
    state: &AppState,
    record: &JobRecord,
    firing: &FiringRecord,
    caller: Option<&Caller>,
) -> ServiceResult<Started> {
    let job = &record.job;
    let org = job.organization_id.as_str();
    let id = firing.firing.id;
    if caller.is_none() {
        check_author(state, record).await?;
    }
    let caller = &acting(record, caller);
    let work = firing.work.clone().unwrap_or_default();
    if let Some(e) = work["error"].as_str() {
        return Err(ServiceError::invalid("template", e));
    }
    let workflow = job.spec.entity_type == JobTarget::Workflow;
    if let Some(started) = already(state, org, id, workflow).await {
        return Ok(started);
    }
    let outcome = if workflow {
        let req = StartWorkflow {
            inputs: Some(work["inputs"].clone()),
            worker_queue_id: queue(state, record).await?,
        };
        workflow_runs::start(state, caller, job.spec.entity_id, req, id, None)
            .await
            .map(|run| Started::Run {
                id: run.id,
                status: run.status.to_string(),
            })
    } else {
        execute(state, record, firing, caller, &work).await
    };
    match outcome {
        Ok(started) => Ok(started),
        // Another replica took the lease over meanwhile and started it: once is enough.
        Err(e) => already(state, org, id, workflow).await.ok_or(e),
    }
}

/// What the firing `id` started already, if anything.
async fn already(state: &AppState, org: &str, id: Uuid, workflow: bool) -> Option<Started> {
    if workflow {
        let run = state.store.workflow_runs(org).get(id).await.ok()?;
        return Some(Started::Run {
            id,
            status: run.run.status.to_string(),
        });
    }
    let e = state.store.executions(org).get(id).await.ok()?;
    Some(Started::Execution {
        id,
        status: e.status.to_string(),
    })
}

/// Executes the firing's agent or team on the queue read now, as execution `id`.
async fn execute(
    state: &AppState,
    record: &JobRecord,
    firing: &FiringRecord,
    caller: &Caller,
    work: &Value,
) -> ServiceResult<Started> {
    let job = &record.job;
    let id = firing.firing.id;
    let Some(queue) = queue(state, record).await? else {
        return Err(ServiceError::conflict(
            "no worker queue: the job names none and its environment has no active queue (or it names no environment)",
        ));
    };
    let kind = if job.spec.entity_type == JobTarget::Team {
        ExecutionType::Team
    } else {
        ExecutionType::Agent
    };
    let req = ExecuteRequest {
        prompt: work["prompt"].as_str().unwrap_or_default().to_owned(),
        worker_queue_id: queue.to_string(),
        system_prompt: None,
        stream: false,
        user_metadata: None,
        execution_environment: None,
        execution_metadata: Some(json!({
            "job_id": job.id, "job_name": job.spec.name, "job_firing_id": id,
            "trigger_source": firing.firing.trigger_source,
        })),
    };
    let e = dispatch::execute(state, caller, kind, job.spec.entity_id, &req, ExecutionId(id)).await?;
    Ok(Started::Execution {
        id: e.id,
        status: e.status.to_string(),
    })
}

/// A scheduled or webhook firing acts for the key that last wrote the job: a key revoked or
/// expired since then starts nothing.
async fn check_author(state: &AppState, record: &JobRecord) -> ServiceResult<()> {
    let job = &record.job;
    let Ok(key_id) = Uuid::parse_str(&job.created_by) else {
        return Ok(());
    };
    let key = match state.store.keys(&job.organization_id).get(key_id).await {
        Ok(k) => k,
        Err(StoreError::NotFound) => {
            return Err(ServiceError::forbidden(
                "the API key that last wrote this job no longer exists; update the job with a valid key",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if !key.is_usable(cp_types::now()) {
        return Err(ServiceError::forbidden(
            "the API key that last wrote this job is revoked or expired; update the job with a valid key",
        ));
    }
    Ok(())
}

/// The queue a firing runs on, read at fire time: the job's (active), else the first active
/// queue of its environment. `None` when it names neither (a workflow then uses its own).
async fn queue(state: &AppState, record: &JobRecord) -> ServiceResult<Option<Uuid>> {
    let spec = &record.job.spec;
    let queues = state.store.worker_queues(&record.job.organization_id);
    if let Some(q) = spec.worker_queue_id {
        let q = queues
            .get(q)
            .await
            .map_err(|_| ServiceError::conflict(format!("the job's worker queue {q} no longer exists")))?;
        if q.status != QueueStatus::Active {
            return Err(ServiceError::conflict(format!(
                "the job's worker queue '{}' is {}, not active",
                q.name, q.status
            )));
        }
        return Ok(Some(q.id));
    }
    let Some(env) = spec.environment_id else {
        return Ok(None);
    };
    let page = PageRequest {
        limit: cp_types::page::MAX_LIMIT,
        offset: 0,
    };
    let first = queues
        .list(Some(env), page)
        .await?
        .items
        .into_iter()
        .filter(|q| q.status == QueueStatus::Active)
        .min_by_key(|q| q.id);
    match first {
        Some(q) => Ok(Some(q.id)),
        None => Err(ServiceError::conflict(format!(
            "the job's environment {env} has no active worker queue"
        ))),
    }
}

/// Claims a due schedule and starts its firing: the latest due time fires if it is recent
/// enough, the ones before it are recorded as missed (one record for them all).
async fn fire_due(state: &AppState, org: &str, id: Uuid, run_at: i64, now: DateTime<Utc>) -> ServiceResult<()> {
    let jobs = state.store.jobs(org);
    let record = jobs.get(id).await?;
    let spec = &record.job.spec;
    let schedule = match Schedule::parse(spec.cron_schedule.as_deref().unwrap_or_default(), &spec.cron_timezone) {
        Ok(s) => s,
        Err(issues) => {
            // Left due, it would be read again every round, ahead of every other job.
            tracing::error!(job = %id, ?issues, "a stored schedule no longer parses; it stops");
            jobs.claim_due(id, run_at, (None, None), &[], &spec.name).await?;
            return Ok(());
        }
    };
    let jitter = job_schedule::jitter_ms(id, spec.jitter_seconds);
    let due = record.next_due_at.unwrap_or(run_at - jitter);
    let claim = job_schedule::claim(&schedule, due, now, jitter, spec.catchup_window_seconds * 1000);
    let mut firings = Vec::new();
    if let Some(m) = claim.missed {
        let at = |ms: i64| {
            DateTime::from_timestamp_millis(ms)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        firings.push(NewFiring {
            id: Uuid::now_v7(),
            source: TriggerSource::Cron,
            status: "missed",
            work: None,
            due_at: None,
            error: Some(format!(
                "{}{} due time(s) from {} to {} passed while no scheduler ran, longer ago than the catch-up window ({} s)",
                if m.at_least { "at least " } else { "" },
                m.count,
                at(m.first),
                at(m.last),
                spec.catchup_window_seconds,
            )),
            missed_count: Some(m.count),
            delivery_id: None,
            lease_until: None,
        });
    }
    let fired = claim.fire.map(|due| NewFiring {
        id: Uuid::now_v7(),
        source: TriggerSource::Cron,
        status: "pending",
        work: Some(render(
            &record.job,
            now,
            &Trigger {
                source: TriggerSource::Cron,
                parameters: json!({}),
                payload: None,
                headers: None,
                delivery_id: None,
            },
        )),
        due_at: Some(due),
        error: None,
        missed_count: None,
        delivery_id: None,
        lease_until: Some(now.timestamp_millis() + LEASE_MS),
    });
    firings.extend(fired.clone());
    let next = (claim.next_due.map(|d| d + jitter), claim.next_due);
    if !jobs.claim_due(id, run_at, next, &firings, &spec.name).await? {
        return Ok(());
    }
    if let Some(f) = fired {
        match jobs.firing(f.id).await {
            Ok(firing) => {
                start(state, &record, firing, None).await?;
            }
            // That due time had fired already: its firing was not written again.
            Err(StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// One round of the scheduler at the clock's `now`: claims due schedules, starts firings that
/// wait, and records the ends of started ones.
pub async fn tick(state: &AppState) {
    let now = state.config.clock.now();
    let now_ms = now.timestamp_millis();
    match state.store.due_jobs(now_ms, BATCH).await {
        Ok(due) => {
            for (org, id, run_at) in due {
                if let Err(e) = fire_due(state, &org.0, id, run_at, now).await {
                    tracing::warn!(job = %id, error = %e.message, "could not fire a due job");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read the jobs that are due"),
    }
    match state.store.waiting_firings(now_ms, BATCH).await {
        Ok(waiting) => {
            for (org, id) in waiting {
                if let Err(e) = start_waiting(state, &org.0, id, now_ms).await {
                    tracing::warn!(firing = %id, error = %e.message, "could not start a waiting firing");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read the firings that wait"),
    }
    match state.store.ended_firings(BATCH).await {
        Ok(ended) => {
            for (org, id, status) in ended {
                if let Err(e) = settle(state, &org.0, id, &status).await {
                    tracing::warn!(firing = %id, error = %e.message, "could not record a firing's end");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read the firings that ended"),
    }
}

async fn start_waiting(state: &AppState, org: &str, id: Uuid, now_ms: i64) -> ServiceResult<()> {
    let jobs = state.store.jobs(org);
    if !jobs.lease(id, now_ms, now_ms + LEASE_MS).await? {
        return Ok(());
    }
    let firing = jobs.firing(id).await?;
    let record = jobs.get(firing.firing.job_id).await?;
    start(state, &record, firing, None).await?;
    Ok(())
}

async fn settle(state: &AppState, org: &str, id: Uuid, status: &str) -> ServiceResult<()> {
    let jobs = state.store.jobs(org);
    let firing = jobs.firing(id).await?;
    let pause_after = match jobs.get(firing.firing.job_id).await {
        Ok(r) => r.job.spec.pause_after_failures,
        Err(StoreError::NotFound) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    jobs.settle(id, status, pause_after).await?;
    Ok(())
}

/// The scheduler of `serve`: a round every `every`, or at once when a job was written.
pub async fn scheduler(state: AppState, every: Duration) {
    loop {
        tick(&state).await;
        tokio::select! {
            _ = state.jobs_wake.notified() => {}
            _ = tokio::time::sleep(every) => {}
            _ = state.hub.closed() => return,
        }
    }
}

/// Headers a template may read: all but credentials and signatures.
pub fn template_headers(headers: &axum::http::HeaderMap) -> Value {
    const HIDDEN: &[&str] = &[
        "authorization",
        "cookie",
        "x-hub-signature",
        "x-hub-signature-256",
        "x-gitlab-token",
        "x-webhook-signature",
    ];
    let mut m = Map::new();
    for (name, value) in headers {
        if HIDDEN.contains(&name.as_str()) {
            continue;
        }
        if let Ok(v) = value.to_str() {
            m.insert(name.as_str().to_owned(), json!(v));
        }
    }
    Value::Object(m)
}
