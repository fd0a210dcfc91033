//! The pool of stream buffers: a side that holds bytes takes a buffer on its first payload
//! byte, and its bytes live in fixed-size chunks taken from one pool as the stream needs them
//! (up to what the sender has in flight and what analyzers have yet to pass) and given back as
//! they are released; the buffer goes back at flow end.
//!
//! Each buffer has a small [`RingMeta`]: the out-of-order fragment list and the recent gaps.
//! They live here rather than in the [`Stream`](super::reassembly::Stream) so that an idle flow
//! side, which holds no buffer, costs only its few counters (the goal is at most 512 bytes per
//! idle connection).
//!
//! ("Ring" in names here is the historical name of a side's buffer: offsets still map to
//! positions by masking, within each chunk.)

use core::fmt;
use core::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};

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
///
/// The counts come first, in one cache line with `unknown_below` and the first fragments: the
/// checks made on every segment (how many fragments and gaps, in lossless mode whether the gap
/// list is full) read that line only.
#[derive(Clone)]
#[repr(C)]
pub struct RingMeta {
    nfrags: u8,
    gap_first: u8,
    ngaps: u8,
    unknown_below: u64,
    frags: [Fragment; MAX_FRAGMENTS],
    gaps: [Gap; MAX_GAPS],
}

impl RingMeta {
    const EMPTY: RingMeta = RingMeta {
        nfrags: 0,
        gap_first: 0,
        ngaps: 0,
        unknown_below: 0,
        frags: [Fragment { start: 0, len: 0 }; MAX_FRAGMENTS],
        gaps: [Gap {
            offset: 0,
            len: 0,
            kind: GapKind::Missed,
        }; MAX_GAPS],
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
    #[inline]
    pub(crate) fn replace_fragments(&mut self, range: Range<usize>, new: Option<Fragment>) {
        let n = usize::from(self.nfrags);
        assert!(range.start <= range.end && range.end <= n);
        if range.is_empty() && new.is_none() {
            // Nothing replaced by nothing: an in-order append that met no fragment.
            return;
        }
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
    /// Chunk sizes must be powers of two so that offsets map to chunk positions by masking.
    #[error("chunk size {chunk_size} is not a power of two")]
    ChunkSizeNotPowerOfTwo {
        /// The size asked for.
        chunk_size: usize,
    },
    /// The chunk map length (a side's most chunks) must be a power of two.
    #[error("a side's most chunks ({map_len}) is not a power of two")]
    MapLenNotPowerOfTwo {
        /// The length asked for.
        map_len: usize,
    },
    /// Fragment lengths are `u32`, and offsets are compared as `i32` sequence distances: a
    /// side's span must stay below 2^31 bytes.
    #[error("a side's span of {map_len} chunks of {chunk_size} bytes exceeds 2^30 bytes")]
    SpanTooLarge {
        /// The chunk size asked for.
        chunk_size: usize,
        /// The map length asked for.
        map_len: usize,
    },
    /// The counts do not fit 32-bit indices, or the pool's size does not fit in memory.
    #[error("{chunks} chunks of {chunk_size} bytes for {buffers} buffers do not fit")]
    PoolTooLarge {
        /// The chunk size asked for.
        chunk_size: usize,
        /// The chunk count asked for.
        chunks: usize,
        /// The buffer count asked for.
        buffers: usize,
    },
}

/// The shape of a [`RingPool`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    /// Bytes per chunk (a power of two).
    pub chunk_size: usize,
    /// Chunks in the pool.
    pub chunks: usize,
    /// Stream buffers (one per side holding bytes).
    pub buffers: usize,
    /// Entries per buffer's chunk map (a power of two): a side spans at most this many chunks.
    pub map_len: usize,
}

impl PoolShape {
    /// The most bytes one side spans from its head: `map_len` chunks.
    #[inline]
    pub fn span(&self) -> u64 {
        (self.chunk_size as u64).saturating_mul(self.map_len as u64)
    }

