//! Records to Redis Streams: `XADD PREFIX+LOG MAXLEN ~ N * uid UID json LINE`, one stream per
//! log, sent by a thread of its own in pipelined batches.
//!
//! [`Output::record`] only pushes onto a bounded queue. The thread takes up to
//! [`BATCH`] records at a time and sends them as one pipeline. While Redis cannot be reached
//! it retries the connection with a backoff of 100 ms doubling to 5 s, and the records wait in
//! the queue; once the queue is full, new records are dropped and counted. A batch whose
//! connection broke before every reply came is sent again after reconnecting, so a record may
//! (rarely) arrive twice; one Redis refuses (an error reply, such as a key of another type) is
//! dropped and counted.

use super::queue::{Item, Queue};
use super::Output;
use anyhow::Context as _;
use redis::ConnectionLike as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Records sent in one pipeline at most.
pub const BATCH: usize = 512;
/// The first wait before connecting again.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait before connecting again.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a connect, a send or a reply may take before the server counts as down.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// What [`RedisOutput::open`] needs.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// `redis://...`, `unix:///path` or `redis+unix:///path`.
    pub url: String,
    /// Stream names are this followed by the log's name.
    pub prefix: String,
    /// `MAXLEN ~` of every XADD.
    pub maxlen: u64,
    /// Records held while Redis is down or slow.
    pub queue: usize,
    /// How long [`Output::finish`] waits for the queue to empty.
    pub drain: Duration,
    /// The program's name, for messages on stderr.
    pub prog: String,
}

/// What the caller and the sending thread share.
#[derive(Debug)]
struct Shared {
    queue: Queue,
    /// Records dropped: refused by a full queue, refused by Redis, or left at the end.
    dropped: AtomicU64,
    /// Records Redis accepted.
    sent: AtomicU64,
    /// Set by `finish` when the time to drain is up.
    stop: AtomicBool,
}

/// Sends records to Redis Streams (see the module's description).
#[derive(Debug)]
pub struct RedisOutput {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    written: u64,
    drain: Duration,
    prog: String,
    shown: String,
}

/// `url` with any password replaced by `***`, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl RedisOutput {
    /// Checks the URL and starts the sending thread; Redis need not be up yet (the thread
    /// keeps trying, and says on stderr when it is down and when it is back).
    pub fn open(opts: RedisOptions) -> anyhow::Result<RedisOutput> {
        let client = redis::Client::open(opts.url.as_str())
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("not a Redis URL (redis://HOST:PORT, unix:///PATH or redis+unix:///PATH)")?;
        let shared = Arc::new(Shared {
            queue: Queue::new(opts.queue),
            dropped: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let shown = redact(&opts.url);
        let sender = Sender {
            client,
            shared: shared.clone(),
            prefix: opts.prefix,
            maxlen: opts.maxlen,
            prog: opts.prog.clone(),
            shown: shown.clone(),
            queue_cap: opts.queue,
        };
        let thread = std::thread::Builder::new()
            .name("redis-out".into())
            .spawn(move || sender.run())
            .context("starting the Redis thread")?;
        Ok(RedisOutput {
            shared,
            thread: Some(thread),
            written: 0,
            drain: opts.drain,
            prog: opts.prog,
            shown,
        })
    }

    /// Records Redis has accepted so far.
    pub fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed)
    }
}

impl Output for RedisOutput {
    fn record(&mut self, log: &str, key: &str, line: &str) -> anyhow::Result<()> {
        let item = Item {
            log: log.to_string(),
            key: key.to_string(),
            line: line.to_string(),
        };
        if self.shared.queue.push(item).is_ok() {
            self.written += 1;
        } else {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
    fn tick(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let s = &self.shared;
        let deadline = Instant::now() + self.drain;
        s.queue.wait_until(deadline, |n| n == 0);
        let before = s.dropped.load(Ordering::Relaxed);
        s.stop.store(true, Ordering::Release);
        s.queue.poke();
        // The thread counts what it still holds; a send or connect in progress ends within
        // its timeout.
        let _ = thread.join();
        let left = s.dropped.load(Ordering::Relaxed) - before;
        if left > 0 {
            eprintln!(
                "{}: redis {}: {left} records not sent within --drain-secs {} were dropped ({} dropped in all)",
                self.prog,
                self.shown,
                self.drain.as_secs(),
                s.dropped.load(Ordering::Relaxed)
            );
        }
        Ok(())
    }
    fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
    fn written(&self) -> u64 {
        self.written
    }
}

impl Drop for RedisOutput {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.shared.stop.store(true, Ordering::Release);
            self.shared.queue.poke();
            let _ = t.join();
        }
    }
}

