//! Deterministic synthetic captures whose reassembled streams are known exactly.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::BufWriter;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::addr::parse_endpoint;
use crate::pcap::{flags, fragment_frame, tcp_frame, PcapWriter, Segment};

/// xorshift64*: deterministic across platforms, no dependency.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn range(&mut self, lo: u64, hi_inclusive: u64) -> u64 {
        lo + self.below(hi_inclusive - lo + 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// One direction the generator wrote: what the sensor must reassemble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedDir {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub bytes: u64,
    pub sha256: String,
}

/// `F.expected.tsv` beside capture `F`.
pub fn expected_path(pcap: &Path) -> PathBuf {
    let mut s = pcap.as_os_str().to_owned();
    s.push(".expected.tsv");
    PathBuf::from(s)
}

pub fn write_expected(path: &Path, dirs: &[ExpectedDir]) -> Result<()> {
    let mut out = String::from("src\tdst\tbytes\tsha256\n");
    for d in dirs {
        let _ = writeln!(out, "{}\t{}\t{}\t{}", d.src, d.dst, d.bytes, d.sha256);
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

pub fn read_expected(path: &Path) -> Result<Vec<ExpectedDir>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 4 {
            bail!("{} line {}: expected 4 fields", path.display(), i + 1);
        }
        out.push(ExpectedDir {
            src: parse_endpoint(f[0])?,
            dst: parse_endpoint(f[1])?,
            bytes: f[2].parse()?,
            sha256: f[3].to_string(),
        });
    }
    Ok(out)
}

/// Packet writer with a monotonic clock.
#[derive(Debug)]
struct Out {
    pcap: PcapWriter<BufWriter<std::fs::File>>,
    ts_us: u64,
}

impl Out {
    fn create(path: &Path) -> Result<Self> {
        let f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Out {
            pcap: PcapWriter::new(BufWriter::new(f))?,
            // 2023-11-14, so timestamps look like a real capture's.
            ts_us: 1_700_000_000_000_000,
        })
    }

    fn emit(&mut self, gap_us: u64, seg: &Segment<'_>) -> Result<()> {
        self.ts_us += gap_us.max(1);
        self.pcap.packet(self.ts_us, &tcp_frame(seg))?;
        Ok(())
    }

    /// Writes the segment's datagram as IP fragments of `piece` bytes, in a shuffled order,
    /// one of them twice when `dup`.
    fn emit_fragmented(
        &mut self,
        rng: &mut XorShift,
        seg: &Segment<'_>,
        piece: usize,
        id: u32,
        dup: bool,
    ) -> Result<()> {
        let mut frags = fragment_frame(&tcp_frame(seg), piece, id);
        for i in (1..frags.len()).rev() {
            frags.swap(i, rng.below(i as u64 + 1) as usize);
        }
        if dup {
            let k = rng.below(frags.len() as u64) as usize;
            frags.push(frags[k].clone());
        }
        for f in &frags {
            self.ts_us += 1;
            self.pcap.packet(self.ts_us, f)?;
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        self.pcap.finish()?;
        Ok(())
    }
}

fn client_addr(i: u64, ipv6: bool) -> SocketAddr {
    let port = 20_000 + (i % 40_000) as u16;
    let host = (i / 40_000) as u32 + 1;
    let ip = if ipv6 {
        IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0,
            0,
            0,
            0,
            0,
            (host >> 16) as u16,
            host as u16,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + host))
    };
    SocketAddr::new(ip, port)
}

fn server_addr(i: u64, ipv6: bool) -> SocketAddr {
    let host = (i % 8) as u16 + 1;
    let ip = if ipv6 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, host))
    } else {
        IpAddr::V4(Ipv4Addr::new(192, 168, 1, host as u8))
    };
    SocketAddr::new(ip, 80)
}

fn seg<'a>(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    f: u8,
    payload: &'a [u8],
) -> Segment<'a> {
    Segment {
        src,
        dst,
        seq,
        ack,
        flags: f,
        window: 65_535,
        mss: Some(1460),
        payload,
    }
}

#[derive(Debug, Clone)]
pub struct ShortFlowsOptions {
    pub conns: u64,
    /// Connections open at once; packets of open connections are interleaved at random.
    pub concurrency: usize,
    pub ipv6: bool,
    pub seed: u64,
}

