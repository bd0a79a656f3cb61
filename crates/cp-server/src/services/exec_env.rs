//! The execution-environment resolver: what an agent's or team's run gets.
//!
//! Layers are merged in order (the entity's environments by `position`, then the entity's own
//! `execution_environment`): `env_vars` later wins, `secrets` and `integration_ids` are unioned
//! in first-seen order, `mcp_servers` are merged key by key (later wins), `working_dir` is the
//! last one set. Then references become values, in increasing precedence: custom integrations'
//! env vars (defaults), the layers' env vars, integration credentials, and secrets (each as the
//! variable of its own name). A reference that resolves to nothing is listed in `missing`.

use std::collections::{BTreeMap, HashMap};

use cp_store::exec_env::EnvLayer;
use cp_store::integrations::SealedIntegration;
use cp_store::secrets::{Reader, SealedSecret};
use cp_store::{Store, StoreResult};
use cp_types::custom_integration::{CustomIntegration, CustomIntegrationStatus};
use cp_types::exec_env::{
    EnvVarSource, EnvVarSourceKind, LayerKind, LayerRef, MissingKind, MissingReason, MissingReference,
    ResolvedExecutionEnvironment, ResolvedFile,
};
use cp_types::integration::{Credentials, IntegrationStatus};
use uuid::Uuid;

use super::crypto::{Cipher, integration_aad, secret_aad};

/// Whose execution environment to resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Agent(Uuid),
    Team(Uuid),
}

/// The secret names and integration ids the layers of `target` name, without reading any value.
pub async fn references(store: &Store, org: &str, target: Target) -> StoreResult<Merged> {
    let repo = store.execution_environments(org);
    let layers = match target {
        Target::Agent(id) => repo.agent_layers(id).await?,
        Target::Team(id) => repo.team_layers(id).await?,
    };
    Ok(merge(&layers))
}

