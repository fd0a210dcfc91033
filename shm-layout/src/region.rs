//! Mapping a shared region and viewing its parts as the [`layout`](crate::layout) types.
//!
//! Both sides map regions through [`Mapping`]: the sensor read-write, analyzers read-only (the
//! kernel refuses them write access; [`Mapping::probe_write`] shows it). Typed views hand out
//! `&T` only for types made of atomics or of plain integers that nobody writes while the region
//! is shared. Byte ranges the writer fills with payload (stream rings, the packet log's frames)
//! are taken once as `&mut [u8]`; the mapping remembers them so that no typed view can overlap
//! one.

use core::mem::{align_of, size_of};
use core::ptr::NonNull;
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::layout::{
    AnalyzerPage, ConsumerIndex, EventRingHeader, EventSlot, FlowSlot, Header, PktLogEntry,
    PktLogHeader, RingMetaSlot, TunnelSlot, WorkerInfo,
};

/// Types that may be viewed in a shared region through `&T`.
///
/// # Safety
///
/// Every bit pattern must be a valid value, and every field must be either an atomic or a plain
/// integer that no process writes while another can read it (values written before a region is
/// shared).
pub unsafe trait Shared {}

// SAFETY: integer and atomic fields only; the plain fields are written by the sensor through
// `&mut` before any analyzer maps the region.
unsafe impl Shared for Header {}
// SAFETY: see above.
unsafe impl Shared for WorkerInfo {}
// SAFETY: see above (atomics only).
unsafe impl Shared for FlowSlot {}
// SAFETY: see above (atomics only).
unsafe impl Shared for RingMetaSlot {}
// SAFETY: see above (atomics only).
unsafe impl Shared for TunnelSlot {}
// SAFETY: see above (atomics, and `capacity` written before sharing).
unsafe impl Shared for EventRingHeader {}
// SAFETY: see above (atomics only).
unsafe impl Shared for EventSlot {}
// SAFETY: see above (atomics only).
unsafe impl Shared for AnalyzerPage {}
// SAFETY: see above (atomics only).
unsafe impl Shared for ConsumerIndex {}
// SAFETY: see above (atomics only).
unsafe impl Shared for PktLogHeader {}
// SAFETY: see above (atomics only).
unsafe impl Shared for PktLogEntry {}
// SAFETY: an atomic, valid for any bit pattern (the chunk maps).
unsafe impl Shared for core::sync::atomic::AtomicU32 {}

/// Hints the processor to bring the cache lines of `len` bytes from `p` into its caches
/// ([`Mapping::prefetch`] for bytes of a mapping). A prefetch hint reads nothing the program
/// sees and never faults, whatever the address; on targets without one it does nothing.
#[inline]
pub fn prefetch_bytes(p: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        const LINE: usize = 64;
        let first = (p as usize) & !(LINE - 1);
        let last = (p as usize).saturating_add(len.max(1) - 1);
        let mut a = first;
        while a <= last {
            // SAFETY: `prefetcht0` is part of SSE, which every x86_64 target has; a prefetch of
            // any address is harmless (no fault, no visible read).
            #[allow(unused_unsafe)]
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    a as *const i8,
                );
            }
            a += LINE;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

/// [`prefetch_bytes`] for the bytes of a value (e.g. a flow slot a reader will copy soon).
#[inline]
pub fn prefetch_value<T>(v: &T) {
    prefetch_bytes((v as *const T).cast::<u8>(), size_of::<T>());
}

/// A shared mapping of a file descriptor's first `len` bytes.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    /// Byte ranges handed out as `&mut [u8]`.
    taken: Mutex<Vec<Range<usize>>>,
    /// Whether `taken` is non-empty (lets typed views skip the lock on mappings that hand out
    /// no bytes, such as event regions).
    any_taken: AtomicBool,
    /// A typed view was handed out: from then on no bytes may be taken (a taken range could
    /// otherwise alias a view made before it).
    viewed: AtomicBool,
}

