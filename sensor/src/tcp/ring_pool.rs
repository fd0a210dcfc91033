//! The pool of stream rings: one allocation, split into fixed-size rings handed to flow sides
//! on their first payload byte and returned at flow end.
//!
//! Each ring has a small [`RingMeta`] beside its bytes: the out-of-order fragment list and the
//! recent gaps. They live here rather than in the [`Stream`](super::reassembly::Stream) so that
//! an idle flow side, which holds no ring, costs only its few counters (the goal is at most
//! 512 bytes per idle connection).

use core::fmt;
use core::ops::Range;

use thiserror::Error;

/// The most out-of-order islands one ring holds; a segment that would add another is dropped.
pub const MAX_FRAGMENTS: usize = 32;

/// How many recent gaps one ring remembers.
pub const MAX_GAPS: usize = 16;

/// Names one ring of a [`RingPool`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RingId(pub u32);

/// An out-of-order island: bytes `[start, start + len)` held beyond the stream's tail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fragment {
    /// Stream offset of the first byte.
    pub start: u64,
    /// Number of bytes; never 0 in a fragment list.
    pub len: u32,
}

impl Fragment {
    /// One past the last byte.
    #[inline]
    pub fn end(&self) -> u64 {
        self.start + u64::from(self.len)
    }
}

/// Why the stream skipped bytes it never held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GapKind {
    /// The receiver acknowledged bytes the capture never saw.
    #[default]
    Missed,
    /// The capture's snap length cut them from a frame.
    Snap,
    /// An out-of-order segment more than one ring ahead forced the ring forward past bytes not
    /// yet received (and any fragments among them).
    Overflow,
}

/// Bytes `[offset, offset + len)` of a stream that the stream skipped without holding them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gap {
    /// Stream offset of the first skipped byte.
    pub offset: u64,
    /// Number of bytes skipped.
    pub len: u64,
    /// Why.
    pub kind: GapKind,
}

impl Gap {
    /// One past the last skipped byte.
    #[inline]
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// Per-ring bookkeeping kept beside the ring's bytes.
///
/// Invariants, maintained by the stream that owns the ring:
/// - `frags[..nfrags]` is sorted by offset; fragments are non-empty, disjoint and not adjacent
///   (touching islands are merged), and all lie above the stream's tail.
/// - The gap list holds the most recent gaps, oldest first, sorted by offset (a stream only
///   records gaps at its tail, which never moves back); a gap adjacent to the previous one and
///   of the same kind extends it.
/// - When a gap is evicted from the full list, `unknown_below` moves to its end: below it, the
///   ring can no longer tell held bytes from skipped ones, so readers are told those bytes are
///   lost instead of being handed stale ring content.
#[derive(Clone)]
pub struct RingMeta {
    frags: [Fragment; MAX_FRAGMENTS],
    nfrags: u8,
    gaps: [Gap; MAX_GAPS],
    gap_first: u8,
    ngaps: u8,
    unknown_below: u64,
}

impl RingMeta {
    const EMPTY: RingMeta = RingMeta {
        frags: [Fragment { start: 0, len: 0 }; MAX_FRAGMENTS],
        nfrags: 0,
        gaps: [Gap {
            offset: 0,
            len: 0,
            kind: GapKind::Missed,
        }; MAX_GAPS],
        gap_first: 0,
        ngaps: 0,
        unknown_below: 0,
    };

    fn reset(&mut self) {
        self.nfrags = 0;
        self.gap_first = 0;
        self.ngaps = 0;
        self.unknown_below = 0;
    }

    /// The out-of-order fragments, sorted by offset.
    #[inline]
    pub fn fragments(&self) -> &[Fragment] {
        &self.frags[..usize::from(self.nfrags)]
    }

    /// Replaces `fragments()[range]` by `new` (if any), keeping the list sorted: the caller
    /// passes the run of fragments an island absorbed and the island itself.
    ///
    /// Panics if the result would exceed [`MAX_FRAGMENTS`]; callers check the cap first.
    pub(crate) fn replace_fragments(&mut self, range: Range<usize>, new: Option<Fragment>) {
        let n = usize::from(self.nfrags);
        assert!(range.start <= range.end && range.end <= n);
        let removed = range.end - range.start;
        let added = usize::from(new.is_some());
        let new_n = n - removed + added;
        assert!(new_n <= MAX_FRAGMENTS, "fragment cap exceeded");
        self.frags.copy_within(range.end..n, range.start + added);
        if let Some(f) = new {
            debug_assert!(f.len > 0);
            self.frags[range.start] = f;
        }
        self.nfrags = new_n as u8;
    }

