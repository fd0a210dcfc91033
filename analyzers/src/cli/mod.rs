//! The command lines of the analyzers shipped with mos, one module per binary: their clap
//! definitions (`Args`), shared by the binaries and by the generator of their manual pages and
//! shell completions (`mos-docgen`).

pub mod dump;
pub mod flowstat;
pub mod grep;
pub mod log;
pub mod pcap;
