//! What callbacks (and the analyzer between runs) read the sensor's state through: `peek`,
//! `ppeek`, `getsockopt`, `getlastpkt`, `getpeername`.
//!
//! Every read copies, then re-validates. A flow slot is copied under its seqlock and its
//! generation compared with the handle's, so a stale handle fails with `EBADF` and never shows
//! another connection's data. Stream bytes are copied through the side's chunk map and then
//! the slot is read again: if the side's buffer changed, or its head (or the point below which
//! gaps are no longer known) moved past the first byte copied, the copy may be torn (the sensor
//! may have freed and reused a chunk under it), so it is thrown away and the reader is told of
//! an overrun instead. A copy that stands although the chunk map named no chunk for its bytes
//! is the sensor's error (`EPROTO`), not an overrun.

use crate::error::{Errno, Error, Result};
use crate::flow::{endpoints, FlowId, FlowInfo};
use crate::packet::Packet;
use crate::regions::{Copied, Regions};
use crate::sockopt::{OptValue, OverlapPolicy, RingFragment, SockOpt, TcpBufInfo};
use crate::stream::{self, Chunk};
use crate::timer::TimerCallback;
use crate::views::WorkerView;
use crate::watch::SensorWatch;
use shm_layout::control::ClientMsg;
use shm_layout::flow::{
    read_flow, read_flow_with_meta, read_flow_with_tunnel, read_side_at, read_side_starts,
};
use shm_layout::layout::{
    flow_flags, overlap_policy, side_flags, EventRecord, FlowData, FlowSlot, RingMeta, TunnelData,
    NO_PKT,
};
use shm_layout::pktlog::read_packet;
use shm_layout::{EventMask, Hook, Side, TcpState, MOS_SIDE_BOTH};
use std::any::Any;
use std::net::SocketAddr;
use std::time::Duration;

/// Attempts at a consistent copy of a flow slot in one go (spinning, then yielding).
const SLOT_TRIES: u32 = 1_000;
/// How long a slot may stay busy before a read gives up with `EAGAIN`. The sensor writes a
/// slot in well under a microsecond, but it can be preempted in the middle, for a scheduler
/// quantum or more on a loaded machine; only a sensor that died mid-write keeps it busy this
/// long, and once the sensor is seen gone a read does not wait at all.
const BUSY_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs `read` until it returns a value, sleeping briefly between rounds, for at most
/// [`BUSY_LIMIT`], and no longer once `sensor` has gone: a slot its writer left busy stays so.
fn patiently<T>(sensor: &SensorWatch, mut read: impl FnMut() -> Option<T>) -> Option<T> {
    // The first attempt almost always succeeds: the clock is read only after it failed.
    if let Some(v) = read() {
        return Some(v);
    }
    let deadline = std::time::Instant::now() + BUSY_LIMIT;
    loop {
        if let Some(v) = read() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline || sensor.gone() {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}
/// [`patiently`] kept out of line, for a caller whose first attempt failed.
#[cold]
#[inline(never)]
fn patiently_cold<T>(sensor: &SensorWatch, read: impl FnMut() -> Option<T>) -> Option<T> {
    patiently(sensor, read)
}

/// Attempts at an untorn stream copy; each failed one sees the stream moved on, so the next
/// decision is an overrun and the loop ends long before this.
const COPY_TRIES: u32 = 8;

/// A monitoring socket's descriptor (`mtcp_socket`'s return value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SockId(pub u32);

impl std::fmt::Display for SockId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What `peek` found (the manual's `mtcp_peek` return values, typed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peek {
    /// This many bytes were copied into the buffer and the read pointer moved past them.
    Data(usize),
    /// Nothing new (`-1` with `ENODATA` in the C API).
    NoData,
    /// The sensor let go of bytes this reader had not read: the pointer moved past `lost` bytes
    /// (`-lost` with `ENODATA` in the C API).
    Overrun {
        /// Bytes missed.
        lost: u64,
    },
    /// The capture never held `[offset, offset + len)`: the pointer moved past it.
    Gap {
        /// Stream offset of the first missing byte (the reader's position).
        offset: u64,
        /// Bytes missing.
        len: u64,
    },
}

/// What the library counted, for an analyzer to print.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events consumed from the event rings.
    pub events: u64,
    /// Callback invocations.
    pub callbacks: u64,
    /// Events the sensor dropped for this analyzer because a ring was full (live mode).
    pub events_dropped: u64,
    /// Records with codes this library could not interpret (skipped).
    pub events_malformed: u64,
    /// `peek` calls that reported an overrun, and the bytes they reported.
    pub overruns: u64,
    /// See `overruns`.
    pub overrun_bytes: u64,
    /// `peek` calls that reported a gap, and the bytes they reported.
    pub gaps: u64,
    /// See `gaps`.
    pub gap_bytes: u64,
    /// Stream copies discarded because the sensor moved the stream (and may have reused a
    /// chunk) while they were taken.
    pub torn_copies: u64,
}

/// One open socket's per-flow state: per side, the next stream offset to peek; the user's
/// context; the sides it stopped monitoring. All of it goes when the flow ends.
#[derive(Default)]
pub(crate) struct PeekState {
    pub ptrs: crate::flow::SlotMap<[Option<u64>; 2]>,
    pub uctx: crate::flow::FlowMap<Box<dyn Any>>,
    pub stopped: crate::flow::FlowMap<[bool; 2]>,
}

impl std::fmt::Debug for PeekState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeekState")
            .field("flows", &self.ptrs.len())
            .field("uctx", &self.uctx.len())
            .field("stopped", &self.stopped.len())
            .finish()
    }
}

