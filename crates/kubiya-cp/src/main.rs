//! `kubiya-cp`: the control plane server, the worker, administration commands and the benchmark.

mod admin;
mod bench;
mod bench_dashboard;
mod bench_exec;
mod bench_floor;
mod bench_jobs;
mod bench_knowledge;
mod bench_planning;
mod bench_policy;
mod bench_stream;
mod bench_workflow;
mod cli;
mod master_key;
mod serve;
mod worker;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::ClaudeHook = cli.command {
        return claude_hook();
    }
    // A sandbox child stays single-threaded and quiet: no runtime, no logging (its stdout is
    // the protocol, its address space is bounded).
    if let Command::PolicySandbox = cli.command {
        return match cp_policy::sandbox::run_child() {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    cli::init_logging(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(&cli.global, args).await,
            Command::Migrate => admin::migrate(&cli.global).await,
            Command::Sweep => admin::sweep(&cli.global).await,
            Command::Orgs(cmd) => admin::orgs(&cli.global, cmd).await,
            Command::Keys(cmd) => admin::keys(&cli.global, cmd).await,
            Command::Worker(args) => worker::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::ClaudeHook => Ok(()),
            Command::RotateMasterKey(args) => master_key::rotate(&cli.global, &args).await,
            Command::PolicySandbox => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `kubiya-cp claude-hook`: the tool use on stdin, allowed (exit 0) or blocked (exit 2, the
/// reason on stderr, which Claude Code shows the model).
fn claude_hook() -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut input) {
        eprintln!("blocked: cannot read the hook input: {e}");
        return ExitCode::from(2);
    }
    match cp_worker::hook::ask(&input) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("{reason}");
            ExitCode::from(2)
        }
    }
}
