//! A frame copied from the sensor's packet log (`mtcp_getlastpkt`'s `pkt_info` and bytes).

use shm_layout::layout::PktInfo;

/// A copy of a logged frame and its description. Accessors never panic: a header offset the
/// sensor got wrong gives an empty slice or `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The frame's packet-log sequence.
    pub seq: u64,
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: u64,
    /// Stream offset (in the receiving side's ring) of the payload's first byte.
    pub offset: u64,
    /// Bytes on the wire.
    pub wirelen: u32,
    /// Payload length as the IP header gives it.
    pub payload_len: u32,
    /// Link type (pcap `LINKTYPE_*`).
    pub linktype: u16,
    /// Offset of the IP header in the frame.
    pub ip_off: u16,
    /// Offset of the TCP header.
    pub tcp_off: u16,
    /// Offset of the payload.
    pub payload_off: u16,
    /// The captured bytes.
    pub frame: Vec<u8>,
}

impl Packet {
    pub(crate) fn new(info: &PktInfo, frame: Vec<u8>) -> Packet {
        // The sensor records header offsets for TCP segments; for the other packets (a raw
        // socket's) the IP header is found here, behind the link header.
        let ip_off = if info.ip_off == 0 && info.tcp_off == 0 {
            ip_offset(info.linktype, &frame).unwrap_or(0)
        } else {
            info.ip_off
        };
        Packet {
            seq: info.seq,
            ts_ns: info.ts_ns,
            offset: info.offset,
            wirelen: info.wirelen,
            payload_len: info.payload_len,
            linktype: info.linktype,
            ip_off,
            tcp_off: info.tcp_off,
            payload_off: info.payload_off,
            frame,
        }
    }

    /// Whether the frame is a TCP segment the sensor parsed (its TCP header and payload
    /// offsets are known).
    pub fn is_tcp(&self) -> bool {
        self.tcp_off > self.ip_off
    }

    fn from(&self, off: u16) -> &[u8] {
        self.frame.get(usize::from(off)..).unwrap_or(&[])
    }

    /// The IP header and what follows it.
    pub fn ip(&self) -> &[u8] {
        self.from(self.ip_off)
    }

    /// The TCP header and what follows it.
    pub fn tcp(&self) -> &[u8] {
        self.from(self.tcp_off)
    }

    /// The captured payload (possibly shorter than `payload_len` when the snap length cut it).
    pub fn payload(&self) -> &[u8] {
        self.from(self.payload_off)
    }