    fn check(&self) -> Result<(), PoolError> {
        let PoolShape {
            chunk_size,
            chunks,
            buffers,
            map_len,
        } = *self;
        if !chunk_size.is_power_of_two() {
            return Err(PoolError::ChunkSizeNotPowerOfTwo { chunk_size });
        }
        if !map_len.is_power_of_two() {
            return Err(PoolError::MapLenNotPowerOfTwo { map_len });
        }
        if chunk_size.checked_mul(map_len).is_none_or(|s| s > 1 << 30) {
            return Err(PoolError::SpanTooLarge {
                chunk_size,
                map_len,
            });
        }
        let fits = chunk_size
            .checked_mul(chunks)
            .is_some_and(|t| t <= isize::MAX as usize)
            && buffers
                .checked_mul(map_len)
                .is_some_and(|t| t <= isize::MAX as usize / 4);
        if chunks >= NO_CHUNK as usize || buffers >= NO_CHUNK as usize || !fits {
            return Err(PoolError::PoolTooLarge {
                chunk_size,
                chunks,
                buffers,
            });
        }
        Ok(())
    }
}

/// A chunk-map entry meaning "no chunk".
pub const NO_CHUNK: u32 = u32::MAX;
/// [`RingPool::chunk_done`] of a chunk whose bytes are not all in order yet.
const NOT_DONE: u64 = u64::MAX;
/// The end of the recency list.
const NIL: u32 = u32::MAX;

/// Where a pool's bytes and chunk maps live.
enum Storage {
    /// Private memory (tests, `--dump` without publication).
    Heap(Vec<u8>, Vec<AtomicU32>),
    /// Ranges of the shared main region, written by this worker alone and read by analyzers.
    Shared(&'static mut [u8], &'static [AtomicU32]),
}

impl Storage {
    #[inline]
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Heap(v, _) => v,
            Storage::Shared(s, _) => s,
        }
    }

    #[inline]
    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Storage::Heap(v, _) => v,
            Storage::Shared(s, _) => s,
        }
    }

    #[inline]
    fn map(&self) -> &[AtomicU32] {
        match self {
            Storage::Heap(_, m) => m,
            Storage::Shared(_, m) => m,
        }
    }
}

/// Stream buffers: each side that holds bytes takes a buffer (its [`RingMeta`] and a chunk
/// map), and its bytes live in fixed-size chunks taken from one pool as they are needed and
/// given back as they are released.
///
/// A side's stream offset `o` lives in chunk `map[(o / chunk_size) % map_len]` at position
/// `o % chunk_size`. The stream keeps every chunk index it holds within `map_len` of its head's,
/// so map entries never collide.
///
/// The chunk bytes are zero-allocated (`calloc`, or fresh shared memory), so pages no chunk has
/// touched cost no memory. A chunk handed out again still holds its previous user's bytes:
/// streams only ever return bytes they wrote themselves, so that content is never observable.
///
/// The pool also keeps, for the stream code and the tracker: per chunk, the publication
/// sequence by which all its bytes were in order (announced to analyzers); per buffer, the
/// latest such sequence, its owner (flow slot and side) and its place in a recency list, so
/// that an empty pool can take back the history of the least recently active sides first.
pub struct RingPool {
    shape: PoolShape,
    shift: u32,
    storage: Storage,
    meta: Vec<RingMeta>,
    /// Buffers whose metadata may have changed since [`RingPool::take_meta_changed`] last
    /// said so (set by every way to change it).
    meta_changed: Vec<bool>,
    /// Buffers whose chunk map has been filled with [`NO_CHUNK`]: each is filled when first
    /// handed out, and every release puts its entries back to [`NO_CHUNK`].
    map_filled: Vec<bool>,
    /// Free buffer ids, used as a stack.
    free_bufs: Vec<u32>,
    allocated: Vec<bool>,
    /// Chunks each buffer holds.
    held: Vec<u32>,
    /// Free chunk ids, used as a stack: the most recently freed chunk, whose pages are likely
    /// resident, is handed out first.
    free_chunks: Vec<u32>,
    /// Per chunk: the publication sequence by which its bytes were all in order, or
    /// [`NOT_DONE`].
    chunk_done: Vec<u64>,
    /// Per buffer: the publication sequence of its stream's latest tail move.
    last_pseq: Vec<u64>,
    /// Per buffer: `slot * 2 + side` of the stream using it.
    owner: Vec<u32>,
    /// The recency list of buffers, least recently active first.
    prev: Vec<u32>,
    next: Vec<u32>,
    lru_first: u32,
    lru_last: u32,
    /// The publication sequence of the call in progress (set by the tracker).
    pub pseq: u64,
    /// Every analyzer has passed the events of publication sequence `<= passed`: chunks
    /// announced by then may be released (`u64::MAX` when nothing holds them).
    pub passed: u64,
    /// For the next call only: the connection in this slot may give back its own chunks up
    /// to this publication sequence (the analyzers that get it have passed it; the others
    /// never had its events). See [`RingPool::passed_for`].
    pub flow_passed: Option<(u32, u64)>,
    /// In-order bytes a stream keeps behind its tail whatever analyzers have read.
    pub history: u64,
}

