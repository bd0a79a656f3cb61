//! The execution engine's rules: accepting an execution, handing it to one worker with
//! everything its run needs, and telling everyone who waits after each change (followers get
//! the stored events, pollers of the queue wake up, a worker learns its run was taken away).

use std::time::Duration;

use cp_store::executions::NewExecution;
use cp_store::workers::WorkerSeat;
use cp_store::{StoreError, StoreResult};
use cp_types::context::ContextEntity;
use cp_types::execution::{Claim, ExecuteRequest, Execution, ExecutionType, PollAnswer};
use cp_types::ids::{ExecutionId, QueueId, WorkerId};
use cp_types::org::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use super::notify::{Notice, notify};
use super::vault::{self, Named};
use super::{policy, run_context};
use crate::services::caller::Caller;
use crate::services::error::{ServiceError, ServiceResult};
use crate::state::AppState;

/// Validates and stores a new execution `id` of an agent or team, then wakes the queue's
/// pollers.
pub async fn execute(
    state: &AppState,
    caller: &Caller,
    kind: ExecutionType,
    entity_id: Uuid,
    req: &ExecuteRequest,
    id: ExecutionId,
) -> ServiceResult<Execution> {
    let queue = req.validate()?;
    vault::check_may_name(
        caller,
        &Named::of_environment(req.execution_environment.as_ref()),
        &Named::default(),
    )?;
    let org = caller.org_id.as_str();
    let subject = state
        .store
        .executions(org)
        .subject(kind, entity_id, Some(queue))
        .await
        .map_err(|e| ServiceError::from_store(e, kind.as_str()))?;
    // Before anything is stored: a denied execution leaves no row behind (only its decision).
    let entity = match kind {
        ExecutionType::Team => ContextEntity::Team(entity_id),
        _ => ContextEntity::Agent(entity_id),
    };
    policy::check_execute(state, caller, entity, &req.prompt, Some(queue), &subject).await?;
    // Identity comes from the key, never from the body.
    let mut user_metadata = req.user_metadata.clone().unwrap_or_else(|| json!({}));
    if let Value::Object(m) = &mut user_metadata {
        m.insert("key_id".into(), json!(caller.key_id));
        m.insert("key_name".into(), json!(caller.key_name));
    }
    let new = NewExecution {
        execution_type: kind,
        entity_id,
        queue_seen: subject.queue_seen(),
        entity_name: subject.entity_name,
        worker_queue_id: queue,
        prompt: req.prompt.clone(),
        system_prompt: req.system_prompt.clone(),
        user_metadata,
        execution_metadata: req.execution_metadata.clone().unwrap_or_else(|| json!({})),
        execution_environment: req.execution_environment.clone().unwrap_or_default(),
        created_by: caller.key_id.to_string(),
        workflow_run_id: None,
        step_id: None,
        model_id: subject.model_id,
    };
    let (execution, events) = state
        .store
        .executions(org)
        .create(id.0, new)
        .await
        .map_err(|e| ServiceError::from_store(e, "worker queue"))?;
    notify(
        state,
        Notice::Created {
            execution: execution.id,
            queue: QueueId(queue),
            events: &events,
        },
    );
    Ok(execution)
}

/// The policy check of a continuation (a follow-up message or a resume): it puts the run back
/// on a queue, so the organization's policies decide it as they decide an execute, with the
/// new message as the prompt.
pub async fn check_continuation(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    prompt: Option<&str>,
) -> ServiceResult<()> {
    let executions = state.store.executions(&caller.org_id);
    let e = executions
        .get(id)
        .await
        .map_err(|e| ServiceError::from_store(e, "execution"))?;
    let subject = executions
        .subject(e.execution_type, e.entity_id, e.worker_queue_id)
        .await
        .map_err(|err| ServiceError::from_store(err, e.execution_type.as_str()))?;
    let entity = match e.execution_type {
        ExecutionType::Team => ContextEntity::Team(e.entity_id),
        _ => ContextEntity::Agent(e.entity_id),
    };
    let prompt = prompt.unwrap_or(&e.prompt);
    policy::check_execute(state, caller, entity, prompt, e.worker_queue_id, &subject).await
}

