//! Every reference row of a capture against our dump: which references our bytes equal,
//! whether we recovered fewer bytes than a reference did, and what in
//! `tests/known-differences.md` explains a row that needs it.
//!
//! A row is a truth row, a row of `reference-disagreements.tsv`, or both (same capture,
//! Wireshark stream and directed endpoints). It needs an explanation when
//! - it is a truth row that we do not reproduce exactly (agreeing or Wireshark alone), or
//! - it is a disagreement row Wireshark has no bytes for and our bytes equal no reference, or
//! - we recovered fewer bytes than a reference did (a *deficit*): fewer captured bytes
//!   (length less lost) than Wireshark's length less its holes, or than the truth's bytes
//!   less its lost ones, or than libnids' length (libnids stops at the first hole, so all its
//!   bytes were captured); or a shorter stream than tcpflow's (tcpflow writes holes as zeros
//!   without reporting them, so only the lengths compare).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::disagreements::{DisagreementRow, Reference};
use crate::flows::{short_sha1, HalfStream};
use crate::frames::FrameIndex;
use crate::known::{KnownDifferences, RowKey, Rule};
use crate::runner::CaptureResult;

/// We recovered fewer bytes than a reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deficit {
    pub reference: Reference,
    /// What the reference recovered (captured bytes, or the length for tcpflow).
    pub theirs: u64,
    /// The same measure of ours.
    pub ours: u64,
}

/// What accepts a row that needs an explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Explained {
    /// Nothing: the test fails on this row.
    No,
    /// A row entry, at this line of known-differences.md.
    Entry(usize),
    /// A rule entry that holds on the row, at this line.
    Rule(Rule, usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowAudit {
    pub key: RowKey,
    /// Index into the capture's truth rows.
    pub truth: Option<usize>,
    /// Index into the capture's disagreement rows.
    pub disagreement: Option<usize>,
    /// Our half-stream for the row, if any.
    pub ours: Option<usize>,
    /// For a truth row: whether we reproduce it exactly.
    pub truth_match: Option<bool>,
    /// For a disagreement row: the references whose bytes ours equal (length and short
    /// SHA-1; no half-stream counts as empty).
    pub equals: Vec<Reference>,
    pub deficits: Vec<Deficit>,
    pub explained: Explained,
}

impl RowAudit {
    pub fn needs_explanation(&self) -> bool {
        self.truth_match == Some(false)
            || (self.truth_match.is_none() && self.equals.is_empty())
            || !self.deficits.is_empty()
    }

    pub fn is_unexplained(&self) -> bool {
        self.needs_explanation() && self.explained == Explained::No
    }
}

/// Our half-stream for a disagreement row that has no truth row: among ours of the same
/// directed pair that no truth row took, the one with the row's ISN, else one equal to a
/// reference, else the first with bytes, else the first.
fn pick_for_disagreement(
    d: &DisagreementRow,
    ours: &[HalfStream],
    taken: &BTreeSet<usize>,
) -> Option<usize> {
    let cands: Vec<usize> = (0..ours.len())
        .filter(|&i| !taken.contains(&i) && ours[i].src == d.src && ours[i].dst == d.dst)
        .collect();
    let equal_to_a_ref = |i: &usize| {
        Reference::ALL.iter().any(|&r| {
            d.reference(r)
                .is_some_and(|s| s.equals(ours[*i].bytes, &ours[*i].sha1))
        })
    };
    if let Some(isn) = d.isn_src {
        let same: Vec<usize> = cands
            .iter()
            .copied()
            .filter(|&i| ours[i].isn == Some(isn))
            .collect();
        if let Some(i) = same
            .iter()
            .copied()
            .find(equal_to_a_ref)
            .or(same.first().copied())
        {
            return Some(i);
        }
    }
    cands
        .iter()
        .copied()
        .find(equal_to_a_ref)
        .or_else(|| cands.iter().copied().find(|&i| ours[i].bytes > 0))
        .or(cands.first().copied())
}

/// Everything a rule may look at for one row.
struct RowView<'a> {
    src: SocketAddr,
    dst: SocketAddr,
    ours: Option<&'a HalfStream>,
    disagreement: Option<&'a DisagreementRow>,
    frames: Option<&'a FrameIndex>,
    deficits: &'a [Deficit],
}

impl RowView<'_> {
    fn our_len(&self) -> u64 {
        self.ours.map_or(0, |o| o.bytes)
    }

    fn our_sha1(&self) -> String {
        self.ours
            .map_or_else(|| short_sha1(b""), |o| o.sha1.clone())
    }
}

