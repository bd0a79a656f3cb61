//! The worker users run next to their tools: it registers on a worker queue, heartbeats,
//! long-polls for executions, runs up to `concurrency` of them at once with the `default`
//! runtime (an agent loop over an LLM with skills as tools), and reports events and results.
//! It talks to the control plane over HTTP only (API §5).
//!
//! Cancel reaches it through heartbeat and poll answers: the run's task is dropped (which
//! stops its LLM request and kills its tool process) and the run is reported as ended. On
//! shutdown it stops polling, gives its runs `drain_timeout` to finish, hands the rest back
//! to the queue and disconnects.

pub mod agent;
pub mod claude_code;
pub mod client;
pub mod diagram;
pub mod docker;
pub mod files;
pub mod generate;
pub mod hook;
pub mod http;
pub mod knowledge;
pub mod mcp;
pub mod pdf;
pub mod process;
pub mod python;
pub mod run_workflow;
pub mod sandbox;
pub mod shell;
pub mod step;
pub mod tools;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cp_types::execution::{Claim, FailureKind, Usage};
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::agent::{Emitter, RunError};
use crate::client::{CallError, ControlPlane};

/// The strings of the list `config[key]` of a skill's configuration (none when absent).
pub(crate) fn config_strings(config: &serde_json::Value, key: &str) -> Vec<String> {
    config[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(serde_json::Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// How the worker is started (`kubiya-cp worker …`).
#[derive(Debug, Clone)]
pub struct Config {
    pub control_plane_url: String,
    pub api_key: String,
    pub queue_id: Uuid,
    pub concurrency: usize,
    pub runner_name: String,
    pub hostname: String,
    /// How long runs may take to finish once shutdown begins.
    pub drain_timeout: Duration,
    /// How long one long poll waits.
    pub poll_wait: Duration,
    pub tools: ToolSettings,
}

/// What the worker's operator decides for the tools of every run (a skill's author cannot).
#[derive(Debug, Clone, Default)]
pub struct ToolSettings {
    /// The http tool may reach loopback, private and link-local addresses.
    pub allow_private_http: bool,
    /// Where child-process tools run.
    pub sandbox: sandbox::Sandbox,
}

/// The runs in progress, by execution id.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<HashMap<Uuid, Run>>>);

struct Run {
    lease: Uuid,
    task: JoinHandle<()>,
}

impl Runs {
    fn ids(&self) -> Vec<Uuid> {
        self.0.lock().keys().copied().collect()
    }

    fn len(&self) -> usize {
        self.0.lock().len()
    }

    /// Stops a run (its LLM request and tool process go with its task) and reports it ended;
    /// the control plane turns a cancelling run's end into `cancelled`.
    async fn cancel(&self, cp: &ControlPlane, id: Uuid, reason: &str, retryable: bool) {
        let run = self.0.lock().remove(&id);
        if let Some(run) = run {
            run.task.abort();
            if let Err(e) = cp.fail(id, run.lease, reason, retryable, None, &Usage::default()).await {
                tracing::debug!(error = %e, execution = %id, "could not report the stopped run");
            }
        }
    }
}

/// Registers, retrying with backoff while the control plane is away or busy (no answer, 408,
/// 429, 5xx: a server starting up or rate limiting); a refusal (bad key, full or inactive
/// queue) is final.
async fn register(cp: &ControlPlane, config: &Config) -> anyhow::Result<cp_types::worker::WorkerRegistration> {
    let mut delay = Duration::from_millis(500);
    let docker = docker::engine().await.is_ok();
    loop {
        match cp
            .register(
                config.queue_id,
                &config.hostname,
                &config.runner_name,
                config.concurrency,
                docker,
            )
            .await
        {
            Ok(r) => return Ok(r),
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, ?delay, "control plane away or busy; retrying registration");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(e) => anyhow::bail!("registration refused: {e}"),
        }
    }
}

/// Registers and starts heartbeating; the worker's id and its heartbeat task.
async fn join(cp: &ControlPlane, config: &Config, runs: &Runs) -> anyhow::Result<(Uuid, JoinHandle<()>)> {
    let reg = register(cp, config).await?;
    let worker = reg.worker_id;
    tracing::info!(%worker, queue = %reg.queue_name, environment = %reg.environment_name, "registered");
    let every = Duration::from_millis(reg.heartbeat_interval_ms.max(100) as u64);
    let heartbeat = tokio::spawn(heartbeats(cp.clone(), worker, runs.clone(), every));
    Ok((worker, heartbeat))
}

/// Runs the worker until `shutdown` resolves, then drains and disconnects.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let cp = ControlPlane::new(&config.control_plane_url, &config.api_key);
    let runs = Runs::default();
    let (mut worker, mut heartbeat) = join(&cp, &config, &runs).await?;
    // An admin key still works, but it opens the whole organization to this host.
    match cp.key_role().await {
        Ok(role) if role == "admin" => {
            tracing::warn!("this worker uses an admin key: create a worker key (role \"worker\") and use it instead")
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "could not read the key's role"),
    }
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(500);
    loop {
        if runs.len() >= config.concurrency {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
            }
        }
        let polled = tokio::select! {
            _ = &mut shutdown => break,
            p = cp.poll(worker, config.poll_wait) => p,
        };
        match polled {
            Ok(Some(answer)) => {
                backoff = Duration::from_millis(500);
                for id in answer.cancel_execution_ids {
                    runs.cancel(&cp, id, "cancelled", false).await;
                }
                if let Some(claim) = answer.claim {
                    start(&cp, &runs, claim, &config.tools);
                }
                if answer.drain {
                    // Asked by the control plane: no more work; the runs in progress finish
                    // (however long they take, unless a signal comes first), then it leaves.
                    tracing::info!(runs = runs.len(), "asked to drain: no more work is taken");
                    while runs.len() > 0 {
                        tokio::select! {
                            _ = &mut shutdown => break,
                            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        }
                    }
                    break;
                }
            }
            Ok(None) => backoff = Duration::from_millis(500),
            Err(CallError::Refused {
                status: 404 | 409,
                message,
                retry_after: false,
            }) => {
                // Away too long: the control plane took this worker offline (its runs went
                // back to the queue). Register again and go on.
                tracing::warn!(%message, "the control plane no longer knows this worker; registering again");
                heartbeat.abort();
                (worker, heartbeat) = join(&cp, &config, &runs).await?;
            }
            Err(e) => {
                tracing::warn!(error = %e, ?backoff, "poll failed; retrying");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    // Drain: runs in progress get their time, then what is left goes back to the queue.
    tracing::info!(runs = runs.len(), "shutting down: polling stopped");
    let deadline = tokio::time::Instant::now() + config.drain_timeout;
    while runs.len() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in runs.ids() {
        runs.cancel(&cp, id, "the worker shut down before the run finished", true)
            .await;
    }
    heartbeat.abort();
    if let Err(e) = cp.disconnect(worker, "shutdown").await {
        tracing::warn!(error = %e, "could not disconnect");
    }
    Ok(())
}

/// Heartbeats at the queue's interval; runs the control plane wants stopped are stopped.
async fn heartbeats(cp: ControlPlane, worker: Uuid, runs: Runs, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let current = runs.ids();
        let status = if current.is_empty() { "online" } else { "busy" };
        match cp.heartbeat(worker, status, &current).await {
            Ok(ack) => {
                for id in ack.cancel_execution_ids {
                    runs.cancel(&cp, id, "cancelled", false).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// Starts a claimed run on a task of its own.
fn start(cp: &ControlPlane, runs: &Runs, claim: Box<Claim>, tools: &ToolSettings) {
    let id = claim.execution.id;
    let lease = claim.lease_id;
    let (cp2, runs2, tools) = (cp.clone(), runs.clone(), tools.clone());
    // The task waits for its entry to exist, so a run that ends at once still finds it.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = ready_rx.await;
        // A panic in a run must still end it on the control plane, or its lease would be
        // renewed by every heartbeat forever.
        let ran = std::panic::AssertUnwindSafe(execute(&cp2, &claim, &tools))
            .catch_unwind()
            .await;
        if ran.is_err() {
            tracing::error!(execution = %id, "the run panicked");
            report(
                &cp2,
                id,
                lease,
                Outcome::Fail("the worker failed while running it", true, None),
            )
            .await;
        }
        // Only this run's own entry: the same execution claimed again has a newer lease.
        let mut all = runs2.0.lock();
        if all.get(&id).is_some_and(|r| r.lease == lease) {
            all.remove(&id);
        }
    });
    // A run of the same execution still here lost its lease: it must not keep running.
    if let Some(old) = runs.0.lock().insert(id, Run { lease, task }) {
        old.task.abort();
    }
    let _ = ready_tx.send(());
}

/// How a run ends, as reported to the control plane.
enum Outcome<'a> {
    Complete(&'a str, &'a Usage),
    /// The message, whether another attempt may succeed, and whether an operator must act.
    Fail(&'a str, bool, Option<FailureKind>),
}

/// Reports the end of a run, retrying while the control plane is away: until it is recorded
/// the control plane keeps the run (its lease is renewed by our heartbeats). A refusal for a
/// lease that is gone means the run was taken away already. A result the control plane
/// refuses (too large, say) fails the run with that reason rather than leaving it running.
async fn report(cp: &ControlPlane, id: Uuid, lease: Uuid, outcome: Outcome<'_>) {
    let mut delay = Duration::from_millis(200);
    let started = tokio::time::Instant::now();
    let mut refused: Option<String> = None;
    loop {
        let sent = match (&outcome, &refused) {
            (Outcome::Complete(_, usage), Some(reason)) => cp.fail(id, lease, reason, false, None, usage).await,
            (Outcome::Complete(answer, usage), None) => cp.complete(id, lease, answer, usage).await,
            (Outcome::Fail(message, retryable, kind), _) => {
                cp.fail(id, lease, message, *retryable, *kind, &Usage::default()).await
            }
        };
        match sent {
            Ok(()) => return,
            Err(e) if e.is_transient() && started.elapsed() < Duration::from_secs(600) => {
                tracing::warn!(error = %e, execution = %id, "the end of the run is not recorded yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) if matches!(outcome, Outcome::Complete(..)) && refused.is_none() && !e.lease_gone() => {
                tracing::warn!(error = %e, execution = %id, "the result was refused; failing the run");
                refused = Some(format!("the control plane refused the run's result: {e}"));
            }
            Err(e) => {
                tracing::warn!(error = %e, execution = %id, "could not report the end of the run");
                return;
            }
        }
    }
}

/// One run, from the claim to its result.
async fn execute(cp: &ControlPlane, claim: &Claim, tools: &ToolSettings) {
    let id = claim.execution.id;
    let lease = claim.lease_id;
    let emit = Emitter::new(cp.clone(), id, lease);
    // Streamed chunks go out every 150 ms while the model talks. The flusher is stopped by
    // a flag, never aborted: an aborted flush would drop the batch it was sending. The flag is
    // also set when this future is dropped (the run was cancelled).
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _stop_flusher = StopOnDrop(done.clone());
    let flusher = {
        let (emit, done) = (emit.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(150)).await;
                if emit.flush().await.is_err() {
                    return;
                }
            }
        })
    };
    let claude_code = claim.agent.as_ref().map(|a| a.runtime) == Some(cp_types::runtime::Runtime::ClaudeCode)
        || claim.team.as_ref().map(|t| t.runtime) == Some(cp_types::runtime::Runtime::ClaudeCode);
    let result = if let Some(done) = step::run(claim, tools).await {
        done
    } else if claude_code {
        claude_code::run(cp, claim, &emit, &tools.sandbox).await
    } else {
        agent::run(cp, claim, &emit, tools).await
    };
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = flusher.await;
    match result {
        Ok((answer, usage)) => match emit.flush().await {
            Ok(()) => report(cp, id, lease, Outcome::Complete(&answer, &usage)).await,
            Err(RunError::Lost) => {}
            Err(e) => report(cp, id, lease, Outcome::Fail(&e.to_string(), false, None)).await,
        },
        Err(RunError::Lost) => {}
        Err(e) => {
            let retryable = matches!(e, RunError::Retryable(_));
            let kind = match e {
                RunError::NeedsOperator(kind, _) => Some(kind),
                _ => None,
            };
            emit.emit("error", serde_json::json!({"message": e.to_string()}));
            let _ = emit.flush().await;
            report(cp, id, lease, Outcome::Fail(&e.to_string(), retryable, kind)).await;
        }
    }
}

/// Sets a flag when dropped.
struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A control plane that answers the first registration 503 and 429, then registers.
    async fn busy_then_ready() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let registered = serde_json::json!({
                "worker_id": Uuid::nil(), "worker_queue_id": Uuid::nil(), "heartbeat_interval": 30,
                "heartbeat_interval_ms": 30000, "lease_seconds": 90, "queue_name": "q",
                "environment_name": "e", "organization_id": "o", "control_plane_url": "",
                "task_queue_name": "q"
            })
            .to_string();
            let answers = [
                (503, "Service Unavailable", "{}".to_string()),
                (429, "Too Many Requests", "{}".to_string()),
                (200, "OK", registered),
            ];
            for (status, reason, body) in answers {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut request = vec![0u8; 16 << 10];
                let _ = conn.read(&mut request).await.unwrap();
                let response = format!(
                    "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                conn.write_all(response.as_bytes()).await.unwrap();
            }
        });
        url
    }

    #[tokio::test]
    async fn registration_waits_out_a_busy_control_plane() {
        let url = busy_then_ready().await;
        let config = Config {
            control_plane_url: url.clone(),
            api_key: "k".into(),
            queue_id: Uuid::nil(),
            concurrency: 1,
            runner_name: "r".into(),
            hostname: "h".into(),
            drain_timeout: Duration::from_secs(1),
            poll_wait: Duration::from_secs(1),
            tools: ToolSettings::default(),
        };
        let registered = register(&ControlPlane::new(&url, "k"), &config).await.unwrap();
        assert_eq!(registered.lease_seconds, 90);
    }
}
