//! Network namespaces for the live tests: two fresh namespaces joined by a veth pair, commands
//! run inside one of them, and threads of the test process moved into one (so that a server
//! or a client written in Rust needs no helper program).
//!
//! Needs root and `ip` and `ethtool` on the PATH; a missing tool is an error, never a skip.
//! Traffic only ever flows between the namespaces made here.

use anyhow::{ensure, Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The server's address, on the veth end in the server namespace.
pub const SRV_ADDR: &str = "10.80.0.1";
/// The client's address.
pub const CLI_ADDR: &str = "10.80.0.2";

/// Runs a command to completion; fails with its output unless it succeeded.
pub fn run(c: &mut Command) -> Result<Output> {
    let out = c.output().with_context(|| format!("cannot run {c:?}"))?;
    ensure!(
        out.status.success(),
        "{c:?} failed with {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// `ip netns exec NS PROGRAM`, the start of a command run inside namespace `ns`.
pub fn in_ns(ns: &str, program: &Path) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c
}

/// Runs `argv` inside namespace `ns` to completion (see [`run`]).
pub fn ns_run(ns: &str, argv: &[&str]) -> Result<Output> {
    run(Command::new("ip").args(["netns", "exec", ns]).args(argv))
}

/// Fails with a clear message unless `tool` is on the PATH.
pub fn need_tool(tool: &str) -> Result<()> {
    let found = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            std::fs::metadata(d.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    });
    ensure!(
        found,
        "{tool} is not installed (not on PATH); these tests need it"
    );
    Ok(())
}

pub fn assert_root() -> Result<()> {
    ensure!(
        rustix::process::geteuid().is_root(),
        "these tests make network namespaces and capture on them: run them as root"
    );
    Ok(())
}

/// Moves the calling thread (only it) into the network namespace `ns` made by `ip netns add`.
/// Sockets the thread opens afterwards belong to that namespace, and so do threads it spawns.
pub fn enter(ns: &str) -> Result<()> {
    let path = Path::new("/run/netns").join(ns);
    let f = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&f),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .with_context(|| format!("entering network namespace {ns}"))?;
    Ok(())
}

/// Two fresh network namespaces, server and client, joined by a veth pair with IPv4 addresses,
/// IPv6 off (no neighbour discovery chatter), and the offloads that merge frames or leave
/// checksums to the hardware off on both ends, so that what is captured is what a wire would
/// carry. Dropping it deletes both namespaces, which removes the veth pair (and any other
/// interface made in them) too.
#[derive(Debug)]
pub struct Netns {
    pub srv: String,
    pub cli: String,
    /// The veth end in the server namespace, where the sensor captures.
    pub srv_if: String,
    pub cli_if: String,
}

impl Netns {
    /// Namespaces named `mos-lt-PID-N-srv` and `-cli`.
    pub fn new() -> Result<Netns> {
        Netns::named("lt")
    }

    /// Namespaces named `mos-TAG-PID-N-srv` and `-cli`, interfaces `TAGPIDnNs` and `...c`;
    /// `tag` is two or three letters (interface names have at most 15 characters).
    pub fn named(tag: &str) -> Result<Netns> {
        assert_root()?;
        ensure!(
            (1..=3).contains(&tag.len()) && tag.bytes().all(|b| b.is_ascii_lowercase()),
            "namespace tag {tag:?}: one to three lowercase letters"
        );
        for t in ["ip", "ethtool"] {
            need_tool(t)?;
        }
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let net = Netns {
            srv: format!("mos-{tag}-{pid}-{n}-srv"),
            cli: format!("mos-{tag}-{pid}-{n}-cli"),
            srv_if: format!("{tag}{pid}n{n}s"),
            cli_if: format!("{tag}{pid}n{n}c"),
        };
        ensure!(
            net.srv_if.len() <= 15,
            "interface name {} is too long",
            net.srv_if
        );
        // A leftover of an earlier run with the same pid would make `add` fail.
        net.delete();
        // From here on the guard exists: a failing step still deletes whatever was made.
        for ns in [&net.srv, &net.cli] {
            run(Command::new("ip").args(["netns", "add", ns]))?;
        }
        run(Command::new("ip").args([
            "link",
            "add",
            &net.srv_if,
            "netns",
            &net.srv,
            "type",
            "veth",
            "peer",
            "name",
            &net.cli_if,
            "netns",
            &net.cli,
        ]))?;
        for (ns, dev, addr) in [
            (&net.srv, &net.srv_if, SRV_ADDR),
            (&net.cli, &net.cli_if, CLI_ADDR),
        ] {
            let x = |argv: &[&str]| ns_run(ns, argv);
            x(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
            x(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
            x(&["ip", "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            // tx off: checksums computed by the sender's stack rather than left partial for
            // an offload that a veth never performs.
            x(&[
                "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off", "tx", "off",
            ])?;
            x(&["ip", "link", "set", "lo", "up"])?;
            x(&["ip", "link", "set", dev, "up"])?;
        }
        Ok(net)
    }

    fn delete(&self) {
        for ns in [&self.srv, &self.cli] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.srv, &self.cli] {
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

/// The kernel's TCP counters in namespace `ns` that show loss and reordering.
pub fn tcp_counters(ns: &str) -> Result<std::collections::BTreeMap<String, u64>> {
    let mut m = std::collections::BTreeMap::new();
    for file in ["/proc/net/snmp", "/proc/net/netstat"] {
        let text = String::from_utf8_lossy(&ns_run(ns, &["cat", file])?.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let (Some((p, names)), Some((_, values))) =
                (names.split_once(": "), values.split_once(": "))
            else {
                continue;
            };
            for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
                let key = format!("{p}{n}");
                let wanted = [
                    "TcpOutSegs",
                    "TcpRetransSegs",
                    "TcpExtTCPSACKReorder",
                    "TcpExtTCPTSReorder",
                    "TcpExtTCPRenoReorder",
                    "TcpExtTCPOFOQueue",
                    "TcpExtTCPSpuriousRTOs",
                ];
                if wanted.contains(&key.as_str()) {
                    m.insert(key, v.parse().unwrap_or(0));
                }
            }
        }
    }
    Ok(m)
}
