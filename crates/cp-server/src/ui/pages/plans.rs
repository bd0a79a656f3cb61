//! Task plans: ask the planner, review the plan as a graph, execute it as a workflow.

use axum::extract::State;
use axum::response::Response;
use cp_types::page::PageRequest;
use minijinja::context;
use uuid::Uuid;

use super::{PageNumber, pager};
use crate::http::{Auth, Path, Query, Read};
use crate::services::error::{ServiceError, ServiceResult};
use crate::state::AppState;
use crate::ui::graph::{self, Direction, Node};
use crate::ui::render;

/// `/plans`.
pub async fn plans(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Query(at): Query<PageNumber>,
) -> ServiceResult<Response> {
    let page = state.store.task_plans(&auth.org_id).list(at.request()).await?;
    render::page(
        &auth,
        "plans.html",
        "plans",
        context! { title => "Plans", pager => pager(&page, &at), plans => page.items, keep => "" },
    )
}

/// `/plans/{id}`.
pub async fn plan(State(state): State<AppState>, auth: Auth<Read>, Path(id): Path<Uuid>) -> ServiceResult<Response> {
    let org = auth.org_id.as_str();
    let plans = state.store.task_plans(org);
    let queues = state.store.worker_queues(org);
    let (stored, queues) = tokio::try_join!(
        async { plans.get(id).await.map_err(|e| ServiceError::from_store(e, "plan")) },
        async { Ok(queues.list(None, PageRequest { limit: 500, offset: 0 }).await?) },
    )?;
    let steps = &stored.plan.steps;
    let nodes: Vec<Node> = steps
        .iter()
        .map(|s| Node {
            id: s.id.clone(),
            label: s.title.clone(),
            detail: s.entity_name.clone(),
            class: None,
        })
        .collect();
    let edges = graph::dependency_edges(steps.iter().map(|s| (s.id.as_str(), s.depends_on.as_slice())));
    let graph = graph::draw("plan", &nodes, &edges, Direction::LeftRight);
    render::page(
        &auth,
        "plan.html",
        "plans",
        context! { title => stored.title.clone(), graph, stored, queues => queues.items },
    )
}
