//! Untrusted frames through the parser: the first byte picks the link type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mos_sensor::capture::{LinkType, RawPacket};
use mos_sensor::parse::{parse_packet, Parsed};


fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let pkt = RawPacket {
        ts_ns: 0,
        // Every link type mos reads, and one it does not.
        link: LinkType::READ
            .get(usize::from(sel) % (LinkType::READ.len() + 1))
            .copied()
            .unwrap_or(LinkType::Other(147)),
        data: frame,
        orig_len: frame.len() as u32,
    };
    if let Ok(Parsed::Tcp(t)) = parse_packet(&pkt, sel & 0x80 != 0) {
        assert!(t.payload.len() <= t.payload_len as usize);
    }
});
