//! Capture files: classic pcap and pcapng, read from disk through one reusable buffer or from
//! memory.
//!
//! Every record is checked before its bytes are handed out: a record that runs past the end of
//! the file is [`CaptureError::Truncated`], one whose lengths cannot be right is
//! [`CaptureError::Malformed`]; both name the byte offset where the record starts, and end the
//! capture (later calls return `Ok(None)`).
//!
//! A regular file is read straight. Anything else (a pipe, a FIFO, a terminal, a socket) can
//! stall with its writer, so it is waited on with `poll` in short turns that look at a stop
//! flag, if the capture was given one: once it is set, the input ends there, as if the file
//! ended (a record cut short by it is not an error), and a FIFO still waiting for a writer
//! ends too.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{CaptureBackend, CaptureError, LinkType, RawPacket};

/// The read buffer of a file on disk; it grows for a record larger than this.
const BUF_SIZE: usize = 1 << 20;
/// No record or block is larger: a length past it is a corrupt length field, not a frame.
const MAX_RECORD: usize = 256 << 20;
const NS_PER_SEC: u64 = 1_000_000_000;

/// Classic pcap: a 24-byte file header, then 16-byte record headers each followed by the
/// captured bytes.
mod pcap {
    /// Microsecond timestamps, in the writer's byte order (read big-endian).
    pub const MAGIC_US: u32 = 0xa1b2_c3d4;
    /// Nanosecond timestamps.
    pub const MAGIC_NS: u32 = 0xa1b2_3c4d;
    pub const FILE_HEADER_LEN: usize = 24;
    pub const SNAPLEN: usize = 16;
    /// The link type is the low 16 bits; the high bits may hold FCS information.
    pub const LINKTYPE: usize = 20;
    pub const LINKTYPE_MASK: u32 = 0xffff;
    pub const RECORD_HEADER_LEN: usize = 16;
    pub const TS_SEC: usize = 0;
    pub const TS_FRAC: usize = 4;
    pub const INCL_LEN: usize = 8;
    pub const ORIG_LEN: usize = 12;
}

/// pcapng: blocks of type, total length, body, total length again. Offsets are from the
/// block's start.
mod ng {
    pub const SHB: u32 = 0x0a0d_0d0a;
    pub const IDB: u32 = 1;
    pub const PB: u32 = 2;
    pub const SPB: u32 = 3;
    pub const EPB: u32 = 6;
    /// The section header's byte-order magic, read big-endian.
    pub const BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;
    pub const BLOCK_TYPE: usize = 0;
    pub const BLOCK_LEN: usize = 4;
    /// Type and length before the body, length again after it.
    pub const BLOCK_HEADER_LEN: usize = 8;
    pub const BLOCK_OVERHEAD: usize = 12;
    pub const SHB_BOM: usize = 8;
    pub const SHB_MAJOR: usize = 12;
    pub const SHB_MIN_LEN: usize = 28;
    pub const IDB_LINKTYPE: usize = 8;
    pub const IDB_SNAPLEN: usize = 12;
    pub const IDB_OPTIONS: usize = 16;
    pub const IDB_MIN_LEN: usize = 20;
    /// Enhanced and obsolete packet blocks share this layout, except that the obsolete one
    /// has a 16-bit interface id (followed by a drop count).
    pub const PKT_IFACE: usize = 8;
    pub const PKT_TS_HIGH: usize = 12;
    pub const PKT_TS_LOW: usize = 16;
    pub const PKT_CAPLEN: usize = 20;
    pub const PKT_ORIGLEN: usize = 24;
    pub const PKT_DATA: usize = 28;
    pub const SPB_ORIGLEN: usize = 8;
    pub const SPB_DATA: usize = 12;
    pub const OPT_END: u16 = 0;
    pub const OPT_IF_TSRESOL: u16 = 9;
    pub const OPT_IF_TSOFFSET: u16 = 14;
}

/// How long a wait for bytes from a pipe, FIFO or terminal lasts before the stop flag is
/// looked at again: how late a stop is seen while the writer sends nothing.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Where the bytes of a file come from.
#[derive(Debug)]
struct Source {
    file: File,
    /// Not a regular file: wait with `poll` before each read (see the module's comment).
    polled: bool,
    /// Set from elsewhere (a signal handler) to end the input where it is.
    stop: Option<Arc<AtomicBool>>,
}

impl Source {
    fn new(file: File, stop: Option<Arc<AtomicBool>>) -> std::io::Result<Source> {
        let st = rustix::fs::fstat(&file)?;
        let polled =
            rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile;
        Ok(Source { file, polled, stop })
    }

    /// Reads some bytes into `buf`: `Some(0)` at the end of the file, `None` when the stop
    /// flag ended the wait for them.
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        if !self.polled {
            return self.file.read(buf).map(Some);
        }
        let turn = self.stop.as_ref().map(|_| rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: STOP_POLL.as_nanos() as i64,
        });
        loop {
            if self
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed))
            {
                return Ok(None);
            }
            // A FIFO opened before any writer reads as ended, but polls as not ready (Linux
            // reports no hang-up for a writer that never came): read only once poll says so.
            let mut fds = [rustix::event::PollFd::new(
                &self.file,
                rustix::event::PollFlags::IN,
            )];
            match rustix::event::poll(&mut fds, turn.as_ref()) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            match self.file.read(buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                r => return r.map(Some),
            }
        }
    }
}

/// The bytes of the input: all of them (from memory), or a window of a file.
#[derive(Debug)]
struct Input {
    /// `buf[pos..len]` holds the unread bytes starting at file offset `base + pos`.
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    base: u64,
    /// `None` once the file has hit its end (or was stopped), and for input from memory.
    file: Option<Source>,
    total: u64,
    /// The stop flag ended the input.
    stopped: bool,
}

