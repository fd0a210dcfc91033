//! Link-layer headers: where the IP packet starts in a frame, and which IP version the link
//! header says it is.

use super::{LinkType, ParseError};

/// Ethertypes that matter here.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service VLAN tag (QinQ outer tag).
    pub const QINQ: u16 = 0x88a8;
    /// The pre-standard QinQ outer tag.
    pub const QINQ_OLD: u16 = 0x9100;
    /// 802.1ah provider backbone bridging: an I-TAG, then the customer's Ethernet header.
    pub const PBB_ITAG: u16 = 0x88e7;
    /// MPLS, unicast.
    pub const MPLS: u16 = 0x8847;
    /// MPLS, multicast (upstream-assigned labels).
    pub const MPLS_MULTICAST: u16 = 0x8848;
    /// PPPoE session stage.
    pub const PPPOE_SESSION: u16 = 0x8864;
    /// Transparent Ethernet bridging (an Ethernet frame, in GRE).
    pub const TEB: u16 = 0x6558;
}

/// Ethernet header: destination, source, ethertype.
const ETH_TYPE: usize = 12;
const ETH_LEN: usize = 14;
/// A VLAN tag: TCI then the inner ethertype.
const VLAN_TAG_LEN: usize = 4;
/// An 802.1ah I-TAG (flags and service ID) and the customer's addresses; the customer's
/// ethertype follows.
const PBB_ITAG_LEN: usize = 16;
/// Linux cooked capture v1: packet type, ARPHRD, address length, 8 address bytes, protocol.
const SLL_PROTO: usize = 14;
const SLL_LEN: usize = 16;
/// Linux cooked capture v2: protocol first, then reserved, ifindex, ARPHRD, type, address.
const SLL2_PROTO: usize = 0;
const SLL2_LEN: usize = 20;
/// BSD loopback: a 4-byte address family.
const NULL_LEN: usize = 4;
/// Cisco HDLC: address, control, ethertype.
const CHDLC_PROTO: usize = 2;
const CHDLC_LEN: usize = 4;
/// NFLOG: family, version, resource id; then TLVs of length (u16), type (u16), value.
const NFLOG_FAMILY: usize = 0;
const NFLOG_LEN: usize = 4;
const NFLOG_TLV_LEN: usize = 4;
/// `NFULA_PAYLOAD`: the TLV holding the packet.
const NFULA_PAYLOAD: u16 = 9;
/// The TLV type's top two bits are netlink flags (nested, byte order).
const NLA_TYPE_MASK: u16 = 0x3fff;

/// BSD address families: `AF_INET` everywhere; `AF_INET6` differs by system (NetBSD/OpenBSD
/// 24, FreeBSD/DragonFly 28, macOS 30), all of which show up in captures.
const AF_INET: u32 = 2;
const AF_INET6_BSD: [u32; 3] = [24, 28, 30];
/// Linux address families, used by NFLOG.
const LINUX_AF_INET: u8 = 2;
const LINUX_AF_INET6: u8 = 10;

/// PPP protocol numbers.
pub(super) const PPP_IPV4: u16 = 0x0021;
pub(super) const PPP_IPV6: u16 = 0x0057;
pub(super) const PPP_MPLS: u16 = 0x0281;

