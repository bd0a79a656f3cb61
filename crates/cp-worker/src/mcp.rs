//! Model Context Protocol servers as tools, through the official SDK (`rmcp`): the run's
//! execution environment's `mcp_servers` and its `mcp` skills are connected when the run
//! starts (stdio servers start in the tool sandbox), their tools are offered as
//! `<server>_<tool>` (as `allowed_tools` allows), and each call goes to its server after the
//! policy check every tool gets. `${NAME}` in `env` and `headers` is the run's variable NAME;
//! a stdio server gets no other variable of the run.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use cp_llm::ToolSpec;
use rmcp::model::{CallToolRequestParams, ClientConfig, Implementation, ProtocolVersion};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Map, Value, json};

use crate::process::{ProcessGroup, base_env, cap_output};
use crate::sandbox::Sandbox;

/// How long connecting and listing a server's tools may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// One connected server, shared by its tools for the run; dropping the last tool closes it
/// (and stops a stdio server's process).
pub struct Server {
    name: String,
    client: RunningService<RoleClient, ClientConfig>,
    timeout: Duration,
    /// A stdio server's process group: what it started goes with it (rmcp kills only its
    /// direct child, which in the sandbox is not the server itself). Dropped after `client`.
    _group: Option<ProcessGroup>,
}

/// A server's tool: the server and the tool's own name there.
#[derive(Clone)]
pub struct McpTool {
    server: Arc<Server>,
    tool: String,
}

/// Where a server connects from.
pub struct Place<'a> {
    pub working_dir: Option<&'a str>,
    pub env: &'a BTreeMap<String, String>,
    pub sandbox: &'a Sandbox,
    pub allow_private_http: bool,
}

impl McpTool {
    /// Calls the tool; its text content (capped like a shell's output) and whether it failed.
    pub async fn run(&self, args: &Value) -> (String, bool) {
        let arguments = args.as_object().cloned().unwrap_or_default();
        let params = CallToolRequestParams::new(self.tool.clone()).with_arguments(arguments);
        let server = &self.server;
        let result = match tokio::time::timeout(server.timeout, server.client.call_tool(params)).await {
            Err(_) => {
                let why = format!(
                    "{} on MCP server {} timed out after {} s",
                    self.tool,
                    server.name,
                    server.timeout.as_secs()
                );
                return (why, true);
            }
            Ok(Err(e)) => return (format!("MCP server {}: {e}", server.name), true),
            Ok(Ok(result)) => result,
        };
        let mut parts: Vec<String> = result
            .content
            .iter()
            .map(|c| match c.as_text() {
                Some(t) => t.text.clone(),
                None => serde_json::to_string(c).unwrap_or_default(),
            })
            .collect();
        if parts.is_empty()
            && let Some(structured) = &result.structured_content
        {
            parts.push(structured.to_string());
        }
        let text = cap_output(parts.join("\n"));
        (text, result.is_error.unwrap_or(false))
    }
}

