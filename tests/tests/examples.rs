//! The example analyzers of `analyzers/examples/` (`http_requests`, `conn_summary`,
//! `request_line_event`, the ones `docs/ANALYZERS.md` walks through) against the real sensor,
//! replaying corpus captures losslessly beside `mos-dump`.
//!
//! What each must print is worked out here, on its own, from `mos-dump`'s output for the same
//! run and from tcpdump:
//! - the connections a SYN filter takes are those whose first packet (the one at the
//!   connection's `start_ts`) tcpdump's filter takes, the same libpcap expression;
//! - the request lines are parsed from `mos-dump`'s client-to-server stream files with the rules
//!   the examples' docs state (a line up to LF, `METHOD SP target SP HTTP/d.d`, at most 8192
//!   bytes; for `http_requests`, a connection whose first line is something else is not HTTP,
//!   and a request's host is the first `Host:` header before an empty line or the next request
//!   line). Connections whose client stream lost bytes are left out on both sides;
//! - `conn_summary`'s lines are `flows.jsonl`'s records: the same connections, start times,
//!   byte counts each way, lost bytes, durations.
//!
//! `http_requests` and `request_line_event` are also held to each other: on the connections
//! `http_requests` takes as HTTP they print the same request lines with the same capture times.
//! `conn_summary` runs with a status timer on the capture clock, whose lines must be a second
//! of capture time apart at least.
//!
//! Needs the release binaries and examples (`cargo build --release --bins --examples`) and
//! tcpdump (scripts/setup.sh installs it).

use anyhow::{bail, ensure, Context, Result};
use mos_tests::flows::{parse_flows, FlowRecord};
use mos_tests::locate::{bin, corpus_dir, profile_dir, sensor_bin};
use mos_tests::procs::{assert_no_panic, cmd, tail, wait_for_socket, Proc};
use mos_tests::runner::ScratchDir;
use mos_tests::tcpdump::taken;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest one capture's run may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The methods a request line may start with (the examples' list).
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PATCH",
];

/// The longest line the examples look at, LF excluded.
const MAX_LINE: usize = 8192;

// ---------------------------------------------------------------------------------------------
// Running

/// An example analyzer built in the same profile: `target/<profile>/examples/NAME`, found
/// beside the other binaries.
fn example(name: &str) -> Result<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("MOS_BIN_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(p) = std::env::var_os("MOS_SENSOR_BIN") {
        if let Some(d) = Path::new(&p).parent() {
            dirs.push(d.to_path_buf());
        }
    }
    dirs.push(profile_dir()?);
    for d in &dirs {
        let p = d.join("examples").join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "example {name} not found under {:?}/examples: build it with \
         `cargo build --release -p mos-analyzers --examples`",
        dirs
    )
}

/// What one replay gave.
struct Outputs {
    flows: Vec<FlowRecord>,
    dump: PathBuf,
    http: String,
    http_err: String,
    rle: String,
    rle_err: String,
    conn: String,
    conn_err: String,
}

/// Replays `pcap` to `mos-dump` (every connection), `http_requests` and `request_line_event`
/// (`--filter filter`) and `conn_summary` (every connection, a status line every second of
/// capture time), all attached before the replay starts.
fn replay(work: &Path, pcap: &Path, filter: &str) -> Result<Outputs> {
    let control = work.join("c.sock");
    let dump = work.join("dump");
    let mut sensor = Proc::spawn(
        "mos-sensor",
        cmd(
            &sensor_bin()?,
            &[
                &"--pcap",
                &pcap,
                &"--control",
                &control,
                &"--wait-analyzers",
                &"4",
                &"--quiet",
            ],
        ),
        work,
    )?;
    wait_for_socket(&mut sensor, &control, TIMEOUT)?;
    let run = |name: &str, program: PathBuf, args: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"--control", &control];
        all.extend_from_slice(args);
        Proc::spawn(name, cmd(&program, &all), work)
    };
    let mut analyzers = [
        run("mos-dump", bin("mos-dump")?, &[&"--out", &dump])?,
        run(
            "http_requests",
            example("http_requests")?,
            &[&"--filter", &filter],
        )?,
        run(
            "request_line_event",
            example("request_line_event")?,
            &[&"--filter", &filter],
        )?,
        run(
            "conn_summary",
            example("conn_summary")?,
            &[&"--every", &"1", &"--capture-clock"],
        )?,
    ];
    // An analyzer that fails (a filter refused) leaves the sensor waiting for it: stop then.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        for a in analyzers.iter_mut() {
            if let Some(st) = a.poll()? {
                ensure!(
                    st.success(),
                    "{} exited with {st}; stderr:\n{}",
                    a.name(),
                    tail(&a.stderr())
                );
            }
        }
        if sensor.poll()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "the replay of {} took more than {TIMEOUT:?}; sensor stderr:\n{}",
                pcap.display(),
                tail(&sensor.stderr())
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    sensor.expect_code(0, TIMEOUT)?;
    for a in analyzers.iter_mut() {
        a.expect_code(0, TIMEOUT)?;
        assert_no_panic(a)?;
    }
    let [_, http, rle, conn] = &analyzers;
    let flows = parse_flows(&std::fs::read_to_string(dump.join("flows.jsonl"))?)?;
    Ok(Outputs {
        flows,
        dump,
        http: http.stdout(),
        http_err: http.stderr(),
        rle: rle.stdout(),
        rle_err: rle.stderr(),
        conn: conn.stdout(),
        conn_err: conn.stderr(),
    })
}

