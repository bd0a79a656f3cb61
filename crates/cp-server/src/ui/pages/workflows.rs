//! Workflows: the definitions drawn as graphs, their runs with live step states, approvals.

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use cp_types::ErrorCode;
use cp_types::page::PageRequest;
use cp_types::workflow::{Workflow, WorkflowStep};
use cp_types::workflow_run::{RunFilter, RunStatus, StepRun, StepStatus};
use minijinja::context;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{PageNumber, keep, pager};
use crate::http::{Auth, JsonBody, Path, Query, Read};
use crate::services::error::{ServiceError, ServiceResult};
use crate::state::AppState;
use crate::ui::graph::{self, Direction, Node};
use crate::ui::render;

const OPTIONS: PageRequest = PageRequest { limit: 500, offset: 0 };
const RECENT: PageRequest = PageRequest { limit: 20, offset: 0 };

/// The steps as a graph (`depends_on` are its edges), each marked with its state in `run`.
fn steps_graph(id: &str, steps: &[WorkflowStep], run: Option<&[StepRun]>) -> String {
    let state_of = |step: &str| run.and_then(|r| r.iter().find(|s| s.step_id == step)).map(|s| s.status);
    let nodes: Vec<Node> = steps
        .iter()
        .map(|s| {
            let status = state_of(&s.id);
            Node {
                id: s.id.clone(),
                label: s.name.clone().unwrap_or_else(|| s.id.clone()),
                detail: Some(match status {
                    Some(st) => format!("{} · {}", s.step_type.as_str(), st.as_str()),
                    None => s.step_type.as_str().to_owned(),
                }),
                class: status.map(|st| format!("status-{}", st.as_str())),
            }
        })
        .collect();
    let edges = graph::dependency_edges(steps.iter().map(|s| (s.id.as_str(), s.depends_on.as_slice())));
    graph::draw(id, &nodes, &edges, Direction::LeftRight)
}

/// `/workflows`.
pub async fn workflows(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Query(at): Query<PageNumber>,
) -> ServiceResult<Response> {
    let org = auth.org_id.as_str();
    let workflows = state.store.workflows(org);
    let runs = state.store.workflow_runs(org);
    let (page, recent) = tokio::try_join!(
        async { Ok::<_, ServiceError>(workflows.list(at.request()).await?) },
        async { Ok(runs.list(RunFilter::default(), RECENT).await?) },
    )?;
    let live = recent.items.iter().any(|r| !r.status.is_terminal());
    render::page(
        &auth,
        "workflows.html",
        "workflows",
        context! { title => "Workflows", pager => pager(&page, &at), workflows => page.items, keep => "", runs => recent.items, live },
    )
}

/// `/workflows/{id}`.
pub async fn workflow(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Response> {
    let org = auth.org_id.as_str();
    let workflows = state.store.workflows(org);
    let runs = state.store.workflow_runs(org);
    let queues = state.store.worker_queues(org);
    let filter = RunFilter {
        workflow_id: Some(id),
        ..Default::default()
    };
    let (workflow, runs, queues) = tokio::try_join!(
        async {
            workflows
                .get(id)
                .await
                .map_err(|e| ServiceError::from_store(e, "workflow"))
        },
        async { Ok(runs.list(filter, RECENT).await?) },
        async { Ok(queues.list(None, OPTIONS).await?) },
    )?;
    let graph = steps_graph("wf", &workflow.steps, None);
    let definition = definition_of(&workflow);
    let live = runs.items.iter().any(|r| !r.status.is_terminal());
    render::page(
        &auth,
        "workflow.html",
        "workflows",
        context! {
            title => workflow.name.clone(), graph, definition, workflow, runs => runs.items, live,
            queues => queues.items,
        },
    )
}

/// The editable part of a workflow, as the update endpoint takes it.
fn definition_of(w: &Workflow) -> String {
    let doc = serde_json::json!({
        "name": w.name, "description": w.description, "tags": w.tags, "inputs_schema": w.inputs_schema,
        "steps": w.steps, "default_worker_queue_id": w.default_worker_queue_id,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

#[derive(Debug, Default, Deserialize)]
pub struct RunsQuery {
    #[serde(default, deserialize_with = "super::blank")]
    status: Option<RunStatus>,
    page: Option<u32>,
}

/// `/workflow-runs`.
pub async fn runs(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Query(q): Query<RunsQuery>,
) -> ServiceResult<Response> {
    let at = PageNumber { page: q.page };
    let filter = RunFilter {
        status: q.status,
        ..Default::default()
    };
    let page = state
        .store
        .workflow_runs(&auth.org_id)
        .list(filter, at.request())
        .await?;
    let live = page.items.iter().any(|r| !r.status.is_terminal());
    render::page(
        &auth,
        "workflow_runs.html",
        "workflows",
        context! {
            title => "Workflow runs", pager => pager(&page, &at), runs => page.items, live,
            status => q.status.map(|s| s.as_str()),
            statuses => RunStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            keep => keep(&[("status", q.status.map(|s| s.as_str().to_owned()))]),
        },
    )
}

/// `/workflow-runs/{id}`: the graph with each step's state, redrawn while the run goes on, and
/// the approvals it waits for.
pub async fn run(State(state): State<AppState>, auth: Auth<Read>, Path(id): Path<Uuid>) -> ServiceResult<Response> {
    let org = auth.org_id.as_str();
    let record = state
        .store
        .workflow_runs(org)
        .get(id)
        .await
        .map_err(|e| ServiceError::from_store(e, "workflow run"))?;
    let run = record.run;
    let version = state
        .store
        .workflows(org)
        .version(run.workflow_id, run.workflow_version)
        .await
        .map_err(|e| ServiceError::from_store(e, "workflow version"))?;
    let graph = steps_graph("run", &version.steps, Some(&run.steps));
    let waiting: Vec<&StepRun> = run
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::WaitingForApproval)
        .collect();
    let step_types: std::collections::BTreeMap<&str, &str> = version
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.step_type.as_str()))
        .collect();
    let questions: std::collections::BTreeMap<&str, &str> = version
        .steps
        .iter()
        .filter_map(|s| Some((s.id.as_str(), s.message.as_deref()?)))
        .collect();
    render::page(
        &auth,
        "workflow_run.html",
        "workflows",
        context! {
            title => format!("Run of {}", run.workflow_name), graph, waiting, step_types, questions,
            live => !run.status.is_terminal(), created_by => record.created_by_name, run,
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct DiagramRequest {
    source: String,
}

#[derive(Debug, Serialize)]
pub struct DiagramAnswer {
    svg: String,
}

/// Largest diagram source drawn, in bytes (the data_visualization skill's own ceiling).
const MAX_DIAGRAM_BYTES: usize = 50_000;

/// `POST /ui/diagram`: a Mermaid flowchart, sequence diagram or pie chart as SVG, for the execution page's
/// `diagram` events; 422 for the kinds shown as source.
pub async fn diagram(_auth: Auth<Read>, JsonBody(req): JsonBody<DiagramRequest>) -> ServiceResult<Json<DiagramAnswer>> {
    if req.source.len() > MAX_DIAGRAM_BYTES {
        return Err(ServiceError::invalid(
            "source",
            format!("at most {MAX_DIAGRAM_BYTES} bytes"),
        ));
    }
    let id = Uuid::now_v7().simple().to_string();
    graph::mermaid(&req.source, &id[id.len() - 8..])
        .map(|svg| Json(DiagramAnswer { svg }))
        .ok_or_else(|| {
            ServiceError::new(
                ErrorCode::ValidationError,
                "only flowcharts, sequence diagrams and pie charts are drawn",
            )
        })
}
