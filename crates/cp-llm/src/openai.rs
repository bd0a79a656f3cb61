//! The OpenAI-compatible chat completions format (OpenAI, vLLM, Ollama, LiteLLM, …).

use serde_json::{Value, json};

use crate::sse::Events;
use crate::{
    ChatRequest, Completion, Delta, LlmError, Message, ModelConfig, StopReason, ToolCall, Usage, parse_arguments,
};

pub(crate) fn request(config: &ModelConfig, req: &ChatRequest) -> (String, Value, Vec<(&'static str, String)>) {
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    if let Some(system) = &req.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for m in &req.messages {
        messages.push(match m {
            Message::User { content } => json!({"role": "user", "content": content}),
            Message::Assistant { content, tool_calls } => {
                let mut a = json!({"role": "assistant", "content": if content.is_empty() { Value::Null } else { json!(content) }});
                if !tool_calls.is_empty() {
                    a["tool_calls"] = tool_calls
                        .iter()
                        .map(|c| {
                            json!({"id": c.id, "type": "function",
                                   "function": {"name": c.name, "arguments": c.arguments.to_string()}})
                        })
                        .collect();
                }
                a
            }
            Message::Tool { call_id, content, .. } => json!({"role": "tool", "tool_call_id": call_id, "content": content}),
        });
    }
    let mut body = json!({
        "model": config.model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
            .collect();
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(m) = req.max_tokens {
        body["max_tokens"] = json!(m);
    }
    (endpoint(config, "chat/completions"), body, bearer(config))
}

/// `{base_url}/{path}` of an OpenAI-compatible server.
pub(crate) fn endpoint(config: &ModelConfig, path: &str) -> String {
    format!("{}/{path}", config.base_url.trim_end_matches('/'))
}

/// The key as OpenAI-compatible servers take it, when there is one.
pub(crate) fn bearer(config: &ModelConfig) -> Vec<(&'static str, String)> {
    config
        .api_key
        .iter()
        .map(|k| ("authorization", format!("Bearer {k}")))
        .collect()
}

/// A tool call being streamed: its id and name come first, its arguments in fragments.
#[derive(Default)]
struct Partial {
    id: String,
    name: String,
    arguments: String,
}

pub(crate) async fn read(mut events: Events, on_delta: &mut impl FnMut(Delta)) -> Result<Completion, LlmError> {
    let mut out = Completion {
        text: String::new(),
        thinking: String::new(),
        tool_calls: Vec::new(),
        usage: Usage::default(),
        stop: StopReason::Other,
    };
    // In the order they started. Fragments name the call by `index`; some servers reuse an
    // index for parallel calls with different ids, and some send no index at all.
    let mut calls: Vec<(Option<u64>, Partial)> = Vec::new();
    let mut finished = false;
    while let Some(event) = events.next().await? {
        if event.data.trim() == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(&event.data)
            .map_err(|e| LlmError::Protocol(format!("a chunk is not JSON ({e}): {}", event.data)))?;
        if let Some(error) = chunk.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error")
                .to_string();
            return Err(LlmError::Unavailable(message));
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            out.usage.prompt_tokens = u["prompt_tokens"].as_u64().unwrap_or(out.usage.prompt_tokens);
            out.usage.completion_tokens = u["completion_tokens"].as_u64().unwrap_or(out.usage.completion_tokens);
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            continue;
        };
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            out.text.push_str(text);
            on_delta(Delta::Text(text.to_string()));
        }
        for key in ["reasoning_content", "reasoning"] {
            if let Some(t) = delta[key].as_str().filter(|t| !t.is_empty()) {
                out.thinking.push_str(t);
                on_delta(Delta::Thinking(t.to_string()));
            }
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64();
            let id = call["id"].as_str().filter(|i| !i.is_empty());
            // The call this fragment continues: the last one with its index (or simply the
            // last one), unless it brings a new id.
            let current = calls.iter().rposition(|(i, _)| index.is_none() || *i == index);
            let fresh = match (current, id) {
                (None, _) => true,
                (Some(c), Some(id)) => !calls[c].1.id.is_empty() && calls[c].1.id != id,
                (Some(_), None) => false,
            };
            if fresh {
                calls.push((index, Partial::default()));
            }
            let at = if fresh { calls.len() - 1 } else { current.unwrap_or(0) };
            let partial = &mut calls[at].1;
            if let Some(id) = id {
                partial.id = id.to_string();
            }
            if let Some(name) = call.pointer("/function/name").and_then(Value::as_str) {
                partial.name.push_str(name);
            }
            if let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str) {
                partial.arguments.push_str(args);
            }
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            finished = true;
            out.stop = match reason {
                "stop" => StopReason::End,
                "tool_calls" | "function_call" => StopReason::ToolUse,
                "length" => StopReason::MaxTokens,
                _ => StopReason::Other,
            };
        }
    }
    if !finished && out.text.is_empty() && calls.is_empty() {
        return Err(LlmError::Protocol("the stream ended before the answer".into()));
    }
    for (i, (_, p)) in calls.into_iter().enumerate() {
        let call = ToolCall {
            id: if p.id.is_empty() { format!("call_{i}") } else { p.id },
            name: p.name,
            arguments: parse_arguments(&p.arguments),
        };
        on_delta(Delta::ToolCall(call.clone()));
        out.tool_calls.push(call);
    }
    if !out.tool_calls.is_empty() && out.stop != StopReason::MaxTokens {
        out.stop = StopReason::ToolUse;
    }
    Ok(out)
}
