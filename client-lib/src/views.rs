//! One worker's parts of the main region, viewed once: for the paths that run on every event
//! and every `peek` (the slot read, the chunk-map lookup, the copy, the run loop's prefetches),
//! which would otherwise find and bound-check each part again through [`Regions`] on every
//! call.
//!
//! The views are slices [`Regions`] handed out (checked there), kept for as long as the borrow
//! of the regions lasts: a run of the event loop, or one [`crate::Mos::with_ctx`]. What the
//! sensor hands out later (a slot, buffer or chunk number) is still checked on every use.

use crate::error::{Errno, Error, Result};
use crate::regions::{Copied, Regions};
use shm_layout::layout::{FlowSlot, RingMetaSlot};
use std::sync::atomic::{AtomicU32, Ordering};

/// Worker `w`'s flow slots, ring metadata and chunk maps, and where its chunks lie.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WorkerView<'a> {
    regions: &'a Regions,
    w: usize,
    /// The flow slots.
    pub slots: &'a [FlowSlot],
    /// The ring metadata, one per buffer.
    pub metas: &'a [RingMetaSlot],
    /// Every buffer's chunk map, `map_len` entries each.
    maps: &'a [AtomicU32],
    /// Entries per chunk map (a power of two).
    map_len: usize,
    /// Chunk size (a power of two) and its log2.
    chunk_size: u64,
    chunk_shift: u32,
    /// Chunks of the worker, and the main-region offset of the first.
    chunks: u64,
    chunks_off: u64,
}

impl<'a> WorkerView<'a> {
    /// Views every worker's parts ([`Regions::new`] checked that each can be viewed).
    pub fn all(regions: &'a Regions) -> Vec<WorkerView<'a>> {
        (0..regions.nworkers)
            .map(|w| WorkerView::of(regions, w).expect("checked in Regions::new"))
            .collect()
    }

    fn of(regions: &'a Regions, w: usize) -> Result<WorkerView<'a>> {
        let cfg = &regions.config;
        Ok(WorkerView {
            regions,
            w,
            slots: regions.slots(w)?,
            metas: regions.ring_metas(w)?,
            maps: regions.chunk_maps(w)?,
            // Both fit a usize: the maps (`buffers_per_worker * chunk_map_len` entries) do.
            map_len: cfg.chunk_map_len as usize,
            chunk_size: cfg.chunk_size,
            chunk_shift: cfg.chunk_size.trailing_zeros(),
            chunks: cfg.chunks_per_worker,
            chunks_off: regions.chunks_off(w)?,
        })
    }

    /// Buffer `ring`'s chunk map (`None` for a buffer the worker does not have).
    #[inline]
    fn map(&self, ring: u32) -> Option<&'a [AtomicU32]> {
        let start = (ring as usize).checked_mul(self.map_len)?;
        self.maps.get(start..)?.get(..self.map_len)
    }

    /// Copies stream offsets `[offset, offset + dst.len())` of the side that uses buffer
    /// `buffer` through its chunk map, each map entry loaded with acquire before its chunk's
    /// bytes; an entry that names no chunk stops the copy ([`Copied::Torn`]). The caller
    /// validates the copy afterwards, whatever this returns. A buffer or a read out of range
    /// is `EPROTO`; an entry out of range is a torn copy, never a read outside the region.
    #[inline]
    pub fn copy_stream(&self, buffer: u32, offset: u64, dst: &mut [u8]) -> Result<Copied> {
        let len = dst.len() as u64;
        let map = match self.map(buffer) {
            Some(m) if len <= self.regions.span && offset.checked_add(len).is_some() => m,
            _ => return Err(out_of_range(self.w, buffer, len, offset)),
        };
        let mut done = 0;
        while done < dst.len() {
            let o = offset + done as u64;
            let within = o & (self.chunk_size - 1);
            let n = (self.chunk_size - within).min((dst.len() - done) as u64) as usize;
            let entry = map[((o >> self.chunk_shift) as usize) & (self.map_len - 1)]
                .load(Ordering::Acquire);
            if u64::from(entry) >= self.chunks {
                return Ok(Copied::Torn { offset: o, entry });
            }
            // Inside the region: the worker's chunks end inside it (checked when mapped).
            let at = self.chunks_off + u64::from(entry) * self.chunk_size + within;
            let ok = usize::try_from(at)
                .is_ok_and(|at| self.regions.read_main(at, &mut dst[done..done + n]));
            if !ok {
                return Err(outside(self.w, entry));
            }
            done += n;
        }
        Ok(Copied::Whole)
    }

    /// Prefetches flow slot `slot` (out of range: nothing).
    #[inline]
    pub fn prefetch_slot(&self, slot: u32) {
        if let Some(s) = self.slots.get(slot as usize) {
            shm_layout::region::prefetch_value(s);
        }
    }

    /// Prefetches what a copy of stream offsets `[start, end)` of side `side` of slot `slot`
    /// will read first: the head of the metadata of the ring the side names now, and the chunk
    /// map entries of those offsets. The ring index is read without the seqlock (a hint): it is
    /// returned for [`WorkerView::prefetch_stream`], `None` when it names no ring.
    #[inline]
    pub fn prefetch_ring(&self, slot: u32, side: usize, start: u64, end: u64) -> Option<u32> {
        let s = self.slots.get(slot as usize)?;
        let ring = shm_layout::flow::side_ring_hint(s, side);
        let m = self.metas.get(ring as usize)?;
        // `ngaps` and `unknown_below`.
        shm_layout::region::prefetch_bytes(m.words.as_ptr().cast::<u8>(), 16);
        let map = self.map(ring)?;
        let mut o = start;
        while o < end {
            let e = &map[((o >> self.chunk_shift) as usize) & (self.map_len - 1)];
            shm_layout::region::prefetch_value(e);
            o = (o | (self.chunk_size - 1)).saturating_add(1);
        }
        Some(ring)
    }

    /// Prefetches the bytes of stream offsets `[start, end)` in buffer `ring`, through chunk
    /// map entries read without validation (a hint: an entry that names no chunk is skipped).
    #[inline]
    pub fn prefetch_stream(&self, ring: u32, start: u64, end: u64) {
        let Some(map) = self.map(ring) else {
            return;
        };
        let size = self.chunk_size;
        let mut o = start;
        while o < end {
            let within = o & (size - 1);
            let n = (size - within).min(end - o);
            let entry = map[((o >> self.chunk_shift) as usize) & (self.map_len - 1)]
                .load(Ordering::Relaxed);
            if u64::from(entry) < self.chunks {
                let at = self.chunks_off + u64::from(entry) * size + within;
                if let (Ok(at), Ok(n)) = (usize::try_from(at), usize::try_from(n)) {
                    self.regions.prefetch_main(at, n);
                }
            }
            o += n;
        }
    }
}

/// `EPROTO` for a copy from a buffer the worker does not have, or of an impossible range.
#[cold]
fn out_of_range(w: usize, buffer: u32, len: u64, offset: u64) -> Error {
    Error::new(
        Errno::EPROTO,
        format!(
            "buffer {buffer} of worker {w} (or a read of {len} bytes at offset {offset}) is out of range"
        ),
    )
}

/// `EPROTO` for a chunk whose bytes would lie outside the main region.
#[cold]
fn outside(w: usize, entry: u32) -> Error {
    Error::new(
        Errno::EPROTO,
        format!("chunk {entry} of worker {w} lies outside the main region"),
    )
}
