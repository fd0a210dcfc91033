//! IPv4 and IPv6 fragment reassembly, ahead of the TCP core.
//!
//! A [`Defragmenter`] takes the IP bytes of fragments (what the parser returns as
//! [`Parsed::Fragment`](crate::parse::Parsed::Fragment)) with their capture time, and hands back
//! each datagram once all its pieces are in, as one whole IP packet: the first fragment's
//! header (for IPv6, the headers before the fragment header) with the length fields rewritten,
//! the fragment offset and more-fragments flag cleared and the IPv6 fragment header removed,
//! followed by the payload. The parser then reads it like any other packet. Like the TCP core
//! it does no I/O and reads no clock.
//!
//! Datagrams are keyed by (source, destination, identification, protocol) for IPv4 and
//! (source, destination, identification) for IPv6.
//!
//! Policy (see docs/REASSEMBLY.md):
//! - **Overlaps.** IPv4: the first copy of a byte wins, as in the TCP streams; a fragment that
//!   overlaps bytes already held is counted, and counted again as a *conflict* when the bytes
//!   differ (two copies of one byte that disagree are how IDS evasion works). IPv6: RFC 5722
//!   forbids overlapping fragments, so any overlap drops the whole datagram, except a fragment
//!   that brings only bytes already held, with the same values (a duplicate, RFC 8200 4.5),
//!   which is ignored.
//! - **Bad fragments** drop their datagram, and later fragments of it are discarded until the
//!   datagram's time runs out: an empty fragment, a TCP first fragment too short to hold the
//!   TCP flags or a TCP fragment at offset 8 (RFC 1858), a fragment that is not the last
//!   whose length is not a multiple of 8, a datagram longer than 65535 bytes, a fragment past
//!   the end a last fragment set, a second last fragment with another end, a last fragment
//!   below bytes already held, more than [`MAX_ISLANDS`] separate runs of bytes, a first
//!   IPv6 fragment whose headers before the fragment header exceed 1 KiB, and a fragment
//!   the snap length cut.
//! - **Limits.** Fragment bytes live in a preallocated arena of 1 KiB blocks
//!   ([`DefragConfig::memory_bytes`] in all); at most [`DefragConfig::max_datagrams`]
//!   datagrams are in progress; each has [`DefragConfig::timeout_ns`] of capture time from its
//!   first fragment (as Linux's `ipfrag_time`). When a limit is reached the oldest datagram is
//!   dropped. Every drop is counted by cause in [`DefragStats`].
//!
//! Invariants: every fragment taken in is, at any time, in exactly one of three places:
//! a reassembled datagram ([`DefragStats::fragments_reassembled`]), the dropped ones
//! ([`DefragStats::fragments_dropped`]), or a datagram in progress
//! ([`Defragmenter::held_fragments`]). Blocks in use never exceed the arena.

use crate::parse::checksum;
use std::hash::BuildHasher;

/// Bytes per block of the fragment arena (the unit memory is counted in).
pub const BLOCK: usize = 1024;
/// Blocks that cover the largest fragmentable payload (offsets below 65536).
const BLOCKS_PER_DATAGRAM: usize = 65536 / BLOCK;
/// Most separate runs of held bytes in one datagram; adjacent fragments merge into one run,
/// so only fragments arriving out of order with holes between them use more than one.
pub const MAX_ISLANDS: usize = 32;
/// The largest IP datagram (the IPv4 total length, the IPv6 payload length).
const MAX_IP_LEN: usize = 65535;
/// RFC 1858: a TCP first fragment must hold the TCP header up to and including the flags.
const TCP_MIN_FIRST: usize = 16;
const PROTO_TCP: u8 = 6;
const NONE: u32 = u32::MAX;

/// IPv6 next-header values of the headers that may come before the fragment header.
mod nh {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const DEST_OPTS: u8 = 60;
}

/// Limits of one defragmenter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefragConfig {
    /// Bytes of fragment data held at most, counted in blocks of [`BLOCK`] bytes (a datagram
    /// holds at least one block). The arena is reserved up front; the OS commits its pages as
    /// they are first used.
    pub memory_bytes: usize,
    /// Datagrams in progress at most (dropped ones still waiting out their time included).
    pub max_datagrams: usize,
    /// Capture time a datagram has from its first fragment to its last, ns.
    pub timeout_ns: u64,
}

impl Default for DefragConfig {
    /// 32 MiB, 4096 datagrams, 30 s.
    fn default() -> Self {
        DefragConfig {
            memory_bytes: 32 << 20,
            max_datagrams: 4096,
            timeout_ns: 30_000_000_000,
        }
    }
}

/// What a defragmenter did. Drop causes count datagrams (`drop_*`) or fragments dropped on
/// their own (`unreadable`, `late`); `fragments_dropped` counts every fragment discarded,
/// whatever the cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefragStats {
    /// Fragments taken in.
    pub fragments: u64,
    /// Datagrams reassembled and handed on.
    pub datagrams: u64,
    /// Fragments that went into a reassembled datagram (duplicates included).
    pub fragments_reassembled: u64,
    /// Fragments discarded, for any cause (with their datagram, or on their own).
    pub fragments_dropped: u64,
    /// Fragments that overlapped bytes already held.
    pub overlaps: u64,
    /// Overlapping fragments whose bytes differ from those held (an evasion signal).
    pub conflicts: u64,
    /// Datagrams still incomplete when their time ran out or the input ended.
    pub drop_timeout: u64,
    /// Datagrams dropped (the oldest) to make room in the arena.
    pub drop_memory: u64,
    /// Datagrams dropped (the oldest) because the most in progress were.
    pub drop_datagrams: u64,
    /// IPv6 datagrams dropped for an overlap (RFC 5722).
    pub drop_overlap: u64,
    /// Datagrams dropped for a fragment whose offset, length or end does not fit (or whose
    /// headers before the IPv6 fragment header exceed 1 KiB).
    pub drop_bogus: u64,
    /// Datagrams dropped for an empty or tiny fragment (RFC 1858).
    pub drop_tiny: u64,
    /// Datagrams dropped for more than [`MAX_ISLANDS`] separate runs of bytes.
    pub drop_holes: u64,
    /// Datagrams dropped for a fragment the snap length cut.
    pub drop_truncated: u64,
    /// Fragments whose headers could not be read (or that were no fragment).
    pub unreadable: u64,
    /// Fragments of a datagram already dropped, discarded until its time runs out.
    pub late: u64,
}

impl DefragStats {
    /// Adds another defragmenter's counters to these.
    pub fn add(&mut self, o: &DefragStats) {
        self.fragments += o.fragments;
        self.datagrams += o.datagrams;
        self.fragments_reassembled += o.fragments_reassembled;
        self.fragments_dropped += o.fragments_dropped;
        self.overlaps += o.overlaps;
        self.conflicts += o.conflicts;
        self.drop_timeout += o.drop_timeout;
        self.drop_memory += o.drop_memory;
        self.drop_datagrams += o.drop_datagrams;
        self.drop_overlap += o.drop_overlap;
        self.drop_bogus += o.drop_bogus;
        self.drop_tiny += o.drop_tiny;
        self.drop_holes += o.drop_holes;
        self.drop_truncated += o.drop_truncated;
        self.unreadable += o.unreadable;
        self.late += o.late;
    }

