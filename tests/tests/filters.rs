//! The sensor's filters against tcpdump's (issue 15): on the corpus, every socket with a SYN
//! filter gets exactly the connections whose first frame tcpdump selects with the same
//! expression, and every raw socket exactly the packets tcpdump selects.
//!
//! One sensor replays each capture (losslessly) to one `filter-probe`, which holds an
//! unfiltered socket beside one socket per expression and prints what each got. tcpdump runs
//! on the same file once per expression, writing the frames it selects (`-w -`); those frames
//! are found again, in order, among the frames the sensor's own reader reads from the file,
//! which gives their positions.
//!
//! Positions: an event's `pkt_pos` is the 0-based position of its frame among the frames of
//! the input, so tcpdump's frame number (1-based, what `-#` prints on an unfiltered run and
//! Wireshark calls `frame.number`) is `pkt_pos + 1`. (`tcpdump -#` on a filtered run numbers
//! the frames it prints, not the frames of the file, so it cannot name them.) The test checks
//! what this rests on: tcpdump's unfiltered output is, frame by frame, the frames the sensor's
//! reader reads, as many as the sensor counts, and the frame at a connection's `pkt_pos`
//! carries that connection's endpoints.
//!
//! Needs the workspace's binaries (`cargo build --release --workspace --bins`) and tcpdump.

use anyhow::{bail, ensure, Context, Result};
use mos_sensor::capture::file::FileCapture;
use mos_sensor::capture::CaptureBackend;
use mos_sensor::parse::{parse_packet, Parsed};
use mos_tests::locate::{bin, corpus_dir, list_captures, sensor_bin};
use mos_tests::procs::{cmd, sensor_stat, tail, wait_for_socket, Proc};
use mos_tests::runner::{default_workers, parallel_map, ScratchDir};
use sha1::{Digest, Sha1};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The longest one capture's sensor and probe may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// SYN filters held against tcpdump on every capture (`filter-probe` takes at most 20).
const SYN_EXPRS: [&str; 20] = [
    "tcp port 80",
    "port 443",
    "tcp dst port 80 or tcp dst port 8080",
    "net 192.168.0.0/16",
    "src net 10.0.0.0/8",
    "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
    "ip6",
    "ip6 and tcp port 443",
    "vlan",
    "vlan and tcp",
    "not port 80",
    "tcp portrange 1-1023",
    "less 64",
    "greater 1000",
    "tcp[13] & 2 != 0",
    "ip",
    "dst portrange 8000-9000",
    "ip[8] < 64",
    "tcp[tcpflags] & tcp-push != 0",
    // The payload starts with "GET ": a load at an offset read from the packet.
    "tcp[((tcp[12] & 0xf0) >> 2):4] = 0x47455420",
];

/// Raw filters held against tcpdump on [`RAW_CAPTURES`].
const RAW_EXPRS: [&str; 8] = [
    "tcp port 80",
    "udp",
    "ip6",
    "vlan",
    "less 100",
    "tcp[tcpflags] & tcp-syn != 0",
    "not tcp",
    // IPv4's don't-fragment bit.
    "ip[6:2] & 0x4000 != 0",
];

/// Captures for the raw sockets: every link type of the corpus the sensor reads, VLAN and
/// MPLS, IPv6, and IP fragments (v4 and v6).
const RAW_CAPTURES: [&str; 18] = [
    "dpkt__examples__data__http.pcap",
    "zeek__http-vlan-0.pcap",
    "zeek__mixed-vlan-mpls.pcap",
    "zeek__communityid__ipv6.pcap",
    "zeek__raw_packets.pcap",
    "tcpflow__test4.pcap",
    "tcpflow__local2.pcap",
    "gopacket__pcap__test_loopback.pcap",
    "ndpi__KakaoTalk_chat.pcap",
    "ndpi__BGP_redist.pcap",
    "zeek__nflog-http.pcap",
    "wireshark__http-ooo.pcap",
    "tcpdump__bgp_vpn_attrset.pcap",
    "zeek__ipv4__fragmented-4.pcap",
    "zeek__ipv6-http-atomic-frag.pcap",
    "scapy__tls_tcp_frag.pcap",
    "suricata-verify__defrag__bug-6887-defrag-ipv6-tcp__frag-ip-tcp.pcap",
    "suricata-verify__defrag__bug-6887-defrag-eth-vlan-ipv6-tcp__frag-eth-vlan-ipv6-tcp.pcap",
];

// ---------------------------------------------------------------------------------------------
// The capture as the sensor's reader reads it