impl RingPool {
    /// A pool of this shape in private memory.
    pub fn new(shape: PoolShape) -> Result<Self, PoolError> {
        shape.check()?;
        // Zeroed, untouched memory: a buffer's map is filled with NO_CHUNK when the buffer is
        // first handed out (see `alloc`), so the pages of maps never used are never touched.
        let map = shm_layout::pod::zeroed_atomic_u32s(shape.buffers * shape.map_len);
        // Zeroed by the allocator and untouched until chunks are used.
        let bytes = vec![0u8; shape.chunk_size * shape.chunks];
        Ok(Self::build(Storage::Heap(bytes, map), shape))
    }

    /// For tests written against fixed rings: `rings` buffers, each spanning `ring_size` bytes
    /// in four chunks, with chunks for all of them and a history of one span.
    #[cfg(test)]
    pub fn for_tests(ring_size: usize, rings: usize) -> Self {
        let chunk_size = (ring_size / 4).max(1);
        let mut p = RingPool::new(PoolShape {
            chunk_size,
            chunks: rings * 5,
            buffers: rings,
            map_len: ring_size / chunk_size,
        })
        .unwrap();
        p.history = ring_size as u64;
        p
    }

    /// A pool whose chunks are `bytes` and whose chunk maps are `map` (shared memory): chunk
    /// `i` is `bytes[i * chunk_size..][..chunk_size]`, buffer `b`'s map is
    /// `map[b * map_len..][..map_len]`. The counts come from the lengths.
    pub fn in_shared(
        chunk_size: usize,
        map_len: usize,
        bytes: &'static mut [u8],
        map: &'static [AtomicU32],
    ) -> Result<Self, PoolError> {
        let shape = PoolShape {
            chunk_size,
            chunks: bytes.len() / chunk_size.max(1),
            buffers: map.len() / map_len.max(1),
            map_len,
        };
        shape.check()?;
        // Each buffer's map is filled when the buffer is first handed out (see `alloc`).
        Ok(Self::build(Storage::Shared(bytes, map), shape))
    }

    /// The most heap bytes a pool of this shape uses: the chunks and maps themselves when they
    /// are private (with `in_shared` they are in the shared region), and the per-buffer and
    /// per-chunk bookkeeping. All of it is reserved at creation (pages are touched as buffers and
    /// chunks are first used).
    pub fn memory_bound(shape: &PoolShape, private: bool) -> usize {
        use core::mem::size_of;
        let per_buf = size_of::<RingMeta>() + 6 * size_of::<u32>() + size_of::<u64>() + 3;
        let per_chunk = size_of::<u32>() + size_of::<u64>();
        let shared = if private {
            shape
                .chunk_size
                .saturating_mul(shape.chunks)
                .saturating_add(
                    shape
                        .buffers
                        .saturating_mul(shape.map_len)
                        .saturating_mul(4),
                )
        } else {
            0
        };
        shared
            .saturating_add(per_buf.saturating_mul(shape.buffers))
            .saturating_add(per_chunk.saturating_mul(shape.chunks))
    }

