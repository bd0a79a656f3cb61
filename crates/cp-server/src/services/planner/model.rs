//! The model that plans: which one, how it is reached from the server, and what it is told.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use cp_llm::{ChatRequest, Client, Message, ToolSpec};
use cp_types::model::{Model, ModelType};
use cp_types::plan::{PlanRequest, TaskPlan};

use super::catalog::{Catalog, Kind};
use super::check::plan_schema;
use super::heuristic::{Index, clip};
use crate::services::caller::Caller;
use crate::services::error::{ServiceError, ServiceResult};
use crate::services::model_client;
use crate::state::AppState;

/// Most agents and most teams the model is shown: the best matches of the task.
const SHOWN_AGENTS: usize = 40;
const SHOWN_TEAMS: usize = 20;

/// The tool the model answers with.
pub const SUBMIT_PLAN: &str = "submit_plan";

/// A model that can plan, with its client.
pub struct Planner {
    pub model: Model,
    pub client: Client,
}

/// The model to plan with, out of the catalog's `models` (by value), or why there is none
/// (the heuristic plans then). A `planner_model_id` that names no model of the organization,
/// by id or value, is a 422.
pub async fn choose(
    state: &AppState,
    caller: &Caller,
    models: &HashMap<String, Model>,
    wanted: Option<&str>,
) -> ServiceResult<Result<Planner, String>> {
    let found = match wanted {
        Some(w) => models
            .get(w)
            .or_else(|| models.values().find(|m| m.id.to_string() == w.trim().to_lowercase())),
        None => models.values().find(|m| m.is_default),
    };
    let model = match (found, wanted) {
        (Some(m), _) => m.clone(),
        (None, Some(w)) => {
            return Err(ServiceError::invalid(
                "planner_model_id",
                format!("no model '{}' in this organization", clip(w, 80)),
            ));
        }
        (None, None) => return Ok(Err("the organization has no default model".into())),
    };
    if !model.enabled {
        return Ok(Err(format!("model {} is disabled", model.value)));
    }
    if model.model_type == ModelType::Embedding {
        return Ok(Err(format!("model {} is an embedding model", model.value)));
    }
    let mut reach = match model_client::reach(state, caller, &model, "planner").await? {
        Ok(reach) => reach,
        Err(why) => return Ok(Err(why)),
    };
    reach.config.idle_timeout = Duration::from_secs(90);
    // A provider that fails gets one more try; the heuristic answers after that.
    reach.config.max_retries = 1;
    Ok(Ok(Planner {
        client: Client::with_http(reach.config, reach.http),
        model,
    }))
}

const SYSTEM: &str = "You plan tasks for an organization's AI agents. Break the task into steps and give each \
step to exactly one of the agents or teams listed, by its id (agent_id or team_id). Give each step an id, a \
title, a description the agent can act on alone, the ids of the earlier steps whose results it needs \
(depends_on; list steps after the steps they depend on), the skills of its agent or team it should use \
(skills_to_use, by skill name) and its expected_output. Recommend who runs the plan and on which worker queue \
(prefer one with online workers). Use only the ids listed. Rate the complexity in story points (1, 2, 3, 5, 8, \
13, 21). List risks, prerequisites, success criteria, and questions that must be answered before the plan can \
run (none when the task is clear). Answer only by calling submit_plan once.";

/// The tool whose arguments are the plan.
pub fn tool() -> ToolSpec {
    ToolSpec {
        name: SUBMIT_PLAN.into(),
        description: "Submit the plan.".into(),
        parameters: plan_schema(),
    }
}

/// The first request: instructions, the task and what the organization has.
pub fn request(req: &PlanRequest, catalog: &Catalog, index: &Index, previous: Option<&TaskPlan>) -> ChatRequest {
    let mut text = format!("Task:\n{}\n", req.description.trim());
    if let Some(p) = req.priority {
        let _ = writeln!(text, "\nPriority: {p}");
    }
    if let Some(c) = &req.context {
        let _ = writeln!(text, "\nContext (JSON): {c}");
    }
    if req.quick_mode == Some(true) {
        text.push_str("\nQuick mode: use as few steps as the task allows (three at most) and keep every text short.\n");
    }
    if let Some(previous) = previous {
        let shown = serde_json::to_string(previous).unwrap_or_default();
        let _ = writeln!(text, "\nYour previous plan (JSON):\n{shown}");
        if let Some(f) = &req.feedback {
            let _ = writeln!(text, "\nRevise it following this feedback:\n{}", f.trim());
        }
    }
    describe_catalog(
        &mut text,
        catalog,
        index,
        &format!("{} {}", req.description, req.feedback.as_deref().unwrap_or_default()),
    );
    ChatRequest {
        system: Some(SYSTEM.into()),
        messages: vec![Message::User { content: text }],
        tools: vec![tool()],
        temperature: Some(0.2),
        max_tokens: Some(if req.quick_mode == Some(true) { 2048 } else { 4096 }),
    }
}

fn describe_catalog(text: &mut String, catalog: &Catalog, index: &Index, query: &str) {
    let ranked = index.ranked(query);
    for (kind, most, heading) in [
        (Kind::Agent, SHOWN_AGENTS, "Agents"),
        (Kind::Team, SHOWN_TEAMS, "Teams"),
    ] {
        let all = catalog.candidates.iter().filter(|c| c.kind == kind).count();
        if all == 0 {
            continue;
        }
        let _ = writeln!(text, "\n{heading}:");
        for (i, _) in ranked
            .iter()
            .filter(|(i, _)| catalog.candidates[*i].kind == kind)
            .take(most)
        {
            let c = &catalog.candidates[*i];
            let _ = write!(text, "- id: {} | name: {}", c.id, c.name);
            if let Some(d) = c.description.as_deref().filter(|d| !d.is_empty()) {
                let _ = write!(text, " | description: {}", clip(d, 300));
            }
            let _ = write!(text, " | runtime: {}", c.runtime);
            if let Some(m) = &c.model {
                let _ = write!(text, " | model: {m}");
            }
            if !c.capabilities.is_empty() {
                let _ = write!(text, " | capabilities: {}", c.capabilities.join(", "));
            }
            if !c.members.is_empty() {
                let _ = write!(text, " | members: {}", c.members.join(", "));
            }
            if !c.skills.is_empty() {
                let skills: Vec<String> = c
                    .skills
                    .iter()
                    .map(|s| format!("{} ({}; tools: {})", s.name, s.skill_type, s.tools.join(", ")))
                    .collect();
                let _ = write!(text, " | skills: {}", skills.join("; "));
            }
            text.push('\n');
        }
        if all > most {
            let _ = writeln!(
                text,
                "({} more {} not shown: they match the task less)",
                all - most,
                heading.to_lowercase()
            );
        }
    }
    if catalog.queues.is_empty() {
        text.push_str("\nWorker queues: none is active.\n");
    } else {
        text.push_str("\nWorker queues:\n");
        for q in catalog.queues.iter().take(30) {
            let _ = writeln!(
                text,
                "- id: {} | name: {} | environment: {} | online workers: {}",
                q.id, q.name, q.environment, q.online_workers
            );
        }
    }
    if !catalog.policies.is_empty() {
        text.push_str("\nPolicies that check every tool call:\n");
        for (name, description) in catalog.policies.iter().take(30) {
            let _ = writeln!(
                text,
                "- {name}{}",
                description
                    .as_deref()
                    .map(|d| format!(": {}", clip(d, 200)))
                    .unwrap_or_default()
            );
        }
    }
}