    /// Datagrams dropped, all causes.
    pub fn datagrams_dropped(&self) -> u64 {
        self.drop_timeout
            + self.drop_memory
            + self.drop_datagrams
            + self.drop_overlap
            + self.drop_bogus
            + self.drop_tiny
            + self.drop_holes
            + self.drop_truncated
    }
}

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    Timeout,
    Memory,
    Datagrams,
    Overlap,
    Bogus,
    Tiny,
    Holes,
    Truncated,
}

/// What identifies a datagram: IPv4 (src, dst, id, protocol), IPv6 (src, dst, id).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Key {
    src: [u8; 16],
    dst: [u8; 16],
    id: u32,
    /// 0 for IPv6, whose key has no protocol.
    proto: u8,
    v6: bool,
}

/// A fragment's fields, read from its IP bytes.
#[derive(Debug)]
struct Frag<'a> {
    key: Key,
    /// What the reassembled datagram starts with: the IPv4 header, or the IPv6 headers before
    /// the fragment header.
    header: &'a [u8],
    /// IPv6: where in `header` the next-header byte that names the fragment header is, and
    /// the fragment header's own next header, which takes its place.
    nh_pos: usize,
    next: u8,
    /// The upper-layer protocol (IPv6: the fragment header's next header).
    proto: u8,
    /// Offset of `payload` in the datagram's fragmentable part.
    off: usize,
    /// More fragments follow (not the last).
    more: bool,
    payload: &'a [u8],
}

/// Why a fragment's headers were not read.
#[derive(Debug)]
enum Unread {
    /// Bad or missing headers, or no fragment at all.
    Unreadable,
    /// The headers are whole but the snap length cut the payload.
    Truncated(Key),
}

fn be16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([b[at], b[at + 1]]))
}

/// Reads an IPv4 or IPv6 fragment at the start of `ip` (bytes past the IP length are ignored).
fn read_fragment(ip: &[u8]) -> Result<Frag<'_>, Unread> {
    match ip.first().map(|b| b >> 4) {
        Some(4) => read_v4(ip),
        Some(6) => read_v6(ip),
        _ => Err(Unread::Unreadable),
    }
}

fn read_v4(ip: &[u8]) -> Result<Frag<'_>, Unread> {
    if ip.len() < 20 {
        return Err(Unread::Unreadable);
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = be16(ip, 2);
    if ihl < 20 || ip.len() < ihl || total < ihl {
        return Err(Unread::Unreadable);
    }
    let ff = be16(ip, 6);
    let more = ff & 0x2000 != 0;
    let off = (ff & 0x1fff) * 8;
    if !more && off == 0 {
        return Err(Unread::Unreadable);
    }
    let mut key = Key {
        id: be16(ip, 4) as u32,
        proto: ip[9],
        ..Key::default()
    };
    key.src[..4].copy_from_slice(&ip[12..16]);
    key.dst[..4].copy_from_slice(&ip[16..20]);
    if ip.len() < total {
        return Err(Unread::Truncated(key));
    }
    Ok(Frag {
        key,
        header: &ip[..ihl],
        nh_pos: 0,
        next: 0,
        proto: ip[9],
        off,
        more,
        payload: &ip[ihl..total],
    })
}

fn read_v6(ip: &[u8]) -> Result<Frag<'_>, Unread> {
    if ip.len() < 40 {
        return Err(Unread::Unreadable);
    }
    let end = 40 + be16(ip, 4);
    let avail = end.min(ip.len());
    // Walk the headers before the fragment header; each moves at least 8 bytes.
    let (mut next, mut nh_pos, mut pos) = (ip[6], 6, 40);
    while next != nh::FRAGMENT {
        if !matches!(next, nh::HOP_BY_HOP | nh::ROUTING | nh::DEST_OPTS) || pos + 2 > avail {
            return Err(Unread::Unreadable);
        }
        nh_pos = pos;
        next = ip[pos];
        pos += (usize::from(ip[pos + 1]) + 1) * 8;
    }
    if pos + 8 > avail {
        return Err(Unread::Unreadable);
    }
    let fo = be16(ip, pos + 2);
    let mut key = Key {
        id: u32::from_be_bytes([ip[pos + 4], ip[pos + 5], ip[pos + 6], ip[pos + 7]]),
        v6: true,
        ..Key::default()
    };
    key.src.copy_from_slice(&ip[8..24]);
    key.dst.copy_from_slice(&ip[24..40]);
    if ip.len() < end {
        return Err(Unread::Truncated(key));
    }
    Ok(Frag {
        key,
        header: &ip[..pos],
        nh_pos,
        next: ip[pos],
        proto: ip[pos],
        off: fo & 0xfff8,
        more: fo & 1 != 0,
        payload: &ip[pos + 8..end],
    })
}

/// Whether a slot holds a datagram in progress, one already dropped (kept until its time runs
/// out so that its later fragments are discarded), or nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    Live,
    Dead,
}

/// One datagram in progress.
#[derive(Clone, Debug)]
struct Slot {
    key: Key,
    state: State,
    deadline_ns: u64,
    /// Neighbours in age order (oldest first) and in the index bucket's chain.
    prev: u32,
    next: u32,
    hash_next: u32,
    /// End of the fragmentable part, once the last fragment is in (else NONE).
    end: u32,
    /// Fragments taken into this datagram.
    frags: u32,
    /// The block holding the header (NONE until the first fragment is in) and its length.
    hdr_block: u32,
    hdr_len: u16,
    /// Held byte runs `[start, end)`, sorted, neither overlapping nor touching.
    islands: [[u32; 2]; MAX_ISLANDS],
    nislands: u8,
    /// The block holding payload offsets `[i * BLOCK, (i + 1) * BLOCK)`, or NONE.
    blocks: [u32; BLOCKS_PER_DATAGRAM],
}

impl Slot {
    fn empty() -> Self {
        Slot {
            key: Key::default(),
            state: State::Free,
            deadline_ns: 0,
            prev: NONE,
            next: NONE,
            hash_next: NONE,
            end: NONE,
            frags: 0,
            hdr_block: NONE,
            hdr_len: 0,
            islands: [[0; 2]; MAX_ISLANDS],
            nislands: 0,
            blocks: [NONE; BLOCKS_PER_DATAGRAM],
        }
    }

    fn islands(&self) -> &[[u32; 2]] {
        &self.islands[..usize::from(self.nislands)]
    }
}

/// `[a, b)` of a datagram's payload cut at block boundaries: (block number, offset in the
/// block, offset from `a`, length).
fn pieces(a: usize, b: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let mut at = a;
    std::iter::from_fn(move || {
        if at >= b {
            return None;
        }
        let (blk, inb) = (at / BLOCK, at % BLOCK);
        let len = (BLOCK - inb).min(b - at);
        let piece = (blk, inb, at - a, len);
        at += len;
        Some(piece)
    })
}

