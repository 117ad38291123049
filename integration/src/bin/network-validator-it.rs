//! `linkerd2-network-validator` under test: the same `main` as the engine's.
fn main() -> std::process::ExitCode {
    ringlink_engine::tools::network_validator::main()
}
