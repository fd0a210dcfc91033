//! The programming model against the real sensor: `model-probe` analyzers attach to
//! `mos-sensor` replaying synthetic and corpus captures, and what they saw is checked against
//! the captures themselves (the generator's payloads, the frames' timestamps) and the sensor's
//! own `--dump` of the same run.
//!
//! Needs the sensor built in the same profile (`cargo build --release --bins`, or
//! `MOS_SENSOR_BIN`) and the corpus (`MOS_CORPUS_DIR`). Every child is killed if its test fails,
//! and every wait has a deadline.

use anyhow::{bail, ensure, Context, Result};
use mos_sensor::capture::{CaptureBackend, FileCapture};
use mos_tests::flows::{parse_flows, FlowRecord};
use mos_tests::locate::{corpus_dir, sensor_bin};
use mos_tests::pcap::{flags, tcp_frame, PcapWriter, Segment};
use mos_tests::procs::{assert_no_panic, cmd, sensor_stat, tail, wait_for_socket, Proc};
use mos_tests::runner::ScratchDir;
use mos_tests::synth::XorShift;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest any process of these tests may take.
const TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Processes and their output

fn start_sensor(work: &Path, pcap: &Path, control: &Path, extra: &[&str]) -> Result<Proc> {
    let mut c = cmd(&sensor_bin()?, &[&"--pcap", &pcap, &"--control", &control]);
    c.args(extra);
    let mut s = Proc::spawn("sensor", c, work)?;
    wait_for_socket(&mut s, control, TIMEOUT)?;
    Ok(s)
}

fn probe(work: &Path, name: &str, control: &Path, args: &[&dyn AsRef<OsStr>]) -> Result<Proc> {
    let mut c = cmd(
        Path::new(env!("CARGO_BIN_EXE_model-probe")),
        &[&"--control", &control],
    );
    c.args(args.iter().map(|a| a.as_ref()));
    Proc::spawn(name, c, work)
}

/// Waits for every process by one deadline; fails with all their stderr unless each exited 0.
fn wait_all(procs: &mut [&mut Proc]) -> Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    let waited: Vec<_> = procs.iter_mut().map(|p| p.wait_until(deadline)).collect();
    let mut report = String::new();
    for (p, w) in procs.iter().zip(&waited) {
        match w {
            Ok(st) if st.success() => {}
            Ok(st) => {
                report += &format!(
                    "{} exited with {st}; stderr:\n{}\n",
                    p.name(),
                    tail(&p.stderr())
                )
            }
            Err(e) => report += &format!("{e:#}\n"),
        }
    }
    ensure!(report.is_empty(), "{report}");
    for p in procs.iter() {
        assert_no_panic(p)?;
    }
    Ok(())
}

/// Analyzers the sensor detached for stalling, from its publication summary.
fn detached_for_stalling(sensor_err: &str) -> Result<u64> {
    let line = sensor_err
        .lines()
        .find(|l| l.starts_with("mos-sensor: published "))
        .with_context(|| format!("no publication summary in:\n{sensor_err}"))?;
    let before = line
        .split(" analyzers detached for stalling")
        .next()
        .filter(|b| b.len() < line.len())
        .with_context(|| format!("cannot read {line:?}"))?;
    let n = before.rsplit(' ').next().unwrap_or_default();
    n.parse().with_context(|| format!("cannot read {line:?}"))
}

/// The `key=value` fields of a line.
fn kv(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .skip(1)
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The fields of every stdout line starting with `tag `.
fn tagged(text: &str, tag: &str) -> Vec<BTreeMap<String, String>> {
    text.lines()
        .filter(|l| l.split_whitespace().next() == Some(tag))
        .map(kv)
        .collect()
}

/// The fields of the one stdout line starting with `tag `.
fn one(text: &str, tag: &str) -> Result<BTreeMap<String, String>> {
    match tagged(text, tag).as_slice() {
        [f] => Ok(f.clone()),
        other => bail!("{} {tag:?} lines in:\n{text}", other.len()),
    }
}

fn num(f: &BTreeMap<String, String>, key: &str) -> Result<u64> {
    f.get(key)
        .with_context(|| format!("no {key} in {f:?}"))?
        .parse()
        .with_context(|| format!("{key} in {f:?}"))
}

fn text<'a>(f: &'a BTreeMap<String, String>, key: &str) -> Result<&'a str> {
    f.get(key)
        .map(String::as_str)
        .with_context(|| format!("no {key} in {f:?}"))
}

/// One direction of a connection: length and SHA-256, zeros counted for lost bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Dir {
    bytes: u64,
    sha256: String,
}

impl Dir {
    fn of(data: &[u8]) -> Dir {
        Dir {
            bytes: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
        }
    }
}

