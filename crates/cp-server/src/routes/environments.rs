//! `/api/v1/environments` and the worker command of an environment.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use cp_store::environments::EnvironmentFilter;
use cp_types::environment::{
    CreateEnvironment, Environment, EnvironmentStatus, QueueCommand, UpdateEnvironment, WorkerCommand,
};
use cp_types::{Deleted, Page, PageParams};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::{Auth, JsonBody, Pagination, Path, Query, Read, Write};
use crate::services::error::{ServiceError, ServiceResult};
use crate::services::vault::{self, Named};
use crate::services::workers::worker_command_parts;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_environments, create_environment))
        .routes(routes!(get_environment, update_environment, delete_environment))
        .routes(routes!(worker_command))
}

fn not_found(e: cp_store::StoreError) -> ServiceError {
    ServiceError::from_store(e, "environment")
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EnvironmentQuery {
    /// Only environments with this status.
    status_filter: Option<EnvironmentStatus>,
}

#[utoipa::path(get, path = "/api/v1/environments", tag = "environments", params(PageParams, EnvironmentQuery),
    responses((status = 200, body = Page<Environment>)))]
async fn list_environments(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
    Query(q): Query<EnvironmentQuery>,
) -> ServiceResult<Json<Page<Environment>>> {
    let filter = EnvironmentFilter {
        status: q.status_filter,
    };
    Ok(Json(state.store.environments(&auth.org_id).list(filter, page).await?))
}

#[utoipa::path(post, path = "/api/v1/environments", tag = "environments", request_body = CreateEnvironment,
    responses((status = 201, body = Environment), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn create_environment(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(req): JsonBody<CreateEnvironment>,
) -> ServiceResult<(StatusCode, Json<Environment>)> {
    req.validate()?;
    vault::check_may_name(
        &auth,
        &Named::of_environment(req.execution_environment.as_ref()),
        &Named::default(),
    )?;
    let env = state.store.environments(&auth.org_id).create(&req).await?;
    Ok((StatusCode::CREATED, Json(env)))
}

#[utoipa::path(get, path = "/api/v1/environments/{id}", tag = "environments", params(("id" = Uuid, Path)),
    responses((status = 200, body = Environment), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_environment(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Environment>> {
    Ok(Json(
        state
            .store
            .environments(&auth.org_id)
            .get(id)
            .await
            .map_err(not_found)?,
    ))
}

/// Partial update (PATCH and PUT alike).
#[utoipa::path(method(patch, put), path = "/api/v1/environments/{id}", tag = "environments",
    params(("id" = Uuid, Path)), request_body = UpdateEnvironment, responses((status = 200, body = Environment)))]
async fn update_environment(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<UpdateEnvironment>,
) -> ServiceResult<Json<Environment>> {
    req.validate()?;
    let wanted = Named::of_environment(req.execution_environment.as_ref());
    if !wanted.is_empty() {
        let current = state
            .store
            .environments(&auth.org_id)
            .get(id)
            .await
            .map_err(not_found)?;
        vault::check_may_name(
            &auth,
            &wanted,
            &Named::of_environment(Some(&current.execution_environment)),
        )?;
    }
    Ok(Json(
        state
            .store
            .environments(&auth.org_id)
            .update(id, &req)
            .await
            .map_err(not_found)?,
    ))
}

/// Deletes an environment (not the `default` one: 409).
#[utoipa::path(delete, path = "/api/v1/environments/{id}", tag = "environments", params(("id" = Uuid, Path)),
    responses((status = 200, body = Deleted), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn delete_environment(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Deleted>> {
    state
        .store
        .environments(&auth.org_id)
        .delete(id)
        .await
        .map_err(not_found)?;
    Ok(Json(Deleted::new(id)))
}

/// How to start a worker for this environment.
#[utoipa::path(get, path = "/api/v1/environments/{id}/worker-command", tag = "environments",
    params(("id" = Uuid, Path)), responses((status = 200, body = WorkerCommand)))]
async fn worker_command(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<WorkerCommand>> {
    let env = state
        .store
        .environments(&auth.org_id)
        .get(id)
        .await
        .map_err(not_found)?;
    let url = state.config.public_url.trim_end_matches('/').to_string();
    let page = cp_types::page::PageRequest {
        limit: cp_types::page::MAX_LIMIT,
        offset: 0,
    };
    let queues = state
        .store
        .worker_queues(&auth.org_id)
        .list(Some(env.id), page)
        .await?
        .items
        .into_iter()
        .map(|q| QueueCommand {
            command: worker_command_parts(&url, q.id).join(" "),
            worker_queue_id: q.id,
            name: q.name,
        })
        .collect();
    let parts = worker_command_parts(&url, "<WORKER_QUEUE_ID>");
    Ok(Json(WorkerCommand {
        environment_id: env.id,
        environment_name: env.name,
        control_plane_url: url,
        can_register: env.status == EnvironmentStatus::Active,
        command: parts.join(" "),
        command_parts: parts,
        queues,
    }))
}
