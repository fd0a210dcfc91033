//! The configuration file (`--config`, by default `/etc/mos/sensor.toml`): one TOML file that
//! holds everything the sensor's command line takes, grouped in sections.
//!
//! [`KEYS`] is the one table of keys: each names its section, its type and range, the flag it
//! stands for, its default and its meaning. Everything else comes from it: the checks applied to
//! a file ([`parse`]), the command-line arguments a file's settings become
//! ([`ConfigFile::args`]), `docs/CONFIG.md` ([`reference_doc`]) and the shipped
//! `deploy/sensor.toml` ([`default_file`]).
//!
//! A file's settings reach the sensor as the flags they stand for, placed after the command
//! line's own, so that the command line's parser checks them once more and the sensor has one
//! set of arguments whatever their source. A key is taken from the file only when none of the
//! flags it stands for was given on the command line: the command line wins key by key.

use crate::budget::parse_size;
use crate::dispatch::MAX_WORKERS;
use std::fmt;
use std::path::{Path, PathBuf};
use toml_edit::{Document, Value};

/// Where the sensor looks for its configuration when `--config` is not given (a missing file
/// there is not an error), unless [`ENV_DEFAULT`] names another.
pub const DEFAULT_PATH: &str = "/etc/mos/sensor.toml";

/// The environment variable that replaces [`DEFAULT_PATH`]; set but empty, there is no
/// default file (the test suite sets it so, so that a host's own configuration does not
/// change what the tests run).
pub const ENV_DEFAULT: &str = "MOS_SENSOR_CONFIG";

/// The file read when `--config` is not given: `$MOS_SENSOR_CONFIG` when set (none when it is
/// empty), else [`DEFAULT_PATH`].
pub fn default_path() -> Option<PathBuf> {
    match std::env::var_os(ENV_DEFAULT) {
        Some(p) if p.is_empty() => None,
        Some(p) => Some(PathBuf::from(p)),
        None => Some(PathBuf::from(DEFAULT_PATH)),
    }
}

/// What a key's value must be. The same check applies to the flag the key stands for
/// ([`Type::check_arg`]), so that the command line and the file accept the same values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Type {
    /// A non-empty string.
    Text,
    /// A non-empty string naming a file or directory.
    Path,
    /// An integer within the bounds (inclusive).
    Int {
        /// The least value.
        min: i64,
        /// The greatest value.
        max: i64,
    },
    /// A power of two within the bounds (inclusive).
    PowerOfTwo {
        /// The least value.
        min: i64,
        /// The greatest value.
        max: i64,
    },
    /// A number of seconds (integer or decimal) within the bounds (inclusive).
    Seconds {
        /// The least value.
        min: f64,
        /// The greatest value.
        max: f64,
    },
    /// A number (integer or decimal) within the bounds (inclusive).
    Factor {
        /// The least value.
        min: f64,
        /// The greatest value.
        max: f64,
    },
    /// `true` or `false`.
    Bool,
    /// One of the listed strings.
    Choice(&'static [&'static str]),
    /// A size in bytes: a positive integer, or a string with a K, M, G or T suffix.
    Size,
    /// CPU numbers: a string such as `"2,3"` or `"2-5"`, or an array of integers.
    Cpus,
    /// User names or uids (an array of strings or integers).
    Users,
    /// Group names or gids (an array of strings or integers).
    Groups,
}

