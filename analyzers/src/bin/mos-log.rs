//! `mos-log`: Zeek-style JSON-lines logs of the connections a sensor follows (`conn`), and of
//! the HTTP, TLS and SSH in their streams (`http`, `tls`, `ssh`, `weird`), read through the
//! monitoring API.

use anyhow::Result;
use mos_analyzers::log::{register, sockets, Logger, Logs, LOG_NAMES};
use mos_analyzers::output::OutputArgs;
use mos_analyzers::{exit_status, parse_args, stop_on_signals, AttachArgs, Outcome};
use mos_client::{Errno, RunEnd};
use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

/// Writes one JSON object per line, with Zeek's field names: conn (one record per connection
/// when it ends: bytes and packets each way, Zeek's conn_state and history, both sides' final
/// TCP states, retransmitted and conflicting bytes, why it ended), http (one per
/// request/response pair), tls (one per handshake: version, cipher, SNI, ALPN, JA3, JA3S,
/// JA4, the certificate chain up to TLS 1.2), ssh (banners and HASSH fingerprints) and weird
/// (what a parser could not make sense of). The protocol is found from each connection's
/// first bytes, not its ports; TLS that starts later (after STARTTLS, FTP's AUTH TLS, LDAP's
/// StartTLS, MySQL's SSL request) is found by its hellos within the first 64 KiB of each
/// direction. Every record starts with ts (capture time, seconds), uid (the connection's id,
/// the same in every analyzer attached to the sensor) and id.orig_h, id.orig_p, id.resp_h,
/// id.resp_p (client and server; when the sensor guessed the roles of a connection picked up
/// midstream and its first bytes show them the other way round, the http, tls and weird
/// records name the real client as orig, while its conn record keeps the sensor's roles
/// with roles_guessed true). The records go to stdout, or to
/// DIR/LOG.jsonl with --out, and to Redis Streams or Kafka with --redis or --kafka. Exits 0
/// when the sensor's input ends, 1 on an error, 130 when stopped by SIGINT or SIGTERM.
/// Stopped, or without its sensor (it went away or detached this analyzer: exit 1), it still
/// writes the connections open then, as far as they got (their conn records have no
/// end_reason). At the end, a summary on stderr: connections, records per log, weirds, events
/// taken and dropped by the sensor, records the output dropped.
#[derive(clap::Parser, Debug)]
#[command(name = "mos-log", version = shm_layout::version!())]
struct Args {
    /// The logs to write, comma-separated, from conn, http, tls, ssh, weird. Without http,
    /// tls, ssh and weird no stream is read (conn records then have no service); weird alone
    /// runs every parser and writes only their weirds.
    #[arg(long, value_name = "LIST", default_value = "conn,http,tls,ssh,weird",
          value_parser = mos_analyzers::log::parse_logs)]
    logs: Logs,
    #[command(flatten)]
    attach: AttachArgs,
    /// The name the sensor shows for this analyzer (its log, mos-ctl status).
    #[arg(long, value_name = "NAME", default_value = "mos-log")]
    name: String,
    #[command(flatten)]
    output: OutputArgs,
}

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
