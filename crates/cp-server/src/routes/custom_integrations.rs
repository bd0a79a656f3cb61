//! `/api/v1/custom-integrations`: bundles of env vars, secret names and files.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use cp_types::custom_integration::{CreateCustomIntegration, CustomIntegration, UpdateCustomIntegration};
use cp_types::{Deleted, Page, PageParams};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::{Auth, JsonBody, Pagination, Path, Read, Write};
use crate::services::error::{ServiceError, ServiceResult};
use crate::services::vault::{self, Named};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_custom_integrations, create_custom_integration))
        .routes(routes!(
            get_custom_integration,
            update_custom_integration,
            delete_custom_integration
        ))
}

fn not_found(e: cp_store::StoreError) -> ServiceError {
    ServiceError::from_store(e, "custom integration")
}

/// Newest first.
#[utoipa::path(get, path = "/api/v1/custom-integrations", tag = "integrations", params(PageParams),
    responses((status = 200, body = Page<CustomIntegration>)))]
async fn list_custom_integrations(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
) -> ServiceResult<Json<Page<CustomIntegration>>> {
    Ok(Json(state.store.custom_integrations(&auth.org_id).list(page).await?))
}

#[utoipa::path(post, path = "/api/v1/custom-integrations", tag = "integrations", request_body = CreateCustomIntegration,
    responses((status = 201, body = CustomIntegration), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn create_custom_integration(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(req): JsonBody<CreateCustomIntegration>,
) -> ServiceResult<(StatusCode, Json<CustomIntegration>)> {
    req.validate()?;
    vault::check_may_name(
        &auth,
        &Named::of_custom_integration(req.config.as_ref()),
        &Named::default(),
    )?;
    let created = state.store.custom_integrations(&auth.org_id).create(&req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/api/v1/custom-integrations/{id}", tag = "integrations", params(("id" = Uuid, Path)),
    responses((status = 200, body = CustomIntegration), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_custom_integration(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<CustomIntegration>> {
    Ok(Json(
        state
            .store
            .custom_integrations(&auth.org_id)
            .get(id)
            .await
            .map_err(not_found)?,
    ))
}

/// Partial update (PATCH and PUT alike); `config` and `tags` are replaced whole when given.
#[utoipa::path(method(patch, put), path = "/api/v1/custom-integrations/{id}", tag = "integrations",
    params(("id" = Uuid, Path)), request_body = UpdateCustomIntegration,
    responses((status = 200, body = CustomIntegration)))]
async fn update_custom_integration(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<UpdateCustomIntegration>,
) -> ServiceResult<Json<CustomIntegration>> {
    req.validate()?;
    let wanted = Named::of_custom_integration(req.config.as_ref());
    if !wanted.is_empty() {
        let current = state
            .store
            .custom_integrations(&auth.org_id)
            .get(id)
            .await
            .map_err(not_found)?;
        vault::check_may_name(&auth, &wanted, &Named::of_custom_integration(Some(&current.config)))?;
    }
    Ok(Json(
        state
            .store
            .custom_integrations(&auth.org_id)
            .update(id, &req)
            .await
            .map_err(not_found)?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/custom-integrations/{id}", tag = "integrations", params(("id" = Uuid, Path)),
    responses((status = 200, body = Deleted)))]
async fn delete_custom_integration(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Deleted>> {
    state
        .store
        .custom_integrations(&auth.org_id)
        .delete(id)
        .await
        .map_err(not_found)?;
    Ok(Json(Deleted::new(id)))
}
