//! `/api/v1/analytics`: usage and cost of the organization's executions.

use axum::Json;
use axum::extract::State;
use chrono::Duration;
use cp_types::Timestamp;
use cp_types::analytics::{UsageGroup, UsageReport};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::{Auth, Query, Read};
use crate::services::error::{ServiceError, ServiceResult};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(usage))
}

/// The window a report covers when `since` is not given, and the longest it may cover.
const DEFAULT_WINDOW_DAYS: i64 = 7;
const MAX_WINDOW_DAYS: i64 = 366;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct UsageQuery {
    /// One row per agent, team, model or UTC day.
    group_by: UsageGroup,
    /// Executions created at or after this instant (RFC 3339); 7 days before `until` if absent.
    /// The window is at most 366 days.
    #[param(value_type = Option<String>)]
    since: Option<Timestamp>,
    /// Executions created before this instant (RFC 3339); now if absent.
    #[param(value_type = Option<String>)]
    until: Option<Timestamp>,
}

/// Runs, failures, tokens, cost and duration percentiles of the executions created in the
/// window, grouped by agent, team, model or day. Workflow steps count for the agent or team
/// they ran.
#[utoipa::path(get, path = "/api/v1/analytics/usage", tag = "analytics", params(UsageQuery),
    responses((status = 200, body = UsageReport), (status = 422, body = cp_types::ErrorEnvelope)))]
async fn usage(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Query(q): Query<UsageQuery>,
) -> ServiceResult<Json<UsageReport>> {
    let until = q.until.unwrap_or_else(cp_types::now);
    let since = q.since.unwrap_or(until - Duration::days(DEFAULT_WINDOW_DAYS));
    if since >= until {
        return Err(ServiceError::invalid("since", "must be before `until`"));
    }
    if until - since > Duration::days(MAX_WINDOW_DAYS) {
        return Err(ServiceError::invalid(
            "since",
            format!("the window is at most {MAX_WINDOW_DAYS} days"),
        ));
    }
    let items = state
        .store
        .analytics(&auth.org_id)
        .usage(q.group_by, since, until)
        .await?;
    Ok(Json(UsageReport {
        group_by: q.group_by,
        since,
        until,
        items,
    }))
}
