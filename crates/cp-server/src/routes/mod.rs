//! One module per API area; `router` assembles them with the cross-cutting layers.

pub mod api_keys;
pub mod auth;
pub mod environments;
pub mod health;
pub mod organization;
pub mod projects;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::http::{auth::authenticate, context, idempotency::idempotency, metrics};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Kubiya Control Plane API", description = "Manage agents, teams, environments and executions."),
    modifiers(&SecurityAddon),
    security(("api_key" = [])),
    components(schemas(cp_types::ErrorEnvelope))
)]
struct ApiDoc;

struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("kby_… API key"))
                    .build(),
            ),
        );
    }
}

/// The whole application: public endpoints, key-protected `/api/v1`, docs, and the layers.
pub fn router(state: AppState) -> Router {
    // Layers run outside-in in the reverse order of these calls: authenticate, then idempotency.
    let protected = OpenApiRouter::new()
        .merge(auth::routes())
        .merge(api_keys::routes())
        .merge(organization::routes())
        .merge(projects::routes())
        .merge(environments::routes())
        .route_layer(from_fn_with_state(state.clone(), idempotency))
        .route_layer(from_fn_with_state(state.clone(), authenticate));

    let (api, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::routes())
        .merge(protected)
        .split_for_parts();
    openapi.info.version = env!("CARGO_PKG_VERSION").to_string();

    Router::new()
        .merge(api)
        .route("/metrics", get(metrics::render))
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .fallback(context::not_found)
        .method_not_allowed_fallback(context::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        .layer(CatchPanicLayer::new())
        .layer(from_fn(context::request_context))
        .with_state(state)
}
