//! `mos-ctl`: asks a running `mos-sensor` for its state over the control socket and prints it
//! as text, JSON or Prometheus metrics.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
use shm_layout::control::{
    decode_limited, encode, ClientMsg, SensorMsg, DEFAULT_PATH, MAX_STATUS_MESSAGE,
};
use shm_layout::status::{id_name, render_prometheus, render_text, StatusReport};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Shows a running mos-sensor's state: its input, counters and rates, drops by cause, flows,
/// memory, and every attached analyzer with how far behind it is.
///
/// mos-ctl asks the sensor over its control socket (a status request, which attaches nothing
/// and never holds the sensor up); the sensor answers only users it lets attach analyzers
/// (root, its own user, --allow-user and --allow-group). Exits with 1 on any error.
#[derive(Debug, Parser)]
#[command(name = "mos-ctl", version, about, long_about)]
struct Cli {
    /// The sensor's control socket.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_PATH)]
    control: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prints the sensor's state: a few lines about the sensor, then one line per analyzer
    /// (id, name, pid, user, subscription, events delivered, dropped and not yet read, and
    /// the age of its heartbeat).
    Status {
        /// Print the whole report as JSON instead (field names in docs/OPERATIONS.md).
        #[arg(long)]
        json: bool,
    },
    /// Prints the sensor's metrics in the Prometheus text format (0.0.4), as the sensor's
    /// --metrics-listen endpoint serves them.
    Metrics,
}

/// How long the sensor may take to answer.
const ANSWER_TIMEOUT_MS: i64 = 5000;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version go to stdout and succeed; usage errors fail with 1.
            let code = u8::from(e.use_stderr());
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mos-ctl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let report = query(&cli.control)?;
    let out = match cli.command {
        Command::Status { json: false } => render_text(&report),
        Command::Status { json: true } => {
            let mut s = serde_json::to_string_pretty(&report)?;
            s.push('\n');
            s
        }
        Command::Metrics => render_prometheus(&report),
    };
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")
}

/// Asks the sensor at `path` for its status.
fn query(path: &Path) -> Result<StatusReport> {
    let addr = SocketAddrUnix::new(path)
        .with_context(|| format!("bad control socket path {}", path.display()))?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .context("cannot create a socket")?;
    if let Err(e) = rustix::net::connect(&fd, &addr) {
        return Err(connect_error(path, e));
    }
    rustix::net::send(&fd, &encode(&ClientMsg::Status), SendFlags::NOSIGNAL)
        .with_context(|| format!("cannot send to the sensor at {}", path.display()))?;
    let mut pfd = [PollFd::new(&fd, PollFlags::IN)];
    let timeout = rustix::time::Timespec {
        tv_sec: ANSWER_TIMEOUT_MS / 1000,
        tv_nsec: 0,
    };
    let ready = rustix::event::poll(&mut pfd, Some(&timeout)).context("waiting for the sensor")?;
    if ready == 0 {
        bail!(
            "the sensor at {} did not answer in {} s",
            path.display(),
            ANSWER_TIMEOUT_MS / 1000
        );
    }
    let mut buf = vec![0u8; MAX_STATUS_MESSAGE];
    let (got, len) = rustix::net::recv(&fd, &mut buf[..], RecvFlags::TRUNC)
        .with_context(|| format!("cannot read the sensor's answer at {}", path.display()))?;
    if len == 0 {
        bail!(
            "the sensor at {} closed the connection without answering",
            path.display()
        );
    }
    if len > got {
        bail!("the sensor's answer of {len} bytes is larger than this mos-ctl reads");
    }
    match decode_limited::<SensorMsg>(&buf[..got], MAX_STATUS_MESSAGE)
        .map_err(|e| anyhow::anyhow!("from the sensor: {e}"))?
    {
        SensorMsg::Status(report) => Ok(*report),
        SensorMsg::Refused { errno, reason } if errno == "EACCES" => bail!(
            "permission denied: the sensor at {} does not answer uid {}: {reason}",
            path.display(),
            rustix::process::getuid().as_raw()
        ),
        SensorMsg::Refused { errno, reason } => {
            bail!("the sensor refused the request ({errno}): {reason}")
        }
        SensorMsg::Detached { reason } => bail!(
            "the sensor did not take the status request (a sensor older than ABI 1.3 does not know it): {reason}"
        ),
        other => bail!("unexpected answer from the sensor: {other:?}"),
    }
}

/// Why connecting failed, in words that say what to do.
fn connect_error(path: &Path, e: Errno) -> anyhow::Error {
    let p = path.display();
    match e {
        Errno::NOENT | Errno::CONNREFUSED | Errno::NOTDIR => anyhow::anyhow!(
            "no sensor listening at {p}: is mos-sensor running? (give its socket with --control PATH)"
        ),
        Errno::ACCESS | Errno::PERM => {
            let hint = match std::fs::metadata(path) {
                Ok(m) => {
                    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
                    let group = id_name(&groups, m.gid())
                        .map_or_else(|| format!("gid {}", m.gid()), |n| format!("{n:?} (gid {})", m.gid()));
                    format!(
                        "the socket (mode {:04o}) belongs to group {group}: join that group (and have the sensor allow it with --allow-group), or run as root",
                        m.mode() & 0o777
                    )
                }
                Err(_) => "a directory on the way to the socket is closed to this user; run as root or as a member of the sensor's --allow-group".to_string(),
            };
            anyhow::anyhow!(
                "permission denied on {p} (uid {}): {hint}",
                rustix::process::getuid().as_raw()
            )
        }
        e => anyhow::anyhow!("cannot connect to the sensor at {p}: {e}"),
    }
}
