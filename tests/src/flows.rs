//! The sensor's `--dump` output: `flows.jsonl` and its stream files.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::Path;

use crate::addr::parse_endpoint;

/// One line of `flows.jsonl`, as specified for `mos-sensor --dump`.
#[derive(Debug, Clone, Deserialize)]
pub struct FlowRecord {
    pub client: String,
    pub server: String,
    pub client_isn: Option<u32>,
    pub server_isn: Option<u32>,
    #[serde(default)]
    pub client_guessed: bool,
    pub start_ts: f64,
    pub end_ts: f64,
    pub c2s_bytes: u64,
    pub s2c_bytes: u64,
    pub c2s_sha256: String,
    pub s2c_sha256: String,
    pub c2s_lost: u64,
    pub s2c_lost: u64,
    pub c2s_file: Option<String>,
    pub s2c_file: Option<String>,
    /// `mos-dump` stopped before the connection ended (written only when true).
    #[serde(default)]
    pub cut_short: bool,
}

/// One direction of one of our flows, the unit the matcher compares with a truth row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HalfStream {
    /// Line index (0-based) of the flow in `flows.jsonl`: the sensor's start order.
    pub flow: usize,
    /// `c2s` or `s2c` in the sensor's labelling; shown in reports only.
    pub label: &'static str,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub isn: Option<u32>,
    pub bytes: u64,
    /// Lowercase hex.
    pub sha256: String,
    pub lost: u64,
    /// First 16 hex digits of the SHA-1 of the stream file (the form the corpus's
    /// `reference-disagreements.tsv` gives for each reference); set by [`read_dump`].
    pub sha1: String,
    pub client_guessed: bool,
    pub file: Option<String>,
}

/// First 16 hex digits of the SHA-1 of `data`.
pub fn short_sha1(data: &[u8]) -> String {
    let mut h = hex::encode(Sha1::digest(data));
    h.truncate(16);
    h
}

pub fn parse_flows(text: &str) -> Result<Vec<FlowRecord>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("flows.jsonl line {}", i + 1))
        })
        .collect()
}

/// Splits flows into half-streams, two per flow, in line order.
pub fn half_streams(flows: &[FlowRecord]) -> Result<Vec<HalfStream>> {
    let mut out = Vec::with_capacity(flows.len() * 2);
    for (i, f) in flows.iter().enumerate() {
        let ctx = || format!("flows.jsonl line {}", i + 1);
        let client = parse_endpoint(&f.client).with_context(ctx)?;
        let server = parse_endpoint(&f.server).with_context(ctx)?;
        out.push(HalfStream {
            flow: i,
            label: "c2s",
            src: client,
            dst: server,
            isn: f.client_isn,
            bytes: f.c2s_bytes,
            sha256: f.c2s_sha256.to_ascii_lowercase(),
            lost: f.c2s_lost,
            sha1: short_sha1(b""),
            client_guessed: f.client_guessed,
            file: f.c2s_file.clone(),
        });
        out.push(HalfStream {
            flow: i,
            label: "s2c",
            src: server,
            dst: client,
            isn: f.server_isn,
            bytes: f.s2c_bytes,
            sha256: f.s2c_sha256.to_ascii_lowercase(),
            lost: f.s2c_lost,
            sha1: short_sha1(b""),
            client_guessed: f.client_guessed,
            file: f.s2c_file.clone(),
        });
    }
    Ok(out)
}

/// Reads `DIR/flows.jsonl` and checks that every stream file agrees with the length and
/// hash claimed for it, so a comparison that passes on the JSON also holds for the bytes
/// an analyser would read.
pub fn read_dump(dir: &Path) -> Result<Vec<HalfStream>> {
    let path = dir.join("flows.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "the sensor wrote no {} (does it implement --dump?)",
            path.display()
        )
    })?;
    let flows = parse_flows(&text)?;
    let mut halves = half_streams(&flows)?;
    for h in &mut halves {
        h.sha1 = verify_file(dir, h).with_context(|| {
            format!(
                "flows.jsonl line {} ({}): {} -> {}",
                h.flow + 1,
                h.label,
                h.src,
                h.dst
            )
        })?;
    }
    Ok(halves)
}

/// Checks one stream file and returns its short SHA-1.
fn verify_file(dir: &Path, h: &HalfStream) -> Result<String> {
    let Some(name) = &h.file else {
        if h.bytes == 0 {
            return Ok(short_sha1(b""));
        }
        bail!("{} bytes but no stream file named", h.bytes);
    };
    let path = dir.join(name);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        // An empty direction may legitimately have no file on disk.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && h.bytes == 0 => {
            return Ok(short_sha1(b""))
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if data.len() as u64 != h.bytes {
        bail!(
            "{} holds {} bytes, flows.jsonl says {}",
            name,
            data.len(),
            h.bytes
        );
    }
    let sha = hex::encode(Sha256::digest(&data));
    if sha != h.sha256 {
        bail!("{} hashes to {sha}, flows.jsonl says {}", name, h.sha256);
    }
    Ok(short_sha1(&data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_gives_two_directed_half_streams() {
        let line =
            r#"{"client":"10.0.0.1:1000","server":"[::1]:80","client_isn":5,"server_isn":null,
            "client_guessed":true,"start_ts":1.5,"end_ts":2.0,"c2s_bytes":3,"s2c_bytes":0,
            "c2s_sha256":"AA","s2c_sha256":"bb","c2s_lost":1,"s2c_lost":0,
            "c2s_file":"0.c2s","s2c_file":"0.s2c"}"#
                .replace('\n', " ");
        let flows = parse_flows(&line).unwrap();
        let h = half_streams(&flows).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].src.to_string(), "10.0.0.1:1000");
        assert_eq!(h[0].isn, Some(5));
        assert_eq!(h[0].sha256, "aa");
        assert_eq!(h[1].src.to_string(), "[::1]:80");
        assert_eq!(h[1].isn, None);
        assert!(h[1].client_guessed);
    }

    #[test]
    fn dump_files_must_agree_with_the_json() {
        let dir = std::env::temp_dir().join(format!("mos-flows-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sha_abc = hex::encode(Sha256::digest(b"abc"));
        let line = format!(
            r#"{{"client":"1.1.1.1:1","server":"2.2.2.2:2","client_isn":1,"server_isn":2,"client_guessed":false,"start_ts":0,"end_ts":1,"c2s_bytes":3,"s2c_bytes":0,"c2s_sha256":"{sha_abc}","s2c_sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","c2s_lost":0,"s2c_lost":0,"c2s_file":"a","s2c_file":"b"}}"#
        );
        std::fs::write(dir.join("flows.jsonl"), &line).unwrap();
        std::fs::write(dir.join("a"), b"abc").unwrap();
        let halves = read_dump(&dir).unwrap();
        assert_eq!(halves.len(), 2);
        // SHA-1("abc") and SHA-1("") as the corpus's reference table writes them.
        assert_eq!(halves[0].sha1, "a9993e364706816a");
        assert_eq!(halves[1].sha1, "da39a3ee5e6b4b0d");
        std::fs::write(dir.join("a"), b"abd").unwrap();
        let err = format!("{:#}", read_dump(&dir).unwrap_err());
        assert!(err.contains("hashes to"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
