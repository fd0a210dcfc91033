//! `mos-pcap`'s capture files and its per-connection packet keeping.
//!
//! [`CaptureWriter`] writes frames as a classic pcap file (microsecond timestamps, one link
//! type: the first frame's) or as pcapng (nanosecond timestamps, `if_tsresol` 9, one interface
//! description block per link type, written before the first frame of that link type).
//!
//! [`Keeper`] holds the packets of connections that no match has named yet, within a memory
//! budget, so that a connection named after some of its packets went by (a `mos-grep` match
//! comes once the bytes are reassembled) is still written whole: the held packets when the
//! name arrives, the later ones as they come. Connections that end without a name are let go
//! after a linger time; when the budget is full, the connections that started holding packets
//! first lose theirs first.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// The largest snap length: libpcap refuses records longer than this for most link types.
pub const MAX_SNAPLEN: u32 = 262_144;

/// `LINKTYPE_ETHERNET`, the link type of an empty file whose input announced none.
pub const LINKTYPE_ETHERNET: u16 = 1;

/// The file format written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Classic pcap: microsecond timestamps, one link type per file.
    Pcap,
    /// pcapng: nanosecond timestamps, one interface per link type.
    Pcapng,
}

impl Format {
    /// The format a file name asks for: `.pcapng` (any case) is pcapng, anything else pcap.
    pub fn from_path(path: &Path) -> Format {
        match path.extension() {
            Some(e) if e.eq_ignore_ascii_case("pcapng") => Format::Pcapng,
            _ => Format::Pcap,
        }
    }

    /// `pcap` or `pcapng`.
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "pcap" => Ok(Format::Pcap),
            "pcapng" => Ok(Format::Pcapng),
            _ => Err(format!("{s:?} is not a format (pcap or pcapng)")),
        }
    }

    /// Its name, as [`Format::parse`] takes it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Pcap => "pcap",
            Format::Pcapng => "pcapng",
        }
    }
}

/// One captured frame, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: u64,
    /// Its link type (pcap `LINKTYPE_*`).
    pub linktype: u16,
    /// Its length on the wire (at least `data.len()` once written).
    pub wirelen: u32,
    /// The captured bytes.
    pub data: Vec<u8>,
}

impl Frame {
    /// Cuts the captured bytes to `snaplen` (the wire length stays).
    pub fn truncate(&mut self, snaplen: u32) {
        let keep = self.data.len().min(snaplen as usize);
        self.wirelen = self.wirelen.max(self.data.len() as u32);
        self.data.truncate(keep);
    }

    /// Memory it takes while held.
    fn cost(&self) -> usize {
        self.data.len() + std::mem::size_of::<Frame>()
    }
}

/// pcapng block types and option codes.
mod ng {
    pub const SHB: u32 = 0x0A0D_0D0A;
    pub const IDB: u32 = 1;
    pub const EPB: u32 = 6;
    pub const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
    pub const OPT_END: u16 = 0;
    pub const SHB_USERAPPL: u16 = 4;
    pub const IF_TSRESOL: u16 = 9;
}

/// Writes frames as a pcap or pcapng file.
#[derive(Debug)]
pub struct CaptureWriter<W: Write> {
    out: W,
    format: Format,
    snaplen: u32,
    /// pcap: the file's link type, once its header is written. pcapng: the link type of each
    /// interface described so far, by interface id.
    links: Vec<u16>,
    /// The file header (pcap) or section header (pcapng) is written.
    started: bool,
    /// Frames written.
    pub packets: u64,
    /// Frames not written because a pcap file has another link type.
    pub other_linktype: u64,
}

impl<W: Write> CaptureWriter<W> {
    /// A writer of `format` into `out`, cutting frames to `snaplen` bytes (1 to
    /// [`MAX_SNAPLEN`]; larger is taken as the maximum). Nothing is written before the first
    /// frame or [`CaptureWriter::finish`].
    pub fn new(out: W, format: Format, snaplen: u32) -> CaptureWriter<W> {
        CaptureWriter {
            out,
            format,
            snaplen: snaplen.clamp(1, MAX_SNAPLEN),
            links: Vec::new(),
            started: false,
            packets: 0,
            other_linktype: 0,
        }
    }

    /// The format written.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The link types in the file so far (pcap: at most one).
    pub fn linktypes(&self) -> &[u16] {
        &self.links
    }

