//! Rego policies evaluated inside the process with regorus (API §4).
//!
//! A policy is compiled once per version ([`compile`], kept in a [`Cache`]); a decision clones
//! the prepared engine (cheap: regorus shares its modules behind `Arc`), sets the input and
//! reads the policy's `allow`, `deny` and `violations` rules under a time limit. The decision
//! rule: a request is allowed iff no evaluated policy yields a violation and none yields
//! `allow == false`. A policy that fails or times out yields an error, which the caller treats
//! as a denial in blocking mode (fail closed).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};
use serde::Serialize;

/// Why content does not compile: the compiler's message, with the line when it names one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    pub message: String,
    pub line: Option<u32>,
}

/// An evaluation that did not finish: an error in the policy, or the time limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

/// A policy parsed and ready to evaluate.
#[derive(Clone)]
pub struct Compiled {
    engine: Engine,
    /// `data.<package>`, where its rules live.
    package: String,
    /// The paths of the decision rules (`allow`, `deny`, `violations`) the policy defines.
    rules: Vec<(Rule, String)>,
}

/// The rules the decision reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Allow,
    Deny,
    Violations,
}

impl Rule {
    const ALL: [Rule; 3] = [Rule::Allow, Rule::Deny, Rule::Violations];

    fn name(self) -> &'static str {
        match self {
            Rule::Allow => "allow",
            Rule::Deny => "deny",
            Rule::Violations => "violations",
        }
    }
}

/// Whether regorus refused a rule path because no rule has it.
fn undefined_rule(message: &str) -> bool {
    message.contains("not a valid rule path")
}

/// How long finding a policy's decision rules may evaluate each of them.
const DETECTION_LIMIT: Duration = Duration::from_millis(50);

/// The file name regorus reports in messages; the API names policies by id, not by file.
const SOURCE_NAME: &str = "policy.rego";

/// Parses `content` (Rego v1). Refuses content without exactly one package.
pub fn compile(content: &str) -> Result<Compiled, CompileError> {
    let mut engine = Engine::new();
    let package = engine
        .add_policy(SOURCE_NAME.to_string(), content.to_string())
        .map_err(|e| compile_error(&e.to_string()))?;
    // Surface errors that only show when rules are analysed (undefined functions, conflicts).
    // Evaluating on the engine itself (not a clone) also leaves it prepared: regorus analyses
    // and schedules the modules on the first evaluation, and clones of a prepared engine share
    // that work, so a decision does not redo it.
    engine
        .eval_rule(format!("{package}.__kubiya_probe__"))
        .map_err(|e| compile_error(&e.to_string()))
        .or_else(|e| {
            if undefined_rule(&e.message) {
                Ok(Value::Undefined)
            } else {
                Err(e)
            }
        })?;
    // Only the decision rules the policy defines are evaluated, each by its path: cheaper than
    // a query for the whole package, which evaluates every rule and parses the query each time.
    // Finding them evaluates each once (with no input), under a short time limit: content
    // that is slow to evaluate must not hold a request up here; a rule that runs out of time
    // exists all the same.
    let mut rules = Vec::new();
    for rule in Rule::ALL {
        let path = format!("{package}.{}", rule.name());
        let mut probe = engine.clone();
        probe.set_execution_timer_config(ExecutionTimerConfig {
            limit: DETECTION_LIMIT,
            check_interval: NonZeroU32::MIN,
        });
        match probe.eval_rule(path.clone()) {
            Err(e) if undefined_rule(&e.to_string()) => {}
            _ => rules.push((rule, path)),
        }
    }
    Ok(Compiled { engine, package, rules })
}

fn compile_error(message: &str) -> CompileError {
    CompileError {
        line: line_of(message),
        message: message.trim().to_string(),
    }
}

/// The line in a regorus message such as `policy.rego:3:9: error: …`.
fn line_of(message: &str) -> Option<u32> {
    let at = message.find(SOURCE_NAME)? + SOURCE_NAME.len();
    let rest = message[at..].strip_prefix(':')?;
    rest.split(':').next()?.trim().parse().ok()
}

/// An input document converted once for every policy of a decision (cheap to clone).
#[derive(Clone)]
pub struct Input(Value);

impl Input {
    pub fn new(input: &serde_json::Value) -> Input {
        Input(Value::from(input.clone()))
    }
}

/// What one policy said about one input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The `allow` rule, when the policy defines it for this input.
    pub allow: Option<bool>,
    /// The strings of the `deny` and `violations` rules.
    pub violations: Vec<String>,
}

impl Verdict {
    /// Allowed by this policy: no violation and no `allow == false`.
    pub fn allowed(&self) -> bool {
        self.violations.is_empty() && self.allow != Some(false)
    }
}

impl Compiled {
    /// The package path (`data.…`).
    pub fn package(&self) -> &str {
        &self.package
    }

    /// Evaluates the policy for `input` within `limit`.
    pub fn evaluate(&self, input: &serde_json::Value, limit: Duration) -> Result<Verdict, EvalError> {
        self.evaluate_input(&Input::new(input), limit)
    }

