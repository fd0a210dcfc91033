//! What the sensor's own frame parser finds in a capture, per directed TCP endpoint pair.
//!
//! The corpus test uses it to check the rules of `tests/known-differences.md` on each row:
//! whether a direction's traffic is visible to mos at all, and which link-layer trailer
//! bytes (Ethernet padding, FCS, other trailers after the IP datagram) its frames carry,
//! which tcpflow counts as payload.

use anyhow::{Context, Result};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use mos_sensor::capture::file::FileCapture;
use mos_sensor::capture::CaptureBackend;
use mos_sensor::parse::{parse_packet, Parsed};

use crate::flows::short_sha1;

/// A link-layer trailer seen after a segment that carries no TCP payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Trailer {
    pub len: u64,
    /// First 16 hex digits of the trailer's SHA-1.
    pub sha1: String,
}

/// The frames of one direction (src -> dst), over every connection on that pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirFrames {
    /// TCP segments the parser decoded.
    pub segments: u64,
    /// Sum of their payload lengths (as the IP header declares them).
    pub payload: u64,
    /// Sum of the trailer bytes after their IP datagrams.
    pub trailer_total: u64,
    /// The longest trailer of one frame.
    pub max_trailer: u64,
    /// The trailers of segments with no payload (pure ACKs, padded to the minimum frame).
    pub empty_segment_trailers: Vec<Trailer>,
}

/// Per directed endpoint pair, what the parser found.
#[derive(Debug, Clone, Default)]
pub struct FrameIndex {
    pub dirs: HashMap<(SocketAddr, SocketAddr), DirFrames>,
}

impl FrameIndex {
    /// The direction's frames, if the parser found any TCP segment on it.
    pub fn dir(&self, src: SocketAddr, dst: SocketAddr) -> Option<&DirFrames> {
        self.dirs.get(&(src, dst))
    }
}

/// Reads a capture with the sensor's reader and parser (checksums not verified: a bad
/// checksum never hides a segment from the sensor). A read error ends the scan; what was
/// read before it is kept, as the sensor does.
pub fn scan_capture(path: &Path) -> Result<FrameIndex> {
    let mut cap = FileCapture::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut index = FrameIndex::default();
    while let Ok(Some(pkt)) = cap.next_packet() {
        let Ok(Parsed::Tcp(seg)) = parse_packet(&pkt, false) else {
            continue;
        };
        let src = SocketAddr::new(seg.src, seg.sport);
        let dst = SocketAddr::new(seg.dst, seg.dport);
        let d = index.dirs.entry((src, dst)).or_default();
        d.segments += 1;
        d.payload += u64::from(seg.payload_len);
        // The payload ends where the IP datagram ends; what follows in the frame is trailer.
        // A payload cut by the snap length has no trailer.
        // (A payload that is not a slice of the frame, say a reassembled one, has none either.)
        let base = pkt.data.as_ptr() as usize;
        let start = seg.payload.as_ptr() as usize;
        let in_frame = start >= base && start + seg.payload.len() <= base + pkt.data.len();
        if in_frame && seg.payload.len() as u64 == u64::from(seg.payload_len) {
            let end = start - base + seg.payload.len();
            let trailer = &pkt.data[end..];
            d.trailer_total += trailer.len() as u64;
            d.max_trailer = d.max_trailer.max(trailer.len() as u64);
            if seg.payload_len == 0 && !trailer.is_empty() {
                let t = Trailer {
                    len: trailer.len() as u64,
                    sha1: short_sha1(trailer),
                };
                if !d.empty_segment_trailers.contains(&t) {
                    d.empty_segment_trailers.push(t);
                }
            }
        }
    }
    Ok(index)
}
