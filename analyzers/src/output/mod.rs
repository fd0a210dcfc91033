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
