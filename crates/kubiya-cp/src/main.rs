//! `kubiya-cp`: the control plane server, the worker, administration commands and the benchmark.

mod admin;
mod bench;
mod bench_exec;
mod bench_policy;
mod cli;
mod master_key;
mod serve;
mod worker;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
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
            Command::Orgs(cmd) => admin::orgs(&cli.global, cmd).await,
            Command::Keys(cmd) => admin::keys(&cli.global, cmd).await,
            Command::Worker(args) => worker::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::RotateMasterKey(args) => master_key::rotate(&cli.global, &args).await,
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
