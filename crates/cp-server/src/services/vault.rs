//! Sealing and reading secret values and integration credentials. Every read that hands a
//! value to a caller is recorded in the access log before the value leaves the server.

use std::str::FromStr;

use cp_store::StoreError;
use cp_store::integrations::SealedIntegration;
use cp_store::secrets::Reader;
use cp_types::integration::{Credentials, IntegrationStatus, IntegrationToken, IntegrationType};
use cp_types::secret::{SecretString, SecretValue};
use uuid::Uuid;

use super::crypto::{Cipher, integration_aad, secret_aad};
use crate::http::auth::Principal;
use crate::http::{ApiError, ApiResult};
use crate::state::AppState;

/// The access-log entry of a caller reading through the API.
pub fn api_reader(p: &Principal) -> Reader<'_> {
    Reader {
        key_id: p.key_id,
        key_name: &p.key_name,
        role: p.role,
        purpose: "api",
    }
}

fn cipher(state: &AppState) -> Cipher {
    Cipher::new(&state.config.master_key)
}

fn no_randomness() -> ApiError {
    tracing::error!("the system random number generator failed; nothing was encrypted");
    ApiError::internal()
}

/// Encrypts a secret value for its organization and name.
pub fn seal_secret(state: &AppState, org: &str, name: &str, value: &SecretString) -> ApiResult<Vec<u8>> {
    cipher(state)
        .seal(value.expose().as_bytes(), &secret_aad(org, name))
        .map_err(|_| no_randomness())
}

/// Encrypts integration credentials for their organization and integration id.
pub fn seal_credentials(state: &AppState, org: &str, id: Uuid, credentials: &Credentials) -> ApiResult<Vec<u8>> {
    let plain = serde_json::to_vec(credentials).map_err(|_| ApiError::internal())?;
    cipher(state)
        .seal(&plain, &integration_aad(org, id))
        .map_err(|_| no_randomness())
}

/// `GET /secrets/value/{name}`: decrypts, records the read, answers the value.
pub async fn read_secret(state: &AppState, caller: &Principal, name: &str) -> ApiResult<SecretValue> {
    let org = caller.org_id.as_str();
    let secrets = state.store.secrets(org);
    let sealed = secrets
        .sealed(name)
        .await
        .map_err(|e| ApiError::from_store(e, "secret"))?;
    let value = cipher(state)
        .open_string(&sealed.ciphertext, &secret_aad(org, &sealed.name))
        .map_err(|_| {
            tracing::error!(org, secret = %sealed.name, "a secret does not decrypt (wrong master key or altered row)");
            ApiError::internal()
        })?;
    secrets
        .record_reads(&[(sealed.id, &sealed.name)], api_reader(caller))
        .await?;
    Ok(SecretValue {
        name: sealed.name,
        value,
    })
}

/// Finds the integration a token path names: `{type}/{id}` where `id` is a UUID, or `0` for
/// the organization's one integration of that type (what the Python client sends for jira
/// and github_app). A type that does not match the row's is "not found", like a foreign id.
async fn find_integration(state: &AppState, org: &str, kind: &str, id: &str) -> ApiResult<SealedIntegration> {
    let not_found = || ApiError::not_found("integration");
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
            _ => Err(ApiError::not_found("integration").with_details(serde_json::json!({
                "issue": format!("several {kind} integrations are connected: address one by its id")
            }))),
        };
    }
    let id = Uuid::parse_str(id).map_err(|_| ApiError::bad_request("invalid integration id: expected a UUID or 0"))?;
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
    caller: &Principal,
    kind: &str,
    id: &str,
) -> ApiResult<IntegrationToken> {
    let org = caller.org_id.as_str();
    let integration = find_integration(state, org, kind, id).await?;
    if integration.status != IntegrationStatus::Active {
        return Err(ApiError::conflict(format!(
            "integration '{}' is {}: activate it first",
            integration.name, integration.status
        )));
    }
    let Some(sealed) = &integration.credentials else {
        return Err(ApiError::conflict(format!(
            "integration '{}' has no credentials",
            integration.name
        )));
    };
    let unreadable = || {
        tracing::error!(org, integration = %integration.id, "integration credentials do not decrypt (wrong master key or altered row)");
        ApiError::internal()
    };
    let plain = cipher(state)
        .open(sealed, &integration_aad(org, integration.id))
        .map_err(|_| unreadable())?;
    let credentials: Credentials = serde_json::from_slice(&plain).map_err(|_| unreadable())?;
    let vars = integration.integration_type.env_vars(&credentials);
    let Some((env_var, token)) = vars.first().cloned() else {
        return Err(ApiError::conflict(format!(
            "the credentials of integration '{}' lack the fields a {} integration needs",
            integration.name, integration.integration_type
        )));
    };
    state
        .store
        .integrations(org)
        .record_reads(&[&integration], api_reader(caller))
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
