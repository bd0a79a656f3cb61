//! `/api/v1/skills`: skills, their definitions and templates, validation, associations with
//! agents, teams and environments, and the skills an agent or team resolves to.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use cp_store::skills::{FoundEntity, MissingSkill, SkillFilter};
use cp_types::page::PageRequest;
use cp_types::skill::{
    AssociateSkills, AssociatedSkill, CreateSkill, CreateSkillAssociation, EntityRef, MAX_ASSOCIATE, ResolvedSkill,
    Skill, SkillAssociation, SkillDefinition, SkillEntityType, SkillTemplate, SkillType, SkillTypeInfo,
    SkillValidation, SkillsAssociated, UpdateSkill, ValidateSkill, definition, definitions, templates, type_infos,
    validate_override,
};
use cp_types::{Deleted, Page, PageParams};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::{Auth, JsonBody, Pagination, Path, Query, Read, Write};
use crate::services::error::{ServiceError, ServiceResult};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_skills, create_skill))
        .routes(routes!(list_definitions))
        .routes(routes!(get_definition))
        .routes(routes!(validate_definition))
        .routes(routes!(list_types))
        .routes(routes!(list_templates))
        .routes(routes!(validate_skill))
        .routes(routes!(associate_skills))
        .routes(routes!(list_entity_skills, add_entity_skill))
        .routes(routes!(remove_entity_skill))
        .routes(routes!(resolved_skills))
        .routes(routes!(get_skill, update_skill, delete_skill))
}

fn not_found(e: cp_store::StoreError) -> ServiceError {
    ServiceError::from_store(e, "skill")
}

/// One page of a list computed in memory.
fn page_of<T>(items: Vec<T>, page: PageRequest) -> Page<T> {
    let total = items.len() as i64;
    let offset = usize::try_from(page.offset).unwrap_or(usize::MAX);
    let limit = usize::try_from(page.limit).unwrap_or(0);
    Page::new(items.into_iter().skip(offset).take(limit).collect(), total, page)
}

fn skill_type(text: &str) -> ServiceResult<SkillType> {
    text.parse()
        .map_err(|_| ServiceError::not_found(&format!("skill type '{text}'")))
}

/// The `{entity_type}/{entity_id}` of association paths; an unknown type is an unknown path.
fn entity_ref(entity_type: &str, id: Uuid) -> ServiceResult<EntityRef> {
    let kind = SkillEntityType::parse_loose(entity_type).ok_or_else(|| {
        ServiceError::not_found(&format!(
            "entity type '{entity_type}' (expected agents, teams or environments)"
        ))
    })?;
    Ok(EntityRef { kind, id })
}

fn entity_not_found(entity: EntityRef) -> impl FnOnce(cp_store::StoreError) -> ServiceError {
    move |e| ServiceError::from_store(e, entity.kind.as_str())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SkillQuery {
    /// Only skills of this type.
    #[serde(rename = "type")]
    skill_type: Option<SkillType>,
    /// Only enabled (true) or disabled (false) skills.
    enabled: Option<bool>,
}

#[utoipa::path(get, path = "/api/v1/skills", tag = "skills", params(PageParams, SkillQuery),
    responses((status = 200, body = Page<Skill>)))]
async fn list_skills(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
    Query(q): Query<SkillQuery>,
) -> ServiceResult<Json<Page<Skill>>> {
    let filter = SkillFilter {
        skill_type: q.skill_type,
        enabled: q.enabled,
    };
    Ok(Json(state.store.skills(&auth.org_id).list(filter, page).await?))
}

/// Creates a skill; its configuration is validated against the type and stored normalized.
#[utoipa::path(post, path = "/api/v1/skills", tag = "skills", request_body = CreateSkill,
    responses((status = 201, body = Skill), (status = 409, body = cp_types::ErrorEnvelope),
              (status = 422, body = cp_types::ErrorEnvelope)))]
async fn create_skill(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(req): JsonBody<CreateSkill>,
) -> ServiceResult<(StatusCode, Json<Skill>)> {
    let configuration = req.validate()?;
    let skill = state.store.skills(&auth.org_id).create(&req, &configuration).await?;
    Ok((StatusCode::CREATED, Json(skill)))
}

#[utoipa::path(get, path = "/api/v1/skills/{id}", tag = "skills", params(("id" = Uuid, Path)),
    responses((status = 200, body = Skill), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_skill(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Skill>> {
    Ok(Json(state.store.skills(&auth.org_id).get(id).await.map_err(not_found)?))
}

/// Partial update (PATCH and PUT alike). A new `configuration` replaces the old one whole and
/// is validated against the skill's type.
#[utoipa::path(method(patch, put), path = "/api/v1/skills/{id}", tag = "skills", params(("id" = Uuid, Path)),
    request_body = UpdateSkill, responses((status = 200, body = Skill), (status = 409, body = cp_types::ErrorEnvelope),
              (status = 422, body = cp_types::ErrorEnvelope)))]
