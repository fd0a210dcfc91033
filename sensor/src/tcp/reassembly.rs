//! Reassembly of one endpoint's receive stream into chunks from the [`RingPool`].
//!
//! A [`Stream`] is one side's receive buffer, as in mOS: the client side's stream holds what
//! the server sent. Bytes are addressed by 64-bit stream offsets; offset 0 is the byte at the
//! anchor sequence number (ISN+1, or the first byte seen for a flow picked up midstream), so
//! offsets never wrap even for streams of many GiB.

use super::overlap::OverlapPolicy;
use super::ring_pool::{
    Fragment, Gap, GapKind, RingId, RingMeta, RingPool, MAX_FRAGMENTS, NO_CHUNK,
};
use super::seq::SeqNum;

/// An acknowledgment more than this many bytes ahead of the tail is taken for garbage and
/// ignored, so a corrupt ack cannot make the stream skip gigabytes.
pub const ACK_SKIP_LIMIT: u64 = 1 << 30;

const NO_RING: u32 = u32::MAX;

/// What [`Stream::insert`] did with one segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    /// How far the tail moved over bytes now held in order (this segment's and the fragments
    /// it joined); skipped gaps are not counted.
    pub new_bytes: u64,
    /// Bytes already held differ from this segment's: the span `(offset, len)` from the first
    /// to the last differing byte, whichever copy the overlap policy kept.
    pub conflict: Option<(u64, u32)>,
    /// The stream had to move its head past bytes not yet received (a segment more than a
    /// side's span, [`RingPool::span`], ahead of the head); they, and any fragments among
    /// them, are lost.
    pub overflow: Option<Gap>,
    /// Bytes not stored: the pool had no buffer or chunk for them, or a new out-of-order island
    /// would have exceeded [`MAX_FRAGMENTS`]. The tail did not pass them: a retransmission can still
    /// bring them, or an ack skips them as a gap.
    pub dropped_bytes: u32,
    /// Bytes the snap length cut that were recorded as a gap at the tail right away.
    pub lost_snap: u32,
    /// Acknowledged holes skipped because this segment brought bytes after them.
    pub gap: Option<Gap>,
    /// Some byte of the segment lay before the tail, before offset 0, or in a held fragment.
    pub rexmit: bool,
    /// The bytes in `dropped_bytes` were dropped because the pool was empty.
    pub pool_empty: bool,
}

/// What [`Stream::read`] found at a reader's offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadChunk {
    /// The reader is at (or past) the tail: nothing new.
    NoData,
    /// Bytes from the reader's offset were overwritten (or their gap record evicted) before it
    /// read them: it must move forward by `lost`.
    Overrun {
        /// Bytes the reader missed.
        lost: u64,
    },
    /// The capture never held `[offset, offset + len)`: the reader moves past it.
    Gap {
        /// The reader's offset.
        offset: u64,
        /// Bytes to skip.
        len: u64,
    },
    /// This many bytes were copied into the buffer.
    Data(usize),
}

/// One endpoint's receive stream.
///
/// Invariants (`c` is the pool's chunk size, `limit` is `head` rounded down to a chunk plus
/// the pool's span, [`RingPool::span`]):
/// - `head <= tail`. `[head, tail)` is the in-order part of the stream still held: the byte at
///   offset `o` lives in the chunk the buffer's map gives for index `o / c`, at position
///   `o % c`; recorded gaps within it hold no data (and may have no chunk).
/// - Out-of-order fragments (in the buffer's [`RingMeta`]) lie in `(tail, limit)`; they are
///   sorted, disjoint, and not adjacent to each other or to the tail.
/// - Every chunk the buffer holds has an index in `[head / c, limit / c)`, so map entries
///   never collide. Storing a byte at or beyond `limit` first moves `head` forward (to a chunk
///   boundary), giving back the oldest chunks.
/// - Chunks wholly below `tail - history` go back to the pool once every analyzer has passed
///   the events that announced their bytes ([`RingPool::passed`]); `head` moves past them.
/// - Without a buffer nothing is held and `head == tail`.
/// - A byte before the tail is never rewritten while it is in the window. A held out-of-order
///   byte is rewritten only when the [`OverlapPolicy`] lets a new segment win over its island
///   (never under [`OverlapPolicy::First`]).
/// - `lost` is the total length of every gap the stream skipped.
#[derive(Clone, Debug)]
pub struct Stream {
    head: u64,
    tail: u64,
    lost: u64,
    /// Sequence number of offset 0.
    base: u32,
    /// A [`RingId`] (the stream's buffer), or `NO_RING`; a bare `u32` keeps the stream at 40
    /// bytes.
    ring: u32,
    anchored: bool,
    /// The highest offset the receiver has acknowledged: holes below it were sent and are
    /// skipped as gaps once bytes beyond them are held.
    acked: u64,
}

impl Default for Stream {
    fn default() -> Self {
        Self::new()
    }
}

impl Stream {
    /// An empty, unanchored stream with no ring.
    pub const fn new() -> Self {
        Stream {
            head: 0,
            tail: 0,
            lost: 0,
            base: 0,
            ring: NO_RING,
            anchored: false,
            acked: 0,
        }
    }

    /// Makes `seq0` offset 0: the TCP core calls it with ISN+1 on a SYN, or with the first data
    /// segment's sequence number for a flow picked up midstream. An anchored stream ignores
    /// later calls (a retransmitted SYN must not renumber held bytes).
    pub fn anchor(&mut self, seq0: u32) {
        if !self.anchored {
            self.base = seq0;
            self.anchored = true;
        }
    }

    /// Moves offset 0 to `seq0` if the stream has never held a byte: a SYN or SYN/ACK that
    /// arrives after other segments of its sender (a reset, a FIN, reordering) fixes where
    /// the stream really starts. A stream that holds data keeps its numbering.
    pub fn reanchor(&mut self, seq0: u32) {
        if !self.has_ring() && self.tail == 0 {
            self.base = seq0;
            self.anchored = true;
            self.acked = 0;
        }
    }

    /// Whether offset 0 has been fixed.
    #[inline]
    pub fn is_anchored(&self) -> bool {
        self.anchored
    }

    /// The offset of `seq`, unwrapped to the one nearest the tail (so it works across the
    /// 2^32 wrap); `None` before offset 0 or when unanchored.
    pub fn seq_to_offset(&self, seq: u32) -> Option<u64> {
        if !self.anchored {
            return None;
        }
        u64::try_from(self.signed_offset(seq)).ok()
    }

    /// The sequence number of the byte at `offset`.
    #[inline]
    pub fn offset_to_seq(&self, offset: u64) -> u32 {
        // Truncation is the modulo-2^32 reduction sequence numbers use.
        self.base.wrapping_add(offset as u32)
    }

    fn signed_offset(&self, seq: u32) -> i64 {
        let rel = SeqNum(seq) - SeqNum(self.offset_to_seq(self.tail));
        self.tail as i64 + i64::from(rel)
    }

    /// Oldest offset still in the ring (readers behind it were overrun).
    #[inline]
    pub fn head(&self) -> u64 {
        self.head
    }

    /// One past the last in-order byte: the next byte expected.
    #[inline]
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// Total bytes skipped as gaps.
    #[inline]
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Whether the stream holds a ring.
    #[inline]
    pub fn has_ring(&self) -> bool {
        self.ring != NO_RING
    }

    #[inline]
    /// The index of the ring holding the stream, if it holds one.
    pub fn ring_index(&self) -> Option<u32> {
        (self.ring != NO_RING).then_some(self.ring)
    }

    fn ring_id(&self) -> Option<RingId> {
        (self.ring != NO_RING).then_some(RingId(self.ring))
    }

