//! The worker's side of the analyzers: event records into their rings, the packet log, and
//! the waits of lossless mode.
//!
//! The control thread attaches and detaches analyzers; it tells the worker through a channel
//! that the worker reads between packets (never a lock on the packet path). In lossless mode
//! the worker waits, with a short spin and then sleeps, until every analyzer is past what is
//! about to be reused; an analyzer whose consumer index has not moved for the stall timeout
//! while the worker waits for it is detached, so a stopped analyzer cannot hang a replay.

use super::region::AnalyzerRegions;
use super::subscription::{Picks, Sockets};
use crate::capture::RawPacket;
use crate::event::{Event, EventKind};
use crate::parse::TcpSegment;
use crate::replay::{EventSink, ReplayStats};
use crate::tracker::Tracker;
use anyhow::Result;
use shm_layout::control::Subscription;
use shm_layout::layout::{
    counter, detach_reason, event_kind, sensor_state, AnalyzerPage, EventRecord, EventRingHeader,
    EventSlot, Header, PktInfo, WorkerInfo, NO_PKT, SIDE_NONE,
};
use shm_layout::pktlog::PktLogWriter;
use shm_layout::ring::{Producer, ProducerState};
use shm_layout::EventMask;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An analyzer as the control thread hands it to a worker.
#[derive(Debug)]
pub struct Attached {
    /// Its number.
    pub id: u32,
    /// Its name, for logs.
    pub name: String,
    /// Its process id (from the socket's credentials).
    pub pid: u32,
    /// Its regions.
    pub regions: AnalyzerRegions,
}

/// Control thread to worker.
#[derive(Debug)]
pub enum ToWorker {
    /// A new analyzer (no subscription yet).
    Attach(Box<Attached>),
    /// An analyzer's subscription changed (a 2.0 subscription: every socket, no filter).
    Subscribe(u32, Subscription),
    /// An analyzer's subscription changed, socket by socket.
    Sockets(u32, Arc<Sockets>),
    /// `MOS_STOP_MON`: analyzer, slot, generation, socket bit.
    StopMon(u32, u32, u32, u32),
    /// An analyzer is ready for events.
    Ready(u32),
    /// An analyzer left (asked to, or its socket closed).
    Detach(u32),
}

/// Worker to control thread.
#[derive(Debug)]
pub enum ToControl {
    /// The worker detached an analyzer; tell it why and close its socket.
    Detached(u32, String),
    /// The input ended and every event is published.
    Done,
}

/// How the worker treats analyzers.
#[derive(Clone, Debug)]
pub struct FanoutOptions {
    /// Wait for analyzers instead of dropping their events.
    pub lossless: bool,
    /// Detach an analyzer that makes no progress for this many nanoseconds while the worker
    /// waits for it (shared, so that a reload changes it for every worker).
    pub stall_timeout_ns: Arc<AtomicU64>,
    /// Once set (the sensor is stopping), the worker waits for no analyzer any more: a full
    /// ring drops the event, and what analyzers have not passed may be reused.
    pub stop: Option<Arc<AtomicBool>>,
    /// Flow slots per worker (the size of an analyzer's table of per-flow decisions).
    pub slots: usize,
}

struct Member {
    a: Attached,
    sub: Arc<Sockets>,
    /// Which sockets each flow is for, once a socket has a SYN filter or stopped a flow.
    picks: Option<Picks>,
    /// Events were pushed since its ring was last seen drained.
    busy: bool,
    ready: bool,
    prod: ProducerState,
    /// Consumer index as last seen, and since when a wait has seen it standing still (`None`:
    /// it moved since the last wait looked). The clock is read only while waiting, never per
    /// packet.
    progress: (u64, Option<Instant>),
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("id", &self.a.id)
            .field("name", &self.a.name)
            .field("sub", &self.sub)
            .field("ready", &self.ready)
            .finish()
    }
}

/// The sockets of a member (its subscription `sub` and per-flow decisions `picks`) that an
/// event is for (0: none), and whether a SYN filter took the flow just now. `pkt` is the frame
/// that raised it, if any: SYN filters not yet run on the flow are run on it.
fn socks_for(
    sub: &Sockets,
    picks: &mut Option<Picks>,
    ev: &Event,
    pkt: Option<&RawPacket<'_>>,
) -> (u32, bool) {
    let kind = ev.kind.mask();
    let want = sub.wanting(kind);
    if ev.flow.slot == u32::MAX {
        // An orphan packet: its filter is run on every one.
        return if want == 0 {
            (0, false)
        } else {
            (want & sub.orphan_matches(pkt), false)
        };
    }
    let (flow, took) = match picks.as_mut() {
        Some(p) => p.socks_of(sub, ev.flow.slot, ev.flow.generation, pkt),
        None => (sub.unfiltered, false),
    };
    (flow & want, took)
}

