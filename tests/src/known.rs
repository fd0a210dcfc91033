//! `tests/known-differences.md`: the accepted mismatches with agreeing references.
//!
//! Every table line `| capture | stream | src | dst | cause |` (a line starting with `|`,
//! other than the header and the `|---|` separator) accepts one truth row: the row of that
//! capture with that Wireshark stream index and that directed (src, dst). The cause is free
//! text (no `|` in it). Everything else in the file is prose and ignored.

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

#[derive(Debug, Clone, Default)]
pub struct KnownDifferences {
    entries: HashMap<RowKey, KnownEntry>,
}

pub const TABLE_HEADER: &str = "| capture | stream | src | dst | cause |";

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
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            if !line.trim_start().starts_with('|') {
                continue;
            }
            let c = cells(line);
            let is_header = c.first().is_some_and(|s| s.eq_ignore_ascii_case("capture"));
            let is_separator = c
                .iter()
                .all(|s| !s.is_empty() && s.chars().all(|ch| matches!(ch, '-' | ':')));
            if is_header || is_separator {
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
        Ok(KnownDifferences { entries })
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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

    #[test]
    fn table_row_round_trips() {
        let k0 = key("c.pcap", 9, "[::1]:1", "[::1]:2");
        let text = table_row(&k0, "why");
        let k = KnownDifferences::parse(&text).unwrap();
        assert!(k.get(&k0).is_some());
    }
}
