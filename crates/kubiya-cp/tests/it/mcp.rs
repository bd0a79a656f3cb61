//! Agents use Model Context Protocol servers on a real worker: a stdio server written for the
//! tests (Python, standard library) named by the execution environment's `mcp_servers` and by
//! an `mcp` skill, and a streamable-HTTP server (rmcp's own) behind a bearer token that comes
//! from the run's secret. Each server's tools are offered as `<server>_<tool>`, calls pass the
//! policy check, and `allowed_tools` limits what the agent gets.

use std::sync::Arc;

use reqwest::Method;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};

use crate::worker::{Api, fake_llm, one_agent, spawn_worker_with, start_server};

on_both_backends!(agents_call_the_tools_of_mcp_servers);

/// The HTTP test server: `shout {text}` answers the text in capitals.
#[derive(Clone)]
struct Shouter;

impl ServerHandler for Shouter {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]});
        let Value::Object(schema) = schema else { unreachable!() };
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "shout",
            "Answers the text in capitals",
            Arc::new(schema),
        )]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let text = request
            .arguments
            .and_then(|a| a.get("text").and_then(Value::as_str).map(str::to_uppercase));
        Ok(CallToolResult::success(vec![ContentBlock::text(text.unwrap_or_default())]).into())
    }
}

/// The HTTP server on a loopback port, refusing requests without `Bearer <token>`; its URL.
async fn shouter(token: &'static str) -> String {
    let service: StreamableHttpService<Shouter, LocalSessionManager> = StreamableHttpService::new(
        || Ok(Shouter),
        Default::default(),
        StreamableHttpServerConfig::default(),
    );
    let guard = axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok());
            if auth != Some(&format!("Bearer {token}")) {
                return axum::response::IntoResponse::into_response(axum::http::StatusCode::UNAUTHORIZED);
            }
            next.run(req).await
        },
    );
    let app = axum::Router::new().nest_service("/mcp", service).layer(guard);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn said(api: &Api, agent: &str, queue: &str, tool: &str, args: Value) -> (String, Vec<Value>) {
    let done = api.execute(agent, queue, &format!("call: {tool} {args}")).await;
    assert_eq!(done["status"], "completed", "{done}");
    let page = api
        .get(&format!(
            "/api/v1/executions/{}/events?limit=500",
            done["id"].as_str().unwrap()
        ))
        .await;
    let events = page["items"].as_array().cloned().unwrap_or_default();
    (done["response"].as_str().unwrap_or_default().to_string(), events)
}

