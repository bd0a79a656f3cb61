//! Workflows (API §7): definitions of steps and their dependencies, kept in versions.
//!
//! This module checks what a definition says on its own (ids, dependencies, cycles, the
//! fields each step type needs); its templates and the entities it names are checked by the
//! server, which has the template engine and the database.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::common::nullable;
use crate::org::Role;
use crate::validate::Issues;
use crate::{FieldIssue, wire_enum};

/// Most steps a workflow may have.
pub const MAX_STEPS: usize = 200;
/// Most parallel items one `for_each` step may run at once.
pub const MAX_PARALLEL: i64 = 100;

wire_enum! {
    StepType {
        Agent = "agent", Team = "team", Command = "command", Http = "http", Approval = "approval",
        Sleep = "sleep"
    }
}

wire_enum! {
    /// What an approval step becomes when nobody decided within its `timeout_seconds`.
    ApprovalTimeout { Approve = "approve", Reject = "reject" }
}

impl StepType {
    /// Whether the step is an execution on a worker queue (and so needs a queue).
    pub fn runs_on_worker(self) -> bool {
        matches!(
            self,
            StepType::Agent | StepType::Team | StepType::Command | StepType::Http
        )
    }
}

/// How a failed step is tried again.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct StepRetry {
    /// Tries in all, the first included (1–20).
    #[serde(default = "one")]
    pub max_attempts: i64,
    /// Pause before the second try (0–86,400 s).
    #[serde(default)]
    pub backoff_seconds: f64,
    /// Each further pause is this many times the previous one (1–10).
    #[serde(default = "two")]
    pub backoff_factor: f64,
}

fn one() -> i64 {
    1
}

fn two() -> f64 {
    2.0
}

/// One step. Which fields apply depends on `type`; templates (minijinja) may use `inputs`,
/// `steps.<ancestor>.{output, status, error, execution_id}`, `run.{id, started_at}`, and
/// `item`/`index` in a `for_each` step.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct WorkflowStep {
    /// Unique in the workflow: a letter or `_`, then letters, digits and `_` (at most 64).
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub step_type: StepType,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// A template expression; false skips the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<StepRetry>,
    /// The step fails (its execution is cancelled) after this long; for an approval, the
    /// decision `on_timeout` is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    #[serde(default)]
    pub continue_on_failure: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_queue_id: Option<Uuid>,
    // agent, team
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    // command
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    // http
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    // approval
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Roles that may decide (default: admin and member).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<ApprovalTimeout>,
    // sleep
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<i64>,
    /// RFC 3339, or a template that renders to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    // fan-out
    /// A JSON list, or a template that renders to one: the step runs once per item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub for_each: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<i64>,
}

impl WorkflowStep {
    /// Every template of the step with the field it sits in.
    pub fn templates(&self) -> Vec<(&'static str, &str)> {
        let mut t: Vec<(&'static str, &str)> = [
            ("prompt", self.prompt.as_deref()),
            ("command", self.command.as_deref()),
            ("url", self.url.as_deref()),
            ("body", self.body.as_deref()),
            ("message", self.message.as_deref()),
            ("until", self.until.as_deref()),
        ]
        .into_iter()
        .filter_map(|(f, v)| v.map(|v| (f, v)))
        .collect();
        t.extend(self.headers.values().map(|v| ("headers", v.as_str())));
        if let Some(Value::String(s)) = &self.for_each {
            t.push(("for_each", s.as_str()));
        }
        t
    }
}

/// The definition a version holds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct WorkflowDefinition {
    /// JSON Schema of `start`'s `inputs`.
    #[schema(value_type = Object)]
    pub inputs_schema: Value,
    pub steps: Vec<WorkflowStep>,
    pub default_worker_queue_id: Option<Uuid>,
}

/// A workflow as the API shows it: its current version's definition.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Workflow {
    pub id: Uuid,
    pub organization_id: String,
    pub name: String,
    pub description: Option<String>,
    pub project_id: Option<Uuid>,
    pub tags: Vec<String>,
    /// 1 at create; every update adds one.
    pub version: i64,
    #[schema(value_type = Object)]
    pub inputs_schema: Value,
    pub steps: Vec<WorkflowStep>,
    pub default_worker_queue_id: Option<Uuid>,
    pub created_by: Option<String>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// One version of a workflow (`GET /workflows/{id}/versions`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowVersion {
    pub workflow_id: Uuid,
    pub version: i64,
    pub name: String,
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub inputs_schema: Value,
    pub steps: Vec<WorkflowStep>,
    pub default_worker_queue_id: Option<Uuid>,
    pub created_by: Option<String>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
}

