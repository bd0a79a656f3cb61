//! The Anthropic messages format.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::sse::Events;
use crate::{
    ChatRequest, Completion, Delta, LlmError, Message, ModelConfig, StopReason, ToolCall, Usage, parse_arguments,
};

const VERSION: &str = "2023-06-01";

pub(crate) fn request(config: &ModelConfig, req: &ChatRequest) -> (String, Value, Vec<(&'static str, String)>) {
    let mut messages: Vec<Value> = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        match m {
            Message::User { content } => messages.push(json!({"role": "user", "content": content})),
            Message::Assistant { content, tool_calls } => {
                let mut blocks = Vec::new();
                if !content.is_empty() {
                    blocks.push(json!({"type": "text", "text": content}));
                }
                for c in tool_calls {
                    blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}));
                }
                messages.push(json!({"role": "assistant", "content": blocks}));
            }
            Message::Tool {
                call_id,
                content,
                is_error,
            } => {
                let block =
                    json!({"type": "tool_result", "tool_use_id": call_id, "content": content, "is_error": is_error});
                // Results of one turn's calls travel together in one user message.
                match messages.last_mut() {
                    Some(last) if last["role"] == "user" && last["content"].is_array() => {
                        if let Some(blocks) = last["content"].as_array_mut() {
                            blocks.push(block);
                        }
                    }
                    _ => messages.push(json!({"role": "user", "content": [block]})),
                }
            }
        }
    }
    let mut body = json!({
        "model": config.model,
        "max_tokens": req.max_tokens.unwrap_or(4096),
        "messages": messages,
        "stream": true,
    });
    if let Some(system) = &req.system {
        body["system"] = json!(system);
    }
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
            .collect();
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    let url = format!("{}/v1/messages", config.base_url.trim_end_matches('/'));
    let mut headers = vec![("anthropic-version", VERSION.to_string())];
    if let Some(key) = &config.api_key {
        headers.push(("x-api-key", key.clone()));
    }
    (url, body, headers)
}

/// A content block being streamed.
enum Block {
    Text,
    Thinking,
    Tool { id: String, name: String, input: String },
}

pub(crate) async fn read(mut events: Events, on_delta: &mut impl FnMut(Delta)) -> Result<Completion, LlmError> {
    let mut out = Completion {
        text: String::new(),
        thinking: String::new(),
        tool_calls: Vec::new(),
        usage: Usage::default(),
        stop: StopReason::Other,
    };
    let mut blocks: BTreeMap<u64, Block> = BTreeMap::new();
    let mut stopped = false;
    while let Some(event) = events.next().await? {
        if event.data.is_empty() {
            continue;
        }
        let data: Value = serde_json::from_str(&event.data)
            .map_err(|e| LlmError::Protocol(format!("an event is not JSON ({e}): {}", event.data)))?;
        let kind = event
            .name
            .as_deref()
            .or_else(|| data["type"].as_str())
            .unwrap_or_default();
        let index = data["index"].as_u64().unwrap_or(0);
        match kind {
            "message_start" => {
                let u = &data["message"]["usage"];
                out.usage.prompt_tokens = u["input_tokens"].as_u64().unwrap_or(0);
                out.usage.completion_tokens = u["output_tokens"].as_u64().unwrap_or(0);
            }
            "content_block_start" => {
                let b = &data["content_block"];
                let block = match b["type"].as_str() {
                    Some("tool_use") => Block::Tool {
                        id: b["id"].as_str().unwrap_or_default().to_string(),
                        name: b["name"].as_str().unwrap_or_default().to_string(),
                        input: String::new(),
                    },
                    Some("thinking") => Block::Thinking,
                    _ => Block::Text,
                };
                blocks.insert(index, block);
            }
            "content_block_delta" => {
                let d = &data["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => {
                        let t = d["text"].as_str().unwrap_or_default();
                        out.text.push_str(t);
                        on_delta(Delta::Text(t.to_string()));
                    }
                    Some("thinking_delta") => {
                        let t = d["thinking"].as_str().unwrap_or_default();
                        out.thinking.push_str(t);
                        on_delta(Delta::Thinking(t.to_string()));
                    }
                    Some("input_json_delta") => {
                        if let Some(Block::Tool { input, .. }) = blocks.get_mut(&index) {
                            input.push_str(d["partial_json"].as_str().unwrap_or_default());
                        }
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                if let Some(Block::Tool { id, name, input }) = blocks.remove(&index) {
                    let call = ToolCall {
                        id: if id.is_empty() { format!("toolu_{index}") } else { id },
                        name,
                        arguments: parse_arguments(&input),
                    };
                    on_delta(Delta::ToolCall(call.clone()));
                    out.tool_calls.push(call);
                }
            }
            "message_delta" => {
                if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                    out.stop = match reason {
                        "end_turn" | "stop_sequence" => StopReason::End,
                        "tool_use" => StopReason::ToolUse,
                        "max_tokens" => StopReason::MaxTokens,
                        _ => StopReason::Other,
                    };
                }
                if let Some(n) = data["usage"]["output_tokens"].as_u64() {
                    out.usage.completion_tokens = n;
                }
                if let Some(n) = data["usage"]["input_tokens"].as_u64() {
                    out.usage.prompt_tokens = n;
                }
            }
            "message_stop" => {
                stopped = true;
                break;
            }
            "error" => {
                let message = data["error"]["message"].as_str().unwrap_or("error").to_string();
                return Err(LlmError::Unavailable(message));
            }
            _ => {}
        }
    }
    if !stopped {
        return Err(LlmError::Protocol("the stream ended before message_stop".into()));
    }
    Ok(out)
}