    /// Records a gap at the stream's tail; when the list is full the oldest record is evicted
    /// and `unknown_below` moves to its end.
    pub(crate) fn push_gap(&mut self, gap: Gap) {
        if gap.len == 0 {
            return;
        }
        if self.ngaps > 0 {
            let last = &mut self.gaps[self.gap_index(usize::from(self.ngaps) - 1)];
            debug_assert!(
                last.end() <= gap.offset,
                "gaps are recorded in offset order"
            );
            if last.end() == gap.offset && last.kind == gap.kind {
                last.len += gap.len;
                return;
            }
        }
        if usize::from(self.ngaps) == MAX_GAPS {
            let oldest = self.gaps[usize::from(self.gap_first)];
            self.unknown_below = self.unknown_below.max(oldest.end());
            self.gap_first = ((usize::from(self.gap_first) + 1) % MAX_GAPS) as u8;
            self.ngaps -= 1;
        }
        let idx = self.gap_index(usize::from(self.ngaps));
        self.gaps[idx] = gap;
        self.ngaps += 1;
    }

    #[inline]
    fn gap_index(&self, i: usize) -> usize {
        (usize::from(self.gap_first) + i) % MAX_GAPS
    }

    /// The recent gaps, oldest (lowest offset) first.
    pub fn gaps(&self) -> impl Iterator<Item = Gap> + '_ {
        (0..usize::from(self.ngaps)).map(move |i| self.gaps[self.gap_index(i)])
    }

    /// Below this offset, gap records were evicted: bytes there cannot be told apart from
    /// skipped ones.
    #[inline]
    pub fn unknown_below(&self) -> u64 {
        self.unknown_below
    }
}

impl fmt::Debug for RingMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingMeta")
            .field("fragments", &self.fragments())
            .field("gaps", &self.gaps().collect::<Vec<_>>())
            .field("unknown_below", &self.unknown_below)
            .finish()
    }
}

/// A pool configuration the pool cannot honour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum PoolError {
    /// Ring sizes must be powers of two so that offsets map to ring positions by masking.
    #[error("ring size {ring_size} is not a power of two")]
    RingSizeNotPowerOfTwo {
        /// The size asked for.
        ring_size: usize,
    },
    /// Fragment lengths are `u32`, and offsets are compared as `i32` sequence distances.
    #[error("ring size {ring_size} exceeds 2^31 bytes")]
    RingTooLarge {
        /// The size asked for.
        ring_size: usize,
    },
    /// The ring count does not fit a [`RingId`], or the pool's size does not fit in memory.
    #[error("{max_rings} rings of {ring_size} bytes do not fit")]
    PoolTooLarge {
        /// The size asked for.
        ring_size: usize,
        /// The count asked for.
        max_rings: usize,
    },
}

/// Where a pool's bytes live.
enum Storage {
    /// Private memory (tests, `--dump` without publication).
    Heap(Vec<u8>),
    /// A range of the shared main region, written by this worker alone and read by analyzers.
    Shared(&'static mut [u8]),
}

impl Storage {
    #[inline]
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Heap(v) => v,
            Storage::Shared(s) => s,
        }
    }

    #[inline]
    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Storage::Heap(v) => v,
            Storage::Shared(s) => s,
        }
    }
}

/// Fixed-size byte rings carved from one buffer allocated once.
///
/// The buffer is zero-allocated (`calloc`, or fresh shared memory), so pages no ring has
/// touched cost no memory. A ring handed out again still holds its previous flow's bytes:
/// streams only ever return bytes they wrote themselves, so that content is never observable.
pub struct RingPool {
    bytes: Storage,
    meta: Vec<RingMeta>,
    /// Free ring ids, used as a stack: the most recently freed ring, whose pages are likely
    /// resident, is handed out first.
    free: Vec<u32>,
    allocated: Vec<bool>,
    ring_size: usize,
}

impl RingPool {
    /// A pool of `max_rings` rings of `ring_size` bytes each, in private memory.
    pub fn new(ring_size: usize, max_rings: usize) -> Result<Self, PoolError> {
        Self::check(ring_size, max_rings)?;
        Ok(Self::build(
            Storage::Heap(vec![0u8; ring_size * max_rings]),
            ring_size,
            max_rings,
        ))
    }

