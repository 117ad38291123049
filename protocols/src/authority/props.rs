//! Property tests: [`parse_authority`] on any text never panics and only answers with a valid
//! host; every `host:port` and `[host]:port` with a valid host parses back to exactly its
//! parts; [`name_of`] never panics.

use proptest::prelude::*;

use super::*;

// === strategies ===

/// Text that often looks like an authority, and sometimes like nothing at all.
fn messy_authority() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ \\[\\]:a-zA-Z0-9._@/%-]{0,24}",
        "\\[[0-9a-f:]{0,12}\\]?(:[0-9]{0,6})?[ \\]x]?",
        "[ \t]{0,2}[a-z0-9.-]{0,12}(:[0-9+-]{0,7})?[ \t]{0,2}",
    ]
}

// === properties ===

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Never panics, and a host it returns is non-empty and made of the allowed bytes.
    #[test]
    fn never_panics(authority in messy_authority()) {
        if let Some((host, port)) = parse_authority(&authority) {
            prop_assert!(!host.is_empty());
            prop_assert!(
                host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b)),
                "{host:?}"
            );
            let _ = name_of(&host, port);
            // The bracketed form of any returned host gives back the same pair.
            prop_assert_eq!(
                parse_authority(&format!("[{host}]:{port}")),
                Some((host.clone(), port))
            );
        }
    }

    /// `host:port` for any host of `[a-z0-9.-]` and any port gives back exactly both; the host
    /// alone gets port 80; surrounding whitespace changes nothing.
    #[test]
    fn host_and_port_round_trip(host in "[a-z0-9.-]{1,40}", port in any::<u16>()) {
        prop_assert_eq!(
            parse_authority(&format!("{host}:{port}")),
            Some((host.clone(), port))
        );
        prop_assert_eq!(
            parse_authority(&format!(" \t{host}:{port}\r\n")),
            Some((host.clone(), port))
        );
        prop_assert_eq!(parse_authority(&host), Some((host.clone(), 80)));
    }

    /// Bracketed literals (anything of `[0-9a-f:]`) with and without a port.
    #[test]
    fn bracketed_hosts_round_trip(host in "[0-9a-f:]{1,39}", port in any::<u16>()) {
        prop_assert_eq!(
            parse_authority(&format!("[{host}]:{port}")),
            Some((host.clone(), port))
        );
        prop_assert_eq!(parse_authority(&format!("[{host}]")), Some((host.clone(), 80)));
    }

    /// Ports past `u16::MAX` are refused.
    #[test]
    fn out_of_range_ports_are_refused(host in "[a-z0-9.-]{1,20}", port in 65536u32..) {
        prop_assert_eq!(parse_authority(&format!("{host}:{port}")), None);
        prop_assert_eq!(parse_authority(&format!("[{host}]:{port}")), None);
    }

    /// Names: lowercase, `:port` at the end, no trailing dot on the host part; `None` for
    /// empty hosts and IP literals, whatever their trailing dots.
    #[test]
    fn names(host in "[a-zA-Z0-9.:-]{0,24}", dots in "\\.{0,2}", port in any::<u16>()) {
        let spelled = format!("{host}{dots}");
        match name_of(&spelled, port) {
            Some(name) => {
                let suffix = format!(":{port}");
                let base = name.strip_suffix(&suffix).expect("ends with the port");
                prop_assert!(!base.is_empty() && !base.ends_with('.'), "{name:?}");
                prop_assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "{name:?}");
                prop_assert!(base.parse::<std::net::IpAddr>().is_err(), "{name:?}");
                prop_assert!(base.eq_ignore_ascii_case(spelled.trim_end_matches('.')));
            }
            None => {
                let base = spelled.trim_end_matches('.');
                prop_assert!(
                    base.is_empty() || base.parse::<std::net::IpAddr>().is_ok(),
                    "{spelled:?}"
                );
            }
        }
    }

    /// Any IP literal, as an authority (bracketed for IPv6), parses and has no name.
    #[test]
    fn ip_literals_have_no_name(ip in any::<std::net::IpAddr>(), port in any::<u16>()) {
        let authority = match ip {
            std::net::IpAddr::V4(v4) => format!("{v4}:{port}"),
            std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        };
        let (host, parsed_port) = parse_authority(&authority).expect("an IP authority parses");
        prop_assert_eq!(parsed_port, port);
        prop_assert_eq!(host.parse::<std::net::IpAddr>().ok(), Some(ip));
        prop_assert_eq!(name_of(&host, port), None);
    }
}
