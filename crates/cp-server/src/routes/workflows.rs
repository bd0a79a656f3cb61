//! `/api/v1/workflows`: workflow definitions and their versions.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use cp_types::workflow::{CreateWorkflow, UpdateWorkflow, Workflow, WorkflowVersion};
use cp_types::{Deleted, Page, PageParams};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::{Auth, JsonBody, Pagination, Path, Read, Write};
use crate::services::error::ServiceResult;
use crate::services::workflows::{self, not_found};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_workflows, create_workflow))
        .routes(routes!(get_workflow, update_workflow, delete_workflow))
        .routes(routes!(list_versions))
        .routes(routes!(import_workflow))
}

/// Newest first.
#[utoipa::path(get, path = "/api/v1/workflows", tag = "workflows", params(PageParams),
    responses((status = 200, body = Page<Workflow>)))]
async fn list_workflows(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
) -> ServiceResult<Json<Page<Workflow>>> {
    Ok(Json(state.store.workflows(&auth.org_id).list(page).await?))
}

/// Checks the definition (steps, dependencies, templates, inputs schema, the agents, teams,
/// queues and project it names) and stores it as version 1.
#[utoipa::path(post, path = "/api/v1/workflows", tag = "workflows", request_body = CreateWorkflow,
    responses((status = 201, body = Workflow), (status = 409, body = cp_types::ErrorEnvelope),
        (status = 422, body = cp_types::ErrorEnvelope)))]
async fn create_workflow(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(req): JsonBody<CreateWorkflow>,
) -> ServiceResult<(StatusCode, Json<Workflow>)> {
    let created = workflows::create(&state, &auth, req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Creates a workflow from the document the official Python client's DSL builds
/// (`kubiya.dsl.workflow(...).to_dict()`): `command`, `agent` (by `agent_name`) and `http`
/// executors; `${NAME}`/`{{NAME}}` references to outputs, params and `ITEM`; `chain` or
/// `graph`; `parallel`, `retryPolicy`, `continueOn`, `timeout` and `{condition, expected}`
/// preconditions. `default_worker_queue_id` and `project_id` may be added beside them.
#[utoipa::path(post, path = "/api/v1/workflows/import", tag = "workflows",
    request_body(content = Object, description = "The DSL document"),
    responses((status = 201, body = Workflow), (status = 409, body = cp_types::ErrorEnvelope),
        (status = 422, body = cp_types::ErrorEnvelope)))]
async fn import_workflow(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(doc): JsonBody<serde_json::Value>,
) -> ServiceResult<(StatusCode, Json<Workflow>)> {
    let created = workflows::import(&state, &auth, doc).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/api/v1/workflows/{id}", tag = "workflows", params(("id" = Uuid, Path)),
    responses((status = 200, body = Workflow), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_workflow(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Workflow>> {
    Ok(Json(
        state.store.workflows(&auth.org_id).get(id).await.map_err(not_found)?,
    ))
}

/// Partial update (PATCH and PUT alike); `steps` and `tags` are replaced whole when given.
/// Every update is a new version; runs keep the version they started with.
#[utoipa::path(method(patch, put), path = "/api/v1/workflows/{id}", tag = "workflows",
    params(("id" = Uuid, Path)), request_body = UpdateWorkflow,
    responses((status = 200, body = Workflow), (status = 409, body = cp_types::ErrorEnvelope),
        (status = 422, body = cp_types::ErrorEnvelope)))]
async fn update_workflow(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<UpdateWorkflow>,
) -> ServiceResult<Json<Workflow>> {
    Ok(Json(workflows::update(&state, &auth, id, req).await?))
}

#[utoipa::path(delete, path = "/api/v1/workflows/{id}", tag = "workflows", params(("id" = Uuid, Path)),
    responses((status = 200, body = Deleted)))]
async fn delete_workflow(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Deleted>> {
    state
        .store
        .workflows(&auth.org_id)
        .delete(id)
        .await
        .map_err(not_found)?;
    Ok(Json(Deleted::new(id)))
}

/// Every version of the workflow, newest first.
#[utoipa::path(get, path = "/api/v1/workflows/{id}/versions", tag = "workflows",
    params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<WorkflowVersion>), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn list_versions(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
    Pagination(page): Pagination,
) -> ServiceResult<Json<Page<WorkflowVersion>>> {
    Ok(Json(
        state
            .store
            .workflows(&auth.org_id)
            .versions(id, page)
            .await
            .map_err(not_found)?,
    ))
}
