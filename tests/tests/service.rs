//! mos as a service: the systemd units (verified, and their exposure as README states it), the
//! install script (into a temporary prefix, twice, then uninstalled), the installed sensor run
//! with the installed configuration on a corpus capture while an installed analyzer is
//! attached and `mos-ctl` reads its state, readiness and stop notifications, journal log
//! levels, SIGHUP and SIGTERM, and a check that nothing is left behind.
//!
//! Needs the workspace's release binaries and libmos (`cargo build --release --bins` and
//! `cargo build --release -p mos-capi`: the install script is run with `--no-build --from`
//! their directory, since cargo cannot be run from inside a test it runs), and systemd-analyze
//! (package systemd). Runs as root in CI; the parts that need root say so when they are not.

use anyhow::{ensure, Context, Result};
use mos_tests::locate::{bin, corpus_dir, sensor_bin, workspace_root, SHIPPED_BINARIES};
use mos_tests::procs::{
    assert_no_panic, cmd, copy_for_other_users, open_to_other_users, tail, wait_for,
    wait_for_socket, Proc,
};
use mos_tests::runner::ScratchDir;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A corpus capture of about 25 s and 3000 frames: replayed at twice its pace it runs long
/// enough to be looked at while it runs.
const CAPTURE: &str = "suricata-verify__bug-5162__input.pcap";

/// Runs a command to its end, failing with its output unless it exits 0.
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

/// An install into a temporary prefix, by deploy/install.sh with the binaries built already.
struct Install {
    prefix: PathBuf,
}

impl Install {
    fn new(prefix: &Path) -> Result<Install> {
        let from = sensor_bin()?
            .parent()
            .context("the sensor binary has no directory")?
            .to_path_buf();
        let mut c = Command::new("bash");
        c.arg(workspace_root().join("deploy/install.sh"))
            .arg("--prefix")
            .arg(prefix)
            .arg("--no-build")
            .arg("--from")
            .arg(&from);
        run_ok(c)?;
        Ok(Install {
            prefix: prefix.to_path_buf(),
        })
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.prefix.join("bin").join(name)
    }

    fn unit(&self, name: &str) -> PathBuf {
        self.prefix.join("lib/systemd/system").join(name)
    }

    fn config(&self) -> PathBuf {
        self.prefix.join("etc/mos/sensor.toml")
    }
}

/// Every file under `dir` (relative paths), with its size and modification time.
fn tree(dir: &Path) -> Result<BTreeSet<(String, u64)>> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let m = e.metadata()?;
            if m.is_dir() {
                todo.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir)?.display().to_string();
                out.insert((rel, m.len()));
            }
        }
    }
    Ok(out)
}

