//! `mos-flowstat`: the live connections a sensor follows, with both endpoints' emulated TCP
//! states, in the manner of mOS's `midstat` sample.

use anyhow::Result;
use mos_analyzers::cli::flowstat::Args;
use mos_analyzers::{exit_status, parse_args, stop_on_signals, Outcome};
use mos_client::{
    Ctx, EndReason, Errno, Event, EventKind, EventMask, Filter, FlowId, Side, TcpState,
};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
struct Conn {
    client: SocketAddr,
    server: SocketAddr,
    states: [Option<TcpState>; 2],
}

#[derive(Debug, Default)]
struct Table {
    live: BTreeMap<FlowId, Conn>,
    seen: u64,
    ended: BTreeMap<EndReason, u64>,
}

impl Table {
    /// The connection's entry, read from its slot the first time it is met.
    fn entry(&mut self, ctx: &Ctx<'_>, flow: FlowId) -> Option<&mut Conn> {
        if !self.live.contains_key(&flow) {
            let info = ctx.flow_info(flow).ok()?;
            self.seen += 1;
            self.live.insert(
                flow,
                Conn {
                    client: info.client,
                    server: info.server,
                    states: [info.side(Side::Cli).state, info.side(Side::Svr).state],
                },
            );
        }
        self.live.get_mut(&flow)
    }

    fn on_event(&mut self, ctx: &Ctx<'_>, ev: &Event) {
        let Some(flow) = ev.flow else { return };
        match ev.kind {
            EventKind::ConnStart => {
                self.entry(ctx, flow);
            }
            EventKind::StateChange { new, .. } => {
                if let (Some(side), Some(c)) = (ev.side, self.entry(ctx, flow)) {
                    c.states[side.index()] = Some(new);
                }
            }
            // CONN_END comes for both sides; the first one counts.
            EventKind::ConnEnd { reason } if self.live.remove(&flow).is_some() => {
                *self.ended.entry(reason).or_default() += 1;
            }
            _ => {}
        }
    }

    fn render(&self, elapsed: Duration) -> String {
        let ended: u64 = self.ended.values().sum();
        let mut out = format!(
            "{:.1} s: {} live connections ({} seen, {} ended)\n",
            elapsed.as_secs_f64(),
            self.live.len(),
            self.seen,
            ended
        );
        let _ = writeln!(
            out,
            "{:<6} {:<47} {:<16} {:<47} {:<16}",
            "worker", "client", "state", "server", "state"
        );
        let state = |s: Option<TcpState>| s.map_or("?", TcpState::name);
        for (flow, c) in &self.live {
            let _ = writeln!(
                out,
                "{:<6} {:<47} {:<16} {:<47} {:<16}",
                flow.worker,
                c.client.to_string(),
                state(c.states[0]),
                c.server.to_string(),
                state(c.states[1])
            );
        }
        out
    }

    fn summary(&self) -> String {
        let ended: u64 = self.ended.values().sum();
        let reasons: Vec<String> = self
            .ended
            .iter()
            .map(|(r, n)| format!("{n} {}", r.name()))
            .collect();
        let by = if reasons.is_empty() {
            String::new()
        } else {
            format!(": {}", reasons.join(", "))
        };
        format!(
            "mos-flowstat: {} connections seen, {ended} ended{by}; {} still open",
            self.seen,
            self.live.len()
        )
    }
}

/// Prints the table every `interval` until `done` is set.
fn printer(table: Arc<Mutex<Table>>, interval: Duration, done: Arc<AtomicBool>) {
    let tty = std::io::stdout().is_terminal();
    let start = Instant::now();
    let mut next = start + interval;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20).min(interval));
        if Instant::now() < next {
            continue;
        }
        next += interval;
        let text = table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .render(start.elapsed());
        let mut out = std::io::stdout().lock();
        // On a terminal the table is redrawn in place; in a file or pipe each refresh is a
        // block of its own.
        let r = if tty {
            write!(out, "\x1b[H\x1b[2J{text}")
        } else {
            writeln!(out, "{text}")
        };
        if r.and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

fn run(args: &Args) -> Result<Outcome> {
    let mut mos = args.attach.attach("mos-flowstat", false)?;
    // A signal ends the run loop like the end of input: the last table and the summary are
    // printed either way.
    let _interrupt = stop_on_signals(&mos)?;
    let start = Instant::now();
    let sock = mos.socket()?;
    args.attach.bind_filter(&mut mos, sock)?;
    let table = Arc::new(Mutex::new(Table::default()));
    let events = EventMask::CONN_START | EventMask::TCP_STATE_CHANGE | EventMask::CONN_END;
    {
        let table = table.clone();
        let filter = Filter {
            events,
            hook: None,
            side: None,
        };
        mos.register_filtered(sock, filter, move |ctx, ev| {
            table
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .on_event(ctx, ev);
        })?;
    }
    let done = Arc::new(AtomicBool::new(false));
    let shown = {
        let (table, done) = (table.clone(), done.clone());
        let interval = Duration::from_secs_f64(args.interval);
        std::thread::spawn(move || printer(table, interval, done))
    };
    let end = mos.run();
    done.store(true, Ordering::Relaxed);
    let _ = shown.join();
    // Without its sensor (it went away, or detached this analyzer) the last table and the
    // summary are still given, the summary in the error's line.
    let lost = match end {
        Ok(_) => None,
        Err(e) if e.errno() == Errno::ENOTCONN => Some(e),
        Err(e) => return Err(e.into()),
    };
    drop(mos);
    let table = table.lock().unwrap_or_else(|e| e.into_inner());
    let text = table.render(start.elapsed());
    if std::io::stdout().is_terminal() {
        print!("\x1b[H\x1b[2J{text}");
    } else {
        println!("{text}");
    }
    let summary = table.summary();
    if let Some(e) = lost {
        let summary = summary.strip_prefix("mos-flowstat: ").unwrap_or(&summary);
        anyhow::bail!("{e}; {summary}");
    }
    eprintln!("{summary}");
    Ok(Outcome::Finished)
}

fn main() -> ExitCode {
    match parse_args::<Args>("mos-flowstat") {
        Ok(args) => exit_status("mos-flowstat", run(&args)),
        Err(code) => code,
    }
}
