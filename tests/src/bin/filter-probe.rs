//! `filter-probe`: an analyzer that shows which connections and packets the sensor's filters
//! give each socket, for tests/tests/filters.rs to hold against tcpdump.
//!
//! It opens one unfiltered stream socket and one stream socket per `--syn EXPR` (that
//! expression as its SYN filter), each registered for `CONN_START`; with `--raw EXPR` it also
//! attaches with packets and opens one unfiltered raw socket and one raw socket per raw
//! expression, each registered for `ORPHAN` (how a raw socket's packets arrive). Sockets are
//! numbered within their kind: 0 is the unfiltered one, K the K-th expression given.
//!
//! Output, one line per delivery:
//!
//! ```text
//! conn sock=K pkt_pos=P client=IP:PORT server=IP:PORT
//! raw sock=K pkt_pos=P ts=NS len=WIRELEN sha1=HEX
//! ```
//!
//! A `conn` line is written for the first `CONN_START` of each connection on each socket; `P`
//! is the event's `pkt_pos`, the 0-based position in the input of the frame that raised it
//! (the connection's first packet). A `raw` line gives the packet's capture time, length on
//! the wire and the SHA-1 of its bytes, so that it can be found in the capture even when the
//! event carries no position (`pkt_pos=-`). The last line is `done conns=N raw=M`.
//!
//! An expression the library refuses ends the probe with status 1 and the library's message
//! (`EINVAL: ...`) on stderr; with `--keep-going` it writes `refused syn sock=K ERROR` (or
//! `refused raw ...`) instead, closes that socket, and goes on with the others.
//!
//! usage: filter-probe --control PATH [--wait SECS] [--keep-going] [--syn EXPR]... [--raw EXPR]...

use anyhow::{bail, Context, Result};
use clap::Parser;
use mos_client::{
    AttachOptions, Ctx, Event, EventMask, Filter, FlowId, MonitorFilter, Mos, RunEnd, SockId,
    MOS_SIDE_BOTH,
};
use sha1::{Digest, Sha1};
use std::cell::RefCell;
use std::collections::HashSet;
use std::io::{BufWriter, Stdout, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

/// Most `--syn` expressions: with the unfiltered socket and the raw ones, an attachment's 32
/// sockets must suffice.
const MAX_SYN: usize = 20;
/// Most `--raw` expressions.
const MAX_RAW: usize = 10;

/// Prints the connections (CONN_START) and packets (raw sockets) each filtered socket of one
/// attachment gets, beside an unfiltered socket of each kind.
#[derive(Parser, Debug)]
#[command(name = "filter-probe")]
struct Args {
    /// The sensor's control socket.
    #[arg(long, value_name = "PATH")]
    control: PathBuf,
    /// Seconds to keep trying to attach while no sensor listens at --control yet (0 to 3600).
    #[arg(long, value_name = "SECS", default_value = "10",
          value_parser = mos_analyzers::attach_wait)]
    wait: Duration,
    /// A stream socket with this SYN filter (repeatable, at most 20).
    #[arg(long = "syn", value_name = "EXPR")]
    syn: Vec<String>,
    /// A raw socket with this packet filter (repeatable, at most 10); attaches with packets.
    #[arg(long = "raw", value_name = "EXPR")]
    raw: Vec<String>,
    /// Report a refused expression on stdout and go on, instead of exiting with status 1.
    #[arg(long)]
    keep_going: bool,
}

/// What the callbacks share: the output and which (socket, flow) pairs were already written.
struct Out {
    w: BufWriter<Stdout>,
    seen: HashSet<(u32, FlowId)>,
    conns: u64,
    raw: u64,
    /// The first failure inside a callback (a write error, a packet that cannot be read).
    error: Option<String>,
}

impl Out {
    fn line(&mut self, text: std::fmt::Arguments<'_>) {
        if self.error.is_none() {
            if let Err(e) = self.w.write_fmt(text) {
                self.error = Some(format!("writing stdout: {e}"));
            }
        }
    }
}

fn pos(p: Option<u64>) -> String {
    p.map_or_else(|| "-".to_string(), |p| p.to_string())
}

fn on_conn_start(out: &RefCell<Out>, k: u32, ctx: &mut Ctx<'_>, ev: &Event) {
    let Some(flow) = ev.flow else { return };
    let mut o = out.borrow_mut();
    if !o.seen.insert((k, flow)) {
        return;
    }
    o.conns += 1;
    match ctx.getpeername(flow, MOS_SIDE_BOTH) {
        Ok(peers) if peers.len() == 2 => o.line(format_args!(
            "conn sock={k} pkt_pos={} client={} server={}\n",
            pos(ev.pkt_pos),
            peers[0],
            peers[1]
        )),
        Ok(peers) => {
            let e = format!("getpeername of {flow} gave {} addresses", peers.len());
            o.error.get_or_insert(e);
        }
        Err(e) => {
            o.error.get_or_insert(format!("getpeername of {flow}: {e}"));
        }
    }
}

