//! A workflow's `command` and `http` steps: no model, just the work, under the same rules as
//! the shell and http tools (the worker's sandbox; private addresses only when the operator
//! allows them). The output is what the command printed or the response's body.

use std::collections::BTreeMap;

use cp_types::execution::{Claim, Usage};
use cp_types::workflow_run::StepWork;
use serde_json::json;

use crate::ToolSettings;
use crate::agent::RunError;
use crate::http::Http;
use crate::shell::Shell;

/// Longest a command step may run (its step's `timeout_seconds` usually ends it sooner).
const COMMAND_TIMEOUT_SECONDS: u64 = 3600;

/// Runs the step's work; `None` when the claim is an agent's or team's run.
pub async fn run(claim: &Claim, tools: &ToolSettings) -> Option<Result<(String, Usage), RunError>> {
    let done = match claim.step.as_ref()? {
        StepWork::Command { command } => {
            let shell = Shell::from_config(
                &json!({"timeout": COMMAND_TIMEOUT_SECONDS}),
                claim.env_vars.clone(),
                None,
                tools.sandbox.clone(),
            );
            match shell.run(command).await {
                // `echo 42` means 42, not "42\n".
                (out, false) => Ok(out.trim_end_matches(['\n', '\r']).to_owned()),
                (out, true) => Err(RunError::Fatal(out)),
            }
        }
        StepWork::Http {
            method,
            url,
            headers,
            body,
        } => send(method, url, headers, body.as_deref(), tools).await,
        StepWork::Agent | StepWork::Team => return None,
    };
    Some(done.map(|out| (out, Usage::default())))
}

async fn send(
    method: &str,
    url: &str,
    headers: &BTreeMap<String, String>,
    body: Option<&str>,
    tools: &ToolSettings,
) -> Result<String, RunError> {
    let client = Http::from_config(&json!({"timeout": 300}), tools.allow_private_http);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    match client.send(method, url, &headers, body).await {
        Ok((status, body)) if (200..300).contains(&status) => Ok(body),
        Ok((status, body)) if status >= 500 || status == 429 => {
            Err(RunError::Retryable(format!("HTTP {status}: {body:.500}")))
        }
        Ok((status, body)) => Err(RunError::Fatal(format!("HTTP {status}: {body:.500}"))),
        Err(e) => Err(RunError::Fatal(e)),
    }
}