/// Whether `rule` holds on the row (see [`Rule`] for each one's meaning).
fn rule_holds(rule: Rule, v: &RowView<'_>) -> bool {
    let Some(frames) = v.frames else {
        return false;
    };
    let dir = frames.dir(v.src, v.dst);
    match rule {
        Rule::NotDecoded => v.ours.is_none() && dir.is_none(),
        Rule::TcpflowPaddingOnly => {
            let Some(d) = v.disagreement else {
                return false;
            };
            let empty = |r: Reference| d.reference(r).is_none_or(|s| s.len == 0);
            let Some(tcpflow) = &d.tcpflow else {
                return false;
            };
            v.our_len() == 0
                && empty(Reference::Tshark)
                && empty(Reference::Libnids)
                && tcpflow.len > 0
                && dir.is_some_and(|f| {
                    f.empty_segment_trailers
                        .iter()
                        .any(|t| tcpflow.equals(t.len, &t.sha1))
                })
        }
        Rule::TcpflowTrailer => {
            let Some(d) = v.disagreement else {
                return false;
            };
            let (Some(tshark), Some(tcpflow), Some(f)) = (&d.tshark, &d.tcpflow, dir) else {
                return false;
            };
            tshark.equals(v.our_len(), &v.our_sha1())
                && v.deficits.iter().all(|x| x.reference == Reference::Tcpflow)
                && tcpflow.len > v.our_len()
                && tcpflow.len - v.our_len() <= f.trailer_total
        }
        Rule::TcpflowPastHole => {
            let Some(d) = v.disagreement else {
                return false;
            };
            let (Some(tshark), Some(tcpflow)) = (&d.tshark, &d.tcpflow) else {
                return false;
            };
            let Some(past) = frames.past(v.src, v.dst, v.our_len()) else {
                return false;
            };
            let not_crossed = match past.next_data {
                // Wireshark, like mos, crosses a hole only once the peer acknowledged it
                // all.
                Some(next) => past.max_ack.is_none_or(|a| a < next),
                // A stream never ends in a hole: only trailers lie past it.
                None => true,
            };
            tshark.equals(v.our_len(), &v.our_sha1())
                && v.deficits.iter().all(|x| x.reference == Reference::Tcpflow)
                && tcpflow.len > v.our_len()
                && !past.covered
                && not_crossed
                && i64::try_from(tcpflow.len).is_ok_and(|n| n <= past.reach)
        }
    }
}

fn deficits(
    ours: Option<&HalfStream>,
    truth: Option<&crate::truth::TruthRow>,
    d: Option<&DisagreementRow>,
) -> Vec<Deficit> {
    let (len, lost) = ours.map_or((0, 0), |o| (o.bytes, o.lost));
    let captured = len.saturating_sub(lost);
    let mut out = Vec::new();
    let mut check = |reference, theirs: u64, ours: u64| {
        if ours < theirs {
            out.push(Deficit {
                reference,
                theirs,
                ours,
            });
        }
    };
    match d {
        Some(d) => {
            if let Some(t) = &d.tshark {
                check(Reference::Tshark, t.captured(), captured);
            }
            if let Some(t) = &d.tcpflow {
                check(Reference::Tcpflow, t.len, len);
            }
            if let Some(t) = &d.libnids {
                check(Reference::Libnids, t.len, captured);
            }
        }
        // All three references agree on a row that is not in the disagreement table.
        None => {
            if let Some(t) = truth {
                check(Reference::Tshark, t.bytes.saturating_sub(t.lost), captured);
            }
        }
    }
    out
}

