//! The worker protocol over HTTP (API §5): register, heartbeat, long-poll, events, complete,
//! fail, disconnect, and the policy decision before each tool call.

use std::time::Duration;

use cp_types::execution::{FailureKind, PollAnswer, Usage};
use cp_types::worker::{HeartbeatAck, WorkerRegistration};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

/// Why a call to the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer (connection refused, timeout): worth retrying later.
    #[error("the control plane is unreachable: {0}")]
    Unreachable(String),
    /// An answer with an error status.
    #[error("the control plane answered {status}: {message}")]
    Refused {
        status: u16,
        message: String,
        /// The answer said when to try again (`Retry-After`): a refusal for now only.
        retry_after: bool,
    },
}

impl CallError {
    /// Worth trying again later: no answer, or 408, 429, 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Unreachable(_) => true,
            CallError::Refused {
                status, retry_after, ..
            } => *retry_after || matches!(status, 408 | 429 | 500..=599),
        }
    }

    /// The run is no longer this worker's: another attempt holds it, or it ended. A 409 that
    /// says when to retry (the same request is still in progress) is not that.
    pub fn lease_gone(&self) -> bool {
        !self.is_transient() && matches!(self.status(), Some(404 | 409))
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Refused { status, .. } => Some(*status),
            CallError::Unreachable(_) => None,
        }
    }
}

#[derive(Clone)]
pub struct ControlPlane {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl ControlPlane {
    pub fn new(base: &str, key: &str) -> ControlPlane {
        ControlPlane {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            base: base.trim_end_matches('/').to_string(),
            key: key.to_string(),
        }
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
        lease: Option<Uuid>,
        timeout: Duration,
    ) -> Result<Option<T>, CallError> {
        self.post_keyed(path, body, lease, timeout, None).await
    }