    /// Writes `f` (cut to the snap length); `Ok(false)` when a pcap file of another link type
    /// cannot take it (counted in [`CaptureWriter::other_linktype`]).
    pub fn write(&mut self, f: &Frame) -> io::Result<bool> {
        let caplen = f.data.len().min(self.snaplen as usize);
        let data = &f.data[..caplen];
        let wirelen = f.wirelen.max(f.data.len() as u32);
        match self.format {
            Format::Pcap => {
                if !self.started {
                    self.pcap_header(f.linktype)?;
                }
                if self.links.first() != Some(&f.linktype) {
                    self.other_linktype += 1;
                    return Ok(false);
                }
                let secs = (f.ts_ns / 1_000_000_000) as u32;
                let usecs = (f.ts_ns % 1_000_000_000 / 1_000) as u32;
                let mut rec = [0u8; 16];
                rec[0..4].copy_from_slice(&secs.to_le_bytes());
                rec[4..8].copy_from_slice(&usecs.to_le_bytes());
                rec[8..12].copy_from_slice(&(caplen as u32).to_le_bytes());
                rec[12..16].copy_from_slice(&wirelen.to_le_bytes());
                self.out.write_all(&rec)?;
                self.out.write_all(data)?;
            }
            Format::Pcapng => {
                if !self.started {
                    self.section_header()?;
                }
                let iface = match self.links.iter().position(|&l| l == f.linktype) {
                    Some(i) => i,
                    None => self.interface(f.linktype)?,
                };
                let pad = (4 - caplen % 4) % 4;
                let total = (32 + caplen + pad) as u32;
                let mut hdr = [0u8; 28];
                hdr[0..4].copy_from_slice(&ng::EPB.to_le_bytes());
                hdr[4..8].copy_from_slice(&total.to_le_bytes());
                hdr[8..12].copy_from_slice(&(iface as u32).to_le_bytes());
                hdr[12..16].copy_from_slice(&((f.ts_ns >> 32) as u32).to_le_bytes());
                hdr[16..20].copy_from_slice(&(f.ts_ns as u32).to_le_bytes());
                hdr[20..24].copy_from_slice(&(caplen as u32).to_le_bytes());
                hdr[24..28].copy_from_slice(&wirelen.to_le_bytes());
                self.out.write_all(&hdr)?;
                self.out.write_all(data)?;
                self.out.write_all(&[0u8; 3][..pad])?;
                self.out.write_all(&total.to_le_bytes())?;
            }
        }
        self.packets += 1;
        Ok(true)
    }

    /// Flushes what is buffered below.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Ends the file: an empty one still gets its header (pcap) or section header and one
    /// interface (pcapng) of `linktype`, so that readers take it; flushes and gives the
    /// output back.
    pub fn finish(mut self, linktype: u16) -> io::Result<W> {
        match self.format {
            Format::Pcap if !self.started => self.pcap_header(linktype)?,
            Format::Pcapng => {
                if !self.started {
                    self.section_header()?;
                }
                if self.links.is_empty() {
                    self.interface(linktype)?;
                }
            }
            Format::Pcap => {}
        }
        self.out.flush()?;
        Ok(self.out)
    }

    /// The pcap file header: little-endian, microseconds, version 2.4.
    fn pcap_header(&mut self, linktype: u16) -> io::Result<()> {
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&0xA1B2_C3D4u32.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone and sigfigs stay 0.
        h[16..20].copy_from_slice(&self.snaplen.to_le_bytes());
        h[20..24].copy_from_slice(&u32::from(linktype).to_le_bytes());
        self.out.write_all(&h)?;
        self.links.push(linktype);
        self.started = true;
        Ok(())
    }

    /// The section header block: little-endian, version 1.0, length unknown, and the
    /// program that wrote it.
    fn section_header(&mut self) -> io::Result<()> {
        let appl = format!("mos-pcap {}", env!("CARGO_PKG_VERSION"));
        let mut body = Vec::with_capacity(64);
        body.extend_from_slice(&ng::BYTE_ORDER_MAGIC.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&u64::MAX.to_le_bytes());
        option(&mut body, ng::SHB_USERAPPL, appl.as_bytes());
        option(&mut body, ng::OPT_END, &[]);
        self.block(ng::SHB, &body)?;
        self.started = true;
        Ok(())
    }