    fn build(storage: Storage, shape: PoolShape) -> Self {
        RingPool {
            shift: shape.chunk_size.trailing_zeros(),
            storage,
            meta: Vec::with_capacity(shape.buffers),
            meta_changed: vec![false; shape.buffers],
            map_filled: vec![false; shape.buffers],
            free_bufs: (0..shape.buffers as u32).rev().collect(),
            allocated: vec![false; shape.buffers],
            held: vec![0; shape.buffers],
            free_chunks: (0..shape.chunks as u32).rev().collect(),
            chunk_done: vec![NOT_DONE; shape.chunks],
            last_pseq: vec![0; shape.buffers],
            owner: vec![u32::MAX; shape.buffers],
            prev: vec![NIL; shape.buffers],
            next: vec![NIL; shape.buffers],
            lru_first: NIL,
            lru_last: NIL,
            pseq: 0,
            passed: u64::MAX,
            flow_passed: None,
            history: 0,
            shape,
        }
    }

    /// Takes a buffer from the pool, with empty metadata and no chunk; `None` if every buffer
    /// is in use.
    pub fn alloc(&mut self) -> Option<RingId> {
        let id = self.free_bufs.pop()?;
        let i = id as usize;
        self.allocated[i] = true;
        if i >= self.meta.len() {
            // Buffers are handed out lowest first, so the metadata grows as the peak number
            // in use does; its memory is touched only then.
            self.meta.resize(i + 1, RingMeta::EMPTY);
        }
        self.meta[i].reset();
        self.meta_changed[i] = true;
        if !self.map_filled[i] {
            let len = self.shape.map_len;
            for e in &self.storage.map()[i * len..][..len] {
                e.store(NO_CHUNK, Ordering::Relaxed);
            }
            self.map_filled[i] = true;
        }
        self.last_pseq[i] = self.pseq;
        self.owner[i] = u32::MAX;
        self.lru_push(id);
        Some(RingId(id))
    }

    /// Returns a buffer and every chunk it holds to the pool.
    ///
    /// Panics if the buffer is not allocated: a double free would hand one buffer to two
    /// streams.
    pub fn free(&mut self, id: RingId) {
        self.free_from(id, 0);
    }

    /// As [`RingPool::free`], for a stream whose oldest held byte is at offset `head`: the
    /// chunks it holds lie within a map's length of `head`'s index, so the walk starts there
    /// and stops at the last held chunk (a short flow's buffer goes back in a step or two,
    /// not a walk over its whole map).
    pub fn free_from(&mut self, id: RingId, head: u64) {
        let i = id.0 as usize;
        assert!(self.allocated[i], "buffer {} freed twice", id.0);
        let start = self.index_of(head);
        let mut k = 0;
        while self.held[i] > 0 && k < self.shape.map_len as u64 {
            let c = self.map_entry(id, start + k);
            if c != NO_CHUNK {
                self.release_entry(id, start + k, c);
            }
            k += 1;
        }
        debug_assert_eq!(
            self.held[i], 0,
            "buffer {} holds chunks below its head",
            id.0
        );
        // Never leak a chunk: should one lie elsewhere, the whole map is walked.
        if self.held[i] > 0 {
            for k in 0..self.shape.map_len as u64 {
                let c = self.map_entry(id, k);
                if c != NO_CHUNK {
                    self.release_entry(id, k, c);
                }
            }
        }
        self.allocated[i] = false;
        self.lru_unlink(id.0);
        self.free_bufs.push(id.0);
    }

    /// Buffers currently handed out.
    #[inline]
    pub fn in_use(&self) -> usize {
        self.capacity() - self.free_bufs.len()
    }

