//! Live capture on real traffic: HTTP downloads between two network namespaces joined by a
//! veth pair, captured on the server's end of the veth by `mos-sensor` (AF_PACKET, or DPDK's
//! `net_af_packet` driver) with `mos-dump` attached, and every downloaded file found again,
//! byte for byte and with nothing lost, after the response header of its connection's
//! server-to-client stream. In the veth runs `mos-log` is attached beside `mos-dump`, and
//! each download's `http.jsonl` record names the file (`uri`) and counts its whole body
//! (`response_body_len` = the served file's size).
//!
//! Needs root (namespaces, raw capture), `ip`, `ethtool`, `python3` and the workspace's
//! binaries built in the same profile (`cargo build --release --bins`). A missing tool fails the
//! test. Every namespace is deleted by a guard, also when a test fails; every process is killed
//! by its guard; every wait has a deadline. Traffic flows only between the namespaces made
//! here.

use anyhow::{bail, ensure, Context, Result};
use mos_tests::flows::{parse_flows, FlowRecord};
use mos_tests::locate::{bin, sensor_bin};
use mos_tests::netns::{
    assert_root, in_ns, need_tool, run, tcp_counters, Netns, CLI_ADDR, SRV_ADDR,
};
use mos_tests::procs::{assert_no_panic, cmd, tail, wait_for, wait_for_socket, Proc};
use mos_tests::runner::ScratchDir;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest any single process of these tests may take.
const TIMEOUT: Duration = Duration::from_secs(120);
const HTTP_PORT: u16 = 8080;

/// One live run at a time: the runs share two cores, and a capture that cannot keep up with
/// the wire loses frames in the kernel, which would be the machine's fault, not the sensor's.
static LIVE: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------------------------
// Served files and downloads

/// One file the server serves.
#[derive(Debug, Clone)]
struct Served {
    name: String,
    size: u64,
    sha256: String,
}

/// Sizes served: round ones from 1 KiB to 16 MiB, and odd ones.
const SIZES: [u64; 12] = [
    1 << 10,
    10 << 10,
    100 << 10,
    1 << 20,
    4 << 20,
    16 << 20,
    1,
    777,
    65_537,
    123_457,
    1_000_003,
    2_345_679,
];

/// How many times each file of [`SIZES`] is downloaded (same order): 36 downloads.
const TIMES: [usize; 12] = [4, 4, 4, 3, 3, 2, 2, 3, 3, 3, 3, 2];

/// Downloads at once.
const CONCURRENCY: usize = 6;

/// Deterministic pseudo-random bytes (splitmix64 seeded with `seed`).
fn content(seed: u64, size: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x6A09_E667_F3BC_C908;
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

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Writes the served files into `dir`.
fn make_files(dir: &Path) -> Result<Vec<Served>> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    for (i, &size) in SIZES.iter().enumerate() {
        let bytes = content(i as u64 + 1, size);
        let name = format!("f{i:02}-{size}.bin");
        std::fs::write(dir.join(&name), &bytes)?;
        files.push(Served {
            name,
            size,
            sha256: sha256_hex(&bytes),
        });
    }
    Ok(files)
}

/// The download list, files interleaved so that large and small ones overlap.
fn downloads(files: &[Served]) -> Vec<Served> {
    let mut out = Vec::new();
    let most = TIMES.iter().copied().max().unwrap_or(0);
    for round in 0..most {
        for (f, &t) in files.iter().zip(&TIMES) {
            if round < t {
                out.push(f.clone());
            }
        }
    }
    out
}

/// The client: downloads every job of a JSON list with a pool of threads, one connection each,
/// checks each body (status, length, SHA-256) itself, and prints one JSON line per job with the
/// local port its connection used.
const CLIENT_PY: &str = r#"
import hashlib, http.client, json, queue, sys, threading
host, port, conc, jobs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.load(open(sys.argv[4]))
q = queue.Queue()
for i, j in enumerate(jobs):
    q.put((i, j))
results = [None] * len(jobs)
def work():
    while True:
        try:
            i, j = q.get_nowait()
        except queue.Empty:
            return
        try:
            c = http.client.HTTPConnection(host, port, timeout=30)
            c.connect()
            lport = c.sock.getsockname()[1]
            c.request("GET", "/" + j["name"])
            r = c.getresponse()
            h, n = hashlib.sha256(), 0
            while True:
                b = r.read(1 << 16)
                if not b:
                    break
                h.update(b)
                n += len(b)
            c.close()
            ok = r.status == 200 and n == j["size"] and h.hexdigest() == j["sha256"]
            results[i] = {"i": i, "port": lport, "status": r.status, "bytes": n, "ok": ok}
        except Exception as e:
            results[i] = {"i": i, "error": repr(e), "ok": False}
