//! `mos-dump`: every connection's two byte streams to files, and `flows.jsonl`, read from a
//! running sensor through the monitoring API. Writes what `mos-sensor --dump` writes.

use anyhow::Result;
use mos_analyzers::cli::dump::Args;
use mos_analyzers::dump::{register, PeekDump};
use mos_analyzers::{exit_status, parse_args, stop_on_signals, Outcome};
use mos_client::dump::DumpWriter;
use mos_client::{Errno, RunEnd};
use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

fn run(args: &Args) -> Result<Outcome> {
    let mut mos = args.attach.attach("mos-dump", false)?;
    let writer = DumpWriter::create(&args.out)?;
    let interrupt = stop_on_signals(&mos)?;
    let sock = mos.socket()?;
    args.attach.bind_filter(&mut mos, sock)?;
    let state = Rc::new(RefCell::new(PeekDump::new(sock, writer, Some("mos-dump"))));
    register(&mut mos, &state, Duration::ZERO)?;
    let end = mos.run();
    if let Some(e) = state.borrow_mut().error.take() {
        return Err(e.into());
    }
    // Without its sensor (it went away, or detached this analyzer) the dump still writes what
    // it has: the shared memory stays mapped, so what the connections' slots and rings hold
    // can still be read.
    let lost = match end {
        Ok(end) => Ok(end),
        Err(e) if e.errno() == Errno::ENOTCONN => Err(e),
        Err(e) => return Err(e.into()),
    };
    // Stopped by a signal or without a sensor: the connections still open are written as far
    // as they got, marked cut short.
    let still_open = mos.with_ctx(|ctx| state.borrow_mut().close_open(ctx))?;
    let c = mos.counters();
    // Dropping the attachment detaches and releases the callbacks' share of the state.
    drop(mos);
    let d = Rc::try_unwrap(state)
        .map_err(|_| anyhow::anyhow!("the callbacks outlived the attachment"))?
        .into_inner();
    let records = d.writer.records().len();
    let path = d.writer.finish()?;
    let end = match lost {
        Ok(end) => end,
        Err(e) => anyhow::bail!(
            "{e}; {records} connections written to {}, {still_open} of them cut short",
            path.display()
        ),
    };
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
            "mos-dump: stopped by a signal; {still_open} connections still open were written as far as they got (cut short)"
        );
        return Ok(Outcome::Interrupted);
    }
    Ok(Outcome::Finished)
}

fn main() -> ExitCode {
    match parse_args::<Args>("mos-dump") {
        Ok(args) => exit_status("mos-dump", run(&args)),
        Err(code) => code,
    }
}
