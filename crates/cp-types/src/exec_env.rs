//! The resolved execution environment of an agent or team: its layers merged, secret and
//! integration references turned into env vars.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::secret::REDACTED;
use crate::wire_enum;

wire_enum! {
    /// Where a layer of the merge comes from.
    LayerKind { Environment = "environment", Team = "team", Agent = "agent" }
}

wire_enum! {
    /// Where a resolved env var's value comes from.
    EnvVarSourceKind {
        Environment = "environment", Team = "team", Agent = "agent", Secret = "secret",
        Integration = "integration", CustomIntegration = "custom_integration",
    }
}

wire_enum! {
    /// What kind of reference could not be resolved.
    MissingKind { Secret = "secret", Integration = "integration" }
}

wire_enum! {
    /// Why a reference could not be resolved.
    MissingReason {
        NotFound = "not_found", Inactive = "inactive", NoCredentials = "no_credentials",
        Unreadable = "unreadable",
    }
}

/// One layer of the merge, in the order applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LayerRef {
    pub kind: LayerKind,
    pub id: Uuid,
    pub name: String,
}

/// Where one env var of the result comes from (the last layer that set it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnvVarSource {
    pub kind: EnvVarSourceKind,
    /// The environment, agent, team or integration id; absent for secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The layer's, integration's or secret's name.
    pub name: String,
}

impl EnvVarSource {
    /// Whether the value is a secret or a credential (masked in the admin view).
    pub fn is_sensitive(&self) -> bool {
        matches!(self.kind, EnvVarSourceKind::Secret | EnvVarSourceKind::Integration)
    }
}

/// A reference that resolved to nothing; the rest of the environment is still usable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MissingReference {
    pub kind: MissingKind,
    /// The secret name or the integration id as written in the layer.
    pub reference: String,
    pub reason: MissingReason,
}

/// A file the execution gets from a custom integration.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResolvedFile {
    pub path: String,
    pub content: String,
    pub mode: String,
    /// The secret the content was read from, if any (its content is masked in the admin view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
    pub custom_integration_id: Uuid,
}

impl fmt::Debug for ResolvedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedFile")
            .field("path", &self.path)
            .field("secret_ref", &self.secret_ref)
            .finish_non_exhaustive()
    }
}

/// What an execution of an agent or team gets. Built by the server's resolver; the admin
/// endpoint answers it with every secret and credential value replaced by `********`.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResolvedExecutionEnvironment {
    /// The final env vars: plain `env_vars` (later layer wins), then integration credentials,
    /// then secrets (each named secret as the variable of that name).
    pub env_vars: BTreeMap<String, String>,
    /// Secret names referenced by the layers (and custom integrations), first seen first.
    pub secrets: Vec<String>,
    /// Integration ids (plain and custom) referenced by the layers, first seen first.
    pub integration_ids: Vec<String>,
    #[schema(value_type = Object)]
    pub mcp_servers: serde_json::Map<String, Value>,
    pub working_dir: Option<String>,
    /// Files from custom integrations.
    pub files: Vec<ResolvedFile>,
    /// Context prompts of the custom integrations in use.
    pub context_prompts: Vec<String>,
    /// References that resolved to nothing.
    pub missing: Vec<MissingReference>,
    /// For each env var, where its value came from.
    pub sources: BTreeMap<String, EnvVarSource>,
    /// The layers, in the order they were merged.
    pub layers: Vec<LayerRef>,
    /// True when secret and credential values are replaced by `********`.
    pub masked: bool,
}

impl fmt::Debug for ResolvedExecutionEnvironment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedExecutionEnvironment")
            .field("env_vars", &self.env_vars.keys().collect::<Vec<_>>())
            .field("secrets", &self.secrets)
            .field("integration_ids", &self.integration_ids)
            .field("working_dir", &self.working_dir)
            .field("files", &self.files)
            .field("missing", &self.missing)
            .field("layers", &self.layers)
            .finish_non_exhaustive()
    }
}

impl ResolvedExecutionEnvironment {
    /// The same environment with every secret and credential value replaced by `********`.
    pub fn masked(mut self) -> Self {
        for (name, value) in self.env_vars.iter_mut() {
            if self.sources.get(name).is_none_or(EnvVarSource::is_sensitive) {
                *value = REDACTED.to_string();
            }
        }
        for file in &mut self.files {
            if file.secret_ref.is_some() {
                file.content = REDACTED.to_string();
            }
        }
        self.masked = true;
        self
    }
}
