//! `linkerd2-network-validator`: see `ringlink_engine::tools::network_validator`.

fn main() -> std::process::ExitCode {
    ringlink_engine::tools::network_validator::main()
}
