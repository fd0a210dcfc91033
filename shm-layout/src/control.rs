//! Messages on the control socket (a Unix `SOCK_SEQPACKET` socket: one message per packet,
//! encoded with bincode). The sensor's answer to `Hello` carries three descriptors
//! (`SCM_RIGHTS`): the main region and the analyzer's event region, both read-only, and the
//! analyzer's page, writable. A `Status` request (from `mos-ctl`) is answered with a
//! [`StatusReport`], the one message that may be longer than [`MAX_MESSAGE`].

use crate::status::StatusReport;
use serde::{Deserialize, Serialize};

/// Where the sensor's control socket is unless told otherwise (`--control`).
pub const DEFAULT_PATH: &str = "/run/mos/control.sock";

/// The largest message either side sends or accepts, in bytes, but for [`SensorMsg::Status`].
/// A subscription with filters is the largest an analyzer sends (each program instruction
/// takes 8 bytes).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Monitoring sockets one analyzer may give filters to: a socket's id is its bit in
/// [`crate::layout::EventRecord::socks`].
pub const MAX_SOCKETS: usize = 32;

/// Instructions one filter program may have (libpcap's and the kernel's `BPF_MAXINSNS`).
pub const MAX_PROGRAM: usize = 4096;

/// The largest [`SensorMsg::Status`] message, in bytes: a report on 64 analyzers with the
/// longest names (and a 4 KiB input description) takes 53 KiB. Only a client that asked for a
/// status reads one.
pub const MAX_STATUS_MESSAGE: usize = 128 * 1024;

/// What an analyzer subscribes to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Built-in event bits ([`crate::EventMask`]) it wants on any side.
    pub events: u64,
    /// Whether it reads packets (`getlastpkt`): the sensor then keeps the packet log.
    pub packets: bool,
}

/// A filter compiled for one link type: classic BPF instructions, each libpcap's
/// `struct bpf_insn` as `code << 48 | jt << 40 | jf << 32 | k`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkProgram {
    /// The libpcap `LINKTYPE_*` the program was compiled for.
    pub linktype: u32,
    /// The instructions.
    pub insns: Vec<u64>,
}

/// What kind of monitoring socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SocketKind {
    /// `MOS_SOCK_MONITOR_STREAM`: connections and their events.
    #[default]
    Stream,
    /// `MOS_SOCK_MONITOR_RAW`: every packet its raw filter takes, TCP or not, raised as an
    /// orphan event.
    Raw,
}

/// One monitoring socket's part of a subscription (ABI 2.1). A filter of `None` takes
/// everything; a filter's programs are one per link type of the input ([`crate::layout::InputInfo`]),
/// and a frame of a link type it has no program for matches nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketSub {
    /// The socket's id, below [`MAX_SOCKETS`].
    pub id: u8,
    /// Stream or raw.
    pub kind: SocketKind,
    /// Built-in event bits ([`crate::EventMask`]) its callbacks want.
    pub events: u64,
    /// `stream_syn_filter`: a connection is the socket's when its first packet (the SYN, or
    /// the first packet seen midstream) matches.
    pub syn: Option<Vec<LinkProgram>>,
    /// `stream_orphan_filter`: orphan packets it gets.
    pub orphan: Option<Vec<LinkProgram>>,
    /// `raw_pkt_filter`: packets a raw socket gets.
    pub raw: Option<Vec<LinkProgram>>,
}

/// Analyzer to sensor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// First message: who is attaching, and the ABI it reads.
    Hello {
        /// ABI major version of the analyzer's library.
        abi_major: u16,
        /// ABI minor version.
        abi_minor: u16,
        /// A name for logs and status (truncated by the sensor to 64 bytes).
        name: String,
    },
    /// Replaces the subscription (events and packets).
    Subscribe(Subscription),
    /// The analyzer's callbacks are registered: it is ready for events (`--wait-analyzers`
    /// counts it from now on).
    Ready,
    /// The analyzer leaves.
    Detach,
    /// Sent instead of `Hello` by a client that only wants the sensor's state (`mos-ctl`):
    /// answered with [`SensorMsg::Status`] (or `Refused`), then the socket is closed. Such a
    /// client is no analyzer: it gets no rings and the sensor never waits for it (ABI 1.3).
    Status,
    /// Replaces the subscription, socket by socket (ABI 2.1): each event goes to the sockets
    /// whose events and filters take it ([`crate::layout::EventRecord::socks`]). Answered
    /// with [`SensorMsg::Subscribed`] or [`SensorMsg::Invalid`].
    SubscribeSockets {
        /// Whether the analyzer reads packets (`getlastpkt`; raw sockets need them).
        packets: bool,
        /// The open sockets.
        sockets: Vec<SocketSub>,
    },
    /// `MOS_STOP_MON` (ABI 2.1): socket `sock` wants no more events of this flow on `side`
    /// (both sides: `MOS_SIDE_BOTH`), and the sensor no longer holds the flow's bytes back for
    /// it. Not answered.
    StopMon {
        /// The socket.
        sock: u8,
        /// The flow's worker.
        worker: u16,
        /// The flow's slot.
        slot: u32,
        /// The slot's generation.
        generation: u32,
        /// `MOS_SIDE_CLI`, `MOS_SIDE_SVR` or `MOS_SIDE_BOTH`.
        side: u8,
    },
    /// The workers whose connections this analyzer takes (ABI 2.2): bit `w` for worker `w`.
    /// On the other workers its subscription is empty: it gets none of their events and holds
    /// none of their bytes back. Sent by each context of a C analyzer (`mtcp_create_context`),
    /// so that each connection belongs to one context. All workers until sent; not answered.
    Workers {
        /// Bit `w` set: worker `w`'s connections.
        mask: u32,
    },
}

