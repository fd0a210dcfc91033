//! Conversions between the published value types and the atomic words that hold them.
//!
//! Each type listed here is `#[repr(C)]`, made only of unsigned integers and arrays of them,
//! with every padding byte an explicit field, and a multiple of 8 bytes long; every bit pattern
//! is a valid value. That is what makes the two copies below sound.

use crate::layout::{EventRecord, FlowData, PktInfo, RingMeta, SideData, TunnelData};
use crate::sync::AtomicU64;
use core::mem::size_of;

/// A value type that is published as `WORDS` atomic words.
///
/// # Safety
///
/// Implementors must be `#[repr(C)]`, `Copy`, exactly `WORDS * 8` bytes, contain no implicit
/// padding, and accept every bit pattern (only integer fields).
pub unsafe trait Words: Copy {
    /// The number of 64-bit words.
    const WORDS: usize;

    /// The value as native-endian words.
    #[inline]
    fn to_words(&self, out: &mut [u64]) {
        assert_eq!(out.len(), Self::WORDS);
        // SAFETY: `Self` is `WORDS * 8` bytes without padding (the trait's contract), so its
        // bytes are initialised and fit `out`; `out` is a distinct `&mut` slice.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (self as *const Self).cast::<u8>(),
                out.as_mut_ptr().cast::<u8>(),
                size_of::<Self>(),
            );
        }
    }

    /// The value the words hold.
    #[inline]
    fn from_words(words: &[u64]) -> Self {
        assert_eq!(words.len(), Self::WORDS);
        let mut v = core::mem::MaybeUninit::<Self>::uninit();
        // SAFETY: `words` holds `WORDS * 8 == size_of::<Self>()` initialised bytes, and every
        // bit pattern is a valid `Self` (the trait's contract).
        unsafe {
            core::ptr::copy_nonoverlapping(
                words.as_ptr().cast::<u8>(),
                v.as_mut_ptr().cast::<u8>(),
                size_of::<Self>(),
            );
            v.assume_init()
        }
    }

    /// Word `i` of the value (native-endian), read straight from the value.
    #[inline]
    fn word(&self, i: usize) -> u64 {
        assert!(i < Self::WORDS);
        // SAFETY: `Self` is `WORDS * 8` bytes without padding (the trait's contract) and
        // `i < WORDS`, so the eight bytes read are inside the value and initialised; the read
        // is unaligned-safe whatever `Self`'s alignment.
        unsafe { (self as *const Self).cast::<u64>().add(i).read_unaligned() }
    }

    /// Stores the value into atomic words (relaxed; the caller's protocol orders them), word
    /// by word straight from the value: no staging copy, so a store costs what its own words
    /// cost whatever the largest published type.
    #[inline]
    fn store(&self, dst: &[AtomicU64]) {
        assert_eq!(dst.len(), Self::WORDS);
        for (i, d) in dst.iter().enumerate() {
            d.store(self.word(i), crate::sync::Ordering::Relaxed);
        }
    }

    /// Loads a value from atomic words (relaxed; the caller validates it); the same as
    /// [`load_direct`].
    #[inline]
    fn load(src: &[AtomicU64]) -> Self {
        load_direct(src)
    }
}

/// Loads a value from atomic words (relaxed; the caller validates it), word by word straight
/// into the value, with no staging copy.
#[inline]
pub fn load_direct<T: Words>(src: &[AtomicU64]) -> T {
    assert_eq!(src.len(), T::WORDS);
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    let dst = v.as_mut_ptr().cast::<u64>();
    for (i, w) in src.iter().enumerate() {
        // SAFETY: `T` is `WORDS * 8` bytes (the trait's contract) and `i < WORDS`, so the
        // write is inside `v`; it is unaligned-safe whatever `T`'s alignment.
        unsafe {
            dst.add(i)
                .write_unaligned(w.load(crate::sync::Ordering::Relaxed))
        };
    }
    // SAFETY: the loop wrote all `WORDS * 8` bytes, and every bit pattern is a valid `T` (the
    // trait's contract).
    unsafe { v.assume_init() }
}

// SAFETY: `FlowData` and `SideData` are repr(C) integer-only structs with explicit padding,
// 184 bytes (pinned in `layout`).
unsafe impl Words for FlowData {
    const WORDS: usize = size_of::<FlowData>() / 8;
}
// SAFETY: repr(C), integers only (four u64, five u32, two u8 and an explicit 2-byte pad),
// 56 bytes (asserted below).
unsafe impl Words for SideData {
    const WORDS: usize = size_of::<SideData>() / 8;
}
// SAFETY: repr(C), integers only, padding explicit, 48 bytes (pinned in `layout`).
unsafe impl Words for TunnelData {
    const WORDS: usize = size_of::<TunnelData>() / 8;
}
// SAFETY: repr(C), integers only, padding explicit, 912 bytes (pinned in `layout`).
unsafe impl Words for RingMeta {
    const WORDS: usize = size_of::<RingMeta>() / 8;
}
// SAFETY: repr(C), integers only, padding explicit, 96 bytes (pinned in `layout`).
unsafe impl Words for EventRecord {
    const WORDS: usize = size_of::<EventRecord>() / 8;
}
// SAFETY: repr(C), integers only, padding explicit, 56 bytes (pinned in `layout`).
unsafe impl Words for PktInfo {
    const WORDS: usize = size_of::<PktInfo>() / 8;
}

