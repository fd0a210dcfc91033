//! `--metrics-listen`: Prometheus metrics over HTTP (`GET /metrics`).
//!
//! One thread accepts connections and answers one request on each, then closes it. The text
//! comes from the control thread, which renders the same report it sends `mos-ctl` (asked over
//! a channel), so this thread never reads the sensor's state itself and never touches the
//! packet path. A client that sends nothing is dropped after the read timeout.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::Duration;

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long a client may take to send its request, and to take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the control thread may take to render the metrics.
const RENDER_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request head read.
const MAX_REQUEST: usize = 8192;

/// A request for the metrics text: the control thread sends it back on the channel given.
pub(super) type MetricsRequest = Sender<String>;

/// Binds `addr` (`HOST:PORT`, such as `127.0.0.1:9090` or `[::]:9090`).
pub fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    use anyhow::Context as _;
    TcpListener::bind(addr).with_context(|| {
        format!("cannot listen for metrics at {addr:?} (--metrics-listen takes HOST:PORT)")
    })
}

/// Serves `listener` until `stop` is set, asking `control` for each answer.
pub(super) fn serve(listener: TcpListener, control: Sender<MetricsRequest>, stop: Arc<AtomicBool>) {
    if listener.set_nonblocking(true).is_err() {
        crate::log_error!("the metrics listener cannot be made non-blocking; not serving");
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => answer(stream, &control),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Reads one request head and answers it.
fn answer(mut stream: TcpStream, control: &Sender<MetricsRequest>) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(IO_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(IO_TIMEOUT)).is_err()
    {
        return;
    }
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_REQUEST {
            break;
        }
    }
    let (status, body) = match route(&head) {
        Route::Metrics => {
            let (tx, rx) = mpsc::channel();
            match control
                .send(tx)
                .ok()
                .and_then(|()| rx.recv_timeout(RENDER_TIMEOUT).ok())
            {
                Some(text) => ("200 OK", text),
                None => (
                    "503 Service Unavailable",
                    "the sensor is shutting down\n".to_string(),
                ),
            }
        }
        Route::NotFound => ("404 Not Found", "not found: try /metrics\n".to_string()),
        Route::BadMethod => ("405 Method Not Allowed", "only GET is served\n".to_string()),
        Route::Bad => ("400 Bad Request", "bad request\n".to_string()),
    };
    let mut reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        if status.starts_with("200") {
            CONTENT_TYPE
        } else {
            "text/plain; charset=utf-8"
        },
        body.len()
    )
    .into_bytes();
    reply.extend_from_slice(body.as_bytes());
    let _ = stream.write_all(&reply);
    let _ = stream.flush();
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    BadMethod,
    Bad,
}

/// Reads the request line of `head`.
fn route(head: &[u8]) -> Route {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return Route::Bad;
    };
    let mut f = line.split_whitespace();
    let (Some(method), Some(target)) = (f.next(), f.next()) else {
        return Route::Bad;
    };
    if method != "GET" {
        return Route::BadMethod;
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    if path == "/metrics" {
        Route::Metrics
    } else {
        Route::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed_by_method_and_path() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::BadMethod);
        assert_eq!(route(b""), Route::Bad);
        assert_eq!(route(b"\xff\xfe /metrics\r\n"), Route::Bad);
    }

    #[test]
    fn the_listener_answers_from_the_control_channel_and_stops() {
        let listener = bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel::<MetricsRequest>();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let server = std::thread::spawn(move || serve(listener, tx, stop2));
        let control = std::thread::spawn(move || {
            while let Ok(reply) = rx.recv() {
                let _ = reply.send("# HELP x y\n# TYPE x gauge\nx 1\n".into());
            }
        });
        let get = |req: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(
            ok.ends_with("\r\n\r\n# HELP x y\n# TYPE x gauge\nx 1\n"),
            "{ok}"
        );
        let missing = get("GET /other HTTP/1.1\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap();
        control.join().unwrap();
    }
}
