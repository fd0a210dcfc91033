//! `mos-pcap`: the packets of chosen connections, from the sensor's packet log, to a pcap or
//! pcapng file. The connections are those a SYN filter takes, or among them those that lines
//! of `mos-grep` (or any JSON lines with a `uid`) name.

use anyhow::{bail, Context as _, Result};
use mos_analyzers::cli::pcap::Args;
use mos_analyzers::conn::{self, ConnTuple};
use mos_analyzers::pcapout::{CaptureWriter, Format, Frame, Keeper, LINKTYPE_ETHERNET};
use mos_analyzers::{exit_status, parse_args, stop_on_signals, Interrupt, Outcome};
use mos_client::{Ctx, Errno, EventKind, EventMask, Filter, FlowId, Hook, RunEnd, Side};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

/// How often the output is flushed, names applied and lingering connections let go.
const TICK: Duration = Duration::from_secs(1);

/// Ticks without a packet after which a connection's slot is looked at, in case its end was
/// lost (live mode drops events when the analyzer falls behind).
const IDLE_TICKS: u64 = 5;

/// What a failed write of the capture file says.
const WRITING: &str = "writing the capture file";

/// Longest line of --matches taken (longer ones are skipped and counted).
const MAX_LINE: usize = 1 << 20;

/// What the reader of --matches passes on.
#[derive(Debug)]
enum NameMsg {
    /// A line naming this uid (each uid once).
    Uid(String),
    /// A line without a usable "uid".
    Bad,
    /// The input ended (with the read error, if one ended it).
    End(Option<String>),
}

#[derive(Deserialize)]
struct Named {
    uid: String,
}

/// The uid a line names, if any.
fn uid_of(line: &[u8]) -> Option<String> {
    let n: Named = serde_json::from_slice(line).ok()?;
    let ok = !n.uid.is_empty() && n.uid.len() <= 64 && n.uid.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(n.uid)
}

/// Reads JSON lines, passing each new uid (and each unusable line) to `to`, until the input
/// ends or `to` returns false.
fn read_names(input: impl Read, mut to: impl FnMut(NameMsg) -> bool) {
    let mut r = BufReader::with_capacity(64 * 1024, input);
    let mut seen = HashSet::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut too_long = false;
        // One line, at most MAX_LINE bytes of it kept.
        let end = loop {
            let buf = match r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Some(Some(e.to_string())),
            };
            if buf.is_empty() {
                break if line.is_empty() && !too_long {
                    Some(None)
                } else {
                    None
                };
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if line.len() + take <= MAX_LINE {
                line.extend_from_slice(&buf[..take]);
            } else {
                too_long = true;
            }
            r.consume(take);
            if done {
                break None;
            }
        };
        if let Some(why) = end {
            to(NameMsg::End(why));
            return;
        }
        if line.trim_ascii().is_empty() && !too_long {
            continue;
        }
        let msg = match (too_long, uid_of(&line)) {
            (false, Some(uid)) if seen.insert(uid.clone()) => NameMsg::Uid(uid),
            (false, Some(_)) => continue,
            _ => NameMsg::Bad,
        };
        if !to(msg) {
            return;
        }
    }
}

/// Where --matches comes from.
enum Names {
    /// A regular file, read whole: its messages.
    Read(Vec<NameMsg>),
    /// A pipe or terminal, read by a thread as lines come.
    Stream(Receiver<NameMsg>),
}

/// Opens --matches: a regular file (or stdin redirected from one) is read now; anything else
/// by a thread.
fn open_names(path: &Path) -> Result<Names> {
    let file = if path == Path::new("-") {
        let fd = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .context("reading --matches from stdin")?;
        File::from(fd)
    } else {
        File::open(path).with_context(|| format!("--matches {}", path.display()))?
    };
    let meta = file
        .metadata()
        .with_context(|| format!("--matches {}", path.display()))?;
    if meta.is_dir() {
        bail!("--matches {}: is a directory", path.display());
    }
    if meta.is_file() {
        let mut got = Vec::new();
        read_names(file, |m| {
            got.push(m);
            true
        });
        if let Some(NameMsg::End(Some(why))) = got.last() {
            bail!("--matches {}: {why}", path.display());
        }
        return Ok(Names::Read(got));
    }
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("matches".into())
        .spawn(move || read_names(file, |m| tx.send(m).is_ok()))
        .context("starting the --matches reader")?;
    Ok(Names::Stream(rx))
}

