//! The control socket: where analyzers attach, subscribe and detach.
//!
//! A Unix `SOCK_SEQPACKET` socket (one bincode message per packet), created mode 0660. At
//! attach the sensor reads the peer's credentials from the socket (`SO_PEERCRED`) and checks
//! them against the allowed users and groups; an allowed analyzer gets three descriptors: the
//! main region and its own event rings, both read-only, and its page, writable. A closed socket
//! detaches its analyzer. One thread serves the socket; it tells the workers about analyzers
//! through channels, so the packet path never takes a lock.
//!
//! Everything a peer sends is hostile input: messages are bounded in size and in rate, names
//! are cut and escaped before they reach a log or a report, connections that have not said
//! hello are bounded in number ([`Limits::max_pending`]) and in time
//! ([`Limits::hello_timeout`]), and running out of descriptors pauses accepting instead of
//! spinning.
//!
//! The same thread answers `Status` requests (`mos-ctl`) from an allowed peer with a
//! [`shm_layout::status::StatusReport`] (built in `report.rs`); `mos-ctl metrics` renders that
//! report for Prometheus, so the sensor itself opens no TCP port.

mod report;

pub use report::SensorInfo;

use crate::publish::{create_analyzer, AnalyzerRegions, Attached, ToControl, ToWorker};
use anyhow::{bail, Context, Result};
use rustix::event::{PollFd, PollFlags};
use rustix::net::{
    AddressFamily, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};
use shm_layout::control::{
    decode, encode, printable, ClientMsg, SensorMsg, Subscription, MAX_MESSAGE, MAX_NAME_CHARS,
};
use shm_layout::layout::ABI_MAJOR;
use shm_layout::layout::{features, Header};
use shm_layout::plan::PAGE_LEN;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The default control socket.
pub const DEFAULT_PATH: &str = shm_layout::control::DEFAULT_PATH;

/// Who may attach.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowed {
    /// User ids allowed (root always is).
    pub uids: Vec<u32>,
    /// Group ids whose members are allowed (primary or supplementary group).
    pub gids: Vec<u32>,
}

impl Allowed {
    /// Whether a peer with these credentials (and supplementary groups) may attach.
    pub fn permits(&self, uid: u32, gid: u32, groups: &[u32]) -> bool {
        uid == 0
            || self.uids.contains(&uid)
            || self.gids.contains(&gid)
            || groups.iter().any(|g| self.gids.contains(g))
    }
}

/// Bounds on the peers of the control socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most connections that have not said hello (nor asked for the status) yet.
    pub max_pending: usize,
    /// A connection that has not said hello within this is closed.
    pub hello_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pending: 64,
            hello_timeout: Duration::from_secs(2),
        }
    }
}

/// Control messages one peer may send within one second. An analyzer sends a handful (hello,
/// a subscription per change, ready); a peer past this is flooding, and is closed.
pub const MAX_MESSAGES_PER_SECOND: u32 = 4096;

/// How long accepting pauses when the process is out of descriptors: the listener stays
/// readable while connections wait, so accepting at once again would only spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Raises the soft limit on open files to the hard limit; returns the new soft limit.
pub fn raise_open_files_limit() -> std::io::Result<Option<u64>> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let l = getrlimit(Resource::Nofile);
    if l.current != l.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: l.maximum,
                maximum: l.maximum,
            },
        )?;
    }
    Ok(l.maximum)
}

/// What the control server needs.
#[derive(Debug)]
pub struct ControlConfig {
    /// The socket's path.
    pub path: PathBuf,
    /// Who may attach (a reload may change it while the server runs).
    pub allowed: Arc<Mutex<Allowed>>,
    /// A read-only descriptor of the main region.
    pub main_ro: OwnedFd,
    /// Bytes of the main region.
    pub main_len: u64,
    /// The sensor's epoch.
    pub epoch: u64,
    /// Workers.
    pub nworkers: usize,
    /// Records per event ring.
    pub event_capacity: u64,
    /// Most analyzers attached at once.
    pub max_analyzers: usize,
    /// Bounds on connections.
    pub limits: Limits,
    /// The main region's header, whose counters status reports add up.
    pub header: &'static Header,
    /// What status reports say about the sensor besides its counters.
    pub info: SensorInfo,
}

/// The running control server; dropping it stops the thread and removes the socket.
#[derive(Debug)]
pub struct ControlServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        remove_socket(&self.path);
    }
}

/// Removes the socket file at `path`, and nothing else that may have taken its place.
fn remove_socket(path: &Path) {
    if not_a_socket(path).is_none() {
        let _ = std::fs::remove_file(path);
    }
}