/// How a key's value becomes command-line arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    /// `--flag=VALUE`.
    Value(&'static str),
    /// The bare flag when the boolean is the given one, nothing otherwise.
    Switch(&'static str, bool),
    /// The flag of the chosen string (`None`: the default, no flag).
    Choices(&'static [(&'static str, Option<&'static str>)]),
    /// `--flag=VALUE` for each element of the array.
    Repeat(&'static str),
}

impl Flag {
    /// The flags (`--name`) this key stands for.
    pub fn names(&self) -> Vec<&'static str> {
        match *self {
            Flag::Value(f) | Flag::Switch(f, _) | Flag::Repeat(f) => vec![f],
            Flag::Choices(c) => c.iter().filter_map(|(_, f)| *f).collect(),
        }
    }

    /// The command-line parser's ids of the flags (`--chunk-kib` is `chunk_kib`).
    pub fn ids(&self) -> Vec<String> {
        self.names()
            .iter()
            .map(|f| f.trim_start_matches('-').replace('-', "_"))
            .collect()
    }
}

/// A key's value when the file does not set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Default {
    /// This value (TOML text).
    Value(&'static str),
    /// No value; the text is an example (TOML text) for the shipped file.
    Unset(&'static str),
}

/// When a key from the file applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Always.
    Always,
    /// One of the inputs: ignored when the command line names an input.
    Input,
    /// Only when the input is a DPDK port.
    Dpdk,
    /// Only when the input is a capture file.
    Pcap,
    /// Only when the input is live (a DPDK port or an interface).
    Live,
    /// Only when the sensor publishes (not with `publish.enabled = false` or `--no-publish`).
    Publishing,
    /// `publish.enabled`: ignored when the command line gives a flag that needs publishing
    /// (`--lossy`, `--lossless`, `--wait-analyzers`).
    PublishSwitch,
}

/// One key of the configuration file.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    /// Its section (`[input]`).
    pub section: &'static str,
    /// Its name in the section.
    pub name: &'static str,
    /// What its value must be.
    pub ty: Type,
    /// The command-line flag(s) it stands for.
    pub flag: Flag,
    /// Its value when the file does not set it.
    pub default: Default,
    /// The value the shipped `deploy/sensor.toml` sets (TOML text), if any.
    pub shipped: Option<&'static str>,
    /// When it applies.
    pub scope: Scope,
    /// One line, for the shipped file.
    pub summary: &'static str,
    /// One paragraph, for `docs/CONFIG.md`.
    pub meaning: &'static str,
}

impl Key {
    /// `section.name`.
    pub fn path(&self) -> String {
        format!("{}.{}", self.section, self.name)
    }
}

/// The sections, in the order of the file, each with a one-line description.
pub const SECTIONS: &[(&str, &str)] = &[
    (
        "input",
        "Where frames come from: exactly one of pcap, dpdk or iface, and the options of that input.",
    ),
    (
        "sensor",
        "Workers, waiting for analyzers, memory.",
    ),
    (
        "tracking",
        "Connection tracking and stream reassembly.",
    ),
    ("fragments", "IP fragment reassembly."),
    (
        "publish",
        "Shared memory for analyzers.",
    ),
    ("control", "The control socket where analyzers attach, and who may."),
    ("output", "The sensor's own output."),
];

/// Where Prometheus metrics went when the sensor stopped serving them (`--metrics-listen`,
/// `metrics.listen`): the privileged process keeps to its Unix control socket.
pub const METRICS_MOVED: &str =
    "the sensor opens no TCP port; run `mos-ctl metrics --listen ADDR` (unit mos-metrics.service)";

/// A key that was removed, and what to do instead: a file that still sets it is refused with
/// that advice rather than as an unknown key.
#[derive(Clone, Copy, Debug)]
pub struct Removed {
    /// Its section.
    pub section: &'static str,
    /// Its name in the section.
    pub name: &'static str,
    /// The flag it stood for (which the sensor refuses with the same advice).
    pub flag: &'static str,
    /// Where its job went.
    pub instead: &'static str,
}

/// The keys that were removed.
pub const REMOVED: &[Removed] = &[
    Removed {
        section: "metrics",
        name: "listen",
        flag: "--metrics-listen",
        instead: METRICS_MOVED,
    },
    Removed {
        section: "tracking",
        name: "ring_kib",
        flag: "--ring-kib",
        instead: STREAMS_CHUNKED,
    },
    Removed {
        section: "tracking",
        name: "max_rings",
        flag: "--max-rings",
        instead: STREAMS_CHUNKED,
    },
];

/// Where the fixed per-side rings went.
pub const STREAMS_CHUNKED: &str = "each side's stream now grows in chunks from a pool as its window needs; set the pool with tracking.stream_chunks (--stream-chunks) and tracking.chunk_kib, a side's most with tracking.stream_max_kib";

const OVERLAP_POLICIES: &[&str] = &["first", "last", "linux", "bsd", "windows"];
const HUGEPAGES: &[&str] = &["auto", "off", "require"];
const MODES: &[(&str, Option<&str>)] = &[
    ("auto", None),
    ("lossless", Some("--lossless")),
    ("lossy", Some("--lossy")),
];
const CHECKSUMS: &[(&str, Option<&str>)] = &[
    ("count", None),
    ("drop", Some("--drop-bad-checksums")),
    ("ignore", Some("--no-checksum")),
];
const MODE_NAMES: &[&str] = &["auto", "lossless", "lossy"];
const CHECKSUM_NAMES: &[&str] = &["count", "drop", "ignore"];
const U32_HALF: i64 = (u32::MAX / 2) as i64;
/// A day in seconds: the longest timeout the sensor takes, beyond which a timeout means
/// nothing but a typing error (and overflows nanosecond clocks long before a float runs out).
const DAY: i64 = 86_400;
/// A timeout in seconds (`--stall-timeout`, `--stop-after-idle`): a millisecond to a day.
const TIMEOUT: Type = Type::Seconds {
    min: 0.001,
    max: DAY as f64,
};

/// Every key of the configuration file, section by section.
pub const KEYS: &[Key] = &[
    // [input]
    Key {
        section: "input",
        name: "pcap",
        ty: Type::Path,
        flag: Flag::Value("--pcap"),
        default: Default::Unset("\"/var/lib/mos/capture.pcap\""),
        shipped: None,
        scope: Scope::Input,
        summary: "Capture file to replay (pcap or pcapng); \"-\" reads standard input.",
        meaning: "A capture file to replay, pcap or pcapng (Ethernet, Linux cooked v1/v2, BSD loopback, raw IP, PPP, Cisco HDLC and NFLOG link types); `-` reads it from standard input. A replay is lossless by default and ends when the file does. A FIFO or a pipe is read as its writer sends; SIGINT or SIGTERM end it where it is, even while the writer sends nothing or no writer has opened the FIFO yet.",
    },
    Key {
        section: "input",
        name: "dpdk",
        ty: Type::Text,
        flag: Flag::Value("--dpdk"),
        default: Default::Unset("\"-l 0-2 --allow 0000:03:00.0\""),
        shipped: None,
        scope: Scope::Input,
        summary: "Receive from a DPDK port; the value is DPDK's EAL arguments, split on spaces.",
        meaning: "Receive from a DPDK port. The value is DPDK's EAL arguments as one string, split on spaces (no quoting), for example `-l 0-2 --allow 0000:03:00.0` for a NIC, or `--no-huge -m 256 --no-pci --vdev=net_pcap0,rx_pcap=FILE` to read a capture through a virtual device. Needs root or the capabilities DPDK asks for.",
    },
    Key {
        section: "input",
        name: "iface",
        ty: Type::Text,
        flag: Flag::Value("--iface"),
        default: Default::Unset("\"eth1\""),
        shipped: None,
        scope: Scope::Input,
        summary: "Capture live on this network interface through AF_PACKET.",
        meaning: "Capture live on this network interface through AF_PACKET (TPACKET_V3; with several workers, a fanout group that the kernel splits by a symmetric flow hash). Needs root or CAP_NET_RAW.",
    },
    Key {
        section: "input",
        name: "block_timeout_ms",
        ty: Type::Int { min: 1, max: 1000 },
        flag: Flag::Value("--block-timeout-ms"),
        default: Default::Value("10"),
        shipped: None,
        scope: Scope::Live,
        summary: "With iface: milliseconds the kernel holds a ring block that is not full (latency on a quiet link against buffering).",
        meaning: "How long the kernel holds a block of the AF_PACKET ring that is not full before handing it to the sensor, in milliseconds. It bounds how late a frame on a quiet link reaches the analyzers (about half of it on average; on a busy link blocks fill sooner). It also sets how much the ring buffers while the sensor is held up (in lossless mode, waiting for an analyzer): each timeout hands over a partly filled block, so the 64 blocks last at least 64 timeouts. With 1 ms an analyzer hears of a connection within about 1 ms instead of 6, but bursts after a quiet spell were dropped by the kernel in lossless tests that 10 ms passes. Applies only when the input is `iface`.",
    },
    Key {
        section: "input",
        name: "port",
        ty: Type::Int { min: 0, max: 65535 },
        flag: Flag::Value("--port"),
        default: Default::Value("0"),
        shipped: None,
        scope: Scope::Dpdk,
        summary: "The DPDK port to receive from (with dpdk).",
        meaning: "The DPDK port to receive from. Applies only when the input is `dpdk`.",
    },
    Key {
        section: "input",
        name: "queues_hold_flows",
        ty: Type::Bool,
        flag: Flag::Switch("--queues-hold-flows", true),
        default: Default::Value("false"),
        shipped: None,
        scope: Scope::Dpdk,
        summary: "The DPDK port's RX queues already hold whole flows: each worker polls its own.",
        meaning: "The DPDK port's RX queues already hold whole flows (steered by rules set up outside mos, or a net_pcap device given one capture per queue, split by flow): each worker polls its own queue, with neither RSS nor software dispatch. Otherwise a port with RSS gets a symmetric key and one queue per worker, and a port without RSS one queue read by a dispatching thread. Applies only when the input is `dpdk`.",
    },
    Key {
        section: "input",
        name: "mbufs",
        ty: Type::Int {
            min: 1,
            max: u32::MAX as i64,
        },
        flag: Flag::Value("--mbufs"),
        default: Default::Unset("262144"),
        shipped: None,
        scope: Scope::Dpdk,
        summary: "Mbufs in the DPDK port's pool (default: enough for the queues and frames in flight).",
        meaning: "Mbufs in the DPDK port's pool. Unset, the pool holds enough for every queue's descriptors and the frames in flight to workers; net_pcap with `infinite_rx=1` needs one per frame of its file. Applies only when the input is `dpdk`.",
    },
    Key {
        section: "input",
        name: "cpus",
        ty: Type::Cpus,
        flag: Flag::Value("--cpus"),
        default: Default::Unset("\"2-5\""),
        shipped: None,
        scope: Scope::Always,
        summary: "CPUs for the workers of a live capture, one per worker: \"2,3\", \"2-5\" or [2, 3].",
        meaning: "CPUs for the workers of a live capture, one per worker in order: a string holding a list such as `\"2,3\"` or a range such as `\"2-5\"`, or an array of CPU numbers. Unset, worker w of a live capture runs on the w-th CPU the sensor may use (when there are at least as many CPUs as workers); a replay's workers are not pinned.",
    },
    Key {
        section: "input",
        name: "stop_after_idle",
        ty: TIMEOUT,
        flag: Flag::Value("--stop-after-idle"),
        default: Default::Unset("60"),
        shipped: None,
        scope: Scope::Live,
        summary: "End a live capture once no frame has arrived for this many seconds (default: never).",
        meaning: "End a live capture as if its input ended once no frame has arrived for this many seconds: every open connection ends, analyzers drain and are told the sensor is done. Unset, a live capture runs until SIGINT or SIGTERM. Applies only to a live input (`dpdk` or `iface`).",
    },
    Key {
        section: "input",
        name: "count",
        ty: Type::Int {
            min: 1,
            max: i64::MAX,
        },
        flag: Flag::Value("--count"),
        default: Default::Unset("1000000"),
        shipped: None,
        scope: Scope::Live,
        summary: "End a live capture after about this many frames (default: never).",
        meaning: "End a live capture after about this many frames (each worker finishes the burst or block it holds, so a few more may be taken), as if its input ended there. Applies only to a live input (`dpdk` or `iface`).",
    },
    Key {
        section: "input",
        name: "speed",
        ty: Type::Factor {
            min: 0.001,
            max: 1e6,
        },
        flag: Flag::Value("--speed"),
        default: Default::Unset("1.0"),
        shipped: None,
        scope: Scope::Pcap,
        summary: "Replay at this many times the capture's own pace (default: as fast as possible).",
        meaning: "Replay at this many times the capture's own pace (1 is as captured; gaps longer than a second are cut to a second). Unset, frames go as fast as the sensor takes them. Applies only when the input is `pcap`.",
    },
    // [sensor]
    Key {
        section: "sensor",
        name: "workers",
        ty: Type::Int {
            min: 1,
            max: MAX_WORKERS as i64,
        },
        flag: Flag::Value("--workers"),
        default: Default::Value("1"),
        shipped: None,
        scope: Scope::Always,
        summary: "Workers, each on its own thread with its own connections, rings and shared memory.",
        meaning: "Workers, each on its own thread with its own connection table, stream chunks and shared-memory regions. Frames are spread over them by a symmetric hash of their connection, so both directions of a connection reach the same worker, and results do not depend on the number of workers. `tracking.max_flows` and `tracking.stream_chunks` are shared out among them.",
    },
    Key {
        section: "sensor",
        name: "mode",
        ty: Type::Choice(MODE_NAMES),
        flag: Flag::Choices(MODES),
        default: Default::Value("\"auto\""),
        shipped: None,
        scope: Scope::Publishing,
        summary: "\"lossless\" waits for slow analyzers, \"lossy\" drops their events; \"auto\": lossless for a capture file, lossy live.",
        meaning: "Whether the sensor waits for slow analyzers. `lossless` waits instead of dropping their events, whatever the input (a live input that waits loses frames at the NIC or socket instead, counted as capture drops); `lossy` never waits: when an analyzer's event ring is full its event is dropped and counted. `auto` is lossless for a capture file and lossy for a live input. Applies only when the sensor publishes.",
    },
    Key {
        section: "sensor",
        name: "stall_timeout",
        ty: TIMEOUT,
        flag: Flag::Value("--stall-timeout"),
        default: Default::Value("10.0"),
        shipped: None,
        scope: Scope::Always,
        summary: "Detach an analyzer that makes no progress for this many seconds while the sensor waits for it.",
        meaning: "In lossless mode, an analyzer that makes no progress for this many seconds while the sensor waits for it is detached.",
    },
    Key {
        section: "sensor",
        name: "memcap",
        ty: Type::Size,
        flag: Flag::Value("--memcap"),
        default: Default::Unset("\"8G\""),
        shipped: None,
        scope: Scope::Always,
        summary: "The most memory the sensor may use: bytes, or a string such as \"8G\" (default: the machine's memory).",
        meaning: "The most memory the sensor may use: an integer number of bytes, or a string with a K, M, G or T suffix (powers of 1024) such as `\"8G\"`. At start the sensor adds up what its settings can make it allocate (connections, rings, shared memory, packet log, analyzers' event rings, buffers) and refuses, naming the setting to lower, a configuration that does not fit; every structure is bounded by those settings, so at run time it stays within. Unset, the cap is the machine's memory.",
    },
    Key {
        section: "sensor",
        name: "hugepages",
        ty: Type::Choice(HUGEPAGES),
        flag: Flag::Value("--hugepages"),
        default: Default::Value("\"auto\""),
        shipped: None,
        scope: Scope::Always,
        summary: "Back the shared memory with 2 MiB hugepages: \"auto\", \"off\" or \"require\".",
        meaning: "Whether the shared memory is backed by 2 MiB hugepages: `auto` uses them when the host has enough free and says which it chose, `off` never does, `require` fails when they cannot be had.",
    },
    Key {
        section: "sensor",
        name: "quiet",
        ty: Type::Bool,
        flag: Flag::Switch("--quiet", true),
        default: Default::Value("false"),
        shipped: None,
        scope: Scope::Always,
        summary: "Print no progress line and no summary.",
        meaning: "Print no progress line, no summary and no note of the configuration file read; errors are still printed.",
    },
    // [tracking]
    Key {
        section: "tracking",
        name: "max_flows",
        ty: Type::Int {
            min: 1,
            max: U32_HALF,
        },
        flag: Flag::Value("--max-flows"),
        default: Default::Value("1048576"),
        shipped: None,
        scope: Scope::Always,
        summary: "Most connections tracked at once; beyond it the least recently active is evicted.",
        meaning: "Most connections tracked at once (in all, shared out among the workers, at least one each); beyond it the least recently active is evicted (CONN_END with reason evicted, counted).",
    },
    Key {
        section: "tracking",
        name: "stream_chunks",
        ty: Type::Int {
            min: 18,
            max: U32_HALF,
        },
        flag: Flag::Value("--stream-chunks"),
        default: Default::Value("6144"),
        shipped: None,
        scope: Scope::Always,
        summary: "Chunks in the stream-buffer pool (in all); the pool bounds the memory streams take.",
        meaning: "Chunks of `tracking.chunk_kib` in the stream-buffer pool, in all (shared out among the workers, at least 18 each). Each side of a connection holds its bytes in chunks taken as the stream needs them and given back as they are released. When the pool runs empty the sensor takes back the in-order history of the least recently active sides (never their out-of-order bytes; in lossless mode only what every analyzer has passed, else it waits for them), counted as `reclaimed`; bytes that still find no chunk are dropped and counted as `pool_empty`. The default, 192 MiB, fits with the rest of the default configuration in the 256 hugepages of 2 MiB that `scripts/setup.sh` reserves.",
    },
    Key {
        section: "tracking",
        name: "chunk_kib",
        ty: Type::PowerOfTwo { min: 4, max: 1024 },
        flag: Flag::Value("--chunk-kib"),
        default: Default::Value("32"),
        shipped: None,
        scope: Scope::Always,
        summary: "Size of one stream chunk in KiB (a power of two).",
        meaning: "Size of one stream chunk in KiB, a power of two from 4 to 1024. A side carrying a few bytes holds one chunk; smaller chunks waste less on short connections, larger ones take fewer map entries per side.",
    },
    Key {
        section: "tracking",
        name: "stream_max_kib",
        ty: Type::PowerOfTwo {
            min: 8,
            max: 1 << 20,
        },
        flag: Flag::Value("--stream-max-kib"),
        default: Default::Value("16384"),
        shipped: None,
        scope: Scope::Always,
        summary: "The most one side of a connection holds, in KiB (a power of two).",
        meaning: "The most one side of a connection holds, from its oldest held byte to its furthest out-of-order byte, in KiB: a power of two, at least twice `tracking.chunk_kib` (a segment that crosses a chunk boundary holds two chunks). It must cover what a sender can have in flight beyond a lost segment (the receiver's window: Linux grows it to 6 MiB by default); a segment beyond it forces the side's oldest bytes out (lost to overflow). Each side's chunk map takes 4 bytes per chunk of this span in the shared memory.",
    },
    Key {
        section: "tracking",
        name: "history_kib",
        ty: Type::Int {
            min: 0,
            max: 1 << 20,
        },
        flag: Flag::Value("--history-kib"),
        default: Default::Value("256"),
        shipped: None,
        scope: Scope::Always,
        summary: "In-order bytes each side keeps behind its newest byte for analyzers that read late, in KiB.",
        meaning: "In-order bytes each side keeps behind its newest in-order byte for analyzers that read late, in KiB, while the pool has chunks to spare (an empty pool takes them back, least recently active sides first). In lossless mode bytes stay, beyond this, until every analyzer has passed the events that announced them.",
    },
    Key {
        section: "tracking",
        name: "idle_timeout",
        ty: Type::Int {
            min: 1,
            max: 30 * DAY,
        },
        flag: Flag::Value("--idle-timeout"),
        default: Default::Value("3600"),
        shipped: None,
        scope: Scope::Always,
        summary: "A connection idle this many seconds (capture time) ends with a timeout.",
        meaning: "A connection idle this many whole seconds, in capture time, ends with a timeout.",
    },
    Key {
        section: "tracking",
        name: "overlap",
        ty: Type::Choice(OVERLAP_POLICIES),
        flag: Flag::Value("--overlap"),
        default: Default::Value("\"first\""),
        shipped: None,
        scope: Scope::Always,
        summary: "Which copy of a byte stays when a segment overlaps held out-of-order data.",
        meaning: "Which copy of a byte stays when a segment overlaps out-of-order data already held: `first` (the held copy stays), `last` (the new copy wins), `linux` (the new copy wins where it starts before the held data, or at the same byte and ends after it), `bsd` (the new copy wins where it starts before the held data) or `windows` (the bsd rule). Bytes already in order are never rewritten, and a copy whose bytes differ raises an ERROR event whichever wins. The rules are in docs/REASSEMBLY.md.",
    },
    Key {
        section: "tracking",
        name: "midstream",
        ty: Type::Bool,
        flag: Flag::Switch("--no-midstream", false),
        default: Default::Value("true"),
        shipped: None,
        scope: Scope::Always,
        summary: "Track connections whose handshake was not captured.",
        meaning: "Track connections whose handshake was not captured. With `false`, their packets become orphans.",
    },
    Key {
        section: "tracking",
        name: "checksums",
        ty: Type::Choice(CHECKSUM_NAMES),
        flag: Flag::Choices(CHECKSUMS),
        default: Default::Value("\"count\""),
        shipped: None,
        scope: Scope::Always,
        summary: "TCP checksums: \"count\" bad ones and keep them, \"drop\" them, or \"ignore\" (no check).",
        meaning: "What is done with TCP checksums. `count` verifies them and counts bad ones but keeps the segments, since captures taken on the sending host often hold checksums the NIC would have filled in; `drop` drops segments whose checksum is wrong before they reach the connection tracker, as the receiving host would (counted; their bytes become a gap unless a retransmission brings them); `ignore` does not verify them. On a loopback device captured with `--iface` they are never verified, whatever this says: the kernel leaves them to a checksum offload that never runs there.",
    },
    // [fragments]
    Key {
        section: "fragments",
        name: "memory_mib",
        ty: Type::Int {
            min: 0,
            max: 1 << 20,
        },
        flag: Flag::Value("--frag-memory"),
        default: Default::Value("32"),
        shipped: None,
        scope: Scope::Always,
        summary: "Memory for IP fragments awaiting reassembly, in MiB; 0 turns reassembly off.",
        meaning: "Memory for IP fragments awaiting reassembly, in MiB (per worker for a live capture; a multi-worker replay reassembles in its reader thread). When it is full, the oldest incomplete datagram is dropped. 0 turns reassembly off (fragments count as other IP).",
    },
    Key {
        section: "fragments",
        name: "timeout",
        ty: Type::Int { min: 1, max: DAY },
        flag: Flag::Value("--frag-timeout"),
        default: Default::Value("30"),
        shipped: None,
        scope: Scope::Always,
        summary: "Drop an IP datagram whose fragments are not all in this many seconds after its first.",
        meaning: "An IP datagram whose fragments are not all in this many whole seconds (capture time) after its first is dropped.",
    },
    Key {
        section: "fragments",
        name: "datagrams",
        ty: Type::Int {
            min: 1,
            max: 1 << 24,
        },
        flag: Flag::Value("--frag-datagrams"),
        default: Default::Value("4096"),
        shipped: None,
        scope: Scope::Always,
        summary: "Most IP datagrams being reassembled at once; beyond it the oldest is dropped.",
        meaning: "Most IP datagrams being reassembled at once (per defragmenter, like `fragments.memory_mib`); beyond it the oldest is dropped.",
    },
    // [publish]
    Key {
        section: "publish",
        name: "enabled",
        ty: Type::Bool,
        flag: Flag::Switch("--no-publish", false),
        default: Default::Value("true"),
        shipped: None,
        scope: Scope::PublishSwitch,
        summary: "Publish to analyzers; false: no shared memory, no control socket.",
        meaning: "Publish to analyzers. With `false` there is no shared memory and no control socket (with `output.dump`, the sensor alone writes the streams), and `sensor.mode` and `publish.wait_analyzers` are ignored. Ignored itself when the command line gives `--lossy`, `--lossless` or `--wait-analyzers`, which need publishing.",
    },
    Key {
        section: "publish",
        name: "event_ring",
        ty: Type::PowerOfTwo {
            min: 2,
            max: 1 << 24,
        },
        flag: Flag::Value("--event-ring"),
        default: Default::Value("65536"),
        shipped: None,
        scope: Scope::Always,
        summary: "Event records in each analyzer's ring (a power of two).",
        meaning: "Event records in each analyzer's ring (per worker), a power of two.",
    },
    Key {
        section: "publish",
        name: "pktlog_frames",
        ty: Type::Int {
            min: 1,
            max: u32::MAX as i64,
        },
        flag: Flag::Value("--pktlog-frames"),
        default: Default::Value("65536"),
        shipped: None,
        scope: Scope::Always,
        summary: "Frames kept in the packet log for getlastpkt.",
        meaning: "Frames kept in each worker's packet log for getlastpkt (the log is used only while an analyzer asks for packets).",
    },
    Key {
        section: "publish",
        name: "pktlog_kib",
        ty: Type::Int {
            min: 1,
            max: u32::MAX as i64,
        },
        flag: Flag::Value("--pktlog-kib"),
        default: Default::Value("32768"),
        shipped: None,
        scope: Scope::Always,
        summary: "Bytes of frames kept in the packet log, in KiB.",
        meaning: "Bytes of frames kept in each worker's packet log, in KiB.",
    },
    Key {
        section: "publish",
        name: "max_analyzers",
        ty: Type::Int {
            min: 1,
            max: 1 << 16,
        },
        flag: Flag::Value("--max-analyzers"),
        default: Default::Value("64"),
        shipped: None,
        scope: Scope::Always,
        summary: "Most analyzers attached at once.",
        meaning: "Most analyzers attached at once; each has an event ring per worker in the shared memory.",
    },
    Key {
        section: "publish",
        name: "wait_analyzers",
        ty: Type::Int {
            min: 0,
            max: 1 << 16,
        },
        flag: Flag::Value("--wait-analyzers"),
        default: Default::Value("0"),
        shipped: None,
        scope: Scope::Publishing,
        summary: "Hold the input until this many analyzers are attached and ready.",
        meaning: "Hold the input until this many analyzers are attached and ready (0: start at once). Applies only when the sensor publishes.",
    },
    // [control]
    Key {
        section: "control",
        name: "socket",
        ty: Type::Path,
        flag: Flag::Value("--control"),
        default: Default::Value("\"/run/mos/control.sock\""),
        shipped: Some("\"/run/mos/control.sock\""),
        scope: Scope::Always,
        summary: "The control socket where analyzers attach.",
        meaning: "The control socket where analyzers attach, created mode 0660 (its directory is created if missing).",
    },
    Key {
        section: "control",
        name: "allow_users",
        ty: Type::Users,
        flag: Flag::Repeat("--allow-user"),
        default: Default::Value("[]"),
        shipped: None,
        scope: Scope::Always,
        summary: "Users allowed to attach, by name or uid (root and the sensor's own user always are).",
        meaning: "Users allowed to attach, by name or uid; root and the sensor's own user always are. Without `allow_groups`, the control socket is given to the first one's primary group, so that it can connect. Each must be a number or a user in /etc/passwd.",
    },
    Key {
        section: "control",
        name: "allow_groups",
        ty: Type::Groups,
        flag: Flag::Repeat("--allow-group"),
        default: Default::Value("[]"),
        shipped: Some("[\"mos\"]"),
        scope: Scope::Always,
        summary: "Groups whose members may attach, by name or gid; the control socket is given to the first.",
        meaning: "Groups whose members may attach, by name or gid; the control socket is given to the first. Each must be a number or a group in /etc/group.",
    },
    Key {
        section: "control",
        name: "max_pending",
        ty: Type::Int {
            min: 1,
            max: 1 << 16,
        },
        flag: Flag::Value("--max-pending"),
        default: Default::Value("64"),
        shipped: None,
        scope: Scope::Always,
        summary: "Most connections to the control socket that have not said hello yet.",
        meaning: "Most connections to the control socket that have not said hello yet (analyzers attaching, `mos-ctl` asking). Past it, the oldest connection of the user holding the most is closed to make room, so one user's idle connections cannot lock others out.",
    },
    Key {
        section: "control",
        name: "hello_timeout",
        ty: Type::Seconds {
            min: 0.01,
            max: 3600.0,
        },
        flag: Flag::Value("--hello-timeout"),
        default: Default::Value("2.0"),
        shipped: None,
        scope: Scope::Always,
        summary: "Close a connection that has not said hello within this many seconds.",
        meaning: "A connection to the control socket that has not said hello (or asked for the status) within this many seconds is closed.",
    },
    // [output]
    Key {
        section: "output",
        name: "dump",
        ty: Type::Path,
        flag: Flag::Value("--dump"),
        default: Default::Unset("\"/var/lib/mos/streams\""),
        shipped: None,
        scope: Scope::Always,
        summary: "Write each connection's streams and flows.jsonl into this directory.",
        meaning: "Write each connection's two streams and an index, `flows.jsonl`, into this directory (created if missing). Bytes the receiver acknowledged but the capture never held, and bytes cut by the snap length, are written as zeros (holes in sparse files) and counted as lost.",
    },
];

/// The key of this section and name.
pub fn key(section: &str, name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.section == section && k.name == name)
}

