//! Name resolution for shards: the first shard → control request path (DESIGN.md §2).
//!
//! A shard sends a [`DnsRequest`] over a bounded `mpsc` ([`DnsTx`]) with a `oneshot` for the
//! answer; the control thread resolves it with hickory (the system's `resolv.conf` and hosts
//! file) and answers with every address and how long the answer may be cached (the record's
//! TTL, clamped to `[min_ttl, max_ttl]`). Shards cache answers, so a request crosses threads
//! once per name per TTL, never per HTTP request. Both channel types are tokio's `sync`
//! channels, which need no tokio runtime on the shard side.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use tokio::sync::{mpsc, oneshot};

/// How many requests may wait for the resolver; a shard that finds the queue full fails
/// that request instead of waiting.
pub const DNS_QUEUE_CAPACITY: usize = 1024;

// === types ===

/// A name to resolve, and where to send the answer (crosses threads).
#[derive(Debug)]
pub struct DnsRequest {
    pub name: String,
    pub reply: oneshot::Sender<Result<Resolution, String>>,
}

/// The addresses a name resolved to and until when they are valid.
#[derive(Clone, Debug)]
pub struct Resolution {
    pub addrs: Vec<IpAddr>,
    pub valid_until: Instant,
}

/// A shard's handle for sending [`DnsRequest`]s.
pub type DnsTx = mpsc::Sender<DnsRequest>;

/// Bounds on how long answers are cached (`LINKERD2_PROXY_DNS_MIN_TTL` / `_MAX_TTL`).
#[derive(Clone, Copy, Debug)]
pub struct DnsTtl {
    pub min: Duration,
    pub max: Duration,
}

// === functions ===

/// The channel shards send on and the receiver [`serve`] drains.
pub fn channel() -> (DnsTx, mpsc::Receiver<DnsRequest>) {
    mpsc::channel(DNS_QUEUE_CAPACITY)
}

/// Answers requests until every sender is gone. Runs on the control thread's runtime; each
/// lookup runs as its own task so that a slow name does not hold up the others.
pub async fn serve(
    mut requests: mpsc::Receiver<DnsRequest>,
    ttl: DnsTtl,
    resolver: Result<TokioResolver, String>,
) {
    let resolver = match resolver {
        Ok(resolver) => resolver,
        Err(error) => {
            tracing::warn!(%error, "No system DNS configuration; names cannot be resolved");
            while let Some(request) = requests.recv().await {
                let _ = request
                    .reply
                    .send(Err(format!("no DNS configuration: {error}")));
            }
            return;
        }
    };
    while let Some(request) = requests.recv().await {
        let resolver = resolver.clone();
        tokio::spawn(async move {
            let answer = lookup(&resolver, &request.name, ttl).await;
            if let Err(error) = &answer {
                tracing::debug!(name = %request.name, %error, "DNS lookup failed");
            }
            let _ = request.reply.send(answer);
        });
    }
}

/// The resolver: the system's configuration, or `nameservers` (`RINGLINK_DNS_NAMESERVERS`)
/// when given. Must be called inside the control thread's runtime.
pub fn resolver(nameservers: &[SocketAddr]) -> Result<TokioResolver, String> {
    if nameservers.is_empty() {
        return TokioResolver::builder_tokio()
            .map(|builder| builder.build())
            .map_err(|error| error.to_string());
    }
    let mut config = ResolverConfig::new();
    for addr in nameservers {
        config.add_name_server(NameServerConfig::new(*addr, Protocol::Udp));
        config.add_name_server(NameServerConfig::new(*addr, Protocol::Tcp));
    }
    Ok(TokioResolver::builder_with_config(config, TokioConnectionProvider::default()).build())
}

/// Every address of `name` and how long they may be used (TTL clamped by `ttl`).
pub async fn lookup(
    resolver: &TokioResolver,
    name: &str,
    ttl: DnsTtl,
) -> Result<Resolution, String> {
    let lookup = resolver
        .lookup_ip(name)
        .await
        .map_err(|error| error.to_string())?;
    let addrs: Vec<IpAddr> = lookup.iter().collect();
    if addrs.is_empty() {
        return Err(format!("{name} has no addresses"));
    }
    let now = Instant::now();
    let record_ttl = lookup.valid_until().saturating_duration_since(now);
    Ok(Resolution {
        addrs,
        valid_until: now + record_ttl.clamp(ttl.min, ttl.max),
    })
}
