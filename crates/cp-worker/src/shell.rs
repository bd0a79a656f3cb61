//! The shell skill as a tool: `sh -c` in the working directory with the run's env vars, the
//! skill's allowed and blocked command lists, a timeout, and output capped for the model.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncReadExt;

/// Most output bytes handed back to the model.
const MAX_OUTPUT: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct Shell {
    allowed: Vec<String>,
    blocked: Vec<String>,
    timeout: Duration,
    working_dir: Option<String>,
    env: BTreeMap<String, String>,
}

impl Shell {
    /// From a shell skill's configuration (API §10: `allowed_commands`, `blocked_commands`,
    /// `timeout` in seconds, `working_directory`).
    pub fn from_config(config: &Value, env: BTreeMap<String, String>, working_dir: Option<String>) -> Shell {
        let list = |k: &str| -> Vec<String> {
            config[k]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default()
        };
        Shell {
            allowed: list("allowed_commands"),
            blocked: list("blocked_commands"),
            timeout: Duration::from_secs(config["timeout"].as_u64().unwrap_or(60).clamp(1, 3600)),
            working_dir: config["working_directory"].as_str().map(str::to_owned).or(working_dir),
            env,
        }
    }

    /// Refuses a command line whose parts (split on `;`, `&&`, `||`, `|`, newlines) start with
    /// a blocked command, or with one outside a non-empty allow list.
    pub fn check(&self, command: &str) -> Result<(), String> {
        let normalized = command
            .replace("&&", "\n")
            .replace("||", "\n")
            .replace([';', '|'], "\n");
        for part in normalized.lines() {
            let Some(first) = part.split_whitespace().next() else {
                continue;
            };
            let name = first.rsplit('/').next().unwrap_or(first);
            if self.blocked.iter().any(|b| b == name) {
                return Err(format!("the command '{name}' is blocked by the skill's configuration"));
            }
            if !self.allowed.is_empty() && !self.allowed.iter().any(|a| a == name) {
                return Err(format!(
                    "the command '{name}' is not allowed by the skill's configuration (allowed: {})",
                    self.allowed.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Runs the command; its combined output and whether it failed. The process is killed
    /// when the time runs out or when the run is cancelled (the future is dropped).
    pub async fn run(&self, command: &str) -> (String, bool) {
        if let Err(refused) = self.check(command) {
            return (refused, true);
        }
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            // Both streams into one pipe, in the order they were written.
            .arg(format!("exec 2>&1\n{command}"))
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group, so stopping it stops what it started too (`sleep` under
            // `sh`, a pipeline's other commands).
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &self.working_dir {
            cmd.current_dir(dir);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return (format!("cannot start the shell: {e}"), true),
        };
        let _group = child.id().map(ProcessGroup);
        let mut stdout = child.stdout.take().expect("piped");
        let work = async {
            let mut out = Vec::new();
            let _ = (&mut stdout).take(4 * MAX_OUTPUT as u64).read_to_end(&mut out).await;
            let status = child.wait().await;
            (out, status)
        };
        match tokio::time::timeout(self.timeout, work).await {
            Err(_) => (
                format!("the command timed out after {} s", self.timeout.as_secs()),
                true,
            ),
            Ok((out, status)) => {
                let mut text = String::from_utf8_lossy(&out).into_owned();
                if text.len() > MAX_OUTPUT {
                    let mut cut = MAX_OUTPUT;
                    while !text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    text.truncate(cut);
                    text.push_str(&format!("\n[output truncated to {MAX_OUTPUT} bytes]"));
                }
                let failed = !status.map(|s| s.success()).unwrap_or(false);
                if failed {
                    text.push_str("\n[the command exited with an error]");
                }
                (text, failed)
            }
        }
    }
}

/// Kills a process group when dropped: when the command ends, times out, or its run is
/// cancelled (the future holding it is dropped).
pub(crate) struct ProcessGroup(pub(crate) u32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a negative pid signals the group whose id is the child's pid
        // (set by `process_group(0)`); it touches no memory of ours. A group that already
        // exited makes it fail with ESRCH, which is fine.
        unsafe {
            libc::kill(-(self.0 as i32), libc::SIGKILL);
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
        );
        assert!(s.check("ls -la && echo hi | echo x").is_ok());
        assert!(s.check("ls; rm -rf /").unwrap_err().contains("'rm' is blocked"));
        assert!(s.check("cat /etc/passwd").unwrap_err().contains("not allowed"));
        assert!(s.check("/bin/ls").is_ok());
    }

    #[tokio::test]
    async fn runs_with_env_and_reports_failures_and_timeouts() {
        let env = BTreeMap::from([("GREETING".to_string(), "hello".to_string())]);
        let s = Shell::from_config(&json!({"timeout": 1}), env, None);
        assert_eq!(s.run("echo $GREETING").await, ("hello\n".to_string(), false));
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
