//! Where everything goes: the offsets of each worker's parts in the main region and of each
//! worker's ring in an event region, computed the same way by the sensor (to lay a region out)
//! and checked by analyzers (to refuse a region that does not add up).

use crate::layout::{
    AnalyzerPage, ConfigInfo, EventRingHeader, EventSlot, FlowSlot, Header, PktLogEntry,
    PktLogHeader, RingMetaSlot, TunnelSlot, ABI_MAJOR, MAGIC, MAX_WORKERS,
};
use core::mem::size_of;

/// Alignment of every part: a hugepage, so each worker's rings start on their own pages.
pub const PART_ALIGN: u64 = 4096;

fn mul_sz(n: u64, sz: usize) -> Option<u64> {
    n.checked_mul(sz as u64)
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    Some(x.checked_add(a - 1)? / a * a)
}

/// One worker's parts in the main region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerPlan {
    /// Offset of the flow slots.
    pub slots_off: u64,
    /// Offset of the stream buffers' metadata.
    pub ring_meta_off: u64,
    /// Offset of the stream buffers' chunk maps.
    pub chunk_map_off: u64,
    /// Offset of the chunk bytes.
    pub chunks_off: u64,
    /// Offset of the packet-log header (entries and bytes follow).
    pub pktlog_off: u64,
    /// Offset of the packet-log frame bytes.
    pub pktlog_bytes_off: u64,
    /// One past the worker's last byte (tunnel records aside).
    pub end: u64,
    /// Offset of the worker's `slots_per_worker` [`TunnelSlot`]s. They follow every worker's
    /// other parts, so that a reader of ABI minor 1, which does not know them, lays the
    /// workers out the same way.
    pub tunnels_off: u64,
}

/// The main region's layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MainPlan {
    /// Per-worker parts.
    pub workers: Vec<WorkerPlan>,
    /// Total bytes (a multiple of `round_to`).
    pub len: u64,
}

/// Why a configuration or a published header does not describe a usable region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanError(pub String);

impl core::fmt::Display for PlanError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlanError {}

impl MainPlan {
    /// Lays out `nworkers` workers with the sizes of `cfg`; the total is rounded up to
    /// `round_to` (the page size backing the region).
    pub fn new(cfg: &ConfigInfo, nworkers: usize, round_to: u64) -> Result<MainPlan, PlanError> {
        let err = |what: &str| PlanError(format!("shared-memory layout: {what}"));
        if nworkers == 0 || nworkers > MAX_WORKERS {
            return Err(err(&format!("{nworkers} workers (1 to {MAX_WORKERS})")));
        }
        if !cfg.chunk_size.is_power_of_two() {
            return Err(err("chunk size is not a power of two"));
        }
        if !cfg.chunk_map_len.is_power_of_two() {
            return Err(err("chunk map length is not a power of two"));
        }
        if cfg.chunks_per_worker >= u64::from(crate::layout::NO_CHUNK)
            || cfg.buffers_per_worker >= u64::from(crate::layout::NO_RING)
        {
            return Err(err("more chunks or buffers than 32-bit indices can name"));
        }
        let over = || err("the configured sizes overflow 64 bits");
        let mut at = align_up(size_of::<Header>() as u64, PART_ALIGN).ok_or_else(over)?;
        let mut workers = Vec::with_capacity(nworkers);
        for _ in 0..nworkers {
            let mut w = WorkerPlan {
                slots_off: at,
                ..Default::default()
            };
            let mul = |n: u64, sz: usize| n.checked_mul(sz as u64).ok_or_else(over);
            // A published header may hold any sizes: every sum is checked, so that a reader
            // refuses a hostile one instead of overflowing.
            let add = |a: u64, b: u64| a.checked_add(b).ok_or_else(over);
            let part = |a: u64, b: u64| align_up(add(a, b)?, PART_ALIGN).ok_or_else(over);
            at = part(at, mul(cfg.slots_per_worker, size_of::<FlowSlot>())?)?;
            w.ring_meta_off = at;
            at = part(at, mul(cfg.buffers_per_worker, size_of::<RingMetaSlot>())?)?;
            w.chunk_map_off = at;
            let map_words = cfg
                .buffers_per_worker
                .checked_mul(cfg.chunk_map_len)
                .ok_or_else(over)?;
            at = part(at, mul(map_words, 4)?)?;
            w.chunks_off = at;
            let chunk_bytes = cfg
                .chunks_per_worker
                .checked_mul(cfg.chunk_size)
                .ok_or_else(over)?;
            at = part(at, chunk_bytes)?;
            w.pktlog_off = at;
            at = add(at, size_of::<PktLogHeader>() as u64)?;
            at = add(at, mul(cfg.pktlog_entries, size_of::<PktLogEntry>())?)?;
            w.pktlog_bytes_off = at;
            at = part(at, cfg.pktlog_bytes)?;
            w.end = at;
            workers.push(w);
        }
        for w in &mut workers {
            w.tunnels_off = at;
            let n = mul_sz(cfg.slots_per_worker, size_of::<TunnelSlot>()).ok_or_else(over)?;
            at = align_up(at.checked_add(n).ok_or_else(over)?, PART_ALIGN).ok_or_else(over)?;
        }
        let len = align_up(at, round_to.max(PART_ALIGN)).ok_or_else(over)?;
        Ok(MainPlan { workers, len })
    }

