//! IPv4 and IPv6 header views, and the walk over IPv6 extension headers.
//!
//! The IP header's own length field bounds everything after it: bytes past it (Ethernet
//! padding, trailers) are never payload, and bytes missing before it (cut by the snap length)
//! are reported as a shorter `payload` with the declared `payload_len`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum::PseudoHeader;
use super::{tcp, ParseError, Parsed, Tunnel};

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;

/// Field offsets of the IPv4 header.
mod v4 {
    /// Version (high nibble) and header length in 32-bit words (low nibble).
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    /// Flags (3 bits) and fragment offset (13 bits).
    pub const FLAGS_FRAG: usize = 6;
    pub const PROTO: usize = 9;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    pub const HEADER_LEN: usize = 20;
    pub const MORE_FRAGMENTS: u16 = 0x2000;
    pub const FRAG_OFFSET_MASK: u16 = 0x1fff;
}

/// Field offsets of the IPv6 header.
mod v6 {
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
    pub const HEADER_LEN: usize = 40;
}

/// IPv6 next-header values that the extension-header walk knows.
mod nh {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const AH: u8 = 51;
    pub const NO_NEXT: u8 = 59;
    pub const DEST_OPTS: u8 = 60;
    pub const MOBILITY: u8 = 135;
}

/// A checked IPv4 header: version 4, a header length of at least 20 bytes that the buffer
/// holds, a total length that covers the header.
#[derive(Clone, Copy, Debug)]
pub struct Ipv4Header<'a> {
    fixed: &'a [u8; v4::HEADER_LEN],
    header_len: usize,
    total_len: usize,
}

impl<'a> Ipv4Header<'a> {
    /// Checks the header at the start of `data`.
    pub fn new_checked(data: &'a [u8]) -> Result<Self, ParseError> {
        let fixed = data
            .first_chunk::<{ v4::HEADER_LEN }>()
            .ok_or(ParseError::Truncated("ipv4"))?;
        if fixed[v4::VER_IHL] >> 4 != 4 {
            return Err(ParseError::Malformed("ipv4"));
        }
        let header_len = usize::from(fixed[v4::VER_IHL] & 0x0f) * 4;
        if header_len < v4::HEADER_LEN {
            return Err(ParseError::Malformed("ipv4"));
        }
        if data.len() < header_len {
            return Err(ParseError::Truncated("ipv4"));
        }
        let mut total_len = usize::from(u16::from_be_bytes([
            fixed[v4::TOTAL_LEN],
            fixed[v4::TOTAL_LEN + 1],
        ]));
        if total_len == 0 {
            // Captured on the sending host before TCP segmentation offload split the
            // datagram: the stack leaves the length zero, and the frame is the datagram (as
            // Wireshark assumes too).
            total_len = data.len();
        }
        if total_len < header_len {
            return Err(ParseError::Malformed("ipv4"));
        }
        Ok(Ipv4Header {
            fixed,
            header_len,
            total_len,
        })
    }

    /// Header length with options, in bytes.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Total length of the datagram by the header.
    pub fn total_len(&self) -> usize {
        self.total_len
    }

    /// The protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.fixed[v4::PROTO]
    }

    /// Whether this is a piece of a fragmented datagram (a non-first piece, or a first piece
    /// with more to come).
    pub fn is_fragment(&self) -> bool {
        let ff = u16::from_be_bytes([self.fixed[v4::FLAGS_FRAG], self.fixed[v4::FLAGS_FRAG + 1]]);
        ff & (v4::MORE_FRAGMENTS | v4::FRAG_OFFSET_MASK) != 0
    }

    /// Source address bytes.
    pub fn src(&self) -> &'a [u8; 4] {
        sub_array(self.fixed, v4::SRC)
    }

    /// Destination address bytes.
    pub fn dst(&self) -> &'a [u8; 4] {
        sub_array(self.fixed, v4::DST)
    }
}

/// A checked IPv6 fixed header: version 6 and all 40 bytes in the buffer.
#[derive(Clone, Copy, Debug)]
pub struct Ipv6Header<'a> {
    fixed: &'a [u8; v6::HEADER_LEN],
}