/// One look at the worker's queue: its seat, and when the seat lets this caller claim, the
/// next execution with its run context. A run whose context cannot be built (its agent was
/// deleted meanwhile) fails at once with the reason and the next one is tried.
async fn claim(state: &AppState, worker: &Caller, worker_id: WorkerId) -> ServiceResult<(WorkerSeat, Option<Claim>)> {
    let executions = state.store.executions(&worker.org_id);
    let key = polling_key(worker);
    loop {
        let (seat, claimed) = executions
            .claim(worker_id, key)
            .await
            .map_err(|e| ServiceError::from_store(e, "worker"))?;
        let Some(claimed) = claimed else {
            return Ok((seat, None));
        };
        notify(state, Notice::Changed(&claimed.changed));
        let id = claimed.changed.record.execution.id;
        let lease_id = claimed.changed.record.lease_id.unwrap_or_default();
        match run_context::build(state, worker, claimed, seat).await {
            Ok(claim) => return Ok((seat, Some(claim))),
            Err(e) => {
                let reason = format!("cannot prepare the run: {}", e.message);
                tracing::warn!(execution = %id, %reason);
                let outcome = cp_store::executions::Outcome::Failed {
                    error_message: Some(reason),
                    retryable: false,
                    usage: None,
                    error_kind: Some(cp_types::execution::FailureKind::RunNotPrepared),
                };
                match executions.finish(ExecutionId(id), lease_id, outcome).await {
                    Ok(failed) => notify(state, Notice::Changed(&failed)),
                    Err(e) => tracing::warn!(error = %e, "could not fail an unpreparable run"),
                }
            }
        }
    }
}

/// The key a worker's seat must name for `worker` to poll it: its own, or none for an admin.
/// Another key's poll claims nothing and is answered 404.
fn polling_key(worker: &Caller) -> Option<Uuid> {
    (worker.role != Role::Admin).then_some(worker.key_id)
}

/// What one look at the queue tells a poll.
enum Look {
    Answer(PollAnswer),
    /// Nothing yet: wait for a wake-up.
    Nothing,
    /// The seat and the cancel list disagreed (a cancel ended between them): look again.
    Again,
}

/// What a poll answers after a look: an error for a worker that is not the caller's or is
/// offline, the order to drain, the runs to cancel, or the run claimed.
async fn answer(
    state: &AppState,
    worker: &Caller,
    id: WorkerId,
    seat: &WorkerSeat,
    claim: Option<Claim>,
) -> ServiceResult<Look> {
    if !seat.answers_to(polling_key(worker)) {
        return Err(ServiceError::not_found("worker"));
    }
    if !seat.online {
        return Err(ServiceError::conflict(
            "the worker is offline or disconnected and its runs went back to the queue; register again",
        ));
    }
    if seat.drain {
        return Ok(Look::Answer(PollAnswer {
            drain: true,
            ..Default::default()
        }));
    }
    if seat.cancelling {
        let cancel = state.store.workers(&worker.org_id).cancelling(id).await?;
        if cancel.is_empty() {
            return Ok(Look::Again);
        }
        return Ok(Look::Answer(PollAnswer {
            cancel_execution_ids: cancel.into_iter().map(Uuid::from).collect(),
            ..Default::default()
        }));
    }
    Ok(match claim {
        Some(claim) => Look::Answer(PollAnswer {
            claim: Some(Box::new(claim)),
            ..Default::default()
        }),
        None => Look::Nothing,
    })
}

