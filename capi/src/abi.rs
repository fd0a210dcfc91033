//! What `mos_api.h` and `mtcp_api.h` declare, as Rust sees it: the constants (mOS's values)
//! and the `#[repr(C)]` structures. `tests/tests/capi_header.rs` compiles a C program that
//! prints every constant and layout of the headers and compares them with these.

use shm_layout::EventMask;
use std::ffi::{c_char, c_int, c_void};

/// `MOS_NULL`: the hook of events tied to no stack update, and the side of orphans and raw
/// packets.
pub const MOS_NULL: c_int = 1 << 29;
/// `MOS_HK_RCV`.
pub const MOS_HK_RCV: c_int = 1 << 30;
/// `MOS_HK_SND`: bit 31 (`1 << 31` as an `int`).
pub const MOS_HK_SND: c_int = i32::MIN;

/// `MOS_NULL_EVENT`: no event (what `mtcp_alloc_event` and `mtcp_define_event` return on
/// failure).
pub const MOS_NULL_EVENT: u64 = 0;
/// `MOS_ON_PKT_IN`.
pub const MOS_ON_PKT_IN: u64 = EventMask::PKT_IN.0;
/// `MOS_ON_PKT_OUT` (deprecated in mOS; never raised).
pub const MOS_ON_PKT_OUT: u64 = 1 << 1;
/// `MOS_ON_CONN_START`.
pub const MOS_ON_CONN_START: u64 = EventMask::CONN_START.0;
/// `MOS_ON_CONN_SETUP` (deprecated in mOS; never raised).
pub const MOS_ON_CONN_SETUP: u64 = 1 << 3;
/// `MOS_ON_CONN_NEW_DATA`.
pub const MOS_ON_CONN_NEW_DATA: u64 = EventMask::CONN_NEW_DATA.0;
/// `MOS_ON_ERROR`.
pub const MOS_ON_ERROR: u64 = EventMask::ERROR.0;
/// `MOS_ON_TIMEOUT`.
pub const MOS_ON_TIMEOUT: u64 = EventMask::TIMEOUT.0;
/// `MOS_ON_TCP_STATE_CHANGE`.
pub const MOS_ON_TCP_STATE_CHANGE: u64 = EventMask::TCP_STATE_CHANGE.0;
/// `MOS_ON_ORPHAN`.
pub const MOS_ON_ORPHAN: u64 = EventMask::ORPHAN.0;
/// `MOS_ON_REXMIT`.
pub const MOS_ON_REXMIT: u64 = EventMask::REXMIT.0;
/// `MOS_ON_CONN_END`.
pub const MOS_ON_CONN_END: u64 = EventMask::CONN_END.0;
/// `MOS_ON_DEBUG_MESSAGE` (mOS's debugging event; never raised).
pub const MOS_ON_DEBUG_MESSAGE: u64 = 1 << 11;
/// The events a program may register for that never fire here (mOS's deprecated ones).
pub const NEVER_RAISED: u64 = MOS_ON_PKT_OUT | MOS_ON_CONN_SETUP | MOS_ON_DEBUG_MESSAGE;
/// The first bit a user-defined event of a C program takes: the client library's first
/// user-defined bit (11) is `MOS_ON_DEBUG_MESSAGE`'s, so each context reserves it first.
pub const FIRST_UDE_BIT: u32 = 12;

/// `MOS_SIDE_CLI`.
pub const MOS_SIDE_CLI: c_int = 0;
/// `MOS_SIDE_SVR`.
pub const MOS_SIDE_SVR: c_int = 1;
/// `MOS_SIDE_BOTH`.
pub const MOS_SIDE_BOTH: c_int = 2;

/// `SOL_MONSOCKET`: the socket-option level of monitoring sockets.
pub const SOL_MONSOCKET: c_int = 0xfffe;
/// `MOS_FRAGINFO_CLIBUF`.
pub const MOS_FRAGINFO_CLIBUF: c_int = 0x01;
/// `MOS_FRAGINFO_SVRBUF`.
pub const MOS_FRAGINFO_SVRBUF: c_int = 0x02;
/// `MOS_INFO_CLIBUF`.
pub const MOS_INFO_CLIBUF: c_int = 0x03;
/// `MOS_INFO_SVRBUF`.
pub const MOS_INFO_SVRBUF: c_int = 0x04;
/// `MOS_TCP_STATE_CLI`.
pub const MOS_TCP_STATE_CLI: c_int = 0x05;
/// `MOS_TCP_STATE_SVR`.
pub const MOS_TCP_STATE_SVR: c_int = 0x06;
/// `MOS_TIMESTAMP` (not implemented by mOS either).
pub const MOS_TIMESTAMP: c_int = 0x07;
/// `MOS_CLIBUF`.
pub const MOS_CLIBUF: c_int = 0x09;
/// `MOS_SVRBUF`.
pub const MOS_SVRBUF: c_int = 0x0a;
/// `MOS_SEQ_REMAP` (not implemented by mOS either).
pub const MOS_SEQ_REMAP: c_int = 0x0b;
/// `MOS_STOP_MON`.
pub const MOS_STOP_MON: c_int = 0x0c;
/// `MOS_FRAG_CLIBUF` (not implemented by mOS either).
pub const MOS_FRAG_CLIBUF: c_int = 0x0d;
/// `MOS_FRAG_SVRBUF` (not implemented by mOS either).
pub const MOS_FRAG_SVRBUF: c_int = 0x0e;
/// `MOS_CLIOVERLAP`.
pub const MOS_CLIOVERLAP: c_int = 0x0f;
/// `MOS_SVROVERLAP`.
pub const MOS_SVROVERLAP: c_int = 0x10;

