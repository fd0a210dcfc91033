//! Untrusted fragments through the IP defragmenter, under small limits the input picks.
//!
//! Records are either raw bytes (any IP header at all) or fragments built from a few fields
//! (family, identification, offset, more-fragments, length, protocol), so the fuzzer reaches
//! overlaps, ends and limits quickly. After every fragment the defragmenter's invariants are
//! checked: the arena and the datagram count are never exceeded, every fragment is reassembled,
//! dropped or held, and a reassembled datagram holds every byte its header declares.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mos_sensor::defrag::{DefragConfig, Defragmenter, BLOCK};
use mos_sensor::parse::ip::parse_ip;
use mos_sensor::parse::Parsed;

/// Takes `n` bytes off the front of `data`.
fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if data.len() < n {
        return None;
    }
    let (head, rest) = data.split_at(n);
    *data = rest;
    Some(head)
}

/// A fragment from fields: IPv4 (20-byte header) or IPv6 (fixed header, fragment header).
fn build(v6: bool, id: u8, off8: u16, more: bool, len: usize, proto: u8, fill: u8) -> Vec<u8> {
    let payload = (0..len).map(|i| fill.wrapping_add(i as u8));
    if v6 {
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((8 + len) as u16).to_be_bytes());
        p[6] = 44;
        p[8] = 0x20;
        p[24] = 0x20;
        p[40] = proto;
        p[42..44].copy_from_slice(&((off8 & 0x1fff) << 3 | u16::from(more)).to_be_bytes());
        p[47] = id;
        p.extend(payload);
        p
    } else {
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((20 + len) as u16).to_be_bytes());
        p[5] = id;
        p[6..8].copy_from_slice(&((off8 & 0x1fff) | if more { 0x2000 } else { 0 }).to_be_bytes());
        p[9] = proto;
        p[12] = 10;
        p[16] = 10;
        p.extend(payload);
        p
    }
}

fuzz_target!(|input: &[u8]| {
    let mut data = input;
    let Some(cfg) = take(&mut data, 3) else {
        return;
    };
    let mut d = Defragmenter::new(DefragConfig {
        memory_bytes: usize::from(cfg[0] % 80) * BLOCK,
        max_datagrams: usize::from(cfg[1] % 16) + 1,
        timeout_ns: u64::from(cfg[2]) * 100_000_000,
    });
    let mut now = 0u64;
    while let Some(h) = take(&mut data, 2) {
        let (kind, dt) = (h[0], h[1]);
        now += u64::from(dt) * 10_000_000;
        let frag = if kind & 1 == 0 {
            let Some(n) = take(&mut data, 1) else { break };
            let Some(bytes) = take(&mut data, usize::from(n[0])) else {
                break;
            };
            bytes.to_vec()
        } else {
            let Some(f) = take(&mut data, 6) else { break };
            let off8 = u16::from_be_bytes([f[1], f[2]]) % 1024;
            let len = usize::from(u16::from_be_bytes([f[3], f[4]]) % 3000);
            let proto = if kind & 8 != 0 { 6 } else { 17 };
            build(
                kind & 2 != 0,
                f[0] % 4,
                off8,
                kind & 4 != 0,
                len,
                proto,
                f[5],
            )
        };
        if let Some(dg) = d.push(now, &frag) {
            assert!(dg.len() <= 65535 + 40);
            // Whole: no byte the header declares is missing. (An IPv6 datagram may carry
            // another fragment header inside; that one is the next reassembly's business.)
            if let Ok(Parsed::Tcp(t)) = parse_ip(dg, true) {
                assert_eq!(t.payload.len(), t.payload_len as usize);
            }
        }
        if kind & 0x80 != 0 {
            d.expire(now);
        }
        let s = d.stats();
        assert!(d.held_bytes() <= d.config().memory_bytes);
        assert!(d.in_progress() <= d.config().max_datagrams);
        assert_eq!(
            s.fragments,
            s.fragments_reassembled + s.fragments_dropped + d.held_fragments()
        );
    }
    d.finish();
    assert_eq!(d.held_bytes(), 0);
    assert_eq!(d.held_fragments(), 0);
});