/// Resolves the execution environment of `target` in `org`, with real secret and credential
/// values. `NotFound` when the agent or team is not the organization's. With `audit`, every
/// secret value and integration credential handed out is recorded in the access logs.
pub async fn resolve(
    store: &Store,
    master_key: &[u8; 32],
    org: &str,
    target: Target,
    audit: Option<Reader<'_>>,
) -> StoreResult<ResolvedExecutionEnvironment> {
    let repo = store.execution_environments(org);
    let layers = match target {
        Target::Agent(id) => repo.agent_layers(id).await?,
        Target::Team(id) => repo.team_layers(id).await?,
    };
    let merged = merge(&layers);
    let cipher = Cipher::new(master_key);
    let mut out = Resolution::new(merged.layers.clone());

    // Integrations: plain ones give credentials, custom ones give env vars, secrets and files.
    let ids: Vec<Uuid> = merged
        .integration_ids
        .iter()
        .filter_map(|s| Uuid::parse_str(s).ok())
        .collect();
    let plain: HashMap<Uuid, SealedIntegration> = store
        .integrations(org)
        .sealed_many(&ids)
        .await?
        .into_iter()
        .map(|i| (i.id, i))
        .collect();
    let custom_ids: Vec<Uuid> = ids.iter().filter(|id| !plain.contains_key(id)).copied().collect();
    let custom: HashMap<Uuid, CustomIntegration> = store
        .custom_integrations(org)
        .get_many(&custom_ids)
        .await?
        .into_iter()
        .map(|c| (c.id, c))
        .collect();

    let mut secret_names = merged.secrets.clone();
    let mut credential_vars: Vec<(String, String, EnvVarSource)> = Vec::new();
    let mut custom_vars: Vec<(String, String, EnvVarSource)> = Vec::new();
    let mut file_refs: Vec<(usize, String)> = Vec::new();
    let mut integrations_read: Vec<&SealedIntegration> = Vec::new();
    for reference in &merged.integration_ids {
        let id = Uuid::parse_str(reference).ok();
        if let Some(i) = id.and_then(|id| plain.get(&id)) {
            match open_integration(&cipher, org, i) {
                Ok(creds) => {
                    let source = EnvVarSource {
                        kind: EnvVarSourceKind::Integration,
                        id: Some(i.id.to_string()),
                        name: i.name.clone(),
                    };
                    for (var, value) in i.integration_type.env_vars(&creds) {
                        credential_vars.push((var.to_string(), value, source.clone()));
                    }
                    integrations_read.push(i);
                }
                Err(reason) => out.missing(MissingKind::Integration, reference, reason),
            }
        } else if let Some(c) = id.and_then(|id| custom.get(&id)) {
            if c.status != CustomIntegrationStatus::Active {
                out.missing(MissingKind::Integration, reference, MissingReason::Inactive);
                continue;
            }
            let source = EnvVarSource {
                kind: EnvVarSourceKind::CustomIntegration,
                id: Some(c.id.to_string()),
                name: c.name.clone(),
            };
            for (var, value) in &c.config.env_vars {
                custom_vars.push((var.clone(), value.clone(), source.clone()));
            }
            for name in &c.config.secrets {
                if !secret_names.contains(name) {
                    secret_names.push(name.clone());
                }
            }
            for f in &c.config.files {
                if let Some(r) = &f.secret_ref {
                    file_refs.push((out.env.files.len(), r.clone()));
                }
                out.env.files.push(ResolvedFile {
                    path: f.path.clone(),
                    content: f.content.clone().unwrap_or_default(),
                    mode: f.mode.clone(),
                    secret_ref: f.secret_ref.clone(),
                    custom_integration_id: c.id,
                });
            }
            if let Some(p) = c.config.context_prompt.as_ref().filter(|p| !p.trim().is_empty()) {
                out.env.context_prompts.push(p.clone());
            }
        } else {
            out.missing(MissingKind::Integration, reference, MissingReason::NotFound);
        }
    }

    // Secrets: the env var ones and those files are read from, in one query.
    let mut wanted = secret_names.clone();
    for (_, r) in &file_refs {
        if !wanted.contains(r) {
            wanted.push(r.clone());
        }
    }
    let sealed: HashMap<String, SealedSecret> = store
        .secrets(org)
        .sealed_many(&wanted)
        .await?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let mut opened: HashMap<&str, Result<String, MissingReason>> = HashMap::new();
    for name in &wanted {
        let value = match sealed.get(name) {
            Some(s) => cipher.open_string(&s.ciphertext, &secret_aad(org, name)).map_err(|_| {
                tracing::error!(org, secret = %name, "a secret does not decrypt (wrong master key or altered row)");
                MissingReason::Unreadable
            }),
            None => Err(MissingReason::NotFound),
        };
        opened.insert(name.as_str(), value);
    }
    let mut secrets_read: Vec<(Uuid, &str)> = Vec::new();
    for name in &wanted {
        match (opened.get(name.as_str()), sealed.get(name)) {
            (Some(Ok(_)), Some(s)) => secrets_read.push((s.id, s.name.as_str())),
            (Some(Err(reason)), _) => out.missing(MissingKind::Secret, name, *reason),
            _ => {}
        }
    }

    // Precedence, lowest first: custom integration defaults, layer vars, credentials, secrets.
    for (var, value, source) in custom_vars {
        out.set(var, value, source);
    }
    for (var, (value, source)) in merged.env_vars {
        out.set(var, value, source);
    }
    for (var, value, source) in credential_vars {
        out.set(var, value, source);
    }
    for name in &secret_names {
        if let Some(Ok(value)) = opened.get(name.as_str()) {
            let source = EnvVarSource {
                kind: EnvVarSourceKind::Secret,
                id: None,
                name: name.clone(),
            };
            out.set(name.clone(), value.clone(), source);
        }
    }
    for (index, name) in &file_refs {
        if let Some(Ok(value)) = opened.get(name.as_str()) {
            out.env.files[*index].content = value.clone();
        }
    }

    out.env.secrets = secret_names;
    out.env.integration_ids = merged.integration_ids;
    out.env.mcp_servers = merged.mcp_servers;
    out.env.working_dir = merged.working_dir;

    if let Some(reader) = audit {
        store.secrets(org).record_reads(&secrets_read, reader).await?;
        store.integrations(org).record_reads(&integrations_read, reader).await?;
    }
    Ok(out.env)
}

fn open_integration(cipher: &Cipher, org: &str, i: &SealedIntegration) -> Result<Credentials, MissingReason> {
    if i.status != IntegrationStatus::Active {
        return Err(MissingReason::Inactive);
    }
    let sealed = i.credentials.as_ref().ok_or(MissingReason::NoCredentials)?;
    let unreadable = |_| {
        tracing::error!(org, integration = %i.id, "integration credentials do not decrypt (wrong master key or altered row)");
        MissingReason::Unreadable
    };
    let plain = cipher.open(sealed, &integration_aad(org, i.id)).map_err(unreadable)?;
    serde_json::from_slice(&plain).map_err(|_| {
        tracing::error!(org, integration = %i.id, "integration credentials are not a JSON object of strings");
        MissingReason::Unreadable
    })
}

/// The result under construction.
struct Resolution {
    env: ResolvedExecutionEnvironment,
}

