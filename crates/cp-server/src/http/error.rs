//! The one error type of the API, answered as the `{"error": {...}}` envelope.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cp_store::StoreError;
use cp_types::{ErrorBody, ErrorCode, ErrorEnvelope, FieldIssue};
use serde_json::{Value, json};

use super::context::current_request_id;

/// An error answered to the client. Build it with the constructors; `details` appear only when set.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<Value>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    pub fn internal() -> Self {
        Self::new(ErrorCode::InternalError, "internal error")
    }

    /// 422 for one field: `details = {field, issue}`.
    pub fn invalid(field: &str, issue: impl Into<String>) -> Self {
        let issue = issue.into();
        Self::new(ErrorCode::ValidationError, format!("{field}: {issue}"))
            .with_details(json!({"field": field, "issue": issue}))
    }

    /// 422 for one or several fields (`{field, issue}` for one, `{errors: [...]}` for several).
    pub fn validation(mut issues: Vec<FieldIssue>) -> Self {
        match issues.len() {
            0 => Self::new(ErrorCode::ValidationError, "invalid request"),
            1 => {
                let one = issues.remove(0);
                Self::invalid(&one.field, one.issue)
            }
            n => Self::new(ErrorCode::ValidationError, format!("{n} fields are invalid"))
                .with_details(json!({ "errors": issues })),
        }
    }

    /// Maps a store error, naming the resource for "not found".
    pub fn from_store(e: StoreError, what: &str) -> Self {
        match e {
            StoreError::NotFound => Self::not_found(what),
            other => other.into(),
        }
    }

    /// The envelope body, with the current request id.
    pub fn envelope(&self) -> ErrorEnvelope {
        ErrorEnvelope {
            error: ErrorBody {
                code: self.code,
                message: self.message.clone(),
                details: self.details.clone(),
                request_id: current_request_id(),
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::new(ErrorCode::NotFound, "not found"),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Reference { field, issue } => ApiError::invalid(&field, issue),
            StoreError::Invalid(m) => {
                ApiError::new(ErrorCode::ValidationError, format!("a value cannot be stored: {m}"))
            }
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "database unavailable");
                ApiError::new(
                    ErrorCode::ServiceUnavailable,
                    "the database is not available; retry shortly",
                )
            }
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::internal()
            }
        }
    }
}

impl From<Vec<FieldIssue>> for ApiError {
    fn from(issues: Vec<FieldIssue>) -> Self {
        ApiError::validation(issues)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.envelope()).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    }
}
