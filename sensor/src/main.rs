//! `mos-sensor`: reads packets, emulates both TCP endpoints of every connection, reassembles
//! each side's byte stream, and publishes it all to analyzer processes through shared memory
//! (or writes the streams to a directory itself with `--dump`).

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use mos_sensor::budget::{human, physical_memory, self_status_kib};
use mos_sensor::capture::LinkType;
use mos_sensor::capture::{CaptureBackend, CaptureError, FileCapture, RawPacket};
use mos_sensor::cli::Args;
use mos_sensor::config::{self, ConfigFile};
use mos_sensor::control::{self, Allowed, ControlConfig};
use mos_sensor::dispatch::{replay_parallel, Lane};
use mos_sensor::event::Event;
use mos_sensor::live::{allowed_cpus, iface_link_type, open_afpacket, run_afpacket, LiveOptions};
#[cfg(feature = "dpdk")]
use mos_sensor::live::{open_dpdk, run_dpdk, DpdkInput};
use mos_sensor::output::dump::write_index;
use mos_sensor::output::StreamDump;
use mos_sensor::parse::TcpSegment;
use mos_sensor::publish::{
    create_main, store_counters, Fanout, FanoutOptions, HugePages, PublishSink, SlotPublisher,
};
use mos_sensor::replay::{
    replay, ChecksumPolicy, CountingSink, EventSink, ReplayOptions, ReplayOutcome, ReplayStats,
};
use mos_sensor::service;
use mos_sensor::tracker::{Tracker, TrackerConfig, TrackerStats};
use mos_sensor::{log_error, log_info, log_notice, log_warn};
use shm_layout::layout::{counter, sensor_state, ConfigInfo, WorkerInfo};
use shm_layout::EventMask;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A user or group given by name or number.
fn resolve_id(what: &str, v: &str, db: &str) -> Result<u32> {
    config::resolve_id(what, v, db).map_err(anyhow::Error::msg)
}

/// Why the effective arguments could not be made.
#[derive(Debug)]
enum ArgsError {
    /// The command line is wrong (or asks for --help or --version).
    Clap(clap::Error),
    /// The configuration file is wrong, or no input is named anywhere: one line.
    Config(String),
}

impl std::fmt::Display for ArgsError {
    /// One line (a command-line error's first line).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArgsError::Clap(e) => {
                let text = e.to_string();
                let line = text.lines().next().unwrap_or("");
                f.write_str(line.strip_prefix("error: ").unwrap_or(line))
            }
            ArgsError::Config(m) => f.write_str(m),
        }
    }
}

/// The arguments in effect, and the configuration file they took settings from.
#[derive(Clone, Debug)]
struct Effective {
    args: Args,
    config: Option<PathBuf>,
}

/// The arguments in effect for a command line (`argv`, program name first): the command line's
/// own, then the configuration file's settings for the keys it does not give (the file is read
/// anew on each call, so a reload calls this with the original argv). With --print-config, the
/// command line's alone.
fn effective_args(argv: &[OsString]) -> Result<Effective, ArgsError> {
    // The command line alone: what it gives, and where its configuration is. Flags that
    // require an input may be given with the input in the file.
    let mut relaxed = Args::command();
    for id in ["port", "queues_hold_flows", "mbufs", "speed"] {
        relaxed = relaxed.mut_arg(id, |a| {
            a.requires(clap::builder::Resettable::<clap::Id>::Reset)
        });
    }
    let matches = relaxed
        .try_get_matches_from(argv)
        .map_err(ArgsError::Clap)?;
    let cli = Args::from_arg_matches(&matches).map_err(ArgsError::Clap)?;
    if cli.metrics_listen.is_some() {
        return Err(removed_flag("--metrics-listen"));
    }
    if cli.ring_kib.is_some() {
        return Err(removed_flag("--ring-kib"));
    }
    if cli.max_rings.is_some() {
        return Err(removed_flag("--max-rings"));
    }
    if cli.print_config {
        return Ok(Effective {
            args: cli,
            config: None,
        });
    }
    let file = if cli.no_config {
        None
    } else if let Some(path) = &cli.config {
        Some(config::load(path).map_err(|e| ArgsError::Config(e.to_string()))?)
    } else if let Some(default) = config::default_path() {
        match config::load(&default) {
            Ok(f) => Some(f),
            Err(_) if !default.exists() => None,
            Err(e) => return Err(ArgsError::Config(e.to_string())),
        }
    } else {
        None
    };
    let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let cli_input = cli.pcap.is_some() || cli.dpdk.is_some() || cli.iface.is_some();
    // --print-hugepages sizes the configuration's shared memory, which no input changes.
    if !cli_input && !cli.print_hugepages && !file.as_ref().is_some_and(ConfigFile::has_input) {
        return Err(ArgsError::Config(match &file {
            Some(f) => format!(
                "no input: set one of input.pcap, input.dpdk or input.iface in {}, or give --pcap, --dpdk or --iface",
                f.path.display()
            ),
            None => "no input: give --pcap, --dpdk or --iface (or set one of input.pcap, input.dpdk or input.iface in a configuration file, --config)".to_owned(),
        }));
    }
    let mut all = argv.to_vec();
    if let Some(f) = &file {
        let extra = f
            .args(&given)
            .map_err(|e| ArgsError::Config(e.to_string()))?;
        all.extend(extra.into_iter().map(OsString::from));
    }
    let args = Args::try_parse_from(all).map_err(ArgsError::Clap)?;
    Ok(Effective {
        args,
        config: file.map(|f| f.path),
    })
}

/// The error for a flag that was removed: what to do instead (from the table of removed keys).
fn removed_flag(flag: &str) -> ArgsError {
    let instead = config::REMOVED
        .iter()
        .find(|r| r.flag == flag)
        .map_or("see docs/CONFIG.md", |r| r.instead);
    ArgsError::Config(format!("{flag} was removed: {instead}"))
}

/// The configuration keys (`section.key`, such as `sensor.stall_timeout`) whose values differ
/// between two sets of effective arguments, in the table's order: what a reload changed.
fn changed_keys(old: &Args, new: &Args) -> Vec<&'static str> {
    old.config_values()
        .into_iter()
        .zip(new.config_values())
        .filter(|((_, a), (_, b))| a != b)
        .map(|((k, _), _)| k)
        .collect()
}

/// The keys a reload applies to the running sensor; every other key needs a restart.
const RELOADABLE: [&str; 3] = [
    "control.allow_users",
    "control.allow_groups",
    "sensor.stall_timeout",
];

/// What SIGHUP works on: the command line the sensor started with (the file is read again
/// through it, so flags still win), the arguments in effect, and handles on what can change
/// while the sensor runs (set just before the control socket appears; a reload before that, or
/// with --no-publish, has nothing to apply them to).
#[derive(Debug)]
struct Reloader {
    argv: Vec<OsString>,
    running: Args,
    config: Option<PathBuf>,
    /// Who may attach, as the control thread checks it.
    allowed: Option<Arc<std::sync::Mutex<Allowed>>>,
    /// The workers' stall timeout, ns.
    stall_timeout_ns: Option<Arc<AtomicU64>>,
}

