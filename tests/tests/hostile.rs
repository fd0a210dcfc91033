//! A hostile analyzer against the sensor (issue 13): `mos-hostile`, run as uid 65534 and
//! allowed to attach, resizes its page, scribbles over its consumer indices, floods the
//! control socket, holds idle connections and names itself with escape sequences. In every
//! case the sensor must finish its replay, a well-behaved `mos-dump` attached beside it must
//! write exactly what `mos-sensor --dump` writes, and `mos-ctl status` must answer within a
//! second while the attack goes on; where the attack stalls a lossless replay, the hostile
//! analyzer must be detached within the stall timeout and one second.
//!
//! Runs as root (it starts the hostile analyzer as another user).

use anyhow::{ensure, Context, Result};
use mos_tests::dumps::same_tree;
use mos_tests::locate::{bin, sensor_bin};
use mos_tests::procs::{
    assert_no_panic, cmd, copy_for_other_users, open_to_other_users, tail, wait_for,
    wait_for_socket, Proc,
};
use mos_tests::runner::{run_sensor_dump, ScratchDir};
use mos_tests::synth::{short_flows, stretch_time, ShortFlowsOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);
const NOBODY: u32 = 65534;
/// The sensor's stall timeout in these tests, seconds.
const STALL_SECS: u64 = 2;

/// How a case is set up.
#[derive(Clone, Copy, Default)]
struct Setup {
    /// Replay at the capture's pace (about 2 s) rather than as fast as the analyzers go.
    paced: bool,
    /// The hostile analyzer attaches and says ready: the replay waits for it too.
    attaches: bool,
    /// Start the sensor with a soft limit of 1024 open files (hard 8192), as many hosts do.
    low_nofile: bool,
    /// More sensor arguments, for the reference dump too.
    extra: &'static [&'static str],
}

/// What a case left to look at.
struct Outcome {
    sensor_err: String,
    hostile_out: String,
    /// `mos-ctl status`'s output while the hostile analyzer was active, and how long it took.
    status: String,
    status_took: Duration,
    /// When the sensor's log first named mos-dump attached.
    dump_attached_at: Option<Instant>,
    /// When the sensor's log first named the hostile analyzer detached, if it did.
    detached_at: Option<Instant>,
    /// The sensor's descriptors while the hostile analyzer was active.
    sensor_fds: usize,
}

/// 200 short connections; paced, stretched so that `--speed 20` replays them in about 2 s.
fn capture(w: &Path, paced: bool) -> Result<PathBuf> {
    let dense = w.join("dense.pcap");
    short_flows(
        &ShortFlowsOptions {
            conns: 200,
            concurrency: 16,
            ipv6: false,
            seed: 13,
        },
        &dense,
    )?;
    if !paced {
        return Ok(dense);
    }
    let pcap = w.join("paced.pcap");
    stretch_time(&dense, &pcap, 1000)?;
    Ok(pcap)
}

