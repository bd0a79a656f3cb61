//! Both wire formats against a fake provider on loopback that speaks them as the real services
//! do (SSE chunks, tool-call argument fragments, usage, errors).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cp_llm::{ChatRequest, Client, Delta, LlmError, Message, ModelConfig, Provider, StopReason, ToolSpec, Usage};
use serde_json::{Value, json};

/// What the fake provider saw, and how many times it should fail before answering.
#[derive(Clone, Default)]
struct Fake {
    requests: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    fail_first: Arc<Mutex<u32>>,
}

fn sse(events: &[(Option<&str>, Value)]) -> Response {
    let mut body = String::new();
    for (name, data) in events {
        if let Some(n) = name {
            body.push_str(&format!("event: {n}\n"));
        }
        body.push_str(&format!("data: {data}\n\n"));
    }
    ([("content-type", "text/event-stream")], body).into_response()
}

/// The scenario is the last user message.
fn scenario(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string()
}

fn failure(fake: &Fake) -> Option<Response> {
    let mut left = fake.fail_first.lock().unwrap();
    if *left == 0 {
        return None;
    }
    *left -= 1;
    Some(
        (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "0")],
            r#"{"error":{"message":"slow down"}}"#,
        )
            .into_response(),
    )
}

async fn openai(State(fake): State<Fake>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    fake.requests.lock().unwrap().push((headers.clone(), body.clone()));
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer sk-test") {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"error":{"message":"Incorrect API key provided"}}"#,
        )
            .into_response();
    }
    if let Some(r) = failure(&fake) {
        return r;
    }
    let chunk = |delta: Value, finish: Value| json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    let usage =
        json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}});
    let events: Vec<(Option<&str>, Value)> = match scenario(&body).as_str() {
        // Two parallel calls on the same index (as some servers send them), the second cut
        // off mid-arguments.
        "two at once" => vec![
            (
                None,
                chunk(
                    json!({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "shell", "arguments": "{\"command\": \"ls\"}"}}]}),
                    Value::Null,
                ),
            ),
            (
                None,
                chunk(
                    json!({"tool_calls": [{"index": 0, "id": "call_b", "function": {"name": "shell", "arguments": "{\"comm"}}]}),
                    Value::Null,
                ),
            ),
            (None, chunk(json!({}), json!("length"))),
            (None, json!("[DONE]")),
        ],
        "use the shell" => vec![
            (
                None,
                chunk(
                    json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_abc", "type": "function", "function": {"name": "shell", "arguments": ""}}]}),
                    Value::Null,
                ),
            ),
            (
                None,
                chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"comm"}}]}),
                    Value::Null,
                ),
            ),
            (
                None,
                chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "and\": \"ls -la\"}"}}]}),
                    Value::Null,
                ),
            ),
            (None, chunk(json!({}), json!("tool_calls"))),
            (None, usage),
            (None, json!("[DONE]")),
        ],
        _ => vec![
            (None, chunk(json!({"role": "assistant", "content": ""}), Value::Null)),
            (None, chunk(json!({"content": "Hello"}), Value::Null)),
            (None, chunk(json!({"content": ", world"}), Value::Null)),
            (None, chunk(json!({}), json!("stop"))),
            (None, usage),
            (None, json!("[DONE]")),
        ],
    };
    // `[DONE]` is sent bare, not as a JSON string.
    let mut r = String::new();
    for (_, data) in &events {
        let data = if data == &json!("[DONE]") {
            "[DONE]".to_string()
        } else {
            data.to_string()
        };
        r.push_str(&format!("data: {data}\n\n"));
    }
    ([("content-type", "text/event-stream")], r).into_response()
}

async fn anthropic(State(fake): State<Fake>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    fake.requests.lock().unwrap().push((headers.clone(), body.clone()));
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some("sk-ant-test") {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
        )
            .into_response();
    }
    if let Some(r) = failure(&fake) {
        return r;
    }
    let start = (
        Some("message_start"),
        json!({"type": "message_start", "message": {"id": "msg_1", "role": "assistant", "usage": {"input_tokens": 20, "output_tokens": 1}}}),
    );
    let stop = (Some("message_stop"), json!({"type": "message_stop"}));
    let events = match scenario(&body).as_str() {
        "use the shell" => vec![
            start,
            (
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            ),
            (
                Some("content_block_delta"),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "I should list files."}}),
            ),
            (
                Some("content_block_stop"),
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "shell", "input": {}}}),
            ),
            (
                Some("content_block_delta"),
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"command\": "}}),
            ),
            (Some("ping"), json!({"type": "ping"})),
            (
                Some("content_block_delta"),
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"ls -la\"}"}}),
            ),
            (
                Some("content_block_stop"),
                json!({"type": "content_block_stop", "index": 1}),
            ),
            (
                Some("message_delta"),
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
            ),
            stop,
        ],
        "overloaded" => vec![
            start,
            (
                Some("error"),
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ),
        ],
        _ => vec![
            start,
            (
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                Some("content_block_delta"),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
            ),
            (
                Some("content_block_delta"),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": ", world"}}),
            ),
            (
                Some("content_block_stop"),
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                Some("message_delta"),
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 6}}),
            ),
            stop,
        ],
    };
    sse(&events)
}

