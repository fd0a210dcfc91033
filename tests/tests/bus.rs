//! The event bus: `mos-log` sending its records to a real `redis-server` (Debian's, started
//! here on a private Unix socket in a scratch directory, saving nothing).
//!
//! 1. One replay, two `mos-log`s attached: one writing files (`--out`), one sending to Redis
//!    (`--redis`). Every stream holds exactly the lines of its file (as sets, since the two
//!    write in their own order only per log), and XLEN equals the file's line count.
//! 2. A paced replay with Redis killed in the middle: `mos-log` keeps going, holds what its
//!    queue takes and drops and counts the rest, `mos-ctl status` shows the count while the
//!    sensor runs, the sensor completes without waiting on it or detaching it, and once
//!    redis-server is back on the same socket `mos-log` reconnects and the later records
//!    arrive.
//!
//! Needs the release binaries (`cargo build --release -p mos-analyzers --bins`, `-p mos-ctl`,
//! `-p mos-sensor`), `/usr/bin/redis-server` and the corpus.

use anyhow::{bail, ensure, Context, Result};
use mos_tests::locate::{bin, corpus_dir, sensor_bin};
use mos_tests::procs::{assert_no_panic, cmd, tail, wait_for, wait_for_socket, Proc};
use mos_tests::runner::ScratchDir;
use mos_tests::synth::{http_flows, stretch_time, ShortFlowsOptions};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The longest any single process of these tests may take.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Debian's redis-server.
const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// A redis-server on a Unix socket, saving nothing; killed when dropped.
struct Redis {
    proc: Proc,
    sock: PathBuf,
}

impl Redis {
    fn start(work: &Path, name: &str, sock: &Path) -> Result<Redis> {
        let mut c = Command::new(REDIS_SERVER);
        c.args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(sock)
            .arg("--dir")
            .arg(work);
        let mut proc = Proc::spawn(name, c, work)
            .with_context(|| format!("{REDIS_SERVER} (the redis-server package)"))?;
        wait_for("redis-server's socket", TIMEOUT, || {
            if let Some(st) = proc.poll()? {
                bail!("redis-server exited with {st}:\n{}", tail(&proc.stdout()));
            }
            Ok(redis_cli(sock, &["PING"]).is_ok_and(|r| r == "PONG"))
        })?;
        Ok(Redis {
            proc,
            sock: sock.to_path_buf(),
        })
    }

    fn kill(mut self) -> Result<()> {
        self.proc.signal(rustix::process::Signal::KILL)?;
        self.proc.wait(TIMEOUT)?;
        // A killed server leaves its socket file behind; the next one replaces it.
        let _ = std::fs::remove_file(&self.sock);
        Ok(())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.proc.signal(rustix::process::Signal::KILL);
    }
}

/// `redis-cli -s SOCK ARGS...`'s output (raw: one value per line).
fn redis_cli(sock: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("redis-cli")
        .arg("-s")
        .arg(sock)
        .arg("--raw")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("redis-cli")?;
    ensure!(out.status.success(), "redis-cli {args:?}: {}", out.status);
    let text = String::from_utf8(out.stdout)?;
    ensure!(
        !text.starts_with("ERR") && !text.starts_with("Could not connect"),
        "redis-cli {args:?}: {text}"
    );
    Ok(text.trim_end_matches('\n').to_string())
}

/// XLEN of `stream`.
fn xlen(sock: &Path, stream: &str) -> Result<u64> {
    redis_cli(sock, &["XLEN", stream])?
        .trim()
        .parse()
        .with_context(|| format!("XLEN {stream}"))
}

/// The `json` field of every entry of `stream`, with each entry's `uid` (empty if none), read
/// through the redis crate.
fn stream_records(sock: &Path, stream: &str) -> Result<Vec<(String, String)>> {
    let client = redis::Client::open(format!("unix://{}", sock.display()))?;
    let mut c = client.get_connection()?;
    let raw: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(&mut c)?;
    let mut out = Vec::new();
    for (id, fields) in raw {
        let mut uid = String::new();
        let mut json = None;
        for f in fields.chunks(2) {
            match (f[0].as_str(), f.get(1)) {
                ("uid", Some(v)) => uid = v.clone(),
                ("json", Some(v)) => json = Some(v.clone()),
                _ => bail!("entry {id} of {stream} has an unknown field: {f:?}"),
            }
        }
        out.push((
            uid,
            json.with_context(|| format!("entry {id} has no json"))?,
        ));
    }
    Ok(out)
}