/// Sensor to analyzer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SensorMsg {
    /// Attached: the three descriptors come with this message.
    Welcome {
        /// The analyzer's number for this sensor run.
        analyzer_id: u32,
        /// The sensor's epoch (as in the header).
        epoch: u64,
        /// Bytes of the main region.
        main_len: u64,
        /// Bytes of the event region.
        events_len: u64,
        /// Records per event ring.
        event_capacity: u64,
        /// Workers (one event ring each).
        nworkers: u32,
        /// Bytes of the analyzer page.
        page_len: u64,
    },
    /// Attach refused: an errno name from the manual pages and a sentence.
    Refused {
        /// `EACCES`, `EPROTO`, `EBUSY`, ...
        errno: String,
        /// Why, for the analyzer's user.
        reason: String,
    },
    /// A subscription was applied.
    Subscribed,
    /// The sensor detached the analyzer (stalled, or shutting down).
    Detached {
        /// Why.
        reason: String,
    },
    /// The input ended and every event is published: drain the rings and stop.
    Done,
    /// The answer to [`ClientMsg::Status`] (ABI 1.3); at most [`MAX_STATUS_MESSAGE`] bytes.
    Status(Box<StatusReport>),
    /// The answer to a [`ClientMsg::SubscribeSockets`] the sensor refused (a filter program it
    /// cannot run, too many sockets); the previous subscription stays (ABI 2.1).
    Invalid {
        /// Why.
        reason: String,
    },
}

/// Encodes a message for the socket.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    bincode::serialize(msg).expect("control messages always encode")
}

/// Decodes a message from the socket; an error names what was wrong.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    decode_limited(bytes, MAX_MESSAGE)
}

/// Decodes a message of at most `limit` bytes ([`MAX_STATUS_MESSAGE`] for the answer to a
/// status request).
pub fn decode_limited<'a, T: Deserialize<'a>>(bytes: &'a [u8], limit: usize) -> Result<T, String> {
    if bytes.len() > limit {
        return Err(format!("control message of {} bytes", bytes.len()));
    }
    bincode::options()
        .with_limit(limit as u64)
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .deserialize(bytes)
        .map_err(|e| format!("bad control message: {e}"))
}

use bincode::Options as _;

/// Characters of an analyzer's name that the sensor keeps (what is past them is cut).
pub const MAX_NAME_CHARS: usize = 64;

