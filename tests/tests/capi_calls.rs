//! libmos's calls from C, family by family: the programs of `tests/c/` (see its README) are
//! compiled with `gcc -std=c99 -Wall -Wextra -Werror` against `capi/include` and
//! `target/<profile>/libmos.so`, and run as analyzers of a real `mos-sensor --pcap` replaying
//! corpus captures. Each program checks what it can itself (its `FAIL ...` lines fail the
//! test) and prints facts that are compared here with independent data: the sensor's own
//! `--dump` of the same run (addresses, stream bytes, ISNs), tcpdump's reading of the capture,
//! the capture's timestamps, and the Rust client library attached beside it.
//!
//! The isolation tests run a C analyzer that exits, blocks or crashes in a callback beside a
//! Rust `mos-dump` on the same lossless replay: the sensor goes on and exits 0, and
//! `mos-dump` writes what the sensor's `--dump` writes.
//!
//! Needs gcc, tcpdump, the workspace's binaries and libmos.so built in the tests' profile
//! (`cargo build --release --workspace --bins && cargo build --release -p mos-capi`), and
//! the corpus (`MOS_CORPUS_DIR`). Every child is killed if its test fails, and every wait has
//! a deadline.

use anyhow::{bail, ensure, Context, Result};
use mos_client::{AttachOptions, EventKind, EventMask, FlowId, Hook, Mos, Side, MOS_SIDE_BOTH};
use mos_sensor::capture::{CaptureBackend, FileCapture};
use mos_tests::dumps::same_tree;
use mos_tests::flows::{parse_flows, FlowRecord};
use mos_tests::locate::{bin, corpus_dir, profile_dir, sensor_bin, workspace_root};
use mos_tests::procs::{assert_no_panic, cmd, tail, wait_for, wait_for_socket, Proc};
use mos_tests::runner::ScratchDir;
use sha1::{Digest, Sha1};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The longest any process of these tests may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The general-purpose capture: 30 connections (19 on port 80, 8 picked up midstream, 3
/// without payload), 342 UDP packets, no byte lost.
const GENERAL: &str = "ndpi__1kxun.pcapng";
/// IPv6 connections (FTP control and data).
const IPV6: &str = "zeek__ftp__ipv6.pcap";
/// Many out-of-order segments (held as fragments until the holes fill).
const OUT_OF_ORDER: &str = "ndpi__no_sni.pcap";
/// For the isolation tests: 29 connections, 1520 frames.
const ISOLATION: &str = "suricata-verify__smb-filename__input.pcap";

fn pcap(name: &str) -> Result<PathBuf> {
    Ok(corpus_dir()?.join("pcaps").join(name))
}

// ---------------------------------------------------------------------------------------------
// Building and running the C programs

/// Runs a tool to completion in `dir`; its stdout, or an error with its output.
fn run_tool(dir: &Path, name: &str, program: &Path, args: &[&dyn AsRef<OsStr>]) -> Result<String> {
    let mut p = Proc::spawn(name, cmd(program, args), dir)
        .with_context(|| format!("starting {} (is it installed?)", program.display()))?;
    let st = p.wait(TIMEOUT)?;
    ensure!(
        st.success(),
        "{name} exited with {st}; stderr:\n{}",
        tail(&p.stderr())
    );
    Ok(p.stdout())
}

/// Compiles `tests/c/PROG.c` into `work/PROG`, linked against the tests' profile's
/// libmos.so (found at run time through `work/lib/libmos.so.0`, the library's soname).
fn build(work: &Path, prog: &str) -> Result<PathBuf> {
    let profile = profile_dir()?;
    let lib = profile.join("libmos.so");
    ensure!(
        lib.is_file(),
        "{} not found: build it with `cargo build -p mos-capi` in the tests' profile \
         (--release for `cargo test --release`)",
        lib.display()
    );
    let libdir = work.join("lib");
    std::fs::create_dir_all(&libdir)?;
    let link = libdir.join("libmos.so.0");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(&lib, &link)?;
    }
    let root = workspace_root();
    let src = root.join("tests").join("c").join(format!("{prog}.c"));
    let exe = work.join(prog);
    let rpath = format!("-Wl,-rpath,{}", libdir.display());
    run_tool(
        work,
        &format!("gcc-{prog}"),
        Path::new("gcc"),
        &[
            &"-std=c99",
            &"-Wall",
            &"-Wextra",
            &"-Werror",
            &"-pthread",
            &"-I",
            &root.join("capi").join("include"),
            &"-I",
            &root.join("tests").join("c"),
            &src,
            &"-o",
            &exe,
            &"-L",
            &profile,
            &"-lmos",
            &rpath,
        ],
    )
    .with_context(|| format!("compiling {}", src.display()))?;
    Ok(exe)
}

/// Starts a C program as an analyzer of the sensor at `control` (`MOS_CONTROL`), with
/// `env` added.
fn c_prog(
    work: &Path,
    exe: &Path,
    name: &str,
    args: &[&str],
    control: Option<&Path>,
    env: &[(&str, &str)],
) -> Result<Proc> {
    let mut c = cmd(exe, &[]);
    c.args(args);
    c.env_remove("MOS_CONTROL");
    if let Some(p) = control {
        c.env("MOS_CONTROL", p);
    }
    c.env("MOS_ATTACH_WAIT", "10");
    for (k, v) in env {
        c.env(k, v);
    }
    Proc::spawn(name, c, work)
}

/// Starts `mos-sensor --pcap PCAP --control CONTROL EXTRA...` and waits for its socket.
fn start_sensor(work: &Path, pcap: &Path, control: &Path, extra: &[&str]) -> Result<Proc> {
    let mut c = cmd(&sensor_bin()?, &[&"--pcap", &pcap, &"--control", &control]);
    c.args(extra);
    let mut s = Proc::spawn("sensor", c, work)?;
    wait_for_socket(&mut s, control, TIMEOUT)?;
    Ok(s)
}

/// The `FAIL ...` lines a C program printed.
fn fails(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("FAIL ")).collect()
}

