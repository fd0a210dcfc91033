//! Tunnels: the walk from the link header to the innermost IP packet.
//!
//! A frame may carry its TCP segment inside encapsulations, nested in any order: MPLS label
//! stacks and PPPoE sessions below IP; GRE (with ERSPAN types I, II and III, transparent
//! Ethernet bridging, Aruba's 802.11 frames and PPTP's enhanced GRE), VXLAN, GTP-U, L2TPv2,
//! AYIYA and IP in IP (4in4, 6in4, 4in6, 6in6) above it. The walk strips one encapsulation per step, at most [`MAX_DEPTH`] of them;
//! a frame that nests deeper is malformed.
//!
//! Each step knows two lengths: the bytes the frame holds (a slice, possibly cut by the snap
//! length) and the bytes the enclosing headers declare (`room`, unbounded at the link layer).
//! A header that needs more than `room` is malformed; one that needs more than the frame holds
//! is truncated. So a cut frame gives `Truncated` or the same segment with fewer payload
//! bytes, never another reading, and an inner IP header that claims more than its tunnel
//! carries is malformed. The payload length comes from the innermost IP header.
//!
//! What the frame crossed is described by a [`Tunnel`]: which encapsulations, the addresses of
//! the outermost IP header that carried one, and the first identifier met (GRE key, ERSPAN
//! session, VXLAN VNI, GTP TEID or MPLS label). The flow key stays the inner 5-tuple.

use std::net::IpAddr;

use super::ip::{self, IpPayload};
use super::link::{self, ethertype, L3};
use super::{LinkType, ParseError, Parsed};

pub use shm_layout::layout::tunnel_kind as kind;

/// Most encapsulations one frame may cross (an MPLS label stack counts once).
pub const MAX_DEPTH: u8 = 8;

/// IP protocol numbers that carry a tunnel.
mod proto {
    pub const IPV4: u8 = 4;
    pub const IPV6: u8 = 41;
    pub const UDP: u8 = 17;
    pub const GRE: u8 = 47;
}

/// UDP ports that announce a tunnel.
mod port {
    /// VXLAN (destination port).
    pub const VXLAN: u16 = 4789;
    /// GTP-U (either port).
    pub const GTP_U: u16 = 2152;
    /// L2TP (either port).
    pub const L2TP: u16 = 1701;
    /// AYIYA (either port).
    pub const AYIYA: u16 = 5072;
}

/// L2TPv2 (RFC 2661) data messages: flags and version, optional length, tunnel and session
/// IDs, optional Ns/Nr, optional offset; then a PPP frame.
mod l2tp {
    pub const FLAG_CONTROL: u16 = 0x8000;
    pub const FLAG_LENGTH: u16 = 0x4000;
    pub const FLAG_SEQUENCE: u16 = 0x0800;
    pub const FLAG_OFFSET: u16 = 0x0200;
    pub const VERSION_MASK: u16 = 0x000f;
    pub const VERSION_2: u16 = 2;
}

/// AYIYA (draft-massar-v6ops-ayiya): identity length and type, signature length and hash,
/// authentication and opcode, next header, epoch; then the identity and the signature.
mod ayiya {
    pub const HEADER_LEN: usize = 8;
    /// Opcode "forward": the payload is a packet.
    pub const OP_FORWARD: u8 = 1;
}

/// GRE (RFC 2784, RFC 2890, and RFC 2637's enhanced GRE for PPTP).
mod gre {
    /// Checksum present (with a reserved word).
    pub const C: u16 = 0x8000;
    /// Routing present (RFC 1701; source routing, not supported).
    pub const R: u16 = 0x4000;
    /// Key present.
    pub const K: u16 = 0x2000;
    /// Sequence number present.
    pub const S: u16 = 0x1000;
    /// Acknowledgment number present (enhanced GRE only).
    pub const A: u16 = 0x0080;
    pub const VERSION_MASK: u16 = 0x0007;
    /// Enhanced GRE (PPTP).
    pub const VERSION_PPTP: u16 = 1;
    /// The fixed header: flags and version, protocol type.
    pub const HEADER_LEN: usize = 4;
    /// ERSPAN type I or II.
    pub const ERSPAN_2: u16 = 0x88be;
    /// ERSPAN type III.
    pub const ERSPAN_3: u16 = 0x22eb;
    /// PPP (PPTP).
    pub const PPP: u16 = 0x880b;
    /// Aruba access points: an 802.11 frame without FCS.
    pub const ARUBA_WLAN: u16 = 0x8200;
}

/// 802.11 data frames (as Aruba access points tunnel them) and the LLC/SNAP header after them.
mod wlan {
    /// Frame control, duration, three addresses, sequence control.
    pub const HEADER_LEN: usize = 24;
    /// The fourth address, when both ToDS and FromDS are set.
    pub const ADDR4_LEN: usize = 6;
    pub const QOS_LEN: usize = 2;
    pub const HT_CONTROL_LEN: usize = 4;
    pub const TYPE_DATA: u8 = 2;
    /// Subtype bits: QoS, and "no data" (null and CF frames without payload).
    pub const SUBTYPE_QOS: u8 = 0x8;
    pub const SUBTYPE_NO_DATA: u8 = 0x4;
    /// Flag bits of frame control's second byte.
    pub const FLAGS_DS: u8 = 0x03;
    pub const FLAG_PROTECTED: u8 = 0x40;
    pub const FLAG_ORDER: u8 = 0x80;
    /// QoS control: the payload is an A-MSDU.
    pub const QOS_AMSDU: u8 = 0x80;
    /// LLC/SNAP: DSAP, SSAP, control, an OUI (RFC 1042 or 802.1H), then the ethertype.
    pub const SNAP_LEN: usize = 8;
    pub const SNAP_RFC1042: [u8; 6] = [0xaa, 0xaa, 0x03, 0, 0, 0];
    pub const SNAP_BRIDGE_TUNNEL: [u8; 6] = [0xaa, 0xaa, 0x03, 0, 0, 0xf8];
}

/// ERSPAN headers.
mod erspan {
    pub const TYPE2_LEN: usize = 8;
    pub const TYPE3_LEN: usize = 12;
    /// The optional platform-specific subheader of type III.
    pub const TYPE3_PLATFORM_LEN: usize = 8;
    /// Session ID: the low 10 bits of bytes 2-3 (both types).
    pub const SESSION_MASK: u16 = 0x03ff;
    /// Type III frame type (bits 6-2 of byte 10): Ethernet or IP.
    pub const FT_ETHERNET: u8 = 0;
    pub const FT_IP: u8 = 2;
}

/// VXLAN (RFC 7348): flags, reserved, VNI, reserved.
mod vxlan {
    pub const HEADER_LEN: usize = 8;
    /// The VNI is valid.
    pub const FLAG_I: u8 = 0x08;
}

/// GTPv1-U (3GPP TS 29.281).
mod gtp {
    /// Flags, message type, length, TEID.
    pub const HEADER_LEN: usize = 8;
    /// With any of E, S, PN: sequence number, N-PDU number, next extension type.
    pub const OPTIONAL_LEN: usize = 4;
    pub const VERSION_1: u8 = 1;
    /// Protocol type GTP (not GTP').
    pub const FLAG_PT: u8 = 0x10;
    pub const FLAG_E: u8 = 0x04;
    pub const FLAGS_OPTIONAL: u8 = 0x07;
    /// T-PDU: the payload is a user packet.
    pub const T_PDU: u8 = 0xff;
}

