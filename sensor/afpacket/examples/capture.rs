//! Captures on one interface and prints one JSON line per frame, for the crate's tests and for
//! trying the ring out by hand.
//!
//! ```text
//! capture --iface NAME [--rings N] [--fanout-group ID] [--block-size BYTES] [--block-count N]
//!         [--max-secs S]
//! ```
//!
//! It prints `{"event":"ready","loopback":BOOL}` once every ring is open (whether the interface
//! is a loopback device), then a line per frame with the ring that got it, its timestamp and
//! lengths, the VLAN tag and packet type (`sll_pkttype`) the kernel reported, and for IPv4 UDP and
//! TCP the addresses, ports, TCP flags and payload (hex, up to 64 KiB). When its standard input reaches end of
//! file it keeps reading until the rings have been quiet for 300 ms, prints a `stats` line per
//! ring and exits; it also stops by itself after `--max-secs` (default 60). With more than one
//! ring the rings join a hash fanout group (id from `--fanout-group`, default 4242). If a ring
//! cannot be opened it prints the one-line error to standard error and exits with status 1.

use std::io::{BufWriter, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mos_afpacket::{Fanout, Frame, Ring, RingOptions};

struct Args {
    iface: String,
    rings: usize,
    fanout_group: Option<u16>,
    block_size: usize,
    block_count: usize,
    max_secs: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        iface: String::new(),
        rings: 1,
        fanout_group: None,
        block_size: 1 << 16,
        block_count: 64,
        max_secs: 60,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--iface" => a.iface = value()?,
            "--rings" => a.rings = num(value()?)? as usize,
            "--fanout-group" => a.fanout_group = Some(num(value()?)? as u16),
            "--block-size" => a.block_size = num(value()?)? as usize,
            "--block-count" => a.block_count = num(value()?)? as usize,
            "--max-secs" => a.max_secs = num(value()?)?,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if a.iface.is_empty() || a.rings == 0 {
        return Err("usage: capture --iface NAME [--rings N] [--fanout-group ID] ...".into());
    }
    Ok(a)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The JSON fields for an IPv4 UDP or TCP frame, or an empty string.
fn l4_fields(data: &[u8]) -> String {
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([
        data.get(12).copied().unwrap_or(0),
        *data.get(13).unwrap_or(&0),
    ]);
    if ethertype == 0x8100 && data.len() >= 18 {
        ethertype = u16::from_be_bytes([data[16], data[17]]);
        off += 4;
    }
    let mut out = format!(",\"ethertype\":{ethertype}");
    let ip = &data[(off + 2).min(data.len())..];
    if ethertype != 0x0800 || ip.len() < 20 {
        return out;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    let proto = ip[9];
    let src = format!("{}.{}.{}.{}", ip[12], ip[13], ip[14], ip[15]);
    let dst = format!("{}.{}.{}.{}", ip[16], ip[17], ip[18], ip[19]);
    out += &format!(",\"proto\":{proto},\"src\":\"{src}\",\"dst\":\"{dst}\"");
    if ihl < 20 || total < ihl {
        return out;
    }
    let l4 = &ip[ihl..total];
    let (payload, extra) = match proto {
        17 if l4.len() >= 8 => (&l4[8..], String::new()),
        6 if l4.len() >= 20 => {
            let doff = (usize::from(l4[12] >> 4) * 4).clamp(20, l4.len());
            (&l4[doff..], format!(",\"tcp_flags\":{}", l4[13]))
        }
        _ => return out,
    };
    let sport = u16::from_be_bytes([l4[0], l4[1]]);
    let dport = u16::from_be_bytes([l4[2], l4[3]]);
    out += &format!(
        ",\"sport\":{sport},\"dport\":{dport}{extra},\"payload\":\"{}\"",
        hex(&payload[..payload.len().min(65536)])
    );
    out
}

fn frame_line(ring: usize, f: &Frame<'_>) -> String {
    let vlan = f.vlan_tci.map_or("null".to_owned(), |v| v.to_string());
    format!(
        "{{\"event\":\"frame\",\"ring\":{ring},\"ts_ns\":{},\"wire_len\":{},\"caplen\":{},\"vlan_tci\":{vlan},\"pkt_type\":{},\"outgoing\":{}{}}}",
        f.ts_ns,
        f.wire_len,
        f.data.len(),
        f.pkt_type,
        f.is_outgoing(),
        l4_fields(f.data)
    )
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let fanout = (args.rings > 1 || args.fanout_group.is_some())
        .then(|| Fanout::hash(args.fanout_group.unwrap_or(4242)));
    let mut rings = Vec::new();
    for _ in 0..args.rings {
        let opts = RingOptions {
            block_size: args.block_size,
            block_count: args.block_count,
            fanout,
            ..RingOptions::default()
        };
        match Ring::open(&args.iface, opts) {
            Ok(r) => rings.push(r),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
    }

    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let loopback = rings.iter().any(Ring::is_loopback);
    writeln!(out, "{{\"event\":\"ready\",\"loopback\":{loopback}}}").unwrap();
    out.flush().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let stop_reader = Arc::clone(&stop);
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        stop_reader.store(true, Ordering::SeqCst);
    });

    let hard_stop = Instant::now() + Duration::from_secs(args.max_secs);
    let mut last_frame = Instant::now();
    let mut stopped_at: Option<Instant> = None;
    let mut timed_out = false;
    loop {
        for (i, ring) in rings.iter_mut().enumerate() {
            match ring.next_block(Duration::from_millis(5)) {
                Ok(Some(block)) => {
                    for f in &block {
                        writeln!(out, "{}", frame_line(i, &f)).unwrap();
                        last_frame = Instant::now();
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
            }
        }
        let now = Instant::now();
        if stopped_at.is_none() && stop.load(Ordering::SeqCst) {
            stopped_at = Some(now);
        }
        if let Some(s) = stopped_at {
            let quiet_since = s.max(last_frame);
            if now.duration_since(quiet_since) >= Duration::from_millis(300) {
                break;
            }
        }
        if now >= hard_stop {
            timed_out = true;
            break;
        }
    }
    for (i, ring) in rings.iter_mut().enumerate() {
        match ring.stats() {
            Ok(s) => writeln!(
                out,
                "{{\"event\":\"stats\",\"ring\":{i},\"packets\":{},\"drops\":{},\"queue_freezes\":{}}}",
                s.packets, s.drops, s.queue_freezes
            )
            .unwrap(),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
    }
    if timed_out {
        writeln!(out, "{{\"event\":\"max_secs_reached\"}}").unwrap();
    }
    out.flush().unwrap();
}