#[test]
fn install_is_idempotent_keeps_an_edited_config_and_uninstalls() -> Result<()> {
    let scratch = ScratchDir::new("service-install")?;
    let prefix = scratch.path().join("prefix");
    let inst = Install::new(&prefix)?;
    for b in SHIPPED_BINARIES {
        ensure!(inst.bin(b).is_file(), "{b} not installed");
    }
    for f in [
        "lib/mos/hugepages.sh",
        "lib/mos/install-manifest",
        "etc/mos/sensor.toml",
        "etc/mos/analyzers/flowstat.env",
        "etc/mos/analyzers/dump.env",
        "etc/mos/analyzers/log.env",
        "etc/mos/analyzers/grep.env",
        "etc/mos/analyzers/pcap.env",
        "etc/mos/metrics.env",
        "share/doc/mos/README.md",
        "share/doc/mos/docs/CONFIG.md",
        "lib/systemd/system/mos-sensor.service",
        "lib/systemd/system/mos-analyzer@.service",
        "lib/systemd/system/mos-metrics.service",
    ] {
        ensure!(prefix.join(f).is_file(), "{f} not installed");
    }
    // The units name the installed paths, none of the placeholders.
    let unit = std::fs::read_to_string(inst.unit("mos-sensor.service"))?;
    ensure!(!unit.contains("@bindir@") && !unit.contains("@sysconfdir@"));
    ensure!(unit.contains(&format!(
        "ExecStart={}/bin/mos-sensor --config {}/etc/mos/sensor.toml",
        prefix.display(),
        prefix.display()
    )));
    // The sensor may open no TCP or UDP socket; the metrics server is another unit.
    let families = unit
        .lines()
        .find_map(|l| l.strip_prefix("RestrictAddressFamilies="))
        .context("the sensor unit restricts no address families")?;
    ensure!(
        !families.contains("AF_INET"),
        "the sensor unit allows {families}"
    );
    let metrics = std::fs::read_to_string(inst.unit("mos-metrics.service"))?;
    ensure!(metrics.contains(&format!(
        "EnvironmentFile=-{}/etc/mos/metrics.env",
        prefix.display()
    )));
    ensure!(metrics.contains(&format!(
        "ExecStart={}/bin/mos-ctl --control /run/mos/control.sock metrics --listen ${{MOS_METRICS_LISTEN}}",
        prefix.display()
    )));
    ensure!(std::fs::read_to_string(prefix.join("etc/mos/metrics.env"))?
        .lines()
        .any(|l| l == "MOS_METRICS_LISTEN=127.0.0.1:9477"));
    // Again: the same files; an edited configuration is kept.
    let first = tree(&prefix)?;
    let edited = format!(
        "{}\n# edited by the test\n",
        std::fs::read_to_string(inst.config())?
    );
    std::fs::write(inst.config(), &edited)?;
    Install::new(&prefix)?;
    let mut second = tree(&prefix)?;
    second.retain(|(f, _)| f != "etc/mos/sensor.toml");
    let mut first_wo = first.clone();
    first_wo.retain(|(f, _)| f != "etc/mos/sensor.toml");
    ensure!(first_wo == second, "a second install changed the files");
    ensure!(std::fs::read_to_string(inst.config())? == edited);

    // Uninstall keeps the configuration; --purge removes it; then no file is left.
    let uninstall = |purge: bool| -> Result<String> {
        let mut c = Command::new("bash");
        c.arg(workspace_root().join("deploy/install.sh"))
            .arg("--uninstall")
            .arg("--prefix")
            .arg(&prefix);
        if purge {
            c.arg("--purge");
        }
        run_ok(c)
    };
    let said = uninstall(false)?;
    ensure!(said.contains("kept the configuration"), "{said}");
    let left: Vec<String> = tree(&prefix)?.into_iter().map(|(f, _)| f).collect();
    ensure!(
        left.iter().all(|f| f.starts_with("etc/mos/")),
        "left after uninstall: {left:?}"
    );
    Install::new(&prefix)?;
    uninstall(true)?;
    let left = tree(&prefix)?;
    ensure!(left.is_empty(), "left after uninstall --purge: {left:?}");
    // Without an install there is nothing to uninstall: a clear error.
    let mut c = Command::new("bash");
    c.arg(workspace_root().join("deploy/install.sh"))
        .arg("--uninstall")
        .arg("--prefix")
        .arg(&prefix);
    let out = c.output()?;
    ensure!(!out.status.success());
    ensure!(String::from_utf8_lossy(&out.stderr).contains("no install manifest"));
    Ok(())
}

