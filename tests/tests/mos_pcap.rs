//! `mos-pcap` against the real sensor: the file it writes, replayed through `mos-sensor`, gives
//! the same streams for the connections it took as the first run gave for them.
//!
//! How each check knows what to expect, on its own:
//! - the connections a SYN filter takes are those whose first packet tcpdump's filter takes
//!   (`mos_tests::tcpdump::taken`, the same libpcap expression), among the connections of the
//!   sensor's own `--dump` of the first run;
//! - their streams (bytes, SHA-256 and lost bytes each way, endpoints) are that dump's records;
//!   the written file replayed through `mos-sensor --pcap OUT --dump D2` must give exactly those
//!   records, no more, no fewer;
//! - tshark (and tcpdump, for files of one link type) read the file without error and count
//!   the packets mos-pcap says it wrote; on captures where every packet of the filter belongs
//!   to a connection it takes, tcpdump prints the same packets from the file as from the
//!   capture with the filter;
//! - with --matches, the connections named are found by uid in --list's lines of a first run
//!   (uids are the same in every run of the same capture), and for the `mos-grep` pipeline,
//!   the connections whose dumped streams contain the pattern.
//!
//! Needs the release binaries (`cargo build --release --bins`), tcpdump and tshark.

use anyhow::{bail, ensure, Context, Result};
use mos_tests::flows::{parse_flows, FlowRecord};
use mos_tests::locate::{bin, corpus_dir, sensor_bin};
use mos_tests::procs::{
    assert_no_panic, assert_one_line, cmd, tail, wait_for, wait_for_socket, Proc,
};
use mos_tests::runner::{run_sensor_dump, ScratchDir};
use mos_tests::tcpdump::{taken, tcpdump};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The longest any one process of these tests may take.
const TIMEOUT: Duration = Duration::from_secs(60);

fn capture(name: &str) -> Result<PathBuf> {
    let p = corpus_dir()?.join("pcaps").join(name);
    ensure!(p.is_file(), "{} is not in the corpus", p.display());
    Ok(p)
}

// ---------------------------------------------------------------------------------------------
// Runs

/// What one sensor run with mos-pcap attached gave.
struct Run {
    /// The sensor's own dump of every connection.
    flows: Vec<FlowRecord>,
    /// mos-pcap's stderr.
    err: String,
}

/// Starts `mos-sensor --pcap PCAP --control CONTROL --wait-analyzers N --dump DUMP`.
fn start_sensor(work: &Path, pcap: &Path, analyzers: u32, dump: &Path) -> Result<(Proc, PathBuf)> {
    let control = work.join("c.sock");
    let n = analyzers.to_string();
    let c = cmd(
        &sensor_bin()?,
        &[
            &"--pcap",
            &pcap,
            &"--control",
            &control,
            &"--wait-analyzers",
            &n,
            &"--dump",
            &dump,
            &"--quiet",
        ],
    );
    let mut s = Proc::spawn("sensor", c, work)?;
    wait_for_socket(&mut s, &control, TIMEOUT)?;
    Ok((s, control))
}

/// Replays `pcap` to mos-pcap (`args` after `--control`), the sensor dumping into `work/d1`;
/// both must exit 0.
fn run_pcap(work: &Path, pcap: &Path, args: &[&dyn AsRef<OsStr>]) -> Result<Run> {
    let dump = work.join("d1");
    let (mut sensor, control) = start_sensor(work, pcap, 1, &dump)?;
    let mut all: Vec<&dyn AsRef<OsStr>> = vec![&"--control", &control];
    all.extend_from_slice(args);
    let mut p = Proc::spawn("mos-pcap", cmd(&bin("mos-pcap")?, &all), work)?;
    let deadline = Instant::now() + TIMEOUT;
    let st = p.wait_until(deadline)?;
    ensure!(
        st.code() == Some(0),
        "mos-pcap exited with {st}; stderr:\n{}\nsensor:\n{}",
        tail(&p.stderr()),
        tail(&sensor.stderr())
    );
    assert_no_panic(&p)?;
    let st = sensor.wait_until(deadline)?;
    ensure!(
        st.success(),
        "sensor exited with {st}:\n{}",
        tail(&sensor.stderr())
    );
    Ok(Run {
        flows: parse_flows(&std::fs::read_to_string(dump.join("flows.jsonl"))?)?,
        err: p.stderr(),
    })
}

