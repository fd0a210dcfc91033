//! `mos-ctl metrics --listen ADDR`: Prometheus metrics over HTTP, served by an unprivileged
//! process that asks the sensor over its control socket, so that the sensor opens no TCP port.
//!
//! HTTP/1 is hyper's, on a one-thread tokio runtime: connections are served concurrently, each
//! must send its request head within [`HEADER_TIMEOUT`] and is closed after
//! [`CONNECTION_LIFETIME`] whatever it does, and at most [`MAX_CONNECTIONS`] are open at once
//! (further ones wait in the kernel's queue). However many scrapes come, the sensor is asked at
//! most once per [`CACHE_FOR`]: every scrape in that time gets the same answer, a sensor that
//! cannot be reached included (a 503 with the reason).

use crate::query::query;
use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use shm_layout::status::render_prometheus;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Semaphore};

/// The exposition format's content type.
pub const CONTENT_TYPE_METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";
/// How long an answer from the sensor is served again before the sensor is asked anew.
pub const CACHE_FOR: Duration = Duration::from_secs(1);
/// How long a connection may take to send a whole request head (also between two requests on
/// a kept-alive connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection stays open, so that a client that never reads its answers cannot
/// hold one for ever.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// What the server needs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The sensor's control socket.
    pub control: PathBuf,
    /// How long one request to the sensor may take.
    pub timeout: Duration,
}

/// What a scrape gets.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    /// The metrics text.
    Metrics(Bytes),
    /// Why the sensor could not be asked (one line).
    Unavailable(String),
}

/// The last answer from the sensor and when it came; a refresh holds the lock, so that scrapes
/// arriving meanwhile wait for it instead of asking the sensor themselves.
#[derive(Debug)]
struct Scraper {
    control: PathBuf,
    timeout: Duration,
    last: Mutex<Option<(Instant, Answer)>>,
}

impl Scraper {
    /// The last answer if it is fresh, else a new one from the sensor. The refresh runs in a
    /// task of its own, so that a client that leaves mid-way cannot cancel it (and let the
    /// next scrape ask the sensor again at once).
    async fn answer(self: &Arc<Self>) -> Answer {
        let me = self.clone();
        tokio::spawn(async move { me.refresh().await })
            .await
            .unwrap_or_else(|e| Answer::Unavailable(format!("asking the sensor failed: {e}")))
    }

    async fn refresh(&self) -> Answer {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref() {
            if at.elapsed() < CACHE_FOR {
                return answer.clone();
            }
        }
        let (control, timeout) = (self.control.clone(), self.timeout);
        let answer = match tokio::task::spawn_blocking(move || query(&control, timeout)).await {
            Ok(Ok(report)) => Answer::Metrics(Bytes::from(render_prometheus(&report))),
            Ok(Err(e)) => Answer::Unavailable(format!("{e:#}")),
            Err(e) => Answer::Unavailable(format!("asking the sensor failed: {e}")),
        };
        // Said once per change, not once per scrape.
        match (last.as_ref().map(|(_, a)| a), &answer) {
            (None | Some(Answer::Metrics(_)), Answer::Unavailable(why)) => {
                eprintln!("mos-ctl: answering 503 until the sensor can be asked again: {why}")
            }
            (Some(Answer::Unavailable(_)), Answer::Metrics(_)) => {
                eprintln!("mos-ctl: the sensor answers again")
            }
            _ => {}
        }
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Answers one request: `GET /metrics` (or `HEAD`), 405 for another method there, 404
/// elsewhere.
async fn handle(
    req: Request<Incoming>,
    scraper: Arc<Scraper>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/metrics" {
        return Ok(text(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n".into(),
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served\n".into(),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    Ok(match scraper.answer().await {
        Answer::Metrics(body) => {
            let mut r = Response::new(Full::new(body));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_METRICS));
            r
        }
        Answer::Unavailable(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    })
}

/// Serves the metrics at `opts.listen` until the process is stopped (SIGINT or SIGTERM end it;
/// nothing needs saving). Fails only when it cannot start.
pub fn serve(opts: &Options) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(2)
        .build()
        .context("cannot start the HTTP server's runtime")?;
    rt.block_on(run(opts))
}

async fn run(opts: &Options) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen for metrics at {}", opts.listen))?;
    let at = listener.local_addr().context("the metrics listener")?;
    eprintln!(
        "mos-ctl: serving metrics at http://{at}/metrics from the sensor at {}",
        opts.control.display()
    );
    let scraper = Arc::new(Scraper {
        control: opts.control.clone(),
        timeout: opts.timeout,
        last: Mutex::new(None),
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(16 * 1024);
    loop {
        // A free slot first: past the limit, connections wait in the kernel's queue.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors, say: try again shortly rather than spin.
                eprintln!("mos-ctl: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let scraper = scraper.clone();
        let conn = http.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| handle(req, scraper.clone())),
        );
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{
        accept_with, bind, listen, recv, send, socket_with, AddressFamily, RecvFlags, SendFlags,
        SocketAddrUnix, SocketFlags, SocketType,
    };
    use shm_layout::control::{encode, SensorMsg};
    use shm_layout::status::StatusReport;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A sensor that answers every status request with a report counting them.
    fn fake_sensor(path: &std::path::Path, asked: Arc<AtomicU64>) {
        let l = socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        bind(&l, &SocketAddrUnix::new(path).unwrap()).unwrap();
        listen(&l, 16).unwrap();
        std::thread::spawn(move || {
            while let Ok(c) = accept_with(&l, SocketFlags::CLOEXEC) {
                let mut buf = [0u8; 256];
                if recv(&c, &mut buf[..], RecvFlags::empty()).is_err() {
                    continue;
                }
                let n = asked.fetch_add(1, Ordering::Relaxed) + 1;
                let report = StatusReport {
                    frames: n,
                    ..Default::default()
                };
                let _ = send(
                    &c,
                    &encode(&SensorMsg::Status(Box::new(report))),
                    SendFlags::NOSIGNAL,
                );
            }
        });
    }

    #[test]
    fn scrapes_within_a_second_share_one_request_and_a_missing_sensor_is_a_reason() {
        let dir = std::env::temp_dir().join(format!("mos-ctl-scraper-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.sock");
        let _ = std::fs::remove_file(&path);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let scraper = Arc::new(Scraper {
            control: path.clone(),
            timeout: Duration::from_secs(5),
            last: Mutex::new(None),
        });
        // No sensor: the reason, once per second too.
        let Answer::Unavailable(why) = rt.block_on(scraper.answer()) else {
            panic!("an answer without a sensor");
        };
        assert!(why.contains("no sensor listening at"), "{why}");
        assert!(!why.contains('\n'), "{why}");
        let asked = Arc::new(AtomicU64::new(0));
        fake_sensor(&path, asked.clone());
        std::thread::sleep(CACHE_FOR);
        let started = Instant::now();
        let answers: Vec<Answer> = rt.block_on(async {
            let mut all = Vec::new();
            for _ in 0..50 {
                all.push(scraper.answer().await);
            }
            all
        });
        let took = started.elapsed();
        assert!(answers.iter().all(|a| matches!(a, Answer::Metrics(_))));
        let n = asked.load(Ordering::Relaxed);
        // One request per started second at most (the first one at once).
        assert!(
            n >= 1 && n <= 1 + took.as_secs(),
            "{n} requests in {took:?}"
        );
        let Answer::Metrics(text) = &answers[0] else {
            unreachable!()
        };
        assert!(
            std::str::from_utf8(text)
                .unwrap()
                .contains("mos_frames_total 1\n"),
            "{text:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