/// A connection as an analyzer or the dump saw it: client, server, and its two directions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Conn {
    client: String,
    server: String,
    c2s: Dir,
    s2c: Dir,
}

/// The connections a probe read completely (`flow` lines: both CONN_ENDs seen), by serial,
/// with what it counted as lost.
fn probe_flows(stdout: &str) -> Result<BTreeMap<u64, (Conn, u64)>> {
    let mut out = BTreeMap::new();
    for f in tagged(stdout, "flow") {
        ensure!(num(&f, "ends")? == 2, "a flow line of an open flow: {f:?}");
        let dir = |d: &str| -> Result<Dir> {
            Ok(Dir {
                bytes: num(&f, &format!("{d}_bytes"))?,
                sha256: text(&f, &format!("{d}_sha256"))?.to_string(),
            })
        };
        let conn = Conn {
            client: text(&f, "client")?.to_string(),
            server: text(&f, "server")?.to_string(),
            c2s: dir("c2s")?,
            s2c: dir("s2c")?,
        };
        let lost = num(&f, "c2s_lost")? + num(&f, "s2c_lost")?;
        ensure!(
            out.insert(num(&f, "serial")?, (conn, lost)).is_none(),
            "serial given twice: {f:?}"
        );
    }
    Ok(out)
}

/// The serial a dump record's stream files are named with (`None` when it has none).
fn dump_serial(r: &FlowRecord) -> Result<Option<u64>> {
    let Some(name) = r.c2s_file.as_ref().or(r.s2c_file.as_ref()) else {
        return Ok(None);
    };
    let digits = name.split('-').next().unwrap_or_default();
    Ok(Some(digits.parse().with_context(|| {
        format!("the stream file {name} starts with no serial")
    })?))
}

/// The sensor's `--dump`: its records, and the connections that have stream files, by serial.
struct Dump {
    dir: PathBuf,
    records: Vec<FlowRecord>,
    by_serial: BTreeMap<u64, Conn>,
}

impl Dump {
    fn read(dir: &Path) -> Result<Dump> {
        let path = dir.join("flows.jsonl");
        let records = parse_flows(
            &std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?,
        )?;
        let mut by_serial = BTreeMap::new();
        for r in &records {
            if let Some(serial) = dump_serial(r)? {
                let conn = Conn {
                    client: r.client.clone(),
                    server: r.server.clone(),
                    c2s: Dir {
                        bytes: r.c2s_bytes,
                        sha256: r.c2s_sha256.to_ascii_lowercase(),
                    },
                    s2c: Dir {
                        bytes: r.s2c_bytes,
                        sha256: r.s2c_sha256.to_ascii_lowercase(),
                    },
                };
                ensure!(
                    by_serial.insert(serial, conn).is_none(),
                    "serial {serial} twice"
                );
            }
        }
        Ok(Dump {
            dir: dir.to_path_buf(),
            records,
            by_serial,
        })
    }

    /// The first `n` bytes of a record's stream file (fewer if it is shorter; none without).
    fn start_of(&self, file: &Option<String>, n: usize) -> Result<Vec<u8>> {
        let Some(name) = file else {
            return Ok(Vec::new());
        };
        let mut data = std::fs::read(self.dir.join(name))?;
        data.truncate(n);
        Ok(data)
    }

    /// Serials of the records with stream files whose `c2s` (or `s2c`) stream starts with
    /// `prefix`, and that `keep` takes.
    fn starting_with(
        &self,
        c2s: bool,
        prefix: &[u8],
        keep: impl Fn(&FlowRecord) -> bool,
    ) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for r in &self.records {
            let file = if c2s { &r.c2s_file } else { &r.s2c_file };
            if keep(r) && self.start_of(file, prefix.len())? == prefix {
                out.push(dump_serial(r)?.context("a stream without a serial")?);
            }
        }
        out.sort_unstable();
        Ok(out)
    }
}

/// Fails unless the probe's complete flows are exactly the dump's, stream for stream; the
/// dump's records without stream files must match flows the probe read nothing of.
fn same_as_dump(stdout: &str, dump: &Dump, what: &str) -> Result<usize> {
    let got = probe_flows(stdout)?;
    let empty = Dir::of(b"");
    let (with_data, without): (BTreeMap<_, _>, BTreeMap<_, _>) = got
        .into_iter()
        .partition(|(_, (c, _))| c.c2s != empty || c.s2c != empty);
    for (serial, want) in &dump.by_serial {
        let Some((have, _)) = with_data.get(serial) else {
            bail!("{what}: the analyzer read nothing of serial {serial} ({want:?})");
        };
        ensure!(
            have == want,
            "{what}: serial {serial}: read {have:?}, the dump has {want:?}"
        );
    }
    let extra: Vec<_> = with_data
        .keys()
        .filter(|s| !dump.by_serial.contains_key(s))
        .collect();
    ensure!(
        extra.is_empty(),
        "{what}: serials {extra:?} are not in the dump"
    );
    let dumped_empty = dump.records.len() - dump.by_serial.len();
    ensure!(
        without.len() == dumped_empty,
        "{what}: {} flows read empty, the dump has {dumped_empty} without stream files",
        without.len()
    );
    Ok(with_data.len())
}