/// The streams under `prefix`.
fn streams(sock: &Path, prefix: &str) -> Result<BTreeSet<String>> {
    Ok(redis_cli(sock, &["KEYS", &format!("{prefix}*")])?
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

fn start_sensor(work: &Path, pcap: &Path, control: &Path, extra: &[&str]) -> Result<Proc> {
    let mut c = cmd(&sensor_bin()?, &[&"--pcap", &pcap, &"--control", &control]);
    c.args(extra);
    let mut s = Proc::spawn("sensor", c, work)?;
    wait_for_socket(&mut s, control, TIMEOUT)?;
    Ok(s)
}

fn mos_log(work: &Path, name: &str, control: &Path, args: &[&dyn AsRef<OsStr>]) -> Result<Proc> {
    let mut all: Vec<&dyn AsRef<OsStr>> = vec![&"--control", &control];
    all.extend_from_slice(args);
    Proc::spawn(name, cmd(&bin("mos-log")?, &all), work)
}

/// Waits for `p` to exit and requires status 0 and no panic.
fn finished_ok(p: &mut Proc) -> Result<()> {
    let st = p.wait(TIMEOUT)?;
    ensure!(
        st.success(),
        "{} exited with {st}:\n{}",
        p.name(),
        tail(&p.stderr())
    );
    assert_no_panic(p)
}

/// The lines of every `LOG.jsonl` in `dir`, by log.
fn file_logs(dir: &Path) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some(log) = name.strip_suffix(".jsonl") {
            let text = std::fs::read_to_string(&p)?;
            out.insert(log.to_string(), text.lines().map(str::to_string).collect());
        }
    }
    Ok(out)
}

/// The corpus capture with the most TCP connections carrying HTTP, of at most 20 MB.
fn http_capture() -> Result<PathBuf> {
    let corpus = corpus_dir()?;
    let manifest = std::fs::read_to_string(corpus.join("pcaps/MANIFEST.tsv"))?;
    let mut best: Option<(u64, String)> = None;
    let mut cols: Vec<&str> = Vec::new();
    for (i, l) in manifest.lines().enumerate() {
        let f: Vec<&str> = l.split('\t').collect();
        if i == 0 {
            cols = f;
            continue;
        }
        let col = |name: &str| {
            cols.iter()
                .position(|c| c.starts_with(name))
                .and_then(|i| f.get(i))
        };
        let (Some(file), Some(bytes), Some(streams), Some(features)) = (
            col("file"),
            col("bytes"),
            col("tcp_streams_with_payload"),
            col("features"),
        ) else {
            continue;
        };
        let (Ok(bytes), Ok(streams)) = (bytes.parse::<u64>(), streams.parse::<u64>()) else {
            continue;
        };
        if bytes <= 20 << 20
            && features.split_whitespace().any(|x| x == "app:http")
            && best.as_ref().is_none_or(|(n, _)| streams > *n)
        {
            best = Some((streams, (*file).to_string()));
        }
    }
    let (_, file) = best.context("no HTTP capture in the corpus manifest")?;
    Ok(corpus.join("pcaps").join(file))
}

