//! `/api/v1/jobs`: definitions, triggers, firing history, and the inbound webhook
//! `POST /api/v1/jobs/webhook/{path}` (no key: the signature decides).

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use cp_types::job::{
    Job, JobFiring, JobSpec, JobTrigger, JobWithSecret, TriggerJob, TriggerSource, UpdateJob, WebhookAnswer,
};
use cp_types::{Deleted, Page, PageParams};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::idempotency::SealedReplay;
use crate::http::rate_limit::Meter;
use crate::http::{Auth, JsonBody, Pagination, Path, Query, Read, Write};
use crate::services::error::{ServiceError, ServiceResult};
use crate::services::job_webhooks;
use crate::services::jobs::{self, Trigger};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs, create_job))
        .routes(routes!(get_job, update_job, delete_job))
        .routes(routes!(trigger_job))
        .routes(routes!(enable_job))
        .routes(routes!(disable_job))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_firings))
}

/// The inbound webhook: outside the key-protected routes.
pub fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(job_webhook))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct JobQuery {
    enabled: Option<bool>,
    trigger_type: Option<JobTrigger>,
}

/// The organization's jobs, newest first.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(PageParams, JobQuery),
    responses((status = 200, body = Page<Job>)))]
async fn list_jobs(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
    Query(q): Query<JobQuery>,
) -> ServiceResult<Json<Page<Job>>> {
    Ok(Json(jobs::list(&state, &auth, q.enabled, q.trigger_type, page).await?))
}

/// Creates a job; a webhook job's answer carries its `webhook_secret`, shown this once.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = JobSpec,
    responses((status = 201, body = JobWithSecret), (status = 422, body = cp_types::ErrorEnvelope)))]
async fn create_job(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(spec): JsonBody<JobSpec>,
) -> ServiceResult<(StatusCode, Extension<SealedReplay>, Json<JobWithSecret>)> {
    let job = jobs::create(&state, &auth, spec).await?;
    Ok((StatusCode::CREATED, Extension(SealedReplay), Json(job)))
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = Job), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_job(State(state): State<AppState>, auth: Auth<Read>, Path(id): Path<Uuid>) -> ServiceResult<Json<Job>> {
    Ok(Json(jobs::get(&state, &auth, id).await?))
}

/// Partial update (PUT and PATCH alike). A job that becomes a webhook job gets its secret in
/// this answer, once.
#[utoipa::path(method(patch, put), path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = Uuid, Path)),
    request_body = UpdateJob, responses((status = 200, body = JobWithSecret), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn update_job(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<UpdateJob>,
) -> ServiceResult<Json<JobWithSecret>> {
    Ok(Json(jobs::update(&state, &auth, id, req).await?))
}

/// Deletes the job and its firing history (what it started stays).
#[utoipa::path(delete, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = Deleted), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn delete_job(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Deleted>> {
    jobs::delete(&state, &auth, id).await?;
    Ok(Json(Deleted::new(id)))
}

/// Fires the job now with `parameters` for its templates (409 when it is disabled).
#[utoipa::path(post, path = "/api/v1/jobs/{id}/trigger", tag = "jobs", params(("id" = Uuid, Path)),
    request_body = TriggerJob, responses((status = 201, body = JobFiring), (status = 404, body = cp_types::ErrorEnvelope),
        (status = 409, body = cp_types::ErrorEnvelope)))]
async fn trigger_job(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    body: Option<JsonBody<TriggerJob>>,
) -> ServiceResult<(StatusCode, Json<JobFiring>)> {
    let req = body.map(|b| b.0).unwrap_or_default();
    req.validate()?;
    let parameters = req.parameters.unwrap_or_else(|| json!({}));
    let firing = jobs::trigger(&state, &auth, id, parameters).await?;
    Ok((StatusCode::CREATED, Json(firing)))
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/enable", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = Job), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn enable_job(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Job>> {
    Ok(Json(jobs::set_enabled(&state, &auth, id, true).await?))
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/disable", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = Job), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn disable_job(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Job>> {
    Ok(Json(jobs::set_enabled(&state, &auth, id, false).await?))
}

/// A new webhook secret, shown this once; the previous one stops working at once.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/rotate-secret", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = JobWithSecret), (status = 404, body = cp_types::ErrorEnvelope),
        (status = 409, body = cp_types::ErrorEnvelope)))]
