//! The memory budget: the most memory a configuration can make the sensor use, item by item,
//! checked against `--memcap` before anything is allocated.
//!
//! Every structure the sensor grows per connection, per ring, per frame or per analyzer has a
//! count limit from the configuration (`--max-flows`, `--stream-chunks`, `--pktlog-frames`,
//! `--max-analyzers`, ...), and each reports its bound for a count (`FlowTable::memory_bound`,
//! `RingPool::memory_bound`, `Tracker::memory_bound`, ...). The budget multiplies them out:
//! whatever the traffic, the sensor never allocates more than its total, so a configuration
//! whose total fits under the cap keeps to the cap at run time without checks on the data
//! path. Not counted: `--dump`'s index (one record per connection seen, written at exit) and
//! DPDK's own memory (its mbuf pool lives in the memory EAL was given with `-m` or hugepages).

use crate::capture::FileCapture;
use crate::defrag::{DefragConfig, Defragmenter};
use crate::dispatch;
use crate::tracker::Tracker;
use crate::tracker::TrackerConfig;
use core::mem::size_of;
use shm_layout::layout::{FlowSlot, PktLogEntry, PktLogHeader, RingMetaSlot};
use shm_layout::plan::PART_ALIGN;

/// What the process needs whatever its configuration: code, libraries, thread stacks in use,
/// the allocator's own overhead, the control thread. A replay of the demo capture peaks at
/// about 20 MiB resident (docs/BENCHMARKS.md, issue 5), so this leaves room.
pub const BASELINE: u64 = 32 << 20;

/// Bytes of one AF_PACKET ring (`mos_afpacket::RingOptions::default()`: 64 blocks of 1 MiB).
pub const AFPACKET_RING: u64 = 64 << 20;

/// Where frames come from, as far as memory goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// A capture file (or standard input): one read buffer, and batches to the workers when
    /// there are several.
    File,
    /// AF_PACKET: one kernel ring mapped per worker.
    Iface,
    /// DPDK: mbufs in EAL's memory, not the process's heap.
    Dpdk,
}

/// The shared-memory sizes, when the sensor publishes.
#[derive(Clone, Copy, Debug)]
pub struct PublishShape {
    /// Packet-log entries per worker.
    pub pktlog_frames: u64,
    /// Packet-log frame bytes per worker.
    pub pktlog_bytes: u64,
    /// Event records per (analyzer, worker) ring.
    pub event_ring: u64,
    /// Analyzers attached at once.
    pub max_analyzers: u64,
}

/// Everything the budget depends on.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Workers.
    pub workers: usize,
    /// One worker's tracker settings (its share of the limits).
    pub tracker: TrackerConfig,
    /// Lossless mode (ended connections wait for analyzers).
    pub lossless: bool,
    /// Shared-memory sizes; `None` with `--no-publish`.
    pub publish: Option<PublishShape>,
    /// The input.
    pub input: InputKind,
    /// IP fragment reassembly limits (one defragmenter per worker live, one in total for a
    /// capture file); `None` with reassembly off.
    pub defrag: Option<DefragConfig>,
}

/// One line of the budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// What the memory holds.
    pub what: &'static str,
    /// The settings that size it (what to lower when it does not fit).
    pub setting: &'static str,
    /// Bytes at most.
    pub bytes: u64,
}

/// The most memory a configuration can use, item by item.
#[derive(Clone, Debug)]
pub struct Budget {
    /// The items, in no particular order.
    pub items: Vec<Item>,
}