async fn update_skill(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<UpdateSkill>,
) -> ServiceResult<Json<Skill>> {
    let skills = state.store.skills(&auth.org_id);
    // The type never changes, so validating against the stored one cannot race with an update.
    let current = skills.get(id).await.map_err(not_found)?;
    let configuration = req.validate(current.skill_type)?;
    Ok(Json(
        skills
            .update(id, &req, configuration.as_ref())
            .await
            .map_err(not_found)?,
    ))
}

/// Deletes a skill and every association of it.
#[utoipa::path(delete, path = "/api/v1/skills/{id}", tag = "skills", params(("id" = Uuid, Path)),
    responses((status = 200, body = Deleted), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn delete_skill(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Deleted>> {
    state.store.skills(&auth.org_id).delete(id).await.map_err(not_found)?;
    Ok(Json(Deleted::new(id)))
}

/// Every skill type with its configuration keys and defaults.
#[utoipa::path(get, path = "/api/v1/skills/definitions", tag = "skills", params(PageParams),
    responses((status = 200, body = Page<SkillDefinition>)))]
async fn list_definitions(_auth: Auth<Read>, Pagination(page): Pagination) -> Json<Page<SkillDefinition>> {
    Json(page_of(definitions(), page))
}

#[utoipa::path(get, path = "/api/v1/skills/definitions/{type}", tag = "skills", params(("type" = SkillType, Path)),
    responses((status = 200, body = SkillDefinition), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_definition(_auth: Auth<Read>, Path(ty): Path<String>) -> ServiceResult<Json<SkillDefinition>> {
    Ok(Json(definition(skill_type(&ty)?)))
}

/// Validates a raw configuration (the body) against a type; answers 200 either way.
#[utoipa::path(post, path = "/api/v1/skills/definitions/{type}/validate", tag = "skills",
    params(("type" = SkillType, Path)), request_body = Value,
    responses((status = 200, body = SkillValidation), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn validate_definition(
    _auth: Auth<Read>,
    Path(ty): Path<String>,
    JsonBody(config): JsonBody<Value>,
) -> ServiceResult<Json<SkillValidation>> {
    Ok(Json(SkillValidation::of(skill_type(&ty)?, &config)))
}

/// `{type, configuration}` validated; answers 200 either way.
#[utoipa::path(post, path = "/api/v1/skills/validate", tag = "skills", request_body = ValidateSkill,
    responses((status = 200, body = SkillValidation)))]
async fn validate_skill(_auth: Auth<Read>, JsonBody(req): JsonBody<ValidateSkill>) -> Json<SkillValidation> {
    let empty = Value::Object(Default::default());
    Json(SkillValidation::of(
        req.skill_type,
        req.configuration.as_ref().unwrap_or(&empty),
    ))
}

#[utoipa::path(get, path = "/api/v1/skills/types", tag = "skills", params(PageParams),
    responses((status = 200, body = Page<SkillTypeInfo>)))]
async fn list_types(_auth: Auth<Read>, Pagination(page): Pagination) -> Json<Page<SkillTypeInfo>> {
    Json(page_of(type_infos(), page))
}

/// Ready-made skills: create one by posting its `type` and `configuration` to `/skills`.
#[utoipa::path(get, path = "/api/v1/skills/templates", tag = "skills", params(PageParams),
    responses((status = 200, body = Page<SkillTemplate>)))]
async fn list_templates(_auth: Auth<Read>, Pagination(page): Pagination) -> Json<Page<SkillTemplate>> {
    Json(page_of(templates(), page))
}

/// Attaches one skill to an agent, team or environment, optionally overriding configuration keys.
#[utoipa::path(post, path = "/api/v1/skills/associations/{entity_type}/{entity_id}/skills", tag = "skills",
    params(("entity_type" = String, Path, pattern = "^(agent|team|environment)s?$", description = "agents, teams or environments (singular accepted)"),
           ("entity_id" = Uuid, Path)),
    request_body = CreateSkillAssociation,
    responses((status = 201, body = SkillAssociation), (status = 404, body = cp_types::ErrorEnvelope),
              (status = 409, body = cp_types::ErrorEnvelope), (status = 422, body = cp_types::ErrorEnvelope)))]
async fn add_entity_skill(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path((entity_type, entity_id)): Path<(String, Uuid)>,
    JsonBody(req): JsonBody<CreateSkillAssociation>,
) -> ServiceResult<(StatusCode, Json<SkillAssociation>)> {
    let entity = entity_ref(&entity_type, entity_id)?;
    let skills = state.store.skills(&auth.org_id);
    skills.require_entity(entity).await.map_err(entity_not_found(entity))?;
    let skill = skills.get(req.skill_id).await.map_err(not_found)?;
    let configuration_override = match &req.configuration_override {
        Some(o) => Some(validate_override(skill.skill_type, o)?),
        None => None,
    };
    let association = skills
        .associate(entity, skill.id, configuration_override.as_ref())
        .await
        // Only a concurrent delete of the skill or the entity gets here.
        .map_err(|e| ServiceError::from_store(e, &format!("skill or {}", entity.kind)))?;
    Ok((StatusCode::CREATED, Json(association)))
}

