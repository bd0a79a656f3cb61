//! Workflow definitions: what a definition cannot check alone (its templates, its inputs'
//! JSON Schema, the agents, teams, queues and project it names, all of the caller's
//! organization), and the writes, each of which keeps a new version.

use std::collections::{HashMap, HashSet};

use cp_store::StoreError;
use cp_store::workflows::WorkflowDraft;
use cp_types::FieldIssue;
use cp_types::workflow::{CreateWorkflow, UpdateWorkflow, Workflow, WorkflowDefinition, WorkflowStep, ancestors};
use serde_json::{Value, json};
use uuid::Uuid;

use super::caller::Caller;
use super::error::{ServiceError, ServiceResult};
use super::templates::{self, Scope};
use super::workflow_import;
use crate::state::AppState;

/// An empty object schema: any inputs.
fn any_inputs() -> Value {
    json!({"type": "object"})
}

pub async fn create(state: &AppState, caller: &Caller, req: CreateWorkflow) -> ServiceResult<Workflow> {
    req.validate()?;
    let draft = WorkflowDraft {
        name: req.name,
        description: req.description,
        project_id: req.project_id,
        tags: req.tags.unwrap_or_default(),
        definition: WorkflowDefinition {
            inputs_schema: req.inputs_schema.unwrap_or_else(any_inputs),
            steps: req.steps,
            default_worker_queue_id: req.default_worker_queue_id,
        },
    };
    check(state, &caller.org_id, &draft).await?;
    let by = caller.key_id.to_string();
    Ok(state.store.workflows(&caller.org_id).create(&draft, Some(&by)).await?)
}

pub async fn update(state: &AppState, caller: &Caller, id: Uuid, req: UpdateWorkflow) -> ServiceResult<Workflow> {
    req.validate()?;
    let workflows = state.store.workflows(&caller.org_id);
    let current = workflows.get(id).await.map_err(not_found)?;
    let draft = WorkflowDraft {
        name: req.name.unwrap_or(current.name),
        description: req.description.unwrap_or(current.description),
        project_id: req.project_id.unwrap_or(current.project_id),
        tags: req.tags.unwrap_or(current.tags),
        definition: WorkflowDefinition {
            inputs_schema: req.inputs_schema.unwrap_or(current.inputs_schema),
            steps: req.steps.unwrap_or(current.steps),
            default_worker_queue_id: req.default_worker_queue_id.unwrap_or(current.default_worker_queue_id),
        },
    };
    check(state, &caller.org_id, &draft).await?;
    let by = caller.key_id.to_string();
    workflows
        .update(id, current.version, &draft, Some(&by))
        .await
        .map_err(not_found)
}

/// `POST /workflows/import`: the Python DSL's document converted (see `workflow_import`),
/// then created like any definition; `default_worker_queue_id` and `project_id` may sit
/// beside the document's own fields.
pub async fn import(state: &AppState, caller: &Caller, doc: Value) -> ServiceResult<Workflow> {
    if !doc.is_object() {
        return Err(ServiceError::invalid(
            "body",
            "must be a workflow document (a JSON object)",
        ));
    }
    let mut agents = HashMap::new();
    for name in workflow_import::agent_names(&doc) {
        if let Some(id) = state.store.agents(&caller.org_id).id_by_name(&name).await? {
            agents.insert(name, id);
        }
    }
    let mut req = workflow_import::convert(&doc, &agents)?;
    for (field, slot) in [
        ("default_worker_queue_id", &mut req.default_worker_queue_id),
        ("project_id", &mut req.project_id),
    ] {
        match &doc[field] {
            Value::Null => {}
            Value::String(s) => match s.parse::<Uuid>() {
                Ok(id) => *slot = Some(id),
                Err(_) => return Err(ServiceError::invalid(field, "must be a UUID")),
            },
            _ => return Err(ServiceError::invalid(field, "must be a UUID")),
        }
    }
    create(state, caller, req).await
}

pub fn not_found(e: StoreError) -> ServiceError {
    ServiceError::from_store(e, "workflow")
}

/// Every problem of `draft` beyond its own shape, as 422 issues.
async fn check(state: &AppState, org: &str, draft: &WorkflowDraft) -> ServiceResult<()> {
    let d = &draft.definition;
    let mut issues = check_templates(&d.steps);
    if !d.inputs_schema.is_object() {
        issues.push(FieldIssue::new("inputs_schema", "must be a JSON Schema object"));
    } else if let Err(e) = jsonschema::meta::validate(&d.inputs_schema) {
        issues.push(FieldIssue::new(
            "inputs_schema",
            format!("not a valid JSON Schema: {e} (at {})", e.instance_path()),
        ));
    }
    // Another organization's id is as unknown as one that never existed.
    let named = |field: String, what: &str, id: Uuid, step: Option<&str>| {
        let issue = format!("no {what} {id} in this organization");
        FieldIssue::new(field, step.map_or(issue.clone(), |s| format!("step '{s}': {issue}")))
    };
    for (i, s) in d.steps.iter().enumerate() {
        let step = Some(s.id.as_str());
        if let Some(a) = s.agent_id
            && absent(state.store.agents(org).get(a).await)?
        {
            issues.push(named(format!("steps[{i}].agent_id"), "agent", a, step));
        }
        if let Some(t) = s.team_id
            && absent(state.store.teams(org).get(t).await)?
        {
            issues.push(named(format!("steps[{i}].team_id"), "team", t, step));
        }
        if let Some(q) = s.worker_queue_id
            && absent(state.store.worker_queues(org).get(q).await)?
        {
            issues.push(named(format!("steps[{i}].worker_queue_id"), "worker queue", q, step));
        }
    }
    if let Some(q) = d.default_worker_queue_id
        && absent(state.store.worker_queues(org).get(q).await)?
    {
        issues.push(named("default_worker_queue_id".into(), "worker queue", q, None));
    }
    if let Some(p) = draft.project_id
        && absent(state.store.projects(org).get(p).await)?
    {
        issues.push(named("project_id".into(), "project", p, None));
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::validation(issues))
    }
}

/// Whether a lookup found nothing in the caller's organization; other errors pass through.
fn absent<T>(found: Result<T, StoreError>) -> ServiceResult<bool> {
    match found {
        Ok(_) => Ok(false),
        Err(StoreError::NotFound) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// Compiles every template and condition, and checks each reads only what its step has.
fn check_templates(steps: &[WorkflowStep]) -> Vec<FieldIssue> {
    let env = templates::environment();
    let ancestors = ancestors(steps);
    let none = HashSet::new();
    let mut issues = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let scope = Scope {
            ancestors: ancestors.get(s.id.as_str()).unwrap_or(&none),
            for_each: s.for_each.is_some(),
        };
        let mut fields: Vec<(&str, &str, bool)> = s.templates().into_iter().map(|(f, t)| (f, t, false)).collect();
        if let Some(c) = &s.condition {
            fields.push(("condition", c, true));
        }
        for (field, source, expression) in fields {
            // `for_each` itself is read before there is an item.
            let scope = Scope {
                ancestors: scope.ancestors,
                for_each: scope.for_each && field != "for_each",
            };
            if let Err(e) = templates::check(&env, source, expression, &scope) {
                issues.push(FieldIssue::new(
                    format!("steps[{i}].{field}"),
                    format!("step '{}': {e}", s.id),
                ));
            }
        }
    }
    issues
}
