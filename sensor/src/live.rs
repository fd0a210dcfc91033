//! Live inputs: a DPDK port or a Linux interface (AF_PACKET), read by N workers.
//!
//! Each worker owns a tracker and an event sink, as with a capture file, and takes frames
//! through the same [`replay::step`]. What differs from a file is the end and the clock:
//!
//! - a live input ends on SIGINT/SIGTERM, or with `stop_after_idle` once no frame has arrived
//!   for that long (for a DPDK virtual device that reads a file, this is the end of the file:
//!   its receive call returns nothing only then);
//! - frames carry the time the capture stamped them with (the kernel's for AF_PACKET, the
//!   driver's when a DPDK port stamps frames, else the wall clock at receive), and a worker
//!   with nothing to do advances its clock from the wall clock, so idle connections time out
//!   on a quiet link too. A DPDK port that stamps frames from a file keeps the file's time:
//!   its workers take time from the frames alone.
//!
//! Spreading frames over workers: AF_PACKET sockets join a fanout group whose hash the kernel
//! computes symmetrically; a DPDK port with RSS is configured with a symmetric key (as is one
//! whose queues are declared to hold whole flows already); a DPDK port without RSS (virtual
//! devices) is read by one receive thread that hashes each frame with [`DispatchHash`](crate::dispatch::DispatchHash) and
//! hands the mbuf itself to its worker (no copy).
//!
//! Loopback devices: AF_PACKET hands every frame there to the capture twice, as sent and as
//! received. The workers read the received copy and skip the outgoing one (counted in
//! [`LiveOptions::loopback_outgoing`]), as libpcap does; DPDK's `net_af_packet` cannot tell the
//! copies apart, which the sensor can only warn about ([`af_packet_vdev_ifaces`]).
//!
//! IP fragments: each worker reassembles the fragments it receives. Every fragment of a
//! datagram carries the same addresses, so the kernel's fanout hash, a symmetric RSS key and
//! [`DispatchHash`](crate::dispatch::DispatchHash) all send them to one worker (they hash a
//! fragment by its addresses alone); but that may not be the worker that holds the datagram's
//! connection, whose unfragmented segments are hashed by their ports too. Such a datagram's
//! segment then reaches a worker that does not know its connection. Only a capture file read
//! by several workers reassembles before dispatching (see [`crate::dispatch`]).

use crate::capture::{LinkType, RawPacket};
use crate::defrag::DefragConfig;
use crate::dispatch::Lane;
use crate::publish::store_counters;
use crate::replay::{self, ChecksumPolicy, EventSink, ReplayStats, StepState};
use anyhow::{anyhow, Context, Result};
use shm_layout::layout::{counter, WorkerInfo};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a worker with no frames advances its clock and looks at its control channel.
const IDLE_TICK: Duration = Duration::from_millis(100);
/// How often a worker copies its counters into the shared header.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Settings of a live capture.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// What to do with TCP checksums.
    pub checksums: ChecksumPolicy,
    /// Set by the signal handler: stop, ending every connection.
    pub stop: Arc<AtomicBool>,
    /// Stop once no frame has arrived for this long.
    pub stop_after_idle: Option<Duration>,
    /// Stop after about this many frames (all workers together; each finishes the burst or
    /// block it holds).
    pub count: Option<u64>,
    /// Print a progress line about this often.
    pub progress_every: Option<Duration>,
    /// Pin worker `w` to CPU `cpus[w]` (none pinned when empty).
    pub cpus: Vec<usize>,
    /// Each worker reassembles IP fragments within these limits (`None`: fragments are
    /// counted as other IP).
    pub defrag: Option<DefragConfig>,
    /// Frames an AF_PACKET capture on a loopback device skipped as the outgoing copy (the
    /// kernel hands every frame there to a packet socket twice, as sent and as received),
    /// added to as they are skipped so that status reports can read it while the capture runs.
    pub loopback_outgoing: Arc<AtomicU64>,
}

/// The CPUs this thread may run on.
pub fn allowed_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| set.is_set(c))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Lets this thread run on `cpus` only (nothing changes when it is empty).
fn set_cpus(cpus: &[usize]) -> Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    let mut set = rustix::thread::CpuSet::new();
    for &c in cpus {
        set.set(c);
    }
    rustix::thread::sched_setaffinity(None, &set)
        .with_context(|| format!("cannot run on CPU(s) {cpus:?}"))
}