    /// The most heap bytes a pool of `max_rings` rings of `ring_size` bytes uses: the rings
    /// themselves when they are private (with `in_shared` they are in the shared region),
    /// each ring's [`RingMeta`], the free list and the allocation flags. All of it is
    /// allocated at creation; out-of-order data lives in the rings, so it is bounded by this
    /// too.
    pub fn memory_bound(ring_size: usize, max_rings: usize, private: bool) -> usize {
        let per_ring = core::mem::size_of::<RingMeta>() + core::mem::size_of::<u32>() + 1;
        let rings = if private {
            ring_size.saturating_mul(max_rings)
        } else {
            0
        };
        rings.saturating_add(per_ring.saturating_mul(max_rings))
    }

    /// A pool whose rings are `bytes` (shared memory), `ring_size` bytes each: ring `i` is
    /// `bytes[i * ring_size..][..ring_size]`.
    pub fn in_shared(ring_size: usize, bytes: &'static mut [u8]) -> Result<Self, PoolError> {
        let max_rings = bytes.len() / ring_size.max(1);
        Self::check(ring_size, max_rings)?;
        Ok(Self::build(Storage::Shared(bytes), ring_size, max_rings))
    }

    fn build(bytes: Storage, ring_size: usize, max_rings: usize) -> Self {
        RingPool {
            bytes,
            meta: vec![RingMeta::EMPTY; max_rings],
            free: (0..max_rings as u32).rev().collect(),
            allocated: vec![false; max_rings],
            ring_size,
        }
    }

    fn check(ring_size: usize, max_rings: usize) -> Result<(), PoolError> {
        if !ring_size.is_power_of_two() {
            return Err(PoolError::RingSizeNotPowerOfTwo { ring_size });
        }
        if ring_size > 1 << 31 {
            return Err(PoolError::RingTooLarge { ring_size });
        }
        let fits = match ring_size.checked_mul(max_rings) {
            Some(total) => total <= isize::MAX as usize,
            None => false,
        };
        if max_rings >= u32::MAX as usize || !fits {
            return Err(PoolError::PoolTooLarge {
                ring_size,
                max_rings,
            });
        }
        Ok(())
    }

    /// Takes a ring from the pool, with empty metadata; `None` if every ring is in use.
    pub fn alloc(&mut self) -> Option<RingId> {
        let id = self.free.pop()?;
        self.allocated[id as usize] = true;
        self.meta[id as usize].reset();
        Some(RingId(id))
    }

    /// Returns a ring to the pool.
    ///
    /// Panics if the ring is not allocated: a double free would hand one ring to two streams.
    pub fn free(&mut self, id: RingId) {
        let slot = &mut self.allocated[id.0 as usize];
        assert!(*slot, "ring {} freed twice", id.0);
        *slot = false;
        self.free.push(id.0);
    }

    /// Rings currently handed out.
    #[inline]
    pub fn in_use(&self) -> usize {
        self.capacity() - self.free.len()
    }

    /// Total number of rings.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.meta.len()
    }

    /// Bytes per ring (a power of two).
    #[inline]
    pub fn ring_size(&self) -> usize {
        self.ring_size
    }

    /// The bytes and metadata of a ring.
    #[inline]
    pub fn ring(&self, id: RingId) -> (&[u8], &RingMeta) {
        let i = id.0 as usize;
        debug_assert!(self.allocated[i]);
        let start = i * self.ring_size;
        (
            &self.bytes.bytes()[start..start + self.ring_size],
            &self.meta[i],
        )
    }

    /// The bytes and metadata of a ring, writable.
    #[inline]
    pub fn ring_mut(&mut self, id: RingId) -> (&mut [u8], &mut RingMeta) {
        let i = id.0 as usize;
        debug_assert!(self.allocated[i]);
        let start = i * self.ring_size;
        (
            &mut self.bytes.bytes_mut()[start..start + self.ring_size],
            &mut self.meta[i],
        )
    }

    /// The metadata of a ring.
    #[inline]
    pub fn meta(&self, id: RingId) -> &RingMeta {
        &self.meta[id.0 as usize]
    }
}

