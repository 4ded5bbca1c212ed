//! Who the client is: its address (through trusted reverse proxies) and user agent, worked
//! out once per HTTP request or WebSocket upgrade and used by every rate limit and quota.
//!
//! `Forwarded` and `X-Forwarded-For` are believed only when the connection comes from a
//! proxy listed in `TRUSTED_PROXIES`: anyone else could write any address there. The
//! chain is read from the right (the hop nearest to us) and the first address that is not
//! itself a trusted proxy is the client, as RFC 7239 §7.4 advises; an entry that names
//! no address (`unknown`, an obfuscated identifier) stops the walk at the last proxy.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, header};
use ipnet::IpNet;

use crate::auth::ClientInfo;

/// Longest `User-Agent` recorded on a session.
const MAX_USER_AGENT_CHARS: usize = 512;

/// The client behind a request that reached us from `peer`.
pub fn client_info(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> ClientInfo {
    ClientInfo {
        ip: Some(client_ip(peer.ip(), headers, trusted)),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(MAX_USER_AGENT_CHARS).collect()),
    }
}

pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let chain = forwarded_chain(headers);
    let mut client = peer;
    for hop in chain.iter().rev() {
        match hop {
            Some(ip) if is_trusted(ip) => client = *ip,
            Some(ip) => return *ip,
            None => return client,
        }
    }
    client
}

/// The addresses a request passed through, client first: from `Forwarded` when present,
/// else `X-Forwarded-For`. `None` for an entry that names no address.
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect::<Vec<_>>()
    };
    let forwarded = values(header::FORWARDED);
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.trim().split_once('='))
                    .find(|(key, _)| key.eq_ignore_ascii_case("for"))
                    .and_then(|(_, node)| parse_node(node.trim_matches('"')))
            })
            .collect();
    }
    values(header::HeaderName::from_static("x-forwarded-for"))
        .iter()
        .map(|v| parse_node(v))
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711` or `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    node.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn forwarded_headers_from_strangers_are_ignored() {
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=203.0.113.9"),
        ]);
        assert_eq!(client_ip(ip("198.51.100.7"), &h, &[]), ip("198.51.100.7"));
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            client_ip(ip("198.51.100.7"), &h, &trusted),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy = ip("10.0.0.2");
        // The client may prepend anything; only what our proxies appended counts.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9, 10.0.0.5")]);
        assert_eq!(client_ip(proxy, &h, &trusted), ip("203.0.113.9"));
        let h = headers(&[(
            "forwarded",
            "for=1.2.3.4, for=\"[2001:db8::17]:4711\";proto=https, for=10.0.0.5",
        )]);
        assert_eq!(client_ip(proxy, &h, &trusted), ip("2001:db8::17"));
        let h = headers(&[("forwarded", "for=unknown, for=10.0.0.5")]);
        assert_eq!(client_ip(proxy, &h, &trusted), ip("10.0.0.5"));
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
        let h = headers(&[("x-forwarded-for", "203.0.113.9:5555")]);
        assert_eq!(client_ip(proxy, &h, &trusted), ip("203.0.113.9"));
    }
}
