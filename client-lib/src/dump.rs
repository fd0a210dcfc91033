//! The stream dump format, written the same way by `mos-sensor --dump` and the `mos-dump`
//! analyzer: each connection's two byte streams to files, and `flows.jsonl`.
//!
//! A connection is opened with its serial and endpoints, gets bytes and lost byte counts per
//! direction, and is closed with what is known at its end (ISNs, roles, times). Lost bytes are
//! written as zeros: hashed as zeros, stored as holes in sparse files, so a capture that lost
//! gigabytes takes neither disk nor memory. Stream files are named
//! `{serial:07}-{from}-{to}.{c2s|s2c}` and created on their first byte; `flows.jsonl` lists the
//! connections ordered by start time, client, server and serial.
//!
//! The writer knows nothing of where the bytes come from: the key type `K` is whatever names a
//! connection to its caller (the sensor's flow handle, an analyzer's [`crate::FlowId`]).

use serde::Serialize;
use sha2::{Digest, Sha256};
use shm_layout::layout::{tunnel_flags, tunnel_id, tunnel_kind, TunnelData};
use shm_layout::Side;
use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::hash::Hash;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Bytes a direction buffers in memory before appending to its file.
const SPILL_AT: usize = 256 * 1024;

/// A failed file operation: what was being done, and the OS error.
#[derive(Debug)]
pub struct DumpError {
    what: String,
    source: io::Error,
}

impl DumpError {
    fn new(what: String, source: io::Error) -> DumpError {
        DumpError { what, source }
    }
}

impl fmt::Display for DumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for DumpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Results of the dump writer.
pub type DumpResult<T> = Result<T, DumpError>;

/// One line of `flows.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlowRecord {
    /// Client endpoint, `ip:port` or `[ip]:port`.
    pub client: String,
    /// Server endpoint.
    pub server: String,
    /// Client's initial sequence number, when its SYN was seen.
    pub client_isn: Option<u32>,
    /// Server's initial sequence number, when its SYN/ACK was seen.
    pub server_isn: Option<u32>,
    /// Roles guessed (no handshake seen).
    pub client_guessed: bool,
    /// First packet, seconds since the epoch.
    pub start_ts: f64,
    /// Last packet, seconds since the epoch.
    pub end_ts: f64,
    /// Bytes of the client-to-server stream file, lost bytes included as zeros.
    pub c2s_bytes: u64,
    /// Bytes of the server-to-client stream file.
    pub s2c_bytes: u64,
    /// SHA-256 of the client-to-server stream file.
    pub c2s_sha256: String,
    /// SHA-256 of the server-to-client stream file.
    pub s2c_sha256: String,
    /// Bytes of the client-to-server stream the capture did not hold (written as zeros).
    pub c2s_lost: u64,
    /// Bytes of the server-to-client stream the capture did not hold.
    pub s2c_lost: u64,
    /// The client-to-server stream file, relative to the dump directory (null when empty).
    pub c2s_file: Option<String>,
    /// The server-to-client stream file (null when empty).
    pub s2c_file: Option<String>,
    /// The tunnel the connection's first packet came through (null: none).
    pub tunnel: Option<TunnelRecord>,
    /// The dump stopped before the connection ended (the analyzer lost its sensor, or was
    /// stopped): the streams hold what was read by then, and `end_ts` is the last packet seen
    /// then. Written only when true.
    #[serde(skip_serializing_if = "is_false")]
    pub cut_short: bool,
    #[serde(skip)]
    start_ns: u64,
    #[serde(skip)]
    serial: u64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A connection's tunnel as `flows.jsonl` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TunnelRecord {
    /// The encapsulations crossed, by name (`gre`, `erspan`, `vxlan`, `gtp-u`, `mpls`,
    /// `pppoe`, `ip-in-ip`, `l2tp`, `ayiya`), in that fixed order rather than the order met.
    pub encaps: Vec<&'static str>,
    /// How many encapsulations were crossed.
    pub depth: u8,
    /// Source of the outermost IP header, when that header carried a tunnel.
    pub outer_src: Option<IpAddr>,
    /// Its destination.
    pub outer_dst: Option<IpAddr>,
    /// What `id` is: `gre_key`, `erspan_session`, `vxlan_vni`, `gtp_teid` or `mpls_label`
    /// (the first identifier met from the outside); null when none was met.
    pub id_kind: Option<&'static str>,
    /// The identifier.
    pub id: Option<u32>,
}