/// The sending thread's state.
struct Sender {
    client: redis::Client,
    shared: Arc<Shared>,
    prefix: String,
    maxlen: u64,
    prog: String,
    shown: String,
    queue_cap: usize,
}

impl Sender {
    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }

    /// Sleeps `d`, or less if told to stop.
    fn nap(&self, d: Duration) {
        self.shared
            .queue
            .wait_until(Instant::now() + d, |_| self.stopping());
    }

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let con = self.client.get_connection_with_timeout(IO_TIMEOUT)?;
        con.set_read_timeout(Some(IO_TIMEOUT))?;
        con.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(con)
    }

    fn run(self) {
        let s = &*self.shared;
        let mut con: Option<redis::Connection> = None;
        let mut backoff = BACKOFF_MIN;
        // Whether the server is known down (said on stderr once per outage).
        let mut down = false;
        let mut refused_said = false;
        // A batch taken from the queue and not settled yet.
        let mut batch: Vec<Item> = Vec::new();
        let mut pipe = redis::Pipeline::with_capacity(BATCH);
        loop {
            if self.stopping() {
                break;
            }
            if batch.is_empty() {
                batch = s.queue.take(BATCH, Duration::from_millis(200));
                if batch.is_empty() {
                    continue;
                }
            }
            let c = match con.as_mut() {
                Some(c) => c,
                None => match self.connect() {
                    Ok(c) => {
                        if down {
                            eprintln!(
                                "{}: redis {}: connected again ({} records dropped so far)",
                                self.prog,
                                self.shown,
                                s.dropped.load(Ordering::Relaxed)
                            );
                            down = false;
                        }
                        backoff = BACKOFF_MIN;
                        con.insert(c)
                    }
                    Err(e) => {
                        if !down {
                            eprintln!(
                                "{}: redis {}: {e}; holding up to {} records and retrying",
                                self.prog, self.shown, self.queue_cap
                            );
                            down = true;
                        }
                        self.nap(backoff);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                },
            };
            pipe.clear();
            for it in &batch {
                let cmd = pipe
                    .cmd("XADD")
                    .arg(format!("{}{}", self.prefix, it.log))
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(self.maxlen)
                    .arg("*");
                if !it.key.is_empty() {
                    cmd.arg("uid").arg(&it.key);
                }
                cmd.arg("json").arg(&it.line);
            }
            match c.req_packed_commands(&pipe.get_packed_pipeline(), 0, batch.len()) {
                Ok(replies) => {
                    let refused: Vec<&redis::Value> = replies
                        .iter()
                        .filter(|v| matches!(v, redis::Value::ServerError(_)))
                        .collect();
                    if let (Some(first), false) = (refused.first(), refused_said) {
                        eprintln!(
                            "{}: redis {}: a record was refused: {first:?} (later refusals are only counted)",
                            self.prog, self.shown
                        );
                        refused_said = true;
                    }
                    let n = batch.len() as u64;
                    let bad = refused.len() as u64;
                    s.dropped.fetch_add(bad, Ordering::Relaxed);
                    s.sent.fetch_add(n - bad, Ordering::Relaxed);
                    batch.clear();
                    s.queue.settle();
                }
                Err(e) => {
                    // Keep the batch for the next connection.
                    con = None;
                    if !down {
                        eprintln!(
                            "{}: redis {}: {e}; holding up to {} records and retrying",
                            self.prog, self.shown, self.queue_cap
                        );
                        down = true;
                    }
                    self.nap(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        // Told to stop: what is still here is dropped.
        let left = batch.len() as u64 + s.queue.clear() as u64;
        s.dropped.fetch_add(left, Ordering::Relaxed);
        s.queue.settle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};

    /// A private redis-server on a Unix socket; killed when dropped.
    struct Server {
        child: Child,
    }

    impl Server {
        fn start(dir: &Path, sock: &Path) -> Server {
            let child = Command::new("/usr/bin/redis-server")
                .args(["--port", "0", "--save", "", "--appendonly", "no"])
                .arg("--unixsocket")
                .arg(sock)
                .arg("--dir")
                .arg(dir)
                .stdout(Stdio::null())
                .spawn()
                .expect("/usr/bin/redis-server (Debian's redis-server package)");
            let s = Server { child };
            let deadline = Instant::now() + Duration::from_secs(30);
            while connect(sock).is_none() {
                assert!(Instant::now() < deadline, "redis-server did not come up");
                std::thread::sleep(Duration::from_millis(20));
            }
            s
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn url(sock: &Path) -> String {
        format!("unix://{}", sock.display())
    }

    fn connect(sock: &Path) -> Option<redis::Connection> {
        let mut c = redis::Client::open(url(sock)).ok()?.get_connection().ok()?;
        redis::cmd("PING").query::<String>(&mut c).ok()?;
        Some(c)
    }

    /// Every entry of `stream`: its fields as pairs.
    fn entries(c: &mut redis::Connection, stream: &str) -> Vec<Vec<(String, String)>> {
        let raw: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .query(c)
            .unwrap();
        raw.into_iter()
            .map(|(_, f)| f.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect())
            .collect()
    }

    fn output(sock: &Path, queue: usize, drain: Duration) -> RedisOutput {
        RedisOutput::open(RedisOptions {
            url: url(sock),
            prefix: "t:".into(),
            maxlen: 1_000_000,
            queue,
            drain,
            prog: "redis-test".into(),
        })
        .unwrap()
    }

    fn wait_for(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !f() {
            assert!(Instant::now() < deadline, "gave up waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn sock_in(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("redis.sock")
    }

    #[test]
    fn every_record_reaches_its_stream_with_its_uid() {
        let dir = tempfile::tempdir().unwrap();
        let sock = sock_in(&dir);
        let _server = Server::start(dir.path(), &sock);
        let mut out = output(&sock, 100_000, Duration::from_secs(60));
        let mut want: Vec<(String, Vec<(String, String)>)> = Vec::new();
        for i in 0..3000 {
            let log = ["conn", "http", "tls"][i % 3];
            let uid = if i % 10 == 9 {
                String::new()
            } else {
                format!("C{i}")
            };
            let line = format!("{{\"n\":{i},\"s\":\"\\u00e9 \\\"q\\\"\"}}");
            out.record(log, &uid, &line).unwrap();
            let mut f = Vec::new();
            if !uid.is_empty() {
                f.push(("uid".to_string(), uid));
            }
            f.push(("json".to_string(), line));
            want.push((log.to_string(), f));
        }
        out.finish().unwrap();
        assert_eq!((out.written(), out.dropped(), out.sent()), (3000, 0, 3000));
        let mut c = connect(&sock).unwrap();
        for log in ["conn", "http", "tls"] {
            let w: Vec<Vec<(String, String)>> = want
                .iter()
                .filter(|(l, _)| l == log)
                .map(|(_, f)| f.clone())
                .collect();
            assert_eq!(entries(&mut c, &format!("t:{log}")), w, "{log}");
        }
    }

    #[test]
    fn a_down_server_fills_the_queue_then_drops_and_a_returning_one_gets_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let sock = sock_in(&dir);
        // Nobody there yet: 50 records wait, 30 are dropped.
        let mut out = output(&sock, 50, Duration::from_secs(60));
        for i in 0..80 {
            out.record("conn", "C1", &format!("{{\"n\":{i}}}")).unwrap();
        }
        assert_eq!((out.written(), out.dropped()), (50, 30));
        let _server = Server::start(dir.path(), &sock);
        wait_for("the queued records", || out.sent() == 50);
        for i in 80..90 {
            out.record("conn", "C1", &format!("{{\"n\":{i}}}")).unwrap();
        }
        out.finish().unwrap();
        assert_eq!((out.sent(), out.dropped()), (60, 30));
        let mut c = connect(&sock).unwrap();
        let got: Vec<String> = entries(&mut c, "t:conn")
            .into_iter()
            .map(|f| f[1].1.clone())
            .collect();
        let want: Vec<String> = (0..50)
            .chain(80..90)
            .map(|i| format!("{{\"n\":{i}}}"))
            .collect();
        assert_eq!(got, want, "in order, the dropped ones missing");
    }

    #[test]
    fn a_server_killed_mid_run_costs_records_and_a_restarted_one_gets_the_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let sock = sock_in(&dir);
        let server = Server::start(dir.path(), &sock);
        let mut out = output(&sock, 20, Duration::from_secs(60));
        // 100 records, 20 at a time (the queue's size), each lot sent before the next.
        for lot in 0..5 {
            for i in lot * 20..lot * 20 + 20 {
                out.record("http", "C7", &format!("{{\"n\":{i}}}")).unwrap();
            }
            wait_for("the first records", || out.sent() == lot * 20 + 20);
        }
        assert_eq!(out.dropped(), 0);
        drop(server);
        // The thread finds the server gone on its next send; records beyond the queue drop.
        for i in 100..300 {
            out.record("http", "C7", &format!("{{\"n\":{i}}}")).unwrap();
        }
        // At most two queues' worth got in: a batch the thread took and holds, and a full
        // queue behind it.
        assert!(out.dropped() >= 160, "{}", out.dropped());
        assert_eq!(out.written() + out.dropped(), 300);
        let _server = Server::start(dir.path(), &sock);
        // Until the thread has reconnected and sent what it held, the queue is still full and
        // the next records would drop: wait for it, so that they go in.
        wait_for("the held records", || out.sent() == out.written());
        for i in 300..310 {
            out.record("http", "C7", &format!("{{\"n\":{i}}}")).unwrap();
        }
        out.finish().unwrap();
        let mut c = connect(&sock).unwrap();
        let got: Vec<String> = entries(&mut c, "t:http")
            .into_iter()
            .map(|f| f[1].1.clone())
            .collect();
        // The new server holds what was queued or sent after the kill (the old one's
        // entries died with it), ending with the records written after the restart.
        assert!(got.len() >= 10, "{got:?}");
        let tail: Vec<String> = (300..310).map(|i| format!("{{\"n\":{i}}}")).collect();
        assert_eq!(got[got.len() - 10..], tail[..]);
        assert_eq!(out.sent(), 100 + got.len() as u64);
        assert_eq!(out.sent() + out.dropped(), 310);
    }

    #[test]
    fn what_is_left_at_the_end_of_the_drain_time_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let sock = sock_in(&dir);
        let mut out = output(&sock, 1000, Duration::ZERO);
        for i in 0..40 {
            out.record("ssh", "", &format!("{{\"n\":{i}}}")).unwrap();
        }
        out.finish().unwrap();
        assert_eq!((out.written(), out.dropped(), out.sent()), (40, 40, 0));
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("redis://:s3cret@db:6379/2"),
            "redis://:***@db:6379/2"
        );
        assert_eq!(
            redact("redis://user:pw@db:6379"),
            "redis://user:***@db:6379"
        );
        assert_eq!(redact("unix:///run/redis.sock"), "unix:///run/redis.sock");
    }

    #[test]
    fn a_bad_url_is_an_error_at_open() {
        let e = RedisOutput::open(RedisOptions {
            url: "http://example".into(),
            prefix: "mos:".into(),
            maxlen: 10,
            queue: 10,
            drain: Duration::ZERO,
            prog: "test".into(),
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("not a Redis URL"), "{e:#}");
    }
}