// ---------------------------------------------------------------------------------------------
// Request lines, parsed from the dump

/// `METHOD SP target SP HTTP/d.d` (one CR before the LF already dropped): method and target.
fn parse_request_line(line: &[u8]) -> Option<(&'static str, &[u8])> {
    let sp = line.iter().position(|&b| b == b' ')?;
    let method = METHODS.into_iter().find(|m| m.as_bytes() == &line[..sp])?;
    let rest = &line[sp + 1..];
    let last = rest.iter().rposition(|&b| b == b' ')?;
    let version = &rest[last + 1..];
    let ok = version.len() == 8
        && version.starts_with(b"HTTP/")
        && version[5].is_ascii_digit()
        && version[6] == b'.'
        && version[7].is_ascii_digit();
    (ok && last > 0).then_some((method, &rest[..last]))
}

/// Printable: `!`..`~` kept, other bytes `%XX`.
fn escape(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if (0x21..=0x7e).contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

/// A request as the examples print it, without the time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Req {
    client: String,
    server: String,
    method: String,
    target: String,
    /// `http_requests` only.
    host: Option<String>,
}

/// What the examples should print for the connections a filter takes.
#[derive(Debug, Default)]
struct Expected {
    /// `http_requests`'s requests.
    http: Vec<Req>,
    /// `request_line_event`'s request lines (no host).
    lines: Vec<Req>,
    /// Connections whose first line is not a request line.
    not_http: usize,
    /// Connections left out because their client stream lost bytes.
    lossy: usize,
    /// Their endpoint pairs.
    lossy_pairs: HashSet<(String, String)>,
}

/// The stream's complete lines (ended by LF, CR dropped) no longer than [`MAX_LINE`].
fn short_lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pieces: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    pieces.pop(); // the bytes after the last LF: no line
    pieces
        .into_iter()
        .filter(|l| l.len() <= MAX_LINE)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

fn expect_stream(client: &str, server: &str, data: &[u8], e: &mut Expected) {
    let req = |method: &str, target: &[u8], host: Option<String>| Req {
        client: client.to_string(),
        server: server.to_string(),
        method: method.to_string(),
        target: escape(target),
        host,
    };
    for line in short_lines(data) {
        if let Some((m, t)) = parse_request_line(line) {
            e.lines.push(req(m, t, None));
        }
    }
    // http_requests: the first line decides.
    let first_len = data.iter().position(|&b| b == b'\n');
    let first_too_long = first_len.unwrap_or(data.len()) > MAX_LINE;
    let first_not_request = first_len.is_some_and(|n| {
        let l = &data[..n];
        parse_request_line(l.strip_suffix(b"\r").unwrap_or(l)).is_none()
    });
    if first_too_long || first_not_request {
        e.not_http += 1;
        return;
    }
    let mut open: Option<Req> = None;
    for line in short_lines(data) {
        if let Some((m, t)) = parse_request_line(line) {
            e.http.extend(open.take());
            open = Some(req(m, t, None));
        } else if line.is_empty() {
            e.http.extend(open.take());
        } else if let Some(r) = open.as_mut().filter(|r| r.host.is_none()) {
            if let Some(colon) = line.iter().position(|&b| b == b':') {
                if line[..colon].eq_ignore_ascii_case(b"host") {
                    let v = &line[colon + 1..];
                    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'\x0c');
                    let start = v.iter().position(|b| !ws(b)).unwrap_or(v.len());
                    let end = v.iter().rposition(|b| !ws(b)).map_or(start, |i| i + 1);
                    r.host = Some(escape(&v[start..end]));
                }
            }
        }
    }
    e.http.extend(open);
}

