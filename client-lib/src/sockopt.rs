//! Monitoring-socket options (`SOL_MONSOCKET` in mOS) and their values.

use shm_layout::{Side, TcpState};

/// An option of `mtcp_getsockopt` at the `SOL_MONSOCKET` level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SockOpt {
    /// `MOS_INFO_CLIBUF`: the client's receive buffer ([`TcpBufInfo`]).
    InfoCliBuf,
    /// `MOS_INFO_SVRBUF`: the server's receive buffer.
    InfoSvrBuf,
    /// `MOS_FRAGINFO_CLIBUF`: out-of-order islands in the client's buffer.
    FragInfoCliBuf,
    /// `MOS_FRAGINFO_SVRBUF`: out-of-order islands in the server's buffer.
    FragInfoSvrBuf,
    /// `MOS_TCP_STATE_CLI`: the client's emulated state.
    TcpStateCli,
    /// `MOS_TCP_STATE_SVR`: the server's emulated state.
    TcpStateSvr,
    /// `MOS_CLIOVERLAP`: the overlap policy of the client's buffer.
    CliOverlap,
    /// `MOS_SVROVERLAP`: the overlap policy of the server's buffer.
    SvrOverlap,
}

impl SockOpt {
    /// The side the option is about.
    pub fn side(self) -> Side {
        match self {
            SockOpt::InfoCliBuf
            | SockOpt::FragInfoCliBuf
            | SockOpt::TcpStateCli
            | SockOpt::CliOverlap => Side::Cli,
            _ => Side::Svr,
        }
    }
}

/// `struct tcp_buf_info`: a receive buffer's positions as TCP sequence numbers (mod 2^32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpBufInfo {
    /// Sequence number of the buffer's first byte (stream offset 0: ISN+1, or the first byte
    /// seen for a connection picked up midstream).
    pub init_seq: u32,
    /// The last byte read by the end application: for a standalone monitor, as the manual
    /// says, equal to `next_byte_expected`.
    pub last_byte_read: u32,
    /// The next in-order byte expected (one past the last in-order byte held).
    pub next_byte_expected: u32,
    /// One past the highest byte received, in order or not.
    pub last_byte_received: u32,
}

/// `struct tcp_ring_fragment`: one out-of-order island.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingFragment {
    /// Sequence number of its first byte.
    pub seq: u32,
    /// Its stream offset (from the buffer's first byte), as `mtcp_ppeek` takes it.
    pub offset: u64,
    /// Its length.
    pub len: u32,
}

/// How the sensor's rings treat overlapping retransmissions (`MOS_OVERLAP_POLICY_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OverlapPolicy {
    /// The first copy of a byte wins (`MOS_OVERLAP_POLICY_FIRST`).
    FirstCopy,
    /// The last copy wins (`MOS_OVERLAP_POLICY_LAST`).
    LastCopy,
    /// A code this library does not know.
    Other(u64),
}

impl OverlapPolicy {
    /// The policy of the sensor's configuration code.
    pub fn from_code(code: u64) -> OverlapPolicy {
        match code {
            0 => OverlapPolicy::FirstCopy,
            1 => OverlapPolicy::LastCopy,
            c => OverlapPolicy::Other(c),
        }
    }

    /// In words.
    pub fn describe(self) -> String {
        match self {
            OverlapPolicy::FirstCopy => "first copy wins".into(),
            OverlapPolicy::LastCopy => "last copy wins".into(),
            OverlapPolicy::Other(c) => format!("policy {c}"),
        }
    }
}

/// The value of an option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptValue {
    /// `MOS_INFO_*BUF`.
    BufInfo(TcpBufInfo),
    /// `MOS_FRAGINFO_*BUF`.
    Fragments(Vec<RingFragment>),
    /// `MOS_TCP_STATE_*`.
    State(TcpState),
    /// `MOS_*OVERLAP`.
    Overlap(OverlapPolicy),
}