/// A checked value, before it becomes command-line arguments.
#[derive(Clone, Debug, PartialEq)]
pub enum Checked {
    /// One value, as the flag takes it.
    One(String),
    /// A boolean.
    Bool(bool),
    /// Several values (one flag each).
    List(Vec<String>),
}

/// A number (integer or decimal), or why not.
fn number(v: &Value) -> Result<f64, String> {
    match v {
        Value::Integer(i) => Ok(*i.value() as f64),
        Value::Float(f) => Ok(*f.value()),
        _ => Err(format!("expected a number, found {}", kind(v))),
    }
}

/// What a value is, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a decimal number",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "a table",
    }
}

/// A value as written, for messages (strings and numbers; other values by their kind).
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{:?}", s.value()),
        Value::Integer(i) => i.value().to_string(),
        // `1e300` as written, not its 301 digits.
        Value::Float(f) => format!("{:?}", f.value()),
        Value::Boolean(b) => b.value().to_string(),
        other => kind(other).to_owned(),
    }
}

fn string(v: &Value) -> Result<&str, String> {
    match v.as_str() {
        Some("") => Err("must not be empty".into()),
        Some(s) => Ok(s),
        None => Err(format!("expected a string, found {}", kind(v))),
    }
}

/// CPU numbers from a list such as `2,3` or a range such as `2-5` (the `--cpus` syntax): each
/// below [`rustix::thread::CpuSet::MAX_CPU`], and no more of them than that in all (a list is
/// read one CPU per worker, so a longer one means nothing, and a range is checked before it is
/// spread out, so that `0-99999999999` costs nothing).
pub fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    let limit = rustix::thread::CpuSet::MAX_CPU;
    let mut out = Vec::new();
    for part in s.split(',') {
        let bad = || format!("{part:?} is not a CPU number or range (such as 3 or 2-5)");
        let (a, b): (usize, usize) = match part.split_once('-') {
            Some((a, b)) => (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            ),
            None => {
                let a = part.trim().parse().map_err(|_| bad())?;
                (a, a)
            }
        };
        if a > b {
            return Err(bad());
        }
        if b >= limit {
            return Err(format!("CPU numbers must be below {limit}, not {b}"));
        }
        if out.len() + (b - a + 1) > limit {
            return Err(format!("the list names more than {limit} CPUs"));
        }
        out.extend(a..=b);
    }
    Ok(out)
}

