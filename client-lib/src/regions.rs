//! The three regions an attached analyzer maps, and typed views of their parts.
//!
//! The main and event regions are mapped read-only from read-only descriptors, so the kernel
//! refuses this process write access to them; the analyzer page is the only writable one.
//! Every offset comes from the published header and is checked once here ([`Regions::new`]),
//! so the accessors below only fail for indices the sensor hands out later (a slot or ring
//! number in an event or a flow slot), which they bound-check.

use crate::error::{Errno, Error, Result};
use crate::watch::SensorWatch;
use shm_layout::layout::{
    features, AnalyzerPage, ConfigInfo, EventRingHeader, EventSlot, FlowSlot, Header, PktLogEntry,
    PktLogHeader, RingMetaSlot, TunnelSlot,
};
use shm_layout::plan::{EventPlan, MainPlan};
use shm_layout::region::{Mapping, WriteProbe};
use std::os::fd::{AsFd, OwnedFd};

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
    pub nworkers: usize,
    pub welcome: Welcome,
    /// The sensor publishes tunnel records ([`features::TUNNELS`]; ABI minor 2 on).
    tunnels: bool,
    /// Whether the sensor is still there (a read that waits for it gives up once it is not).
    pub sensor: SensorWatch,
}

fn proto(msg: impl Into<String>) -> Error {
    Error::new(Errno::EPROTO, msg)
}

fn to_usize(v: u64, what: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| proto(format!("{what} of {v} bytes does not fit in memory")))
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
            nworkers,
            welcome,
            tunnels,
            sensor,
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
            let ring_bytes = r.config.rings_per_worker.saturating_mul(r.config.ring_size);
            let end = r.plan.workers[w].rings_off.saturating_add(ring_bytes);
            if end > r.main.len() as u64 {
                return Err(proto(format!(
                    "worker {w}'s rings end past the main region"
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

    /// Worker `w`'s ring metadata.
    pub fn ring_metas(&self, w: usize) -> Result<&[RingMetaSlot]> {
        let p = self.plan.workers.get(w).ok_or_else(|| no_worker(w))?;
        self.main
            .slice(
                to_usize(p.ring_meta_off, "ring metadata")?,
                to_usize(self.config.rings_per_worker, "ring metadata")?,
            )
            .ok_or_else(|| {
                proto(format!(
                    "worker {w}'s ring metadata lies outside the main region"
                ))
            })
    }

    /// Copies the ring bytes of stream offsets `[offset, offset + dst.len())` of ring `ring` of
    /// worker `w` (wrapping around the ring's end). The caller validates the copy afterwards.
    pub fn copy_ring(&self, w: usize, ring: u32, offset: u64, dst: &mut [u8]) -> Result<()> {
        let p = self.plan.workers.get(w).ok_or_else(|| no_worker(w))?;
        let size = self.config.ring_size;
        if u64::from(ring) >= self.config.rings_per_worker || dst.len() as u64 > size {
            return Err(proto(format!(
                "ring {ring} of worker {w} (or a read of {} bytes) is out of range",
                dst.len()
            )));
        }
        let base = p.rings_off + u64::from(ring) * size;
        let pos = offset & (size - 1);
        let first = (dst.len() as u64).min(size - pos) as usize;
        let (a, b) = dst.split_at_mut(first);
        let ok = self.main.read_bytes(to_usize(base + pos, "ring")?, a)
            && self.main.read_bytes(to_usize(base, "ring")?, b);
        if ok {
            Ok(())
        } else {
            Err(proto(format!(
                "ring {ring} of worker {w} lies outside the main region"
            )))
        }
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