/// Audits every row of one capture that ran (none for a capture whose sensor run failed).
pub fn audit_capture(r: &CaptureResult, known: &KnownDifferences) -> Vec<RowAudit> {
    let Ok(cmp) = &r.comparison else {
        return Vec::new();
    };
    let frames = r.frames.as_ref().ok();
    let taken: BTreeSet<usize> = cmp.outcomes.iter().filter_map(|o| o.ours()).collect();
    let mut out = Vec::new();

    let rows = r
        .truth
        .iter()
        .enumerate()
        .map(|(ti, t)| {
            let key = RowKey::of(&r.capture, t);
            let di = r
                .disagreements
                .iter()
                .position(|d| d.stream == t.stream && d.src == t.src && d.dst == t.dst);
            (key, Some(ti), di)
        })
        .collect::<Vec<_>>();
    let only_disagreements = r
        .disagreements
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            !r.truth
                .iter()
                .any(|t| d.stream == t.stream && d.src == t.src && d.dst == t.dst)
        })
        .map(|(di, d)| {
            let key = RowKey {
                capture: r.capture.clone(),
                stream: d.stream,
                src: d.src,
                dst: d.dst,
            };
            (key, None, Some(di))
        })
        .collect::<Vec<_>>();

    for (key, ti, di) in rows.into_iter().chain(only_disagreements) {
        let d = di.map(|i| &r.disagreements[i]);
        let t = ti.map(|i| &r.truth[i]);
        let ours_idx = match ti {
            Some(ti) => cmp.outcomes[ti].ours(),
            None => d.and_then(|d| pick_for_disagreement(d, &r.ours, &taken)),
        };
        let ours = ours_idx.map(|i| &r.ours[i]);
        let (len, sha1) = ours.map_or_else(|| (0, short_sha1(b"")), |o| (o.bytes, o.sha1.clone()));
        let equals = d.map_or_else(Vec::new, |d| {
            Reference::ALL
                .into_iter()
                .filter(|&x| d.reference(x).is_some_and(|s| s.equals(len, &sha1)))
                .collect()
        });
        let deficits = deficits(ours, t, d);
        let mut audit = RowAudit {
            key,
            truth: ti,
            disagreement: di,
            ours: ours_idx,
            truth_match: ti.map(|i| cmp.outcomes[i].is_match()),
            equals,
            deficits,
            explained: Explained::No,
        };
        if audit.needs_explanation() {
            audit.explained = if let Some(e) = known.get(&audit.key) {
                Explained::Entry(e.line)
            } else {
                let view = RowView {
                    src: audit.key.src,
                    dst: audit.key.dst,
                    ours,
                    disagreement: d,
                    frames,
                    deficits: &audit.deficits,
                };
                known
                    .rules_for(&r.capture)
                    .find(|e| rule_holds(e.rule, &view))
                    .map_or(Explained::No, |e| Explained::Rule(e.rule, e.line))
            };
        }
        out.push(audit);
    }
    out
}

