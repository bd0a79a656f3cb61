//! Rego policies evaluated with regorus (API §4), in bounded child processes ([`sandbox`]).
//!
//! A policy is compiled once per version ([`compile`]): parsed and checked by regorus'
//! interpreter, then its decision rules (`allow`, `deny`, `violations`) are compiled to
//! regorus' bytecode VM, which evaluates them two to four times faster. A policy using what
//! the VM does not support (`with`, some partial object rules), or an evaluation the VM
//! fails, is answered by the interpreter: its answer is the reference. The decision
//! rule: a request is allowed iff no evaluated policy yields a violation and none yields
//! `allow == false`. A policy that fails or times out yields an error, which the caller treats
//! as a denial in blocking mode (fail closed).

pub mod sandbox;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::RegoVM;
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};
use serde::{Deserialize, Serialize};

pub use sandbox::{Limit, Pool, SandboxConfig, SandboxError};

/// Why content does not compile: the compiler's message, with the line when it names one, or
/// the budget (memory, time, nesting) compiling it exceeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    pub message: String,
    pub line: Option<u32>,
    pub limit: Option<Limit>,
}

/// An evaluation that did not finish: an error in the policy, or the time limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

/// A policy parsed and ready to evaluate.
pub struct Compiled {
    engine: Engine,
    /// `data.<package>`, where its rules live.
    package: String,
    /// The paths of the decision rules (`allow`, `deny`, `violations`) the policy defines.
    rules: Vec<(Rule, String)>,
    /// The decision rules as bytecode, when the VM compiles them.
    vm: Option<RegoVM>,
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
    // Finding them evaluates each once (with no input), under a short time limit: a rule
    // that is over the time budget before it even sees an input is refused.
    let mut rules = Vec::new();
    for rule in Rule::ALL {
        let path = format!("{package}.{}", rule.name());
        let mut probe = engine.clone();
        probe.set_execution_timer_config(timer(DETECTION_LIMIT));
        match probe.eval_rule(path.clone()) {
            Err(e) if undefined_rule(&e.to_string()) => {}
            Err(e) if e.to_string().contains(sandbox::TIMER_MESSAGE) => {
                return Err(CompileError {
                    message: format!(
                        "rule `{}` exceeds the time limit ({} ms) with an empty input",
                        rule.name(),
                        DETECTION_LIMIT.as_millis()
                    ),
                    line: None,
                    limit: Some(Limit::Time),
                });
            }
            _ => rules.push((rule, path)),
        }
    }
    let vm = if rules.is_empty() {
        None
    } else {
        bytecode(&engine, &rules).ok()
    };
    Ok(Compiled {
        engine,
        package,
        rules,
        vm,
    })
}

/// A VM loaded with the decision rules as entry points. It runs until the timer stops it:
/// its own instruction cap (25,000 by default) would refuse policies the interpreter answers.
fn bytecode(engine: &Engine, rules: &[(Rule, String)]) -> anyhow::Result<RegoVM> {
    let paths: Vec<&str> = rules.iter().map(|(_, path)| path.as_str()).collect();
    // Compiling for an entry point changes engine settings (it gathers prints): use a copy.
    let policy = engine.clone().compile_with_entrypoint(&Arc::from(paths[0]))?;
    let program = Compiler::compile_from_policy(&policy, &paths)?;
    let mut vm = RegoVM::new();
    vm.load_program(program);
    vm.set_max_instructions(usize::MAX);
    Ok(vm)
}

fn compile_error(message: &str) -> CompileError {
    CompileError {
        line: line_of(message),
        message: message.trim().to_string(),
        // The parser's own bound on how deep expressions nest.
        limit: message.contains("nesting too deep").then_some(Limit::Nesting),
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
pub struct Input(pub(crate) Value);

impl Input {
    pub fn new(input: &serde_json::Value) -> Input {
        Input(Value::from(input.clone()))
    }
}

/// What one policy said about one input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    pub fn evaluate(&mut self, input: &serde_json::Value, limit: Duration) -> Result<Verdict, EvalError> {
        self.evaluate_input(&Input::new(input), limit)
    }

    /// Like [`Compiled::evaluate`] with the input already converted, so a decision over several
    /// policies converts it once.
    pub fn evaluate_input(&mut self, input: &Input, limit: Duration) -> Result<Verdict, EvalError> {
        if self.rules.is_empty() {
            return Ok(Verdict::default());
        }
        let started = Instant::now();
        if let Some(vm) = &mut self.vm {
            vm.set_input(input.0.clone());
            let answer = verdict(&self.rules, |path| {
                vm.set_execution_timer_config(Some(timer(limit.saturating_sub(started.elapsed()))));
                vm.execute_entry_point_by_name(path)
                    .map_err(|e| EvalError(e.to_string()))
            });
            match answer {
                Err(e) if !e.0.contains(sandbox::TIMER_MESSAGE) => {}
                answer => return answer,
            }
        }
        let mut engine = self.engine.clone();
        engine.set_execution_timer_config(timer(limit.saturating_sub(started.elapsed())));
        engine.set_input(input.0.clone());
        verdict(&self.rules, |path| {
            engine.eval_rule(path.to_string()).map_err(|e| EvalError(e.to_string()))
        })
    }
}

