//! Odd numbers (issue 13, item 7): every float, size, count and duration that a binary takes
//! is range-checked. A bad value on the command line or in the sensor's configuration file is
//! refused at once with one line naming the option, the value and the range, exit status 1,
//! and no panic; a configuration file that is too large (or never ends) is refused unread.
//! `mos-ctl` and `mos-dump` take no numbers (paths and a switch only), so only `mos-sensor` and
//! `mos-flowstat` appear. Needs the release binaries (`cargo build --release --bins`).

use anyhow::{ensure, Result};
use mos_tests::locate::{bin, corpus_dir, sensor_bin};
use mos_tests::procs::{assert_one_line, cmd, wait_for_socket, Proc};
use mos_tests::runner::ScratchDir;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How long a refusal may take. It comes before anything starts, in milliseconds; the bound
/// is generous for a loaded machine, and ends a binary that would run or read on instead.
const AT_ONCE: Duration = Duration::from_secs(10);

/// Starts `program ARGS` under a 1 GiB address-space limit, so that a binary that reads
/// without bound (`--config /dev/zero` before the fix grew by gigabytes a second) fails fast
/// instead of taking the machine's memory while the deadline runs.
fn start(work: &Path, name: &str, program: &Path, args: &[&str]) -> Result<Proc> {
    let mut c = Command::new("sh");
    c.args(["-c", "ulimit -v 1048576 && exec \"$0\" \"$@\""])
        .arg(program)
        .args(args)
        .env("MOS_SENSOR_CONFIG", "");
    Proc::spawn(name, c, work)
}

/// Runs every case: each must exit 1 within [`AT_ONCE`] with stderr one line holding every
/// word of the case, and no panic. Failures are gathered so that one run lists them all.
fn refuse_all(work: &Path, program: &Path, cases: &[(Vec<&str>, Vec<String>)]) -> Result<()> {
    let mut failed = Vec::new();
    for (i, (args, words)) in cases.iter().enumerate() {
        let mut p = start(work, &format!("case{i}"), program, args)?;
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let r = p
            .expect_code(1, AT_ONCE)
            .and_then(|()| assert_one_line(&p, &words));
        if let Err(e) = r {
            failed.push(format!("{args:?}: {e:#}"));
        }
    }
    ensure!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
    Ok(())
}

/// The three commands issue 13 reports panicking, as reported: on a capture the sensor really
/// replays, and `mos-flowstat` with a sensor to attach to, so that each went as far as its
/// panic before the fix. Each is now refused before anything starts.
#[test]
fn the_reported_panics_are_one_line_errors() -> Result<()> {
    let work = ScratchDir::new("numbers-reported")?;
    let pcap = corpus_dir()?.join("pcaps/dpkt__examples__data__http.pcap");
    let control = work.path().join("control.sock");
    // Small shared memory: this sensor waits for an analyzer until the test ends.
    let small: [&dyn AsRef<std::ffi::OsStr>; 14] = [
        &"--control",
        &control,
        &"--max-flows",
        &"1000",
        &"--stream-chunks",
        &"100",
        &"--pktlog-frames",
        &"1024",
        &"--pktlog-kib",
        &"1024",
        &"--event-ring",
        &"1024",
        &"--hugepages",
        &"off",
    ];
    let sensor = sensor_bin()?;
    let mut reported: Vec<(Command, &str)> = Vec::new();
    let mut c = cmd(
        &sensor,
        &[&"--pcap", &pcap, &"--no-publish", &"--speed", &"1e-300"],
    );
    c.arg("--quiet");
    reported.push((
        c,
        "mos-sensor: error: invalid value '1e-300' for '--speed <FACTOR>': must be between 0.001 and 1000000",
    ));
    let mut c = cmd(&sensor, &small);
    c.arg("--pcap")
        .arg(&pcap)
        .args(["--stall-timeout", "1e300", "--quiet"]);
    reported.push((
        c,
        "mos-sensor: error: invalid value '1e300' for '--stall-timeout <SECONDS>': must be between 0.001 and 86400 seconds",
    ));
    for (i, (c, line)) in reported.into_iter().enumerate() {
        let mut p = Proc::spawn(&format!("sensor{i}"), c, work.path())?;
        p.expect_code(1, AT_ONCE)?;
        assert_one_line(&p, &[line])?;
    }
    // mos-flowstat --interval 1e300 panicked once attached; a sensor waits for it.
    let mut s = cmd(&sensor, &small);
    s.arg("--pcap")
        .arg(&pcap)
        .args(["--wait-analyzers", "1", "--quiet"]);
    let mut s = Proc::spawn("waiting-sensor", s, work.path())?;
    wait_for_socket(&mut s, &control, AT_ONCE)?;
    let f = cmd(
        &bin("mos-flowstat")?,
        &[&"--control", &control, &"--interval", &"1e300"],
    );
    let mut f = Proc::spawn("flowstat", f, work.path())?;
    f.expect_code(1, AT_ONCE)?;
    assert_one_line(
        &f,
        &["mos-flowstat: invalid value '1e300' for '--interval <SECS>': must be between 0.05 and 86400 seconds"],
    )?;
    // The sensor is still waiting (the analyzer never attached); the guard ends it.
    ensure!(s.poll()?.is_none(), "the sensor exited: {}", s.stderr());
    Ok(())
}