/// The number before `what` in mos-pcap's summary line (`... 12 packets of 3 connections
/// written ...`).
fn count(err: &str, what: &str) -> Result<u64> {
    let line = err
        .lines()
        .find(|l| l.starts_with("mos-pcap: ") && l.contains(" written to "))
        .with_context(|| format!("no summary in:\n{err}"))?;
    let at = line
        .find(what)
        .with_context(|| format!("no {what:?} in {line}"))?;
    line[..at]
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no number before {what:?} in {line}"))
}

/// The first number of the part of mos-pcap's summary (parts are separated by `; `) that
/// holds `what` (`3` of `3 of 5 named connections never seen`).
fn part(err: &str, what: &str) -> Result<u64> {
    let line = err
        .lines()
        .find(|l| l.starts_with("mos-pcap: ") && l.contains(" written to "))
        .with_context(|| format!("no summary in:\n{err}"))?;
    line.split("; ")
        .find(|p| p.contains(what))
        .and_then(|p| p.trim_start_matches("mos-pcap: ").split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no {what:?} in {line}"))
}

/// Packets written and connections written, as the summary says.
fn written(err: &str) -> Result<(u64, u64)> {
    Ok((
        count(err, "packets of")?,
        count(err, "connections written")?,
    ))
}

/// A connection's streams, as a dump records them (times left out: the replay of a subset may
/// close a connection at another time).
type Streams = (String, String, u64, u64, String, String, u64, u64);

fn streams(f: &FlowRecord) -> Streams {
    (
        f.client.clone(),
        f.server.clone(),
        f.c2s_bytes,
        f.s2c_bytes,
        f.c2s_sha256.clone(),
        f.s2c_sha256.clone(),
        f.c2s_lost,
        f.s2c_lost,
    )
}

/// The streams of `file` replayed through the sensor alone.
fn replay(work: &Path, file: &Path, tag: &str) -> Result<Vec<Streams>> {
    let dump = work.join(format!("d2-{tag}"));
    let logs = work.join(format!("logs-{tag}"));
    std::fs::create_dir_all(&logs)?;
    run_sensor_dump(&sensor_bin()?, file, &dump, &logs, TIMEOUT, &[])?;
    let flows = parse_flows(&std::fs::read_to_string(dump.join("flows.jsonl"))?)?;
    let mut s: Vec<Streams> = flows.iter().map(streams).collect();
    s.sort();
    Ok(s)
}

/// Packets tshark reads from `file` (failing on any complaint).
fn tshark_packets(file: &Path) -> Result<u64> {
    let out = Command::new("tshark")
        .args(["-n", "-T", "fields", "-e", "frame.number", "-r"])
        .arg(file)
        .output()
        .context("running tshark (scripts/setup.sh installs it)")?;
    let err = String::from_utf8_lossy(&out.stderr);
    let complaint = err
        .lines()
        .any(|l| !l.trim().is_empty() && !l.contains("Running as user"));
    ensure!(
        out.status.success() && !complaint,
        "tshark -r {} failed: {err}",
        file.display()
    );
    Ok(String::from_utf8_lossy(&out.stdout).lines().count() as u64)
}

/// tcpdump's one-line-per-packet listing of `file` (with `filter`, if any), failing on an
/// error.
fn tcpdump_lines(file: &Path, filter: Option<&str>) -> Result<Vec<String>> {
    let mut c = Command::new(tcpdump()?);
    c.args(["-nn", "-tt", "-r"]).arg(file);
    if let Some(f) = filter {
        c.arg(f);
    }
    let out = c.output().context("running tcpdump")?;
    ensure!(
        out.status.success(),
        "tcpdump -r {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        err.lines().all(|l| l.starts_with("reading from file")),
        "tcpdump -r {}: {err}",
        file.display()
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

// ---------------------------------------------------------------------------------------------
// (a) A SYN filter, both formats, replayed

/// What one capture is run with.
struct Case {
    capture: &'static str,
    filter: &'static str,
    /// Every packet tcpdump's filter takes belongs to a connection the SYN filter takes, so
    /// the file holds exactly the capture's packets that the filter takes.
    exact: bool,
    /// The file has one link type (tcpdump reads only those).
    one_linktype: bool,
}

/// Runs `case` in both formats and checks the files; returns (connections taken, packets).
fn filtered(case: &Case) -> Result<(usize, u64)> {
    let work = ScratchDir::new(&format!("pcap-{}", case.capture))?;
    let w = work.path();
    let pcap = capture(case.capture)?;
    let mut got = None;
    for format in ["pcap", "pcapng"] {
        let wf = w.join(format);
        std::fs::create_dir_all(&wf)?;
        let out = wf.join(format!("out.{format}"));
        let run = run_pcap(&wf, &pcap, &[&"--filter", &case.filter, &"--out", &out])?;
        let ctx = || format!("{} --filter {:?}, {format}", case.capture, case.filter);
        let (packets, conns) = written(&run.err).with_context(ctx)?;
        let take = taken(&pcap, case.filter, &run.flows).with_context(ctx)?;
        let mut want: Vec<Streams> = run
            .flows
            .iter()
            .zip(&take)
            .filter(|(_, &t)| t)
            .map(|(f, _)| streams(f))
            .collect();
        want.sort();
        ensure!(
            !want.is_empty(),
            "{}: the filter takes none of the {} connections",
            ctx(),
            run.flows.len()
        );
        ensure!(
            conns == want.len() as u64,
            "{}: {conns} connections written, tcpdump's filter takes {}:\n{}",
            ctx(),
            want.len(),
            run.err
        );
        let got_streams = replay(&wf, &out, format).with_context(ctx)?;
        ensure!(
            got_streams == want,
            "{}: the replayed file gives\n{got_streams:#?}\nthe capture gave\n{want:#?}",
            ctx()
        );
        ensure!(
            tshark_packets(&out)? == packets,
            "{}: tshark does not read {packets} packets",
            ctx()
        );
        if case.one_linktype {
            let lines = tcpdump_lines(&out, None)?;
            ensure!(
                lines.len() as u64 == packets,
                "{}: tcpdump reads {}",
                ctx(),
                lines.len()
            );
            if case.exact {
                let orig = tcpdump_lines(&pcap, Some(case.filter))?;
                ensure!(
                    lines == orig,
                    "{}: tcpdump prints other packets from the file than from the capture",
                    ctx()
                );
            }
        }
        // Files carry payloads: not readable by others.
        use std::os::unix::fs::MetadataExt;
        ensure!(
            std::fs::metadata(&out)?.mode() & 0o007 == 0,
            "{}: mode",
            ctx()
        );
        match got {
            None => got = Some((want.len(), packets)),
            Some(g) => ensure!(
                g == (want.len(), packets),
                "{}: pcap and pcapng differ: {g:?}",
                ctx()
            ),
        }
    }
    got.context("no format run")
}

#[test]
fn plain_http_captures_replay_to_the_same_streams() {
    // Two HTTP connections of one capture, then 13 of another.
    for (capture, conns) in [
        ("dpkt__examples__data__http.pcap", 2),
        ("zeek__http__bro.org.pcap", 13),
    ] {
        let got = filtered(&Case {
            capture,
            filter: "tcp",
            exact: true,
            one_linktype: true,
        })
        .unwrap();
        assert_eq!(got.0, conns, "{capture}");
    }
    // A subset: the connections to one server port of a capture of several.
    let got = filtered(&Case {
        capture: "zeek__http__bro.org.pcap",
        filter: "tcp port 80 and (tcp port 55080 or tcp port 55083 or tcp port 55127)",
        exact: true,
        one_linktype: true,
    })
    .unwrap();
    assert_eq!(got.0, 3);
}

#[test]
fn ipv6_and_pcapng_input_replay_to_the_same_streams() {
    // IPv6 on Ethernet: the 4 connections to one server of 13.
    let got = filtered(&Case {
        capture: "ndpi__http_ipv6.pcap",
        filter: "ip6 and tcp port 443 and net 2a03:b0c0:3:d0::/64",
        exact: false,
        one_linktype: true,
    })
    .unwrap();
    assert_eq!(got.0, 4);
    // A pcapng capture: its HTTP connections among 30.
    let got = filtered(&Case {
        capture: "ndpi__1kxun.pcapng",
        filter: "tcp port 80",
        exact: false,
        one_linktype: true,
    })
    .unwrap();
    assert!(got.0 >= 5, "{got:?}");
}

#[test]
fn vlan_pppoe_and_tunnelled_frames_are_written_as_captured() {
    // VLAN-tagged frames, taken only when the filter looks past the tag.
    let got = filtered(&Case {
        capture: "suricata-verify__bug-814__input.pcap",
        filter: "vlan and tcp port 80",
        exact: true,
        one_linktype: true,
    })
    .unwrap();
    assert_eq!(got.0, 1);
    // Three HTTP connections: over Ethernet, in PPPoE, IPv6 in IPv4 (6in4); the filter takes
    // the first two, with their PPPoE headers.
    let got = filtered(&Case {
        capture: "dpkt__examples__data__nb6-http.pcap",
        filter: "tcp port 80 or (pppoes and tcp port 80)",
        exact: false,
        one_linktype: true,
    })
    .unwrap();
    assert_eq!(got.0, 2);
}

#[test]
fn reassembled_fragments_have_their_own_link_type() {
    // Fragments the sensor reassembles come as raw IP (LINKTYPE_RAW 101) beside the
    // Ethernet frames: pcapng describes both, pcap keeps Ethernet and counts the others.
    let work = ScratchDir::new("pcap-frag").unwrap();
    let w = work.path();
    let pcap = capture("zeek__ipv4__fragmented-4.pcap").unwrap();
    let ng = w.join("out.pcapng");
    let run = run_pcap(w, &pcap, &[&"--out", &ng]).unwrap();
    let want: BTreeSet<Streams> = run.flows.iter().map(streams).collect();
    let (packets, _) = written(&run.err).unwrap();
    let got: BTreeSet<Streams> = replay(w, &ng, "ng").unwrap().into_iter().collect();
    assert_eq!(got, want);
    assert_eq!(tshark_packets(&ng).unwrap(), packets);
    assert!(
        run.flows.iter().any(|f| f.c2s_bytes + f.s2c_bytes > 0),
        "{:?}",
        run.flows
    );
    let one = w.join("one");
    std::fs::create_dir_all(&one).unwrap();
    let classic = one.join("out.pcap");
    let run = run_pcap(&one, &pcap, &[&"--out", &classic]).unwrap();
    let (p, _) = written(&run.err).unwrap();
    let skipped = part(&run.err, "packets of another link type").unwrap();
    assert!(skipped > 0, "{}", run.err);
    assert_eq!(p + skipped, packets, "{}", run.err);
    assert_eq!(tcpdump_lines(&classic, None).unwrap().len() as u64, p);
}

// ---------------------------------------------------------------------------------------------
// (b) Connections named by uid

/// The lines of a --list file: uid -> (client, server).
fn listed(path: &Path) -> Result<Vec<(String, String, String, serde_json::Value)>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).with_context(|| l.to_string())?;
            let ip = |k: &str| v[k].as_str().map(str::to_owned).context(k.to_string());
            let port = |k: &str| v[k].as_u64().context(k.to_string());
            let ep = |h: &str, p: &str| -> Result<String> {
                let h = ip(h)?;
                Ok(if h.contains(':') {
                    format!("[{h}]:{}", port(p)?)
                } else {
                    format!("{h}:{}", port(p)?)
                })
            };
            Ok((
                ip("uid")?,
                ep("id.orig_h", "id.orig_p")?,
                ep("id.resp_h", "id.resp_p")?,
                v,
            ))
        })
        .collect()
}

