//! Creating the shared regions: the main region (header, flow slots, ring metadata, stream
//! rings, packet logs) once at start, and an event region and a page per analyzer at attach.
//! The main region is backed by 2 MiB hugepages as `--hugepages` says; an analyzer's event
//! rings are when the main region is and the host has enough free, and are faulted in whole
//! at attach.
//!
//! Each region is a memfd. The sensor maps it read-write, then seals it against new writable
//! mappings and writes (`F_SEAL_FUTURE_WRITE`; its own mapping keeps working) and hands
//! analyzers a descriptor opened read-only through `/proc/self/fd`: the kernel refuses them
//! `PROT_WRITE` (`EACCES`), and the seal stops a reopen from writing. Only an analyzer's own
//! page is passed writable.

use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags};
use shm_layout::layout::{
    features, sensor_state, AnalyzerPage, ConfigInfo, EventRingHeader, FlowSlot, Header, InputInfo,
    PktLogEntry, PktLogHeader, RingMetaSlot, TunnelSlot, WorkerInfo, ABI_MAJOR, ABI_MINOR, MAGIC,
};
use shm_layout::pktlog::PktLogWriter;
use shm_layout::plan::{EventPlan, MainPlan, PAGE_LEN};
use shm_layout::region::Mapping;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

/// Whether to back the main region with hugepages (and so analyzers' event rings, while
/// enough are free).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HugePages {
    /// Use 2 MiB hugepages when the host has enough free, else ordinary shared memory; each
    /// analyzer's event rings too, while enough are free.
    Auto,
    /// Never use hugepages.
    Off,
    /// Fail if the main region cannot be backed by hugepages; analyzers' event rings use them
    /// while enough are free, else ordinary pages.
    Require,
}

/// The main region, mapped read-write for the life of the process.
#[derive(Debug)]
pub struct MainRegion {
    /// The mapping (leaked: the region lives as long as the sensor).
    pub map: &'static Mapping,
    /// The header.
    pub header: &'static Header,
    /// A read-only descriptor for analyzers.
    pub ro_fd: OwnedFd,
    /// The read-write descriptor (kept so the memfd lives; never passed on).
    pub rw_fd: OwnedFd,
    /// Bytes mapped.
    pub len: u64,
    /// Backed by hugepages.
    pub hugepages: bool,
}

/// One worker's parts of the main region.
#[derive(Debug)]
pub struct WorkerParts {
    /// The worker's number.
    pub index: usize,
    /// Its flow slots.
    pub slots: &'static [FlowSlot],
    /// Its stream buffers' metadata.
    pub metas: &'static [RingMetaSlot],
    /// Its flow slots' tunnel records.
    pub tunnels: &'static [TunnelSlot],
    /// Its stream chunks' bytes.
    pub chunk_bytes: &'static mut [u8],
    /// Its stream buffers' chunk maps.
    pub chunk_map: &'static [AtomicU32],
    /// Its packet log.
    pub pktlog: PktLogWriter<'static>,
    /// Its offsets and counters in the header.
    pub info: &'static WorkerInfo,
}

const HUGE_2M: u64 = 2 << 20;

fn memfd(name: &str, huge: bool) -> io::Result<OwnedFd> {
    let mut flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    if huge {
        flags |= MemfdFlags::HUGETLB | MemfdFlags::HUGE_2MB;
    }
    Ok(rustix::fs::memfd_create(name, flags)?)
}

/// Seals a memfd against growth, shrinking and any new write access, and against further
/// seals; the sensor's existing writable mapping keeps working. An analyzer that reopens its
/// read-only descriptor through `/proc/self/fd` for writing gets a file it can neither write,
/// map writable, nor resize.
fn seal(fd: &OwnedFd) -> io::Result<()> {
    rustix::fs::fcntl_add_seals(
        fd,
        SealFlags::SHRINK | SealFlags::GROW | SealFlags::FUTURE_WRITE | SealFlags::SEAL,
    )?;
    Ok(())
}

