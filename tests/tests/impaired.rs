//! Real traffic on an impaired link: HTTP downloads of known content, 777 B to 64 MiB, between
//! two network namespaces joined by a veth pair that loses about 0.5 % of the TCP frames and
//! reorders about 2 % in each direction. The Linux stacks recover (retransmissions, SACK); the
//! sensor must too. It captures the server's end of the veth live (AF_PACKET) with its default
//! stream-buffer settings and `mos-dump` attached, while a sniffer writes the same frames to a
//! pcap file that is then replayed through the sensor, again with defaults and `mos-dump`.
//! Both dumps must hold every response body byte for byte, with 0 bytes lost.
//!
//! The impairment is `netem` where the kernel has it. Where it does not (these machines), it
//! is built from what is there: a `clsact` egress `cls_bpf` classifier in classic BPF draws a
//! random number (`ld rand`) and redirects (`mirred`) the chosen TCP frames into a veth whose
//! peer drops them (a loss on the wire, which the sender retransmits), and an HTB root sends
//! another random fraction to a slow, rate-limited class so that frames behind them overtake
//! them (reordering). Both ends are capped at about 240 Mbit/s and send MTU-sized frames only.
//!
//! `MOS_IMPAIRED_SENSOR_ARGS` (split on white space) is added to both sensor commands, to
//! compare the default stream buffers with others. The test prints the bytes each sensor
//! lost (to gaps and to buffer overflow) and the impairment's own counters.
//!
//! Needs root, `ip`, `ethtool`, `tc` and `mos-sensor` and `mos-dump` built in the test's
//! profile. Every namespace and process is removed by a guard, every wait has a deadline, and
//! traffic flows only between the namespaces made here.

use anyhow::{bail, ensure, Context, Result};
use mos_tests::flows::{parse_flows, FlowRecord};
use mos_tests::locate::{bin, sensor_bin};
use mos_tests::netns::{self, in_ns, need_tool, ns_run, tcp_counters, Netns, CLI_ADDR, SRV_ADDR};
use mos_tests::procs::{assert_no_panic, cmd, tail, wait_for, wait_for_socket, Proc};
use mos_tests::runner::ScratchDir;
use mos_tests::sniff::Sniffer;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest any single step may take.
const TIMEOUT: Duration = Duration::from_secs(120);
const HTTP_PORT: u16 = 8080;

/// Fraction of TCP frames lost, in each direction.
const LOSS: f64 = 0.005;
/// Fraction of TCP frames sent through the slow class (BPF) or delayed (netem), each direction.
const REORDER: f64 = 0.02;
/// The cap on each direction, Mbit/s.
const RATE_MBIT: u32 = 240;
/// The slow class's rate, Mbit/s: a frame in it waits for the ones before it in that class,
/// while the main class sends about 20 frames per millisecond.
const SLOW_MBIT: u32 = 8;
/// netem's delay for the reordered fraction, ms.
const NETEM_DELAY_MS: u32 = 4;

/// The body sizes, one download each, in the order they are handed out: large and small
/// interleaved so that big transfers overlap short ones (26 downloads, about 128 MiB).
const SIZES: [u64; 26] = [
    64 << 20,
    777,
    16 << 20,
    1024,
    12 << 20,
    1500,
    8 << 20,
    4096,
    (8 << 20) + 3,
    10_000,
    6 << 20,
    16_384,
    5_000_011,
    65_537,
    4 << 20,
    100_000,
    (3 << 20) + 1,
    123_457,
    2_345_679,
    262_144,
    2 << 20,
    300_007,
    1 << 20,
    524_288,
    1_000_003,
    700_001,
];

/// Downloads at once.
const CONCURRENCY: usize = 4;

/// Deterministic pseudo-random bytes (splitmix64 seeded with `seed`).
fn content(seed: u64, size: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x243F_6A88_85A3_08D3;
    let mut out = Vec::with_capacity(size as usize + 8);
    while (out.len() as u64) < size {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(size as usize);
    out
}

// ---------------------------------------------------------------------------------------------
// The impairment

/// How a link was impaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Netem,
    Bpf,
}

