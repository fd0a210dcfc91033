//! The C example analyzers of `analyzers/c/` (`conntable`, `bytecount`, `udefilter`), built
//! with their Makefile and gcc against `capi/include` and the workspace's `libmos.so`, each run
//! as its own process against `mos-sensor --pcap` replaying corpus captures, and held to what
//! the Rust side says of the same run:
//!
//! - `bytecount`'s per-connection byte counts (each direction, and bytes lost) are the sensor's
//!   `--dump` `flows.jsonl` records, one line per record, and its totals their sums;
//! - `conntable`'s ended connections are `flows.jsonl`'s, their final client and server states
//!   those that `mos-flowstat`'s rule gives (each side's state when the connection was first
//!   met, then each `TCP_STATE_CHANGE`'s new state), worked out by a Rust analyzer attached to
//!   the same run; `mos-flowstat`, attached too, counts as many connections seen and ended, by
//!   the reasons that Rust analyzer read; the tables of its timer (on the capture clock) list
//!   only those connections, and as many as their headers say;
//! - `udefilter` receives exactly the connections whose first packet tcpdump's filter takes
//!   (the same libpcap expression), and its user-defined event gives the request line that
//!   begins each such connection's client stream in the dump, its child event every GET among
//!   them;
//! - `bytecount -c 2` against a sensor with 2 and with 3 workers prints every connection once
//!   (so does `-c 4`, whose contexts without a worker get nothing and end), both contexts
//!   taking some;
//! - the three built with AddressSanitizer run clean, leaks included;
//! - `-h`, a bad `-c`, no sensor, a filter the sensor refuses: a usage line or one clear error,
//!   and the exit status each program's comment gives; `-f` reads the control socket from an
//!   mOS configuration file.
//!
//! The programs link against a copy of `libmos.so` (as `libmos.so.0`, its soname) taken when
//! the test builds them.
//!
//! Needs the release binaries (`cargo build --release --bins`), `libmos.so`
//! (`cargo build --release -p mos-capi`), make, gcc and tcpdump (scripts/setup.sh installs it).

use anyhow::{bail, ensure, Context, Result};
use mos_client::{
    AttachOptions, EndReason, EventKind, EventMask, Filter, FlowId, Mos, Side, TcpState,
};
use mos_tests::addr::parse_endpoint;
use mos_tests::flows::{parse_flows, FlowRecord};
use mos_tests::locate::{bin, corpus_dir, profile_dir, sensor_bin, workspace_root};
use mos_tests::procs::{assert_no_panic, cmd, tail, wait_for_socket, Proc};
use mos_tests::runner::{default_workers, parallel_map, ScratchDir};
use mos_tests::tcpdump::taken;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest one replay may take.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Corpus captures and, for `udefilter`, a filter for each: plain and midstream HTTP, IPv6,
/// hundreds of connections picked up midstream, pcapng, GRE tunnels, VLAN tags, captures that
/// lost bytes (one of them a single byte, which `mtcp_peek` cannot tell from no data and
/// `MOS_LOST_SVRBUF` counts), and filters that take all, some or none of the connections.
const CAPTURES: [(&str, &str); 14] = [
    ("dpkt__examples__data__http.pcap", "tcp port 80"),
    ("zeek__http__methods.pcap", "tcp port 80"),
    ("ndpi__http_ipv6.pcap", "ip6 and tcp port 443"),
    ("ndpi__WebattackRCE.pcap", "tcp port 8080"),
    ("ndpi__skype.pcap", "tcp port 443"),
    ("ndpi__alexa-app.pcap", "tcp port 80 or tcp port 8080"),
    ("ndpi__bittorrent.pcap", "tcp"),
    ("ndpi__1kxun.pcapng", "tcp port 80"),
    ("zeek__tunnels__gre-aruba.pcap", "tcp port 80"),
    (
        "suricata-verify__tls__tls-subjectaltname__input.pcap",
        "tcp port 443",
    ),
    ("ndpi__instagram.pcap", "tcp port 80"),
    ("tcpflow__test4.pcap", "ip6"),
    (
        "suricata-verify__bug-814__input.pcap",
        "vlan and tcp port 80",
    ),
    (
        "zeek__contentline__contentline-irc-5k-line.pcap",
        "tcp port 12345",
    ),
];

// ---------------------------------------------------------------------------------------------
// Building

/// The directory holding `libmos.so`: `MOS_BIN_DIR`, else beside the sensor binary, else this
/// test's profile directory. Missing is a failure, never a skip.
fn libmos_dir() -> Result<PathBuf> {
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
        if d.join("libmos.so").is_file() {
            return Ok(d.clone());
        }
    }
    bail!(
        "libmos.so not found in {dirs:?}: build it with `cargo build --release -p mos-capi` \
         (the same profile as the sensor and the tests)"
    )
}

/// The three examples, built.
struct Examples {
    conntable: PathBuf,
    bytecount: PathBuf,
    udefilter: PathBuf,
}

