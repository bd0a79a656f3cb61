//! `/api/v1/environments/{env_id}/worker-queues` and `/api/v1/worker-queues/...`: queues, the
//! workers and executions on them, their metrics and the command that starts a worker.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use cp_store::executions::ExecutionFilter;
use cp_store::workers::WorkerFilter;
use cp_types::execution::{Execution, ExecutionStatus};
use cp_types::worker::{RegisterWorker, Worker, WorkerRegistration};
use cp_types::worker_queue::{
    CreateWorkerQueue, QueueMetrics, QueueStatus, QueueWorkerCommand, UpdateWorkerQueue, WorkerQueue,
};
use cp_types::{Deleted, Page, PageParams};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::{Auth, JsonBody, Pagination, Path, Query, Read, WorkerApi, Write};
use crate::services::error::{ServiceError, ServiceResult};
use crate::services::notify::{Notice, notify};
use crate::services::workers::{register_on, worker_command_parts};
use crate::state::AppState;
use cp_types::ids::QueueId;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_environment_queues, create_queue))
        .routes(routes!(list_queues))
        .routes(routes!(get_queue, update_queue, delete_queue))
        .routes(routes!(queue_workers))
        .routes(routes!(queue_executions))
        .routes(routes!(queue_metrics))
        .routes(routes!(queue_worker_command))
        .routes(routes!(start_worker))
}

fn not_found(e: cp_store::StoreError) -> ServiceError {
    ServiceError::from_store(e, "worker queue")
}

/// Queues of one environment, newest first.
#[utoipa::path(get, path = "/api/v1/environments/{env_id}/worker-queues", tag = "worker-queues",
    params(("env_id" = Uuid, Path), PageParams), responses((status = 200, body = Page<WorkerQueue>)))]
async fn list_environment_queues(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(env_id): Path<Uuid>,
    Pagination(page): Pagination,
) -> ServiceResult<Json<Page<WorkerQueue>>> {
    state
        .store
        .environments(&auth.org_id)
        .get(env_id)
        .await
        .map_err(|e| ServiceError::from_store(e, "environment"))?;
    Ok(Json(
        state.store.worker_queues(&auth.org_id).list(Some(env_id), page).await?,
    ))
}

/// Creates a queue in an environment (404 for an unknown environment, 409 for a name the
/// environment already has).
#[utoipa::path(post, path = "/api/v1/environments/{env_id}/worker-queues", tag = "worker-queues",
    params(("env_id" = Uuid, Path)), request_body = CreateWorkerQueue,
    responses((status = 201, body = WorkerQueue), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn create_queue(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(env_id): Path<Uuid>,
    JsonBody(req): JsonBody<CreateWorkerQueue>,
) -> ServiceResult<(StatusCode, Json<WorkerQueue>)> {
    req.validate()?;
    let queue = state
        .store
        .worker_queues(&auth.org_id)
        .create(env_id, &req, &auth.key_id.to_string())
        .await
        .map_err(|e| ServiceError::from_store(e, "environment"))?;
    Ok((StatusCode::CREATED, Json(queue)))
}

/// Every queue of the organization, newest first.
#[utoipa::path(get, path = "/api/v1/worker-queues", tag = "worker-queues", params(PageParams),
    responses((status = 200, body = Page<WorkerQueue>)))]
async fn list_queues(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
) -> ServiceResult<Json<Page<WorkerQueue>>> {
    Ok(Json(state.store.worker_queues(&auth.org_id).list(None, page).await?))
}

#[utoipa::path(get, path = "/api/v1/worker-queues/{id}", tag = "worker-queues", params(("id" = Uuid, Path)),
    responses((status = 200, body = WorkerQueue), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_queue(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<WorkerQueue>> {
    Ok(Json(
        state
            .store
            .worker_queues(&auth.org_id)
            .get(id)
            .await
            .map_err(not_found)?,
    ))
}

/// Partial update (PATCH and PUT alike).
#[utoipa::path(method(patch, put), path = "/api/v1/worker-queues/{id}", tag = "worker-queues",
    params(("id" = Uuid, Path)), request_body = UpdateWorkerQueue, responses((status = 200, body = WorkerQueue)))]
async fn update_queue(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<UpdateWorkerQueue>,
) -> ServiceResult<Json<WorkerQueue>> {
    req.validate()?;
    let queue = state
        .store
        .worker_queues(&auth.org_id)
        .update(id, &req)
        .await
        .map_err(not_found)?;
    // Pollers re-check the queue: a queue made active again has claimable work.
    notify(&state, Notice::Queue { queue: QueueId(id) });
    Ok(Json(queue))
}