/// `mos-sensor` flags: each bad value with the words its one line must hold (the flag, the
/// value and the range).
#[test]
fn sensor_flags_out_of_range_are_one_line_and_exit_1() -> Result<()> {
    let work = ScratchDir::new("numbers-sensor")?;
    // Inputs that fail at once if a bad value slipped through, so that it shows as a wrong
    // message instead of a capture that runs.
    let pcap = ["--pcap", "/nonexistent/numbers.pcap"];
    let live = ["--iface", "mos-no-such-if0"];
    let dpdk = ["--dpdk", "--no-pci"];
    let table: &[(&[&str], &str, &[&str], &str)] = &[
        // (input, flag, bad values, the range as the message gives it)
        (
            &pcap,
            "--speed",
            &["1e-300", "0", "-1", "nan", "inf", "1e7"],
            "between 0.001 and 1000000",
        ),
        (
            &pcap,
            "--stall-timeout",
            &["1e300", "0", "-1", "NaN", "-inf", "86401"],
            "between 0.001 and 86400 seconds",
        ),
        (
            &live,
            "--stop-after-idle",
            &["1e300", "0", "nan"],
            "between 0.001 and 86400 seconds",
        ),
        (
            &pcap,
            "--idle-timeout",
            &["0", "2592001", "18446744073709551615", "1.5"],
            "between 1 and 2592000",
        ),
        (
            &pcap,
            "--frag-timeout",
            &["0", "86401", "99999999999999999999"],
            "between 1 and 86400",
        ),
        (
            &pcap,
            "--frag-memory",
            &["-1", "1048577"],
            "between 0 and 1048576",
        ),
        (
            &pcap,
            "--frag-datagrams",
            &["0", "16777217"],
            "between 1 and 16777216",
        ),
        (
            &pcap,
            "--workers",
            &["0", "33", "1e300", "18446744073709551616"],
            "between 1 and 32",
        ),
        (
            &pcap,
            "--max-flows",
            &["0", "2147483648", "99999999999999999999"],
            "between 1 and 2147483647",
        ),
        (
            &pcap,
            "--stream-chunks",
            &["0", "17", "2147483648"],
            "between 18 and 2147483647",
        ),
        (
            &pcap,
            "--chunk-kib",
            &["0", "2", "3", "2048"],
            "a power of two between 4 and 1024",
        ),
        (
            &pcap,
            "--stream-max-kib",
            &["0", "2", "3", "4", "2097152"],
            "a power of two between 8 and 1048576",
        ),
        (
            &pcap,
            "--history-kib",
            &["-1", "1048577"],
            "between 0 and 1048576",
        ),
        (
            &pcap,
            "--event-ring",
            &["0", "1", "3", "33554432"],
            "a power of two between 2 and 16777216",
        ),
        (
            &pcap,
            "--pktlog-frames",
            &["0", "4294967296", "18446744073709551615"],
            "between 1 and 4294967295",
        ),
        (
            &pcap,
            "--pktlog-kib",
            &["0", "4294967296", "18446744073709551615"],
            "between 1 and 4294967295",
        ),
        (
            &pcap,
            "--max-analyzers",
            &["0", "65537", "18446744073709551615"],
            "between 1 and 65536",
        ),
        (
            &pcap,
            "--wait-analyzers",
            &["-1", "65537"],
            "between 0 and 65536",
        ),
        (
            &live,
            "--count",
            &["0", "9223372036854775808"],
            "between 1 and 9223372036854775807",
        ),
        (
            &live,
            "--block-timeout-ms",
            &["0", "1001"],
            "between 1 and 1000",
        ),
        (&dpdk, "--port", &["-1", "65536"], "between 0 and 65535"),
        (
            &dpdk,
            "--mbufs",
            &["0", "4294967296"],
            "between 1 and 4294967295",
        ),
        (&pcap, "--memcap", &["0"], "more than 0 bytes"),
        (&pcap, "--memcap", &["99999999999T"], "is too large"),
        (
            &pcap,
            "--cpus",
            &["0-99999999999"],
            "CPU numbers must be below",
        ),
    ];
    let mut cases = Vec::new();
    for (input, flag, values, range) in table {
        for v in *values {
            let mut args = input.to_vec();
            args.extend([*flag, *v]);
            let words = vec![
                "mos-sensor: error: invalid value".to_owned(),
                format!("'{v}' for '{flag} <"),
                range.to_string(),
            ];
            cases.push((args, words));
        }
    }
    // Settings that bound one another, and the memory they add up to: the largest values
    // every flag takes multiply out without overflow, and the sum is refused by --memcap,
    // naming a setting to lower.
    let most = [
        "--workers",
        "32",
        "--max-flows",
        "2147483647",
        "--stream-chunks",
        "2147483647",
        "--chunk-kib",
        "1024",
        "--stream-max-kib",
        "1048576",
        "--history-kib",
        "1048576",
        "--event-ring",
        "16777216",
        "--max-analyzers",
        "65536",
        "--pktlog-frames",
        "4294967295",
        "--pktlog-kib",
        "4294967295",
        "--frag-memory",
        "1048576",
        "--frag-datagrams",
        "16777216",
    ];
    let mut all = pcap.to_vec();
    all.extend(most);
    all.extend(["--memcap", "1T"]);
    let composite: Vec<(Vec<&str>, &[&str])> = vec![
        (
            [&pcap[..], &["--workers", "4", "--max-flows", "3"]].concat(),
            &["--max-flows must be at least one per worker (4 with --workers 4), not 3"],
        ),
        (
            [&pcap[..], &["--workers", "2", "--stream-chunks", "35"]].concat(),
            &["--stream-chunks must be at least 18 per worker (36 with --workers 2), not 35"],
        ),
        (
            [&pcap[..], &["--chunk-kib", "64", "--stream-max-kib", "64"]].concat(),
            &["--stream-max-kib (64) must be at least twice --chunk-kib (64)"],
        ),
        (
            [&pcap[..], &["--wait-analyzers", "65"]].concat(),
            &["--wait-analyzers 65 would wait forever: at most --max-analyzers (64)"],
        ),
        (
            all,
            &[
                "may use up to",
                "lower --max-analyzers or --event-ring, or raise --memcap",
            ],
        ),
        // The stream settings at their largest, each the largest part in turn: the pool's
        // chunks, then (with the smallest chunks) the chunk maps.
        (
            [
                &pcap[..],
                &[
                    "--stream-chunks",
                    "2147483647",
                    "--chunk-kib",
                    "1024",
                    "--memcap",
                    "1T",
                ],
            ]
            .concat(),
            &[
                "may use up to",
                "lower --stream-chunks or --chunk-kib, or raise --memcap",
            ],
        ),
        (
            [
                &pcap[..],
                &[
                    "--stream-chunks",
                    "2147483647",
                    "--chunk-kib",
                    "4",
                    "--stream-max-kib",
                    "1048576",
                    "--memcap",
                    "1T",
                ],
            ]
            .concat(),
            &[
                "may use up to",
                "lower --stream-chunks or --stream-max-kib, or raise --memcap",
            ],
        ),
    ];
    for (args, words) in composite {
        let mut w = vec!["mos-sensor: error: ".to_owned()];
        w.extend(words.iter().map(|s| s.to_string()));
        cases.push((args, w));
    }
    refuse_all(work.path(), &sensor_bin()?, &cases)
}

