//! The shell skill as a tool: `sh -c` in the working directory with the run's env vars, the
//! skill's allowed and blocked command lists, a timeout, and output capped for the model.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use cp_types::skill::check_command_line;

use crate::sandbox::Sandbox;
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
        cmd.arg("-c")
            // Both streams into one pipe, in the order they were written.
            .arg(format!("exec 2>&1\n{command}"))
            // Only the run's variables (and a usable PATH and HOME): the worker's own key and
            // provider keys must not be readable by the commands a model writes.
            .env(
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
            )
            .env("HOME", std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()))
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return (format!("cannot start the shell: {e}"), true),
        };
        let _group = child.id().map(ProcessGroup);
        let mut stdout = child.stdout.take().expect("piped");
        let work = async {
            // Keep reading past the cap (into nothing) so a talkative command is not stuck on
            // a full pipe.
            let mut out = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if out.len() < 4 * MAX_OUTPUT {
                    out.extend_from_slice(&buf[..n]);
                }
            }
            let status = child.wait().await;
            (out, status)
        };
        match tokio::time::timeout(self.timeout, work).await {
            Err(_) => (
                format!("the command timed out after {} s", self.timeout.as_secs()),
                true,
            ),
            Ok((out, status)) => {
                // NUL (from /proc files, binaries) is refused by the control plane's text fields.
                let mut text = String::from_utf8_lossy(&out).replace('\0', "\u{fffd}");
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
