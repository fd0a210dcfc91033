//! What leaves the core: the in-process stream dump (`mos-sensor --dump`).

pub mod dump;

pub use dump::{FlowRecord, StreamDump};
