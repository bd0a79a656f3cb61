//! The shell skill as a tool: `sh -c` in the working directory with the run's env vars, the
//! skill's allowed and blocked command lists, a timeout, and output capped for the model.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use cp_types::skill::check_command_line;
use serde_json::Value;

use crate::process::{self, Ended, tool_env};
use crate::sandbox::Sandbox;

#[derive(Debug, Clone)]
pub struct Shell {
    allowed: Vec<String>,
    blocked: Vec<String>,
    timeout: Duration,
    working_dir: Option<String>,
    env: BTreeMap<String, String>,
    sandbox: Sandbox,
}

impl Shell {
    /// From a shell skill's configuration (API §10: `allowed_commands`, `blocked_commands`,
    /// `timeout` in seconds, `working_directory`).
    pub fn from_config(
        config: &Value,
        env: BTreeMap<String, String>,
        working_dir: Option<String>,
        sandbox: Sandbox,
    ) -> Shell {
        let list = |key: &str| crate::config_strings(config, key);
        Shell {
            allowed: list("allowed_commands"),
            blocked: list("blocked_commands"),
            timeout: Duration::from_secs(config["timeout"].as_u64().unwrap_or(60).clamp(1, 3600)),
            working_dir: config["working_directory"].as_str().map(str::to_owned).or(working_dir),
            env,
            sandbox,
        }
    }

    /// Refuses what the skill's lists do not let through (one checker for the API and the
    /// worker: `cp_types::skill::check_command_line`).
    pub fn check(&self, command: &str) -> Result<(), String> {
        check_command_line(&self.allowed, &self.blocked, command).map_err(|e| e.to_string())
    }