fn expected(out: &Outputs, taken: &[bool]) -> Result<Expected> {
    let mut e = Expected::default();
    for (f, _) in out.flows.iter().zip(taken).filter(|(_, t)| **t) {
        if f.c2s_lost > 0 {
            e.lossy += 1;
            e.lossy_pairs.insert((f.client.clone(), f.server.clone()));
            continue;
        }
        let data = match &f.c2s_file {
            Some(name) => std::fs::read(out.dump.join(name))?,
            None => Vec::new(),
        };
        expect_stream(&f.client, &f.server, &data, &mut e);
    }
    // A connection whose pair is reused by a lossy one cannot be told apart in the output.
    let lossy = e.lossy_pairs.clone();
    let keep = |r: &Req| !lossy.contains(&(r.client.clone(), r.server.clone()));
    e.http.retain(keep);
    e.lines.retain(keep);
    Ok(e)
}

// ---------------------------------------------------------------------------------------------
// The examples' output

/// `DATE TIME CLIENT -> SERVER METHOD TARGET [host=HOST]`: (time, request).
fn parse_requests(text: &str, with_host: bool) -> Result<Vec<(String, Req)>> {
    text.lines()
        .map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            ensure!(
                t.len() >= 7 && t[3] == "->" && t.len() <= 7 + usize::from(with_host),
                "unexpected line {l:?}"
            );
            let host = match t.get(7) {
                Some(h) => Some(
                    h.strip_prefix("host=")
                        .with_context(|| format!("unexpected line {l:?}"))?
                        .to_string(),
                ),
                None => None,
            };
            Ok((
                format!("{} {}", t[0], t[1]),
                Req {
                    client: t[2].to_string(),
                    server: t[4].to_string(),
                    method: t[5].to_string(),
                    target: t[6].to_string(),
                    host,
                },
            ))
        })
        .collect()
}

/// Capture time as the examples print it, UTC: seconds since the epoch, counted out by years
/// and months.
fn utc(us: i64) -> String {
    let (mut days, secs) = (us.div_euclid(86_400_000_000), us.rem_euclid(86_400_000_000));
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut year = 1970;
    while days >= if leap(year) { 366 } else { 365 } {
        days -= if leap(year) { 366 } else { 365 };
        year += 1;
    }
    let lengths = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 0;
    while days >= lengths[month] {
        days -= lengths[month];
        month += 1;
    }
    let s = secs / 1_000_000;
    format!(
        "{year:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        month + 1,
        days + 1,
        s / 3600,
        s / 60 % 60,
        s % 60,
        secs % 1_000_000
    )
}

/// One `conn_summary` line, the numbers as printed.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ConnLine {
    start: String,
    client: String,
    server: String,
    c2s: u64,
    s2c: u64,
    lost: String,
}

/// `conn_summary`'s lines, with their durations and how they ended.
fn parse_conns(text: &str) -> Result<Vec<(ConnLine, f64, String)>> {
    text.lines()
        .map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            ensure!(t.len() >= 10 && t[3] == "->", "unexpected line {l:?}");
            let kv: BTreeMap<&str, &str> =
                t[5..].iter().filter_map(|w| w.split_once('=')).collect();
            let get = |k: &str| {
                kv.get(k)
                    .copied()
                    .with_context(|| format!("no {k}= in {l:?}"))
            };
            let dur: f64 = get("duration")?
                .strip_suffix('s')
                .context("duration")?
                .parse()?;
            Ok((
                ConnLine {
                    start: format!("{} {}", t[0], t[1]),
                    client: t[2].to_string(),
                    server: t[4].to_string(),
                    c2s: get("c2s")?.parse()?,
                    s2c: get("s2c")?.parse()?,
                    lost: get("lost")?.to_string(),
                },
                dur,
                get("end")?.to_string(),
            ))
        })
        .collect()
}