/// `s` made safe to print on a terminal, in a log line or a report: at most `max` characters
/// of it, with control characters and the characters that reorder or hide text (bidirectional
/// overrides and isolates, zero-width marks) written as escapes (`\n`, `\t`, `\x1b`,
/// `\u{202e}`) and backslashes doubled, so that an escape in the result always came from an
/// escaped character. Names come from analyzers, and analyzers are not trusted.
pub fn printable(s: &str, max: usize) -> String {
    use core::fmt::Write as _;
    let mut out = String::with_capacity(s.len().min(max.saturating_mul(4)));
    for c in s.chars().take(max) {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 && c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() || hides_text(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Format characters that change how the text around them shows: bidirectional embeddings,
/// overrides and isolates, zero-width characters, the byte-order mark.
fn hides_text(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
    )
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_what_a_terminal_would_act_on() {
        assert_eq!(printable("mos-dump", 64), "mos-dump");
        assert_eq!(printable("a\nb\tc\rd", 64), "a\\nb\\tc\\rd");
        assert_eq!(printable("\x1b[2J\x07", 64), "\\x1b[2J\\x07");
        assert_eq!(printable("\u{9b}31m", 64), "\\x9b31m");
        assert_eq!(printable("x\u{202e}y\u{200b}", 64), "x\\u{202e}y\\u{200b}");
        // A backslash is doubled, so that a literal "\n" cannot pass for an escaped newline.
        assert_eq!(printable("a\\nb", 64), "a\\\\nb");
        assert_eq!(printable("é字🙂", 64), "é字🙂");
        assert_eq!(printable(&"x".repeat(1000), 64).len(), 64);
        assert_eq!(printable("\n".repeat(10).as_str(), 3), "\\n\\n\\n");
        // Nothing printed is a control character any more.
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        assert!(!printable(&all, usize::MAX)
            .chars()
            .any(|c| c.is_control() || hides_text(c)));
    }

    #[test]
    fn messages_round_trip() {
        let m = ClientMsg::Hello {
            abi_major: 1,
            abi_minor: 0,
            name: "mos-dump".into(),
        };
        assert_eq!(decode::<ClientMsg>(&encode(&m)).unwrap(), m);
        let s = SensorMsg::Refused {
            errno: "EACCES".into(),
            reason: "uid 65534 is not allowed".into(),
        };
        assert_eq!(decode::<SensorMsg>(&encode(&s)).unwrap(), s);
    }

    #[test]
    fn a_status_report_on_64_analyzers_fits() {
        use crate::status::{event_names, AnalyzerStatus};
        let longest = |c: char, n: usize| std::iter::repeat_n(c, n).collect::<String>();
        let report = StatusReport {
            version: longest('v', 32),
            input: longest('i', 4096),
            mode: "lossless".into(),
            state: "running".into(),
            memory_bound_bytes: Some(u64::MAX),
            analyzers: (0..64)
                .map(|i| AnalyzerStatus {
                    id: i,
                    // The sensor keeps 64 characters of a name; each may take 4 bytes.
                    name: longest('\u{10348}', 64),
                    pid: u32::MAX,
                    uid: u32::MAX,
                    user: longest('u', 256),
                    events: event_names(u64::MAX),
                    packets: true,
                    ready: true,
                    published: u64::MAX,
                    delivered: u64::MAX,
                    dropped: u64::MAX,
                    lag: u64::MAX,
                    heartbeat_age_ms: Some(u64::MAX),
                    records_dropped: u64::MAX,
                })
                .collect(),
            ..StatusReport::default()
        };
        let msg = SensorMsg::Status(Box::new(report.clone().for_the_wire()));
        let bytes = encode(&msg);
        assert!(
            bytes.len() <= MAX_STATUS_MESSAGE / 2,
            "{} bytes: raise MAX_STATUS_MESSAGE",
            bytes.len()
        );
        let SensorMsg::Status(got) =
            decode_limited::<SensorMsg>(&bytes, MAX_STATUS_MESSAGE).unwrap()
        else {
            panic!("not a status report");
        };
        assert_eq!(got.from_the_wire(), report);
        // A reader refuses it rather than reading past its limit.
        assert!(decode_limited::<SensorMsg>(&bytes, bytes.len() - 1).is_err());
        assert_eq!(
            decode::<ClientMsg>(&encode(&ClientMsg::Status)).unwrap(),
            ClientMsg::Status
        );
    }

    #[test]
    fn a_subscription_of_32_sockets_with_filters_fits() {
        // 32 sockets, each a SYN filter of 60 instructions for 3 link types: what a large
        // analyzer sends.
        let progs = || {
            Some(
                (0..3)
                    .map(|l| LinkProgram {
                        linktype: l,
                        insns: vec![u64::MAX; 60],
                    })
                    .collect(),
            )
        };
        let msg = ClientMsg::SubscribeSockets {
            packets: true,
            sockets: (0..MAX_SOCKETS as u8)
                .map(|id| SocketSub {
                    id,
                    events: u64::MAX,
                    syn: progs(),
                    ..SocketSub::default()
                })
                .collect(),
        };
        let bytes = encode(&msg);
        assert!(bytes.len() <= MAX_MESSAGE, "{} bytes", bytes.len());
        assert_eq!(decode::<ClientMsg>(&bytes).unwrap(), msg);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode::<ClientMsg>(&[0xff; 16]).is_err());
        assert!(decode::<ClientMsg>(&[]).is_err());
        // A string length far past the message.
        let mut b = vec![0, 0, 0, 0];
        b.extend_from_slice(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(decode::<ClientMsg>(&b).is_err());
    }
}
