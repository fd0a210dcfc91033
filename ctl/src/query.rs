//! One status request to the sensor over its control socket, bounded in time from the connect
//! to the answer, so that a sensor that never accepts or never answers cannot hang `mos-ctl`.

use anyhow::{anyhow, bail, Context, Result};
use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::sockopt::{set_socket_timeout, Timeout};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
use shm_layout::control::{decode_limited, encode, ClientMsg, SensorMsg, MAX_STATUS_MESSAGE};
use shm_layout::status::{id_name, StatusReport};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The default of `--timeout`.
pub const DEFAULT_TIMEOUT: &str = "5";
/// The longest `--timeout`: a day.
pub const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// `--timeout SECONDS`: a positive, finite number of seconds, at most a day.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= MAX_TIMEOUT_SECS) {
        return Err(format!(
            "must be more than 0 and at most {MAX_TIMEOUT_SECS} seconds (a day), not {s}"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// What is left of the time until `deadline`, or `None` once it has passed.
fn left(deadline: Instant) -> Option<Duration> {
    let l = deadline.saturating_duration_since(Instant::now());
    (!l.is_zero()).then_some(l)
}

/// Asks the sensor at `path` for its status, giving up after `timeout` (the connect, the
/// request and the answer together).
pub fn query(path: &Path, timeout: Duration) -> Result<StatusReport> {
    let deadline = Instant::now() + timeout;
    let p = path.display();
    let secs = timeout.as_secs_f64();
    let addr = SocketAddrUnix::new(path).with_context(|| format!("bad control socket path {p}"))?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .context("cannot create a socket")?;
    // A Unix connect waits while the listener's queue of pending connections is full, and a
    // send while the peer's queue of messages is: the send timeout bounds both waits (they
    // then fail with EAGAIN).
    set_socket_timeout(&fd, Timeout::Send, Some(timeout))
        .context("cannot set a timeout on the socket")?;
    match rustix::net::connect(&fd, &addr) {
        Ok(()) => {}
        Err(Errno::AGAIN | Errno::INTR) => bail!(
            "the sensor at {p} did not take the connection within {secs} s (its queue of pending connections is full: is it stuck?); --timeout sets how long to wait"
        ),
        Err(e) => return Err(connect_error(path, e)),
    }
    let Some(rest) = left(deadline) else {
        bail!("the sensor at {p} did not answer within {secs} s (--timeout)");
    };
    set_socket_timeout(&fd, Timeout::Send, Some(rest))
        .context("cannot set a timeout on the socket")?;
    match rustix::net::send(&fd, &encode(&ClientMsg::Status), SendFlags::NOSIGNAL) {
        Ok(_) => {}
        Err(Errno::AGAIN | Errno::INTR) => {
            bail!("the sensor at {p} did not take the request within {secs} s (--timeout)")
        }
        Err(e) => return Err(anyhow!("cannot send to the sensor at {p}: {e}")),
    }
    loop {
        let Some(rest) = left(deadline) else {
            bail!("the sensor at {p} did not answer within {secs} s (--timeout)");
        };
        let wait = rustix::time::Timespec {
            tv_sec: rest.as_secs() as i64,
            tv_nsec: i64::from(rest.subsec_nanos()),
        };
        let mut pfd = [PollFd::new(&fd, PollFlags::IN)];
        match rustix::event::poll(&mut pfd, Some(&wait)) {
            Ok(0) | Err(Errno::INTR) => continue,
            Ok(_) => break,
            Err(e) => return Err(anyhow!("waiting for the sensor at {p}: {e}")),
        }
    }
    let mut buf = vec![0u8; MAX_STATUS_MESSAGE];
    let (got, len) = rustix::net::recv(&fd, &mut buf[..], RecvFlags::TRUNC | RecvFlags::DONTWAIT)
        .with_context(|| format!("cannot read the sensor's answer at {p}"))?;
    if len == 0 {
        bail!("the sensor at {p} closed the connection without answering");
    }
    if len > got {
        bail!("the sensor's answer of {len} bytes is larger than this mos-ctl reads");
    }
    match decode_limited::<SensorMsg>(&buf[..got], MAX_STATUS_MESSAGE)
        .map_err(|e| anyhow!("from the sensor: {e}"))?
    {
        SensorMsg::Status(report) => Ok(report.from_the_wire()),
        SensorMsg::Refused { errno, reason } if errno == "EACCES" => bail!(
            "permission denied: the sensor at {p} does not answer uid {}: {reason}",
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
        Errno::NOENT | Errno::CONNREFUSED | Errno::NOTDIR => anyhow!(
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
            anyhow!(
                "permission denied on {p} (uid {}): {hint}",
                rustix::process::getuid().as_raw()
            )
        }
        e => anyhow!("cannot connect to the sensor at {p}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{bind, listen, socket_with};

    #[test]
    fn timeouts_are_positive_finite_and_at_most_a_day() {
        assert_eq!(parse_timeout("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_timeout("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_timeout("86400"), Ok(Duration::from_secs(86_400)));
        for bad in [
            "0", "-1", "86400.5", "inf", "nan", "NaN", "1e400", "", "5s", "forever",
        ] {
            let e = parse_timeout(bad).expect_err(bad);
            assert!(!e.contains('\n'), "{e}");
        }
        assert!(parse_timeout("0").unwrap_err().contains("more than 0"));
        assert!(parse_timeout("5s")
            .unwrap_err()
            .contains("not a number of seconds"));
    }

    /// A bound, listening socket that nobody accepts on: with room in its queue the connect
    /// succeeds and the answer never comes; with its queue full the connect itself waits.
    #[test]
    fn a_socket_nobody_accepts_on_times_out_at_the_connect_and_at_the_answer() {
        let dir = std::env::temp_dir().join(format!("mos-ctl-query-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.sock");
        let _ = std::fs::remove_file(&path);
        let listener = socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        bind(&listener, &SocketAddrUnix::new(&path).unwrap()).unwrap();
        listen(&listener, 0).unwrap();
        let timeout = Duration::from_millis(300);
        // The query runs on a thread of its own so that a hang fails the test instead of
        // hanging it: it must end within the timeout and a second.
        let ask = |path: &Path| {
            let (tx, rx) = std::sync::mpsc::channel();
            let path = path.to_path_buf();
            std::thread::spawn(move || tx.send(query(&path, timeout).map(|_| ())));
            rx.recv_timeout(timeout + Duration::from_secs(1))
                .expect("mos-ctl's query hung")
                .unwrap_err()
                .to_string()
        };
        let e = ask(&path);
        assert!(e.contains("did not answer within 0.3 s"), "{e}");
        // Fill the queue with connections of our own.
        let mut held = Vec::new();
        for _ in 0..64 {
            let s = socket_with(
                AddressFamily::UNIX,
                SocketType::SEQPACKET,
                SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
                None,
            )
            .unwrap();
            if rustix::net::connect(&s, &SocketAddrUnix::new(&path).unwrap()).is_err() {
                break;
            }
            held.push(s);
        }
        let e = ask(&path);
        assert!(
            e.contains("did not take the connection within 0.3 s"),
            "{e}"
        );
        drop(held);
        drop(listener);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
