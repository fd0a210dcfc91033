//! Reading a flow slot: one consistent copy of its [`FlowData`] and, when asked, of the
//! metadata of the rings its sides hold.

use crate::layout::{
    flow_flags, FlowData, FlowSlot, GapRec, RingMeta, RingMetaSlot, SideData, TunnelData,
    TunnelSlot, MAX_GAPS, NO_RING,
};
use crate::pod::Words;
use crate::sync::backoff;

/// A consistent copy of a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSnapshot {
    /// The slot's data.
    pub data: FlowData,
    /// The stamp the copy was taken at (equal stamps: nothing changed in between). Always even:
    /// it is the stamp the validated read section opened at, not a later read of the stamp.
    pub stamp: u64,
}

/// Copies a slot's data; `None` only if a writer kept it busy for `max_tries` attempts.
pub fn read_flow(slot: &FlowSlot, max_tries: u32) -> Option<FlowSnapshot> {
    for i in 0..max_tries {
        if let Some(tok) = slot.stamp.begin_read() {
            let data = FlowData::load(&slot.words);
            if slot.stamp.validate(tok) {
                return Some(FlowSnapshot {
                    data,
                    stamp: tok.stamp(),
                });
            }
        }
        backoff(i);
    }
    None
}

/// The few words of a slot that decide whether a reader has anything new on one side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SideTail {
    /// The slot's generation.
    pub generation: u32,
    /// [`flow_flags`].
    pub flags: u32,
    /// One past the side's last in-order byte.
    pub tail: u64,
}

/// The word of [`FlowData`] holding `generation` and `flags`.
const GEN_FLAGS_WORD: usize = core::mem::offset_of!(FlowData, generation) / 8;
/// The word of side 0's `tail`; side 1's is [`SIDE_WORDS`] further.
const TAIL_WORD: usize = (core::mem::offset_of!(FlowData, sides)
    + core::mem::offset_of!(crate::layout::SideData, tail))
    / 8;
const SIDE_WORDS: usize = core::mem::size_of::<crate::layout::SideData>() / 8;
/// The first word of side 0's [`SideData`]; side 1's is [`SIDE_WORDS`] further.
const SIDES_WORD: usize = core::mem::offset_of!(FlowData, sides) / 8;
const _: () = {
    assert!(core::mem::offset_of!(FlowData, generation) == 0);
    assert!(core::mem::offset_of!(FlowData, flags) == 4);
    assert!(core::mem::offset_of!(FlowData, sides).is_multiple_of(8));
    assert!(core::mem::size_of::<crate::layout::SideData>().is_multiple_of(8));
};

/// Reads side `side`'s tail with the slot's generation and flags, two words under the seqlock
/// instead of the whole slot: what a reader needs to learn that nothing new arrived. `None`
/// only if a writer kept the slot busy for `max_tries` attempts.
pub fn read_side_tail(slot: &FlowSlot, side: usize, max_tries: u32) -> Option<SideTail> {
    let tail_word = TAIL_WORD + (side & 1) * SIDE_WORDS;
    for i in 0..max_tries {
        if let Some(tok) = slot.stamp.begin_read() {
            let gf = slot.words[GEN_FLAGS_WORD].load(crate::sync::Ordering::Relaxed);
            let tail = slot.words[tail_word].load(crate::sync::Ordering::Relaxed);
            if slot.stamp.validate(tok) {
                // The words hold the struct's bytes in native order: generation is bytes
                // 0..4, flags 4..8.
                let b = gf.to_ne_bytes();
                return Some(SideTail {
                    generation: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
                    flags: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
                    tail,
                });
            }
        }
        backoff(i);
    }
    None
}

/// The words of a side that say where its stream is held, with its ring's `unknown_below`:
/// what a reader needs to know where it may start and what lies before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SideExtent {
    /// [`SideData::head`].
    pub head: u64,
    /// [`SideData::tail`].
    pub tail: u64,
    /// [`SideData::ring`].
    pub ring: u32,
    /// The ring's [`RingMeta::unknown_below`]; `None` when the side holds no ring or its index
    /// is out of range (no metadata).
    pub unknown_below: Option<u64>,
}