/// PPPoE session stage (RFC 2516): version and type, code, session, length; then PPP's
/// protocol field.
mod pppoe {
    pub const HEADER_LEN: usize = 6;
    pub const VER_TYPE: u8 = 0x11;
    pub const CODE_SESSION: u8 = 0;
    pub const PPP_PROTO_LEN: usize = 2;
}

/// MPLS label stack entries (RFC 3032) and the pseudowire control word (RFC 4385).
mod mpls {
    pub const ENTRY_LEN: usize = 4;
    pub const BOTTOM_OF_STACK: u32 = 0x100;
    pub const LABEL_SHIFT: u32 = 12;
    pub const CONTROL_WORD_LEN: usize = 4;
}

/// The identifier of a tunnel, as its header carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelId {
    /// GRE key (for PPTP's enhanced GRE, the call ID).
    GreKey(u32),
    /// ERSPAN session ID (10 bits).
    ErspanSession(u16),
    /// VXLAN network identifier (24 bits).
    VxlanVni(u32),
    /// GTP-U tunnel endpoint identifier.
    GtpTeid(u32),
    /// MPLS label (20 bits) on top of the stack.
    MplsLabel(u32),
}

/// What a frame crossed to reach its innermost IP packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tunnel {
    /// Encapsulations crossed, a mask of [`kind`] bits (0: none).
    pub kinds: u16,
    /// How many encapsulations were crossed.
    pub depth: u8,
    /// Source and destination of the outermost IP header, when that header carried a tunnel
    /// (not the TCP segment itself).
    pub outer: Option<[IpAddr; 2]>,
    /// The first identifier met from the outside.
    pub id: Option<TunnelId>,
}

impl Tunnel {
    /// Whether the frame crossed no encapsulation.
    pub fn is_none(&self) -> bool {
        self.kinds == 0
    }

    /// Crosses one more encapsulation of kind `k`.
    fn enter(&mut self, k: u16) -> Result<(), ParseError> {
        if self.depth >= MAX_DEPTH {
            return Err(ParseError::Malformed("tunnel depth"));
        }
        self.depth += 1;
        self.kinds |= k;
        Ok(())
    }

    fn identify(&mut self, id: TunnelId) {
        self.id.get_or_insert(id);
    }
}

/// The bytes of a layer the frame holds, and how many the enclosing headers declare.
#[derive(Clone, Copy)]
struct Layer<'a> {
    l3: L3<'a>,
    room: usize,
}

/// Walks from what the link header of `frame` announced (`l3`) to the innermost IP packet and
/// parses it.
#[inline]
pub(super) fn walk<'a>(
    l3: L3<'a>,
    frame: &'a [u8],
    verify_checksum: bool,
) -> Result<Parsed<'a>, ParseError> {
    // Most frames hold one IP header that carries no tunnel: they take this short way, the
    // same steps as the first round of `walk_layers`. Anything else starts over there (an IP
    // header that carries a tunnel is checked a second time, which costs little beside the
    // tunnel).
    let p = match l3 {
        L3::Ipv4(b) => ip::ipv4_payload(b)?,
        L3::Ipv6(b) => ip::ipv6_payload(b)?,
        L3::Ip(b) => ip_by_version(b)?,
        L3::Mpls(_) | L3::Pppoe(_) | L3::NotIp => return walk_layers(l3, frame, verify_checksum),
    };
    if p.fragment || !matches!(p.proto, proto::IPV4 | proto::IPV6 | proto::GRE | proto::UDP) {
        return p.into_parsed(verify_checksum, frame, Tunnel::default());
    }
    walk_layers(l3, frame, verify_checksum)
}

/// [`walk`] through any number of layers: tunnels, MPLS, PPPoE.
#[inline(never)]
fn walk_layers<'a>(
    l3: L3<'a>,
    frame: &'a [u8],
    verify_checksum: bool,
) -> Result<Parsed<'a>, ParseError> {
    let mut t = Tunnel::default();
    // The innermost IP header crossed: a tunnel that carries no IP leaves its carrier, a
    // connection-less IP packet.
    let mut carrier: Option<IpPayload<'_>> = None;
    let mut layer = Layer {
        l3,
        room: usize::MAX,
    };
    loop {
        let p = match layer.l3 {
            L3::NotIp => {
                return Ok(match carrier {
                    Some(c) => Parsed::OtherIp {
                        src: c.src,
                        dst: c.dst,
                        proto: c.proto,
                    },
                    None => Parsed::NotIp,
                });
            }
            L3::Mpls(b) => {
                t.enter(kind::MPLS)?;
                layer = mpls_stack(b, layer.room, &mut t)?;
                continue;
            }
            L3::Pppoe(b) => {
                t.enter(kind::PPPOE)?;
                layer = pppoe_session(b, layer.room)?;
                continue;
            }
            L3::Ipv4(b) => ip::ipv4_payload(b)?,
            L3::Ipv6(b) => ip::ipv6_payload(b)?,
            L3::Ip(b) => ip_by_version(b)?,
        };
        if p.header_len + p.declared > layer.room {
            return Err(ParseError::Malformed("tunnel"));
        }
        let inner = if p.fragment {
            None
        } else {
            match p.proto {
                proto::IPV4 => Some((
                    kind::IP_IN_IP,
                    Layer {
                        l3: L3::Ipv4(p.present),
                        room: p.declared,
                    },
                )),
                proto::IPV6 => Some((
                    kind::IP_IN_IP,
                    Layer {
                        l3: L3::Ipv6(p.present),
                        room: p.declared,
                    },
                )),
                proto::GRE => Some((kind::GRE, gre_packet(p.present, p.declared, &mut t)?)),
                proto::UDP => udp_tunnel(p.present, p.declared, &mut t)?,
                _ => None,
            }
        };
        match inner {
            Some((k, next)) => {
                t.outer.get_or_insert([p.src, p.dst]);
                t.enter(k)?;
                carrier = Some(p);
                layer = next;
            }
            None => return p.into_parsed(verify_checksum, frame, t),
        }
    }
}

fn ip_by_version(b: &[u8]) -> Result<IpPayload<'_>, ParseError> {
    match b.first().map(|v| v >> 4) {
        Some(4) => ip::ipv4_payload(b),
        Some(6) => ip::ipv6_payload(b),
        Some(_) => Err(ParseError::Malformed("ip")),
        None => Err(ParseError::Truncated("ip")),
    }
}

/// Checks that a header of `n` bytes fits in what the enclosing headers declare (`room`)
/// and then in the frame.
fn need(b: &[u8], room: usize, n: usize, what: &'static str) -> Result<(), ParseError> {
    if n > room {
        Err(ParseError::Malformed(what))
    } else if n > b.len() {
        Err(ParseError::Truncated(what))
    } else {
        Ok(())
    }
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// The layer after `n` bytes of header (which the caller checked with [`need`]).
fn after<'a>(b: &'a [u8], room: usize, n: usize, l3: impl FnOnce(&'a [u8]) -> L3<'a>) -> Layer<'a> {
    Layer {
        l3: l3(&b[n..]),
        room: room - n,
    }
}

