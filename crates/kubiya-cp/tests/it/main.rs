//! The `kubiya-cp` executable's tests, in one binary: its commands (`cli`) and a real worker
//! process running agents against a real server and a fake model provider (`worker`).

mod cli;
mod db;
mod worker;
