//! An attachment to a running sensor (`mtcp_init` + `mtcp_create_context`): monitoring
//! sockets, callbacks, and the run loop that dispatches events to them.

use crate::control::{ControlSocket, Polled};
use crate::ctx::{
    initial_pointers, load_flow, socket_state, Counters, Ctx, PeekState, Pending, PendingReg,
    SockId,
};
use crate::error::{Errno, Error, Result};
use crate::event::{Event, EventKind};
use crate::filter::{Compiled, MonitorFilter};
use crate::flow::FlowId;
use crate::regions::{Regions, Welcome};
use crate::timer::{TimerClock, Timers};
use crate::user_event::UserEvents;
use crate::views::WorkerView;
use shm_layout::control::{ClientMsg, SensorMsg, SocketKind, SocketSub, MAX_SOCKETS};
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
    /// The clock timers run on ([`Mos::settimer`]).
    pub timer_clock: TimerClock,
    /// `Some((index, count))`: this attachment takes only the connections of the sensor's
    /// workers `w` with `w % count == index` (one of `count` attachments that share the
    /// connections, each connection going to exactly one: mOS's per-core contexts, as the C
    /// library's `mtcp_create_context` uses it). `None` (the default): every worker's.
    pub share: Option<(u32, u32)>,
}

impl Default for AttachOptions {
    fn default() -> Self {
        AttachOptions {
            control: PathBuf::from(DEFAULT_CONTROL),
            name: "analyzer".into(),
            packets: false,
            wait: Duration::ZERO,
            timer_clock: TimerClock::Wall,
            share: None,
        }
    }
}

/// The workers (bits) of share `index` of `count` among `nworkers`: `w % count == index`.
pub fn share_mask(index: u32, count: u32, nworkers: usize) -> u32 {
    (0..nworkers.min(32))
        .filter(|&w| count != 0 && w as u32 % count == index)
        .fold(0, |m, w| m | 1 << w)
}

/// Why [`Mos::run`] returned normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// The sensor's input ended and every event was dispatched.
    Done,
    /// [`StopHandle::stop`] or [`Ctx::stop`] was called.
    Stopped,
    /// [`Mos::run_for`]'s time is up, or [`Mos::poll`] took what was there.
    Elapsed,
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

/// Reports the analyzer's own numbers to the sensor, through the analyzer page: the sensor
/// shows them in `mos-ctl status` and its metrics, and uses them for nothing else. Cheap to
/// clone and usable from any thread (an output's network thread, say); it keeps the page
/// mapped while it lives, and writing after the detach is harmless (nobody reads it any more).
#[derive(Clone)]
pub struct ReportHandle(Arc<Regions>);

impl ReportHandle {
    /// Sets the count of records this analyzer dropped on its own side so far (a broker that
    /// was down or too slow, a full queue of its own): `mos-ctl status` shows it as the
    /// analyzer's `REC-DROPPED` (ABI minor 3; an older sensor does not show it). The value is
    /// the total, not an increment: call it again whenever the count changes.
    pub fn set_records_dropped(&self, n: u64) {
        self.0.page().records_dropped.store(n, Ordering::Release);
    }

