//! mos-sensor must reassemble generated captures exactly: every direction present, same
//! bytes, nothing lost, nothing extra. Needs a built sensor (`cargo build -p mos-sensor`).

use anyhow::Result;
use mos_tests::locate::sensor_bin;
use mos_tests::matcher::compare;
use mos_tests::runner::{dump_capture_with, ScratchDir};
use mos_tests::synth::{
    bulk, fragmented, short_flows, BulkOptions, ExpectedDir, FragmentedOptions, ShortFlowsOptions,
};
use mos_tests::truth::TruthRow;
use std::path::Path;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);

fn check_exact(pcap: &Path, expected: &[ExpectedDir]) -> Result<()> {
    check_exact_with(pcap, expected, &[])
}

fn check_exact_with(pcap: &Path, expected: &[ExpectedDir], extra: &[&str]) -> Result<()> {
    let bad = mismatches(pcap, expected, extra)?;
    assert!(
        bad.is_empty(),
        "{} of {} directions wrong in {}:\n{}",
        bad.len(),
        expected.len(),
        pcap.display(),
        bad.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
    Ok(())
}

/// What differs between the sensor's dump of `pcap` (run with `extra` arguments) and the
/// generator's streams, one line per wrong, missing or extra direction.
fn mismatches(pcap: &Path, expected: &[ExpectedDir], extra: &[&str]) -> Result<Vec<String>> {
    let ours = dump_capture_with(&sensor_bin()?, pcap, TIMEOUT, extra)?;
    let truth: Vec<TruthRow> = expected
        .iter()
        .enumerate()
        .map(|(i, e)| TruthRow {
            stream: i as u32,
            dir: String::new(),
            src: e.src,
            dst: e.dst,
            isn_src: None,
            bytes: e.bytes,
            sha256: e.sha256.clone(),
            lost: 0,
            agree: "generator".into(),
        })
        .collect();
    let c = compare(&truth, &ours);
    let mut bad = Vec::new();
    for (t, o) in truth.iter().zip(&c.outcomes) {
        match o.ours().map(|oi| &ours[oi]) {
            Some(h) if o.is_match() && h.lost == 0 => {}
            Some(h) => bad.push(format!(
                "{} -> {}: ours {} B lost {} vs {} B",
                t.src, t.dst, h.bytes, h.lost, t.bytes
            )),
            None => bad.push(format!("{} -> {}: missing ({} B)", t.src, t.dst, t.bytes)),
        }
    }
    for &oi in &c.extras {
        let h = &ours[oi];
        bad.push(format!("extra: {} -> {} {} B", h.src, h.dst, h.bytes));
    }
    Ok(bad)
}

#[test]
fn short_flows_reassemble_exactly() -> Result<()> {
    let dir = ScratchDir::new("synthetic-short")?;
    let pcap = dir.path().join("short.pcap");
    let o = ShortFlowsOptions {
        conns: 200,
        concurrency: 64,
        ipv6: false,
        seed: 1,
    };
    let expected = short_flows(&o, &pcap)?;
    check_exact(&pcap, &expected)
}

/// Closed connections give their chunks back at once, so a pool smaller than the number of
/// connections (but larger than the concurrent ones' sides) loses nothing.
#[test]
fn short_flows_fit_a_pool_smaller_than_the_connection_count() -> Result<()> {
    let dir = ScratchDir::new("synthetic-small-pool")?;
    let pcap = dir.path().join("short.pcap");
    let o = ShortFlowsOptions {
        conns: 1000,
        concurrency: 32,
        ipv6: false,
        seed: 7,
    };
    let expected = short_flows(&o, &pcap)?;
    check_exact_with(
        &pcap,
        &expected,
        &["--stream-chunks", "96", "--chunk-kib", "4"],
    )
}

#[test]
fn short_flows_over_ipv6_reassemble_exactly() -> Result<()> {
    let dir = ScratchDir::new("synthetic-short6")?;
    let pcap = dir.path().join("short6.pcap");
    let o = ShortFlowsOptions {
        conns: 50,
        concurrency: 16,
        ipv6: true,
        seed: 2,
    };
    let expected = short_flows(&o, &pcap)?;
    check_exact(&pcap, &expected)
}

#[test]
fn bulk_transfer_reassembles_exactly() -> Result<()> {
    let dir = ScratchDir::new("synthetic-bulk")?;
    let pcap = dir.path().join("bulk.pcap");
    let o = BulkOptions {
        bytes: 2 << 20,
        mss: 1448,
        conns: 1,
        ipv6: false,
        seed: 3,
    };
    let expected = bulk(&o, &pcap)?;
    check_exact(&pcap, &expected)
}

/// One connection whose second data segment ("world!") has a wrong TCP checksum, followed, if
/// `retransmit`, by a good copy of it; then "bye", the server's ACK of everything, and a FIN
/// handshake. Returns the capture's path.
fn bad_checksum_capture(dir: &Path, retransmit: bool) -> Result<std::path::PathBuf> {
    use mos_tests::pcap::{flags::*, tcp_frame, PcapWriter, Segment};
    let c: std::net::SocketAddr = "10.0.0.1:40000".parse()?;
    let s: std::net::SocketAddr = "10.0.0.2:80".parse()?;
    let seg = |from_client: bool, seq: u32, ack: u32, flags: u8, payload: &'static [u8]| {
        let (src, dst) = if from_client { (c, s) } else { (s, c) };
        tcp_frame(&Segment {
            src,
            dst,
            seq,
            ack,
            flags,
            window: 65535,
            mss: None,
            payload,
        })
    };
    let mut bad = seg(true, 1007, 5001, PSH | ACK, b"world!");
    // The TCP checksum field: after Ethernet (14), IPv4 (20) and 16 bytes of TCP header.
    bad[14 + 20 + 16] ^= 0xff;
    let mut frames = vec![
        seg(true, 1000, 0, SYN, b""),
        seg(false, 5000, 1001, SYN | ACK, b""),
        seg(true, 1001, 5001, ACK, b""),
        seg(true, 1001, 5001, PSH | ACK, b"hello "),
        bad,
    ];
    if retransmit {
        frames.push(seg(true, 1007, 5001, PSH | ACK, b"world!"));
    }
    frames.extend([
        seg(true, 1013, 5001, PSH | ACK, b"bye"),
        seg(false, 5001, 1016, ACK, b""),
        seg(true, 1016, 5001, FIN | ACK, b""),
        seg(false, 5001, 1017, FIN | ACK, b""),
        seg(true, 1017, 5002, ACK, b""),
    ]);
    let path = dir.join(format!("bad-checksum-{retransmit}.pcap"));
    let mut w = PcapWriter::new(std::fs::File::create(&path)?)?;
    for (i, f) in frames.iter().enumerate() {
        w.packet(1_000_000 + 1000 * i as u64, f)?;
    }
    w.finish()?;
    Ok(path)
}