/// `MOS_LOST_CLIBUF` (mos's own, not mOS's): a `uint64_t`, the bytes of the client's stream
/// this per-flow socket's `mtcp_peek` skipped so far (overruns and gaps). A loss of one byte
/// reads as -1 with `ENODATA` from `mtcp_peek`, like no data: this option tells them apart.
pub const MOS_LOST_CLIBUF: c_int = 0x100;
/// `MOS_LOST_SVRBUF` (mos's own): the same for the server's stream.
pub const MOS_LOST_SVRBUF: c_int = 0x101;

/// `MOS_OVERLAP_POLICY_FIRST`.
pub const MOS_OVERLAP_POLICY_FIRST: c_int = 0;
/// `MOS_OVERLAP_POLICY_LAST`.
pub const MOS_OVERLAP_POLICY_LAST: c_int = 1;
/// `MOS_OVERLAP_CNT`.
pub const MOS_OVERLAP_CNT: c_int = 2;

/// `MOS_SOCK_UNUSED`.
pub const MOS_SOCK_UNUSED: c_int = 0;
/// `MOS_SOCK_STREAM_LISTEN` (an endpoint's: not a monitor's).
pub const MOS_SOCK_STREAM_LISTEN: c_int = 1;
/// `MOS_SOCK_PROXY_LISTEN` (not implemented by mOS either).
pub const MOS_SOCK_PROXY_LISTEN: c_int = 2;
/// `MOS_SOCK_MONITOR_STREAM`: a monitoring socket of connections.
pub const MOS_SOCK_MONITOR_STREAM: c_int = 3;
/// `MOS_SOCK_STREAM` (an endpoint socket: not a monitor's).
pub const MOS_SOCK_STREAM: c_int = 4;
/// `MOS_SOCK_PROXY` (not implemented by mOS either).
pub const MOS_SOCK_PROXY: c_int = 5;
/// `MOS_SOCK_MONITOR_STREAM_ACTIVE`: the type of the per-flow sockets callbacks get.
pub const MOS_SOCK_MONITOR_STREAM_ACTIVE: c_int = 6;
/// `MOS_SOCK_MONITOR_RAW`: a monitoring socket of packets.
pub const MOS_SOCK_MONITOR_RAW: c_int = 7;
/// `MOS_SOCK_EPOLL` (an endpoint's).
pub const MOS_SOCK_EPOLL: c_int = 8;
/// `MOS_SOCK_PIPE` (an endpoint's).
pub const MOS_SOCK_PIPE: c_int = 9;

/// `INPORT_ANY`.
pub const INPORT_ANY: u16 = 0;

/// `mtcp_setlastpkt`'s options (the call is `ENOTSUP` here: a passive monitor).
pub const MOS_ETH_HDR: c_int = 1 << 0;
/// `MOS_IP_HDR`.
pub const MOS_IP_HDR: c_int = 1 << 1;
/// `MOS_TCP_HDR`.
pub const MOS_TCP_HDR: c_int = 1 << 2;
/// `MOS_TCP_PAYLOAD`.
pub const MOS_TCP_PAYLOAD: c_int = 1 << 3;
/// `MOS_UPDATE_IP_CHKSUM`.
pub const MOS_UPDATE_IP_CHKSUM: c_int = 1 << 4;
/// `MOS_UPDATE_TCP_CHKSUM`.
pub const MOS_UPDATE_TCP_CHKSUM: c_int = 1 << 5;
/// `MOS_DROP`.
pub const MOS_DROP: c_int = 1 << 6;
/// `MOS_OVERWRITE`.
pub const MOS_OVERWRITE: c_int = 1 << 7;
/// `MOS_CHOMP`.
pub const MOS_CHOMP: c_int = 1 << 8;
/// `MOS_INSERT`.
pub const MOS_INSERT: c_int = 1 << 9;

