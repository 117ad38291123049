//! The admin server of the real binary: readiness, liveness, env, run-time log level and the
//! shutdown endpoint, while shards serve traffic.

use std::time::Duration;

use ringlink_integration::http::call;
use ringlink_integration::{proxy, tcp};

#[tokio::test]
async fn ready_live_and_env() {
    let proxy = proxy::new("monoio").shards(2).spawn();
    assert_eq!(call(proxy.admin, "GET", "/ready", "").await.status, 200);
    let live = call(proxy.admin, "GET", "/live", "").await;
    assert_eq!((live.status, live.body.as_str()), (200, "live\n"));
    let env = call(proxy.admin, "GET", "/env.json?RINGLINK_RUNTIME", "").await;
    assert_eq!(env.status, 200);
    assert!(
        env.body.contains("\"RINGLINK_RUNTIME\": \"monoio\""),
        "{}",
        env.body
    );
    assert!(!env.body.contains("LINKERD2_PROXY_LOG"), "{}", env.body);
    assert_eq!(
        call(proxy.admin, "GET", "/metrics-nope", "").await.status,
        404
    );
}

#[tokio::test]
async fn log_level_changes_while_running() {
    let server = tcp::echo().await;
    let proxy = proxy::new("glommio")
        // The harness reads the listening addresses from ringlink_engine::app's info lines.
        .env("LINKERD2_PROXY_LOG", "warn,ringlink_engine::app=info")
        .orig_dst(server.addr)
        .spawn();
    let level = call(proxy.admin, "GET", "/proxy-log-level", "").await.body;
    assert_eq!(level, "ringlink_engine::app=info,warn\n");
    tcp::roundtrip(proxy.outbound, b"quiet").await.unwrap();
    assert!(!proxy.logs().contains("Connection closed"));

    let bad = call(proxy.admin, "PUT", "/proxy-log-level", "info,[[[").await;
    assert_eq!(bad.status, 400, "{bad:?}");
    let put = call(
        proxy.admin,
        "PUT",
        "/proxy-log-level",
        "ringlink_engine=debug",
    )
    .await;
    assert_eq!(put.status, 204, "{put:?}");
    // The shards' connection logs follow the new filter.
    tcp::roundtrip(proxy.outbound, b"loud").await.unwrap();
    assert!(
        proxy
            .wait_for_log("Connection closed", Duration::from_secs(2))
            .await
    );
}

#[tokio::test]
async fn shutdown_endpoint_drains_when_enabled() {
    let mut off = proxy::new("monoio").spawn();
    assert_eq!(call(off.admin, "POST", "/shutdown", "").await.status, 404);
    assert!(off.wait_exit(Duration::from_millis(200)).await.is_none());

    let mut on = proxy::new("monoio")
        .env("LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED", "true")
        .spawn();
    let get = call(on.admin, "GET", "/shutdown", "").await;
    assert_eq!(get.status, 405);
    assert!(get.head.contains("allow: POST"), "{get:?}");
    assert_eq!(call(on.admin, "POST", "/shutdown", "").await.status, 200);
    on.assert_exits_cleanly(Duration::from_secs(5)).await;
}