/// Deletes a queue; 409 while it has online workers or queued or running executions.
#[utoipa::path(delete, path = "/api/v1/worker-queues/{id}", tag = "worker-queues", params(("id" = Uuid, Path)),
    responses((status = 200, body = Deleted), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn delete_queue(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Deleted>> {
    state
        .store
        .worker_queues(&auth.org_id)
        .delete(id)
        .await
        .map_err(not_found)?;
    Ok(Json(Deleted::new(id)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct WorkersQuery {
    /// Only workers heard from within 3 heartbeat intervals.
    #[serde(default)]
    online_only: bool,
}

/// The workers registered on a queue, newest first.
#[utoipa::path(get, path = "/api/v1/worker-queues/{id}/workers", tag = "worker-queues",
    params(("id" = Uuid, Path), PageParams, WorkersQuery), responses((status = 200, body = Page<Worker>)))]
async fn queue_workers(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
    Pagination(page): Pagination,
    Query(q): Query<WorkersQuery>,
) -> ServiceResult<Json<Page<Worker>>> {
    state
        .store
        .worker_queues(&auth.org_id)
        .get(id)
        .await
        .map_err(not_found)?;
    let filter = WorkerFilter {
        worker_queue_id: Some(id),
        online_only: q.online_only,
    };
    Ok(Json(state.store.workers(&auth.org_id).list(filter, page).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct QueueExecutionsQuery {
    /// Only executions with this status.
    status: Option<ExecutionStatus>,
}

/// The executions sent to a queue, newest first.
#[utoipa::path(get, path = "/api/v1/worker-queues/{id}/executions", tag = "worker-queues",
    params(("id" = Uuid, Path), PageParams, QueueExecutionsQuery), responses((status = 200, body = Page<Execution>)))]
async fn queue_executions(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
    Pagination(page): Pagination,
    Query(q): Query<QueueExecutionsQuery>,
) -> ServiceResult<Json<Page<Execution>>> {
    state
        .store
        .worker_queues(&auth.org_id)
        .get(id)
        .await
        .map_err(not_found)?;
    let filter = ExecutionFilter {
        status: q.status,
        worker_queue_id: Some(id),
        ..Default::default()
    };
    Ok(Json(state.store.executions(&auth.org_id).list(filter, page).await?))
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted.get(rank.min(sorted.len() - 1)).copied()
}

/// Depth, throughput and wait-time percentiles of a queue.
#[utoipa::path(get, path = "/api/v1/worker-queues/{id}/metrics", tag = "worker-queues", params(("id" = Uuid, Path)),
    responses((status = 200, body = QueueMetrics)))]
async fn queue_metrics(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<QueueMetrics>> {
    let queues = state.store.worker_queues(&auth.org_id);
    let queue = queues.get(id).await.map_err(not_found)?;
    let figures = queues.figures(id).await?;
    let mut waits = figures.waits;
    waits.sort_by(f64::total_cmp);
    Ok(Json(QueueMetrics {
        queue_id: id,
        depth: queue.queued_executions,
        running: queue.running_executions,
        active_workers: queue.active_workers,
        completed_last_minute: figures.completed_last_minute,
        completed_last_hour: figures.completed_last_hour,
        failed_last_hour: figures.failed_last_hour,
        wait_seconds_p50: percentile(&waits, 50.0),
        wait_seconds_p95: percentile(&waits, 95.0),
        wait_seconds_p99: percentile(&waits, 99.0),
    }))
}

/// The exact `kubiya-cp worker …` command for this queue.
#[utoipa::path(get, path = "/api/v1/worker-queues/{id}/worker-command", tag = "worker-queues",
    params(("id" = Uuid, Path)), responses((status = 200, body = QueueWorkerCommand)))]
async fn queue_worker_command(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<QueueWorkerCommand>> {
    let queue = state
        .store
        .worker_queues(&auth.org_id)
        .get(id)
        .await
        .map_err(not_found)?;
    let parts = worker_command_parts(&state.config.public_url, id);
    Ok(Json(QueueWorkerCommand {
        queue_id: id,
        command: parts.join(" "),
        command_parts: parts,
        can_register: queue.status == QueueStatus::Active && queue.max_workers.is_none_or(|m| queue.active_workers < m),
        queue_status: queue.status,
        active_workers: queue.active_workers,
        max_workers: queue.max_workers,
    }))
}

/// Registers a worker on this queue (409 when the queue is not active or already has
/// `max_workers` online).
#[utoipa::path(post, path = "/api/v1/worker-queues/{id}/start", tag = "workers", params(("id" = Uuid, Path)),
    request_body = RegisterWorker, responses((status = 201, body = WorkerRegistration),
    (status = 409, body = cp_types::ErrorEnvelope)))]
async fn start_worker(
    State(state): State<AppState>,
    auth: Auth<WorkerApi>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<RegisterWorker>,
) -> ServiceResult<(StatusCode, Json<WorkerRegistration>)> {
    Ok((StatusCode::CREATED, Json(register_on(&state, &auth, id, &req).await?)))
}
