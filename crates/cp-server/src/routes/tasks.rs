//! Task planning: `POST /tasks/plan` (and `/planning/plan`, which the official client calls),
//! its SSE stream, the stored plans, and running a plan as a workflow.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cp_types::plan::{ExecuteInlinePlan, ExecutePlan, PlanExecution, PlanRequest, PlanResponse, StoredPlan};
use cp_types::{Deleted, Page, PageParams};
use futures::StreamExt;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::idempotency::NoReplay;
use crate::http::{Auth, JsonBody, Pagination, Path, Read, Write};
use crate::routes::executions::stream_slot;
use crate::services::caller::Caller;
use crate::services::error::{ServiceResult, or_not_found};
use crate::services::planner::{self, Events, Progress, execute};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(plan_task))
        .routes(routes!(plan_task_alias))
        .routes(routes!(plan_stream))
        .routes(routes!(plan_stream_alias))
        .routes(routes!(list_plans))
        .routes(routes!(get_plan))
        .routes(routes!(delete_plan))
        .routes(routes!(execute_plan))
        .routes(routes!(execute_inline_plan))
}

async fn plan(state: &AppState, caller: &Caller, req: PlanRequest) -> ServiceResult<(StatusCode, Json<PlanResponse>)> {
    let prepared = planner::prepare(state, caller, req).await?;
    let answer = planner::plan(state, caller, prepared, &Events::default()).await?;
    Ok((StatusCode::CREATED, Json(answer)))
}

/// Plans a task over the organization's agents and teams with its default model (or
/// `planner_model_id`), or with the heuristic when no model can (`planner: heuristic` and
/// `planner_reason`). The plan is stored; with `previous_plan_id` and `feedback` it is that
/// plan's next iteration. 422 when the organization has no agent.
#[utoipa::path(post, path = "/api/v1/tasks/plan", tag = "task-planning", request_body = PlanRequest,
    responses((status = 201, body = PlanResponse), (status = 404, body = cp_types::ErrorEnvelope),
        (status = 422, body = cp_types::ErrorEnvelope)))]
async fn plan_task(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(req): JsonBody<PlanRequest>,
) -> ServiceResult<(StatusCode, Json<PlanResponse>)> {
    plan(&state, &auth, req).await
}

/// `POST /tasks/plan` at the path the official client calls.
#[utoipa::path(post, path = "/api/v1/planning/plan", tag = "task-planning", request_body = PlanRequest,
    responses((status = 201, body = PlanResponse), (status = 404, body = cp_types::ErrorEnvelope),
        (status = 422, body = cp_types::ErrorEnvelope)))]
async fn plan_task_alias(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(req): JsonBody<PlanRequest>,
) -> ServiceResult<(StatusCode, Json<PlanResponse>)> {
    plan(&state, &auth, req).await
}

fn progress_event(p: Progress) -> Result<Event, Infallible> {
    let event = match p {
        Progress::Stage { stage, message } => Event::default()
            .event("progress")
            .json_data(json!({"stage": stage, "message": message})),
        Progress::Chunk(text) => Event::default().event("plan_chunk").json_data(json!({"text": text})),
    };
    Ok(event.unwrap_or_else(|_| Event::default().comment("unserializable")))
}

async fn stream(state: AppState, caller: Arc<Caller>, req: PlanRequest) -> ServiceResult<Response> {
    let slot = stream_slot(&state, &caller)?;
    let prepared = planner::prepare(&state, &caller, req).await?;
    let (events, rx) = Events::channel();
    // The plan goes on if the client leaves (it is stored all the same) and holds the slot
    // until it is made, so clients that leave at once cannot start plans without bound. Its
    // progress ends when it returns and drops `events`; its answer comes last.
    let planning = tokio::spawn(async move {
        let _slot = slot;
        planner::plan(&state, &caller, prepared, &events).await
    });
    let progress = futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|p| (progress_event(p), rx)) },
    );
    let last = futures::stream::once(async move {
        let event = match planning.await {
            Ok(Ok(answer)) => Event::default().event("complete").json_data(&answer),
            Ok(Err(e)) => Event::default()
                .event("error")
                .json_data(json!({"code": e.code, "message": e.message})),
            Err(_) => Event::default()
                .event("error")
                .json_data(json!({"code": cp_types::ErrorCode::InternalError, "message": "internal error"})),
        };
        Ok(event.unwrap_or_else(|_| Event::default().event("error")))
    });
    let sse =
        Sse::new(progress.chain(last)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("keepalive"));
    let mut resp = sse.into_response();
    // A stream cannot be replayed: a retry with the same idempotency key plans again.
    resp.extensions_mut().insert(NoReplay);
    Ok(resp)
}