struct Client {
    fd: OwnedFd,
    pid: u32,
    uid: u32,
    /// Whether its credentials allow it to attach (checked at accept, answered at `Hello`).
    allowed: bool,
    /// Set once attached.
    id: Option<u32>,
    name: String,
    /// The analyzer's regions, once attached (status reports read its indices there).
    regions: Option<AnalyzerRegions>,
    /// Its last subscription.
    sub: Option<Subscription>,
    /// Its last per-socket subscription, as the workers it takes got it.
    socks: Option<std::sync::Arc<crate::publish::subscription::Sockets>>,
    /// The workers whose connections it takes (`ClientMsg::Workers`; all by default).
    workers: u32,
    /// It said it is ready.
    ready: bool,
    /// When it connected (the hello deadline counts from here).
    accepted: Instant,
    /// The start of its current one-second window of messages, and the messages in it.
    window: (Instant, u32),
}

impl Client {
    /// Counts one message; `false` once the peer has sent more than
    /// [`MAX_MESSAGES_PER_SECOND`] within one window.
    fn within_rate(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window.0) >= Duration::from_secs(1) {
            self.window = (now, 0);
        }
        self.window.1 += 1;
        self.window.1 <= MAX_MESSAGES_PER_SECOND
    }
}

/// The index of the connection to close when too many wait for their hello: the oldest of
/// the user that holds the most (so that one user's idle connections cannot lock others out).
fn pending_victim(clients: &[Client]) -> Option<usize> {
    let mut per_uid: Vec<(u32, usize)> = Vec::new();
    for c in clients.iter().filter(|c| c.id.is_none()) {
        match per_uid.iter_mut().find(|(u, _)| *u == c.uid) {
            Some(e) => e.1 += 1,
            None => per_uid.push((c.uid, 1)),
        }
    }
    let (uid, _) = per_uid.into_iter().max_by_key(|&(_, n)| n)?;
    clients
        .iter()
        .enumerate()
        .filter(|(_, c)| c.id.is_none() && c.uid == uid)
        .min_by_key(|(_, c)| c.accepted)
        .map(|(i, _)| i)
}

/// Warnings about peers, at most one line per kind every ten seconds: a flood of bad peers
/// must not become a flood of log lines.
#[derive(Debug, Default)]
struct PeerWarnings {
    /// Per kind: when it was last logged, and how many happened since.
    kinds: Vec<(&'static str, Option<Instant>, u64)>,
}

/// What a rate-limited warning adds when it stands for more than one event: `n` counts them
/// all, this one included.
fn others(n: u64) -> String {
    if n > 1 {
        format!(" (with {} more since the last such line)", n - 1)
    } else {
        String::new()
    }
}

impl PeerWarnings {
    fn note(&mut self, kind: &'static str, line: impl FnOnce(u64) -> String) {
        let now = Instant::now();
        let i = match self.kinds.iter().position(|k| k.0 == kind) {
            Some(i) => i,
            None => {
                self.kinds.push((kind, None, 0));
                self.kinds.len() - 1
            }
        };
        let k = &mut self.kinds[i];
        k.2 += 1;
        if k.1
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            crate::log_warn!("{}", line(k.2));
            k.1 = Some(now);
            k.2 = 0;
        }
    }
}

/// The supplementary groups of a process, from `/proc/PID/status` (empty if unreadable).
fn supplementary_groups(pid: u32) -> Vec<u32> {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    s.lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The primary group of `uid` in `/etc/passwd`.
fn primary_gid(uid: u32) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[2].parse() == Ok(uid))
            .then(|| f[3].parse().ok())
            .flatten()
    })
}

/// Whom the socket file goes to, so that the allowed users can connect through its mode 0660:
/// `(owner, group)` to set, `None` for unchanged. The first allowed group gets it; without
/// one, the primary group of the first allowed user other than root and the sensor's own
/// user (or that user itself when `/etc/passwd` does not know it). Connecting is only the
/// first gate: the sensor checks every peer's credentials at `Hello`.
fn socket_owner(allowed: &Allowed, own_uid: u32) -> (Option<u32>, Option<u32>) {
    if let Some(&g) = allowed.gids.first() {
        return (None, Some(g));
    }
    match allowed.uids.iter().find(|&&u| u != 0 && u != own_uid) {
        Some(&u) => match primary_gid(u) {
            Some(g) => (None, Some(g)),
            None => (Some(u), None),
        },
        None => (None, None),
    }
}

/// A control socket bound and listening, not served yet (see [`start_on`]). Binding it before
/// the shared memory is created makes a bad path fail first. Dropping it removes the file.
#[derive(Debug)]
pub struct Listener {
    fd: Option<OwnedFd>,
    path: PathBuf,
}