/// The views of worker `w`'s ring in an analyzer's regions.
fn views(r: &AnalyzerRegions, w: usize) -> Option<(&EventRingHeader, &[EventSlot], &AnalyzerPage)> {
    {
        let hdr = r
            .events
            .get::<EventRingHeader>(r.plan.ring_off(w) as usize)?;
        let slots = r
            .events
            .slice::<EventSlot>(r.plan.records_off(w) as usize, r.plan.capacity as usize)?;
        let page = r.page.get::<AnalyzerPage>(0)?;
        Some((hdr, slots, page))
    }
}

impl Member {
    /// Whether one of the member's stream sockets gets the flow's events.
    fn holds(&self, slot: u32, generation: u32) -> bool {
        match &self.picks {
            Some(p) => p.holds(&self.sub, slot, generation),
            None => self.sub.unfiltered != 0,
        }
    }

    /// Every event of publication sequence `<= result` has been consumed.
    fn passed(&mut self, w: usize) -> u64 {
        // Drained when last looked at, and given nothing since: still drained (the analyzer
        // cannot consume what was not published), without a look at its ring.
        if !self.busy {
            return u64::MAX;
        }
        let prod_state = self.prod;
        let Some((hdr, slots, page)) = views(&self.a.regions, w) else {
            return u64::MAX;
        };
        let Some(mut p) = Producer::resume(hdr, slots, &page.consumer[w], prod_state) else {
            return u64::MAX;
        };
        let c = p.refresh_consumer();
        let drained = c >= p.published();
        let result = if drained {
            u64::MAX
        } else {
            p.record(c).map_or(u64::MAX, |r| r.pseq.saturating_sub(1))
        };
        self.prod = p.state();
        // An analyzer that moved, or has nothing left to do, is not stalling.
        if c != self.progress.0 || drained {
            self.progress = (c, None);
        }
        self.busy = !drained;
        result
    }

    /// Whether the consumer index has stood still for `timeout`, counted from the first wait
    /// that saw it standing.
    fn stalled(&mut self, timeout: Duration) -> bool {
        match self.progress.1 {
            Some(since) => since.elapsed() >= timeout,
            None => {
                self.progress.1 = Some(Instant::now());
                false
            }
        }
    }
}

/// The packet log of one worker, and the publication sequence of each logged frame (lossless
/// mode may not overwrite a frame an analyzer has not passed).
struct PacketLog {
    w: PktLogWriter<'static>,
    /// `(data_pos, pseq)` by entry index.
    at: Vec<(u64, u64)>,
    /// The oldest frame whose bytes are still intact.
    oldest: u64,
}

/// One worker's analyzers.
pub struct Fanout {
    worker: usize,
    members: Vec<Member>,
    opts: FanoutOptions,
    rx: Receiver<ToWorker>,
    tx: Sender<ToControl>,
    info: &'static WorkerInfo,
    log: PacketLog,
    /// Some member asked for packets.
    packets: bool,
    /// Union of the members' event masks.
    wanted: u64,
    /// Some member has a raw socket.
    raw: bool,
    /// Some member has a SYN filter (or stopped a flow): connections may go unwatched.
    filtered: bool,
    /// Connections found watched or not since the tracker was last told, and whether what it
    /// was told must be forgotten first (a subscription changed).
    watch: Vec<(u32, u32, bool)>,
    watch_reset: bool,
    /// Frames since the control channel was last read.
    since_poll: u32,
    /// Frames the sensor logged for analyzers.
    pub logged: u64,
    /// The records of the events being published (kept for its allocation).
    recs: Vec<EventRecord>,
    /// [`Fanout::passed`] as last read, capped at the publication sequence of that time (so
    /// it stays true as events are pushed), and the packets since.
    passed_seen: u64,
    since_passed: u32,
}

/// Packets between two reads of the analyzers' consumer indices when nothing needs a newer
/// value: what they have passed only frees held slots and rings, which may wait that long.
const PASSED_EVERY: u32 = 16;

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("worker", &self.worker)
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

fn kind_code(k: &EventKind) -> (u8, u8, u8, u64, u64) {
    match *k {
        EventKind::PktIn => (event_kind::PKT_IN, 0, 0, 0, 0),
        EventKind::ConnStart => (event_kind::CONN_START, 0, 0, 0, 0),
        EventKind::ConnNewData => (event_kind::CONN_NEW_DATA, 0, 0, 0, 0),
        EventKind::StateChange { old, new } => {
            (event_kind::TCP_STATE_CHANGE, old.code(), new.code(), 0, 0)
        }
        EventKind::Rexmit => (event_kind::REXMIT, 0, 0, 0, 0),
        EventKind::ConnEnd { reason } => (event_kind::CONN_END, reason as u8, 0, 0, 0),
        EventKind::Orphan => (event_kind::ORPHAN, 0, 0, 0, 0),
        EventKind::Error { kind, offset, len } => (event_kind::ERROR, kind as u8, 0, offset, len),
        EventKind::Timeout => (event_kind::TIMEOUT, 0, 0, 0, 0),
    }
}

