//! Executions: execute an agent or team, read and control executions, follow their events
//! (SSE), and the worker's side of a run (events, complete, fail) under its lease.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cp_store::executions::{Control, ExecutionFilter, Outcome};
use cp_types::execution::{
    CompleteExecution, EventBatch, EventsStored, ExecuteRequest, Execution, ExecutionAccepted, ExecutionEvent,
    ExecutionMessage, ExecutionStatus, ExecutionType, FailExecution, PatchExecution, Session,
};
use cp_types::ids::{ExecutionId, LeaseId};
use cp_types::{ErrorCode, Page, PageParams, Timestamp};
use futures::Stream;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::extract::RunReport;
use crate::http::idempotency::NoReplay;
use crate::http::{Auth, JsonBody, Pagination, Path, Query, Read, WorkerApi, Write};
use crate::services::caller::Caller;
use crate::services::dispatch;
use crate::services::error::{ServiceError, ServiceResult};
use crate::services::keys::{MAX_STREAMS_PER_KEY, StreamSlot};
use crate::services::notify::{Notice, notify};
use crate::services::stream::{Follower, Source};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(execute_agent))
        .routes(routes!(execute_team))
        .routes(routes!(list_executions))
        .routes(routes!(get_execution, patch_execution))
        .routes(routes!(list_events, post_events))
        .routes(routes!(stream))
        .routes(routes!(session))
        .routes(routes!(cancel))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(message))
        .routes(routes!(complete))
        .routes(routes!(fail))
}

fn not_found(e: cp_store::StoreError) -> ServiceError {
    ServiceError::from_store(e, "execution")
}

/// 201 with the accepted execution, or (with `stream: true`) 200 with its event stream.
async fn accept(
    state: AppState,
    auth: &Caller,
    kind: ExecutionType,
    id: Uuid,
    req: ExecuteRequest,
) -> ServiceResult<Response> {
    // A stream's place is taken first, so a key past its limit starts no run.
    let slot = req.stream.then(|| stream_slot(&state, auth)).transpose()?;
    let execution = dispatch::execute(&state, auth, kind, id, &req, ExecutionId(Uuid::now_v7())).await?;
    if let Some(slot) = slot {
        let mut resp = sse(state, Source::Execution, auth.org_id.clone(), execution.id, 0, slot).into_response();
        if let Ok(v) = HeaderValue::from_str(&execution.id.to_string()) {
            resp.headers_mut().insert("x-execution-id", v);
        }
        // A stream cannot be replayed; a retry with the same key runs again.
        resp.extensions_mut().insert(NoReplay);
        return Ok(resp);
    }
    let accepted = ExecutionAccepted {
        execution_id: execution.id,
        status: execution.status,
        worker_queue_id: execution.worker_queue_id.unwrap_or_default(),
        created_at: execution.created_at,
        stream_url: format!("/api/v1/executions/{}/stream", execution.id),
    };
    Ok((StatusCode::CREATED, Json(accepted)).into_response())
}

