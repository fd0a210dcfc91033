//! The codes and layouts that the sensor and analyzers share.
//!
//! Everything here crosses a process boundary, so every value is a fixed-width integer with the
//! number mOS gives it (`mos_api.h`), never a Rust `enum` discriminant chosen by the compiler.
//! The shared-memory regions themselves (header, flow slots, rings) join this crate with the
//! second foundation issue; the codes are fixed now because the TCP core already speaks them.

#![forbid(unsafe_code)]

pub mod codes;

pub use codes::{EventMask, Hook, Side, TcpState};
