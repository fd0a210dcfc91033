//! The atomics the protocols use: `std`'s, or loom's when the crate is built with `--cfg loom`
//! so that the model checker explores every interleaving of the seqlock and ring algorithms.
//!
//! Waiting goes through [`spin_loop`] and [`yield_now`] too: under loom a reader that spins
//! must hand control to the model's scheduler, or the writer it waits for never runs.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64, Ordering};

/// A load by the only thread that ever stores to `a`: it reads back its own last store.
///
/// The same relaxed load in a normal build. Under loom it is an unsynchronised load, which
/// loom checks (every store to `a` must happen before it, so a second writer is caught) and
/// which does not hide the readers' earlier loads from loom's race detection: a plain load
/// there makes loom skip interleavings (loom issues #166 and #392).
#[inline]
pub(crate) fn own_load(a: &AtomicU64) -> u64 {
    #[cfg(loom)]
    {
        // SAFETY: only the calling thread stores to `a` (the callers' single-writer rule), so
        // no store races with this load; loom verifies that claim on every execution.
        unsafe { a.unsync_load() }
    }
    #[cfg(not(loom))]
    {
        a.load(Ordering::Relaxed)
    }
}

/// A busy-wait hint between two polls of a word another thread writes.
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// Gives the CPU away after spinning for a while.
#[inline]
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

/// Waits a little before retry `i` of a read: spins first, then yields.
#[inline]
pub(crate) fn backoff(i: u32) {
    if i < 64 {
        spin_loop();
    } else {
        yield_now();
    }
}
