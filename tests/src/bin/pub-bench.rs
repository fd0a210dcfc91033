//! `pub-bench`: the sensor with publication, as a process, against `memcpy` in the same run.
//!
//! For each capture it runs the release `mos-sensor` N times in each of its modes, alternating
//! the modes so that noise from other tenants hits all of them alike:
//! - `nopub`: `--no-publish` (no shared memory, no control socket);
//! - `pub0`: publishing, with no analyzer attached;
//! - `pub1`: publishing to one `peek-sink` analyzer (`--wait-analyzers 1`); under `--pin` it
//!   has a CPU to itself, which measures what one more analyzer costs the sensor on a machine
//!   where every analyzer has its own CPU;
//! - `pub2`: publishing to two `peek-sink` analyzers (`--wait-analyzers 2`), each of which
//!   registers `CONN_NEW_DATA` on both sides and peeks every byte;
//! - `pub2f`: as `pub2`, but each analyzer's socket has a SYN filter that takes a disjoint 1 %
//!   of the connections (by the client's port, see [`SELECT_MOD`]). Only for `mkpcap`
//!   captures: each analyzer must read exactly the streams of the connections its filter
//!   takes, which the driver works out itself from the capture and its `.expected.tsv`.
//! - `pub2c`: as `pub2`, with two C analyzers on libmos (`tests/bench/c_peek_sink.c`, the same
//!   work as `peek-sink` through `mtcp_peek`), compiled here with `cc` against `capi/include`
//!   and the `libmos.so` beside the binaries: the C path against the Rust one in the same run.
//! - `nids`: no sensor; the libnids peer (`tests/peers/nids-count.c`, compiled here with `cc`
//!   against libnids-dev) reassembles every TCP connection of the capture and counts the bytes,
//!   for the whole-process CPU time of `nopub` against libnids'. Its byte count must equal the
//!   `.expected.tsv`'s where `mkpcap` made the capture; on other captures the difference from
//!   the sensor's is printed (libnids follows a connection only from its handshake, reads IPv4
//!   only and is told here to verify no checksum).
//!
//! The sensor's time is its own `replay_s` (its `stats` line): from the start of the replay,
//! after the analyzers are ready, to the end of the lossless drain. Its CPU time is the user
//! plus system time of the whole process (every thread, start-up and waits included), from
//! `wait4`'s resource usage, to the microsecond (the `cpu-time` wrapper,
//! tests/peers/cpu-time.c, compiled here with `cc`); the analyzers' likewise. Against `pub0` in the same round, each mode gets a throughput and a CPU ratio,
//! and the table gives the median of those per-round ratios. After each round the
//! driver copies the capture's TCP payload (every segment's, in capture order) with `memcpy`
//! into a 256 KiB buffer, as `core-bench` does. Every run is checked: no event dropped, no
//! byte overwritten before an analyzer read it, every unfiltered analyzer got the same bytes,
//! and its bytes plus the capture's own gaps make up every stream byte, a filtered one's
//! exactly the streams of the connections it selects; a run that fails a check fails the
//! benchmark.
//!
//! With `--idle SMALL BIG` it measures memory per idle connection instead: the sensor's
//! `RssAnon` and `RssShmem` when the input ended, on two `mkpcap idle` captures of different
//! sizes, with and without publication; the growth divided by the extra connections.
//!
//! `--hugepages off|auto|require` is passed to every publishing sensor run: with `off` the
//! figures do not depend on whether another process holds the host's hugepages. Without it the
//! sensor uses its own default (`auto`); the first publishing run's line on what its shared
//! memory got (hugepages or ordinary pages) is printed.
//!
//! `--pin`: with 2 usable CPUs the sensor (and the libnids peer) runs on the first and both
//! analyzers on the second; with 3 or more, the sensor on the first and each analyzer on one of
//! its own (`taskset -c`). Without it nothing is pinned.
//!
//! At the end, the figures issue 18's table needs, each the median (min-max) of per-round
//! ratios, in a table with the issue's target, and as `result` lines for `scripts/bench.sh`
//! (`mos_tests::bench`): `cpu_MODE_nopub` (sensor CPU time of MODE over `nopub`'s),
//! `mpps_MODE_nopub` (throughput of MODE over `nopub`'s), `peek_memcpy` (each `pub2` analyzer's
//! peek bandwidth over memcpy of the same chunks; `peek_memcpy_pub2c` for the C sink) and
//! `cpu_nopub_nids` (`nopub`'s CPU time over libnids'); each name ends in `_pinned` under
//! `--pin`.
//!
//! `--report [--role ROLE=STEM]... FILE...` runs nothing: it reads the `result` lines of
//! earlier runs (pub-bench's and core-bench's output saved in FILEs) and prints issue 18's
//! table, taking each row's figure on the capture given its role (short, bulk, http, mixed).
//!
//! usage: pub-bench [--runs N] [--modes nopub,pub0,pub1,pub2,pub2f,pub2c,nids] [--hugepages H]
//!                  [--pin] CAPTURE...
//!        pub-bench --idle SMALL.pcap BIG.pcap
//!        pub-bench --report [--role ROLE=STEM]... FILE...

use anyhow::{bail, ensure, Context, Result};
use mos_sensor::capture::{CaptureBackend, FileCapture};
use mos_sensor::flow::{Endpoint, FlowKey};
use mos_sensor::parse::{parse_packet, Parsed};
use mos_sensor::tcp::conn::{Conn, Stack};
use mos_sensor::tcp::reassembly::Stream;
use mos_tests::bench::{
    gbps, issue18_table, med_min_max, more_cpus_table, mpps, paired_ratios, parse_result_line,
    payload_segments, result_line, run_memcpy, Figure, Role, Spread, ISSUE18_ROWS, SCRATCH,
};
use mos_tests::locate;
use mos_tests::synth::{expected_path, read_expected, ExpectedDir};
use serde_json::Value;
use shm_layout::layout::FlowSlot;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const USAGE: &str =
    "usage: pub-bench [--runs N (default 5)] [--modes nopub,pub0,pub1,pub2,pub2f,pub2c,nids \
                     (default nopub,pub0,pub2)] [--hugepages off|auto|require (default: the \
                     sensor's, auto)] [--pin] CAPTURE...\n       \
                     pub-bench [--runs N (default 3)] --idle SMALL.pcap BIG.pcap\n       \
                     pub-bench --report [--role short|bulk|http|mixed=CAPTURE_STEM]... FILE...";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    NoPub,
    Pub0,
    Pub1,
    Pub2,
    Pub2F,
    Pub2C,
    Nids,
}