/// Builds the examples into `out` with their Makefile, gcc, `-Werror` on top of the warnings
/// the Makefile asks for, the tree's headers and `libmos.so`; with AddressSanitizer when `asan`.
fn build(out: &Path, asan: bool) -> Result<Examples> {
    let root = workspace_root();
    let include = root.join("capi").join("include");
    ensure!(
        include.join("mos_api.h").is_file(),
        "no mos_api.h in {}",
        include.display()
    );
    // Cargo writes libmos.so only; the programs ask for its soname, libmos.so.0 (an install
    // makes the link): a directory of the build's own gives both names, to a copy of the
    // library taken now (a rebuild of the workspace during the test cannot change it).
    let lib = out.join("lib");
    std::fs::create_dir_all(&lib)?;
    let so = libmos_dir()?.join("libmos.so");
    let copy = lib.join("libmos.so.0");
    std::fs::copy(&so, &copy)
        .with_context(|| format!("copying {} to {}", so.display(), copy.display()))?;
    let link = lib.join("libmos.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("libmos.so.0", &link)
        .with_context(|| format!("linking {}", link.display()))?;
    let mut cflags = format!(
        "-std=c99 -Wall -Wextra -pedantic -Werror -g -I{}",
        include.display()
    );
    cflags += if asan {
        " -O1 -fsanitize=address -fno-omit-frame-pointer"
    } else {
        " -O2"
    };
    let ldlibs = format!("-L{0} -lmos -Wl,-rpath,{0}", lib.display());
    let src = root.join("analyzers").join("c");
    let res = std::process::Command::new("make")
        .arg("-C")
        .arg(&src)
        .arg(format!("O={}", out.display()))
        .arg("CC=gcc")
        .arg(format!("CFLAGS={cflags}"))
        .arg(format!("LDLIBS={ldlibs}"))
        .output()
        .context("running make (the C examples need make and gcc)")?;
    ensure!(
        res.status.success(),
        "building the C examples in {} failed ({}):\n{}{}",
        src.display(),
        res.status,
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    // -Werror makes a warning fail the build; a note or anything else gcc said is shown too.
    let said = String::from_utf8_lossy(&res.stderr);
    ensure!(said.trim().is_empty(), "gcc said:\n{said}");
    let exe = |n: &str| -> Result<PathBuf> {
        let p = out.join(n);
        ensure!(p.is_file(), "make gave no {}", p.display());
        Ok(p)
    };
    Ok(Examples {
        conntable: exe("conntable")?,
        bytecount: exe("bytecount")?,
        udefilter: exe("udefilter")?,
    })
}

// ---------------------------------------------------------------------------------------------
// Running

/// A C program to attach.
struct CProg {
    name: String,
    exe: PathBuf,
    args: Vec<String>,
    /// Its `-c`, or the sensor's workers by default.
    contexts: usize,
    env: Vec<(String, String)>,
}

impl CProg {
    fn new(name: &str, exe: &Path, args: &[&str], workers: usize) -> CProg {
        let contexts = args
            .iter()
            .position(|a| *a == "-c")
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(workers);
        CProg {
            name: name.to_string(),
            exe: exe.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            contexts,
            env: Vec::new(),
        }
    }
}

/// What one replay gave.
struct Outcome {
    flows: Vec<FlowRecord>,
    dump: PathBuf,
    /// Each C program's (stdout, stderr), in the order given.
    progs: Vec<(String, String)>,
    /// `mos-flowstat`'s (stdout, stderr).
    flowstat: Option<(String, String)>,
    reference: Option<Reference>,
}

/// Replays `pcap` with `workers` workers and `--dump`, the C programs `progs` attached (each
/// with as many attachments as it has contexts with a worker), and `mos-flowstat` and the Rust
/// reference analyzer when asked. Every process must exit 0.
fn replay(
    work: &Path,
    pcap: &Path,
    workers: usize,
    progs: &[CProg],
    flowstat: bool,
    reference: bool,
) -> Result<Outcome> {
    let control = work.join("c.sock");
    let dump = work.join("dump");
    let attachments: usize = progs.iter().map(|p| p.contexts.min(workers)).sum::<usize>()
        + usize::from(flowstat)
        + usize::from(reference);
    let mut sensor = Proc::spawn(
        "mos-sensor",
        cmd(
            &sensor_bin()?,
            &[
                &"--no-config",
                &"--pcap",
                &pcap,
                &"--control",
                &control,
                &"--dump",
                &dump,
                &"--workers",
                &workers.to_string(),
                &"--wait-analyzers",
                &attachments.to_string(),
                &"--quiet",
            ],
        ),
        work,
    )?;
    wait_for_socket(&mut sensor, &control, TIMEOUT)?;
    let mut procs = Vec::new();
    for p in progs {
        let mut c = cmd(&p.exe, &[]);
        c.args(&p.args)
            .env("MOS_CONTROL", &control)
            .env("MOS_ATTACH_WAIT", "30");
        for (k, v) in &p.env {
            c.env(k, v);
        }
        procs.push(Proc::spawn(&p.name, c, work)?);
    }
    if flowstat {
        procs.push(Proc::spawn(
            "mos-flowstat",
            cmd(
                &bin("mos-flowstat")?,
                &[
                    &"--control",
                    &control,
                    &"--interval",
                    &"0.05",
                    &"--wait",
                    &"30",
                ],
            ),
            work,
        )?);
    }
    let refthread = reference.then(|| {
        let control = control.clone();
        std::thread::spawn(move || run_reference(&control))
    });
    // A program that fails (a filter refused, a crash) leaves the sensor waiting: stop then.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        for p in procs.iter_mut() {
            if let Some(st) = p.poll()? {
                ensure!(
                    st.success(),
                    "{} exited with {st} on {}; stderr:\n{}",
                    p.name(),
                    pcap.display(),
                    tail(&p.stderr())
                );
            }
        }
        if let Some(st) = sensor.poll()? {
            ensure!(
                st.success(),
                "the sensor exited with {st} on {}; stderr:\n{}",
                pcap.display(),
                tail(&sensor.stderr())
            );
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
    for p in procs.iter_mut() {
        p.expect_code(0, TIMEOUT)?;
        assert_no_panic(p)?;
    }
    let reference = match refthread {
        Some(t) => Some(
            t.join()
                .map_err(|_| anyhow::anyhow!("the reference analyzer panicked"))??,
        ),
        None => None,
    };
    let flows = parse_flows(
        &std::fs::read_to_string(dump.join("flows.jsonl"))
            .with_context(|| format!("the sensor's flows.jsonl for {}", pcap.display()))?,
    )?;
    let mut outs: Vec<(String, String)> = procs.iter().map(|p| (p.stdout(), p.stderr())).collect();
    let flowstat = if flowstat { outs.pop() } else { None };
    Ok(Outcome {
        flows,
        dump,
        progs: outs,
        flowstat,
        reference,
    })
}

fn capture(name: &str) -> Result<PathBuf> {
    let p = corpus_dir()?.join("pcaps").join(name);
    ensure!(p.is_file(), "no capture {}", p.display());
    Ok(p)
}

/// `a.b.c.d:port` or `[v6]:port`, canonical.
fn endpoint(s: &str) -> Result<SocketAddr> {
    parse_endpoint(s).with_context(|| format!("address {s:?}"))
}

/// Multisets as sorted lists, and what differs, for messages.
fn differences<T: Ord + Clone + std::fmt::Debug>(got: &[T], want: &[T]) -> Option<String> {
    let (mut g, mut w) = (got.to_vec(), want.to_vec());
    g.sort();
    w.sort();
    if g == w {
        return None;
    }
    let mut extra = Vec::new();
    let mut missing = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < g.len() || j < w.len() {
        match (g.get(i), w.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                extra.push(a);
                i += 1;
            }
            (Some(_), Some(b)) => {
                missing.push(b);
                j += 1;
            }
            (Some(a), None) => {
                extra.push(a);
                i += 1;
            }
            (None, Some(b)) => {
                missing.push(b);
                j += 1;
            }
            (None, None) => break,
        }
    }
    Some(format!(
        "{} printed, {} expected; {} printed but not expected (first 5): {:#?}; {} expected but not printed (first 5): {:#?}",
        g.len(),
        w.len(),
        extra.len(),
        &extra[..extra.len().min(5)],
        missing.len(),
        &missing[..missing.len().min(5)]
    ))
}

/// `key=value` of a whitespace-split line.
fn field<'a>(words: &[&'a str], key: &str, line: &str) -> Result<&'a str> {
    words
        .iter()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .with_context(|| format!("no {key}= in {line:?}"))
}

