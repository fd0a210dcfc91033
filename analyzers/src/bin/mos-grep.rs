//! `mos-grep`: many literal and regex patterns searched at once in every connection's two
//! reassembled byte streams, read from a running sensor; one JSON record per match.

use anyhow::{Context as _, Result};
use clap::{CommandFactory, FromArgMatches};
use mos_analyzers::cli::grep::{Args, SideArg};
use mos_analyzers::conn::{uid, ConnTuple};
use mos_analyzers::grep::{
    parse_pattern_file, Found, MatchOptions, MatchRecord, PatternSpec, Patterns, Searcher,
};
use mos_analyzers::output::Output;
use mos_analyzers::streams::{read_new, Cursor, Piece, ReadStop};
use mos_analyzers::{exit_status, stop_on_signals, Outcome};
use mos_client::{Ctx, Errno, EventMask, Filter, FlowId, RunEnd, Side, SockId, MOS_SIDE_BOTH};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

const PROG: &str = "mos-grep";

/// Where each pattern came from on the command line.
#[derive(Debug)]
enum Source {
    Literal(String),
    Regex(String),
    File(PathBuf),
}

/// The arguments, with the pattern options in command-line order. Errors as
/// `mos_analyzers::parse_args`: a refused value is one line and status 1, other usage errors
/// clap's own.
fn parse() -> Result<(Args, Vec<Source>), ExitCode> {
    let fail = |e: clap::Error| {
        if e.kind() != clap::error::ErrorKind::ValueValidation {
            e.exit()
        }
        let text = e.to_string();
        let line = text.lines().next().unwrap_or_default();
        eprintln!("{PROG}: {}", line.strip_prefix("error: ").unwrap_or(line));
        ExitCode::FAILURE
    };
    let m = Args::command().try_get_matches().map_err(fail)?;
    let args = Args::from_arg_matches(&m).map_err(fail)?;
    let at = |id: &str| -> Vec<usize> { m.indices_of(id).map(|i| i.collect()).unwrap_or_default() };
    let mut sources: Vec<(usize, Source)> = Vec::new();
    sources.extend(
        at("literal")
            .into_iter()
            .zip(args.literal.iter().map(|t| Source::Literal(t.clone()))),
    );
    sources.extend(
        at("regex")
            .into_iter()
            .zip(args.regex.iter().map(|t| Source::Regex(t.clone()))),
    );
    sources.extend(
        at("file")
            .into_iter()
            .zip(args.file.iter().map(|p| Source::File(p.clone()))),
    );
    sources.sort_by_key(|(i, _)| *i);
    Ok((args, sources.into_iter().map(|(_, s)| s).collect()))
}

/// The patterns, -f files read, in order.
fn patterns(sources: &[Source]) -> Result<Vec<PatternSpec>> {
    let mut specs = Vec::new();
    for s in sources {
        match s {
            Source::Literal(t) => specs.push(PatternSpec::literal(t.as_str())),
            Source::Regex(t) => specs.push(PatternSpec::regex(t.as_str())),
            Source::File(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                specs.extend(parse_pattern_file(&text, &p.display().to_string())?);
            }
        }
    }
    Ok(specs)
}

/// One direction of a connection.
#[derive(Debug)]
struct Dir {
    cur: Cursor,
    search: Searcher,
}

/// A connection being searched.
#[derive(Debug)]
struct Conn {
    uid: String,
    tuple: ConnTuple,
    /// Indexed by `Side::index`: the client side's stream (resp), the server side's (orig).
    dirs: [Dir; 2],
    matches: u64,
    /// The newest capture time seen for it (ns).
    last_ns: u64,
}

/// What the summary counts.
#[derive(Debug, Default)]
struct Stats {
    conns: u64,
    bytes: u64,
    lost: u64,
    matches: u64,
    capped: u64,
    peek_errors: u64,
}

struct Grep {
    sock: SockId,
    pats: Patterns,
    /// The sides whose stream is searched, by `Side::index`.
    sides: [bool; 2],
    max_per_flow: Option<u64>,
    conns: HashMap<FlowId, Conn>,
    scratch: Vec<u8>,
    work: Vec<u8>,
    found: Vec<Found>,
    output: Box<dyn Output>,
    /// An output error, which stops the run.
    error: Option<anyhow::Error>,
    stats: Stats,
    ticks: u64,
}

/// The record's name of a side's stream: the server side holds what the client sent.
fn side_name(side: Side) -> &'static str {
    match side {
        Side::Svr => "orig",
        Side::Cli => "resp",
    }
}

const SIDES: [Side; 2] = [Side::Svr, Side::Cli];

