//! The http skill as a tool: requests to the skill's `allowed_hosts` only, with its methods
//! and timeout, the answer's status and body (capped) back to the model. Private, loopback and
//! link-local addresses are refused unless the worker's operator allows them
//! (`--allow-private-http`): the skill's author cannot.

use std::time::Duration;

use cp_types::skill::host_allowed;
use serde_json::{Value, json};

const MAX_BODY: usize = 32 * 1024;

#[derive(Debug, Clone)]
pub struct Http {
    allowed_hosts: Vec<String>,
    /// Upper-case; empty: every method.
    allowed_methods: Vec<String>,
    allow_private: bool,
    client: reqwest::Client,
}

impl Http {
    pub fn from_config(config: &Value, allow_private: bool) -> Http {
        let list = |key: &str| crate::config_strings(config, key);
        let timeout = Duration::from_secs(config["timeout"].as_u64().unwrap_or(30).clamp(1, 300));
        Http {
            allowed_hosts: list("allowed_hosts"),
            allowed_methods: list("allowed_methods").iter().map(|m| m.to_ascii_uppercase()).collect(),
            allow_private,
            client: {
                // Redirects could lead to a host outside the list: they are returned, not followed.
                let builder = reqwest::Client::builder()
                    .timeout(timeout)
                    .redirect(reqwest::redirect::Policy::none());
                // Connections go only to the public addresses the name resolved to.
                let builder = if allow_private {
                    builder
                } else {
                    cp_net::public_only(builder)
                };
                builder.build().unwrap_or_default()
            },
        }
    }

    pub fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "method": {"type": "string", "description": "GET, POST, …"},
                "url": {"type": "string"},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "body": {"type": "string"},
            },
            "required": ["url"],
        })
    }

    pub async fn run(&self, args: &Value) -> (String, bool) {
        let method = args["method"].as_str().unwrap_or("GET");
        let url = args["url"].as_str().unwrap_or_default();
        let headers: Vec<(&str, &str)> = args["headers"]
            .as_object()
            .map(|h| h.iter().filter_map(|(k, v)| Some((k.as_str(), v.as_str()?))).collect())
            .unwrap_or_default();
        match self.send(method, url, &headers, args["body"].as_str()).await {
            Ok((status, body)) => (format!("HTTP {status}\n{body}"), !(200..300).contains(&status)),
            Err(refused) => (refused, true),
        }
    }

    /// Sends one request under the tool's rules: the answer's status and (capped) body, or
    /// why it was refused or failed.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        let method = method.to_ascii_uppercase();
        let parsed = match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            _ => return Err(format!("'{url}' is not an http(s) URL")),
        };
        let host = parsed.host_str().unwrap_or_default();
        if !host_allowed(&self.allowed_hosts, host, parsed.port_or_known_default()) {
            return Err(format!("the host {host} is not in the skill's allowed_hosts"));
        }
        // IP literals never reach the client's resolver: this check covers them.
        if let Err(refused) = cp_net::check_target(parsed.as_str(), self.allow_private).await {
            return Err(format!("the request to {host} was refused: {refused}"));
        }
        if !self.allowed_methods.is_empty() && !self.allowed_methods.contains(&method) {
            return Err(format!(
                "the method {method} is not allowed by the skill's configuration"
            ));
        }
        let Ok(m) = reqwest::Method::from_bytes(method.as_bytes()) else {
            return Err(format!("'{method}' is not an HTTP method"));
        };
        let mut req = self.client.request(m, parsed);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.body(body.to_string());
        }
        match req.send().await {
            Err(e) => Err(format!("the request failed: {e}")),
            Ok(mut resp) => {
                let status = resp.status();
                // Read no more than the cap: a huge answer must not fill the worker's memory.
                let mut bytes = Vec::new();
                let mut truncated = false;
                while let Ok(Some(chunk)) = resp.chunk().await {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() > MAX_BODY {
                        truncated = true;
                        break;
                    }
                }
                let mut body = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_BODY)]).into_owned();
                if truncated {
                    body.push_str(&format!("\n[truncated to {MAX_BODY} bytes]"));
                }
                Ok((status.as_u16(), body))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-request HTTP server on loopback; its address.
    async fn answer_once() -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello")
                    .await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn private_addresses_only_when_the_operator_allows_them() {
        let addr = answer_once().await;
        let config = json!({"allowed_hosts": ["127.0.0.1", "localhost", "169.254.169.254"]});
        let tool = Http::from_config(&config, false);
        for url in [
            format!("http://127.0.0.1:{}/", addr.port()),
            format!("http://localhost:{}/", addr.port()),
            "http://169.254.169.254/latest/meta-data/".to_string(),
        ] {
            let (out, failed) = tool.run(&json!({"url": url})).await;
            assert!(failed && out.contains("private"), "{url}: {out}");
        }
        let open = Http::from_config(&config, true);
        let (out, failed) = open
            .run(&json!({"url": format!("http://127.0.0.1:{}/", addr.port())}))
            .await;
        assert_eq!((out.as_str(), failed), ("HTTP 200\nhello", false));
    }
}
