//! `mos-test-analyzer`: an analyzer built on `mos-client` for the multi-process tests
//! (`tests/tests/analyzers.rs`), doing what the shipped analyzers cannot: sleeping in its
//! callbacks, probing the kernel's write protection, keeping a flow handle past its flow, and
//! checking `getlastpkt` against `ppeek`.
//!
//! Every subcommand prints its results as `key=value` lines on stdout for the test to parse,
//! and an error as one line on stderr (exit status 1).

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use mos_analyzers::dump::{register, PeekDump};
use mos_client::dump::DumpWriter;
use mos_client::{
    AttachOptions, Counters, Ctx, Errno, EventMask, Filter, FlowId, Hook, Mos, Side, SockId,
    SockOpt, MOS_SIDE_BOTH,
};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "mos-test-analyzer")]
struct Args {
    /// The sensor's control socket.
    #[arg(long, value_name = "PATH", global = true, default_value = mos_client::DEFAULT_CONTROL)]
    control: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Writes the streams as mos-dump does, sleeping in every callback.
    Dump {
        /// Directory to write into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Microseconds to sleep in each callback.
        #[arg(long, value_name = "US", default_value_t = 0)]
        sleep_us: u64,
    },
    /// Tries to get write access to the read-only regions, then runs to the end.
    Probe,
    /// Keeps the handle of the first connection and, once its slot serves another
    /// connection, checks that every call with it fails with EBADF.
    Stale,
    /// On every CONN_NEW_DATA, checks that getlastpkt's payload is what ppeek reads at the
    /// frame's stream offset.
    Lastpkt,
}

fn attach(control: &std::path::Path, packets: bool) -> Result<Mos> {
    Ok(Mos::attach(&AttachOptions {
        control: control.to_path_buf(),
        name: "mos-test-analyzer".into(),
        packets,
        ..AttachOptions::default()
    })?)
}

fn print_counters(c: &Counters) {
    println!(
        "counters events={} dropped={} malformed={} overruns={} overrun_bytes={} gaps={} gap_bytes={} torn={}",
        c.events,
        c.events_dropped,
        c.events_malformed,
        c.overruns,
        c.overrun_bytes,
        c.gaps,
        c.gap_bytes,
        c.torn_copies
    );
}

// ---------------------------------------------------------------------------------------------
// dump

