//! The TCP header view.

use super::checksum;
use super::ip::IpPayload;
use super::{ParseError, TcpSegment, Tunnel};

/// Field offsets of the fixed TCP header.
mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    /// Data offset in the high nibble, in 32-bit words.
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
}

/// Length of the TCP header without options.
pub const HEADER_LEN: usize = 20;

/// A checked view of a TCP header: the fixed part and its options are all in the buffer.
#[derive(Clone, Copy, Debug)]
pub struct TcpHeader<'a> {
    fixed: &'a [u8; HEADER_LEN],
    header_len: usize,
}

impl<'a> TcpHeader<'a> {
    /// Checks that `present` (the segment bytes the frame holds, of a segment `declared_len`
    /// bytes long by the IP header) starts with a whole TCP header.
    ///
    /// A header that does not fit in the declared length is malformed; one that fits but is
    /// not all in the frame was cut by the snap length.
    pub fn new_checked(present: &'a [u8], declared_len: usize) -> Result<Self, ParseError> {
        let Some(fixed) = present.first_chunk::<HEADER_LEN>() else {
            return Err(if declared_len < HEADER_LEN {
                ParseError::Malformed("tcp")
            } else {
                ParseError::Truncated("tcp")
            });
        };
        let header_len = usize::from(fixed[field::DATA_OFF] >> 4) * 4;
        if header_len < HEADER_LEN || header_len > declared_len {
            return Err(ParseError::Malformed("tcp"));
        }
        if header_len > present.len() {
            return Err(ParseError::Truncated("tcp"));
        }
        Ok(TcpHeader { fixed, header_len })
    }

    fn u16_at(&self, off: usize) -> u16 {
        u16::from_be_bytes([self.fixed[off], self.fixed[off + 1]])
    }

