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
///
/// Built once per packet, so it is kept flat: addresses as 128-bit numbers (IPv4 in the low
/// 32 bits, with a family flag so an IPv4 flow never meets an IPv6 one), ports side by side,
/// and the hash computed once at construction, which the flow table uses for probing, growing
/// and removal without hashing again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowKey {
    /// Lower then higher endpoint's address, each as two big-endian halves (high first).
    addrs: [[u64; 2]; 2],
    /// Lower then higher endpoint's port.
    ports: [u16; 2],
    /// Whether the addresses are IPv6.
    v6: bool,
    /// A 32-bit hash of the fields above.
    hash: u32,
}

/// The secret multipliers of the flow hash. Traffic is chosen by whoever sends it: with fixed
/// multipliers an attacker could craft many tuples that land on one index position and turn
/// every lookup into a long probe. Multipliers drawn at random per process make that
/// infeasible without observing the sensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashKeys([u64; 5]);

impl HashKeys {
    /// Multipliers derived from `seed` (SplitMix64), each odd.
    pub fn from_seed(seed: u64) -> Self {
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) | 1
        };
        HashKeys([next(), next(), next(), next(), next()])
    }

    /// Multipliers from a seed the OS randomises per process.
    pub fn random() -> Self {
        use std::hash::BuildHasher;
        Self::from_seed(std::collections::hash_map::RandomState::new().hash_one(0u64))
    }
}

impl Default for HashKeys {
    /// Fixed multipliers, for tests and tools that want reproducible hashes.
    fn default() -> Self {
        HashKeys([
            0x9e37_79b9_7f4a_7c15,
            0xc2b2_ae3d_27d4_eb4f,
            0x1656_67b1_9e37_79f9,
            0x85eb_ca77_c2b2_ae63,
            0x27d4_eb2f_1656_67c5,
        ])
    }
}

/// An address as one number (IPv4 in the low 32 bits).
#[inline]
fn addr_bits(a: &IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

impl FlowKey {
    /// The key of a packet from `src` to `dst`, and whether `src` is the key's lower endpoint,
    /// hashed with the default (fixed) multipliers.
    #[inline]
    pub fn new(src: Endpoint, dst: Endpoint) -> (FlowKey, bool) {
        Self::of_packet(
            &src.addr,
            src.port,
            &dst.addr,
            dst.port,
            &HashKeys::default(),
        )
    }

    /// As [`FlowKey::new`], from a packet's addresses and ports read in place (the tracker's
    /// per-packet path: no `Endpoint` copies of the addresses are made first).
    #[inline]
    pub fn of_packet(
        src: &IpAddr,
        sport: u16,
        dst: &IpAddr,
        dport: u16,
        keys: &HashKeys,
    ) -> (FlowKey, bool) {
        if let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) {
            return Self::of_v4(u32::from(*s), sport, u32::from(*d), dport, keys);
        }
        Self::of_wide(src, sport, dst, dport, keys)
    }

    /// [`FlowKey::of_packet`] on addresses of any family, as 128-bit numbers.
    #[inline]
    fn of_wide(
        src: &IpAddr,
        sport: u16,
        dst: &IpAddr,
        dport: u16,
        keys: &HashKeys,
    ) -> (FlowKey, bool) {
        let v6 = src.is_ipv6() || dst.is_ipv6();
        // Ordered as `Endpoint`'s derived order orders endpoints of one address family: by
        // address, then port.
        let (s, d) = ((addr_bits(src), sport), (addr_bits(dst), dport));
        let src_is_lo = s <= d;
        let (lo, hi) = if src_is_lo { (s, d) } else { (d, s) };
        let split = |a: u128| [(a >> 64) as u64, a as u64];
        let mut key = FlowKey {
            addrs: [split(lo.0), split(hi.0)],
            ports: [lo.1, hi.1],
            v6,
            hash: 0,
        };
        key.hash = key.compute_hash(keys);
        (key, src_is_lo)
    }

    /// [`FlowKey::of_packet`] for two IPv4 addresses (as numbers): the same key, ordered on
    /// 32-bit numbers rather than 128-bit ones.
    #[inline]
    fn of_v4(src: u32, sport: u16, dst: u32, dport: u16, keys: &HashKeys) -> (FlowKey, bool) {
        let (s, d) = ((src, sport), (dst, dport));
        let src_is_lo = s <= d;
        let (lo, hi) = if src_is_lo { (s, d) } else { (d, s) };
        let mut key = FlowKey {
            addrs: [[0, u64::from(lo.0)], [0, u64::from(hi.0)]],
            ports: [lo.1, hi.1],
            v6: false,
            hash: 0,
        };
        key.hash = key.compute_hash(keys);
        (key, src_is_lo)
    }

    /// The key's hash (computed once, when the key was built).
    #[inline]
    pub fn hash32(&self) -> u32 {
        self.hash
    }

    fn compute_hash(&self, keys: &HashKeys) -> u32 {
        // Each word multiplied by its own odd multiplier (independent multiplies, so the
        // per-packet latency is one multiply, not a chain of five), summed, then a full
        // avalanche (MurmurHash3's 64-bit finaliser): the flow table picks its home position
        // from the low bits, which a bare multiply leaves depending on the low input bits only.
        let [[a0, a1], [b0, b1]] = self.addrs;
        let ports =
            u64::from(self.ports[0]) << 32 | u64::from(self.ports[1]) << 8 | u64::from(self.v6);
        let mut h = [a0, a1, b0, b1, ports]
            .iter()
            .zip(keys.0)
            .fold(0u64, |h, (w, k)| h.wrapping_add(w.wrapping_mul(k)));
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        h as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_the_keys_but_equality_does_not() {
        let a = Endpoint {
            addr: "10.0.0.2".parse().unwrap(),
            port: 80,
        };
        let b = Endpoint {
            addr: "10.0.0.1".parse().unwrap(),
            port: 5000,
        };
        let k1 = HashKeys::from_seed(1);
        let k2 = HashKeys::from_seed(2);
        assert_ne!(k1, k2);
        let (x, _) = FlowKey::of_packet(&a.addr, a.port, &b.addr, b.port, &k1);
        let (y, _) = FlowKey::of_packet(&b.addr, b.port, &a.addr, a.port, &k1);
        let (z, _) = FlowKey::of_packet(&a.addr, a.port, &b.addr, b.port, &k2);
        assert_eq!(x, y);
        assert_ne!(x.hash32(), z.hash32());
    }

    #[test]
    fn the_ipv4_path_builds_the_wide_paths_key() {
        let keys = HashKeys::from_seed(7);
        let addrs: [[u8; 4]; 4] = [[10, 0, 0, 1], [10, 0, 0, 2], [255, 1, 2, 3], [0, 0, 0, 0]];
        let ports = [0u16, 80, 5000, 65535];
        for s in addrs {
            for d in addrs {
                for sp in ports {
                    for dp in ports {
                        let (s, d) = (IpAddr::from(s), IpAddr::from(d));
                        let fast = FlowKey::of_packet(&s, sp, &d, dp, &keys);
                        let wide = FlowKey::of_wide(&s, sp, &d, dp, &keys);
                        assert_eq!(fast, wide, "{s}:{sp} -> {d}:{dp}");
                        assert_eq!(fast.0.hash32(), wide.0.hash32());
                    }
                }
            }
        }
    }

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