/// Capture times (ns) of a capture's frames, by position, read with the sensor's reader.
fn frame_times(pcap: &Path) -> Result<Vec<u64>> {
    let mut cap = FileCapture::open(pcap).with_context(|| format!("opening {}", pcap.display()))?;
    let mut ts = Vec::new();
    while let Some(p) = cap.next_packet()? {
        ts.push(p.ts_ns);
    }
    Ok(ts)
}

fn corpus_capture(name: &str) -> Result<PathBuf> {
    let p = corpus_dir()?.join("pcaps").join(name);
    ensure!(p.is_file(), "{} is not in the corpus", p.display());
    Ok(p)
}

/// Replays `pcap` through a sensor that also dumps it, with one `model-probe ARGS...`
/// attached; returns the probe's stdout, the dump and the sensor's stderr.
fn probe_with_dump(
    work: &Path,
    pcap: &Path,
    sensor_extra: &[&str],
    args: &[&dyn AsRef<OsStr>],
) -> Result<(String, Dump, String)> {
    let (control, dump) = (work.join("c.sock"), work.join("dump"));
    let mut extra = vec![
        "--wait-analyzers",
        "1",
        "--dump",
        dump.to_str().context("path")?,
    ];
    extra.extend_from_slice(sensor_extra);
    let mut sensor = start_sensor(work, pcap, &control, &extra)?;
    let mut p = probe(work, "probe", &control, args)?;
    wait_all(&mut [&mut sensor, &mut p])?;
    Ok((p.stdout(), Dump::read(&dump)?, sensor.stderr()))
}

// ---------------------------------------------------------------------------------------------
// A synthetic capture of interleaved connections

/// One connection of [`interleaved`]: its endpoints and what each side sent.
#[derive(Debug)]
struct Planned {
    client: SocketAddr,
    server: SocketAddr,
    c2s: Vec<u8>,
    s2c: Vec<u8>,
}

impl Planned {
    fn conn(&self) -> Conn {
        Conn {
            client: self.client.to_string(),
            server: self.server.to_string(),
            c2s: Dir::of(&self.c2s),
            s2c: Dir::of(&self.s2c),
        }
    }
}

/// One segment to write.
struct Pkt {
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: Vec<u8>,
}

/// One connection's frames in order: handshake, the client's bytes, the server's (each
/// acknowledged every two segments), then both FINs.
fn conn_frames(p: &Planned, rng: &mut XorShift) -> VecDeque<Pkt> {
    use flags::{ACK, FIN, PSH, SYN};
    let (c, s) = (p.client, p.server);
    let (ci, si) = (rng.next_u64() as u32, rng.next_u64() as u32);
    let mut q = VecDeque::new();
    let pkt = |src, dst, seq, ack, flags, payload: &[u8]| Pkt {
        src,
        dst,
        seq,
        ack,
        flags,
        payload: payload.to_vec(),
    };
    q.push_back(pkt(c, s, ci, 0, SYN, &[]));
    q.push_back(pkt(s, c, si, ci.wrapping_add(1), SYN | ACK, &[]));
    let (mut cseq, mut sseq) = (ci.wrapping_add(1), si.wrapping_add(1));
    q.push_back(pkt(c, s, cseq, sseq, ACK, &[]));
    for (from_client, data) in [(true, &p.c2s), (false, &p.s2c)] {
        let (src, dst) = if from_client { (c, s) } else { (s, c) };
        for (i, piece) in data.chunks(1448).enumerate() {
            let (seq, ack) = if from_client {
                (cseq, sseq)
            } else {
                (sseq, cseq)
            };
            q.push_back(pkt(src, dst, seq, ack, ACK | PSH, piece));
            let next = seq.wrapping_add(piece.len() as u32);
            if from_client {
                cseq = next;
            } else {
                sseq = next;
            }
            if i % 2 == 1 || (i + 1) * 1448 >= data.len() {
                q.push_back(pkt(dst, src, ack, next, ACK, &[]));
            }
        }
    }
    q.push_back(pkt(c, s, cseq, sseq, FIN | ACK, &[]));
    q.push_back(pkt(s, c, sseq, cseq.wrapping_add(1), FIN | ACK, &[]));
    q.push_back(pkt(
        c,
        s,
        cseq.wrapping_add(1),
        sseq.wrapping_add(1),
        ACK,
        &[],
    ));
    q
}

