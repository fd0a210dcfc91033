//! `latency-bench`: how long after a packet is sent an analyzer's callback runs for it, on a
//! live sensor capturing the loopback interface, against a plain packet socket reading the
//! same interface in the same run.
//!
//! It starts `mos-sensor --iface lo` (live mode: the sensor never waits for analyzers), attaches
//! an analyzer in this process with a `CONN_START` callback on the client side, and opens an
//! `AF_PACKET` socket of its own (blocking reads) as the baseline. A sender thread then opens
//! `--conns` connections to a listener on 127.0.0.1, one every `--gap-us` microseconds,
//! reading `CLOCK_MONOTONIC` just before each `connect`. For each connection (known by its
//! client port) the latency is the time from that reading to the callback, and to the
//! baseline socket's read of the SYN. It prints the distribution of both and their ratio, as
//! text and as one JSON line.
//!
//! Needs `CAP_NET_RAW` (both the sensor and the baseline open packet sockets). Sends only to
//! 127.0.0.1.
//!
//! With `--dpdk` the sensor reads lo through DPDK's `net_af_packet` device instead (polling,
//! no block timer; no hugepages or PCI devices needed).
//!
//! usage: latency-bench [--conns N] [--gap-us U] [--dpdk] [--sensor-arg ARG]...

use anyhow::{bail, Context, Result};
use mos_client::{AttachOptions, EventMask, Filter, Mos, Side};
use mos_sensor::service::monotonic_ns;
use mos_tests::locate::sensor_bin;
use mos_tests::procs::{cmd, wait_for_socket, Proc};
use mos_tests::runner::ScratchDir;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: latency-bench [--conns N] [--gap-us U] [--dpdk] [--sensor-arg ARG]...

Event latency of a live sensor on lo against a plain AF_PACKET socket (needs CAP_NET_RAW).
  --conns N         connections to open (default 2000)
  --gap-us U        microseconds between two connections (default 500)
  --dpdk            the sensor reads lo through DPDK's net_af_packet device, not AF_PACKET
  --sensor-arg ARG  one more argument for mos-sensor (repeatable), e.g. --sensor-arg=--workers=2";

/// Client port -> first monotonic time it was seen.
type Seen = Arc<Mutex<HashMap<u16, u64>>>;

