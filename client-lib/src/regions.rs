//! The three regions an attached analyzer maps, and typed views of their parts.
//!
//! The main and event regions are mapped read-only from read-only descriptors, so the kernel
//! refuses this process write access to them; the analyzer page is the only writable one.
//! Every offset comes from the published header and is checked once here ([`Regions::new`]),
//! so the accessors below only fail for indices the sensor hands out later (a slot or buffer
//! number in an event or a flow slot, a chunk number in a chunk map), which they bound-check.

use crate::error::{Errno, Error, Result};
use crate::watch::SensorWatch;
use shm_layout::layout::{
    features, AnalyzerPage, ConfigInfo, EventRingHeader, EventSlot, FlowSlot, Header, PktLogEntry,
    PktLogHeader, RingMetaSlot, TunnelSlot,
};
use shm_layout::plan::{EventPlan, MainPlan};
use shm_layout::region::{Mapping, WriteProbe};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32};

/// What the sensor said in its `Welcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Welcome {
    pub analyzer_id: u32,
    pub epoch: u64,
    pub main_len: u64,
    pub events_len: u64,
    pub event_capacity: u64,
    pub nworkers: u32,
    pub page_len: u64,
}

/// The mapped regions of one attachment.
#[derive(Debug)]
pub(crate) struct Regions {
    main: Mapping,
    events: Mapping,
    page: Mapping,
    /// Kept open for [`Regions::probe_write_protection`].
    main_fd: OwnedFd,
    events_fd: OwnedFd,
    _page_fd: OwnedFd,
    plan: MainPlan,
    event_plan: EventPlan,
    pub config: ConfigInfo,
    /// The most stream bytes one side holds: `chunk_size * chunk_map_len`.
    pub span: u64,
    pub nworkers: usize,
    pub welcome: Welcome,
    /// The sensor publishes tunnel records ([`features::TUNNELS`]; ABI minor 2 on).
    tunnels: bool,
    /// Whether the sensor is still there (a read that waits for it gives up once it is not).
    pub sensor: SensorWatch,
    /// Set by the first `peek`: from then on the run loop prefetches what later events will
    /// be peeked through ([`crate::lookahead`]).
    pub peeked: AtomicBool,
}

fn proto(msg: impl Into<String>) -> Error {
    Error::new(Errno::EPROTO, msg)
}

fn to_usize(v: u64, what: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| proto(format!("{what} of {v} bytes does not fit in memory")))
}

/// What a stream copy ([`crate::views::WorkerView::copy_stream`]) found in a buffer's chunk map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Copied {
    /// Every byte came from a chunk the map named.
    Whole,
    /// The map entry for stream offset `offset` was `entry`, which names no chunk
    /// ([`shm_layout::layout::NO_CHUNK`] or out of range): the copy stopped there. Whether that
    /// is an overrun (the sensor freed the chunk meanwhile) or the sensor's error is for the
    /// caller's validation to say.
    Torn { offset: u64, entry: u32 },
}

