//! `mos-ctl` against a running sensor: `status` (text and JSON) and `metrics` while a slowed
//! replay publishes to two analyzers, the HTTP endpoint of `mos-ctl metrics --listen` (against
//! the sensor, and against a stand-in sensor: concurrent clients, idle and slow ones closed,
//! one request to the sensor per second, 503 while it is away), `--timeout` against a socket
//! nobody accepts on, and the errors a user meets (no sensor, a user the sensor does not allow,
//! an address already taken). Needs the workspace's binaries built in the same profile
//! (`cargo build --bins`), the corpus, and root for the test that runs `mos-ctl` as another
//! user.

use anyhow::{bail, ensure, Context, Result};
use mos_tests::locate::{bin, corpus_dir, sensor_bin};
use mos_tests::procs::{
    assert_no_panic, cmd, copy_for_other_users, open_to_other_users, tail, wait_for,
    wait_for_socket, Proc,
};
use mos_tests::runner::ScratchDir;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use serde_json::Value;
use shm_layout::control::{encode, SensorMsg};
use shm_layout::status::StatusReport;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest any process of these tests may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A capture of about a minute of traffic (30 connections, TCP and UDP), replayed at
/// `--speed 10`: the replay runs for about 6 s.
fn paced_capture() -> Result<PathBuf> {
    Ok(corpus_dir()?.join("pcaps").join("ndpi__1kxun.pcapng"))
}

fn start_sensor(w: &Path, pcap: &Path, control: &Path, extra: &[&str]) -> Result<Proc> {
    let mut c = cmd(&sensor_bin()?, &[&"--pcap", &pcap, &"--control", &control]);
    c.args(extra);
    let mut s = Proc::spawn("sensor", c, w)?;
    wait_for_socket(&mut s, control, TIMEOUT)?;
    Ok(s)
}

fn analyzer(w: &Path, program: &str, args: &[&dyn AsRef<OsStr>]) -> Result<Proc> {
    Proc::spawn(program, cmd(&bin(program)?, args), w)
}

/// Runs `mos-ctl --control CONTROL ARGS...` to completion.
fn ctl(control: &Path, args: &[&str]) -> Result<Output> {
    let mut c = Command::new(bin("mos-ctl")?);
    c.arg("--control").arg(control).args(args);
    c.output().with_context(|| format!("running {c:?}"))
}

/// Its stdout, failing unless it succeeded.
fn ctl_ok(control: &Path, args: &[&str]) -> Result<String> {
    let out = ctl(control, args)?;
    ensure!(
        out.status.success(),
        "mos-ctl {args:?} exited with {}; stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Checks Prometheus text exposition (0.0.4) and returns the metric names that have samples.
/// Every sample's metric must have been introduced by `# HELP` and `# TYPE` lines, names must
/// be valid, label sets well formed, values floats, and a counter's name must end in
/// `_total`.
fn check_exposition(text: &str) -> Result<BTreeSet<String>> {
    let valid = |n: &str| {
        let mut c = n.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    };
    let mut help = BTreeSet::new();
    let mut types = std::collections::BTreeMap::new();
    let mut sampled = BTreeSet::new();
    ensure!(text.ends_with('\n'), "the text does not end with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').context(line.to_string())?;
            ensure!(valid(name) && !doc.is_empty(), "bad HELP line {line:?}");
            ensure!(help.insert(name.to_string()), "second HELP for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').context(line.to_string())?;
            ensure!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad TYPE line {line:?}"
            );
            ensure!(
                (kind == "counter") == name.ends_with("_total"),
                "{name} is a {kind}: counters and only counters end in _total"
            );
            ensure!(
                types.insert(name.to_string(), kind).is_none(),
                "second TYPE"
            );
            continue;
        }
        ensure!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').context(line.to_string())?;
        value
            .parse::<f64>()
            .with_context(|| format!("value of {line:?}"))?;
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .with_context(|| format!("labels of {line:?}"))?;
                // name="value" pairs, values with \\, \" and \n escaped.
                let mut rest = labels;
                while !rest.is_empty() {
                    let (lname, after) = rest.split_once("=\"").context(line.to_string())?;
                    ensure!(valid(lname), "bad label name in {line:?}");
                    let mut end = None;
                    let mut esc = false;
                    for (i, ch) in after.char_indices() {
                        match (esc, ch) {
                            (true, '\\' | '"' | 'n') => esc = false,
                            (true, _) => bail!("bad escape in {line:?}"),
                            (false, '\\') => esc = true,
                            (false, '"') => {
                                end = Some(i);
                                break;
                            }
                            _ => {}
                        }
                    }
                    let end = end.with_context(|| format!("unterminated label in {line:?}"))?;
                    rest = &after[end + 1..];
                    rest = rest.strip_prefix(',').unwrap_or(rest);
                }
                name
            }
            None => series,
        };
        ensure!(valid(name), "bad metric name in {line:?}");
        ensure!(
            help.contains(name) && types.contains_key(name),
            "{name} has a sample but no HELP or TYPE line before it"
        );
        sampled.insert(name.to_string());
    }
    Ok(sampled)
}

