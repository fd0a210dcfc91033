//! `mos-log` on every corpus capture, against tshark and against the sensor's own dump.
//!
//! Each capture is replayed by `mos-sensor --pcap F --dump D --wait-analyzers 1` with
//! `mos-log --out O` attached, while tshark reads the same capture (tests/src/tshark.rs).
//! Then:
//!
//! - HTTP: every request tshark decodes (`http.request.method`, `http.host`,
//!   `http.request.uri`) and every response (`http.response.code`) is looked for among
//!   `mos-log`'s `http.jsonl` records of the same connection, in order;
//! - TLS: each connection's first ClientHello (`tls.handshake.extensions_server_name`,
//!   `tls.handshake.ja3`) and first ServerHello (the version chosen) against the
//!   connection's first `tls.jsonl` record (`server_name`, `ja3`, `version`);
//! - conn: every connection of the sensor's `flows.jsonl` has one `conn.jsonl` record with
//!   the same endpoints and start time (within the microsecond `ts` keeps) and the same byte
//!   counts (`orig_bytes` = `c2s_bytes`, `resp_bytes` = `s2c_bytes`), and `conn.jsonl` has no
//!   other record.
//!
//! A tshark stream is a connection of `mos-log`'s when the ports are the same and the
//! addresses are among the frame's (tshark lists a tunnel's outer addresses too), the client
//! being the sender of the requests and hellos; among several such connections (a reused
//! port), each message goes to the one open at its time. Within a connection the
//! two lists are aligned by their longest common subsequence, so one message missing from
//! either side does not shift the rest: an unaligned message of tshark's between two aligned
//! ones is paired with `mos-log`'s unaligned one there, if any (a difference in its fields),
//! else it is missing from `mos-log`.
//!
//! At least 99 % of tshark's requests, responses, hellos and versions must be equal, and every
//! difference must be explained in tests/known-differences.md, section "mos-log", by a rule
//! the test checks on it or by an entry naming it; `conn` must have no difference that is not
//! so explained. Entries and rules that explain nothing are reported as stale (a failure
//! with `MOS_STRICT_KNOWN=1`). Every difference is written to
//! `target/mos-log-differences.tsv`, one line each with both values.
//!
//! Needs the corpus (MOS_CORPUS_DIR), tshark, and `mos-sensor` and `mos-log` built in the same
//! profile (`cargo build --release -p mos-sensor -p mos-analyzers --bins`).

use anyhow::{bail, ensure, Context, Result};
use mos_tests::addr::parse_endpoint;
use mos_tests::flows::{parse_flows, FlowRecord};
use mos_tests::locate::{bin, corpus_dir, list_captures, sensor_bin, target_dir, workspace_root};
use mos_tests::procs::{assert_no_panic, cmd, tail, wait_for_socket, Proc};
use mos_tests::runner::{default_workers, parallel_map, ScratchDir};
use mos_tests::tshark::{self, version_name, View};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Read as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

/// The longest any process of one capture may take (two captures run at once, beside
/// tshark, on a shared machine).
const TIMEOUT: Duration = Duration::from_secs(180);
/// The share of tshark's items that must be equal, per check.
const MIN_EQUAL: f64 = 0.99;

// ---------------------------------------------------------------------------------------------
// mos-log's records (only the fields compared; the schema is docs/ANALYZERS.md's)

#[derive(Debug, Clone, Deserialize)]
struct Tuple {
    #[serde(rename = "id.orig_h")]
    orig_h: IpAddr,
    #[serde(rename = "id.orig_p")]
    orig_p: u16,
    #[serde(rename = "id.resp_h")]
    resp_h: IpAddr,
    #[serde(rename = "id.resp_p")]
    resp_p: u16,
}

impl Tuple {
    fn orig(&self) -> SocketAddr {
        SocketAddr::new(self.orig_h, self.orig_p)
    }
    fn resp(&self) -> SocketAddr {
        SocketAddr::new(self.resp_h, self.resp_p)
    }
}

