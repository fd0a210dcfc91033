//! The systemd units as a booted Debian 12 minbase runs them, checked without booting one:
//! `systemctl reload mos-sensor` runs a command that needs no kill program (minbase has
//! /bin/sh but not procps' /bin/kill), and each `mos-analyzer@` instance gets its own dynamic
//! user, whose name systemd accepts, still in the group the shipped sensor.toml lets attach.
//!
//! Needs the release binaries (`cargo build --release -p mos-sensor -p mos-ctl -p mos-analyzers
//! --bins`: systemd-analyze checks that the units' programs exist) and systemd-analyze
//! (package systemd). The reload is run with /bin/kill hidden in a private mount namespace
//! when the test runs as root (as in CI), and with an empty PATH in any case.

use anyhow::{bail, ensure, Context, Result};
use mos_tests::locate::{bin, workspace_root};
use mos_tests::runner::ScratchDir;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The value of the unit file's `KEY=` lines, in order.
fn values(unit: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

fn read_unit(name: &str) -> Result<String> {
    let p = workspace_root().join("deploy").join(name);
    std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
}

/// A command line split into words as systemd splits it: whitespace outside quotes separates,
/// single and double quotes group and are removed. (Backslash escapes are not used by our
/// units and are refused.)
fn split_command_line(line: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (_, '\\') => bail!("backslash in {line:?}"),
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    ensure!(quote.is_none(), "unclosed quote in {line:?}");
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// The kill programs a full system has and a minbase one lacks.
const KILL_PROGRAMS: [&str; 2] = ["/bin/kill", "/usr/bin/kill"];

#[test]
fn reload_signals_the_main_process_without_a_kill_program() -> Result<()> {
    let unit = read_unit("mos-sensor.service")?;
    let reload = values(&unit, "ExecReload");
    ensure!(reload.len() == 1, "ExecReload lines: {reload:?}");
    let words = split_command_line(&reload[0])?;
    let program = words.first().context("an empty ExecReload")?;
    ensure!(
        program.starts_with('/') && Path::new(program).is_file(),
        "ExecReload runs {program:?}, not an absolute path to a program of this system"
    );
    ensure!(
        !KILL_PROGRAMS.contains(&program.as_str()) && !program.ends_with("/kill"),
        "ExecReload runs {program}: a minimal Debian has no kill program"
    );
    // A stand-in for the sensor: SIGHUP ends it, so its status says which signal came.
    let mut main = Command::new("sleep")
        .arg("60")
        .stdin(Stdio::null())
        .spawn()
        .context("starting sleep")?;
    let pid = main.id().to_string();
    // systemd replaces ${MAINPID} within a word, and $MAINPID as a word of its own, and also
    // sets MAINPID in the command's environment.
    let words: Vec<String> = words
        .iter()
        .map(|w| {
            if w == "$MAINPID" {
                pid.clone()
            } else {
                w.replace("${MAINPID}", &pid)
            }
        })
        .collect();
    let root = rustix::process::geteuid().is_root();
    let mut c = if root {
        // Hide every kill program in a private mount namespace, check that it is hidden, and
        // run the command there with an environment like systemd's and no PATH to search.
        let mut c = Command::new("unshare");
        c.args(["--mount", "--", "sh", "-c"]).arg(
            "for k in \"$@\"; do [ \"$k\" = -- ] && break; \
             [ -e \"$k\" ] && mount --bind /dev/null \"$k\"; done; \
             while [ \"$1\" != -- ]; do \
             if \"$1\" -0 $$ 2>/dev/null; then echo \"$1 still runs\" >&2; exit 99; fi; \
             shift; done; shift; \
             exec env -i PATH=/nonexistent MAINPID=\"$MAINPID\" \"$@\"",
        );
        c.arg("sh").args(KILL_PROGRAMS).arg("--").args(&words);
        c.env("MAINPID", &pid);
        c
    } else {
        eprintln!("not root: /bin/kill is not hidden, the reload runs with an empty PATH only");
        let mut c = Command::new(&words[0]);
        c.args(&words[1..])
            .env_clear()
            .env("PATH", "/nonexistent")
            .env("MAINPID", &pid);
        c
    };
    let out = c.output().context("running the reload command")?;
    if !out.status.success() {
        let _ = main.kill();
        let _ = main.wait();
        bail!(
            "the reload command {words:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = main.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = main.kill();
            let _ = main.wait();
            bail!("the reload command exited 0 but sent the main process no signal");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    ensure!(
        status.signal() == Some(libc::SIGHUP),
        "the main process ended with {status}, not SIGHUP"
    );
    Ok(())
}

/// A name systemd takes as a dynamic user without complaint: a letter or "_", then letters,
/// digits, "_" or "-", 31 characters at most.
fn strict_user_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 31
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// The shipped instances: deploy/analyzers/NAME.env.
fn shipped_instances() -> Result<Vec<String>> {
    let dir = workspace_root().join("deploy/analyzers");
    let mut names = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".env") {
            names.push(stem.to_string());
        }
    }
    names.sort();
    ensure!(!names.is_empty(), "no instances in {}", dir.display());
    Ok(names)
}

/// The units rendered as install.sh renders them, with the binaries of this build and
/// hugepages.sh from the checkout, into `dir`.
fn render_units(dir: &Path) -> Result<PathBuf> {
    let bindir = bin("mos-sensor")?
        .parent()
        .context("the sensor binary has no directory")?
        .to_path_buf();
    let units = dir.join("units");
    std::fs::create_dir_all(&units)?;
    for u in ["mos-sensor.service", "mos-analyzer@.service"] {
        let text = read_unit(u)?
            .replace("@bindir@", &bindir.display().to_string())
            .replace(
                "@libexecdir@",
                &workspace_root().join("deploy").display().to_string(),
            )
            .replace("@sysconfdir@", &dir.join("etc").display().to_string())
            .replace("@docdir@", &workspace_root().display().to_string());
        std::fs::write(units.join(u), text)?;
    }
    Ok(units)
}

/// `systemd-analyze verify` of an instance of the analyzer template: whether it passed, and
/// its output's lines about our units.
fn verify_instance(units: &Path, instance: &str) -> Result<(bool, Vec<String>)> {
    let path = units.join(format!("mos-analyzer@{instance}.service"));
    std::fs::copy(units.join("mos-analyzer@.service"), &path)?;
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .context(
            "systemd-analyze not found: install the package systemd (scripts/setup.sh does)",
        )?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&path)?;
    let ours = text
        .lines()
        .filter(|l| l.contains("mos-"))
        .map(str::to_string)
        .collect();
    Ok((out.status.success(), ours))
}

#[test]
fn each_analyzer_instance_is_its_own_user_in_the_group_that_may_attach() -> Result<()> {
    let template = read_unit("mos-analyzer@.service")?;
    ensure!(values(&template, "DynamicUser") == ["yes"]);
    let users = values(&template, "User");
    ensure!(
        users.len() == 1 && users[0].contains("%i"),
        "the template's User= lines are {users:?}: without the instance name in it, every \
         instance is the same user"
    );
    // The group that lets them attach: the instances' supplementary group is one the shipped
    // configuration allows.
    let groups = values(&template, "SupplementaryGroups");
    ensure!(groups == ["mos"], "SupplementaryGroups: {groups:?}");
    let config = std::fs::read_to_string(workspace_root().join("deploy/sensor.toml"))?;
    ensure!(
        config
            .lines()
            .any(|l| l.trim() == "allow_groups = [\"mos\"]"),
        "deploy/sensor.toml does not allow group mos"
    );

    let scratch = ScratchDir::new("units-users")?;
    let units = render_units(scratch.path())?;
    let instances = shipped_instances()?;
    let mut seen = std::collections::BTreeSet::new();
    for i in &instances {
        let user = users[0].replace("%i", i);
        ensure!(
            strict_user_name(&user),
            "instance {i}: user name {user:?} is not one systemd takes for a dynamic user"
        );
        ensure!(seen.insert(user.clone()), "two instances are user {user}");
        let (passed, complaints) = verify_instance(&units, i)?;
        ensure!(
            passed && complaints.is_empty(),
            "systemd-analyze verify mos-analyzer@{i}: {complaints:?}"
        );
    }
    ensure!(seen.len() == instances.len() && instances.len() >= 2);
    // What the template's comment says of longer or odder names is what systemd says too.
    let long = "abcdefghijklmnopqrs"; // 19 characters: one more than the comment allows
    for (instance, taken) in [("a.b", false), (long, false), (&long[..18], true)] {
        let user = users[0].replace("%i", instance);
        ensure!(strict_user_name(&user) == taken, "{user}");
        // (These have no mos-NAME program: verify fails on that, and that is not the point.)
        let (_, said) = verify_instance(&units, instance)?;
        let warned = said.iter().any(|l| {
            l.contains(&format!("Accepting user/group name '{user}'"))
                && l.contains("does not match strict")
        });
        ensure!(
            warned != taken,
            "systemd-analyze verify mos-analyzer@{instance}: {said:?}"
        );
    }
    Ok(())
}
