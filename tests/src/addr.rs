//! Endpoint normalisation: the truth, the sensor and hand-written known differences may
//! spell the same endpoint differently (IPv6 case, zero compression, brackets).

use anyhow::{anyhow, Result};
use std::net::{IpAddr, SocketAddr};

/// Parses `ip:port` or `[ipv6]:port` (also a bare `ipv6:port`, split at the last colon)
/// into a `SocketAddr`, whose equality and `Display` are canonical.
pub fn parse_endpoint(s: &str) -> Result<SocketAddr> {
    let s = s.trim();
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(normalize(sa));
    }
    let (ip, port) = s
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("endpoint {s:?} has no port"))?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    // A scope id (`fe80::1%eth0`) is not part of the flow identity in a capture.
    let ip = ip.split('%').next().unwrap_or(ip);
    let ip: IpAddr = ip
        .parse()
        .map_err(|e| anyhow!("endpoint {s:?}: bad address: {e}"))?;
    let port: u16 = port
        .parse()
        .map_err(|e| anyhow!("endpoint {s:?}: bad port: {e}"))?;
    Ok(SocketAddr::new(ip, port))
}

/// Drops IPv6 flow info and scope id so that they never make two spellings differ.
fn normalize(sa: SocketAddr) -> SocketAddr {
    SocketAddr::new(sa.ip(), sa.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_spellings_compare_equal() {
        let a = parse_endpoint("[2001:DB8:0:0::1]:80").unwrap();
        let b = parse_endpoint("[2001:db8::1]:80").unwrap();
        let c = parse_endpoint("2001:db8::0:1:80").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.to_string(), "[2001:db8::1]:80");
    }

    #[test]
    fn ipv4_and_errors() {
        assert_eq!(
            parse_endpoint(" 10.0.0.1:53 ").unwrap().to_string(),
            "10.0.0.1:53"
        );
        assert!(parse_endpoint("10.0.0.1").is_err());
        assert!(parse_endpoint("10.0.0.1:99999").is_err());
    }
}
