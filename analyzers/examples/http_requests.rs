//! `http_requests`: one line per HTTP request a client sends, with the capture time, the client
//! and the server, the method, the request target and the `Host` header when there is one:
//!
//! ```text
//! 2009-12-01 14:52:15.231861 10.0.0.5:51234 -> 93.184.216.34:80 GET /index.html host=example.com
//! ```
//!
//! The sensor runs the SYN filter (`tcp port 80` unless `--filter` says otherwise), so only those
//! connections reach this process. What a client sends is in the *server* side's receive stream
//! (`Side::Svr`), read with `peek` on that side's `CONN_NEW_DATA`; the line being read and the
//! request whose headers are being read are kept with the connection (`set_uctx`). A connection
//! whose first line is not a request line is not HTTP: the analyzer stops monitoring it
//! (`MOS_STOP_MON`), and the sensor sends no more of its events.
//!
//! The rules, which `tests/tests/examples.rs` applies to the same captures on its own:
//! - a request line is a line (bytes up to a LF, one CR before it dropped, at most
//!   [`MAX_LINE`] bytes) that is `METHOD SP target SP HTTP/d.d` with one of [`METHODS`];
//! - any line of the client's stream may be one (requests after a body, pipelined requests);
//! - its `Host` is the first `Host:` header among the lines that follow it, up to an empty line
//!   or the next request line;
//! - bytes the capture lost end the line they fall in, which is then not looked at;
//! - bytes outside `!`..`~` in a target or host are shown as `%XX`.
//!
//! Lines, not `Content-Length`: a request that follows a body not ended by a newline (a POST
//! on a kept-alive connection) runs into it and is not seen; an HTTP parser would count the
//! body's bytes.
//!
//! Run it beside a sensor: `mos-sensor --pcap CAPTURE --control /tmp/mos.sock --wait-analyzers 1`
//! and `cargo run --release -p mos-analyzers --example http_requests -- --control /tmp/mos.sock`.

use clap::Parser;
use mos_client::{
    AttachOptions, Ctx, Errno, Event, EventKind, EventMask, Filter, FlowId, MonitorFilter, Mos,
    Peek, RunEnd, Side, SockId, DEFAULT_CONTROL, MOS_SIDE_BOTH,
};
use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

/// Logs each HTTP request line (method, target, Host header) with its capture time, client
/// and server. A summary goes to stderr at the end.
#[derive(Parser, Debug)]
#[command(name = "http_requests")]
struct Args {
    /// The sensor's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL)]
    control: PathBuf,
    /// Seconds to keep trying to attach while no sensor listens at --control yet (0: once).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    wait: f64,
    /// The connections to look at: a libpcap expression the sensor runs on each connection's
    /// first packet.
    #[arg(long, value_name = "EXPR", default_value = "tcp port 80")]
    filter: String,
}

/// The methods a request line may start with.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PATCH",
];

/// Longest line looked at, LF excluded; a longer one is skipped.
const MAX_LINE: usize = 8192;

/// A request whose header lines are being read.
#[derive(Debug)]
struct Request {
    /// Capture time of the event that completed the request line.
    ts_ns: u64,
    method: &'static str,
    target: String,
    host: Option<String>,
}

/// What is kept with each connection (its user context): who talks, and where the client's
/// stream is in its lines.
#[derive(Debug)]
struct Client {
    client: SocketAddr,
    server: SocketAddr,
    /// The line read so far (bytes after the last LF).
    line: Vec<u8>,
    /// The line in progress is not looked at: too long, or cut by lost bytes.
    skip_line: bool,
    /// The connection's first line was seen (and was a request line).
    first_seen: bool,
    request: Option<Request>,
}

impl Client {
    fn new(client: SocketAddr, server: SocketAddr) -> Client {
        Client {
            client,
            server,
            line: Vec::new(),
            skip_line: false,
            first_seen: false,
            request: None,
        }
    }

    /// Takes bytes the client sent, read during an event of time `ts_ns`; requests whose
    /// headers ended go to `done`. Returns false once the first line shows this is not HTTP.
    fn feed(&mut self, mut bytes: &[u8], ts_ns: u64, done: &mut Vec<Request>) -> bool {
        while !bytes.is_empty() {
            let end = bytes.iter().position(|&b| b == b'\n');
            let piece = &bytes[..end.unwrap_or(bytes.len())];
            bytes = &bytes[end.map_or(bytes.len(), |i| i + 1)..];
            if !self.skip_line {
                if self.line.len() + piece.len() > MAX_LINE {
                    self.skip_line = true;
                    self.line.clear();
                    if !self.first_seen {
                        return false;
                    }
                } else {
                    self.line.extend_from_slice(piece);
                }
            }
            if end.is_some() {
                let line = std::mem::take(&mut self.line);
                if !self.skip_line && !self.on_line(&line, ts_ns, done) {
                    return false;
                }
                self.line = line;
                self.line.clear();
                self.skip_line = false;
            }
        }
        true
    }