threads = [threading.Thread(target=work) for _ in range(conc)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for r in results:
    print(json.dumps(r))
"#;

/// What the client said of one download.
#[derive(Debug, serde::Deserialize)]
struct Fetched {
    i: usize,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    error: Option<String>,
    ok: bool,
}

// ---------------------------------------------------------------------------------------------
// The run

/// How the sensor captures.
#[derive(Debug, Clone, Copy)]
enum Backend {
    AfPacket,
    Dpdk,
}

/// The sensor's capture arguments for `iface` in the server namespace.
fn capture_args(backend: Backend, iface: &str) -> Vec<String> {
    match backend {
        Backend::AfPacket => vec!["--iface".into(), iface.into()],
        Backend::Dpdk => vec![
            "--dpdk".into(),
            format!(
                "--no-huge -m 256 --no-pci --no-shconf -l 0 \
                 --vdev=net_af_packet0,iface={iface},framecnt=65536"
            ),
            "--port".into(),
            "0".into(),
        ],
    }
}

/// Whether the sensor has said it is capturing and that mos-dump attached.
fn capture_started(sensor_err: &str) -> bool {
    let capturing = sensor_err.lines().any(|l| {
        l.starts_with("mos-sensor: capturing on ")
            || l.starts_with("mos-sensor: receiving from DPDK port ")
    });
    capturing && sensor_err.contains("attached: mos-dump")
}

/// Whether the sensor has said that mos-log attached.
fn mos_log_attached(sensor_err: &str) -> bool {
    sensor_err.contains("attached: mos-log")
}

/// Downloads every file of the list through the capture; checks the dump.
fn live_run(tag: &str, backend: Backend, workers: usize) -> Result<()> {
    let _one_at_a_time = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    need_tool("python3")?;
    let started = Instant::now();
    let work = ScratchDir::new(&format!("live-{tag}"))?;
    let w = work.path();
    let www = w.join("www");
    let files = make_files(&www)?;
    let jobs = downloads(&files);
    let jobs_path = w.join("jobs.json");
    let list: Vec<_> = jobs
        .iter()
        .map(|j| serde_json::json!({"name": j.name, "size": j.size, "sha256": j.sha256}))
        .collect();
    std::fs::write(&jobs_path, serde_json::to_vec(&list)?)?;
    let client_py = w.join("client.py");
    std::fs::write(&client_py, CLIENT_PY)?;

    let net = Netns::new()?;
    let deadline = Instant::now() + TIMEOUT;

    // The server, ready once it says so (unbuffered, so the line comes at once).
    let mut server = Proc::spawn(
        "http-server",
        {
            let mut c = in_ns(&net.srv, Path::new("python3"));
            c.args([
                "-u",
                "-m",
                "http.server",
                &HTTP_PORT.to_string(),
                "--bind",
                SRV_ADDR,
            ])
            .arg("--directory")
            .arg(&www);
            c
        },
        w,
    )?;
    wait_for("the HTTP server", TIMEOUT, || {
        if let Some(st) = server.poll()? {
            bail!(
                "the HTTP server exited with {st}:\n{}",
                tail(&server.stderr())
            );
        }
        Ok(server.stdout().contains("Serving HTTP"))
    })?;

    // The sensor, in the server namespace; its control socket is a path, reachable from here.
    let control = w.join("c.sock");
    let out = w.join("out");
    let mut c = in_ns(&net.srv, &sensor_bin()?);
    c.args(capture_args(backend, &net.srv_if))
        .args(["--workers", &workers.to_string()])
        .args([
            "--stop-after-idle",
            "2",
            "--lossless",
            "--wait-analyzers",
            "2",
        ])
        .arg("--control")
        .arg(&control);
    let mut sensor = Proc::spawn("sensor", c, w)?;
    wait_for_socket(&mut sensor, &control, TIMEOUT)?;
    let mut dump = Proc::spawn(
        "mos-dump",
        cmd(&bin("mos-dump")?, &[&"--control", &control, &"--out", &out]),
        w,
    )?;
    let logs = w.join("logs");
    let mut log = Proc::spawn(
        "mos-log",
        cmd(&bin("mos-log")?, &[&"--control", &control, &"--out", &logs]),
        w,
    )?;
    wait_for("the sensor to start capturing", TIMEOUT, || {
        if let Some(st) = sensor.poll()? {
            bail!(
                "the sensor exited with {st} before capturing:\n{}",
                tail(&sensor.stderr())
            );
        }
        for p in [&mut dump, &mut log] {
            if let Some(st) = p.poll()? {
                bail!(
                    "{} exited with {st} before the capture started:\n{}",
                    p.name(),
                    tail(&p.stderr())
                );
            }
        }
        let err = sensor.stderr();
        Ok(capture_started(&err) && mos_log_attached(&err))
    })?;
    // mos-dump attached; give it and the capture a moment to be under way.
    std::thread::sleep(Duration::from_millis(500));

    // The downloads.
    let t0 = Instant::now();
    let mut client = Proc::spawn(
        "client",
        {
            let mut c = in_ns(&net.cli, Path::new("python3"));
            c.arg(&client_py)
                .args([SRV_ADDR, &HTTP_PORT.to_string(), &CONCURRENCY.to_string()]);
            c.arg(&jobs_path);
            c
        },
        w,
    )?;
    client.expect_code(0, deadline.saturating_duration_since(Instant::now()))?;
    let download_time = t0.elapsed();
    let fetched: Vec<Fetched> = client
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("client line {l:?}")))
        .collect::<Result<_>>()?;
    ensure!(
        fetched.len() == jobs.len(),
        "the client reported {} of {} downloads:\n{}",
        fetched.len(),
        jobs.len(),
        client.stdout()
    );
    let bad: Vec<String> = fetched
        .iter()
        .filter(|f| !f.ok)
        .map(|f| {
            format!(
                "download {} ({}): {}",
                f.i,
                jobs[f.i].name,
                f.error
                    .as_deref()
                    .unwrap_or("wrong status, length or content")
            )
        })
        .collect();
    ensure!(
        bad.is_empty(),
        "downloads failed at the client (not the sensor's fault):\n{}",
        bad.join("\n")
    );

    // The sensor ends by itself once the wire is idle; mos-dump and mos-log with it.
    let ss = sensor.wait_until(deadline)?;
    let ds = dump.wait_until(deadline)?;
    let ls = log.wait_until(deadline)?;
    let serr = sensor.stderr();
    ensure!(
        ss.code() == Some(0),
        "the sensor exited with {ss}; stderr:\n{}",
        tail(&serr)
    );
    ensure!(
        ds.code() == Some(0),
        "mos-dump exited with {ds}; stderr:\n{}",
        tail(&dump.stderr())
    );
    ensure!(
        ls.code() == Some(0),
        "mos-log exited with {ls}; stderr:\n{}",
        tail(&log.stderr())
    );
    assert_no_panic(&sensor)?;
    assert_no_panic(&dump)?;
    assert_no_panic(&log)?;
    ensure!(
        !serr.contains("loopback device"),
        "a veth is no loopback device, but the sensor said:\n{serr}"
    );
    // With checksum offload off, every checksum on the wire is real.
    let bad = bad_checksums(&serr)?;
    ensure!(bad == 0, "{bad} frames with bad TCP checksums:\n{serr}");
    server.signal(rustix::process::Signal::TERM)?;
    let _ = server.wait(Duration::from_secs(5));

    let (conns, bytes) =
        check_dump(&out, SRV_ADDR, CLI_ADDR, &jobs, &fetched).with_context(|| {
            format!(
                "sensor stderr:\n{}\nmos-dump stderr:\n{}",
                tail(&serr),
                tail(&dump.stderr())
            )
        })?;
    let records = check_http_log(&logs, &jobs, &fetched)
        .with_context(|| format!("mos-log stderr:\n{}", tail(&log.stderr())))?;
    println!(
        "live {tag}: {conns} connections, {:.1} MiB served, downloads {:.2} s, whole run {:.1} s; \
         {records} mos-log HTTP records, each with the served file's length",
        bytes as f64 / f64::from(1 << 20),
        download_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!("sensor stderr:\n{}", serr.trim_end());
    Ok(())
}