impl PeekState {
    /// Forgets everything about `flow`.
    pub fn forget(&mut self, flow: FlowId) {
        self.ptrs.remove(flow);
        // Most sockets keep no context and stop no side: nothing to look up.
        if !self.uctx.is_empty() {
            self.uctx.remove(&flow);
        }
        if !self.stopped.is_empty() {
            self.stopped.remove(&flow);
        }
    }

    /// Whether the socket stopped monitoring `side` of `flow`.
    pub fn is_stopped(&self, flow: FlowId, side: Option<Side>) -> bool {
        if self.stopped.is_empty() {
            return false;
        }
        match (self.stopped.get(&flow), side) {
            (Some(s), Some(side)) => s[side.index()],
            (Some(s), None) => s[0] && s[1],
            (None, _) => false,
        }
    }
}

/// A registration asked for inside a callback, made when the callback returns.
pub(crate) enum PendingReg {
    Add {
        sock: SockId,
        flow: Option<FlowId>,
        filter: crate::mos::Filter,
        cb: crate::mos::Callback,
    },
    Remove {
        sock: SockId,
        flow: Option<FlowId>,
        events: EventMask,
        hook: Hook,
    },
}

/// What callbacks asked for that the run loop does once they return.
#[derive(Default)]
pub(crate) struct Pending {
    /// Events raised with `raise_event` while an event is dispatched.
    pub raised: Vec<EventMask>,
    /// Raises so far for the occurrence being dispatched on the current socket.
    pub raises: usize,
    /// The events `alloc_event` made (bits): the only ones `raise_event` takes.
    pub allocated: u64,
    /// Every user-defined event made (`define_event` and `alloc_event`, bits).
    pub made: u64,
    pub regs: Vec<PendingReg>,
    pub timers: Vec<(i32, Duration, TimerCallback)>,
    pub msgs: Vec<ClientMsg>,
    /// The subscription may have changed (per-flow registrations went with their flow).
    pub resubscribe: bool,
}

impl Pending {
    /// Whether the run loop has something to do for the callbacks.
    pub fn has_work(&self) -> bool {
        !self.regs.is_empty()
            || !self.timers.is_empty()
            || !self.msgs.is_empty()
            || self.resubscribe
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("raised", &self.raised)
            .field("regs", &self.regs.len())
            .field("timers", &self.timers.len())
            .field("msgs", &self.msgs)
            .finish()
    }
}

/// Access to the published state, handed to callbacks (and available between runs through
/// [`crate::Mos::with_ctx`]).
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The socket whose callback or event filter runs (`None` for timers and `with_ctx`).
    pub(crate) sock: Option<SockId>,
    pub(crate) regions: &'a Regions,
    /// Each worker's parts of the regions, viewed once for the run ([`WorkerView`]).
    pub(crate) views: &'a [WorkerView<'a>],
    pub(crate) sockets: &'a mut [Option<PeekState>],
    pub(crate) counters: &'a mut Counters,
    /// The event being dispatched, with its flow.
    pub(crate) current: Option<(FlowId, &'a EventRecord)>,
    /// The event being dispatched, flow or not (orphans and raw packets have none).
    pub(crate) event: Option<&'a EventRecord>,
    pub(crate) stop: &'a mut bool,
    pub(crate) packets: bool,
    pub(crate) pending: &'a mut Pending,
    /// The timer clock, and the newest capture time dispatched so far.
    pub(crate) clock: (crate::TimerClock, u64),
}

/// A copy that stands although the chunk map named no chunk for some of its bytes: the sensor
/// published bytes it does not hold.
fn no_chunk(flow: FlowId, side: Side, buffer: u32, copied: Copied) -> Result<()> {
    match copied {
        Copied::Whole => Ok(()),
        Copied::Torn { offset, entry } => Err(Error::new(
            Errno::EPROTO,
            format!(
                "flow {flow}'s {side:?} side holds stream offset {offset}, but buffer {buffer}'s chunk map names no chunk for it (entry {entry:#x})"
            ),
        )),
    }
}

fn stale(flow: FlowId, why: &str) -> Error {
    Error::new(Errno::EBADF, format!("flow handle {flow} is stale ({why})"))
}

/// Copies a flow's slot and, when it has one, the tunnel record of its first packet, and
/// checks the handle.
pub(crate) fn load_flow_tunnel(
    regions: &Regions,
    flow: FlowId,
) -> Result<(FlowData, Option<TunnelData>)> {
    let slot = flow_slot(regions, flow)?;
    let tunnel = regions
        .tunnels(usize::from(flow.worker))?
        .and_then(|t| t.get(flow.slot as usize));
    let (snap, t) = patiently(&regions.sensor, || {
        read_flow_with_tunnel(slot, tunnel, SLOT_TRIES)
    })
    .ok_or_else(|| busy(flow))?;
    check_handle(flow, &snap.data)?;
    Ok((snap.data, t))
}

fn busy(flow: FlowId) -> Error {
    Error::new(
        Errno::EAGAIN,
        format!("flow {flow}'s slot stayed busy (the sensor kept writing it)"),
    )
}

fn check_handle(flow: FlowId, data: &FlowData) -> Result<()> {
    check_generation(flow, data.generation, data.flags)
}