// ---------------------------------------------------------------------------------------------
// The reference for conntable: mos-flowstat's rule, in a Rust analyzer on the same run

/// A connection as it ended.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Ended {
    client: SocketAddr,
    server: SocketAddr,
    /// Client's, then server's state.
    states: [String; 2],
}

#[derive(Debug, Default)]
struct Reference {
    /// By `mos-flowstat`'s rule.
    ended: Vec<Ended>,
    /// The states the flow's slot held at `CONN_END`, for messages.
    slot_states: Vec<Ended>,
    /// `mos-flowstat`'s summary line as it should read.
    summary: String,
}

#[derive(Default)]
struct RefTable {
    live: BTreeMap<FlowId, (SocketAddr, SocketAddr, [Option<TcpState>; 2])>,
    ended_ids: BTreeSet<FlowId>,
    seen: u64,
    reasons: BTreeMap<EndReason, u64>,
    out: Reference,
}

fn state_name(s: Option<TcpState>) -> String {
    s.map_or("?".to_string(), |s| s.name().to_string())
}

/// Attaches to the sensor at `control` and follows every connection as `mos-flowstat` does:
/// each side's state from the slot when the connection is first met, then each
/// `TCP_STATE_CHANGE`'s new state; a connection is done at its first `CONN_END`.
fn run_reference(control: &Path) -> Result<Reference> {
    let mut mos = Mos::attach(&AttachOptions {
        control: control.to_path_buf(),
        name: "capi-examples-reference".into(),
        wait: Duration::from_secs(30),
        ..AttachOptions::default()
    })?;
    let sock = mos.socket()?;
    let table = std::rc::Rc::new(std::cell::RefCell::new(RefTable::default()));
    let t = table.clone();
    mos.register_filtered(
        sock,
        Filter {
            events: EventMask::CONN_START | EventMask::TCP_STATE_CHANGE | EventMask::CONN_END,
            hook: None,
            side: None,
        },
        move |ctx, ev| {
            let Some(flow) = ev.flow else { return };
            let mut t = t.borrow_mut();
            if t.ended_ids.contains(&flow) {
                return;
            }
            if !t.live.contains_key(&flow) {
                let Ok(info) = ctx.flow_info(flow) else {
                    return;
                };
                t.seen += 1;
                t.live.insert(
                    flow,
                    (
                        info.client,
                        info.server,
                        [info.side(Side::Cli).state, info.side(Side::Svr).state],
                    ),
                );
            }
            match ev.kind {
                EventKind::StateChange { new, .. } => {
                    if let (Some(side), Some(c)) = (ev.side, t.live.get_mut(&flow)) {
                        c.2[side.index()] = Some(new);
                    }
                }
                EventKind::ConnEnd { reason } => {
                    let Some((client, server, states)) = t.live.remove(&flow) else {
                        return;
                    };
                    t.ended_ids.insert(flow);
                    *t.reasons.entry(reason).or_default() += 1;
                    t.out.ended.push(Ended {
                        client,
                        server,
                        states: [state_name(states[0]), state_name(states[1])],
                    });
                    if let Ok(info) = ctx.flow_info(flow) {
                        t.out.slot_states.push(Ended {
                            client,
                            server,
                            states: [
                                state_name(info.side(Side::Cli).state),
                                state_name(info.side(Side::Svr).state),
                            ],
                        });
                    }
                }
                _ => {}
            }
        },
    )?;
    mos.run()?;
    drop(mos);
    let mut t = std::rc::Rc::try_unwrap(table)
        .map_err(|_| anyhow::anyhow!("the reference's table is still shared"))?
        .into_inner();
    let ended: u64 = t.reasons.values().sum();
    let by: Vec<String> = t
        .reasons
        .iter()
        .map(|(r, n)| format!("{n} {}", r.name()))
        .collect();
    t.out.summary = format!(
        "mos-flowstat: {} connections seen, {ended} ended{}; {} still open",
        t.seen,
        if by.is_empty() {
            String::new()
        } else {
            format!(": {}", by.join(", "))
        },
        t.live.len()
    );
    Ok(t.out)
}

