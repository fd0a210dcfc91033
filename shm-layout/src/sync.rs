//! The atomics the protocols use: `std`'s, or loom's when the crate is built with `--cfg loom`
//! so that the model checker explores every interleaving of the seqlock and ring algorithms.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64, Ordering};
