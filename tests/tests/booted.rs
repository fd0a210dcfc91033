//! The units under a real systemd: a Debian 12 minbase root (debootstrap, cached under
//! target/nspawn) with mos installed, booted in a systemd-nspawn container and driven with
//! systemctl. The sensor replays a corpus capture slowly (lossless, waiting for two
//! analyzers); the test checks that it notifies readiness, that `mos-analyzer@flowstat` and
//! `mos-analyzer@dump` attach as two different dynamic users, that the hardening of the
//! installed units is in force on the running processes (user, capabilities, no new
//! privileges, system call filter), that `systemctl reload mos-sensor` applies an
//! allowed-group change and refuses a broken file, that the journal carries each line's
//! level, and that `systemctl stop mos-sensor` stops the analyzers too. The units are the
//! shipped ones: no drop-in, nothing weakened.
//!
//! mos comes from the Debian packages when there are some (`MOS_DEB_DIR`, or
//! `target/debian` from scripts/package.sh), else from the release build through
//! `deploy/install.sh --destdir`; see `mos_tests::debroot`.
//!
//! Needs root, debootstrap, systemd-container and the Debian mirror the first time (about two
//! minutes; later runs copy the cached root and take well under a minute), the release
//! binaries and libmos (`cargo build --release --bins`, `cargo build --release -p mos-capi`)
//! and the corpus (`MOS_CORPUS_DIR`). Each step is timed and named in a failure, which also
//! shows the units' status and journal. `MOS_KEEP_ROOT=1` keeps the booted root
//! (target/nspawn/booted-run) for a look afterwards.

use anyhow::{bail, ensure, Context, Result};
use mos_tests::debroot::{base_root, install_mos, mos_source, ScratchRoot};
use mos_tests::locate::{corpus_dir, workspace_root};
use mos_tests::nspawn::Booted;
use mos_tests::procs::tail;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Whether mos must come from its Debian packages (a missing or stale package is then an
/// error): under CI (`CI=true`), whose test.sh package stage makes them and sets
/// `MOS_DEB_DIR`. Elsewhere the packages are taken when there are some, else
/// deploy/install.sh.
fn require_package() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A corpus capture of 25 s and 3000 frames: at 0.05 times its pace the replay lasts eight
/// minutes, longer than the test looks at it.
const CAPTURE: &str = "suricata-verify__bug-5162__input.pcap";
const SPEED: &str = "0.05";

/// The two analyzer instances started, and the programs they run.
const ANALYZERS: [(&str, &str); 2] = [("flowstat", "mos-flowstat"), ("dump", "mos-dump")];

/// An unprivileged user that is no member of anything but the groups the test gives it.
const PROBE_UID: &str = "4242";

const SENSOR_CONFIG: &str = "/etc/mos/sensor.toml";

/// The steps of the run, timed.
struct Steps {
    done: Vec<(String, Duration)>,
}

impl Steps {
    fn run<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        eprintln!("booted: {name}");
        let t = Instant::now();
        let r = f().with_context(|| format!("step '{name}' failed"));
        let took = t.elapsed();
        eprintln!("booted: {name}: {:.1} s", took.as_secs_f64());
        self.done.push((name.to_string(), took));
        r
    }
}