/// Creates an output file (mode 0640, truncated, or with `append` added to) or takes stdout
/// for `-`.
fn create(path: &Path, what: &str, append: bool) -> Result<Box<dyn Write>> {
    if path == Path::new("-") {
        let fd = io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .context("writing to stdout")?;
        return Ok(Box::new(File::from(fd)));
    }
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(!append)
        .append(append)
        .mode(0o640)
        .open(path)
        .with_context(|| format!("{what} {}", path.display()))?;
    Ok(Box::new(f))
}

/// With --append: an existing --out must be empty or pcapng (a section header first).
fn check_appendable(path: &Path) -> Result<()> {
    let mut head = [0u8; 4];
    let n = match File::open(path) {
        Ok(mut f) => f.read(&mut head).unwrap_or(0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("--out {}", path.display())),
    };
    if n != 0 && head != [0x0A, 0x0D, 0x0D, 0x0A] {
        bail!(
            "--append: {} is not a pcapng file (it does not start with a section header)",
            path.display()
        );
    }
    Ok(())
}

/// A line of --list.
#[derive(Serialize)]
struct Listed<'a> {
    ts: f64,
    uid: &'a str,
    #[serde(flatten)]
    id: ConnTuple,
}

/// A connection mos-pcap is getting packets of.
#[derive(Debug)]
struct Live {
    /// Its uid (with --matches or --list), or why it could not be had.
    uid: Option<String>,
    /// A packet of it was written (without --matches).
    written: bool,
    /// The tick of its latest packet.
    last_tick: u64,
}

/// The connection a written frame is counted for.
#[derive(Clone, Copy)]
enum Whose<'a> {
    /// With --matches: by uid.
    Named(&'a str),
    /// Without: the connection's entry among the live ones.
    Flow(FlowId),
}

/// Everything the callbacks share.
struct State {
    writer: CaptureWriter<BufWriter<Box<dyn Write>>>,
    snaplen: u32,
    /// With --matches: the connections not named yet.
    keeper: Option<Keeper>,
    /// With --matches from a pipe, until it ends.
    names: Option<Receiver<NameMsg>>,
    list: Option<BufWriter<Box<dyn Write>>>,
    live: HashMap<FlowId, Live>,
    tick: u64,
    /// Connections with a packet written: without --matches, counted as they come; with it,
    /// the uids.
    conns_written: u64,
    written_uids: HashSet<String>,
    /// Packets the sensor's packet log no longer had.
    log_lost: u64,
    /// Packets whose frame could not be read for another reason, and the first such error.
    read_failed: u64,
    read_error: Option<String>,
    /// Packets of connections whose uid could not be had (the slot moved on; --matches).
    unidentified: u64,
    /// Lines of --matches without a uid.
    bad_lines: u64,
    /// Why --matches ended early, if it did.
    names_error: Option<String>,
    /// A write error, which stops the run.
    error: Option<anyhow::Error>,
}

impl State {
    /// Writes one frame, counting its connection.
    fn emit(&mut self, f: &Frame, whose: Whose<'_>) -> io::Result<()> {
        if !self.writer.write(f)? {
            return Ok(());
        }
        let first = match whose {
            Whose::Named(u) => {
                !self.written_uids.contains(u) && self.written_uids.insert(u.to_owned())
            }
            Whose::Flow(flow) => self
                .live
                .get_mut(&flow)
                .is_some_and(|l| !std::mem::replace(&mut l.written, true)),
        };
        self.conns_written += u64::from(first);
        Ok(())
    }