    /// The out-of-order fragments as `(offset, len)`, sorted.
    pub fn fragments<'p>(&self, pool: &'p RingPool) -> impl Iterator<Item = (u64, u32)> + 'p {
        let frags: &[Fragment] = match self.ring_id() {
            Some(id) => pool.meta(id).fragments(),
            None => &[],
        };
        frags.iter().map(|f| (f.start, f.len))
    }

    /// The recent gaps, oldest first (at most [`MAX_GAPS`](super::ring_pool::MAX_GAPS); none
    /// are remembered for a stream that never got a ring).
    pub fn gaps<'p>(&self, pool: &'p RingPool) -> impl Iterator<Item = Gap> + 'p {
        self.ring_id()
            .into_iter()
            .flat_map(move |id| pool.meta(id).gaps())
    }

    /// One past the highest byte received, in order or not: `tcp_buf_info`'s last byte
    /// received is `offset_to_seq` of this.
    pub fn recv_end(&self, pool: &RingPool) -> u64 {
        self.fragments(pool)
            .last()
            .map_or(self.tail, |(s, l)| s + u64::from(l))
    }

    /// Bytes held in the ring, in order and out of order.
    pub fn bytes_held(&self, pool: &RingPool) -> u64 {
        let gaps: u64 = self
            .gaps(pool)
            .map(|g| {
                g.end()
                    .min(self.tail)
                    .saturating_sub(g.offset.max(self.head))
            })
            .sum();
        let frags: u64 = self.fragments(pool).map(|(_, l)| u64::from(l)).sum();
        self.tail - self.head - gaps + frags
    }

    /// The oldest offset a reader can still get bytes or a gap record from: where a new
    /// reader's pointer starts.
    pub fn oldest_readable(&self, pool: &RingPool) -> u64 {
        match self.ring_id() {
            Some(id) => self.head.max(pool.meta(id).unknown_below().min(self.tail)),
            None => self.head,
        }
    }

    /// Stores one segment's payload: `data` at `seq`, of which the sender sent `wire_len`
    /// bytes (more than `data.len()` when the snap length cut the frame). Where it overlaps
    /// held out-of-order data, `policy` decides which copy stays; bytes before the tail stay
    /// as they are.
    ///
    /// An unanchored stream anchors at `seq`. Snap-cut bytes that start at the tail become a
    /// [`GapKind::Snap`] gap right away; when they lie beyond the tail they are left for
    /// [`Stream::ack`] to skip as a [`GapKind::Missed`] gap.
    pub fn insert(
        &mut self,
        pool: &mut RingPool,
        seq: u32,
        data: &[u8],
        wire_len: u32,
        policy: OverlapPolicy,
    ) -> InsertOutcome {
        let mut out = InsertOutcome::default();
        self.anchor(seq);
        let wire_len = u64::from(wire_len).max(data.len() as u64);
        let start = self.signed_offset(seq);
        let wire_end = start + wire_len as i64;
        if wire_end <= 0 {
            out.rexmit = wire_len > 0;
            return out;
        }
        let (s, data) = if start < 0 {
            // Older than the first byte the stream tracks: ignored.
            let cut = ((-start) as u64).min(data.len() as u64) as usize;
            out.rexmit = cut > 0;
            (0, &data[cut..])
        } else {
            (start as u64, data)
        };
        let e = s + data.len() as u64;
        let wire_end = wire_end as u64;
        let tail0 = self.tail;
        let mut span = None;
        if !data.is_empty() {
            self.place(pool, s, data, policy, &mut out, &mut span);
        }
        if wire_end > e && e <= self.tail && wire_end > self.tail {
            if let Some(g) = self.skip_to(pool, wire_end, GapKind::Snap) {
                out.lost_snap = g.len as u32;
            }
        }
        out.gap = self.skip_acked_holes(pool);
        let skipped = out.overflow.map_or(0, |g| g.len)
            + u64::from(out.lost_snap)
            + out.gap.map_or(0, |g| g.len);
        out.new_bytes = self.tail - tail0 - skipped;
        out.conflict = span.map(|(lo, hi): (u64, u64)| (lo, (hi - lo) as u32));
        self.settle(pool, tail0);
        out
    }

    /// One past the last offset the stream can hold without moving its head.
    #[inline]
    fn limit(&self, pool: &RingPool) -> u64 {
        (self.head & !(pool.chunk_size() as u64 - 1)) + pool.span()
    }

    /// Moves the head forward to `new_head` (never back), giving back the chunks wholly
    /// below it.
    fn advance_head(&mut self, pool: &mut RingPool, new_head: u64) {
        if new_head <= self.head {
            return;
        }
        if let Some(id) = self.ring_id() {
            let from = pool.index_of(self.head);
            let to = pool.index_of(new_head);
            let map_len = pool.shape().map_len as u64;
            // Held chunks lie within `map_len` indices of the old head's.
            for idx in from.max(to.saturating_sub(map_len))..to.min(from + map_len) {
                pool.release_chunk(id, idx);
            }
        }
        self.head = new_head;
    }

    /// After a call that may have moved the tail from `tail0`: marks the chunks it filled as
    /// announced by this call, and gives back the history analyzers are done with.
    fn settle(&mut self, pool: &mut RingPool, tail0: u64) {
        let Some(id) = self.ring_id() else {
            return;
        };
        if self.tail > tail0 {
            pool.note_tail_move(id);
            let map_len = pool.shape().map_len as u64;
            let first = pool.index_of(tail0).max(pool.index_of(self.head));
            let end = pool.index_of(self.tail).min(first + map_len);
            for idx in first..end {
                pool.mark_done(id, idx);
            }
        }
        self.trim(pool);
    }

    /// Gives back the chunks wholly below `tail - history` whose bytes every analyzer has
    /// passed, oldest first, moving the head past them.
    pub fn trim(&mut self, pool: &mut RingPool) {
        let Some(id) = self.ring_id() else {
            return;
        };
        let keep_from = self.tail.saturating_sub(pool.history);
        let stop = pool.index_of(keep_from);
        let mut idx = pool.index_of(self.head);
        if idx >= stop {
            return;
        }
        let last_held = idx + pool.shape().map_len as u64;
        let shift = pool.chunk_size().trailing_zeros();
        while idx < stop {
            if idx >= last_held {
                // Nothing is held this far up: the rest below `stop` was skipped.
                idx = stop;
                break;
            }
            if pool.map_entry(id, idx) != NO_CHUNK {
                match pool.done_at(id, idx) {
                    Some(p) if p <= pool.passed_for(id) => pool.release_chunk(id, idx),
                    _ => break,
                }
            }
            idx += 1;
        }
        self.head = self.head.max(idx << shift);
    }

    /// Whether [`Stream::trim`] would give back a chunk now: the oldest chunk held wholly
    /// below `tail - history` has had its bytes passed by every reader.
    pub fn trimmable(&self, pool: &RingPool) -> bool {
        let Some(id) = self.ring_id() else {
            return false;
        };
        let stop = pool.index_of(self.tail.saturating_sub(pool.history));
        let first = pool.index_of(self.head);
        let end = stop.min(first + pool.shape().map_len as u64);
        (first..end)
            .find(|&idx| pool.map_entry(id, idx) != NO_CHUNK)
            .is_some_and(|idx| {
                pool.done_at(id, idx)
                    .is_some_and(|p| p <= pool.passed_for(id))
            })
    }

    /// Gives back what the pool may take from this stream when it runs empty: its in-order
    /// bytes (all of them with `all`, else those analyzers have passed) in whole chunks,
    /// including the tail's own chunk when no out-of-order byte shares it. Out-of-order bytes
    /// are never taken. Returns the number of chunks given back; with none left and no
    /// fragment, the buffer goes back too.
    pub fn reclaim(&mut self, pool: &mut RingPool, all: bool) -> usize {
        let Some(id) = self.ring_id() else {
            return 0;
        };
        let before = pool.chunks_held(id);
        let shift = pool.chunk_size().trailing_zeros();
        let tail_idx = pool.index_of(self.tail);
        let mut idx = pool.index_of(self.head);
        let last_held = idx + pool.shape().map_len as u64;
        let passed = |pool: &RingPool, idx: u64| {
            all || pool
                .done_at(id, idx)
                .unwrap_or_else(|| pool.last_tail_pseq(id))
                <= pool.passed_for(id)
        };
        while idx < tail_idx && idx < last_held {
            if pool.map_entry(id, idx) != NO_CHUNK {
                if !passed(pool, idx) {
                    break;
                }
                pool.release_chunk(id, idx);
            }
            idx += 1;
        }
        let mut new_head = if idx >= tail_idx || idx >= last_held {
            self.head.max(tail_idx << shift).min(self.tail)
        } else {
            self.head.max(idx << shift)
        };
        // The tail's chunk, when no fragment lies in it.
        let tail_chunk_end = (tail_idx + 1) << shift;
        let frag_in_tail_chunk = pool
            .meta(id)
            .fragments()
            .first()
            .is_some_and(|f| f.start < tail_chunk_end);
        if new_head >= tail_idx << shift
            && !frag_in_tail_chunk
            && pool.map_entry(id, tail_idx) != NO_CHUNK
            && passed(pool, tail_idx)
        {
            pool.release_chunk(id, tail_idx);
            new_head = self.tail;
        }
        self.head = new_head;
        let freed = before - pool.chunks_held(id);
        if pool.chunks_held(id) == 0 && pool.meta(id).fragments().is_empty() {
            self.release(pool);
        }
        freed
    }

    /// Stores `data` (at offset `s`, `s >= 0`, non-empty); see [`Stream::insert`].
    fn place(
        &mut self,
        pool: &mut RingPool,
        s: u64,
        data: &[u8],
        policy: OverlapPolicy,
        out: &mut InsertOutcome,
        span: &mut Option<(u64, u64)>,
    ) {
        let tail0 = self.tail;
        let e = s + data.len() as u64;
        if s < tail0 {
            out.rexmit = true;
            if let Some(id) = self.ring_id() {
                let lo = s.max(self.head).max(pool.meta(id).unknown_below());
                compare_held(pool, id, s, data, lo, e.min(tail0), span);
            }
            if e <= tail0 {
                return;
            }
        }
        let s_new = s.max(tail0);
        let new_len = (e - s_new) as u32;
        let id = match self.ring_id() {
            Some(id) => id,
            None => match pool.alloc() {
                Some(id) => {
                    self.ring = id.0;
                    self.head = self.tail;
                    id
                }
                None => {
                    out.dropped_bytes += new_len;
                    out.pool_empty = true;
                    return;
                }
            },
        };
        let frags = pool.meta(id).fragments();
        if s_new > tail0
            && frags.len() == MAX_FRAGMENTS
            && !frags.iter().any(|f| f.start <= e && f.end() >= s_new)
        {
            out.dropped_bytes += new_len;
            return;
        }
        if e > self.limit(pool) {
            let c = pool.chunk_size() as u64;
            let new_head = (e - pool.span()).div_ceil(c) * c;
            if new_head > self.tail {
                // The segment's own bytes below the new head were received, then given back
                // (it is longer than a side's span): an overrun, not a gap.
                let gap_end = new_head.min(s_new);
                if gap_end > self.tail {
                    let gap = Gap {
                        offset: self.tail,
                        len: gap_end - self.tail,
                        kind: GapKind::Overflow,
                    };
                    pool.meta_mut(id).push_gap(gap);
                    self.lost += gap.len;
                    out.overflow = Some(gap);
                }
                self.tail = new_head;
                let meta = pool.meta_mut(id);
                let mut k = 0;
                while let Some(f) = meta.fragments().get(k).filter(|f| f.start <= self.tail) {
                    self.tail = self.tail.max(f.end());
                    k += 1;
                }
                meta.replace_fragments(0..k, None);
            }
            self.advance_head(pool, new_head);
        }
        // Below `head` now only if the segment is longer than a span: its own later bytes
        // take their place.
        let mut o = s_new.max(self.head);
        if o < self.tail {
            // Bytes of fragments the overflow just joined to the tail.
            let hi = e.min(self.tail);
            out.rexmit = true;
            compare_held(pool, id, s, data, o, hi, span);
            o = hi;
        }
        if o >= e {
            return;
        }
        // Every chunk the new bytes need, or none of them are stored.
        let missing = (pool.index_of(o)..=pool.index_of(e - 1))
            .filter(|&idx| pool.map_entry(id, idx) == NO_CHUNK)
            .count();
        if !pool.can_take(missing) {
            out.dropped_bytes += (e - o) as u32;
            out.pool_empty = true;
            return;
        }
        let frags = pool.meta(id).fragments();
        let first = frags.partition_point(|f| f.end() < o);
        let mut last = first;
        let (mut island_start, mut island_end, mut pos) = (o, e, o);
        while let Some(f) = pool.meta(id).fragments().get(last).copied() {
            if f.start > e {
                break;
            }
            if pos < f.start {
                write_chunks(
                    pool,
                    id,
                    pos,
                    &data[(pos - s) as usize..(f.start - s) as usize],
                );
            }
            let (lo, hi) = (pos.max(f.start), e.min(f.end()));
            if lo < hi {
                out.rexmit = true;
                let new = &data[(lo - s) as usize..(hi - s) as usize];
                compare_bytes(pool, id, lo, new, span);
                if policy.new_wins(s, e, f.start, f.end()) {
                    write_chunks(pool, id, lo, new);
                }
            }
            island_start = island_start.min(f.start);
            island_end = island_end.max(f.end());
            pos = pos.max(f.end());
            last += 1;
        }
        if pos < e {
            write_chunks(pool, id, pos, &data[(pos - s) as usize..]);
        }
        let meta = pool.meta_mut(id);
        if island_start <= self.tail {
            meta.replace_fragments(first..last, None);
            self.tail = island_end;
        } else {
            let island = Fragment {
                start: island_start,
                len: (island_end - island_start) as u32,
            };
            meta.replace_fragments(first..last, Some(island));
        }
    }

    /// The receiver acknowledged everything before `ack_seq`. The highest such offset is
    /// remembered; every hole below it that has held bytes after it is skipped now (and later
    /// ones when [`Stream::insert`] brings bytes past them): each is recorded as a
    /// [`GapKind::Missed`] gap and the fragments after it join the tail. Returns a summary:
    /// the first hole's offset and the total bytes skipped.
    ///
    /// Ignored when the ack is at or behind the tail or more than [`ACK_SKIP_LIMIT`] ahead.
    pub fn ack(&mut self, pool: &mut RingPool, ack_seq: u32) -> Option<Gap> {
        if !self.anchored {
            return None;
        }
        let rel = SeqNum(ack_seq) - SeqNum(self.offset_to_seq(self.tail));
        if rel <= 0 || rel as u64 > ACK_SKIP_LIMIT {
            return None;
        }
        self.acked = self.acked.max(self.tail + rel as u64);
        let tail0 = self.tail;
        let g = self.skip_acked_holes(pool);
        if self.tail > tail0 {
            self.settle(pool, tail0);
        }
        g
    }

    /// Skips the holes the receiver has acknowledged that lie before held bytes: a hole is
    /// declared lost only once it is acknowledged *and* data after it is here. An acknowledged
    /// hole at the end of the stream stays open (the bytes may still arrive: captures taken on
    /// two links often show the ACK first), and a stream never ends in a gap.
    fn skip_acked_holes(&mut self, pool: &mut RingPool) -> Option<Gap> {
        let mut first = None;
        let mut total = 0;
        while let Some(id) = self.ring_id() {
            let Some(f) = pool.meta(id).fragments().first().copied() else {
                break;
            };
            if f.start > self.acked {
                break;
            }
            let tail0 = self.tail;
            if let Some(g) = self.skip_to(pool, f.start, GapKind::Missed) {
                first.get_or_insert(g.offset);
                total += g.len;
            }
            if self.tail == tail0 {
                break;
            }
        }
        first.map(|offset| Gap {
            offset,
            len: total,
            kind: GapKind::Missed,
        })
    }

    /// Moves the tail to at least `target`, recording the holes before it as gaps of `kind`.
    fn skip_to(&mut self, pool: &mut RingPool, target: u64, kind: GapKind) -> Option<Gap> {
        if target <= self.tail {
            return None;
        }
        let first = self.tail;
        let id = match self.ring_id().or_else(|| pool.alloc()) {
            Some(id) => id,
            None => {
                let len = target - self.tail;
                self.lost += len;
                self.tail = target;
                self.head = target;
                return Some(Gap {
                    offset: first,
                    len,
                    kind,
                });
            }
        };
        if !self.has_ring() {
            self.ring = id.0;
            self.head = self.tail;
        }
        let meta = pool.meta_mut(id);
        let mut total = 0;
        let mut k = 0;
        loop {
            let next = meta.fragments().get(k).copied();
            let hole_end = match next {
                Some(f) if f.start <= target => f.start,
                _ => target,
            };
            if hole_end > self.tail {
                let gap = Gap {
                    offset: self.tail,
                    len: hole_end - self.tail,
                    kind,
                };
                meta.push_gap(gap);
                total += gap.len;
                self.tail = hole_end;
            }
            match next {
                Some(f) if f.start <= target => {
                    self.tail = f.end();
                    k += 1;
                }
                _ => break,
            }
        }
        meta.replace_fragments(0..k, None);
        self.lost += total;
        if self.tail > self.limit(pool) {
            let c = pool.chunk_size() as u64;
            let new_head = ((self.tail - pool.span()).div_ceil(c) * c).min(self.tail);
            self.advance_head(pool, new_head);
        }
        (total > 0).then_some(Gap {
            offset: first,
            len: total,
            kind,
        })
    }

    /// The peek primitive: what a reader whose pointer is at `offset` gets next. `Data`
    /// copies bytes from `[offset, min(tail, next gap))`, at most `buf.len()`.
    ///
    /// A gap whose record was evicted from the bounded list is reported as an `Overrun` that
    /// covers it and the bytes before it: the stream can no longer tell them apart.
    pub fn read(&self, pool: &RingPool, offset: u64, buf: &mut [u8]) -> ReadChunk {
        if offset >= self.tail {
            return ReadChunk::NoData;
        }
        let Some(id) = self.ring_id() else {
            return ReadChunk::Overrun {
                lost: self.head - offset,
            };
        };
        let meta = pool.meta(id);
        let mut limit = self.tail;
        for g in meta.gaps() {
            if g.end() <= offset {
                continue;
            }
            if g.offset <= offset {
                return ReadChunk::Gap {
                    offset,
                    len: g.end() - offset,
                };
            }
            limit = g.offset;
            break;
        }
        let known = self.head.max(meta.unknown_below());
        if offset < known {
            return ReadChunk::Overrun {
                lost: known.min(limit) - offset,
            };
        }
        let n = buf.len().min((limit - offset) as usize);
        read_chunks(pool, id, offset, &mut buf[..n]);
        ReadChunk::Data(n)
    }

    /// `ppeek`: copies held bytes at the absolute `offset`, in order or from a fragment, up to
    /// the end of that run of held bytes; returns how many (0 if the byte at `offset` is not
    /// held).
    pub fn read_at(&self, pool: &RingPool, offset: u64, buf: &mut [u8]) -> usize {
        let Some(id) = self.ring_id() else {
            return 0;
        };
        let meta = pool.meta(id);
        let end = if offset < self.tail {
            match in_order_extent(meta, self.head, self.tail, offset) {
                Some(end) => end,
                None => return 0,
            }
        } else {
            match meta
                .fragments()
                .iter()
                .find(|f| f.start <= offset && offset < f.end())
            {
                Some(f) => f.end(),
                None => return 0,
            }
        };
        let n = buf.len().min((end - offset) as usize);
        read_chunks(pool, id, offset, &mut buf[..n]);
        n
    }

    /// Returns the buffer and its chunks to the pool (flow end). Counters and offsets stay;
    /// nothing is held.
    pub fn release(&mut self, pool: &mut RingPool) {
        if let Some(id) = self.ring_id() {
            pool.free_from(id, self.head);
            self.ring = NO_RING;
        }
        self.head = self.tail;
    }
}