impl Budget {
    /// The budget of a configuration. The products saturate at `u64::MAX`: settings too large
    /// to multiply out give an item no cap admits, which [`Budget::check`] names.
    pub fn of(shape: &Shape) -> Budget {
        let nw = shape.workers as u64;
        let cfg = &shape.tracker;
        let published = shape.publish.is_some();
        let t = Tracker::memory_bound(cfg, shape.lossless, !published);
        let slots = (cfg.max_flows as u64).saturating_add(2);
        let pool = cfg.pool_shape();
        let rings = pool.buffers as u64;
        let sum = |parts: &[u64]| parts.iter().fold(0u64, |a, &b| a.saturating_add(b));
        let mut items = vec![
            Item {
                what: "connection table, its index and queues",
                setting: "--max-flows",
                bytes: nw.saturating_mul(t.flows as u64),
            },
            Item {
                what: "stream chunks and their bookkeeping",
                setting: "--stream-chunks or --chunk-kib",
                // Private, or in the shared region.
                bytes: nw.saturating_mul(sum(&[
                    t.rings as u64,
                    if published {
                        (pool.chunks as u64).saturating_mul(pool.chunk_size as u64)
                    } else {
                        0
                    },
                ])),
            },
            Item {
                what: "events of one call",
                setting: "",
                bytes: nw.saturating_mul(t.events as u64),
            },
        ];
        if let Some(p) = shape.publish {
            let worker_align = 4 * PART_ALIGN;
            items.push(Item {
                what: "shared flow slots",
                setting: "--max-flows",
                bytes: nw
                    .saturating_mul(slots)
                    .saturating_mul(size_of::<FlowSlot>() as u64),
            });
            items.push(Item {
                what: "shared stream-buffer metadata and chunk maps",
                setting: "--stream-chunks or --stream-max-kib",
                bytes: nw.saturating_mul(sum(&[
                    rings.saturating_mul(size_of::<RingMetaSlot>() as u64),
                    rings.saturating_mul(pool.map_len as u64).saturating_mul(4),
                ])),
            });
            items.push(Item {
                what: "packet log",
                setting: "--pktlog-frames or --pktlog-kib",
                bytes: nw.saturating_mul(sum(&[
                    size_of::<PktLogHeader>() as u64,
                    p.pktlog_frames
                        .saturating_mul(size_of::<PktLogEntry>() as u64 + 16),
                    p.pktlog_bytes,
                    worker_align,
                ])),
            });
            // An analyzer's rings count as the most they may take: in hugepages, rounded up
            // to whole 2 MiB pages. An event ring the layout refuses (not a power of two, too
            // many workers) is refused before the budget counts; here it counts as the most
            // it may be.
            let per_analyzer =
                crate::publish::analyzer_bytes(p.event_ring, shape.workers).unwrap_or(u64::MAX);
            items.push(Item {
                what: "analyzers' event rings",
                setting: "--max-analyzers or --event-ring",
                bytes: p.max_analyzers.saturating_mul(per_analyzer),
            });
        }
        items.push(match shape.input {
            InputKind::File => Item {
                what: "capture reader",
                setting: "--workers",
                bytes: (FileCapture::memory_bound() as u64).saturating_add(if shape.workers > 1 {
                    dispatch::memory_bound(shape.workers) as u64
                } else {
                    0
                }),
            },
            InputKind::Iface => Item {
                what: "AF_PACKET rings",
                setting: "--workers",
                bytes: nw.saturating_mul(AFPACKET_RING),
            },
            InputKind::Dpdk => Item {
                what: "DPDK hand-off",
                setting: "--workers",
                bytes: nw.saturating_mul(1 << 20),
            },
        });
        if let Some(d) = &shape.defrag {
            let n = match shape.input {
                InputKind::File => 1,
                InputKind::Iface | InputKind::Dpdk => nw,
            };
            items.push(Item {
                what: "IP fragments awaiting reassembly",
                setting: "--frag-memory or --frag-datagrams",
                bytes: n.saturating_mul(Defragmenter::memory_bound(d) as u64),
            });
        }
        items.push(Item {
            what: "process baseline",
            setting: "",
            bytes: BASELINE,
        });
        Budget { items }
    }

    /// Total bytes (`u64::MAX` when they do not fit in 64 bits).
    pub fn total(&self) -> u64 {
        self.items
            .iter()
            .fold(0u64, |a, i| a.saturating_add(i.bytes))
    }

    /// `Err` with one line naming the setting to lower when the budget exceeds `cap` bytes.
    pub fn check(&self, cap: u64) -> Result<(), String> {
        let total = self.total();
        // A total that saturated is more than any cap, even u64::MAX.
        if total <= cap && total < u64::MAX {
            return Ok(());
        }
        let worst = self
            .items
            .iter()
            .filter(|i| !i.setting.is_empty())
            .max_by_key(|i| i.bytes)
            .expect("the budget has items with settings");
        let size = |b: u64| {
            if b == u64::MAX {
                "more than 16 EiB".to_owned()
            } else {
                human(b)
            }
        };
        Err(format!(
            "this configuration may use up to {} but --memcap is {}; the largest part is the {} ({}): lower {}, or raise --memcap",
            size(total),
            human(cap),
            worst.what,
            size(worst.bytes),
            worst.setting
        ))
    }
}

/// Bytes as MiB or GiB, for messages.
pub fn human(bytes: u64) -> String {
    if bytes >= 10 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", bytes.div_ceil(1 << 20))
    }
}