impl<'a> Ipv6Header<'a> {
    /// Checks the header at the start of `data`.
    pub fn new_checked(data: &'a [u8]) -> Result<Self, ParseError> {
        let fixed = data
            .first_chunk::<{ v6::HEADER_LEN }>()
            .ok_or(ParseError::Truncated("ipv6"))?;
        if fixed[0] >> 4 != 6 {
            return Err(ParseError::Malformed("ipv6"));
        }
        Ok(Ipv6Header { fixed })
    }

    /// Payload length (extension headers included) by the header.
    pub fn payload_len(&self) -> usize {
        usize::from(u16::from_be_bytes([
            self.fixed[v6::PAYLOAD_LEN],
            self.fixed[v6::PAYLOAD_LEN + 1],
        ]))
    }

    /// The first next-header value.
    pub fn next_header(&self) -> u8 {
        self.fixed[v6::NEXT_HEADER]
    }

    /// Source address bytes.
    pub fn src(&self) -> &'a [u8; 16] {
        sub_array(self.fixed, v6::SRC)
    }

    /// Destination address bytes.
    pub fn dst(&self) -> &'a [u8; 16] {
        sub_array(self.fixed, v6::DST)
    }
}

/// `N` bytes of a fixed header at a constant offset; the offsets above keep it in bounds.
fn sub_array<const H: usize, const N: usize>(fixed: &[u8; H], off: usize) -> &[u8; N] {
    fixed[off..off + N]
        .try_into()
        .expect("field offset within the fixed header")
}

/// Parses the IP packet at the start of `l3`, by its version nibble. A TCP segment's
/// [`header_off`](super::TcpSegment::header_off) counts from the start of `l3`.
pub fn parse_ip(l3: &[u8], verify_checksum: bool) -> Result<Parsed<'_>, ParseError> {
    match l3.first().map(|b| b >> 4) {
        Some(4) => parse_ipv4(l3, verify_checksum),
        Some(6) => parse_ipv6(l3, verify_checksum),
        Some(_) => Err(ParseError::Malformed("ip")),
        None => Err(ParseError::Truncated("ip")),
    }
}

/// An IP packet's upper-layer part: what follows the IP header (and, for IPv6, the extension
/// headers), with the addresses it needs.
#[derive(Clone, Copy, Debug)]
pub struct IpPayload<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// The addresses as the TCP checksum's pseudo-header takes them.
    pub pseudo: PseudoHeader<'a>,
    /// Protocol of the upper layer (the last next-header for IPv6).
    pub proto: u8,
    /// Whether this is a piece of a fragmented datagram (then `present` is only a piece).
    pub fragment: bool,
    /// The whole IP packet as the frame holds it, from its first header byte (what the
    /// defragmenter takes).
    pub packet: &'a [u8],
    /// Bytes of IP header (options and extension headers included) before the payload.
    pub header_len: usize,
    /// The upper-layer bytes the frame holds: at most `declared`, fewer when cut short.
    pub present: &'a [u8],
    /// The upper layer's length by the IP header.
    pub declared: usize,
}

impl<'a> IpPayload<'a> {
    /// The TCP segment this carries, or the connection-less packet it is. `frame` holds the
    /// packet (the segment's header offsets count from its start), and `tunnel` is what the
    /// frame crossed to reach it.
    #[inline]
    pub fn into_parsed(
        self,
        verify_checksum: bool,
        frame: &[u8],
        tunnel: Tunnel,
    ) -> Result<Parsed<'a>, ParseError> {
        if self.fragment {
            return Ok(Parsed::Fragment {
                src: self.src,
                dst: self.dst,
                proto: self.proto,
                ip: self.packet,
            });
        }
        if self.proto != PROTO_TCP {
            return Ok(Parsed::OtherIp {
                src: self.src,
                dst: self.dst,
                proto: self.proto,
            });
        }
        tcp::parse_tcp(&self, frame, tunnel, verify_checksum).map(Parsed::Tcp)
    }
}

/// Parses an IPv4 packet (the link header said IPv4).
pub fn parse_ipv4(l3: &[u8], verify_checksum: bool) -> Result<Parsed<'_>, ParseError> {
    ipv4_payload(l3)?.into_parsed(verify_checksum, l3, Tunnel::default())
}

