//! `mos-log`: Zeek-style JSON-lines logs of the connections a sensor follows (`conn`), and of
//! the HTTP, TLS and SSH in their streams (`http`, `tls`, `ssh`, `weird`), read through the
//! monitoring API.

use anyhow::Result;
use mos_analyzers::cli::log::Args;
use mos_analyzers::log::{register, sockets, Logger, LOG_NAMES};
use mos_analyzers::{exit_status, parse_args, stop_on_signals, Outcome};
use mos_client::{Errno, RunEnd};
use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

fn run(args: &Args) -> Result<Outcome> {
    let mut mos = args.attach.attach(&args.name, false)?;
    let output = args.output.open(&mos, "mos-log")?;
    let interrupt = stop_on_signals(&mos)?;
    let (conn_sock, data_sock) = sockets(&mut mos, args.logs)?;
    for sock in [conn_sock, data_sock].into_iter().flatten() {
        args.attach.bind_filter(&mut mos, sock)?;
    }
    let state = Rc::new(RefCell::new(Logger::new(
        args.logs, output, conn_sock, data_sock,
    )));
    register(&mut mos, &state, Duration::from_secs(1))?;
    let end = mos.run();
    // Without its sensor (it went away, or detached this analyzer) the logger still writes
    // what it has: the shared memory stays mapped, so the connections' slots and rings can
    // still be read.
    let lost = match end {
        Ok(end) => Ok(end),
        Err(e) if e.errno() == Errno::ENOTCONN => Err(e),
        Err(e) => return Err(e.into()),
    };
    let still_open = mos.with_ctx(|ctx| state.borrow_mut().close_open(ctx));
    let c = mos.counters();
    drop(mos);
    let mut l = Rc::try_unwrap(state)
        .map_err(|_| anyhow::anyhow!("the callbacks outlived the attachment"))?
        .into_inner();
    l.finish()?;
    let t = &l.totals;
    let records: Vec<String> = LOG_NAMES
        .iter()
        .filter_map(|&n| t.records.get(n).map(|k| format!("{n} {k}")))
        .collect();
    // Connections written without their end besides those still open at the end: their
    // slot moved on before this analyzer saw the end (live mode, events dropped).
    let vanished = t.cut_short.saturating_sub(still_open as u64);
    let vanished = if vanished > 0 {
        format!(", {vanished} written without their end (their slot was reused first)")
    } else {
        String::new()
    };
    let summary = format!(
        "{} connections ({} still open, written as far as they got{vanished}); records: {}; {} weirds; {} events, {} dropped by the sensor; {} records dropped by the output",
        t.connections,
        still_open,
        records.join(", "),
        t.weirds,
        c.events,
        c.events_dropped,
        l.output_dropped(),
    );
    if let Err(e) = lost {
        anyhow::bail!("{e}; {summary}");
    }
    eprintln!("mos-log: {summary}");
    if matches!(lost, Ok(RunEnd::Stopped)) || interrupt.arrived() {
        eprintln!("mos-log: stopped by a signal");
        return Ok(Outcome::Interrupted);
    }
    Ok(Outcome::Finished)
}

fn main() -> ExitCode {
    match parse_args::<Args>("mos-log") {
        Ok(args) => exit_status("mos-log", run(&args)),
        Err(code) => code,
    }
}
