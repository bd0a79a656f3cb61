//! The real `kubiya-cp serve` and the real `kubiya-cp worker` processes against a fake LLM
//! provider that speaks the OpenAI-compatible and the Anthropic streaming formats: an agent
//! answers with streamed chunks, calls its shell skill and answers with the output, a command
//! outside the skill's allow list is refused, a file_system path out of its base directory is
//! refused, a destructive one is refused by a Rego policy
//! (blocking) or recorded (monitoring), a follow-up message continues the conversation, cancel
//! stops a running `sleep 30` within 2 s, and SIGTERM drains the worker and disconnects it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::Json;
use axum::response::IntoResponse;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::db::{BIN, Db, Killed, free_port};

on_both_backends!(
    a_real_worker_runs_agents_end_to_end,
    a_killed_worker_s_run_is_finished_by_another,
    tools_cannot_see_the_worker_and_admin_keys_are_warned,
    a_run_outlives_a_control_plane_restart,
);

/// Whether a fake provider already held back its first "slow job" answer.
type SlowedOnce = std::sync::Arc<std::sync::atomic::AtomicBool>;

/// A chat-completions stream: text in chunks, or tool calls (arguments in two fragments each);
/// then usage and `[DONE]`.
fn stream_calls(text: Option<&str>, calls: &[(&str, Value)]) -> axum::response::Response {
    let chunk =
        |delta: Value, finish: Value| json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    let mut events = Vec::new();
    if let Some(t) = text {
        for piece in t.split_inclusive(' ') {
            events.push(chunk(json!({"content": piece}), Value::Null));
        }
        events.push(chunk(json!({}), json!("stop")));
    }
    for (i, (name, args)) in calls.iter().enumerate() {
        let args = args.to_string();
        let (a, b) = args.split_at(args.len() / 2);
        let id = format!("call_{i}");
        events.push(chunk(json!({"tool_calls": [{"index": i, "id": id, "type": "function", "function": {"name": name, "arguments": a}}]}), Value::Null));
        events.push(chunk(
            json!({"tool_calls": [{"index": i, "function": {"arguments": b}}]}),
            Value::Null,
        ));
    }
    if !calls.is_empty() {
        events.push(chunk(json!({}), json!("tool_calls")));
    }
    events.push(json!({"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 7}}));
    let mut body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    ([("content-type", "text/event-stream")], body).into_response()
}

fn stream(text: Option<&str>, call: Option<(&str, Value)>) -> axum::response::Response {
    stream_calls(text, call.as_slice())
}

/// A streamed answer of `chunks`, `pause` apart.
fn slow_stream(chunks: Vec<String>, pause: Duration) -> axum::response::Response {
    let last = chunks.len() - 1;
    let chunks = futures::stream::iter(chunks.into_iter().enumerate()).then(move |(i, w)| async move {
        tokio::time::sleep(pause).await;
        let chunk = json!({"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": if i == last { json!("stop") } else { Value::Null }}]});
        let mut text = format!("data: {chunk}\n\n");
        if i == last {
            text.push_str("data: [DONE]\n\n");
        }
        Ok::<_, std::convert::Infallible>(text)
    });
    (
        [("content-type", "text/event-stream")],
        axum::body::Body::from_stream(chunks),
    )
        .into_response()
}

/// The fake model: answers a tool result with it, asks the shell to list a folder or to run
/// a refused command when told to, and otherwise says hello.
async fn chat(
    axum::extract::State(slowed): axum::extract::State<SlowedOnce>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.last().cloned().unwrap_or_default();
    // The task planner: a plan of two steps for the first two agents it was shown.
    if body["tools"][0]["function"]["name"] == "submit_plan" {
        return stream(None, Some(("submit_plan", crate::planning::plan_for(&last["content"]))));
    }
    let system = messages
        .first()
        .filter(|m| m["role"] == "system")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default();
    // A team: the coordinator delegates to both members, then reports what they said; each
    // member answers with its name.
    if system.contains("You coordinate a team") {
        let results: Vec<&str> = messages
            .iter()
            .filter(|m| m["role"] == "tool")
            .filter_map(|m| m["content"].as_str())
            .collect();
        if results.is_empty() {
            return stream_calls(
                None,
                &[
                    ("delegate_to_alpha", json!({"task": "report"})),
                    ("delegate_to_beta", json!({"task": "report"})),
                ],
            );
        }
        return stream(Some(&format!("Team says: {}", results.join(" | "))), None);
    }
    if let Some(name) = system.strip_prefix("You are member ") {
        return stream(Some(&format!("{name} reporting")), None);
    }
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
    // Six words, half a second apart: long enough to restart the control plane meanwhile.
    if prompt == "talk slowly" {
        let words = ["one ", "two ", "three ", "four ", "five ", "six "].map(String::from);
        return slow_stream(words.to_vec(), Duration::from_millis(500));
    }
    // Twelve chunks of 100 KiB, 200 ms apart: each post of events stays small, while the
    // whole answer is over the control plane's body limit (1 MiB).
    if prompt == "talk at length" {
        return slow_stream(vec!["x".repeat(100 << 10); 12], Duration::from_millis(200));
    }
    // The first worker to ask about the slow job waits forever (it will be killed meanwhile);
    // the next one gets the answer at once.
    if prompt == "slow job" {
        if !slowed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        return stream(Some("slow job done"), None);
    }
    if prompt == "what did you say?" {
        let said = messages
            .iter()
            .rev()
            .find(|m| m["role"] == "assistant")
            .and_then(|m| m["content"].as_str())
            .unwrap_or("nothing");
        return stream(Some(&format!("I said: {said}")), None);
    }
    // A plan's steps: the model says which step it did, and what it was given.
    if let Some(rest) = prompt.strip_prefix("You are doing one step of a plan") {
        let step = rest
            .split("The step: ")
            .nth(1)
            .and_then(|s| s.lines().next())
            .unwrap_or("?");
        let given = rest.split("this one depends on:\n").nth(1).unwrap_or("nothing");
        return stream(Some(&format!("did {step} after [{given}]")), None);
    }
    // The model says what its instructions hold (the context's knowledge, for one).
    if prompt == "recite your instructions" {
        return stream(Some(system), None);
    }
    // Workflow steps: the model answers with what it was asked to say.
    if let Some(text) = prompt.strip_prefix("say: ") {
        return stream(Some(text), None);
    }
    // Any tool, by name, with the arguments given as JSON.
    if let Some(call) = prompt.strip_prefix("call: ") {
        let (name, args) = call.split_once(' ').unwrap_or((call, "{}"));
        let args: Value = serde_json::from_str(args).expect("call: <tool> <JSON arguments>");
        return stream(None, Some((name, args)));
    }
    if prompt == "wipe the disk" {
        return stream(None, Some(("shell", json!({"command": "rm -rf /"}))));
    }
    if prompt == "peek outside" {
        return stream(
            None,
            Some((
                "files",
                json!({"operation": "read_file", "path": "../../../etc/passwd"}),
            )),
        );
    }
    if prompt == "take a nap" {
        return stream(None, Some(("shell", json!({"command": "sleep 30"}))));
    }
    if let Some(command) = prompt.strip_prefix("run: ") {
        return stream(None, Some(("open-shell", json!({"command": command}))));
    }
    if let Some(dir) = prompt.strip_prefix("list files in ") {
        return stream(None, Some(("shell", json!({"command": format!("ls {dir}")}))));
    }
    if prompt.starts_with("read the password file") {
        return stream(None, Some(("shell", json!({"command": "cat /etc/passwd"}))));
    }
    stream(Some("Hello from the fake model"), None)
}

/// The fake model in the Anthropic messages format: a streamed greeting with usage.
async fn messages(headers: axum::http::HeaderMap, Json(body): Json<Value>) -> axum::response::Response {
    assert_eq!(
        headers.get("x-api-key").and_then(|v| v.to_str().ok()),
        Some("sk-ant-fake")
    );
    let events = [
        (
            "message_start",
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 40, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Bonjour from "}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": body["model"].as_str().unwrap_or("?")}}),
        ),
        ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    let body: String = events
        .iter()
        .map(|(n, d)| format!("event: {n}\ndata: {d}\n\n"))
        .collect();
    ([("content-type", "text/event-stream")], body).into_response()
}