/// A classic BPF program for `cls_bpf`, in tc's `bytecode` notation: it matches (returns -1,
/// the filter's class or action) a fraction `p` of the IPv4 TCP frames, drawn at random, and
/// nothing else, so ARP is never lost.
fn random_tcp_bpf(p: f64) -> String {
    assert!((0.0..1.0).contains(&p));
    let threshold = (p * 4_294_967_296.0).round() as u32;
    let prog: [(u16, u8, u8, u32); 8] = [
        (0x28, 0, 0, 0xffff_f000), // ldh proto (SKF_AD_PROTOCOL)
        (0x15, 0, 5, 0x0800),      // jeq #IPv4, else no match
        (0x30, 0, 0, 23),          // ldb [23]: IPv4 protocol (Ethernet header + 9)
        (0x15, 0, 3, 6),           // jeq #TCP, else no match
        (0x20, 0, 0, 0xffff_f038), // ld rand (SKF_AD_RANDOM)
        (0x35, 1, 0, threshold),   // jge #threshold: no match
        (0x06, 0, 0, 0xffff_ffff), // ret #-1: match
        (0x06, 0, 0, 0),           // ret #0: no match
    ];
    let mut s = prog.len().to_string();
    for (code, jt, jf, k) in prog {
        let _ = write!(s, ",{code} {jt} {jf} {k}");
    }
    s
}

/// Impairs what `dev` (in namespace `ns`) sends: netem if the kernel has it, else the BPF
/// construction described at the top.
fn impair(ns: &str, dev: &str) -> Result<Method> {
    let tc = |args: &[&str]| {
        let mut argv = vec!["tc"];
        argv.extend_from_slice(args);
        ns_run(ns, &argv)
    };
    let rate = format!("{RATE_MBIT}mbit");
    // One segment per frame: a frame lost or delayed is one MSS, as on a wire.
    ns_run(ns, &["ip", "link", "set", dev, "gso_max_segs", "1"])?;
    // The cap: an HTB root with one class (BPF adds the slow one).
    tc(&[
        "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "10",
    ])?;
    tc(&[
        "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb", "rate", &rate,
        "quantum", "60000",
    ])?;
    let loss = format!("{}%", LOSS * 100.0);
    let kept = format!("{}%", (1.0 - REORDER) * 100.0);
    let delay = format!("{NETEM_DELAY_MS}ms");
    // netem as the class's queue: random loss, and all but REORDER of the frames sent at once
    // (netem's "reorder"), the rest held for the delay.
    let netem = Command::new("ip")
        .args(["netns", "exec", ns, "tc", "qdisc", "add", "dev", dev])
        .args(["parent", "1:10", "handle", "10:", "netem", "limit", "20000"])
        .args(["loss", "random", &loss, "delay", &delay, "reorder", &kept])
        .output()
        .context("running tc")?;
    if netem.status.success() {
        return Ok(Method::Netem);
    }
    let err = String::from_utf8_lossy(&netem.stderr);
    ensure!(
        err.contains("qdisc kind is unknown"),
        "tc qdisc add ... netem failed: {err}"
    );
    // No netem. The main class gets a plain FIFO long enough for every window in flight.
    tc(&[
        "qdisc", "add", "dev", dev, "parent", "1:10", "handle", "10:", "pfifo", "limit", "20000",
    ])?;
    // Reordering: a random REORDER of the TCP frames go to a slow class of their own.
    let slow = format!("{SLOW_MBIT}mbit");
    tc(&[
        "class", "add", "dev", dev, "parent", "1:", "classid", "1:20", "htb", "rate", &slow,
        "ceil", &slow, "burst", "1514", "cburst", "1514", "quantum", "1514",
    ])?;
    tc(&[
        "qdisc", "add", "dev", dev, "parent", "1:20", "handle", "20:", "pfifo", "limit", "20000",
    ])?;
    tc(&[
        "filter",
        "add",
        "dev",
        dev,
        "parent",
        "1:",
        "bpf",
        "bytecode",
        &random_tcp_bpf(REORDER),
        "classid",
        "1:20",
    ])?;
    // Loss: before the root qdisc (and before any capture on `dev`), a random LOSS of the TCP
    // frames is redirected into a veth whose peer, with no address, drops them.
    let (bh, bhp) = (format!("{dev}x"), format!("{dev}y"));
    ns_run(
        ns,
        &[
            "ip", "link", "add", &bh, "type", "veth", "peer", "name", &bhp,
        ],
    )?;
    ns_run(ns, &["ip", "link", "set", &bh, "up"])?;
    ns_run(ns, &["ip", "link", "set", &bhp, "up"])?;
    tc(&["qdisc", "add", "dev", dev, "clsact"])?;
    tc(&[
        "filter",
        "add",
        "dev",
        dev,
        "egress",
        "bpf",
        "bytecode",
        &random_tcp_bpf(LOSS),
        "action",
        "mirred",
        "egress",
        "redirect",
        "dev",
        &bh,
    ])?;
    Ok(Method::Bpf)
}

