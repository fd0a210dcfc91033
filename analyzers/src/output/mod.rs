//! Where `mos-log` and `mos-grep` send their records: JSON lines to stdout, to one file per
//! log in a directory (rotated by size or time), to Redis Streams or to Kafka.
//!
//! Every output takes the same three calls: [`Output::record`] for each record, [`Output::tick`]
//! about once a second (flush, rotate, reconnect), [`Output::finish`] at the end. A broker
//! that is down or slow never blocks the caller: the network outputs queue up to a bound on
//! their own thread, then drop and count ([`Output::dropped`]).

mod files;

pub use files::{FileOutput, Rotation, StdoutOutput};

/// A destination for records.
pub trait Output {
    /// One record of log `log` (`conn`, `http`, `match`, ...): `line` is one JSON object with
    /// no newline; `key` is the connection's `uid` (records with the same key stay in order
    /// where the destination partitions), empty when the record names no connection.
    fn record(&mut self, log: &str, key: &str, line: &str) -> anyhow::Result<()>;
    /// Called about once a second: flush what is buffered, rotate files, retry a broker.
    fn tick(&mut self) -> anyhow::Result<()>;
    /// The end: everything written or handed to the broker (waiting a bounded time for it).
    fn finish(&mut self) -> anyhow::Result<()>;
    /// Records dropped so far because the destination was down or too slow.
    fn dropped(&self) -> u64;
    /// Records accepted so far (written, or queued for a broker).
    fn written(&self) -> u64;
}

use std::path::PathBuf;

/// The command-line options that choose an output, shared by `mos-log` and `mos-grep`
/// (flatten into the program's arguments with `#[command(flatten)]`).
#[derive(Clone, Debug, clap::Args)]
pub struct OutputArgs {
    /// Write each log to DIR/LOG.jsonl (created if missing) instead of stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// With --out: start a new file when the current one reaches this many MiB.
    #[arg(long, value_name = "MIB", requires = "out")]
    pub rotate_mib: Option<u64>,
    /// With --out: start a new file when the current one is this many seconds old.
    #[arg(long, value_name = "SECS", requires = "out")]
    pub rotate_secs: Option<u64>,
}

impl OutputArgs {
    /// Opens the output these options name. `mos` is the attached sensor (the output reports
    /// its dropped records there); `prog` names the program in messages.
    pub fn open(&self, _mos: &mos_client::Mos, _prog: &str) -> anyhow::Result<Box<dyn Output>> {
        match &self.out {
            Some(dir) => Ok(Box::new(FileOutput::create(
                dir,
                Rotation {
                    max_bytes: self.rotate_mib.map(|m| m << 20),
                    max_secs: self.rotate_secs,
                },
            )?)),
            None => Ok(Box::new(StdoutOutput::new())),
        }
    }
}
