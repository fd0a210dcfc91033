//! Events as callbacks see them: a typed copy of the sensor's [`EventRecord`].

use crate::flow::FlowId;
use shm_layout::layout::{end_reason, error_kind, event_kind, EventRecord, NO_PKT, SIDE_NONE};
use shm_layout::{EventMask, Hook, Side, TcpState};

/// Why an `ERROR` event was raised (the sensor's codes in [`EventRecord::aux0`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The receiver acknowledged bytes the capture never held; the stream moved past them.
    Gap,
    /// The ring overflowed: bytes were overwritten or never stored for lack of room.
    Overflow,
    /// A retransmission's bytes differ from the bytes already buffered (first copy kept).
    Conflict,
    /// Out-of-order bytes were dropped (fragment list or ring pool full).
    Dropped,
    /// The frame was cut by the capture's snap length; its missing payload is a gap.
    SnapTruncated,
    /// A code this library does not know.
    Other(u8),
}

impl ErrorKind {
    /// The kind of a code.
    pub fn from_code(code: u8) -> ErrorKind {
        match code {
            error_kind::GAP => ErrorKind::Gap,
            error_kind::OVERFLOW => ErrorKind::Overflow,
            error_kind::CONFLICT => ErrorKind::Conflict,
            error_kind::DROPPED => ErrorKind::Dropped,
            error_kind::SNAP_TRUNCATED => ErrorKind::SnapTruncated,
            c => ErrorKind::Other(c),
        }
    }
}

/// Why a connection ended (the sensor's codes in `CONN_END`'s [`EventRecord::aux0`] and in the
/// flow slot's `end_reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndReason {
    /// Both endpoints closed.
    Closed,
    /// A reset.
    Reset,
    /// Idle past the timeout.
    Timeout,
    /// Evicted to make room in a full flow table.
    Evicted,
    /// A new SYN reused the tuple of a closed connection.
    Reused,
    /// The input ended with the connection still open.
    EndOfInput,
    /// A code this library does not know.
    Other(u8),
}

impl EndReason {
    /// The reason of a code.
    pub fn from_code(code: u8) -> EndReason {
        match code {
            end_reason::CLOSED => EndReason::Closed,
            end_reason::RESET => EndReason::Reset,
            end_reason::TIMEOUT => EndReason::Timeout,
            end_reason::EVICTED => EndReason::Evicted,
            end_reason::REUSED => EndReason::Reused,
            end_reason::END_OF_INPUT => EndReason::EndOfInput,
            c => EndReason::Other(c),
        }
    }

    /// A short name for summaries (`closed`, `reset`, ...).
    pub fn name(self) -> String {
        match self {
            EndReason::Closed => "closed".into(),
            EndReason::Reset => "reset".into(),
            EndReason::Timeout => "timeout".into(),
            EndReason::Evicted => "evicted".into(),
            EndReason::Reused => "reused".into(),
            EndReason::EndOfInput => "end of input".into(),
            EndReason::Other(c) => format!("reason {c}"),
        }
    }
}

/// What happened, with the data only that kind of event carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `MOS_ON_PKT_IN`.
    PktIn,
    /// `MOS_ON_CONN_START`.
    ConnStart,
    /// `MOS_ON_CONN_NEW_DATA`: the side's stream grew.
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
    /// `MOS_ON_ORPHAN`: a packet of no tracked flow.
    Orphan,
    /// `MOS_ON_ERROR`.
    Error {
        /// What went wrong.
        kind: ErrorKind,
        /// Stream offset of the first byte concerned.
        offset: u64,
        /// Bytes concerned.
        len: u64,
    },
    /// `MOS_ON_TIMEOUT`: the flow was idle past the timeout (a `ConnEnd` follows).
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

/// One event, as the sensor published it: a snapshot of the moment it was raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The flow (`None` for orphans).
    pub flow: Option<FlowId>,
    /// What happened.
    pub kind: EventKind,
    /// The stack the event concerns (`None` for orphans).
    pub side: Option<Side>,
    /// The hook point it was raised at.
    pub hook: Hook,
    /// Capture time of the raising packet (or of the clock tick), ns since the Unix epoch.
    pub ts_ns: u64,
    /// Position of the raising frame in the input (`None` when no frame raised it).
    pub pkt_pos: Option<u64>,
    /// TCP flags of the raising packet.
    pub tcp_flags: u8,
    /// Its sequence number.
    pub seq: u32,
    /// Its acknowledgment number.
    pub ack: u32,
    /// Its payload length, as the IP header gives it.
    pub payload_len: u32,
    /// The side's receive stream head when the event was raised.
    pub head: u64,
    /// The side's receive stream tail then.
    pub tail: u64,
    /// The raising frame's packet-log sequence, if it was logged.
    pub pkt_ref: Option<u64>,
    /// The record as published.
    pub record: EventRecord,
    /// The event a callback is called for: the built-in event's bit ([`Event::mask`]), or a
    /// user-defined event's id when it fires with its base event's data.
    pub id: EventMask,
}

