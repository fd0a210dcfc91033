//! `mos-ctl top` as a person sees it, in a tmux pane: the analyzer's row and a non-zero packet
//! rate while a paced replay publishes to it, the red line when the sensor goes away, `q`, Esc
//! and Ctrl-C quitting with 0 and the terminal restored, a signal quitting with 128 plus its
//! number, and the errors (no terminal: 2; no sensor: 1). And the Grafana dashboard in
//! deploy/grafana/mos.json: well formed for an import, and every metric it queries served by
//! `mos-ctl metrics`. Needs tmux (scripts/setup.sh installs it), the workspace's binaries built
//! in the same profile, and the corpus.

use anyhow::{bail, ensure, Context, Result};
use mos_tests::locate::{bin, corpus_dir, sensor_bin, workspace_root};
use mos_tests::procs::{cmd, tail, wait_for, wait_for_socket, Proc};
use mos_tests::runner::ScratchDir;
use serde_json::Value;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The longest any wait of these tests may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// About a minute of traffic (30 connections): replayed at `--speed 3` it lasts about 20 s,
/// long enough for top to take a few samples of a moving counter.
fn capture() -> Result<PathBuf> {
    Ok(corpus_dir()?.join("pcaps").join("ndpi__1kxun.pcapng"))
}

fn start_sensor(w: &Path, control: &Path, extra: &[&str]) -> Result<Proc> {
    let pcap = capture()?;
    let mut c = cmd(&sensor_bin()?, &[&"--pcap", &pcap, &"--control", &control]);
    c.args(extra);
    let mut s = Proc::spawn("sensor", c, w)?;
    wait_for_socket(&mut s, control, TIMEOUT)?;
    Ok(s)
}

/// mos-flowstat attached to the sensor, printing a table only every 30 s.
fn flowstat(w: &Path, control: &Path) -> Result<Proc> {
    Proc::spawn(
        "mos-flowstat",
        cmd(
            &bin("mos-flowstat")?,
            &[&"--control", &control, &"--interval", &"30"],
        ),
        w,
    )
}

