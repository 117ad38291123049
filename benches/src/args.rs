//! Command-line options of `ringlink-bench`.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};

use crate::outbound_policy::OutboundPolicyRow;
use crate::policy::PolicyRow;
use crate::proxy::ProxyKind;

pub const USAGE: &str = "\
usage: ringlink-bench [OPTIONS]

  --tests NAME[,NAME]  tests to run, in order (default: all): http1, h2, grpc
                       (ringlink-grpc-load, unary gRPC calls, closed loop),
                       latency (HTTP/1.1 at a fixed rate, open loop: latency
                       percentiles and what each proxy adds over direct), bulk,
                       mesh (two ringlinks meshed, mTLS against plaintext; runs
                       for each ringlink runtime in --only), policy (inbound
                       policy enforcement: 50 routes x 20 authorizations against
                       the default all-unauthenticated policy; for each ringlink
                       runtime in --only), outbound-policy (outbound policy
                       routing: 20 HTTP routes, retries enabled, against plain
                       balancing by name; for each ringlink runtime in --only),
                       tap (the tap API: disabled, idle, an Observe call
                       matching none of the load, one matching all of it; for
                       each ringlink runtime in --only), idle (RSS per idle
                       HTTP/1 keep-alive and L4 connection, 5,000 of each)
  --only NAME[,NAME]   proxies to measure, in order (default: all):
                       direct, ref-tokio, ringlink-monoio, ringlink-monoio-balanced
                       (through a Destination-service balancer; http1 only),
                       ringlink-glommio, ringlink-monoio-copy (opaque TCP
                       copied, not spliced; bulk only), nginx,
                       haproxy (nginx and haproxy are skipped if not installed)
  --duration SECS      length of each measured wrk, h2load, grpc and latency run
                       (default 10)
  --connections N      wrk keep-alive connections (default 50)
  --h2-connections N   h2load connections (default 10)
  --h2-streams N       h2load concurrent streams per connection (default 10)
  --grpc-concurrency N gRPC calls in flight in the grpc test (default 50)
  --grpc-connections N HTTP/2 connections they are spread over (default 10)
  --latency-rps R      requests per second in the latency test (default 5000)
  --latency-connections N
                       connections of the latency test, each with one request
                       in flight at most (default 50)
  --bulk-mb MIB        MiB sent through each proxy in the bulk test (default 1024)
  --policy-rows NAME[,NAME]
                       rows of the policy test, in order (default: direct,
                       default, policy-50x20; also default-controller: the
                       default policy with a silent policy controller)
  --policy-rounds N    measure the policy test's rows N times, even rounds in
                       reverse order (default 1); ratios of the means
  --outbound-policy-rows NAME[,NAME]
                       rows of the outbound-policy test, in order (default:
                       direct, balanced, policy-20)
  --outbound-policy-rounds N
                       measure the outbound-policy test's rows N times, even
                       rounds in reverse order (default 1); ratios of the means
  --ringlink PATH      ringlink binary (default: `ringlink` next to this binary,
                       i.e. target/release/ringlink)
  --metrics-cost N     instead of the tests: N rounds of the http1 load through each
                       ringlink in --only, with metrics recording on and with
                       RINGLINK_METRICS_RECORDING=off, alternating; CPU µs/request of
                       each and the difference
  --soak MINUTES       instead of the tests: each ringlink runtime in --only under
                       connection churn for MINUTES (decimals allowed), checked for
                       RSS growth and fds and connections left open (soak.rs)
  --soak-csv PATH      write the soak's per-second samples to PATH (CSV)
  --soak-kinds NAME[,NAME]
                       the soak's churn (default: all): churn, keepalive, h2, ws,
                       reset-request, reset-response, slow-reader
  -h, --help           print this help";

/// One kind of load; each is one table of the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Test {
    /// wrk, HTTP/1.1 keep-alive request/response.
    Http1,
    /// h2load, h2c (prior-knowledge HTTP/2) request/response.
    H2,
    /// `ringlink-grpc-load`, unary gRPC calls to `ringlink.test.Echo`, closed loop.
    Grpc,
    /// HTTP/1.1 at a fixed request rate (open loop, the bench's own client): latency
    /// percentiles, and what each proxy adds to direct's.
    Latency,
    /// One connection streaming MiBs into a sink (not HTTP).
    Bulk,
    /// Two ringlink proxies meshed (outbound → inbound), mTLS against plaintext: wrk through
    /// the pair, full handshakes against the inbound proxy, idle connections' memory.
    Mesh,
    /// Inbound policy enforcement: ringlink's inbound port with a policy of 50 routes and 20
    /// authorizations each against the default all-unauthenticated policy, loaded by the
    /// bench's own client from 127.0.0.2 (`policy.rs`).
    Policy,
    /// Outbound policy routing: ringlink's outbound port with an outbound policy of 20 HTTP
    /// routes (the load's last, retries enabled) against plain balancing by name, both
    /// through the mock controller (`outbound_policy.rs`).
    OutboundPolicy,
    /// Linkerd's tap API: a certified ringlink without tap, with tap and nobody tapping, with
    /// an `Observe` call that matches none of the load and one that matches all of it,
    /// loaded by the bench's own client (`tap.rs`).
    Tap,
    /// Idle connections: each proxy's RSS growth per idle HTTP/1 keep-alive and L4
    /// connection (`idle.rs`).
    Idle,
}

