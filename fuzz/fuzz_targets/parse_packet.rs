//! Untrusted frames through the parser: the first byte picks the link type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mos_sensor::capture::{LinkType, RawPacket};
use mos_sensor::parse::{parse_packet, Parsed};

const LINKS: [LinkType; 12] = [
    LinkType::Ethernet,
    LinkType::Null,
    LinkType::Loop,
    LinkType::Raw,
    LinkType::Ipv4,
    LinkType::Ipv6,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::Ppp,
    LinkType::CHdlc,
    LinkType::Nflog,
    LinkType::Other(147),
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let pkt = RawPacket {
        ts_ns: 0,
        link: LINKS[usize::from(sel) % LINKS.len()],
        data: frame,
        orig_len: frame.len() as u32,
    };
    if let Ok(Parsed::Tcp(t)) = parse_packet(&pkt, sel & 0x80 != 0) {
        assert!(t.payload.len() <= t.payload_len as usize);
    }
});