/// mos-grep-style match lines naming `uid`.
fn match_line(l: &(String, String, String, serde_json::Value)) -> String {
    let mut v = l.3.clone();
    v["side"] = "resp".into();
    v["offset"] = 17.into();
    v["len"] = 4.into();
    v["pattern"] = "HTTP".into();
    v["pattern_id"] = 0.into();
    v.to_string()
}

#[test]
fn matches_from_a_file_write_exactly_the_named_connections() {
    let work = ScratchDir::new("pcap-matches").unwrap();
    let w = work.path();
    let pcap = capture("zeek__http__bro.org.pcap").unwrap();
    // First run: every connection, and the list of their uids.
    let first = w.join("first");
    std::fs::create_dir_all(&first).unwrap();
    let list = first.join("list.jsonl");
    let all = first.join("all.pcap");
    let run = run_pcap(&first, &pcap, &[&"--out", &all, &"--list", &list]).unwrap();
    let lines = listed(&list).unwrap();
    // --list names each connection of the dump once, by its endpoints.
    let mut ends: Vec<(String, String)> =
        lines.iter().map(|l| (l.1.clone(), l.2.clone())).collect();
    let mut dumped: Vec<(String, String)> = run
        .flows
        .iter()
        .map(|f| (f.client.clone(), f.server.clone()))
        .collect();
    ends.sort();
    dumped.sort();
    assert_eq!(ends, dumped);
    let uids: BTreeSet<&str> = lines.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(uids.len(), lines.len());
    // Second run: two of them named, with a line that names none, one naming a connection
    // of no capture, and a repeat.
    let picked = [&lines[1], &lines[6]];
    let mut m = String::new();
    for l in picked {
        m += &match_line(l);
        m += "\n";
    }
    m += "not json\n";
    m += "{\"uid\":\"CNoSuchConnection0\"}\n";
    m += &match_line(picked[0]);
    m += "\n";
    let second = w.join("second");
    std::fs::create_dir_all(&second).unwrap();
    let mfile = second.join("m.jsonl");
    std::fs::write(&mfile, m).unwrap();
    let out = second.join("named.pcapng");
    let run2 = run_pcap(&second, &pcap, &[&"--matches", &mfile, &"--out", &out]).unwrap();
    let want: Vec<Streams> = {
        let mut v: Vec<Streams> = run2
            .flows
            .iter()
            .filter(|f| picked.iter().any(|l| l.1 == f.client && l.2 == f.server))
            .map(streams)
            .collect();
        v.sort();
        v
    };
    assert_eq!(want.len(), 2);
    assert_eq!(replay(&second, &out, "named").unwrap(), want);
    let (packets, conns) = written(&run2.err).unwrap();
    assert_eq!(conns, 2, "{}", run2.err);
    assert_eq!(tshark_packets(&out).unwrap(), packets);
    assert_eq!(tcpdump_lines(&out, None).unwrap().len() as u64, packets);
    assert_eq!(
        part(&run2.err, "named connections never seen").unwrap(),
        1,
        "{}",
        run2.err
    );
    assert!(run2.err.contains("of 3 named connections"), "{}", run2.err);
    assert_eq!(part(&run2.err, "--matches lines without a uid").unwrap(), 1);
    // The file was read before the replay: nothing was held, nothing dropped.
    assert_eq!(
        part(&run2.err, "dropped from mos-pcap's buffer").unwrap(),
        0
    );
}