/// An Ethernet frame inside a tunnel, VLAN tags and all.
fn ethernet(b: &[u8], room: usize) -> Result<Layer<'_>, ParseError> {
    let l3 = link::strip_link(LinkType::Ethernet, b)?;
    let consumed = match l3 {
        L3::Ipv4(r) | L3::Ipv6(r) | L3::Ip(r) | L3::Mpls(r) | L3::Pppoe(r) => b.len() - r.len(),
        L3::NotIp => 0,
    };
    if consumed > room {
        return Err(ParseError::Malformed("ethernet"));
    }
    Ok(Layer {
        l3,
        room: room - consumed,
    })
}

/// A GRE packet (IP protocol 47): its header, then what its protocol type names.
fn gre_packet<'a>(b: &'a [u8], room: usize, t: &mut Tunnel) -> Result<Layer<'a>, ParseError> {
    need(b, room, gre::HEADER_LEN, "gre")?;
    let flags = be16(b, 0);
    let ptype = be16(b, 2);
    if flags & gre::VERSION_MASK == gre::VERSION_PPTP {
        return pptp(b, room, flags, ptype, t);
    }
    if flags & (gre::R | gre::VERSION_MASK) != 0 {
        // Source routing (RFC 1701) and unknown versions: not decapsulated.
        return Ok(Layer {
            l3: L3::NotIp,
            room,
        });
    }
    let mut len = gre::HEADER_LEN;
    if flags & gre::C != 0 {
        len += 4;
    }
    let key_off = len;
    if flags & gre::K != 0 {
        len += 4;
    }
    if flags & gre::S != 0 {
        len += 4;
    }
    need(b, room, len, "gre")?;
    if flags & gre::K != 0 {
        t.identify(TunnelId::GreKey(be32(b, key_off)));
    }
    let (b, room) = (&b[len..], room - len);
    match ptype {
        ethertype::TEB => ethernet(b, room),
        gre::ERSPAN_2 if flags & gre::S == 0 => {
            // Type I: no ERSPAN header, the mirrored frame follows.
            t.kinds |= kind::ERSPAN;
            ethernet(b, room)
        }
        gre::ERSPAN_2 => {
            t.kinds |= kind::ERSPAN;
            need(b, room, erspan::TYPE2_LEN, "erspan")?;
            t.identify(TunnelId::ErspanSession(be16(b, 2) & erspan::SESSION_MASK));
            ethernet(&b[erspan::TYPE2_LEN..], room - erspan::TYPE2_LEN)
        }
        gre::ERSPAN_3 => {
            t.kinds |= kind::ERSPAN;
            need(b, room, erspan::TYPE3_LEN, "erspan")?;
            t.identify(TunnelId::ErspanSession(be16(b, 2) & erspan::SESSION_MASK));
            let mut len = erspan::TYPE3_LEN;
            if b[11] & 1 != 0 {
                len += erspan::TYPE3_PLATFORM_LEN;
                need(b, room, len, "erspan")?;
            }
            match (b[10] >> 2) & 0x1f {
                erspan::FT_ETHERNET => ethernet(&b[len..], room - len),
                erspan::FT_IP => Ok(after(b, room, len, L3::Ip)),
                _ => Ok(after(b, room, len, |_| L3::NotIp)),
            }
        }
        gre::ARUBA_WLAN => wlan_data(b, room),
        _ => Ok(Layer {
            l3: link::by_ethertype(ptype, b)?,
            room,
        }),
    }
}

/// An 802.11 data frame and its LLC/SNAP header; frames without an unencrypted single payload
/// (management, control, null data, protected frames, A-MSDUs) carry no IP here.
fn wlan_data(b: &[u8], room: usize) -> Result<Layer<'_>, ParseError> {
    let not_ip = Layer {
        l3: L3::NotIp,
        room,
    };
    need(b, room, wlan::HEADER_LEN, "802.11")?;
    let (fc, flags) = (b[0], b[1]);
    let subtype = fc >> 4;
    if (fc >> 2) & 3 != wlan::TYPE_DATA
        || subtype & wlan::SUBTYPE_NO_DATA != 0
        || flags & wlan::FLAG_PROTECTED != 0
    {
        return Ok(not_ip);
    }
    let mut len = wlan::HEADER_LEN;
    if flags & wlan::FLAGS_DS == wlan::FLAGS_DS {
        len += wlan::ADDR4_LEN;
    }
    if subtype & wlan::SUBTYPE_QOS != 0 {
        len += wlan::QOS_LEN;
        need(b, room, len, "802.11")?;
        if b[len - 2] & wlan::QOS_AMSDU != 0 {
            return Ok(not_ip);
        }
        if flags & wlan::FLAG_ORDER != 0 {
            len += wlan::HT_CONTROL_LEN;
        }
    }
    need(b, room, len + wlan::SNAP_LEN, "802.11")?;
    let snap = &b[len..len + 6];
    if snap != wlan::SNAP_RFC1042 && snap != wlan::SNAP_BRIDGE_TUNNEL {
        return Ok(not_ip);
    }
    let len = len + wlan::SNAP_LEN;
    Ok(Layer {
        l3: link::by_ethertype(be16(b, len - 2), &b[len..])?,
        room: room - len,
    })
}

/// PPTP's enhanced GRE (RFC 2637): a key made of the payload length and the call ID, an
/// optional sequence and acknowledgment number, then a PPP frame.
fn pptp<'a>(
    b: &'a [u8],
    room: usize,
    flags: u16,
    ptype: u16,
    t: &mut Tunnel,
) -> Result<Layer<'a>, ParseError> {
    if flags & gre::K == 0 || ptype != gre::PPP {
        return Err(ParseError::Malformed("gre"));
    }
    let mut len = gre::HEADER_LEN + 4;
    if flags & gre::S != 0 {
        len += 4;
    }
    if flags & gre::A != 0 {
        len += 4;
    }
    need(b, room, len, "gre")?;
    let payload_len = usize::from(be16(b, 4));
    t.identify(TunnelId::GreKey(u32::from(be16(b, 6))));
    let room = room - len;
    if payload_len > room {
        return Err(ParseError::Malformed("gre"));
    }
    if payload_len == 0 {
        // An acknowledgment alone.
        return Ok(Layer {
            l3: L3::NotIp,
            room: 0,
        });
    }
    ppp_frame(&b[len..], payload_len)
}

