//! The python skill (`run_python`) and the custom skill (a Python class): both run `python3`
//! in the tool sandbox through one small wrapper, which checks a run_python's imports with
//! Python's own `ast` module before running it, and loads and calls a custom class.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::config_strings;
use crate::process::{self, Ended, find_program, tool_env};
use crate::sandbox::Sandbox;

const WRAPPER: &str = include_str!("python_wrapper.py");

/// Where and how the wrapper runs.
#[derive(Debug, Clone)]
pub struct Python {
    pub timeout: Duration,
    pub working_dir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub sandbox: Sandbox,
}

impl Python {
    /// Runs the wrapper with `request`; what it printed, and whether it failed.
    async fn run(&self, request: Value) -> (String, bool) {
        if find_program("python3").is_none() {
            return ("python3 is not installed on the worker host".into(), true);
        }
        let mut cmd = match self
            .sandbox
            .command(Path::new("python3"), self.working_dir.as_deref(), &[])
        {
            Ok(c) => c,
            Err(refused) => return (refused, true),
        };
        // -I: no PYTHON* variables, no user site, no script directory on the path.
        cmd.args(["-I", "-c", WRAPPER]).envs(tool_env(&self.env));
        let input = serde_json::to_vec(&request).unwrap_or_default();
        match process::run(cmd, Some(input), self.timeout, "the Python code").await {
            Err(e) => (e, true),
            Ok(Ended { output, success }) => (output, !success),
        }
    }
}

/// `run_python {code}` with the skill's import lists.
#[derive(Debug, Clone)]
pub struct RunPython {
    python: Python,
    allowed: Vec<String>,
    blocked: Vec<String>,
}

impl RunPython {
    pub fn from_config(config: &Value, python: Python) -> RunPython {
        RunPython {
            python,
            allowed: config_strings(config, "allowed_imports"),
            blocked: config_strings(config, "blocked_imports"),
        }
    }

    pub fn parameters() -> Value {
        json!({
            "type": "object",
            "properties": {"code": {"type": "string", "description": "Python 3 code; what it prints is the answer"}},
            "required": ["code"],
        })
    }

    pub async fn run(&self, args: &Value) -> (String, bool) {
        let Some(code) = args["code"].as_str() else {
            return ("run_python needs `code`".into(), true);
        };
        let request = json!({"mode": "code", "code": code, "allowed": self.allowed, "blocked": self.blocked});
        self.python.run(request).await
    }
}

/// A custom skill: `Class(**init).run(**arguments)` of its `custom_class`.
#[derive(Debug, Clone)]
pub struct CustomClass {
    python: Python,
    class: String,
    init: Value,
    python_path: Vec<String>,
    parameters: Value,
}

impl CustomClass {
    pub fn from_config(config: &Value, python: Python) -> CustomClass {
        let custom = &config["custom_config"];
        let parameters = match &custom["parameters"] {
            Value::Object(_) => custom["parameters"].clone(),
            _ => json!({"type": "object", "properties": {}}),
        };
        CustomClass {
            python,
            class: config["custom_class"].as_str().unwrap_or_default().to_string(),
            init: custom.get("init").cloned().unwrap_or_else(|| json!({})),
            python_path: config_strings(custom, "python_path"),
            parameters,
        }
    }

    pub fn parameters(&self) -> Value {
        self.parameters.clone()
    }

