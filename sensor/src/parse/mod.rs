//! Packet parsing: checked, zero-copy views of link, IP and TCP headers.
//!
//! [`parse_packet`] validates untrusted bytes once and returns a [`Parsed`] value borrowing the
//! frame; nothing after it can read out of bounds. Payload length comes from the IP header,
//! never the frame length, so Ethernet padding is never payload; a frame cut short by the snap
//! length reports the missing bytes in [`TcpSegment::payload_len`] so the core can treat them
//! as a gap. Tunnels are stripped on the way (see [`tunnel`]): the segment is the innermost
//! one, and [`TcpSegment::tunnel`] says what it crossed.

pub mod checksum;
pub mod ip;
pub mod link;
pub mod tcp;
pub mod tunnel;

use std::net::IpAddr;

pub use crate::capture::{LinkType, RawPacket};
pub use tunnel::{Tunnel, TunnelId};

/// TCP header flag bits.
pub mod flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// The urgent pointer field is significant.
    pub const URG: u8 = 0x20;
}

/// A TCP segment, its addresses and its payload, borrowed from the frame.
#[derive(Clone, Copy, Debug)]
pub struct TcpSegment<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (meaningful only with [`flags::ACK`]).
    pub ack: u32,
    /// The flag bits of byte 13 (see [`flags`]).
    pub flags: u8,
    /// Receive window, unscaled.
    pub window: u16,
    /// The payload bytes the frame holds: at most `payload_len`, fewer when the snap length cut
    /// the frame.
    pub payload: &'a [u8],
    /// Payload length as the IP header declares it.
    pub payload_len: u32,
    /// Whether the TCP checksum could be checked and whether it held.
    pub checksum: ChecksumStatus,
    /// Offsets in the frame of the (innermost) IP header and of the TCP header (for the
    /// packet log).
    pub header_off: [u16; 2],
    /// The encapsulations the segment came through (none for a plain frame).
    pub tunnel: Tunnel,
}

impl TcpSegment<'_> {
    /// Whether all of `f` (a mask of [`flags`] bits) are set.
    pub fn has(&self, f: u8) -> bool {
        self.flags & f == f
    }
}

/// The outcome of the TCP checksum check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumStatus {
    /// Not computed (checking is off, or the segment is cut short by the snap length).
    Unchecked,
    /// The checksum holds.
    Good,
    /// The checksum does not hold (often a capture on the sending host, before offload).
    Bad,
}

/// What a frame turned out to be.
#[derive(Clone, Copy, Debug)]
pub enum Parsed<'a> {
    /// A TCP segment.
    Tcp(TcpSegment<'a>),
    /// An IP packet that is not TCP: mOS's orphan, connection-less traffic.
    OtherIp {
        /// Source address.
        src: IpAddr,
        /// Destination address.
        dst: IpAddr,
        /// IP protocol number (the last next-header for IPv6).
        proto: u8,
    },
    /// A piece of a fragmented IP datagram, for the [defragmenter](crate::defrag).
    Fragment {
        /// Source address.
        src: IpAddr,
        /// Destination address.
        dst: IpAddr,
        /// IP protocol number (for IPv6, the fragment header's next header).
        proto: u8,
        /// The fragment's bytes from its IP header to the end of the frame.
        ip: &'a [u8],
    },
    /// A frame that carries no IP (ARP, LLDP, ...).
    NotIp,
}