/// `MOS_APP`: applications in `struct mtcp_conf`.
pub const MOS_APP: usize = 20;
/// `MOS_APP_ARGC`: arguments per application in `struct mtcp_conf`.
pub const MOS_APP_ARGC: usize = 20;
/// `APP_NAME_LEN`.
pub const APP_NAME_LEN: usize = 40;

/// The first per-flow socket id: ids below it are monitoring sockets (the client library's
/// socket numbers, below `MAX_SOCKETS`).
pub const FIRST_FLOW_SOCK: c_int = shm_layout::control::MAX_SOCKETS as c_int;

/// `struct mtcp_context`: what `mctx_t` points to. Only `cpu` is public; the library's
/// context starts with it.
#[repr(C)]
#[derive(Debug)]
pub struct MtcpContext {
    /// The context's number (`mtcp_create_context`'s argument).
    pub cpu: c_int,
}

/// `struct mtcp_conf`.
#[repr(C)]
#[derive(Debug)]
pub struct MtcpConf {
    /// Contexts the program runs.
    pub num_cores: c_int,
    /// Connections one sensor worker tracks at once.
    pub max_concurrency: c_int,
    /// Bit i for context i.
    pub cpu_mask: u64,
    /// Stream buffers of one sensor worker.
    pub max_num_buffers: c_int,
    /// The most bytes one side of a connection holds.
    pub rcvbuf_size: c_int,
    /// Not used by a monitor.
    pub sndbuf_size: c_int,
    /// Seconds of TIME_WAIT followed (0).
    pub tcp_timewait: c_int,
    /// Idle seconds before a connection ends (-1: never).
    pub tcp_timeout: c_int,
    /// mOS's per-application CPU masks (zeros).
    pub app_cpu_mask: [u64; MOS_APP],
    /// mOS's per-application arguments (nulls).
    pub app_argv: [[*mut c_char; MOS_APP_ARGC]; MOS_APP],
    /// mOS's per-application argument counts (zeros).
    pub app_argc: [c_int; MOS_APP],
    /// Applications (0).
    pub num_app: c_int,
}

/// `struct filter_arg` (`filter_arg_t`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FilterArg {
    /// The program's pointer.
    pub arg: *mut c_void,
    /// Its length.
    pub len: usize,
}

impl FilterArg {
    /// Zeros: what callbacks of built-in events get.
    pub const ZERO: FilterArg = FilterArg {
        arg: std::ptr::null_mut(),
        len: 0,
    };
}

/// `struct tcp_buf_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpBufInfoC {
    /// `tcpbi_init_seq`.
    pub init_seq: u32,
    /// `tcpbi_last_byte_read`.
    pub last_byte_read: u32,
    /// `tcpbi_next_byte_expected`.
    pub next_byte_expected: u32,
    /// `tcpbi_last_byte_received`.
    pub last_byte_received: u32,
}

/// `struct tcp_ring_fragment`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpRingFragmentC {
    /// Stream offset.
    pub offset: u64,
    /// Length.
    pub len: u32,
}

/// `struct pkt_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PktInfoC {
    /// Capture time in ms (wraps).
    pub cur_ts: u32,
    /// Input interface (0).
    pub in_ifidx: i8,
    /// Bytes of the frame.
    pub eth_len: u16,
    /// Bytes of the IP packet.
    pub ip_len: u16,
    /// Stream offset of the payload.
    pub offset: u64,
    /// Payload bytes.
    pub payloadlen: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack_seq: u32,
    /// Window (unscaled).
    pub window: u16,
    /// The Ethernet header (null for other link types).
    pub ethh: *mut c_void,
    /// The IP header.
    pub iph: *mut c_void,
    /// The TCP header (null for a packet that is not TCP).
    pub tcph: *mut c_void,
    /// The payload.
    pub payload: *mut u8,
}

/// `union monitor_filter`: the first pointer is `raw_pkt_filter` and `stream_syn_filter`, the
/// second `stream_orphan_filter`.
#[repr(C)]
#[derive(Debug)]
pub struct MonitorFilterC {
    /// `raw_pkt_filter` / `stream_syn_filter`.
    pub first: *const c_char,
    /// `stream_orphan_filter`.
    pub second: *const c_char,
}

/// `callback_t`.
pub type CallbackT = Option<extern "C" fn(*mut MtcpContext, c_int, c_int, u64, *mut FilterArg)>;
/// `filter_t`.
pub type FilterT =
    Option<extern "C" fn(*mut MtcpContext, c_int, c_int, u64, *mut FilterArg) -> bool>;
/// `mtcp_sighandler_t`.
pub type SigHandlerT = Option<extern "C" fn(c_int)>;
