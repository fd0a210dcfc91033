//! What the analyzers shipped with mos share: how they stop on a signal and how they exit,
//! the peek-driven stream dump ([`dump`]), reading streams as runs and holes ([`streams`]),
//! connection names ([`conn`]), protocol parsers ([`proto`]) and record outputs ([`output`]),
//! `mos-log`'s connections and logs ([`log`]), `mos-grep`'s search ([`grep`]) and
//! `mos-pcap`'s capture files ([`pcapout`]).

pub mod cli;
pub mod conn;
pub mod dump;
pub mod grep;
pub mod log;
pub mod output;
pub mod pcapout;
pub mod proto;
pub mod streams;

use mos_client::{AttachOptions, MonitorFilter, Mos, SockId, DEFAULT_CONTROL};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How a run ended, for the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The sensor's input ended and everything was handled: status 0.
    Finished,
    /// SIGINT or SIGTERM stopped the analyzer, which detached cleanly: status 130.
    Interrupted,
}

/// Set once SIGINT or SIGTERM arrived.
#[derive(Clone, Debug, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Whether a signal arrived.
    pub fn arrived(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Makes SIGINT and SIGTERM stop `mos`'s run loop (which then returns, and the analyzer
/// detaches when it drops its `Mos`).
pub fn stop_on_signals(mos: &Mos) -> anyhow::Result<Interrupt> {
    let stop = mos.stop_handle();
    let flag = Interrupt::default();
    let seen = flag.clone();
    ctrlc::set_handler(move || {
        seen.0.store(true, Ordering::Relaxed);
        stop.stop();
    })
    .map_err(|e| anyhow::anyhow!("cannot handle SIGINT/SIGTERM: {e}"))?;
    Ok(flag)
}

/// The command line, parsed. A value its parser refuses (a number out of its range) is an
/// error like any other: one line on stderr, after `prog: `, and status 1 (the `Err`). Other
/// usage errors, `--help` and `--version` are clap's own (usage, status 2 or 0) and exit here.
pub fn parse_args<A: clap::Parser>(prog: &str) -> Result<A, ExitCode> {
    A::try_parse().map_err(|e| {
        if e.kind() != clap::error::ErrorKind::ValueValidation {
            e.exit()
        }
        let text = e.to_string();
        let line = text.lines().next().unwrap_or_default();
        eprintln!("{prog}: {}", line.strip_prefix("error: ").unwrap_or(line));
        ExitCode::FAILURE
    })
}

/// The exit status of a run; an error is printed as one line on stderr, after `prog: `.
pub fn exit_status(prog: &str, r: anyhow::Result<Outcome>) -> ExitCode {
    match r {
        Ok(Outcome::Finished) => ExitCode::SUCCESS,
        Ok(Outcome::Interrupted) => ExitCode::from(130),
        Err(e) => {
            eprintln!("{prog}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--wait`: how long an analyzer keeps trying to attach while its sensor is not up yet, in
/// seconds from 0 (try once) to 3600.
pub fn attach_wait(s: &str) -> Result<std::time::Duration, String> {
    const MAX: f64 = 3600.0;
    let range = format!("between 0 and {MAX} seconds");
    let x: f64 = s
        .parse()
        .map_err(|_| format!("expected a number ({range})"))?;
    match std::time::Duration::try_from_secs_f64(x) {
        Ok(d) if x <= MAX => Ok(d),
        _ => Err(format!("must be {range}")),
    }
}

/// The options every analyzer shipped with mos takes to attach: `--control`, `--wait`,
/// `--filter` (flatten into the program's arguments with `#[command(flatten)]`).
#[derive(Clone, Debug, clap::Args)]
pub struct AttachArgs {
    /// The sensor's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL)]
    pub control: PathBuf,
    /// Seconds to keep trying to attach while no sensor listens at --control yet (0 to 3600;
    /// 0 tries once), so that the analyzer can be started with or before its sensor.
    #[arg(long, value_name = "SECS", default_value = "10", allow_hyphen_values = true,
          value_parser = attach_wait)]
    pub wait: std::time::Duration,
    /// Only the connections whose first packet (the SYN, or the first packet seen of a
    /// connection picked up midstream) matches this filter: a libpcap expression, tcpdump's
    /// syntax (for instance 'tcp port 80 and net 10.0.0.0/8'). The sensor runs it, so the
    /// others cost this analyzer nothing. Also taken from MOS_ANALYZER_FILTER (where a
    /// systemd unit's environment file can set it, spaces and all).
    #[arg(long, value_name = "EXPR", env = "MOS_ANALYZER_FILTER")]
    pub filter: Option<String>,
}

impl AttachArgs {
    /// Attaches to the sensor at `--control` (trying for `--wait`) under `name`; `packets`:
    /// whether the analyzer reads frames (the sensor then keeps its packet log).
    pub fn attach(&self, name: &str, packets: bool) -> mos_client::Result<Mos> {
        Mos::attach(&AttachOptions {
            control: self.control.clone(),
            name: name.into(),
            packets,
            wait: self.wait,
            ..AttachOptions::default()
        })
    }

    /// Binds `--filter`, if given, to monitor socket `sock` as its SYN filter.
    pub fn bind_filter(&self, mos: &mut Mos, sock: SockId) -> mos_client::Result<()> {
        if let Some(expr) = &self.filter {
            mos.bind_monitor_filter(
                sock,
                &MonitorFilter {
                    stream_syn_filter: Some(expr),
                    ..MonitorFilter::default()
                },
            )?;
        }
        Ok(())
    }
}