/// Waits for a C program; fails with its FAIL lines unless it checked everything it meant
/// to (`done failures=0`), exited 0 and printed an `errno LABEL ...` line for each of
/// `labels` and each of the `lines`. Its stdout.
fn finish_c(p: &mut Proc, deadline: Instant, labels: &[&str], lines: &[&str]) -> Result<String> {
    let st = p.wait_until(deadline)?;
    let out = p.stdout();
    let f = fails(&out);
    ensure!(
        f.is_empty(),
        "{}: {} checks failed:\n{}\nstderr:\n{}",
        p.name(),
        f.len(),
        f.iter().take(30).copied().collect::<Vec<_>>().join("\n"),
        tail(&p.stderr())
    );
    ensure!(
        st.success() && out.lines().any(|l| l == "done failures=0"),
        "{} exited with {st} without finishing its checks; stdout:\n{}\nstderr:\n{}",
        p.name(),
        tail(&out),
        tail(&p.stderr())
    );
    assert_no_panic(p)?;
    let missing: Vec<_> = labels
        .iter()
        .filter(|l| !out.lines().any(|o| o.starts_with(&format!("errno {l} "))))
        .collect();
    ensure!(
        missing.is_empty(),
        "{}: no errno check printed for {missing:?}",
        p.name()
    );
    for l in lines {
        ensure!(
            out.lines().any(|o| o == *l),
            "{}: no {l:?} line in:\n{}",
            p.name(),
            tail(&out)
        );
    }
    Ok(out)
}

/// Waits for the sensor: exit 0, no panic.
fn finish_sensor(s: &mut Proc, deadline: Instant) -> Result<String> {
    let st = s.wait_until(deadline)?;
    ensure!(
        st.code() == Some(0),
        "the sensor exited with {st}; stderr:\n{}",
        tail(&s.stderr())
    );
    assert_no_panic(s)?;
    Ok(s.stderr())
}

// ---------------------------------------------------------------------------------------------
// What the programs print

/// The `key=value` fields of a line (after its tag).
fn kv(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .skip(1)
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The fields of every line tagged `tag`.
fn tagged(out: &str, tag: &str) -> Vec<BTreeMap<String, String>> {
    out.lines()
        .filter(|l| l.split_whitespace().next() == Some(tag))
        .map(kv)
        .collect()
}

fn one(out: &str, tag: &str) -> Result<BTreeMap<String, String>> {
    match tagged(out, tag).as_slice() {
        [f] => Ok(f.clone()),
        other => bail!("{} {tag:?} lines in:\n{}", other.len(), tail(out)),
    }
}

fn field<'a>(f: &'a BTreeMap<String, String>, key: &str) -> Result<&'a str> {
    f.get(key)
        .map(String::as_str)
        .with_context(|| format!("no {key} in {f:?}"))
}

fn num(f: &BTreeMap<String, String>, key: &str) -> Result<i64> {
    field(f, key)?
        .parse()
        .with_context(|| format!("{key} in {f:?}"))
}

fn addr(s: &str) -> Result<SocketAddr> {
    s.parse()
        .with_context(|| format!("{s:?} is not an address"))
}

/// A connection's two endpoints.
type Conn = (SocketAddr, SocketAddr);

fn conn_of(f: &BTreeMap<String, String>) -> Result<Conn> {
    Ok((addr(field(f, "client")?)?, addr(field(f, "server")?)?))
}

/// How many times each connection appears.
fn multiset(conns: impl IntoIterator<Item = Conn>) -> BTreeMap<Conn, usize> {
    let mut m = BTreeMap::new();
    for c in conns {
        *m.entry(c).or_insert(0) += 1;
    }
    m
}

// ---------------------------------------------------------------------------------------------
// The sensor's dump

struct Dump {
    dir: PathBuf,
    records: Vec<FlowRecord>,
}

impl Dump {
    fn read(dir: &Path) -> Result<Dump> {
        let path = dir.join("flows.jsonl");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(Dump {
            dir: dir.to_path_buf(),
            records: parse_flows(&text)?,
        })
    }

    fn conn(r: &FlowRecord) -> Result<Conn> {
        Ok((addr(&r.client)?, addr(&r.server)?))
    }

    fn conns(&self) -> Result<BTreeMap<Conn, usize>> {
        Ok(multiset(
            self.records
                .iter()
                .map(Dump::conn)
                .collect::<Result<Vec<_>>>()?,
        ))
    }

    /// The record of a connection that appears once.
    fn record(&self, c: &Conn) -> Result<&FlowRecord> {
        let mut it = self
            .records
            .iter()
            .filter(|r| Dump::conn(r).is_ok_and(|k| k == *c));
        let r = it
            .next()
            .with_context(|| format!("{c:?} is not in the dump"))?;
        ensure!(it.next().is_none(), "{c:?} is in the dump twice");
        Ok(r)
    }

    /// A stream file's bytes (none when there is no file).
    fn stream(&self, file: &Option<String>) -> Result<Vec<u8>> {
        match file {
            None => Ok(Vec::new()),
            Some(f) => std::fs::read(self.dir.join(f)).with_context(|| format!("reading {f}")),
        }
    }

    /// Fails unless no byte of the capture was lost (the programs' checks assume it).
    fn expect_nothing_lost(&self) -> Result<()> {
        let lost: Vec<_> = self
            .records
            .iter()
            .filter(|r| r.c2s_lost + r.s2c_lost > 0)
            .map(|r| format!("{} {}", r.client, r.server))
            .collect();
        ensure!(
            lost.is_empty(),
            "the capture lost bytes in {lost:?}: pick one without (a peek of one lost byte \
             reads as 'no data' in mOS's API)"
        );
        Ok(())
    }
}

fn sha1_hex(data: &[u8]) -> String {
    hex::encode(Sha1::digest(data))
}

fn same_conns(what: &str, got: &BTreeMap<Conn, usize>, want: &BTreeMap<Conn, usize>) -> Result<()> {
    if got == want {
        return Ok(());
    }
    let missing: Vec<_> = want.iter().filter(|(c, n)| got.get(c) != Some(n)).collect();
    let extra: Vec<_> = got.iter().filter(|(c, n)| want.get(c) != Some(n)).collect();
    bail!(
        "{what}: {} connections seen, {} expected; expected but not seen as often: {missing:?}; \
         seen but not expected as often: {extra:?}",
        got.values().sum::<usize>(),
        want.values().sum::<usize>()
    )
}

/// One C program against a replay of `capture` (sensor flags `sensor` besides `--dump`).
struct Run<'a> {
    capture: &'a str,
    sensor: &'a [&'a str],
    prog: &'a str,
    args: &'a [&'a str],
    env: &'a [(&'a str, &'a str)],
    labels: &'a [&'a str],
    lines: &'a [&'a str],
}

/// Runs `r`: the scratch directory (holding the dump), the program's stdout, and the dump.
fn run_c(r: &Run<'_>) -> Result<(ScratchDir, String, Dump)> {
    let work = ScratchDir::new(&format!("capi-{}-{}", r.prog, r.capture))?;
    let w = work.path();
    let exe = build(w, r.prog)?;
    let (control, reference) = (w.join("c.sock"), w.join("ref"));
    let mut extra = vec![
        "--wait-analyzers",
        "1",
        "--dump",
        reference.to_str().context("path")?,
    ];
    extra.extend_from_slice(r.sensor);
    let deadline = Instant::now() + TIMEOUT;
    let mut sensor = start_sensor(w, &pcap(r.capture)?, &control, &extra)?;
    let mut p = c_prog(w, &exe, r.prog, r.args, Some(&control), r.env)?;
    let out = finish_c(&mut p, deadline, r.labels, r.lines)
        .with_context(|| format!("{} on {}", r.prog, r.capture))?;
    finish_sensor(&mut sensor, deadline)?;
    let dump = Dump::read(&reference)?;
    Ok((work, out, dump))
}

