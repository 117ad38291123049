//! `ringlink-tap`: watches live requests through a proxy from a terminal, one line per tap
//! event as `linkerd viz tap` prints them, by calling Linkerd's tap API
//! (`io.linkerd.proxy.tap.Tap/Observe`) on the proxy's control port.
//!
//! Plaintext is accepted by the proxy from loopback only; from elsewhere, pass a mesh
//! identity (`--cert`, `--key`, `--trust-anchors`, `--server-name`) to connect with mTLS.
//!
//! ```text
//! $ ringlink-tap --path-prefix /api 127.0.0.1:4190
//! req id=0:1 proxy=in  src=10.0.0.1:53000 dst=10.0.0.2:8080 tls=true :method=GET :authority=web:8080 :path=/api
//! rsp id=0:1 proxy=in  src=10.0.0.1:53000 dst=10.0.0.2:8080 tls=true :status=200 latency=1234µs
//! end id=0:1 proxy=in  src=10.0.0.1:53000 dst=10.0.0.2:8080 tls=true duration=66µs response-length=512B
//! ```
//!
//! Exit status: 0 when the proxy ends the stream (after `--limit` requests), 1 on a gRPC
//! error, 64 on bad arguments, 69 when the proxy cannot be reached.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use ringlink_integration::tap::{self, Event, Observe};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

const USAGE: &str = "\
usage: ringlink-tap [OPTIONS] ADDR

Watches live requests through a proxy: Linkerd's tap API on the proxy's control port
ADDR (host:port), one line per event as `linkerd viz tap` prints them. Stops after
--limit requests, when the proxy ends the stream.

Connection (without these, plaintext, which the proxy accepts from loopback only):
  --cert FILE           mesh mTLS with this certificate chain (PEM, leaf first)
  --key FILE            its private key, PKCS#8, PEM or DER (a Linkerd identity
                        directory's key.p8 is DER)
  --trust-anchors FILE  the mesh's trust anchors (PEM)
  --server-name NAME    the proxy's identity: its certificate must be valid for
                        NAME, which is also sent as SNI
Matches (a request is tapped when all hold):
  --path-prefix P       the path starts with P
  --method M            the method is M (case-sensitive: GET, POST, ...)
  --authority A         the authority is A exactly
  --port N              the destination port is N
Output:
  --limit N             tap at most N requests (default 100)
  --headers             also print each event's headers and trailers, indented
  -h, --help            print this help

Exit status: 0 when the stream ends, 1 on a gRPC error, 64 on bad arguments,
69 when the proxy cannot be reached.";

/// sysexits.h: EX_USAGE, EX_UNAVAILABLE.
const EX_USAGE: u8 = 64;
const EX_UNAVAILABLE: u8 = 69;

/// The command line, checked.
struct Options {
    addr: String,
    tls: Option<TlsFiles>,
    limit: u32,
    path_prefix: Option<String>,
    method: Option<String>,
    authority: Option<String>,
    port: Option<u16>,
    headers: bool,
}

/// The mesh identity to connect with.
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    trust_anchors: PathBuf,
    server_name: ServerName<'static>,
}

fn main() -> ExitCode {
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_error(&e),
    };
    let tls = match &opts.tls {
        None => None,
        Some(files) => match files.load() {
            Ok(config) => Some((config, files.server_name.clone())),
            Err(e) => return usage_error(&e),
        },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ringlink-tap: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(&opts, tls))
}

/// Connects, asks for the events and prints them until the stream ends.
async fn run(
    opts: &Options,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
) -> ExitCode {
    let addr = match resolve(&opts.addr).await {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("ringlink-tap: cannot resolve {}: {e}", opts.addr);
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let mut client = match tap::connect(addr, tls).await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("ringlink-tap: cannot connect to {addr}: {}", causes(&e));
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let mut stream = match client.observe(opts.request()).await {
        Ok(response) => response.into_inner(),
        Err(status) => return grpc_error(&status),
    };
    loop {
        let event = match stream.message().await {
            Ok(Some(event)) => Event::from(event),
            Ok(None) => return ExitCode::SUCCESS,
            Err(status) => return grpc_error(&status),
        };
        if let Err(e) = print(&event, opts.headers) {
            // A closed pipe (`| head`) is a reader that has seen enough.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("ringlink-tap: cannot write: {e}");
            return ExitCode::FAILURE;
        }
    }
}

/// The event's line, then its headers and trailers (when extracted) indented below.
fn print(event: &Event, headers: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{event}")?;
    if headers {
        for (name, value) in event.headers.iter().chain(&event.trailers) {
            writeln!(out, "    {name}: {}", value.escape_ascii())?;
        }
    }
    out.flush()
}

async fn resolve(addr: &str) -> std::io::Result<SocketAddr> {
    tokio::net::lookup_host(addr).await?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no address for this name")
    })
}

fn grpc_error(status: &tonic::Status) -> ExitCode {
    let code = u32::try_from(i32::from(status.code())).unwrap_or(2);
    eprintln!(
        "ringlink-tap: {}: {}",
        tap::grpc_code_name(code),
        status.message()
    );
    ExitCode::FAILURE
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("ringlink-tap: {message}\n(ringlink-tap --help prints the usage)");
    ExitCode::from(EX_USAGE)
}

/// An error and its sources, `: `-separated (tonic's transport error alone says little),
/// skipping a source that only repeats its wrapper.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(e) = source {
        let cause = e.to_string();
        if !text.ends_with(&cause) {
            text = format!("{text}: {cause}");
        }
        source = e.source();
    }
    text
}