/// The number of frames the sensor's summary says had bad TCP checksums.
fn bad_checksums(sensor_err: &str) -> Result<u64> {
    sensor_err
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once("kept ")?;
            let (n, rest) = rest.split_once(' ')?;
            rest.starts_with("with bad TCP checksums")
                .then(|| n.parse().ok())
                .flatten()
        })
        .with_context(|| format!("no count of bad TCP checksums in:\n{sensor_err}"))
}

/// Checks the dump in `out` against the downloads from the server at `srv_addr` by the client
/// at `cli_addr`: one connection per download, nothing lost, and each response body, after the
/// header, is the served file. Returns (connections, body bytes).
fn check_dump(
    out: &Path,
    srv_addr: &str,
    cli_addr: &str,
    jobs: &[Served],
    fetched: &[Fetched],
) -> Result<(usize, u64)> {
    let text = std::fs::read_to_string(out.join("flows.jsonl"))
        .with_context(|| format!("reading {}/flows.jsonl", out.display()))?;
    let flows = parse_flows(&text)?;
    let server = format!("{srv_addr}:{HTTP_PORT}");
    let by_client: BTreeMap<&str, &FlowRecord> = flows
        .iter()
        .filter(|f| f.server == server)
        .map(|f| (f.client.as_str(), f))
        .collect();
    let to_server = flows.iter().filter(|f| f.server == server).count();
    let mut problems = Vec::new();
    if to_server != jobs.len() {
        problems.push(format!(
            "{to_server} connections to {server} in flows.jsonl, {} downloads",
            jobs.len()
        ));
    }
    if by_client.len() != to_server {
        problems.push("several connections from one client endpoint".to_string());
    }
    if flows.len() != to_server {
        problems.push(format!("{} other connections", flows.len() - to_server));
    }
    let mut bytes = 0;
    for f in fetched {
        let job = &jobs[f.i];
        let client = format!("{cli_addr}:{}", f.port);
        let Some(rec) = by_client.get(client.as_str()) else {
            problems.push(format!(
                "download {} ({}, {client}): no connection",
                f.i, job.name
            ));
            continue;
        };
        if let Err(e) = check_flow(out, rec, job) {
            problems.push(format!("download {} ({}, {client}): {e:#}", f.i, job.name));
        }
        bytes += job.size;
    }
    if !problems.is_empty() {
        let mut msg = format!("{} problems:\n", problems.len());
        for p in problems.iter().take(20) {
            let _ = writeln!(msg, "  {p}");
        }
        bail!("{msg}");
    }
    Ok((to_server, bytes))
}