/// `systemd-analyze`, or a clear failure naming the package.
/// A staged install for packaging (`--destdir`, prefix /usr) holds the manual pages, gzipped,
/// and the bash and zsh completions where Debian looks for them, records them in its
/// manifest, and `--uninstall` removes them.
#[test]
fn a_destdir_install_has_the_manual_pages_and_completions_and_uninstall_removes_them() -> Result<()>
{
    let scratch = ScratchDir::new("service-install-destdir")?;
    let dest = scratch.path().join("stage");
    let from = sensor_bin()?
        .parent()
        .context("the sensor binary has no directory")?
        .to_path_buf();
    let script = workspace_root().join("deploy/install.sh");
    let mut c = Command::new("bash");
    c.arg(&script)
        .args(["--prefix", "/usr", "--destdir"])
        .arg(&dest)
        .arg("--no-build")
        .arg("--from")
        .arg(&from);
    run_ok(c)?;
    let binaries = SHIPPED_BINARIES;
    let mut ours = Vec::new();
    for b in binaries {
        ours.push(format!("usr/share/man/man1/{b}.1.gz"));
        ours.push(format!("usr/share/bash-completion/completions/{b}"));
        ours.push(format!("usr/share/zsh/vendor-completions/_{b}"));
    }
    for p in [
        "man5/mos-sensor.toml.5.gz",
        "man3/libmos.3.gz",
        "man3/mos_api.3.gz",
        "man3/mtcp_init.3.gz",
        "man3/mtcp_peek.3.gz",
        "man3/mtcp_ppeek.3.gz",
        "man3/mtcp_register_callback.3.gz",
        "man3/mtcp_setlastpkt.3.gz",
    ] {
        ours.push(format!("usr/share/man/{p}"));
    }
    let manifest = std::fs::read_to_string(dest.join("usr/lib/mos/install-manifest"))?;
    for f in &ours {
        let p = dest.join(f);
        ensure!(p.is_file(), "{f} not installed");
        ensure!(
            manifest.lines().any(|l| l == format!("/{f}")),
            "{f} is not in the manifest"
        );
    }
    // The pages are gzip files that man reads (a link page through the page it names).
    let man_dir = dest.join("usr/share/man");
    for page in [
        "man1/mos-sensor.1.gz",
        "man3/mtcp_ppeek.3.gz",
        "man5/mos-sensor.toml.5.gz",
    ] {
        let bytes = std::fs::read(man_dir.join(page))?;
        ensure!(bytes.starts_with(&[0x1f, 0x8b]), "{page} is not gzipped");
        let out = Command::new("man")
            .current_dir(&man_dir)
            .env("LC_ALL", "C.UTF-8")
            .env("MANWIDTH", "80")
            .args(["--warnings", "-E", "UTF-8", "-l", page])
            .output()
            .context("running man (Debian package man-db)")?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success() && err.trim().is_empty(),
            "man -l {page}: {err}"
        );
        ensure!(String::from_utf8_lossy(&out.stdout).contains("NAME"));
    }
    // bash loads the installed completion.
    let comp = dest.join("usr/share/bash-completion/completions/mos-sensor");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("source {comp:?} && complete -p mos-sensor"))
        .output()?;
    ensure!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("mos-sensor"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = Command::new("bash");
    c.arg(&script)
        .args(["--uninstall", "--purge", "--prefix", "/usr", "--destdir"])
        .arg(&dest);
    run_ok(c)?;
    for f in &ours {
        ensure!(!dest.join(f).exists(), "{f} left after --uninstall");
    }
    let left: Vec<String> = tree(&dest)?.into_iter().map(|(f, _)| f).collect();
    ensure!(left.is_empty(), "left after uninstall --purge: {left:?}");
    Ok(())
}

fn systemd_analyze() -> Result<Command> {
    let ok = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    ensure!(
        ok,
        "systemd-analyze not found: install the package systemd (scripts/setup.sh does)"
    );
    Ok(Command::new("systemd-analyze"))
}

#[test]
fn the_units_verify() -> Result<()> {
    let scratch = ScratchDir::new("service-verify")?;
    let inst = Install::new(&scratch.path().join("prefix"))?;
    // The template is verified through an instance: systemd-analyze finds the template file
    // beside it.
    let instance = scratch
        .path()
        .join("prefix/lib/systemd/system/mos-analyzer@flowstat.service");
    std::fs::copy(inst.unit("mos-analyzer@.service"), &instance)?;
    for unit in [
        inst.unit("mos-sensor.service"),
        instance.clone(),
        inst.unit("mos-metrics.service"),
    ] {
        let mut c = systemd_analyze()?;
        c.args(["verify", "--man=no"]).arg(&unit);
        let out = c.output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Only what concerns our units: other units of the host are not ours to judge.
        let ours: Vec<&str> = text.lines().filter(|l| l.contains("mos-")).collect();
        ensure!(
            out.status.success() && ours.is_empty(),
            "systemd-analyze verify {}: {}\n{text}",
            unit.display(),
            out.status
        );
    }
    Ok(())
}