    /// The client's stream skipped bytes: the line they fall in is not looked at.
    fn lost(&mut self) {
        self.line.clear();
        self.skip_line = true;
    }

    fn on_line(&mut self, line: &[u8], ts_ns: u64, done: &mut Vec<Request>) -> bool {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let req = request_line(line);
        if !self.first_seen {
            self.first_seen = true;
            if req.is_none() {
                return false;
            }
        }
        if let Some((method, target)) = req {
            done.extend(self.request.take());
            self.request = Some(Request {
                ts_ns,
                method,
                target: show(target),
                host: None,
            });
        } else if line.is_empty() {
            done.extend(self.request.take());
        } else if let Some(r) = self.request.as_mut().filter(|r| r.host.is_none()) {
            r.host = header(line, "host").map(show);
        }
        true
    }
}

/// `METHOD SP target SP HTTP/d.d`: the method and the target.
fn request_line(line: &[u8]) -> Option<(&'static str, &[u8])> {
    let method = METHODS
        .into_iter()
        .find(|m| line.starts_with(m.as_bytes()) && line.get(m.len()) == Some(&b' '))?;
    let rest = &line[method.len() + 1..];
    let space = rest.iter().rposition(|&b| b == b' ')?;
    let (target, version) = (&rest[..space], &rest[space + 1..]);
    let version_ok = matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
        if major.is_ascii_digit() && minor.is_ascii_digit());
    (version_ok && !target.is_empty()).then_some((method, target))
}

/// The value of header `name` (any case) if `line` is that header.
fn header<'a>(line: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let colon = line.iter().position(|&b| b == b':')?;
    if !line[..colon].eq_ignore_ascii_case(name.as_bytes()) {
        return None;
    }
    Some(line[colon + 1..].trim_ascii())
}

/// Bytes as printable text: `!` to `~` as they are, anything else as `%XX`.
fn show(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Capture time (ns since the Unix epoch) as UTC, `YYYY-MM-DD HH:MM:SS.uuuuuu`.
fn utc(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (days, day_secs) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's days_from_civil, inverted).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06}",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60,
        ns % 1_000_000_000 / 1000
    )
}

/// The analyzer's state, shared by its callback and `main`.
struct Log {
    sock: SockId,
    buf: Vec<u8>,
    requests: u64,
    http_conns: u64,
    not_http: u64,
    /// stdout failed (a closed pipe): the run stops.
    broken: bool,
}

impl Log {
    /// `CONN_NEW_DATA` or `CONN_END` of the server side: what the client sent.
    fn on_event(&mut self, ctx: &mut Ctx<'_>, flow: FlowId, ev: &Event) {
        // The context is taken out while the stream is read (it borrows from `ctx`, which
        // `peek` needs), and put back after.
        let mut c = match ctx.take_uctx::<Client>(self.sock, flow) {
            Some(c) => c,
            None => match ctx.getpeername(flow, MOS_SIDE_BOTH).as_deref() {
                Ok([client, server]) => Client::new(*client, *server),
                _ => return,
            },
        };
        let was_http = c.first_seen;
        let mut done = Vec::new();
        let http = self.read(ctx, flow, ev.ts_ns, &mut c, &mut done);
        if c.first_seen && http && !was_http {
            self.http_conns += 1;
        }
        if matches!(ev.kind, EventKind::ConnEnd { .. }) {
            // The connection's last event here: a request whose headers never ended is
            // printed as it is.
            done.extend(c.request.take());
        }
        for r in done {
            self.print(&c, &r);
        }
        if !http {
            self.not_http += 1;
            // No more events of this connection for this socket; the sensor is told.
            let _ = ctx.stop_monitoring(self.sock, flow, MOS_SIDE_BOTH);
        } else if !matches!(ev.kind, EventKind::ConnEnd { .. }) {
            let _ = ctx.set_uctx(self.sock, flow, c);
        }
        if self.broken {
            ctx.stop();
        }
    }

    /// Reads the client's new bytes (inside the callback `peek` stops where the event
    /// stopped). Returns false once the connection shows it is not HTTP.
    fn read(
        &mut self,
        ctx: &mut Ctx<'_>,
        flow: FlowId,
        ts_ns: u64,
        c: &mut Client,
        done: &mut Vec<Request>,
    ) -> bool {
        loop {
            match ctx.peek(self.sock, flow, Side::Svr, &mut self.buf) {
                Ok(Peek::Data(n)) => {
                    if !c.feed(&self.buf[..n], ts_ns, done) {
                        return false;
                    }
                }
                Ok(Peek::Gap { .. } | Peek::Overrun { .. }) => c.lost(),
                Ok(Peek::NoData) => return true,
                // A connection gone (EBADF) has nothing more to read.
                Err(e) if e.errno() == Errno::EBADF => return true,
                Err(e) => {
                    eprintln!("http_requests: flow {flow}: {e}");
                    return true;
                }
            }
        }
    }