    /// Applies the names that came from the --matches reader.
    fn take_names(&mut self) -> io::Result<()> {
        loop {
            let Some(rx) = &self.names else {
                return Ok(());
            };
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => NameMsg::End(None),
            };
            self.apply(msg)?;
        }
    }

    /// One message of the --matches reader.
    fn apply(&mut self, msg: NameMsg) -> io::Result<()> {
        match msg {
            NameMsg::Uid(uid) => {
                let Some(k) = self.keeper.as_mut() else {
                    return Ok(());
                };
                let frames = k.name(&uid);
                for f in &frames {
                    self.emit(f, Whose::Named(&uid))?;
                }
            }
            NameMsg::Bad => self.bad_lines += 1,
            NameMsg::End(why) => {
                self.names = None;
                if let Some(why) = why {
                    self.names_error.get_or_insert(why);
                }
                if let Some(k) = self.keeper.as_mut() {
                    k.close();
                }
            }
        }
        Ok(())
    }

    /// The first packet of `flow`: what mos-pcap needs to know of it.
    fn first_sight(&mut self, ctx: &Ctx<'_>, flow: FlowId) -> Result<Live> {
        let mut live = Live {
            uid: None,
            written: false,
            last_tick: self.tick,
        };
        if self.keeper.is_none() && self.list.is_none() {
            return Ok(live);
        }
        let Ok(info) = ctx.flow_info(flow) else {
            return Ok(live);
        };
        let uid = conn::uid(&info);
        if let Some(list) = &mut self.list {
            let line = Listed {
                ts: conn::ts_secs(info.start_ns),
                uid: &uid,
                id: ConnTuple::new(info.client, info.server),
            };
            serde_json::to_writer(&mut *list, &line).context("writing --list")?;
            list.write_all(b"\n").context("writing --list")?;
        }
        live.uid = Some(uid);
        Ok(live)
    }

    /// `PKT_IN` at the sender's hook: each packet of a watched connection once.
    fn on_packet(&mut self, ctx: &mut Ctx<'_>, flow: FlowId) -> Result<()> {
        self.take_names().context(WRITING)?;
        if !self.live.contains_key(&flow) {
            let l = self.first_sight(ctx, flow)?;
            self.live.insert(flow, l);
        }
        let tick = self.tick;
        let live = self.live.get_mut(&flow).expect("inserted above");
        live.last_tick = tick;
        let uid = live.uid.clone();
        let pkt = match ctx.event_packet() {
            Ok(p) => p,
            Err(e) if e.errno() == Errno::ENODATA => {
                self.log_lost += 1;
                return Ok(());
            }
            Err(e) => {
                self.read_failed += 1;
                self.read_error.get_or_insert(e.to_string());
                return Ok(());
            }
        };
        let mut f = Frame {
            ts_ns: pkt.ts_ns,
            linktype: pkt.linktype,
            wirelen: pkt.wirelen,
            data: pkt.frame,
        };
        f.truncate(self.snaplen);
        match self.keeper.as_mut() {
            None => self.emit(&f, Whose::Flow(flow)).context(WRITING)?,
            Some(k) => {
                let Some(uid) = uid else {
                    self.unidentified += 1;
                    return Ok(());
                };
                if let Some(f) = k.packet(&uid, f) {
                    self.emit(&f, Whose::Named(&uid)).context(WRITING)?;
                }
            }
        }
        Ok(())
    }

    /// The connection ended (or its slot is gone).
    fn on_end(&mut self, flow: FlowId, now: Instant) {
        if let Some(l) = self.live.remove(&flow) {
            if let (Some(k), Some(uid)) = (self.keeper.as_mut(), l.uid) {
                k.ended(&uid, now);
            }
        }
    }

    /// Every second: names, lingering connections, connections whose end was lost, flushes.
    fn on_tick(&mut self, ctx: &Ctx<'_>) -> Result<()> {
        self.tick += 1;
        self.take_names().context(WRITING)?;
        let now = Instant::now();
        if let Some(k) = self.keeper.as_mut() {
            k.sweep(now);
        }
        if self.tick.is_multiple_of(IDLE_TICKS) {
            let gone: Vec<FlowId> = self
                .live
                .iter()
                .filter(|(_, l)| l.last_tick + IDLE_TICKS <= self.tick)
                .filter(|(&f, _)| ctx.flow_info(f).map_or(true, |i| i.ended))
                .map(|(&f, _)| f)
                .collect();
            for f in gone {
                self.on_end(f, now);
            }
        }
        self.flush()
    }

    fn flush(&mut self) -> Result<()> {
        self.writer.flush().context(WRITING)?;
        if let Some(l) = &mut self.list {
            l.flush().context("writing --list")?;
        }
        Ok(())
    }

    /// Keeps the first error and stops the run.
    fn keep(&mut self, ctx: &mut Ctx<'_>, r: Result<()>) {
        if let Err(e) = r {
            self.error.get_or_insert(e);
            ctx.stop();
        }
    }
}

