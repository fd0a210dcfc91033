//! Sleeping and waking on an analyzer page's `waiting` word, a futex shared by the two
//! processes that map the page.
//!
//! An analyzer whose rings are empty sets the word to 1 and sleeps on it (with a timeout). A
//! sensor worker that has just pushed events to it wakes it when it finds the word set. The
//! sensor reads the word without a fence, so in a rare interleaving it misses a wake-up. The
//! analyzer's timeout bounds what that costs, and the sensor trusts nothing in the word: any
//! value only decides whether it makes one extra system call.

use crate::sync::AtomicU64;
use core::time::Duration;

/// The 32-bit half of `word` that holds its low bits: what a futex compares and sleeps on.
#[cfg(not(loom))]
fn low_half(word: &AtomicU64) -> *const u32 {
    let p = (word as *const AtomicU64).cast::<u32>();
    if cfg!(target_endian = "little") {
        p
    } else {
        p.wrapping_add(1)
    }
}

/// Sleeps while `word` holds 1, for at most `timeout`. Returns when woken, when the timeout
/// passes, on a signal, or at once if the word is not 1.
pub fn sleep_while_waiting(word: &AtomicU64, timeout: Duration) {
    #[cfg(not(loom))]
    {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: FUTEX_WAIT only reads the aligned 32-bit word at `low_half(word)`, which lies
        // inside `word` (an 8-byte aligned atomic that outlives the call), compares it with 1
        // and sleeps; it writes no memory of this process. `ts` lives across the call. Without
        // FUTEX_PRIVATE_FLAG the futex is keyed by the shared page, so the sensor's wake on its
        // own mapping of the page reaches it.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                low_half(word),
                libc::FUTEX_WAIT,
                1u32,
                &ts as *const libc::timespec,
                core::ptr::null::<u32>(),
                0u32,
            );
        }
    }
    #[cfg(loom)]
    {
        let _ = (word, timeout);
    }
}

/// Wakes whoever sleeps on `word` (one system call).
pub fn wake(word: &AtomicU64) {
    #[cfg(not(loom))]
    {
        // SAFETY: FUTEX_WAKE reads nothing and writes nothing at the address; the kernel only
        // uses it (inside `word`, aligned, mapped for the call's duration) to find the sleepers
        // of that shared page.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                low_half(word),
                libc::FUTEX_WAKE,
                i32::MAX,
                core::ptr::null::<libc::timespec>(),
                core::ptr::null::<u32>(),
                0u32,
            );
        }
    }
    #[cfg(loom)]
    {
        let _ = word;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn a_word_that_is_not_1_does_not_sleep() {
        let w = AtomicU64::new(0);
        let t = Instant::now();
        sleep_while_waiting(&w, Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn a_sleeper_times_out_and_a_wake_ends_its_sleep() {
        let w = Arc::new(AtomicU64::new(1));
        let t = Instant::now();
        sleep_while_waiting(&w, Duration::from_millis(20));
        assert!(t.elapsed() >= Duration::from_millis(15), "timed out early");

        let w2 = w.clone();
        let sleeper = std::thread::spawn(move || {
            let t = Instant::now();
            sleep_while_waiting(&w2, Duration::from_secs(30));
            t.elapsed()
        });
        // Wake until the sleeper is gone (it may not sleep yet at the first wake).
        while !sleeper.is_finished() {
            std::thread::sleep(Duration::from_millis(5));
            wake(&w);
        }
        let slept = sleeper.join().unwrap();
        assert!(
            slept < Duration::from_secs(20),
            "slept {slept:?} despite the wakes"
        );
        w.store(0, Ordering::Relaxed);
    }
}
