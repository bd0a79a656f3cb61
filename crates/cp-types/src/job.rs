//! Jobs (API §7): an agent, a team or a workflow run on a cron schedule, on an inbound
//! webhook, or by hand, and the history of their firings.
//!
//! This module checks what a definition says on its own; the schedule, the time zone, the
//! templates and the entities it names are checked by the server.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::common::nullable;
use crate::validate::Issues;
use crate::{FieldIssue, wire_enum};

/// Most jobs an organization may have.
pub const MAX_JOBS: i64 = 1000;
/// Longest template (prompt, or the inputs document's JSON).
pub const MAX_TEMPLATE: usize = 100_000;
/// Longest catch-up window and jitter: a day.
pub const MAX_WINDOW_SECONDS: i64 = 86_400;

wire_enum! {
    /// What fires a job (besides `POST /jobs/{id}/trigger`, which fires any job).
    JobTrigger { Cron = "cron", Webhook = "webhook", Manual = "manual" }
}

wire_enum! {
    /// What a firing starts.
    JobTarget { Agent = "agent", Team = "team", Workflow = "workflow" }
}

wire_enum! {
    /// What a scheduled or webhook firing does while the previous one is still active.
    Overlap { Skip = "skip", Allow = "allow", BufferOne = "buffer_one" }
}

wire_enum! {
    /// `paused`: disabled by the server after `pause_after_failures` failures in a row.
    JobStatus { Active = "active", Disabled = "disabled", Paused = "paused" }
}

wire_enum! {
    TriggerSource { Cron = "cron", Webhook = "webhook", Manual = "manual" }
}

/// A job's definition: what create takes, and what an update changes part of.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema, PartialEq)]
pub struct JobSpec {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[schema(max_length = 10000)]
    pub description: Option<String>,
    pub trigger_type: JobTrigger,
    /// 5 or 6 fields (seconds first), or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    pub cron_schedule: Option<String>,
    /// IANA time zone of the schedule (default UTC).
    #[serde(default = "utc")]
    pub cron_timezone: String,
    pub entity_type: JobTarget,
    pub entity_id: Uuid,
    /// The agent's or team's prompt (minijinja: `job`, `now`, `parameters`, and for webhooks
    /// `payload` and `headers`).
    #[schema(max_length = 100000)]
    pub prompt_template: Option<String>,
    /// The workflow's inputs: every string in it is a template like `prompt_template`.
    #[schema(value_type = Option<Object>)]
    pub inputs_template: Option<Value>,
    /// Where agent and team firings run; else the first active queue of `environment_id`.
    pub worker_queue_id: Option<Uuid>,
    pub environment_id: Option<Uuid>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "skip")]
    pub overlap: Overlap,
    /// How late a missed due time may still fire (once) after a downtime.
    #[serde(default)]
    pub catchup_window_seconds: i64,
    /// Each due time fires up to this many seconds late, the same delay every time.
    #[serde(default)]
    pub jitter_seconds: i64,
    /// Failed firings in a row after which the job pauses itself.
    pub pause_after_failures: Option<i64>,
}

fn utc() -> String {
    "UTC".into()
}

fn yes() -> bool {
    true
}

fn skip() -> Overlap {
    Overlap::Skip
}

impl JobSpec {
    /// What the definition says on its own.
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        v.length("name", self.name.trim(), 1, 200);
        v.max_length("description", self.description.as_deref(), 10_000);
        let cron = self.cron_schedule.as_deref().map(str::trim).unwrap_or_default();
        if self.trigger_type == JobTrigger::Cron {
            v.check(!cron.is_empty(), "cron_schedule", "required when trigger_type is cron");
        }
        v.max_length("cron_schedule", self.cron_schedule.as_deref(), 200);
        v.length("cron_timezone", &self.cron_timezone, 1, 64);
        match self.entity_type {
            JobTarget::Agent | JobTarget::Team => {
                let prompt = self.prompt_template.as_deref().unwrap_or_default();
                v.check(
                    !prompt.trim().is_empty(),
                    "prompt_template",
                    "required when entity_type is agent or team",
                );
                v.check(
                    self.inputs_template.is_none(),
                    "inputs_template",
                    "only for entity_type workflow (use prompt_template)",
                );
                v.check(
                    self.worker_queue_id.is_some() || self.environment_id.is_some(),
                    "worker_queue_id",
                    "an agent or team job runs on a worker queue: give worker_queue_id, or environment_id to use its first active queue",
                );
            }
            JobTarget::Workflow => {
                v.check(
                    self.prompt_template.is_none(),
                    "prompt_template",
                    "only for entity_type agent or team (use inputs_template)",
                );
                v.check(
                    self.inputs_template.as_ref().is_none_or(Value::is_object),
                    "inputs_template",
                    "must be an object",
                );
            }
        }
        v.max_length("prompt_template", self.prompt_template.as_deref(), MAX_TEMPLATE);
        if let Some(t) = &self.inputs_template {
            v.check(
                t.to_string().len() <= MAX_TEMPLATE,
                "inputs_template",
                format!("at most {MAX_TEMPLATE} bytes of JSON"),
            );
        }
        v.check(
            !(self.worker_queue_id.is_some() && self.environment_id.is_some()),
            "environment_id",
            "give worker_queue_id or environment_id, not both",
        );
        for (field, value) in [
            ("catchup_window_seconds", self.catchup_window_seconds),
            ("jitter_seconds", self.jitter_seconds),
        ] {
            v.check(
                (0..=MAX_WINDOW_SECONDS).contains(&value),
                field,
                format!("between 0 and {MAX_WINDOW_SECONDS}"),
            );
        }
        if let Some(n) = self.pause_after_failures {
            v.check((1..=1000).contains(&n), "pause_after_failures", "between 1 and 1000");
        }
        v.finish()
    }
}

