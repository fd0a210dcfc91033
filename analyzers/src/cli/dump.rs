//! `mos-dump`'s command line.

use crate::AttachArgs;
use std::path::PathBuf;

/// Writes each connection's streams to DIR as mos-sensor --dump does: one file per direction
/// ({serial}-{from}-{to}.c2s / .s2c; bytes the capture or the ring lost are zeros, stored as
/// holes) and DIR/flows.jsonl with one record per connection. Exits 0 when the sensor's input
/// ends, 1 on an error, 130 when stopped by SIGINT or SIGTERM. Stopped, or without its sensor
/// (it went away or detached this analyzer: exit 1), it still writes DIR/flows.jsonl, the
/// connections open then written as far as they got and marked "cut_short": true.
#[derive(clap::Parser, Debug)]
#[command(name = "mos-dump", version = shm_layout::version!())]
pub struct Args {
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub attach: AttachArgs,
}
