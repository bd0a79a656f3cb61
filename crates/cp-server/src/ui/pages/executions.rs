//! Executions: the filtered list, and one run as a live conversation.

use axum::extract::State;
use axum::response::Response;
use cp_store::executions::ExecutionFilter;
use cp_types::execution::{ExecutionStatus, ExecutionType};
use minijinja::context;
use serde::Deserialize;
use uuid::Uuid;

use super::{PageNumber, keep, pager};
use crate::http::{Auth, Path, Query, Read};
use crate::services::error::{ServiceError, ServiceResult};
use crate::state::AppState;
use crate::ui::render;

#[derive(Debug, Default, Deserialize)]
pub struct ExecutionsQuery {
    #[serde(default, deserialize_with = "super::blank")]
    status: Option<ExecutionStatus>,
    #[serde(default, deserialize_with = "super::blank")]
    execution_type: Option<ExecutionType>,
    #[serde(default, deserialize_with = "super::blank")]
    entity_id: Option<Uuid>,
    #[serde(default, deserialize_with = "super::blank")]
    worker_queue_id: Option<Uuid>,
    page: Option<u32>,
}

/// `/executions`.
pub async fn executions(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Query(q): Query<ExecutionsQuery>,
) -> ServiceResult<Response> {
    let at = PageNumber { page: q.page };
    let filter = ExecutionFilter {
        status: q.status,
        execution_type: q.execution_type,
        entity_id: q.entity_id,
        worker_queue_id: q.worker_queue_id,
        since: None,
    };
    let page = state.store.executions(&auth.org_id).list(filter, at.request()).await?;
    let live = page.items.iter().any(|e| !e.status.is_terminal());
    render::page(
        &auth,
        "executions.html",
        "executions",
        context! {
            title => "Executions", pager => pager(&page, &at), executions => page.items, live,
            status => q.status.map(|s| s.as_str()), execution_type => q.execution_type.map(|s| s.as_str()),
            entity_id => q.entity_id, worker_queue_id => q.worker_queue_id,
            statuses => ExecutionStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            types => ExecutionType::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            keep => keep(&[
                ("status", q.status.map(|s| s.as_str().to_owned())),
                ("execution_type", q.execution_type.map(|s| s.as_str().to_owned())),
                ("entity_id", q.entity_id.map(|id| id.to_string())),
                ("worker_queue_id", q.worker_queue_id.map(|id| id.to_string())),
            ]),
        },
    )
}

/// `/executions/{id}`: the run's facts; its conversation is drawn by the script from the
/// execution's event stream, stored events first, then live ones.
pub async fn execution(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Response> {
    let execution = state
        .store
        .executions(&auth.org_id)
        .get(id)
        .await
        .map_err(|e| ServiceError::from_store(e, "execution"))?;
    let duration_ms = match (execution.started_at, execution.completed_at) {
        (Some(s), Some(c)) => Some((c - s).num_milliseconds()),
        _ => None,
    };
    let entity_href = match execution.execution_type {
        ExecutionType::Agent => Some(format!("/agents/{}", execution.entity_id)),
        ExecutionType::Team => Some(format!("/teams/{}", execution.entity_id)),
        ExecutionType::WorkflowStep => None,
    };
    render::page(
        &auth,
        "execution.html",
        "executions",
        context! {
            title => format!("Execution {}", execution.entity_name.as_deref().unwrap_or("")),
            terminal => execution.status.is_terminal(),
            duration_ms, entity_href, execution,
        },
    )
}
