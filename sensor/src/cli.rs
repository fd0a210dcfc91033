//! `mos-sensor`'s command line: its clap definition ([`Args`]), shared by the binary and by
//! the generator of its manual page and shell completions (`mos-docgen`).

use crate::budget::{Budget, InputKind, PublishShape, Shape};
use crate::config;
use crate::control;
use crate::defrag::DefragConfig;
use crate::publish::HugePages;
use crate::replay::ChecksumPolicy;
use crate::tcp::overlap::OverlapPolicy;
use crate::tracker::TrackerConfig;
use clap::{ArgGroup, Parser};
use std::ffi::OsString;
use std::path::PathBuf;

/// mos sensor: TCP connection tracking, endpoint emulation and stream reassembly.
///
/// Reads a pcap or pcapng capture (--pcap), a DPDK port (--dpdk) or a network interface
/// (--iface), follows every TCP connection (both endpoints' state machines, each side's byte
/// stream reassembled in order, overlapping out-of-order data resolved by --overlap, bytes
/// the capture never held recorded as gaps), and with --dump writes each connection's two
/// streams and a flows.jsonl index to a directory.
///
/// Everything is published in shared memory for analyzer processes (mos-dump, mos-flowstat,
/// or your own built on the mos-client library), which attach through the control socket.
/// Replaying a capture is lossless: the sensor waits for slow analyzers (detaching one that
/// makes no progress for --stall-timeout), and with --wait-analyzers N it starts only once N
/// analyzers are ready. At the end every open connection ends with CONN_END, the analyzers
/// drain their events and are told the sensor is done, and the sensor exits.
///
/// A capture that is truncated or malformed part-way ends the replay with one message naming
/// the byte offset; everything before it is processed and published as usual, and the exit
/// status is 2. Other errors exit with 1, among them a value outside its range (each flag
/// below gives its range; so do the file's keys) in one line; a malformed command line (an
/// unknown flag, a missing value) is a usage error, status 2. SIGINT or SIGTERM stop the
/// sensor as if the input ended there (exit status 130; a second one exits at once). SIGHUP
/// rereads the configuration file: who may attach (--allow-user, --allow-group) and
/// --stall-timeout change at once, and the sensor logs which other changed settings wait for
/// a restart.
///
/// Started by systemd (Type=notify), the sensor says it is ready once the shared memory is
/// published and the control socket listens, and its log lines carry syslog levels in the
/// journal (deploy/mos-sensor.service; docs/OPERATIONS.md).
///
/// With --dpdk the sensor receives from a DPDK port, with --iface it captures on a network
/// interface through AF_PACKET; both run until SIGINT or SIGTERM (or --stop-after-idle), and
/// are lossy by default: a full analyzer ring drops that analyzer's event and counts it.
/// --workers N runs N workers on N threads, each with its own connections, stream chunks and
/// shared-memory part; analyzers see all workers' connections as one.
///
/// Every setting can also come from a TOML configuration file: /etc/mos/sensor.toml when it
/// exists, or the file --config names (--no-config reads none). Its sections and keys are in
/// docs/CONFIG.md, and --print-config prints the default file with every key. A flag given on
/// the command line overrides the file's key for it (an input given here replaces the file's
/// input, --allow-group the file's whole list of groups); the input may come from the file
/// alone.
#[derive(Clone, Debug, Parser)]
#[command(name = "mos-sensor", version = shm_layout::version!(), about, long_about)]
#[command(group(ArgGroup::new("input").args(["pcap", "dpdk", "iface"])))]
pub struct Args {
    /// Read settings from this TOML file (default: /etc/mos/sensor.toml when it exists, or the
    /// file the environment variable MOS_SENSOR_CONFIG names; set but empty, none); flags on
    /// the command line override it. See docs/CONFIG.md.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Read no configuration file, not even /etc/mos/sensor.toml.
    #[arg(long, conflicts_with = "config")]
    pub no_config: bool,

    /// Print the default configuration file (every key, with its default and meaning) and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Print how many 2 MiB hugepages the shared memory of this configuration takes (0 when
    /// it publishes nothing or --hugepages is off) and exit; no input is needed.
    /// `deploy/hugepages.sh --pages auto` reserves that many. Each analyzer's event rings
    /// take more while it is attached, when that many are free, else ordinary pages:
    /// workers x (--event-ring x 96 bytes + 4 KiB), in whole 2 MiB pages (4 with the defaults
    /// and one worker).
    #[arg(long)]
    pub print_hugepages: bool,