#[derive(Debug, Clone, Deserialize)]
struct ConnRec {
    ts: f64,
    uid: String,
    #[serde(flatten)]
    id: Tuple,
    duration: Option<f64>,
    service: Option<String>,
    orig_bytes: Option<u64>,
    resp_bytes: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
struct HttpRec {
    uid: String,
    #[serde(flatten)]
    id: Tuple,
    method: Option<String>,
    host: Option<String>,
    uri: Option<String>,
    status_code: Option<u16>,
    info_code: Option<u16>,
    #[serde(default)]
    midstream: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct TlsRec {
    uid: String,
    #[serde(flatten)]
    id: Tuple,
    version: Option<String>,
    server_name: Option<String>,
    ja3: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct WeirdRec {
    uid: String,
    name: String,
    peer: Option<String>,
    source: Option<String>,
}

#[derive(Debug, Default)]
struct Logs {
    conn: Vec<ConnRec>,
    http: Vec<HttpRec>,
    tls: Vec<TlsRec>,
    weird: Vec<WeirdRec>,
}

fn read_log<T: for<'de> Deserialize<'de>>(dir: &Path, log: &str) -> Result<Vec<T>> {
    let path = dir.join(format!("{log}.jsonl"));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        // A log with no record has no file.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{log}.jsonl line {}: {l}", i + 1))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// One capture

/// What one capture gave.
#[derive(Debug)]
struct Run {
    capture: String,
    view: View,
    logs: Logs,
    flows: Vec<FlowRecord>,
    /// The first bytes of each flow's client stream, by (client, server, start in µs).
    heads: BTreeMap<(String, String, i64), Vec<u8>>,
    elapsed: Duration,
}

fn run_capture(corpus: &Path, name: &str) -> Result<Run> {
    let start = Instant::now();
    let pcap = corpus.join("pcaps").join(name);
    let work = ScratchDir::new(&format!("log-{name}"))?;
    let w = work.path();
    let (control, dump, out) = (w.join("c.sock"), w.join("dump"), w.join("out"));
    let ts_dir = w.join("tshark");
    std::fs::create_dir_all(&ts_dir)?;
    // tshark first, so that it runs beside the sensor.
    let tshark_run = tshark::start(&pcap, &ts_dir)?;
    let deadline = Instant::now() + TIMEOUT;
    let mut c = cmd(&sensor_bin()?, &[&"--pcap", &pcap, &"--control", &control]);
    c.args(["--wait-analyzers", "1", "--dump"]).arg(&dump);
    let mut sensor = Proc::spawn("sensor", c, w)?;
    wait_for_socket(&mut sensor, &control, TIMEOUT)?;
    let mut log = Proc::spawn(
        "mos-log",
        cmd(&bin("mos-log")?, &[&"--control", &control, &"--out", &out]),
        w,
    )?;
    let waited = [&mut sensor, &mut log].map(|p| p.wait_until(deadline));
    if waited.iter().any(Result::is_err) {
        let mut report = String::new();
        for (p, w) in [&sensor, &log].iter().zip(&waited) {
            report += &match w {
                Ok(st) => format!(
                    "{} exited with {st}; stderr:\n{}\n",
                    p.name(),
                    tail(&p.stderr())
                ),
                Err(e) => format!("{e:#}\n"),
            };
        }
        bail!("{report}");
    }
    let [s, l] = waited.map(|w| w.unwrap_or_default());
    let serr = sensor.stderr();
    let truncated = serr.contains("the replay stopped there");
    ensure!(
        s.code() == Some(0) || (s.code() == Some(2) && truncated),
        "sensor exited with {s}; stderr:\n{}",
        tail(&serr)
    );
    ensure!(
        l.success(),
        "mos-log exited with {l}; stderr:\n{}",
        tail(&log.stderr())
    );
    assert_no_panic(&log)?;
    let view = tshark_run.finish(TIMEOUT)?;
    let logs = Logs {
        conn: read_log(&out, "conn")?,
        http: read_log(&out, "http")?,
        tls: read_log(&out, "tls")?,
        weird: read_log(&out, "weird")?,
    };
    let flows = parse_flows(
        &std::fs::read_to_string(dump.join("flows.jsonl")).context("the sensor's flows.jsonl")?,
    )?;
    let mut heads = BTreeMap::new();
    for f in &flows {
        if let Some(file) = &f.c2s_file {
            let mut head = Vec::new();
            if let Ok(fh) = std::fs::File::open(dump.join(file)) {
                std::io::Read::take(fh, 8).read_to_end(&mut head)?;
            }
            heads.insert(
                (f.client.clone(), f.server.clone(), ts_micros(f.start_ts)),
                head,
            );
        }
    }
    Ok(Run {
        capture: name.to_string(),
        view,
        logs,
        flows,
        heads,
        elapsed: start.elapsed(),
    })
}

// ---------------------------------------------------------------------------------------------
// Comparison

/// What is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Check {
    /// An HTTP request's method, host and uri.
    HttpRequest,
    /// An HTTP response's status code.
    HttpResponse,
    /// A connection's first ClientHello's server name.
    TlsServerName,
    /// A connection's first ClientHello's JA3.
    TlsJa3,
    /// The version a connection's first ServerHello chose.
    TlsVersion,
    /// A connection's endpoints, start and byte counts against `flows.jsonl`.
    Conn,
}

impl Check {
    const ALL: [Check; 6] = [
        Check::HttpRequest,
        Check::HttpResponse,
        Check::TlsServerName,
        Check::TlsJa3,
        Check::TlsVersion,
        Check::Conn,
    ];

    fn name(self) -> &'static str {
        match self {
            Check::HttpRequest => "http-request",
            Check::HttpResponse => "http-response",
            Check::TlsServerName => "tls-server-name",
            Check::TlsJa3 => "tls-ja3",
            Check::TlsVersion => "tls-version",
            Check::Conn => "conn",
        }
    }

    fn from_name(s: &str) -> Option<Check> {
        Check::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// Names one compared item: the check, the capture, tshark's stream (for `conn`: the line
/// of `flows.jsonl`, 0-based, or past its end for a `conn.jsonl` record with no flow) and the
/// item's position among that stream's items of the check (0 for `conn`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ItemKey {
    check: Check,
    capture: String,
    stream: u32,
    item: usize,
}

impl std::fmt::Display for ItemKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = if self.check == Check::Conn {
            "flow"
        } else {
            "stream"
        };
        write!(
            f,
            "{} {} {unit} {} item {}",
            self.check.name(),
            self.capture,
            self.stream,
            self.item
        )
    }
}

/// What the test knows of the connection behind a difference, for the rules.
#[derive(Debug, Clone, Default)]
struct Situation {
    /// `mos-log` has no connection for tshark's stream.
    no_connection: bool,
    /// Nor has the sensor's `flows.jsonl` a connection between the stream's endpoints.
    no_flow: bool,
    /// The connection's roles are the other way round in `mos-log` (the client of tshark's
    /// stream is `mos-log`'s responder).
    reversed: bool,
    /// Bytes the sensor's flow lost in the direction that carries the item.
    lost: u64,
    /// The sensor's flow guessed its roles (picked up midstream).
    guessed: bool,
    /// Any of the connection's `http.jsonl` records says midstream.
    http_midstream: bool,
    /// The first weird `mos-log` wrote for the connection from the check's protocol, and
    /// whether it was seen in the direction that carries the item.
    weird: Option<(String, bool)>,
    /// The connection's `service` in `conn.jsonl`.
    service: Option<String>,
    /// The first bytes of the client's stream (the sensor's dump).
    c2s_head: Vec<u8>,
    /// `mos-log` has no record of the check's log for the connection.
    no_record: bool,
    /// tshark's request URI is empty.
    tshark_uri_empty: bool,
    /// tshark's JA3 string lacks some of its five fields (or tshark gave none).
    tshark_ja3_cut: bool,
}

impl std::fmt::Display for Situation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut words = Vec::new();
        if self.no_connection {
            words.push("no-connection".to_string());
        }
        if self.no_flow {
            words.push("no-flow".to_string());
        }
        if self.reversed {
            words.push("roles-reversed".to_string());
        }
        if self.lost > 0 {
            words.push(format!("lost={}", self.lost));
        }
        if self.guessed {
            words.push("roles-guessed".to_string());
        }
        if self.http_midstream {
            words.push("http-midstream".to_string());
        }
        if let Some((w, same_side)) = &self.weird {
            let side = if *same_side { "" } else { "(other side)" };
            words.push(format!("weird={w}{side}"));
        }
        if let Some(s) = &self.service {
            words.push(format!("service={s}"));
        }
        if !self.c2s_head.is_empty() {
            words.push(format!("c2s={}", hex::encode(&self.c2s_head)));
        }
        if self.tshark_ja3_cut {
            words.push("tshark-ja3-cut".to_string());
        }
        write!(f, "{}", words.join(" "))
    }
}