/// Reassembles IP fragments within fixed limits (see the module documentation).
#[derive(Debug)]
pub struct Defragmenter {
    cfg: DefragConfig,
    arena: Vec<u8>,
    free_blocks: Vec<u32>,
    /// Grown up to `max_datagrams` (capacity reserved up front), then reused.
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    buckets: Vec<u32>,
    hash_mul: [u64; 2],
    /// Oldest and newest datagram in progress.
    head: u32,
    tail: u32,
    in_progress: usize,
    /// The latest capture time seen.
    clock_ns: u64,
    /// The last reassembled datagram (reused).
    out: Vec<u8>,
    stats: DefragStats,
}

impl Defragmenter {
    /// A defragmenter with the limits of `cfg` (at least one datagram; an arena smaller than
    /// one block holds nothing, so every datagram is dropped for memory).
    pub fn new(cfg: DefragConfig) -> Self {
        let cfg = DefragConfig {
            max_datagrams: cfg.max_datagrams.clamp(1, 1 << 24),
            ..cfg
        };
        let nblocks = (cfg.memory_bytes / BLOCK).min(u32::MAX as usize - 1);
        let nbuckets = (cfg.max_datagrams * 2).next_power_of_two();
        let rs = std::collections::hash_map::RandomState::new();
        Defragmenter {
            cfg,
            // Zeroed memory from the allocator: pages are committed as blocks are first used.
            arena: vec![0; nblocks * BLOCK],
            // Low blocks first, so a lightly used arena touches few pages.
            free_blocks: (0..nblocks as u32).rev().collect(),
            slots: Vec::with_capacity(cfg.max_datagrams),
            free_slots: Vec::with_capacity(cfg.max_datagrams),
            buckets: vec![NONE; nbuckets],
            hash_mul: [rs.hash_one(1u8) | 1, rs.hash_one(2u8) | 1],
            head: NONE,
            tail: NONE,
            in_progress: 0,
            clock_ns: 0,
            out: Vec::with_capacity(MAX_IP_LEN + 40),
            stats: DefragStats::default(),
        }
    }

    /// The most memory a defragmenter with `cfg`'s limits allocates: the arena, the free
    /// block list, the datagram slots and their free list, the index and the output buffer.
    pub fn memory_bound(cfg: &DefragConfig) -> usize {
        let datagrams = cfg.max_datagrams.clamp(1, 1 << 24);
        let nblocks = (cfg.memory_bytes / BLOCK).min(u32::MAX as usize - 1);
        nblocks * (BLOCK + 4)
            + datagrams * (core::mem::size_of::<Slot>() + 4)
            + (datagrams * 2).next_power_of_two() * 4
            + MAX_IP_LEN
            + 40
    }

    /// The limits in use.
    pub fn config(&self) -> &DefragConfig {
        &self.cfg
    }

    /// The counters so far.
    pub fn stats(&self) -> &DefragStats {
        &self.stats
    }

    /// Datagrams in progress (including dropped ones waiting out their time).
    pub fn in_progress(&self) -> usize {
        self.in_progress
    }

    /// Bytes of the arena in use (whole blocks).
    pub fn held_bytes(&self) -> usize {
        self.arena.len() - self.free_blocks.len() * BLOCK
    }

    /// Fragments held by datagrams in progress.
    pub fn held_fragments(&self) -> u64 {
        self.slots
            .iter()
            .filter(|s| s.state == State::Live)
            .map(|s| u64::from(s.frags))
            .sum()
    }

    /// Takes one fragment's IP bytes (from the IP header on; bytes past the IP length are
    /// ignored) captured at `now_ns`. Returns the whole datagram when this fragment completes
    /// it (valid until the next call).
    pub fn push(&mut self, now_ns: u64, ip: &[u8]) -> Option<&[u8]> {
        self.stats.fragments += 1;
        self.expire(now_ns);
        let f = match read_fragment(ip) {
            Ok(f) => f,
            Err(Unread::Unreadable) => {
                self.stats.unreadable += 1;
                self.stats.fragments_dropped += 1;
                return None;
            }
            Err(Unread::Truncated(key)) => {
                let s = self.slot_for(&key);
                if self.slots[s as usize].state == State::Dead {
                    self.discard_late();
                } else {
                    self.slots[s as usize].frags += 1;
                    self.kill(s, Cause::Truncated);
                }
                return None;
            }
        };
        if f.key.v6 && f.off == 0 && !f.more {
            // An atomic fragment (RFC 6946): a whole datagram, apart from any reassembly.
            if f.payload.is_empty() {
                self.stats.drop_tiny += 1;
                self.stats.fragments_dropped += 1;
                return None;
            }
            self.stats.datagrams += 1;
            self.stats.fragments_reassembled += 1;
            self.out.clear();
            self.out.extend_from_slice(f.header);
            self.out.extend_from_slice(f.payload);
            self.out[f.nh_pos] = f.next;
            let plen = (f.header.len() - 40 + f.payload.len()) as u16;
            self.out[4..6].copy_from_slice(&plen.to_be_bytes());
            return Some(&self.out);
        }
        let s = self.slot_for(&f.key);
        if self.slots[s as usize].state == State::Dead {
            self.discard_late();
            return None;
        }
        self.slots[s as usize].frags += 1;
        if let Some(cause) = self.check(s, &f) {
            self.kill(s, cause);
            return None;
        }
        if !self.store(s, &f) {
            return None;
        }
        self.complete(s)
    }

    /// Moves the clock to `now_ns` (if later) and drops the datagrams whose time has run out;
    /// returns whether any was.
    #[inline]
    pub fn expire(&mut self, now_ns: u64) -> bool {
        self.clock_ns = self.clock_ns.max(now_ns);
        let mut any = false;
        while self.head != NONE && self.slots[self.head as usize].deadline_ns <= self.clock_ns {
            self.drop_slot(self.head, Cause::Timeout);
            any = true;
        }
        any
    }

    /// At the end of the input: drops every datagram still in progress (as timed out).
    pub fn finish(&mut self) {
        while self.head != NONE {
            self.drop_slot(self.head, Cause::Timeout);
        }
    }

    /// A fragment of a datagram already dropped.
    fn discard_late(&mut self) {
        self.stats.late += 1;
        self.stats.fragments_dropped += 1;
    }