pub struct Api {
    pub base: String,
    pub key: String,
    pub http: reqwest::Client,
}

impl Api {
    /// A worker queue in the default environment; its id.
    pub async fn queue(&self, body: Value) -> String {
        let envs = self.get("/api/v1/environments").await;
        let env = envs["items"][0]["id"].as_str().unwrap().to_string();
        let queue = self
            .post(&format!("/api/v1/environments/{env}/worker-queues"), body)
            .await;
        queue["id"].as_str().unwrap().to_string()
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
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

    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> Value {
        self.call(Method::GET, path, None).await
    }

    /// Starts `prompt` on `agent` through `queue`; the execution's id.
    pub async fn start(&self, agent: &str, queue: &str, prompt: &str) -> String {
        let e = self
            .post(
                &format!("/api/v1/agents/{agent}/execute"),
                json!({"prompt": prompt, "worker_queue_id": queue}),
            )
            .await;
        e["execution_id"].as_str().unwrap().to_string()
    }

    /// `prompt` on `agent`, once its execution ended.
    pub async fn execute(&self, agent: &str, queue: &str, prompt: &str) -> Value {
        let id = self.start(agent, queue, prompt).await;
        self.execution_when(&id, Duration::from_secs(20), |x| {
            ["completed", "failed", "cancelled"].contains(&x["status"].as_str().unwrap_or_default())
        })
        .await
    }

    /// Execution `id` once `ready` holds for it; the test fails after `within`.
    pub async fn execution_when(&self, id: &str, within: Duration, ready: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let x = self.get(&format!("/api/v1/executions/{id}")).await;
            if ready(&x) {
                return x;
            }
            assert!(
                started.elapsed() < within,
                "execution {id} not as awaited in {within:?}: {x}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A Rego policy named `name`, attached to the whole organization.
    pub async fn attach_policy(&self, name: &str, rego: &str) {
        let p = self
            .post("/api/v1/policies", json!({"name": name, "policy_content": rego}))
            .await;
        self.post(
            "/api/v1/policies/associations",
            json!({"policy_id": p["id"], "entity_type": "organization", "entity_id": "default"}),
        )
        .await;
    }

    /// Returns once execution `id`'s stream (stored events first, then live ones) carries an
    /// event of `event_type`; the test fails after `within`.
    pub async fn until_event(&self, id: &str, event_type: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let mut stream = self
            .http
            .get(format!("{}/api/v1/executions/{id}/stream", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200, "the execution's stream");
        let wanted = format!("event: {event_type}\n");
        let mut seen = String::new();
        while !seen.contains(&wanted) {
            match tokio::time::timeout_at(deadline, stream.chunk()).await {
                Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(_) => panic!("the stream of {id} ended without {event_type}: {seen}"),
                Err(_) => panic!("no {event_type} from {id} in {within:?}: {seen}"),
            }
        }
    }

    /// Runs `prompt` on `agent`, cancels it once its tool started, and checks the run is
    /// `cancelled` within 2 s of the cancel.
    pub async fn cancel_during_tool(&self, agent: &str, queue: &str, prompt: &str) {
        let id = self.start(agent, queue, prompt).await;
        self.until_event(&id, "tool_started", Duration::from_secs(10)).await;
        let cancelled_at = Instant::now();
        self.post(&format!("/api/v1/executions/{id}/cancel"), json!({})).await;
        self.execution_when(&id, Duration::from_secs(2), |x| x["status"] == "cancelled")
            .await;
        assert!(cancelled_at.elapsed() < Duration::from_secs(2));
    }

    pub async fn event_types(&self, id: &str) -> Vec<String> {
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

/// The fake provider on a loopback port; its OpenAI-style base URL.
pub async fn fake_llm() -> String {
    fake_llm_with(SlowedOnce::default()).await
}

/// The fake provider, with `slowed` set once a worker asked it about the slow job.
async fn fake_llm_with(slowed: SlowedOnce) -> String {
    let llm = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", llm.local_addr().unwrap());
    tokio::spawn(async move {
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(chat))
            .route("/v1/messages", axum::routing::post(messages))
            .with_state(slowed);
        axum::serve(llm, app).await.unwrap()
    });
    url
}

/// `kubiya-cp serve` on a fresh database (SQLite, or a PostgreSQL schema), ready, with the
/// rate limit lifted.
pub async fn start_server(postgres: bool) -> (Killed, Api, Db) {
    let data = Db::new(postgres).await;
    let port = free_port();
    let server = serve_on(&data, port).await;
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        key: KEY.into(),
        http: reqwest::Client::new(),
    };
    api.call(
        Method::PATCH,
        "/api/v1/organization/settings",
        Some(json!({"rate_limit_tier": "enterprise", "rate_limit_per_minute": 100000})),
    )
    .await;
    (server, api, data)
}

/// The bootstrap admin key of the test servers.
const KEY: &str = "kby_worker-test-bootstrap-key-0123456789";

/// `kubiya-cp serve` on `data` and `port`, once it is ready.
pub async fn serve_on(data: &Db, port: u16) -> Killed {
    data.serve(port, Some(KEY)).await
}

async fn a_real_worker_runs_agents_end_to_end(postgres: bool) {
    let llm_url = fake_llm().await;

    let (server, api, _data) = start_server(postgres).await;

    // A model on the fake provider, a shell skill that allows ls and sleep only, an agent, a queue.
    api.post("/api/v1/models", json!({"value": "fake/gpt-test", "label": "Fake", "provider": "openai", "provider_model": "gpt-test", "base_url": llm_url, "pricing": {"input_per_1k": 1.0, "output_per_1k": 2.0}})).await;
    let skill = api
        .post(
            "/api/v1/skills",
            json!({"name": "shell", "type": "shell", "configuration": {"allowed_commands": ["ls", "sleep"], "timeout": 60}}),
        )
        .await;
    let sandbox = tempfile::tempdir().unwrap();
    let files = api
        .post(
            "/api/v1/skills",
            json!({"name": "files", "type": "file_system", "configuration": {"base_dir": sandbox.path()}}),
        )
        .await;
    let agent = api.post("/api/v1/agents", json!({"name": "lister", "model_id": "fake/gpt-test", "system_prompt": "You list files.", "skill_ids": [skill["id"], files["id"]]})).await;
    let agent = agent["id"].as_str().unwrap().to_string();
    let queue = api.queue(json!({"name": "local"})).await;
    let worker_key = api
        .post("/api/v1/api-keys", json!({"name": "worker", "role": "worker"}))
        .await;
    let worker_key = worker_key["key"].as_str().unwrap().to_string();

    // A stand-in for the Claude Code CLI on the worker's PATH, printing what the real one
    // prints in stream-json mode.
    // (Outside /tmp: the CLI starts in the sandbox, whose /tmp is its own.)
    let bin_dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let fake_claude = bin_dir.path().join("claude");
    // It asks the PreToolUse hook from its --settings before a destructive Bash use, and
    // reports whether the worker's key is in its environment.
    std::fs::write(&fake_claude, concat!(
        "#!/bin/sh\n",
        "prompt=\"$2\"\n",
        "while [ $# -gt 0 ]; do [ \"$1\" = --settings ] && settings=\"$2\"; shift; done\n",
        "hook=$(printf '%s' \"$settings\" | sed 's/.*\"command\":\"\\([^\"]*\\)\".*/\\1/')\n",
        "echo '{\"type\":\"system\",\"subtype\":\"init\"}'\n",
        "echo '{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"Looking\"},{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"Bash\",\"input\":{\"command\":\"ls\"}}]}}'\n",
        "printf '{\"type\":\"user\",\"message\":{\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"t1\",\"content\":\"a.txt keys:%s\",\"is_error\":false}]}}\\n' \"$(env | grep -c -e '^KUBIYA_API_KEY=' -e \"$WORKER_KEY_VALUE\")\"\n",
        "if why=$(echo '{\"hook_event_name\":\"PreToolUse\",\"tool_name\":\"Bash\",\"tool_input\":{\"command\":\"rm -rf /\"}}' | sh -c \"$hook\" 2>&1); then\n",
        "  out='ran rm'\n",
        "else\n",
        "  out=\"hook refused: $(echo \"$why\" | tr -d '\"\\\\')\"\n",
        "fi\n",
        "printf '{\"type\":\"user\",\"message\":{\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"t2\",\"content\":\"%s\",\"is_error\":true}]}}\\n' \"$out\"\n",
        "printf '{\"type\":\"result\",\"is_error\":false,\"result\":\"claude code did: %s\",\"usage\":{\"input_tokens\":11,\"output_tokens\":3}}\\n' \"$prompt\"\n",
    ).replace("$WORKER_KEY_VALUE", &worker_key)).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake_claude, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin_dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    // The worker, started with exactly the command `worker-command` prints.
    let printed = api.get(&format!("/api/v1/worker-queues/{queue}/worker-command")).await;
    let parts: Vec<String> = printed["command_parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert_eq!(parts[0], "kubiya-cp", "{printed}");
    // The key travels in the environment only: a command line is readable by any local user.
    assert!(!printed.to_string().contains("api-key"), "{printed}");
    let mut worker = Killed(
        Command::new(BIN)
            .args(&parts[1..])
            .args(["--concurrency", "2"])
            .env("KUBIYA_API_KEY", &worker_key)
            .env("PATH", &path)
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
    // Cost at the model's prices: (30 × 1.0 + 7 × 2.0) / 1000.
    assert!(
        (done["usage"]["cost_usd"].as_f64().unwrap() - 0.044).abs() < 1e-9,
        "{done}"
    );
    let types = api.event_types(done["id"].as_str().unwrap()).await;
    assert!(types.iter().filter(|t| *t == "message_chunk").count() >= 3, "{types:?}");
    for t in ["run_started", "message", "done"] {
        assert!(types.iter().any(|x| x == t), "{t} missing from {types:?}");
    }

    // The shell skill: the model lists a folder and answers with what it saw (outside /tmp:
    // tools get a private one).
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
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
        response.contains("'cat' is not in allowed_commands") && !response.contains("root:"),
        "{response}"
    );

    // The file_system skill refuses a path out of its base directory.
    let done = api.execute(&agent, &queue, "peek outside").await;
    let response = done["response"].as_str().unwrap();
    assert!(
        response.contains("leaves the base directory") && !response.contains("root:"),
        "{response}"
    );

    // A follow-up message continues the conversation.
    let first = api.execute(&agent, &queue, "say hello").await;
    let id = first["id"].as_str().unwrap().to_string();
    api.post(
        &format!("/api/v1/executions/{id}/message"),
        json!({"message": "what did you say?"}),
    )
    .await;
    let started = Instant::now();
    let followed = loop {
        let x = api.get(&format!("/api/v1/executions/{id}")).await;
        if x["status"] == "completed" && x["response"] != "Hello from the fake model" {
            break x;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no follow-up answer: {x}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(followed["response"], "I said: Hello from the fake model");

    // A destructive command is refused by a Rego policy before it reaches the shell
    // (blocking); in monitoring mode the decision is recorded, not enforced.
    let rego = include_str!("../../../../examples/policies/destructive_commands.rego");
    api.attach_policy("no-destructive", rego).await;
    let done = api.execute(&agent, &queue, "wipe the disk").await;
    let response = done["response"].as_str().unwrap();
    assert!(
        response.contains("blocked by policy: destructive command refused: rm -rf /"),
        "{response}"
    );
    let types = api.event_types(done["id"].as_str().unwrap()).await;
    assert!(types.contains(&"policy_decision".into()), "{types:?}");
    api.call(
        Method::PATCH,
        "/api/v1/organization/settings",
        Some(json!({"policy_enforcement": "monitoring"})),
    )
    .await;
    let done = api.execute(&agent, &queue, "wipe the disk").await;
    // Not blocked by the policy: the skill's allow list (ls, sleep) still refuses rm.
    assert!(
        done["response"]
            .as_str()
            .unwrap()
            .contains("'rm' is not in allowed_commands"),
        "{done}"
    );
    let log = api
        .get(&format!(
            "/api/v1/policies/decisions?execution_id={}",
            done["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        (
            log["items"][0]["allowed"].as_bool(),
            log["items"][0]["blocked"].as_bool()
        ),
        (Some(false), Some(false)),
        "{log}"
    );
    api.call(
        Method::PATCH,
        "/api/v1/organization/settings",
        Some(json!({"policy_enforcement": "blocking"})),
    )
    .await;

    // Cancel reaches the worker at once and stops the running `sleep 30`.
    api.cancel_during_tool(&agent, &queue, "take a nap").await;

    // The Anthropic format end to end, key from a secret.
    api.post(
        "/api/v1/secrets",
        json!({"name": "FAKE_ANTHROPIC_KEY", "value": "sk-ant-fake"}),
    )
    .await;
    api.post("/api/v1/models", json!({"value": "fake/claude-test", "label": "Fake Claude", "provider": "anthropic", "provider_model": "claude-test", "base_url": llm_url.trim_end_matches("/v1"), "api_key_secret": "FAKE_ANTHROPIC_KEY"})).await;
    let claude = api
        .post(
            "/api/v1/agents",
            json!({"name": "frenchie", "model_id": "fake/claude-test"}),
        )
        .await;
    let done = api.execute(claude["id"].as_str().unwrap(), &queue, "greet me").await;
    assert_eq!(
        (done["status"].as_str(), done["response"].as_str()),
        (Some("completed"), Some("Bonjour from claude-test")),
        "{done}"
    );
    assert_eq!(
        (
            done["usage"]["prompt_tokens"].as_i64(),
            done["usage"]["completion_tokens"].as_i64()
        ),
        (Some(40), Some(4))
    );

    // The claude_code runtime runs the CLI and maps its stream to events.
    let coder = api
        .post(
            "/api/v1/agents",
            json!({"name": "coder", "runtime": "claude_code", "model_id": "fake/claude-test"}),
        )
        .await;
    // Blocking again: the destructive-command policy must stop Claude Code's Bash use too.
    api.call(
        Method::PATCH,
        "/api/v1/organization/settings",
        Some(json!({"policy_enforcement": "blocking"})),
    )
    .await;
    let done = api.execute(coder["id"].as_str().unwrap(), &queue, "tidy up").await;
    assert_eq!(
        (done["status"].as_str(), done["response"].as_str()),
        (Some("completed"), Some("claude code did: tidy up")),
        "{done}"
    );
    assert_eq!(done["usage"]["prompt_tokens"], 11);
    let types = api.event_types(done["id"].as_str().unwrap()).await;
    for t in ["message_chunk", "tool_started", "tool_completed", "message"] {
        assert!(types.iter().any(|x| x == t), "{t} missing from {types:?}");
    }
    // Its hook asked the worker, which asked the policies: the use was blocked and reported;
    // the CLI had neither the worker's key variable nor its value.
    let events = api
        .get(&format!(
            "/api/v1/executions/{}/events?limit=500",
            done["id"].as_str().unwrap()
        ))
        .await
        .to_string();
    assert!(events.contains("policy_decision"), "{events}");
    assert!(
        events.contains("hook refused: Tool execution blocked by policy: destructive command refused: rm -rf /"),
        "{events}"
    );
    assert!(events.contains("a.txt keys:0"), "{events}");

    // A team delegates to its two members, each on its own loop, and reports their answers.
    let mut members = Vec::new();
    for name in ["alpha", "beta"] {
        let a = api
            .post(
                "/api/v1/agents",
                json!({"name": name, "model_id": "fake/gpt-test", "system_prompt": format!("You are member {name}")}),
            )
            .await;
        members.push(a["id"].as_str().unwrap().to_string());
    }
    let team = api.post("/api/v1/teams", json!({"name": "duo", "configuration": {"member_ids": members, "instructions": "Work together.", "llm": {"model": "fake/gpt-test"}, "max_rounds": 3}})).await;
    let team_id = team["id"].as_str().unwrap().to_string();
    let e = api
        .post(
            &format!("/api/v1/teams/{team_id}/execute"),
            json!({"prompt": "ask the team", "worker_queue_id": queue}),
        )
        .await;
    let id = e["execution_id"].as_str().unwrap().to_string();
    let done = api
        .execution_when(&id, Duration::from_secs(20), |x| {
            ["completed", "failed"].contains(&x["status"].as_str().unwrap_or_default())
        })
        .await;
    assert_eq!(
        done["response"], "Team says: alpha reporting | beta reporting",
        "{done}"
    );
    let page = api.get(&format!("/api/v1/executions/{id}/events?limit=500")).await;
    let items = page["items"]
        .as_array()
        .or(page.as_array())
        .cloned()
        .unwrap_or_default();
    let said: Vec<&str> = items
        .iter()
        .filter(|e| e["type"] == "member_message")
        .filter_map(|e| e["data"]["member_name"].as_str())
        .collect();
    assert_eq!(said, ["alpha", "beta"]);
    assert_eq!(
        done["usage"]["prompt_tokens"],
        4 * 30,
        "two coordinator turns and two members"
    );

    // An answer the control plane refuses (over its body limit) fails the run with the reason;
    // it is not left running.
    let done = api.execute(&agent, &queue, "talk at length").await;
    assert_eq!(done["status"], "failed", "{}", &done.to_string()[..500]);
    let error = done["error_message"].as_str().unwrap_or_default();
    assert!(error.contains("refused the run's result"), "{error}");
    assert!(error.contains("413"), "{error}");

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

/// A model named after `name` on the fake provider, an agent on it, a queue in the default
/// environment made from `queue`, and a worker key: the agent's id, the queue's id, the key.
pub async fn one_agent(api: &Api, llm_url: &str, name: &str, queue: Value) -> (String, String, String) {
    let model = format!("fake/{name}");
    api.post(
        "/api/v1/models",
        json!({"value": model, "label": name, "provider": "openai", "base_url": llm_url}),
    )
    .await;
    let agent = api
        .post("/api/v1/agents", json!({"name": name, "model_id": model}))
        .await;
    let queue = api.queue(queue).await;
    let key = api
        .post("/api/v1/api-keys", json!({"name": "w", "role": "worker"}))
        .await;
    let id = |v: &Value, k: &str| v[k].as_str().unwrap().to_string();
    (id(&agent, "id"), queue, id(&key, "key"))
}

pub fn spawn_worker(queue: &str, base: &str, key: &str) -> Killed {
    spawn_worker_with(queue, base, key, &[])
}

/// A worker with more flags (`--allow-private-http`, say).
pub fn spawn_worker_with(queue: &str, base: &str, key: &str, flags: &[&str]) -> Killed {
    Killed(
        Command::new(BIN)
            .args(["worker", "--queue-id", queue, "--control-plane-url", base])
            .args(flags)
            .env("KUBIYA_API_KEY", key)
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("KUBIYA_CP_TEST_SERVER_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap(),
    )
}

/// A worker process killed mid-run stops heartbeating; after its lease (3 heartbeat intervals)
/// the run goes back to the queue and another worker finishes it.
async fn a_killed_worker_s_run_is_finished_by_another(postgres: bool) {
    let slowed = SlowedOnce::default();
    let llm_url = fake_llm_with(slowed.clone()).await;
    let (_server, api, _data) = start_server(postgres).await;
    let (agent, queue, key) = one_agent(
        &api,
        &llm_url,
        "slowpoke",
        json!({"name": "fragile", "heartbeat_interval": 10}),
    )
    .await;

    let mut first = spawn_worker(&queue, &api.base, &key);
    let e = api
        .post(
            &format!("/api/v1/agents/{agent}/execute"),
            json!({"prompt": "slow job", "worker_queue_id": queue}),
        )
        .await;
    let id = e["execution_id"].as_str().unwrap().to_string();
    let held_by = api
        .execution_when(&id, Duration::from_secs(10), |x| x["status"] == "running")
        .await["worker_id"]
        .clone();
    // Killed once it is inside its model call: killed between the claim and that call, the
    // second worker would be the one the provider holds back.
    let asked = Instant::now();
    while !slowed.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "the first worker never asked the provider"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let _second = spawn_worker(&queue, &api.base, &key);
    let done = api
        .execution_when(&id, Duration::from_secs(60), |x| x["status"] == "completed")
        .await;
    assert_eq!(done["response"], "slow job done");
    assert_eq!(done["attempt"], 2, "{done}");
    // The second claim went to the other worker (its status event names it).
    let page = api.get(&format!("/api/v1/executions/{id}/events?limit=500")).await;
    let items = page["items"]
        .as_array()
        .or(page.as_array())
        .cloned()
        .unwrap_or_default();
    let claimed_by: Vec<Value> = items
        .iter()
        .filter(|e| e["type"] == "status" && e["data"]["status"] == "running")
        .map(|e| e["data"]["worker_id"].clone())
        .collect();
    assert_eq!(claimed_by.len(), 2, "{items:?}");
    assert_eq!(claimed_by[0], held_by);
    assert_ne!(claimed_by[1], held_by);
}

/// The control plane restarts while a run streams: the worker keeps running it, buffers its
/// events while nobody answers and sends them, in order, once the server is back.
async fn a_run_outlives_a_control_plane_restart(postgres: bool) {
    let llm_url = fake_llm().await;
    let (server, api, data) = start_server(postgres).await;
    let (agent, queue, key) = one_agent(&api, &llm_url, "chatty", json!({"name": "steady"})).await;
    let _worker = spawn_worker(&queue, &api.base, &key);
    let e = api
        .post(
            &format!("/api/v1/agents/{agent}/execute"),
            json!({"prompt": "talk slowly", "worker_queue_id": queue}),
        )
        .await;
    let id = e["execution_id"].as_str().unwrap().to_string();
    let started = Instant::now();
    while api.get(&format!("/api/v1/executions/{id}")).await["status"] != "running" {
        assert!(started.elapsed() < Duration::from_secs(10), "never claimed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Down for about a second and a half, mid-stream.
    let port: u16 = api.base.rsplit(':').next().unwrap().parse().unwrap();
    let pid = server.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    drop(server);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _server = serve_on(&data, port).await;
    // Killed while it handled one of the worker's event posts, the server leaves that post's
    // idempotency record "in progress": the worker's retries of it wait until the record
    // counts as abandoned (60 s), so the run ends within that bound, not at once.
    let done = api
        .execution_when(&id, Duration::from_secs(90), |x| x["status"] == "completed")
        .await;
    assert_eq!(done["response"], "one two three four five six ");
    let page = api.get(&format!("/api/v1/executions/{id}/events?limit=500")).await;
    let items = page["items"]
        .as_array()
        .or(page.as_array())
        .cloned()
        .unwrap_or_default();
    let seqs: Vec<i64> = items.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "gap-free");
    let streamed: String = items
        .iter()
        .filter(|e| e["type"] == "message_chunk")
        .filter_map(|e| e["data"]["content"].as_str())
        .collect();
    assert_eq!(streamed, "one two three four five six ", "every chunk, once, in order");
}

/// A shell tool cannot read the worker's key: not from its parent, not from process 1, not
/// with `ps e`. A worker started with an admin key says a worker key should be used.
async fn tools_cannot_see_the_worker_and_admin_keys_are_warned(postgres: bool) {
    let llm_url = fake_llm().await;
    let (_server, api, _data) = start_server(postgres).await;
    api.post(
        "/api/v1/models",
        json!({"value": "fake/snoop", "label": "snoop", "provider": "openai", "base_url": llm_url}),
    )
    .await;
    let shell = api
        .post(
            "/api/v1/skills",
            json!({"name": "open-shell", "type": "shell", "configuration": {}}),
        )
        .await;
    let agent = api
        .post(
            "/api/v1/agents",
            json!({"name": "snoop", "model_id": "fake/snoop", "skill_ids": [shell["id"]]}),
        )
        .await;
    let agent = agent["id"].as_str().unwrap().to_string();
    let queue = api.queue(json!({"name": "snoopq"})).await;

    // The admin key, in the worker's environment only.
    let mut child = Command::new(BIN)
        .args(["worker", "--queue-id", &queue, "--control-plane-url", &api.base])
        .env("KUBIYA_API_KEY", &api.key)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _worker = Killed(child);
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let warned = loop {
        match lines_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.contains("admin key") => break line,
            Ok(_) => {}
            Err(e) => panic!("no warning about the admin key: {e}"),
        }
    };
    assert!(warned.contains("worker key"), "{warned}");

    let done = api
        .execute(
            &agent,
            &queue,
            "run: { cat /proc/$PPID/environ; cat /proc/1/environ; ps e; cat /proc/*/environ; } | tr '\\0' ' '",
        )
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    let response = done["response"].as_str().unwrap();
    // The commands ran (their own environment is there) and the key is not.
    assert!(response.contains("PATH="), "{response}");
    assert!(
        !response.contains(&api.key),
        "the tool saw the worker's key: {response}"
    );
    assert!(!response.contains("KUBIYA_API_KEY"), "{response}");
}