/// Owned segment, queued until the interleaver picks its connection.
#[derive(Debug)]
struct Pkt {
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: Vec<u8>,
}

/// What a short connection carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ShortPayload {
    /// Random bytes: 100-300 from the client, 300-1400 back.
    Random,
    /// One HTTP/1.1 GET and its 200 response with a Content-Length body, of the same sizes.
    Http,
}

/// An HTTP request of `len` bytes or a little more (the request line and headers, padded
/// with an `X-Pad` header).
fn http_request(i: u64, len: usize, rng: &mut XorShift) -> Vec<u8> {
    let head = format!(
        "GET /obj/{i}/{:08x} HTTP/1.1\r\nHost: h{}.example\r\nUser-Agent: mkpcap\r\nAccept: */*\r\n",
        rng.next_u64() as u32,
        i % 100
    );
    let pad = len.saturating_sub(head.len() + 12).max(1);
    let mut req = head.into_bytes();
    req.extend_from_slice(b"X-Pad: ");
    req.extend(std::iter::repeat_n(b'a', pad));
    req.extend_from_slice(b"\r\n\r\n");
    req
}

/// An HTTP 200 response of about `len` bytes: the head, then a random body whose length the
/// Content-Length header gives.
fn http_response(len: usize, rng: &mut XorShift) -> Vec<u8> {
    let body_len = len.saturating_sub(80).max(1);
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {body_len}\r\n\r\n"
    )
    .into_bytes();
    let at = resp.len();
    resp.resize(at + body_len, 0);
    rng.fill(&mut resp[at..]);
    resp
}

fn short_conn(
    i: u64,
    o: &ShortFlowsOptions,
    payload: ShortPayload,
    rng: &mut XorShift,
    expected: &mut Vec<ExpectedDir>,
) -> VecDeque<Pkt> {
    use flags::*;
    let (c, s) = (client_addr(i, o.ipv6), server_addr(i, o.ipv6));
    let (ci, si) = (rng.next_u64() as u32, rng.next_u64() as u32);
    let (req_len, resp_len) = (rng.range(100, 300) as usize, rng.range(300, 1400) as usize);
    let (req, resp) = match payload {
        ShortPayload::Random => {
            let mut req = vec![0u8; req_len];
            let mut resp = vec![0u8; resp_len];
            rng.fill(&mut req);
            rng.fill(&mut resp);
            (req, resp)
        }
        ShortPayload::Http => (http_request(i, req_len, rng), http_response(resp_len, rng)),
    };
    let (rq, rs) = (req.len() as u32, resp.len() as u32);
    for (src, dst, data) in [(c, s, &req), (s, c, &resp)] {
        expected.push(ExpectedDir {
            src,
            dst,
            bytes: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
        });
    }
    let p = |src, dst, seq: u32, ack: u32, flags, payload: Vec<u8>| Pkt {
        src,
        dst,
        seq,
        ack,
        flags,
        payload,
    };
    let c1 = ci.wrapping_add(1);
    let s1 = si.wrapping_add(1);
    VecDeque::from([
        p(c, s, ci, 0, SYN, vec![]),
        p(s, c, si, c1, SYN | ACK, vec![]),
        p(c, s, c1, s1, ACK, vec![]),
        p(c, s, c1, s1, PSH | ACK, req),
        p(s, c, s1, c1.wrapping_add(rq), ACK, vec![]),
        p(s, c, s1, c1.wrapping_add(rq), PSH | ACK, resp),
        p(c, s, c1.wrapping_add(rq), s1.wrapping_add(rs), ACK, vec![]),
        p(
            c,
            s,
            c1.wrapping_add(rq),
            s1.wrapping_add(rs),
            FIN | ACK,
            vec![],
        ),
        p(
            s,
            c,
            s1.wrapping_add(rs),
            c1.wrapping_add(rq + 1),
            FIN | ACK,
            vec![],
        ),
        p(
            c,
            s,
            c1.wrapping_add(rq + 1),
            s1.wrapping_add(rs + 1),
            ACK,
            vec![],
        ),
    ])
}

/// Many small request/response connections, `concurrency` of them interleaved.
pub fn short_flows(o: &ShortFlowsOptions, out_path: &Path) -> Result<Vec<ExpectedDir>> {
    many_short(o, ShortPayload::Random, out_path)
}

