//! The outermost layer: request id, access log, per-route metrics, and the guarantee that
//! every error leaves as the JSON envelope (even axum's own plain-text rejections and panics).

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cp_types::ErrorCode;

use super::metrics::record_request;
use crate::services::error::ServiceError;

pub const REQUEST_ID: &str = "x-request-id";

tokio::task_local! {
    static CURRENT_REQUEST_ID: String;
}

/// The id of the request being served on this task (empty outside a request).
pub fn current_request_id() -> String {
    CURRENT_REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// A client-supplied id is kept when it is short and printable, else one is generated.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string())
}

pub async fn request_context(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&req);
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let path = req.uri().path().to_owned();

    let mut resp = CURRENT_REQUEST_ID
        .scope(id.clone(), async move { envelope_errors(next.run(req).await) })
        .await;

    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    let status = resp.status();
    let elapsed = started.elapsed();
    record_request(&method, route.as_deref(), status.as_u16(), elapsed);
    if status.is_server_error() {
        tracing::error!(request_id = %id, %method, %path, status = status.as_u16(), ms = elapsed.as_secs_f64() * 1e3, "request failed");
    } else {
        tracing::debug!(request_id = %id, %method, %path, status = status.as_u16(), ms = elapsed.as_secs_f64() * 1e3, "request");
    }
    resp
}

/// Rewrites an error response that is not already JSON (or a dashboard page) into the envelope, keeping its status
/// and headers such as `Allow` and `Retry-After`.
fn envelope_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    // JSON is the envelope already; HTML is the dashboard's own error page.
    let is_written = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if is_written {
        return resp;
    }
    let code = ErrorCode::from_status(status.as_u16());
    let message = match code {
        ErrorCode::NotFound => "no such route",
        ErrorCode::MethodNotAllowed => "method not allowed on this route",
        ErrorCode::PayloadTooLarge => "request body too large",
        ErrorCode::UnsupportedMediaType => "expected Content-Type: application/json",
        ErrorCode::InternalError => "internal error",
        _ => status.canonical_reason().unwrap_or("request failed"),
    };
    let (mut parts, _) = resp.into_parts();
    let fresh = ServiceError::new(code, message).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let (_, body) = fresh.into_parts();
    let mut out = Response::from_parts(parts, Body::new(body));
    *out.status_mut() = status;
    out
}

/// Unknown routes: 404 with the envelope, with or without a key.
pub async fn not_found() -> ServiceError {
    ServiceError::new(ErrorCode::NotFound, "no such route")
}

/// Known route, wrong method: 405 with the envelope.
pub async fn method_not_allowed() -> ServiceError {
    ServiceError::new(ErrorCode::MethodNotAllowed, "method not allowed on this route")
}