/// One connection: nothing lost, its files as the record says, a 200 response whose body is
/// `job`'s file.
fn check_flow(out: &Path, rec: &FlowRecord, job: &Served) -> Result<()> {
    ensure!(
        rec.c2s_lost == 0 && rec.s2c_lost == 0,
        "lost bytes: c2s {} of {}, s2c {} of {}",
        rec.c2s_lost,
        rec.c2s_bytes,
        rec.s2c_lost,
        rec.s2c_bytes
    );
    let read = |file: &Option<String>, n: u64, sha: &str, what: &str| -> Result<Vec<u8>> {
        let b = match file {
            Some(f) => std::fs::read(out.join(f)).with_context(|| format!("reading {f}"))?,
            None => Vec::new(),
        };
        ensure!(
            b.len() as u64 == n,
            "{what} file has {} bytes, record says {n}",
            b.len()
        );
        ensure!(
            sha256_hex(&b) == sha.to_ascii_lowercase(),
            "{what} file's SHA-256 is not the record's"
        );
        Ok(b)
    };
    let c2s = read(&rec.c2s_file, rec.c2s_bytes, &rec.c2s_sha256, "c2s")?;
    let s2c = read(&rec.s2c_file, rec.s2c_bytes, &rec.s2c_sha256, "s2c")?;
    let want = format!("GET /{} HTTP/1.1\r\n", job.name);
    ensure!(
        c2s.starts_with(want.as_bytes()),
        "the request is not {want:?}: {:?}",
        String::from_utf8_lossy(&c2s[..c2s.len().min(80)])
    );
    let end = s2c
        .windows(4)
        .position(|x| x == b"\r\n\r\n")
        .context("no end of the response header in the s2c stream")?;
    let (head, body) = (&s2c[..end], &s2c[end + 4..]);
    ensure!(
        head.starts_with(b"HTTP/1.0 200 "),
        "response {:?}",
        String::from_utf8_lossy(&head[..head.len().min(80)])
    );
    ensure!(
        body.len() as u64 == job.size && sha256_hex(body) == job.sha256,
        "the body ({} bytes) is not the served file ({} bytes)",
        body.len(),
        job.size
    );
    Ok(())
}

/// The fields of an `http.jsonl` record this test reads.
#[derive(Debug, serde::Deserialize)]
struct HttpLogRecord {
    #[serde(rename = "id.orig_h")]
    orig_h: String,
    #[serde(rename = "id.orig_p")]
    orig_p: u16,
    #[serde(rename = "id.resp_h")]
    resp_h: String,
    #[serde(rename = "id.resp_p")]
    resp_p: u16,
    method: Option<String>,
    uri: Option<String>,
    status_code: Option<u16>,
    response_body_len: Option<u64>,
}

/// Checks `mos-log`'s `http.jsonl` in `logs` against the downloads: one record per download
/// (found by the client's port) and no other, each a `GET` of the file's name answered `200`
/// with `response_body_len` the served file's size. Returns the number of records.
fn check_http_log(logs: &Path, jobs: &[Served], fetched: &[Fetched]) -> Result<usize> {
    let path = logs.join("http.jsonl");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let records: Vec<HttpLogRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("http.jsonl line {l:?}")))
        .collect::<Result<_>>()?;
    let mut problems = Vec::new();
    if records.len() != jobs.len() {
        problems.push(format!(
            "{} records in http.jsonl, {} downloads",
            records.len(),
            jobs.len()
        ));
    }
    for f in fetched {
        let job = &jobs[f.i];
        let mine: Vec<&HttpLogRecord> = records
            .iter()
            .filter(|r| {
                r.orig_h == CLI_ADDR
                    && r.orig_p == f.port
                    && r.resp_h == SRV_ADDR
                    && r.resp_p == HTTP_PORT
            })
            .collect();
        let [r] = mine.as_slice() else {
            problems.push(format!(
                "download {} ({}, port {}): {} records",
                f.i,
                job.name,
                f.port,
                mine.len()
            ));
            continue;
        };
        let want_uri = format!("/{}", job.name);
        if r.method.as_deref() != Some("GET")
            || r.uri.as_deref() != Some(want_uri.as_str())
            || r.status_code != Some(200)
            || r.response_body_len != Some(job.size)
        {
            problems.push(format!(
                "download {} (port {}): want GET {want_uri} 200 with {} body bytes, the record \
                 says {:?} {:?} {:?} with {:?}",
                f.i, f.port, job.size, r.method, r.uri, r.status_code, r.response_body_len
            ));
        }
    }
    if !problems.is_empty() {
        let mut msg = format!("mos-log's http.jsonl: {} problems:\n", problems.len());
        for p in problems.iter().take(20) {
            let _ = writeln!(msg, "  {p}");
        }
        bail!("{msg}");
    }
    Ok(records.len())
}

// ---------------------------------------------------------------------------------------------
// The variants

#[test]
fn afpacket_one_worker_dumps_every_download() -> Result<()> {
    live_run("afpacket-1w", Backend::AfPacket, 1)
}