/// [`check_handle`] from the slot's generation and flags.
fn check_generation(flow: FlowId, generation: u32, flags: u32) -> Result<()> {
    if flags & flow_flags::LIVE == 0 {
        return Err(stale(flow, "connection gone"));
    }
    if generation != flow.generation {
        return Err(stale(flow, "slot reused"));
    }
    Ok(())
}

/// The slot a handle names (`EBADF` for a worker or slot out of range).
fn flow_slot(regions: &Regions, flow: FlowId) -> Result<&FlowSlot> {
    let w = usize::from(flow.worker);
    if w >= regions.nworkers {
        return Err(no_worker(flow, regions.nworkers));
    }
    let slots = regions.slots(w)?;
    slots
        .get(flow.slot as usize)
        .ok_or_else(|| no_slot(flow, slots.len()))
}

/// [`flow_slot`] through the worker views: the handle's worker and its slot (`EBADF` for a
/// worker or slot out of range).
#[inline]
fn view_slot<'v, 'a>(
    views: &'v [WorkerView<'a>],
    flow: FlowId,
) -> Result<(&'v WorkerView<'a>, &'a FlowSlot)> {
    match views.get(usize::from(flow.worker)) {
        Some(view) => match view.slots.get(flow.slot as usize) {
            Some(slot) => Ok((view, slot)),
            None => Err(no_slot(flow, view.slots.len())),
        },
        None => Err(no_worker(flow, views.len())),
    }
}

/// `EBADF` for a handle that names a worker the sensor does not run.
#[cold]
fn no_worker(flow: FlowId, workers: usize) -> Error {
    Error::new(
        Errno::EBADF,
        format!(
            "flow handle {flow} names worker {}, the sensor runs {workers}",
            flow.worker
        ),
    )
}

/// `EBADF` for a handle that names a slot past the worker's table.
#[cold]
fn no_slot(flow: FlowId, slots: usize) -> Error {
    Error::new(
        Errno::EBADF,
        format!("flow handle {flow} names slot {} of {slots}", flow.slot),
    )
}

/// Copies a flow's slot (and, with `side`, that side's ring metadata) and checks the handle.
pub(crate) fn load_flow(
    regions: &Regions,
    flow: FlowId,
    side: Option<Side>,
) -> Result<(FlowData, Option<RingMeta>)> {
    load_flow_stamped(regions, flow, side).map(|(d, m, _)| (d, m))
}

/// [`load_flow`] with the slot's seqlock stamp at the copy: equal stamps mean the sensor
/// changed nothing of the connection in between, stream bytes included.
pub(crate) fn load_flow_stamped(
    regions: &Regions,
    flow: FlowId,
    side: Option<Side>,
) -> Result<(FlowData, Option<RingMeta>, u64)> {
    let slot = flow_slot(regions, flow)?;
    let (snap, meta) = match side {
        Some(s) => {
            let metas = regions.ring_metas(usize::from(flow.worker))?;
            patiently(&regions.sensor, || {
                read_flow_with_meta(slot, metas, s.index(), SLOT_TRIES)
            })
            .ok_or_else(|| busy(flow))?
        }
        None => (
            patiently(&regions.sensor, || read_flow(slot, SLOT_TRIES)).ok_or_else(|| busy(flow))?,
            None,
        ),
    };
    check_handle(flow, &snap.data)?;
    Ok((snap.data, meta, snap.stamp))
}

