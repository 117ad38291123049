//! Command-line options of `ringlink-bench`.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};

use crate::proxy::ProxyKind;

pub const USAGE: &str = "\
usage: ringlink-bench [OPTIONS]

  --only NAME[,NAME]   proxies to measure, in order (default: all):
                       direct, ref-tokio, ringlink-monoio, ringlink-glommio
  --duration SECS      length of each measured wrk run (default 10)
  --connections N      wrk keep-alive connections (default 50)
  --bulk-mb MIB        MiB sent through each proxy in the bulk test (default 1024)
  --ringlink PATH      ringlink binary (default: `ringlink` next to this binary,
                       i.e. target/release/ringlink)
  -h, --help           print this help";

pub struct Options {
    pub proxies: Vec<ProxyKind>,
    pub duration_secs: u32,
    pub connections: u32,
    pub bulk_mib: u64,
    pub ringlink: PathBuf,
}

// === impl Options ===

impl Options {
    /// Parses `args` (without the program name); `Ok(None)` means help was asked for.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Self>> {
        let mut opts = Options {
            proxies: ProxyKind::ALL.to_vec(),
            duration_secs: 10,
            connections: 50,
            bulk_mib: 1024,
            ringlink: default_ringlink()?,
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
                "--only" => opts.proxies = parse_proxies(&value)?,
                "--duration" => opts.duration_secs = number(&flag, &value)?,
                "--connections" => opts.connections = number(&flag, &value)?,
                "--bulk-mb" => opts.bulk_mib = number(&flag, &value)?,
                "--ringlink" => opts.ringlink = PathBuf::from(value),
                _ => bail!("unknown option {flag}\n\n{USAGE}"),
            }
        }
        Ok(Some(opts))
    }
}

fn parse_proxies(list: &str) -> Result<Vec<ProxyKind>> {
    let proxies = list
        .split(',')
        .map(|name| {
            ProxyKind::from_name(name.trim()).ok_or_else(|| {
                let known: Vec<_> = ProxyKind::ALL.iter().map(|k| k.name()).collect();
                anyhow!(
                    "unknown proxy {name:?}: expected one of {}",
                    known.join(", ")
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if proxies.is_empty() {
        bail!("--only needs at least one proxy");
    }
    Ok(proxies)
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
