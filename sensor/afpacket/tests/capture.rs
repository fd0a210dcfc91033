//! One ring on a veth inside a test-made namespace: every datagram sent to it is seen exactly
//! once, with the right bytes, lengths and timestamps; VLAN tags come out of band. One ring on
//! a namespace's loopback device: every datagram is seen twice, once outgoing.

mod common;

use common::*;

const COUNT: usize = 300;
const PORT: u16 = 5555;

fn payload(i: usize) -> Vec<u8> {
    // Distinct payloads of varying length (20 to 419 bytes).
    let mut p = format!("mos-afpacket-{i:06}-").into_bytes();
    p.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, (i * 37) % 400));
    p
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A Python script that sends the COUNT payloads one after the other from one socket to
/// `dst`:PORT, after one warm-up datagram: the neighbour table queues only a few packets while
/// ARP resolves, and would drop the rest before they reach the wire.
fn sender(dst: &str) -> String {
    format!(
        "import socket\n\
         import time\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.sendto(b'warm-up: resolve the neighbour first', ('{dst}', {PORT}))\n\
         time.sleep(0.3)\n\
         for i in range({COUNT}):\n\
         \x20   p = ('mos-afpacket-%06d-' % i).encode() + bytes([ord('a') + i % 26]) * ((i * 37) % 400)\n\
         \x20   s.sendto(p, ('{dst}', {PORT}))\n"
    )
}

#[test]
fn every_datagram_is_seen_once_with_its_bytes_and_time() {
    let net = NetnsPair::new();
    let cap = Capture::start(&net.a, &["--iface", VETH_A]);
    assert_eq!(cap.ready["loopback"], false, "{}", cap.ready);
    let t0 = now_ns();
    net.python(&net.b, &sender(ADDR_A));
    let t1 = now_ns();
    let lines = cap.finish();
    let frames = frames(&lines);

    let mut prev_ts = 0u64;
    for i in 0..COUNT {
        let want = hex(&payload(i));
        let seen: Vec<_> = frames
            .iter()
            .filter(|f| f["proto"] == 17 && f["dport"] == PORT && f["payload"] == want.as_str())
            .collect();
        assert_eq!(seen.len(), 1, "datagram {i} seen {} times", seen.len());
        let f = seen[0];
        assert_eq!(f["src"], ADDR_B);
        assert_eq!(f["dst"], ADDR_A);
        assert_eq!(f["ethertype"], 0x0800);
        assert_eq!(f["vlan_tci"], serde_json::Value::Null);
        // PACKET_HOST: addressed to this host, not sent by it.
        assert_eq!(f["pkt_type"], 0, "datagram {i}: {f}");
        assert_eq!(f["outgoing"], false, "datagram {i}: {f}");
        // Ethernet 14 + IPv4 20 + UDP 8; veth does not pad short frames.
        let wire = 42 + payload(i).len() as u64;
        assert_eq!(f["wire_len"], wire, "datagram {i}");
        assert_eq!(f["caplen"], wire, "datagram {i}");
        let ts = f["ts_ns"].as_u64().unwrap();
        assert!(
            ts + 1_000_000_000 >= t0 && ts <= t1 + 1_000_000_000,
            "datagram {i}: timestamp {ts} is not between {t0} and {t1} (±1 s)"
        );
        // Sent in order from one socket, received in order: timestamps do not go back.
        assert!(
            ts >= prev_ts,
            "datagram {i}: timestamp {ts} before {prev_ts}"
        );
        prev_ts = ts;
    }

    let st = stats(&lines, 0);
    assert_eq!(st["drops"], 0, "{st}");
    // Every frame the kernel counted was read (the ring was drained before the stats read).
    assert_eq!(st["packets"], frames.len() as u64, "{st}");
}

