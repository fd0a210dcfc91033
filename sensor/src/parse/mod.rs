//! Packet parsing: checked, zero-copy views of link, IP and TCP headers.
//!
//! [`parse_packet`] validates untrusted bytes once and returns a [`Parsed`] value borrowing the
//! frame; nothing after it can read out of bounds. Payload length comes from the IP header,
//! never the frame length, so Ethernet padding is never payload; a frame cut short by the snap
//! length reports the missing bytes in [`TcpSegment::payload_len`] so the core can treat them
//! as a gap.

pub mod checksum;
pub mod ip;
pub mod link;
pub mod tcp;

use std::net::IpAddr;

pub use crate::capture::{LinkType, RawPacket};

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
    /// An IP packet that is not TCP, or a TCP packet that cannot be read as one (a non-first IP
    /// fragment): mOS's orphan, connection-less traffic.
    OtherIp {
        /// Source address.
        src: IpAddr,
        /// Destination address.
        dst: IpAddr,
        /// IP protocol number (the last next-header for IPv6).
        proto: u8,
        /// Whether this is a piece of a fragmented IP datagram.
        fragment: bool,
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
    ip::parse_ip(l3, verify_checksum)
}
