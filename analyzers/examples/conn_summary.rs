//! `conn_summary`: one line per connection when it ends: when it started, the client and the
//! server, the bytes each way and how many of them the capture lost, how long it lasted and
//! how it ended:
//!
//! ```text
//! 2009-12-01 14:52:15.231861 10.0.0.5:51234 -> 93.184.216.34:80 c2s=418 s2c=11240 lost=0/0 duration=0.912s end=closed
//! ```
//!
//! Each connection's counters live in its user context (`set_uctx`/`uctx`), created on the
//! first event of the connection and updated from the event snapshots: a side's byte count is
//! the tail of its receive stream (`Event::tail`) as of its latest event, the server side's for
//! what the client sent. `CONN_END` comes once per side, the client's first; the line is
//! printed at the second, from the counters and what the connection's slot says
//! (`flow_info`: start, last packet, lost bytes, roles guessed).
//!
//! With `--every SECS` a timer prints how many connections are open every SECS seconds on
//! stderr: of wall time by default, of capture time with `--capture-clock` (what a replay
//! wants: the sensor replays a capture as fast as it can).

use clap::Parser;
use mos_client::{
    AttachOptions, Ctx, EndReason, EventKind, EventMask, Filter, FlowId, FlowInfo, MonitorFilter,
    Mos, RunEnd, Side, SockId, TimerClock, DEFAULT_CONTROL,
};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

/// Prints one line per connection when it ends (start, client, server, bytes each way, lost
/// bytes, duration, how it ended), and a count of the endings on stderr at the end.
#[derive(Parser, Debug)]
#[command(name = "conn_summary")]
struct Args {
    /// The sensor's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL)]
    control: PathBuf,
    /// Seconds to keep trying to attach while no sensor listens at --control yet (0: once).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    wait: f64,
    /// Only the connections whose first packet matches this libpcap expression (the sensor
    /// runs it); all of them without.
    #[arg(long, value_name = "EXPR")]
    filter: Option<String>,
    /// Print how many connections are open every SECS seconds (on stderr).
    #[arg(long, value_name = "SECS")]
    every: Option<f64>,
    /// --every counts capture time rather than wall time.
    #[arg(long)]
    capture_clock: bool,
}

/// A connection's counters, kept as its user context.
#[derive(Clone, Copy, Debug, Default)]
struct Conn {
    /// Per side ([`Side::index`]): the receive stream's tail as of the side's latest event.
    bytes: [u64; 2],
    /// `CONN_END` events seen (one per side).
    ends: u8,
    /// Why it ended (the first `CONN_END` says).
    reason: Option<EndReason>,
    /// The slot's account at the first `CONN_END`.
    info: Option<FlowInfo>,
}

/// The analyzer's state, shared by its callback, its timer and `main`.
#[derive(Debug)]
struct Summary {
    sock: SockId,
    open: u64,
    ended: BTreeMap<String, u64>,
    broken: bool,
}

impl Summary {
    /// The connection's counters, made on its first event here.
    fn conn<'c>(&mut self, ctx: &'c mut Ctx<'_>, flow: FlowId) -> Option<&'c mut Conn> {
        if ctx.uctx::<Conn>(self.sock, flow).is_none() {
            ctx.set_uctx(self.sock, flow, Conn::default()).ok()?;
            self.open += 1;
        }
        ctx.uctx::<Conn>(self.sock, flow)
    }

    fn on_event(
        &mut self,
        ctx: &mut Ctx<'_>,
        flow: FlowId,
        side: Side,
        kind: EventKind,
        tail: u64,
    ) {
        let Some(c) = self.conn(ctx, flow) else {
            return;
        };
        let i = side.index();
        c.bytes[i] = c.bytes[i].max(tail);
        if let EventKind::ConnEnd { reason } = kind {
            c.ends += 1;
            c.reason.get_or_insert(reason);
            if c.ends == 1 {
                // The slot is read while the connection is still there; the line waits
                // for the other side's end. (`c` borrows from `ctx`: it is looked up
                // again after the read.)
                let info = ctx.flow_info(flow).ok();
                if let Some(c) = ctx.uctx::<Conn>(self.sock, flow) {
                    c.info = info;
                }
            } else if let Some(c) = ctx.take_uctx::<Conn>(self.sock, flow) {
                self.print(&c);
            }
        }
        if self.broken {
            ctx.stop();
        }
    }

