//! The packet log: per worker, a ring of recent frames and their [`PktInfo`].
//!
//! Entries are indexed by a free-running sequence (`seq % entries`), each under its own
//! seqlock stamp; frame bytes go to a byte ring addressed by free-running positions, and a
//! frame never wraps (it starts over at the ring's beginning when it would not fit before the
//! end). Before overwriting bytes the writer moves `bytes_head` past them, so a reader that
//! copied a frame and then sees `bytes_head <= data_pos` knows the copy is intact.

use crate::layout::{PktInfo, PktLogEntry, PktLogHeader};
use crate::pod::Words;
use crate::sync::{backoff, fence, own_load, Ordering};

/// The writer end (one worker).
#[derive(Debug)]
pub struct PktLogWriter<'a> {
    hdr: &'a PktLogHeader,
    entries: &'a [PktLogEntry],
    bytes: &'a mut [u8],
    next_seq: u64,
    tail: u64,
    head: u64,
}

impl<'a> PktLogWriter<'a> {
    /// A writer over a mapped log; `None` if there are no entries or no bytes.
    pub fn new(
        hdr: &'a PktLogHeader,
        entries: &'a [PktLogEntry],
        bytes: &'a mut [u8],
    ) -> Option<Self> {
        if entries.is_empty() || bytes.is_empty() {
            return None;
        }
        Some(PktLogWriter {
            next_seq: own_load(&hdr.next_seq),
            tail: own_load(&hdr.bytes_tail),
            head: own_load(&hdr.bytes_head),
            hdr,
            entries,
            bytes,
        })
    }

    /// The sequence the next frame gets.
    #[inline]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Entries in the log.
    #[inline]
    pub fn entries(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Where a frame of `len` bytes would start, and the byte head it would force: bytes
    /// before that head would be overwritten. Lets the caller wait (lossless mode) first.
    #[inline]
    pub fn plan(&self, len: usize) -> (u64, u64) {
        let cap = self.bytes.len() as u64;
        let len = (len as u64).min(cap);
        let mut pos = self.tail;
        if pos % cap + len > cap {
            pos = pos.next_multiple_of(cap);
        }
        (pos, (pos + len).saturating_sub(cap).max(self.head))
    }

    /// The [`PktInfo`] of an entry still in the log (for the writer's own bookkeeping).
    pub fn info(&self, seq: u64) -> Option<PktInfo> {
        if seq >= self.next_seq || seq + self.entries() < self.next_seq {
            return None;
        }
        Some(PktInfo::load(
            &self.entries[(seq % self.entries()) as usize].words,
        ))
    }

    /// Logs a frame (cut to the byte ring's size); `info`'s `seq`, `data_pos` and `caplen` are
    /// filled in here. Returns the frame's sequence.
    pub fn append(&mut self, mut info: PktInfo, frame: &[u8]) -> u64 {
        let cap = self.bytes.len() as u64;
        let frame = &frame[..frame.len().min(self.bytes.len())];
        let (pos, head) = self.plan(frame.len());
        if head > self.head {
            self.head = head;
            self.hdr.bytes_head.store(head, Ordering::Relaxed);
            fence(Ordering::Release);
        }
        let at = (pos % cap) as usize;
        self.bytes[at..at + frame.len()].copy_from_slice(frame);
        self.tail = pos + frame.len() as u64;
        let seq = self.next_seq;
        info.seq = seq;
        info.data_pos = pos;
        info.caplen = frame.len() as u32;
        let e = &self.entries[(seq % self.entries()) as usize];
        e.stamp.begin_write();
        info.store(&e.words);
        e.stamp.end_write();
        self.next_seq = seq + 1;
        self.hdr.bytes_tail.store(self.tail, Ordering::Release);
        self.hdr.next_seq.store(self.next_seq, Ordering::Release);
        seq
    }
}

/// Attempts [`read_packet`] makes at an entry whose stamp keeps changing before it gives up:
/// a write section is a few stores, so only a writer that died inside one (its stamp stays
/// odd) runs them out, and the reader then gets `None` instead of waiting forever.
pub const READ_TRIES: u32 = 1 << 12;

/// Reads frame `seq` from a log: its info and bytes copied into `dst` (cut to `dst`'s length;
/// `caplen` says how long the frame is). `None` when the frame is not (or no longer) in the log,
/// or its entry stayed busy for [`READ_TRIES`] attempts.
///
/// `copy(pos, dst)` copies bytes at byte-ring position `pos` (already reduced modulo the ring
/// size) from the mapping; the caller supplies it so this function stays free of raw memory.
pub fn read_packet(
    hdr: &PktLogHeader,
    entries: &[PktLogEntry],
    ring_len: u64,
    seq: u64,
    dst: &mut [u8],
    mut copy: impl FnMut(u64, &mut [u8]) -> bool,
) -> Option<(PktInfo, usize)> {
    let n = entries.len() as u64;
    if n == 0 || ring_len == 0 {
        return None;
    }
    let next = hdr.next_seq.load(Ordering::Acquire);
    if seq >= next || seq + n < next {
        return None;
    }
    let e = &entries[(seq % n) as usize];
    let mut info = None;
    for i in 0..READ_TRIES {
        if let Some(tok) = e.stamp.begin_read() {
            let v = PktInfo::load(&e.words);
            if e.stamp.validate(tok) {
                info = Some(v);
                break;
            }
        }
        backoff(i);
    }
    let info = info?;
    if info.seq != seq || u64::from(info.caplen) > ring_len {
        return None;
    }
    let k = dst.len().min(info.caplen as usize);
    if !copy(info.data_pos % ring_len, &mut dst[..k]) {
        return None;
    }
    fence(Ordering::Acquire);
    if hdr.bytes_head.load(Ordering::Relaxed) > info.data_pos {
        return None;
    }
    Some((info, k))
}
