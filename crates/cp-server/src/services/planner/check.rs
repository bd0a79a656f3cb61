//! A model's answer checked against the plan's schema and the organization: every id it
//! names must be one of the catalog's agents, teams and queues. Problems go back to the
//! model once; what is still wrong after that is fixed here and said in the plan's notes.

use std::collections::HashSet;
use std::sync::LazyLock;

use cp_types::plan::{Complexity, MAX_PLAN_STEPS, PlanStep, RecommendedExecution, TaskPlan};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::catalog::{Candidate, Catalog, Kind};
use super::heuristic::{self, Index, clip};

/// The arguments of the `submit_plan` tool: what the model fills in (the cost is ours).
pub fn plan_schema() -> Value {
    let strings = json!({"type": "array", "items": {"type": "string", "maxLength": 2000}, "maxItems": 20});
    let id = json!({"type": ["string", "null"], "maxLength": 200});
    json!({
        "type": "object",
        "required": ["title", "summary", "steps"],
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": 200},
            "summary": {"type": "string", "maxLength": 5000},
            "complexity": {
                "type": "object",
                "properties": {
                    "story_points": {"type": "integer", "minimum": 1, "maximum": 21},
                    "confidence": {"enum": ["low", "medium", "high"]},
                    "reasoning": {"type": "string", "maxLength": 2000}
                }
            },
            "steps": {
                "type": "array", "minItems": 1, "maxItems": 100,
                "items": {
                    "type": "object",
                    "required": ["id", "title", "description"],
                    "properties": {
                        "id": {"type": "string", "minLength": 1, "maxLength": 64},
                        "title": {"type": "string", "maxLength": 200},
                        "description": {"type": "string", "maxLength": 10000},
                        "agent_id": id, "team_id": id,
                        "depends_on": {"type": "array", "maxItems": 30, "items": {"type": "string", "maxLength": 200}},
                        "skills_to_use": {"type": "array", "maxItems": 20, "items": {"type": "string", "maxLength": 200}},
                        "expected_output": {"type": "string", "maxLength": 2000}
                    }
                }
            },
            "recommended_execution": {
                "type": "object",
                "properties": {
                    "entity_type": {"enum": ["agent", "team"]},
                    "entity_id": id, "worker_queue_id": id,
                    "reasoning": {"type": "string", "maxLength": 2000}
                }
            },
            "risks": strings, "prerequisites": strings, "success_criteria": strings, "questions": strings
        }
    })
}

static VALIDATOR: LazyLock<Option<jsonschema::Validator>> =
    LazyLock::new(|| jsonschema::validator_for(&plan_schema()).ok());