    /// Checks a fragment against its datagram: a cause to drop the datagram, or none.
    fn check(&mut self, s: u32, f: &Frag<'_>) -> Option<Cause> {
        let (a, len) = (f.off, f.payload.len());
        let b = a + len;
        let tcp = f.proto == PROTO_TCP;
        if len == 0 || (tcp && a == 0 && len < TCP_MIN_FIRST) || (tcp && a == 8) {
            return Some(Cause::Tiny);
        }
        let too_long = if f.key.v6 {
            b > MAX_IP_LEN
        } else {
            f.header.len() + b > MAX_IP_LEN
        };
        if (f.more && len % 8 != 0) || too_long || (a == 0 && f.header.len() > BLOCK) {
            return Some(Cause::Bogus);
        }
        let slot = &self.slots[s as usize];
        let held_end = slot.islands().last().map_or(0, |i| i[1] as usize);
        if f.more {
            if slot.end != NONE && b > slot.end as usize {
                return Some(Cause::Bogus);
            }
        } else if (slot.end != NONE && slot.end as usize != b) || held_end > b {
            return Some(Cause::Bogus);
        }
        // Overlaps with what is held: counted, compared, and for IPv6 fatal unless the
        // fragment repeats held bytes exactly.
        let mut covered = 0;
        let mut differ = false;
        let mut touching = 0;
        for &[x, y] in slot.islands() {
            let (x, y) = (x as usize, y as usize);
            if y >= a && x <= b {
                touching += 1;
            }
            let (lo, hi) = (x.max(a), y.min(b));
            if lo < hi {
                covered += hi - lo;
                differ |= !self.same(slot, lo, &f.payload[lo - a..hi - a]);
            }
        }
        if covered > 0 {
            self.stats.overlaps += 1;
            if differ {
                self.stats.conflicts += 1;
            }
            if f.key.v6 {
                return if covered == len && !differ {
                    None
                } else {
                    Some(Cause::Overlap)
                };
            }
        }
        if usize::from(slot.nislands) + 1 - touching > MAX_ISLANDS {
            return Some(Cause::Holes);
        }
        None
    }

    /// Whether the held bytes at payload offset `at` equal `bytes` (all of them held).
    fn same(&self, slot: &Slot, at: usize, bytes: &[u8]) -> bool {
        pieces(at, at + bytes.len()).all(|(blk, inb, from, len)| {
            let base = slot.blocks[blk] as usize * BLOCK + inb;
            self.arena[base..base + len] == bytes[from..from + len]
        })
    }

    /// Stores what the fragment adds (after [`Self::check`]): the bytes not held yet (the
    /// first copy wins), the header of a first fragment, the end of a last one. False when the
    /// datagram was dropped for want of memory.
    fn store(&mut self, s: u32, f: &Frag<'_>) -> bool {
        let (a, b) = (f.off, f.off + f.payload.len());
        let slot = &self.slots[s as usize];
        let want_header = a == 0 && slot.hdr_block == NONE;
        let need = (a / BLOCK..=(b - 1) / BLOCK)
            .filter(|&i| slot.blocks[i] == NONE)
            .count()
            + usize::from(want_header);
        while self.free_blocks.len() < need {
            let victim = if self.head != s {
                self.head
            } else {
                self.slots[s as usize].next
            };
            if victim == NONE {
                self.kill(s, Cause::Memory);
                return false;
            }
            self.drop_slot(victim, Cause::Memory);
        }
        let slot = &mut self.slots[s as usize];
        for (blk, ..) in pieces(a, b) {
            if slot.blocks[blk] == NONE {
                slot.blocks[blk] = self.free_blocks.pop().expect("blocks counted above");
            }
        }
        if want_header {
            let hb = self.free_blocks.pop().expect("blocks counted above");
            slot.hdr_block = hb;
            slot.hdr_len = f.header.len() as u16;
            let h = &mut self.arena[hb as usize * BLOCK..][..f.header.len()];
            h.copy_from_slice(f.header);
            if f.key.v6 {
                h[f.nh_pos] = f.next;
            }
        }
        if !f.more {
            slot.end = b as u32;
        }
        // Copy the runs of [a, b) that no island holds, then merge [a, b) into the islands.
        let mut at = a;
        let mut merged = [a as u32, b as u32];
        let mut keep = 0;
        let n = usize::from(slot.nislands);
        let mut inserted = false;
        let mut out = [[0u32; 2]; MAX_ISLANDS + 1];
        let copy = |from: usize, to: usize, slot: &Slot, arena: &mut [u8]| {
            for (blk, inb, off, len) in pieces(from, to) {
                let base = slot.blocks[blk] as usize * BLOCK + inb;
                arena[base..base + len].copy_from_slice(&f.payload[from - a + off..][..len]);
            }
        };
        for i in 0..n {
            let [x, y] = slot.islands[i];
            let (xu, yu) = (x as usize, y as usize);
            if yu < a || xu > b {
                if xu > b && !inserted {
                    out[keep] = merged;
                    keep += 1;
                    inserted = true;
                }
                out[keep] = [x, y];
                keep += 1;
                continue;
            }
            if xu > at {
                copy(at, xu.min(b), slot, &mut self.arena);
            }
            at = at.max(yu);
            merged = [merged[0].min(x), merged[1].max(y)];
        }
        if at < b {
            copy(at, b, slot, &mut self.arena);
        }
        if !inserted {
            out[keep] = merged;
            keep += 1;
        }
        slot.islands[..keep].copy_from_slice(&out[..keep]);
        slot.nislands = keep as u8;
        true
    }

    /// Hands on the datagram if it is whole.
    fn complete(&mut self, s: u32) -> Option<&[u8]> {
        let slot = &self.slots[s as usize];
        if slot.end == NONE || slot.hdr_block == NONE || slot.islands() != [[0, slot.end]] {
            return None;
        }
        let (hl, end) = (usize::from(slot.hdr_len), slot.end as usize);
        let v6 = slot.key.v6;
        let len_field = if v6 { hl - 40 + end } else { hl + end };
        if len_field > MAX_IP_LEN {
            self.kill(s, Cause::Bogus);
            return None;
        }
        self.out.clear();
        let hb = slot.hdr_block as usize * BLOCK;
        self.out.extend_from_slice(&self.arena[hb..hb + hl]);
        for (blk, inb, _, len) in pieces(0, end) {
            let base = slot.blocks[blk] as usize * BLOCK + inb;
            self.out.extend_from_slice(&self.arena[base..base + len]);
        }
        let len_bytes = (len_field as u16).to_be_bytes();
        if v6 {
            self.out[4..6].copy_from_slice(&len_bytes);
        } else {
            self.out[2..4].copy_from_slice(&len_bytes);
            // Keep the reserved and don't-fragment bits; clear more-fragments and the offset.
            self.out[6] &= 0xc0;
            self.out[7] = 0;
            self.out[10..12].copy_from_slice(&[0, 0]);
            let sum = checksum::fold(checksum::sum_bytes(&self.out[..hl]));
            self.out[10..12].copy_from_slice(&(!sum).to_be_bytes());
        }
        self.stats.datagrams += 1;
        self.stats.fragments_reassembled += u64::from(slot.frags);
        self.release(s);
        Some(&self.out)
    }

    fn bucket(&self, k: &Key) -> usize {
        let w = |b: &[u8; 16], at: usize| {
            u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes of 16"))
        };
        let mut h = self.hash_mul[1];
        for x in [
            w(&k.src, 0),
            w(&k.src, 8),
            w(&k.dst, 0),
            w(&k.dst, 8),
            u64::from(k.id) << 16 | u64::from(k.proto) << 8 | u64::from(k.v6),
        ] {
            h = (h ^ x).wrapping_mul(self.hash_mul[0]);
            h ^= h >> 31;
        }
        (h as usize) & (self.buckets.len() - 1)
    }