/// The client's stream (bytes, SHA-256, lost) as the sensor dumped it with `extra` flags.
fn client_stream(pcap: &Path, extra: &[&str]) -> Result<(u64, String, u64)> {
    let ours = dump_capture_with(&sensor_bin()?, pcap, TIMEOUT, extra)?;
    let h = ours
        .iter()
        .find(|h| h.src.port() == 40000)
        .ok_or_else(|| anyhow::anyhow!("no client stream in {ours:?}"))?;
    Ok((h.bytes, h.sha256.clone(), h.lost))
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[test]
fn a_bad_checksum_is_kept_by_default_and_dropped_on_request() -> Result<()> {
    let dir = ScratchDir::new("bad-checksum")?;
    let whole = b"hello world!bye";
    let mut holed = *whole;
    holed[6..12].fill(0);

    let lone = bad_checksum_capture(dir.path(), false)?;
    // Counted, kept: the segment's bytes are in the stream.
    assert_eq!(
        client_stream(&lone, &[])?,
        (15, sha256_hex(whole), 0),
        "default"
    );
    // Dropped before the tracker: the server acknowledged bytes the sensor never took, so
    // they are a gap (zeros in the dump, counted as lost).
    assert_eq!(
        client_stream(&lone, &["--drop-bad-checksums"])?,
        (15, sha256_hex(&holed), 6),
        "--drop-bad-checksums without a retransmission"
    );

    // With a good retransmission, dropping the bad copy loses nothing.
    let rexmit = bad_checksum_capture(dir.path(), true)?;
    for extra in [&[][..], &["--drop-bad-checksums"][..]] {
        assert_eq!(
            client_stream(&rexmit, extra)?,
            (15, sha256_hex(whole), 0),
            "{extra:?} with a retransmission"
        );
    }
    Ok(())
}

/// TCP segments sent as IP fragments (shuffled, some twice) reassemble exactly, over IPv4
/// and IPv6, with one worker and with two (whose reader reassembles before it hashes); with
/// reassembly off the data is lost.
#[test]
fn fragmented_segments_reassemble_exactly() -> Result<()> {
    for ipv6 in [false, true] {
        let dir = ScratchDir::new(if ipv6 {
            "synthetic-frag6"
        } else {
            "synthetic-frag"
        })?;
        let pcap = dir.path().join("frag.pcap");
        let o = FragmentedOptions {
            bytes: 200_000,
            mss: 8000,
            piece: if ipv6 { 1232 } else { 1480 },
            conns: 6,
            ipv6,
            seed: 11,
        };
        let expected = fragmented(&o, &pcap)?;
        check_exact(&pcap, &expected)?;
        check_exact_with(&pcap, &expected, &["--workers", "2"])?;
        check_exact_with(&pcap, &expected, &["--workers", "3"])?;
        let off = mismatches(&pcap, &expected, &["--frag-memory", "0"])?;
        assert_eq!(off.len(), expected.len(), "without reassembly: {off:?}");
    }
    Ok(())
}
