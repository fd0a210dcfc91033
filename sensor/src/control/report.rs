//! The control thread's status report: the workers' counters summed from the shared header,
//! rates from samples taken about once a second, and each analyzer's rings read from the
//! sensor's own mappings of them. Only loads from shared memory: building a report never makes
//! a worker wait.

use super::Client;
use crate::publish::AnalyzerRegions;
use shm_layout::layout::{counter, sensor_state, AnalyzerPage, EventRingHeader, Header};
use shm_layout::status::{event_names, id_name, AnalyzerStatus, Drops, StatusReport, StreamStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the sensor says about itself besides its counters.
#[derive(Clone, Debug, Default)]
pub struct SensorInfo {
    /// The input: `pcap PATH`, `iface eth0 (AF_PACKET)`, `dpdk port 0 (net_pcap)`.
    pub input: String,
    /// Whether the sensor waits for analyzers.
    pub lossless: bool,
    /// The most memory its configuration lets it use, bytes.
    pub memory_bound: Option<u64>,
    /// Outgoing copies of frames skipped so far, when the input is AF_PACKET on a loopback
    /// device (kept outside the shared header, whose counters are the ABI's).
    pub loopback_outgoing: Option<Arc<AtomicU64>>,
}

/// How often the counters are sampled for rates.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// One sample of the frame counters.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    frames: u64,
    bytes: u64,
}

/// The state a report needs across requests: when the sensor started, and the last two
/// samples of its frame counters.
#[derive(Debug)]
pub(super) struct Reporter {
    header: &'static Header,
    nworkers: usize,
    started: SystemTime,
    started_at: Instant,
    prev: Sample,
    last: Sample,
}

impl Reporter {
    pub(super) fn new(header: &'static Header, nworkers: usize) -> Self {
        let s = Sample {
            at: Instant::now(),
            frames: 0,
            bytes: 0,
        };
        let (started_at, started) = crate::service::process_started();
        Reporter {
            header,
            nworkers: nworkers.min(header.workers.len()),
            started,
            started_at,
            prev: s,
            last: s,
        }
    }

    /// A counter summed over the workers.
    fn total(&self, c: usize) -> u64 {
        self.header.workers[..self.nworkers]
            .iter()
            .fold(0u64, |a, w| {
                a.wrapping_add(w.counters[c].load(Ordering::Relaxed))
            })
    }

    /// Takes a sample once a second has passed since the last one (called on every turn of
    /// the control loop).
    pub(super) fn tick(&mut self) {
        if self.last.at.elapsed() >= SAMPLE_EVERY {
            self.prev = self.last;
            self.last = Sample {
                at: Instant::now(),
                frames: self.total(counter::FRAMES),
                bytes: self.total(counter::FRAME_BYTES),
            };
        }
    }

    /// Frames and bytes per second between the last two samples.
    fn rates(&self) -> (u64, u64) {
        let dt = self.last.at.duration_since(self.prev.at).as_secs_f64();
        if dt <= 0.0 {
            return (0, 0);
        }
        let per = |a: u64, b: u64| (b.saturating_sub(a) as f64 / dt).round() as u64;
        (
            per(self.prev.frames, self.last.frames),
            per(self.prev.bytes, self.last.bytes),
        )
    }