fn dump(control: &std::path::Path, out: &std::path::Path, sleep_us: u64) -> Result<()> {
    let mut mos = attach(control, false)?;
    let sock = mos.socket()?;
    let state = Rc::new(RefCell::new(PeekDump::new(
        sock,
        DumpWriter::create(out)?,
        None,
    )));
    register(&mut mos, &state, Duration::from_micros(sleep_us))?;
    let end = mos.run()?;
    if let Some(e) = state.borrow_mut().error.take() {
        bail!("{e}");
    }
    if let Some(e) = state.borrow_mut().peek_error.take() {
        bail!("{e}");
    }
    if end != mos_client::RunEnd::Done {
        bail!("the run loop stopped before the sensor was done");
    }
    let c = mos.counters();
    drop(mos);
    let d = Rc::try_unwrap(state)
        .map_err(|_| anyhow::anyhow!("the callbacks outlived the attachment"))?
        .into_inner();
    let open = d.writer.open_count();
    let records = d.writer.records().len();
    d.writer.finish()?;
    println!(
        "dump records={records} open={open} bytes={} lost={}",
        d.bytes, d.lost
    );
    print_counters(&c);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// probe

fn probe(control: &std::path::Path) -> Result<()> {
    let mut mos = attach(control, false)?;
    let errno = |r: &std::io::Result<()>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e
            .raw_os_error()
            .map_or_else(|| e.to_string(), |n| Errno::from_raw(n).name()),
    };
    for (region, p) in mos.probe_write_protection() {
        println!(
            "probe region={region} mprotect={} mmap={}",
            errno(&p.mprotect),
            errno(&p.mmap)
        );
    }
    // The run loop writes the analyzer page (heartbeat, consumer indices) on every pass: it
    // consuming events shows the page is writable.
    let sock = mos.socket()?;
    mos.register_callback(sock, EventMask::CONN_NEW_DATA, Hook::Null, |_, _| {})?;
    mos.run()?;
    print_counters(&mos.counters());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// stale

#[derive(Default)]
struct Stale {
    sock: Option<SockId>,
    /// The first connection's handle and its endpoints (from its first successful read).
    kept: Option<FlowId>,
    kept_addrs: Option<Vec<SocketAddr>>,
    /// The slot has been seen serving another connection.
    reused: bool,
    /// Calls made with the kept handle once its slot was reused, and how many gave EBADF.
    checks: u64,
    ebadf: u64,
    /// Calls that returned another connection's data, or anything but EBADF after reuse.
    bad: Vec<String>,
    /// Successful reads of the kept handle before the reuse was seen.
    live_reads: u64,
}

impl Stale {
    /// Every call the API has for a flow, with the kept handle.
    fn check(&mut self, ctx: &mut Ctx<'_>, when: &str) {
        let (Some(flow), Some(sock)) = (self.kept, self.sock) else {
            return;
        };
        let mut buf = [0u8; 4096];
        let mut results: Vec<(&str, Result<String, mos_client::Error>)> = Vec::new();
        for side in [Side::Cli, Side::Svr] {
            results.push((
                "peek",
                ctx.peek(sock, flow, side, &mut buf)
                    .map(|p| format!("{p:?}")),
            ));
            results.push((
                "ppeek",
                ctx.ppeek(sock, flow, side, &mut buf, 0)
                    .map(|n| format!("{n} bytes")),
            ));
            results.push((
                "peek_offset",
                ctx.peek_offset(sock, flow, side).map(|o| o.to_string()),
            ));
        }
        for opt in [
            SockOpt::InfoCliBuf,
            SockOpt::InfoSvrBuf,
            SockOpt::FragInfoCliBuf,
            SockOpt::TcpStateCli,
            SockOpt::TcpStateSvr,
            SockOpt::CliOverlap,
        ] {
            results.push((
                "getsockopt",
                ctx.getsockopt(flow, opt).map(|v| format!("{v:?}")),
            ));
        }
        let peer = ctx.getpeername(flow, MOS_SIDE_BOTH);
        if let Ok(addrs) = &peer {
            // Whatever a call returns must be the kept connection's.
            match &self.kept_addrs {
                None if !self.reused => self.kept_addrs = Some(addrs.clone()),
                Some(k) if k != addrs => self.bad.push(format!(
                    "{when}: getpeername of {flow} gave {addrs:?}, the connection was {k:?}"
                )),
                _ => {}
            }
        }
        results.push(("getpeername", peer.map(|a| format!("{a:?}"))));
        results.push((
            "flow_info",
            ctx.flow_info(flow)
                .map(|i| format!("{}->{}", i.client, i.server)),
        ));
        for (call, r) in results {
            if self.reused {
                self.checks += 1;
                match r {
                    Err(e) if e.errno() == Errno::EBADF => self.ebadf += 1,
                    other => self.bad.push(format!(
                        "{when}: {call} with stale handle {flow} gave {other:?}"
                    )),
                }
            } else if r.is_ok() {
                self.live_reads += 1;
            }
        }
    }
}

fn stale(control: &std::path::Path) -> Result<()> {
    let mut mos = attach(control, false)?;
    let sock = mos.socket()?;
    let st = Rc::new(RefCell::new(Stale {
        sock: Some(sock),
        ..Stale::default()
    }));
    {
        let st = st.clone();
        let filter = Filter {
            events: EventMask::CONN_START | EventMask::CONN_NEW_DATA | EventMask::CONN_END,
            hook: None,
            side: None,
        };
        mos.register_filtered(sock, filter, move |ctx, ev| {
            let Some(flow) = ev.flow else { return };
            let mut s = st.borrow_mut();
            let kept = *s.kept.get_or_insert(flow);
            if flow.worker == kept.worker
                && flow.slot == kept.slot
                && flow.generation != kept.generation
            {
                s.reused = true;
            }
            s.check(ctx, &format!("{:?} of {flow}", ev.kind));
        })?;
    }
    mos.run()?;
    // The sensor is done, every connection ended: the handle is stale for good.
    mos.with_ctx(|ctx| {
        let mut s = st.borrow_mut();
        if s.reused {
            s.check(ctx, "after the run");
        }
    });
    let s = st.borrow();
    let kept = s.kept.map_or("none".into(), |f| f.to_string());
    let addrs = s.kept_addrs.as_ref().map_or("none".into(), |a| {
        a.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    });
    println!(
        "stale kept={kept} addrs={addrs} reused={} live_reads={} checks={} ebadf={} bad={}",
        s.reused,
        s.live_reads,
        s.checks,
        s.ebadf,
        s.bad.len()
    );
    for b in s.bad.iter().take(10) {
        println!("bad {b}");
    }
    print_counters(&mos.counters());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// lastpkt

#[derive(Default)]
struct LastPkt {
    checked: u64,
    bytes: u64,
    failures: Vec<String>,
}

/// Checks the frame that raised a CONN_NEW_DATA against the stream; the payload bytes checked.
fn check_lastpkt(
    ctx: &mut Ctx<'_>,
    sock: SockId,
    ev: &mos_client::Event,
    flow: FlowId,
    side: Side,
) -> Result<u64, String> {
    let pkt = ctx
        .getlastpkt(flow, side)
        .map_err(|e| format!("getlastpkt: {e}"))?;
    let payload = pkt.payload();
    if payload.is_empty() || payload.len() != pkt.payload_len as usize {
        return Err(format!(
            "frame {} has {} payload bytes captured, {} by its IP header",
            pkt.seq,
            payload.len(),
            pkt.payload_len
        ));
    }
    if pkt.tcp_seq() != Some(ev.seq) || pkt.ts_ns != ev.ts_ns {
        return Err(format!(
            "frame {} (seq {:?}, ts {}) is not the event's (seq {}, ts {})",
            pkt.seq,
            pkt.tcp_seq(),
            pkt.ts_ns,
            ev.seq,
            ev.ts_ns
        ));
    }
    // The frame's stream offset, counted from the side's initial sequence number.
    match ctx.buf_info(flow, side) {
        Ok(b) if b.init_seq.wrapping_add(pkt.offset as u32) == ev.seq => {}
        other => {
            return Err(format!(
                "frame {} offset {} does not match seq {} ({other:?})",
                pkt.seq, pkt.offset, ev.seq
            ))
        }
    }
    if !(ev.head..ev.tail).contains(&pkt.offset) || pkt.offset + payload.len() as u64 > ev.tail {
        return Err(format!(
            "frame {} at [{}, +{}) is outside the event's stream [{}, {})",
            pkt.seq,
            pkt.offset,
            payload.len(),
            ev.head,
            ev.tail
        ));
    }
    let mut buf = vec![0u8; payload.len()];
    match ctx.ppeek(sock, flow, side, &mut buf, pkt.offset) {
        Ok(n) if n == payload.len() && buf == payload => Ok(n as u64),
        Ok(n) => Err(format!(
            "ppeek at {} gave {n} bytes differing from frame {}'s {} payload bytes",
            pkt.offset,
            pkt.seq,
            payload.len()
        )),
        Err(e) => Err(format!("ppeek at {}: {e}", pkt.offset)),
    }
}

fn lastpkt(control: &std::path::Path) -> Result<()> {
    let mut mos = attach(control, true)?;
    let sock = mos.socket()?;
    let st = Rc::new(RefCell::new(LastPkt::default()));
    {
        let st = st.clone();
        mos.register_callback(
            sock,
            EventMask::CONN_NEW_DATA,
            Hook::Null,
            move |ctx, ev| {
                let (Some(flow), Some(side)) = (ev.flow, ev.side) else {
                    return;
                };
                let mut s = st.borrow_mut();
                match check_lastpkt(ctx, sock, ev, flow, side) {
                    Ok(n) => {
                        s.checked += 1;
                        s.bytes += n;
                    }
                    Err(m) => s.failures.push(format!("{flow} {side:?}: {m}")),
                }
            },
        )?;
    }
    mos.run()?;
    let s = st.borrow();
    println!(
        "lastpkt checked={} bytes={} failures={}",
        s.checked,
        s.bytes,
        s.failures.len()
    );
    for f in s.failures.iter().take(10) {
        println!("failure {f}");
    }
    print_counters(&mos.counters());
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let r = match &args.cmd {
        Cmd::Dump { out, sleep_us } => dump(&args.control, out, *sleep_us),
        Cmd::Probe => probe(&args.control),
        Cmd::Stale => stale(&args.control),
        Cmd::Lastpkt => lastpkt(&args.control),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mos-test-analyzer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