impl Resolution {
    fn new(layers: Vec<LayerRef>) -> Self {
        Resolution {
            env: ResolvedExecutionEnvironment {
                layers,
                ..Default::default()
            },
        }
    }

    fn set(&mut self, var: String, value: String, source: EnvVarSource) {
        self.env.sources.insert(var.clone(), source);
        self.env.env_vars.insert(var, value);
    }

    fn missing(&mut self, kind: MissingKind, reference: &str, reason: MissingReason) {
        self.env.missing.push(MissingReference {
            kind,
            reference: reference.to_string(),
            reason,
        });
    }
}

/// The layers merged, before any reference is resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merged {
    /// Each plain env var with the layer that set it last.
    pub env_vars: BTreeMap<String, (String, EnvVarSource)>,
    pub secrets: Vec<String>,
    pub integration_ids: Vec<String>,
    pub mcp_servers: serde_json::Map<String, serde_json::Value>,
    pub working_dir: Option<String>,
    pub layers: Vec<LayerRef>,
}

/// Merges layers in order (see the module documentation).
pub fn merge(layers: &[EnvLayer]) -> Merged {
    let mut m = Merged::default();
    for layer in layers {
        let ee = &layer.execution_environment;
        let source = EnvVarSource {
            kind: match layer.kind {
                LayerKind::Environment => EnvVarSourceKind::Environment,
                LayerKind::Team => EnvVarSourceKind::Team,
                LayerKind::Agent => EnvVarSourceKind::Agent,
            },
            id: Some(layer.id.to_string()),
            name: layer.name.clone(),
        };
        for (k, v) in &ee.env_vars {
            m.env_vars.insert(k.clone(), (v.clone(), source.clone()));
        }
        for s in &ee.secrets {
            if !m.secrets.contains(s) {
                m.secrets.push(s.clone());
            }
        }
        for i in &ee.integration_ids {
            if !m.integration_ids.contains(i) {
                m.integration_ids.push(i.clone());
            }
        }
        for (k, v) in &ee.mcp_servers {
            m.mcp_servers.insert(k.clone(), v.clone());
        }
        if let Some(dir) = &ee.working_dir {
            m.working_dir = Some(dir.clone());
        }
        m.layers.push(LayerRef {
            kind: layer.kind,
            id: layer.id,
            name: layer.name.clone(),
        });
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use cp_types::environment::ExecutionEnvironment;
    use serde_json::json;

    fn layer(kind: LayerKind, name: &str, ee: serde_json::Value) -> EnvLayer {
        EnvLayer {
            kind,
            id: Uuid::now_v7(),
            name: name.into(),
            execution_environment: serde_json::from_value::<ExecutionEnvironment>(ee).unwrap(),
        }
    }

    #[test]
    fn later_layers_win_and_lists_keep_first_seen_order() {
        let layers = [
            layer(
                LayerKind::Environment,
                "base",
                json!({"env_vars": {"A": "1", "B": "1"}, "secrets": ["S1", "S2"], "integration_ids": ["i1"],
                   "mcp_servers": {"fs": {"cmd": "a"}, "git": {"cmd": "g"}}, "working_dir": "/base"}),
            ),
            layer(
                LayerKind::Environment,
                "prod",
                json!({"env_vars": {"B": "2", "C": "2"}, "secrets": ["S2", "S3"], "integration_ids": ["i2", "i1"],
                   "mcp_servers": {"fs": {"cmd": "b"}}}),
            ),
            layer(
                LayerKind::Agent,
                "bot",
                json!({"env_vars": {"C": "3"}, "secrets": ["S1"], "working_dir": "/agent"}),
            ),
        ];
        let m = merge(&layers);
        let vars: Vec<(&str, &str, &str)> = m
            .env_vars
            .iter()
            .map(|(k, (v, s))| (k.as_str(), v.as_str(), s.name.as_str()))
            .collect();
        assert_eq!(vars, [("A", "1", "base"), ("B", "2", "prod"), ("C", "3", "bot")]);
        assert_eq!(m.secrets, ["S1", "S2", "S3"]);
        assert_eq!(m.integration_ids, ["i1", "i2"]);
        assert_eq!(m.mcp_servers["fs"], json!({"cmd": "b"}));
        assert_eq!(m.mcp_servers["git"], json!({"cmd": "g"}));
        assert_eq!(m.working_dir.as_deref(), Some("/agent"));
        assert_eq!(m.layers.len(), 3);
        assert_eq!(m.env_vars["C"].1.kind, EnvVarSourceKind::Agent);

        // A layer without a working_dir keeps the earlier one.
        let m = merge(&layers[..2]);
        assert_eq!(m.working_dir.as_deref(), Some("/base"));
    }
}
