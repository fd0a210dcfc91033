//! The replay loop: frames from a capture backend, through the parser and the tracker, to an
//! event sink.
//!
//! This is the only place in the data path that reads a clock, and only to pace progress
//! reports; the tracker itself sees capture time alone.

use crate::capture::{CaptureBackend, CaptureError, LinkType, RawPacket};
use crate::defrag::{DefragConfig, DefragStats, Defragmenter};
use crate::event::Event;
use crate::parse::{parse_packet, ChecksumStatus, ParseError, Parsed, TcpSegment};
use crate::tracker::{Tracker, MAX_ENDS_PER_CALL};
use anyhow::Result;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the tracker's events go after each packet.
pub trait EventSink {
    /// Called before each frame reaches the tracker (`seg` is its TCP segment, if it has
    /// one; `pos` its position in the input): a publisher logs the frame, hands it to raw
    /// sockets and, in lossless mode, waits for analyzers here.
    fn before(
        &mut self,
        _tracker: &mut Tracker,
        _pkt: &RawPacket<'_>,
        _pos: u64,
        _seg: Option<&TcpSegment<'_>>,
    ) -> Result<()> {
        Ok(())
    }

    /// Called when the input has had no frame for a while (a quiet live link, a paced replay
    /// between frames) and before the connections still open are ended: a publisher looks at
    /// its control channel here, so that analyzers attach and detach then too.
    fn idle(&mut self, _tracker: &mut Tracker) {}

    /// Called once after the last events: a publisher waits for analyzers to drain here.
    fn end(&mut self, _tracker: &mut Tracker) -> Result<()> {
        Ok(())
    }

    /// Called about once a second with the worker's counters so far, and once more before
    /// [`EventSink::end`]: a publisher copies them into the shared header, where status
    /// reports read them.
    fn checkpoint(&mut self, _tracker: &Tracker, _stats: &ReplayStats) {}

    /// Handles the events one packet (or one clock tick) raised, in order. The tracker still
    /// holds every flow and byte these events refer to.
    fn handle(&mut self, tracker: &Tracker, events: &[Event]) -> Result<()>;

    /// [`EventSink::handle`] for the events a frame raised, with the frame (a publisher runs
    /// analyzers' filters on it).
    fn handle_frame(
        &mut self,
        tracker: &Tracker,
        events: &[Event],
        _pkt: &RawPacket<'_>,
    ) -> Result<()> {
        self.handle(tracker, events)
    }
}

/// A sink that only counts events (`mos-sensor` without `--dump`, benchmarks).
#[derive(Debug, Default)]
pub struct CountingSink {
    /// Events seen.
    pub events: u64,
}

impl EventSink for CountingSink {
    fn handle(&mut self, _tracker: &Tracker, events: &[Event]) -> Result<()> {
        self.events += events.len() as u64;
        Ok(())
    }
}

/// Two sinks in turn (the in-process dump and the publisher, for instance).
#[derive(Debug)]
pub struct Both<A, B>(pub A, pub B);

impl<A: EventSink, B: EventSink> EventSink for Both<A, B> {
    fn before(
        &mut self,
        tracker: &mut Tracker,
        pkt: &RawPacket<'_>,
        pos: u64,
        seg: Option<&TcpSegment<'_>>,
    ) -> Result<()> {
        self.0.before(tracker, pkt, pos, seg)?;
        self.1.before(tracker, pkt, pos, seg)
    }

    fn handle(&mut self, tracker: &Tracker, events: &[Event]) -> Result<()> {
        self.0.handle(tracker, events)?;
        self.1.handle(tracker, events)
    }

    fn handle_frame(
        &mut self,
        tracker: &Tracker,
        events: &[Event],
        pkt: &RawPacket<'_>,
    ) -> Result<()> {
        self.0.handle_frame(tracker, events, pkt)?;
        self.1.handle_frame(tracker, events, pkt)
    }

    fn end(&mut self, tracker: &mut Tracker) -> Result<()> {
        self.0.end(tracker)?;
        self.1.end(tracker)
    }

    fn checkpoint(&mut self, tracker: &Tracker, stats: &ReplayStats) {
        self.0.checkpoint(tracker, stats);
        self.1.checkpoint(tracker, stats);
    }
}

impl<T: EventSink + ?Sized> EventSink for &mut T {
    fn before(
        &mut self,
        tracker: &mut Tracker,
        pkt: &RawPacket<'_>,
        pos: u64,
        seg: Option<&TcpSegment<'_>>,
    ) -> Result<()> {
        (**self).before(tracker, pkt, pos, seg)
    }

