//! The policy sandbox child on its own, for the server's tests: they run the server inside
//! the test binary, which cannot be re-executed as `kubiya-cp policy-sandbox`.

fn main() -> std::process::ExitCode {
    match cp_policy::sandbox::run_child() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(_) => std::process::ExitCode::FAILURE,
    }
}
