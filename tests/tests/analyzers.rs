//! Multi-process tests: `mos-sensor` publishing to analyzers that attach as separate processes
//! (`mos-dump`, `mos-flowstat`, and `mos-test-analyzer` where a test needs an analyzer to do
//! something the shipped ones do not). Needs the workspace's binaries built in the same profile
//! (`cargo build --release --bins`), and root for the test that runs an analyzer as another
//! user.
//!
//! Every child process is held by a guard that kills it if the test fails, and every wait has
//! a deadline, so a test fails rather than hangs.

use anyhow::{bail, ensure, Context, Result};
use mos_tests::dumps::same_tree;
use mos_tests::flows::{parse_flows, read_dump, FlowRecord};
use mos_tests::locate::{bin, corpus_dir, list_captures, sensor_bin};
use mos_tests::procs::{
    assert_no_panic, assert_one_line, cmd, open_to_other_users, tail, wait_for, wait_for_socket,
    Proc,
};
use mos_tests::runner::{default_workers, parallel_map, run_sensor_dump, ScratchDir};
use mos_tests::synth::{
    bulk, idle, short_flows, stretch_time, BulkOptions, IdleOptions, ShortFlowsOptions,
};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest any single process of these tests may take.
const TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Processes

/// Starts `mos-sensor --pcap PCAP --control CONTROL EXTRA...` and waits for its socket.
fn start_sensor(work: &Path, pcap: &Path, control: &Path, extra: &[&str]) -> Result<Proc> {
    let mut c = cmd(&sensor_bin()?, &[&"--pcap", &pcap, &"--control", &control]);
    c.args(extra);
    let mut s = Proc::spawn("sensor", c, work)?;
    wait_for_socket(&mut s, control, TIMEOUT)?;
    Ok(s)
}

fn analyzer(work: &Path, name: &str, program: &str, args: &[&dyn AsRef<OsStr>]) -> Result<Proc> {
    Proc::spawn(name, cmd(&bin(program)?, args), work)
}

// ---------------------------------------------------------------------------------------------
// Outputs

/// `mos-sensor --no-publish --dump DIR` with the default sizes: what analyzers must reproduce.
fn reference_dump(pcap: &Path, work: &Path) -> Result<PathBuf> {
    let dir = work.join("reference");
    let logs = work.join("reference-logs");
    std::fs::create_dir_all(&logs)?;
    run_sensor_dump(&sensor_bin()?, pcap, &dir, &logs, TIMEOUT, &[])?;
    Ok(dir)
}

