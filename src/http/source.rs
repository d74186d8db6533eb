//! The address a request came from. `X-Forwarded-For` is believed only when
//! the TCP peer is one of the configured trusted proxies
//! (`GATEHOUSE_TRUSTED_PROXIES`); the rightmost address that is not itself a
//! trusted proxy is the client, so a client cannot choose its own address by
//! prepending values.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;

/// Networks whose `X-Forwarded-For` is believed, as CIDR blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    pub fn none() -> Self {
        Self(Vec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|(net, len)| in_network(ip, *net, *len))
    }

    /// The client address of a request that reached us from `peer`.
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        // Every X-Forwarded-For header, in order, as one list.
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match parse_hop(hop) {
                Some(ip) => {
                    client = ip;
                    if !self.contains(ip) {
                        return ip;
                    }
                }
                // An unreadable value: stop at the last address we trust.
                None => return client,
            }
        }
        client
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// A comma- or space-separated list of addresses or CIDR blocks.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in s.split([',', ' ']).map(str::trim).filter(|i| !i.is_empty()) {
            let (addr, len) = match item.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (item, None),
            };
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("'{item}' is not an IP address or CIDR block"))?;
            let ip = canonical(ip);
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len {
                Some(l) => l
                    .parse::<u8>()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| format!("'{item}': prefix length must be 0-{max}"))?,
                None => max,
            };
            nets.push((ip, len));
        }
        Ok(Self(nets))
    }
}

/// IPv4-mapped IPv6 addresses count as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    // "1.2.3.4:5678" or "[::1]:5678"
    hop.parse::<SocketAddr>().ok().map(|s| canonical(s.ip()))
}

fn in_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// The request's client address, set by `app::router`'s source layer from
/// the TCP peer and, behind a trusted proxy, `X-Forwarded-For`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceAddr(pub IpAddr);

impl SourceAddr {
    /// Where no peer is known (a router driven without a socket).
    pub const UNKNOWN: SourceAddr = SourceAddr(IpAddr::V4(Ipv4Addr::UNSPECIFIED));

    /// Computes it for a request from its extensions and headers.
    pub fn of(parts: &Parts, trusted: &TrustedProxies) -> SourceAddr {
        match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(peer)) => SourceAddr(trusted.client_addr(peer.ip(), &parts.headers)),
            None => SourceAddr::UNKNOWN,
        }
    }
}

impl std::fmt::Display for SourceAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SourceAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(parts
            .extensions
            .get::<SourceAddr>()
            .copied()
            .unwrap_or(SourceAddr::UNKNOWN))
    }
}

/// The layer `app::router` installs: computes the `SourceAddr` once per
/// request and keeps it in the request's extensions.
pub async fn set_source_addr(
    axum::extract::State(app): axum::extract::State<crate::AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (mut parts, body) = req.into_parts();
    let addr = SourceAddr::of(&parts, &app.trusted_proxies);
    parts.extensions.insert(addr);
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_ignored_from_an_untrusted_peer() {
        let t = TrustedProxies::none();
        assert_eq!(
            t.client_addr(ip("203.0.113.9"), &headers(&["1.1.1.1"])),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let t: TrustedProxies = "10.0.0.0/8, 127.0.0.1".parse().unwrap();
        // A client that prepends a value of its own cannot choose its address.
        let h = headers(&["6.6.6.6, 198.51.100.7", "10.1.2.3"]);
        assert_eq!(t.client_addr(ip("127.0.0.1"), &h), ip("198.51.100.7"));
    }

    #[test]
    fn garbage_stops_at_the_last_trusted_hop() {
        let t: TrustedProxies = "127.0.0.1".parse().unwrap();
        assert_eq!(
            t.client_addr(ip("127.0.0.1"), &headers(&["nonsense"])),
            ip("127.0.0.1")
        );
        assert_eq!(
            t.client_addr(ip("::ffff:127.0.0.1"), &headers(&["[2001:db8::1]:443"])),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn cidr_blocks_are_checked() {
        let t: TrustedProxies = "192.168.0.0/16,fd00::/8".parse().unwrap();
        assert!(t.contains(ip("192.168.44.1")));
        assert!(!t.contains(ip("192.169.0.1")));
        assert!(t.contains(ip("fd12::1")));
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("example.com".parse::<TrustedProxies>().is_err());
    }
}
