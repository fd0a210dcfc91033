//! The parse_packet fuzz target's tunnel seeds (`fuzz/seeds/parse_packet/tunnels`) stay what
//! they are meant to be: frames whose TCP segment sits inside tunnels, so fuzzing starts from
//! those paths. (The other seeds there are inputs an earlier fuzzing run found interesting.)

use mos_sensor::capture::{LinkType, RawPacket};
use mos_sensor::parse::{parse_packet, Parsed};
use std::path::Path;

#[test]
fn every_seed_is_a_tunnelled_tcp_segment() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/parse_packet/tunnels");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("the seed directory") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        // As the fuzz target reads its input: the first byte picks the link type.
        let (&sel, frame) = data.split_first().expect("a non-empty seed");
        let link = LinkType::READ
            .get(usize::from(sel) % (LinkType::READ.len() + 1))
            .copied()
            .unwrap_or(LinkType::Other(147));
        let pkt = RawPacket {
            ts_ns: 0,
            link,
            data: frame,
            orig_len: frame.len() as u32,
        };
        match parse_packet(&pkt, true) {
            Ok(Parsed::Tcp(t)) => {
                assert!(!t.tunnel.is_none(), "{}: no tunnel", path.display());
                assert_eq!(t.dport, 80, "{}", path.display());
            }
            other => panic!("{}: {other:?}", path.display()),
        }
        seen += 1;
    }
    assert!(seen >= 10, "{seen} seeds");
}