/// Seals an analyzer's page, which it maps writable, against any change of size: truncating
/// it would make the sensor's next access to its mapping die of `SIGBUS`.
fn seal_size(fd: &OwnedFd) -> io::Result<()> {
    rustix::fs::fcntl_add_seals(fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
    Ok(())
}

/// A second descriptor of the same memfd, opened read-only.
pub fn reopen_read_only(fd: &OwnedFd) -> io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(rustix::fs::open(
        path.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// A new memfd of `len` bytes (in 2 MiB hugepages if `huge`), mapped read-write; `populate`
/// faults every page in now (`MAP_POPULATE`) rather than at its first use. The kernel
/// populates what it can and says nothing of the rest, which then faults at first use.
fn map_new(name: &str, len: u64, huge: bool, populate: bool) -> io::Result<(OwnedFd, Mapping)> {
    let fd = memfd(name, huge)?;
    rustix::fs::ftruncate(&fd, len)?;
    let len = usize::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "region too large"))?;
    let map = Mapping::map(fd.as_fd(), len, true, populate)?;
    Ok((fd, map))
}

/// The 2 MiB hugepages the main region of `nworkers` workers with the sizes of `cfg` takes.
pub fn main_hugepages(cfg: &ConfigInfo, nworkers: usize) -> anyhow::Result<u64> {
    Ok(MainPlan::new(cfg, nworkers, HUGE_2M)?.len.div_ceil(HUGE_2M))
}

/// Creates the main region for `nworkers` workers with the sizes of `cfg`; `log` gets one
/// line saying how it is backed.
pub fn create_main(
    cfg: &ConfigInfo,
    input: &InputInfo,
    nworkers: usize,
    epoch: u64,
    hugepages: HugePages,
    lossless: bool,
    log: &mut dyn FnMut(String),
) -> anyhow::Result<(MainRegion, Vec<WorkerParts>)> {
    let mut attempt = None;
    if hugepages != HugePages::Off {
        let plan = MainPlan::new(cfg, nworkers, HUGE_2M)?;
        match map_new("mos-main", plan.len, true, false) {
            Ok((fd, map)) => attempt = Some((fd, map, plan, true)),
            Err(e) if hugepages == HugePages::Require => {
                anyhow::bail!(
                    "cannot back {} MiB of shared memory with hugepages: {e} (reserve more 2 MiB pages, e.g. with deploy/hugepages.sh, or use --hugepages auto)",
                    plan.len >> 20
                );
            }
            Err(e) => log(format!(
                "shared memory: {} MiB in ordinary pages (no hugepages: {e})",
                plan.len >> 20
            )),
        }
    } else {
        log("shared memory: ordinary pages (--hugepages off)".to_string());
    }
    let (rw_fd, mut map, plan, huge) = match attempt {
        Some(a) => {
            log(format!(
                "shared memory: {} MiB in 2 MiB hugepages",
                a.2.len >> 20
            ));
            a
        }
        None => {
            let plan = MainPlan::new(cfg, nworkers, 4096)?;
            let (fd, map) = map_new("mos-main", plan.len, false, false).map_err(|e| {
                anyhow::anyhow!("cannot create {} MiB of shared memory: {e}", plan.len >> 20)
            })?;
            (fd, map, plan, false)
        }
    };
    {
        let h: &mut Header = map
            .get_mut(0)
            .ok_or_else(|| anyhow::anyhow!("shared memory too small for its header"))?;
        h.magic = MAGIC;
        h.abi_major = ABI_MAJOR;
        h.abi_minor = ABI_MINOR;
        h.header_size = core::mem::size_of::<Header>() as u32;
        h.features = if huge { features::HUGEPAGES } else { 0 }
            | if lossless { features::LOSSLESS } else { 0 }
            | features::TUNNELS;
        h.epoch = epoch;
        h.sensor_pid = u64::from(std::process::id());
        h.nworkers = nworkers as u64;
        h.region_len = plan.len;
        h.config = *cfg;
        h.input = *input;
        h.state
            .store(sensor_state::STARTING, std::sync::atomic::Ordering::Relaxed);
        for (i, w) in plan.workers.iter().enumerate() {
            let info = &mut h.workers[i];
            info.slots_off = w.slots_off;
            info.ring_meta_off = w.ring_meta_off;
            info.chunk_map_off = w.chunk_map_off;
            info.chunks_off = w.chunks_off;
            info.pktlog_off = w.pktlog_off;
        }
    }
    // Unsealed, an analyzer could reopen its read-only descriptor for writing and truncate
    // the region under the sensor (see `seal`): no start without it.
    seal(&rw_fd).map_err(|e| {
        anyhow::anyhow!(
            "cannot seal the shared memory against analyzers ({e}; Linux 5.1 or later is needed)"
        )
    })?;
    let ro_fd = reopen_read_only(&rw_fd)?;
    let len = map.len() as u64;
    let map: &'static Mapping = Box::leak(Box::new(map));
    // Byte ranges first: no shared view of the mapping may exist when they are taken.
    let mut bytes = Vec::new();
    for w in &plan.workers {
        let rings = map
            .take_bytes(
                w.chunks_off as usize,
                (cfg.chunks_per_worker * cfg.chunk_size) as usize,
            )
            .ok_or_else(|| anyhow::anyhow!("stream chunks outside the region"))?;
        let log_bytes = map
            .take_bytes(w.pktlog_bytes_off as usize, cfg.pktlog_bytes as usize)
            .ok_or_else(|| anyhow::anyhow!("packet log outside the region"))?;
        bytes.push((rings, log_bytes));
    }
    let header: &'static Header = map.get(0).expect("checked above");
    let mut parts = Vec::new();
    for (i, (w, (rings, log_bytes))) in plan.workers.iter().zip(bytes).enumerate() {
        let bad = || anyhow::anyhow!("worker {i}'s parts do not fit the region");
        let slots = map
            .slice::<FlowSlot>(w.slots_off as usize, cfg.slots_per_worker as usize)
            .ok_or_else(bad)?;
        let metas = map
            .slice::<RingMetaSlot>(w.ring_meta_off as usize, cfg.buffers_per_worker as usize)
            .ok_or_else(bad)?;
        let chunk_map = map
            .slice::<AtomicU32>(
                w.chunk_map_off as usize,
                (cfg.buffers_per_worker * cfg.chunk_map_len) as usize,
            )
            .ok_or_else(bad)?;
        let tunnels = map
            .slice::<TunnelSlot>(w.tunnels_off as usize, cfg.slots_per_worker as usize)
            .ok_or_else(bad)?;
        let log_hdr = map
            .get::<PktLogHeader>(w.pktlog_off as usize)
            .ok_or_else(bad)?;
        let entries = map
            .slice::<PktLogEntry>(
                w.pktlog_off as usize + core::mem::size_of::<PktLogHeader>(),
                cfg.pktlog_entries as usize,
            )
            .ok_or_else(bad)?;
        let pktlog = PktLogWriter::new(log_hdr, entries, log_bytes)
            .ok_or_else(|| anyhow::anyhow!("the packet log needs entries and bytes"))?;
        parts.push(WorkerParts {
            index: i,
            slots,
            metas,
            tunnels,
            chunk_bytes: rings,
            chunk_map,
            pktlog,
            info: &header.workers[i],
        });
    }
    Ok((
        MainRegion {
            map,
            header,
            ro_fd,
            rw_fd,
            len,
            hugepages: huge,
        },
        parts,
    ))
}

/// One analyzer's regions as mapped here: its event rings and its page.
#[derive(Clone, Debug)]
pub struct AnalyzerRegions {
    /// The event rings, mapped read-write here: `plan.len` bytes, rounded up to whole 2 MiB
    /// pages when they are hugepages (the analyzer is told the mapping's length).
    pub events: Arc<Mapping>,
    /// The analyzer's page, mapped read-write here.
    pub page: Arc<Mapping>,
    /// The event region's layout.
    pub plan: EventPlan,
    /// The event rings are backed by 2 MiB hugepages.
    pub hugepages: bool,
}

/// The descriptors an analyzer receives for its regions.
#[derive(Debug)]
pub struct AnalyzerFds {
    /// A read-only descriptor of the event rings.
    pub events_ro: OwnedFd,
    /// The page's descriptor, passed writable.
    pub page_fd: OwnedFd,
}

/// The 2 MiB hugepages one analyzer's event rings take when they get hugepages: `nworkers`
/// rings of `capacity` records, their headers, rounded up to whole pages.
pub fn analyzer_hugepages(capacity: u64, nworkers: usize) -> anyhow::Result<u64> {
    Ok(EventPlan::new(capacity, nworkers)?.len.div_ceil(HUGE_2M))
}

/// The most bytes one analyzer's regions take, whichever pages back them (`None` for rings
/// the layout refuses).
pub fn analyzer_bytes(capacity: u64, nworkers: usize) -> Option<u64> {
    let rings = EventPlan::new(capacity, nworkers).ok()?.len;
    Some(rings.next_multiple_of(HUGE_2M) + PAGE_LEN)
}

/// Creates the regions of a new analyzer: `nworkers` rings of `capacity` records, and a page.
///
/// With `hugepages` (the main region has them) the rings are backed by 2 MiB hugepages when
/// the host has that many free, else (or without) by ordinary pages. Either way every page
/// of the rings and of the page is faulted in here, at attach, so that a worker's first lap
/// of a ring takes no page fault on the packet path.
pub fn create_analyzer(
    capacity: u64,
    nworkers: usize,
    hugepages: bool,
) -> anyhow::Result<(AnalyzerRegions, AnalyzerFds)> {
    create_analyzer_with(capacity, nworkers, hugepages, |len| {
        map_new("mos-events", len, true, true)
    })
}

/// [`create_analyzer`], with `map_huge` making a hugepage-backed region of the given length.
fn create_analyzer_with(
    capacity: u64,
    nworkers: usize,
    hugepages: bool,
    map_huge: impl FnOnce(u64) -> io::Result<(OwnedFd, Mapping)>,
) -> anyhow::Result<(AnalyzerRegions, AnalyzerFds)> {
    let plan = EventPlan::new(capacity, nworkers)?;
    // A hugetlb mapping reserves its pages when it is made: a shortage is an error here,
    // never a fault later.
    let huge = if hugepages {
        map_huge(plan.len.next_multiple_of(HUGE_2M)).ok()
    } else {
        None
    };
    let hugepages = huge.is_some();
    let (fd, mut events) = match huge {
        Some(m) => m,
        None => map_new("mos-events", plan.len, false, true)?,
    };
    for w in 0..nworkers {
        let h: &mut EventRingHeader = events
            .get_mut(plan.ring_off(w) as usize)
            .ok_or_else(|| anyhow::anyhow!("event ring outside its region"))?;
        h.capacity = capacity;
    }
    seal(&fd)?;
    let events_ro = reopen_read_only(&fd)?;
    drop(fd);
    let (page_fd, page) = map_new("mos-page", PAGE_LEN, false, true)?;
    seal_size(&page_fd)?;
    if page.get::<AnalyzerPage>(0).is_none() {
        anyhow::bail!("analyzer page too small");
    }
    Ok((
        AnalyzerRegions {
            events: Arc::new(events),
            page: Arc::new(page),
            plan,
            hugepages,
        },
        AnalyzerFds { events_ro, page_fd },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes of memory the memfd behind `fd` holds (pages allocated, not merely sized).
    fn allocated(fd: &OwnedFd) -> u64 {
        rustix::fs::fstat(fd).expect("fstat").st_blocks as u64 * 512
    }

    /// What an analyzer holding the read-only descriptor `ro` of a region of `len` bytes can
    /// do to it: not map it writable, and, through a read-write reopening, neither map it
    /// writable nor change its size.
    fn assert_sealed(ro: &OwnedFd, len: usize) {
        assert!(Mapping::map(ro.as_fd(), len, true, false).is_err());
        let path = format!("/proc/self/fd/{}", ro.as_raw_fd());
        let rw = rustix::fs::open(path.as_str(), OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .expect("reopen read-write");
        assert!(Mapping::map(rw.as_fd(), len, true, false).is_err());
        assert!(rustix::fs::ftruncate(&rw, 0).is_err());
        assert!(rustix::fs::ftruncate(&rw, len as u64 * 2).is_err());
    }

    fn assert_rings(r: &AnalyzerRegions, fds: &AnalyzerFds, capacity: u64) {
        for w in 0..r.plan.nworkers {
            let h: &EventRingHeader = r.events.get(r.plan.ring_off(w) as usize).unwrap();
            assert_eq!(h.capacity, capacity);
        }
        let len = r.events.len() as u64;
        assert_eq!(allocated(&fds.events_ro), len, "rings faulted in");
        assert_eq!(
            allocated(&fds.page_fd),
            r.page.len() as u64,
            "page faulted in"
        );
        assert_sealed(&fds.events_ro, r.events.len());
        let bound = analyzer_bytes(capacity, r.plan.nworkers).unwrap();
        assert!((r.events.len() + r.page.len()) as u64 <= bound);
    }

    #[test]
    fn rings_are_hugepages_when_asked_and_free_else_ordinary_pages_and_all_faulted_in() {
        for hugepages in [false, true] {
            let (r, fds) = create_analyzer(1 << 14, 2, hugepages).unwrap();
            let len = r.events.len() as u64;
            if r.hugepages {
                assert!(hugepages, "hugepages only when the main region has them");
                assert_eq!(len, r.plan.len.next_multiple_of(HUGE_2M));
                assert_eq!(len / HUGE_2M, analyzer_hugepages(1 << 14, 2).unwrap());
            } else {
                assert_eq!(len, r.plan.len);
            }
            assert_rings(&r, &fds, 1 << 14);
        }
    }

    #[test]
    fn a_hugepage_shortage_falls_back_to_ordinary_pages() {
        let mut asked = None;
        let (r, fds) = create_analyzer_with(256, 3, true, |len| {
            asked = Some(len);
            Err(io::Error::from_raw_os_error(libc::ENOMEM))
        })
        .unwrap();
        assert_eq!(asked, Some(r.plan.len.next_multiple_of(HUGE_2M)));
        assert!(!r.hugepages);
        assert_eq!(r.events.len() as u64, r.plan.len);
        assert_rings(&r, &fds, 256);
    }

    #[test]
    fn without_hugepages_in_the_main_region_the_rings_do_not_ask_for_them() {
        let (r, fds) =
            create_analyzer_with(64, 1, false, |_| panic!("asked for hugepages")).unwrap();
        assert!(!r.hugepages);
        assert_rings(&r, &fds, 64);
    }

    #[test]
    fn an_analyzer_takes_whole_hugepages_for_its_rings() {
        // The default ring: 65 536 records of 96 bytes and a header, 6 MiB and 4 KiB a worker.
        assert_eq!(analyzer_hugepages(1 << 16, 1).unwrap(), 4);
        assert_eq!(analyzer_hugepages(1 << 16, 2).unwrap(), 7);
        assert_eq!(analyzer_hugepages(2, 1).unwrap(), 1);
        assert!(analyzer_hugepages(3, 1).is_err());
        assert_eq!(
            analyzer_bytes(1 << 16, 1),
            Some(4 * HUGE_2M + PAGE_LEN),
            "the budget counts the rounded region"
        );
        assert_eq!(analyzer_bytes(3, 1), None);
    }
}