    fn u32_at(&self, off: usize) -> u32 {
        u32::from_be_bytes([
            self.fixed[off],
            self.fixed[off + 1],
            self.fixed[off + 2],
            self.fixed[off + 3],
        ])
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        self.u16_at(field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        self.u16_at(field::DST_PORT)
    }

    /// Sequence number.
    pub fn seq(&self) -> u32 {
        self.u32_at(field::SEQ)
    }

    /// Acknowledgment number.
    pub fn ack(&self) -> u32 {
        self.u32_at(field::ACK)
    }

    /// The flag bits of byte 13.
    pub fn flags(&self) -> u8 {
        self.fixed[field::FLAGS]
    }

    /// Receive window, unscaled.
    pub fn window(&self) -> u16 {
        self.u16_at(field::WINDOW)
    }

    /// Header length with options, in bytes (checked: at least 20, within the segment).
    pub fn header_len(&self) -> usize {
        self.header_len
    }
}

/// Reads the TCP segment that `ip` carries (`ip.present`, of `ip.declared` bytes by the IP
/// header). `frame` is the frame that holds it, for the header offsets, and `tunnel` what the
/// frame crossed to reach it; the segment is built whole here, so that it is written once.
#[inline]
pub fn parse_tcp<'a>(
    ip: &IpPayload<'a>,
    frame: &[u8],
    tunnel: Tunnel,
    verify_checksum: bool,
) -> Result<TcpSegment<'a>, ParseError> {
    let (present, declared_len) = (ip.present, ip.declared);
    let hdr = TcpHeader::new_checked(present, declared_len)?;
    let payload = present.get(hdr.header_len()..).unwrap_or_default();
    let base = frame.as_ptr() as usize;
    let ip_off = ip.packet.as_ptr() as usize - base;
    let tcp_off = present.as_ptr() as usize - base;
    Ok(TcpSegment {
        src: ip.src,
        dst: ip.dst,
        sport: hdr.src_port(),
        dport: hdr.dst_port(),
        seq: hdr.seq(),
        ack: hdr.ack(),
        flags: hdr.flags(),
        window: hdr.window(),
        payload,
        payload_len: (declared_len - hdr.header_len()) as u32,
        checksum: checksum::tcp_status(verify_checksum, ip.pseudo, present, declared_len),
        header_off: [ip_off as u16, tcp_off as u16],
        tunnel,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::checksum::PseudoHeader;
    use crate::parse::{flags, ChecksumStatus};
    use std::net::{IpAddr, Ipv4Addr};

    const S: [u8; 4] = [192, 0, 2, 1];
    const D: [u8; 4] = [192, 0, 2, 2];

    fn segment(data_off_words: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut s = vec![0u8; HEADER_LEN];
        s[0..2].copy_from_slice(&1234u16.to_be_bytes());
        s[2..4].copy_from_slice(&80u16.to_be_bytes());
        s[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
        s[8..12].copy_from_slice(&0xa0b0_c0d0u32.to_be_bytes());
        s[12] = data_off_words << 4;
        s[13] = flags::SYN | flags::ACK;
        s[14..16].copy_from_slice(&4096u16.to_be_bytes());
        s.extend_from_slice(options);
        s.extend_from_slice(payload);
        s
    }

    fn parse(present: &[u8], declared: usize) -> Result<TcpSegment<'_>, ParseError> {
        let ip = IpPayload {
            src: IpAddr::V4(Ipv4Addr::from(S)),
            dst: IpAddr::V4(Ipv4Addr::from(D)),
            pseudo: PseudoHeader::V4(&S, &D),
            proto: crate::parse::ip::PROTO_TCP,
            fragment: false,
            packet: present,
            header_len: 0,
            present,
            declared,
        };
        parse_tcp(&ip, present, Tunnel::default(), true)
    }

    #[test]
    fn fields_and_payload_after_options() {
        let s = segment(6, &[1, 1, 1, 0], b"data");
        let t = parse(&s, s.len()).unwrap();
        assert_eq!((t.sport, t.dport), (1234, 80));
        assert_eq!((t.seq, t.ack), (0x0102_0304, 0xa0b0_c0d0));
        assert!(t.has(flags::SYN | flags::ACK));
        assert!(!t.has(flags::FIN));
        assert_eq!(t.window, 4096);
        assert_eq!(t.payload, b"data");
        assert_eq!(t.payload_len, 4);
        // The checksum field is zero, so it does not hold.
        assert_eq!(t.checksum, ChecksumStatus::Bad);
    }

    #[test]
    fn snap_cut_payload_keeps_declared_length() {
        let s = segment(5, &[], b"abcdef");
        let t = parse(&s[..23], s.len()).unwrap();
        assert_eq!(t.payload, b"abc");
        assert_eq!(t.payload_len, 6);
        assert_eq!(t.checksum, ChecksumStatus::Unchecked);
    }

    #[test]
    fn bad_data_offsets_are_malformed() {
        for off in 0..5 {
            let s = segment(off, &[], b"xy");
            assert_eq!(
                parse(&s, s.len()).unwrap_err(),
                ParseError::Malformed("tcp")
            );
        }
        // Offset 15 words (60 bytes) beyond a 22-byte segment.
        let s = segment(15, &[], b"xy");
        assert_eq!(
            parse(&s, s.len()).unwrap_err(),
            ParseError::Malformed("tcp")
        );
    }

    #[test]
    fn header_cut_by_snap_length_is_truncated() {
        let s = segment(6, &[2, 4, 5, 0xb4], b"payload");
        for cut in 0..24 {
            assert_eq!(
                parse(&s[..cut], s.len()).unwrap_err(),
                ParseError::Truncated("tcp"),
                "cut {cut}"
            );
        }
        assert!(parse(&s[..24], s.len()).is_ok());
    }

    #[test]
    fn segment_shorter_than_a_header_by_ip_is_malformed() {
        let s = segment(5, &[], &[]);
        assert_eq!(
            parse(&s[..10], 10).unwrap_err(),
            ParseError::Malformed("tcp")
        );
    }
}
