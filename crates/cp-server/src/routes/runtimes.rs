//! `/api/v1/runtimes`: what runs agents, and the rules each runtime puts on models.

use axum::Json;
use axum::extract::State;
use cp_types::runtime::{
    Runtime, RuntimeInfo, RuntimeRequirements, RuntimeValidation, ValidateRuntime, runtime_info, runtime_issues,
    runtimes,
};
use cp_types::{Page, PageParams};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::{Auth, JsonBody, Pagination, Path, Read};
use crate::services::catalog::resolve_model;
use crate::services::error::{ServiceError, ServiceResult};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_runtimes))
        .routes(routes!(requirements))
        .routes(routes!(validate))
}

#[utoipa::path(get, path = "/api/v1/runtimes", tag = "runtimes", params(PageParams),
    responses((status = 200, body = Page<RuntimeInfo>)))]
async fn list_runtimes(_auth: Auth<Read>, Pagination(page): Pagination) -> ServiceResult<Json<Page<RuntimeInfo>>> {
    Ok(Json(Page::of_slice(runtimes(), page)))
}

#[utoipa::path(get, path = "/api/v1/runtimes/{id}/requirements", tag = "runtimes",
    params(("id" = String, Path, description = "`default` or `claude_code`")),
    responses((status = 200, body = RuntimeRequirements), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn requirements(_auth: Auth<Read>, Path(id): Path<String>) -> ServiceResult<Json<RuntimeRequirements>> {
    let runtime: Runtime = id.parse().map_err(|_| ServiceError::not_found("runtime"))?;
    Ok(Json(runtime_info(runtime).requirements))
}

/// Checks a runtime against a model (the organization's default when none is named) without
/// creating anything: `{valid, errors[]}`.
#[utoipa::path(post, path = "/api/v1/runtimes/validate", tag = "runtimes", request_body = ValidateRuntime,
    responses((status = 200, body = RuntimeValidation)))]
async fn validate(
    State(state): State<AppState>,
    auth: Auth<Read>,
    JsonBody(req): JsonBody<ValidateRuntime>,
) -> ServiceResult<Json<RuntimeValidation>> {
    let runtime: Result<Runtime, String> = req.runtime_type.parse();
    let model = resolve_model(&state.store, &auth.org_id, req.model_id.as_deref(), "model_id").await;
    let mut errors = Vec::new();
    if let Err(e) = &runtime {
        errors.push(format!("runtime_type: {e}"));
    }
    match &model {
        Ok(m) => {
            if let Ok(rt) = runtime {
                errors.extend(runtime_issues(rt, Some(m.facts())));
            }
        }
        Err(e) if e.code == cp_types::ErrorCode::ValidationError => errors.push(e.message.clone()),
        Err(e) => return Err(e.clone()),
    }
    if let Some(cfg) = &req.agent_config
        && !cfg.is_object()
    {
        errors.push("agent_config: must be an object".into());
    }
    Ok(Json(RuntimeValidation {
        valid: errors.is_empty(),
        errors,
        model: model.ok().map(|m| m.value),
    }))
}