/// The first `Sent N bytes P pkt` count of packets in tc's statistics text.
fn sent_packets(text: &str) -> u64 {
    text.split("Sent ")
        .nth(1)
        .and_then(|r| {
            let mut w = r.split_whitespace();
            let _bytes = w.next();
            let _word = w.next();
            w.next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// What the impairment did to the frames `dev` sent: (lost, reordered or delayed).
fn impairment_counts(ns: &str, dev: &str, method: Method) -> Result<(u64, u64)> {
    let out = |argv: &[&str]| -> Result<String> {
        let mut a = vec!["tc", "-s"];
        a.extend_from_slice(argv);
        Ok(String::from_utf8_lossy(&ns_run(ns, &a)?.stdout).into_owned())
    };
    Ok(match method {
        Method::Bpf => {
            let lost = sent_packets(&out(&["filter", "show", "dev", dev, "egress"])?);
            let slow = sent_packets(&out(&["class", "show", "dev", dev, "classid", "1:20"])?);
            (lost, slow)
        }
        Method::Netem => {
            let q = out(&["qdisc", "show", "dev", dev, "parent", "1:10"])?;
            let dropped = q
                .split("dropped ")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
                .unwrap_or(0);
            // netem counts no reordered frames; the receiver's counters below show them.
            (dropped, 0)
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Server and clients (threads of this process moved into the namespaces)

/// The HTTP server: `GET /dN` answers body N; stops when `stop` is set. Runs on a thread in
/// the server namespace; problems go to `errors`.
#[derive(Debug)]
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(ns: &str, bodies: Arc<Vec<Vec<u8>>>) -> Result<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let (ns, stop2, errors2) = (ns.to_owned(), Arc::clone(&stop), Arc::clone(&errors));
        let thread = std::thread::spawn(move || {
            let bound = netns::enter(&ns).and_then(|()| {
                let l = TcpListener::bind((SRV_ADDR, HTTP_PORT))?;
                l.set_nonblocking(true)?;
                Ok(l)
            });
            let listener = match bound {
                Ok(l) => {
                    let _ = ready_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut handlers = Vec::new();
            while !stop2.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((s, peer)) => {
                        let (bodies, errors) = (Arc::clone(&bodies), Arc::clone(&errors2));
                        handlers.push(std::thread::spawn(move || {
                            if let Err(e) = serve(s, &bodies) {
                                errors.lock().unwrap().push(format!("{peer}: {e:#}"));
                            }
                        }));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => {
                        errors2.lock().unwrap().push(format!("accept: {e}"));
                        return;
                    }
                }
            }
            for h in handlers {
                let _ = h.join();
            }
        });
        ready_rx
            .recv()
            .context("the server thread ended before binding")?
            .context("starting the HTTP server")?;
        Ok(Server {
            stop,
            thread: Some(thread),
            errors,
        })
    }

    /// Stops accepting, waits for the connections in progress; fails with what went wrong.
    fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| anyhow::anyhow!("the server panicked"))?;
        }
        let errors = self.errors.lock().unwrap();
        ensure!(errors.is_empty(), "server errors:\n{}", errors.join("\n"));
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection: one request, the whole body, then the server closes first.
fn serve(mut s: TcpStream, bodies: &[Vec<u8>]) -> Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        ensure!(n > 0, "the client closed before ending its request");
        req.extend_from_slice(&buf[..n]);
        ensure!(req.len() < 8192, "request too long");
    }
    let line = String::from_utf8_lossy(&req);
    let target = line
        .strip_prefix("GET /d")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok());
    let Some(body) = target.and_then(|i| bodies.get(i)) else {
        s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        bail!("bad request {:?}", line.lines().next());
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.shutdown(Shutdown::Write)?;
    // Until the client has closed too: the connection ends with both FINs on the wire.
    while s.read(&mut buf)? > 0 {}
    Ok(())
}

/// What one download gave the client.
#[derive(Debug)]
struct Fetched {
    /// The client's port: its connection in the dump.
    port: u16,
    result: Result<(), String>,
}

/// Downloads `/dN` for every body, CONCURRENCY at a time, from threads in namespace `ns`; the
/// client checks each body itself (TCP delivered it whole; a failure here is the network's).
fn download_all(ns: &str, bodies: &Arc<Vec<Vec<u8>>>) -> Result<Vec<Fetched>> {
    let next = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<Vec<Option<Fetched>>>> =
        Arc::new(Mutex::new((0..bodies.len()).map(|_| None).collect()));
    let mut threads = Vec::new();
    for _ in 0..CONCURRENCY {
        let (ns, next, results, bodies) = (
            ns.to_owned(),
            Arc::clone(&next),
            Arc::clone(&results),
            Arc::clone(bodies),
        );
        threads.push(std::thread::spawn(move || -> Result<()> {
            netns::enter(&ns)?;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(want) = bodies.get(i) else {
                    return Ok(());
                };
                let f = fetch(i, want);
                results.lock().unwrap()[i] = Some(f);
            }
        }));
    }
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
    }
    let results = std::mem::take(&mut *results.lock().unwrap());
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.with_context(|| format!("download {i} never ran")))
        .collect()
}

