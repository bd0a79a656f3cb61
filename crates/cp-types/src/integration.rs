//! Integrations (API §3, Integration row): third-party connections whose credentials are
//! encrypted at rest and handed to executions as environment variables.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::common::nullable;
use crate::org::Role;
use crate::secret::REDACTED;
use crate::validate::Issues;
use crate::{FieldIssue, wire_enum};

/// Largest accepted credentials object (all keys and values), in bytes.
pub const MAX_CREDENTIAL_BYTES: usize = 64 * 1024;

wire_enum! {
    /// The kind of service an integration connects to; decides the env vars it provides.
    IntegrationType {
        Github = "github", GithubApp = "github_app", Gitlab = "gitlab", Jira = "jira", Slack = "slack",
        Aws = "aws", Kubernetes = "kubernetes", Custom = "custom",
    }
}

wire_enum! {
    IntegrationStatus { Active = "active", Inactive = "inactive", Error = "error" }
}

impl IntegrationType {
    /// The env var an execution gets the integration's token in (for `aws`, the first of two).
    pub fn env_var(self) -> &'static str {
        match self {
            Self::Github => "GH_TOKEN",
            Self::GithubApp => "GITHUB_TOKEN",
            Self::Gitlab => "GITLAB_TOKEN",
            Self::Jira => "JIRA_TOKEN",
            Self::Slack => "SLACK_TOKEN",
            Self::Aws => "AWS_ACCESS_KEY_ID",
            Self::Kubernetes => "KUBECONFIG",
            Self::Custom => "CUSTOM_TOKEN",
        }
    }

    /// Every env var this type provides, in the order they are set.
    pub fn env_var_names(self) -> &'static [&'static str] {
        match self {
            Self::Aws => &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"],
            Self::Github => &["GH_TOKEN"],
            Self::GithubApp => &["GITHUB_TOKEN"],
            Self::Gitlab => &["GITLAB_TOKEN"],
            Self::Jira => &["JIRA_TOKEN"],
            Self::Slack => &["SLACK_TOKEN"],
            Self::Kubernetes => &["KUBECONFIG"],
            Self::Custom => &["CUSTOM_TOKEN"],
        }
    }

    /// The credential fields that feed each env var: `(env var, field names tried in order, required)`.
    fn credential_map(self) -> &'static [(&'static str, &'static [&'static str], bool)] {
        match self {
            Self::Aws => &[
                ("AWS_ACCESS_KEY_ID", &["access_key_id"], true),
                ("AWS_SECRET_ACCESS_KEY", &["secret_access_key"], true),
                ("AWS_SESSION_TOKEN", &["session_token"], false),
            ],
            Self::Kubernetes => &[("KUBECONFIG", &["kubeconfig", "token"], true)],
            Self::Github => &[("GH_TOKEN", &["token"], true)],
            Self::GithubApp => &[("GITHUB_TOKEN", &["token"], true)],
            Self::Gitlab => &[("GITLAB_TOKEN", &["token"], true)],
            Self::Jira => &[("JIRA_TOKEN", &["token"], true)],
            Self::Slack => &[("SLACK_TOKEN", &["token"], true)],
            Self::Custom => &[("CUSTOM_TOKEN", &["token"], true)],
        }
    }

    /// The env vars `credentials` provide, in order; fields the type does not use are ignored.
    pub fn env_vars(self, credentials: &Credentials) -> Vec<(&'static str, String)> {
        self.credential_map()
            .iter()
            .filter_map(|(var, fields, _)| {
                fields
                    .iter()
                    .find_map(|f| credentials.0.get(*f))
                    .map(|v| (*var, v.expose().to_string()))
            })
            .collect()
    }

    /// Checks that `credentials` hold the fields this type needs.
    pub fn check_credentials(self, v: &mut Issues, credentials: &Credentials) {
        for (_, fields, required) in self.credential_map() {
            if *required && !fields.iter().any(|f| credentials.0.contains_key(*f)) {
                let wanted = fields.join("' or '");
                v.push("credentials", format!("a {self} integration needs '{wanted}'"));
            }
        }
        for (key, value) in &credentials.0 {
            v.check(
                !value.expose().is_empty(),
                "credentials",
                format!("'{key}' must not be empty"),
            );
        }
        let size: usize = credentials.0.iter().map(|(k, v)| k.len() + v.expose().len()).sum();
        v.check(
            size <= MAX_CREDENTIAL_BYTES,
            "credentials",
            "must be at most 65536 bytes",
        );
    }
}

/// Write-only credentials: an object of strings (`{"token": "…"}`; for aws
/// `{"access_key_id", "secret_access_key", "session_token"?}`; for kubernetes `{"kubeconfig"}`).
/// `Debug` shows only the field names, and errors never quote a value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials(pub BTreeMap<String, crate::secret::SecretString>);

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.keys().map(|k| (k, REDACTED))).finish()
    }
}

impl<'de> Deserialize<'de> for Credentials {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let Value::Object(map) = Value::deserialize(de)? else {
            return Err(serde::de::Error::custom("must be an object of strings"));
        };
        let mut out = BTreeMap::new();
        for (k, v) in map {
            match v {
                Value::String(s) => {
                    out.insert(k, crate::secret::SecretString::new(s));
                }
                _ => return Err(serde::de::Error::custom(format!("'{k}' must be a string"))),
            }
        }
        Ok(Credentials(out))
    }
}