/// `mos-flowstat --interval`: refused before it attaches (no sensor is needed to see it).
#[test]
fn flowstat_interval_out_of_range_is_one_line_and_exit_1() -> Result<()> {
    let work = ScratchDir::new("numbers-flowstat")?;
    let control = work.path().join("none.sock");
    let control = control.to_str().unwrap_or_default();
    let cases: Vec<(Vec<&str>, Vec<String>)> =
        ["1e300", "0", "0.01", "-1", "nan", "inf", "86401", "ten"]
            .into_iter()
            .map(|v| {
                let range = if v == "ten" {
                    "expected a number (between 0.05 and 86400 seconds)"
                } else {
                    "must be between 0.05 and 86400 seconds"
                };
                (
                    vec!["--control", control, "--interval", v],
                    vec![
                        format!("mos-flowstat: invalid value '{v}' for '--interval <SECS>'"),
                        range.to_owned(),
                    ],
                )
            })
            .collect();
    refuse_all(work.path(), &bin("mos-flowstat")?, &cases)
}

/// The analyzers' `--wait`: refused before they try to attach.
#[test]
fn analyzers_wait_out_of_range_is_one_line_and_exit_1() -> Result<()> {
    let work = ScratchDir::new("numbers-wait")?;
    let control = work.path().join("none.sock");
    let control = control.to_str().unwrap_or_default();
    let out = work.path().join("out");
    let out = out.to_str().unwrap_or_default();
    for prog in ["mos-dump", "mos-flowstat"] {
        let cases: Vec<(Vec<&str>, Vec<String>)> = ["-1", "nan", "inf", "3601", "1e300", "ten"]
            .into_iter()
            .map(|v| {
                let range = if v == "ten" {
                    "expected a number (between 0 and 3600 seconds)"
                } else {
                    "must be between 0 and 3600 seconds"
                };
                let mut args = vec!["--control", control, "--wait", v];
                if prog == "mos-dump" {
                    args.extend(["--out", out]);
                }
                (
                    args,
                    vec![
                        format!("{prog}: invalid value '{v}' for '--wait <SECS>'"),
                        range.to_owned(),
                    ],
                )
            })
            .collect();
        refuse_all(work.path(), &bin(prog)?, &cases)?;
    }
    Ok(())
}