/// Where the run of readable in-order bytes containing `offset` ends, if `offset` is one.
fn in_order_extent(meta: &RingMeta, head: u64, tail: u64, offset: u64) -> Option<u64> {
    if offset < head.max(meta.unknown_below()) {
        return None;
    }
    match meta.gaps().find(|g| g.end() > offset) {
        Some(g) if g.offset <= offset => None,
        Some(g) => Some(g.offset.min(tail)),
        None => Some(tail),
    }
}

/// Splits offsets `[off, off + len)` at chunk boundaries: `(chunk index, position in the
/// chunk, bytes, index into the run)` for each piece.
#[inline]
fn pieces(
    chunk_size: usize,
    off: u64,
    len: usize,
) -> impl Iterator<Item = (u64, usize, usize, usize)> {
    let shift = chunk_size.trailing_zeros();
    let mask = chunk_size as u64 - 1;
    let mut done = 0usize;
    core::iter::from_fn(move || {
        (done < len).then(|| {
            let o = off + done as u64;
            let pos = (o & mask) as usize;
            let n = (len - done).min(chunk_size - pos);
            let item = (o >> shift, pos, n, done);
            done += n;
            item
        })
    })
}

/// Writes `data` at stream offsets `[off, ..)` of buffer `id`, taking chunks as needed (the
/// caller checked that the pool has them).
#[inline]
fn write_chunks(pool: &mut RingPool, id: RingId, off: u64, data: &[u8]) {
    for (idx, pos, n, at) in pieces(pool.chunk_size(), off, data.len()) {
        let Some(c) = pool.chunk_for(id, idx) else {
            debug_assert!(false, "the caller checked that the pool has the chunks");
            return;
        };
        pool.chunk_mut(c)[pos..pos + n].copy_from_slice(&data[at..at + n]);
    }
}

