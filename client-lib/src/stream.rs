//! What a reader finds in a published receive stream: the decisions of the sensor's
//! `Stream::read`, `Stream::read_at` and `Stream::oldest_readable`, taken on a consistent copy
//! of the side ([`SideData`]) and its ring's metadata ([`RingMeta`]) instead of on the live
//! stream. The byte copy and its re-validation are the caller's ([`crate::Ctx::peek`]).
//!
//! Keeping these as pure functions of the published values lets tests state, for every case
//! the sensor's reader distinguishes, what an analyzer gets.

use shm_layout::flow::SideExtent;
use shm_layout::layout::{FragRec, GapRec, RingMeta, SideData, NO_RING};

/// What a reader at some offset gets next (the sensor's `ReadChunk`, before any byte is copied).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// At or past the tail.
    NoData,
    /// Bytes from the offset were overwritten or can no longer be told from a gap.
    Overrun { lost: u64 },
    /// The capture never held `[offset, offset + len)`.
    Gap { offset: u64, len: u64 },
    /// `len` bytes at the offset can be copied from the ring (already cut to the buffer).
    Data { len: usize },
}

fn gap_end(g: &GapRec) -> u64 {
    g.offset.saturating_add(g.len)
}

fn frag_end(f: &FragRec) -> u64 {
    f.start.saturating_add(u64::from(f.len))
}

fn gaps(meta: &RingMeta) -> &[GapRec] {
    &meta.gaps[..(meta.ngaps as usize).min(meta.gaps.len())]
}

fn frags(meta: &RingMeta) -> &[FragRec] {
    &meta.frags[..(meta.nfrags as usize).min(meta.frags.len())]
}

/// Where a new reader's pointer starts: the oldest offset it can still get bytes or a gap
/// record from.
pub(crate) fn oldest_readable(side: &SideData, meta: Option<&RingMeta>) -> u64 {
    oldest_readable_in(&extent(side, meta))
}

/// [`oldest_readable`] from the side's [`SideExtent`] (its head, tail and ring, and its ring's
/// `unknown_below`).
pub(crate) fn oldest_readable_in(e: &SideExtent) -> u64 {
    match (e.ring, e.unknown_below) {
        (NO_RING, _) | (_, None) => e.head,
        (_, Some(below)) => e.head.max(below.min(e.tail)),
    }
}

/// A side's [`SideExtent`] from a whole copy of it and of its ring's metadata.
fn extent(side: &SideData, meta: Option<&RingMeta>) -> SideExtent {
    SideExtent {
        head: side.head,
        tail: side.tail,
        ring: side.ring,
        unknown_below: meta.map(|m| m.unknown_below),
    }
}

/// [`chunk_in_order`] from a whole copy of the side and its metadata (the tests state the
/// cases with it).
#[cfg(test)]
pub(crate) fn chunk(side: &SideData, meta: Option<&RingMeta>, offset: u64, room: usize) -> Chunk {
    chunk_in_order(
        &extent(side, meta),
        meta.map_or(&[][..], gaps),
        offset,
        room,
    )
}

/// The peek decision for a reader at `offset` with room for `room` bytes, from the side's
/// extent and its ring's gaps. Only the first gap (in order) that ends past `offset` matters,
/// so `gaps` may hold that one alone ([`shm_layout::flow::SideAt::gap`]).
///
/// A side that holds no ring (or whose metadata is missing) has nothing readable below its
/// tail, so a reader behind it was overrun.
pub(crate) fn chunk_in_order(e: &SideExtent, gaps: &[GapRec], offset: u64, room: usize) -> Chunk {
    if offset >= e.tail {
        return Chunk::NoData;
    }
    let unknown_below = match (e.ring, e.unknown_below) {
        (NO_RING, _) | (_, None) => {
            return Chunk::Overrun {
                lost: e.head.saturating_sub(offset).max(e.tail - offset),
            }
        }
        (_, Some(b)) => b,
    };
    let mut limit = e.tail;
    for g in gaps {
        if gap_end(g) <= offset {
            continue;
        }
        if g.offset <= offset {
            return Chunk::Gap {
                offset,
                len: gap_end(g) - offset,
            };
        }
        limit = g.offset;
        break;
    }
    let known = e.head.max(unknown_below);
    if offset < known {
        return Chunk::Overrun {
            lost: known.min(limit) - offset,
        };
    }
    let len = (room as u64).min(limit - offset) as usize;
    Chunk::Data { len }
}