impl Serialize for Credentials {
    /// Serialized only to be encrypted; no response type contains credentials.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v.expose())))
    }
}

/// An integration as listed and read: never its credentials.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Integration {
    pub id: Uuid,
    pub organization_id: String,
    pub name: String,
    pub integration_type: IntegrationType,
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub config: Value,
    pub status: IntegrationStatus,
    /// Credentials are stored and the status is `active`.
    pub connected: bool,
    pub has_credentials: bool,
    /// The env vars an execution gets from this integration.
    pub env_vars: Vec<String>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
    #[serde(default, serialize_with = "crate::common::rfc3339::option::serialize")]
    pub credentials_updated_at: Option<DateTime<Utc>>,
}

/// `POST /api/v1/integrations`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateIntegration {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    pub integration_type: IntegrationType,
    #[schema(max_length = 10000)]
    pub description: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    /// Write-only, encrypted at rest.
    #[schema(value_type = Option<Object>)]
    pub credentials: Option<Credentials>,
    pub status: Option<IntegrationStatus>,
}

/// Partial update (PATCH and PUT). `credentials: null` removes the stored credentials.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UpdateIntegration {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: Option<String>,
    /// Accepted only when equal to the current type.
    pub integration_type: Option<IntegrationType>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub description: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    pub credentials: Option<Option<Credentials>>,
    pub status: Option<IntegrationStatus>,
}

impl CreateIntegration {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        v.length("name", &self.name, 1, 200);
        v.max_length("description", self.description.as_deref(), 10_000);
        v.object("config", self.config.as_ref());
        if let Some(c) = &self.credentials {
            self.integration_type.check_credentials(&mut v, c);
        }
        v.finish()
    }
}

impl UpdateIntegration {
    /// `current` is the stored type, which does not change.
    pub fn validate(&self, current: IntegrationType) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        if let Some(name) = &self.name {
            v.length("name", name, 1, 200);
        }
        if let Some(t) = self.integration_type {
            v.check(
                t == current,
                "integration_type",
                "cannot be changed; create a new integration",
            );
        }
        if let Some(Some(d)) = &self.description {
            v.max_length("description", Some(d), 10_000);
        }
        v.object("config", self.config.as_ref());
        if let Some(Some(c)) = &self.credentials {
            current.check_credentials(&mut v, c);
        }
        v.finish()
    }
}

/// `GET /integrations/{type}/{id}/token` and `/integrations/{vendor}/creds/{id}`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct IntegrationToken {
    /// The value of `env_var`.
    pub token: String,
    pub env_var: String,
    /// Every env var the integration provides (aws has two or three).
    pub env_vars: BTreeMap<String, String>,
    pub integration_id: Uuid,
    pub integration_type: IntegrationType,
    pub integration_name: String,
}

impl fmt::Debug for IntegrationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntegrationToken")
            .field("env_var", &self.env_var)
            .field("integration_id", &self.integration_id)
            .finish_non_exhaustive()
    }
}

/// One recorded read of an integration's credentials.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IntegrationAccess {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub integration_name: String,
    pub integration_type: IntegrationType,
    pub key_id: Uuid,
    pub key_name: String,
    pub role: Role,
    /// `api` for the token endpoints, `execution` when handed to a worker's run, `refused`
    /// when a worker key asked for credentials none of its runs uses.
    pub purpose: String,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub accessed_at: DateTime<Utc>,
    /// The run the credentials were read for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<Uuid>,
    /// The key that started that run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<crate::secret::KeyRef>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(v: Value) -> Credentials {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn env_vars_per_type() {
        let token = creds(serde_json::json!({"token": "t0k"}));
        assert_eq!(
            IntegrationType::Github.env_vars(&token),
            vec![("GH_TOKEN", "t0k".to_string())]
        );
        assert_eq!(IntegrationType::GithubApp.env_vars(&token)[0].0, "GITHUB_TOKEN");
        assert_eq!(IntegrationType::Custom.env_vars(&token)[0].0, "CUSTOM_TOKEN");
        let aws = creds(serde_json::json!({"access_key_id": "AK", "secret_access_key": "SK"}));
        assert_eq!(
            IntegrationType::Aws.env_vars(&aws),
            vec![
                ("AWS_ACCESS_KEY_ID", "AK".to_string()),
                ("AWS_SECRET_ACCESS_KEY", "SK".to_string())
            ]
        );
        let kube = creds(serde_json::json!({"kubeconfig": "apiVersion: v1"}));
        assert_eq!(IntegrationType::Kubernetes.env_vars(&kube)[0].0, "KUBECONFIG");
        for t in IntegrationType::ALL {
            assert_eq!(t.env_var(), t.env_var_names()[0]);
        }
    }

    #[test]
    fn credentials_are_checked_per_type_and_never_echoed() {
        let mut v = Issues::new();
        IntegrationType::Aws.check_credentials(&mut v, &creds(serde_json::json!({"access_key_id": "AK"})));
        assert!(v.finish().is_err());
        let mut v = Issues::new();
        IntegrationType::Jira.check_credentials(&mut v, &creds(serde_json::json!({"token": "x"})));
        assert!(v.finish().is_ok());
        let err = serde_json::from_value::<Credentials>(serde_json::json!({"token": 123456789}))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("123456789"), "{err}");
        let c = creds(serde_json::json!({"token": "sekrit"}));
        assert!(!format!("{c:?}").contains("sekrit"));
    }
}
