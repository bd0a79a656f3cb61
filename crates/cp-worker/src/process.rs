//! What the tools that start a process share: the environment they get, finding a program,
//! and running one to its end with a timeout and its output capped for the model.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Most output bytes handed back to the model.
pub const MAX_OUTPUT: usize = 16 * 1024;

/// How a process ended.
pub struct Ended {
    /// What it wrote, lossy UTF-8 without NUL, capped at `MAX_OUTPUT` (with a note when cut).
    pub output: String,
    pub success: bool,
}

/// Runs `cmd` with `input` on its standard input and its standard output collected, until
/// it ends or `timeout` runs out (then: the message naming `what`). Its process group is
/// killed when it ends, times out, or the future is dropped (a cancelled run).
pub async fn run(
    mut cmd: tokio::process::Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
    what: &str,
) -> Result<Ended, String> {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {what}: {e}"))?;
    let _group = child.id().map(ProcessGroup);
    let mut stdout = child.stdout.take().expect("piped");
    let stdin = child.stdin.take();
    let work = async {
        let feed = async move {
            if let (Some(mut stdin), Some(input)) = (stdin, input) {
                // A process that does not read its input closes the pipe: not our failure.
                let _ = stdin.write_all(&input).await;
            }
        };
        // Keep reading past the cap (into nothing) so a talkative process is not stuck on a
        // full pipe.
        let read = async {
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
            out
        };
        let ((), out) = tokio::join!(feed, read);
        let status = child.wait().await;
        (out, status)
    };
    let (out, status) = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("{what} timed out after {} s", timeout.as_secs()))?;
    Ok(Ended {
        output: cap_output(String::from_utf8_lossy(&out).into_owned()),
        success: status.map(|s| s.success()).unwrap_or(false),
    })
}

/// Tool output as the control plane takes it: no NUL (from /proc files, binaries: refused by
/// its text fields), at most `MAX_OUTPUT` bytes, with a note when cut.
pub fn cap_output(mut text: String) -> String {
    if text.contains('\0') {
        text = text.replace('\0', "\u{fffd}");
    }
    if text.len() > MAX_OUTPUT {
        let mut cut = MAX_OUTPUT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(&format!("\n[output truncated to {MAX_OUTPUT} bytes]"));
    }
    text
}

/// A usable PATH and HOME, and nothing of the worker's own environment (its key and provider
/// keys must not be readable by what a model writes or a server a skill names).
pub fn base_env() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        ),
        (
            "HOME".to_string(),
            std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()),
        ),
    ])
}

/// The environment of a tool's process: `base_env` and the run's variables.
pub fn tool_env(run_env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env = base_env();
    env.extend(run_env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// Where `program` is on the worker's PATH, if it is there.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file()))
}

/// Kills a process group when dropped: when the process ends, times out, or its run is
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
