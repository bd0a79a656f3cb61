//! `/api/v1/organization` and its settings (admin).

use axum::Json;
use axum::extract::State;
use cp_types::org::{OrgSettings, Organization, UpdateOrgSettings};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::auth::AnyRole;
use crate::http::{Admin, ApiResult, Auth, JsonBody};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_org))
        .routes(routes!(get_settings, update_settings))
}

#[utoipa::path(get, path = "/api/v1/organization", tag = "organization", responses((status = 200, body = Organization)))]
async fn get_org(State(state): State<AppState>, auth: Auth<AnyRole>) -> ApiResult<Json<Organization>> {
    Ok(Json(state.store.get_org(&auth.org_id).await?))
}

#[utoipa::path(get, path = "/api/v1/organization/settings", tag = "organization",
    responses((status = 200, body = OrgSettings)))]
async fn get_settings(State(state): State<AppState>, auth: Auth<Admin>) -> ApiResult<Json<OrgSettings>> {
    Ok(Json(state.store.org_settings(&auth.org_id).await?))
}

/// Partial update (PATCH and PUT alike).
#[utoipa::path(method(patch, put), path = "/api/v1/organization/settings", tag = "organization",
    request_body = UpdateOrgSettings, responses((status = 200, body = OrgSettings)))]
async fn update_settings(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    JsonBody(req): JsonBody<UpdateOrgSettings>,
) -> ApiResult<Json<OrgSettings>> {
    req.validate()?;
    let settings = state.store.update_org_settings(&auth.org_id, &req).await?;
    // Rate-limit tiers ride on cached keys: make the change visible at once.
    state.keys.clear();
    Ok(Json(settings))
}