    /// Like [`Compiled::evaluate`] with the input already converted, so a decision over several
    /// policies converts it once.
    pub fn evaluate_input(&self, input: &Input, limit: Duration) -> Result<Verdict, EvalError> {
        let mut verdict = Verdict::default();
        if self.rules.is_empty() {
            return Ok(verdict);
        }
        let mut engine = self.engine.clone();
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit,
            check_interval: NonZeroU32::MIN,
        });
        engine.set_input(input.0.clone());
        for (rule, path) in &self.rules {
            let value = engine.eval_rule(path.clone()).map_err(|e| EvalError(e.to_string()))?;
            match rule {
                Rule::Allow => {
                    verdict.allow = match value {
                        Value::Undefined => None,
                        Value::Bool(b) => Some(b),
                        other => return Err(EvalError(format!("`allow` must be a boolean, not {other}"))),
                    }
                }
                Rule::Deny | Rule::Violations => collect_strings(value, &mut verdict.violations),
            }
        }
        Ok(verdict)
    }
}

/// Strings of a set or array of violations; other members are rendered as JSON.
fn collect_strings(value: Value, out: &mut Vec<String>) {
    let items: Vec<Value> = match &value {
        Value::Set(s) => s.iter().cloned().collect(),
        Value::Array(a) => a.iter().cloned().collect(),
        Value::Undefined => return,
        Value::Bool(false) | Value::Null => return,
        Value::Bool(true) => {
            out.push("denied".to_string());
            return;
        }
        Value::String(s) => {
            out.push(s.to_string());
            return;
        }
        other => vec![other.clone()],
    };
    for item in items {
        match item {
            Value::String(s) => out.push(s.to_string()),
            other => out.push(other.to_string()),
        }
    }
}

/// Compiled policies by (policy id, version): a decision never re-parses Rego, and an edited
/// policy (new version) is compiled once on its first use.
#[derive(Default)]
pub struct Cache {
    map: Mutex<HashMap<String, (i64, Arc<Compiled>)>>,
}

impl Cache {
    /// The compiled form of `id` at `version`, compiling `content` if it is not cached yet.
    pub fn get_or_compile(&self, id: &str, version: i64, content: &str) -> Result<Arc<Compiled>, CompileError> {
        if let Some((v, c)) = self.lock().get(id)
            && *v == version
        {
            return Ok(c.clone());
        }
        let compiled = Arc::new(compile(content)?);
        self.lock().insert(id.to_string(), (version, compiled.clone()));
        Ok(compiled)
    }

    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, Arc<Compiled>)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMIT: Duration = Duration::from_millis(100);

    const DESTRUCTIVE: &str = r#"
package kubiya.tools

deny contains msg if {
    input.action == "tool_execution"
    cmd := input.tool.arguments.command
    regex.match(`rm\s+-rf\s+/(\s|$)`, cmd)
    msg := sprintf("destructive command refused: %s", [cmd])
}
"#;

    #[test]
    fn violations_and_allow_follow_the_decision_rule() {
        let p = compile(DESTRUCTIVE).unwrap();
        assert_eq!(p.package(), "data.kubiya.tools");
        let bad = json!({"action": "tool_execution", "tool": {"arguments": {"command": "rm -rf /"}}});
        let v = p.evaluate(&bad, LIMIT).unwrap();
        assert!(!v.allowed());
        assert_eq!(v.violations, vec!["destructive command refused: rm -rf /"]);
        let ok = json!({"action": "tool_execution", "tool": {"arguments": {"command": "ls -la"}}});
        assert!(p.evaluate(&ok, LIMIT).unwrap().allowed());

        let gate = compile("package gate\nallow if input.user == \"root\"\ndefault allow := false\n").unwrap();
        assert_eq!(
            gate.evaluate(&json!({"user": "root"}), LIMIT).unwrap().allow,
            Some(true)
        );
        assert!(!gate.evaluate(&json!({"user": "bob"}), LIMIT).unwrap().allowed());
        // A policy with neither rule allows.
        let silent = compile("package silent\nx := 1\n").unwrap();
        assert_eq!(silent.evaluate(&json!({}), LIMIT).unwrap(), Verdict::default());
    }

    #[test]
    fn compile_errors_carry_the_line() {
        let err = compile("package broken\n\nallow if {\n    input.x ==\n}\n")
            .err()
            .unwrap();
        assert!(err.line.is_some(), "{err:?}");
        assert!(!err.message.is_empty());
        assert!(compile("not rego at all").is_err());
    }

    #[test]
    fn a_runaway_policy_times_out() {
        let p = compile("package slow\nallow if {\n    count([x | some x in numbers.range(1, 3000); some y in numbers.range(1, 3000)]) > 0\n}\n")
            .unwrap();
        let started = std::time::Instant::now();
        let r = p.evaluate(&json!({}), Duration::from_millis(20));
        assert!(r.is_err(), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn compiling_slow_content_is_bounded() {
        let started = std::time::Instant::now();
        let p = compile("package slow\nallow if {\n    count([x | some x in numbers.range(1, 30000); some y in numbers.range(1, 30000)]) > 0\n}\n")
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        // The rule exists (it ran out of time, it was not missing), so evaluating it times out.
        assert!(p.evaluate(&json!({}), Duration::from_millis(20)).is_err());
    }

    #[test]
    fn the_cache_compiles_once_per_version() {
        let cache = Cache::default();
        let a = cache.get_or_compile("p1", 1, DESTRUCTIVE).unwrap();
        let b = cache.get_or_compile("p1", 1, "this is not even parsed").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = cache.get_or_compile("p1", 2, "package other\nallow := true\n").unwrap();
        assert_eq!(c.package(), "data.other");
    }
}
