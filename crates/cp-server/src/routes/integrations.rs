//! `/api/v1/integrations`: connections whose credentials are write-only, and the token
//! endpoints that hand them to admin and worker keys.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use cp_store::integrations::IntegrationFilter;
use cp_types::integration::{
    CreateIntegration, Integration, IntegrationAccess, IntegrationToken, IntegrationType, UpdateIntegration,
};
use cp_types::{Deleted, Page, PageParams};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::auth::SecretReader;
use crate::http::{Admin, Auth, JsonBody, Pagination, Path, Query, Read, Write};
use crate::services::error::{ServiceError, ServiceResult};
use crate::services::vault;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_integrations, create_integration))
        .routes(routes!(get_integration, update_integration, delete_integration))
        .routes(routes!(integration_token))
        .routes(routes!(integration_creds))
        .routes(routes!(integration_access_log))
}

fn not_found(e: cp_store::StoreError) -> ServiceError {
    ServiceError::from_store(e, "integration")
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct IntegrationQuery {
    /// `true`: only integrations with credentials and status `active`.
    connected_only: Option<bool>,
    /// Only integrations of this type.
    integration_type: Option<IntegrationType>,
}

/// Newest first; credentials are never listed.
#[utoipa::path(get, path = "/api/v1/integrations", tag = "integrations", params(PageParams, IntegrationQuery),
    responses((status = 200, body = Page<Integration>)))]
async fn list_integrations(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
    Query(q): Query<IntegrationQuery>,
) -> ServiceResult<Json<Page<Integration>>> {
    let filter = IntegrationFilter {
        connected_only: q.connected_only,
        integration_type: q.integration_type,
    };
    Ok(Json(state.store.integrations(&auth.org_id).list(filter, page).await?))
}

/// Stores an integration; its credentials are encrypted and never returned.
#[utoipa::path(post, path = "/api/v1/integrations", tag = "integrations", request_body = CreateIntegration,
    responses((status = 201, body = Integration), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn create_integration(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(req): JsonBody<CreateIntegration>,
) -> ServiceResult<(StatusCode, Json<Integration>)> {
    req.validate()?;
    // The id is chosen first: the credentials are sealed for it.
    let id = Uuid::now_v7();
    let sealed = match &req.credentials {
        Some(c) => Some(vault::seal_credentials(&state, &auth.org_id, id, c)?),
        None => None,
    };
    let integration = state
        .store
        .integrations(&auth.org_id)
        .create(id, &req, sealed.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(integration)))
}

#[utoipa::path(get, path = "/api/v1/integrations/{id}", tag = "integrations", params(("id" = Uuid, Path)),
    responses((status = 200, body = Integration), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_integration(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Integration>> {
    Ok(Json(
        state
            .store
            .integrations(&auth.org_id)
            .get(id)
            .await
            .map_err(not_found)?,
    ))
}

/// Partial update (PATCH and PUT alike); `credentials` replaces them, `null` removes them.
#[utoipa::path(method(patch, put), path = "/api/v1/integrations/{id}", tag = "integrations",
    params(("id" = Uuid, Path)), request_body = UpdateIntegration, responses((status = 200, body = Integration)))]
async fn update_integration(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<UpdateIntegration>,
) -> ServiceResult<Json<Integration>> {
    let repo = state.store.integrations(&auth.org_id);
    let current = repo.get(id).await.map_err(not_found)?;
    req.validate(current.integration_type)?;
    let sealed = match &req.credentials {
        Some(Some(c)) => Some(Some(vault::seal_credentials(&state, &auth.org_id, id, c)?)),
        Some(None) => Some(None),
        None => None,
    };
    let credentials = sealed.as_ref().map(|c| c.as_deref());
    Ok(Json(repo.update(id, &req, credentials).await.map_err(not_found)?))
}

#[utoipa::path(delete, path = "/api/v1/integrations/{id}", tag = "integrations", params(("id" = Uuid, Path)),
    responses((status = 200, body = Deleted)))]
async fn delete_integration(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Deleted>> {
    state
        .store
        .integrations(&auth.org_id)
        .delete(id)
        .await
        .map_err(not_found)?;
    Ok(Json(Deleted::new(id)))
}

/// The integration's token and the env var(s) it becomes (admin and worker keys; recorded).
/// `id` is the integration's UUID, or `0` for the organization's one integration of the type.
#[utoipa::path(get, path = "/api/v1/integrations/{integration_type}/{id}/token", tag = "integrations",
    params(("integration_type" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = IntegrationToken), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn integration_token(
    State(state): State<AppState>,
    auth: Auth<SecretReader>,
    Path((kind, id)): Path<(String, String)>,
) -> ServiceResult<Json<IntegrationToken>> {
    Ok(Json(vault::integration_token(&state, &auth, &kind, &id).await?))
}

/// Alias of the token endpoint, at the path the Python client calls.
#[utoipa::path(get, path = "/api/v1/integrations/{integration_type}/creds/{id}", tag = "integrations",
    params(("integration_type" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = IntegrationToken), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn integration_creds(
    State(state): State<AppState>,
    auth: Auth<SecretReader>,
    Path((kind, id)): Path<(String, String)>,
) -> ServiceResult<Json<IntegrationToken>> {
    Ok(Json(vault::integration_token(&state, &auth, &kind, &id).await?))
}

/// Who read this integration's credentials, and when (newest first; admin only).
#[utoipa::path(get, path = "/api/v1/integrations/{id}/access-log", tag = "integrations",
    params(("id" = Uuid, Path), PageParams), responses((status = 200, body = Page<IntegrationAccess>)))]
async fn integration_access_log(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    Path(id): Path<Uuid>,
    Pagination(page): Pagination,
) -> ServiceResult<Json<Page<IntegrationAccess>>> {
    let repo = state.store.integrations(&auth.org_id);
    repo.get(id).await.map_err(not_found)?;
    Ok(Json(repo.access_log(id, page).await?))
}
