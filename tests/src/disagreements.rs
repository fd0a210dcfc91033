//! `reference-disagreements.tsv`: every direction where Wireshark, tcpflow and libnids
//! differ, with each reference's length and short SHA-1 (or nothing when that reference did
//! not produce the direction).

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use crate::addr::parse_endpoint;

/// What one reference produced for a direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefStream {
    pub len: u64,
    /// First 16 hex digits of the SHA-1, lowercase.
    pub sha1: String,
    /// Bytes the reference reports as holes (zeros it wrote for bytes never captured);
    /// only Wireshark reports them, and only when there were some.
    pub hole_bytes: u64,
}

impl RefStream {
    /// Bytes the reference recovered from the capture (its length less its holes).
    pub fn captured(&self) -> u64 {
        self.len.saturating_sub(self.hole_bytes)
    }

    /// Same length and same short hash as a stream of `len` bytes hashing to `sha1`.
    pub fn equals(&self, len: u64, sha1: &str) -> bool {
        self.len == len && self.sha1.eq_ignore_ascii_case(sha1)
    }
}

/// The three references, in the order the corpus lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reference {
    Tshark,
    Tcpflow,
    Libnids,
}

impl Reference {
    pub const ALL: [Reference; 3] = [Reference::Tshark, Reference::Tcpflow, Reference::Libnids];

    pub fn name(self) -> &'static str {
        match self {
            Reference::Tshark => "tshark",
            Reference::Tcpflow => "tcpflow",
            Reference::Libnids => "libnids",
        }
    }
}

/// One row of `reference-disagreements.tsv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisagreementRow {
    /// Wireshark's `tcp.stream` index (also given when Wireshark had no payload there).
    pub stream: u32,
    pub dir: String,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub isn_src: Option<u32>,
    /// Sum of the payload lengths the IP headers of this direction declare.
    pub payload_sum: u64,
    pub tshark: Option<RefStream>,
    pub tcpflow: Option<RefStream>,
    pub libnids: Option<RefStream>,
    /// The corpus's summary, e.g. `tshark=libnids!=tcpflow`.
    pub verdict: String,
}

impl DisagreementRow {
    pub fn reference(&self, r: Reference) -> Option<&RefStream> {
        match r {
            Reference::Tshark => self.tshark.as_ref(),
            Reference::Tcpflow => self.tcpflow.as_ref(),
            Reference::Libnids => self.libnids.as_ref(),
        }
    }
}

const COLUMNS: [&str; 22] = [
    "capture",
    "stream",
    "dir",
    "src",
    "dst",
    "isn_src",
    "payload_sum",
    "retrans",
    "ooo",
    "lost",
    "tshark_len",
    "tshark_sha1",
    "tshark_holes",
    "tcpflow_len",
    "tcpflow_sha1",
    "tcpflow_files",
    "libnids_len",
    "libnids_sha1",
    "verdict",
    "tshark~tcpflow",
    "tshark~libnids",
    "tcpflow~libnids",
];

fn reference(len: &str, sha1: &str, holes: Option<&str>) -> Result<Option<RefStream>> {
    if len.is_empty() {
        return Ok(None);
    }
    // Holes are written `count/bytes`.
    let hole_bytes = match holes.filter(|h| !h.is_empty()) {
        None => 0,
        Some(h) => {
            let (_, bytes) = h
                .split_once('/')
                .with_context(|| format!("holes {h:?} is not count/bytes"))?;
            bytes.parse().with_context(|| format!("holes {h:?}"))?
        }
    };
    Ok(Some(RefStream {
        len: len.parse().with_context(|| format!("length {len:?}"))?,
        sha1: sha1.to_ascii_lowercase(),
        hole_bytes,
    }))
}

/// Parses the table; rows are grouped by capture file name, in file order.
pub fn parse_disagreements(text: &str) -> Result<BTreeMap<String, Vec<DisagreementRow>>> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.split('\t').eq(COLUMNS.iter().copied()) => {}
        Some((_, h)) => bail!("unexpected reference-disagreements header {h:?}"),
        None => bail!("empty reference-disagreements file"),
    }
    let mut out: BTreeMap<String, Vec<DisagreementRow>> = BTreeMap::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let ctx = || format!("reference-disagreements line {}", i + 1);
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != COLUMNS.len() {
            bail!("{}: {} fields, expected {}", ctx(), f.len(), COLUMNS.len());
        }
        let row = DisagreementRow {
            stream: f[1].parse().with_context(ctx)?,
            dir: f[2].to_string(),
            src: parse_endpoint(f[3]).with_context(ctx)?,
            dst: parse_endpoint(f[4]).with_context(ctx)?,
            isn_src: if f[5].is_empty() {
                None
            } else {
                Some(f[5].parse().with_context(ctx)?)
            },
            payload_sum: f[6].parse().with_context(ctx)?,
            tshark: reference(f[10], f[11], Some(f[12])).with_context(ctx)?,
            tcpflow: reference(f[13], f[14], None).with_context(ctx)?,
            libnids: reference(f[16], f[17], None).with_context(ctx)?,
            verdict: f[18].to_string(),
        };
        out.entry(f[0].to_string()).or_default().push(row);
    }
    Ok(out)
}

pub fn read_disagreements(path: &Path) -> Result<BTreeMap<String, Vec<DisagreementRow>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_disagreements(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> String {
        COLUMNS.join("\t")
    }

    #[test]
    fn parses_present_missing_and_holes() {
        let text = format!(
            "{}\n\
             a.pcap\t3\ts2c\t10.0.0.2:80\t10.0.0.1:5\t7\t294\t4\t0\t0\t747\tAB12\t6/501\t\
             384555\tcd34\tf\t\t\ttshark!=tcpflow;missing:libnids\tdiffer\t\t\n\
             a.pcap\t4\tc2s\t[::1]:5\t[::1]:80\t\t0\t0\t0\t0\t\t\t\t6\t7722\tf\t0\tda39\t\
             tcpflow!=libnids;missing:tshark\t\t\tprefix(6>0)\n",
            header()
        );
        let rows = parse_disagreements(&text).unwrap();
        let a = &rows["a.pcap"];
        assert_eq!(a.len(), 2);
        let t = a[0].tshark.as_ref().unwrap();
        assert_eq!((t.len, t.hole_bytes, t.captured()), (747, 501, 246));
        assert_eq!(t.sha1, "ab12");
        assert!(a[0].libnids.is_none());
        assert_eq!(a[0].isn_src, Some(7));
        assert!(a[1].tshark.is_none());
        let n = a[1].reference(Reference::Libnids).unwrap();
        assert!(n.equals(0, "DA39"));
        assert_eq!(a[1].src.to_string(), "[::1]:5");
    }

    #[test]
    fn rejects_other_headers_and_bad_holes() {
        assert!(parse_disagreements("capture\tstream\n").is_err());
        let bad = format!(
            "{}\na\t0\tc2s\t1.1.1.1:1\t2.2.2.2:2\t\t1\t0\t0\t0\t1\tab\t5\t\t\t\t\t\tx\t\t\t\n",
            header()
        );
        assert!(parse_disagreements(&bad).is_err());
    }
}
