//! Locating the external programs the harness runs: load generators and third-party proxies.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Directories searched after `PATH`: nginx and haproxy live in `/usr/sbin`, which a
/// non-root `PATH` often lacks.
const SBIN_DIRS: [&str; 3] = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// Where nginx's dynamic modules are installed (Debian's `--modules-path`).
const NGINX_MODULE_DIRS: [&str; 2] = ["/usr/lib/nginx/modules", "/usr/share/nginx/modules"];

/// The first executable file called `name` in `PATH`, then in the sbin directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// nginx and what its configuration has to adapt to.
#[derive(Clone, Debug)]
pub struct Nginx {
    pub binary: PathBuf,
    /// `(major, minor, patch)` from `nginx -v`; `None` if it could not be read.
    pub version: Option<(u32, u32, u32)>,
    /// `ngx_stream_module.so`, needed for the bulk (L4) test, unless nginx was built with
    /// the stream module compiled in.
    pub stream_module: Option<PathBuf>,
}

// === impl Nginx ===

impl Nginx {
    pub fn find() -> Option<Self> {
        let binary = find_program("nginx")?;
        let version = Command::new(&binary)
            .arg("-v")
            .output()
            .ok()
            .and_then(|out| parse_nginx_version(&String::from_utf8_lossy(&out.stderr)));
        let stream_module = NGINX_MODULE_DIRS
            .iter()
            .map(|dir| Path::new(dir).join("ngx_stream_module.so"))
            .find(|module| module.is_file());
        Some(Self {
            binary,
            version,
            stream_module,
        })
    }

    /// nginx 1.25.1 replaced `listen ... http2` with the `http2 on;` directive.
    pub fn has_http2_directive(&self) -> bool {
        self.version.is_some_and(|v| v >= (1, 25, 1))
    }

    pub fn version_string(&self) -> String {
        self.version.map_or_else(
            || "unknown version".to_string(),
            |(a, b, c)| format!("{a}.{b}.{c}"),
        )
    }
}

/// `nginx version: nginx/1.22.1` (nginx prints it on stderr).
fn parse_nginx_version(output: &str) -> Option<(u32, u32, u32)> {
    let (_, rest) = output.split_once("nginx/")?;
    let version = rest.split_whitespace().next()?;
    let mut parts = version.split('.').map(|p| p.parse().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// `haproxy -v`'s first line, for the output header.
pub fn haproxy_version(binary: &Path) -> String {
    Command::new(binary)
        .arg("-v")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .and_then(|line| line.split_whitespace().nth(2).map(str::to_string))
        })
        .unwrap_or_else(|| "unknown version".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_versions() {
        assert_eq!(
            parse_nginx_version("nginx version: nginx/1.22.1\n"),
            Some((1, 22, 1))
        );
        assert_eq!(
            parse_nginx_version("nginx version: nginx/1.25.3 (Ubuntu)"),
            Some((1, 25, 3))
        );
        assert_eq!(parse_nginx_version("openresty/1.21"), None);
    }

    #[test]
    fn finds_sh() {
        assert!(find_program("sh").is_some());
        assert!(find_program("no-such-program-ringlink-bench").is_none());
    }
}