/// `${NAME}` in `text` replaced by the run's variable NAME; an unset one is an error.
fn substitute(text: &str, env: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("'{text}' has an unclosed ${{"))?;
        let name = &after[..end];
        let value = env
            .get(name)
            .ok_or_else(|| format!("the run has no variable {name} (named in the server's configuration)"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The string values of `config[key]`, substituted.
fn strings_of(config: &Value, key: &str, env: &BTreeMap<String, String>) -> Result<Vec<(String, String)>, String> {
    let Some(map) = config[key].as_object() else {
        return Ok(Vec::new());
    };
    map.iter()
        .map(|(k, v)| {
            let v = v.as_str().ok_or_else(|| format!("{key}.{k} must be a string"))?;
            Ok((k.clone(), substitute(v, env)?))
        })
        .collect()
}

fn client_config() -> ClientConfig {
    // Pinned to a revision with the initialize handshake every server speaks.
    ClientConfig::new(
        Default::default(),
        Implementation::new("kubiya-cp-worker", env!("CARGO_PKG_VERSION")),
    )
    .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
}

/// Connects to the server `name` configured by `config` (the reference's shape: `command`,
/// `args`, `env`, or `type: http|sse` with `url` and `headers`; plus `allowed_tools` and
/// `timeout`) and answers its tools as the agent's.
pub async fn connect(name: &str, config: &Value, place: &Place<'_>) -> Result<Vec<(ToolSpec, McpTool)>, String> {
    let kind = config["type"]
        .as_str()
        .unwrap_or(if config.get("url").is_some() { "http" } else { "stdio" });
    let connecting = async {
        match kind {
            "stdio" => {
                let command = config["command"].as_str().ok_or("a stdio server needs `command`")?;
                let mut cmd = place.sandbox.command(Path::new(command), place.working_dir, &[])?;
                let args = crate::config_strings(config, "args");
                // Only its own `env`: the run's other variables (secrets) are not the server's.
                cmd.args(args)
                    .envs(base_env())
                    .envs(strings_of(config, "env", place.env)?);
                let (transport, _) = TokioChildProcess::builder(cmd)
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("cannot start {command}: {e}"))?;
                let group = transport.id().map(ProcessGroup);
                let client = client_config().serve(transport).await.map_err(|e| e.to_string())?;
                Ok((client, group))
            }
            "http" | "sse" => {
                let url = substitute(config["url"].as_str().ok_or("an HTTP server needs `url`")?, place.env)?;
                cp_net::check_target(&url, place.allow_private_http).await?;
                let mut headers = reqwest::header::HeaderMap::new();
                for (k, v) in strings_of(config, "headers", place.env)? {
                    let k = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|e| format!("header {k}: {e}"))?;
                    let v = reqwest::header::HeaderValue::from_str(&v).map_err(|e| format!("header {k}: {e}"))?;
                    headers.insert(k, v);
                }
                let builder = reqwest::Client::builder()
                    .default_headers(headers)
                    .connect_timeout(Duration::from_secs(10))
                    .redirect(reqwest::redirect::Policy::none());
                let builder = if place.allow_private_http {
                    builder
                } else {
                    cp_net::public_only(builder)
                };
                let http = builder.build().map_err(|e| e.to_string())?;
                let transport = StreamableHttpClientTransport::with_client(
                    http,
                    StreamableHttpClientTransportConfig::with_uri(url),
                );
                let client = client_config().serve(transport).await.map_err(|e| e.to_string())?;
                Ok((client, None))
            }
            other => Err(format!("unknown MCP server type '{other}' (stdio, http or sse)")),
        }
    };
    let listing = async {
        let (client, group) = connecting.await?;
        let tools = client.list_all_tools().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((client, group, tools))
    };
    let (client, group, listed) = tokio::time::timeout(CONNECT_TIMEOUT, listing)
        .await
        .map_err(|_| format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))??;
    let allowed = crate::config_strings(config, "allowed_tools");
    let server = Arc::new(Server {
        name: name.to_string(),
        client,
        timeout: Duration::from_secs(config["timeout"].as_u64().unwrap_or(60).clamp(1, 600)),
        _group: group,
    });
    Ok(listed
        .into_iter()
        .filter(|t| allowed.is_empty() || allowed.iter().any(|a| *a == t.name))
        .map(|t| {
            let spec = ToolSpec {
                name: crate::tools::tool_name(&format!("{name}_{}", t.name)),
                description: t
                    .description
                    .as_deref()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{} from the MCP server {name}", t.name)),
                parameters: Value::Object(Map::clone(&t.input_schema)),
            };
            let tool = McpTool {
                server: server.clone(),
                tool: t.name.to_string(),
            };
            (spec, tool)
        })
        .collect())
}

/// The event that says a server could not be used (the run goes on without its tools).
pub fn unavailable(name: &str, error: &str) -> Value {
    json!({"server": name, "error": error})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_substituted_and_must_exist() {
        let env = BTreeMap::from([("TOKEN".to_string(), "s3cret".to_string())]);
        assert_eq!(substitute("Bearer ${TOKEN}", &env).unwrap(), "Bearer s3cret");
        assert_eq!(substitute("plain", &env).unwrap(), "plain");
        assert!(
            substitute("${MISSING}", &env)
                .unwrap_err()
                .contains("no variable MISSING")
        );
        assert!(substitute("${TOKEN", &env).unwrap_err().contains("unclosed"));
    }
}