/// `POST /api/v1/workflows`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateWorkflow {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    #[schema(max_length = 10000)]
    pub description: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub inputs_schema: Option<Value>,
    pub steps: Vec<WorkflowStep>,
    pub default_worker_queue_id: Option<Uuid>,
    pub project_id: Option<Uuid>,
    #[schema(max_items = 100)]
    pub tags: Option<Vec<String>>,
}

/// Partial update (PATCH and PUT); `steps` and `tags` are replaced whole when given. Every
/// update makes a new version.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UpdateWorkflow {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub description: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    pub inputs_schema: Option<Value>,
    pub steps: Option<Vec<WorkflowStep>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    pub default_worker_queue_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    pub project_id: Option<Option<Uuid>>,
    #[schema(max_items = 100)]
    pub tags: Option<Vec<String>>,
}

/// Step ids are names a template can write as `steps.<id>`: a letter or `_`, then letters,
/// digits and `_`.
pub(crate) fn is_step_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks the name, description and tags every workflow write may carry.
pub fn check_header(v: &mut Issues, name: Option<&str>, description: Option<&str>, tags: Option<&[String]>) {
    if let Some(name) = name {
        v.length("name", name, 1, 200);
    }
    v.max_length("description", description, 10_000);
    if let Some(tags) = tags {
        v.check(tags.len() <= 100, "tags", "at most 100 tags");
        v.check(
            tags.iter().all(|t| t.chars().count() <= 100),
            "tags",
            "each tag has at most 100 characters",
        );
    }
}

/// What a definition says on its own: unique step ids, known dependencies, no cycle, and the
/// fields each step type needs. Fields are named `steps[<i>].<field>` (with the step's id in
/// the message).
pub fn check_steps(v: &mut Issues, steps: &[WorkflowStep]) {
    if steps.is_empty() {
        v.push("steps", "a workflow needs at least one step");
        return;
    }
    if steps.len() > MAX_STEPS {
        v.push("steps", format!("at most {MAX_STEPS} steps"));
        return;
    }
    let mut seen = HashSet::new();
    for (i, s) in steps.iter().enumerate() {
        let f = |field: &str| format!("steps[{i}].{field}");
        let at = |msg: &str| format!("step '{}': {msg}", s.id);
        if !is_step_id(&s.id) {
            v.push(
                &f("id"),
                "must be a letter or '_', then letters, digits or '_' (at most 64)",
            );
        } else if !seen.insert(s.id.as_str()) {
            v.push(&f("id"), at("another step has this id"));
        }
        v.max_length(&f("name"), s.name.as_deref(), 200);
        check_step_fields(v, s, &f, &at);
    }
    let ids: HashSet<&str> = steps.iter().map(|s| s.id.as_str()).collect();
    let mut dangling = false;
    for (i, s) in steps.iter().enumerate() {
        for d in &s.depends_on {
            if !ids.contains(d.as_str()) {
                dangling = true;
                v.push(
                    &format!("steps[{i}].depends_on"),
                    format!(
                        "step '{}': depends on '{d}', which is not a step of this workflow",
                        s.id
                    ),
                );
            } else if d == &s.id {
                dangling = true;
                v.push(
                    &format!("steps[{i}].depends_on"),
                    format!("step '{}': depends on itself", s.id),
                );
            }
        }
    }
    if !dangling && let Some(cycle) = find_cycle(steps) {
        let i = steps.iter().position(|s| s.id == cycle[0]).unwrap_or(0);
        v.push(
            &format!("steps[{i}].depends_on"),
            format!("the dependencies form a cycle: {}", cycle.join(" → ")),
        );
    }
}

