//! The mos shared-memory ABI: codes, layouts and the lock-free protocols that the sensor and
//! analyzers share.
//!
//! Everything here crosses a process boundary, so every value is a fixed-width integer with the
//! number mOS gives it (`mos_api.h`), never a Rust `enum` discriminant chosen by the compiler,
//! and every shared type's size and field offsets are pinned by `const` assertions
//! ([`layout`]). The regions are described in `docs/SHARED-MEMORY.md`.
//!
//! `unsafe` in this crate is limited to mapping regions, viewing them as the layout types, and
//! copying payload bytes that another process may be writing (see [`region::Mapping::read_bytes`]
//! for the caveat); each block says why it is sound.

pub mod codes;
pub mod control;
pub mod layout;
pub mod plan;
pub mod pod;
pub mod region;
pub mod ring;
pub mod seqlock;
pub mod status;
mod sync;
pub mod version;
pub mod wake;

pub use codes::{EventMask, Hook, Side, TcpState, MOS_SIDE_BOTH};
pub use pod::Words;
pub mod flow;
pub mod pktlog;
