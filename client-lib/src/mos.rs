//! An attachment to a running sensor (`mtcp_init` + `mtcp_create_context`): monitoring
//! sockets, callbacks, and the run loop that dispatches events to them.

use crate::control::{ControlSocket, Polled};
use crate::ctx::{initial_pointers, load_flow, socket_state, Counters, Ctx, PeekState, SockId};
use crate::error::{Errno, Error, Result};
use crate::event::{Event, EventKind};
use crate::flow::FlowId;
use crate::regions::{Regions, Welcome};
use shm_layout::control::{ClientMsg, SensorMsg, Subscription};
use shm_layout::layout::{detach_reason, sensor_state, ABI_MAJOR, ABI_MINOR};
use shm_layout::region::WriteProbe;
use shm_layout::ring::Consumer;
use shm_layout::{EventMask, Hook, Side};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where `mos-sensor` listens unless told otherwise.
pub const DEFAULT_CONTROL: &str = shm_layout::control::DEFAULT_PATH;

/// How long attach waits for the sensor to take the connection and for its answer, a
/// subscription for its acknowledgment, and a message for room in the sensor's queue.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Events taken from one worker's ring before looking at the next.
const BATCH: u32 = 256;
/// Idle passes spent spinning, then yielding, before sleeping.
const SPIN_PASSES: u32 = 64;
const YIELD_PASSES: u32 = 128;
/// While spinning, the control socket is read every this many idle passes.
const CONTROL_EVERY: u32 = 16;
/// Busy passes between two heartbeat stamps.
const HEARTBEAT_PASSES: u32 = 64;
/// The longest sleep between two looks at the rings.
const MAX_SLEEP: Duration = Duration::from_millis(2);
/// How often, at most, an idle loop drops the read pointers of flows that are gone.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// While events keep coming, the clock is read every this many events, and the control
/// socket looked at when [`LOOK_EVERY`] has passed since the last look: a busy loop notices a
/// sensor that died without the cost of a system call per event.
const LOOK_EVERY_EVENTS: u32 = 16;
/// See [`LOOK_EVERY_EVENTS`].
const LOOK_EVERY: Duration = Duration::from_millis(20);
/// How long events a sensor published before it went away (without `Done`) are still taken:
/// they stay readable (the regions stay mapped), but an analyzer that lost its sensor must
/// stop in bounded time whatever its backlog.
const DRAIN_AFTER_GONE: Duration = Duration::from_millis(300);

/// How to attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachOptions {
    /// The sensor's control socket.
    pub control: PathBuf,
    /// A name for the sensor's logs.
    pub name: String,
    /// Whether this analyzer reads packets (`getlastpkt`): the sensor then keeps its packet
    /// log.
    pub packets: bool,
    /// How long [`Mos::attach`] keeps trying while there is no sensor at `control` yet (no
    /// socket file, or nobody listening on it): an analyzer started with or just before its
    /// sensor attaches once the sensor is up. Zero (the default) tries once.
    pub wait: Duration,
}

impl Default for AttachOptions {
    fn default() -> Self {
        AttachOptions {
            control: PathBuf::from(DEFAULT_CONTROL),
            name: "analyzer".into(),
            packets: false,
            wait: Duration::ZERO,
        }
    }
}

/// Why [`Mos::run`] returned normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// The sensor's input ended and every event was dispatched.
    Done,
    /// [`StopHandle::stop`] or [`Ctx::stop`] was called.
    Stopped,
}

/// Stops a run loop from elsewhere (a signal handler, another thread).
#[derive(Clone, Debug)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Asks the run loop to return [`RunEnd::Stopped`] after the event it is dispatching.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Which events of a socket a callback wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filter {
    /// Event bits (one or several).
    pub events: EventMask,
    /// The hook point; `None` for every hook. See [`Mos::register_callback`] for how hooks
    /// match.
    pub hook: Option<Hook>,
    /// Only events of this side; `None` for both.
    pub side: Option<Side>,
}

