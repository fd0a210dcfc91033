//! `dpdk-bench`: the sensor's inputs (capture file, DPDK net_pcap from memory) with one and two
//! workers, against `memcpy` of the same payload in the same run.
//!
//! For each capture it runs the release `mos-sensor` with `--no-publish` (no shared memory, no
//! analyzers) in these configurations:
//! - `file-1w`, `file-2w`: `--pcap FILE --workers 1|2` (with 2, one reader thread copies
//!   frames into batches for 2 worker threads);
//! - `dpdk-1w`: `--dpdk '... --vdev=net_pcap0,rx_pcap=FILE,infinite_rx=1'`, one worker
//!   polling the one queue;
//! - `dpdk-2w-sw`: the same device, `--workers 2`: one receive thread hashes every frame with
//!   `DispatchHash` and hands the mbufs to 2 workers;
//! - `dpdk-2w-q`: `rx_pcap=PART0,rx_pcap=PART1` (the capture split by `mkpcap split`, as
//!   symmetric RSS would), `--workers 2 --queues-hold-flows`: each worker polls its own queue.
//!
//! A DPDK run stops with `--count` after the capture's frame count times each `--reps` value
//! (infinite_rx replays the file: with more than one pass the tracker sees the same tuples
//! again as new connections). The sensor's time is its `replay_s` (its `stats` line), which
//! leaves out the EAL's start and the loading of the file into mbufs.
//!
//! Each round runs every configuration once, in an order that rotates from round to round,
//! then copies the capture's TCP payload with `memcpy` (every segment, in capture order, into
//! a 256 KiB buffer that wraps around, as `core-bench` does). The figures are medians:
//! Mpps (frames the sensor took / `replay_s`), Gbit/s of payload (the capture's TCP payload
//! times the passes the frames make up, / `replay_s`), the ratio to the memcpy median, and the
//! scaling of each 2-worker path over its 1-worker path (ratio of medians, and the median of
//! the ratios within a round).
//!
//! Nothing is built here: `mos-sensor` and `mkpcap` are found beside this binary (or in
//! `MOS_BIN_DIR`). Needs root (DPDK).
//!
//! usage: dpdk-bench [--runs N] [--reps 1,5] [--configs LIST] [--mem MB] [--mbufs N]
//!                   [--eal-extra ARGS] CAPTURE...

use anyhow::{bail, ensure, Context, Result};
use mos_tests::bench::{gbps, med_min_max, payload_segments, run_memcpy, SCRATCH};
use mos_tests::locate;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const USAGE: &str = "usage: dpdk-bench [--runs N (default 5)] [--reps LIST (default 1,5)] \
     [--configs file-1w,file-2w,dpdk-1w,dpdk-2w-sw,dpdk-2w-q] [--mem MB (default 2048)] \
     [--mbufs N (default 262143)] [--eal-extra ARGS] CAPTURE...";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Input {
    File,
    Dpdk,
    DpdkSoftware,
    DpdkQueues,
}

/// One configuration: an input path, a worker count and (for DPDK) passes over the capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Config {
    path: Input,
    workers: usize,
    reps: u64,
}

impl Config {
    fn name(self) -> String {
        let base = match self.path {
            Input::File => format!("file-{}w", self.workers),
            Input::Dpdk => format!("dpdk-{}w", self.workers),
            Input::DpdkSoftware => "dpdk-2w-sw".into(),
            Input::DpdkQueues => "dpdk-2w-q".into(),
        };
        if self.path == Input::File {
            base
        } else {
            format!("{base} x{}", self.reps)
        }
    }

    /// The 1-worker configuration this one's scaling is measured against.
    fn single(self) -> Option<Config> {
        match (self.path, self.workers) {
            (_, 1) => None,
            (Input::File, _) => Some(Config { workers: 1, ..self }),
            _ => Some(Config {
                path: Input::Dpdk,
                workers: 1,
                ..self
            }),
        }
    }
}

fn parse_configs(list: &str, reps: &[u64]) -> Result<Vec<Config>> {
    let mut out = Vec::new();
    for s in list.split(',') {
        let (path, workers) = match s {
            "file-1w" => (Input::File, 1),
            "file-2w" => (Input::File, 2),
            "dpdk-1w" => (Input::Dpdk, 1),
            "dpdk-2w-sw" => (Input::DpdkSoftware, 2),
            "dpdk-2w-q" => (Input::DpdkQueues, 2),
            _ => bail!("unknown configuration {s:?}\n{USAGE}"),
        };
        if path == Input::File {
            out.push(Config {
                path,
                workers,
                reps: 1,
            });
        } else {
            for &r in reps {
                out.push(Config {
                    path,
                    workers,
                    reps: r,
                });
            }
        }
    }
    Ok(out)
}

