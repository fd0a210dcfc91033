//! Overlap policies: which copy of a byte a stream keeps when a segment overlaps out-of-order
//! data the stream already holds.
//!
//! Bytes before a stream's tail are in order: a real host has already handed them to its
//! application, so no policy rewrites them (a retransmission that differs there is only
//! reported). A policy decides between a new segment and the out-of-order data held past the
//! tail, including a segment that fills the hole before that data and runs into it.
//!
//! The held data is compared island by island: each island (a maximal run of held bytes past
//! the tail, [`MOS_FRAGINFO_*`](super::reassembly::Stream::fragments)) counts as one held
//! segment `[start, end)`. The rules and where this differs from a stack that keeps every
//! segment apart are in `docs/REASSEMBLY.md`.

use shm_layout::layout::overlap_policy as code;

/// How a stream resolves a segment that overlaps held out-of-order data (`--overlap`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum OverlapPolicy {
    /// The held bytes always stay (mOS's `MOS_OVERLAP_POLICY_FIRST`).
    #[default]
    #[value(help = "the held copy stays (mOS's MOS_OVERLAP_POLICY_FIRST)")]
    First,
    /// The new bytes always replace held out-of-order bytes (`MOS_OVERLAP_POLICY_LAST`).
    #[value(help = "the new copy wins (MOS_OVERLAP_POLICY_LAST)")]
    Last,
    /// The new bytes win over held data that starts after the new segment, or starts where it
    /// starts and ends before it ends.
    #[value(
        help = "the new copy wins where it starts before the held data, or at the same byte and ends after it"
    )]
    Linux,
    /// The new bytes win over held data that starts after the new segment.
    #[value(help = "the new copy wins where it starts before the held data")]
    Bsd,
    /// The rule of [`OverlapPolicy::Bsd`]: the published descriptions give Windows the same
    /// overlap behaviour.
    #[value(help = "the bsd rule, which the published descriptions give Windows too")]
    Windows,
}

impl OverlapPolicy {
    /// Every policy, in code order.
    pub const ALL: [OverlapPolicy; 5] = [
        OverlapPolicy::First,
        OverlapPolicy::Last,
        OverlapPolicy::Linux,
        OverlapPolicy::Bsd,
        OverlapPolicy::Windows,
    ];

    /// Whether the new segment `[new_start, new_end)` replaces the bytes it shares with held
    /// out-of-order data `[held_start, held_end)` (both stream offsets).
    #[inline]
    pub fn new_wins(self, new_start: u64, new_end: u64, held_start: u64, held_end: u64) -> bool {
        match self {
            OverlapPolicy::First => false,
            OverlapPolicy::Last => true,
            OverlapPolicy::Linux => {
                new_start < held_start || (new_start == held_start && new_end > held_end)
            }
            OverlapPolicy::Bsd | OverlapPolicy::Windows => new_start < held_start,
        }
    }

    /// The code published in the shared-memory header
    /// ([`shm_layout::layout::overlap_policy`]).
    pub fn code(self) -> u64 {
        match self {
            OverlapPolicy::First => code::FIRST,
            OverlapPolicy::Last => code::LAST,
            OverlapPolicy::Linux => code::LINUX,
            OverlapPolicy::Bsd => code::BSD,
            OverlapPolicy::Windows => code::WINDOWS,
        }
    }

    /// The name `--overlap` takes.
    pub fn name(self) -> &'static str {
        match self {
            OverlapPolicy::First => "first",
            OverlapPolicy::Last => "last",
            OverlapPolicy::Linux => "linux",
            OverlapPolicy::Bsd => "bsd",
            OverlapPolicy::Windows => "windows",
        }
    }
}