/// Runs `mos-hostile ARGS` against a sensor replaying the test capture, with `mos-dump`
/// attached beside it, and checks what every case must hold.
fn attack(tag: &str, hostile_args: &[&str], setup: Setup) -> Result<Outcome> {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test runs the hostile analyzer as uid {NOBODY} and must run as root"
    );
    let work = ScratchDir::new(&format!("hostile-{tag}"))?;
    let w = work.path();
    open_to_other_users(w)?;
    let pcap = capture(w, setup.paced)?;
    let reference = w.join("reference");
    let logs = w.join("reference-logs");
    std::fs::create_dir_all(&logs)?;
    run_sensor_dump(
        &sensor_bin()?,
        &pcap,
        &reference,
        &logs,
        TIMEOUT,
        setup.extra,
    )?;

    let control = w.join("c.sock");
    let wait = if setup.attaches { "2" } else { "1" };
    let stall = STALL_SECS.to_string();
    let mut args: Vec<&str> = vec![
        "--control",
        control.to_str().context("path")?,
        "--pcap",
        pcap.to_str().context("path")?,
        "--allow-user",
        "65534",
        "--wait-analyzers",
        wait,
        "--stall-timeout",
        &stall,
    ];
    // Small rings, so that an analyzer that does not consume holds the replay at once.
    if !setup.extra.contains(&"--event-ring") {
        args.extend(["--event-ring", "64"]);
    }
    if setup.paced {
        args.extend(["--speed", "20"]);
    }
    args.extend(setup.extra);
    let mut c = if setup.low_nofile {
        cmd(
            Path::new("prlimit"),
            &[&"--nofile=1024:8192", &sensor_bin()?],
        )
    } else {
        cmd(&sensor_bin()?, &[])
    };
    c.args(&args);
    let mut sensor = Proc::spawn("sensor", c, w)?;
    wait_for_socket(&mut sensor, &control, TIMEOUT)?;

    let exe = copy_for_other_users(&bin("mos-hostile")?, w)?;
    // A copy just written can be "busy" for a moment: another test's child, forked while the
    // copy was open for writing, holds that descriptor until it runs its own program.
    let mut tries = 0;
    let mut hostile = loop {
        let mut h = Command::new(&exe);
        h.arg("--control").arg(&control).args(hostile_args);
        h.uid(NOBODY).gid(NOBODY).current_dir(w);
        match Proc::spawn("hostile", h, w) {
            Err(e)
                if tries < 100
                    && e.chain().any(|c| {
                        c.downcast_ref::<std::io::Error>()
                            .is_some_and(|io| io.raw_os_error() == Some(26))
                    }) =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            r => break r?,
        }
    };
    wait_for("the hostile analyzer to be active", TIMEOUT, || {
        if let Some(st) = hostile.poll()? {
            anyhow::bail!(
                "mos-hostile exited with {st} before it was active:\n{}",
                tail(&hostile.stderr())
            );
        }
        Ok(hostile.stdout().lines().any(|l| l == "active"))
    })?;

    let out = w.join("dump");
    let mut dump = Proc::spawn(
        "dump",
        cmd(&bin("mos-dump")?, &[&"--control", &control, &"--out", &out]),
        w,
    )?;

    wait_for("mos-dump to attach", TIMEOUT, || {
        Ok(sensor.stderr().contains(" attached: mos-dump (") || sensor.poll()?.is_some())
    })?;
    let dump_attached_at = Some(Instant::now());

    // The sensor answers its operator while the attack goes on.
    let asked = Instant::now();
    let mut ctl = Proc::spawn(
        "ctl",
        cmd(&bin("mos-ctl")?, &[&"--control", &control, &"status"]),
        w,
    )?;
    let st = ctl.wait(Duration::from_secs(10))?;
    let status_took = asked.elapsed();
    ensure!(
        st.success(),
        "mos-ctl status failed ({st}): {}",
        ctl.stderr()
    );
    let sensor_fds =
        std::fs::read_dir(format!("/proc/{}/fd", sensor.pid())).map_or(0, |d| d.count());

    // Where the log names the hostile analyzer detached, when it first did.
    let mut detached_at = None;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if detached_at.is_none() && sensor.stderr().contains("made no progress") {
            detached_at = Some(Instant::now());
        }
        if sensor.poll()?.is_some() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the sensor did not finish within {TIMEOUT:?}:\n{}",
            tail(&sensor.stderr())
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let sensor_err = sensor.stderr();
    sensor
        .expect_code(0, TIMEOUT)
        .with_context(|| format!("the sensor did not survive:\n{}", tail(&sensor_err)))?;
    assert_no_panic(&sensor)?;
    dump.expect_code(0, TIMEOUT)?;
    same_tree(&reference, &out).context("the well-behaved analyzer's output")?;
    hostile.wait(TIMEOUT)?;
    assert_no_panic(&hostile)?;
    ensure!(
        status_took <= Duration::from_secs(1),
        "mos-ctl status took {status_took:?} during the attack"
    );
    Ok(Outcome {
        sensor_err,
        hostile_out: hostile.stdout(),
        status: ctl.stdout(),
        status_took,
        dump_attached_at,
        detached_at,
        sensor_fds,
    })
}

/// The value of `key=` on the first stdout line that starts with `tag`.
fn field<'a>(out: &'a str, tag: &str, key: &str) -> Option<&'a str> {
    out.lines().filter(|l| l.starts_with(tag)).find_map(|l| {
        l.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
    })
}