// === impl Options ===

impl Options {
    /// Parses `args` (without the program name); `Ok(None)` means help was asked for.
    /// Options take their value as the next argument or after `=`.
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
        let mut addr = None;
        let (mut cert, mut key, mut trust_anchors, mut server_name) = (None, None, None, None);
        let mut opts = Options {
            addr: String::new(),
            tls: None,
            limit: 100,
            path_prefix: None,
            method: None,
            authority: None,
            port: None,
            headers: false,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if !arg.starts_with('-') {
                if let Some(first) = addr.replace(arg) {
                    return Err(format!("one ADDR expected, got {first:?} and more"));
                }
                continue;
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
                None => (arg, None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "-h" | "--help" => return Ok(None),
                "--headers" if inline.is_none() => opts.headers = true,
                "--headers" => return Err("--headers takes no value".to_string()),
                "--cert" => cert = Some(PathBuf::from(value()?)),
                "--key" => key = Some(PathBuf::from(value()?)),
                "--trust-anchors" => trust_anchors = Some(PathBuf::from(value()?)),
                "--server-name" => {
                    let name = value()?;
                    let parsed = ServerName::try_from(name.clone())
                        .map_err(|_| format!("--server-name {name:?} is not a DNS name"))?;
                    server_name = Some(parsed);
                }
                "--path-prefix" => opts.path_prefix = Some(value()?),
                "--method" => {
                    let method = value()?;
                    if http::Method::from_bytes(method.as_bytes()).is_err() {
                        return Err(format!("--method {method:?} is not an HTTP method"));
                    }
                    opts.method = Some(method);
                }
                "--authority" => opts.authority = Some(value()?),
                "--port" => opts.port = Some(positive(&flag, &value()?, "a port number")?),
                "--limit" => opts.limit = positive(&flag, &value()?, "a number of requests")?,
                _ => return Err(format!("unknown option {flag}")),
            }
        }
        opts.addr = addr.ok_or("ADDR (the proxy's control port, host:port) is missing")?;
        match opts.addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return Err(format!("ADDR {:?} is not host:port", opts.addr)),
        }
        opts.tls = match (cert, key, trust_anchors, server_name) {
            (None, None, None, None) => None,
            (Some(cert), Some(key), Some(trust_anchors), Some(server_name)) => Some(TlsFiles {
                cert,
                key,
                trust_anchors,
                server_name,
            }),
            (cert, key, anchors, name) => {
                let missing: Vec<&str> = [
                    ("--cert", cert.is_none()),
                    ("--key", key.is_none()),
                    ("--trust-anchors", anchors.is_none()),
                    ("--server-name", name.is_none()),
                ]
                .into_iter()
                .filter_map(|(flag, missing)| missing.then_some(flag))
                .collect();
                return Err(format!(
                    "mTLS needs --cert, --key, --trust-anchors and --server-name: {} missing",
                    missing.join(", ")
                ));
            }
        };
        Ok(Some(opts))
    }

    /// The `ObserveRequest` for the matches given.
    fn request(&self) -> linkerd2_proxy_api::tap::ObserveRequest {
        let mut observe = Observe::new(self.limit).headers(self.headers);
        if let Some(prefix) = &self.path_prefix {
            observe = observe.path_prefix(prefix);
        }
        if let Some(method) = &self.method {
            observe = observe.method(method);
        }
        if let Some(authority) = &self.authority {
            observe = observe.authority(authority);
        }
        if let Some(port) = self.port {
            observe = observe.destination_port(port);
        }
        observe.build()
    }
}

/// A number of at least 1 that fits `T`.
fn positive<T: std::str::FromStr + Default + PartialEq>(
    flag: &str,
    value: &str,
    what: &str,
) -> Result<T, String> {
    match value.parse::<T>() {
        Ok(n) if n != T::default() => Ok(n),
        _ => Err(format!("{flag} expects {what} (at least 1), got {value:?}")),
    }
}

// === impl TlsFiles ===

impl TlsFiles {
    /// The mTLS client configuration; errors name the option whose file is unusable.
    fn load(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let pem = read("--cert", &self.cert)?;
        let chain = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("--cert {}: not PEM: {e}", self.cert.display()))?;
        if chain.is_empty() {
            return Err(format!("--cert {}: no certificate", self.cert.display()));
        }

        let bytes = read("--key", &self.key)?;
        let key = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            PrivateKeyDer::from_pem_slice(&bytes)
                .map_err(|e| format!("--key {}: no private key: {e}", self.key.display()))?
        } else {
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(bytes))
        };

        let pem = read("--trust-anchors", &self.trust_anchors)?;
        let mut anchors = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let anchor = self.trust_anchors.display();
            let cert = cert.map_err(|e| format!("--trust-anchors {anchor}: not PEM: {e}"))?;
            anchors
                .add(cert)
                .map_err(|e| format!("--trust-anchors {anchor}: not a CA certificate: {e}"))?;
        }
        if anchors.is_empty() {
            let anchor = self.trust_anchors.display();
            return Err(format!("--trust-anchors {anchor}: no certificate"));
        }

        tap::client_config(chain, key, anchors).map_err(|e| {
            let (cert, key) = (self.cert.display(), self.key.display());
            format!("--cert {cert} with --key {key}: {e}")
        })
    }
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}