/// Parses an IPv6 packet (the link header said IPv6), walking its extension headers.
pub fn parse_ipv6(l3: &[u8], verify_checksum: bool) -> Result<Parsed<'_>, ParseError> {
    ipv6_payload(l3)?.into_parsed(verify_checksum, l3, Tunnel::default())
}

/// Checks the IPv4 header at the start of `l3` and finds its payload.
#[inline]
pub fn ipv4_payload(l3: &[u8]) -> Result<IpPayload<'_>, ParseError> {
    let h = Ipv4Header::new_checked(l3)?;
    let (s, d) = (h.src(), h.dst());
    let end = l3.len().min(h.total_len());
    Ok(IpPayload {
        src: IpAddr::V4(Ipv4Addr::from(*s)),
        dst: IpAddr::V4(Ipv4Addr::from(*d)),
        pseudo: PseudoHeader::V4(s, d),
        proto: h.protocol(),
        fragment: h.is_fragment(),
        packet: l3,
        header_len: h.header_len(),
        present: l3.get(h.header_len()..end).unwrap_or_default(),
        declared: h.total_len() - h.header_len(),
    })
}

/// Checks the IPv6 header at the start of `l3`, walks its extension headers and finds the
/// upper-layer payload.
#[inline]
pub fn ipv6_payload(l3: &[u8]) -> Result<IpPayload<'_>, ParseError> {
    let h = Ipv6Header::new_checked(l3)?;
    let (s, d) = (h.src(), h.dst());
    let declared_total = h.payload_len();
    let end = l3.len().min(v6::HEADER_LEN + declared_total);
    let payload = l3.get(v6::HEADER_LEN..end).unwrap_or_default();
    let at = |proto, fragment, off: usize| IpPayload {
        src: IpAddr::V6(Ipv6Addr::from(*s)),
        dst: IpAddr::V6(Ipv6Addr::from(*d)),
        pseudo: PseudoHeader::V6(s, d),
        proto,
        fragment,
        packet: l3,
        header_len: v6::HEADER_LEN + off,
        present: payload.get(off..).unwrap_or_default(),
        declared: declared_total - off,
    };

    // `off` walks the payload; every extension header is checked against the declared length
    // (else malformed) and then against the bytes present (else truncated). Each step moves
    // at least 8 bytes, so the walk ends.
    let mut next = h.next_header();
    let mut off = 0usize;
    loop {
        let ext_len = match next {
            nh::HOP_BY_HOP | nh::ROUTING | nh::DEST_OPTS | nh::MOBILITY | nh::FRAGMENT | nh::AH => {
                let (Some(&n), Some(&len)) = (payload.get(off), payload.get(off + 1)) else {
                    return Err(ext_short(off + 2, declared_total));
                };
                let ext_len = match next {
                    nh::FRAGMENT => 8,
                    nh::AH => (usize::from(len) + 2) * 4,
                    _ => (usize::from(len) + 1) * 8,
                };
                if off + ext_len > declared_total || off + ext_len > payload.len() {
                    return Err(ext_short(off + ext_len, declared_total));
                }
                if next == nh::FRAGMENT {
                    let fo = u16::from_be_bytes([payload[off + 2], payload[off + 3]]);
                    // Offset in the high 13 bits, the M flag in bit 0.
                    if fo >> 3 != 0 || fo & 1 != 0 {
                        return Ok(at(n, true, off + ext_len));
                    }
                }
                next = n;
                ext_len
            }
            nh::NO_NEXT => return Ok(at(nh::NO_NEXT, false, off)),
            proto => return Ok(at(proto, false, off)),
        };
        off += ext_len;
    }
}