/// The record of an event.
pub fn record(ev: &Event, worker: usize, pkt_ref: u64) -> EventRecord {
    let (kind, aux0, aux1, err_offset, err_len) = kind_code(&ev.kind);
    EventRecord {
        slot: ev.flow.slot,
        generation: ev.flow.generation,
        kind,
        side: ev.side.map_or(SIDE_NONE, |s| s.code()),
        hook: ev.hook as u8,
        tcp_flags: ev.tcp_flags,
        aux0,
        aux1,
        worker: worker as u16,
        ts_ns: ev.ts_ns,
        pseq: ev.pseq,
        pkt_pos: ev.pkt_pos,
        seq: ev.seq,
        ack: ev.ack,
        payload_len: ev.payload_len,
        socks: u32::MAX,
        head: ev.head,
        tail: ev.tail,
        err_offset,
        err_len,
        pkt_ref: if ev.pkt_pos == u64::MAX {
            NO_PKT
        } else {
            pkt_ref
        },
    }
}

impl Fanout {
    /// The analyzers of worker `worker`, attached through `rx`.
    pub fn new(
        worker: usize,
        opts: FanoutOptions,
        rx: Receiver<ToWorker>,
        tx: Sender<ToControl>,
        info: &'static WorkerInfo,
        pktlog: PktLogWriter<'static>,
    ) -> Self {
        let n = pktlog.entries() as usize;
        Fanout {
            worker,
            members: Vec::new(),
            opts,
            rx,
            tx,
            info,
            log: PacketLog {
                oldest: pktlog.next_seq(),
                w: pktlog,
                at: vec![(0, 0); n],
            },
            packets: false,
            wanted: 0,
            raw: false,
            filtered: false,
            watch: Vec::new(),
            watch_reset: false,
            since_poll: 0,
            logged: 0,
            recs: Vec::new(),
            passed_seen: 0,
            since_passed: PASSED_EVERY,
        }
    }

    /// Analyzers attached.
    pub fn attached(&self) -> usize {
        self.members.len()
    }

    /// Analyzers attached and ready.
    pub fn ready(&self) -> usize {
        self.members.iter().filter(|m| m.ready).count()
    }

    fn count(&self, c: usize, n: u64) {
        self.info.counters[c].fetch_add(n, Ordering::Relaxed);
    }

    fn recompute(&mut self) {
        self.packets = self.members.iter().any(|m| m.sub.packets);
        self.wanted = self.members.iter().fold(0, |a, m| a | m.sub.events);
        // A SYN filter is run on a connection's first packet, which always raises CONN_START:
        // the tracker builds it whenever some socket has one.
        if self.members.iter().any(|m| m.sub.syn_filtered != 0) {
            self.wanted |= EventMask::CONN_START.0;
        }
        self.raw = self.members.iter().any(|m| m.sub.raw != 0);
        self.filtered = self.members.iter().any(|m| m.picks.is_some());
    }

    /// Takes a member's new subscription: decisions of sockets whose SYN filter changed are
    /// made again.
    fn resubscribe(&mut self, id: u32, sub: Arc<Sockets>) {
        let slots = self.opts.slots;
        if let Some(m) = self.members.iter_mut().find(|m| m.a.id == id) {
            let changed = m.sub.changed_syn(&sub);
            if let Some(p) = m.picks.as_mut() {
                p.forget(changed);
            } else if sub.syn_filtered != 0 {
                m.picks = Some(Picks::new(slots));
            }
            m.sub = sub;
        }
        // What was found with the old subscription no longer holds.
        self.watch.clear();
        self.watch_reset = true;
        self.recompute();
    }

