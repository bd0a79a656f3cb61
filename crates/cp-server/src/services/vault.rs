//! Sealing and reading secret values and integration credentials. Every read that hands a
//! value to a caller is recorded in the access log before the value leaves the server.

use std::str::FromStr;

use cp_store::StoreError;
use cp_store::integrations::SealedIntegration;
use cp_store::secrets::{Reader, RunRef};
use cp_types::custom_integration::CustomIntegrationConfig;
use cp_types::environment::ExecutionEnvironment;
use cp_types::integration::{Credentials, IntegrationStatus, IntegrationToken, IntegrationType};
use cp_types::org::Role;
use cp_types::secret::{SecretString, SecretValue};
use uuid::Uuid;

use super::crypto::{Cipher, integration_aad, secret_aad};
use super::exec_env::{self, Target};
use crate::services::caller::Caller;
use crate::services::error::{ServiceError, ServiceResult};
use crate::state::AppState;

/// The access-log entry of a caller reading through the API (for `run`, when a worker key).
pub fn api_reader(p: &Caller, run: Option<RunRef>) -> Reader<'_> {
    Reader {
        key_id: p.key_id,
        key_name: &p.key_name,
        role: p.role,
        purpose: "api",
        run,
    }
}

/// A value a caller asks the vault for.
#[derive(Debug, Clone, Copy)]
enum Wanted<'a> {
    Secret(&'a str),
    Integration(Uuid),
}

/// The run a worker key reads a value for: one its workers hold right now whose agent or team
/// uses the value (its execution environment names it, or its model's key is that secret).
/// Other keys read for no run. A worker key with no such run gets 403, and the refusal is
/// written to the value's access log.
async fn run_needing(state: &AppState, caller: &Caller, wanted: Wanted<'_>) -> ServiceResult<Option<RunRef>> {
    if caller.role != Role::Worker {
        return Ok(None);
    }
    let org = caller.org_id.as_str();
    for held in state.store.workers(org).held_runs(caller.key_id).await? {
        let run = RunRef {
            execution_id: held.execution_id,
            started_by: held.started_by,
        };
        let (target, model) = if held.team {
            let team = state.store.teams(org).get(held.entity_id).await;
            (Target::Team(held.entity_id), team.ok().and_then(|t| t.model_id))
        } else {
            let agent = state.store.agents(org).get(held.entity_id).await;
            (Target::Agent(held.entity_id), agent.ok().and_then(|a| a.model_id))
        };
        if let Wanted::Secret(name) = wanted
            && let Some(value) = model
            && let Ok(m) = state.store.models(org).find(&value).await
            && m.api_key_secret.as_deref() == Some(name)
        {
            return Ok(Some(run));
        }
        let layers = match exec_env::references(&state.store, org, target).await {
            Ok(l) => l,
            Err(StoreError::NotFound) => continue,
            Err(e) => return Err(e.into()),
        };
        let used = match wanted {
            Wanted::Secret(name) => layers.secrets.iter().any(|s| s == name),
            Wanted::Integration(id) => layers
                .integration_ids
                .iter()
                .any(|i| Uuid::parse_str(i).ok() == Some(id)),
        };
        if used {
            return Ok(Some(run));
        }
    }
    tracing::warn!(
        org,
        key = %caller.key_id,
        wanted = ?wanted,
        "refused a worker key a value none of its workers' runs uses"
    );
    let refused = Reader {
        purpose: "refused",
        ..api_reader(caller, None)
    };
    let logged = match wanted {
        Wanted::Secret(name) => match state.store.secrets(org).sealed(name).await {
            Ok(s) => state.store.secrets(org).record_reads(&[(s.id, &s.name)], refused).await,
            Err(_) => Ok(()),
        },
        Wanted::Integration(id) => match state.store.integrations(org).sealed(id).await {
            Ok(i) => state.store.integrations(org).record_reads(&[&i], refused).await,
            Err(_) => Ok(()),
        },
    };
    if let Err(e) = logged {
        tracing::warn!(error = %e, "could not record a refused read");
    }
    Err(ServiceError::forbidden(
        "a worker key reads only the secrets and credentials of the runs its workers hold",
    ))
}

