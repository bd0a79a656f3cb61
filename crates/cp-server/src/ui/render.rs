//! The dashboard's templates: minijinja, compiled once from sources embedded in the binary,
//! HTML-escaped by default, rendered with the caller and the navigation around each page.

use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use cp_types::org::Role;
use minijinja::{Environment, Value, context};
use serde::Serialize;

use crate::services::caller::Caller;
use crate::services::error::ServiceError;

/// Every template, by name.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("macros.html", include_str!("templates/macros.html")),
    ("error.html", include_str!("templates/error.html")),
    ("sign_in.html", include_str!("templates/sign_in.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("usage.html", include_str!("templates/usage.html")),
    ("agents.html", include_str!("templates/agents.html")),
    ("agent.html", include_str!("templates/agent.html")),
    ("teams.html", include_str!("templates/teams.html")),
    ("team.html", include_str!("templates/team.html")),
    ("runs_table.html", include_str!("templates/runs_table.html")),
    ("executions.html", include_str!("templates/executions.html")),
    ("execution.html", include_str!("templates/execution.html")),
    (
        "runs_of_workflows.html",
        include_str!("templates/runs_of_workflows.html"),
    ),
    ("workflows.html", include_str!("templates/workflows.html")),
    ("workflow.html", include_str!("templates/workflow.html")),
    ("workflow_runs.html", include_str!("templates/workflow_runs.html")),
    ("workflow_run.html", include_str!("templates/workflow_run.html")),
    ("environments.html", include_str!("templates/environments.html")),
    ("jobs.html", include_str!("templates/jobs.html")),
    ("job.html", include_str!("templates/job.html")),
    ("plans.html", include_str!("templates/plans.html")),
    ("plan.html", include_str!("templates/plan.html")),
    ("policies.html", include_str!("templates/policies.html")),
    ("policy.html", include_str!("templates/policy.html")),
    ("webhooks.html", include_str!("templates/webhooks.html")),
    ("webhook.html", include_str!("templates/webhook.html")),
    ("api_keys.html", include_str!("templates/api_keys.html")),
    ("secrets.html", include_str!("templates/secrets.html")),
    ("skills.html", include_str!("templates/skills.html")),
];

/// The navigation: id, label, address, and whether only admins are offered it.
const NAV: &[(&str, &str, &str, bool)] = &[
    ("overview", "Overview", "/", false),
    ("agents", "Agents", "/agents", false),
    ("teams", "Teams", "/teams", false),
    ("executions", "Executions", "/executions", false),
    ("workflows", "Workflows", "/workflows", false),
    ("jobs", "Jobs", "/jobs", false),
    ("plans", "Plans", "/plans", false),
    ("usage", "Usage", "/usage", false),
    ("environments", "Environments", "/environments", false),
    ("skills", "Skills", "/skills", false),
    ("policies", "Policies", "/policies", false),
    ("webhooks", "Webhooks", "/webhooks", false),
    ("secrets", "Secrets", "/secrets", false),
    ("api-keys", "API keys", "/api-keys", true),
];

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in TEMPLATES {
        if let Err(e) = env.add_template(name, source) {
            panic!("template {name} does not compile: {e}");
        }
    }
    env.add_filter("dt", datetime);
    env.add_filter("ms", duration);
    env.add_filter("usd", usd);
    env.add_filter("short", short_id);
    env.add_filter("pretty", pretty_json);
    env.add_filter("json", compact_json);
    env.add_filter("truncate", truncate);
    env
});

/// `2026-12-05T16:55:29.123456Z` as `2026-12-05 16:55:29`.
fn datetime(value: Value) -> String {
    match value.as_str() {
        Some(s) if s.len() >= 19 => format!("{} {}", &s[..10], &s[11..19]),
        Some(s) => s.to_owned(),
        None if value.is_none() || value.is_undefined() => "—".to_owned(),
        None => value.to_string(),
    }
}