/// Arms the tick, which arms itself again each time.
fn every_tick(ctx: &mut Ctx<'_>, state: Rc<RefCell<State>>) {
    ctx.settimer(1, TICK, move |ctx, _| {
        let mut s = state.borrow_mut();
        let r = s.on_tick(ctx);
        s.keep(ctx, r);
        drop(s);
        every_tick(ctx, state.clone());
    });
}

/// After the input ended: the last names, for up to `linger` (until the reader ends), unless
/// a signal comes.
fn last_names(state: &mut State, linger: Duration, interrupt: &Interrupt) -> Result<()> {
    let deadline = Instant::now() + linger;
    while let Some(rx) = &state.names {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || interrupt.arrived() {
            break;
        }
        let msg = match rx.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => NameMsg::End(None),
        };
        state.apply(msg).context(WRITING)?;
    }
    Ok(())
}

/// The counts printed at exit.
fn summary(s: &State, out: &str, events_dropped: u64) -> String {
    let w = &s.writer;
    let mut t = format!(
        "{} packets of {} connections written to {out} ({}); {} packets no longer in the sensor's packet log",
        w.packets,
        s.conns_written,
        w.format().name(),
        s.log_lost
    );
    if let Some(k) = &s.keeper {
        let st = &k.stats;
        t += &format!(
            "; {} packets of {} connections dropped from mos-pcap's buffer (--buffer-mib full); {} of {} named connections never seen",
            st.evicted_packets,
            st.evicted_conns,
            k.never_seen(),
            k.names()
        );
        if st.named_late > 0 {
            t += &format!(
                "; {} connections named after their packets were let go (--linger)",
                st.named_late
            );
        }
        t += &format!(
            "; {} packets of {} connections not named (not written)",
            st.unnamed_packets, st.unnamed_conns
        );
    }
    if w.other_linktype > 0 {
        t += &format!(
            "; {} packets of another link type than the file's ({}) skipped (pcapng takes them)",
            w.other_linktype,
            w.linktypes().first().copied().unwrap_or_default()
        );
    }
    if events_dropped > 0 {
        t += &format!("; {events_dropped} events the sensor dropped for mos-pcap (it fell behind)");
    }
    if s.read_failed > 0 {
        t += &format!(
            "; {} packets unreadable ({})",
            s.read_failed,
            s.read_error.as_deref().unwrap_or_default()
        );
    }
    if s.unidentified > 0 {
        t += &format!(
            "; {} packets of connections gone before mos-pcap could name them",
            s.unidentified
        );
    }
    if s.bad_lines > 0 {
        t += &format!("; {} --matches lines without a uid skipped", s.bad_lines);
    }
    if let Some(e) = &s.names_error {
        t += &format!("; reading --matches stopped: {e}");
    }
    t
}