/// A Python script that writes COUNT 802.1Q-tagged (priority 3, VLAN 100) IPv4 UDP frames to
/// `mosvb` through a raw packet socket. (This kernel has no 8021q module, so a VLAN device is
/// not an option; the receiving side untags in software before the capture hook either way.)
fn tagged_sender() -> String {
    format!(
        "import socket, struct\n\
         s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
         s.bind(('{VETH_B}', 0))\n\
         mac = s.getsockname()[4]\n\
         for i in range({COUNT}):\n\
         \x20   p = ('mos-afpacket-%06d-' % i).encode() + bytes([ord('a') + i % 26]) * ((i * 37) % 400)\n\
         \x20   udp = struct.pack('!HHHH', 4000, {PORT}, 8 + len(p), 0) + p\n\
         \x20   ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0,\n\
         \x20                    socket.inet_aton('{ADDR_B}'), socket.inet_aton('{ADDR_A}'))\n\
         \x20   tag = struct.pack('!HH', 0x8100, (3 << 13) | 100)\n\
         \x20   s.send(b'\\xff' * 6 + mac + tag + struct.pack('!H', 0x0800) + ip + udp)\n"
    )
}

#[test]
fn vlan_tags_are_reported_out_of_band() {
    let net = NetnsPair::new();
    let cap = Capture::start(&net.a, &["--iface", VETH_A]);
    net.python(&net.b, &tagged_sender());
    let lines = cap.finish();
    let frames = frames(&lines);
    for i in 0..COUNT {
        let want = hex(&payload(i));
        let seen: Vec<_> = frames
            .iter()
            .filter(|f| f["proto"] == 17 && f["payload"] == want.as_str())
            .collect();
        assert_eq!(seen.len(), 1, "datagram {i} seen {} times", seen.len());
        let f = seen[0];
        assert_eq!(f["vlan_tci"], (3 << 13) | 100, "datagram {i}: {f}");
        // The tag is not in the bytes: the EtherType right after the MACs is IPv4, and the
        // lengths are those of the untagged frame.
        assert_eq!(f["ethertype"], 0x0800, "datagram {i}: {f}");
        let wire = 42 + payload(i).len() as u64;
        assert_eq!(f["caplen"], wire, "datagram {i}");
        assert_eq!(f["wire_len"], wire, "datagram {i}");
    }
    assert_eq!(stats(&lines, 0)["drops"], 0);
}

#[test]
fn frames_larger_than_frame_size_are_whole() {
    let net = NetnsPair::new();
    for (ns, dev) in [(&net.a, VETH_A), (&net.b, VETH_B)] {
        net.exec(ns, &["ip", "link", "set", dev, "mtu", "9000"]);
    }
    // frame_size is 2048; these frames are 8042 bytes.
    let cap = Capture::start(&net.a, &["--iface", VETH_A]);
    net.python(
        &net.b,
        &format!(
            "import socket, time\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.sendto(b'warm-up', ('{ADDR_A}', {PORT}))\n\
             time.sleep(0.3)\n\
             for i in range(5):\n\
             \x20   s.sendto(bytes([65 + i]) * 8000, ('{ADDR_A}', {PORT}))\n"
        ),
    );
    let lines = cap.finish();
    let frames = frames(&lines);
    for i in 0..5u8 {
        let want = hex(&[b'A' + i; 8000]);
        let seen: Vec<_> = frames
            .iter()
            .filter(|f| f["proto"] == 17 && f["payload"] == want.as_str())
            .collect();
        assert_eq!(seen.len(), 1, "datagram {i}");
        assert_eq!(seen[0]["wire_len"], 8042);
        assert_eq!(seen[0]["caplen"], 8042);
    }
}

#[test]
fn loopback_frames_come_twice_once_as_outgoing() {
    let net = NetnsPair::new();
    let cap = Capture::start(&net.a, &["--iface", "lo"]);
    assert_eq!(cap.ready["loopback"], true, "{}", cap.ready);
    net.python(&net.a, &sender("127.0.0.1"));
    let lines = cap.finish();
    let frames = frames(&lines);
    for i in 0..COUNT {
        let want = hex(&payload(i));
        let mut kinds: Vec<(u64, bool)> = frames
            .iter()
            .filter(|f| f["proto"] == 17 && f["dport"] == PORT && f["payload"] == want.as_str())
            .map(|f| {
                (
                    f["pkt_type"].as_u64().unwrap(),
                    f["outgoing"].as_bool().unwrap(),
                )
            })
            .collect();
        kinds.sort_unstable();
        // PACKET_HOST as it comes in, PACKET_OUTGOING (4) as it was sent.
        assert_eq!(kinds, [(0, false), (4, true)], "datagram {i}");
    }
}
