//! How the analyzers name a connection in their records, the same way in every analyzer and
//! every run on the same input: Zeek's `uid` and `id.*` fields.

use mos_client::FlowInfo;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};

/// A connection's unique id, Zeek-style: `C` and 17 base-62 digits (about 100 bits) of a
/// SHA-256 over what identifies it: the sensor worker, the connection's serial on that worker,
/// its first packet's time and both endpoints. Every analyzer attached to the same sensor
/// computes the same `uid` for the same connection, so `mos-grep`'s matches name the
/// connections of `mos-log`'s records and `mos-pcap` takes them.
pub fn uid(info: &FlowInfo) -> String {
    let mut h = Sha256::new();
    h.update(info.id.worker.to_le_bytes());
    h.update(info.serial.to_le_bytes());
    h.update(info.start_ns.to_le_bytes());
    for a in [info.client, info.server] {
        match a.ip() {
            IpAddr::V4(ip) => h.update(ip.octets()),
            IpAddr::V6(ip) => h.update(ip.octets()),
        }
        h.update(a.port().to_le_bytes());
    }
    let d = h.finalize();
    let mut x = u128::from_le_bytes(d[..16].try_into().expect("16 bytes"));
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut s = String::with_capacity(18);
    s.push('C');
    for _ in 0..17 {
        s.push(DIGITS[(x % 62) as usize] as char);
        x /= 62;
    }
    s
}

/// Zeek's connection tuple, serialized with its dotted names (`id.orig_h`, ...); flatten it
/// into a record with `#[serde(flatten)]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnTuple {
    /// The client's address.
    #[serde(rename = "id.orig_h")]
    pub orig_h: IpAddr,
    /// The client's port.
    #[serde(rename = "id.orig_p")]
    pub orig_p: u16,
    /// The server's address.
    #[serde(rename = "id.resp_h")]
    pub resp_h: IpAddr,
    /// The server's port.
    #[serde(rename = "id.resp_p")]
    pub resp_p: u16,
}

impl ConnTuple {
    /// The tuple of a client and a server endpoint.
    pub fn new(client: SocketAddr, server: SocketAddr) -> ConnTuple {
        ConnTuple {
            orig_h: client.ip(),
            orig_p: client.port(),
            resp_h: server.ip(),
            resp_p: server.port(),
        }
    }
}

/// Capture time in seconds since the epoch, as Zeek's `ts` (microsecond resolution).
pub fn ts_secs(ns: u64) -> f64 {
    (ns / 1_000) as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use mos_client::{FlowId, SideInfo};

    fn info(serial: u64) -> FlowInfo {
        let side = SideInfo {
            state: None,
            isn: None,
            head: 0,
            tail: 0,
            lost: 0,
            packets: 0,
        };
        FlowInfo {
            id: FlowId {
                worker: 0,
                slot: 3,
                generation: 1,
            },
            serial,
            client: "10.0.0.1:1234".parse().unwrap(),
            server: "10.0.0.2:80".parse().unwrap(),
            guessed: false,
            closed: false,
            ended: false,
            end_reason: None,
            start_ns: 1_700_000_000_000_000_000,
            last_ns: 0,
            sides: [side, side],
            tunnel: None,
        }
    }

    #[test]
    fn uid_is_stable_and_tells_connections_apart() {
        let a = uid(&info(1));
        assert_eq!(a.len(), 18);
        assert!(a.starts_with('C'));
        assert!(a[1..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(a, uid(&info(1)));
        assert_ne!(a, uid(&info(2)));
        // The slot and its generation are not part of it: they say where, not which.
        let mut moved = info(1);
        moved.id.slot = 9;
        assert_eq!(a, uid(&moved));
    }

    #[test]
    fn tuple_uses_zeek_names() {
        let t = ConnTuple::new(
            "10.0.0.1:1234".parse().unwrap(),
            "[::1]:443".parse().unwrap(),
        );
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["id.orig_h"], "10.0.0.1");
        assert_eq!(v["id.orig_p"], 1234);
        assert_eq!(v["id.resp_h"], "::1");
        assert_eq!(v["id.resp_p"], 443);
    }

    #[test]
    fn ts_has_microseconds() {
        assert_eq!(ts_secs(1_084_443_427_311_224_999), 1_084_443_427.311_224);
    }
}
