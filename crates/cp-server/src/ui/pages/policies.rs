//! Policies: the Rego editor (compile errors inline, a test input) and the decision log.

use axum::extract::State;
use axum::response::Response;
use cp_types::page::PageRequest;
use cp_types::policy::DecisionFilter;
use minijinja::context;
use serde::Deserialize;
use uuid::Uuid;

use super::{PageNumber, keep, pager};
use crate::http::{Auth, Path, Query, Read};
use crate::services::error::{ServiceError, ServiceResult};
use crate::state::AppState;
use crate::ui::render;

#[derive(Debug, Default, Deserialize)]
pub struct PoliciesQuery {
    /// `true`: only denials in the decision log (the checkbox's value).
    denied: Option<String>,
    page: Option<u32>,
}

/// `/policies`: the policies and the decision log.
pub async fn policies(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Query(q): Query<PoliciesQuery>,
) -> ServiceResult<Response> {
    let at = PageNumber { page: q.page };
    let org = auth.org_id.as_str();
    let denied = q.denied.as_deref() == Some("true");
    let filter = DecisionFilter {
        allowed: denied.then_some(false),
        ..Default::default()
    };
    let policies = state.store.policies(org);
    let (policies, decisions, mode) = tokio::try_join!(
        async { Ok::<_, ServiceError>(policies.list(None, PageRequest { limit: 500, offset: 0 }).await?) },
        async { Ok(state.store.policy_decisions(org, &filter, at.request()).await?) },
        async { Ok(state.store.policy_state(org).await?) },
    )?;
    render::page(
        &auth,
        "policies.html",
        "policies",
        context! {
            title => "Policies", policies => policies.items, pager => pager(&decisions, &at), decisions => decisions.items,
            denied, mode => mode.0,
            keep => keep(&[("denied", denied.then(|| "true".to_owned()))]),
        },
    )
}

/// `/policies/{id}`: the editor.
pub async fn policy(State(state): State<AppState>, auth: Auth<Read>, Path(id): Path<Uuid>) -> ServiceResult<Response> {
    let policy = state
        .store
        .policies(&auth.org_id)
        .get(id)
        .await
        .map_err(|e| ServiceError::from_store(e, "policy"))?;
    render::page(
        &auth,
        "policy.html",
        "policies",
        context! { title => policy.name.clone(), org_id => auth.org_id.clone(), policy },
    )
}