/// Table-driven tests written from the published descriptions of each target's behaviour, not
/// from [`OverlapPolicy::new_wins`]: each lists the segments sent and the stream each policy
/// must produce.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::reassembly::{ReadChunk, Stream};
    use crate::tcp::ring_pool::RingPool;

    /// Offset 0 is 6 below 2^32: the tests' streams cross the sequence wrap.
    const ISN1: u32 = u32::MAX - 5;

    /// The outcome of sending `segments` (offset, bytes) in order: the whole stream, which the
    /// last segment must complete, and each segment's conflict span.
    fn send(policy: OverlapPolicy, segments: &[(u64, &[u8])]) -> (String, Vec<Option<(u64, u32)>>) {
        let mut pool = RingPool::for_tests(1024, 1);
        let mut s = Stream::new();
        s.anchor(ISN1);
        let mut conflicts = Vec::new();
        for &(off, data) in segments {
            let seq = ISN1.wrapping_add(off as u32);
            let o = s.insert(&mut pool, seq, data, data.len() as u32, policy);
            assert_eq!((o.dropped_bytes, o.gap, o.overflow), (0, None, None));
            conflicts.push(o.conflict);
        }
        assert_eq!(s.fragments(&pool).count(), 0, "{policy:?}: holes remain");
        let mut buf = vec![0; s.tail() as usize];
        assert_eq!(s.read(&pool, 0, &mut buf), ReadChunk::Data(buf.len()));
        (String::from_utf8(buf).unwrap(), conflicts)
    }

    /// Expected streams, in the order first, last, linux, bsd (windows shares bsd's).
    fn check(segments: &[(u64, &[u8])], expected: [&str; 4]) {
        for policy in OverlapPolicy::ALL {
            let want = match policy {
                OverlapPolicy::First => expected[0],
                OverlapPolicy::Last => expected[1],
                OverlapPolicy::Linux => expected[2],
                OverlapPolicy::Bsd | OverlapPolicy::Windows => expected[3],
            };
            assert_eq!(send(policy, segments).0, want, "{policy:?} on {segments:?}");
        }
    }

    #[test]
    fn codes_are_distinct_and_first_is_mos_default() {
        assert_eq!(OverlapPolicy::default(), OverlapPolicy::First);
        let codes: Vec<u64> = OverlapPolicy::ALL.iter().map(|p| p.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4]);
        let names: Vec<&str> = OverlapPolicy::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(names, ["first", "last", "linux", "bsd", "windows"]);
    }

    /// One held island `[10, 20)` of H, a new segment of N in each position against it, then
    /// the bytes before both in order. Nine cases: the new segment starts before, at or after
    /// the held one, and ends before, at or after its end.
    #[test]
    fn one_new_segment_against_one_held_segment() {
        let held: (u64, &[u8]) = (10, b"HHHHHHHHHH");
        #[rustfmt::skip]
        let cases: [(u64, u64, [&str; 4]); 9] = [
            // Starts before.
            (5, 15, [".....NNNNNHHHHHHHHHH", ".....NNNNNNNNNNHHHHH",
                     ".....NNNNNNNNNNHHHHH", ".....NNNNNNNNNNHHHHH"]),
            (5, 20, [".....NNNNNHHHHHHHHHH", ".....NNNNNNNNNNNNNNN",
                     ".....NNNNNNNNNNNNNNN", ".....NNNNNNNNNNNNNNN"]),
            (5, 25, [".....NNNNNHHHHHHHHHHNNNNN", ".....NNNNNNNNNNNNNNNNNNNN",
                     ".....NNNNNNNNNNNNNNNNNNNN", ".....NNNNNNNNNNNNNNNNNNNN"]),
            // Starts at the same byte.
            (10, 15, ["..........HHHHHHHHHH", "..........NNNNNHHHHH",
                      "..........HHHHHHHHHH", "..........HHHHHHHHHH"]),
            (10, 20, ["..........HHHHHHHHHH", "..........NNNNNNNNNN",
                      "..........HHHHHHHHHH", "..........HHHHHHHHHH"]),
            (10, 25, ["..........HHHHHHHHHHNNNNN", "..........NNNNNNNNNNNNNNN",
                      "..........NNNNNNNNNNNNNNN", "..........HHHHHHHHHHNNNNN"]),
            // Starts after.
            (12, 18, ["..........HHHHHHHHHH", "..........HHNNNNNNHH",
                      "..........HHHHHHHHHH", "..........HHHHHHHHHH"]),
            (12, 20, ["..........HHHHHHHHHH", "..........HHNNNNNNNN",
                      "..........HHHHHHHHHH", "..........HHHHHHHHHH"]),
            (15, 25, ["..........HHHHHHHHHHNNNNN", "..........HHHHHNNNNNNNNNN",
                      "..........HHHHHHHHHHNNNNN", "..........HHHHHHHHHHNNNNN"]),
        ];
        for (s, e, expected) in cases {
            let new = vec![b'N'; (e - s) as usize];
            let filler = vec![b'.'; s.min(10) as usize];
            let segments = [held, (s, &new[..]), (0, &filler[..])];
            check(&segments, expected);
            // The differing span is reported under every policy, whichever copy won.
            let (lo, hi) = (s.max(10), e.min(20));
            for policy in OverlapPolicy::ALL {
                let (_, conflicts) = send(policy, &segments);
                assert_eq!(conflicts, [None, Some((lo, (hi - lo) as u32)), None]);
            }
        }
    }

    /// Overlapping out-of-order segments of distinct letters, sent before the first bytes:
    /// each rule leaves a different stream. The last segment fills the hole at the start and
    /// runs one byte into the held data.
    #[test]
    fn letters_pattern_tells_the_policies_apart() {
        let segments: [(u64, &[u8]); 7] = [
            (4, b"AAAA"),    // held [4, 8)
            (12, b"BBBB"),   // held [12, 16)
            (6, b"CCCC"),    // starts inside [4, 8), ends past it
            (12, b"DDDDDD"), // starts with [12, 16), ends past it
            (10, b"EEEE"),   // joins [4, 10), starts before [12, 18)
            (2, b"FFF"),     // starts before [4, 18)
            (0, b"GGG"),     // in order, one byte into [2, 18)
        ];
        let expected = [
            "GGFFAAAACCEEBBBBDD",
            "GGGFFACCCCEEEEDDDD",
            "GGGFFAAACCEEEEDDDD",
            "GGGFFAAACCEEEEBBDD",
        ];
        check(&segments, expected);
        let distinct: std::collections::HashSet<_> = expected.iter().collect();
        assert_eq!(distinct.len(), 4);
        let spans = [
            None,
            None,
            Some((6, 2)),
            Some((12, 4)),
            Some((12, 2)),
            Some((4, 1)),
            Some((2, 1)),
        ];
        for policy in OverlapPolicy::ALL {
            assert_eq!(send(policy, &segments).1, spans, "{policy:?}");
        }
    }

    /// Bytes already in order were delivered: no policy rewrites them, and a copy that
    /// differs is reported.
    #[test]
    fn in_order_bytes_never_change() {
        for policy in OverlapPolicy::ALL {
            let (stream, conflicts) = send(policy, &[(0, b"abcdef"), (2, b"XYZ")]);
            assert_eq!(stream, "abcdef", "{policy:?}");
            assert_eq!(conflicts, [None, Some((2, 3))]);
            // Partly in order: the in-order part stays, the rest extends the stream.
            let (stream, conflicts) = send(policy, &[(0, b"abcdef"), (4, b"XYgh")]);
            assert_eq!(stream, "abcdefgh", "{policy:?}");
            assert_eq!(conflicts, [None, Some((4, 2))]);
        }
    }

    /// Identical copies are retransmissions, not conflicts, under every policy.
    #[test]
    fn equal_copies_raise_no_conflict() {
        for policy in OverlapPolicy::ALL {
            let segments: [(u64, &[u8]); 4] =
                [(4, b"efgh"), (2, b"cdefghij"), (4, b"efgh"), (0, b"abcd")];
            let (stream, conflicts) = send(policy, &segments);
            assert_eq!(stream, "abcdefghij", "{policy:?}");
            assert!(conflicts.iter().all(Option::is_none), "{policy:?}");
        }
    }
}