pub struct Options {
    pub tests: Vec<Test>,
    pub proxies: Vec<ProxyKind>,
    pub duration_secs: u32,
    pub connections: u32,
    pub h2_connections: u32,
    pub h2_streams: u32,
    pub grpc_concurrency: u32,
    pub grpc_connections: u32,
    pub latency_rps: u32,
    pub latency_connections: u32,
    pub bulk_mib: u64,
    /// The rows of the policy test, in the order they are measured.
    pub policy_rows: Vec<PolicyRow>,
    /// How many times the policy test measures its rows (even rounds in reverse order).
    pub policy_rounds: u32,
    /// The rows of the outbound-policy test, in the order they are measured.
    pub outbound_policy_rows: Vec<OutboundPolicyRow>,
    /// How many times the outbound-policy test measures its rows (even rounds in reverse
    /// order).
    pub outbound_policy_rounds: u32,
    pub ringlink: PathBuf,
    /// `--metrics-cost N`: rounds of the recording on/off comparison, instead of the tests.
    pub metrics_cost_rounds: Option<u32>,
    /// `--soak MINUTES`, `--soak-csv`, `--soak-kinds`: the soak, instead of the tests.
    pub soak: crate::soak::SoakOptions,
}

// === impl Test ===

impl Test {
    pub const ALL: [Self; 10] = [
        Self::Http1,
        Self::H2,
        Self::Grpc,
        Self::Latency,
        Self::Bulk,
        Self::Mesh,
        Self::Policy,
        Self::OutboundPolicy,
        Self::Tap,
        Self::Idle,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::H2 => "h2",
            Self::Grpc => "grpc",
            Self::Latency => "latency",
            Self::Bulk => "bulk",
            Self::Mesh => "mesh",
            Self::Policy => "policy",
            Self::OutboundPolicy => "outbound-policy",
            Self::Tap => "tap",
            Self::Idle => "idle",
        }
    }
}

// === impl Options ===

impl Options {
    /// Parses `args` (without the program name); `Ok(None)` means help was asked for.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Self>> {
        let mut opts = Options {
            tests: Test::ALL.to_vec(),
            proxies: ProxyKind::ALL.to_vec(),
            duration_secs: 10,
            connections: 50,
            h2_connections: 10,
            h2_streams: 10,
            grpc_concurrency: 50,
            grpc_connections: 10,
            latency_rps: 5000,
            latency_connections: 50,
            bulk_mib: 1024,
            policy_rows: PolicyRow::DEFAULT.to_vec(),
            policy_rounds: 1,
            outbound_policy_rows: OutboundPolicyRow::DEFAULT.to_vec(),
            outbound_policy_rounds: 1,
            ringlink: default_ringlink()?,
            metrics_cost_rounds: None,
            soak: Default::default(),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
                None => (arg, None),
            };
            if flag == "-h" || flag == "--help" {
                return Ok(None);
            }
            let value = inline
                .or_else(|| args.next())
                .ok_or_else(|| anyhow!("{flag} needs a value\n\n{USAGE}"))?;
            match flag.as_str() {
                "--tests" => opts.tests = parse_list(&flag, &value, &Test::ALL, Test::name)?,
                "--only" => {
                    opts.proxies = parse_list(&flag, &value, &ProxyKind::ALL, ProxyKind::name)?
                }
                "--duration" => opts.duration_secs = positive(&flag, &value)?,
                "--connections" => opts.connections = positive(&flag, &value)?,
                "--h2-connections" => opts.h2_connections = positive(&flag, &value)?,
                "--h2-streams" => opts.h2_streams = positive(&flag, &value)?,
                "--grpc-concurrency" => opts.grpc_concurrency = positive(&flag, &value)?,
                "--grpc-connections" => opts.grpc_connections = positive(&flag, &value)?,
                "--latency-rps" => opts.latency_rps = positive(&flag, &value)?,
                "--latency-connections" => opts.latency_connections = positive(&flag, &value)?,
                "--bulk-mb" => opts.bulk_mib = number(&flag, &value)?,
                "--policy-rounds" => opts.policy_rounds = positive(&flag, &value)?,
                "--policy-rows" => {
                    opts.policy_rows = parse_list(&flag, &value, &PolicyRow::ALL, PolicyRow::name)?
                }
                "--outbound-policy-rounds" => {
                    opts.outbound_policy_rounds = positive(&flag, &value)?
                }
                "--outbound-policy-rows" => {
                    opts.outbound_policy_rows = parse_list(
                        &flag,
                        &value,
                        &OutboundPolicyRow::ALL,
                        OutboundPolicyRow::name,
                    )?
                }
                "--ringlink" => opts.ringlink = PathBuf::from(value),
                "--metrics-cost" => opts.metrics_cost_rounds = Some(positive(&flag, &value)?),
                soak if soak.starts_with("--soak") => opts.soak.set(soak, &value)?,
                _ => bail!("unknown option {flag}\n\n{USAGE}"),
            }
        }
        Ok(Some(opts))
    }
}

