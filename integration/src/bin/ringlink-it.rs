//! The `ringlink` binary under test: the same `main` as `engine/src/main.rs`.
fn main() -> std::process::ExitCode {
    ringlink_engine::main()
}
