//! The worker protocol (register, heartbeat, long-poll, disconnect) and the live views of
//! workers and runners.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cp_store::workers::WorkerFilter;
use cp_types::execution::PollAnswer;
use cp_types::worker::{
    Disconnect, Disconnected, Heartbeat, HeartbeatAck, RegisterWorker, Runner, RunnerHealth, RunnerHealthReport,
    Worker, WorkerOrRunner, WorkerRegistration, WorkerStatus,
};
use cp_types::{Page, PageParams};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::idempotency::SealedReplay;
use crate::http::{Admin, Auth, JsonBody, Pagination, Path, Query, Read, WorkerApi};
use crate::services::caller::Caller;
use crate::services::dispatch;
use crate::services::error::{ServiceError, ServiceResult};
use crate::services::notify::{Notice, notify};
use crate::services::workers::register_on;
use crate::state::AppState;
use cp_types::ids::WorkerId;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(heartbeat))
        .routes(routes!(heartbeat_by_body))
        .routes(routes!(poll))
        .routes(routes!(disconnect))
        .routes(routes!(drain))
        .routes(routes!(list_workers))
        .routes(routes!(get_worker))
        .routes(routes!(start_registered))
        .routes(routes!(list_runners))
        .routes(routes!(runner_health))
}

fn not_found(e: cp_store::StoreError) -> ServiceError {
    ServiceError::from_store(e, "worker")
}

/// A worker-role key acts only on the workers it registered (another key's worker looks
/// unknown); an admin key may act on any worker of its organization.
async fn check_owner(state: &AppState, caller: &Caller, worker: Uuid) -> ServiceResult<()> {
    if caller.role == cp_types::org::Role::Admin {
        return Ok(());
    }
    let own = state
        .store
        .workers(&caller.org_id)
        .registered_by(worker, caller.key_id)
        .await
        .map_err(not_found)?;
    if own {
        Ok(())
    } else {
        Err(ServiceError::not_found("worker"))
    }
}

/// Registers a worker on the queue named in the body.
#[utoipa::path(post, path = "/api/v1/workers/register", tag = "workers", request_body = RegisterWorker,
    responses((status = 201, body = WorkerRegistration), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn register(
    State(state): State<AppState>,
    auth: Auth<WorkerApi>,
    JsonBody(req): JsonBody<RegisterWorker>,
) -> ServiceResult<(StatusCode, Json<WorkerRegistration>)> {
    let queue = req
        .worker_queue_id
        .ok_or_else(|| ServiceError::invalid("worker_queue_id", "is required"))?;
    Ok((
        StatusCode::CREATED,
        Json(register_on(&state, &auth, queue, &req).await?),
    ))
}

async fn beat(state: &AppState, caller: &Caller, id: Uuid, hb: &Heartbeat) -> ServiceResult<HeartbeatAck> {
    hb.validate()?;
    check_owner(state, caller, id).await?;
    state
        .store
        .workers(&caller.org_id)
        .heartbeat(id, hb)
        .await
        .map_err(not_found)
}

/// Keeps the worker and the leases of its runs alive; answers the runs to stop and whether
/// to drain.
#[utoipa::path(post, path = "/api/v1/workers/{id}/heartbeat", tag = "workers", params(("id" = Uuid, Path)),
    request_body = Heartbeat, responses((status = 200, body = HeartbeatAck)))]
async fn heartbeat(
    State(state): State<AppState>,
    auth: Auth<WorkerApi>,
    Path(id): Path<Uuid>,
    JsonBody(hb): JsonBody<Heartbeat>,
) -> ServiceResult<Json<HeartbeatAck>> {
    beat(&state, &auth, id, &hb).await.map(Json)
}

/// The same heartbeat with `worker_id` in the body.
#[utoipa::path(post, path = "/api/v1/workers/heartbeat", tag = "workers", request_body = Heartbeat,
    responses((status = 200, body = HeartbeatAck)))]
