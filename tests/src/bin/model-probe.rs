//! `model-probe`: an analyzer for the programming-model tests (`tests/tests/programming.rs`):
//! each subcommand exercises one part of the model (socket filters, event-bounded peek,
//! user-defined events, raised events, timers, user contexts, `MOS_STOP_MON`) against a real
//! sensor and prints what it saw as `key=value` lines for the test to check against the
//! capture. An error is one line on stderr (exit status 1).

use anyhow::{bail, ensure, Result};
use clap::{Parser, Subcommand};
use mos_client::{
    AttachOptions, Counters, Ctx, Errno, Event, EventKind, EventMask, Filter, FlowId, Hook,
    MonitorFilter, Mos, Peek, RunEnd, Side, SockId, TimerClock, MOS_SIDE_BOTH, MOS_SIDE_SVR,
};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Parser, Debug)]
#[command(name = "model-probe")]
struct Args {
    /// The sensor's control socket.
    #[arg(long, value_name = "PATH", global = true, default_value = mos_client::DEFAULT_CONTROL)]
    control: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Reads every flow's two streams with `peek` in its CONN_NEW_DATA callbacks, each read
    /// stopping where the event's tail bounds it, and prints a line per flow.
    Streams {
        /// The socket's SYN filter (a libpcap expression).
        #[arg(long)]
        filter: Option<String>,
        /// Sleep this long in the first callback.
        #[arg(long, value_name = "MS", default_value_t = 0)]
        sleep_first_ms: u64,
        /// Write `pos ts_ns` of every event raised by a frame to this file.
        #[arg(long, value_name = "FILE")]
        events: Option<PathBuf>,
        /// Count stale handles and reads cut short by lost bytes instead of failing on them
        /// (for a slow analyzer of a lossy sensor).
        #[arg(long)]
        tolerate_loss: bool,
    },
    /// Two user-defined events in a chain: "the client's stream starts with GET ", then
    /// "... and the server's port is 80".
    Ude,
    /// An allocated event raised from the CONN_NEW_DATA callbacks of the client's stream,
    /// once for each line starting with "GET " that the new bytes complete.
    Raise,
    /// A timer on the capture clock set at every CONN_START, due `delay_ms` later.
    Timer {
        #[arg(long, value_name = "MS", default_value_t = 1000)]
        delay_ms: u64,
    },
    /// A user context per flow, counting its streams, dropped when the flow ends.
    Uctx,
    /// Two sockets: one stops monitoring each flow after its first CONN_NEW_DATA, the other
    /// reads every stream.
    Stopmon,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let r = match args.cmd {
        Cmd::Streams {
            filter,
            sleep_first_ms,
            events,
            tolerate_loss,
        } => streams(
            &args.control,
            filter.as_deref(),
            sleep_first_ms,
            events.as_deref(),
            tolerate_loss,
        ),
        Cmd::Ude => ude(&args.control),
        Cmd::Raise => raise(&args.control),
        Cmd::Timer { delay_ms } => timer(&args.control, delay_ms),
        Cmd::Uctx => uctx(&args.control),
        Cmd::Stopmon => stopmon(&args.control),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("model-probe: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn attach(control: &Path, timer_clock: TimerClock) -> Result<Mos> {
    Ok(Mos::attach(&AttachOptions {
        control: control.to_path_buf(),
        name: "model-probe".into(),
        timer_clock,
        ..AttachOptions::default()
    })?)
}

/// Runs to the end of the sensor's input.
fn run_to_end(mos: &mut Mos) -> Result<()> {
    let end = mos.run()?;
    ensure!(end == RunEnd::Done, "the run loop ended with {end:?}");
    Ok(())
}

/// `events` at every hook, on both sides.
fn any_hook(events: EventMask) -> Filter {
    Filter {
        events,
        hook: None,
        side: None,
    }
}

fn unix_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
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

/// The first problem seen, kept to fail the run with.
#[derive(Default)]
struct Problems(Option<String>);

impl Problems {
    fn note(&mut self, what: String) {
        self.0.get_or_insert(what);
    }

    fn check(&self) -> Result<()> {
        match &self.0 {
            Some(p) => bail!("{p}"),
            None => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Streams read in CONN_NEW_DATA callbacks

/// One direction, as read.
#[derive(Default)]
struct Stream {
    sha: Sha256,
    /// Bytes read, plus the zeros standing for what the capture never held.
    len: u64,
    /// Bytes of gaps and overruns (written as zeros, as the sensor's dump does).
    lost: u64,
}

impl Stream {
    fn data(&mut self, b: &[u8]) {
        self.sha.update(b);
        self.len += b.len() as u64;
    }

    fn zeros(&mut self, n: u64) {
        let z = [0u8; 4096];
        let mut left = n;
        while left > 0 {
            let k = left.min(z.len() as u64) as usize;
            self.data(&z[..k]);
            left -= k as u64;
        }
        self.lost += n;
    }
}

/// One connection, as read.
struct FlowRead {
    serial: u64,
    client: Option<SocketAddr>,
    server: Option<SocketAddr>,
    /// Index by `Side::index()`: the Cli side holds what the server sent.
    sides: [Stream; 2],
    ends: u32,
}

impl FlowRead {
    fn new(ctx: &Ctx<'_>, flow: FlowId) -> FlowRead {
        let info = ctx.flow_info(flow).ok();
        FlowRead {
            serial: info.as_ref().map_or(u64::MAX, |i| i.serial),
            client: info.as_ref().map(|i| i.client),
            server: info.as_ref().map(|i| i.server),
            sides: [Stream::default(), Stream::default()],
            ends: 0,
        }
    }

    fn line(self, tag: &str) -> String {
        let show = |a: Option<SocketAddr>| a.map_or_else(|| "?".into(), |a| a.to_string());
        let [cli, svr] = self.sides;
        let (c2s, s2c) = (svr, cli);
        format!(
            "{tag} serial={} client={} server={} ends={} c2s_bytes={} c2s_sha256={} c2s_lost={} s2c_bytes={} s2c_sha256={} s2c_lost={}",
            self.serial,
            show(self.client),
            show(self.server),
            self.ends,
            c2s.len,
            hex::encode(c2s.sha.finalize()),
            c2s.lost,
            s2c.len,
            hex::encode(s2c.sha.finalize()),
            s2c.lost,
        )
    }
}

/// Reads what `side` of `flow` holds past `sock`'s pointer, as far as `peek` goes (inside a
/// callback for an event of that side: the event's tail).
fn drain(
    ctx: &mut Ctx<'_>,
    sock: SockId,
    flow: FlowId,
    side: Side,
    out: &mut Stream,
    buf: &mut [u8],
) -> Result<(), mos_client::Error> {
    let start = ctx.peek_offset(sock, flow, side)?;
    if start > out.len {
        out.zeros(start - out.len);
    }
    loop {
        match ctx.peek(sock, flow, side, buf)? {
            Peek::NoData => return Ok(()),
            Peek::Data(n) => out.data(&buf[..n]),
            Peek::Gap { len, .. } => out.zeros(len),
            Peek::Overrun { lost } => out.zeros(lost),
        }
    }
}

/// What the `streams` callbacks keep.
#[derive(Default)]
struct Reader {
    flows: HashMap<FlowId, FlowRead>,
    /// Lines of flows that ended.
    done: Vec<String>,
    events: Vec<(u64, u64)>,
    callbacks: u64,
    new_data: u64,
    /// CONN_NEW_DATA callbacks whose reads did not end exactly at the event's tail.
    off_bound: u64,
    /// Reads that found the flow gone (stale handle) or its slot busy.
    stale: u64,
    /// Whether lost bytes and stale handles are expected (counted, not problems).
    tolerate_loss: bool,
    first_cb_us: u128,
    woke_us: u128,
    last_end_us: u128,
    problems: Problems,
}

/// Registers the stream reader's callbacks on `sock`; `first` runs once, in the first
/// callback (before it does anything else).
fn register_reader(
    mos: &mut Mos,
    sock: SockId,
    st: &Rc<RefCell<Reader>>,
    mut first: impl FnMut() + 'static,
    mut on_event: impl FnMut(&mut Ctx<'_>, &Event) + 'static,
) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let s = st.clone();
    let mut started = false;
    mos.register_filtered(
        sock,
        any_hook(EventMask::CONN_START | EventMask::CONN_NEW_DATA | EventMask::CONN_END),
        move |ctx, ev| {
            if !started {
                started = true;
                s.borrow_mut().first_cb_us = unix_us();
                first();
                s.borrow_mut().woke_us = unix_us();
            }
            on_event(ctx, ev);
            let mut r = s.borrow_mut();
            let r = &mut *r;
            r.callbacks += 1;
            if let Some(pos) = ev.pkt_pos {
                r.events.push((pos, ev.ts_ns));
            }
            let (Some(flow), Some(side)) = (ev.flow, ev.side) else {
                r.problems.note(format!("an event without a flow: {ev:?}"));
                return;
            };
            let f = r
                .flows
                .entry(flow)
                .or_insert_with(|| FlowRead::new(ctx, flow));
            match ev.kind {
                EventKind::ConnNewData => {
                    r.new_data += 1;
                    let gone =
                        |e: &mos_client::Error| matches!(e.errno(), Errno::EBADF | Errno::EAGAIN);
                    let read = drain(ctx, sock, flow, side, &mut f.sides[side.index()], &mut buf)
                        .and_then(|()| ctx.peek_offset(sock, flow, side));
                    match read {
                        Ok(at) if at == ev.tail => {}
                        Ok(at) => {
                            r.off_bound += 1;
                            if !r.tolerate_loss {
                                r.problems.note(format!(
                                    "flow {flow} {side:?}: reads ended at {at}, the event's tail is {}",
                                    ev.tail
                                ));
                            }
                        }
                        Err(e) if r.tolerate_loss && gone(&e) => r.stale += 1,
                        Err(e) => r.problems.note(format!("flow {flow}: peek: {e}")),
                    }
                }
                EventKind::ConnEnd { .. } => {
                    f.ends += 1;
                    r.last_end_us = unix_us();
                    if side == Side::Svr {
                        if let Some(f) = r.flows.remove(&flow) {
                            r.done.push(f.line("flow"));
                        }
                    }
                }
                _ => {}
            }
        },
    )?;
    Ok(())
}

fn print_reader(r: Reader, tag: &str) {
    for line in &r.done {
        println!("{line}");
    }
    for f in r.flows.into_values() {
        println!("{}", f.line(&format!("{tag}-open")));
    }
    println!(
        "summary callbacks={} new_data={} off_bound={} stale={} first_cb_us={} woke_us={} last_end_us={} done_us={}",
        r.callbacks,
        r.new_data,
        r.off_bound,
        r.stale,
        r.first_cb_us,
        r.woke_us,
        r.last_end_us,
        unix_us()
    );
}

fn streams(
    control: &Path,
    filter: Option<&str>,
    sleep_first_ms: u64,
    events: Option<&Path>,
    tolerate_loss: bool,
) -> Result<()> {
    let mut mos = attach(control, TimerClock::Wall)?;
    let sock = mos.socket()?;
    if let Some(expr) = filter {
        mos.bind_monitor_filter(
            sock,
            &MonitorFilter {
                stream_syn_filter: Some(expr),
                ..MonitorFilter::default()
            },
        )?;
    }
    let st = Rc::new(RefCell::new(Reader {
        tolerate_loss,
        ..Reader::default()
    }));
    let nap = Duration::from_millis(sleep_first_ms);
    register_reader(
        &mut mos,
        sock,
        &st,
        move || std::thread::sleep(nap),
        |_, _| {},
    )?;
    run_to_end(&mut mos)?;
    let counters = mos.counters();
    drop(mos);
    let r = Rc::try_unwrap(st)
        .map_err(|_| anyhow::anyhow!("callbacks outlived the attachment"))?
        .into_inner();
    if let Some(path) = events {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for (pos, ts) in &r.events {
            writeln!(out, "{pos} {ts}")?;
        }
        out.flush()?;
    }
    r.problems.check()?;
    print_reader(r, "flow");
    print_counters(&counters);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// User-defined events

/// The first `n` bytes of `side`'s stream, once the event being dispatched has announced them
/// (`None` before; a flow that has them is asked once, in `asked`).
fn stream_start(
    ctx: &mut Ctx<'_>,
    sock: SockId,
    ev: &Event,
    side: Side,
    n: usize,
    asked: &mut HashMap<FlowId, bool>,
) -> Option<Vec<u8>> {
    let flow = ev.flow?;
    if ev.side != Some(side) || ev.tail < n as u64 || asked.contains_key(&flow) {
        return None;
    }
    asked.insert(flow, true);
    let mut buf = vec![0u8; n];
    match ctx.ppeek(sock, flow, side, &mut buf, 0) {
        Ok(k) if k == n => Some(buf),
        _ => Some(Vec::new()),
    }
}

fn serials(list: &[u64]) -> String {
    let mut v = list.to_vec();
    v.sort_unstable();
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn ude(control: &Path) -> Result<()> {
    let mut mos = attach(control, TimerClock::Wall)?;
    let sock = mos.socket()?;
    let problems = Rc::new(RefCell::new(Problems::default()));
    let mut asked = HashMap::new();
    let get = mos.define_event(EventMask::CONN_NEW_DATA, move |ctx, ev| {
        stream_start(ctx, sock, ev, Side::Svr, 4, &mut asked).is_some_and(|b| b == b"GET ")
    })?;
    let p = problems.clone();
    let get80 = mos.define_event(get, move |ctx, ev| {
        if ev.id != get || ev.kind != EventKind::ConnNewData {
            p.borrow_mut()
                .note(format!("the second link's filter saw {ev:?}"));
        }
        let Some(flow) = ev.flow else { return false };
        ctx.getpeername(flow, MOS_SIDE_SVR)
            .is_ok_and(|a| a.first().is_some_and(|s| s.port() == 80))
    })?;
    let seen: Rc<RefCell<BTreeMap<&'static str, Vec<u64>>>> = Rc::default();
    for (name, id) in [("get", get), ("get80", get80)] {
        let (s, p) = (seen.clone(), problems.clone());
        mos.register_callback(sock, id, Hook::Null, move |ctx, ev| {
            if ev.id != id || ev.kind != EventKind::ConnNewData || ev.side != Some(Side::Svr) {
                p.borrow_mut().note(format!("{name}'s callback got {ev:?}"));
            }
            let serial = ev
                .flow
                .and_then(|f| ctx.flow_info(f).ok())
                .map_or(u64::MAX, |i| i.serial);
            s.borrow_mut().entry(name).or_default().push(serial);
        })?;
    }
    run_to_end(&mut mos)?;
    problems.borrow().check()?;
    let seen = seen.borrow();
    let list = |k| seen.get(k).cloned().unwrap_or_default();
    println!(
        "ude get={} get80={} get_serials={} get80_serials={}",
        list("get").len(),
        list("get80").len(),
        serials(&list("get")),
        serials(&list("get80"))
    );
    print_counters(&mos.counters());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Raised events

/// Where in `window` (the stream from offset `from`) a line starting with "GET " ends at or
/// past offset `new_from`: request lines whose last byte is among the new bytes.
fn request_lines(window: &[u8], from: u64, new_from: u64) -> usize {
    const GET: &[u8] = b"GET ";
    (0..window.len().saturating_sub(GET.len() - 1))
        .filter(|&i| {
            let at = from + i as u64;
            window[i..].starts_with(GET)
                && at + GET.len() as u64 > new_from
                && (at == 0 || (i > 0 && window[i - 1] == b'\n'))
        })
        .count()
}

fn raise(control: &Path) -> Result<()> {
    let mut mos = attach(control, TimerClock::Wall)?;
    let sock = mos.socket()?;
    let request = mos.alloc_event(EventMask::CONN_NEW_DATA)?;
    let problems = Rc::new(RefCell::new(Problems::default()));
    // Per connection, how far the client's stream was looked at.
    let mut seen_to: HashMap<FlowId, u64> = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    let raised = Rc::new(RefCell::new(0u64));
    let (p, r) = (problems.clone(), raised.clone());
    mos.register_callback(
        sock,
        EventMask::CONN_NEW_DATA,
        Hook::Null,
        move |ctx, ev| {
            let (Some(flow), Some(Side::Svr)) = (ev.flow, ev.side) else {
                return;
            };
            let prev = seen_to.insert(flow, ev.tail).unwrap_or(0);
            // The new bytes, with the four before them: a request line may start there.
            let from = prev.saturating_sub(4);
            let mut window = Vec::new();
            while from + (window.len() as u64) < ev.tail {
                let at = from + window.len() as u64;
                match ctx.ppeek(sock, flow, Side::Svr, &mut buf, at) {
                    Ok(0) => break,
                    Ok(n) => window.extend_from_slice(&buf[..n]),
                    Err(e) => {
                        p.borrow_mut()
                            .note(format!("flow {flow}: ppeek at {at}: {e}"));
                        return;
                    }
                }
            }
            if from + window.len() as u64 != ev.tail {
                p.borrow_mut().note(format!(
                    "flow {flow}: ppeek read to {}, the event's tail is {}",
                    from + window.len() as u64,
                    ev.tail
                ));
            }
            for _ in 0..request_lines(&window, from, prev) {
                match ctx.raise_event(request) {
                    Ok(()) => *r.borrow_mut() += 1,
                    Err(e) => p.borrow_mut().note(format!("raise_event: {e}")),
                }
            }
        },
    )?;
    let got: Rc<RefCell<Vec<u64>>> = Rc::default();
    let (g, p) = (got.clone(), problems.clone());
    mos.register_callback(sock, request, Hook::Null, move |ctx, ev| {
        if ev.id != request || ev.kind != EventKind::ConnNewData || ev.side != Some(Side::Svr) {
            p.borrow_mut()
                .note(format!("the raised event's callback got {ev:?}"));
        }
        let serial = ev
            .flow
            .and_then(|f| ctx.flow_info(f).ok())
            .map_or(u64::MAX, |i| i.serial);
        g.borrow_mut().push(serial);
    })?;
    run_to_end(&mut mos)?;
    problems.borrow().check()?;
    println!(
        "raise raised={} requests={} serials={}",
        raised.borrow(),
        got.borrow().len(),
        serials(&got.borrow())
    );
    print_counters(&mos.counters());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Timers

fn timer(control: &Path, delay_ms: u64) -> Result<()> {
    let mut mos = attach(control, TimerClock::Capture)?;
    let sock = mos.socket()?;
    let delay = Duration::from_millis(delay_ms);
    // One entry per timer set: (serial, due, when it fired: the timer clock and the newest
    // capture time of the events dispatched so far).
    type Fired = Option<(u64, u64)>;
    let timers: Rc<RefCell<Vec<(u64, u64, Fired)>>> = Rc::default();
    let newest = Rc::new(RefCell::new(0u64));
    let (t, n) = (timers.clone(), newest.clone());
    mos.register_filtered(
        sock,
        any_hook(EventMask::CONN_START | EventMask::CONN_NEW_DATA | EventMask::CONN_END),
        move |ctx, ev| {
            {
                let mut n = n.borrow_mut();
                *n = (*n).max(ev.ts_ns);
            }
            // CONN_START comes for each side; the first, the sender's, is at the send hook.
            if ev.kind != EventKind::ConnStart || ev.hook != Hook::Snd {
                return;
            }
            let serial = ev
                .flow
                .and_then(|f| ctx.flow_info(f).ok())
                .map_or(u64::MAX, |i| i.serial);
            let id = t.borrow().len() as i32;
            let due = ctx.timer_now_ns() + delay_ms * 1_000_000;
            t.borrow_mut().push((serial, due, None));
            let (t, n) = (t.clone(), n.clone());
            ctx.settimer(id, delay, move |ctx, id| {
                if let Some(e) = t.borrow_mut().get_mut(id as usize) {
                    e.2 = Some((ctx.timer_now_ns(), *n.borrow()));
                }
            });
        },
    )?;
    run_to_end(&mut mos)?;
    let clock = mos.with_ctx(|c| c.timer_now_ns());
    for (serial, due, fired) in timers.borrow().iter() {
        match fired {
            Some((at, seen)) => {
                println!("timer serial={serial} due={due} fired={at} newest_event={seen}")
            }
            None => println!("timer serial={serial} due={due} fired=no"),
        }
    }
    let fired = timers.borrow().iter().filter(|t| t.2.is_some()).count();
    println!(
        "timers set={} fired={fired} clock={clock} newest_event={}",
        timers.borrow().len(),
        newest.borrow()
    );
    print_counters(&mos.counters());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// User contexts

/// A flow's user context: what it counted, reported when the library drops it.
struct Counted {
    serial: u64,
    /// Stream lengths by `Side::index()`, from the events' tails.
    tails: [u64; 2],
    new_data: u64,
    ends: u32,
    report: Rc<RefCell<Vec<String>>>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.report.borrow_mut().push(format!(
            "uctx serial={} c2s_bytes={} s2c_bytes={} new_data={} ends={}",
            self.serial,
            self.tails[Side::Svr.index()],
            self.tails[Side::Cli.index()],
            self.new_data,
            self.ends
        ));
    }
}

fn uctx(control: &Path) -> Result<()> {
    let mut mos = attach(control, TimerClock::Wall)?;
    let sock = mos.socket()?;
    let report: Rc<RefCell<Vec<String>>> = Rc::default();
    let problems = Rc::new(RefCell::new(Problems::default()));
    let set = Rc::new(RefCell::new(0u64));
    let (r, p, n) = (report.clone(), problems.clone(), set.clone());
    // The first CONN_START of a connection, the sender's, is raised at the send hook.
    mos.register_callback(sock, EventMask::CONN_START, Hook::Snd, move |ctx, ev| {
        let Some(flow) = ev.flow else { return };
        let serial = ctx.flow_info(flow).map_or(u64::MAX, |i| i.serial);
        let value = Counted {
            serial,
            tails: [0; 2],
            new_data: 0,
            ends: 0,
            report: r.clone(),
        };
        if ctx.uctx::<Counted>(sock, flow).is_some() {
            p.borrow_mut()
                .note(format!("flow {flow} had a context at its start"));
        }
        match ctx.set_uctx(sock, flow, value) {
            Ok(()) => *n.borrow_mut() += 1,
            Err(e) => p.borrow_mut().note(format!("set_uctx: {e}")),
        }
    })?;
    let p = problems.clone();
    mos.register_callback(
        sock,
        EventMask::CONN_NEW_DATA | EventMask::CONN_END,
        Hook::Null,
        move |ctx, ev| {
            let (Some(flow), Some(side)) = (ev.flow, ev.side) else {
                return;
            };
            let serial = ctx.flow_info(flow).map_or(u64::MAX, |i| i.serial);
            let Some(c) = ctx.uctx::<Counted>(sock, flow) else {
                p.borrow_mut().note(format!(
                    "flow {flow}: no context in a {:?} callback",
                    ev.kind
                ));
                return;
            };
            if c.serial != serial {
                p.borrow_mut().note(format!(
                    "flow {flow}: the context of serial {} in a callback of serial {serial}",
                    c.serial
                ));
            }
            match ev.kind {
                EventKind::ConnNewData => {
                    c.new_data += 1;
                    c.tails[side.index()] = c.tails[side.index()].max(ev.tail);
                }
                EventKind::ConnEnd { .. } => {
                    c.ends += 1;
                    c.tails[side.index()] = c.tails[side.index()].max(ev.tail);
                }
                _ => {}
            }
        },
    )?;
    run_to_end(&mut mos)?;
    problems.borrow().check()?;
    // Contexts of flows that never ended are dropped with the attachment, after this line.
    let dropped = report.borrow().len();
    for line in report.borrow().iter() {
        println!("{line}");
    }
    println!("uctxs set={} dropped={dropped}", set.borrow());
    print_counters(&mos.counters());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// STOP_MON

/// What the stopping socket saw.
#[derive(Default)]
struct Stopper {
    /// Flows it stopped monitoring.
    stopped: HashMap<FlowId, ()>,
    /// Its callbacks for a flow after it stopped monitoring it.
    after: u64,
    /// The watcher's events of stopped flows that were still addressed to the stopper, and
    /// those that no longer were.
    with_bit: u64,
    without_bit: u64,
}

fn stopmon(control: &Path) -> Result<()> {
    let mut mos = attach(control, TimerClock::Wall)?;
    let stopper = mos.socket()?;
    let watcher = mos.socket()?;
    let st = Rc::new(RefCell::new(Stopper::default()));
    let problems = Rc::new(RefCell::new(Problems::default()));
    let (s, p) = (st.clone(), problems.clone());
    let mut buf = vec![0u8; 64 * 1024];
    mos.register_callback(
        stopper,
        EventMask::CONN_NEW_DATA | EventMask::CONN_END,
        Hook::Null,
        move |ctx, ev| {
            let Some(flow) = ev.flow else { return };
            let mut s = s.borrow_mut();
            if s.stopped.contains_key(&flow) {
                s.after += 1;
                return;
            }
            if let (EventKind::ConnNewData, Some(side)) = (ev.kind, ev.side) {
                let mut sink = Stream::default();
                if let Err(e) = drain(ctx, stopper, flow, side, &mut sink, &mut buf) {
                    p.borrow_mut().note(format!("stopper: {e}"));
                }
                match ctx.stop_monitoring(stopper, flow, MOS_SIDE_BOTH) {
                    Ok(()) => {
                        s.stopped.insert(flow, ());
                    }
                    Err(e) => p.borrow_mut().note(format!("stop_monitoring: {e}")),
                }
            }
        },
    )?;
    let reader = Rc::new(RefCell::new(Reader::default()));
    let s = st.clone();
    register_reader(
        &mut mos,
        watcher,
        &reader,
        || {},
        move |_, ev| {
            let mut s = s.borrow_mut();
            if ev.flow.is_some_and(|f| s.stopped.contains_key(&f)) {
                if ev.record.socks & (1 << stopper.0) != 0 {
                    s.with_bit += 1;
                } else {
                    s.without_bit += 1;
                }
            }
        },
    )?;
    run_to_end(&mut mos)?;
    problems.borrow().check()?;
    let counters = mos.counters();
    drop(mos);
    let r = Rc::try_unwrap(reader)
        .map_err(|_| anyhow::anyhow!("callbacks outlived the attachment"))?
        .into_inner();
    r.problems.check()?;
    print_reader(r, "flow");
    let s = st.borrow();
    println!(
        "stopmon stopped={} after={} with_bit={} without_bit={}",
        s.stopped.len(),
        s.after,
        s.with_bit,
        s.without_bit
    );
    print_counters(&counters);
    Ok(())
}
