//! `/api/health`, `/api/ready`, `/api/health/detailed` (API §9): no key, never rate limited.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cp_types::ErrorCode;
use cp_types::health::{DatabaseHealth, DetailedHealth, Health, QueuesHealth, Ready, WebhooksHealth, WorkersHealth};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::auth::admin_org;
use crate::services::error::ServiceError;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(detailed))
}

/// Liveness: answers without touching the database.
#[utoipa::path(get, path = "/api/health", tag = "health", security(()), responses((status = 200, body = Health)))]
async fn health() -> Json<Health> {
    Json(Health {
        status: "healthy".into(),
        service: "kubiya-control-plane".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        timestamp: cp_types::now(),
    })
}

/// Readiness: the database answers and migrations are applied; else 503.
#[utoipa::path(get, path = "/api/ready", tag = "health", security(()),
    responses((status = 200, body = Ready), (status = 503, body = cp_types::ErrorEnvelope)))]
async fn ready(State(state): State<AppState>) -> Response {
    match state.store.ready().await {
        Ok(()) => Json(Ready { status: "ready".into() }).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            ServiceError::new(
                ErrorCode::ServiceUnavailable,
                "not ready: the database is not available",
            )
            .into_response()
        }
    }
}

/// Health of the parts: database latency; with an admin key also that organization's workers,
/// queues and webhook backlog (nothing about any organization without one).
#[utoipa::path(get, path = "/api/health/detailed", tag = "health", security(()),
    responses((status = 200, body = DetailedHealth)))]
async fn detailed(State(state): State<AppState>, headers: HeaderMap) -> (StatusCode, Json<DetailedHealth>) {
    let database = match state.store.ping().await {
        Ok(latency) => DatabaseHealth {
            status: "healthy".into(),
            backend: state.store.backend().as_str().into(),
            latency_ms: latency.as_secs_f64() * 1e3,
        },
        Err(e) => {
            tracing::warn!(error = %e, "database check failed");
            DatabaseHealth {
                status: "unhealthy".into(),
                backend: state.store.backend().as_str().into(),
                latency_ms: 0.0,
            }
        }
    };
    let status = if database.status == "healthy" {
        "healthy"
    } else {
        "degraded"
    };
    let mut report = DetailedHealth {
        status: status.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: state.started_at.elapsed().as_secs(),
        database,
        workers: None,
        queues: None,
        webhooks: None,
    };
    if let Some(org) = admin_org(&state, &headers).await {
        match state
            .store
            .health_counts(&org, chrono::Utc::now().timestamp_millis())
            .await
        {
            Ok((online, queued, running, pending_deliveries)) => {
                report.workers = Some(WorkersHealth { online });
                report.queues = Some(QueuesHealth { queued, running });
                report.webhooks = Some(WebhooksHealth { pending_deliveries });
            }
            Err(e) => tracing::warn!(error = %e, "cannot count workers, executions and deliveries"),
        }
    }
    (StatusCode::OK, Json(report))
}
