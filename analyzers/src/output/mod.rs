//! Where `mos-log` and `mos-grep` send their records: JSON lines to stdout, to one file per
//! log in a directory (rotated by size or time), to Redis Streams or to Kafka.
//!
//! Every output takes the same three calls: [`Output::record`] for each record, [`Output::tick`]
//! about once a second (flush, rotate, publish the dropped count), [`Output::finish`] at the
//! end. A broker that is down or slow never blocks the caller: the network outputs queue up to
//! a bound, send from their own thread, and past the bound drop and count
//! ([`Output::dropped`]); the count reaches `mos-ctl status` through the analyzer page
//! ([`mos_client::ReportHandle`]).

mod files;
#[cfg(feature = "kafka")]
mod kafka;
mod queue;
mod redis;

pub use files::{FileOutput, Rotation, StdoutOutput};
#[cfg(feature = "kafka")]
pub use kafka::KafkaOutput;
pub use redis::{RedisOptions, RedisOutput};

use anyhow::Context as _;
use std::path::PathBuf;
use std::time::Duration;

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

/// The default of `--queue`.
pub const DEFAULT_QUEUE: usize = 100_000;
/// The default of `--redis-maxlen`.
pub const DEFAULT_REDIS_MAXLEN: u64 = 1_000_000;

/// The command-line options that choose an output, shared by `mos-log` and `mos-grep`
/// (flatten into the program's arguments with `#[command(flatten)]`).
///
/// Without `--out`, `--redis` or `--kafka` the records go to stdout. Given several, each
/// record goes to each of them.
#[derive(Clone, Debug, clap::Args)]
pub struct OutputArgs {
    /// Write each log to DIR/LOG.jsonl (created if missing) instead of stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// With --out: when a log's file reaches this many MiB (at least 1), rename it to
    /// LOG.YYYYMMDD-HHMMSS.jsonl (UTC, the time of the rotation; .N added if that name is
    /// taken) and start a new LOG.jsonl.
    #[arg(long, value_name = "MIB", requires = "out", value_parser = at_least_one)]
    pub rotate_mib: Option<u64>,
    /// With --out: rotate a log's file (as with --rotate-mib) once it is this many seconds
    /// old (at least 1), checked about once a second.
    #[arg(long, value_name = "SECS", requires = "out", value_parser = at_least_one)]
    pub rotate_secs: Option<u64>,
    /// Also send every record to Redis Streams: XADD to the stream PREFIX + LOG (one stream
    /// per log) with the fields `uid` (omitted when the record names no connection) and
    /// `json` (the record's line). URL: `redis://[:PASSWORD@]HOST[:PORT][/DB]`, or a Unix
    /// socket as `unix:///PATH` or `redis+unix:///PATH[?db=N]`.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// With --redis: cap each stream at about this many entries (XADD MAXLEN ~ N; Redis
    /// trims whole nodes, so a stream may hold a little more), at least 1.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_REDIS_MAXLEN, value_parser = at_least_one,
          requires = "redis")]
    pub redis_maxlen: u64,
    /// With --redis: the stream names' prefix (the log's name follows).
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "mos:",
        requires = "redis"
    )]
    pub redis_prefix: String,
    /// Also send every record to Kafka: BROKERS is librdkafka's bootstrap.servers
    /// (HOST:PORT[,HOST:PORT...]); one topic per log (PREFIX + LOG), the record's uid as the
    /// message key, so one connection's records stay in order. Needs the analyzer built with the
    /// cargo feature `kafka`.
    #[arg(long, value_name = "BROKERS")]
    pub kafka: Option<String>,
    /// With --kafka: the topic names' prefix (the log's name follows).
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "mos.",
        requires = "kafka"
    )]
    pub kafka_topic_prefix: String,
    /// Records each broker (--redis, --kafka) holds while it is down or slow, at least 1;
    /// past that, new records are dropped and counted (mos-ctl status: REC-DROPPED).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_QUEUE, value_parser = at_least_one_usize)]
    pub queue: usize,
    /// At the end, how long to wait for the brokers to take the queued records, in seconds
    /// (0 to 3600); what is still queued then is dropped, counted and said on stderr.
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = drain_secs)]
    pub drain_secs: u64,
}