async fn agents_call_the_tools_of_mcp_servers(postgres: bool) {
    let llm_url = fake_llm().await;
    let (_server, api, _data) = start_server(postgres).await;
    let (agent, queue, key) = one_agent(&api, &llm_url, "mcp-user", json!({"name": "mcp"})).await;
    // Outside /tmp: stdio servers start in the tool sandbox, whose /tmp is its own.
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let script = dir.path().join("mcp_stdio_server.py");
    std::fs::write(&script, include_str!("../fixtures/mcp_stdio_server.py")).unwrap();
    let url = shouter("let-me-in").await;

    api.post("/api/v1/secrets", json!({"name": "MCP_TOKEN", "value": "s3cret-token"}))
        .await;
    api.post("/api/v1/secrets", json!({"name": "SHOUT_TOKEN", "value": "let-me-in"}))
        .await;
    // The environment's servers: stdio (with a token from a secret) and one that cannot start.
    api.call(
        Method::PATCH,
        &format!("/api/v1/agents/{agent}"),
        Some(json!({"execution_environment": {
            "secrets": ["MCP_TOKEN", "SHOUT_TOKEN"],
            "mcp_servers": {
                "calc": {"command": "python3", "args": [script], "env": {"MCP_TOKEN": "${MCP_TOKEN}"}},
                "ghost": {"command": "/nowhere/mcp-server"},
            },
        }})),
    )
    .await;
    // Skills: the same stdio server limited to echo, and the HTTP one.
    let mut ids = Vec::new();
    for skill in [
        json!({"name": "limited", "type": "mcp", "configuration": {"command": "python3", "args": [script], "allowed_tools": ["echo"]}}),
        json!({"name": "loud", "type": "mcp", "configuration": {"type": "http", "url": url, "headers": {"Authorization": "Bearer ${SHOUT_TOKEN}"}}}),
    ] {
        ids.push(api.post("/api/v1/skills", skill).await["id"].clone());
    }
    api.call(
        Method::PATCH,
        &format!("/api/v1/agents/{agent}"),
        Some(json!({"skill_ids": ids})),
    )
    .await;
    let _worker = spawn_worker_with(&queue, &api.base, &key, &["--allow-private-http"]);

    let (answer, events) = said(&api, &agent, &queue, "calc_add", json!({"a": 2, "b": 40})).await;
    assert_eq!(answer, "The tool said: 42");
    for t in ["tool_started", "tool_completed"] {
        assert!(
            events
                .iter()
                .any(|e| e["type"] == t && e["data"]["tool_name"] == "calc_add"),
            "{events:?}"
        );
    }
    // The server that cannot start is reported; the run went on without it.
    let ghost = events
        .iter()
        .find(|e| e["type"] == "mcp_server_unavailable")
        .expect("ghost reported");
    assert_eq!(ghost["data"]["server"], "ghost", "{ghost}");
    // A tool's own error comes back as an error result.
    let (answer, _) = said(&api, &agent, &queue, "calc_add", json!({"a": "two", "b": 1})).await;
    assert_eq!(answer, "The tool said: a and b must be numbers");
    // The server got the secret through its env.
    let (answer, _) = said(&api, &agent, &queue, "calc_token", json!({})).await;
    assert_eq!(answer, "The tool said: s3cret-token");
    // ... and nothing else of the run (not the other secret) nor of the worker (not its key).
    // (A python3 shim such as pyenv's may add its own.)
    let (answer, _) = said(&api, &agent, &queue, "calc_env_names", json!({})).await;
    let names: Vec<&str> = answer.trim_start_matches("The tool said: ").split(' ').collect();
    assert!(names.contains(&"MCP_TOKEN") && names.contains(&"PATH"), "{names:?}");
    for leaked in ["SHOUT_TOKEN", "KUBIYA_API_KEY", "OPENAI_API_KEY", "CARGO_MANIFEST_DIR"] {
        assert!(!names.contains(&leaked), "{leaked} reached the server: {names:?}");
    }
    // allowed_tools: the skill's server offers echo only.
    let (answer, _) = said(&api, &agent, &queue, "limited_echo", json!({"text": "hi"})).await;
    assert_eq!(answer, "The tool said: echo: hi");
    let (answer, _) = said(&api, &agent, &queue, "limited_add", json!({"a": 1, "b": 1})).await;
    assert_eq!(answer, "The tool said: there is no tool named limited_add");
    // Streamable HTTP with the bearer token from the run's secret.
    let (answer, _) = said(&api, &agent, &queue, "loud_shout", json!({"text": "quiet please"})).await;
    assert_eq!(answer, "The tool said: QUIET PLEASE");

    // The policy check comes first, as for every tool.
    let rego = "package kubiya.tools.no_shouting\n\ndeny contains \"no shouting\" if {\n\tinput.tool.name == \"loud_shout\"\n}\n";
    api.attach_policy("no-shouting", rego).await;
    let (answer, _) = said(&api, &agent, &queue, "loud_shout", json!({"text": "x"})).await;
    assert!(answer.contains("blocked by policy: no shouting"), "{answer}");
    // Starting a server is decided first too: refused, its tools are not there.
    let rego = "package kubiya.tools.no_limits\n\ndeny contains \"not that server\" if {\n\tinput.tool.name == \"mcp_server\"\n\tinput.tool.arguments.server == \"limited\"\n}\n";
    api.attach_policy("no-limited", rego).await;
    let (answer, events) = said(&api, &agent, &queue, "limited_echo", json!({"text": "hi"})).await;
    assert_eq!(answer, "The tool said: there is no tool named limited_echo");
    let refused = events
        .iter()
        .find(|e| e["type"] == "mcp_server_unavailable" && e["data"]["server"] == "limited")
        .expect("the refused server is reported");
    assert!(
        refused["data"]["error"].as_str().unwrap().contains("not that server"),
        "{refused}"
    );
}
