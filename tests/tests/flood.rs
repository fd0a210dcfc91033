//! A SYN flood against a bounded sensor: ten million SYNs, each on its own tuple (a new source
//! address per SYN, random ports), fed as a pcap stream into `mos-sensor --pcap -` from a thread
//! of this test (no capture file on disk), with `--max-flows 1000000` and a `--memcap`.
//!
//! The sensor must take them all and exit 0 without a panic, evict exactly the connections
//! beyond its table (10 000 000 - 1 000 000 = 9 000 000, each with CONN_END reason evicted),
//! keep its peak resident memory under the cap it was given, and do it in reasonable time.
//! Heavy: run it in release, as scripts/test.sh's integration stage does.

use anyhow::{ensure, Context, Result};
use mos_tests::locate::sensor_bin;
use mos_tests::pcap::{flags, tcp_frame, PcapWriter, Segment};
use mos_tests::procs::{assert_no_panic, cmd, sensor_stat, Proc};
use mos_tests::runner::ScratchDir;
use mos_tests::synth::XorShift;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

const SYNS: u64 = 10_000_000;
const MAX_FLOWS: u64 = 1_000_000;
const MEMCAP: &str = "1G";
const MEMCAP_BYTES: u64 = 1 << 30;
/// Far above the ~20 s this takes on two busy cores in release, far below CI's patience.
const TIMEOUT: Duration = Duration::from_secs(170);

/// Writes the flood as a pcap stream: SYN `i` comes from 10.0.0.0 + i (so every tuple is new)
/// on a random port, to a random port of one server, one microsecond after the previous one
/// (ten seconds in all, well inside the idle timeout, so no connection times out).
fn write_flood(out: impl Write) -> Result<()> {
    let mut w = PcapWriter::new(BufWriter::with_capacity(1 << 20, out))?;
    let mut rng = XorShift::new(0x5eed_f100d);
    let server = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    for i in 0..SYNS {
        let src = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32));
        let r = rng.next_u64();
        let seg = Segment {
            src: SocketAddr::new(src, 1024 + (r % 64000) as u16),
            dst: SocketAddr::new(server, (r >> 16) as u16 | 1),
            seq: (r >> 32) as u32,
            ack: 0,
            flags: flags::SYN,
            window: 64240,
            mss: None,
            payload: &[],
        };
        w.packet(1_700_000_000_000_000 + i, &tcp_frame(&seg))?;
    }
    w.finish()?;
    Ok(())
}