#[test]
fn redis_streams_hold_exactly_the_records_of_the_files() -> Result<()> {
    let work = ScratchDir::new("bus-same")?;
    let w = work.path();
    let sock = w.join("redis.sock");
    let redis = Redis::start(w, "redis", &sock)?;
    let pcap = http_capture()?;
    let (control, out) = (w.join("c.sock"), w.join("files"));
    let url = format!("unix://{}", sock.display());
    let mut sensor = start_sensor(w, &pcap, &control, &["--wait-analyzers", "2"])?;
    let mut files = mos_log(w, "log-files", &control, &[&"--out", &out])?;
    let mut bus = mos_log(w, "log-redis", &control, &[&"--redis", &url])?;
    finished_ok(&mut sensor)?;
    finished_ok(&mut files)?;
    finished_ok(&mut bus)?;

    let logs = file_logs(&out)?;
    ensure!(
        logs.get("conn").is_some_and(|l| !l.is_empty()),
        "no conn records from {}",
        pcap.display()
    );
    let names: BTreeSet<String> = logs.keys().map(|l| format!("mos:{l}")).collect();
    ensure!(streams(&sock, "mos:")? == names, "streams and files differ");
    for (log, lines) in &logs {
        let stream = format!("mos:{log}");
        ensure!(
            xlen(&sock, &stream)? == lines.len() as u64,
            "XLEN {stream} is not the {} lines of {log}.jsonl",
            lines.len()
        );
        let got = stream_records(&sock, &stream)?;
        let mut from_redis: Vec<&str> = got.iter().map(|(_, j)| j.as_str()).collect();
        let mut from_file: Vec<&str> = lines.iter().map(String::as_str).collect();
        from_redis.sort_unstable();
        from_file.sort_unstable();
        ensure!(from_redis == from_file, "{stream} and {log}.jsonl differ");
        // Each entry's uid field is its record's uid.
        for (uid, json) in &got {
            let v: Value = serde_json::from_str(json)?;
            let rec_uid = v.get("uid").and_then(Value::as_str).unwrap_or_default();
            ensure!(uid == rec_uid, "{stream}: uid {uid:?} beside {json}");
        }
    }
    eprintln!(
        "{}: {}",
        pcap.display(),
        logs.iter()
            .map(|(l, v)| format!("{l} {}", v.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Redis was up all along: no word from the Redis output.
    ensure!(
        !bus.stderr().contains(": redis "),
        "{}",
        tail(&bus.stderr())
    );
    drop(redis);
    Ok(())
}

/// `published N events to analyzers (D dropped for full rings, W waits for slow analyzers,
/// S analyzers detached for stalling)` of the sensor's stderr: `(D, S)`.
fn sensor_drops(stderr: &str) -> Result<(u64, u64)> {
    let line = stderr
        .lines()
        .find(|l| l.contains("events to analyzers ("))
        .with_context(|| format!("no publication line in:\n{}", tail(stderr)))?;
    let inner = line
        .split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(i, _)| i)
        .context("publication line")?;
    let nums: Vec<u64> = inner
        .split(',')
        .filter_map(|p| p.split_whitespace().next()?.parse().ok())
        .collect();
    ensure!(nums.len() == 3, "{line}");
    Ok((nums[0], nums[2]))
}

/// `mos-ctl status --json`, or `None` once the sensor is gone.
fn status(control: &Path) -> Result<Option<Value>> {
    let out = Command::new(bin("mos-ctl")?)
        .arg("--control")
        .arg(control)
        .args(["status", "--json"])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(Some(serde_json::from_slice(&out.stdout)?))
}

/// The `records_dropped` the sensor reports for the analyzer of process `pid`.
fn reported_drops(report: &Value, pid: u32) -> Option<u64> {
    report["analyzers"]
        .as_array()?
        .iter()
        .find(|a| a["pid"].as_u64() == Some(u64::from(pid)))?["records_dropped"]
        .as_u64()
}

#[test]
fn a_redis_killed_mid_run_costs_counted_records_and_mos_log_reconnects() -> Result<()> {
    let work = ScratchDir::new("bus-kill")?;
    let w = work.path();
    // 1500 HTTP connections, 16 at a time, over about 2 minutes of capture time: about 12 s
    // at --speed 10, records all along.
    let dense = w.join("dense.pcap");
    http_flows(
        &ShortFlowsOptions {
            conns: 1500,
            concurrency: 16,
            ipv6: false,
            seed: 17,
        },
        &dense,
    )?;
    let pcap = w.join("paced.pcap");
    stretch_time(&dense, &pcap, 1000)?;

    let sock = w.join("redis.sock");
    let redis = Redis::start(w, "redis-1", &sock)?;
    let control = w.join("c.sock");
    let url = format!("unix://{}", sock.display());
    let mut sensor = start_sensor(
        w,
        &pcap,
        &control,
        &["--wait-analyzers", "1", "--speed", "10"],
    )?;
    let mut log = mos_log(
        w,
        "log-redis",
        &control,
        &[&"--redis", &url, &"--queue", &"50", &"--drain-secs", &"60"],
    )?;
    wait_for("the first records in Redis", TIMEOUT, || {
        ensure!(sensor.poll()?.is_none(), "the replay ended too soon");
        Ok(xlen(&sock, "mos:conn")? > 0)
    })?;
    redis.kill()?;

    // mos-log goes on; its queue fills and it counts what it drops, which the sensor shows.
    let mut shown = 0;
    wait_for("mos-ctl status to show records dropped", TIMEOUT, || {
        ensure!(
            log.poll()?.is_none(),
            "mos-log ended:\n{}",
            tail(&log.stderr())
        );
        let Some(r) = status(&control)? else {
            bail!(
                "the sensor went away before mos-log reported drops:\n{}",
                tail(&sensor.stderr())
            );
        };
        shown = reported_drops(&r, log.pid()).unwrap_or(0);
        Ok(shown > 0)
    })?;

    // Back on the same socket: mos-log reconnects and the later records arrive there.
    let _redis = Redis::start(w, "redis-2", &sock)?;
    finished_ok(&mut sensor)?;
    finished_ok(&mut log)?;
    let after = xlen(&sock, "mos:conn")? + xlen(&sock, "mos:http")?;
    ensure!(
        after > 0,
        "nothing reached the restarted redis-server:\n{}",
        tail(&log.stderr())
    );
    let err = log.stderr();
    ensure!(err.contains("connected again"), "{}", tail(&err));

    // The sensor neither lost events for mos-log nor detached it: mos-log kept reading
    // while Redis was down.
    let (events_dropped, stalled) = sensor_drops(&sensor.stderr())?;
    ensure!(
        (events_dropped, stalled) == (0, 0),
        "{}",
        tail(&sensor.stderr())
    );
    ensure!(shown > 0);
    eprintln!(
        "mos-ctl status showed {shown} records dropped; {after} records reached the restarted server; mos-log said:\n{}",
        tail(&err)
    );
    Ok(())
}