#[test]
fn resizing_its_page_or_the_read_only_regions_is_refused() -> Result<()> {
    let o = attack(
        "resize",
        &["resize"],
        Setup {
            paced: true,
            attaches: true,
            ..Setup::default()
        },
    )?;
    let out = &o.hostile_out;
    // EPERM: the page is sealed against any change of size.
    assert_eq!(
        field(out, "resize page", "page_shrink"),
        Some("errno1"),
        "{out}"
    );
    assert_eq!(
        field(out, "resize page", "page_grow"),
        Some("errno1"),
        "{out}"
    );
    for region in ["main", "events"] {
        let tag = format!("resize region={region}");
        for key in ["shrink", "grow"] {
            let v = field(out, &tag, key).with_context(|| format!("no {tag} {key} in {out}"))?;
            assert_ne!(v, "ok", "{region} {key}: {out}");
        }
    }
    assert_eq!(field(out, "end", "verdict"), Some("done"), "{out}");
    Ok(())
}

#[test]
fn an_oscillating_consumer_index_is_no_progress() -> Result<()> {
    // 64 flow slots for 200 connections, 16 at a time: the replay soon waits for the
    // analyzers to pass the end of a connection before its slot serves another, and the
    // hostile analyzer never consumes (its ring, of the default size, never fills).
    let o = attack(
        "oscillate",
        &["oscillate"],
        Setup {
            attaches: true,
            extra: &["--max-flows", "64", "--event-ring", "65536"],
            ..Setup::default()
        },
    )?;
    let detached = o
        .detached_at
        .with_context(|| format!("never detached:\n{}", tail(&o.sensor_err)))?;
    assert!(
        o.sensor_err.contains("(hostile-oscillate, pid"),
        "{}",
        o.sensor_err
    );
    // Unpaced, the replay needs a slot back within a few milliseconds of its start, which is
    // when the second analyzer (mos-dump) is attached: the stall counts from then.
    let started = o.dump_attached_at.context("mos-dump never attached")?;
    let took = detached.duration_since(started);
    assert!(
        took <= Duration::from_secs(STALL_SECS + 1),
        "detached {took:?} after it began to stall the replay (stall timeout {STALL_SECS} s)"
    );
    assert!(
        field(&o.hostile_out, "end", "verdict").is_some_and(|v| v.starts_with("detached")),
        "{}",
        o.hostile_out
    );
    Ok(())
}

#[test]
fn random_consumer_indices_and_page_words_harm_nobody_else() -> Result<()> {
    attack(
        "random",
        &["random"],
        Setup {
            paced: true,
            attaches: true,
            ..Setup::default()
        },
    )?;
    Ok(())
}

#[test]
fn claiming_events_far_in_the_future_harms_nobody_else() -> Result<()> {
    let o = attack(
        "future",
        &["future"],
        Setup {
            paced: true,
            attaches: true,
            ..Setup::default()
        },
    )?;
    assert_eq!(
        field(&o.hostile_out, "end", "verdict"),
        Some("done"),
        "{}",
        o.hostile_out
    );
    Ok(())
}

#[test]
fn a_subscription_flood_is_cut_off() -> Result<()> {
    let o = attack(
        "subscribe",
        &["subscribe"],
        Setup {
            paced: true,
            attaches: true,
            ..Setup::default()
        },
    )?;
    let out = &o.hostile_out;
    // Told why, unless its own flood filled its socket's buffer before the sensor could say.
    let end = out
        .lines()
        .find(|l| l.starts_with("end "))
        .context("no end")?;
    assert!(
        (end.contains("verdict=detached") && end.contains("control messages within a second"))
            || end.contains("verdict=closed"),
        "{out}"
    );
    assert!(o
        .sensor_err
        .contains("control messages within a second; closed"));
    Ok(())
}

#[test]
fn malformed_and_oversized_messages_are_refused() -> Result<()> {
    let o = attack(
        "malformed",
        &["malformed"],
        Setup {
            paced: true,
            ..Setup::default()
        },
    )?;
    let out = &o.hostile_out;
    let answer = |case: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("malformed case={case} ")))
            .and_then(|l| field(l, "malformed", "answer"))
            .map(str::to_string)
    };
    for case in [
        "one-byte",
        "random",
        "unknown-variant",
        "huge-length",
        "truncated-hello",
        "oversized",
        "oversized-hello",
        "flood",
    ] {
        let a = answer(case).with_context(|| format!("no answer to {case} in {out}"))?;
        assert!(a == "detached" || a == "closed", "{case}: {a}\n{out}");
    }
    // Messages before a hello get nothing; two hellos get one welcome.
    assert_eq!(answer("before-hello").as_deref(), Some("nothing"), "{out}");
    assert_eq!(answer("hello-twice").as_deref(), Some("welcome"), "{out}");
    let refused = format!("over {} bytes; closed", shm_layout::control::MAX_MESSAGE);
    assert!(o.sensor_err.contains(&refused), "{}", o.sensor_err);
    Ok(())
}