/// The `key=value` fields of the first stdout line starting with `tag `.
fn fields(text: &str, tag: &str) -> Result<BTreeMap<String, String>> {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{tag} ")))
        .with_context(|| format!("no {tag:?} line in:\n{text}"))?;
    Ok(line
        .split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn num(f: &BTreeMap<String, String>, key: &str) -> Result<u64> {
    f.get(key)
        .with_context(|| format!("no {key} in {f:?}"))?
        .parse()
        .with_context(|| format!("{key} in {f:?}"))
}

/// The numbers of the sensor's `published ... events` summary line:
/// (events, dropped, waits, detached for stalling).
fn published(sensor_err: &str) -> Result<(u64, u64, u64, u64)> {
    let line = sensor_err
        .lines()
        .find(|l| l.starts_with("mos-sensor: published "))
        .with_context(|| format!("no publication summary in:\n{sensor_err}"))?;
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(u64::MAX))
        .collect();
    ensure!(n.len() >= 4, "cannot read {line:?}");
    Ok((n[0], n[1], n[2], n[3]))
}

/// Replay speed for [`paced_capture`]: about 4 s of wall time.
const PACE: &str = "10";

/// A capture of 250 short connections, 16 at a time, spread over about 40 s of capture time
/// (replayed in about 4 s at `--speed 10`), so that connections end all along the replay (5 s
/// of capture time after they close) and a `mos-dump` writes files as it goes.
fn paced_capture(work: &Path) -> Result<PathBuf> {
    stretched(
        work,
        &ShortFlowsOptions {
            conns: 250,
            concurrency: 16,
            ipv6: false,
            seed: 11,
        },
        1000,
    )
}

/// Short connections as [`short_flows`] makes them, whose clock (it spaces packets by
/// microseconds) runs `factor` times slower: `work/stretched.pcap`.
fn stretched(work: &Path, opts: &ShortFlowsOptions, factor: u64) -> Result<PathBuf> {
    let dense = work.join("dense.pcap");
    short_flows(opts, &dense)?;
    let pcap = work.join("stretched.pcap");
    stretch_time(&dense, &pcap, factor)?;
    Ok(pcap)
}

/// Files written so far into a dump directory.
fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

// ---------------------------------------------------------------------------------------------
// 1. The corpus through the shipped analyzers

/// What one capture gave: `Ok(sensor exit code)` or why it failed.
fn corpus_capture(pcap: &Path, name: &str) -> Result<i32> {
    let work = ScratchDir::new(&format!("an-{name}"))?;
    let w = work.path();
    let (control, reference, out) = (w.join("c.sock"), w.join("ref"), w.join("out"));
    let deadline = Instant::now() + TIMEOUT;
    let mut sensor = start_sensor(
        w,
        pcap,
        &control,
        &[
            "--wait-analyzers",
            "2",
            "--dump",
            reference.to_str().context("path")?,
        ],
    )?;
    let mut dump = analyzer(
        w,
        "mos-dump",
        "mos-dump",
        &[&"--control", &control, &"--out", &out],
    )?;
    let mut stat = analyzer(
        w,
        "mos-flowstat",
        "mos-flowstat",
        &[&"--control", &control, &"--interval", &"30"],
    )?;
    let waited = [&mut sensor, &mut dump, &mut stat].map(|p| p.wait_until(deadline));
    if waited.iter().any(Result::is_err) {
        let mut report = String::new();
        for (p, w) in [&sensor, &dump, &stat].iter().zip(&waited) {
            report += &match w {
                Ok(st) => format!(
                    "{} exited with {st}; stderr:\n{}\n",
                    p.name(),
                    tail(&p.stderr())
                ),
                Err(e) => format!("{e:#}\n"),
            };
        }
        bail!("{report}");
    }
    let [s, d, f] = waited.map(|w| w.unwrap_or_default());
    let serr = sensor.stderr();
    let truncated = serr.contains("the replay stopped there");
    ensure!(
        s.code() == Some(0) || (s.code() == Some(2) && truncated),
        "sensor exited with {s}; stderr:\n{}",
        tail(&serr)
    );
    ensure!(
        d.success(),
        "mos-dump exited with {d}; stderr:\n{}",
        dump.stderr()
    );
    ensure!(
        f.success(),
        "mos-flowstat exited with {f}; stderr:\n{}",
        stat.stderr()
    );
    assert_no_panic(&dump)?;
    assert_no_panic(&stat)?;
    same_tree(&reference, &out)?;
    // mos-flowstat saw every connection start and end.
    let conns = std::fs::read_to_string(reference.join("flows.jsonl"))?
        .lines()
        .count();
    let want = format!("mos-flowstat: {conns} connections seen, {conns} ended");
    let ferr = stat.stderr();
    ensure!(
        ferr.contains(&want) && ferr.contains("; 0 still open"),
        "expected {want:?} with none open, mos-flowstat said:\n{ferr}"
    );
    Ok(s.code().unwrap_or(-1))
}

/// Every corpus capture, with `mos-dump` and `mos-flowstat` attached: `mos-dump` writes what
/// the sensor's own `--dump` writes (which tests/tests/corpus.rs checks against the
/// references), byte for byte.
#[test]
fn corpus_through_analyzers_matches_the_sensors_dump() -> Result<()> {
    let start = Instant::now();
    let corpus = corpus_dir()?;
    let captures = list_captures(&corpus)?;
    let results = parallel_map(&captures, default_workers(), |c| {
        corpus_capture(&corpus.join("pcaps").join(c), c)
    });
    let mut failed = Vec::new();
    let mut truncated = 0;
    for (c, r) in captures.iter().zip(&results) {
        match r {
            Ok(2) => truncated += 1,
            Ok(_) => {}
            Err(e) => failed.push(format!("--- {c}: {e:#}")),
        }
    }
    println!(
        "{} captures through mos-dump and mos-flowstat ({truncated} truncated, exit 2) in {:.1} s",
        captures.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "{} of {} captures failed:\n{}",
        failed.len(),
        captures.len(),
        failed
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

/// No corpus capture is cut short, so one is: the sensor stops at the cut with status 2 and
/// the analyzers still write what it published, identical to its own dump.
#[test]
fn a_truncated_capture_through_analyzers_exits_2_with_the_same_dump() -> Result<()> {
    let work = ScratchDir::new("an-truncated")?;
    let whole = std::fs::read(corpus_dir()?.join("pcaps/dpkt__examples__data__http.pcap"))?;
    let pcap = work.path().join("cut.pcap");
    std::fs::write(&pcap, &whole[..whole.len() - 20])?;
    assert_eq!(corpus_capture(&pcap, "cut.pcap")?, 2);
    Ok(())
}

/// A paced replay of 50 connections with data, a pause of 3 s, then 1100 connections that
/// only shake hands (nothing the dumps subscribe to): the analyzers catch up in the pause, so
/// their rings are empty whenever the sensor looks afterwards. Every connection is still open
/// at the end (the closed ones linger for 5 s), and they end in two calls after the last look.
/// Both `mos-dump` and a slow dump (the same code, sleeping 1 ms per callback) must still
/// write the sensor's own `flows.jsonl`. (The sensor took "empty" for "past every call to
/// come", and its second call freed the slots of the connections its first one ended before
/// the analyzers read their `CONN_END`: they wrote the time of the last data as `end_ts`, and
/// left out the connections they had seen no data of.)
#[test]
fn a_paced_replay_through_analyzers_matches_the_sensors_dump() -> Result<()> {
    let work = ScratchDir::new("an-paced-same")?;
    let w = work.path();
    let (data, quiet) = (w.join("data.pcap"), w.join("quiet.pcap"));
    short_flows(
        &ShortFlowsOptions {
            conns: 50,
            concurrency: 16,
            ipv6: false,
            seed: 7,
        },
        &data,
    )?;
    idle(
        &IdleOptions {
            conns: 1100,
            ipv6: false,
            seed: 8,
        },
        &quiet,
    )?;
    // A frame every 200 us of capture time: 0.1 s, the pause, 0.66 s; about 1.5 s at
    // --speed 2 (a pause is cut to 1 s).
    let pcap = w.join("paced.pcap");
    spaced(&[(&data, 0), (&quiet, 3_000_000)], 200, &pcap)?;
    let (control, reference) = (w.join("c.sock"), w.join("ref"));
    let (out, slow_out) = (w.join("out"), w.join("slow"));
    let mut sensor = start_sensor(
        w,
        &pcap,
        &control,
        &[
            "--wait-analyzers",
            "2",
            "--speed",
            "2",
            "--dump",
            reference.to_str().context("path")?,
        ],
    )?;
    let mut dump = analyzer(
        w,
        "mos-dump",
        "mos-dump",
        &[&"--control", &control, &"--out", &out],
    )?;
    let mut slow = analyzer(
        w,
        "slow",
        "mos-test-analyzer",
        &[
            &"--control",
            &control,
            &"dump",
            &"--out",
            &slow_out,
            &"--sleep-us",
            &"1000",
        ],
    )?;
    dump.expect_code(0, TIMEOUT)?;
    slow.expect_code(0, TIMEOUT)?;
    sensor.expect_code(0, TIMEOUT)?;
    let flows = std::fs::read_to_string(reference.join("flows.jsonl"))?;
    assert_eq!(flows.lines().count(), 1150);
    same_tree(&reference, &slow_out)?;
    same_tree(&reference, &out)
}

/// Writes the frames of classic little-endian pcaps into `out`, one part after the other,
/// one frame every `gap_us` microseconds from the first frame's time, and each part's first
/// frame the given microseconds later still.
fn spaced(parts: &[(&Path, u64)], gap_us: u64, out: &Path) -> Result<()> {
    let mut w = Vec::new();
    let mut t = None;
    for &(part, pause_us) in parts {
        let bytes = std::fs::read(part)?;
        if w.is_empty() {
            w.extend_from_slice(&bytes[..24]);
        }
        t = t.map(|t| t + pause_us);
        let mut at = 24;
        while at + 16 <= bytes.len() {
            let word = |i: usize| -> Result<u32> {
                Ok(u32::from_le_bytes(bytes[at + i..at + i + 4].try_into()?))
            };
            let ts = *t.get_or_insert(u64::from(word(0)?) * 1_000_000 + u64::from(word(4)?));
            let len = word(8)? as usize;
            w.extend_from_slice(&u32::try_from(ts / 1_000_000)?.to_le_bytes());
            w.extend_from_slice(&((ts % 1_000_000) as u32).to_le_bytes());
            w.extend_from_slice(&bytes[at + 8..at + 16 + len]);
            t = Some(ts + gap_us);
            at += 16 + len;
        }
        ensure!(
            at == bytes.len(),
            "{} does not end on a record",
            part.display()
        );
    }
    std::fs::write(out, w)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Lossless with a tiny stream pool and a slow analyzer

#[test]
fn slow_analyzer_with_a_tiny_stream_pool_loses_nothing() -> Result<()> {
    let work = ScratchDir::new("an-lossless")?;
    let w = work.path();
    let pcap = w.join("bulk.pcap");
    bulk(
        &BulkOptions {
            bytes: 300 << 10,
            mss: 1448,
            conns: 3,
            ipv6: false,
            seed: 5,
        },
        &pcap,
    )?;
    let reference = reference_dump(&pcap, w)?;
    let (control, out) = (w.join("c.sock"), w.join("out"));
    let mut sensor = start_sensor(
        w,
        &pcap,
        &control,
        &[
            "--wait-analyzers",
            "1",
            // The smallest pool: 18 chunks of 4 KiB for six sides of 300 KiB.
            "--stream-chunks",
            "18",
            "--chunk-kib",
            "4",
            "--event-ring",
            "64",
        ],
    )?;
    let mut slow = analyzer(
        w,
        "slow",
        "mos-test-analyzer",
        &[
            &"--control",
            &control,
            &"dump",
            &"--out",
            &out,
            &"--sleep-us",
            &"1000",
        ],
    )?;
    slow.expect_code(0, TIMEOUT)?;
    sensor.expect_code(0, TIMEOUT)?;
    same_tree(&reference, &out)?;
    let d = fields(&slow.stdout(), "dump")?;
    let c = fields(&slow.stdout(), "counters")?;
    assert_eq!(num(&d, "records")?, 3, "{d:?}");
    assert_eq!(num(&d, "bytes")?, 6 * (300 << 10), "{d:?}");
    assert_eq!(num(&d, "lost")?, 0, "{d:?}");
    for k in ["dropped", "malformed", "overruns", "gaps"] {
        assert_eq!(num(&c, k)?, 0, "{k} in {c:?}");
    }
    let (events, dropped, waits, stalled) = published(&sensor.stderr())?;
    assert_eq!(events, num(&c, "events")?, "events published vs consumed");
    assert_eq!((dropped, stalled), (0, 0), "{}", sensor.stderr());
    // The test is only worth something if the sensor had to wait for the analyzer.
    assert!(waits > 0, "the sensor never waited:\n{}", sensor.stderr());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Two analyzers: one killed, one stopped

#[test]
fn killed_analyzer_is_detached_and_the_other_completes() -> Result<()> {
    let work = ScratchDir::new("an-kill")?;
    let w = work.path();
    let pcap = paced_capture(w)?;
    let reference = reference_dump(&pcap, w)?;
    let control = w.join("c.sock");
    let (out_a, out_b) = (w.join("a"), w.join("b"));
    let mut sensor = start_sensor(
        w,
        &pcap,
        &control,
        &["--wait-analyzers", "2", "--speed", PACE],
    )?;
    let mut a = analyzer(
        w,
        "a",
        "mos-dump",
        &[&"--control", &control, &"--out", &out_a],
    )?;
    let mut b = analyzer(
        w,
        "b",
        "mos-dump",
        &[&"--control", &control, &"--out", &out_b],
    )?;
    // Both are ready and the replay is under way once connections have been written.
    wait_for("a's first connections", TIMEOUT, || {
        Ok(files_in(&out_a) >= 2)
    })?;
    a.signal(rustix::process::Signal::KILL)?;
    let killed = a.wait(TIMEOUT)?;
    assert_eq!(killed.code(), None, "a was killed by a signal");
    assert!(
        sensor.poll()?.is_none(),
        "the replay ended before a was killed: make the capture longer"
    );
    sensor.expect_code(0, TIMEOUT)?;
    b.expect_code(0, TIMEOUT)?;
    same_tree(&reference, &out_b)?;
    let serr = sensor.stderr();
    let detach = format!("detached: mos-dump (pid {})", a.pid());
    let at = serr
        .find(&detach)
        .with_context(|| format!("no {detach:?} in:\n{serr}"))?;
    // ... logged before the replay ended.
    let summary = serr.find("mos-sensor: published ").context("no summary")?;
    assert!(at < summary, "{serr}");
    Ok(())
}

#[test]
fn stopped_analyzer_is_detached_after_the_stall_timeout() -> Result<()> {
    let work = ScratchDir::new("an-stop")?;
    let w = work.path();
    let pcap = paced_capture(w)?;
    let reference = reference_dump(&pcap, w)?;
    let control = w.join("c.sock");
    let (out_a, out_b) = (w.join("a"), w.join("b"));
    let mut sensor = start_sensor(
        w,
        &pcap,
        &control,
        &[
            "--wait-analyzers",
            "2",
            "--speed",
            PACE,
            "--stall-timeout",
            "1",
            "--event-ring",
            "64",
        ],
    )?;
    let mut a = analyzer(
        w,
        "a",
        "mos-dump",
        &[&"--control", &control, &"--out", &out_a],
    )?;
    let mut b = analyzer(
        w,
        "b",
        "mos-dump",
        &[&"--control", &control, &"--out", &out_b],
    )?;
    wait_for("the first connections", TIMEOUT, || {
        Ok(files_in(&out_b) >= 2)
    })?;
    a.signal(rustix::process::Signal::STOP)?;
    let stopped_at = Instant::now();
    let line = format!("pid {}) made no progress for 1.0 s: detached", a.pid());
    wait_for("the sensor to detach the stopped analyzer", TIMEOUT, || {
        Ok(sensor.stderr().contains(&line) || sensor.poll()?.is_some())
    })?;
    let after = stopped_at.elapsed();
    let serr = sensor.stderr();
    assert!(serr.contains(&line), "no {line:?} in:\n{serr}");
    assert!(
        sensor.poll()?.is_none(),
        "the replay ended before the detach: make the capture longer\n{serr}"
    );
    assert!(
        after >= Duration::from_millis(800) && after <= Duration::from_secs(6),
        "detached {after:?} after SIGSTOP, expected about 1 s"
    );
    sensor.expect_code(0, TIMEOUT)?;
    b.expect_code(0, TIMEOUT)?;
    same_tree(&reference, &out_b)?;
    let (_, dropped, _, stalled) = published(&sensor.stderr())?;
    assert_eq!((dropped, stalled), (0, 1), "{}", sensor.stderr());
    // Woken up, the stopped analyzer learns it was detached: one line, a failure status.
    a.signal(rustix::process::Signal::CONT)?;
    let st = a.wait(Duration::from_secs(10))?;
    let aerr = a.stderr();
    assert!(
        !st.success() && st.code().is_some(),
        "a exited with {st}: {aerr}"
    );
    assert_eq!(aerr.trim_end().lines().count(), 1, "{aerr}");
    assert!(
        aerr.contains("detached") && aerr.contains("no progress"),
        "{aerr}"
    );
    assert_no_panic(&a)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. Read-only regions; who may attach

/// A small capture for tests that need some traffic.
fn small_capture(work: &Path) -> Result<PathBuf> {
    let pcap = work.join("small.pcap");
    short_flows(
        &ShortFlowsOptions {
            conns: 20,
            concurrency: 4,
            ipv6: false,
            seed: 3,
        },
        &pcap,
    )?;
    Ok(pcap)
}

/// The probe's verdicts, region by region.
fn assert_read_only(probe: &Proc) -> Result<()> {
    let out = probe.stdout();
    for region in ["main", "events"] {
        let line = format!("probe region={region} mprotect=EACCES mmap=EACCES");
        assert!(out.lines().any(|l| l == line), "no {line:?} in:\n{out}");
    }
    // Running consumed events, which writes the analyzer page.
    let c = fields(&out, "counters")?;
    assert!(num(&c, "events")? > 0, "{c:?}");
    Ok(())
}

#[test]
fn regions_are_read_only_in_an_attached_analyzer() -> Result<()> {
    let work = ScratchDir::new("an-ro")?;
    let w = work.path();
    let pcap = small_capture(w)?;
    let control = w.join("c.sock");
    let mut sensor = start_sensor(w, &pcap, &control, &["--wait-analyzers", "1"])?;
    let mut probe = analyzer(
        w,
        "probe",
        "mos-test-analyzer",
        &[&"--control", &control, &"probe"],
    )?;
    probe.expect_code(0, TIMEOUT)?;
    sensor.expect_code(0, TIMEOUT)?;
    assert_read_only(&probe)
}

const NOBODY: u32 = 65534;

/// The test analyzer copied where any user can run it (the build directory may not be), run
/// as uid/gid 65534.
fn nobody_probe(w: &Path, name: &str, control: &Path) -> Result<Proc> {
    let exe = w.join("mos-test-analyzer");
    if !exe.exists() {
        std::fs::copy(bin("mos-test-analyzer")?, &exe)?;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))?;
    }
    let mut c = cmd(&exe, &[&"--control", &control, &"probe"]);
    c.uid(NOBODY).gid(NOBODY).current_dir(w);
    Proc::spawn(name, c, w)
}

#[test]
fn a_user_not_allowed_is_refused_and_an_allowed_one_attaches() -> Result<()> {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test runs an analyzer as uid {NOBODY} and must run as root"
    );
    let work = ScratchDir::new("an-users")?;
    let w = work.path();
    // uid 65534 must be able to reach the socket's directory; only the socket's own mode and
    // the sensor's check stand in its way.
    open_to_other_users(w)?;
    let pcap = small_capture(w)?;

    // Not allowed: refused at attach, one line naming EACCES.
    let control = w.join("c1.sock");
    let mut sensor = start_sensor(w, &pcap, &control, &["--wait-analyzers", "1"])?;
    let started = Instant::now();
    let mut refused = nobody_probe(w, "refused", &control)?;
    refused.expect_code(1, Duration::from_secs(15))?;
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = refused.stderr();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("EACCES"), "{err}");
    assert_no_panic(&refused)?;
    assert!(sensor.poll()?.is_none(), "the sensor stopped waiting");
    // A root analyzer is still welcome, and lets the replay finish.
    let mut root = analyzer(
        w,
        "root",
        "mos-test-analyzer",
        &[&"--control", &control, &"probe"],
    )?;
    root.expect_code(0, TIMEOUT)?;
    sensor.expect_code(0, TIMEOUT)?;
    assert!(
        !sensor.stderr().contains(&format!("uid {NOBODY})")),
        "{}",
        sensor.stderr()
    );

    // Allowed: the socket lets uid 65534 in (mode 0660, owner or group its own), the sensor
    // too, and the analyzer attaches with the same read-only view.
    let control = w.join("c2.sock");
    let mut sensor = start_sensor(
        w,
        &pcap,
        &control,
        &["--wait-analyzers", "1", "--allow-user", &NOBODY.to_string()],
    )?;
    let meta = std::fs::metadata(&control)?;
    assert_eq!(meta.mode() & 0o777, 0o660, "socket mode {:o}", meta.mode());
    assert!(
        meta.uid() == NOBODY || meta.gid() == NOBODY,
        "socket owned by {}:{}, which uid {NOBODY} (group {NOBODY}) cannot write",
        meta.uid(),
        meta.gid()
    );
    let mut allowed = nobody_probe(w, "allowed", &control)?;
    allowed.expect_code(0, TIMEOUT)?;
    sensor.expect_code(0, TIMEOUT)?;
    assert_read_only(&allowed)?;
    let serr = sensor.stderr();
    assert!(
        serr.contains(&format!(
            "mos-test-analyzer (pid {}, uid {NOBODY})",
            allowed.pid()
        )),
        "{serr}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5. A stale flow handle

/// `client,server` of the capture's first frame, a SYN from the client (Ethernet, IPv4).
fn first_connection(pcap: &Path) -> Result<String> {
    let b = std::fs::read(pcap)?;
    let f = b.get(24 + 16..24 + 16 + 54).context("no first frame")?;
    ensure!(f[47] & 0x12 == 0x02, "the first frame is not a SYN");
    let ip = |o: usize| std::net::Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]);
    let port = |o: usize| u16::from_be_bytes([f[o], f[o + 1]]);
    Ok(format!("{}:{},{}:{}", ip(26), port(34), ip(30), port(36)))
}

/// Runs the stale-handle analyzer on `pcap` with a 4-connection flow table; its results.
fn stale_run(
    w: &Path,
    pcap: &Path,
    name: &str,
    extra: &[&str],
) -> Result<BTreeMap<String, String>> {
    let control = w.join(format!("{name}.sock"));
    let mut args = vec!["--wait-analyzers", "1", "--max-flows", "4"];
    args.extend_from_slice(extra);
    let mut sensor = start_sensor(w, pcap, &control, &args)?;
    let mut stale = analyzer(
        w,
        name,
        "mos-test-analyzer",
        &[&"--control", &control, &"stale"],
    )?;
    stale.expect_code(0, TIMEOUT)?;
    sensor.expect_code(0, TIMEOUT)?;
    let out = stale.stdout();
    let f = fields(&out, "stale")?;
    assert_eq!(f.get("reused").map(String::as_str), Some("true"), "{out}");
    let checks = num(&f, "checks")?;
    assert!(checks > 0, "{out}");
    assert_eq!(num(&f, "ebadf")?, checks, "{out}");
    assert_eq!(num(&f, "bad")?, 0, "{out}");
    // Whatever the handle read while it was live is the capture's first connection's.
    if let Some(addrs) = f.get("addrs").filter(|a| *a != "none") {
        assert_eq!(*addrs, first_connection(pcap)?, "{out}");
    }
    // Slots were reused because connections were evicted from the small table.
    let serr = sensor.stderr();
    let evicted: u64 = serr
        .split(" timed out, ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no eviction count in:\n{serr}"))?;
    assert!(evicted > 0, "{serr}");
    Ok(f)
}

/// The test analyzer keeps the handle of the first connection; once it has seen that slot
/// serve another connection, every call with the handle (peek, ppeek, getsockopt,
/// getpeername, ...) must fail with EBADF, never return the other connection's data.
#[test]
fn a_stale_flow_handle_gives_ebadf_once_its_slot_is_reused() -> Result<()> {
    let work = ScratchDir::new("an-stale")?;
    let w = work.path();
    let pcap = w.join("short.pcap");
    short_flows(
        &ShortFlowsOptions {
            conns: 200,
            concurrency: 8,
            ipv6: false,
            seed: 9,
        },
        &pcap,
    )?;
    // Lossy: slots are reused on schedule, whatever the analyzer has read (it usually runs
    // behind, so the handle may be stale by its first look).
    stale_run(w, &pcap, "lossy", &["--lossy"])?;
    // Lossless: the slot waits for the analyzer, which therefore reads the live connection
    // through the handle before the slot moves on.
    let f = stale_run(w, &pcap, "lossless", &[])?;
    assert!(num(&f, "live_reads")? > 0, "{f:?}");
    assert_eq!(f.get("addrs"), Some(&first_connection(&pcap)?), "{f:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 6. Bad input

#[test]
fn an_analyzer_with_no_sensor_behind_its_path_fails_fast() -> Result<()> {
    let work = ScratchDir::new("an-nosensor")?;
    let w = work.path();
    let fast = Duration::from_secs(5);

    // No file.
    let missing = w.join("missing.sock");
    for prog in ["mos-dump", "mos-flowstat", "mos-test-analyzer"] {
        let started = Instant::now();
        let mut p = match prog {
            "mos-dump" => analyzer(
                w,
                prog,
                prog,
                &[
                    &"--control",
                    &missing,
                    &"--wait",
                    &"0",
                    &"--out",
                    &w.join("o"),
                ],
            )?,
            "mos-test-analyzer" => analyzer(w, prog, prog, &[&"--control", &missing, &"probe"])?,
            _ => analyzer(w, prog, prog, &[&"--control", &missing, &"--wait", &"0"])?,
        };
        p.expect_code(1, fast)?;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{prog} was slow"
        );
        assert_one_line(&p, &["ENOENT", "is mos-sensor running?"])?;
    }

    // A regular file.
    let file = w.join("file.sock");
    std::fs::write(&file, b"")?;
    let mut p = analyzer(
        w,
        "file",
        "mos-dump",
        &[&"--control", &file, &"--wait", &"0", &"--out", &w.join("o")],
    )?;
    p.expect_code(1, fast)?;
    assert_one_line(&p, &["ECONNREFUSED", "file.sock"])?;

    // A socket file nobody listens on any more.
    let left = w.join("left.sock");
    {
        use rustix::net::{bind, socket, AddressFamily, SocketAddrUnix, SocketType};
        let s = socket(AddressFamily::UNIX, SocketType::SEQPACKET, None)?;
        bind(&s, &SocketAddrUnix::new(&left)?)?;
    }
    let mut p = analyzer(
        w,
        "left",
        "mos-flowstat",
        &[&"--control", &left, &"--wait", &"0"],
    )?;
    p.expect_code(1, fast)?;
    assert_one_line(&p, &["ECONNREFUSED", "not running"])?;

    // Told to wait, an analyzer keeps trying for that long, then says how long it waited.
    let started = Instant::now();
    let mut p = analyzer(
        w,
        "waited",
        "mos-flowstat",
        &[&"--control", &missing, &"--wait", &"0.5"],
    )?;
    p.expect_code(1, fast)?;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "did not wait"
    );
    assert_one_line(&p, &["ENOENT", "is mos-sensor running?", "(waited 0.5 s)"])?;
    Ok(())
}

/// The README's launch order, and any other: analyzers started before the sensor attach once
/// it is up (they wait up to `--wait`, 10 s by default), and the replay is whole.
#[test]
fn analyzers_started_before_the_sensor_attach_when_it_comes_up() -> Result<()> {
    let work = ScratchDir::new("an-before")?;
    let w = work.path();
    let pcap = corpus_dir()?.join("pcaps/dpkt__examples__data__http.pcap");
    let reference = reference_dump(&pcap, w)?;
    let (control, out) = (w.join("c.sock"), w.join("out"));
    let mut dump = analyzer(
        w,
        "mos-dump",
        "mos-dump",
        &[&"--control", &control, &"--out", &out],
    )?;
    let mut stat = analyzer(w, "mos-flowstat", "mos-flowstat", &[&"--control", &control])?;
    // Well after both tried once and found nothing.
    std::thread::sleep(Duration::from_millis(700));
    ensure!(
        dump.poll()?.is_none() && stat.poll()?.is_none(),
        "an analyzer gave up before the sensor came up:\n{}\n{}",
        dump.stderr(),
        stat.stderr()
    );
    let mut sensor = start_sensor(w, &pcap, &control, &["--wait-analyzers", "2"])?;
    sensor.expect_code(0, TIMEOUT)?;
    dump.expect_code(0, TIMEOUT)?;
    stat.expect_code(0, TIMEOUT)?;
    same_tree(&reference, &out)?;
    Ok(())
}

#[test]
fn analyzers_exit_with_one_line_when_the_sensor_is_killed() -> Result<()> {
    let work = ScratchDir::new("an-sensorkill")?;
    let w = work.path();
    let pcap = paced_capture(w)?;
    let control = w.join("c.sock");
    let out = w.join("out");
    let mut sensor = start_sensor(
        w,
        &pcap,
        &control,
        &["--wait-analyzers", "3", "--speed", PACE],
    )?;
    let mut all = vec![
        analyzer(
            w,
            "mos-dump",
            "mos-dump",
            &[&"--control", &control, &"--out", &out],
        )?,
        analyzer(w, "mos-flowstat", "mos-flowstat", &[&"--control", &control])?,
        analyzer(
            w,
            "mos-test-analyzer",
            "mos-test-analyzer",
            &[&"--control", &control, &"probe"],
        )?,
    ];
    wait_for("the first connections", TIMEOUT, || Ok(files_in(&out) >= 2))?;
    sensor.signal(rustix::process::Signal::KILL)?;
    let killed_at = Instant::now();
    sensor.wait(TIMEOUT)?;
    for p in &mut all {
        let st = p.wait_until(killed_at + Duration::from_secs(3))?;
        assert!(
            !st.success() && st.code().is_some(),
            "{} exited with {st}",
            p.name()
        );
        // What each had is still given: mos-dump's connections, mos-flowstat's summary.
        let had = match p.name() {
            "mos-dump" => "connections written to",
            "mos-flowstat" => "connections seen",
            _ => "",
        };
        assert_one_line(p, &["the sensor went away", had])?;
    }
    ensure!(
        out.join("flows.jsonl").exists(),
        "mos-dump wrote no flows.jsonl"
    );
    // The killed sensor left its socket behind: a stale socket refuses connections, for as
    // long as the analyzer is told to wait for a sensor to take it over.
    assert!(control.exists());
    let mut late = analyzer(
        w,
        "late",
        "mos-dump",
        &[
            &"--control",
            &control,
            &"--wait",
            &"1",
            &"--out",
            &w.join("o"),
        ],
    )?;
    late.expect_code(1, Duration::from_secs(5))?;
    assert_one_line(&late, &["ECONNREFUSED", "(waited 1.0 s)"])?;
    Ok(())
}

/// Events published to the first analyzer and not consumed yet (`mos-ctl status`).
fn lag(control: &Path) -> Result<u64> {
    let out = cmd(
        &bin("mos-ctl")?,
        &[&"--control", &control, &"status", &"--json"],
    )
    .output()?;
    ensure!(
        out.status.success(),
        "mos-ctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v["analyzers"][0]["lag"]
        .as_u64()
        .with_context(|| format!("no lag in {v}"))
}

/// The sensor killed while `mos-dump` has a backlog (it was stopped while the sensor filled
/// its ring): running again, `mos-dump` notices, takes events for a bounded time, and within
/// 2 s of the kill exits with one line and a `flows.jsonl` of every connection it saw, those
/// that ended as the sensor's own dump has them, the others marked cut short and holding the
/// start of their streams.
#[test]
fn mos_dump_writes_what_it_has_in_time_when_the_sensor_is_killed() -> Result<()> {
    let work = ScratchDir::new("an-killed-backlog")?;
    let w = work.path();
    // 6000 connections, 8 at a time, over about 5 minutes of capture time: connections end
    // (5 s after they close) all along, so mos-dump's backlog holds data and ends alike.
    let opts = ShortFlowsOptions {
        conns: 6000,
        concurrency: 8,
        ipv6: false,
        seed: 13,
    };
    let pcap = stretched(w, &opts, 300)?;
    let reference = reference_dump(&pcap, w)?;
    let (control, out) = (w.join("c.sock"), w.join("out"));
    let ring = 16384;
    let mut sensor = start_sensor(
        w,
        &pcap,
        &control,
        &[
            "--wait-analyzers",
            "1",
            "--event-ring",
            &ring.to_string(),
            "--stall-timeout",
            "600",
            // Chunks for every side the stopped analyzer holds back, so that what the sensor
            // waits on is the full event ring, not an empty stream pool.
            "--stream-chunks",
            "16384",
        ],
    )?;
    let mut dump = analyzer(
        w,
        "mos-dump",
        "mos-dump",
        &[&"--control", &control, &"--out", &out],
    )?;
    wait_for("mos-dump's first connections", TIMEOUT, || {
        Ok(files_in(&out) >= 2)
    })?;
    dump.signal(rustix::process::Signal::STOP)?;
    wait_for("the sensor to fill mos-dump's ring", TIMEOUT, || {
        Ok(lag(&control)? >= ring)
    })?;
    ensure!(
        sensor.poll()?.is_none(),
        "the replay ended before the kill:\n{}",
        tail(&sensor.stderr())
    );
    sensor.signal(rustix::process::Signal::KILL)?;
    let killed = Instant::now();
    sensor.wait(TIMEOUT)?;
    dump.signal(rustix::process::Signal::CONT)?;
    let st = dump.wait_until(killed + Duration::from_secs(2))?;
    ensure!(
        st.code() == Some(1),
        "mos-dump exited with {st}: {}",
        dump.stderr()
    );
    assert_one_line(
        &dump,
        &[
            "the sensor went away",
            "connections written to",
            "of them cut short",
        ],
    )?;
    // Every record agrees with its stream files.
    read_dump(&out)?;
    let text = |dir: &Path| std::fs::read_to_string(dir.join("flows.jsonl"));
    let want: BTreeMap<(String, String), (String, FlowRecord)> = text(&reference)?
        .lines()
        .map(|l| {
            let r = parse_flows(l)?.remove(0);
            Ok(((r.client.clone(), r.server.clone()), (l.to_string(), r)))
        })
        .collect::<Result<_>>()?;
    let (mut ended, mut cut) = (0, 0);
    for line in text(&out)?.lines() {
        let got = parse_flows(line)?.remove(0);
        let (want_line, want) = want
            .get(&(got.client.clone(), got.server.clone()))
            .with_context(|| format!("not in the sensor's dump: {line}"))?;
        if !got.cut_short {
            ensure!(line == want_line, "{line}\nexpected\n{want_line}");
            ended += 1;
            continue;
        }
        cut += 1;
        ensure!(line.ends_with(",\"cut_short\":true}"), "{line}");
        for (file, want_file) in [
            (&got.c2s_file, &want.c2s_file),
            (&got.s2c_file, &want.s2c_file),
        ] {
            let read = |dir: &Path, f: &Option<String>| {
                f.as_ref()
                    .map_or(Ok(Vec::new()), |f| std::fs::read(dir.join(f)))
            };
            let (a, b) = (read(&out, file)?, read(&reference, want_file)?);
            ensure!(b.starts_with(&a), "{line}: not the start of {want_file:?}");
        }
    }
    ensure!(ended > 0 && cut > 0, "{ended} ended, {cut} cut short");
    Ok(())
}

#[test]
fn a_sensor_with_an_unusable_control_path_says_so_in_one_line() -> Result<()> {
    let work = ScratchDir::new("an-badctl")?;
    let w = work.path();
    let pcap = small_capture(w)?;
    std::fs::write(w.join("file"), b"")?;
    // The socket's directory would have to be created inside a regular file.
    let control = w.join("file").join("run").join("c.sock");
    let mut c = cmd(&sensor_bin()?, &[&"--pcap", &pcap, &"--control", &control]);
    c.args(["--wait-analyzers", "1"]);
    let mut s = Proc::spawn("sensor", c, w)?;
    s.expect_code(1, Duration::from_secs(10))?;
    assert_one_line(&s, &["mos-sensor: error:", "file/run"])?;
    // Whatever is at the path and is not a socket is left alone: a regular file, a directory.
    let precious = w.join("precious");
    std::fs::write(&precious, b"keep me")?;
    std::fs::create_dir(w.join("dir"))?;
    for (path, kind) in [
        (precious.clone(), "a regular file"),
        (w.join("dir"), "a directory"),
    ] {
        let mut c = cmd(&sensor_bin()?, &[&"--pcap", &pcap, &"--control", &path]);
        c.args(["--wait-analyzers", "1"]);
        let mut s = Proc::spawn("sensor-over-file", c, w)?;
        s.expect_code(1, Duration::from_secs(10))?;
        assert_one_line(&s, &["mos-sensor: error:", kind, "not a socket"])?;
    }
    assert_eq!(std::fs::read(&precious)?, b"keep me");
    ensure!(w.join("dir").is_dir());
    Ok(())
}

#[test]
fn a_sensor_waiting_for_analyzers_stops_on_sigint() -> Result<()> {
    let work = ScratchDir::new("an-sigint")?;
    let w = work.path();
    let pcap = small_capture(w)?;
    let control = w.join("c.sock");
    let mut sensor = start_sensor(w, &pcap, &control, &["--wait-analyzers", "1"])?;
    sensor.signal(rustix::process::Signal::INT)?;
    sensor.expect_code(130, Duration::from_secs(5))?;
    assert!(!control.exists(), "the socket was left behind");
    assert!(
        sensor.stderr().contains("stopped by a signal"),
        "{}",
        sensor.stderr()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 7. getlastpkt and ppeek agree

#[test]
fn getlastpkt_payload_is_what_ppeek_reads_at_its_offset() -> Result<()> {
    let work = ScratchDir::new("an-lastpkt")?;
    let w = work.path();
    let pcap = w.join("bulk.pcap");
    let (bytes, mss, conns) = (200_000u64, 1448u64, 2u64);
    bulk(
        &BulkOptions {
            bytes,
            mss: mss as u16,
            conns,
            ipv6: false,
            seed: 8,
        },
        &pcap,
    )?;
    let control = w.join("c.sock");
    // A stream pool and a packet log smaller than the streams: lossless mode must keep what
    // each event names in place until the analyzer is past it.
    let mut sensor = start_sensor(
        w,
        &pcap,
        &control,
        &[
            "--wait-analyzers",
            "1",
            "--stream-chunks",
            "18",
            "--chunk-kib",
            "4",
            "--pktlog-frames",
            "16",
        ],
    )?;
    let mut p = analyzer(
        w,
        "lastpkt",
        "mos-test-analyzer",
        &[&"--control", &control, &"lastpkt"],
    )?;
    p.expect_code(0, TIMEOUT)?;
    sensor.expect_code(0, TIMEOUT)?;
    let out = p.stdout();
    let f = fields(&out, "lastpkt")?;
    // One CONN_NEW_DATA per data segment, each direction of each connection.
    let segments = conns * 2 * bytes.div_ceil(mss);
    assert_eq!(num(&f, "failures")?, 0, "{out}");
    assert_eq!(num(&f, "checked")?, segments, "{out}");
    assert_eq!(num(&f, "bytes")?, conns * 2 * bytes, "{out}");
    Ok(())
}