fn check_step_fields(v: &mut Issues, s: &WorkflowStep, f: &dyn Fn(&str) -> String, at: &dyn Fn(&str) -> String) {
    let need = |v: &mut Issues, field: &str, present: bool| {
        v.check(
            present,
            &f(field),
            at(&format!("a {} step needs '{field}'", s.step_type)),
        );
    };
    let absent = |v: &mut Issues, field: &str, present: bool| {
        v.check(
            !present,
            &f(field),
            at(&format!("'{field}' does not apply to a {} step", s.step_type)),
        );
    };
    match s.step_type {
        StepType::Agent => {
            need(v, "agent_id", s.agent_id.is_some());
            absent(v, "team_id", s.team_id.is_some());
            need(v, "prompt", s.prompt.as_deref().is_some_and(|p| !p.trim().is_empty()));
        }
        StepType::Team => {
            need(v, "team_id", s.team_id.is_some());
            absent(v, "agent_id", s.agent_id.is_some());
            need(v, "prompt", s.prompt.as_deref().is_some_and(|p| !p.trim().is_empty()));
        }
        StepType::Command => need(v, "command", s.command.as_deref().is_some_and(|c| !c.trim().is_empty())),
        StepType::Http => {
            need(v, "url", s.url.as_deref().is_some_and(|u| !u.trim().is_empty()));
            if let Some(m) = &s.method {
                v.check(
                    ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"].contains(&m.to_ascii_uppercase().as_str()),
                    &f("method"),
                    at("must be GET, POST, PUT, PATCH, DELETE or HEAD"),
                );
            }
        }
        StepType::Approval => {
            need(v, "message", s.message.as_deref().is_some_and(|m| !m.trim().is_empty()));
            v.check(
                s.approvers.iter().all(|r| matches!(r, Role::Admin | Role::Member)),
                &f("approvers"),
                at("only admin and member may approve"),
            );
            absent(v, "for_each", s.for_each.is_some());
        }
        StepType::Sleep => {
            v.check(
                s.seconds.is_some() != s.until.is_some(),
                &f("seconds"),
                at("a sleep step needs 'seconds' or 'until', not both"),
            );
            if let Some(n) = s.seconds {
                v.check(
                    (0..=30 * 86_400).contains(&n),
                    &f("seconds"),
                    at("must be between 0 and 2,592,000"),
                );
            }
            absent(v, "for_each", s.for_each.is_some());
        }
    }
    if s.step_type != StepType::Approval {
        absent(v, "approvers", !s.approvers.is_empty());
        absent(v, "on_timeout", s.on_timeout.is_some());
    }
    if let Some(t) = s.timeout_seconds {
        v.check(
            (1..=7 * 86_400).contains(&t),
            &f("timeout_seconds"),
            at("must be between 1 and 604,800"),
        );
    }
    if let Some(r) = &s.retry {
        v.check(
            (1..=20).contains(&r.max_attempts),
            &f("retry.max_attempts"),
            at("must be between 1 and 20"),
        );
        v.check(
            (0.0..=86_400.0).contains(&r.backoff_seconds),
            &f("retry.backoff_seconds"),
            at("must be between 0 and 86,400"),
        );
        v.check(
            (1.0..=10.0).contains(&r.backoff_factor),
            &f("retry.backoff_factor"),
            at("must be between 1 and 10"),
        );
    }
    match &s.for_each {
        None | Some(Value::Array(_)) | Some(Value::String(_)) => {}
        Some(_) => v.push(&f("for_each"), at("must be a list or a template that renders to one")),
    }
    if let Some(n) = s.max_parallel {
        v.check(
            s.for_each.is_some(),
            &f("max_parallel"),
            at("applies to a for_each step only"),
        );
        v.check(
            (1..=MAX_PARALLEL).contains(&n),
            &f("max_parallel"),
            at("must be between 1 and 100"),
        );
    }
}