impl Drop for Listener {
    fn drop(&mut self) {
        if self.fd.take().is_some() {
            remove_socket(&self.path);
        }
    }
}

impl Listener {
    /// Creates the socket at `path` (and its directory), mode 0660, given to the first allowed
    /// group, else to the primary group of the first allowed user other than root and the
    /// sensor's own; replaces a stale socket, refuses a live one.
    pub fn bind(path: &Path, allowed: &Allowed) -> Result<Listener> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!(
                        "cannot create the control socket's directory {}",
                        dir.display()
                    )
                })?;
            }
        }
        let addr = SocketAddrUnix::new(path)
            .with_context(|| format!("bad control socket path {}", path.display()))?;
        if let Some(kind) = not_a_socket(path) {
            bail!(
                "{} exists and is {kind}, not a socket: the sensor removes only a stale socket there (give another --control PATH)",
                path.display()
            );
        }
        if path.exists() {
            // A socket that answers belongs to a running sensor; one that does not is stale.
            let probe = rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None)?;
            if rustix::net::connect(&probe, &addr).is_ok() {
                bail!(
                    "another mos-sensor is listening on {} (stop it, or give this one --control PATH)",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
        }
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        // Bound under a temporary name and made ready (listening, its mode and owner set)
        // before it is renamed into place, so an analyzer never finds the path with nobody
        // listening behind it (it would get ECONNREFUSED). Without room for the temporary
        // name in a socket address, in place.
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".new");
        let tmp = PathBuf::from(tmp);
        let at = match SocketAddrUnix::new(&tmp) {
            Ok(a) => {
                // A leftover of a sensor that died here; anything but a socket is not ours.
                if let Some(kind) = not_a_socket(&tmp) {
                    bail!(
                        "{} exists and is {kind}, not a socket left by a sensor: remove it or give another --control PATH",
                        tmp.display()
                    );
                }
                let _ = std::fs::remove_file(&tmp);
                rustix::net::bind(&fd, &a).map(|()| tmp)
            }
            Err(_) => rustix::net::bind(&fd, &addr).map(|()| path.to_path_buf()),
        }
        .with_context(|| format!("cannot create the control socket {}", path.display()))?;
        // From here on the file is ours: dropping the listener removes it.
        let mut listener = Listener {
            fd: Some(fd),
            path: at.clone(),
        };
        if let Some(fd) = &listener.fd {
            rustix::net::listen(fd, 64)?;
        }
        rustix::fs::chmod(&at, rustix::fs::Mode::from_raw_mode(0o660))
            .with_context(|| format!("cannot set the mode of {}", at.display()))?;
        give_socket(&at, path, allowed)?;
        if at != path {
            std::fs::rename(&at, path).with_context(|| {
                format!(
                    "cannot move the control socket into place at {}",
                    path.display()
                )
            })?;
            listener.path = path.to_path_buf();
        }
        Ok(listener)
    }
}

