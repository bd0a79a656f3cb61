//! Workflow runs: `POST /workflows/{id}/start`, the run lists, one run, its stream, the
//! controls (pause, resume, cancel, retry, an approval's decision), and the runs a live
//! execution's workflow_executor tool starts and awaits.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cp_types::execution::ExecutionEvent;
use cp_types::workflow_run::{RunFilter, RunStatus, StartWorkflow, StepDecision, ToolRunRequest, WorkflowRun};
use cp_types::{Page, PageParams, Timestamp};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::{Auth, Enforcer, JsonBody, Pagination, Path, Query, Read, Write};
use crate::routes::executions::{resume_after, sse, stream_slot};
use crate::routes::workers::long_poll_wait;
use crate::services::error::{ServiceError, ServiceResult};
use crate::services::stream::Source;
use crate::services::workflow_engine::RunControl;
use crate::services::workflow_runs;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_workflow))
        .routes(routes!(list_workflow_runs))
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
        .routes(routes!(run_events))
        .routes(routes!(stream_run))
        .routes(routes!(pause_run))
        .routes(routes!(resume_run))
        .routes(routes!(cancel_run))
        .routes(routes!(retry_run))
        .routes(routes!(approve_step))
        .routes(routes!(reject_step))
        .routes(routes!(start_for_execution))
        .routes(routes!(await_for_execution))
}

fn not_found(e: cp_store::StoreError) -> ServiceError {
    ServiceError::from_store(e, "workflow run")
}

/// Starts a run of the workflow's current version: `inputs` are checked against its
/// `inputs_schema` (422 lists every error), and each working step needs a queue (its own, the
/// request's `worker_queue_id`, or the workflow's default).
#[utoipa::path(post, path = "/api/v1/workflows/{id}/start", tag = "workflow-runs",
    params(("id" = Uuid, Path)), request_body = StartWorkflow,
    responses((status = 201, body = WorkflowRun), (status = 404, body = cp_types::ErrorEnvelope),
        (status = 422, body = cp_types::ErrorEnvelope)))]
async fn start_workflow(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<StartWorkflow>,
) -> ServiceResult<(StatusCode, Json<WorkflowRun>)> {
    let run = workflow_runs::start(&state, &auth, id, req, Uuid::now_v7(), None).await?;
    Ok((StatusCode::CREATED, Json(run)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RunQuery {
    workflow_id: Option<Uuid>,
    /// Only runs started by this execution's workflow_executor tool.
    execution_id: Option<Uuid>,
    status: Option<RunStatus>,
    /// Only runs started at or after this instant (RFC 3339).
    #[param(value_type = Option<String>)]
    since: Option<Timestamp>,
}

/// The workflow's runs, newest first.
#[utoipa::path(get, path = "/api/v1/workflows/{id}/runs", tag = "workflow-runs",
    params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<WorkflowRun>), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn list_workflow_runs(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
    Pagination(page): Pagination,
) -> ServiceResult<Json<Page<WorkflowRun>>> {
    state
        .store
        .workflows(&auth.org_id)
        .get(id)
        .await
        .map_err(|e| ServiceError::from_store(e, "workflow"))?;
    let filter = RunFilter {
        workflow_id: Some(id),
        ..RunFilter::default()
    };
    Ok(Json(state.store.workflow_runs(&auth.org_id).list(filter, page).await?))
}

/// Runs of every workflow, newest first.
#[utoipa::path(get, path = "/api/v1/workflow-runs", tag = "workflow-runs", params(PageParams, RunQuery),
    responses((status = 200, body = Page<WorkflowRun>)))]
async fn list_runs(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
    Query(q): Query<RunQuery>,
) -> ServiceResult<Json<Page<WorkflowRun>>> {
    let filter = RunFilter {
        workflow_id: q.workflow_id,
        execution_id: q.execution_id,
        status: q.status,
        since: q.since,
    };
    Ok(Json(state.store.workflow_runs(&auth.org_id).list(filter, page).await?))
}