    fn handle(&mut self, tracker: &Tracker, events: &[Event]) -> Result<()> {
        (**self).handle(tracker, events)
    }

    fn handle_frame(
        &mut self,
        tracker: &Tracker,
        events: &[Event],
        pkt: &RawPacket<'_>,
    ) -> Result<()> {
        (**self).handle_frame(tracker, events, pkt)
    }

    fn idle(&mut self, tracker: &mut Tracker) {
        (**self).idle(tracker)
    }

    fn end(&mut self, tracker: &mut Tracker) -> Result<()> {
        (**self).end(tracker)
    }

    fn checkpoint(&mut self, tracker: &Tracker, stats: &ReplayStats) {
        (**self).checkpoint(tracker, stats)
    }
}

/// What the sensor does with TCP checksums (`--no-checksum`, `--drop-bad-checksums`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChecksumPolicy {
    /// Not verified.
    Ignore,
    /// Verified; a segment with a bad one is counted and kept. The default: captures taken on
    /// the sending host often carry checksums the NIC would have filled in later.
    #[default]
    Count,
    /// Verified; a segment with a bad one is counted and dropped before the tracker, as the
    /// receiving host would drop it (its bytes become a gap unless a retransmission brings
    /// them).
    Drop,
}

impl ChecksumPolicy {
    /// Whether checksums are computed at all.
    #[inline]
    pub fn verifies(self) -> bool {
        self != ChecksumPolicy::Ignore
    }
}

/// Replay settings.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// What to do with TCP checksums.
    pub checksums: ChecksumPolicy,
    /// Call the progress callback about this often (`None`: never).
    pub progress_every: Option<Duration>,
    /// Set from elsewhere (a signal handler) to stop the replay early, as if the input ended.
    pub stop: Option<Arc<AtomicBool>>,
    /// Replay at this multiple of the capture's own pace (`None`: as fast as possible).
    pub speed: Option<f64>,
    /// Reassemble IP fragments within these limits (`None`: fragments are counted as other
    /// IP, as orphans).
    pub defrag: Option<DefragConfig>,
}

/// How often a replay hands its counters to [`EventSink::checkpoint`].
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Frame-level counters of a replay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Frames read.
    pub frames: u64,
    /// Bytes of frames read (as captured).
    pub frame_bytes: u64,
    /// TCP segments (reassembled datagrams included).
    pub tcp: u64,
    /// IP packets that are not TCP (reassembled datagrams included, and IP fragments when
    /// reassembly is off).
    pub other_ip: u64,
    /// Frames without IP.
    pub not_ip: u64,
    /// Frames cut inside a header: skipped.
    pub truncated: u64,
    /// Frames with impossible header values: skipped.
    pub malformed: u64,
    /// Frames of a link type mos does not read: skipped.
    pub unsupported_link: u64,
    /// TCP segments whose checksum failed (kept, or dropped with [`ChecksumPolicy::Drop`]).
    pub bad_checksum: u64,
    /// Of those, segments dropped before the tracker ([`ChecksumPolicy::Drop`]).
    pub bad_checksum_dropped: u64,
    /// TCP segments whose payload the snap length cut (the rest is a gap).
    pub snap_cut: u64,
    /// TCP segments whose IP header declares more bytes than the whole, uncut frame holds
    /// (kept, with the payload the frame holds).
    pub ip_length_exceeds_frame: u64,
    /// Capture time of the last frame, ns.
    pub last_ts_ns: u64,
    /// IP fragment reassembly: fragments taken in (frames counted in none of the above),
    /// datagrams handed on, drops by cause.
    pub defrag: DefragStats,
}

impl ReplayStats {
    /// Adds another worker's counters to these (the last time is the later of the two).
    pub fn add(&mut self, o: &ReplayStats) {
        self.frames += o.frames;
        self.frame_bytes += o.frame_bytes;
        self.tcp += o.tcp;
        self.other_ip += o.other_ip;
        self.not_ip += o.not_ip;
        self.truncated += o.truncated;
        self.malformed += o.malformed;
        self.unsupported_link += o.unsupported_link;
        self.bad_checksum += o.bad_checksum;
        self.bad_checksum_dropped += o.bad_checksum_dropped;
        self.snap_cut += o.snap_cut;
        self.ip_length_exceeds_frame += o.ip_length_exceeds_frame;
        self.last_ts_ns = self.last_ts_ns.max(o.last_ts_ns);
        self.defrag.add(&o.defrag);
    }
}

