//! `mos-ctl`'s command line: its clap definition ([`Cli`]), shared by the binary and by the
//! generator of its manual page and shell completions (`mos-docgen`).

use crate::query::{parse_timeout, DEFAULT_TIMEOUT};
use clap::{Parser, Subcommand};
use shm_layout::control::DEFAULT_PATH;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Shows a running mos-sensor's state: its input, counters and rates, drops by cause, flows,
/// memory, and every attached analyzer with how far behind it is.
///
/// mos-ctl asks the sensor over its control socket (a status request, which attaches nothing
/// and never holds the sensor up); the sensor answers only users it lets attach analyzers
/// (root, its own user, --allow-user and --allow-group). A sensor that does not take the
/// connection or does not answer within --timeout is an error. Exits with 1 on any error (2
/// for `top` without a terminal).
#[derive(Debug, Parser)]
#[command(name = "mos-ctl", version = shm_layout::version!(), about, long_about)]
pub struct Cli {
    /// The sensor's control socket.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_PATH)]
    pub control: PathBuf,

    /// How long to wait for the sensor, from the connect to its answer: a positive number of
    /// seconds, at most 86400 (with metrics --listen and top, for each request to the sensor).
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        default_value = DEFAULT_TIMEOUT,
        value_parser = parse_timeout,
        allow_negative_numbers = true
    )]
    pub timeout: Duration,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prints the sensor's state: a few lines about the sensor, then one line per analyzer
    /// (id, name, pid, user, subscription, events delivered, dropped and not yet read, the
    /// records it says it dropped on its own side, such as a broker that was down, and the
    /// age of its heartbeat).
    Status {
        /// Print the whole report as JSON instead (field names in docs/OPERATIONS.md).
        #[arg(long)]
        json: bool,
    },
    /// Prints the sensor's metrics in the Prometheus text format (0.0.4), or with --listen
    /// serves them over HTTP.
    Metrics {
        /// Serve the metrics over HTTP at this address (IP:PORT, such as 127.0.0.1:9477; an
        /// IPv6 address goes in brackets) instead of printing them, until stopped: GET
        /// /metrics answers with the sensor's metrics, asked at most once a second however
        /// many scrapes come, or with 503 and the reason while the sensor cannot be asked;
        /// other paths get 404. Each connection must send its request within 5 s. Anyone who
        /// can reach the address can read the metrics: keep it on loopback or a management
        /// network.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Shows the sensor live in the terminal until q: packets/s and bit/s over the last minutes
    /// as sparklines, flows, drops by cause, and one row per analyzer with its lag as a bar.
    ///
    /// Every --interval mos-ctl sends the sensor the same status request as `mos-ctl status`
    /// and draws the answer: rates come from the change of the sensor's counters between two
    /// answers (the sensor copies its counters about once a second, so an interval without a
    /// copy shows the last rate until the next one and then shares its increase). The
    /// sparklines show one bar per interval, as many as the terminal is wide, with the last,
    /// mean and peak rate; drops by cause show each total and its rate, in red while it grows;
    /// each analyzer's row shows its name, pid, user, events consumed (total and per second),
    /// events dropped for a full ring, records it says it dropped itself, its heartbeat's age
    /// and its lag (events published to it and not read yet), with a bar on a logarithmic
    /// scale: a seventh of the bar per tenfold, full at ten million.
    ///
    /// A sensor that does not answer the first request is an error (status 1, as for status).
    /// One that stops answering later (stopped, restarted, stuck past --timeout) is said so on
    /// a red line with the reason, its last report staying on screen, and asked again every
    /// interval; a restarted sensor is followed from its new counters.
    ///
    /// q, Esc or Ctrl-C quit with status 0; SIGINT, SIGTERM or SIGHUP quit with 128 plus the
    /// signal's number; the terminal is restored either way. Standard output must be a
    /// terminal: otherwise mos-ctl says so and exits with 2 (for text, use status).
    Top {
        /// Seconds between two requests to the sensor (and two refreshes), from 0.2 to 3600.
        #[arg(
            long,
            value_name = "SECONDS",
            default_value = crate::top::DEFAULT_INTERVAL,
            value_parser = crate::top::parse_interval,
            allow_negative_numbers = true
        )]
        interval: Duration,
    },
}
