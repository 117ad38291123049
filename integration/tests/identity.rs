//! Identity through the binary: `LINKERD2_PROXY_IDENTITY_*` as the injector sets them, the
//! proxy certified by the mock Identity service, `/ready` gated on the first certificate.

use std::time::{Duration, Instant};

use ringlink_integration::http::call;
use ringlink_integration::identity::{self as mock, with_identity, IdentityServer, TokenDir};
use ringlink_integration::metrics::{parse, sum};
use ringlink_integration::proxy::{self, Builder, Proxy};

const NAME: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";

fn certified(builder: Builder, dir: &TokenDir, service: &IdentityServer) -> Builder {
    with_identity(builder, service, dir, NAME).env("LINKERD2_PROXY_IDENTITY_MIN_REFRESH", "100ms")
}

async fn ready(proxy: &Proxy) -> u16 {
    call(proxy.admin, "GET", "/ready", "").await.status
}

#[tokio::test]
async fn ready_only_once_certified() {
    let service = mock::new();
    service.expect_token("token-1");
    service.fail_next(3);
    let dir = TokenDir::new("ready", b"token-1");
    let proxy = certified(proxy::new("monoio"), &dir, &service).spawn();
    // The first calls fail: listening, alive, not ready.
    assert_eq!(call(proxy.admin, "GET", "/live", "").await.status, 200);
    assert_ne!(ready(&proxy).await, 200, "ready before any certificate");
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready(&proxy).await != 200 {
        assert!(Instant::now() < deadline, "never ready:\n{}", proxy.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Three failures, then the certificate: the proxy retried at the minimum refresh.
    assert!(service.calls() >= 4, "{} calls", service.calls());
    assert_eq!(service.issued(), 1);
    assert_eq!(service.last_identity().as_deref(), Some(NAME));
    assert_eq!(service.last_token().as_deref(), Some(&b"token-1"[..]));
    // linkerd2-proxy's certificate families: the three failures and the success, and an
    // expiry within the mock's lifetime for the certificate.
    let page = call(proxy.admin, "GET", "/metrics", "").await;
    let series = parse(&page.body);
    let refreshes = |result| {
        sum(
            &series,
            "identity_cert_refreshes_total",
            &[("result", result)],
        )
    };
    assert_eq!(refreshes("ok"), 1.0, "{}", page.body);
    assert!(refreshes("error") >= 3.0, "{}", page.body);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let expiry = sum(&series, "identity_cert_expiration_timestamp_seconds", &[]);
    assert!(
        expiry > now && expiry < now + 48.0 * 3600.0,
        "{expiry} vs {now}"
    );
    let refreshed = sum(&series, "identity_cert_refresh_timestamp_seconds", &[]);
    assert!((now - refreshed).abs() < 60.0, "{refreshed} vs {now}");
}

#[tokio::test]
async fn never_ready_without_the_identity_service() {
    let service = mock::new();
    service.expect_token("another token");
    let dir = TokenDir::new("refused", b"token-1");
    let proxy = certified(proxy::new("monoio"), &dir, &service).spawn();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(service.calls() >= 2, "retried: {} calls", service.calls());
    assert_eq!(service.issued(), 0);
    assert_ne!(ready(&proxy).await, 200);
}

#[test]
fn some_identity_variables_without_the_others_exit_64() {
    let (status, stderr) = proxy::run_to_exit(
        &[
            ("LINKERD2_PROXY_IDENTITY_DIR", "/tmp"),
            ("LINKERD2_PROXY_IDENTITY_LOCAL_NAME", NAME),
        ],
        Duration::from_secs(10),
    );
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"),
        "names the missing variable: {stderr}"
    );
}