/// `pub2f`'s selector: analyzer `i` takes the connections whose first packet's TCP source port
/// (the client's, on a SYN) leaves the remainder `SELECT_RESIDUES[i]` modulo `SELECT_MOD`.
/// `mkpcap short-flows` numbers its clients' ports consecutively, so each takes 1 %.
const SELECT_MOD: u16 = 100;
const SELECT_RESIDUES: [u16; 2] = [7, 8];

/// The libpcap expression of residue `r`.
fn select_expr(r: u16) -> String {
    format!("tcp[0:2] % {SELECT_MOD} = {r}")
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::NoPub => "nopub",
            Mode::Pub0 => "pub0",
            Mode::Pub1 => "pub1",
            Mode::Pub2 => "pub2",
            Mode::Pub2F => "pub2f",
            Mode::Pub2C => "pub2c",
            Mode::Nids => "nids",
        }
    }

    fn parse(s: &str) -> Result<Mode> {
        Ok(match s {
            "nopub" => Mode::NoPub,
            "pub0" => Mode::Pub0,
            "pub1" => Mode::Pub1,
            "pub2" => Mode::Pub2,
            "pub2f" => Mode::Pub2F,
            "pub2c" => Mode::Pub2C,
            "nids" => Mode::Nids,
            _ => bail!("unknown mode {s:?} (nopub, pub0, pub1, pub2, pub2f, pub2c, nids)"),
        })
    }

    fn analyzers(self) -> usize {
        match self {
            Mode::Pub1 => 1,
            Mode::Pub2 | Mode::Pub2F | Mode::Pub2C => 2,
            Mode::NoPub | Mode::Pub0 | Mode::Nids => 0,
        }
    }

    /// The SYN filter of analyzer `i`, if the mode gives it one.
    fn filter(self, i: usize) -> Option<String> {
        match self {
            Mode::Pub2F => SELECT_RESIDUES.get(i).map(|&r| select_expr(r)),
            _ => None,
        }
    }
}

/// What `pub2f`'s analyzers must read, worked out from the capture without the sensor's
/// filters: each connection's first frame, parsed, gives its source port; the `.expected.tsv`
/// gives each direction's stream bytes.
#[derive(Debug)]
struct Selection {
    /// Connections in the capture.
    conns: u64,
    /// By residue (as `SELECT_RESIDUES`): the connections taken and their stream bytes.
    taken: Vec<(u64, u64)>,
}

fn selection(path: &Path, expected: &[ExpectedDir]) -> Result<Selection> {
    let pair = |a: SocketAddr, b: SocketAddr| if a <= b { (a, b) } else { (b, a) };
    let mut first_sport: HashMap<(SocketAddr, SocketAddr), u16> = HashMap::new();
    let mut cap = FileCapture::open(path).with_context(|| format!("opening {}", path.display()))?;
    while let Some(pkt) = cap.next_packet()? {
        if let Ok(Parsed::Tcp(seg)) = parse_packet(&pkt, false) {
            let (src, dst) = (
                SocketAddr::new(seg.src, seg.sport),
                SocketAddr::new(seg.dst, seg.dport),
            );
            first_sport.entry(pair(src, dst)).or_insert(seg.sport);
        }
    }
    let mut bytes: HashMap<(SocketAddr, SocketAddr), u64> = HashMap::new();
    let mut dirs = std::collections::HashSet::new();
    for d in expected {
        // A 4-tuple used twice would be two connections, told apart by the sensor but not by
        // this table: the selection is only worked out for captures without reuse.
        ensure!(
            dirs.insert((d.src, d.dst)),
            "{}: {} -> {} is listed twice in the .expected.tsv",
            path.display(),
            d.src,
            d.dst
        );
        *bytes.entry(pair(d.src, d.dst)).or_default() += d.bytes;
    }
    let mut taken = vec![(0u64, 0u64); SELECT_RESIDUES.len()];
    for (conn, b) in &bytes {
        let sport = first_sport.get(conn).with_context(|| {
            format!("{}: no frame of {} <-> {}", path.display(), conn.0, conn.1)
        })?;
        if let Some(k) = SELECT_RESIDUES
            .iter()
            .position(|&r| sport % SELECT_MOD == r)
        {
            taken[k].0 += 1;
            taken[k].1 += b;
        }
    }
    Ok(Selection {
        conns: bytes.len() as u64,
        taken,
    })
}

/// The sensor's `stats` line.
#[derive(Clone, Debug, Default)]
struct SensorStats {
    replay_s: f64,
    frames: u64,
    conns: u64,
    payload_bytes: u64,
    gap_bytes: u64,
    overflow_bytes: u64,
    events: u64,
    events_dropped: u64,
    waits: u64,
    rss_anon_kib: u64,
    rss_shmem_kib: u64,
}

/// The first line of `text` that starts with `prefix`, after it, and its `key=value` fields.
fn key_values<'a>(text: &'a str, prefix: &str) -> Option<(&'a str, BTreeMap<&'a str, &'a str>)> {
    let line = text.lines().find_map(|l| l.strip_prefix(prefix))?;
    let kv = line
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect();
    Some((line, kv))
}

/// Field `k` of a line's `key=value` fields as a number; `what` names the line in errors.
fn number(kv: &BTreeMap<&str, &str>, k: &str, line: &str, what: &str) -> Result<u64> {
    kv.get(k)
        .with_context(|| format!("{what} without {k}: {line}"))?
        .parse()
        .with_context(|| format!("{what} {k}"))
}

fn parse_stats(stderr: &str) -> Result<SensorStats> {
    let (line, kv) =
        key_values(stderr, "mos-sensor: stats ").context("the sensor printed no stats line")?;
    let u = |k: &str| number(&kv, k, line, "stats line");
    Ok(SensorStats {
        replay_s: kv
            .get("replay_s")
            .context("stats line without replay_s")?
            .parse()?,
        frames: u("frames")?,
        conns: u("conns")?,
        payload_bytes: u("payload_bytes")?,
        gap_bytes: u("gap_bytes")?,
        overflow_bytes: u("overflow_bytes")?,
        events: u("events")?,
        events_dropped: u("events_dropped")?,
        waits: u("waits")?,
        rss_anon_kib: u("rss_anon_kib")?,
        rss_shmem_kib: u("rss_shmem_kib")?,
    })
}

/// One sensor run in one mode: its stats and the analyzers' JSON lines, and the CPU time
/// (user + system, seconds) of the sensor and of the analyzers together.
#[derive(Debug)]
struct Run {
    sensor: SensorStats,
    sinks: Vec<Value>,
    cpu_s: f64,
    sinks_cpu_s: f64,
    /// The sensor's line on its shared memory (hugepages or not), when it publishes.
    shm: Option<String>,
}

/// The line `cpu-time` (tests/peers/cpu-time.c) adds to a process's stderr.
const CPU_PREFIX: &str = "pub-bench: cpu ";