    fn print(&mut self, c: &Client, r: &Request) {
        self.requests += 1;
        let host = r.host.as_ref().map(|h| format!(" host={h}"));
        let line = format!(
            "{} {} -> {} {} {}{}",
            utc(r.ts_ns),
            c.client,
            c.server,
            r.method,
            r.target,
            host.unwrap_or_default()
        );
        if writeln!(std::io::stdout().lock(), "{line}").is_err() {
            self.broken = true;
        }
    }
}

fn run(args: &Args) -> mos_client::Result<RunEnd> {
    let mut mos = Mos::attach(&AttachOptions {
        control: args.control.clone(),
        name: "http_requests".into(),
        wait: Duration::from_secs_f64(args.wait.max(0.0)),
        ..AttachOptions::default()
    })?;
    let stop = mos.stop_handle();
    // Ctrl-C ends the run loop; dropping `mos` then detaches.
    let _ = ctrlc::set_handler(move || stop.stop());
    let sock = mos.socket()?;
    mos.bind_monitor_filter(
        sock,
        &MonitorFilter {
            stream_syn_filter: Some(&args.filter),
            ..MonitorFilter::default()
        },
    )?;
    let log = Rc::new(RefCell::new(Log {
        sock,
        buf: vec![0; 64 * 1024],
        requests: 0,
        http_conns: 0,
        not_http: 0,
        broken: false,
    }));
    let state = log.clone();
    // Only the server side: its stream holds what the client sent. Any hook (`None`):
    // `CONN_NEW_DATA` and `CONN_END` are raised at `MOS_NULL` anyway.
    let wanted = Filter {
        events: EventMask::CONN_NEW_DATA | EventMask::CONN_END,
        hook: None,
        side: Some(Side::Svr),
    };
    mos.register_filtered(sock, wanted, move |ctx, ev| {
        if let Some(flow) = ev.flow {
            state.borrow_mut().on_event(ctx, flow, ev);
        }
    })?;
    let end = mos.run()?;
    let l = log.borrow();
    eprintln!(
        "http_requests: {} requests in {} HTTP connections; {} connections were not HTTP (monitoring stopped)",
        l.requests, l.http_conns, l.not_http
    );
    Ok(end)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(RunEnd::Stopped) => ExitCode::from(130),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http_requests: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(stream: &[&[u8]]) -> (Vec<String>, bool) {
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let mut c = Client::new(a, b);
        let mut done = Vec::new();
        let mut http = true;
        for (i, piece) in stream.iter().enumerate() {
            http &= c.feed(piece, i as u64, &mut done);
        }
        done.extend(c.request.take());
        let shown = done
            .iter()
            .map(|r| format!("{}@{} {} {:?}", r.method, r.ts_ns, r.target, r.host))
            .collect();
        (shown, http)
    }

    #[test]
    fn request_lines_split_across_reads_and_pipelined_are_found_with_their_host() {
        let (got, http) = requests(&[
            b"GET /a HTTP/1.1\r\nHo",
            b"st: x.org \r\n\r\nPOST /b%20c HTTP/1.0\r\nContent-Length: 0\r\n\r\nGET /pipe",
            b"lined HTTP/1.1\r\n\r\nGET /with space HTTP/1.1\r\nhost: y\r\n",
        ]);
        assert!(http);
        assert_eq!(
            got,
            [
                "GET@0 /a Some(\"x.org\")",
                "POST@1 /b%20c None",
                "GET@2 /pipelined None",
                "GET@2 /with%20space Some(\"y\")"
            ]
        );
    }

    #[test]
    fn a_first_line_that_is_no_request_line_is_not_http() {
        assert_eq!(requests(&[b"SSH-2.0-OpenSSH\r\n"]), (vec![], false));
        assert_eq!(requests(&[&[b'x'; MAX_LINE + 1]]), (vec![], false));
        assert_eq!(
            requests(&[b"get / HTTP/1.1\r\nGET / HTTP/1.1\r\n"]),
            (vec![], false)
        );
        // A body not ended by a newline runs into the next request line: a line-based reader
        // does not see that request (a parser that counts Content-Length would).
        let (got, http) = requests(&[b"POST / HTTP/1.1\r\n\r\nbodyGET /next HTTP/1.1\r\n"]);
        assert!(http);
        assert_eq!(got, ["POST@0 / None"]);
    }

    #[test]
    fn capture_time_prints_as_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000000");
        assert_eq!(utc(1_259_679_135_231_861_000), "2009-12-01 14:52:15.231861");
        assert_eq!(utc(951_782_400_000_000_000), "2000-02-29 00:00:00.000000");
    }
}
