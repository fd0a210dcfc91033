//! `request_line_event`: HTTP request lines as a user-defined event.
//!
//! `REQUEST_LINE` is defined on `CONN_NEW_DATA` (`define_event`): its filter reads the bytes a
//! client just sent (the server side's stream, with `peek`) and says yes when a line of them
//! is an HTTP request line. For each such line the filter also raises one of nine child events
//! made with `alloc_event`, one per method (`GET`, `POST`, ...). Callbacks are registered on
//! `REQUEST_LINE` (it prints the lines the filter found) and on the child events (they count
//! the requests per method, telling the methods apart by `Event::id`):
//!
//! ```text
//! 2009-12-01 14:52:15.231861 10.0.0.5:51234 -> 93.184.216.34:80 GET /index.html
//! ...
//! request_line_event: 12 request lines in 11 REQUEST_LINE events (GET 10, POST 2)
//! ```
//!
//! The filter looks at every line of the client's stream, not only at the first bytes of each
//! new piece of data: two pipelined requests can arrive in one segment, and a request line can
//! be split between two. The piece of a line not yet ended is kept with the connection
//! (`set_uctx`). A request line is `METHOD SP target SP HTTP/d.d`, at most 8192 bytes; bytes
//! the capture lost end the line they fall in, which is then not looked at. `http_requests`
//! follows the same rules, so both print the same request lines with the same times (and
//! miss the same ones: a request right after a body that does not end with a newline).

use clap::Parser;
use mos_client::{
    AttachOptions, Ctx, Errno, Event, EventMask, Hook, MonitorFilter, Mos, Peek, RunEnd, Side,
    SockId, DEFAULT_CONTROL, MOS_SIDE_BOTH,
};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

/// Prints each HTTP request line a client sends, found by a user-defined event's filter, and
/// the count per method at the end (on stderr).
#[derive(Parser, Debug)]
#[command(name = "request_line_event")]
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

/// Longest line looked at, LF excluded.
const MAX_LINE: usize = 8192;

/// The piece of the client's current line read so far, kept with each connection.
#[derive(Debug, Default)]
struct Carry {
    line: Vec<u8>,
    /// The current line is not looked at: too long, or cut by lost bytes.
    skip: bool,
}

/// A request line the filter found, waiting for `REQUEST_LINE`'s callback.
#[derive(Debug)]
struct Found {
    ts_ns: u64,
    peers: [SocketAddr; 2],
    method: usize,
    target: String,
}

/// What the filter and the callbacks share.
#[derive(Debug, Default)]
struct State {
    found: VecDeque<Found>,
    per_method: [u64; METHODS.len()],
    events: u64,
    lines: u64,
    broken: bool,
}

/// The method index and the target of a request line (`METHOD SP target SP HTTP/d.d`).
fn request_line(line: &[u8]) -> Option<(usize, &[u8])> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let m = METHODS
        .iter()
        .position(|m| line.starts_with(m.as_bytes()) && line.get(m.len()) == Some(&b' '))?;
    let rest = &line[METHODS[m].len() + 1..];
    let space = rest.iter().rposition(|&b| b == b' ')?;
    let (target, version) = (&rest[..space], &rest[space + 1..]);
    let version_ok = matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
        if major.is_ascii_digit() && minor.is_ascii_digit());
    (version_ok && !target.is_empty()).then_some((m, target))
}

