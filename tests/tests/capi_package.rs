//! libmos as a C programmer gets it: `deploy/install.sh` installs the library (libmos.so under
//! its version with the soname and development links, libmos.a, the headers, libmos.pc) into a
//! temporary prefix, a C analyzer is built from the installed files alone with
//! `cc prog.c $(pkg-config --cflags --libs libmos)` (and once more against libmos.a with
//! `pkg-config --static`), and both builds run against a real `mos-sensor --pcap` replaying
//! corpus captures: the connections the program saw through `MOS_ON_CONN_START` (client and
//! server by `mtcp_getpeername`) must be the connections of the sensor's own `--dump` of the
//! same run. A staged install (`--destdir`, for packaging) is checked file by file and
//! uninstalled.
//!
//! Builds nothing itself: needs the release binaries and libmos built beforehand
//! (`cargo build --release --bins && cargo build --release -p mos-capi`; scripts/test.sh's build
//! stage does both), a C compiler `cc`, `pkg-config` and `readelf` (scripts/setup.sh installs
//! them), and the corpus (`MOS_CORPUS_DIR`). Every child is killed if its test fails, and every
//! wait has a deadline.

use anyhow::{bail, ensure, Context, Result};
use mos_tests::addr::parse_endpoint;
use mos_tests::flows::parse_flows;
use mos_tests::locate::{corpus_dir, sensor_bin, workspace_root};
use mos_tests::procs::{assert_no_panic, cmd, tail, wait_for_socket, Proc};
use mos_tests::runner::ScratchDir;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The longest any process of these tests may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Sensor workers in the runs: the program runs one context per worker (its default
/// `num_cores`), so the sensor waits for that many attachments.
const WORKERS: usize = 2;

/// IPv4 captures (the program prints `struct sockaddr_in` addresses): one whose connections
/// start with handshakes (9 connections, retransmissions), one whose connections are all picked
/// up midstream (24).
const CAPTURES: [&str; 2] = ["ndpi__hpvirtgrp.pcap", "ndpi__bittorrent.pcap"];

/// The C analyzer: one context per `num_cores`, a stream monitoring socket each, CONN_START at
/// both hooks; a connection is counted (and printed) at its first CONN_START, marked by its
/// per-flow user context. Prints `conn CLIENT SERVER` per connection, then
/// `contexts N connections M`. Exits 1 if a call fails, 2 if a callback saw something wrong.
const PROGRAM: &str = r#"#define _POSIX_C_SOURCE 200809L
#include <mos_api.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define MAX_CONTEXTS 64

static int connections[MAX_CONTEXTS]; /* per context: each runs its callbacks on one thread */
static int errors[MAX_CONTEXTS];
static char counted; /* the user context of a connection already counted */

static void on_start(mctx_t mctx, int sock, int side, event_t event, filter_arg_t *arg)
{
	struct sockaddr_in addrs[2];
	socklen_t len = sizeof(addrs);
	char cli[INET_ADDRSTRLEN], svr[INET_ADDRSTRLEN];

	UNUSED(side);
	UNUSED(arg);
	if (event != MOS_ON_CONN_START) {
		fprintf(stderr, "on_start: event %llu\n", (unsigned long long)event);
		errors[mctx->cpu]++;
		return;
	}
	if (mtcp_get_uctx(mctx, sock) == &counted)
		return; /* the other side's CONN_START */
	if (mtcp_set_uctx(mctx, sock, &counted) != 0) {
		fprintf(stderr, "mtcp_set_uctx(%d): %s\n", sock, strerror(errno));
		errors[mctx->cpu]++;
		return;
	}
	connections[mctx->cpu]++;
	if (mtcp_getpeername(mctx, sock, (struct sockaddr *)addrs, &len, MOS_SIDE_BOTH) != 0) {
		fprintf(stderr, "mtcp_getpeername(%d): %s\n", sock, strerror(errno));
		errors[mctx->cpu]++;
		return;
	}
	if (addrs[MOS_SIDE_CLI].sin_family != AF_INET || addrs[MOS_SIDE_SVR].sin_family != AF_INET ||
	    !inet_ntop(AF_INET, &addrs[MOS_SIDE_CLI].sin_addr, cli, sizeof(cli)) ||
	    !inet_ntop(AF_INET, &addrs[MOS_SIDE_SVR].sin_addr, svr, sizeof(svr))) {
		fprintf(stderr, "mtcp_getpeername(%d): not two IPv4 addresses\n", sock);
		errors[mctx->cpu]++;
		return;
	}
	printf("conn %s:%u %s:%u\n", cli, (unsigned)ntohs(addrs[MOS_SIDE_CLI].sin_port), svr,
	       (unsigned)ntohs(addrs[MOS_SIDE_SVR].sin_port));
}

int main(void)
{
	struct mtcp_conf conf;
	mctx_t mctx[MAX_CONTEXTS];
	int i, sock, total = 0, bad = 0;

	if (mtcp_init(NULL) != 0) {
		perror("mtcp_init");
		return 1;
	}
	if (mtcp_getconf(&conf) != 0) {
		perror("mtcp_getconf");
		return 1;
	}
	if (conf.num_cores < 1 || conf.num_cores > MAX_CONTEXTS) {
		fprintf(stderr, "num_cores %d\n", conf.num_cores);
		return 1;
	}
	for (i = 0; i < conf.num_cores; i++) {
		mctx[i] = mtcp_create_context(i);
		if (!mctx[i]) {
			perror("mtcp_create_context");
			return 1;
		}
		sock = mtcp_socket(mctx[i], AF_INET, MOS_SOCK_MONITOR_STREAM, 0);
		if (sock < 0) {
			perror("mtcp_socket");
			return 1;
		}
		if (mtcp_register_callback(mctx[i], sock, MOS_ON_CONN_START, MOS_HK_SND, on_start) != 0 ||
		    mtcp_register_callback(mctx[i], sock, MOS_ON_CONN_START, MOS_HK_RCV, on_start) != 0) {
			perror("mtcp_register_callback");
			return 1;
		}
	}
	for (i = 0; i < conf.num_cores; i++)
		mtcp_app_join(mctx[i]);
	for (i = 0; i < conf.num_cores; i++) {
		total += connections[i];
		bad += errors[i];
		if (mtcp_destroy_context(mctx[i]) != 0) {
			perror("mtcp_destroy_context");
			return 1;
		}
	}
	if (mtcp_destroy() != 0) {
		perror("mtcp_destroy");
		return 1;
	}
	printf("contexts %d connections %d\n", conf.num_cores, total);
	return bad ? 2 : 0;
}
"#;

// ---------------------------------------------------------------------------------------------
// Tools and the install

/// Runs a command to its end, failing with its output unless it exits 0; returns its stdout.
fn run_ok(mut c: Command) -> Result<String> {
    let what = format!("{c:?}");
    let out = c.output().with_context(|| format!("running {what}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "{what} exited with {}:\n{}",
        out.status,
        tail(&text)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails, naming the package, unless `tool` runs.
fn need_tool(tool: &str, arg: &str, package: &str) -> Result<()> {
    match Command::new(tool).arg(arg).output() {
        Ok(_) => Ok(()),
        Err(e) => bail!("{tool} cannot be run ({e}): install {package} (scripts/setup.sh does)"),
    }
}

/// The directory of the built binaries and libmos (the sensor's: `target/release` in the
/// suite), failing clearly when libmos was not built.
fn built_dir() -> Result<PathBuf> {
    let dir = sensor_bin()?
        .parent()
        .context("the sensor binary has no directory")?
        .to_path_buf();
    for lib in ["libmos.so", "libmos.a"] {
        ensure!(
            dir.join(lib).is_file(),
            "{} is not built: build libmos first with `cargo build --release -p mos-capi` \
             (scripts/test.sh's build stage does); this test builds nothing itself",
            dir.join(lib).display()
        );
    }
    Ok(dir)
}

/// `deploy/install.sh --no-build --from BUILT ARGS...`, with no DESTDIR from the environment.
fn install_sh(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Result<String> {
    let mut c = Command::new("bash");
    c.arg(workspace_root().join("deploy/install.sh"))
        .arg("--no-build")
        .arg("--from")
        .arg(built_dir()?)
        .env_remove("DESTDIR");
    for a in args {
        c.arg(a.as_ref());
    }
    run_ok(c)
}

/// The NEEDED entries of an ELF file's dynamic section, by readelf.
fn needed(elf: &Path) -> Result<Vec<String>> {
    let mut c = Command::new("readelf");
    c.arg("-d").arg(elf);
    let out = run_ok(c)?;
    Ok(out
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.rsplit_once('[')?.1.trim_end_matches(']').to_string()))
        .collect())
}

/// The SONAME of a shared library, by readelf.
fn read_soname(lib: &Path) -> Result<String> {
    let mut c = Command::new("readelf");
    c.arg("-d").arg(lib);
    let out = run_ok(c)?;
    out.lines()
        .find(|l| l.contains("(SONAME)"))
        .and_then(|l| Some(l.rsplit_once('[')?.1.trim_end_matches(']').to_string()))
        .with_context(|| format!("{} has no SONAME:\n{out}", lib.display()))
}

/// The soname programs must need: `libmos.so.MAJOR`, the workspace version's major.
fn expected_soname() -> String {
    let major = env!("CARGO_PKG_VERSION").split('.').next().unwrap_or("0");
    format!("libmos.so.{major}")
}

/// `sh -c SCRIPT` with `PKG_CONFIG_PATH` the installed pkgconfig directory and the given
/// variables (so that paths need no quoting in the script).
fn sh(script: &str, pkgconfig: &Path, vars: &[(&str, &Path)]) -> Result<String> {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(script)
        .env("PKG_CONFIG_PATH", pkgconfig)
        .env_remove("PKG_CONFIG_SYSROOT_DIR");
    for (k, v) in vars {
        c.env(k, v);
    }
    run_ok(c)
}

// ---------------------------------------------------------------------------------------------
// Running a C analyzer beside the sensor

/// What the program printed: its connections (client, server), sorted, and its summary.
struct Seen {
    conns: Vec<(SocketAddr, SocketAddr)>,
    contexts: usize,
    count: usize,
}

fn parse_seen(stdout: &str) -> Result<Seen> {
    let mut conns = Vec::new();
    let mut summary = None;
    for line in stdout.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["conn", c, s] => conns.push((parse_endpoint(c)?, parse_endpoint(s)?)),
            ["contexts", n, "connections", m] => {
                ensure!(summary.is_none(), "two summary lines in:\n{stdout}");
                summary = Some((n.parse()?, m.parse()?));
            }
            _ => bail!("unexpected line {line:?} in:\n{stdout}"),
        }
    }
    let (contexts, count) = summary.with_context(|| format!("no summary line in:\n{stdout}"))?;
    conns.sort();
    Ok(Seen {
        conns,
        contexts,
        count,
    })
}

/// Replays `capture` with `--dump` to `program` (environment `env`), and checks that the
/// program saw the dump's connections, each once, in one context per sensor worker.
fn check_run(
    work: &Path,
    tag: &str,
    program: &Path,
    env: &[(&str, &Path)],
    capture: &str,
) -> Result<()> {
    let pcap = corpus_dir()?.join("pcaps").join(capture);
    let control = work.join(format!("{tag}.sock"));
    let dump = work.join(format!("{tag}-dump"));
    let workers = WORKERS.to_string();
    let mut sensor = Proc::spawn(
        &format!("{tag}-sensor"),
        cmd(
            &sensor_bin()?,
            &[
                &"--no-config",
                &"--pcap",
                &pcap,
                &"--control",
                &control,
                &"--workers",
                &workers,
                &"--wait-analyzers",
                &workers,
                &"--dump",
                &dump,
                &"--quiet",
            ],
        ),
        work,
    )?;
    wait_for_socket(&mut sensor, &control, TIMEOUT)?;
    let mut c = Command::new(program);
    c.env("MOS_CONTROL", &control)
        .env("MOS_ATTACH_WAIT", "10")
        .env_remove("LD_LIBRARY_PATH");
    for (k, v) in env {
        c.env(k, v);
    }
    let mut prog = Proc::spawn(tag, c, work)?;
    // A program that fails leaves the sensor waiting for it: stop then (the guards kill it).
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(st) = prog.poll()? {
            ensure!(
                st.success(),
                "{tag} ({capture}) exited with {st}; stderr:\n{}\nsensor stderr:\n{}",
                tail(&prog.stderr()),
                tail(&sensor.stderr())
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{tag} ({capture}) did not finish in {TIMEOUT:?}; its stderr:\n{}\nsensor stderr:\n{}",
            tail(&prog.stderr()),
            tail(&sensor.stderr())
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    sensor.expect_code(0, TIMEOUT)?;
    assert_no_panic(&sensor)?;
    assert_no_panic(&prog)?;

    let seen = parse_seen(&prog.stdout()).with_context(|| format!("{tag} on {capture}"))?;
    let flows = parse_flows(
        &std::fs::read_to_string(dump.join("flows.jsonl"))
            .with_context(|| format!("the sensor's dump of {capture}"))?,
    )?;
    let mut want = flows
        .iter()
        .map(|f| Ok((parse_endpoint(&f.client)?, parse_endpoint(&f.server)?)))
        .collect::<Result<Vec<_>>>()?;
    want.sort();
    ensure!(!want.is_empty(), "the dump of {capture} has no connection");
    ensure!(
        seen.contexts == WORKERS,
        "{tag} ran {} contexts, the sensor has {WORKERS} workers",
        seen.contexts
    );
    ensure!(
        seen.count == seen.conns.len(),
        "{tag} counted {} connections and printed {}",
        seen.count,
        seen.conns.len()
    );
    if seen.conns != want {
        // Both as multisets: a connection printed twice is one too many.
        let mut balance: BTreeMap<&(SocketAddr, SocketAddr), i64> = BTreeMap::new();
        for c in &want {
            *balance.entry(c).or_default() += 1;
        }
        for c in &seen.conns {
            *balance.entry(c).or_default() -= 1;
        }
        let missing: Vec<_> = balance.iter().filter(|(_, n)| **n > 0).collect();
        let extra: Vec<_> = balance
            .iter()
            .filter(|(_, n)| **n < 0)
            .map(|(c, n)| (c, -n))
            .collect();
        bail!(
            "{tag} on {capture}: {} connections through CONN_START, the dump has {}; \
             (client, server) not seen, with how many times: {missing:?}; \
             seen more often than in the dump, with how many times more: {extra:?}",
            seen.conns.len(),
            want.len()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn an_installed_libmos_builds_and_runs_a_c_analyzer_through_pkg_config() -> Result<()> {
    need_tool("cc", "--version", "a C compiler (gcc)")?;
    need_tool("pkg-config", "--version", "pkg-config")?;
    need_tool("readelf", "--version", "binutils")?;
    let scratch = ScratchDir::new("capi-package")?;
    let work = scratch.path();
    let prefix = work.join("prefix");
    install_sh(&[&"--prefix", &prefix])?;
    let libdir = prefix.join("lib");
    let pkgconfig = libdir.join("pkgconfig");

    // pkg-config finds this install, at the workspace's version.
    let version = sh("pkg-config --modversion libmos", &pkgconfig, &[])?;
    ensure!(
        version.trim() == env!("CARGO_PKG_VERSION"),
        "pkg-config says libmos {}, the workspace is {}",
        version.trim(),
        env!("CARGO_PKG_VERSION")
    );
    let at = sh("pkg-config --variable=prefix libmos", &pkgconfig, &[])?;
    ensure!(
        Path::new(at.trim()) == prefix,
        "pkg-config found libmos at {}, not in {}",
        at.trim(),
        prefix.display()
    );

    // Built from the installed files, as the header says.
    let src = work.join("prog.c");
    std::fs::write(&src, PROGRAM)?;
    let dynamic = work.join("prog");
    sh(
        r#"cc -std=c99 -Wall -Wextra -Werror -o "$OUT" "$SRC" $(pkg-config --cflags --libs libmos)"#,
        &pkgconfig,
        &[("SRC", &src), ("OUT", &dynamic)],
    )?;
    let statik = work.join("prog-static");
    sh(
        r#"cc -std=c99 -Wall -Wextra -Werror -o "$OUT" "$SRC" $(pkg-config --cflags libmos) \
            $(pkg-config --static --libs libmos | sed 's/-lmos\b/-l:libmos.a/')"#,
        &pkgconfig,
        &[("SRC", &src), ("OUT", &statik)],
    )?;

    // The dynamic one loads libmos by its soname; the static one needs no libmos at all.
    let soname = expected_soname();
    let dyn_needed = needed(&dynamic)?;
    ensure!(
        dyn_needed
            .iter()
            .filter(|n| n.starts_with("libmos"))
            .collect::<Vec<_>>()
            == [&soname],
        "the program built against libmos.so needs {dyn_needed:?}, expected {soname} among them"
    );
    let static_needed = needed(&statik)?;
    ensure!(
        !static_needed.iter().any(|n| n.starts_with("libmos")),
        "the program built against libmos.a needs {static_needed:?}"
    );

    for capture in CAPTURES {
        check_run(
            work,
            &format!("dynamic-{}", capture.trim_end_matches(".pcap")),
            &dynamic,
            &[("LD_LIBRARY_PATH", &libdir)],
            capture,
        )?;
        check_run(
            work,
            &format!("static-{}", capture.trim_end_matches(".pcap")),
            &statik,
            &[],
            capture,
        )?;
    }
    Ok(())
}

#[test]
fn a_staged_install_lays_out_libmos_and_uninstalls_it() -> Result<()> {
    need_tool("pkg-config", "--version", "pkg-config")?;
    need_tool("readelf", "--version", "binutils")?;
    let built = built_dir()?;
    let scratch = ScratchDir::new("capi-package-staged")?;
    let stage = scratch.path().join("stage");
    install_sh(&[&"--destdir", &stage, &"--prefix", &"/usr/local"])?;
    let root = stage.join("usr/local");
    let lib = root.join("lib");
    let version = env!("CARGO_PKG_VERSION");
    let soname = expected_soname();

    // The library under its version, the soname's link to it, the development link to that.
    let real = lib.join(format!("libmos.so.{version}"));
    let meta = std::fs::symlink_metadata(&real)
        .with_context(|| format!("{} not installed", real.display()))?;
    ensure!(meta.is_file(), "{} is not a file", real.display());
    ensure!(
        std::fs::read(&real)? == std::fs::read(built.join("libmos.so"))?,
        "{} is not the built libmos.so",
        real.display()
    );
    ensure!(
        read_soname(&real)? == soname,
        "{} has another soname",
        real.display()
    );
    for (link, to) in [
        (soname.clone(), format!("libmos.so.{version}")),
        ("libmos.so".to_string(), soname.clone()),
    ] {
        let target = std::fs::read_link(lib.join(&link))
            .with_context(|| format!("{link} is not a symbolic link in {}", lib.display()))?;
        ensure!(
            target == Path::new(&to),
            "{link} points to {}, not {to}",
            target.display()
        );
    }
    ensure!(
        std::fs::read(lib.join("libmos.a"))? == std::fs::read(built.join("libmos.a"))?,
        "libmos.a is not the built one"
    );
    for h in ["mos_api.h", "mtcp_api.h"] {
        let installed = std::fs::read(root.join("include").join(h))
            .with_context(|| format!("{h} not installed"))?;
        ensure!(
            installed == std::fs::read(workspace_root().join("capi/include").join(h))?,
            "the installed {h} differs from capi/include/{h}"
        );
    }

    // libmos.pc names the final prefix, not the staging directory; with the stage as sysroot
    // pkg-config points into it.
    let pc = std::fs::read_to_string(lib.join("pkgconfig/libmos.pc"))?;
    ensure!(
        pc.lines().any(|l| l == "prefix=/usr/local") && !pc.contains(&*stage.to_string_lossy()),
        "libmos.pc:\n{pc}"
    );
    ensure!(!pc.contains('@'), "placeholders left in libmos.pc:\n{pc}");
    let mut c = Command::new("pkg-config");
    c.args(["--cflags", "--libs", "libmos"])
        .env("PKG_CONFIG_PATH", lib.join("pkgconfig"))
        .env("PKG_CONFIG_SYSROOT_DIR", &stage);
    let flags: Vec<String> = run_ok(c)?.split_whitespace().map(str::to_string).collect();
    let want = [
        format!("-I{}", root.join("include").display()),
        format!("-L{}", lib.display()),
        "-lmos".to_string(),
    ];
    ensure!(
        flags == want,
        "pkg-config gave {flags:?}, expected {want:?}"
    );

    // Uninstalled with the rest: no file of libmos is left (nor any other).
    install_sh(&[
        &"--uninstall",
        &"--purge",
        &"--destdir",
        &stage,
        &"--prefix",
        &"/usr/local",
    ])?;
    let mut left = Vec::new();
    let mut todo = vec![stage.clone()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                todo.push(e.path());
            } else {
                left.push(e.path());
            }
        }
    }
    ensure!(left.is_empty(), "left after uninstall --purge: {left:?}");
    Ok(())
}
