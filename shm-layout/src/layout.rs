//! The ABI v2 layouts: every type that lives in shared memory, with its size and field offsets
//! pinned by `const` assertions so that a change that moves a byte fails to compile.
//!
//! Three kinds of region cross the process boundary:
//!
//! - the **main region** (read-only for analyzers): the [`Header`] then, for each worker, its
//!   flow slots, stream-buffer metadata, chunk maps, stream chunks and packet log, at the
//!   offsets its
//!   [`WorkerInfo`] gives;
//! - one **event region** per analyzer (read-only for it): for each worker an
//!   [`EventRingHeader`] followed by that ring's [`EventRecord`]s;
//! - one **analyzer page** per analyzer (writable by it alone): its consumer indices and
//!   heartbeat ([`AnalyzerPage`]).
//!
//! Values written once before any analyzer maps a region are plain integers; everything written
//! while analyzers read is an atomic word, so readers copy it with relaxed loads and validate
//! (seqlock stamp, ring indices) instead of trusting it.

use crate::seqlock::Stamp;
use crate::sync::AtomicU64;
use core::mem::{offset_of, size_of};

/// `b"MOS-SHM\x01"` read as a little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"MOS-SHM\x01");
/// Consumers refuse a region whose major version differs from theirs.
pub const ABI_MAJOR: u16 = 2;
/// Minor versions only add things a reader of the same major may ignore. Major 2 replaced
/// each side's fixed ring by a chain of chunks ([`ConfigInfo::chunk_size`],
/// [`WorkerInfo::chunk_map_off`]); it keeps everything minor 3 of major 1 had (tunnel records,
/// the target-based overlap policies, the fragment counters, the control socket's `Status`).
/// Minor 1 added the input's description at the header's end ([`InputInfo`]), each event's
/// [`EventRecord::socks`], and the control socket's per-socket subscriptions (filters) and
/// `StopMon`. Minor 2 added the control socket's `Workers` (an attachment that takes only some
/// workers' connections: one per context of a C analyzer). Minor 3 added the analyzer page's
/// [`AnalyzerPage::records_dropped`] (an old sensor leaves the word unread).
pub const ABI_MINOR: u16 = 3;

/// The most workers one sensor runs; the header has a [`WorkerInfo`] for each.
pub const MAX_WORKERS: usize = 32;

/// Out-of-order islands one ring's metadata holds.
pub const MAX_FRAGMENTS: usize = 32;
/// Recent gaps one ring's metadata remembers.
pub const MAX_GAPS: usize = 16;

/// A stream-buffer index meaning "no buffer".
pub const NO_RING: u32 = u32::MAX;
/// A chunk-map entry meaning "no chunk holds these offsets".
pub const NO_CHUNK: u32 = u32::MAX;
/// A packet-log sequence meaning "no packet".
pub const NO_PKT: u64 = u64::MAX;

/// Feature bits of [`Header::features`].
pub mod features {
    /// The main region is backed by hugepages.
    pub const HUGEPAGES: u64 = 1 << 0;
    /// The sensor waits for analyzers instead of dropping (lossless mode).
    pub const LOSSLESS: u64 = 1 << 1;
    /// The packet log is kept (some analyzer asked for packets).
    pub const PACKET_LOG: u64 = 1 << 2;
    /// Each worker's flow slots have tunnel records ([`super::TunnelSlot`]), after the last
    /// worker's parts (see [`crate::plan::WorkerPlan::tunnels_off`]); a slot whose flags have
    /// [`super::flow_flags::TUNNEL`] has a valid one.
    pub const TUNNELS: u64 = 1 << 3;
}

/// [`ConfigInfo::overlap_policy`] values. The first two are mOS's `MOS_OVERLAP_POLICY_FIRST`
/// and `MOS_OVERLAP_POLICY_LAST`; the others are target-based policies (ABI 1.2), described in
/// `docs/REASSEMBLY.md`.
pub mod overlap_policy {
    /// The first copy of a byte wins.
    pub const FIRST: u64 = 0;
    /// The last copy of a byte wins.
    pub const LAST: u64 = 1;
    /// Linux's rule: new data wins over held data that starts after it, or at the same place
    /// and ends before it.
    pub const LINUX: u64 = 2;
    /// The BSD rule: new data wins over held data that starts after it.
    pub const BSD: u64 = 3;
    /// Windows: the same rule as [`BSD`], under its own name.
    pub const WINDOWS: u64 = 4;
}