async fn heartbeat_by_body(
    State(state): State<AppState>,
    auth: Auth<WorkerApi>,
    JsonBody(hb): JsonBody<Heartbeat>,
) -> ServiceResult<Json<HeartbeatAck>> {
    let id = hb
        .worker_id
        .ok_or_else(|| ServiceError::invalid("worker_id", "is required"))?;
    beat(&state, &auth, id, &hb).await.map(Json)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PollQuery {
    /// Seconds to wait for work (0..=60, default 30).
    wait: Option<f64>,
}

/// The longest a long poll may hang.
const MAX_WAIT_SECONDS: f64 = 60.0;

/// A long poll's `wait` in seconds (0 to 60, default 30).
pub(crate) fn long_poll_wait(wait: Option<f64>) -> ServiceResult<Duration> {
    let wait = wait.unwrap_or(30.0);
    if !wait.is_finite() || !(0.0..=MAX_WAIT_SECONDS).contains(&wait) {
        return Err(ServiceError::invalid("wait", "must be between 0 and 60 seconds"));
    }
    Ok(Duration::from_secs_f64(wait))
}

/// Long-poll: answers at once with a claim when an execution is claimable on the worker's
/// queue, with the runs to stop when one of the worker's runs is cancelled meanwhile, else
/// 204 after `wait` seconds.
#[utoipa::path(post, path = "/api/v1/workers/{id}/poll", tag = "workers", params(("id" = Uuid, Path), PollQuery),
    responses((status = 200, body = PollAnswer), (status = 204, description = "Nothing to do within the wait"),
              (status = 409, body = cp_types::ErrorEnvelope)))]
async fn poll(
    State(state): State<AppState>,
    auth: Auth<WorkerApi>,
    Path(id): Path<Uuid>,
    Query(q): Query<PollQuery>,
) -> ServiceResult<Response> {
    let mut answer = poll_answer(state, auth, id, q).await?;
    // A claim carries the run's secret values: a replay keeps them encrypted at rest.
    answer.extensions_mut().insert(SealedReplay);
    Ok(answer)
}