/// The network-layer bytes of a frame, as the link header announces them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L3<'a> {
    /// The link header says IPv4.
    Ipv4(&'a [u8]),
    /// The link header says IPv6.
    Ipv6(&'a [u8]),
    /// The link header says IP; the version nibble tells which.
    Ip(&'a [u8]),
    /// An MPLS label stack (see [`super::tunnel`]).
    Mpls(&'a [u8]),
    /// A PPPoE session header (see [`super::tunnel`]).
    Pppoe(&'a [u8]),
    /// The frame carries something else (ARP, LLDP, another family).
    NotIp,
}

/// Strips the link-layer header of a frame of type `link`.
#[inline]
pub fn strip_link(link: LinkType, data: &[u8]) -> Result<L3<'_>, ParseError> {
    // Untagged Ethernet carrying IP, the most common frame by far, without a call.
    if link == LinkType::Ethernet {
        if let Some((hdr, rest)) = data.split_first_chunk::<ETH_LEN>() {
            match u16::from_be_bytes([hdr[ETH_TYPE], hdr[ETH_TYPE + 1]]) {
                ethertype::IPV4 => return Ok(L3::Ipv4(rest)),
                ethertype::IPV6 => return Ok(L3::Ipv6(rest)),
                _ => {}
            }
        }
    }
    strip_any_link(link, data)
}

/// [`strip_link`] for every link type and Ethernet frame.
#[inline(never)]
fn strip_any_link(link: LinkType, data: &[u8]) -> Result<L3<'_>, ParseError> {
    match link {
        LinkType::Ethernet => {
            let ty = be16(data, ETH_TYPE).ok_or(ParseError::Truncated("ethernet"))?;
            by_ethertype(ty, data.get(ETH_LEN..).unwrap_or_default())
        }
        LinkType::LinuxSll => {
            let ty = be16(data, SLL_PROTO).ok_or(ParseError::Truncated("sll"))?;
            by_ethertype(ty, data.get(SLL_LEN..).unwrap_or_default())
        }
        LinkType::LinuxSll2 => {
            let rest = data.get(SLL2_LEN..).ok_or(ParseError::Truncated("sll2"))?;
            let ty = be16(data, SLL2_PROTO).ok_or(ParseError::Truncated("sll2"))?;
            by_ethertype(ty, rest)
        }
        LinkType::Null => {
            let fam = data
                .first_chunk::<NULL_LEN>()
                .ok_or(ParseError::Truncated("null"))?;
            // The writer's byte order is not recorded; a family is small, so one of the two
            // readings is the right one.
            let (le, be) = (u32::from_le_bytes(*fam), u32::from_be_bytes(*fam));
            Ok(by_bsd_family(le.min(be), &data[NULL_LEN..]))
        }
        LinkType::Loop => {
            let fam = data
                .first_chunk::<NULL_LEN>()
                .ok_or(ParseError::Truncated("loop"))?;
            Ok(by_bsd_family(u32::from_be_bytes(*fam), &data[NULL_LEN..]))
        }
        LinkType::Raw => Ok(L3::Ip(data)),
        LinkType::Ipv4 => Ok(L3::Ipv4(data)),
        LinkType::Ipv6 => Ok(L3::Ipv6(data)),
        LinkType::Ppp => strip_ppp(data),
        LinkType::CHdlc => {
            let ty = be16(data, CHDLC_PROTO).ok_or(ParseError::Truncated("chdlc"))?;
            // Cisco HDLC carries the ethertype itself; VLAN tags do not occur there.
            Ok(l3_for_ethertype(ty, &data[CHDLC_LEN..]))
        }
        LinkType::Nflog => strip_nflog(data),
        LinkType::Other(_) => Err(ParseError::UnsupportedLink),
    }
}

fn be16(data: &[u8], off: usize) -> Option<u16> {
    let b = data.get(off..off + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Follows any number of VLAN tags and 802.1ah I-TAGs, then maps the ethertype.
pub(super) fn by_ethertype(mut ty: u16, mut rest: &[u8]) -> Result<L3<'_>, ParseError> {
    loop {
        match ty {
            ethertype::VLAN | ethertype::QINQ | ethertype::QINQ_OLD => {
                ty = be16(rest, 2).ok_or(ParseError::Truncated("vlan"))?;
                rest = &rest[VLAN_TAG_LEN..];
            }
            ethertype::PBB_ITAG => {
                ty = be16(rest, PBB_ITAG_LEN).ok_or(ParseError::Truncated("pbb"))?;
                rest = &rest[PBB_ITAG_LEN + 2..];
            }
            _ => break,
        }
    }
    Ok(l3_for_ethertype(ty, rest))
}

fn l3_for_ethertype(ty: u16, rest: &[u8]) -> L3<'_> {
    match ty {
        ethertype::IPV4 => L3::Ipv4(rest),
        ethertype::IPV6 => L3::Ipv6(rest),
        ethertype::MPLS | ethertype::MPLS_MULTICAST => L3::Mpls(rest),
        ethertype::PPPOE_SESSION => L3::Pppoe(rest),
        _ => L3::NotIp,
    }
}

fn by_bsd_family(family: u32, rest: &[u8]) -> L3<'_> {
    if family == AF_INET {
        L3::Ipv4(rest)
    } else if AF_INET6_BSD.contains(&family) {
        L3::Ipv6(rest)
    } else {
        L3::NotIp
    }
}

/// PPP in HDLC-like framing: an optional `FF 03` address and control, then the protocol,
/// which may be compressed to one byte (RFC 1661: an odd first byte ends the field).
fn strip_ppp(data: &[u8]) -> Result<L3<'_>, ParseError> {
    let data = match data {
        [0xff, 0x03, rest @ ..] => rest,
        _ => data,
    };
    let (proto, rest) = match data {
        [b, rest @ ..] if b & 1 == 1 => (u16::from(*b), rest),
        [hi, lo, rest @ ..] => (u16::from_be_bytes([*hi, *lo]), rest),
        _ => return Err(ParseError::Truncated("ppp")),
    };
    Ok(match proto {
        PPP_IPV4 => L3::Ipv4(rest),
        PPP_IPV6 => L3::Ipv6(rest),
        PPP_MPLS => L3::Mpls(rest),
        _ => L3::NotIp,
    })
}