    /// The datagram of `key`, made if there is none (dropping the oldest when at the limit).
    fn slot_for(&mut self, key: &Key) -> u32 {
        let b = self.bucket(key);
        let mut i = self.buckets[b];
        while i != NONE {
            if self.slots[i as usize].key == *key {
                return i;
            }
            i = self.slots[i as usize].hash_next;
        }
        if self.in_progress >= self.cfg.max_datagrams {
            self.drop_slot(self.head, Cause::Datagrams);
        }
        let s = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot::empty());
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[s as usize];
        slot.key = *key;
        slot.state = State::Live;
        slot.deadline_ns = self.clock_ns.saturating_add(self.cfg.timeout_ns);
        slot.prev = self.tail;
        slot.next = NONE;
        slot.hash_next = self.buckets[b];
        self.buckets[b] = s;
        if self.tail != NONE {
            self.slots[self.tail as usize].next = s;
        } else {
            self.head = s;
        }
        self.tail = s;
        self.in_progress += 1;
        s
    }

    /// Counts a live datagram's drop and frees its blocks; it stays (dead) until its time runs
    /// out, so that its later fragments are discarded rather than start another.
    fn kill(&mut self, s: u32, cause: Cause) {
        self.count_drop(s, cause);
        self.free_blocks_of(s);
        self.slots[s as usize].state = State::Dead;
    }

    /// Drops a datagram (counted if still live) and frees its slot.
    fn drop_slot(&mut self, s: u32, cause: Cause) {
        if self.slots[s as usize].state == State::Live {
            self.count_drop(s, cause);
        }
        self.release(s);
    }

    fn count_drop(&mut self, s: u32, cause: Cause) {
        let st = &mut self.stats;
        st.fragments_dropped += u64::from(self.slots[s as usize].frags);
        *match cause {
            Cause::Timeout => &mut st.drop_timeout,
            Cause::Memory => &mut st.drop_memory,
            Cause::Datagrams => &mut st.drop_datagrams,
            Cause::Overlap => &mut st.drop_overlap,
            Cause::Bogus => &mut st.drop_bogus,
            Cause::Tiny => &mut st.drop_tiny,
            Cause::Holes => &mut st.drop_holes,
            Cause::Truncated => &mut st.drop_truncated,
        } += 1;
    }

    fn free_blocks_of(&mut self, s: u32) {
        let slot = &mut self.slots[s as usize];
        for b in slot.blocks.iter_mut().chain([&mut slot.hdr_block]) {
            if *b != NONE {
                self.free_blocks.push(*b);
                *b = NONE;
            }
        }
        slot.nislands = 0;
        slot.end = NONE;
        slot.frags = 0;
    }

    /// Frees a slot: its blocks, its place in age order and in the index.
    fn release(&mut self, s: u32) {
        self.free_blocks_of(s);
        let (prev, next) = (self.slots[s as usize].prev, self.slots[s as usize].next);
        match prev {
            NONE => self.head = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NONE => self.tail = prev,
            n => self.slots[n as usize].prev = prev,
        }
        let b = self.bucket(&self.slots[s as usize].key);
        let mut link = self.buckets[b];
        if link == s {
            self.buckets[b] = self.slots[s as usize].hash_next;
        } else {
            while link != NONE {
                let nx = self.slots[link as usize].hash_next;
                if nx == s {
                    self.slots[link as usize].hash_next = self.slots[s as usize].hash_next;
                    break;
                }
                link = nx;
            }
        }
        let slot = &mut self.slots[s as usize];
        slot.state = State::Free;
        slot.hash_next = NONE;
        self.free_slots.push(s);
        self.in_progress -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::ip::{parse_ip, tests::tcp_seg, tests::v4_packet, tests::v6_packet};
    use crate::parse::Parsed;
    use proptest::prelude::*;

    const SEC: u64 = 1_000_000_000;

    /// A whole IPv4 TCP packet with `n` payload bytes, id 77, a right header checksum and the
    /// flag bits `df` (0x4000 for don't-fragment).
    fn v4_whole(n: usize, df: u16) -> Vec<u8> {
        v4_whole_id(n, df, 77)
    }

    fn v4_whole_id(n: usize, df: u16, id: u16) -> Vec<u8> {
        let payload: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
        let mut p = v4_packet(&[], PROTO_TCP, df, &tcp_seg(&payload));
        p[4..6].copy_from_slice(&id.to_be_bytes());
        let sum = checksum::fold(checksum::sum_bytes(&p[..20]));
        p[10..12].copy_from_slice(&(!sum).to_be_bytes());
        p
    }

    /// `frag` claiming to be at payload offset `off` instead.
    fn at_offset(mut frag: Vec<u8>, off: usize) -> Vec<u8> {
        let ff = be16(&frag, 6) as u16 & 0xe000 | (off / 8) as u16;
        frag[6..8].copy_from_slice(&ff.to_be_bytes());
        frag
    }

    /// The fragment of IPv4 `whole` holding payload bytes `[off, off + len)`.
    fn v4_frag(whole: &[u8], off: usize, len: usize, more: bool) -> Vec<u8> {
        let ff =
            (be16(whole, 6) & 0xc000) as u16 | (off / 8) as u16 | if more { 0x2000 } else { 0 };
        let mut p = whole[..20].to_vec();
        p[2..4].copy_from_slice(&((20 + len) as u16).to_be_bytes());
        p[6..8].copy_from_slice(&ff.to_be_bytes());
        p[10..12].copy_from_slice(&[0xde, 0xad]);
        p.extend_from_slice(&whole[20 + off..20 + off + len]);
        p
    }

    /// Cuts IPv4 `whole` at the payload offsets `cuts` (sorted, multiples of 8).
    fn v4_cut(whole: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let n = whole.len() - 20;
        let mut edges = vec![0];
        edges.extend_from_slice(cuts);
        edges.push(n);
        edges
            .windows(2)
            .map(|w| v4_frag(whole, w[0], w[1] - w[0], w[1] != n))
            .collect()
    }

    /// IPv6 headers before the fragment header (hop-by-hop, routing) and after it (destination
    /// options), then TCP with `n` payload bytes.
    fn v6_whole(n: usize) -> (Vec<u8>, usize, usize) {
        let mut ext = vec![nh::ROUTING, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[nh::DEST_OPTS, 0, 0, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&[PROTO_TCP, 0, 1, 4, 0, 0, 0, 0]);
        let payload: Vec<u8> = (0..n).map(|i| (i * 13 + 1) as u8).collect();
        let p = v6_packet(nh::HOP_BY_HOP, &ext, &tcp_seg(&payload));
        // The unfragmentable part: the fixed header, hop-by-hop and routing; the routing
        // header's next-header byte names what follows.
        (p, 56, 48)
    }

    fn v6_frag(
        whole: &[u8],
        unfrag: usize,
        nh_pos: usize,
        off: usize,
        len: usize,
        more: bool,
    ) -> Vec<u8> {
        let mut p = whole[..unfrag].to_vec();
        let next = p[nh_pos];
        p[nh_pos] = nh::FRAGMENT;
        p.extend_from_slice(&[next, 0]);
        p.extend_from_slice(&(off as u16 | u16::from(more)).to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend_from_slice(&whole[unfrag + off..unfrag + off + len]);
        let plen = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&plen.to_be_bytes());
        p
    }

    fn v6_cut(whole: &[u8], unfrag: usize, nh_pos: usize, cuts: &[usize]) -> Vec<Vec<u8>> {
        let n = whole.len() - unfrag;
        let mut edges = vec![0];
        edges.extend_from_slice(cuts);
        edges.push(n);
        edges
            .windows(2)
            .map(|w| v6_frag(whole, unfrag, nh_pos, w[0], w[1] - w[0], w[1] != n))
            .collect()
    }

    fn small() -> DefragConfig {
        DefragConfig {
            memory_bytes: 1 << 20,
            max_datagrams: 64,
            timeout_ns: 30 * SEC,
        }
    }

    /// Every fragment is reassembled, dropped or held, and the arena is never overdrawn.
    fn check_invariants(d: &Defragmenter) {
        let s = d.stats();
        assert_eq!(
            s.fragments,
            s.fragments_reassembled + s.fragments_dropped + d.held_fragments(),
            "{s:?}"
        );
        assert!(d.held_bytes() <= d.config().memory_bytes);
        assert!(d.in_progress() <= d.config().max_datagrams);
    }

    /// Pushes `frags` in order at time 0; returns the datagrams that came out.
    fn feed(d: &mut Defragmenter, frags: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for f in frags {
            if let Some(dg) = d.push(0, f) {
                out.push(dg.to_vec());
            }
            check_invariants(d);
        }
        out
    }

    #[test]
    fn ipv4_in_order_reversed_shuffled_and_duplicated() {
        let whole = v4_whole(3000, 0);
        let frags = v4_cut(&whole, &[1480, 2960]);
        let mut orders: Vec<Vec<Vec<u8>>> = vec![frags.clone()];
        orders.push(frags.iter().rev().cloned().collect());
        orders.push(vec![frags[1].clone(), frags[2].clone(), frags[0].clone()]);
        orders.push(vec![
            frags[0].clone(),
            frags[0].clone(),
            frags[2].clone(),
            frags[1].clone(),
        ]);
        for (i, order) in orders.iter().enumerate() {
            let mut d = Defragmenter::new(small());
            assert_eq!(feed(&mut d, order), vec![whole.clone()], "order {i}");
            assert_eq!(d.in_progress(), 0);
            assert_eq!(d.held_bytes(), 0);
            assert_eq!(d.stats().conflicts, 0);
            let Ok(Parsed::Tcp(t)) = parse_ip(&whole, true) else {
                panic!("not TCP");
            };
            assert_eq!(t.payload.len(), 3000);
        }
    }

    #[test]
    fn ipv4_reassembled_datagram_parses_as_tcp_with_a_good_checksum() {
        let whole = v4_whole(100, 0);
        let mut d = Defragmenter::new(small());
        let out = feed(&mut d, &v4_cut(&whole, &[48]));
        let Ok(Parsed::Tcp(t)) = parse_ip(&out[0], true) else {
            panic!("not TCP");
        };
        assert_eq!(t.checksum, crate::parse::ChecksumStatus::Good);
        assert_eq!(t.payload.len(), 100);
    }

    #[test]
    fn ipv4_equal_overlap_is_counted_not_a_conflict() {
        let whole = v4_whole(200, 0);
        let a = v4_frag(&whole, 0, 120, true);
        let b = v4_frag(&whole, 64, 156, false);
        let mut d = Defragmenter::new(small());
        assert_eq!(feed(&mut d, &[a, b]), vec![whole]);
        assert_eq!((d.stats().overlaps, d.stats().conflicts), (1, 0));
    }

    #[test]
    fn ipv4_unequal_overlap_keeps_the_first_copy_and_counts_a_conflict() {
        let whole = v4_whole(200, 0);
        let a = v4_frag(&whole, 64, 156, false);
        let mut b = v4_frag(&whole, 0, 120, true);
        // Change bytes 100..110 of the payload in the later copy.
        for x in &mut b[20 + 100..20 + 110] {
            *x ^= 0xff;
        }
        // Bytes 0..64 of the later fragment are new, 64..120 overlap: the first copy wins.
        let mut d = Defragmenter::new(small());
        assert_eq!(feed(&mut d, &[a, b]), vec![whole]);
        assert_eq!((d.stats().overlaps, d.stats().conflicts), (1, 1));
    }

    #[test]
    fn ipv4_df_with_mf_reassembles_and_keeps_df() {
        let whole = v4_whole(300, 0x4000);
        let mut d = Defragmenter::new(small());
        let out = feed(&mut d, &v4_cut(&whole, &[160]));
        assert_eq!(out, vec![whole.clone()]);
        assert_eq!(be16(&out[0], 6), 0x4000);
        // Don't-fragment alone is no fragment.
        assert!(d.push(0, &whole).is_none());
        assert_eq!(d.stats().unreadable, 1);
        // The reserved bit survives too; offset and more-fragments go.
        let whole = v4_whole(300, 0x8000 | 0x4000);
        assert_eq!(feed(&mut d, &v4_cut(&whole, &[160])), vec![whole]);
        check_invariants(&d);
    }

    #[test]
    fn ipv6_with_extension_headers_before_and_after_the_fragment_header() {
        let (whole, unfrag, nh_pos) = v6_whole(2000);
        let frags = v6_cut(&whole, unfrag, nh_pos, &[1232]);
        for order in [frags.clone(), frags.iter().rev().cloned().collect()] {
            let mut d = Defragmenter::new(small());
            let out = feed(&mut d, &order);
            assert_eq!(out, vec![whole.clone()]);
            let Ok(Parsed::Tcp(t)) = parse_ip(&out[0], true) else {
                panic!("not TCP");
            };
            assert_eq!(t.checksum, crate::parse::ChecksumStatus::Good);
            assert_eq!(t.payload.len(), 2000);
        }
        // No header before the fragment header at all.
        let p = v6_packet(PROTO_TCP, &[], &tcp_seg(&[5u8; 500]));
        let mut d = Defragmenter::new(small());
        assert_eq!(feed(&mut d, &v6_cut(&p, 40, 6, &[256])), vec![p]);
    }

    #[test]
    fn ipv6_duplicate_is_ignored_and_overlap_drops_the_datagram() {
        let (whole, unfrag, nh_pos) = v6_whole(1000);
        let frags = v6_cut(&whole, unfrag, nh_pos, &[512]);
        let mut d = Defragmenter::new(small());
        let out = feed(
            &mut d,
            &[frags[0].clone(), frags[0].clone(), frags[1].clone()],
        );
        assert_eq!(out, vec![whole.clone()]);
        assert_eq!(d.stats().drop_overlap, 0);
        // A piece overlapping the first by 8 bytes with the same bytes: RFC 5722 drops it all,
        // and the fragments after it are discarded too.
        let overlapping = v6_frag(
            &whole,
            unfrag,
            nh_pos,
            504,
            whole.len() - unfrag - 504,
            false,
        );
        let mut d = Defragmenter::new(small());
        assert!(feed(&mut d, &[frags[0].clone(), overlapping, frags[1].clone()]).is_empty());
        let s = *d.stats();
        assert_eq!(
            (s.drop_overlap, s.overlaps, s.conflicts, s.late),
            (1, 1, 0, 1)
        );
        assert_eq!(s.fragments_dropped, 3);
        assert_eq!(d.held_bytes(), 0);
        // A same-size repeat with other bytes is a conflict, and fatal too.
        let mut other = frags[0].clone();
        let last = other.len() - 1;
        other[last] ^= 1;
        let mut d = Defragmenter::new(small());
        assert!(feed(&mut d, &[frags[0].clone(), other]).is_empty());
        assert_eq!((d.stats().drop_overlap, d.stats().conflicts), (1, 1));
    }

    #[test]
    fn ipv6_atomic_fragment_is_a_whole_datagram_at_once() {
        let (whole, unfrag, nh_pos) = v6_whole(64);
        let atomic = v6_frag(&whole, unfrag, nh_pos, 0, whole.len() - unfrag, false);
        let mut d = Defragmenter::new(small());
        assert_eq!(feed(&mut d, &[atomic]), vec![whole]);
        assert_eq!(d.in_progress(), 0);
    }

    #[test]
    fn memory_cap_drops_the_oldest_then_the_one_that_cannot_fit() {
        let cfg = DefragConfig {
            memory_bytes: 8 * BLOCK,
            ..small()
        };
        let mut d = Defragmenter::new(cfg);
        // Three datagrams whose first 2 KiB (2 blocks + a header block) are in: the third
        // needs room, so the oldest goes.
        let wholes: Vec<Vec<u8>> = (0..3).map(|i| v4_whole_id(4000, 0, i)).collect();
        for w in &wholes {
            assert!(d.push(0, &v4_frag(w, 0, 2048, true)).is_none());
            check_invariants(&d);
        }
        assert_eq!(d.stats().drop_memory, 1);
        assert_eq!(d.in_progress(), 2);
        // The second and third complete.
        for w in &wholes[1..] {
            let out = d.push(0, &v4_frag(w, 2048, w.len() - 20 - 2048, false));
            assert_eq!(out, Some(&w[..]));
        }
        // A datagram larger than the whole arena is dropped alone.
        let big = v4_whole(9000, 0);
        assert!(feed(&mut d, &v4_cut(&big, &[4096])).is_empty());
        assert_eq!(d.stats().drop_memory, 2);
        assert_eq!(d.held_bytes(), 0);
        check_invariants(&d);
    }

    #[test]
    fn timeout_runs_on_capture_time_from_the_first_fragment() {
        let whole = v4_whole(1000, 0);
        let frags = v4_cut(&whole, &[504]);
        let mut d = Defragmenter::new(small());
        assert!(d.push(10 * SEC, &frags[0]).is_none());
        // 29.9 s later: still in time.
        d.expire(39 * SEC + SEC / 2);
        assert_eq!(d.in_progress(), 1);
        assert_eq!(d.push(39 * SEC + SEC / 2, &frags[1]), Some(&whole[..]));
        // Again, but the second piece comes 30 s after the first: too late, and it starts a
        // datagram of its own, which the clock (a tick) ends.
        assert!(d.push(100 * SEC, &frags[0]).is_none());
        assert!(d.push(130 * SEC, &frags[1]).is_none());
        assert_eq!(d.stats().drop_timeout, 1);
        d.expire(160 * SEC);
        assert_eq!(d.stats().drop_timeout, 2);
        assert_eq!(d.in_progress(), 0);
        // Time going backwards does not rewind the clock.
        assert!(d.push(5 * SEC, &frags[0]).is_none());
        d.expire(190 * SEC);
        assert_eq!(d.stats().drop_timeout, 3);
        check_invariants(&d);
        assert!(d.push(0, &frags[0]).is_none());
        d.finish();
        assert_eq!(d.stats().drop_timeout, 4);
        check_invariants(&d);
    }

    #[test]
    fn most_datagrams_in_progress_drops_the_oldest() {
        let cfg = DefragConfig {
            max_datagrams: 2,
            ..small()
        };
        let mut d = Defragmenter::new(cfg);
        let wholes: Vec<Vec<u8>> = (0..3).map(|i| v4_whole_id(100, 0, i)).collect();
        for w in &wholes {
            assert!(d.push(0, &v4_frag(w, 0, 48, true)).is_none());
        }
        assert_eq!(d.stats().drop_datagrams, 1);
        assert_eq!(d.in_progress(), 2);
        // The first is gone: its last piece starts a new datagram (dropping the second).
        assert!(d.push(0, &v4_frag(&wholes[0], 48, 72, false)).is_none());
        assert_eq!(d.stats().drop_datagrams, 2);
        let out = d.push(0, &v4_frag(&wholes[2], 48, 72, false));
        assert_eq!(out, Some(&wholes[2][..]));
        check_invariants(&d);
    }

    #[test]
    fn bogus_offsets_and_ends_drop_the_datagram() {
        let whole = v4_whole(1000, 0);
        let n = whole.len() - 20;
        let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
            (
                "past the known end",
                vec![
                    v4_frag(&whole, 512, n - 512, false),
                    at_offset(v4_frag(&whole, 0, 16, true), n - 8),
                ],
            ),
            (
                "a second last fragment with another end",
                vec![
                    v4_frag(&whole, 512, n - 512, false),
                    v4_frag(&whole, 512, 16, false),
                ],
            ),
            (
                "a last fragment below bytes held",
                vec![
                    v4_frag(&whole, 0, 512, true),
                    v4_frag(&whole, 256, 16, false),
                ],
            ),
            (
                "not the last, and not a multiple of 8",
                vec![v4_frag(&whole, 0, 500, true)],
            ),
        ];
        for (what, frags) in cases {
            let mut d = Defragmenter::new(small());
            assert!(feed(&mut d, &frags).is_empty(), "{what}");
            assert_eq!(d.stats().drop_bogus, 1, "{what}");
            assert_eq!(d.held_bytes(), 0, "{what}");
            // The rest of the datagram is discarded as late.
            assert!(d.push(0, &v4_frag(&whole, 0, 512, true)).is_none());
            assert_eq!(d.stats().late, 1, "{what}");
            check_invariants(&d);
        }
    }

    #[test]
    fn datagrams_past_65535_bytes_are_bogus() {
        // A last fragment at offset 65480 with 100 bytes: 20 + 65580 > 65535 (ping of death).
        let mut p = v4_frag(&v4_whole(100, 0), 0, 100, false);
        p[6..8].copy_from_slice(&(65480u16 / 8).to_be_bytes());
        let mut d = Defragmenter::new(small());
        assert!(d.push(0, &p).is_none());
        assert_eq!(d.stats().drop_bogus, 1);
        // Just fitting is fine (as far as the offset check goes): 20 + 65512 + 3.
        let mut p = v4_frag(&v4_whole(100, 0), 0, 3, false);
        p[4] = 9;
        p[6..8].copy_from_slice(&(65512u16 / 8).to_be_bytes());
        assert!(d.push(0, &p).is_none());
        assert_eq!(d.stats().drop_bogus, 1);
        // IPv6: the offset field's largest value plus a few bytes.
        let (whole, unfrag, nh_pos) = v6_whole(100);
        let mut p = v6_frag(&whole, unfrag, nh_pos, 0, 16, false);
        p[unfrag + 2..unfrag + 4].copy_from_slice(&0xfff8u16.to_be_bytes());
        assert!(d.push(0, &p).is_none());
        assert_eq!(d.stats().drop_bogus, 2);
        check_invariants(&d);
    }

    #[test]
    fn empty_and_tiny_tcp_fragments_are_dropped() {
        let whole = v4_whole(100, 0);
        let cases = [
            v4_frag(&whole, 0, 0, true),
            v4_frag(&whole, 0, 8, true),
            v4_frag(&whole, 8, 112, false),
        ];
        for f in &cases {
            let mut d = Defragmenter::new(small());
            assert!(d.push(0, f).is_none());
            assert_eq!(d.stats().drop_tiny, 1);
            check_invariants(&d);
        }
        // Not TCP: a small first piece is fine.
        let mut f = v4_frag(&whole, 0, 8, true);
        f[9] = 17;
        let mut l = v4_frag(&whole, 8, 112, false);
        l[9] = 17;
        let mut d = Defragmenter::new(small());
        let out = feed(&mut d, &[f, l]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0][20..], whole[20..]);
    }

    #[test]
    fn a_fragment_cut_by_the_snap_length_drops_its_datagram() {
        let whole = v4_whole(1000, 0);
        let frags = v4_cut(&whole, &[512]);
        let mut d = Defragmenter::new(small());
        assert!(d.push(0, &frags[0]).is_none());
        assert!(d.push(0, &frags[1][..100]).is_none());
        assert_eq!(d.stats().drop_truncated, 1);
        assert_eq!(d.stats().fragments_dropped, 2);
        // Unreadable bytes are counted on their own.
        assert!(d.push(0, &[0x45, 0, 0]).is_none());
        assert!(d.push(0, &[]).is_none());
        assert_eq!(d.stats().unreadable, 2);
        check_invariants(&d);
    }

    #[test]
    fn too_many_holes_drop_the_datagram() {
        let whole = v4_whole(2000, 0);
        let mut d = Defragmenter::new(small());
        // Every other 16-byte piece: islands that never touch.
        for i in 0..MAX_ISLANDS {
            assert!(d.push(0, &v4_frag(&whole, 32 + i * 32, 16, true)).is_none());
        }
        assert_eq!(d.stats().drop_holes, 0);
        assert!(d
            .push(0, &v4_frag(&whole, 32 + MAX_ISLANDS * 32, 16, true))
            .is_none());
        assert_eq!(d.stats().drop_holes, 1);
        check_invariants(&d);
    }

    #[test]
    fn interleaved_datagrams_reassemble_apart() {
        let a = v4_whole(1500, 0);
        let b = v4_whole_id(1500, 0, 1);
        let (fa, fb) = (v4_cut(&a, &[512, 1024]), v4_cut(&b, &[512, 1024]));
        let mut d = Defragmenter::new(small());
        let order = [&fa[2], &fb[0], &fa[0], &fb[2], &fb[1], &fa[1]];
        let out: Vec<Vec<u8>> = order
            .iter()
            .filter_map(|f| d.push(0, f).map(<[u8]>::to_vec))
            .collect();
        assert_eq!(out, vec![b, a]);
    }

    /// A payload length and cut points (multiples of 8, at least 16 apart, as TCP's first
    /// fragment must hold its flags).
    fn cut_plan() -> impl Strategy<Value = (usize, Vec<usize>)> {
        (40usize..4000).prop_flat_map(|n| {
            let max_cuts = (n + 20) / 16;
            (
                Just(n),
                proptest::collection::btree_set(2usize..(n + 20) / 8, 1..max_cuts.min(24)),
            )
                .prop_map(|(n, set)| {
                    let mut cuts = Vec::new();
                    for c in set.into_iter().map(|c| c * 8) {
                        if c >= cuts.last().copied().unwrap_or(0) + 16 && c < n + 20 {
                            cuts.push(c);
                        }
                    }
                    (n, cuts)
                })
        })
    }

    proptest! {
        /// A datagram cut anywhere, shuffled, with repeats, comes back whole, once.
        #[test]
        fn any_cut_in_any_order_reassembles(
            (n, cuts) in cut_plan(),
            v6 in any::<bool>(),
            order in proptest::collection::vec(any::<u32>(), 64),
            dups in proptest::collection::vec(any::<u8>(), 0..6),
        ) {
            let (whole, frags) = if v6 {
                let (w, unfrag, nh_pos) = v6_whole(n);
                let f = v6_cut(&w, unfrag, nh_pos, &cuts);
                (w, f)
            } else {
                let w = v4_whole(n, 0);
                let f = v4_cut(&w, &cuts);
                (w, f)
            };
            let mut seq: Vec<usize> = (0..frags.len()).collect();
            seq.sort_by_key(|&i| order[i % order.len()] ^ i as u32);
            // Duplicates go after the last original piece, so they cannot start a new datagram.
            let mut d = Defragmenter::new(small());
            let mut out = Vec::new();
            for &i in &seq {
                if let Some(dg) = d.push(0, &frags[i]) {
                    out.push(dg.to_vec());
                }
                for &k in &dups {
                    if usize::from(k) % frags.len() == i && out.is_empty() {
                        prop_assert!(d.push(0, &frags[i]).is_none());
                    }
                }
                check_invariants(&d);
            }
            prop_assert_eq!(out, vec![whole]);
            prop_assert_eq!(d.stats().conflicts, 0);
            prop_assert_eq!(d.held_bytes(), 0);
            prop_assert_eq!(d.in_progress(), 0);
        }

        /// Random fragments of a few datagrams, at random times, under tight limits: the
        /// arena and the datagram count are never exceeded, and every fragment is accounted
        /// for.
        #[test]
        fn limits_hold_under_random_fragments(
            frags in proptest::collection::vec(
                (0u8..6, 0u16..200, 1usize..3000, any::<bool>(), any::<bool>(), 0u64..5),
                1..200,
            ),
            memory_blocks in 0usize..12,
            max_datagrams in 1usize..5,
        ) {
            let cfg = DefragConfig {
                memory_bytes: memory_blocks * BLOCK,
                max_datagrams,
                timeout_ns: 3 * SEC,
            };
            let mut d = Defragmenter::new(cfg);
            let base = v4_whole(3000, 0);
            let (w6, unfrag, nh_pos) = v6_whole(3000);
            let mut now = 0;
            for (id, off8, len, more, v6, dt) in frags {
                now += dt * SEC / 2;
                let off = usize::from(off8) * 8;
                let len = len.min(3000 + 20 - off.min(3000)).max(1);
                let f = if v6 {
                    let mut f = v6_frag(&w6, unfrag, nh_pos, off.min(2000), len.min(1000), more);
                    f[unfrag + 7] = id;
                    f
                } else {
                    let mut f = v4_frag(&base, off.min(2000), len.min(1000), more);
                    f[5] = id;
                    f
                };
                let _ = d.push(now, &f);
                check_invariants(&d);
            }
            d.finish();
            prop_assert_eq!(d.held_bytes(), 0);
            check_invariants(&d);
        }
    }
}
