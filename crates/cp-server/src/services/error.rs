//! The one error of the services: what went wrong, as the API's error codes name it. `http`
//! answers it as the `{"error": {...}}` envelope with the code's status.

use cp_store::StoreError;
use cp_types::{ErrorCode, FieldIssue};
use serde_json::{Value, json};

/// An error of a service. Build it with the constructors; `details` appear only when set.
#[derive(Debug, Clone)]
pub struct ServiceError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<Value>,
}

pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
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
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ServiceError::new(ErrorCode::NotFound, "not found"),
            StoreError::Conflict(m) => ServiceError::conflict(m),
            StoreError::Reference { field, issue } => ServiceError::invalid(&field, issue),
            StoreError::Invalid(m) => {
                ServiceError::new(ErrorCode::ValidationError, format!("a value cannot be stored: {m}"))
            }
            StoreError::LimitExceeded(m) => ServiceError::new(ErrorCode::ValidationError, m),
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "database unavailable");
                ServiceError::new(
                    ErrorCode::ServiceUnavailable,
                    "the database is not available; retry shortly",
                )
            }
            other => {
                tracing::error!(error = %other, "store error");
                ServiceError::internal()
            }
        }
    }
}

impl From<Vec<FieldIssue>> for ServiceError {
    fn from(issues: Vec<FieldIssue>) -> Self {
        ServiceError::validation(issues)
    }
}

/// [`ServiceError::from_store`] for `map_err`, naming the resource `what`.
pub fn or_not_found(what: &str) -> impl Fn(StoreError) -> ServiceError + '_ {
    move |e| ServiceError::from_store(e, what)
}
