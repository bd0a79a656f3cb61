//! `/api/v1/organization` and its settings (admin).

use axum::Json;
use axum::extract::State;
use cp_types::org::{OrgSettings, Organization, UpdateOrgSettings};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::ServerConfig;
use crate::http::auth::AnyRole;
use crate::http::{Admin, Auth, JsonBody};
use crate::services::error::{ServiceError, ServiceResult};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_org))
        .routes(routes!(get_settings, update_settings))
}

#[utoipa::path(get, path = "/api/v1/organization", tag = "organization", responses((status = 200, body = Organization)))]
async fn get_org(State(state): State<AppState>, auth: Auth<AnyRole>) -> ServiceResult<Json<Organization>> {
    Ok(Json(state.store.get_org(&auth.org_id).await?))
}

#[utoipa::path(get, path = "/api/v1/organization/settings", tag = "organization",
    responses((status = 200, body = OrgSettings)))]
async fn get_settings(State(state): State<AppState>, auth: Auth<Admin>) -> ServiceResult<Json<OrgSettings>> {
    Ok(Json(state.store.org_settings(&auth.org_id).await?))
}

/// Partial update (PATCH and PUT alike).
#[utoipa::path(method(patch, put), path = "/api/v1/organization/settings", tag = "organization",
    request_body = UpdateOrgSettings, responses((status = 200, body = OrgSettings)))]
async fn update_settings(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    JsonBody(req): JsonBody<UpdateOrgSettings>,
) -> ServiceResult<Json<OrgSettings>> {
    req.validate()?;
    check_operator_ceilings(&state.config, &req)?;
    let settings = state.store.update_org_settings(&auth.org_id, &req).await?;
    // Rate-limit tiers ride on cached keys: make the change visible at once.
    state.keys.clear();
    Ok(Json(settings))
}

/// Settings that open the host or its capacity belong to the server's operator: an
/// organization admin may turn them on only as far as the operator allowed.
fn check_operator_ceilings(config: &ServerConfig, req: &UpdateOrgSettings) -> ServiceResult<()> {
    if req.webhook_allow_private_targets == Some(true) && !config.allow_private_webhook_targets {
        return Err(ServiceError::forbidden(
            "private webhook targets are off on this server: its operator must start it with \
             --allow-private-webhook-targets (KUBIYA_CP_ALLOW_PRIVATE_WEBHOOK_TARGETS) first",
        ));
    }
    if let Some(n) = req.rate_limit_per_minute
        && u64::try_from(n).unwrap_or(0) > config.max_org_rate_limit
    {
        return Err(ServiceError::forbidden(format!(
            "rate_limit_per_minute may be at most {} on this server (its operator sets the \
             ceiling with --max-org-rate-limit)",
            config.max_org_rate_limit
        )));
    }
    Ok(())
}