/// A UDP datagram that carries a tunnel by its ports (VXLAN, GTP-U), or `None` for any other.
fn udp_tunnel<'a>(
    b: &'a [u8],
    room: usize,
    t: &mut Tunnel,
) -> Result<Option<(u16, Layer<'a>)>, ParseError> {
    const UDP_LEN: usize = 8;
    need(b, room, UDP_LEN, "udp")?;
    let (sport, dport, len) = (be16(b, 0), be16(b, 2), usize::from(be16(b, 4)));
    let either = |p| sport == p || dport == p;
    let k = if dport == port::VXLAN {
        kind::VXLAN
    } else if either(port::GTP_U) {
        kind::GTP_U
    } else if either(port::L2TP) {
        kind::L2TP
    } else if either(port::AYIYA) {
        kind::AYIYA
    } else {
        return Ok(None);
    };
    if len < UDP_LEN || len > room {
        return Err(ParseError::Malformed("udp"));
    }
    let (b, room) = (&b[UDP_LEN..], len - UDP_LEN);
    let next = match k {
        kind::VXLAN => {
            need(b, room, vxlan::HEADER_LEN, "vxlan")?;
            if b[0] & vxlan::FLAG_I != 0 {
                t.identify(TunnelId::VxlanVni(be32(b, 4) >> 8));
            }
            ethernet(&b[vxlan::HEADER_LEN..], room - vxlan::HEADER_LEN)?
        }
        kind::GTP_U => gtp_u(b, room, t)?,
        kind::L2TP => l2tp_data(b, room)?,
        _ => ayiya_packet(b, room)?,
    };
    Ok(Some((k, next)))
}

/// An L2TPv2 data message and the PPP frame in it; control messages and other versions carry
/// no IP.
fn l2tp_data(b: &[u8], room: usize) -> Result<Layer<'_>, ParseError> {
    need(b, room, 2, "l2tp")?;
    let flags = be16(b, 0);
    if flags & l2tp::FLAG_CONTROL != 0 || flags & l2tp::VERSION_MASK != l2tp::VERSION_2 {
        return Ok(Layer {
            l3: L3::NotIp,
            room,
        });
    }
    let mut room = room;
    let mut len = 2;
    if flags & l2tp::FLAG_LENGTH != 0 {
        need(b, room, len + 2, "l2tp")?;
        // The length covers the whole message, header included.
        let total = usize::from(be16(b, len));
        if total > room {
            return Err(ParseError::Malformed("l2tp"));
        }
        room = total;
        len += 2;
    }
    // Tunnel ID and session ID.
    len += 4;
    if flags & l2tp::FLAG_SEQUENCE != 0 {
        len += 4;
    }
    if flags & l2tp::FLAG_OFFSET != 0 {
        need(b, room, len + 2, "l2tp")?;
        len += 2 + usize::from(be16(b, len));
    }
    need(b, room, len, "l2tp")?;
    ppp_frame(&b[len..], room - len)
}

/// A PPP frame inside a tunnel (PPTP, L2TP).
fn ppp_frame(b: &[u8], room: usize) -> Result<Layer<'_>, ParseError> {
    // PPP's header is at most 4 bytes (address, control, protocol); reading it whole keeps a
    // cut frame from being read another way.
    need(b, room, room.min(4), "ppp")?;
    let l3 = link::strip_link(LinkType::Ppp, b)?;
    let consumed = match l3 {
        L3::Ipv4(r) | L3::Ipv6(r) | L3::Ip(r) | L3::Mpls(r) | L3::Pppoe(r) => b.len() - r.len(),
        L3::NotIp => 0,
    };
    if consumed > room {
        return Err(ParseError::Malformed("ppp"));
    }
    Ok(Layer {
        l3,
        room: room - consumed,
    })
}

/// An AYIYA packet: a forwarded packet whose next header is IPv4 or IPv6; anything else
/// (heartbeats, queries) carries none.
fn ayiya_packet(b: &[u8], room: usize) -> Result<Layer<'_>, ParseError> {
    need(b, room, ayiya::HEADER_LEN, "ayiya")?;
    // The identity is 2^IDLen bytes; the signature SigLen 4-byte words.
    let id_len = 1usize << (b[0] >> 4);
    let sig_len = usize::from(b[1] >> 4) * 4;
    let len = ayiya::HEADER_LEN + id_len + sig_len;
    need(b, room, len, "ayiya")?;
    if b[2] & 0x0f != ayiya::OP_FORWARD {
        return Ok(Layer {
            l3: L3::NotIp,
            room,
        });
    }
    Ok(match b[3] {
        proto::IPV4 => after(b, room, len, L3::Ipv4),
        proto::IPV6 => after(b, room, len, L3::Ipv6),
        _ => Layer {
            l3: L3::NotIp,
            room,
        },
    })
}

/// A GTPv1-U message: a T-PDU carries a user IP packet; other messages (echo, error
/// indication, end marker) carry none.
fn gtp_u<'a>(b: &'a [u8], room: usize, t: &mut Tunnel) -> Result<Layer<'a>, ParseError> {
    need(b, room, gtp::HEADER_LEN, "gtp")?;
    let flags = b[0];
    if flags >> 5 != gtp::VERSION_1 || flags & gtp::FLAG_PT == 0 {
        return Ok(Layer {
            l3: L3::NotIp,
            room,
        });
    }
    let msg_type = b[1];
    // The length counts what follows the mandatory 8 bytes, optional fields included.
    let total = gtp::HEADER_LEN + usize::from(be16(b, 2));
    if total > room {
        return Err(ParseError::Malformed("gtp"));
    }
    let room = total;
    let mut len = gtp::HEADER_LEN;
    if flags & gtp::FLAGS_OPTIONAL != 0 {
        len += gtp::OPTIONAL_LEN;
        need(b, room, len, "gtp")?;
        if flags & gtp::FLAG_E != 0 {
            // Extension headers: a length in 4-byte units (its own two bytes included),
            // content, and the next type in the last byte; type 0 ends the chain. Each is at
            // least 4 bytes, so the walk ends.
            let mut next_type = b[len - 1];
            while next_type != 0 {
                need(b, room, len + 1, "gtp")?;
                let ext_len = usize::from(b[len]) * 4;
                if ext_len == 0 {
                    return Err(ParseError::Malformed("gtp"));
                }
                need(b, room, len + ext_len, "gtp")?;
                next_type = b[len + ext_len - 1];
                len += ext_len;
            }
        }
    }
    t.identify(TunnelId::GtpTeid(be32(b, 4)));
    if msg_type != gtp::T_PDU {
        return Ok(Layer {
            l3: L3::NotIp,
            room,
        });
    }
    Ok(after(b, room, len, L3::Ip))
}

/// An MPLS label stack, then what its bottom carries: IPv4 or IPv6 by the version nibble, or
/// an Ethernet pseudowire (see [`pseudowire`]).
fn mpls_stack<'a>(b: &'a [u8], room: usize, t: &mut Tunnel) -> Result<Layer<'a>, ParseError> {
    let mut off = 0;
    loop {
        need(b, room, off + mpls::ENTRY_LEN, "mpls")?;
        let entry = be32(b, off);
        if off == 0 {
            t.identify(TunnelId::MplsLabel(entry >> mpls::LABEL_SHIFT));
        }
        off += mpls::ENTRY_LEN;
        if entry & mpls::BOTTOM_OF_STACK != 0 {
            break;
        }
    }
    need(b, room, off + 1, "mpls")?;
    let (b, room) = (&b[off..], room - off);
    Ok(match b[0] >> 4 {
        4 => after(b, room, 0, L3::Ipv4),
        6 => after(b, room, 0, L3::Ipv6),
        _ => pseudowire(b, room)?,
    })
}