    /// Capture file to replay (pcap or pcapng; Ethernet, Linux cooked v1/v2, BSD loopback,
    /// raw IP, PPP, Cisco HDLC and NFLOG link types); - reads it from standard input. A FIFO
    /// or a pipe is read as its writer sends; SIGINT or SIGTERM end it where it is, even while
    /// the writer sends nothing or no writer has opened the FIFO yet.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,

    /// Receive from a DPDK port; the value is DPDK's EAL arguments as one string, split on
    /// spaces (no quoting), for example '-l 0-2 --allow 0000:03:00.0' for a NIC, or
    /// '--no-huge -m 256 --no-pci --vdev=net_pcap0,rx_pcap=FILE' to read a capture through a
    /// virtual device. Needs root (or the capabilities DPDK asks for).
    #[arg(long, value_name = "EAL-ARGS", allow_hyphen_values = true)]
    pub dpdk: Option<String>,

    /// The DPDK port to receive from (with --dpdk; 0 to 65535).
    #[arg(long, value_name = "N", default_value_t = 0, requires = "dpdk",
          allow_hyphen_values = true,
          value_parser = key_value::<u16>("input.port"))]
    pub port: u16,

    /// The DPDK port's RX queues already hold whole flows (steered by rules set up outside
    /// mos, or a net_pcap device given one capture per queue, split by flow): each worker
    /// polls its own queue, with neither RSS nor software dispatch. Without it, a port with
    /// RSS gets a symmetric key and one queue per worker, and a port without RSS one queue
    /// read by a dispatching thread.
    #[arg(long, requires = "dpdk")]
    pub queues_hold_flows: bool,

    /// Mbufs in the DPDK port's pool, 1 to 4294967295 (by default enough for every queue's
    /// descriptors and the frames in flight to workers; net_pcap with infinite_rx=1 needs one
    /// per frame of its file).
    #[arg(long, value_name = "N", requires = "dpdk", allow_hyphen_values = true,
          value_parser = key_value::<u32>("input.mbufs"))]
    pub mbufs: Option<u32>,

    /// Capture live on this network interface through AF_PACKET (TPACKET_V3; with several
    /// workers, a fanout group that the kernel splits by a symmetric flow hash). Needs root or
    /// CAP_NET_RAW.
    #[arg(long, value_name = "IFACE")]
    pub iface: Option<String>,

    /// With --iface: how long the kernel holds a block of the AF_PACKET ring that is not full
    /// before handing it to the sensor, in milliseconds (1-1000). It bounds how late a frame
    /// on a quiet link reaches the analyzers, and sets how long the ring's 64 blocks last
    /// while the sensor is held up (each timeout hands over a partly filled block): 1 gives
    /// about 1 ms latency instead of 6, but less room for bursts in lossless mode.
    #[arg(long, value_name = "MS", default_value_t = 10,
          allow_hyphen_values = true,
          value_parser = key_value::<u32>("input.block_timeout_ms"))]
    pub block_timeout_ms: u32,

    /// End a live capture (--dpdk or --iface) as if its input ended once no frame has arrived
    /// for this many seconds (0.001 to 86400): every open connection ends, analyzers drain and
    /// are told the sensor is done. Without it, a live capture runs until SIGINT or SIGTERM.
    #[arg(long, value_name = "SECONDS", conflicts_with = "pcap",
          allow_hyphen_values = true,
          value_parser = key_value::<f64>("input.stop_after_idle"))]
    pub stop_after_idle: Option<f64>,

    /// CPUs for the workers of a live capture, one per worker in order, as a list such as
    /// 2,3 or a range such as 2-5 (CPU numbers below 1024). By default worker w of a live capture runs on the w-th CPU
    /// the sensor may use (when there are at least as many CPUs as workers); a replay's
    /// workers are not pinned.
    #[arg(long, value_name = "LIST", value_parser = parse_cpus)]
    pub cpus: Option<CpuList>,

    /// End a live capture after about N frames (1 to 9223372036854775807; each worker
    /// finishes the burst or block it holds, so a few more may be taken), as if its input
    /// ended there.
    #[arg(long, value_name = "N", conflicts_with = "pcap",
          allow_hyphen_values = true,
          value_parser = key_value::<u64>("input.count"))]
    pub count: Option<u64>,

    /// Write each connection's streams and DIR/flows.jsonl into DIR (created if missing).
    /// Bytes the receiver acknowledged but the capture never held, and bytes cut by the snap
    /// length, are written as zeros (holes in sparse files) and counted as lost.
    #[arg(long, value_name = "DIR")]
    pub dump: Option<PathBuf>,

    /// Chunks in the stream-buffer pool, in all, from 18 per worker to 2147483647 (shared out
    /// among the workers): sides hold their bytes in chunks taken as the stream needs them. An empty pool
    /// takes back the history of the least recently active sides first; what still finds no
    /// chunk is dropped and counted.
    #[arg(long, value_name = "N", default_value_t = 6144,
          allow_hyphen_values = true,
          value_parser = key_value::<usize>("tracking.stream_chunks"))]
    pub stream_chunks: usize,

    /// Size of one stream chunk in KiB, a power of two from 4 to 1024.
    #[arg(long, value_name = "KIB", default_value_t = 32,
          allow_hyphen_values = true,
          value_parser = key_value::<usize>("tracking.chunk_kib"))]
    pub chunk_kib: usize,

    /// The most one side of a connection holds, from its oldest held byte to its furthest
    /// out-of-order byte, in KiB: a power of two from 8 to 1048576, at least twice --chunk-kib
    /// (a segment that crosses a chunk boundary holds two chunks). It must cover the
    /// receiver's window; a segment beyond it forces the oldest bytes out.
    #[arg(long, value_name = "KIB", default_value_t = 16384,
          allow_hyphen_values = true,
          value_parser = key_value::<usize>("tracking.stream_max_kib"))]
    pub stream_max_kib: usize,

    /// In-order bytes each side keeps behind its newest byte for analyzers that read late, in
    /// KiB from 0 to 1048576, while the pool has chunks to spare.
    #[arg(long, value_name = "KIB", default_value_t = 256,
          allow_hyphen_values = true,
          value_parser = key_value::<u64>("tracking.history_kib"))]
    pub history_kib: u64,

    /// Removed: streams grow in chunks (--stream-chunks, --chunk-kib, --stream-max-kib).
    #[arg(long, value_name = "KIB", hide = true)]
    pub ring_kib: Option<OsString>,

    /// Removed: streams grow in chunks (--stream-chunks).
    #[arg(long, value_name = "N", hide = true)]
    pub max_rings: Option<OsString>,

    /// Most connections tracked at once, from one per worker to 2147483647; beyond it the
    /// least recently active is evicted (CONN_END with reason evicted, counted).
    #[arg(long, value_name = "N", default_value_t = 1 << 20,
          allow_hyphen_values = true,
          value_parser = key_value::<usize>("tracking.max_flows"))]
    pub max_flows: usize,

    /// The most memory the sensor may use, in bytes with an optional K, M, G or T suffix
    /// (powers of 1024). At start the sensor adds up what its settings can make it allocate
    /// (connections, rings, shared memory, packet log, analyzers' event rings, buffers) and
    /// refuses, naming the setting to lower, a configuration that does not fit; every
    /// structure is bounded by those settings, so at run time it stays within. Default: the
    /// machine's memory. More than 0.
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true,
          value_parser = key_value::<u64>("sensor.memcap"))]
    pub memcap: Option<u64>,

    /// A connection idle this many whole seconds (capture time; 1 to 2592000, 30 days) ends
    /// with a timeout.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600,
          allow_hyphen_values = true,
          value_parser = key_value::<u64>("tracking.idle_timeout"))]
    pub idle_timeout: u64,

    /// Which copy of a byte stays when a segment overlaps out-of-order data already held;
    /// bytes already in order are never rewritten. A copy whose bytes differ raises an ERROR
    /// event whichever wins. Analyzers read the policy with MOS_CLIOVERLAP/MOS_SVROVERLAP; the
    /// rules are in docs/REASSEMBLY.md.
    #[arg(long, value_enum, value_name = "POLICY", default_value_t = OverlapPolicy::First)]
    pub overlap: OverlapPolicy,

    /// Do not track connections whose handshake was not captured (their packets become
    /// orphans).
    #[arg(long)]
    pub no_midstream: bool,

    /// Do not verify TCP checksums (by default bad ones are counted and kept; on a loopback
    /// device captured with --iface they are never verified).
    #[arg(long)]
    pub no_checksum: bool,

    /// Drop TCP segments whose checksum is wrong before they reach the connection tracker, as
    /// the receiving host would (counted among the frames skipped; their bytes become a gap
    /// unless a retransmission brings them). By default they are counted and kept, since
    /// captures taken on the sending host often hold checksums the NIC would have filled in.
    #[arg(long, conflicts_with = "no_checksum")]
    pub drop_bad_checksums: bool,
    /// Memory for IP fragments awaiting reassembly, in MiB, 0 to 1048576 (per worker for a
    /// live capture; a multi-worker replay reassembles in its reader thread); when full, the
    /// oldest incomplete datagram is dropped. 0 turns reassembly off (fragments count as
    /// other IP).
    #[arg(long, value_name = "MIB", default_value_t = 32,
          allow_hyphen_values = true,
          value_parser = key_value::<usize>("fragments.memory_mib"))]
    pub frag_memory: usize,

    /// An IP datagram whose fragments are not all in this many whole seconds (capture time;
    /// 1 to 86400) after its first is dropped.
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          allow_hyphen_values = true,
          value_parser = key_value::<u64>("fragments.timeout"))]
    pub frag_timeout: u64,

    /// Most IP datagrams being reassembled at once, 1 to 16777216 (per defragmenter, like
    /// --frag-memory); beyond it the oldest is dropped.
    #[arg(long, value_name = "N", default_value_t = 4096,
          allow_hyphen_values = true,
          value_parser = key_value::<usize>("fragments.datagrams"))]
    pub frag_datagrams: usize,

    /// The control socket where analyzers attach (created mode 0660; its directory is
    /// created if missing).
    #[arg(long, value_name = "PATH", default_value = control::DEFAULT_PATH)]
    pub control: PathBuf,

    /// Publish nothing: no shared memory, no control socket (with --dump, the sensor alone
    /// writes the streams).
    #[arg(long, conflicts_with_all = ["wait_analyzers", "lossy", "lossless"])]
    pub no_publish: bool,

    /// Hold the replay until N analyzers are attached and ready (0 to 65536, and at most
    /// --max-analyzers).
    #[arg(long, value_name = "N", default_value_t = 0,
          allow_hyphen_values = true,
          value_parser = key_value::<usize>("publish.wait_analyzers"))]
    pub wait_analyzers: usize,

    /// Workers (1 to 32), each on its own thread with its own connection table, stream
    /// chunks and shared-memory regions; frames are spread over them by a symmetric hash of
    /// their connection, so both directions of a connection reach the same worker, and results
    /// do not depend on the number of workers. --max-flows and --stream-chunks are shared out
    /// among them.
    #[arg(long, value_name = "N", default_value_t = 1,
          allow_hyphen_values = true,
          value_parser = key_value::<usize>("sensor.workers"))]
    pub workers: usize,

    /// Never wait for analyzers: when an analyzer's event ring is full its event is dropped
    /// and counted, and ring bytes, packets and flow slots are reused on schedule. The
    /// default for live capture (--dpdk, --iface); a replay (--pcap) is lossless by default.
    #[arg(long)]
    pub lossy: bool,

    /// Wait for slow analyzers instead of dropping their events, whatever the input (the
    /// default with --pcap). A live input that waits loses frames at the NIC or socket
    /// instead (counted as capture drops); what a user wants when DPDK reads a file.
    #[arg(long, conflicts_with = "lossy")]
    pub lossless: bool,

    /// Detach an analyzer that makes no progress for this many seconds (0.001 to 86400) while
    /// the sensor waits for it (lossless mode).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0,
          allow_hyphen_values = true,
          value_parser = key_value::<f64>("sensor.stall_timeout"))]
    pub stall_timeout: f64,

    /// Users allowed to attach, by name or uid (repeatable; root and the sensor's own user
    /// always are). Without --allow-group, the control socket is given to the first one's
    /// primary group, so that it can connect.
    #[arg(long, value_name = "USER")]
    pub allow_user: Vec<String>,

    /// Groups whose members may attach, by name or gid (repeatable); the control socket is
    /// given to the first.
    #[arg(long, value_name = "GROUP")]
    pub allow_group: Vec<String>,

    /// Most connections to the control socket that have not said hello yet, 1 to 65536; past
    /// it, the oldest of the user holding the most is closed to make room.
    #[arg(long, value_name = "N", default_value_t = 64,
          allow_hyphen_values = true,
          value_parser = key_value::<usize>("control.max_pending"))]
    pub max_pending: usize,

    /// Close a connection to the control socket that has not said hello (or asked for the
    /// status) within this many seconds (0.01 to 3600).
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0,
          allow_hyphen_values = true,
          value_parser = key_value::<f64>("control.hello_timeout"))]
    pub hello_timeout: f64,

    /// Event records in each analyzer's ring, a power of two between 2 and 16777216.
    #[arg(long, value_name = "N", default_value_t = 65536,
          allow_hyphen_values = true,
          value_parser = key_value::<u64>("publish.event_ring"))]
    pub event_ring: u64,

    /// Frames kept in the packet log for getlastpkt, 1 to 4294967295 (used only while an
    /// analyzer asks for packets).
    #[arg(long, value_name = "N", default_value_t = 65536,
          allow_hyphen_values = true,
          value_parser = key_value::<u64>("publish.pktlog_frames"))]
    pub pktlog_frames: u64,

    /// Bytes of frames kept in the packet log, in KiB, 1 to 4294967295.
    #[arg(long, value_name = "KIB", default_value_t = 32768,
          allow_hyphen_values = true,
          value_parser = key_value::<u64>("publish.pktlog_kib"))]
    pub pktlog_kib: u64,

    /// Back the shared memory with 2 MiB hugepages: auto uses them when the host has enough
    /// free and says which it chose.
    #[arg(long, value_enum, default_value_t = HugePages::Auto)]
    pub hugepages: HugePages,

    /// Most analyzers attached at once, 1 to 65536.
    #[arg(long, value_name = "N", default_value_t = 64,
          allow_hyphen_values = true,
          value_parser = key_value::<usize>("publish.max_analyzers"))]
    pub max_analyzers: usize,

    /// Replay at FACTOR times the capture's own pace, 0.001 to 1000000 (1 = as captured; gaps
    /// longer than a second are cut to a second). By default frames go as fast as the sensor
    /// takes them.
    #[arg(long, value_name = "FACTOR", requires = "pcap",
          allow_hyphen_values = true,
          value_parser = key_value::<f64>("input.speed"))]
    pub speed: Option<f64>,

    /// Removed (the sensor opens no TCP port): kept, hidden, only to say where it went.
    #[arg(long, value_name = "ADDR", hide = true)]
    pub metrics_listen: Option<OsString>,

    /// Print no progress line and no summary.
    #[arg(long, short)]
    pub quiet: bool,
}