/// A count of at least 1.
fn at_least_one(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number: {e}")),
    }
}

/// A count of at least 1, as a size.
fn at_least_one_usize(s: &str) -> Result<usize, String> {
    let n = at_least_one(s)?;
    usize::try_from(n).map_err(|_| "too large".to_string())
}

/// `--drain-secs`: 0 to 3600.
fn drain_secs(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n <= 3600 => Ok(n),
        Ok(_) => Err("must be at most 3600".into()),
        Err(e) => Err(format!("not a whole number: {e}")),
    }
}

impl OutputArgs {
    /// Opens the output these options name. `mos` is the attached sensor (the output reports
    /// its dropped records there); `prog` names the program in messages.
    pub fn open(&self, mos: &mos_client::Mos, prog: &str) -> anyhow::Result<Box<dyn Output>> {
        let inner = self.open_unreported(prog)?;
        Ok(Box::new(Reported {
            inner,
            report: Some(mos.report_handle()),
        }))
    }

    /// The output alone, its dropped count reported nowhere (for tests and for tools with no
    /// sensor).
    pub fn open_unreported(&self, prog: &str) -> anyhow::Result<Box<dyn Output>> {
        let mut outs: Vec<Box<dyn Output>> = Vec::new();
        if let Some(dir) = &self.out {
            outs.push(Box::new(FileOutput::create(
                dir,
                Rotation {
                    max_bytes: self.rotate_mib.map(|m| m.saturating_mul(1 << 20)),
                    max_secs: self.rotate_secs,
                },
            )?));
        }
        if let Some(url) = &self.redis {
            outs.push(Box::new(
                RedisOutput::open(RedisOptions {
                    url: url.clone(),
                    prefix: self.redis_prefix.clone(),
                    maxlen: self.redis_maxlen,
                    queue: self.queue,
                    drain: Duration::from_secs(self.drain_secs),
                    prog: prog.to_string(),
                })
                .with_context(|| format!("--redis {url}"))?,
            ));
        }
        if let Some(brokers) = &self.kafka {
            outs.push(self.open_kafka(brokers, prog)?);
        }
        Ok(match outs.len() {
            0 => Box::new(StdoutOutput::new()),
            1 => outs.pop().expect("one output"),
            _ => Box::new(Tee(outs)),
        })
    }

    #[cfg(feature = "kafka")]
    fn open_kafka(&self, brokers: &str, prog: &str) -> anyhow::Result<Box<dyn Output>> {
        Ok(Box::new(
            KafkaOutput::open(
                brokers,
                &self.kafka_topic_prefix,
                self.queue,
                Duration::from_secs(self.drain_secs),
                prog,
            )
            .with_context(|| format!("--kafka {brokers}"))?,
        ))
    }

    #[cfg(not(feature = "kafka"))]
    fn open_kafka(&self, _brokers: &str, prog: &str) -> anyhow::Result<Box<dyn Output>> {
        anyhow::bail!(
            "--kafka: {prog} was built without Kafka support; rebuild it with \
             `cargo build --release -p mos-analyzers --features kafka` (needs librdkafka-dev \
             and pkg-config)"
        )
    }
}

/// Several outputs, each given every record.
#[derive(Debug)]
struct Tee(Vec<Box<dyn Output>>);

