//! Claude Code's tool uses, decided by the control plane's policies like the default runtime's
//! tool calls. The CLI runs a `PreToolUse` hook (`kubiya-cp claude-hook`, inside the sandbox)
//! that asks this run's hook socket; the worker asks `POST /policies/enforce` with its own key
//! (which the hook never sees) and answers allow or deny. The socket is an abstract Unix
//! socket (reachable from the sandbox, which shares the network namespace) guarded by a
//! random token per run.

use std::os::linux::net::SocketAddrExt;

use cp_types::execution::Claim;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::agent::{Emitter, policy_refusal};
use crate::client::ControlPlane;

/// The variables that tell the hook where to ask.
pub const SOCKET_VAR: &str = "KUBIYA_HOOK_SOCKET";
pub const TOKEN_VAR: &str = "KUBIYA_HOOK_TOKEN";

/// One run's hook socket.
pub struct HookSocket {
    listener: tokio::net::UnixListener,
    pub name: String,
    pub token: String,
}

impl HookSocket {
    pub fn bind(execution: uuid::Uuid) -> std::io::Result<HookSocket> {
        let token = random_hex()?;
        let name = format!("kubiya-cp-hook-{execution}-{}", &token[..8]);
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        let std = std::os::unix::net::UnixListener::bind_addr(&addr)?;
        std.set_nonblocking(true)?;
        Ok(HookSocket {
            listener: tokio::net::UnixListener::from_std(std)?,
            name,
            token,
        })
    }

    /// Answers the hook's questions until dropped: one JSON line in
    /// (`token`, `tool_name`, `tool_input`), one out (`allow`, `reason`).
    pub async fn serve(&self, cp: &ControlPlane, claim: &Claim, emit: &Emitter) {
        loop {
            let Ok((stream, _)) = self.listener.accept().await else {
                continue;
            };
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read);
            let read_line = reader.read_line(&mut line);
            if !matches!(
                tokio::time::timeout(std::time::Duration::from_secs(10), read_line).await,
                Ok(Ok(_))
            ) {
                continue;
            }
            let answer = self.decide(cp, claim, emit, &line).await;
            let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
        }
    }

    async fn decide(&self, cp: &ControlPlane, claim: &Claim, emit: &Emitter, line: &str) -> Value {
        let Ok(ask) = serde_json::from_str::<Value>(line) else {
            return json!({"allow": false, "reason": "the hook's question is not JSON"});
        };
        if ask["token"].as_str() != Some(self.token.as_str()) {
            return json!({"allow": false, "reason": "wrong hook token"});
        }
        let tool = ask["tool_name"].as_str().unwrap_or("unknown");
        let input = &ask["tool_input"];
        match policy_refusal(cp, claim, emit, tool, input, risk(tool, input), &|d| d).await {
            Some(reason) => json!({"allow": false, "reason": reason}),
            None => json!({"allow": true}),
        }
    }
}

/// The risk level of a Claude Code tool use, as the default runtime rates its own tools.
fn risk(tool: &str, input: &Value) -> &'static str {
    match tool {
        "Bash" => {
            let command = input["command"].as_str().unwrap_or_default();
            let critical = ["rm -rf", "mkfs", "dd if=", "> /dev/", "format "];
            if critical.iter().any(|c| command.contains(c)) {
                "critical"
            } else {
                "high"
            }
        }
        "Read" | "Glob" | "Grep" | "LS" => "low",
        _ => "medium",
    }
}

/// Thirty-two random bytes from the kernel, in hex.
fn random_hex() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    // SAFETY: getrandom(2) writes at most `bytes.len()` bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(std::io::Error::other("getrandom returned too few bytes"));
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The hook's side (`kubiya-cp claude-hook`): Claude Code's `PreToolUse` JSON in, the decision
/// out; `Err` with the reason to block (the caller exits with code 2 and the reason on stderr).
/// Anything but an explicit allow blocks.
pub fn ask(stdin: &str) -> Result<(), String> {
    let event: Value = serde_json::from_str(stdin).map_err(|e| format!("the hook input is not JSON: {e}"))?;
    let name = std::env::var(SOCKET_VAR).map_err(|_| format!("{SOCKET_VAR} is not set"))?;
    let token = std::env::var(TOKEN_VAR).map_err(|_| format!("{TOKEN_VAR} is not set"))?;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| format!("bad hook socket: {e}"))?;
    let mut stream = std::os::unix::net::UnixStream::connect_addr(&addr)
        .map_err(|e| format!("the worker's policy check is unreachable: {e}"))?;
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(30)));
    let question = json!({"token": token, "tool_name": event["tool_name"], "tool_input": event["tool_input"]});
    use std::io::{BufRead, Write};
    stream
        .write_all(format!("{question}\n").as_bytes())
        .map_err(|e| format!("cannot ask the worker: {e}"))?;
    let mut line = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("no answer from the worker: {e}"))?;
    let answer: Value = serde_json::from_str(&line).map_err(|_| "the worker's answer is not JSON".to_string())?;
    if answer["allow"] == true {
        Ok(())
    } else {
        Err(answer["reason"].as_str().unwrap_or("blocked").to_string())
    }
}
