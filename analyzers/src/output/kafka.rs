//! Records to Kafka through librdkafka: one topic per log (`PREFIX` + log), the connection's
//! uid as the message key (so one connection's records land in one partition, in order), the
//! JSON line as the value.
//!
//! librdkafka queues and sends on its own threads; [`Output::record`] only hands it a message.
//! Its queue is bounded (`queue.buffering.max.messages` = `--queue`): when it is full the
//! record is dropped and counted, never waited for. A message librdkafka could not deliver
//! (its delivery report is an error: the brokers stayed unreachable past
//! `message.timeout.ms`, the topic does not exist, ...) counts as dropped too.

use super::Output;
use anyhow::Context as _;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the same kind of librdkafka error is said on stderr at most.
const SAY_EVERY: Duration = Duration::from_secs(60);

/// What the producer's callbacks share with the output.
#[derive(Debug)]
struct Context {
    dropped: Arc<AtomicU64>,
    prog: String,
    /// When an error was last said on stderr.
    said: Mutex<Option<Instant>>,
}

impl Context {
    fn say(&self, what: &str) {
        let mut said = self
            .said
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if said.is_none_or(|t| t.elapsed() >= SAY_EVERY) {
            *said = Some(Instant::now());
            eprintln!(
                "{}: kafka: {what} ({} records dropped so far)",
                self.prog,
                self.dropped.load(Ordering::Relaxed)
            );
        }
    }
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        self.say(&format!("{error}: {reason}"));
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.say(&format!("a record was not delivered: {e}"));
        }
    }
}

/// Sends records to Kafka (see the module's description).
pub struct KafkaOutput {
    producer: Option<ThreadedProducer<Context>>,
    prefix: String,
    dropped: Arc<AtomicU64>,
    written: u64,
    drain: Duration,
    prog: String,
    /// Topic names by log, made once.
    topics: std::collections::HashMap<String, String>,
}

impl std::fmt::Debug for KafkaOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaOutput")
            .field("prefix", &self.prefix)
            .field("written", &self.written)
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish()
    }
}

impl KafkaOutput {
    /// A producer for `brokers` (librdkafka's `bootstrap.servers`); the brokers need not be
    /// up yet. `queue` bounds librdkafka's queue of messages; `drain` is how long
    /// [`Output::finish`] waits for the queue to empty.
    pub fn open(
        brokers: &str,
        prefix: &str,
        queue: usize,
        drain: Duration,
        prog: &str,
    ) -> anyhow::Result<KafkaOutput> {
        let dropped = Arc::new(AtomicU64::new(0));
        let ctx = Context {
            dropped: dropped.clone(),
            prog: prog.to_string(),
            said: Mutex::new(None),
        };
        // librdkafka takes at most 2^31 - 1 queued messages.
        let queue = queue.clamp(1, i32::MAX as usize);
        let producer: ThreadedProducer<Context> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("queue.buffering.max.messages", queue.to_string())
            .set("client.id", prog)
            .create_with_context(ctx)
            .context("creating the Kafka producer")?;
        Ok(KafkaOutput {
            producer: Some(producer),
            prefix: prefix.to_string(),
            dropped,
            written: 0,
            drain,
            prog: prog.to_string(),
            topics: std::collections::HashMap::new(),
        })
    }
}

impl Output for KafkaOutput {
    fn record(&mut self, log: &str, key: &str, line: &str) -> anyhow::Result<()> {
        let Some(p) = &self.producer else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let prefix = &self.prefix;
        let topic = self
            .topics
            .entry(log.to_string())
            .or_insert_with(|| format!("{prefix}{log}"));
        let mut rec: BaseRecord<'_, str, str> = BaseRecord::to(topic).payload(line);
        if !key.is_empty() {
            rec = rec.key(key);
        }
        match p.send(rec) {
            Ok(()) => self.written += 1,
            Err((e, _)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                if !matches!(
                    e,
                    KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
                ) {
                    p.context().say(&format!("a record was refused: {e}"));
                }
            }
        }
        Ok(())
    }
    fn tick(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        let Some(p) = self.producer.take() else {
            return Ok(());
        };
        if p.flush(self.drain).is_err() {
            let before = self.dropped.load(Ordering::Relaxed);
            let queued = p.in_flight_count();
            // What is still queued fails its delivery (as purged) and counts as dropped.
            p.purge(PurgeConfig::default().queue().inflight());
            p.poll(Duration::ZERO);
            drop(p);
            let now = self.dropped.load(Ordering::Relaxed);
            eprintln!(
                "{}: kafka: {} records not delivered within --drain-secs {} were dropped ({now} dropped in all)",
                self.prog,
                (now - before).max(u64::try_from(queued).unwrap_or(0)),
                self.drain.as_secs()
            );
        }
        Ok(())
    }
    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    fn written(&self) -> u64 {
        self.written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::mocking::MockCluster;
    use rdkafka::{Message as _, Offset, TopicPartitionList};
    use std::collections::BTreeMap;

    #[test]
    fn records_arrive_keyed_by_uid_and_in_order_per_key() {
        let cluster = MockCluster::new(3).unwrap();
        for log in ["conn", "http"] {
            cluster.create_topic(&format!("mos.{log}"), 4, 1).unwrap();
        }
        let servers = cluster.bootstrap_servers();
        let mut out = KafkaOutput::open(
            &servers,
            "mos.",
            10_000,
            Duration::from_secs(30),
            "kafka-test",
        )
        .unwrap();
        // 8 connections, their records interleaved; each record says its place.
        let mut sent: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for i in 0..400 {
            let uid = format!("C{:02}", i % 8);
            let log = if i % 3 == 0 { "http" } else { "conn" };
            let line = format!("{{\"uid\":\"{uid}\",\"n\":{i}}}");
            out.record(log, &uid, &line).unwrap();
            sent.entry((log.to_string(), uid)).or_default().push(line);
        }
        out.finish().unwrap();
        assert_eq!(out.dropped(), 0);
        assert_eq!(out.written(), 400);

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .set("group.id", "mos-test")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for log in ["conn", "http"] {
            for part in 0..4 {
                tpl.add_partition_offset(&format!("mos.{log}"), part, Offset::Beginning)
                    .unwrap();
            }
        }
        consumer.assign(&tpl).unwrap();
        let mut got: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        let mut partition_of: BTreeMap<(String, String), i32> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut n = 0;
        while n < 400 && Instant::now() < deadline {
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m.unwrap();
            let log = m.topic().strip_prefix("mos.").unwrap().to_string();
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            let line = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            assert!(
                line.contains(&format!("\"uid\":\"{key}\"")),
                "{key}: {line}"
            );
            let p = *partition_of
                .entry((log.clone(), key.clone()))
                .or_insert(m.partition());
            assert_eq!(p, m.partition(), "one key, one partition");
            got.entry((log, key)).or_default().push(line);
            n += 1;
        }
        assert_eq!(got, sent, "every record, in order per key");
    }

    #[test]
    fn an_unreachable_broker_drops_and_counts_at_the_end_without_blocking() {
        // Nothing listens on port 1: every record waits in librdkafka's queue (2 fit), the
        // others are dropped at once; the rest is dropped when the drain time is up.
        let mut out =
            KafkaOutput::open("127.0.0.1:1", "mos.", 2, Duration::ZERO, "kafka-test").unwrap();
        for i in 0..5 {
            out.record("conn", "C1", &format!("{{\"n\":{i}}}")).unwrap();
        }
        assert_eq!(out.written(), 2);
        assert_eq!(out.dropped(), 3);
        out.finish().unwrap();
        assert_eq!(out.dropped(), 5);
    }
}