/// A tmux server of the test's own (its socket in the scratch directory, no user
/// configuration), whose panes stay after their command exits so that the exit status can be
/// read; killed when dropped.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn new(w: &Path) -> Result<Tmux> {
        let conf = w.join("tmux.conf");
        std::fs::write(&conf, "set -g remain-on-exit on\n")?;
        let probe = Command::new("tmux").arg("-V").output();
        ensure!(
            probe.as_ref().is_ok_and(|o| o.status.success()),
            "tmux is needed to run mos-ctl top on a terminal (scripts/setup.sh installs it): {probe:?}"
        );
        Ok(Tmux {
            socket: w.join("tmux.sock"),
        })
    }

    fn run(&self, args: &[&dyn AsRef<OsStr>]) -> Result<String> {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        if !self.socket.exists() {
            c.arg("-f").arg(self.socket.with_file_name("tmux.conf"));
        }
        for a in args {
            c.arg(a.as_ref());
        }
        let out = c.output().with_context(|| format!("running {c:?}"))?;
        ensure!(
            out.status.success(),
            "{c:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A detached 160x48 session `name` running `program args...` under a shell that writes
    /// the program's exit status to a file when it ends: tmux 3.3a sometimes leaves a pane's
    /// exited command a zombie (seen here with several servers at once), and `pane_dead_status`
    /// empty with it, so the status is taken from the shell.
    fn start(&self, name: &str, program: &Path, args: &[&dyn AsRef<OsStr>]) -> Result<()> {
        let status = self.status_file(name);
        let _ = std::fs::remove_file(&status);
        let mut all: Vec<&dyn AsRef<OsStr>> = vec![
            &"new-session",
            &"-d",
            &"-s",
            &name,
            &"-x",
            &"160",
            &"-y",
            &"48",
            &"/bin/sh",
            &"-c",
            &"f=$0; \"$@\"; echo $? >\"$f.tmp\" && mv \"$f.tmp\" \"$f\"",
            &status,
            &program,
        ];
        all.extend_from_slice(args);
        self.run(&all)?;
        Ok(())
    }

    fn status_file(&self, name: &str) -> PathBuf {
        self.socket.with_file_name(format!("{name}.status"))
    }

    /// The pid of the program of session `name` (the child of the pane's shell).
    fn program_pid(&self, name: &str) -> Result<i32> {
        let sh = self.format(name, "#{pane_pid}")?;
        let mut pid = String::new();
        wait_for("the pane's program", TIMEOUT, || {
            pid = std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children"))?
                .trim()
                .to_string();
            Ok(!pid.is_empty())
        })?;
        pid.parse()
            .with_context(|| format!("children of the pane's shell: {pid:?}"))
    }

    /// What the pane of session `name` shows.
    fn screen(&self, name: &str) -> Result<String> {
        self.run(&[&"capture-pane", &"-p", &"-t", &name])
    }

    fn format(&self, name: &str, f: &str) -> Result<String> {
        Ok(self
            .run(&[&"display-message", &"-p", &"-t", &name, &f])?
            .trim()
            .to_string())
    }

    fn keys(&self, name: &str, keys: &str) -> Result<()> {
        self.run(&[&"send-keys", &"-t", &name, &keys])?;
        Ok(())
    }

    /// Waits until the screen of `name` satisfies `cond`, and returns it; fails with the
    /// screen if it does not within the timeout or the pane's command ends first.
    fn wait_screen(&self, name: &str, what: &str, cond: impl Fn(&str) -> bool) -> Result<String> {
        let mut last = String::new();
        let r = wait_for(what, TIMEOUT, || {
            last = self.screen(name)?;
            if cond(&last) {
                return Ok(true);
            }
            ensure!(
                self.format(name, "#{pane_dead}")? != "1",
                "the pane's command ended"
            );
            std::thread::sleep(Duration::from_millis(100));
            Ok(false)
        });
        match r {
            Ok(()) => Ok(last),
            Err(e) => bail!("{e:#}; the screen:\n{last}"),
        }
    }

    /// Waits for the pane's program to end and returns its exit status.
    fn exit_status(&self, name: &str) -> Result<i32> {
        let file = self.status_file(name);
        wait_for(&format!("{name}'s command to end"), TIMEOUT, || {
            Ok(file.exists())
        })
        .with_context(|| self.screen(name).unwrap_or_default())?;
        let s = std::fs::read_to_string(&file)?;
        s.trim()
            .parse()
            .with_context(|| format!("exit status {s:?} in {}", file.display()))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if self.socket.exists() {
            let _ = Command::new("tmux")
                .arg("-S")
                .arg(&self.socket)
                .arg("kill-server")
                .output();
        }
    }
}

/// The number after `packets/s now ` on the screen, with its SI prefix applied.
fn packet_rate(screen: &str) -> Option<f64> {
    let word = screen
        .split("packets/s now ")
        .nth(1)?
        .split_whitespace()
        .next()?;
    let (num, mult) = match word.chars().last()? {
        'k' => (&word[..word.len() - 1], 1e3),
        'M' => (&word[..word.len() - 1], 1e6),
        'G' => (&word[..word.len() - 1], 1e9),
        _ => (word, 1.0),
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

/// The current user's name, as the sensor shows it.
fn user_name() -> String {
    let uid = rustix::process::getuid().as_raw();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    shm_layout::status::id_name(&passwd, uid).unwrap_or_else(|| uid.to_string())
}

#[test]
fn top_shows_the_analyzer_and_a_live_rate_says_when_the_sensor_goes_and_quits_with_q() -> Result<()>
{
    let work = ScratchDir::new("ctl-top")?;
    let w = work.path();
    let control = w.join("c.sock");
    let mut sensor = start_sensor(
        w,
        &control,
        &["--wait-analyzers", "1", "--speed", "3", "--workers", "2"],
    )?;
    let tmux = Tmux::new(w)?;
    let ctl = bin("mos-ctl")?;
    tmux.start("top", &ctl, &[&"--control", &control, &"top"])?;
    // Up before any analyzer: the replay has not started.
    let s = tmux.wait_screen("top", "top's first screen", |s| {
        s.contains("analyzers (0)") && s.contains("no analyzer attached")
    })?;
    ensure!(
        s.contains(&format!("(pid {})", sensor.pid())),
        "no sensor pid in:\n{s}"
    );

    let mut stat = flowstat(w, &control)?;
    let row_of = |s: &str| -> Option<String> {
        s.lines()
            .find(|l| l.contains("mos-flowstat") && l.contains(&format!(" {} ", stat.pid())))
            .map(str::to_string)
    };
    let s = tmux.wait_screen(
        "top",
        "the analyzer's row and a non-zero packet rate",
        |s| row_of(s).is_some() && packet_rate(s).is_some_and(|r| r > 0.0),
    )?;
    ensure!(
        sensor.poll()?.is_none(),
        "the replay ended while top watched it"
    );
    let row = row_of(&s).context("row")?;
    ensure!(row.contains(&user_name()), "no user in {row}");
    ensure!(s.contains("analyzers (1)"), "{s}");
    for part in [
        "bit/s now",
        "drops by cause",
        "stalled analyzers",
        "flows",
        "LAG",
    ] {
        ensure!(s.contains(part), "no {part:?} in:\n{s}");
    }
    // The analyzer's events column counts up with the replay.
    let events = |s: &str| -> Option<u64> {
        let row = row_of(s)?;
        let cols: Vec<&str> = row.split_whitespace().collect();
        let i = cols.iter().position(|c| *c == "mos-flowstat")?;
        cols.get(i + 3)?.parse().ok()
    };
    let first = events(&s).with_context(|| format!("no events in {row}"))?;
    tmux.wait_screen("top", "the analyzer's events to grow", |s| {
        events(s).is_some_and(|n| n > first)
    })?;

    // The sensor goes away: said on screen with the reason, top keeps running.
    sensor.signal(rustix::process::Signal::KILL)?;
    let _ = sensor.wait(TIMEOUT)?;
    let s = tmux.wait_screen("top", "the sensor's absence on screen", |s| {
        s.contains("sensor unreachable for") && s.contains("no sensor listening at")
    })?;
    ensure!(
        s.contains("mos-flowstat"),
        "the last report left the screen:\n{s}"
    );
    let _ = stat.wait(TIMEOUT);

    tmux.keys("top", "q")?;
    let status = tmux.exit_status("top")?;
    let s = tmux.screen("top")?;
    ensure!(
        status == 0,
        "top exited with {status} after q; screen:\n{s}"
    );
    // The alternate screen was left: nothing of top's view remains.
    ensure!(
        !s.contains("packets/s") && !s.contains("drops by cause"),
        "the terminal was not restored:\n{s}"
    );
    Ok(())
}

#[test]
fn esc_and_ctrl_c_quit_with_0_a_signal_with_128_plus_it_and_errors_are_said() -> Result<()> {
    let work = ScratchDir::new("ctl-top-keys")?;
    let w = work.path();
    let control = w.join("c.sock");
    // A sensor that waits for an analyzer that never comes: it answers, and nothing moves.
    let _sensor = start_sensor(w, &control, &["--wait-analyzers", "1"])?;
    let tmux = Tmux::new(w)?;
    let ctl = bin("mos-ctl")?;
    for (name, keys) in [("esc", "Escape"), ("ctrl-c", "C-c")] {
        tmux.start(
            name,
            &ctl,
            &[&"--control", &control, &"top", &"--interval", &"0.5"],
        )?;
        tmux.wait_screen(name, "top's screen", |s| s.contains("every 0.5s"))?;
        tmux.keys(name, keys)?;
        let status = tmux.exit_status(name)?;
        ensure!(status == 0, "{keys}: exit status {status}");
    }
    tmux.start("term", &ctl, &[&"--control", &control, &"top"])?;
    tmux.wait_screen("term", "top's screen", |s| s.contains("packets/s"))?;
    let pid = tmux.program_pid("term")?;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).context("pid")?,
        rustix::process::Signal::TERM,
    )?;
    ensure!(tmux.exit_status("term")? == 128 + 15);
    let s = tmux.screen("term")?;
    ensure!(!s.contains("packets/s"), "not restored:\n{s}");

    // No sensor at the socket: an error before anything is drawn, status 1. (Its stderr goes
    // to a file: tmux may not show what a command wrote just before it exited.)
    let none = w.join("none.sock");
    let err_file = w.join("none.stderr");
    tmux.start(
        "none",
        Path::new("/bin/sh"),
        &[
            &"-c",
            &"exec \"$0\" --control \"$1\" top 2>\"$2\"",
            &ctl,
            &none,
            &err_file,
        ],
    )?;
    ensure!(tmux.exit_status("none")? == 1);
    let err = std::fs::read_to_string(&err_file)?;
    ensure!(
        err.trim_end().lines().count() == 1
            && err.starts_with("mos-ctl: error: no sensor listening at"),
        "{err}"
    );

    // Standard output not a terminal: 2, and what to use instead.
    let out: Output = Command::new(&ctl)
        .arg("--control")
        .arg(&control)
        .arg("top")
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(2), "{:?}: {err}", out.status);
    ensure!(out.stdout.is_empty());
    ensure!(
        err.trim_end().lines().count() == 1
            && err.contains("standard output is not one")
            && err.contains("mos-ctl status"),
        "{err}"
    );
    // A bad interval is a usage error, as mos-ctl's others are.
    let out = Command::new(&ctl)
        .args(["top", "--interval", "0"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1) && err.contains("from 0.2 to 3600"),
        "{:?}: {err}",
        out.status
    );
    Ok(())
}

