//! The `kubiya-cp` executable's tests, in one binary: its commands (`cli`), a real worker
//! process running agents against a real server and a fake model provider (`worker`), the
//! fault suite that kills them (`faults`, run by scripts/faults.sh), and a database of an
//! earlier build upgraded and read back (`upgrade`), and workflow runs on the real processes
//! (`workflow_runs`).

/// Runs each named test (an `async fn(postgres: bool)`) on SQLite and on PostgreSQL, as
/// `<name>::sqlite` and `<name>::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(false).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(true).await
            }
        }
    )*};
}

mod cli;
mod db;
mod faults;
mod jobs;
mod knowledge;
mod mcp;
mod planning;
mod skill_tools;
mod upgrade;
mod worker;
mod workflow_runs;