/// Replaces the one line of `text` that starts with `from` (a key or a commented-out key of
/// the shipped file) with `to`.
fn set_line(text: &str, from: &str, to: &str) -> Result<String> {
    let n = text.lines().filter(|l| l.starts_with(from)).count();
    ensure!(
        n == 1,
        "{SENSOR_CONFIG} has {n} lines starting with '{from}', not one (has the shipped file changed?)"
    );
    Ok(text
        .lines()
        .map(|l| if l.starts_with(from) { to } else { l })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n")
}

/// Prepares the installed system as an operator would: the sensor replays a capture copied
/// into the root, slowly and losslessly, once two analyzers are attached; a second group,
/// mos-ops, exists for the reload, with the sensor's user a member (so that the sensor may
/// give the control socket to it).
fn configure(root: &ScratchRoot) -> Result<()> {
    let capture = corpus_dir()?.join("pcaps").join(CAPTURE);
    let bytes =
        std::fs::read(&capture).with_context(|| format!("reading {}", capture.display()))?;
    root.write("/srv/mos/capture.pcap", &bytes, 0o644)?;
    let conf = root.host_path(SENSOR_CONFIG);
    let mut text = std::fs::read_to_string(&conf)
        .with_context(|| format!("reading the installed {SENSOR_CONFIG}"))?;
    text = set_line(&text, "#pcap = ", "pcap = \"/srv/mos/capture.pcap\"")?;
    text = set_line(&text, "#speed = ", &format!("speed = {SPEED}"))?;
    text = set_line(&text, "#mode = ", "mode = \"lossless\"")?;
    text = set_line(&text, "#wait_analyzers = ", "wait_analyzers = 2")?;
    text = set_line(&text, "allow_groups = ", "allow_groups = [\"mos\"]")?;
    root.write(SENSOR_CONFIG, text.as_bytes(), 0o644)?;
    let t = Duration::from_secs(60);
    root.run(&["groupadd", "--system", "mos-ops"], &[], t)?;
    root.run(
        &["usermod", "--append", "--groups", "mos-ops", "mos-sensor"],
        &[],
        t,
    )?;
    Ok(())
}

/// The directives of a unit's [Service] section, without comments and blank lines.
fn service_directives(unit: &str) -> Vec<String> {
    let mut in_service = false;
    let mut out = Vec::new();
    for l in unit.lines().map(str::trim) {
        if l.starts_with('[') {
            in_service = l == "[Service]";
        } else if in_service && !l.is_empty() && !l.starts_with('#') {
            out.push(l.to_string());
        }
    }
    out
}

/// `systemctl show -p P1 -p P2 ... UNIT` as (property, value) pairs.
fn show(b: &Booted, unit: &str, props: &[&str]) -> Result<Vec<(String, String)>> {
    let mut argv = vec!["systemctl", "show"];
    for p in props {
        argv.extend(["-p", p]);
    }
    argv.push(unit);
    let out = b.run(&argv)?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn prop(b: &Booted, unit: &str, p: &str) -> Result<String> {
    show(b, unit, &[p])?
        .into_iter()
        .find(|(k, _)| k == p)
        .map(|(_, v)| v)
        .with_context(|| format!("systemctl show {unit} has no {p}"))
}

/// The units in the container are the shipped ones with their paths filled in, and nothing
/// changes them.
fn check_units_as_shipped(b: &Booted) -> Result<()> {
    for (shipped, instance) in [
        ("mos-sensor.service", "mos-sensor.service"),
        ("mos-analyzer@.service", "mos-analyzer@flowstat.service"),
    ] {
        let fragment = prop(b, instance, "FragmentPath")?;
        ensure!(
            !fragment.is_empty(),
            "systemd finds no unit file for {instance}"
        );
        let dropins = prop(b, instance, "DropInPaths")?;
        ensure!(
            dropins.trim().is_empty(),
            "{instance} has drop-ins ({dropins}): the test runs the units as shipped"
        );
        let installed = b.run(&["cat", &fragment])?;
        let source = std::fs::read_to_string(workspace_root().join("deploy").join(shipped))?;
        let rendered = source
            .replace("@bindir@", "/usr/bin")
            .replace("@libexecdir@", "/usr/lib/mos")
            .replace("@sysconfdir@", "/etc")
            .replace("@docdir@", "/usr/share/doc/mos");
        let (want, got) = (
            service_directives(&rendered),
            service_directives(&installed),
        );
        ensure!(
            want == got,
            "{fragment} in the container does not have the [Service] section of deploy/{shipped}:\n\
             shipped:   {want:?}\ninstalled: {got:?}"
        );
    }
    Ok(())
}

/// `mos-ctl status --json` in the container, as root.
fn status(b: &Booted) -> Result<Value> {
    let out = b.run(&["mos-ctl", "status", "--json"])?;
    serde_json::from_str(&out)
        .with_context(|| format!("mos-ctl status --json printed:\n{}", tail(&out)))
}

/// The numeric fields of /proc/PID/status inside the container, by name.
fn proc_status(b: &Booted, pid: u64) -> Result<Vec<(String, String)>> {
    let out = b.run(&["cat", &format!("/proc/{pid}/status")])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Result<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .with_context(|| format!("no {name} in /proc/PID/status"))
}

/// The sensor's and the analyzers' processes run as the units say.
fn check_hardening(b: &Booted, sensor_pid: u64, analyzer_pids: &[u64]) -> Result<()> {
    let sensor_uid = b.run(&["id", "-u", "mos-sensor"])?.trim().to_string();
    let mos_gid = b.run(&["getent", "group", "mos"])?;
    let mos_gid = mos_gid
        .trim()
        .split(':')
        .nth(2)
        .context("getent group mos")?
        .to_string();
    // CAP_NET_RAW is capability 13.
    let net_raw = format!("{:016x}", 1u64 << 13);
    let s = proc_status(b, sensor_pid)?;
    let uids: Vec<&str> = field(&s, "Uid")?.split_whitespace().collect();
    ensure!(
        uids.iter().all(|u| *u == sensor_uid),
        "the sensor runs as uids {uids:?}, not the user mos-sensor ({sensor_uid})"
    );
    let gids: Vec<&str> = field(&s, "Gid")?.split_whitespace().collect();
    ensure!(
        gids.iter().all(|g| *g == mos_gid),
        "the sensor runs as gids {gids:?}, not mos ({mos_gid})"
    );
    for cap in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        ensure!(
            field(&s, cap)? == net_raw,
            "the sensor's {cap} is {}, not CAP_NET_RAW alone ({net_raw})",
            field(&s, cap)?
        );
    }
    for (name, fields) in std::iter::once(("the sensor", s.clone())).chain(
        analyzer_pids
            .iter()
            .map(|p| proc_status(b, *p).map(|f| ("an analyzer", f)))
            .collect::<Result<Vec<_>>>()?,
    ) {
        ensure!(
            field(&fields, "NoNewPrivs")? == "1",
            "{name} may gain privileges (NoNewPrivs 0)"
        );
        ensure!(
            field(&fields, "Seccomp")? == "2",
            "{name} runs without a system call filter (Seccomp {})",
            field(&fields, "Seccomp")?
        );
    }
    for pid in analyzer_pids {
        let a = proc_status(b, *pid)?;
        for cap in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
            ensure!(
                field(&a, cap)?.trim_start_matches('0').is_empty(),
                "analyzer pid {pid} has capabilities ({cap} {})",
                field(&a, cap)?
            );
        }
        let groups: Vec<&str> = field(&a, "Groups")?.split_whitespace().collect();
        ensure!(
            groups.contains(&mos_gid.as_str()),
            "analyzer pid {pid} is not in the group mos ({mos_gid}): groups {groups:?}"
        );
    }
    Ok(())
}

