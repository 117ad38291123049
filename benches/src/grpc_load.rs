//! `ringlink-grpc-load`: a gRPC load generator on tonic, in the manner of ghz, for the
//! integration harness's `ringlink.test.Echo` service (`ringlink_integration::grpc`, whose
//! client and messages it uses).
//!
//! `--connections` HTTP/2 connections (one tonic `Channel` each) carry `--concurrency`
//! workers, worker `i` on connection `i % connections`, each with at most one call in
//! flight. A unit of work is a unary `Echo` call (`--unary`), or one message of a
//! bidirectional `Chat` stream answered before the next is sent (`--stream`, `--messages`
//! per stream, then the stream is finished and another opened).
//!
//! Closed loop (the default): a worker starts its next unit when the previous one is done;
//! latency is from the unit's start. Open loop (`--rps`): units are due on a fixed
//! timetable shared by the workers ([`crate::pace`]); latency is from the **due time**, so
//! a unit that waited for a busy worker counts its wait (no coordinated omission).
//!
//! Only units started (closed loop) or due (open loop) after the warm-up are counted; the
//! last ones, in flight when the duration ends, are completed and counted. The report ends
//! with one line of JSON ([`Report::to_json`]), which `ringlink-bench` parses.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ringlink_integration::grpc::{Chat, EchoClient};
use serde_json::{json, Value};
use tonic::{Code, Status};

use crate::hdr::{Latencies, Summary};
use crate::pace::{HrTimer, Schedule};

pub const USAGE: &str = "\
usage: ringlink-grpc-load [OPTIONS] ADDR

Sends gRPC calls to ringlink.test.Echo (ringlink_integration::grpc) at ADDR
(host:port or http://host:port, h2c) and prints calls/s, latency percentiles
(HDR histogram) and errors by gRPC status code; the last line is the same as
JSON.

  --unary              Echo calls, one request and one reply each (default)
  --stream             Chat streams: --messages messages per stream, each sent
                       when the previous one's reply has arrived (ping-pong);
                       a unit is one message, latency is per message
  --messages N         messages per stream with --stream (default 10)
  --concurrency C      units in flight at most, one per worker (default 50)
  --connections N      HTTP/2 connections; worker i uses connection i % N
                       (default 10)
  --rps R              open loop: R units per second on a fixed timetable
                       shared by the workers, latency measured from each
                       unit's scheduled time (wrk2-style, no coordinated
                       omission); without it, closed loop: each worker starts
                       its next unit when the last one is done
  --duration SECS      measured time (default 10; fractions allowed)
  --warmup SECS        load before the measured time, not counted (default 0)
  --timeout SECS       a unit not done after this fails as DEADLINE_EXCEEDED
                       (client side; default 5)
  -h, --help           print this help";

const DEFAULT_MESSAGES: u32 = 10;
const DEFAULT_CONCURRENCY: usize = 50;
const DEFAULT_CONNECTIONS: usize = 10;
/// The message every request carries, echoed by the server.
const MESSAGE: &str = "hello world!";
/// Pause of a closed-loop worker after a failure, so that a refused connection does not
/// make it spin.
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// How long past the timetable's end an open-loop run may take to send what is still due;
/// what is left then is reported as missed.
const OPEN_LOOP_DRAIN: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Unary,
    /// Bidirectional streams of `messages` ping-pongs each.
    Stream {
        messages: u32,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub target: String,
    pub mode: Mode,
    pub concurrency: usize,
    pub connections: usize,
    /// Units per second in the open loop; `None`: closed loop.
    pub rps: Option<f64>,
    pub duration: Duration,
    pub warmup: Duration,
    pub timeout: Duration,
}

/// What a run did, in its measured window.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub mode: Mode,
    pub rps: Option<f64>,
    pub concurrency: usize,
    pub connections: usize,
    /// Units (calls, or stream messages) answered with OK.
    pub ok: u64,
    /// Failed units (and, with --stream, failed stream ends) by gRPC status code name.
    pub errors: BTreeMap<String, u64>,
    /// The first failure's status, as text.
    pub first_error: Option<String>,
    /// Streams finished with OK (--stream).
    pub streams: u64,
    /// From the end of the warm-up until the last counted unit was done.
    pub elapsed: Duration,
    /// Latency of the OK units: from their start (closed loop) or due time (open loop).
    pub latency: Summary,
    /// Open loop: how late units were sent after their due time (timer, busy workers).
    pub send_lag: Option<Summary>,
    /// Open loop: units of the timetable never sent (the run gave up draining).
    pub missed: u64,
}