const _: () = {
    assert!(size_of::<FlowData>().is_multiple_of(8) && size_of::<FlowData>() / 8 <= 128);
    assert!(size_of::<RingMeta>().is_multiple_of(8) && size_of::<RingMeta>() / 8 <= 128);
    assert!(size_of::<EventRecord>().is_multiple_of(8));
    assert!(size_of::<SideData>() == 56);
    assert!(size_of::<PktInfo>().is_multiple_of(8));
};

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::layout::FragRec;

    #[test]
    fn flow_data_round_trips_through_words() {
        let mut d = FlowData {
            generation: 7,
            flags: 3,
            serial: 99,
            port: [1234, 80],
            start_ns: 5,
            last_ns: 6,
            ..Default::default()
        };
        d.addr[0][..4].copy_from_slice(&[10, 0, 0, 1]);
        d.sides[1] = SideData {
            head: 1,
            tail: 2,
            lost: 3,
            ring: 4,
            state: 5,
            ..Default::default()
        };
        let words: Vec<AtomicU64> = (0..FlowData::WORDS).map(|_| AtomicU64::new(0)).collect();
        d.store(&words);
        assert_eq!(FlowData::load(&words), d);
    }

    #[test]
    fn store_and_load_direct_go_word_by_word() {
        let rec = EventRecord {
            slot: 9,
            generation: 4,
            tail: 1 << 33,
            ts_ns: 12345,
            ..Default::default()
        };
        let words: Vec<AtomicU64> = (0..EventRecord::WORDS).map(|_| AtomicU64::new(0)).collect();
        rec.store(&words);
        assert_eq!(load_direct::<EventRecord>(&words), rec);
        // What `store` wrote, word by word, is what `to_words` makes and `word` reads.
        let mut staged = [0u64; EventRecord::WORDS];
        rec.to_words(&mut staged);
        for (i, w) in words.iter().enumerate() {
            assert_eq!(
                w.load(crate::sync::Ordering::Relaxed),
                staged[i],
                "word {i}"
            );
            assert_eq!(rec.word(i), staged[i], "word {i}");
        }
        assert_eq!(EventRecord::from_words(&staged), rec);
        let mut d = FlowData {
            generation: 7,
            serial: 99,
            ..Default::default()
        };
        d.sides[1].tail = 5;
        let words: Vec<AtomicU64> = (0..FlowData::WORDS).map(|_| AtomicU64::new(0)).collect();
        d.store(&words);
        assert_eq!(load_direct::<FlowData>(&words), d);
    }

    #[test]
    fn ring_meta_round_trips_through_words() {
        let mut m = RingMeta {
            nfrags: 2,
            unknown_below: 77,
            ..Default::default()
        };
        m.frags[1] = FragRec {
            start: 1 << 40,
            len: 9,
            _pad: 0,
        };
        let mut w = vec![0u64; RingMeta::WORDS];
        m.to_words(&mut w);
        assert_eq!(RingMeta::from_words(&w), m);
    }
}

/// `n` atomics of value 0 in memory obtained zeroed from the allocator, so that a large table
/// costs no page until an entry is written (`(0..n).map(|_| AtomicU32::new(0)).collect()`
/// writes, and so faults in, every page at once).
pub fn zeroed_atomic_u32s(n: usize) -> Vec<core::sync::atomic::AtomicU32> {
    let v = core::mem::ManuallyDrop::new(vec![0u32; n]);
    let (ptr, len, cap) = (v.as_ptr().cast_mut(), v.len(), v.capacity());
    // SAFETY: `AtomicU32` has the size, alignment and bit validity of `u32` (documented in
    // `core::sync::atomic`), so the allocation `vec!` made for `cap` `u32`s is one for `cap`
    // `AtomicU32`s, with the same layout for the allocator when it is freed; the first `len`
    // are initialized (to 0). `v` is never dropped, so the allocation has one owner.
    unsafe { Vec::from_raw_parts(ptr.cast::<core::sync::atomic::AtomicU32>(), len, cap) }
}

#[cfg(test)]
mod zeroed_tests {
    #[test]
    fn zeroed_atomics_read_zero_and_take_stores() {
        use core::sync::atomic::Ordering;
        let v = super::zeroed_atomic_u32s(1000);
        assert_eq!(v.len(), 1000);
        assert!(v.iter().all(|a| a.load(Ordering::Relaxed) == 0));
        v[999].store(7, Ordering::Relaxed);
        assert_eq!(v[999].load(Ordering::Relaxed), 7);
        assert!(super::zeroed_atomic_u32s(0).is_empty());
    }
}