/// A comma-separated list of names out of `all`, kept in the order given.
fn parse_list<T: Copy + PartialEq>(
    flag: &str,
    list: &str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<Vec<T>> {
    let mut items = Vec::new();
    for given in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let item = all
            .iter()
            .copied()
            .find(|&item| name(item) == given)
            .ok_or_else(|| {
                let known: Vec<_> = all.iter().map(|&item| name(item)).collect();
                anyhow!(
                    "{flag}: unknown name {given:?}: expected one of {}",
                    known.join(", ")
                )
            })?;
        if !items.contains(&item) {
            items.push(item);
        }
    }
    if items.is_empty() {
        bail!("{flag} needs at least one name");
    }
    Ok(items)
}

fn positive(flag: &str, value: &str) -> Result<u32> {
    match number(flag, value)? {
        0 => bail!("{flag} must be at least 1"),
        n => Ok(n),
    }
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    value
        .parse()
        .with_context(|| format!("{flag} expects a number, got {value:?}"))
}

fn default_ringlink() -> Result<PathBuf> {
    Ok(crate::process::exe_dir()?.join("ringlink"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options> {
        Options::parse(args.iter().map(|a| a.to_string())).map(|o| o.expect("not --help"))
    }

    #[test]
    fn defaults_run_everything() {
        let opts = parse(&[]).unwrap();
        assert_eq!(opts.tests, Test::ALL);
        assert_eq!(opts.proxies, ProxyKind::ALL);
    }

    #[test]
    fn lists_keep_order_and_drop_repeats() {
        let opts = parse(&["--tests", "bulk,h2,bulk", "--only=nginx,direct"]).unwrap();
        assert_eq!(opts.tests, [Test::Bulk, Test::H2]);
        assert_eq!(opts.proxies, [ProxyKind::Nginx, ProxyKind::Direct]);
        assert!(parse(&["--tests", "http3"]).is_err());
        assert!(parse(&["--tests", ","]).is_err());
        assert!(parse(&["--duration", "0"]).is_err());
    }

    #[test]
    fn policy_rows_in_the_order_given() {
        assert_eq!(parse(&[]).unwrap().policy_rows, PolicyRow::DEFAULT);
        let opts = parse(&["--policy-rows", "policy-50x20,default"]).unwrap();
        assert_eq!(opts.policy_rows, [PolicyRow::Policy, PolicyRow::Default]);
        assert!(parse(&["--policy-rows", "policy"]).is_err());
        assert_eq!(parse(&[]).unwrap().policy_rounds, 1);
        assert_eq!(parse(&["--policy-rounds=3"]).unwrap().policy_rounds, 3);
        assert!(parse(&["--policy-rounds", "0"]).is_err());
    }

    #[test]
    fn outbound_policy_rows_in_the_order_given() {
        let opts = parse(&["--tests", "outbound-policy"]).unwrap();
        assert_eq!(opts.tests, [Test::OutboundPolicy]);
        assert_eq!(opts.outbound_policy_rows, OutboundPolicyRow::DEFAULT);
        let opts = parse(&["--outbound-policy-rows", "policy-20,balanced"]).unwrap();
        assert_eq!(
            opts.outbound_policy_rows,
            [OutboundPolicyRow::Policy, OutboundPolicyRow::Balanced]
        );
        assert!(parse(&["--outbound-policy-rows", "policy-50x20"]).is_err());
        assert_eq!(opts.outbound_policy_rounds, 1);
        let opts = parse(&["--outbound-policy-rounds=3"]).unwrap();
        assert_eq!(opts.outbound_policy_rounds, 3);
        assert!(parse(&["--outbound-policy-rounds", "0"]).is_err());
    }

    #[test]
    fn grpc_and_latency_options() {
        let opts = parse(&["--tests", "grpc,latency"]).unwrap();
        assert_eq!(opts.tests, [Test::Grpc, Test::Latency]);
        assert_eq!((opts.grpc_concurrency, opts.grpc_connections), (50, 10));
        assert_eq!((opts.latency_rps, opts.latency_connections), (5000, 50));
        let opts = parse(&[
            "--grpc-concurrency=8",
            "--grpc-connections",
            "2",
            "--latency-rps",
            "1000",
            "--latency-connections=20",
        ])
        .unwrap();
        assert_eq!((opts.grpc_concurrency, opts.grpc_connections), (8, 2));
        assert_eq!((opts.latency_rps, opts.latency_connections), (1000, 20));
        assert!(parse(&["--latency-rps", "0"]).is_err());
    }

    #[test]
    fn metrics_cost_rounds() {
        assert_eq!(parse(&[]).unwrap().metrics_cost_rounds, None);
        let opts = parse(&["--metrics-cost", "3"]).unwrap();
        assert_eq!(opts.metrics_cost_rounds, Some(3));
        assert!(parse(&["--metrics-cost", "0"]).is_err());
        assert!(parse(&["--metrics-cost"]).is_err());
    }
}
