//! One module per API area; `router` assembles them with the cross-cutting layers.

pub mod agents;
pub mod analytics;
pub mod api_keys;
pub mod auth;
pub mod contexts;
pub mod custom_integrations;
pub mod environments;
pub mod execution_environment;
pub mod executions;
pub mod graph;
pub mod health;
pub mod integrations;
pub mod jobs;
pub mod knowledge;
pub mod models;
pub mod organization;
pub mod policies;
pub mod projects;
pub mod runtimes;
pub mod secrets;
pub mod skills;
pub mod tasks;
pub mod teams;
pub mod webhooks;
pub mod worker_queues;
pub mod workers;
pub mod workflow_runs;
pub mod workflows;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::{Config, SwaggerUi};

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

/// Documents the error envelope on every operation for each failure class any endpoint can
/// answer (bad input, auth, rate limit, database away), so clients and fuzzers see them all.
/// Each is described once under `components.responses` and referenced from the operations:
/// written out on every operation they made the document 9 MB in memory.
struct ErrorResponses;

const ERROR_STATUSES: &[(&str, &str)] = &[
    ("400", "Malformed request (bad JSON, bad path id)"),
    ("401", "Missing, unknown, revoked or expired API key"),
    ("403", "The key's role may not do this"),
    ("404", "No such resource in this organization"),
    ("405", "Method not allowed on this route"),
    ("409", "Conflict with existing state"),
    ("413", "Request body too large"),
    ("415", "Content-Type is not application/json"),
    ("422", "A field failed validation"),
    ("429", "Rate limit exceeded"),
    ("500", "Internal error"),
    ("503", "The database is not available"),
];

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let components = openapi.components.get_or_insert_with(Default::default);
        for (status, description) in ERROR_STATUSES {
            let response = ResponseBuilder::new()
                .description(*description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                        .build(),
                )
                .build();
            components.responses.insert(format!("Error{status}"), response.into());
        }
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
            ];
            for op in ops.into_iter().flatten() {
                for (status, _) in ERROR_STATUSES {
                    op.responses
                        .responses
                        .entry((*status).to_string())
                        .or_insert_with(|| RefOr::Ref(Ref::new(format!("#/components/responses/Error{status}"))));
                }
            }
        }
    }
}

/// The body limit of the routes that take bulk content (a knowledge item's 1 MiB, JSON-escaped;
/// a batch of 1000 graph nodes).
pub const LARGE_BODY_LIMIT: usize = 3 * 1024 * 1024;

/// The most a request to `path` may send: [`LARGE_BODY_LIMIT`] on the bulk routes, else the
/// configured limit.
pub fn body_limit(path: &str, configured: usize) -> usize {
    let bulk = ["/api/v1/knowledge", "/api/v1/graph/", "/api/v1/context-graph/"];
    if bulk.iter().any(|p| path.starts_with(p)) {
        configured.max(LARGE_BODY_LIMIT)
    } else {
        configured
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
        .merge(models::routes())
        .merge(runtimes::routes())
        .merge(agents::routes())
        .merge(teams::routes())
        .merge(skills::routes())
        .merge(contexts::routes())
        .merge(secrets::routes())
        .merge(integrations::routes())
        .merge(custom_integrations::routes())
        .merge(execution_environment::routes())
        .merge(worker_queues::routes())
        .merge(workers::routes())
        .merge(executions::routes())
        .merge(policies::routes())
        .merge(webhooks::routes())
        .merge(workflows::routes())
        .merge(workflow_runs::routes())
        .merge(jobs::routes())
        .merge(tasks::routes())
        .merge(knowledge::routes())
        .merge(graph::routes())
        .merge(analytics::routes())
        .route_layer(from_fn_with_state(state.clone(), idempotency))
        .route_layer(from_fn_with_state(state.clone(), authenticate));

    let (api, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::routes())
        .merge(jobs::public_routes())
        .merge(protected)
        .split_for_parts();
    openapi.info.version = env!("CARGO_PKG_VERSION").to_string();
    // After the split: the routes' operations only exist once the routers are merged.
    ErrorResponses.modify(&mut openapi);

    // Served as the bytes it serializes to: the document itself is not kept.
    let doc = Bytes::from(openapi.to_json().expect("the OpenAPI document serializes"));
    drop(openapi);
    let openapi_json = move || {
        let doc = doc.clone();
        async move { ([(header::CONTENT_TYPE, "application/json")], doc) }
    };

    Router::new()
        .merge(api)
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(openapi_json))
        .merge(SwaggerUi::new("/docs").config(Config::from("/openapi.json")))
        .merge(crate::ui::router(state.clone()))
        .fallback(context::not_found)
        .method_not_allowed_fallback(context::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        .layer(CatchPanicLayer::new())
        .layer(from_fn(context::request_context))
        .with_state(state)
}
