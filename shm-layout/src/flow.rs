//! Reading a flow slot: one consistent copy of its [`FlowData`] and, when asked, of the
//! metadata of the rings its sides hold.

use crate::layout::{
    flow_flags, FlowData, FlowSlot, RingMeta, RingMetaSlot, TunnelData, TunnelSlot, NO_RING,
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