/// A list of CPU numbers (`--cpus`).
#[derive(Clone, Debug)]
pub struct CpuList(pub Vec<usize>);

/// The parser of a numeric flag's value: the type and range of the configuration key `path`
/// (`section.name`) that stands for the flag, so that the command line and the file take the
/// same values. A value out of range is clap's `ValueValidation` error, which the binary prints
/// as one line with exit status 1.
fn key_value<T>(
    path: &'static str,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
{
    move |s| {
        let key = config::KEYS
            .iter()
            .find(|k| k.path() == path)
            .ok_or_else(|| format!("no configuration key {path} (a bug in mos-sensor)"))?;
        let checked = key.ty.check_arg(s)?;
        checked
            .parse()
            .map_err(|_| format!("{checked} does not fit {path} (a bug in mos-sensor)"))
    }
}

fn parse_cpus(s: &str) -> Result<CpuList, String> {
    config::parse_cpus(s).map(CpuList)
}

impl Args {
    /// Whether the sensor waits for slow analyzers: a replay by default, a live input only
    /// with --lossless.
    pub fn is_lossless(&self) -> bool {
        !self.lossy && (self.lossless || self.pcap.is_some())
    }

    /// What is done with TCP checksums.
    pub fn checksums(&self) -> ChecksumPolicy {
        if self.no_checksum {
            ChecksumPolicy::Ignore
        } else if self.drop_bad_checksums {
            ChecksumPolicy::Drop
        } else {
            ChecksumPolicy::Count
        }
    }

    /// IP fragment reassembly limits (`None`: `--frag-memory 0`, reassembly off).
    pub fn defrag(&self) -> Option<DefragConfig> {
        (self.frag_memory > 0).then(|| DefragConfig {
            memory_bytes: self.frag_memory.saturating_mul(1 << 20),
            max_datagrams: self.frag_datagrams,
            timeout_ns: self.frag_timeout.saturating_mul(1_000_000_000),
        })
    }

    /// The memory budget of this configuration (`cfg`: one worker's tracker settings).
    pub fn budget(&self, cfg: &TrackerConfig) -> Budget {
        Budget::of(&Shape {
            workers: self.workers,
            tracker: cfg.clone(),
            lossless: self.is_lossless(),
            publish: (!self.no_publish).then_some(PublishShape {
                pktlog_frames: self.pktlog_frames,
                pktlog_bytes: self.pktlog_kib.saturating_mul(1024),
                event_ring: self.event_ring,
                max_analyzers: self.max_analyzers as u64,
            }),
            input: if self.iface.is_some() {
                InputKind::Iface
            } else if self.dpdk.is_some() {
                InputKind::Dpdk
            } else {
                InputKind::File
            },
            defrag: self.defrag(),
        })
    }
}

impl Args {
    /// Each configuration key's value in these arguments, for comparing two sets of them.
    pub fn config_values(&self) -> Vec<(&'static str, String)> {
        vec![
            ("input.pcap", format!("{:?}", self.pcap)),
            ("input.dpdk", format!("{:?}", self.dpdk)),
            ("input.iface", format!("{:?}", self.iface)),
            (
                "input.block_timeout_ms",
                format!("{:?}", self.block_timeout_ms),
            ),
            ("input.port", format!("{:?}", self.port)),
            (
                "input.queues_hold_flows",
                format!("{:?}", self.queues_hold_flows),
            ),
            ("input.mbufs", format!("{:?}", self.mbufs)),
            (
                "input.cpus",
                format!("{:?}", self.cpus.as_ref().map(|c| &c.0)),
            ),
            (
                "input.stop_after_idle",
                format!("{:?}", self.stop_after_idle),
            ),
            ("input.count", format!("{:?}", self.count)),
            ("input.speed", format!("{:?}", self.speed)),
            ("sensor.workers", format!("{:?}", self.workers)),
            ("sensor.mode", format!("{:?}", (self.lossy, self.lossless))),
            ("sensor.stall_timeout", format!("{:?}", self.stall_timeout)),
            ("sensor.memcap", format!("{:?}", self.memcap)),
            ("sensor.hugepages", format!("{:?}", self.hugepages)),
            ("sensor.quiet", format!("{:?}", self.quiet)),
            ("tracking.max_flows", format!("{:?}", self.max_flows)),
            (
                "tracking.stream_chunks",
                format!("{:?}", self.stream_chunks),
            ),
            ("tracking.chunk_kib", format!("{:?}", self.chunk_kib)),
            (
                "tracking.stream_max_kib",
                format!("{:?}", self.stream_max_kib),
            ),
            ("tracking.history_kib", format!("{:?}", self.history_kib)),
            ("tracking.idle_timeout", format!("{:?}", self.idle_timeout)),
            ("tracking.overlap", format!("{:?}", self.overlap)),
            ("tracking.midstream", format!("{:?}", self.no_midstream)),
            (
                "tracking.checksums",
                format!("{:?}", (self.no_checksum, self.drop_bad_checksums)),
            ),
            ("fragments.memory_mib", format!("{:?}", self.frag_memory)),
            ("fragments.timeout", format!("{:?}", self.frag_timeout)),
            ("fragments.datagrams", format!("{:?}", self.frag_datagrams)),
            ("publish.enabled", format!("{:?}", self.no_publish)),
            ("publish.event_ring", format!("{:?}", self.event_ring)),
            ("publish.pktlog_frames", format!("{:?}", self.pktlog_frames)),
            ("publish.pktlog_kib", format!("{:?}", self.pktlog_kib)),
            ("publish.max_analyzers", format!("{:?}", self.max_analyzers)),
            (
                "publish.wait_analyzers",
                format!("{:?}", self.wait_analyzers),
            ),
            ("control.socket", format!("{:?}", self.control)),
            ("control.allow_users", format!("{:?}", self.allow_user)),
            ("control.allow_groups", format!("{:?}", self.allow_group)),
            ("control.max_pending", format!("{:?}", self.max_pending)),
            ("control.hello_timeout", format!("{:?}", self.hello_timeout)),
            ("output.dump", format!("{:?}", self.dump)),
        ]
    }
}