/// What a worker keeps besides its tracker and sink while it takes frames: its counters,
/// scratch space for events, and its IP defragmenter.
#[derive(Debug)]
pub struct StepState {
    /// Frame-level counters.
    pub stats: ReplayStats,
    /// Scratch space for the events of one packet (cleared before each).
    pub events: Vec<Event>,
    /// The IP defragmenter (`None`: fragments are counted as other IP, or a dispatcher
    /// reassembles them before they reach this worker).
    pub defrag: Option<Box<Defragmenter>>,
    /// What to do with TCP checksums.
    pub checksums: ChecksumPolicy,
}

impl StepState {
    /// Empty counters, and a defragmenter with `defrag`'s limits if it is given.
    pub fn new(checksums: ChecksumPolicy, defrag: Option<DefragConfig>) -> Self {
        StepState {
            stats: ReplayStats::default(),
            events: Vec::with_capacity(64),
            defrag: defrag.map(|c| Box::new(Defragmenter::new(c))),
            checksums,
        }
    }
}

/// What a replay did, and the error that ended it early, if one did.
#[derive(Debug)]
pub struct ReplayOutcome {
    /// Frame-level counters.
    pub stats: ReplayStats,
    /// The stop flag ended the replay before the input did.
    pub stopped: bool,
    /// A truncated or malformed capture: the replay stopped there; what came before counts.
    pub capture_error: Option<CaptureError>,
}

/// Sleeps until the frame captured at `ts_ns` is due: the first frame sets the origin
/// (`pacing`), and capture time runs `speed` times faster than the wall clock. Frames whose
/// time goes backwards are not held back. Returns whether it slept.
pub fn pace(pacing: &mut Option<(Instant, u64)>, ts_ns: u64, speed: f64) -> bool {
    let (t0, ts0) = *pacing.get_or_insert((Instant::now(), ts_ns));
    // A speed too small for the gap (or not positive) holds the frame for as long as a
    // Duration lasts, instead of panicking in the conversion.
    let due = Duration::try_from_secs_f64(ts_ns.saturating_sub(ts0) as f64 / 1e9 / speed)
        .unwrap_or(Duration::MAX);
    let now = t0.elapsed();
    if due > now {
        // Long gaps in the capture are cut to a second, so a quiet hour does not stall a demo.
        std::thread::sleep((due - now).min(Duration::from_secs(1)));
        return true;
    }
    false
}

/// Takes one frame through the parser, the defragmenter, the tracker and `sink`: counts it
/// in `st.stats`, and hands the tracker the frame's TCP segment (or reports it as an orphan).
/// An IP fragment goes to the defragmenter, and the datagram it completes, if any, goes on as
/// a raw IP frame with the fragment's time and position (so the packet log holds the whole
/// datagram). `pos` is the frame's position in the input. Every capture backend and every
/// worker goes through here, so they count and track frames alike.
pub fn step(
    tracker: &mut Tracker,
    sink: &mut dyn EventSink,
    st: &mut StepState,
    pos: u64,
    pkt: &RawPacket<'_>,
) -> Result<()> {
    let StepState {
        stats,
        events,
        defrag,
        checksums,
    } = st;
    stats.frames += 1;
    stats.frame_bytes += pkt.data.len() as u64;
    stats.last_ts_ns = stats.last_ts_ns.max(pkt.ts_ns);
    events.clear();
    // Matched by reference: the parsed segment is large, and stays where the parser left it.
    let parsed = parse_packet(pkt, checksums.verifies());
    match (&parsed, defrag.as_deref_mut()) {
        (Ok(Parsed::Fragment { ip, .. }), Some(d)) => {
            if let Some(datagram) = d.push(pkt.ts_ns, ip) {
                let whole = reassembled(pkt.ts_ns, datagram);
                parsed_packet(tracker, sink, stats, events, pos, &whole, *checksums)?;
            }
            stats.defrag = *d.stats();
        }
        (_, d) => {
            if let Some(d) = d {
                if d.expire(pkt.ts_ns) {
                    stats.defrag = *d.stats();
                }
            }
            packet(tracker, sink, stats, events, pos, pkt, &parsed, *checksums)?;
        }
    }
    Ok(())
}

