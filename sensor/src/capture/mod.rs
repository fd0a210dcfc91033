//! Capture backends: where frames come from.
//!
//! Every backend implements [`CaptureBackend`] and hands out one [`RawPacket`] at a time,
//! borrowed from the backend's own buffer (no copy). The core does not know which backend
//! feeds it.

pub mod file;

pub use file::FileCapture;

/// How a frame's first bytes are to be read: the link-layer header type of its interface.
///
/// Numbered by the `LINKTYPE_*` values of pcap and pcapng files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// `LINKTYPE_ETHERNET` (1), with 802.1Q / 802.1ad tags.
    Ethernet,
    /// `LINKTYPE_NULL` (0): BSD loopback, a 4-byte address family in the writer's byte order.
    Null,
    /// `LINKTYPE_LOOP` (108): OpenBSD loopback, a 4-byte big-endian address family.
    Loop,
    /// `LINKTYPE_RAW` (101, and DLT_RAW 12 / 14 on some systems): an IPv4 or IPv6 packet.
    Raw,
    /// `LINKTYPE_IPV4` (228).
    Ipv4,
    /// `LINKTYPE_IPV6` (229).
    Ipv6,
    /// `LINKTYPE_LINUX_SLL` (113): Linux cooked capture v1.
    LinuxSll,
    /// `LINKTYPE_LINUX_SLL2` (276): Linux cooked capture v2.
    LinuxSll2,
    /// `LINKTYPE_PPP` (9).
    Ppp,
    /// `LINKTYPE_C_HDLC` (104): Cisco HDLC.
    CHdlc,
    /// `LINKTYPE_NFLOG` (239): Linux netfilter log.
    Nflog,
    /// Any other link type: its frames are counted as unsupported and skipped.
    Other(u32),
}

impl LinkType {
    /// Every link type whose frames mos reads.
    pub const READ: [LinkType; 11] = [
        LinkType::Ethernet,
        LinkType::Null,
        LinkType::Loop,
        LinkType::Raw,
        LinkType::Ipv4,
        LinkType::Ipv6,
        LinkType::LinuxSll,
        LinkType::LinuxSll2,
        LinkType::Ppp,
        LinkType::CHdlc,
        LinkType::Nflog,
    ];

    /// The `LINKTYPE_*` number (the canonical one where several map to the same type).
    pub fn code(self) -> u32 {
        match self {
            LinkType::Null => 0,
            LinkType::Ethernet => 1,
            LinkType::Ppp => 9,
            LinkType::Raw => 101,
            LinkType::CHdlc => 104,
            LinkType::Loop => 108,
            LinkType::LinuxSll => 113,
            LinkType::Ipv4 => 228,
            LinkType::Ipv6 => 229,
            LinkType::Nflog => 239,
            LinkType::LinuxSll2 => 276,
            LinkType::Other(n) => n,
        }
    }

    /// The link type with this `LINKTYPE_*` number.
    pub fn from_linktype(n: u32) -> LinkType {
        match n {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            9 => LinkType::Ppp,
            12 | 14 | 101 => LinkType::Raw,
            104 => LinkType::CHdlc,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            239 => LinkType::Nflog,
            276 => LinkType::LinuxSll2,
            other => LinkType::Other(other),
        }
    }
}

/// One captured frame, borrowed from the backend until the next call.
#[derive(Clone, Copy, Debug)]
pub struct RawPacket<'a> {
    /// Capture time in nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// How to read the frame's first bytes.
    pub link: LinkType,
    /// The bytes captured (at most the snap length).
    pub data: &'a [u8],
    /// The frame's length on the wire; larger than `data.len()` when the snap length cut it.
    pub orig_len: u32,
}

/// Why a capture stopped early or could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be opened or read.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said (shown in the message, so not also chained as a source).
        error: std::io::Error,
    },
    /// The file is not a pcap or pcapng file.
    #[error("{path}: not a pcap or pcapng file (first bytes {magic:08x})")]
    NotACapture {
        /// The file.
        path: String,
        /// The first four bytes, big-endian.
        magic: u32,
    },
    /// The file ends inside a header or record.
    #[error("{path}: truncated at byte offset {offset}: {what}")]
    Truncated {
        /// The file.
        path: String,
        /// Byte offset of the header or record that is cut short.
        offset: u64,
        /// Which header or record.
        what: &'static str,
    },
    /// A header or record holds values that cannot be right.
    #[error("{path}: malformed at byte offset {offset}: {what}")]
    Malformed {
        /// The file.
        path: String,
        /// Byte offset of the bad header or record.
        offset: u64,
        /// What is wrong.
        what: String,
    },
}

/// A source of frames.
pub trait CaptureBackend {
    /// The next frame, `Ok(None)` at the end of the input, or the error that ends the input
    /// (frames returned before it stay valid results).
    fn next_packet(&mut self) -> Result<Option<RawPacket<'_>>, CaptureError>;

    /// Bytes consumed so far and the total when known, for progress lines.
    fn progress(&self) -> (u64, Option<u64>);
}
