//! `tests/known-differences.md`: the accepted differences with the references.
//!
//! Two kinds of table, told apart by their header line:
//!
//! - `| capture | stream | src | dst | cause |`: each line accepts one row (a truth row or a
//!   row of `reference-disagreements.tsv`): the row of that capture with that Wireshark
//!   stream index and that directed (src, dst).
//! - `| rule | capture | cause |`: each line names one of the [`Rule`]s, which the corpus
//!   test checks on a row from the capture and the dumps; it accepts the rows of that capture
//!   (`*`: of every capture) on which the rule holds, and no other.
//!
//! A table line is one starting with `|`, other than a header and the `|---|` separator.
//! Causes are free text (no `|` in them). Everything else in the file is prose and ignored.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;

use crate::addr::parse_endpoint;
use crate::truth::TruthRow;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey {
    pub capture: String,
    pub stream: u32,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

impl RowKey {
    pub fn of(capture: &str, row: &TruthRow) -> Self {
        RowKey {
            capture: capture.to_string(),
            stream: row.stream,
            src: row.src,
            dst: row.dst,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownEntry {
    pub key: RowKey,
    pub cause: String,
    /// 1-based line in the file, for messages.
    pub line: usize,
}

/// A cause of difference that the corpus test can check on each row by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// mos has no half-stream for the row, and the sensor's parser finds no TCP segment of
    /// that direction anywhere in the capture (the traffic is inside something mos does not
    /// decode).
    NotDecoded,
    /// Wireshark and mos have no byte for the direction, libnids none either, and tcpflow's
    /// bytes are exactly (length and hash) the link-layer trailer of one of the direction's
    /// segments that carry no TCP payload.
    TcpflowPaddingOnly,
    /// mos's bytes equal Wireshark's, and tcpflow's stream is longer by no more than the sum
    /// of the link-layer trailer bytes of the direction's frames (tcpflow writes a frame's
    /// trailer after its payload); no other reference recovered more than mos.
    TcpflowTrailer,
    /// mos's bytes equal Wireshark's and only tcpflow recovered more. Mos's stream stops at
    /// a hole (no segment's payload holds the byte at its end) that Wireshark does not cross
    /// either: the peer never acknowledged the whole hole before the next payload byte, or
    /// no payload lies past it (only trailers of empty segments). tcpflow writes every
    /// segment at its offset, zeros in between, so its stream is no longer than the
    /// furthest a segment reaches with its payload and trailer. Checked only where the
    /// endpoint pair held one connection.
    TcpflowPastHole,
}

impl Rule {
    pub const ALL: [Rule; 4] = [
        Rule::NotDecoded,
        Rule::TcpflowPaddingOnly,
        Rule::TcpflowTrailer,
        Rule::TcpflowPastHole,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rule::NotDecoded => "not-decoded",
            Rule::TcpflowPaddingOnly => "tcpflow-padding-only",
            Rule::TcpflowTrailer => "tcpflow-trailer",
            Rule::TcpflowPastHole => "tcpflow-past-hole",
        }
    }

    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// One line of the rules table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleEntry {
    pub rule: Rule,
    /// `None` for `*` (every capture).
    pub capture: Option<String>,
    pub cause: String,
    /// 1-based line in the file, for messages.
    pub line: usize,
}

impl RuleEntry {
    pub fn applies_to(&self, capture: &str) -> bool {
        self.capture.as_deref().is_none_or(|c| c == capture)
    }
}

#[derive(Debug, Clone, Default)]
pub struct KnownDifferences {
    entries: HashMap<RowKey, KnownEntry>,
    rules: Vec<RuleEntry>,
}

pub const TABLE_HEADER: &str = "| capture | stream | src | dst | cause |";
pub const RULES_HEADER: &str = "| rule | capture | cause |";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    Rows,
    Rules,
}

fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    inner
        .split('|')
        .map(|c| c.trim().trim_matches('`').trim().to_string())
        .collect()
}