/// The same values in the configuration file: `FILE:LINE: section.key: what is wrong`; and a
/// file too large to be one, or one that never ends, refused unread.
#[test]
fn config_file_numbers_and_size_are_checked() -> Result<()> {
    let work = ScratchDir::new("numbers-config")?;
    let files: &[(&str, &str)] = &[
        // (file text, the key's line and message, after FILE:)
        (
            "[input]\npcap = \"x.pcap\"\nspeed = 1e-300\n",
            "3: input.speed: must be between 0.001 and 1000000, not 1e-300",
        ),
        (
            "[input]\npcap = \"x.pcap\"\nspeed = nan\n",
            "3: input.speed: must be between 0.001 and 1000000, not NaN",
        ),
        (
            "[sensor]\nstall_timeout = 1e300\n",
            "2: sensor.stall_timeout: must be between 0.001 and 86400 seconds, not 1e300",
        ),
        (
            "[sensor]\nstall_timeout = inf\n",
            "2: sensor.stall_timeout: must be between 0.001 and 86400 seconds, not inf",
        ),
        (
            "[sensor]\n\nstall_timeout = -0.5\n",
            "3: sensor.stall_timeout: must be between 0.001 and 86400 seconds, not -0.5",
        ),
        (
            "[input]\nstop_after_idle = 0\n",
            "2: input.stop_after_idle: must be between 0.001 and 86400 seconds, not 0",
        ),
        (
            "[tracking]\nidle_timeout = 9223372036854775807\n",
            "2: tracking.idle_timeout: must be between 1 and 2592000, not 9223372036854775807",
        ),
        (
            "[publish]\nmax_analyzers = 0\n",
            "2: publish.max_analyzers: must be between 1 and 65536, not 0",
        ),
        (
            "[publish]\nevent_ring = 3\n",
            "2: publish.event_ring: must be a power of two between 2 and 16777216, not 3",
        ),
        (
            "[fragments]\ntimeout = 86401\n",
            "2: fragments.timeout: must be between 1 and 86400, not 86401",
        ),
        (
            "[input]\ncpus = \"0-99999999999\"\n",
            "2: input.cpus: CPU numbers must be below",
        ),
    ];
    let mut cases: Vec<(Vec<&str>, Vec<String>)> = Vec::new();
    let mut paths = Vec::new();
    for (i, (text, message)) in files.iter().enumerate() {
        let path = work.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text)?;
        paths.push((path.to_string_lossy().into_owned(), *message));
    }
    // 2 MiB of comments: valid TOML, but no configuration is that large.
    let big = work.path().join("big.toml");
    std::fs::write(&big, "# padding\n".repeat((2 << 20) / 10 + 1))?;
    ensure!(std::fs::metadata(&big)?.len() >= 2 << 20);
    let too_large =
        "the configuration file is larger than 1 MiB (1048576 bytes), the most the sensor reads";
    for (path, message) in &paths {
        cases.push((
            vec!["--config", path, "--pcap", "x.pcap"],
            vec![format!("mos-sensor: error: {path}:{message}")],
        ));
    }
    let big = big.to_string_lossy().into_owned();
    for path in [big.as_str(), "/dev/zero"] {
        cases.push((
            vec!["--config", path, "--pcap", "x.pcap"],
            vec![format!("mos-sensor: error: {path}: {too_large}")],
        ));
    }
    refuse_all(work.path(), &sensor_bin()?, &cases)
}
