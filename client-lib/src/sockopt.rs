//! Monitoring-socket options (`SOL_MONSOCKET` in mOS) and their values.

use shm_layout::layout::overlap_policy as code;
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

/// How the sensor resolves a segment that overlaps out-of-order data it holds (the value of
/// `MOS_CLIOVERLAP`/`MOS_SVROVERLAP`). Bytes already in order never change under any policy;
/// the rules are in `docs/REASSEMBLY.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OverlapPolicy {
    /// The held copy stays (`MOS_OVERLAP_POLICY_FIRST`, 0; `--overlap first`).
    FirstCopy,
    /// The new copy wins (`MOS_OVERLAP_POLICY_LAST`, 1; `--overlap last`).
    LastCopy,
    /// Linux's rule (2; `--overlap linux`): the new copy wins over held data that starts
    /// after it, or at the same byte and ends before it.
    Linux,
    /// The BSD rule (3; `--overlap bsd`): the new copy wins over held data that starts after
    /// it.
    Bsd,
    /// Windows (4; `--overlap windows`): the BSD rule.
    Windows,
    /// A code this library does not know.
    Other(u64),
}

impl OverlapPolicy {
    /// The policy of the sensor's configuration code.
    pub fn from_code(c: u64) -> OverlapPolicy {
        match c {
            code::FIRST => OverlapPolicy::FirstCopy,
            code::LAST => OverlapPolicy::LastCopy,
            code::LINUX => OverlapPolicy::Linux,
            code::BSD => OverlapPolicy::Bsd,
            code::WINDOWS => OverlapPolicy::Windows,
            c => OverlapPolicy::Other(c),
        }
    }

    /// The code: mOS's `MOS_OVERLAP_POLICY_FIRST` (0) and `MOS_OVERLAP_POLICY_LAST` (1), then
    /// the target-based policies.
    pub fn code(self) -> u64 {
        match self {
            OverlapPolicy::FirstCopy => code::FIRST,
            OverlapPolicy::LastCopy => code::LAST,
            OverlapPolicy::Linux => code::LINUX,
            OverlapPolicy::Bsd => code::BSD,
            OverlapPolicy::Windows => code::WINDOWS,
            OverlapPolicy::Other(c) => c,
        }
    }

    /// In words.
    pub fn describe(self) -> String {
        match self {
            OverlapPolicy::FirstCopy => "first copy wins".into(),
            OverlapPolicy::LastCopy => "last copy wins".into(),
            OverlapPolicy::Linux => "linux rule".into(),
            OverlapPolicy::Bsd => "bsd rule".into(),
            OverlapPolicy::Windows => "windows rule".into(),
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