/// The sensor's `stats` line, and the lines that say what the input lost and how the frames
/// were spread.
#[derive(Clone, Debug, Default)]
struct SensorStats {
    replay_s: f64,
    workers: u64,
    frames: u64,
    conns: u64,
    payload_bytes: u64,
    capture_drops: u64,
    per_worker: Vec<u64>,
}

fn parse_stats(stderr: &str) -> Result<SensorStats> {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("mos-sensor: stats "))
        .context("the sensor printed no stats line")?;
    let kv: BTreeMap<&str, &str> = line
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect();
    let u = |k: &str| -> Result<u64> {
        kv.get(k)
            .with_context(|| format!("stats line without {k}: {line}"))?
            .parse()
            .with_context(|| format!("stats {k}"))
    };
    let capture_drops = stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("mos-sensor: ")
                .filter(|r| r.contains("frames dropped by the capture"))
        })
        .and_then(|r| r.split_whitespace().next())
        .map_or(Ok(0), str::parse)
        .context("capture drops")?;
    let per_worker = stderr
        .lines()
        .find_map(|l| l.strip_prefix("mos-sensor: frames per worker: "))
        .map(|r| {
            r.split(", ")
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    Ok(SensorStats {
        replay_s: kv
            .get("replay_s")
            .context("stats line without replay_s")?
            .parse()?,
        workers: u("workers")?,
        frames: u("frames")?,
        conns: u("conns")?,
        payload_bytes: u("payload_bytes")?,
        capture_drops,
        per_worker,
    })
}

/// What the driver needs to run a configuration on one capture.
struct Setup<'a> {
    sensor: &'a Path,
    capture: &'a Path,
    parts: &'a [PathBuf; 2],
    frames: u64,
    mem_mb: u64,
    mbufs: u64,
    eal_extra: &'a str,
}

fn run_sensor(s: &Setup<'_>, c: Config) -> Result<SensorStats> {
    let mut cmd = Command::new(s.sensor);
    cmd.arg("--no-publish")
        .arg("--workers")
        .arg(c.workers.to_string());
    if c.path == Input::File {
        cmd.arg("--pcap").arg(s.capture);
    } else {
        let files: Vec<&Path> = if c.path == Input::DpdkQueues {
            s.parts.iter().map(PathBuf::as_path).collect()
        } else {
            vec![s.capture]
        };
        let rx: String = files
            .iter()
            .map(|f| format!(",rx_pcap={}", f.display()))
            .collect();
        let eal = format!(
            "--no-huge -m {} --no-pci --no-shconf -l 0 {} --vdev=net_pcap0{rx},infinite_rx=1",
            s.mem_mb, s.eal_extra
        );
        cmd.arg("--dpdk")
            .arg(eal)
            .arg("--mbufs")
            .arg(s.mbufs.to_string())
            .arg("--count")
            .arg((s.frames * c.reps).to_string());
        if c.path == Input::DpdkQueues {
            cmd.arg("--queues-hold-flows");
        }
    }
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("starting {}", s.sensor.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "{}: the sensor failed ({}):\n{stderr}",
        c.name(),
        out.status
    );
    let st = parse_stats(&stderr).with_context(|| format!("{}:\n{stderr}", c.name()))?;
    ensure!(
        st.workers == c.workers as u64,
        "{}: the sensor ran {} workers",
        c.name(),
        st.workers
    );
    ensure!(
        st.capture_drops == 0,
        "{}: the input dropped {} frames",
        c.name(),
        st.capture_drops
    );
    // A DPDK run ends once its workers have taken `--count` frames; each may finish the
    // burst it holds (32 frames) or the batch it was handed.
    let want = s.frames * c.reps;
    let (lo, hi) = match c.path {
        // The warm-up run finds the frame count.
        Input::File if want == 0 => (0, u64::MAX),
        Input::File => (want, want),
        _ => (want, want + 4096),
    };
    ensure!(
        st.frames >= lo && st.frames <= hi,
        "{}: {} frames taken, {want} asked for",
        c.name(),
        st.frames
    );
    Ok(st)
}