impl TunnelRecord {
    /// The record of a published tunnel description.
    pub fn from_data(t: &TunnelData) -> TunnelRecord {
        let v6 = t.flags & tunnel_flags::OUTER_IPV6 != 0;
        let addr = |a: &[u8; 16]| {
            if v6 {
                IpAddr::V6(Ipv6Addr::from(*a))
            } else {
                IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
            }
        };
        let outer = (t.flags & tunnel_flags::OUTER != 0).then(|| t.outer.each_ref().map(addr));
        let id_kind = match t.id_kind {
            tunnel_id::GRE_KEY => Some("gre_key"),
            tunnel_id::ERSPAN_SESSION => Some("erspan_session"),
            tunnel_id::VXLAN_VNI => Some("vxlan_vni"),
            tunnel_id::GTP_TEID => Some("gtp_teid"),
            tunnel_id::MPLS_LABEL => Some("mpls_label"),
            _ => None,
        };
        TunnelRecord {
            encaps: tunnel_kind::NAMES
                .iter()
                .filter(|(bit, _)| t.kinds & bit != 0)
                .map(|&(_, name)| name)
                .collect(),
            depth: t.depth,
            outer_src: outer.map(|[s, _]| s),
            outer_dst: outer.map(|[_, d]| d),
            id_kind,
            id: id_kind.map(|_| t.id),
        }
    }
}

/// What is known of a connection when it is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEnd {
    /// The client's ISN, when its SYN was seen.
    pub client_isn: Option<u32>,
    /// The server's ISN, when its SYN/ACK was seen.
    pub server_isn: Option<u32>,
    /// Roles guessed.
    pub guessed: bool,
    /// Time of the first packet, ns since the Unix epoch.
    pub start_ns: u64,
    /// Time of the last packet.
    pub last_ns: u64,
    /// The tunnel its first packet came through, if any.
    pub tunnel: Option<TunnelData>,
    /// The dump stopped before the connection ended ([`FlowRecord::cut_short`]).
    pub cut_short: bool,
}

#[derive(Debug)]
struct Direction {
    /// The stream file's name in the dump directory (created on the first byte).
    name: String,
    bytes: u64,
    lost: u64,
    sha: Sha256,
    pending: Vec<u8>,
    /// The file exists (a byte or a hole was written).
    written: bool,
}

impl Direction {
    /// The direction into `side`'s receive stream of connection `serial`.
    fn new(serial: u64, side: Side, client: SocketAddr, server: SocketAddr) -> Self {
        let (from, to, tag) = match side {
            Side::Svr => (client, server, "c2s"),
            Side::Cli => (server, client, "s2c"),
        };
        Direction {
            name: format!("{serial:07}-{}-{}.{tag}", file_part(from), file_part(to)),
            bytes: 0,
            lost: 0,
            sha: Sha256::new(),
            pending: Vec::new(),
            written: false,
        }
    }
}

#[derive(Debug)]
struct OpenFlow {
    /// Indexed by the side whose receive stream it holds: `[Cli]` is server-to-client.
    dirs: [Direction; 2],
    serial: u64,
    client: SocketAddr,
    server: SocketAddr,
}

/// Writes connections' streams and records into a directory.
#[derive(Debug)]
pub struct DumpWriter<K> {
    dir: PathBuf,
    open: HashMap<K, OpenFlow>,
    records: Vec<FlowRecord>,
}

/// One direction of an open connection, for a run of writes without a lookup each.
#[derive(Debug)]
pub struct StreamWriter<'a> {
    dir: &'a Path,
    d: &'a mut Direction,
}

