//! What a libpcap filter takes, as tcpdump says: the independent judge the filter tests hold
//! the sensor's filtering (and analyzers that bind filters) to.

use crate::addr::parse_endpoint;
use crate::flows::FlowRecord;
use anyhow::{bail, ensure, Context, Result};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The tcpdump binary, from `PATH` or `/usr/bin`, `/usr/sbin`.
pub fn tcpdump() -> Result<PathBuf> {
    for d in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/bin", "/usr/sbin"])
    {
        let p = Path::new(d).join("tcpdump");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("tcpdump not found (scripts/setup.sh installs it): it decides which connections a filter takes")
}

/// The `a.b.c.d.port` or `v6addr.port` of tcpdump's `-nn` output.
fn tcpdump_endpoint(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.trim_end_matches(':').rsplit_once('.')?;
    Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
}

/// An unordered pair of endpoints.
fn pair(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    (a.min(b), a.max(b))
}

/// For each connection of `flows`, whether libpcap's `filter` takes its first packet, as
/// tcpdump says: a packet between its endpoints that `filter` takes at its start time.
pub fn taken(pcap: &Path, filter: &str, flows: &[FlowRecord]) -> Result<Vec<bool>> {
    let out = std::process::Command::new(tcpdump()?)
        .args(["-nn", "-tt", "-q", "-r"])
        .arg(pcap)
        .arg(filter)
        .output()
        .context("running tcpdump")?;
    ensure!(
        out.status.success(),
        "tcpdump {filter:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Microseconds of each packet tcpdump printed, by endpoint pair.
    let mut times: HashMap<(SocketAddr, SocketAddr), Vec<i64>> = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        // Tunnels print the outer header first: the last `>` is the connection's.
        let (Some(ts), Some(gt)) = (t.first(), t.iter().rposition(|w| *w == ">")) else {
            continue;
        };
        let (Some(a), Some(b)) = (
            tcpdump_endpoint(t[gt.saturating_sub(1)]),
            t.get(gt + 1).and_then(|w| tcpdump_endpoint(w)),
        ) else {
            continue;
        };
        let Some((s, us)) = ts.split_once('.') else {
            continue;
        };
        let us = s.parse::<i64>()? * 1_000_000 + us.parse::<i64>()?;
        times.entry(pair(a, b)).or_default().push(us);
    }
    flows
        .iter()
        .map(|f| {
            let key = pair(parse_endpoint(&f.client)?, parse_endpoint(&f.server)?);
            let start = (f.start_ts * 1e6).round() as i64;
            // pcapng may carry nanoseconds, which tcpdump cuts to microseconds.
            Ok(times
                .get(&key)
                .is_some_and(|v| v.iter().any(|&us| (us - start).abs() <= 1)))
        })
        .collect()
}