/// A worker's long poll: a claimed run with its context, the runs to cancel, or the order to
/// drain, as soon as there is one; `None` when `wait` passes (or the server stops) first.
pub async fn poll(
    state: &AppState,
    worker: &Caller,
    id: WorkerId,
    wait: Duration,
) -> ServiceResult<Option<PollAnswer>> {
    let deadline = tokio::time::Instant::now() + wait;
    // The first look also names the worker's queue; a busy queue answers it at once.
    let (seat, claimed) = claim(state, worker, id).await?;
    if let Look::Answer(answer) = answer(state, worker, id, &seat, claimed).await? {
        return Ok(Some(answer));
    }
    let queue = state.hub.queue(seat.worker_queue_id);
    let signals = state.hub.worker(id);
    let mut woken = false;
    loop {
        // Registered before looking, so a wake-up between the look and the wait is not lost.
        let queue_ready = queue.notified();
        let signal = signals.notified();
        tokio::pin!(queue_ready, signal);
        queue_ready.as_mut().enable();
        signal.as_mut().enable();
        // A run wakes one poller: this one, if it was woken, passes the wake-up on unless its
        // claim goes through (see `PassOn`).
        let pass_on = PassOn(woken.then_some(&*queue));
        let (seat, claimed) = claim(state, worker, id).await?;
        // Claimed, or found nothing (the run went to another poller): the wake-up is used.
        // A seat that let no claim be tried (drain, cancel) passes it on.
        if seat.may_claim(polling_key(worker)) {
            pass_on.used();
        }
        match answer(state, worker, id, &seat, claimed).await? {
            Look::Answer(answer) => return Ok(Some(answer)),
            Look::Again => {
                woken = false;
                continue;
            }
            Look::Nothing => {}
        }
        woken = false;
        let _parked = state.hub.park();
        tokio::select! {
            _ = &mut queue_ready => woken = true,
            _ = &mut signal => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(None),
            _ = state.hub.closed() => return Ok(None),
        }
    }
}

/// A queue wake-up a poll took and has not used yet. Each claimable run wakes one poller; if
/// that poll then ends without a claim attempt that went through (a database error, a drain
/// or cancel answer, a client that hung up), the wake-up goes to the next poller instead of
/// being lost, which would leave the run to wait for someone's poll timeout.
struct PassOn<'a>(Option<&'a tokio::sync::Notify>);

impl PassOn<'_> {
    fn used(mut self) {
        self.0 = None;
    }
}

impl Drop for PassOn<'_> {
    fn drop(&mut self) {
        if let Some(queue) = self.0 {
            queue.notify_one();
        }
    }
}

/// A worker leaves: it is marked disconnected and the runs it held go back to their queue at
/// once; returns how many did.
pub async fn disconnect(state: &AppState, worker: &Caller, id: WorkerId, reason: &str) -> ServiceResult<i64> {
    let workers = state.store.workers(&worker.org_id);
    workers
        .disconnect(id.uuid())
        .await
        .map_err(|e| ServiceError::from_store(e, "worker"))?;
    let executions = state.store.executions(&worker.org_id);
    let mut requeued = 0;
    for run in workers.held(id).await? {
        match executions.release(run, id, reason).await {
            Ok(changed) => {
                requeued += 1;
                notify(state, Notice::Changed(&changed));
            }
            // Ended or moved on meanwhile: nothing to hand back.
            Err(StoreError::Conflict(_)) | Err(StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    notify(state, Notice::Left { worker: id });
    Ok(requeued)
}

/// One sweep of the reaper: workers silent past their deadline go offline, and runs whose
/// lease or cancel grace period ran out are re-queued, failed or cancelled. Each run is
/// re-checked under its row lock, so running this on several replicas at once is safe.
pub async fn reap(state: &AppState) -> StoreResult<usize> {
    let now_ms = cp_types::now().timestamp_millis();
    state.store.mark_silent_workers_offline(now_ms).await?;
    let due = state.store.expired_executions(now_ms, 500).await?;
    let mut n = 0;
    for (org, id) in due {
        match state.store.executions(org.as_str()).expire(id, now_ms).await {
            Ok(changed) => {
                n += 1;
                notify(state, Notice::Changed(&changed));
            }
            Err(StoreError::Conflict(_)) | Err(StoreError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The advisory lock key of the reaper's leadership (PostgreSQL).
const REAPER_LOCK: i64 = 0x6b63_705f_7265_6170; // "kcp_reap"

/// Runs the reaper every `every` until the server stops, on the one replica that holds the
/// reaper's leader lock (another takes over when that replica's connection ends).
pub async fn reaper(state: AppState, every: Duration) {
    // The first sweep comes one interval after start, like every other one.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leader = None;
    loop {
        tick.tick().await;
        state.hub.sweep();
        if leader.is_none() {
            leader = state.store.try_lead(REAPER_LOCK).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not try the reaper's leader lock");
                None
            });
        }
        let Some(lead) = leader.as_mut() else {
            continue;
        };
        if !lead.holds().await {
            tracing::warn!("lost the reaper's leader lock");
            leader = None;
            continue;
        }
        match reap(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(executions = n, "reaper moved expired runs"),
            Err(e) => tracing::warn!(error = %e, "reaper sweep failed"),
        }
    }
}
