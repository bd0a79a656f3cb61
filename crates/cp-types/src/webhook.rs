//! Outbound webhooks (API §8): endpoints, the event catalogue, deliveries.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::FieldIssue;
use crate::common::nullable;
use crate::validate::Issues;

/// Every event type an endpoint may subscribe to. Workflow runs have their type already, so
/// endpoints can subscribe before workflows exist. `webhook.test` is sent by `POST
/// /webhooks/{id}/test` only, whatever the filter.
pub const EVENT_TYPES: &[&str] = &[
    "execution.started",
    "execution.completed",
    "execution.failed",
    "execution.cancelled",
    "workflow.run.state_changed",
    "workflow.step.state_changed",
    "worker.status_changed",
    "policy.denied",
    "job.fired",
    "job.missed",
    "error",
];

/// The type of the event `POST /webhooks/{id}/test` sends.
pub const TEST_EVENT: &str = "webhook.test";

/// Most endpoints an organization may have.
pub const MAX_WEBHOOKS: i64 = 100;

/// A webhook endpoint. The signing secret is shown only by create and `rotate-secret`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Webhook {
    pub id: Uuid,
    pub organization_id: String,
    pub url: String,
    /// Event types, or `*` for all.
    pub events: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    /// Why the server disabled the endpoint (e.g. it answered 410 Gone).
    pub disabled_reason: Option<String>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// A webhook with its signing secret (create and rotate-secret answers).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// `whsec_` followed by the base64 of 32 random bytes; shown once.
    pub secret: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateWebhook {
    #[schema(min_length = 1, max_length = 2048)]
    pub url: String,
    #[schema(min_items = 1, max_items = 50)]
    pub events: Vec<String>,
    #[schema(max_length = 10000)]
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

/// Partial update; re-enabling clears `disabled_reason`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UpdateWebhook {
    #[schema(min_length = 1, max_length = 2048)]
    pub url: Option<String>,
    #[schema(min_items = 1, max_items = 50)]
    pub events: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
}

fn check_url(v: &mut Issues, url: &str) {
    v.length("url", url, 1, 2048);
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    v.check(scheme_ok, "url", "must be an http:// or https:// URL");
}

fn check_events(v: &mut Issues, events: &[String]) {
    v.check(
        !events.is_empty() && events.len() <= 50,
        "events",
        "between 1 and 50 event types",
    );
    for e in events {
        v.check(
            e == "*" || EVENT_TYPES.contains(&e.as_str()),
            "events",
            format!("unknown event type '{e}' (known: *, {})", EVENT_TYPES.join(", ")),
        );
    }
}

impl CreateWebhook {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        check_url(&mut v, self.url.trim());
        check_events(&mut v, &self.events);
        v.max_length("description", self.description.as_deref(), 10_000);
        v.finish()
    }
}

impl UpdateWebhook {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        if let Some(url) = &self.url {
            check_url(&mut v, url.trim());
        }
        if let Some(events) = &self.events {
            check_events(&mut v, events);
        }
        v.max_length("description", self.description.clone().flatten().as_deref(), 10_000);
        v.finish()
    }
}

crate::wire_enum! {
    /// Where a delivery stands.
    DeliveryStatus { Pending = "pending", Succeeded = "succeeded", Failed = "failed" }
}

/// One event for one endpoint, with its attempts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookDelivery {
    pub id: Uuid,
    pub webhook_id: Uuid,
    /// The message id (`webhook-id` header), the same on every attempt.
    pub event_id: Uuid,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub last_status_code: Option<i64>,
    pub last_latency_ms: Option<i64>,
    pub last_error: Option<String>,
    /// When the next attempt is due (pending deliveries only).
    #[serde(serialize_with = "crate::common::rfc3339::option::serialize")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// The JSON body of every delivery (Standard Webhooks).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub timestamp: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}
