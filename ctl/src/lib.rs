//! `mos-ctl` as a library: its command line ([`cli`]), the status request to the sensor
//! ([`query`]), the metrics server ([`metrics_server`]) and the live view ([`top`]). The binary
//! (`src/main.rs`) ties them together; `mos-docgen` reads [`cli`] for the manual page and the
//! shell completions.

// The modules were written as the binary's, whose documentation includes private items, and
// their docs link to their private parts (`top`'s model and view): in this library's public
// documentation those links are plain text, which is all they need to be.
#![allow(rustdoc::private_intra_doc_links)]

pub mod cli;
pub mod metrics_server;
pub mod query;
pub mod top;