/// Pins the calling worker thread to its CPU, if it has one.
fn pin_worker(shared: &Shared, w: usize) -> Result<()> {
    match shared.opts.cpus.get(w) {
        Some(&cpu) => set_cpus(&[cpu]),
        None => Ok(()),
    }
}

/// What a live capture did.
#[derive(Debug, Default)]
pub struct LiveOutcome {
    /// Every worker's counters added up.
    pub stats: ReplayStats,
    /// Each worker's counters.
    pub per_worker: Vec<ReplayStats>,
    /// A signal stopped the capture (rather than `stop_after_idle`).
    pub stopped: bool,
    /// Frames the capture dropped before the sensor saw them (AF_PACKET ring drops, DPDK
    /// `imissed`).
    pub capture_drops: u64,
    /// DPDK's `ierrors` and `rx_nombuf`.
    pub nic_errors: (u64, u64),
    /// Outgoing copies of frames skipped on a loopback device (AF_PACKET).
    pub loopback_outgoing: u64,
}

/// Capture time in nanoseconds since the Unix epoch, from the wall clock.
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A worker's counter on a cache line of its own (workers write theirs after every burst).
#[derive(Debug, Default)]
#[repr(align(64))]
struct PerWorker(AtomicU64);

/// What the threads of one live capture share.
#[derive(Debug)]
struct Shared {
    opts: LiveOptions,
    start: Instant,
    /// Milliseconds since `start` when a frame last arrived.
    last_rx_ms: AtomicU64,
    idle_stop: AtomicBool,
    /// Frames each worker has taken (for progress lines), one cache line each.
    frames: Vec<PerWorker>,
    /// The latest frame time any worker saw (the end time when frames carry a file's time).
    max_ts: AtomicU64,
    /// Frames taken by all workers (counted per burst, for `count`).
    taken: AtomicU64,
}

impl Shared {
    fn new(opts: LiveOptions, workers: usize) -> Shared {
        Shared {
            opts,
            start: Instant::now(),
            last_rx_ms: AtomicU64::new(0),
            idle_stop: AtomicBool::new(false),
            frames: (0..workers).map(|_| PerWorker::default()).collect(),
            max_ts: AtomicU64::new(0),
            taken: AtomicU64::new(0),
        }
    }

    fn should_stop(&self) -> bool {
        self.opts.stop.load(Ordering::Relaxed) || self.idle_stop.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Frames arrived (called once per burst or block, not per frame).
    fn saw_frames(&self) {
        let ms = self.now_ms();
        if self.last_rx_ms.load(Ordering::Relaxed) != ms {
            self.last_rx_ms.store(ms, Ordering::Relaxed);
        }
    }

    /// Nothing arrived: stop if the input has been quiet for `stop_after_idle`.
    fn check_idle(&self) {
        if let Some(limit) = self.opts.stop_after_idle {
            let quiet = self
                .now_ms()
                .saturating_sub(self.last_rx_ms.load(Ordering::Relaxed));
            if quiet >= limit.as_millis() as u64 {
                self.idle_stop.store(true, Ordering::Relaxed);
            }
        }
    }

    fn total_frames(&self) -> u64 {
        self.frames
            .iter()
            .map(|f| f.0.load(Ordering::Relaxed))
            .sum()
    }
}

/// Where a worker's clock comes from when no frame arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Clock {
    /// Frames are stamped at capture: idle ticks use the wall clock.
    Wall,
    /// Frames carry another time (a file's): only frames advance the clock.
    Frames,
}

/// One worker's loop state.
struct Worker<'l, S: EventSink> {
    w: usize,
    lane: Lane<'l, S>,
    info: Option<&'static WorkerInfo>,
    st: StepState,
    pos: u64,
    clock: Clock,
    last_tick: Instant,
    last_publish: Instant,
}

impl<'l, S: EventSink> Worker<'l, S> {
    fn new(
        w: usize,
        lane: Lane<'l, S>,
        info: Option<&'static WorkerInfo>,
        clock: Clock,
        opts: &LiveOptions,
    ) -> Self {
        Worker {
            w,
            lane,
            info,
            st: StepState::new(opts.checksums, opts.defrag),
            pos: 0,
            clock,
            last_tick: Instant::now(),
            last_publish: Instant::now(),
        }
    }

    #[inline]
    fn frame(&mut self, pos: u64, pkt: &RawPacket<'_>) -> Result<()> {
        replay::step(self.lane.tracker, self.lane.sink, &mut self.st, pos, pkt)
    }

