//! The `kubiya-cp` executable's tests, in one binary: its commands (`cli`), a real worker
//! process running agents against a real server and a fake model provider (`worker`), the
//! fault suite that kills them (`faults`, run by scripts/faults.sh), and a database of an
//! earlier build upgraded and read back (`upgrade`).

mod cli;
mod db;
mod faults;
mod upgrade;
mod worker;
mod workflow_runs;