fn run(args: &Args) -> Result<Outcome> {
    let dash = Path::new("-");
    if args.list.as_deref() == Some(dash) && args.out == dash {
        bail!("--out and --list cannot both be stdout");
    }
    let format = args.format.unwrap_or_else(|| Format::from_path(&args.out));
    if args.append {
        if format != Format::Pcapng {
            bail!("--append needs pcapng (--format pcapng, or a FILE ending in .pcapng)");
        }
        if args.out == dash {
            bail!("--append needs a file, not stdout");
        }
        check_appendable(&args.out)?;
    }
    let names = args.matches.as_deref().map(open_names).transpose()?;
    let mut mos = args.attach.attach("mos-pcap", true)?;
    let interrupt = stop_on_signals(&mos)?;
    let sock = mos.socket()?;
    args.attach.bind_filter(&mut mos, sock)?;
    let default_linktype = mos
        .getconf()
        .linktypes
        .first()
        .and_then(|&l| u16::try_from(l).ok())
        .unwrap_or(LINKTYPE_ETHERNET);
    let out = create(&args.out, "--out", args.append)?;
    let writer = CaptureWriter::new(
        BufWriter::with_capacity(256 * 1024, out),
        format,
        args.snaplen,
    );
    let list = match &args.list {
        Some(p) => Some(BufWriter::new(create(p, "--list", false)?)),
        None => None,
    };
    let budget = usize::try_from(args.buffer_mib << 20).unwrap_or(usize::MAX);
    let mut state = State {
        writer,
        snaplen: args.snaplen,
        keeper: names.as_ref().map(|_| Keeper::new(budget, args.linger)),
        names: None,
        list,
        live: HashMap::new(),
        tick: 0,
        conns_written: 0,
        written_uids: HashSet::new(),
        log_lost: 0,
        read_failed: 0,
        read_error: None,
        unidentified: 0,
        bad_lines: 0,
        names_error: None,
        error: None,
    };
    match names {
        None => {}
        Some(Names::Read(msgs)) => {
            for m in msgs {
                state.apply(m).context(WRITING)?;
            }
        }
        Some(Names::Stream(rx)) => state.names = Some(rx),
    }
    let state = Rc::new(RefCell::new(state));
    let s = state.clone();
    mos.register_callback(sock, EventMask::PKT_IN, Hook::Snd, move |ctx, ev| {
        let Some(flow) = ev.flow else {
            return;
        };
        let mut s = s.borrow_mut();
        let r = s.on_packet(ctx, flow);
        s.keep(ctx, r);
    })?;
    let s = state.clone();
    let end_filter = Filter {
        events: EventMask::CONN_END,
        hook: None,
        side: Some(Side::Cli),
    };
    mos.register_filtered(sock, end_filter, move |_ctx, ev| {
        if let (EventKind::ConnEnd { .. }, Some(flow)) = (ev.kind, ev.flow) {
            s.borrow_mut().on_end(flow, Instant::now());
        }
    })?;
    let s = state.clone();
    mos.with_ctx(|ctx| every_tick(ctx, s));
    let end = mos.run();
    let events_dropped = mos.counters().events_dropped;
    // Dropping the attachment detaches and releases the callbacks' share of the state.
    drop(mos);
    let mut s = Rc::try_unwrap(state)
        .map_err(|_| anyhow::anyhow!("the callbacks outlived the attachment"))?
        .into_inner();
    let out_name = if args.out == dash {
        "stdout".to_owned()
    } else {
        args.out.display().to_string()
    };
    if let Some(e) = s.error.take() {
        bail!("{e:#}; {}", summary(&s, &out_name, events_dropped));
    }
    let lost = match end {
        Ok(end) => Ok(end),
        Err(e) if e.errno() == Errno::ENOTCONN => Err(e),
        Err(e) => return Err(e.into()),
    };
    let stopped = interrupt.arrived() || matches!(lost, Ok(RunEnd::Stopped));
    if matches!(lost, Ok(RunEnd::Done)) && !stopped {
        last_names(&mut s, args.linger, &interrupt)?;
    } else {
        s.take_names().context(WRITING)?;
    }
    if let Some(k) = s.keeper.as_mut() {
        k.close();
    }
    s.flush()?;
    let text = summary(&s, &out_name, events_dropped);
    let State { writer, .. } = s;
    writer.finish(default_linktype).context(WRITING)?;
    match lost {
        Err(e) => bail!("{e}; {text}"),
        Ok(_) => eprintln!("mos-pcap: {text}"),
    }
    if stopped {
        eprintln!("mos-pcap: stopped by a signal");
        return Ok(Outcome::Interrupted);
    }
    Ok(Outcome::Finished)
}

fn main() -> ExitCode {
    match parse_args::<Args>("mos-pcap") {
        Ok(args) => exit_status("mos-pcap", run(&args)),
        Err(code) => code,
    }
}
