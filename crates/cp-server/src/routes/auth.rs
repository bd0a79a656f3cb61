//! `GET /api/v1/auth/validate`: who am I.

use axum::Json;
use cp_types::org::AuthInfo;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::auth::{AnyRole, Auth};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(validate))
}

#[utoipa::path(get, path = "/api/v1/auth/validate", tag = "auth",
    responses((status = 200, body = AuthInfo), (status = 401, body = cp_types::ErrorEnvelope)))]
async fn validate(auth: Auth<AnyRole>) -> Json<AuthInfo> {
    Json(AuthInfo {
        id: auth.org_id.clone(),
        name: auth.org_name.clone(),
        slug: auth.org_id.clone(),
        key_id: auth.key_id,
        key_name: auth.key_name.clone(),
        role: auth.role,
    })
}