/// Copies the held bytes at stream offsets `[off, off + out.len())` of buffer `id`.
#[inline]
fn read_chunks(pool: &RingPool, id: RingId, off: u64, out: &mut [u8]) {
    for (idx, pos, n, at) in pieces(pool.chunk_size(), off, out.len()) {
        let c = pool.map_entry(id, idx);
        if c == NO_CHUNK {
            debug_assert!(false, "held bytes at chunk index {idx} have no chunk");
            out[at..at + n].fill(0);
            continue;
        }
        out[at..at + n].copy_from_slice(&pool.chunk(c)[pos..pos + n]);
    }
}

/// Compares `data` (the bytes at offsets `[off, off + data.len())`) with what buffer `id`
/// holds there, widening `span` to cover every differing byte.
fn compare_bytes(
    pool: &RingPool,
    id: RingId,
    off: u64,
    data: &[u8],
    span: &mut Option<(u64, u64)>,
) {
    for (idx, pos, n, at) in pieces(pool.chunk_size(), off, data.len()) {
        let c = pool.map_entry(id, idx);
        if c == NO_CHUNK {
            continue;
        }
        let held = &pool.chunk(c)[pos..pos + n];
        let new = &data[at..at + n];
        if held == new {
            continue;
        }
        let piece = off + at as u64;
        let diff = |i: usize| held[i] != new[i];
        let lo = (0..n).find(|&i| diff(i)).unwrap_or(0) as u64 + piece;
        let hi = (0..n).rfind(|&i| diff(i)).unwrap_or(0) as u64 + piece + 1;
        *span = Some(match *span {
            Some((a, b)) => (a.min(lo), b.max(hi)),
            None => (lo, hi),
        });
    }
}