/// What is at `path` when it is there and not a socket ("a regular file", "a directory", ...):
/// the sensor replaces a stale socket, never anything else.
fn not_a_socket(path: &Path) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt as _;
    let t = std::fs::symlink_metadata(path).ok()?.file_type();
    if t.is_socket() {
        None
    } else if t.is_file() {
        Some("a regular file")
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_symlink() {
        Some("a symbolic link")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else {
        Some("a device")
    }
}

/// Gives the socket file at `at` (known to users as `path`) to the first allowed group, else
/// to the primary group of the first allowed user other than root and the sensor's own, so
/// that the allowed users can connect through its mode 0660 (at start, and again when a
/// reload changes who may attach).
pub fn give_socket(at: &Path, path: &Path, allowed: &Allowed) -> Result<()> {
    let own = rustix::process::geteuid().as_raw();
    let owner = socket_owner(allowed, own);
    match owner {
        (None, None) => {}
        (uid, gid) => rustix::fs::chown(
            at,
            uid.map(rustix::process::Uid::from_raw),
            gid.map(rustix::process::Gid::from_raw),
        )
        .with_context(|| {
            format!(
                "cannot give {} to {}",
                path.display(),
                match (uid, gid) {
                    (Some(u), _) => format!("user {u}"),
                    (_, g) => format!("group {}", g.unwrap_or_default()),
                }
            )
        })?,
    }
    if let (None, Some(g)) = owner {
        let others: Vec<String> = allowed
            .uids
            .iter()
            .filter(|&&u| u != 0 && u != own && primary_gid(u) != Some(g))
            .map(u32::to_string)
            .collect();
        if !others.is_empty() {
            crate::log_warn!(
                "the control socket belongs to group {g}: allowed uids {} can connect only as members of it (see --allow-group)",
                others.join(", ")
            );
        }
    }
    Ok(())
}

fn send(fd: &OwnedFd, msg: &SensorMsg, fds: &[std::os::fd::BorrowedFd<'_>]) -> bool {
    let bytes = encode(msg);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !anc.push(SendAncillaryMessage::ScmRights(fds)) {
        return false;
    }
    rustix::net::sendmsg(
        fd,
        &[IoSlice::new(&bytes)],
        &mut anc,
        SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
    )
    .is_ok()
}

/// Binds the socket at `cfg.path` and starts the control server on its own thread.
pub fn start(
    cfg: ControlConfig,
    workers: Vec<Sender<ToWorker>>,
    from_workers: Receiver<ToControl>,
) -> Result<ControlServer> {
    let allowed = cfg
        .allowed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let listener = Listener::bind(&cfg.path, &allowed)?;
    start_on(listener, cfg, workers, from_workers)
}

/// Starts the control server on its own thread, on a socket bound already (`cfg.path` is not
/// used: the listener's path is).
pub fn start_on(
    mut listener: Listener,
    cfg: ControlConfig,
    workers: Vec<Sender<ToWorker>>,
    from_workers: Receiver<ToControl>,
) -> Result<ControlServer> {
    let path = listener.path.clone();
    let listener_fd = listener
        .fd
        .take()
        .context("the control socket was served already")?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("mos-control".into())
        .spawn(move || serve(cfg, listener_fd, workers, from_workers, stop2))
        .context("cannot start the control thread");
    let mut server = ControlServer {
        stop,
        thread: None,
        path: path.clone(),
    };
    match thread {
        Ok(t) => server.thread = Some(t),
        Err(e) => {
            remove_socket(&path);
            return Err(e);
        }
    }
    Ok(server)
}

fn serve(
    cfg: ControlConfig,
    listener: OwnedFd,
    workers: Vec<Sender<ToWorker>>,
    from_workers: Receiver<ToControl>,
    stop: Arc<AtomicBool>,
) {
    let mut reporter = report::Reporter::new(cfg.header, cfg.nworkers);
    let mut clients: Vec<Client> = Vec::new();
    let mut next_id = 1u32;
    let mut done = false;
    // Workers that reached the end of the input; the sensor is done when all have.
    let mut workers_done = 0usize;
    let mut workers_gone = false;
    let to_all = |m: &dyn Fn() -> ToWorker| {
        for w in &workers {
            let _ = w.send(m());
        }
    };
    let to_each = |m: &dyn Fn(usize) -> ToWorker| {
        for (i, w) in workers.iter().enumerate() {
            let _ = w.send(m(i));
        }
    };
    // One byte more than a message may have: a longer one fills it, and is refused.
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    let mut warnings = PeerWarnings::default();
    // Accepting pauses until then after the process ran out of descriptors.
    let mut accept_again = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(clients.len() + 1);
        let listen_for = if Instant::now() >= accept_again {
            PollFlags::IN
        } else {
            PollFlags::empty()
        };
        fds.push(PollFd::new(&listener, listen_for));
        for c in &clients {
            fds.push(PollFd::new(&c.fd, PollFlags::IN));
        }
        let timeout = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 20_000_000,
        };
        let _ = rustix::event::poll(&mut fds, Some(&timeout));
        let ready: Vec<PollFlags> = fds.iter().map(|f| f.revents()).collect();
        drop(fds);

        // Clients first (indices shift when the listener adds some).
        let mut gone = Vec::new();
        let now = Instant::now();
        for (i, rev) in ready.iter().enumerate().skip(1) {
            if rev.is_empty() {
                continue;
            }
            let ci = i - 1;
            let c = &mut clients[ci];
            let n = match rustix::net::recv(&c.fd, &mut buf[..], RecvFlags::DONTWAIT) {
                Ok((n, _)) => n,
                Err(rustix::io::Errno::AGAIN) => continue,
                Err(_) => 0,
            };
            if n == 0 {
                gone.push(ci);
                continue;
            }
            let refused = if n > MAX_MESSAGE {
                Some(format!("a control message over {MAX_MESSAGE} bytes"))
            } else if !c.within_rate(now) {
                Some(format!(
                    "more than {MAX_MESSAGES_PER_SECOND} control messages within a second"
                ))
            } else {
                None
            };
            if let Some(why) = refused {
                let (pid, uid) = (c.pid, c.uid);
                warnings.note(if n > MAX_MESSAGE { "size" } else { "rate" }, |more| {
                    format!(
                        "peer pid {pid} (uid {uid}) sent {why}; closed{}",
                        others(more)
                    )
                });
                let _ = send(
                    &c.fd,
                    &SensorMsg::Detached {
                        reason: format!("the sensor closed this connection: {why}"),
                    },
                    &[],
                );
                gone.push(ci);
                continue;
            }
            let msg: ClientMsg = match decode(&buf[..n]) {
                Ok(m) => m,
                Err(e) => {
                    // The error may quote what the peer sent.
                    let e = printable(&e, 200);
                    let pid = c.pid;
                    warnings.note("decode", |more| {
                        format!("analyzer pid {pid}: {e}; detached{}", others(more))
                    });
                    let _ = send(
                        &c.fd,
                        &SensorMsg::Detached {
                            reason: format!("the sensor could not read a message: {e}"),
                        },
                        &[],
                    );
                    gone.push(ci);
                    continue;
                }
            };
            match msg {
                ClientMsg::Hello {
                    abi_major,
                    abi_minor: _,
                    name,
                } => {
                    if c.id.is_some() {
                        continue;
                    }
                    let name = printable(&name, MAX_NAME_CHARS);
                    let refuse = |errno: &str, reason: String| SensorMsg::Refused {
                        errno: errno.into(),
                        reason,
                    };
                    let attached = clients.iter().filter(|c| c.id.is_some()).count();
                    let c = &mut clients[ci];
                    if !c.allowed {
                        crate::log_warn!(
                            "refused an analyzer of uid {} (pid {}): not allowed",
                            c.uid,
                            c.pid
                        );
                        let _ = send(
                            &c.fd,
                            &refuse(
                                "EACCES",
                                format!(
                                    "uid {} may not attach to this sensor (see --allow-user and --allow-group)",
                                    c.uid
                                ),
                            ),
                            &[],
                        );
                        gone.push(ci);
                        continue;
                    }
                    if abi_major != ABI_MAJOR {
                        let _ = send(
                            &c.fd,
                            &refuse(
                                "EPROTO",
                                format!(
                                    "the analyzer reads ABI {abi_major}, this sensor publishes ABI {ABI_MAJOR}"
                                ),
                            ),
                            &[],
                        );
                        gone.push(ci);
                        continue;
                    }
                    if attached >= cfg.max_analyzers {
                        let _ = send(
                            &c.fd,
                            &refuse(
                                "EBUSY",
                                format!(
                                    "{} analyzers are attached, the most this sensor takes",
                                    cfg.max_analyzers
                                ),
                            ),
                            &[],
                        );
                        gone.push(ci);
                        continue;
                    }
                    let (regions, afds) = match create_analyzer(
                        cfg.event_capacity,
                        cfg.nworkers,
                        cfg.header.features & features::HUGEPAGES != 0,
                    ) {
                        Ok(r) => r,
                        Err(e) => {
                            crate::log_error!("cannot attach analyzer pid {}: {e:#}", c.pid);
                            let _ = send(
                                &c.fd,
                                &refuse(
                                    "ENOMEM",
                                    format!("the sensor cannot create its rings: {e:#}"),
                                ),
                                &[],
                            );
                            gone.push(ci);
                            continue;
                        }
                    };
                    let id = next_id;
                    next_id += 1;
                    let welcome = SensorMsg::Welcome {
                        analyzer_id: id,
                        epoch: cfg.epoch,
                        main_len: cfg.main_len,
                        events_len: regions.events.len() as u64,
                        event_capacity: regions.plan.capacity,
                        nworkers: cfg.nworkers as u32,
                        page_len: PAGE_LEN,
                    };
                    let fds = [
                        cfg.main_ro.as_fd(),
                        afds.events_ro.as_fd(),
                        afds.page_fd.as_fd(),
                    ];
                    if !send(&c.fd, &welcome, &fds) {
                        gone.push(ci);
                        continue;
                    }
                    c.id = Some(id);
                    c.name = name.clone();
                    c.regions = Some(regions.clone());
                    crate::log_notice!(
                        "analyzer {id} attached: {name} (pid {}, uid {})",
                        c.pid,
                        c.uid
                    );
                    for w in &workers {
                        let _ = w.send(ToWorker::Attach(Box::new(Attached {
                            id,
                            name: name.clone(),
                            pid: c.pid,
                            regions: regions.clone(),
                        })));
                    }
                    if done {
                        let _ = send(&c.fd, &SensorMsg::Done, &[]);
                    }
                }
                ClientMsg::Status => {
                    // A status client is no analyzer: it gets an answer and is closed, never
                    // an id or rings, and the workers never hear of it.
                    if c.id.is_some() {
                        continue;
                    }
                    let answer = if c.allowed {
                        SensorMsg::Status(Box::new(reporter.report(&cfg.info, cfg.epoch, &clients)))
                    } else {
                        SensorMsg::Refused {
                            errno: "EACCES".into(),
                            reason: format!(
                                "uid {} may not see this sensor's state (see --allow-user and --allow-group)",
                                clients[ci].uid
                            ),
                        }
                    };
                    let _ = send(&clients[ci].fd, &answer, &[]);
                    gone.push(ci);
                }
                ClientMsg::Subscribe(sub) => {
                    if let Some(id) = c.id {
                        c.sub = Some(sub);
                        c.socks = None;
                        let mask = c.workers;
                        to_each(&|w| {
                            ToWorker::Subscribe(
                                id,
                                if takes(mask, w) {
                                    sub
                                } else {
                                    Subscription::default()
                                },
                            )
                        });
                        let _ = send(&c.fd, &SensorMsg::Subscribed, &[]);
                    }
                }
                ClientMsg::SubscribeSockets { packets, sockets } => {
                    if let Some(id) = c.id {
                        match crate::publish::subscription::Sockets::new(packets, &sockets) {
                            Ok(socks) => {
                                c.sub = Some(Subscription {
                                    events: socks.events,
                                    packets,
                                });
                                let socks = std::sync::Arc::new(socks);
                                c.socks = Some(socks.clone());
                                send_sockets(&to_each, id, &socks, c.workers);
                                let _ = send(&c.fd, &SensorMsg::Subscribed, &[]);
                            }
                            Err(reason) => {
                                crate::log_warn!(
                                    "analyzer {id} ({}, pid {}): subscription refused: {reason}",
                                    c.name,
                                    c.pid
                                );
                                let _ = send(&c.fd, &SensorMsg::Invalid { reason }, &[]);
                            }
                        }
                    }
                }
                ClientMsg::StopMon {
                    sock,
                    worker,
                    slot,
                    generation,
                    side: _,
                } => {
                    // Only the worker of the flow hears of it; an id out of range is ignored
                    // (the analyzer's library drops the flow's events itself as well).
                    if let (Some(id), Some(w), true) = (
                        c.id,
                        workers.get(usize::from(worker)),
                        usize::from(sock) < shm_layout::control::MAX_SOCKETS,
                    ) {
                        let _ = w.send(ToWorker::StopMon(id, slot, generation, 1 << sock));
                    }
                }
                ClientMsg::Workers { mask } => {
                    if let Some(id) = c.id {
                        if mask != c.workers {
                            c.workers = mask;
                            if let Some(socks) = &c.socks {
                                send_sockets(&to_each, id, socks, mask);
                            } else if let Some(sub) = c.sub {
                                to_each(&|w| {
                                    ToWorker::Subscribe(
                                        id,
                                        if takes(mask, w) {
                                            sub
                                        } else {
                                            Subscription::default()
                                        },
                                    )
                                });
                            }
                        }
                    }
                }
                ClientMsg::Ready => {
                    if let Some(id) = c.id {
                        c.ready = true;
                        to_all(&|| ToWorker::Ready(id));
                    }
                }
                ClientMsg::Detach => gone.push(ci),
            }
        }
        gone.sort_unstable();
        gone.dedup();
        for ci in gone.into_iter().rev() {
            let c = clients.remove(ci);
            if let Some(id) = c.id {
                to_all(&|| ToWorker::Detach(id));
                crate::log_notice!("analyzer {id} detached: {} (pid {})", c.name, c.pid);
            }
        }

        // Connections that did not say hello in time.
        let timeout = cfg.limits.hello_timeout;
        let mut late = 0usize;
        clients.retain(|c| {
            let keep = c.id.is_some() || now.duration_since(c.accepted) < timeout;
            if !keep {
                late += 1;
                let _ = send(
                    &c.fd,
                    &SensorMsg::Refused {
                        errno: "ETIMEDOUT".into(),
                        reason: format!(
                            "no hello within {:.1} s (control.hello_timeout)",
                            timeout.as_secs_f64()
                        ),
                    },
                    &[],
                );
            }
            keep
        });
        if late > 0 {
            warnings.note("late", |n| {
                format!(
                    "closed {n} connection(s) to the control socket that said no hello within {:.1} s",
                    timeout.as_secs_f64()
                )
            });
        }

        if ready[0].contains(PollFlags::IN) {
            loop {
                let fd = match rustix::net::accept_with(
                    &listener,
                    SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
                ) {
                    Ok(fd) => fd,
                    Err(rustix::io::Errno::AGAIN) => break,
                    Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => continue,
                    Err(e) => {
                        // Out of descriptors or memory: the waiting connection stays queued,
                        // and the listener readable; try again after a pause.
                        accept_again = Instant::now() + ACCEPT_PAUSE;
                        warnings.note("accept", |n| {
                            format!(
                                "cannot accept on the control socket ({e}; {n} time(s)); pausing {} ms",
                                ACCEPT_PAUSE.as_millis()
                            )
                        });
                        break;
                    }
                };
                let Ok(cred) = rustix::net::sockopt::socket_peercred(&fd) else {
                    continue;
                };
                let (pid, uid, gid) = (
                    cred.pid.as_raw_nonzero().get() as u32,
                    cred.uid.as_raw(),
                    cred.gid.as_raw(),
                );
                // A peer that may not attach is told so in answer to its `Hello`, not now:
                // closing a socket whose `Hello` is already queued resets the connection, and
                // the peer would see ECONNRESET instead of the refusal.
                let allowed = cfg
                    .allowed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .permits(uid, gid, &supplementary_groups(pid));
                clients.push(Client {
                    fd,
                    pid,
                    uid,
                    allowed,
                    id: None,
                    name: String::new(),
                    regions: None,
                    sub: None,
                    socks: None,
                    workers: u32::MAX,
                    ready: false,
                    accepted: Instant::now(),
                    window: (Instant::now(), 0),
                });
                let pending = clients.iter().filter(|c| c.id.is_none()).count();
                if pending > cfg.limits.max_pending {
                    if let Some(v) = pending_victim(&clients) {
                        let c = clients.remove(v);
                        let _ = send(
                            &c.fd,
                            &SensorMsg::Refused {
                                errno: "EBUSY".into(),
                                reason: format!(
                                    "more than {} connections wait to say hello (control.max_pending); the oldest of uid {} is closed",
                                    cfg.limits.max_pending, c.uid
                                ),
                            },
                            &[],
                        );
                        warnings.note("pending", |n| {
                            format!(
                                "closed {n} connection(s) to the control socket: more than {} waited to say hello, the oldest of the user holding the most went first (last: uid {}, pid {})",
                                cfg.limits.max_pending, c.uid, c.pid
                            )
                        });
                    }
                }
            }
        }

        reporter.tick();

        loop {
            match from_workers.try_recv() {
                Ok(ToControl::Detached(id, why)) => {
                    if let Some(ci) = clients.iter().position(|c| c.id == Some(id)) {
                        let c = clients.remove(ci);
                        let _ = send(&c.fd, &SensorMsg::Detached { reason: why }, &[]);
                        to_all(&|| ToWorker::Detach(id));
                    }
                }
                Ok(ToControl::Done) => {
                    workers_done += 1;
                    if workers_done < cfg.nworkers {
                        continue;
                    }
                    done = true;
                    for c in clients.iter().filter(|c| c.id.is_some()) {
                        let _ = send(&c.fd, &SensorMsg::Done, &[]);
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    // The workers are gone: the sensor is shutting down.
                    if !done && !workers_gone {
                        for c in clients.iter().filter(|c| c.id.is_some()) {
                            let _ = send(
                                &c.fd,
                                &SensorMsg::Detached {
                                    reason: "the sensor is shutting down".into(),
                                },
                                &[],
                            );
                        }
                    }
                    workers_gone = true;
                    std::thread::sleep(Duration::from_millis(5));
                    break;
                }
            }
        }
    }
}

/// Whether an analyzer that takes the workers of `mask` takes worker `w`'s connections.
fn takes(mask: u32, w: usize) -> bool {
    w >= 32 || mask & (1 << w) != 0
}

/// Sends an analyzer's per-socket subscription to every worker: the workers of `mask` get it,
/// the others an empty one (no sockets: none of their events, none of their bytes held back).
/// Sends a message made for each worker (by its index) to every worker.
type ToEach<'a> = &'a dyn Fn(&dyn Fn(usize) -> ToWorker);

fn send_sockets(
    to_each: ToEach<'_>,
    id: u32,
    socks: &std::sync::Arc<crate::publish::subscription::Sockets>,
    mask: u32,
) {
    let none = std::sync::Arc::new(
        crate::publish::subscription::Sockets::new(socks.packets, &[])
            .expect("an empty subscription is valid"),
    );
    to_each(&|w| {
        ToWorker::Sockets(
            id,
            if takes(mask, w) {
                socks.clone()
            } else {
                none.clone()
            },
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_users_and_groups_are_permitted_others_not() {
        let a = Allowed {
            uids: vec![1000],
            gids: vec![500],
        };
        assert!(a.permits(0, 0, &[]));
        assert!(a.permits(1000, 1000, &[]));
        assert!(a.permits(1001, 500, &[]));
        assert!(a.permits(1001, 1001, &[7, 500]));
        assert!(!a.permits(65534, 65534, &[65534]));
    }

    #[test]
    fn the_socket_goes_to_the_first_group_else_the_first_other_users_group() {
        let own = 1000;
        let only = |uids: Vec<u32>, gids: Vec<u32>| Allowed { uids, gids };
        assert_eq!(socket_owner(&only(vec![own], vec![]), own), (None, None));
        assert_eq!(socket_owner(&only(vec![own, 0], vec![]), own), (None, None));
        assert_eq!(
            socket_owner(&only(vec![own, 4242], vec![77, 78]), own),
            (None, Some(77))
        );
        // A user /etc/passwd knows gets its primary group; one it does not, the file itself.
        let unknown = 3_999_999_999;
        assert_eq!(primary_gid(unknown), None);
        assert_eq!(
            socket_owner(&only(vec![own, unknown], vec![]), own),
            (Some(unknown), None)
        );
        assert_eq!(primary_gid(0), Some(0));
        assert_eq!(socket_owner(&only(vec![0], vec![]), 5), (None, None));
    }

    #[test]
    fn bind_refuses_to_remove_anything_but_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = Allowed::default();
        let file = dir.path().join("control.sock");
        std::fs::write(&file, b"precious").unwrap();
        let e = Listener::bind(&file, &allowed).unwrap_err().to_string();
        assert!(e.contains("is a regular file, not a socket"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"precious");
        // Nor what is at the temporary name beside it.
        let sock = dir.path().join("other.sock");
        let tmp = dir.path().join("other.sock.new");
        std::fs::create_dir(&tmp).unwrap();
        let e = Listener::bind(&sock, &allowed).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        assert!(tmp.is_dir());
        std::fs::remove_dir(&tmp).unwrap();
        // A stale socket (nobody listening) is replaced, and removed with the listener.
        let l = Listener::bind(&sock, &allowed).unwrap();
        drop(l);
        assert!(!sock.exists());
        let stale = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        drop(stale);
        assert!(sock.exists());
        let l = Listener::bind(&sock, &allowed).unwrap();
        // A file put in its place is left alone when the listener goes.
        std::fs::remove_file(&sock).unwrap();
        std::fs::write(&sock, b"mine").unwrap();
        drop(l);
        assert_eq!(std::fs::read(&sock).unwrap(), b"mine");
    }

    fn pending(uid: u32, age_ms: u64, attached: bool) -> Client {
        let (a, _b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let accepted = Instant::now() - Duration::from_millis(age_ms);
        Client {
            fd: a,
            pid: 1,
            uid,
            allowed: true,
            id: attached.then_some(uid),
            name: String::new(),
            regions: None,
            sub: None,
            socks: None,
            workers: u32::MAX,
            ready: false,
            accepted,
            window: (accepted, 0),
        }
    }

    #[test]
    fn the_oldest_waiting_connection_of_the_user_holding_most_is_closed_first() {
        assert_eq!(pending_victim(&[]), None);
        let clients = vec![
            pending(1000, 900, false),
            pending(65534, 100, false),
            pending(65534, 300, false),
            pending(65534, 200, false),
            // Attached analyzers never count, however many and old.
            pending(7, 5000, true),
            pending(7, 5000, true),
            pending(7, 5000, true),
            pending(7, 5000, true),
        ];
        assert_eq!(pending_victim(&clients), Some(2));
        assert_eq!(pending_victim(&clients[..1]), Some(0));
        assert_eq!(pending_victim(&clients[4..]), None);
    }

    #[test]
    fn a_peer_is_held_to_its_message_rate() {
        let mut c = pending(1000, 0, false);
        let t = c.window.0;
        for _ in 0..MAX_MESSAGES_PER_SECOND {
            assert!(c.within_rate(t));
        }
        assert!(!c.within_rate(t + Duration::from_millis(999)));
        // A new second, a new allowance.
        assert!(c.within_rate(t + Duration::from_millis(1001)));
    }

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        use rustix::process::{getrlimit, Resource};
        let hard = raise_open_files_limit().unwrap();
        assert_eq!(getrlimit(Resource::Nofile).current, hard);
    }

    #[test]
    fn own_supplementary_groups_are_read() {
        // Whatever they are, reading them must not fail for this process, and a process that
        // does not exist has none.
        let _ = supplementary_groups(std::process::id());
        assert!(supplementary_groups(u32::MAX).is_empty());
    }
}
