//! Secrets (API §3, Secret row): named values encrypted at rest, readable only by admin and
//! worker keys, every read recorded.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::FieldIssue;
use crate::common::nullable;
use crate::environment::is_env_name;
use crate::org::Role;
use crate::validate::Issues;

/// Longest accepted secret value, in bytes.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;
/// Longest secret name.
pub const MAX_SECRET_NAME: usize = 255;

/// What `Debug` prints instead of a secret.
pub const REDACTED: &str = "********";

/// A write-only string (a secret value, a credential). `Debug` never shows it, and a value of
/// the wrong JSON type is refused without echoing it back in the error message.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The plaintext; call only where it is about to be encrypted or handed to its reader.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        // Through `Value` so that serde's "invalid type: integer `123`" (which quotes the
        // value) is never produced for a secret.
        match serde_json::Value::deserialize(de)? {
            serde_json::Value::String(s) => Ok(SecretString(s)),
            _ => Err(serde::de::Error::custom("must be a string")),
        }
    }
}

/// A secret as listed and read: everything but its value.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Secret {
    pub id: Uuid,
    pub organization_id: String,
    pub name: String,
    pub description: Option<String>,
    /// 1 at creation, +1 at each rotation of the value.
    pub version: i64,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
    /// When the value was last replaced (null until the first rotation).
    #[serde(default, serialize_with = "crate::common::rfc3339::option::serialize")]
    pub last_rotated_at: Option<DateTime<Utc>>,
}

/// `POST /api/v1/secrets`.
#[derive(Clone, Deserialize, ToSchema)]
pub struct CreateSecret {
    /// Environment-variable style: `[A-Za-z_][A-Za-z0-9_]*`, unique in the organization.
    #[schema(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$", min_length = 1, max_length = 255)]
    pub name: String,
    /// Write-only: never returned by list or get.
    #[schema(value_type = String, min_length = 1, max_length = 65536)]
    pub value: SecretString,
    #[schema(max_length = 10000)]
    pub description: Option<String>,
}

impl fmt::Debug for CreateSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateSecret")
            .field("name", &self.name)
            .field("value", &REDACTED)
            .field("description", &self.description)
            .finish()
    }
}

/// `PATCH|PUT /api/v1/secrets/{name}`: a new `value` rotates the secret; the name stays.
#[derive(Clone, Default, Deserialize, ToSchema)]
pub struct UpdateSecret {
    /// Accepted only when equal to the secret's name: secrets are not renamed.
    #[schema(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")]
    pub name: Option<String>,
    #[schema(value_type = Option<String>, min_length = 1, max_length = 65536)]
    pub value: Option<SecretString>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub description: Option<Option<String>>,
}

impl fmt::Debug for UpdateSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateSecret")
            .field("name", &self.name)
            .field("value", &self.value.as_ref().map(|_| REDACTED))
            .field("description", &self.description)
            .finish()
    }
}

/// Checks a secret name: env-var style, at most 255 characters.
pub fn check_secret_name(v: &mut Issues, field: &str, name: &str) {
    v.check(
        is_env_name(name) && name.len() <= MAX_SECRET_NAME,
        field,
        "must match [A-Za-z_][A-Za-z0-9_]* and have at most 255 characters",
    );
}

fn check_value(v: &mut Issues, value: &SecretString) {
    let n = value.expose().len();
    v.check(n > 0, "value", "must not be empty");
    v.check(n <= MAX_SECRET_BYTES, "value", "must be at most 65536 bytes");
}

impl CreateSecret {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        check_secret_name(&mut v, "name", &self.name);
        check_value(&mut v, &self.value);
        v.max_length("description", self.description.as_deref(), 10_000);
        v.finish()
    }
}

impl UpdateSecret {
    /// `current` is the name in the path.
    pub fn validate(&self, current: &str) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        if let Some(name) = &self.name {
            v.check(name == current, "name", "a secret cannot be renamed; create a new one");
        }
        if let Some(value) = &self.value {
            check_value(&mut v, value);
        }
        if let Some(Some(d)) = &self.description {
            v.max_length("description", Some(d), 10_000);
        }
        v.finish()
    }
}

/// `GET /api/v1/secrets/value/{name}`: the plaintext, for admin and worker keys only.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretValue {
    pub name: String,
    pub value: String,
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretValue")
            .field("name", &self.name)
            .field("value", &REDACTED)
            .finish()
    }
}

/// One recorded read of a secret's value.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretAccess {
    pub id: Uuid,
    pub secret_name: String,
    /// The key that read it (kept after the key is revoked or deleted).
    pub key_id: Uuid,
    pub key_name: String,
    pub role: Role,
    /// `api` for `GET /secrets/value/{name}`, `execution` when handed to a worker's run,
    /// `refused` when a worker key asked for a value none of its runs uses.
    pub purpose: String,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub accessed_at: DateTime<Utc>,
    /// The run the value was read for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<Uuid>,
    /// The key that started that run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<KeyRef>,
}

/// An API key named in a log: its id, and its name while the key exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyRef {
    pub key_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_values() {
        let req: CreateSecret =
            serde_json::from_value(serde_json::json!({"name": "DB_PASSWORD", "value": "hunter2"})).unwrap();
        let text = format!("{req:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("DB_PASSWORD"));
        let up: UpdateSecret = serde_json::from_value(serde_json::json!({"value": "hunter3"})).unwrap();
        assert!(!format!("{up:?}").contains("hunter3"));
        let out = SecretValue {
            name: "A".into(),
            value: "hunter4".into(),
        };
        assert!(!format!("{out:?}").contains("hunter4"));
    }

    #[test]
    fn a_wrongly_typed_value_is_not_echoed() {
        let err = serde_json::from_value::<CreateSecret>(serde_json::json!({"name": "A", "value": 987654321}))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("987654321"), "{err}");
    }

    #[test]
    fn names_are_env_var_style() {
        for (name, ok) in [("A", true), ("_x1", true), ("1A", false), ("A-B", false), ("", false)] {
            let mut v = Issues::new();
            check_secret_name(&mut v, "name", name);
            assert_eq!(v.finish().is_ok(), ok, "{name}");
        }
        let long = "A".repeat(256);
        let mut v = Issues::new();
        check_secret_name(&mut v, "name", &long);
        assert!(v.finish().is_err());
    }
}