/// A child killed when dropped, unless waited for.
struct Guard(Child, &'static str);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Guard {
    fn wait(&mut self, deadline: Instant) -> Result<std::process::ExitStatus> {
        loop {
            if let Some(s) = self.0.try_wait()? {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                let _ = self.0.kill();
                bail!("{} did not exit in time (killed)", self.1);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn names_that_come_late_through_a_pipe_within_a_small_buffer() {
    // 30 connections, 3 MB: more than the 1 MiB buffer. The names are written only once the
    // replay is over, so mos-pcap holds every packet until then and evicts the connections
    // that began holding first.
    let work = ScratchDir::new("pcap-late").unwrap();
    let w = work.path();
    let pcap = capture("ndpi__instagram.pcap").unwrap();
    let first = w.join("first");
    std::fs::create_dir_all(&first).unwrap();
    let list = first.join("list.jsonl");
    let all = first.join("all.pcap");
    let run = run_pcap(&first, &pcap, &[&"--out", &all, &"--list", &list]).unwrap();
    let (total, _) = written(&run.err).unwrap();
    let lines = listed(&list).unwrap();
    // The last two connections to start, and the first.
    let n = lines.len();
    let picked = [&lines[0], &lines[n - 2], &lines[n - 1]];

    let second = w.join("second");
    std::fs::create_dir_all(&second).unwrap();
    let dump = second.join("d1");
    let (mut sensor, control) = start_sensor(&second, &pcap, 1, &dump).unwrap();
    let out = second.join("late.pcap");
    let c = cmd(
        &bin("mos-pcap").unwrap(),
        &[
            &"--control",
            &control,
            &"--matches",
            &"-",
            &"--buffer-mib",
            &"1",
            &"--linger",
            &"60",
            &"--out",
            &out,
        ],
    );
    let (mut p, mut stdin) = Proc::spawn_with_stdin("mos-pcap", c, &second).unwrap();
    // The replay ends with mos-pcap holding what it could.
    let deadline = Instant::now() + TIMEOUT;
    assert!(
        sensor.wait_until(deadline).unwrap().success(),
        "{}",
        sensor.stderr()
    );
    for l in picked {
        writeln!(stdin, "{}", match_line(l)).unwrap();
    }
    drop(stdin);
    p.expect_code(0, TIMEOUT).unwrap();
    let err = p.stderr();
    let (packets, _) = written(&err).unwrap();
    let dropped = part(&err, "dropped from mos-pcap's buffer").unwrap();
    let unnamed = part(&err, "not named (not written)").unwrap();
    // Every packet is written, dropped for room, or not named.
    assert!(dropped > 0, "{err}");
    assert_eq!(packets + dropped + unnamed, total, "{err}");
    assert_eq!(
        part(&err, "named connections never seen").unwrap(),
        0,
        "{err}"
    );
    // The youngest connections kept their packets: written whole.
    let flows = parse_flows(&std::fs::read_to_string(dump.join("flows.jsonl")).unwrap()).unwrap();
    let young: Vec<Streams> = {
        let mut v: Vec<Streams> = flows
            .iter()
            .filter(|f| {
                picked[1..]
                    .iter()
                    .any(|l| l.1 == f.client && l.2 == f.server)
            })
            .map(streams)
            .collect();
        v.sort();
        v
    };
    assert_eq!(young.len(), 2);
    let got = replay(&second, &out, "late").unwrap();
    for y in &young {
        assert!(got.contains(y), "{y:?} not in {got:#?}\n{err}");
    }
    assert_eq!(tshark_packets(&out).unwrap(), packets);
}

#[test]
fn mos_grep_piped_into_mos_pcap_writes_the_connections_with_the_pattern() {
    let work = ScratchDir::new("pcap-grep").unwrap();
    let w = work.path();
    let pcap = capture("zeek__http__bro.org.pcap").unwrap();
    let pattern = "image/png";
    let dump = w.join("d1");
    let (mut sensor, control) = start_sensor(w, &pcap, 2, &dump).unwrap();
    let mut grep = Guard(
        Command::new(bin("mos-grep").unwrap())
            .args(["-e", pattern, "--control"])
            .arg(&control)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(w.join("grep.stderr")).unwrap())
            .spawn()
            .unwrap(),
        "mos-grep",
    );
    let pipe = grep.0.stdout.take().unwrap();
    let out = w.join("hits.pcapng");
    let mut pc = Guard(
        Command::new(bin("mos-pcap").unwrap())
            .arg("--control")
            .arg(&control)
            .args(["--matches", "-", "--linger", "60", "--out"])
            .arg(&out)
            .stdin(pipe)
            .stdout(Stdio::null())
            .stderr(File::create(w.join("pcap.stderr")).unwrap())
            .spawn()
            .unwrap(),
        "mos-pcap",
    );
    let deadline = Instant::now() + TIMEOUT;
    assert!(
        sensor.wait_until(deadline).unwrap().success(),
        "{}",
        sensor.stderr()
    );
    let g = grep.wait(deadline).unwrap();
    let grep_err = std::fs::read_to_string(w.join("grep.stderr")).unwrap();
    assert!(g.success(), "mos-grep: {g}: {grep_err}");
    let st = pc.wait(deadline).unwrap();
    let err = std::fs::read_to_string(w.join("pcap.stderr")).unwrap();
    assert_eq!(st.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // The connections whose dumped streams hold the pattern.
    let flows = parse_flows(&std::fs::read_to_string(dump.join("flows.jsonl")).unwrap()).unwrap();
    let holds = |file: &Option<String>| {
        file.as_ref().is_some_and(|f| {
            let data = std::fs::read(dump.join(f)).unwrap();
            data.windows(pattern.len()).any(|x| x == pattern.as_bytes())
        })
    };
    let mut want: Vec<Streams> = flows
        .iter()
        .filter(|f| holds(&f.c2s_file) || holds(&f.s2c_file))
        .map(streams)
        .collect();
    want.sort();
    assert!(
        !want.is_empty() && want.len() < flows.len(),
        "{} of {}",
        want.len(),
        flows.len()
    );
    assert_eq!(replay(w, &out, "grep").unwrap(), want, "{err}");
    let (packets, conns) = written(&err).unwrap();
    assert_eq!(conns, want.len() as u64);
    assert_eq!(tshark_packets(&out).unwrap(), packets);
    assert_eq!(
        part(&err, "named connections never seen").unwrap(),
        0,
        "{err}"
    );
}

#[test]
fn in_live_mode_packets_the_log_no_longer_has_are_counted() {
    // A lossy replay (the sensor waits for no analyzer) with a packet log of 16 frames: the
    // sensor may overwrite frames before mos-pcap reads them. Each packet mos-pcap is told of
    // is then either written or counted as gone from the log.
    let work = ScratchDir::new("pcap-lossy").unwrap();
    let w = work.path();
    let pcap = capture("ndpi__instagram.pcap").unwrap();
    let first = w.join("first");
    std::fs::create_dir_all(&first).unwrap();
    let all = first.join("all.pcap");
    let (total, _) = written(&run_pcap(&first, &pcap, &[&"--out", &all]).unwrap().err).unwrap();
    let control = w.join("c.sock");
    let mut c = cmd(
        &sensor_bin().unwrap(),
        &[
            &"--pcap",
            &pcap,
            &"--control",
            &control,
            &"--wait-analyzers",
            &"1",
        ],
    );
    c.args([
        "--lossy",
        "--pktlog-frames",
        "16",
        "--pktlog-kib",
        "16",
        "--quiet",
    ]);
    let mut sensor = Proc::spawn("sensor", c, w).unwrap();
    wait_for_socket(&mut sensor, &control, TIMEOUT).unwrap();
    let out = w.join("lossy.pcap");
    let mut p = Proc::spawn(
        "mos-pcap",
        cmd(
            &bin("mos-pcap").unwrap(),
            &[&"--control", &control, &"--out", &out],
        ),
        w,
    )
    .unwrap();
    p.expect_code(0, TIMEOUT).unwrap();
    assert_no_panic(&p).unwrap();
    assert!(
        sensor.wait(TIMEOUT).unwrap().success(),
        "{}",
        sensor.stderr()
    );
    let err = p.stderr();
    let (packets, _) = written(&err).unwrap();
    let gone = part(&err, "no longer in the sensor's packet log").unwrap();
    if err.contains("events the sensor dropped") {
        // Events never reached mos-pcap (some of them may have been packets').
        assert!(packets + gone <= total, "{err}");
    } else {
        assert_eq!(packets + gone, total, "{err}");
    }
    assert_eq!(tshark_packets(&out).unwrap(), packets);
}

// ---------------------------------------------------------------------------------------------
// (c) Bad arguments, signals, a lost sensor

#[test]
fn bad_arguments_are_one_line_and_exit_1() {
    let work = ScratchDir::new("pcap-args").unwrap();
    let w = work.path();
    let out = w.join("never.pcap");
    let missing = w.join("no-such-file.jsonl");
    let plain = w.join("plain.pcap");
    std::fs::write(&plain, b"\xd4\xc3\xb2\xa1 not pcapng").unwrap();
    let none = w.join("none.sock");
    let cases: Vec<(Vec<&dyn AsRef<OsStr>>, &str)> = vec![
        (vec![&"--snaplen", &"0"], "--snaplen"),
        (vec![&"--snaplen", &"262145"], "--snaplen"),
        (vec![&"--format", &"pcapx"], "--format"),
        (vec![&"--buffer-mib", &"0"], "--buffer-mib"),
        (vec![&"--linger", &"-1"], "--linger"),
        (vec![&"--linger", &"3601"], "--linger"),
        (vec![&"--matches", &missing], "--matches"),
        (vec![&"--matches", &w], "is a directory"),
        (vec![&"--append"], "--append needs pcapng"),
        (vec![&"--append", &"--format", &"pcapng"], "--append"),
        (vec![&"--list", &"-"], "both be stdout"),
        (vec![], "ENOENT"),
    ];
    for (i, (args, word)) in cases.iter().enumerate() {
        let target: &dyn AsRef<OsStr> = match *word {
            "--append" => &plain,
            "both be stdout" => &"-",
            _ => &out,
        };
        let mut all: Vec<&dyn AsRef<OsStr>> =
            vec![&"--control", &none, &"--wait", &"0", &"--out", target];
        all.extend_from_slice(args);
        let mut p =
            Proc::spawn(&format!("bad{i}"), cmd(&bin("mos-pcap").unwrap(), &all), w).unwrap();
        p.expect_code(1, TIMEOUT).unwrap();
        assert_one_line(&p, &[word]).unwrap();
        assert!(!out.exists(), "{word}: created {}", out.display());
    }
    assert_eq!(
        std::fs::read(&plain).unwrap(),
        b"\xd4\xc3\xb2\xa1 not pcapng"
    );
    // --help tells what it does, and exits 0.
    let h = Command::new(bin("mos-pcap").unwrap())
        .arg("--help")
        .output()
        .unwrap();
    assert!(h.status.success());
    let text = String::from_utf8_lossy(&h.stdout);
    for word in [
        "--matches",
        "--buffer-mib",
        "--linger",
        "pcapng",
        "packet log",
        "0640",
    ] {
        assert!(text.contains(word), "--help says nothing of {word}");
    }
}

#[test]
fn a_signal_ends_with_130_and_a_lost_sensor_with_1_both_leaving_a_readable_file() {
    let work = ScratchDir::new("pcap-stop").unwrap();
    let w = work.path();
    let pcap = capture("zeek__http__bro.org.pcap").unwrap();
    for (tag, signal_sensor) in [("term", false), ("lost", true)] {
        let d = w.join(tag);
        std::fs::create_dir_all(&d).unwrap();
        // The sensor waits for two analyzers and gets one: the replay never starts.
        let (mut sensor, control) = start_sensor(&d, &pcap, 2, &d.join("d1")).unwrap();
        let out = d.join("stopped.pcapng");
        let mut p = Proc::spawn(
            "mos-pcap",
            cmd(
                &bin("mos-pcap").unwrap(),
                &[&"--control", &control, &"--out", &out],
            ),
            &d,
        )
        .unwrap();
        // The file is created once mos-pcap is attached.
        wait_for("mos-pcap's file", TIMEOUT, || Ok(out.exists())).unwrap();
        if signal_sensor {
            sensor.signal(rustix::process::Signal::KILL).unwrap();
            sensor.wait(TIMEOUT).unwrap();
            p.expect_code(1, TIMEOUT).unwrap();
            assert_one_line(&p, &["0 packets of 0 connections written to"]).unwrap();
        } else {
            p.signal(rustix::process::Signal::TERM).unwrap();
            p.expect_code(130, TIMEOUT).unwrap();
            assert_no_panic(&p).unwrap();
            assert!(p.stderr().contains("stopped by a signal"), "{}", p.stderr());
            sensor.signal(rustix::process::Signal::TERM).unwrap();
            sensor.wait(TIMEOUT).unwrap();
        }
        // An empty but well-formed file.
        assert_eq!(tshark_packets(&out).unwrap(), 0);
        assert_eq!(tcpdump_lines(&out, None).unwrap().len(), 0);
    }
}

#[test]
fn append_adds_a_section_that_tcpdump_and_tshark_read() {
    let work = ScratchDir::new("pcap-append").unwrap();
    let w = work.path();
    let pcap = capture("dpkt__examples__data__http.pcap").unwrap();
    let out = w.join("both.pcapng");
    let mut per_run = Vec::new();
    for round in ["1", "2"] {
        let d = w.join(round);
        std::fs::create_dir_all(&d).unwrap();
        let run = run_pcap(&d, &pcap, &[&"--append", &"--out", &out]).unwrap();
        per_run.push(written(&run.err).unwrap().0);
    }
    // Two sections of the same packets, one after the other.
    assert!(per_run[0] > 0 && per_run[0] == per_run[1], "{per_run:?}");
    let total = per_run[0] * 2;
    assert_eq!(tshark_packets(&out).unwrap(), total);
    assert_eq!(tcpdump_lines(&out, None).unwrap().len() as u64, total);
    let sections = std::fs::read(&out)
        .unwrap()
        .windows(4)
        .filter(|w| *w == [0x0A, 0x0D, 0x0D, 0x0A])
        .count();
    assert!(sections >= 2, "{sections} section headers");
}
