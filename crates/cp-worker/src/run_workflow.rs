//! The workflow_executor skill: `run_workflow` starts one of the organization's workflows (the
//! skill's `workflow`, its inline `workflow_definition`, or the one the model names) through
//! the control plane, linked to the calling execution, and waits for it within the skill's
//! `timeout`; the answer is the run's status and each step's output.

use std::time::Duration;

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::client::ControlPlane;

/// Longest single wait asked of the control plane (it answers at the run's end or then).
const WAIT_STEP: Duration = Duration::from_secs(30);

/// Which workflow the tool runs.
#[derive(Debug, Clone)]
enum Target {
    /// An id or a name.
    Named(String),
    Inline(Value),
    /// The model names it in each call.
    Chosen,
}

/// Not `Debug`: it holds the worker's key.
#[derive(Clone)]
pub struct RunWorkflow {
    cp: ControlPlane,
    execution: Uuid,
    target: Target,
    timeout: Duration,
}

impl RunWorkflow {
    pub fn from_config(config: &Value, cp: ControlPlane, execution: Uuid) -> RunWorkflow {
        let inline = config["workflow_definition"]
            .as_str()
            .and_then(|text| serde_json::from_str::<Value>(text).ok());
        let target = match (config["workflow"].as_str(), inline) {
            (Some(named), _) => Target::Named(named.to_string()),
            (None, Some(definition)) => Target::Inline(definition),
            (None, None) => Target::Chosen,
        };
        RunWorkflow {
            cp,
            execution,
            target,
            timeout: Duration::from_secs(config["timeout"].as_u64().unwrap_or(3600).max(1)),
        }
    }

    pub fn parameters(&self) -> Value {
        let mut properties = Map::new();
        properties.insert(
            "inputs".into(),
            json!({"type": "object", "description": "The workflow's inputs"}),
        );
        let mut required = Vec::new();
        if matches!(self.target, Target::Chosen) {
            properties.insert(
                "workflow".into(),
                json!({"type": "string", "description": "The id or name of one of the organization's workflows"}),
            );
            required.push("workflow");
        }
        json!({"type": "object", "properties": properties, "required": required})
    }

    pub async fn run(&self, args: &Value) -> (String, bool) {
        match self.start_and_wait(args).await {
            Ok(run) => {
                let failed = run["status"] != "completed";
                (answer(&run), failed)
            }
            Err(e) => (e, true),
        }
    }

    async fn start_and_wait(&self, args: &Value) -> Result<Value, String> {
        let id = Uuid::now_v7();
        let mut body = json!({"id": id, "inputs": args.get("inputs").cloned().unwrap_or_else(|| json!({}))});
        match &self.target {
            Target::Named(named) => body["workflow"] = json!(named),
            Target::Inline(definition) => body["definition"] = definition.clone(),
            Target::Chosen => match args["workflow"].as_str() {
                Some(named) => body["workflow"] = json!(named),
                None => return Err("run_workflow needs `workflow` (an id or a name)".into()),
            },
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        // The run's id is ours: a start whose answer was lost is sent again safely.
        let mut delay = Duration::from_millis(200);
        loop {
            match self.cp.start_workflow_run(self.execution, &body).await {
                Ok(_) => break,
                Err(e) if e.is_transient() && tokio::time::Instant::now() + delay < deadline => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(format!("the workflow could not be started: {e}")),
            }
        }
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let run = match self
                .cp
                .await_workflow_run(self.execution, id, left.min(WAIT_STEP))
                .await
            {
                Ok(run) => run,
                Err(e) if e.is_transient() && !left.is_zero() => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Err(e) => return Err(format!("workflow run {id}: {e}")),
            };
            let status = run["status"].as_str().unwrap_or_default();
            if matches!(status, "completed" | "failed" | "cancelled") {
                return Ok(run);
            }
            if left.is_zero() {
                return Err(format!(
                    "workflow run {id} did not end within the skill's timeout ({} s); it is {status}",
                    self.timeout.as_secs()
                ));
            }
        }
    }
}

/// The run as the model reads it: its id, status, error, and each step's output.
fn answer(run: &Value) -> String {
    let outputs: Map<String, Value> = run["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .filter_map(|s| Some((s["step_id"].as_str()?.to_string(), s["output"].clone())))
                .collect()
        })
        .unwrap_or_default();
    let mut out = json!({
        "workflow_run_id": run["id"], "workflow": run["workflow_name"], "status": run["status"], "outputs": outputs,
    });
    if let Some(e) = run["error"].as_str() {
        out["error"] = json!(e);
    }
    out.to_string()
}