impl std::fmt::Debug for dyn Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Output for Tee {
    fn record(&mut self, log: &str, key: &str, line: &str) -> anyhow::Result<()> {
        for o in &mut self.0 {
            o.record(log, key, line)?;
        }
        Ok(())
    }
    fn tick(&mut self) -> anyhow::Result<()> {
        for o in &mut self.0 {
            o.tick()?;
        }
        Ok(())
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        // Every output gets its chance to finish; the first error is the answer.
        let mut first = None;
        for o in &mut self.0 {
            if let Err(e) = o.finish() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
    fn dropped(&self) -> u64 {
        self.0.iter().map(|o| o.dropped()).sum()
    }
    fn written(&self) -> u64 {
        // Each record counts once, as the first output took it.
        self.0.first().map_or(0, |o| o.written())
    }
}

/// An output whose dropped count is published in the analyzer page on every tick and at the
/// end, so that `mos-ctl status` shows it.
#[derive(Debug)]
struct Reported {
    inner: Box<dyn Output>,
    report: Option<mos_client::ReportHandle>,
}

impl Reported {
    fn publish(&self) {
        if let Some(r) = &self.report {
            r.set_records_dropped(self.inner.dropped());
        }
    }
}

impl Output for Reported {
    fn record(&mut self, log: &str, key: &str, line: &str) -> anyhow::Result<()> {
        self.inner.record(log, key, line)
    }
    fn tick(&mut self) -> anyhow::Result<()> {
        let r = self.inner.tick();
        self.publish();
        r
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        let r = self.inner.finish();
        self.publish();
        r
    }
    fn dropped(&self) -> u64 {
        self.inner.dropped()
    }
    fn written(&self) -> u64 {
        self.inner.written()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        out: OutputArgs,
    }

    fn parse(args: &[&str]) -> Result<OutputArgs, String> {
        Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map(|c| c.out)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn zero_sizes_and_times_are_refused_naming_the_option() {
        for (args, opt) in [
            (&["--out", "d", "--rotate-mib", "0"][..], "--rotate-mib"),
            (&["--out", "d", "--rotate-secs", "0"][..], "--rotate-secs"),
            (&["--redis", "unix:///x", "--queue", "0"][..], "--queue"),
            (
                &["--redis", "unix:///x", "--redis-maxlen", "0"][..],
                "--redis-maxlen",
            ),
            (
                &["--redis", "unix:///x", "--drain-secs", "3601"][..],
                "--drain-secs",
            ),
            (&["--out", "d", "--rotate-mib", "x"][..], "--rotate-mib"),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(opt), "{args:?}: {e}");
        }
        // Options of an output that was not asked for.
        assert!(parse(&["--rotate-mib", "5"]).is_err());
        assert!(parse(&["--redis-prefix", "x:"]).is_err());
        assert!(parse(&["--kafka-topic-prefix", "x."]).is_err());
        let a = parse(&["--redis", "unix:///x", "--drain-secs", "0"]).unwrap();
        assert_eq!(
            (a.queue, a.redis_maxlen, a.drain_secs),
            (DEFAULT_QUEUE, DEFAULT_REDIS_MAXLEN, 0)
        );
        assert_eq!(a.redis_prefix, "mos:");
    }

    #[cfg(not(feature = "kafka"))]
    #[test]
    fn kafka_without_the_feature_says_how_to_build_it() {
        let a = parse(&["--kafka", "localhost:9092"]).unwrap();
        let e = a.open_unreported("mos-log").unwrap_err().to_string();
        assert!(e.contains("mos-log was built without Kafka support"), "{e}");
        assert!(e.contains("--features kafka"), "{e}");
    }

    #[test]
    fn several_outputs_each_get_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let mut t = Tee(vec![
            Box::new(FileOutput::create(&a, Rotation::default()).unwrap()),
            Box::new(FileOutput::create(&b, Rotation::default()).unwrap()),
        ]);
        t.record("conn", "C1", "{\"x\":1}").unwrap();
        t.record("http", "C1", "{\"y\":2}").unwrap();
        t.finish().unwrap();
        assert_eq!((t.written(), t.dropped()), (2, 0));
        for d in [&a, &b] {
            assert_eq!(
                std::fs::read_to_string(d.join("conn.jsonl")).unwrap(),
                "{\"x\":1}\n"
            );
            assert_eq!(
                std::fs::read_to_string(d.join("http.jsonl")).unwrap(),
                "{\"y\":2}\n"
            );
        }
    }
}
