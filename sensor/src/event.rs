//! Events: what the TCP core reports, as plain values.
//!
//! An event is a snapshot taken when it was raised, never a pointer to live state: by the time
//! an analyzer reads it the flow may have moved on, so everything needed to interpret it (flow
//! handle, side, hook, time, the packet's TCP fields, the stream offsets then) travels with it.

use shm_layout::layout::{end_reason, error_kind};
use shm_layout::{EventMask, Hook, Side, TcpState};

/// A flow's name that cannot be confused with a later flow reusing the same table slot: the
/// slot index and the slot's generation, which changes on every reuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowHandle {
    /// Slot index in the worker's flow table.
    pub slot: u32,
    /// The slot's generation when the flow was created.
    pub generation: u32,
}

/// Why an `ERROR` event was raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorKind {
    /// The receiver acknowledged bytes the capture never held; the stream moved past them.
    Gap = error_kind::GAP,
    /// The ring overflowed: bytes were overwritten or never stored for lack of room.
    Overflow = error_kind::OVERFLOW,
    /// A retransmission's bytes differ from the bytes already buffered (first copy kept).
    Conflict = error_kind::CONFLICT,
    /// Out-of-order bytes were dropped because the fragment list or the ring pool was full.
    Dropped = error_kind::DROPPED,
    /// The frame was cut by the capture's snap length; its missing payload is a gap.
    SnapTruncated = error_kind::SNAP_TRUNCATED,
}

/// The kind of an event and the data only that kind carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `MOS_ON_PKT_IN`.
    PktIn,
    /// `MOS_ON_CONN_START`.
    ConnStart,
    /// `MOS_ON_CONN_NEW_DATA`: the side's stream tail moved.
    ConnNewData,
    /// `MOS_ON_TCP_STATE_CHANGE`.
    StateChange {
        /// State before.
        old: TcpState,
        /// State after.
        new: TcpState,
    },
    /// `MOS_ON_REXMIT`.
    Rexmit,
    /// `MOS_ON_CONN_END`.
    ConnEnd {
        /// Why the connection ended.
        reason: EndReason,
    },
    /// `MOS_ON_ORPHAN`: a packet of no tracked flow (non-TCP IP, or TCP not tracked).
    Orphan,
    /// `MOS_ON_ERROR`.
    Error {
        /// What went wrong.
        kind: ErrorKind,
        /// Stream offset of the first byte concerned.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
    /// `MOS_ON_TIMEOUT`: idle past the timeout (a `ConnEnd` follows).
    Timeout,
}

impl EventKind {
    /// The mOS event bit of this kind.
    pub fn mask(&self) -> EventMask {
        match self {
            EventKind::PktIn => EventMask::PKT_IN,
            EventKind::ConnStart => EventMask::CONN_START,
            EventKind::ConnNewData => EventMask::CONN_NEW_DATA,
            EventKind::StateChange { .. } => EventMask::TCP_STATE_CHANGE,
            EventKind::Rexmit => EventMask::REXMIT,
            EventKind::ConnEnd { .. } => EventMask::CONN_END,
            EventKind::Orphan => EventMask::ORPHAN,
            EventKind::Error { .. } => EventMask::ERROR,
            EventKind::Timeout => EventMask::TIMEOUT,
        }
    }
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EndReason {
    /// Both endpoints closed (FIN handshake done, or both reached CLOSED/TIME_WAIT).
    Closed = end_reason::CLOSED,
    /// A reset.
    Reset = end_reason::RESET,
    /// Idle past the timeout.
    Timeout = end_reason::TIMEOUT,
    /// Evicted to make room in a full flow table.
    Evicted = end_reason::EVICTED,
    /// A new SYN reused the tuple of a closed connection.
    Reused = end_reason::REUSED,
    /// The input ended with the connection still open.
    EndOfInput = end_reason::END_OF_INPUT,
}

/// One event, with the snapshot an analyzer needs to interpret it later.
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// The flow (for `Orphan`, a handle of slot `u32::MAX`).
    pub flow: FlowHandle,
    /// The tracker's publication sequence when it was raised (one per packet or tick).
    pub pseq: u64,
    /// The stack the event concerns; `None` for orphans.
    pub side: Option<Side>,
    /// The hook point.
    pub hook: Hook,
    /// What happened.
    pub kind: EventKind,
    /// Capture time of the packet that raised it (or of the clock tick, for timeouts), in ns.
    pub ts_ns: u64,
    /// Position of the raising packet in the input (0-based count of frames); `u64::MAX` when
    /// no packet raised it (timeouts, end of input).
    pub pkt_pos: u64,
    /// TCP flags of the raising packet (0 if none).
    pub tcp_flags: u8,
    /// Its sequence number.
    pub seq: u32,
    /// Its acknowledgment number.
    pub ack: u32,
    /// Its payload length as the IP header declares it.
    pub payload_len: u32,
    /// The side's receive stream `[head, tail)` when the event was raised.
    pub head: u64,
    /// See `head`.
    pub tail: u64,
}

/// The flow handle that orphan events carry.
pub const NO_FLOW: FlowHandle = FlowHandle {
    slot: u32::MAX,
    generation: 0,
};