fn cipher(state: &AppState) -> Cipher {
    Cipher::new(&state.config.master_key)
}

fn no_randomness() -> ServiceError {
    tracing::error!("the system random number generator failed; nothing was encrypted");
    ServiceError::internal()
}

/// Encrypts a secret value for its organization and name.
pub fn seal_secret(state: &AppState, org: &str, name: &str, value: &SecretString) -> ServiceResult<Vec<u8>> {
    cipher(state)
        .seal(value.expose().as_bytes(), &secret_aad(org, name))
        .map_err(|_| no_randomness())
}

/// Encrypts integration credentials for their organization and integration id.
pub fn seal_credentials(state: &AppState, org: &str, id: Uuid, credentials: &Credentials) -> ServiceResult<Vec<u8>> {
    let plain = serde_json::to_vec(credentials).map_err(|_| ServiceError::internal())?;
    cipher(state)
        .seal(&plain, &integration_aad(org, id))
        .map_err(|_| no_randomness())
}

/// `GET /secrets/value/{name}`: decrypts, records the read, answers the value.
pub async fn read_secret(state: &AppState, caller: &Caller, name: &str) -> ServiceResult<SecretValue> {
    let run = run_needing(state, caller, Wanted::Secret(name)).await?;
    open_secret(state, caller, name, api_reader(caller, run)).await
}

/// A secret the server itself uses on the caller's behalf (the planner's model key): the read
/// is logged with `purpose`, and the value never goes back to the caller.
pub async fn secret_for_server(
    state: &AppState,
    caller: &Caller,
    name: &str,
    purpose: &'static str,
) -> ServiceResult<SecretValue> {
    let reader = Reader {
        purpose,
        ..api_reader(caller, None)
    };
    open_secret(state, caller, name, reader).await
}

/// Decrypts secret `name` of the caller's organization and records the read as `reader`.
async fn open_secret(state: &AppState, caller: &Caller, name: &str, reader: Reader<'_>) -> ServiceResult<SecretValue> {
    let org = caller.org_id.as_str();
    let secrets = state.store.secrets(org);
    let sealed = secrets
        .sealed(name)
        .await
        .map_err(|e| ServiceError::from_store(e, "secret"))?;
    let value = cipher(state)
        .open_string(&sealed.ciphertext, &secret_aad(org, &sealed.name))
        .map_err(|_| {
            tracing::error!(org, secret = %sealed.name, "a secret does not decrypt (wrong master key or altered row)");
            ServiceError::internal()
        })?;
    secrets.record_reads(&[(sealed.id, &sealed.name)], reader).await?;
    Ok(SecretValue {
        name: sealed.name,
        value,
    })
}

/// Finds the integration a token path names: `{type}/{id}` where `id` is a UUID, or `0` for
/// the organization's one integration of that type (what the Python client sends for jira
/// and github_app). A type that does not match the row's is "not found", like a foreign id.
async fn find_integration(state: &AppState, org: &str, kind: &str, id: &str) -> ServiceResult<SealedIntegration> {
    let not_found = || ServiceError::not_found("integration");
    let kind = IntegrationType::from_str(kind).map_err(|_| not_found())?;
    let repo = state.store.integrations(org);
    if id == "0" {
        let all = repo.sealed_of_type(kind).await?;
        let connected: Vec<&SealedIntegration> = all
            .iter()
            .filter(|i| i.status == IntegrationStatus::Active && i.credentials.is_some())
            .collect();
        return match (all.len(), connected.as_slice()) {
            (1, _) => Ok(all.into_iter().next().ok_or_else(not_found)?),
            (_, [one]) => Ok((*one).clone()),
            (0, _) => Err(not_found()),
            _ => Err(ServiceError::not_found("integration").with_details(serde_json::json!({
                "issue": format!("several {kind} integrations are connected: address one by its id")
            }))),
        };
    }
    let id =
        Uuid::parse_str(id).map_err(|_| ServiceError::bad_request("invalid integration id: expected a UUID or 0"))?;
    let found = repo.sealed(id).await.map_err(|e| match e {
        StoreError::NotFound => not_found(),
        other => other.into(),
    })?;
    if found.integration_type != kind {
        return Err(not_found());
    }
    Ok(found)
}

