//! `/api/v1/models`: the organization's model catalog.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use cp_store::models::ModelFilter;
use cp_types::model::{CreateModel, Model, UpdateModel};
use cp_types::runtime::Runtime;
use cp_types::{Deleted, Page, PageParams};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::{Admin, Auth, JsonBody, Pagination, Path, Query, Read};
use crate::services::error::{ServiceError, ServiceResult};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_models, create_model))
        .routes(routes!(default_model))
        .routes(routes!(list_providers))
        .routes(routes!(get_model, update_model, delete_model))
        // Values contain a slash (`anthropic/claude-sonnet-4-5`) and clients put them in the
        // path unencoded: the same handlers serve the multi-segment form (undocumented twin).
        .route(
            "/api/v1/models/{model}/{*rest}",
            get(get_model_by_value)
                .put(update_model_by_value)
                .patch(update_model_by_value)
                .delete(delete_model_by_value),
        )
}

fn not_found(e: cp_store::StoreError) -> ServiceError {
    ServiceError::from_store(e, "model")
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ModelQuery {
    /// Only enabled models.
    #[serde(default)]
    enabled_only: bool,
    /// Only models of this provider (case-insensitive).
    provider: Option<String>,
    /// Only models this runtime can use.
    runtime: Option<Runtime>,
    /// Only recommended (or only not recommended) models.
    recommended: Option<bool>,
}

/// The catalog in display order (`display_order`, then `value`).
#[utoipa::path(get, path = "/api/v1/models", tag = "models", params(PageParams, ModelQuery),
    responses((status = 200, body = Page<Model>)))]
async fn list_models(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
    Query(q): Query<ModelQuery>,
) -> ServiceResult<Json<Page<Model>>> {
    let filter = ModelFilter {
        enabled_only: q.enabled_only,
        provider: q.provider.map(|p| p.trim().to_ascii_lowercase()),
        runtime: q.runtime,
        recommended: q.recommended,
    };
    Ok(Json(state.store.models(&auth.org_id).list(&filter, page).await?))
}

/// Adds a model (admins only: a model's `base_url` and `api_key_secret` decide where a
/// secret is sent).
#[utoipa::path(post, path = "/api/v1/models", tag = "models", request_body = CreateModel,
    responses((status = 201, body = Model), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn create_model(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    JsonBody(req): JsonBody<CreateModel>,
) -> ServiceResult<(StatusCode, Json<Model>)> {
    req.validate()?;
    let model = state.store.models(&auth.org_id).create(&req).await?;
    // An embedding model puts the organization's knowledge in line to be embedded.
    state.embedders.wake(&auth.org_id);
    Ok((StatusCode::CREATED, Json(model)))
}

/// The organization's default model (used by agents and teams that name none).
#[utoipa::path(get, path = "/api/v1/models/default", tag = "models", responses((status = 200, body = Model)))]
async fn default_model(State(state): State<AppState>, auth: Auth<Read>) -> ServiceResult<Json<Model>> {
    let model = state.store.models(&auth.org_id).default_model().await;
    Ok(Json(model.map_err(|e| ServiceError::from_store(e, "default model"))?))
}

/// The distinct providers of the catalog, alphabetically.
#[utoipa::path(get, path = "/api/v1/models/providers", tag = "models", params(PageParams),
    responses((status = 200, body = Page<String>)))]
async fn list_providers(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
) -> ServiceResult<Json<Page<String>>> {
    Ok(Json(state.store.models(&auth.org_id).providers(page).await?))
}

/// A model by id or value (`anthropic/claude-sonnet-4-5`; the slash may be sent as is).
#[utoipa::path(get, path = "/api/v1/models/{model}", tag = "models",
    params(("model" = String, Path, description = "The model's id or value")),
    responses((status = 200, body = Model), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_model(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(model): Path<String>,
) -> ServiceResult<Json<Model>> {
    Ok(Json(
        state.store.models(&auth.org_id).find(&model).await.map_err(not_found)?,
    ))
}

/// Partial update (PATCH and PUT alike).
#[utoipa::path(method(patch, put), path = "/api/v1/models/{model}", tag = "models",
    params(("model" = String, Path, description = "The model's id or value")),
    request_body = UpdateModel, responses((status = 200, body = Model), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn update_model(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    Path(model): Path<String>,
    JsonBody(req): JsonBody<UpdateModel>,
) -> ServiceResult<Json<Model>> {
    req.validate()?;
    let models = state.store.models(&auth.org_id);
    let current = models.find(&model).await.map_err(not_found)?;
    let model = models.update(current.id, &req).await.map_err(not_found)?;
    state.embedders.wake(&auth.org_id);
    Ok(Json(model))
}

/// Deletes a model that is not the default and that no agent or team uses (else 409).
#[utoipa::path(delete, path = "/api/v1/models/{model}", tag = "models",
    params(("model" = String, Path, description = "The model's id or value")),
    responses((status = 200, body = Deleted), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn delete_model(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    Path(model): Path<String>,
) -> ServiceResult<Json<Deleted>> {
    let models = state.store.models(&auth.org_id);
    let current = models.find(&model).await.map_err(not_found)?;
    models.delete(current.id).await.map_err(not_found)?;
    Ok(Json(Deleted::new(current.id)))
}

fn joined((first, rest): (String, String)) -> String {
    format!("{first}/{rest}")
}

async fn get_model_by_value(
    state: State<AppState>,
    auth: Auth<Read>,
    Path(parts): Path<(String, String)>,
) -> ServiceResult<Json<Model>> {
    get_model(state, auth, Path(joined(parts))).await
}

async fn update_model_by_value(
    state: State<AppState>,
    auth: Auth<Admin>,
    Path(parts): Path<(String, String)>,
    body: JsonBody<UpdateModel>,
) -> ServiceResult<Json<Model>> {
    update_model(state, auth, Path(joined(parts)), body).await
}

async fn delete_model_by_value(
    state: State<AppState>,
    auth: Auth<Admin>,
    Path(parts): Path<(String, String)>,
) -> ServiceResult<Json<Deleted>> {
    delete_model(state, auth, Path(joined(parts))).await
}
