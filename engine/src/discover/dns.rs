//! A shard's view of DNS: answers from the control thread's resolver (`control::dns`),
//! cached on the shard until their TTL runs out, so a name crosses threads once per TTL.
//! Addresses of a name are used in turn.
//!
//! Requests for a name already being resolved wait for that answer instead of asking again
//! (a burst of new connections to one name is one request), and a failed lookup is
//! remembered for [`NEGATIVE_TTL`], so a name that does not resolve does not cross threads
//! on every request.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::future::{FutureExt, Shared};
use ringlink_control::dns::{DnsRequest, DnsTx, Resolution};
use tokio::sync::oneshot;

use crate::rt::Runtime;

/// How long a shard waits for the control thread's answer.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a failed lookup is answered from the cache.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// Most names cached per shard; past it, expired entries go, then the whole cache.
const MAX_CACHED_NAMES: usize = 10_000;

// === types ===

/// The shard's cache and its handle to the resolver.
pub struct ShardDns {
    tx: DnsTx,
    cache: RefCell<HashMap<String, Cached>>,
    /// Lookups in flight, shared by every request for the same name.
    pending: RefCell<HashMap<String, Lookup>>,
}

enum Cached {
    Resolved {
        resolution: Resolution,
        next: Cell<usize>,
    },
    Failed {
        error: String,
        until: Instant,
    },
}

type Lookup = Shared<Pin<Box<dyn Future<Output = Result<Resolution, String>>>>>;

// === impl ShardDns ===

impl ShardDns {
    pub fn new(tx: DnsTx) -> Self {
        ShardDns {
            tx,
            cache: RefCell::new(HashMap::new()),
            pending: RefCell::new(HashMap::new()),
        }
    }

    /// The cached answer for `name`, if it is still valid: an address (in turn) or the
    /// error of a recent failed lookup.
    fn cached(&self, name: &str) -> Option<Result<IpAddr, String>> {
        let cache = self.cache.borrow();
        let now = Instant::now();
        match cache.get(name)? {
            Cached::Resolved { resolution, next } if resolution.valid_until > now => {
                let i = next.get();
                next.set(i.wrapping_add(1));
                Some(Ok(resolution.addrs[i % resolution.addrs.len()]))
            }
            Cached::Failed { error, until } if *until > now => Some(Err(error.clone())),
            _ => None,
        }
    }

    fn store(&self, name: &str, entry: Cached) {
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= MAX_CACHED_NAMES {
            let now = Instant::now();
            cache.retain(|_, c| match c {
                Cached::Resolved { resolution, .. } => resolution.valid_until > now,
                Cached::Failed { until, .. } => *until > now,
            });
            if cache.len() >= MAX_CACHED_NAMES {
                cache.clear();
            }
        }
        cache.insert(name.to_string(), entry);
    }

    /// The lookup in flight for `name`, starting one if there is none.
    fn lookup<R: Runtime>(&self, name: &str) -> Lookup {
        if let Some(lookup) = self.pending.borrow().get(name) {
            return lookup.clone();
        }
        let (reply, answer) = oneshot::channel();
        let sent = self.tx.try_send(DnsRequest {
            name: name.to_string(),
            reply,
        });
        let lookup: Pin<Box<dyn Future<Output = Result<Resolution, String>>>> = match sent {
            Err(error) => {
                let error = format!("resolver unavailable: {error}");
                Box::pin(async move { Err(error) })
            }
            Ok(()) => Box::pin(async move {
                let answered = crate::rt::timeout::<R, _>(RESOLVE_TIMEOUT, answer).await;
                match answered {
                    Some(Ok(answer)) => answer,
                    Some(Err(_)) => Err("resolver stopped".to_string()),
                    None => Err(format!("no answer within {RESOLVE_TIMEOUT:?}")),
                }
            }),
        };
        let lookup = lookup.shared();
        self.pending
            .borrow_mut()
            .insert(name.to_string(), lookup.clone());
        lookup
    }
}

// === functions ===

/// The address to connect to for `host:port`: an IP literal as it is, a name through the
/// shard's cache or the control thread's resolver.
pub async fn resolve<R: Runtime>(
    dns: &ShardDns,
    host: &str,
    port: u16,
) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    if let Some(answer) = dns.cached(&name) {
        return answer.map(|ip| SocketAddr::new(ip, port));
    }
    let answer = dns.lookup::<R>(&name).await;
    // The first waiter to wake moves the answer into the cache; the others find it there.
    if dns.pending.borrow_mut().remove(&name).is_some() {
        let entry = match &answer {
            Ok(resolution) => Cached::Resolved {
                resolution: resolution.clone(),
                next: Cell::new(0),
            },
            Err(error) => Cached::Failed {
                error: error.clone(),
                until: Instant::now() + NEGATIVE_TTL,
            },
        };
        dns.store(&name, entry);
    }
    match dns.cached(&name) {
        Some(answer) => answer.map(|ip| SocketAddr::new(ip, port)),
        // Expired at once (a zero TTL): use the answer itself.
        None => answer.map(|resolution| SocketAddr::new(resolution.addrs[0], port)),
    }
}
