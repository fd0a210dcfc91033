//! The DPDK backend on the corpus: each capture read through DPDK's `net_pcap` virtual device
//! (`mos-sensor --dpdk '... --vdev=net_pcap0,rx_pcap=FILE'`), published to `mos-dump` attached
//! as its own process, gives what `mos-dump` gives with the pcap backend on the same file.
//!
//! A DPDK port carries Ethernet frames with their captured bytes and, from `net_pcap`, their
//! time in microseconds; it has no field for the length on the wire. So the test takes every
//! corpus capture whose frames are all Ethernet and none cut by the snap length, and counts the
//! others as not applicable, by reason (a capture of another link type, or cut short, cannot be
//! what a NIC delivers). For captures whose times are whole microseconds the two dumps must be
//! identical byte for byte; for finer ones every stream file must be identical and every
//! `flows.jsonl` record equal except that its times agree to the microsecond.
//!
//! Each DPDK sensor is its own process (the EAL starts once per process); `--no-shconf` lets
//! them run side by side.

use anyhow::{ensure, Context, Result};
use mos_sensor::capture::{CaptureBackend, FileCapture, LinkType};
use mos_tests::dumps::{same_tree, tree};
use mos_tests::locate::{bin, corpus_dir, list_captures, sensor_bin};
use mos_tests::procs::{assert_no_panic, cmd, tail, wait_for_socket, Proc};
use mos_tests::runner::{default_workers, parallel_map, ScratchDir};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Whether DPDK can carry this capture unchanged: `Ok(true)` when every time is a whole
/// microsecond, `Ok(false)` when some are finer, `Err(reason)` when it cannot.
fn dpdk_carries(pcap: &Path) -> Result<bool, String> {
    let mut cap = FileCapture::open(pcap).map_err(|e| format!("unreadable: {e}"))?;
    let mut whole_us = true;
    let mut frames = 0u64;
    loop {
        match cap.next_packet() {
            Ok(Some(p)) => {
                frames += 1;
                if p.link != LinkType::Ethernet {
                    return Err("not Ethernet".into());
                }
                if p.orig_len as usize > p.data.len() {
                    return Err("frames cut by the snap length".into());
                }
                whole_us &= p.ts_ns % 1000 == 0;
            }
            Ok(None) => break,
            Err(_) => return Err("truncated or malformed file".into()),
        }
    }
    if frames == 0 {
        return Err("no frames".into());
    }
    Ok(whole_us)
}

/// `flows.jsonl` records as JSON objects, in file order.
fn records(dir: &Path) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let text = std::fs::read_to_string(dir.join("flows.jsonl"))?;
    text.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

/// Whether two records are equal but for times that agree to the microsecond (net_pcap
/// truncates finer times to microseconds).
fn same_to_the_microsecond(
    a: &serde_json::Map<String, serde_json::Value>,
    b: &serde_json::Map<String, serde_json::Value>,
) -> bool {
    let time = |r: &serde_json::Map<String, serde_json::Value>, k: &str| {
        r.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN)
    };
    a.len() == b.len()
        && a.iter().all(|(k, v)| match k.as_str() {
            "start_ts" | "end_ts" => (time(a, k) - time(b, k)).abs() < 1.5e-6,
            _ => b.get(k) == Some(v),
        })
}

/// Runs `mos-sensor INPUT... --control SOCK --lossless --wait-analyzers 1` with `mos-dump`
/// attached, writing into `out`; returns the sensor's stderr.
fn published_dump(w: &Path, tag: &str, input: &[&str], out: &Path) -> Result<String> {
    let control = w.join(format!("{tag}.sock"));
    let mut c = cmd(&sensor_bin()?, &[]);
    c.args(input).args([
        "--control",
        control.to_str().context("path")?,
        "--lossless",
        "--wait-analyzers",
        "1",
        "--hugepages",
        "off",
    ]);
    let mut sensor = Proc::spawn(&format!("{tag}-sensor"), c, w)?;
    wait_for_socket(&mut sensor, &control, TIMEOUT)?;
    let mut dump = Proc::spawn(
        &format!("{tag}-mos-dump"),
        cmd(&bin("mos-dump")?, &[&"--control", &control, &"--out", &out]),
        w,
    )?;
    let deadline = Instant::now() + TIMEOUT;
    let (s, d) = (sensor.wait_until(deadline)?, dump.wait_until(deadline)?);
    ensure!(
        s.success(),
        "the {tag} sensor exited with {s}; stderr:\n{}",
        tail(&sensor.stderr())
    );
    ensure!(
        d.success(),
        "mos-dump ({tag}) exited with {d}; stderr:\n{}",
        tail(&dump.stderr())
    );
    assert_no_panic(&sensor)?;
    assert_no_panic(&dump)?;
    Ok(sensor.stderr())
}

