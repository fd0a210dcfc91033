//! What the benchmark binaries share: the memcpy baseline over a capture's TCP payload, and
//! medians. Timing lives in the benchmark binaries only, never in tests.

use anyhow::{ensure, Result};
use mos_sensor::capture::{CaptureBackend, FileCapture};
use mos_sensor::parse::{parse_packet, Parsed};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Size of the memcpy baseline's destination buffer (the default ring size).
pub const SCRATCH: usize = 256 * 1024;

/// Each TCP segment's captured payload as (offset, len) in `bytes`, in capture order.
///
/// `FileCapture::from_bytes` reads frames in place from the vector it is given, so a payload's
/// offset is its address minus the vector's; every slice found is checked against `bytes`.
pub fn payload_segments(name: &str, bytes: &[u8], verify: bool) -> Result<Vec<(usize, usize)>> {
    let data = bytes.to_vec();
    let base = data.as_ptr() as usize;
    let mut cap = FileCapture::from_bytes(name, data)?;
    let mut segs = Vec::new();
    while let Ok(Some(pkt)) = cap.next_packet() {
        if let Ok(Parsed::Tcp(seg)) = parse_packet(&pkt, verify) {
            if seg.payload.is_empty() {
                continue;
            }
            let off = (seg.payload.as_ptr() as usize).wrapping_sub(base);
            let len = seg.payload.len();
            ensure!(
                off.checked_add(len).is_some_and(|end| end <= bytes.len())
                    && bytes[off..off + len] == *seg.payload,
                "{name}: payload not found in place in the capture bytes"
            );
            segs.push((off, len));
        }
    }
    Ok(segs)
}

/// One memcpy run: every payload, in order, into the wrapping scratch buffer.
pub fn run_memcpy(src: &[u8], segments: &[(usize, usize)], scratch: &mut [u8]) -> Duration {
    let start = Instant::now();
    let mut pos = 0usize;
    for &(off, len) in segments {
        let len = len.min(scratch.len());
        if pos + len > scratch.len() {
            pos = 0;
        }
        scratch[pos..pos + len].copy_from_slice(&src[off..off + len]);
        pos += len;
        black_box(&mut *scratch);
    }
    let t = start.elapsed();
    black_box(scratch);
    t
}

/// Median, minimum and maximum (`v` must not be empty).
pub fn med_min_max(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (med, s[0], s[n - 1])
}

/// Millions of frames per second.
pub fn mpps(frames: u64, t: Duration) -> f64 {
    frames as f64 / t.as_secs_f64() / 1e6
}

/// Gigabits per second.
pub fn gbps(bytes: u64, t: Duration) -> f64 {
    bytes as f64 * 8.0 / t.as_secs_f64() / 1e9
}