/// Everything the workers record, shared on the runtime's one thread.
#[derive(Default)]
struct Tally {
    latency: Latencies,
    send_lag: Latencies,
    errors: BTreeMap<&'static str, u64>,
    first_error: Option<String>,
    streams: u64,
    last_done: Option<Instant>,
    sent: u64,
}

/// One worker's connection and what it is doing.
struct Worker {
    client: EchoClient,
    opts: Arc<Options>,
    tally: Arc<Mutex<Tally>>,
    /// Units due or started before this are warm-up, not counted.
    measure_from: Instant,
    /// The open stream (--stream) and how many messages it has carried.
    chat: Option<(Chat, u32)>,
}

// === impl Options ===

impl Options {
    /// Parses `args` (without the program name); `Ok(None)` means help was asked for.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Self>> {
        let mut target = None;
        let mut stream = false;
        let mut messages = DEFAULT_MESSAGES;
        let mut opts = Options {
            target: String::new(),
            mode: Mode::Unary,
            concurrency: DEFAULT_CONCURRENCY,
            connections: DEFAULT_CONNECTIONS,
            rps: None,
            duration: Duration::from_secs(10),
            warmup: Duration::ZERO,
            timeout: Duration::from_secs(5),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    (flag.to_string(), Some(value.to_string()))
                }
                _ => (arg, None),
            };
            match flag.as_str() {
                "-h" | "--help" => return Ok(None),
                "--unary" => stream = false,
                "--stream" => stream = true,
                _ if !flag.starts_with('-') => {
                    if target.replace(flag.clone()).is_some() {
                        bail!("more than one target ({flag})\n\n{USAGE}");
                    }
                }
                _ => {
                    let value = inline
                        .or_else(|| args.next())
                        .ok_or_else(|| anyhow!("{flag} needs a value\n\n{USAGE}"))?;
                    let number = |min: f64| -> Result<f64> {
                        let n: f64 = value
                            .parse()
                            .with_context(|| format!("{flag} expects a number, got {value:?}"))?;
                        if !(n.is_finite() && n >= min) {
                            bail!("{flag} must be at least {min}, got {value}");
                        }
                        Ok(n)
                    };
                    let count = |min: f64| -> Result<u32> {
                        let n = number(min)?;
                        if n.fract() != 0.0 || n > f64::from(u32::MAX) {
                            bail!("{flag} expects a whole number, got {value}");
                        }
                        Ok(n as u32)
                    };
                    match flag.as_str() {
                        "--messages" => messages = count(1.0)?,
                        "--concurrency" => opts.concurrency = count(1.0)? as usize,
                        "--connections" => opts.connections = count(1.0)? as usize,
                        "--rps" => {
                            let rps = number(0.0)?;
                            if rps == 0.0 {
                                bail!("--rps must be above 0");
                            }
                            opts.rps = Some(rps);
                        }
                        "--duration" => opts.duration = Duration::from_secs_f64(number(0.001)?),
                        "--warmup" => opts.warmup = Duration::from_secs_f64(number(0.0)?),
                        "--timeout" => opts.timeout = Duration::from_secs_f64(number(0.001)?),
                        _ => bail!("unknown option {flag}\n\n{USAGE}"),
                    }
                }
            }
        }
        opts.target = target.ok_or_else(|| anyhow!("no target address\n\n{USAGE}"))?;
        if stream {
            opts.mode = Mode::Stream { messages };
        }
        Ok(Some(opts))
    }
}

// === impl Mode ===

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Unary => "unary",
            Self::Stream { .. } => "stream",
        }
    }

    /// What one unit of work is called in the report.
    fn unit(self) -> &'static str {
        match self {
            Self::Unary => "call",
            Self::Stream { .. } => "message",
        }
    }
}

