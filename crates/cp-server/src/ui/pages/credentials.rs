//! API keys (admins only) and secrets (names only: values never reach a page), and skills.

use axum::extract::State;
use axum::response::Response;
use cp_store::skills::SkillFilter;
use cp_types::page::PageRequest;
use cp_types::skill::SkillType;
use minijinja::context;

use crate::http::{Admin, Auth, Read};
use crate::services::error::{ServiceError, ServiceResult};
use crate::state::AppState;
use crate::ui::render;

const ALL: PageRequest = PageRequest { limit: 500, offset: 0 };

/// `/api-keys`.
pub async fn api_keys(State(state): State<AppState>, auth: Auth<Admin>) -> ServiceResult<Response> {
    let keys = state.store.keys(&auth.org_id).list(ALL).await?;
    render::page(
        &auth,
        "api_keys.html",
        "api-keys",
        context! { title => "API keys", keys => keys.items, current => auth.key_id, roles => ["admin", "member", "viewer", "worker"] },
    )
}

/// `/secrets`: names, descriptions and versions.
pub async fn secrets(State(state): State<AppState>, auth: Auth<Read>) -> ServiceResult<Response> {
    let secrets = state.store.secrets(&auth.org_id).list(ALL).await?;
    render::page(
        &auth,
        "secrets.html",
        "secrets",
        context! { title => "Secrets", secrets => secrets.items },
    )
}

/// `/skills`.
pub async fn skills(State(state): State<AppState>, auth: Auth<Read>) -> ServiceResult<Response> {
    let skills = state
        .store
        .skills(&auth.org_id)
        .list(SkillFilter::default(), ALL)
        .await
        .map_err(ServiceError::from)?;
    let types: Vec<&str> = SkillType::ALL.iter().map(|t| t.as_str()).collect();
    render::page(
        &auth,
        "skills.html",
        "skills",
        context! { title => "Skills", skills => skills.items, types },
    )
}
