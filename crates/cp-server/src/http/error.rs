//! The services' error answered as the `{"error": {...}}` envelope.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cp_types::{ErrorBody, ErrorEnvelope};

use super::context::current_request_id;
use crate::services::error::ServiceError;

/// The envelope body of `e`, with the current request id.
pub fn envelope(e: &ServiceError) -> ErrorEnvelope {
    ErrorEnvelope {
        error: ErrorBody {
            code: e.code,
            message: e.message.clone(),
            details: e.details.clone(),
            request_id: current_request_id(),
        },
    }
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&envelope(&self)).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    }
}
