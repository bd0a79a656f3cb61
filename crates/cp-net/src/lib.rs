//! Outbound HTTP that cannot reach private networks: one rule for the server's webhooks and the
//! worker's http tool. Loopback, private, link-local (cloud metadata at 169.254.169.254 and
//! fd00:ec2::254 included), unique-local and other non-public addresses are refused after DNS
//! resolution, and the connection is pinned to the addresses that were checked.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How long a name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether an address is not a public one: loopback, private, link-local, unique-local,
/// carrier-grade NAT, benchmarking, unspecified, multicast, broadcast or reserved (IPv4
/// carried inside IPv6 counts as the IPv4 address it carries).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || a == 0
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            // IPv4 embedded in NAT64 (64:ff9b::/96), 6to4 (2002::/16) and the deprecated
            // IPv4-compatible form (::a.b.c.d) reaches the IPv4 address it carries.
            let embedded =
                |hi: u16, lo: u16| std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
            let carried = if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
                Some(embedded(seg[6], seg[7]))
            } else if seg[0] == 0x2002 {
                Some(embedded(seg[1], seg[2]))
            } else if seg[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_loopback() && !v6.is_unspecified() {
                Some(embedded(seg[6], seg[7]))
            } else {
                None
            };
            if let Some(v4) = carried {
                return is_private(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] & 0xffc0) == 0xfec0
        }
    }
}

/// Resolves names for the connection itself and drops private addresses, so a name that
/// resolved to a public address at the check cannot connect to a private one a moment later
/// (DNS rebinding).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host.as_str(), 0))).await??;
            let public: Vec<SocketAddr> = found.filter(|a| !is_private(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A client builder whose connections go to public addresses only: names are resolved by
/// [`PublicOnly`], and no proxy is used (a proxy would resolve the name itself). IP-literal
/// URLs skip every resolver: check each URL with [`check_target`] too.
pub fn public_only(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    builder.no_proxy().dns_resolver(PublicOnly)
}

/// Refuses a URL that is not http(s), has no host, does not resolve, or (unless
/// `allow_private`) whose host is or resolves to a private address. The message never names
/// the address it found.
pub async fn check_target(url: &str, allow_private: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a valid URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    let host = parsed.host_str().ok_or("the URL has no host")?;
    if allow_private {
        return Ok(());
    }
    let port = parsed.port_or_known_default().unwrap_or(443);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| "the host did not resolve within 5 s".to_string())?
            .map_err(|e| format!("the host does not resolve: {e}"))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err("the host does not resolve".into());
    }
    if addrs.into_iter().any(is_private) {
        return Err("the host is or resolves to a private, loopback or link-local address".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "2606:4700::1111",
            "100.128.0.1",
            "64:ff9b::808:808",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn targets_are_checked_after_resolution_without_echoing_the_address() {
        for url in [
            "http://127.0.0.1:9/",
            "http://localhost:9/x",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://10.0.0.1/",
            "http://0x7f000001/",
        ] {
            let refused = check_target(url, false).await.unwrap_err();
            assert!(refused.contains("private"), "{url}: {refused}");
            assert!(!refused.contains("127.0.0.1") && !refused.contains("::1"), "{refused}");
        }
        assert_eq!(check_target("http://127.0.0.1:9/", true).await, Ok(()));
        assert!(check_target("ftp://example.com/", false).await.is_err());
    }

    /// A name checked elsewhere still cannot connect to a private address: the client's own
    /// resolver drops them.
    #[tokio::test]
    async fn the_connection_is_pinned_to_public_addresses() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = public_only(reqwest::Client::builder()).build().unwrap();
        let err = client
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        assert!(format!("{err:?}").contains("no public address"), "{err:?}");
    }
}