/// The skills attached directly to an entity, each with its override applied.
#[utoipa::path(get, path = "/api/v1/skills/associations/{entity_type}/{entity_id}/skills", tag = "skills",
    params(("entity_type" = String, Path, pattern = "^(agent|team|environment)s?$"), ("entity_id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<AssociatedSkill>), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn list_entity_skills(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path((entity_type, entity_id)): Path<(String, Uuid)>,
    Pagination(page): Pagination,
) -> ServiceResult<Json<Page<AssociatedSkill>>> {
    let entity = entity_ref(&entity_type, entity_id)?;
    let listed = state.store.skills(&auth.org_id).list_associated(entity, page).await;
    Ok(Json(listed.map_err(entity_not_found(entity))?))
}

/// Detaches a skill from an entity; answers the skill's id.
#[utoipa::path(delete, path = "/api/v1/skills/associations/{entity_type}/{entity_id}/skills/{skill_id}",
    tag = "skills", params(("entity_type" = String, Path, pattern = "^(agent|team|environment)s?$"), ("entity_id" = Uuid, Path), ("skill_id" = Uuid, Path)),
    responses((status = 200, body = Deleted), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn remove_entity_skill(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path((entity_type, entity_id, skill_id)): Path<(String, Uuid, Uuid)>,
) -> ServiceResult<Json<Deleted>> {
    let entity = entity_ref(&entity_type, entity_id)?;
    let skills = state.store.skills(&auth.org_id);
    skills.require_entity(entity).await.map_err(entity_not_found(entity))?;
    skills
        .dissociate(entity, skill_id)
        .await
        .map_err(|e| ServiceError::from_store(e, "skill association"))?;
    Ok(Json(Deleted::new(skill_id)))
}

/// The enabled skills an agent or team gets after inheritance: environments, then teams, then
/// the entity itself; a later layer overrides an earlier one.
#[utoipa::path(get, path = "/api/v1/skills/associations/{entity_type}/{entity_id}/skills/resolved", tag = "skills",
    params(("entity_type" = String, Path, pattern = "^(agent|team|environment)s?$", description = "agents or teams (environments resolve to their own)"),
           ("entity_id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<ResolvedSkill>), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn resolved_skills(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path((entity_type, entity_id)): Path<(String, Uuid)>,
    Pagination(page): Pagination,
) -> ServiceResult<Json<Page<ResolvedSkill>>> {
    let entity = entity_ref(&entity_type, entity_id)?;
    let resolved = state.store.skills(&auth.org_id).resolved(entity).await;
    Ok(Json(page_of(resolved.map_err(entity_not_found(entity))?, page)))
}

/// The Python client's bulk form: attaches every listed skill not attached yet. Without
/// `entity_type` the id is looked up among agents, teams, environments (and projects, which
/// have no skills: 422).
#[utoipa::path(post, path = "/api/v1/skills/associate", tag = "skills", request_body = AssociateSkills,
    responses((status = 200, body = SkillsAssociated), (status = 404, body = cp_types::ErrorEnvelope),
              (status = 422, body = cp_types::ErrorEnvelope)))]
async fn associate_skills(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(req): JsonBody<AssociateSkills>,
) -> ServiceResult<Json<SkillsAssociated>> {
    if req.skill_ids.len() > MAX_ASSOCIATE {
        return Err(ServiceError::invalid(
            "skill_ids",
            format!("at most {MAX_ASSOCIATE} skills per request"),
        ));
    }
    let skills = state.store.skills(&auth.org_id);
    let kind = match req.entity_type.as_deref() {
        Some(t) if t.trim().trim_end_matches('s').eq_ignore_ascii_case("project") => {
            return Err(ServiceError::invalid("entity_type", "projects have no skills"));
        }
        Some(t) => SkillEntityType::parse_loose(t)
            .ok_or_else(|| ServiceError::invalid("entity_type", "must be one of: agent, team, environment"))?,
        None => match skills.find_entity(req.entity_id).await? {
            Some(FoundEntity::Skillable(kind)) => kind,
            Some(FoundEntity::Project) => {
                return Err(ServiceError::invalid(
                    "entity_id",
                    "names a project; projects have no skills",
                ));
            }
            None => return Err(ServiceError::not_found("entity")),
        },
    };
    let entity = EntityRef {
        kind,
        id: req.entity_id,
    };
    let mut skill_ids = Vec::with_capacity(req.skill_ids.len());
    for id in req.skill_ids {
        if !skill_ids.contains(&id) {
            skill_ids.push(id);
        }
    }
    let associated = match skills
        .associate_missing(entity, &skill_ids)
        .await
        .map_err(entity_not_found(entity))?
    {
        Ok(n) => n,
        Err(MissingSkill(id)) => return Err(ServiceError::not_found(&format!("skill {id}"))),
    };
    Ok(Json(SkillsAssociated {
        entity_type: kind,
        entity_id: req.entity_id,
        skill_ids,
        associated,
    }))
}