/// The names introduced by `# HELP` lines.
fn help_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

/// `GET path` from `addr`: (status line, headers, body).
fn http_get(addr: &str, path: &str) -> Result<(String, String, String)> {
    let mut s = std::net::TcpStream::connect(addr).with_context(|| format!("connecting {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").context("no header end")?;
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    Ok((status.to_string(), headers.to_string(), body.to_string()))
}

/// `mos-ctl --control CONTROL metrics --listen 127.0.0.1:0`, and the address it serves at
/// (from the line it logs when it listens).
fn metrics_server(w: &Path, control: &Path) -> Result<(Proc, String)> {
    let mut p = Proc::spawn(
        "metrics",
        cmd(
            &bin("mos-ctl")?,
            &[
                &"--control",
                &control,
                &"metrics",
                &"--listen",
                &"127.0.0.1:0",
            ],
        ),
        w,
    )?;
    let mut addr = String::new();
    wait_for("mos-ctl to listen", TIMEOUT, || {
        ensure!(p.poll()?.is_none(), "mos-ctl ended: {}", p.stderr());
        addr = p
            .stderr()
            .lines()
            .find_map(|l| l.strip_prefix("mos-ctl: serving metrics at http://"))
            .and_then(|l| l.split('/').next())
            .unwrap_or_default()
            .to_string();
        Ok(!addr.is_empty())
    })?;
    Ok((p, addr))
}

/// The sockets of process `pid` that are TCP sockets (from `/proc/net/tcp` and `tcp6`).
fn tcp_sockets_of(pid: u32) -> Result<Vec<String>> {
    let mut tcp = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for l in text.lines().skip(1) {
            if let Some(inode) = l.split_whitespace().nth(9) {
                tcp.insert(inode.to_string());
            }
        }
    }
    let mut out = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let link = std::fs::read_link(fd?.path()).unwrap_or_default();
        let link = link.to_string_lossy();
        if let Some(inode) = link
            .strip_prefix("socket:[")
            .and_then(|l| l.strip_suffix(']'))
        {
            if tcp.contains(inode) {
                out.push(link.into_owned());
            }
        }
    }
    Ok(out)
}

fn num(v: &Value, key: &str) -> Result<u64> {
    v.get(key)
        .and_then(Value::as_u64)
        .with_context(|| format!("no number {key} in {v}"))
}