/// [`Header::state`] values.
pub mod sensor_state {
    /// Setting up; nothing is published yet.
    pub const STARTING: u64 = 0;
    /// Reading input and publishing.
    pub const RUNNING: u64 = 1;
    /// The input ended and every event is published: analyzers drain their rings and stop.
    pub const DONE: u64 = 2;
    /// The sensor is shutting down (signal or error); what is published stays readable.
    pub const STOPPED: u64 = 3;
}

/// The sizes the sensor was configured with, as it published them (plain values written
/// before any analyzer attaches).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ConfigInfo {
    /// Bytes per stream chunk (a power of two).
    pub chunk_size: u64,
    /// Stream buffers per worker: each side that holds bytes has one, with its metadata
    /// ([`RingMetaSlot`]) and its chunk map.
    pub buffers_per_worker: u64,
    /// Chunks per worker.
    pub chunks_per_worker: u64,
    /// Entries in each buffer's chunk map (a power of two): a side holds at most this many
    /// chunks' worth of stream, `chunk_map_len * chunk_size` bytes from its head.
    pub chunk_map_len: u64,
    /// Flow slots per worker.
    pub slots_per_worker: u64,
    /// Packet-log entries per worker (0: no packet log).
    pub pktlog_entries: u64,
    /// Packet-log frame bytes per worker.
    pub pktlog_bytes: u64,
    /// Event records per (analyzer, worker) ring.
    pub event_ring_len: u64,
    /// Idle timeout, ns.
    pub idle_timeout_ns: u64,
    /// How the sensor resolves overlapping out-of-order data: one of [`overlap_policy`].
    pub overlap_policy: u64,
}

/// Where one worker's parts of the main region are (byte offsets from the region's start).
#[derive(Debug)]
#[repr(C)]
pub struct WorkerInfo {
    /// Offset of `slots_per_worker` [`FlowSlot`]s.
    pub slots_off: u64,
    /// Offset of `buffers_per_worker` [`RingMetaSlot`]s.
    pub ring_meta_off: u64,
    /// Offset of the chunk maps: `buffers_per_worker` arrays of `chunk_map_len` `u32` words
    /// (atomics). Entry `(o / chunk_size) % chunk_map_len` of buffer `b`'s map names the chunk
    /// holding stream offset `o` of the side using `b`, or is [`NO_CHUNK`].
    pub chunk_map_off: u64,
    /// Offset of the chunk bytes: chunk `i` is `[chunks_off + i * chunk_size, + chunk_size)`,
    /// and holds stream offset `o` at `o % chunk_size`.
    pub chunks_off: u64,
    /// Offset of the [`PktLogHeader`], then `pktlog_entries` [`PktLogEntry`]s, then the frame
    /// bytes.
    pub pktlog_off: u64,
    /// Counters the worker keeps, indexed by [`counter`].
    pub counters: [AtomicU64; counter::COUNT],
}

