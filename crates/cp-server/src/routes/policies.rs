//! `/api/v1/policies`: Rego policies, compiled when written (content that does not compile is
//! a 422 naming the line), and the validate endpoints.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use cp_types::policy::{CreatePolicy, Policy, PolicyError, PolicyValidation, UpdatePolicy, ValidatePolicy};
use cp_types::{Deleted, Page, PageParams};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::{ApiError, ApiResult, Auth, JsonBody, Pagination, Path, Query, Read, Write};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_policies, create_policy))
        .routes(routes!(validate_content))
        .routes(routes!(get_policy, update_policy, delete_policy))
        .routes(routes!(validate_policy))
}

fn not_found(e: cp_store::StoreError) -> ApiError {
    ApiError::from_store(e, "policy")
}

/// Compiles `content`; the package it declares, or a 422 with the compiler's message and line.
fn compile(content: &str) -> ApiResult<String> {
    cp_policy::compile(content)
        .map(|c| c.package().to_string())
        .map_err(|e| {
            ApiError::invalid("policy_content", e.message.clone())
                .with_details(json!({"field": "policy_content", "issue": e.message, "line": e.line}))
        })
}

fn validation(content: &str) -> PolicyValidation {
    match cp_policy::compile(content) {
        Ok(c) => PolicyValidation {
            valid: true,
            errors: Vec::new(),
            package: Some(c.package().to_string()),
        },
        Err(e) => PolicyValidation {
            valid: false,
            errors: vec![PolicyError {
                message: e.message,
                line: e.line,
            }],
            package: None,
        },
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PolicyQuery {
    /// Only enabled (true) or disabled (false) policies.
    enabled: Option<bool>,
}

/// Policies, newest first.
#[utoipa::path(get, path = "/api/v1/policies", tag = "policies", params(PageParams, PolicyQuery),
    responses((status = 200, body = Page<Policy>)))]
async fn list_policies(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
    Query(q): Query<PolicyQuery>,
) -> ApiResult<Json<Page<Policy>>> {
    Ok(Json(state.store.policies(&auth.org_id).list(q.enabled, page).await?))
}

/// Creates a policy; its content must compile (422 with the line otherwise).
#[utoipa::path(post, path = "/api/v1/policies", tag = "policies", request_body = CreatePolicy,
    responses((status = 201, body = Policy), (status = 409, body = cp_types::ErrorEnvelope),
              (status = 422, body = cp_types::ErrorEnvelope)))]
async fn create_policy(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(req): JsonBody<CreatePolicy>,
) -> ApiResult<(StatusCode, Json<Policy>)> {
    req.validate()?;
    let package = compile(&req.policy_content)?;
    let policy = state.store.policies(&auth.org_id).create(&req, &package).await?;
    Ok((StatusCode::CREATED, Json(policy)))
}

#[utoipa::path(get, path = "/api/v1/policies/{id}", tag = "policies", params(("id" = Uuid, Path)),
    responses((status = 200, body = Policy), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_policy(State(state): State<AppState>, auth: Auth<Read>, Path(id): Path<Uuid>) -> ApiResult<Json<Policy>> {
    Ok(Json(
        state.store.policies(&auth.org_id).get(id).await.map_err(not_found)?,
    ))
}

/// Partial update (PUT and PATCH alike); new content must compile and moves `version`.
#[utoipa::path(method(put, patch), path = "/api/v1/policies/{id}", tag = "policies", params(("id" = Uuid, Path)),
    request_body = UpdatePolicy, responses((status = 200, body = Policy), (status = 422, body = cp_types::ErrorEnvelope)))]
async fn update_policy(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<UpdatePolicy>,
) -> ApiResult<Json<Policy>> {
    req.validate()?;
    let package = req.policy_content.as_deref().map(compile).transpose()?;
    let policy = state
        .store
        .policies(&auth.org_id)
        .update(id, &req, package.as_deref())
        .await
        .map_err(not_found)?;
    Ok(Json(policy))
}

#[utoipa::path(delete, path = "/api/v1/policies/{id}", tag = "policies", params(("id" = Uuid, Path)),
    responses((status = 200, body = Deleted)))]
async fn delete_policy(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Deleted>> {
    state.store.policies(&auth.org_id).delete(id).await.map_err(not_found)?;
    Ok(Json(Deleted::new(id)))
}

/// Whether some content compiles, without storing it.
#[utoipa::path(post, path = "/api/v1/policies/validate", tag = "policies", request_body = ValidatePolicy,
    responses((status = 200, body = PolicyValidation)))]
async fn validate_content(
    _auth: Auth<Read>,
    JsonBody(req): JsonBody<ValidatePolicy>,
) -> ApiResult<Json<PolicyValidation>> {
    if req.policy_content.len() > cp_types::policy::MAX_POLICY_BYTES {
        return Err(ApiError::invalid("policy_content", "at most 262144 bytes"));
    }
    Ok(Json(validation(&req.policy_content)))
}

/// Whether a stored policy compiles (with this build's Rego engine).
#[utoipa::path(post, path = "/api/v1/policies/{id}/validate", tag = "policies", params(("id" = Uuid, Path)),
    responses((status = 200, body = PolicyValidation)))]
async fn validate_policy(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<PolicyValidation>> {
    let policy = state.store.policies(&auth.org_id).get(id).await.map_err(not_found)?;
    Ok(Json(validation(&policy.policy_content)))
}
