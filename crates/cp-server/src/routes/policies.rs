//! `/api/v1/policies`: Rego policies, compiled when written (content that does not compile is
//! a 422 naming the line), the validate endpoints, associations and their resolution,
//! evaluation (both path styles), tool-call enforcement and the decision log.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use cp_policy::CompileError;
use cp_store::policy_associations::AssociationFilter;
use cp_types::context::{ContextEntity, ContextEntityType};
use cp_types::execution::ExecutionType;
use cp_types::policy::{
    CheckAuthorization, CreatePolicy, CreatePolicyAssociation, DecisionFilter, EnforceRequest, EntityAuthorization,
    EvaluatePolicies, Policy, PolicyAssociation, PolicyDecision, PolicyError, PolicyEvaluation, PolicyValidation,
    ResolvedPolicy, UpdatePolicy, UpdatePolicyAssociation, ValidatePolicy,
};
use cp_types::{Deleted, Page, PageParams, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::extract::context_entity;
use crate::http::{Auth, Enforcer, JsonBody, Pagination, Path, Query, Read, Write};
use crate::services::caller::Caller;
use crate::services::error::{ServiceError, ServiceResult, or_not_found};
use crate::services::policy::{self, DECISION_LIMIT, PolicySet, Request};
use crate::services::workers;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_policies, create_policy))
        .routes(routes!(validate_content))
        .routes(routes!(list_associations, create_association))
        .routes(routes!(get_association, update_association, delete_association))
        .routes(routes!(resolved_policies))
        .routes(routes!(evaluate_entity))
        .routes(routes!(evaluate_short))
        .routes(routes!(check_authorization))
        .routes(routes!(authorize_short))
        .routes(routes!(enforce_tool_call))
        .routes(routes!(list_decisions))
        .routes(routes!(policy_engine_health))
        .routes(routes!(get_policy, update_policy, delete_policy))
        .routes(routes!(validate_policy))
}

fn not_found(e: cp_store::StoreError) -> ServiceError {
    ServiceError::from_store(e, "policy")
}

/// Whether policies can be decided: a trivial policy is compiled in the sandbox (the official
/// client's `GET /policies/health`).
#[utoipa::path(get, path = "/api/v1/policies/health", tag = "policies",
    responses((status = 200, body = PolicyEngineHealth)))]
async fn policy_engine_health(State(state): State<AppState>, _auth: Auth<Read>) -> Json<PolicyEngineHealth> {
    let started = std::time::Instant::now();
    let probe = state.policies.compile("package kubiya.health\n\nallow := true\n").await;
    let (status, error) = match probe {
        Ok(Ok(_)) => ("healthy", None),
        Ok(Err(e)) => ("degraded", Some(e.message)),
        Err(e) => ("degraded", Some(e.to_string())),
    };
    Json(PolicyEngineHealth {
        status: status.into(),
        engine: "regorus (in-process Rego, in bounded sandbox processes)".into(),
        latency_ms: started.elapsed().as_secs_f64() * 1e3,
        error,
    })
}