async fn rotate_secret(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<(Extension<SealedReplay>, Json<JobWithSecret>)> {
    Ok((
        Extension(SealedReplay),
        Json(jobs::rotate_secret(&state, &auth, id).await?),
    ))
}

/// The job's firings, newest first: what fired it, and what it started or why not.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/executions", tag = "jobs", params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<JobFiring>), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn list_firings(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
    Pagination(page): Pagination,
) -> ServiceResult<Json<Page<JobFiring>>> {
    Ok(Json(jobs::firings(&state, &auth, id, page).await?))
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Fires a webhook job. The signature is checked over the raw body before anything else is
/// said about the job: 401 without a valid one, then 429 past the path's rate, 409 when the
/// job is disabled. A GitHub `ping` and a delivery seen before answer 200 without firing.
#[utoipa::path(post, path = "/api/v1/jobs/webhook/{path}", tag = "jobs", security(()),
    params(("path" = String, Path)), request_body(content = Object, description = "the sender's payload"),
    responses((status = 201, body = WebhookAnswer), (status = 200, body = WebhookAnswer),
        (status = 401, body = cp_types::ErrorEnvelope), (status = 404, body = cp_types::ErrorEnvelope),
        (status = 409, body = cp_types::ErrorEnvelope)))]
async fn job_webhook(
    State(state): State<AppState>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<WebhookAnswer>), axum::response::Response> {
    use axum::response::IntoResponse;
    let now = unix_now().max(0) as u64;
    let limited = |meter: Meter, limit: u64| {
        let d = state.limiter.check(meter, limit, now);
        (!d.allowed).then(|| {
            let mut resp = ServiceError::new(cp_types::ErrorCode::RateLimited, "too many requests to this webhook")
                .into_response();
            d.write_headers(resp.headers_mut());
            resp
        })
    };
    let found = match state.store.job_by_webhook_path(&path).await {
        Ok((record, Some(secret))) if record.job.spec.trigger_type == JobTrigger::Webhook => Some((record, secret)),
        Ok(_) | Err(cp_store::StoreError::NotFound) => None,
        Err(e) => return Err(ServiceError::from(e).into_response()),
    };
    // Unknown paths and bad signatures cost the client's address the standard rate, so
    // guessing either is metered; only signed requests count against the path's own rate.
    let addr = connect.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.0.ip());
    let refused = |e: ServiceError| match limited(Meter::Addr(addr), state.config.standard_rate_limit) {
        Some(resp) => resp,
        None => e.into_response(),
    };
    let Some((record, sealed)) = found else {
        return Err(refused(ServiceError::not_found("webhook")));
    };
    let job = &record.job;
    let secret = jobs::open_secret(&state, &job.organization_id, job.id, &sealed)
        .ok_or_else(|| ServiceError::internal().into_response())?;
    if let Err(why) = job_webhooks::verify(&headers, &body, &secret, unix_now()) {
        return Err(refused(ServiceError::unauthorized(why)));
    }
    if let Some(resp) = limited(Meter::Hook(job.id), state.config.job_webhook_rate_limit) {
        return Err(resp);
    }
    let answer = |result: &str, firing: Option<JobFiring>| WebhookAnswer {
        job_id: job.id,
        result: result.to_owned(),
        firing,
    };
    if job_webhooks::is_ping(&headers) {
        return Ok((StatusCode::OK, Json(answer("pong", None))));
    }
    if !job.spec.enabled {
        return Err(ServiceError::conflict(format!("job '{}' is {}", job.spec.name, job.status)).into_response());
    }
    let mut payload = serde_json::from_slice::<Value>(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    // The databases cannot store NUL; the rendered prompt is stored with the firing.
    crate::http::extract::replace_nul(&mut payload);
    let parameters = match payload.get("parameters") {
        Some(p @ Value::Object(_)) => p.clone(),
        _ => json!({}),
    };
    let trigger = Trigger {
        source: TriggerSource::Webhook,
        parameters,
        payload: Some(payload),
        headers: Some(jobs::template_headers(&headers)),
        delivery_id: job_webhooks::delivery_id(&headers),
    };
    match jobs::fire_now(&state, &record, trigger, None).await {
        Ok(Some(firing)) => Ok((StatusCode::CREATED, Json(answer("fired", Some(firing))))),
        Ok(None) => Ok((StatusCode::OK, Json(answer("duplicate", None)))),
        Err(e) => Err(e.into_response()),
    }
}