impl KnownDifferences {
    pub fn parse(text: &str) -> Result<Self> {
        let mut entries = HashMap::new();
        let mut rules: Vec<RuleEntry> = Vec::new();
        let mut table = Table::Rows;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            if !line.trim_start().starts_with('|') {
                continue;
            }
            let c = cells(line);
            let first = c.first().map(String::as_str).unwrap_or_default();
            if first.eq_ignore_ascii_case("capture") {
                table = Table::Rows;
                continue;
            }
            if first.eq_ignore_ascii_case("rule") {
                table = Table::Rules;
                continue;
            }
            let is_separator = c
                .iter()
                .all(|s| !s.is_empty() && s.chars().all(|ch| matches!(ch, '-' | ':')));
            if is_separator {
                continue;
            }
            if table == Table::Rules {
                rules.push(parse_rule(&c, n)?);
                continue;
            }
            if c.len() != 5 {
                bail!(
                    "known-differences line {n}: {} cells, expected 5: {TABLE_HEADER}",
                    c.len()
                );
            }
            let key = RowKey {
                capture: c[0].clone(),
                stream: c[1]
                    .parse()
                    .with_context(|| format!("known-differences line {n}: stream {:?}", c[1]))?,
                src: parse_endpoint(&c[2])
                    .with_context(|| format!("known-differences line {n}"))?,
                dst: parse_endpoint(&c[3])
                    .with_context(|| format!("known-differences line {n}"))?,
            };
            if c[4].is_empty() {
                bail!("known-differences line {n}: the cause is empty; say why we differ");
            }
            if let Some(prev) = entries.get(&key) {
                let prev: &KnownEntry = prev;
                bail!("known-differences line {n} repeats line {}", prev.line);
            }
            entries.insert(
                key.clone(),
                KnownEntry {
                    key,
                    cause: c[4].clone(),
                    line: n,
                },
            );
        }
        for (i, r) in rules.iter().enumerate() {
            if let Some(prev) = rules[..i]
                .iter()
                .find(|p| p.rule == r.rule && p.capture == r.capture)
            {
                bail!(
                    "known-differences line {} repeats the rule of line {}",
                    r.line,
                    prev.line
                );
            }
        }
        Ok(KnownDifferences { entries, rules })
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Row entries and rule entries.
    pub fn len(&self) -> usize {
        self.entries.len() + self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rule entries that apply to a capture, in file order.
    pub fn rules_for<'a>(&'a self, capture: &'a str) -> impl Iterator<Item = &'a RuleEntry> {
        self.rules.iter().filter(move |r| r.applies_to(capture))
    }

    /// Rule entries for captures that were run (any, for `*`) that accepted no row, sorted
    /// by line: their cause no longer occurs (or never did) and they should go.
    pub fn stale_rules(
        &self,
        ran: &BTreeSet<String>,
        used_lines: &BTreeSet<usize>,
    ) -> Vec<&RuleEntry> {
        self.rules
            .iter()
            .filter(|r| match &r.capture {
                None => !ran.is_empty(),
                Some(c) => ran.contains(c),
            })
            .filter(|r| !used_lines.contains(&r.line))
            .collect()
    }

    pub fn get(&self, key: &RowKey) -> Option<&KnownEntry> {
        self.entries.get(key)
    }

    /// Entries for the captures that were run whose row no longer differs (or no longer
    /// exists), sorted by line: they should be deleted from the file.
    pub fn stale(&self, ran: &BTreeSet<String>, differing: &BTreeSet<RowKey>) -> Vec<&KnownEntry> {
        let mut out: Vec<&KnownEntry> = self
            .entries
            .values()
            .filter(|e| ran.contains(&e.key.capture) && !differing.contains(&e.key))
            .collect();
        out.sort_by_key(|e| e.line);
        out
    }
}

fn parse_rule(c: &[String], n: usize) -> Result<RuleEntry> {
    if c.len() != 3 {
        bail!(
            "known-differences line {n}: {} cells, expected 3: {RULES_HEADER}",
            c.len()
        );
    }
    let Some(rule) = Rule::from_name(&c[0]) else {
        let names: Vec<&str> = Rule::ALL.iter().map(|r| r.name()).collect();
        bail!(
            "known-differences line {n}: unknown rule {:?} (the test checks only {})",
            c[0],
            names.join(", ")
        );
    };
    if c[1].is_empty() {
        bail!("known-differences line {n}: name a capture, or `*` for all");
    }
    if c[2].is_empty() {
        bail!("known-differences line {n}: the cause is empty; say why we differ");
    }
    Ok(RuleEntry {
        rule,
        capture: (c[1] != "*").then(|| c[1].clone()),
        cause: c[2].clone(),
        line: n,
    })
}

/// A table line for an unlisted difference, ready to paste once the cause is filled in.
pub fn table_row(key: &RowKey, cause: &str) -> String {
    format!(
        "| {} | {} | {} | {} | {} |",
        key.capture, key.stream, key.src, key.dst, cause
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# Known differences\n\nprose | not a row\n\n\
        | capture | stream | src | dst | cause |\n\
        |---|---|---|---|---|\n\
        | `a.pcap` | 3 | [2001:DB8::1]:5 | [2001:db8::2]:80 | tcpflow counts padding |\n\
        | b.pcap | 0 | 10.0.0.1:1 | 10.0.0.2:2 | urgent byte |\n";

    fn key(capture: &str, stream: u32, src: &str, dst: &str) -> RowKey {
        RowKey {
            capture: capture.into(),
            stream,
            src: parse_endpoint(src).unwrap(),
            dst: parse_endpoint(dst).unwrap(),
        }
    }

    #[test]
    fn parses_table_rows_only() {
        let k = KnownDifferences::parse(FILE).unwrap();
        assert_eq!(k.len(), 2);
        let e = k
            .get(&key("a.pcap", 3, "[2001:db8::1]:5", "[2001:db8::2]:80"))
            .unwrap();
        assert_eq!(e.cause, "tcpflow counts padding");
        assert_eq!(e.line, 7);
    }

    #[test]
    fn header_only_file_is_empty() {
        let k = KnownDifferences::parse(
            "| capture | stream | src | dst | cause |\n|---|---|---|---|---|\n",
        )
        .unwrap();
        assert!(k.is_empty());
    }

    #[test]
    fn stale_entries_are_those_run_and_no_longer_differing() {
        let k = KnownDifferences::parse(FILE).unwrap();
        let ran: BTreeSet<String> = ["a.pcap".to_string(), "b.pcap".to_string()].into();
        let differing: BTreeSet<RowKey> = [key("b.pcap", 0, "10.0.0.1:1", "10.0.0.2:2")].into();
        let stale = k.stale(&ran, &differing);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].key.capture, "a.pcap");
        // A capture that was not run says nothing about its entries.
        let only_b: BTreeSet<String> = ["b.pcap".to_string()].into();
        assert!(k.stale(&only_b, &differing).is_empty());
    }

