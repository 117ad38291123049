//! Child processes: spawning, waiting for a listening port, stopping with SIGTERM.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// How long a process gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A running child process, killed on drop if it was not stopped.
pub struct Spawned {
    name: String,
    child: Child,
}

// === impl Spawned ===

impl Spawned {
    /// Spawns `cmd` with stdout discarded and stderr inherited.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|error| match error.kind() {
                ErrorKind::NotFound => anyhow!("{name}: {:?} not found", cmd.get_program()),
                _ => anyhow!("{name}: cannot start {cmd:?}: {error}"),
            })?;
        Ok(Self {
            name: name.to_string(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `addr` with TCP connects until one succeeds, the process exits, or `timeout`.
    pub fn wait_for_port(&mut self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}) before listening on {addr}", self.name);
            }
            if TcpStream::connect_timeout(&addr, POLL_INTERVAL).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not accept connections on {addr} within {timeout:?}",
                    self.name
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Sends SIGTERM and waits; kills the process if it is still running after 5 s.
    /// Fails if the process had already exited, i.e. it died during the measurement.
    pub fn stop(mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}) during the run", self.name);
        }
        sigterm(self.pid())?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(POLL_INTERVAL);
        }
        eprintln!(
            "{} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it",
            self.name
        );
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loopback address whose port was free a moment ago.
pub fn free_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding an ephemeral port")?;
    Ok(listener.local_addr()?)
}

/// The directory holding this binary, where cargo also puts the other bench binaries.
pub fn exe_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating ringlink-bench")?;
    Ok(exe.parent().map(PathBuf::from).unwrap_or_default())
}

#[allow(unsafe_code)]
fn sigterm(pid: u32) -> Result<()> {
    let pid = libc::pid_t::try_from(pid)?;
    // SAFETY: kill(2) takes plain integers; `pid` is our own unreaped child, so it cannot
    // name another process.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        return Err(std::io::Error::last_os_error()).context("kill(SIGTERM)");
    }
    Ok(())
}