/// A size in bytes: a number with an optional K, M, G or T suffix (powers of 1024; a trailing
/// `B` or `iB` is allowed), as `--memcap` takes it.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{s:?}: the suffix must be K, M, G or T")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (such as 512M or 4G)"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// The machine's memory (`MemTotal`), the default cap; `None` where /proc is not readable.
pub fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Fields of this process's `/proc/self/status` in KiB (`VmRSS`, `VmHWM`, `RssAnon`, ...), in
/// the order asked; 0 for a field (or a whole file) that cannot be read.
pub fn self_status_kib<const N: usize>(fields: [&str; N]) -> [u64; N] {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    fields.map(|name| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowTable;
    use crate::tcp::conn::Conn;

    #[test]
    fn own_status_fields_are_read_and_unknown_ones_are_zero() {
        let [rss, hwm, none, prefix] = self_status_kib(["VmRSS", "VmHWM", "NoSuchField", "Vm"]);
        assert!(rss > 0 && hwm >= rss, "VmRSS {rss} KiB, VmHWM {hwm} KiB");
        // Neither an unknown field nor a prefix of a real one matches.
        assert_eq!((none, prefix), (0, 0));
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert!(parse_size("").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    fn shape(max_flows: usize, chunks: usize) -> Shape {
        Shape {
            workers: 1,
            tracker: TrackerConfig {
                max_flows,
                chunks,
                chunk_size: 64 << 10,
                ..TrackerConfig::default()
            },
            lossless: true,
            defrag: Some(DefragConfig::default()),
            publish: Some(PublishShape {
                pktlog_frames: 1024,
                pktlog_bytes: 1 << 20,
                event_ring: 1024,
                max_analyzers: 4,
            }),
            input: InputKind::File,
        }
    }

    #[test]
    fn a_budget_over_the_cap_names_the_setting_to_lower() {
        let b = Budget::of(&shape(1 << 20, 16));
        let err = b.check(64 << 20).unwrap_err();
        assert!(err.contains("lower --max-flows"), "{err}");
        let b = Budget::of(&shape(1000, 1 << 14));
        let err = b.check(256 << 20).unwrap_err();
        assert!(
            err.contains("lower --stream-chunks or --chunk-kib"),
            "{err}"
        );
        assert!(Budget::of(&shape(1000, 16)).check(1 << 30).is_ok());
    }

    /// Settings far past their ranges (which the command line and the file refuse) still give
    /// a budget, saturated, that no cap admits and that names a setting: no overflow.
    #[test]
    fn settings_too_large_to_multiply_out_are_refused_not_wrapped() {
        let mut s = shape(usize::MAX, usize::MAX);
        s.workers = usize::MAX;
        s.tracker.chunk_size = usize::MAX;
        s.tracker.stream_max = usize::MAX;
        s.publish = Some(PublishShape {
            pktlog_frames: u64::MAX,
            pktlog_bytes: u64::MAX,
            event_ring: 1 << 24,
            max_analyzers: u64::MAX,
        });
        s.defrag = Some(DefragConfig {
            memory_bytes: usize::MAX,
            max_datagrams: usize::MAX,
            ..DefragConfig::default()
        });
        for input in [InputKind::File, InputKind::Iface, InputKind::Dpdk] {
            s.input = input;
            let b = Budget::of(&s);
            assert_eq!(b.total(), u64::MAX);
            let err = b.check(u64::MAX).unwrap_err();
            assert!(
                err.contains("more than 16 EiB") && err.contains(": lower --"),
                "{err}"
            );
        }
        // One setting alone past what 64 bits hold: the analyzers' rings.
        let mut s = shape(1000, 16);
        s.publish.as_mut().unwrap().max_analyzers = u64::MAX;
        let err = Budget::of(&s).check(u64::MAX).unwrap_err();
        assert!(err.contains("lower --max-analyzers"), "{err}");
    }

    #[test]
    fn the_budget_grows_with_every_limit() {
        let base = Budget::of(&shape(1000, 16)).total();
        assert!(Budget::of(&shape(2000, 16)).total() > base);
        assert!(Budget::of(&shape(1000, 32)).total() >= base + 16 * (64 << 10) as u64 / 2);
        let mut s = shape(1000, 16);
        s.publish.as_mut().unwrap().max_analyzers = 8;
        assert!(Budget::of(&s).total() > base);
    }

    #[test]
    fn an_idle_connection_costs_at_most_512_bytes() {
        // The slot with its connection, the index (two 8-byte entries per connection when a
        // power-of-two --max-flows are live: it is at most half full), and the shared slot.
        let n = 1 << 20;
        // The bound also counts the list `detach_all` returns and the index's old array while
        // it grows.
        let slab = n * (FlowTable::<Conn>::slot_bytes() + size_of::<u32>());
        let index = (FlowTable::<Conn>::memory_bound(n, n) - slab) / 3 * 2;
        assert_eq!(index, 2 * n * size_of::<u64>());
        let per_flow = FlowTable::<Conn>::slot_bytes() + index / n + size_of::<FlowSlot>();
        assert!(per_flow <= 512, "{per_flow} bytes per idle connection");
    }
}
