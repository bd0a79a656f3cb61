//! LLM provider clients for the worker: OpenAI-compatible chat completions (OpenAI, vLLM,
//! Ollama, LiteLLM, …) and Anthropic messages, both streaming, both with tool calling.
//!
//! One [`Client`] speaks to one model. [`Client::stream`] sends a [`ChatRequest`], hands every
//! [`Delta`] to a callback as it arrives (text, thinking, finished tool calls) and returns the
//! whole [`Completion`] with the provider's token usage. Requests that fail before anything
//! was streamed (429, 5xx, a connection error) are retried with exponential backoff,
//! honouring `Retry-After`. [`Client::embed`] asks an OpenAI-compatible provider for
//! embeddings.

mod anthropic;
mod embeddings;
mod openai;
mod sse;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The wire format a model speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// `POST {base_url}/chat/completions`, key as `Authorization: Bearer`.
    OpenAi,
    /// `POST {base_url}/v1/messages`, key as `x-api-key`.
    Anthropic,
}

impl Provider {
    /// The format of a model's `provider` field: `anthropic` speaks Anthropic messages, every
    /// other provider (openai, ollama, vllm, litellm, …) the OpenAI-compatible format.
    pub fn for_name(provider: &str) -> Provider {
        if provider.eq_ignore_ascii_case("anthropic") {
            Provider::Anthropic
        } else {
            Provider::OpenAi
        }
    }

    pub fn default_base_url(self) -> &'static str {
        match self {
            Provider::OpenAi => "https://api.openai.com/v1",
            Provider::Anthropic => "https://api.anthropic.com",
        }
    }

    /// The worker-host variable that holds a key when the claim carries none.
    pub fn key_variable(self) -> &'static str {
        match self {
            Provider::OpenAi => "OPENAI_API_KEY",
            Provider::Anthropic => "ANTHROPIC_API_KEY",
        }
    }

    /// The worker-host variable that overrides the base URL when the model sets none.
    pub fn base_url_variable(self) -> &'static str {
        match self {
            Provider::OpenAi => "OPENAI_BASE_URL",
            Provider::Anthropic => "ANTHROPIC_BASE_URL",
        }
    }
}

/// Where and how to reach one model.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub provider: Provider,
    /// The model name the provider knows (`claude-sonnet-4-5`, `gpt-4.1`).
    pub model: String,
    pub base_url: String,
    /// `None` for local servers that need no key (Ollama, vLLM).
    pub api_key: Option<String>,
    /// Longest wait for the response to start and between two streamed chunks.
    pub idle_timeout: Duration,
    /// Retries of a request that failed before streaming (429, 5xx, connection errors).
    pub max_retries: u32,
    /// The first retry's delay; each next one doubles it.
    pub retry_base: Duration,
    /// The most bytes one streamed answer may have (a provider cannot fill the memory).
    pub max_response_bytes: usize,
}

impl ModelConfig {
    pub fn new(provider: Provider, model: impl Into<String>) -> ModelConfig {
        ModelConfig {
            provider,
            model: model.into(),
            base_url: provider.default_base_url().to_string(),
            api_key: None,
            idle_timeout: Duration::from_secs(120),
            max_retries: 3,
            retry_base: Duration::from_millis(500),
            max_response_bytes: 32 << 20,
        }
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

/// A call the model asked for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// One turn of a conversation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    User {
        content: String,
    },
    Assistant {
        content: String,
        #[serde(default)]
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call.
    Tool {
        call_id: String,
        content: String,
        #[serde(default)]
        is_error: bool,
    },
}

#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    pub system: Option<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub temperature: Option<f64>,
    /// Required by Anthropic; 4096 when unset.
    pub max_tokens: Option<u32>,
}

/// Tokens the provider counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Something the model produced, as it streams.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    Text(String),
    Thinking(String),
    /// A tool call whose arguments are complete.
    ToolCall(ToolCall),
}

/// The vectors of an embeddings call, one per input in the inputs' order.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u64,
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A final answer.
    End,
    /// It wants tool results.
    ToolUse,
    /// It ran out of `max_tokens`.
    MaxTokens,
    Other,
}

/// A whole response.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    pub thinking: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    pub stop: StopReason,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// The provider refused the key (401, 403).
    #[error("the provider refused the API key: {0}")]
    Auth(String),
    /// The provider refused the request (400, 404, 422): retrying would not help.
    #[error("the provider refused the request: {0}")]
    Request(String),
    /// 429 or 5xx after every retry.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    #[error("no answer from the provider within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the provider: {0}")]
    Network(String),
    /// The answer did not follow the provider's format.
    #[error("unexpected answer from the provider: {0}")]
    Protocol(String),
}

/// A client for one model.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    config: ModelConfig,
}

