//! Message heads and their header fields.

// === types ===

/// The HTTP/1 minor version of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// One header field. The name keeps the case it arrived in (HTTP/1 peers see their own
/// spelling); compare names with [`str::eq_ignore_ascii_case`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

/// Header fields in the order they arrived.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

/// A request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request target as sent: origin-form (`/path`), absolute-form (`http://host/path`),
    /// authority-form (CONNECT) or `*`.
    pub target: String,
    pub version: Version,
    pub headers: Headers,
}

/// A response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub version: Version,
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
}

// === impl Version ===

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

// === impl Headers ===

impl Headers {
    pub fn with_capacity(n: usize) -> Self {
        Headers(Vec::with_capacity(n))
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// The number of fields named `name`.
    pub fn count(&self, name: &str) -> usize {
        self.0
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .count()
    }

    /// Whether a comma-separated list in any `name` field holds `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name).any(|value| {
            value
                .split(|&b| b == b',')
                .any(|t| trim(t).eq_ignore_ascii_case(token.as_bytes()))
        })
    }

    /// Appends a field.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.0.push(Header {
            name: name.into(),
            value: value.into(),
        });
    }

    /// Replaces every `name` field with one.
    pub fn set(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.remove(name);
        self.append(name, value);
    }

    /// Removes every `name` field.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }

    pub fn retain(&mut self, keep: impl FnMut(&Header) -> bool) {
        self.0.retain(keep);
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

// === impl RequestHead ===

impl RequestHead {
    pub fn is_method(&self, method: &str) -> bool {
        self.method == method
    }

    /// The authority the request names: the absolute-form target's, else `Host`'s. `None`
    /// when neither is there (an HTTP/1.0 request without `Host`).
    pub fn authority(&self) -> Option<&str> {
        if let Some(rest) = strip_scheme(&self.target) {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let authority = &rest[..end];
            // Userinfo is not part of where to connect.
            let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
            return (!authority.is_empty()).then_some(authority);
        }
        if self.method == "CONNECT" {
            return Some(&self.target);
        }
        let host = std::str::from_utf8(self.headers.get("host")?).ok()?.trim();
        (!host.is_empty()).then_some(host)
    }

    /// Whether the target is in absolute form (`http://host/path`).
    pub fn is_absolute_form(&self) -> bool {
        strip_scheme(&self.target).is_some()
    }

    /// Rewrites an absolute-form target to origin form (`/path?query`), the form servers
    /// expect from a client that is not talking to a forward proxy.
    pub fn to_origin_form(&mut self) {
        if let Some(rest) = strip_scheme(&self.target) {
            let path = match rest.find(['/', '?']) {
                Some(i) if rest.as_bytes()[i] == b'/' => rest[i..].to_string(),
                Some(i) => format!("/{}", &rest[i..]),
                None => "/".to_string(),
            };
            self.target = path;
        }
    }
}

// === functions ===

/// The protocol an `Upgrade` request asks for, if it is one the proxy tunnels: the trimmed
/// `Upgrade` value of a request whose `Connection` holds `upgrade`. `None` for anything else,
/// an empty value and `h2c` (any case), which is stripped: the upstream hop stays HTTP/1.1.
pub fn upgrade_protocol(head: &RequestHead) -> Option<String> {
    if !head.headers.has_token("connection", "upgrade") {
        return None;
    }
    let value = std::str::from_utf8(head.headers.get("upgrade")?)
        .ok()?
        .trim();
    if value.is_empty() || value.eq_ignore_ascii_case("h2c") {
        return None;
    }
    Some(value.to_string())
}

fn strip_scheme(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")).then_some(rest)
}

pub(crate) fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}
