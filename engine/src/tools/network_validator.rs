//! `linkerd2-network-validator`: the init container Linkerd's injector adds in CNI mode
//! (`/usr/lib/linkerd/linkerd2-network-validator --connect-addr 1.1.1.1:20001 --listen-addr
//! 0.0.0.0:4140 --timeout 10s`), which checks that the CNI plugin has set up the pod's
//! redirection before the proxy starts: it listens on the proxy's outbound port, connects to
//! an address outside the pod, and succeeds only if that connection arrives at its own
//! listener (carrying the random token it sent), as Linkerd's validator does.
//!
//! Exit 0: redirected; 1: not redirected within the timeout (the connection went elsewhere,
//! was refused, or never arrived); 64: bad arguments. `--log-format` and `--log-level` are
//! accepted. Only the standard library.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 64;

/// The program: arguments from the process, an exit status.
pub fn main() -> ExitCode {
    let (connect, listen, timeout) = match parse(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(why) => {
            eprintln!("linkerd2-network-validator: {why}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match validate(connect, listen, timeout) {
        Ok(()) => {
            eprintln!("linkerd2-network-validator: {connect} is redirected to {listen}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!(
                "linkerd2-network-validator: connections to {connect} are not redirected to \
                 {listen}: {why}"
            );
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn parse(
    mut args: impl Iterator<Item = String>,
) -> Result<(SocketAddr, SocketAddr, Duration), String> {
    let mut connect = None;
    let mut listen = None;
    let mut timeout = Duration::from_secs(10);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or(format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--connect-addr" => connect = Some(addr(&value()?)?),
            "--listen-addr" => listen = Some(addr(&value()?)?),
            "--timeout" => timeout = duration(&value()?)?,
            "--log-format" | "--log-level" => {
                value()?;
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok((
        connect.ok_or("--connect-addr is required")?,
        listen.ok_or("--listen-addr is required")?,
        timeout,
    ))
}

fn addr(text: &str) -> Result<SocketAddr, String> {
    text.trim_matches('"')
        .parse()
        .map_err(|_| format!("invalid address {text:?}"))
}

/// `10s`, `500ms`, `1m`, or whole seconds.
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
        _ => return Err(bad()),
    })
}

/// Listens on `listen`, connects to `connect` with a token, and waits for the token on the
/// listener.
fn validate(connect: SocketAddr, listen: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let listener = TcpListener::bind(listen).map_err(|e| format!("cannot listen: {e}"))?;
    let token = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() ^ u128::from(std::process::id()))
        .unwrap_or_default()
        .to_string();
    let (tx, rx) = mpsc::channel();
    let expected = token.clone();
    std::thread::spawn(move || {
        while let Ok((mut conn, _)) = listener.accept() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
            let mut got = vec![0u8; expected.len()];
            if conn.read_exact(&mut got).is_ok() && got == expected.as_bytes() {
                let _ = tx.send(());
                return;
            }
        }
    });
    let remaining = deadline.saturating_duration_since(Instant::now());
    let mut stream = TcpStream::connect_timeout(&connect, remaining)
        .map_err(|e| format!("cannot connect: {e}"))?;
    stream
        .write_all(token.as_bytes())
        .map_err(|e| format!("cannot write: {e}"))?;
    let remaining = deadline.saturating_duration_since(Instant::now());
    rx.recv_timeout(remaining)
        .map_err(|_| "the connection did not arrive at the listener".to_string())
}
