//! `Idempotency-Key` on POST: the same key with the same request within 24 h answers the first
//! successful response again and creates nothing; the same key with a different request is a 409.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cp_store::idempotency::Claim;
use cp_types::ErrorCode;
use sha2::{Digest, Sha256};

use crate::services::caller::Caller;
use crate::services::crypto::{Cipher, idempotency_aad};
use crate::services::error::ServiceError;
use crate::state::AppState;

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
const REPLAYED: &str = "idempotent-replayed";

/// Put in a response's extensions by handlers whose answer carries a secret shown once (a new
/// API key): it is never stored for replay, so a retry creates a new one instead.
#[derive(Debug, Clone, Copy)]
pub struct NoReplay;

/// Put in a response's extensions by handlers whose answer carries a secret that a retry must
/// get again (a claim's secret values, a new webhook's signing secret): it is stored encrypted
/// with the master key, never in plaintext.
#[derive(Debug, Clone, Copy)]
pub struct SealedReplay;

pub async fn idempotency(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get(IDEMPOTENCY_KEY) else {
        return next.run(req).await;
    };
    let Some(principal) = req.extensions().get::<Arc<Caller>>().cloned() else {
        return next.run(req).await;
    };
    // Records belong to the API key that made them: another caller (even of the same
    // organization, with another role) never sees a stored answer.
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 => format!("{}:{k}", principal.key_id),
        _ => return ServiceError::bad_request("Idempotency-Key must be 1 to 255 visible characters").into_response(),
    };

    let (parts, body) = req.into_parts();
    let limit = crate::routes::body_limit(parts.uri.path(), state.config.body_limit);
    let bytes = match to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return ServiceError::new(ErrorCode::PayloadTooLarge, "request body too large").into_response();
        }
    };
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str());
    hasher.update(b" ");
    hasher.update(parts.uri.path());
    hasher.update(b"\n");
    hasher.update(&bytes);
    let request_hash = hex::encode(hasher.finalize());

    let records = state.store.idempotency(&principal.org_id);
    match records.claim(&key, &request_hash).await {
        Ok(Claim::Proceed) => {}
        Ok(Claim::Replay {
            status,
            content_type,
            body,
            sealed,
        }) => {
            let body = if sealed {
                match Cipher::new(&state.config.master_key).open(&body, &idempotency_aad(&principal.org_id, &key)) {
                    Ok(plain) => plain,
                    Err(_) => {
                        tracing::error!("a sealed idempotent answer does not decrypt (wrong master key?)");
                        return ServiceError::internal().into_response();
                    }
                }
            } else {
                body
            };
            let mut resp = (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body).into_response();
            if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                resp.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            resp.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
            return resp;
        }
        Ok(Claim::Mismatch) => {
            return ServiceError::conflict("this Idempotency-Key was already used with a different request")
                .into_response();
        }
        Ok(Claim::InProgress) => {
            // Retry-After marks this 409 as "try again", unlike a conflict with the resource.
            let mut resp =
                ServiceError::conflict("a request with this Idempotency-Key is still in progress; retry later")
                    .into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return resp;
        }
        Err(e) => return ServiceError::from(e).into_response(),
    }

    let unfinished = Unfinished {
        store: state.store.clone(),
        org: principal.org_id.clone(),
        key: Some(key.clone()),
    };
    let resp = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let status = resp.status();
    if !status.is_success() || resp.extensions().get::<NoReplay>().is_some() {
        // Only successes are remembered: a refused or failed request created nothing, so a
        // retry with the same key runs again (and may succeed once the cause is fixed).
        if let Err(e) = records.abandon(&key).await {
            tracing::warn!(error = %e, "could not release idempotency key");
        }
        unfinished.settled();
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let body = match to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "could not buffer response for idempotency");
            let _ = records.abandon(&key).await;
            unfinished.settled();
            return ServiceError::internal().into_response();
        }
    };
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let sealed = parts.extensions.get::<SealedReplay>().is_some();
    let stored = if sealed {
        match Cipher::new(&state.config.master_key).seal(&body, &idempotency_aad(&principal.org_id, &key)) {
            Ok(s) => s,
            Err(_) => {
                // Nothing is stored rather than a plaintext secret: a retry runs again.
                let _ = records.abandon(&key).await;
                unfinished.settled();
                return Response::from_parts(parts, Body::from(body));
            }
        }
    } else {
        body.to_vec()
    };
    if let Err(e) = records
        .finish(&key, status.as_u16(), content_type, &stored, sealed)
        .await
    {
        tracing::warn!(error = %e, "could not store idempotent response");
    }
    parts.headers.insert(REPLAYED, HeaderValue::from_static("false"));
    unfinished.settled();
    Response::from_parts(parts, Body::from(body))
}

/// A key claimed for a request that has not been answered yet. If the request is dropped on
/// the way (its client went away, the server stopped), the key is released, so a retry runs
/// at once instead of meeting "in progress" until the record times out. Releasing touches
/// only a record that holds no answer, so it is safe whenever it runs.
struct Unfinished {
    store: cp_store::Store,
    org: String,
    key: Option<String>,
}

impl Unfinished {
    fn settled(mut self) {
        self.key = None;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        let (store, org) = (self.store.clone(), std::mem::take(&mut self.org));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.idempotency(&org).abandon(&key).await {
                    tracing::warn!(error = %e, "could not release an unanswered idempotency key");
                }
            });
        }
    }
}
