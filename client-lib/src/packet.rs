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
        Packet {
            seq: info.seq,
            ts_ns: info.ts_ns,
            offset: info.offset,
            wirelen: info.wirelen,
            payload_len: info.payload_len,
            linktype: info.linktype,
            ip_off: info.ip_off,
            tcp_off: info.tcp_off,
            payload_off: info.payload_off,
            frame,
        }
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

#[cfg(test)]
mod tests {
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