/// The run with every step's state, tries, times, output, error and execution.
#[utoipa::path(get, path = "/api/v1/workflow-runs/{id}", tag = "workflow-runs", params(("id" = Uuid, Path)),
    responses((status = 200, body = WorkflowRun), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_run(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<WorkflowRun>> {
    Ok(Json(workflow_runs::get(&state, &auth, id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Events with a greater `seq` (default 0: from the first).
    after: Option<i64>,
    /// At most this many (1–1000, default 100).
    limit: Option<i64>,
}

/// The run's stored events (`run_status`, `step_status`, `approval_requested`, the steps'
/// `message` and `tool_*` events, `done`).
#[utoipa::path(get, path = "/api/v1/workflow-runs/{id}/events", tag = "workflow-runs",
    params(("id" = Uuid, Path), EventsQuery),
    responses((status = 200, body = Vec<ExecutionEvent>), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn run_events(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
    Query(q): Query<EventsQuery>,
) -> ServiceResult<Json<Vec<ExecutionEvent>>> {
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(100);
    if after < 0 {
        return Err(ServiceError::invalid("after", "must not be negative"));
    }
    if !(1..=1000).contains(&limit) {
        return Err(ServiceError::invalid("limit", "must be between 1 and 1000"));
    }
    let runs = state.store.workflow_runs(&auth.org_id);
    runs.get(id).await.map_err(not_found)?;
    Ok(Json(runs.events(id, after, limit).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// Resume after this `seq` (the `Last-Event-ID` header wins when both are sent).
    after: Option<i64>,
}

/// The run's events as Server-Sent Events, with the run's own sequence numbers: stored ones
/// after the cursor, then live ones; ends after `done`. Besides `run_status`, `step_status`
/// and `approval_requested`, each step's `message` and `tool_*` events (tagged `step_id`,
/// `execution_id`) come when the step ends; its chunks are on the execution's own stream.
#[utoipa::path(get, path = "/api/v1/workflow-runs/{id}/stream", tag = "workflow-runs",
    params(("id" = Uuid, Path), StreamQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "The last `seq` received")),
    responses((status = 200, description = "text/event-stream: `id: <seq>`, `event: <type>`, `data: <json>`")))]
async fn stream_run(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> ServiceResult<Response> {
    let after = resume_after(&headers, q.after)?;
    state
        .store
        .workflow_runs(&auth.org_id)
        .get(id)
        .await
        .map_err(not_found)?;
    let slot = stream_slot(&state, &auth)?;
    Ok(sse(state, Source::WorkflowRun, auth.org_id.clone(), id, after, slot).into_response())
}

/// Starts nothing new until resumed; running steps go on.
#[utoipa::path(post, path = "/api/v1/workflow-runs/{id}/pause", tag = "workflow-runs", params(("id" = Uuid, Path)),
    responses((status = 200, body = WorkflowRun), (status = 404, body = cp_types::ErrorEnvelope),
        (status = 409, body = cp_types::ErrorEnvelope)))]
async fn pause_run(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<WorkflowRun>> {
    Ok(Json(
        workflow_runs::control(&state, &auth, id, RunControl::Pause).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/workflow-runs/{id}/resume", tag = "workflow-runs", params(("id" = Uuid, Path)),
    responses((status = 200, body = WorkflowRun), (status = 404, body = cp_types::ErrorEnvelope),
        (status = 409, body = cp_types::ErrorEnvelope)))]
async fn resume_run(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<WorkflowRun>> {
    Ok(Json(
        workflow_runs::control(&state, &auth, id, RunControl::Resume).await?,
    ))
}

/// Ends the run `cancelled`; running step executions are cancelled like any execution.
#[utoipa::path(post, path = "/api/v1/workflow-runs/{id}/cancel", tag = "workflow-runs", params(("id" = Uuid, Path)),
    responses((status = 200, body = WorkflowRun), (status = 404, body = cp_types::ErrorEnvelope),
        (status = 409, body = cp_types::ErrorEnvelope)))]
async fn cancel_run(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<WorkflowRun>> {
    Ok(Json(
        workflow_runs::control(&state, &auth, id, RunControl::Cancel).await?,
    ))
}

/// Runs the failed and cancelled steps of an ended run again, keeping completed outputs
/// (`attempt` counts the retries).
#[utoipa::path(post, path = "/api/v1/workflow-runs/{id}/retry", tag = "workflow-runs", params(("id" = Uuid, Path)),
    responses((status = 200, body = WorkflowRun), (status = 404, body = cp_types::ErrorEnvelope),
        (status = 409, body = cp_types::ErrorEnvelope)))]
async fn retry_run(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<WorkflowRun>> {
    Ok(Json(
        workflow_runs::control(&state, &auth, id, RunControl::Retry).await?,
    ))
}

async fn decide(
    state: AppState,
    auth: Auth<Write>,
    (id, step_id): (Uuid, String),
    approved: bool,
    req: StepDecision,
) -> ServiceResult<Json<WorkflowRun>> {
    if req.comment.as_deref().is_some_and(|c| c.chars().count() > 10_000) {
        return Err(ServiceError::invalid("comment", "at most 10,000 characters"));
    }
    let control = RunControl::Decide {
        step_id,
        approved,
        by: auth.key_name.clone(),
        key_id: auth.key_id,
        role: auth.role,
        comment: req.comment,
    };
    Ok(Json(workflow_runs::control(&state, &auth, id, control).await?))
}

/// Approves a step waiting for approval (who and when are recorded); the step's `approvers`
/// roles only (403 otherwise).
#[utoipa::path(post, path = "/api/v1/workflow-runs/{id}/steps/{step_id}/approve", tag = "workflow-runs",
    params(("id" = Uuid, Path), ("step_id" = String, Path)), request_body = StepDecision,
    responses((status = 200, body = WorkflowRun), (status = 403, body = cp_types::ErrorEnvelope),
        (status = 404, body = cp_types::ErrorEnvelope), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn approve_step(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(ids): Path<(Uuid, String)>,
    JsonBody(req): JsonBody<StepDecision>,
) -> ServiceResult<Json<WorkflowRun>> {
    decide(state, auth, ids, true, req).await
}

/// Rejects a step waiting for approval: the step fails, so its dependents never run.
#[utoipa::path(post, path = "/api/v1/workflow-runs/{id}/steps/{step_id}/reject", tag = "workflow-runs",
    params(("id" = Uuid, Path), ("step_id" = String, Path)), request_body = StepDecision,
    responses((status = 200, body = WorkflowRun), (status = 403, body = cp_types::ErrorEnvelope),
        (status = 404, body = cp_types::ErrorEnvelope), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn reject_step(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(ids): Path<(Uuid, String)>,
    JsonBody(req): JsonBody<StepDecision>,
) -> ServiceResult<Json<WorkflowRun>> {
    decide(state, auth, ids, false, req).await
}

/// Starts a workflow for a live execution's workflow_executor tool (a worker key: only for a
/// run its workers hold): one its agent's skill names (by id or name, or an inline
/// definition), on the execution's queue. A worker's request acts for the key that started the
/// execution. The run is listed under `GET /workflow-runs?execution_id=`; the same `id` again
/// answers the run it started (200).
#[utoipa::path(post, path = "/api/v1/executions/{id}/workflow-runs", tag = "workflow-runs",
    params(("id" = Uuid, Path)), request_body = ToolRunRequest,
    responses((status = 201, body = WorkflowRun), (status = 200, body = WorkflowRun),
        (status = 403, body = cp_types::ErrorEnvelope), (status = 404, body = cp_types::ErrorEnvelope),
        (status = 409, body = cp_types::ErrorEnvelope), (status = 422, body = cp_types::ErrorEnvelope)))]
async fn start_for_execution(
    State(state): State<AppState>,
    auth: Auth<Enforcer>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<ToolRunRequest>,
) -> ServiceResult<(StatusCode, Json<WorkflowRun>)> {
    let (run, created) = workflow_runs::start_for_execution(&state, &auth, id, req).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(run)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AwaitQuery {
    /// Seconds to wait for the run to end (0 to 60, default 30).
    wait: Option<f64>,
}

/// A run the execution's tool started, once it ended or `wait` passed.
#[utoipa::path(get, path = "/api/v1/executions/{id}/workflow-runs/{run_id}", tag = "workflow-runs",
    params(("id" = Uuid, Path), ("run_id" = Uuid, Path), AwaitQuery),
    responses((status = 200, body = WorkflowRun), (status = 403, body = cp_types::ErrorEnvelope),
        (status = 404, body = cp_types::ErrorEnvelope), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn await_for_execution(
    State(state): State<AppState>,
    auth: Auth<Enforcer>,
    Path((id, run_id)): Path<(Uuid, Uuid)>,
    Query(q): Query<AwaitQuery>,
) -> ServiceResult<Json<WorkflowRun>> {
    let wait = long_poll_wait(q.wait)?;
    let slot = || stream_slot(&state, &auth);
    Ok(Json(
        workflow_runs::await_for_execution(&state, &auth, id, run_id, wait, slot).await?,
    ))
}
