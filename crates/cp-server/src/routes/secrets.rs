//! `/api/v1/secrets`: metadata for the catalog roles, values for admin and worker keys only.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use cp_types::secret::{CreateSecret, Secret, SecretAccess, SecretValue, UpdateSecret};
use cp_types::{Deleted, Page, PageParams};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::auth::SecretReader;
use crate::http::{Admin, Auth, JsonBody, Pagination, Path, Read, Write};
use crate::services::error::{ServiceError, ServiceResult};
use crate::services::vault;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_secrets, create_secret))
        .routes(routes!(get_secret, update_secret, delete_secret))
        .routes(routes!(secret_value))
        .routes(routes!(secret_access_log))
}

fn not_found(e: cp_store::StoreError) -> ServiceError {
    ServiceError::from_store(e, "secret")
}

/// Newest first; values are never listed.
#[utoipa::path(get, path = "/api/v1/secrets", tag = "secrets", params(PageParams),
    responses((status = 200, body = Page<Secret>)))]
async fn list_secrets(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
) -> ServiceResult<Json<Page<Secret>>> {
    Ok(Json(state.store.secrets(&auth.org_id).list(page).await?))
}

/// Stores a secret; its value is encrypted and never returned by list or get.
#[utoipa::path(post, path = "/api/v1/secrets", tag = "secrets", request_body = CreateSecret,
    responses((status = 201, body = Secret), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn create_secret(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(req): JsonBody<CreateSecret>,
) -> ServiceResult<(StatusCode, Json<Secret>)> {
    req.validate()?;
    let sealed = vault::seal_secret(&state, &auth.org_id, &req.name, &req.value)?;
    let secret = state
        .store
        .secrets(&auth.org_id)
        .create(&req.name, req.description.as_deref(), &sealed)
        .await?;
    Ok((StatusCode::CREATED, Json(secret)))
}

#[utoipa::path(get, path = "/api/v1/secrets/{name}", tag = "secrets", params(("name" = String, Path)),
    responses((status = 200, body = Secret), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_secret(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(name): Path<String>,
) -> ServiceResult<Json<Secret>> {
    Ok(Json(
        state.store.secrets(&auth.org_id).get(&name).await.map_err(not_found)?,
    ))
}

/// Partial update (PATCH and PUT alike): a new `value` rotates the secret (version + 1).
#[utoipa::path(method(patch, put), path = "/api/v1/secrets/{name}", tag = "secrets",
    params(("name" = String, Path)), request_body = UpdateSecret, responses((status = 200, body = Secret)))]
async fn update_secret(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<UpdateSecret>,
) -> ServiceResult<Json<Secret>> {
    req.validate(&name)?;
    let sealed = match &req.value {
        Some(value) => Some(vault::seal_secret(&state, &auth.org_id, &name, value)?),
        None => None,
    };
    let description = req.description.as_ref().map(|d| d.as_deref());
    Ok(Json(
        state
            .store
            .secrets(&auth.org_id)
            .update(&name, description, sealed.as_deref())
            .await
            .map_err(not_found)?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/secrets/{name}", tag = "secrets", params(("name" = String, Path)),
    responses((status = 200, body = Deleted)))]
async fn delete_secret(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(name): Path<String>,
) -> ServiceResult<Json<Deleted>> {
    let id = state
        .store
        .secrets(&auth.org_id)
        .delete(&name)
        .await
        .map_err(not_found)?;
    Ok(Json(Deleted::new(id)))
}

/// The decrypted value, for admin and worker keys; every read is recorded.
#[utoipa::path(get, path = "/api/v1/secrets/value/{name}", tag = "secrets", params(("name" = String, Path)),
    responses((status = 200, body = SecretValue), (status = 403, body = cp_types::ErrorEnvelope)))]
async fn secret_value(
    State(state): State<AppState>,
    auth: Auth<SecretReader>,
    Path(name): Path<String>,
) -> ServiceResult<Json<SecretValue>> {
    Ok(Json(vault::read_secret(&state, &auth, &name).await?))
}

/// Who read the value of the secret with this name, and when (newest first; admin only).
#[utoipa::path(get, path = "/api/v1/secrets/{name}/access-log", tag = "secrets",
    params(("name" = String, Path), PageParams), responses((status = 200, body = Page<SecretAccess>)))]
async fn secret_access_log(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    Path(name): Path<String>,
    Pagination(page): Pagination,
) -> ServiceResult<Json<Page<SecretAccess>>> {
    let secrets = state.store.secrets(&auth.org_id);
    secrets.get(&name).await.map_err(not_found)?;
    Ok(Json(secrets.access_log(&name, page).await?))
}
