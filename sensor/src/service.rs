//! Running as a service: readiness and state notifications to the service manager (the
//! `sd_notify` datagram protocol, spoken directly), log lines with syslog levels when standard
//! error goes to the journal, and the signals that stop or reload the sensor.
//!
//! Nothing here is on the packet path: it runs at start, at stop, on a signal, and when a line
//! is logged.

use std::fmt;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

/// How serious a log line is (the syslog levels the journal stores).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// The sensor cannot go on, or something it was asked to do failed.
    Error = 3,
    /// Something is wrong or lost, and the sensor goes on.
    Warning = 4,
    /// A normal but significant change: start, stop, reload, an analyzer attached or left.
    Notice = 5,
    /// What the sensor is doing: progress and figures.
    Info = 6,
}

/// 0: not decided yet; 1: plain lines; 2: journal lines with a level prefix.
static JOURNAL: AtomicU8 = AtomicU8::new(0);

/// Whether standard error is the journal's stream, as systemd says in `JOURNAL_STREAM`
/// (`DEVICE:INODE` of the stream it connected; it is only ours if standard error is still that
/// file, not a redirection made after the service started).
pub fn stderr_is_journal() -> bool {
    match JOURNAL.load(Ordering::Relaxed) {
        1 => return false,
        2 => return true,
        _ => {}
    }
    let yes = std::env::var("JOURNAL_STREAM")
        .ok()
        .and_then(|v| {
            let (dev, ino) = v.split_once(':')?;
            let st = rustix::fs::fstat(std::io::stderr().as_fd()).ok()?;
            Some(dev.parse::<u64>().ok()? == st.st_dev && ino.parse::<u64>().ok()? == st.st_ino)
        })
        .unwrap_or(false);
    JOURNAL.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
    yes
}

/// Writes one log line on standard error: `mos-sensor: TEXT` on a terminal or a file, and
/// `<LEVEL>TEXT` when standard error is the journal (which stores the level and already names
/// the program). A text of several lines gives several lines, each with the prefix.
pub fn log(level: Level, text: fmt::Arguments<'_>) {
    let text = text.to_string();
    let journal = stderr_is_journal();
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.lines() {
        if journal {
            out.push_str(&format!("<{}>", level as u8));
        } else {
            out.push_str("mos-sensor: ");
        }
        out.push_str(line);
        out.push('\n');
    }
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
}

/// Logs a line at [`Level::Error`] (`format!` syntax).
#[macro_export]
macro_rules! log_error {
    ($($t:tt)*) => { $crate::service::log($crate::service::Level::Error, format_args!($($t)*)) };
}

/// Logs a line at [`Level::Warning`] (`format!` syntax).
#[macro_export]
macro_rules! log_warn {
    ($($t:tt)*) => { $crate::service::log($crate::service::Level::Warning, format_args!($($t)*)) };
}

/// Logs a line at [`Level::Notice`] (`format!` syntax).
#[macro_export]
macro_rules! log_notice {
    ($($t:tt)*) => { $crate::service::log($crate::service::Level::Notice, format_args!($($t)*)) };
}

/// Logs a line at [`Level::Info`] (`format!` syntax).
#[macro_export]
macro_rules! log_info {
    ($($t:tt)*) => { $crate::service::log($crate::service::Level::Info, format_args!($($t)*)) };
}

/// Sends `state` (newline-separated `KEY=VALUE` assignments such as `READY=1`,
/// `STOPPING=1`, `STATUS=...`) to the service manager at `$NOTIFY_SOCKET`. Returns whether it
/// was sent: `false` when the sensor was not started by a manager that listens (no variable),
/// or when sending failed (logged once as a warning, since a manager waiting for `READY=1`
/// would otherwise time out without a word).
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    match send_notification(&path, state) {
        Ok(()) => true,
        Err(e) => {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                log_warn!(
                    "cannot notify the service manager at {}: {e}",
                    path.to_string_lossy()
                );
            }
            false
        }
    }
}

fn send_notification(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use rustix::net::{AddressFamily, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_bytes();
    // `@name` is a socket in the abstract namespace.
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddrUnix::new_abstract_name(name)?,
        None => SocketAddrUnix::new(path)?,
    };
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let sent = rustix::net::sendto(&fd, state.as_bytes(), SendFlags::NOSIGNAL, &addr)?;
    if sent != state.len() {
        return Err(std::io::Error::other("the notification was cut short"));
    }
    Ok(())
}

/// When this process started, as first asked (`main` asks first thing): the start the status
/// report's uptime counts from.
pub fn process_started() -> (std::time::Instant, std::time::SystemTime) {
    static STARTED: std::sync::OnceLock<(std::time::Instant, std::time::SystemTime)> =
        std::sync::OnceLock::new();
    *STARTED.get_or_init(|| (std::time::Instant::now(), std::time::SystemTime::now()))
}

/// `CLOCK_MONOTONIC` in ns (the clock analyzers write their heartbeat with).
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// `MONOTONIC_USEC=...`: the monotonic clock in µs, which a `RELOADING=1` notification
/// carries.
pub fn monotonic_usec() -> u64 {
    monotonic_ns() / 1000
}

/// What the signal thread does on SIGHUP.
pub type ReloadFn = Box<dyn FnMut() + Send>;

/// Handles SIGINT, SIGTERM and SIGHUP on a thread of their own. The first SIGINT or SIGTERM
/// sets `stop` (the input loops then end as if the input ended: every connection ends,
/// analyzers are told, the shared memory and the control socket go) and tells the service
/// manager the sensor is stopping; a second one ends the process at once with status 130.
/// SIGHUP calls `reload`.
pub fn handle_signals(stop: Arc<AtomicBool>, mut reload: ReloadFn) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("mos-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let name = match sig {
                    SIGINT => "SIGINT",
                    SIGTERM => "SIGTERM",
                    _ => "SIGHUP",
                };
                if sig == SIGHUP {
                    reload();
                    continue;
                }
                if stop.swap(true, Ordering::Relaxed) {
                    log_warn!("{name} again: exiting at once");
                    std::process::exit(130);
                }
                notify("STOPPING=1\nSTATUS=stopping");
                log_notice!(
                    "{name}: stopping (every connection ends, analyzers are told; a second signal exits at once)"
                );
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{AddressFamily, RecvFlags, SocketAddrUnix, SocketFlags, SocketType};

    #[test]
    fn a_notification_reaches_a_datagram_socket_by_path_and_in_the_abstract_namespace() {
        let dir = std::env::temp_dir().join(format!("mos-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listen = |addr: &SocketAddrUnix| {
            let fd = rustix::net::socket_with(
                AddressFamily::UNIX,
                SocketType::DGRAM,
                SocketFlags::CLOEXEC,
                None,
            )
            .unwrap();
            rustix::net::bind(&fd, addr).unwrap();
            fd
        };
        let by_path = listen(&SocketAddrUnix::new(&path).unwrap());
        let name = format!("mos-notify-test-{}", std::process::id());
        let abstract_ = listen(&SocketAddrUnix::new_abstract_name(name.as_bytes()).unwrap());
        send_notification(path.as_os_str(), "READY=1\nSTATUS=up").unwrap();
        send_notification(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = rustix::net::recv(&by_path, &mut buf[..], RecvFlags::DONTWAIT).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=up");
        let (n, _) = rustix::net::recv(&abstract_, &mut buf[..], RecvFlags::DONTWAIT).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        // Nobody listening: an error, not a panic.
        assert!(send_notification(dir.join("nobody.sock").as_os_str(), "READY=1").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_usec();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(monotonic_usec() >= a + 1000);
    }
}