/// A cycle among the steps' dependencies (its step ids, first repeated at the end), if any.
/// Every dependency must name a step.
pub fn find_cycle(steps: &[WorkflowStep]) -> Option<Vec<String>> {
    let index: HashMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
    // 0 unvisited, 1 on the current path, 2 done.
    let mut state = vec![0u8; steps.len()];
    let mut path: Vec<usize> = Vec::new();
    for start in 0..steps.len() {
        if state[start] != 0 {
            continue;
        }
        // Iterative depth-first search: (step, next dependency to look at).
        let mut stack = vec![(start, 0usize)];
        state[start] = 1;
        path.push(start);
        while let Some((node, next)) = stack.last_mut() {
            let deps = &steps[*node].depends_on;
            if *next < deps.len() {
                let d = index[deps[*next].as_str()];
                *next += 1;
                match state[d] {
                    0 => {
                        state[d] = 1;
                        path.push(d);
                        stack.push((d, 0));
                    }
                    1 => {
                        let from = path.iter().position(|&p| p == d).unwrap_or(0);
                        let mut cycle: Vec<String> = path[from..].iter().map(|&p| steps[p].id.clone()).collect();
                        cycle.push(steps[d].id.clone());
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                state[*node] = 2;
                path.pop();
                stack.pop();
            }
        }
    }
    None
}

/// Each step's ancestors (the steps it depends on, directly or not), by step id. The
/// definition must be free of cycles and dangling dependencies.
pub fn ancestors(steps: &[WorkflowStep]) -> HashMap<&str, HashSet<&str>> {
    let by_id: HashMap<&str, &WorkflowStep> = steps.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut all: HashMap<&str, HashSet<&str>> = HashMap::new();
    for s in steps {
        let mut seen = HashSet::new();
        let mut todo: Vec<&str> = s.depends_on.iter().map(String::as_str).collect();
        while let Some(d) = todo.pop() {
            if seen.insert(d)
                && let Some(step) = by_id.get(d)
            {
                todo.extend(step.depends_on.iter().map(String::as_str));
            }
        }
        all.insert(s.id.as_str(), seen);
    }
    all
}

impl CreateWorkflow {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        check_header(
            &mut v,
            Some(&self.name),
            self.description.as_deref(),
            self.tags.as_deref(),
        );
        check_steps(&mut v, &self.steps);
        v.finish()
    }
}

impl UpdateWorkflow {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        let description = self.description.as_ref().and_then(|d| d.as_deref());
        check_header(&mut v, self.name.as_deref(), description, self.tags.as_deref());
        if let Some(steps) = &self.steps {
            check_steps(&mut v, steps);
        }
        v.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn steps(v: Value) -> Vec<WorkflowStep> {
        serde_json::from_value(v).unwrap()
    }

    fn issues(s: &[WorkflowStep]) -> Vec<FieldIssue> {
        let mut v = Issues::new();
        check_steps(&mut v, s);
        v.finish().err().unwrap_or_default()
    }

    #[test]
    fn a_diamond_is_fine_and_its_ancestors_are_known() {
        let s = steps(json!([
            {"id": "a", "type": "command", "command": "true"},
            {"id": "b", "type": "command", "command": "true", "depends_on": ["a"]},
            {"id": "c", "type": "command", "command": "true", "depends_on": ["a"]},
            {"id": "d", "type": "command", "command": "true", "depends_on": ["b", "c"]},
        ]));
        assert!(issues(&s).is_empty());
        let a = ancestors(&s);
        assert_eq!(a["d"], HashSet::from(["a", "b", "c"]));
        assert!(a["a"].is_empty());
    }

    #[test]
    fn cycles_unknown_dependencies_and_missing_fields_are_named() {
        let s = steps(json!([
            {"id": "a", "type": "command", "command": "true", "depends_on": ["c"]},
            {"id": "b", "type": "command", "command": "true", "depends_on": ["a"]},
            {"id": "c", "type": "command", "command": "true", "depends_on": ["b"]},
        ]));
        let e = issues(&s);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].field, "steps[0].depends_on");
        assert!(e[0].issue.contains("a → c → b → a"), "{e:?}");

        let s = steps(json!([
            {"id": "a", "type": "agent", "prompt": " "},
            {"id": "a", "type": "sleep", "depends_on": ["ghost"]},
            {"id": "x y", "type": "approval", "message": "ok?", "approvers": ["viewer"]},
        ]));
        let fields: Vec<String> = issues(&s).into_iter().map(|i| i.field).collect();
        for f in [
            "steps[0].agent_id",
            "steps[0].prompt",
            "steps[1].id",
            "steps[1].seconds",
            "steps[1].depends_on",
            "steps[2].id",
            "steps[2].approvers",
        ] {
            assert!(fields.contains(&f.to_string()), "{f} missing from {fields:?}");
        }
    }
}