/// The names or numbers of an array of users or groups.
fn names(v: &Value, what: &str) -> Result<Vec<String>, String> {
    let Some(a) = v.as_array() else {
        return Err(format!(
            "expected an array of {what} names or numbers, found {}",
            kind(v)
        ));
    };
    let mut out = Vec::new();
    for e in a.iter() {
        match e {
            Value::Integer(i) if (0..=u32::MAX as i64).contains(i.value()) => {
                out.push(i.value().to_string())
            }
            Value::String(s)
                if !s.value().is_empty()
                    && !s.value().contains(|c: char| c == ':' || c.is_whitespace()) =>
            {
                out.push(s.value().clone())
            }
            other => return Err(format!("{} is not a {what} name or number", show(other))),
        }
    }
    Ok(out)
}

impl Type {
    /// Checks a value against the type and range, and returns it as the flag takes it.
    pub fn check(&self, v: &Value) -> Result<Checked, String> {
        match *self {
            Type::Text | Type::Path => string(v).map(|s| Checked::One(s.to_owned())),
            Type::Int { .. } | Type::PowerOfTwo { .. } => {
                let Some(&n) = v.as_integer().as_ref() else {
                    return Err(format!("expected an integer, found {}", kind(v)));
                };
                self.within_int(n).map_err(|m| format!("{m}, not {n}"))?;
                Ok(Checked::One(n.to_string()))
            }
            Type::Seconds { .. } | Type::Factor { .. } => {
                let x = number(v)?;
                self.within(x)
                    .map_err(|m| format!("{m}, not {}", show(v)))?;
                Ok(Checked::One(x.to_string()))
            }
            Type::Bool => v
                .as_bool()
                .map(Checked::Bool)
                .ok_or_else(|| format!("expected true or false, found {}", kind(v))),
            Type::Choice(choices) => {
                let Some(s) = v.as_str() else {
                    return Err(format!(
                        "expected a string (one of {}), found {}",
                        quoted(choices),
                        kind(v)
                    ));
                };
                if choices.contains(&s) {
                    Ok(Checked::One(s.to_owned()))
                } else {
                    Err(format!("{s:?} is not one of {}", quoted(choices)))
                }
            }
            Type::Size => {
                let n = match v {
                    Value::Integer(i) => u64::try_from(*i.value())
                        .map_err(|_| format!("must be positive, not {}", i.value()))?,
                    Value::String(s) => parse_size(s.value())?,
                    _ => {
                        return Err(format!(
                            "expected a size (an integer, or a string such as \"8G\"), found {}",
                            kind(v)
                        ))
                    }
                };
                if n == 0 {
                    return Err("must be more than 0 bytes".into());
                }
                Ok(Checked::One(n.to_string()))
            }
            Type::Cpus => {
                let text = match v {
                    Value::String(s) => s.value().clone(),
                    Value::Array(a) => {
                        let mut parts = Vec::new();
                        for e in a.iter() {
                            match e.as_integer() {
                                Some(n) if n >= 0 => parts.push(n.to_string()),
                                _ => return Err(format!("{} is not a CPU number", show(e))),
                            }
                        }
                        parts.join(",")
                    }
                    _ => {
                        return Err(format!(
                        "expected a string such as \"2-5\" or an array of CPU numbers, found {}",
                        kind(v)
                    ))
                    }
                };
                parse_cpus(&text)?;
                Ok(Checked::One(text))
            }
            Type::Users => names(v, "user").map(Checked::List),
            Type::Groups => names(v, "group").map(Checked::List),
        }
    }