/// Indices into [`WorkerInfo::counters`].
pub mod counter {
    /// Frames read.
    pub const FRAMES: usize = 0;
    /// Bytes of frames read.
    pub const FRAME_BYTES: usize = 1;
    /// TCP segments.
    pub const TCP: usize = 2;
    /// IP packets that are not TCP.
    pub const OTHER_IP: usize = 3;
    /// Frames without IP.
    pub const NOT_IP: usize = 4;
    /// Frames cut inside a header (skipped).
    pub const TRUNCATED: usize = 5;
    /// Frames with impossible header values (skipped).
    pub const MALFORMED: usize = 6;
    /// Frames of an unsupported link type (skipped).
    pub const UNSUPPORTED_LINK: usize = 7;
    /// TCP segments with a bad checksum (kept, or dropped with `--drop-bad-checksums`).
    pub const BAD_CHECKSUM: usize = 8;
    /// TCP segments cut by the snap length.
    pub const SNAP_CUT: usize = 9;
    /// Connections tracked since start.
    pub const FLOWS_TOTAL: usize = 10;
    /// Connections tracked now.
    pub const FLOWS_LIVE: usize = 11;
    /// Connections evicted for room.
    pub const FLOWS_EVICTED: usize = 12;
    /// Payload bytes stored in rings.
    pub const PAYLOAD_BYTES: usize = 13;
    /// Events published (all analyzers).
    pub const EVENTS: usize = 14;
    /// Events dropped because an analyzer's ring was full (live mode).
    pub const EVENTS_DROPPED: usize = 15;
    /// Times the worker waited for an analyzer (lossless mode).
    pub const WAITS: usize = 16;
    /// Analyzers detached for making no progress.
    pub const STALLED_DETACHED: usize = 17;
    /// Publication sequence: packets and clock ticks the worker has processed.
    pub const PSEQ: usize = 18;
    /// Frames the capture dropped before the sensor saw them: AF_PACKET's ring drops (each
    /// worker its own socket's), or DPDK's `imissed` (the whole port, in worker 0).
    pub const CAPTURE_DROPS: usize = 19;
    /// DPDK's `ierrors`: frames the port received with errors (the whole port, in worker 0).
    pub const NIC_ERRORS: usize = 20;
    /// DPDK's `rx_nombuf`: frames lost for want of an mbuf (the whole port, in worker 0).
    pub const NIC_NO_MBUF: usize = 21;
    /// IP fragments taken in by the defragmenter (a multi-worker replay reassembles in its
    /// reader and reports these in worker 0).
    pub const FRAGMENTS: usize = 22;
    /// IP fragments discarded, whatever the cause (with their datagram, or on their own).
    pub const FRAGMENTS_DROPPED: usize = 23;
    /// Stream bytes lost for room: beyond a side's span, or dropped with no chunk or no
    /// fragment slot for them.
    pub const STREAM_OVERFLOW_BYTES: usize = 24;
    /// Of those, bytes dropped because the chunk pool was empty even after taking back
    /// history.
    pub const POOL_EMPTY_BYTES: usize = 25;
    /// In-order bytes taken back from the least recently active sides' history because the
    /// chunk pool ran empty.
    pub const RECLAIMED_BYTES: usize = 26;
    /// Chunks of the worker's pool in use now.
    pub const CHUNKS_IN_USE: usize = 27;
    /// Number of counters.
    pub const COUNT: usize = 28;
}

/// The main region's first bytes.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Header {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`ABI_MAJOR`].
    pub abi_major: u16,
    /// [`ABI_MINOR`].
    pub abi_minor: u16,
    /// `size_of::<Header>()` as the sensor built it.
    pub header_size: u32,
    /// [`features`] bits.
    pub features: u64,
    /// Changes on every sensor start: an analyzer that sees another epoch was attached to a
    /// sensor that is gone.
    pub epoch: u64,
    /// The sensor's process id.
    pub sensor_pid: u64,
    /// Workers in use (at most [`MAX_WORKERS`]).
    pub nworkers: u64,
    /// Bytes of the whole main region.
    pub region_len: u64,
    /// [`sensor_state`].
    pub state: AtomicU64,
    /// The latest capture time any worker saw, ns since the Unix epoch.
    pub clock_ns: AtomicU64,
    /// The sensor's configuration.
    pub config: ConfigInfo,
    /// Per-worker offsets and counters; entries past `nworkers` are zero.
    pub workers: [WorkerInfo; MAX_WORKERS],
    /// What the sensor reads and how (ABI 2.1; a reader of 2.0 ignores it: `header_size`
    /// says whether it is there).
    pub input: InputInfo,
}

/// The link types a filter may meet, and other settings an analyzer may ask about (ABI 2.1). Plain values written before any
/// analyzer attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct InputInfo {
    /// The input's link types (libpcap `LINKTYPE_*` numbers), [`NO_LINKTYPE`] past the last.
    /// A frame of another link type matches no filter. Datagrams the sensor reassembled from IP fragments are filtered as
    /// `LINKTYPE_RAW` (101), which is always listed.
    pub linktypes: [u32; MAX_LINKTYPES],
    /// The sensor's stream-history setting, bytes kept behind a side's tail for late readers.
    pub history: u64,
    /// Reserved, zero.
    pub _reserved: u64,
}

/// Entries of [`InputInfo::linktypes`].
pub const MAX_LINKTYPES: usize = 12;
/// An unused [`InputInfo::linktypes`] entry.
pub const NO_LINKTYPE: u32 = u32::MAX;

impl Default for InputInfo {
    fn default() -> Self {
        InputInfo {
            linktypes: [NO_LINKTYPE; MAX_LINKTYPES],
            history: 0,
            _reserved: 0,
        }
    }
}