/// `VmHWM` of a live process, KiB (`None` once it is gone).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn syn_flood_is_bounded_by_max_flows_and_memcap() -> Result<()> {
    let sensor = sensor_bin()?;
    let dir = ScratchDir::new("flood")?;
    let control = dir.path().join("control.sock");
    let max_flows = MAX_FLOWS.to_string();
    let started = Instant::now();
    let (mut p, stdin) = Proc::spawn_with_stdin(
        "mos-sensor",
        cmd(
            &sensor,
            &[
                &"--pcap",
                &"-",
                &"--control",
                &control,
                &"--max-flows",
                &max_flows,
                &"--memcap",
                &MEMCAP,
                // Stream chunks, packet log and event rings small: the flood carries no
                // payload, and what is measured is the connection state.
                &"--stream-chunks",
                &"256",
                &"--chunk-kib",
                &"64",
                &"--pktlog-frames",
                &"4096",
                &"--pktlog-kib",
                &"1024",
                &"--event-ring",
                &"4096",
                &"--max-analyzers",
                &"4",
                // Hugepages are not counted in RSS: ordinary pages, so the shared flow slots
                // are in the figure.
                &"--hugepages",
                &"off",
            ],
        ),
        dir.path(),
    )?;
    let writer = std::thread::spawn(move || write_flood(stdin));
    let pid = p.pid();
    let mut sampled = 0;
    let status = loop {
        if let Some(kib) = peak_rss_kib(pid) {
            sampled = sampled.max(kib);
        }
        if let Some(s) = p.poll()? {
            break s;
        }
        ensure!(
            started.elapsed() < TIMEOUT,
            "the flood took longer than {TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer panicked"))?
        .context("writing the flood")?;
    let err = p.stderr();
    assert_no_panic(&p)?;
    ensure!(status.success(), "the sensor failed ({status}):\n{err}");

    let frames = sensor_stat(&err, "frames")?;
    let conns = sensor_stat(&err, "conns")?;
    let evicted = sensor_stat(&err, "evicted")?;
    let peak = sensor_stat(&err, "peak_rss_kib")?.max(sampled);
    let bound = sensor_stat(&err, "mem_bound_kib")?;
    println!(
        "{SYNS} SYNs, --max-flows {MAX_FLOWS}: {conns} connections, {evicted} evicted in {:.1} s ({:.2} M SYN/s); peak RSS {} MiB, {} B per tracked connection (process and buffers included); budget {} MiB, --memcap {MEMCAP}",
        elapsed.as_secs_f64(),
        SYNS as f64 / elapsed.as_secs_f64() / 1e6,
        peak / 1024,
        peak * 1024 / MAX_FLOWS,
        bound / 1024,
    );
    println!("sensor stderr:\n{}", err.trim_end());
    ensure!(frames == SYNS, "{frames} frames read, not {SYNS}");
    ensure!(conns == SYNS, "{conns} connections, not {SYNS}");
    // Every SYN after the first MAX_FLOWS finds the table full and evicts the oldest.
    ensure!(
        evicted == SYNS - MAX_FLOWS,
        "{evicted} evicted, not {}",
        SYNS - MAX_FLOWS
    );
    ensure!(
        err.contains(&format!("{} open at end", MAX_FLOWS)),
        "not {MAX_FLOWS} open at the end:\n{err}"
    );
    ensure!(
        bound * 1024 <= MEMCAP_BYTES,
        "the budget {bound} KiB exceeds the cap"
    );
    ensure!(
        peak * 1024 < MEMCAP_BYTES,
        "peak RSS {peak} KiB is over --memcap {MEMCAP}"
    );
    ensure!(
        peak <= bound,
        "peak RSS {peak} KiB is over the budget {bound} KiB"
    );
    Ok(())
}

/// Over the cap, the sensor names the largest part's setting: with the defaults, the
/// analyzers' event rings (64 analyzers, each counted as its rings in whole 2 MiB hugepages);
/// with fewer analyzers, the connection table; with a large stream pool, the pool.
#[test]
fn a_configuration_over_the_cap_is_refused_naming_the_setting() -> Result<()> {
    let dir = ScratchDir::new("memcap")?;
    let control = dir.path().join("control.sock");
    let cases: [(&[&str], &str); 3] = [
        (
            &[],
            "lower --max-analyzers or --event-ring, or raise --memcap",
        ),
        (
            &["--max-analyzers", "8"],
            "lower --max-flows, or raise --memcap",
        ),
        (
            &["--stream-chunks", "65536"],
            "lower --stream-chunks or --chunk-kib, or raise --memcap",
        ),
    ];
    for (i, (extra, lower)) in cases.into_iter().enumerate() {
        let mut c = cmd(
            &sensor_bin()?,
            &[
                &"--pcap",
                &"-",
                &"--control",
                &control,
                &"--memcap",
                &"512M",
            ],
        );
        c.args(extra);
        let mut p = Proc::spawn(&format!("mos-sensor-{i}"), c, dir.path())?;
        p.expect_code(1, Duration::from_secs(20))?;
        mos_tests::procs::assert_one_line(
            &p,
            &["mos-sensor: error:", "--memcap is 512 MiB", lower],
        )
        .with_context(|| format!("with {extra:?}"))?;
    }
    Ok(())
}