#[test]
fn status_and_metrics_while_a_replay_publishes_to_two_analyzers() -> Result<()> {
    let work = ScratchDir::new("ctl-status")?;
    let w = work.path();
    let pcap = paced_capture()?;
    let control = w.join("c.sock");
    let mut sensor = start_sensor(
        w,
        &pcap,
        &control,
        &["--wait-analyzers", "2", "--speed", "10", "--workers", "2"],
    )?;
    // The privileged process listens on its control socket and nothing else.
    let tcp = tcp_sockets_of(sensor.pid())?;
    ensure!(tcp.is_empty(), "the sensor has TCP sockets: {tcp:?}");
    let (mut server, addr) = metrics_server(w, &control)?;

    // While the sensor waits for its analyzers, a status request is answered and does not
    // count as one of them.
    let early: Value = serde_json::from_str(&ctl_ok(&control, &["status", "--json"])?)?;
    ensure!(num(&early, "frames")? == 0, "{early}");
    ensure!(early["analyzers"].as_array().is_some_and(Vec::is_empty));
    std::thread::sleep(Duration::from_millis(300));
    ensure!(
        !sensor.stderr().contains("analyzer 1 attached") && !sensor.stderr().contains(" ready"),
        "a status request counted as an analyzer:\n{}",
        sensor.stderr()
    );

    let mut stat = analyzer(
        w,
        "mos-flowstat",
        &[&"--control", &control, &"--interval", &"30"],
    )?;
    let out = w.join("dump");
    let mut dump = analyzer(w, "mos-dump", &[&"--control", &control, &"--out", &out])?;

    // Counters reach the header about once a second during the replay.
    let mut text = String::new();
    wait_for("status with frames and two analyzers", TIMEOUT, || {
        ensure!(
            sensor.poll()?.is_none(),
            "the sensor ended before being watched"
        );
        text = ctl_ok(&control, &["status"])?;
        let frames = text
            .lines()
            .find_map(|l| l.strip_prefix("frames:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        Ok(frames > 0 && text.contains("analyzers: 2"))
    })?;
    ensure!(
        sensor.poll()?.is_none(),
        "the replay ended too soon:\n{text}"
    );
    ensure!(
        text.contains(&format!(
            "input:     pcap {} (lossless, 2 workers)",
            pcap.display()
        )),
        "{text}"
    );
    ensure!(text.contains(&format!("(pid {})", sensor.pid())), "{text}");
    ensure!(text.lines().any(|l| l.starts_with("uptime:")), "{text}");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("ID "))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    ensure!(rows.len() == 2, "{text}");
    for (p, name) in [(&stat, "mos-flowstat"), (&dump, "mos-dump")] {
        let row = rows
            .iter()
            .find(|r| r.get(1) == Some(&name))
            .with_context(|| format!("no line for {name}:\n{text}"))?;
        ensure!(row[2] == p.pid().to_string(), "{name}'s pid in:\n{text}");
        ensure!(row[3] == "root", "{name}'s user in:\n{text}");
        for n in &row[5..8] {
            n.parse::<u64>()
                .with_context(|| format!("delivered, dropped, lag of {name}:\n{text}"))?;
        }
    }

    // JSON: the same report, with numbers that agree.
    let json: Value = serde_json::from_str(&ctl_ok(&control, &["status", "--json"])?)?;
    ensure!(
        num(&json, "sensor_pid")? == u64::from(sensor.pid()),
        "{json}"
    );
    ensure!(
        json["mode"] == "lossless" && num(&json, "workers")? == 2,
        "{json}"
    );
    ensure!(json["state"] == "running", "{json}");
    ensure!(
        json["input"] == format!("pcap {}", pcap.display()).as_str(),
        "{json}"
    );
    ensure!(
        num(&json, "frames")? > 0 && num(&json, "bytes")? > 0,
        "{json}"
    );
    ensure!(
        num(&json, "uptime_ms")? > num(&early, "uptime_ms")?,
        "{json}"
    );
    ensure!(num(&json, "memory_rss_bytes")? > 0, "{json}");
    ensure!(
        num(&json, "memory_bound_bytes")? >= num(&json, "memory_rss_bytes")?,
        "{json}"
    );
    let analyzers = json["analyzers"].as_array().context("analyzers")?;
    ensure!(analyzers.len() == 2, "{json}");
    for a in analyzers {
        let (published, delivered, lag) =
            (num(a, "published")?, num(a, "delivered")?, num(a, "lag")?);
        ensure!(delivered + lag == published, "{a}");
        // Lossless: nothing is dropped for a full ring.
        ensure!(num(a, "dropped")? == 0, "{a}");
        ensure!(a["ready"] == true, "{a}");
        let pid = num(a, "pid")?;
        let expect = if pid == u64::from(stat.pid()) {
            "mos-flowstat"
        } else {
            ensure!(pid == u64::from(dump.pid()), "{a}");
            "mos-dump"
        };
        ensure!(a["name"] == expect && a["user"] == "root", "{a}");
        ensure!(
            a["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|x| x == "CONN_END")),
            "{a}"
        );
    }
    ensure!(
        num(&json["drops"], "events")? == 0 && num(&json["drops"], "stalled_analyzers")? == 0,
        "{json}"
    );

    // Metrics: well formed, with a series per analyzer.
    let metrics = ctl_ok(&control, &["metrics"])?;
    let sampled = check_exposition(&metrics)?;
    for name in [
        "mos_frames_total",
        "mos_flows_live",
        "mos_sensor_uptime_seconds",
        "mos_analyzer_events_delivered_total",
        "mos_analyzer_lag_events",
    ] {
        ensure!(sampled.contains(name), "no {name} in:\n{metrics}");
    }
    for a in analyzers {
        let series = format!(
            "mos_analyzer_events_delivered_total{{id=\"{}\",name=\"{}\",user=\"root\"}} ",
            num(a, "id")?,
            a["name"].as_str().unwrap_or_default()
        );
        ensure!(
            metrics.lines().any(|l| l.starts_with(&series)),
            "no {series:?} in:\n{metrics}"
        );
    }

    // mos-ctl's HTTP endpoint serves the same metrics.
    let (status, headers, body) = http_get(&addr, "/metrics")?;
    ensure!(status == "HTTP/1.1 200 OK", "{status}");
    ensure!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    check_exposition(&body)?;
    ensure!(
        help_names(&body) == help_names(&metrics),
        "{body}\n---\n{metrics}"
    );
    let (status, _, _) = http_get(&addr, "/")?;
    ensure!(status.starts_with("HTTP/1.1 404"), "{status}");
    ensure!(server.poll()?.is_none(), "{}", server.stderr());
    assert_no_panic(&server)?;

    ensure!(
        sensor.poll()?.is_none(),
        "the replay ended before the checks: slow it down"
    );
    for p in [&mut sensor, &mut stat, &mut dump] {
        p.expect_code(0, TIMEOUT)?;
    }
    let err = sensor.stderr();
    ensure!(!err.contains("analyzer 3 attached"), "{err}");
    // Gone with the sensor: a clear error, exit status 1.
    let out = ctl(&control, &["status"])?;
    ensure!(out.status.code() == Some(1), "{out:?}");
    let msg = String::from_utf8_lossy(&out.stderr);
    ensure!(
        msg.contains(&format!(
            "no sensor listening at {}: is mos-sensor running?",
            control.display()
        )),
        "{msg}"
    );
    Ok(())
}

#[test]
fn a_single_worker_replay_shows_live_counters() -> Result<()> {
    let work = ScratchDir::new("ctl-one")?;
    let w = work.path();
    let control = w.join("c.sock");
    let mut sensor = start_sensor(w, &paced_capture()?, &control, &["--speed", "10"])?;
    let mut frames = 0;
    wait_for("frames in the status", TIMEOUT, || {
        ensure!(
            sensor.poll()?.is_none(),
            "the sensor ended before being watched"
        );
        let json: Value = serde_json::from_str(&ctl_ok(&control, &["status", "--json"])?)?;
        frames = num(&json, "frames")?;
        Ok(frames > 0)
    })?;
    ensure!(
        sensor.poll()?.is_none(),
        "the counters appeared only at the end"
    );
    sensor.expect_code(0, TIMEOUT)?;
    let err = sensor.stderr();
    let total: u64 = err
        .lines()
        .find(|l| l.starts_with("mos-sensor: ") && l.contains(" frames (") && l.contains(" TCP, "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no frame count in the sensor's summary:\n{err}"))?;
    ensure!(frames < total, "{frames} of {total} frames while running");
    Ok(())
}

#[test]
fn a_user_the_sensor_does_not_allow_gets_a_permission_error() -> Result<()> {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test runs mos-ctl as uid 65534 and must run as root"
    );
    let work = ScratchDir::new("ctl-users")?;
    let w = work.path();
    open_to_other_users(w)?;
    let exe = copy_for_other_users(&bin("mos-ctl")?, w)?;
    let control = w.join("c.sock");
    let mut sensor = start_sensor(w, &paced_capture()?, &control, &["--wait-analyzers", "1"])?;
    let as_nobody = |groups: &[&str]| -> Result<Output> {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", "65534", "--regid", "65534"]);
        if groups.is_empty() {
            c.arg("--clear-groups");
        } else {
            c.arg("--groups").arg(groups.join(","));
        }
        c.arg(&exe).arg("--control").arg(&control).arg("status");
        c.output().context("running setpriv")
    };
    // The socket (mode 0660, group root) keeps uid 65534 out: the error names the group.
    let out = as_nobody(&[])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1), "{out:?}");
    ensure!(
        err.contains("permission denied") && err.contains("group \"root\" (gid 0)"),
        "{err}"
    );
    ensure!(err.trim_end().lines().count() == 1, "{err}");
    // Through the socket's group it connects, and the sensor refuses it (the same check as
    // an analyzer's attach).
    let out = as_nobody(&["0"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1), "{out:?}");
    ensure!(
        err.contains("permission denied")
            && err.contains("does not answer uid 65534")
            && err.contains("--allow-user and --allow-group"),
        "{err}"
    );
    ensure!(out.stdout.is_empty(), "{out:?}");
    // The sensor is still waiting for its analyzer: let one attach so that it finishes.
    ensure!(sensor.poll()?.is_none(), "{}", tail(&sensor.stderr()));
    let mut probe = analyzer(w, "mos-test-analyzer", &[&"--control", &control, &"probe"])?;
    probe.expect_code(0, TIMEOUT)?;
    sensor.expect_code(0, TIMEOUT)?;
    Ok(())
}

#[test]
fn a_metrics_address_in_use_fails_the_start_clearly() -> Result<()> {
    let work = ScratchDir::new("ctl-bind")?;
    let w = work.path();
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    let control = w.join("c.sock");
    let out = ctl(&control, &["metrics", "--listen", &addr])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1), "{out:?}");
    ensure!(
        err.starts_with(&format!(
            "mos-ctl: error: cannot listen for metrics at {addr}: "
        )),
        "{err}"
    );
    ensure!(err.lines().count() == 1, "{err}");
    // Without a sensor, printing them: the same clear error as after one ends.
    let out = ctl(&control, &["metrics"])?;
    ensure!(out.status.code() == Some(1), "{out:?}");
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("is mos-sensor running?"),
        "{out:?}"
    );
    Ok(())
}

