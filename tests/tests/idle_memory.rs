//! Memory per idle connection: a connection that completed its handshake and carries no data
//! holds no stream chunk, so it costs its table slot, its hash index entry and its shared flow
//! slot, at most 512 B in all (the figure before stream buffers were chunked).
//!
//! The sensor replays two captures of idle connections (handshakes only, left open: 200 000
//! and 1 000 000 of them) with the default settings, publishing, in ordinary pages (hugepages
//! are not counted in RSS). Its `stats` line gives `RssAnon` and `RssShmem` when the input
//! ended, before it ends the open connections; the growth from the small capture to the large
//! one, divided by the 800 000 extra connections, is the memory per idle connection. Both
//! figures are deterministic to within a few KiB, so this is a memory check, not a timing.
//! Heavy: run it in release, as scripts/test.sh's integration stage does.

use anyhow::{ensure, Result};
use mos_tests::locate::sensor_bin;
use mos_tests::procs::{assert_no_panic, cmd, sensor_stat, Proc};
use mos_tests::runner::ScratchDir;
use mos_tests::synth::{idle, IdleOptions};
use std::path::Path;
use std::time::Duration;

const SMALL: u64 = 200_000;
const BIG: u64 = 1_000_000;
/// The most an idle connection may cost, bytes.
const LIMIT: f64 = 512.0;

/// Connections, `RssAnon` and `RssShmem` (KiB) when the input ended.
fn replay(dir: &Path, pcap: &Path) -> Result<(u64, u64, u64)> {
    let sensor = sensor_bin()?;
    let control = dir.join("control.sock");
    let mut p = Proc::spawn(
        "mos-sensor",
        cmd(
            &sensor,
            &[
                &"--no-config",
                &"--pcap",
                &pcap,
                &"--control",
                &control,
                &"--hugepages",
                &"off",
            ],
        ),
        dir,
    )?;
    let status = p.wait(Duration::from_secs(120))?;
    assert_no_panic(&p)?;
    let err = p.stderr();
    ensure!(status.success(), "mos-sensor failed:\n{err}");
    ensure!(
        sensor_stat(&err, "evicted")? == 0,
        "connections were evicted:\n{err}"
    );
    Ok((
        sensor_stat(&err, "conns")?,
        sensor_stat(&err, "rss_anon_kib")?,
        sensor_stat(&err, "rss_shmem_kib")?,
    ))
}

#[test]
fn an_idle_connection_costs_at_most_512_bytes() -> Result<()> {
    let dir = ScratchDir::new("idle-memory")?;
    let mut at = Vec::new();
    for conns in [SMALL, BIG] {
        let pcap = dir.path().join(format!("idle-{conns}.pcap"));
        idle(
            &IdleOptions {
                conns,
                ipv6: false,
                seed: 7,
            },
            &pcap,
        )?;
        let r = replay(dir.path(), &pcap)?;
        std::fs::remove_file(&pcap)?;
        ensure!(
            r.0 == conns,
            "{} connections tracked, {conns} expected",
            r.0
        );
        at.push(r);
    }
    let (c0, a0, s0) = at[0];
    let (c1, a1, s1) = at[1];
    let per = |x0: u64, x1: u64| (x1 as f64 - x0 as f64) * 1024.0 / (c1 - c0) as f64;
    let (private, shared) = (per(a0, a1), per(s0, s1));
    println!(
        "idle connections {c0} -> {c1}: RssAnon {a0} -> {a1} KiB, RssShmem {s0} -> {s1} KiB; \
         per idle connection {private:.1} B private + {shared:.1} B shared = {:.1} B",
        private + shared
    );
    // The shared flow slot alone is 192 B: a figure far below it would mean the measurement
    // missed the shared memory.
    ensure!(
        shared >= 150.0,
        "{shared:.1} B of shared memory per idle connection: the flow slots were not measured"
    );
    ensure!(
        private + shared <= LIMIT,
        "an idle connection costs {:.1} B ({private:.1} B private, {shared:.1} B shared), over {LIMIT} B",
        private + shared
    );
    Ok(())
}
