//! `mos-sensor` on bad input: one clear message, the right exit status, and what could be
//! read kept. Needs a built sensor (`cargo build -p mos-sensor`).

use anyhow::{Context, Result};
use mos_tests::locate::{corpus_dir, sensor_bin};
use mos_tests::runner::ScratchDir;
use std::path::Path;
use std::process::{Command, Output};

/// The sensor on its own: no shared memory, no control socket.
fn sensor(args: &[&std::ffi::OsStr]) -> Result<Output> {
    Ok(Command::new(sensor_bin()?)
        .env("MOS_SENSOR_CONFIG", "")
        .arg("--no-publish")
        .args(args)
        .output()?)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn truncated_capture_keeps_what_was_read_and_exits_2() -> Result<()> {
    let dir = ScratchDir::new("cli-truncated")?;
    let whole = std::fs::read(corpus_dir()?.join("pcaps/dpkt__examples__data__http.pcap"))?;
    // Cut inside the last record: every earlier frame is intact.
    let cut = whole.len() - 20;
    let pcap = dir.path().join("cut.pcap");
    std::fs::write(&pcap, &whole[..cut])?;
    let out = dir.path().join("dump");
    let o = sensor(&[
        "--pcap".as_ref(),
        pcap.as_ref(),
        "--dump".as_ref(),
        out.as_ref(),
    ])?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("truncated at byte offset"), "stderr: {err}");
    assert_eq!(
        err.matches("truncated at byte offset").count(),
        1,
        "stderr: {err}"
    );
    let flows = std::fs::read_to_string(out.join("flows.jsonl"))?;
    assert_eq!(flows.lines().count(), 2, "both connections kept: {flows}");
    // The first connection's request is complete in the truncated file too.
    assert!(flows.contains("\"c2s_bytes\":479"), "{flows}");
    Ok(())
}

#[test]
fn missing_file_is_one_error_line_and_exit_1() -> Result<()> {
    let o = sensor(&[
        "--pcap".as_ref(),
        Path::new("/nonexistent/x.pcap").as_os_str(),
    ])?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "stderr: {err}");
    assert!(err.contains("/nonexistent/x.pcap"), "stderr: {err}");
    Ok(())
}

#[test]
fn a_file_that_is_not_a_capture_is_refused() -> Result<()> {
    let dir = ScratchDir::new("cli-notpcap")?;
    let f = dir.path().join("notes.txt");
    std::fs::write(&f, "this is not a capture file\n")?;
    let o = sensor(&["--pcap".as_ref(), f.as_ref()])?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains("not a pcap or pcapng file"), "stderr: {err}");
    assert!(!err.contains("panicked"), "stderr: {err}");
    Ok(())
}

#[test]
fn bad_stream_sizes_are_refused_before_reading() -> Result<()> {
    let pcap = corpus_dir()?.join("pcaps/dpkt__examples__data__http.pcap");
    for (flag, value, range) in [
        ("--chunk-kib", "3", "a power of two between 4 and 1024"),
        ("--chunk-kib", "2048", "a power of two between 4 and 1024"),
        (
            "--stream-max-kib",
            "3",
            "a power of two between 8 and 1048576",
        ),
    ] {
        let o = sensor(&[
            "--pcap".as_ref(),
            pcap.as_ref(),
            flag.as_ref(),
            value.as_ref(),
        ])?;
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "stderr: {err}");
        assert!(
            err.contains(&format!("'{value}' for '{flag} <KIB>': must be {range}")),
            "stderr: {err}"
        );
    }
    Ok(())
}

/// Streams grow in chunks now: the flags of the fixed rings are refused before anything is
/// made, with one line naming the flags that replace them.
#[test]
fn the_removed_ring_flags_are_refused_naming_the_chunk_flags() -> Result<()> {
    let dir = ScratchDir::new("cli-ring-flags")?;
    let control = dir.path().join("c.sock");
    for (flag, value) in [("--ring-kib", "256"), ("--max-rings", "16384")] {
        let o = Command::new(sensor_bin()?)
            .env("MOS_SENSOR_CONFIG", "")
            .arg("--pcap")
            .arg(corpus_dir()?.join("pcaps/dpkt__examples__data__http.pcap"))
            .arg("--control")
            .arg(&control)
            .args([flag, value, "--quiet"])
            .output()?;
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "stderr: {err}");
        assert_eq!(
            err,
            format!(
                "mos-sensor: error: {flag} was removed: each side's stream now grows in chunks \
                 from a pool as its window needs; set the pool with tracking.stream_chunks \
                 (--stream-chunks) and tracking.chunk_kib, a side's most with \
                 tracking.stream_max_kib\n"
            )
        );
        assert!(!control.exists(), "a control socket was made");
    }
    Ok(())
}

/// The sensor opens no TCP port: the flag that used to serve metrics over HTTP is refused
/// before anything is made, with one line saying where the metrics went.
#[test]
fn the_removed_metrics_flag_is_refused_with_where_it_went() -> Result<()> {
    let dir = ScratchDir::new("cli-metrics-flag")?;
    let control = dir.path().join("c.sock");
    let o = Command::new(sensor_bin()?)
        .env("MOS_SENSOR_CONFIG", "")
        .arg("--pcap")
        .arg(corpus_dir()?.join("pcaps/dpkt__examples__data__http.pcap"))
        .arg("--control")
        .arg(&control)
        .args(["--metrics-listen", "127.0.0.1:0", "--quiet"])
        .output()?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert_eq!(
        err,
        "mos-sensor: error: --metrics-listen was removed: the sensor opens no TCP port; run \
         `mos-ctl metrics --listen ADDR` (unit mos-metrics.service)\n"
    );
    assert!(!control.exists(), "a control socket was made");
    Ok(())
}