/// A stand-in for the sensor's control socket: answers each status request with a report
/// whose frame count is the number of requests so far. Stops, and removes the socket, when
/// dropped.
struct FakeSensor {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeSensor {
    fn start(path: &Path, asked: Arc<AtomicU64>) -> Result<FakeSensor> {
        let l = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        rustix::net::bind(&l, &SocketAddrUnix::new(path)?)?;
        rustix::net::listen(&l, 64)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok(c) = rustix::net::accept_with(&l, SocketFlags::CLOEXEC) else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let mut buf = [0u8; 256];
                if rustix::net::recv(&c, &mut buf[..], rustix::net::RecvFlags::empty()).is_err() {
                    continue;
                }
                let n = asked.fetch_add(1, Ordering::Relaxed) + 1;
                let report = StatusReport {
                    frames: n,
                    ..Default::default()
                };
                let _ = rustix::net::send(
                    &c,
                    &encode(&SensorMsg::Status(Box::new(report))),
                    rustix::net::SendFlags::NOSIGNAL,
                );
            }
        });
        Ok(FakeSensor {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for FakeSensor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether the server closed `s` (end of file or reset) within `limit`.
fn closed_within(s: &mut std::net::TcpStream, limit: Duration) -> Result<bool> {
    s.set_read_timeout(Some(limit))?;
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(true),
            // A 408 answer before the close is fine.
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(false)
            }
            Err(_) => return Ok(true),
        }
    }
}