/// Multisets as sorted lists, and what differs, for messages.
fn differences<T: Ord + Clone + std::fmt::Debug>(got: &[T], want: &[T]) -> Option<String> {
    let (mut g, mut w) = (got.to_vec(), want.to_vec());
    g.sort();
    w.sort();
    if g == w {
        return None;
    }
    let extra: Vec<&T> = g.iter().filter(|x| !w.contains(x)).take(5).collect();
    let missing: Vec<&T> = w.iter().filter(|x| !g.contains(x)).take(5).collect();
    Some(format!(
        "{} printed, {} expected; printed but not expected (first 5): {extra:#?}; expected but not printed (first 5): {missing:#?}",
        g.len(),
        w.len()
    ))
}

// ---------------------------------------------------------------------------------------------
// The checks

/// The figures of one capture, for the test's output and its own assertions.
#[derive(Debug)]
struct Figures {
    connections: usize,
    taken: usize,
    requests: usize,
    not_http: usize,
    lossy: usize,
    status_lines: usize,
    per_method: BTreeMap<String, usize>,
}

/// Runs the three examples on a corpus capture and checks them as the module says.
fn check(capture: &str, filter: &str) -> Result<Figures> {
    let pcap = corpus_dir()?.join("pcaps").join(capture);
    let work = ScratchDir::new(&format!("ex-{capture}"))?;
    let out = replay(work.path(), &pcap, filter)?;
    let taken = taken(&pcap, filter, &out.flows)?;
    let e = expected(&out, &taken)?;
    let ctx = |what: &str| format!("{capture} ({filter}): {what}");

    // http_requests: the requests of the dump's client streams, and its summary.
    let http = parse_requests(&out.http, true).with_context(|| ctx("http_requests output"))?;
    let lossy = |r: &Req| {
        e.lossy_pairs
            .contains(&(r.client.clone(), r.server.clone()))
    };
    let http_reqs: Vec<Req> = http
        .iter()
        .map(|(_, r)| r.clone())
        .filter(|r| !lossy(r))
        .collect();
    if let Some(d) = differences(&http_reqs, &e.http) {
        bail!("{}: {d}", ctx("http_requests"));
    }
    let summary = format!("http_requests: {} requests in ", http.len());
    ensure!(
        out.http_err.contains(&summary),
        "{}: no {summary:?} in {}",
        ctx("http_requests"),
        out.http_err
    );
    let stopped = format!(
        "; {} connections were not HTTP (monitoring stopped)",
        e.not_http
    );
    ensure!(
        out.http_err.contains(&stopped),
        "{}: no {stopped:?} in {}",
        ctx("http_requests"),
        out.http_err
    );

    // request_line_event: every request line, counted per method by its child events.
    let rle = parse_requests(&out.rle, false).with_context(|| ctx("request_line_event output"))?;
    let lines: Vec<Req> = rle
        .iter()
        .map(|(_, r)| r.clone())
        .filter(|r| !lossy(r))
        .collect();
    if let Some(d) = differences(&lines, &e.lines) {
        bail!("{}: {d}", ctx("request_line_event"));
    }
    let mut per_method: BTreeMap<String, usize> = BTreeMap::new();
    for (_, r) in &rle {
        *per_method.entry(r.method.clone()).or_default() += 1;
    }
    let counts: Vec<String> = METHODS
        .iter()
        .filter_map(|m| per_method.get(*m).map(|n| format!("{m} {n}")))
        .collect();
    let summary = format!(" ({})", counts.join(", "));
    ensure!(
        out.rle_err.contains(&format!(
            "request_line_event: {} request lines in ",
            rle.len()
        )) && out.rle_err.contains(&summary),
        "{}: the per-method counts of the child events are not {summary:?}: {}",
        ctx("request_line_event"),
        out.rle_err
    );

    // The two against each other: the same lines, at the same capture times, on the
    // connections http_requests takes as HTTP.
    let http_pairs: HashSet<(String, String)> = http
        .iter()
        .map(|(_, r)| (r.client.clone(), r.server.clone()))
        .collect();
    let timed = |v: &[(String, Req)],
                 on: &HashSet<(String, String)>|
     -> Vec<(String, String, String, String, String)> {
        v.iter()
            .filter(|(_, r)| on.contains(&(r.client.clone(), r.server.clone())))
            .map(|(t, r)| {
                (
                    t.clone(),
                    r.client.clone(),
                    r.server.clone(),
                    r.method.clone(),
                    r.target.clone(),
                )
            })
            .collect()
    };
    if let Some(d) = differences(&timed(&rle, &http_pairs), &timed(&http, &http_pairs)) {
        bail!("{}: {d}", ctx("request_line_event against http_requests"));
    }

    // conn_summary: flows.jsonl's connections.
    let conns = parse_conns(&out.conn).with_context(|| ctx("conn_summary output"))?;
    let got: Vec<&ConnLine> = conns.iter().map(|(c, _, _)| c).collect();
    let want: Vec<ConnLine> = out
        .flows
        .iter()
        .map(|f| ConnLine {
            start: utc((f.start_ts * 1e6).round() as i64),
            client: f.client.clone(),
            server: f.server.clone(),
            c2s: f.c2s_bytes,
            s2c: f.s2c_bytes,
            lost: format!("{}/{}", f.c2s_lost, f.s2c_lost),
        })
        .collect();
    let want_refs: Vec<&ConnLine> = want.iter().collect();
    if let Some(d) = differences(&got, &want_refs) {
        bail!("{}: {d}", ctx("conn_summary"));
    }
    // Durations to the millisecond they are printed with.
    let mut durations: Vec<(String, String, String, f64)> = conns
        .iter()
        .map(|(c, d, _)| (c.start.clone(), c.client.clone(), c.server.clone(), *d))
        .collect();
    durations.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let mut spans: Vec<(String, String, String, f64)> = out
        .flows
        .iter()
        .map(|f| {
            let start = utc((f.start_ts * 1e6).round() as i64);
            (
                start,
                f.client.clone(),
                f.server.clone(),
                f.end_ts - f.start_ts,
            )
        })
        .collect();
    spans.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    for (d, s) in durations.iter().zip(&spans) {
        ensure!(
            (d.3 - s.3).abs() <= 0.0011,
            "{}: {} -> {} lasted {:.6} s, printed {:.3}s",
            ctx("conn_summary"),
            s.1,
            s.2,
            s.3,
            d.3
        );
    }
    let known_ends = [
        "closed",
        "reset",
        "timeout",
        "evicted",
        "reused",
        "end-of-input",
    ];
    for (c, _, end) in &conns {
        ensure!(
            known_ends.contains(&end.as_str()),
            "{}: {} -> {} ended {end:?}",
            ctx("conn_summary"),
            c.client,
            c.server
        );
    }
    let ended = format!("conn_summary: {} connections ended (", out.flows.len());
    ensure!(
        out.conn_err.contains(&ended),
        "{}: no {ended:?} in {}",
        ctx("conn_summary"),
        out.conn_err
    );

    // Its status timer on the capture clock: a second of capture time apart at least, within
    // the capture.
    let status: Vec<&str> = out
        .conn_err
        .lines()
        .filter_map(|l| l.strip_prefix("conn_summary: status at "))
        .collect();
    let first = out
        .flows
        .iter()
        .map(|f| f.start_ts)
        .fold(f64::MAX, f64::min);
    let end = out.flows.iter().map(|f| f.end_ts).fold(0.0, f64::max);
    // The timer is set before the replay, when the capture clock still reads 0: it is due at
    // 1 s past the epoch, so it fires on the first events of any capture dated after that.
    ensure!(
        !status.is_empty() || end < 1.0,
        "{}: no status line in {}",
        ctx("conn_summary's timer"),
        out.conn_err
    );
    let mut last: Option<String> = None;
    for s in &status {
        let when = s.get(..26).context("status time")?.to_string();
        ensure!(
            when >= utc((first * 1e6) as i64),
            "{}: a status line at {when}, before the capture's first packet",
            ctx("conn_summary's timer")
        );
        if let Some(prev) = &last {
            ensure!(
                seconds_between(prev, &when)? >= 1.0,
                "{}: status lines at {prev} and {when}, less than a second apart",
                ctx("conn_summary's timer")
            );
        }
        last = Some(when);
    }

    let figures = Figures {
        connections: out.flows.len(),
        taken: taken.iter().filter(|t| **t).count(),
        requests: e.http.len(),
        not_http: e.not_http,
        lossy: e.lossy,
        status_lines: status.len(),
        per_method,
    };
    eprintln!("{capture} --filter {filter:?}: {figures:?}");
    Ok(figures)
}

