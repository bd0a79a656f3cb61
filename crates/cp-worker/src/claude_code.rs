//! The `claude_code` runtime: the Claude Code CLI (`claude`) in headless streaming-JSON mode,
//! in the run's working directory with its env vars, its stream mapped to our events.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use cp_types::execution::{Claim, FailureKind, Usage};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::agent::{Emitter, RunError};
use crate::client::ControlPlane;
use crate::hook::{self, HookSocket};
use crate::sandbox::Sandbox;

/// The message of a worker host without the CLI.
pub const MISSING: &str = "claude_code runtime needs the `claude` CLI on the worker host";

/// The `claude` executable on `path` (a `PATH`-style list), if any.
pub fn find_cli(path: &str) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join("claude"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs the prompt (the conversation's last user message) through the CLI.
pub async fn run(
    cp: &ControlPlane,
    claim: &Claim,
    emit: &Emitter,
    sandbox: &Sandbox,
) -> Result<(String, Usage), RunError> {
    let cli = find_cli(&std::env::var("PATH").unwrap_or_default())
        .ok_or_else(|| RunError::NeedsOperator(FailureKind::RuntimeUnavailable, MISSING.into()))?;
    let prompt = claim
        .history
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.content.clone())
        .unwrap_or_else(|| claim.execution.prompt.clone());
    // Only the run's variables, the model's key and URL and a usable PATH and HOME: nothing of
    // the worker's own environment (its API key above all).
    // Every tool use is decided by the control plane's policies, through a PreToolUse hook
    // that runs this same executable (`kubiya-cp claude-hook`).
    let hook = HookSocket::bind(claim.execution.id)
        .map_err(|e| RunError::Fatal(format!("cannot open the policy hook's socket: {e}")))?;
    let exe =
        std::env::current_exe().map_err(|e| RunError::Fatal(format!("cannot find the worker's executable: {e}")))?;
    let settings = json!({"hooks": {"PreToolUse": [{"matcher": "*", "hooks": [{
        "type": "command",
        "command": format!("'{}' claude-hook", exe.display().to_string().replace('\'', "'\\''")),
    }]}]}});
    let mut cmd = sandbox
        .command(&cli, claim.environment.working_dir.as_deref(), &[&cli, &exe])
        .map_err(RunError::Fatal)?;
    cmd.args(["-p", &prompt, "--output-format", "stream-json", "--verbose"])
        .envs(crate::process::tool_env(&claim.env_vars))
        .env(hook::SOCKET_VAR, &hook.name)
        .env(hook::TOKEN_VAR, &hook.token)
        .args(["--settings", &settings.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(system) = &claim.system_prompt {
        cmd.args(["--append-system-prompt", system]);
    }
    if let Some(m) = &claim.model {
        cmd.args(["--model", &m.provider_model]);
        if let Some(key) = &m.api_key {
            cmd.env("ANTHROPIC_API_KEY", key);
        }
        if let Some(url) = &m.base_url {
            cmd.env("ANTHROPIC_BASE_URL", url);
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| RunError::Fatal(format!("cannot start the claude CLI: {e}")))?;
    let _group = child.id().map(crate::process::ProcessGroup);
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    emit.emit("run_started", json!({"runtime": "claude_code"}));
    let mut answer: Option<(String, Usage, bool)> = None;
    let serving = hook.serve(cp, claim, emit);
    tokio::pin!(serving);
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line,
            _ = &mut serving => continue,
        };
        let Ok(Some(line)) = line else {
            break;
        };
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        match msg["type"].as_str() {
            Some("assistant") => {
                for block in msg["message"]["content"].as_array().into_iter().flatten() {
                    match block["type"].as_str() {
                        Some("text") => {
                            emit.emit("message_chunk", json!({"role": "assistant", "content": block["text"]}))
                        }
                        Some("thinking") => emit.emit("thinking", json!({"content": block["thinking"]})),
                        Some("tool_use") => emit.emit(
                            "tool_started",
                            json!({"tool_name": block["name"], "tool_input": block["input"], "call_id": block["id"]}),
                        ),
                        _ => {}
                    }
                }
            }
            Some("user") => {
                for block in msg["message"]["content"].as_array().into_iter().flatten() {
                    if block["type"] == "tool_result" {
                        emit.emit(
                            "tool_completed",
                            json!({"call_id": block["tool_use_id"], "tool_output": block["content"], "is_error": block["is_error"]}),
                        );
                    }
                }
            }
            Some("result") => {
                let u = &msg["usage"];
                let prompt = u["input_tokens"].as_i64().unwrap_or(0);
                let completion = u["output_tokens"].as_i64().unwrap_or(0);
                let usage = Usage {
                    prompt_tokens: prompt,
                    completion_tokens: completion,
                    total_tokens: prompt + completion,
                    cost_usd: msg["total_cost_usd"].as_f64(),
                };
                let text = msg["result"].as_str().unwrap_or_default().to_string();
                answer = Some((text, usage, msg["is_error"] == true));
            }
            _ => {}
        }
    }
    let status = child.wait().await;
    match answer {
        Some((text, _, true)) => Err(RunError::Fatal(format!("claude reported an error: {text}"))),
        Some((text, usage, false)) => {
            emit.emit("message", json!({"role": "assistant", "content": text}));
            emit.flush().await?;
            Ok((text, usage))
        }
        None => Err(RunError::Fatal(format!(
            "the claude CLI ended without a result ({})",
            status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_is_looked_up_on_the_path() {
        assert_eq!(find_cli(""), None);
        let dir = std::env::temp_dir().join(format!("kcp-claude-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cli = dir.join("claude");
        std::fs::write(&cli, "#!/bin/sh\n").unwrap();
        assert_eq!(find_cli(dir.to_str().unwrap()), None, "not executable yet");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_cli(&format!("/nonexistent:{}", dir.display())), Some(cli));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