// ---------------------------------------------------------------------------------------------
// t_context

#[test]
fn mtcp_init_without_a_sensor_fails_with_an_errno() -> Result<()> {
    let work = ScratchDir::new("capi-nosensor")?;
    let w = work.path();
    let exe = build(w, "t_context")?;
    let missing = w.join("missing.sock");
    let mut p = c_prog(
        w,
        &exe,
        "t_context",
        &["nosensor"],
        Some(&missing),
        &[("MOS_ATTACH_WAIT", "0")],
    )?;
    let out = finish_c(&mut p, Instant::now() + TIMEOUT, &[], &[])?;
    let f = one(&out, "init")?;
    assert_eq!(field(&f, "ret")?, "-1", "{out}");
    // No socket file: ENOENT, as the client library says it.
    assert_eq!(field(&f, "errno")?, "ENOENT", "{out}");
    Ok(())
}

/// `mtcp_init` with an mOS configuration file naming the control socket (no `MOS_CONTROL`),
/// `mtcp_getconf` against the sensor's settings, `mtcp_setconf` to 2 contexts for a sensor
/// of 3 workers, and both contexts together seeing every connection exactly once (context
/// `cpu` takes workers `w % 2 == cpu`).
#[test]
fn two_contexts_on_three_workers_see_every_connection_once() -> Result<()> {
    let work = ScratchDir::new("capi-contexts")?;
    let w = work.path();
    let exe = build(w, "t_context")?;
    let (control, reference) = (w.join("c.sock"), w.join("ref"));
    let conf = w.join("mos.conf");
    std::fs::write(
        &conf,
        format!(
            "# mOS's configuration, as a monitoring program ships it\n\
             application {{\n\ttype = monitor\n\trun = t_context\n\tcore_mask = 0x0003\n}}\n\
             mos {{\n\tforward = 0\n\tnb_mem_channels = 4\n\tnetdev {{\n\t\tdpdk0 0x0003\n\t}}\n\
             \trmem_size = 8192\n\tcontrol = {}\n}}\n",
            control.display()
        ),
    )?;
    let deadline = Instant::now() + TIMEOUT;
    let mut sensor = start_sensor(
        w,
        &pcap(GENERAL)?,
        &control,
        &[
            "--workers",
            "3",
            "--wait-analyzers",
            "2",
            "--idle-timeout",
            "77",
            "--stream-max-kib",
            "512",
            "--dump",
            reference.to_str().context("path")?,
        ],
    )?;
    // The sensor's settings as the Rust library reads them (an attachment that never says
    // it is ready: the sensor does not count it).
    let rust_conf = Mos::attach(&AttachOptions {
        control: control.clone(),
        name: "capi-conf-probe".into(),
        wait: Duration::from_secs(10),
        ..AttachOptions::default()
    })?
    .getconf();
    let conf_arg = conf.to_str().context("path")?;
    let mut p = c_prog(w, &exe, "t_context", &["run", conf_arg, "2"], None, &[])?;
    let out = finish_c(
        &mut p,
        deadline,
        &[
            "getconf_null",
            "setconf_null",
            "get_uctx_other_context",
            "peek_other_context",
            "ppeek_other_context",
            "getsockopt_other_context",
            "setsockopt_other_context",
            "getlastpkt_other_context",
            "setlastpkt_other_context_enotsup",
        ],
        &["signal a=0 b=1"],
    )?;
    finish_sensor(&mut sensor, deadline)?;

    // mtcp_getconf: the sensor's settings.
    let c = one(&out, "conf")?;
    assert_eq!(num(&c, "num_cores")?, 3, "{c:?}");
    assert_eq!(num(&c, "cpu_mask")?, 7, "{c:?}");
    assert_eq!(num(&c, "tcp_timeout")?, 77, "{c:?}");
    assert_eq!(num(&c, "rcvbuf_size")?, 512 * 1024, "{c:?}");
    assert_eq!(
        num(&c, "rcvbuf_size")? as u64,
        rust_conf.stream_max_bytes,
        "{c:?}"
    );
    assert_eq!(
        num(&c, "max_concurrency")? as u64,
        rust_conf.max_flows_per_worker,
        "{c:?}"
    );
    assert_eq!(
        num(&c, "max_num_buffers")? as u64,
        rust_conf.buffers_per_worker,
        "{c:?}"
    );
    assert_eq!(num(&c, "sndbuf_size")?, 0, "{c:?}");
    let c2 = one(&out, "conf2")?;
    assert_eq!(
        (num(&c2, "num_cores")?, num(&c2, "cpu_mask")?),
        (2, 3),
        "{c2:?}"
    );

    // Every connection once, over both contexts; each context had some.
    let dump = Dump::read(&reference)?;
    let lines = tagged(&out, "conn");
    let seen = multiset(lines.iter().map(conn_of).collect::<Result<Vec<_>>>()?);
    same_conns("two contexts", &seen, &dump.conns()?)?;
    for cpu in 0..2 {
        let n = lines
            .iter()
            .filter(|f| f.get("cpu").map(String::as_str) == Some(&cpu.to_string()))
            .count();
        ensure!(n > 0, "context {cpu} saw no connection:\n{out}");
        let ctx = tagged(&out, "context");
        ensure!(
            ctx.iter()
                .any(|f| num(f, "cpu").ok() == Some(cpu) && num(f, "conns").ok() == Some(n as i64)),
            "context {cpu}'s count is not its conn lines' ({n}): {ctx:?}"
        );
    }
    // The file's other keys were ignored, and it said so once.
    let err = p.stderr();
    let said: Vec<_> = err.lines().filter(|l| l.contains("ignoring")).collect();
    ensure!(
        said.len() == 1 && said[0].contains("core_mask") && said[0].contains("nb_mem_channels"),
        "expected one line naming the ignored keys, got:\n{err}"
    );
    println!(
        "2 contexts on 3 workers: {} connections, each once",
        lines.len()
    );
    Ok(())
}