#[test]
fn afpacket_two_workers_dump_every_download() -> Result<()> {
    live_run("afpacket-2w", Backend::AfPacket, 2)
}

#[test]
fn dpdk_af_packet_one_worker_dumps_every_download() -> Result<()> {
    live_run("dpdk-1w", Backend::Dpdk, 1)
}

#[test]
fn dpdk_af_packet_two_workers_dump_every_download() -> Result<()> {
    live_run("dpdk-2w", Backend::Dpdk, 2)
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Runs the sensor command `c` and expects status 1 with one
/// `mos-sensor: error:` line on stderr containing every one of `words`; returns its stderr.
fn sensor_fails(w: &Path, name: &str, c: Command, words: &[&str]) -> Result<String> {
    let mut p = Proc::spawn(name, c, w)?;
    let st = p.wait(Duration::from_secs(30))?;
    let err = p.stderr();
    assert_no_panic(&p)?;
    ensure!(
        st.code() == Some(1),
        "{name}: exited with {st}, expected 1; stderr:\n{err}"
    );
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("mos-sensor:"))
        .collect();
    ensure!(
        lines.len() == 1,
        "{name}: expected one mos-sensor line on stderr, got:\n{err}"
    );
    ensure!(lines[0].starts_with("mos-sensor: error:"), "{name}: {err}");
    for word in words {
        ensure!(lines[0].contains(word), "{name}: no {word:?} in {err}");
    }
    Ok(err)
}

#[test]
fn bad_live_capture_arguments_fail_with_one_line() -> Result<()> {
    assert_root()?;
    let work = ScratchDir::new("live-errors")?;
    let w = work.path();
    let sensor = sensor_bin()?;
    let mut report = String::new();

    let mut c = cmd(
        &sensor,
        &[
            &"--iface",
            &"no-such-if0",
            &"--no-publish",
            &"--dump",
            &w.join("d"),
        ],
    );
    c.current_dir(w);
    let err = sensor_fails(w, "no-such-iface", c, &["no-such-if0"])?;
    let _ = writeln!(report, "--iface no-such-if0: {}", err.trim_end());

    let eal = "--no-huge -m 256 --no-pci --no-shconf -l 0";
    let c = cmd(
        &sensor,
        &[
            &"--dpdk",
            &format!("{eal} --bogus"),
            &"--no-publish",
            &"--dump",
            &w.join("d"),
        ],
    );
    let err = sensor_fails(w, "bogus-eal", c, &["--bogus"])?;
    let _ = writeln!(report, "--bogus: {}", err.trim_end());

    let c = cmd(
        &sensor,
        &[
            &"--dpdk",
            &format!("{eal} --vdev=net_null0"),
            &"--port",
            &"3",
            &"--no-publish",
            &"--dump",
            &w.join("d"),
        ],
    );
    let err = sensor_fails(w, "no-port-3", c, &["port 3"])?;
    let _ = writeln!(report, "--port 3: {}", err.trim_end());

    // Without hugepages or PCI devices DPDK needs no privilege (net_null runs fine as uid
    // 65534), but net_af_packet needs CAP_NET_RAW for its socket. uid 65534 runs a copy it
    // can read and execute; lo exists in every namespace and no frame is sent.
    let exe: PathBuf = w.join("mos-sensor");
    std::fs::copy(&sensor, &exe)?;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(w, std::fs::Permissions::from_mode(0o755))?;
    need_tool("setpriv")?;
    let nobody_dump = w.join("nobody-dump");
    std::fs::create_dir(&nobody_dump)?;
    std::fs::set_permissions(&nobody_dump, std::fs::Permissions::from_mode(0o777))?;
    let mut c = Command::new("setpriv");
    c.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(&exe)
        .args([
            "--dpdk",
            &format!("{eal} --vdev=net_af_packet0,iface=lo"),
            "--port",
            "0",
            "--no-publish",
            "--dump",
        ])
        .arg(&nobody_dump)
        .current_dir(w);
    let err = sensor_fails(w, "nobody", c, &["AF_PACKET", "not running as root"])?;
    let _ = writeln!(report, "uid 65534: {}", err.trim_end());
    println!("{report}");
    Ok(())
}

