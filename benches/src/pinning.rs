//! Which CPU runs what: the proxy alone on one CPU, backend and load on another.

use std::ffi::OsStr;
use std::fmt;
use std::process::Command;

use anyhow::{anyhow, Result};
use core_affinity::CoreId;

pub struct Pinning {
    pub proxy_cpu: usize,
    pub load_cpu: usize,
}

// === impl Pinning ===

impl Pinning {
    /// Uses the first two CPUs this process may run on (CPUs 0 and 1 on an unrestricted
    /// two-CPU machine); with a single CPU everything shares it.
    pub fn detect() -> Result<Self> {
        let cpus = core_affinity::get_core_ids()
            .filter(|ids| !ids.is_empty())
            .ok_or_else(|| anyhow!("cannot read this process's CPU affinity"))?;
        let proxy_cpu = cpus[0].id;
        let load_cpu = cpus.get(1).map_or(proxy_cpu, |core| core.id);
        Ok(Self {
            proxy_cpu,
            load_cpu,
        })
    }

    pub fn is_shared(&self) -> bool {
        self.proxy_cpu == self.load_cpu
    }

    /// `taskset -c <proxy cpu> program`: taskset execs the program, so the child's PID is
    /// the program's.
    pub fn proxy(&self, program: impl AsRef<OsStr>) -> Command {
        taskset(self.proxy_cpu, program)
    }

    /// `taskset -c <load cpu> program`, for the backend and wrk.
    pub fn load(&self, program: impl AsRef<OsStr>) -> Command {
        taskset(self.load_cpu, program)
    }

    /// The CPU the bulk client thread pins itself to.
    pub fn load_core(&self) -> CoreId {
        CoreId { id: self.load_cpu }
    }
}

impl fmt::Display for Pinning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "- proxy: `taskset -c {}`", self.proxy_cpu)?;
        writeln!(f, "- backend, wrk: `taskset -c {}`", self.load_cpu)?;
        write!(
            f,
            "- bulk client: thread pinned to CPU {} (core_affinity)",
            self.load_cpu
        )?;
        if self.is_shared() {
            write!(
                f,
                "\n- WARNING: only one CPU is available, so proxy, backend and load share \
                 CPU {}; numbers include contention",
                self.proxy_cpu
            )?;
        }
        Ok(())
    }
}

fn taskset(cpu: usize, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(cpu.to_string()).arg(program);
    cmd
}