impl Filter {
    fn matches(&self, ev: &Event) -> bool {
        let hook_ok = match (self.hook, ev.hook) {
            (None, _) | (_, Hook::Null) => true,
            (Some(h), e) => h == e,
        };
        self.events.0 & ev.mask().0 != 0 && hook_ok && self.side.is_none_or(|s| Some(s) == ev.side)
    }
}

/// A callback: the context to read state through, and the event.
pub type Callback = Box<dyn FnMut(&mut Ctx<'_>, &Event)>;

struct Registration {
    filter: Filter,
    cb: Callback,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

/// An attachment to a sensor. Dropping it detaches.
#[derive(Debug)]
pub struct Mos {
    control: ControlSocket,
    regions: Regions,
    packets: bool,
    /// Per socket (index = [`SockId`]): `Some` while open.
    sockets: Vec<Option<PeekState>>,
    callbacks: Vec<Vec<Registration>>,
    subscribed: Option<Subscription>,
    ready_sent: bool,
    /// The sensor said `Done`.
    done: bool,
    /// The control socket closed.
    hung_up: bool,
    counters: Counters,
    stop: Arc<AtomicBool>,
}

fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

fn gone() -> Error {
    Error::new(
        Errno::ENOTCONN,
        "the sensor went away (control socket closed)",
    )
}

/// [`gone`], with events it had published left unread.
fn gone_leaving(unread: u64) -> Error {
    Error::new(
        Errno::ENOTCONN,
        format!(
            "the sensor went away (control socket closed); {unread} events it had published were left unread"
        ),
    )
}

/// A busy run loop's look-out for a sensor that went away: when it was last looked for, and
/// since when it is known gone.
struct Lookout {
    last: Instant,
    gone_at: Option<Instant>,
}

impl Lookout {
    /// Called every [`LOOK_EVERY_EVENTS`] events while events keep coming: looks at the
    /// control socket when [`LOOK_EVERY`] has passed, and says whether the drain after the
    /// sensor went away without `Done` has had its time ([`DRAIN_AFTER_GONE`]). A `Done` sent
    /// before the hang-up means the sensor stopped on purpose and every event was published:
    /// those are all taken. (The header says done before the sensor waits for its analyzers
    /// to drain, so a sensor killed in that wait did not send it.)
    fn drain_over(
        &mut self,
        control: &ControlSocket,
        sensor: &crate::watch::SensorWatch,
        done: &mut bool,
    ) -> bool {
        let now = Instant::now();
        if self.gone_at.is_none() && now.duration_since(self.last) >= LOOK_EVERY {
            self.last = now;
            if sensor.gone() {
                // Messages sent before the hang-up are still there to read.
                while let Ok(Polled::Msg(m, _)) = control.try_recv() {
                    if matches!(m, SensorMsg::Done) {
                        *done = true;
                    }
                }
                self.gone_at = Some(now);
            }
        }
        !*done
            && self
                .gone_at
                .is_some_and(|t| now.duration_since(t) >= DRAIN_AFTER_GONE)
    }
}

fn detached_error(reason: u64) -> Error {
    let why = match reason {
        detach_reason::STALLED => "this analyzer made no progress for the stall timeout".into(),
        detach_reason::REQUESTED => "this analyzer asked to detach".into(),
        detach_reason::SHUTDOWN => "the sensor is shutting down".into(),
        r => format!("reason code {r}"),
    };
    Error::new(
        Errno::ENOTCONN,
        format!("the sensor detached this analyzer: {why}"),
    )
}

impl Mos {
    /// Attaches to the sensor (`mtcp_init` + `mtcp_create_context`): connects to its control
    /// socket, says hello, maps the three regions it passes, and checks they add up.
    ///
    /// Each failure is one sentence: no socket (`ENOENT`), no sensor behind it
    /// (`ECONNREFUSED`), not allowed (`EACCES`), refused by the sensor (its errno and reason),
    /// another ABI or a region that does not add up (`EPROTO`), a sensor that does not take
    /// the connection or does not answer within 10 s (`ETIMEDOUT`). The first two are tried
    /// again for [`AttachOptions::wait`] before they are reported.
    pub fn attach(opts: &AttachOptions) -> Result<Mos> {
        let control = connect_waiting(&opts.control, opts.wait)?;
        control.send(&ClientMsg::Hello {
            abi_major: ABI_MAJOR,
            abi_minor: ABI_MINOR,
            name: opts.name.clone(),
        })?;
        let (msg, fds) = match control.recv_timeout(Some(REPLY_TIMEOUT))? {
            Polled::Msg(m, fds) => (m, fds),
            Polled::Closed => {
                return Err(Error::new(
                    Errno::ECONNREFUSED,
                    format!(
                        "the sensor at {} closed the connection without answering",
                        opts.control.display()
                    ),
                ))
            }
            Polled::Empty => {
                return Err(Error::new(
                    Errno::ETIMEDOUT,
                    format!(
                        "the sensor at {} did not answer within {} s",
                        opts.control.display(),
                        REPLY_TIMEOUT.as_secs()
                    ),
                ))
            }
        };
        let welcome = match msg {
            SensorMsg::Welcome {
                analyzer_id,
                epoch,
                main_len,
                events_len,
                event_capacity,
                nworkers,
                page_len,
            } => Welcome {
                analyzer_id,
                epoch,
                main_len,
                events_len,
                event_capacity,
                nworkers,
                page_len,
            },
            SensorMsg::Refused { errno, reason } => {
                let e = Errno::from_name(&errno).unwrap_or(Errno::EPERM);
                let shown = if Errno::from_name(&errno).is_some() {
                    reason
                } else {
                    format!("{reason} ({errno})")
                };
                return Err(Error::new(
                    e,
                    format!("the sensor refused to attach: {shown}"),
                ));
            }
            other => {
                return Err(Error::new(
                    Errno::EPROTO,
                    format!("the sensor answered hello with {other:?}"),
                ))
            }
        };
        let fds: [_; 3] = fds.try_into().map_err(|v: Vec<_>| {
            Error::new(
                Errno::EPROTO,
                format!(
                    "the sensor's welcome carried {} descriptors instead of 3",
                    v.len()
                ),
            )
        })?;
        let regions = Regions::new(welcome, fds, control.watch()?)?;
        let page = regions.page();
        page.pid.store(
            u64::from(rustix::process::getpid().as_raw_nonzero().get() as u32),
            Ordering::Relaxed,
        );
        page.heartbeat_ns.store(monotonic_ns(), Ordering::Relaxed);
        let mut mos = Mos {
            control,
            regions,
            packets: opts.packets,
            sockets: Vec::new(),
            callbacks: Vec::new(),
            subscribed: None,
            ready_sent: false,
            done: false,
            hung_up: false,
            counters: Counters::default(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        mos.resubscribe()?;
        Ok(mos)
    }

    /// The analyzer's number for this sensor run.
    pub fn analyzer_id(&self) -> u32 {
        self.regions.welcome.analyzer_id
    }

    /// The sensor's workers (one event ring each).
    pub fn nworkers(&self) -> usize {
        self.regions.nworkers
    }

    /// The control socket this attachment uses.
    pub fn control_path(&self) -> &std::path::Path {
        self.control.path()
    }

    /// `mtcp_socket(MOS_SOCK_MONITOR_STREAM)`: a monitoring socket with its own callbacks and
    /// its own peek pointers.
    pub fn socket(&mut self) -> Result<SockId> {
        let id = match self.sockets.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.sockets.push(None);
                self.callbacks.push(Vec::new());
                self.sockets.len() - 1
            }
        };
        self.sockets[id] = Some(PeekState::default());
        Ok(SockId(id as u32))
    }

    /// `mtcp_close` of a monitoring socket: unregisters its callbacks and forgets its read
    /// pointers; the connections it watched go on.
    pub fn close(&mut self, sock: SockId) -> Result<()> {
        socket_state(&mut self.sockets, sock)?;
        self.sockets[sock.0 as usize] = None;
        self.callbacks[sock.0 as usize].clear();
        self.resubscribe()
    }

    fn check_sock(&self, sock: SockId) -> Result<()> {
        match self.sockets.get(sock.0 as usize) {
            Some(Some(_)) => Ok(()),
            _ => Err(Error::new(
                Errno::EINVAL,
                format!("socket {sock} is not an open monitoring socket"),
            )),
        }
    }

    /// `mtcp_register_callback`: calls `cb` for every event of `events` at `hook` on `sock`'s
    /// flows.
    ///
    /// Hooks match as in mOS: an event raised right after the sender's stack update
    /// (`MOS_HK_SND`) goes to callbacks registered at `Hook::Snd`, one raised after the
    /// receiver's (`MOS_HK_RCV`) to those at `Hook::Rcv`; events tied to no stack update
    /// (`MOS_NULL`: new data, timeouts, connection end, orphans) go to every hook.
    ///
    /// `EINVAL` for a socket that is not open.
    pub fn register_callback(
        &mut self,
        sock: SockId,
        events: EventMask,
        hook: Hook,
        cb: impl FnMut(&mut Ctx<'_>, &Event) + 'static,
    ) -> Result<()> {
        self.register_filtered(
            sock,
            Filter {
                events,
                hook: Some(hook),
                side: None,
            },
            cb,
        )
    }

    /// [`Mos::register_callback`] with a side filter and an optional hook.
    pub fn register_filtered(
        &mut self,
        sock: SockId,
        filter: Filter,
        cb: impl FnMut(&mut Ctx<'_>, &Event) + 'static,
    ) -> Result<()> {
        self.check_sock(sock)?;
        if filter.events.0 == 0 {
            return Err(Error::new(Errno::EINVAL, "no event to register for"));
        }
        self.callbacks[sock.0 as usize].push(Registration {
            filter,
            cb: Box::new(cb),
        });
        self.resubscribe()
    }

    /// De-registration (`mtcp_register_callback` with a null callback): `sock` no longer gets
    /// `events` at `hook`. Returns how many registrations changed.
    pub fn unregister_callback(
        &mut self,
        sock: SockId,
        events: EventMask,
        hook: Hook,
    ) -> Result<usize> {
        self.check_sock(sock)?;
        let regs = &mut self.callbacks[sock.0 as usize];
        let mut changed = 0;
        for r in regs.iter_mut() {
            if r.filter.hook == Some(hook) && r.filter.events.0 & events.0 != 0 {
                r.filter.events.0 &= !events.0;
                changed += 1;
            }
        }
        regs.retain(|r| r.filter.events.0 != 0);
        self.resubscribe()?;
        Ok(changed)
    }

    /// The events this attachment asks the sensor for: what the callbacks want, and
    /// `CONN_END` whenever any callback exists, so read pointers are dropped when flows end.
    fn wanted(&self) -> Subscription {
        let events = self
            .callbacks
            .iter()
            .flatten()
            .fold(0u64, |m, r| m | r.filter.events.0);
        let events = if events == 0 {
            0
        } else {
            events | EventMask::CONN_END.0
        };
        Subscription {
            events,
            packets: self.packets,
        }
    }

    fn resubscribe(&mut self) -> Result<()> {
        let want = self.wanted();
        if self.subscribed == Some(want) {
            return Ok(());
        }
        self.control.send(&ClientMsg::Subscribe(want))?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.control.recv_timeout(Some(left))? {
                Polled::Msg(SensorMsg::Subscribed, _) => break,
                Polled::Msg(m, _) => self.note(m)?,
                Polled::Closed => {
                    self.hung_up = true;
                    return Err(gone());
                }
                Polled::Empty => {
                    return Err(Error::new(
                        Errno::ETIMEDOUT,
                        "the sensor did not acknowledge the subscription",
                    ))
                }
            }
        }
        self.subscribed = Some(want);
        Ok(())
    }

    /// Takes note of a message that is not an answer: `Done`, or `Detached`.
    fn note(&mut self, msg: SensorMsg) -> Result<()> {
        match msg {
            SensorMsg::Done => {
                self.done = true;
                Ok(())
            }
            SensorMsg::Detached { reason } => Err(Error::new(
                Errno::ENOTCONN,
                format!("the sensor detached this analyzer: {reason}"),
            )),
            SensorMsg::Subscribed => Ok(()),
            other => Err(Error::new(
                Errno::EPROTO,
                format!("unexpected message from the sensor: {other:?}"),
            )),
        }
    }

    /// A handle that stops [`Mos::run`] from elsewhere (a signal handler).
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// Runs `f` with a context for reading state outside callbacks (`getlastpkt` then gives
    /// the side's last frame rather than an event's).
    pub fn with_ctx<R>(&mut self, f: impl FnOnce(&mut Ctx<'_>) -> R) -> R {
        let mut stop = false;
        let mut ctx = Ctx {
            regions: &self.regions,
            sockets: &mut self.sockets,
            counters: &mut self.counters,
            current: None,
            stop: &mut stop,
            packets: self.packets,
        };
        f(&mut ctx)
    }

    /// The library's counters, with the events the sensor dropped for this analyzer as of now.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters;
        c.events_dropped = (0..self.regions.nworkers)
            .filter_map(|w| self.regions.event_ring(w).ok())
            .map(|(h, _)| h.dropped.load(Ordering::Relaxed))
            .sum();
        c
    }

    /// For the read-only test: tries to get write access to the main and event regions
    /// (`mprotect` and a new writable `mmap` of the same descriptors); both must fail with
    /// `EACCES`.
    pub fn probe_write_protection(&self) -> Vec<(&'static str, WriteProbe)> {
        self.regions.probe_write_protection()
    }

    /// The run loop: dispatches events to callbacks until the sensor's input is done and every
    /// ring is drained ([`RunEnd::Done`]), or a stop is asked for ([`RunEnd::Stopped`]).
    ///
    /// It spins briefly when the rings are empty, then sleeps with a growing backoff (at most
    /// 2 ms), keeps the analyzer page's heartbeat current, and hands each event back to the
    /// sensor only after its callbacks returned. Errors: `ENOTCONN` when the sensor went away
    /// or detached this analyzer, `EPROTO` for a message or region that does not add up.
    ///
    /// A sensor that goes away while events wait is noticed within about 20 ms of callbacks
    /// (the control socket is looked at then, not on every event); the events it published
    /// stay readable and are still taken for 300 ms, unless it said `Done` first (then all of
    /// them are), and the error says how many were left.
    pub fn run(&mut self) -> Result<RunEnd> {
        if !self.ready_sent {
            self.control.send(&ClientMsg::Ready)?;
            self.ready_sent = true;
        }
        let Mos {
            control,
            regions,
            packets,
            sockets,
            callbacks,
            done,
            hung_up,
            counters,
            stop,
            ..
        } = self;
        let regions: &Regions = regions;
        let page = regions.page();
        let mut consumers = Vec::with_capacity(regions.nworkers);
        for w in 0..regions.nworkers {
            let (hdr, slots) = regions.event_ring(w)?;
            let c = Consumer::new(hdr, slots, &page.consumer[w]).ok_or_else(|| {
                Error::new(
                    Errno::EPROTO,
                    format!("worker {w}'s event ring has an impossible capacity"),
                )
            })?;
            consumers.push(c);
        }
        let header = regions.header();
        let mut idle = 0u32;
        let mut sleep = Duration::from_micros(20);
        let mut last_sweep = Instant::now();
        let mut stop_now = false;
        let mut lookout = Lookout {
            last: Instant::now(),
            gone_at: None,
        };
        let mut since_look = 0u32;
        let mut drain_over = false;
        // Passes since the heartbeat was last stamped: the clock is read once per
        // `HEARTBEAT_PASSES` busy passes and before every pause, not on every pass.
        let mut unstamped = 0u32;
        loop {
            if unstamped == 0 {
                page.heartbeat_ns.store(monotonic_ns(), Ordering::Relaxed);
            }
            unstamped = (unstamped + 1) % HEARTBEAT_PASSES;
            if stop.swap(false, Ordering::Relaxed) || stop_now {
                return Ok(RunEnd::Stopped);
            }
            let mut did = 0u32;
            for (w, cons) in consumers.iter_mut().enumerate() {
                let reason = cons.detached();
                if reason != detach_reason::ATTACHED {
                    return Err(detached_error(reason));
                }
                let mut n = 0;
                while n < BATCH {
                    let Some(rec) = cons.peek() else { break };
                    n += 1;
                    counters.events += 1;
                    match Event::decode(&rec, w as u16) {
                        Some(ev) => {
                            dispatch(
                                regions,
                                sockets,
                                callbacks,
                                counters,
                                &mut stop_now,
                                *packets,
                                &ev,
                            );
                        }
                        None => counters.events_malformed += 1,
                    }
                    cons.advance_deferred();
                    if stop_now {
                        break;
                    }
                    since_look += 1;
                    if since_look >= LOOK_EVERY_EVENTS {
                        since_look = 0;
                        if lookout.drain_over(control, &regions.sensor, done) {
                            drain_over = true;
                            break;
                        }
                    }
                }
                // One store per batch tells the sensor how far this analyzer got.
                cons.commit();
                did += n;
                if stop_now || drain_over {
                    break;
                }
            }
            if drain_over {
                *hung_up = true;
                let unread = consumers.iter().map(Consumer::pending).sum();
                return Err(gone_leaving(unread));
            }
            if did > 0 {
                idle = 0;
                sleep = Duration::from_micros(20);
                continue;
            }
            // Nothing was waiting: is the run over, or did the sensor go away? The control
            // socket costs a system call, so a short idle spell looks at it only now and then
            // (the header's state and each ring's detach word are read on every pass).
            counters.events_dropped = consumers.iter().map(Consumer::dropped).sum();
            idle = idle.saturating_add(1);
            if !*hung_up && (idle >= SPIN_PASSES || idle.is_multiple_of(CONTROL_EVERY)) {
                loop {
                    match control.try_recv()? {
                        Polled::Empty => break,
                        Polled::Closed => {
                            *hung_up = true;
                            regions.sensor.set_gone();
                            break;
                        }
                        Polled::Msg(SensorMsg::Done, _) => *done = true,
                        Polled::Msg(SensorMsg::Detached { reason }, _) => {
                            return Err(Error::new(
                                Errno::ENOTCONN,
                                format!("the sensor detached this analyzer: {reason}"),
                            ))
                        }
                        Polled::Msg(SensorMsg::Subscribed, _) => {}
                        Polled::Msg(other, _) => {
                            return Err(Error::new(
                                Errno::EPROTO,
                                format!("unexpected message from the sensor: {other:?}"),
                            ))
                        }
                    }
                }
            }
            let finished = *done || header.state.load(Ordering::Acquire) == sensor_state::DONE;
            if finished {
                // The state is set after the last event is published: one more look at the
                // rings decides.
                if consumers.iter().all(|c| c.pending() == 0) {
                    return Ok(RunEnd::Done);
                }
                continue;
            }
            if *hung_up {
                return Err(gone());
            }
            if (idle >= SPIN_PASSES || idle.is_multiple_of(CONTROL_EVERY))
                && last_sweep.elapsed() >= SWEEP_EVERY
            {
                sweep(regions, sockets);
                last_sweep = Instant::now();
            }
            if idle < SPIN_PASSES {
                std::hint::spin_loop();
            } else if idle < YIELD_PASSES {
                unstamped = 0;
                std::thread::yield_now();
            } else {
                unstamped = 0;
                page.heartbeat_ns.store(monotonic_ns(), Ordering::Relaxed);
                // Asleep on the page's `waiting` word: a worker that pushes events wakes it.
                // The rings are looked at once more after the flag is up, so that events
                // pushed just before are not left waiting for the timeout.
                page.waiting.store(1, Ordering::SeqCst);
                if consumers.iter().all(|c| c.pending() == 0) {
                    shm_layout::wake::sleep_while_waiting(&page.waiting, sleep);
                }
                page.waiting.store(0, Ordering::Relaxed);
                sleep = (sleep * 2).min(MAX_SLEEP);
            }
        }
    }
}

/// Calls the callbacks that want `ev`, socket by socket in creation order.
fn dispatch(
    regions: &Regions,
    sockets: &mut [Option<PeekState>],
    callbacks: &mut [Vec<Registration>],
    counters: &mut Counters,
    stop: &mut bool,
    packets: bool,
    ev: &Event,
) {
    for (si, regs) in callbacks.iter_mut().enumerate() {
        if !regs.iter().any(|r| r.filter.matches(ev)) {
            continue;
        }
        if let (Some(flow), Some(Some(state))) = (ev.flow, sockets.get_mut(si)) {
            // The analyzer first sees the flow now: its readers start at the oldest bytes
            // still held (a stale handle gets no pointers; its peeks fail with EBADF).
            if let std::collections::hash_map::Entry::Vacant(e) = state.ptrs.entry(flow) {
                if let Ok(p) = initial_pointers(regions, flow) {
                    e.insert(p);
                }
            }
        }
        for r in regs.iter_mut().filter(|r| r.filter.matches(ev)) {
            let mut ctx = Ctx {
                regions,
                sockets: &mut *sockets,
                counters: &mut *counters,
                current: ev.flow.map(|f| (f, ev.record)),
                stop: &mut *stop,
                packets,
            };
            (r.cb)(&mut ctx, ev);
            counters.callbacks += 1;
        }
    }
    // CONN_END comes for both sides, the client's first: after the last one the flow's read
    // pointers go.
    if let (EventKind::ConnEnd { .. }, Some(flow)) = (ev.kind, ev.flow) {
        if ev.side != Some(Side::Cli) {
            forget(sockets, flow);
        }
    }
}

fn forget(sockets: &mut [Option<PeekState>], flow: FlowId) {
    for s in sockets.iter_mut().flatten() {
        s.ptrs.remove(&flow);
    }
}

/// Drops read pointers of flows whose slot moved on (a `CONN_END` the analyzer never got).
fn sweep(regions: &Regions, sockets: &mut [Option<PeekState>]) {
    for s in sockets.iter_mut().flatten() {
        s.ptrs.retain(|flow, _| {
            !matches!(load_flow(regions, *flow, None), Err(e) if e.errno() == Errno::EBADF)
        });
    }
}

impl Drop for Mos {
    fn drop(&mut self) {
        if !self.hung_up {
            // Best effort: closing the socket detaches as well.
            let _ = self.control.send(&ClientMsg::Detach);
        }
    }
}

/// Connects to the control socket at `path`, trying again every 50 ms for up to `wait` while
/// there is no sensor there yet (`ENOENT`: no socket file; `ECONNREFUSED`: nobody listening).
fn connect_waiting(path: &std::path::Path, wait: Duration) -> Result<ControlSocket> {
    let started = std::time::Instant::now();
    loop {
        match ControlSocket::connect(path, REPLY_TIMEOUT) {
            Err(e)
                if matches!(e.errno(), Errno::ENOENT | Errno::ECONNREFUSED)
                    && started.elapsed() < wait =>
            {
                std::thread::sleep(Duration::from_millis(50).min(wait));
            }
            Err(e)
                if !wait.is_zero() && matches!(e.errno(), Errno::ENOENT | Errno::ECONNREFUSED) =>
            {
                return Err(Error::new(
                    e.errno(),
                    format!("{} (waited {:.1} s)", e.message(), wait.as_secs_f64()),
                ))
            }
            r => return r,
        }
    }
}