    /// Runs the command; its combined output and whether it failed. The process is killed
    /// when the time runs out or when the run is cancelled (the future is dropped).
    pub async fn run(&self, command: &str) -> (String, bool) {
        if let Err(refused) = self.check(command) {
            return (refused, true);
        }
        let mut cmd = match self.sandbox.command(Path::new("sh"), self.working_dir.as_deref(), &[]) {
            Ok(c) => c,
            Err(refused) => return (refused, true),
        };
        // Both streams into one pipe, in the order they were written.
        cmd.arg("-c")
            .arg(format!("exec 2>&1\n{command}"))
            .envs(tool_env(&self.env));
        match process::run(cmd, None, self.timeout, "the command").await {
            Err(e) => (e, true),
            Ok(Ended { mut output, success }) => {
                if !success {
                    output.push_str("\n[the command exited with an error]");
                }
                (output, !success)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn allow_and_block_lists_apply_to_every_part() {
        let s = Shell::from_config(
            &json!({"allowed_commands": ["ls", "echo"], "blocked_commands": ["rm"]}),
            BTreeMap::new(),
            None,
            Sandbox::Unsandboxed,
        );
        assert!(s.check("ls -la && echo hi | echo x").is_ok());
        assert!(s.check("ls; rm -rf /").unwrap_err().contains("'rm' is in blocked"));
        assert!(s.check("cat /etc/passwd").unwrap_err().contains("not in allowed"));
        assert!(s.check("ls 2>&1 | echo x").is_ok());
        for sneaky in [
            "ls & rm -rf ~",
            "ls $(rm x)",
            "ls `rm x`",
            "(rm x)",
            "\\rm x",
            "\"rm\" x",
            "r''m x",
            "X=1 ls",
            "echo x | xargs rm",
        ] {
            assert!(s.check(sneaky).is_err(), "{sneaky}");
        }
    }

    /// The worker's environment is not readable from a tool: not through its parent, not
    /// through process 1, not through `ps e`. Cargo puts CARGO_MANIFEST_DIR in the test
    /// process's own environment.
    #[tokio::test]
    async fn tools_cannot_see_the_worker() {
        let secret = "CARGO_MANIFEST_DIR=";
        assert!(std::fs::read_to_string("/proc/self/environ").unwrap().contains(secret));
        let s = Shell::from_config(&json!({}), BTreeMap::new(), None, Sandbox::probe(false));
        for probe in [
            "cat /proc/$PPID/environ",
            "cat /proc/1/environ",
            "ps e",
            "ps aux",
            "cat /proc/*/environ",
            "cat /proc/*/cmdline",
            "umount /proc; cat /proc/*/environ",
        ] {
            let (out, _) = s.run(probe).await;
            assert!(!out.contains(secret), "{probe}: {out}");
        }
        // The test's own process is not among those `ps` lists.
        let (out, _) = s.run("ps -e -o pid= | wc -l").await;
        assert!(out.trim().parse::<u32>().unwrap() <= 3, "{out}");
        // A private /tmp: what the worker's host has there is not visible.
        let marker = format!("/tmp/kcp-sandbox-{}", std::process::id());
        std::fs::write(&marker, "x").unwrap();
        let (out, failed) = s.run(&format!("ls {marker}")).await;
        let _ = std::fs::remove_file(&marker);
        assert!(failed && out.contains("No such file"), "{out}");
        // A working directory under /tmp stays reachable by its path.
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        std::fs::write(dir.path().join("seen"), "yes").unwrap();
        let s = Shell::from_config(
            &json!({}),
            BTreeMap::new(),
            Some(dir.path().display().to_string()),
            Sandbox::probe(false),
        );
        let (out, failed) = s.run(&format!("pwd; cat seen {}/seen", dir.path().display())).await;
        assert_eq!((out, failed), (format!("{}\nyesyes", dir.path().display()), false));
        // Unavailable namespaces: the tool is refused, not run in the open.
        let s = Shell::from_config(&json!({}), BTreeMap::new(), None, Sandbox::Unavailable);
        let (out, failed) = s.run("echo hi").await;
        assert!(failed && out.contains("--unsandboxed-tools"), "{out}");
    }

    #[tokio::test]
    async fn runs_with_env_and_reports_failures_and_timeouts() {
        let env = BTreeMap::from([("GREETING".to_string(), "hello".to_string())]);
        let s = Shell::from_config(&json!({"timeout": 1}), env, None, Sandbox::probe(false));
        assert_eq!(
            s.sandbox,
            Sandbox::Namespaces,
            "this host must allow namespaces for the tests"
        );
        assert_eq!(s.run("echo $GREETING").await, ("hello\n".to_string(), false));
        // The worker's own variables are not passed on.
        // SAFETY (edition 2024 makes env writes unsafe): this test owns the variable.
        unsafe { std::env::set_var("KCP_WORKER_ONLY", "secret") };
        assert_eq!(s.run("echo \"[$KCP_WORKER_ONLY]\"").await, ("[]\n".to_string(), false));
        // Output past the cap is dropped, not left blocking the command.
        let (out, failed) = s.run("head -c 1000000 /dev/zero | tr '\\0' x").await;
        assert!(
            !failed && out.contains("[output truncated"),
            "{}",
            &out[out.len().saturating_sub(80)..]
        );
        assert_eq!(s.run("printf 'a\\0b'").await, ("a\u{fffd}b".to_string(), false));
        let (out, failed) = s.run("echo oops >&2; exit 3").await;
        assert!(failed && out.contains("oops"), "{out}");
        let started = std::time::Instant::now();
        let (out, failed) = s.run("sleep 30").await;
        assert!(failed && out.contains("timed out") && started.elapsed() < Duration::from_secs(5));
        // Dropping a running command (a cancelled run) stops its whole process group.
        let marker = format!("/tmp/kcp-shell-{}", std::process::id());
        let _ = std::fs::remove_file(&marker);
        let cmd = format!("sleep 1; touch {marker}");
        let _ = tokio::time::timeout(Duration::from_millis(200), s.run(&cmd)).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !std::path::Path::new(&marker).exists(),
            "the command outlived its cancellation"
        );
    }
}