/// NFLOG: the packet is the value of the `NFULA_PAYLOAD` TLV; a frame without one (a log
/// entry with no copy of the packet) carries no IP. TLV lengths are in the capturing host's
/// byte order, which is little-endian on every host that writes these captures.
fn strip_nflog(data: &[u8]) -> Result<L3<'_>, ParseError> {
    if data.len() < NFLOG_LEN {
        return Err(ParseError::Truncated("nflog"));
    }
    let family = data[NFLOG_FAMILY];
    let mut off = NFLOG_LEN;
    while off < data.len() {
        let tlv = data
            .get(off..off + NFLOG_TLV_LEN)
            .ok_or(ParseError::Truncated("nflog"))?;
        let len = usize::from(u16::from_le_bytes([tlv[0], tlv[1]]));
        let ty = u16::from_le_bytes([tlv[2], tlv[3]]) & NLA_TYPE_MASK;
        if len < NFLOG_TLV_LEN {
            return Err(ParseError::Malformed("nflog"));
        }
        let value = data
            .get(off + NFLOG_TLV_LEN..off + len)
            .ok_or(ParseError::Truncated("nflog"))?;
        if ty == NFULA_PAYLOAD {
            return Ok(match family {
                LINUX_AF_INET => L3::Ipv4(value),
                LINUX_AF_INET6 => L3::Ipv6(value),
                _ => L3::NotIp,
            });
        }
        // Values are padded to a multiple of 4 bytes.
        off += (len + 3) & !3;
    }
    Ok(L3::NotIp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP4: &[u8] = &[0x45, 0, 0, 20];
    const IP6: &[u8] = &[0x60, 0, 0, 0];

    fn eth(tags: &[(u16, u16)], ty: u16, l3: &[u8]) -> Vec<u8> {
        let mut f = vec![0xaa; 12];
        for &(tpid, tci) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ty.to_be_bytes());
        f.extend_from_slice(l3);
        f
    }

    #[test]
    fn ethernet_plain_vlan_and_qinq() {
        let f = eth(&[], ethertype::IPV4, IP4);
        assert_eq!(strip_link(LinkType::Ethernet, &f), Ok(L3::Ipv4(IP4)));
        let f = eth(&[(ethertype::VLAN, 100)], ethertype::IPV6, IP6);
        assert_eq!(strip_link(LinkType::Ethernet, &f), Ok(L3::Ipv6(IP6)));
        for outer in [ethertype::QINQ, ethertype::QINQ_OLD] {
            let f = eth(
                &[(outer, 10), (ethertype::VLAN, 20), (ethertype::VLAN, 30)],
                ethertype::IPV4,
                IP4,
            );
            assert_eq!(strip_link(LinkType::Ethernet, &f), Ok(L3::Ipv4(IP4)));
        }
        let arp = eth(&[(ethertype::VLAN, 5)], 0x0806, &[0; 28]);
        assert_eq!(strip_link(LinkType::Ethernet, &arp), Ok(L3::NotIp));
    }

    #[test]
    fn provider_backbone_bridging() {
        let mut itag = vec![0, 0, 0x01, 0x00];
        itag.extend_from_slice(&[0xcc; 12]);
        itag.extend_from_slice(&ethertype::VLAN.to_be_bytes());
        itag.extend_from_slice(&[0, 7, 0x08, 0x00]);
        itag.extend_from_slice(IP4);
        let f = eth(&[(ethertype::QINQ, 3)], ethertype::PBB_ITAG, &itag);
        assert_eq!(strip_link(LinkType::Ethernet, &f), Ok(L3::Ipv4(IP4)));
        for cut in 18..36 {
            assert_eq!(
                strip_link(LinkType::Ethernet, &f[..cut]),
                Err(ParseError::Truncated("pbb")),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn ethernet_truncated_headers() {
        let f = eth(&[(ethertype::QINQ, 1), (ethertype::VLAN, 2)], 0x0800, &[]);
        for cut in 0..14 {
            assert_eq!(
                strip_link(LinkType::Ethernet, &f[..cut]),
                Err(ParseError::Truncated("ethernet"))
            );
        }
        for cut in 14..f.len() {
            assert_eq!(
                strip_link(LinkType::Ethernet, &f[..cut]),
                Err(ParseError::Truncated("vlan")),
                "cut {cut}"
            );
        }
        assert_eq!(strip_link(LinkType::Ethernet, &f), Ok(L3::Ipv4(&[])));
    }

    #[test]
    fn linux_sll_and_sll2() {
        let mut f = vec![0u8; 14];
        f.extend_from_slice(&ethertype::IPV6.to_be_bytes());
        f.extend_from_slice(IP6);
        assert_eq!(strip_link(LinkType::LinuxSll, &f), Ok(L3::Ipv6(IP6)));
        assert_eq!(
            strip_link(LinkType::LinuxSll, &f[..15]),
            Err(ParseError::Truncated("sll"))
        );

        let mut f = ethertype::IPV4.to_be_bytes().to_vec();
        f.extend_from_slice(&[0u8; 18]);
        f.extend_from_slice(IP4);
        assert_eq!(strip_link(LinkType::LinuxSll2, &f), Ok(L3::Ipv4(IP4)));
        assert_eq!(
            strip_link(LinkType::LinuxSll2, &f[..19]),
            Err(ParseError::Truncated("sll2"))
        );
        f[0..2].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(strip_link(LinkType::LinuxSll2, &f), Ok(L3::NotIp));
    }

    #[test]
    fn null_family_in_either_byte_order_and_loop() {
        for fam in [2u32, 24, 28, 30, 7] {
            for bytes in [fam.to_le_bytes(), fam.to_be_bytes()] {
                let mut f = bytes.to_vec();
                f.extend_from_slice(IP4);
                let want = match fam {
                    2 => L3::Ipv4(IP4),
                    7 => L3::NotIp,
                    _ => L3::Ipv6(IP4),
                };
                assert_eq!(strip_link(LinkType::Null, &f), Ok(want));
            }
        }
        let mut f = 24u32.to_be_bytes().to_vec();
        f.extend_from_slice(IP6);
        assert_eq!(strip_link(LinkType::Loop, &f), Ok(L3::Ipv6(IP6)));
        f[0..4].copy_from_slice(&24u32.to_le_bytes());
        assert_eq!(strip_link(LinkType::Loop, &f), Ok(L3::NotIp));
        assert_eq!(
            strip_link(LinkType::Null, &f[..3]),
            Err(ParseError::Truncated("null"))
        );
        assert_eq!(
            strip_link(LinkType::Loop, &f[..3]),
            Err(ParseError::Truncated("loop"))
        );
    }

    #[test]
    fn raw_ipv4_ipv6() {
        assert_eq!(strip_link(LinkType::Raw, IP6), Ok(L3::Ip(IP6)));
        assert_eq!(strip_link(LinkType::Ipv4, IP4), Ok(L3::Ipv4(IP4)));
        assert_eq!(strip_link(LinkType::Ipv6, IP6), Ok(L3::Ipv6(IP6)));
    }

    #[test]
    fn ppp_with_and_without_address_control_and_compressed_protocol() {
        let cases: [(&[u8], L3<'_>); 6] = [
            (&[0xff, 0x03, 0x00, 0x21, 0x45], L3::Ipv4(&[0x45])),
            (&[0x00, 0x57, 0x60], L3::Ipv6(&[0x60])),
            (&[0x21, 0x45], L3::Ipv4(&[0x45])),
            (&[0xff, 0x03, 0x57, 0x60], L3::Ipv6(&[0x60])),
            (&[0xc0, 0x21, 1, 2], L3::NotIp),
            (&[0xff, 0x03, 0x80, 0x21], L3::NotIp),
        ];
        for (f, want) in cases {
            assert_eq!(strip_link(LinkType::Ppp, f), Ok(want), "{f:02x?}");
        }
        assert_eq!(
            strip_link(LinkType::Ppp, &[0xff, 0x03, 0x00]),
            Err(ParseError::Truncated("ppp"))
        );
        assert_eq!(
            strip_link(LinkType::Ppp, &[]),
            Err(ParseError::Truncated("ppp"))
        );
    }

    #[test]
    fn cisco_hdlc() {
        let mut f = vec![0x0f, 0x00, 0x08, 0x00];
        f.extend_from_slice(IP4);
        assert_eq!(strip_link(LinkType::CHdlc, &f), Ok(L3::Ipv4(IP4)));
        f[2..4].copy_from_slice(&0x8035u16.to_be_bytes());
        assert_eq!(strip_link(LinkType::CHdlc, &f), Ok(L3::NotIp));
        assert_eq!(
            strip_link(LinkType::CHdlc, &f[..3]),
            Err(ParseError::Truncated("chdlc"))
        );
    }

    fn nflog(family: u8, tlvs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut f = vec![family, 0, 0, 1];
        for &(ty, v) in tlvs {
            f.extend_from_slice(&((v.len() + 4) as u16).to_le_bytes());
            f.extend_from_slice(&ty.to_le_bytes());
            f.extend_from_slice(v);
            while f.len() % 4 != 0 {
                f.push(0);
            }
        }
        f
    }

    #[test]
    fn nflog_finds_the_payload_tlv() {
        let f = nflog(2, &[(1, &[8, 0, 1]), (10, b"prefix\0"), (9, IP4)]);
        assert_eq!(strip_link(LinkType::Nflog, &f), Ok(L3::Ipv4(IP4)));
        let f = nflog(10, &[(9 | 0x4000, IP6)]);
        assert_eq!(strip_link(LinkType::Nflog, &f), Ok(L3::Ipv6(IP6)));
        let f = nflog(2, &[(1, &[8, 0, 1])]);
        assert_eq!(strip_link(LinkType::Nflog, &f), Ok(L3::NotIp));
        let f = nflog(7, &[(9, IP4)]);
        assert_eq!(strip_link(LinkType::Nflog, &f), Ok(L3::NotIp));
    }

    #[test]
    fn nflog_bad_tlvs() {
        let mut f = nflog(2, &[(9, IP4)]);
        f[4..6].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(
            strip_link(LinkType::Nflog, &f),
            Err(ParseError::Malformed("nflog"))
        );
        let f = nflog(2, &[(1, &[8, 0, 1]), (9, IP4)]);
        for cut in 0..f.len() {
            let r = strip_link(LinkType::Nflog, &f[..cut]);
            // A cut on a TLV boundary (or in the first TLV's padding) is a frame without the
            // payload TLV.
            let boundary = matches!(cut, 4 | 11 | 12);
            if boundary {
                assert_eq!(r, Ok(L3::NotIp));
            } else {
                assert_eq!(r, Err(ParseError::Truncated("nflog")), "cut {cut}");
            }
        }
    }

    #[test]
    fn unknown_link_is_unsupported() {
        assert_eq!(
            strip_link(LinkType::Other(147), IP4),
            Err(ParseError::UnsupportedLink)
        );
    }
}
