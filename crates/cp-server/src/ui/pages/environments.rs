//! Environments with their worker queues and workers, live.

use axum::extract::State;
use axum::response::Response;
use cp_store::environments::EnvironmentFilter;
use cp_store::workers::WorkerFilter;
use cp_types::page::PageRequest;
use minijinja::context;

use crate::http::{Auth, Read};
use crate::services::error::{ServiceError, ServiceResult};
use crate::state::AppState;
use crate::ui::render;

const ALL: PageRequest = PageRequest { limit: 500, offset: 0 };

/// `/environments`: each environment, its queues (workers, queued and running runs) and the
/// workers seen lately, redrawn every 5 s.
pub async fn environments(State(state): State<AppState>, auth: Auth<Read>) -> ServiceResult<Response> {
    let org = auth.org_id.as_str();
    let envs = state.store.environments(org);
    let queues = state.store.worker_queues(org);
    let workers = state.store.workers(org);
    let all_workers = WorkerFilter {
        worker_queue_id: None,
        online_only: false,
    };
    let (envs, queues, workers) = tokio::try_join!(
        async { Ok::<_, ServiceError>(envs.list(EnvironmentFilter::default(), ALL).await?) },
        async { Ok(queues.list(None, ALL).await?) },
        async { Ok(workers.list(all_workers, PageRequest { limit: 200, offset: 0 }).await?) },
    )?;
    render::page(
        &auth,
        "environments.html",
        "environments",
        context! { title => "Environments", environments => envs.items, queues => queues.items, workers => workers.items, workers_total => workers.total },
    )
}
