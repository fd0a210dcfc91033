//! The control socket: where analyzers attach, subscribe and detach.
//!
//! A Unix `SOCK_SEQPACKET` socket (one bincode message per packet), created mode 0660. At
//! attach the sensor reads the peer's credentials from the socket (`SO_PEERCRED`) and checks
//! them against the allowed users and groups; an allowed analyzer gets three descriptors: the
//! main region and its own event rings, both read-only, and its page, writable. A closed socket
//! detaches its analyzer. One thread serves the socket; it tells the workers about analyzers
//! through channels, so the packet path never takes a lock.
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
use shm_layout::control::{decode, encode, ClientMsg, SensorMsg, Subscription, MAX_MESSAGE};
use shm_layout::layout::Header;
use shm_layout::layout::ABI_MAJOR;
use shm_layout::plan::PAGE_LEN;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

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
        let _ = std::fs::remove_file(&self.path);
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
    /// It said it is ready.
    ready: bool,
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
            let _ = std::fs::remove_file(&self.path);
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
                // A leftover of a sensor that died here.
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
            let _ = std::fs::remove_file(&path);
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
    let mut buf = vec![0u8; MAX_MESSAGE];
    while !stop.load(Ordering::Relaxed) {
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(clients.len() + 1);
        fds.push(PollFd::new(&listener, PollFlags::IN));
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
            let msg: ClientMsg = match decode(&buf[..n]) {
                Ok(m) => m,
                Err(e) => {
                    crate::log_warn!("analyzer pid {}: {e}; detached", c.pid);
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
                    let name: String = name.chars().take(64).collect();
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
                    let (regions, afds) = match create_analyzer(cfg.event_capacity, cfg.nworkers) {
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
                        events_len: regions.plan.len,
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
                        to_all(&|| ToWorker::Subscribe(id, sub));
                        let _ = send(&c.fd, &SensorMsg::Subscribed, &[]);
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

        if !ready[0].is_empty() {
            while let Ok(fd) =
                rustix::net::accept_with(&listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK)
            {
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
                    ready: false,
                });
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
    fn own_supplementary_groups_are_read() {
        // Whatever they are, reading them must not fail for this process, and a process that
        // does not exist has none.
        let _ = supplementary_groups(std::process::id());
        assert!(supplementary_groups(u32::MAX).is_empty());
    }
}
