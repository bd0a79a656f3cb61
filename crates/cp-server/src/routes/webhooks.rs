//! `/api/v1/webhooks`: endpoints, their signing secrets, deliveries, redelivery and test events.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use cp_types::webhook::{CreateWebhook, UpdateWebhook, Webhook, WebhookDelivery, WebhookWithSecret};
use cp_types::{Deleted, Page, PageParams};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::idempotency::SealedReplay;
use crate::http::{Auth, JsonBody, Pagination, Path, Read, Write};
use crate::services::caller::Caller;
use crate::services::error::{ServiceError, ServiceResult};
use crate::services::notify::{Notice, notify};
use crate::services::webhooks::{self as sender, ROTATION_OVERLAP_MS};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_deliveries))
        .routes(routes!(redeliver))
        .routes(routes!(send_test))
}

fn not_found(e: cp_store::StoreError) -> ServiceError {
    ServiceError::from_store(e, "webhook")
}

/// 422 when the target is private and the organization does not allow that.
async fn check_target(state: &AppState, caller: &Caller, url: &str) -> ServiceResult<()> {
    let settings = state.store.org_settings(&caller.org_id).await?;
    let allow_private = settings.webhook_allow_private_targets && state.config.allow_private_webhook_targets;
    sender::check_target(url.trim(), allow_private)
        .await
        .map_err(|issue| ServiceError::invalid("url", issue))
}

fn sealed(state: &AppState, caller: &Caller, id: Uuid, secret: &str) -> ServiceResult<Vec<u8>> {
    sender::seal_secret(state, &caller.org_id, id, secret).map_err(|e| {
        tracing::error!(error = %e, "cannot seal a webhook secret");
        ServiceError::internal()
    })
}

#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks", params(PageParams),
    responses((status = 200, body = Page<Webhook>)))]
async fn list_webhooks(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
) -> ServiceResult<Json<Page<Webhook>>> {
    Ok(Json(state.store.webhooks(&auth.org_id).list(page).await?))
}

/// Creates an endpoint; the answer carries its signing secret, shown this once.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, body = WebhookWithSecret), (status = 422, body = cp_types::ErrorEnvelope)))]
async fn create_webhook(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(req): JsonBody<CreateWebhook>,
) -> ServiceResult<(StatusCode, Extension<SealedReplay>, Json<WebhookWithSecret>)> {
    req.validate()?;
    check_target(&state, &auth, &req.url).await?;
    let id = Uuid::now_v7();
    let secret = sender::new_secret();
    let webhook = state
        .store
        .webhooks(&auth.org_id)
        .create(id, &req, &sealed(&state, &auth, id, &secret)?)
        .await?;
    Ok((
        StatusCode::CREATED,
        Extension(SealedReplay),
        Json(WebhookWithSecret { webhook, secret }),
    ))
}

#[utoipa::path(get, path = "/api/v1/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = Webhook), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_webhook(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Webhook>> {
    Ok(Json(
        state.store.webhooks(&auth.org_id).get(id).await.map_err(not_found)?,
    ))
}

/// Partial update (PUT and PATCH alike); re-enabling an endpoint the server disabled clears
/// the reason.
#[utoipa::path(method(patch, put), path = "/api/v1/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)),
    request_body = UpdateWebhook, responses((status = 200, body = Webhook), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn update_webhook(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<UpdateWebhook>,
) -> ServiceResult<Json<Webhook>> {
    req.validate()?;
    if let Some(url) = &req.url {
        check_target(&state, &auth, url).await?;
    }
    let updated = state.store.webhooks(&auth.org_id).update(id, &req).await;
    Ok(Json(updated.map_err(not_found)?))
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = Deleted), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn delete_webhook(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Deleted>> {
    state.store.webhooks(&auth.org_id).delete(id).await.map_err(not_found)?;
    Ok(Json(Deleted::new(id)))
}

/// A new signing secret, shown this once; the previous one keeps signing alongside it for
/// 24 hours (two signatures in `webhook-signature`).
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/rotate-secret", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = WebhookWithSecret), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn rotate_secret(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<(Extension<SealedReplay>, Json<WebhookWithSecret>)> {
    let secret = sender::new_secret();
    let until = chrono::Utc::now().timestamp_millis() + ROTATION_OVERLAP_MS;
    let webhook = state
        .store
        .webhooks(&auth.org_id)
        .rotate(id, &sealed(&state, &auth, id, &secret)?, until)
        .await
        .map_err(not_found)?;
    Ok((Extension(SealedReplay), Json(WebhookWithSecret { webhook, secret })))
}

/// The endpoint's deliveries, newest first.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<WebhookDelivery>), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn list_deliveries(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
    Pagination(page): Pagination,
) -> ServiceResult<Json<Page<WebhookDelivery>>> {
    let page = state.store.webhooks(&auth.org_id).deliveries(id, page).await;
    Ok(Json(page.map_err(not_found)?))
}

/// Sends a delivery again now, with the same message id.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver", tag = "webhooks",
    params(("id" = Uuid, Path), ("delivery_id" = Uuid, Path)),
    responses((status = 200, body = WebhookDelivery), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn redeliver(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path((id, delivery_id)): Path<(Uuid, Uuid)>,
) -> ServiceResult<Json<WebhookDelivery>> {
    let delivery = state.store.webhooks(&auth.org_id).redeliver(id, delivery_id).await;
    let delivery = delivery.map_err(|e| ServiceError::from_store(e, "delivery"))?;
    notify(&state, Notice::Deliveries);
    Ok(Json(delivery))
}

/// Sends a `webhook.test` event to this endpoint (whatever its event filter).
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/test", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = WebhookDelivery), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn send_test(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<WebhookDelivery>> {
    let delivery = state
        .store
        .webhooks(&auth.org_id)
        .enqueue_test(id)
        .await
        .map_err(not_found)?;
    notify(&state, Notice::Deliveries);
    Ok(Json(delivery))
}