    async fn post_keyed<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
        lease: Option<Uuid>,
        timeout: Duration,
        idempotency_key: Option<Uuid>,
    ) -> Result<Option<T>, CallError> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .timeout(timeout)
            .json(body);
        if let Some(l) = lease {
            req = req.header("X-Lease-Id", l.to_string());
        }
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k.to_string());
        }
        Self::answer(req).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, timeout: Duration) -> Result<Option<T>, CallError> {
        let req = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .timeout(timeout);
        Self::answer(req).await
    }

    /// Sends `req`; its JSON answer (`None` for 204), or the refusal with the envelope's message.
    async fn answer<T: DeserializeOwned>(req: reqwest::RequestBuilder) -> Result<Option<T>, CallError> {
        let resp = req.send().await.map_err(|e| CallError::Unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        if status == 204 {
            return Ok(None);
        }
        let retry_after = resp.headers().contains_key(reqwest::header::RETRY_AFTER);
        let text = resp.text().await.map_err(|e| CallError::Unreachable(e.to_string()))?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or(text);
            return Err(CallError::Refused {
                status,
                message,
                retry_after,
            });
        }
        serde_json::from_str(&text).map(Some).map_err(|e| CallError::Refused {
            status,
            message: format!("unexpected answer ({e})"),
            retry_after: false,
        })
    }

    const CALL: Duration = Duration::from_secs(30);

    /// The role of the worker's key (`GET /auth/validate`).
    pub async fn key_role(&self) -> Result<String, CallError> {
        let resp = self
            .http
            .get(format!("{}/api/v1/auth/validate", self.base))
            .bearer_auth(&self.key)
            .timeout(Self::CALL)
            .send()
            .await
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.map_err(|e| CallError::Unreachable(e.to_string()))?;
        match body["role"].as_str() {
            Some(role) if (200..300).contains(&status) => Ok(role.to_string()),
            _ => Err(CallError::Refused {
                status,
                message: "no role in the answer".into(),
                retry_after: false,
            }),
        }
    }

    pub async fn register(
        &self,
        queue: Uuid,
        hostname: &str,
        runner: &str,
        concurrency: usize,
        docker: bool,
    ) -> Result<WorkerRegistration, CallError> {
        let body = json!({
            "hostname": hostname,
            "runner_name": runner,
            "version": env!("CARGO_PKG_VERSION"),
            "capabilities": {"runtimes": ["default"], "max_concurrency": concurrency, "docker": docker},
        });
        self.post(&format!("/api/v1/worker-queues/{queue}/start"), &body, None, Self::CALL)
            .await?
            .ok_or_else(|| CallError::Refused {
                status: 204,
                message: "no registration".into(),
                retry_after: false,
            })
    }

    pub async fn heartbeat(&self, worker: Uuid, status: &str, current: &[Uuid]) -> Result<HeartbeatAck, CallError> {
        let body = json!({"status": status, "current_executions": current});
        self.post(&format!("/api/v1/workers/{worker}/heartbeat"), &body, None, Self::CALL)
            .await?
            .ok_or_else(|| CallError::Refused {
                status: 204,
                message: "no acknowledgement".into(),
                retry_after: false,
            })
    }

    /// Waits up to `wait` for work; `None` when nothing came.
    pub async fn poll(&self, worker: Uuid, wait: Duration) -> Result<Option<PollAnswer>, CallError> {
        let path = format!("/api/v1/workers/{worker}/poll?wait={}", wait.as_secs_f64());
        self.post(&path, &json!({}), None, wait + Self::CALL).await
    }

    /// Posts a batch of events; `key` makes a resent batch a no-op if the first one was stored.
    pub async fn events(&self, execution: Uuid, lease: Uuid, events: &[Value], key: Uuid) -> Result<(), CallError> {
        let body = json!({"events": events});
        let path = format!("/api/v1/executions/{execution}/events");
        self.post_keyed::<Value>(&path, &body, Some(lease), Self::CALL, Some(key))
            .await
            .map(|_| ())
    }

    pub async fn complete(&self, execution: Uuid, lease: Uuid, response: &str, usage: &Usage) -> Result<(), CallError> {
        let body = json!({"response": response, "usage": usage});
        self.post::<Value>(
            &format!("/api/v1/executions/{execution}/complete"),
            &body,
            Some(lease),
            Self::CALL,
        )
        .await
        .map(|_| ())
    }

    pub async fn fail(
        &self,
        execution: Uuid,
        lease: Uuid,
        message: &str,
        retryable: bool,
        error_kind: Option<FailureKind>,
        usage: &Usage,
    ) -> Result<(), CallError> {
        let body = json!({"error_message": message, "retryable": retryable, "error_kind": error_kind, "usage": usage});
        self.post::<Value>(
            &format!("/api/v1/executions/{execution}/fail"),
            &body,
            Some(lease),
            Self::CALL,
        )
        .await
        .map(|_| ())
    }

    pub async fn disconnect(&self, worker: Uuid, reason: &str) -> Result<(), CallError> {
        let body = json!({"reason": reason});
        self.post::<Value>(&format!("/api/v1/workers/{worker}/disconnect"), &body, None, Self::CALL)
            .await
            .map(|_| ())
    }

    /// Starts (or, for the same `body.id`, finds) a workflow run for a tool of `execution`.
    pub async fn start_workflow_run(&self, execution: Uuid, body: &Value) -> Result<Value, CallError> {
        let path = format!("/api/v1/executions/{execution}/workflow-runs");
        Ok(self.post(&path, body, None, Self::CALL).await?.unwrap_or_default())
    }

    /// The run once it ended, or as it is after `wait`.
    pub async fn await_workflow_run(&self, execution: Uuid, run: Uuid, wait: Duration) -> Result<Value, CallError> {
        let path = format!(
            "/api/v1/executions/{execution}/workflow-runs/{run}?wait={}",
            wait.as_secs_f64()
        );
        Ok(self.get(&path, wait + Self::CALL).await?.unwrap_or_default())
    }

    /// The knowledge skill's search for a tool of `execution`.
    pub async fn knowledge_search(&self, execution: Uuid, query: &str) -> Result<Value, CallError> {
        let path = format!("/api/v1/executions/{execution}/knowledge/search");
        Ok(self
            .post(&path, &json!({"query": query}), None, Self::CALL)
            .await?
            .unwrap_or_default())
    }

    /// The knowledge skill's read-only Cypher query for a tool of `execution`.
    pub async fn graph_query(&self, execution: Uuid, cypher: &str) -> Result<Value, CallError> {
        let path = format!("/api/v1/executions/{execution}/graph/query");
        Ok(self
            .post(&path, &json!({"query": cypher}), None, Self::CALL)
            .await?
            .unwrap_or_default())
    }

    /// The policy decision on a tool call; the answer's `blocked` says whether to refuse it.
    pub async fn enforce(
        &self,
        execution: Uuid,
        tool: &str,
        arguments: &Value,
        risk: &str,
    ) -> Result<Value, CallError> {
        let body = json!({
            "action": "tool_execution",
            "execution_id": execution,
            "tool": {"name": tool, "arguments": arguments, "risk_level": risk, "source": "skill"},
        });
        self.post("/api/v1/policies/enforce", &body, None, Duration::from_secs(5))
            .await?
            .ok_or_else(|| CallError::Refused {
                status: 204,
                message: "no decision".into(),
                retry_after: false,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::CallError;

    #[test]
    fn a_conflict_that_says_when_to_retry_keeps_the_run() {
        let refused = |status, retry_after| CallError::Refused {
            status,
            message: String::new(),
            retry_after,
        };
        // The same request still in progress on the control plane (after its restart, say).
        let in_progress = refused(409, true);
        assert!(in_progress.is_transient() && !in_progress.lease_gone());
        // The lease moved on: the run is another attempt's now.
        let gone = refused(409, false);
        assert!(!gone.is_transient() && gone.lease_gone());
        assert!(refused(503, false).is_transient() && !refused(503, false).lease_gone());
    }
}
