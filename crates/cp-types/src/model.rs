//! LLM models of an organization's catalog (API §3, Model row).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::FieldIssue;
use crate::common::nullable;
use crate::environment::is_env_name;
use crate::runtime::{ModelFacts, Runtime};
use crate::validate::Issues;
use chrono::{DateTime, Utc};

/// What a model is for. Written with a hyphen on the wire (`text-generation`), as clients
/// of the reference send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
pub enum ModelType {
    #[default]
    #[serde(rename = "text-generation")]
    TextGeneration,
    #[serde(rename = "embedding")]
    Embedding,
    #[serde(rename = "multimodal")]
    Multimodal,
}

impl ModelType {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::TextGeneration => "text-generation",
            ModelType::Embedding => "embedding",
            ModelType::Multimodal => "multimodal",
        }
    }
}

impl std::str::FromStr for ModelType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text-generation" => Ok(ModelType::TextGeneration),
            "embedding" => Ok(ModelType::Embedding),
            "multimodal" => Ok(ModelType::Multimodal),
            other => Err(format!(
                "unknown model type '{other}', expected text-generation, embedding or multimodal"
            )),
        }
    }
}

/// Prices in US dollars per 1,000 tokens; the worker computes an execution's cost from them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Pricing {
    #[schema(minimum = 0)]
    pub input_per_1k: f64,
    #[schema(minimum = 0)]
    pub output_per_1k: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Model {
    pub id: Uuid,
    pub organization_id: String,
    /// `provider/name`, unique in the organization (e.g. `anthropic/claude-sonnet-4-5`).
    pub value: String,
    pub label: String,
    /// Lowercase provider name; `anthropic` speaks the Messages API, every other provider the
    /// OpenAI-compatible chat completions API.
    pub provider: String,
    /// The model name sent to the provider; by default `value` after its first `/`.
    pub provider_model: Option<String>,
    pub model_type: ModelType,
    pub description: Option<String>,
    pub logo: Option<String>,
    pub enabled: bool,
    pub recommended: bool,
    /// Exactly one model per organization is the default.
    pub is_default: bool,
    pub compatible_runtimes: Vec<Runtime>,
    #[schema(value_type = Object)]
    pub capabilities: Value,
    pub pricing: Option<Pricing>,
    pub context_window: Option<i64>,
    /// Where the provider is reached (OpenAI-compatible: includes `/v1`).
    pub base_url: Option<String>,
    /// The name of the secret holding the provider's API key.
    pub api_key_secret: Option<String>,
    pub display_order: i64,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

impl Model {
    /// The name sent to the provider (API §10, provider calls).
    pub fn provider_model_name(&self) -> &str {
        match &self.provider_model {
            Some(name) => name,
            None => self.value.split_once('/').map_or(self.value.as_str(), |(_, rest)| rest),
        }
    }

    pub fn facts(&self) -> ModelFacts<'_> {
        ModelFacts {
            value: &self.value,
            provider: &self.provider,
            enabled: self.enabled,
            compatible_runtimes: &self.compatible_runtimes,
        }
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateModel {
    #[schema(min_length = 1, max_length = 200, pattern = r"^\S+$")]
    pub value: String,
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub label: String,
    #[schema(min_length = 1, max_length = 100, pattern = r"^[A-Za-z0-9._-]+$")]
    pub provider: String,
    #[schema(max_length = 200)]
    pub provider_model: Option<String>,
    pub model_type: Option<ModelType>,
    #[schema(max_length = 10000)]
    pub description: Option<String>,
    #[schema(max_length = 2000)]
    pub logo: Option<String>,
    pub enabled: Option<bool>,
    pub recommended: Option<bool>,
    /// Makes this the organization's default model (the previous default stops being one).
    pub is_default: Option<bool>,
    /// Defaults to `default`, plus `claude_code` for Claude models.
    pub compatible_runtimes: Option<Vec<Runtime>>,
    #[schema(value_type = Option<Object>)]
    pub capabilities: Option<Value>,
    pub pricing: Option<Pricing>,
    #[schema(minimum = 1, maximum = 100000000)]
    pub context_window: Option<i64>,
    #[schema(max_length = 2000)]
    pub base_url: Option<String>,
    #[schema(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$", max_length = 200)]
    pub api_key_secret: Option<String>,
    #[schema(minimum = 0, maximum = 1000000)]
    pub display_order: Option<i64>,
}

/// Partial update: absent fields stay, `null` clears a nullable field.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UpdateModel {
    #[schema(min_length = 1, max_length = 200, pattern = r"^\S+$")]
    pub value: Option<String>,
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub label: Option<String>,
    #[schema(min_length = 1, max_length = 100, pattern = r"^[A-Za-z0-9._-]+$")]
    pub provider: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 200)]
    pub provider_model: Option<Option<String>>,
    pub model_type: Option<ModelType>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 2000)]
    pub logo: Option<Option<String>>,
    pub enabled: Option<bool>,
    pub recommended: Option<bool>,
    /// `true` makes this the default; `false` on the default is refused (make another one the
    /// default instead), so an organization never loses its default by accident.
    pub is_default: Option<bool>,
    pub compatible_runtimes: Option<Vec<Runtime>>,
    #[schema(value_type = Option<Object>)]
    pub capabilities: Option<Value>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Pricing>)]
    pub pricing: Option<Option<Pricing>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 100000000)]
    pub context_window: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 2000)]
    pub base_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, pattern = r"^[A-Za-z_][A-Za-z0-9_]*$", max_length = 200)]
    pub api_key_secret: Option<Option<String>>,
    #[schema(minimum = 0, maximum = 1000000)]
    pub display_order: Option<i64>,
}