/// Seconds from one printed time to another on the same or a later day (`HH:MM:SS.ffffff`
/// compared after the date).
fn seconds_between(a: &str, b: &str) -> Result<f64> {
    let secs = |s: &str| -> Result<(String, f64)> {
        let (date, time) = s.split_once(' ').context("time")?;
        let mut p = time.split(':');
        let (h, m, sec) = (p.next(), p.next(), p.next());
        let v = h.context("h")?.parse::<f64>()? * 3600.0
            + m.context("m")?.parse::<f64>()? * 60.0
            + sec.context("s")?.parse::<f64>()?;
        Ok((date.to_string(), v))
    };
    let ((da, a), (db, b)) = (secs(a)?, secs(b)?);
    Ok(if da == db { b - a } else { b + 86_400.0 - a })
}

#[test]
fn a_plain_http_capture_gives_each_request_with_its_host_and_each_connection_its_bytes() {
    let f = check("dpkt__examples__data__http.pcap", "tcp port 80").unwrap();
    assert_eq!(
        (f.connections, f.taken, f.requests, f.not_http, f.lossy),
        (2, 2, 2, 0, 0)
    );
    // The capture spans 30 s, but its packets stop after 5 s until the last one: the capture
    // clock moves only with them.
    assert!((1..=31).contains(&f.status_lines), "{f:?}");
}

