//! Runtimes (API §3, Runtime row): how a worker runs an agent, and which models each accepts.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::wire_enum;

wire_enum! {
    /// `default` is our agent loop (any chat model with tool calling); `claude_code` runs the
    /// Claude Code CLI on the worker host and only works with Claude models.
    Runtime { Default = "default", ClaudeCode = "claude_code" }
}

// wire_enum! cannot put `#[default]` on a variant.
#[allow(clippy::derivable_impls)]
impl Default for Runtime {
    fn default() -> Self {
        Runtime::Default
    }
}

/// What the runtime rules need to know about a model.
#[derive(Debug, Clone, Copy)]
pub struct ModelFacts<'a> {
    pub value: &'a str,
    pub provider: &'a str,
    pub enabled: bool,
    pub compatible_runtimes: &'a [Runtime],
}

/// Whether a model is one of Anthropic's Claude models (the only ones `claude_code` can drive).
pub fn is_claude_model(value: &str, provider: &str) -> bool {
    provider.eq_ignore_ascii_case("anthropic") || value.to_ascii_lowercase().contains("claude")
}

/// The rules an agent's or team's runtime imposes on its model; an empty list means valid.
/// `model` is `None` when neither the entity nor the organization names a model.
pub fn runtime_issues(runtime: Runtime, model: Option<ModelFacts<'_>>) -> Vec<String> {
    let Some(model) = model else {
        return vec![format!(
            "the {runtime} runtime needs a model: set model_id or give the organization a default model"
        )];
    };
    let mut issues = Vec::new();
    if !model.enabled {
        issues.push(format!("model '{}' is disabled", model.value));
    }
    if runtime == Runtime::ClaudeCode && !is_claude_model(model.value, model.provider) {
        issues.push(format!(
            "the claude_code runtime only works with Claude models, not '{}'",
            model.value
        ));
    } else if !model.compatible_runtimes.contains(&runtime) {
        issues.push(format!(
            "model '{}' does not support the {runtime} runtime (compatible: {})",
            model.value,
            model
                .compatible_runtimes
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    issues
}

/// One entry of `GET /runtimes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RuntimeInfo {
    pub id: Runtime,
    pub name: String,
    /// `available` or `beta`.
    pub status: String,
    pub description: String,
    pub features: Vec<String>,
    pub requirements: RuntimeRequirements,
}

/// `GET /runtimes/{id}/requirements`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RuntimeRequirements {
    pub model_requirement: ModelRequirement,
    pub required_config_fields: Vec<String>,
    pub recommended_config_fields: Vec<String>,
    pub max_history_length: Option<u32>,
    pub requires_system_prompt: bool,
    pub requires_tools: bool,
    /// What the worker host must have installed.
    pub worker_requirements: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelRequirement {
    pub description: String,
    /// Empty means any provider.
    pub supported_providers: Vec<String>,
    pub supported_families: Vec<String>,
    pub examples: Vec<String>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The runtimes this server offers.
pub fn runtimes() -> Vec<RuntimeInfo> {
    Runtime::ALL.iter().map(|r| runtime_info(*r)).collect()
}

pub fn runtime_info(runtime: Runtime) -> RuntimeInfo {
    match runtime {
        Runtime::Default => RuntimeInfo {
            id: runtime,
            name: "Agent loop".into(),
            status: "available".into(),
            description: "The worker's built-in agent loop: system prompt, history and tools from skills, \
                          on any chat model with tool calling (Anthropic Messages or OpenAI-compatible)."
                .into(),
            features: strings(&[
                "streaming",
                "tool_calling",
                "skills",
                "policies",
                "teams",
                "follow_up_messages",
            ]),
            requirements: RuntimeRequirements {
                model_requirement: ModelRequirement {
                    description: "Any enabled chat model of the organization with tool calling.".into(),
                    supported_providers: Vec::new(),
                    supported_families: Vec::new(),
                    examples: strings(&["anthropic/claude-sonnet-4-5", "openai/gpt-4.1", "ollama/llama3.1"]),
                },
                required_config_fields: strings(&["model_id"]),
                recommended_config_fields: strings(&[
                    "system_prompt",
                    "llm_config.temperature",
                    "llm_config.max_turns",
                ]),
                max_history_length: None,
                requires_system_prompt: false,
                requires_tools: false,
                worker_requirements: Vec::new(),
            },
        },
        Runtime::ClaudeCode => RuntimeInfo {
            id: runtime,
            name: "Claude Code".into(),
            status: "beta".into(),
            description: "Runs the Claude Code CLI (`claude`) headless in the working directory of the worker \
                          host, streaming its events back."
                .into(),
            features: strings(&["streaming", "code_editing", "shell", "file_system"]),
            requirements: RuntimeRequirements {
                model_requirement: ModelRequirement {
                    description: "A Claude model (provider anthropic).".into(),
                    supported_providers: strings(&["anthropic"]),
                    supported_families: strings(&["claude"]),
                    examples: strings(&["anthropic/claude-sonnet-4-5"]),
                },
                required_config_fields: strings(&["model_id"]),
                recommended_config_fields: strings(&["system_prompt", "execution_environment.working_dir"]),
                max_history_length: None,
                requires_system_prompt: false,
                requires_tools: false,
                worker_requirements: strings(&["the `claude` CLI on the PATH", "ANTHROPIC_API_KEY"]),
            },
        },
    }
}

/// `POST /runtimes/validate`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ValidateRuntime {
    /// `default` or `claude_code`; other values are reported as invalid, not rejected.
    pub runtime_type: String,
    /// A model id or value; the organization's default model when absent.
    pub model_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub agent_config: Option<Value>,
    pub system_prompt: Option<String>,
}

/// The answer of `POST /runtimes/validate`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RuntimeValidation {
    pub valid: bool,
    pub errors: Vec<String>,
    /// The model the rules were checked against, as its value.
    pub model: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(value: &'a str, provider: &'a str, rts: &'a [Runtime]) -> ModelFacts<'a> {
        ModelFacts {
            value,
            provider,
            enabled: true,
            compatible_runtimes: rts,
        }
    }

    #[test]
    fn claude_code_needs_a_claude_model() {
        let both = [Runtime::Default, Runtime::ClaudeCode];
        assert!(
            runtime_issues(
                Runtime::ClaudeCode,
                Some(facts("anthropic/claude-sonnet-4-5", "anthropic", &both))
            )
            .is_empty()
        );
        let issues = runtime_issues(Runtime::ClaudeCode, Some(facts("openai/gpt-4.1", "openai", &both)));
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(issues[0].contains("Claude"));
    }

    #[test]
    fn default_needs_a_model() {
        assert_eq!(runtime_issues(Runtime::Default, None).len(), 1);
        assert!(
            runtime_issues(
                Runtime::Default,
                Some(facts("openai/gpt-4.1", "openai", &[Runtime::Default]))
            )
            .is_empty()
        );
    }
}