/// `GET /policies/health`.
#[derive(Debug, Serialize, ToSchema)]
struct PolicyEngineHealth {
    /// `healthy` or `degraded`.
    status: String,
    engine: String,
    /// How long compiling a trivial policy took.
    latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Compiles `content` in the policy sandbox: the package it declares, or why not.
async fn compiled(state: &AppState, content: &str) -> ServiceResult<Result<String, CompileError>> {
    state.policies.compile(content).await.map_err(|e| {
        tracing::error!(error = %e, "the policy sandbox failed");
        ServiceError::internal()
    })
}

/// The 422 of content that does not compile: the compiler's message and line, or the limit
/// (memory, time, nesting) compiling it exceeded.
fn refused(e: CompileError) -> ServiceError {
    ServiceError::invalid("policy_content", e.message.clone())
        .with_details(json!({"field": "policy_content", "issue": e.message, "line": e.line, "limit": e.limit}))
}

/// Compiles `content`; the package it declares, or a 422.
async fn compile(state: &AppState, content: &str) -> ServiceResult<String> {
    compiled(state, content).await?.map_err(refused)
}

/// Whether `content` compiles; content over a budget is refused with a 422 naming the limit.
async fn validation(state: &AppState, content: &str) -> ServiceResult<PolicyValidation> {
    Ok(match compiled(state, content).await? {
        Ok(package) => PolicyValidation {
            valid: true,
            errors: Vec::new(),
            package: Some(package),
        },
        Err(e) if e.limit.is_some() => return Err(refused(e)),
        Err(e) => PolicyValidation {
            valid: false,
            errors: vec![PolicyError {
                message: e.message,
                line: e.line,
            }],
            package: None,
        },
    })
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
) -> ServiceResult<Json<Page<Policy>>> {
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
) -> ServiceResult<(StatusCode, Json<Policy>)> {
    req.validate()?;
    let package = compile(&state, &req.policy_content).await?;
    let policy = state.store.policies(&auth.org_id).create(&req, &package).await?;
    Ok((StatusCode::CREATED, Json(policy)))
}

#[utoipa::path(get, path = "/api/v1/policies/{id}", tag = "policies", params(("id" = Uuid, Path)),
    responses((status = 200, body = Policy), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_policy(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Policy>> {
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
) -> ServiceResult<Json<Policy>> {
    req.validate()?;
    let package = match req.policy_content.as_deref() {
        Some(content) => Some(compile(&state, content).await?),
        None => None,
    };
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
) -> ServiceResult<Json<Deleted>> {
    state.store.policies(&auth.org_id).delete(id).await.map_err(not_found)?;
    Ok(Json(Deleted::new(id)))
}

/// Whether some content compiles, without storing it.
#[utoipa::path(post, path = "/api/v1/policies/validate", tag = "policies", request_body = ValidatePolicy,
    responses((status = 200, body = PolicyValidation), (status = 422, body = cp_types::ErrorEnvelope)))]
async fn validate_content(
    State(state): State<AppState>,
    _auth: Auth<Read>,
    JsonBody(req): JsonBody<ValidatePolicy>,
) -> ServiceResult<Json<PolicyValidation>> {
    if req.policy_content.len() > cp_types::policy::MAX_POLICY_BYTES {
        return Err(ServiceError::invalid("policy_content", "at most 262144 bytes"));
    }
    Ok(Json(validation(&state, &req.policy_content).await?))
}

/// Whether a stored policy compiles (with this build's Rego engine).
#[utoipa::path(post, path = "/api/v1/policies/{id}/validate", tag = "policies", params(("id" = Uuid, Path)),
    responses((status = 200, body = PolicyValidation), (status = 422, body = cp_types::ErrorEnvelope)))]
async fn validate_policy(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<PolicyValidation>> {
    let policy = state.store.policies(&auth.org_id).get(id).await.map_err(not_found)?;
    Ok(Json(validation(&state, &policy.policy_content).await?))
}

fn association_not_found(e: cp_store::StoreError) -> ServiceError {
    ServiceError::from_store(e, "policy association")
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AssociationQuery {
    entity_type: Option<ContextEntityType>,
    entity_id: Option<String>,
    policy_id: Option<Uuid>,
    enabled: Option<bool>,
}

/// Associations, newest first.
#[utoipa::path(get, path = "/api/v1/policies/associations", tag = "policies", params(PageParams, AssociationQuery),
    responses((status = 200, body = Page<PolicyAssociation>)))]
async fn list_associations(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
    Query(q): Query<AssociationQuery>,
) -> ServiceResult<Json<Page<PolicyAssociation>>> {
    let filter = AssociationFilter {
        entity_type: q.entity_type,
        entity_id: q.entity_id,
        policy_id: q.policy_id,
        enabled: q.enabled,
    };
    Ok(Json(
        state
            .store
            .policy_associations(&auth.org_id)
            .list(&filter, page)
            .await?,
    ))
}