/// The `ppeek` decision: how many held bytes run from `offset` (in order or in a fragment),
/// cut to `room`; 0 when the byte at `offset` is not held.
pub(crate) fn extent_at(
    side: &SideData,
    meta: Option<&RingMeta>,
    offset: u64,
    room: usize,
) -> usize {
    let Some(meta) = meta.filter(|_| side.ring != NO_RING) else {
        return 0;
    };
    let end = if offset < side.tail {
        if offset < side.head.max(meta.unknown_below) {
            return 0;
        }
        match gaps(meta).iter().find(|g| gap_end(g) > offset) {
            Some(g) if g.offset <= offset => return 0,
            Some(g) => g.offset.min(side.tail),
            None => side.tail,
        }
    } else {
        match frags(meta)
            .iter()
            .find(|f| f.start <= offset && offset < frag_end(f))
        {
            Some(f) => frag_end(f),
            None => return 0,
        }
    };
    (room as u64).min(end - offset) as usize
}

/// One past the highest byte received, in order or not (`tcp_buf_info`'s last byte received).
pub(crate) fn recv_end(side: &SideData, meta: Option<&RingMeta>) -> u64 {
    meta.filter(|_| side.ring != NO_RING)
        .and_then(|m| frags(m).last().map(frag_end))
        .unwrap_or(side.tail)
        .max(side.tail)
}