/// An analyzer that attaches while the link is quiet is taken in by the worker at once, not
/// at the worker's next batch of frames: it sees the very next connection, whole.
#[test]
fn an_analyzer_attaching_to_a_quiet_link_sees_the_next_connection() -> Result<()> {
    let _one_at_a_time = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    need_tool("python3")?;
    let work = ScratchDir::new("live-quiet-attach")?;
    let w = work.path();
    let net = Netns::new()?;
    let (control, out) = (w.join("c.sock"), w.join("out"));
    let mut c = in_ns(&net.srv, &sensor_bin()?);
    c.args([
        "--iface",
        &net.srv_if,
        "--stop-after-idle",
        "3",
        "--lossless",
    ])
    .arg("--control")
    .arg(&control);
    let mut sensor = Proc::spawn("sensor", c, w)?;
    wait_for_socket(&mut sensor, &control, TIMEOUT)?;
    wait_for("the capture to start", TIMEOUT, || {
        Ok(sensor.stderr().contains("mos-sensor: capturing on "))
    })?;
    let mut dump = Proc::spawn(
        "mos-dump",
        cmd(&bin("mos-dump")?, &[&"--control", &control, &"--out", &out]),
        w,
    )?;
    wait_for("mos-dump to attach", TIMEOUT, || {
        Ok(sensor.stderr().contains("attached: mos-dump"))
    })?;
    // Quiet for a moment (the worker's idle tick is 100 ms), then one short connection:
    // fewer frames than a busy worker handles between looks at its control channel.
    std::thread::sleep(Duration::from_millis(500));
    let body = 1000;
    let mut server = Proc::spawn(
        "server",
        {
            let mut c = in_ns(&net.srv, Path::new("python3"));
            c.args([
                "-c",
                &format!(
                    "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('{SRV_ADDR}',9099))\ns.listen()\nprint('ready',flush=True)\nc,_=s.accept()\nc.recv(100)\nc.sendall(b'x'*{body})\nc.close()\n"
                ),
            ]);
            c
        },
        w,
    )?;
    wait_for("the server", TIMEOUT, || {
        Ok(server.stdout().contains("ready"))
    })?;
    let mut client = in_ns(&net.cli, Path::new("python3"));
    client.args([
        "-c",
        &format!(
            "import socket\nk=socket.create_connection(('{SRV_ADDR}',9099))\nk.sendall(b'hello')\nn=0\nwhile True:\n    d=k.recv(4096)\n    if not d: break\n    n+=len(d)\nassert n=={body}, n\n"
        ),
    ]);
    run(&mut client)?;
    server.expect_code(0, TIMEOUT)?;
    sensor.expect_code(0, TIMEOUT)?;
    dump.expect_code(0, TIMEOUT)?;
    let flows = parse_flows(&std::fs::read_to_string(out.join("flows.jsonl"))?)?;
    let conn: Vec<&FlowRecord> = flows
        .iter()
        .filter(|f| f.server == format!("{SRV_ADDR}:9099"))
        .collect();
    ensure!(
        conn.len() == 1,
        "mos-dump should have the one connection, it has {flows:?}"
    );
    let f = conn[0];
    ensure!(
        (f.c2s_bytes, f.s2c_bytes, f.c2s_lost, f.s2c_lost) == (5, body, 0, 0),
        "the connection's streams are incomplete: {f:?}"
    );
    drop(net);
    Ok(())
}