    #[test]
    fn rejects_bad_rows() {
        assert!(KnownDifferences::parse("| a.pcap | x | 1.1.1.1:1 | 2.2.2.2:2 | c |").is_err());
        assert!(KnownDifferences::parse("| a.pcap | 1 | 1.1.1.1:1 | 2.2.2.2:2 |  |").is_err());
        assert!(KnownDifferences::parse("| a.pcap | 1 | 1.1.1.1:1 | 2.2.2.2:2 |").is_err());
        let dup = "| a.pcap | 1 | 1.1.1.1:1 | 2.2.2.2:2 | c |\n| a.pcap | 1 | 1.1.1.1:1 | 2.2.2.2:2 | d |";
        assert!(KnownDifferences::parse(dup).is_err());
    }

    const RULES: &str = "| rule | capture | cause |\n|---|---|---|\n\
        | not-decoded | `t.pcap` | GRE |\n\
        | tcpflow-trailer | * | padding |\n\
        \n| capture | stream | src | dst | cause |\n|---|---|---|---|---|\n\
        | b.pcap | 0 | 10.0.0.1:1 | 10.0.0.2:2 | urgent byte |\n";

    #[test]
    fn parses_rules_and_rows_after_them() {
        let k = KnownDifferences::parse(RULES).unwrap();
        assert_eq!(k.len(), 3);
        assert!(k
            .get(&key("b.pcap", 0, "10.0.0.1:1", "10.0.0.2:2"))
            .is_some());
        let t: Vec<Rule> = k.rules_for("t.pcap").map(|r| r.rule).collect();
        assert_eq!(t, [Rule::NotDecoded, Rule::TcpflowTrailer]);
        let other: Vec<Rule> = k.rules_for("u.pcap").map(|r| r.rule).collect();
        assert_eq!(other, [Rule::TcpflowTrailer]);
        assert_eq!(k.rules_for("t.pcap").next().unwrap().line, 3);
    }

    #[test]
    fn stale_rules_are_those_of_captures_run_that_accepted_nothing() {
        let k = KnownDifferences::parse(RULES).unwrap();
        let ran: BTreeSet<String> = ["t.pcap".to_string()].into();
        let stale: Vec<usize> = k
            .stale_rules(&ran, &[4].into())
            .iter()
            .map(|r| r.line)
            .collect();
        assert_eq!(stale, [3]);
        let none_ran = BTreeSet::new();
        assert!(k.stale_rules(&none_ran, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn rejects_bad_rules() {
        let bad = |line: &str| {
            KnownDifferences::parse(&format!("| rule | capture | cause |\n{line}\n")).is_err()
        };
        assert!(bad("| any-excuse | * | because |"));
        assert!(bad("| not-decoded | a.pcap |  |"));
        assert!(bad("| not-decoded |  | c |"));
        assert!(bad("| not-decoded | a.pcap | c | d |"));
        assert!(bad(
            "| not-decoded | a.pcap | c |\n| not-decoded | a.pcap | d |"
        ));
    }

    #[test]
    fn table_row_round_trips() {
        let k0 = key("c.pcap", 9, "[::1]:1", "[::1]:2");
        let text = table_row(&k0, "why");
        let k = KnownDifferences::parse(&text).unwrap();
        assert!(k.get(&k0).is_some());
    }
}