/// One vector per input, answered in reverse order (the `index` puts them back): the input's
/// length and its count of `a`s.
async fn embeddings(State(fake): State<Fake>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    fake.requests.lock().unwrap().push((headers.clone(), body.clone()));
    if let Some(r) = failure(&fake) {
        return r;
    }
    let inputs: Vec<String> = serde_json::from_value(body["input"].clone()).unwrap_or_default();
    let mut data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": [t.len() as f32, t.matches('a').count() as f32]}))
        .collect();
    data.reverse();
    Json(json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 9, "total_tokens": 9}}))
        .into_response()
}

async fn start() -> (String, Fake) {
    let fake = Fake::default();
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(openai))
        .route("/v1/messages", axum::routing::post(anthropic))
        .route("/v1/embeddings", axum::routing::post(embeddings))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, fake)
}

fn client(provider: Provider, base: &str) -> Client {
    let mut c = ModelConfig::new(provider, "test-model");
    c.base_url = match provider {
        Provider::OpenAi => format!("{base}/v1"),
        Provider::Anthropic => base.to_string(),
    };
    c.api_key = Some(match provider {
        Provider::OpenAi => "sk-test".into(),
        Provider::Anthropic => "sk-ant-test".into(),
    });
    c.retry_base = Duration::from_millis(10);
    Client::new(c)
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        system: Some("You are terse.".into()),
        messages: vec![Message::User { content: text.into() }],
        tools: vec![ToolSpec {
            name: "shell".into(),
            description: "Runs a command".into(),
            parameters: json!({"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}),
        }],
        temperature: Some(0.2),
        max_tokens: Some(256),
    }
}

#[tokio::test]
async fn both_formats_stream_text_with_usage() {
    let (base, fake) = start().await;
    for (provider, usage) in [
        (
            Provider::OpenAi,
            Usage {
                prompt_tokens: 12,
                completion_tokens: 5,
            },
        ),
        (
            Provider::Anthropic,
            Usage {
                prompt_tokens: 20,
                completion_tokens: 6,
            },
        ),
    ] {
        let mut deltas = Vec::new();
        let done = client(provider, &base)
            .stream(&ask("hi"), |d| deltas.push(d))
            .await
            .unwrap();
        assert_eq!(
            deltas,
            [Delta::Text("Hello".into()), Delta::Text(", world".into())],
            "{provider:?}"
        );
        assert_eq!(
            (done.text.as_str(), done.stop, done.usage),
            ("Hello, world", StopReason::End, usage)
        );
    }
    // The requests are the providers' own shapes.
    let requests = fake.requests.lock().unwrap().clone();
    let (_, o) = &requests[0];
    assert_eq!(
        (o["stream"].as_bool(), o["model"].as_str()),
        (Some(true), Some("test-model"))
    );
    assert_eq!(o["messages"][0], json!({"role": "system", "content": "You are terse."}));
    assert_eq!(o["tools"][0]["function"]["name"], "shell");
    let (h, a) = &requests[1];
    assert_eq!(h.get("anthropic-version").unwrap(), "2023-06-01");
    assert_eq!(
        (a["system"].as_str(), a["max_tokens"].as_u64()),
        (Some("You are terse."), Some(256))
    );
    assert_eq!(a["tools"][0]["input_schema"]["required"], json!(["command"]));
}

#[tokio::test]
async fn tool_calls_arrive_whole_and_results_go_back_in_each_format() {
    let (base, fake) = start().await;
    for provider in [Provider::OpenAi, Provider::Anthropic] {
        let mut deltas = Vec::new();
        let c = client(provider, &base);
        let done = c.stream(&ask("use the shell"), |d| deltas.push(d)).await.unwrap();
        assert_eq!(done.stop, StopReason::ToolUse, "{provider:?}");
        assert_eq!(done.tool_calls.len(), 1);
        let call = &done.tool_calls[0];
        assert_eq!(
            (call.name.as_str(), &call.arguments),
            ("shell", &json!({"command": "ls -la"}))
        );
        assert!(deltas.contains(&Delta::ToolCall(call.clone())));
        if provider == Provider::Anthropic {
            assert_eq!(done.thinking, "I should list files.");
            assert_eq!(
                done.usage,
                Usage {
                    prompt_tokens: 20,
                    completion_tokens: 9
                }
            );
        }
        // The next turn carries the call and its result.
        let mut next = ask("use the shell");
        next.messages.push(Message::Assistant {
            content: String::new(),
            tool_calls: vec![call.clone()],
        });
        next.messages.push(Message::Tool {
            call_id: call.id.clone(),
            content: "total 0".into(),
            is_error: false,
        });
        next.messages.push(Message::User {
            content: "thanks".into(),
        });
        c.stream(&next, |_| {}).await.unwrap();
    }
    let requests = fake.requests.lock().unwrap().clone();
    let o = &requests[1].1["messages"];
    assert_eq!(
        o[2]["tool_calls"][0],
        json!({"id": "call_abc", "type": "function", "function": {"name": "shell", "arguments": "{\"command\":\"ls -la\"}"}})
    );
    assert_eq!(
        o[3],
        json!({"role": "tool", "tool_call_id": "call_abc", "content": "total 0"})
    );
    let a = &requests[3].1["messages"];
    assert_eq!(
        a[1]["content"][0],
        json!({"type": "tool_use", "id": "toolu_1", "name": "shell", "input": {"command": "ls -la"}})
    );
    assert_eq!(
        a[2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "toolu_1", "content": "total 0", "is_error": false})
    );
}