    /// Reads the control channel; `false` once the control thread is gone.
    pub fn poll_control(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(ToWorker::Attach(a)) => {
                    let mut m = Member {
                        a: *a,
                        sub: Arc::new(Sockets::legacy(Subscription::default())),
                        picks: None,
                        busy: true,
                        ready: false,
                        prod: ProducerState::default(),
                        progress: (0, None),
                    };
                    if let Some((hdr, slots, page)) = views(&m.a.regions, self.worker) {
                        if let Some(p) = Producer::new(hdr, slots, &page.consumer[self.worker]) {
                            m.prod = p.state();
                        }
                    }
                    self.members.push(m);
                }
                Ok(ToWorker::Subscribe(id, sub)) => {
                    self.resubscribe(id, Arc::new(Sockets::legacy(sub)));
                }
                Ok(ToWorker::Sockets(id, sub)) => self.resubscribe(id, sub),
                Ok(ToWorker::StopMon(id, slot, generation, bit)) => {
                    let slots = self.opts.slots;
                    if let Some(m) = self.members.iter_mut().find(|m| m.a.id == id) {
                        m.picks
                            .get_or_insert_with(|| Picks::new(slots))
                            .stop(slot, generation, bit);
                    }
                    self.recompute();
                }
                Ok(ToWorker::Ready(id)) => {
                    if let Some(m) = self.members.iter_mut().find(|m| m.a.id == id) {
                        m.ready = true;
                        m.progress.1 = None;
                    }
                }
                Ok(ToWorker::Detach(id)) => {
                    self.members.retain(|m| m.a.id != id);
                    self.recompute();
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Detaches a member the worker gave up on, and tells the control thread.
    fn detach(&mut self, i: usize, reason: u64, why: String) {
        let m = self.members.remove(i);
        if let Some((hdr, slots, page)) = views(&m.a.regions, self.worker) {
            if let Some(p) = Producer::resume(hdr, slots, &page.consumer[self.worker], m.prod) {
                p.mark_detached(reason);
            }
        }
        if reason == detach_reason::STALLED {
            self.count(counter::STALLED_DETACHED, 1);
        }
        let _ = self.tx.send(ToControl::Detached(m.a.id, why));
        self.recompute();
    }

    /// Waits (polling the control channel) until `n` analyzers are ready, or until `stop` is
    /// set (a signal); `false` if the control thread went away.
    pub fn wait_ready(
        &mut self,
        n: usize,
        stop: &AtomicBool,
        mut progress: impl FnMut(usize),
    ) -> bool {
        let mut last = Instant::now();
        while self.ready() < n && !stop.load(Ordering::Relaxed) {
            if !self.poll_control() {
                return false;
            }
            if last.elapsed() >= Duration::from_secs(1) {
                progress(self.ready());
                last = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// Every attached analyzer has passed every event of publication sequence `<= result`
    /// (`u64::MAX` with none attached, or when all are drained).
    pub fn passed(&mut self) -> u64 {
        let w = self.worker;
        self.members
            .iter_mut()
            .map(|m| m.passed(w))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// [`Fanout::passed`], read again from the analyzers' rings every 16 calls
    /// only (a lower value than theirs by then: what was passed stays passed). `pseq` is the
    /// publication sequence of the latest call, which caps the value read.
    pub fn passed_recent(&mut self, pseq: u64) -> u64 {
        if self.since_passed < PASSED_EVERY {
            self.since_passed += 1;
            return self.passed_seen;
        }
        let p = self.passed();
        self.note_passed(p, pseq)
    }

    /// Takes a value of [`Fanout::passed`] read when the latest call was `pseq`; returns it
    /// capped at `pseq`.
    pub fn note_passed(&mut self, p: u64, pseq: u64) -> u64 {
        let p = p.min(pseq);
        if p >= self.passed_seen || self.since_passed >= PASSED_EVERY {
            self.passed_seen = p;
            self.since_passed = 0;
        }
        p
    }

    /// Waits until every analyzer has passed publication sequence `p`, detaching those that
    /// stall. Returns the new `passed()`.
    pub fn wait_passed(&mut self, p: u64) -> u64 {
        self.wait_passed_by(p, |_| true)
    }

    /// Every analyzer that holds the flow in `slot` of `generation` (one of its sockets gets
    /// the flow's events) has passed every event of publication sequence `<= result`.
    pub fn passed_for_flow(&mut self, slot: u32, generation: u32) -> u64 {
        let w = self.worker;
        self.members
            .iter_mut()
            .filter(|m| m.holds(slot, generation))
            .map(|m| m.passed(w))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// [`Fanout::wait_passed`] for the analyzers that hold the flow in `slot` only: the others
    /// are not waited for. Returns the new [`Fanout::passed_for_flow`].
    pub fn wait_passed_for_flow(&mut self, p: u64, slot: u32, generation: u32) -> u64 {
        self.wait_passed_by(p, |m| m.holds(slot, generation))
    }

    fn wait_passed_by(&mut self, p: u64, holds: impl Fn(&Member) -> bool) -> u64 {
        let mut spins = 0u32;
        let mut counted = false;
        let w = self.worker;
        loop {
            let passed = self
                .members
                .iter_mut()
                .filter(|m| holds(m))
                .map(|m| m.passed(w))
                .min()
                .unwrap_or(u64::MAX);
            if passed >= p || self.stopping() {
                return passed;
            }
            if !counted {
                self.count(counter::WAITS, 1);
                counted = true;
            }
            self.backoff(&mut spins, |m, w| holds(m) && m.passed(w) < p);
        }
    }

    /// The sensor is stopping: waits end at once.
    fn stopping(&self) -> bool {
        self.opts
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }

    /// Between attempts of a wait: reads the control channel, detaches members that `blocking`
    /// says hold the wait up and that have not moved for the stall timeout, then pauses.
    fn backoff(&mut self, spins: &mut u32, mut blocking: impl FnMut(&mut Member, usize) -> bool) {
        self.poll_control();
        let w = self.worker;
        let timeout = Duration::from_nanos(self.opts.stall_timeout_ns.load(Ordering::Relaxed));
        let mut i = 0;
        while i < self.members.len() {
            let m = &mut self.members[i];
            if blocking(m, w) && m.stalled(timeout) {
                let why = format!(
                    "analyzer {} ({}, pid {}) made no progress for {:.1} s: detached",
                    m.a.id,
                    m.a.name,
                    m.a.pid,
                    timeout.as_secs_f64()
                );
                crate::log_warn!("{why}");
                self.detach(i, detach_reason::STALLED, why);
                continue;
            }
            i += 1;
        }
        *spins += 1;
        if *spins < 64 {
            std::hint::spin_loop();
        } else if *spins < 128 {
            std::thread::yield_now();
        } else {
            let us = (*spins - 127).min(50) * 20;
            std::thread::sleep(Duration::from_micros(u64::from(us)));
        }
    }

    /// Pushes one packet's (or tick's) events to the analyzers whose sockets want them; `pkt`
    /// is the frame that raised them (none for a tick).
    ///
    /// Each event's record is built once for every analyzer. Each analyzer's ring is resolved
    /// once per call, and what the call writes there becomes visible with one store of the
    /// producer index, so that the line the analyzer polls moves once per packet, not once
    /// per event; a full ring publishes what was written before waiting for room.
    pub fn publish(&mut self, events: &[Event], pkt_ref: u64, pkt: Option<&RawPacket<'_>>) {
        if self.members.is_empty() || events.iter().all(|e| e.kind.mask().0 & self.wanted == 0) {
            return;
        }
        let w = self.worker;
        let info = self.info;
        let mut recs = std::mem::take(&mut self.recs);
        recs.clear();
        recs.extend(events.iter().map(|ev| record(ev, w, pkt_ref)));
        let mut i = 0;
        while i < self.members.len() {
            let mut pushed = 0u64;
            let mut dropped = 0u64;
            let mut spins = 0u32;
            let mut detached = false;
            let mut counted = false;
            let mut ev_i = 0;
            // The sockets of the event at `ev_i`, found once even if the push waits.
            let mut socks = None;
            while ev_i < events.len() {
                // Read again after every wait: once the sensor is stopping, a full ring drops.
                let lossless = self.opts.lossless && !self.stopping();
                let Member {
                    a,
                    sub,
                    picks,
                    busy,
                    prod,
                    progress,
                    ..
                } = &mut self.members[i];
                let Some((hdr, slots, page)) = views(&a.regions, w) else {
                    break;
                };
                let Some(mut p) = Producer::resume(hdr, slots, &page.consumer[w], *prod) else {
                    break;
                };
                let start = p.published();
                let mut pending = 0u64;
                let mut full = false;
                while ev_i < events.len() {
                    let ev = &events[ev_i];
                    let for_socks = *socks.get_or_insert_with(|| {
                        let (socks, took) = socks_for(sub, picks, ev, pkt);
                        if took {
                            // A filter decided late (an analyzer that attached after the flow
                            // began) took it: it is held for analyzers from now on.
                            self.watch.push((ev.flow.slot, ev.flow.generation, true));
                        }
                        socks
                    });
                    if for_socks == 0 {
                        ev_i += 1;
                        socks = None;
                        continue;
                    }
                    // The shared record takes this member's sockets in place (each member
                    // sets them before its push).
                    let rec = &mut recs[ev_i];
                    rec.socks = for_socks;
                    if p.push_unpublished(rec, &mut pending) {
                        ev_i += 1;
                        socks = None;
                    } else if !lossless {
                        p.count_drop();
                        dropped += 1;
                        ev_i += 1;
                        socks = None;
                    } else {
                        full = true;
                        break;
                    }
                }
                pushed += pending;
                p.publish(&mut pending);
                *busy |= pushed > 0;
                let c = p.consumed();
                *prod = p.state();
                // An analyzer that moved, or had read everything before this call, is not
                // stalling.
                if c != progress.0 || c == start {
                    *progress = (c, None);
                }
                if !full {
                    // Done with this member: count, and wake it while its views are at hand.
                    // An analyzer asleep on its page's `waiting` word is woken for what it got
                    // (a read of a line it rarely writes; a system call only when it sleeps).
                    info.counters[counter::EVENTS].fetch_add(pushed, Ordering::Relaxed);
                    if pushed > 0 && page.waiting.load(Ordering::Relaxed) != 0 {
                        shm_layout::wake::wake(&page.waiting);
                    }
                    counted = true;
                    break;
                }
                // Lossless and full: wait for room (or detach the analyzer if it stalls).
                let id = a.id;
                self.backoff(&mut spins, |m, w| {
                    let Some((hdr, slots, page)) = views(&m.a.regions, w) else {
                        return false;
                    };
                    Producer::resume(hdr, slots, &page.consumer[w], m.prod).is_some_and(|mut p| {
                        p.refresh_consumer();
                        let full = p.published() - p.consumed() >= p.capacity();
                        m.prod = p.state();
                        full
                    })
                });
                // The wait may have detached members, this one or others before it: find it
                // again by its id.
                match self.members.iter().position(|m| m.a.id == id) {
                    Some(k) => i = k,
                    None => {
                        // Detached while we waited: its events go nowhere now.
                        detached = true;
                        break;
                    }
                }
            }
            if !counted {
                self.count(counter::EVENTS, pushed);
            }
            if pushed > 0 && !detached && !counted {
                if let Some((_, _, page)) = views(&self.members[i].a.regions, w) {
                    if page.waiting.load(Ordering::Relaxed) != 0 {
                        shm_layout::wake::wake(&page.waiting);
                    }
                }
            }
            if dropped > 0 {
                self.count(counter::EVENTS_DROPPED, dropped);
            }
            if !detached {
                i += 1;
            }
        }
        self.recs = recs;
        // A connection's filters were run on its first packet (it raised CONN_START): one that
        // no analyzer gets is not held for analyzers when it ends.
        if self.filtered {
            let mut last = None;
            for ev in events.iter().filter(|e| e.kind == EventKind::ConnStart) {
                let f = (ev.flow.slot, ev.flow.generation);
                if last == Some(f) {
                    continue;
                }
                last = Some(f);
                if !self.members.iter().any(|m| m.holds(f.0, f.1)) {
                    self.watch.push((f.0, f.1, false));
                }
            }
        }
    }

    /// Tells the tracker which connections no analyzer gets (see [`Tracker::set_watched`]),
    /// and to forget them all after a subscription changed.
    #[inline]
    fn sync_watch(&mut self, tracker: &mut Tracker) {
        if self.watch.is_empty() && !self.watch_reset {
            return;
        }
        if std::mem::take(&mut self.watch_reset) {
            tracker.forget_watched();
        }
        for (slot, generation, watched) in self.watch.drain(..) {
            tracker.set_watched(slot, generation, watched);
        }
    }

    /// Raw sockets: pushes an orphan event for `pkt` (at `pos` in the input, logged as
    /// `pkt_ref`, to be processed in call `pseq`) to each analyzer whose raw sockets take it.
    /// The frame is the event's packet ([`mos_client::Ctx::event_packet`]).
    pub fn publish_raw(&mut self, pkt: &RawPacket<'_>, pos: u64, pkt_ref: u64, pseq: u64) {
        if !self.raw {
            return;
        }
        let w = self.worker;
        let mut i = 0;
        while i < self.members.len() {
            let socks = self.members[i].sub.raw_matches(pkt);
            if socks == 0 {
                i += 1;
                continue;
            }
            let rec = EventRecord {
                slot: u32::MAX,
                generation: 0,
                kind: event_kind::ORPHAN,
                side: SIDE_NONE,
                hook: shm_layout::Hook::Null as u8,
                worker: w as u16,
                ts_ns: pkt.ts_ns,
                pseq,
                pkt_pos: pos,
                socks,
                pkt_ref,
                ..EventRecord::default()
            };
            // The wait for room may detach members (this one or others): go on after where
            // this one is now, or at its old place if it went.
            i = match self.push_one(i, &rec) {
                Some(k) => k + 1,
                None => i,
            };
        }
    }

    /// Pushes one record to member `i`, waiting for room in lossless mode (detaching it if it
    /// stalls) or dropping it live, and wakes it. Returns where the member is now, `None` if
    /// it was detached.
    fn push_one(&mut self, i: usize, rec: &EventRecord) -> Option<usize> {
        let w = self.worker;
        let id = self.members[i].a.id;
        let mut spins = 0u32;
        loop {
            let k = self.members.iter().position(|m| m.a.id == id)?;
            let lossless = self.opts.lossless && !self.stopping();
            let m = &mut self.members[k];
            let Some((hdr, slots, page)) = views(&m.a.regions, w) else {
                return Some(k);
            };
            let Some(mut p) = Producer::resume(hdr, slots, &page.consumer[w], m.prod) else {
                return Some(k);
            };
            let ok = p.try_push(rec);
            m.busy |= ok;
            if !ok && !lossless {
                p.count_drop();
            }
            let c = p.consumed();
            let idle = c == p.published() - u64::from(ok);
            m.prod = p.state();
            if c != m.progress.0 || idle {
                m.progress = (c, None);
            }
            if ok {
                if page.waiting.load(Ordering::Relaxed) != 0 {
                    shm_layout::wake::wake(&page.waiting);
                }
                self.count(counter::EVENTS, 1);
                return Some(k);
            }
            if !lossless {
                self.count(counter::EVENTS_DROPPED, 1);
                return Some(k);
            }
            self.backoff(&mut spins, |m, w| {
                m.a.id == id
                    && views(&m.a.regions, w).is_some_and(|(hdr, slots, page)| {
                        Producer::resume(hdr, slots, &page.consumer[w], m.prod).is_some_and(
                            |mut p| {
                                p.refresh_consumer();
                                let full = p.published() - p.consumed() >= p.capacity();
                                m.prod = p.state();
                                full
                            },
                        )
                    })
            });
        }
    }

    /// Logs a frame when some analyzer reads packets; returns its packet-log sequence, or
    /// [`NO_PKT`]. In lossless mode, first waits until the frames it overwrites are passed.
    pub fn log_packet(
        &mut self,
        pkt: &RawPacket<'_>,
        seg: Option<&TcpSegment<'_>>,
        offset: u64,
        pseq: u64,
    ) -> u64 {
        if !self.packets {
            return NO_PKT;
        }
        let n = self.log.w.entries();
        let next = self.log.w.next_seq();
        if self.opts.lossless {
            // Frames whose entry is reused or whose bytes are overwritten.
            let (_, head) = self.log.w.plan(pkt.data.len());
            let mut need = 0;
            let mut s = self.log.oldest;
            while s < next {
                let (pos, p) = self.log.at[(s % n) as usize];
                if s + n > next && pos >= head {
                    break;
                }
                need = need.max(p);
                s += 1;
            }
            if need > 0 && self.passed() < need {
                self.wait_passed(need);
            }
        }
        let mut info = PktInfo {
            ts_ns: pkt.ts_ns,
            wirelen: pkt.orig_len,
            linktype: pkt.link.code() as u16,
            offset,
            ..Default::default()
        };
        if let Some(seg) = seg {
            let base = pkt.data.as_ptr() as usize;
            info.ip_off = seg.header_off[0];
            info.tcp_off = seg.header_off[1];
            info.payload_off = (seg.payload.as_ptr() as usize - base) as u16;
            info.payload_len = seg.payload_len;
        }
        let seq = self.log.w.append(info, pkt.data);
        let (_, head) = self.log.w.plan(0);
        let pos = self.log.w.info(seq).map_or(0, |i| i.data_pos);
        self.log.at[(seq % n) as usize] = (pos, pseq);
        while self.log.oldest < seq
            && (self.log.oldest + n <= seq || self.log.at[(self.log.oldest % n) as usize].0 < head)
        {
            self.log.oldest += 1;
        }
        self.logged += 1;
        seq
    }

    /// At the end of the input: waits (lossless) until every analyzer drained its ring, then
    /// tells the control thread the sensor is done.
    pub fn finish(&mut self) {
        if self.opts.lossless {
            self.wait_passed(u64::MAX);
        }
        let _ = self.tx.send(ToControl::Done);
    }

    /// Whether analyzers want any of `mask`'s events.
    pub fn wants(&self, mask: EventMask) -> bool {
        self.wanted & mask.0 != 0
    }
}

/// The replay loop's hooks: lossless waits before each packet, publication after.
#[derive(Debug)]
pub struct PublishSink {
    /// The analyzers.
    pub fanout: Fanout,
    pkt_ref: u64,
    /// The packet reference the slot publisher was last given (it starts at [`NO_PKT`]).
    told_ref: u64,
    /// Events built whatever the analyzers want (for another sink, such as `--dump`).
    base_events: EventMask,
    header: &'static Header,
    /// Workers that have not reached the end of the input; the last one marks the sensor done.
    running: Arc<AtomicUsize>,
}

impl PublishSink {
    /// A sink over a worker's analyzers; the tracker builds `base_events` and whatever the
    /// analyzers subscribe to. `running` counts the workers still going (shared by all of
    /// them): the last to end marks the sensor done in the header.
    pub fn new(
        fanout: Fanout,
        base_events: EventMask,
        header: &'static Header,
        running: Arc<AtomicUsize>,
    ) -> Self {
        PublishSink {
            fanout,
            pkt_ref: NO_PKT,
            told_ref: NO_PKT,
            base_events,
            header,
            running,
        }
    }
}

impl EventSink for PublishSink {
    fn before(
        &mut self,
        tracker: &mut Tracker,
        pkt: &RawPacket<'_>,
        pos: u64,
        seg: Option<&TcpSegment<'_>>,
    ) -> Result<()> {
        self.fanout.since_poll += 1;
        if self.fanout.since_poll >= 256 {
            self.fanout.since_poll = 0;
            self.fanout.poll_control();
            self.header.clock_ns.fetch_max(pkt.ts_ns, Ordering::Relaxed);
        }
        tracker.set_events(EventMask(self.base_events.0 | self.fanout.wanted));
        tracker.set_quiet_unwatched(self.base_events.0 == 0);
        self.fanout.sync_watch(tracker);
        if self.fanout.opts.lossless && !self.fanout.members.is_empty() {
            // What the analyzers had passed a few packets ago, unless this packet needs more.
            let pseq = tracker.pseq();
            let mut passed = self.fanout.passed_recent(pseq);
            // Analyzers past every call so far are past whatever this segment could discard:
            // the lookup is needed only when one is behind.
            let mut own = None;
            if let Some(seg) = seg.filter(|_| passed < pseq) {
                let (global, flow) = tracker.discard_needs_split(seg);
                if global > passed {
                    passed = self.fanout.passed();
                    if global > passed {
                        passed = self.fanout.wait_passed(global);
                    }
                    passed = self.fanout.note_passed(passed, pseq);
                }
                // The segment's own flow's bytes wait only for the analyzers that get that
                // flow: what they have passed may go, whatever the others have not.
                if let Some((slot, generation, need)) = flow.filter(|f| f.2 > passed) {
                    let mut p = self.fanout.passed_for_flow(slot, generation);
                    if need > p.max(passed) {
                        p = self.fanout.wait_passed_for_flow(need, slot, generation);
                    }
                    own = Some((slot, p.max(passed)));
                }
            }
            tracker.set_passed(passed);
            tracker.set_flow_passed(own);
            while let Some(p) = tracker.must_wait() {
                let passed = self.fanout.wait_passed(p);
                let passed = self.fanout.note_passed(passed, pseq);
                tracker.set_passed(passed);
                if passed < p {
                    // Stopping: go on without the room (what finds none is dropped, counted).
                    break;
                }
            }
        } else {
            tracker.set_passed(u64::MAX);
        }
        // The packet log and raw sockets are checked here, not in calls, since most runs
        // have neither; the slot publisher is told only a reference that changed.
        let pkt_ref = if self.fanout.packets {
            let offset = seg.map_or(u64::MAX, |s| tracker.payload_offset(s).unwrap_or(u64::MAX));
            self.fanout.log_packet(pkt, seg, offset, tracker.pseq() + 1)
        } else {
            NO_PKT
        };
        self.pkt_ref = pkt_ref;
        if self.fanout.raw {
            self.fanout
                .publish_raw(pkt, pos, pkt_ref, tracker.pseq() + 1);
        }
        if pkt_ref != self.told_ref {
            if let Some(p) = tracker.publisher_mut() {
                p.set_pkt_ref(pkt_ref);
            }
            self.told_ref = pkt_ref;
        }
        Ok(())
    }

    fn handle(&mut self, _tracker: &Tracker, events: &[Event]) -> Result<()> {
        self.fanout.publish(events, self.pkt_ref, None);
        Ok(())
    }

    fn handle_frame(
        &mut self,
        _tracker: &Tracker,
        events: &[Event],
        pkt: &RawPacket<'_>,
    ) -> Result<()> {
        self.fanout.publish(events, self.pkt_ref, Some(pkt));
        Ok(())
    }

    fn idle(&mut self, tracker: &mut Tracker) {
        self.fanout.since_poll = 0;
        self.fanout.poll_control();
        // What the analyzers taken in now want is raised from the next event on.
        tracker.set_events(EventMask(self.base_events.0 | self.fanout.wanted));
        self.fanout.sync_watch(tracker);
    }

    fn checkpoint(&mut self, tracker: &Tracker, stats: &ReplayStats) {
        super::store_counters(self.fanout.info, stats, tracker);
    }

    fn end(&mut self, _tracker: &mut Tracker) -> Result<()> {
        // Analyzers learn the sensor is done once every worker has ended its connections:
        // from the header's state, and from the control thread once all workers said so.
        if self.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.header
                .state
                .store(sensor_state::DONE, Ordering::Release);
        }
        self.fanout.finish();
        Ok(())
    }
}
