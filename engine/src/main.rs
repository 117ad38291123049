fn main() -> std::process::ExitCode {
    ringlink_engine::main()
}
