//! Shared scaffolding of the integration tests: a pair of network namespaces joined by a veth,
//! deleted again when the guard drops (also when a test panics), and the `capture` example run
//! inside one of them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

/// Side A's address on the veth; side B is `.2`.
pub const ADDR_A: &str = "10.77.0.1";
/// Side B's address on the veth.
pub const ADDR_B: &str = "10.77.0.2";
/// The veth end inside namespace A.
pub const VETH_A: &str = "mosva";
/// The veth end inside namespace B.
pub const VETH_B: &str = "mosvb";

/// Runs a command to completion and panics with its output unless it succeeded.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Two fresh network namespaces, A and B, joined by a veth pair (`mosva` in A with 10.77.0.1/24,
/// `mosvb` in B with 10.77.0.2/24), offloads that merge frames switched off on both ends, IPv6
/// off so that no neighbour discovery chatter appears. Dropping it deletes both namespaces,
/// which also removes the veth pair.
#[derive(Debug)]
pub struct NetnsPair {
    pub a: String,
    pub b: String,
}

impl NetnsPair {
    pub fn new() -> NetnsPair {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let pair = NetnsPair {
            a: format!("mosafp{pid}x{n}a"),
            b: format!("mosafp{pid}x{n}b"),
        };
        // Leftovers of an earlier run with the same pid would make `add` fail; ignore errors.
        for ns in [&pair.a, &pair.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        // From here on the guard exists, so a failing step still deletes whatever was made.
        run(Command::new("ip").args(["netns", "add", &pair.a]));
        run(Command::new("ip").args(["netns", "add", &pair.b]));
        run(Command::new("ip").args([
            "link", "add", VETH_A, "netns", &pair.a, "type", "veth", "peer", "name", VETH_B,
            "netns", &pair.b,
        ]));
        for (ns, dev, addr) in [(&pair.a, VETH_A, ADDR_A), (&pair.b, VETH_B, ADDR_B)] {
            pair.exec(ns, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
            pair.exec(
                ns,
                &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
            );
            pair.exec(
                ns,
                &["ip", "addr", "add", &format!("{addr}/24"), "dev", dev],
            );
            pair.exec(
                ns,
                &[
                    "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off",
                ],
            );
            pair.exec(ns, &["ip", "link", "set", "lo", "up"]);
            pair.exec(ns, &["ip", "link", "set", dev, "up"]);
        }
        pair
    }

    /// Runs a command inside namespace `ns` and panics unless it succeeds.
    pub fn exec(&self, ns: &str, argv: &[&str]) -> Output {
        run(Command::new("ip").args(["netns", "exec", ns]).args(argv))
    }

    /// Runs a Python script inside `ns` and panics unless it succeeds; returns its stdout.
    pub fn python(&self, ns: &str, script: &str) -> String {
        let out = self.exec(ns, &["python3", "-c", script]);
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let ok = Command::new("ip")
                .args(["netns", "del", ns])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("warning: could not delete network namespace {ns}");
            }
        }
    }
}

/// The `capture` example, built next to the test binary by `cargo test`.
pub fn capture_example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/examples/capture
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples")
        .join("capture");
    assert!(
        path.exists(),
        "{} is missing: run these tests with `cargo test -p mos-afpacket`, which builds the examples",
        path.display()
    );
    path
}

/// A child process that is killed and reaped if the test ends before it does.
#[derive(Debug)]
pub struct ChildGuard(pub Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The `capture` example running inside a namespace, its stdout collected by a thread.
#[derive(Debug)]
pub struct Capture {
    /// The example's `ready` line.
    pub ready: Value,
    child: ChildGuard,
    stdin: Option<ChildStdin>,
    lines: Option<JoinHandle<Vec<String>>>,
}

impl Capture {
    /// Starts the example in `ns` with these arguments and waits until its rings are open.
    pub fn start(ns: &str, args: &[&str]) -> Capture {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(capture_example())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start the capture example");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        let lines = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                if line.contains("\"ready\"") {
                    let _ = ready_tx.send(line);
                } else {
                    lines.push(line);
                }
            }
            lines
        });
        let mut child = ChildGuard(Some(child));
        let Ok(ready) = ready_rx.recv_timeout(Duration::from_secs(20)) else {
            let status = child.0.as_mut().unwrap().try_wait();
            panic!("the capture example did not get ready (status {status:?})");
        };
        Capture {
            ready: serde_json::from_str(&ready)
                .unwrap_or_else(|e| panic!("bad ready line {ready:?}: {e}")),
            child,
            stdin,
            lines: Some(lines),
        }
    }

    /// Tells the example to finish (end of its stdin), waits for it and returns its JSON lines.
    pub fn finish(mut self) -> Vec<Value> {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.flush();
        }
        let mut child = self.child.0.take().unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "capture example exited with {status}");
        let lines = self.lines.take().unwrap().join().unwrap();
        lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
            .collect()
    }
}

/// The frame lines of a capture's output.
pub fn frames(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|v| v["event"] == "frame").collect()
}

/// The stats line of ring `ring`.
pub fn stats(lines: &[Value], ring: u64) -> &Value {
    lines
        .iter()
        .find(|v| v["event"] == "stats" && v["ring"] == ring)
        .unwrap_or_else(|| panic!("no stats line for ring {ring}"))
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}