// === impl Report ===

impl Report {
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// OK units per second of the measured window.
    pub fn ok_per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Errors as `CODE: N` pairs, comma-separated; empty if there were none.
    pub fn errors_line(&self) -> String {
        self.errors
            .iter()
            .map(|(code, n)| format!("{code}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The human-readable summary, several lines.
    pub fn text(&self, target: &str) -> String {
        let unit = self.mode.unit();
        let mut out = String::new();
        let _ = writeln!(out, "Summary:");
        let mut line = |label: &str, value: String| {
            let _ = writeln!(out, "  {:<13} {value}", format!("{label}:"));
        };
        line("Target", format!("{target} (ringlink.test.Echo)"));
        let load = match self.mode {
            Mode::Unary => "unary Echo calls".to_string(),
            Mode::Stream { messages } => {
                format!("Chat streams of {messages} ping-pong messages")
            }
        };
        line(
            "Load",
            format!(
                "{load}, {} in flight at most over {} connections",
                self.concurrency, self.connections
            ),
        );
        line(
            "Loop",
            match self.rps {
                Some(rps) => format!("open, {rps} {unit}s/s on a timetable"),
                None => "closed".to_string(),
            },
        );
        line("Measured", format!("{:.2} s", self.elapsed.as_secs_f64()));
        let units = match self.mode {
            Mode::Unary => "Calls",
            Mode::Stream { .. } => "Messages",
        };
        line(units, (self.ok + self.failed()).to_string());
        line(&format!("OK {unit}s"), self.ok.to_string());
        line("Failed", self.failed().to_string());
        if let Mode::Stream { .. } = self.mode {
            line("Streams OK", self.streams.to_string());
        }
        line(
            &format!("OK {unit}s/s"),
            format!("{:.1}", self.ok_per_sec()),
        );
        if self.missed > 0 {
            line("Missed", format!("{} (never sent)", self.missed));
        }
        let from = if self.rps.is_some() {
            "their scheduled time"
        } else {
            "their start"
        };
        let _ = writeln!(out, "\nLatency of OK {unit}s (from {from}):");
        let l = &self.latency;
        for (name, value) in [
            ("p50", l.p50),
            ("p90", l.p90),
            ("p99", l.p99),
            ("p99.9", l.p999),
            ("max", l.max),
            ("mean", l.mean),
        ] {
            let _ = writeln!(out, "  {name:<6} {}", human(value));
        }
        if let Some(lag) = &self.send_lag {
            let _ = writeln!(
                out,
                "\nSend lag (sent after the scheduled time): p50 {}, p99 {}, max {}",
                human(lag.p50),
                human(lag.p99),
                human(lag.max)
            );
        }
        let _ = writeln!(out, "\nStatus code distribution:");
        let _ = writeln!(out, "  [OK]  {}", self.ok);
        for (code, n) in &self.errors {
            let _ = writeln!(out, "  [{code}]  {n}");
        }
        if let Some(error) = &self.first_error {
            let _ = writeln!(out, "  first error: {error}");
        }
        out
    }

    /// One line of JSON: `mode`, `unit`, `rps` (null: closed loop), `concurrency`,
    /// `connections`, `ok`, `failed`, `errors` (code name → count), `first_error`,
    /// `streams`, `elapsed_s`, `ok_per_sec`, `latency` and `send_lag` (see
    /// [`Summary::to_json`]; `send_lag` null in a closed loop), `missed`.
    pub fn to_json(&self) -> String {
        let messages = match self.mode {
            Mode::Unary => None,
            Mode::Stream { messages } => Some(messages),
        };
        json!({
            "mode": self.mode.name(),
            "unit": self.mode.unit(),
            "messages_per_stream": messages,
            "rps": self.rps,
            "concurrency": self.concurrency,
            "connections": self.connections,
            "ok": self.ok,
            "failed": self.failed(),
            "errors": self.errors,
            "first_error": self.first_error,
            "streams": self.streams,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "ok_per_sec": self.ok_per_sec(),
            "latency": self.latency.to_json(),
            "send_lag": self.send_lag.map(|s| s.to_json()),
            "missed": self.missed,
        })
        .to_string()
    }

    /// Reads the report back from the last non-empty line of `output`.
    pub fn from_output(output: &str) -> Result<Self> {
        let line = output
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .ok_or_else(|| anyhow!("no output"))?;
        let v: Value = serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        let field = |name: &str| v.get(name).ok_or_else(|| anyhow!("no {name:?} in {line}"));
        let u64_of = |name: &str| -> Result<u64> {
            field(name)?
                .as_u64()
                .ok_or_else(|| anyhow!("{name:?} is not a count in {line}"))
        };
        let mode = match field("mode")?.as_str() {
            Some("unary") => Mode::Unary,
            Some("stream") => Mode::Stream {
                messages: u32::try_from(u64_of("messages_per_stream")?)?,
            },
            other => bail!("unknown mode {other:?} in {line}"),
        };
        let errors = field("errors")?
            .as_object()
            .ok_or_else(|| anyhow!("errors is not an object in {line}"))?
            .iter()
            .map(|(code, n)| Ok((code.clone(), n.as_u64().context("error count")?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        let send_lag = match field("send_lag")? {
            Value::Null => None,
            lag => Some(Summary::from_json(lag)?),
        };
        Ok(Self {
            mode,
            rps: field("rps")?.as_f64(),
            concurrency: usize::try_from(u64_of("concurrency")?)?,
            connections: usize::try_from(u64_of("connections")?)?,
            ok: u64_of("ok")?,
            errors,
            first_error: field("first_error")?.as_str().map(str::to_string),
            streams: u64_of("streams")?,
            elapsed: Duration::from_secs_f64(
                field("elapsed_s")?
                    .as_f64()
                    .ok_or_else(|| anyhow!("elapsed_s is not a number in {line}"))?,
            ),
            latency: Summary::from_json(field("latency")?)?,
            send_lag,
            missed: u64_of("missed")?,
        })
    }
}

// === impl Tally ===

impl Tally {
    fn error(&mut self, status: &Status) {
        *self.errors.entry(code_name(status.code())).or_default() += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!(
                "{}: {}",
                code_name(status.code()),
                status.message()
            ));
        }
    }
}

// === impl Worker ===

impl Worker {
    /// Closed loop: units back to back until `end`.
    async fn closed_loop(mut self, end: Instant) {
        while Instant::now() < end {
            let start = Instant::now();
            let outcome = self.unit().await;
            if !self.record(start, start, outcome) {
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
        self.finish_stream().await;
    }

    /// Open loop: the units of `schedule`, each at its due time, until none is left or
    /// `give_up`.
    async fn open_loop(mut self, schedule: Arc<Schedule>, give_up: Instant) {
        let mut timer = match HrTimer::new() {
            Ok(timer) => timer,
            Err(error) => {
                self.tally
                    .lock()
                    .expect("tally")
                    .error(&Status::internal(format!("timerfd: {error}")));
                return;
            }
        };
        while Instant::now() < give_up {
            let Some(due) = schedule.claim() else { break };
            if let Err(error) = timer.sleep_until(due).await {
                self.tally
                    .lock()
                    .expect("tally")
                    .error(&Status::internal(format!("timerfd: {error}")));
                return;
            }
            let sent = Instant::now();
            let outcome = self.unit().await;
            self.record(due, sent, outcome);
        }
        self.finish_stream().await;
    }

    /// Records a unit that was due (or started) at `due`, sent at `sent` and ended with
    /// `outcome`; whether it succeeded.
    fn record(&mut self, due: Instant, sent: Instant, outcome: Result<(), Status>) -> bool {
        let done = Instant::now();
        let mut tally = self.tally.lock().expect("tally");
        tally.sent += 1;
        let counted = due >= self.measure_from;
        if counted {
            tally.last_done = Some(tally.last_done.map_or(done, |last| last.max(done)));
        }
        match outcome {
            Ok(()) => {
                if counted {
                    tally.latency.record(done - due);
                    if self.opts.rps.is_some() {
                        tally.send_lag.record(sent.saturating_duration_since(due));
                    }
                }
                true
            }
            Err(status) => {
                if counted {
                    tally.error(&status);
                }
                false
            }
        }
    }

    /// One call, or one message of the open stream (opening it first, finishing it after
    /// its last message); bounded by the timeout.
    async fn unit(&mut self) -> Result<(), Status> {
        let timeout = self.opts.timeout;
        let outcome = tokio::time::timeout(timeout, async {
            match self.opts.mode {
                Mode::Unary => self.client.say(MESSAGE).await.map(drop),
                Mode::Stream { messages } => self.message(messages).await,
            }
        })
        .await;
        match outcome {
            Ok(outcome) => outcome,
            Err(_) => {
                // A stream left in an unknown state is dropped (reset), not reused.
                self.chat = None;
                Err(Status::deadline_exceeded(format!(
                    "no answer within {timeout:?} (client side)"
                )))
            }
        }
    }

    async fn message(&mut self, messages: u32) -> Result<(), Status> {
        let (chat, sent) = match &mut self.chat {
            Some(open) => open,
            None => self.chat.insert((self.client.chat().await?, 0)),
        };
        if let Err(status) = chat.say(MESSAGE).await {
            self.chat = None;
            return Err(status);
        }
        *sent += 1;
        if *sent >= messages {
            let (chat, _) = self.chat.take().expect("open");
            // A stream that answered every message but ended with an error counts once more,
            // by its status; the message itself was answered.
            match chat.finish().await {
                Ok(_) => self.tally.lock().expect("tally").streams += 1,
                Err(status) => self.tally.lock().expect("tally").error(&status),
            }
        }
        Ok(())
    }

    /// Ends a stream left open when the run ends (its messages were counted).
    async fn finish_stream(&mut self) {
        if let Some((chat, _)) = self.chat.take() {
            let _ = tokio::time::timeout(self.opts.timeout, chat.finish()).await;
        }
    }
}

// === functions ===

/// Runs the load on the current tokio runtime (a current-thread one: the generator is meant
/// to be pinned to one CPU).
pub async fn run(opts: &Options) -> Result<Report> {
    let mut clients = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections {
        let client = EchoClient::connect(&opts.target)
            .await
            .with_context(|| format!("connecting to {}", opts.target))?;
        clients.push(client);
    }
    let opts = Arc::new(opts.clone());
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let measure_from = start + opts.warmup;
    let end = measure_from + opts.duration;
    let schedule = opts
        .rps
        .map(|rps| Arc::new(Schedule::new(start, rps, opts.warmup + opts.duration)));
    let workers: Vec<_> = (0..opts.concurrency)
        .map(|i| {
            let worker = Worker {
                client: clients[i % clients.len()].clone(),
                opts: opts.clone(),
                tally: tally.clone(),
                measure_from,
                chat: None,
            };
            match &schedule {
                Some(schedule) => {
                    tokio::spawn(worker.open_loop(schedule.clone(), end + OPEN_LOOP_DRAIN))
                }
                None => tokio::spawn(worker.closed_loop(end)),
            }
        })
        .collect();
    for worker in workers {
        worker.await.context("a worker panicked")?;
    }
    let tally = tally.lock().expect("tally");
    let missed = schedule
        .as_ref()
        .map_or(0, |s| s.sends().saturating_sub(tally.sent));
    Ok(Report {
        mode: opts.mode,
        rps: opts.rps,
        concurrency: opts.concurrency,
        connections: opts.connections,
        ok: tally.latency.len(),
        errors: tally
            .errors
            .iter()
            .map(|(code, n)| (code.to_string(), *n))
            .collect(),
        first_error: tally.first_error.clone(),
        streams: tally.streams,
        elapsed: tally.last_done.map_or(Duration::ZERO, |last| {
            last.saturating_duration_since(measure_from)
        }),
        latency: tally.latency.summary(),
        send_lag: opts.rps.map(|_| tally.send_lag.summary()),
        missed,
    })
}

/// The canonical name of a gRPC status code, as in `grpc-status` documentation.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `320.1 µs` under a millisecond, `1.50 ms` above.
fn human(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_nanos() as f64 / 1e3)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options> {
        Options::parse(args.iter().map(|a| a.to_string())).map(|o| o.expect("not --help"))
    }

    #[test]
    fn options() {
        let o = parse(&["127.0.0.1:1"]).unwrap();
        assert_eq!(o.mode, Mode::Unary);
        assert_eq!((o.concurrency, o.connections, o.rps), (50, 10, None));
        assert_eq!(
            (o.duration, o.warmup),
            (Duration::from_secs(10), Duration::ZERO)
        );
        let o = parse(&[
            "--stream",
            "--messages=4",
            "--rps",
            "2500",
            "--concurrency",
            "8",
            "--connections=2",
            "--duration",
            "0.5",
            "--warmup",
            "1",
            "http://127.0.0.1:1",
        ])
        .unwrap();
        assert_eq!(o.mode, Mode::Stream { messages: 4 });
        assert_eq!((o.concurrency, o.connections, o.rps), (8, 2, Some(2500.0)));
        assert_eq!(o.duration, Duration::from_millis(500));
        assert_eq!(o.target, "http://127.0.0.1:1");
        assert!(parse(&[]).is_err());
        assert!(parse(&["a:1", "b:1"]).is_err());
        assert!(parse(&["--rps", "0", "a:1"]).is_err());
        assert!(parse(&["--concurrency", "1.5", "a:1"]).is_err());
        assert!(parse(&["--bogus", "1", "a:1"]).is_err());
        assert!(Options::parse(["--help".to_string()]).unwrap().is_none());
    }

    async fn load(mode: Mode, rps: Option<f64>) -> Report {
        let (addr, mut server) =
            ringlink_integration::grpc::serve("127.0.0.1:0".parse().unwrap()).await;
        server.requests.close();
        let opts = Options {
            target: addr.to_string(),
            mode,
            concurrency: 4,
            connections: 2,
            rps,
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(100),
            timeout: Duration::from_secs(5),
        };
        let report = run(&opts).await.unwrap();
        server.abort();
        report
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_closed_loop_of_unary_calls() {
        let report = rt().block_on(load(Mode::Unary, None));
        assert!(report.ok > 0, "{report:?}");
        assert!(report.errors.is_empty(), "{report:?}");
        assert_eq!(report.latency.count, report.ok);
        assert!(report.send_lag.is_none());
        assert!(report.elapsed >= Duration::from_millis(300), "{report:?}");
        let text = report.text("x");
        assert!(text.contains("[OK]"), "{text}");
        // The last line is the JSON, and reads back as the same report (durations are
        // rounded to nanoseconds both ways).
        let output = format!("{text}{}\n", report.to_json());
        let back = Report::from_output(&output).unwrap();
        assert_eq!(back.ok, report.ok);
        assert_eq!(back.latency, report.latency);
        assert_eq!(back.mode, report.mode);
    }

    #[test]
    fn an_open_loop_of_stream_messages_keeps_its_timetable() {
        let report = rt().block_on(load(Mode::Stream { messages: 3 }, Some(1000.0)));
        // 300 ms measured at 1000/s: 300 messages, give or take the boundary.
        assert!((295..=305).contains(&report.ok), "{report:?}");
        assert!(report.errors.is_empty(), "{report:?}");
        assert_eq!(report.missed, 0);
        assert!(report.streams > 0);
        let lag = report.send_lag.unwrap();
        assert_eq!(lag.count, report.ok);
        let back = Report::from_output(&report.to_json()).unwrap();
        assert_eq!(back.mode, Mode::Stream { messages: 3 });
        assert_eq!(back.send_lag, Some(lag));
        assert_eq!(back.rps, Some(1000.0));
    }

    #[test]
    fn errors_are_counted_by_code() {
        let mut tally = Tally::default();
        tally.error(&Status::unavailable("down"));
        tally.error(&Status::unavailable("down again"));
        tally.error(&Status::internal("oops"));
        assert_eq!(tally.errors.get("UNAVAILABLE"), Some(&2));
        assert_eq!(tally.errors.get("INTERNAL"), Some(&1));
        assert_eq!(tally.first_error.as_deref(), Some("UNAVAILABLE: down"));
        assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
    }
}