    /// The count last set (0 before any).
    pub fn records_dropped(&self) -> u64 {
        self.0.page().records_dropped.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for ReportHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportHandle")
            .field("records_dropped", &self.records_dropped())
            .finish()
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
    /// Whether the filter takes `ev` (as the event `ev.id`: a user-defined event fires with
    /// its base event's data and its own id).
    fn matches(&self, ev: &Event) -> bool {
        let hook_ok = match (self.hook, ev.hook) {
            (None, _) | (_, Hook::Null) => true,
            (Some(h), e) => h == e,
        };
        self.events.0 & ev.id.0 != 0 && hook_ok && self.side.is_none_or(|s| Some(s) == ev.side)
    }
}

/// A callback: the context to read state through, and the event.
pub type Callback = Box<dyn FnMut(&mut Ctx<'_>, &Event)>;

struct Registration {
    filter: Filter,
    /// Registered on one flow only (from inside a callback): dropped when it ends.
    flow: Option<FlowId>,
    cb: Callback,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

/// One socket's type and filters, as bound.
#[derive(Clone, Debug, Default)]
struct SockFilters {
    kind: SocketKind,
    syn: Option<Compiled>,
    orphan: Option<Compiled>,
    raw: Option<Compiled>,
}

/// What the sensor was last told: packets, and the sockets.
type Sent = (bool, Vec<SocketSub>);

/// What the sensor is configured with, as an analyzer may need it (`mtcp_getconf`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conf {
    /// Workers (mOS's `num_cores`): one event ring each.
    pub workers: usize,
    /// Connections each worker tracks at once (mOS's `max_concurrency`).
    pub max_flows_per_worker: u64,
    /// Stream buffers each worker has (mOS's `max_num_buffers`): one per side holding bytes.
    pub buffers_per_worker: u64,
    /// Bytes of one stream chunk.
    pub chunk_size: u64,
    /// The most bytes one side holds from its oldest byte (mOS's `rcvbuf_size` is the fixed
    /// size of its ring; here a side grows in chunks up to this).
    pub stream_max_bytes: u64,
    /// Bytes a side keeps behind its tail for late readers.
    pub history_bytes: u64,
    /// Idle timeout (mOS's `tcp_timeout`).
    pub idle_timeout: Duration,
    /// How overlapping retransmissions are resolved.
    pub overlap_policy: crate::OverlapPolicy,
    /// Whether the sensor waits for analyzers (lossless) or drops for them (live).
    pub lossless: bool,
    /// The input's link types (`LINKTYPE_*`), for which filters are compiled.
    pub linktypes: Vec<u32>,
    /// Records per event ring.
    pub event_ring_len: u64,
    /// Packet-log entries per worker (0: the sensor keeps no packet log).
    pub pktlog_entries: u64,
}

/// An attachment to a sensor. Dropping it detaches.
#[derive(Debug)]
pub struct Mos {
    control: ControlSocket,
    regions: Arc<Regions>,
    packets: bool,
    /// Per socket (index = [`SockId`]): `Some` while open.
    sockets: Vec<Option<PeekState>>,
    callbacks: Vec<Vec<Registration>>,
    /// Per socket: its type and filters.
    filters: Vec<SockFilters>,
    /// Per socket: every event bit it needs raised (its callbacks' events, and the events
    /// their user-defined events are built on).
    needs: Vec<u64>,
    user_events: UserEvents,
    timers: Timers,
    timer_clock: TimerClock,
    /// The newest capture time of an event dispatched so far.
    capture_ns: u64,
    pending: Pending,
    subscribed: Option<Sent>,
    ready_sent: bool,
    /// The sensor said `Done`.
    done: bool,
    /// The control socket closed.
    hung_up: bool,
    counters: Counters,
    stop: Arc<AtomicBool>,
}

pub(crate) fn monotonic_ns() -> u64 {
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
        control: &mut ControlSocket,
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
        let mut control = connect_waiting(&opts.control, opts.wait)?;
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
        let regions = Arc::new(Regions::new(welcome, fds, control.watch()?)?);
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
            filters: Vec::new(),
            needs: Vec::new(),
            user_events: UserEvents::default(),
            timers: Timers::default(),
            timer_clock: opts.timer_clock,
            capture_ns: 0,
            pending: Pending::default(),
            subscribed: None,
            ready_sent: false,
            done: false,
            hung_up: false,
            counters: Counters::default(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        if let Some((index, count)) = opts.share {
            if count == 0 || index >= count {
                return Err(Error::new(
                    Errno::EINVAL,
                    format!("share {index} of {count}: the index must be below the count"),
                ));
            }
            mos.control.send(&ClientMsg::Workers {
                mask: share_mask(index, count, mos.regions.nworkers),
            })?;
        }
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

    /// `mtcp_socket(MOS_SOCK_MONITOR_STREAM)`: a monitoring socket with its own callbacks,
    /// filters and peek pointers. `EMFILE` past 32 open sockets.
    pub fn socket(&mut self) -> Result<SockId> {
        self.open_socket(SocketKind::Stream)
    }

    /// `mtcp_socket(MOS_SOCK_MONITOR_RAW)`: a socket that gets every packet its raw filter
    /// takes ([`Mos::bind_monitor_filter`]), TCP or not, as a [`EventMask::ORPHAN`] event at
    /// [`Hook::Null`] with no flow; [`Ctx::event_packet`] gives the packet. Needs
    /// [`AttachOptions::packets`] (`EINVAL` without). The packets are those of IP (v4 or v6)
    /// the sensor reads, each once; frames that are not IP are not offered.
    pub fn raw_socket(&mut self) -> Result<SockId> {
        if !self.packets {
            return Err(Error::new(
                Errno::EINVAL,
                "a raw socket gives packets: attach with AttachOptions::packets",
            ));
        }
        self.open_socket(SocketKind::Raw)
    }

    fn open_socket(&mut self, kind: SocketKind) -> Result<SockId> {
        let id = match self.sockets.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.sockets.len() < MAX_SOCKETS => {
                self.sockets.push(None);
                self.callbacks.push(Vec::new());
                self.filters.push(SockFilters::default());
                self.needs.push(0);
                self.sockets.len() - 1
            }
            None => {
                return Err(Error::new(
                    Errno::EMFILE,
                    format!("an attachment has at most {MAX_SOCKETS} open sockets"),
                ))
            }
        };
        self.sockets[id] = Some(PeekState::default());
        self.filters[id] = SockFilters {
            kind,
            ..SockFilters::default()
        };
        self.needs[id] = 0;
        let sock = SockId(id as u32);
        if let Err(e) = self.resubscribe() {
            self.sockets[id] = None;
            return Err(e);
        }
        Ok(sock)
    }

    /// `mtcp_close` of a monitoring socket: unregisters its callbacks, drops its filters and
    /// forgets its read pointers and user contexts; the connections it watched go on.
    pub fn close(&mut self, sock: SockId) -> Result<()> {
        socket_state(&mut self.sockets, sock)?;
        self.sockets[sock.0 as usize] = None;
        self.callbacks[sock.0 as usize].clear();
        self.filters[sock.0 as usize] = SockFilters::default();
        self.needs[sock.0 as usize] = 0;
        self.resubscribe()
    }

    /// `mtcp_bind_monitor_filter`: gives `sock` the filters of `filter` (libpcap expressions,
    /// `tcpdump`'s syntax), compiled here with libpcap and run by the sensor, so that the
    /// socket gets only the connections (or packets) they take. A filter left `None` (or
    /// empty) is not changed. A stream socket takes `stream_syn_filter` (decided once per
    /// connection, on its first packet: the SYN, or the first packet seen midstream) and
    /// `stream_orphan_filter`; a raw socket takes `raw_pkt_filter`.
    ///
    /// Errors: `EBADF` for a socket that is not open; `ENOPROTOOPT` for a filter of the other
    /// socket type; `EINVAL` for an expression libpcap refuses (its message is given) or that
    /// the sensor refuses to run.
    pub fn bind_monitor_filter(&mut self, sock: SockId, filter: &MonitorFilter<'_>) -> Result<()> {
        socket_state(&mut self.sockets, sock)?;
        let i = sock.0 as usize;
        let kind = self.filters[i].kind;
        fn given(f: Option<&str>) -> Option<&str> {
            f.filter(|e| !e.trim().is_empty())
        }
        let (syn, orphan, raw) = (
            given(filter.stream_syn_filter),
            given(filter.stream_orphan_filter),
            given(filter.raw_pkt_filter),
        );
        let wrong = match kind {
            SocketKind::Stream => raw.map(|_| "raw_pkt_filter is for raw sockets"),
            SocketKind::Raw => (syn.is_some() || orphan.is_some())
                .then_some("stream_syn_filter and stream_orphan_filter are for stream sockets"),
        };
        if let Some(why) = wrong {
            return Err(Error::new(
                Errno::ENOPROTOOPT,
                format!("socket {sock}: {why}"),
            ));
        }
        let links = self.getconf().linktypes;
        let compile = |e: Option<&str>| e.map(|e| crate::filter::compile(e, &links)).transpose();
        let (syn, orphan, raw) = (compile(syn)?, compile(orphan)?, compile(raw)?);
        let before = self.filters[i].clone();
        let f = &mut self.filters[i];
        if syn.is_some() {
            f.syn = syn;
        }
        if orphan.is_some() {
            f.orphan = orphan;
        }
        if raw.is_some() {
            f.raw = raw;
        }
        if let Err(e) = self.resubscribe() {
            self.filters[i] = before;
            return Err(e);
        }
        Ok(())
    }

    /// `mtcp_define_event`: a user-defined event that fires when `base` (a built-in event or
    /// another user-defined one) fires on a socket and `filter` returns true for it. Returns
    /// the new event's id, one bit above the built-in ones, to register callbacks on like on
    /// any event. What mOS passes as the filter's argument is what the closure captures.
    ///
    /// `EINVAL` when `base` is not one event; `ENOMEM` past 53 user-defined events.
    pub fn define_event(
        &mut self,
        base: EventMask,
        filter: impl FnMut(&mut Ctx<'_>, &Event) -> bool + 'static,
    ) -> Result<EventMask> {
        let id = self.user_events.define(base, Box::new(filter))?;
        self.pending.made |= id.0;
        Ok(id)
    }

    /// `mtcp_alloc_event`: an event with no filter, raised only by [`Ctx::raise_event`] while
    /// `parent` is being handled (in a filter of an event based on `parent`, or in a callback
    /// of `parent`). Callbacks may be registered on it (mOS did not allow it).
    ///
    /// `EINVAL` when `parent` is not one event; `ENOMEM` past 53 user-defined events.
    pub fn alloc_event(&mut self, parent: EventMask) -> Result<EventMask> {
        let id = self.user_events.alloc(parent)?;
        self.pending.allocated |= id.0;
        self.pending.made |= id.0;
        Ok(id)
    }

    /// `mtcp_settimer`: `cb` runs once, `after` from now on the attachment's timer clock
    /// ([`AttachOptions::timer_clock`]), from within [`Mos::run`] (or `run_for`, `poll`),
    /// with `id`. Timers still set when the run ends do not fire.
    pub fn settimer(
        &mut self,
        id: i32,
        after: Duration,
        cb: impl FnMut(&mut Ctx<'_>, i32) + 'static,
    ) {
        self.sync_capture_clock();
        let now = self.timer_now();
        self.timers.set(now, after, id, Box::new(cb));
    }

    /// The timer clock now, in ns: monotonic time, or the newest capture time seen.
    fn timer_now(&self) -> u64 {
        match self.timer_clock {
            TimerClock::Wall => monotonic_ns(),
            TimerClock::Capture => self.capture_ns,
        }
    }

    /// Capture clock: once every published event is dispatched, the sensor's clock (it may
    /// have read frames that raised nothing for this analyzer) is the capture time.
    fn sync_capture_clock(&mut self) {
        if self.timer_clock != TimerClock::Capture {
            return;
        }
        let page = self.regions.page();
        let pending = (0..self.regions.nworkers).any(|w| {
            self.regions.event_ring(w).is_ok_and(|(hdr, slots)| {
                Consumer::new(hdr, slots, &page.consumer[w]).is_some_and(|c| c.pending() > 0)
            })
        });
        if !pending {
            let sensor = self.regions.header().clock_ns.load(Ordering::Acquire);
            self.capture_ns = self.capture_ns.max(sensor);
        }
    }

    /// `mtcp_getconf`: the sensor's configuration, as far as an analyzer needs it.
    pub fn getconf(&self) -> Conf {
        let c = &self.regions.config;
        let h = self.regions.header();
        let linktypes = h
            .input
            .linktypes
            .iter()
            .copied()
            .filter(|&l| l != shm_layout::layout::NO_LINKTYPE)
            .collect();
        Conf {
            workers: self.regions.nworkers,
            max_flows_per_worker: c.slots_per_worker.saturating_sub(2),
            buffers_per_worker: c.buffers_per_worker,
            chunk_size: c.chunk_size,
            stream_max_bytes: c.chunk_size.saturating_mul(c.chunk_map_len),
            history_bytes: h.input.history,
            idle_timeout: Duration::from_nanos(c.idle_timeout_ns),
            overlap_policy: crate::OverlapPolicy::from_code(c.overlap_policy),
            lossless: h.features & shm_layout::layout::features::LOSSLESS != 0,
            linktypes,
            event_ring_len: c.event_ring_len,
            pktlog_entries: c.pktlog_entries,
        }
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
        self.check_event(filter.events)?;
        self.callbacks[sock.0 as usize].push(Registration {
            filter,
            flow: None,
            cb: Box::new(cb),
        });
        self.resubscribe()
    }

    /// `EINVAL` unless every bit of `events` is a built-in event or one made here.
    fn check_event(&self, events: EventMask) -> Result<()> {
        let unknown = (0..64)
            .map(|b| EventMask(1 << b))
            .filter(|&e| events.0 & e.0 != 0)
            .find(|&e| !self.user_events.exists(e));
        match unknown {
            Some(e) => Err(Error::new(
                Errno::EINVAL,
                format!(
                    "event {:#x} is neither built in nor made by define_event or alloc_event",
                    e.0
                ),
            )),
            None => Ok(()),
        }
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
        for r in regs.iter_mut().filter(|r| r.flow.is_none()) {
            if r.filter.hook == Some(hook) && r.filter.events.0 & events.0 != 0 {
                r.filter.events.0 &= !events.0;
                changed += 1;
            }
        }
        regs.retain(|r| r.filter.events.0 != 0);
        self.resubscribe()?;
        Ok(changed)
    }

    /// What this attachment asks the sensor for, socket by socket: the built-in events its
    /// callbacks want (the roots of user-defined events counted), with `CONN_END` whenever a
    /// socket wants anything, so read pointers are dropped when flows end; and its filters.
    fn wanted(&mut self) -> Sent {
        let mut socks = Vec::new();
        for (i, f) in self.filters.iter().enumerate() {
            if self.sockets[i].is_none() {
                continue;
            }
            let mine = self.callbacks[i]
                .iter()
                .fold(0u64, |m, r| m | r.filter.events.0);
            self.needs[i] = self.user_events.needed_for(EventMask(mine));
            let events = self.user_events.roots(EventMask(mine)).0;
            let events = match f.kind {
                SocketKind::Stream if events != 0 => events | EventMask::CONN_END.0,
                _ => events,
            };
            let progs = |c: &Option<Compiled>| c.as_ref().map(|c| c.progs.clone());
            socks.push(SocketSub {
                id: i as u8,
                kind: f.kind,
                events,
                syn: progs(&f.syn),
                orphan: progs(&f.orphan),
                raw: progs(&f.raw),
            });
        }
        (self.packets, socks)
    }

    fn resubscribe(&mut self) -> Result<()> {
        let want = self.wanted();
        if self.subscribed.as_ref() == Some(&want) {
            return Ok(());
        }
        self.control.send(&ClientMsg::SubscribeSockets {
            packets: want.0,
            sockets: want.1.clone(),
        })?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.control.recv_timeout(Some(left))? {
                Polled::Msg(SensorMsg::Subscribed, _) => break,
                Polled::Msg(SensorMsg::Invalid { reason }, _) => {
                    return Err(Error::new(
                        Errno::EINVAL,
                        format!("the sensor refused the subscription: {reason}"),
                    ))
                }
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

    /// A handle that reports the analyzer's own counts to the sensor (records it dropped), from
    /// any thread.
    pub fn report_handle(&self) -> ReportHandle {
        ReportHandle(self.regions.clone())
    }

    /// Runs `f` with a context for reading state outside callbacks (`getlastpkt` then gives
    /// the side's last frame rather than an event's, and `peek` reads to the newest byte).
    /// What `f` asks for through the context (timers, registrations, stops) is done when it
    /// returns.
    pub fn with_ctx<R>(&mut self, f: impl FnOnce(&mut Ctx<'_>) -> R) -> R {
        let mut stop = false;
        let r = {
            let views = WorkerView::all(&self.regions);
            let mut ctx = Ctx {
                sock: None,
                regions: &self.regions,
                views: &views,
                sockets: &mut self.sockets,
                counters: &mut self.counters,
                current: None,
                event: None,
                stop: &mut stop,
                packets: self.packets,
                pending: &mut self.pending,
                clock: (self.timer_clock, self.capture_ns),
            };
            f(&mut ctx)
        };
        // A failure here (the sensor went away) shows in the next call that talks to it.
        let _ = self.apply_pending();
        r
    }

    /// Does what callbacks asked for through their context: registrations (and the
    /// subscription they change), timers, messages to the sensor.
    fn apply_pending(&mut self) -> Result<()> {
        let now = self.timer_now();
        for (id, after, cb) in self.pending.timers.drain(..) {
            self.timers.set(now, after, id, cb);
        }
        let regs = std::mem::take(&mut self.pending.regs);
        let changed = !regs.is_empty() || std::mem::take(&mut self.pending.resubscribe);
        for r in regs {
            match r {
                PendingReg::Add {
                    sock,
                    flow,
                    filter,
                    cb,
                } => {
                    if let Some(list) = self.callbacks.get_mut(sock.0 as usize) {
                        list.push(Registration { filter, flow, cb });
                    }
                }
                PendingReg::Remove {
                    sock,
                    flow,
                    events,
                    hook,
                } => {
                    if let Some(list) = self.callbacks.get_mut(sock.0 as usize) {
                        for r in list
                            .iter_mut()
                            .filter(|r| r.flow == flow && r.filter.hook == Some(hook))
                        {
                            r.filter.events.0 &= !events.0;
                        }
                        list.retain(|r| r.filter.events.0 != 0);
                    }
                }
            }
        }
        for m in std::mem::take(&mut self.pending.msgs) {
            if !self.hung_up {
                self.control.send(&m)?;
            }
        }
        if changed {
            self.resubscribe()?;
        }
        Ok(())
    }

    /// Runs the timers due by the timer clock.
    fn fire_timers(&mut self) -> Result<()> {
        let now = self.timer_now();
        while let Some((id, mut cb)) = self.timers.pop_due(now) {
            let mut stop = false;
            {
                let views = WorkerView::all(&self.regions);
                let mut ctx = Ctx {
                    sock: None,
                    regions: &self.regions,
                    views: &views,
                    sockets: &mut self.sockets,
                    counters: &mut self.counters,
                    current: None,
                    event: None,
                    stop: &mut stop,
                    packets: self.packets,
                    pending: &mut self.pending,
                    clock: (self.timer_clock, self.capture_ns),
                };
                cb(&mut ctx, id);
            }
            if stop {
                self.stop.store(true, Ordering::Relaxed);
            }
            self.apply_pending()?;
        }
        Ok(())
    }

    /// Sleeps until a worker publishes events for this analyzer or `timeout` passes, for an
    /// analyzer with its own loop: wait here, then call [`Mos::poll`]. Returns whether events
    /// are waiting. The wait is on the analyzer page's `waiting` word (a futex), which workers
    /// wake when they push events while it is set.
    pub fn wait(&self, timeout: Duration) -> bool {
        let page = self.regions.page();
        let pending = || {
            (0..self.regions.nworkers).any(|w| {
                self.regions.event_ring(w).is_ok_and(|(hdr, slots)| {
                    Consumer::new(hdr, slots, &page.consumer[w]).is_some_and(|c| c.pending() > 0)
                })
            })
        };
        if pending() {
            return true;
        }
        page.waiting.store(1, Ordering::SeqCst);
        if !pending() {
            shm_layout::wake::sleep_while_waiting(&page.waiting, timeout);
        }
        page.waiting.store(0, Ordering::Relaxed);
        pending()
    }

    /// Takes the events waiting now, and the timers due, without waiting for more: for an
    /// analyzer with its own loop. Returns [`RunEnd::Elapsed`] while the run goes on, or how
    /// it ended.
    pub fn poll(&mut self) -> Result<RunEnd> {
        self.run_until(Some(Instant::now()))
    }

    /// [`Mos::run`] for at most `d`: returns [`RunEnd::Elapsed`] when the time is up first.
    pub fn run_for(&mut self, d: Duration) -> Result<RunEnd> {
        self.run_until(Some(Instant::now() + d))
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
        self.run_until(None)
    }

    fn run_until(&mut self, deadline: Option<Instant>) -> Result<RunEnd> {
        if !self.ready_sent {
            self.control.send(&ClientMsg::Ready)?;
            self.ready_sent = true;
        }
        // The rings are read through a handle of the regions' own, so that callbacks can be
        // dispatched (and what they ask for done) through `self` meanwhile.
        let regions = self.regions.clone();
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
        let views = WorkerView::all(&regions);
        // Once the analyzer peeks, what later events will have it read is prefetched while
        // the current one is dispatched.
        let mut ahead = vec![crate::lookahead::Lookahead::default(); regions.nworkers];
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
        let mut passes = 0u64;
        // Passes since the heartbeat was last stamped: the clock is read once per
        // `HEARTBEAT_PASSES` busy passes and before every pause, not on every pass.
        let mut unstamped = 0u32;
        loop {
            if unstamped == 0 {
                page.heartbeat_ns.store(monotonic_ns(), Ordering::Relaxed);
            }
            unstamped = (unstamped + 1) % HEARTBEAT_PASSES;
            if self.stop.swap(false, Ordering::Relaxed) || stop_now {
                return Ok(RunEnd::Stopped);
            }
            if passes > 0 && deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(RunEnd::Elapsed);
            }
            passes += 1;
            if self.timers.len() > 0 {
                self.fire_timers()?;
            }
            let mut did = 0u32;
            for (w, cons) in consumers.iter_mut().enumerate() {
                let reason = cons.detached();
                if reason != detach_reason::ATTACHED {
                    return Err(detached_error(reason));
                }
                let mut n = 0;
                while n < BATCH {
                    let Some(rec) = cons.peek_direct() else { break };
                    if regions.peeked.load(Ordering::Relaxed) {
                        ahead[w].step(&views[w], cons, cons.consumed());
                    }
                    n += 1;
                    self.counters.events += 1;
                    match Event::decode(&rec, w as u16) {
                        Some(ev) => {
                            self.capture_ns = self.capture_ns.max(ev.ts_ns);
                            // On the capture clock a timer fires between the events it falls
                            // between, not a batch later.
                            if self.timer_clock == TimerClock::Capture
                                && self.timers.next_due().is_some_and(|d| d <= self.capture_ns)
                            {
                                self.fire_timers()?;
                            }
                            self.dispatch(&ev, &views, &mut stop_now);
                            if self.pending.has_work() {
                                self.apply_pending()?;
                            }
                        }
                        None => self.counters.events_malformed += 1,
                    }
                    cons.advance_deferred();
                    if stop_now {
                        break;
                    }
                    since_look += 1;
                    if since_look >= LOOK_EVERY_EVENTS {
                        since_look = 0;
                        if lookout.drain_over(&mut self.control, &regions.sensor, &mut self.done) {
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
                self.hung_up = true;
                let unread = consumers.iter().map(Consumer::pending).sum();
                return Err(gone_leaving(unread));
            }
            if did > 0 {
                idle = 0;
                sleep = Duration::from_micros(20);
                continue;
            }
            if self.timer_clock == TimerClock::Capture && consumers.iter().all(|c| c.pending() == 0)
            {
                self.capture_ns = self.capture_ns.max(header.clock_ns.load(Ordering::Acquire));
            }
            // Nothing was waiting: is the run over, or did the sensor go away? The control
            // socket costs a system call, so a short idle spell looks at it only now and then
            // (the header's state and each ring's detach word are read on every pass).
            self.counters.events_dropped = consumers.iter().map(Consumer::dropped).sum();
            idle = idle.saturating_add(1);
            if !self.hung_up && (idle >= SPIN_PASSES || idle.is_multiple_of(CONTROL_EVERY)) {
                loop {
                    match self.control.try_recv()? {
                        Polled::Empty => break,
                        Polled::Closed => {
                            self.hung_up = true;
                            regions.sensor.set_gone();
                            break;
                        }
                        Polled::Msg(SensorMsg::Done, _) => self.done = true,
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
            let finished = self.done || header.state.load(Ordering::Acquire) == sensor_state::DONE;
            if finished {
                // The state is set after the last event is published: one more look at the
                // rings decides.
                if consumers.iter().all(|c| c.pending() == 0) {
                    return Ok(RunEnd::Done);
                }
                continue;
            }
            if self.hung_up {
                return Err(gone());
            }
            if (idle >= SPIN_PASSES || idle.is_multiple_of(CONTROL_EVERY))
                && last_sweep.elapsed() >= SWEEP_EVERY
            {
                self.sweep();
                last_sweep = Instant::now();
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(RunEnd::Elapsed);
            }
            if idle < SPIN_PASSES {
                std::hint::spin_loop();
            } else if idle < YIELD_PASSES {
                unstamped = 0;
                std::thread::yield_now();
            } else {
                unstamped = 0;
                page.heartbeat_ns.store(monotonic_ns(), Ordering::Relaxed);
                // No longer than until the next wall-clock timer or the deadline.
                let mut nap = sleep;
                if let (TimerClock::Wall, Some(due)) = (self.timer_clock, self.timers.next_due()) {
                    nap = nap.min(Duration::from_nanos(due.saturating_sub(monotonic_ns())));
                }
                if let Some(d) = deadline {
                    nap = nap.min(d.saturating_duration_since(Instant::now()));
                }
                // Asleep on the page's `waiting` word: a worker that pushes events wakes it.
                // The rings are looked at once more after the flag is up, so that events
                // pushed just before are not left waiting for the timeout.
                page.waiting.store(1, Ordering::SeqCst);
                if consumers.iter().all(|c| c.pending() == 0) {
                    shm_layout::wake::sleep_while_waiting(&page.waiting, nap);
                }
                page.waiting.store(0, Ordering::Relaxed);
                sleep = (sleep * 2).min(MAX_SLEEP);
            }
        }
    }

    /// Calls the callbacks that want `ev`, socket by socket in creation order: each socket
    /// the sensor addressed the event to ([`EventRecord::socks`](shm_layout::layout::EventRecord::socks))
    /// that did not stop monitoring its flow and side, with the user-defined events built on
    /// it.
    fn dispatch(&mut self, ev: &Event, views: &[WorkerView<'_>], stop: &mut bool) {
        let mut d = Dispatch {
            regions: &self.regions,
            views,
            sockets: &mut self.sockets,
            callbacks: &mut self.callbacks,
            user_events: &mut self.user_events,
            needs: &self.needs,
            counters: &mut self.counters,
            pending: &mut self.pending,
            stop,
            packets: self.packets,
            clock: (self.timer_clock, self.capture_ns),
        };
        let socks = ev.record.socks;
        for si in 0..d.callbacks.len() {
            if si < 32 && socks & (1 << si) == 0 {
                continue;
            }
            if d.needs[si] & ev.id.0 == 0 {
                continue;
            }
            let Some(Some(state)) = d.sockets.get_mut(si) else {
                continue;
            };
            if let Some(flow) = ev.flow {
                if state.is_stopped(flow, ev.side) {
                    continue;
                }
                // The socket first sees the flow now: its readers start at the oldest bytes
                // still held (a stale handle gets no pointers; its peeks fail with EBADF).
                if !state.ptrs.contains(flow) {
                    if let Ok(p) = initial_pointers(d.regions, d.views, flow) {
                        state.ptrs.insert(flow, p);
                    }
                }
            }
            d.pending.raises = 0;
            d.fire(si, ev, ev.id, 0);
        }
        // CONN_END comes for both sides, the client's first: after the last one the flow's
        // read pointers, user contexts and per-flow registrations go.
        if let (EventKind::ConnEnd { .. }, Some(flow)) = (ev.kind, ev.flow) {
            if ev.side != Some(Side::Cli) {
                self.forget(flow);
            }
        }
    }

    fn forget(&mut self, flow: FlowId) {
        for s in self.sockets.iter_mut().flatten() {
            s.forget(flow);
        }
        let mut dropped = false;
        for regs in &mut self.callbacks {
            let n = regs.len();
            regs.retain(|r| r.flow != Some(flow));
            dropped |= regs.len() != n;
        }
        if dropped {
            // The events they wanted may be wanted no more.
            self.pending.resubscribe = true;
        }
    }

    /// Drops what is kept for flows whose slot moved on (a `CONN_END` the analyzer never got).
    fn sweep(&mut self) {
        let regions = &self.regions;
        let gone = |flow: &FlowId| matches!(load_flow(regions, *flow, None), Err(e) if e.errno() == Errno::EBADF);
        let mut flows: Vec<FlowId> = Vec::new();
        for s in self.sockets.iter().flatten() {
            flows.extend(
                s.ptrs
                    .keys()
                    .chain(s.uctx.keys().copied())
                    .chain(s.stopped.keys().copied()),
            );
        }
        for regs in &self.callbacks {
            flows.extend(regs.iter().filter_map(|r| r.flow));
        }
        flows.sort_unstable();
        flows.dedup();
        flows.retain(|f| gone(f));
        for f in flows {
            self.forget(f);
        }
    }
}

/// The parts of a [`Mos`] one event's dispatch uses.
struct Dispatch<'a> {
    regions: &'a Regions,
    views: &'a [WorkerView<'a>],
    sockets: &'a mut [Option<PeekState>],
    callbacks: &'a mut [Vec<Registration>],
    user_events: &'a mut UserEvents,
    needs: &'a [u64],
    counters: &'a mut Counters,
    pending: &'a mut Pending,
    stop: &'a mut bool,
    packets: bool,
    clock: (TimerClock, u64),
}

/// How deep chains of user-defined events (and raises) go: each link is a distinct event, so
/// 64 bits bound any chain that does not raise in a loop.
const MAX_CHAIN: u32 = 64;

impl Dispatch<'_> {
    fn ctx<'s>(&'s mut self, si: usize, ev: &'s Event) -> Ctx<'s> {
        Ctx {
            sock: Some(SockId(si as u32)),
            regions: self.regions,
            views: self.views,
            sockets: &mut *self.sockets,
            counters: &mut *self.counters,
            current: ev.flow.map(|f| (f, &ev.record)),
            event: Some(&ev.record),
            stop: &mut *self.stop,
            packets: self.packets,
            pending: &mut *self.pending,
            clock: self.clock,
        }
    }

    /// Fires event `id` (built-in or user-defined) with `base`'s data on socket `si`: its
    /// callbacks, then the events defined on it whose filter says yes, then the events raised
    /// meanwhile.
    fn fire(&mut self, si: usize, base: &Event, id: EventMask, depth: u32) {
        if depth > MAX_CHAIN || self.needs[si] & id.0 == 0 {
            return;
        }
        // The event with `id` as the one fired: `base` itself for a built-in event, a copy for a
        // user-defined one.
        let derived;
        let ev = if base.id == id {
            base
        } else {
            derived = Event { id, ..*base };
            &derived
        };
        let n = self.callbacks[si].len();
        for k in 0..n {
            let r = &self.callbacks[si][k];
            if !r.filter.matches(ev) || r.flow.is_some_and(|f| Some(f) != ev.flow) {
                continue;
            }
            // The callback is taken out while it runs, so the context can borrow the rest.
            let mut cb = std::mem::replace(&mut self.callbacks[si][k].cb, Box::new(|_, _| {}));
            cb(&mut self.ctx(si, ev), ev);
            self.callbacks[si][k].cb = cb;
            self.counters.callbacks += 1;
            if *self.stop {
                return;
            }
        }
        self.fire_raised(si, base, depth);
        for u in 0..self.user_events.list.len() {
            let (uid, ubase) = (self.user_events.list[u].id, self.user_events.list[u].base);
            if ubase != id || self.needs[si] & uid.0 == 0 {
                continue;
            }
            let Some(mut filter) = self.user_events.list[u].filter.take() else {
                continue;
            };
            let yes = filter(&mut self.ctx(si, ev), ev);
            self.user_events.list[u].filter = Some(filter);
            self.fire_raised(si, base, depth);
            if yes {
                self.fire(si, base, uid, depth + 1);
            }
            if *self.stop {
                return;
            }
        }
    }

    fn fire_raised(&mut self, si: usize, base: &Event, depth: u32) {
        if self.pending.raised.is_empty() {
            return;
        }
        for r in std::mem::take(&mut self.pending.raised) {
            self.fire(si, base, r, depth + 1);
        }
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

#[cfg(test)]
mod report_tests {
    use super::*;
    use crate::fake_sensor::{FakeConfig, FakeSensor};

    #[test]
    fn a_report_handle_writes_the_pages_records_dropped_from_another_thread() {
        fn send_and_sync<T: Send + Sync + Clone>() {}
        send_and_sync::<ReportHandle>();
        let fake = FakeSensor::new(FakeConfig::default());
        let mos = Mos::attach(&AttachOptions {
            control: fake.path().to_path_buf(),
            name: "report-test".into(),
            ..AttachOptions::default()
        })
        .unwrap();
        let h = mos.report_handle();
        assert_eq!(fake.page().records_dropped.load(Ordering::Relaxed), 0);
        let h2 = h.clone();
        std::thread::spawn(move || h2.set_records_dropped(41))
            .join()
            .unwrap();
        assert_eq!(fake.page().records_dropped.load(Ordering::Acquire), 41);
        h.set_records_dropped(42);
        assert_eq!(h.records_dropped(), 42);
        assert_eq!(fake.page().records_dropped.load(Ordering::Acquire), 42);
        // The handle outlives the attachment without harm.
        drop(mos);
        h.set_records_dropped(43);
        assert_eq!(h.records_dropped(), 43);
    }
}