/// The first `chars` characters of `text`, with an ellipsis when cut.
fn truncate(text: Value, chars: Option<usize>) -> String {
    let text = text.as_str().map(str::to_owned).unwrap_or_else(|| text.to_string());
    let chars = chars.unwrap_or(80);
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// Milliseconds as `340 ms`, `2.4 s` or `3 min 5 s`.
fn duration(value: Value) -> String {
    let Ok(ms) = f64::try_from(value) else {
        return "—".to_owned();
    };
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        let s = (ms / 1000.0).round() as u64;
        format!("{} min {} s", s / 60, s % 60)
    }
}

fn usd(value: Value) -> String {
    let Ok(v) = f64::try_from(value) else {
        return "—".to_owned();
    };
    if v == 0.0 {
        "$0".to_owned()
    } else if v < 0.01 {
        format!("${v:.4}")
    } else {
        format!("${v:.2}")
    }
}

/// The first block of a UUID, for tables; the full id stays in the link and its title.
fn short_id(value: Value) -> String {
    let s = value.to_string();
    s.split('-').next().unwrap_or(&s).to_owned()
}

fn compact_json(value: Value) -> String {
    serde_json::to_string(&value).unwrap_or_default()
}

fn pretty_json(value: Value) -> String {
    serde_json::to_value(&value)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_default()
}

/// What the layout shows of the caller, and what the role may do.
#[derive(Serialize)]
struct Me<'a> {
    org_name: &'a str,
    key_name: &'a str,
    role: Role,
    can_write: bool,
    is_admin: bool,
}

#[derive(Serialize)]
struct NavLink {
    id: &'static str,
    label: &'static str,
    href: &'static str,
}

/// A page for `caller`: the template `name` with `nav` marked current, given `page`'s values.
pub fn page(caller: &Caller, name: &str, nav: &str, page: Value) -> Result<Response, ServiceError> {
    let is_admin = caller.role == Role::Admin;
    let nav_links: Vec<NavLink> = NAV
        .iter()
        .filter(|(_, _, _, admin_only)| is_admin || !admin_only)
        .map(|&(id, label, href, _)| NavLink { id, label, href })
        .collect();
    let me = Me {
        org_name: &caller.org_name,
        key_name: &caller.key_name,
        role: caller.role,
        can_write: matches!(caller.role, Role::Admin | Role::Member),
        is_admin,
    };
    let ctx = context! { me, nav, nav_links, asset_version => super::assets::VERSION.as_str(), ..page };
    html(name, ctx)
}

/// A template outside the layout's caller (sign-in, errors).
pub fn html(name: &str, ctx: Value) -> Result<Response, ServiceError> {
    let body = ENV.get_template(name).and_then(|t| t.render(ctx)).map_err(|e| {
        tracing::error!(template = name, error = %e, "a dashboard page did not render");
        ServiceError::internal()
    })?;
    let mut resp = Html(body).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        for (name, _) in TEMPLATES {
            ENV.get_template(name).unwrap();
        }
    }

    #[test]
    fn values_read_as_people_read_them() {
        assert_eq!(
            datetime(Value::from("2026-12-05T16:55:29.123456Z")),
            "2026-12-05 16:55:29"
        );
        assert_eq!(duration(Value::from(340.2)), "340 ms");
        assert_eq!(duration(Value::from(2400)), "2.4 s");
        assert_eq!(duration(Value::from(185_000)), "3 min 5 s");
        assert_eq!(usd(Value::from(0.00123)), "$0.0012");
        assert_eq!(usd(Value::from(12.5)), "$12.50");
        assert_eq!(truncate(Value::from("héllo world"), Some(5)), "héllo…");
        assert_eq!(truncate(Value::from("short"), Some(5)), "short");
        assert_eq!(
            short_id(Value::from("0193a1b2-0000-7000-8000-000000000000")),
            "0193a1b2"
        );
    }
}