/// `(score, level)` of `systemd-analyze security --offline=true UNIT`.
fn exposure(unit: &Path) -> Result<(f64, String)> {
    let mut c = systemd_analyze()?;
    c.args(["security", "--offline=true", "--no-pager"])
        .arg(unit);
    let out = c.output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .with_context(|| {
            format!(
                "no exposure level from systemd-analyze security {}:\n{text}{}",
                unit.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let after = line.rsplit(':').next().unwrap_or_default();
    let mut words = after.split_whitespace();
    let score: f64 = words.next().unwrap_or_default().parse()?;
    let level = words.next().unwrap_or_default().to_string();
    Ok((score, level))
}

#[test]
fn the_units_are_exposed_ok_or_better_as_the_readme_says() -> Result<()> {
    let scratch = ScratchDir::new("service-security")?;
    let inst = Install::new(&scratch.path().join("prefix"))?;
    let (score, level) = exposure(&inst.unit("mos-sensor.service"))?;
    ensure!(
        ["PERFECT", "SAFE", "OK"].contains(&level.as_str()),
        "the sensor unit's exposure is {score} {level}"
    );
    let instance = scratch
        .path()
        .join("prefix/lib/systemd/system/mos-analyzer@flowstat.service");
    std::fs::copy(inst.unit("mos-analyzer@.service"), &instance)?;
    let (ascore, alevel) = exposure(&instance)?;
    ensure!(
        ["PERFECT", "SAFE", "OK"].contains(&alevel.as_str()),
        "the analyzer unit's exposure is {ascore} {alevel}"
    );
    let (mscore, mlevel) = exposure(&inst.unit("mos-metrics.service"))?;
    ensure!(
        ["PERFECT", "SAFE", "OK"].contains(&mlevel.as_str()),
        "the metrics unit's exposure is {mscore} {mlevel}"
    );
    // README states the figures as systemd-analyze prints them.
    let readme = std::fs::read_to_string(workspace_root().join("README.md"))?;
    for (unit, s, l) in [
        ("mos-sensor.service", score, &level),
        ("mos-analyzer@.service", ascore, &alevel),
        ("mos-metrics.service", mscore, &mlevel),
    ] {
        let figure = format!("{s:.1} {l}");
        ensure!(
            readme
                .lines()
                .any(|line| line.contains(unit) && line.contains(&figure)),
            "README.md should give the exposure of {unit} as \"{figure}\" on the line naming it"
        );
    }
    Ok(())
}

/// A datagram socket standing in for systemd's notification socket.
struct NotifySocket {
    fd: std::os::fd::OwnedFd,
    path: PathBuf,
}

impl NotifySocket {
    fn new(path: &Path) -> Result<NotifySocket> {
        use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
        Ok(NotifySocket {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Every notification received so far.
    fn take(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok((n, _)) =
            rustix::net::recv(&self.fd, &mut buf[..], rustix::net::RecvFlags::DONTWAIT)
        {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }
}

/// Processes whose command line starts with something under `dir`.
fn processes_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    let dir = dir.display().to_string();
    for e in rd.flatten() {
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            let first = cmdline.split(|&b| b == 0).next().unwrap_or_default();
            let first = String::from_utf8_lossy(first);
            if first.starts_with(&dir) {
                out.push(format!("{} {first}", e.file_name().to_string_lossy()));
            }
        }
    }
    out
}

#[test]
fn the_installed_sensor_runs_with_its_config_and_leaves_nothing_behind() -> Result<()> {
    let pcap = corpus_dir()?.join("pcaps").join(CAPTURE);
    let scratch = ScratchDir::new("service-run")?;
    let work = scratch.path();
    let prefix = work.join("prefix");
    let inst = Install::new(&prefix)?;
    let run = work.join("run");
    std::fs::create_dir_all(&run)?;
    let control = run.join("control.sock");
    let notify = NotifySocket::new(&work.join("notify.sock"))?;
    let gid = rustix::process::getegid().as_raw().to_string();

    // The installed configuration, with the input and the places a test may use given on the
    // command line (they override the file).
    let mut c = cmd(
        &inst.bin("mos-sensor"),
        &[
            &"--config",
            &inst.config(),
            &"--pcap",
            &pcap,
            &"--speed",
            &"2",
            &"--control",
            &control,
            &"--allow-group",
            &gid,
        ],
    );
    c.env("NOTIFY_SOCKET", &notify.path);
    let mut sensor = Proc::spawn("sensor", c, work)?;
    wait_for_socket(&mut sensor, &control, TIMEOUT)?;
    // READY=1 comes once the socket listens (it may arrive a moment after the file appears).
    let mut seen = Vec::new();
    wait_for("READY=1", TIMEOUT, || {
        seen.extend(notify.take());
        Ok(seen.iter().any(|m| m.lines().any(|l| l == "READY=1")))
    })?;
    ensure!(
        sensor
            .stderr()
            .contains(&format!("configuration from {}", inst.config().display())),
        "the sensor did not say it read its configuration:\n{}",
        sensor.stderr()
    );

    let mut flowstat = Proc::spawn(
        "flowstat",
        cmd(
            &inst.bin("mos-flowstat"),
            &[&"--control", &control, &"--interval", &"0.5"],
        ),
        work,
    )?;
    let ctl = |args: &[&str]| -> Result<String> {
        let mut c = Command::new(inst.bin("mos-ctl"));
        c.args(args).arg("--control").arg(&control);
        run_ok(c)
    };
    // Status while it runs: the analyzer is listed with its pid, frames are counted.
    let mut status = String::new();
    wait_for(
        "mos-ctl status to list mos-flowstat with frames",
        TIMEOUT,
        || {
            status = ctl(&["status"])?;
            Ok(status.contains("mos-flowstat") && status.contains(&flowstat.pid().to_string()))
        },
    )?;
    let json: serde_json::Value = serde_json::from_str(&ctl(&["status", "--json"])?)?;
    ensure!(
        json.to_string().contains("mos-flowstat"),
        "mos-ctl status --json does not list the analyzer: {json}"
    );
    let metrics = ctl(&["metrics"])?;
    ensure!(
        metrics.lines().any(|l| l.starts_with("# TYPE mos_")),
        "mos-ctl metrics is not Prometheus text:\n{metrics}"
    );

    // SIGTERM: the sensor stops cleanly (status 130, as documented), tells the manager and the
    // analyzer, and removes its socket.
    sensor.signal(rustix::process::Signal::TERM)?;
    let st = sensor.wait(TIMEOUT)?;
    ensure!(
        st.code() == Some(130),
        "the sensor exited with {st} on SIGTERM:\n{}",
        tail(&sensor.stderr())
    );
    seen.extend(notify.take());
    ensure!(
        seen.iter().any(|m| m.lines().any(|l| l == "STOPPING=1")),
        "no STOPPING=1 among {seen:?}"
    );
    ensure!(
        sensor.stderr().contains("SIGTERM: stopping"),
        "the sensor did not log the signal:\n{}",
        sensor.stderr()
    );
    let ast = flowstat.wait(TIMEOUT)?;
    ensure!(
        flowstat.stderr().contains("shutting down") || ast.success(),
        "the analyzer was not told the sensor stopped ({ast}):\n{}",
        flowstat.stderr()
    );
    assert_no_panic(&sensor)?;
    assert_no_panic(&flowstat)?;

    // Nothing left: no socket (nor its temporary name), no process of the install, no shared
    // memory file.
    let left: Vec<PathBuf> = std::fs::read_dir(&run)?
        .flatten()
        .map(|e| e.path())
        .collect();
    ensure!(left.is_empty(), "left in the run directory: {left:?}");
    let procs = processes_under(&prefix);
    ensure!(procs.is_empty(), "processes left: {procs:?}");
    let shm: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("mos"))
                .collect()
        })
        .unwrap_or_default();
    ensure!(shm.is_empty(), "shared memory files left: {shm:?}");
    Ok(())
}

#[test]
fn log_lines_carry_syslog_levels_when_stderr_is_the_journal() -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let scratch = ScratchDir::new("service-journal")?;
    let work = scratch.path();
    let pcap = workspace_root().join("demo/workshop_2011_browse.pcap");
    let run = |journal: bool| -> Result<String> {
        let err_path = work.join(format!("stderr-{journal}"));
        let err = std::fs::File::create(&err_path)?;
        let m = std::fs::metadata(&err_path)?;
        let mut c = cmd(&sensor_bin()?, &[&"--pcap", &pcap, &"--no-publish"]);
        c.stderr(err).stdout(std::process::Stdio::null());
        if journal {
            c.env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()));
        } else {
            // Another file's: not ours, plain lines.
            c.env("JOURNAL_STREAM", "1:1");
        }
        let st = c.status()?;
        ensure!(st.success(), "the sensor exited with {st}");
        Ok(std::fs::read_to_string(&err_path)?)
    };
    let plain = run(false)?;
    let journal = run(true)?;
    ensure!(
        plain.lines().all(|l| l.starts_with("mos-sensor: ")),
        "plain lines expected:\n{plain}"
    );
    ensure!(
        journal
            .lines()
            .all(|l| l.len() > 3 && l.starts_with('<') && l.as_bytes()[2] == b'>'),
        "every journal line should start with <LEVEL>:\n{journal}"
    );
    ensure!(journal.lines().count() == plain.lines().count());
    ensure!(journal.contains("<6>"), "no info line:\n{journal}");
    Ok(())
}

