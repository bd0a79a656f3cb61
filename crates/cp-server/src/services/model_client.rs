//! How the server itself reaches an organization's model (the planner's, the embedder's):
//! its base URL checked like any outbound target, its key opened from the vault for this use.

use std::sync::OnceLock;
use std::time::Duration;

use cp_llm::{ModelConfig, Provider};
use cp_types::model::Model;

use crate::services::caller::Caller;
use crate::services::error::{ServiceError, ServiceResult};
use crate::services::vault;
use crate::state::AppState;

/// Where and how to send requests to a model from the server.
pub struct Reach {
    pub config: ModelConfig,
    pub http: reqwest::Client,
}

/// How to reach `model`, or why the server cannot (no key, a private address, a key that is
/// not stored). The key is opened, and its read logged with `purpose`, only when all else holds.
pub async fn reach(
    state: &AppState,
    caller: &Caller,
    model: &Model,
    purpose: &'static str,
) -> ServiceResult<Result<Reach, String>> {
    let provider = Provider::for_name(&model.provider);
    // A model on the provider's own service needs a key; a local server (its own base_url) may not.
    if model.api_key_secret.is_none() && model.base_url.is_none() {
        return Ok(Err(format!(
            "model {} has no API key (set its api_key_secret to a stored secret)",
            model.value
        )));
    }
    let base_url = model
        .base_url
        .clone()
        .unwrap_or_else(|| provider.default_base_url().to_owned());
    let allow_private = state.config.allow_private_model_urls;
    if let Err(e) = cp_net::check_target(&base_url, allow_private).await {
        return Ok(Err(format!(
            "model {}'s base_url cannot be used by the server: {e}{}",
            model.value,
            if allow_private {
                ""
            } else {
                " (allowed only with --allow-private-model-urls)"
            }
        )));
    }
    let api_key = match &model.api_key_secret {
        Some(name) => match vault::secret_for_server(state, caller, name, purpose).await {
            Ok(secret) => Some(secret.value),
            Err(e) if e.code == cp_types::ErrorCode::NotFound => {
                return Ok(Err(format!(
                    "the secret '{name}' that holds model {}'s API key is not stored",
                    model.value
                )));
            }
            Err(e) => return Err(e),
        },
        None => None,
    };
    let http = http_client(allow_private).ok_or_else(ServiceError::internal)?;
    let mut config = ModelConfig::new(provider, model.provider_model_name());
    config.base_url = base_url;
    config.api_key = api_key;
    Ok(Ok(Reach { config, http }))
}

/// The server's HTTP clients for models, public-only and not, built once: building one reads
/// the system's root certificates (milliseconds of CPU), and a kept client reuses connections.
fn http_client(allow_private: bool) -> Option<reqwest::Client> {
    static CLIENTS: [OnceLock<Option<reqwest::Client>>; 2] = [OnceLock::new(), OnceLock::new()];
    CLIENTS[usize::from(allow_private)]
        .get_or_init(|| {
            // No redirects: one to a private IP literal would skip the public-only resolver.
            let builder = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none());
            let builder = if allow_private {
                builder
            } else {
                cp_net::public_only(builder)
            };
            builder.build().ok()
        })
        .clone()
}