/// One side of a slot as a reader at one stream offset needs it, copied under the seqlock:
/// the slot's generation and flags, the side's [`SideExtent`], and of its ring's gaps only the
/// one that decides the next read from that offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SideAt {
    /// The slot's generation.
    pub generation: u32,
    /// [`flow_flags`].
    pub flags: u32,
    /// Where the side's stream is held.
    pub extent: SideExtent,
    /// The offset the reader reads from (what the caller's `from` gave for this version).
    pub offset: u64,
    /// The first of the ring's gaps, in the metadata's order, that ends past `offset` (gaps
    /// that end at or before it are behind the reader and change nothing); `None` when there
    /// is none or no metadata.
    pub gap: Option<GapRec>,
    /// The stamp the copy was taken at (as [`FlowSnapshot::stamp`]).
    pub stamp: u64,
}

/// The words of side `side`'s [`SideData`] in a slot.
#[inline]
fn side_words(slot: &FlowSlot, side: usize) -> &[crate::sync::AtomicU64] {
    let first = SIDES_WORD + (side & 1) * SIDE_WORDS;
    &slot.words[first..first + SIDE_WORDS]
}

/// Splits the generation-and-flags word (the struct's bytes in native order: generation is
/// bytes 0..4, flags 4..8).
#[inline]
fn gen_flags(word: u64) -> (u32, u32) {
    let b = word.to_ne_bytes();
    (
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
    )
}

/// The first word of the gap records in a ring's metadata words.
const GAPS_WORD: usize = 2 + 2 * crate::layout::MAX_FRAGMENTS;

/// Loads a side's [`SideExtent`] (relaxed; the caller validates): three words of the side and,
/// when it names a ring, that ring's `unknown_below`. Also returns the ring's metadata words.
#[inline]
fn load_extent<'m>(
    slot: &FlowSlot,
    metas: &'m [RingMetaSlot],
    side: usize,
) -> (SideExtent, Option<&'m [crate::sync::AtomicU64]>) {
    use crate::sync::Ordering::Relaxed;
    const HEAD_WORD: usize = core::mem::offset_of!(SideData, head) / 8;
    const TAIL: usize = core::mem::offset_of!(SideData, tail) / 8;
    let w = side_words(slot, side);
    let head = w[HEAD_WORD].load(Relaxed);
    let tail = w[TAIL].load(Relaxed);
    let ring = ring_of(w[RING_WORD].load(Relaxed));
    let meta = if ring == NO_RING {
        None
    } else {
        metas.get(ring as usize).map(|m| &m.words[..])
    };
    let unknown_below = meta.map(|m| m[1].load(Relaxed));
    (
        SideExtent {
            head,
            tail,
            ring,
            unknown_below,
        },
        meta,
    )
}

/// The word of [`SideData`] holding `ring` (then `base_seq`).
const RING_WORD: usize = core::mem::offset_of!(SideData, ring) / 8;
const _: () = {
    assert!(core::mem::offset_of!(SideData, ring).is_multiple_of(8));
    assert!(core::mem::offset_of!(SideData, head).is_multiple_of(8));
    assert!(core::mem::offset_of!(SideData, tail).is_multiple_of(8));
};

/// `ring` from the word that holds `ring` then `base_seq` in native byte order.
#[inline]
fn ring_of(word: u64) -> u32 {
    let b = word.to_ne_bytes();
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

/// Copies what a reader of side `side`'s stream at one offset needs ([`SideAt`]): the
/// generation and flags, the side's extent, and the one gap record that decides its next read,
/// instead of the whole side and every gap. `from` picks the offset from the extent of the
/// version being read (a reader that knows its offset returns it; a new reader starts where
/// the extent allows). `None` only if a writer kept the slot busy for `max_tries` attempts.
#[inline]
pub fn read_side_at(
    slot: &FlowSlot,
    metas: &[RingMetaSlot],
    side: usize,
    from: impl Fn(&SideExtent) -> u64,
    max_tries: u32,
) -> Option<SideAt> {
    use crate::sync::Ordering::Relaxed;
    for i in 0..max_tries {
        if let Some(tok) = slot.stamp.begin_read() {
            let (generation, flags) = gen_flags(slot.words[GEN_FLAGS_WORD].load(Relaxed));
            let (extent, meta) = load_extent(slot, metas, side);
            let offset = from(&extent);
            let mut gap = None;
            if let Some(m) = meta {
                let ngaps = ((m[0].load(Relaxed) >> 32) as usize).min(MAX_GAPS);
                for k in 0..ngaps {
                    let w = GAPS_WORD + 3 * k;
                    let (start, len) = (m[w].load(Relaxed), m[w + 1].load(Relaxed));
                    if start.saturating_add(len) > offset {
                        gap = Some(GapRec {
                            offset: start,
                            len,
                            kind: m[w + 2].load(Relaxed),
                        });
                        break;
                    }
                }
            }
            if slot.stamp.validate(tok) {
                return Some(SideAt {
                    generation,
                    flags,
                    extent,
                    offset,
                    gap,
                    stamp: tok.stamp(),
                });
            }
        }
        backoff(i);
    }
    None
}

/// The ring index side `side` of a slot names now, read without the seqlock: a hint, for a
/// reader that prefetches the ring's metadata and bytes ahead of a [`read_side_at`]; it may
/// be torn or stale, and must never decide anything.
#[inline]
pub fn side_ring_hint(slot: &FlowSlot, side: usize) -> u32 {
    ring_of(side_words(slot, side)[RING_WORD].load(crate::sync::Ordering::Relaxed))
}

/// What a new reader's start on each side depends on ([`read_side_starts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SideStarts {
    /// The slot's generation.
    pub generation: u32,
    /// [`flow_flags`].
    pub flags: u32,
    /// Per side, its [`SideExtent`].
    pub sides: [SideExtent; 2],
}

