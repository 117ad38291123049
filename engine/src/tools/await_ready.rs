//! `linkerd-await`: what Linkerd's injector runs in the proxy container's `postStart` hook
//! (`/usr/lib/linkerd/linkerd-await --timeout=2m --port=4191`), so that the application's
//! containers start once the proxy is ready. It polls the proxy's admin `/ready` until it
//! answers 200, then runs the command given after `--`, if any, and exits with its status.
//!
//! Options, as Linkerd's `linkerd-await` takes them: `--port`/`-p` (admin port, default
//! 4191), `--timeout`/`-t` (fail when the proxy is not ready in time: exit 69), `--backoff`/
//! `-b` (wait between checks, default 1s), `--shutdown`/`-S` (ask the proxy to shut down,
//! `POST /shutdown`, once the command has exited), `--verbose`/`-v`. With
//! `LINKERD_AWAIT_DISABLED` set, it does not wait. Only the standard library: the image
//! needs no shell and no other tool.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// Exit status when the proxy did not become ready within `--timeout` (sysexits'
/// EX_UNAVAILABLE); 64 (EX_USAGE) for bad arguments.
const EXIT_UNAVAILABLE: u8 = 69;
const EXIT_USAGE: u8 = 64;

struct Options {
    port: u16,
    timeout: Option<Duration>,
    backoff: Duration,
    shutdown: bool,
    verbose: bool,
    command: Vec<String>,
}

/// The program: arguments from the process, an exit status.
pub fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(why) => {
            eprintln!("linkerd-await: {why}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let admin = SocketAddr::from(([127, 0, 0, 1], options.port));
    if std::env::var_os("LINKERD_AWAIT_DISABLED").is_none() {
        let started = Instant::now();
        loop {
            match get(admin, "/ready") {
                Ok(200) => break,
                Ok(status) if options.verbose => eprintln!("linkerd-await: not ready ({status})"),
                Err(error) if options.verbose => eprintln!("linkerd-await: not ready ({error})"),
                _ => {}
            }
            if options.timeout.is_some_and(|t| started.elapsed() >= t) {
                eprintln!(
                    "linkerd-await: the proxy at {admin} was not ready within {:?}",
                    options.timeout.unwrap_or_default()
                );
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
            std::thread::sleep(options.backoff);
        }
        if options.verbose {
            eprintln!("linkerd-await: the proxy is ready");
        }
    }
    let Some((program, args)) = options.command.split_first() else {
        return ExitCode::SUCCESS;
    };
    let status = match Command::new(program).args(args).status() {
        Ok(status) => status,
        Err(error) => {
            eprintln!("linkerd-await: cannot run {program}: {error}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    if options.shutdown {
        if let Err(error) = post(admin, "/shutdown") {
            eprintln!("linkerd-await: cannot shut the proxy down: {error}");
        }
    }
    ExitCode::from(status.code().map_or(1, |c| c.clamp(0, 255) as u8))
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        port: 4191,
        timeout: None,
        backoff: Duration::from_secs(1),
        shutdown: false,
        verbose: false,
        command: Vec::new(),
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with('-') => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--" => {
                options.command = args.collect();
                break;
            }
            "-p" | "--port" => {
                let v = value("--port")?;
                options.port = v.parse().map_err(|_| format!("invalid --port {v:?}"))?;
            }
            "-t" | "--timeout" => options.timeout = Some(duration(&value("--timeout")?)?),
            "-b" | "--backoff" => options.backoff = duration(&value("--backoff")?)?,
            "-S" | "--shutdown" => options.shutdown = true,
            "-v" | "--verbose" => options.verbose = true,
            "-h" | "--help" => {
                return Err(
                    "usage: linkerd-await [--port P] [--timeout T] [--backoff B] \
                            [--shutdown] [-- CMD ARGS...]"
                        .to_string(),
                )
            }
            other if !other.starts_with('-') => {
                options.command = std::iter::once(arg).chain(args).collect();
                break;
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(options)
}

/// `2m`, `30s`, `500ms`, `1h`, or whole seconds.
fn duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?}");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(bad()),
    })
}

/// The status of `GET path` on the admin server.
fn get(admin: SocketAddr, path: &str) -> std::io::Result<u16> {
    request(
        admin,
        &format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"),
    )
}

fn post(admin: SocketAddr, path: &str) -> std::io::Result<u16> {
    request(
        admin,
        &format!("POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"),
    )
}

fn request(admin: SocketAddr, raw: &str) -> std::io::Result<u16> {
    let timeout = Duration::from_secs(1);
    let mut stream = TcpStream::connect_timeout(&admin, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(raw.as_bytes())?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head)?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))
}
