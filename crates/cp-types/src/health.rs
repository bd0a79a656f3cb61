//! Health, readiness and the detailed health report (API §9).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub service: String,
    pub version: String,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    pub status: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DetailedHealth {
    /// `healthy` or `degraded`.
    pub status: String,
    pub version: String,
    pub uptime_seconds: u64,
    pub database: DatabaseHealth,
    /// The counts below are the caller's organization's, shown only to an admin key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<WorkersHealth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<QueuesHealth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<WebhooksHealth>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DatabaseHealth {
    pub status: String,
    pub backend: String,
    pub latency_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct WorkersHealth {
    pub online: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct QueuesHealth {
    pub queued: i64,
    pub running: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct WebhooksHealth {
    pub pending_deliveries: i64,
}
