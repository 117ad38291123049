//! A harness that reads like the behaviour under test: start the real binary with
//! [`proxy::new`], real servers from [`tcp`], and talk to them through real sockets.
//!
//! Tests run the `ringlink-it` binary, which is the engine's `main` built in this package so
//! that cargo builds it before the tests.

pub mod backend;
pub mod controller;
pub mod dns;
pub mod grpc;
pub mod h2;
pub mod http;
pub mod http1;
pub mod identity;
pub mod metrics;
pub mod netns;
pub mod outbound_policy;
pub mod policy;
pub mod proc;
pub mod proxy;
pub mod tap;
pub mod tcp;
pub mod ws;

/// Polls `done` (every 10 ms) until it holds, up to `timeout`; whether it did.
pub async fn eventually(timeout: std::time::Duration, done: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    true
}

/// Runs a test body once per shard runtime: `both_runtimes!(name)` expects an
/// `async fn name(runtime: &'static str)` and makes `name::monoio` and `name::glommio`.
#[macro_export]
macro_rules! both_runtimes {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn monoio() {
                super::$name("monoio").await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn glommio() {
                super::$name("glommio").await
            }
        }
    )+};
}