#[tokio::test]
async fn rate_limits_are_retried_and_bad_keys_are_not() {
    let (base, fake) = start().await;
    for provider in [Provider::OpenAi, Provider::Anthropic] {
        *fake.fail_first.lock().unwrap() = 2;
        let done = client(provider, &base).stream(&ask("hi"), |_| {}).await.unwrap();
        assert_eq!(done.text, "Hello, world");
        // More failures than retries: the last error comes back.
        *fake.fail_first.lock().unwrap() = 10;
        let err = client(provider, &base).stream(&ask("hi"), |_| {}).await.unwrap_err();
        assert!(
            matches!(&err, LlmError::Unavailable(m) if m.contains("429") && m.contains("slow down")),
            "{err}"
        );
        *fake.fail_first.lock().unwrap() = 0;
        let mut wrong = client(provider, &base).config().clone();
        wrong.api_key = Some("nope".into());
        let before = fake.requests.lock().unwrap().len();
        let err = Client::new(wrong).stream(&ask("hi"), |_| {}).await.unwrap_err();
        assert!(matches!(err, LlmError::Auth(_)), "{err}");
        assert_eq!(
            fake.requests.lock().unwrap().len(),
            before + 1,
            "a refused key is not retried"
        );
    }
    let err = client(Provider::Anthropic, &base)
        .stream(&ask("overloaded"), |_| {})
        .await
        .unwrap_err();
    assert_eq!(err, LlmError::Unavailable("Overloaded".into()));
    // Nobody listening.
    let mut gone = ModelConfig::new(Provider::OpenAi, "m");
    gone.base_url = "http://127.0.0.1:9/v1".into();
    gone.max_retries = 0;
    assert!(matches!(
        Client::new(gone).stream(&ask("hi"), |_| {}).await,
        Err(LlmError::Network(_))
    ));
}

#[tokio::test]
async fn parallel_calls_on_one_index_and_cut_arguments_do_not_fail_the_answer() {
    let (base, _fake) = start().await;
    let done = client(Provider::OpenAi, &base)
        .stream(&ask("two at once"), |_| {})
        .await
        .unwrap();
    assert_eq!(done.tool_calls.len(), 2, "{done:?}");
    assert_eq!(
        (done.tool_calls[0].id.as_str(), &done.tool_calls[0].arguments),
        ("call_a", &json!({"command": "ls"}))
    );
    assert_eq!(
        done.tool_calls[1].arguments,
        json!({cp_llm::INVALID_ARGUMENTS: "{\"comm"})
    );
    assert_eq!(done.stop, StopReason::MaxTokens);
}

#[tokio::test]
async fn embeddings_come_in_input_order_in_one_request_with_retries() {
    let (base, fake) = start().await;
    let inputs = vec!["banana".to_string(), "kiwi".to_string(), "papaya".to_string()];
    *fake.fail_first.lock().unwrap() = 1;
    let got = client(Provider::OpenAi, &base).embed(&inputs).await.unwrap();
    assert_eq!(got.vectors, vec![vec![6.0, 3.0], vec![4.0, 0.0], vec![6.0, 3.0]]);
    assert_eq!(got.prompt_tokens, 9);
    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "one 429, then the batch");
    let (headers, body) = &requests[1];
    assert_eq!(headers["authorization"], "Bearer sk-test");
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["input"], json!(["banana", "kiwi", "papaya"]));
    let err = client(Provider::Anthropic, &base).embed(&inputs).await.unwrap_err();
    assert!(matches!(err, LlmError::Request(_)), "{err}");
    assert_eq!(fake.requests.lock().unwrap().len(), 2, "Anthropic is not asked");
}