/// Flags of [`FlowData::flags`].
pub mod flow_flags {
    /// The slot holds a connection (cleared when it is reclaimed).
    pub const LIVE: u32 = 1 << 0;
    /// Roles were guessed (no handshake seen).
    pub const GUESSED: u32 = 1 << 1;
    /// The addresses are IPv6 (else IPv4 in the first 4 bytes).
    pub const IPV6: u32 = 1 << 2;
    /// Both stacks are done; the connection lingers before `CONN_END`.
    pub const CLOSED: u32 = 1 << 3;
    /// `CONN_END` was raised.
    pub const ENDED: u32 = 1 << 4;
    /// The connection's first packet came through a tunnel, which the slot's
    /// [`TunnelSlot`](super::TunnelSlot) describes (only with
    /// [`features::TUNNELS`](super::features::TUNNELS)).
    pub const TUNNEL: u32 = 1 << 5;
}

/// What [`TunnelData::id`] is.
pub mod tunnel_id {
    /// No identifier.
    pub const NONE: u8 = 0;
    /// GRE key (PPTP: the call ID).
    pub const GRE_KEY: u8 = 1;
    /// ERSPAN session ID.
    pub const ERSPAN_SESSION: u8 = 2;
    /// VXLAN network identifier.
    pub const VXLAN_VNI: u8 = 3;
    /// GTP-U tunnel endpoint identifier.
    pub const GTP_TEID: u8 = 4;
    /// MPLS label on top of the stack.
    pub const MPLS_LABEL: u8 = 5;
}

/// Flags of [`TunnelData::flags`].
pub mod tunnel_flags {
    /// `outer` holds the outermost IP header's addresses.
    pub const OUTER: u8 = 1 << 0;
    /// They are IPv6 (else IPv4 in the first 4 bytes).
    pub const OUTER_IPV6: u8 = 1 << 1;
}

/// The tunnel a connection's first packet came through. The connection's key is the inner
/// 5-tuple: the same inner tuple through two tunnels is one connection, described by the
/// tunnel of its first packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct TunnelData {
    /// Encapsulations crossed ([`tunnel_kind`] bits).
    pub kinds: u16,
    /// How many encapsulations were crossed.
    pub depth: u8,
    /// [`tunnel_flags`].
    pub flags: u8,
    /// [`tunnel_id`]: what `id` is.
    pub id_kind: u8,
    /// Padding.
    pub _pad: [u8; 3],
    /// The first identifier met from the outside.
    pub id: u32,
    /// Padding.
    pub _pad2: u32,
    /// Source (`[0]`) and destination (`[1]`) of the outermost IP header that carried a
    /// tunnel.
    pub outer: [[u8; 16]; 2],
}

/// Words in a [`TunnelData`].
pub const TUNNEL_WORDS: usize = size_of::<TunnelData>() / 8;

/// A flow slot's tunnel record: [`TunnelData`] as words, guarded by the flow slot's stamp.
#[derive(Debug)]
#[repr(C)]
pub struct TunnelSlot {
    /// [`TunnelData`] as words.
    pub words: [AtomicU64; TUNNEL_WORDS],
}

/// Encapsulations a flow's first packet crossed (bits of a tunnel description's `kinds`).
pub mod tunnel_kind {
    /// GRE (RFC 2784/2890, and PPTP's enhanced GRE).
    pub const GRE: u16 = 1 << 0;
    /// ERSPAN type I, II or III (inside GRE, which is set too).
    pub const ERSPAN: u16 = 1 << 1;
    /// VXLAN (UDP port 4789).
    pub const VXLAN: u16 = 1 << 2;
    /// GTP-U (UDP port 2152).
    pub const GTP_U: u16 = 1 << 3;
    /// An MPLS label stack.
    pub const MPLS: u16 = 1 << 4;
    /// A PPPoE session.
    pub const PPPOE: u16 = 1 << 5;
    /// IPv4 or IPv6 directly inside IPv4 or IPv6 (4in4, 6in4, 4in6, 6in6).
    pub const IP_IN_IP: u16 = 1 << 6;
    /// L2TPv2 (UDP port 1701), PPP inside.
    pub const L2TP: u16 = 1 << 7;
    /// AYIYA (UDP port 5072).
    pub const AYIYA: u16 = 1 << 8;
    /// Every kind with its name, in bit order.
    pub const NAMES: [(u16, &str); 9] = [
        (GRE, "gre"),
        (ERSPAN, "erspan"),
        (VXLAN, "vxlan"),
        (GTP_U, "gtp-u"),
        (MPLS, "mpls"),
        (PPPOE, "pppoe"),
        (IP_IN_IP, "ip-in-ip"),
        (L2TP, "l2tp"),
        (AYIYA, "ayiya"),
    ];
}