    /// An interface description block for `linktype`, with nanosecond timestamps; returns
    /// its interface id.
    fn interface(&mut self, linktype: u16) -> io::Result<usize> {
        let mut body = Vec::with_capacity(24);
        body.extend_from_slice(&linktype.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&self.snaplen.to_le_bytes());
        option(&mut body, ng::IF_TSRESOL, &[9]);
        option(&mut body, ng::OPT_END, &[]);
        self.block(ng::IDB, &body)?;
        self.links.push(linktype);
        Ok(self.links.len() - 1)
    }

    /// A pcapng block around `body` (whose length is a multiple of 4).
    fn block(&mut self, kind: u32, body: &[u8]) -> io::Result<()> {
        let total = (body.len() + 12) as u32;
        self.out.write_all(&kind.to_le_bytes())?;
        self.out.write_all(&total.to_le_bytes())?;
        self.out.write_all(body)?;
        self.out.write_all(&total.to_le_bytes())
    }
}

/// Appends a pcapng option (code, length, value padded to 4 bytes).
fn option(body: &mut Vec<u8>, code: u16, value: &[u8]) {
    body.extend_from_slice(&code.to_le_bytes());
    body.extend_from_slice(&(value.len() as u16).to_le_bytes());
    body.extend_from_slice(value);
    body.resize(body.len() + (4 - value.len() % 4) % 4, 0);
}

/// What [`Keeper`] counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeepStats {
    /// Packets dropped from the buffer because it was full: the held packets of the evicted
    /// connections, and the later packets of those connections while still unnamed.
    pub evicted_packets: u64,
    /// Connections whose held packets were evicted.
    pub evicted_conns: u64,
    /// Connections let go unnamed (ended and lingered, or still held when names stopped).
    pub unnamed_conns: u64,
    /// Their packets, not written.
    pub unnamed_packets: u64,
    /// Names of connections let go before the name came (after their linger, or after the
    /// names stopped): their packets were not written.
    pub named_late: u64,
}

/// One connection as the keeper knows it.
#[derive(Debug, Default)]
struct Held {
    frames: VecDeque<Frame>,
    bytes: usize,
    /// Its place in the eviction order while it holds frames.
    age: Option<u64>,
    named: bool,
    /// Its held frames were evicted: its later frames are not held either.
    evicted: bool,
    /// When it ended.
    ended: Option<Instant>,
}

/// Recently let-go connections remembered, to tell a late name from an unknown one.
const FORGOTTEN: usize = 65_536;

/// The packets of connections that no match has named yet, within a memory budget.
#[derive(Debug)]
pub struct Keeper {
    budget: usize,
    linger: Duration,
    used: usize,
    conns: HashMap<String, Held>,
    /// Connections holding frames, by when they first held one (evicted first to last).
    by_age: BTreeMap<u64, String>,
    next_age: u64,
    /// Every uid named so far.
    named: HashSet<String>,
    /// How many of them this keeper saw (a packet of theirs came, before or after the name).
    named_seen: u64,
    /// Connections let go unnamed, the most recent [`FORGOTTEN`].
    gone: HashSet<String>,
    gone_order: VecDeque<String>,
    /// No more names will come: nothing is held any more.
    closed: bool,
    /// What was counted.
    pub stats: KeepStats,
}