/// The plan as it is made, as server-sent events: `progress {stage, message}` at once and
/// at each stage, `plan_chunk {text}` as the model writes, then `complete` (the answer of
/// `POST /tasks/plan`) or `error {code, message}`.
#[utoipa::path(post, path = "/api/v1/tasks/plan/stream", tag = "task-planning", request_body = PlanRequest,
    responses((status = 200, description = "text/event-stream: `progress`, `plan_chunk`, `complete`, `error`"),
        (status = 422, body = cp_types::ErrorEnvelope)))]
async fn plan_stream(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(req): JsonBody<PlanRequest>,
) -> ServiceResult<Response> {
    stream(state, auth.principal.clone(), req).await
}

/// `POST /tasks/plan/stream` at the path the official client calls.
#[utoipa::path(post, path = "/api/v1/planning/plan/stream", tag = "task-planning", request_body = PlanRequest,
    responses((status = 200, description = "text/event-stream: `progress`, `plan_chunk`, `complete`, `error`"),
        (status = 422, body = cp_types::ErrorEnvelope)))]
async fn plan_stream_alias(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(req): JsonBody<PlanRequest>,
) -> ServiceResult<Response> {
    stream(state, auth.principal.clone(), req).await
}

/// Stored plans, newest first, each with its latest iteration.
#[utoipa::path(get, path = "/api/v1/tasks/plans", tag = "task-planning", params(PageParams),
    responses((status = 200, body = Page<StoredPlan>)))]
async fn list_plans(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
) -> ServiceResult<Json<Page<StoredPlan>>> {
    Ok(Json(state.store.task_plans(&auth.org_id).list(page).await?))
}

/// One plan with every iteration (oldest first) and the workflow runs it started, with
/// their state.
#[utoipa::path(get, path = "/api/v1/tasks/plans/{id}", tag = "task-planning", params(("id" = Uuid, Path)),
    responses((status = 200, body = StoredPlan), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_plan(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<StoredPlan>> {
    let plan = state.store.task_plans(&auth.org_id).get_with_history(id).await;
    Ok(Json(plan.map_err(or_not_found("plan"))?))
}

/// Deletes a plan and its iterations; the workflows and runs it started stay.
#[utoipa::path(delete, path = "/api/v1/tasks/plans/{id}", tag = "task-planning", params(("id" = Uuid, Path)),
    responses((status = 200, body = Deleted), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn delete_plan(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Deleted>> {
    state
        .store
        .task_plans(&auth.org_id)
        .delete(id)
        .await
        .map_err(or_not_found("plan"))?;
    Ok(Json(Deleted::new(id)))
}

/// Runs the plan's latest iteration as a workflow (one agent or team step per plan step,
/// dependencies kept) on `worker_queue_id` or the plan's recommended queue. 409 lists the
/// plan's questions while they are unanswered (`answers`, in order), unless `force`.
#[utoipa::path(post, path = "/api/v1/tasks/plans/{id}/execute", tag = "task-planning", params(("id" = Uuid, Path)),
    request_body = ExecutePlan,
    responses((status = 201, body = PlanExecution), (status = 404, body = cp_types::ErrorEnvelope),
        (status = 409, body = cp_types::ErrorEnvelope), (status = 422, body = cp_types::ErrorEnvelope)))]
async fn execute_plan(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<ExecutePlan>,
) -> ServiceResult<(StatusCode, Json<PlanExecution>)> {
    let started = execute::stored(&state, &auth, id, req).await?;
    Ok((StatusCode::CREATED, Json(started)))
}

/// Runs a plan the client holds (from the stream, say) as a workflow on `worker_queue_id`.
#[utoipa::path(post, path = "/api/v1/tasks/plan/execute", tag = "task-planning", request_body = ExecuteInlinePlan,
    responses((status = 201, body = PlanExecution), (status = 409, body = cp_types::ErrorEnvelope),
        (status = 422, body = cp_types::ErrorEnvelope)))]
async fn execute_inline_plan(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(req): JsonBody<ExecuteInlinePlan>,
) -> ServiceResult<(StatusCode, Json<PlanExecution>)> {
    let started = execute::inline(&state, &auth, req).await?;
    Ok((StatusCode::CREATED, Json(started)))
}