/// Where each side's stream starts for a new reader, as far as the slot tells it
/// ([`SideStarts`]), copied under the seqlock in one go. `None` only if a writer kept the slot
/// busy for `max_tries` attempts.
pub fn read_side_starts(
    slot: &FlowSlot,
    metas: &[RingMetaSlot],
    max_tries: u32,
) -> Option<SideStarts> {
    for i in 0..max_tries {
        if let Some(tok) = slot.stamp.begin_read() {
            let (generation, flags) =
                gen_flags(slot.words[GEN_FLAGS_WORD].load(crate::sync::Ordering::Relaxed));
            let sides = [load_extent(slot, metas, 0).0, load_extent(slot, metas, 1).0];
            if slot.stamp.validate(tok) {
                return Some(SideStarts {
                    generation,
                    flags,
                    sides,
                });
            }
        }
        backoff(i);
    }
    None
}

/// Copies a slot's data and the metadata of the ring held by side `side` (`None` for the
/// metadata when the side holds no ring or its index is out of range).
pub fn read_flow_with_meta(
    slot: &FlowSlot,
    metas: &[RingMetaSlot],
    side: usize,
    max_tries: u32,
) -> Option<(FlowSnapshot, Option<RingMeta>)> {
    for i in 0..max_tries {
        if let Some(tok) = slot.stamp.begin_read() {
            let data = FlowData::load(&slot.words);
            let ring = data.sides[side & 1].ring;
            let meta = if ring == NO_RING {
                None
            } else {
                metas
                    .get(ring as usize)
                    .map(|m| RingMeta::load_prefix(&m.words))
            };
            if slot.stamp.validate(tok) {
                return Some((
                    FlowSnapshot {
                        data,
                        stamp: tok.stamp(),
                    },
                    meta,
                ));
            }
        }
        backoff(i);
    }
    None
}

/// Copies a slot's data and, when its flags say it has one, its tunnel record (`tunnel`:
/// the slot's [`TunnelSlot`], `None` when the sensor publishes none).
pub fn read_flow_with_tunnel(
    slot: &FlowSlot,
    tunnel: Option<&TunnelSlot>,
    max_tries: u32,
) -> Option<(FlowSnapshot, Option<TunnelData>)> {
    for i in 0..max_tries {
        if let Some(tok) = slot.stamp.begin_read() {
            let data = FlowData::load(&slot.words);
            let t = tunnel
                .filter(|_| data.flags & flow_flags::TUNNEL != 0)
                .map(|t| TunnelData::load(&t.words));
            if slot.stamp.validate(tok) {
                return Some((
                    FlowSnapshot {
                        data,
                        stamp: tok.stamp(),
                    },
                    t,
                ));
            }
        }
        backoff(i);
    }
    None
}

impl RingMeta {
    /// Loads only the used part (header words, `nfrags` fragments, `ngaps` gaps): a ring's
    /// metadata is mostly empty, and this is on every `peek`.
    pub fn load_prefix(words: &[crate::sync::AtomicU64]) -> RingMeta {
        use crate::sync::Ordering::Relaxed;
        let mut m = RingMeta::default();
        let w0 = words[0].load(Relaxed);
        m.nfrags = (w0 as u32).min(crate::layout::MAX_FRAGMENTS as u32);
        m.ngaps = ((w0 >> 32) as u32).min(crate::layout::MAX_GAPS as u32);
        m.unknown_below = words[1].load(Relaxed);
        for i in 0..m.nfrags as usize {
            m.frags[i].start = words[2 + 2 * i].load(Relaxed);
            m.frags[i].len = words[3 + 2 * i].load(Relaxed) as u32;
        }
        let g0 = 2 + 2 * crate::layout::MAX_FRAGMENTS;
        for i in 0..m.ngaps as usize {
            m.gaps[i].offset = words[g0 + 3 * i].load(Relaxed);
            m.gaps[i].len = words[g0 + 3 * i + 1].load(Relaxed);
            m.gaps[i].kind = words[g0 + 3 * i + 2].load(Relaxed);
        }
        m
    }