/// Like [`short_flows`], each connection one HTTP/1.1 GET and its 200 response (a
/// Content-Length body): many short HTTP connections, for the protocol analyzers.
pub fn http_flows(o: &ShortFlowsOptions, out_path: &Path) -> Result<Vec<ExpectedDir>> {
    many_short(o, ShortPayload::Http, out_path)
}

fn many_short(
    o: &ShortFlowsOptions,
    payload: ShortPayload,
    out_path: &Path,
) -> Result<Vec<ExpectedDir>> {
    if o.conns > 40_000 * 60_000 {
        bail!("too many connections for distinct 5-tuples");
    }
    let mut rng = XorShift::new(o.seed);
    let mut out = Out::create(out_path)?;
    let mut expected = Vec::with_capacity(o.conns as usize * 2);
    let mut open: Vec<VecDeque<Pkt>> = Vec::new();
    let mut next = 0u64;
    while next < o.conns || !open.is_empty() {
        while next < o.conns && open.len() < o.concurrency.max(1) {
            let q = short_conn(next, o, payload, &mut rng, &mut expected);
            open.push(q);
            next += 1;
        }
        let k = rng.below(open.len() as u64) as usize;
        let pkt = open[k]
            .pop_front()
            .expect("open connections have packets left");
        let gap = rng.range(1, 30);
        out.emit(
            gap,
            &seg(pkt.src, pkt.dst, pkt.seq, pkt.ack, pkt.flags, &pkt.payload),
        )?;
        if open[k].is_empty() {
            open.swap_remove(k);
        }
    }
    out.finish()?;
    Ok(expected)
}

#[derive(Debug, Clone)]
pub struct BulkOptions {
    /// Payload bytes in each direction of each connection.
    pub bytes: u64,
    pub mss: u16,
    pub conns: u64,
    pub ipv6: bool,
    pub seed: u64,
}

/// One direction of a bulk transfer: data segments, ACKed by the peer every 2 segments.
fn bulk_direction(
    out: &mut Out,
    rng: &mut XorShift,
    (src, dst): (SocketAddr, SocketAddr),
    seq0: u32,
    peer_seq: u32,
    bytes: u64,
    mss: u16,
) -> Result<ExpectedDir> {
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; usize::from(mss.max(1))];
    let mut sent = 0u64;
    let mut unacked_segments = 0;
    while sent < bytes {
        let n = (bytes - sent).min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        sha.update(&buf[..n]);
        let seq = seq0.wrapping_add(sent as u32);
        out.emit(
            rng.range(1, 20),
            &seg(src, dst, seq, peer_seq, flags::ACK | flags::PSH, &buf[..n]),
        )?;
        sent += n as u64;
        unacked_segments += 1;
        if unacked_segments == 2 || sent == bytes {
            let ack = seq0.wrapping_add(sent as u32);
            out.emit(
                rng.range(1, 20),
                &seg(dst, src, peer_seq, ack, flags::ACK, &[]),
            )?;
            unacked_segments = 0;
        }
    }
    Ok(ExpectedDir {
        src,
        dst,
        bytes,
        sha256: hex::encode(sha.finalize()),
    })
}

/// Connections carrying `bytes` of pseudo-random payload each way, one after the other.
/// The first client ISN sits just below 2^32 so its sequence numbers wrap mid-transfer.
pub fn bulk(o: &BulkOptions, out_path: &Path) -> Result<Vec<ExpectedDir>> {
    use flags::*;
    let mut rng = XorShift::new(o.seed);
    let mut out = Out::create(out_path)?;
    let mut expected = Vec::new();
    for i in 0..o.conns {
        let (c, s) = (client_addr(i, o.ipv6), server_addr(i, o.ipv6));
        let ci = if i == 0 {
            u32::MAX - 5000
        } else {
            rng.next_u64() as u32
        };
        let si = rng.next_u64() as u32;
        let (c1, s1) = (ci.wrapping_add(1), si.wrapping_add(1));
        out.emit(10, &seg(c, s, ci, 0, SYN, &[]))?;
        out.emit(10, &seg(s, c, si, c1, SYN | ACK, &[]))?;
        out.emit(10, &seg(c, s, c1, s1, ACK, &[]))?;
        expected.push(bulk_direction(
            &mut out,
            &mut rng,
            (c, s),
            c1,
            s1,
            o.bytes,
            o.mss,
        )?);
        let cn = c1.wrapping_add(o.bytes as u32);
        expected.push(bulk_direction(
            &mut out,
            &mut rng,
            (s, c),
            s1,
            cn,
            o.bytes,
            o.mss,
        )?);
        let sn = s1.wrapping_add(o.bytes as u32);
        out.emit(10, &seg(c, s, cn, sn, FIN | ACK, &[]))?;
        out.emit(10, &seg(s, c, sn, cn.wrapping_add(1), FIN | ACK, &[]))?;
        out.emit(
            10,
            &seg(c, s, cn.wrapping_add(1), sn.wrapping_add(1), ACK, &[]),
        )?;
    }
    out.finish()?;
    Ok(expected)
}