/// Flags of [`SideData::flags`].
pub mod side_flags {
    /// `isn` is valid (the side's SYN or SYN/ACK was seen).
    pub const HAS_ISN: u8 = 1 << 0;
    /// `base_seq` is valid (the stream is anchored).
    pub const ANCHORED: u8 = 1 << 1;
    /// `fin_seq` is valid.
    pub const HAS_FIN: u8 = 1 << 2;
}

/// One side of a flow: its emulated stack and its receive stream (the bytes its peer sent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SideData {
    /// Oldest stream offset still in the ring.
    pub head: u64,
    /// One past the last in-order byte.
    pub tail: u64,
    /// Bytes the stream skipped without holding them (gaps).
    pub lost: u64,
    /// Packet-log sequence of the last frame this side's stack received ([`NO_PKT`]).
    pub last_pkt: u64,
    /// The ring holding the stream ([`NO_RING`]).
    pub ring: u32,
    /// Sequence number of stream offset 0 (valid with `ANCHORED`).
    pub base_seq: u32,
    /// This endpoint's initial sequence number (valid with `HAS_ISN`).
    pub isn: u32,
    /// Sequence number of this endpoint's FIN (valid with `HAS_FIN`).
    pub fin_seq: u32,
    /// Packets this side's endpoint sent (stops at `u32::MAX`).
    pub packets: u32,
    /// Emulated TCP state ([`crate::TcpState`] code).
    pub state: u8,
    /// [`side_flags`].
    pub flags: u8,
    /// Padding.
    pub _pad: [u8; 2],
}

/// A flow slot's data, published under its seqlock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct FlowData {
    /// The slot's generation: changes whenever the slot is given to another connection.
    pub generation: u32,
    /// [`flow_flags`].
    pub flags: u32,
    /// Creation order of the connection within its worker.
    pub serial: u64,
    /// Client (`[0]`) and server (`[1]`) addresses.
    pub addr: [[u8; 16]; 2],
    /// Client and server ports.
    pub port: [u16; 2],
    /// Why the connection ended (`CONN_END` reason code, 0 while open).
    pub end_reason: u8,
    /// Padding.
    pub _pad: [u8; 3],
    /// Time of the first packet, ns.
    pub start_ns: u64,
    /// Time of the latest packet, ns.
    pub last_ns: u64,
    /// Client (`[0]`) and server (`[1]`) sides.
    pub sides: [SideData; 2],
}

/// Words in a [`FlowData`].
pub const FLOW_WORDS: usize = size_of::<FlowData>() / 8;

/// A flow slot: a seqlock stamp and the [`FlowData`] words it guards. The same stamp also
/// guards the [`RingMetaSlot`]s of the rings the slot's sides hold.
#[derive(Debug)]
#[repr(C)]
pub struct FlowSlot {
    /// The seqlock.
    pub stamp: Stamp,
    /// [`FlowData`] as words.
    pub words: [AtomicU64; FLOW_WORDS],
}

/// One out-of-order island as published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct FragRec {
    /// Stream offset of its first byte.
    pub start: u64,
    /// Its length.
    pub len: u32,
    /// Padding.
    pub _pad: u32,
}

/// One recorded gap as published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct GapRec {
    /// Stream offset of the first skipped byte.
    pub offset: u64,
    /// Bytes skipped.
    pub len: u64,
    /// Why: [`gap_kind`].
    pub kind: u64,
}

/// [`GapRec::kind`] values.
pub mod gap_kind {
    /// Acknowledged bytes the capture never saw.
    pub const MISSED: u64 = 0;
    /// Cut by the snap length.
    pub const SNAP: u64 = 1;
    /// Forced out by a segment more than one ring ahead.
    pub const OVERFLOW: u64 = 2;
}

/// A ring's metadata as published: fragments and recent gaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct RingMeta {
    /// Fragments in use.
    pub nfrags: u32,
    /// Gaps in use.
    pub ngaps: u32,
    /// Below this offset the ring cannot tell held bytes from skipped ones.
    pub unknown_below: u64,
    /// Out-of-order islands, sorted by offset.
    pub frags: [FragRec; MAX_FRAGMENTS],
    /// Recent gaps, oldest first.
    pub gaps: [GapRec; MAX_GAPS],
}