    /// Total number of buffers.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.shape.buffers
    }

    /// Chunks currently held by streams.
    #[inline]
    pub fn chunks_in_use(&self) -> usize {
        self.shape.chunks - self.free_chunks.len()
    }

    /// Chunks free.
    #[inline]
    pub fn chunks_free(&self) -> usize {
        self.free_chunks.len()
    }

    /// Chunks buffer `id` holds.
    #[inline]
    pub fn chunks_held(&self, id: RingId) -> usize {
        self.held[id.0 as usize] as usize
    }

    /// The pool's shape.
    #[inline]
    pub fn shape(&self) -> &PoolShape {
        &self.shape
    }

    /// Bytes per chunk (a power of two).
    #[inline]
    pub fn chunk_size(&self) -> usize {
        self.shape.chunk_size
    }

    /// The most bytes one side spans from its head.
    #[inline]
    pub fn span(&self) -> u64 {
        self.shape.span()
    }

    /// The chunk index (offset / chunk size) of stream offset `o`.
    #[inline]
    pub fn index_of(&self, o: u64) -> u64 {
        o >> self.shift
    }

    /// The metadata of a buffer.
    #[inline]
    pub fn meta(&self, id: RingId) -> &RingMeta {
        // A buffer never handed out has empty metadata (it has none stored yet).
        self.meta.get(id.0 as usize).unwrap_or(&RingMeta::EMPTY)
    }

    /// The metadata of a buffer, writable.
    #[inline]
    pub fn meta_mut(&mut self, id: RingId) -> &mut RingMeta {
        self.meta_changed[id.0 as usize] = true;
        &mut self.meta[id.0 as usize]
    }

    /// Whether a buffer's metadata may have changed since this was last asked (or since it
    /// was allocated), and forgets it: the publisher writes the published copy only then.
    #[inline]
    pub fn take_meta_changed(&mut self, id: RingId) -> bool {
        self.meta_changed
            .get_mut(id.0 as usize)
            .is_some_and(std::mem::take)
    }

    #[inline]
    fn map_slot(&self, id: RingId, idx: u64) -> &AtomicU32 {
        let k = (idx as usize) & (self.shape.map_len - 1);
        &self.storage.map()[id.0 as usize * self.shape.map_len + k]
    }

    /// The chunk holding chunk index `idx` of buffer `id`'s stream, or [`NO_CHUNK`].
    #[inline]
    pub fn map_entry(&self, id: RingId, idx: u64) -> u32 {
        // Only this worker writes the map.
        self.map_slot(id, idx).load(Ordering::Relaxed)
    }

    /// Whether `n` more chunks can be had.
    #[inline]
    pub fn can_take(&self, n: usize) -> bool {
        self.free_chunks.len() >= n
    }

    /// The chunk for chunk index `idx` of buffer `id`, taken from the pool if the buffer has
    /// none there yet; `None` when the pool is empty.
    pub fn chunk_for(&mut self, id: RingId, idx: u64) -> Option<u32> {
        let c = self.map_entry(id, idx);
        if c != NO_CHUNK {
            return Some(c);
        }
        let c = self.free_chunks.pop()?;
        self.chunk_done[c as usize] = NOT_DONE;
        self.held[id.0 as usize] += 1;
        // Published before the chunk's bytes are written; readers validate their copies
        // against the flow slot's seqlock, which the writer holds open meanwhile.
        self.map_slot(id, idx).store(c, Ordering::Release);
        Some(c)
    }

    fn release_entry(&mut self, id: RingId, idx: u64, c: u32) {
        self.map_slot(id, idx).store(NO_CHUNK, Ordering::Release);
        self.held[id.0 as usize] -= 1;
        self.chunk_done[c as usize] = NOT_DONE;
        self.free_chunks.push(c);
    }

    /// Gives back the chunk at index `idx` of buffer `id`, if it holds one.
    pub fn release_chunk(&mut self, id: RingId, idx: u64) {
        let c = self.map_entry(id, idx);
        if c != NO_CHUNK {
            self.release_entry(id, idx, c);
        }
    }

    /// Records that every byte of chunk index `idx` of buffer `id` is now in order, announced
    /// by the call in progress.
    #[inline]
    pub fn mark_done(&mut self, id: RingId, idx: u64) {
        let c = self.map_entry(id, idx);
        if c != NO_CHUNK && self.chunk_done[c as usize] == NOT_DONE {
            self.chunk_done[c as usize] = self.pseq;
        }
    }

    /// The publication sequence by which every byte of chunk index `idx` of buffer `id` was
    /// in order, if it holds a chunk there whose bytes all are.
    #[inline]
    pub fn done_at(&self, id: RingId, idx: u64) -> Option<u64> {
        let c = self.map_entry(id, idx);
        (c != NO_CHUNK)
            .then(|| self.chunk_done[c as usize])
            .filter(|&p| p != NOT_DONE)
    }

    /// The stream using buffer `id` moved its tail in the call in progress.
    #[inline]
    pub fn note_tail_move(&mut self, id: RingId) {
        self.last_pseq[id.0 as usize] = self.pseq;
    }

    /// The publication sequence of the latest tail move of the stream using `id`.
    #[inline]
    pub fn last_tail_pseq(&self, id: RingId) -> u64 {
        self.last_pseq[id.0 as usize]
    }

    /// The bytes of chunk `c`.
    #[inline]
    pub fn chunk(&self, c: u32) -> &[u8] {
        let z = self.shape.chunk_size;
        &self.storage.bytes()[c as usize * z..][..z]
    }

    /// The bytes of chunk `c`, writable.
    #[inline]
    pub fn chunk_mut(&mut self, c: u32) -> &mut [u8] {
        let z = self.shape.chunk_size;
        &mut self.storage.bytes_mut()[c as usize * z..][..z]
    }

    /// Marks buffer `id` as the most recently active, used by `owner` (the tracker's
    /// `slot * 2 + side`).
    #[inline]
    pub fn touch(&mut self, id: RingId, owner: u32) {
        self.owner[id.0 as usize] = owner;
        if self.lru_last != id.0 {
            self.lru_unlink(id.0);
            self.lru_push(id.0);
        }
    }

    /// The owner [`RingPool::touch`] last gave buffer `id`.
    #[inline]
    pub fn owner(&self, id: RingId) -> u32 {
        self.owner[id.0 as usize]
    }

    /// Up to which publication sequence buffer `id`'s chunks may go back: [`RingPool::passed`],
    /// or more for the connection [`RingPool::flow_passed`] names.
    #[inline]
    pub fn passed_for(&self, id: RingId) -> u64 {
        match self.flow_passed {
            Some((slot, p)) if self.owner(id) / 2 == slot => p.max(self.passed),
            _ => self.passed,
        }
    }

    /// The least recently active buffer in use.
    #[inline]
    pub fn lru_first(&self) -> Option<RingId> {
        (self.lru_first != NIL).then_some(RingId(self.lru_first))
    }

    /// The buffer after `id` in the recency list (more recently active).
    #[inline]
    pub fn lru_next(&self, id: RingId) -> Option<RingId> {
        let n = self.next[id.0 as usize];
        (n != NIL).then_some(RingId(n))
    }

    /// The publication sequence by which every in-order byte below `upto` of the stream using
    /// buffer `id` had been announced: when the chunk holding byte `upto - 1` is complete,
    /// the call that completed it; otherwise the stream's latest tail move.
    pub fn announced_by(&self, id: RingId, upto: u64) -> u64 {
        if upto == 0 {
            return 0;
        }
        self.done_at(id, self.index_of(upto - 1))
            .unwrap_or_else(|| self.last_tail_pseq(id))
    }

    /// The buffers in use, least recently active first.
    pub fn by_recency(&self) -> LruIter<'_> {
        LruIter {
            pool: self,
            at: self.lru_first,
        }
    }

    fn lru_push(&mut self, id: u32) {
        let i = id as usize;
        self.prev[i] = self.lru_last;
        self.next[i] = NIL;
        if self.lru_last == NIL {
            self.lru_first = id;
        } else {
            self.next[self.lru_last as usize] = id;
        }
        self.lru_last = id;
    }

    fn lru_unlink(&mut self, id: u32) {
        let i = id as usize;
        let (p, n) = (self.prev[i], self.next[i]);
        if p == NIL {
            if self.lru_first == id {
                self.lru_first = n;
            }
        } else {
            self.next[p as usize] = n;
        }
        if n == NIL {
            if self.lru_last == id {
                self.lru_last = p;
            }
        } else {
            self.prev[n as usize] = p;
        }
        self.prev[i] = NIL;
        self.next[i] = NIL;
    }
}

