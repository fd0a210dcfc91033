//! The seqlock that guards each flow slot (and the ring metadata published with it).
//!
//! One writer (the worker that owns the slot), any number of readers in other processes. The
//! stamp is odd while the writer changes the guarded words. A reader copies the words with
//! relaxed atomic loads between two reads of the stamp and keeps the copy only if the stamp was
//! even and unchanged; otherwise it retries. Because every guarded word is itself an atomic,
//! a torn copy is a defined value that the stamp check throws away, never undefined behaviour.
//!
//! Writer: `stamp := s+1` (relaxed), release fence, stores, `stamp := s+2` (release).
//! Reader: `s1 := stamp` (acquire), loads, acquire fence, `s2 := stamp` (relaxed), keep if
//! `s1 == s2` and `s1` is even. This is the classic pairing (Boehm, "Can seqlocks get along
//! with programming language memory models?", 2012).

use crate::sync::{fence, own_load, AtomicU64, Ordering};

/// A seqlock stamp.
#[derive(Debug, Default)]
#[repr(transparent)]
pub struct Stamp(AtomicU64);

/// What a reader saw when it opened a read section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadToken(u64);

impl ReadToken {
    /// The stamp the read section opened at: a copy that validates is the version published
    /// at this stamp.
    #[inline]
    pub fn stamp(self) -> u64 {
        self.0
    }
}

impl Stamp {
    /// A stamp at 0 (even: nothing being written).
    pub fn new() -> Self {
        Stamp(AtomicU64::new(0))
    }

    /// The writer opens a write section: readers that overlap it will retry. Only the single
    /// writer of the guarded words may call it, and not twice without [`Stamp::end_write`].
    #[inline]
    pub fn begin_write(&self) {
        let s = own_load(&self.0);
        debug_assert!(s.is_multiple_of(2), "seqlock write section opened twice");
        self.0.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
    }

    /// The writer closes its write section, publishing the stores made inside it.
    #[inline]
    pub fn end_write(&self) {
        let s = own_load(&self.0);
        debug_assert!(
            s % 2 == 1,
            "seqlock write section closed without being opened"
        );
        self.0.store(s.wrapping_add(1), Ordering::Release);
    }

    /// Whether a write section is open (the writer's own view).
    #[inline]
    pub fn writing(&self) -> bool {
        own_load(&self.0) % 2 == 1
    }

    /// A reader opens a read section; `None` while a write is in progress.
    #[inline]
    pub fn begin_read(&self) -> Option<ReadToken> {
        let s = self.0.load(Ordering::Acquire);
        s.is_multiple_of(2).then_some(ReadToken(s))
    }

    /// A reader closes its read section: `true` if no write overlapped it, so what it loaded
    /// in between is one consistent version.
    #[inline]
    pub fn validate(&self, token: ReadToken) -> bool {
        self.unchanged_since(token.0)
    }

    /// Whether no write section opened since a validated read at `stamp` (a
    /// [`ReadToken::stamp`]): what was read after that read, e.g. bytes a slot refers to, is
    /// as consistent with it as the slot's own words were. The same check as
    /// [`Stamp::validate`], for a reader that kept only the stamp.
    #[inline]
    pub fn unchanged_since(&self, stamp: u64) -> bool {
        fence(Ordering::Acquire);
        self.0.load(Ordering::Relaxed) == stamp
    }

    /// The raw stamp value (for diagnostics and tests).
    #[inline]
    pub fn raw(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Stores `src` into the guarded words (relaxed); call between `begin_write` and `end_write`.
#[inline]
pub fn store_words(dst: &[AtomicU64], src: &[u64]) {
    debug_assert_eq!(dst.len(), src.len());
    for (d, s) in dst.iter().zip(src) {
        d.store(*s, Ordering::Relaxed);
    }
}

/// Loads the guarded words (relaxed); call between `begin_read` and `validate`.
#[inline]
pub fn load_words(src: &[AtomicU64], dst: &mut [u64]) {
    debug_assert_eq!(dst.len(), src.len());
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.load(Ordering::Relaxed);
    }
}