fn timer(limit: Duration) -> ExecutionTimerConfig {
    ExecutionTimerConfig {
        limit,
        check_interval: NonZeroU32::MIN,
    }
}

/// The verdict from the value of each decision rule, as `eval` gives them.
fn verdict(
    rules: &[(Rule, String)],
    mut eval: impl FnMut(&str) -> Result<Value, EvalError>,
) -> Result<Verdict, EvalError> {
    let mut verdict = Verdict::default();
    for (rule, path) in rules {
        let value = eval(path)?;
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
        let mut p = compile(DESTRUCTIVE).unwrap();
        assert_eq!(p.package(), "data.kubiya.tools");
        let bad = json!({"action": "tool_execution", "tool": {"arguments": {"command": "rm -rf /"}}});
        let v = p.evaluate(&bad, LIMIT).unwrap();
        assert!(!v.allowed());
        assert_eq!(v.violations, vec!["destructive command refused: rm -rf /"]);
        let ok = json!({"action": "tool_execution", "tool": {"arguments": {"command": "ls -la"}}});
        assert!(p.evaluate(&ok, LIMIT).unwrap().allowed());

        let mut gate = compile("package gate\nallow if input.user == \"root\"\ndefault allow := false\n").unwrap();
        assert_eq!(
            gate.evaluate(&json!({"user": "root"}), LIMIT).unwrap().allow,
            Some(true)
        );
        assert!(!gate.evaluate(&json!({"user": "bob"}), LIMIT).unwrap().allowed());
        // A policy with neither rule allows.
        let mut silent = compile("package silent\nx := 1\n").unwrap();
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
        let mut p = compile("package slow\nallow if {\n    count([x | some x in numbers.range(1, input.n); some y in numbers.range(1, input.n)]) > 0\n}\n")
            .unwrap();
        assert!(p.vm.is_some());
        let started = std::time::Instant::now();
        let r = p.evaluate(&json!({"n": 3000}), Duration::from_millis(20));
        assert!(r.is_err(), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn content_over_the_time_budget_is_refused() {
        let started = std::time::Instant::now();
        let err = compile("package slow\nallow if {\n    count([x | some x in numbers.range(1, 30000); some y in numbers.range(1, 30000)]) > 0\n}\n")
            .err()
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        assert_eq!(err.limit, Some(Limit::Time), "{err:?}");
        assert!(err.message.contains("time limit"), "{err:?}");
    }

    /// The VM and the interpreter give the same verdicts, and what the VM cannot compile is
    /// still answered (by the interpreter).
    #[test]
    fn the_vm_answers_as_the_interpreter_does() {
        let shipped = include_str!("../../../examples/policies/destructive_commands.rego");
        let policies = [
            (shipped, true),
            (DESTRUCTIVE, true),
            (
                "package a\ndefault allow := false\nallow if input.user in {\"root\", \"ops\"}\n",
                true,
            ),
            (
                "package b\nviolations contains {\"msg\": m} if { some t in input.tags; startswith(t, \"x-\"); m := upper(t) }\n",
                true,
            ),
            (
                "package c\ndeny := [m | some k, v in input.env; contains(v, \"secret\"); m := concat(\"=\", [k, v])]\n",
                true,
            ),
            (
                "package d\nallow if { every t in input.tags { count(t) < 5 } }\ndeny contains \"none\" if count(object.keys(input)) == 0\n",
                true,
            ),
            ("package e\nallow := input.n > 2\n", true),
            ("package f\nallow := \"yes\"\n", true),
            // `with` is not supported by the VM: the interpreter answers.
            (
                "package g\nis_root if input.user == \"root\"\nallow if is_root with input.user as \"root\"\n",
                false,
            ),
        ];
        let inputs = [
            json!({}),
            json!({"user": "root", "tags": ["x-a", "b"], "env": {"A": "secret-1", "B": "2"}, "n": 3}),
            json!({"user": "bob", "tags": ["longer-tag"], "env": {}, "n": 1}),
            json!({"action": "tool_execution", "tool": {"arguments": {"command": "sudo rm -rf /"}}}),
            json!({"action": "tool_execution", "tool": {"arguments": {"cmd": "ls; mkfs.ext4 /dev/sda"}}}),
            json!({"action": "tool_execution", "tool": {"arguments": {"command": "echo mkfs"}}}),
        ];
        for (content, on_vm) in policies {
            let mut vm = compile(content).unwrap();
            assert_eq!(vm.vm.is_some(), on_vm, "{content}");
            let mut interpreter = compile(content).unwrap();
            interpreter.vm = None;
            for input in &inputs {
                let a = vm.evaluate(input, LIMIT);
                let b = interpreter.evaluate(input, LIMIT);
                assert_eq!(a, b, "{content} for {input}");
            }
        }
    }
}