#[test]
fn the_syn_filter_sees_frames_as_captured_so_pppoe_and_6in4_are_not_tcp_port_80() {
    // Three HTTP connections: one over Ethernet, one in PPPoE, one IPv6 in IPv4 (6in4).
    let f = check("dpkt__examples__data__nb6-http.pcap", "tcp port 80").unwrap();
    assert_eq!((f.connections, f.taken, f.requests), (3, 1, 1));
    let f = check(
        "dpkt__examples__data__nb6-http.pcap",
        "tcp port 80 or (pppoes and tcp port 80)",
    )
    .unwrap();
    assert_eq!((f.taken, f.requests), (2, 2));
}

#[test]
fn connections_whose_first_line_is_no_request_are_stopped_and_methods_counted_by_child_events() {
    // 49 connections to port 80, 41 of them with made-up or malformed methods.
    let f = check("zeek__http__methods.pcap", "tcp port 80").unwrap();
    assert_eq!((f.connections, f.requests, f.not_http), (49, 8, 41));
    assert!(f.per_method.len() >= 7, "{f:?}");
}

#[test]
fn a_thousand_requests_on_one_connection_and_out_of_order_segments() {
    let f = check(
        "zeek__http__1000-requests-one-dropped-response.pcap",
        "tcp port 80",
    )
    .unwrap();
    assert_eq!((f.connections, f.requests), (1, 1000));
    let f = check("wireshark__http-ooo.pcap", "tcp port 80").unwrap();
    assert_eq!((f.connections, f.requests), (1, 5));
    let f = check(
        "zeek__http__http-non-printable-characters.pcap",
        "tcp port 80",
    )
    .unwrap();
    assert_eq!(f.requests, 4);
}

#[test]
fn a_filter_on_another_port_takes_hundreds_of_connections() {
    let f = check("ndpi__WebattackRCE.pcap", "tcp port 8080").unwrap();
    assert_eq!((f.connections, f.taken, f.requests), (797, 797, 797));
}

#[test]
fn any_tcp_in_a_mixed_pcapng_and_ipv6_and_vlan_tagged_connections() {
    let f = check("ndpi__1kxun.pcapng", "tcp").unwrap();
    assert!(f.requests >= 20 && f.not_http >= 5, "{f:?}");
    let f = check(
        "suricata-verify__file-match-crossed__http-multipart-post.pcap",
        "tcp",
    )
    .unwrap();
    assert_eq!((f.taken, f.requests), (1, 1));
    // VLAN-tagged frames: `tcp port 80` alone does not look past the tag.
    let f = check("suricata-verify__bug-814__input.pcap", "tcp port 80").unwrap();
    assert_eq!((f.taken, f.requests), (0, 0));
    let f = check(
        "suricata-verify__bug-814__input.pcap",
        "vlan and tcp port 80",
    )
    .unwrap();
    assert_eq!((f.taken, f.requests), (1, 1));
}

#[test]
fn ipv6_on_a_bsd_loopback_capture_picked_up_midstream() {
    // Link type NULL, whose IPv6 frames carry a BSD address family (30 here).
    let f = check("gopacket__pcap__test_loopback.pcap", "tcp port 8080").unwrap();
    assert_eq!((f.connections, f.taken, f.requests), (2, 2, 3));
}