// ---------------------------------------------------------------------------------------------
// bytecount

/// One `conn` line (or flows.jsonl record): client, server, c2s, s2c, lost c2s, lost s2c.
type Counted = (SocketAddr, SocketAddr, u64, u64, u64, u64);

/// `bytecount`'s `conn` lines (with their context) and its totals line.
fn parse_bytecount(out: &str) -> Result<(Vec<(Counted, usize)>, String)> {
    let mut conns = Vec::new();
    let mut total = None;
    for l in out.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.first() == Some(&"conn") {
            ensure!(w.len() == 7, "unexpected line {l:?}");
            let (lc, ls) = field(&w, "lost", l)?
                .split_once('/')
                .with_context(|| format!("lost= in {l:?}"))?;
            conns.push((
                (
                    endpoint(w[1])?,
                    endpoint(w[2])?,
                    field(&w, "c2s", l)?.parse()?,
                    field(&w, "s2c", l)?.parse()?,
                    lc.parse()?,
                    ls.parse()?,
                ),
                field(&w, "ctx", l)?.parse()?,
            ));
        } else if l.starts_with("bytecount: ") {
            ensure!(total.is_none(), "two totals lines in:\n{out}");
            total = Some(l.to_string());
        } else {
            bail!("unexpected line {l:?}");
        }
    }
    Ok((
        conns,
        total.with_context(|| format!("no totals line in:\n{}", tail(out)))?,
    ))
}

fn flow_counts(flows: &[FlowRecord]) -> Result<Vec<Counted>> {
    flows
        .iter()
        .map(|f| {
            Ok((
                endpoint(&f.client)?,
                endpoint(&f.server)?,
                f.c2s_bytes,
                f.s2c_bytes,
                f.c2s_lost,
                f.s2c_lost,
            ))
        })
        .collect()
}

/// Checks `bytecount`'s output against the run's flows.jsonl: the connections, once each,
/// their counts, and the totals. Returns the contexts that printed connections.
fn check_bytecount(
    what: &str,
    out: &(String, String),
    flows: &[FlowRecord],
    contexts: usize,
    workers: usize,
) -> Result<BTreeSet<usize>> {
    let (conns, total) = parse_bytecount(&out.0).with_context(|| format!("{what}: bytecount"))?;
    // Nothing on stderr; with more contexts than workers, the library's notice of it only.
    ensure!(
        out.1.lines().all(|l| contexts > workers
            && l.starts_with("libmos: ")
            && l.contains(&format!(
                "{contexts} contexts for the sensor's {workers} workers"
            ))),
        "{what}: bytecount wrote to stderr:\n{}",
        tail(&out.1)
    );
    let got: Vec<Counted> = conns.iter().map(|(c, _)| *c).collect();
    let want = flow_counts(flows)?;
    if let Some(d) = differences(&got, &want) {
        bail!("{what}: bytecount against flows.jsonl: {d}");
    }
    let sum = |f: fn(&Counted) -> u64| want.iter().map(f).sum::<u64>();
    let expect = format!(
        "bytecount: {} connections, c2s={} s2c={} lost={}/{}, 0 errors ({contexts} contexts)",
        want.len(),
        sum(|c| c.2),
        sum(|c| c.3),
        sum(|c| c.4),
        sum(|c| c.5)
    );
    ensure!(
        total == expect,
        "{what}: bytecount's totals are {total:?}, expected {expect:?}"
    );
    let used: BTreeSet<usize> = conns.iter().map(|(_, k)| *k).collect();
    ensure!(
        used.iter().all(|k| *k < contexts),
        "{what}: bytecount printed contexts {used:?}, it has {contexts}"
    );
    Ok(used)
}

// ---------------------------------------------------------------------------------------------
// conntable

/// A table's `live=`, `seen=`, `ended=`.
type TableHeader = (usize, u64, u64);

/// What `conntable` printed.
#[derive(Debug, Default)]
struct Table {
    ended: Vec<Ended>,
    /// Each table's header numbers (live, seen, ended) and rows (client, server).
    tables: Vec<(TableHeader, Vec<(SocketAddr, SocketAddr)>)>,
    summary: String,
}

fn parse_conntable(out: &str) -> Result<Table> {
    let mut t = Table::default();
    let mut rows_left = 0usize;
    for l in out.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.first().copied() {
            Some("live") => {
                ensure!(w.len() == 5 && rows_left > 0, "unexpected line {l:?}");
                rows_left -= 1;
                let last = t.tables.last_mut().context("a row before any table")?;
                last.1.push((endpoint(w[1])?, endpoint(w[3])?));
            }
            Some("table") => {
                ensure!(rows_left == 0, "a table cut short before {l:?}");
                let live: usize = field(&w, "live", l)?.parse()?;
                rows_left = live;
                t.tables.push((
                    (
                        live,
                        field(&w, "seen", l)?.parse()?,
                        field(&w, "ended", l)?.parse()?,
                    ),
                    Vec::new(),
                ));
            }
            Some("end") => {
                ensure!(w.len() == 5, "unexpected line {l:?}");
                t.ended.push(Ended {
                    client: endpoint(w[1])?,
                    server: endpoint(w[2])?,
                    states: [w[3].to_string(), w[4].to_string()],
                });
            }
            Some("conntable:") => {
                ensure!(t.summary.is_empty(), "two summary lines");
                t.summary = l.to_string();
            }
            _ => bail!("unexpected line {l:?}"),
        }
    }
    ensure!(rows_left == 0, "the last table is cut short");
    ensure!(!t.summary.is_empty(), "no summary line in:\n{}", tail(out));
    Ok(t)
}