/// `deploy/hugepages.sh` is idempotent: asking again for what is reserved changes nothing,
/// mounts hugetlbfs at most once, and exits 0 (also where the kernel refuses, which it says).
#[test]
fn the_hugepages_script_is_idempotent() -> Result<()> {
    let script = mos_tests::locate::workspace_root().join("deploy/hugepages.sh");
    let run = |args: &[&str]| -> Result<(bool, String)> {
        let o = Command::new("bash").arg(&script).args(args).output()?;
        Ok((
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        ))
    };
    let mounts = || -> Result<usize> {
        Ok(std::fs::read_to_string("/proc/mounts")?
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("/dev/hugepages"))
            .count())
    };
    let reserved = || -> Result<u64> {
        Ok(std::fs::read_to_string("/proc/sys/vm/nr_hugepages")?
            .trim()
            .parse()?)
    };
    // Ask for what is already reserved (at least one page): a second run must find nothing
    // to do.
    let pages = reserved()?.max(1).to_string();
    let (ok1, out1) = run(&["--pages", &pages])?;
    assert!(ok1, "first run failed: {out1}");
    let (before, mounted) = (reserved()?, mounts()?);
    let (ok2, out2) = run(&["--pages", &pages])?;
    assert!(ok2, "second run failed: {out2}");
    assert_eq!(reserved()?, before, "the reservation changed: {out2}");
    assert_eq!(mounts()?, mounted, "hugetlbfs was mounted again: {out2}");
    assert!(
        mounted <= 1,
        "hugetlbfs is mounted {mounted} times at /dev/hugepages"
    );
    // (The free count in the state line may move: other tests' sensors use hugepages.)
    assert!(
        out2.contains(&format!("hugepages: {before} x 2 MiB reserved"))
            || out2.contains("unavailable"),
        "{out2}"
    );
    let (ok3, check) = run(&["--check"])?;
    assert!(
        ok3 && check.starts_with("hugepages: "),
        "--check said {check:?}"
    );
    // A bad argument is refused with status 2.
    let o = Command::new("bash")
        .arg(&script)
        .arg("--pages")
        .arg("lots")
        .output()?;
    assert_eq!(o.status.code(), Some(2));

    // auto asks the sensor what its configuration takes. A small configuration takes fewer
    // pages than are reserved already, so nothing changes on the host.
    let work = ScratchDir::new("cli-hugepages")?;
    let small = work.path().join("small.toml");
    std::fs::write(
        &small,
        "[input]\npcap = \"x.pcap\"\n[tracking]\nmax_flows = 1000\nstream_chunks = 100\n",
    )?;
    let sensor = sensor_bin()?;
    let want = Command::new(&sensor)
        .env("MOS_SENSOR_CONFIG", "")
        .args(["--config"])
        .arg(&small)
        .arg("--print-hugepages")
        .output()?;
    assert!(want.status.success(), "{want:?}");
    let want = String::from_utf8_lossy(&want.stdout).trim().to_owned();
    let n: u64 = want.parse().with_context(|| format!("{want:?}"))?;
    assert!((1..64).contains(&n), "{n} pages for 1000 flows");
    // No input is needed: the size does not depend on it.
    let no_input = work.path().join("no-input.toml");
    std::fs::write(
        &no_input,
        "[tracking]\nmax_flows = 1000\nstream_chunks = 100\n",
    )?;
    let same = Command::new(&sensor)
        .env("MOS_SENSOR_CONFIG", "")
        .args(["--config"])
        .arg(&no_input)
        .arg("--print-hugepages")
        .output()?;
    assert!(same.status.success(), "{same:?}");
    assert_eq!(String::from_utf8_lossy(&same.stdout).trim(), n.to_string());
    let before = reserved()?;
    let sensor_s = sensor.to_string_lossy().into_owned();
    let small_s = small.to_string_lossy().into_owned();
    let (ok, out) = run(&[
        "--pages", "auto", "--sensor", &sensor_s, "--config", &small_s,
    ])?;
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("the sensor's configuration takes {n} x 2 MiB")),
        "{out}"
    );
    if before >= n {
        assert_eq!(reserved()?, before, "{out}");
    }
    // A configuration the sensor refuses: the default reservation, with the sensor's reason.
    let bad = work.path().join("bad.toml");
    std::fs::write(&bad, "[tracking]\nstream_chunks = 5\n")?;
    let bad_s = bad.to_string_lossy().into_owned();
    let (ok, out) = run(&["--pages", "auto", "--sensor", &sensor_s, "--config", &bad_s])?;
    assert!(ok, "{out}");
    assert!(
        out.contains("cannot ask the sensor")
            && out.contains("tracking.stream_chunks: must be between 18")
            && out.contains("reserving 256"),
        "{out}"
    );
    // auto without the sensor's path is a usage error.
    let (ok, _) = run(&["--pages", "auto"])?;
    assert!(!ok);
    Ok(())
}