impl<K: Hash + Eq> DumpWriter<K> {
    /// A dump into `dir`, created if missing.
    pub fn create(dir: &Path) -> DumpResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            DumpError::new(format!("cannot create dump directory {}", dir.display()), e)
        })?;
        Ok(DumpWriter {
            dir: dir.to_path_buf(),
            open: HashMap::new(),
            records: Vec::new(),
        })
    }

    /// The dump directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens connection `key` (`serial`, endpoints) unless it is open already.
    pub fn open(&mut self, key: K, serial: u64, client: SocketAddr, server: SocketAddr) {
        self.open.entry(key).or_insert_with(|| OpenFlow {
            dirs: [Side::Cli, Side::Svr].map(|side| Direction::new(serial, side, client, server)),
            serial,
            client,
            server,
        });
    }

    /// Whether `key` is open.
    pub fn is_open(&self, key: &K) -> bool {
        self.open.contains_key(key)
    }

    /// The direction into `side`'s receive stream of an open connection (`side` = `Svr` is
    /// client-to-server).
    pub fn stream(&mut self, key: &K, side: Side) -> Option<StreamWriter<'_>> {
        let open = self.open.get_mut(key)?;
        Some(StreamWriter {
            dir: &self.dir,
            d: &mut open.dirs[side.index()],
        })
    }

    /// Appends bytes to a direction of an open connection (nothing if it is not open).
    pub fn data(&mut self, key: &K, side: Side, bytes: &[u8]) -> DumpResult<()> {
        match self.stream(key, side) {
            Some(mut s) => s.data(bytes),
            None => Ok(()),
        }
    }

    /// Appends `n` lost bytes (zeros) to a direction of an open connection.
    pub fn lost(&mut self, key: &K, side: Side, n: u64) -> DumpResult<()> {
        match self.stream(key, side) {
            Some(mut s) => s.lost(n),
            None => Ok(()),
        }
    }

    /// Closes connection `key`: flushes its files and records it. `None` if it was not open.
    pub fn close(&mut self, key: &K, end: FlowEnd) -> DumpResult<Option<&FlowRecord>> {
        let Some(mut open) = self.open.remove(key) else {
            return Ok(None);
        };
        for d in &mut open.dirs {
            spill(&self.dir, d)?;
        }
        let [s2c, c2s] = open.dirs;
        self.records.push(FlowRecord {
            client: open.client.to_string(),
            server: open.server.to_string(),
            client_isn: end.client_isn,
            server_isn: end.server_isn,
            client_guessed: end.guessed,
            start_ts: end.start_ns as f64 / 1e9,
            end_ts: end.last_ns as f64 / 1e9,
            c2s_bytes: c2s.bytes,
            s2c_bytes: s2c.bytes,
            c2s_sha256: hex::encode(c2s.sha.finalize()),
            s2c_sha256: hex::encode(s2c.sha.finalize()),
            c2s_lost: c2s.lost,
            s2c_lost: s2c.lost,
            c2s_file: c2s.written.then_some(c2s.name),
            s2c_file: s2c.written.then_some(s2c.name),
            tunnel: end.tunnel.as_ref().map(TunnelRecord::from_data),
            cut_short: end.cut_short,
            start_ns: end.start_ns,
            serial: open.serial,
        });
        Ok(self.records.last())
    }

    /// Connections recorded so far.
    pub fn records(&self) -> &[FlowRecord] {
        &self.records
    }

    /// Connections still open.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Writes `flows.jsonl` (ordered by start time, client, server, serial) and returns its
    /// path. Connections still open are not recorded: close them first.
    pub fn finish(self) -> DumpResult<PathBuf> {
        write_index(&self.dir, self.records)
    }

    /// The connections recorded, without writing `flows.jsonl`: for several writers into one
    /// directory (one per sensor worker), whose records [`write_index`] then writes together.
    pub fn into_records(self) -> Vec<FlowRecord> {
        self.records
    }
}

/// Writes `dir/flows.jsonl` from `records` (ordered by start time, client, server, serial) and
/// returns its path.
pub fn write_index(dir: &Path, mut records: Vec<FlowRecord>) -> DumpResult<PathBuf> {
    records.sort_by(|a, b| {
        (a.start_ns, &a.client, &a.server, a.serial)
            .cmp(&(b.start_ns, &b.client, &b.server, b.serial))
    });
    let path = dir.join("flows.jsonl");
    let cannot = |e| DumpError::new(format!("cannot write {}", path.display()), e);
    let file = File::create(&path)
        .map_err(|e| DumpError::new(format!("cannot create {}", path.display()), e))?;
    let mut out = io::BufWriter::new(file);
    for r in &records {
        serde_json::to_writer(&mut out, r).map_err(|e| cannot(io::Error::other(e)))?;
        out.write_all(b"\n").map_err(cannot)?;
    }
    out.flush().map_err(cannot)?;
    Ok(path)
}

impl StreamWriter<'_> {
    /// Bytes written to this direction so far, lost ones included: the stream offset the next
    /// byte belongs at.
    pub fn position(&self) -> u64 {
        self.d.bytes
    }

    /// Appends bytes.
    pub fn data(&mut self, bytes: &[u8]) -> DumpResult<()> {
        self.d.pending.extend_from_slice(bytes);
        self.d.bytes += bytes.len() as u64;
        if self.d.pending.len() >= SPILL_AT {
            spill(self.dir, self.d)?;
        }
        Ok(())
    }

    /// Appends `n` lost bytes: zeros in the hash, a hole in the file.
    pub fn lost(&mut self, n: u64) -> DumpResult<()> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let d = &mut *self.d;
        spill(self.dir, d)?;
        let mut left = n;
        while left > 0 {
            let k = left.min(ZEROS.len() as u64) as usize;
            d.sha.update(&ZEROS[..k]);
            left -= k as u64;
        }
        let path = self.dir.join(&d.name);
        d.written = true;
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| DumpError::new(format!("cannot open {}", path.display()), e))?;
        f.set_len(d.bytes + n)
            .map_err(|e| DumpError::new(format!("cannot extend {}", path.display()), e))?;
        d.bytes += n;
        d.lost += n;
        Ok(())
    }
}