#[derive(Debug, Clone, Deserialize)]
struct Draft {
    title: String,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    complexity: Option<DraftComplexity>,
    steps: Vec<DraftStep>,
    #[serde(default)]
    recommended_execution: Option<DraftExecution>,
    #[serde(default)]
    risks: Vec<String>,
    #[serde(default)]
    prerequisites: Vec<String>,
    #[serde(default)]
    success_criteria: Vec<String>,
    #[serde(default)]
    questions: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct DraftComplexity {
    story_points: Option<i64>,
    confidence: Option<String>,
    reasoning: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct DraftStep {
    id: String,
    #[serde(default)]
    title: String,
    description: String,
    agent_id: Option<String>,
    team_id: Option<String>,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    skills_to_use: Vec<String>,
    #[serde(default)]
    expected_output: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct DraftExecution {
    entity_type: Option<String>,
    entity_id: Option<String>,
    worker_queue_id: Option<String>,
    reasoning: Option<String>,
}

/// A checked answer: the plan (already fixed) and what was wrong with the answer as given.
pub struct Checked {
    pub plan: TaskPlan,
    pub problems: Vec<String>,
}

/// The answer's JSON, or every way it breaks the schema.
pub fn parse(answer: &Value) -> Result<Value, Vec<String>> {
    if let Some(v) = VALIDATOR.as_ref() {
        let errors: Vec<String> = v
            .iter_errors(answer)
            .take(20)
            .map(|e| {
                let at = e.instance_path().to_string();
                // A message repeats the offending value: keep each one short.
                let message = clip(&e.to_string(), 200);
                if at.is_empty() {
                    message
                } else {
                    format!("{at}: {message}")
                }
            })
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
    }
    Ok(answer.clone())
}

/// The JSON object in a text answer (a model that wrote the plan instead of calling the tool).
pub fn json_in(text: &str) -> Option<Value> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    serde_json::from_str(text.get(start..=end)?).ok()
}

/// A step id that is also a workflow step id: letters, digits and `_`, not starting with a
/// digit, at most 56 characters (room for a suffix that makes it unique).
fn step_id(raw: &str, n: usize) -> String {
    let mut id: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(54)
        .collect();
    if id.is_empty() || id.starts_with(|c: char| c.is_ascii_digit()) {
        id = format!("s_{id}");
    }
    if id.trim_matches('_').is_empty() {
        id = format!("step_{}", n + 1);
    }
    id
}

/// The candidate an id (or, forgivingly, a name) names, preferring `kind`.
fn named<'a>(catalog: &'a Catalog, raw: &str, kind: Kind) -> Option<&'a Candidate> {
    let raw = raw.trim();
    if let Ok(id) = raw.parse::<Uuid>() {
        return catalog
            .find(kind, id)
            .or_else(|| catalog.candidates.iter().find(|c| c.id == id));
    }
    let by_name = |k: Kind| {
        catalog
            .candidates
            .iter()
            .find(|c| c.kind == k && c.name.eq_ignore_ascii_case(raw))
    };
    by_name(kind).or_else(|| by_name(if kind == Kind::Agent { Kind::Team } else { Kind::Agent }))
}

fn strings(list: Vec<String>) -> Vec<String> {
    list.into_iter()
        .map(|s| clip(s.trim(), 2000))
        .filter(|s| !s.is_empty())
        .take(20)
        .collect()
}