/// One difference.
#[derive(Debug, Clone)]
struct Diff {
    key: ItemKey,
    frame: u64,
    /// Which fields differ (`missing` when `mos-log` has no counterpart).
    what: String,
    tshark: String,
    mos: String,
    ctx: Situation,
}

/// Totals of one check.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    compared: usize,
    equal: usize,
}

/// Longest-common-subsequence alignment of `a` and `b`. Each element of `a` comes back with
/// its partner in `b` and whether they are equal: aligned pairs are equal; between two
/// aligned pairs, the unaligned elements of `a` are paired in order with those of `b`
/// (unequal), and the rest of `a` have none.
fn align<A, B>(a: &[A], b: &[B], eq: impl Fn(&A, &B) -> bool) -> Vec<(Option<usize>, bool)> {
    let (n, m) = (a.len(), b.len());
    // l[i][j]: LCS length of a[i..] and b[j..].
    let mut l = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            l[i][j] = if eq(&a[i], &b[j]) {
                l[i + 1][j + 1] + 1
            } else {
                l[i + 1][j].max(l[i][j + 1])
            };
        }
    }
    let mut anchors = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n && j < m {
        if eq(&a[i], &b[j]) && l[i][j] == l[i + 1][j + 1] + 1 {
            anchors.push((i, j));
            i += 1;
            j += 1;
        } else if l[i + 1][j] >= l[i][j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    let mut out = vec![(None, false); n];
    let (mut pa, mut pb) = (0, 0);
    for &(ai, bj) in anchors.iter().chain(std::iter::once(&(n, m))) {
        for (k, x) in (pa..ai).enumerate() {
            let y = pb + k;
            if y < bj {
                out[x] = (Some(y), false);
            }
        }
        if ai < n {
            out[ai] = (Some(bj), true);
        }
        pa = ai + 1;
        pb = bj + 1;
    }
    out
}

fn opt(s: &Option<String>) -> String {
    s.as_deref()
        .map_or_else(|| "-".to_string(), |s| format!("{s:?}"))
}

/// A connection of `mos-log`'s: its uid, endpoints and time span.
#[derive(Debug)]
struct MosConn {
    uid: String,
    orig: SocketAddr,
    resp: SocketAddr,
    start: f64,
    end: f64,
}

/// Whether two start times name the same first packet: `conn.jsonl`'s `ts` keeps whole
/// microseconds (Zeek's), `flows.jsonl`'s `start_ts` is the nanosecond time as a double
/// (about 0.2 µs apart near 2^31 s) and may round up where `ts` truncates; their difference is
/// under a microsecond and a quarter. Connections of one endpoint pair start further apart.
fn same_start(a: f64, b: f64) -> bool {
    (a - b).abs() < 1.25e-6
}

/// One tshark stream's items that belong to one connection of `mos-log`'s, each with its
/// index among the stream's items of its kind.
#[derive(Debug)]
struct Items<'a> {
    reqs: Vec<(usize, &'a tshark::Request)>,
    resps: Vec<(usize, &'a tshark::Response)>,
    chs: Vec<(usize, &'a tshark::ClientHello)>,
    shs: Vec<(usize, &'a tshark::ServerHello)>,
}

/// The first bytes of a flow's client stream, from the sensor's dump.
fn c2s_head(run: &Run, flow: &FlowRecord) -> Vec<u8> {
    run.heads
        .get(&(
            flow.client.clone(),
            flow.server.clone(),
            ts_micros(flow.start_ts),
        ))
        .cloned()
        .unwrap_or_default()
}

fn ts_micros(t: f64) -> i64 {
    (t * 1e6).round() as i64
}

/// Compares one tshark stream's items with the records of the connection `conn` (none when
/// `mos-log` has no connection for them).
#[allow(clippy::too_many_arguments)]
fn compare_group(
    run: &Run,
    stream: u32,
    conn: Option<&MosConn>,
    flow: Option<&FlowRecord>,
    base: Situation,
    items: &Items,
    tally: &mut BTreeMap<Check, Tally>,
    diffs: &mut Vec<Diff>,
) {
    let uid = conn.map(|c| c.uid.as_str());
    let http: Vec<&HttpRec> = run
        .logs
        .http
        .iter()
        .filter(|h| Some(h.uid.as_str()) == uid)
        .collect();
    let tls: Vec<&TlsRec> = run
        .logs
        .tls
        .iter()
        .filter(|t| Some(t.uid.as_str()) == uid)
        .collect();
    let weird = |source: &str, to_server: bool| {
        run.logs
            .weird
            .iter()
            .find(|w| Some(w.uid.as_str()) == uid && w.source.as_deref() == Some(source))
            .map(|w| {
                let peer = if to_server { "orig" } else { "resp" };
                (w.name.clone(), w.peer.as_deref() == Some(peer))
            })
    };
    let service = uid.and_then(|u| {
        run.logs
            .conn
            .iter()
            .find(|c| c.uid == u)
            .and_then(|c| c.service.clone())
    });
    let base = Situation {
        guessed: flow.is_some_and(|f| f.client_guessed),
        http_midstream: http.iter().any(|h| h.midstream),
        service,
        c2s_head: flow.map(|f| c2s_head(run, f)).unwrap_or_default(),
        ..base
    };
    let (c2s_lost, s2c_lost) = flow.map_or((0, 0), |f| (f.c2s_lost, f.s2c_lost));
    let http_sit = |to_server: bool| Situation {
        lost: if to_server { c2s_lost } else { s2c_lost },
        weird: weird("HTTP", to_server),
        no_record: http.is_empty(),
        ..base.clone()
    };
    let mut diff = |check: Check,
                    item: usize,
                    frame: u64,
                    what: &str,
                    t: String,
                    m: String,
                    ctx: Situation| {
        diffs.push(Diff {
            key: ItemKey {
                check,
                capture: run.capture.clone(),
                stream,
                item,
            },
            frame,
            what: what.to_string(),
            tshark: t,
            mos: m,
            ctx,
        });
    };

    // HTTP requests.
    let mreqs: Vec<&HttpRec> = http
        .iter()
        .copied()
        .filter(|h| h.method.is_some())
        .collect();
    let same_req = |t: &(usize, &tshark::Request), m: &&HttpRec| {
        let t = t.1;
        m.method.as_deref() == Some(t.method.as_str())
            && m.uri.as_deref() == Some(t.uri.as_str())
            && m.host == t.host
    };
    let t = tally.entry(Check::HttpRequest).or_default();
    for (k, (partner, equal)) in align(&items.reqs, &mreqs, same_req).into_iter().enumerate() {
        t.compared += 1;
        let (i, r) = items.reqs[k];
        if equal {
            t.equal += 1;
            continue;
        }
        let tv = format!("{} {:?} host {}", r.method, r.uri, opt(&r.host));
        let ctx = Situation {
            tshark_uri_empty: r.uri.is_empty(),
            ..http_sit(true)
        };
        match partner {
            None => diff(
                Check::HttpRequest,
                i,
                r.at.frame,
                "missing",
                tv,
                "-".into(),
                ctx,
            ),
            Some(j) => {
                let m = mreqs[j];
                let mut what = Vec::new();
                if m.method.as_deref() != Some(r.method.as_str()) {
                    what.push("method");
                }
                if m.host != r.host {
                    what.push("host");
                }
                if m.uri.as_deref() != Some(r.uri.as_str()) {
                    what.push("uri");
                }
                let mv = format!(
                    "{} {} host {}",
                    m.method.as_deref().unwrap_or("-"),
                    opt(&m.uri),
                    opt(&m.host)
                );
                diff(
                    Check::HttpRequest,
                    i,
                    r.at.frame,
                    &what.join(","),
                    tv,
                    mv,
                    ctx,
                );
            }
        }
    }

    // HTTP responses: each record's last 1xx code, then its final code.
    let mcodes: Vec<u16> = http
        .iter()
        .flat_map(|h| h.info_code.into_iter().chain(h.status_code))
        .collect();
    let t = tally.entry(Check::HttpResponse).or_default();
    let aligned = align(&items.resps, &mcodes, |r, c| r.1.code == *c);
    for (k, (partner, equal)) in aligned.into_iter().enumerate() {
        t.compared += 1;
        if equal {
            t.equal += 1;
            continue;
        }
        let (i, r) = items.resps[k];
        let (what, mv) = match partner {
            Some(j) => ("status_code", mcodes[j].to_string()),
            None => ("missing", "-".to_string()),
        };
        diff(
            Check::HttpResponse,
            i,
            r.at.frame,
            what,
            r.code.to_string(),
            mv,
            http_sit(false),
        );
    }

    // TLS: the stream's first hellos against the connection's first record.
    let first_tls = tls.first();
    let tls_sit = |to_server: bool, cut: bool| Situation {
        lost: if to_server { c2s_lost } else { s2c_lost },
        weird: weird("TLS", to_server),
        no_record: tls.is_empty(),
        tshark_ja3_cut: cut,
        ..base.clone()
    };
    let what = if first_tls.is_none() {
        "missing"
    } else {
        "value"
    };
    if let Some(&(i, ch)) = items.chs.first() {
        let cut = ch
            .ja3_full
            .as_ref()
            .is_none_or(|j| j.matches(',').count() < 4);
        for (check, tv, mv) in [
            (
                Check::TlsServerName,
                ch.server_name.clone(),
                first_tls.and_then(|r| r.server_name.clone()),
            ),
            (
                Check::TlsJa3,
                ch.ja3.clone(),
                first_tls.and_then(|r| r.ja3.clone()),
            ),
        ] {
            let t = tally.entry(check).or_default();
            t.compared += 1;
            if first_tls.is_some() && tv == mv {
                t.equal += 1;
            } else {
                diff(
                    check,
                    i,
                    ch.at.frame,
                    what,
                    opt(&tv),
                    opt(&mv),
                    tls_sit(true, cut),
                );
            }
        }
    }
    if let Some(&(i, sh)) = items.shs.first().filter(|(_, h)| h.version.is_some()) {
        let tv = version_name(sh.version.unwrap_or_default());
        let mv = first_tls.and_then(|r| r.version.clone());
        let t = tally.entry(Check::TlsVersion).or_default();
        t.compared += 1;
        if mv.as_deref() == Some(tv.as_str()) {
            t.equal += 1;
        } else {
            diff(
                Check::TlsVersion,
                i,
                sh.at.frame,
                what,
                tv,
                opt(&mv),
                tls_sit(false, false),
            );
        }
    }
}

/// Compares one capture; adds to `tally` and `diffs`.
fn compare_run(run: &Run, tally: &mut BTreeMap<Check, Tally>, diffs: &mut Vec<Diff>) {
    let cap = &run.capture;
    // mos-log's connections: conn.jsonl, and any uid the other logs name that it lacks.
    let mut conns: Vec<MosConn> = run
        .logs
        .conn
        .iter()
        .map(|c| MosConn {
            uid: c.uid.clone(),
            orig: c.id.orig(),
            resp: c.id.resp(),
            start: c.ts,
            end: c.ts + c.duration.unwrap_or(0.0),
        })
        .collect();
    let known: BTreeSet<String> = conns.iter().map(|c| c.uid.clone()).collect();
    let others = run
        .logs
        .http
        .iter()
        .map(|h| (&h.uid, &h.id))
        .chain(run.logs.tls.iter().map(|t| (&t.uid, &t.id)));
    let mut added = BTreeSet::new();
    for (uid, id) in others {
        if !known.contains(uid) && added.insert(uid.clone()) {
            conns.push(MosConn {
                uid: uid.clone(),
                orig: id.orig(),
                resp: id.resp(),
                start: f64::NEG_INFINITY,
                end: f64::INFINITY,
            });
        }
    }
    // The sensor's flows by (client, server, start).
    let flows: Vec<(SocketAddr, SocketAddr, &FlowRecord)> = run
        .flows
        .iter()
        .filter_map(|f| {
            Some((
                parse_endpoint(&f.client).ok()?,
                parse_endpoint(&f.server).ok()?,
                f,
            ))
        })
        .collect();
    let flow_of = |c: &MosConn| -> Option<&FlowRecord> {
        flows
            .iter()
            .find(|(cl, sv, f)| *cl == c.orig && *sv == c.resp && same_start(f.start_ts, c.start))
            .or_else(|| {
                flows
                    .iter()
                    .find(|(cl, sv, _)| *cl == c.orig && *sv == c.resp)
            })
            .map(|x| x.2)
    };

    // tshark's streams: the items of each, in frame order.
    let v = &run.view;
    let mut streams: BTreeSet<u32> = BTreeSet::new();
    streams.extend(v.requests.iter().map(|r| r.at.stream));
    streams.extend(v.responses.iter().map(|r| r.at.stream));
    streams.extend(v.client_hellos.iter().map(|r| r.at.stream));
    streams.extend(v.server_hellos.iter().map(|r| r.at.stream));
    for s in streams {
        let reqs: Vec<_> = v.requests.iter().filter(|r| r.at.stream == s).collect();
        let resps: Vec<_> = v.responses.iter().filter(|r| r.at.stream == s).collect();
        let chs: Vec<_> = v
            .client_hellos
            .iter()
            .filter(|r| r.at.stream == s)
            .collect();
        let shs: Vec<_> = v
            .server_hellos
            .iter()
            .filter(|r| r.at.stream == s)
            .collect();
        // The client's and server's side, from the stream's first item.
        let mut firsts: Vec<(u64, &tshark::Endpoints, bool)> = Vec::new();
        firsts.extend(reqs.first().map(|r| (r.at.frame, &r.at.path, true)));
        firsts.extend(resps.first().map(|r| (r.at.frame, &r.at.path, false)));
        firsts.extend(chs.first().map(|r| (r.at.frame, &r.at.path, true)));
        firsts.extend(shs.first().map(|r| (r.at.frame, &r.at.path, false)));
        firsts.sort_by_key(|f| f.0);
        let Some(&(_, path, from_client)) = firsts.first() else {
            continue;
        };
        let (cl_addrs, cl_port, sv_addrs, sv_port) = if from_client {
            (
                &path.src_addrs,
                path.src_port,
                &path.dst_addrs,
                path.dst_port,
            )
        } else {
            (
                &path.dst_addrs,
                path.dst_port,
                &path.src_addrs,
                path.src_port,
            )
        };
        let fits = |o: SocketAddr, r: SocketAddr| {
            o.port() == cl_port
                && r.port() == sv_port
                && cl_addrs.contains(&o.ip())
                && sv_addrs.contains(&r.ip())
        };
        let mut reversed = false;
        let mut cands: Vec<&MosConn> = conns.iter().filter(|c| fits(c.orig, c.resp)).collect();
        if cands.is_empty() {
            cands = conns.iter().filter(|c| fits(c.resp, c.orig)).collect();
            reversed = true;
        }
        let no_flow = !flows
            .iter()
            .any(|(cl, sv, _)| fits(*cl, *sv) || fits(*sv, *cl));
        // Each item goes to the connection open at its time (a reused port has several).
        let pick = |t: f64| -> Option<usize> {
            let within = |c: &&MosConn| c.start - 1e-6 <= t && t <= c.end + 1e-6;
            let i = cands.iter().position(within).or_else(|| {
                (0..cands.len())
                    .filter(|&i| cands[i].start <= t + 1e-6)
                    .max_by(|&a, &b| cands[a].start.total_cmp(&cands[b].start))
            });
            i.or((!cands.is_empty()).then_some(0))
        };
        let groups: BTreeSet<Option<usize>> = reqs
            .iter()
            .map(|r| r.at.ts)
            .chain(resps.iter().map(|r| r.at.ts))
            .chain(chs.iter().map(|r| r.at.ts))
            .chain(shs.iter().map(|r| r.at.ts))
            .map(pick)
            .collect();
        for g in groups {
            let conn = g.map(|i| cands[i]);
            let mine = |t: f64| pick(t) == g;
            let items = Items {
                reqs: reqs
                    .iter()
                    .copied()
                    .enumerate()
                    .filter(|(_, r)| mine(r.at.ts))
                    .collect(),
                resps: resps
                    .iter()
                    .copied()
                    .enumerate()
                    .filter(|(_, r)| mine(r.at.ts))
                    .collect(),
                chs: chs
                    .iter()
                    .copied()
                    .enumerate()
                    .filter(|(_, r)| mine(r.at.ts))
                    .collect(),
                shs: shs
                    .iter()
                    .copied()
                    .enumerate()
                    .filter(|(_, r)| mine(r.at.ts))
                    .collect(),
            };
            let base = Situation {
                no_connection: conn.is_none(),
                no_flow,
                reversed: conn.is_some() && reversed,
                ..Situation::default()
            };
            let flow = conn.and_then(&flow_of);
            compare_group(run, s, conn, flow, base, &items, tally, diffs);
        }
    }

    // conn against flows.jsonl.
    let t = tally.entry(Check::Conn).or_default();
    let mut used = vec![false; run.logs.conn.len()];
    for (i, (cl, sv, f)) in flows.iter().enumerate() {
        t.compared += 1;
        let found = run
            .logs
            .conn
            .iter()
            .enumerate()
            .filter(|(k, c)| {
                !used[*k]
                    && c.id.orig() == *cl
                    && c.id.resp() == *sv
                    && same_start(c.ts, f.start_ts)
            })
            .min_by(|a, b| {
                (a.1.ts - f.start_ts)
                    .abs()
                    .total_cmp(&(b.1.ts - f.start_ts).abs())
            });
        let ctx = Situation {
            lost: f.c2s_lost + f.s2c_lost,
            guessed: f.client_guessed,
            ..Situation::default()
        };
        let fv = format!(
            "{cl} -> {sv} at {:.6}: {} / {} bytes",
            f.start_ts, f.c2s_bytes, f.s2c_bytes
        );
        let key = ItemKey {
            check: Check::Conn,
            capture: cap.clone(),
            stream: i as u32,
            item: 0,
        };
        let Some((k, c)) = found else {
            diffs.push(Diff {
                key,
                frame: 0,
                what: "missing".into(),
                tshark: fv,
                mos: "-".into(),
                ctx,
            });
            continue;
        };
        used[k] = true;
        if c.orig_bytes == Some(f.c2s_bytes) && c.resp_bytes == Some(f.s2c_bytes) {
            t.equal += 1;
        } else {
            let show = |b: Option<u64>| b.map_or_else(|| "-".to_string(), |b| b.to_string());
            diffs.push(Diff {
                key,
                frame: 0,
                what: "bytes".into(),
                tshark: fv,
                mos: format!("{} / {} bytes", show(c.orig_bytes), show(c.resp_bytes)),
                ctx,
            });
        }
    }
    for (k, c) in run.logs.conn.iter().enumerate() {
        if !used[k] {
            diffs.push(Diff {
                key: ItemKey {
                    check: Check::Conn,
                    capture: cap.clone(),
                    stream: (flows.len() + k) as u32,
                    item: 0,
                },
                frame: 0,
                what: "extra".into(),
                tshark: "-".into(),
                mos: format!(
                    "{} {} -> {} at {:.6}",
                    c.uid,
                    c.id.orig(),
                    c.id.resp(),
                    c.ts
                ),
                ctx: Situation::default(),
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Known differences: the "mos-log" section of tests/known-differences.md

/// A cause the test checks on a difference by itself (see tests/known-differences.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rule {
    /// Neither `mos-log` nor the sensor's `flows.jsonl` has a connection between the stream's
    /// endpoints: tshark decodes it inside something the sensor does not (a tunnel, a link
    /// type).
    NotDecoded,
    /// The sensor lost bytes (a hole in the capture) in the direction that carries the item.
    Lost,
    /// The sensor picked the connection up midstream and took the server for the client:
    /// `mos-log`'s originator is tshark's server.
    RolesReversed,
    /// `mos-log` wrote a weird of the check's protocol (HTTP or TLS) for the connection, and
    /// its parser stopped there: it has no record for the item, or the record differs and
    /// the weird is in the item's direction.
    Weird,
    /// `mos-log`'s `conn` says the connection is TLS (`service` `ssl`): the HTTP tshark shows
    /// is inside it, decrypted with keys the capture file carries.
    InsideTls,
    /// `mos-log` has no TLS record for the connection, and the client's stream does not
    /// start with a TLS handshake record or an SSL 2 hello: TLS begins after a plain-text
    /// exchange.
    TlsNotFirst,
    /// The client's stream starts with an SSL 2 CLIENT-HELLO, and `mos-log` has no TLS record
    /// for the connection.
    Sslv2Hello,
    /// tshark's request URI is empty and `mos-log` has the request with a non-empty one.
    TsharkEmptyUri,
    /// tshark's JA3 string (`tls.handshake.ja3_full`) lacks some of its five fields, or tshark
    /// gave none, while `mos-log` has a record for the connection.
    TsharkJa3Cut,
}

impl Rule {
    const ALL: [Rule; 9] = [
        Rule::NotDecoded,
        Rule::Lost,
        Rule::RolesReversed,
        Rule::Weird,
        Rule::InsideTls,
        Rule::TlsNotFirst,
        Rule::Sslv2Hello,
        Rule::TsharkEmptyUri,
        Rule::TsharkJa3Cut,
    ];

    fn name(self) -> &'static str {
        match self {
            Rule::NotDecoded => "not-decoded",
            Rule::Lost => "lost",
            Rule::RolesReversed => "roles-reversed",
            Rule::Weird => "weird",
            Rule::InsideTls => "inside-tls",
            Rule::TlsNotFirst => "tls-not-first",
            Rule::Sslv2Hello => "sslv2-hello",
            Rule::TsharkEmptyUri => "tshark-empty-uri",
            Rule::TsharkJa3Cut => "tshark-ja3-cut",
        }
    }

    fn holds(self, d: &Diff) -> bool {
        let c = &d.ctx;
        let sslv2 = c.c2s_head.len() >= 3 && c.c2s_head[0] & 0x80 != 0 && c.c2s_head[2] == 1;
        match self {
            Rule::NotDecoded => c.no_connection && c.no_flow,
            Rule::Lost => c.lost > 0,
            Rule::RolesReversed => c.reversed,
            // A parser that stopped writes nothing after; a record it did write differs
            // because of a weird in the item's own direction.
            Rule::Weird => c
                .weird
                .as_ref()
                .is_some_and(|(_, same_side)| d.what == "missing" || *same_side),
            Rule::InsideTls => c.service.as_deref() == Some("ssl"),
            Rule::TlsNotFirst => {
                c.no_record
                    && !c.c2s_head.is_empty()
                    && !c.c2s_head.starts_with(&[0x16, 3])
                    && !sslv2
            }
            Rule::Sslv2Hello => c.no_record && sslv2,
            Rule::TsharkEmptyUri => {
                c.tshark_uri_empty && d.what == "uri" && !d.mos.contains(" \"\" ")
            }
            Rule::TsharkJa3Cut => c.tshark_ja3_cut && !c.no_record,
        }
    }
}

/// One line of the section: a rule (`- rule NAME CHECK CAPTURE: cause`, CAPTURE `*` for
/// all) or an entry naming one difference (`- CHECK CAPTURE stream N item I: cause`; `flow`
/// for `stream` with `conn`).
#[derive(Debug)]
enum Known {
    Rule {
        rule: Rule,
        check: Check,
        capture: Option<String>,
        line: usize,
    },
    Entry {
        key: ItemKey,
        line: usize,
    },
}

const SECTION: &str = "## mos-log";

fn parse_known(text: &str) -> Result<Vec<Known>> {
    let mut out = Vec::new();
    let mut inside = false;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        if raw.starts_with("## ") || raw.starts_with("# ") {
            inside = raw.trim_end() == SECTION || raw.starts_with(&format!("{SECTION} "));
            continue;
        }
        if !inside {
            continue;
        }
        let Some(item) = raw.strip_prefix("- ") else {
            continue;
        };
        let Some((head, cause)) = item.split_once(':') else {
            continue;
        };
        let words: Vec<&str> = head
            .split_whitespace()
            .map(|w| w.trim_matches('`'))
            .collect();
        let check_of = |w: &str| {
            Check::from_name(w)
                .with_context(|| format!("known-differences line {n}: no check {w:?}"))
        };
        let is_known_line = words
            .first()
            .is_some_and(|w| *w == "rule" || Check::from_name(w).is_some());
        if !is_known_line {
            continue;
        }
        ensure!(
            !cause.trim().is_empty(),
            "known-differences line {n}: the cause is empty; say why we differ"
        );
        if words[0] == "rule" {
            ensure!(
                words.len() == 4,
                "known-differences line {n}: expected `- rule NAME CHECK CAPTURE: cause`"
            );
            let rule = Rule::ALL
                .into_iter()
                .find(|r| r.name() == words[1])
                .with_context(|| {
                    format!("known-differences line {n}: unknown rule {:?}", words[1])
                })?;
            out.push(Known::Rule {
                rule,
                check: check_of(words[2])?,
                capture: (words[3] != "*").then(|| words[3].to_string()),
                line: n,
            });
        } else {
            ensure!(
                words.len() == 6
                    && (words[2] == "stream" || words[2] == "flow")
                    && words[4] == "item",
                "known-differences line {n}: expected `- CHECK CAPTURE stream N item I: cause`"
            );
            out.push(Known::Entry {
                key: ItemKey {
                    check: check_of(words[0])?,
                    capture: words[1].to_string(),
                    stream: words[3]
                        .parse()
                        .with_context(|| format!("line {n}: stream"))?,
                    item: words[5]
                        .parse()
                        .with_context(|| format!("line {n}: item"))?,
                },
                line: n,
            });
        }
    }
    Ok(out)
}

/// The line of the known entry or rule that explains `d`, if any (entries first).
fn explain(known: &[Known], d: &Diff) -> Option<usize> {
    known
        .iter()
        .find_map(|k| match k {
            Known::Entry { key, line } if *key == d.key => Some(*line),
            _ => None,
        })
        .or_else(|| {
            known.iter().find_map(|k| match k {
                Known::Rule {
                    rule,
                    check,
                    capture,
                    line,
                } if *check == d.key.check
                    && capture.as_deref().is_none_or(|c| c == d.key.capture)
                    && rule.holds(d) =>
                {
                    Some(*line)
                }
                _ => None,
            })
        })
}

fn diff_line(d: &Diff) -> String {
    format!(
        "{}\tframe {}\t{}\ttshark {}\tmos-log {}\t{}",
        d.key, d.frame, d.what, d.tshark, d.mos, d.ctx
    )
}

// ---------------------------------------------------------------------------------------------
// The test

#[test]
fn mos_log_agrees_with_tshark_and_the_sensor_on_the_corpus() -> Result<()> {
    let start = Instant::now();
    let version = tshark::check_installed()?;
    let corpus = corpus_dir()?;
    let captures = list_captures(&corpus)?;
    let known_path = workspace_root().join("tests").join("known-differences.md");
    let known = parse_known(&std::fs::read_to_string(&known_path)?)?;
    let results = parallel_map(&captures, default_workers(), |c| run_capture(&corpus, c));

    let mut failed = Vec::new();
    let mut tally: BTreeMap<Check, Tally> = BTreeMap::new();
    let mut diffs = Vec::new();
    let mut ran = BTreeSet::new();
    let mut reread = 0;
    let mut slowest = (Duration::ZERO, String::new());
    for (c, r) in captures.iter().zip(&results) {
        match r {
            Ok(run) => {
                compare_run(run, &mut tally, &mut diffs);
                ran.insert(c.clone());
                reread += run.view.reread_frames;
                if run.elapsed > slowest.0 {
                    slowest = (run.elapsed, c.clone());
                }
            }
            Err(e) => failed.push(format!("--- {c}: {e:#}")),
        }
    }

    // Explain each difference.
    let mut used_lines = BTreeSet::new();
    let mut unexplained = Vec::new();
    let mut report = String::from("check\tcapture\tunit\tindex\titem\tframe\tdiffers\ttshark\tmos-log\tsituation\texplained by line\n");
    let mut by_class: BTreeMap<String, usize> = BTreeMap::new();
    for d in &diffs {
        let line = explain(&known, d);
        let class = match line {
            Some(l) => {
                used_lines.insert(l);
                known
                    .iter()
                    .find_map(|k| match k {
                        Known::Rule { rule, line, .. } if *line == l => {
                            Some(format!("rule {}", rule.name()))
                        }
                        Known::Entry { line, .. } if *line == l => Some("entry".to_string()),
                        _ => None,
                    })
                    .unwrap_or_default()
            }
            None => {
                unexplained.push(d);
                "unexplained".to_string()
            }
        };
        *by_class
            .entry(format!("{} {}: {class}", d.key.check.name(), d.what))
            .or_default() += 1;
        let k = &d.key;
        let _ = writeln!(
            report,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            k.check.name(),
            k.capture,
            if k.check == Check::Conn {
                "flow"
            } else {
                "stream"
            },
            k.stream,
            k.item,
            d.frame,
            d.what,
            d.tshark,
            d.mos,
            d.ctx,
            line.map(|l| l.to_string()).unwrap_or_default()
        );
    }
    let report_path = target_dir()?.join("mos-log-differences.tsv");
    std::fs::write(&report_path, &report)?;

    println!(
        "{} captures ({} failed) in {:.1} s with {} workers; slowest {} ({:.1} s); {}; {reread} \
         frames read again from tshark's JSON",
        captures.len(),
        failed.len(),
        start.elapsed().as_secs_f64(),
        default_workers(),
        slowest.1,
        slowest.0.as_secs_f64(),
        version
    );
    let mut failures = String::new();
    for check in Check::ALL {
        let t = tally.get(&check).copied().unwrap_or_default();
        let pct = if t.compared == 0 {
            100.0
        } else {
            100.0 * t.equal as f64 / t.compared as f64
        };
        let what = if check == Check::Conn {
            "connections of flows.jsonl"
        } else {
            "of tshark's compared"
        };
        println!(
            "{}: {} {what}, {} equal ({pct:.2} %)",
            check.name(),
            t.compared,
            t.equal
        );
        if check != Check::Conn
            && t.compared > 0
            && (t.equal as f64) < MIN_EQUAL * t.compared as f64
        {
            let _ = writeln!(
                failures,
                "{}: {pct:.2} % equal, less than {:.0} %",
                check.name(),
                100.0 * MIN_EQUAL
            );
        }
        if check != Check::Conn && t.compared == 0 {
            let _ = writeln!(
                failures,
                "{}: tshark decoded nothing to compare",
                check.name()
            );
        }
    }
    println!("differences by class:");
    for (class, n) in &by_class {
        println!("  {n:6}  {class}");
    }
    println!("every difference: {}", report_path.display());
    if !failed.is_empty() {
        let _ = writeln!(
            failures,
            "{} of {} captures failed:\n{}",
            failed.len(),
            captures.len(),
            failed
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    if !unexplained.is_empty() {
        let mut list = String::new();
        for d in &unexplained {
            let _ = writeln!(list, "{}", diff_line(d));
        }
        println!("unexplained differences:\n{list}");
        let _ = writeln!(
            failures,
            "{} differences that nothing in the mos-log section of {} explains:\n{}",
            unexplained.len(),
            known_path.display(),
            list.lines().take(40).collect::<Vec<_>>().join("\n")
        );
    }
    // Stale: entries of captures that ran that no longer differ, rules that explained nothing.
    let mut stale = Vec::new();
    for k in &known {
        let (line, applies) = match k {
            Known::Rule { capture, line, .. } => (
                *line,
                capture.as_ref().is_none_or(|c| ran.contains(c)) && !ran.is_empty(),
            ),
            Known::Entry { key, line } => (*line, ran.contains(&key.capture)),
        };
        if applies && !used_lines.contains(&line) {
            stale.push(line);
        }
    }
    for line in &stale {
        println!(
            "warning: stale mos-log known difference at {}:{line} (explains nothing now)",
            known_path.display()
        );
    }
    if !stale.is_empty() && std::env::var("MOS_STRICT_KNOWN").is_ok_and(|v| v == "1") {
        let _ = writeln!(
            failures,
            "{} stale known differences (MOS_STRICT_KNOWN=1)",
            stale.len()
        );
    }
    assert!(
        failures.is_empty(),
        "mos-log against tshark failed:\n{failures}"
    );
    Ok(())
}

#[test]
fn alignment_pairs_differences_and_skips_missing_items() {
    let a = ["a", "b", "c", "d"];
    let b = ["a", "x", "c"];
    let got = align(&a, &b, |x, y| x == y);
    assert_eq!(
        got,
        [
            (Some(0), true),
            (Some(1), false),
            (Some(2), true),
            (None, false)
        ]
    );
    let b = ["b", "c", "d"];
    let got = align(&a, &b, |x, y| x == y);
    assert_eq!(
        got,
        [
            (None, false),
            (Some(0), true),
            (Some(1), true),
            (Some(2), true)
        ]
    );
    assert_eq!(align(&a, &[] as &[&str], |x, y| x == y), [(None, false); 4]);
}

#[test]
fn known_section_parses_rules_and_entries_only_in_its_section() {
    let text = "# Known\n- http-request a.pcap stream 1 item 0: elsewhere, ignored\n\
        ## mos-log against tshark\nprose: not an entry\n\
        - rule not-decoded http-request *: tunnels\n\
        - `http-response` `b.pcap` stream 3 item 2: gap\n\
        - conn c.pcap flow 7 item 0: why\n\
        - a list item in prose: ignored\n## next\n- tls-ja3 d.pcap stream 0 item 0: ignored\n";
    let k = parse_known(text).unwrap();
    assert_eq!(k.len(), 3);
    assert!(matches!(
        &k[0],
        Known::Rule {
            rule: Rule::NotDecoded,
            check: Check::HttpRequest,
            capture: None,
            line: 5
        }
    ));
    assert!(matches!(&k[1], Known::Entry { key, .. } if key.capture == "b.pcap" && key.item == 2));
    assert!(
        matches!(&k[2], Known::Entry { key, .. } if key.check == Check::Conn && key.stream == 7)
    );
    assert!(parse_known("## mos-log\n- rule bogus conn *: x\n").is_err());
    assert!(parse_known("## mos-log\n- conn a.pcap flow 1 item 0:  \n").is_err());
    assert!(parse_known("## mos-log\n- conn a.pcap 1 0: x\n").is_err());
}