#[test]
fn sighup_reloads_the_allowed_users_and_names_what_needs_a_restart() -> Result<()> {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test runs mos-ctl as uid 65534 and must run as root"
    );
    let scratch = ScratchDir::new("service-reload")?;
    let work = scratch.path();
    let pcap = corpus_dir()?.join("pcaps").join(CAPTURE);
    let control = work.join("control.sock");
    let config = work.join("sensor.toml");
    let write = |groups: &str, chunk_kib: u32| -> Result<()> {
        std::fs::write(
            &config,
            format!(
                "[input]\npcap = \"{}\"\nspeed = 1.0\n\n[tracking]\nchunk_kib = {chunk_kib}\n\n[control]\nsocket = \"{}\"\nallow_groups = [{groups}]\n",
                pcap.display(),
                control.display()
            ),
        )?;
        Ok(())
    };
    write("\"0\"", 32)?;
    let mut sensor = Proc::spawn("sensor", cmd(&sensor_bin()?, &[&"--config", &config]), work)?;
    wait_for_socket(&mut sensor, &control, TIMEOUT)?;
    // uid 65534 (nobody), group 65534: not allowed yet; allowed (and given the socket's group)
    // once the reload adds the group first.
    open_to_other_users(work)?;
    let exe = copy_for_other_users(&bin("mos-ctl")?, work)?;
    let as_nobody = || -> Result<std::process::Output> {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(&exe)
            .arg("--control")
            .arg(&control)
            .arg("status");
        c.output().context("running setpriv")
    };
    let before = as_nobody()?;
    ensure!(
        !before.status.success()
            && String::from_utf8_lossy(&before.stderr).contains("permission denied"),
        "nobody could read the status before the reload: {}",
        String::from_utf8_lossy(&before.stderr)
    );
    write("\"65534\", \"0\"", 64)?;
    sensor.signal(rustix::process::Signal::HUP)?;
    wait_for("the reload's log lines", TIMEOUT, || {
        let e = sensor.stderr();
        Ok(e.contains("SIGHUP") && e.contains("tracking.chunk_kib"))
    })?;
    let err = sensor.stderr();
    ensure!(
        err.lines()
            .any(|l| l.contains("SIGHUP") && l.contains("control.allow_groups")),
        "the reload did not apply control.allow_groups:\n{err}"
    );
    ensure!(
        err.lines()
            .any(|l| l.contains("restart") && l.contains("tracking.chunk_kib")),
        "the reload did not say tracking.chunk_kib needs a restart:\n{err}"
    );
    let after = as_nobody()?;
    ensure!(
        after.status.success(),
        "nobody could not read the status after the reload added its group: {}",
        String::from_utf8_lossy(&after.stderr)
    );
    // A broken file: the reload is refused with the file's line, the sensor goes on.
    std::fs::write(&config, "[tracking]\nchunk_kib = \"big\"\n")?;
    sensor.signal(rustix::process::Signal::HUP)?;
    wait_for("the refused reload", TIMEOUT, || {
        Ok(sensor.stderr().contains("sensor.toml:2"))
    })?;
    ensure!(sensor.poll()?.is_none(), "a bad reload stopped the sensor");
    sensor.signal(rustix::process::Signal::TERM)?;
    let st = sensor.wait(TIMEOUT)?;
    ensure!(st.code() == Some(130), "{st}:\n{}", tail(&sensor.stderr()));
    ensure!(
        std::fs::symlink_metadata(&control).is_err(),
        "the socket was left behind"
    );
    Ok(())
}