    fn print(&mut self, c: &Conn) {
        self.open = self.open.saturating_sub(1);
        let reason = c
            .reason
            .map_or("unknown".into(), |r| r.name().replace(' ', "-"));
        *self.ended.entry(reason.clone()).or_default() += 1;
        let Some(info) = &c.info else {
            return;
        };
        let [cli, svr] = [Side::Cli, Side::Svr].map(|s| c.bytes[s.index()]);
        let [cli_lost, svr_lost] = [Side::Cli, Side::Svr].map(|s| info.side(s).lost);
        let secs = info.last_ns.saturating_sub(info.start_ns) as f64 / 1e9;
        let line = format!(
            "{} {} -> {} c2s={svr} s2c={cli} lost={svr_lost}/{cli_lost} duration={secs:.3}s end={reason}{}",
            utc(info.start_ns),
            info.client,
            info.server,
            if info.guessed { " roles-guessed" } else { "" }
        );
        if writeln!(std::io::stdout().lock(), "{line}").is_err() {
            self.broken = true;
        }
    }
}

/// Capture time (ns since the Unix epoch) as UTC, `YYYY-MM-DD HH:MM:SS.uuuuuu`.
fn utc(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (days, day_secs) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's days_from_civil, inverted).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06}",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60,
        ns % 1_000_000_000 / 1000
    )
}

/// Sets the status timer, which sets itself again each time it fires (a timer fires once).
fn every(ctx: &mut Ctx<'_>, period: Duration, capture: bool, state: Rc<RefCell<Summary>>) {
    ctx.settimer(1, period, move |ctx, _id| {
        let s = state.borrow();
        let when = if capture {
            format!(" at {}", utc(ctx.timer_now_ns()))
        } else {
            String::new()
        };
        let ended: u64 = s.ended.values().sum();
        eprintln!(
            "conn_summary: status{when}: {} connections open, {ended} ended",
            s.open
        );
        drop(s);
        every(ctx, period, capture, state.clone());
    });
}

fn run(args: &Args) -> mos_client::Result<RunEnd> {
    let mut mos = Mos::attach(&AttachOptions {
        control: args.control.clone(),
        name: "conn_summary".into(),
        wait: Duration::from_secs_f64(args.wait.max(0.0)),
        timer_clock: if args.capture_clock {
            TimerClock::Capture
        } else {
            TimerClock::Wall
        },
        ..AttachOptions::default()
    })?;
    let stop = mos.stop_handle();
    let _ = ctrlc::set_handler(move || stop.stop());
    let sock = mos.socket()?;
    if let Some(expr) = &args.filter {
        mos.bind_monitor_filter(
            sock,
            &MonitorFilter {
                stream_syn_filter: Some(expr),
                ..MonitorFilter::default()
            },
        )?;
    }
    let summary = Rc::new(RefCell::new(Summary {
        sock,
        open: 0,
        ended: BTreeMap::new(),
        broken: false,
    }));
    let state = summary.clone();
    // `hook: None` takes the events whatever hook raised them (`CONN_START` comes at
    // `MOS_HK_SND` or `MOS_HK_RCV`; a registration at `Hook::Null` would miss it).
    let wanted = Filter {
        events: EventMask::CONN_START | EventMask::CONN_NEW_DATA | EventMask::CONN_END,
        hook: None,
        side: None,
    };
    mos.register_filtered(sock, wanted, move |ctx, ev| {
        if let (Some(flow), Some(side)) = (ev.flow, ev.side) {
            state
                .borrow_mut()
                .on_event(ctx, flow, side, ev.kind, ev.tail);
        }
    })?;
    if let Some(secs) = args.every.filter(|s| *s > 0.0) {
        let period = Duration::from_secs_f64(secs);
        let state = summary.clone();
        mos.with_ctx(|ctx| every(ctx, period, args.capture_clock, state));
    }
    let end = mos.run()?;
    let s = summary.borrow();
    let ended: u64 = s.ended.values().sum();
    let how: Vec<String> = s.ended.iter().map(|(r, n)| format!("{n} {r}")).collect();
    eprintln!(
        "conn_summary: {ended} connections ended ({})",
        how.join(", ")
    );
    Ok(end)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(RunEnd::Stopped) => ExitCode::from(130),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conn_summary: {e}");
            ExitCode::FAILURE
        }
    }
}