// SAFETY: the mapping is plain memory valid for the `Mapping`'s life; shared access goes
// through `Shared` types (atomics) or byte copies, and exclusive access through ranges taken
// once and recorded in `taken`.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

/// What became of attempts to get write access to a read-only mapping.
#[derive(Debug)]
pub struct WriteProbe {
    /// `mprotect(PROT_READ | PROT_WRITE)` on the mapping.
    pub mprotect: io::Result<()>,
    /// A new `mmap(PROT_READ | PROT_WRITE, MAP_SHARED)` of the same descriptor.
    pub mmap: io::Result<()>,
}

impl Mapping {
    /// Maps `len` bytes of `fd` shared, read-write or read-only. `populate` pre-faults the pages
    /// (`MAP_POPULATE`), so a hugepage shortage shows here rather than as a later fault.
    pub fn map(fd: BorrowedFd<'_>, len: usize, writable: bool, populate: bool) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let flags = libc::MAP_SHARED | if populate { libc::MAP_POPULATE } else { 0 };
        // SAFETY: a fresh mapping at an address the kernel picks; no existing memory is
        // affected. The result is checked before use.
        let p = unsafe { libc::mmap(core::ptr::null_mut(), len, prot, flags, fd.as_raw_fd(), 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: NonNull::new(p.cast::<u8>()).expect("mmap returned null"),
            len,
            writable,
            taken: Mutex::new(Vec::new()),
            any_taken: AtomicBool::new(false),
            viewed: AtomicBool::new(false),
        })
    }

    /// Bytes mapped.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: [`Mapping::map`] refuses 0 bytes).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the mapping is writable.
    #[inline]
    pub fn writable(&self) -> bool {
        self.writable
    }

    fn check<T>(&self, off: usize, n: usize, shared_view: bool) -> Option<Range<usize>> {
        let bytes = size_of::<T>().checked_mul(n)?;
        let end = off.checked_add(bytes)?;
        if end > self.len || !(self.ptr.as_ptr() as usize + off).is_multiple_of(align_of::<T>()) {
            return None;
        }
        let r = off..end;
        if shared_view && !self.viewed.load(Ordering::Relaxed) {
            self.viewed.store(true, Ordering::Release);
        }
        if !self.any_taken.load(Ordering::Acquire) {
            return Some(r);
        }
        let taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        if taken.iter().any(|t| t.start < r.end && r.start < t.end) {
            return None;
        }
        Some(r)
    }

    /// A `&T` at byte offset `off`; `None` if it would not fit, is misaligned, or overlaps a
    /// range taken as bytes.
    pub fn get<T: Shared>(&self, off: usize) -> Option<&T> {
        self.check::<T>(off, 1, true)?;
        // SAFETY: in bounds and aligned (checked), valid for any bit pattern and safe to share
        // (`Shared`), not overlapping any `&mut [u8]` handed out (checked); lives as long as
        // `self`.
        Some(unsafe { &*self.ptr.as_ptr().add(off).cast::<T>() })
    }

    /// A `&[T]` of `n` elements at byte offset `off`, under the same checks as [`Mapping::get`].
    pub fn slice<T: Shared>(&self, off: usize, n: usize) -> Option<&[T]> {
        self.check::<T>(off, n, true)?;
        // SAFETY: as in `get`, for `n` consecutive elements.
        Some(unsafe { core::slice::from_raw_parts(self.ptr.as_ptr().add(off).cast::<T>(), n) })
    }

    /// A `&mut T` at `off`, for initialising a region before it is shared.
    pub fn get_mut<T: Shared>(&mut self, off: usize) -> Option<&mut T> {
        if !self.writable {
            return None;
        }
        self.check::<T>(off, 1, false)?;
        // SAFETY: as in `get`; `&mut self` guarantees no other view of the mapping exists in
        // this process, and the region is not shared yet (the caller's protocol).
        Some(unsafe { &mut *self.ptr.as_ptr().add(off).cast::<T>() })
    }