/// Splits `bytes` into lines, continuing `carry`; calls `line` with each line ended here.
fn lines(carry: &mut Carry, mut bytes: &[u8], mut line: impl FnMut(&[u8])) {
    while !bytes.is_empty() {
        let end = bytes.iter().position(|&b| b == b'\n');
        let piece = &bytes[..end.unwrap_or(bytes.len())];
        bytes = &bytes[end.map_or(bytes.len(), |i| i + 1)..];
        if !carry.skip {
            if carry.line.len() + piece.len() > MAX_LINE {
                carry.skip = true;
                carry.line.clear();
            } else {
                carry.line.extend_from_slice(piece);
            }
        }
        if end.is_some() {
            if !carry.skip {
                line(&carry.line);
            }
            carry.line.clear();
            carry.skip = false;
        }
    }
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

/// `REQUEST_LINE`'s filter: reads what the client sent in this `CONN_NEW_DATA`, queues each
/// request line found, raises its method's child event, and says whether there was one.
fn find_requests(
    ctx: &mut Ctx<'_>,
    ev: &Event,
    sock: SockId,
    children: &[EventMask],
    state: &RefCell<State>,
    buf: &mut [u8],
) -> bool {
    // The base event comes for both sides; the client's bytes are in the server side's
    // stream.
    let (Some(flow), Some(Side::Svr)) = (ev.flow, ev.side) else {
        return false;
    };
    let Ok(peers) = ctx.getpeername(flow, MOS_SIDE_BOTH) else {
        return false;
    };
    let peers = [peers[0], peers[1]];
    // Taken out while the stream is read (`peek` needs the context), put back after.
    let mut carry = ctx.take_uctx::<Carry>(sock, flow).unwrap_or_default();
    let mut found = Vec::new();
    loop {
        match ctx.peek(sock, flow, Side::Svr, buf) {
            Ok(Peek::Data(n)) => lines(&mut carry, &buf[..n], |line| {
                found.extend(request_line(line).map(|(m, t)| (m, show(t))));
            }),
            Ok(Peek::Gap { .. } | Peek::Overrun { .. }) => {
                carry.line.clear();
                carry.skip = true;
            }
            Ok(Peek::NoData) => break,
            Err(e) => {
                if e.errno() != Errno::EBADF {
                    eprintln!("request_line_event: flow {flow}: {e}");
                }
                break;
            }
        }
    }
    let _ = ctx.set_uctx(sock, flow, carry);
    let mut s = state.borrow_mut();
    for (method, target) in &found {
        s.found.push_back(Found {
            ts_ns: ev.ts_ns,
            peers,
            method: *method,
            target: target.clone(),
        });
        // Its callbacks run once this filter returns, one call per raise.
        if let Err(e) = ctx.raise_event(children[*method]) {
            eprintln!("request_line_event: {e}");
        }
    }
    !found.is_empty()
}

fn run(args: &Args) -> mos_client::Result<RunEnd> {
    let mut mos = Mos::attach(&AttachOptions {
        control: args.control.clone(),
        name: "request_line_event".into(),
        wait: Duration::from_secs_f64(args.wait.max(0.0)),
        ..AttachOptions::default()
    })?;
    let stop = mos.stop_handle();
    let _ = ctrlc::set_handler(move || stop.stop());
    let sock = mos.socket()?;
    mos.bind_monitor_filter(
        sock,
        &MonitorFilter {
            stream_syn_filter: Some(&args.filter),
            ..MonitorFilter::default()
        },
    )?;
    let state = Rc::new(RefCell::new(State::default()));

    // One child event per method, raised from the filter of an event based on
    // CONN_NEW_DATA, their parent.
    let children = METHODS
        .iter()
        .map(|_| mos.alloc_event(EventMask::CONN_NEW_DATA))
        .collect::<mos_client::Result<Vec<EventMask>>>()?;
    let (s, kids) = (state.clone(), children.clone());
    let mut buf = vec![0u8; 64 * 1024];
    let request_line_ev = mos.define_event(EventMask::CONN_NEW_DATA, move |ctx, ev| {
        find_requests(ctx, ev, sock, &kids, &s, &mut buf)
    })?;

    let s = state.clone();
    mos.register_callback(sock, request_line_ev, Hook::Null, move |ctx, _ev| {
        let mut s = s.borrow_mut();
        s.events += 1;
        let mut out = std::io::stdout().lock();
        while let Some(f) = s.found.pop_front() {
            s.lines += 1;
            let [client, server] = f.peers;
            let line = format!(
                "{} {client} -> {server} {} {}",
                utc(f.ts_ns),
                METHODS[f.method],
                f.target
            );
            if writeln!(out, "{line}").is_err() {
                s.broken = true;
                ctx.stop();
            }
        }
    })?;

    let any_child = children.iter().fold(EventMask(0), |m, &c| m | c);
    let (s, kids) = (state.clone(), children);
    mos.register_callback(sock, any_child, Hook::Null, move |_ctx, ev| {
        // `ev.id` is the child event this call is for.
        if let Some(m) = kids.iter().position(|&k| k == ev.id) {
            s.borrow_mut().per_method[m] += 1;
        }
    })?;

    let end = mos.run()?;
    let s = state.borrow();
    let per: Vec<String> = METHODS
        .iter()
        .zip(s.per_method)
        .filter(|(_, n)| *n > 0)
        .map(|(m, n)| format!("{m} {n}"))
        .collect();
    eprintln!(
        "request_line_event: {} request lines in {} REQUEST_LINE events ({})",
        s.lines,
        s.events,
        per.join(", ")
    );
    Ok(end)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(RunEnd::Stopped) => ExitCode::from(130),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("request_line_event: {e}");
            ExitCode::FAILURE
        }
    }
}