impl Event {
    /// Decodes a record consumed from worker `worker`'s ring; `None` for a record with codes
    /// this library cannot interpret (an unknown kind, side or hook, a state out of range).
    pub fn decode(rec: &EventRecord, worker: u16) -> Option<Event> {
        let side = match rec.side {
            0 => Some(Side::Cli),
            1 => Some(Side::Svr),
            SIDE_NONE => None,
            _ => return None,
        };
        let hook = match rec.hook {
            0 => Hook::Null,
            1 => Hook::Rcv,
            2 => Hook::Snd,
            _ => return None,
        };
        let kind = match rec.kind {
            event_kind::PKT_IN => EventKind::PktIn,
            event_kind::CONN_START => EventKind::ConnStart,
            event_kind::CONN_NEW_DATA => EventKind::ConnNewData,
            event_kind::ERROR => EventKind::Error {
                kind: ErrorKind::from_code(rec.aux0),
                offset: rec.err_offset,
                len: rec.err_len,
            },
            event_kind::TIMEOUT => EventKind::Timeout,
            event_kind::TCP_STATE_CHANGE => EventKind::StateChange {
                old: TcpState::from_code(rec.aux0)?,
                new: TcpState::from_code(rec.aux1)?,
            },
            event_kind::ORPHAN => EventKind::Orphan,
            event_kind::REXMIT => EventKind::Rexmit,
            event_kind::CONN_END => EventKind::ConnEnd {
                reason: EndReason::from_code(rec.aux0),
            },
            _ => return None,
        };
        let flow = (rec.slot != u32::MAX && kind != EventKind::Orphan).then_some(FlowId {
            worker,
            slot: rec.slot,
            generation: rec.generation,
        });
        if flow.is_some() && side.is_none() {
            return None;
        }
        Some(Event {
            flow,
            kind,
            side,
            hook,
            ts_ns: rec.ts_ns,
            pkt_pos: (rec.pkt_pos != u64::MAX).then_some(rec.pkt_pos),
            tcp_flags: rec.tcp_flags,
            seq: rec.seq,
            ack: rec.ack,
            payload_len: rec.payload_len,
            head: rec.head,
            tail: rec.tail,
            pkt_ref: (rec.pkt_ref != NO_PKT).then_some(rec.pkt_ref),
            record: *rec,
            id: kind.mask(),
        })
    }

    /// The mOS event bit.
    pub fn mask(&self) -> EventMask {
        self.kind.mask()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_and_garbage_does_not() {
        let rec = EventRecord {
            slot: 3,
            generation: 9,
            kind: event_kind::TCP_STATE_CHANGE,
            side: 1,
            hook: 1,
            aux0: 3,
            aux1: 4,
            pkt_pos: u64::MAX,
            pkt_ref: NO_PKT,
            ..Default::default()
        };
        let ev = Event::decode(&rec, 2).unwrap();
        assert_eq!(
            ev.flow,
            Some(FlowId {
                worker: 2,
                slot: 3,
                generation: 9
            })
        );
        assert_eq!(ev.side, Some(Side::Svr));
        assert_eq!(ev.hook, Hook::Rcv);
        assert_eq!(
            ev.kind,
            EventKind::StateChange {
                old: TcpState::SynRcvd,
                new: TcpState::Established
            }
        );
        assert_eq!(ev.mask(), EventMask::TCP_STATE_CHANGE);
        assert_eq!(ev.pkt_pos, None);
        assert_eq!(ev.pkt_ref, None);
        for bad in [
            EventRecord { aux1: 11, ..rec },
            EventRecord { kind: 1, ..rec },
            EventRecord { side: 7, ..rec },
            EventRecord { hook: 3, ..rec },
            EventRecord {
                side: SIDE_NONE,
                ..rec
            },
        ] {
            assert_eq!(Event::decode(&bad, 0), None, "{bad:?}");
        }
        let orphan = EventRecord {
            slot: u32::MAX,
            kind: event_kind::ORPHAN,
            side: SIDE_NONE,
            hook: 0,
            ..Default::default()
        };
        let ev = Event::decode(&orphan, 0).unwrap();
        assert_eq!((ev.flow, ev.side, ev.kind), (None, None, EventKind::Orphan));
    }
}