fn fetch(i: usize, want: &[u8]) -> Fetched {
    let mut port = 0;
    let result = (|| -> Result<()> {
        let addr: SocketAddr = format!("{SRV_ADDR}:{HTTP_PORT}").parse()?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(15))?;
        port = s.local_addr()?.port();
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(
            s,
            "GET /d{i} HTTP/1.1\r\nHost: {SRV_ADDR}\r\nConnection: close\r\n\r\n"
        )?;
        let mut got = Vec::with_capacity(want.len() + 256);
        s.read_to_end(&mut got)?;
        let end = got
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("no end of the response header")?;
        ensure!(got.starts_with(b"HTTP/1.1 200 "), "not a 200 response");
        ensure!(
            &got[end + 4..] == want,
            "body of {} bytes is not the {} served",
            got.len() - end - 4,
            want.len()
        );
        Ok(())
    })()
    .map_err(|e| format!("{e:#}"));
    Fetched { port, result }
}

// ---------------------------------------------------------------------------------------------
// The sensor runs and their checks

/// Arguments added to every sensor command (MOS_IMPAIRED_SENSOR_ARGS).
fn extra_sensor_args() -> Vec<String> {
    std::env::var("MOS_IMPAIRED_SENSOR_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A sensor with mos-dump attached, from start to exit.
#[derive(Debug)]
struct Capture {
    sensor: Proc,
    dump: Proc,
    out: std::path::PathBuf,
}

/// Starts `sensor_cmd` (which has `--control control` among its arguments) and mos-dump writing
/// into `w/NAME-out`; returns once mos-dump is attached.
fn start_capture(name: &str, sensor_cmd: Command, control: &Path, w: &Path) -> Result<Capture> {
    let mut sensor = Proc::spawn(&format!("{name}-sensor"), sensor_cmd, w)?;
    wait_for_socket(&mut sensor, control, TIMEOUT)?;
    let out = w.join(format!("{name}-out"));
    let mut dump = Proc::spawn(
        &format!("{name}-dump"),
        cmd(&bin("mos-dump")?, &[&"--control", &control, &"--out", &out]),
        w,
    )?;
    wait_for(
        &format!("mos-dump to attach to the {name} sensor"),
        TIMEOUT,
        || {
            if let Some(st) = sensor.poll()? {
                bail!(
                    "the {name} sensor exited with {st} early:\n{}",
                    tail(&sensor.stderr())
                );
            }
            if let Some(st) = dump.poll()? {
                bail!("mos-dump exited with {st} early:\n{}", tail(&dump.stderr()));
            }
            Ok(sensor.stderr().contains("attached: mos-dump"))
        },
    )?;
    Ok(Capture { sensor, dump, out })
}

/// What one sensor run gave.
#[derive(Debug)]
struct Outcome {
    name: &'static str,
    /// Bytes lost in the dump's records, all connections, both directions.
    lost: u64,
    /// The sensor's own counters: payload bytes, lost to gaps, lost to overflow.
    payload: u64,
    gap: u64,
    overflow: u64,
    /// What is wrong with the dump (empty when all is well).
    problems: Vec<String>,
    /// The sensor's and mos-dump's closing lines.
    summary: String,
}

/// Waits for both processes to end, then checks the dump against the downloads.
fn finish_capture(
    name: &'static str,
    mut c: Capture,
    bodies: &[Vec<u8>],
    fetched: &[Fetched],
) -> Result<Outcome> {
    let deadline = Instant::now() + TIMEOUT;
    let ss = c.sensor.wait_until(deadline)?;
    let ds = c.dump.wait_until(deadline)?;
    let serr = c.sensor.stderr();
    let derr = c.dump.stderr();
    ensure!(
        ss.code() == Some(0),
        "the {name} sensor exited with {ss}:\n{}",
        tail(&serr)
    );
    ensure!(
        ds.code() == Some(0),
        "mos-dump ({name}) exited with {ds}:\n{}",
        tail(&derr)
    );
    assert_no_panic(&c.sensor)?;
    assert_no_panic(&c.dump)?;
    let stat = |key: &str| -> Result<u64> {
        serr.lines()
            .filter_map(|l| l.split_once("stats "))
            .flat_map(|(_, kv)| kv.split_whitespace())
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            .with_context(|| format!("no {key} in the {name} sensor's stats line:\n{serr}"))
    };
    let summary = serr
        .lines()
        .chain(derr.lines())
        .filter(|l| {
            l.contains("lost to overflow")
                || l.contains("dropped by the capture")
                || l.contains("with bad TCP checksums")
                || l.starts_with("mos-dump: ")
        })
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    let (lost, problems) = check_dump(&c.out, bodies, fetched)?;
    Ok(Outcome {
        name,
        lost,
        payload: stat("payload_bytes")?,
        gap: stat("gap_bytes")?,
        overflow: stat("overflow_bytes")?,
        problems,
        summary,
    })
}

/// Checks a dump: one connection per download and no other, and each response body, after the
/// header, byte-exact. Returns the bytes lost over all records and the problems found.
fn check_dump(out: &Path, bodies: &[Vec<u8>], fetched: &[Fetched]) -> Result<(u64, Vec<String>)> {
    let text = std::fs::read_to_string(out.join("flows.jsonl"))
        .with_context(|| format!("reading {}/flows.jsonl", out.display()))?;
    let flows = parse_flows(&text)?;
    let server = format!("{SRV_ADDR}:{HTTP_PORT}");
    let lost = flows.iter().map(|f| f.c2s_lost + f.s2c_lost).sum();
    let mut problems = Vec::new();
    let by_client: BTreeMap<&str, &FlowRecord> = flows
        .iter()
        .filter(|f| f.server == server)
        .map(|f| (f.client.as_str(), f))
        .collect();
    if flows.len() != bodies.len() || by_client.len() != bodies.len() {
        problems.push(format!(
            "{} connections in flows.jsonl ({} distinct to {server}), {} downloads",
            flows.len(),
            by_client.len(),
            bodies.len()
        ));
    }
    for (i, (f, body)) in fetched.iter().zip(bodies).enumerate() {
        let client = format!("{CLI_ADDR}:{}", f.port);
        let what = format!("download {i} ({} bytes, {client})", body.len());
        match by_client.get(client.as_str()) {
            None => problems.push(format!("{what}: no connection")),
            Some(rec) => {
                if let Err(e) = check_flow(out, rec, i, body) {
                    problems.push(format!("{what}: {e:#}"));
                }
            }
        }
    }
    Ok((lost, problems))
}

/// One connection: its request, and its response body equal to `body`, nothing lost.
fn check_flow(out: &Path, rec: &FlowRecord, i: usize, body: &[u8]) -> Result<()> {
    let read = |file: &Option<String>| -> Result<Vec<u8>> {
        Ok(match file {
            Some(f) => std::fs::read(out.join(f)).with_context(|| format!("reading {f}"))?,
            None => Vec::new(),
        })
    };
    let (c2s, s2c) = (read(&rec.c2s_file)?, read(&rec.s2c_file)?);
    let mut wrong = Vec::new();
    if rec.c2s_lost + rec.s2c_lost > 0 {
        wrong.push(format!(
            "lost c2s {} of {}, s2c {} of {}",
            rec.c2s_lost, rec.c2s_bytes, rec.s2c_lost, rec.s2c_bytes
        ));
    }
    let want = format!("GET /d{i} HTTP/1.1\r\n");
    if !c2s.starts_with(want.as_bytes()) {
        wrong.push(format!(
            "request {:?}",
            String::from_utf8_lossy(&c2s[..c2s.len().min(40)])
        ));
    }
    match s2c.windows(4).position(|w| w == b"\r\n\r\n") {
        None => wrong.push(format!("no response header in {} s2c bytes", s2c.len())),
        Some(end) => {
            let got = &s2c[end + 4..];
            if got != body {
                let differ = |(a, b): (&u8, &u8)| a != b;
                let pairs = || got.iter().zip(body);
                let how = match (pairs().position(differ), pairs().rposition(differ)) {
                    (Some(first), Some(last)) => format!(
                        "differs in {} bytes from byte {first} to byte {last}",
                        pairs().filter(|&p| differ(p)).count()
                    ),
                    _ => "is a prefix of it or has it as a prefix".to_string(),
                };
                wrong.push(format!(
                    "the body ({} bytes) {how}, against the {} bytes served",
                    got.len(),
                    body.len()
                ));
            }
        }
    }
    ensure!(wrong.is_empty(), "{}", wrong.join("; "));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The test

#[test]
fn impaired_downloads_are_whole_live_and_replayed() -> Result<()> {
    netns::assert_root()?;
    need_tool("tc")?;
    let started = Instant::now();
    let work = ScratchDir::new("impaired")?;
    let w = work.path();
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        SIZES
            .iter()
            .enumerate()
            .map(|(i, &n)| content(i as u64 + 1, n))
            .collect(),
    );
    let total: u64 = SIZES.iter().sum();
    let extra = extra_sensor_args();

    let net = Netns::named("im")?;
    // Windows may grow well past Linux's default 6 MiB: the sensor must follow them.
    ns_run(
        &net.cli,
        &["sysctl", "-qw", "net.ipv4.tcp_rmem=4096 131072 33554432"],
    )?;
    ns_run(
        &net.srv,
        &["sysctl", "-qw", "net.ipv4.tcp_wmem=4096 131072 33554432"],
    )?;
    let method = impair(&net.srv, &net.srv_if)?;
    ensure!(
        impair(&net.cli, &net.cli_if)? == method,
        "the two ends were impaired differently"
    );
    let server = Server::start(&net.srv, Arc::clone(&bodies))?;

    // The live sensor, in the server namespace, on the server's end of the veth.
    let control = w.join("live.sock");
    let mut c = in_ns(&net.srv, &sensor_bin()?);
    c.env("MOS_SENSOR_CONFIG", "")
        .args(["--iface", &net.srv_if])
        .args([
            "--stop-after-idle",
            "2",
            "--lossless",
            "--wait-analyzers",
            "1",
        ])
        .arg("--control")
        .arg(&control)
        .args(&extra);
    let live = start_capture("live", c, &control, w)?;
    wait_for("the live capture to start", TIMEOUT, || {
        Ok(live.sensor.stderr().contains("mos-sensor: capturing on "))
    })?;
    let pcap = w.join("impaired.pcap");
    let sniffer = Sniffer::start(Some(&net.srv), &net.srv_if, &pcap)?;

    let t0 = Instant::now();
    let fetched = download_all(&net.cli, &bodies)?;
    let download_time = t0.elapsed();
    let failed: Vec<String> = fetched
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            f.result
                .as_ref()
                .err()
                .map(|e| format!("download {i}: {e}"))
        })
        .collect();
    ensure!(
        failed.is_empty(),
        "downloads failed at the client (the network's fault, not the sensor's):\n{}",
        failed.join("\n")
    );
    server.stop()?;
    let live = finish_capture("live", live, &bodies, &fetched)?;
    let sniffed = sniffer.stop()?;
    let (lost_s, slow_s) = impairment_counts(&net.srv, &net.srv_if, method)?;
    let (lost_c, slow_c) = impairment_counts(&net.cli, &net.cli_if, method)?;
    let tcp_srv = tcp_counters(&net.srv)?;
    let tcp_cli = tcp_counters(&net.cli)?;
    drop(net);

    // The same frames from the file.
    let control = w.join("replay.sock");
    let mut c = cmd(
        &sensor_bin()?,
        &[&"--pcap", &pcap, &"--wait-analyzers", &"1"],
    );
    c.arg("--control").arg(&control).args(&extra);
    let replay = start_capture("replay", c, &control, w)?;
    let replay = finish_capture("replay", replay, &bodies, &fetched)?;

    let mut report = format!(
        "impaired link ({method:?}; each way {:.1} % lost, {:.0} % {}, {RATE_MBIT} Mbit/s): \
         {} downloads, {:.1} MiB, in {:.1} s, {} concurrently\n  \
         server->client: {lost_s} frames lost, {slow_s} slowed; client->server: {lost_c} \
         lost, {slow_c} slowed\n  server TCP {tcp_srv:?}\n  client TCP {tcp_cli:?}\n  \
         sniffed {} frames, {:.1} MiB\n  sensor arguments added: {:?}\n",
        LOSS * 100.0,
        REORDER * 100.0,
        if method == Method::Bpf {
            "through the slow class"
        } else {
            "delayed"
        },
        SIZES.len(),
        total as f64 / f64::from(1 << 20),
        download_time.as_secs_f64(),
        CONCURRENCY,
        sniffed.frames,
        sniffed.bytes as f64 / f64::from(1 << 20),
        extra
    );
    for o in [&live, &replay] {
        let _ = writeln!(
            report,
            "  {}: {} bytes lost in the dump; sensor: {} payload bytes, {} lost to gaps, {} \
             lost to overflow; {} bodies wrong\n{}",
            o.name,
            o.lost,
            o.payload,
            o.gap,
            o.overflow,
            o.problems.len(),
            o.summary
        );
        for p in o.problems.iter().take(10) {
            let _ = writeln!(report, "    {p}");
        }
    }
    let _ = write!(
        report,
        "  whole test {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The impairment must have happened, or this test proves nothing.
    ensure!(
        lost_s > 0 && lost_c > 0 && tcp_srv.get("TcpRetransSegs").is_some_and(|&n| n > 0),
        "the link lost nothing: the impairment did not work\n{report}"
    );
    if method == Method::Bpf {
        ensure!(
            slow_s > 0 && slow_c > 0,
            "no frame went through the slow class\n{report}"
        );
    }
    ensure!(
        live.lost == 0
            && replay.lost == 0
            && live.problems.is_empty()
            && replay.problems.is_empty(),
        "bytes lost or bodies wrong on the impaired link:\n{report}"
    );
    println!("{report}");
    Ok(())
}
