//! Usage and cost of the organization's executions (`GET /api/v1/analytics/usage`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::wire_enum;

wire_enum! {
    /// What the usage report's rows are: one per agent, team, model or UTC day.
    UsageGroup { Agent = "agent", Team = "team", Model = "model", Day = "day" }
}

/// One row of the usage report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageItem {
    /// The agent's, team's or model's id, or the UTC day (`2026-12-05`).
    pub key: String,
    /// The agent's, team's or model's name (as stored on the run when it is gone), or the day.
    pub name: String,
    pub runs: i64,
    pub failures: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cost_usd: f64,
    /// Median and 95th percentile of the ended runs' durations (start to end), in milliseconds;
    /// `null` when none has ended.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

/// `GET /api/v1/analytics/usage`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    pub group_by: UsageGroup,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    #[schema(value_type = String)]
    pub since: crate::Timestamp,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    #[schema(value_type = String)]
    pub until: crate::Timestamp,
    pub items: Vec<UsageItem>,
}