impl Grep {
    /// The connection's state, made on first sight; `false` if it is gone already.
    fn ensure(&mut self, ctx: &Ctx<'_>, flow: FlowId) -> bool {
        if self.conns.contains_key(&flow) {
            return true;
        }
        let Ok(info) = ctx.flow_info(flow) else {
            return false;
        };
        let dir = || Dir {
            cur: Cursor::default(),
            search: self.pats.searcher(),
        };
        let conn = Conn {
            uid: uid(&info),
            tuple: ConnTuple::new(info.client, info.server),
            dirs: [dir(), dir()],
            matches: 0,
            last_ns: info.last_ns,
        };
        self.conns.insert(flow, conn);
        self.stats.conns += 1;
        true
    }

    /// Searches what `side` holds past the reader, the bytes taken as of capture time `ts`.
    fn read(&mut self, ctx: &mut Ctx<'_>, flow: FlowId, side: Side, ts: u64) {
        let Grep {
            sock,
            pats,
            conns,
            scratch,
            work,
            found,
            stats,
            ..
        } = self;
        let Some(c) = conns.get_mut(&flow) else {
            return;
        };
        c.last_ns = c.last_ns.max(ts);
        let d = &mut c.dirs[side.index()];
        found.clear();
        let r = read_new(ctx, *sock, flow, side, &mut d.cur, scratch, |piece| {
            match piece {
                Piece::Data { offset, bytes } => {
                    stats.bytes += bytes.len() as u64;
                    d.search.data(pats, offset, bytes, ts, work, found);
                }
                Piece::Lost { offset, len } => {
                    stats.lost += len;
                    d.search.lost(pats, offset, len, found);
                }
            }
            true
        });
        if let Err(ReadStop::Failed(e)) = r {
            stats.peek_errors += 1;
            eprintln!("{PROG}: flow {flow}: {e}");
        }
        self.emit(ctx, flow, side);
    }

    /// Writes the matches of `found` (of `side` of `flow`), up to the connection's limit; at
    /// the limit, stops watching the connection.
    fn emit(&mut self, ctx: &mut Ctx<'_>, flow: FlowId, side: Side) {
        if self.found.is_empty() || self.error.is_some() {
            return;
        }
        let Some(c) = self.conns.get_mut(&flow) else {
            return;
        };
        for f in &self.found {
            if self.max_per_flow.is_some_and(|max| c.matches >= max) {
                break;
            }
            let rec = MatchRecord::new(f, &self.pats, &c.uid, &c.tuple, side_name(side));
            let r = serde_json::to_string(&rec)
                .map_err(anyhow::Error::from)
                .and_then(|line| self.output.record("match", &c.uid, &line));
            if let Err(e) = r {
                self.error = Some(e);
                ctx.stop();
                return;
            }
            c.matches += 1;
            self.stats.matches += 1;
        }
        self.found.clear();
        if self.max_per_flow.is_some_and(|max| c.matches >= max) {
            // No more events of it: the library drops the rest, its CONN_END included.
            let _ = ctx.stop_monitoring(self.sock, flow, MOS_SIDE_BOTH);
            self.conns.remove(&flow);
            self.stats.capped += 1;
        }
    }

    /// The end of a connection (or of the run): what its sides still hold is searched, then
    /// what the searchers held back is written, and the connection forgotten. `ts`: the
    /// capture time to give bytes read now (`None`: the connection's newest).
    fn end(&mut self, ctx: &mut Ctx<'_>, flow: FlowId, ts: Option<u64>) {
        if !self.ensure(ctx, flow) {
            return;
        }
        for side in SIDES {
            if !self.sides[side.index()] {
                continue;
            }
            let Some(c) = self.conns.get(&flow) else {
                return;
            };
            let ts = ts.unwrap_or(c.last_ns);
            self.read(ctx, flow, side, ts);
            let Some(c) = self.conns.get_mut(&flow) else {
                return;
            };
            c.dirs[side.index()]
                .search
                .finish(&self.pats, &mut self.found);
            self.emit(ctx, flow, side);
        }
        self.conns.remove(&flow);
    }

    /// Every connection still open, searched as far as it got; how many there were.
    fn end_all(&mut self, ctx: &mut Ctx<'_>) -> usize {
        let open: Vec<FlowId> = self.conns.keys().copied().collect();
        for &flow in &open {
            let ts = ctx.flow_info(flow).ok().map(|i| i.last_ns);
            self.end(ctx, flow, ts);
        }
        open.len()
    }

    /// About once a second: flush the output; every 10 s, forget the connections whose slot
    /// moved on without this analyzer seeing their end (live mode, events dropped).
    fn tick(&mut self, ctx: &mut Ctx<'_>) {
        self.ticks += 1;
        if self.ticks.is_multiple_of(10) {
            let gone: Vec<FlowId> = self
                .conns
                .keys()
                .copied()
                .filter(|&f| matches!(ctx.flow_info(f), Err(e) if e.errno() == Errno::EBADF))
                .collect();
            for flow in gone {
                for side in SIDES {
                    let Some(c) = self.conns.get_mut(&flow) else {
                        break;
                    };
                    c.dirs[side.index()]
                        .search
                        .finish(&self.pats, &mut self.found);
                    self.emit(ctx, flow, side);
                }
                self.conns.remove(&flow);
            }
        }
        if let Err(e) = self.output.tick() {
            self.error.get_or_insert(e);
            ctx.stop();
        }
    }
}

