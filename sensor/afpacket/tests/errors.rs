//! Failures come out as one clear line, and dropping a ring gives back what it took.

mod common;

use std::process::Command;

use common::*;
use mos_afpacket::{Error, Ring, RingOptions};

/// Runs the capture example with `prefix` before it and returns (exit code, stdout, stderr).
fn run_example(prefix: &[&str], args: &[&str]) -> (Option<i32>, String, String) {
    let exe = capture_example();
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let out = cmd.args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn unknown_interface_exits_1_with_one_line() {
    let (code, stdout, stderr) = run_example(&[], &["--iface", "mos-nope0", "--max-secs", "5"]);
    assert_eq!(code, Some(1));
    assert_eq!(stdout, "");
    assert_eq!(stderr, "error: no network interface named mos-nope0\n");
}

#[test]
fn without_cap_net_raw_exits_1_with_one_line() {
    // As uid/gid 65534 with no groups: changing away from uid 0 drops every capability.
    let (code, stdout, stderr) = run_example(
        &[
            "setpriv",
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
        ],
        &["--iface", "lo", "--max-secs", "5"],
    );
    assert_eq!(stdout, "");
    assert_eq!(stderr, "error: capturing on lo needs root or CAP_NET_RAW\n");
    assert_eq!(code, Some(1));
}

#[test]
fn unknown_interface_in_process() {
    let e = Ring::open("mos-nope0", RingOptions::default()).unwrap_err();
    assert!(matches!(e, Error::NoSuchInterface { .. }), "{e:?}");
    assert_eq!(e.to_string(), "no network interface named mos-nope0");
}

fn count_lines(path: &str) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}

#[test]
fn dropping_a_ring_closes_and_unmaps() {
    // The loopback device of the test's own namespace; no traffic is sent and promiscuous mode
    // is not asked for.
    let opts = RingOptions {
        block_size: 1 << 16,
        block_count: 4,
        promiscuous: false,
        ..RingOptions::default()
    };
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    // Warm up whatever the first open allocates for good (none expected, but be fair).
    drop(Ring::open("lo", opts.clone()).unwrap());
    let (fds_before, maps_before) = (fds(), count_lines("/proc/self/maps"));
    for _ in 0..100 {
        let mut ring = Ring::open("lo", opts.clone()).unwrap();
        assert_eq!(ring.interface(), "lo");
        ring.stats().unwrap();
    }
    // Other tests of this binary run in parallel threads and may hold a descriptor or two for a
    // moment; a leak of 100 would stand out either way.
    assert!(
        fds() <= fds_before + 8,
        "{} fds, {fds_before} before",
        fds()
    );
    let maps = count_lines("/proc/self/maps");
    assert!(
        maps <= maps_before + 8,
        "{maps} mappings, {maps_before} before"
    );
}