impl Default for RingMeta {
    fn default() -> Self {
        RingMeta {
            nfrags: 0,
            ngaps: 0,
            unknown_below: 0,
            frags: [FragRec::default(); MAX_FRAGMENTS],
            gaps: [GapRec::default(); MAX_GAPS],
        }
    }
}

/// Words in a [`RingMeta`].
pub const RING_META_WORDS: usize = size_of::<RingMeta>() / 8;

/// A ring's published metadata, guarded by the stamp of the flow slot that holds the ring.
#[derive(Debug)]
#[repr(C)]
pub struct RingMetaSlot {
    /// [`RingMeta`] as words.
    pub words: [AtomicU64; RING_META_WORDS],
}

/// Event kinds of [`EventRecord::kind`]: the bit index of the event's mOS mask bit.
pub mod event_kind {
    /// `MOS_ON_PKT_IN`.
    pub const PKT_IN: u8 = 0;
    /// `MOS_ON_CONN_START`.
    pub const CONN_START: u8 = 2;
    /// `MOS_ON_CONN_NEW_DATA`.
    pub const CONN_NEW_DATA: u8 = 4;
    /// `MOS_ON_ERROR`.
    pub const ERROR: u8 = 5;
    /// `MOS_ON_TIMEOUT`.
    pub const TIMEOUT: u8 = 6;
    /// `MOS_ON_TCP_STATE_CHANGE`.
    pub const TCP_STATE_CHANGE: u8 = 7;
    /// `MOS_ON_ORPHAN`.
    pub const ORPHAN: u8 = 8;
    /// `MOS_ON_REXMIT`.
    pub const REXMIT: u8 = 9;
    /// `MOS_ON_CONN_END`.
    pub const CONN_END: u8 = 10;
}

/// Side code of an event that concerns no side (orphans).
pub const SIDE_NONE: u8 = 0xff;

/// One event as published: a snapshot, never a pointer to live state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct EventRecord {
    /// Flow slot index ([`u32::MAX`] for orphans).
    pub slot: u32,
    /// The slot's generation when the event was raised.
    pub generation: u32,
    /// [`event_kind`].
    pub kind: u8,
    /// Side code (`MOS_SIDE_CLI`/`SVR`) or [`SIDE_NONE`].
    pub side: u8,
    /// Hook code (`MOS_NULL`, `MOS_HK_RCV`, `MOS_HK_SND`).
    pub hook: u8,
    /// TCP flags of the raising packet.
    pub tcp_flags: u8,
    /// `TCP_STATE_CHANGE`: old state; `ERROR`: error kind; `CONN_END`: reason.
    pub aux0: u8,
    /// `TCP_STATE_CHANGE`: new state.
    pub aux1: u8,
    /// The worker that raised it.
    pub worker: u16,
    /// Capture time of the raising packet (or of the clock tick), ns.
    pub ts_ns: u64,
    /// The worker's publication sequence when the event was raised.
    pub pseq: u64,
    /// Position of the raising frame in the input ([`u64::MAX`] for none).
    pub pkt_pos: u64,
    /// Sequence number of the raising packet.
    pub seq: u32,
    /// Its acknowledgment number.
    pub ack: u32,
    /// Its payload length, as the IP header gives it.
    pub payload_len: u32,
    /// The analyzer's sockets the event is for, one bit per socket id (ABI 2.1): those whose
    /// filters took the flow (or the packet) and that did not stop monitoring it. `u32::MAX`
    /// for every socket, as a 2.0 subscription gets.
    pub socks: u32,
    /// The side's receive stream head when the event was raised.
    pub head: u64,
    /// The side's receive stream tail.
    pub tail: u64,
    /// `ERROR`: stream offset of the first byte concerned.
    pub err_offset: u64,
    /// `ERROR`: bytes concerned.
    pub err_len: u64,
    /// Packet-log sequence of the raising frame ([`NO_PKT`] if not logged).
    pub pkt_ref: u64,
}

/// Words in an [`EventRecord`].
pub const EVENT_WORDS: usize = size_of::<EventRecord>() / 8;

