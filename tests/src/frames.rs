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
use mos_sensor::parse::{flags, parse_packet, Parsed};

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
    /// Every segment, in capture order.
    pub segs: Vec<Seg>,
    /// The distinct sequence numbers of the direction's SYNs.
    pub syn_seqs: Vec<u32>,
    /// The acknowledgment numbers of the direction's segments that carry the ACK flag.
    pub acks: Vec<u32>,
}

/// One segment of a direction, as the sensor's parser read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seg {
    pub seq: u32,
    /// Payload length as the IP header declares it.
    pub len: u32,
    /// Link-layer trailer bytes after the IP datagram (0 for a frame cut by the snap length).
    pub trailer: u32,
    /// Whether it carries SYN (its payload then starts one byte later).
    pub syn: bool,
}

/// What a direction holds past some stream offset `end`, offsets numbered as mos numbers
/// them: 0 is ISN+1 when the direction's SYN was captured, else the first sequence number
/// the direction used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Past {
    /// Whether some segment's payload holds the byte at `end` (no hole there).
    pub covered: bool,
    /// The lowest offset past `end` at which a segment's payload starts.
    pub next_data: Option<i64>,
    /// The highest acknowledgment the peer sent, as an offset of this direction.
    pub max_ack: Option<i64>,
    /// The furthest offset any segment reaches with its payload and then its trailer
    /// (where tcpflow, which writes a frame's trailer after its payload, stops writing).
    pub reach: i64,
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

    /// What the direction src -> dst holds past offset `end`, with the peer's
    /// acknowledgments. `None` when the direction has no segment, or when its SYNs carry
    /// more than one sequence number (the endpoint pair held several connections, which
    /// this index does not tell apart).
    pub fn past(&self, src: SocketAddr, dst: SocketAddr, end: u64) -> Option<Past> {
        let d = self.dir(src, dst)?;
        let base = match d.syn_seqs.as_slice() {
            [] => d.segs.first()?.seq,
            [isn] => isn.wrapping_add(1),
            _ => return None,
        };
        // Serial-number distance from the base, so the 32-bit wrap is crossed.
        let off = |seq: u32| i64::from(seq.wrapping_sub(base) as i32);
        let end = i64::try_from(end).ok()?;
        let mut past = Past {
            covered: false,
            next_data: None,
            max_ack: None,
            reach: 0,
        };
        for s in &d.segs {
            let start = off(s.seq) + i64::from(s.syn);
            let stop = start + i64::from(s.len);
            past.reach = past.reach.max(stop + i64::from(s.trailer));
            if s.len == 0 {
                continue;
            }
            if start <= end && end < stop {
                past.covered = true;
            }
            if start > end {
                past.next_data = Some(past.next_data.map_or(start, |n| n.min(start)));
            }
        }
        if let Some(peer) = self.dir(dst, src) {
            past.max_ack = peer.acks.iter().map(|&a| off(a)).max();
        }
        Some(past)
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
        let syn = seg.has(flags::SYN);
        if syn && !d.syn_seqs.contains(&seg.seq) {
            d.syn_seqs.push(seg.seq);
        }
        if seg.has(flags::ACK) {
            d.acks.push(seg.ack);
        }
        let mut trailer_len = 0;
        // The payload ends where the IP datagram ends; what follows in the frame is trailer.
        // A payload cut by the snap length has no trailer.
        // (A payload that is not a slice of the frame, say a reassembled one, has none either.)
        let base = pkt.data.as_ptr() as usize;
        let start = seg.payload.as_ptr() as usize;
        let in_frame = start >= base && start + seg.payload.len() <= base + pkt.data.len();
        if in_frame && seg.payload.len() as u64 == u64::from(seg.payload_len) {
            let end = start - base + seg.payload.len();
            let trailer = &pkt.data[end..];
            trailer_len = trailer.len() as u32;
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
        d.segs.push(Seg {
            seq: seg.seq,
            len: seg.payload_len,
            trailer: trailer_len,
            syn,
        });
    }
    Ok(index)
}