fn on_raw(out: &RefCell<Out>, k: u32, ctx: &mut Ctx<'_>, ev: &Event) {
    let mut o = out.borrow_mut();
    o.raw += 1;
    match ctx.event_packet() {
        Ok(p) => o.line(format_args!(
            "raw sock={k} pkt_pos={} ts={} len={} sha1={}\n",
            pos(ev.pkt_pos),
            p.ts_ns,
            p.wirelen,
            hex::encode(Sha1::digest(&p.frame))
        )),
        Err(e) => {
            o.error
                .get_or_insert(format!("the packet of a raw event: {e}"));
        }
    }
}

/// Opens and binds one socket; `Ok(None)` when `--keep-going` let a refused filter pass.
fn filtered_socket(
    mos: &mut Mos,
    args: &Args,
    raw: bool,
    k: usize,
    expr: &str,
    out: &RefCell<Out>,
) -> Result<Option<SockId>> {
    let (sock, filter, what) = if raw {
        let f = MonitorFilter {
            raw_pkt_filter: Some(expr),
            ..MonitorFilter::default()
        };
        (mos.raw_socket()?, f, "raw")
    } else {
        let f = MonitorFilter {
            stream_syn_filter: Some(expr),
            ..MonitorFilter::default()
        };
        (mos.socket()?, f, "syn")
    };
    match mos.bind_monitor_filter(sock, &filter) {
        Ok(()) => Ok(Some(sock)),
        Err(e) if args.keep_going => {
            mos.close(sock)?;
            out.borrow_mut()
                .line(format_args!("refused {what} sock={k} {e}\n"));
            Ok(None)
        }
        Err(e) => bail!("--{what} {expr:?}: {e}"),
    }
}

fn register(mos: &mut Mos, sock: SockId, raw: bool, k: u32, out: &Rc<RefCell<Out>>) -> Result<()> {
    let out = out.clone();
    let events = if raw {
        EventMask::ORPHAN
    } else {
        EventMask::CONN_START
    };
    let filter = Filter {
        events,
        hook: None,
        side: None,
    };
    if raw {
        mos.register_filtered(sock, filter, move |ctx, ev| on_raw(&out, k, ctx, ev))?;
    } else {
        mos.register_filtered(sock, filter, move |ctx, ev| on_conn_start(&out, k, ctx, ev))?;
    }
    Ok(())
}

fn run(args: &Args) -> Result<()> {
    if args.syn.len() > MAX_SYN || args.raw.len() > MAX_RAW {
        bail!("at most {MAX_SYN} --syn and {MAX_RAW} --raw expressions");
    }
    let mut mos = Mos::attach(&AttachOptions {
        control: args.control.clone(),
        name: "filter-probe".into(),
        packets: !args.raw.is_empty(),
        wait: args.wait,
        ..AttachOptions::default()
    })
    .with_context(|| format!("attaching at {}", args.control.display()))?;
    let out = Rc::new(RefCell::new(Out {
        w: BufWriter::with_capacity(1 << 16, std::io::stdout()),
        seen: HashSet::new(),
        conns: 0,
        raw: 0,
        error: None,
    }));
    for (raw, exprs) in [(false, &args.syn), (true, &args.raw)] {
        if raw && exprs.is_empty() {
            continue;
        }
        let sock = if raw {
            mos.raw_socket()?
        } else {
            mos.socket()?
        };
        register(&mut mos, sock, raw, 0, &out)?;
        for (i, expr) in exprs.iter().enumerate() {
            if let Some(sock) = filtered_socket(&mut mos, args, raw, i + 1, expr, &out)? {
                register(&mut mos, sock, raw, i as u32 + 1, &out)?;
            }
        }
    }
    let end = mos.run()?;
    let mut o = out.borrow_mut();
    if let Some(e) = o.error.take() {
        bail!("{e}");
    }
    if end != RunEnd::Done {
        bail!("the run ended with {end:?}, not Done");
    }
    let (conns, raw) = (o.conns, o.raw);
    o.line(format_args!("done conns={conns} raw={raw}\n"));
    if let Some(e) = o.error.take() {
        bail!("{e}");
    }
    o.w.flush().context("writing stdout")?;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("filter-probe: {e:#}");
            ExitCode::FAILURE
        }
    }
}