/// `program` under the `cpu-time` wrapper, which prints the user and system time of the
/// process (from `wait4`, to the microsecond: a shell's `time` gives milliseconds, too coarse
/// for runs of about ten) on its stderr once it ends; on the CPUs `cpus` (a `taskset -c` list)
/// if given.
fn timed(bins: &Bins, program: &Path, cpus: Option<&str>) -> Command {
    let mut c = match cpus {
        Some(list) => {
            let mut t = Command::new("taskset");
            t.arg("-c").arg(list).arg(&bins.cpu_time);
            t
        }
        None => Command::new(&bins.cpu_time),
    };
    c.arg(program);
    c
}

/// The user plus system seconds in the stderr of a [`timed`] process.
fn parse_cpu(stderr: &str) -> Result<f64> {
    let line = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(CPU_PREFIX))
        .context("no CPU time line from the cpu-time wrapper")?;
    let mut total = 0.0;
    for f in line.split_whitespace() {
        let (_, v) = f.split_once('=').context("CPU time line")?;
        total += v
            .parse::<f64>()
            .with_context(|| format!("CPU time {line:?}"))?;
    }
    Ok(total)
}

struct Bins {
    sensor: PathBuf,
    sink: PathBuf,
    /// The C sink (`pub2c`), compiled at start, and the directory holding `libmos.so.0`.
    c_sink: Option<(PathBuf, PathBuf)>,
    tmp: PathBuf,
    /// The sensor's `--hugepages`, if given.
    hugepages: Option<String>,
    /// The libnids peer (`nids` mode), compiled at start.
    nids: Option<PathBuf>,
    /// The `cpu-time` wrapper (tests/peers/cpu-time.c), compiled at start.
    cpu_time: PathBuf,
    /// `--pin`: where each process runs.
    pin: Option<Pinning>,
}

/// `--pin`'s placement, as `taskset -c` CPU lists.
#[derive(Debug)]
struct Pinning {
    sensor: String,
    analyzers: [String; 2],
}

impl Pinning {
    /// From the CPUs this process may use: the sensor on the first; with two CPUs both
    /// analyzers on the second, with more each analyzer on one of its own.
    fn new() -> Result<Pinning> {
        let set = rustix::thread::sched_getaffinity(None).context("sched_getaffinity")?;
        let cpus: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&i| set.is_set(i))
            .collect();
        ensure!(
            cpus.len() >= 2,
            "--pin needs at least 2 CPUs, this process may use {} ({cpus:?})",
            cpus.len()
        );
        let which = Command::new("taskset").arg("--version").output();
        ensure!(
            which.is_ok_and(|o| o.status.success()),
            "--pin needs taskset (util-linux)"
        );
        let a1 = cpus.get(2).copied().unwrap_or(cpus[1]);
        Ok(Pinning {
            sensor: cpus[0].to_string(),
            analyzers: [cpus[1].to_string(), a1.to_string()],
        })
    }

    fn describe(&self) -> String {
        format!(
            "pinned: sensor and libnids peer on CPU {}, analyzers on CPUs {} and {}",
            self.sensor, self.analyzers[0], self.analyzers[1]
        )
    }
}

/// One run of the libnids peer: its `nids-count:` line and its CPU time.
#[derive(Debug)]
struct NidsRun {
    conns: u64,
    bytes: u64,
    evicted: u64,
    warnings: u64,
    cpu_s: f64,
}

fn run_nids(bins: &Bins, pcap: &Path, tag: &str) -> Result<NidsRun> {
    let bin = bins
        .nids
        .as_ref()
        .context("the nids mode needs the libnids peer")?;
    let out = timed(bins, bin, bins.pin.as_ref().map(|p| p.sensor.as_str()))
        .arg(pcap)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "{tag}: the libnids peer failed ({}): {stdout}{stderr}",
        out.status
    );
    let r = parse_nids(&stdout).with_context(|| format!("{tag}: {stdout}"))?;
    ensure!(
        r.evicted == 0,
        "{tag}: libnids dropped {} established connections because its table was full \
         (raise nids-count's -s)",
        r.evicted
    );
    Ok(NidsRun {
        cpu_s: parse_cpu(&stderr).with_context(|| format!("{tag}: the libnids peer"))?,
        ..r
    })
}

/// The peer's `nids-count: conns=N bytes=B evicted=E warnings=W` line (CPU time left 0).
fn parse_nids(stdout: &str) -> Result<NidsRun> {
    let (line, kv) = key_values(stdout, "nids-count: ")
        .context("the libnids peer printed no nids-count line")?;
    let u = |k: &str| number(&kv, k, line, "nids-count line");
    Ok(NidsRun {
        conns: u("conns")?,
        bytes: u("bytes")?,
        evicted: u("evicted")?,
        warnings: u("warnings")?,
        cpu_s: 0.0,
    })
}

fn run_sensor(bins: &Bins, pcap: &Path, mode: Mode, tag: &str) -> Result<Run> {
    let control = bins.tmp.join(format!("{tag}.sock"));
    let mut cmd = timed(
        bins,
        &bins.sensor,
        bins.pin.as_ref().map(|p| p.sensor.as_str()),
    );
    cmd.arg("--pcap").arg(pcap);
    match mode {
        Mode::NoPub => {
            cmd.arg("--no-publish");
        }
        _ => {
            cmd.arg("--control").arg(&control);
            if let Some(h) = &bins.hugepages {
                cmd.arg("--hugepages").arg(h);
            }
        }
    }
    let n = mode.analyzers();
    if n > 0 {
        cmd.arg("--wait-analyzers").arg(n.to_string());
    }
    let sensor = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bins.sensor.display()))?;
    let mut sinks = Vec::new();
    for i in 0..n {
        let cpus = bins.pin.as_ref().map(|p| p.analyzers[i % 2].as_str());
        let mut sink = match (mode, &bins.c_sink) {
            (Mode::Pub2C, Some((bin, libdir))) => {
                let mut c = timed(bins, bin, cpus);
                c.env("LD_LIBRARY_PATH", libdir);
                c
            }
            (Mode::Pub2C, None) => bail!("pub2c needs the C sink"),
            _ => timed(bins, &bins.sink, cpus),
        };
        sink.arg("--control")
            .arg(&control)
            .arg("--name")
            .arg(format!("peek-sink-{i}"));
        if let Some(f) = mode.filter(i) {
            sink.arg("--filter").arg(f);
        }
        sinks.push(
            sink.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("starting {}", bins.sink.display()))?,
        );
    }
    let out = sensor.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut values = Vec::new();
    let mut sink_errors = Vec::new();
    let mut sinks_cpu_s = 0.0;
    for s in sinks {
        let o = s.wait_with_output()?;
        let text = String::from_utf8_lossy(&o.stdout);
        let err = String::from_utf8_lossy(&o.stderr);
        match (o.status.success(), text.lines().last()) {
            (true, Some(l)) => {
                values.push(serde_json::from_str(l).context("peek-sink JSON")?);
                sinks_cpu_s += parse_cpu(&err).with_context(|| format!("{tag}: peek-sink"))?;
            }
            _ => sink_errors.push(format!("{}: {}", o.status, err.trim())),
        }
    }
    ensure!(
        out.status.success(),
        "{tag}: the sensor failed ({}):\n{stderr}",
        out.status
    );
    ensure!(
        sink_errors.is_empty(),
        "{tag}: peek-sink failed: {}",
        sink_errors.join("; ")
    );
    Ok(Run {
        sensor: parse_stats(&stderr).with_context(|| format!("{tag}:\n{stderr}"))?,
        sinks: values,
        cpu_s: parse_cpu(&stderr).with_context(|| format!("{tag}: the sensor"))?,
        sinks_cpu_s,
        shm: stderr
            .lines()
            .find(|l| l.contains("shared memory: "))
            .map(str::to_string),
    })
}