impl Regions {
    /// Maps the three descriptors of a `Welcome` and checks that they add up: the main
    /// header's magic, major version, sizes and offsets, its epoch against the welcome's, and
    /// the event and page regions' sizes against their plans.
    pub fn new(welcome: Welcome, fds: [OwnedFd; 3], sensor: SensorWatch) -> Result<Regions> {
        let [main_fd, events_fd, page_fd] = fds;
        let map = |fd: &OwnedFd, len: u64, writable: bool, what: &str| -> Result<Mapping> {
            let len = to_usize(len, what)?;
            Mapping::map(fd.as_fd(), len, writable, false)
                .map_err(|e| Error::os(&e, format!("cannot map the {what}")))
        };
        let main = map(&main_fd, welcome.main_len, false, "main region")?;
        let events = map(&events_fd, welcome.events_len, false, "event region")?;
        let page = map(&page_fd, welcome.page_len, true, "analyzer page")?;
        let header: &Header = main
            .get(0)
            .ok_or_else(|| proto("the main region is too small for its header"))?;
        let plan = MainPlan::check_header(header, welcome.main_len).map_err(|e| proto(e.0))?;
        if header.epoch != welcome.epoch {
            return Err(proto(format!(
                "the main region belongs to sensor epoch {:#x}, the sensor said {:#x}",
                header.epoch, welcome.epoch
            )));
        }
        let nworkers = plan.workers.len();
        if welcome.nworkers as usize != nworkers {
            return Err(proto(format!(
                "the sensor announced {} workers, its header has {nworkers}",
                welcome.nworkers
            )));
        }
        let event_plan =
            EventPlan::new(welcome.event_capacity, nworkers).map_err(|e| proto(e.0))?;
        if event_plan.len > welcome.events_len {
            return Err(proto(format!(
                "the event region has {} bytes, {} workers of {} records need {}",
                welcome.events_len, nworkers, welcome.event_capacity, event_plan.len
            )));
        }
        if welcome.page_len < core::mem::size_of::<AnalyzerPage>() as u64 {
            return Err(proto(format!(
                "the analyzer page has {} bytes",
                welcome.page_len
            )));
        }
        let config = header.config;
        // `check_header` knows both sizes are powers of two; their product may still be absurd.
        let span = config
            .chunk_size
            .checked_mul(config.chunk_map_len)
            .ok_or_else(|| {
                proto(format!(
                    "stream buffers of {} chunks of {} bytes overflow 64 bits",
                    config.chunk_map_len, config.chunk_size
                ))
            })?;
        to_usize(span, "a stream buffer")?;
        let tunnels = header.features & features::TUNNELS != 0;
        let r = Regions {
            main,
            events,
            page,
            main_fd,
            events_fd,
            _page_fd: page_fd,
            plan,
            event_plan,
            config,
            span,
            nworkers,
            welcome,
            tunnels,
            sensor,
            peeked: AtomicBool::new(false),
        };
        // Every fixed part must be viewable before anyone relies on it.
        r.page_view()?;
        for w in 0..nworkers {
            r.event_ring(w)?;
            r.slots(w)?;
            r.ring_metas(w)?;
            r.tunnels(w)?;
            if r.config.pktlog_entries > 0 {
                r.pktlog(w)?;
            }
            r.chunk_maps(w)?;
            let end = r
                .config
                .chunks_per_worker
                .checked_mul(r.config.chunk_size)
                .and_then(|n| r.plan.workers[w].chunks_off.checked_add(n));
            if end.is_none_or(|e| e > r.main.len() as u64) {
                return Err(proto(format!(
                    "worker {w}'s stream chunks end past the main region"
                )));
            }
        }
        Ok(r)
    }

    /// The main region's header.
    pub fn header(&self) -> &Header {
        self.main.get(0).expect("checked in Regions::new")
    }

    /// The analyzer page.
    pub fn page(&self) -> &AnalyzerPage {
        self.page_view().expect("checked in Regions::new")
    }

    fn page_view(&self) -> Result<&AnalyzerPage> {
        self.page
            .get(0)
            .ok_or_else(|| proto("the analyzer page cannot be viewed"))
    }

    /// Worker `w`'s event ring: its header and records.
    pub fn event_ring(&self, w: usize) -> Result<(&EventRingHeader, &[EventSlot])> {
        let bad = || {
            proto(format!(
                "worker {w}'s event ring lies outside the event region"
            ))
        };
        let hdr: &EventRingHeader = self
            .events
            .get(to_usize(self.event_plan.ring_off(w), "event ring")?)
            .ok_or_else(bad)?;
        if hdr.capacity != self.event_plan.capacity {
            return Err(proto(format!(
                "worker {w}'s event ring holds {} records, the sensor said {}",
                hdr.capacity, self.event_plan.capacity
            )));
        }
        let slots = self
            .events
            .slice(
                to_usize(self.event_plan.records_off(w), "event ring")?,
                to_usize(self.event_plan.capacity, "event ring")?,
            )
            .ok_or_else(bad)?;
        Ok((hdr, slots))
    }

    /// Worker `w`'s flow slots.
    pub fn slots(&self, w: usize) -> Result<&[FlowSlot]> {
        let p = self.plan.workers.get(w).ok_or_else(|| no_worker(w))?;
        self.main
            .slice(
                to_usize(p.slots_off, "flow slots")?,
                to_usize(self.config.slots_per_worker, "flow slots")?,
            )
            .ok_or_else(|| {
                proto(format!(
                    "worker {w}'s flow slots lie outside the main region"
                ))
            })
    }