/// A SIGTERM handler (installed with `mtcp_register_signal`) calls `mtcp_destroy_context`,
/// as mOS's midstat does: `mtcp_app_join` returns, the program ends cleanly, and the
/// sensor, detaching it, finishes its replay.
#[test]
fn a_signal_handler_destroys_the_context_and_app_join_returns() -> Result<()> {
    let work = ScratchDir::new("capi-sigdestroy")?;
    let w = work.path();
    let exe = build(w, "t_context")?;
    let control = w.join("c.sock");
    let deadline = Instant::now() + TIMEOUT;
    // About 5 s of replay.
    let mut sensor = start_sensor(
        w,
        &pcap(GENERAL)?,
        &control,
        &["--wait-analyzers", "1", "--speed", "10"],
    )?;
    let mut p = c_prog(w, &exe, "t_context", &["sigdestroy"], Some(&control), &[])?;
    wait_for("the program's first connection", TIMEOUT, || {
        Ok(p.stdout().lines().any(|l| l.starts_with("conn ")) || p.poll()?.is_some())
    })?;
    ensure!(
        sensor.poll()?.is_none(),
        "the replay ended before the signal: make it slower"
    );
    p.signal(rustix::process::Signal::TERM)?;
    let out = finish_c(&mut p, deadline, &[], &[])?;
    let j = one(&out, "joined")?;
    assert_eq!(num(&j, "terms")?, 1, "{out}");
    let serr = finish_sensor(&mut sensor, deadline)?;
    // The sensor detached the context before its replay ended.
    let detach = serr
        .lines()
        .position(|l| l.contains("detached") && l.contains(&format!("(pid {})", p.pid())))
        .with_context(|| {
            format!(
                "the sensor did not say it detached pid {}:\n{serr}",
                p.pid()
            )
        })?;
    let summary = serr
        .lines()
        .position(|l| l.starts_with("mos-sensor: published "))
        .context("no publication summary")?;
    ensure!(detach < summary, "detached only at the end:\n{serr}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// t_socket

/// tcpdump's frames for `expr` in `capture`: (capture time in ns, bytes).
fn tcpdump_frames(dir: &Path, capture: &Path, expr: &str) -> Result<Vec<(u64, Vec<u8>)>> {
    let mut p = Proc::spawn(
        "tcpdump",
        cmd(Path::new("tcpdump"), &[&"-r", &capture, &"-w", &"-", &expr]),
        dir,
    )
    .context("starting tcpdump (scripts/setup.sh installs it)")?;
    let st = p.wait(TIMEOUT)?;
    ensure!(st.success(), "tcpdump {expr:?} failed: {}", p.stderr());
    let mut cap = FileCapture::open(dir.join("tcpdump.stdout"))?;
    let mut out = Vec::new();
    while let Some(f) = cap.next_packet()? {
        out.push((f.ts_ns, f.data.to_vec()));
    }
    Ok(out)
}

/// `mtcp_socket`, `mtcp_close`, `mtcp_bind_monitor_filter` and `mtcp_register_callback`:
/// every errno, the 32-socket pool, unregistering with a NULL callback, closing a socket
/// with callbacks, a SYN filter against the dump's connections and a raw filter against
/// tcpdump.
#[test]
fn monitoring_sockets_filters_and_callbacks() -> Result<()> {
    let (_work, out, dump) = run_c(&Run {
        capture: GENERAL,
        // Slow enough for the second thread to use a live connection's per-flow socket.
        sensor: &["--speed", "20"],
        prog: "t_socket",
        args: &["tcp port 80", "udp"],
        env: &[],
        labels: &[
            "socket_null_mctx",
            "socket_af_unix",
            "socket_type_99",
            "socket_type_negative",
            "socket_type_unused",
            "socket_type_stream",
            "socket_pool_full",
            "socket_pool_full_raw",
            "close_twice",
            "close_bad_id",
            "close_negative",
            "bind_closed",
            "register_closed",
            "bind_null_mctx",
            "bind_bad_id",
            "bind_negative_id",
            "bind_bad_syn_expr",
            "bind_bad_orphan_expr",
            "bind_bad_raw_expr",
            "register_bad_id",
            "register_negative_id",
            "bind_per_flow_socket",
        ],
        lines: &["pool sockets=32", "unregistered calls=0 closed calls=0"],
    })?;
    // Socket B: every connection once.
    let all = multiset(
        tagged(&out, "all")
            .iter()
            .map(conn_of)
            .collect::<Result<Vec<_>>>()?,
    );
    same_conns("unfiltered socket", &all, &dump.conns()?)?;
    // Socket F: the connections of port 80.
    let want: Vec<Conn> = dump
        .records
        .iter()
        .map(Dump::conn)
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|(c, s)| c.port() == 80 || s.port() == 80)
        .collect();
    ensure!(
        !want.is_empty() && want.len() < dump.records.len(),
        "pick another capture"
    );
    let filtered = multiset(
        tagged(&out, "filtered")
            .iter()
            .map(conn_of)
            .collect::<Result<Vec<_>>>()?,
    );
    same_conns(
        "socket filtered with 'tcp port 80'",
        &filtered,
        &multiset(want),
    )?;
    // Socket R: tcpdump's UDP packets.
    let scratch = ScratchDir::new("capi-socket-tcpdump")?;
    let udp = tcpdump_frames(scratch.path(), &pcap(GENERAL)?, "udp")?;
    let raw = one(&out, "raw")?;
    ensure!(!udp.is_empty(), "the capture has no UDP packet");
    assert_eq!(num(&raw, "packets")? as usize, udp.len(), "{out}");
    println!(
        "t_socket: {} connections, {} of port 80, {} raw UDP packets",
        all.values().sum::<usize>(),
        filtered.values().sum::<usize>(),
        udp.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// t_events

/// `mtcp_define_event` (a filter with an argument, a chain), `mtcp_alloc_event` and
/// `mtcp_raise_event` from a filter and from a callback; the server-side event's callbacks
/// read every byte each client sent, as the dump has them.
#[test]
fn user_defined_events_fire_as_their_filters_say() -> Result<()> {
    let (_work, out, dump) = run_c(&Run {
        capture: GENERAL,
        sensor: &[],
        prog: "t_events",
        args: &[],
        env: &[],
        labels: &["register_undefined_event"],
        lines: &[
            "alloc_event_undefined ok",
            "define_event_invalid ok",
            "raise_nonallocated ok",
        ],
    })?;
    dump.expect_nothing_lost()?;
    let udes = tagged(&out, "ude");
    let seen = multiset(udes.iter().map(conn_of).collect::<Result<Vec<_>>>()?);
    same_conns("t_events", &seen, &dump.conns()?)?;
    for f in &udes {
        let r = dump.record(&conn_of(f)?)?;
        ensure!(
            num(f, "c2s_bytes")? as u64 == r.c2s_bytes,
            "{f:?}: read {} bytes in ude_svr's callbacks, the client sent {}",
            num(f, "c2s_bytes")?,
            r.c2s_bytes
        );
    }
    one(&out, "alloc_event_exhausted")?;
    let c = one(&out, "counts")?;
    for k in ["svr", "chain", "child", "child2"] {
        ensure!(num(&c, k)? > 0, "{k} never fired: {c:?}");
    }
    assert_eq!(num(&c, "never")?, 0, "{c:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// t_peek

fn check_peek(capture: &str) -> Result<usize> {
    let (_work, out, dump) = run_c(&Run {
        capture,
        sensor: &[],
        prog: "t_peek",
        args: &[],
        env: &[],
        labels: &[
            "peek_null_mctx",
            "peek_bad_id",
            "peek_negative_id",
            "peek_monitoring_socket",
            "peek_drained",
            "ppeek_null_mctx",
            "ppeek_bad_id",
            "ppeek_monitoring_socket",
            "ppeek_far_offset",
            "peek_buffer_off",
            "ppeek_buffer_off",
        ],
        lines: &[],
    })?;
    dump.expect_nothing_lost()?;
    let flows = tagged(&out, "flow");
    let seen = multiset(flows.iter().map(conn_of).collect::<Result<Vec<_>>>()?);
    same_conns(&format!("t_peek on {capture}"), &seen, &dump.conns()?)?;
    let mut bytes = 0u64;
    for f in &flows {
        let r = dump.record(&conn_of(f)?)?;
        for (dir, file, n) in [
            ("c2s", &r.c2s_file, r.c2s_bytes),
            ("s2c", &r.s2c_file, r.s2c_bytes),
        ] {
            let data = dump.stream(file)?;
            ensure!(
                data.len() as u64 == n,
                "the dump's {dir} file of {f:?} is not {n} bytes"
            );
            let (got_n, got_sha) = (
                num(f, &format!("{dir}_bytes"))? as u64,
                field(f, &format!("{dir}_sha1"))?,
            );
            ensure!(
                got_n == n && got_sha == sha1_hex(&data),
                "{capture} {f:?}: peek read {got_n} {dir} bytes (sha1 {got_sha}), the dump \
                 has {n} (sha1 {})",
                sha1_hex(&data)
            );
            assert_eq!(num(f, &format!("{dir}_lost"))?, 0, "{f:?}");
            bytes += n;
        }
    }
    ensure!(bytes > 0, "{capture}: no byte read");
    Ok(flows.len())
}

/// `mtcp_peek` (in pieces of 1 byte to 64 KiB) and `mtcp_ppeek` read each connection's two
/// streams exactly as the sensor's dump wrote them, IPv4 and IPv6; every errno of both.
#[test]
fn peek_and_ppeek_read_the_streams_the_dump_wrote() -> Result<()> {
    let a = check_peek(GENERAL)?;
    let b = check_peek(IPV6)?;
    println!("t_peek: {a} IPv4 and {b} IPv6 connections, both streams as dumped");
    Ok(())
}

/// A late reader of a sensor that does not wait (`--lossy`) and keeps 4 KiB of history:
/// `mtcp_peek` returns `-(bytes lost)` with `ENODATA` for bytes overwritten before it read
/// them, and then goes on after them; what it read before each loss is the dump's bytes (earlier losses as
/// zeros). Connections whose slot was reused before the reader came give `EBADF` (never
/// another connection's bytes), which the program counts.
#[test]
fn peek_reports_overwritten_bytes_as_lost() -> Result<()> {
    let (_work, out, dump) = run_c(&Run {
        capture: GENERAL,
        // (With --history-kib 0 the sensor's own dump loses bytes too.)
        sensor: &["--lossy", "--history-kib", "4", "--speed", "5"],
        prog: "t_peek",
        args: &["overrun"],
        env: &[],
        labels: &[],
        lines: &[],
    })?;
    dump.expect_nothing_lost()?;
    let lost = tagged(&out, "lost");
    ensure!(!lost.is_empty(), "no overrun:\n{}", tail(&out));
    // Per connection and side, the dumped stream with the losses so far zeroed.
    let mut streams: BTreeMap<(Conn, String), Vec<u8>> = BTreeMap::new();
    for f in &lost {
        let c = conn_of(f)?;
        let side = field(f, "side")?.to_string();
        let r = dump.record(&c)?;
        let data = match streams.entry((c, side.clone())) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(dump.stream(if side == "0" {
                    &r.s2c_file
                } else {
                    &r.c2s_file
                })?)
            }
        };
        let (at, n) = (num(f, "at")? as usize, num(f, "n")? as usize);
        ensure!(
            n > 0 && at + n <= data.len(),
            "{f:?}: past the stream ({} bytes)",
            data.len()
        );
        ensure!(
            sha1_hex(&data[..at]) == field(f, "read_sha1")?,
            "{f:?}: the bytes read before the loss are not the dump's"
        );
        data[at..at + n].fill(0);
    }
    // Connections read to their end: all their bytes, read or lost.
    for f in tagged(&out, "flow") {
        let r = dump.record(&conn_of(&f)?)?;
        for (dir, side, file, n) in [
            ("c2s", "1", &r.c2s_file, r.c2s_bytes),
            ("s2c", "0", &r.s2c_file, r.s2c_bytes),
        ] {
            let data = match streams.get(&(conn_of(&f)?, side.to_string())) {
                Some(d) => d.clone(),
                None => dump.stream(file)?,
            };
            ensure!(
                num(&f, &format!("{dir}_bytes"))? as u64 == n
                    && field(&f, &format!("{dir}_sha1"))? == sha1_hex(&data),
                "{f:?}: {dir} is not the dump's stream with its losses zeroed"
            );
        }
    }
    println!(
        "t_peek overrun: {} losses, bytes before each as dumped",
        lost.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// t_sockopt

/// What the Rust library attached beside the C program saw of each connection at its last
/// CONN_END: the two states and the TCP_STATE_CHANGE events (both hooks).
type States = BTreeMap<Conn, Vec<(i64, i64, i64)>>;

fn rust_states(control: PathBuf) -> std::thread::JoinHandle<Result<States>> {
    std::thread::spawn(move || -> Result<States> {
        let mut mos = Mos::attach(&AttachOptions {
            control,
            name: "capi-states".into(),
            wait: Duration::from_secs(10),
            ..AttachOptions::default()
        })?;
        let sock = mos.socket()?;
        let changes: Rc<RefCell<HashMap<FlowId, (i64, u32)>>> = Rc::default();
        let found: Rc<RefCell<States>> = Rc::default();
        let errors: Rc<RefCell<Vec<String>>> = Rc::default();
        for hook in [Hook::Rcv, Hook::Snd] {
            let ch = changes.clone();
            mos.register_callback(sock, EventMask::TCP_STATE_CHANGE, hook, move |_, ev| {
                if let Some(f) = ev.flow {
                    ch.borrow_mut().entry(f).or_default().0 += 1;
                }
            })?;
        }
        {
            let (ch, found, errors) = (changes.clone(), found.clone(), errors.clone());
            mos.register_callback(sock, EventMask::CONN_END, Hook::Null, move |ctx, ev| {
                let Some(f) = ev.flow else { return };
                if !matches!(ev.kind, EventKind::ConnEnd { .. }) {
                    return;
                }
                let mut ch = ch.borrow_mut();
                let e = ch.entry(f).or_default();
                e.1 += 1;
                if e.1 < 2 {
                    return;
                }
                let n = e.0;
                ch.remove(&f);
                let r = (|| -> mos_client::Result<(Conn, i64, i64)> {
                    let a = ctx.getpeername(f, MOS_SIDE_BOTH)?;
                    let cli = ctx.tcp_state(f, Side::Cli)?.code();
                    let svr = ctx.tcp_state(f, Side::Svr)?.code();
                    Ok(((a[0], a[1]), cli.into(), svr.into()))
                })();
                match r {
                    Ok((c, cli, svr)) => {
                        found.borrow_mut().entry(c).or_default().push((cli, svr, n))
                    }
                    Err(e) => errors.borrow_mut().push(format!("{f}: {e}")),
                }
            })?;
        }
        mos.run()?;
        let e = errors.borrow();
        ensure!(e.is_empty(), "the Rust analyzer: {e:?}");
        let found = found.borrow().clone();
        Ok(found)
    })
}

fn check_sockopt(capture: &str, frags_expected: bool) -> Result<(usize, usize)> {
    let work = ScratchDir::new(&format!("capi-sockopt-{capture}"))?;
    let w = work.path();
    let exe = build(w, "t_sockopt")?;
    let (control, reference) = (w.join("c.sock"), w.join("ref"));
    let deadline = Instant::now() + TIMEOUT;
    // A ring of two events: the sensor stays within two events of the slower analyzer, so
    // that out-of-order fragments are still held when the C program's PKT_IN callbacks look.
    let mut sensor = start_sensor(
        w,
        &pcap(capture)?,
        &control,
        &[
            "--wait-analyzers",
            "2",
            "--event-ring",
            "2",
            "--overlap",
            "first",
            "--dump",
            reference.to_str().context("path")?,
        ],
    )?;
    let rust = rust_states(control.clone());
    let mut p = c_prog(w, &exe, "t_sockopt", &["0"], Some(&control), &[])?;
    let out = finish_c(
        &mut p,
        deadline,
        &[
            "setsockopt_other_overlap",
            "setsockopt_unknown_overlap",
            "getsockopt_bad_id_setup",
            "setsockopt_bad_id_setup",
            "getsockopt_null_mctx",
            "getsockopt_bad_id",
            "getsockopt_negative_id",
            "getsockopt_unknown_level",
            "getsockopt_unknown_option",
            "getsockopt_timestamp",
            "getsockopt_monitoring_socket",
            "setsockopt_null_mctx",
            "setsockopt_bad_id",
            "setsockopt_unknown_level",
            "setsockopt_unknown_option",
            "setsockopt_seq_remap",
            "setsockopt_stop_mon_monitoring_socket",
        ],
        &["clibuf_zero ok"],
    )
    .with_context(|| format!("t_sockopt on {capture}"))?;
    finish_sensor(&mut sensor, deadline)?;
    let rust = rust
        .join()
        .map_err(|_| anyhow::anyhow!("the Rust analyzer's thread panicked"))??;
    let dump = Dump::read(&reference)?;
    dump.expect_nothing_lost()?;

    // MOS_TCP_STATE_*: the Rust library's states at the same moment, and as many changes.
    let states = tagged(&out, "state");
    let seen = multiset(states.iter().map(conn_of).collect::<Result<Vec<_>>>()?);
    same_conns(&format!("t_sockopt on {capture}"), &seen, &dump.conns()?)?;
    let mut c_states: States = BTreeMap::new();
    for f in &states {
        c_states.entry(conn_of(f)?).or_default().push((
            num(f, "cli")?,
            num(f, "svr")?,
            num(f, "changes")?,
        ));
    }
    for v in c_states.values_mut() {
        v.sort_unstable();
    }
    let mut rust = rust;
    for v in rust.values_mut() {
        v.sort_unstable();
    }
    if c_states != rust {
        let diff: Vec<_> = c_states
            .iter()
            .filter(|(c, v)| rust.get(c) != Some(v))
            .map(|(c, v)| format!("{c:?}: C (cli, svr, changes) {v:?}, Rust {:?}", rust.get(c)))
            .collect();
        bail!(
            "{capture}: the states differ from the Rust library's:\n{}",
            diff.join("\n")
        );
    }
    // Not a vacuous comparison: states changed.
    ensure!(
        states
            .iter()
            .any(|f| num(f, "changes").is_ok_and(|n| n > 0)),
        "{capture}: no state changed"
    );

    // MOS_INFO_*: sequence numbers against the dump's ISNs and byte counts.
    let infos = tagged(&out, "info");
    ensure!(infos.len() == states.len(), "{} info lines", infos.len());
    for f in &infos {
        let r = dump.record(&conn_of(f)?)?;
        for (side, isn, bytes) in [
            ("svr", r.client_isn, r.c2s_bytes),
            ("cli", r.server_isn, r.s2c_bytes),
        ] {
            if field(f, &format!("{side}_init"))? == "none" {
                ensure!(
                    bytes == 0,
                    "{f:?}: no {side} buffer info, {bytes} bytes dumped"
                );
                continue;
            }
            let init = num(f, &format!("{side}_init"))? as u32;
            let next = num(f, &format!("{side}_next"))? as u32;
            let recv = num(f, &format!("{side}_recv"))? as u32;
            if let Some(isn) = isn {
                ensure!(
                    init == isn.wrapping_add(1),
                    "{f:?}: {side} tcpbi_init_seq {init}, the ISN is {isn}"
                );
            }
            ensure!(
                u64::from(next.wrapping_sub(init)) == bytes,
                "{f:?}: {side} holds {} bytes in order, the dump {bytes}",
                next.wrapping_sub(init)
            );
            ensure!(
                recv == next,
                "{f:?}: {side}: bytes past the last in-order one at the end"
            );
        }
    }

    // MOS_FRAGINFO_*: each fragment read with ppeek is the dump's bytes at its offset.
    let frags = tagged(&out, "frag");
    for f in &frags {
        let r = dump.record(&conn_of(f)?)?;
        let file = if field(f, "side")? == "0" {
            &r.s2c_file
        } else {
            &r.c2s_file
        };
        let data = dump.stream(file)?;
        let (off, got) = (num(f, "offset")? as usize, num(f, "got")? as usize);
        ensure!(
            off + got <= data.len(),
            "{f:?}: past the dumped stream ({} bytes)",
            data.len()
        );
        ensure!(
            sha1_hex(&data[off..off + got]) == field(f, "sha1")?,
            "{f:?}: ppeek of the fragment differs from the dump's bytes"
        );
    }
    if frags_expected {
        ensure!(!frags.is_empty(), "{capture}: no fragment was read");
    }

    // MOS_STOP_MON: every connection with data was stopped, and nothing came after.
    let with_data = dump
        .records
        .iter()
        .filter(|r| r.c2s_bytes + r.s2c_bytes > 0)
        .count();
    let s = one(&out, "stopped")?;
    assert_eq!(num(&s, "conns")? as usize, with_data, "{s:?}");
    assert_eq!(num(&s, "after")?, 0, "{s:?}");
    Ok((states.len(), frags.len()))
}

/// `mtcp_getsockopt` (states against the Rust library, buffer info against the dump's ISNs
/// and lengths, fragments against the dump's bytes, the overlap policy) and
/// `mtcp_setsockopt` (`MOS_CLIBUF`/`MOS_SVRBUF` 0, the overlap options, `MOS_STOP_MON`);
/// every errno of both.
#[test]
fn socket_options_read_what_the_sensor_holds() -> Result<()> {
    let (a, _) = check_sockopt(GENERAL, false)?;
    let (b, frags) = check_sockopt(OUT_OF_ORDER, true)?;
    println!("t_sockopt: {} connections, {frags} fragments read", a + b);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// t_packet

/// Where the IP header of an Ethernet frame starts (after VLAN tags).
fn ip_offset(frame: &[u8]) -> usize {
    let mut off = 12;
    while frame.len() >= off + 2
        && matches!(
            u16::from_be_bytes([frame[off], frame[off + 1]]),
            0x8100 | 0x88a8
        )
    {
        off += 4;
    }
    off + 2
}

/// `mtcp_getlastpkt` (a connection's frames against their own headers and `mtcp_ppeek`; raw
/// packets against tcpdump), `mtcp_getpeername` (IPv4 and IPv6, against the dump),
/// `mtcp_setlastpkt`/`mtcp_sendpkt` (ENOTSUP), and `MOS_PACKETS=0` (ENODATA).
#[test]
fn packets_and_addresses() -> Result<()> {
    let labels = [
        "sendpkt_outside",
        "setlastpkt_outside",
        "getlastpkt_null_mctx",
        "getlastpkt_bad_id",
        "getlastpkt_negative_id",
        "getpeername_bad_id",
        "getpeername_monitoring_socket",
        "getpeername_short_addrlen",
        "getpeername_negative_addrlen",
        "getpeername_zero_addrlen",
        "getpeername_both_short",
        "getpeername_null_addrlen",
        "getpeername_bad_side",
        "setlastpkt_enotsup",
        "sendpkt_enotsup",
    ];
    let mut checked = Vec::new();
    for (capture, raw_filter, extra) in [
        (GENERAL, "udp", None),
        (IPV6, "tcp port 21", Some("getpeername_ipv6_in_sockaddr")),
    ] {
        let mut l: Vec<&str> = labels.to_vec();
        l.extend(extra);
        let (_work, out, dump) = run_c(&Run {
            capture,
            sensor: &[],
            prog: "t_packet",
            args: &[raw_filter],
            env: &[],
            labels: &l,
            lines: &[],
        })?;
        let peers = multiset(
            tagged(&out, "peer")
                .iter()
                .map(conn_of)
                .collect::<Result<Vec<_>>>()?,
        );
        same_conns(&format!("getpeername on {capture}"), &peers, &dump.conns()?)?;
        if capture == IPV6 {
            ensure!(
                peers.keys().all(|(c, _)| c.is_ipv6()),
                "{capture}: not IPv6"
            );
        }
        // The raw socket's packets: tcpdump's, in order, with their lengths and times.
        let scratch = ScratchDir::new("capi-packet-tcpdump")?;
        let udp = tcpdump_frames(scratch.path(), &pcap(capture)?, raw_filter)?;
        ensure!(
            !udp.is_empty(),
            "{capture}: tcpdump selects nothing with {raw_filter:?}"
        );
        let raw = tagged(&out, "raw");
        ensure!(
            raw.len() == udp.len(),
            "{capture}: {} raw packets, tcpdump selects {}",
            raw.len(),
            udp.len()
        );
        for (i, (f, (ts_ns, frame))) in raw.iter().zip(&udp).enumerate() {
            let want = (
                frame.len() as i64,
                (frame.len() - ip_offset(frame)) as i64,
                i64::from((ts_ns / 1_000_000) as u32),
            );
            let got = (num(f, "eth_len")?, num(f, "ip_len")?, num(f, "ts")?);
            ensure!(
                got == want,
                "{capture}: raw packet {i}: (eth_len, ip_len, ts ms) {got:?}, tcpdump's frame {want:?}"
            );
        }
        let c = one(&out, "counts")?;
        ensure!(num(&c, "ppeek_matches")? > 0, "{c:?}");
        checked.push(format!(
            "{capture}: {} connections, {} frames, {} raw packets",
            peers.values().sum::<usize>(),
            num(&c, "frames")?,
            raw.len()
        ));
    }
    // Without packets (MOS_PACKETS=0): ENODATA.
    run_c(&Run {
        capture: GENERAL,
        sensor: &[],
        prog: "t_packet",
        args: &["nopackets"],
        env: &[("MOS_PACKETS", "0")],
        labels: &["getlastpkt_no_packets"],
        lines: &[],
    })?;
    println!("t_packet: {}", checked.join("; "));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// t_timer

/// The last frame's capture time of a capture, in ns.
fn last_frame_ns(capture: &Path) -> Result<u64> {
    let mut cap = FileCapture::open(capture)?;
    let mut last = 0;
    while let Some(f) = cap.next_packet()? {
        last = last.max(f.ts_ns);
    }
    Ok(last)
}

/// `mtcp_settimer` on the capture clock (`MOS_TIMER_CLOCK=capture`): a timer set in each
/// CONN_START callback 2 s of capture time later fires once, never early, never past the
/// capture's end, and every one due before the capture's last second fires; on the wall
/// clock, a timer that re-arms itself fires three times. `mtcp_set_uctx`/`mtcp_get_uctx` on
/// two sockets throughout, with every errno.
#[test]
fn timers_and_user_contexts() -> Result<()> {
    const DELAY_MS: i64 = 2000;
    let uctx_labels = [
        "get_uctx_null_mctx",
        "get_uctx_bad_id",
        "get_uctx_negative_id",
        "get_uctx_monitoring_socket",
        "set_uctx_null_mctx",
        "set_uctx_bad_id",
    ];
    let (_work, out, dump) = run_c(&Run {
        capture: GENERAL,
        sensor: &[],
        prog: "t_timer",
        args: &["capture", &DELAY_MS.to_string()],
        env: &[("MOS_TIMER_CLOCK", "capture")],
        labels: &uctx_labels,
        lines: &["settimer_invalid ok"],
    })?;
    // Capture microseconds as the library gives them (wrapping at 2^32).
    let last_us = (last_frame_ns(&pcap(GENERAL)?)? / 1000) as u32;
    let delta = |a: u32, b: u32| i64::from(a.wrapping_sub(b) as i32);
    let set: BTreeMap<i64, u32> = tagged(&out, "timer_set")
        .iter()
        .map(|f| Ok((num(f, "id")?, num(f, "at")? as u32)))
        .collect::<Result<_>>()?;
    let fired: BTreeMap<i64, u32> = tagged(&out, "timer_fired")
        .iter()
        .map(|f| Ok((num(f, "id")?, num(f, "at")? as u32)))
        .collect::<Result<_>>()?;
    ensure!(!set.is_empty(), "no timer was set:\n{}", tail(&out));
    for (id, at) in &set {
        let due = at.wrapping_add((DELAY_MS * 1000) as u32);
        match fired.get(id) {
            Some(f) => {
                ensure!(delta(*f, due) >= 0, "timer {id} fired at {f}, due at {due}");
                ensure!(
                    delta(last_us, *f) >= 0,
                    "timer {id} fired at {f}, after the capture's last frame ({last_us})"
                );
            }
            None => ensure!(
                delta(due, last_us) > -1_000_000,
                "timer {id} (due at {due}) did not fire though the capture went on to {last_us}"
            ),
        }
    }
    ensure!(
        fired.keys().all(|id| set.contains_key(id)),
        "a timer fired that was not set"
    );
    ensure!(!fired.is_empty(), "no timer fired");
    let u = one(&out, "uctx")?;
    ensure!(num(&u, "conns")? as usize >= dump.records.len(), "{u:?}");

    // The wall clock, on a paced replay.
    let (_work, out, _dump) = run_c(&Run {
        capture: GENERAL,
        sensor: &["--speed", "20"],
        prog: "t_timer",
        args: &["wall"],
        env: &[],
        labels: &uctx_labels,
        lines: &["settimer_invalid ok"],
    })?;
    assert_eq!(tagged(&out, "wall_fired").len(), 3, "{out}");
    println!(
        "t_timer: {} capture-clock timers set, {} fired",
        set.len(),
        fired.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Isolation: a C analyzer that misbehaves does not hold up the sensor or the others

enum Misbehaviour {
    Exit,
    Block,
    Segv,
}

fn isolation(mode: Misbehaviour) -> Result<()> {
    let name = match mode {
        Misbehaviour::Exit => "exit",
        Misbehaviour::Block => "block",
        Misbehaviour::Segv => "segv",
    };
    let work = ScratchDir::new(&format!("capi-crash-{name}"))?;
    let w = work.path();
    let exe = build(w, "t_crash")?;
    let (control, reference, out) = (w.join("c.sock"), w.join("ref"), w.join("out"));
    let deadline = Instant::now() + TIMEOUT;
    // A ring of 64 events: the sensor cannot run ahead of the C analyzer, so its misbehaviour
    // happens in the middle of the replay.
    let mut sensor = start_sensor(
        w,
        &pcap(ISOLATION)?,
        &control,
        &[
            "--wait-analyzers",
            "2",
            "--stall-timeout",
            "1",
            "--event-ring",
            "64",
            "--dump",
            reference.to_str().context("path")?,
        ],
    )?;
    let mut dump = Proc::spawn(
        "mos-dump",
        cmd(&bin("mos-dump")?, &[&"--control", &control, &"--out", &out]),
        w,
    )?;
    let mut c = c_prog(w, &exe, "t_crash", &[name], Some(&control), &[])?;
    let serr = finish_sensor(&mut sensor, deadline)?;
    let d = dump.wait_until(deadline)?;
    ensure!(
        d.success(),
        "mos-dump exited with {d}; stderr:\n{}",
        tail(&dump.stderr())
    );
    assert_no_panic(&dump)?;
    same_tree(&reference, &out)?;
    let pid = c.pid();
    let st: ExitStatus = match mode {
        Misbehaviour::Block => {
            // Still blocked in its callback: the sensor went on without it.
            ensure!(
                c.poll()?.is_none(),
                "the blocked program exited: {}",
                tail(&c.stdout())
            );
            c.signal(rustix::process::Signal::KILL)?;
            c.wait(TIMEOUT)?
        }
        _ => c.wait_until(deadline)?,
    };
    let cout = c.stdout();
    ensure!(
        cout.lines().any(|l| l == format!("crashing mode={name}")),
        "t_crash did not reach its misbehaviour:\n{cout}\n{}",
        tail(&c.stderr())
    );
    match mode {
        Misbehaviour::Exit => ensure!(st.code() == Some(3), "t_crash exit: {st}"),
        Misbehaviour::Segv => ensure!(st.signal() == Some(11), "t_crash segv: {st}"),
        Misbehaviour::Block => {}
    }
    // The sensor said it detached the program, before its replay ended.
    let summary = serr
        .lines()
        .position(|l| l.starts_with("mos-sensor: published "))
        .context("no publication summary")?;
    let lines: Vec<&str> = serr.lines().collect();
    let want = match mode {
        Misbehaviour::Block => format!("pid {pid}) made no progress for 1.0 s: detached"),
        _ => format!("(pid {pid})"),
    };
    let at = lines
        .iter()
        .position(|l| l.contains(&want) && (l.contains("detached")))
        .with_context(|| format!("no {want:?} detach line in:\n{serr}"))?;
    ensure!(at < summary, "the detach came after the replay:\n{serr}");
    if let Misbehaviour::Block = mode {
        ensure!(
            lines[summary].contains(" 1 analyzers detached for stalling"),
            "{}",
            lines[summary]
        );
    }
    println!(
        "t_crash {name}: the sensor went on and exited 0; mos-dump wrote its {} connections",
        Dump::read(&reference)?.records.len()
    );
    Ok(())
}

#[test]
fn a_c_analyzer_that_exits_in_a_callback_does_not_stop_the_others() -> Result<()> {
    isolation(Misbehaviour::Exit)
}

#[test]
fn a_c_analyzer_blocked_in_a_callback_is_detached_and_the_others_complete() -> Result<()> {
    isolation(Misbehaviour::Block)
}

#[test]
fn a_c_analyzer_that_crashes_with_sigsegv_does_not_stop_the_others() -> Result<()> {
    isolation(Misbehaviour::Segv)
}