/// One frame of a capture.
struct Frame {
    ts_ns: u64,
    orig_len: u32,
    data: Vec<u8>,
    /// What the sensor's parser makes of it.
    kind: FrameKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FrameKind {
    /// A TCP segment from the first endpoint to the second.
    Tcp(SocketAddr, SocketAddr),
    /// A piece of a fragmented IP datagram.
    Fragment,
    Other,
}

/// Every frame the sensor's reader reads from `path`, in order (a read error ends the list, as
/// it ends the sensor's replay).
fn read_frames(path: &Path) -> Result<Vec<Frame>> {
    let mut cap = FileCapture::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut frames = Vec::new();
    while let Ok(Some(pkt)) = cap.next_packet() {
        let kind = match parse_packet(&pkt, false) {
            Ok(Parsed::Tcp(s)) => FrameKind::Tcp(
                SocketAddr::new(s.src, s.sport),
                SocketAddr::new(s.dst, s.dport),
            ),
            Ok(Parsed::Fragment { .. }) => FrameKind::Fragment,
            _ => FrameKind::Other,
        };
        frames.push(Frame {
            ts_ns: pkt.ts_ns,
            orig_len: pkt.orig_len,
            data: pkt.data.to_vec(),
            kind,
        });
    }
    Ok(frames)
}

/// Whether `path` is a pcapng file (its first block is a section header).
fn is_pcapng(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)?.read_exact(&mut magic)?;
    Ok(magic == [0x0a, 0x0d, 0x0d, 0x0a])
}

/// A sensor replaying `pcap` (lossless) once `analyzers` analyzers are ready, its control
/// socket at `control` and up; its output in `w`.
fn replaying(pcap: &Path, control: &Path, analyzers: usize, w: &Path) -> Result<Proc> {
    let n = analyzers.to_string();
    let mut sensor = Proc::spawn(
        "sensor",
        cmd(
            &sensor_bin()?,
            &[
                &"--pcap",
                &pcap,
                &"--control",
                &control,
                &"--wait-analyzers",
                &n,
            ],
        ),
        w,
    )?;
    wait_for_socket(&mut sensor, control, TIMEOUT)?;
    Ok(sensor)
}

// ---------------------------------------------------------------------------------------------
// tcpdump

/// What tcpdump did with one expression on one capture.
#[derive(Debug)]
enum Tcpdump {
    /// It compiled the expression and selected these frames (0-based positions, ascending).
    /// `stopped` is its read error when it did not read the whole file.
    Selected {
        positions: Vec<usize>,
        stopped: Option<String>,
    },
    /// It refused the expression for this capture (its message).
    Refused(String),
}

/// `tcpdump -r PCAP -w - [EXPR]`, the frames it writes found among `frames`.
fn tcpdump(pcap: &Path, expr: Option<&str>, frames: &[Frame]) -> Result<Tcpdump> {
    let mut c = Command::new("tcpdump");
    c.arg("-r").arg(pcap).arg("-w").arg("-");
    if let Some(e) = expr {
        c.arg(e);
    }
    let out = c
        .output()
        .context("running tcpdump (scripts/setup.sh installs it)")?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let last = err.lines().last().unwrap_or("").trim().to_string();
    let stopped = match (out.status.success(), err.contains("pcap_loop:")) {
        (true, _) => None,
        (false, true) => Some(last),
        (false, false) => {
            ensure!(
                out.stdout.is_empty(),
                "tcpdump {expr:?} failed ({}) yet wrote frames: {err}",
                out.status
            );
            return Ok(Tcpdump::Refused(last));
        }
    };
    let positions = locate(frames, out.stdout)
        .with_context(|| format!("tcpdump {expr:?} on {}", pcap.display()))?;
    Ok(Tcpdump::Selected { positions, stopped })
}

/// The positions in `frames` of the frames of `selection` (a capture of some of them, in
/// order). A frame's verdict depends only on its bytes and length, so matching each selected
/// frame to the next equal frame finds exactly the selected positions, duplicates included.
///
/// libpcap cuts a record longer than the file's snap length to that length, where the
/// sensor's reader keeps it whole (tcpdump__bgp_mp_reach_nlri-oobr.pcap has one): tcpdump's
/// copy of such a frame is a prefix of ours.
fn locate(frames: &[Frame], selection: Vec<u8>) -> Result<Vec<usize>> {
    let mut cap = FileCapture::from_bytes("tcpdump's output", selection)?;
    let mut positions = Vec::new();
    let mut next = 0;
    while let Some(pkt) = cap.next_packet()? {
        let found = frames[next..]
            .iter()
            .position(|f| f.orig_len == pkt.orig_len && f.data.starts_with(pkt.data))
            .with_context(|| {
                format!(
                    "its frame {} (of {} bytes) is none of the sensor reader's frames from {next}",
                    positions.len() + 1,
                    pkt.orig_len
                )
            })?;
        positions.push(next + found);
        next += found + 1;
    }
    Ok(positions)
}