impl fmt::Debug for RingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingPool")
            .field("ring_size", &self.ring_size)
            .field("capacity", &self.capacity())
            .field("in_use", &self.in_use())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_sizes() {
        assert_eq!(
            RingPool::new(1000, 4).unwrap_err(),
            PoolError::RingSizeNotPowerOfTwo { ring_size: 1000 }
        );
        assert!(matches!(
            RingPool::new(0, 4),
            Err(PoolError::RingSizeNotPowerOfTwo { .. })
        ));
        assert!(matches!(
            RingPool::new(1 << 32, 1),
            Err(PoolError::RingTooLarge { .. })
        ));
        assert!(matches!(
            RingPool::new(1 << 30, usize::MAX / 2),
            Err(PoolError::PoolTooLarge { .. })
        ));
    }

    #[test]
    fn alloc_until_empty_then_reuse() {
        let mut pool = RingPool::new(1024, 3).unwrap();
        assert_eq!(
            (pool.capacity(), pool.in_use(), pool.ring_size()),
            (3, 0, 1024)
        );
        let ids: Vec<_> = (0..3).map(|_| pool.alloc().unwrap()).collect();
        assert_eq!(ids, [RingId(0), RingId(1), RingId(2)]);
        assert_eq!(pool.in_use(), 3);
        assert_eq!(pool.alloc(), None);
        pool.free(ids[1]);
        assert_eq!(pool.in_use(), 2);
        assert_eq!(pool.alloc(), Some(RingId(1)));
    }

    #[test]
    fn rings_are_disjoint() {
        let mut pool = RingPool::new(16, 2).unwrap();
        let a = pool.alloc().unwrap();
        let b = pool.alloc().unwrap();
        pool.ring_mut(a).0.fill(0xaa);
        pool.ring_mut(b).0.fill(0xbb);
        assert!(pool.ring(a).0.iter().all(|&x| x == 0xaa));
        assert!(pool.ring(b).0.iter().all(|&x| x == 0xbb));
    }

    #[test]
    #[should_panic(expected = "freed twice")]
    fn double_free_panics() {
        let mut pool = RingPool::new(16, 1).unwrap();
        let a = pool.alloc().unwrap();
        pool.free(a);
        pool.free(a);
    }

    #[test]
    fn realloc_resets_meta() {
        let mut pool = RingPool::new(16, 1).unwrap();
        let a = pool.alloc().unwrap();
        let meta = pool.ring_mut(a).1;
        meta.replace_fragments(0..0, Some(Fragment { start: 5, len: 2 }));
        meta.push_gap(Gap {
            offset: 1,
            len: 1,
            kind: GapKind::Missed,
        });
        pool.free(a);
        let a = pool.alloc().unwrap();
        assert!(pool.meta(a).fragments().is_empty());
        assert_eq!(pool.meta(a).gaps().count(), 0);
    }

    #[test]
    fn fragment_list_replace() {
        let mut m = RingMeta::EMPTY;
        let f = |start, len| Fragment { start, len };
        m.replace_fragments(0..0, Some(f(10, 5)));
        m.replace_fragments(1..1, Some(f(30, 5)));
        m.replace_fragments(1..1, Some(f(20, 5)));
        assert_eq!(m.fragments(), [f(10, 5), f(20, 5), f(30, 5)]);
        // An island bridging the first two absorbs them.
        m.replace_fragments(0..2, Some(f(10, 15)));
        assert_eq!(m.fragments(), [f(10, 15), f(30, 5)]);
        // The tail swallowing the first removes it.
        m.replace_fragments(0..1, None);
        assert_eq!(m.fragments(), [f(30, 5)]);
    }

    #[test]
    fn gap_list_coalesces_and_evicts_oldest() {
        let mut m = RingMeta::EMPTY;
        let g = |offset, len, kind| Gap { offset, len, kind };
        m.push_gap(g(0, 5, GapKind::Missed));
        m.push_gap(g(5, 5, GapKind::Missed));
        m.push_gap(g(10, 5, GapKind::Snap));
        m.push_gap(g(20, 0, GapKind::Snap));
        assert_eq!(
            m.gaps().collect::<Vec<_>>(),
            [g(0, 10, GapKind::Missed), g(10, 5, GapKind::Snap)]
        );
        for i in 0..MAX_GAPS as u64 {
            m.push_gap(g(100 + 10 * i, 1, GapKind::Missed));
        }
        assert_eq!(m.gaps().count(), MAX_GAPS);
        assert_eq!(m.gaps().next(), Some(g(100, 1, GapKind::Missed)));
        assert_eq!(m.unknown_below(), 15);
    }
}