impl Keeper {
    /// A keeper holding at most `budget` bytes of frames (and their bookkeeping), letting
    /// ended connections go `linger` after their end unless named.
    pub fn new(budget: usize, linger: Duration) -> Keeper {
        Keeper {
            budget,
            linger,
            used: 0,
            conns: HashMap::new(),
            by_age: BTreeMap::new(),
            next_age: 0,
            named: HashSet::new(),
            named_seen: 0,
            gone: HashSet::new(),
            gone_order: VecDeque::new(),
            closed: false,
            stats: KeepStats::default(),
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Whether names still come.
    pub fn is_open(&self) -> bool {
        !self.closed
    }

    /// A packet of connection `uid`: `Some(f)` to write now (the connection is named), `None`
    /// when it is held or dropped.
    pub fn packet(&mut self, uid: &str, f: Frame) -> Option<Frame> {
        if !self.conns.contains_key(uid) {
            let named = self.named.contains(uid);
            self.named_seen += u64::from(named);
            self.conns.insert(
                uid.to_owned(),
                Held {
                    named,
                    ..Held::default()
                },
            );
        }
        let h = self.conns.get_mut(uid).expect("inserted above");
        if h.named {
            return Some(f);
        }
        if self.closed {
            self.stats.unnamed_packets += 1;
            return None;
        }
        if h.evicted {
            self.stats.evicted_packets += 1;
            return None;
        }
        let cost = f.cost();
        if h.age.is_none() {
            h.age = Some(self.next_age);
            self.by_age.insert(self.next_age, uid.to_owned());
            self.next_age += 1;
        }
        while self.used + cost > self.budget {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.evict(&oldest);
        }
        let h = self.conns.get_mut(uid).expect("evicting keeps the entry");
        if h.evicted || cost > self.budget {
            // It was the oldest itself, or this one frame is more than the whole budget.
            if !h.evicted {
                h.evicted = true;
                self.stats.evicted_conns += 1;
                if let Some(a) = h.age.take() {
                    self.by_age.remove(&a);
                }
            }
            self.stats.evicted_packets += 1;
            return None;
        }
        h.bytes += cost;
        h.frames.push_back(f);
        self.used += cost;
        None
    }

    /// Drops what `uid` holds, as an eviction.
    fn evict(&mut self, uid: &str) {
        if let Some(h) = self.conns.get_mut(uid) {
            self.stats.evicted_packets += h.frames.len() as u64;
            self.stats.evicted_conns += u64::from(!h.evicted);
            h.evicted = true;
            h.age = None;
            self.used -= h.bytes;
            h.bytes = 0;
            h.frames = VecDeque::new();
        }
    }

    /// A match names `uid`: returns its held frames, in order, to write now (its later
    /// frames come back from [`Keeper::packet`]). A name given again does nothing.
    pub fn name(&mut self, uid: &str) -> Vec<Frame> {
        if !self.named.insert(uid.to_owned()) {
            return Vec::new();
        }
        if self.gone.contains(uid) {
            self.named_seen += 1;
            self.stats.named_late += 1;
            return Vec::new();
        }
        let Some(h) = self.conns.get_mut(uid) else {
            return Vec::new();
        };
        self.named_seen += 1;
        h.named = true;
        if let Some(a) = h.age.take() {
            self.by_age.remove(&a);
        }
        self.used -= h.bytes;
        h.bytes = 0;
        let frames = std::mem::take(&mut h.frames).into();
        if h.ended.is_some() {
            self.conns.remove(uid);
        }
        frames
    }

    /// Connection `uid` ended at `now`: named, it is done; unnamed, its frames stay for the
    /// linger time (none once names stopped coming).
    pub fn ended(&mut self, uid: &str, now: Instant) {
        let Some(h) = self.conns.get_mut(uid) else {
            return;
        };
        if h.named {
            self.conns.remove(uid);
        } else if self.closed {
            self.let_go(uid);
        } else {
            h.ended.get_or_insert(now);
        }
    }

    /// Lets go the connections that ended unnamed `linger` or more before `now`.
    pub fn sweep(&mut self, now: Instant) {
        let due: Vec<String> = self
            .conns
            .iter()
            .filter(|(_, h)| {
                !h.named
                    && h.ended
                        .is_some_and(|t| now.duration_since(t) >= self.linger)
            })
            .map(|(u, _)| u.clone())
            .collect();
        for uid in due {
            self.let_go(&uid);
        }
    }

    /// No more names will come: every unnamed connection's frames are let go, and from now on
    /// unnamed connections are not held.
    pub fn close(&mut self) {
        self.closed = true;
        let unnamed: Vec<String> = self
            .conns
            .iter()
            .filter(|(_, h)| !h.named)
            .map(|(u, _)| u.clone())
            .collect();
        for uid in unnamed {
            let ended = self.conns.get(&uid).is_some_and(|h| h.ended.is_some());
            if ended {
                self.let_go(&uid);
            } else if let Some(h) = self.conns.get_mut(&uid) {
                // Still open: its entry stays (for the count of its later packets), its
                // frames go.
                self.stats.unnamed_packets += h.frames.len() as u64;
                if let Some(a) = h.age.take() {
                    self.by_age.remove(&a);
                }
                self.used -= h.bytes;
                h.bytes = 0;
                h.frames = VecDeque::new();
            }
        }
    }

    /// Forgets an unnamed connection and its frames.
    fn let_go(&mut self, uid: &str) {
        let Some(h) = self.conns.remove(uid) else {
            return;
        };
        if let Some(a) = h.age {
            self.by_age.remove(&a);
        }
        self.used -= h.bytes;
        self.stats.unnamed_conns += 1;
        self.stats.unnamed_packets += h.frames.len() as u64;
        if self.gone_order.len() == FORGOTTEN {
            if let Some(old) = self.gone_order.pop_front() {
                self.gone.remove(&old);
            }
        }
        self.gone.insert(uid.to_owned());
        self.gone_order.push_back(uid.to_owned());
    }

    /// Names given that no connection seen so far had.
    pub fn never_seen(&self) -> u64 {
        self.named.len() as u64 - self.named_seen
    }

    /// Distinct names given.
    pub fn names(&self) -> u64 {
        self.named.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ts_ns: u64, linktype: u16, len: usize) -> Frame {
        Frame {
            ts_ns,
            linktype,
            wirelen: len as u32,
            data: (0..len).map(|i| i as u8).collect(),
        }
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn format_from_the_name() {
        assert_eq!(Format::from_path(Path::new("a.pcapng")), Format::Pcapng);
        assert_eq!(Format::from_path(Path::new("a.PCAPNG")), Format::Pcapng);
        assert_eq!(Format::from_path(Path::new("a.pcap")), Format::Pcap);
        assert_eq!(Format::from_path(Path::new("-")), Format::Pcap);
        assert!(Format::parse("ng").is_err());
    }

    #[test]
    fn pcap_has_one_link_type_and_microseconds() {
        let mut w = CaptureWriter::new(Vec::new(), Format::Pcap, 100);
        assert!(w.write(&frame(1_700_000_000_123_456_789, 1, 60)).unwrap());
        assert!(!w.write(&frame(1_700_000_001_000_000_000, 101, 40)).unwrap());
        // Cut to the snap length, the wire length kept.
        assert!(w.write(&frame(1_700_000_002_000_000_000, 1, 150)).unwrap());
        assert_eq!((w.packets, w.other_linktype), (2, 1));
        let b = w.finish(1).unwrap();
        assert_eq!(u32_at(&b, 0), 0xA1B2_C3D4);
        assert_eq!(u32_at(&b, 16), 100);
        assert_eq!(u32_at(&b, 20), 1);
        assert_eq!((u32_at(&b, 24), u32_at(&b, 28)), (1_700_000_000, 123_456));
        assert_eq!((u32_at(&b, 32), u32_at(&b, 36)), (60, 60));
        let second = 24 + 16 + 60;
        assert_eq!(
            (u32_at(&b, second + 8), u32_at(&b, second + 12)),
            (100, 150)
        );
        assert_eq!(b.len(), second + 16 + 100);
    }

    #[test]
    fn pcapng_describes_each_link_type_once_in_nanoseconds() {
        let mut w = CaptureWriter::new(Vec::new(), Format::Pcapng, MAX_SNAPLEN);
        let ts = 1_700_000_000_123_456_789u64;
        w.write(&frame(ts, 1, 61)).unwrap();
        w.write(&frame(ts + 1, 101, 40)).unwrap();
        w.write(&frame(ts + 2, 1, 62)).unwrap();
        assert_eq!(w.linktypes(), &[1, 101]);
        let b = w.finish(1).unwrap();
        // Walk the blocks: SHB, IDB(1), EPB, IDB(101), EPB, EPB.
        let mut at = 0;
        let mut kinds = Vec::new();
        let mut epbs = Vec::new();
        while at < b.len() {
            let (kind, len) = (u32_at(&b, at), u32_at(&b, at + 4) as usize);
            assert_eq!(len % 4, 0);
            assert_eq!(
                u32_at(&b, at + len - 4) as usize,
                len,
                "trailer of block at {at}"
            );
            if kind == ng::IDB {
                kinds.push(format!("idb{}", u16::from_le_bytes([b[at + 8], b[at + 9]])));
                // if_tsresol 9 is the first option.
                assert_eq!(&b[at + 16..at + 21], &[9, 0, 1, 0, 9]);
            } else if kind == ng::EPB {
                kinds.push("epb".into());
                let t = (u64::from(u32_at(&b, at + 12)) << 32) | u64::from(u32_at(&b, at + 16));
                epbs.push((u32_at(&b, at + 8), t, u32_at(&b, at + 20)));
            } else {
                assert_eq!(kind, ng::SHB);
                assert_eq!(u32_at(&b, at + 8), ng::BYTE_ORDER_MAGIC);
                kinds.push("shb".into());
            }
            at += len;
        }
        assert_eq!(kinds, ["shb", "idb1", "epb", "idb101", "epb", "epb"]);
        assert_eq!(epbs, [(0, ts, 61), (1, ts + 1, 40), (0, ts + 2, 62)]);
    }

    #[test]
    fn an_empty_file_is_still_readable() {
        let b = CaptureWriter::new(Vec::new(), Format::Pcap, 65535)
            .finish(113)
            .unwrap();
        assert_eq!((b.len(), u32_at(&b, 20)), (24, 113));
        let b = CaptureWriter::new(Vec::new(), Format::Pcapng, 65535)
            .finish(1)
            .unwrap();
        let shb = u32_at(&b, 4) as usize;
        assert_eq!(u32_at(&b, shb), ng::IDB);
    }

    const LONG: Duration = Duration::from_secs(10);

    #[test]
    fn a_named_connection_gets_its_held_packets_then_the_rest() {
        let mut k = Keeper::new(1 << 20, LONG);
        assert_eq!(k.packet("A", frame(1, 1, 10)), None);
        assert_eq!(k.packet("B", frame(2, 1, 10)), None);
        assert_eq!(k.packet("A", frame(3, 1, 10)), None);
        let got = k.name("A");
        assert_eq!(got.iter().map(|f| f.ts_ns).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(k.packet("A", frame(4, 1, 10)).map(|f| f.ts_ns), Some(4));
        // Named again: nothing more.
        assert!(k.name("A").is_empty());
        // A name before the connection: its packets are written as they come.
        assert!(k.name("C").is_empty());
        assert_eq!(k.never_seen(), 1);
        assert!(k.packet("C", frame(5, 1, 10)).is_some());
        assert_eq!((k.never_seen(), k.names()), (0, 2));
    }

    #[test]
    fn unnamed_connections_linger_after_their_end_then_go() {
        let mut k = Keeper::new(1 << 20, LONG);
        let t0 = Instant::now();
        k.packet("A", frame(1, 1, 10));
        k.packet("B", frame(2, 1, 10));
        k.ended("A", t0);
        k.ended("B", t0);
        k.sweep(t0 + Duration::from_secs(5));
        // Named within the linger time: written.
        assert_eq!(k.name("B").len(), 1);
        k.sweep(t0 + LONG);
        assert_eq!(k.used(), 0);
        assert_eq!((k.stats.unnamed_conns, k.stats.unnamed_packets), (1, 1));
        // Named after it went: late, but seen.
        assert!(k.name("A").is_empty());
        assert_eq!((k.stats.named_late, k.never_seen()), (1, 0));
    }

    #[test]
    fn the_oldest_connections_are_evicted_first_when_the_budget_is_full() {
        let each = frame(0, 1, 100).cost();
        let mut k = Keeper::new(3 * each, LONG);
        k.packet("A", frame(1, 1, 100));
        k.packet("B", frame(2, 1, 100));
        k.packet("A", frame(3, 1, 100));
        // Full: A, the first to hold a packet, loses both of its.
        k.packet("C", frame(4, 1, 100));
        assert_eq!((k.stats.evicted_conns, k.stats.evicted_packets), (1, 2));
        assert_eq!(k.used(), 2 * each);
        // A's later packets are not held either; once named they are written.
        assert_eq!(k.packet("A", frame(5, 1, 100)), None);
        assert_eq!(k.stats.evicted_packets, 3);
        assert!(k.name("A").is_empty());
        assert!(k.packet("A", frame(6, 1, 100)).is_some());
        assert_eq!(k.name("B").len(), 1);
        assert_eq!(k.name("C").len(), 1);
        assert_eq!(k.used(), 0);
        // One frame bigger than the whole budget is not held.
        assert_eq!(k.packet("D", frame(7, 1, 400)), None);
        assert_eq!((k.stats.evicted_conns, k.stats.evicted_packets), (2, 4));
    }

    #[test]
    fn once_names_stop_nothing_unnamed_is_held() {
        let mut k = Keeper::new(1 << 20, LONG);
        let t0 = Instant::now();
        k.name("B");
        k.packet("A", frame(1, 1, 10));
        k.ended("A", t0);
        k.packet("C", frame(2, 1, 10));
        k.close();
        assert_eq!(k.used(), 0);
        assert_eq!((k.stats.unnamed_conns, k.stats.unnamed_packets), (1, 2));
        assert_eq!(k.packet("C", frame(3, 1, 10)), None);
        assert!(k.packet("B", frame(4, 1, 10)).is_some());
        assert_eq!(k.stats.unnamed_packets, 3);
        assert_eq!(k.never_seen(), 0);
    }
}
