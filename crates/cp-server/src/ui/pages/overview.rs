//! The overview (what is running, what is failing) and the usage report as charts.

use axum::extract::State;
use axum::response::Response;
use chrono::Duration;
use cp_store::workers::WorkerFilter;
use cp_types::analytics::{UsageGroup, UsageItem};
use cp_types::page::PageRequest;
use cp_types::policy::DecisionFilter;
use minijinja::context;
use serde::{Deserialize, Serialize};

use crate::http::{Auth, Query, Read};
use crate::services::error::{ServiceError, ServiceResult};
use crate::state::AppState;
use crate::ui::render;

/// One bar of a chart: its label, the figure shown beside it and its length in percent of
/// the longest.
#[derive(Serialize)]
struct Bar {
    label: String,
    href: Option<String>,
    figure: String,
    pct: f64,
    /// The failing share of the bar, in percent of the longest.
    failed_pct: f64,
}

fn bars(
    items: &[UsageItem],
    value: impl Fn(&UsageItem) -> f64,
    figure: impl Fn(&UsageItem) -> String,
    href: impl Fn(&UsageItem) -> Option<String>,
) -> Vec<Bar> {
    let top = items.iter().map(&value).fold(0.0_f64, f64::max);
    items
        .iter()
        .map(|i| {
            let share = |v: f64| {
                if top > 0.0 {
                    (v / top * 1000.0).round() / 10.0
                } else {
                    0.0
                }
            };
            let failed = if i.runs > 0 {
                value(i) * i.failures as f64 / i.runs as f64
            } else {
                0.0
            };
            Bar {
                label: i.name.clone(),
                href: href(i),
                figure: figure(i),
                pct: share(value(i)),
                failed_pct: share(failed),
            }
        })
        .collect()
}

fn cost(i: &UsageItem) -> String {
    if i.cost_usd < 0.01 && i.cost_usd > 0.0 {
        format!("${:.4}", i.cost_usd)
    } else {
        format!("${:.2}", i.cost_usd)
    }
}

fn link(group: UsageGroup) -> impl Fn(&UsageItem) -> Option<String> {
    move |i| match group {
        UsageGroup::Agent => Some(format!("/agents/{}", i.key)),
        UsageGroup::Team => Some(format!("/teams/{}", i.key)),
        UsageGroup::Model | UsageGroup::Day => None,
    }
}

/// `/`: runs by state in the last 24 hours, online workers, failing webhooks, recent policy
/// denials, and the week's runs and cost.
pub async fn overview(State(state): State<AppState>, auth: Auth<Read>) -> ServiceResult<Response> {
    let now = cp_types::now();
    let day_ago = now - Duration::hours(24);
    let analytics = state.store.analytics(&auth.org_id);
    let workers = state.store.workers(&auth.org_id);
    let denied = DecisionFilter {
        allowed: Some(false),
        ..Default::default()
    };
    let few = PageRequest { limit: 8, offset: 0 };
    let usage = &state.usage;
    let (by_status, online, webhooks, denials, days, agents) = tokio::try_join!(
        async { Ok::<_, ServiceError>(analytics.runs_by_status(day_ago).await?) },
        async {
            let all = WorkerFilter {
                worker_queue_id: None,
                online_only: true,
            };
            Ok(workers.list(all, PageRequest { limit: 20, offset: 0 }).await?)
        },
        async { Ok(analytics.failing_webhooks(day_ago, 8).await?) },
        async { Ok(state.store.policy_decisions(&auth.org_id, &denied, few).await?) },
        usage.last_days(&state.store, &auth.org_id, UsageGroup::Day, 7),
        usage.last_days(&state.store, &auth.org_id, UsageGroup::Agent, 7),
    )?;
    let runs_24h: i64 = by_status.iter().map(|(_, n)| n).sum();
    let status_counts: Vec<_> = by_status
        .iter()
        .map(|(status, n)| context! { status, count => n })
        .collect();
    let day_bars = bars(
        &days,
        |i| i.runs as f64,
        |i| format!("{} runs, {}", i.runs, cost(i)),
        |_| None,
    );
    let mut by_cost = agents.to_vec();
    by_cost.sort_by(|a, b| b.cost_usd.total_cmp(&a.cost_usd));
    by_cost.truncate(8);
    let agent_bars = bars(&by_cost, |i| i.cost_usd, cost, link(UsageGroup::Agent));
    render::page(
        &auth,
        "overview.html",
        "overview",
        context! {
            title => "Overview",
            runs_24h, status_counts,
            online_workers => online.items, online_total => online.total,
            webhooks, denials => denials.items,
            day_bars, agent_bars,
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct UsageQuery {
    #[serde(default, deserialize_with = "super::blank")]
    group_by: Option<UsageGroup>,
    days: Option<u16>,
}

/// `/usage`: the usage report by agent, team, model or day, as a table and charts.
pub async fn usage(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Query(q): Query<UsageQuery>,
) -> ServiceResult<Response> {
    let group = q.group_by.unwrap_or(UsageGroup::Agent);
    let days = i64::from(q.days.unwrap_or(7).clamp(1, 366));
    let items = state.usage.last_days(&state.store, &auth.org_id, group, days).await?;
    let run_bars = bars(
        &items,
        |i| i.runs as f64,
        |i| format!("{} runs, {} failed", i.runs, i.failures),
        link(group),
    );
    let cost_bars = bars(&items, |i| i.cost_usd, cost, link(group));
    let groups: Vec<&str> = UsageGroup::ALL.iter().map(|g| g.as_str()).collect();
    render::page(
        &auth,
        "usage.html",
        "usage",
        context! {
            title => "Usage", group => group.as_str(), groups, days, items, run_bars, cost_bars,
            total_cost => items.iter().map(|i| i.cost_usd).sum::<f64>(),
            total_runs => items.iter().map(|i| i.runs).sum::<i64>(),
        },
    )
}
