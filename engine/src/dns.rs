//! A shard's view of DNS: answers from the control thread's resolver (`control::dns`),
//! cached on the shard until their TTL runs out, so a name crosses threads once per TTL.
//! Addresses of a name are used in turn.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_lite::future::or;
use ringlink_control::dns::{DnsRequest, DnsTx, Resolution};
use tokio::sync::oneshot;

use crate::rt::Runtime;
use crate::shard::ShardState;

/// How long a shard waits for the control thread's answer.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most names cached per shard; past it, expired entries go, then the whole cache.
const MAX_CACHED_NAMES: usize = 10_000;

// === types ===

/// The shard's cache and its handle to the resolver.
pub struct ShardDns {
    tx: DnsTx,
    cache: RefCell<HashMap<String, Cached>>,
}

struct Cached {
    resolution: Resolution,
    next: Cell<usize>,
}

// === impl ShardDns ===

impl ShardDns {
    pub fn new(tx: DnsTx) -> Self {
        ShardDns {
            tx,
            cache: RefCell::new(HashMap::new()),
        }
    }

    fn cached(&self, name: &str) -> Option<IpAddr> {
        let cache = self.cache.borrow();
        let entry = cache.get(name)?;
        if entry.resolution.valid_until <= Instant::now() {
            return None;
        }
        let i = entry.next.get();
        entry.next.set(i.wrapping_add(1));
        let addrs = &entry.resolution.addrs;
        Some(addrs[i % addrs.len()])
    }

    fn store(&self, name: &str, resolution: Resolution) {
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= MAX_CACHED_NAMES {
            let now = Instant::now();
            cache.retain(|_, c| c.resolution.valid_until > now);
            if cache.len() >= MAX_CACHED_NAMES {
                cache.clear();
            }
        }
        cache.insert(
            name.to_string(),
            Cached {
                resolution,
                next: Cell::new(0),
            },
        );
    }
}

// === functions ===

/// The address to connect to for `host:port`: an IP literal as it is, a name through the
/// shard's cache or the control thread's resolver.
pub async fn resolve<R: Runtime>(
    state: &ShardState,
    host: &str,
    port: u16,
) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    let dns = &state.dns;
    if let Some(ip) = dns.cached(&name) {
        return Ok(SocketAddr::new(ip, port));
    }
    let (reply, answer) = oneshot::channel();
    dns.tx
        .try_send(DnsRequest {
            name: name.clone(),
            reply,
        })
        .map_err(|error| format!("resolver unavailable: {error}"))?;
    let answered = or(async { Some(answer.await) }, async {
        R::sleep(RESOLVE_TIMEOUT).await;
        None
    })
    .await;
    let resolution = match answered {
        Some(Ok(Ok(resolution))) => resolution,
        Some(Ok(Err(error))) => return Err(error),
        Some(Err(_)) => return Err("resolver stopped".to_string()),
        None => return Err(format!("no answer within {RESOLVE_TIMEOUT:?}")),
    };
    let first = resolution.addrs[0];
    dns.store(&name, resolution);
    Ok(SocketAddr::new(first, port))
}