/// Iterates over buffers in use, least recently active first; the next buffer is read before
/// the current one is returned, so the caller may free the one it was given.
#[derive(Debug)]
pub struct LruIter<'p> {
    pool: &'p RingPool,
    at: u32,
}

impl Iterator for LruIter<'_> {
    type Item = RingId;

    fn next(&mut self) -> Option<RingId> {
        (self.at != NIL).then(|| {
            let id = self.at;
            self.at = self.pool.next[id as usize];
            RingId(id)
        })
    }
}

impl fmt::Debug for RingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingPool")
            .field("shape", &self.shape)
            .field("buffers_in_use", &self.in_use())
            .field("chunks_in_use", &self.chunks_in_use())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(chunk_size: usize, chunks: usize, buffers: usize, map_len: usize) -> PoolShape {
        PoolShape {
            chunk_size,
            chunks,
            buffers,
            map_len,
        }
    }

    #[test]
    fn a_buffers_map_is_filled_when_first_handed_out_and_its_metadata_marked_changed() {
        // Shared memory holding garbage where the maps are: a buffer's map reads "no chunk"
        // everywhere once the buffer is handed out, whatever was there before.
        let map: &'static [AtomicU32] = Box::leak(
            (0..4 * 8)
                .map(|_| AtomicU32::new(7))
                .collect::<Box<[AtomicU32]>>(),
        );
        let bytes: &'static mut [u8] = Box::leak(vec![0u8; 4 * 1024].into_boxed_slice());
        let mut p = RingPool::in_shared(1024, 8, bytes, map).unwrap();
        assert_eq!(p.capacity(), 4);
        let a = p.alloc().unwrap();
        assert!((0..8).all(|k| p.map_entry(a, k) == NO_CHUNK));
        // Buffers not handed out yet keep what was there (nobody reads them).
        assert!(map[8..].iter().all(|e| e.load(Ordering::Relaxed) == 7));
        assert!(
            p.take_meta_changed(a),
            "a new buffer's metadata is to be published"
        );
        assert!(!p.take_meta_changed(a), "asked once");
        p.meta_mut(a).push_gap(Gap {
            offset: 0,
            len: 5,
            kind: GapKind::Missed,
        });
        assert!(p.take_meta_changed(a));
        assert_eq!(p.meta(a).gaps().count(), 1);
        // Freed and handed out again: empty metadata, to be published again.
        p.free(a);
        let b = p.alloc().unwrap();
        assert_eq!(b, a, "the buffer freed last is handed out first");
        assert!(p.take_meta_changed(b));
        assert_eq!(p.meta(b).gaps().count(), 0);
        // A buffer never handed out reads as empty.
        assert_eq!(p.meta(RingId(3)).fragments().len(), 0);
    }

    #[test]
    fn rejects_bad_shapes() {
        assert_eq!(
            RingPool::new(shape(1000, 4, 4, 4)).unwrap_err(),
            PoolError::ChunkSizeNotPowerOfTwo { chunk_size: 1000 }
        );
        assert!(matches!(
            RingPool::new(shape(0, 4, 4, 4)),
            Err(PoolError::ChunkSizeNotPowerOfTwo { .. })
        ));
        assert!(matches!(
            RingPool::new(shape(1024, 4, 4, 3)),
            Err(PoolError::MapLenNotPowerOfTwo { .. })
        ));
        assert!(matches!(
            RingPool::new(shape(1 << 20, 1, 1, 1 << 11)),
            Err(PoolError::SpanTooLarge { .. })
        ));
        assert!(matches!(
            RingPool::new(shape(1 << 20, usize::MAX / 2, 1, 1)),
            Err(PoolError::PoolTooLarge { .. })
        ));
    }

    #[test]
    fn a_flows_own_passed_applies_to_its_buffers_only() {
        let mut pool = RingPool::new(shape(16, 4, 4, 4)).unwrap();
        let a = pool.alloc().unwrap();
        let b = pool.alloc().unwrap();
        // Slot 3's server side, slot 5's client side.
        pool.touch(a, 3 * 2 + 1);
        pool.touch(b, 5 * 2);
        pool.passed = 10;
        assert_eq!((pool.passed_for(a), pool.passed_for(b)), (10, 10));
        pool.flow_passed = Some((3, 40));
        assert_eq!((pool.passed_for(a), pool.passed_for(b)), (40, 10));
        // Never below what every analyzer passed.
        pool.flow_passed = Some((5, 2));
        assert_eq!((pool.passed_for(a), pool.passed_for(b)), (10, 10));
    }

    #[test]
    fn buffers_and_chunks_come_and_go() {
        let mut pool = RingPool::new(shape(16, 3, 2, 4)).unwrap();
        assert_eq!(
            (pool.capacity(), pool.in_use(), pool.chunks_free()),
            (2, 0, 3)
        );
        let a = pool.alloc().unwrap();
        let b = pool.alloc().unwrap();
        assert_eq!((a, b), (RingId(0), RingId(1)));
        assert_eq!(pool.alloc(), None);
        // Chunk indices 5 and 9 share map entry 1 of a 4-entry map: a stream never holds both.
        let c0 = pool.chunk_for(a, 4).unwrap();
        assert_eq!(
            pool.chunk_for(a, 4),
            Some(c0),
            "a held index keeps its chunk"
        );
        let c1 = pool.chunk_for(a, 5).unwrap();
        let c2 = pool.chunk_for(b, 5).unwrap();
        assert_eq!(pool.chunk_for(b, 6), None, "the pool is empty");
        assert_eq!((pool.chunks_held(a), pool.chunks_held(b)), (2, 1));
        pool.chunk_mut(c1).fill(0xaa);
        pool.chunk_mut(c2).fill(0xbb);
        assert!(pool.chunk(c1).iter().all(|&x| x == 0xaa));
        assert_eq!(
            pool.map_entry(a, 9),
            c1,
            "entries are taken modulo the map length"
        );
        pool.release_chunk(a, 4);
        assert_eq!(pool.map_entry(a, 4), NO_CHUNK);
        assert_eq!(
            pool.chunk_for(b, 6),
            Some(c0),
            "the chunk freed last is taken first"
        );
        // Freeing a buffer returns its chunks.
        pool.free(a);
        assert_eq!((pool.in_use(), pool.chunks_free()), (1, 1));
        let a = pool.alloc().unwrap();
        assert_eq!(pool.chunks_held(a), 0);
        assert_eq!(pool.map_entry(a, 5), NO_CHUNK);
    }

    #[test]
    fn done_marks_and_tail_pseq() {
        let mut pool = RingPool::new(shape(16, 2, 1, 2)).unwrap();
        let a = pool.alloc().unwrap();
        pool.chunk_for(a, 0).unwrap();
        assert_eq!(pool.done_at(a, 0), None);
        pool.pseq = 7;
        pool.mark_done(a, 0);
        pool.note_tail_move(a);
        pool.pseq = 9;
        pool.mark_done(a, 0);
        assert_eq!(pool.done_at(a, 0), Some(7), "the first mark counts");
        assert_eq!(pool.done_at(a, 1), None, "no chunk there");
        assert_eq!(pool.last_tail_pseq(a), 7);
    }

    #[test]
    fn recency_list_orders_buffers() {
        let mut pool = RingPool::new(shape(16, 1, 4, 1)).unwrap();
        let ids: Vec<_> = (0..4).map(|_| pool.alloc().unwrap()).collect();
        let order = |p: &RingPool| p.by_recency().map(|r| r.0).collect::<Vec<_>>();
        assert_eq!(order(&pool), [0, 1, 2, 3]);
        pool.touch(ids[1], 10);
        pool.touch(ids[0], 11);
        assert_eq!(order(&pool), [2, 3, 1, 0]);
        assert_eq!(pool.owner(ids[0]), 11);
        pool.free(ids[3]);
        pool.free(ids[2]);
        assert_eq!(order(&pool), [1, 0]);
        pool.free(ids[0]);
        assert_eq!(order(&pool), [1]);
        pool.touch(ids[1], 1);
        assert_eq!(order(&pool), [1]);
    }

    #[test]
    #[should_panic(expected = "freed twice")]
    fn double_free_panics() {
        let mut pool = RingPool::new(shape(16, 1, 1, 1)).unwrap();
        let a = pool.alloc().unwrap();
        pool.free(a);
        pool.free(a);
    }

    #[test]
    fn realloc_resets_meta() {
        let mut pool = RingPool::new(shape(16, 1, 1, 1)).unwrap();
        let a = pool.alloc().unwrap();
        let meta = pool.meta_mut(a);
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