    /// After a burst or block: counters for progress lines and the shared header.
    fn after_frames(&mut self, shared: &Shared) {
        shared.saw_frames();
        let before = shared.frames[self.w]
            .0
            .swap(self.st.stats.frames, Ordering::Relaxed);
        if let Some(limit) = shared.opts.count {
            let taken = shared
                .taken
                .fetch_add(self.st.stats.frames - before, Ordering::Relaxed)
                + (self.st.stats.frames - before);
            if taken >= limit {
                shared.idle_stop.store(true, Ordering::Relaxed);
            }
        }
        if self.clock == Clock::Frames {
            shared
                .max_ts
                .fetch_max(self.st.stats.last_ts_ns, Ordering::Relaxed);
        }
        if self.last_publish.elapsed() >= PUBLISH_EVERY {
            self.publish();
        }
    }

    /// Nothing arrived: advance the clock, look at the control channel, maybe stop.
    fn idle(&mut self, shared: &Shared) -> Result<()> {
        shared.check_idle();
        if self.last_tick.elapsed() >= IDLE_TICK {
            self.last_tick = Instant::now();
            self.lane.sink.idle(self.lane.tracker);
            if self.clock == Clock::Wall {
                replay::tick(self.lane.tracker, self.lane.sink, &mut self.st, wall_ns())?;
            }
            if self.last_publish.elapsed() >= PUBLISH_EVERY {
                self.publish();
            }
        }
        Ok(())
    }

    fn publish(&mut self) {
        self.last_publish = Instant::now();
        if let Some(info) = self.info {
            store_counters(info, &self.st.stats, self.lane.tracker);
        }
    }

    /// Ends every connection and lets the sink finish.
    fn finish(mut self, shared: &Shared) -> Result<ReplayStats> {
        let end = match self.clock {
            Clock::Wall => wall_ns().max(self.st.stats.last_ts_ns),
            Clock::Frames => shared
                .max_ts
                .load(Ordering::Relaxed)
                .max(self.st.stats.last_ts_ns),
        };
        replay::finish(self.lane.tracker, self.lane.sink, &mut self.st, end)?;
        self.publish();
        shared.frames[self.w]
            .0
            .store(self.st.stats.frames, Ordering::Relaxed);
        Ok(self.st.stats)
    }
}