/// `latency-bench` (the event-latency benchmark, docs/BENCHMARKS.md) works end to end on lo:
/// with `--block-timeout-ms`, the analyzer's callback and the plain packet socket each see
/// every connection it opened. Only counts are checked here; the times are the benchmark's.
#[test]
fn latency_bench_sees_every_connection_on_lo() -> Result<()> {
    let _one_at_a_time = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    assert_root()?;
    let work = ScratchDir::new("live-latency")?;
    let mut p = Proc::spawn(
        "latency-bench",
        cmd(
            &bin("latency-bench")?,
            &[
                &"--conns",
                &"40",
                &"--gap-us",
                &"2000",
                &"--sensor-arg=--block-timeout-ms=2",
            ],
        ),
        work.path(),
    )?;
    let st = p.wait(TIMEOUT)?;
    let out = p.stdout();
    ensure!(
        st.success(),
        "latency-bench exited with {st}; stderr:\n{}",
        tail(&p.stderr())
    );
    let json = out
        .lines()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("no JSON line in:\n{out}"))?;
    let v: serde_json::Value = serde_json::from_str(json)?;
    for k in ["conns", "event_seen", "raw_seen"] {
        ensure!(v[k] == 40, "{k} is {} in {json}", v[k]);
    }
    ensure!(
        v["sensor_args"][0] == "--block-timeout-ms=2",
        "the sensor argument was not passed: {json}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Loopback

/// A fresh network namespace with only its loopback device, up: whatever is captured on its
/// `lo` is what a test sent there. Dropping it deletes the namespace.
#[derive(Debug)]
struct LoNetns {
    ns: String,
}

impl LoNetns {
    fn new() -> Result<LoNetns> {
        assert_root()?;
        need_tool("ip")?;
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let lo = LoNetns {
            ns: format!("mos-lo-{}-{n}", std::process::id()),
        };
        // A leftover of an earlier run with the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &lo.ns]).output();
        run(Command::new("ip").args(["netns", "add", &lo.ns]))?;
        // From here on the guard exists: a failing step still deletes the namespace.
        let x = |argv: &[&str]| {
            run(Command::new("ip")
                .args(["netns", "exec", &lo.ns])
                .args(argv))
        };
        x(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
        x(&["ip", "link", "set", "lo", "up"])?;
        Ok(lo)
    }
}

impl Drop for LoNetns {
    fn drop(&mut self) {
        let ok = Command::new("ip")
            .args(["netns", "del", &self.ns])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("warning: could not delete network namespace {}", self.ns);
        }
    }
}

/// The downloads on lo, as indices into [`SIZES`]: a few MiB, small and large files
/// interleaved, several connections at once so that two workers both get some.
const LO_JOBS: [usize; 10] = [4, 3, 11, 2, 7, 4, 3, 11, 2, 7];

/// The number just before `phrase` on the first line of `text` that has it (`"12 frames ("`
/// gives 12).
fn number_before(text: &str, phrase: &str) -> Result<u64> {
    text.lines()
        .find_map(|l| {
            let (head, _) = l.split_once(phrase)?;
            head.rsplit(|c: char| c.is_whitespace() || c == '(')
                .next()?
                .parse()
                .ok()
        })
        .with_context(|| format!("no number before {phrase:?} in:\n{text}"))
}

/// HTTP downloads between two processes in a namespace's own loopback device, captured there
/// by `mos-sensor --iface lo` with `mos-dump` attached: each frame is read once (the outgoing
/// copy skipped and counted, also in `mos-ctl status` while the capture runs), nothing reads
/// as retransmitted, checksums are not verified (and none counted bad), and every body is the
/// served file.
fn lo_run(tag: &str, workers: usize) -> Result<()> {
    let _one_at_a_time = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    need_tool("python3")?;
    let work = ScratchDir::new(&format!("live-{tag}"))?;
    let w = work.path();
    let www = w.join("www");
    let files = make_files(&www)?;
    let jobs: Vec<Served> = LO_JOBS.iter().map(|&i| files[i].clone()).collect();
    let jobs_path = w.join("jobs.json");
    let list: Vec<_> = jobs
        .iter()
        .map(|j| serde_json::json!({"name": j.name, "size": j.size, "sha256": j.sha256}))
        .collect();
    std::fs::write(&jobs_path, serde_json::to_vec(&list)?)?;
    let client_py = w.join("client.py");
    std::fs::write(&client_py, CLIENT_PY)?;
    let lo = LoNetns::new()?;
    let deadline = Instant::now() + TIMEOUT;
    const ADDR: &str = "127.0.0.1";

    let mut server = Proc::spawn(
        "http-server",
        {
            let mut c = in_ns(&lo.ns, Path::new("python3"));
            c.args(["-u", "-m", "http.server", &HTTP_PORT.to_string()])
                .args(["--bind", ADDR, "--directory"])
                .arg(&www);
            c
        },
        w,
    )?;
    wait_for("the HTTP server", TIMEOUT, || {
        if let Some(st) = server.poll()? {
            bail!(
                "the HTTP server exited with {st}:\n{}",
                tail(&server.stderr())
            );
        }
        Ok(server.stdout().contains("Serving HTTP"))
    })?;

    let control = w.join("c.sock");
    let out = w.join("out");
    let mut c = in_ns(&lo.ns, &sensor_bin()?);
    c.args(["--iface", "lo", "--workers", &workers.to_string()])
        .args([
            "--stop-after-idle",
            "3",
            "--lossless",
            "--wait-analyzers",
            "1",
        ])
        .arg("--control")
        .arg(&control);
    let mut sensor = Proc::spawn("sensor", c, w)?;
    wait_for_socket(&mut sensor, &control, TIMEOUT)?;
    let mut dump = Proc::spawn(
        "mos-dump",
        cmd(&bin("mos-dump")?, &[&"--control", &control, &"--out", &out]),
        w,
    )?;
    wait_for("the sensor to start capturing", TIMEOUT, || {
        if let Some(st) = sensor.poll()? {
            bail!(
                "the sensor exited with {st} before capturing:\n{}",
                tail(&sensor.stderr())
            );
        }
        Ok(capture_started(&sensor.stderr()))
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let start_line = sensor
        .stderr()
        .lines()
        .find(|l| l.starts_with("mos-sensor: capturing on lo"))
        .unwrap_or_default()
        .to_string();
    ensure!(
        start_line.contains("the outgoing copy skipped")
            && start_line.contains("TCP checksums are not verified"),
        "the start line does not say what happens on a loopback device: {start_line}"
    );

    let retrans_segs = |ns: &str| -> Result<u64> {
        tcp_counters(ns)?
            .get("TcpRetransSegs")
            .copied()
            .context("no RetransSegs in /proc/net/snmp")
    };
    let retrans_before = retrans_segs(&lo.ns)?;
    let mut client = Proc::spawn(
        "client",
        {
            let mut c = in_ns(&lo.ns, Path::new("python3"));
            c.arg(&client_py).args([ADDR, &HTTP_PORT.to_string(), "4"]);
            c.arg(&jobs_path);
            c
        },
        w,
    )?;
    client.expect_code(0, deadline.saturating_duration_since(Instant::now()))?;
    let fetched: Vec<Fetched> = client
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("client line {l:?}")))
        .collect::<Result<_>>()?;
    ensure!(
        fetched.len() == jobs.len() && fetched.iter().all(|f| f.ok),
        "downloads failed at the client (not the sensor's fault):\n{}",
        client.stdout()
    );

    // While the capture runs (it ends 3 s after the last frame), the status report counts the
    // skipped copies too.
    let st = Command::new(bin("mos-ctl")?)
        .arg("--control")
        .arg(&control)
        .args(["status", "--json"])
        .output()?;
    ensure!(
        st.status.success(),
        "mos-ctl status failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&st.stdout)?;
    let live_skipped = status["loopback_outgoing"].as_u64().unwrap_or(0);
    ensure!(
        live_skipped > 0 && status["drops"]["bad_checksum"] == 0,
        "mos-ctl status: {status}"
    );

    let ss = sensor.wait_until(deadline)?;
    let ds = dump.wait_until(deadline)?;
    let serr = sensor.stderr();
    ensure!(
        ss.code() == Some(0) && ds.code() == Some(0),
        "the sensor exited with {ss}, mos-dump with {ds}; sensor stderr:\n{}\nmos-dump stderr:\n{}",
        tail(&serr),
        tail(&dump.stderr())
    );
    assert_no_panic(&sensor)?;
    assert_no_panic(&dump)?;
    server.signal(rustix::process::Signal::TERM)?;
    let _ = server.wait(Duration::from_secs(5));

    let frames = number_before(&serr, " frames (")?;
    let skipped = number_before(&serr, " outgoing copies of frames skipped")?;
    let rexmit = number_before(&serr, " retransmitted,")?;
    let drops = number_before(&serr, " frames dropped by the capture")?;
    ensure!(drops == 0, "the capture dropped {drops} frames:\n{serr}");
    // Only this test's processes use the namespace's lo, so every frame read had its
    // outgoing copy skipped.
    ensure!(
        frames > 0 && skipped == frames && skipped >= live_skipped,
        "{frames} frames read, {skipped} outgoing copies skipped ({live_skipped} in the status \
         report):\n{serr}"
    );
    // The kernel retransmits on lo too, now and then (a tail loss probe while the client is
    // slow to read, on a busy machine): what the sensor counts must be what the senders did.
    let retrans = retrans_segs(&lo.ns)? - retrans_before;
    ensure!(
        rexmit <= retrans * 65_536,
        "{rexmit} bytes read as retransmitted, and the kernel retransmitted {retrans} segments \
         (of at most 64 KiB each on lo):\n{serr}"
    );
    ensure!(
        serr.contains(
            "TCP checksums not verified (a loopback device: the kernel leaves them to an \
             offload that never runs)"
        ) && !serr.contains("with bad TCP checksums"),
        "the summary should say checksums were not verified, not count them bad:\n{serr}"
    );
    if workers > 1 {
        let per: Vec<u64> = serr
            .lines()
            .find_map(|l| l.strip_prefix("mos-sensor: frames per worker: "))
            .context("no frames per worker")?
            .split(", ")
            .map(|n| n.parse().unwrap_or(0))
            .collect();
        ensure!(
            per.len() == workers && per.iter().all(|&n| n > 0),
            "every worker should have had frames: {per:?}"
        );
    }
    let (conns, bytes) = check_dump(&out, ADDR, ADDR, &jobs, &fetched).with_context(|| {
        format!(
            "sensor stderr:\n{}\nmos-dump stderr:\n{}",
            tail(&serr),
            tail(&dump.stderr())
        )
    })?;
    println!(
        "live {tag}: {conns} connections, {:.1} MiB served, {frames} frames read, {skipped} \
         outgoing copies skipped",
        bytes as f64 / f64::from(1 << 20)
    );
    println!("sensor stderr:\n{}", serr.trim_end());
    drop(lo);
    Ok(())
}

#[test]
fn afpacket_on_lo_one_worker_reads_each_frame_once() -> Result<()> {
    lo_run("lo-1w", 1)
}

#[test]
fn afpacket_on_lo_two_workers_read_each_frame_once() -> Result<()> {
    lo_run("lo-2w", 2)
}

/// DPDK's `net_af_packet` on lo gets both copies of every frame and no packet type to tell
/// them apart by: the sensor says so in one warning line, and runs.
#[test]
fn dpdk_af_packet_on_lo_warns_in_one_line() -> Result<()> {
    let _one_at_a_time = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let work = ScratchDir::new("live-dpdk-lo")?;
    let w = work.path();
    let lo = LoNetns::new()?;
    let mut c = in_ns(&lo.ns, &sensor_bin()?);
    c.args([
        "--dpdk",
        "--no-huge -m 256 --no-pci --no-shconf -l 0 --vdev=net_af_packet0,iface=lo,framecnt=8192",
        "--port",
        "0",
        "--stop-after-idle",
        "1",
        "--no-publish",
        "--dump",
    ])
    .arg(w.join("d"));
    let mut sensor = Proc::spawn("sensor", c, w)?;
    let st = sensor.wait(TIMEOUT)?;
    let err = sensor.stderr();
    assert_no_panic(&sensor)?;
    ensure!(st.code() == Some(0), "the sensor exited with {st}:\n{err}");
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("loopback device"))
        .collect();
    ensure!(
        warnings.len() == 1,
        "expected one line about the loopback device, got:\n{err}"
    );
    let line = warnings[0];
    for words in [
        "mos-sensor: warning: net_af_packet on the loopback device lo",
        "cannot tell the copies apart",
        "--iface",
    ] {
        ensure!(line.contains(words), "no {words:?} in {line:?}");
    }
    println!("{line}");
    drop(lo);
    Ok(())
}
