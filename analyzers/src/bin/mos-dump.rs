//! `mos-dump`: every connection's two byte streams to files, and `flows.jsonl`, read from a
//! running sensor through the monitoring API. Writes what `mos-sensor --dump` writes.

use anyhow::Result;
use clap::Parser;
use mos_analyzers::{exit_status, stop_on_signals, Outcome};
use mos_client::dump::{DumpError, DumpWriter, FlowEnd};
use mos_client::{
    AttachOptions, Ctx, Errno, EventKind, EventMask, Filter, FlowId, FlowInfo, Hook, Mos, Peek,
    RunEnd, Side, SockId, DEFAULT_CONTROL,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;

/// Writes each connection's streams to DIR as mos-sensor --dump does: one file per direction
/// ({serial}-{from}-{to}.c2s / .s2c; bytes the capture or the ring lost are zeros, stored as
/// holes) and DIR/flows.jsonl with one record per connection. Exits 0 when the sensor's input
/// ends, 1 on an error, 130 when stopped by SIGINT or SIGTERM (the connections open then are
/// written as far as they got).
#[derive(Parser, Debug)]
#[command(name = "mos-dump", version)]
struct Args {
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The sensor's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL)]
    control: PathBuf,
}

/// What the callbacks share.
struct Dump {
    sock: SockId,
    writer: DumpWriter<FlowId>,
    /// What the slot said the last time each open connection was looked at.
    info: HashMap<FlowId, FlowInfo>,
    scratch: Vec<u8>,
    error: Option<DumpError>,
    bytes: u64,
    lost: u64,
}

impl Dump {
    fn ensure_open(&mut self, ctx: &Ctx<'_>, flow: FlowId) {
        if let Ok(info) = ctx.flow_info(flow) {
            self.writer
                .open(flow, info.serial, info.client, info.server);
            self.info.insert(flow, info);
        }
    }

    /// Copies what `side`'s stream holds past the reader into its file.
    fn drain(&mut self, ctx: &mut Ctx<'_>, flow: FlowId, side: Side) -> Result<(), DumpError> {
        let Some(mut out) = self.writer.stream(&flow, side) else {
            return Ok(());
        };
        // The reader starts at the oldest byte held when this analyzer first saw the flow;
        // whatever came before is lost to it, and written as zeros like any other loss.
        let Ok(start) = ctx.peek_offset(self.sock, flow, side) else {
            return Ok(());
        };
        if start > out.position() {
            let n = start - out.position();
            out.lost(n)?;
            self.lost += n;
        }
        loop {
            match ctx.peek(self.sock, flow, side, &mut self.scratch) {
                Ok(Peek::NoData) => break,
                Ok(Peek::Data(n)) => {
                    out.data(&self.scratch[..n])?;
                    self.bytes += n as u64;
                }
                Ok(Peek::Gap { offset, len }) => {
                    let n = offset.saturating_sub(out.position()) + len;
                    out.lost(n)?;
                    self.lost += n;
                }
                Ok(Peek::Overrun { lost }) => {
                    out.lost(lost)?;
                    self.lost += lost;
                }
                // The connection is gone (stale handle) or the slot stayed busy: what was
                // read is kept.
                Err(e) if e.errno() == Errno::EBADF || e.errno() == Errno::EAGAIN => break,
                Err(e) => {
                    eprintln!("mos-dump: flow {flow}: {e}");
                    break;
                }
            }
        }
        Ok(())
    }

    fn close(&mut self, ctx: &mut Ctx<'_>, flow: FlowId) -> Result<(), DumpError> {
        self.ensure_open(ctx, flow);
        self.drain(ctx, flow, Side::Cli)?;
        self.drain(ctx, flow, Side::Svr)?;
        if let Some(info) = self.info.remove(&flow) {
            self.writer.close(
                &flow,
                FlowEnd {
                    client_isn: info.side(Side::Cli).isn,
                    server_isn: info.side(Side::Svr).isn,
                    guessed: info.guessed,
                    start_ns: info.start_ns,
                    last_ns: info.last_ns,
                },
            )?;
        }
        Ok(())
    }

    fn keep(&mut self, ctx: &mut Ctx<'_>, r: Result<(), DumpError>) {
        if let Err(e) = r {
            self.error.get_or_insert(e);
            ctx.stop();
        }
    }
}

fn run(args: &Args) -> Result<Outcome> {
    let mut mos = Mos::attach(&AttachOptions {
        control: args.control.clone(),
        name: "mos-dump".into(),
        packets: false,
    })?;
    let writer = DumpWriter::create(&args.out)?;
    let interrupt = stop_on_signals(&mos)?;
    let sock = mos.socket()?;
    let state = Rc::new(RefCell::new(Dump {
        sock,
        writer,
        info: HashMap::new(),
        scratch: vec![0; 64 * 1024],
        error: None,
        bytes: 0,
        lost: 0,
    }));
    {
        let state = state.clone();
        mos.register_callback(
            sock,
            EventMask::CONN_NEW_DATA,
            Hook::Null,
            move |ctx, ev| {
                let (Some(flow), Some(side)) = (ev.flow, ev.side) else {
                    return;
                };
                let mut d = state.borrow_mut();
                d.ensure_open(ctx, flow);
                let r = d.drain(ctx, flow, side);
                d.keep(ctx, r);
            },
        )?;
    }
    {
        let state = state.clone();
        // CONN_END comes for both sides, the client's first: the connection is written once.
        let filter = Filter {
            events: EventMask::CONN_END,
            hook: None,
            side: Some(Side::Cli),
        };
        mos.register_filtered(sock, filter, move |ctx, ev| {
            if let (EventKind::ConnEnd { .. }, Some(flow)) = (ev.kind, ev.flow) {
                let mut d = state.borrow_mut();
                let r = d.close(ctx, flow);
                d.keep(ctx, r);
            }
        })?;
    }
    let end = mos.run()?;
    if let Some(e) = state.borrow_mut().error.take() {
        return Err(e.into());
    }
    // Stopped by a signal: the connections still open are written as far as they got.
    let still_open: Vec<FlowId> = state.borrow().info.keys().copied().collect();
    for &flow in &still_open {
        mos.with_ctx(|ctx| state.borrow_mut().close(ctx, flow))?;
    }
    let c = mos.counters();
    // Dropping the attachment detaches and releases the callbacks' share of the state.
    drop(mos);
    let d = Rc::try_unwrap(state)
        .map_err(|_| anyhow::anyhow!("the callbacks outlived the attachment"))?
        .into_inner();
    let records = d.writer.records().len();
    let path = d.writer.finish()?;
    eprintln!(
        "mos-dump: {records} connections written to {} ({} bytes, {} of them lost); {} events, {} dropped by the sensor; {} overruns, {} gaps",
        path.display(),
        d.bytes + d.lost,
        d.lost,
        c.events,
        c.events_dropped,
        c.overruns,
        c.gaps
    );
    if end == RunEnd::Stopped || interrupt.arrived() {
        eprintln!(
            "mos-dump: stopped by a signal; {} connections still open were written as far as they got",
            still_open.len()
        );
        return Ok(Outcome::Interrupted);
    }
    Ok(Outcome::Finished)
}

fn main() -> ExitCode {
    let args = Args::parse();
    exit_status("mos-dump", run(&args))
}
