//! Worker queues (API §3, Worker queue row): where executions wait for workers.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::common::nullable;
use crate::validate::Issues;
use crate::{FieldIssue, wire_enum};
use chrono::{DateTime, Utc};

wire_enum! {
    QueueStatus { Active = "active", Inactive = "inactive", Maintenance = "maintenance" }
}

/// Default seconds between worker heartbeats; a worker silent for 3 intervals is offline.
pub const DEFAULT_HEARTBEAT_INTERVAL: i64 = 30;
/// Default number of times an execution is dispatched before it fails for good.
pub const DEFAULT_MAX_ATTEMPTS: i64 = 3;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerQueue {
    pub id: Uuid,
    pub organization_id: String,
    pub environment_id: Uuid,
    pub name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub status: QueueStatus,
    /// Registrations beyond this many online workers are refused (409); null is unlimited.
    pub max_workers: Option<i64>,
    /// Seconds between heartbeats; the lease of a run is 3 intervals.
    pub heartbeat_interval: i64,
    /// Dispatch attempts before an execution whose workers keep vanishing fails.
    pub max_attempts: i64,
    pub tags: Vec<String>,
    #[schema(value_type = Object)]
    pub settings: Value,
    pub created_by: Option<String>,
    /// Online workers (heard from within 3 heartbeat intervals).
    pub active_workers: i64,
    pub queued_executions: i64,
    pub running_executions: i64,
    /// The name workers poll: the queue id.
    pub task_queue_name: String,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateWorkerQueue {
    #[schema(min_length = 2, max_length = 50, pattern = r"\S[\s\S]*\S")]
    pub name: String,
    #[schema(max_length = 200)]
    pub display_name: Option<String>,
    #[schema(max_length = 10000)]
    pub description: Option<String>,
    pub status: Option<QueueStatus>,
    #[schema(minimum = 1)]
    pub max_workers: Option<i64>,
    #[schema(minimum = 10, maximum = 300)]
    pub heartbeat_interval: Option<i64>,
    #[schema(minimum = 1, maximum = 20)]
    pub max_attempts: Option<i64>,
    #[schema(max_items = 100)]
    pub tags: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Value>,
}

/// Partial update: absent fields stay, `null` clears a nullable field.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UpdateWorkerQueue {
    #[schema(min_length = 2, max_length = 50, pattern = r"\S[\s\S]*\S")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 200)]
    pub display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub description: Option<Option<String>>,
    pub status: Option<QueueStatus>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub max_workers: Option<Option<i64>>,
    #[schema(minimum = 10, maximum = 300)]
    pub heartbeat_interval: Option<i64>,
    #[schema(minimum = 1, maximum = 20)]
    pub max_attempts: Option<i64>,
    #[schema(max_items = 100)]
    pub tags: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Value>,
}

fn check_common(
    v: &mut Issues,
    max_workers: Option<i64>,
    heartbeat: Option<i64>,
    attempts: Option<i64>,
    tags: Option<&Vec<String>>,
) {
    if let Some(n) = max_workers {
        v.check(n >= 1, "max_workers", "must be at least 1 (null for unlimited)");
    }
    if let Some(s) = heartbeat {
        v.check(
            (10..=300).contains(&s),
            "heartbeat_interval",
            "must be between 10 and 300 seconds",
        );
    }
    if let Some(n) = attempts {
        v.check((1..=20).contains(&n), "max_attempts", "must be between 1 and 20");
    }
    if let Some(tags) = tags {
        v.check(tags.len() <= 100, "tags", "at most 100 tags");
        v.check(
            tags.iter().all(|t| t.chars().count() <= 100),
            "tags",
            "each tag has at most 100 characters",
        );
    }
}

impl CreateWorkerQueue {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        v.length("name", self.name.trim(), 2, 50);
        v.max_length("display_name", self.display_name.as_deref(), 200);
        v.max_length("description", self.description.as_deref(), 10_000);
        v.object("settings", self.settings.as_ref());
        check_common(
            &mut v,
            self.max_workers,
            self.heartbeat_interval,
            self.max_attempts,
            self.tags.as_ref(),
        );
        v.finish()
    }
}

impl UpdateWorkerQueue {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        if let Some(name) = &self.name {
            v.length("name", name.trim(), 2, 50);
        }
        v.max_length("display_name", self.display_name.clone().flatten().as_deref(), 200);
        v.max_length("description", self.description.clone().flatten().as_deref(), 10_000);
        v.object("settings", self.settings.as_ref());
        check_common(
            &mut v,
            self.max_workers.flatten(),
            self.heartbeat_interval,
            self.max_attempts,
            self.tags.as_ref(),
        );
        v.finish()
    }
}

/// `GET /worker-queues/{id}/worker-command`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueWorkerCommand {
    pub queue_id: Uuid,
    /// The exact command that starts a worker on this queue; the worker reads its key from the
    /// `KUBIYA_API_KEY` environment variable, never from its command line.
    pub command: String,
    pub command_parts: Vec<String>,
    pub can_register: bool,
    pub queue_status: QueueStatus,
    pub active_workers: i64,
    pub max_workers: Option<i64>,
}

/// `GET /worker-queues/{id}/metrics`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueMetrics {
    pub queue_id: Uuid,
    /// Executions waiting for a worker.
    pub depth: i64,
    pub running: i64,
    pub active_workers: i64,
    /// Executions that ended in the last minute / hour.
    pub completed_last_minute: i64,
    pub completed_last_hour: i64,
    pub failed_last_hour: i64,
    /// Seconds from creation to first claim over the last 1,000 started executions.
    pub wait_seconds_p50: Option<f64>,
    pub wait_seconds_p95: Option<f64>,
    pub wait_seconds_p99: Option<f64>,
}