    /// Checks a header mapped from `mapped_len` bytes and recomputes the plan it implies:
    /// magic, major version, header size, worker count and every offset must agree.
    pub fn check_header(h: &Header, mapped_len: u64) -> Result<MainPlan, PlanError> {
        let err = |what: String| PlanError(format!("shared memory refused: {what}"));
        if h.magic != MAGIC {
            return Err(err(format!("bad magic {:#018x}", h.magic)));
        }
        if h.abi_major != ABI_MAJOR {
            return Err(err(format!(
                "ABI major version {} (this library reads {ABI_MAJOR})",
                h.abi_major
            )));
        }
        if (h.header_size as usize) < size_of::<Header>() {
            return Err(err(format!("header of {} bytes", h.header_size)));
        }
        if h.region_len > mapped_len {
            return Err(err(format!(
                "region of {} bytes, {mapped_len} mapped",
                h.region_len
            )));
        }
        let n = h.nworkers as usize;
        let plan = MainPlan::new(&h.config, n, 1).map_err(|e| err(e.0))?;
        for (i, w) in plan.workers.iter().enumerate() {
            let info = &h.workers[i];
            if info.slots_off != w.slots_off
                || info.ring_meta_off != w.ring_meta_off
                || info.chunk_map_off != w.chunk_map_off
                || info.chunks_off != w.chunks_off
                || info.pktlog_off != w.pktlog_off
            {
                return Err(err(format!("worker {i}'s offsets do not match its sizes")));
            }
            if w.end > h.region_len {
                return Err(err(format!("worker {i} ends past the region")));
            }
        }
        Ok(plan)
    }
}

/// The event region of one analyzer: a ring per worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventPlan {
    /// Records per ring (a power of two).
    pub capacity: u64,
    /// Workers.
    pub nworkers: usize,
    /// Bytes of one worker's ring (header and records), page-aligned.
    pub stride: u64,
    /// Total bytes.
    pub len: u64,
}

impl EventPlan {
    /// The event region for `nworkers` rings of `capacity` records.
    pub fn new(capacity: u64, nworkers: usize) -> Result<EventPlan, PlanError> {
        if !capacity.is_power_of_two() || !(2..=1 << 24).contains(&capacity) {
            return Err(PlanError(format!(
                "event ring of {capacity} records (a power of two from 2 to 2^24)"
            )));
        }
        if nworkers == 0 || nworkers > MAX_WORKERS {
            return Err(PlanError(format!("{nworkers} workers")));
        }
        let stride = align_up(
            size_of::<EventRingHeader>() as u64 + capacity * size_of::<EventSlot>() as u64,
            PART_ALIGN,
        )
        .expect("bounded sizes");
        Ok(EventPlan {
            capacity,
            nworkers,
            stride,
            len: stride * nworkers as u64,
        })
    }