/// What follows an MPLS stack whose first nibble is neither 4 nor 6: an Ethernet pseudowire
/// with a control word (first nibble 0, RFC 4385) or without one. Nothing in the packet says
/// which, so the ethertype decides: the frame is read with the control word if a known
/// ethertype (IP, VLAN, MPLS, PPPoE) sits where it puts one, else without it if one sits
/// there; otherwise it is not IP (an associated channel, another pseudowire type).
fn pseudowire(b: &[u8], room: usize) -> Result<Layer<'_>, ParseError> {
    const ETH_TYPE: usize = 12;
    let known = |b: &[u8], off: usize| {
        matches!(
            be16(b, off),
            ethertype::IPV4
                | ethertype::IPV6
                | ethertype::VLAN
                | ethertype::QINQ
                | ethertype::QINQ_OLD
                | ethertype::MPLS
                | ethertype::MPLS_MULTICAST
                | ethertype::PPPOE_SESSION
        )
    };
    let cw = mpls::CONTROL_WORD_LEN;
    if b[0] >> 4 == 0 {
        need(b, room, cw + ETH_TYPE + 2, "mpls")?;
        if known(b, cw + ETH_TYPE) {
            return ethernet(&b[cw..], room - cw);
        }
    }
    need(b, room, ETH_TYPE + 2, "mpls")?;
    if known(b, ETH_TYPE) {
        return ethernet(b, room);
    }
    Ok(Layer {
        l3: L3::NotIp,
        room,
    })
}