/// `mos-flowstat`'s table rows (client, server) and its summary line.
fn parse_flowstat(out: &(String, String)) -> Result<(Vec<(SocketAddr, SocketAddr)>, String)> {
    let mut rows = Vec::new();
    for l in out.0.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        // `worker client state server state`
        if w.len() == 5 && w[0].parse::<u32>().is_ok() {
            rows.push((endpoint(w[1])?, endpoint(w[3])?));
        }
    }
    let summary = out
        .1
        .lines()
        .find(|l| l.starts_with("mos-flowstat: "))
        .with_context(|| format!("no summary from mos-flowstat:\n{}", out.1))?;
    Ok((rows, summary.to_string()))
}

/// The figures of one capture's conntable run.
#[derive(Debug)]
struct TableFigures {
    connections: usize,
    tables: usize,
    rows: usize,
    states: BTreeSet<String>,
}

fn check_conntable(what: &str, o: &Outcome) -> Result<TableFigures> {
    let out = &o.progs[0];
    let t = parse_conntable(&out.0).with_context(|| format!("{what}: conntable"))?;
    ensure!(
        out.1.trim().is_empty(),
        "{what}: conntable wrote to stderr:\n{}",
        tail(&out.1)
    );
    let r = o.reference.as_ref().context("no reference")?;
    let (fs_rows, fs_summary) = parse_flowstat(o.flowstat.as_ref().context("no flowstat")?)?;

    // The connections: flows.jsonl's, each once.
    let pairs = |v: &[Ended]| -> Vec<(SocketAddr, SocketAddr)> {
        v.iter().map(|e| (e.client, e.server)).collect()
    };
    let flows: Vec<(SocketAddr, SocketAddr)> = o
        .flows
        .iter()
        .map(|f| Ok((endpoint(&f.client)?, endpoint(&f.server)?)))
        .collect::<Result<_>>()?;
    if let Some(d) = differences(&pairs(&t.ended), &flows) {
        bail!("{what}: conntable's connections against flows.jsonl: {d}");
    }
    // Their final states: mos-flowstat's rule.
    if let Some(d) = differences(&t.ended, &r.ended) {
        bail!(
            "{what}: conntable's final states against mos-flowstat's rule: {d}\n\
             (the slots' states at CONN_END: {:#?})",
            &r.slot_states[..r.slot_states.len().min(10)]
        );
    }
    // mos-flowstat counted the same connections, ended for the reasons the reference read.
    ensure!(
        fs_summary == r.summary,
        "{what}: mos-flowstat says {fs_summary:?}, expected {:?}",
        r.summary
    );
    let n = o.flows.len();
    let expect =
        format!("conntable: {n} connections seen, {n} ended, 0 still open, 0 errors (1 contexts, ");
    ensure!(
        t.summary.starts_with(&expect),
        "{what}: conntable's summary is {:?}, expected it to begin {expect:?}",
        t.summary
    );
    let tables: usize = t
        .summary
        .rsplit_once(", ")
        .and_then(|(_, s)| s.strip_suffix(" tables)"))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{what}: no table count in {:?}", t.summary))?;
    ensure!(
        tables == t.tables.len(),
        "{what}: conntable counts {tables} tables and printed {}",
        t.tables.len()
    );
    // The tables list connections of the run (those mos-flowstat listed too), as many as their
    // headers say, and their counts only grow.
    let known: BTreeSet<(SocketAddr, SocketAddr)> = flows.iter().copied().collect();
    let mut last = (0, 0);
    for ((live, seen, ended), rows) in &t.tables {
        ensure!(
            rows.len() == *live && *seen >= *ended && *seen - *ended == *live as u64,
            "{what}: a table with live={live} seen={seen} ended={ended} and {} rows",
            rows.len()
        );
        ensure!(
            (*seen, *ended) >= last && *seen <= n as u64,
            "{what}: a table with seen={seen} ended={ended} after {last:?}"
        );
        last = (*seen, *ended);
        for row in rows {
            ensure!(
                known.contains(row),
                "{what}: conntable's table lists {row:?}, no connection of the run"
            );
        }
    }
    for row in &fs_rows {
        ensure!(
            known.contains(row),
            "{what}: mos-flowstat lists {row:?}, no connection of the run"
        );
    }
    Ok(TableFigures {
        connections: n,
        tables: t.tables.len(),
        rows: t.tables.iter().map(|(_, r)| r.len()).sum(),
        states: t
            .ended
            .iter()
            .flat_map(|e| e.states.iter().cloned())
            .collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// udefilter

/// The longest first line udefilter looks at, LF excluded.
const MAX_LINE: usize = 4096;

/// The request line a client stream begins with, as udefilter's documentation states it:
/// (method, target escaped).
fn first_request(data: &[u8]) -> Option<(String, String)> {
    let lf = data.iter().take(MAX_LINE + 1).position(|&b| b == b'\n')?;
    let line = &data[..lf];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let m = line.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if m == 0 || m > 16 || line.get(m) != Some(&b' ') {
        return None;
    }
    let rest = &line[m + 1..];
    let t = rest.iter().take_while(|&&b| b > b' ' && b != 0x7f).count();
    if t == 0 || rest.get(t) != Some(&b' ') {
        return None;
    }
    let v = &rest[t + 1..];
    let ok = v.len() == 8
        && v.starts_with(b"HTTP/")
        && v[5].is_ascii_digit()
        && v[6] == b'.'
        && v[7].is_ascii_digit();
    let escaped: String = rest[..t]
        .iter()
        .map(|&c| {
            if (0x21..=0x7e).contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect();
    ok.then(|| (String::from_utf8_lossy(&line[..m]).into_owned(), escaped))
}

/// A request line: client, server, method, target.
type Request = (SocketAddr, SocketAddr, String, String);

/// The figures of one capture's udefilter run.
#[derive(Debug)]
struct FilterFigures {
    connections: usize,
    taken: usize,
    requests: usize,
    gets: usize,
    lossy: usize,
}

fn check_udefilter(what: &str, pcap: &Path, filter: &str, o: &Outcome) -> Result<FilterFigures> {
    let out = &o.progs[0];
    ensure!(
        out.1.trim().is_empty(),
        "{what}: udefilter wrote to stderr:\n{}",
        tail(&out.1)
    );
    let mut conns = Vec::new();
    let mut requests: Vec<Request> = Vec::new();
    let mut gets: Vec<Request> = Vec::new();
    let mut summary = None;
    for l in out.0.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.first().copied() {
            Some("conn") if w.len() == 3 => conns.push((endpoint(w[1])?, endpoint(w[2])?)),
            Some("request") if w.len() == 5 => requests.push((
                endpoint(w[1])?,
                endpoint(w[2])?,
                w[3].to_string(),
                w[4].to_string(),
            )),
            Some("get") if w.len() == 4 => gets.push((
                endpoint(w[1])?,
                endpoint(w[2])?,
                "GET".to_string(),
                w[3].to_string(),
            )),
            Some("udefilter:") if summary.is_none() => summary = Some(l.to_string()),
            _ => bail!("{what}: unexpected line from udefilter {l:?}"),
        }
    }
    let summary = summary.with_context(|| format!("{what}: no summary from udefilter"))?;

    // The connections: those whose first packet tcpdump's filter takes.
    let taken = taken(pcap, filter, &o.flows)?;
    let selected: Vec<&FlowRecord> = o
        .flows
        .iter()
        .zip(&taken)
        .filter(|(_, t)| **t)
        .map(|(f, _)| f)
        .collect();
    let want: Vec<(SocketAddr, SocketAddr)> = selected
        .iter()
        .map(|f| Ok((endpoint(&f.client)?, endpoint(&f.server)?)))
        .collect::<Result<_>>()?;
    if let Some(d) = differences(&conns, &want) {
        bail!("{what}: udefilter's connections against tcpdump's {filter:?}: {d}");
    }

    // The request lines, from the dump's client streams; a connection whose client stream lost
    // bytes is left out on both sides (and so is any other on its endpoints).
    let mut lossy = BTreeSet::new();
    let mut expected: Vec<Request> = Vec::new();
    for f in &selected {
        let key = (endpoint(&f.client)?, endpoint(&f.server)?);
        if f.c2s_lost > 0 {
            lossy.insert(key);
            continue;
        }
        let data = match &f.c2s_file {
            Some(name) => std::fs::read(o.dump.join(name))
                .with_context(|| format!("{what}: reading the dump's {name}"))?,
            None => Vec::new(),
        };
        if let Some((m, t)) = first_request(&data) {
            expected.push((key.0, key.1, m, t));
        }
    }
    let keep = |r: &Request| !lossy.contains(&(r.0, r.1));
    let printed: Vec<Request> = requests.iter().filter(|r| keep(r)).cloned().collect();
    expected.retain(keep);
    if let Some(d) = differences(&printed, &expected) {
        bail!("{what}: udefilter's request lines against the dump's client streams: {d}");
    }
    // The child event: every GET, once.
    let want_gets: Vec<Request> = requests.iter().filter(|r| r.2 == "GET").cloned().collect();
    if let Some(d) = differences(&gets, &want_gets) {
        bail!("{what}: udefilter's child event (GET) against its request lines: {d}");
    }
    let expect = format!(
        "udefilter: {} connections, {} request lines ({} GET), 0 errors (1 contexts)",
        conns.len(),
        requests.len(),
        gets.len()
    );
    ensure!(
        summary == expect,
        "{what}: udefilter's summary is {summary:?}, expected {expect:?}"
    );
    Ok(FilterFigures {
        connections: o.flows.len(),
        taken: selected.len(),
        requests: requests.len(),
        gets: gets.len(),
        lossy: lossy.len(),
    })
}

// ---------------------------------------------------------------------------------------------
// The tests

/// Runs `f` on every capture of [`CAPTURES`] in parallel; fails with every capture's error.
fn on_captures<R: Send + std::fmt::Debug>(
    f: impl Fn(&str, &str) -> Result<R> + Sync,
) -> Vec<(&'static str, R)> {
    let results = parallel_map(&CAPTURES, default_workers().min(8), |(c, filter)| {
        f(c, filter).with_context(|| format!("capture {c}"))
    });
    let mut errors = Vec::new();
    let mut ok = Vec::new();
    for ((c, _), r) in CAPTURES.iter().zip(results) {
        match r {
            Ok(r) => {
                eprintln!("{c}: {r:?}");
                ok.push((*c, r));
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    assert!(
        errors.is_empty(),
        "{} of {} captures failed:\n\n{}",
        errors.len(),
        CAPTURES.len(),
        errors.join("\n\n")
    );
    ok
}

#[test]
fn the_examples_print_their_usage_and_fail_clearly_without_a_sensor() {
    let work = ScratchDir::new("capi-ex-usage").unwrap();
    let ex = build(work.path(), false).unwrap();
    let nowhere = work.path().join("no-sensor.sock");
    for (name, exe, extra) in [
        ("conntable", &ex.conntable, None),
        ("bytecount", &ex.bytecount, None),
        ("udefilter", &ex.udefilter, Some("tcp")),
    ] {
        let run = |args: &[&str]| {
            std::process::Command::new(exe)
                .args(args)
                .env("MOS_CONTROL", &nowhere)
                .env("MOS_ATTACH_WAIT", "0")
                .output()
                .unwrap()
        };
        let h = run(&["-h"]);
        let usage = format!("usage: {name} ");
        assert!(
            h.status.success() && String::from_utf8_lossy(&h.stdout).starts_with(&usage),
            "{name} -h: {h:?}"
        );
        let bad = run(&["-c", "zero"]);
        assert_eq!(bad.status.code(), Some(2), "{name} -c zero: {bad:?}");
        assert!(
            String::from_utf8_lossy(&bad.stderr).contains(&format!("{name}: -c zero: ")),
            "{name} -c zero: {bad:?}"
        );
        let mut args = vec![];
        args.extend(extra);
        let none = run(&args);
        let err = String::from_utf8_lossy(&none.stderr);
        assert_eq!(
            none.status.code(),
            Some(1),
            "{name} without a sensor: {none:?}"
        );
        assert!(
            err.contains(&format!("{name}: mtcp_init(no file): ")),
            "{name} without a sensor: {err}"
        );
        assert!(none.stdout.is_empty(), "{name} without a sensor: {none:?}");
    }
    let none = std::process::Command::new(&ex.udefilter).output().unwrap();
    assert_eq!(
        none.status.code(),
        Some(2),
        "udefilter without an expression: {none:?}"
    );
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("udefilter: no filter expression given"),
        "{none:?}"
    );
}

#[test]
fn a_filter_the_sensor_refuses_ends_udefilter_with_a_clear_error() {
    let work = ScratchDir::new("capi-ex-badfilter").unwrap();
    let ex = build(&work.path().join("bin"), false).unwrap();
    let control = work.path().join("c.sock");
    let pcap = capture(CAPTURES[0].0).unwrap();
    let mut sensor = Proc::spawn(
        "mos-sensor",
        cmd(
            &sensor_bin().unwrap(),
            &[
                &"--no-config",
                &"--pcap",
                &pcap,
                &"--control",
                &control,
                &"--wait-analyzers",
                &"1",
                &"--quiet",
            ],
        ),
        work.path(),
    )
    .unwrap();
    wait_for_socket(&mut sensor, &control, TIMEOUT).unwrap();
    // The control socket from -f's file (an mOS configuration with a `control` line).
    let conf = work.path().join("mos.conf");
    std::fs::write(
        &conf,
        format!("mos {{\n\tcontrol = {}\n}}\n", control.display()),
    )
    .unwrap();
    let mut c = cmd(&ex.udefilter, &[&"-f", &conf, &"tcp port"]);
    c.env_remove("MOS_CONTROL");
    let mut p = Proc::spawn("udefilter", c, work.path()).unwrap();
    p.expect_code(1, TIMEOUT).unwrap();
    let err = p.stderr();
    assert!(
        err.contains("udefilter: mtcp_bind_monitor_filter('tcp port'): Invalid argument"),
        "{err}"
    );
    assert!(p.stdout().is_empty(), "{}", p.stdout());
    assert_no_panic(&p).unwrap();
}

#[test]
fn bytecount_counts_what_flows_jsonl_records() {
    let bin = ScratchDir::new("capi-bc-bin").unwrap();
    let ex = build(bin.path(), false).unwrap();
    let figures = on_captures(|c, _| {
        let work = ScratchDir::new(&format!("capi-bc-{c}"))?;
        let prog = CProg::new("bytecount", &ex.bytecount, &[], 1);
        let o = replay(work.path(), &capture(c)?, 1, &[prog], false, false)?;
        ensure!(!o.flows.is_empty(), "no connection in flows.jsonl");
        check_bytecount(c, &o.progs[0], &o.flows, 1, 1)?;
        let bytes: u64 = o.flows.iter().map(|f| f.c2s_bytes + f.s2c_bytes).sum();
        let lost: u64 = o.flows.iter().map(|f| f.c2s_lost + f.s2c_lost).sum();
        Ok((o.flows.len(), bytes, lost))
    });
    let conns: usize = figures.iter().map(|(_, f)| f.0).sum();
    let bytes: u64 = figures.iter().map(|(_, f)| f.1).sum();
    let lossy = figures.iter().filter(|(_, f)| f.2 > 0).count();
    eprintln!("bytecount: {conns} connections, {bytes} bytes, {lossy} captures with lost bytes");
    assert!(conns > 1000 && bytes > 1_000_000, "{figures:?}");
    assert!(lossy >= 2, "no capture lost bytes: {figures:?}");
}

#[test]
fn conntable_ends_the_connections_of_mos_flowstat_in_their_final_states() {
    let bin = ScratchDir::new("capi-ct-bin").unwrap();
    let ex = build(bin.path(), false).unwrap();
    let figures = on_captures(|c, _| {
        let work = ScratchDir::new(&format!("capi-ct-{c}"))?;
        let mut prog = CProg::new("conntable", &ex.conntable, &[], 1);
        // Tables every second of capture time, so that a replay that takes milliseconds
        // still prints some.
        prog.env.push(("MOS_TIMER_CLOCK".into(), "capture".into()));
        let o = replay(work.path(), &capture(c)?, 1, &[prog], true, true)?;
        ensure!(!o.flows.is_empty(), "no connection in flows.jsonl");
        let f = check_conntable(c, &o)?;
        let first = o.flows.iter().map(|f| f.start_ts).fold(f64::MAX, f64::min);
        let last = o.flows.iter().map(|f| f.end_ts).fold(0.0, f64::max);
        ensure!(
            f.tables > 0 || last - first < 3.0,
            "no table printed over {:.1} s of capture time",
            last - first
        );
        Ok(f)
    });
    let conns: usize = figures.iter().map(|(_, f)| f.connections).sum();
    let rows: usize = figures.iter().map(|(_, f)| f.rows).sum();
    let states: BTreeSet<&String> = figures.iter().flat_map(|(_, f)| &f.states).collect();
    eprintln!("conntable: {conns} connections, {rows} table rows, final states {states:?}");
    assert!(conns > 1000, "{figures:?}");
    assert!(rows > 0, "no table listed a connection: {figures:?}");
    assert!(states.len() >= 3, "hardly any final states: {states:?}");
}

#[test]
fn udefilter_receives_the_connections_tcpdump_selects_and_their_request_lines() {
    let bin = ScratchDir::new("capi-uf-bin").unwrap();
    let ex = build(bin.path(), false).unwrap();
    let figures = on_captures(|c, filter| {
        let work = ScratchDir::new(&format!("capi-uf-{c}"))?;
        let prog = CProg::new("udefilter", &ex.udefilter, &[filter], 1);
        let pcap = capture(c)?;
        let o = replay(work.path(), &pcap, 1, &[prog], false, false)?;
        check_udefilter(&format!("{c} ({filter})"), &pcap, filter, &o)
    });
    let f = |k: fn(&FilterFigures) -> usize| figures.iter().map(|(_, f)| k(f)).sum::<usize>();
    eprintln!(
        "udefilter: {} of {} connections taken, {} request lines, {} GET, {} lossy left out",
        f(|x| x.taken),
        f(|x| x.connections),
        f(|x| x.requests),
        f(|x| x.gets),
        f(|x| x.lossy)
    );
    assert!(f(|x| x.taken) > 900, "{figures:?}");
    // Filters that take some connections and not others.
    assert!(
        figures
            .iter()
            .filter(|(_, x)| x.taken > 0 && x.taken < x.connections)
            .count()
            >= 3,
        "{figures:?}"
    );
    assert!(f(|x| x.requests) > 800 && f(|x| x.gets) > 50, "{figures:?}");
    assert!(
        f(|x| x.requests) > f(|x| x.gets),
        "no request line other than GET: {figures:?}"
    );
}

#[test]
fn two_contexts_see_every_connection_once_with_two_and_three_workers() {
    let captures = [
        "ndpi__WebattackRCE.pcap",
        "ndpi__alexa-app.pcap",
        "ndpi__skype.pcap",
        "zeek__http__methods.pcap",
        "ndpi__http_ipv6.pcap",
    ];
    let runs: Vec<(&str, usize)> = captures.iter().flat_map(|c| [(*c, 2), (*c, 3)]).collect();
    let bin = ScratchDir::new("capi-ctx-bin").unwrap();
    let ex = build(bin.path(), false).unwrap();
    let results = parallel_map(&runs, default_workers().min(6), |(c, workers)| {
        (|| -> Result<(usize, BTreeSet<usize>)> {
            let work = ScratchDir::new(&format!("capi-ctx-{c}-{workers}"))?;
            let progs = [
                CProg::new("bytecount", &ex.bytecount, &["-c", "2"], *workers),
                // More contexts than workers: the one with no worker gets nothing, and ends.
                CProg::new("bytecount-4", &ex.bytecount, &["-c", "4"], *workers),
            ];
            let o = replay(work.path(), &capture(c)?, *workers, &progs, false, false)?;
            ensure!(!o.flows.is_empty(), "no connection in flows.jsonl");
            let used = check_bytecount("-c 2", &o.progs[0], &o.flows, 2, *workers)?;
            let used4 = check_bytecount("-c 4", &o.progs[1], &o.flows, 4, *workers)?;
            ensure!(
                used4.iter().all(|k| *k < *workers),
                "-c 4: contexts {used4:?} printed connections, only {workers} have a worker"
            );
            Ok((o.flows.len(), used))
        })()
        .with_context(|| format!("{c} with {workers} workers"))
    });
    let mut errors = Vec::new();
    let mut both = 0;
    let mut conns = 0;
    for ((c, w), r) in runs.iter().zip(results) {
        match r {
            Ok((n, used)) => {
                eprintln!("{c}, {w} workers: {n} connections, contexts {used:?}");
                conns += n;
                both += usize::from(used.len() == 2);
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n\n"));
    assert!(conns > 2000, "{conns} connections");
    // The sensor's hash spreads hundreds of connections over every worker: both contexts
    // printed some.
    assert!(
        both >= 4,
        "both contexts printed connections in {both} runs only"
    );
}

#[test]
fn the_examples_run_clean_under_address_sanitizer() {
    let captures = [
        ("zeek__http__methods.pcap", "tcp port 80"),
        ("ndpi__http_ipv6.pcap", "tcp"),
        ("ndpi__bittorrent.pcap", "tcp"),
    ];
    let bin = ScratchDir::new("capi-asan-bin").unwrap();
    let ex = build(bin.path(), true).unwrap();
    let results = parallel_map(&captures, 3, |(c, filter)| {
        (|| -> Result<usize> {
            let work = ScratchDir::new(&format!("capi-asan-{c}"))?;
            let asan = |name: &str, exe: &Path, args: &[&str]| {
                let mut p = CProg::new(name, exe, args, 2);
                p.env.push((
                    "ASAN_OPTIONS".into(),
                    "detect_leaks=1:halt_on_error=1:exitcode=99".into(),
                ));
                p.env.push(("MOS_TIMER_CLOCK".into(), "capture".into()));
                p
            };
            let progs = [
                asan("conntable", &ex.conntable, &[]),
                asan("bytecount", &ex.bytecount, &[]),
                asan("udefilter", &ex.udefilter, &[filter]),
            ];
            let o = replay(work.path(), &capture(c)?, 2, &progs, false, false)?;
            ensure!(!o.flows.is_empty(), "no connection in flows.jsonl");
            for ((out, err), p) in o.progs.iter().zip(&progs) {
                ensure!(
                    !err.contains("Sanitizer") && err.trim().is_empty(),
                    "{}: stderr under AddressSanitizer:\n{err}",
                    p.name
                );
                ensure!(
                    out.lines().count() > o.flows.len().min(1),
                    "{} printed next to nothing:\n{out}",
                    p.name
                );
            }
            check_bytecount(c, &o.progs[1], &o.flows, 2, 2)?;
            Ok(o.flows.len())
        })()
        .with_context(|| format!("capture {c}"))
    });
    let mut total = 0;
    for r in results {
        total += r.unwrap();
    }
    assert!(total > 50, "{total} connections");
}