/// Runs an agent: stores the execution `queued` on the worker queue and wakes its workers.
#[utoipa::path(post, path = "/api/v1/agents/{id}/execute", tag = "executions", params(("id" = Uuid, Path)),
    request_body = ExecuteRequest, responses((status = 201, body = ExecutionAccepted),
    (status = 200, description = "`stream: true`: the execution's events as text/event-stream"),
    (status = 404, body = cp_types::ErrorEnvelope), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn execute_agent(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<ExecuteRequest>,
) -> ServiceResult<Response> {
    accept(state, &auth, ExecutionType::Agent, id, req).await
}

/// Runs a team, like an agent.
#[utoipa::path(post, path = "/api/v1/teams/{id}/execute", tag = "executions", params(("id" = Uuid, Path)),
    request_body = ExecuteRequest, responses((status = 201, body = ExecutionAccepted),
    (status = 200, description = "`stream: true`: the execution's events as text/event-stream"),
    (status = 404, body = cp_types::ErrorEnvelope), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn execute_team(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<ExecuteRequest>,
) -> ServiceResult<Response> {
    accept(state, &auth, ExecutionType::Team, id, req).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ExecutionQuery {
    status: Option<ExecutionStatus>,
    execution_type: Option<ExecutionType>,
    /// The agent or team executed.
    entity_id: Option<Uuid>,
    worker_queue_id: Option<Uuid>,
    /// Only executions created at or after this instant (RFC 3339).
    #[param(value_type = Option<String>)]
    since: Option<Timestamp>,
}

/// Executions, newest first.
#[utoipa::path(get, path = "/api/v1/executions", tag = "executions", params(PageParams, ExecutionQuery),
    responses((status = 200, body = Page<Execution>)))]
async fn list_executions(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
    Query(q): Query<ExecutionQuery>,
) -> ServiceResult<Json<Page<Execution>>> {
    let filter = ExecutionFilter {
        status: q.status,
        execution_type: q.execution_type,
        entity_id: q.entity_id,
        worker_queue_id: q.worker_queue_id,
        since: q.since,
    };
    Ok(Json(state.store.executions(&auth.org_id).list(filter, page).await?))
}

#[utoipa::path(get, path = "/api/v1/executions/{id}", tag = "executions", params(("id" = Uuid, Path)),
    responses((status = 200, body = Execution), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_execution(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Execution>> {
    Ok(Json(
        state.store.executions(&auth.org_id).get(id).await.map_err(not_found)?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Events with a greater `seq` (default 0: from the first).
    after: Option<i64>,
    /// At most this many (1..=500, default 100).
    limit: Option<i64>,
}

/// Stored events after a sequence number, oldest first; `total` is the number stored.
#[utoipa::path(get, path = "/api/v1/executions/{id}/events", tag = "executions", params(("id" = Uuid, Path), EventsQuery),
    responses((status = 200, body = Page<ExecutionEvent>)))]
async fn list_events(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
    Query(q): Query<EventsQuery>,
) -> ServiceResult<Json<Page<ExecutionEvent>>> {
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(100);
    if after < 0 {
        return Err(ServiceError::invalid("after", "must not be negative"));
    }
    if !(1..=500).contains(&limit) {
        return Err(ServiceError::invalid("limit", "must be between 1 and 500"));
    }
    let executions = state.store.executions(&auth.org_id);
    let execution = executions.get(id).await.map_err(not_found)?;
    let items = executions.events(id, after, limit).await?;
    Ok(Json(Page {
        items,
        total: execution.event_count,
        limit,
        offset: after,
    }))
}

/// The lease id a worker sends with every write to its run.
fn lease(headers: &HeaderMap) -> ServiceResult<LeaseId> {
    let value = headers
        .get("x-lease-id")
        .ok_or_else(|| ServiceError::invalid("X-Lease-Id", "the header with the claim's lease_id is required"))?;
    value
        .to_str()
        .ok()
        .and_then(|s| Uuid::parse_str(s.trim()).ok())
        .map(LeaseId)
        .ok_or_else(|| ServiceError::invalid("X-Lease-Id", "must be a UUID"))
}

/// A worker's events for its run, stored with the next sequence numbers (409 on a stale lease).
#[utoipa::path(post, path = "/api/v1/executions/{id}/events", tag = "executions", params(("id" = Uuid, Path),
    ("X-Lease-Id" = Uuid, Header, description = "The lease of the claim")), request_body = EventBatch,
    responses((status = 201, body = EventsStored), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn post_events(
    State(state): State<AppState>,
    auth: Auth<WorkerApi>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    RunReport(batch): RunReport<EventBatch>,
) -> ServiceResult<(StatusCode, Json<EventsStored>)> {
    let lease_id = lease(&headers)?;
    let events = batch.into_events()?;
    let stored = state
        .store
        .executions(&auth.org_id)
        .append(ExecutionId(id), lease_id, events)
        .await
        .map_err(not_found)?;
    notify(
        &state,
        Notice::Events {
            execution: id,
            events: &stored,
        },
    );
    Ok((
        StatusCode::CREATED,
        Json(EventsStored {
            execution_id: id,
            first_seq: stored.first().map_or(0, |e| e.seq),
            last_seq: stored.last().map_or(0, |e| e.seq),
        }),
    ))
}

async fn finish(
    state: &AppState,
    org: &str,
    id: Uuid,
    lease_id: LeaseId,
    outcome: Outcome,
) -> ServiceResult<Json<Execution>> {
    let changed = state
        .store
        .executions(org)
        .finish(ExecutionId(id), lease_id, outcome)
        .await
        .map_err(not_found)?;
    notify(state, Notice::Changed(&changed));
    Ok(Json(changed.record.execution))
}

/// The run answered: `completed` (or `waiting_for_input`), with the response and usage.
#[utoipa::path(post, path = "/api/v1/executions/{id}/complete", tag = "executions", params(("id" = Uuid, Path),
    ("X-Lease-Id" = Uuid, Header, description = "The lease of the claim")), request_body = CompleteExecution,
    responses((status = 200, body = Execution), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn complete(
    State(state): State<AppState>,
    auth: Auth<WorkerApi>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    RunReport(req): RunReport<CompleteExecution>,
) -> ServiceResult<Json<Execution>> {
    let lease_id = lease(&headers)?;
    let outcome = Outcome::Completed {
        response: req.response,
        usage: req.usage,
        waiting_for_input: req.waiting_for_input,
    };
    finish(&state, &auth.org_id, id, lease_id, outcome).await
}

/// The run failed; a `retryable` failure goes back to the queue while attempts remain.
#[utoipa::path(post, path = "/api/v1/executions/{id}/fail", tag = "executions", params(("id" = Uuid, Path),
    ("X-Lease-Id" = Uuid, Header, description = "The lease of the claim")), request_body = FailExecution,
    responses((status = 200, body = Execution), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn fail(
    State(state): State<AppState>,
    auth: Auth<WorkerApi>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    RunReport(req): RunReport<FailExecution>,
) -> ServiceResult<Json<Execution>> {
    let lease_id = lease(&headers)?;
    let outcome = Outcome::Failed {
        error_message: req.error_message,
        retryable: req.retryable,
        usage: req.usage,
        error_kind: req.error_kind,
    };
    finish(&state, &auth.org_id, id, lease_id, outcome).await
}

/// A worker reporting its run's end as a status: `completed`, `waiting_for_input`, `failed`
/// or `cancelled` do what complete and fail do; `running` changes nothing.
#[utoipa::path(patch, path = "/api/v1/executions/{id}", tag = "executions", params(("id" = Uuid, Path),
    ("X-Lease-Id" = Uuid, Header, description = "The lease of the claim")), request_body = PatchExecution,
    responses((status = 200, body = Execution), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn patch_execution(
    State(state): State<AppState>,
    auth: Auth<WorkerApi>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<PatchExecution>,
) -> ServiceResult<Json<Execution>> {
    let lease_id = lease(&headers)?;
    let outcome = match req.status {
        Some(ExecutionStatus::Completed) | Some(ExecutionStatus::WaitingForInput) => Outcome::Completed {
            response: req.response,
            usage: req.usage,
            waiting_for_input: req.status == Some(ExecutionStatus::WaitingForInput),
        },
        Some(ExecutionStatus::Failed) | Some(ExecutionStatus::Cancelled) => Outcome::Failed {
            error_message: req.error_message,
            retryable: false,
            usage: req.usage,
            error_kind: None,
        },
        Some(ExecutionStatus::Running) | None => {
            let record = state
                .store
                .executions(&auth.org_id)
                .record(id)
                .await
                .map_err(not_found)?;
            if record.lease_id != Some(lease_id) || !record.execution.status.is_held() {
                return Err(ServiceError::conflict(
                    "the lease is no longer valid: the execution moved on",
                ));
            }
            return Ok(Json(record.execution));
        }
        Some(other) => {
            return Err(ServiceError::invalid(
                "status",
                format!("a worker reports completed, waiting_for_input, failed or cancelled, not {other}"),
            ));
        }
    };
    finish(&state, &auth.org_id, id, lease_id, outcome).await
}

async fn control(state: &AppState, org: &str, id: Uuid, control: Control) -> ServiceResult<Json<Execution>> {
    let changed = state
        .store
        .executions(org)
        .control(ExecutionId(id), control)
        .await
        .map_err(not_found)?;
    notify(state, Notice::Changed(&changed));
    Ok(Json(changed.record.execution))
}

/// Cancels: a waiting execution at once; a running one becomes `cancelling` until its worker
/// stops (or 2 heartbeat intervals pass).
#[utoipa::path(post, path = "/api/v1/executions/{id}/cancel", tag = "executions", params(("id" = Uuid, Path)),
    responses((status = 200, body = Execution), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn cancel(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Execution>> {
    control(&state, &auth.org_id, id, Control::Cancel).await
}

/// Holds an execution: it is not dispatched (a running one is taken from its worker) until
/// resumed.
#[utoipa::path(post, path = "/api/v1/executions/{id}/pause", tag = "executions", params(("id" = Uuid, Path)),
    responses((status = 200, body = Execution), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn pause(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Execution>> {
    control(&state, &auth.org_id, id, Control::Pause).await
}

/// Puts a paused execution back on its queue.
#[utoipa::path(post, path = "/api/v1/executions/{id}/resume", tag = "executions", params(("id" = Uuid, Path)),
    responses((status = 200, body = Execution), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn resume(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Execution>> {
    dispatch::check_continuation(&state, &auth, id, None).await?;
    control(&state, &auth.org_id, id, Control::Resume).await
}

/// Continues the conversation of a completed or waiting execution: the message is stored and
/// the execution queued again.
#[utoipa::path(post, path = "/api/v1/executions/{id}/message", tag = "executions", params(("id" = Uuid, Path)),
    request_body = ExecutionMessage, responses((status = 200, body = Execution), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn message(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<ExecutionMessage>,
) -> ServiceResult<Json<Execution>> {
    if req.message.trim().is_empty() || req.message.len() > 200_000 {
        return Err(ServiceError::invalid("message", "must be 1 to 200000 bytes"));
    }
    dispatch::check_continuation(&state, &auth, id, Some(&req.message)).await?;
    control(&state, &auth.org_id, id, Control::Message { text: req.message }).await
}

/// The conversation as messages.
#[utoipa::path(get, path = "/api/v1/executions/{id}/session", tag = "executions", params(("id" = Uuid, Path)),
    responses((status = 200, body = Session)))]
async fn session(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Session>> {
    let executions = state.store.executions(&auth.org_id);
    executions.get(id).await.map_err(not_found)?;
    let messages = executions.session(id).await?;
    Ok(Json(Session {
        session_id: id.to_string(),
        execution_id: id,
        message_count: messages.len() as i64,
        messages,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// Resume after this `seq` (the `Last-Event-ID` header wins when both are sent).
    after: Option<i64>,
}

/// The execution's events as Server-Sent Events: stored ones after the cursor, then live ones
/// as they are stored, with no gap and no duplicate; ends after the terminal `done`.
#[utoipa::path(get, path = "/api/v1/executions/{id}/stream", tag = "executions", params(("id" = Uuid, Path), StreamQuery,
    ("Last-Event-ID" = Option<i64>, Header, description = "The last `seq` received")),
    responses((status = 200, description = "text/event-stream: `id: <seq>`, `event: <type>`, `data: <json>`")))]
async fn stream(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> ServiceResult<Response> {
    let after = resume_after(&headers, q.after)?;
    state.store.executions(&auth.org_id).get(id).await.map_err(not_found)?;
    let slot = stream_slot(&state, &auth)?;
    Ok(sse(state, Source::Execution, auth.org_id.clone(), id, after, slot).into_response())
}

/// Where a stream resumes: after `Last-Event-ID`, else after `?after=`, else from the start.
pub(crate) fn resume_after(headers: &HeaderMap, after: Option<i64>) -> ServiceResult<i64> {
    let from_header = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| ServiceError::invalid("Last-Event-ID", "must be a non-negative event seq"))?,
        ),
        None => None,
    };
    let after = from_header.or(after).unwrap_or(0);
    if after < 0 {
        return Err(ServiceError::invalid("after", "must not be negative"));
    }
    Ok(after)
}

/// A place for one more stream of the caller's key: at most [`MAX_STREAMS_PER_KEY`] at once
/// (429 past it).
pub(crate) fn stream_slot(state: &AppState, caller: &Caller) -> ServiceResult<StreamSlot> {
    state.keys.open_stream(caller.key_id).ok_or_else(|| {
        ServiceError::new(
            ErrorCode::RateLimited,
            format!("this key already follows {MAX_STREAMS_PER_KEY} streams; close one first"),
        )
    })
}

/// The SSE response following `id` from `after`; it ends once the key that holds `slot` is
/// revoked or expires.
pub(crate) fn sse(
    state: AppState,
    source: Source,
    org: String,
    id: Uuid,
    after: i64,
    slot: StreamSlot,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let follower = Follower::new(state, source, org, id, after, slot);
    let events = futures::stream::unfold(follower, |mut f| async move {
        let e = f.next().await?;
        let data = serde_json::to_string(&e.data).unwrap_or_else(|_| "null".into());
        let event = Event::default().id(e.seq.to_string()).event(e.event_type).data(data);
        Some((Ok(event), f))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("keepalive"))
}
