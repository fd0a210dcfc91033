//! The canonical 5-tuple: both directions of a connection map to one key.

use std::net::IpAddr;

/// One endpoint: address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// IPv4 or IPv6 address.
    pub addr: IpAddr,
    /// TCP port.
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    /// `ip:port`, or `[ip]:port` for IPv6.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

/// A connection's key, the same for both directions: the lower endpoint first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The lower endpoint (by address, then port).
    pub lo: Endpoint,
    /// The higher endpoint.
    pub hi: Endpoint,
}

impl FlowKey {
    /// The key of a packet from `src` to `dst`, and whether `src` is the key's `lo` endpoint.
    pub fn new(src: Endpoint, dst: Endpoint) -> (FlowKey, bool) {
        if src <= dst {
            (FlowKey { lo: src, hi: dst }, true)
        } else {
            (FlowKey { lo: dst, hi: src }, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_share_a_key() {
        let a = Endpoint {
            addr: "10.0.0.2".parse().unwrap(),
            port: 80,
        };
        let b = Endpoint {
            addr: "10.0.0.1".parse().unwrap(),
            port: 5000,
        };
        let (k1, a_lo) = FlowKey::new(a, b);
        let (k2, b_lo) = FlowKey::new(b, a);
        assert_eq!(k1, k2);
        assert!(!a_lo && b_lo);
    }

    #[test]
    fn display_brackets_ipv6() {
        let e = Endpoint {
            addr: "::1".parse().unwrap(),
            port: 8080,
        };
        assert_eq!(e.to_string(), "[::1]:8080");
        let e = Endpoint {
            addr: "1.2.3.4".parse().unwrap(),
            port: 1,
        };
        assert_eq!(e.to_string(), "1.2.3.4:1");
    }
}
