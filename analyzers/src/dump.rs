//! Dumping streams through `peek`: what `mos-dump` does, shared with the test analyzer that
//! does the same thing slowly.

use mos_client::dump::{DumpError, DumpWriter, FlowEnd};
use mos_client::{
    Ctx, Errno, EventKind, EventMask, Filter, FlowId, FlowInfo, Hook, Mos, Peek, Side, SockId,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// Each connection's streams, read with `peek` into a [`DumpWriter`].
#[derive(Debug)]
pub struct PeekDump {
    sock: SockId,
    /// Where the streams and `flows.jsonl` go.
    pub writer: DumpWriter<FlowId>,
    /// What the slot said the last time each open connection was looked at.
    info: HashMap<FlowId, FlowInfo>,
    scratch: Vec<u8>,
    /// A write error, which stops the run loop.
    pub error: Option<DumpError>,
    /// The first error `peek` returned (other than a stale handle or a busy slot).
    pub peek_error: Option<String>,
    /// Print each such `peek` error on stderr after this prefix (as it happens).
    report: Option<&'static str>,
    /// Bytes written from the streams.
    pub bytes: u64,
    /// Bytes written as zeros for what was lost.
    pub lost: u64,
}

impl PeekDump {
    /// A dump read through monitor socket `sock` into `writer`; `report` names the program
    /// that prints `peek` errors as they happen (`None`: only keep the first).
    pub fn new(sock: SockId, writer: DumpWriter<FlowId>, report: Option<&'static str>) -> Self {
        PeekDump {
            sock,
            writer,
            info: HashMap::new(),
            scratch: vec![0; 64 * 1024],
            error: None,
            peek_error: None,
            report,
            bytes: 0,
            lost: 0,
        }
    }

    /// The connections open now.
    pub fn open_flows(&self) -> Vec<FlowId> {
        self.info.keys().copied().collect()
    }

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
                    if let Some(prog) = self.report {
                        eprintln!("{prog}: flow {flow}: {e}");
                    }
                    self.peek_error.get_or_insert(format!("flow {flow}: {e}"));
                    break;
                }
            }
        }
        Ok(())
    }

    /// Drains both sides of a connection and writes its record; `cut_short` when the dump
    /// stops before the connection's `CONN_END`.
    pub fn close(
        &mut self,
        ctx: &mut Ctx<'_>,
        flow: FlowId,
        cut_short: bool,
    ) -> Result<(), DumpError> {
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
                    tunnel: info.tunnel,
                    cut_short,
                },
            )?;
        }
        Ok(())
    }

    /// Writes every connection still open as far as it got, marked cut short (the dump stops
    /// before their end); returns how many there were.
    pub fn close_open(&mut self, ctx: &mut Ctx<'_>) -> Result<usize, DumpError> {
        let open = self.open_flows();
        for &flow in &open {
            self.close(ctx, flow, true)?;
        }
        Ok(open.len())
    }

    fn keep(&mut self, ctx: &mut Ctx<'_>, r: Result<(), DumpError>) {
        if let Err(e) = r {
            self.error.get_or_insert(e);
            ctx.stop();
        }
    }
}

/// Registers the dump's callbacks on its socket: `CONN_NEW_DATA` on both sides drains that
/// side, the client-side `CONN_END` (the first of the two) writes the connection. Each
/// callback first sleeps `pause` (zero: not at all), for tests of slow analyzers.
pub fn register(
    mos: &mut Mos,
    state: &Rc<RefCell<PeekDump>>,
    pause: Duration,
) -> mos_client::Result<()> {
    let sock = state.borrow().sock;
    let nap = move || {
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    };
    let s = state.clone();
    mos.register_callback(
        sock,
        EventMask::CONN_NEW_DATA,
        Hook::Null,
        move |ctx, ev| {
            nap();
            let (Some(flow), Some(side)) = (ev.flow, ev.side) else {
                return;
            };
            let mut d = s.borrow_mut();
            d.ensure_open(ctx, flow);
            let r = d.drain(ctx, flow, side);
            d.keep(ctx, r);
        },
    )?;
    let s = state.clone();
    let filter = Filter {
        events: EventMask::CONN_END,
        hook: None,
        side: Some(Side::Cli),
    };
    mos.register_filtered(sock, filter, move |ctx, ev| {
        nap();
        if let (EventKind::ConnEnd { .. }, Some(flow)) = (ev.kind, ev.flow) {
            let mut d = s.borrow_mut();
            let r = d.close(ctx, flow, false);
            d.keep(ctx, r);
        }
    })
}