#[test]
fn the_metrics_server_answers_past_idle_and_slow_clients_and_spares_the_sensor() -> Result<()> {
    let work = ScratchDir::new("ctl-http")?;
    let w = work.path();
    let control = w.join("c.sock");
    let asked = Arc::new(AtomicU64::new(0));
    let fake = FakeSensor::start(&control, asked.clone())?;
    let (mut server, addr) = metrics_server(w, &control)?;

    // One client connects and sends nothing; another sends a request head a byte at a time
    // and never finishes it.
    let mut idle = std::net::TcpStream::connect(&addr)?;
    let mut slow = std::net::TcpStream::connect(&addr)?;
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")?;
    let trickle = {
        let mut s = slow.try_clone()?;
        std::thread::spawn(move || {
            for _ in 0..100 {
                if s.write_all(b"X").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };

    // Meanwhile a scrape is answered promptly, and many scrapes cost the sensor one request
    // per second at most.
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let a = addr.clone();
    std::thread::spawn(move || tx.send(http_get(&a, "/metrics").map_err(|e| format!("{e:#}"))));
    let (status, headers, body) = rx
        .recv_timeout(Duration::from_secs(5))
        .context("no answer within 5 s while an idle and a slow client were connected")?
        .map_err(anyhow::Error::msg)?;
    ensure!(status == "HTTP/1.1 200 OK", "{status}");
    ensure!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    check_exposition(&body)?;
    let scrapes: Vec<_> = (0..20)
        .map(|_| {
            let a = addr.clone();
            std::thread::spawn(move || http_get(&a, "/metrics"))
        })
        .collect();
    for t in scrapes {
        let (status, _, body) = t
            .join()
            .map_err(|_| anyhow::anyhow!("a scrape panicked"))??;
        ensure!(status == "HTTP/1.1 200 OK", "{status}");
        check_exposition(&body)?;
    }
    let n = asked.load(Ordering::Relaxed);
    let took = started.elapsed();
    ensure!(
        n >= 1 && n <= 1 + took.as_secs(),
        "21 scrapes in {took:?} asked the sensor {n} times"
    );
    let (status, _, body) = http_get(&addr, "/")?;
    ensure!(status.starts_with("HTTP/1.1 404"), "{status}: {body}");

    // The idle and the slow client are closed once their time to send a request is up.
    ensure!(
        closed_within(&mut idle, TIMEOUT)?,
        "the idle connection is still open"
    );
    ensure!(
        closed_within(&mut slow, TIMEOUT)?,
        "the slow connection is still open"
    );
    trickle
        .join()
        .map_err(|_| anyhow::anyhow!("the slow client panicked"))?;

    // The sensor goes away: 503 with the reason on one line, and the server goes on.
    drop(fake);
    wait_for("a 503 once the sensor is gone", TIMEOUT, || {
        Ok(http_get(&addr, "/metrics")?.0 == "HTTP/1.1 503 Service Unavailable")
    })?;
    let (_, _, body) = http_get(&addr, "/metrics")?;
    ensure!(
        body.contains(&format!("no sensor listening at {}", control.display()))
            && body.trim_end().lines().count() == 1,
        "{body}"
    );
    let _fake = FakeSensor::start(&control, asked.clone())?;
    wait_for("a 200 once the sensor is back", TIMEOUT, || {
        Ok(http_get(&addr, "/metrics")?.0 == "HTTP/1.1 200 OK")
    })?;
    ensure!(server.poll()?.is_none(), "{}", server.stderr());
    assert_no_panic(&server)?;
    let err = server.stderr();
    ensure!(
        err.contains("answering 503") && err.contains("the sensor answers again"),
        "{err}"
    );
    Ok(())
}

/// A bound, listening socket that nobody accepts on.
fn never_accepting(path: &Path) -> Result<OwnedFd> {
    let l = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::bind(&l, &SocketAddrUnix::new(path)?)?;
    rustix::net::listen(&l, 0)?;
    Ok(l)
}

#[test]
fn mos_ctl_gives_up_on_a_socket_nobody_accepts_on_after_its_timeout() -> Result<()> {
    let work = ScratchDir::new("ctl-timeout")?;
    let w = work.path();
    let control = w.join("c.sock");
    let _listener = never_accepting(&control)?;
    // `mos-ctl --timeout 1 ARGS` must end within 2 s with one line.
    let run = |what: &str, args: &[&str]| -> Result<String> {
        let mut c = cmd(
            &bin("mos-ctl")?,
            &[&"--control", &control, &"--timeout", &"1"],
        );
        c.args(args);
        let mut p = Proc::spawn(&format!("ctl-{what}"), c, w)?;
        let st = p.wait(Duration::from_secs(2))?;
        let err = p.stderr();
        ensure!(st.code() == Some(1), "{what}: {st}: {err}");
        ensure!(err.lines().count() == 1, "{what}: {err}");
        Ok(err)
    };
    // Room in its queue: the connect succeeds and no answer comes.
    let err = run("answer", &["status"])?;
    ensure!(
        err.contains(&format!(
            "the sensor at {} did not answer within 1 s",
            control.display()
        )),
        "{err}"
    );
    // Its queue full (of connections of ours): the connect itself would wait.
    let mut held = Vec::new();
    for _ in 0..64 {
        let s = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        if rustix::net::connect(&s, &SocketAddrUnix::new(&control)?).is_err() {
            break;
        }
        held.push(s);
    }
    for args in [&["status"][..], &["status", "--json"], &["metrics"]] {
        let err = run("connect", args)?;
        ensure!(
            err.contains("did not take the connection within 1 s"),
            "{args:?}: {err}"
        );
    }
    // The timeout is range-checked.
    for bad in ["0", "-1", "nan", "inf", "86401", "soon"] {
        let out = ctl(&control, &["--timeout", bad, "status"])?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(out.status.code() == Some(1), "--timeout {bad}: {out:?}");
        ensure!(
            err.lines().next().is_some_and(|l| l.contains("--timeout")),
            "--timeout {bad}: {err}"
        );
    }
    Ok(())
}
