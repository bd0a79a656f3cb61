//! Workers joining their queues.

use cp_types::execution::Execution;
use cp_types::org::Role;
use cp_types::worker::{RegisterWorker, WorkerRegistration};
use uuid::Uuid;

use crate::services::caller::Caller;
use crate::services::error::{ServiceError, ServiceResult};
use crate::state::AppState;

/// Registers a worker on `queue` of the caller's organization.
pub async fn register_on(
    state: &AppState,
    caller: &Caller,
    queue: Uuid,
    req: &RegisterWorker,
) -> ServiceResult<WorkerRegistration> {
    req.validate()?;
    if let Some(own) = caller.worker_queue_id
        && own != queue
    {
        return Err(ServiceError::forbidden(format!(
            "this worker key was made for worker queue {own} and registers only there"
        )));
    }
    let hostname = req.hostname.clone().unwrap_or_else(|| "unknown".into());
    let runner = req.runner_name.clone().unwrap_or_else(|| hostname.clone());
    let r = state
        .store
        .workers(&caller.org_id)
        .register(queue, req, &hostname, &runner, caller.key_id)
        .await
        .map_err(|e| ServiceError::from_store(e, "worker queue"))?;
    Ok(WorkerRegistration {
        worker_id: r.worker.id,
        worker_queue_id: queue,
        heartbeat_interval: r.heartbeat_interval,
        heartbeat_interval_ms: r.heartbeat_ms,
        lease_seconds: 3 * r.heartbeat_interval,
        queue_name: r.queue_name,
        environment_name: r.environment_name,
        organization_id: caller.org_id.clone(),
        control_plane_url: state.config.public_url.clone(),
        task_queue_name: queue.to_string(),
    })
}

/// The command that starts a worker on a queue. The key is never on the command line (any
/// local user can read a process's arguments): the worker reads it from `KUBIYA_API_KEY`.
pub fn worker_command_parts(public_url: &str, queue: impl std::fmt::Display) -> Vec<String> {
    [
        "kubiya-cp",
        "worker",
        "--queue-id",
        &queue.to_string(),
        "--control-plane-url",
        public_url.trim_end_matches('/'),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A worker key acts only for the runs its workers hold (asking the policies, starting a
/// workflow from a tool); other roles for any run of their organization.
pub async fn check_holds(state: &AppState, caller: &Caller, execution: &Execution) -> ServiceResult<()> {
    if caller.role != Role::Worker {
        return Ok(());
    }
    let held = match execution.worker_id {
        Some(w) => state
            .store
            .workers(&caller.org_id)
            .registered_by(w, caller.key_id)
            .await
            .unwrap_or(false),
        None => false,
    };
    if !held {
        return Err(ServiceError::forbidden(
            "a worker key acts only for the runs its workers hold",
        ));
    }
    Ok(())
}
