//! One module per area of the dashboard. Handlers read through the store as the API's do and
//! render a template; the pages only read, changes go through `/api/v1`.

mod agents;
mod credentials;
mod environments;
mod executions;
mod jobs;
mod overview;
mod plans;
mod policies;
mod webhooks;
mod workflows;

use axum::Router;
use axum::routing::get;
use cp_types::Page;
use cp_types::page::PageRequest;
use serde::de::value::StringDeserializer;
use serde::{Deserialize, Deserializer, Serialize};

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(overview::overview))
        .route("/usage", get(overview::usage))
        .route("/agents", get(agents::agents))
        .route("/agents/{id}", get(agents::agent))
        .route("/teams", get(agents::teams))
        .route("/teams/{id}", get(agents::team))
        .route("/executions", get(executions::executions))
        .route("/executions/{id}", get(executions::execution))
        .route("/workflows", get(workflows::workflows))
        .route("/workflows/{id}", get(workflows::workflow))
        .route("/workflow-runs", get(workflows::runs))
        .route("/workflow-runs/{id}", get(workflows::run))
        .route("/jobs", get(jobs::jobs))
        .route("/jobs/{id}", get(jobs::job))
        .route("/plans", get(plans::plans))
        .route("/plans/{id}", get(plans::plan))
        .route("/environments", get(environments::environments))
        .route("/policies", get(policies::policies))
        .route("/policies/{id}", get(policies::policy))
        .route("/webhooks", get(webhooks::webhooks))
        .route("/webhooks/{id}", get(webhooks::webhook))
        .route("/api-keys", get(credentials::api_keys))
        .route("/secrets", get(credentials::secrets))
        .route("/skills", get(credentials::skills))
}

/// What the pages' script asks of the server besides `/api/v1`: JSON in, JSON (errors in
/// the envelope) out.
pub fn script_routes() -> Router<AppState> {
    Router::new().route("/ui/diagram", axum::routing::post(workflows::diagram))
}

/// Rows per page of the dashboard's tables.
const PER_PAGE: i64 = 50;

/// `?page=N` (from 1).
#[derive(Debug, Default, Deserialize)]
pub struct PageNumber {
    page: Option<u32>,
}

impl PageNumber {
    fn number(&self) -> i64 {
        i64::from(self.page.unwrap_or(1).clamp(1, 100_000))
    }

    fn request(&self) -> PageRequest {
        PageRequest {
            limit: PER_PAGE,
            offset: (self.number() - 1) * PER_PAGE,
        }
    }
}

/// Where a table is in its rows, for its previous and next links.
#[derive(Serialize)]
struct Pager {
    page: i64,
    pages: i64,
    total: i64,
    prev: Option<i64>,
    next: Option<i64>,
}

fn pager<T>(page: &Page<T>, at: &PageNumber) -> Pager {
    let pages = ((page.total + PER_PAGE - 1) / PER_PAGE).max(1);
    let n = at.number();
    Pager {
        page: n,
        pages,
        total: page.total,
        prev: (n > 1).then_some(n - 1),
        next: (n < pages).then_some(n + 1),
    }
}

/// A query string of the filters that are set, for links that keep them (`status=failed&`).
fn keep(filters: &[(&str, Option<String>)]) -> String {
    filters
        .iter()
        .filter_map(|(k, v)| {
            v.as_ref()
                .filter(|v| !v.is_empty())
                .map(|v| format!("{k}={}&", super::urlencoding(v)))
        })
        .collect()
}

/// A filter of a GET form: an empty field (the "any" option) is no filter.
fn blank<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    match Option::<String>::deserialize(d)? {
        Some(v) if !v.trim().is_empty() => T::deserialize(StringDeserializer::<D::Error>::new(v)).map(Some),
        _ => Ok(None),
    }
}