/// A timer's callback.
type TimerFn = Box<dyn FnMut(&mut Ctx<'_>, i32)>;

/// The once-a-second timer, which sets itself again.
fn ticker(state: Rc<RefCell<Grep>>) -> TimerFn {
    Box::new(move |ctx, id| {
        state.borrow_mut().tick(ctx);
        ctx.settimer(id, Duration::from_secs(1), ticker(state.clone()));
    })
}

fn run(args: &Args, sources: &[Source]) -> Result<Outcome> {
    let pats = Patterns::new(
        patterns(sources)?,
        &MatchOptions {
            ignore_case: args.ignore_case,
            window: args.regex_window as usize,
            context: args.context.map(usize::from),
        },
    )?;
    let mut mos = args.attach.attach(PROG, false)?;
    let interrupt = stop_on_signals(&mos)?;
    let output = args.output.open(&mos, PROG)?;
    let sock = mos.socket()?;
    args.attach.bind_filter(&mut mos, sock)?;
    let sides = match args.side {
        SideArg::Orig => [false, true],
        SideArg::Resp => [true, false],
        SideArg::Both => [true, true],
    };
    let state = Rc::new(RefCell::new(Grep {
        sock,
        pats,
        sides,
        max_per_flow: args.max_matches_per_flow,
        conns: HashMap::new(),
        scratch: vec![0; 64 * 1024],
        work: Vec::new(),
        found: Vec::new(),
        output,
        error: None,
        stats: Stats::default(),
        ticks: 0,
    }));
    let data_side = match args.side {
        SideArg::Orig => Some(Side::Svr),
        SideArg::Resp => Some(Side::Cli),
        SideArg::Both => None,
    };
    let s = state.clone();
    mos.register_filtered(
        sock,
        Filter {
            events: EventMask::CONN_NEW_DATA,
            hook: None,
            side: data_side,
        },
        move |ctx, ev| {
            let (Some(flow), Some(side)) = (ev.flow, ev.side) else {
                return;
            };
            let mut g = s.borrow_mut();
            if g.error.is_none() && g.ensure(ctx, flow) {
                g.read(ctx, flow, side, ev.ts_ns);
            }
        },
    )?;
    let s = state.clone();
    mos.register_filtered(
        sock,
        Filter {
            events: EventMask::CONN_END,
            hook: None,
            side: Some(Side::Cli),
        },
        move |ctx, ev| {
            if let Some(flow) = ev.flow {
                let mut g = s.borrow_mut();
                if g.error.is_none() {
                    g.end(ctx, flow, Some(ev.ts_ns));
                }
            }
        },
    )?;
    mos.settimer(0, Duration::from_secs(1), ticker(state.clone()));
    let end = mos.run();
    if let Some(e) = state.borrow_mut().error.take() {
        return Err(e);
    }
    // Without its sensor (it went away, or detached this analyzer) the shared memory stays
    // mapped: what the open connections hold is still searched.
    let lost = match end {
        Ok(end) => Ok(end),
        Err(e) if e.errno() == Errno::ENOTCONN => Err(e),
        Err(e) => return Err(e.into()),
    };
    let still_open = mos.with_ctx(|ctx| state.borrow_mut().end_all(ctx));
    let counters = mos.counters();
    drop(mos);
    let mut g = Rc::try_unwrap(state)
        .map_err(|_| anyhow::anyhow!("the callbacks outlived the attachment"))?
        .into_inner();
    if let Some(e) = g.error.take() {
        return Err(e);
    }
    g.output.finish()?;
    let st = &g.stats;
    let mut summary = format!(
        "{} connections, {} bytes searched ({} lost), {} matches ({} written, {} dropped by the output); {} events, {} dropped by the sensor",
        st.conns,
        st.bytes,
        st.lost,
        st.matches,
        g.output.written(),
        g.output.dropped(),
        counters.events,
        counters.events_dropped,
    );
    if st.capped > 0 {
        summary += &format!(
            "; {} connections stopped at --max-matches-per-flow",
            st.capped
        );
    }
    if st.peek_errors > 0 {
        summary += &format!("; {} read errors", st.peek_errors);
    }
    let end = match lost {
        Ok(end) => end,
        Err(e) => anyhow::bail!(
            "{e}; {summary}; {still_open} connections open then searched as far as they got"
        ),
    };
    eprintln!("{PROG}: {summary}");
    if end == RunEnd::Stopped || interrupt.arrived() {
        eprintln!(
            "{PROG}: stopped by a signal; {still_open} connections still open were searched as far as they got"
        );
        return Ok(Outcome::Interrupted);
    }
    Ok(Outcome::Finished)
}

fn main() -> ExitCode {
    match parse() {
        Ok((args, sources)) => exit_status(PROG, run(&args, &sources)),
        Err(code) => code,
    }
}
