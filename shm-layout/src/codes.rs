//! mOS's numeric codes: sides, hooks, TCP states and built-in event bits.

/// Which endpoint's emulated stack a value belongs to (`MOS_SIDE_*`).
///
/// `Cli`'s receive ring holds what the server sent to the client, `Svr`'s what the client sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Side {
    /// `MOS_SIDE_CLI` (0).
    Cli = 0,
    /// `MOS_SIDE_SVR` (1).
    Svr = 1,
}

impl Side {
    /// The other endpoint.
    pub const fn peer(self) -> Side {
        match self {
            Side::Cli => Side::Svr,
            Side::Svr => Side::Cli,
        }
    }
    /// 0 for the client, 1 for the server: an index into per-side arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
    /// The numeric code (`MOS_SIDE_CLI` = 0, `MOS_SIDE_SVR` = 1).
    pub const fn code(self) -> u8 {
        self as u8
    }
}

/// `MOS_SIDE_BOTH`: both endpoints (used by `getpeername`).
pub const MOS_SIDE_BOTH: u8 = 2;

/// Hook points (`MOS_HK_*`, `MOS_NULL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Hook {
    /// `MOS_NULL`: not tied to one stack update (new data, orphan packets).
    Null = 0,
    /// `MOS_HK_RCV`: right after the receiver side's stack update.
    Rcv = 1,
    /// `MOS_HK_SND`: right after the sender side's stack update.
    Snd = 2,
}

/// An emulated endpoint's TCP state, numbered as mOS's `enum tcpstate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum TcpState {
    /// `TCP_CLOSED` (0).
    #[default]
    Closed = 0,
    /// `TCP_LISTEN` (1).
    Listen = 1,
    /// `TCP_SYN_SENT` (2).
    SynSent = 2,
    /// `TCP_SYN_RCVD` (3).
    SynRcvd = 3,
    /// `TCP_ESTABLISHED` (4).
    Established = 4,
    /// `TCP_FIN_WAIT_1` (5).
    FinWait1 = 5,
    /// `TCP_FIN_WAIT_2` (6).
    FinWait2 = 6,
    /// `TCP_CLOSE_WAIT` (7).
    CloseWait = 7,
    /// `TCP_CLOSING` (8).
    Closing = 8,
    /// `TCP_LAST_ACK` (9).
    LastAck = 9,
    /// `TCP_TIME_WAIT` (10).
    TimeWait = 10,
}

impl TcpState {
    /// All eleven states in code order.
    pub const ALL: [TcpState; 11] = [
        TcpState::Closed,
        TcpState::Listen,
        TcpState::SynSent,
        TcpState::SynRcvd,
        TcpState::Established,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::CloseWait,
        TcpState::Closing,
        TcpState::LastAck,
        TcpState::TimeWait,
    ];

    /// The numeric code of `enum tcpstate`.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The state with this code, if any.
    pub fn from_code(code: u8) -> Option<TcpState> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// mOS's name for the state (`TCP_ESTABLISHED`, ...), as `mos-flowstat` prints it.
    pub const fn name(self) -> &'static str {
        match self {
            TcpState::Closed => "TCP_CLOSED",
            TcpState::Listen => "TCP_LISTEN",
            TcpState::SynSent => "TCP_SYN_SENT",
            TcpState::SynRcvd => "TCP_SYN_RCVD",
            TcpState::Established => "TCP_ESTABLISHED",
            TcpState::FinWait1 => "TCP_FIN_WAIT_1",
            TcpState::FinWait2 => "TCP_FIN_WAIT_2",
            TcpState::CloseWait => "TCP_CLOSE_WAIT",
            TcpState::Closing => "TCP_CLOSING",
            TcpState::LastAck => "TCP_LAST_ACK",
            TcpState::TimeWait => "TCP_TIME_WAIT",
        }
    }
}

/// A set of built-in events as mOS's `event_t` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct EventMask(pub u64);

impl EventMask {
    /// `MOS_ON_PKT_IN`: a packet arrived.
    pub const PKT_IN: EventMask = EventMask(1 << 0);
    /// `MOS_ON_CONN_START`: a connection began (its first SYN, or its midstream pickup).
    pub const CONN_START: EventMask = EventMask(1 << 2);
    /// `MOS_ON_CONN_NEW_DATA`: new in-order bytes in a receive ring.
    pub const CONN_NEW_DATA: EventMask = EventMask(1 << 4);
    /// `MOS_ON_ERROR`: buffer overflow, out-of-window data, a gap, conflicting retransmission.
    pub const ERROR: EventMask = EventMask(1 << 5);
    /// `MOS_ON_TIMEOUT`: the flow was idle past the configured timeout.
    pub const TIMEOUT: EventMask = EventMask(1 << 6);
    /// `MOS_ON_TCP_STATE_CHANGE`: an emulated endpoint changed state.
    pub const TCP_STATE_CHANGE: EventMask = EventMask(1 << 7);
    /// `MOS_ON_ORPHAN`: a packet that belongs to no tracked flow.
    pub const ORPHAN: EventMask = EventMask(1 << 8);
    /// `MOS_ON_REXMIT`: a retransmission.
    pub const REXMIT: EventMask = EventMask(1 << 9);
    /// `MOS_ON_CONN_END`: the connection ended (FIN handshake, RST, timeout, eviction, end of
    /// input).
    pub const CONN_END: EventMask = EventMask(1 << 10);
    /// Every built-in event.
    pub const ALL: EventMask = EventMask(0x7f5);

    /// Whether every bit of `other` is set here.
    pub const fn contains(self, other: EventMask) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for EventMask {
    type Output = EventMask;
    fn bitor(self, rhs: EventMask) -> EventMask {
        EventMask(self.0 | rhs.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_codes_round_trip() {
        for (i, s) in TcpState::ALL.iter().enumerate() {
            assert_eq!(usize::from(s.code()), i);
            assert_eq!(TcpState::from_code(s.code()), Some(*s));
        }
        assert_eq!(TcpState::from_code(11), None);
    }

    #[test]
    fn event_bits_are_distinct() {
        let all = [
            EventMask::PKT_IN,
            EventMask::CONN_START,
            EventMask::CONN_NEW_DATA,
            EventMask::ERROR,
            EventMask::TIMEOUT,
            EventMask::TCP_STATE_CHANGE,
            EventMask::ORPHAN,
            EventMask::REXMIT,
            EventMask::CONN_END,
        ];
        let mut seen = 0u64;
        for e in all {
            assert_eq!(e.0.count_ones(), 1);
            assert_eq!(seen & e.0, 0);
            seen |= e.0;
        }
        assert!((EventMask::PKT_IN | EventMask::ERROR).contains(EventMask::ERROR));
    }

    #[test]
    fn peer_is_an_involution() {
        assert_eq!(Side::Cli.peer(), Side::Svr);
        assert_eq!(Side::Svr.peer().peer(), Side::Svr);
    }
}
