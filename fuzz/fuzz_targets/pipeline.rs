//! Untrusted frame sequences through the whole per-worker path: parser (tunnels included), IP
//! defragmenter, connection tracker and reassembly, as `replay::step` runs them, then the end of
//! the input.
//!
//! The input's first bytes pick small limits (connections, rings, ring size, overlap policy,
//! fragment memory); then each record is a frame, either raw bytes of any link type, or an
//! IPv4 TCP segment built from a few fields (ports from a small set, flags, sequence numbers
//! near a per-direction counter, payload), whole or cut into IP fragments, so the fuzzer
//! reaches connections, overlaps and reassembly quickly. Checked: nothing panics, every frame
//! is counted, and after the end no connection, ring or datagram is held.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mos_sensor::capture::{LinkType, RawPacket};
use mos_sensor::defrag::DefragConfig;
use mos_sensor::flow::HashKeys;
use mos_sensor::replay::{self, ChecksumPolicy, CountingSink, StepState};
use mos_sensor::tcp::overlap::OverlapPolicy;
use mos_sensor::tracker::{Tracker, TrackerConfig};

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b
    }
}

/// An IPv4 packet (20-byte header, `frag` = flags and offset field) around `body`.
fn ipv4(src: u8, dst: u8, id: u16, frag: u16, proto: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((20 + body.len()) as u16).to_be_bytes());
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&frag.to_be_bytes());
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&[10, 0, 0, src]);
    p[16..20].copy_from_slice(&[10, 0, 0, dst]);
    p.extend_from_slice(body);
    p
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let (a, b) = (inp.u8(), inp.u8());
    let cfg = TrackerConfig {
        max_flows: 1 + usize::from(a & 7),
        // Chunks of 256 B to 2 KiB, a side at most four of them, a pool of one to eight.
        chunk_size: 256 << ((a >> 3) & 3),
        stream_max: 1024 << ((a >> 3) & 3),
        chunks: 1 + usize::from(b & 7),
        history: if b & 0x40 != 0 { 0 } else { 512 },
        linger_ns: if a & 0x20 != 0 { 1_000 } else { 5_000_000_000 },
        idle_timeout_ns: if a & 0x40 != 0 { 2_000_000 } else { 60_000_000_000 },
        track_midstream: a & 0x80 == 0,
        overlap: OverlapPolicy::ALL[usize::from(b >> 3) % OverlapPolicy::ALL.len()],
        hash_keys: HashKeys::from_seed(1),
        ..TrackerConfig::default()
    };
    let defrag = (b & 0x80 == 0).then(|| DefragConfig {
        memory_bytes: 4096 << (b & 3),
        max_datagrams: 4,
        timeout_ns: 1_000_000_000,
    });
    let Ok(mut tracker) = Tracker::new(cfg) else {
        return;
    };
    let mut sink = CountingSink::default();
    let mut st = StepState::new(ChecksumPolicy::Count, defrag);
    // Next sequence number of each direction (client to server, server to client).
    let mut next = [1_000u32, 9_000_000u32];
    let mut now = 1_000_000_000u64;
    let mut frames = 0u64;
    let mut pos = 0u64;
    while !inp.0.is_empty() && frames < 300 {
        let k = inp.u8();
        now += u64::from(inp.u8()) * 1_000_000;
        let mut out: Vec<(LinkType, Vec<u8>)> = Vec::new();
        if k & 1 == 0 {
            // Raw bytes of any link type.
            let link = LinkType::READ[usize::from(k >> 1) % LinkType::READ.len()];
            let n = usize::from(inp.u8());
            out.push((link, inp.bytes(n).to_vec()));
        } else {
            let dir = usize::from(k >> 1 & 1);
            let flags = inp.u8() & 0x3f;
            let delta = inp.u8() as i8;
            let len = usize::from(inp.u8() & 63);
            let payload = inp.bytes(len).to_vec();
            let seq = next[dir].wrapping_add(delta as i32 as u32);
            next[dir] = seq.wrapping_add(payload.len() as u32);
            let ack = next[1 - dir];
            let (sport, dport) = if k & 8 != 0 { (40000, 80) } else { (40001, 443) };
            let (sport, dport) = if dir == 0 { (sport, dport) } else { (dport, sport) };
            let mut tcp = vec![0u8; 20];
            tcp[0..2].copy_from_slice(&u16::to_be_bytes(sport));
            tcp[2..4].copy_from_slice(&u16::to_be_bytes(dport));
            tcp[4..8].copy_from_slice(&seq.to_be_bytes());
            tcp[8..12].copy_from_slice(&ack.to_be_bytes());
            tcp[12] = 5 << 4;
            tcp[13] = flags;
            tcp[14..16].copy_from_slice(&u16::to_be_bytes(65535));
            tcp.extend_from_slice(&payload);
            let (src, dst) = if dir == 0 { (1, 2) } else { (2, 1) };
            let id = inp.u16();
            if k & 16 != 0 && tcp.len() > 8 {
                // Cut into fragments of 8-byte multiples, sent in an order the input picks.
                let piece = 8 * (1 + usize::from(inp.u8() & 3));
                let mut pieces: Vec<Vec<u8>> = tcp
                    .chunks(piece)
                    .enumerate()
                    .map(|(i, c)| {
                        let more = (i + 1) * piece < tcp.len();
                        let frag = ((i * piece / 8) as u16) | if more { 0x2000 } else { 0 };
                        ipv4(src, dst, id, frag, 6, c)
                    })
                    .collect();
                if k & 32 != 0 {
                    pieces.reverse();
                }
                out.extend(pieces.into_iter().map(|p| (LinkType::Raw, p)));
            } else {
                out.push((LinkType::Raw, ipv4(src, dst, id, 0x4000, 6, &tcp)));
            }
        }
        for (link, bytes) in &out {
            let pkt = RawPacket {
                ts_ns: now,
                link: *link,
                data: bytes,
                orig_len: bytes.len() as u32,
            };
            replay::step(&mut tracker, &mut sink, &mut st, pos, &pkt).expect("a counting sink");
            pos += 1;
            frames += 1;
        }
        if k & 0x40 != 0 {
            replay::tick(&mut tracker, &mut sink, &mut st, now).expect("a counting sink");
        }
    }
    replay::finish(&mut tracker, &mut sink, &mut st, now).expect("a counting sink");
    assert_eq!(st.stats.frames, frames);
    assert_eq!(tracker.live_conns(), 0, "connections left after the end");
    assert_eq!(tracker.pool().in_use(), 0, "rings left after the end");
    if let Some(d) = st.defrag.as_deref() {
        assert_eq!(d.in_progress(), 0, "datagrams left after the end");
    }
});
