//! Extractors whose rejections are envelope errors with precise statuses: malformed JSON 400,
//! wrong content type 415, oversize 413, wrong or missing fields 422, bad path ids 400.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use cp_types::context::{ContextEntity, ContextEntityType};
use cp_types::page::{PageParams, PageRequest};
use cp_types::{ErrorCode, FieldIssue};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::services::error::{ServiceError, ServiceResult};

/// A JSON request body. Unknown fields are ignored; known ones are validated strictly.
pub struct JsonBody<T>(pub T);

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

fn body_error(e: BytesRejection) -> ServiceError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ServiceError::new(ErrorCode::PayloadTooLarge, "request body too large")
    } else {
        ServiceError::bad_request(format!("could not read the request body: {e}"))
    }
}

/// Turns a serde error at a path into a 422 naming the most useful field.
fn field_issue(err: serde_path_to_error::Error<serde_json::Error>) -> ServiceError {
    let path = err.path().to_string();
    let message = err.into_inner().to_string();
    // "missing field `name` at line 1 column 2" names the field in the message, not the path.
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next());
    let field = match (missing, path.as_str()) {
        (Some(name), "." | "") => name.to_string(),
        (Some(name), parent) => format!("{parent}.{name}"),
        (None, "." | "") => "body".to_string(),
        (None, p) => p.to_string(),
    };
    let issue = message.split(" at line ").next().unwrap_or(&message).to_string();
    ServiceError::validation(vec![FieldIssue::new(field, issue)])
}

/// The path of the first string (key or value) holding a NUL character, which PostgreSQL's
/// `text` and `jsonb` cannot store (SQLite could, so both backends refuse it alike).
fn nul_path(value: &Value, path: &mut Vec<String>) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().enumerate().any(|(i, v)| {
            path.push(i.to_string());
            nul_path(v, path) || {
                path.pop();
                false
            }
        }),
        Value::Object(map) => map.iter().any(|(k, v)| {
            path.push(k.clone());
            k.contains('\0') || nul_path(v, path) || {
                path.pop();
                false
            }
        }),
        _ => false,
    }
}

/// Parses JSON bytes into `T`: malformed JSON (including trailing garbage) is a 400; a wrong
/// type, a missing field or a NUL character is a 422 naming the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ServiceError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ServiceError::bad_request(format!("malformed JSON: {e}")))?;
    let mut path = Vec::new();
    if nul_path(&value, &mut path) {
        let field = if path.is_empty() {
            "body".to_string()
        } else {
            path.join(".")
        };
        return Err(ServiceError::invalid(&field, "must not contain NUL characters"));
    }
    serde_path_to_error::deserialize(value).map_err(field_issue)
}

/// The bytes of a JSON request body: 415 for another content type, 400 for an empty body.
async fn json_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ServiceError> {
    if !is_json(&req) {
        return Err(ServiceError::new(
            ErrorCode::UnsupportedMediaType,
            "expected Content-Type: application/json",
        ));
    }
    let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ServiceError::bad_request(
            "the request body is empty; a JSON object was expected",
        ));
    }
    Ok(bytes)
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ServiceError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ServiceError> {
        parse_json(&json_bytes(req, state).await?).map(JsonBody)
    }
}

/// A body that may be left out (`Option<JsonBody<T>>`): none or only whitespace is `None`;
/// anything else is read as [`JsonBody`] reads it.
impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for JsonBody<T> {
    type Rejection = ServiceError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, ServiceError> {
        let json = is_json(&req);
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        if !json {
            return Err(ServiceError::new(
                ErrorCode::UnsupportedMediaType,
                "expected Content-Type: application/json",
            ));
        }
        parse_json(&bytes).map(|v| Some(JsonBody(v)))
    }
}

/// What a worker reports of a run (events, its result, its failure): a NUL character, which the
/// databases cannot store, becomes U+FFFD instead of refusing the report, so a run whose tool
/// printed binary output still ends.
pub struct RunReport<T>(pub T);

/// Replaces NUL in every string (keys included) with U+FFFD.
pub(crate) fn replace_nul(value: &mut Value) {
    match value {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{FFFD}"),
        Value::Array(items) => items.iter_mut().for_each(replace_nul),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let entries = std::mem::take(map);
                map.extend(entries.into_iter().map(|(k, v)| (k.replace('\0', "\u{FFFD}"), v)));
            }
            map.values_mut().for_each(replace_nul);
        }
        _ => {}
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for RunReport<T> {
    type Rejection = ServiceError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ServiceError> {
        let bytes = json_bytes(req, state).await?;
        let mut value: Value =
            serde_json::from_slice(&bytes).map_err(|e| ServiceError::bad_request(format!("malformed JSON: {e}")))?;
        replace_nul(&mut value);
        serde_path_to_error::deserialize(value)
            .map(RunReport)
            .map_err(field_issue)
    }
}

/// Path parameters; a malformed id (e.g. not a UUID) is a 400, never a 500.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ServiceError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(ServiceError::bad_request(format!(
                "invalid path parameter: {}",
                e.body_text()
            ))
            .with_details(serde_json::json!({"issue": e.body_text()}))),
            Err(e) => Err(ServiceError::bad_request(e.body_text())),
        }
    }
}

/// Query parameters; a value of the wrong type is a 422 naming the parameter.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ServiceError> {
        let parsed = match python_booleans(parts.uri.query()) {
            Some(uri) => axum::extract::Query::<T>::try_from_uri(&uri),
            None => axum::extract::Query::<T>::from_request_parts(parts, state).await,
        };
        match parsed {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                let text = e.body_text();
                let issue = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text)
                    .to_string();
                Err(
                    ServiceError::new(ErrorCode::ValidationError, format!("invalid query string: {issue}"))
                        .with_details(serde_json::json!({"field": "query", "issue": issue})),
                )
            }
            Err(e) => Err(ServiceError::bad_request(e.body_text())),
        }
    }
}

/// The official Python client formats booleans with `str()` (`?enabled_only=True`): a URI with
/// `True`/`False` values lowercased, or `None` when there is nothing to change.
fn python_booleans(query: Option<&str>) -> Option<axum::http::Uri> {
    let query = query?;
    if !query.contains("=True") && !query.contains("=False") {
        return None;
    }
    let fixed: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, "True")) => format!("{k}=true"),
            Some((k, "False")) => format!("{k}=false"),
            _ => pair.to_string(),
        })
        .collect();
    format!("/?{}", fixed.join("&")).parse().ok()
}

/// `limit`/`offset`/`skip`, validated: the one pagination helper.
pub struct Pagination(pub PageRequest);

impl<S: Send + Sync> FromRequestParts<S> for Pagination {
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ServiceError> {
        let Query(params) = Query::<PageParams>::from_request_parts(parts, state).await?;
        params.validate().map(Pagination).map_err(ServiceError::validation)
    }
}

/// Reads `{entity_type}/{entity_id}`: an unknown type is a 422 naming the allowed ones, an id
/// that is not a UUID (for every type but the organization) a 400.
pub fn context_entity(entity_type: &str, entity_id: &str) -> ServiceResult<ContextEntity> {
    let kind: ContextEntityType = entity_type
        .parse()
        .map_err(|issue: String| ServiceError::invalid("entity_type", issue))?;
    ContextEntity::parse(kind, entity_id).map_err(|issue| {
        ServiceError::bad_request(format!("invalid path parameter: {issue}"))
            .with_details(json!({"field": "entity_id", "issue": issue}))
    })
}
