//! `linkerd-await`: see `ringlink_engine::tools::await_ready`.

fn main() -> std::process::ExitCode {
    ringlink_engine::tools::await_ready::main()
}