    /// Offset of worker `w`'s ring header; its records follow it.
    pub fn ring_off(&self, w: usize) -> u64 {
        self.stride * w as u64
    }

    /// Offset of worker `w`'s first record.
    pub fn records_off(&self, w: usize) -> u64 {
        self.ring_off(w) + size_of::<EventRingHeader>() as u64
    }
}

/// Bytes of an analyzer page region.
pub const PAGE_LEN: u64 = {
    let n = size_of::<AnalyzerPage>() as u64;
    n.div_ceil(PART_ALIGN) * PART_ALIGN
};

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn cfg() -> ConfigInfo {
        ConfigInfo {
            chunk_size: 4096,
            buffers_per_worker: 8,
            chunks_per_worker: 8,
            chunk_map_len: 4,
            slots_per_worker: 100,
            pktlog_entries: 16,
            pktlog_bytes: 65536,
            event_ring_len: 1024,
            ..Default::default()
        }
    }

    #[test]
    fn parts_are_disjoint_aligned_and_in_order() {
        let p = MainPlan::new(&cfg(), 3, 2 << 20).unwrap();
        let mut prev = size_of::<Header>() as u64;
        for w in &p.workers {
            for off in [
                w.slots_off,
                w.ring_meta_off,
                w.chunk_map_off,
                w.chunks_off,
                w.pktlog_off,
            ] {
                assert_eq!(off % PART_ALIGN, 0);
                assert!(off >= prev);
                prev = off;
            }
            assert!(w.chunk_map_off + 8 * 4 * 4 <= w.chunks_off);
            assert!(w.chunks_off + 8 * 4096 <= w.pktlog_off);
            assert!(w.pktlog_bytes_off + 65536 <= w.end);
            prev = w.end;
        }
        assert_eq!(p.len % (2 << 20), 0);
        assert!(p.len >= prev);
    }

    #[test]
    fn bad_sizes_are_refused() {
        let mut c = cfg();
        c.chunk_size = 3000;
        assert!(MainPlan::new(&c, 1, 4096).is_err());
        let mut c = cfg();
        c.chunk_map_len = 3;
        assert!(MainPlan::new(&c, 1, 4096).is_err());
        assert!(MainPlan::new(&cfg(), 0, 4096).is_err());
        assert!(MainPlan::new(&cfg(), MAX_WORKERS + 1, 4096).is_err());
        let mut c = cfg();
        c.chunks_per_worker = u64::MAX / 2;
        assert!(MainPlan::new(&c, 1, 4096).is_err());
        // Sizes whose products fit but whose sums do not: refused, not a panic.
        for edit in [
            (|c: &mut ConfigInfo| c.slots_per_worker = u64::MAX / 192) as fn(&mut ConfigInfo),
            |c| c.chunk_map_len = 1 << 58,
            |c| c.pktlog_entries = u64::MAX / 64,
            |c| {
                c.chunk_size = 1 << 31;
                c.chunks_per_worker = (1 << 32) - 2;
            },
        ] {
            let mut c = cfg();
            edit(&mut c);
            let e = MainPlan::new(&c, 3, 4096).unwrap_err();
            assert!(e.0.contains("overflow") || e.0.contains("32-bit"), "{e}");
        }
        assert!(EventPlan::new(1000, 1).is_err());
        assert!(EventPlan::new(1024, 0).is_err());
    }

    #[test]
    fn event_rings_do_not_overlap() {
        let p = EventPlan::new(64, 4).unwrap();
        for w in 0..4 {
            let end = p.records_off(w) + 64 * size_of::<EventSlot>() as u64;
            assert!(end <= p.ring_off(w + 1) || w == 3);
            assert!(end <= p.len);
        }
    }
}
