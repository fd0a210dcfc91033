//! TCP emulation: both endpoints' state machines and the reassembly of each side's receive
//! stream into its ring.

pub mod conn;
pub mod overlap;
pub mod reassembly;
pub mod ring_pool;
pub mod seq;
pub mod state;
