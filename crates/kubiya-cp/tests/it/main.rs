//! The `kubiya-cp` executable's tests, in one binary: its commands (`cli`), a real worker
//! process running agents against a real server and a fake model provider (`worker`), and
//! the fault suite that kills them (`faults`, run by scripts/faults.sh).

mod cli;
mod db;
mod faults;
mod worker;
