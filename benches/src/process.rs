//! Child processes: spawning, waiting for a listening port, stopping with SIGTERM, running
//! a load generator with a deadline.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::procstat::{self, ProcessId};

/// How long a process gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A running child process, killed on drop if it was not stopped. Processes it forked
/// (nginx's worker) are killed too if they outlive it.
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
        let forked = procstat::descendants(self.pid())?;
        signal(self.pid(), libc::SIGTERM)?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut exited = false;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                exited = true;
                break;
            }
            thread::sleep(POLL_INTERVAL);
        }
        if !exited {
            eprintln!(
                "{} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it",
                self.name
            );
            self.child.kill()?;
            self.child.wait()?;
        }
        self.kill_leftovers(&forked);
        Ok(())
    }

    /// SIGKILLs the processes in `forked` that are still the same running processes.
    fn kill_leftovers(&self, forked: &[ProcessId]) {
        // A forked process gets a moment to exit on its own after its parent did.
        let deadline = Instant::now() + Duration::from_secs(1);
        while forked.iter().any(|&p| procstat::is_alive(p)) && Instant::now() < deadline {
            thread::sleep(POLL_INTERVAL);
        }
        for &process in forked {
            if procstat::is_alive(process) {
                eprintln!(
                    "{}: process {} it started outlived it; killing it",
                    self.name, process.pid
                );
                let _ = signal(process.pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let forked = procstat::descendants(self.pid()).unwrap_or_default();
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.kill_leftovers(&forked);
        }
    }
}

/// Runs `cmd` to completion with stdout and stderr captured; kills it if it is still
/// running after `timeout`.
pub fn output_within(mut cmd: Command, timeout: Duration) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).map(|_| buf)
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        stderr.read_to_end(&mut buf).map(|_| buf)
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} still running after {timeout:?}; killed");
        }
        thread::sleep(POLL_INTERVAL);
    };
    let join = |reader: thread::JoinHandle<std::io::Result<Vec<u8>>>| -> Result<Vec<u8>> {
        Ok(reader
            .join()
            .map_err(|_| anyhow!("output reader panicked"))??)
    };
    Ok(Output {
        status,
        stdout: join(out_reader)?,
        stderr: join(err_reader)?,
    })
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

/// Sends `sig` to `pid`: either our own unreaped child, or a process it forked that was
/// just checked to be the same process (PID and start time) as when it was listed.
#[allow(unsafe_code)]
fn signal(pid: u32, sig: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(pid)?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("kill({sig})"));
    }
    Ok(())
}
