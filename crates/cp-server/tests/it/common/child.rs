//! Tests that need a process of their own: this test binary started again to run exactly one
//! test, told by [`CHILD`] in its environment that it is the child.

use std::process::Stdio;

/// Set in a child's environment to the role it plays (for example `worker`, `alone`).
pub const CHILD: &str = "KCP_TEST_CHILD";

/// The role this process was started for, when it is a child.
pub fn role() -> Option<String> {
    std::env::var(CHILD).ok()
}

/// The harness' name of test `leaf` in module `module` (as `module_path!()` gives it: the
/// crate's name first, which the harness leaves out).
pub fn test_name(module: &str, leaf: &str) -> String {
    let path = module.split_once("::").map_or("", |(_, rest)| rest);
    if path.is_empty() {
        leaf.to_string()
    } else {
        format!("{path}::{leaf}")
    }
}

/// This binary, set to run exactly `test` as a child playing `role`, its output captured.
pub fn command(test: &str, role: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, role)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs `test` as a child playing `role` until it ends, and fails unless it ran that one test
/// and it passed.
pub async fn run(test: &str, role: &str) {
    let out = command(test, role).output().await.expect("start the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the child {test} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "the child did not run {test}:\n{stdout}");
}
