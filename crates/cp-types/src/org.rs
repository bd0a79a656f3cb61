//! Organizations, API keys, roles and organization settings (API §2).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::validate::Issues;
use crate::{FieldIssue, wire_enum};
use chrono::{DateTime, Utc};

wire_enum! {
    /// What a key may do in its organization.
    Role { Admin = "admin", Member = "member", Viewer = "viewer", Worker = "worker" }
}

wire_enum! {
    /// Rate-limit tier of an organization.
    RateLimitTier { Standard = "standard", Enterprise = "enterprise" }
}

/// Requests per minute of the standard tier (API §1).
pub const STANDARD_RATE_LIMIT: i64 = 100;
/// Enterprise organizations that have not set their own number get this one.
pub const ENTERPRISE_DEFAULT_RATE_LIMIT: i64 = 1000;

impl RateLimitTier {
    /// The per-key limit this tier gives, with an enterprise organization's own number.
    pub fn per_minute(self, custom: Option<i64>) -> i64 {
        match self {
            RateLimitTier::Standard => STANDARD_RATE_LIMIT,
            RateLimitTier::Enterprise => custom.unwrap_or(ENTERPRISE_DEFAULT_RATE_LIMIT),
        }
    }
}

wire_enum! {
    /// How policy decisions are applied.
    PolicyEnforcement { Blocking = "blocking", Monitoring = "monitoring", Off = "off" }
}

/// An organization; its id is its slug.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Organization {
    pub id: String,
    pub name: String,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
}

/// `GET /api/v1/auth/validate`: who is calling.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuthInfo {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub key_id: Uuid,
    pub key_name: String,
    pub role: Role,
}

/// An API key as listed; the secret itself is never shown again after creation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    pub id: Uuid,
    pub organization_id: String,
    pub name: String,
    pub role: Role,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(default, serialize_with = "crate::common::rfc3339::option::serialize")]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(default, serialize_with = "crate::common::rfc3339::option::serialize")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, serialize_with = "crate::common::rfc3339::option::serialize")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// For a worker key made for one queue: the only queue its workers may register on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_queue_id: Option<Uuid>,
}

impl ApiKey {
    /// Neither revoked nor expired at `at`.
    pub fn is_usable(&self, at: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > at)
    }
}

/// The answer to creating a key: the only time `key` is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub api_key: ApiKey,
    pub key: String,
}

/// `POST /api/v1/api-keys`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateApiKey {
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub name: String,
    pub role: Role,
    #[serde(default, serialize_with = "crate::common::rfc3339::option::serialize")]
    pub expires_at: Option<DateTime<Utc>>,
    /// With `role: worker`: the one queue the key's workers may register on.
    #[serde(default)]
    pub worker_queue_id: Option<Uuid>,
}

impl CreateApiKey {
    pub fn validate(&self, now: DateTime<Utc>) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        v.length("name", &self.name, 1, 100);
        if let Some(at) = self.expires_at {
            v.check(at > now, "expires_at", "must be in the future");
        }
        v.check(
            self.worker_queue_id.is_none() || self.role == Role::Worker,
            "worker_queue_id",
            "only a worker key is made for a queue",
        );
        v.finish()
    }
}

/// Settings of an organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrgSettings {
    pub organization_id: String,
    pub rate_limit_tier: RateLimitTier,
    /// The effective per-key limit: 100 on the standard tier, the organization's own number on enterprise.
    pub rate_limit_per_minute: i64,
    pub policy_enforcement: PolicyEnforcement,
    pub event_retention_days: i64,
    pub webhook_allow_private_targets: bool,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// `PATCH /api/v1/organization/settings`: fields left out stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UpdateOrgSettings {
    pub rate_limit_tier: Option<RateLimitTier>,
    #[schema(minimum = 1, maximum = 1000000)]
    pub rate_limit_per_minute: Option<i64>,
    pub policy_enforcement: Option<PolicyEnforcement>,
    #[schema(minimum = 1, maximum = 3650)]
    pub event_retention_days: Option<i64>,
    pub webhook_allow_private_targets: Option<bool>,
}

impl UpdateOrgSettings {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        if let Some(n) = self.rate_limit_per_minute {
            v.check(
                (1..=1_000_000).contains(&n),
                "rate_limit_per_minute",
                "must be between 1 and 1000000",
            );
        }
        if let Some(n) = self.event_retention_days {
            v.check(
                (1..=3650).contains(&n),
                "event_retention_days",
                "must be between 1 and 3650",
            );
        }
        v.finish()
    }
}
