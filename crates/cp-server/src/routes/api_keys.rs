//! `/api/v1/api-keys` (admin): create (the key is shown once), list, get, revoke.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::SubsecRound;
use cp_types::org::{ApiKey, CreateApiKey, CreatedApiKey};
use cp_types::{Deleted, Page, PageParams};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::idempotency::NoReplay;
use crate::http::{Admin, Auth, JsonBody, Pagination, Path};
use crate::services::error::{ServiceError, ServiceResult};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_key, list_keys))
        .routes(routes!(get_key, revoke_key))
}

#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys", request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 403, body = cp_types::ErrorEnvelope)))]
async fn create_key(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    JsonBody(req): JsonBody<CreateApiKey>,
) -> ServiceResult<(StatusCode, Extension<NoReplay>, Json<CreatedApiKey>)> {
    req.validate(cp_types::now())?;
    let expires_at = req.expires_at.map(|t| t.trunc_subsecs(6));
    if let Some(queue) = req.worker_queue_id {
        state
            .store
            .worker_queues(&auth.org_id)
            .get(queue)
            .await
            .map_err(|e| ServiceError::from_store(e, "worker queue"))?;
    }
    let created = state
        .store
        .keys(&auth.org_id)
        .create(req.name.trim(), req.role, expires_at, req.worker_queue_id)
        .await?;
    // The secret is shown once: never kept for an Idempotency-Key replay.
    Ok((StatusCode::CREATED, Extension(NoReplay), Json(created)))
}

#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys", params(PageParams),
    responses((status = 200, body = Page<ApiKey>)))]
async fn list_keys(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    Pagination(page): Pagination,
) -> ServiceResult<Json<Page<ApiKey>>> {
    Ok(Json(state.store.keys(&auth.org_id).list(page).await?))
}

#[utoipa::path(get, path = "/api/v1/api-keys/{id}", tag = "api-keys", params(("id" = Uuid, Path)),
    responses((status = 200, body = ApiKey), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_key(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<ApiKey>> {
    let key = state
        .store
        .keys(&auth.org_id)
        .get(id)
        .await
        .map_err(|e| ServiceError::from_store(e, "API key"))?;
    Ok(Json(key))
}

/// Revokes the key: it answers 401 from then on. It stays listed, with `revoked_at`.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "api-keys", params(("id" = Uuid, Path)),
    responses((status = 200, body = Deleted), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn revoke_key(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Deleted>> {
    state
        .store
        .keys(&auth.org_id)
        .revoke(id, true)
        .await
        .map_err(|e| ServiceError::from_store(e, "API key"))?;
    state.keys.clear();
    Ok(Json(Deleted::new(id)))
}