/// Partial update (PATCH and PUT alike): what is given replaces what was.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UpdateJob {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    pub trigger_type: Option<JobTrigger>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub cron_schedule: Option<Option<String>>,
    pub cron_timezone: Option<String>,
    pub entity_type: Option<JobTarget>,
    pub entity_id: Option<Uuid>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub prompt_template: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    pub inputs_template: Option<Option<Value>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    pub worker_queue_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    pub environment_id: Option<Option<Uuid>>,
    pub enabled: Option<bool>,
    pub overlap: Option<Overlap>,
    pub catchup_window_seconds: Option<i64>,
    pub jitter_seconds: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub pause_after_failures: Option<Option<i64>>,
}

impl UpdateJob {
    /// The definition with this update applied. Changing the target kind drops the template
    /// of the other kind, unless this update gives it.
    pub fn apply(self, mut spec: JobSpec) -> JobSpec {
        let schedule_given = self.cron_schedule.is_some();
        macro_rules! set {
            ($($field:ident),*) => {$(if let Some(v) = self.$field { spec.$field = v; })*};
        }
        set!(
            name,
            description,
            trigger_type,
            cron_schedule,
            cron_timezone,
            entity_id,
            prompt_template,
            inputs_template,
            worker_queue_id,
            environment_id,
            enabled,
            overlap,
            catchup_window_seconds,
            jitter_seconds,
            pause_after_failures
        );
        if let Some(kind) = self.entity_type {
            let was_workflow = spec.entity_type == JobTarget::Workflow;
            if was_workflow != (kind == JobTarget::Workflow) {
                if kind == JobTarget::Workflow {
                    spec.prompt_template = None;
                } else {
                    spec.inputs_template = None;
                }
            }
            spec.entity_type = kind;
        }
        if spec.trigger_type != JobTrigger::Cron && !schedule_given {
            // A schedule left over from a cron job would say it still runs on it.
            spec.cron_schedule = None;
        }
        spec
    }
}

/// A job as the API shows it. The webhook secret is shown only by create and `rotate-secret`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: Uuid,
    pub organization_id: String,
    #[serde(flatten)]
    pub spec: JobSpec,
    /// The agent's, team's or workflow's name when the job was written.
    pub entity_name: String,
    pub status: JobStatus,
    /// Why the server paused the job.
    pub paused_reason: Option<String>,
    /// When the schedule fires next (jitter included); null unless an enabled cron job.
    #[serde(serialize_with = "crate::common::rfc3339::option::serialize")]
    #[schema(value_type = Option<String>)]
    pub next_run_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::common::rfc3339::option::serialize")]
    #[schema(value_type = Option<String>)]
    pub last_run_at: Option<DateTime<Utc>>,
    /// The last firing's status (its execution's or run's once it ended).
    pub last_status: Option<String>,
    pub consecutive_failures: i64,
    /// Webhook jobs: the path segment after `/api/v1/jobs/webhook/`, and the full URL.
    pub webhook_path: Option<String>,
    pub webhook_url: Option<String>,
    pub created_by: String,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// A webhook job with its secret: create and `rotate-secret` answers, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobWithSecret {
    #[serde(flatten)]
    pub job: Job,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

/// `POST /jobs/{id}/trigger`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct TriggerJob {
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
}

impl TriggerJob {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        v.object("parameters", self.parameters.as_ref());
        v.finish()
    }
}

/// One firing of a job: what fired it, and what it started or why it did not.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobFiring {
    pub id: Uuid,
    pub job_id: Uuid,
    pub trigger_source: TriggerSource,
    /// `pending`, `buffered` (waits for the active firing to end), `skipped`, `missed`,
    /// `failed` (nothing started: `error` says why), or the status of what it started.
    pub status: String,
    pub execution_id: Option<Uuid>,
    pub workflow_run_id: Option<Uuid>,
    /// The schedule's due time (cron firings).
    #[serde(serialize_with = "crate::common::rfc3339::option::serialize")]
    #[schema(value_type = Option<String>)]
    pub due_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub fired_at: DateTime<Utc>,
    pub error: Option<String>,
    /// Due times a `missed` record stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed_count: Option<i64>,
    /// The webhook delivery's id, when the sender gave one.
    pub delivery_id: Option<String>,
}

/// A webhook firing's answer: the firing, or why nothing fired (a ping, a replay).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookAnswer {
    pub job_id: Uuid,
    /// `fired`, `pong` (a GitHub ping) or `duplicate` (this delivery fired already).
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firing: Option<JobFiring>,
}
