//! Helpers shared by the DPDK integration tests. Each test file is its own
//! binary, so its own process: `rte_eal_init` works once per process.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

/// EAL arguments that work without hugepages, PCI or root-owned shared
/// config, plus the given extra arguments (e.g. `--vdev=...`).
pub fn eal_args(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--no-shconf",
        "-l",
        "0",
        "--log-level=lib.eal:error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Sub-second resolution of a classic pcap file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    Micro,
    Nano,
}

/// A frame to write: seconds, sub-second part (in the file's unit), bytes.
pub struct Frame {
    pub sec: u32,
    pub frac: u32,
    pub bytes: Vec<u8>,
}

/// Writes a little-endian classic pcap (Ethernet link type) by hand.
pub fn write_pcap(path: &Path, precision: Precision, frames: &[Frame]) {
    let magic: u32 = match precision {
        Precision::Micro => 0xa1b2_c3d4,
        Precision::Nano => 0xa1b2_3c4d,
    };
    let mut out = Vec::new();
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    out.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    out.extend_from_slice(&65535u32.to_le_bytes()); // snaplen
    out.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    for f in frames {
        let len = u32::try_from(f.bytes.len()).unwrap();
        out.extend_from_slice(&f.sec.to_le_bytes());
        out.extend_from_slice(&f.frac.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes()); // caplen
        out.extend_from_slice(&len.to_le_bytes()); // orig len
        out.extend_from_slice(&f.bytes);
    }
    let mut file = std::fs::File::create(path).unwrap();
    file.write_all(&out).unwrap();
}

/// An Ethernet/IPv4/UDP-looking frame of `len` bytes whose payload is a
/// pattern seeded by `seed`, so that every frame is distinct.
pub fn frame_bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut b = vec![0u8; len];
    b[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    b[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    b[12..14].copy_from_slice(&[0x08, 0x00]);
    for (i, x) in b.iter_mut().enumerate().skip(14) {
        *x = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    b
}