/// The error for an extension header that needs the payload to reach `need` bytes.
fn ext_short(need: usize, declared: usize) -> ParseError {
    if need > declared {
        ParseError::Malformed("ipv6 extension")
    } else {
        ParseError::Truncated("ipv6 extension")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::parse::checksum::tcp_checksum;
    use crate::parse::ChecksumStatus;

    pub(crate) fn tcp_seg(payload: &[u8]) -> Vec<u8> {
        let mut s = vec![0u8; 20];
        s[0..2].copy_from_slice(&40000u16.to_be_bytes());
        s[2..4].copy_from_slice(&443u16.to_be_bytes());
        s[4..8].copy_from_slice(&7u32.to_be_bytes());
        s[12] = 5 << 4;
        s[13] = 0x18;
        s.extend_from_slice(payload);
        s
    }

    /// An IPv4 packet around `seg`, with `opts` (a multiple of 4 bytes) and a right TCP
    /// checksum.
    pub(crate) fn v4_packet(opts: &[u8], proto: u8, frag: u16, seg: &[u8]) -> Vec<u8> {
        let (s, d) = ([10, 1, 0, 1], [10, 1, 0, 2]);
        let hl = 20 + opts.len();
        let mut p = vec![0u8; 20];
        p[0] = 0x40 | (hl / 4) as u8;
        p[2..4].copy_from_slice(&((hl + seg.len()) as u16).to_be_bytes());
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&s);
        p[16..20].copy_from_slice(&d);
        p.extend_from_slice(opts);
        let mut seg = seg.to_vec();
        if proto == PROTO_TCP && seg.len() >= 20 {
            let c = tcp_checksum(PseudoHeader::V4(&s, &d), &seg);
            seg[16..18].copy_from_slice(&c.to_be_bytes());
        }
        p.extend_from_slice(&seg);
        p
    }

    /// An IPv6 packet with extension headers `ext` (already chained, first next-header
    /// `first`) around `seg`, with a right TCP checksum.
    pub(crate) fn v6_packet(first: u8, ext: &[u8], seg: &[u8]) -> Vec<u8> {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s[0] = 0x20;
        s[15] = 1;
        d[0] = 0x20;
        d[15] = 2;
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((ext.len() + seg.len()) as u16).to_be_bytes());
        p[6] = first;
        p[7] = 64;
        p[8..24].copy_from_slice(&s);
        p[24..40].copy_from_slice(&d);
        p.extend_from_slice(ext);
        let mut seg = seg.to_vec();
        if seg.len() >= 20 {
            let c = tcp_checksum(PseudoHeader::V6(&s, &d), &seg);
            seg[16..18].copy_from_slice(&c.to_be_bytes());
        }
        p.extend_from_slice(&seg);
        p
    }

    fn tcp(p: Result<Parsed<'_>, ParseError>) -> crate::parse::TcpSegment<'_> {
        match p {
            Ok(Parsed::Tcp(t)) => t,
            other => panic!("expected TCP, got {other:?}"),
        }
    }

    #[test]
    fn ipv4_with_options_and_good_checksum() {
        let p = v4_packet(
            &[1, 1, 1, 0, 0x94, 4, 0, 0],
            PROTO_TCP,
            0,
            &tcp_seg(b"GET /"),
        );
        let t = tcp(parse_ip(&p, true));
        assert_eq!(t.src, "10.1.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((t.sport, t.dport, t.seq), (40000, 443, 7));
        assert_eq!(t.payload, b"GET /");
        assert_eq!(t.payload_len, 5);
        assert_eq!(t.checksum, ChecksumStatus::Good);
        assert_eq!(tcp(parse_ip(&p, false)).checksum, ChecksumStatus::Unchecked);
    }

    #[test]
    fn ipv4_flipped_byte_is_bad_checksum() {
        let mut p = v4_packet(&[], PROTO_TCP, 0, &tcp_seg(b"xyz"));
        let last = p.len() - 1;
        p[last] ^= 0x40;
        assert_eq!(tcp(parse_ip(&p, true)).checksum, ChecksumStatus::Bad);
    }

    #[test]
    fn trailing_padding_is_not_payload() {
        let mut p = v4_packet(&[], PROTO_TCP, 0, &tcp_seg(b"a"));
        p.extend_from_slice(&[0u8; 5]);
        let t = tcp(parse_ip(&p, true));
        assert_eq!(t.payload, b"a");
        assert_eq!(t.payload_len, 1);
        assert_eq!(t.checksum, ChecksumStatus::Good);
    }

    #[test]
    fn zero_total_length_is_a_tso_frame() {
        let mut p = v4_packet(&[], PROTO_TCP, 0, &tcp_seg(&[7u8; 3000]));
        p[2..4].copy_from_slice(&[0, 0]);
        let t = tcp(parse_ip(&p, true));
        assert_eq!(t.payload.len(), 3000);
        assert_eq!(t.payload_len, 3000);
    }

    #[test]
    fn snap_cut_payload_is_shorter_than_declared() {
        let p = v4_packet(&[], PROTO_TCP, 0, &tcp_seg(b"0123456789"));
        let t = tcp(parse_ip(&p[..p.len() - 4], true));
        assert_eq!(t.payload, b"012345");
        assert_eq!(t.payload_len, 10);
        assert_eq!(t.checksum, ChecksumStatus::Unchecked);
    }

    #[test]
    fn ipv4_fragments_are_fragments() {
        let seg = tcp_seg(b"frag");
        for frag in [0x2000u16, 0x0001, 0x2010, 0x6000] {
            let p = v4_packet(&[], PROTO_TCP, frag, &seg);
            let Ok(Parsed::Fragment {
                proto: PROTO_TCP,
                ip,
                ..
            }) = parse_ip(&p, true)
            else {
                panic!("frag {frag:#x} is not a fragment");
            };
            assert_eq!(ip, &p[..]);
        }
        // Don't-fragment alone is not a fragment.
        let p = v4_packet(&[], PROTO_TCP, 0x4000, &seg);
        tcp(parse_ip(&p, true));
    }

    #[test]
    fn ipv4_non_tcp_is_other_ip() {
        let p = v4_packet(&[], 17, 0, &[0u8; 8]);
        assert!(matches!(
            parse_ip(&p, true),
            Ok(Parsed::OtherIp { proto: 17, .. })
        ));
    }

    #[test]
    fn ipv4_bad_header_fields_are_malformed() {
        let good = v4_packet(&[], PROTO_TCP, 0, &tcp_seg(b""));
        for ihl in 0..5u8 {
            let mut p = good.clone();
            p[0] = 0x40 | ihl;
            assert_eq!(
                parse_ip(&p, true).unwrap_err(),
                ParseError::Malformed("ipv4")
            );
        }
        for bad_total in [1u16, 19] {
            let mut p = good.clone();
            p[2..4].copy_from_slice(&bad_total.to_be_bytes());
            assert_eq!(
                parse_ip(&p, true).unwrap_err(),
                ParseError::Malformed("ipv4")
            );
        }
        // Total length covers the IP header but not a TCP header.
        let mut p = good.clone();
        p[2..4].copy_from_slice(&30u16.to_be_bytes());
        assert_eq!(
            parse_ip(&p, true).unwrap_err(),
            ParseError::Malformed("tcp")
        );
        let mut p = good.clone();
        p[0] = 0x55;
        assert_eq!(parse_ip(&p, true).unwrap_err(), ParseError::Malformed("ip"));
        assert_eq!(
            parse_ipv4(&p, true).unwrap_err(),
            ParseError::Malformed("ipv4")
        );
        assert_eq!(
            parse_ipv6(&good, true).unwrap_err(),
            ParseError::Malformed("ipv6")
        );
    }

    #[test]
    fn ipv6_plain_good_and_bad_checksum() {
        let mut p = v6_packet(PROTO_TCP, &[], &tcp_seg(b"hello6"));
        let t = tcp(parse_ip(&p, true));
        assert_eq!(t.dst, "2000::2".parse::<IpAddr>().unwrap());
        assert_eq!(t.payload, b"hello6");
        assert_eq!(t.checksum, ChecksumStatus::Good);
        p[45] ^= 1;
        assert_eq!(tcp(parse_ip(&p, true)).checksum, ChecksumStatus::Bad);
    }

    fn ext_chain() -> Vec<u8> {
        let mut e = Vec::new();
        // Hop-by-hop, 8 bytes, next: routing.
        e.extend_from_slice(&[nh::ROUTING, 0, 1, 4, 0, 0, 0, 0]);
        // Routing, 16 bytes, next: fragment.
        e.extend_from_slice(&[nh::FRAGMENT, 1, 0, 0, 0, 0, 0, 0]);
        e.extend_from_slice(&[0u8; 8]);
        // Atomic fragment (offset 0, M clear), next: AH.
        e.extend_from_slice(&[nh::AH, 0, 0, 0, 0, 0, 0, 1]);
        // AH, (1 + 2) * 4 = 12 bytes, next: destination options.
        e.extend_from_slice(&[nh::DEST_OPTS, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
        // Destination options padded to 8 bytes, next: mobility.
        e.extend_from_slice(&[nh::MOBILITY, 0, 1, 4, 0, 0, 0, 0]);
        // Mobility, 8 bytes, next: TCP.
        e.extend_from_slice(&[PROTO_TCP, 0, 0, 0, 0, 0, 0, 0]);
        e
    }

    #[test]
    fn ipv6_extension_headers_are_skipped() {
        let p = v6_packet(nh::HOP_BY_HOP, &ext_chain(), &tcp_seg(b"ext"));
        let t = tcp(parse_ip(&p, true));
        assert_eq!(t.payload, b"ext");
        assert_eq!(t.payload_len, 3);
        assert_eq!(t.checksum, ChecksumStatus::Good);
    }

    #[test]
    fn ipv6_fragments_and_no_next_header() {
        for fo in [1u16, 8, 9] {
            let mut e = vec![PROTO_TCP, 0];
            e.extend_from_slice(&fo.to_be_bytes());
            e.extend_from_slice(&[0, 0, 0, 9]);
            let p = v6_packet(nh::FRAGMENT, &e, &tcp_seg(b"f"));
            assert!(matches!(
                parse_ip(&p, true),
                Ok(Parsed::Fragment {
                    proto: PROTO_TCP,
                    ..
                })
            ));
        }
        let p = v6_packet(nh::NO_NEXT, &[], &[]);
        assert!(matches!(
            parse_ip(&p, true),
            Ok(Parsed::OtherIp {
                proto: nh::NO_NEXT,
                ..
            })
        ));
        let p = v6_packet(17, &[], &[0u8; 8]);
        assert!(matches!(
            parse_ip(&p, true),
            Ok(Parsed::OtherIp { proto: 17, .. })
        ));
    }

    #[test]
    fn ipv6_jumbogram_and_overlong_extension_are_malformed() {
        // Payload length 0 with a hop-by-hop header (where a jumbo option would be).
        let mut p = v6_packet(nh::HOP_BY_HOP, &[PROTO_TCP, 0, 0xc2, 4, 0, 1, 0, 0], &[]);
        p[4..6].copy_from_slice(&[0, 0]);
        assert_eq!(
            parse_ip(&p, true).unwrap_err(),
            ParseError::Malformed("ipv6 extension")
        );
        // A routing header claiming 64 bytes in a 28-byte payload.
        let p = v6_packet(
            nh::ROUTING,
            &[PROTO_TCP, 7, 0, 0, 0, 0, 0, 0],
            &tcp_seg(b""),
        );
        assert_eq!(
            parse_ip(&p, true).unwrap_err(),
            ParseError::Malformed("ipv6 extension")
        );
    }

    /// Every prefix of a valid packet parses to an error or to a TCP segment whose payload is
    /// the prefix's share, never a panic.
    #[test]
    fn every_prefix_is_an_error_or_consistent() {
        let packets = [
            v4_packet(&[1, 1, 1, 0], PROTO_TCP, 0, &tcp_seg(b"prefix test")),
            v6_packet(nh::HOP_BY_HOP, &ext_chain(), &tcp_seg(b"prefix test")),
        ];
        for p in &packets {
            let full = tcp(parse_ip(p, true));
            for cut in 0..p.len() {
                match parse_ip(&p[..cut], true) {
                    Err(ParseError::Truncated(_)) => {}
                    Ok(Parsed::Tcp(t)) => {
                        assert_eq!(t.payload_len, full.payload_len);
                        assert_eq!(t.payload, &full.payload[..t.payload.len()]);
                        assert_eq!(p.len() - cut, full.payload.len() - t.payload.len());
                        assert_eq!(t.checksum, ChecksumStatus::Unchecked);
                    }
                    other => panic!("cut {cut}: {other:?}"),
                }
            }
        }
    }
}