/// Attaches a policy to the organization, a project, an environment, a team or an agent.
#[utoipa::path(post, path = "/api/v1/policies/associations", tag = "policies", request_body = CreatePolicyAssociation,
    responses((status = 201, body = PolicyAssociation), (status = 409, body = cp_types::ErrorEnvelope),
              (status = 422, body = cp_types::ErrorEnvelope)))]
async fn create_association(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(req): JsonBody<CreatePolicyAssociation>,
) -> ServiceResult<(StatusCode, Json<PolicyAssociation>)> {
    let entity = req.validate()?;
    if let ContextEntity::Organization(slug) = &entity
        && *slug != auth.org_id
    {
        return Err(ServiceError::invalid("entity_id", "no such organization"));
    }
    let created = state
        .store
        .policy_associations(&auth.org_id)
        .create(&req, &entity)
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/api/v1/policies/associations/{id}", tag = "policies", params(("id" = Uuid, Path)),
    responses((status = 200, body = PolicyAssociation), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_association(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<PolicyAssociation>> {
    let found = state.store.policy_associations(&auth.org_id).get(id).await;
    Ok(Json(found.map_err(association_not_found)?))
}

/// Changes `enabled`, `priority` or `metadata`.
#[utoipa::path(method(patch, put), path = "/api/v1/policies/associations/{id}", tag = "policies",
    params(("id" = Uuid, Path)), request_body = UpdatePolicyAssociation,
    responses((status = 200, body = PolicyAssociation), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn update_association(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<UpdatePolicyAssociation>,
) -> ServiceResult<Json<PolicyAssociation>> {
    req.validate()?;
    let updated = state.store.policy_associations(&auth.org_id).update(id, &req).await;
    Ok(Json(updated.map_err(association_not_found)?))
}

#[utoipa::path(delete, path = "/api/v1/policies/associations/{id}", tag = "policies", params(("id" = Uuid, Path)),
    responses((status = 200, body = Deleted), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn delete_association(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Deleted>> {
    let deleted = state.store.policy_associations(&auth.org_id).delete(id).await;
    deleted.map_err(association_not_found)?;
    Ok(Json(Deleted::new(id)))
}

/// The compiled set of `entity`'s policies at the current catalog version.
async fn entity_set(
    state: &AppState,
    caller: &Caller,
    entity: &ContextEntity,
) -> ServiceResult<std::sync::Arc<PolicySet>> {
    let (_, version) = state.store.policy_state(&caller.org_id).await?;
    let set = state
        .policies
        .set(&state.store, &caller.org_id, version, entity, None)
        .await;
    set.map_err(or_not_found(entity.kind().as_str()))
}

/// The policies that apply to an entity: those associated with it or with any entity of its
/// chain (organization → projects → environments → teams → the entity), and those named by
/// the chain's contexts, each once with its source, highest priority first.
#[utoipa::path(get, path = "/api/v1/policies/resolved/{entity_type}/{entity_id}", tag = "policies",
    params(("entity_type" = ContextEntityType, Path), ("entity_id" = String, Path), PageParams),
    responses((status = 200, body = Page<ResolvedPolicy>), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn resolved_policies(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path((entity_type, entity_id)): Path<(String, String)>,
    Pagination(page): Pagination,
) -> ServiceResult<Json<Page<ResolvedPolicy>>> {
    let entity = context_entity(&entity_type, &entity_id)?;
    let set = entity_set(&state, &auth, &entity).await?;
    let all: Vec<ResolvedPolicy> = set.policies.iter().map(|p| p.resolved.clone()).collect();
    Ok(Json(Page::of_slice(all, page)))
}

/// Evaluates `set` for a document (nothing is enforced or recorded: this is a question).
async fn evaluate(
    state: &AppState,
    caller: &Caller,
    set: &PolicySet,
    input: Value,
    authorization: bool,
) -> ServiceResult<Json<PolicyEvaluation>> {
    let (mode, _) = state.store.policy_state(&caller.org_id).await?;
    let evaluation = state.policies.evaluate(set, &input, DECISION_LIMIT).await;
    Ok(Json(PolicyEvaluation {
        allowed: evaluation.allowed,
        authorized: authorization.then_some(evaluation.allowed),
        violations: evaluation.violations,
        policies_evaluated: evaluation.results.len(),
        policy_results: evaluation.results,
        mode,
        entity_type: set.entity.kind(),
        entity_id: set.entity.id(),
    }))
}

/// The input of an authorization question about `set`'s entity.
fn question(caller: &Caller, set: &PolicySet, action: &str, resource: Option<Value>, context: Option<Value>) -> Value {
    let req = Request {
        action: action.to_string(),
        resource,
        context,
        ..Request::default()
    };
    policy::input_document(caller, set, &req)
}

/// Evaluates the entity's policies for `input_data`, used as Rego's `input`; the organization,
/// caller and entity are filled in where it leaves them out.
#[utoipa::path(post, path = "/api/v1/policies/evaluate/{entity_type}/{entity_id}", tag = "policies",
    params(("entity_type" = ContextEntityType, Path), ("entity_id" = String, Path)), request_body = EvaluatePolicies,
    responses((status = 200, body = PolicyEvaluation), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn evaluate_entity(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path((entity_type, entity_id)): Path<(String, String)>,
    JsonBody(req): JsonBody<EvaluatePolicies>,
) -> ServiceResult<Json<PolicyEvaluation>> {
    let entity = context_entity(&entity_type, &entity_id)?;
    req.validate()?;
    let set = entity_set(&state, &auth, &entity).await?;
    let action = req
        .input_data
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or("evaluate")
        .to_string();
    let mut input = question(&auth, &set, &action, None, None);
    if let (Value::Object(doc), Value::Object(given)) = (&mut input, req.input_data) {
        doc.extend(given);
    }
    evaluate(&state, &auth, &set, input, false).await
}

/// The short paths of the Python client (`evaluate`, `authorize`): the entity is found by id
/// among agents, teams, environments and projects.
async fn short_question(
    state: &AppState,
    caller: &Caller,
    req: EntityAuthorization,
    authorization: bool,
) -> ServiceResult<Json<PolicyEvaluation>> {
    req.validate()?;
    let entity = state.store.contexts(&caller.org_id).infer(req.entity_id.trim()).await;
    let entity = entity.map_err(|e| ServiceError::from_store(e, "entity"))?;
    let set = entity_set(state, caller, &entity).await?;
    let input = question(caller, &set, &req.action, req.resource, req.context);
    evaluate(state, caller, &set, input, authorization).await
}

/// The Python client's `policies.evaluate`: the entity's policies for `{action, resource}`.
#[utoipa::path(post, path = "/api/v1/policies/evaluate", tag = "policies", request_body = EntityAuthorization,
    responses((status = 200, body = PolicyEvaluation), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn evaluate_short(
    State(state): State<AppState>,
    auth: Auth<Read>,
    JsonBody(req): JsonBody<EntityAuthorization>,
) -> ServiceResult<Json<PolicyEvaluation>> {
    short_question(&state, &auth, req, false).await
}

/// Whether the entity may do `action` on `resource`; `authorized` equals `allowed`.
#[utoipa::path(post, path = "/api/v1/policies/check-authorization/{entity_type}/{entity_id}", tag = "policies",
    params(("entity_type" = ContextEntityType, Path), ("entity_id" = String, Path)), request_body = CheckAuthorization,
    responses((status = 200, body = PolicyEvaluation), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn check_authorization(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path((entity_type, entity_id)): Path<(String, String)>,
    JsonBody(req): JsonBody<CheckAuthorization>,
) -> ServiceResult<Json<PolicyEvaluation>> {
    let entity = context_entity(&entity_type, &entity_id)?;
    req.validate()?;
    let set = entity_set(&state, &auth, &entity).await?;
    let input = question(&auth, &set, &req.action, req.resource, req.context);
    evaluate(&state, &auth, &set, input, true).await
}

/// The Python client's `policies.check_authorization`.
#[utoipa::path(post, path = "/api/v1/policies/authorize", tag = "policies", request_body = EntityAuthorization,
    responses((status = 200, body = PolicyEvaluation), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn authorize_short(
    State(state): State<AppState>,
    auth: Auth<Read>,
    JsonBody(req): JsonBody<EntityAuthorization>,
) -> ServiceResult<Json<PolicyEvaluation>> {
    short_question(&state, &auth, req, true).await
}

/// The decision on a tool call of a running execution, as the worker asks before every call.
/// `blocked` tells the worker to refuse the call (a denial in blocking mode, where an
/// evaluation error or timeout denies too); in monitoring mode a denial is recorded with
/// `blocked: false`. Every decision with at least one policy is recorded.
#[utoipa::path(post, path = "/api/v1/policies/enforce", tag = "policies", request_body = EnforceRequest,
    responses((status = 200, body = PolicyDecision), (status = 404, body = cp_types::ErrorEnvelope),
              (status = 409, body = cp_types::ErrorEnvelope)))]
async fn enforce_tool_call(
    State(state): State<AppState>,
    auth: Auth<Enforcer>,
    JsonBody(req): JsonBody<EnforceRequest>,
) -> ServiceResult<Json<PolicyDecision>> {
    req.validate()?;
    let org = auth.org_id.as_str();
    let executions = state.store.executions(org);
    let execution = executions
        .get(req.execution_id)
        .await
        .map_err(|e| ServiceError::from_store(e, "execution"))?;
    if execution.status.is_terminal() {
        return Err(ServiceError::conflict(format!("the execution is {}", execution.status)));
    }
    workers::check_holds(&state, &auth, &execution).await?;
    let subject = executions
        .subject(execution.execution_type, execution.entity_id, execution.worker_queue_id)
        .await
        .map_err(|e| ServiceError::from_store(e, execution.execution_type.as_str()))?;
    let entity = match execution.execution_type {
        ExecutionType::Team => ContextEntity::Team(execution.entity_id),
        _ => ContextEntity::Agent(execution.entity_id),
    };
    let (mode, version) = subject.policy_state()?;
    let set = state
        .policies
        .set(&state.store, org, version, &entity, subject.environment_id)
        .await
        .map_err(|e| ServiceError::from_store(e, entity.kind().as_str()))?;
    let request = Request {
        action: req.action.unwrap_or_else(|| "tool_execution".into()),
        execution: Some(policy::execution_document(
            Some(execution.id),
            &execution.prompt,
            execution.worker_queue_id,
            &subject,
        )),
        tool: Some(req.tool),
        resource: None,
        context: req.context,
    };
    Ok(Json(
        policy::enforce(&state, &auth, mode, &set, &request, Some(execution.id)).await,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DecisionQuery {
    /// The agent's, team's or other entity's id.
    entity_id: Option<String>,
    execution_id: Option<Uuid>,
    /// What the policies said (a monitoring-mode denial is `false`, though not blocked).
    allowed: Option<bool>,
    /// `execute`, `tool_execution`, …
    action: Option<String>,
    /// Decisions at or after this time (RFC 3339).
    #[param(value_type = Option<String>)]
    since: Option<Timestamp>,
}

/// Recorded enforcement decisions, newest first.
#[utoipa::path(get, path = "/api/v1/policies/decisions", tag = "policies", params(PageParams, DecisionQuery),
    responses((status = 200, body = Page<PolicyDecision>)))]
async fn list_decisions(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
    Query(q): Query<DecisionQuery>,
) -> ServiceResult<Json<Page<PolicyDecision>>> {
    // The log is written in the background: what this replica decided so far is stored first.
    state.policies.flush_log(&state.store).await;
    let filter = DecisionFilter {
        entity_id: q.entity_id,
        execution_id: q.execution_id,
        allowed: q.allowed,
        action: q.action,
        since: q.since,
    };
    Ok(Json(state.store.policy_decisions(&auth.org_id, &filter, page).await?))
}