impl Reloader {
    /// Reads the configuration again, applies what can change at run time and logs, in one
    /// line, what changed and what needs a restart. A file with an error changes nothing.
    fn reload(&mut self) {
        service::notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading",
            service::monotonic_usec()
        ));
        self.reload_inner();
        service::notify("READY=1\nSTATUS=running");
    }

    fn reload_inner(&mut self) {
        let new = match effective_args(&self.argv) {
            Ok(e) => e,
            Err(e) => {
                mos_sensor::log_error!("SIGHUP: configuration not reloaded, nothing changed: {e}");
                return;
            }
        };
        let Some(file) = new.config.clone().or_else(|| self.config.clone()) else {
            mos_sensor::log_notice!(
                "SIGHUP: no configuration file in use (--no-config, or none at {}); nothing changed",
                config::default_path().map_or_else(
                    || format!("${} (empty)", config::ENV_DEFAULT),
                    |p| p.display().to_string()
                )
            );
            return;
        };
        let changed = changed_keys(&self.running, &new.args);
        if changed.is_empty() {
            mos_sensor::log_notice!("SIGHUP: reloaded {}: nothing changed", file.display());
            return;
        }
        let (now, later): (Vec<&str>, Vec<&str>) =
            changed.iter().partition(|k| RELOADABLE.contains(k));
        let mut applied = Vec::new();
        let mut failed = Vec::new();
        let users_or_groups = now
            .iter()
            .any(|k| *k == "control.allow_users" || *k == "control.allow_groups");
        if users_or_groups {
            match (&self.allowed, allowed_of(&new.args)) {
                (Some(handle), Ok(allowed)) => {
                    // The socket file goes to the new first group (or user) before they are
                    // let in, so that they can also connect.
                    if let Err(e) =
                        control::give_socket(&self.running.control, &self.running.control, &allowed)
                    {
                        mos_sensor::log_warn!("SIGHUP: {e:#}");
                    }
                    *handle.lock().unwrap_or_else(|p| p.into_inner()) = allowed;
                    self.running.allow_user = new.args.allow_user.clone();
                    self.running.allow_group = new.args.allow_group.clone();
                    applied.extend(now.iter().filter(|k| k.starts_with("control.")));
                }
                (None, _) => failed.push(
                    "control.allow_users/allow_groups (no control socket yet, or --no-publish)"
                        .to_string(),
                ),
                (Some(_), Err(e)) => {
                    failed.push(format!("control.allow_users/allow_groups ({e:#})"))
                }
            }
        }
        if now.contains(&"sensor.stall_timeout") {
            match &self.stall_timeout_ns {
                Some(t) => {
                    t.store(
                        Duration::from_secs_f64(new.args.stall_timeout).as_nanos() as u64,
                        Ordering::Relaxed,
                    );
                    self.running.stall_timeout = new.args.stall_timeout;
                    applied.push("sensor.stall_timeout");
                }
                None => failed.push(
                    "sensor.stall_timeout (no control socket yet, or --no-publish)".to_string(),
                ),
            }
        }
        let mut line = format!("SIGHUP: reloaded {}", file.display());
        if !applied.is_empty() {
            line.push_str(&format!("; applied {}", applied.join(", ")));
        }
        if !failed.is_empty() {
            line.push_str(&format!("; not applied: {}", failed.join("; ")));
        }
        if !later.is_empty() {
            line.push_str(&format!(
                "; changed but kept at their running values until a restart (systemctl restart mos-sensor): {}",
                later.join(", ")
            ));
        }
        if failed.is_empty() {
            mos_sensor::log_notice!("{line}");
        } else {
            mos_sensor::log_warn!("{line}");
        }
    }
}

/// Who may attach under these arguments: the sensor's own user, the users and the groups
/// they name.
fn allowed_of(args: &Args) -> Result<Allowed> {
    let mut allowed = Allowed {
        uids: vec![rustix::process::geteuid().as_raw()],
        gids: Vec::new(),
    };
    for u in &args.allow_user {
        allowed.uids.push(resolve_id("user", u, "/etc/passwd")?);
    }
    for g in &args.allow_group {
        allowed.gids.push(resolve_id("group", g, "/etc/group")?);
    }
    Ok(allowed)
}