/// The out-of-order islands of a side as `(offset, len)`.
pub(crate) fn fragments(side: &SideData, meta: Option<&RingMeta>) -> Vec<(u64, u32)> {
    match meta.filter(|_| side.ring != NO_RING) {
        Some(m) => frags(m).iter().map(|f| (f.start, f.len)).collect(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(head: u64, tail: u64, ring: u32) -> SideData {
        SideData {
            head,
            tail,
            ring,
            ..Default::default()
        }
    }

    fn meta(unknown_below: u64, gaps_: &[(u64, u64)], frags_: &[(u64, u32)]) -> RingMeta {
        let mut m = RingMeta {
            unknown_below,
            ngaps: gaps_.len() as u32,
            nfrags: frags_.len() as u32,
            ..Default::default()
        };
        for (i, &(offset, len)) in gaps_.iter().enumerate() {
            m.gaps[i] = GapRec {
                offset,
                len,
                kind: 0,
            };
        }
        for (i, &(start, len)) in frags_.iter().enumerate() {
            m.frags[i] = FragRec {
                start,
                len,
                _pad: 0,
            };
        }
        m
    }

    #[test]
    fn in_order_bytes_stop_at_the_next_gap_and_the_buffer() {
        let s = side(0, 100, 0);
        let m = meta(0, &[(40, 10)], &[]);
        assert_eq!(chunk(&s, Some(&m), 0, 1000), Chunk::Data { len: 40 });
        assert_eq!(chunk(&s, Some(&m), 10, 5), Chunk::Data { len: 5 });
        assert_eq!(
            chunk(&s, Some(&m), 40, 1000),
            Chunk::Gap {
                offset: 40,
                len: 10
            }
        );
        assert_eq!(
            chunk(&s, Some(&m), 45, 1000),
            Chunk::Gap { offset: 45, len: 5 }
        );
        assert_eq!(chunk(&s, Some(&m), 50, 1000), Chunk::Data { len: 50 });
        assert_eq!(chunk(&s, Some(&m), 100, 1000), Chunk::NoData);
        assert_eq!(chunk(&s, Some(&m), 150, 1000), Chunk::NoData);
    }

    #[test]
    fn the_first_gap_past_the_reader_decides_as_all_gaps_do() {
        // What `peek` passes: only the gap `read_side_at` hands back.
        let m = meta(20, &[(30, 10), (45, 5), (60, 20)], &[]);
        for (head, tail) in [(0, 100), (35, 100), (50, 70), (0, 0)] {
            let s = side(head, tail, 0);
            for at in 0..110 {
                let first = gaps(&m).iter().find(|g| gap_end(g) > at).copied();
                assert_eq!(
                    chunk_in_order(&extent(&s, Some(&m)), first.as_slice(), at, 16),
                    chunk(&s, Some(&m), at, 16),
                    "head {head} tail {tail} at {at}"
                );
            }
        }
    }

    #[test]
    fn a_reader_behind_the_head_is_overrun_up_to_the_next_gap() {
        let s = side(30, 100, 0);
        let m = meta(0, &[(60, 5)], &[]);
        assert_eq!(chunk(&s, Some(&m), 10, 1000), Chunk::Overrun { lost: 20 });
        // A gap before the head is still reported as a gap (the record outlives the bytes).
        let m = meta(0, &[(5, 10)], &[]);
        assert_eq!(
            chunk(&s, Some(&m), 7, 1000),
            Chunk::Gap { offset: 7, len: 8 }
        );
        assert_eq!(chunk(&s, Some(&m), 15, 1000), Chunk::Overrun { lost: 15 });
        // The overrun stops at a gap that starts before the head.
        let s = side(30, 100, 0);
        let m = meta(0, &[(20, 20)], &[]);
        assert_eq!(chunk(&s, Some(&m), 10, 1000), Chunk::Overrun { lost: 10 });
    }

    #[test]
    fn evicted_gap_records_turn_into_overruns() {
        let s = side(0, 100, 0);
        let m = meta(50, &[], &[]);
        assert_eq!(chunk(&s, Some(&m), 20, 1000), Chunk::Overrun { lost: 30 });
        assert_eq!(chunk(&s, Some(&m), 50, 1000), Chunk::Data { len: 50 });
        assert_eq!(oldest_readable(&s, Some(&m)), 50);
        // unknown_below past the tail: the reader starts at the tail.
        let m = meta(500, &[], &[]);
        assert_eq!(oldest_readable(&s, Some(&m)), 100);
        assert_eq!(
            oldest_readable(&side(70, 100, 0), Some(&meta(5, &[], &[]))),
            70
        );
    }

    #[test]
    fn a_side_without_ring_overruns_every_reader_behind_its_tail() {
        let s = side(80, 80, NO_RING);
        assert_eq!(chunk(&s, None, 10, 1000), Chunk::Overrun { lost: 70 });
        assert_eq!(chunk(&s, None, 80, 1000), Chunk::NoData);
        assert_eq!(oldest_readable(&s, None), 80);
        assert_eq!(extent_at(&s, None, 10, 1000), 0);
    }

    #[test]
    fn ppeek_reads_in_order_runs_and_fragments() {
        let s = side(10, 100, 0);
        let m = meta(0, &[(40, 10)], &[(120, 30), (200, 5)]);
        assert_eq!(extent_at(&s, Some(&m), 5, 1000), 0, "before the head");
        assert_eq!(extent_at(&s, Some(&m), 10, 1000), 30);
        assert_eq!(extent_at(&s, Some(&m), 45, 1000), 0, "inside a gap");
        assert_eq!(extent_at(&s, Some(&m), 60, 1000), 40);
        assert_eq!(
            extent_at(&s, Some(&m), 100, 1000),
            0,
            "the hole after the tail"
        );
        assert_eq!(extent_at(&s, Some(&m), 125, 1000), 25);
        assert_eq!(extent_at(&s, Some(&m), 125, 7), 7);
        assert_eq!(extent_at(&s, Some(&m), 150, 1000), 0);
        assert_eq!(extent_at(&s, Some(&m), 204, 1000), 1);
        assert_eq!(recv_end(&s, Some(&m)), 205);
        assert_eq!(fragments(&s, Some(&m)), vec![(120, 30), (200, 5)]);
    }
}