    /// Checks the value of the flag the key stands for, as given on the command line, against
    /// the type and range, and returns it as the flag's own parser takes it (`Err`: what the
    /// value must be, one line). Types whose flags parse their values themselves (strings,
    /// paths, choices) pass through.
    pub fn check_arg(&self, s: &str) -> Result<String, String> {
        match *self {
            Type::Int { .. } | Type::PowerOfTwo { .. } => {
                let n: i64 = s.parse().map_err(|_| {
                    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
                    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                        // Digits that do not fit in 64 bits are out of every range here.
                        format!("must be {}", self.range())
                    } else {
                        format!("expected an integer ({})", self.range())
                    }
                })?;
                self.within_int(n)?;
                Ok(n.to_string())
            }
            Type::Seconds { .. } | Type::Factor { .. } => {
                let x: f64 = s
                    .parse()
                    .map_err(|_| format!("expected a number ({})", self.range()))?;
                self.within(x)?;
                Ok(x.to_string())
            }
            Type::Size => match parse_size(s)? {
                0 => Err("must be more than 0 bytes".into()),
                n => Ok(n.to_string()),
            },
            Type::Cpus => parse_cpus(s).map(|_| s.to_owned()),
            _ => Ok(s.to_owned()),
        }
    }

    /// `Err` saying what an integer must be when it is outside the type's range; `Ok` for a
    /// type without an integer range.
    fn within_int(&self, n: i64) -> Result<(), String> {
        let inside = match *self {
            Type::Int { min, max } => (min..=max).contains(&n),
            Type::PowerOfTwo { min, max } => (min..=max).contains(&n) && n.count_ones() == 1,
            _ => true,
        };
        if inside {
            Ok(())
        } else {
            Err(format!("must be {}", self.range()))
        }
    }

    /// `Err` saying what a number must be when it is outside the type's range (NaN and the
    /// infinities are outside every range); `Ok` for a type without a decimal range.
    fn within(&self, x: f64) -> Result<(), String> {
        let inside = match *self {
            Type::Seconds { min, max } | Type::Factor { min, max } => (min..=max).contains(&x),
            _ => true,
        };
        if inside {
            Ok(())
        } else {
            Err(format!("must be {}", self.range()))
        }
    }

    /// The range of a numeric type in words (`between 1 and 32`).
    fn range(&self) -> String {
        match *self {
            Type::Int { min, max } => format!("between {min} and {max}"),
            Type::PowerOfTwo { min, max } => format!("a power of two between {min} and {max}"),
            Type::Seconds { min, max } => format!("between {min} and {max} seconds"),
            Type::Factor { min, max } => format!("between {min} and {max}"),
            _ => String::new(),
        }
    }

    /// The type and range in words, for `docs/CONFIG.md`.
    pub fn describe(&self) -> String {
        match *self {
            Type::Text => "string".into(),
            Type::Path => "string (a path)".into(),
            Type::Int { min, max } => format!("integer, {min} to {max}"),
            Type::PowerOfTwo { min, max } => format!("integer, a power of two from {min} to {max}"),
            Type::Seconds { min, max } => format!("number of seconds, {min} to {max}"),
            Type::Factor { min, max } => format!("number, {min} to {max}"),
            Type::Bool => "boolean".into(),
            Type::Choice(c) => format!("one of {}", quoted(c)),
            Type::Size => {
                "size: bytes as an integer, or a string such as \"512M\" or \"8G\"".into()
            }
            Type::Cpus => {
                "CPU list: a string such as \"2,3\" or \"2-5\", or an array of integers".into()
            }
            Type::Users => "array of user names or uids".into(),
            Type::Groups => "array of group names or gids".into(),
        }
    }
}

fn quoted(choices: &[&str]) -> String {
    let q: Vec<String> = choices.iter().map(|c| format!("{c:?}")).collect();
    q.join(", ")
}

/// A user or group given by name or number: its id, looked up in `db` (`/etc/passwd` or
/// `/etc/group`) for a name.
pub fn resolve_id(what: &str, v: &str, db: &str) -> Result<u32, String> {
    if let Ok(n) = v.parse::<u32>() {
        return Ok(n);
    }
    let text = std::fs::read_to_string(db).map_err(|e| format!("cannot read {db}: {e}"))?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?.parse().ok()?;
            (name == v).then_some(id)
        })
        .next()
        .ok_or_else(|| format!("no {what} named {v:?} in {db}"))
}

/// An error in a configuration file: one line, `FILE:LINE: KEY: what is wrong`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The line (from 1), where the error has one.
    pub line: Option<usize>,
    /// What is wrong, starting with the key (`section.key: ...`) where there is one.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// One setting of a file.
#[derive(Clone, Debug)]
pub struct Setting {
    /// Its key.
    pub key: &'static Key,
    /// Its value.
    pub value: Checked,
    /// The line it is on.
    pub line: usize,
}

impl Setting {
    /// The command-line arguments it stands for.
    pub fn args(&self) -> Vec<String> {
        match (self.key.flag, &self.value) {
            (Flag::Value(f), Checked::One(v)) => vec![format!("{f}={v}")],
            (Flag::Switch(f, when), Checked::Bool(b)) => {
                if *b == when {
                    vec![f.to_owned()]
                } else {
                    Vec::new()
                }
            }
            (Flag::Choices(c), Checked::One(v)) => c
                .iter()
                .find(|(name, _)| name == v)
                .and_then(|(_, f)| *f)
                .map(|f| vec![f.to_owned()])
                .unwrap_or_default(),
            (Flag::Repeat(f), Checked::List(l)) => l.iter().map(|v| format!("{f}={v}")).collect(),
            // The key's type decides its value's shape; the table pairs them (tested).
            _ => Vec::new(),
        }
    }
}

/// A parsed, checked configuration file.
#[derive(Clone, Debug)]
pub struct ConfigFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its settings, in the file's order.
    pub settings: Vec<Setting>,
}