/// Compares the segment `data` (at offset `s`) with the in-order bytes over `[lo, hi)`,
/// skipping recorded gaps, whose chunk content is stale.
fn compare_held(
    pool: &RingPool,
    id: RingId,
    s: u64,
    data: &[u8],
    lo: u64,
    hi: u64,
    span: &mut Option<(u64, u64)>,
) {
    let mut o = lo;
    let slice = |a: u64, b: u64| &data[(a - s) as usize..(b - s) as usize];
    for g in pool.meta(id).gaps() {
        if o >= hi || g.offset >= hi {
            break;
        }
        if g.end() <= o {
            continue;
        }
        if g.offset > o {
            compare_bytes(pool, id, o, slice(o, g.offset), span);
        }
        o = o.max(g.end());
    }
    if o < hi {
        compare_bytes(pool, id, o, slice(o, hi), span);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::ring_pool::MAX_GAPS;

    const ISN1: u32 = u32::MAX - 9; // offset 10 is sequence number 0: tests cross the wrap

    fn setup(ring_size: usize, rings: usize) -> (RingPool, Stream) {
        let pool = RingPool::for_tests(ring_size, rings);
        let mut s = Stream::new();
        s.anchor(ISN1);
        (pool, s)
    }

    fn seq(off: u64) -> u32 {
        ISN1.wrapping_add(off as u32)
    }

    fn ins(p: &mut RingPool, s: &mut Stream, off: u64, data: &[u8]) -> InsertOutcome {
        s.insert(p, seq(off), data, data.len() as u32, OverlapPolicy::First)
    }

    fn read_all(p: &RingPool, s: &Stream, from: u64) -> Vec<u8> {
        let mut out = vec![0; (s.tail() - from) as usize];
        let mut at = from;
        while at < s.tail() {
            match s.read(p, at, &mut out[(at - from) as usize..]) {
                ReadChunk::Data(n) => at += n as u64,
                other => panic!("unexpected {other:?} at {at}"),
            }
        }
        out
    }

    fn frags(p: &RingPool, s: &Stream) -> Vec<(u64, u32)> {
        s.fragments(p).collect()
    }

    #[test]
    fn stream_is_small() {
        // The per-side cost of an idle flow.
        assert!(core::mem::size_of::<Stream>() <= 48);
    }

    #[test]
    fn offsets_unwrap_across_the_sequence_wrap() {
        let (mut p, mut s) = setup(1024, 1);
        assert_eq!(s.seq_to_offset(ISN1), Some(0));
        assert_eq!(s.seq_to_offset(0), Some(10));
        assert_eq!(s.seq_to_offset(ISN1 - 1), None);
        assert_eq!(s.offset_to_seq(10), 0);
        // Past 2^32 bytes, offsets keep counting. Each step a byte far ahead moves the ring
        // past the bytes never seen (an overflow gap); the ack then skips the hole left below
        // the byte, computing its offset from a sequence number that has wrapped.
        for _ in 0..9 {
            let t = s.tail();
            let end = t + (1 << 29);
            let o = ins(&mut p, &mut s, end - 1, b"x");
            assert_eq!(
                o.overflow.map(|g| (g.offset, g.len)),
                Some((t, (1 << 29) - 1024))
            );
            assert_eq!(s.tail(), end - 1024);
            assert_eq!(
                s.ack(&mut p, seq(end)),
                Some(Gap {
                    offset: end - 1024,
                    len: 1023,
                    kind: GapKind::Missed
                })
            );
            assert_eq!(s.tail(), end);
        }
        assert_eq!(s.tail(), 9 << 29);
        assert_eq!(s.lost(), (9 << 29) - 9);
        assert_eq!(s.seq_to_offset(seq(9 << 29)), Some(9 << 29));
        assert_eq!(s.seq_to_offset(seq((9 << 29) - 100)), Some((9 << 29) - 100));
        // An ack alone, with nothing held past the tail, skips nothing even up there.
        assert_eq!(s.ack(&mut p, seq((9 << 29) + 5)), None);
        assert_eq!(s.tail(), 9 << 29);
        assert_eq!(Stream::new().seq_to_offset(5), None);
    }

    #[test]
    fn in_order_appends() {
        let (mut p, mut s) = setup(1024, 1);
        assert!(!s.has_ring());
        let o = ins(&mut p, &mut s, 0, b"hello ");
        assert_eq!(o.new_bytes, 6);
        assert!(!o.rexmit && o.conflict.is_none());
        assert!(s.has_ring());
        let o = ins(&mut p, &mut s, 6, b"world");
        assert_eq!(o.new_bytes, 5);
        assert_eq!((s.head(), s.tail(), s.lost()), (0, 11, 0));
        assert_eq!(read_all(&p, &s, 0), b"hello world");
        assert_eq!(s.read(&p, 11, &mut [0; 4]), ReadChunk::NoData);
        assert_eq!(s.bytes_held(&p), 11);
    }

    #[test]
    fn unanchored_stream_anchors_at_first_segment() {
        let mut p = RingPool::for_tests(64, 1);
        let mut s = Stream::new();
        assert_eq!(s.ack(&mut p, 1000), None);
        let o = s.insert(&mut p, 5000, b"mid", 3, OverlapPolicy::First);
        assert!(s.is_anchored());
        assert_eq!((o.new_bytes, s.tail()), (3, 3));
        // Older data than the first seen is ignored.
        let o = s.insert(&mut p, 4990, b"0123456789ab", 12, OverlapPolicy::First);
        assert!(o.rexmit);
        assert_eq!(o.new_bytes, 0);
        assert_eq!(o.conflict, Some((0, 2)));
        assert_eq!(read_all(&p, &s, 0), b"mid");
        let o = s.insert(&mut p, 4000, b"old", 3, OverlapPolicy::First);
        assert!(o.rexmit && o.new_bytes == 0);
        s.anchor(1);
        assert_eq!(s.seq_to_offset(5000), Some(0));
    }

    #[test]
    fn out_of_order_fragments_merge() {
        let (mut p, mut s) = setup(1024, 1);
        assert_eq!(ins(&mut p, &mut s, 10, b"klm").new_bytes, 0);
        assert_eq!(ins(&mut p, &mut s, 20, b"uv").new_bytes, 0);
        assert_eq!(frags(&p, &s), [(10, 3), (20, 2)]);
        assert_eq!(s.recv_end(&p), 22);
        // Adjacent to the first fragment, on both sides.
        ins(&mut p, &mut s, 13, b"nop");
        ins(&mut p, &mut s, 8, b"ij");
        assert_eq!(frags(&p, &s), [(8, 8), (20, 2)]);
        // Bridging both.
        ins(&mut p, &mut s, 15, b"pqrst");
        assert_eq!(frags(&p, &s), [(8, 14)]);
        let mut b = [0; 14];
        assert_eq!(s.read_at(&p, 8, &mut b), 14);
        assert_eq!(&b, b"ijklmnopqrstuv");
        assert_eq!(s.read_at(&p, 7, &mut b), 0);
        assert_eq!(s.bytes_held(&p), 14);
        // The tail reaches the island and absorbs it.
        let o = ins(&mut p, &mut s, 0, b"abcdefgh");
        assert_eq!(o.new_bytes, 22);
        assert!(frags(&p, &s).is_empty());
        assert_eq!(read_all(&p, &s, 0), b"abcdefghijklmnopqrstuv");
    }

    #[test]
    fn first_copy_wins_and_conflicts_are_reported() {
        let (mut p, mut s) = setup(1024, 1);
        ins(&mut p, &mut s, 0, b"abcdef");
        ins(&mut p, &mut s, 10, b"klmn");
        // Same bytes again: a retransmission, no conflict.
        let o = ins(&mut p, &mut s, 2, b"cde");
        assert!(o.rexmit && o.conflict.is_none() && o.new_bytes == 0);
        // Different bytes over the in-order part, the hole and the fragment.
        let o = ins(&mut p, &mut s, 4, b"EFghijkLm");
        assert!(o.rexmit);
        assert_eq!(o.conflict, Some((4, 8)));
        assert_eq!(o.new_bytes, 8);
        assert_eq!(read_all(&p, &s, 0), b"abcdefghijklmn");
        // A segment wholly inside a fragment is a retransmission too.
        ins(&mut p, &mut s, 20, b"uvwx");
        let o = ins(&mut p, &mut s, 21, b"vw");
        assert!(o.rexmit && o.conflict.is_none());
    }

    #[test]
    fn reanchor_moves_offset_zero_only_before_any_byte() {
        let mut p = RingPool::for_tests(1024, 1);
        let mut s = Stream::new();
        s.anchor(5000);
        s.reanchor(ISN1);
        ins(&mut p, &mut s, 0, b"abc");
        assert_eq!(s.tail(), 3);
        s.reanchor(7);
        assert_eq!(s.seq_to_offset(seq(3)), Some(3));
    }

    #[test]
    fn ack_skips_holes_and_merges_fragments() {
        let (mut p, mut s) = setup(1024, 1);
        ins(&mut p, &mut s, 0, b"ab");
        ins(&mut p, &mut s, 5, b"fg");
        ins(&mut p, &mut s, 10, b"kl");
        ins(&mut p, &mut s, 30, b"z");
        assert_eq!(s.ack(&mut p, seq(1)), None);
        assert_eq!(s.ack(&mut p, seq(2)), None);
        // The ack covers the holes before 5 and 10 (skipped, the fragments join the tail) and
        // the hole 12..14, which stays open: nothing is held until 30, beyond the ack.
        let g = s.ack(&mut p, seq(14)).unwrap();
        assert_eq!(
            g,
            Gap {
                offset: 2,
                len: 6,
                kind: GapKind::Missed
            }
        );
        assert_eq!((s.tail(), s.lost()), (12, 6));
        assert_eq!(frags(&p, &s), [(30, 1)]);
        let holes: Vec<_> = s.gaps(&p).map(|g| (g.offset, g.len)).collect();
        assert_eq!(holes, [(2, 3), (7, 3)]);
        // A reader walks data and gaps in turn.
        let mut b = [0; 16];
        assert_eq!(s.read(&p, 0, &mut b), ReadChunk::Data(2));
        assert_eq!(s.read(&p, 2, &mut b), ReadChunk::Gap { offset: 2, len: 3 });
        assert_eq!(s.read(&p, 5, &mut b), ReadChunk::Data(2));
        assert_eq!(&b[..2], b"fg");
        assert_eq!(s.read(&p, 3, &mut b), ReadChunk::Gap { offset: 3, len: 2 });
        assert_eq!(s.read(&p, 7, &mut b), ReadChunk::Gap { offset: 7, len: 3 });
        assert_eq!(s.read(&p, 10, &mut b), ReadChunk::Data(2));
        assert_eq!(&b[..2], b"kl");
        assert_eq!(s.read(&p, 12, &mut b), ReadChunk::NoData);
        assert_eq!(s.read_at(&p, 3, &mut b), 0);
        assert_eq!(s.read_at(&p, 10, &mut b), 2);
        // An ack ending exactly where a fragment starts joins it.
        assert_eq!(
            s.ack(&mut p, seq(30)).map(|g| (g.offset, g.len)),
            Some((12, 18))
        );
        assert_eq!((s.tail(), s.lost()), (31, 24));
        // An ack with nothing held beyond the tail skips nothing: the hole stays open and
        // in-order bytes can still fill it.
        assert_eq!(s.ack(&mut p, seq(40)), None);
        assert_eq!((s.tail(), s.lost()), (31, 24));
        let o = ins(&mut p, &mut s, 31, b"ab");
        assert_eq!((o.new_bytes, o.gap), (2, None));
        assert_eq!((s.tail(), s.lost()), (33, 24));
        // A later segment that starts within the acknowledged range skips the hole before it.
        let o = ins(&mut p, &mut s, 36, b"q");
        assert_eq!(
            o.gap,
            Some(Gap {
                offset: 33,
                len: 3,
                kind: GapKind::Missed
            })
        );
        assert_eq!(o.new_bytes, 1);
        assert_eq!((s.tail(), s.lost()), (37, 27));
        assert_eq!(
            s.read(&p, 33, &mut b),
            ReadChunk::Gap { offset: 33, len: 3 }
        );
        // One that starts beyond the ack stays a fragment.
        let o = ins(&mut p, &mut s, 41, b"v");
        assert_eq!((o.new_bytes, o.gap), (0, None));
        assert_eq!(frags(&p, &s), [(41, 1)]);
        assert_eq!((s.tail(), s.lost()), (37, 27));
        // A retransmission over a gap is not compared with the stale ring.
        let o = ins(&mut p, &mut s, 2, b"XXX");
        assert!(o.rexmit && o.conflict.is_none());
    }

    #[test]
    fn implausible_acks_are_ignored() {
        let (mut p, mut s) = setup(1024, 1);
        ins(&mut p, &mut s, 0, b"abc");
        assert_eq!(s.ack(&mut p, seq(3 + ACK_SKIP_LIMIT + 1)), None);
        assert_eq!(s.ack(&mut p, ISN1.wrapping_sub(100)), None);
        assert_eq!(s.tail(), 3);
        // Neither ack was recorded: a fragment after the hole does not skip it.
        let o = ins(&mut p, &mut s, 10, b"k");
        assert_eq!((o.new_bytes, o.gap), (0, None));
        assert_eq!((s.tail(), s.lost()), (3, 0));
        assert_eq!(frags(&p, &s), [(10, 1)]);
        // An ack exactly at the limit counts.
        assert_eq!(
            s.ack(&mut p, seq(3 + ACK_SKIP_LIMIT)),
            Some(Gap {
                offset: 3,
                len: 7,
                kind: GapKind::Missed
            })
        );
        assert_eq!((s.tail(), s.lost()), (11, 7));
        // It is remembered: a segment at the acknowledged offset, a ring and more ahead, moves
        // the ring past the bytes never seen, and the rest of the hole before it is skipped.
        let far = 3 + ACK_SKIP_LIMIT;
        let o = ins(&mut p, &mut s, far, b"z");
        // The head moves to the chunk boundary that keeps the new byte within a span of it.
        let new_head = (far + 1 - 1024).div_ceil(256) * 256;
        assert_eq!(
            o.overflow.map(|g| (g.offset, g.len)),
            Some((11, new_head - 11))
        );
        assert_eq!(
            o.gap.map(|g| (g.offset, g.len)),
            Some((new_head, far - new_head))
        );
        assert_eq!(o.new_bytes, 1);
        assert_eq!(s.tail(), far + 1);
        // Everything but the five bytes received.
        assert_eq!(s.lost(), s.tail() - 5);
        assert_eq!(s.head(), new_head);
    }

    #[test]
    fn ack_alone_takes_no_ring_and_a_later_segment_skips() {
        let (mut p, mut s) = setup(64, 1);
        // An ack with nothing held takes no ring and loses nothing.
        assert_eq!(s.ack(&mut p, seq(10)), None);
        assert!(!s.has_ring());
        assert_eq!(p.in_use(), 0);
        assert_eq!((s.head(), s.tail(), s.lost()), (0, 0, 0));
        assert_eq!(s.read(&p, 0, &mut [0; 4]), ReadChunk::NoData);
        // A later segment past the hole takes a ring and skips the acknowledged hole.
        let o = ins(&mut p, &mut s, 10, b"kl");
        assert_eq!(
            o.gap,
            Some(Gap {
                offset: 0,
                len: 10,
                kind: GapKind::Missed
            })
        );
        assert_eq!((o.new_bytes, o.dropped_bytes), (2, 0));
        assert!(s.has_ring());
        assert_eq!((s.head(), s.tail(), s.lost()), (0, 12, 10));
        let mut b = [0; 4];
        assert_eq!(s.read(&p, 0, &mut b), ReadChunk::Gap { offset: 0, len: 10 });
        assert_eq!(s.read(&p, 10, &mut b), ReadChunk::Data(2));
        assert_eq!(&b[..2], b"kl");
        // With the pool empty, the segment is dropped and nothing is skipped.
        let mut other = Stream::new();
        other.anchor(0);
        assert_eq!(other.ack(&mut p, 7), None);
        let o = other.insert(&mut p, 5, b"fg", 2, OverlapPolicy::First);
        assert_eq!((o.dropped_bytes, o.pool_empty), (2, true));
        assert_eq!((o.new_bytes, o.gap), (0, None));
        assert!(!other.has_ring());
        assert_eq!((other.head(), other.tail(), other.lost()), (0, 0, 0));
        assert_eq!(other.read(&p, 0, &mut b), ReadChunk::NoData);
        // The ack is still remembered once a ring is free.
        s.release(&mut p);
        let o = other.insert(&mut p, 5, b"fg", 2, OverlapPolicy::First);
        assert_eq!(o.gap.map(|g| (g.offset, g.len)), Some((0, 5)));
        assert_eq!((other.tail(), other.lost()), (7, 5));
    }

    #[test]
    fn snap_length_loss() {
        let (mut p, mut s) = setup(1024, 1);
        // Cut at the tail: a gap right away.
        let o = s.insert(&mut p, seq(0), b"abcd", 10, OverlapPolicy::First);
        assert_eq!((o.new_bytes, o.lost_snap), (4, 6));
        assert_eq!((s.tail(), s.lost()), (10, 6));
        let gaps: Vec<_> = s.gaps(&p).collect();
        assert_eq!(
            gaps,
            [Gap {
                offset: 4,
                len: 6,
                kind: GapKind::Snap
            }]
        );
        // Cut beyond the tail: left for the ack.
        let o = s.insert(&mut p, seq(20), b"uv", 8, OverlapPolicy::First);
        assert_eq!(o.lost_snap, 0);
        assert_eq!(frags(&p, &s), [(20, 2)]);
        // The cut part of a segment reaching the tail is a gap, around held fragments.
        ins(&mut p, &mut s, 24, b"yz");
        let o = s.insert(&mut p, seq(10), b"kl", 20, OverlapPolicy::First);
        assert_eq!((o.new_bytes, o.lost_snap), (6, 14));
        assert_eq!((s.tail(), s.lost()), (30, 20));
        assert!(frags(&p, &s).is_empty());
        let mut b = [0; 8];
        assert_eq!(s.read(&p, 20, &mut b), ReadChunk::Data(2));
        assert_eq!(
            s.read(&p, 22, &mut b),
            ReadChunk::Gap { offset: 22, len: 2 }
        );
        // A frame cut to no payload at all.
        let o = s.insert(&mut p, seq(30), &[], 5, OverlapPolicy::First);
        assert_eq!((o.lost_snap, s.tail()), (5, 35));
    }

    #[test]
    fn overflow_overwrites_oldest() {
        let (mut p, mut s) = setup(16, 1);
        ins(&mut p, &mut s, 0, b"0123456789");
        let o = ins(&mut p, &mut s, 10, b"abcdefghij");
        assert_eq!(o.new_bytes, 10);
        assert!(o.overflow.is_none());
        assert_eq!((s.head(), s.tail()), (4, 20));
        assert_eq!(s.read(&p, 0, &mut [0; 4]), ReadChunk::Overrun { lost: 4 });
        assert_eq!(read_all(&p, &s, 4), b"456789abcdefghij");
    }

    #[test]
    fn overflow_gap_when_head_passes_tail() {
        let (mut p, mut s) = setup(16, 1);
        ins(&mut p, &mut s, 0, b"abcd");
        ins(&mut p, &mut s, 6, b"gh");
        ins(&mut p, &mut s, 12, b"mnop");
        // 22..26 needs the head at 12 (chunks of 4, a span of 16): the hole 4..12 (with the
        // fragment 6..8) is lost, and the fragment 12..16 joins the tail.
        let o = ins(&mut p, &mut s, 22, b"wxyz");
        assert_eq!(
            o.overflow,
            Some(Gap {
                offset: 4,
                len: 8,
                kind: GapKind::Overflow
            })
        );
        assert_eq!(o.new_bytes, 4);
        assert_eq!((s.head(), s.tail(), s.lost()), (12, 16, 8));
        assert_eq!(frags(&p, &s), [(22, 4)]);
        let mut b = [0; 8];
        assert_eq!(s.read(&p, 4, &mut b), ReadChunk::Gap { offset: 4, len: 8 });
        assert_eq!(s.read(&p, 2, &mut b), ReadChunk::Overrun { lost: 2 });
        let o = ins(&mut p, &mut s, 16, b"qrstuv");
        assert_eq!(o.new_bytes, 10);
        assert_eq!(read_all(&p, &s, 12), b"mnopqrstuvwxyz");
        // A segment longer than the ring keeps only its last ring-full of bytes.
        let (mut p, mut s) = setup(16, 1);
        let o = ins(&mut p, &mut s, 0, b"0123456789abcdefghij");
        assert_eq!((s.head(), s.tail(), o.new_bytes), (4, 20, 20));
        assert_eq!(read_all(&p, &s, 4), b"456789abcdefghij");
    }

    #[test]
    fn pool_exhaustion_drops_bytes() {
        let (mut p, mut a) = setup(64, 1);
        let mut b = Stream::new();
        b.anchor(0);
        ins(&mut p, &mut a, 0, b"x");
        let o = b.insert(&mut p, 0, b"hello", 5, OverlapPolicy::First);
        assert_eq!((o.dropped_bytes, o.pool_empty, o.new_bytes), (5, true, 0));
        assert_eq!((b.tail(), b.lost()), (0, 0));
        assert_eq!(b.read(&p, 0, &mut [0; 4]), ReadChunk::NoData);
        // Freed at flow end, the ring goes to the other stream.
        a.release(&mut p);
        assert_eq!((a.tail(), a.head(), p.in_use()), (1, 1, 0));
        a.release(&mut p);
        let o = b.insert(&mut p, 0, b"hello", 5, OverlapPolicy::First);
        assert_eq!((o.dropped_bytes, o.new_bytes), (0, 5));
    }

    #[test]
    fn fragment_cap_drops_new_islands() {
        let (mut p, mut s) = setup(1024, 1);
        for i in 0..MAX_FRAGMENTS as u64 {
            assert_eq!(ins(&mut p, &mut s, 10 + 3 * i, b"x").dropped_bytes, 0);
        }
        let far = 10 + 3 * MAX_FRAGMENTS as u64;
        let o = ins(&mut p, &mut s, far, b"yy");
        assert_eq!(o.dropped_bytes, 2);
        assert_eq!(frags(&p, &s).len(), MAX_FRAGMENTS);
        // Growing an existing island is fine, and so is filling the tail.
        assert_eq!(ins(&mut p, &mut s, 11, b"x").dropped_bytes, 0);
        assert_eq!(ins(&mut p, &mut s, 0, b"0123456789").new_bytes, 12);
        assert_eq!(frags(&p, &s).len(), MAX_FRAGMENTS - 1);
        assert_eq!(ins(&mut p, &mut s, far, b"yy").dropped_bytes, 0);
    }

    #[test]
    fn read_across_the_ring_wrap() {
        let (mut p, mut s) = setup(16, 1);
        ins(&mut p, &mut s, 0, b"0123456789abc");
        ins(&mut p, &mut s, 13, b"defghijk");
        assert_eq!(s.head(), 8);
        let mut b = [0; 16];
        assert_eq!(s.read(&p, 10, &mut b), ReadChunk::Data(11));
        assert_eq!(&b[..11], b"abcdefghijk");
        assert_eq!(s.read(&p, 10, &mut b[..4]), ReadChunk::Data(4));
        assert_eq!(&b[..4], b"abcd");
        // A fragment that wraps, read by ppeek.
        ins(&mut p, &mut s, 23, b"nop");
        assert_eq!(s.read_at(&p, 23, &mut b), 3);
        assert_eq!(&b[..3], b"nop");
        assert_eq!(s.head(), 12);
        assert_eq!(s.read_at(&p, 11, &mut b), 0);
        assert_eq!(s.read_at(&p, 12, &mut b), 9);
        assert_eq!(&b[..9], b"cdefghijk");
        assert_eq!(s.read_at(&p, 6, &mut b), 0);
    }

    #[test]
    fn evicted_gap_records_read_as_overrun() {
        let (mut p, mut s) = setup(1024, 1);
        ins(&mut p, &mut s, 0, b"d");
        // Each ack leaves its one-byte hole open; the next segment, past it, skips it.
        for i in 0..=MAX_GAPS as u64 {
            assert_eq!(s.ack(&mut p, seq(2 * i + 2)), None);
            let o = ins(&mut p, &mut s, 2 * i + 2, b"d");
            assert_eq!(
                o.gap,
                Some(Gap {
                    offset: 2 * i + 1,
                    len: 1,
                    kind: GapKind::Missed
                })
            );
        }
        assert_eq!(s.lost(), MAX_GAPS as u64 + 1);
        assert_eq!(s.gaps(&p).count(), MAX_GAPS);
        assert_eq!(s.oldest_readable(&p), 2);
        let mut b = [0; 4];
        assert_eq!(s.read(&p, 0, &mut b), ReadChunk::Overrun { lost: 2 });
        assert_eq!(s.read(&p, 2, &mut b), ReadChunk::Data(1));
        assert_eq!(s.read(&p, 3, &mut b), ReadChunk::Gap { offset: 3, len: 1 });
        assert_eq!(s.read_at(&p, 0, &mut b), 0);
    }
}

/// The stream against an obviously-correct model: a byte map of what each offset holds and a
/// flag for skipped offsets, with the tail, head and lost count recomputed byte by byte. Where
/// a segment overlaps held out-of-order bytes, the overlap policy's rule decides byte by byte,
/// against the island (maximal run of held bytes past the tail) holding that byte.
#[cfg(test)]
mod model_tests {
    use super::*;
    use proptest::prelude::*;

    struct Model {
        ring: u64,
        policy: OverlapPolicy,
        data: Vec<Option<u8>>,
        gap: Vec<bool>,
        head: u64,
        tail: u64,
        lost: u64,
        acked: u64,
    }

    impl Model {
        fn new(ring: u64, policy: OverlapPolicy) -> Self {
            Model {
                ring,
                policy,
                data: Vec::new(),
                gap: Vec::new(),
                head: 0,
                tail: 0,
                lost: 0,
                acked: 0,
            }
        }

        fn grow(&mut self, end: u64) {
            let end = end as usize + 1;
            if self.data.len() < end {
                self.data.resize(end, None);
                self.gap.resize(end, false);
            }
        }

        fn held(&self, o: u64) -> bool {
            self.data.get(o as usize).is_some_and(|b| b.is_some())
        }

        fn advance_tail(&mut self) {
            while self.held(self.tail) {
                self.tail += 1;
            }
        }

        fn islands(&self) -> Vec<(u64, u32)> {
            let mut out: Vec<(u64, u32)> = Vec::new();
            for o in self.tail..self.data.len() as u64 {
                if !self.held(o) {
                    continue;
                }
                match out.last_mut() {
                    Some((s, l)) if *s + u64::from(*l) == o => *l += 1,
                    _ => out.push((o, 1)),
                }
            }
            out
        }

        /// Skips acknowledged holes that have held bytes after them, first island first.
        fn skip_acked(&mut self) {
            while let Some(&(start, _)) = self.islands().first() {
                if start > self.acked {
                    break;
                }
                self.skip_to(start);
            }
        }

        fn skip_to(&mut self, target: u64) -> u64 {
            self.grow(target);
            let mut holes = 0;
            for o in self.tail..target.max(self.tail) {
                if !self.held(o) {
                    self.gap[o as usize] = true;
                    holes += 1;
                }
            }
            self.lost += holes;
            self.tail = self.tail.max(target);
            self.advance_tail();
            // A tail past a span of the head's chunk moves the head to the chunk boundary
            // that keeps the tail's chunk in the map.
            let c = self.chunk();
            if self.tail > self.head / c * c + self.ring {
                let nh = ((self.tail - self.ring).div_ceil(c) * c).min(self.tail);
                self.head = self.head.max(nh);
            }
            self.trim();
            holes
        }

        /// The pool's chunk size (`RingPool::for_tests`: four chunks per span).
        fn chunk(&self) -> u64 {
            self.ring / 4
        }

        /// History of one span is kept; whole chunks below it go (every analyzer has passed
        /// everything here).
        fn trim(&mut self) {
            let c = self.chunk();
            self.head = self.head.max(self.tail.saturating_sub(self.ring) / c * c);
        }

        /// Returns the conflict span and the bytes dropped by the fragment cap;
        /// `comparable_from` is where the stream can still compare in-order bytes (its head,
        /// or past evicted gap records).
        fn insert(
            &mut self,
            start: i64,
            bytes: &[u8],
            wire: u64,
            comparable_from: u64,
        ) -> (Option<(u64, u32)>, u32) {
            let wire_end = start + wire as i64;
            if wire_end <= 0 {
                return (None, 0);
            }
            let cut = (-start).clamp(0, bytes.len() as i64) as usize;
            let mut dropped = 0;
            let (s, bytes) = (start.max(0) as u64, &bytes[cut..]);
            let e = s + bytes.len() as u64;
            self.grow(wire_end as u64);
            let mut diffs = Vec::new();
            let tail0 = self.tail;
            for o in s.max(comparable_from)..e.min(tail0) {
                let b = bytes[(o - s) as usize];
                if !self.gap[o as usize] && self.data[o as usize] != Some(b) {
                    diffs.push(o);
                }
            }
            let s_new = s.max(tail0);
            let touches = (s_new.saturating_sub(1)..=e).any(|o| o > tail0 && self.held(o));
            let capped = s_new > tail0 && !touches && self.islands().len() == MAX_FRAGMENTS;
            if capped {
                dropped = e - s_new;
            }
            if e > tail0 && !capped && !bytes.is_empty() {
                let c = self.chunk();
                if e > self.head / c * c + self.ring {
                    let nh = (e - self.ring).div_ceil(c) * c;
                    if nh > self.tail {
                        for o in self.tail..nh.min(s_new) {
                            self.data[o as usize] = None;
                            self.gap[o as usize] = true;
                            self.lost += 1;
                        }
                        self.tail = nh;
                        self.advance_tail();
                    }
                    self.head = self.head.max(nh);
                }
                // The held islands before this segment's bytes go in.
                let islands = self.islands();
                for o in s_new.max(self.head)..e {
                    let b = bytes[(o - s) as usize];
                    let i = o as usize;
                    if o < self.tail && self.gap[i] {
                        continue;
                    }
                    match self.data[i] {
                        Some(held) => {
                            if held != b {
                                diffs.push(o);
                            }
                            // Past the tail, the byte belongs to an island.
                            let island = islands
                                .iter()
                                .find(|&&(is, l)| is <= o && o < is + u64::from(l));
                            if let Some(&(is, l)) = island {
                                if self.policy.new_wins(s, e, is, is + u64::from(l)) {
                                    self.data[i] = Some(b);
                                }
                            }
                        }
                        None => self.data[i] = Some(b),
                    }
                }
                self.advance_tail();
            }
            let we = wire_end as u64;
            if we > e && e <= self.tail && we > self.tail {
                self.skip_to(we);
            }
            self.trim();
            let conflict = diffs.iter().min().map(|&lo| {
                let hi = diffs.iter().max().unwrap() + 1;
                (lo, (hi - lo) as u32)
            });
            (conflict, dropped as u32)
        }
    }

    /// xorshift64*: the scenario comes from one seed so that proptest can shrink the sizes.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    #[derive(Clone, Debug)]
    enum Event {
        Segment { off: i64, bytes: Vec<u8>, wire: u32 },
        Ack { seq_off: i64 },
        GarbageAck { seq_off: i64 },
    }

    /// A stream of `len` random bytes cut into segments of at most `max_seg` bytes, 8 % of
    /// them never sent; after `dup_pct` % of them comes an overlapping copy (half the time
    /// with some bytes changed); then reordered, with acks in between.
    fn scenario(seed: u64, len: usize, max_seg: usize, dup_pct: u64) -> Vec<Event> {
        let mut rng = Rng(seed | 1);
        let truth: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let byte_at = |rng: &mut Rng, o: i64, mutate: bool| -> u8 {
            if o < 0 || o as usize >= len || mutate && rng.below(3) == 0 {
                rng.next() as u8
            } else {
                truth[o as usize]
            }
        };
        let mut events = Vec::new();
        let mut o = 0usize;
        while o < len {
            let n = (1 + rng.below(max_seg as u64) as usize).min(len - o);
            let p = rng.below(100);
            if p >= 8 {
                let bytes = truth[o..o + n].to_vec();
                let captured = if rng.below(20) == 0 {
                    rng.below(n as u64) as usize
                } else {
                    n
                };
                events.push(Event::Segment {
                    off: o as i64,
                    bytes: bytes[..captured].to_vec(),
                    wire: n as u32,
                });
            }
            if p >= 100 - dup_pct {
                // An overlapping duplicate, sometimes with different bytes or before offset 0.
                let off = o as i64 + rng.below(2 * max_seg as u64) as i64 - max_seg as i64;
                let n2 = 1 + rng.below(max_seg as u64) as i64;
                let mutate = rng.below(2) == 0;
                let bytes = (off..off + n2)
                    .map(|x| byte_at(&mut rng, x, mutate))
                    .collect();
                events.push(Event::Segment {
                    off,
                    bytes,
                    wire: n2 as u32,
                });
            }
            o += n;
        }
        if rng.below(4) == 0 {
            // Every other segment of a block first: many islands at once, past the cap.
            let block = 2 + rng.below(96) as usize;
            events = events
                .chunks(block)
                .flat_map(|c| {
                    let (even, odd): (Vec<_>, Vec<_>) = (0..c.len()).partition(|i| i % 2 == 0);
                    even.into_iter()
                        .chain(odd)
                        .map(|i| &c[i])
                        .collect::<Vec<_>>()
                })
                .map(Event::clone)
                .collect();
        } else {
            let window = 1 + rng.below(8) as usize;
            for i in 0..events.len() {
                let j = (i + rng.below(window as u64) as usize).min(events.len() - 1);
                events.swap(i, j);
            }
        }
        let mut out = Vec::new();
        let mut sent_end = 0i64;
        // In tenths; sometimes none but the last, so that islands pile up.
        let ack_rate = rng.below(3);
        for ev in events {
            if let Event::Segment { off, wire, .. } = &ev {
                sent_end = sent_end.max(off + i64::from(*wire));
            }
            out.push(ev);
            match rng.below(10) {
                r if r < ack_rate => out.push(Event::Ack {
                    seq_off: sent_end - rng.below(2 * max_seg as u64) as i64,
                }),
                // Far ahead of anything sent, or behind offset 0.
                9 if rng.below(4) == 0 => {
                    let far = rng.below(1 << 30) as i64;
                    let seq_off = if rng.below(2) == 0 {
                        sent_end + ACK_SKIP_LIMIT as i64 + 1 + far
                    } else {
                        -1 - far
                    };
                    out.push(Event::GarbageAck { seq_off });
                }
                _ => {}
            }
        }
        out.push(Event::Ack {
            seq_off: len as i64,
        });
        out
    }

    fn check(m: &Model, s: &Stream, p: &RingPool, reader: &mut u64, step: usize) {
        assert_eq!(s.tail(), m.tail, "tail at step {step}");
        assert_eq!(s.head(), m.head, "head at step {step}");
        assert_eq!(s.lost(), m.lost, "lost at step {step}");
        let islands = m.islands();
        assert_eq!(
            s.fragments(p).collect::<Vec<_>>(),
            islands,
            "fragments at step {step}"
        );
        assert_eq!(
            s.recv_end(p),
            islands.last().map_or(m.tail, |&(o, l)| o + u64::from(l))
        );
        let mut buf = [0u8; 300];
        for &(o, l) in &islands {
            let n = s.read_at(p, o, &mut buf);
            assert_eq!(n, (l as usize).min(buf.len()));
            for (i, &b) in buf[..n].iter().enumerate() {
                assert_eq!(
                    Some(b),
                    m.data[o as usize + i],
                    "fragment byte {}",
                    o as usize + i
                );
            }
        }
        // A peek reader that keeps its pointer between steps, as an analyzer does.
        let len = 1 + step % buf.len();
        loop {
            match s.read(p, *reader, &mut buf[..len]) {
                ReadChunk::NoData => break,
                ReadChunk::Data(n) => {
                    assert!(n > 0 && *reader >= m.head);
                    for (i, &b) in buf[..n].iter().enumerate() {
                        let o = *reader as usize + i;
                        assert!(!m.gap[o], "data read from a gap at {o}");
                        assert_eq!(Some(b), m.data[o], "byte {o} at step {step}");
                    }
                    *reader += n as u64;
                }
                ReadChunk::Gap { offset, len } => {
                    assert_eq!(offset, *reader);
                    assert!((offset..offset + len).all(|o| m.gap[o as usize]));
                    *reader += len;
                }
                ReadChunk::Overrun { lost } => {
                    assert!(lost > 0 && *reader + lost <= m.tail);
                    *reader += lost;
                }
            }
        }
        assert_eq!(*reader, m.tail);
    }

    fn run(isn: u32, ring: usize, policy: OverlapPolicy, events: &[Event]) {
        let mut pool = RingPool::for_tests(ring, 1);
        let mut s = Stream::new();
        s.anchor(isn);
        let mut m = Model::new(ring as u64, policy);
        let mut reader = 0;
        let seq_of = |off: i64| isn.wrapping_add(off as u32);
        for (step, ev) in events.iter().enumerate() {
            match ev {
                Event::Segment { off, bytes, wire } => {
                    let from = s.oldest_readable(&pool);
                    assert!(from >= m.head);
                    let (conflict, dropped) = m.insert(*off, bytes, u64::from(*wire), from);
                    m.skip_acked();
                    let got = s.insert(&mut pool, seq_of(*off), bytes, *wire, policy);
                    assert_eq!(got.conflict, conflict, "conflict at step {step}");
                    assert_eq!(got.dropped_bytes, dropped, "dropped at step {step}");
                }
                Event::Ack { seq_off } => {
                    let lost0 = m.lost;
                    if *seq_off > m.tail as i64 {
                        m.acked = m.acked.max(*seq_off as u64);
                        m.skip_acked();
                    }
                    let g = s.ack(&mut pool, seq_of(*seq_off));
                    assert_eq!(g.map_or(0, |g| g.len), m.lost - lost0);
                }
                Event::GarbageAck { seq_off } => {
                    assert_eq!(s.ack(&mut pool, seq_of(*seq_off)), None);
                }
            }
            check(&m, &s, &pool, &mut reader, step);
        }
    }

    fn isn() -> impl Strategy<Value = u32> {
        prop_oneof![any::<u32>(), (u32::MAX - 8192)..=u32::MAX]
    }

    fn policy() -> impl Strategy<Value = OverlapPolicy> {
        prop::sample::select(OverlapPolicy::ALL.to_vec())
    }

    proptest! {
        // The default config: 256 cases, or PROPTEST_CASES.
        #[test]
        fn stream_matches_model(
            seed in any::<u64>(),
            len in 1usize..4096,
            max_seg in 8usize..400,
            ring in prop_oneof![Just(1usize << 10), Just(1 << 12), Just(1 << 16)],
            isn in isn(),
            policy in policy(),
        ) {
            run(isn, ring, policy, &scenario(seed, len, max_seg, 20));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        // Overlap-heavy scenarios, each under every policy, starting close enough below 2^32
        // that the stream always crosses the sequence wrap.
        #[test]
        fn every_policy_matches_model_across_the_wrap(
            seed in any::<u64>(),
            len in 64usize..3000,
            max_seg in 4usize..120,
            before_wrap in 1u32..64,
        ) {
            let events = scenario(seed, len, max_seg, 60);
            for policy in OverlapPolicy::ALL {
                run(u32::MAX - before_wrap, 1 << 12, policy, &events);
            }
        }
    }
}
