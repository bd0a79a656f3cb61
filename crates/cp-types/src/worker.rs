//! Workers: registration, heartbeats and the live views (API §5, worker protocol).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::validate::Issues;
use crate::{FieldIssue, wire_enum};
use chrono::{DateTime, Utc};

wire_enum! {
    /// `online`/`busy` from the last heartbeat; `offline` once silent for 3 intervals.
    WorkerStatus { Online = "online", Busy = "busy", Draining = "draining", Offline = "offline", Disconnected = "disconnected" }
}

/// What a worker can run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct WorkerCapabilities {
    #[serde(default)]
    pub runtimes: Vec<String>,
    #[serde(default)]
    pub max_concurrency: Option<i64>,
    /// Whether a Docker engine answered on the worker's host when it registered (the docker
    /// skill's tools need one); absent when the worker did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<bool>,
}

/// `POST /worker-queues/{id}/start` and `POST /workers/register` (which names the queue).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct RegisterWorker {
    /// Required by `/workers/register`; ignored by `/worker-queues/{id}/start`.
    pub worker_queue_id: Option<Uuid>,
    #[schema(max_length = 255)]
    pub hostname: Option<String>,
    #[schema(max_length = 100)]
    pub runner_name: Option<String>,
    #[schema(max_length = 100)]
    pub version: Option<String>,
    /// The reference client's field for `version`.
    #[schema(max_length = 100)]
    pub worker_sdk_version: Option<String>,
    #[serde(default)]
    pub capabilities: WorkerCapabilities,
    #[schema(value_type = Option<Object>)]
    pub system_info: Option<Value>,
}

impl RegisterWorker {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        v.max_length("hostname", self.hostname.as_deref(), 255);
        v.max_length("runner_name", self.runner_name.as_deref(), 100);
        v.max_length("version", self.version.as_deref(), 100);
        v.max_length("worker_sdk_version", self.worker_sdk_version.as_deref(), 100);
        v.object("system_info", self.system_info.as_ref());
        if let Some(n) = self.capabilities.max_concurrency {
            v.check(
                (1..=1024).contains(&n),
                "capabilities.max_concurrency",
                "must be between 1 and 1024",
            );
        }
        v.finish()
    }
}

/// The answer to a registration: who the worker is and how often it must be heard from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerRegistration {
    pub worker_id: Uuid,
    pub worker_queue_id: Uuid,
    /// Seconds between heartbeats.
    pub heartbeat_interval: i64,
    /// The interval as enforced, in milliseconds (equal to `heartbeat_interval` × 1000 outside tests).
    pub heartbeat_interval_ms: i64,
    /// Seconds a claimed execution stays the worker's without a heartbeat.
    pub lease_seconds: i64,
    pub queue_name: String,
    pub environment_name: String,
    pub organization_id: String,
    pub control_plane_url: String,
    pub task_queue_name: String,
}

/// `POST /workers/{id}/heartbeat` (and `/workers/heartbeat` with `worker_id`).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct Heartbeat {
    /// Only for `POST /workers/heartbeat`.
    pub worker_id: Option<Uuid>,
    pub status: Option<String>,
    /// The executions the worker is running right now.
    #[serde(default)]
    pub current_executions: Vec<Uuid>,
    #[serde(default)]
    pub tasks_processed: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub system_info: Option<Value>,
}

impl Heartbeat {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        v.max_length("status", self.status.as_deref(), 50);
        v.check(
            self.current_executions.len() <= 1024,
            "current_executions",
            "at most 1024 executions",
        );
        v.object("system_info", self.system_info.as_ref());
        if let Some(n) = self.tasks_processed {
            v.check(n >= 0, "tasks_processed", "must not be negative");
        }
        v.finish()
    }
}

/// What a heartbeat learns: runs to stop, and whether to drain.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatAck {
    pub ok: bool,
    /// Executions the worker reported (or holds) that it must stop: cancelled, paused, or no
    /// longer its own.
    pub cancel_execution_ids: Vec<Uuid>,
    pub drain: bool,
}

/// `POST /workers/{id}/disconnect`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct Disconnect {
    #[schema(max_length = 1000)]
    pub reason: Option<String>,
    pub exit_code: Option<i64>,
    #[schema(max_length = 10000)]
    pub error_message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Disconnected {
    pub id: Uuid,
    pub status: String,
    /// Executions handed back to the queue.
    pub requeued_executions: i64,
}

/// A worker as `GET /workers` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Worker {
    pub id: Uuid,
    pub organization_id: String,
    pub worker_queue_id: Uuid,
    pub runner_name: String,
    pub hostname: String,
    pub version: Option<String>,
    pub status: WorkerStatus,
    pub capabilities: WorkerCapabilities,
    #[schema(value_type = Object)]
    pub system_info: Value,
    /// Executions this worker holds a lease on.
    pub current_executions: Vec<Uuid>,
    pub tasks_processed: i64,
    pub drain: bool,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub registered_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub last_heartbeat_at: DateTime<Utc>,
}

/// `GET /workers/{id}`: a worker when `id` is a worker id, else the runner of that name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum WorkerOrRunner {
    Worker(Worker),
    Runner(Runner),
}

/// Workers grouped by runner (`runner_name`, the hostname unless set).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Runner {
    pub name: String,
    pub status: RunnerHealth,
    pub worker_count: i64,
    pub online_workers: i64,
    pub worker_queue_ids: Vec<Uuid>,
    pub workers: Vec<Worker>,
}

wire_enum! {
    /// `healthy` with an online worker, `degraded` when every worker is draining, else `offline`.
    RunnerHealth { Healthy = "healthy", Degraded = "degraded", Offline = "offline" }
}

/// `GET /runners/{name}/health`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunnerHealthReport {
    pub name: String,
    pub status: RunnerHealth,
    pub online_workers: i64,
    pub worker_count: i64,
    pub running_executions: i64,
    pub last_heartbeat_at: Option<String>,
}