/// How many frames tcpdump reads from `pcap`: its unfiltered output must be the first frames
/// of `frames`, all of them unless tcpdump stopped on a read error.
fn tcpdump_frames(pcap: &Path, frames: &[Frame]) -> Result<(usize, Option<String>)> {
    match tcpdump(pcap, None, frames)? {
        Tcpdump::Refused(e) => bail!("tcpdump cannot read {}: {e}", pcap.display()),
        Tcpdump::Selected { positions, stopped } => {
            let n = positions.len();
            ensure!(
                positions.iter().enumerate().all(|(i, &p)| i == p),
                "tcpdump's frames of {} are not the first frames the sensor's reader reads",
                pcap.display()
            );
            ensure!(
                stopped.is_some() || n == frames.len(),
                "tcpdump read {n} frames of {}, the sensor's reader {}",
                pcap.display(),
                frames.len()
            );
            Ok((n, stopped))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The sensor and the probe

/// What `filter-probe` printed, by socket number (0: unfiltered).
#[derive(Debug, Default)]
struct ProbeOut {
    /// Stream sockets: (pkt_pos, client, server) of each connection.
    conns: BTreeMap<usize, BTreeSet<(u64, String, String)>>,
    /// Raw sockets: the packets, in the order they came.
    raw: BTreeMap<usize, Vec<RawPkt>>,
    /// Sockets whose filter the library refused: (kind, number) and the error.
    refused: BTreeMap<(String, usize), String>,
}

#[derive(Debug, Clone)]
struct RawPkt {
    pkt_pos: Option<u64>,
    key: FrameKey,
}

/// A frame as a raw event shows it: capture time, length on the wire, SHA-1 of the bytes.
type FrameKey = (u64, u32, String);

fn frame_key(f: &Frame) -> FrameKey {
    (f.ts_ns, f.orig_len, hex::encode(Sha1::digest(&f.data)))
}

fn parse_probe(text: &str) -> Result<ProbeOut> {
    let mut out = ProbeOut::default();
    let mut done = false;
    for line in text.lines() {
        let mut words = line.split(' ');
        let tag = words.next().unwrap_or("");
        if tag == "refused" {
            let kind = words.next().context("refused what")?.to_string();
            let k = words
                .next()
                .and_then(|w| w.strip_prefix("sock="))
                .and_then(|k| k.parse().ok())
                .with_context(|| format!("no socket in {line:?}"))?;
            out.refused
                .insert((kind, k), words.collect::<Vec<_>>().join(" "));
            continue;
        }
        let f: HashMap<&str, &str> = words.filter_map(|w| w.split_once('=')).collect();
        let get = |k: &str| {
            f.get(k)
                .copied()
                .with_context(|| format!("no {k} in {line:?}"))
        };
        match tag {
            "conn" => {
                let k = get("sock")?.parse()?;
                let pos = get("pkt_pos")?
                    .parse()
                    .with_context(|| format!("a connection without its frame: {line:?}"))?;
                out.conns.entry(k).or_default().insert((
                    pos,
                    get("client")?.to_string(),
                    get("server")?.to_string(),
                ));
            }
            "raw" => {
                let k = get("sock")?.parse()?;
                let pkt_pos = get("pkt_pos")?.parse().ok();
                let key = (
                    get("ts")?.parse()?,
                    get("len")?.parse()?,
                    get("sha1")?.to_string(),
                );
                out.raw.entry(k).or_default().push(RawPkt { pkt_pos, key });
            }
            "done" => done = true,
            _ => bail!("unexpected line from filter-probe: {line:?}"),
        }
    }
    ensure!(done, "filter-probe did not finish its output");
    Ok(out)
}

/// Replays `pcap` to one `filter-probe --keep-going` with these expressions; returns what the
/// probe printed and how many frames the sensor read. `meanwhile` runs while they do.
fn probe_capture<T>(
    pcap: &Path,
    syn: &[&str],
    raw: &[&str],
    meanwhile: impl FnOnce() -> Result<T>,
) -> Result<(ProbeOut, u64, T)> {
    let work = ScratchDir::new(&format!(
        "filters-{}",
        pcap.file_name().unwrap_or_default().to_string_lossy()
    ))?;
    let w = work.path();
    let control = w.join("c.sock");
    let deadline = Instant::now() + TIMEOUT;
    let mut sensor = replaying(pcap, &control, 1, w)?;
    let mut args: Vec<OsString> = vec![
        "--control".into(),
        control.clone().into_os_string(),
        "--wait".into(),
        "10".into(),
        "--keep-going".into(),
    ];
    for (flag, exprs) in [("--syn", syn), ("--raw", raw)] {
        for e in exprs {
            args.push(flag.into());
            args.push(e.into());
        }
    }
    let mut probe_cmd = Command::new(bin("filter-probe")?);
    probe_cmd.args(&args);
    let mut probe = Proc::spawn("filter-probe", probe_cmd, w)?;
    let extra = meanwhile();
    let (s, p) = (sensor.wait_until(deadline), probe.wait_until(deadline));
    let (s, p) = (s?, p?);
    ensure!(
        p.success(),
        "filter-probe exited with {p}; stderr:\n{}\nsensor's stderr:\n{}",
        tail(&probe.stderr()),
        tail(&sensor.stderr())
    );
    let serr = sensor.stderr();
    ensure!(
        s.code() == Some(0) || (s.code() == Some(2) && serr.contains("the replay stopped there")),
        "the sensor exited with {s}; stderr:\n{}",
        tail(&serr)
    );
    let frames = sensor_stat(&serr, "frames")?;
    Ok((parse_probe(&probe.stdout())?, frames, extra?))
}

// ---------------------------------------------------------------------------------------------
// SYN filters on every capture

/// Per expression, over the corpus.
#[derive(Debug, Default, Clone, Copy)]
struct ExprTally {
    /// Connections whose membership was compared.
    compared: usize,
    /// Of those, the ones tcpdump selected (and the socket got).
    selected: usize,
    /// Captures on which tcpdump refused the expression, and the library too (or, on a
    /// pcapng file, the socket got nothing).
    refused: usize,
}

/// What one capture gave.
#[derive(Debug, Default)]
struct SynResult {
    conns: usize,
    tally: Vec<ExprTally>,
    /// Connections left out because their first packet is a datagram the sensor reassembled
    /// (their SYN filter ran on the datagram, tcpdump's on the fragment): described.
    reassembled: Vec<String>,
    /// Connections left out because tcpdump stopped reading before their first frame.
    unread: usize,
    /// Why tcpdump stopped, when it did.
    stopped: Option<String>,
    mismatches: Vec<String>,
}

fn syn_capture(pcap: &Path) -> Result<SynResult> {
    let name = pcap.file_name().unwrap_or_default().to_string_lossy();
    let frames = read_frames(pcap)?;
    let (probe, sensor_frames, (read, selections)) = probe_capture(pcap, &SYN_EXPRS, &[], || {
        let read = tcpdump_frames(pcap, &frames)?;
        let sel = SYN_EXPRS
            .iter()
            .map(|e| tcpdump(pcap, Some(e), &frames))
            .collect::<Result<Vec<_>>>()?;
        Ok((read, sel))
    })?;
    ensure!(
        sensor_frames == frames.len() as u64,
        "{name}: the sensor read {sensor_frames} frames, its reader here {}",
        frames.len()
    );
    let (tcpdump_read, stopped) = read;
    let mut r = SynResult {
        tally: vec![ExprTally::default(); SYN_EXPRS.len()],
        stopped,
        ..SynResult::default()
    };
    let empty = BTreeSet::new();
    let all = probe.conns.get(&0).unwrap_or(&empty);
    r.conns = all.len();
    // The connections compared: those whose first frame tcpdump read and saw as the sensor's
    // filter did (not a fragment of a datagram the sensor reassembled).
    let mut compared = BTreeSet::new();
    for c in all {
        let (pos, client, server) = c;
        let Some(f) = frames.get(*pos as usize) else {
            r.mismatches.push(format!(
                "{name}: connection {client} -> {server} starts at frame {} of {}",
                pos + 1,
                frames.len()
            ));
            continue;
        };
        match f.kind {
            FrameKind::Fragment => {
                r.reassembled
                    .push(format!("{name}: {client} -> {server}, frame {}", pos + 1));
                continue;
            }
            FrameKind::Tcp(a, b) => {
                let (a, b) = (a.to_string(), b.to_string());
                if !((&a, &b) == (client, server) || (&b, &a) == (client, server)) {
                    r.mismatches.push(format!(
                        "{name}: connection {client} -> {server} starts at frame {}, a \
                         segment {a} -> {b}",
                        pos + 1
                    ));
                    continue;
                }
            }
            FrameKind::Other => {
                r.mismatches.push(format!(
                    "{name}: connection {client} -> {server} starts at frame {}, which is \
                     no TCP segment",
                    pos + 1
                ));
                continue;
            }
        }
        if *pos as usize >= tcpdump_read {
            r.unread += 1;
            continue;
        }
        compared.insert(c.clone());
    }
    for (i, (expr, sel)) in SYN_EXPRS.iter().zip(&selections).enumerate() {
        let k = i + 1;
        let got = probe.conns.get(&k).unwrap_or(&empty);
        let refused = probe.refused.get(&("syn".to_string(), k));
        let t = &mut r.tally[i];
        match (sel, refused) {
            (Tcpdump::Refused(why), Some(ours)) => {
                // The library compiles for the input's own link type as tcpdump does, and
                // refuses what does not compile there: the bind fails, with EINVAL.
                if !ours.starts_with("EINVAL") {
                    r.mismatches.push(format!(
                        "{name}: {expr:?} refused with {ours:?}, not EINVAL (tcpdump: {why})"
                    ));
                }
                t.refused += 1;
                continue;
            }
            (Tcpdump::Refused(why), None) => {
                // A pcapng file may describe its interfaces anywhere, so the sensor offers
                // every link type it reads, Ethernet first, and the library compiles for
                // those: it cannot refuse what tcpdump refuses for the file's link type. The
                // socket has no program for that link type then, and gets nothing.
                if !is_pcapng(pcap)? || !got.is_empty() {
                    r.mismatches.push(format!(
                        "{name}: tcpdump refuses {expr:?} ({why}); the library took it and the \
                         socket got {} connections",
                        got.len()
                    ));
                }
                t.refused += 1;
                continue;
            }
            (Tcpdump::Selected { .. }, Some(ours)) => {
                r.mismatches.push(format!(
                    "{name}: the library refused {expr:?}, which tcpdump takes: {ours}"
                ));
                continue;
            }
            (Tcpdump::Selected { positions, .. }, None) => {
                let positions: BTreeSet<u64> = positions.iter().map(|&p| p as u64).collect();
                for c in got.difference(all) {
                    r.mismatches.push(format!(
                        "{name}: {expr:?} gave a connection the unfiltered socket did not get: \
                         {} -> {}, frame {}",
                        c.1,
                        c.2,
                        c.0 + 1
                    ));
                }
                for c in &compared {
                    let want = positions.contains(&c.0);
                    let has = got.contains(c);
                    t.compared += 1;
                    t.selected += usize::from(want && has);
                    if want != has {
                        r.mismatches.push(format!(
                            "{name}: {expr:?}: connection {} -> {} (first frame {}): tcpdump {} \
                             that frame, the socket {} the connection",
                            c.1,
                            c.2,
                            c.0 + 1,
                            if want { "selects" } else { "does not select" },
                            if has { "got" } else { "did not get" },
                        ));
                    }
                }
            }
        }
    }
    Ok(r)
}

/// Every corpus capture through one `filter-probe` with every expression of [`SYN_EXPRS`]:
/// each socket gets exactly the connections whose first frame tcpdump selects.
#[test]
fn syn_filters_take_the_connections_whose_first_frame_tcpdump_selects() -> Result<()> {
    let start = Instant::now();
    let corpus = corpus_dir()?;
    let captures = list_captures(&corpus)?;
    let results = parallel_map(&captures, default_workers(), |c| {
        syn_capture(&corpus.join("pcaps").join(c))
    });
    let mut failed = Vec::new();
    let mut tally = vec![ExprTally::default(); SYN_EXPRS.len()];
    let (mut conns, mut unread, mut mismatches) = (0, 0, Vec::new());
    let (mut reassembled, mut stopped) = (Vec::new(), Vec::new());
    for (c, r) in captures.iter().zip(results) {
        match r {
            Ok(r) => {
                conns += r.conns;
                unread += r.unread;
                for (t, x) in tally.iter_mut().zip(&r.tally) {
                    t.compared += x.compared;
                    t.selected += x.selected;
                    t.refused += x.refused;
                }
                reassembled.extend(r.reassembled);
                mismatches.extend(r.mismatches);
                if let Some(s) = r.stopped {
                    stopped.push(format!("{c} ({s}): {} connections not compared", r.unread));
                }
            }
            Err(e) => failed.push(format!("--- {c}: {e:#}")),
        }
    }
    println!(
        "{} captures, {conns} connections on the unfiltered socket; {} expressions:",
        captures.len(),
        SYN_EXPRS.len()
    );
    for (e, t) in SYN_EXPRS.iter().zip(&tally) {
        println!(
            "  {:>6} compared {:>6} selected {:>3} captures refused  {e}",
            t.compared, t.selected, t.refused
        );
    }
    let total: usize = tally.iter().map(|t| t.compared).sum();
    println!(
        "{total} connection/expression pairs compared, {} mismatches, {} captures failed",
        mismatches.len(),
        failed.len()
    );
    println!(
        "left out: {} connections whose first packet is a reassembled datagram, {unread} past \
         where tcpdump stopped reading",
        reassembled.len()
    );
    for s in reassembled.iter().chain(&stopped) {
        println!("  {s}");
    }
    println!("in {:.1} s", start.elapsed().as_secs_f64());
    ensure!(
        failed.is_empty() && mismatches.is_empty(),
        "{} captures failed:\n{}\n{} mismatches:\n{}",
        failed.len(),
        failed.join("\n"),
        mismatches.len(),
        mismatches.join("\n")
    );
    // Every expression must have told connections apart somewhere, or it proved little.
    for (e, t) in SYN_EXPRS.iter().zip(&tally) {
        ensure!(
            t.selected > 0 && t.selected < t.compared,
            "{e:?} selected {} of {} connections: it tells none apart",
            t.selected,
            t.compared
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Raw filters on some captures

/// Per raw expression.
#[derive(Debug, Default, Clone, Copy)]
struct RawTally {
    compared: usize,
    selected: usize,
    refused: usize,
}

#[derive(Debug, Default)]
struct RawResult {
    /// Packets the unfiltered raw socket got.
    packets: usize,
    /// Of those, datagrams the sensor reassembled (no frame of the capture): left out.
    reassembled: usize,
    /// Raw events that carried no `pkt_pos`.
    without_pos: usize,
    tally: Vec<RawTally>,
    mismatches: Vec<String>,
}

/// The frame positions of a raw socket's packets: `pkt_pos` when the event has it (checked
/// against the packet's bytes), else the next not yet taken frame with the packet's time,
/// length and bytes; `None` for a packet that is no frame of the capture (a datagram the
/// sensor reassembled from fragments, whose `pkt_pos` is that of its last fragment).
fn raw_positions(
    name: &str,
    frames: &[Frame],
    index: &HashMap<FrameKey, Vec<usize>>,
    pkts: &[RawPkt],
    mismatches: &mut Vec<String>,
) -> Vec<Option<usize>> {
    let mut taken: HashMap<&FrameKey, usize> = HashMap::new();
    pkts.iter()
        .map(|p| {
            if let Some(pos) = p.pkt_pos {
                let ok = frames
                    .get(pos as usize)
                    .is_some_and(|f| frame_key(f) == p.key);
                // A datagram the sensor reassembled is no frame of the capture: it comes at
                // the position of the fragment that completed it.
                if !ok && !index.contains_key(&p.key) {
                    return None;
                }
                if !ok {
                    mismatches.push(format!(
                        "{name}: a raw packet says it is frame {} but is not: {:?}",
                        pos + 1,
                        p.key
                    ));
                }
                return ok.then_some(pos as usize);
            }
            let at = index.get(&p.key)?;
            let n = taken.entry(&p.key).or_default();
            let pos = at.get(*n).copied();
            *n += 1;
            pos
        })
        .collect()
}

fn raw_capture(pcap: &Path) -> Result<RawResult> {
    let name = pcap.file_name().unwrap_or_default().to_string_lossy();
    let frames = read_frames(pcap)?;
    let mut index: HashMap<FrameKey, Vec<usize>> = HashMap::new();
    for (i, f) in frames.iter().enumerate() {
        index.entry(frame_key(f)).or_default().push(i);
    }
    let (probe, sensor_frames, (read, selections)) = probe_capture(pcap, &[], &RAW_EXPRS, || {
        let read = tcpdump_frames(pcap, &frames)?;
        let sel = RAW_EXPRS
            .iter()
            .map(|e| tcpdump(pcap, Some(e), &frames))
            .collect::<Result<Vec<_>>>()?;
        Ok((read, sel))
    })?;
    ensure!(
        sensor_frames == frames.len() as u64,
        "{name}: the sensor read {sensor_frames} frames, its reader here {}",
        frames.len()
    );
    ensure!(
        read.1.is_none(),
        "{name}: tcpdump did not read it all: {:?}",
        read.1
    );
    let mut r = RawResult {
        tally: vec![RawTally::default(); RAW_EXPRS.len()],
        ..RawResult::default()
    };
    let none = Vec::new();
    let all = probe.raw.get(&0).unwrap_or(&none);
    r.packets = all.len();
    r.without_pos = probe
        .raw
        .values()
        .flatten()
        .filter(|p| p.pkt_pos.is_none())
        .count();
    let all_pos = raw_positions(&name, &frames, &index, all, &mut r.mismatches);
    r.reassembled = all_pos.iter().filter(|p| p.is_none()).count();
    let offered: Vec<usize> = all_pos.iter().flatten().copied().collect();
    for (i, (expr, sel)) in RAW_EXPRS.iter().zip(&selections).enumerate() {
        let k = i + 1;
        let refused = probe.refused.get(&("raw".to_string(), k));
        let pkts = probe.raw.get(&k).unwrap_or(&none);
        let t = &mut r.tally[i];
        let positions = match (sel, refused) {
            (Tcpdump::Refused(_), Some(ours)) if ours.starts_with("EINVAL") => {
                t.refused += 1;
                continue;
            }
            // As for SYN filters: on a pcapng file the library may take it, the socket then
            // gets nothing.
            (Tcpdump::Refused(_), None) if pkts.is_empty() && is_pcapng(pcap)? => {
                t.refused += 1;
                continue;
            }
            (Tcpdump::Selected { positions, .. }, None) => positions,
            (sel, ours) => {
                r.mismatches.push(format!(
                    "{name}: raw {expr:?}: tcpdump {sel:?}, the library {ours:?}"
                ));
                continue;
            }
        };
        let selected: BTreeSet<usize> = positions.iter().copied().collect();
        let want: Vec<usize> = offered
            .iter()
            .copied()
            .filter(|p| selected.contains(p))
            .collect();
        let mut got: Vec<usize> = raw_positions(&name, &frames, &index, pkts, &mut r.mismatches)
            .into_iter()
            .flatten()
            .collect();
        got.sort_unstable();
        t.compared += offered.len();
        t.selected += want.len();
        if got != want {
            let show = |v: &[usize], w: &[usize]| {
                v.iter()
                    .filter(|p| !w.contains(p))
                    .map(|p| (p + 1).to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            r.mismatches.push(format!(
                "{name}: raw {expr:?}: frames tcpdump selects that the socket did not get: \
                 [{}]; frames the socket got that tcpdump does not select: [{}]",
                show(&want, &got),
                show(&got, &want)
            ));
        }
    }
    Ok(r)
}

/// Raw sockets on captures of every link type, with VLAN, IPv6 and fragments: each gets
/// exactly the packets (of those the unfiltered raw socket gets) that tcpdump selects.
#[test]
fn raw_filters_take_the_packets_tcpdump_selects() -> Result<()> {
    let start = Instant::now();
    let pcaps = corpus_dir()?.join("pcaps");
    let results = parallel_map(&RAW_CAPTURES, default_workers(), |c| {
        raw_capture(&pcaps.join(c))
    });
    let mut tally = vec![RawTally::default(); RAW_EXPRS.len()];
    let (mut packets, mut reassembled, mut without_pos) = (0, 0, 0);
    let (mut failed, mut mismatches) = (Vec::new(), Vec::new());
    for (c, r) in RAW_CAPTURES.iter().zip(results) {
        match r {
            Ok(r) => {
                packets += r.packets;
                reassembled += r.reassembled;
                without_pos += r.without_pos;
                for (t, x) in tally.iter_mut().zip(&r.tally) {
                    t.compared += x.compared;
                    t.selected += x.selected;
                    t.refused += x.refused;
                }
                mismatches.extend(r.mismatches);
            }
            Err(e) => failed.push(format!("--- {c}: {e:#}")),
        }
    }
    println!(
        "{} captures, {packets} packets on the unfiltered raw socket ({reassembled} reassembled \
         datagrams left out); {} expressions:",
        RAW_CAPTURES.len(),
        RAW_EXPRS.len()
    );
    for (e, t) in RAW_EXPRS.iter().zip(&tally) {
        println!(
            "  {:>6} compared {:>6} selected {:>3} captures refused  {e}",
            t.compared, t.selected, t.refused
        );
    }
    println!(
        "{} packet/expression pairs compared, {} mismatches, {} captures failed; {without_pos} \
         raw events without pkt_pos; in {:.1} s",
        tally.iter().map(|t| t.compared).sum::<usize>(),
        mismatches.len(),
        failed.len(),
        start.elapsed().as_secs_f64()
    );
    ensure!(failed.is_empty(), "{}", failed.join("\n"));
    ensure!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    for (e, t) in RAW_EXPRS.iter().zip(&tally) {
        ensure!(
            t.selected > 0 && t.selected < t.compared,
            "raw {e:?} selected {} of {} packets: it tells none apart",
            t.selected,
            t.compared
        );
    }
    Ok(())
}

/// A raw socket's packet is raised by a frame of the input, so its event says which, as a
/// stream socket's events do.
#[test]
fn raw_socket_events_carry_their_frames_position() -> Result<()> {
    let pcap = corpus_dir()?.join("pcaps/dpkt__examples__data__http.pcap");
    let frames = read_frames(&pcap)?;
    let (probe, _, ()) = probe_capture(&pcap, &[], &["tcp"], || Ok(()))?;
    let pkts: Vec<&RawPkt> = probe.raw.values().flatten().collect();
    ensure!(!pkts.is_empty(), "the raw sockets got nothing");
    for p in pkts {
        let pos = p
            .pkt_pos
            .with_context(|| format!("a raw event without pkt_pos: {:?}", p.key))?;
        let f = frames.get(pos as usize).context("pkt_pos past the end")?;
        ensure!(frame_key(f) == p.key, "pkt_pos {pos} is another frame");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Refused expressions

/// `filter-probe` with one expression, without `--keep-going`, on a sensor replaying `pcap`:
/// its exit status and stderr.
fn probe_refusal(pcap: &Path, flag: &str, expr: &str) -> Result<(Option<i32>, String)> {
    let work = ScratchDir::new("filters-refused")?;
    let w = work.path();
    let control = w.join("c.sock");
    // Held until the probe is done; dropping it kills it.
    let _sensor = replaying(pcap, &control, 1, w)?;
    let mut probe = Proc::spawn(
        "filter-probe",
        cmd(
            &bin("filter-probe")?,
            &[&"--control", &control, &flag, &expr],
        ),
        w,
    )?;
    let st = probe.wait(TIMEOUT)?;
    // The sensor still waits for an analyzer that is ready; dropping it kills it.
    Ok((st.code(), probe.stderr()))
}

/// `tcp prot 80` is no expression: the probe exits 1 with the library's EINVAL and libpcap's
/// "syntax error", for a stream socket's SYN filter as for a raw socket's filter; `vlan` on a
/// capture of raw IP is refused likewise (tcpdump refuses it there too).
#[test]
fn a_bad_expression_makes_filter_probe_exit_1_with_einval() -> Result<()> {
    let pcaps = corpus_dir()?.join("pcaps");
    let ether = pcaps.join("dpkt__examples__data__http.pcap");
    for flag in ["--syn", "--raw"] {
        let (code, err) = probe_refusal(&ether, flag, "tcp prot 80")?;
        ensure!(code == Some(1), "{flag}: exit {code:?}; stderr:\n{err}");
        ensure!(
            err.contains("EINVAL") && err.contains("syntax error") && !err.contains("panicked"),
            "{flag}: no EINVAL and syntax error in:\n{err}"
        );
    }
    let raw_ip = pcaps.join("tcpflow__test4.pcap");
    let (code, err) = probe_refusal(&raw_ip, "--syn", "vlan and tcp")?;
    ensure!(
        code == Some(1) && err.contains("EINVAL") && err.to_lowercase().contains("vlan"),
        "vlan on raw IP: exit {code:?}; stderr:\n{err}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// mos-dump --filter

/// `mos-dump --filter EXPR` beside an unfiltered `mos-dump` on one replay: the filtered one
/// writes exactly the unfiltered one's connections whose first frame tcpdump selects with
/// EXPR, with the same bytes.
#[test]
fn mos_dump_filter_writes_the_connections_whose_first_frame_tcpdump_selects() -> Result<()> {
    use mos_tests::flows::{parse_flows, FlowRecord};
    let cases = [
        ("ndpi__1kxun.pcapng", "tcp port 80"),
        ("ndpi__1kxun.pcapng", "not tcp port 80"),
        (
            "ndpi__bittorrent.pcap",
            "host 82.58.216.115 or tcp[13] & 2 != 0",
        ),
        ("ndpi__WebattackRCE.pcap", "src portrange 40000-50000"),
    ];
    let (mut compared, mut taken) = (0usize, 0usize);
    for (name, expr) in cases {
        let pcap = corpus_dir()?.join("pcaps").join(name);
        let frames = read_frames(&pcap)?;
        let Tcpdump::Selected { positions, .. } = tcpdump(&pcap, Some(expr), &frames)? else {
            bail!("tcpdump refused {expr:?} on {name}");
        };
        let selected: BTreeSet<usize> = positions.into_iter().collect();
        let work = ScratchDir::new("filters-dump")?;
        let w = work.path();
        let control = w.join("c.sock");
        let mut sensor = replaying(&pcap, &control, 2, w)?;
        let (all, some) = (w.join("all"), w.join("some"));
        let mut d1 = Proc::spawn(
            "dump-all",
            cmd(&bin("mos-dump")?, &[&"--control", &control, &"--out", &all]),
            w,
        )?;
        let mut d2 = Proc::spawn(
            "dump-some",
            cmd(
                &bin("mos-dump")?,
                &[&"--control", &control, &"--out", &some, &"--filter", &expr],
            ),
            w,
        )?;
        d1.expect_code(0, TIMEOUT)?;
        d2.expect_code(0, TIMEOUT)?;
        sensor.expect_code(0, TIMEOUT)?;
        let read = |d: &Path| -> Result<Vec<FlowRecord>> {
            parse_flows(&std::fs::read_to_string(d.join("flows.jsonl"))?)
        };
        let (all, some) = (read(&all)?, read(&some)?);
        // A connection's first frame: the first TCP frame between its endpoints at its start.
        let first_frame = |r: &FlowRecord| -> Option<usize> {
            let (c, s): (SocketAddr, SocketAddr) = (r.client.parse().ok()?, r.server.parse().ok()?);
            let start_us = (r.start_ts * 1e6).round() as u64;
            frames.iter().position(|f| {
                f.ts_ns / 1000 == start_us
                    && matches!(f.kind, FrameKind::Tcp(a, b) if (a, b) == (c, s) || (a, b) == (s, c))
            })
        };
        let key = |r: &FlowRecord| {
            (
                r.client.clone(),
                r.server.clone(),
                (r.start_ts * 1e6).round() as u64,
                r.c2s_sha256.clone(),
                r.s2c_sha256.clone(),
            )
        };
        let mut want = BTreeSet::new();
        for r in &all {
            let f = first_frame(r).with_context(|| {
                format!("{name}: no first frame for {} -> {}", r.client, r.server)
            })?;
            if selected.contains(&f) {
                want.insert(key(r));
            }
        }
        let got: BTreeSet<_> = some.iter().map(key).collect();
        ensure!(
            got == want,
            "{name} --filter {expr:?}: mos-dump wrote {} connections, tcpdump's first frames select {}:\nonly written: {:?}\nonly selected: {:?}",
            got.len(),
            want.len(),
            got.difference(&want).collect::<Vec<_>>(),
            want.difference(&got).collect::<Vec<_>>()
        );
        ensure!(
            !want.is_empty() && want.len() < all.len(),
            "{name} --filter {expr:?} takes {} of {} connections: pick a case that tells",
            want.len(),
            all.len()
        );
        compared += all.len();
        taken += want.len();
    }
    eprintln!("mos-dump --filter: {taken} of {compared} connections taken, as tcpdump selects");
    Ok(())
}