/// One line saying what differs on a row, for messages and paste-ready table lines.
pub fn describe(r: &CaptureResult, a: &RowAudit) -> String {
    let mut s = String::new();
    if let Some(f) = r
        .frames
        .as_ref()
        .ok()
        .and_then(|f| f.dir(a.key.src, a.key.dst))
    {
        let _ = write!(s, "trailers {}/{}; ", f.max_trailer, f.trailer_total);
    }
    match a.ours.map(|i| &r.ours[i]) {
        Some(o) => {
            let _ = write!(s, "ours {} B lost {}", o.bytes, o.lost);
        }
        None => s.push_str("ours missing"),
    }
    if let Some(t) = a.truth.map(|i| &r.truth[i]) {
        let _ = write!(s, "; truth {} B lost {} ({})", t.bytes, t.lost, t.agree);
    }
    if let Some(d) = a.disagreement.map(|i| &r.disagreements[i]) {
        let refs: Vec<String> = Reference::ALL
            .iter()
            .map(|&x| match d.reference(x) {
                Some(s) if s.hole_bytes > 0 => {
                    format!("{} {} B ({} holes)", x.name(), s.len, s.hole_bytes)
                }
                Some(s) => format!("{} {} B", x.name(), s.len),
                None => format!("{} none", x.name()),
            })
            .collect();
        let _ = write!(s, "; {}", refs.join(", "));
        let eq: Vec<&str> = a.equals.iter().map(|x| x.name()).collect();
        let _ = write!(
            s,
            "; ours equal {}",
            if eq.is_empty() {
                "none".to_string()
            } else {
                eq.join("+")
            }
        );
    }
    for x in &a.deficits {
        let _ = write!(
            s,
            "; fewer bytes than {} ({} < {})",
            x.reference.name(),
            x.ours,
            x.theirs
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::parse_endpoint;
    use crate::disagreements::RefStream;
    use crate::frames::{DirFrames, Seg, Trailer};

    fn half(bytes: u64, lost: u64, sha1: &str) -> HalfStream {
        HalfStream {
            flow: 0,
            label: "c2s",
            src: parse_endpoint(A).unwrap(),
            dst: parse_endpoint(B).unwrap(),
            isn: None,
            bytes,
            sha256: String::new(),
            lost,
            sha1: sha1.into(),
            client_guessed: false,
            file: None,
        }
    }

    const A: &str = "10.0.0.1:1000";
    const B: &str = "10.0.0.2:80";

    fn refs(len: u64, sha1: &str, hole_bytes: u64) -> Option<RefStream> {
        Some(RefStream {
            len,
            sha1: sha1.into(),
            hole_bytes,
        })
    }

    fn row(
        tshark: Option<RefStream>,
        tcpflow: Option<RefStream>,
        libnids: Option<RefStream>,
    ) -> DisagreementRow {
        DisagreementRow {
            stream: 0,
            dir: "c2s".into(),
            src: parse_endpoint(A).unwrap(),
            dst: parse_endpoint(B).unwrap(),
            isn_src: None,
            payload_sum: 0,
            tshark,
            tcpflow,
            libnids,
            verdict: String::new(),
        }
    }

    fn frames(trailer_total: u64, empty: &[(u64, &str)]) -> FrameIndex {
        let mut f = FrameIndex::default();
        f.dirs.insert(
            (parse_endpoint(A).unwrap(), parse_endpoint(B).unwrap()),
            DirFrames {
                segments: 3,
                payload: 10,
                trailer_total,
                max_trailer: trailer_total.min(6),
                empty_segment_trailers: empty
                    .iter()
                    .map(|&(len, sha1)| Trailer {
                        len,
                        sha1: sha1.into(),
                    })
                    .collect(),
                ..DirFrames::default()
            },
        );
        f
    }

    /// A direction A -> B with a SYN at `isn`, segments `(offset, len, trailer)`, and the
    /// peer's acknowledgments as offsets.
    fn layout(isns: &[u32], segs: &[(u32, u32, u32)], acks: &[u32]) -> FrameIndex {
        let isn = isns[0];
        let mut f = FrameIndex::default();
        let mut fwd = DirFrames {
            syn_seqs: isns.to_vec(),
            ..DirFrames::default()
        };
        fwd.segs.push(Seg {
            seq: isn,
            len: 0,
            trailer: 0,
            syn: true,
        });
        for &(off, len, trailer) in segs {
            fwd.segs.push(Seg {
                seq: isn.wrapping_add(1).wrapping_add(off),
                len,
                trailer,
                syn: false,
            });
        }
        let back = DirFrames {
            acks: acks
                .iter()
                .map(|&a| isn.wrapping_add(1).wrapping_add(a))
                .collect(),
            ..DirFrames::default()
        };
        let (a, b) = (parse_endpoint(A).unwrap(), parse_endpoint(B).unwrap());
        f.dirs.insert((a, b), fwd);
        f.dirs.insert((b, a), back);
        f
    }

    fn view<'a>(
        ours: Option<&'a HalfStream>,
        d: &'a DisagreementRow,
        f: &'a FrameIndex,
        deficits: &'a [Deficit],
    ) -> RowView<'a> {
        RowView {
            src: d.src,
            dst: d.dst,
            ours,
            disagreement: Some(d),
            frames: Some(f),
            deficits,
        }
    }

    #[test]
    fn deficits_compare_captured_bytes_and_tcpflow_lengths() {
        let d = row(refs(10, "t", 4), refs(12, "f", 0), refs(5, "n", 0));
        // 11 bytes of which 5 lost: 6 captured >= 10-4 and >= 5, but 11 < tcpflow's 12.
        let o = half(11, 5, "x");
        let got = deficits(Some(&o), None, Some(&d));
        assert_eq!(
            got,
            [Deficit {
                reference: Reference::Tcpflow,
                theirs: 12,
                ours: 11
            }]
        );
        // Nothing of ours: short of every reference.
        assert_eq!(deficits(None, None, Some(&d)).len(), 3);
    }

    #[test]
    fn tcpflow_trailer_needs_equal_wireshark_and_enough_trailer_bytes() {
        let d = row(refs(10, "aa", 0), refs(16, "ff", 0), None);
        let o = half(10, 0, "aa");
        let def = deficits(Some(&o), None, Some(&d));
        assert!(rule_holds(
            Rule::TcpflowTrailer,
            &view(Some(&o), &d, &frames(6, &[]), &def)
        ));
        // Six extra bytes but only five trailer bytes in the capture.
        assert!(!rule_holds(
            Rule::TcpflowTrailer,
            &view(Some(&o), &d, &frames(5, &[]), &def)
        ));
        // Ours differ from Wireshark's.
        let other = half(10, 0, "bb");
        assert!(!rule_holds(
            Rule::TcpflowTrailer,
            &view(Some(&other), &d, &frames(6, &[]), &def)
        ));
    }

    #[test]
    fn tcpflow_past_hole_needs_an_unacknowledged_hole_at_our_end() {
        // Ten bytes, then an eight-byte hole, then 29 bytes; the peer acknowledges the ten.
        // The ISN sits just below the 32-bit wrap, so offsets cross it.
        let segs = [(0, 10, 0), (18, 29, 0)];
        let d = row(refs(10, "aa", 0), refs(47, "ff", 0), refs(10, "aa", 0));
        let o = half(10, 0, "aa");
        let def = deficits(Some(&o), None, Some(&d));
        let holds = |f: &FrameIndex, d: &DisagreementRow| {
            let def = deficits(Some(&o), None, Some(d));
            rule_holds(Rule::TcpflowPastHole, &view(Some(&o), d, f, &def))
        };
        assert!(holds(&layout(&[u32::MAX - 3], &segs, &[0, 10]), &d));
        // The peer acknowledged part of the hole, not all of it: still held back.
        assert!(holds(&layout(&[7], &segs, &[0, 17]), &d));
        // The peer acknowledged the whole hole: Wireshark and mos would cross it.
        assert!(!holds(&layout(&[7], &segs, &[0, 18]), &d));
        // tcpflow longer than the furthest segment reaches.
        let longer = row(refs(10, "aa", 0), refs(48, "ff", 0), refs(10, "aa", 0));
        assert!(!holds(&layout(&[7], &segs, &[10]), &longer));
        // ... unless that segment's trailer reaches there.
        assert!(holds(
            &layout(&[7], &[(0, 10, 0), (18, 29, 1)], &[10]),
            &longer
        ));
        // A segment holds the byte at our end: no hole there.
        assert!(!holds(&layout(&[7], &[(0, 10, 0), (5, 42, 0)], &[10]), &d));
        // Two SYN sequence numbers on the pair: two connections, not checked.
        assert!(!holds(&layout(&[7, 900], &segs, &[10]), &d));
        // Ours differ from Wireshark's.
        let other = half(10, 0, "bb");
        let f = layout(&[7], &segs, &[10]);
        assert!(!rule_holds(
            Rule::TcpflowPastHole,
            &view(Some(&other), &d, &f, &def)
        ));
    }

    #[test]
    fn tcpflow_past_hole_with_only_padding_past_it() {
        // Ten bytes; the peer acknowledges 30 that were never captured, then the sender's
        // empty segment at offset 30 carries six bytes of padding, which tcpflow writes there.
        let segs = [(0, 10, 0), (30, 0, 6)];
        let f = layout(&[7], &segs, &[10, 30]);
        let o = half(10, 0, "aa");
        for (tcpflow, ok) in [(36, true), (37, false)] {
            let d = row(refs(10, "aa", 0), refs(tcpflow, "ff", 0), None);
            let def = deficits(Some(&o), None, Some(&d));
            assert_eq!(
                rule_holds(Rule::TcpflowPastHole, &view(Some(&o), &d, &f, &def)),
                ok
            );
        }
    }

    #[test]
    fn padding_only_needs_the_trailer_hash() {
        let d = row(None, refs(6, "77", 0), refs(0, "da39", 0));
        assert!(rule_holds(
            Rule::TcpflowPaddingOnly,
            &view(None, &d, &frames(6, &[(6, "77")]), &[])
        ));
        assert!(!rule_holds(
            Rule::TcpflowPaddingOnly,
            &view(None, &d, &frames(6, &[(6, "78")]), &[])
        ));
        // Not when we have bytes.
        let o = half(3, 0, "x");
        assert!(!rule_holds(
            Rule::TcpflowPaddingOnly,
            &view(Some(&o), &d, &frames(6, &[(6, "77")]), &[])
        ));
    }

    #[test]
    fn not_decoded_needs_no_segment_of_that_direction() {
        let d = row(refs(10, "aa", 0), None, None);
        let f = frames(0, &[]);
        assert!(!rule_holds(Rule::NotDecoded, &view(None, &d, &f, &[])));
        let mut other = d.clone();
        other.src = parse_endpoint("10.9.9.9:1").unwrap();
        assert!(rule_holds(
            Rule::NotDecoded,
            &RowView {
                src: other.src,
                ..view(None, &other, &f, &[])
            }
        ));
    }
}
