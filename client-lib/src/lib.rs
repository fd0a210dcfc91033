//! The analyzer library: attach to a running `mos-sensor`, subscribe to flows and events, and
//! read streams with mOS's monitoring API (`peek`, `ppeek`, `getsockopt`, `getlastpkt`,
//! `getpeername`).
//!
//! Not built yet: the shared-memory publication it reads arrives with the second foundation
//! issue. Until then the only consumer of the TCP core is `mos-sensor --dump`, which runs the
//! core in-process. The crate exists so the workspace has the layout `DESIGN.md` fixes.

#![forbid(unsafe_code)]

pub use shm_layout::{Side, TcpState};