/// The line (from 1) of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The largest configuration file the sensor reads. Every key of the table with a comment
/// fits in a few KiB; the bound keeps `/dev/zero`, a device or a runaway file from filling
/// memory.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads and checks a configuration file (at most [`MAX_FILE_BYTES`]).
pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
    use std::io::Read as _;
    let err = |message: String| ConfigError {
        file: path.to_owned(),
        line: None,
        message,
    };
    let cannot = |e: std::io::Error| err(format!("cannot read the configuration file: {e}"));
    let file = std::fs::File::open(path).map_err(cannot)?;
    // One byte past the bound tells a file that is too large from one that fits exactly,
    // without reading more of a file that never ends.
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(err(format!(
            "the configuration file is larger than {} MiB ({MAX_FILE_BYTES} bytes), the most the sensor reads",
            MAX_FILE_BYTES >> 20
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        err(format!(
            "cannot read the configuration file: not UTF-8 text (invalid at byte offset {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    parse(path, &text)
}

/// The section header in force at a byte offset (for a duplicate key, which the TOML parser
/// reports by position only).
fn section_at(text: &str, offset: usize) -> Option<String> {
    let before = &text[..offset.min(text.len())];
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    before[..start].lines().rev().find_map(|l| {
        let t = l.trim();
        (t.starts_with('[') && !t.starts_with("[["))
            .then(|| t.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
    })
}

/// Checks a configuration file's text (`path` names it in errors).
pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
    let err = |line: Option<usize>, message: String| ConfigError {
        file: path.to_owned(),
        line,
        message,
    };
    let doc = Document::parse(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let line = line_of(text, span.start);
        let what = e.message().lines().next().unwrap_or("").trim().to_owned();
        if what.starts_with("duplicate key") {
            let name = text
                .get(span.clone())
                .unwrap_or("")
                .trim_matches(|c| c == '"' || c == '\'')
                .to_owned();
            let line_text = text[text[..span.start].rfind('\n').map_or(0, |i| i + 1)..]
                .lines()
                .next()
                .unwrap_or("");
            if line_text.trim_start().starts_with('[') {
                err(Some(line), format!("{name}: section given twice"))
            } else {
                let full = match section_at(text, span.start) {
                    Some(s) => format!("{s}.{name}"),
                    None => name,
                };
                err(Some(line), format!("{full}: set twice"))
            }
        } else {
            err(Some(line), format!("syntax error (not valid TOML): {what}"))
        }
    })?;
    let line_at = |span: Option<std::ops::Range<usize>>| span.map(|s| line_of(text, s.start));
    let root = doc.as_table();
    let mut settings = Vec::new();
    for (sname, item) in root.iter() {
        let sline =
            line_at(root.key(sname).and_then(|k| k.span())).or_else(|| line_at(item.span()));
        let removed_section = REMOVED.iter().any(|r| r.section == sname);
        if !SECTIONS.iter().any(|(s, _)| *s == sname) && !removed_section {
            let owner: Vec<&str> = KEYS
                .iter()
                .filter(|k| k.name == sname)
                .map(|k| k.section)
                .collect();
            return Err(err(
                sline,
                match owner.first() {
                    Some(s) => format!("{sname}: not in a section; it belongs under [{s}]"),
                    None => format!(
                        "{sname}: unknown section (the sections are {})",
                        SECTIONS
                            .iter()
                            .map(|(s, _)| *s)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                },
            ));
        }
        let Some(table) = item.as_table_like() else {
            return Err(err(
                sline,
                format!("{sname}: must be a section ([{sname}]), not a value or an array"),
            ));
        };
        for (kname, kitem) in table.iter() {
            let full = format!("{sname}.{kname}");
            let kline = line_at(table.key(kname).and_then(|k| k.span()))
                .or_else(|| line_at(kitem.span()))
                .or(sline);
            let Some(k) = key(sname, kname) else {
                if let Some(r) = REMOVED
                    .iter()
                    .find(|r| r.section == sname && r.name == kname)
                {
                    return Err(err(kline, format!("{full}: was removed: {}", r.instead)));
                }
                if !SECTIONS.iter().any(|(s, _)| *s == sname) {
                    return Err(err(
                        kline,
                        format!("{full}: unknown key (the keys of [{sname}] were removed)"),
                    ));
                }
                let names: Vec<&str> = KEYS
                    .iter()
                    .filter(|k| k.section == sname)
                    .map(|k| k.name)
                    .collect();
                return Err(err(
                    kline,
                    format!(
                        "{full}: unknown key (the keys of [{sname}] are {})",
                        names.join(", ")
                    ),
                ));
            };
            let Some(v) = kitem.as_value() else {
                return Err(err(
                    kline,
                    format!("{full}: expected a value, found a table"),
                ));
            };
            let value =
                k.ty.check(v)
                    .map_err(|m| err(kline, format!("{full}: {m}")))?;
            settings.push(Setting {
                key: k,
                value,
                line: kline.unwrap_or(1),
            });
        }
    }
    let file = ConfigFile {
        path: path.to_owned(),
        settings,
    };
    let inputs: Vec<&Setting> = file.inputs().collect();
    if let [first, second, ..] = inputs.as_slice() {
        return Err(err(
            Some(second.line),
            format!(
                "{}: set only one of input.pcap, input.dpdk and input.iface ({} is set on line {})",
                second.key.path(),
                first.key.path(),
                first.line
            ),
        ));
    }
    Ok(file)
}

/// The input a command line names, given which parser ids it gave.
fn cli_input(given: &dyn Fn(&str) -> bool) -> Option<&'static str> {
    ["pcap", "dpdk", "iface"].into_iter().find(|id| given(id))
}

impl ConfigFile {
    /// The settings that choose an input (`input.pcap`, `input.dpdk`, `input.iface`).
    fn inputs(&self) -> impl Iterator<Item = &Setting> {
        self.settings.iter().filter(|s| s.key.scope == Scope::Input)
    }

    /// The file's setting of this key, if any.
    pub fn get(&self, section: &str, name: &str) -> Option<&Setting> {
        self.settings
            .iter()
            .find(|s| s.key.section == section && s.key.name == name)
    }

    /// Whether the file names an input.
    pub fn has_input(&self) -> bool {
        self.inputs().next().is_some()
    }

    /// The settings that apply under a command line (`given`: whether the command line gave
    /// the flag of this parser id): those whose flags the command line did not give and
    /// that apply to the input in use. Users and groups are looked up here, for the settings
    /// in effect only.
    pub fn effective(&self, given: &dyn Fn(&str) -> bool) -> Result<Vec<&Setting>, ConfigError> {
        let input = cli_input(given).or_else(|| self.inputs().next().map(|s| s.key.name));
        let live = matches!(input, Some("dpdk" | "iface"));
        let publish_flag_given = KEYS
            .iter()
            .filter(|k| k.scope == Scope::Publishing)
            .flat_map(|k| k.flag.ids())
            .any(|id| given(&id));
        let no_publish = given("no_publish")
            || (!publish_flag_given
                && self.get("publish", "enabled").map(|s| &s.value) == Some(&Checked::Bool(false)));
        let mut out = Vec::new();
        for s in &self.settings {
            if s.key.flag.ids().iter().any(|id| given(id)) {
                continue;
            }
            let applies = match s.key.scope {
                Scope::Always => true,
                Scope::Input => cli_input(given).is_none(),
                Scope::Dpdk => input == Some("dpdk"),
                Scope::Pcap => input == Some("pcap"),
                Scope::Live => live,
                Scope::Publishing => !no_publish,
                Scope::PublishSwitch => !publish_flag_given,
            };
            if !applies {
                continue;
            }
            if let Checked::List(names) = &s.value {
                let (what, db) = match s.key.ty {
                    Type::Users => ("user", "/etc/passwd"),
                    _ => ("group", "/etc/group"),
                };
                for n in names {
                    resolve_id(what, n, db).map_err(|m| ConfigError {
                        file: self.path.clone(),
                        line: Some(s.line),
                        message: format!("{}: {m}", s.key.path()),
                    })?;
                }
            }
            out.push(s);
        }
        Ok(out)
    }

    /// The command-line arguments that stand for the settings in effect under a command line
    /// ([`ConfigFile::effective`]), to be placed after its own.
    pub fn args(&self, given: &dyn Fn(&str) -> bool) -> Result<Vec<String>, ConfigError> {
        Ok(self
            .effective(given)?
            .iter()
            .flat_map(|s| s.args())
            .collect())
    }
}

/// The shipped configuration file, `deploy/sensor.toml` (what `--print-config` prints).
pub fn default_file() -> String {
    let mut out = String::new();
    out.push_str(
        "# mos-sensor configuration (read from /etc/mos/sensor.toml, or the file --config names).\n\
         #\n\
         # Generated from the sensor's table of keys: `mos-sensor --print-config` prints this\n\
         # file, and docs/CONFIG.md describes every key. A key commented out shows its default\n\
         # (or, for a key unset by default, an example). A flag on the command line overrides\n\
         # the key that stands for it.\n",
    );
    for (section, about) in SECTIONS {
        out.push_str(&format!("\n# {about}\n[{section}]\n"));
        if *section == "input" {
            out.push_str(
                "# Set exactly one of pcap, dpdk or iface here, or give --pcap, --dpdk or --iface\n\
                 # on the command line (which overrides the whole choice made here).\n",
            );
        }
        for k in KEYS.iter().filter(|k| k.section == *section) {
            let mut summary = k.summary.to_owned();
            if let Default::Unset(_) = k.default {
                if !summary.contains("(default") {
                    summary.push_str(" Unset by default.");
                }
            }
            out.push_str(&format!("# {summary}\n"));
            match (k.shipped, k.default) {
                (Some(v), _) => out.push_str(&format!("{} = {v}\n", k.name)),
                (None, Default::Value(v) | Default::Unset(v)) => {
                    out.push_str(&format!("#{} = {v}\n", k.name))
                }
            }
        }
    }
    out
}

/// The flags a key stands for, for `docs/CONFIG.md`.
fn flag_doc(k: &Key) -> String {
    match k.flag {
        Flag::Value(f) => format!("`{f}`"),
        Flag::Switch(f, true) => format!("`{f}` (`true`)"),
        Flag::Switch(f, false) => format!("`{f}` (`false`)"),
        Flag::Choices(c) => c
            .iter()
            .filter_map(|(name, f)| f.map(|f| format!("`{f}` (`\"{name}\"`)")))
            .collect::<Vec<_>>()
            .join(", "),
        Flag::Repeat(f) => format!("`{f}`, once per element"),
    }
}

/// `docs/CONFIG.md`: every key, its meaning, default and flag, and how the file and the command
/// line combine.
pub fn reference_doc() -> String {
    let mut out = String::new();
    out.push_str(
        "# mos-sensor configuration\n\n\
         <!-- Generated from sensor/src/config.rs (the table KEYS); do not edit by hand. After\n\
         changing the table, regenerate this file and deploy/sensor.toml with\n\
         `MOS_BLESS=1 cargo test -p mos-sensor --lib config::`. -->\n\n\
         `mos-sensor` reads a TOML file that holds everything its command line takes, grouped in\n\
         sections. By default it reads `/etc/mos/sensor.toml` when that file exists (a missing\n\
         file there is not an error); `--config FILE` reads another (which must exist), and\n\
         `--no-config` reads none. The environment variable `MOS_SENSOR_CONFIG` replaces the\n\
         default path (set but empty: no default file; the test suite sets it so). When it reads\n\
         one it says so on standard error: `mos-sensor: configuration from PATH` (not with\n\
         `--quiet`). `SIGHUP` reads the file again (see docs/OPERATIONS.md for what changes at\n\
         once and what waits for a restart).\n\
         `mos-sensor --print-config` prints the default file, `deploy/sensor.toml`: every key,\n\
         commented out with its default, except the control socket and `allow_groups = [\"mos\"]`.\n\n\
         ## Precedence\n\n\
         A flag given on the command line overrides the file, key by key: a key is taken from the\n\
         file only when none of the flags it stands for is on the command line. So `--lossy`\n\
         overrides `mode = \"lossless\"`, `--allow-group` replaces the whole `allow_groups` list,\n\
         and any input on the command line (`--pcap`, `--dpdk` or `--iface`) replaces the file's\n\
         choice of input. The input may come from the file alone; with neither, the sensor says to\n\
         set one of `input.pcap`, `input.dpdk` or `input.iface` or give a flag. Keys that belong\n\
         to another kind of input than the one in use are ignored (`input.port` without a DPDK\n\
         input, `input.speed` without a capture file, `input.stop_after_idle` and `input.count`\n\
         without a live input), and so are `sensor.mode` and `publish.wait_analyzers` when\n\
         publishing is off. Keys the file leaves out take the defaults below, the same as the\n\
         flags'.\n\n\
         The file's values are checked when it is read. An unknown section or key, a value of the\n\
         wrong type or out of range, a key set twice, a user or group that does not exist, or a\n\
         TOML syntax error stops the sensor with one line and exit status 1:\n\n\
         ```\n\
         mos-sensor: error: /etc/mos/sensor.toml:12: tracking.chunk_kib: must be a power of two between 4 and 1024, not 300\n\
         ```\n\n\
         Users and groups are looked up only for the lists in effect (not when the command line\n\
         replaces them). A file larger than 1 MiB is refused unread (so is anything that never\n\
         ends, such as `/dev/zero`), and so is one that is not UTF-8 text.\n\n\
         Each key's type and range below holds for its flag too: a value on the command line\n\
         that is not a number of that type or is outside its range (NaN, infinite, too small,\n\
         too large) stops the sensor with one line naming the flag, the value and the range, and\n\
         exit status 1, like the file's:\n\n\
         ```\n\
         mos-sensor: error: invalid value '1e300' for '--stall-timeout <SECONDS>': must be between 0.001 and 86400 seconds\n\
         ```\n\n\
         Settings that bound one another are checked next (`--max-flows` at least one\n\
         per worker, `--stream-chunks` at least 18 per worker, `--stream-max-kib` at least\n\
         twice `--chunk-kib`, `--wait-analyzers` at most `--max-analyzers`), then the memory\n\
         they add up to against `--memcap`, which names the setting to lower.\n",
    );
    out.push_str(
        "\n## Keys and flags\n\nA boolean or a choice stands for a flag given when it has the value \
         shown beside the flag.\n\n| key | flag |\n| --- | --- |\n",
    );
    for k in KEYS {
        out.push_str(&format!("| `{}` | {} |\n", k.path(), flag_doc(k)));
    }
    for (section, about) in SECTIONS {
        out.push_str(&format!("\n## [{section}]\n\n{about}\n"));
        if *section == "input" {
            out.push_str("One of them must be set, here or on the command line.\n");
        }
        for k in KEYS.iter().filter(|k| k.section == *section) {
            let default = match k.default {
                Default::Value(v) => format!("`{v}`"),
                Default::Unset(_) => "unset".to_owned(),
            };
            out.push_str(&format!(
                "\n### `{}`\n\n- type: {}\n- default: {default}\n- flag: {}\n\n{}\n",
                k.path(),
                k.ty.describe(),
                flag_doc(k),
                k.meaning
            ));
        }
    }
    out.push_str(
        "\n## Removed keys\n\nA file that sets one of these, or a command line that gives its flag, \
         stops the sensor with one line saying what to do instead.\n\n| key | flag | instead |\n\
         | --- | --- | --- |\n",
    );
    for r in REMOVED {
        out.push_str(&format!(
            "| `{}.{}` | `{}` | {} |\n",
            r.section, r.name, r.flag, r.instead
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::HugePages;
    use crate::tcp::overlap::OverlapPolicy;
    use clap::ValueEnum;

    fn val(s: &str) -> Value {
        s.parse().expect("a TOML value")
    }

    fn check(ty: Type, s: &str) -> Result<Checked, String> {
        ty.check(&val(s))
    }

    fn one(s: &str) -> Result<Checked, String> {
        Ok(Checked::One(s.to_owned()))
    }

    fn file(text: &str) -> Result<ConfigFile, ConfigError> {
        parse(Path::new("/etc/mos/test.toml"), text)
    }

    fn error(text: &str) -> (Option<usize>, String) {
        let e = file(text).expect_err("an error");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
        (e.line, e.message)
    }

    #[test]
    fn integers_are_checked_for_type_and_range() {
        let ring = key("tracking", "stream_max_kib").unwrap().ty;
        assert_eq!(check(ring, "256"), one("256"));
        assert_eq!(check(ring, "1048576"), one("1048576"));
        assert!(check(ring, "300").unwrap_err().contains("power of two"));
        assert!(check(ring, "2097152")
            .unwrap_err()
            .contains("between 8 and 1048576"));
        assert!(check(ring, "0").is_err());
        assert!(check(ring, "\"256\"")
            .unwrap_err()
            .contains("expected an integer"));
        assert!(check(ring, "256.0")
            .unwrap_err()
            .contains("expected an integer"));
        let workers = key("sensor", "workers").unwrap().ty;
        assert_eq!(
            check(workers, &MAX_WORKERS.to_string()),
            one(&MAX_WORKERS.to_string())
        );
        assert!(check(workers, &(MAX_WORKERS + 1).to_string()).is_err());
        assert!(check(workers, "0").is_err());
        let ev = key("publish", "event_ring").unwrap().ty;
        assert!(check(ev, "1").is_err());
        assert_eq!(check(ev, "2"), one("2"));
        assert_eq!(check(ev, "16777216"), one("16777216"));
        assert!(check(ev, "33554432").is_err());
        assert!(check(ev, "-4").is_err());
    }

    #[test]
    fn seconds_and_factors_are_within_their_bounds() {
        assert_eq!(check(TIMEOUT, "10"), one("10"));
        assert_eq!(check(TIMEOUT, "0.5"), one("0.5"));
        assert_eq!(check(TIMEOUT, "0.001"), one("0.001"));
        assert_eq!(check(TIMEOUT, "86400"), one("86400"));
        for bad in [
            "0", "-1.5", "inf", "-inf", "nan", "1e300", "1e-300", "86400.5",
        ] {
            let e = check(TIMEOUT, bad).unwrap_err();
            assert!(
                e.starts_with("must be between 0.001 and 86400 seconds, not "),
                "{bad}: {e}"
            );
        }
        assert!(check(TIMEOUT, "\"10s\"")
            .unwrap_err()
            .contains("expected a number"));
        let speed = key("input", "speed").unwrap().ty;
        assert_eq!(check(speed, "1000000"), one("1000000"));
        assert_eq!(
            check(speed, "1e-300").unwrap_err(),
            "must be between 0.001 and 1000000, not 1e-300"
        );
    }

    /// A flag's value on the command line is checked as the key's is in the file.
    #[test]
    fn command_line_values_are_checked_like_the_files() {
        let ring = key("tracking", "stream_max_kib").unwrap().ty;
        assert_eq!(ring.check_arg("256"), Ok("256".into()));
        for bad in ["300", "0", "-4", "4", "2097152", "99999999999999999999999"] {
            assert_eq!(
                ring.check_arg(bad).unwrap_err(),
                "must be a power of two between 8 and 1048576",
                "{bad}"
            );
        }
        assert!(ring
            .check_arg("1e3")
            .unwrap_err()
            .contains("expected an integer"));
        assert!(ring
            .check_arg("")
            .unwrap_err()
            .contains("expected an integer"));
        assert_eq!(TIMEOUT.check_arg("2.5"), Ok("2.5".into()));
        for bad in [
            "nan", "NaN", "inf", "infinity", "-1", "0", "1e300", "1e-300",
        ] {
            assert_eq!(
                TIMEOUT.check_arg(bad).unwrap_err(),
                "must be between 0.001 and 86400 seconds",
                "{bad}"
            );
        }
        assert!(TIMEOUT
            .check_arg("ten")
            .unwrap_err()
            .contains("expected a number"));
        assert_eq!(Type::Size.check_arg("1G"), Ok((1u64 << 30).to_string()));
        assert!(Type::Size.check_arg("0").is_err());
        assert!(Type::Size.check_arg("99999999999T").is_err());
        assert!(Type::Cpus.check_arg("0-99999999999").is_err());
        assert_eq!(Type::Path.check_arg("x"), Ok("x".into()));
    }

    #[test]
    fn a_file_is_read_up_to_a_bound() {
        let dir = std::env::temp_dir().join(format!("mos-config-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Exactly the bound: read (comments only, so it sets nothing).
        let fits = dir.join("fits.toml");
        let mut text = "#".repeat(MAX_FILE_BYTES as usize - 1);
        text.push('\n');
        std::fs::write(&fits, &text).unwrap();
        assert!(load(&fits).unwrap().settings.is_empty());
        // A byte more, or a device that never ends: refused, one line.
        let big = dir.join("big.toml");
        text.push('\n');
        std::fs::write(&big, &text).unwrap();
        for path in [big.as_path(), Path::new("/dev/zero")] {
            let e = load(path).unwrap_err();
            assert_eq!(e.line, None);
            assert_eq!(
                e.to_string(),
                format!(
                    "{}: the configuration file is larger than 1 MiB (1048576 bytes), the most the sensor reads",
                    path.display()
                )
            );
        }
        let binary = dir.join("binary.toml");
        std::fs::write(&binary, b"[sensor]\n\xff\n").unwrap();
        assert!(load(&binary)
            .unwrap_err()
            .message
            .contains("not UTF-8 text (invalid at byte offset 9)"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn choices_booleans_and_strings() {
        let overlap = key("tracking", "overlap").unwrap().ty;
        assert_eq!(check(overlap, "\"bsd\""), one("bsd"));
        assert!(check(overlap, "\"BSD\"")
            .unwrap_err()
            .contains("is not one of"));
        assert!(check(overlap, "1").is_err());
        assert_eq!(check(Type::Bool, "true"), Ok(Checked::Bool(true)));
        assert!(check(Type::Bool, "\"yes\"").is_err());
        assert_eq!(check(Type::Path, "\"/run/x.sock\""), one("/run/x.sock"));
        assert!(check(Type::Path, "\"\"").unwrap_err().contains("empty"));
    }

    #[test]
    fn sizes_take_integers_and_suffixes() {
        assert_eq!(check(Type::Size, "4096"), one("4096"));
        assert_eq!(check(Type::Size, "\"8G\""), one(&(8u64 << 30).to_string()));
        assert_eq!(
            check(Type::Size, "\"512MiB\""),
            one(&(512u64 << 20).to_string())
        );
        assert!(check(Type::Size, "\"8Q\"").is_err());
        assert!(check(Type::Size, "\"lots\"").is_err());
        assert!(check(Type::Size, "0").is_err());
        assert!(check(Type::Size, "-5").is_err());
        assert!(check(Type::Size, "true").is_err());
    }

    #[test]
    fn cpus_take_a_list_a_range_or_an_array() {
        assert_eq!(check(Type::Cpus, "\"2,3\""), one("2,3"));
        assert_eq!(check(Type::Cpus, "\"2-5\""), one("2-5"));
        assert_eq!(check(Type::Cpus, "[2, 3]"), one("2,3"));
        assert!(check(Type::Cpus, "\"5-2\"").is_err());
        assert!(check(Type::Cpus, "\"two\"").is_err());
        assert!(check(Type::Cpus, "[-1]").is_err());
        assert!(check(Type::Cpus, "[\"2\"]").is_err());
        assert!(check(Type::Cpus, "\"100000\"").is_err());
        assert_eq!(parse_cpus("0,2-4"), Ok(vec![0, 2, 3, 4]));
        // Ranges are bounded before they are spread out; so is the whole list.
        let max = rustix::thread::CpuSet::MAX_CPU;
        assert_eq!(
            parse_cpus("0-18446744073709551615").unwrap_err(),
            format!("CPU numbers must be below {max}, not 18446744073709551615")
        );
        assert_eq!(parse_cpus(&format!("0-{}", max - 1)).unwrap().len(), max);
        assert_eq!(
            parse_cpus(&format!("0-{},0", max - 1)).unwrap_err(),
            format!("the list names more than {max} CPUs")
        );
    }

    #[test]
    fn users_and_groups_are_names_or_numbers_that_exist() {
        assert_eq!(
            check(Type::Groups, "[\"mos\", 0]"),
            Ok(Checked::List(vec!["mos".into(), "0".into()]))
        );
        assert!(check(Type::Groups, "\"mos\"")
            .unwrap_err()
            .contains("array"));
        assert!(check(Type::Groups, "[\"a:b\"]").is_err());
        assert!(check(Type::Groups, "[\"\"]").is_err());
        assert!(check(Type::Users, "[-1]").is_err());
        assert_eq!(resolve_id("user", "root", "/etc/passwd"), Ok(0));
        assert_eq!(resolve_id("group", "root", "/etc/group"), Ok(0));
        assert_eq!(resolve_id("group", "4242", "/etc/group"), Ok(4242));
        assert!(resolve_id("group", "no-such-group-here", "/etc/group")
            .unwrap_err()
            .contains("no group named"));
    }

    #[test]
    fn the_table_is_consistent() {
        let overlap: Vec<String> = OverlapPolicy::value_variants()
            .iter()
            .map(|v| v.to_possible_value().unwrap().get_name().to_owned())
            .collect();
        assert_eq!(overlap, OVERLAP_POLICIES);
        let huge: Vec<String> = HugePages::value_variants()
            .iter()
            .map(|v| v.to_possible_value().unwrap().get_name().to_owned())
            .collect();
        assert_eq!(huge, HUGEPAGES);
        for k in KEYS {
            assert!(
                SECTIONS.iter().any(|(s, _)| *s == k.section),
                "{}",
                k.path()
            );
            assert_eq!(
                KEYS.iter().filter(|o| o.path() == k.path()).count(),
                1,
                "{}",
                k.path()
            );
            let paired = match (k.flag, k.ty) {
                (Flag::Switch(..), Type::Bool) => true,
                (Flag::Choices(c), Type::Choice(names)) => {
                    c.iter().map(|(n, _)| *n).collect::<Vec<_>>() == names
                }
                (Flag::Repeat(_), Type::Users | Type::Groups) => true,
                (Flag::Value(_), t) => !matches!(t, Type::Bool | Type::Users | Type::Groups),
                _ => false,
            };
            assert!(paired, "{}: flag and type do not go together", k.path());
            // Defaults, examples and shipped values are valid values.
            let (Default::Value(v) | Default::Unset(v)) = k.default;
            for v in [Some(v), k.shipped].into_iter().flatten() {
                if v == "[]" {
                    continue;
                }
                k.ty.check(&val(v))
                    .unwrap_or_else(|e| panic!("{}: {v}: {e}", k.path()));
            }
            assert!(!k.summary.contains('\n') && !k.meaning.contains('\n'));
        }
    }

    #[test]
    fn a_file_becomes_flags() {
        let f = file(
            "[input]\npcap = \"x.pcap\"\n[tracking]\nstream_max_kib = 512\nmidstream = false\nchecksums = \"drop\"\n\
             [control]\nallow_groups = [\"root\", 7]\n[sensor]\nmemcap = \"1G\"\nmode = \"lossy\"\n",
        )
        .unwrap();
        assert_eq!(f.settings.len(), 7);
        assert_eq!(f.get("tracking", "stream_max_kib").unwrap().line, 4);
        assert_eq!(
            f.args(&|_| false).unwrap(),
            [
                "--pcap=x.pcap",
                "--stream-max-kib=512",
                "--no-midstream",
                "--drop-bad-checksums",
                "--allow-group=root",
                "--allow-group=7",
                "--memcap=1073741824",
                "--lossy"
            ]
        );
    }

    #[test]
    fn the_command_line_wins_key_by_key() {
        let f = file(
            "[input]\ndpdk = \"--no-pci\"\nport = 2\nspeed = 2.0\ncount = 10\n\
             [sensor]\nmode = \"lossless\"\n[control]\nallow_groups = [\"no-such-group-here\"]\n",
        )
        .unwrap();
        // With no command line, the group that does not exist is an error at its line.
        let e = f.args(&|_| false).unwrap_err();
        assert_eq!(e.line, Some(9));
        assert!(e
            .message
            .starts_with("control.allow_groups: no group named"));
        // --allow-group replaces the list (so it is not looked up); --lossy replaces the mode.
        let given = |id: &str| matches!(id, "allow_group" | "lossy");
        assert_eq!(
            f.args(&given).unwrap(),
            ["--dpdk=--no-pci", "--port=2", "--count=10"]
        );
        // An input on the command line replaces the file's, and the DPDK and live keys go.
        let given = |id: &str| matches!(id, "pcap" | "allow_group");
        assert_eq!(f.args(&given).unwrap(), ["--speed=2", "--lossless"]);
        let given = |id: &str| matches!(id, "iface" | "allow_group");
        assert_eq!(f.args(&given).unwrap(), ["--count=10", "--lossless"]);
    }

    #[test]
    fn publishing_off_drops_the_keys_that_need_it() {
        let f =
            file("[publish]\nenabled = false\nwait_analyzers = 2\n[sensor]\nmode = \"lossy\"\n")
                .unwrap();
        assert_eq!(f.args(&|_| false).unwrap(), ["--no-publish"]);
        // A flag that needs publishing overrides enabled = false.
        let given = |id: &str| id == "lossless";
        assert_eq!(f.args(&given).unwrap(), ["--wait-analyzers=2"]);
        let given = |id: &str| id == "no_publish";
        assert!(f.args(&given).unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "[input]\n\n[tracking]\nring_kb = 4\n",
                4,
                "tracking.ring_kb: unknown key",
            ),
            (
                "[tracking]\nchunk_kib = 4\n[trackin]\n",
                3,
                "trackin: unknown section",
            ),
            (
                "workers = 2\n",
                1,
                "workers: not in a section; it belongs under [sensor]",
            ),
            (
                "[sensor]\nworkers = \"2\"\n",
                2,
                "sensor.workers: expected an integer",
            ),
            (
                "[sensor]\n\nworkers = 0\n",
                3,
                "sensor.workers: must be between 1 and",
            ),
            (
                "[tracking]\noverlap = \"middle\"\n",
                2,
                "tracking.overlap: \"middle\" is not one of",
            ),
            (
                "[sensor]\nmemcap = \"8X\"\n",
                2,
                "sensor.memcap: \"8X\": the suffix",
            ),
            (
                "[publish]\nevent_ring = 8\nevent_ring = 16\n",
                3,
                "publish.event_ring: set twice",
            ),
            ("[output]\n[output]\n", 2, "output: section given twice"),
            (
                "[input]\npcap = \"a\"\niface = \"b\"\n",
                3,
                "input.iface: set only one of",
            ),
            ("[input]\npcap = = 2\n", 2, "syntax error (not valid TOML)"),
            ("[input]\npcap = \"a\n", 2, "syntax error (not valid TOML)"),
            ("[[input]]\npcap = \"a\"\n", 1, "input: must be a section"),
            ("[tracking.deep]\nx = 1\n", 1, "tracking.deep: unknown key"),
            (
                "[tracking]\nchunk_kib = { a = 1 }\n",
                2,
                "tracking.chunk_kib: expected an integer, found a table",
            ),
            ("sensor = 4\n", 1, "sensor: must be a section"),
            (
                "[metrics]\n\nlisten = \"127.0.0.1:9477\"\n",
                3,
                "metrics.listen: was removed: the sensor opens no TCP port; run `mos-ctl metrics --listen ADDR`",
            ),
            (
                "[tracking]\nmax_flows = 10\nring_kib = 512\n",
                3,
                "tracking.ring_kib: was removed: each side's stream now grows in chunks",
            ),
            (
                "[tracking]\nmax_rings = 4\n",
                2,
                "tracking.max_rings: was removed: each side's stream now grows in chunks",
            ),
            (
                "[metrics]\nport = 9477\n",
                2,
                "metrics.port: unknown key (the keys of [metrics] were removed)",
            ),
        ];
        for (text, line, start) in cases {
            let (l, m) = error(text);
            assert_eq!(l, Some(*line), "{text:?}: {m}");
            assert!(m.starts_with(start), "{text:?}: {m}");
        }
        assert_eq!(
            file("[sensor]\nworkers = 0\n").unwrap_err().to_string(),
            format!(
                "/etc/mos/test.toml:2: sensor.workers: must be between 1 and {MAX_WORKERS}, not 0"
            )
        );
        // Dotted keys and inline tables are sections too.
        let f = file("tracking.chunk_kib = 64\noutput = { dump = \"d\" }\n").unwrap();
        assert_eq!(f.args(&|_| false).unwrap(), ["--chunk-kib=64", "--dump=d"]);
        // An empty file, or one of comments, sets nothing.
        assert!(file("# nothing\n").unwrap().settings.is_empty());
    }

    #[test]
    fn the_shipped_file_sets_only_the_socket_and_the_group() {
        let f = file(&default_file()).unwrap();
        let set: Vec<String> = f.settings.iter().map(|s| s.key.path()).collect();
        assert_eq!(set, ["control.socket", "control.allow_groups"]);
        assert!(!f.has_input());
        // Every key appears in it, commented out or set.
        let text = default_file();
        for k in KEYS {
            let uncommented = format!("\n{} = ", k.name);
            let commented = format!("\n#{} = ", k.name);
            assert!(
                text.contains(&uncommented) || text.contains(&commented),
                "{}",
                k.path()
            );
        }
    }

    /// `docs/CONFIG.md` and `deploy/sensor.toml` are what the table generates; with
    /// `MOS_BLESS=1` this rewrites them.
    #[test]
    fn generated_files_are_up_to_date() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let bless = std::env::var_os("MOS_BLESS").is_some_and(|v| v == "1");
        let mut stale = Vec::new();
        for (rel, text) in [
            ("docs/CONFIG.md", reference_doc()),
            ("deploy/sensor.toml", default_file()),
        ] {
            let path = root.join(rel);
            if bless {
                std::fs::write(&path, &text).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(rel);
            }
        }
        assert!(
            stale.is_empty(),
            "{stale:?} differ from what sensor/src/config.rs generates; regenerate them with \
             `MOS_BLESS=1 cargo test -p mos-sensor --lib config::`"
        );
    }
}