/// Appends a direction's buffered bytes to its file (created on first use).
fn spill(dir: &Path, d: &mut Direction) -> DumpResult<()> {
    if d.pending.is_empty() {
        return Ok(());
    }
    d.sha.update(&d.pending);
    let path = dir.join(&d.name);
    d.written = true;
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| DumpError::new(format!("cannot open {}", path.display()), e))?;
    f.write_all(&d.pending)
        .map_err(|e| DumpError::new(format!("cannot write {}", path.display()), e))?;
    d.pending.clear();
    Ok(())
}

/// An endpoint as a file-name part: `10.0.0.1_80`, `fe80--1_443` (no `:` or brackets).
fn file_part(e: SocketAddr) -> String {
    format!("{}_{}", e.ip().to_string().replace(':', "-"), e.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn streams_records_and_sparse_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = DumpWriter::<u32>::create(dir.path()).unwrap();
        w.open(7, 3, addr("10.0.0.1:40000"), addr("[fe80::1]:443"));
        w.data(&7, Side::Svr, b"hello ").unwrap();
        w.lost(&7, Side::Svr, 4).unwrap();
        w.data(&7, Side::Svr, b"world").unwrap();
        assert_eq!(w.stream(&7, Side::Svr).unwrap().position(), 15);
        let end = FlowEnd {
            client_isn: Some(1),
            server_isn: None,
            guessed: false,
            start_ns: 1_500_000_000,
            last_ns: 2_000_000_000,
            tunnel: None,
            cut_short: false,
        };
        let rec = w.close(&7, end).unwrap().unwrap().clone();
        assert_eq!(rec.client, "10.0.0.1:40000");
        assert_eq!(rec.server, "[fe80::1]:443");
        assert_eq!(
            rec.c2s_file.as_deref(),
            Some("0000003-10.0.0.1_40000-fe80--1_443.c2s")
        );
        assert_eq!(rec.s2c_file, None);
        assert_eq!((rec.c2s_bytes, rec.c2s_lost, rec.s2c_bytes), (15, 4, 0));
        let body = std::fs::read(dir.path().join(rec.c2s_file.unwrap())).unwrap();
        assert_eq!(body, b"hello \0\0\0\0world");
        assert_eq!(rec.c2s_sha256, hex::encode(Sha256::digest(&body)));
        assert_eq!(rec.s2c_sha256, hex::encode(Sha256::digest(b"")));
        assert!(w.close(&7, end).unwrap().is_none(), "closed once");
        let path = w.finish().unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.starts_with("{\"client\":\"10.0.0.1:40000\""), "{text}");
        assert!(text.contains("\"start_ts\":1.5,"), "{text}");
        assert!(!text.contains("cut_short"), "{text}");
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn a_connection_closed_before_its_end_is_marked_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = DumpWriter::<u32>::create(dir.path()).unwrap();
        w.open(1, 0, addr("10.0.0.1:1"), addr("10.0.0.2:80"));
        w.data(&1, Side::Svr, b"GET").unwrap();
        let end = FlowEnd {
            client_isn: None,
            server_isn: None,
            guessed: true,
            start_ns: 1_000_000_000,
            last_ns: 2_000_000_000,
            tunnel: None,
            cut_short: true,
        };
        assert!(w.close(&1, end).unwrap().unwrap().cut_short);
        let text = std::fs::read_to_string(w.finish().unwrap()).unwrap();
        assert!(text.trim_end().ends_with(",\"cut_short\":true}"), "{text}");
    }

    #[test]
    fn records_are_sorted_by_start_then_tuple() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = DumpWriter::<u32>::create(dir.path()).unwrap();
        let end = |start_ns| FlowEnd {
            client_isn: None,
            server_isn: None,
            guessed: true,
            start_ns,
            last_ns: start_ns,
            tunnel: None,
            cut_short: false,
        };
        for (k, serial, client, start) in [
            (1, 0, "10.0.0.9:1", 5),
            (2, 1, "10.0.0.2:1", 5),
            (3, 2, "10.0.0.1:1", 9),
        ] {
            w.open(k, serial, addr(client), addr("10.0.0.100:80"));
            w.close(&k, end(start)).unwrap();
        }
        let text = std::fs::read_to_string(w.finish().unwrap()).unwrap();
        let clients: Vec<_> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["client"].clone())
            .collect();
        assert_eq!(clients, ["10.0.0.2:1", "10.0.0.9:1", "10.0.0.1:1"]);
    }
}