/// The journal of a unit as (PRIORITY, SYSLOG_IDENTIFIER, MESSAGE).
fn journal(b: &Booted, unit: &str) -> Result<Vec<(u8, String, String)>> {
    let out = b.run(&["journalctl", "--no-pager", "-o", "json", "-u", unit])?;
    let mut lines = Vec::new();
    for l in out.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(l).with_context(|| format!("journalctl -o json printed {l}"))?;
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let priority = text("PRIORITY").parse().unwrap_or(255);
        lines.push((priority, text("SYSLOG_IDENTIFIER"), text("MESSAGE")));
    }
    Ok(lines)
}

/// Waits up to 10 s until the sensor's journal has `count` lines containing `what`, and
/// returns the priority of the last one.
fn wait_journal(b: &Booted, what: &str, count: usize) -> Result<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<_> = journal(b, "mos-sensor.service")?
            .into_iter()
            .filter(|(_, id, m)| id == "mos-sensor" && m.contains(what))
            .collect();
        if lines.len() >= count {
            return Ok(lines.last().map(|l| l.0).unwrap_or(255));
        }
        if Instant::now() >= deadline {
            bail!(
                "the sensor's journal has {} lines with '{what}' after 10 s, not {count}",
                lines.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `mos-ctl status` run as the probe user with the supplementary groups `gids` (and nothing
/// else): whether the sensor answered, and what mos-ctl printed.
fn probe(b: &Booted, gids: &[&str]) -> Result<(bool, String)> {
    let groups = format!("--groups={}", gids.join(","));
    let out = b.exec(&[
        "setpriv",
        &format!("--reuid={PROBE_UID}"),
        &format!("--regid={PROBE_UID}"),
        &groups,
        "mos-ctl",
        "status",
    ])?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

fn gid(b: &Booted, group: &str) -> Result<String> {
    let line = b.run(&["getent", "group", group])?;
    Ok(line
        .trim()
        .split(':')
        .nth(2)
        .context("getent group")?
        .to_string())
}

/// Rewrites the allow_groups line of the sensor's configuration inside the container.
fn set_allow_groups(b: &Booted, value: &str) -> Result<()> {
    let path = b.root().join(SENSOR_CONFIG.trim_start_matches('/'));
    let text = std::fs::read_to_string(&path)?;
    let text = set_line(&text, "allow_groups = ", &format!("allow_groups = {value}"))?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

fn socket_group(b: &Booted) -> Result<String> {
    Ok(b.run(&["stat", "-c", "%G", "/run/mos/control.sock"])?
        .trim()
        .to_string())
}

/// What the units show when something went wrong.
fn diagnose(b: &Booted) -> String {
    let units = [
        "mos-sensor.service",
        "mos-analyzer@flowstat.service",
        "mos-analyzer@dump.service",
    ];
    let mut s = String::new();
    let mut show = |title: &str, argv: &[&str]| {
        let text = match b.exec(argv) {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("({e:#})"),
        };
        s.push_str(&format!("\n--- {title}\n{}", text.trim_end()));
    };
    let mut status = vec!["systemctl", "status", "--no-pager", "--full", "--lines=0"];
    status.extend(units);
    show("systemctl status", &status);
    show(
        "systemctl --failed",
        &["systemctl", "--failed", "--no-pager"],
    );
    let mut journal = vec!["journalctl", "--no-pager", "-b", "-n", "150"];
    for u in units {
        journal.extend(["-u", u]);
    }
    show("journal of the units (last 150 lines)", &journal);
    s
}

/// A line that still starts as on a terminal (`mos-sensor: `) or with a level marker (`<4>`).
fn has_prefix(line: &str) -> bool {
    let marker = line.starts_with('<') && line.get(2..3) == Some(">");
    marker || line.starts_with("mos-sensor: ")
}

/// An error and its causes, one after the other, without a backtrace.
fn chain(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join("\ncaused by: ")
}

/// Everything done with the booted system.
fn drive(b: &Booted, steps: &mut Steps) -> Result<()> {
    steps.run(
        "the installed units are the shipped ones, without drop-ins",
        || check_units_as_shipped(b),
    )?;

    let sensor_pid = steps.run("systemctl start mos-sensor: readiness notified", || {
        // Type=notify: start returns once the sensor sent READY=1, and fails if it never does.
        b.run(&["systemctl", "start", "mos-sensor.service"])?;
        let s = show(
            b,
            "mos-sensor.service",
            &["Type", "ActiveState", "SubState", "StatusText", "MainPID"],
        )?;
        let get = |k: &str| {
            s.iter()
                .find(|(p, _)| p == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        ensure!(
            get("Type") == "notify",
            "mos-sensor.service is Type={}",
            get("Type")
        );
        ensure!(
            get("ActiveState") == "active" && get("SubState") == "running",
            "mos-sensor.service is {}/{} after start",
            get("ActiveState"),
            get("SubState")
        );
        ensure!(
            get("StatusText").starts_with("running"),
            "the sensor's status text is '{}' (READY=1 comes with STATUS=running...)",
            get("StatusText")
        );
        get("MainPID").parse::<u64>().context("MainPID")
    })?;

    let analyzer_pids = steps.run(
        "systemctl start mos-analyzer@flowstat mos-analyzer@dump",
        || {
            let units: Vec<String> = ANALYZERS
                .iter()
                .map(|(i, _)| format!("mos-analyzer@{i}.service"))
                .collect();
            let mut argv = vec!["systemctl", "start"];
            argv.extend(units.iter().map(String::as_str));
            b.run(&argv)?;
            let mut pids = Vec::new();
            for u in &units {
                ensure!(
                    prop(b, u, "ActiveState")? == "active",
                    "{u} is not active after start"
                );
                pids.push(prop(b, u, "MainPID")?.parse::<u64>().context("MainPID")?);
            }
            Ok(pids)
        },
    )?;

    steps.run("mos-ctl status lists both analyzers, as different dynamic users", || {
        // The replay starts once both are attached and ready; wait until events reached them.
        let deadline = Instant::now() + Duration::from_secs(30);
        let report = loop {
            let r = status(b)?;
            let analyzers = r["analyzers"].as_array().cloned().unwrap_or_default();
            let flowing = r["frames"].as_u64().unwrap_or(0) > 0
                && analyzers.len() == 2
                && analyzers.iter().all(|a| a["ready"] == true && a["delivered"].as_u64().unwrap_or(0) > 0);
            if flowing {
                break r;
            }
            if Instant::now() >= deadline {
                bail!("after 30 s the sensor has not delivered events to two ready analyzers:\n{r:#}");
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        eprintln!("{}", b.run(&["mos-ctl", "status"])?);
        let analyzers = report["analyzers"].as_array().context("no analyzers in the report")?;
        let mut users = BTreeSet::new();
        let mut uids = BTreeSet::new();
        for ((instance, program), pid) in ANALYZERS.iter().zip(&analyzer_pids) {
            let a = analyzers
                .iter()
                .find(|a| a["name"] == *program)
                .with_context(|| format!("mos-ctl status lists no {program}: {analyzers:?}"))?;
            ensure!(
                a["pid"].as_u64() == Some(*pid),
                "mos-ctl status gives {program} pid {}, the unit's main pid is {pid}",
                a["pid"]
            );
            let uid = a["uid"].as_u64().context("an analyzer without uid")?;
            // systemd's record of its dynamic users: direct:UID is a link to the name.
            let name = b.run(&["readlink", &format!("/run/systemd/dynamic-uid/direct:{uid}")])?;
            ensure!(
                name.trim() == format!("mos-analyzer-{instance}"),
                "{program} runs as uid {uid}, the dynamic user '{}', not mos-analyzer-{instance}",
                name.trim()
            );
            users.insert(a["user"].as_str().unwrap_or("").to_string());
            uids.insert(uid);
        }
        ensure!(
            uids.len() == 2 && users.len() == 2,
            "the two analyzers do not run as two users: uids {uids:?}, users {users:?}"
        );
        Ok(())
    })?;

    steps.run(
        "the hardening of the units is in force on the processes",
        || check_hardening(b, sensor_pid, &analyzer_pids),
    )?;

    steps.run("systemctl reload mos-sensor applies an allowed-group change", || {
        let mos = gid(b, "mos")?;
        let ops = gid(b, "mos-ops")?;
        let (ok, text) = probe(b, &[&mos])?;
        ensure!(ok, "before the change, a member of mos is not answered:\n{text}");
        ensure!(socket_group(b)? == "mos", "the control socket does not belong to mos");

        set_allow_groups(b, "[\"mos-ops\"]")?;
        b.run(&["systemctl", "reload", "mos-sensor.service"])?;
        wait_journal(b, "applied control.allow_groups", 1)?;
        let group = socket_group(b)?;
        ensure!(group == "mos-ops", "after the reload the control socket belongs to {group}, not mos-ops");
        let (ok, text) = probe(b, &[&mos])?;
        ensure!(!ok, "after the reload to [\"mos-ops\"], a member of mos only is still answered:\n{text}");
        let (ok, text) = probe(b, &[&mos, &ops])?;
        ensure!(ok, "after the reload, a member of mos and mos-ops is not answered:\n{text}");

        set_allow_groups(b, "[\"mos\"]")?;
        b.run(&["systemctl", "reload", "mos-sensor.service"])?;
        wait_journal(b, "applied control.allow_groups", 2)?;
        ensure!(socket_group(b)? == "mos", "back to [\"mos\"], the socket is not mos's again");
        let (ok, text) = probe(b, &[&mos])?;
        ensure!(ok, "back to [\"mos\"], a member of mos is not answered:\n{text}");
        ensure!(
            prop(b, "mos-sensor.service", "MainPID")?.parse::<u64>().ok() == Some(sensor_pid),
            "the sensor was restarted, not reloaded"
        );
        Ok(())
    })?;

    steps.run(
        "systemctl reload with a broken file changes nothing, logged at err",
        || {
            set_allow_groups(b, "5")?;
            b.run(&["systemctl", "reload", "mos-sensor.service"])?;
            let p = wait_journal(b, "SIGHUP: configuration not reloaded", 1)?;
            ensure!(
                p == 3,
                "the refused reload was logged at priority {p}, not err (3)"
            );
            set_allow_groups(b, "[\"mos\"]")?;
            let mos = gid(b, "mos")?;
            let (ok, text) = probe(b, &[&mos])?;
            ensure!(
                ok,
                "after the refused reload, a member of mos is not answered:\n{text}"
            );
            Ok(())
        },
    )?;

    steps.run("the journal carries each line's level", || {
        let lines: Vec<_> = journal(b, "mos-sensor.service")?
            .into_iter()
            .filter(|(_, id, _)| id == "mos-sensor")
            .collect();
        let level_of = |what: &str| lines.iter().find(|(_, _, m)| m.contains(what)).map(|l| l.0);
        for (what, want) in [
            ("analyzer 1 attached", 5),
            ("applied control.allow_groups", 5),
            ("SIGHUP: configuration not reloaded", 3),
        ] {
            let got = level_of(what)
                .with_context(|| format!("no line with '{what}' in the sensor's journal"))?;
            ensure!(
                got == want,
                "'{what}' is logged at priority {got}, not {want}"
            );
        }
        let levels: BTreeSet<u8> = lines.iter().map(|l| l.0).collect();
        ensure!(
            levels.is_superset(&BTreeSet::from([3, 5, 6])),
            "the sensor's lines carry the priorities {levels:?}"
        );
        for (_, _, m) in &lines {
            ensure!(
                !has_prefix(m),
                "a journal line keeps its terminal prefix or level marker: {m}"
            );
        }
        Ok(())
    })?;

    steps.run("systemctl stop mos-sensor stops the analyzers too", || {
        let units = [
            "mos-sensor.service",
            "mos-analyzer@flowstat.service",
            "mos-analyzer@dump.service",
        ];
        for u in units {
            ensure!(
                prop(b, u, "ActiveState")? == "active",
                "{u} is not active before the stop (did the replay end?)"
            );
        }
        b.run(&["systemctl", "stop", "mos-sensor.service"])?;
        wait_journal(b, "SIGTERM: stopping", 1)?;
        // Longer than RestartSec=2s: an analyzer that failed would have been started again.
        std::thread::sleep(Duration::from_secs(3));
        for u in units {
            let state = prop(b, u, "ActiveState")?;
            ensure!(
                state == "inactive",
                "{u} is {state} after systemctl stop mos-sensor, not inactive"
            );
        }
        let failed = b.run(&["systemctl", "--failed", "--no-legend", "--plain"])?;
        ensure!(
            failed.trim().is_empty(),
            "failed units after the stop:\n{failed}"
        );
        Ok(())
    })?;
    Ok(())
}

fn booted_system() -> Result<()> {
    let started = Instant::now();
    let mut steps = Steps { done: Vec::new() };
    let source = steps.run("choose how mos is installed", || {
        mos_source(require_package())
    })?;
    eprintln!("booted: installing mos from {}", source.describe());
    let extra = steps.run("the packages the root needs", || source.base_packages())?;
    let base = steps.run(
        "the cached Debian 12 minbase root (debootstrap when missing)",
        || base_root(&extra),
    )?;
    let root = steps.run("a fresh copy of the root", || {
        ScratchRoot::copy_of(&base, "booted-run")
    })?;
    steps.run("install mos into the root", || install_mos(&root, &source))?;
    steps.run("configure the sensor and the group mos-ops", || {
        configure(&root)
    })?;
    let console = mos_tests::debroot::cache_dir()?.join("booted-run.console");
    let booted = steps.run("boot the root with systemd-nspawn", || {
        Booted::boot(root.path(), &console, Duration::from_secs(90))
    })?;
    if let Err(e) = drive(&booted, &mut steps) {
        let diagnosis = diagnose(&booted);
        drop(booted);
        bail!("{}\n\nwhat the booted system shows:{diagnosis}", chain(&e));
    }
    steps.run("power the container off", || booted.shutdown())?;
    drop(root);
    eprintln!("booted: passed in {:.1} s", started.elapsed().as_secs_f64());
    for (name, took) in &steps.done {
        eprintln!("  {:6.1} s  {name}", took.as_secs_f64());
    }
    Ok(())
}

#[test]
fn the_units_run_under_a_booted_systemd() {
    if let Err(e) = booted_system() {
        // The chain of causes without a backtrace: the step and what the system showed.
        panic!("{}", chain(&e));
    }
}
