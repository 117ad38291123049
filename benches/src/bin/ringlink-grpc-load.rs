//! `ringlink-grpc-load`: a gRPC load generator (unary or ping-pong streams, closed or open
//! loop) for `ringlink.test.Echo`; see `ringlink_benches::grpc_load` and `--help`.
//!
//! Runs on one tokio current-thread runtime: one thread, to be pinned with `taskset`.

use std::process::ExitCode;

use ringlink_benches::grpc_load::{self, Options, USAGE};

fn main() -> ExitCode {
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("ringlink-grpc-load: {error:#}");
            return ExitCode::from(2);
        }
    };
    let report = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(grpc_load::run(&opts)));
    match report {
        Ok(report) => {
            print!("{}", report.text(&opts.target));
            println!("{}", report.to_json());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("ringlink-grpc-load: {error:#}");
            ExitCode::FAILURE
        }
    }
}