/// One event record in a ring.
#[derive(Debug)]
#[repr(C)]
pub struct EventSlot {
    /// [`EventRecord`] as words.
    pub words: [AtomicU64; EVENT_WORDS],
}

/// Head of one (analyzer, worker) event ring, followed by `capacity` [`EventSlot`]s.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct EventRingHeader {
    /// Records published (free-running); the record of index `i` is at `i % capacity`.
    pub producer: AtomicU64,
    /// Padding: the producer index has its cache line to itself.
    pub _pad0: [u64; 7],
    /// Ring capacity (a power of two), written before the analyzer maps the region.
    pub capacity: u64,
    /// Events this analyzer lost because the ring was full (live mode).
    pub dropped: AtomicU64,
    /// Non-zero once the sensor detached this analyzer; the value says why ([`detach_reason`]).
    pub detached: AtomicU64,
    /// Padding.
    pub _pad1: [u64; 5],
}

/// What went wrong, in an `ERROR` event's `aux0`.
pub mod error_kind {
    /// The receiver acknowledged bytes the capture never held; the stream moved past them.
    pub const GAP: u8 = 1;
    /// The ring overflowed: bytes were overwritten or never stored for lack of room.
    pub const OVERFLOW: u8 = 2;
    /// A retransmission's bytes differ from the bytes already buffered.
    pub const CONFLICT: u8 = 3;
    /// Out-of-order bytes were dropped because the fragment list or the ring pool was full.
    pub const DROPPED: u8 = 4;
    /// The frame was cut by the capture's snap length; its missing payload is a gap.
    pub const SNAP_TRUNCATED: u8 = 5;
}

/// Why a connection ended, in a `CONN_END` event's `aux0` and a flow slot's `end_reason` (0
/// while it is open).
pub mod end_reason {
    /// Both endpoints closed.
    pub const CLOSED: u8 = 1;
    /// A reset.
    pub const RESET: u8 = 2;
    /// Idle past the timeout.
    pub const TIMEOUT: u8 = 3;
    /// Evicted to make room in a full flow table.
    pub const EVICTED: u8 = 4;
    /// A new SYN reused the tuple of a closed connection.
    pub const REUSED: u8 = 5;
    /// The input ended with the connection still open.
    pub const END_OF_INPUT: u8 = 6;
}

/// [`EventRingHeader::detached`] values.
pub mod detach_reason {
    /// Still attached.
    pub const ATTACHED: u64 = 0;
    /// The analyzer made no progress for the stall timeout.
    pub const STALLED: u64 = 1;
    /// The analyzer asked to detach or closed its socket.
    pub const REQUESTED: u64 = 2;
    /// The sensor is shutting down.
    pub const SHUTDOWN: u64 = 3;
}

/// One consumer index on its own cache line.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct ConsumerIndex {
    /// Records consumed (free-running).
    pub index: AtomicU64,
    /// Padding.
    pub _pad: [u64; 7],
}

/// The page an analyzer writes: the sensor reads it and clamps every value.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct AnalyzerPage {
    /// Monotonic time of the analyzer's last pass through its event loop, ns.
    pub heartbeat_ns: AtomicU64,
    /// The analyzer's process id, as it reports it.
    pub pid: AtomicU64,
    /// Non-zero while the analyzer sleeps waiting for events: a futex the sensor wakes it on
    /// after pushing events ([`crate::wake`]).
    pub waiting: AtomicU64,
    /// Records the analyzer says it dropped on its own side (minor 3): a broker that was down
    /// or too slow, a full queue of its own. The sensor only shows it (status report,
    /// metrics); it never acts on it.
    pub records_dropped: AtomicU64,
    /// Padding.
    pub _pad: [u64; 4],
    /// Consumer index of each worker's ring.
    pub consumer: [ConsumerIndex; MAX_WORKERS],
}

/// Head of a worker's packet log.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct PktLogHeader {
    /// Packets logged (free-running); packet `s` is entry `s % entries`.
    pub next_seq: AtomicU64,
    /// Frame bytes before this absolute position may have been overwritten.
    pub bytes_head: AtomicU64,
    /// Frame bytes written (absolute, free-running).
    pub bytes_tail: AtomicU64,
    /// Padding.
    pub _pad: [u64; 5],
}