impl Input {
    /// Makes `need` unread bytes available; false when the input ends (or is stopped) first.
    fn fill(&mut self, need: usize) -> std::io::Result<bool> {
        if self.len - self.pos >= need {
            return Ok(true);
        }
        if self.file.is_none() {
            return Ok(false);
        }
        self.buf.copy_within(self.pos..self.len, 0);
        self.base += self.pos as u64;
        self.len -= self.pos;
        self.pos = 0;
        if need > self.buf.len() {
            self.buf.resize(need, 0);
        }
        while self.len < need {
            let Some(src) = self.file.as_mut() else {
                return Ok(false);
            };
            match src.read(&mut self.buf[self.len..]) {
                Ok(Some(0)) => {
                    self.file = None;
                    return Ok(false);
                }
                Ok(Some(n)) => self.len += n,
                Ok(None) => {
                    self.stopped = true;
                    self.file = None;
                    return Ok(false);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// The unread bytes available (call after [`Input::fill`]).
    fn avail(&self) -> &[u8] {
        &self.buf[self.pos..self.len]
    }

    /// File offset of the next unread byte.
    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }
}

fn rd16(b: &[u8], off: usize, big_endian: bool) -> u16 {
    let v = [b[off], b[off + 1]];
    if big_endian {
        u16::from_be_bytes(v)
    } else {
        u16::from_le_bytes(v)
    }
}

fn rd32(b: &[u8], off: usize, big_endian: bool) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[off..off + 4]);
    if big_endian {
        u32::from_be_bytes(v)
    } else {
        u32::from_le_bytes(v)
    }
}

fn rd64(b: &[u8], off: usize, big_endian: bool) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[off..off + 8]);
    if big_endian {
        u64::from_be_bytes(v)
    } else {
        u64::from_le_bytes(v)
    }
}

/// How an interface's timestamp units become nanoseconds (`if_tsresol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TsResolution {
    /// 10^-n seconds.
    Pow10(u8),
    /// 2^-n seconds.
    Pow2(u8),
}

impl TsResolution {
    fn from_option(v: u8) -> Self {
        if v & 0x80 == 0 {
            TsResolution::Pow10(v)
        } else {
            TsResolution::Pow2(v & 0x7f)
        }
    }

    fn to_ns(self, units: u64) -> i128 {
        let units = u128::from(units);
        let ns = match self {
            TsResolution::Pow10(e) if e <= 9 => units * 10u128.pow(u32::from(9 - e)),
            TsResolution::Pow10(e) => 10u128
                .checked_pow(u32::from(e - 9))
                .map_or(0, |div| units / div),
            TsResolution::Pow2(e) => (units * u128::from(NS_PER_SEC)) >> e,
        };
        // Below 2^94, so it fits.
        ns as i128
    }
}

/// One pcapng interface, from its description block.
#[derive(Clone, Copy, Debug)]
struct Interface {
    link: LinkType,
    snaplen: u32,
    resolution: TsResolution,
    /// `if_tsoffset`: seconds added to every timestamp.
    offset_s: i64,
}

impl Interface {
    fn ts_ns(&self, units: u64) -> u64 {
        let ns = self.resolution.to_ns(units) + i128::from(self.offset_s) * i128::from(NS_PER_SEC);
        ns.clamp(0, i128::from(u64::MAX)) as u64
    }
}

#[derive(Debug)]
enum Format {
    Pcap {
        big_endian: bool,
        nanos: bool,
        link: LinkType,
        snaplen: u32,
    },
    Pcapng {
        /// Byte order of the current section.
        big_endian: bool,
        /// The current section's interfaces, by id.
        interfaces: Vec<Interface>,
    },
}

/// Where the next frame is in the buffer, and what it is.
#[derive(Debug)]
struct Record {
    start: usize,
    len: usize,
    link: LinkType,
    ts_ns: u64,
    orig_len: u32,
}

/// A pcap or pcapng file, read front to back.
#[derive(Debug)]
pub struct FileCapture {
    path: String,
    input: Input,
    format: Format,
    /// Set after the end or an error: every later call returns `Ok(None)`.
    done: bool,
    /// Simple packet blocks carry no timestamp; they get the last one seen.
    last_ts_ns: u64,
}

impl FileCapture {
    /// The most bytes a reader holds: its buffer, which grows to the largest record read
    /// (at most 256 MiB, the longest record accepted).
    pub fn memory_bound() -> usize {
        MAX_RECORD.max(BUF_SIZE)
    }

    /// The link types its frames may have: a pcap file's one, or, for a pcapng file (whose
    /// interfaces may be described anywhere in it), every link type mos reads.
    pub fn link_types(&self) -> Vec<LinkType> {
        match self.format {
            Format::Pcap { link, .. } => vec![link],
            Format::Pcapng { .. } => LinkType::READ.to_vec(),
        }
    }