/// Where a new reader of each side of `flow` starts.
pub(crate) fn initial_pointers(
    regions: &Regions,
    views: &[WorkerView<'_>],
    flow: FlowId,
) -> Result<[Option<u64>; 2]> {
    let (view, slot) = view_slot(views, flow)?;
    // Both sides in one copy of the words they start from (each side's head, tail and ring,
    // and its ring's `unknown_below`), not two copies of the whole slot and metadata.
    let starts = patiently(&regions.sensor, || {
        read_side_starts(slot, view.metas, SLOT_TRIES)
    })
    .ok_or_else(|| busy(flow))?;
    check_generation(flow, starts.generation, starts.flags)?;
    Ok(starts.sides.map(|e| Some(stream::oldest_readable_in(&e))))
}

/// An open socket's state; `EBADF` for a socket that is not open.
pub(crate) fn socket_state(
    sockets: &mut [Option<PeekState>],
    sock: SockId,
) -> Result<&mut PeekState> {
    sockets
        .get_mut(sock.0 as usize)
        .and_then(Option::as_mut)
        .ok_or_else(|| not_open(sock))
}

/// `EBADF` for a socket that is not open.
#[cold]
fn not_open(sock: SockId) -> Error {
    Error::new(Errno::EBADF, format!("socket {sock} is not open"))
}

impl Ctx<'_> {
    fn socket(&mut self, sock: SockId) -> Result<&mut PeekState> {
        socket_state(self.sockets, sock)
    }

    /// Ends the run loop after the current callback ([`crate::RunEnd::Stopped`]): for an
    /// analyzer whose callback failed (a full disk) and wants to stop cleanly.
    pub fn stop(&mut self) {
        *self.stop = true;
    }

    /// The library's counters so far (events the sensor dropped as of the last time the run
    /// loop found the rings empty).
    pub fn counters(&self) -> Counters {
        *self.counters
    }

    /// The socket whose callback (or user-defined event's filter) is running: what mOS passes
    /// a callback or filter as its `sock` argument. A filter of an event several sockets use
    /// runs once per socket, and reads the stream through this one. `None` in a timer's
    /// callback and in [`crate::Mos::with_ctx`].
    pub fn sock(&self) -> Option<SockId> {
        self.sock
    }

    /// `mtcp_raise_event`: raises `event`, made by `alloc_event`, for the socket and the
    /// occurrence being dispatched: once the filter or callback that raises it returns, its
    /// callbacks run (and the events defined on it), with the same event data.
    ///
    /// `EINVAL` outside the dispatch of an event, for an event `alloc_event` did not make
    /// (defined events are raised by their filter's answer), and past [`crate::MAX_RAISES`]
    /// raises for one occurrence on one socket. Events raised from the callbacks of raised
    /// events chain at most 64 deep: a callback that raises its own event stops there (its
    /// 65th raise is accepted and does not fire).
    pub fn raise_event(&mut self, event: EventMask) -> Result<()> {
        if self.event.is_none() {
            return Err(Error::new(
                Errno::EINVAL,
                "raise_event is called while an event is dispatched (in a filter or callback)",
            ));
        }
        if event.0.count_ones() != 1 || event.0 & self.pending.allocated == 0 {
            return Err(Error::new(
                Errno::EINVAL,
                format!("{:#x} is not an event made by alloc_event", event.0),
            ));
        }
        if self.pending.raises >= crate::user_event::MAX_RAISES {
            return Err(Error::new(
                Errno::EINVAL,
                format!(
                    "more than {} raises for one event occurrence",
                    crate::user_event::MAX_RAISES
                ),
            ));
        }
        self.pending.raises += 1;
        self.pending.raised.push(event);
        Ok(())
    }

    /// `mtcp_settimer` from inside a callback: `cb` runs once, `after` from now on the
    /// attachment's timer clock ([`crate::TimerClock`]), with `id`.
    pub fn settimer(
        &mut self,
        id: i32,
        after: Duration,
        cb: impl FnMut(&mut Ctx<'_>, i32) + 'static,
    ) {
        self.pending.timers.push((id, after, Box::new(cb)));
    }

    /// The timer clock now, in ns ([`crate::TimerClock`]): with `Wall`, the monotonic clock;
    /// with `Capture`, the newest capture time seen (ns since the Unix epoch).
    pub fn timer_now_ns(&self) -> u64 {
        match self.clock.0 {
            crate::TimerClock::Wall => crate::mos::monotonic_ns(),
            crate::TimerClock::Capture => self.clock.1,
        }
    }

    /// Registration on one flow (mOS's per-flow socket): `cb` gets `events` at `hook` of
    /// `flow` only, on `sock`. Made when the current callback returns; dropped when the flow
    /// ends. `EINVAL` for a socket that is not open or no event.
    pub fn register_flow_callback(
        &mut self,
        sock: SockId,
        flow: FlowId,
        events: EventMask,
        hook: Hook,
        cb: impl FnMut(&mut Ctx<'_>, &crate::Event) + 'static,
    ) -> Result<()> {
        self.socket(sock)?;
        if events.0 == 0 {
            return Err(Error::new(Errno::EINVAL, "no event to register for"));
        }
        let unknown = events.0 & !(EventMask::ALL.0 | self.pending.made);
        if unknown != 0 {
            return Err(Error::new(
                Errno::EINVAL,
                format!("event {unknown:#x} is neither built in nor made by define_event or alloc_event"),
            ));
        }
        self.pending.regs.push(PendingReg::Add {
            sock,
            flow: Some(flow),
            filter: crate::mos::Filter {
                events,
                hook: Some(hook),
                side: None,
            },
            cb: Box::new(cb),
        });
        Ok(())
    }

    /// Undoes [`Ctx::register_flow_callback`] (with a null callback, in mOS): `sock` no longer
    /// gets `events` at `hook` of `flow` (when the current callback returns).
    pub fn unregister_flow_callback(
        &mut self,
        sock: SockId,
        flow: FlowId,
        events: EventMask,
        hook: Hook,
    ) -> Result<()> {
        self.socket(sock)?;
        self.pending.regs.push(PendingReg::Remove {
            sock,
            flow: Some(flow),
            events,
            hook,
        });
        Ok(())
    }

    /// `MOS_STOP_MON`: `sock` gets no more events of `flow` on `side` (`MOS_SIDE_CLI`,
    /// `MOS_SIDE_SVR` or `MOS_SIDE_BOTH`). Once both sides are stopped, the sensor is told: it
    /// stops sending the flow's events to this socket, and in lossless mode no longer holds the
    /// flow's bytes back for this analyzer when no other socket of it wants the flow. What
    /// was published before still arrives and is dropped here. `EINVAL` for another side
    /// value, `EBADF` for a socket that is not open.
    pub fn stop_monitoring(&mut self, sock: SockId, flow: FlowId, side: u8) -> Result<()> {
        let sides = match side {
            0 => [true, false],
            1 => [false, true],
            MOS_SIDE_BOTH => [true, true],
            s => {
                return Err(Error::new(
                    Errno::EINVAL,
                    format!("side {s} is none of MOS_SIDE_CLI, MOS_SIDE_SVR, MOS_SIDE_BOTH"),
                ))
            }
        };
        let state = self.socket(sock)?;
        let st = state.stopped.entry(flow).or_default();
        let before = st[0] && st[1];
        st[0] |= sides[0];
        st[1] |= sides[1];
        if st[0] && st[1] && !before && sock.0 < shm_layout::control::MAX_SOCKETS as u32 {
            self.pending.msgs.push(ClientMsg::StopMon {
                sock: sock.0 as u8,
                worker: flow.worker,
                slot: flow.slot,
                generation: flow.generation,
                side: MOS_SIDE_BOTH,
            });
        }
        Ok(())
    }

    /// `mtcp_set_uctx`: keeps `value` with `flow` on `sock` (replacing what was there). It is
    /// dropped when the flow ends (after its last `CONN_END`), or when the socket closes.
    pub fn set_uctx<T: Any>(&mut self, sock: SockId, flow: FlowId, value: T) -> Result<()> {
        self.socket(sock)?.uctx.insert(flow, Box::new(value));
        Ok(())
    }

    /// `mtcp_get_uctx`: what [`Ctx::set_uctx`] kept with `flow` on `sock`, if it is a `T`.
    pub fn uctx<T: Any>(&mut self, sock: SockId, flow: FlowId) -> Option<&mut T> {
        self.socket(sock)
            .ok()?
            .uctx
            .get_mut(&flow)?
            .downcast_mut::<T>()
    }

    /// Takes what [`Ctx::set_uctx`] kept with `flow` on `sock`, if it is a `T`.
    pub fn take_uctx<T: Any>(&mut self, sock: SockId, flow: FlowId) -> Option<T> {
        let map = &mut self.socket(sock).ok()?.uctx;
        if !map.get(&flow)?.is::<T>() {
            return None;
        }
        map.remove(&flow)?.downcast::<T>().ok().map(|b| *b)
    }

    /// The stream offset `sock`'s next `peek` of `side` reads from. A reader starts at the
    /// oldest byte the side still held when the analyzer first saw the flow; an analyzer that
    /// wants a record of everything before it (like `mos-dump`) counts `[0, offset)` as lost.
    pub fn peek_offset(&mut self, sock: SockId, flow: FlowId, side: Side) -> Result<u64> {
        let regions = self.regions;
        self.socket(sock)?;
        let (d, meta) = load_flow(regions, flow, Some(side))?;
        let state = self.socket(sock)?;
        let ptrs = state.ptrs.get_or_default(flow);
        Ok(*ptrs[side.index()]
            .get_or_insert_with(|| stream::oldest_readable(&d.sides[side.index()], meta.as_ref())))
    }

    /// `mtcp_peek`: copies bytes of `side`'s receive stream from `sock`'s read pointer and
    /// moves the pointer, or says why it cannot ([`Peek`]).
    ///
    /// Errors: `EBADF` for a socket that is not open or a stale flow handle; `EAGAIN` if the
    /// sensor kept the flow's slot busy; `EPROTO` if the slot names a buffer that does not
    /// exist, or bytes the buffer's chunk map holds in no chunk.
    #[inline]
    pub fn peek(&mut self, sock: SockId, flow: FlowId, side: Side, buf: &mut [u8]) -> Result<Peek> {
        let bound = self.event_bound(flow, side);
        // Inside a callback a read stops at what the event announced: a reader already there
        // has nothing new, whatever the sensor holds by now, and is told so without a look at
        // the slot (the common case: the second `peek` of a callback's loop).
        if let Some(b) = bound {
            let at = self
                .sockets
                .get(sock.0 as usize)
                .and_then(Option::as_ref)
                .and_then(|s| s.ptrs.get(flow))
                .and_then(|p| p[side.index()]);
            if at.is_some_and(|at| at >= b) {
                return Ok(Peek::NoData);
            }
        }
        self.peek_to(sock, flow, side, buf, bound)
    }

    /// [`Ctx::peek`] up to the newest byte the sensor holds, even inside a callback (where
    /// `peek` stops at what the event announced).
    pub fn peek_newest(
        &mut self,
        sock: SockId,
        flow: FlowId,
        side: Side,
        buf: &mut [u8],
    ) -> Result<Peek> {
        self.peek_to(sock, flow, side, buf, None)
    }

    /// Inside a callback for an event of `flow` on `side`: the stream position the event
    /// announced (its receive stream's tail when it was raised), where reads of that side
    /// stop.
    fn event_bound(&self, flow: FlowId, side: Side) -> Option<u64> {
        match self.current {
            Some((f, rec)) if f == flow && rec.side == side.code() => Some(rec.tail),
            _ => None,
        }
    }

    fn peek_to(
        &mut self,
        sock: SockId,
        flow: FlowId,
        side: Side,
        buf: &mut [u8],
        bound: Option<u64>,
    ) -> Result<Peek> {
        let regions = self.regions;
        let si = side.index();
        let room = buf
            .len()
            .min(usize::try_from(regions.span).unwrap_or(usize::MAX));
        let ptrs = &mut socket_state(self.sockets, sock)?.ptrs;
        let mut known = ptrs.get(flow).and_then(|p| p[si]);
        // A reader already at the event's bound has nothing new (see `peek`).
        if let (Some(at), Some(b)) = (known, bound) {
            if at >= b {
                return Ok(Peek::NoData);
            }
        }
        if !regions.peeked.load(std::sync::atomic::Ordering::Relaxed) {
            regions
                .peeked
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let (view, slot) = view_slot(self.views, flow)?;
        for _ in 0..COPY_TRIES {
            // The words the decision needs (generation, flags, where the side is held, the one
            // gap ahead of the reader), not the whole slot and metadata. A new reader starts at
            // the oldest byte held in the same version.
            let from = known;
            let read = || {
                read_side_at(
                    slot,
                    view.metas,
                    si,
                    |e| from.unwrap_or_else(|| stream::oldest_readable_in(e)),
                    SLOT_TRIES,
                )
            };
            // The first attempt almost always succeeds; waiting for a busy slot is cold.
            let v = match read() {
                Some(v) => v,
                None => patiently_cold(&regions.sensor, read).ok_or_else(|| busy(flow))?,
            };
            check_generation(flow, v.generation, v.flags)?;
            let at = v.offset;
            let set = |ptrs: &mut crate::flow::SlotMap<[Option<u64>; 2]>, to: u64| {
                ptrs.get_or_default(flow)[si] = Some(to);
            };
            // Inside a callback, no further than the event announced. A new reader keeps the
            // start it found even when it reads nothing now.
            let room = match bound {
                Some(b) if at >= b => {
                    if known.is_none() {
                        set(ptrs, at);
                    }
                    return Ok(Peek::NoData);
                }
                Some(b) => room.min(usize::try_from(b - at).unwrap_or(usize::MAX)),
                None => room,
            };
            match stream::chunk_in_order(&v.extent, v.gap.as_slice(), at, room) {
                Chunk::NoData => {
                    if known.is_none() {
                        set(ptrs, at);
                    }
                    return Ok(Peek::NoData);
                }
                Chunk::Overrun { lost } => {
                    set(ptrs, at + lost);
                    self.counters.overruns += 1;
                    self.counters.overrun_bytes += lost;
                    return Ok(Peek::Overrun { lost });
                }
                Chunk::Gap { offset, len } => {
                    set(ptrs, offset + len);
                    self.counters.gaps += 1;
                    self.counters.gap_bytes += len;
                    return Ok(Peek::Gap { offset, len });
                }
                Chunk::Data { len } => {
                    let ring = v.extent.ring;
                    before_copy();
                    let copied = view.copy_stream(ring, at, &mut buf[..len])?;
                    after_copy();
                    // No write to the slot since it was read: the sensor has neither moved the
                    // head nor given the buffer away, so no chunk under the copy was freed and
                    // the copy stands (one load). Otherwise the slot is read again to tell
                    // whether the write touched the copy.
                    if slot.stamp.unchanged_since(v.stamp)
                        || still_intact(regions, flow, side, ring, at)?
                    {
                        no_chunk(flow, side, ring, copied)?;
                        set(ptrs, at + len as u64);
                        return Ok(Peek::Data(len));
                    }
                    self.counters.torn_copies += 1;
                    // The next try reads from the same offset.
                    set(ptrs, at);
                    known = Some(at);
                }
            }
        }
        Err(Error::new(
            Errno::EAGAIN,
            format!("flow {flow}'s stream kept changing while it was copied"),
        ))
    }

    /// `mtcp_ppeek`: copies held bytes of `side`'s receive stream from the absolute stream
    /// `offset` (in order, or from an out-of-order fragment, see [`Ctx::fragments`]) up to the
    /// end of that run of held bytes; does not move the read pointer.
    ///
    /// Errors: `ENODATA` when the byte at `offset` is not held (never received, skipped as a
    /// gap, or overwritten), plus `peek`'s.
    pub fn ppeek(
        &mut self,
        sock: SockId,
        flow: FlowId,
        side: Side,
        buf: &mut [u8],
        offset: u64,
    ) -> Result<usize> {
        let regions = self.regions;
        self.socket(sock)?;
        let mut room = buf
            .len()
            .min(usize::try_from(regions.span).unwrap_or(usize::MAX));
        // Inside a callback, in-order bytes no further than the event announced (the
        // out-of-order fragments past it are read as they are held now).
        if let Some(b) = self.event_bound(flow, side).filter(|&b| offset < b) {
            room = room.min(usize::try_from(b - offset).unwrap_or(usize::MAX));
        }
        // Under any policy but the first copy, the sensor may rewrite held out-of-order bytes
        // in place: a copy of them stands only if the slot did not change meanwhile.
        let rewrites = regions.config.overlap_policy != overlap_policy::FIRST;
        for _ in 0..COPY_TRIES {
            let (d, meta, stamp) = load_flow_stamped(regions, flow, Some(side))?;
            let sd = d.sides[side.index()];
            let n = stream::extent_at(&sd, meta.as_ref(), offset, room);
            if n == 0 {
                if buf.is_empty() {
                    return Ok(0);
                }
                return Err(Error::new(
                    Errno::ENODATA,
                    format!("flow {flow} holds no byte at offset {offset} of the {side:?} side"),
                ));
            }
            before_copy();
            let (view, _) = view_slot(self.views, flow)?;
            let copied = view.copy_stream(sd.ring, offset, &mut buf[..n])?;
            after_copy();
            let (d2, meta2, stamp2) = load_flow_stamped(regions, flow, Some(side))?;
            let in_order = offset < sd.tail;
            if intact(
                sd.ring,
                &d2.sides[side.index()],
                meta2.as_ref(),
                offset,
                in_order,
            ) && (in_order || !rewrites || stamp2 == stamp)
            {
                no_chunk(flow, side, sd.ring, copied)?;
                return Ok(n);
            }
            self.counters.torn_copies += 1;
        }
        Err(Error::new(
            Errno::EAGAIN,
            format!("flow {flow}'s stream kept changing while it was copied"),
        ))
    }

    /// A copy of what the flow's slot says.
    pub fn flow_info(&self, flow: FlowId) -> Result<FlowInfo> {
        let (d, tunnel) = load_flow_tunnel(self.regions, flow)?;
        let mut info = FlowInfo::from_data(flow, &d);
        info.tunnel = tunnel;
        Ok(info)
    }

    /// `mtcp_getsockopt` at `SOL_MONSOCKET`.
    pub fn getsockopt(&self, flow: FlowId, opt: SockOpt) -> Result<OptValue> {
        let side = opt.side();
        Ok(match opt {
            SockOpt::InfoCliBuf | SockOpt::InfoSvrBuf => {
                OptValue::BufInfo(self.buf_info(flow, side)?)
            }
            SockOpt::FragInfoCliBuf | SockOpt::FragInfoSvrBuf => {
                OptValue::Fragments(self.fragments(flow, side)?)
            }
            SockOpt::TcpStateCli | SockOpt::TcpStateSvr => {
                OptValue::State(self.tcp_state(flow, side)?)
            }
            SockOpt::CliOverlap | SockOpt::SvrOverlap => {
                load_flow(self.regions, flow, None)?;
                OptValue::Overlap(self.overlap_policy())
            }
        })
    }

    /// `MOS_INFO_CLIBUF`/`MOS_INFO_SVRBUF`: `side`'s receive buffer as sequence numbers.
    /// `ENODATA` while the side has no sequence number to count from.
    pub fn buf_info(&self, flow: FlowId, side: Side) -> Result<TcpBufInfo> {
        let (d, meta) = load_flow(self.regions, flow, Some(side))?;
        let s = &d.sides[side.index()];
        if s.flags & side_flags::ANCHORED == 0 {
            return Err(Error::new(
                Errno::ENODATA,
                format!("flow {flow}'s {side:?} side has not seen a sequence number yet"),
            ));
        }
        // Truncation to 32 bits is the modulo-2^32 reduction sequence numbers use.
        let seq = |off: u64| s.base_seq.wrapping_add(off as u32);
        let next = seq(s.tail);
        Ok(TcpBufInfo {
            init_seq: s.base_seq,
            last_byte_read: next,
            next_byte_expected: next,
            last_byte_received: seq(stream::recv_end(s, meta.as_ref())),
        })
    }

    /// `MOS_FRAGINFO_CLIBUF`/`MOS_FRAGINFO_SVRBUF`: `side`'s out-of-order islands.
    pub fn fragments(&self, flow: FlowId, side: Side) -> Result<Vec<RingFragment>> {
        let (d, meta) = load_flow(self.regions, flow, Some(side))?;
        let s = &d.sides[side.index()];
        Ok(stream::fragments(s, meta.as_ref())
            .into_iter()
            .map(|(offset, len)| RingFragment {
                seq: s.base_seq.wrapping_add(offset as u32),
                offset,
                len,
            })
            .collect())
    }

    /// `MOS_TCP_STATE_CLI`/`MOS_TCP_STATE_SVR`: `side`'s emulated state.
    pub fn tcp_state(&self, flow: FlowId, side: Side) -> Result<TcpState> {
        let (d, _) = load_flow(self.regions, flow, None)?;
        let code = d.sides[side.index()].state;
        TcpState::from_code(code).ok_or_else(|| {
            Error::new(
                Errno::EPROTO,
                format!("flow {flow}'s {side:?} side has state code {code}"),
            )
        })
    }

    /// The sensor's overlap policy (`MOS_CLIOVERLAP`/`MOS_SVROVERLAP`): one stream buffer
    /// serves every analyzer, so it is the sensor's, the same for both sides and every flow.
    pub fn overlap_policy(&self) -> OverlapPolicy {
        OverlapPolicy::from_code(self.regions.config.overlap_policy)
    }

    /// `mtcp_setsockopt(MOS_CLIOVERLAP/MOS_SVROVERLAP)`: accepted when it asks for the policy
    /// the sensor applies (`mos-sensor --overlap`), refused with `EINVAL` otherwise.
    pub fn set_overlap_policy(&mut self, sock: SockId, policy: OverlapPolicy) -> Result<()> {
        self.socket(sock)?;
        let have = self.overlap_policy();
        if policy == have {
            Ok(())
        } else {
            Err(Error::new(
                Errno::EINVAL,
                format!(
                    "the sensor's overlap policy is \"{}\" (mos-sensor --overlap); one stream buffer serves every analyzer, so a socket cannot ask for \"{}\"",
                    have.describe(),
                    policy.describe()
                ),
            ))
        }
    }

    /// `mtcp_getpeername`: `side` is `MOS_SIDE_CLI` (0), `MOS_SIDE_SVR` (1) or
    /// `MOS_SIDE_BOTH` (2, giving `[client, server]`).
    pub fn getpeername(&self, flow: FlowId, side: u8) -> Result<Vec<SocketAddr>> {
        if side > MOS_SIDE_BOTH {
            return Err(Error::new(
                Errno::EINVAL,
                format!("side {side} is none of MOS_SIDE_CLI, MOS_SIDE_SVR, MOS_SIDE_BOTH"),
            ));
        }
        let (d, _) = load_flow(self.regions, flow, None)?;
        let both = endpoints(&d);
        Ok(match side {
            MOS_SIDE_BOTH => both.to_vec(),
            s => vec![both[usize::from(s)]],
        })
    }

    /// `mtcp_getlastpkt`: inside a callback for an event of `flow`, the frame that raised the
    /// event; otherwise the last frame `side`'s stack received.
    ///
    /// Errors: `ENODATA` when there is no such frame, it is no longer in the packet log, or the
    /// analyzer did not attach with `packets`; `EBADF` for a stale handle.
    pub fn getlastpkt(&mut self, flow: FlowId, side: Side) -> Result<Packet> {
        let nodata = |m: String| Error::new(Errno::ENODATA, m);
        if !self.packets {
            return Err(nodata(
                "this analyzer did not ask for packets (AttachOptions::packets)".into(),
            ));
        }
        let (d, _) = load_flow(self.regions, flow, None)?;
        let seq = match self.current {
            Some((f, rec)) if f == flow => {
                if rec.pkt_ref == NO_PKT {
                    return Err(nodata(format!(
                        "no logged frame raised this event of flow {flow}"
                    )));
                }
                rec.pkt_ref
            }
            _ => {
                let s = d.sides[side.index()].last_pkt;
                if s == NO_PKT {
                    return Err(nodata(format!(
                        "flow {flow}'s {side:?} side has received no logged frame"
                    )));
                }
                s
            }
        };
        self.read_logged(usize::from(flow.worker), seq)
    }

    /// The frame that raised the event being dispatched: for an orphan or a raw socket's
    /// packet (which have no flow to give `getlastpkt`), and for any other event.
    ///
    /// Errors: `ENODATA` outside a callback, for an event no logged frame raised, or one no
    /// longer in the packet log, or when the analyzer did not attach with `packets`.
    pub fn event_packet(&mut self) -> Result<Packet> {
        let nodata = |m: &str| Error::new(Errno::ENODATA, m.to_owned());
        if !self.packets {
            return Err(nodata(
                "this analyzer did not ask for packets (AttachOptions::packets)",
            ));
        }
        let rec = self
            .event
            .ok_or_else(|| nodata("no event is being dispatched"))?;
        if rec.pkt_ref == NO_PKT {
            return Err(nodata("no logged frame raised this event"));
        }
        if usize::from(rec.worker) >= self.regions.nworkers {
            return Err(Error::new(
                Errno::EPROTO,
                format!("an event names worker {}", rec.worker),
            ));
        }
        self.read_logged(usize::from(rec.worker), rec.pkt_ref)
    }

    /// Frame `seq` of worker `w`'s packet log.
    fn read_logged(&self, w: usize, seq: u64) -> Result<Packet> {
        let nodata = |m: String| Error::new(Errno::ENODATA, m);
        let cfg = self.regions.config;
        if cfg.pktlog_entries == 0 || cfg.pktlog_bytes == 0 {
            return Err(nodata("the sensor keeps no packet log".into()));
        }
        let (hdr, entries, bytes_off) = self.regions.pktlog(w)?;
        let n = entries.len() as u64;
        // `read_packet` waits for an entry's write to end; a sensor that died mid-write must
        // not hang the analyzer, so look first.
        let entry = &entries[(seq % n) as usize];
        if patiently(&self.regions.sensor, || {
            (0..SLOT_TRIES).find(|_| entry.stamp.begin_read().is_some())
        })
        .is_none()
        {
            return Err(nodata(format!("frame {seq} is being rewritten")));
        }
        let mut frame =
            vec![0u8; usize::try_from(cfg.pktlog_bytes.min(1 << 18)).unwrap_or(1 << 18)];
        let regions = self.regions;
        let got = read_packet(
            hdr,
            entries,
            cfg.pktlog_bytes,
            seq,
            &mut frame,
            |pos, dst| {
                usize::try_from(pos)
                    .ok()
                    .and_then(|p| p.checked_add(bytes_off))
                    .is_some_and(|off| regions.read_main(off, dst))
            },
        );
        match got {
            Some((info, k)) => {
                frame.truncate(k);
                Ok(Packet::new(&info, frame))
            }
            None => Err(nodata(format!(
                "frame {seq} is no longer in the packet log (overwritten)"
            ))),
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Runs between a stream copy and its re-validation: tests play the sensor there.
    pub(crate) static AFTER_COPY: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
        std::cell::RefCell::new(None);
    /// Runs between the slot copy a stream copy relies on and the stream copy.
    pub(crate) static BEFORE_COPY: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
        std::cell::RefCell::new(None);
}

#[inline]
fn after_copy() {
    #[cfg(test)]
    AFTER_COPY.with(|h| {
        if let Some(f) = h.borrow_mut().as_mut() {
            f()
        }
    });
}

#[inline]
fn before_copy() {
    #[cfg(test)]
    BEFORE_COPY.with(|h| {
        if let Some(f) = h.borrow_mut().as_mut() {
            f()
        }
    });
}

/// After a copy of in-order bytes from buffer `ring` at `offset` during which the slot
/// changed: reads the slot again and tells whether the copy still stands ([`intact`]). Out of
/// line: the whole slot and metadata it copies would weigh on every `peek`'s frame.
#[cold]
#[inline(never)]
fn still_intact(
    regions: &Regions,
    flow: FlowId,
    side: Side,
    ring: u32,
    offset: u64,
) -> Result<bool> {
    let (d, meta) = load_flow(regions, flow, Some(side))?;
    Ok(intact(
        ring,
        &d.sides[side.index()],
        meta.as_ref(),
        offset,
        true,
    ))
}

/// Whether a stream copy taken from buffer `ring` at `offset` is still good after: same
/// buffer, the head not past the copy's first byte (the sensor frees a chunk only once the
/// head is past it), and (for in-order bytes) gap knowledge not lost past it either.
fn intact(
    ring: u32,
    after: &shm_layout::layout::SideData,
    meta: Option<&RingMeta>,
    offset: u64,
    in_order: bool,
) -> bool {
    after.ring == ring
        && after.head <= offset
        && (!in_order || meta.map_or(0, |m| m.unknown_below) <= offset)
}