fn main() -> ExitCode {
    // The status report's uptime counts from here.
    service::process_started();
    let argv: Vec<OsString> = std::env::args_os().collect();
    let effective = match effective_args(&argv) {
        Ok(e) => e,
        // A value out of its range is one line with status 1, as a configuration file's is;
        // other command-line errors are clap's usage errors (status 2), --help and --version
        // clap's too.
        Err(ArgsError::Clap(e)) if e.kind() != clap::error::ErrorKind::ValueValidation => e.exit(),
        Err(e) => {
            log_error!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args = effective.args.clone();
    if args.print_config {
        print!("{}", config::default_file());
        return ExitCode::SUCCESS;
    }
    if let Some(path) = &effective.config {
        if !args.quiet {
            log_info!("configuration from {}", path.display());
        }
    }
    let reloader = Arc::new(std::sync::Mutex::new(Reloader {
        argv,
        running: effective.args,
        config: effective.config,
        allowed: None,
        stall_timeout_ns: None,
    }));
    match run(args, reloader) {
        Ok(code) => code,
        Err(e) => {
            log_error!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The fewest chunks a worker's pool may have: enough for one full-sized segment with the
/// smallest chunks (the tracker's lossless mode waits for analyzers below this).
const MIN_CHUNKS_PER_WORKER: usize = 18;

fn run(args: Args, reloader: Arc<std::sync::Mutex<Reloader>>) -> Result<ExitCode> {
    // Each value is in its range (the flags' parsers check them); what is left are the
    // settings that bound one another.
    let nw = args.workers;
    if args.max_flows < nw {
        bail!(
            "--max-flows must be at least one per worker ({nw} with --workers {nw}), not {}",
            args.max_flows
        );
    }
    if args.stream_chunks < nw * MIN_CHUNKS_PER_WORKER {
        bail!(
            "--stream-chunks must be at least {MIN_CHUNKS_PER_WORKER} per worker ({} with --workers {nw}), not {}",
            nw * MIN_CHUNKS_PER_WORKER,
            args.stream_chunks
        );
    }
    if args.stream_max_kib < 2 * args.chunk_kib {
        bail!(
            "--stream-max-kib ({}) must be at least twice --chunk-kib ({}): a segment that crosses a chunk boundary holds two chunks",
            args.stream_max_kib,
            args.chunk_kib
        );
    }
    if args.wait_analyzers > args.max_analyzers {
        bail!(
            "--wait-analyzers {} would wait forever: at most --max-analyzers ({}) can attach",
            args.wait_analyzers,
            args.max_analyzers
        );
    }
    // Every analyzer and every connection waiting to say hello holds a descriptor: take what
    // the hard limit allows, so the soft default (often 1024) is not what runs out first.
    if let Err(e) = control::raise_open_files_limit() {
        log_warn!("cannot raise the open-files limit: {e}");
    }
    let mut events = EventMask::CONN_NEW_DATA | EventMask::CONN_END;
    if args.dump.is_none() {
        events = EventMask(0);
    }
    let base_events = events;
    let defrag = args.defrag();
    // Each worker gets its share of the connection and ring limits.
    let cfg = TrackerConfig {
        max_flows: args.max_flows.div_ceil(nw),
        idle_timeout_ns: args.idle_timeout.saturating_mul(1_000_000_000),
        chunk_size: args.chunk_kib * 1024,
        chunks: args.stream_chunks.div_ceil(nw),
        stream_max: args.stream_max_kib * 1024,
        history: args.history_kib * 1024,
        track_midstream: !args.no_midstream,
        overlap: args.overlap,
        events,
        ..TrackerConfig::default()
    };
    if args.print_hugepages {
        let pages = if args.no_publish || args.hugepages == HugePages::Off {
            0
        } else {
            mos_sensor::publish::main_hugepages(&config_info(&args, &cfg), nw)?
        };
        println!("{pages}");
        return Ok(ExitCode::SUCCESS);
    }
    let budget = args.budget(&cfg);
    let memcap = args.memcap.or_else(physical_memory);
    if let Some(cap) = memcap {
        budget.check(cap).map_err(|e| {
            anyhow::anyhow!(if args.memcap.is_none() {
                e.replace("--memcap is", "the machine has (the default --memcap)")
            } else {
                e
            })
        })?;
    }
    // The signals first, so that one sent while the input opens (a FIFO waiting for its
    // writer) stops the sensor the usual way; then the input: a bad file, interface or DPDK
    // setup fails before anything is made.
    let stop = Arc::new(AtomicBool::new(false));
    let on_hup = reloader.clone();
    service::handle_signals(
        stop.clone(),
        Box::new(move || on_hup.lock().unwrap_or_else(|p| p.into_inner()).reload()),
    )
    .context("cannot install the signal handlers")?;
    let mut input = open_input(&args, &stop)?;
    // On a loopback device the kernel leaves TCP checksums to an offload that never runs, so
    // verifying them would call nearly every segment bad.
    let loopback = matches!(input, Input::Iface { loopback: true, .. });
    let checksums = if loopback {
        ChecksumPolicy::Ignore
    } else {
        args.checksums()
    };
    let loopback_outgoing = Arc::new(AtomicU64::new(0));
    let mut dumps = Vec::new();
    if let Some(dir) = &args.dump {
        for _ in 0..nw {
            dumps.push(StreamDump::create(dir)?);
        }
    }
    let (mut trackers, publication) = if args.no_publish {
        let mut t = Vec::with_capacity(nw);
        for _ in 0..nw {
            t.push(Tracker::new(cfg.clone()).context("cannot lay out the ring pool")?);
        }
        service::notify("READY=1\nSTATUS=running (publishing nothing)");
        (t, None)
    } else {
        let about = control::SensorInfo {
            input: describe_input(&args, &input),
            loopback_outgoing: loopback.then(|| loopback_outgoing.clone()),
            ..control::SensorInfo::default()
        };
        let input_info = input_info(&input, &cfg);
        let (region, trackers, sinks, server) = publish(
            &args,
            cfg,
            base_events,
            stop.clone(),
            about,
            input_info,
            &reloader,
        )?;
        (trackers, Some((region, sinks, server)))
    };
    for (w, t) in trackers.iter_mut().enumerate() {
        t.set_serials(w as u64, nw as u64);
    }
    let (region, server, pub_sinks) = match publication {
        Some((region, sinks, server)) => (Some(region), Some(server), sinks),
        None => (None, None, Vec::new()),
    };
    let mut sinks: Vec<WorkerSink> = Vec::with_capacity(nw);
    let mut dumps = dumps.into_iter();
    let mut pub_sinks = pub_sinks.into_iter();
    for _ in 0..nw {
        sinks.push(WorkerSink {
            dump: dumps.next(),
            publish: pub_sinks.next(),
            count: CountingSink::default(),
        });
    }
    let show_progress = !args.quiet;
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let opts = ReplayOptions {
        checksums,
        progress_every: show_progress.then_some(Duration::from_secs(1)),
        stop: Some(stop.clone()),
        speed: args.speed,
        defrag,
    };
    let mut progress = |s: &ReplayStats, (done, total): (u64, Option<u64>)| {
        let pct = total
            .filter(|&t| t > 0)
            .map(|t| format!(" {:5.1}%", done as f64 * 100.0 / t as f64));
        let line = format!(
            "{}{} frames, {} MB read",
            s.frames,
            pct.unwrap_or_default(),
            done / 1_000_000
        );
        if tty {
            eprint!("\rmos-sensor: {line}   ");
        } else {
            log_info!("{line}");
        }
    };
    let infos: Vec<Option<&'static WorkerInfo>> = (0..nw)
        .map(|w| region.as_ref().map(|r| &r.header.workers[w]))
        .collect();
    let live_opts = LiveOptions {
        checksums,
        stop: stop.clone(),
        stop_after_idle: args.stop_after_idle.map(Duration::from_secs_f64),
        count: args.count,
        cpus: match &args.cpus {
            Some(c) => {
                let mut sorted = c.0.clone();
                sorted.sort_unstable();
                sorted.dedup();
                if sorted.len() < c.0.len() && !args.quiet {
                    log_warn!("note: --cpus puts several workers on one CPU; they will take turns");
                }
                c.0.clone()
            }
            None => {
                let allowed = allowed_cpus();
                if allowed.len() >= nw {
                    allowed[..nw].to_vec()
                } else {
                    Vec::new()
                }
            }
        },
        // A line a minute in the journal, where they are kept; every 5 s elsewhere.
        progress_every: show_progress.then_some(Duration::from_secs(
            if service::stderr_is_journal() { 60 } else { 5 },
        )),
        defrag,
        loopback_outgoing: loopback_outgoing.clone(),
    };
    let mut live_drops = None;
    let mut loopback_skipped: Option<(String, u64)> = None;
    let mut mem_at_end = None;
    let (outcome, per_worker) = match &mut input {
        Input::File(capture) => {
            let name = args.pcap.clone().unwrap_or_default();
            let mut input = MarkEnd {
                inner: capture,
                at_end: None,
            };
            let r = if nw == 1 {
                let o = replay(
                    &mut input,
                    &mut trackers[0],
                    &mut sinks[0],
                    opts,
                    &mut progress,
                )
                .with_context(|| format!("replaying {}", name.display()))?;
                let per = vec![o.stats.clone()];
                (o, per)
            } else {
                let lanes = lanes(&mut trackers, &mut sinks);
                let o = replay_parallel(&mut input, lanes, &opts, &mut progress)
                    .with_context(|| format!("replaying {}", name.display()))?;
                (
                    ReplayOutcome {
                        stats: o.stats,
                        stopped: o.stopped,
                        capture_error: o.capture_error,
                    },
                    o.per_worker,
                )
            };
            mem_at_end = input.at_end;
            r
        }
        Input::Iface {
            rings, link, name, ..
        } => {
            let lanes = lanes(&mut trackers, &mut sinks);
            if !args.quiet {
                log_notice!(
                    "capturing on {name} (AF_PACKET, {nw} worker{}{})",
                    if nw == 1 { "" } else { "s" },
                    if loopback {
                        "; a loopback device: each frame is captured once, the outgoing copy \
                         skipped, and TCP checksums are not verified, as the kernel leaves them \
                         to an offload that never runs"
                    } else {
                        ""
                    }
                );
            }
            let o = run_afpacket(std::mem::take(rings), *link, lanes, infos, live_opts)
                .with_context(|| format!("capturing on {name}"))?;
            live_drops = Some((o.capture_drops, o.nic_errors, false));
            if loopback {
                loopback_skipped = Some((name.clone(), o.loopback_outgoing));
            }
            (
                ReplayOutcome {
                    stats: o.stats,
                    stopped: o.stopped,
                    capture_error: None,
                },
                o.per_worker,
            )
        }
        #[cfg(feature = "dpdk")]
        Input::Dpdk(d) => {
            let lanes = lanes(&mut trackers, &mut sinks);
            if !args.quiet {
                log_notice!(
                    "receiving from DPDK port {} ({}, {} RX queue{}, {nw} worker{}{})",
                    d.port.id(),
                    d.port.driver_name(),
                    d.port.rx_queues(),
                    if d.port.rx_queues() == 1 { "" } else { "s" },
                    if nw == 1 { "" } else { "s" },
                    match (nw, d.port.rss(), usize::from(d.port.rx_queues()) == nw) {
                        (1, _, _) => "",
                        (_, true, _) => ", symmetric RSS",
                        (_, false, true) => ", queues hold whole flows",
                        (_, false, false) => ", no RSS: software dispatch",
                    }
                );
            }
            let blind = d.port.driver_name() == "net_af_packet";
            let loopback_vdevs: Vec<String> = args
                .dpdk
                .as_deref()
                .map(mos_sensor::live::af_packet_vdev_ifaces)
                .unwrap_or_default()
                .into_iter()
                .filter(|i| mos_sensor::live::iface_is_loopback(i))
                .collect();
            if blind && !loopback_vdevs.is_empty() {
                // libpcap and --iface tell the copies apart by the packet type the kernel gives
                // each one; DPDK's af_packet driver does not pass it on.
                log_warn!(
                    "warning: net_af_packet on the loopback device {} receives every frame twice (as sent and as received) and cannot tell the copies apart: connections will read as retransmissions and TCP checksums as bad; capture a loopback device with --iface, which reads each frame once",
                    loopback_vdevs.join(", ")
                );
            }
            if blind && !args.quiet {
                // DPDK 22.11's af_packet driver does not read the socket's drop counter.
                log_warn!(
                    "note: net_af_packet does not count frames the kernel drops when its ring is full; size the ring with framecnt= (65536 or more for fast links), or capture with --iface, which counts them"
                );
            }
            let o = run_dpdk(d, lanes, infos, live_opts)
                .with_context(|| format!("receiving from DPDK port {}", d.port.id()))?;
            live_drops = Some((o.capture_drops, o.nic_errors, blind));
            (
                ReplayOutcome {
                    stats: o.stats,
                    stopped: o.stopped,
                    capture_error: None,
                },
                o.per_worker,
            )
        }
    };
    let replay_secs = started.elapsed().as_secs_f64();
    let mem_at_end = mem_at_end.unwrap_or_else(rss_kib);
    if show_progress && tty {
        eprintln!();
    }
    let mut tstats = TrackerStats::default();
    for t in &trackers {
        tstats.add(t.stats());
    }
    let mut published = [0u64; 4];
    let mut logged = 0;
    if let Some(region) = &region {
        for (w, t) in trackers.iter().enumerate() {
            let info = &region.header.workers[w];
            store_counters(info, &per_worker[w], t);
            let c = |i: usize| info.counters[i].load(Ordering::Relaxed);
            for (k, i) in [
                counter::EVENTS,
                counter::EVENTS_DROPPED,
                counter::WAITS,
                counter::STALLED_DETACHED,
            ]
            .into_iter()
            .enumerate()
            {
                published[k] += c(i);
            }
        }
        for s in &sinks {
            logged += s.publish.as_ref().map_or(0, |p| p.fanout.logged);
        }
        if !args.quiet {
            // A warning in the journal when an analyzer lost events or was detached.
            let level = if published[1] + published[3] > 0 {
                service::Level::Warning
            } else {
                service::Level::Info
            };
            service::log(
                level,
                format_args!(
                "published {} events to analyzers ({} dropped for full rings, {} waits for slow analyzers, {} analyzers detached for stalling); {} frames logged for getlastpkt",
                published[0], published[1], published[2], published[3], logged
                ),
            );
        }
        if outcome.stopped {
            region
                .header
                .state
                .store(sensor_state::STOPPED, Ordering::Release);
        }
    }
    let mut records = Vec::new();
    let mut dumped = false;
    for s in sinks {
        // Dropping a publisher's sink and then the server removes the socket; analyzers still
        // attached see it close after the Done message (or, when stopped, a detach).
        if let Some(d) = s.dump {
            records.extend(d.into_records());
            dumped = true;
        }
    }
    drop(server);
    let written = match (&args.dump, dumped) {
        (Some(dir), true) => Some((records.len(), write_index(dir, records)?)),
        _ => None,
    };
    if let Some(e) = &outcome.capture_error {
        log_warn!(
            "{e}; the replay stopped there, results cover the {} frames before it",
            outcome.stats.frames
        );
    }
    if !args.quiet {
        let s = &outcome.stats;
        let t = &tstats;
        let secs = started.elapsed().as_secs_f64();
        log_info!(
            "{} frames ({} TCP, {} other IP, {} not IP, {} IP fragments; TCP and other IP include reassembled datagrams) in {:.2} s",
            s.frames, s.tcp, s.other_ip, s.not_ip, s.defrag.fragments, secs
        );
        if let Some((drops, (errors, nombuf), blind)) = live_drops {
            // A warning in the journal when anything was lost.
            let level = if drops + errors + nombuf > 0 {
                service::Level::Warning
            } else {
                service::Level::Info
            };
            service::log(
                level,
                format_args!(
                "{drops} frames dropped by the capture before the sensor saw them{}; {errors} receive errors, {nombuf} frames lost for want of an mbuf",
                if blind {
                    " (as far as the driver counts: net_af_packet does not count the kernel's)"
                } else {
                    ""
                }
                ),
            );
        }
        if let Some((name, n)) = &loopback_skipped {
            log_info!(
                "{name} is a loopback device: {n} outgoing copies of frames skipped (loopback_outgoing; the kernel hands each frame there to the capture as sent and as received, and the received copy is the one read)"
            );
        }
        if nw > 1 {
            let split: Vec<String> = per_worker.iter().map(|w| w.frames.to_string()).collect();
            log_info!(
                "frames per worker: {}{}",
                split.join(", "),
                if args.pcap.is_some() && s.defrag.fragments > 0 {
                    " (IP fragments, reassembled by the reader, counted in worker 0)"
                } else {
                    ""
                }
            );
        }
        let checked = if checksums.verifies() {
            format!(
                ", {} with bad TCP checksums (--drop-bad-checksums); kept {} with bad TCP checksums,",
                s.bad_checksum_dropped,
                s.bad_checksum - s.bad_checksum_dropped
            )
        } else if loopback {
            "; TCP checksums not verified (a loopback device: the kernel leaves them to an offload that never runs); kept".to_string()
        } else {
            "; TCP checksums not verified (--no-checksum); kept".to_string()
        };
        log_info!(
            "skipped {} truncated, {} malformed, {} of unsupported link type{checked} {} cut by the snap length (rest counted as a gap), {} shorter than their IP length",
            s.truncated,
            s.malformed,
            s.unsupported_link,
            s.snap_cut,
            s.ip_length_exceeds_frame
        );
        let d = &s.defrag;
        if d.fragments > 0 {
            log_info!(
                "{} IP fragments: {} datagrams reassembled, {} fragments dropped ({} datagrams timed out, {} dropped for memory, {} for the datagram limit, {} overlapping IPv6, {} bogus, {} tiny, {} with too many holes, {} cut by the snap length; {} fragments unreadable, {} late); {} overlapping fragments, {} with conflicting bytes",
                d.fragments,
                d.datagrams,
                d.fragments_dropped,
                d.drop_timeout,
                d.drop_memory,
                d.drop_datagrams,
                d.drop_overlap,
                d.drop_bogus,
                d.drop_tiny,
                d.drop_holes,
                d.drop_truncated,
                d.unreadable,
                d.late,
                d.overlaps,
                d.conflicts
            );
        }
        log_info!(
            "{} connections ({} midstream, {} closed, {} timed out, {} evicted, {} open at end); {} payload bytes, {} retransmitted, {} lost to gaps, {} lost to overflow, {} conflicting retransmissions, {} keep-alives",
            t.conns_created,
            t.conns_midstream,
            t.conns_closed,
            t.conns_timed_out,
            t.conns_evicted,
            t.conns_open_at_end,
            t.payload_bytes,
            t.rexmit_bytes,
            t.gap_bytes,
            t.overflow_bytes,
            t.conflicts,
            t.keepalives
        );
        let (chunks, chunk_bytes) = trackers.first().map_or((0, 0), |t| {
            let shape = t.pool().shape();
            (shape.chunks * trackers.len(), shape.chunk_size)
        });
        log_info!(
            "streams: a pool of {chunks} chunks of {} KiB; taken back from the least recently active sides when it ran empty: {} bytes of history ({} chunks); lost for want of chunks: {} bytes (counted in lost to overflow)",
            chunk_bytes / 1024,
            t.reclaimed_bytes,
            t.reclaimed_chunks,
            t.pool_empty_bytes
        );
        log_info!(
            "memory: at most {} by this configuration ({}); peak resident {}",
            human(budget.total()),
            match (args.memcap, memcap) {
                (Some(c), _) => format!("--memcap {}", human(c)),
                (None, Some(c)) => format!("the machine has {}", human(c)),
                (None, None) => "no cap".to_string(),
            },
            human(peak_rss_kib() * 1024)
        );
        if let Some((n, path)) = &written {
            log_info!("{n} connections written to {}", path.display());
        }
        // One line for scripts (pub-bench): the replay's time from its start (after
        // --wait-analyzers) to the end of the lossless drain, and memory when the input ended.
        log_info!(
            "stats replay_s={replay_secs:.6} workers={nw} frames={} conns={} evicted={} payload_bytes={} gap_bytes={} overflow_bytes={} pool_empty_bytes={} reclaimed_bytes={} events={} events_dropped={} waits={} rss_anon_kib={} rss_shmem_kib={} peak_rss_kib={} mem_bound_kib={} memcap_kib={}",
            s.frames,
            t.conns_created,
            t.conns_evicted,
            t.payload_bytes,
            t.gap_bytes,
            t.overflow_bytes,
            t.pool_empty_bytes,
            t.reclaimed_bytes,
            published[0],
            published[1],
            published[2],
            mem_at_end.0,
            mem_at_end.1,
            peak_rss_kib(),
            budget.total() / 1024,
            memcap.unwrap_or(0) / 1024,
        );
    }
    drop(region);
    Ok(if outcome.stopped {
        log_notice!("stopped by a signal");
        ExitCode::from(130)
    } else if outcome.capture_error.is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Each worker's tracker and sink, as the lanes the input loops take.
fn lanes<'a>(
    trackers: &'a mut [Tracker],
    sinks: &'a mut [WorkerSink],
) -> Vec<Lane<'a, WorkerSink>> {
    trackers
        .iter_mut()
        .zip(sinks.iter_mut())
        .map(|(tracker, sink)| Lane { tracker, sink })
        .collect()
}

/// Where one worker's events go: its part of the in-process dump, its analyzers, or (with
/// neither) a counter.
#[derive(Debug)]
struct WorkerSink {
    dump: Option<StreamDump>,
    publish: Option<PublishSink>,
    count: CountingSink,
}

impl EventSink for WorkerSink {
    fn before(
        &mut self,
        tracker: &mut Tracker,
        pkt: &RawPacket<'_>,
        pos: u64,
        seg: Option<&TcpSegment<'_>>,
    ) -> Result<()> {
        if let Some(d) = &mut self.dump {
            d.before(tracker, pkt, pos, seg)?;
        }
        if let Some(p) = &mut self.publish {
            p.before(tracker, pkt, pos, seg)?;
        }
        Ok(())
    }

    fn handle(&mut self, tracker: &Tracker, events: &[Event]) -> Result<()> {
        match (&mut self.dump, &mut self.publish) {
            (None, None) => self.count.handle(tracker, events),
            (d, p) => {
                if let Some(d) = d {
                    d.handle(tracker, events)?;
                }
                if let Some(p) = p {
                    p.handle(tracker, events)?;
                }
                Ok(())
            }
        }
    }

    fn handle_frame(
        &mut self,
        tracker: &Tracker,
        events: &[Event],
        pkt: &RawPacket<'_>,
    ) -> Result<()> {
        match (&mut self.dump, &mut self.publish) {
            (None, None) => self.count.handle(tracker, events),
            (d, p) => {
                if let Some(d) = d {
                    d.handle(tracker, events)?;
                }
                if let Some(p) = p {
                    p.handle_frame(tracker, events, pkt)?;
                }
                Ok(())
            }
        }
    }

    fn idle(&mut self, tracker: &mut Tracker) {
        if let Some(p) = &mut self.publish {
            p.idle(tracker);
        }
    }

    fn checkpoint(&mut self, tracker: &Tracker, stats: &ReplayStats) {
        if let Some(p) = &mut self.publish {
            p.checkpoint(tracker, stats);
        }
    }

    fn end(&mut self, tracker: &mut Tracker) -> Result<()> {
        if let Some(d) = &mut self.dump {
            d.end(tracker)?;
        }
        if let Some(p) = &mut self.publish {
            p.end(tracker)?;
        }
        Ok(())
    }
}

/// Where frames come from.
enum Input {
    File(FileCapture),
    Iface {
        rings: Vec<mos_afpacket::Ring>,
        link: LinkType,
        name: String,
        /// A loopback device: outgoing copies are skipped, checksums not verified.
        loopback: bool,
    },
    #[cfg(feature = "dpdk")]
    Dpdk(Box<DpdkInput>),
}

/// Opens the input the arguments name (exactly one, which clap checks). A capture that is
/// not a regular file (a pipe, a FIFO) ends where it is once `stop` is set, even while its
/// writer sends nothing.
fn open_input(args: &Args, stop: &Arc<AtomicBool>) -> Result<Input> {
    if let Some(path) = &args.pcap {
        if path.as_os_str() == "-" {
            return Ok(Input::File(FileCapture::stdin_until(stop.clone())?));
        }
        return Ok(Input::File(FileCapture::open_until(path, stop.clone())?));
    }
    if let Some(iface) = &args.iface {
        let link = iface_link_type(iface)?;
        let rings = open_afpacket(iface, args.workers, args.block_timeout_ms)?;
        return Ok(Input::Iface {
            loopback: rings.iter().any(|r| r.is_loopback()),
            rings,
            link,
            name: iface.clone(),
        });
    }
    if let Some(eal) = &args.dpdk {
        #[cfg(feature = "dpdk")]
        {
            return Ok(Input::Dpdk(Box::new(open_dpdk(
                eal,
                args.port,
                args.workers,
                args.queues_hold_flows,
                args.mbufs,
            )?)));
        }
        #[cfg(not(feature = "dpdk"))]
        {
            let _ = eal;
            bail!("this mos-sensor was built without DPDK (cargo feature \"dpdk\")");
        }
    }
    bail!("no input: give --pcap, --dpdk or --iface")
}

/// The input, noting this process's memory when it ends (before the connections still open
/// are ended), so that the state of connections idle at the end of a capture can be measured.
struct MarkEnd<'a> {
    inner: &'a mut FileCapture,
    /// `RssAnon` and `RssShmem` in KiB, once the input ended.
    at_end: Option<(u64, u64)>,
}

impl CaptureBackend for MarkEnd<'_> {
    fn next_packet(&mut self) -> Result<Option<RawPacket<'_>>, CaptureError> {
        let r = self.inner.next_packet();
        if self.at_end.is_none() && !matches!(r, Ok(Some(_))) {
            self.at_end = Some(rss_kib());
        }
        r
    }

    fn progress(&self) -> (u64, Option<u64>) {
        self.inner.progress()
    }
}

/// `VmHWM`, this process's peak resident memory, in KiB (0 where /proc is not readable).
fn peak_rss_kib() -> u64 {
    let [hwm] = self_status_kib(["VmHWM"]);
    hwm
}

/// `RssAnon` and `RssShmem` of this process in KiB (zeros where /proc is not readable).
fn rss_kib() -> (u64, u64) {
    let [anon, shmem] = self_status_kib(["RssAnon", "RssShmem"]);
    (anon, shmem)
}

/// The input as status reports name it.
fn describe_input(args: &Args, input: &Input) -> String {
    match input {
        Input::File(_) => match &args.pcap {
            Some(p) if p.as_os_str() == "-" => "pcap - (standard input)".to_string(),
            p => format!("pcap {}", p.clone().unwrap_or_default().display()),
        },
        Input::Iface { name, .. } => format!("iface {name} (AF_PACKET)"),
        #[cfg(feature = "dpdk")]
        Input::Dpdk(d) => format!("dpdk port {} ({})", d.port.id(), d.port.driver_name()),
    }
}

/// What the header tells analyzers of the input: the link types its frames may have (filters
/// are compiled for each), with `LINKTYPE_RAW` for datagrams reassembled from fragments.
fn input_info(input: &Input, cfg: &TrackerConfig) -> shm_layout::layout::InputInfo {
    let mut links = match input {
        Input::File(f) => f.link_types(),
        Input::Iface { link, .. } => vec![*link],
        #[cfg(feature = "dpdk")]
        Input::Dpdk(_) => vec![LinkType::Ethernet],
    };
    links.push(LinkType::Raw);
    let mut info = shm_layout::layout::InputInfo {
        history: cfg.history,
        ..Default::default()
    };
    let mut n = 0;
    for l in links {
        let code = l.code();
        if n < info.linktypes.len() && !info.linktypes[..n].contains(&code) {
            info.linktypes[n] = code;
            n += 1;
        }
    }
    info
}

/// The sizes the shared memory is made with.
fn config_info(args: &Args, cfg: &TrackerConfig) -> ConfigInfo {
    ConfigInfo {
        chunk_size: cfg.chunk_size as u64,
        buffers_per_worker: cfg.pool_shape().buffers as u64,
        chunks_per_worker: cfg.chunks as u64,
        chunk_map_len: cfg.pool_shape().map_len as u64,
        slots_per_worker: cfg.max_flows as u64 + 2,
        pktlog_entries: args.pktlog_frames,
        pktlog_bytes: args.pktlog_kib * 1024,
        event_ring_len: args.event_ring,
        idle_timeout_ns: cfg.idle_timeout_ns,
        overlap_policy: cfg.overlap.code(),
    }
}

/// Creates the shared memory and the control socket, and each
/// worker's tracker (writing into its part of the shared memory) and publisher. `input`
/// describes the input for status reports.
fn publish(
    args: &Args,
    cfg: TrackerConfig,
    base_events: EventMask,
    stop: Arc<AtomicBool>,
    about: control::SensorInfo,
    input_info: shm_layout::layout::InputInfo,
    reloader: &std::sync::Mutex<Reloader>,
) -> Result<(
    mos_sensor::publish::MainRegion,
    Vec<Tracker>,
    Vec<PublishSink>,
    control::ControlServer,
)> {
    let nw = args.workers;
    let first_allowed = allowed_of(args)?;
    // What a reload can change is handed to the reloader before the socket appears, so that a
    // SIGHUP sent as soon as it is there finds them.
    let allowed = Arc::new(std::sync::Mutex::new(first_allowed.clone()));
    let stall_timeout_ns = Arc::new(AtomicU64::new(
        Duration::from_secs_f64(args.stall_timeout).as_nanos() as u64,
    ));
    {
        let mut r = reloader.lock().unwrap_or_else(|p| p.into_inner());
        r.stall_timeout_ns = Some(stall_timeout_ns.clone());
        r.allowed = Some(allowed.clone());
    }
    // The socket first: a bad path fails before any shared memory is made.
    let listener = control::Listener::bind(&args.control, &first_allowed)?;
    let memory_bound = Some(args.budget(&cfg).total());
    let info = config_info(args, &cfg);
    let epoch = {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 40)
    };
    let lossless = args.is_lossless();
    let quiet = args.quiet;
    let mut log = |line: String| {
        if !quiet {
            log_info!("{line}");
        }
    };
    let (region, parts) = create_main(
        &info,
        &input_info,
        nw,
        epoch,
        args.hugepages,
        lossless,
        &mut log,
    )?;
    let mut trackers = Vec::with_capacity(nw);
    let mut to_workers = Vec::with_capacity(nw);
    let mut worker_rxs = Vec::with_capacity(nw);
    for part in parts {
        let slots = SlotPublisher::new(part.slots, part.metas, part.tunnels);
        let mut tracker = Tracker::with_publisher(
            cfg.clone(),
            part.chunk_bytes,
            part.chunk_map,
            Box::new(slots),
        )
        .context("cannot lay out the stream-buffer pool")?;
        tracker.set_lossless(lossless);
        trackers.push(tracker);
        let (tx, rx) = std::sync::mpsc::channel();
        to_workers.push(tx);
        worker_rxs.push((rx, part.info, part.pktlog));
    }
    let (to_control, control_rx) = std::sync::mpsc::channel();
    let server = control::start_on(
        listener,
        ControlConfig {
            path: args.control.clone(),
            allowed,
            main_ro: region.ro_fd.try_clone()?,
            main_len: region.len,
            epoch,
            nworkers: nw,
            event_capacity: args.event_ring,
            max_analyzers: args.max_analyzers,
            limits: control::Limits {
                max_pending: args.max_pending,
                hello_timeout: Duration::try_from_secs_f64(args.hello_timeout)
                    .context("--hello-timeout: not a number of seconds")?,
            },
            header: region.header,
            info: control::SensorInfo {
                lossless,
                memory_bound,
                ..about
            },
        },
        to_workers,
        control_rx,
    )?;
    let info_slots = info.slots_per_worker as usize;
    let mut fanouts: Vec<Fanout> = worker_rxs
        .into_iter()
        .enumerate()
        .map(|(w, (rx, info, pktlog))| {
            Fanout::new(
                w,
                FanoutOptions {
                    lossless,
                    stall_timeout_ns: stall_timeout_ns.clone(),
                    stop: Some(stop.clone()),
                    slots: info_slots,
                },
                rx,
                to_control.clone(),
                info,
                pktlog,
            )
        })
        .collect();
    drop(to_control);
    region
        .header
        .state
        .store(sensor_state::RUNNING, Ordering::Release);
    log(format!(
        "analyzers attach at {} ({} mode, {nw} worker{})",
        args.control.display(),
        if lossless { "lossless" } else { "lossy" },
        if nw == 1 { "" } else { "s" }
    ));
    // Ready: the shared memory is published and the control socket listens (analyzers that
    // the sensor waits for can only attach from here on).
    service::notify(&format!(
        "READY=1\nSTATUS=running; analyzers attach at {}",
        args.control.display()
    ));
    if args.wait_analyzers > 0 {
        log(format!(
            "waiting for {} analyzer(s) to attach",
            args.wait_analyzers
        ));
        let n = args.wait_analyzers;
        // Every worker must have taken the analyzers in before the first frame, or a worker
        // that polls its control channel late would publish events they never see.
        // SIGINT or SIGTERM end the wait; the replay then stops before its first frame.
        for (w, fanout) in fanouts.iter_mut().enumerate() {
            if !fanout.wait_ready(n, &stop, |ready| {
                if !quiet && w == 0 {
                    log_info!("{ready} of {n} analyzer(s) ready");
                }
            }) {
                bail!("the control thread stopped while waiting for analyzers");
            }
        }
    }
    let running = Arc::new(AtomicUsize::new(nw));
    let sinks = fanouts
        .into_iter()
        .map(|f| PublishSink::new(f, base_events, region.header, running.clone()))
        .collect();
    Ok((region, trackers, sinks, server))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("mos-sensor").chain(argv.iter().copied()))
            .expect("valid arguments")
    }

    /// Every flag has a configuration key, and every key's flags are flags.
    #[test]
    fn every_flag_has_a_key() {
        let key_ids: Vec<String> = config::KEYS.iter().flat_map(|k| k.flag.ids()).collect();
        let cmd = Args::command();
        let arg_ids: Vec<String> = cmd
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .filter(|id| {
                !matches!(
                    id.as_str(),
                    "help"
                        | "version"
                        | "config"
                        | "no_config"
                        | "print_config"
                        | "print_hugepages"
                ) && !config::REMOVED
                    .iter()
                    .any(|r| r.flag.trim_start_matches('-').replace('-', "_") == *id)
            })
            .collect();
        for id in &arg_ids {
            assert!(key_ids.contains(id), "--{id} has no configuration key");
        }
        for id in &key_ids {
            assert!(
                arg_ids.contains(id),
                "a key stands for {id}, which is not a flag"
            );
        }
        let names: Vec<&str> = parse(&["--pcap", "x"])
            .config_values()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let paths: Vec<String> = config::KEYS.iter().map(|k| k.path()).collect();
        assert_eq!(names, paths);
    }

    /// The command line a key's flag needs beside it (the input it applies to).
    fn input_for(k: &config::Key) -> [&'static str; 2] {
        match k.scope {
            config::Scope::Dpdk => ["--dpdk", "x"],
            config::Scope::Live => ["--iface", "lo"],
            _ => ["--pcap", "x"],
        }
    }

    /// Every numeric flag takes exactly its key's range: the bounds are accepted, values past
    /// them, NaN, the infinities and huge numbers are refused with a one-line message that
    /// names the flag, the value and the range (and exit status 1, in main).
    #[test]
    fn numeric_flags_take_their_keys_range() {
        use config::Type;
        let mut checked = 0;
        for k in config::KEYS {
            let config::Flag::Value(flag) = k.flag else {
                continue;
            };
            let (good, bad): (Vec<String>, Vec<String>) = match k.ty {
                Type::Int { min, max } | Type::PowerOfTwo { min, max } => (
                    vec![min.to_string(), max.to_string()],
                    vec![
                        (i128::from(min) - 1).to_string(),
                        (i128::from(max) + 1).to_string(),
                        "99999999999999999999999".into(),
                        "1e300".into(),
                        "nan".into(),
                    ],
                ),
                Type::Seconds { min, max } | Type::Factor { min, max } => (
                    vec![min.to_string(), max.to_string()],
                    vec![
                        (min / 2.0).to_string(),
                        (max * 2.0).to_string(),
                        "0".into(),
                        "-1".into(),
                        "1e300".into(),
                        "1e-300".into(),
                        "nan".into(),
                        "inf".into(),
                        "-inf".into(),
                    ],
                ),
                Type::Size => (
                    vec!["1".into(), "16G".into()],
                    vec![
                        "0".into(),
                        "-1".into(),
                        "99999999999T".into(),
                        "1e300".into(),
                    ],
                ),
                _ => continue,
            };
            checked += 1;
            // `--flag -inf` too: a value that starts with a hyphen is the flag's value.
            let argv = |v: &str| -> Vec<String> {
                let mut a = vec!["mos-sensor".to_owned()];
                a.extend(input_for(k).map(String::from));
                a.extend([flag.to_owned(), v.to_owned()]);
                a
            };
            for v in &good {
                Args::try_parse_from(argv(v)).unwrap_or_else(|e| panic!("{flag} {v}: {e}"));
            }
            for v in &bad {
                let e = Args::try_parse_from(argv(v)).expect_err(&format!("{flag} {v}"));
                assert_eq!(
                    e.kind(),
                    clap::error::ErrorKind::ValueValidation,
                    "{flag} {v}: {e}"
                );
                let line = ArgsError::Clap(e).to_string();
                assert!(
                    line.starts_with(&format!("invalid value '{v}' for '{flag} <")),
                    "{flag} {v}: {line}"
                );
                if !matches!(k.ty, Type::Size) {
                    let (lo, hi) = match k.ty {
                        Type::Int { min, max } | Type::PowerOfTwo { min, max } => {
                            (min.to_string(), max.to_string())
                        }
                        Type::Seconds { min, max } | Type::Factor { min, max } => {
                            (min.to_string(), max.to_string())
                        }
                        _ => unreachable!(),
                    };
                    assert!(
                        line.contains(&format!("between {lo} and {hi}")),
                        "{flag} {v}: {line}"
                    );
                }
            }
        }
        assert!(checked >= 21, "only {checked} numeric keys");
        // A flag where a number belongs is a value that is not a number.
        let e = Args::try_parse_from(["mos-sensor", "--pcap", "x", "--stall-timeout", "--lossy"])
            .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{e}");
    }

    /// Every numeric flag's --help gives its range, as its key has it.
    #[test]
    fn numeric_flags_help_gives_the_range() {
        use config::Type;
        let cmd = Args::command();
        for k in config::KEYS {
            let (lo, hi) = match k.ty {
                Type::Int { min, max } | Type::PowerOfTwo { min, max } => {
                    (min.to_string(), max.to_string())
                }
                Type::Seconds { min, max } | Type::Factor { min, max } => {
                    (min.to_string(), max.to_string())
                }
                _ => continue,
            };
            let id = &k.flag.ids()[0];
            let arg = cmd.get_arguments().find(|a| a.get_id() == id).unwrap();
            let help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(|h| h.to_string().replace('\n', " "))
                .unwrap_or_default();
            // A flag bounded below by the workers says so in words.
            let lo_ok = help.contains(&lo) || help.contains("one per worker");
            assert!(lo_ok && help.contains(&hi), "--{id}: {lo} to {hi}: {help}");
        }
    }

    /// Each key's default, through its flag, gives the flag's own default.
    #[test]
    fn the_table_defaults_are_the_flags_defaults() {
        let plain = parse(&["--dpdk", "x"]).config_values();
        for k in config::KEYS {
            let config::Default::Value(v) = k.default else {
                continue;
            };
            let text = format!("[{}]\n{} = {v}\n", k.section, k.name);
            let file = config::parse(std::path::Path::new("t.toml"), &text).unwrap();
            let mut argv = vec!["--dpdk".to_owned(), "x".to_owned()];
            argv.extend(file.args(&|_| false).unwrap());
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            assert_eq!(parse(&argv).config_values(), plain, "{}", k.path());
        }
    }

    #[test]
    fn changed_keys_names_what_differs() {
        let a = parse(&["--pcap", "x", "--allow-group", "mos"]);
        let b = parse(&[
            "--pcap",
            "x",
            "--allow-group",
            "wheel",
            "--stall-timeout",
            "3",
            "--lossy",
            "--no-checksum",
        ]);
        assert_eq!(
            changed_keys(&a, &b),
            [
                "sensor.mode",
                "sensor.stall_timeout",
                "tracking.checksums",
                "control.allow_groups"
            ]
        );
        assert!(changed_keys(&a, &a.clone()).is_empty());
        let c = parse(&["--iface", "eth0", "--allow-group", "mos"]);
        assert_eq!(changed_keys(&a, &c), ["input.pcap", "input.iface"]);
    }

    #[test]
    fn the_removed_metrics_flag_says_where_metrics_went() {
        let argv: Vec<OsString> = [
            "mos-sensor",
            "--pcap",
            "x",
            "--metrics-listen",
            "[::1]:9477",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let e = effective_args(&argv).unwrap_err();
        assert!(matches!(e, ArgsError::Config(_)), "{e}");
        assert_eq!(
            e.to_string(),
            "--metrics-listen was removed: the sensor opens no TCP port; run `mos-ctl metrics --listen ADDR` (unit mos-metrics.service)"
        );
    }

    #[test]
    fn effective_args_reads_the_file_and_the_command_line_wins() {
        let dir = std::env::temp_dir().join(format!("mos-config-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.toml");
        std::fs::write(
            &path,
            "[input]\npcap = \"a.pcap\"\n[tracking]\nchunk_kib = 64\n[sensor]\nmode = \"lossy\"\n",
        )
        .unwrap();
        let argv = |extra: &[&str]| -> Vec<OsString> {
            ["mos-sensor", "--config", path.to_str().unwrap()]
                .iter()
                .chain(extra)
                .map(OsString::from)
                .collect()
        };
        let e = effective_args(&argv(&[])).unwrap();
        assert_eq!(e.config.as_deref(), Some(path.as_path()));
        assert_eq!(e.args.pcap, Some(PathBuf::from("a.pcap")));
        assert_eq!(e.args.chunk_kib, 64);
        assert!(e.args.lossy);
        let e =
            effective_args(&argv(&["--chunk-kib", "8", "--lossless", "--iface", "lo"])).unwrap();
        assert_eq!((e.args.pcap, e.args.iface.as_deref()), (None, Some("lo")));
        assert_eq!(e.args.chunk_kib, 8);
        assert!(e.args.lossless && !e.args.lossy);
        // --no-config: the input must come from the command line.
        let no: Vec<OsString> = ["mos-sensor", "--no-config"]
            .iter()
            .map(OsString::from)
            .collect();
        assert!(
            matches!(effective_args(&no), Err(ArgsError::Config(m)) if m.starts_with("no input"))
        );
        std::fs::write(&path, "[tracking]\nchunk_kib = 63\n").unwrap();
        let e = effective_args(&argv(&["--pcap", "b"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}:2: tracking.chunk_kib: must be a power of two between 4 and 1024, not 63",
                path.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
