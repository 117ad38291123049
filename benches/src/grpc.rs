//! Running `ringlink-grpc-load` (`src/bin/ringlink-grpc-load.rs`), the grpc test's load
//! generator, and reading the JSON line it ends with.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ringlink_benches::grpc_load::Report;

use crate::pinning::Pinning;
use crate::process;

/// Extra time the generator gets past its duration (connecting, the last calls) before it
/// is killed.
const GRACE: Duration = Duration::from_secs(30);

/// Closed-loop unary calls on the load CPU: `concurrency` in flight over `connections`
/// HTTP/2 connections, one thread.
pub struct GrpcLoad<'a> {
    pub pin: &'a Pinning,
    pub program: &'a Path,
    pub concurrency: u32,
    pub connections: u32,
}

// === impl GrpcLoad ===

impl GrpcLoad<'_> {
    /// `ringlink-grpc-load --unary --concurrency C --connections N --duration SECS ADDR`.
    pub fn run(&self, addr: SocketAddr, secs: u32) -> Result<Report> {
        let mut cmd = self.pin.load(self.program);
        cmd.arg("--unary")
            .args(["--concurrency", &self.concurrency.to_string()])
            .args(["--connections", &self.connections.to_string()])
            .args(["--duration", &secs.to_string()])
            .arg(addr.to_string());
        let out = process::output_within(cmd, Duration::from_secs(secs.into()) + GRACE)
            .context("running ringlink-grpc-load")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "ringlink-grpc-load against {addr} failed ({}): {}{}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let report = Report::from_output(&stdout)
            .with_context(|| format!("unexpected ringlink-grpc-load output:\n{stdout}"))?;
        if report.ok == 0 {
            bail!("ringlink-grpc-load against {addr} completed no call:\n{stdout}");
        }
        Ok(report)
    }
}
