//! nginx and haproxy configurations, generated per run into a temporary directory.
//!
//! Both are set up as one single-threaded HTTP reverse proxy with connection reuse toward
//! the backend and no access logging, the closest they come to one ringlink shard:
//!
//! - `http1` and `latency`: HTTP/1.1 in, HTTP/1.1 out over kept-alive backend connections.
//! - `h2` and `grpc`: h2c (prior knowledge) in, h2c out. nginx cannot proxy HTTP/2 to a
//!   backend with `proxy_pass`; its gRPC proxy (`grpc_pass`) speaks plain HTTP/2 and serves
//!   any h2 backend (gRPC's, and h2load's GETs alike), but opens one backend connection per
//!   concurrent request (it does not multiplex), kept alive with `keepalive`.
//! - `bulk`: L4, since the bulk test is not HTTP: nginx's stream module with
//!   `proxy_half_close`, haproxy's `mode tcp`.

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::Path;

use crate::args::Test;

/// nginx's cap on requests per kept-alive connection (client side and upstream side),
/// raised from its default of 1000 so that nginx, like the other proxies, never closes a
/// load connection during a run.
const NGINX_KEEPALIVE_REQUESTS: u32 = 1_000_000;
/// Idle backend connections nginx keeps per worker. `grpc_pass` needs one per concurrent
/// h2 request.
const NGINX_UPSTREAM_KEEPALIVE: u32 = 1024;
/// The idle test's `tcp` rows hold 5,300 client connections and as many to the backend.
const NGINX_WORKER_CONNECTIONS: u32 = 16_384;

pub struct NginxConfig<'a> {
    /// The temporary directory: pid file and temp paths go there.
    pub dir: &'a Path,
    pub listen: SocketAddr,
    pub target: SocketAddr,
    pub test: Test,
    /// nginx ≥ 1.25.1: `http2 on;` instead of `listen ... http2`.
    pub http2_directive: bool,
    /// `load_module` line for the bulk test, if the stream module is dynamic.
    pub stream_module: Option<&'a Path>,
}

pub fn nginx(c: &NginxConfig<'_>) -> String {
    let dir = c.dir.display();
    let mut conf = String::new();
    if c.test == Test::Bulk {
        if let Some(module) = c.stream_module {
            let _ = writeln!(conf, "load_module {};", module.display());
        }
    }
    let _ = write!(
        conf,
        "\
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log stderr warn;
events {{
    worker_connections {NGINX_WORKER_CONNECTIONS};
}}
"
    );
    if c.test == Test::Bulk {
        let _ = write!(
            conf,
            "\
stream {{
    server {{
        listen {listen};
        proxy_pass {target};
        proxy_half_close on;
    }}
}}
",
            listen = c.listen,
            target = c.target,
        );
        return conf;
    }
    let (listen_flags, http2_on, location) = match (c.test, c.http2_directive) {
        (Test::H2 | Test::Grpc, true) => ("", "        http2 on;\n", "grpc_pass grpc://backend;"),
        (Test::H2 | Test::Grpc, false) => (" http2", "", "grpc_pass grpc://backend;"),
        _ => (
            "",
            "",
            "proxy_pass http://backend;\n            proxy_http_version 1.1;\n            \
             proxy_set_header Connection \"\";",
        ),
    };
    let _ = write!(
        conf,
        "\
http {{
    access_log off;
    keepalive_requests {NGINX_KEEPALIVE_REQUESTS};
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream backend {{
        server {target};
        keepalive {NGINX_UPSTREAM_KEEPALIVE};
        keepalive_requests {NGINX_KEEPALIVE_REQUESTS};
    }}
    server {{
        listen {listen}{listen_flags};
{http2_on}        location / {{
            {location}
        }}
    }}
}}
",
        listen = c.listen,
        target = c.target,
    );
    conf
}

pub struct HaproxyConfig {
    pub listen: SocketAddr,
    pub target: SocketAddr,
    pub test: Test,
    /// Global `maxconn`; haproxy refuses to start if the file-descriptor limit cannot
    /// cover it.
    pub maxconn: u64,
}

