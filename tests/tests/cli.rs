//! `mos-sensor` on bad input: one clear message, the right exit status, and what could be
//! read kept. Needs a built sensor (`cargo build -p mos-sensor`).

use anyhow::Result;
use mos_tests::locate::{corpus_dir, sensor_bin};
use mos_tests::runner::ScratchDir;
use std::path::Path;
use std::process::{Command, Output};

/// The sensor on its own: no shared memory, no control socket.
fn sensor(args: &[&std::ffi::OsStr]) -> Result<Output> {
    Ok(Command::new(sensor_bin()?)
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
fn bad_ring_size_is_refused_before_reading() -> Result<()> {
    let pcap = corpus_dir()?.join("pcaps/dpkt__examples__data__http.pcap");
    let o = sensor(&[
        "--pcap".as_ref(),
        pcap.as_ref(),
        "--ring-kib".as_ref(),
        "3".as_ref(),
    ])?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(
        err.contains("--ring-kib must be a power of two"),
        "stderr: {err}"
    );
    Ok(())
}