/// One logged frame's description (`pkt_info`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PktInfo {
    /// The packet-log sequence of this frame.
    pub seq: u64,
    /// Capture time, ns.
    pub ts_ns: u64,
    /// Absolute position of the frame's first byte in the log's byte ring.
    pub data_pos: u64,
    /// Stream offset (in the receiving side's ring) of the payload's first byte.
    pub offset: u64,
    /// Bytes captured (and logged).
    pub caplen: u32,
    /// Bytes on the wire.
    pub wirelen: u32,
    /// Payload length as the IP header gives it.
    pub payload_len: u32,
    /// Link type (pcap `LINKTYPE_*`).
    pub linktype: u16,
    /// Offset of the IP header in the frame.
    pub ip_off: u16,
    /// Offset of the TCP header.
    pub tcp_off: u16,
    /// Offset of the payload.
    pub payload_off: u16,
    /// Padding.
    pub _pad: u32,
}

/// Words in a [`PktInfo`].
pub const PKT_WORDS: usize = size_of::<PktInfo>() / 8;

/// One packet-log entry: a stamp and the [`PktInfo`] words it guards.
#[derive(Debug)]
#[repr(C)]
pub struct PktLogEntry {
    /// The seqlock.
    pub stamp: Stamp,
    /// [`PktInfo`] as words.
    pub words: [AtomicU64; PKT_WORDS],
}

// The layout, pinned. A change here is an ABI change: bump ABI_MAJOR (or ABI_MINOR for an
// addition a v1 reader can ignore) and update these lines on purpose.
const _: () = {
    assert!(size_of::<ConfigInfo>() == 80);
    assert!(size_of::<WorkerInfo>() == 40 + 8 * counter::COUNT);
    assert!(offset_of!(Header, magic) == 0);
    assert!(offset_of!(Header, abi_major) == 8);
    assert!(offset_of!(Header, abi_minor) == 10);
    assert!(offset_of!(Header, header_size) == 12);
    assert!(offset_of!(Header, features) == 16);
    assert!(offset_of!(Header, epoch) == 24);
    assert!(offset_of!(Header, state) == 56);
    assert!(offset_of!(Header, clock_ns) == 64);
    assert!(offset_of!(Header, config) == 72);
    assert!(offset_of!(Header, workers) == 152);
    assert!(offset_of!(Header, input) == 8600);
    assert!(size_of::<InputInfo>() == 64);
    assert!(size_of::<Header>() == 8704);
    assert!(size_of::<SideData>() == 56);
    assert!(offset_of!(SideData, last_pkt) == 24);
    assert!(offset_of!(SideData, ring) == 32);
    assert!(offset_of!(SideData, packets) == 48);
    assert!(offset_of!(SideData, state) == 52);
    assert!(size_of::<FlowData>() == 184);
    assert!(offset_of!(FlowData, addr) == 16);
    assert!(offset_of!(FlowData, port) == 48);
    assert!(offset_of!(FlowData, start_ns) == 56);
    assert!(offset_of!(FlowData, sides) == 72);
    assert!(size_of::<FlowSlot>() == 192);
    assert!(size_of::<TunnelData>() == 48);
    assert!(offset_of!(TunnelData, id) == 8);
    assert!(offset_of!(TunnelData, outer) == 16);
    assert!(size_of::<TunnelSlot>() == 48);
    assert!(size_of::<RingMeta>() == 16 + 16 * MAX_FRAGMENTS + 24 * MAX_GAPS);
    assert!(offset_of!(RingMeta, frags) == 16);
    assert!(size_of::<RingMetaSlot>() == size_of::<RingMeta>());
    assert!(size_of::<EventRecord>() == 96);
    assert!(offset_of!(EventRecord, ts_ns) == 16);
    assert!(offset_of!(EventRecord, pseq) == 24);
    assert!(offset_of!(EventRecord, head) == 56);
    assert!(offset_of!(EventRecord, pkt_ref) == 88);
    assert!(size_of::<EventRingHeader>() == 128);
    assert!(size_of::<AnalyzerPage>() == 64 + 64 * MAX_WORKERS);
    assert!(offset_of!(AnalyzerPage, heartbeat_ns) == 0);
    assert!(offset_of!(AnalyzerPage, waiting) == 16);
    assert!(offset_of!(AnalyzerPage, records_dropped) == 24);
    assert!(offset_of!(AnalyzerPage, consumer) == 64);
    assert!(size_of::<PktLogHeader>() == 64);
    assert!(size_of::<PktInfo>() == 56);
    assert!(size_of::<PktLogEntry>() == 64);
};