/// The runtimes a model works with when the caller does not say.
pub fn default_runtimes(value: &str, provider: &str) -> Vec<Runtime> {
    if crate::runtime::is_claude_model(value, provider) {
        vec![Runtime::Default, Runtime::ClaudeCode]
    } else {
        vec![Runtime::Default]
    }
}

fn check_value(v: &mut Issues, value: &str) {
    v.length("value", value, 1, 200);
    v.check(
        !value.chars().any(char::is_whitespace),
        "value",
        "must not contain whitespace",
    );
}

fn check_provider(v: &mut Issues, provider: &str) {
    v.length("provider", provider, 1, 100);
    v.check(
        provider
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')),
        "provider",
        "may contain only letters, digits, '.', '_' and '-'",
    );
}

fn check_pricing(v: &mut Issues, p: &Pricing) {
    let ok = |x: f64| x.is_finite() && x >= 0.0;
    v.check(ok(p.input_per_1k), "pricing.input_per_1k", "must be a number >= 0");
    v.check(ok(p.output_per_1k), "pricing.output_per_1k", "must be a number >= 0");
}

fn check_base_url(v: &mut Issues, url: &str) {
    v.max_length("base_url", Some(url), 2000);
    v.check(
        (url.starts_with("http://") || url.starts_with("https://")) && url.len() > "https://".len() - 1,
        "base_url",
        "must be an http:// or https:// URL",
    );
}

fn check_common(
    v: &mut Issues,
    context_window: Option<i64>,
    secret: Option<&str>,
    order: Option<i64>,
    runtimes: Option<&[Runtime]>,
) {
    if let Some(w) = context_window {
        v.check(
            (1..=100_000_000).contains(&w),
            "context_window",
            "must be between 1 and 100000000",
        );
    }
    if let Some(s) = secret {
        v.check(
            is_env_name(s) && s.len() <= 200,
            "api_key_secret",
            "must be a secret name ([A-Za-z_][A-Za-z0-9_]*)",
        );
    }
    if let Some(o) = order {
        v.check(
            (0..=1_000_000).contains(&o),
            "display_order",
            "must be between 0 and 1000000",
        );
    }
    if let Some(r) = runtimes {
        v.check(!r.is_empty(), "compatible_runtimes", "must name at least one runtime");
    }
}

impl CreateModel {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        check_value(&mut v, &self.value);
        v.length("label", &self.label, 1, 200);
        check_provider(&mut v, &self.provider);
        v.max_length("provider_model", self.provider_model.as_deref(), 200);
        v.max_length("description", self.description.as_deref(), 10_000);
        v.max_length("logo", self.logo.as_deref(), 2000);
        v.object("capabilities", self.capabilities.as_ref());
        if let Some(p) = &self.pricing {
            check_pricing(&mut v, p);
        }
        if let Some(url) = &self.base_url {
            check_base_url(&mut v, url);
        }
        check_common(
            &mut v,
            self.context_window,
            self.api_key_secret.as_deref(),
            self.display_order,
            self.compatible_runtimes.as_deref(),
        );
        if self.is_default == Some(true) && self.enabled == Some(false) {
            v.push("is_default", "a disabled model cannot be the default");
        }
        v.finish()
    }
}

impl UpdateModel {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        if let Some(value) = &self.value {
            check_value(&mut v, value);
        }
        if let Some(label) = &self.label {
            v.length("label", label, 1, 200);
        }
        if let Some(p) = &self.provider {
            check_provider(&mut v, p);
        }
        if let Some(Some(p)) = &self.provider_model {
            v.max_length("provider_model", Some(p), 200);
        }
        if let Some(Some(d)) = &self.description {
            v.max_length("description", Some(d), 10_000);
        }
        if let Some(Some(l)) = &self.logo {
            v.max_length("logo", Some(l), 2000);
        }
        v.object("capabilities", self.capabilities.as_ref());
        if let Some(Some(p)) = &self.pricing {
            check_pricing(&mut v, p);
        }
        if let Some(Some(url)) = &self.base_url {
            check_base_url(&mut v, url);
        }
        check_common(
            &mut v,
            self.context_window.flatten(),
            self.api_key_secret.as_ref().and_then(|s| s.as_deref()),
            self.display_order,
            self.compatible_runtimes.as_deref(),
        );
        if self.is_default == Some(true) && self.enabled == Some(false) {
            v.push("is_default", "a disabled model cannot be the default");
        }
        v.finish()
    }
}