/// A datagram another thread reassembled (a dispatcher's defragmenter), taken like a frame
/// but not counted as one: the fragments it came from were.
pub fn step_datagram(
    tracker: &mut Tracker,
    sink: &mut dyn EventSink,
    st: &mut StepState,
    pos: u64,
    pkt: &RawPacket<'_>,
) -> Result<()> {
    let StepState {
        stats,
        events,
        checksums,
        ..
    } = st;
    stats.last_ts_ns = stats.last_ts_ns.max(pkt.ts_ns);
    events.clear();
    parsed_packet(tracker, sink, stats, events, pos, pkt, *checksums)
}

/// Parses `pkt` (a frame or a reassembled datagram) and takes it through the tracker.
#[inline]
fn parsed_packet(
    tracker: &mut Tracker,
    sink: &mut dyn EventSink,
    stats: &mut ReplayStats,
    events: &mut Vec<Event>,
    pos: u64,
    pkt: &RawPacket<'_>,
    checksums: ChecksumPolicy,
) -> Result<()> {
    let parsed = parse_packet(pkt, checksums.verifies());
    packet(tracker, sink, stats, events, pos, pkt, &parsed, checksums)
}

/// A reassembled datagram as a frame of raw IP, captured at `ts_ns`.
pub fn reassembled(ts_ns: u64, datagram: &[u8]) -> RawPacket<'_> {
    RawPacket {
        ts_ns,
        link: LinkType::Raw,
        data: datagram,
        orig_len: datagram.len() as u32,
    }
}

/// One parsed packet (a frame, or a reassembled datagram) through the tracker.
#[allow(clippy::too_many_arguments)]
fn packet(
    tracker: &mut Tracker,
    sink: &mut dyn EventSink,
    stats: &mut ReplayStats,
    events: &mut Vec<Event>,
    pos: u64,
    pkt: &RawPacket<'_>,
    parsed: &Result<Parsed<'_>, ParseError>,
    checksums: ChecksumPolicy,
) -> Result<()> {
    match parsed {
        Ok(Parsed::Tcp(seg)) => {
            stats.tcp += 1;
            if seg.checksum == ChecksumStatus::Bad {
                stats.bad_checksum += 1;
                if checksums == ChecksumPolicy::Drop {
                    // The tracker never sees it, as the receiving stack would never have.
                    stats.bad_checksum_dropped += 1;
                    return Ok(());
                }
            }
            // Connections due to end by this frame's time end first, a bounded number per
            // call, so that no call's events grow with the table.
            if tracker.ends_due(pkt.ts_ns) {
                advance(tracker, sink, events, pkt.ts_ns)?;
                events.clear();
            }
            // A copy only in the rare case the segment needs mending.
            let mended;
            let mut seg = seg;
            if seg.payload.len() < seg.payload_len as usize {
                if (pkt.orig_len as usize) > pkt.data.len() {
                    stats.snap_cut += 1;
                } else {
                    // The whole frame was captured, yet the IP header claims more: the header
                    // lies, so the payload is what the frame holds, not a gap.
                    stats.ip_length_exceeds_frame += 1;
                    mended = TcpSegment {
                        payload_len: seg.payload.len() as u32,
                        ..*seg
                    };
                    seg = &mended;
                }
            }
            sink.before(tracker, pkt, pos, Some(seg))?;
            tracker.process(pkt.ts_ns, pos, seg, events);
        }
        // A fragment with reassembly off (or inside a reassembled datagram) is an orphan.
        Ok(Parsed::OtherIp { .. } | Parsed::Fragment { .. }) => {
            stats.other_ip += 1;
            sink.before(tracker, pkt, pos, None)?;
            tracker.orphan_packet(pkt.ts_ns, pos, events);
        }
        Ok(Parsed::NotIp) => stats.not_ip += 1,
        Err(ParseError::Truncated(_)) => stats.truncated += 1,
        Err(ParseError::Malformed(_)) => stats.malformed += 1,
        Err(ParseError::UnsupportedLink) => stats.unsupported_link += 1,
    }
    if !events.is_empty() {
        sink.handle_frame(tracker, events, pkt)?;
        events.clear();
    }
    Ok(())
}

/// Advances `tracker`'s clock (and the defragmenter's) to `now_ns` without a frame (idle
/// connections and incomplete datagrams time out) and hands what that raised to `sink`, in
/// calls of at most [`MAX_ENDS_PER_CALL`] ended connections each.
pub fn tick(
    tracker: &mut Tracker,
    sink: &mut dyn EventSink,
    st: &mut StepState,
    now_ns: u64,
) -> Result<()> {
    if let Some(d) = st.defrag.as_deref_mut() {
        d.expire(now_ns);
        st.stats.defrag = *d.stats();
    }
    advance(tracker, sink, &mut st.events, now_ns)
}