impl Client {
    pub fn new(config: ModelConfig) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Client { http, config }
    }

    /// A client that sends through `http` (the server's, which reaches public addresses only).
    pub fn with_http(config: ModelConfig, http: reqwest::Client) -> Client {
        Client { http, config }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Sends `req` and streams the answer to `on_delta`; the whole completion at the end.
    pub async fn stream(&self, req: &ChatRequest, mut on_delta: impl FnMut(Delta)) -> Result<Completion, LlmError> {
        let (url, body, headers) = match self.config.provider {
            Provider::OpenAi => openai::request(&self.config, req),
            Provider::Anthropic => anthropic::request(&self.config, req),
        };
        let resp = self.send(&url, &body, &headers).await?;
        let events = sse::Events::new(resp, self.config.idle_timeout, self.config.max_response_bytes);
        match self.config.provider {
            Provider::OpenAi => openai::read(events, &mut on_delta).await,
            Provider::Anthropic => anthropic::read(events, &mut on_delta).await,
        }
    }

    /// The embeddings of `inputs`, in their order, through the OpenAI-compatible
    /// `POST {base_url}/embeddings` (OpenAI, Ollama, vLLM, LiteLLM, …). Anthropic has no such API.
    pub async fn embed(&self, inputs: &[String]) -> Result<Embeddings, LlmError> {
        if self.config.provider == Provider::Anthropic {
            return Err(LlmError::Request(
                "Anthropic has no embeddings API: use an OpenAI-compatible provider".into(),
            ));
        }
        let (url, body, headers) = embeddings::request(&self.config, inputs);
        let resp = self.send(&url, &body, &headers).await?;
        let bytes = embeddings::body(resp, self.config.idle_timeout, self.config.max_response_bytes).await?;
        embeddings::read(&bytes, inputs.len())
    }

    /// Posts `body` until a success answer starts, retrying what may pass (429, 5xx,
    /// connection errors) with exponential backoff and the provider's `Retry-After`.
    async fn send(&self, url: &str, body: &Value, headers: &[(&str, String)]) -> Result<reqwest::Response, LlmError> {
        let mut attempt = 0;
        loop {
            let mut builder = self.http.post(url).json(body);
            for (name, value) in headers {
                builder = builder.header(*name, value);
            }
            let sent = tokio::time::timeout(self.config.idle_timeout, builder.send()).await;
            let failure = match sent {
                Err(_) => Retryable::Yes(LlmError::Timeout(self.config.idle_timeout), None),
                Ok(Err(e)) => Retryable::Yes(LlmError::Network(e.to_string()), None),
                Ok(Ok(resp)) if resp.status().is_success() => return Ok(resp),
                Ok(Ok(resp)) => classify(resp).await,
            };
            match failure {
                Retryable::Yes(e, after) if attempt < self.config.max_retries => {
                    let backoff = self.config.retry_base * 2u32.pow(attempt);
                    let wait = after.unwrap_or(backoff).min(Duration::from_secs(60));
                    tracing::warn!(error = %e, ?wait, attempt, "LLM request failed; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Retryable::Yes(e, _) | Retryable::No(e) => return Err(e),
            }
        }
    }
}

enum Retryable {
    /// With the delay the provider asked for (`Retry-After`), if any.
    Yes(LlmError, Option<Duration>),
    No(LlmError),
}

/// What an error answer means, with the provider's message.
async fn classify(resp: reqwest::Response) -> Retryable {
    let status = resp.status().as_u16();
    let after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        // A provider may send anything here: negative, NaN or huge values must not panic.
        .and_then(|secs| Duration::try_from_secs_f64(secs.clamp(0.0, 60.0)).ok());
    let text = error_body(resp).await;
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("error"))
                .or_else(|| v.get("message"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| text.clone());
    let message: String = message.chars().take(500).collect();
    let message = format!("{status}: {message}");
    match status {
        401 | 403 => Retryable::No(LlmError::Auth(message)),
        408 | 409 | 429 | 500..=599 => Retryable::Yes(LlmError::Unavailable(message), after),
        _ => Retryable::No(LlmError::Request(message)),
    }
}

/// The first 64 KiB of an error answer's body, or what came within 10 s: enough for any
/// message, and a provider that trickles it cannot hold the caller.
async fn error_body(mut resp: reqwest::Response) -> String {
    const MOST: usize = 64 << 10;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut body = Vec::new();
    while body.len() < MOST {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk[..chunk.len().min(MOST - body.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// The key under which [`ToolCall::arguments`] carries arguments that were not valid JSON
/// (a model cut off by `max_tokens`, say): the caller tells the model so, rather than failing
/// the run.
pub const INVALID_ARGUMENTS: &str = "_invalid_arguments";

/// The arguments of a tool call as streamed (JSON text in fragments); `{}` when empty.
fn parse_arguments(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return Value::Object(Default::default());
    }
    serde_json::from_str(raw).unwrap_or_else(|_| serde_json::json!({ INVALID_ARGUMENTS: raw }))
}