    fn tcp_u32(&self, at: usize) -> Option<u32> {
        let b = self.tcp().get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The TCP sequence number (host order).
    pub fn tcp_seq(&self) -> Option<u32> {
        self.tcp_u32(4)
    }

    /// The TCP acknowledgment number.
    pub fn tcp_ack(&self) -> Option<u32> {
        self.tcp_u32(8)
    }

    /// The TCP flags byte.
    pub fn tcp_flags(&self) -> Option<u8> {
        self.tcp().get(13).copied()
    }

    /// The TCP window (unscaled).
    pub fn tcp_window(&self) -> Option<u16> {
        let b = self.tcp().get(14..16)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
}

/// Where the IP header starts in a frame of link type `linktype` (pcap's `LINKTYPE_*`), when
/// the link header says IPv4 or IPv6 follows: Ethernet (with VLAN tags and PPPoE), Linux
/// cooked v1 and v2, raw IP, BSD loopback, PPP and Cisco HDLC. `None` otherwise.
pub fn ip_offset(linktype: u16, frame: &[u8]) -> Option<u16> {
    let be16 = |at: usize| -> Option<u16> {
        let b = frame.get(at..at + 2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    };
    let is_ip = |proto: u16| proto == 0x0800 || proto == 0x86dd;
    let off = match linktype {
        // Ethernet: VLAN tags (802.1Q, 802.1ad, QinQ), then IP or PPPoE session.
        1 => {
            let mut at = 12;
            let mut ty = be16(at)?;
            while matches!(ty, 0x8100 | 0x88a8 | 0x9100) {
                at += 4;
                ty = be16(at)?;
            }
            match ty {
                t if is_ip(t) => at + 2,
                // PPPoE session: 6 bytes of header, then PPP's protocol (IPv4 0x21, IPv6 0x57).
                0x8864 if matches!(be16(at + 8)?, 0x0021 | 0x0057) => at + 10,
                _ => return None,
            }
        }
        // Linux cooked v1: protocol at 14, header 16 bytes.
        113 if is_ip(be16(14)?) => 16,
        // Linux cooked v2: protocol at 0, header 20 bytes.
        276 if is_ip(be16(0)?) => 20,
        // Raw IP.
        101 | 228 | 229 => 0,
        // BSD loopback (host or network order family): 4 bytes.
        0 | 108 => 4,
        // PPP, with or without address and control bytes.
        9 => match be16(0)? {
            0xff03 if matches!(be16(2)?, 0x0021 | 0x0057) => 4,
            0x0021 | 0x0057 => 2,
            _ => return None,
        },
        // Cisco HDLC: address, control, then an Ethernet type.
        104 if is_ip(be16(2)?) => 4,
        _ => return None,
    };
    (off < frame.len())
        .then(|| u16::try_from(off).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ip_header_is_found_behind_each_link_header() {
        use super::ip_offset;
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x81, 0x00, 0, 7, 0x08, 0x00, 0x45]);
        assert_eq!(ip_offset(1, &eth), Some(18));
        let mut pppoe = vec![0u8; 12];
        pppoe.extend_from_slice(&[0x88, 0x64, 0x11, 0, 0, 1, 0, 20, 0x00, 0x21, 0x45]);
        assert_eq!(ip_offset(1, &pppoe), Some(22));
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&[0x08, 0x06, 0, 1]);
        assert_eq!(ip_offset(1, &arp), None);
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x86, 0xdd, 0x60]);
        assert_eq!(ip_offset(113, &sll), Some(16));
        assert_eq!(ip_offset(101, &[0x45, 0]), Some(0));
        assert_eq!(ip_offset(0, &[2, 0, 0, 0, 0x45]), Some(4));
        assert_eq!(ip_offset(9, &[0xff, 0x03, 0x00, 0x21, 0x45]), Some(4));
        assert_eq!(ip_offset(104, &[0x0f, 0, 0x08, 0x00, 0x45]), Some(4));
        // Short frames and unknown link types give nothing, never a panic.
        assert_eq!(ip_offset(1, &[0; 13]), None);
        assert_eq!(ip_offset(147, &[0x45; 40]), None);
    }

    use super::*;

    #[test]
    fn header_fields_are_read_and_bad_offsets_do_not_panic() {
        let mut frame = vec![0u8; 14 + 20];
        frame.extend_from_slice(&[
            0x30, 0x39, 0x00, 0x50, 0, 0, 0, 7, 0, 0, 0, 9, 0x50, 0x18, 0x01, 0x00, 0, 0, 0, 0,
        ]);
        frame.extend_from_slice(b"hi");
        let info = PktInfo {
            ip_off: 14,
            tcp_off: 34,
            payload_off: 54,
            ..Default::default()
        };
        let p = Packet::new(&info, frame);
        assert_eq!(p.tcp_seq(), Some(7));
        assert_eq!(p.tcp_ack(), Some(9));
        assert_eq!(p.tcp_flags(), Some(0x18));
        assert_eq!(p.tcp_window(), Some(256));
        assert_eq!(p.payload(), b"hi");
        let bad = Packet {
            tcp_off: 999,
            payload_off: 999,
            ..p
        };
        assert_eq!(bad.tcp_seq(), None);
        assert_eq!(bad.payload(), b"");
    }
}