    /// Worker `w`'s tunnel records, one per flow slot (`None` from a sensor that publishes
    /// none).
    pub fn tunnels(&self, w: usize) -> Result<Option<&[TunnelSlot]>> {
        if !self.tunnels {
            return Ok(None);
        }
        let p = self.plan.workers.get(w).ok_or_else(|| no_worker(w))?;
        self.main
            .slice(
                to_usize(p.tunnels_off, "tunnel records")?,
                to_usize(self.config.slots_per_worker, "tunnel records")?,
            )
            .map(Some)
            .ok_or_else(|| {
                proto(format!(
                    "worker {w}'s tunnel records lie outside the main region"
                ))
            })
    }

    /// Worker `w`'s stream-buffer metadata, one per buffer.
    pub fn ring_metas(&self, w: usize) -> Result<&[RingMetaSlot]> {
        let p = self.plan.workers.get(w).ok_or_else(|| no_worker(w))?;
        self.main
            .slice(
                to_usize(p.ring_meta_off, "ring metadata")?,
                to_usize(self.config.buffers_per_worker, "ring metadata")?,
            )
            .ok_or_else(|| {
                proto(format!(
                    "worker {w}'s ring metadata lies outside the main region"
                ))
            })
    }

    /// Worker `w`'s chunk maps: `chunk_map_len` entries per buffer, buffer after buffer.
    pub fn chunk_maps(&self, w: usize) -> Result<&[AtomicU32]> {
        let p = self.plan.workers.get(w).ok_or_else(|| no_worker(w))?;
        let bad = || {
            proto(format!(
                "worker {w}'s chunk maps lie outside the main region"
            ))
        };
        let n = self
            .config
            .buffers_per_worker
            .checked_mul(self.config.chunk_map_len)
            .ok_or_else(bad)?;
        self.main
            .slice(
                to_usize(p.chunk_map_off, "chunk maps")?,
                to_usize(n, "chunk maps")?,
            )
            .ok_or_else(bad)
    }

    /// Where worker `w`'s stream chunks start in the main region (they end inside it: checked
    /// in [`Regions::new`]).
    pub fn chunks_off(&self, w: usize) -> Result<u64> {
        Ok(self
            .plan
            .workers
            .get(w)
            .ok_or_else(|| no_worker(w))?
            .chunks_off)
    }

    /// Hints the processor to bring bytes `[off, off + len)` of the main region (cut to it)
    /// into its caches: stream bytes a `peek` will copy soon.
    #[inline]
    pub fn prefetch_main(&self, off: usize, len: usize) {
        self.main.prefetch(off, len);
    }

    /// Worker `w`'s packet log: header, entries, and where its frame bytes start.
    pub fn pktlog(&self, w: usize) -> Result<(&PktLogHeader, &[PktLogEntry], usize)> {
        let p = self.plan.workers.get(w).ok_or_else(|| no_worker(w))?;
        let bad = || {
            proto(format!(
                "worker {w}'s packet log lies outside the main region"
            ))
        };
        let off = to_usize(p.pktlog_off, "packet log")?;
        let hdr: &PktLogHeader = self.main.get(off).ok_or_else(bad)?;
        let n = to_usize(self.config.pktlog_entries, "packet log")?;
        let entries = self
            .main
            .slice(off + core::mem::size_of::<PktLogHeader>(), n)
            .ok_or_else(bad)?;
        let bytes_off = to_usize(p.pktlog_bytes_off, "packet log")?;
        let end = bytes_off
            .checked_add(to_usize(self.config.pktlog_bytes, "packet log")?)
            .ok_or_else(bad)?;
        if end > self.main.len() {
            return Err(bad());
        }
        Ok((hdr, entries, bytes_off))
    }

    /// Copies bytes of the main region (packet-log frames); `false` if out of range.
    pub fn read_main(&self, off: usize, dst: &mut [u8]) -> bool {
        self.main.read_bytes(off, dst)
    }

    /// Tries to get write access to the read-only regions; see
    /// [`crate::Mos::probe_write_protection`].
    pub fn probe_write_protection(&self) -> Vec<(&'static str, WriteProbe)> {
        vec![
            ("main", self.main.probe_write(self.main_fd.as_fd())),
            ("events", self.events.probe_write(self.events_fd.as_fd())),
        ]
    }
}

fn no_worker(w: usize) -> Error {
    proto(format!("worker {w} does not exist"))
}
