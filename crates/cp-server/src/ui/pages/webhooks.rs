//! Outbound webhooks and their deliveries.

use axum::extract::State;
use axum::response::Response;
use cp_types::page::PageRequest;
use minijinja::context;
use uuid::Uuid;

use crate::http::{Auth, Path, Read};
use crate::services::error::{ServiceError, ServiceResult};
use crate::state::AppState;
use crate::ui::render;

/// `/webhooks`, with the endpoints failing in the last 24 hours.
pub async fn webhooks(State(state): State<AppState>, auth: Auth<Read>) -> ServiceResult<Response> {
    let org = auth.org_id.as_str();
    let day_ago = cp_types::now() - chrono::Duration::hours(24);
    let hooks = state.store.webhooks(org);
    let analytics = state.store.analytics(org);
    let (hooks, failing) = tokio::try_join!(
        async { Ok::<_, ServiceError>(hooks.list(PageRequest { limit: 500, offset: 0 }).await?) },
        async { Ok(analytics.failing_webhooks(day_ago, 500).await?) },
    )?;
    render::page(
        &auth,
        "webhooks.html",
        "webhooks",
        context! { title => "Webhooks", webhooks => hooks.items, failing },
    )
}

/// `/webhooks/{id}`: its latest deliveries, each redeliverable.
pub async fn webhook(State(state): State<AppState>, auth: Auth<Read>, Path(id): Path<Uuid>) -> ServiceResult<Response> {
    let hooks = state.store.webhooks(&auth.org_id);
    let (hook, deliveries) = tokio::try_join!(
        async { hooks.get(id).await.map_err(|e| ServiceError::from_store(e, "webhook")) },
        async { Ok(hooks.deliveries(id, PageRequest { limit: 50, offset: 0 }).await?) },
    )?;
    render::page(
        &auth,
        "webhook.html",
        "webhooks",
        context! { title => hook.url.clone(), webhook => hook, deliveries => deliveries.items },
    )
}