/// Why a frame could not be parsed; each kind has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The frame ends inside a header (shorter than the header needs).
    #[error("frame ends inside the {0} header")]
    Truncated(&'static str),
    /// A header field holds an impossible value (IP version, header length, total length).
    #[error("malformed {0} header")]
    Malformed(&'static str),
    /// The link type is not one mos reads.
    #[error("unsupported link type")]
    UnsupportedLink,
}

/// Parses one frame. `verify_checksum` turns on the TCP checksum check (the result is only
/// reported in [`TcpSegment::checksum`]; a bad checksum never drops the segment).
pub fn parse_packet<'a>(
    pkt: &RawPacket<'a>,
    verify_checksum: bool,
) -> Result<Parsed<'a>, ParseError> {
    let l3 = link::strip_link(pkt.link, pkt.data)?;
    tunnel::walk(l3, pkt.data, verify_checksum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::ip::tests::{tcp_seg, v4_packet, v6_packet};
    use proptest::prelude::*;

    /// Every link type mos reads, and one it does not.
    fn all_links() -> Vec<LinkType> {
        LinkType::READ
            .iter()
            .copied()
            .chain([LinkType::Other(147)])
            .collect()
    }

    fn pkt(link: LinkType, data: &[u8]) -> RawPacket<'_> {
        RawPacket {
            ts_ns: 0,
            link,
            data,
            orig_len: data.len() as u32,
        }
    }

    /// Ethernet, an 802.1ad and an 802.1Q tag, IPv4, TCP, and Ethernet padding.
    fn qinq_frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02; 12];
        f.extend_from_slice(&[0x88, 0xa8, 0, 10, 0x81, 0x00, 0, 20, 0x08, 0x00]);
        f.extend_from_slice(&v4_packet(&[], 6, 0, &tcp_seg(payload)));
        f.resize(f.len().max(64), 0);
        f
    }

    #[test]
    fn qinq_ipv4_tcp_end_to_end() {
        let f = qinq_frame(b"hi");
        let Ok(Parsed::Tcp(t)) = parse_packet(&pkt(LinkType::Ethernet, &f), true) else {
            panic!("not TCP");
        };
        assert_eq!(t.payload, b"hi");
        assert_eq!(t.payload_len, 2);
        assert_eq!(t.checksum, ChecksumStatus::Good);
    }

    #[test]
    fn every_prefix_of_a_frame_is_an_error_or_consistent() {
        let f = qinq_frame(b"0123456789abcdef0123456789");
        let Ok(Parsed::Tcp(full)) = parse_packet(&pkt(LinkType::Ethernet, &f), true) else {
            panic!("not TCP");
        };
        for cut in 0..f.len() {
            match parse_packet(&pkt(LinkType::Ethernet, &f[..cut]), true) {
                Err(ParseError::Truncated(_)) => {}
                Ok(Parsed::Tcp(t)) => {
                    assert_eq!(t.payload_len, full.payload_len);
                    assert_eq!(t.payload, &full.payload[..t.payload.len()]);
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn link_version_disagreeing_with_the_packet_is_malformed() {
        let v6 = v6_packet(6, &[], &tcp_seg(b""));
        assert_eq!(
            parse_packet(&pkt(LinkType::Ipv4, &v6), true).unwrap_err(),
            ParseError::Malformed("ipv4")
        );
        assert!(matches!(
            parse_packet(&pkt(LinkType::Raw, &v6), true),
            Ok(Parsed::Tcp(_))
        ));
    }

    #[test]
    fn non_ip_and_unsupported_links() {
        let mut arp = vec![0xff; 12];
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[0; 28]);
        assert!(matches!(
            parse_packet(&pkt(LinkType::Ethernet, &arp), true),
            Ok(Parsed::NotIp)
        ));
        assert_eq!(
            parse_packet(&pkt(LinkType::Other(999), &arp), true).unwrap_err(),
            ParseError::UnsupportedLink
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            link in 0..LinkType::READ.len() + 1,
            data in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let p = pkt(all_links()[link], &data);
            if let Ok(Parsed::Tcp(t)) = parse_packet(&p, true) {
                prop_assert!(t.payload.len() <= t.payload_len as usize);
            }
        }

        /// Random bytes after a valid IPv4 or IPv6 header prefix reach the deeper parsers.
        #[test]
        fn random_ip_bodies_never_panic(
            v6 in any::<bool>(),
            body in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let mut data = if v6 {
                v6_packet(body.first().copied().unwrap_or(6), &[], &[])
            } else {
                v4_packet(&[], 6, 0, &[])
            };
            let len_field = if v6 { 4 } else { 2 };
            let declared = body.len() as u16 + if v6 { 0 } else { 20 };
            data[len_field..len_field + 2].copy_from_slice(&declared.to_be_bytes());
            data.extend_from_slice(&body);
            if let Ok(Parsed::Tcp(t)) = parse_packet(&pkt(LinkType::Raw, &data), true) {
                prop_assert!(t.payload.len() <= t.payload_len as usize);
            }
        }
    }
}
