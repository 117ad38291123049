//! `linkerd-await` under test: the same `main` as `engine/src/bin/linkerd-await.rs`.
fn main() -> std::process::ExitCode {
    ringlink_engine::tools::await_ready::main()
}
