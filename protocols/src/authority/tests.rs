use super::*;

/// Asserts that `authority` parses to `host` and `port`.
fn parses(authority: &str, host: &str, port: u16) {
    assert_eq!(
        parse_authority(authority),
        Some((host.to_string(), port)),
        "{authority:?}"
    );
}

#[test]
fn port_defaults_to_80() {
    parses("example.com", "example.com", 80);
    parses("a", "a", 80);
    parses("10.0.0.1", "10.0.0.1", 80);
}

#[test]
fn explicit_port() {
    parses("example.com:8080", "example.com", 8080);
    parses("web.ns.svc.cluster.local:0", "web.ns.svc.cluster.local", 0);
    parses("a:65535", "a", 65535);
    parses("10.0.0.1:443", "10.0.0.1", 443);
    parses("My_Host-1.example:1", "My_Host-1.example", 1);
}

#[test]
fn ipv6_literals_in_brackets() {
    parses("[::1]:8080", "::1", 8080);
    parses("[::1]", "::1", 80);
    parses("[2001:db8::7]:443", "2001:db8::7", 443);
    // An unclosed bracket, an empty literal.
    assert_eq!(parse_authority("[::1"), None);
    assert_eq!(parse_authority("[]:80"), None);
    assert_eq!(parse_authority("[]"), None);
}

#[test]
fn bad_ports_are_refused() {
    for authority in [
        "a:99999", "a:65536", "a:", "a:x", "a:-1", "a:8 0", "[::1]:", "[::1]:x",
    ] {
        assert_eq!(parse_authority(authority), None, "{authority:?}");
    }
}

#[test]
fn only_a_port_may_follow_the_bracket() {
    for authority in ["[::1]x", "[::1]80", "[::1] :80", "[::1]]:80", "[::1]:80]"] {
        assert_eq!(parse_authority(authority), None, "{authority:?}");
    }
}

#[test]
fn empty_hosts_are_refused() {
    for authority in ["", " ", ":80", "[]", "[]:80", " :80 "] {
        assert_eq!(parse_authority(authority), None, "{authority:?}");
    }
}

#[test]
fn surrounding_whitespace_is_trimmed() {
    parses("  example.com:81 ", "example.com", 81);
    parses("\texample.com\r\n", "example.com", 80);
    parses(" [::1]:9 ", "::1", 9);
}

#[test]
fn invalid_host_bytes_are_refused() {
    for authority in [
        "a b",
        "a b:80",
        "a/b",
        "a@b",
        "user@a:80",
        "a?b",
        "a#b",
        "a%20b",
        "[a b]:80",
        "é.com",
        "a\0b",
    ] {
        assert_eq!(parse_authority(authority), None, "{authority:?}");
    }
}

#[test]
fn unbracketed_colons_split_at_the_last() {
    // The engine's behaviour: the port is after the last `:`, and `:` is a host byte.
    parses("a:b:80", "a:b", 80);
    parses("::1", ":", 1);
}

#[test]
fn names_of_ip_literals_are_none() {
    assert_eq!(name_of("10.0.0.1", 80), None);
    assert_eq!(name_of("127.0.0.1", 8080), None);
    assert_eq!(name_of("::1", 80), None);
    assert_eq!(name_of("2001:db8::7", 443), None);
    assert_eq!(
        name_of("10.0.0.1.", 80),
        None,
        "a trailing dot does not hide an IP"
    );
}

#[test]
fn names_drop_trailing_dots() {
    assert_eq!(
        name_of("web.ns.svc.cluster.local.", 80).as_deref(),
        Some("web.ns.svc.cluster.local:80")
    );
    assert_eq!(name_of("a..", 1).as_deref(), Some("a:1"));
    assert_eq!(name_of(".", 80), None);
    assert_eq!(name_of("...", 80), None);
    assert_eq!(name_of("", 80), None);
}

#[test]
fn names_are_lowercase() {
    assert_eq!(
        name_of("Web.NS.Svc", 8080).as_deref(),
        Some("web.ns.svc:8080")
    );
    assert_eq!(
        name_of("EXAMPLE.COM.", 443).as_deref(),
        Some("example.com:443")
    );
}

#[test]
fn parse_then_name() {
    let (host, port) = parse_authority("Web.Default.svc.cluster.local.:8080").unwrap();
    assert_eq!(
        name_of(&host, port).as_deref(),
        Some("web.default.svc.cluster.local:8080")
    );
    let (host, port) = parse_authority("[::1]:8080").unwrap();
    assert_eq!(name_of(&host, port), None);
}

#[test]
fn dns_names_as_linkerd_accepts_them() {
    // The cases of linkerd2-proxy's `linkerd/dns/name/src/name.rs` test, and a few more.
    let cases: &[(&str, bool)] = &[
        ("", false),
        (".", false),
        ("..", false),
        ("...", false),
        ("*", false),
        ("a", true),
        ("a.", true),
        ("d.c.b.a", true),
        ("d.c.b.a.", true),
        (" d.c.b.a.", false),
        ("d.c.b.a-", false),
        ("*.a.", false),
        (".a.", false),
        ("a1", true),
        ("_m.foo.bar", true),
        ("m.foo.bar_", true),
        ("example.com:80", false),
        ("1", false),
        ("1.a", true),
        ("a.1", false),
        ("1.2.3.4", false),
        ("::1", false),
        ("xn--poema-9qae5a.com.br", true),
        ("a..b", false),
        ("a.b..", false),
        ("-a.b", false),
        ("a-.b", false),
        ("a-b.c", true),
        ("1-2", true),
        ("a.1-2", true),
        ("a.12.", false),
        ("Foo.NS.serviceaccount.identity.linkerd.cluster.local", true),
        ("é.com", false),
    ];
    for &(name, valid) in cases {
        assert_eq!(is_dns_name(name), valid, "{name:?}");
    }
    let label = "a".repeat(63);
    assert!(is_dns_name(&label));
    assert!(!is_dns_name(&"a".repeat(64)));
    // 253 bytes in all is the most; a trailing dot counts.
    let long = [label.as_str(); 4].join(".");
    assert_eq!(long.len(), 255);
    assert!(!is_dns_name(&long));
    assert!(is_dns_name(&long[2..]));
    assert!(!is_dns_name(&format!("{}.", &long[2..])));
}