/// Writes connections to servers on `conns`' ports (each carrying its byte count of
/// pseudo-random payload each way) to `path`, their frames interleaved so that each
/// connection's progress through its data keeps pace with the others': every connection's data
/// runs from the start of the capture to its end. Frames are `gap_us` apart; the connections'
/// closing frames (FIN, FIN, ACK) all come at the end, after `fin_pause_us` more, so that
/// their streams stay in place that long after their last bytes even when nobody waits.
fn interleaved(
    path: &Path,
    conns: &[(u16, usize)],
    gap_us: u64,
    fin_pause_us: u64,
) -> Result<Vec<Planned>> {
    let mut rng = XorShift::new(15);
    let planned: Vec<Planned> = conns
        .iter()
        .enumerate()
        .map(|(i, &(port, bytes))| {
            let mut c2s = vec![0u8; bytes];
            let mut s2c = vec![0u8; bytes];
            rng.fill(&mut c2s);
            rng.fill(&mut s2c);
            Planned {
                client: SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(10, 1, 0, i as u8 + 1)),
                    30_000 + i as u16,
                ),
                server: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 2, 0, i as u8 + 1)), port),
                c2s,
                s2c,
            }
        })
        .collect();
    let mut closing = Vec::new();
    let mut queues: Vec<(usize, VecDeque<Pkt>)> = planned
        .iter()
        .map(|p| {
            let mut q = conn_frames(p, &mut rng);
            closing.push(q.split_off(q.len() - 3));
            (q.len(), q)
        })
        .collect();
    let mut out = PcapWriter::new(std::io::BufWriter::new(std::fs::File::create(path)?))?;
    let mut ts_us = 1_700_000_000_000_000u64;
    let mut write = |ts_us: u64, p: &Pkt| {
        out.packet(
            ts_us,
            &tcp_frame(&Segment {
                src: p.src,
                dst: p.dst,
                seq: p.seq,
                ack: p.ack,
                flags: p.flags,
                window: 65_535,
                mss: Some(1460),
                payload: &p.payload,
            }),
        )
    };
    // The connection furthest behind (as a share of its frames) goes next.
    loop {
        let next = queues
            .iter()
            .enumerate()
            .filter(|(_, (_, q))| !q.is_empty())
            .min_by_key(|(i, (total, q))| ((total - q.len()) * 1_000_000 / total, *i))
            .map(|(i, _)| i);
        let Some(i) = next else { break };
        let p = queues[i].1.pop_front().context("a queue emptied")?;
        ts_us += gap_us;
        write(ts_us, &p)?;
    }
    ts_us += fin_pause_us;
    for p in closing.iter().flatten() {
        ts_us += gap_us;
        write(ts_us, p)?;
    }
    out.finish()?;
    Ok(planned)
}