    /// Opens a capture file, reads its file header, and streams the rest on demand.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CaptureError> {
        Self::open_with_buffer(path, BUF_SIZE, None)
    }

    /// [`FileCapture::open`], ended where it is once `stop` is set, even while it waits for
    /// a writer that sends nothing (a pipe, a FIFO): what was read before counts, and the
    /// capture then reads as ended (`Ok(None)`), with [`FileCapture::stopped`] true. Stopped
    /// before its file header came, it reads as an empty capture.
    pub fn open_until(path: impl AsRef<Path>, stop: Arc<AtomicBool>) -> Result<Self, CaptureError> {
        Self::open_with_buffer(path, BUF_SIZE, Some(stop))
    }

    fn open_with_buffer(
        path: impl AsRef<Path>,
        buf_size: usize,
        stop: Option<Arc<AtomicBool>>,
    ) -> Result<Self, CaptureError> {
        use rustix::fs::{Mode, OFlags};
        let name = path.as_ref().display().to_string();
        let io_err = |error| CaptureError::Io {
            path: name.clone(),
            error,
        };
        // Not blocking: opening a FIFO would otherwise wait for a writer, deaf to the stop
        // flag (reads wait in poll instead; a regular file ignores the flag).
        let fd = rustix::fs::open(
            path.as_ref(),
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(e.into()))?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(io_err)?;
        let total = if meta.is_file() { meta.len() } else { 0 };
        let input = Input {
            buf: vec![0; buf_size.max(1)],
            pos: 0,
            len: 0,
            base: 0,
            file: Some(Source::new(file, stop).map_err(io_err)?),
            total,
            stopped: false,
        };
        Self::start(name, input)
    }

    /// Reads a capture from standard input (`--pcap -`), front to back as from a file; its
    /// length is not known, so progress has no total.
    pub fn stdin() -> Result<Self, CaptureError> {
        Self::stdin_with(None)
    }

    /// [`FileCapture::stdin`], ended where it is once `stop` is set, as
    /// [`FileCapture::open_until`].
    pub fn stdin_until(stop: Arc<AtomicBool>) -> Result<Self, CaptureError> {
        Self::stdin_with(Some(stop))
    }

    fn stdin_with(stop: Option<Arc<AtomicBool>>) -> Result<Self, CaptureError> {
        let name = "standard input".to_string();
        let io_err = |error| CaptureError::Io {
            path: name.clone(),
            error,
        };
        // Standard input's file description is shared with whoever started the sensor: it is
        // left blocking, and waited on with poll before each read.
        let file = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map(File::from)
            .map_err(io_err)?;
        let input = Input {
            buf: vec![0; BUF_SIZE],
            pos: 0,
            len: 0,
            base: 0,
            file: Some(Source::new(file, stop).map_err(io_err)?),
            total: 0,
            stopped: false,
        };
        Self::start(name, input)
    }

    /// Reads a capture that is already in memory; `name` stands for the path in errors.
    pub fn from_bytes(name: impl Into<String>, data: Vec<u8>) -> Result<Self, CaptureError> {
        let len = data.len();
        let input = Input {
            buf: data,
            pos: 0,
            len,
            base: 0,
            file: None,
            total: len as u64,
            stopped: false,
        };
        Self::start(name.into(), input)
    }

    /// Whether the stop flag ended the input (before its end).
    pub fn stopped(&self) -> bool {
        self.input.stopped
    }

    /// Gives back the buffer of a capture read with [`FileCapture::from_bytes`] (whole), so a
    /// benchmark can replay the same bytes again without copying them.
    pub fn into_bytes(self) -> Vec<u8> {
        self.input.buf
    }

    /// The snap length of the file (classic pcap) or of interface 0 (pcapng; 0 when there is
    /// none yet or it sets no limit).
    pub fn snaplen(&self) -> u32 {
        match &self.format {
            Format::Pcap { snaplen, .. } => *snaplen,
            Format::Pcapng { interfaces, .. } => interfaces.first().map_or(0, |i| i.snaplen),
        }
    }

    fn start(path: String, input: Input) -> Result<Self, CaptureError> {
        let mut cap = FileCapture {
            path,
            input,
            format: Format::Pcapng {
                big_endian: false,
                interfaces: Vec::new(),
            },
            done: false,
            last_ts_ns: 0,
        };
        match cap.read_file_header() {
            Ok(()) => Ok(cap),
            // Stopped before the header was all there: an empty capture, not a bad one.
            Err(CaptureError::Truncated { .. } | CaptureError::NotACapture { .. })
                if cap.input.stopped =>
            {
                cap.done = true;
                Ok(cap)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads the file header (classic pcap) or the first section header (pcapng).
    fn read_file_header(&mut self) -> Result<(), CaptureError> {
        let cap = self;
        if !cap.fill(4)? {
            let got = cap.input.avail();
            let mut magic = [0u8; 4];
            magic[..got.len()].copy_from_slice(got);
            let known = [pcap::MAGIC_US, pcap::MAGIC_NS, ng::SHB]
                .iter()
                .flat_map(|m| [m.to_be_bytes(), m.to_le_bytes()])
                .any(|m| m.starts_with(got));
            if got.is_empty() || !known {
                return Err(cap.not_a_capture(u32::from_be_bytes(magic)));
            }
            return Err(cap.truncated(0, "file header"));
        }
        let b = cap.input.avail();
        let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let (big_endian, nanos) = match magic {
            ng::SHB => return cap.read_section_header(),
            pcap::MAGIC_US => (true, false),
            pcap::MAGIC_NS => (true, true),
            m if m == pcap::MAGIC_US.swap_bytes() => (false, false),
            m if m == pcap::MAGIC_NS.swap_bytes() => (false, true),
            m => return Err(cap.not_a_capture(m)),
        };
        if !cap.fill(pcap::FILE_HEADER_LEN)? {
            return Err(cap.truncated(0, "pcap file header"));
        }
        let b = cap.input.avail();
        let linktype = rd32(b, pcap::LINKTYPE, big_endian) & pcap::LINKTYPE_MASK;
        cap.format = Format::Pcap {
            big_endian,
            nanos,
            link: LinkType::from_linktype(linktype),
            snaplen: rd32(b, pcap::SNAPLEN, big_endian),
        };
        cap.input.pos += pcap::FILE_HEADER_LEN;
        Ok(())
    }

    fn fill(&mut self, need: usize) -> Result<bool, CaptureError> {
        self.input.fill(need).map_err(|error| CaptureError::Io {
            path: self.path.clone(),
            error,
        })
    }

    fn not_a_capture(&self, magic: u32) -> CaptureError {
        CaptureError::NotACapture {
            path: self.path.clone(),
            magic,
        }
    }

    fn truncated(&self, offset: u64, what: &'static str) -> CaptureError {
        CaptureError::Truncated {
            path: self.path.clone(),
            offset,
            what,
        }
    }

    fn malformed(&self, offset: u64, what: impl Into<String>) -> CaptureError {
        CaptureError::Malformed {
            path: self.path.clone(),
            offset,
            what: what.into(),
        }
    }

    /// At a record boundary when the next header is not all there: `Ok(None)` if the input
    /// ends exactly here, else a `Truncated` error for the record that starts here.
    fn end_or_truncated(&self, what: &'static str) -> Result<Option<Record>, CaptureError> {
        if self.input.avail().is_empty() {
            Ok(None)
        } else {
            Err(self.truncated(self.input.offset(), what))
        }
    }

    fn next_record(&mut self) -> Result<Option<Record>, CaptureError> {
        match self.format {
            Format::Pcap {
                big_endian,
                nanos,
                link,
                ..
            } => self.next_pcap_record(big_endian, nanos, link),
            Format::Pcapng { .. } => self.next_pcapng_record(),
        }
    }

    /// The pcap record at the read position, reading the file for what the buffer lacks.
    fn next_pcap_record(
        &mut self,
        big_endian: bool,
        nanos: bool,
        link: LinkType,
    ) -> Result<Option<Record>, CaptureError> {
        let at = self.input.offset();
        if !self.fill(pcap::RECORD_HEADER_LEN)? {
            return self.end_or_truncated("pcap record header");
        }
        let incl = rd32(self.input.avail(), pcap::INCL_LEN, big_endian);
        if incl as usize > MAX_RECORD {
            return Err(self.malformed(at, format!("captured length {incl} over 256 MiB")));
        }
        if !self.fill(pcap::RECORD_HEADER_LEN + incl as usize)? {
            return Err(self.truncated(at, "pcap record"));
        }
        let rec = self.buffered_pcap_record(big_endian, nanos, link);
        Ok(Some(rec.expect(
            "a record of at most MAX_RECORD bytes, whole in the buffer",
        )))
    }

    /// The pcap record at the read position when its header and bytes are all in the buffer
    /// already and its length is plausible (the common case, taken without a call); `None`
    /// leaves the read position alone for [`FileCapture::next_pcap_record`], which reads
    /// what is missing and ends here too.
    #[inline(always)]
    fn buffered_pcap_record(
        &mut self,
        big_endian: bool,
        nanos: bool,
        link: LinkType,
    ) -> Option<Record> {
        let avail = self.input.avail();
        let h = avail.first_chunk::<{ pcap::RECORD_HEADER_LEN }>()?;
        let incl = rd32(h, pcap::INCL_LEN, big_endian) as usize;
        if incl > MAX_RECORD || avail.len() - pcap::RECORD_HEADER_LEN < incl {
            return None;
        }
        let sec = u64::from(rd32(h, pcap::TS_SEC, big_endian));
        let frac = u64::from(rd32(h, pcap::TS_FRAC, big_endian));
        let orig = rd32(h, pcap::ORIG_LEN, big_endian);
        let start = self.input.pos + pcap::RECORD_HEADER_LEN;
        self.input.pos = start + incl;
        // 2^32 s in ns plus 2^32 us in ns stays below 2^64.
        Some(Record {
            start,
            len: incl,
            link,
            ts_ns: sec * NS_PER_SEC + if nanos { frac } else { frac * 1000 },
            orig_len: orig.max(incl as u32),
        })
    }

    /// Reads the section header block at the read position and starts a new section.
    fn read_section_header(&mut self) -> Result<(), CaptureError> {
        let at = self.input.offset();
        if !self.fill(ng::SHB_BOM + 4)? {
            return Err(self.truncated(at, "pcapng section header"));
        }
        let b = self.input.avail();
        let big_endian = match rd32(b, ng::SHB_BOM, true) {
            ng::BYTE_ORDER_MAGIC => true,
            m if m == ng::BYTE_ORDER_MAGIC.swap_bytes() => false,
            m => return Err(self.malformed(at, format!("byte-order magic {m:08x}"))),
        };
        let total = rd32(b, ng::BLOCK_LEN, big_endian) as usize;
        self.check_block_len(at, total, ng::SHB_MIN_LEN)?;
        if !self.fill(total)? {
            return Err(self.truncated(at, "pcapng section header"));
        }
        let b = self.input.avail();
        self.check_trailer(at, b, total, big_endian)?;
        let major = rd16(b, ng::SHB_MAJOR, big_endian);
        if major != 1 {
            return Err(self.malformed(at, format!("pcapng major version {major}")));
        }
        self.format = Format::Pcapng {
            big_endian,
            interfaces: Vec::new(),
        };
        self.input.pos += total;
        Ok(())
    }

    fn check_block_len(&self, at: u64, total: usize, min: usize) -> Result<(), CaptureError> {
        if total < min || !total.is_multiple_of(4) || total > MAX_RECORD {
            return Err(self.malformed(at, format!("block length {total}")));
        }
        Ok(())
    }

    fn check_trailer(
        &self,
        at: u64,
        b: &[u8],
        total: usize,
        big_endian: bool,
    ) -> Result<(), CaptureError> {
        let trailer = rd32(b, total - 4, big_endian) as usize;
        if trailer != total {
            return Err(self.malformed(
                at,
                format!("block length {total} but trailing length {trailer}"),
            ));
        }
        Ok(())
    }

    fn next_pcapng_record(&mut self) -> Result<Option<Record>, CaptureError> {
        loop {
            let at = self.input.offset();
            if !self.fill(ng::BLOCK_HEADER_LEN)? {
                return self.end_or_truncated("pcapng block header");
            }
            let big_endian = matches!(
                self.format,
                Format::Pcapng {
                    big_endian: true,
                    ..
                }
            );
            let b = self.input.avail();
            let ty = rd32(b, ng::BLOCK_TYPE, big_endian);
            if ty == ng::SHB {
                self.read_section_header()?;
                continue;
            }
            let total = rd32(b, ng::BLOCK_LEN, big_endian) as usize;
            let min = match ty {
                ng::IDB => ng::IDB_MIN_LEN,
                ng::EPB | ng::PB => ng::PKT_DATA + 4,
                ng::SPB => ng::SPB_DATA + 4,
                _ => ng::BLOCK_OVERHEAD,
            };
            self.check_block_len(at, total, min)?;
            if !self.fill(total)? {
                return Err(self.truncated(at, "pcapng block"));
            }
            let b = self.input.avail();
            self.check_trailer(at, b, total, big_endian)?;
            let record = match ty {
                ng::IDB => {
                    let iface = parse_idb(&b[..total], big_endian);
                    if let Format::Pcapng { interfaces, .. } = &mut self.format {
                        interfaces.push(iface);
                    }
                    None
                }
                ng::EPB | ng::PB => Some(self.packet_block(at, ty, &b[..total], big_endian)?),
                ng::SPB => Some(self.simple_packet_block(at, &b[..total], big_endian)?),
                _ => None,
            };
            let start = self.input.pos;
            self.input.pos += total;
            if let Some(mut r) = record {
                r.start += start;
                self.last_ts_ns = r.ts_ns;
                return Ok(Some(r));
            }
        }
    }

    fn interface(&self, at: u64, id: u32) -> Result<Interface, CaptureError> {
        match &self.format {
            Format::Pcapng { interfaces, .. } => interfaces.get(id as usize).copied(),
            Format::Pcap { .. } => None,
        }
        .ok_or_else(|| self.malformed(at, format!("no interface {id}")))
    }

    /// An enhanced (6) or obsolete (2) packet block; `start` of the result is relative to the
    /// block.
    fn packet_block(
        &self,
        at: u64,
        ty: u32,
        b: &[u8],
        big_endian: bool,
    ) -> Result<Record, CaptureError> {
        let id = if ty == ng::EPB {
            rd32(b, ng::PKT_IFACE, big_endian)
        } else {
            u32::from(rd16(b, ng::PKT_IFACE, big_endian))
        };
        let iface = self.interface(at, id)?;
        let caplen = rd32(b, ng::PKT_CAPLEN, big_endian) as usize;
        if caplen > b.len() - ng::PKT_DATA - 4 {
            return Err(self.malformed(at, format!("captured length {caplen} exceeds its block")));
        }
        let units = u64::from(rd32(b, ng::PKT_TS_HIGH, big_endian)) << 32
            | u64::from(rd32(b, ng::PKT_TS_LOW, big_endian));
        Ok(Record {
            start: ng::PKT_DATA,
            len: caplen,
            link: iface.link,
            ts_ns: iface.ts_ns(units),
            orig_len: rd32(b, ng::PKT_ORIGLEN, big_endian).max(caplen as u32),
        })
    }

    /// A simple packet block: interface 0, no timestamp, captured length from the original
    /// length, the interface's snap length and the block's size.
    fn simple_packet_block(
        &self,
        at: u64,
        b: &[u8],
        big_endian: bool,
    ) -> Result<Record, CaptureError> {
        let iface = self.interface(at, 0)?;
        let orig = rd32(b, ng::SPB_ORIGLEN, big_endian);
        let mut caplen = (orig as usize).min(b.len() - ng::SPB_DATA - 4);
        if iface.snaplen != 0 {
            caplen = caplen.min(iface.snaplen as usize);
        }
        Ok(Record {
            start: ng::SPB_DATA,
            len: caplen,
            link: iface.link,
            ts_ns: self.last_ts_ns,
            orig_len: orig.max(caplen as u32),
        })
    }
}

/// An interface description block (length checked); options that run past the block end the
/// option list rather than the file, as they do not affect the frames.
fn parse_idb(b: &[u8], big_endian: bool) -> Interface {
    let mut iface = Interface {
        link: LinkType::from_linktype(u32::from(rd16(b, ng::IDB_LINKTYPE, big_endian))),
        snaplen: rd32(b, ng::IDB_SNAPLEN, big_endian),
        resolution: TsResolution::Pow10(6),
        offset_s: 0,
    };
    let end = b.len() - 4;
    let mut o = ng::IDB_OPTIONS;
    while o + 4 <= end {
        let code = rd16(b, o, big_endian);
        let len = usize::from(rd16(b, o + 2, big_endian));
        let value = o + 4;
        if code == ng::OPT_END || value + len > end {
            break;
        }
        match code {
            ng::OPT_IF_TSRESOL if len >= 1 => {
                iface.resolution = TsResolution::from_option(b[value]);
            }
            ng::OPT_IF_TSOFFSET if len >= 8 => {
                iface.offset_s = rd64(b, value, big_endian) as i64;
            }
            _ => {}
        }
        o = value + ((len + 3) & !3);
    }
    iface
}

impl CaptureBackend for FileCapture {
    fn next_packet(&mut self) -> Result<Option<RawPacket<'_>>, CaptureError> {
        if self.done {
            return Ok(None);
        }
        let quick = match self.format {
            Format::Pcap {
                big_endian,
                nanos,
                link,
                ..
            } => self.buffered_pcap_record(big_endian, nanos, link),
            Format::Pcapng { .. } => None,
        };
        let r = match quick.map_or_else(|| self.next_record(), |r| Ok(Some(r))) {
            Ok(Some(r)) => r,
            // A record cut short by the stop flag: the input ended there.
            Err(CaptureError::Truncated { .. }) if self.input.stopped => {
                self.done = true;
                return Ok(None);
            }
            other => {
                self.done = true;
                return other.map(|_| None);
            }
        };
        Ok(Some(RawPacket {
            ts_ns: r.ts_ns,
            link: r.link,
            data: &self.input.buf[r.start..r.start + r.len],
            orig_len: r.orig_len,
        }))
    }

    fn progress(&self) -> (u64, Option<u64>) {
        // A pipe (standard input) has no length to go by.
        (
            self.input.offset(),
            (self.input.total > 0).then_some(self.input.total),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn w16(v: &mut Vec<u8>, x: u16, be: bool) {
        v.extend_from_slice(&if be { x.to_be_bytes() } else { x.to_le_bytes() });
    }

    fn w32(v: &mut Vec<u8>, x: u32, be: bool) {
        v.extend_from_slice(&if be { x.to_be_bytes() } else { x.to_le_bytes() });
    }

    fn w64(v: &mut Vec<u8>, x: u64, be: bool) {
        v.extend_from_slice(&if be { x.to_be_bytes() } else { x.to_le_bytes() });
    }

    /// A frame the reader should return.
    #[derive(Clone, Debug, PartialEq)]
    struct Want {
        ts_ns: u64,
        link: LinkType,
        data: Vec<u8>,
        orig_len: u32,
    }

    /// A capture file under construction: its bytes and, for every header, record or block,
    /// its byte range and the frame it yields.
    #[derive(Default)]
    struct Writer {
        out: Vec<u8>,
        be: bool,
        /// (start, end, frame) of each unit after the file header.
        units: Vec<(usize, usize, Option<Want>)>,
        /// End of the part the constructor reads (pcap file header, first SHB).
        header_end: usize,
    }

    fn frame(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| seed.wrapping_add(i as u8)).collect()
    }

    impl Writer {
        fn pcap(be: bool, nanos: bool, linktype: u32) -> Writer {
            let mut w = Writer {
                be,
                ..Writer::default()
            };
            let magic = if nanos {
                pcap::MAGIC_NS
            } else {
                pcap::MAGIC_US
            };
            w32(&mut w.out, magic, be);
            w16(&mut w.out, 2, be);
            w16(&mut w.out, 4, be);
            w32(&mut w.out, 0, be);
            w32(&mut w.out, 0, be);
            w32(&mut w.out, 65535, be);
            // FCS bits above the link type must be ignored.
            w32(&mut w.out, linktype | 0x1000_0000, be);
            w.header_end = w.out.len();
            w
        }

        fn pcap_record(&mut self, sec: u32, frac: u32, data: &[u8], orig: u32, want: Want) {
            let start = self.out.len();
            let be = self.be;
            w32(&mut self.out, sec, be);
            w32(&mut self.out, frac, be);
            w32(&mut self.out, data.len() as u32, be);
            w32(&mut self.out, orig, be);
            self.out.extend_from_slice(data);
            self.units.push((start, self.out.len(), Some(want)));
        }

        fn block(&mut self, ty: u32, body: &[u8], want: Option<Want>) {
            let start = self.out.len();
            let be = self.be;
            let padded = (body.len() + 3) & !3;
            let total = (12 + padded) as u32;
            w32(&mut self.out, ty, be);
            w32(&mut self.out, total, be);
            self.out.extend_from_slice(body);
            self.out.resize(start + 8 + padded, 0);
            w32(&mut self.out, total, be);
            if start == 0 {
                self.header_end = self.out.len();
            } else {
                self.units.push((start, self.out.len(), want));
            }
        }

        fn shb(&mut self, be: bool) {
            self.be = be;
            let mut b = Vec::new();
            w32(&mut b, ng::BYTE_ORDER_MAGIC, be);
            w16(&mut b, 1, be);
            w16(&mut b, 0, be);
            w64(&mut b, u64::MAX, be);
            self.block(ng::SHB, &b, None);
        }

        fn idb(&mut self, linktype: u16, snaplen: u32, opts: &[(u16, Vec<u8>)]) {
            let be = self.be;
            let mut b = Vec::new();
            w16(&mut b, linktype, be);
            w16(&mut b, 0, be);
            w32(&mut b, snaplen, be);
            for (code, v) in opts {
                w16(&mut b, *code, be);
                w16(&mut b, v.len() as u16, be);
                b.extend_from_slice(v);
                b.resize((b.len() + 3) & !3, 0);
            }
            if !opts.is_empty() {
                w32(&mut b, 0, be);
            }
            self.block(ng::IDB, &b, None);
        }

        /// An enhanced (or, with `obsolete`, type 2) packet block.
        fn packet(&mut self, obsolete: bool, iface: u32, units: u64, data: &[u8], want: Want) {
            let be = self.be;
            let mut b = Vec::new();
            if obsolete {
                w16(&mut b, iface as u16, be);
                w16(&mut b, 0, be);
            } else {
                w32(&mut b, iface, be);
            }
            w32(&mut b, (units >> 32) as u32, be);
            w32(&mut b, units as u32, be);
            w32(&mut b, data.len() as u32, be);
            w32(&mut b, want.orig_len, be);
            b.extend_from_slice(data);
            let ty = if obsolete { ng::PB } else { ng::EPB };
            self.block(ty, &b, Some(want));
        }

        fn spb(&mut self, data: &[u8], orig: u32, want: Want) {
            let mut b = Vec::new();
            w32(&mut b, orig, self.be);
            b.extend_from_slice(data);
            self.block(ng::SPB, &b, Some(want));
        }

        fn wants(&self) -> Vec<Want> {
            self.units.iter().filter_map(|u| u.2.clone()).collect()
        }
    }

    fn read_all(cap: &mut FileCapture) -> (Vec<Want>, Result<(), CaptureError>) {
        let mut got = Vec::new();
        loop {
            match cap.next_packet() {
                Ok(Some(p)) => got.push(Want {
                    ts_ns: p.ts_ns,
                    link: p.link,
                    data: p.data.to_vec(),
                    orig_len: p.orig_len,
                }),
                Ok(None) => return (got, Ok(())),
                Err(e) => return (got, Err(e)),
            }
        }
    }

    fn pcap_sample(be: bool, nanos: bool) -> Writer {
        let mut w = Writer::pcap(be, nanos, 1);
        let mult = if nanos { 1 } else { 1000 };
        for (i, len) in [60usize, 0, 1514, 33].into_iter().enumerate() {
            let data = frame(len, i as u8);
            let orig = len as u32 + i as u32;
            let want = Want {
                ts_ns: 1_700_000_000 * NS_PER_SEC + (i as u64 * 1111) * mult,
                link: LinkType::Ethernet,
                data: data.clone(),
                orig_len: orig,
            };
            w.pcap_record(1_700_000_000, i as u32 * 1111, &data, orig, want);
        }
        w
    }

    /// Two sections in opposite byte orders; interfaces with different link types, snap
    /// lengths and timestamp resolutions; every packet block kind; an unknown block.
    fn pcapng_sample(be: bool) -> Writer {
        let mut w = Writer::default();
        w.shb(be);
        w.idb(1, 64, &[]);
        w.idb(
            101,
            0,
            &[(ng::OPT_IF_TSRESOL, vec![9]), (2, b"eth1".to_vec())],
        );
        let eth = |ts_ns, data: &[u8], orig_len| Want {
            ts_ns,
            link: LinkType::Ethernet,
            data: data.to_vec(),
            orig_len,
        };
        let d0 = frame(60, 1);
        w.packet(false, 0, 1_500_000, &d0, eth(1_500_000_000, &d0, 60));
        let d1 = frame(41, 2);
        let raw = Want {
            ts_ns: 123,
            link: LinkType::Raw,
            data: d1.clone(),
            orig_len: 41,
        };
        w.packet(false, 1, 123, &d1, raw);
        // Name resolution: skipped.
        w.block(4, &[0, 0, 0, 0], None);
        let d2 = frame(100, 3);
        // Cut to interface 0's snap length; it takes the last timestamp seen.
        w.spb(&d2, 100, eth(123, &d2[..64], 100));
        let d3 = frame(20, 4);
        w.packet(true, 0, 2_000_000, &d3, eth(2_000_000_000, &d3, 20));
        w.block(0x0bad_0bad, &[9; 7], None);

        w.shb(!be);
        let mut offset = Vec::new();
        w64(&mut offset, 100, !be);
        w.idb(
            113,
            0,
            &[
                (ng::OPT_IF_TSRESOL, vec![0x8a]),
                (ng::OPT_IF_TSOFFSET, offset),
            ],
        );
        let d4 = frame(77, 5);
        let sll = Want {
            ts_ns: 101_500_000_000,
            link: LinkType::LinuxSll,
            data: d4.clone(),
            orig_len: 1000,
        };
        w.packet(false, 0, 1536, &d4, sll);
        w
    }

    #[test]
    fn pcap_both_resolutions_and_byte_orders() {
        for be in [false, true] {
            for nanos in [false, true] {
                let w = pcap_sample(be, nanos);
                let mut cap = FileCapture::from_bytes("mem", w.out.clone()).unwrap();
                assert_eq!(cap.snaplen(), 65535);
                let (got, end) = read_all(&mut cap);
                end.unwrap();
                assert_eq!(got, w.wants(), "be {be} nanos {nanos}");
                assert_eq!(
                    cap.progress(),
                    (w.out.len() as u64, Some(w.out.len() as u64))
                );
            }
        }
    }

    #[test]
    fn pcapng_sections_interfaces_and_block_kinds() {
        for be in [false, true] {
            let w = pcapng_sample(be);
            let mut cap = FileCapture::from_bytes("mem", w.out.clone()).unwrap();
            let (got, end) = read_all(&mut cap);
            end.unwrap();
            assert_eq!(got, w.wants(), "be {be}");
            assert_eq!(got.len(), 5);
        }
    }

    #[test]
    fn ts_resolutions() {
        assert_eq!(TsResolution::from_option(6).to_ns(7), 7000);
        assert_eq!(TsResolution::from_option(12).to_ns(7_000), 7);
        assert_eq!(TsResolution::from_option(0x80 | 1).to_ns(3), 1_500_000_000);
        assert_eq!(TsResolution::from_option(0x7f).to_ns(u64::MAX), 0);
        assert_eq!(TsResolution::from_option(0xff).to_ns(u64::MAX), 0);
    }

    /// Cuts the file at every byte: the frames before the cut, then at a unit boundary the
    /// end, else one `Truncated` naming the unit's start; then only `Ok(None)`.
    fn check_every_cut(w: &Writer) {
        for cut in 0..=w.out.len() {
            let bytes = w.out[..cut].to_vec();
            let mut cap = match FileCapture::from_bytes("cut", bytes) {
                Ok(cap) => cap,
                Err(CaptureError::NotACapture { .. }) if cut == 0 => continue,
                Err(CaptureError::Truncated { offset: 0, .. }) if cut < w.header_end => continue,
                Err(e) => panic!("cut {cut}: {e}"),
            };
            assert!(cut >= w.header_end, "cut {cut} opened");
            let done: Vec<Want> = w
                .units
                .iter()
                .filter(|u| u.1 <= cut)
                .filter_map(|u| u.2.clone())
                .collect();
            let (got, end) = read_all(&mut cap);
            assert_eq!(got, done, "cut {cut}");
            let inside = w.units.iter().find(|u| u.0 < cut && cut < u.1);
            match (inside, end) {
                (None, Ok(())) => {}
                (Some(u), Err(CaptureError::Truncated { offset, .. })) => {
                    assert_eq!(offset, u.0 as u64, "cut {cut}");
                }
                (u, e) => panic!("cut {cut}: inside {u:?}, ended {e:?}"),
            }
            assert!(matches!(cap.next_packet(), Ok(None)));
            assert!(matches!(cap.next_packet(), Ok(None)));
        }
    }

    #[test]
    fn truncated_pcap_at_every_cut() {
        check_every_cut(&pcap_sample(false, false));
        check_every_cut(&pcap_sample(true, true));
    }

    #[test]
    fn truncated_pcapng_at_every_cut() {
        check_every_cut(&pcapng_sample(false));
        check_every_cut(&pcapng_sample(true));
    }

    fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("mos-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn streaming_with_a_small_buffer_matches_memory() {
        for (name, w) in [
            ("a.pcap", pcap_sample(true, false)),
            ("b.pcapng", pcapng_sample(false)),
        ] {
            let path = temp_file(name, &w.out);
            for buf in [1, 7, 64, BUF_SIZE] {
                let mut cap = FileCapture::open_with_buffer(&path, buf, None).unwrap();
                let (got, end) = read_all(&mut cap);
                end.unwrap();
                assert_eq!(got, w.wants(), "{name} buffer {buf}");
                assert_eq!(
                    cap.progress(),
                    (w.out.len() as u64, Some(w.out.len() as u64))
                );
            }
            // A cut inside the last record, read through the file path.
            let cut = w.out.len() - 3;
            std::fs::write(&path, &w.out[..cut]).unwrap();
            let mut cap = FileCapture::open_with_buffer(&path, 16, None).unwrap();
            let (got, end) = read_all(&mut cap);
            assert_eq!(got.len(), w.wants().len() - 1);
            let last = w.units.last().unwrap().0 as u64;
            assert!(matches!(end, Err(CaptureError::Truncated { offset, .. }) if offset == last));
            std::fs::remove_file(&path).unwrap();
        }
    }

    fn fifo(name: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("mos-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        path
    }

    /// Sets `stop` after a while, from another thread.
    fn stop_soon(stop: &Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            stop.store(true, Ordering::Relaxed);
        })
    }

    #[test]
    fn a_stop_ends_a_fifo_whose_writer_went_quiet_inside_a_record() {
        let w = pcap_sample(false, true);
        let path = fifo("quiet.fifo");
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut cap = FileCapture::open_until(&path, stop).unwrap();
                let (got, end) = read_all(&mut cap);
                (got, end, cap.stopped())
            })
        };
        // Every record but the last, and part of it; the writer stays open.
        let mut writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::io::Write::write_all(&mut writer, &w.out[..w.out.len() - 3]).unwrap();
        // The reader has taken every byte: what it holds is read before the stop ends it.
        while rustix::io::ioctl_fionread(&writer).unwrap() > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        stop_soon(&stop).join().unwrap();
        let (got, end, stopped) = reader.join().unwrap();
        end.unwrap();
        assert!(stopped);
        assert_eq!(got, w.wants()[..w.wants().len() - 1]);
        drop(writer);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_stop_ends_a_fifo_that_never_had_a_writer_as_an_empty_capture() {
        let path = fifo("nowriter.fifo");
        let stop = Arc::new(AtomicBool::new(false));
        let setter = stop_soon(&stop);
        let mut cap = FileCapture::open_until(&path, stop).unwrap();
        setter.join().unwrap();
        assert!(cap.stopped());
        assert!(matches!(cap.next_packet(), Ok(None)));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn missing_file_is_io_error() {
        let err = FileCapture::open("/nonexistent/mos/capture.pcap").unwrap_err();
        assert!(matches!(err, CaptureError::Io { .. }));
    }

    #[test]
    fn bad_magic_is_not_a_capture() {
        let err = FileCapture::from_bytes("elf", b"\x7fELF\x02\x01\x01\0".to_vec()).unwrap_err();
        assert!(matches!(
            err,
            CaptureError::NotACapture {
                magic: 0x7f45_4c46,
                ..
            }
        ));
        let err = FileCapture::from_bytes("short", b"GI".to_vec()).unwrap_err();
        assert!(matches!(err, CaptureError::NotACapture { .. }));
    }

    fn malformed_at(bytes: Vec<u8>) -> u64 {
        let mut cap = FileCapture::from_bytes("bad", bytes).unwrap();
        let (_, end) = read_all(&mut cap);
        assert!(matches!(cap.next_packet(), Ok(None)));
        match end {
            Err(CaptureError::Malformed { offset, .. }) => offset,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pcap_record_over_the_size_limit_is_malformed() {
        let mut w = pcap_sample(false, false);
        let second = w.units[1].0;
        w.out[second + 8..second + 12].copy_from_slice(&(300u32 << 20).to_le_bytes());
        assert_eq!(malformed_at(w.out), second as u64);
    }

    #[test]
    fn pcapng_bad_blocks_are_malformed() {
        let base = pcapng_sample(false);
        let epb = base.units[2].0;

        // Captured length larger than the block.
        let mut out = base.out.clone();
        out[epb + 20..epb + 24].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(malformed_at(out), epb as u64);

        // Unknown interface.
        let mut out = base.out.clone();
        out[epb + 8..epb + 12].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(malformed_at(out), epb as u64);

        // Block length not a multiple of 4, below the minimum, or not matching its trailer.
        for len in [13u32, 8, 36] {
            let mut out = base.out.clone();
            out[epb + 4..epb + 8].copy_from_slice(&len.to_le_bytes());
            assert_eq!(malformed_at(out), epb as u64, "length {len}");
        }

        // A simple packet block with no interface yet.
        let mut w = Writer::default();
        w.shb(true);
        w.spb(
            &[1, 2, 3, 4],
            4,
            Want {
                ts_ns: 0,
                link: LinkType::Ethernet,
                data: vec![],
                orig_len: 0,
            },
        );
        assert_eq!(malformed_at(w.out), 28);

        // A bad byte-order magic in the first section header.
        let mut out = base.out.clone();
        out[8..12].copy_from_slice(&[1, 2, 3, 4]);
        assert!(matches!(
            FileCapture::from_bytes("bom", out),
            Err(CaptureError::Malformed { offset: 0, .. })
        ));
    }

    fn corpus_dir() -> std::path::PathBuf {
        // MOS_CORPUS_DIR names the corpus root (pcaps/ and truth/), as for the tests package.
        let dir = std::env::var_os("MOS_CORPUS_DIR")
            .map_or_else(
                || {
                    std::path::PathBuf::from(concat!(
                        env!("CARGO_MANIFEST_DIR"),
                        "/../../shared/corpus"
                    ))
                },
                std::path::PathBuf::from,
            )
            .join("pcaps");
        assert!(
            dir.join("MANIFEST.tsv").is_file(),
            "capture corpus not found at {} (set MOS_CORPUS_DIR)",
            dir.display()
        );
        dir
    }

    /// Every capture of the corpus reads to its end with the packet count of the manifest,
    /// and every frame goes through the parser without a panic.
    #[test]
    fn corpus_reads_to_the_end_with_manifest_counts() {
        let dir = corpus_dir();
        let manifest = std::fs::read_to_string(dir.join("MANIFEST.tsv")).unwrap();
        let mut lines = manifest.lines();
        let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let (file_col, packets_col) = (col("file"), col("packets"));
        let want: HashMap<String, u64> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f[file_col].to_string(), f[packets_col].parse().unwrap())
            })
            .collect();

        let mut files = 0;
        let mut outcomes: HashMap<String, u64> = HashMap::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !(name.ends_with(".pcap") || name.ends_with(".pcapng")) {
                continue;
            }
            let expected = *want
                .get(&name)
                .unwrap_or_else(|| panic!("{name} is not in MANIFEST.tsv"));
            let mut cap = FileCapture::open(&path).unwrap();
            let mut n = 0u64;
            while let Some(p) = cap.next_packet().unwrap() {
                n += 1;
                let key = match crate::parse::parse_packet(&p, true) {
                    Ok(crate::parse::Parsed::Tcp(_)) => "tcp".to_string(),
                    Ok(crate::parse::Parsed::OtherIp { .. }) => "other-ip".to_string(),
                    Ok(crate::parse::Parsed::Fragment { .. }) => "fragment".to_string(),
                    Ok(crate::parse::Parsed::NotIp) => "not-ip".to_string(),
                    Err(e) => e.to_string(),
                };
                *outcomes.entry(key).or_default() += 1;
            }
            assert_eq!(n, expected, "{name}");
            let size = std::fs::metadata(&path).unwrap().len();
            assert_eq!(cap.progress(), (size, Some(size)), "{name}");
            files += 1;
        }
        assert_eq!(
            files,
            want.len(),
            "files in the manifest but not in the directory"
        );
        eprintln!("corpus: {files} files; parse outcomes {outcomes:?}");
    }
}
