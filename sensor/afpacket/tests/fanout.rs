//! Two rings in one hash fanout group on a veth, with UDP and TCP flows in both directions:
//! every frame reaches exactly one ring, and both directions of each flow reach the same ring
//! (the kernel's fanout hash is symmetric).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

const UDP_FLOWS: usize = 48;
const UDP_MSGS: usize = 4;
const TCP_FLOWS: usize = 24;
const UDP_PORT: u16 = 7000;
/// A second address of side B, chosen for the case that kernels before the 2022 fix "net: core:
/// fix flow symmetric hash" got wrong: they ordered the two IPv4 addresses by the sign of their
/// difference as 32-bit words, which is negative both ways when the words differ by exactly 2^31.
/// Read as little-endian words, 10.77.0.1 and 10.77.0.129 are 0x01004d0a and 0x81004d0a.
const ADDR_B2: &str = "10.77.0.129";
const TCP_PORT: u16 = 7001;

/// Echo servers on side A: UDP replies `echo:` + the datagram, TCP echoes the stream. Prints
/// `ready` once both listen; exits by itself after 60 s if nobody kills it first.
fn server() -> String {
    format!(
        r#"
import socket, sys, threading, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(('{ADDR_A}', {UDP_PORT}))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(('{ADDR_A}', {TCP_PORT}))
t.listen(64)
def udp():
    while True:
        d, a = u.recvfrom(2048)
        u.sendto(b'echo:' + d, a)
def conn(c):
    while True:
        d = c.recv(4096)
        if not d:
            break
        c.sendall(d)
    c.close()
def tcp():
    while True:
        c, _ = t.accept()
        threading.Thread(target=conn, args=(c,), daemon=True).start()
threading.Thread(target=udp, daemon=True).start()
threading.Thread(target=tcp, daemon=True).start()
print('ready', flush=True)
time.sleep(60)
"#
    )
}

/// Clients on side B: UDP_FLOWS sockets (distinct source ports, half of them on each of B's
/// addresses) exchanging UDP_MSGS datagrams each, then TCP_FLOWS connections (also from both
/// addresses) each echoing a message.
fn client() -> String {
    format!(
        r#"
import socket
socks = []
for f in range({UDP_FLOWS}):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.bind((['{ADDR_B}', '{ADDR_B2}'][f % 2], 0))
    socks.append(s)
for k in range({UDP_MSGS}):
    for f, s in enumerate(socks):
        m = b'u%03d-%d' % (f, k)
        s.sendto(m, ('{ADDR_A}', {UDP_PORT}))
        assert s.recv(2048) == b'echo:' + m
for c in range({TCP_FLOWS}):
    s = socket.create_connection(('{ADDR_A}', {TCP_PORT}), timeout=5,
                                 source_address=(['{ADDR_B}', '{ADDR_B2}'][c % 2], 0))
    m = (b't%03d.' % c) * 20
    s.sendall(m)
    got = b''
    while len(got) < len(m):
        got += s.recv(4096)
    assert got == m
    s.close()
"#
    )
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The direction-free identity of a frame's flow: protocol and the two endpoints, sorted.
fn flow_key(f: &Value) -> (u64, (String, u64), (String, u64)) {
    let a = (
        f["src"].as_str().unwrap().to_owned(),
        f["sport"].as_u64().unwrap(),
    );
    let b = (
        f["dst"].as_str().unwrap().to_owned(),
        f["dport"].as_u64().unwrap(),
    );
    let proto = f["proto"].as_u64().unwrap();
    if a <= b {
        (proto, a, b)
    } else {
        (proto, b, a)
    }
}

#[test]
fn hash_fanout_splits_by_flow_and_keeps_both_directions_together() {
    let net = NetnsPair::new();
    net.exec(
        &net.b,
        &["ip", "addr", "add", &format!("{ADDR_B2}/24"), "dev", VETH_B],
    );
    let cap = Capture::start(
        &net.a,
        &["--iface", VETH_A, "--rings", "2", "--fanout-group", "77"],
    );

    let mut srv = ChildGuard(Some(
        Command::new("ip")
            .args(["netns", "exec", &net.a, "python3", "-c", &server()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let mut first = String::new();
    BufReader::new(srv.0.as_mut().unwrap().stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), "ready", "the echo server did not start");
    net.python(&net.b, &client());
    drop(srv);
    let lines = cap.finish();
    let frames = frames(&lines);

    // Every frame went to exactly one ring, and nothing was lost.
    for ring in 0..2u64 {
        let st = stats(&lines, ring);
        let got = frames.iter().filter(|f| f["ring"] == ring).count() as u64;
        assert_eq!(st["packets"], got, "ring {ring}: {st}");
        assert_eq!(st["drops"], 0, "ring {ring}: {st}");
    }

    // Each UDP payload, both requests and echoes, was seen exactly once over the two rings.
    let mut udp_seen: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for f in frames.iter().filter(|f| f["proto"] == 17) {
        *udp_seen
            .entry(unhex(f["payload"].as_str().unwrap()))
            .or_default() += 1;
    }
    for flow in 0..UDP_FLOWS {
        for k in 0..UDP_MSGS {
            let m = format!("u{flow:03}-{k}").into_bytes();
            let echo = [b"echo:".as_slice(), &m].concat();
            assert_eq!(
                udp_seen.get(&m),
                Some(&1),
                "{}",
                String::from_utf8_lossy(&m)
            );
            assert_eq!(
                udp_seen.get(&echo),
                Some(&1),
                "{}",
                String::from_utf8_lossy(&echo)
            );
        }
    }

    // Per flow: the rings that saw it, and which directions were seen.
    let mut rings_of: BTreeMap<_, BTreeSet<u64>> = BTreeMap::new();
    let mut dirs_of: BTreeMap<_, BTreeSet<String>> = BTreeMap::new();
    for f in frames
        .iter()
        .filter(|f| f["proto"] == 17 || f["proto"] == 6)
    {
        let key = flow_key(f);
        rings_of
            .entry(key.clone())
            .or_default()
            .insert(f["ring"].as_u64().unwrap());
        dirs_of
            .entry(key)
            .or_default()
            .insert(f["src"].as_str().unwrap().to_owned());
    }
    let udp_flows = rings_of.keys().filter(|k| k.0 == 17).count();
    let tcp_flows = rings_of.keys().filter(|k| k.0 == 6).count();
    assert_eq!(udp_flows, UDP_FLOWS);
    assert!(rings_of
        .keys()
        .any(|k| k.1 .0 == ADDR_B2 || k.2 .0 == ADDR_B2));
    assert_eq!(tcp_flows, TCP_FLOWS);
    let mut per_ring = [0usize; 2];
    for (key, rings) in &rings_of {
        assert_eq!(dirs_of[key].len(), 2, "flow {key:?}: one direction only");
        assert_eq!(
            rings.len(),
            1,
            "flow {key:?}: its directions reached different rings {rings:?}: the fanout hash is not symmetric here"
        );
        per_ring[*rings.first().unwrap() as usize] += 1;
    }
    // With 72 flows, both rings get some (all on one would be a 2^-71 fluke or a broken group).
    assert!(
        per_ring[0] > 0 && per_ring[1] > 0,
        "flows per ring {per_ring:?}"
    );
    eprintln!("flows per ring: {per_ring:?}");
}