pub fn haproxy(c: &HaproxyConfig) -> String {
    let (mode, reuse, proto) = match c.test {
        // The mesh, policy, outbound-policy and tap tests run ringlink only; their load is
        // HTTP/1.
        Test::Http1
        | Test::Latency
        | Test::Mesh
        | Test::Policy
        | Test::OutboundPolicy
        | Test::Tap
        | Test::Idle => ("http", "    http-reuse always\n", ""),
        Test::H2 | Test::Grpc => ("http", "    http-reuse always\n", " proto h2"),
        Test::Bulk => ("tcp", "", ""),
    };
    // No `log` line anywhere: haproxy logs nothing.
    format!(
        "\
global
    nbthread 1
    maxconn {maxconn}
defaults
    mode {mode}
    timeout connect 5s
    timeout client 60s
    timeout server 60s
{reuse}frontend bench
    bind {listen}{proto}
    default_backend backend
backend backend
    server backend {target}{proto}
",
        maxconn = c.maxconn,
        listen = c.listen,
        target = c.target,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nginx_for(test: Test, http2_directive: bool) -> String {
        nginx(&NginxConfig {
            dir: Path::new("/tmp/x"),
            listen: "127.0.0.1:1000".parse().unwrap(),
            target: "127.0.0.1:2000".parse().unwrap(),
            test,
            http2_directive,
            stream_module: Some(Path::new("/m/ngx_stream_module.so")),
        })
    }

    #[test]
    fn nginx_http1_keeps_backend_connections() {
        let conf = nginx_for(Test::Http1, false);
        assert!(conf.contains("worker_processes 1;"));
        assert!(conf.contains("access_log off;"));
        assert!(conf.contains("keepalive 1024;"));
        assert!(conf.contains("proxy_http_version 1.1;"));
        assert!(conf.contains("listen 127.0.0.1:1000;"));
        assert!(!conf.contains("load_module"));
        assert_eq!(conf.matches('{').count(), conf.matches('}').count());
    }

    #[test]
    fn nginx_h2_by_version() {
        let old = nginx_for(Test::H2, false);
        assert!(old.contains("listen 127.0.0.1:1000 http2;"));
        assert!(old.contains("grpc_pass grpc://backend;"));
        let new = nginx_for(Test::H2, true);
        assert!(new.contains("listen 127.0.0.1:1000;\n        http2 on;"));
    }

    #[test]
    fn nginx_grpc_is_grpc_pass_over_http2() {
        let old = nginx_for(Test::Grpc, false);
        assert!(old.contains("listen 127.0.0.1:1000 http2;"));
        assert!(old.contains("grpc_pass grpc://backend;"));
        assert!(old.contains("keepalive 1024;"));
        assert!(!old.contains("proxy_pass"));
        let new = nginx_for(Test::Grpc, true);
        assert!(new.contains("listen 127.0.0.1:1000;\n        http2 on;"));
        assert_eq!(new.matches('{').count(), new.matches('}').count());
        // The latency test proxies HTTP/1.1 as the http1 test does.
        assert_eq!(
            nginx_for(Test::Latency, false),
            nginx_for(Test::Http1, false)
        );
    }

    #[test]
    fn nginx_bulk_is_l4() {
        let conf = nginx_for(Test::Bulk, false);
        assert!(conf.starts_with("load_module /m/ngx_stream_module.so;"));
        assert!(conf.contains("proxy_half_close on;"));
        assert!(!conf.contains("http {"));
        assert_eq!(conf.matches('{').count(), conf.matches('}').count());
    }

    #[test]
    fn haproxy_modes() {
        let conf = |test| {
            haproxy(&HaproxyConfig {
                listen: "127.0.0.1:1000".parse().unwrap(),
                target: "127.0.0.1:2000".parse().unwrap(),
                test,
                maxconn: 4096,
            })
        };
        let h2 = conf(Test::H2);
        assert!(h2.contains("bind 127.0.0.1:1000 proto h2"));
        assert!(h2.contains("server backend 127.0.0.1:2000 proto h2"));
        assert!(h2.contains("http-reuse always"));
        assert!(h2.contains("nbthread 1"));
        let bulk = conf(Test::Bulk);
        assert!(bulk.contains("mode tcp"));
        assert!(!bulk.contains("http-reuse"));
        assert!(!conf(Test::Http1).contains("proto h2"));
        assert_eq!(conf(Test::Grpc), h2);
        assert_eq!(conf(Test::Latency), conf(Test::Http1));
    }
}