    /// Stores only the used part (the counterpart of [`RingMeta::load_prefix`]).
    pub fn store_prefix(&self, words: &[crate::sync::AtomicU64]) {
        use crate::sync::Ordering::Relaxed;
        words[0].store(
            u64::from(self.nfrags) | (u64::from(self.ngaps) << 32),
            Relaxed,
        );
        words[1].store(self.unknown_below, Relaxed);
        for i in 0..self.nfrags as usize {
            words[2 + 2 * i].store(self.frags[i].start, Relaxed);
            words[3 + 2 * i].store(u64::from(self.frags[i].len), Relaxed);
        }
        let g0 = 2 + 2 * crate::layout::MAX_FRAGMENTS;
        for i in 0..self.ngaps as usize {
            words[g0 + 3 * i].store(self.gaps[i].offset, Relaxed);
            words[g0 + 3 * i + 1].store(self.gaps[i].len, Relaxed);
            words[g0 + 3 * i + 2].store(self.gaps[i].kind, Relaxed);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::layout::{FragRec, GapRec, FLOW_WORDS, RING_META_WORDS};
    use crate::sync::AtomicU64;

    #[test]
    fn prefix_round_trip_matches_full_layout() {
        let mut m = RingMeta {
            nfrags: 2,
            ngaps: 1,
            unknown_below: 5,
            ..Default::default()
        };
        m.frags[0] = FragRec {
            start: 10,
            len: 3,
            _pad: 0,
        };
        m.frags[1] = FragRec {
            start: 20,
            len: 4,
            _pad: 0,
        };
        m.gaps[0] = GapRec {
            offset: 1,
            len: 2,
            kind: 1,
        };
        let words: Vec<AtomicU64> = (0..RING_META_WORDS).map(|_| AtomicU64::new(0)).collect();
        m.store_prefix(&words);
        assert_eq!(RingMeta::load_prefix(&words), m);
        // The prefix encoding is the repr(C) layout itself.
        assert_eq!(RingMeta::load(&words), m);
    }

    #[test]
    fn a_slot_under_write_is_not_read() {
        let slot = FlowSlot {
            stamp: crate::seqlock::Stamp::new(),
            words: core::array::from_fn::<_, FLOW_WORDS, _>(|_| AtomicU64::new(0)),
        };
        slot.stamp.begin_write();
        assert!(read_flow(&slot, 3).is_none());
        slot.stamp.end_write();
        assert!(read_flow(&slot, 3).is_some());
    }

    /// A slot whose client side holds ring 1 (with two gaps and a fragment) and whose server
    /// side holds none, and the ring metadata.
    fn slot_with_rings() -> (FlowSlot, Vec<RingMetaSlot>, FlowData, RingMeta) {
        let slot = FlowSlot {
            stamp: crate::seqlock::Stamp::new(),
            words: core::array::from_fn::<_, FLOW_WORDS, _>(|_| AtomicU64::new(0)),
        };
        let metas: Vec<RingMetaSlot> = (0..2)
            .map(|_| RingMetaSlot {
                words: core::array::from_fn(|_| AtomicU64::new(0)),
            })
            .collect();
        let mut d = FlowData {
            generation: 42,
            flags: flow_flags::LIVE,
            serial: 3,
            ..Default::default()
        };
        d.sides[0] = SideData {
            head: 100,
            tail: 900,
            lost: 7,
            ring: 1,
            base_seq: 5,
            state: 4,
            ..Default::default()
        };
        d.sides[1] = SideData {
            head: 20,
            tail: 20,
            ring: NO_RING,
            ..Default::default()
        };
        let mut m = RingMeta {
            nfrags: 1,
            ngaps: 2,
            unknown_below: 150,
            ..Default::default()
        };
        m.frags[0] = FragRec {
            start: 1000,
            len: 10,
            _pad: 0,
        };
        m.gaps[0] = GapRec {
            offset: 300,
            len: 5,
            kind: 1,
        };
        m.gaps[1] = GapRec {
            offset: 400,
            len: 8,
            kind: 2,
        };
        slot.stamp.begin_write();
        d.store(&slot.words);
        m.store_prefix(&metas[1].words);
        slot.stamp.end_write();
        (slot, metas, d, m)
    }

    #[test]
    fn a_side_at_holds_what_the_whole_copy_holds_for_in_order_reading() {
        let (slot, metas, d, m) = slot_with_rings();
        for side in 0..2 {
            let v = read_side_at(&slot, &metas, side, |_| 0, 3).unwrap();
            let (whole, meta) = read_flow_with_meta(&slot, &metas, side, 3).unwrap();
            let sd = whole.data.sides[side];
            assert_eq!((v.generation, v.flags), (d.generation, d.flags));
            assert_eq!(
                (v.extent.head, v.extent.tail, v.extent.ring),
                (sd.head, sd.tail, sd.ring),
                "side {side}"
            );
            assert_eq!(v.extent.unknown_below, meta.map(|m| m.unknown_below));
            assert_eq!(v.stamp, whole.stamp);
            assert_eq!(v.offset, 0);
            if side == 1 {
                assert_eq!((v.extent.unknown_below, v.gap), (None, None));
            }
        }
        // The gap handed back is the first one that ends past the offset: gaps (300, 5) and
        // (400, 8).
        for (at, want) in [
            (0, Some(m.gaps[0])),
            (304, Some(m.gaps[0])),
            (305, Some(m.gaps[1])),
            (407, Some(m.gaps[1])),
            (408, None),
            (u64::MAX, None),
        ] {
            let v = read_side_at(&slot, &metas, 0, |_| at, 3).unwrap();
            assert_eq!((v.offset, v.gap), (at, want), "from {at}");
        }
        // `from` sees the extent of the version it reads.
        let v = read_side_at(
            &slot,
            &metas,
            0,
            |e| e.head.max(e.unknown_below.unwrap()),
            3,
        );
        assert_eq!(v.unwrap().offset, 150);
        assert_eq!(side_ring_hint(&slot, 0), 1);
        assert_eq!(side_ring_hint(&slot, 1), NO_RING);
        let starts = read_side_starts(&slot, &metas, 3).unwrap();
        assert_eq!((starts.generation, starts.flags), (42, flow_flags::LIVE));
        let extent = |sd: &SideData, below| SideExtent {
            head: sd.head,
            tail: sd.tail,
            ring: sd.ring,
            unknown_below: below,
        };
        assert_eq!(starts.sides[0], extent(&d.sides[0], Some(150)));
        assert_eq!(starts.sides[1], extent(&d.sides[1], None));
        // A ring index past the metadata gives no metadata, as the whole copy does.
        let short = &metas[..1];
        let v = read_side_at(&slot, short, 0, |_| 0, 3).unwrap();
        assert_eq!((v.extent.unknown_below, v.gap), (None, None));
        assert_eq!(
            read_side_starts(&slot, short, 3).unwrap().sides[0].unknown_below,
            None
        );
        assert_eq!(read_flow_with_meta(&slot, short, 0, 3).unwrap().1, None);
        // Nothing is read under a write.
        slot.stamp.begin_write();
        assert!(read_side_at(&slot, &metas, 0, |_| 0, 3).is_none());
        assert!(read_side_starts(&slot, &metas, 3).is_none());
        slot.stamp.end_write();
        assert!(read_side_at(&slot, &metas, 0, |_| 0, 3).unwrap().stamp > 0);
    }

    #[test]
    fn side_tail_reads_the_same_fields_as_the_whole_slot() {
        let slot = FlowSlot {
            stamp: crate::seqlock::Stamp::new(),
            words: core::array::from_fn::<_, FLOW_WORDS, _>(|_| AtomicU64::new(0)),
        };
        let mut d = FlowData {
            generation: 0xdead_beef,
            flags: flow_flags::LIVE | flow_flags::CLOSED,
            ..Default::default()
        };
        d.sides[0].tail = 0x1234_5678_9abc;
        d.sides[1].tail = 77;
        d.sides[0].head = 1;
        d.sides[1].lost = 2;
        slot.stamp.begin_write();
        d.store(&slot.words);
        assert!(read_side_tail(&slot, 0, 3).is_none(), "read under a write");
        slot.stamp.end_write();
        for side in 0..2 {
            let t = read_side_tail(&slot, side, 3).unwrap();
            assert_eq!(
                (t.generation, t.flags, t.tail),
                (d.generation, d.flags, d.sides[side].tail),
                "side {side}"
            );
        }
    }
}
