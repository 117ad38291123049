//! The image a Linkerd injector starts (`Dockerfile`): the layout its `COPY` lines build,
//! rebuilt in a directory from this build's binaries, has every path the injected pod spec
//! uses (Linkerd's `charts/partials/templates/_proxy.tpl` and `_network-validator.tpl`), and
//! each program there runs. No container builder is needed.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Paths the injected pod spec runs from the proxy image.
const INJECTOR_PATHS: &[&str] = &[
    "/usr/lib/linkerd/linkerd2-proxy",
    "/usr/lib/linkerd/linkerd-await",
    "/usr/lib/linkerd/linkerd2-network-validator",
];

fn dockerfile() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Dockerfile");
    std::fs::read_to_string(path).expect("the Dockerfile is readable")
}

/// This build's binary for a `target/release/<name>` the Dockerfile copies.
fn built(name: &str) -> PathBuf {
    let path = match name {
        "ringlink" => env!("CARGO_BIN_EXE_ringlink"),
        "linkerd-await" => env!("CARGO_BIN_EXE_linkerd-await"),
        "linkerd2-network-validator" => env!("CARGO_BIN_EXE_linkerd2-network-validator"),
        other => panic!("the Dockerfile copies {other}, which this package does not build"),
    };
    PathBuf::from(path)
}

/// The final stage's `COPY --from=build` lines: destination → binary name.
fn copies(dockerfile: &str) -> BTreeMap<String, String> {
    let final_stage = dockerfile
        .rsplit_once("\nFROM ")
        .map(|(_, stage)| stage)
        .expect("a final stage");
    final_stage
        .lines()
        .filter_map(|l| l.strip_prefix("COPY --from=build "))
        .map(|l| {
            let mut parts = l.split_whitespace();
            let from = parts.next().expect("a source");
            let to = parts.next().expect("a destination");
            let name = from
                .strip_prefix("/src/target/release/")
                .expect("binaries come from target/release");
            (to.to_string(), name.to_string())
        })
        .collect()
}

/// The layout, built in a fresh directory under the target directory; removed on drop.
struct Tree(PathBuf);

impl Tree {
    fn build(tag: &str) -> Tree {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("ringlink-image-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // Made before it is filled, so that a failure part-way still removes it.
        let tree = Tree(root);
        for (to, name) in copies(&dockerfile()) {
            let dest = tree.path(&to);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            // A hard link (same file system as the binaries): the image's layout without
            // copying hundreds of megabytes. A copy where linking is not possible.
            let binary = built(&name);
            if std::fs::hard_link(&binary, &dest).is_err() {
                std::fs::copy(&binary, &dest).unwrap_or_else(|e| {
                    panic!("copying {} to {}: {e}", binary.display(), dest.display())
                });
            }
        }
        tree
    }

    fn path(&self, absolute: &str) -> PathBuf {
        self.0.join(absolute.trim_start_matches('/'))
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_layout_has_what_the_injector_runs() {
    let dockerfile = dockerfile();
    let tree = Tree::build("layout");
    for path in INJECTOR_PATHS {
        let file = tree.path(path);
        let mode = std::fs::metadata(&file)
            .unwrap_or_else(|e| panic!("{path} is not in the image: {e}"))
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "{path} is not executable");
    }
    // The proxy is the entrypoint, and runs as the proxy uid proxy-init exempts.
    assert!(
        dockerfile.contains(r#"ENTRYPOINT ["/usr/lib/linkerd/linkerd2-proxy"]"#),
        "entrypoint"
    );
    assert!(dockerfile.lines().any(|l| l.trim() == "USER 2102:2102"));
    // Every binary the final stage copies is one the build stage builds.
    let build_line = dockerfile
        .split("RUN cargo build")
        .nth(1)
        .expect("a cargo build")
        .split("\n\n")
        .next()
        .unwrap()
        .to_string();
    for name in copies(&dockerfile).values() {
        assert!(
            build_line.contains(&format!("--bin {name}")),
            "{name} is copied but not built"
        );
    }
}

#[test]
fn the_programs_run_from_the_layout() {
    let tree = Tree::build("programs");
    // The proxy: invalid configuration exits 64 naming the variable.
    let out = Command::new(tree.path("/usr/lib/linkerd/linkerd2-proxy"))
        .env_clear()
        .env("LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT"));
    // linkerd-await as the postStart hook runs it, against an admin port where nothing
    // answers: it gives up after its timeout with EX_UNAVAILABLE.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let started = Instant::now();
    let out = Command::new(tree.path("/usr/lib/linkerd/linkerd-await"))
        .args(["--timeout=1s", &format!("--port={port}"), "--backoff=100ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The validator: without its addresses, a usage error.
    let out = Command::new(tree.path("/usr/lib/linkerd/linkerd2-network-validator"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
}
