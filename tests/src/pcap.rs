//! A minimal pcap writer and Ethernet/IP/TCP packet builder for synthetic captures.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};

pub const LINKTYPE_ETHERNET: u32 = 1;

/// Writes classic pcap (microsecond timestamps, little-endian).
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?; // thiszone
        out.write_all(&0u32.to_le_bytes())?; // sigfigs
        out.write_all(&65535u32.to_le_bytes())?; // snaplen
        out.write_all(&LINKTYPE_ETHERNET.to_le_bytes())?;
        Ok(PcapWriter { out })
    }

    pub fn packet(&mut self, ts_us: u64, frame: &[u8]) -> io::Result<()> {
        let len = u32::try_from(frame.len()).map_err(|_| io::Error::other("frame too long"))?;
        let secs = u32::try_from(ts_us / 1_000_000)
            .map_err(|_| io::Error::other("timestamp past 2106"))?;
        self.out.write_all(&secs.to_le_bytes())?;
        self.out
            .write_all(&((ts_us % 1_000_000) as u32).to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(frame)
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// TCP flag bits, as the sensor names them.
pub use mos_sensor::parse::flags;

/// The fields of one TCP segment to build.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Announced on SYNs as the MSS option when set.
    pub mss: Option<u16>,
    pub payload: &'a [u8],
}

/// RFC 1071 one's-complement sum, folded, not yet inverted.
fn sum16(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// An Ethernet frame carrying the segment over IPv4 or IPv6 (by the address family, which
/// must be the same on both ends), with valid IP and TCP checksums.
pub fn tcp_frame(s: &Segment<'_>) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(24 + s.payload.len());
    tcp.extend_from_slice(&s.src.port().to_be_bytes());
    tcp.extend_from_slice(&s.dst.port().to_be_bytes());
    tcp.extend_from_slice(&s.seq.to_be_bytes());
    tcp.extend_from_slice(&s.ack.to_be_bytes());
    let opts: Vec<u8> = match s.mss {
        Some(m) if s.flags & flags::SYN != 0 => {
            let [a, b] = m.to_be_bytes();
            vec![2, 4, a, b]
        }
        _ => Vec::new(),
    };
    let data_offset = ((20 + opts.len()) / 4) as u8;
    tcp.push(data_offset << 4);
    tcp.push(s.flags);
    tcp.extend_from_slice(&s.window.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    tcp.extend_from_slice(&opts);
    tcp.extend_from_slice(s.payload);
    let tcp_len = tcp.len();

    let mut frame = Vec::with_capacity(14 + 40 + tcp_len);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // dst MAC (locally administered)
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // src MAC
    match (s.src.ip(), s.dst.ip()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let pseudo = sum16(
                sum16(sum16(0, &a.octets()), &b.octets()),
                &[0, 6, (tcp_len >> 8) as u8, tcp_len as u8],
            );
            let c = fold(sum16(pseudo, &tcp));
            tcp[16..18].copy_from_slice(&c.to_be_bytes());
            frame.extend_from_slice(&0x0800u16.to_be_bytes());
            let total = (20 + tcp_len) as u16;
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip[6] = 0x40; // don't fragment
            ip[8] = 64;
            ip[9] = 6;
            ip[12..16].copy_from_slice(&a.octets());
            ip[16..20].copy_from_slice(&b.octets());
            let c = fold(sum16(0, &ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            frame.extend_from_slice(&ip);
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let len32 = (tcp_len as u32).to_be_bytes();
            let pseudo = sum16(
                sum16(sum16(sum16(0, &a.octets()), &b.octets()), &len32),
                &[0, 0, 0, 6],
            );
            let c = fold(sum16(pseudo, &tcp));
            tcp[16..18].copy_from_slice(&c.to_be_bytes());
            frame.extend_from_slice(&0x86ddu16.to_be_bytes());
            frame.extend_from_slice(&[0x60, 0, 0, 0]);
            frame.extend_from_slice(&(tcp_len as u16).to_be_bytes());
            frame.extend_from_slice(&[6, 64]);
            frame.extend_from_slice(&a.octets());
            frame.extend_from_slice(&b.octets());
        }
        _ => panic!("mixed address families {} -> {}", s.src, s.dst),
    }
    frame.extend_from_slice(&tcp);
    frame
}

/// Cuts the IP datagram in Ethernet `frame` (as [`tcp_frame`] builds it: a 20-byte IPv4
/// header, or a 40-byte IPv6 header with no extension) into fragments of `piece` payload
/// bytes (a multiple of 8), as Ethernet frames in order, with identification `id`. IPv4
/// fragments lose the don't-fragment bit and get their header checksum; IPv6 ones get a
/// fragment header. A datagram that fits in one piece comes back whole.
pub fn fragment_frame(frame: &[u8], piece: usize, id: u32) -> Vec<Vec<u8>> {
    assert!(
        piece >= 8 && piece.is_multiple_of(8),
        "fragment pieces are multiples of 8 bytes"
    );
    let v6 = frame[12..14] == [0x86, 0xdd];
    let hl = if v6 { 40 } else { 20 };
    let ip = &frame[14..];
    let payload = &ip[hl..];
    if payload.len() <= piece {
        return vec![frame.to_vec()];
    }
    let mut out = Vec::new();
    for off in (0..payload.len()).step_by(piece) {
        let end = (off + piece).min(payload.len());
        let more = end < payload.len();
        let mut f = frame[..14 + hl].to_vec();
        if v6 {
            let next = f[14 + 6];
            f[14 + 6] = 44;
            f.extend_from_slice(&[next, 0]);
            f.extend_from_slice(&(off as u16 | u16::from(more)).to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
            f[14 + 4..14 + 6].copy_from_slice(&((8 + end - off) as u16).to_be_bytes());
        } else {
            let h = &mut f[14..14 + 20];
            h[2..4].copy_from_slice(&((20 + end - off) as u16).to_be_bytes());
            h[4..6].copy_from_slice(&(id as u16).to_be_bytes());
            let ff = (off / 8) as u16 | if more { 0x2000 } else { 0 };
            h[6..8].copy_from_slice(&ff.to_be_bytes());
            h[10..12].copy_from_slice(&[0, 0]);
            let c = fold(sum16(0, h));
            h[10..12].copy_from_slice(&c.to_be_bytes());
        }
        f.extend_from_slice(&payload[off..end]);
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
        tcp_frame(&Segment {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            seq: 1,
            ack: 2,
            flags: flags::ACK | flags::PSH,
            window: 1000,
            mss: None,
            payload,
        })
    }

    #[test]
    fn ipv4_checksums_verify() {
        let f = seg("10.0.0.1:1000", "10.0.0.2:80", b"hello");
        let ip = &f[14..34];
        assert_eq!(fold(sum16(0, ip)), 0, "IP header checksum");
        let tcp = &f[34..];
        let pseudo = sum16(
            sum16(sum16(0, &ip[12..16]), &ip[16..20]),
            &[0, 6, 0, tcp.len() as u8],
        );
        assert_eq!(fold(sum16(pseudo, tcp)), 0, "TCP checksum");
    }

    #[test]
    fn ipv6_checksum_verifies() {
        let f = seg("[fd00::1]:1000", "[fd00::2]:80", b"odd");
        let ip = &f[14..54];
        let tcp = &f[54..];
        let pseudo = sum16(
            sum16(
                sum16(sum16(0, &ip[8..24]), &ip[24..40]),
                &(tcp.len() as u32).to_be_bytes(),
            ),
            &[0, 0, 0, 6],
        );
        assert_eq!(fold(sum16(pseudo, tcp)), 0);
    }

    #[test]
    fn pcap_header_and_record() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.packet(1_500_000, &[1, 2, 3]).unwrap();
        let b = w.finish().unwrap();
        assert_eq!(b.len(), 24 + 16 + 3);
        assert_eq!(&b[24..28], &1u32.to_le_bytes());
        assert_eq!(&b[28..32], &500_000u32.to_le_bytes());
    }
}