/// Waits for the workers while printing progress; `poll` runs about once a second (NIC
/// counters). Returns each worker's result in order.
fn supervise<T>(
    shared: &Shared,
    handles: Vec<std::thread::ScopedJoinHandle<'_, Result<T>>>,
    what: &str,
    mut poll: impl FnMut() -> u64,
) -> Result<Vec<T>> {
    let mut last = (Instant::now(), 0u64);
    let every = shared.opts.progress_every;
    let mut next_poll = Instant::now();
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
        if Instant::now() >= next_poll {
            next_poll = Instant::now() + Duration::from_secs(1);
            let drops = poll();
            if let Some(every) = every {
                if last.0.elapsed() >= every {
                    let frames = shared.total_frames();
                    let rate = (frames - last.1) as f64 / last.0.elapsed().as_secs_f64();
                    crate::log_info!(
                        "{what}: {frames} frames ({rate:.0}/s), {drops} dropped by the capture"
                    );
                    last = (Instant::now(), frames);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(handles.len());
    let mut first_error = None;
    for (w, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(e)) => {
                // The other workers must stop too.
                shared.idle_stop.store(true, Ordering::Relaxed);
                first_error.get_or_insert(e.context(format!("worker {w}")));
            }
            Err(_) => {
                shared.idle_stop.store(true, Ordering::Relaxed);
                first_error.get_or_insert(anyhow!("worker {w} panicked"));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn outcome(shared: &Shared, per_worker: Vec<ReplayStats>) -> LiveOutcome {
    let mut stats = ReplayStats::default();
    for s in &per_worker {
        stats.add(s);
    }
    LiveOutcome {
        stats,
        per_worker,
        stopped: shared.opts.stop.load(Ordering::Relaxed),
        ..LiveOutcome::default()
    }
}

// ---------------------------------------------------------------------------------------------
// AF_PACKET

/// How frames of an interface begin, from its ARP hardware type in sysfs.
pub fn iface_link_type(iface: &str) -> Result<LinkType> {
    let path = format!("/sys/class/net/{iface}/type");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no network interface named {iface} ({path})"))?;
    match text.trim() {
        // Ethernet, and the loopback device (which carries an Ethernet header of zeros).
        "1" | "772" => Ok(LinkType::Ethernet),
        // A device without link-layer header (tun, some tunnels): frames are IP packets.
        "65534" => Ok(LinkType::Raw),
        other => Err(anyhow!(
            "{iface} has ARP hardware type {other}; mos reads Ethernet, loopback and raw IP interfaces"
        )),
    }
}

/// Whether `iface` is a loopback device (`IFF_LOOPBACK` in its flags, or hardware type
/// `ARPHRD_LOOPBACK`), from sysfs; false for a name sysfs does not know.
pub fn iface_is_loopback(iface: &str) -> bool {
    if iface.is_empty() || iface.contains('/') || iface.starts_with('.') {
        return false;
    }
    let read = |what: &str| std::fs::read_to_string(format!("/sys/class/net/{iface}/{what}"));
    const IFF_LOOPBACK: u32 = 0x8;
    const ARPHRD_LOOPBACK: &str = "772";
    let flags = read("flags").ok().and_then(|t| {
        let t = t.trim();
        u32::from_str_radix(t.strip_prefix("0x").unwrap_or(t), 16).ok()
    });
    flags.is_some_and(|f| f & IFF_LOOPBACK != 0)
        || read("type").is_ok_and(|t| t.trim() == ARPHRD_LOOPBACK)
}

/// The interfaces that DPDK `net_af_packet` virtual devices among `eal_args` read: the
/// `iface=` of each `--vdev=net_af_packetN,...` or `--vdev net_af_packetN,...` (also under the
/// driver's older name `eth_af_packet`).
pub fn af_packet_vdev_ifaces(eal_args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut words = eal_args.split_whitespace();
    while let Some(w) = words.next() {
        let dev = match w.strip_prefix("--vdev") {
            Some("") => words.next(),
            Some(rest) => rest.strip_prefix('='),
            None => None,
        };
        let Some(dev) = dev else { continue };
        let mut parts = dev.split(',');
        let name = parts.next().unwrap_or_default();
        if !(name.starts_with("net_af_packet") || name.starts_with("eth_af_packet")) {
            continue;
        }
        out.extend(
            parts
                .filter_map(|kv| kv.strip_prefix("iface="))
                .map(str::to_string),
        );
    }
    out
}

/// Opens one AF_PACKET ring per worker on `iface` (a fanout group when there are several),
/// whose blocks the kernel hands over when full or `block_timeout_ms` after their first frame.
///
/// On a loopback device ([`mos_afpacket::Ring::is_loopback`]) the kernel hands every frame to
/// the rings twice, as it goes out and as it comes back in; [`run_afpacket`] reads the incoming
/// copy and skips the outgoing one, as libpcap does.
pub fn open_afpacket(
    iface: &str,
    workers: usize,
    block_timeout_ms: u32,
) -> Result<Vec<mos_afpacket::Ring>> {
    let group = (std::process::id() & 0xffff) as u16;
    (0..workers)
        .map(|_| {
            let opts = mos_afpacket::RingOptions {
                block_timeout_ms,
                fanout: (workers > 1).then(|| mos_afpacket::Fanout::hash(group)),
                ..mos_afpacket::RingOptions::default()
            };
            mos_afpacket::Ring::open(iface, opts).map_err(|e| anyhow!("{e}"))
        })
        .collect()
}

/// Captures from `rings` (one per lane) until stopped. On a loopback device the outgoing copy
/// of each frame is skipped and counted in [`LiveOptions::loopback_outgoing`].
pub fn run_afpacket<S: EventSink + Send>(
    rings: Vec<mos_afpacket::Ring>,
    link: LinkType,
    lanes: Vec<Lane<'_, S>>,
    infos: Vec<Option<&'static WorkerInfo>>,
    opts: LiveOptions,
) -> Result<LiveOutcome> {
    let n = lanes.len();
    let shared = Shared::new(opts, n);
    let drops: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
    let what = format!(
        "{} (AF_PACKET)",
        rings.first().map_or("", |r| r.interface())
    );
    let per_worker = std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(n);
        for (w, ((lane, mut ring), info)) in lanes.into_iter().zip(rings).zip(infos).enumerate() {
            let (shared, drops) = (&shared, &drops);
            let h = std::thread::Builder::new()
                .name(format!("mos-worker-{w}"))
                .spawn_scoped(scope, move || -> Result<ReplayStats> {
                    pin_worker(shared, w)?;
                    let mut wk = Worker::new(w, lane, info, Clock::Wall, &shared.opts);
                    let mut last_stats = Instant::now();
                    let skip_outgoing = ring.is_loopback();
                    while !shared.should_stop() {
                        match ring.next_block(IDLE_TICK)? {
                            Some(block) => {
                                let mut skipped = 0u64;
                                for f in &block {
                                    if skip_outgoing && f.is_outgoing() {
                                        skipped += 1;
                                        continue;
                                    }
                                    let pkt = RawPacket {
                                        ts_ns: f.ts_ns,
                                        link,
                                        data: f.data,
                                        orig_len: f.wire_len,
                                    };
                                    let pos = wk.pos;
                                    wk.pos += 1;
                                    wk.frame(pos, &pkt)?;
                                }
                                drop(block);
                                if skipped > 0 {
                                    shared
                                        .opts
                                        .loopback_outgoing
                                        .fetch_add(skipped, Ordering::Relaxed);
                                }
                                wk.after_frames(shared);
                            }
                            None => wk.idle(shared)?,
                        }
                        if last_stats.elapsed() >= PUBLISH_EVERY {
                            last_stats = Instant::now();
                            let d = ring.stats()?.drops;
                            drops[w].store(d, Ordering::Relaxed);
                            if let Some(info) = info {
                                info.counters[counter::CAPTURE_DROPS].store(d, Ordering::Relaxed);
                            }
                        }
                    }
                    let d = ring.stats()?.drops;
                    drops[w].store(d, Ordering::Relaxed);
                    if let Some(info) = info {
                        info.counters[counter::CAPTURE_DROPS].store(d, Ordering::Relaxed);
                    }
                    wk.finish(shared)
                })
                .map_err(|e| anyhow!("cannot start worker {w}: {e}"))?;
            handles.push(h);
        }
        supervise(&shared, handles, &what, || {
            drops.iter().map(|d| d.load(Ordering::Relaxed)).sum()
        })
    })?;
    let mut out = outcome(&shared, per_worker);
    out.capture_drops = drops.iter().map(|d| d.load(Ordering::Relaxed)).sum();
    out.loopback_outgoing = shared.opts.loopback_outgoing.load(Ordering::Relaxed);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// DPDK

#[cfg(feature = "dpdk")]
pub use self::dpdk::{open_dpdk, run_dpdk, DpdkInput};

#[cfg(feature = "dpdk")]
mod dpdk {
    use super::*;
    use crate::dispatch::DispatchHash;
    use mos_dpdk::{Burst, Eal, Mbuf, Port, PortOptions, PortStats, RxQueue, ThreadRegistration};
    use std::sync::mpsc;

    /// Mbufs per batch handed from the receive thread to a worker.
    const HANDOFF: usize = 64;
    /// Batches in flight to each worker.
    const QUEUE: usize = 64;

    /// An initialised EAL and a started port.
    #[derive(Debug)]
    pub struct DpdkInput {
        /// Kept for as long as the port is used.
        pub eal: Eal,
        /// The port, with one RX queue per worker when it has RSS, else one.
        pub port: Port,
    }

    /// Initialises the EAL with `eal_args` (split on whitespace) and starts `port_id` with a
    /// queue per worker.
    /// `queues_hold_flows`: the port's queues already hold whole flows (see
    /// `PortOptions::queues_hold_flows`), so each worker polls its own without RSS. `mbufs`
    /// sizes the pool (default: enough for the queues and the frames in flight to workers).
    pub fn open_dpdk(
        eal_args: &str,
        port_id: u16,
        workers: usize,
        queues_hold_flows: bool,
        mbufs: Option<u32>,
    ) -> Result<DpdkInput> {
        let args: Vec<String> = eal_args.split_whitespace().map(String::from).collect();
        let allowed = allowed_cpus();
        let eal = Eal::init(&args).map_err(|e| anyhow!("{e}"))?;
        // The EAL pins the calling thread to its first lcore, and every thread started later
        // would inherit that one CPU: give this thread back the CPUs it had (workers are
        // pinned one by one, by LiveOptions::cpus).
        set_cpus(&allowed)?;
        let opts = PortOptions {
            rx_queues: workers as u16,
            // Enough mbufs for every queue's descriptors plus the batches in flight to
            // workers under software dispatch.
            mbufs: mbufs
                .unwrap_or((workers as u32 * (1024 + (HANDOFF * QUEUE) as u32) + 4096).max(8191)),
            queues_hold_flows,
            ..PortOptions::default()
        };
        let port = match Port::start(&eal, port_id, opts) {
            Ok(p) => p,
            Err(e) => {
                // A device that failed to probe is missing rather than failed: DPDK's
                // reason is in what it printed while starting.
                let why = eal
                    .startup_log()
                    .iter()
                    .find(|l| !l.contains("probe failed"))
                    .or(eal.startup_log().first());
                let root = if rustix::process::geteuid().is_root() {
                    ""
                } else {
                    "; not running as root: DPDK devices need root or CAP_NET_RAW (and \
                     CAP_SYS_ADMIN, /dev/vfio and hugepages for a NIC)"
                };
                return Err(match why {
                    Some(why) => anyhow!("{e}; DPDK said: {}{root}", why.trim()),
                    None => anyhow!("{e}{root}"),
                });
            }
        };
        for line in eal.startup_log() {
            crate::log_info!("DPDK: {}", line.trim());
        }
        Ok(DpdkInput { eal, port })
    }

    /// Registers the calling thread with the EAL, so that it has its own cache in the mbuf
    /// pool: without one, every allocation and free goes through the pool's shared ring,
    /// where a thread preempted in the middle of an update makes the others spin. A thread
    /// the EAL has no lcore id left for works without a cache.
    fn register(eal: &Eal) -> Option<ThreadRegistration> {
        ThreadRegistration::new(eal).ok()
    }

    /// Between empty polls: none while traffic has only just stopped (polling is what keeps
    /// latency low), short sleeps once the port has been quiet for a while, so an idle sensor
    /// does not hold a core.
    fn nap(quiet_since: Instant) {
        if quiet_since.elapsed() >= Duration::from_millis(10) {
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// A frame's bytes in one piece: the first segment itself, or (for a frame longer than
    /// one mbuf, such as a jumbo frame) all its segments copied into `scratch`.
    fn linear<'a>(
        first: &'a [u8],
        more: mos_dpdk::Segments<'a>,
        pkt_len: u32,
        scratch: &'a mut Vec<u8>,
    ) -> &'a [u8] {
        if pkt_len as usize <= first.len() {
            return first;
        }
        scratch.clear();
        scratch.extend_from_slice(first);
        for seg in more {
            scratch.extend_from_slice(seg);
        }
        scratch
    }

    fn stamp(ts: Option<u64>, burst_ns: u64) -> u64 {
        ts.unwrap_or(burst_ns)
    }

    /// Receives from the port until stopped: each worker polls its own queue when the port has
    /// RSS (or there is one worker), otherwise one thread receives and dispatches in software.
    pub fn run_dpdk<S: EventSink + Send>(
        input: &mut DpdkInput,
        lanes: Vec<Lane<'_, S>>,
        infos: Vec<Option<&'static WorkerInfo>>,
        opts: LiveOptions,
    ) -> Result<LiveOutcome> {
        let n = lanes.len();
        let shared = Shared::new(opts, n);
        let clock = if input.port.has_rx_timestamp() {
            Clock::Frames
        } else {
            Clock::Wall
        };
        let what = format!(
            "DPDK port {} ({})",
            input.port.id(),
            input.port.driver_name()
        );
        // One queue per worker when the port hashes flows (RSS) or its queues hold whole
        // flows already; otherwise one receive thread dispatches.
        let software = n > 1 && usize::from(input.port.rx_queues()) != n;
        let info0 = infos.first().copied().flatten();
        let eal = &input.eal;
        let (queues, stats) = input.port.split_queues();
        let nic = AtomicU64::new(0);
        let poll_nic = |stats: &PortStats<'_>| -> u64 {
            if let Ok(s) = stats.stats() {
                if let Some(info) = info0 {
                    let set = |i: usize, v: u64| info.counters[i].store(v, Ordering::Relaxed);
                    set(counter::CAPTURE_DROPS, s.imissed);
                    set(counter::NIC_ERRORS, s.ierrors);
                    set(counter::NIC_NO_MBUF, s.rx_nombuf);
                }
                nic.store(s.imissed, Ordering::Relaxed);
                return s.imissed;
            }
            nic.load(Ordering::Relaxed)
        };
        let per_worker = std::thread::scope(|scope| -> Result<Vec<ReplayStats>> {
            let handles = if software {
                let queue = queues.into_iter().next().context("the port has no queue")?;
                spawn_dispatched(scope, &shared, eal, queue, lanes, infos, clock)?
            } else {
                let mut handles = Vec::with_capacity(n);
                for (w, ((lane, queue), info)) in
                    lanes.into_iter().zip(queues).zip(infos).enumerate()
                {
                    let shared = &shared;
                    let h = std::thread::Builder::new()
                        .name(format!("mos-worker-{w}"))
                        .spawn_scoped(scope, move || {
                            poll_queue(w, shared, eal, queue, lane, info, clock)
                        })
                        .map_err(|e| anyhow!("cannot start worker {w}: {e}"))?;
                    handles.push(h);
                }
                handles
            };
            supervise(&shared, handles, &what, || poll_nic(&stats))
        })?;
        let mut out = outcome(&shared, per_worker);
        if let Ok(s) = input.port.stats() {
            if let Some(info) = info0 {
                let set = |i: usize, v: u64| info.counters[i].store(v, Ordering::Relaxed);
                set(counter::CAPTURE_DROPS, s.imissed);
                set(counter::NIC_ERRORS, s.ierrors);
                set(counter::NIC_NO_MBUF, s.rx_nombuf);
            }
            out.capture_drops = s.imissed;
            out.nic_errors = (s.ierrors, s.rx_nombuf);
        }
        Ok(out)
    }

    /// A worker that polls its own RX queue.
    fn poll_queue<S: EventSink>(
        w: usize,
        shared: &Shared,
        eal: &Eal,
        mut queue: RxQueue<'_>,
        lane: Lane<'_, S>,
        info: Option<&'static WorkerInfo>,
        clock: Clock,
    ) -> Result<ReplayStats> {
        pin_worker(shared, w)?;
        let _lcore = register(eal);
        let mut wk = Worker::new(w, lane, info, clock, &shared.opts);
        let mut burst = Burst::new();
        let mut scratch = Vec::new();
        let mut quiet_since = Instant::now();
        while !shared.should_stop() {
            let got = queue.rx_burst(&mut burst);
            if got == 0 {
                wk.idle(shared)?;
                nap(quiet_since);
                continue;
            }
            quiet_since = Instant::now();
            let now = if clock == Clock::Wall { wall_ns() } else { 0 };
            for p in burst.iter() {
                let pkt = RawPacket {
                    ts_ns: stamp(p.timestamp_ns(), now),
                    link: LinkType::Ethernet,
                    data: linear(p.data(), p.more_segments(), p.pkt_len(), &mut scratch),
                    orig_len: p.pkt_len(),
                };
                let pos = wk.pos;
                wk.pos += 1;
                wk.frame(pos, &pkt)?;
            }
            burst.clear();
            wk.after_frames(shared);
        }
        wk.finish(shared)
    }

    /// A batch of mbufs for one worker: each with its capture time and input position.
    type Handoff = Vec<(Mbuf, u64, u64)>;

    /// One receive thread (polling `queue`) and `lanes.len()` workers fed by it.
    fn spawn_dispatched<'scope, 'env, S: EventSink + Send + 'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        shared: &'scope Shared,
        eal: &'env Eal,
        mut queue: RxQueue<'env>,
        lanes: Vec<Lane<'env, S>>,
        infos: Vec<Option<&'static WorkerInfo>>,
        clock: Clock,
    ) -> Result<Vec<std::thread::ScopedJoinHandle<'scope, Result<ReplayStats>>>> {
        let n = lanes.len();
        let mut txs = Vec::with_capacity(n);
        let mut backs = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n + 1);
        for (w, (lane, info)) in lanes.into_iter().zip(infos).enumerate() {
            let (tx, rx) = mpsc::sync_channel::<Handoff>(QUEUE);
            let (back_tx, back_rx) = mpsc::channel::<Handoff>();
            txs.push(tx);
            backs.push(back_rx);
            let h = std::thread::Builder::new()
                .name(format!("mos-worker-{w}"))
                .spawn_scoped(scope, move || -> Result<ReplayStats> {
                    pin_worker(shared, w)?;
                    let _lcore = register(eal);
                    let mut wk = Worker::new(w, lane, info, clock, &shared.opts);
                    let mut scratch = Vec::new();
                    loop {
                        match rx.recv_timeout(IDLE_TICK) {
                            Ok(mut batch) => {
                                for (m, ts, pos) in batch.drain(..) {
                                    let pkt = RawPacket {
                                        ts_ns: ts,
                                        link: LinkType::Ethernet,
                                        data: linear(
                                            m.data(),
                                            m.more_segments(),
                                            m.pkt_len(),
                                            &mut scratch,
                                        ),
                                        orig_len: m.pkt_len(),
                                    };
                                    wk.frame(pos, &pkt)?;
                                }
                                let _ = back_tx.send(batch);
                                wk.after_frames(shared);
                            }
                            Err(mpsc::RecvTimeoutError::Timeout) => wk.idle(shared)?,
                            Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        }
                    }
                    wk.finish(shared)
                })
                .map_err(|e| anyhow!("cannot start worker {w}: {e}"))?;
            handles.push(h);
        }
        // The receive thread: it ends when the capture stops, and the workers end once it has
        // dropped their channels. Its own handle is not joined by the supervisor; the workers'
        // are, and they end only after it.
        let recv = std::thread::Builder::new()
            .name("mos-receive".into())
            .spawn_scoped(scope, move || {
                let _lcore = register(eal);
                let hash = DispatchHash::default();
                let mut burst = Burst::new();
                let mut filling: Vec<Handoff> =
                    (0..n).map(|_| Vec::with_capacity(HANDOFF)).collect();
                let mut pos = 0u64;
                let mut quiet_since = Instant::now();
                'rx: while !shared.should_stop() {
                    let got = queue.rx_burst(&mut burst);
                    if got == 0 {
                        shared.check_idle();
                        nap(quiet_since);
                        continue;
                    }
                    quiet_since = Instant::now();
                    shared.saw_frames();
                    if let Some(limit) = shared.opts.count {
                        if pos + got as u64 >= limit {
                            shared.idle_stop.store(true, Ordering::Relaxed);
                        }
                    }
                    let now = if clock == Clock::Wall { wall_ns() } else { 0 };
                    for i in 0..got {
                        let (w, ts) = {
                            let p = burst.get(i);
                            let ts = stamp(p.timestamp_ns(), now);
                            let view = RawPacket {
                                ts_ns: ts,
                                link: LinkType::Ethernet,
                                data: p.data(),
                                orig_len: p.pkt_len(),
                            };
                            (hash.worker_of(&view, n), ts)
                        };
                        filling[w].push((burst.take(i), ts, pos));
                        pos += 1;
                    }
                    burst.clear();
                    for w in 0..n {
                        if filling[w].is_empty() {
                            continue;
                        }
                        let fresh = backs[w]
                            .try_recv()
                            .unwrap_or_else(|_| Vec::with_capacity(HANDOFF));
                        let full = std::mem::replace(&mut filling[w], fresh);
                        if txs[w].send(full).is_err() {
                            // A worker failed; its error is reported when it is joined.
                            shared.idle_stop.store(true, Ordering::Relaxed);
                            break 'rx;
                        }
                    }
                }
                drop(txs);
            })
            .map_err(|e| anyhow!("cannot start the receive thread: {e}"))?;
        // Joined through the scope; the supervisor watches the workers.
        drop(recv);
        Ok(handles)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn af_packet_vdevs_name_their_interfaces() {
        let ifaces = |a: &str| af_packet_vdev_ifaces(a);
        assert_eq!(
            ifaces("--no-huge -m 256 --vdev=net_af_packet0,iface=lo,framecnt=8192 -l 0"),
            ["lo"]
        );
        assert_eq!(
            ifaces("--vdev net_af_packet1,qpairs=2,iface=eth0 --vdev=eth_af_packet2,iface=lo"),
            ["eth0", "lo"]
        );
        // Other drivers, and words that only look alike, name nothing.
        assert!(ifaces("--vdev=net_pcap0,iface=lo --vdev=net_null0").is_empty());
        assert!(ifaces("--vdevx=net_af_packet0,iface=lo").is_empty());
        assert!(ifaces("--vdev").is_empty());
        assert!(ifaces("").is_empty());
    }

    #[test]
    fn lo_is_a_loopback_device_and_odd_names_are_not() {
        // Every network namespace has lo, and sysfs shows it.
        assert!(iface_is_loopback("lo"));
        for name in ["", "mos-no-such0", "../lo", ".", "lo/"] {
            assert!(!iface_is_loopback(name), "{name:?}");
        }
    }
}