/// Every string value under the key `key`, anywhere in `v`.
fn strings_under<'a>(v: &'a Value, key: &str, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match x {
                    Value::String(s) if k == key => out.push(s),
                    _ => strings_under(x, key, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| strings_under(x, key, out)),
        _ => {}
    }
}

/// The metric names in a PromQL expression: identifiers starting with `mos_`.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut cur = String::new();
    // Label values are skipped: a name inside quotes is not a metric.
    let mut quoted = false;
    for c in expr.chars().chain([' ']) {
        if c == '"' {
            quoted = !quoted;
        }
        if !quoted && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            cur.push(c);
        } else {
            if cur.starts_with("mos_") {
                names.push(cur.clone());
            }
            cur.clear();
        }
    }
    names
}

#[test]
fn the_grafana_dashboard_imports_and_queries_only_metrics_mos_ctl_serves() -> Result<()> {
    let path = workspace_root().join("deploy/grafana/mos.json");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let dash: Value = serde_json::from_str(&text).context("deploy/grafana/mos.json")?;

    // What an import needs: a uid, a title, a schema version, no fixed id, panels.
    ensure!(dash["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty() && u.len() <= 40));
    ensure!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    ensure!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    ensure!(dash["id"].is_null(), "a fixed id clashes on import");
    // The data source is a variable of type datasource, over Prometheus.
    let vars = dash["templating"]["list"]
        .as_array()
        .context("templating")?;
    let ds = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .context("no datasource variable")?;
    ensure!(
        ds["type"] == "datasource" && ds["query"] == "prometheus",
        "{ds}"
    );
    let panels = dash["panels"].as_array().context("panels")?;
    let mut ids = BTreeSet::new();
    let mut queried = 0;
    for p in panels {
        ensure!(
            ids.insert(p["id"].as_u64().context("panel id")?),
            "two panels with id {}",
            p["id"]
        );
        let g = &p["gridPos"];
        let (x, wd) = (g["x"].as_u64().context("x")?, g["w"].as_u64().context("w")?);
        ensure!(
            x + wd <= 24 && g["h"].as_u64().is_some_and(|h| h > 0),
            "{p}"
        );
        if p["type"] == "row" {
            continue;
        }
        // Every query goes to the chosen data source.
        ensure!(p["datasource"]["uid"] == "${datasource}", "{}", p["title"]);
        let targets = p["targets"].as_array().context("targets")?;
        ensure!(!targets.is_empty(), "{} queries nothing", p["title"]);
        for t in targets {
            ensure!(t["datasource"]["uid"] == "${datasource}", "{t}");
            ensure!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{t}");
            queried += 1;
        }
    }
    ensure!(queried >= 20, "only {queried} queries");

    // Every metric named in a query or a variable's query.
    let mut exprs = Vec::new();
    strings_under(&dash, "expr", &mut exprs);
    strings_under(&dash["templating"], "definition", &mut exprs);
    let wanted: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    for must in [
        "mos_frames_total",
        "mos_frame_bytes_total",
        "mos_flows_live",
        "mos_capture_drops_total",
        "mos_analyzer_lag_events",
        "mos_analyzer_events_delivered_total",
        "mos_analyzer_events_dropped_total",
        "mos_analyzer_records_dropped_total",
    ] {
        ensure!(wanted.contains(must), "the dashboard does not query {must}");
    }

    // A sensor with an analyzer attached (it waits for a second one, so nothing ends).
    let work = ScratchDir::new("ctl-top-grafana")?;
    let w = work.path();
    let control = w.join("c.sock");
    let _sensor = start_sensor(w, &control, &["--wait-analyzers", "2"])?;
    let _stat = flowstat(w, &control)?;
    let ctl = bin("mos-ctl")?;
    // Names with a sample, not only a HELP line. An analyzer's heartbeat age appears with its
    // first heartbeat: every name is given the time to appear.
    let served = |metrics: &str| -> BTreeSet<String> {
        metrics
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(str::to_string)
            .collect()
    };
    let mut metrics = String::new();
    let mut missing: Vec<String> = Vec::new();
    let all = wait_for("every metric the dashboard queries", TIMEOUT, || {
        let out = Command::new(&ctl)
            .arg("--control")
            .arg(&control)
            .arg("metrics")
            .output()?;
        ensure!(
            out.status.success(),
            "mos-ctl metrics: {}",
            tail(&String::from_utf8_lossy(&out.stderr))
        );
        metrics = String::from_utf8(out.stdout)?;
        let have = served(&metrics);
        missing = wanted.difference(&have).cloned().collect();
        if !missing.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(missing.is_empty())
    });
    ensure!(
        all.is_ok(),
        "the dashboard queries metrics mos-ctl metrics does not serve: {missing:?}\n{metrics}"
    );
    Ok(())
}

#[test]
fn metric_names_are_read_from_promql_without_label_values() {
    assert_eq!(
        metric_names(
            "sum by (instance) (rate(mos_frames_total{instance=~\"mos_x\"}[$__rate_interval])) * 8 / mos_a:b"
        ),
        ["mos_frames_total", "mos_a:b"]
    );
    assert!(metric_names("rate(node_cpu_seconds_total[5m])").is_empty());
}
