//! Scheduled, webhook and manual jobs with their firings.

use axum::extract::State;
use axum::response::Response;
use cp_types::page::PageRequest;
use minijinja::context;
use uuid::Uuid;

use super::{PageNumber, pager};
use crate::http::{Auth, Path, Query, Read};
use crate::services::error::{ServiceError, ServiceResult};
use crate::state::AppState;
use crate::ui::render;

/// `/jobs`.
pub async fn jobs(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Query(at): Query<PageNumber>,
) -> ServiceResult<Response> {
    let page = state.store.jobs(&auth.org_id).list(None, None, at.request()).await?;
    let jobs: Vec<_> = page.items.iter().map(|r| &r.job).collect();
    render::page(
        &auth,
        "jobs.html",
        "jobs",
        context! { title => "Jobs", pager => pager(&page, &at), jobs, keep => "" },
    )
}

/// `/jobs/{id}`: the job and its latest firings.
pub async fn job(State(state): State<AppState>, auth: Auth<Read>, Path(id): Path<Uuid>) -> ServiceResult<Response> {
    let jobs = state.store.jobs(&auth.org_id);
    let (record, firings) = tokio::try_join!(
        async { jobs.get(id).await.map_err(|e| ServiceError::from_store(e, "job")) },
        async { Ok(jobs.firings(id, PageRequest { limit: 50, offset: 0 }).await?) },
    )?;
    render::page(
        &auth,
        "job.html",
        "jobs",
        context! { title => record.job.spec.name.clone(), job => record.job, created_by => record.created_by_name, firings => firings.items },
    )
}
