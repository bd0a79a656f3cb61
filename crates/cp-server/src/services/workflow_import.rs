//! `POST /workflows/import`: the document the official Python client's DSL builds
//! (`kubiya.dsl.workflow(...).to_dict()`, kubiya-sdk 2.1.6) turned into a definition.
//!
//! Steps become `command`, `agent` or `http` steps by their executor; `chain` (the default)
//! makes each step depend on the one before. References the DSL writes as `${NAME}` or
//! `{{NAME}}` become template expressions: a step's `output: NAME` → `steps.<id>.output`, a
//! param → `inputs.NAME`, `ITEM` in a parallel step → `item`; an env value is written in
//! as it is. Any other text is kept literally (shell variables stay for the shell, and
//! template-looking text is escaped). A step's `script` is given to its command on stdin.

use std::collections::HashMap;

use cp_types::FieldIssue;
use cp_types::workflow::{CreateWorkflow, StepRetry, StepType, WorkflowStep};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// The agent names the document's agent steps use, to be looked up before `convert`.
pub fn agent_names(doc: &Value) -> Vec<String> {
    steps_of(doc)
        .iter()
        .filter(|s| s["executor"]["type"] == "agent")
        .filter_map(|s| s["executor"]["config"]["agent_name"].as_str().map(String::from))
        .collect()
}

fn steps_of(doc: &Value) -> Vec<Value> {
    doc["steps"].as_array().cloned().unwrap_or_default()
}

/// A DSL map given as an object or as a list of one-key objects.
fn pairs(v: &Value) -> Vec<(String, Value)> {
    match v {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Value::Array(items) => items.iter().flat_map(pairs).collect(),
        _ => Vec::new(),
    }
}

/// A step id from a DSL step name: identifier characters only, unique in the workflow.
fn step_id(name: &str, taken: &mut Vec<String>) -> String {
    let mut id: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .take(60)
        .collect();
    if !id.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        id.insert(0, '_');
    }
    let mut unique = id.clone();
    let mut n = 2;
    while taken.contains(&unique) {
        unique = format!("{id}_{n}");
        n += 1;
    }
    taken.push(unique.clone());
    unique
}

/// What `${NAME}` / `{{NAME}}` stands for in one step.
#[derive(Clone)]
enum Ref {
    Expr(String),
    Literal(String),
}

/// Rewrites DSL references in `text` into a template; other text stays literal.
fn template(text: &str, refs: &HashMap<String, Ref>) -> String {
    rewrite(text, refs, |_| "")
}

/// Where a reference sits in a shell command, which decides how its value is escaped (a
/// command's values are shell-quoted words unless a filter says otherwise; see
/// `templates::shell_environment`).
#[derive(Clone, Copy, PartialEq)]
enum Quoting {
    Bare,
    Single,
    Double,
}

/// `template` for a command: the DSL substitutes text, so a reference inside the command's
/// own quotes is escaped for those quotes (`dq`, `sq`) and a bare one becomes a quoted word;
/// in a script fed on stdin (`script_from`: where it starts) values go in as they are.
fn command_template(text: &str, refs: &HashMap<String, Ref>, script_from: Option<usize>) -> String {
    let mut quoting = Quoting::Bare;
    let mut escaped = false;
    let states: Vec<(usize, Quoting)> = text
        .char_indices()
        .map(|(i, c)| {
            let before = quoting;
            match (quoting, c) {
                _ if escaped => escaped = false,
                (Quoting::Single, '\'') => quoting = Quoting::Bare,
                (Quoting::Single, _) => {}
                (_, '\\') => escaped = true,
                (Quoting::Bare, '\'') => quoting = Quoting::Single,
                (Quoting::Bare, '"') => quoting = Quoting::Double,
                (Quoting::Double, '"') => quoting = Quoting::Bare,
                _ => {}
            }
            (i, before)
        })
        .collect();
    rewrite(text, refs, move |offset| {
        if script_from.is_some_and(|s| offset >= s) {
            return " | safe";
        }
        match states.iter().find(|(i, _)| *i == offset).map(|(_, q)| *q) {
            Some(Quoting::Single) => " | sq",
            Some(Quoting::Double) => " | dq",
            _ => "",
        }
    })
}

