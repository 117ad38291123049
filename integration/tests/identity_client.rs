//! The control thread's identity client (`ringlink_control::identity`) against the mock
//! Identity service, on a tokio current-thread runtime like the control thread's. No proxy
//! binary.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ringlink_control::identity::{self, Certified, IdentityMetrics};
use ringlink_control::IdentityConfig;
use ringlink_integration::identity::{self as mock, IdentityServer};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const NAME: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";
const WAIT: Duration = Duration::from_secs(10);

type Rx = watch::Receiver<Option<Arc<Certified>>>;

/// A fresh directory for the token file (and no key or CSR), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ringlink-identity-it-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn token(&self) -> PathBuf {
        self.0.join("token")
    }

    fn set_token(&self, token: &str) {
        std::fs::write(self.token(), token).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The client, running against `server` at `svc_addr`.
struct Client {
    rx: Rx,
    metrics: Arc<IdentityMetrics>,
    task: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn config(server: &IdentityServer, dir: &TempDir) -> IdentityConfig {
    IdentityConfig {
        dir: dir.0.clone(),
        trust_anchors_pem: server.trust_anchors_pem(),
        token_file: dir.token(),
        svc_addr: server.addr().to_string(),
        svc_name: None,
        local_name: NAME.to_string(),
        min_refresh: Duration::from_millis(200),
        max_refresh: Duration::from_secs(3600),
    }
}

fn start(config: IdentityConfig) -> Client {
    let (tx, rx) = watch::channel(None);
    let metrics = Arc::new(IdentityMetrics::default());
    let task = tokio::spawn(identity::run_with_metrics(config, tx, metrics.clone()));
    Client { rx, metrics, task }
}

/// Waits (bounded) for credentials other than `previous`.
async fn next(rx: &mut Rx, previous: Option<&Arc<Certified>>) -> Arc<Certified> {
    let wait = async {
        loop {
            if let Some(c) = rx.borrow_and_update().clone() {
                if previous.is_none_or(|p| !Arc::ptr_eq(p, &c)) {
                    return c;
                }
            }
            rx.changed().await.expect("the identity client stopped");
        }
    };
    match tokio::time::timeout(WAIT, wait).await {
        Ok(c) => c,
        Err(_) => panic!(
            "timed out waiting for new credentials; last: {:?}",
            rx.borrow()
        ),
    }
}

/// Waits (bounded) until the service has had `n` calls.
async fn until_calls(server: &IdentityServer, n: usize) {
    let wait = async {
        while server.calls() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(WAIT, wait).await.is_err() {
        panic!("{} Certify calls, expected {n}", server.calls());
    }
}

/// Waits (bounded) until the client has counted `n` failed calls.
async fn until_failed(client: &Client, n: u64) {
    let failed = || client.metrics.certify_failed.load(Ordering::Relaxed);
    let wait = async {
        while failed() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(WAIT, wait).await.is_err() {
        panic!("{} failed Certify calls, expected {n}", failed());
    }
}

fn assert_credentials(c: &Certified, server: &IdentityServer) {
    assert_eq!(c.name, NAME);
    assert_eq!(c.chain.len(), 2);
    assert_eq!(c.chain[1], server.issuer_der());
    assert_eq!(c.trust_anchors_pem, server.trust_anchors_pem());
    assert!(!c.key_pkcs8.is_empty());
    assert!(c.expiry > SystemTime::now());
}

#[tokio::test]
async fn certifies_then_refreshes_with_the_token_read_again() {
    let server = mock::new();
    server.set_lifetime(Duration::from_secs(2));
    server.expect_token("first");
    let dir = TempDir::new();
    dir.set_token("first");
    let mut client = start(config(&server, &dir));

    let first = next(&mut client.rx, None).await;
    assert_credentials(&first, &server);
    assert_eq!(server.last_identity().as_deref(), Some(NAME));
    assert_eq!(server.last_token().as_deref(), Some(&b"first"[..]));
    assert_eq!(client.metrics.certify_ok.load(Ordering::Relaxed), 1);
    assert_eq!(client.metrics.expiry(), Some(first.expiry));

    // The token rotates; the refresh (at 70% of at most 2s) sends the new one.
    dir.set_token("second");
    server.expect_token("second");
    let second = next(&mut client.rx, Some(&first)).await;
    assert_credentials(&second, &server);
    assert_eq!(server.last_token().as_deref(), Some(&b"second"[..]));
    assert_ne!(second.chain[0], first.chain[0]);
    // The same key and CSR every time.
    assert_eq!(second.key_pkcs8, first.key_pkcs8);
    assert!(second.expiry >= first.expiry);
    assert_eq!(client.metrics.certify_ok.load(Ordering::Relaxed), 2);
    assert_eq!(client.metrics.certify_failed.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn failures_before_the_first_success_are_retried() {
    let server = mock::new();
    server.fail_next(2);
    let dir = TempDir::new();
    dir.set_token("token");
    let mut client = start(config(&server, &dir));

    let first = next(&mut client.rx, None).await;
    assert_credentials(&first, &server);
    assert_eq!(server.calls(), 3);
    assert_eq!(client.metrics.certify_failed.load(Ordering::Relaxed), 2);
    assert_eq!(client.metrics.certify_ok.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_missing_token_is_a_failure_that_is_retried() {
    let server = mock::new();
    let dir = TempDir::new();
    let mut client = start(config(&server, &dir));
    // No token file: nothing is sent, and it is tried again every min_refresh.
    until_failed(&client, 2).await;
    assert_eq!(server.calls(), 0);
    assert!(client.rx.borrow().is_none());
    dir.set_token("token");
    let c = next(&mut client.rx, None).await;
    assert_credentials(&c, &server);
}

#[tokio::test]
async fn garbage_is_refused_and_the_old_credentials_stay() {
    let server = mock::new();
    server.set_lifetime(Duration::from_secs(3));
    let dir = TempDir::new();
    dir.set_token("token");
    let mut client = start(config(&server, &dir));
    let first = next(&mut client.rx, None).await;
    assert_eq!(server.calls(), 1);

    // The refresh gets a leaf of random bytes: refused, nothing published.
    server.answer_garbage_next(1);
    until_calls(&server, 2).await;
    until_failed(&client, 1).await;
    let current = client.rx.borrow().clone().expect("credentials stay");
    assert!(Arc::ptr_eq(&current, &first));
    assert_eq!(client.metrics.expiry(), Some(first.expiry));

    // The retry, timed from the old expiry, succeeds.
    let second = next(&mut client.rx, Some(&first)).await;
    assert_credentials(&second, &server);
    assert_eq!(server.calls(), 3);
    assert_eq!(server.issued(), 2);
}

#[tokio::test]
async fn a_token_the_service_refuses_is_not_published() {
    let server = mock::new();
    server.expect_token("right");
    let dir = TempDir::new();
    dir.set_token("wrong");
    let mut client = start(config(&server, &dir));
    until_calls(&server, 2).await;
    assert!(client.rx.borrow().is_none());
    assert_eq!(server.issued(), 0);
    dir.set_token("right");
    let c = next(&mut client.rx, None).await;
    assert_credentials(&c, &server);
}

#[tokio::test]
async fn tls_off_loopback() {
    const SVC_NAME: &str = "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local";
    let server = mock::new_tls(SVC_NAME);
    let dir = TempDir::new();
    dir.set_token("token");
    // Linux connects 0.0.0.0 to the local host, and the client, seeing an address that is
    // not loopback, uses TLS and checks the service's certificate for SVC_NAME.
    let port = server.addr().port();
    let mut config = config(&server, &dir);
    config.svc_addr = format!("0.0.0.0:{port}");
    config.svc_name = Some(SVC_NAME.to_string());
    let mut client = start(config.clone());
    let c = next(&mut client.rx, None).await;
    assert_credentials(&c, &server);
    drop(client);

    // A service that is not who SVC_NAME says is refused.
    config.svc_name =
        Some("someone-else.linkerd.serviceaccount.identity.linkerd.cluster.local".to_string());
    let calls = server.calls();
    let client = start(config.clone());
    until_failed(&client, 2).await;
    assert!(client.rx.borrow().is_none());
    assert_eq!(server.calls(), calls);
    drop(client);

    // And plaintext to a TLS service fails too (the client must not fall back).
    config.svc_addr = format!("127.0.0.1:{port}");
    let client = start(config);
    until_failed(&client, 2).await;
    assert!(client.rx.borrow().is_none());
    assert_eq!(server.calls(), calls);
}