fn main() -> Result<()> {
    let mut conns = 2000usize;
    let mut gap_us = 500u64;
    let mut sensor_args: Vec<String> = Vec::new();
    let mut dpdk = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = || -> Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args
                    .next()
                    .with_context(|| format!("{flag} needs a value\n{USAGE}")),
            }
        };
        match flag.as_str() {
            "--conns" => conns = value()?.parse().context("--conns")?,
            "--gap-us" => gap_us = value()?.parse().context("--gap-us")?,
            "--sensor-arg" => sensor_args.push(value()?),
            "--dpdk" => dpdk = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => bail!("unknown argument {a:?}\n{USAGE}"),
        }
    }
    if conns == 0 {
        bail!("--conns must be at least 1");
    }

    let work = ScratchDir::new("latency-bench")?;
    let control = work.path().join("c.sock");
    let listener = TcpListener::bind("127.0.0.1:0").context("listening on 127.0.0.1")?;
    let port = listener.local_addr()?.port();
    let stop = Arc::new(AtomicBool::new(false));

    // Accept and drop every connection, until the end.
    {
        let stop = stop.clone();
        listener.set_nonblocking(true)?;
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => drop(s),
                    Err(_) => std::thread::sleep(Duration::from_micros(100)),
                }
            }
        });
    }

    let input = if dpdk {
        [
            "--dpdk",
            "--no-huge -m 256 --no-pci --no-shconf -l 0 --vdev=net_af_packet0,iface=lo,framecnt=8192",
        ]
    } else {
        ["--iface", "lo"]
    };
    let mut c = cmd(
        &sensor_bin()?,
        &[&input[0], &input[1], &"--control", &control],
    );
    c.args(&sensor_args);
    let mut sensor = Proc::spawn("sensor", c, work.path())?;
    wait_for_socket(&mut sensor, &control, Duration::from_secs(20))?;

    let raw_seen: Seen = Arc::default();
    let raw = {
        let (seen, stop) = (raw_seen.clone(), stop.clone());
        let fd = packet_socket()?;
        std::thread::spawn(move || raw_reader(fd, port, &seen, &stop))
    };

    let mut mos = Mos::attach(&AttachOptions {
        control: control.clone(),
        name: "latency-bench".into(),
        packets: false,
        ..AttachOptions::default()
    })
    .context("attaching to the sensor")?;
    let sock = mos.socket()?;
    let event_seen: Rc<RefCell<HashMap<u16, u64>>> = Rc::default();
    {
        let seen = event_seen.clone();
        let filter = Filter {
            events: EventMask::CONN_START,
            hook: None,
            side: Some(Side::Cli),
        };
        mos.register_filtered(sock, filter, move |ctx, ev| {
            let t = monotonic_ns();
            let Some(flow) = ev.flow else { return };
            if let Ok(info) = ctx.flow_info(flow) {
                if info.server.port() == port {
                    seen.borrow_mut().entry(info.client.port()).or_insert(t);
                }
            }
        })?;
    }

    // The sender starts once the analyzer runs (its subscription is in place by then).
    let sent: Seen = Arc::default();
    let sender = {
        let (sent, handle, stop) = (sent.clone(), mos.stop_handle(), stop.clone());
        std::thread::spawn(move || -> Result<()> {
            std::thread::sleep(Duration::from_millis(300));
            let started = Instant::now();
            for i in 0..conns {
                let due = started + Duration::from_micros(gap_us * i as u64);
                if let Some(d) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
                let t0 = monotonic_ns();
                let s = TcpStream::connect(("127.0.0.1", port))?;
                let p = s.local_addr()?.port();
                sent.lock().unwrap().insert(p, t0);
                drop(s);
            }
            // Let the last connections through the capture's block timeout.
            std::thread::sleep(Duration::from_millis(200));
            handle.stop();
            stop.store(true, Ordering::Relaxed);
            Ok(())
        })
    };
    let end = mos.run();
    let sent_result = sender.join().expect("sender thread");
    stop.store(true, Ordering::Relaxed);
    let _ = raw.join();
    sensor.signal(rustix::process::Signal::TERM)?;
    let status = sensor.wait(Duration::from_secs(20))?;
    sent_result?;
    end.context("the analyzer's run")?;
    if !matches!(status.code(), Some(0) | Some(130)) {
        bail!(
            "the sensor exited with {status}; stderr:\n{}",
            mos_tests::procs::tail(&sensor.stderr())
        );
    }

    let sent = sent.lock().unwrap().clone();
    let events = event_seen.borrow().clone();
    let raws = raw_seen.lock().unwrap().clone();
    let lat = |seen: &HashMap<u16, u64>| -> Vec<u64> {
        let mut v: Vec<u64> = sent
            .iter()
            .filter_map(|(p, t0)| seen.get(p).map(|t| t.saturating_sub(*t0)))
            .collect();
        v.sort_unstable();
        v
    };
    let (ev, rw) = (lat(&events), lat(&raws));
    if ev.is_empty() || rw.is_empty() {
        bail!(
            "nothing measured: {} connections sent, {} seen by the analyzer, {} by the packet socket",
            sent.len(),
            ev.len(),
            rw.len()
        );
    }
    let pct = |v: &[u64], p: usize| v[(v.len() - 1) * p / 100] as f64 / 1000.0;
    let line = |name: &str, v: &[u64]| {
        println!(
            "{name:<14} {:>5} of {}  median {:>9.1} us  p90 {:>9.1} us  p99 {:>9.1} us  max {:>9.1} us",
            v.len(),
            sent.len(),
            pct(v, 50),
            pct(v, 90),
            pct(v, 99),
            pct(v, 100)
        )
    };
    line("analyzer event", &ev);
    line("packet socket", &rw);
    println!(
        "ratio of medians (event / packet socket): {:.1}",
        pct(&ev, 50) / pct(&rw, 50)
    );
    println!(
        "{}",
        serde_json::json!({
            "conns": sent.len(),
            "input": if dpdk { "dpdk net_af_packet" } else { "AF_PACKET" },
            "gap_us": gap_us,
            "sensor_args": sensor_args,
            "event_seen": ev.len(),
            "event_us": {"p50": pct(&ev, 50), "p90": pct(&ev, 90), "p99": pct(&ev, 99), "max": pct(&ev, 100)},
            "raw_seen": rw.len(),
            "raw_us": {"p50": pct(&rw, 50), "p90": pct(&rw, 90), "p99": pct(&rw, 99), "max": pct(&rw, 100)},
            "ratio_p50": pct(&ev, 50) / pct(&rw, 50),
        })
    );
    Ok(())
}

/// An `AF_PACKET` socket for every frame of every interface (only lo carries what is looked
/// for), reads timing out after 50 ms.
fn packet_socket() -> Result<OwnedFd> {
    use rustix::net::{socket, sockopt, AddressFamily, SocketType};
    let fd = socket(
        AddressFamily::PACKET,
        SocketType::RAW,
        Some(rustix::net::eth::ALL),
    )
    .context("cannot open a packet socket (needs CAP_NET_RAW)")?;
    sockopt::set_socket_timeout(&fd, sockopt::Timeout::Recv, Some(Duration::from_millis(50)))?;
    Ok(fd)
}

/// Reads frames until `stop`, noting when each SYN to `port` was first read.
fn raw_reader(fd: OwnedFd, port: u16, seen: &Seen, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let r = rustix::net::recv(&fd, &mut buf[..], rustix::net::RecvFlags::empty());
        let t = monotonic_ns();
        let Ok((n, _)) = r else { continue };
        if let Some(sport) = syn_to(&buf[..n.min(buf.len())], port) {
            seen.lock().unwrap().entry(sport).or_insert(t);
        }
    }
}

/// The source port of an Ethernet/IPv4/TCP SYN (without ACK) to `port`.
fn syn_to(f: &[u8], port: u16) -> Option<u16> {
    if f.len() < 14 + 20 + 20 || f[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &f[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ip[9] != 6 || ip.len() < ihl + 20 {
        return None;
    }
    let tcp = &ip[ihl..];
    let (sport, dport) = (
        u16::from_be_bytes([tcp[0], tcp[1]]),
        u16::from_be_bytes([tcp[2], tcp[3]]),
    );
    (dport == port && tcp[13] & 0x12 == 0x02).then_some(sport)
}