/// Checks the schema-valid answer `value` for `task` against `catalog`.
pub fn check(value: Value, catalog: &Catalog, index: &Index, task: &str) -> Result<Checked, Vec<String>> {
    let draft: Draft = serde_json::from_value(value).map_err(|e| vec![format!("not a plan: {e}")])?;
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut drafts = draft.steps;
    if drafts.len() > MAX_PLAN_STEPS {
        problems.push(format!(
            "a plan has at most {MAX_PLAN_STEPS} steps; this one has {}",
            drafts.len()
        ));
        notes.push(format!(
            "Only the first {MAX_PLAN_STEPS} of {} steps were kept",
            drafts.len()
        ));
        drafts.truncate(MAX_PLAN_STEPS);
    }
    // Step ids become workflow step ids; what the model called each one stays findable.
    let mut ids: Vec<String> = Vec::new();
    let mut renamed: Vec<(String, String)> = Vec::new();
    for (n, d) in drafts.iter().enumerate() {
        let base = step_id(&d.id, n);
        let mut id = base.clone();
        if ids.contains(&id) {
            problems.push(format!("step id '{}' is used twice", clip(&d.id, 64)));
        }
        let mut k = n + 1;
        while ids.contains(&id) {
            id = format!("{base}_{k}");
            k += 1;
        }
        renamed.push((d.id.clone(), id.clone()));
        ids.push(id);
    }
    let id_of = |raw: &str| {
        renamed
            .iter()
            .find(|(from, _)| from == raw)
            .or_else(|| renamed.iter().find(|(_, to)| to == raw))
            .map(|(_, to)| to.clone())
    };
    let mut steps = Vec::with_capacity(drafts.len());
    for (n, d) in drafts.into_iter().enumerate() {
        let id = ids[n].clone();
        let text = format!("{} {}", d.title, d.description);
        let wanted = match (&d.agent_id, &d.team_id) {
            (Some(a), _) if !a.trim().is_empty() => Some((a.clone(), Kind::Agent)),
            (_, Some(t)) if !t.trim().is_empty() => Some((t.clone(), Kind::Team)),
            _ => None,
        };
        let who = match &wanted {
            Some((raw, kind)) => match named(catalog, raw, *kind) {
                Some(c) => c,
                None => {
                    let (best, _) = heuristic::best_for(catalog, index, &text, task);
                    let c = &catalog.candidates[best];
                    problems.push(format!(
                        "step '{}': {}_id '{raw}' is not one of the {}s listed",
                        d.id,
                        kind.as_str(),
                        kind.as_str()
                    ));
                    notes.push(format!(
                        "Step '{id}' named an unknown {} '{}'; it was given to {} ({}), the best match of its \
                         description",
                        kind.as_str(),
                        clip(raw, 80),
                        c.name,
                        c.kind.as_str()
                    ));
                    c
                }
            },
            None => {
                let (best, _) = heuristic::best_for(catalog, index, &text, task);
                let c = &catalog.candidates[best];
                problems.push(format!("step '{}' names neither an agent_id nor a team_id", d.id));
                notes.push(format!(
                    "Step '{id}' named no agent or team; it was given to {} ({}), the best match of its description",
                    c.name,
                    c.kind.as_str()
                ));
                c
            }
        };
        let mut depends_on = Vec::new();
        for dep in d.depends_on {
            match id_of(&dep) {
                Some(dep_id) if ids[..n].contains(&dep_id) => {
                    if !depends_on.contains(&dep_id) {
                        depends_on.push(dep_id)
                    }
                }
                Some(_) => {
                    problems.push(format!(
                        "step '{}' depends on '{dep}', which is not listed before it (list steps after the steps \
                         they depend on)",
                        d.id
                    ));
                    notes.push(format!(
                        "Step '{id}': the dependency on '{}' was dropped",
                        clip(&dep, 64)
                    ));
                }
                None => {
                    problems.push(format!(
                        "step '{}' depends on '{dep}', which is not a step of the plan",
                        d.id
                    ));
                    notes.push(format!(
                        "Step '{id}': the dependency on unknown step '{}' was dropped",
                        clip(&dep, 64)
                    ));
                }
            }
        }
        let skills: HashSet<&str> = who.skills.iter().map(|s| s.name.as_str()).collect();
        let mut wanted_skills = d.skills_to_use;
        wanted_skills.dedup();
        let (known, unknown): (Vec<String>, Vec<String>) =
            wanted_skills.into_iter().partition(|s| skills.contains(s.as_str()));
        if !unknown.is_empty() {
            notes.push(format!(
                "Step '{id}': {} has no skill named {}; dropped",
                who.name,
                unknown
                    .iter()
                    .map(|s| format!("'{}'", clip(s, 64)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let mut step = PlanStep {
            title: clip(
                if d.title.trim().is_empty() {
                    &d.description
                } else {
                    d.title.trim()
                },
                200,
            ),
            description: clip(d.description.trim(), 10_000),
            id,
            depends_on,
            skills_to_use: known,
            expected_output: clip(d.expected_output.trim(), 2000),
            ..PlanStep::default()
        };
        heuristic::assign(&mut step, who);
        steps.push(step);
    }
    let rec = draft.recommended_execution.unwrap_or_default();
    let kind = if rec.entity_type.as_deref() == Some("team") {
        Kind::Team
    } else {
        Kind::Agent
    };
    let lead = match rec.entity_id.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(raw) => match named(catalog, raw, kind) {
            Some(c) => Some(c),
            None => {
                problems.push(format!(
                    "recommended_execution.entity_id '{raw}' is not one of the {}s listed",
                    kind.as_str()
                ));
                notes.push(format!(
                    "The recommended {} '{}' is unknown; the first step's was recommended instead",
                    kind.as_str(),
                    clip(raw, 80)
                ));
                None
            }
        },
        None => None,
    };
    let lead = lead.or_else(|| {
        let first = steps.first()?;
        catalog
            .candidates
            .iter()
            .find(|c| Some(c.id) == first.agent_id.or(first.team_id))
    });
    let queue = match rec.worker_queue_id.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(raw) => match raw
            .trim()
            .parse::<Uuid>()
            .ok()
            .and_then(|id| catalog.queues.iter().find(|q| q.id == id))
        {
            Some(q) => Some(q),
            None => {
                problems.push(format!(
                    "recommended_execution.worker_queue_id '{raw}' is not one of the queues listed"
                ));
                let best = catalog.best_queue();
                notes.push(format!(
                    "The recommended queue '{}' is unknown; {}",
                    clip(raw, 80),
                    match best {
                        Some(q) => format!("queue {} was recommended instead", q.name),
                        None => "the organization has no active queue".into(),
                    }
                ));
                best
            }
        },
        None => catalog.best_queue(),
    };
    let complexity = draft.complexity.unwrap_or_default();
    let plan = TaskPlan {
        title: clip(draft.title.trim(), 200),
        summary: clip(draft.summary.trim(), 5000),
        complexity: Complexity {
            story_points: complexity
                .story_points
                .unwrap_or_else(|| heuristic::points_for(steps.len()))
                .clamp(1, 21),
            confidence: complexity.confidence.unwrap_or_else(|| "medium".into()),
            reasoning: clip(complexity.reasoning.unwrap_or_default().trim(), 2000),
        },
        recommended_execution: RecommendedExecution {
            entity_type: lead.map_or(kind, |c| c.kind).as_str().into(),
            entity_id: lead.map(|c| c.id),
            entity_name: lead.map(|c| c.name.clone()),
            worker_queue_id: queue.map(|q| q.id),
            reasoning: clip(rec.reasoning.unwrap_or_default().trim(), 2000),
        },
        steps,
        risks: strings(draft.risks),
        prerequisites: strings(draft.prerequisites),
        success_criteria: strings(draft.success_criteria),
        questions: strings(draft.questions),
        notes,
        ..TaskPlan::default()
    };
    Ok(Checked { plan, problems })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let agent = Candidate::agent;
        Catalog {
            candidates: std::sync::Arc::new(vec![
                agent("dba", "databases backups"),
                agent("deployer", "deploys kubernetes"),
            ]),
            ..Catalog::default()
        }
    }

    #[test]
    fn unknown_ids_and_dependencies_are_problems_and_fixed_with_notes() {
        let catalog = catalog();
        let index = Index::new(&catalog.candidates);
        let dba = catalog.candidates[0].id;
        let answer = json!({
            "title": "t", "summary": "s",
            "steps": [
                {"id": "1", "title": "backup", "description": "back up the databases", "agent_id": dba.to_string()},
                {"id": "deploy it", "title": "deploy", "description": "deploys to kubernetes",
                 "agent_id": Uuid::now_v7().to_string(), "depends_on": ["1", "nope"]},
                {"id": "x", "title": "by name", "description": "d", "agent_id": "DEPLOYER"}
            ]
        });
        let checked = check(parse(&answer).unwrap(), &catalog, &index, "task").unwrap();
        assert_eq!(checked.problems.len(), 2, "{:?}", checked.problems);
        let steps = &checked.plan.steps;
        assert_eq!(steps[0].id, "s_1");
        assert_eq!(steps[1].id, "deploy_it");
        assert_eq!(steps[1].depends_on, ["s_1"]);
        assert_eq!(steps[1].entity_name.as_deref(), Some("deployer"));
        assert_eq!(steps[2].entity_name.as_deref(), Some("deployer"));
        assert_eq!(checked.plan.notes.len(), 2, "{:?}", checked.plan.notes);
        assert_eq!(checked.plan.recommended_execution.entity_id, Some(dba));
    }

    #[test]
    fn schema_errors_name_the_place() {
        let errors = parse(&json!({"title": "t", "steps": [{"id": "a"}]})).unwrap_err();
        assert!(errors.iter().any(|e| e.contains("summary")), "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("/steps/0")), "{errors:?}");
        assert_eq!(json_in("Here: {\"a\": 1} done"), Some(json!({"a": 1})));
    }
}