/// The tracker's part of [`tick`]: ends what is due by `now_ns`, a bounded number of
/// connections per call, handing each call's events to `sink`.
fn advance(
    tracker: &mut Tracker,
    sink: &mut dyn EventSink,
    events: &mut Vec<Event>,
    now_ns: u64,
) -> Result<()> {
    loop {
        events.clear();
        tracker.advance(now_ns, events);
        if !events.is_empty() {
            sink.handle(tracker, events)?;
        }
        if !tracker.ends_due(now_ns) {
            return Ok(());
        }
    }
}

/// At the end of the input (capture time `now_ns`): drops the datagrams still incomplete,
/// ends every connection still open, lets `sink` finish (a publisher drains its analyzers),
/// then frees what the last connections held.
pub fn finish(
    tracker: &mut Tracker,
    sink: &mut dyn EventSink,
    st: &mut StepState,
    now_ns: u64,
) -> Result<()> {
    if let Some(d) = st.defrag.as_deref_mut() {
        d.finish();
        st.stats.defrag = *d.stats();
    }
    // Analyzers that attached since the sink last looked get the ends of the connections.
    sink.idle(tracker);
    let events = &mut st.events;
    loop {
        events.clear();
        let more = tracker.finish_some(now_ns, MAX_ENDS_PER_CALL, events);
        sink.handle(tracker, events)?;
        if !more {
            break;
        }
    }
    // The counters as they stand while a publisher drains its analyzers.
    sink.checkpoint(tracker, &st.stats);
    sink.end(tracker)?;
    events.clear();
    tracker.advance(now_ns, events);
    Ok(())
}

/// Whether the replay's stop flag is set.
pub fn stop_set(opts: &ReplayOptions) -> bool {
    opts.stop
        .as_ref()
        .is_some_and(|s| s.load(Ordering::Relaxed))
}

/// How far a backend has read: bytes consumed, and the total when known.
pub type Position = (u64, Option<u64>);

/// Replays a whole input: every frame through the tracker, every event to `sink`, then ends
/// the connections still open. `progress` gets the counters and the backend's position.
pub fn replay(
    backend: &mut dyn CaptureBackend,
    tracker: &mut Tracker,
    sink: &mut dyn EventSink,
    opts: ReplayOptions,
    progress: &mut dyn FnMut(&ReplayStats, Position),
) -> Result<ReplayOutcome> {
    let mut st = StepState::new(opts.checksums, opts.defrag);
    let mut next_report = opts.progress_every.map(|d| (Instant::now() + d, d));
    let mut capture_error = None;
    let mut stopped = false;
    let mut pacing: Option<(Instant, u64)> = None;
    let mut next_checkpoint = Instant::now() + CHECKPOINT_EVERY;
    loop {
        if st.stats.frames.is_multiple_of(1024) {
            if let Some(stop) = &opts.stop {
                if stop.load(Ordering::Relaxed) {
                    stopped = true;
                    break;
                }
            }
        }
        let pkt = match backend.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => {
                // An input that waits for its writer ends when the flag is set (stopped).
                stopped = stop_set(&opts);
                break;
            }
            Err(e) => {
                capture_error = Some(e);
                break;
            }
        };
        let slept = opts
            .speed
            .is_some_and(|speed| pace(&mut pacing, pkt.ts_ns, speed));
        let pos = st.stats.frames;
        step(tracker, sink, &mut st, pos, &pkt)?;
        if slept {
            // A paced replay has time to spare: analyzers that attached are taken in, and a
            // signal is seen at once rather than 1024 frames later.
            sink.idle(tracker);
            if opts
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed))
            {
                stopped = true;
                break;
            }
        }
        // The clock is read every 1024 frames, or after a paced replay slept anyway.
        if (slept || st.stats.frames.is_multiple_of(1024)) && Instant::now() >= next_checkpoint {
            sink.checkpoint(tracker, &st.stats);
            next_checkpoint = Instant::now() + CHECKPOINT_EVERY;
        }
        if let Some((at, every)) = next_report {
            // Looking at the clock every 4096 frames keeps it off the per-packet path.
            if st.stats.frames.is_multiple_of(4096) && Instant::now() >= at {
                progress(&st.stats, backend.progress());
                next_report = Some((Instant::now() + every, every));
            }
        }
    }
    let end = st.stats.last_ts_ns;
    finish(tracker, sink, &mut st, end)?;
    Ok(ReplayOutcome {
        stats: st.stats,
        stopped,
        capture_error,
    })
}
