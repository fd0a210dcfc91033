//! Pairs truth half-streams with ours.
//!
//! The rule, per directed endpoint pair (src, dst), never looking at the c2s/s2c labels
//! (a midstream flow's roles are a guess, and ours may differ from Wireshark's):
//!
//! 1. **ISN.** A truth row with `isn_src` takes our unmatched half-stream of the same pair
//!    with the same ISN (one whose bytes and hash are equal if several have that ISN, else
//!    the first in start order). Our empty half-streams take part here: an ISN identifies
//!    the connection, so "we reassembled nothing" is a real mismatch, not a missing row.
//! 2. **Start order.** The remaining truth rows (in `stream` order) and our remaining
//!    half-streams that carry payload (in `flows.jsonl` line order; empty ones are skipped
//!    because the truth lists only directions with payload) are aligned in order, keeping
//!    order on both sides while maximising the pairs whose bytes and hash are equal (a
//!    longest common subsequence). Between two such equal pairs, the leftovers are paired
//!    k-th with k-th; the surplus truth rows are missing, our surplus half-streams are
//!    extras. With equally many on both sides and nothing equal this is plain k-th to k-th.
//!
//! A pair is a match when bytes and SHA-256 are equal.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::flows::HalfStream;
use crate::truth::TruthRow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedBy {
    Isn,
    Order,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Same length and hash; `ours` indexes our half-streams.
    Match { ours: usize, by: MatchedBy },
    /// Paired with one of ours whose content differs.
    Mismatch { ours: usize, by: MatchedBy },
    /// No half-stream of ours was paired with the truth row.
    Missing,
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Match { .. } => "match",
            Outcome::Mismatch { .. } => "mismatch",
            Outcome::Missing => "missing",
        }
    }

    pub fn is_match(&self) -> bool {
        matches!(self, Outcome::Match { .. })
    }

    pub fn ours(&self) -> Option<usize> {
        match *self {
            Outcome::Match { ours, .. } | Outcome::Mismatch { ours, .. } => Some(ours),
            Outcome::Missing => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// One outcome per truth row, in the truth's order.
    pub outcomes: Vec<Outcome>,
    /// Our half-streams with payload that no truth row took, in start order.
    pub extras: Vec<usize>,
}

fn same_content(t: &TruthRow, o: &HalfStream) -> bool {
    t.bytes == o.bytes && t.sha256.eq_ignore_ascii_case(&o.sha256)
}

type Pair = (SocketAddr, SocketAddr);

pub fn compare(truth: &[TruthRow], ours: &[HalfStream]) -> Comparison {
    let mut groups: BTreeMap<Pair, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    for (i, t) in truth.iter().enumerate() {
        groups.entry((t.src, t.dst)).or_default().0.push(i);
    }
    for (i, o) in ours.iter().enumerate() {
        groups.entry((o.src, o.dst)).or_default().1.push(i);
    }

    let mut outcomes = vec![Outcome::Missing; truth.len()];
    let mut taken = vec![false; ours.len()];
    let mut pair = |ti: usize, oi: usize, by: MatchedBy, taken: &mut Vec<bool>| {
        taken[oi] = true;
        outcomes[ti] = if same_content(&truth[ti], &ours[oi]) {
            Outcome::Match { ours: oi, by }
        } else {
            Outcome::Mismatch { ours: oi, by }
        };
    };

    for (mut t_idx, mut o_idx) in groups.into_values() {
        // Stable: rows of one stream keep the file's order.
        t_idx.sort_by_key(|&i| truth[i].stream);
        o_idx.sort_by_key(|&i| (ours[i].flow, i));

        let mut t_left = Vec::new();
        for &ti in &t_idx {
            let Some(isn) = truth[ti].isn_src else {
                t_left.push(ti);
                continue;
            };
            let same_isn = o_idx
                .iter()
                .copied()
                .filter(|&oi| !taken[oi] && ours[oi].isn == Some(isn));
            let best = same_isn
                .clone()
                .find(|&oi| same_content(&truth[ti], &ours[oi]))
                .or_else(|| same_isn.clone().next());
            match best {
                Some(oi) => pair(ti, oi, MatchedBy::Isn, &mut taken),
                None => t_left.push(ti),
            }
        }
        o_idx.retain(|&oi| !taken[oi] && ours[oi].bytes > 0);

        for (ti, oi) in align(&t_left, &o_idx, |ti, oi| {
            same_content(&truth[ti], &ours[oi])
        }) {
            pair(ti, oi, MatchedBy::Order, &mut taken);
        }
    }

    let extras = (0..ours.len())
        .filter(|&oi| !taken[oi] && ours[oi].bytes > 0)
        .collect();
    Comparison { outcomes, extras }
}

/// Order-preserving alignment of `t` with `o`: a longest common subsequence under `equal`,
/// then the leftovers between consecutive common pairs zipped in order.
fn align(t: &[usize], o: &[usize], equal: impl Fn(usize, usize) -> bool) -> Vec<(usize, usize)> {
    let (n, m) = (t.len(), o.len());
    // lcs[i][j]: length of the LCS of t[i..] and o[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if equal(t[i], o[j]) {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    let (mut gap_t, mut gap_o) = (Vec::new(), Vec::new());
    let flush = |gap_t: &mut Vec<usize>, gap_o: &mut Vec<usize>, out: &mut Vec<(usize, usize)>| {
        out.extend(gap_t.iter().copied().zip(gap_o.iter().copied()));
        gap_t.clear();
        gap_o.clear();
    };
    while i < n && j < m {
        if equal(t[i], o[j]) && lcs[i][j] == lcs[i + 1][j + 1] + 1 {
            flush(&mut gap_t, &mut gap_o, &mut out);
            out.push((t[i], o[j]));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            gap_t.push(t[i]);
            i += 1;
        } else {
            gap_o.push(o[j]);
            j += 1;
        }
    }
    gap_t.extend_from_slice(&t[i..]);
    gap_o.extend_from_slice(&o[j..]);
    flush(&mut gap_t, &mut gap_o, &mut out);
    out
}

/// Our half-streams of a directed pair, in start order: what a developer wants to see
/// next to a truth row that did not match.
pub fn candidates(
    ours: &[HalfStream],
    src: SocketAddr,
    dst: SocketAddr,
) -> impl Iterator<Item = (usize, &HalfStream)> {
    ours.iter()
        .enumerate()
        .filter(move |(_, o)| o.src == src && o.dst == dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::parse_endpoint;

    fn truth(
        stream: u32,
        src: &str,
        dst: &str,
        isn: Option<u32>,
        bytes: u64,
        sha: &str,
    ) -> TruthRow {
        TruthRow {
            stream,
            dir: "c2s".into(),
            src: parse_endpoint(src).unwrap(),
            dst: parse_endpoint(dst).unwrap(),
            isn_src: isn,
            bytes,
            sha256: sha.into(),
            lost: 0,
            agree: "tshark=tcpflow".into(),
        }
    }

    fn ours(
        flow: usize,
        label: &'static str,
        src: &str,
        dst: &str,
        isn: Option<u32>,
        bytes: u64,
        sha: &str,
    ) -> HalfStream {
        HalfStream {
            flow,
            label,
            src: parse_endpoint(src).unwrap(),
            dst: parse_endpoint(dst).unwrap(),
            isn,
            bytes,
            sha256: sha.into(),
            lost: 0,
            sha1: String::new(),
            client_guessed: false,
            file: None,
        }
    }

    const A: &str = "10.0.0.1:1000";
    const B: &str = "10.0.0.2:80";

    #[test]
    fn isn_decides_over_order() {
        // Two connections on one 4-tuple; ours are listed in the opposite order.
        let t = [
            truth(0, A, B, Some(100), 5, "aa"),
            truth(1, A, B, Some(200), 6, "bb"),
        ];
        let o = [
            ours(0, "c2s", A, B, Some(200), 6, "bb"),
            ours(1, "c2s", A, B, Some(100), 5, "aa"),
        ];
        let c = compare(&t, &o);
        assert_eq!(
            c.outcomes[0],
            Outcome::Match {
                ours: 1,
                by: MatchedBy::Isn
            }
        );
        assert_eq!(
            c.outcomes[1],
            Outcome::Match {
                ours: 0,
                by: MatchedBy::Isn
            }
        );
        assert!(c.extras.is_empty());
    }

    #[test]
    fn isn_match_with_empty_stream_is_a_mismatch() {
        let t = [truth(0, A, B, Some(100), 5, "aa")];
        let o = [ours(0, "c2s", A, B, Some(100), 0, "e3")];
        assert_eq!(
            compare(&t, &o).outcomes[0],
            Outcome::Mismatch {
                ours: 0,
                by: MatchedBy::Isn
            }
        );
    }

    #[test]
    fn start_order_without_isn() {
        let t = [truth(0, A, B, None, 5, "aa"), truth(3, A, B, None, 6, "bb")];
        let o = [
            ours(0, "c2s", A, B, None, 5, "aa"),
            ours(1, "c2s", A, B, None, 7, "cc"),
        ];
        let c = compare(&t, &o);
        assert_eq!(
            c.outcomes[0],
            Outcome::Match {
                ours: 0,
                by: MatchedBy::Order
            }
        );
        assert_eq!(
            c.outcomes[1],
            Outcome::Mismatch {
                ours: 1,
                by: MatchedBy::Order
            }
        );
    }

    #[test]
    fn midstream_swapped_labels_still_match() {
        // We guessed B as the client; the truth says A. Labels must not matter.
        let t = [truth(0, A, B, None, 5, "aa"), truth(0, B, A, None, 9, "bb")];
        let o = [
            ours(0, "c2s", B, A, None, 9, "bb"),
            ours(0, "s2c", A, B, None, 5, "aa"),
        ];
        let c = compare(&t, &o);
        assert!(c.outcomes.iter().all(Outcome::is_match), "{c:?}");
    }

    #[test]
    fn empty_half_streams_are_skipped_when_aligning() {
        // Our first connection on the pair carried nothing one way; the truth omits it.
        let t = [truth(1, A, B, None, 5, "aa")];
        let o = [
            ours(0, "c2s", A, B, None, 0, "e3"),
            ours(1, "c2s", A, B, None, 5, "aa"),
        ];
        let c = compare(&t, &o);
        assert_eq!(
            c.outcomes[0],
            Outcome::Match {
                ours: 1,
                by: MatchedBy::Order
            }
        );
        assert!(c.extras.is_empty());
    }

    #[test]
    fn unequal_counts_align_on_equal_hashes() {
        // We split one truth connection in two or saw an extra one: the equal pair wins,
        // the rest is an extra, not a chain of mismatches.
        let t = [truth(0, A, B, None, 5, "aa"), truth(1, A, B, None, 6, "bb")];
        let o = [
            ours(0, "c2s", A, B, None, 2, "xx"),
            ours(1, "c2s", A, B, None, 5, "aa"),
            ours(2, "c2s", A, B, None, 6, "bb"),
        ];
        let c = compare(&t, &o);
        assert!(c.outcomes.iter().all(Outcome::is_match), "{c:?}");
        assert_eq!(c.extras, vec![0]);
    }

    #[test]
    fn ipv6_spellings_are_normalised() {
        let t = [truth(
            0,
            "[2001:db8::1]:5",
            "[2001:DB8:0::2]:80",
            None,
            1,
            "AA",
        )];
        let o = [ours(
            0,
            "c2s",
            "[2001:0db8:0::1]:5",
            "[2001:db8::2]:80",
            None,
            1,
            "aa",
        )];
        assert!(compare(&t, &o).outcomes[0].is_match());
    }

    #[test]
    fn missing_and_extra() {
        let t = [truth(0, A, B, None, 5, "aa")];
        let o = [ours(0, "c2s", B, A, None, 5, "aa")];
        let c = compare(&t, &o);
        assert_eq!(c.outcomes[0], Outcome::Missing);
        assert_eq!(c.extras, vec![0]);
    }

    #[test]
    fn unmatched_isn_falls_back_to_order() {
        let t = [truth(0, A, B, Some(1), 5, "aa")];
        let o = [ours(0, "c2s", A, B, Some(2), 5, "aa")];
        assert_eq!(
            compare(&t, &o).outcomes[0],
            Outcome::Match {
                ours: 0,
                by: MatchedBy::Order
            }
        );
    }
}