    pub async fn run(&self, args: &Value) -> (String, bool) {
        let arguments = if args.is_object() { args.clone() } else { json!({}) };
        let request = json!({
            "mode": "class", "class": self.class, "init": self.init,
            "python_path": self.python_path, "arguments": arguments,
        });
        self.python.run(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn python(timeout: u64) -> Python {
        Python {
            timeout: Duration::from_secs(timeout),
            working_dir: None,
            env: BTreeMap::from([("GREETING".to_string(), "hi".to_string())]),
            sandbox: Sandbox::probe(false),
        }
    }

    fn run_python(config: Value) -> RunPython {
        let config = cp_types::skill::validate_configuration(cp_types::skill::SkillType::Python, &config).unwrap();
        RunPython::from_config(&config, python(5))
    }

    async fn code(tool: &RunPython, code: &str) -> (String, bool) {
        tool.run(&json!({ "code": code })).await
    }

    #[tokio::test]
    async fn imports_are_checked_before_the_code_runs() {
        let tool = run_python(json!({}));
        assert_eq!(code(&tool, "print(6 * 7)").await, ("42\n".to_string(), false));
        // Modules the code may import use blocked ones themselves (tempfile imports shutil).
        let (out, failed) = code(&tool, "import tempfile, json\nprint('ok')").await;
        assert_eq!((out.as_str(), failed), ("ok\n", false));
        // The default block list (os, subprocess, sys, socket, shutil), however it is imported.
        for (source, module) in [
            ("import os\nprint('ran')", "os"),
            ("import os.path", "os.path"),
            ("from os import path", "os"),
            ("def f():\n    import subprocess\nprint('ran')", "subprocess"),
            ("x = __import__('socket')", "socket"),
            ("import importlib\nimportlib.import_module('shutil')", "shutil"),
            ("if False:\n    import sys", "sys"),
        ] {
            let (out, failed) = code(&tool, source).await;
            assert!(failed, "{source}: {out}");
            assert!(
                out.contains(&format!("import of '{module}' is refused")),
                "{source}: {out}"
            );
            assert!(!out.contains("ran"), "{source}: {out}");
        }
        // Computed module names cannot be checked: refused.
        for source in [
            "m = 'o' + 's'\n__import__(m)",
            "import importlib\nf = importlib.import_module\nf('os')",
        ] {
            let (out, failed) = code(&tool, source).await;
            assert!(failed && out.contains("computed at run time"), "{source}: {out}");
        }
        // An import hidden from the parser still meets the lists at run time.
        for source in [
            "exec('imp' + 'ort os')",
            "getattr(__builtins__, '__imp' + 'ort__')('os')",
            "exec(compile('imp' + 'ort os', '/usr/lib/x.py', 'exec'), {})",
        ] {
            let (out, failed) = code(&tool, source).await;
            assert!(
                failed && out.contains("ImportError: import of 'os' is refused"),
                "{source}: {out}"
            );
        }
        // An allow list admits its modules and their submodules only.
        let tool = run_python(json!({"allowed_imports": ["math", "json"], "blocked_imports": []}));
        assert_eq!(
            code(
                &tool,
                "import math, json\nfrom math import sqrt\nprint(json.dumps(sqrt(16)))"
            )
            .await,
            ("4.0\n".to_string(), false)
        );
        let (out, failed) = code(&tool, "import csv").await;
        assert!(
            failed && out.contains("'csv' is refused: it is not in allowed_imports"),
            "{out}"
        );
        // No lists: anything goes (the sandbox is the boundary).
        let tool = run_python(json!({"blocked_imports": []}));
        assert_eq!(
            code(&tool, "import os\nprint(os.environ['GREETING'])").await,
            ("hi\n".to_string(), false)
        );
    }

    #[tokio::test]
    async fn errors_timeouts_and_output() {
        let tool = run_python(json!({}));
        let (out, failed) = code(&tool, "print('before')\nraise ValueError('boom')").await;
        assert!(
            failed && out.contains("before") && out.contains("ValueError: boom"),
            "{out}"
        );
        let (out, failed) = code(&tool, "def (:").await;
        assert!(failed && out.starts_with("SyntaxError"), "{out}");
        let (out, failed) = code(&tool, "print('x' * 1000000)").await;
        assert!(
            !failed && out.ends_with("[output truncated to 16384 bytes]"),
            "{}",
            out.len()
        );
        let mut slow = run_python(json!({}));
        slow.python.timeout = Duration::from_secs(1);
        let started = std::time::Instant::now();
        let (out, failed) = code(&slow, "while True: pass").await;
        assert!(failed && out.contains("timed out after 1 s"), "{out}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            tool.run(&json!({})).await,
            ("run_python needs `code`".to_string(), true)
        );
    }

    #[tokio::test]
    async fn custom_classes_are_loaded_and_called() {
        // Outside /tmp: the sandbox has a private one.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        std::fs::write(
            dir.path().join("greeter.py"),
            "class Greeter:\n    def __init__(self, greeting='hello'):\n        self.greeting = greeting\n    \
             def run(self, name):\n        return {'said': f'{self.greeting}, {name}'}\n",
        )
        .unwrap();
        let config = json!({"custom_class": "greeter:Greeter", "custom_config": {
            "init": {"greeting": "bonjour"}, "python_path": [dir.path()],
            "parameters": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        }});
        let tool = CustomClass::from_config(&config, python(5));
        assert_eq!(tool.parameters()["required"], json!(["name"]));
        assert_eq!(
            tool.run(&json!({"name": "Ada"})).await,
            ("{\"said\": \"bonjour, Ada\"}\n".to_string(), false)
        );
        let (out, failed) = tool.run(&json!({"nom": "Ada"})).await;
        assert!(failed && out.contains("TypeError"), "{out}");
        let missing = CustomClass::from_config(&json!({"custom_class": "nowhere.tools:Missing"}), python(5));
        let (out, failed) = missing.run(&json!({})).await;
        assert!(failed, "{out}");
        assert!(
            out.starts_with("cannot load custom_class 'nowhere.tools:Missing': ModuleNotFoundError"),
            "{out}"
        );
    }
}