    /// Takes `[off, off + len)` as bytes the caller alone writes (stream rings, frame bytes).
    /// Each range can be taken once, and only before the first shared typed view
    /// ([`Mapping::get`], [`Mapping::slice`]) of the mapping; `None` if it is out of bounds,
    /// overlaps a taken range, the mapping is read-only, or a view was made already.
    ///
    /// Other processes read these bytes while the caller writes them: readers copy and then
    /// validate, as the crate's protocols require.
    #[allow(clippy::mut_from_ref)]
    pub fn take_bytes(&self, off: usize, len: usize) -> Option<&mut [u8]> {
        if !self.writable {
            return None;
        }
        let end = off.checked_add(len)?;
        if end > self.len {
            return None;
        }
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        if self.viewed.load(Ordering::Acquire) || taken.iter().any(|t| t.start < end && off < t.end)
        {
            return None;
        }
        taken.push(off..end);
        self.any_taken.store(true, Ordering::Release);
        // SAFETY: in bounds (checked); the range was never handed out before and no typed view
        // may overlap it from now on (both checked under the lock), so this is the only
        // reference to these bytes in this process for the mapping's life.
        Some(unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr().add(off), len) })
    }

    /// Copies `dst.len()` bytes from offset `off`; `false` (nothing copied) if out of bounds.
    ///
    /// The bytes may be written by another process during the copy. Formally that is a data
    /// race, which Rust's memory model leaves undefined; we rely on what it is in practice, a
    /// plain copy of whatever the bytes were, and every caller validates the copy afterwards
    /// (seqlock stamp, ring head) and discards a torn one. crossbeam's `AtomicCell` makes the
    /// same trade for its seqlock reads.
    #[inline]
    pub fn read_bytes(&self, off: usize, dst: &mut [u8]) -> bool {
        let Some(end) = off.checked_add(dst.len()) else {
            return false;
        };
        if end > self.len {
            return false;
        }
        // SAFETY: the source range is inside the mapping (checked) and `dst` is a distinct
        // `&mut` slice of this process; see above for concurrent writers.
        unsafe {
            core::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), dst.as_mut_ptr(), dst.len());
        }
        true
    }

    /// Hints the processor to bring the cache lines of `[off, off + len)` (cut to the mapping)
    /// into its caches: for a reader that knows which bytes it will copy soon and has other
    /// work to do meanwhile. Reads and writes nothing (a prefetch never faults and has no
    /// visible effect), so it needs no validation.
    #[inline]
    pub fn prefetch(&self, off: usize, len: usize) {
        let end = off.saturating_add(len).min(self.len);
        if off >= end {
            return;
        }
        // SAFETY: `off < end <= len`: the pointer is inside the mapping.
        prefetch_bytes(unsafe { self.ptr.as_ptr().add(off) }, end - off);
    }

    /// Tries to get write access to this mapping and to `fd` (the descriptor it maps): for a
    /// read-only mapping of a read-only descriptor both attempts must fail with `EACCES`.
    pub fn probe_write(&self, fd: BorrowedFd<'_>) -> WriteProbe {
        // SAFETY: changes protection of exactly this mapping's pages; if it succeeded on a
        // read-only mapping the pages would become writable, which is what the probe reports
        // (nothing is written through them).
        let rc = unsafe {
            libc::mprotect(
                self.ptr.as_ptr().cast(),
                self.len,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        let mprotect = if rc == 0 {
            // Put the protection back: a probe must not leave the mapping writable.
            // SAFETY: as above, restoring read-only protection.
            unsafe { libc::mprotect(self.ptr.as_ptr().cast(), self.len, libc::PROT_READ) };
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        };
        let mmap = Mapping::map(fd, self.len, true, false).map(drop);
        WriteProbe { mprotect, mmap }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value owns; every reference into it borrows
        // `self`, so none outlives this call.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