/// `GET /integrations/{type}/{id}/token` (and the `creds` alias): decrypts, records the read,
/// answers the token and the env vars it becomes.
pub async fn integration_token(
    state: &AppState,
    caller: &Caller,
    kind: &str,
    id: &str,
) -> ServiceResult<IntegrationToken> {
    let org = caller.org_id.as_str();
    let integration = find_integration(state, org, kind, id).await?;
    let run = run_needing(state, caller, Wanted::Integration(integration.id)).await?;
    if integration.status != IntegrationStatus::Active {
        return Err(ServiceError::conflict(format!(
            "integration '{}' is {}: activate it first",
            integration.name, integration.status
        )));
    }
    let Some(sealed) = &integration.credentials else {
        return Err(ServiceError::conflict(format!(
            "integration '{}' has no credentials",
            integration.name
        )));
    };
    let unreadable = || {
        tracing::error!(org, integration = %integration.id, "integration credentials do not decrypt (wrong master key or altered row)");
        ServiceError::internal()
    };
    let plain = cipher(state)
        .open(sealed, &integration_aad(org, integration.id))
        .map_err(|_| unreadable())?;
    let credentials: Credentials = serde_json::from_slice(&plain).map_err(|_| unreadable())?;
    let vars = integration.integration_type.env_vars(&credentials);
    let Some((env_var, token)) = vars.first().cloned() else {
        return Err(ServiceError::conflict(format!(
            "the credentials of integration '{}' lack the fields a {} integration needs",
            integration.name, integration.integration_type
        )));
    };
    state
        .store
        .integrations(org)
        .record_reads(&[&integration], api_reader(caller, run))
        .await?;
    Ok(IntegrationToken {
        token,
        env_var: env_var.to_string(),
        env_vars: vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        integration_id: integration.id,
        integration_type: integration.integration_type,
        integration_name: integration.name,
    })
}

/// The secrets and integrations a catalog write names: a run of an agent or team given them
/// receives their values, and so can any command it runs.
#[derive(Debug, Default)]
pub struct Named<'a> {
    secrets: Vec<&'a str>,
    integrations: Vec<&'a str>,
}

impl<'a> Named<'a> {
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty() && self.integrations.is_empty()
    }

    pub fn of_environment(ee: Option<&'a ExecutionEnvironment>) -> Named<'a> {
        ee.map(|ee| Named {
            secrets: ee.secrets.iter().map(String::as_str).collect(),
            integrations: ee.integration_ids.iter().map(String::as_str).collect(),
        })
        .unwrap_or_default()
    }

    pub fn of_custom_integration(config: Option<&'a CustomIntegrationConfig>) -> Named<'a> {
        config
            .map(|c| Named {
                secrets: c
                    .secrets
                    .iter()
                    .map(String::as_str)
                    .chain(c.files.iter().filter_map(|f| f.secret_ref.as_deref()))
                    .collect(),
                integrations: Vec::new(),
            })
            .unwrap_or_default()
    }
}

/// Only an admin key may name a secret or an integration that `current` (what is stored) does
/// not name already: naming one gives its value to the runs, which is reading it.
pub fn check_may_name(caller: &Caller, wanted: &Named<'_>, current: &Named<'_>) -> ServiceResult<()> {
    if caller.role == Role::Admin {
        return Ok(());
    }
    let secret = wanted.secrets.iter().find(|s| !current.secrets.contains(s));
    let integration = wanted.integrations.iter().find(|i| !current.integrations.contains(i));
    let named = match (secret, integration) {
        (Some(s), _) => format!("the secret '{s}'"),
        (None, Some(i)) => format!("the integration '{i}'"),
        (None, None) => return Ok(()),
    };
    Err(ServiceError::forbidden(format!(
        "only an admin key may give a run {named}: a run hands its value to the commands it \
         runs, so naming it here would read it"
    )))
}
