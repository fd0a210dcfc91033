//! The reference truth: `truth/<capture>.tsv`, one row per TCP direction carrying payload.

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::Path;

use crate::addr::parse_endpoint;

/// One reference half-stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruthRow {
    /// Wireshark's `tcp.stream` index.
    pub stream: u32,
    /// `c2s` or `s2c` as Wireshark saw it; informative only, never used to match.
    pub dir: String,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub isn_src: Option<u32>,
    pub bytes: u64,
    /// Lowercase hex.
    pub sha256: String,
    pub lost: u64,
    /// Which references agree, e.g. `tshark=tcpflow` or `tshark`.
    pub agree: String,
}

impl TruthRow {
    /// Two or three independent references produced these exact bytes.
    pub fn is_agreeing(&self) -> bool {
        self.agree.contains('=')
    }
}

const HEADER: [&str; 9] = [
    "stream", "dir", "src", "dst", "isn_src", "bytes", "sha256", "lost", "agree",
];

/// Parses a truth TSV; the header must be the documented one so that a format change in
/// the corpus is noticed rather than misread.
pub fn parse_truth(text: &str) -> Result<Vec<TruthRow>> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.split('\t').eq(HEADER.iter().copied()) => {}
        Some((_, h)) => bail!("unexpected truth header {h:?}"),
        None => bail!("empty truth file (no header)"),
    }
    let mut rows = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let row = parse_row(line).with_context(|| format!("truth line {}", i + 1))?;
        rows.push(row);
    }
    Ok(rows)
}

fn parse_row(line: &str) -> Result<TruthRow> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() != HEADER.len() {
        bail!("{} fields, expected {}", f.len(), HEADER.len());
    }
    Ok(TruthRow {
        stream: f[0].parse().context("stream")?,
        dir: f[1].to_string(),
        src: parse_endpoint(f[2])?,
        dst: parse_endpoint(f[3])?,
        isn_src: if f[4].is_empty() {
            None
        } else {
            Some(f[4].parse().context("isn_src")?)
        },
        bytes: f[5].parse().context("bytes")?,
        sha256: f[6].to_ascii_lowercase(),
        lost: f[7].parse().context("lost")?,
        agree: f[8].to_string(),
    })
}

pub fn read_truth(path: &Path) -> Result<Vec<TruthRow>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_truth(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_with_and_without_isn() {
        let text = "stream\tdir\tsrc\tdst\tisn_src\tbytes\tsha256\tlost\tagree\n\
                    0\tc2s\t10.0.0.1:1\t10.0.0.2:80\t\t41\tAB\t0\ttshark=tcpflow\n\
                    1\ts2c\t[::1]:80\t[::1]:5\t7\t2\tcd\t1\ttshark\n";
        let rows = parse_truth(text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].isn_src, None);
        assert_eq!(rows[0].sha256, "ab");
        assert!(rows[0].is_agreeing());
        assert_eq!(rows[1].isn_src, Some(7));
        assert!(!rows[1].is_agreeing());
        assert_eq!(rows[1].src.to_string(), "[::1]:80");
    }

    #[test]
    fn rejects_unknown_header() {
        assert!(parse_truth("stream\tdir\n").is_err());
    }
}