#[test]
fn a_paced_replay_stops_on_sigterm_at_once_and_a_late_analyzer_gets_the_ends() -> Result<()> {
    // The bundled capture lasts about 15 s and holds 121 frames: paced as captured, a stop
    // that waited for a round number of frames would wait for the end of the file. One worker
    // replays in the reading thread, two behind a dispatcher: both paths.
    for workers in ["1", "2"] {
        paced_replay_stops_at_once(workers)?;
    }
    Ok(())
}

fn paced_replay_stops_at_once(workers: &str) -> Result<()> {
    let scratch = ScratchDir::new(&format!("service-paced-{workers}"))?;
    let work = scratch.path();
    let pcap = workspace_root().join("demo/workshop_2011_browse.pcap");
    let control = work.join("control.sock");
    let mut sensor = Proc::spawn(
        "sensor",
        cmd(
            &sensor_bin()?,
            &[
                &"--pcap",
                &pcap,
                &"--control",
                &control,
                &"--speed",
                &"1",
                &"--workers",
                &workers,
            ],
        ),
        work,
    )?;
    wait_for_socket(&mut sensor, &control, TIMEOUT)?;
    let mut dump = Proc::spawn(
        "dump",
        cmd(
            &bin("mos-dump")?,
            &[&"--control", &control, &"--out", &work.join("out")],
        ),
        work,
    )?;
    wait_for("the analyzer to attach", TIMEOUT, || {
        Ok(sensor.stderr().contains("attached: mos-dump"))
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let sent = std::time::Instant::now();
    sensor.signal(rustix::process::Signal::TERM)?;
    let st = sensor.wait(TIMEOUT)?;
    ensure!(st.code() == Some(130), "{st}:\n{}", tail(&sensor.stderr()));
    ensure!(
        sent.elapsed() < Duration::from_secs(5),
        "the sensor ({workers} workers) took {:?} to stop",
        sent.elapsed()
    );
    // The analyzer that attached mid-replay was taken in: the open connections' ends were
    // published to it.
    let err = sensor.stderr();
    let published: u64 = err
        .lines()
        .find_map(|l| l.strip_prefix("mos-sensor: published "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no published count:\n{err}"))?;
    ensure!(
        published > 0,
        "no event was published ({workers} workers):\n{err}"
    );
    dump.wait(TIMEOUT)?;
    assert_no_panic(&dump)?;
    Ok(())
}