/// The rewrite both share: `filter` gives the filter (if any) for a reference at a byte offset.
fn rewrite(text: &str, refs: &HashMap<String, Ref>, mut filter: impl FnMut(usize) -> &'static str) -> String {
    let mut out = String::new();
    let mut literal = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        let found = reference_at(rest);
        match found.and_then(|(name, len)| refs.get(name).map(|r| (r, len))) {
            Some((Ref::Expr(e), len)) => {
                flush(&mut out, &mut literal);
                let f = filter(text.len() - rest.len());
                out.push_str(&format!("{{{{ {e}{f} }}}}"));
                rest = &rest[len..];
            }
            Some((Ref::Literal(v), len)) => {
                literal.push_str(v);
                rest = &rest[len..];
            }
            None => {
                let c = rest.chars().next().unwrap_or_default();
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    flush(&mut out, &mut literal);
    out
}

/// `${NAME}` or `{{NAME}}` (spaces allowed inside the braces) at the start of `s`: the name
/// and the length of the whole reference.
fn reference_at(s: &str) -> Option<(&str, usize)> {
    let (open, close) = if s.starts_with("${") {
        ("${", "}")
    } else if s.starts_with("{{") {
        ("{{", "}}")
    } else {
        return None;
    };
    let end = s[open.len()..].find(close)? + open.len();
    let name = s[open.len()..end].trim();
    let ident = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ident.then_some((name, end + close.len()))
}

/// Appends literal text, escaped when the template engine would read it as syntax.
fn flush(out: &mut String, literal: &mut String) {
    if ["{{", "{%", "{#"].iter().any(|t| literal.contains(t)) {
        out.push_str("{% raw %}");
        out.push_str(literal);
        out.push_str("{% endraw %}");
    } else {
        out.push_str(literal);
    }
    literal.clear();
}

/// The document as a definition; `agents` maps the names of `agent_names` found in the
/// organization to their ids. Every problem is an issue naming `steps[<i>]…`.
pub fn convert(doc: &Value, agents: &HashMap<String, Uuid>) -> Result<CreateWorkflow, Vec<FieldIssue>> {
    let mut issues = Vec::new();
    let name = doc["name"].as_str().unwrap_or_default().to_string();
    if name.trim().is_empty() {
        issues.push(FieldIssue::new("name", "the workflow needs a name"));
    }
    let chain = match doc["type"].as_str() {
        None | Some("chain") => true,
        Some("graph") => false,
        Some(other) => {
            issues.push(FieldIssue::new("type", format!("'{other}' is neither chain nor graph")));
            true
        }
    };
    let steps = steps_of(doc);
    let mut taken = Vec::new();
    let ids: Vec<String> = steps
        .iter()
        .map(|s| step_id(s["name"].as_str().unwrap_or("step"), &mut taken))
        .collect();
    let by_name: HashMap<&str, &str> = steps
        .iter()
        .zip(&ids)
        .filter_map(|(s, id)| s["name"].as_str().map(|n| (n, id.as_str())))
        .collect();

    let mut refs: HashMap<String, Ref> = HashMap::new();
    let mut properties = Map::new();
    for (k, v) in pairs(&doc["params"]) {
        refs.insert(k.clone(), Ref::Expr(format!("inputs.{k}")));
        properties.insert(k, json!({"default": v}));
    }
    for (k, v) in pairs(&doc["env"]) {
        let text = v.as_str().map(String::from).unwrap_or_else(|| v.to_string());
        refs.insert(k, Ref::Literal(text));
    }
    for (s, id) in steps.iter().zip(&ids) {
        if let Some(out) = s["output"].as_str() {
            refs.insert(out.to_string(), Ref::Expr(format!("steps.{id}.output")));
        }
    }

    let mut converted = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let f = |field: &str| format!("steps[{i}].{field}");
        let sname = s["name"].as_str().unwrap_or_default();
        if sname.is_empty() {
            issues.push(FieldIssue::new(f("name"), "every step needs a name"));
        }
        let (items, max_parallel) = parallel(&s["parallel"]);
        let mut step_refs = refs.clone();
        if items.is_some() {
            step_refs.insert("ITEM".into(), Ref::Expr("item".into()));
        }
        let t = |text: &str| template(text, &step_refs);
        let mut depends_on: Vec<String> = Vec::new();
        if chain && i > 0 {
            depends_on.push(ids[i - 1].clone());
        }
        let depends: Vec<String> = match &s["depends"] {
            Value::String(d) => vec![d.clone()],
            Value::Array(ds) => ds.iter().filter_map(|d| d.as_str().map(String::from)).collect(),
            _ => Vec::new(),
        };
        for d in depends {
            match by_name.get(d.as_str()) {
                Some(id) if !depends_on.iter().any(|x| x == id) => depends_on.push(id.to_string()),
                Some(_) => {}
                None => issues.push(FieldIssue::new(
                    f("depends"),
                    format!("step '{sname}': no step named '{d}'"),
                )),
            }
        }
        let executor = s["executor"]["type"].as_str().unwrap_or("command");
        let config = &s["executor"]["config"];
        let mut step = WorkflowStep {
            id: ids[i].clone(),
            name: Some(sname.to_string()).filter(|n| !n.is_empty()),
            step_type: StepType::Command,
            depends_on,
            condition: None,
            retry: retry(s),
            timeout_seconds: s["timeout"].as_i64(),
            continue_on_failure: s["continueOn"]["failure"].as_bool().unwrap_or(false),
            worker_queue_id: None,
            agent_id: None,
            team_id: None,
            prompt: None,
            command: None,
            method: None,
            url: None,
            headers: Default::default(),
            body: None,
            message: None,
            approvers: Vec::new(),
            on_timeout: None,
            seconds: None,
            until: None,
            for_each: items.map(|v| match v {
                Value::String(text) => Value::String(t(&text)),
                other => other,
            }),
            max_parallel,
        };
        match executor {
            "command" | "shell" => {
                let command = s["command"].as_str().or(config["command"].as_str());
                // A `script` (the DSL's `python(...)`, say) is fed to its command on stdin.
                step.command = match (command, s["script"].as_str()) {
                    (Some(c), Some(script)) => {
                        let head = format!("{c} <<'KUBIYA_SCRIPT'\n");
                        let whole = format!("{head}{script}\nKUBIYA_SCRIPT");
                        Some(command_template(&whole, &step_refs, Some(head.len())))
                    }
                    (Some(c), None) => Some(command_template(c, &step_refs, None)),
                    (None, _) => None,
                };
            }
            "agent" => {
                step.step_type = StepType::Agent;
                let agent = config["agent_name"].as_str().unwrap_or_default();
                match agents.get(agent) {
                    Some(id) => step.agent_id = Some(*id),
                    None => issues.push(FieldIssue::new(
                        f("executor.config.agent_name"),
                        format!("step '{sname}': no agent named '{agent}' in this organization"),
                    )),
                }
                step.prompt = config["message"].as_str().map(&t);
            }
            "http" => {
                step.step_type = StepType::Http;
                step.url = config["url"].as_str().map(&t);
                step.method = config["method"].as_str().map(str::to_ascii_uppercase);
                step.headers = pairs(&config["headers"])
                    .into_iter()
                    .map(|(k, v)| (k, t(v.as_str().unwrap_or_default())))
                    .collect();
                step.body = match &config["body"] {
                    Value::Null => None,
                    Value::String(b) => Some(t(b)),
                    other => Some(t(&other.to_string())),
                };
            }
            other => issues.push(FieldIssue::new(
                f("executor.type"),
                format!("step '{sname}': the '{other}' executor is not supported (command, agent and http are)"),
            )),
        }
        match preconditions(&s["preconditions"], &refs) {
            Ok(condition) => step.condition = condition,
            Err(e) => issues.push(FieldIssue::new(f("preconditions"), format!("step '{sname}': {e}"))),
        }
        converted.push(step);
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let inputs_schema = json!({"type": "object", "properties": properties});
    Ok(CreateWorkflow {
        name,
        description: doc["description"].as_str().map(String::from),
        inputs_schema: Some(inputs_schema),
        steps: converted,
        default_worker_queue_id: None,
        project_id: None,
        tags: doc["tags"]
            .as_array()
            .map(|t| t.iter().filter_map(|t| t.as_str().map(String::from)).collect()),
    })
}

/// `parallel {items, maxConcurrent}` (the SDK nests them once more under `items`).
fn parallel(p: &Value) -> (Option<Value>, Option<i64>) {
    let inner = if p["items"].is_object() { &p["items"] } else { p };
    let items = match &inner["items"] {
        Value::Null => None,
        v => Some(v.clone()),
    };
    (items, inner["maxConcurrent"].as_i64())
}

/// `retryPolicy {limit, intervalSec, exponentialBase|backoff}` or `retries: N`: N retries are
/// N + 1 tries.
fn retry(s: &Value) -> Option<StepRetry> {
    let policy = &s["retryPolicy"];
    if let Some(limit) = policy["limit"].as_i64() {
        let factor = policy["exponentialBase"]
            .as_f64()
            .or(policy["backoff"].as_f64())
            .unwrap_or(1.0);
        return Some(StepRetry {
            max_attempts: limit + 1,
            backoff_seconds: policy["intervalSec"].as_f64().unwrap_or(0.0),
            backoff_factor: factor,
        });
    }
    s["retries"].as_i64().map(|n| StepRetry {
        max_attempts: n + 1,
        backoff_seconds: 0.0,
        backoff_factor: 1.0,
    })
}

/// `preconditions [{condition: "${NAME}", expected: "value"}]` as one condition; a
/// precondition that would run a command cannot be checked by the control plane.
fn preconditions(p: &Value, refs: &HashMap<String, Ref>) -> Result<Option<String>, String> {
    let Some(list) = p.as_array() else {
        return Ok(None);
    };
    let mut parts = Vec::new();
    for c in list {
        let (Some(condition), Some(expected)) = (c["condition"].as_str(), c.get("expected")) else {
            return Err(format!(
                "the precondition {c} runs a command; only {{condition: \"${{NAME}}\", expected}} is supported"
            ));
        };
        let name = reference_at(condition.trim())
            .filter(|(_, len)| *len == condition.trim().len())
            .map(|(n, _)| n);
        let Some(Ref::Expr(expr)) = name.and_then(|n| refs.get(n)) else {
            return Err(format!(
                "the precondition '{condition}' must name a param or a step's output"
            ));
        };
        let expected = expected
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| expected.to_string());
        parts.push(format!("({expr}) | string == {}", Value::String(expected)));
    }
    Ok((!parts.is_empty()).then(|| parts.join(" and ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_become_expressions_and_other_text_stays_literal() {
        let mut refs = HashMap::new();
        refs.insert("BUILD_ID".to_string(), Ref::Expr("steps.build.output".into()));
        refs.insert("REGION".to_string(), Ref::Literal("eu".into()));
        assert_eq!(
            template("deploy ${BUILD_ID} to {{REGION}} as $USER in ${HOME}", &refs),
            "deploy {{ steps.build.output }} to eu as $USER in ${HOME}"
        );
        assert_eq!(
            template("helm --set x={{ .Values.x }} {{ BUILD_ID }}", &refs),
            "{% raw %}helm --set x={{ .Values.x }} {% endraw %}{{ steps.build.output }}"
        );
    }

    #[test]
    fn command_references_are_escaped_for_where_they_sit() {
        let refs = HashMap::from([("OUT".to_string(), Ref::Expr("steps.a.output".into()))]);
        assert_eq!(
            command_template(r#"echo ${OUT} "x ${OUT}" 'y ${OUT}'"#, &refs, None),
            r#"echo {{ steps.a.output }} "x {{ steps.a.output | dq }}" 'y {{ steps.a.output | sq }}'"#
        );
        assert_eq!(
            command_template("cat <<'E'\n${OUT}\nE", &refs, Some(9)),
            "cat <<'E'\n{{ steps.a.output | safe }}\nE"
        );
    }

    #[test]
    fn step_names_become_unique_identifiers() {
        let mut taken = Vec::new();
        assert_eq!(step_id("build image", &mut taken), "build_image");
        assert_eq!(step_id("build-image", &mut taken), "build_image_2");
        assert_eq!(step_id("1st", &mut taken), "_1st");
    }
}