/// Fails unless the probe read exactly the planned connections, completely.
fn read_exactly(stdout: &str, planned: &[&Planned], who: &str) -> Result<()> {
    let got: BTreeSet<Conn> = probe_flows(stdout)?
        .into_values()
        .map(|(conn, lost)| {
            ensure!(lost == 0, "{who} lost {lost} bytes of {conn:?}");
            Ok(conn)
        })
        .collect::<Result<_>>()?;
    let want: BTreeSet<Conn> = planned.iter().map(|p| p.conn()).collect();
    ensure!(
        got == want,
        "{who} read:\n{got:#?}\nwhere the capture holds:\n{want:#?}"
    );
    ensure!(
        tagged(stdout, "flow-open").is_empty(),
        "{who} has flows that did not end:\n{stdout}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. Filters isolate analyzers in lossless mode

/// Lossless replay, small chunks and a small per-side limit, so that the port-443
/// connections (160 KiB each way, ten times the limit) have their oldest bytes reclaimed while
/// they flow, which waits for the analyzers that get them. Analyzer A (`tcp port 80`) sleeps
/// 3 s in its first callback; analyzer B (`tcp port 443`) must read all of its connections to
/// their end meanwhile, byte for byte. A's own connections (10 KiB each way, within the limit)
/// hold nothing back, A is not detached, and once awake it reads them whole.
#[test]
fn a_sleeping_analyzer_holds_back_no_flow_its_filter_did_not_take() -> Result<()> {
    const SLEEP_MS: u128 = 3000;
    let work = ScratchDir::new("prog-isolation")?;
    let w = work.path();
    let pcap = w.join("mixed.pcap");
    let (big, small) = (160 * 1024, 10 * 1024);
    let planned = interleaved(
        &pcap,
        &[
            (443, big),
            (80, small),
            (443, big),
            (80, small),
            (443, big),
            (80, small),
        ],
        20,
        0,
    )?;
    let control = w.join("c.sock");
    let mut sensor = start_sensor(
        w,
        &pcap,
        &control,
        &[
            "--wait-analyzers",
            "2",
            "--chunk-kib",
            "4",
            "--stream-max-kib",
            "16",
            "--stream-chunks",
            "512",
            "--stall-timeout",
            "30",
        ],
    )?;
    let sleep = SLEEP_MS.to_string();
    let mut a = probe(
        w,
        "analyzer-a",
        &control,
        &[
            &"streams",
            &"--filter",
            &"tcp port 80",
            &"--sleep-first-ms",
            &sleep,
        ],
    )?;
    let mut b = probe(
        w,
        "analyzer-b",
        &control,
        &[&"streams", &"--filter", &"tcp port 443"],
    )?;
    let started = Instant::now();
    wait_all(&mut [&mut sensor, &mut a, &mut b])?;
    let took = started.elapsed();
    let (a_out, b_out) = (a.stdout(), b.stdout());
    let of_port = |port: u16| -> Vec<&Planned> {
        planned.iter().filter(|p| p.server.port() == port).collect()
    };
    read_exactly(&b_out, &of_port(443), "B")?;
    read_exactly(&a_out, &of_port(80), "A")?;
    let (sa, sb) = (one(&a_out, "summary")?, one(&b_out, "summary")?);
    let us = |f: &BTreeMap<String, String>, k: &str| num(f, k).map(u128::from);
    ensure!(
        us(&sa, "woke_us")? - us(&sa, "first_cb_us")? >= SLEEP_MS * 1000,
        "A did not sleep: {sa:?}"
    );
    // B saw its last connection end while A was still asleep in its first callback.
    let (b_end, a_woke) = (us(&sb, "last_end_us")?, us(&sa, "woke_us")?);
    ensure!(
        b_end < a_woke,
        "B's last CONN_END came {} ms after A woke: B waited for A",
        (b_end - a_woke) / 1000
    );
    for f in [&sa, &sb] {
        ensure!(
            num(f, "new_data")? > 0 && num(f, "off_bound")? == 0,
            "{f:?}"
        );
    }
    let serr = sensor.stderr();
    ensure!(
        detached_for_stalling(&serr)? == 0,
        "an analyzer was detached:\n{serr}"
    );
    ensure!(
        sensor_stat(&serr, "events_dropped")? == 0,
        "lossless mode dropped events:\n{serr}"
    );
    println!(
        "isolation: B ended its 3 flows {} ms before A woke; run {took:?}; sensor waits={}",
        (a_woke - b_end) / 1000,
        sensor_stat(&serr, "waits")?
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Live mode: a slow analyzer loses only its own events

/// Lossy replay, paced (about 0.8 s), with event rings of 128 records: A (`tcp port 80`, three
/// connections of 60 KiB each way, several hundred events) sleeps 1.5 s in its first callback
/// and loses events for its full ring; B (`tcp port 443`, two connections of 10 KiB each way,
/// fewer events than its ring holds) loses none and reads its connections whole (their closing
/// frames come 0.3 s after their data, so a B held up for less than that loses no byte). The
/// sensor's dropped count is A's.
#[test]
fn in_live_mode_a_sleeping_analyzer_drops_only_its_own_events() -> Result<()> {
    let work = ScratchDir::new("prog-lossy")?;
    let w = work.path();
    let pcap = w.join("mixed.pcap");
    let planned = interleaved(
        &pcap,
        &[
            (80, 60 * 1024),
            (443, 10 * 1024),
            (80, 60 * 1024),
            (443, 10 * 1024),
            (80, 60 * 1024),
        ],
        1000,
        300_000,
    )?;
    let control = w.join("c.sock");
    let mut sensor = start_sensor(
        w,
        &pcap,
        &control,
        &[
            "--wait-analyzers",
            "2",
            "--lossy",
            "--event-ring",
            "128",
            "--speed",
            "1",
        ],
    )?;
    let mut a = probe(
        w,
        "analyzer-a",
        &control,
        &[
            &"streams",
            &"--filter",
            &"tcp port 80",
            &"--sleep-first-ms",
            &"1500",
            &"--tolerate-loss",
        ],
    )?;
    let mut b = probe(
        w,
        "analyzer-b",
        &control,
        &[&"streams", &"--filter", &"tcp port 443"],
    )?;
    wait_all(&mut [&mut sensor, &mut a, &mut b])?;
    let (a_out, b_out, serr) = (a.stdout(), b.stdout(), sensor.stderr());
    let (ca, cb) = (one(&a_out, "counters")?, one(&b_out, "counters")?);
    let https: Vec<&Planned> = planned.iter().filter(|p| p.server.port() == 443).collect();
    read_exactly(&b_out, &https, "B")?;
    ensure!(num(&cb, "dropped")? == 0, "B lost events: {cb:?}");
    ensure!(
        num(&cb, "events")? < 128,
        "B's events overflow its ring: {cb:?}"
    );
    let a_dropped = num(&ca, "dropped")?;
    ensure!(a_dropped > 0, "A, asleep, lost nothing: {ca:?}");
    ensure!(
        num(&ca, "events")? <= 128,
        "A took more than a ring's worth while asleep: {ca:?}"
    );
    // Every event the sensor dropped was one of A's.
    ensure!(
        sensor_stat(&serr, "events_dropped")? == a_dropped,
        "the sensor dropped {} events, A lost {a_dropped}:\n{serr}",
        sensor_stat(&serr, "events_dropped")?
    );
    // What A did get is its own: no port-443 connection among the flows it could name.
    for f in tagged(&a_out, "flow")
        .iter()
        .chain(&tagged(&a_out, "flow-open"))
    {
        ensure!(
            !text(f, "server")?.ends_with(":443"),
            "A got a connection of B's: {f:?}"
        );
    }
    println!(
        "lossy: A dropped {a_dropped} events, B 0 ({} events)",
        num(&cb, "events")?
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Event-bounded peek on the corpus

/// Captures with data, a few with bytes the capture never held, some midstream, IPv6 and
/// pcapng among them.
const BOUNDED_PEEK_CAPTURES: &[&str] = &[
    "dpkt__examples__data__http.pcap",
    "dpkt__examples__data__nb6-http.pcap",
    "ndpi__http_ipv6.pcap",
    "ndpi__ajp.pcap",
    "ndpi__mongodb.pcap",
    "ndpi__aimini-http.pcapng",
    "npm-pcap-parser__smtp.pcap",
    "scapy__http_chunk.pcap",
    "zeek__http__bro.org.pcap",
    "dnscap__src__test__dnso1tcp-bighole.pcap",
    "tcpflow__test4.pcap",
];

/// In every CONN_NEW_DATA callback the probe peeks until `NoData`: its reads end exactly at
/// the event's tail (the probe fails otherwise), and what it read, concatenated per
/// direction, is the whole stream the sensor dumped (lost bytes as zeros). Every event's
/// `ts_ns` is the capture time of the frame at its `pkt_pos`.
#[test]
fn peek_in_each_new_data_callback_reads_to_the_events_tail_and_adds_up_to_the_stream() -> Result<()>
{
    let mut report = Vec::new();
    for name in BOUNDED_PEEK_CAPTURES {
        let pcap = corpus_capture(name)?;
        let work = ScratchDir::new(&format!("prog-peek-{name}"))?;
        let w = work.path();
        let events = w.join("events.txt");
        let (out, dump, _) = probe_with_dump(w, &pcap, &[], &[&"streams", &"--events", &events])
            .with_context(|| name.to_string())?;
        let flows = same_as_dump(&out, &dump, name)?;
        let s = one(&out, "summary")?;
        ensure!(
            num(&s, "off_bound")? == 0 && num(&s, "new_data")? > 0,
            "{name}: {s:?}"
        );
        let times = frame_times(&pcap)?;
        let mut checked = 0;
        for line in std::fs::read_to_string(&events)?.lines() {
            let (pos, ts) = line.split_once(' ').context("an events line")?;
            let (pos, ts): (usize, u64) = (pos.parse()?, ts.parse()?);
            let frame = times
                .get(pos)
                .with_context(|| format!("{name}: pkt_pos {pos} of {} frames", times.len()))?;
            ensure!(
                *frame == ts,
                "{name}: the event of frame {pos} says {ts} ns, the frame {frame} ns"
            );
            checked += 1;
        }
        ensure!(checked > 0, "{name}: no event named its frame");
        let lost: u64 = probe_flows(&out)?.values().map(|(_, l)| l).sum();
        report.push(format!(
            "{name}: {flows} flows with data, {} callbacks, {checked} events timed, {lost} bytes lost",
            num(&s, "new_data")?
        ));
    }
    println!("{}", report.join("\n"));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. The rest of the model on corpus captures

/// A chain of two user-defined events on CONN_NEW_DATA: "the client's stream starts with
/// `GET `", then "... and the server's port is 80". Each fires once per connection it holds
/// for, exactly for the connections whose dumped client stream starts so.
#[test]
fn a_chain_of_user_defined_events_picks_the_connections_sending_get_first() -> Result<()> {
    let name = "ndpi__1kxun.pcapng";
    let work = ScratchDir::new("prog-ude")?;
    let (out, dump, _) = probe_with_dump(work.path(), &corpus_capture(name)?, &[], &[&"ude"])?;
    let u = one(&out, "ude")?;
    let get = dump.starting_with(true, b"GET ", |_| true)?;
    let get80 = dump.starting_with(true, b"GET ", |r| r.server.ends_with(":80"))?;
    let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    ensure!(
        text(&u, "get_serials")? == list(&get),
        "{name}: GET fired for {}, the dump has {}",
        text(&u, "get_serials")?,
        list(&get)
    );
    ensure!(
        text(&u, "get80_serials")? == list(&get80),
        "{name}: GET on port 80 fired for {}, the dump has {}",
        text(&u, "get80_serials")?,
        list(&get80)
    );
    // The second link must have had something to say no to.
    ensure!(
        !get80.is_empty() && get80.len() < get.len(),
        "{name}: {get:?} {get80:?}"
    );
    println!("ude: {} GET flows, {} on port 80", get.len(), get80.len());
    Ok(())
}

/// Request lines (`GET ` at the start of the stream or of a line) in a client stream.
fn get_lines(stream: &[u8]) -> usize {
    (0..stream.len())
        .filter(|&i| stream[i..].starts_with(b"GET ") && (i == 0 || stream[i - 1] == b'\n'))
        .count()
}

/// An event allocated on CONN_NEW_DATA, raised from the callbacks of the client's new bytes
/// once for each `GET ` request line they complete (several per connection: keep-alive): its
/// callbacks run once per raise, with the raising event's data, as many times for each
/// connection as its dumped client stream has request lines.
#[test]
fn a_raised_event_reaches_its_callbacks_once_per_get_request() -> Result<()> {
    let name = "tcpflow__test4.pcap";
    let work = ScratchDir::new("prog-raise")?;
    let (out, dump, _) = probe_with_dump(work.path(), &corpus_capture(name)?, &[], &[&"raise"])?;
    let r = one(&out, "raise")?;
    let mut want = Vec::new();
    for rec in &dump.records {
        let Some(file) = &rec.c2s_file else { continue };
        let n = get_lines(&std::fs::read(dump.dir.join(file))?);
        let serial = dump_serial(rec)?.context("a stream without a serial")?;
        want.extend(std::iter::repeat_n(serial, n));
    }
    want.sort_unstable();
    let list = want
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    ensure!(
        text(&r, "serials")? == list,
        "{name}: the raised event's callbacks ran for serials {}, the dump's request lines are in {list}",
        text(&r, "serials")?
    );
    let flows = want.iter().collect::<BTreeSet<_>>().len();
    ensure!(
        num(&r, "raised")? == want.len() as u64 && want.len() > flows,
        "{name}: {r:?}"
    );
    println!("raise: {} GET requests in {flows} connections", want.len());
    Ok(())
}

/// A capture-clock timer set at every CONN_START, due 2 s of capture time later: it is due at
/// the connection's first frame's time plus the delay, it fires once, never before its due
/// time, and exactly the timers due by the end of the capture fire.
#[test]
fn capture_clock_timers_fire_by_the_captures_own_time() -> Result<()> {
    const DELAY_NS: u64 = 2_000_000_000;
    let name = "ndpi__alexa-app.pcap";
    let work = ScratchDir::new("prog-timer")?;
    let pcap = corpus_capture(name)?;
    let (out, dump, _) = probe_with_dump(
        work.path(),
        &pcap,
        &[],
        &[&"timer", &"--delay-ms", &(DELAY_NS / 1_000_000).to_string()],
    )?;
    let sum = one(&out, "timers")?;
    let clock = num(&sum, "clock")?;
    let times = frame_times(&pcap)?;
    let last_frame = times.iter().copied().max().context("no frames")?;
    ensure!(
        clock <= last_frame && clock >= num(&sum, "newest_event")?,
        "{name}: the timer clock ended at {clock}, the last frame is at {last_frame}: {sum:?}"
    );
    // The first frame of each connection, µs (the capture's resolution), by serial where the
    // dump names one.
    let start_us = |r: &FlowRecord| (r.start_ts * 1e6).round() as u64;
    let starts: BTreeSet<u64> = dump.records.iter().map(start_us).collect();
    let mut start_of = BTreeMap::new();
    for r in &dump.records {
        if let Some(serial) = dump_serial(r)? {
            start_of.insert(serial, start_us(r));
        }
    }
    let timers = tagged(&out, "timer");
    ensure!(
        timers.len() == dump.records.len(),
        "{name}: {} timers set for {} connections",
        timers.len(),
        dump.records.len()
    );
    let (mut fired, mut pending) = (0, 0);
    for t in &timers {
        let due = num(t, "due")?;
        let set_us = (due - DELAY_NS) / 1000;
        match start_of.get(&num(t, "serial")?) {
            Some(&start) => ensure!(
                set_us == start,
                "{name}: a timer set at its connection's start is due {} ms later than {} s after \
                 the connection's first frame (the clock it was set from was ahead): {t:?}",
                (set_us as i64 - start as i64) / 1000,
                DELAY_NS / 1_000_000_000
            ),
            None => ensure!(
                starts.contains(&set_us),
                "{name}: a timer due at {due} was set at no connection's start: {t:?}"
            ),
        }
        match text(t, "fired")? {
            "no" => {
                ensure!(
                    due > clock,
                    "{name}: a timer due by the end never fired: {t:?}"
                );
                pending += 1;
            }
            at => {
                let at: u64 = at.parse()?;
                ensure!(
                    at >= due,
                    "{name}: a timer fired {} ns early: {t:?}",
                    due - at
                );
                // The clock it fired by is a frame's time: an event's, or, once the analyzer had
                // every published event, the sensor's own clock (frames that raised nothing for
                // this analyzer move capture time too), never a time made up.
                ensure!(
                    times.contains(&at),
                    "{name}: a timer fired at {at}, the time of no frame of the capture: {t:?}"
                );
                fired += 1;
            }
        }
    }
    ensure!(
        fired > 0 && pending > 0,
        "{name}: {fired} fired, {pending} not due"
    );
    ensure!(num(&sum, "fired")? == fired, "{sum:?}");
    println!("timer: {fired} fired, {pending} due after the capture's end");
    Ok(())
}

/// A user context per connection, set at CONN_START and updated in every callback of the
/// connection, is there in each of them (and is the connection's own), and is dropped after
/// the connection's last CONN_END, having counted the stream lengths the dump wrote.
#[test]
fn a_user_context_follows_each_connection_from_start_to_end() -> Result<()> {
    let name = "ndpi__starcraft_battle.pcap";
    let work = ScratchDir::new("prog-uctx")?;
    let (out, dump, _) = probe_with_dump(work.path(), &corpus_capture(name)?, &[], &[&"uctx"])?;
    let sum = one(&out, "uctxs")?;
    let n = dump.records.len() as u64;
    ensure!(
        num(&sum, "set")? == n && num(&sum, "dropped")? == n,
        "{name}: {n} connections: {sum:?}"
    );
    let mut seen = BTreeSet::new();
    for u in tagged(&out, "uctx") {
        ensure!(
            num(&u, "ends")? == 2,
            "{name}: dropped before its end: {u:?}"
        );
        let serial = num(&u, "serial")?;
        ensure!(seen.insert(serial), "{name}: serial {serial} dropped twice");
        let (c2s, s2c) = (num(&u, "c2s_bytes")?, num(&u, "s2c_bytes")?);
        match dump.by_serial.get(&serial) {
            Some(c) => ensure!(
                (c2s, s2c) == (c.c2s.bytes, c.s2c.bytes),
                "{name}: serial {serial}: the context counted {c2s}/{s2c} bytes, the dump has {}/{}",
                c.c2s.bytes,
                c.s2c.bytes
            ),
            None => ensure!(c2s == 0 && s2c == 0, "{name}: {u:?} has no stream files"),
        }
    }
    println!("uctx: {n} connections");
    Ok(())
}

/// Two sockets of one analyzer, both taking every connection: one stops monitoring each
/// connection after its first CONN_NEW_DATA; it gets no callback of that connection after,
/// the sensor stops addressing the connection's events to it (the other socket sees them
/// without its bit), and the other socket still reads every stream whole. Small event rings
/// keep the sensor close behind the analyzer, so the stops take effect while the
/// connections still flow.
#[test]
fn stop_monitoring_silences_one_socket_and_leaves_the_other_whole() -> Result<()> {
    let name = "ndpi__alexa-app.pcap";
    let work = ScratchDir::new("prog-stopmon")?;
    let (out, dump, _) = probe_with_dump(
        work.path(),
        &corpus_capture(name)?,
        &["--event-ring", "16"],
        &[&"stopmon"],
    )?;
    let flows = same_as_dump(&out, &dump, name)?;
    let s = one(&out, "stopmon")?;
    ensure!(
        num(&s, "stopped")? == flows as u64,
        "{name}: stopped {} of {flows} connections with data",
        num(&s, "stopped")?
    );
    ensure!(num(&s, "after")? == 0, "{name}: {s:?}");
    ensure!(
        num(&s, "without_bit")? > 0,
        "{name}: the sensor kept addressing stopped connections to the socket: {s:?}"
    );
    println!(
        "stopmon: {flows} connections stopped; the watcher saw {} of their events still for the stopper, {} not",
        num(&s, "with_bit")?,
        num(&s, "without_bit")?
    );
    Ok(())
}