#[test]
fn two_thousand_idle_connections_lock_nobody_out() -> Result<()> {
    let o = attack(
        "idle",
        &["idle", "--count", "2000", "--hold", "6"],
        Setup {
            paced: true,
            low_nofile: true,
            ..Setup::default()
        },
    )?;
    assert_eq!(
        field(&o.hostile_out, "idle", "opened"),
        Some("2000"),
        "{}",
        o.hostile_out
    );
    // Every one of them was closed by the sensor at least once (too many waiting, or no
    // hello within the deadline), and the sensor never held more than its bound of them.
    let closed: u64 = field(&o.hostile_out, "end", "closed_by_sensor")
        .context("no end line")?
        .parse()?;
    assert!(closed >= 2000, "{}", o.hostile_out);
    assert!(
        o.sensor_fds < 64 + 100,
        "the sensor held {} descriptors during the attack",
        o.sensor_fds
    );
    assert!(
        o.sensor_err.contains("more than 64 waited to say hello"),
        "{}",
        o.sensor_err
    );
    Ok(())
}

#[test]
fn filter_programs_are_hostile_input_too() -> Result<()> {
    let o = attack(
        "filters",
        &["filters"],
        Setup {
            paced: true,
            attaches: true,
            ..Setup::default()
        },
    )?;
    let out = &o.hostile_out;
    let answer = |case: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("filters case={case} ")))
            .and_then(|l| field(l, "filters", "answer"))
            .map(str::to_string)
    };
    for case in [
        "bad-opcode",
        "jump-past-end",
        "jump-offset-overflow",
        "no-return",
        "empty-program",
        "scratch-16",
        "divide-by-zero",
        "kernel-offset",
        "too-long",
        "socket-id-40",
        "socket-twice",
        "33-sockets",
        "raw-without-packets",
    ] {
        assert_eq!(answer(case).as_deref(), Some("invalid"), "{case}\n{out}");
    }
    // Long valid programs are taken and run on every connection and packet; the well-behaved
    // analyzer beside it got exactly what it would have alone (checked by `attack`), and the
    // hostile one was neither detached nor refused.
    assert_eq!(answer("heavy").as_deref(), Some("subscribed"), "{out}");
    assert_eq!(field(out, "end", "verdict"), Some("done"), "{out}");
    let changes: u64 = field(out, "end", "changes")
        .context("no change count")?
        .parse()?;
    assert!(changes > 100, "{out}");
    assert!(
        o.sensor_err.contains("subscription refused"),
        "{}",
        o.sensor_err
    );
    Ok(())
}

#[test]
fn a_name_with_escape_sequences_is_printed_escaped() -> Result<()> {
    let name = format!(
        "evil\n[mos-sensor] analyzer 99 attached: root\x1b[2J\x1b]0;owned\x07\u{202e}{}",
        "x".repeat(500)
    );
    let o = attack(
        "named",
        &["named", "--name", &name],
        Setup {
            paced: true,
            attaches: true,
            ..Setup::default()
        },
    )?;
    for (what, text) in [("the log", &o.sensor_err), ("mos-ctl status", &o.status)] {
        assert!(
            !text.contains(['\x1b', '\x07', '\u{202e}']),
            "{what} has raw control characters:\n{text:?}"
        );
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("[mos-sensor] analyzer 99")),
            "{what} has a line the analyzer wrote:\n{text}"
        );
    }
    assert!(
        o.status
            .contains("evil\\n[mos-sensor] analyzer 99 attached: root\\x1b[2J"),
        "{}",
        o.status
    );
    // At most 64 characters of it are kept.
    assert!(!o.status.contains(&"x".repeat(40)), "{}", o.status);
    assert!(o.status_took <= Duration::from_secs(1));
    Ok(())
}