#[derive(Debug, Clone)]
pub struct IdleOptions {
    pub conns: u64,
    pub ipv6: bool,
    pub seed: u64,
}

/// Connections that complete their handshake (SYN, SYN/ACK, ACK) and then stay silent: no
/// data, no FIN, no RST, all opened within a few seconds of capture time, so every one is
/// still open (and idle) when the capture ends. No direction carries data, so the expected
/// list is empty.
pub fn idle(o: &IdleOptions, out_path: &Path) -> Result<Vec<ExpectedDir>> {
    use flags::*;
    if o.conns > 40_000 * 60_000 {
        bail!("too many connections for distinct 5-tuples");
    }
    let mut rng = XorShift::new(o.seed);
    let mut out = Out::create(out_path)?;
    for i in 0..o.conns {
        let (c, s) = (client_addr(i, o.ipv6), server_addr(i, o.ipv6));
        let (ci, si) = (rng.next_u64() as u32, rng.next_u64() as u32);
        let (c1, s1) = (ci.wrapping_add(1), si.wrapping_add(1));
        out.emit(1, &seg(c, s, ci, 0, SYN, &[]))?;
        out.emit(1, &seg(s, c, si, c1, SYN | ACK, &[]))?;
        out.emit(1, &seg(c, s, c1, s1, ACK, &[]))?;
    }
    out.finish()?;
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_flows_are_deterministic_and_distinct() {
        let dir = std::env::temp_dir().join(format!("mos-synth-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let o = ShortFlowsOptions {
            conns: 50,
            concurrency: 8,
            ipv6: false,
            seed: 7,
        };
        let (a, b) = (dir.join("a.pcap"), dir.join("b.pcap"));
        let ea = short_flows(&o, &a).unwrap();
        let eb = short_flows(&o, &b).unwrap();
        assert_eq!(ea, eb);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(ea.len(), 100);
        let pairs: std::collections::BTreeSet<_> = ea.iter().map(|d| (d.src, d.dst)).collect();
        assert_eq!(pairs.len(), 100);
        // 10 packets per connection.
        let total = std::fs::read(&a).unwrap().len();
        assert!(total > 24 + 500 * 16);
        write_expected(&expected_path(&a), &ea).unwrap();
        assert_eq!(read_expected(&expected_path(&a)).unwrap(), ea);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bulk_sizes_add_up() {
        let dir = std::env::temp_dir().join(format!("mos-synth-bulk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let o = BulkOptions {
            bytes: 10_000,
            mss: 1448,
            conns: 2,
            ipv6: true,
            seed: 3,
        };
        let e = bulk(&o, &dir.join("b.pcap")).unwrap();
        assert_eq!(e.len(), 4);
        assert!(e.iter().all(|d| d.bytes == 10_000));
        assert_ne!(e[0].sha256, e[1].sha256);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[derive(Debug, Clone)]
pub struct FragmentedOptions {
    /// Payload bytes in each direction of each connection.
    pub bytes: u64,
    /// TCP payload per segment (larger than a fragment: each segment is fragmented).
    pub mss: u16,
    /// IP payload bytes per fragment (a multiple of 8).
    pub piece: usize,
    pub conns: u64,
    pub ipv6: bool,
    pub seed: u64,
}

/// Connections, two at a time interleaved segment by segment, whose data segments are all
/// IP-fragmented (pieces shuffled, some sent twice); the handshakes, ACKs and FINs are not.
pub fn fragmented(o: &FragmentedOptions, out_path: &Path) -> Result<Vec<ExpectedDir>> {
    use flags::*;
    let mut rng = XorShift::new(o.seed);
    let mut out = Out::create(out_path)?;
    let mut expected = Vec::new();
    let mut id = 1u32;
    let mut i = 0;
    while i < o.conns {
        let pair: Vec<u64> = (i..(i + 2).min(o.conns)).collect();
        i += pair.len() as u64;
        // Per connection: endpoints, next client and server sequence numbers, hashes.
        let mut st = Vec::new();
        for &k in &pair {
            let (c, s) = (client_addr(k, o.ipv6), server_addr(k, o.ipv6));
            let (ci, si) = (rng.next_u64() as u32, rng.next_u64() as u32);
            let (c1, s1) = (ci.wrapping_add(1), si.wrapping_add(1));
            out.emit(10, &seg(c, s, ci, 0, SYN, &[]))?;
            out.emit(10, &seg(s, c, si, c1, SYN | ACK, &[]))?;
            out.emit(10, &seg(c, s, c1, s1, ACK, &[]))?;
            st.push((c, s, c1, s1, Sha256::new(), Sha256::new()));
        }
        let mut buf = vec![0u8; usize::from(o.mss.max(1))];
        let mut sent = 0u64;
        while sent < o.bytes {
            let n = (o.bytes - sent).min(buf.len() as u64) as usize;
            for (c, s, cseq, sseq, csha, ssha) in &mut st {
                for to_server in [true, false] {
                    rng.fill(&mut buf[..n]);
                    let (src, dst, seq, ack) = if to_server {
                        csha.update(&buf[..n]);
                        (*c, *s, *cseq, *sseq)
                    } else {
                        ssha.update(&buf[..n]);
                        (*s, *c, *sseq, *cseq)
                    };
                    let dup = rng.below(4) == 0;
                    let data = seg(src, dst, seq, ack, ACK | PSH, &buf[..n]);
                    out.emit_fragmented(&mut rng, &data, o.piece, id, dup)?;
                    id = id.wrapping_add(1);
                    let next = seq.wrapping_add(n as u32);
                    if to_server {
                        *cseq = next;
                    } else {
                        *sseq = next;
                    }
                    out.emit(5, &seg(dst, src, ack, next, ACK, &[]))?;
                }
            }
            sent += n as u64;
        }
        for (c, s, cseq, sseq, csha, ssha) in st {
            out.emit(10, &seg(c, s, cseq, sseq, FIN | ACK, &[]))?;
            out.emit(10, &seg(s, c, sseq, cseq.wrapping_add(1), FIN | ACK, &[]))?;
            out.emit(
                10,
                &seg(c, s, cseq.wrapping_add(1), sseq.wrapping_add(1), ACK, &[]),
            )?;
            for (src, dst, sha) in [(c, s, csha), (s, c, ssha)] {
                expected.push(ExpectedDir {
                    src,
                    dst,
                    bytes: o.bytes,
                    sha256: hex::encode(sha.finalize()),
                });
            }
        }
    }
    out.finish()?;
    Ok(expected)
}

/// Copies the classic pcap at `src` (microsecond timestamps, little-endian, as the generators
/// here write it) to `dst` with its clock stretched `factor` times from its first frame: the
/// generators space packets by microseconds, and a paced replay (`--speed`) of the stretched
/// file lasts long enough for a test to act while it runs.
pub fn stretch_time(src: &Path, dst: &Path, factor: u64) -> Result<()> {
    let bytes = std::fs::read(src)?;
    anyhow::ensure!(bytes.len() >= 24, "{} has no pcap header", src.display());
    let mut out = bytes[..24].to_vec();
    let mut at = 24;
    let mut t0 = None;
    while at + 16 <= bytes.len() {
        let word =
            |i: usize| u32::from_le_bytes(bytes[at + i..at + i + 4].try_into().unwrap_or_default());
        let ts_us = u64::from(word(0)) * 1_000_000 + u64::from(word(4));
        let len = word(8) as usize;
        anyhow::ensure!(
            at + 16 + len <= bytes.len(),
            "{} ends inside a record",
            src.display()
        );
        let t0 = *t0.get_or_insert(ts_us);
        let ts = t0 + (ts_us - t0) * factor;
        out.extend_from_slice(&((ts / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((ts % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&bytes[at + 8..at + 16 + len]);
        at += 16 + len;
    }
    anyhow::ensure!(
        at == bytes.len(),
        "{} does not end on a record",
        src.display()
    );
    std::fs::write(dst, out)?;
    Ok(())
}