fn field(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(u64::MAX)
}

/// The losslessness checks of one run; `reference` is the first `nopub` run of the capture,
/// `expected_bytes` what its streams hold (from `mkpcap`'s `.expected.tsv`, or the first
/// unfiltered analyzer run's count), `selected` what `pub2f`'s filters take.
fn check(
    tag: &str,
    mode: Mode,
    r: &Run,
    reference: &SensorStats,
    expected_bytes: Option<u64>,
    selected: Option<&Selection>,
) -> Result<()> {
    let s = &r.sensor;
    ensure!(
        s.frames == reference.frames
            && s.payload_bytes == reference.payload_bytes
            && s.gap_bytes == reference.gap_bytes,
        "{tag}: the sensor saw another capture ({s:?} against {reference:?})"
    );
    // Bytes that never fit a ring (out-of-order data past a hole wider than the ring) are a
    // property of the capture and the ring size, the same without publication; publishing
    // must not add any.
    ensure!(
        s.overflow_bytes == reference.overflow_bytes,
        "{tag}: {} bytes lost to ring overflow, {} without publication",
        s.overflow_bytes,
        reference.overflow_bytes
    );
    ensure!(
        s.events_dropped == 0,
        "{tag}: the sensor dropped {} events",
        s.events_dropped
    );
    ensure!(
        r.sinks.len() == mode.analyzers(),
        "{tag}: {} analyzer reports",
        r.sinks.len()
    );
    for (i, v) in r.sinks.iter().enumerate() {
        // The C API tells neither drops nor torn copies nor overruns from gaps: for the C sink,
        // the sensor's own drop count (above) and the gap bytes (below) stand for them.
        let keys: &[&str] = if mode == Mode::Pub2C {
            &["errors"]
        } else {
            &[
                "events_dropped",
                "events_malformed",
                "overruns",
                "overrun_bytes",
                "torn_copies",
                "errors",
            ]
        };
        for &k in keys {
            ensure!(
                field(v, k) == 0,
                "{tag}: analyzer {k} = {}: {v}",
                field(v, k)
            );
        }
        ensure!(
            field(v, "events") <= s.events,
            "{tag}: analyzer saw more events than published"
        );
        if let Some(filter) = mode.filter(i) {
            // Only the selected connections' streams, every byte of them. The gaps the sensor
            // lacked are split among all connections: a filtered analyzer gets its share.
            let sel = selected.context("pub2f needs the selection of its filters")?;
            ensure!(
                v.get("filter").and_then(Value::as_str) == Some(filter.as_str()),
                "{tag}: analyzer {i} ran with another filter than {filter:?}: {v}"
            );
            let want = sel.taken[i].1;
            ensure!(
                field(v, "bytes") == want,
                "{tag}: filtered analyzer ({filter}) read {} bytes, the {} connections it \
                 selects hold {want}",
                field(v, "bytes"),
                sel.taken[i].0
            );
            ensure!(
                field(v, "gap_bytes") <= s.gap_bytes + s.overflow_bytes,
                "{tag}: filtered analyzer skipped {} bytes as gaps, the sensor lacked {}: {v}",
                field(v, "gap_bytes"),
                s.gap_bytes + s.overflow_bytes
            );
            continue;
        }
        // Every stream byte reached the analyzer as data, except the bytes the sensor
        // itself never held (the capture's gaps and the ring overflow above), which it was
        // told of as gaps.
        ensure!(
            field(v, "gap_bytes") == s.gap_bytes + s.overflow_bytes,
            "{tag}: analyzer skipped {} bytes as gaps, the sensor lacked {}: {v}",
            field(v, "gap_bytes"),
            s.gap_bytes + s.overflow_bytes
        );
        if let Some(want) = expected_bytes {
            ensure!(
                field(v, "bytes") == want,
                "{tag}: analyzer read {} bytes, the capture's streams hold {want}",
                field(v, "bytes")
            );
        }
        ensure!(
            field(v, "bytes") == field(&r.sinks[0], "bytes"),
            "{tag}: the analyzers read different byte counts"
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let mut runs = None;
    let mut modes = vec![Mode::NoPub, Mode::Pub0, Mode::Pub2];
    let mut idle = false;
    let mut hugepages = None;
    let mut pin = false;
    let mut report = false;
    let mut roles: Vec<(Role, String)> = Vec::new();
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = Some(args.next().context(USAGE)?.parse::<usize>()?),
            "--modes" => {
                modes = args
                    .next()
                    .context(USAGE)?
                    .split(',')
                    .map(Mode::parse)
                    .collect::<Result<_>>()?
            }
            "--idle" => idle = true,
            "--hugepages" => hugepages = Some(args.next().context(USAGE)?),
            "--pin" => pin = true,
            "--report" => report = true,
            "--role" => {
                let v = args.next().context(USAGE)?;
                let (r, stem) = v
                    .split_once('=')
                    .with_context(|| format!("--role {v:?}: ROLE=CAPTURE_STEM expected"))?;
                let r = Role::parse(r)?;
                ensure!(
                    !roles.iter().any(|(x, _)| *x == r),
                    "--role {} given twice",
                    r.name()
                );
                roles.push((r, stem.to_string()));
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            s if s.starts_with('-') => bail!("unknown argument {s:?}\n{USAGE}"),
            _ => files.push(PathBuf::from(a)),
        }
    }
    if report {
        ensure!(
            !files.is_empty(),
            "--report needs the files to read\n{USAGE}"
        );
        return print_report(&files, &roles);
    }
    ensure!(roles.is_empty(), "--role goes with --report");
    let tmp = std::env::temp_dir().join(format!("pub-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let built = (|| -> Result<_> {
        let c_sink = if modes.contains(&Mode::Pub2C) && !idle {
            Some(build_c_sink(&tmp)?)
        } else {
            None
        };
        let nids = if modes.contains(&Mode::Nids) && !idle {
            Some(build_nids(&tmp)?)
        } else {
            None
        };
        let pin = if pin { Some(Pinning::new()?) } else { None };
        Ok((c_sink, nids, pin, build_cpu_time(&tmp)?))
    })();
    let (c_sink, nids, pin, cpu_time) = match built {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let bins = Bins {
        sensor: locate::bin("mos-sensor")?,
        sink: locate::bin("peek-sink")?,
        c_sink,
        tmp: tmp.clone(),
        hugepages,
        nids,
        cpu_time,
        pin,
    };
    let r = if idle {
        ensure!(files.len() == 2, "{USAGE}");
        idle_memory(&bins, &files[0], &files[1], runs.unwrap_or(3))
    } else {
        ensure!(!files.is_empty() && !modes.is_empty(), "{USAGE}");
        throughput(&bins, &files, &modes, runs.unwrap_or(5))
    };
    let _ = std::fs::remove_dir_all(&tmp);
    r
}

fn throughput(bins: &Bins, files: &[PathBuf], modes: &[Mode], runs: usize) -> Result<()> {
    ensure!(runs > 0, "--runs must be at least 1");
    println!(
        "# pub-bench: runs={runs}, modes {}, sensor {} (--hugepages {}), analyzers peek-sink; \
         {}; {} CPUs usable",
        modes.iter().map(|m| m.name()).collect::<Vec<_>>().join(","),
        bins.sensor.display(),
        bins.hugepages
            .as_deref()
            .unwrap_or("not given: the sensor's default, auto"),
        bins.pin
            .as_ref()
            .map_or("unpinned".to_string(), Pinning::describe),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut table = Vec::new();
    let mut cost_rows = Vec::new();
    let mut peek_rows = Vec::new();
    let mut c_rows = Vec::new();
    let mut figures: Vec<Figure> = Vec::new();
    let pinned = if bins.pin.is_some() { "_pinned" } else { "" };
    for path in files {
        let name = path.file_stem().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let segments = payload_segments(&name, &bytes, true)?;
        let payload: u64 = segments.iter().map(|&(_, l)| l as u64).sum();
        let mut scratch = vec![0u8; SCRATCH];
        // Untimed warm-up: the capture in the page cache, the binaries loaded.
        let reference = run_sensor(bins, path, Mode::NoPub, &format!("{name}-warm"))?.sensor;
        run_memcpy(&bytes, &segments, &mut scratch);
        let exp = expected_path(path);
        let expected = if exp.is_file() {
            Some(read_expected(&exp)?)
        } else {
            None
        };
        let mut expected_bytes = expected
            .as_ref()
            .map(|e| e.iter().map(|d| d.bytes).sum::<u64>());
        // What the streams hold by the .expected.tsv, not by an analyzer's count.
        let tsv_bytes = expected_bytes;
        let mut nids_seen: Option<(u64, u64)> = None;
        let mut shm_told = false;
        let selected = if modes.contains(&Mode::Pub2F) {
            let e = expected.as_deref().with_context(|| {
                format!(
                    "pub2f needs {} (an mkpcap capture) to know what its analyzers must read",
                    exp.display()
                )
            })?;
            let sel = selection(path, e)?;
            for (k, &(conns, bytes)) in sel.taken.iter().enumerate() {
                println!(
                    "# {name} pub2f analyzer {k}: {:?} selects {conns} of {} connections \
                     ({:.2} %), {bytes} of {} stream bytes",
                    select_expr(SELECT_RESIDUES[k]),
                    sel.conns,
                    100.0 * conns as f64 / sel.conns.max(1) as f64,
                    expected_bytes.unwrap_or(0)
                );
            }
            Some(sel)
        } else {
            None
        };
        let mut times: BTreeMap<Mode, Vec<f64>> = BTreeMap::new();
        let mut cpu: BTreeMap<Mode, Vec<f64>> = BTreeMap::new();
        let mut sinks_cpu: BTreeMap<Mode, Vec<f64>> = BTreeMap::new();
        let mut memcpy = Vec::new();
        let mut sinks: BTreeMap<Mode, Vec<Value>> = BTreeMap::new();
        let mut waits = Vec::new();
        for i in 0..runs {
            for k in 0..modes.len() {
                let mode = modes[(i + k) % modes.len()];
                let tag = format!("{name}-{}-{i}", mode.name());
                if mode == Mode::Nids {
                    let r = run_nids(bins, path, &tag)?;
                    if let Some(want) = tsv_bytes {
                        ensure!(
                            r.bytes == want,
                            "{tag}: libnids delivered {} bytes, the capture's streams hold {want}",
                            r.bytes
                        );
                    }
                    match nids_seen {
                        None => nids_seen = Some((r.conns, r.bytes)),
                        Some(seen) => ensure!(
                            seen == (r.conns, r.bytes),
                            "{tag}: libnids runs disagree ({seen:?} against {:?})",
                            (r.conns, r.bytes)
                        ),
                    }
                    println!(
                        "raw {tag}: libnids CPU {:.0} ms, {} connections, {} bytes, {} warnings",
                        r.cpu_s * 1e3,
                        r.conns,
                        r.bytes,
                        r.warnings
                    );
                    cpu.entry(mode).or_default().push(r.cpu_s);
                    continue;
                }
                let r = run_sensor(bins, path, mode, &tag)?;
                if let (false, Some(line)) = (shm_told, &r.shm) {
                    println!("# {name} {}: {line}", mode.name());
                    shm_told = true;
                }
                check(
                    &tag,
                    mode,
                    &r,
                    &reference,
                    expected_bytes,
                    selected.as_ref(),
                )?;
                if expected_bytes.is_none() && mode.filter(0).is_none() {
                    expected_bytes = r.sinks.first().map(|v| field(v, "bytes"));
                }
                println!(
                    "raw {tag}: {:.3} ms ({:.3} Mpps, {:.3} Gbit/s), sensor CPU {:.0} ms, \
                     analyzers' CPU {:.0} ms, {} events, {} waits{}",
                    r.sensor.replay_s * 1e3,
                    r.sensor.frames as f64 / r.sensor.replay_s / 1e6,
                    payload as f64 * 8.0 / r.sensor.replay_s / 1e9,
                    r.cpu_s * 1e3,
                    r.sinks_cpu_s * 1e3,
                    r.sensor.events,
                    r.sensor.waits,
                    r.sinks
                        .iter()
                        .map(|v| format!(
                            "; sink {} B in {} callbacks, peek {:.3} ms, memcpy {:.3} ms",
                            field(v, "bytes"),
                            field(v, "callbacks"),
                            field(v, "peek_ns") as f64 / 1e6,
                            field(v, "memcpy_grouped_ns") as f64 / 1e6
                        ))
                        .collect::<String>()
                );
                if mode == Mode::Pub2 {
                    waits.push(r.sensor.waits as f64);
                }
                if matches!(mode, Mode::Pub2 | Mode::Pub2C) {
                    sinks.entry(mode).or_default().extend(r.sinks);
                }
                times.entry(mode).or_default().push(r.sensor.replay_s);
                cpu.entry(mode).or_default().push(r.cpu_s);
                sinks_cpu.entry(mode).or_default().push(r.sinks_cpu_s);
            }
            let m = run_memcpy(&bytes, &segments, &mut scratch);
            println!(
                "raw {name} run {i}: memcpy {:.3} ms ({:.3} Gbit/s)",
                m.as_secs_f64() * 1e3,
                gbps(payload, m)
            );
            memcpy.push(gbps(payload, m));
        }
        let (mm, _, _) = med_min_max(&memcpy);
        for (&mode, ts) in &times {
            let pps: Vec<f64> = ts
                .iter()
                .map(|&t| mpps(reference.frames, Duration::from_secs_f64(t)))
                .collect();
            let gb: Vec<f64> = ts
                .iter()
                .map(|&t| gbps(payload, Duration::from_secs_f64(t)))
                .collect();
            let (pm, plo, phi) = med_min_max(&pps);
            let (gm, glo, ghi) = med_min_max(&gb);
            let vs_nopub = times
                .get(&Mode::NoPub)
                .map(|n| {
                    let (nm, _, _) = med_min_max(n);
                    let (me, _, _) = med_min_max(ts);
                    format!("{:.2}", nm / me)
                })
                .unwrap_or_else(|| "-".into());
            println!(
                "summary {name} {}: frames={} payload_bytes={payload} mpps_med={pm:.4} \
                 gbps_med={gm:.4} memcpy_gbps_med={mm:.4} ratio={:.4}",
                mode.name(),
                reference.frames,
                gm / mm
            );
            table.push(format!(
                "| {name} | {} | {pm:.2} ({plo:.2}-{phi:.2}) | {gm:.2} ({glo:.2}-{ghi:.2}) | {mm:.1} | {:.1} % | {vs_nopub} |",
                mode.name(),
                100.0 * gm / mm
            ));
        }
        for (&mode, ts) in &times {
            cost_rows.push(cost_row(
                &name,
                mode,
                ts,
                &times,
                &cpu,
                &sinks_cpu,
                reference.frames,
            ));
        }
        // The C path against Rust, round by round (each round ran both once).
        if let (Some(rust), Some(c), Some(rs), Some(cs)) = (
            times.get(&Mode::Pub2),
            times.get(&Mode::Pub2C),
            sinks.get(&Mode::Pub2),
            sinks.get(&Mode::Pub2C),
        ) {
            // Each run's median peek bandwidth over its two analyzers.
            let peek = |v: &[Value]| -> Vec<f64> {
                v.chunks(2)
                    .map(|p| {
                        let g: Vec<f64> = p
                            .iter()
                            .map(|x| field(x, "bytes") as f64 * 8.0 / field(x, "peek_ns") as f64)
                            .collect();
                        med_min_max(&g).0
                    })
                    .collect()
            };
            let mpps: Vec<f64> = rust.iter().zip(c).map(|(r, c)| r / c).collect();
            let pk: Vec<f64> = peek(cs).iter().zip(peek(rs)).map(|(c, r)| c / r).collect();
            let cpu_r = |m: &BTreeMap<Mode, Vec<f64>>| -> Vec<f64> {
                m[&Mode::Pub2C]
                    .iter()
                    .zip(&m[&Mode::Pub2])
                    .map(|(c, r)| c / r)
                    .collect()
            };
            let f = |v: &[f64]| {
                let (m, lo, hi) = med_min_max(v);
                format!("{m:.3} ({lo:.3}-{hi:.3})")
            };
            println!(
                "summary {name} c-vs-rust: mpps={} peek_gbps={} sensor_cpu={} analyzers_cpu={}",
                f(&mpps),
                f(&pk),
                f(&cpu_r(&cpu)),
                f(&cpu_r(&sinks_cpu))
            );
            c_rows.push(format!(
                "| {name} | {} | {} | {} | {} |",
                f(&mpps),
                f(&pk),
                f(&cpu_r(&cpu)),
                f(&cpu_r(&sinks_cpu))
            ));
        }
        for (&mode, sinks) in &sinks {
            let f = |k: &str| -> Vec<f64> { sinks.iter().map(|v| field(v, k) as f64).collect() };
            let bytes: Vec<f64> = f("bytes");
            let peek: Vec<f64> = bytes
                .iter()
                .zip(f("peek_ns"))
                .map(|(b, ns)| b * 8.0 / ns)
                .collect();
            let mc: Vec<f64> = bytes
                .iter()
                .zip(f("memcpy_grouped_ns"))
                .map(|(b, ns)| b * 8.0 / ns)
                .collect();
            let flat: Vec<f64> = bytes
                .iter()
                .zip(f("memcpy_flat_ns"))
                .map(|(b, ns)| b * 8.0 / ns)
                .collect();
            let paired: Vec<f64> = peek.iter().zip(&mc).map(|(p, m)| p / m).collect();
            let (pk, pklo, pkhi) = med_min_max(&peek);
            let (m, _, _) = med_min_max(&mc);
            let (fl, _, _) = med_min_max(&flat);
            let (pr, _, _) = med_min_max(&paired);
            let metric = match mode {
                Mode::Pub2 => format!("peek_memcpy{pinned}"),
                _ => format!("peek_memcpy_{}{pinned}", mode.name()),
            };
            if let Some(sp) = Spread::of(&paired) {
                figures.push(Figure {
                    metric,
                    capture: name.clone(),
                    spread: sp,
                });
            }
            let (w, _, _) = med_min_max(&waits);
            let v = &sinks[0];
            println!(
                "summary {name} {} peek: sink_bytes={} callbacks={} data_peeks={} chunk_mean={:.0} \
                 chunk_p50={} peek_gbps_med={pk:.3} memcpy_same_chunks_gbps_med={m:.3} \
                 memcpy_flat_gbps_med={fl:.3} median_paired_ratio={pr:.4} sensor_waits_med={w}",
                mode.name(),
                field(v, "bytes"),
                field(v, "callbacks"),
                field(v, "data_peeks"),
                v.get("chunk_mean").and_then(Value::as_f64).unwrap_or(0.0),
                field(v, "chunk_p50"),
            );
            peek_rows.push(format!(
                "| {name} | {} | {:.1} MB | {} | {:.0} B ({}) | {pk:.2} ({pklo:.2}-{pkhi:.2}) | {m:.1} | {:.1} % |",
                mode.name(),
                field(v, "bytes") as f64 / 1e6,
                field(v, "data_peeks"),
                v.get("chunk_mean").and_then(Value::as_f64).unwrap_or(0.0),
                field(v, "chunk_p50"),
                100.0 * pr
            ));
        }
        // Against nopub, round by round (each round ran every mode once).
        let mut add = |metric: String, v: Vec<f64>| {
            if let Some(sp) = Spread::of(&v) {
                figures.push(Figure {
                    metric,
                    capture: name.clone(),
                    spread: sp,
                });
            }
        };
        if let (Some(nt), Some(nc)) = (times.get(&Mode::NoPub), cpu.get(&Mode::NoPub)) {
            for (&mode, ts) in &times {
                if mode != Mode::NoPub {
                    let m = mode.name();
                    add(
                        format!("cpu_{m}_nopub{pinned}"),
                        paired_ratios(&cpu[&mode], nc),
                    );
                    // A throughput ratio: nopub's time over the mode's.
                    add(format!("mpps_{m}_nopub{pinned}"), paired_ratios(nt, ts));
                }
            }
            if let Some(nids) = cpu.get(&Mode::Nids) {
                add(format!("cpu_nopub_nids{pinned}"), paired_ratios(nc, nids));
            }
        }
        if let (Some((conns, bytes)), None) = (nids_seen, tsv_bytes) {
            println!(
                "note {name}: libnids followed {conns} connections and delivered {bytes} bytes; \
                 the sensor {} connections and {} stream bytes (and {} bytes it knows are \
                 missing). libnids follows a connection only from its handshake, reads no IPv6 \
                 and, here, verifies no checksum; mos verifies every checksum",
                reference.conns,
                reference.payload_bytes,
                reference.gap_bytes + reference.overflow_bytes
            );
        }
    }
    println!();
    println!(
        "| capture | mode | Mpps med (min-max) | payload Gbit/s med (min-max) | memcpy Gbit/s med | sensor/memcpy | speed vs nopub |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in &table {
        println!("{r}");
    }
    println!();
    println!(
        "| capture | mode | Mpps med (min-max) | Mpps / pub0, median of rounds (min-max) | \
         sensor CPU ms med (min-max) | CPU / pub0, median of rounds (min-max) | analyzers' CPU ms med |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in &cost_rows {
        println!("{r}");
    }
    if !c_rows.is_empty() {
        println!();
        println!(
            "| capture | C / Rust: Mpps through the sensor, median of rounds (min-max) | peek Gbit/s | sensor CPU | analyzers' CPU |"
        );
        println!("|---|---:|---:|---:|---:|");
        for r in &c_rows {
            println!("{r}");
        }
    }
    if !peek_rows.is_empty() {
        println!();
        println!(
            "| capture | mode | bytes per sink | data peeks | chunk mean (median) | peek Gbit/s med (min-max) | memcpy same chunks Gbit/s med | peek/memcpy (median of paired) |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|");
        for r in &peek_rows {
            println!("{r}");
        }
    }
    println!();
    println!(
        "Against nopub, round by round (median (min-max) of the per-round ratios); the target \
         is issue 18's for the capture named with it"
    );
    println!("| figure | capture | median (min-max) | target (issue 18) |");
    println!("|---|---|---:|---|");
    for f in &figures {
        let target: Vec<String> = ISSUE18_ROWS
            .iter()
            .filter(|r| r.metric == f.metric)
            .map(|r| format!("{} on {}", r.bound.show(), r.role.name()))
            .collect();
        println!(
            "| {} | {} | {} | {} |",
            f.metric,
            f.capture,
            f.spread.show(3),
            if target.is_empty() {
                "-".to_string()
            } else {
                target.join(", ")
            }
        );
    }
    println!();
    for f in &figures {
        println!("{}", result_line(&f.metric, &f.capture, &f.spread));
    }
    Ok(())
}

/// `--report`: issue 18's table from the `result` lines in `files`.
fn print_report(files: &[PathBuf], roles: &[(Role, String)]) -> Result<()> {
    let mut figures = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        for line in text.lines() {
            if let Some(fig) = parse_result_line(line).with_context(|| f.display().to_string())? {
                figures.push(fig);
            }
        }
    }
    for line in issue18_table(&figures, roles)? {
        println!("{line}");
    }
    let more = more_cpus_table(&figures, roles);
    if !more.is_empty() {
        println!();
        println!(
            "With a CPU for every analyzer (projected from the pinned runs, where pub1's one \
             analyzer has a CPU of its own: each analyzer adds pub1 - pub0, which counts the \
             work shared by all analyzers once per analyzer, so the projection leans high):"
        );
        for line in more {
            println!("{line}");
        }
    }
    Ok(())
}

/// Compiles `tests/peers/NAME.c` into `tmp/NAME`, linked with `libs`; `why` says who needs it
/// and `hint` is added to a failure (what to install).
fn build_peer(tmp: &Path, name: &str, libs: &[&str], why: &str, hint: &str) -> Result<PathBuf> {
    let src = locate::workspace_root().join(format!("tests/peers/{name}.c"));
    let out = tmp.join(name);
    let o = Command::new("cc")
        .args(["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .args(libs)
        .output()
        .with_context(|| format!("running cc ({why})"))?;
    ensure!(
        o.status.success(),
        "compiling {} failed{hint}:\n{}",
        src.display(),
        String::from_utf8_lossy(&o.stderr).trim()
    );
    Ok(out)
}

/// Compiles the `cpu-time` wrapper `tests/peers/cpu-time.c` into `tmp`.
fn build_cpu_time(tmp: &Path) -> Result<PathBuf> {
    build_peer(
        tmp,
        "cpu-time",
        &[],
        "pub-bench compiles its CPU-time wrapper",
        "",
    )
}

/// Compiles the libnids peer `tests/peers/nids-count.c` into `tmp`.
fn build_nids(tmp: &Path) -> Result<PathBuf> {
    build_peer(
        tmp,
        "nids-count",
        &["-lnids"],
        "the nids mode compiles the libnids peer",
        "; the nids mode needs libnids-dev (apt-get install libnids-dev, or scripts/setup.sh)",
    )
}

/// `mode`'s row of the cost table: throughput and the sensor's CPU time, and both against
/// `pub0` round by round (each round ran every mode once), if `pub0` ran.
fn cost_row(
    name: &str,
    mode: Mode,
    ts: &[f64],
    times: &BTreeMap<Mode, Vec<f64>>,
    cpu: &BTreeMap<Mode, Vec<f64>>,
    sinks_cpu: &BTreeMap<Mode, Vec<f64>>,
    frames: u64,
) -> String {
    let pps: Vec<f64> = ts.iter().map(|&t| frames as f64 / t / 1e6).collect();
    let ms: Vec<f64> = cpu[&mode].iter().map(|c| c * 1e3).collect();
    let (pm, plo, phi) = med_min_max(&pps);
    let (cm, clo, chi) = med_min_max(&ms);
    let (am, _, _) = med_min_max(&sinks_cpu[&mode]);
    // Paired by round: a faster mode has a throughput ratio above 1, a cheaper one a CPU
    // ratio below 1.
    let ratio = |of: &[f64], base: &[f64], inverse: bool| {
        let r: Vec<f64> = of
            .iter()
            .zip(base)
            .map(|(x, b)| if inverse { b / x } else { x / b })
            .collect();
        let (m, lo, hi) = med_min_max(&r);
        format!("{m:.3} ({lo:.3}-{hi:.3})")
    };
    let (pr, cr) = match (times.get(&Mode::Pub0), cpu.get(&Mode::Pub0)) {
        (Some(bt), Some(bc)) => (ratio(ts, bt, true), ratio(&cpu[&mode], bc, false)),
        _ => ("-".into(), "-".into()),
    };
    println!(
        "summary {name} {} cost: mpps_med={pm:.4} mpps_vs_pub0={pr} cpu_ms_med={cm:.1} \
         cpu_vs_pub0={cr} analyzers_cpu_ms_med={:.1}",
        mode.name(),
        am * 1e3
    );
    format!(
        "| {name} | {} | {pm:.3} ({plo:.3}-{phi:.3}) | {pr} | {cm:.1} ({clo:.1}-{chi:.1}) | {cr} | {:.1} |",
        mode.name(),
        am * 1e3
    )
}

fn idle_memory(bins: &Bins, small: &Path, big: &Path, runs: usize) -> Result<()> {
    ensure!(runs > 0, "--runs must be at least 1");
    println!("# pub-bench --idle: runs={runs}; RssAnon and RssShmem when the input ended");
    let mut rows = Vec::new();
    for mode in [Mode::NoPub, Mode::Pub0] {
        let mut at = Vec::new();
        for path in [small, big] {
            let mut anon = Vec::new();
            let mut shmem = Vec::new();
            let mut conns = 0;
            for i in 0..runs {
                let tag = format!("idle-{}-{i}", mode.name());
                let r = run_sensor(bins, path, mode, &tag)?;
                println!(
                    "raw {} {}: {} conns, RssAnon {} KiB, RssShmem {} KiB",
                    path.display(),
                    mode.name(),
                    r.sensor.conns,
                    r.sensor.rss_anon_kib,
                    r.sensor.rss_shmem_kib
                );
                conns = r.sensor.conns;
                anon.push(r.sensor.rss_anon_kib as f64);
                shmem.push(r.sensor.rss_shmem_kib as f64);
            }
            at.push((conns, med_min_max(&anon).0, med_min_max(&shmem).0));
        }
        let (c0, a0, s0) = at[0];
        let (c1, a1, s1) = at[1];
        ensure!(c1 > c0, "the second capture must hold more connections");
        let per = |x0: f64, x1: f64| (x1 - x0) * 1024.0 / (c1 - c0) as f64;
        let (pa, ps) = (per(a0, a1), per(s0, s1));
        println!(
            "summary idle {}: conns {c0} -> {c1}, RssAnon {a0} -> {a1} KiB, RssShmem {s0} -> {s1} KiB; \
             per idle connection: private {pa:.1} B + shared {ps:.1} B = {:.1} B",
            mode.name(),
            pa + ps
        );
        rows.push(format!(
            "| {} | {c0} -> {c1} | {pa:.0} B | {ps:.0} B | {:.0} B |",
            mode.name(),
            pa + ps
        ));
    }
    println!();
    println!("| mode | idle connections | private (RssAnon) per flow | shared (RssShmem) per flow | total |");
    println!("|---|---|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    println!();
    println!(
        "static sizes: Conn {} B (2 endpoints {} B, 2 stacks of {} B each holding a {} B stream, \
         times, serial, flags), flow-table slot {} B (key {} B + Option<Conn> + last_ns, links, \
         generation, live), index entry 8 B at load 1/4-1/2 (16-32 B per flow), FlowSlot {} B",
        std::mem::size_of::<Conn>(),
        std::mem::size_of::<[Endpoint; 2]>(),
        std::mem::size_of::<Stack>(),
        std::mem::size_of::<Stream>(),
        std::mem::size_of::<(FlowKey, Option<Conn>, u64, u32, u32, u32, bool)>(),
        std::mem::size_of::<FlowKey>(),
        std::mem::size_of::<FlowSlot>(),
    );
    Ok(())
}

/// Compiles `tests/bench/c_peek_sink.c` against `capi/include` and the `libmos.so` beside the
/// binaries, into `tmp`; the binary and a directory holding `libmos.so.0` (the soname).
fn build_c_sink(tmp: &Path) -> Result<(PathBuf, PathBuf)> {
    let root = locate::workspace_root();
    let lib = locate::bin("mos-sensor")?
        .parent()
        .context("the binaries' directory")?
        .join("libmos.so");
    ensure!(
        lib.is_file(),
        "pub2c needs {} (cargo build --release -p mos-capi)",
        lib.display()
    );
    let libdir = tmp.join("lib");
    std::fs::create_dir_all(&libdir)?;
    let link = libdir.join("libmos.so.0");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&lib, &link)?;
    let out = tmp.join("c_peek_sink");
    let st = Command::new("cc")
        .args(["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"])
        .arg(root.join("tests/bench/c_peek_sink.c"))
        .arg("-I")
        .arg(root.join("capi/include"))
        .arg(&lib)
        .arg("-o")
        .arg(&out)
        .status()
        .context("running cc")?;
    ensure!(st.success(), "compiling tests/bench/c_peek_sink.c failed");
    Ok((out, libdir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_line_is_read_whole() {
        let r = parse_nids("nids-count: conns=116 bytes=1050214 evicted=0 warnings=3\n").unwrap();
        assert_eq!(
            (r.conns, r.bytes, r.evicted, r.warnings),
            (116, 1050214, 0, 3)
        );
        assert!(parse_nids("").is_err());
        assert!(parse_nids("nids-count: conns=1 bytes=2 evicted=0\n").is_err());
        assert!(parse_nids("nids-count: conns=1 bytes=-2 evicted=0 warnings=0\n").is_err());
    }

    #[test]
    fn cpu_lines() {
        let e = "noise\npub-bench: cpu user=0.031 sys=0.012\n";
        assert!((parse_cpu(e).unwrap() - 0.043).abs() < 1e-9);
        let e = "pub-bench: cpu user=0.000135 sys=0.013254\n";
        assert!((parse_cpu(e).unwrap() - 0.013389).abs() < 1e-12);
        assert!(parse_cpu("no time here").is_err());
    }
}
