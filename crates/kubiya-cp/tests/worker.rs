//! The real `kubiya-cp serve` and the real `kubiya-cp worker` processes against a fake LLM
//! provider that speaks the OpenAI-compatible streaming format: an agent answers with streamed
//! chunks, calls its shell skill and answers with the output, a command outside the skill's
//! allow list is refused, and SIGTERM drains the worker and disconnects it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Json;
use axum::response::IntoResponse;
use reqwest::Method;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_kubiya-cp");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A chat-completions stream: text in chunks, or one tool call; then usage and `[DONE]`.
fn stream(text: Option<&str>, call: Option<(&str, Value)>) -> axum::response::Response {
    let chunk =
        |delta: Value, finish: Value| json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    let mut events = Vec::new();
    if let Some(t) = text {
        for piece in t.split_inclusive(' ') {
            events.push(chunk(json!({"content": piece}), Value::Null));
        }
        events.push(chunk(json!({}), json!("stop")));
    }
    if let Some((name, args)) = call {
        let args = args.to_string();
        let (a, b) = args.split_at(args.len() / 2);
        events.push(chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": name, "arguments": a}}]}), Value::Null));
        events.push(chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": b}}]}),
            Value::Null,
        ));
        events.push(chunk(json!({}), json!("tool_calls")));
    }
    events.push(json!({"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 7}}));
    let mut body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    ([("content-type", "text/event-stream")], body).into_response()
}

/// The fake model: answers a tool result with it, asks the shell to list a folder or to run
/// a refused command when told to, and otherwise says hello.
async fn chat(Json(body): Json<Value>) -> axum::response::Response {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.last().cloned().unwrap_or_default();
    if last["role"] == "tool" {
        return stream(
            Some(&format!(
                "The tool said: {}",
                last["content"].as_str().unwrap_or_default()
            )),
            None,
        );
    }
    let prompt = last["content"].as_str().unwrap_or_default();
    if let Some(dir) = prompt.strip_prefix("list files in ") {
        return stream(None, Some(("shell", json!({"command": format!("ls {dir}")}))));
    }
    if prompt.starts_with("read the password file") {
        return stream(None, Some(("shell", json!({"command": "cat /etc/passwd"}))));
    }
    stream(Some("Hello from the fake model"), None)
}

struct Api {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.call(Method::GET, path, None).await
    }

    async fn execute(&self, agent: &str, queue: &str, prompt: &str) -> Value {
        let e = self
            .post(
                &format!("/api/v1/agents/{agent}/execute"),
                json!({"prompt": prompt, "worker_queue_id": queue}),
            )
            .await;
        let id = e["execution_id"].as_str().unwrap().to_string();
        let started = Instant::now();
        loop {
            let x = self.get(&format!("/api/v1/executions/{id}")).await;
            if ["completed", "failed", "cancelled"].contains(&x["status"].as_str().unwrap()) {
                return x;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "not done in 20 s: {x}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn event_types(&self, id: &str) -> Vec<String> {
        let page = self.get(&format!("/api/v1/executions/{id}/events?limit=500")).await;
        let items = page["items"]
            .as_array()
            .or(page.as_array())
            .cloned()
            .unwrap_or_default();
        items
            .iter()
            .map(|e| e["type"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_worker_runs_agents_with_streaming_and_the_shell_skill() {
    // The fake provider.
    let llm = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let llm_url = format!("http://{}/v1", llm.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            llm,
            axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat)),
        )
        .await
        .unwrap()
    });

    // The server.
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let key = "kby_worker-test-bootstrap-key-0123456789";
    let server = Killed(
        Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data.path())
            .env_remove("DATABASE_URL")
            .env_remove("KUBIYA_CP_DATABASE_URL")
            .env("KUBIYA_CP_BOOTSTRAP_API_KEY", key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let api = Api {
        base: base.clone(),
        key: key.into(),
        http: reqwest::Client::new(),
    };
    let started = Instant::now();
    while reqwest::get(format!("{base}/api/ready"))
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(started.elapsed() < Duration::from_secs(15), "server not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    api.call(
        Method::PATCH,
        "/api/v1/organization/settings",
        Some(json!({"rate_limit_tier": "enterprise", "rate_limit_per_minute": 100000})),
    )
    .await;

    // A model on the fake provider, a shell skill that allows ls only, an agent, a queue.
    api.post("/api/v1/models", json!({"value": "fake/gpt-test", "label": "Fake", "provider": "openai", "provider_model": "gpt-test", "base_url": llm_url})).await;
    let skill = api
        .post(
            "/api/v1/skills",
            json!({"name": "shell", "type": "shell", "configuration": {"allowed_commands": ["ls"], "timeout": 10}}),
        )
        .await;
    let agent = api.post("/api/v1/agents", json!({"name": "lister", "model_id": "fake/gpt-test", "system_prompt": "You list files.", "skill_ids": [skill["id"]]})).await;
    let agent = agent["id"].as_str().unwrap().to_string();
    let envs = api.get("/api/v1/environments").await;
    let env = envs["items"][0]["id"].as_str().unwrap().to_string();
    let queue = api
        .post(
            &format!("/api/v1/environments/{env}/worker-queues"),
            json!({"name": "local"}),
        )
        .await;
    let queue = queue["id"].as_str().unwrap().to_string();
    let worker_key = api
        .post("/api/v1/api-keys", json!({"name": "worker", "role": "worker"}))
        .await;
    let worker_key = worker_key["key"].as_str().unwrap().to_string();

    // The worker, started the way `worker-command` prints it.
    let mut worker = Killed(
        Command::new(BIN)
            .args([
                "worker",
                "--queue-id",
                &queue,
                "--control-plane-url",
                &base,
                "--concurrency",
                "2",
            ])
            .env("KUBIYA_API_KEY", &worker_key)
            .env_remove("OPENAI_API_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // A streamed answer.
    let done = api.execute(&agent, &queue, "say hello").await;
    assert_eq!(
        (done["status"].as_str(), done["response"].as_str()),
        (Some("completed"), Some("Hello from the fake model")),
        "{done}"
    );
    assert_eq!(done["usage"]["prompt_tokens"], 30);
    let types = api.event_types(done["id"].as_str().unwrap()).await;
    assert!(types.iter().filter(|t| *t == "message_chunk").count() >= 3, "{types:?}");
    for t in ["run_started", "message", "done"] {
        assert!(types.iter().any(|x| x == t), "{t} missing from {types:?}");
    }

    // The shell skill: the model lists a folder and answers with what it saw.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("marker-file.txt"), "x").unwrap();
    let done = api
        .execute(&agent, &queue, &format!("list files in {}", dir.path().display()))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["response"].as_str().unwrap().contains("marker-file.txt"), "{done}");
    let types = api.event_types(done["id"].as_str().unwrap()).await;
    assert!(
        types.contains(&"tool_started".into()) && types.contains(&"tool_completed".into()),
        "{types:?}"
    );

    // A command outside the allow list never runs; the model is told why.
    let done = api.execute(&agent, &queue, "read the password file").await;
    assert_eq!(done["status"], "completed", "{done}");
    let response = done["response"].as_str().unwrap();
    assert!(
        response.contains("'cat' is not allowed") && !response.contains("root:"),
        "{response}"
    );

    // SIGTERM: the worker drains, disconnects and exits 0.
    let pid = worker.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = worker.0.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the worker did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    let workers = api.get(&format!("/api/v1/worker-queues/{queue}/workers")).await;
    let items = workers["items"]
        .as_array()
        .or(workers.as_array())
        .cloned()
        .unwrap_or_default();
    assert!(items.iter().all(|w| w["status"] == "disconnected"), "{workers}");
    drop(server);
}