/// The receive errors a live sensor reported in its summary.
fn receive_errors(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| {
            let (before, _) = l.split_once(" receive errors")?;
            before.rsplit(' ').next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// What one capture gave: compared (`Ok(None)`), or not applicable (`Ok(Some(reason))`).
fn check(pcap: &Path, name: &str, whole_us: bool) -> Result<Option<String>> {
    let work = ScratchDir::new(&format!("dp-{name}"))?;
    let w = work.path();
    let (reference, out) = (w.join("ref"), w.join("out"));
    let file = pcap.to_str().context("path")?;
    published_dump(w, "pcap", &["--pcap", file], &reference)?;
    let eal = format!("--no-huge -m 256 --no-pci --no-shconf -l 0 --vdev=net_pcap0,rx_pcap={file}");
    // net_pcap returns nothing only once the file is read: a short quiet spell is its end.
    let err = published_dump(
        w,
        "dpdk",
        &["--dpdk", &eal, "--stop-after-idle", "0.3"],
        &out,
    )?;
    let errors = receive_errors(&err);
    let read_nothing = err.contains("mos-sensor: 0 frames (");
    if errors > 0 && read_nothing {
        // libpcap (inside net_pcap) could not read this file at all, where mos's own reader
        // could; the DPDK side said so rather than losing frames silently.
        return Ok(Some(format!(
            "libpcap in net_pcap cannot read it ({errors} receive errors reported)"
        )));
    }
    if whole_us {
        same_tree(&reference, &out)?;
        return Ok(None);
    }
    // Finer times: streams identical, records equal to the microsecond.
    let (a, b) = (tree(&reference)?, tree(&out)?);
    let streams = |t: &BTreeMap<std::path::PathBuf, Vec<u8>>| {
        t.iter()
            .filter(|(p, _)| p.as_path() != Path::new("flows.jsonl"))
            .map(|(p, v)| (p.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    ensure!(
        streams(&a) == streams(&b),
        "stream files differ between the pcap and the DPDK backend"
    );
    let (ra, rb) = (records(&reference)?, records(&out)?);
    ensure!(
        ra.len() == rb.len()
            && ra
                .iter()
                .zip(&rb)
                .all(|(x, y)| same_to_the_microsecond(x, y)),
        "flows.jsonl differs beyond the microsecond:\npcap: {:?}\ndpdk: {:?}",
        ra.iter()
            .zip(&rb)
            .find(|(x, y)| !same_to_the_microsecond(x, y))
            .map(|p| p.0),
        ra.iter()
            .zip(&rb)
            .find(|(x, y)| !same_to_the_microsecond(x, y))
            .map(|p| p.1),
    );
    Ok(None)
}

#[test]
fn dpdk_net_pcap_through_mos_dump_matches_the_pcap_backend_on_the_corpus() -> Result<()> {
    let start = Instant::now();
    let corpus = corpus_dir()?;
    let captures = list_captures(&corpus)?;
    let mut eligible = Vec::new();
    let mut excluded: BTreeMap<String, usize> = BTreeMap::new();
    for c in &captures {
        match dpdk_carries(&corpus.join("pcaps").join(c)) {
            Ok(us) => eligible.push((c.clone(), us)),
            Err(why) => *excluded.entry(why).or_default() += 1,
        }
    }
    let results = parallel_map(&eligible, default_workers(), |(c, us)| {
        check(&corpus.join("pcaps").join(c), c, *us)
    });
    let mut failed = Vec::new();
    let mut compared = 0;
    for ((c, _), r) in eligible.iter().zip(&results) {
        match r {
            Ok(None) => compared += 1,
            Ok(Some(why)) => *excluded.entry(why.clone()).or_default() += 1,
            Err(e) => failed.push(format!("--- {c}: {e:#}")),
        }
    }
    let fine = eligible.iter().filter(|(_, us)| !us).count();
    println!(
        "{compared} of {} corpus captures compared through DPDK net_pcap and mos-dump ({fine} of the {} tried have sub-microsecond times, compared to the microsecond) in {:.1} s; not applicable: {excluded:?}",
        captures.len(),
        eligible.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "{} of {} captures differ:\n{}",
        failed.len(),
        eligible.len(),
        failed
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Most of the corpus is Ethernet: a change that excluded it would hollow the test out.
    ensure!(
        compared * 4 > captures.len() * 3,
        "only {compared} of {} captures were compared",
        captures.len()
    );
    Ok(())
}

#[test]
fn receive_errors_are_read_from_the_summary() {
    let line = "mos-sensor: 0 frames dropped by the capture before the sensor saw them; 104 receive errors, 0 frames lost for want of an mbuf";
    assert_eq!(receive_errors(line), 104);
    assert_eq!(receive_errors("mos-sensor: nothing here"), 0);
}

/// Where the dynamic loader finds `soname`, from `ldconfig -p`, with links resolved.
fn system_library(soname: &str) -> Result<std::path::PathBuf> {
    let out = std::process::Command::new("ldconfig")
        .arg("-p")
        .output()
        .context("run ldconfig -p")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let path = text
        .lines()
        .filter(|l| l.trim_start().starts_with(&format!("{soname} ")))
        .find_map(|l| l.split_once("=> ").map(|(_, p)| p.trim().to_string()))
        .with_context(|| format!("ldconfig -p does not list {soname}"))?;
    Ok(std::fs::canonicalize(&path)?)
}

/// DPDK is loaded only for `--dpdk`: the sensor's ELF names no DPDK library, a replay runs
/// where DPDK's EAL library cannot be loaded, and `--dpdk` there fails with one line naming
/// the library. The library is hidden by mounting /dev/null over it in a mount namespace of
/// the test's own (`unshare -m`), which leaves the system untouched.
#[test]
fn dpdk_is_loaded_only_for_dpdk() -> Result<()> {
    let sensor = sensor_bin()?;
    let elf = std::process::Command::new("readelf")
        .arg("-d")
        .arg(&sensor)
        .output()
        .context("run readelf -d")?;
    let dynamic = String::from_utf8_lossy(&elf.stdout);
    ensure!(
        elf.status.success() && dynamic.contains("(NEEDED)"),
        "readelf -d {} failed: {}",
        sensor.display(),
        String::from_utf8_lossy(&elf.stderr)
    );
    ensure!(
        !dynamic.contains("librte_"),
        "the sensor links DPDK at start-up:\n{dynamic}"
    );

    let eal = system_library("librte_eal.so.23")?;
    let pcap = corpus_dir()?
        .join("pcaps")
        .join("dnscap__src__test__1qtcpnosyn.pcap");
    let hidden = |args: &[&str]| -> Result<std::process::Output> {
        let mut c = std::process::Command::new("unshare");
        c.args([
            "-m",
            "sh",
            "-c",
            r#"mount --bind /dev/null "$1" && shift && exec "$@""#,
            "sh",
        ])
        .arg(&eal)
        .arg(&sensor)
        .args(args)
        .env("MOS_SENSOR_CONFIG", "");
        c.output().context("run the sensor under unshare -m")
    };
    let replay = hidden(&["--pcap", pcap.to_str().context("path")?, "--no-publish"])?;
    let stderr = String::from_utf8_lossy(&replay.stderr);
    ensure!(
        replay.status.success() && stderr.contains("frames=8 conns=1"),
        "a replay without a loadable DPDK failed ({}):\n{stderr}",
        replay.status
    );
    let live = hidden(&[
        "--dpdk",
        "--no-huge --no-pci --no-shconf --vdev=net_null0",
        "--no-publish",
    ])?;
    let stderr = String::from_utf8_lossy(&live.stderr);
    ensure!(
        !live.status.success()
            && stderr.lines().count() == 1
            && stderr.contains("could not load DPDK")
            && stderr.contains("librte_eal.so.23"),
        "--dpdk without a loadable DPDK ({}):\n{stderr}",
        live.status
    );
    Ok(())
}