/// A PPPoE session header and the PPP protocol field.
fn pppoe_session(b: &[u8], room: usize) -> Result<Layer<'_>, ParseError> {
    let len = pppoe::HEADER_LEN + pppoe::PPP_PROTO_LEN;
    need(b, room, len, "pppoe")?;
    if b[0] != pppoe::VER_TYPE || b[1] != pppoe::CODE_SESSION {
        return Err(ParseError::Malformed("pppoe"));
    }
    // The length counts the PPP frame: protocol field and payload.
    let ppp_len = usize::from(be16(b, 4));
    if ppp_len < pppoe::PPP_PROTO_LEN || pppoe::HEADER_LEN + ppp_len > room {
        return Err(ParseError::Malformed("pppoe"));
    }
    let room = pppoe::HEADER_LEN + ppp_len;
    Ok(match be16(b, pppoe::HEADER_LEN) {
        link::PPP_IPV4 => after(b, room, len, L3::Ipv4),
        link::PPP_IPV6 => after(b, room, len, L3::Ipv6),
        link::PPP_MPLS => after(b, room, len, L3::Mpls),
        _ => Layer {
            l3: L3::NotIp,
            room: 0,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::ip::tests::{tcp_seg, v4_packet, v6_packet};
    use crate::parse::{parse_packet, ChecksumStatus, RawPacket, TcpSegment};

    const OUT_SRC: [u8; 4] = [192, 0, 2, 1];
    const OUT_DST: [u8; 4] = [192, 0, 2, 2];
    const PAYLOAD: &[u8] = b"tunnelled payload";

    /// The inner packets: 10.1.0.1:40000 -> 10.1.0.2:443 (or 2000::1 -> 2000::2), with a
    /// right checksum.
    fn inner4() -> Vec<u8> {
        v4_packet(&[], 6, 0, &tcp_seg(PAYLOAD))
    }

    fn inner6() -> Vec<u8> {
        v6_packet(6, &[], &tcp_seg(PAYLOAD))
    }

    fn outer4(proto: u8, body: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&((20 + body.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 64, proto, 0, 0]);
        p.extend_from_slice(&OUT_SRC);
        p.extend_from_slice(&OUT_DST);
        p.extend_from_slice(body);
        p
    }

    fn outer6(next: u8, body: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(body.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&[0xfd; 16]);
        p.extend_from_slice(&[0xfe; 16]);
        p.extend_from_slice(body);
        p
    }

    fn eth(ty: u16, body: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ty.to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    fn udp(sport: u16, dport: u16, body: &[u8]) -> Vec<u8> {
        let mut u = sport.to_be_bytes().to_vec();
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + body.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(body);
        u
    }

    /// A GRE header with `flags` (C, K, S bits) and the optional words they announce.
    fn gre(flags: u16, ptype: u16, key: u32, body: &[u8]) -> Vec<u8> {
        let mut g = flags.to_be_bytes().to_vec();
        g.extend_from_slice(&ptype.to_be_bytes());
        if flags & gre::C != 0 {
            g.extend_from_slice(&[0xab, 0xcd, 0, 0]);
        }
        if flags & gre::K != 0 {
            g.extend_from_slice(&key.to_be_bytes());
        }
        if flags & gre::S != 0 {
            g.extend_from_slice(&77u32.to_be_bytes());
        }
        g.extend_from_slice(body);
        g
    }

    fn mpls(labels: &[u32], body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        for (i, l) in labels.iter().enumerate() {
            let bos = if i + 1 == labels.len() { 0x100 } else { 0 };
            m.extend_from_slice(&((l << 12) | bos | 64).to_be_bytes());
        }
        m.extend_from_slice(body);
        m
    }

    fn vxlan(vni: u32, body: &[u8]) -> Vec<u8> {
        let mut v = vec![vxlan::FLAG_I, 0, 0, 0];
        v.extend_from_slice(&(vni << 8).to_be_bytes());
        v.extend_from_slice(body);
        udp(50123, port::VXLAN, &v)
    }

    fn pkt(link: LinkType, data: &[u8]) -> RawPacket<'_> {
        RawPacket {
            ts_ns: 0,
            link,
            data,
            orig_len: data.len() as u32,
        }
    }

    fn find(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len())
            .position(|w| w == needle)
            .expect("inner packet in the frame")
    }

    /// Parses `frame` and checks the inner segment against `inner` (the inner IP packet
    /// built above, which the frame holds verbatim); then checks every prefix.
    fn tcp_in(link: LinkType, frame: &[u8], inner: &[u8]) -> TcpSegment<'static> {
        let frame: &'static [u8] = frame.to_vec().leak();
        let Ok(Parsed::Tcp(t)) = parse_packet(&pkt(link, frame), true) else {
            panic!("not TCP: {:?}", parse_packet(&pkt(link, frame), true));
        };
        let v6 = inner[0] >> 4 == 6;
        let (src, dst): (IpAddr, IpAddr) = if v6 {
            ("2000::1".parse().unwrap(), "2000::2".parse().unwrap())
        } else {
            ("10.1.0.1".parse().unwrap(), "10.1.0.2".parse().unwrap())
        };
        assert_eq!((t.src, t.sport, t.dst, t.dport), (src, 40000, dst, 443));
        assert_eq!(t.payload, PAYLOAD);
        assert_eq!(t.payload_len, PAYLOAD.len() as u32);
        assert_eq!(t.checksum, ChecksumStatus::Good);
        let ip_off = find(frame, inner);
        let hl = if v6 { 40 } else { 20 };
        assert_eq!(t.header_off, [ip_off as u16, (ip_off + hl) as u16]);
        every_prefix_truncated_or_consistent(link, frame, &t);
        t
    }

    fn every_prefix_truncated_or_consistent(link: LinkType, frame: &[u8], full: &TcpSegment) {
        for cut in 0..frame.len() {
            match parse_packet(&pkt(link, &frame[..cut]), true) {
                Err(ParseError::Truncated(_)) => {}
                Ok(Parsed::Tcp(t)) => {
                    assert_eq!(t.payload_len, full.payload_len, "cut {cut}");
                    assert_eq!(t.payload, &full.payload[..t.payload.len()], "cut {cut}");
                    assert_eq!(t.header_off, full.header_off, "cut {cut}");
                    assert_eq!(t.tunnel, full.tunnel, "cut {cut}");
                }
                other => panic!("cut {cut} of {}: {other:?}", frame.len()),
            }
        }
    }

    fn outer_v4() -> Option<[IpAddr; 2]> {
        Some([IpAddr::from(OUT_SRC), IpAddr::from(OUT_DST)])
    }

    #[test]
    fn gre_with_every_optional_field_combination() {
        for flags in [
            0,
            gre::C,
            gre::K,
            gre::S,
            gre::C | gre::K | gre::S,
            gre::K | gre::S,
        ] {
            let f = eth(
                ethertype::IPV4,
                &outer4(
                    proto::GRE,
                    &gre(flags, ethertype::IPV4, 0xdead_beef, &inner4()),
                ),
            );
            let t = tcp_in(LinkType::Ethernet, &f, &inner4());
            assert_eq!(t.tunnel.kinds, kind::GRE);
            assert_eq!(t.tunnel.depth, 1);
            assert_eq!(t.tunnel.outer, outer_v4());
            let want = (flags & gre::K != 0).then_some(TunnelId::GreKey(0xdead_beef));
            assert_eq!(t.tunnel.id, want, "flags {flags:#x}");
        }
    }

    #[test]
    fn gre_over_ipv6_carrying_ipv6() {
        let f = outer6(proto::GRE, &gre(gre::K, ethertype::IPV6, 9, &inner6()));
        let t = tcp_in(LinkType::Raw, &f, &inner6());
        assert_eq!(t.tunnel.kinds, kind::GRE);
        let [s, d] = t.tunnel.outer.unwrap();
        assert_eq!(s, IpAddr::from([0xfd; 16]));
        assert_eq!(d, IpAddr::from([0xfe; 16]));
    }

    #[test]
    fn gre_transparent_ethernet_bridging_with_a_vlan_tag() {
        let mut tagged = vec![0, 5];
        tagged.extend_from_slice(&ethertype::IPV4.to_be_bytes());
        tagged.extend_from_slice(&inner4());
        let bridged = eth(ethertype::VLAN, &tagged);
        let f = outer4(proto::GRE, &gre(0, ethertype::TEB, 0, &bridged));
        let t = tcp_in(LinkType::Ipv4, &f, &inner4());
        assert_eq!(t.tunnel.kinds, kind::GRE);
    }

    #[test]
    fn gre_carrying_mpls() {
        let f = outer4(
            proto::GRE,
            &gre(0, ethertype::MPLS, 0, &mpls(&[100, 200], &inner4())),
        );
        let t = tcp_in(LinkType::Raw, &f, &inner4());
        assert_eq!(t.tunnel.kinds, kind::GRE | kind::MPLS);
        assert_eq!(t.tunnel.depth, 2);
        assert_eq!(t.tunnel.id, Some(TunnelId::MplsLabel(100)));
    }

    #[test]
    fn erspan_types_one_two_and_three() {
        let mirrored = eth(ethertype::IPV4, &inner4());
        // Type I: no sequence number, no ERSPAN header.
        let f = outer4(proto::GRE, &gre(0, gre::ERSPAN_2, 0, &mirrored));
        let t = tcp_in(LinkType::Raw, &f, &inner4());
        assert_eq!(t.tunnel.kinds, kind::GRE | kind::ERSPAN);
        assert_eq!(t.tunnel.id, None);
        // Type II: version 1, session 0x123.
        let mut h2 = vec![0x10, 0x07, 0x01, 0x23, 0, 0, 0, 9];
        h2.extend_from_slice(&mirrored);
        let f = outer4(proto::GRE, &gre(gre::S, gre::ERSPAN_2, 0, &h2));
        let t = tcp_in(LinkType::Raw, &f, &inner4());
        assert_eq!(t.tunnel.kinds, kind::GRE | kind::ERSPAN);
        assert_eq!(t.tunnel.id, Some(TunnelId::ErspanSession(0x123)));
        // Type III, without and with the platform subheader, Ethernet or IP frames.
        for (o_bit, ft) in [(0u8, erspan::FT_ETHERNET), (1, erspan::FT_ETHERNET), (1, 2)] {
            let mut h3 = vec![0x20, 0, 0x02, 0x05, 1, 2, 3, 4, 0, 0, ft << 2, o_bit];
            if o_bit == 1 {
                h3.extend_from_slice(&[0xee; 8]);
            }
            h3.extend_from_slice(
                if ft == erspan::FT_IP {
                    inner4()
                } else {
                    mirrored.clone()
                }
                .as_slice(),
            );
            let f = outer4(proto::GRE, &gre(gre::S, gre::ERSPAN_3, 0, &h3));
            let t = tcp_in(LinkType::Raw, &f, &inner4());
            assert_eq!(t.tunnel.id, Some(TunnelId::ErspanSession(0x205)));
        }
    }

    #[test]
    fn aruba_wlan_qos_data_frame() {
        let mut w = vec![0x88, 0x01, 0, 0];
        w.extend_from_slice(&[0x11; 18]);
        w.extend_from_slice(&[0x40, 0x7d, 0, 0]);
        w.extend_from_slice(&[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00]);
        w.extend_from_slice(&inner4());
        let f = outer4(proto::GRE, &gre(0, gre::ARUBA_WLAN, 0, &w));
        let t = tcp_in(LinkType::Raw, &f, &inner4());
        assert_eq!(t.tunnel.kinds, kind::GRE);
        // Protected, it carries no readable IP: the carrier is other IP.
        let mut p = w.clone();
        p[1] |= wlan::FLAG_PROTECTED;
        let f = outer4(proto::GRE, &gre(0, gre::ARUBA_WLAN, 0, &p));
        assert!(matches!(
            parse_packet(&pkt(LinkType::Raw, &f), true),
            Ok(Parsed::OtherIp {
                proto: proto::GRE,
                ..
            })
        ));
    }

    #[test]
    fn l2tp_data_message_with_ppp() {
        let mut ppp = vec![0xff, 0x03, 0x00, 0x57];
        ppp.extend_from_slice(&inner6());
        // Length, sequence and offset (2 bytes of padding) present.
        let mut m = vec![0x4a, 0x02];
        m.extend_from_slice(&((16 + ppp.len()) as u16).to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 2, 0, 5, 0, 6, 0, 2, 0xee, 0xee]);
        m.extend_from_slice(&ppp);
        let f = outer4(proto::UDP, &udp(1701, 1701, &m));
        let t = tcp_in(LinkType::Raw, &f, &inner6());
        assert_eq!(t.tunnel.kinds, kind::L2TP);
        // A control message carries no IP.
        let f = outer4(
            proto::UDP,
            &udp(1701, 1701, &[0xc8, 0x02, 0, 12, 0, 1, 0, 0, 0, 0, 0, 0]),
        );
        assert!(matches!(
            parse_packet(&pkt(LinkType::Raw, &f), true),
            Ok(Parsed::OtherIp { proto: 17, .. })
        ));
    }

    #[test]
    fn ayiya_forwarding_ipv6() {
        // A 16-byte identity (IDLen 4), a 20-byte signature (SigLen 5), opcode forward.
        let mut a = vec![0x41, 0x52, 0x11, proto::IPV6, 0, 0, 0, 1];
        a.extend_from_slice(&[0x77; 36]);
        a.extend_from_slice(&inner6());
        let f = outer4(proto::UDP, &udp(5072, 5072, &a));
        let t = tcp_in(LinkType::Raw, &f, &inner6());
        assert_eq!(t.tunnel.kinds, kind::AYIYA);
    }

    #[test]
    fn pptp_enhanced_gre_with_ppp() {
        let mut ppp = vec![0xff, 0x03, 0x00, 0x21];
        ppp.extend_from_slice(&inner4());
        let mut g = vec![0x30, 0x81, 0x88, 0x0b];
        g.extend_from_slice(&(ppp.len() as u16).to_be_bytes());
        g.extend_from_slice(&0x4242u16.to_be_bytes());
        g.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
        g.extend_from_slice(&ppp);
        let f = outer4(proto::GRE, &g);
        let t = tcp_in(LinkType::Raw, &f, &inner4());
        assert_eq!(t.tunnel.kinds, kind::GRE);
        assert_eq!(t.tunnel.id, Some(TunnelId::GreKey(0x4242)));
    }

    #[test]
    fn vxlan_records_the_vni() {
        let f = eth(
            ethertype::IPV4,
            &outer4(
                proto::UDP,
                &vxlan(0x00ab_cdef, &eth(ethertype::IPV6, &inner6())),
            ),
        );
        let t = tcp_in(LinkType::Ethernet, &f, &inner6());
        assert_eq!(t.tunnel.kinds, kind::VXLAN);
        assert_eq!(t.tunnel.id, Some(TunnelId::VxlanVni(0x00ab_cdef)));
        assert_eq!(t.tunnel.outer, outer_v4());
    }

    fn gtp(flags: u8, msg: u8, opt: &[u8], body: &[u8]) -> Vec<u8> {
        let mut g = vec![flags, msg];
        g.extend_from_slice(&((opt.len() + body.len()) as u16).to_be_bytes());
        g.extend_from_slice(&0x0102_0304u32.to_be_bytes());
        g.extend_from_slice(opt);
        g.extend_from_slice(body);
        udp(2152, 2152, &g)
    }

    #[test]
    fn gtp_u_plain_with_sequence_and_with_extension_headers() {
        let cases: [(u8, Vec<u8>); 3] = [
            (0x30, vec![]),
            (0x32, vec![0, 1, 0, 0]),
            // E: a PDU session container (4 bytes) then a 8-byte extension, then none.
            (
                0x34,
                vec![0, 0, 0, 0x85, 1, 0x10, 0x01, 0x40, 2, 1, 2, 3, 4, 5, 6, 0],
            ),
        ];
        for (flags, opt) in cases {
            let f = outer4(proto::UDP, &gtp(flags, gtp::T_PDU, &opt, &inner4()));
            let t = tcp_in(LinkType::Raw, &f, &inner4());
            assert_eq!(t.tunnel.kinds, kind::GTP_U, "flags {flags:#x}");
            assert_eq!(t.tunnel.id, Some(TunnelId::GtpTeid(0x0102_0304)));
        }
        // An echo request carries no user packet: the carrier is connection-less UDP.
        let f = outer4(proto::UDP, &gtp(0x32, 1, &[0, 1, 0, 0], &[]));
        assert!(matches!(
            parse_packet(&pkt(LinkType::Raw, &f), true),
            Ok(Parsed::OtherIp { proto: 17, .. })
        ));
        // An extension header of length 0 is malformed.
        let f = outer4(
            proto::UDP,
            &gtp(0x34, gtp::T_PDU, &[0, 0, 0, 0x85, 0, 0, 0, 0], &inner4()),
        );
        assert_eq!(
            parse_packet(&pkt(LinkType::Raw, &f), true).unwrap_err(),
            ParseError::Malformed("gtp")
        );
    }

    #[test]
    fn mpls_stack_carrying_ipv4_and_ipv6() {
        let f = eth(ethertype::MPLS, &mpls(&[16, 17, 18], &inner4()));
        let t = tcp_in(LinkType::Ethernet, &f, &inner4());
        assert_eq!(t.tunnel.kinds, kind::MPLS);
        assert_eq!(t.tunnel.id, Some(TunnelId::MplsLabel(16)));
        assert_eq!(t.tunnel.outer, None);
        let f = eth(ethertype::MPLS_MULTICAST, &mpls(&[0xfffff], &inner6()));
        let t = tcp_in(LinkType::Ethernet, &f, &inner6());
        assert_eq!(t.tunnel.id, Some(TunnelId::MplsLabel(0xfffff)));
    }

    #[test]
    fn mpls_ethernet_pseudowire_with_and_without_control_word() {
        let with_cw = [&[0u8, 0, 0, 7][..], &eth(ethertype::IPV4, &inner4())].concat();
        let f = eth(ethertype::MPLS, &mpls(&[30, 31], &with_cw));
        tcp_in(LinkType::Ethernet, &f, &inner4());
        // No control word, a destination MAC whose first nibble is 0.
        let f = eth(
            ethertype::MPLS,
            &mpls(&[30], &eth(ethertype::IPV4, &inner4())),
        );
        tcp_in(LinkType::Ethernet, &f, &inner4());
        // An associated channel (first nibble 1) is not IP.
        let f = eth(
            ethertype::MPLS,
            &mpls(
                &[13],
                &[0x10, 0, 0, 0x21, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
        );
        assert!(matches!(
            parse_packet(&pkt(LinkType::Ethernet, &f), true),
            Ok(Parsed::NotIp)
        ));
    }

    #[test]
    fn pppoe_session_ipv4_and_ipv6() {
        for (proto, inner) in [(0x0021u16, inner4()), (0x0057, inner6())] {
            let mut s = vec![0x11, 0, 0x12, 0x34];
            s.extend_from_slice(&((inner.len() + 2) as u16).to_be_bytes());
            s.extend_from_slice(&proto.to_be_bytes());
            s.extend_from_slice(&inner);
            let f = eth(ethertype::PPPOE_SESSION, &s);
            let t = tcp_in(LinkType::Ethernet, &f, &inner);
            assert_eq!(t.tunnel.kinds, kind::PPPOE);
            assert_eq!(t.tunnel.outer, None);
        }
        // LCP is not IP; a length shorter than the protocol field is malformed.
        let f = eth(
            ethertype::PPPOE_SESSION,
            &[0x11, 0, 0, 1, 0, 4, 0xc0, 0x21, 1, 1],
        );
        assert!(matches!(
            parse_packet(&pkt(LinkType::Ethernet, &f), true),
            Ok(Parsed::NotIp)
        ));
        let f = eth(ethertype::PPPOE_SESSION, &[0x11, 0, 0, 1, 0, 1, 0, 0x21]);
        assert_eq!(
            parse_packet(&pkt(LinkType::Ethernet, &f), true).unwrap_err(),
            ParseError::Malformed("pppoe")
        );
    }

    #[test]
    fn ip_in_ip_all_four_combinations() {
        let cases = [
            (outer4(proto::IPV4, &inner4()), inner4()),
            (outer4(proto::IPV6, &inner6()), inner6()),
            (outer6(proto::IPV4, &inner4()), inner4()),
            (outer6(proto::IPV6, &inner6()), inner6()),
        ];
        for (f, inner) in cases {
            let t = tcp_in(LinkType::Raw, &f, &inner);
            assert_eq!(t.tunnel.kinds, kind::IP_IN_IP);
            assert_eq!(t.tunnel.depth, 1);
            assert!(t.tunnel.outer.is_some());
        }
        // The protocol and the inner version disagree.
        let f = outer4(proto::IPV4, &inner6());
        assert_eq!(
            parse_packet(&pkt(LinkType::Raw, &f), true).unwrap_err(),
            ParseError::Malformed("ipv4")
        );
    }

    #[test]
    fn nested_vlan_mpls_gre_vxlan() {
        let inner_eth = eth(ethertype::IPV4, &inner4());
        let gre_pkt = outer4(
            proto::GRE,
            &gre(gre::K, ethertype::IPV4, 5, &{
                let mut u = outer4(proto::UDP, &vxlan(42, &inner_eth));
                u[12..16].copy_from_slice(&[198, 51, 100, 1]);
                u
            }),
        );
        let mut tagged = vec![0, 10];
        tagged.extend_from_slice(&ethertype::MPLS.to_be_bytes());
        tagged.extend_from_slice(&mpls(&[1000], &gre_pkt));
        let f = eth(ethertype::VLAN, &tagged);
        let t = tcp_in(LinkType::Ethernet, &f, &inner4());
        assert_eq!(t.tunnel.kinds, kind::MPLS | kind::GRE | kind::VXLAN);
        assert_eq!(t.tunnel.depth, 3);
        assert_eq!(t.tunnel.outer, outer_v4(), "the outermost IP header");
        assert_eq!(
            t.tunnel.id,
            Some(TunnelId::MplsLabel(1000)),
            "the first id met"
        );
    }

    fn nest_ip_in_ip(depth: usize) -> Vec<u8> {
        (0..depth).fold(inner4(), |p, _| outer4(proto::IPV4, &p))
    }

    #[test]
    fn depth_limit() {
        let f = nest_ip_in_ip(usize::from(MAX_DEPTH));
        let t = tcp_in(LinkType::Raw, &f, &inner4());
        assert_eq!(t.tunnel.depth, MAX_DEPTH);
        let f = nest_ip_in_ip(usize::from(MAX_DEPTH) + 1);
        assert_eq!(
            parse_packet(&pkt(LinkType::Raw, &f), true).unwrap_err(),
            ParseError::Malformed("tunnel depth")
        );
    }

    #[test]
    fn inner_packet_longer_than_its_tunnel_is_malformed() {
        let mut f = outer4(proto::IPV4, &inner4());
        let short = (f.len() - 1) as u16;
        f[2..4].copy_from_slice(&short.to_be_bytes());
        assert_eq!(
            parse_packet(&pkt(LinkType::Raw, &f), true).unwrap_err(),
            ParseError::Malformed("tunnel")
        );
    }

    #[test]
    fn fragments_inside_and_outside_a_tunnel_go_to_the_defragmenter() {
        // Inside: the fragment handed on is the inner IP packet.
        let frag = v4_packet(&[], 6, 0x2000, &tcp_seg(PAYLOAD));
        let f = outer4(proto::GRE, &gre(0, ethertype::IPV4, 0, &frag));
        let Ok(Parsed::Fragment { proto: 6, ip, .. }) = parse_packet(&pkt(LinkType::Raw, &f), true)
        else {
            panic!("inner fragment not found");
        };
        assert_eq!(ip, &frag[..]);
        // Outside: the carrier itself, whole.
        let mut f = outer4(proto::GRE, &gre(0, ethertype::IPV4, 0, &inner4()));
        f[6] = 0x20;
        let Ok(Parsed::Fragment {
            proto: proto::GRE,
            ip,
            ..
        }) = parse_packet(&pkt(LinkType::Raw, &f), true)
        else {
            panic!("outer fragment not found");
        };
        assert_eq!(ip, &f[..]);
    }

    #[test]
    fn tunnels_without_ip_leave_their_carrier() {
        // VXLAN carrying ARP, and UDP on another port.
        let arp = eth(0x0806, &[0; 28]);
        for f in [
            outer4(proto::UDP, &vxlan(1, &arp)),
            outer4(proto::UDP, &udp(53, 5353, b"dns")),
        ] {
            let Ok(Parsed::OtherIp { src, proto, .. }) =
                parse_packet(&pkt(LinkType::Raw, &f), true)
            else {
                panic!("not other IP");
            };
            assert_eq!((src, proto), (IpAddr::from(OUT_SRC), proto::UDP));
        }
        // A UDP length beyond the IP payload, on a tunnel port.
        let mut f = outer4(proto::UDP, &vxlan(1, &arp));
        f[24..26].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(
            parse_packet(&pkt(LinkType::Raw, &f), true).unwrap_err(),
            ParseError::Malformed("udp")
        );
    }

    proptest::proptest! {
        /// Random bytes behind each way into a tunnel never panic, and a segment found there
        /// keeps its payload within its declared length.
        #[test]
        fn random_tunnel_bodies_never_panic(
            way in 0usize..8,
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..160),
        ) {
            let (link, f) = match way {
                0 => (LinkType::Raw, outer4(proto::GRE, &body)),
                1 => (LinkType::Raw, outer4(proto::UDP, &udp(1, port::VXLAN, &body))),
                2 => (LinkType::Raw, outer6(proto::UDP, &udp(port::GTP_U, 9, &body))),
                3 => (LinkType::Ethernet, eth(ethertype::MPLS, &body)),
                4 => (LinkType::Ethernet, eth(ethertype::PPPOE_SESSION, &body)),
                5 => (LinkType::Raw, outer4(proto::UDP, &udp(port::L2TP, 9, &body))),
                6 => (LinkType::Raw, outer4(proto::UDP, &udp(port::AYIYA, 9, &body))),
                _ => (LinkType::Raw, outer4(proto::GRE, &gre(gre::S, gre::ERSPAN_3, 0, &body))),
            };
            if let Ok(Parsed::Tcp(t)) = parse_packet(&pkt(link, &f), true) {
                proptest::prop_assert!(t.payload.len() <= t.payload_len as usize);
                proptest::prop_assert!(usize::from(t.header_off[1]) < f.len());
            }
        }
    }
}