async fn poll_answer(state: AppState, auth: Auth<WorkerApi>, id: Uuid, q: PollQuery) -> ServiceResult<Response> {
    let wait = long_poll_wait(q.wait)?;
    Ok(match dispatch::poll(&state, &auth, WorkerId(id), wait).await? {
        Some(answer) => Json(answer).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// The worker leaves: it is marked disconnected and its runs go back to the queue at once.
#[utoipa::path(post, path = "/api/v1/workers/{id}/disconnect", tag = "workers", params(("id" = Uuid, Path)),
    request_body = Disconnect, responses((status = 200, body = Disconnected)))]
async fn disconnect(
    State(state): State<AppState>,
    auth: Auth<WorkerApi>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<Disconnect>,
) -> ServiceResult<Json<Disconnected>> {
    check_owner(&state, &auth, id).await?;
    let reason = format!("worker disconnected: {}", req.reason.as_deref().unwrap_or("shutdown"));
    let requeued = dispatch::disconnect(&state, &auth, WorkerId(id), &reason).await?;
    Ok(Json(Disconnected {
        id,
        status: "disconnected".into(),
        requeued_executions: requeued,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
struct DrainRequest {
    /// True to drain (finish current runs, claim no more); false to take work again.
    #[serde(default = "yes")]
    drain: bool,
}

fn yes() -> bool {
    true
}

/// Asks a worker to drain: its heartbeats and polls answer `drain: true` and it gets no new
/// claims; its current runs finish normally.
#[utoipa::path(post, path = "/api/v1/workers/{id}/drain", tag = "workers", params(("id" = Uuid, Path)),
    request_body = DrainRequest, responses((status = 200, body = Worker)))]
async fn drain(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<DrainRequest>,
) -> ServiceResult<Json<Worker>> {
    let workers = state.store.workers(&auth.org_id);
    workers.set_drain(id, req.drain).await.map_err(not_found)?;
    notify(&state, Notice::Drain { worker: WorkerId(id) });
    Ok(Json(workers.get(id).await.map_err(not_found)?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct WorkerListQuery {
    /// Only the workers of this queue.
    worker_queue_id: Option<Uuid>,
    /// Only workers heard from within 3 heartbeat intervals.
    #[serde(default)]
    online_only: bool,
}

/// Workers of the organization, newest first.
#[utoipa::path(get, path = "/api/v1/workers", tag = "workers", params(PageParams, WorkerListQuery),
    responses((status = 200, body = Page<Worker>)))]
async fn list_workers(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
    Query(q): Query<WorkerListQuery>,
) -> ServiceResult<Json<Page<Worker>>> {
    let filter = WorkerFilter {
        worker_queue_id: q.worker_queue_id,
        online_only: q.online_only,
    };
    Ok(Json(state.store.workers(&auth.org_id).list(filter, page).await?))
}

/// A worker by its id, or the runner of that name (the official client's `workers.get(runner_name)`).
#[utoipa::path(get, path = "/api/v1/workers/{id}", tag = "workers", params(("id" = String, Path, description = "A worker id or a runner name")),
    responses((status = 200, body = WorkerOrRunner), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_worker(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<String>,
) -> ServiceResult<Json<WorkerOrRunner>> {
    let workers = state.store.workers(&auth.org_id);
    if let Ok(id) = Uuid::parse_str(&id) {
        return Ok(Json(WorkerOrRunner::Worker(workers.get(id).await.map_err(not_found)?)));
    }
    let runner = runners_of(workers.all(RUNNER_SCAN).await?)
        .into_iter()
        .find(|r| r.name == id)
        .ok_or_else(|| ServiceError::not_found("worker or runner"))?;
    Ok(Json(WorkerOrRunner::Runner(runner)))
}

/// The official client's `workers.start(worker_id)`: what a registered worker starts with (its
/// queue, intervals and the control plane's URL), as its registration answered.
#[utoipa::path(post, path = "/api/v1/workers/{id}/start", tag = "workers", params(("id" = Uuid, Path)),
    responses((status = 200, body = WorkerRegistration), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn start_registered(
    State(state): State<AppState>,
    auth: Auth<WorkerApi>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<WorkerRegistration>> {
    check_owner(&state, &auth, id).await?;
    let org = auth.org_id.as_str();
    let worker = state.store.workers(org).get(id).await.map_err(not_found)?;
    let queue = state
        .store
        .worker_queues(org)
        .get(worker.worker_queue_id)
        .await
        .map_err(|e| ServiceError::from_store(e, "worker queue"))?;
    let environment = state
        .store
        .environments(org)
        .get(queue.environment_id)
        .await
        .map_err(|e| ServiceError::from_store(e, "environment"))?;
    Ok(Json(WorkerRegistration {
        worker_id: id,
        worker_queue_id: queue.id,
        heartbeat_interval: queue.heartbeat_interval,
        heartbeat_interval_ms: queue.heartbeat_interval * state.config.second_ms,
        lease_seconds: 3 * queue.heartbeat_interval,
        queue_name: queue.name,
        environment_name: environment.name,
        organization_id: auth.org_id.clone(),
        control_plane_url: state.config.public_url.clone(),
        task_queue_name: queue.id.to_string(),
    }))
}

/// Runner views are built from at most this many of the newest registrations.
const RUNNER_SCAN: i64 = 10_000;

fn runners_of(workers: Vec<Worker>) -> Vec<Runner> {
    let mut by_name: BTreeMap<String, Vec<Worker>> = BTreeMap::new();
    for w in workers {
        by_name.entry(w.runner_name.clone()).or_default().push(w);
    }
    by_name
        .into_iter()
        .map(|(name, workers)| {
            let online = workers
                .iter()
                .filter(|w| matches!(w.status, WorkerStatus::Online | WorkerStatus::Busy))
                .count() as i64;
            let draining = workers.iter().any(|w| w.status == WorkerStatus::Draining);
            let mut queues: Vec<Uuid> = workers.iter().map(|w| w.worker_queue_id).collect();
            queues.sort();
            queues.dedup();
            Runner {
                status: if online > 0 {
                    RunnerHealth::Healthy
                } else if draining {
                    RunnerHealth::Degraded
                } else {
                    RunnerHealth::Offline
                },
                name,
                worker_count: workers.len() as i64,
                online_workers: online,
                worker_queue_ids: queues,
                workers,
            }
        })
        .collect()
}

/// Workers grouped by runner name, by name.
#[utoipa::path(get, path = "/api/v1/runners", tag = "workers", params(PageParams),
    responses((status = 200, body = Page<Runner>)))]
async fn list_runners(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
) -> ServiceResult<Json<Page<Runner>>> {
    let workers = state.store.workers(&auth.org_id).all(RUNNER_SCAN).await?;
    Ok(Json(Page::of_slice(runners_of(workers), page)))
}

/// Whether a runner has online workers, and how busy they are.
#[utoipa::path(get, path = "/api/v1/runners/{name}/health", tag = "workers", params(("name" = String, Path)),
    responses((status = 200, body = RunnerHealthReport), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn runner_health(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(name): Path<String>,
) -> ServiceResult<Json<RunnerHealthReport>> {
    let workers = state.store.workers(&auth.org_id).all(RUNNER_SCAN).await?;
    let runner = runners_of(workers)
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| ServiceError::not_found("runner"))?;
    Ok(Json(RunnerHealthReport {
        running_executions: runner.workers.iter().map(|w| w.current_executions.len() as i64).sum(),
        last_heartbeat_at: runner
            .workers
            .iter()
            .map(|w| w.last_heartbeat_at)
            .max()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        name: runner.name,
        status: runner.status,
        online_workers: runner.online_workers,
        worker_count: runner.worker_count,
    }))
}