    /// The report, from the header, `info` and the attached analyzers among `clients`, ready
    /// for the control socket ([`StatusReport::for_the_wire`]).
    pub(super) fn report(&self, info: &SensorInfo, epoch: u64, clients: &[Client]) -> StatusReport {
        let t = |c| self.total(c);
        let (frames_per_sec, bytes_per_sec) = self.rates();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let now_ns = crate::service::monotonic_ns();
        let mut analyzers: Vec<AnalyzerStatus> = clients
            .iter()
            .filter_map(|c| {
                let (id, regions) = (c.id?, c.regions.as_ref()?);
                let mut a = AnalyzerStatus {
                    id,
                    name: c.name.clone(),
                    pid: c.pid,
                    uid: c.uid,
                    user: id_name(&passwd, c.uid).unwrap_or_else(|| c.uid.to_string()),
                    events: c.sub.map(|s| event_names(s.events)).unwrap_or_default(),
                    packets: c.sub.is_some_and(|s| s.packets),
                    ready: c.ready,
                    ..AnalyzerStatus::default()
                };
                rings(regions, self.nworkers, now_ns, &mut a);
                Some(a)
            })
            .collect();
        analyzers.sort_by_key(|a| a.id);
        let state = match self.header.state.load(Ordering::Acquire) {
            sensor_state::STARTING => "starting",
            sensor_state::RUNNING => "running",
            sensor_state::DONE => "done",
            sensor_state::STOPPED => "stopped",
            _ => "unknown",
        };
        StatusReport {
            sensor_pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            epoch,
            input: info.input.clone(),
            mode: if info.lossless { "lossless" } else { "lossy" }.to_string(),
            state: state.to_string(),
            workers: self.nworkers as u32,
            started_unix_ms: self
                .started
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            uptime_ms: self.started_at.elapsed().as_millis() as u64,
            frames: t(counter::FRAMES),
            bytes: t(counter::FRAME_BYTES),
            frames_per_sec,
            bytes_per_sec,
            tcp_segments: t(counter::TCP),
            other_ip: t(counter::OTHER_IP),
            not_ip: t(counter::NOT_IP),
            drops: Drops {
                capture: t(counter::CAPTURE_DROPS),
                nic_errors: t(counter::NIC_ERRORS),
                no_mbuf: t(counter::NIC_NO_MBUF),
                truncated: t(counter::TRUNCATED),
                malformed: t(counter::MALFORMED),
                unsupported_link: t(counter::UNSUPPORTED_LINK),
                bad_checksum: t(counter::BAD_CHECKSUM),
                snap_cut: t(counter::SNAP_CUT),
                fragments: t(counter::FRAGMENTS_DROPPED),
                events: t(counter::EVENTS_DROPPED),
                stalled_analyzers: t(counter::STALLED_DETACHED),
            },
            flows_live: t(counter::FLOWS_LIVE),
            flows_total: t(counter::FLOWS_TOTAL),
            flows_evicted: t(counter::FLOWS_EVICTED),
            payload_bytes: t(counter::PAYLOAD_BYTES),
            events_published: t(counter::EVENTS),
            waits: t(counter::WAITS),
            memory_rss_bytes: crate::budget::self_status_kib(["VmRSS"])[0] * 1024,
            memory_bound_bytes: info.memory_bound,
            analyzers,
            loopback_outgoing: info
                .loopback_outgoing
                .as_ref()
                .map_or(0, |n| n.load(Ordering::Relaxed)),
            stream: StreamStatus {
                chunks: self.header.config.chunks_per_worker * self.nworkers as u64,
                chunks_in_use: t(counter::CHUNKS_IN_USE),
                chunk_bytes: self.header.config.chunk_size,
                overflow_bytes: t(counter::STREAM_OVERFLOW_BYTES),
                pool_empty_bytes: t(counter::POOL_EMPTY_BYTES),
                reclaimed_bytes: t(counter::RECLAIMED_BYTES),
            },
            analyzer_records_dropped: Vec::new(),
        }
        .for_the_wire()
    }
}

/// Adds up an analyzer's rings: published, consumed (clamped as the producer clamps it),
/// dropped, how long ago its heartbeat was, and the records it says it dropped itself.
fn rings(r: &AnalyzerRegions, nworkers: usize, now_ns: u64, a: &mut AnalyzerStatus) {
    let Some(page) = r.page.get::<AnalyzerPage>(0) else {
        return;
    };
    for w in 0..nworkers.min(page.consumer.len()) {
        let Some(hdr) = r.events.get::<EventRingHeader>(r.plan.ring_off(w) as usize) else {
            continue;
        };
        let published = hdr.producer.load(Ordering::Acquire);
        // The analyzer writes its index: trust it only within what the ring can hold.
        let consumed = page.consumer[w]
            .index
            .load(Ordering::Acquire)
            .clamp(published.saturating_sub(hdr.capacity), published);
        a.published = a.published.saturating_add(published);
        a.delivered = a.delivered.saturating_add(consumed);
        a.lag = a.lag.saturating_add(published - consumed);
        a.dropped = a
            .dropped
            .saturating_add(hdr.dropped.load(Ordering::Relaxed));
    }
    let hb = page.heartbeat_ns.load(Ordering::Relaxed);
    a.heartbeat_age_ms = (hb != 0).then(|| now_ns.saturating_sub(hb) / 1_000_000);
    // Whatever the analyzer wrote there is only shown, never used for anything.
    a.records_dropped = page.records_dropped.load(Ordering::Relaxed);
}