#[derive(Debug, Default)]
struct Series {
    mpps: Vec<f64>,
    gbps: Vec<f64>,
    /// The tracker's own counts, from every run (to show what infinite_rx replays did).
    conns: Vec<u64>,
    payload: Vec<u64>,
    per_worker: Vec<Vec<u64>>,
}

fn main() -> Result<()> {
    let mut runs = 5usize;
    let mut reps = vec![1u64, 5];
    let mut configs = "file-1w,file-2w,dpdk-1w,dpdk-2w-sw,dpdk-2w-q".to_string();
    let mut mem_mb = 2048u64;
    let mut mbufs = 262_143u64;
    let mut eal_extra = String::new();
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--runs" => runs = val()?.parse()?,
            "--reps" => {
                reps = val()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--configs" => configs = val()?,
            "--mem" => mem_mb = val()?.parse()?,
            "--mbufs" => mbufs = val()?.parse()?,
            "--eal-extra" => eal_extra = val()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            s if s.starts_with('-') => bail!("unknown argument {s:?}\n{USAGE}"),
            _ => files.push(PathBuf::from(a)),
        }
    }
    ensure!(runs > 0 && !files.is_empty(), "{USAGE}");
    ensure!(reps.iter().all(|&r| r > 0), "--reps must be positive");
    let configs = parse_configs(&configs, &reps)?;
    let sensor = locate::bin("mos-sensor")?;
    let mkpcap = locate::bin("mkpcap")?;
    let tmp = std::env::temp_dir().join(format!("dpdk-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    println!(
        "# dpdk-bench: runs={runs}, sensor {} --no-publish, {} CPUs online, EAL --no-huge -m \
         {mem_mb} -l 0 {eal_extra}, --mbufs {mbufs}",
        sensor.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut tables = Vec::new();
    let mut result = Ok(());
    for path in &files {
        match bench_capture(
            &sensor, &mkpcap, &tmp, path, &configs, runs, mem_mb, mbufs, &eal_extra,
        ) {
            Ok(t) => tables.push(t),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    result?;
    println!();
    println!(
        "| capture | configuration | threads | Mpps med (min-max) | payload Gbit/s med | \
         memcpy Gbit/s med | sensor/memcpy | 2w/1w (paired) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for t in tables {
        for r in t {
            println!("{r}");
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn bench_capture(
    sensor: &Path,
    mkpcap: &Path,
    tmp: &Path,
    path: &Path,
    configs: &[Config],
    runs: usize,
    mem_mb: u64,
    mbufs: u64,
    eal_extra: &str,
) -> Result<Vec<String>> {
    let name = path.file_stem().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let segments = payload_segments(&name, &bytes, true)?;
    let payload: u64 = segments.iter().map(|&(_, l)| l as u64).sum();
    let mut scratch = vec![0u8; SCRATCH];
    // The capture split by flow, one part per queue, as symmetric RSS would spread it.
    let prefix = tmp.join(format!("{name}.part"));
    let parts = [0, 1].map(|w| PathBuf::from(format!("{}{w}.pcap", prefix.display())));
    if configs.iter().any(|c| c.path == Input::DpdkQueues) {
        let st = Command::new(mkpcap)
            .arg("split")
            .arg("--parts")
            .arg("2")
            .arg("--in")
            .arg(path)
            .arg("--out-prefix")
            .arg(&prefix)
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("starting {}", mkpcap.display()))?;
        ensure!(st.success(), "mkpcap split failed on {}", path.display());
    }
    // A capture whose flows all hash to one side (one connection) leaves a part empty, which
    // net_pcap cannot replay: that capture runs without the queue configuration.
    let mut empty_part = false;
    for p in &parts {
        empty_part |= std::fs::metadata(p).is_ok_and(|m| m.len() <= 24);
    }
    let configs: Vec<Config> = if empty_part {
        println!("note {name}: a split part holds no frame (all its flows hash to one worker); dpdk-2w-q is skipped");
        configs
            .iter()
            .copied()
            .filter(|c| c.path != Input::DpdkQueues)
            .collect()
    } else {
        configs.to_vec()
    };
    let configs = &configs[..];
    println!("loadavg before {name}: {}", loadavg());
    let mut setup = Setup {
        sensor,
        capture: path,
        parts: &parts,
        frames: 0,
        mem_mb,
        mbufs,
        eal_extra,
    };
    // Untimed warm-up, which also counts the capture's frames and connections.
    let reference = run_sensor(
        &setup,
        Config {
            path: Input::File,
            workers: 1,
            reps: 1,
        },
    )?;
    setup.frames = reference.frames;
    ensure!(
        (setup.frames as u128) < u128::from(mbufs),
        "{name}: --mbufs {mbufs} must exceed the capture's {} frames (infinite_rx holds one \
         mbuf per frame)",
        setup.frames
    );
    run_memcpy(&bytes, &segments, &mut scratch);
    println!(
        "capture {name}: {} frames, {} conns, {payload} B TCP payload (tracker: {} B)",
        reference.frames, reference.conns, reference.payload_bytes
    );
    let mut series: BTreeMap<Config, Series> = BTreeMap::new();
    // Per round: each configuration's replay_s, for paired scaling ratios.
    let mut rounds: Vec<BTreeMap<Config, f64>> = Vec::new();
    let mut memcpy = Vec::new();
    for i in 0..runs {
        let mut round = BTreeMap::new();
        for k in 0..configs.len() {
            let c = configs[(i + k) % configs.len()];
            let st = run_sensor(&setup, c)?;
            // The frames taken make up this many passes over the capture.
            let passes = st.frames as f64 / setup.frames as f64;
            let mpps = st.frames as f64 / st.replay_s / 1e6;
            let gb = payload as f64 * passes * 8.0 / st.replay_s / 1e9;
            println!(
                "raw {name} {} run {i}: {:.3} ms, {} frames ({:?} per worker), {mpps:.3} Mpps, \
                 {gb:.3} Gbit/s; tracker: {} conns, {} payload B",
                c.name(),
                st.replay_s * 1e3,
                st.frames,
                st.per_worker,
                st.conns,
                st.payload_bytes
            );
            if c.reps == 1 && c.path != Input::File {
                // One pass of the device is the capture, but for the frames of the next pass
                // taken in the last burst.
                ensure!(
                    st.conns >= reference.conns,
                    "{name} {}: {} connections, the file has {}",
                    c.name(),
                    st.conns,
                    reference.conns
                );
            }
            let s = series.entry(c).or_default();
            s.mpps.push(mpps);
            s.gbps.push(gb);
            s.conns.push(st.conns);
            s.payload.push(st.payload_bytes);
            s.per_worker.push(st.per_worker);
            round.insert(c, st.frames as f64 / st.replay_s);
        }
        let m = run_memcpy(&bytes, &segments, &mut scratch);
        println!(
            "raw {name} memcpy run {i}: {:.3} ms ({:.3} Gbit/s)",
            m.as_secs_f64() * 1e3,
            gbps(payload, m)
        );
        memcpy.push(gbps(payload, m));
        rounds.push(round);
    }
    println!("loadavg after {name}: {}", loadavg());
    let (mm, mlo, mhi) = med_min_max(&memcpy);
    println!("summary {name} memcpy: gbps_med={mm:.3} min={mlo:.3} max={mhi:.3}");
    let mut rows = Vec::new();
    for c in configs {
        let s = &series[c];
        let (pm, plo, phi) = med_min_max(&s.mpps);
        let (gm, _, _) = med_min_max(&s.gbps);
        let scaling = match c.single().filter(|one| series.contains_key(one)) {
            Some(one) => {
                let (om, _, _) = med_min_max(&series[&one].mpps);
                let paired: Vec<f64> = rounds.iter().map(|r| r[c] / r[&one]).collect();
                let (pr, _, _) = med_min_max(&paired);
                println!(
                    "summary {name} {}: scaling over {}: ratio_of_medians={:.3} \
                     median_paired={pr:.3}",
                    c.name(),
                    one.name(),
                    pm / om
                );
                format!("{:.2} ({pr:.2})", pm / om)
            }
            None => "-".into(),
        };
        let threads = match c.path {
            Input::File | Input::DpdkSoftware if c.workers > 1 => c.workers + 1,
            _ => c.workers,
        };
        println!(
            "summary {name} {}: mpps_med={pm:.4} min={plo:.4} max={phi:.4} gbps_med={gm:.4} \
             memcpy_gbps_med={mm:.4} ratio={:.4} conns={:?} tracker_payload={:?} per_worker={:?}",
            c.name(),
            gm / mm,
            s.conns.first(),
            s.payload.first(),
            s.per_worker.first()
        );
        rows.push(format!(
            "| {name} | {} | {threads} | {pm:.2} ({plo:.2}-{phi:.2}) | {gm:.2} | {mm:.1} | {:.1} % | {scaling} |",
            c.name(),
            100.0 * gm / mm
        ));
    }
    Ok(rows)
}

/// /proc/loadavg, to show what else the machine was doing.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
