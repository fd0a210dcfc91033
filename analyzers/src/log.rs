//! `mos-log`: one record per connection (`conn`), per HTTP request/response pair (`http`), per
//! TLS handshake (`tls`), per SSH connection (`ssh`), and one per thing a parser could not
//! make sense of (`weird`), as JSON lines with Zeek's field names.
//!
//! A [`Logger`] keeps each connection's state in a map keyed by flow handle and is driven by
//! the callbacks [`register`] puts on up to two monitoring sockets:
//! - the **connection socket** (when `conn` is logged) takes every packet's `PKT_IN` at the
//!   sender's hook (its TCP flags, sequence number and payload length: Zeek's `history` and
//!   `conn_state`), `REXMIT` (retransmitted bytes), `ERROR` (conflicting bytes, content gaps)
//!   and the client side's `CONN_END`, where the record is written from what the connection's
//!   slot says (bytes, lost bytes, packets, final states, times);
//! - the **data socket** (when a protocol log is wanted) takes `CONN_NEW_DATA` and reads the
//!   new bytes with [`crate::streams::read_new`]. Each direction's first bytes go to
//!   [`crate::proto::detect`] (up to 16 bytes are kept until it decides; for a direction whose start
//!   was not seen, up to 4 KiB, where a later line that starts an HTTP message also counts);
//!   once a service is known its parser gets the bytes, holes as gaps. When the parser is done,
//!   or neither direction is a protocol mos parses, the data socket stops monitoring the
//!   connection (`MOS_STOP_MON`): the sensor sends it no more of its events. An HTTP `CONNECT`
//!   answered with 2xx, or a `101 Switching Protocols`, starts detection again on the bytes
//!   that follow (TLS through a proxy gets its `tls` record; `service` stays `http`).
//!
//! Detection also finds:
//! - **roles the wrong way round**: when the sensor guessed which end is the client (no
//!   handshake seen) and the first bytes show otherwise (the guessed client's start like an
//!   HTTP response or a TLS ServerHello, or the guessed server's like a request or a
//!   ClientHello), the parser is fed with the directions swapped, and the protocol records
//!   (their `id.*` and a weird's `peer`) name the real client as the originator, as Zeek does;
//!   the `conn` record keeps the sensor's roles;
//! - **an SSL 2.0 CLIENT-HELLO** (a 2-byte record header) opening the client's stream: `ssl`;
//! - **TLS that does not start the stream** (STARTTLS in SMTP, FTP's `AUTH TLS`, LDAP's
//!   StartTLS, MySQL's SSL request): a connection neither of whose directions opens with a
//!   protocol mos parses is watched further, its first [`HUNT_BYTES`] bytes of each
//!   direction, for a TLS handshake record carrying a ClientHello (the client's) and one
//!   carrying a ServerHello (the server's); from there the TLS parser reads it and its
//!   `service` is `ssl`. Connections whose service was found at their first bytes never pay
//!   for this.
//!
//! With no protocol log wanted, no stream is read at all (the data socket does not exist).

use crate::conn::{ts_secs, uid, ConnTuple};
use crate::output::Output;
use crate::proto::http::HttpParser;
use crate::proto::ssh::SshParser;
use crate::proto::tls::{TlsParser, MAX_RECORD_LEN};
use crate::proto::{detect, Detect, Dir, Parser, Record, Service};
use crate::streams::{read_new, Cursor, Piece, ReadStop};
use mos_client::{
    Ctx, EndReason, Errno, ErrorKind, Event, EventKind, EventMask, Filter, FlowId, FlowInfo, Hook,
    Mos, Side, SockId, MOS_SIDE_BOTH,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use shm_layout::layout::{tunnel_flags, TunnelData};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

/// The logs `mos-log` can write, in the order `--logs` lists them.
pub const LOG_NAMES: [&str; 5] = ["conn", "http", "tls", "ssh", "weird"];

/// Which logs are written (`--logs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Logs {
    /// `conn`: one record per connection.
    pub conn: bool,
    /// `http`: one record per request/response pair.
    pub http: bool,
    /// `tls`: one record per TLS handshake.
    pub tls: bool,
    /// `ssh`: one record per SSH connection.
    pub ssh: bool,
    /// `weird`: what the parsers could not make sense of.
    pub weird: bool,
}

impl Default for Logs {
    fn default() -> Self {
        Logs::ALL
    }
}

impl Logs {
    /// Every log.
    pub const ALL: Logs = Logs {
        conn: true,
        http: true,
        tls: true,
        ssh: true,
        weird: true,
    };

    /// Parses a comma-separated list of log names (`conn,http`); an empty or unknown name is
    /// an error naming it.
    pub fn parse(s: &str) -> Result<Logs, String> {
        let mut l = Logs {
            conn: false,
            http: false,
            tls: false,
            ssh: false,
            weird: false,
        };
        for name in s.split(',').map(str::trim) {
            match name {
                "conn" => l.conn = true,
                "http" => l.http = true,
                "tls" => l.tls = true,
                "ssh" => l.ssh = true,
                "weird" => l.weird = true,
                "" => {
                    return Err(format!(
                        "an empty log name in {s:?} (the logs are {})",
                        LOG_NAMES.join(", ")
                    ))
                }
                other => {
                    return Err(format!(
                        "no log named {other:?} (the logs are {})",
                        LOG_NAMES.join(", ")
                    ))
                }
            }
        }
        Ok(l)
    }

    /// Whether log `name` is written.
    pub fn wants(&self, name: &str) -> bool {
        match name {
            "conn" => self.conn,
            "http" => self.http,
            "tls" => self.tls,
            "ssh" => self.ssh,
            "weird" => self.weird,
            _ => false,
        }
    }

    /// The names of the logs written, in [`LOG_NAMES`] order.
    pub fn names(&self) -> Vec<&'static str> {
        LOG_NAMES.into_iter().filter(|n| self.wants(n)).collect()
    }

    /// Whether a parser runs for `service`: its log is wanted, or only `weird` is (then every
    /// parser runs, for its weirds).
    pub fn parses(&self, service: Service) -> bool {
        let only_weird = self.weird && !(self.http || self.tls || self.ssh);
        only_weird
            || match service {
                Service::Http => self.http,
                Service::Ssl => self.tls,
                Service::Ssh => self.ssh,
            }
    }

    /// Whether streams are read at all (some parser may run).
    pub fn reads_streams(&self) -> bool {
        self.http || self.tls || self.ssh || self.weird
    }
}

/// `--logs`'s value parser.
pub fn parse_logs(s: &str) -> Result<Logs, String> {
    Logs::parse(s)
}

/// The log a parser's record goes to.
fn log_of(r: &Record) -> &'static str {
    match r {
        Record::Http(_) => "http",
        Record::Tls(_) => "tls",
        Record::Ssh(_) => "ssh",
        Record::Weird(_) => "weird",
    }
}

/// The capture time a record is stamped with: the parser's own (the request, the first
/// handshake message, the first banner byte); a weird takes the time of the bytes it was
/// found in.
fn record_ts(r: &Record, found_ns: u64) -> u64 {
    match r {
        Record::Http(h) => h.ts_ns,
        Record::Tls(t) => t.ts_ns,
        Record::Ssh(s) => s.ts_ns,
        Record::Weird(_) => found_ns,
    }
}

/// A new parser for `service`; `midstream`: a direction's first bytes were not seen as such
/// (HTTP then looks for the first line that starts a message in each direction).
fn new_parser(service: Service, midstream: bool) -> Box<dyn Parser> {
    match service {
        Service::Http if midstream => Box::new(HttpParser::midstream()),
        Service::Http => Box::new(HttpParser::new()),
        Service::Ssl => Box::new(TlsParser::new()),
        Service::Ssh => Box::new(SshParser::new()),
    }
}

/// One line of a log: `ts`, `uid`, `id.*`, then the record's own fields.
#[derive(Serialize)]
struct Line<'a, R: Serialize> {
    ts: f64,
    uid: &'a str,
    #[serde(flatten)]
    id: &'a ConnTuple,
    #[serde(flatten)]
    record: &'a R,
}

/// A `conn` record's own fields (Zeek's `conn.log`, and ours after `tunnel_parents`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConnRecord {
    /// Always `tcp`.
    pub proto: &'static str,
    /// The protocol found in the streams (`http`, `ssl`, `ssh`) by its first bytes (or, for
    /// TLS after a plain-text start, by its hellos within [`HUNT_BYTES`]) and, when
    /// its parser ran, confirmed by a record of its log; omitted when none was found (or its
    /// parser gave up on the first message), or when no protocol log was asked for (the
    /// streams were not read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<&'static str>,
    /// Seconds from the first packet to the last.
    pub duration: f64,
    /// Bytes of the client's stream, from the sequence numbers: what the server side's
    /// receive stream reached, missed bytes included (`flows.jsonl`'s `c2s_bytes`).
    pub orig_bytes: u64,
    /// Bytes of the server's stream likewise (`s2c_bytes`).
    pub resp_bytes: u64,
    /// Zeek's connection state (`S0`, `S1`, `SF`, `REJ`, `S2`, `S3`, `RSTO`, `RSTR`,
    /// `RSTOS0`, `RSTRH`, `SH`, `SHR`, `OTH`), from the packets' flags.
    pub conn_state: &'static str,
    /// Bytes of both streams the sensor never held (holes in the capture, bytes lost).
    pub missed_bytes: u64,
    /// Zeek's history letters (upper case: the originator's packets, lower case: the
    /// responder's).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub history: String,
    /// Packets the client sent.
    pub orig_pkts: u64,
    /// Packets the server sent.
    pub resp_pkts: u64,
    /// The tunnel the connection's first packet came through, as one id (see
    /// [`tunnel_parent`]); omitted for none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tunnel_parents: Vec<String>,
    /// The client's emulated TCP state at the end, as mOS names it (`TCP_TIME_WAIT`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orig_tcp_state: Option<&'static str>,
    /// The server's likewise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resp_tcp_state: Option<&'static str>,
    /// The client's SYN was not seen: the connection was picked up midstream.
    pub midstream: bool,
    /// No handshake packet was seen: which end is the client is a guess (the lower,
    /// well-known port is taken for the server's).
    pub roles_guessed: bool,
    /// Payload bytes of the client's segments that repeated bytes already received.
    pub orig_rexmit_bytes: u64,
    /// The server's likewise.
    pub resp_rexmit_bytes: u64,
    /// Bytes of the client's stream that a retransmission contradicted (the first copy kept).
    pub orig_conflict_bytes: u64,
    /// The server's likewise.
    pub resp_conflict_bytes: u64,
    /// Why the connection ended (`closed`, `reset`, `timeout`, `evicted`, `reused`, `end of
    /// input`); omitted for a connection still open when mos-log stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
}

/// A tunnel as a `tunnel_parents` entry: `T` and 17 base-62 digits of a SHA-256 over the
/// tunnel's description (the encapsulations crossed, the first identifier met and its kind,
/// the outermost IP header's addresses). Every connection through the same tunnel endpoints,
/// kind and identifier gets the same id. It starts with `T`, not Zeek's `C`: mos logs no
/// connection record for the tunnel itself.
pub fn tunnel_parent(t: &TunnelData) -> String {
    let mut h = Sha256::new();
    h.update(b"mos tunnel");
    h.update(t.kinds.to_le_bytes());
    h.update([t.id_kind]);
    h.update(t.id.to_le_bytes());
    if t.flags & tunnel_flags::OUTER != 0 {
        if t.flags & tunnel_flags::OUTER_IPV6 != 0 {
            h.update([6]);
            h.update(t.outer[0]);
            h.update(t.outer[1]);
        } else {
            h.update([4]);
            h.update(&t.outer[0][..4]);
            h.update(&t.outer[1][..4]);
        }
    }
    let d = h.finalize();
    let mut x = u128::from_le_bytes(d[..16].try_into().expect("16 bytes"));
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut s = String::with_capacity(18);
    s.push('T');
    for _ in 0..17 {
        s.push(DIGITS[(x % 62) as usize] as char);
        x /= 62;
    }
    s
}

// TCP flag bits.
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// Zeek's `history`: letters added as packets come, upper case for the originator, lower
/// case for the responder.
///
/// - `S` a SYN without ACK, `H` a SYN with ACK, `A` a pure ACK (no payload, none of
///   SYN/FIN/RST), `D` a packet with payload (none of SYN/FIN/RST), `F` a FIN, `R` a RST,
///   `I` a packet with FIN and RST, `Q` another packet with several of SYN/FIN/RST;
/// - each is added the first time it happens in a direction; `S`, `H`, `F` and `R` again
///   whenever their sequence number differs from that of the previous such packet;
/// - `T` (a retransmission with payload) and `G` (a content gap: bytes the capture did not
///   hold) are added at the 1st, 10th, 100th, ... occurrence in a direction;
/// - `^` first: the first packet seen came from the responder (the roles were flipped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    letters: String,
    /// Per direction (0: orig, 1: resp): the letters seen once (bits of `SEEN_*`).
    seen: [u16; 2],
    last_syn: [Option<u32>; 2],
    last_fin: [Option<u32>; 2],
    last_rst: [Option<u32>; 2],
    /// Per direction: retransmissions, and the count at which `T` is added next.
    rexmits: [(u64, u64); 2],
    /// Per direction: content gaps, and the count at which `G` is added next.
    gaps: [(u64, u64); 2],
    /// A packet was seen.
    started: bool,
}

const SEEN_SYN: u16 = 1 << 0;
const SEEN_FIN: u16 = 1 << 1;
const SEEN_RST: u16 = 1 << 2;
const SEEN_DATA: u16 = 1 << 3;
const SEEN_ACK: u16 = 1 << 4;
const SEEN_FIN_RST: u16 = 1 << 5;
const SEEN_MULTI: u16 = 1 << 6;

impl History {
    /// The letters so far.
    pub fn as_str(&self) -> &str {
        &self.letters
    }

    fn add(&mut self, dir: usize, c: char) {
        self.letters
            .push(if dir == 0 { c } else { c.to_ascii_lowercase() });
    }

    /// Adds `c` if it is the first of its kind in `dir`; says whether it had been seen.
    fn check(&mut self, dir: usize, bit: u16, c: char) -> bool {
        if self.seen[dir] & bit == 0 {
            self.seen[dir] |= bit;
            self.add(dir, c);
            false
        } else {
            true
        }
    }

    /// Adds `c` at the 1st, 10th, 100th, ... time.
    fn scaled(&mut self, dir: usize, which: fn(&mut History) -> &mut [(u64, u64); 2], c: char) {
        let (n, next) = &mut which(self)[dir];
        *n += 1;
        if *next == 0 {
            *next = 1;
        }
        if *n == *next {
            *next = next.saturating_mul(10);
            self.add(dir, c);
        }
    }

    /// A packet from the originator (`orig`) or the responder.
    pub fn packet(&mut self, orig: bool, flags: u8, seq: u32, len: u32) {
        let d = usize::from(!orig);
        if !self.started {
            self.started = true;
            if !orig {
                self.letters.push('^');
            }
        }
        let (syn, fin, rst) = (flags & SYN != 0, flags & FIN != 0, flags & RST != 0);
        let bits = u8::from(syn) + u8::from(fin) + u8::from(rst);
        if bits > 1 {
            if fin && rst {
                self.check(d, SEEN_FIN_RST, 'I');
            } else {
                self.check(d, SEEN_MULTI, 'Q');
            }
        } else if syn {
            let c = if flags & ACK != 0 { 'H' } else { 'S' };
            if self.check(d, SEEN_SYN, c) && self.last_syn[d] != Some(seq) {
                self.add(d, c);
            }
            self.last_syn[d] = Some(seq);
        } else if fin {
            // A FIN's number comes after the packet's payload.
            let at = seq.wrapping_add(len);
            if self.check(d, SEEN_FIN, 'F') && self.last_fin[d] != Some(at) {
                self.add(d, 'F');
            }
            self.last_fin[d] = Some(at);
        } else if rst {
            if self.check(d, SEEN_RST, 'R') && self.last_rst[d] != Some(seq) {
                self.add(d, 'R');
            }
            self.last_rst[d] = Some(seq);
        } else if len > 0 {
            self.check(d, SEEN_DATA, 'D');
        } else if flags & ACK != 0 {
            self.check(d, SEEN_ACK, 'A');
        }
    }

    /// A retransmission with payload from the originator or the responder.
    pub fn retransmission(&mut self, orig: bool) {
        self.scaled(usize::from(!orig), |h| &mut h.rexmits, 'T');
    }

    /// A content gap in the originator's or the responder's bytes.
    pub fn gap(&mut self, orig: bool) {
        self.scaled(usize::from(!orig), |h| &mut h.gaps, 'G');
    }
}

/// An endpoint's state as Zeek's TCP analyzer tracks it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Ep {
    #[default]
    Inactive,
    SynSent,
    SynAckSent,
    Partial,
    Established,
    Closed,
    Reset,
}

/// Both endpoints' Zeek states (index 0: orig), moved by each packet's flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    st: [Ep; 2],
    prev: [Ep; 2],
}

impl Endpoints {
    fn set(&mut self, i: usize, s: Ep) {
        if self.st[i] != s {
            self.prev[i] = self.st[i];
            self.st[i] = s;
        }
    }

    /// A packet from the originator (`orig`) or the responder, with its flags and payload
    /// length.
    pub fn packet(&mut self, orig: bool, flags: u8, len: u32) {
        let (e, p) = if orig { (0, 1) } else { (1, 0) };
        let (syn, fin, rst, ack) = (
            flags & SYN != 0,
            flags & FIN != 0,
            flags & RST != 0,
            flags & ACK != 0,
        );
        match self.st[e] {
            Ep::Inactive => {
                if syn {
                    if orig {
                        self.set(e, if ack { Ep::SynAckSent } else { Ep::SynSent });
                    } else {
                        // The responder answers (or opens at the same time): both are up.
                        if self.st[p] == Ep::SynSent {
                            self.set(p, Ep::Established);
                        }
                        self.set(e, Ep::Established);
                    }
                }
                if fin {
                    self.set(e, Ep::Closed);
                }
                if rst {
                    self.set(e, Ep::Reset);
                }
                if self.st[e] == Ep::Inactive {
                    if !orig && len == 0 && self.st[0] == Ep::SynSent {
                        // An ACK of the SYN before the SYN/ACK: not a partial connection.
                    } else if ack && self.st[p] == Ep::Established {
                        // The SYN was missed but the SYN/ACK seen: established.
                        self.set(e, Ep::Established);
                    } else {
                        self.set(e, Ep::Partial);
                    }
                }
            }
            Ep::SynSent | Ep::SynAckSent => {
                if fin {
                    self.set(e, Ep::Closed);
                }
                if rst {
                    self.set(e, Ep::Reset);
                }
            }
            Ep::Established | Ep::Partial => {
                if syn && self.st[e] == Ep::Partial && self.st[p] == Ep::Inactive && !ack {
                    self.set(e, Ep::SynSent);
                }
                if fin && !rst {
                    self.set(e, Ep::Closed);
                    if self.st[p] == Ep::Reset && self.prev[p] == Ep::Closed {
                        // The peer's FIN then RST was a normal close after all.
                        self.set(p, Ep::Closed);
                    }
                }
                if rst {
                    self.set(e, Ep::Reset);
                }
            }
            Ep::Closed => {
                if rst && self.st[p] != Ep::Closed {
                    self.set(e, Ep::Reset);
                }
            }
            Ep::Reset => {}
        }
    }

    /// Zeek's `conn_state` for these states, the streams' sizes and the history.
    pub fn conn_state(&self, orig_bytes: u64, resp_bytes: u64, history: &str) -> &'static str {
        let (os, rs) = (self.st[0], self.st[1]);
        let inactive = |s: Ep| matches!(s, Ep::Inactive | Ep::Partial);
        if rs == Ep::Reset {
            if matches!(os, Ep::SynSent | Ep::SynAckSent)
                || (os == Ep::Reset && orig_bytes == 0 && resp_bytes == 0)
            {
                "REJ"
            } else if inactive(os) {
                "RSTRH"
            } else {
                "RSTR"
            }
        } else if os == Ep::Reset {
            if inactive(rs) {
                if syn_then_reset(history) {
                    "RSTOS0"
                } else {
                    "OTH"
                }
            } else {
                "RSTO"
            }
        } else if rs == Ep::Closed && os == Ep::Closed {
            "SF"
        } else if os == Ep::Closed {
            if inactive(rs) {
                "SH"
            } else {
                "S2"
            }
        } else if rs == Ep::Closed {
            if inactive(os) {
                "SHR"
            } else {
                "S3"
            }
        } else if os == Ep::SynSent && rs == Ep::Inactive {
            "S0"
        } else if os == Ep::Established && rs == Ep::Established {
            "S1"
        } else {
            "OTH"
        }
    }
}

/// Whether a history reads as Zeek's `^?S[^HAFGIQ]*R.*`: the originator's SYN, then its RST
/// with none of its handshake, ACK, FIN, gap or odd-flag letters between.
fn syn_then_reset(history: &str) -> bool {
    let h = history.strip_prefix('^').unwrap_or(history);
    let Some(rest) = h.strip_prefix('S') else {
        return false;
    };
    for c in rest.chars() {
        match c {
            'R' => return true,
            'H' | 'A' | 'F' | 'G' | 'I' | 'Q' => return false,
            _ => {}
        }
    }
    false
}

/// Bytes of a direction kept for detection when its start was seen.
pub const DETECT_BYTES: usize = 16;
/// Bytes of a direction kept for detection when its start was not seen.
pub const MIDSTREAM_SCAN: usize = 4096;

/// Detection on what one direction's first bytes are.
///
/// `midstream`: the bytes may not start a message. Then besides the first bytes, a later
/// line that starts an HTTP request (`dir` orig) or response within the first
/// [`MIDSTREAM_SCAN`] bytes says HTTP. `last`: no more bytes will come (what cannot be decided
/// now is unknown).
pub fn judge(dir: Dir, buf: &[u8], midstream: bool, last: bool) -> Detect {
    let head = &buf[..buf.len().min(DETECT_BYTES)];
    if dir == Dir::Orig {
        match sslv2_client_hello_at(head) {
            Some(true) => return Detect::Is(Service::Ssl),
            None if !last => return Detect::NeedMore,
            _ => {}
        }
    }
    match detect(dir, head) {
        Detect::Is(s) => return Detect::Is(s),
        Detect::NeedMore if !last && buf.len() < DETECT_BYTES => return Detect::NeedMore,
        _ => {}
    }
    if !midstream {
        return Detect::Unknown;
    }
    let window = &buf[..buf.len().min(MIDSTREAM_SCAN)];
    for (i, _) in window.iter().enumerate().filter(|(_, &b)| b == b'\n') {
        let line = &window[i + 1..];
        let line = &line[..line.len().min(DETECT_BYTES)];
        if detect(dir, line) == Detect::Is(Service::Http) {
            return Detect::Is(Service::Http);
        }
    }
    if last || buf.len() >= MIDSTREAM_SCAN {
        Detect::Unknown
    } else {
        Detect::NeedMore
    }
}

/// Whether `b` starts an SSL 2.0 CLIENT-HELLO with a 2-byte record header (`None`: `b` is
/// too short to tell, and what there is may start one): the header's top bit set, a record
/// length of 9 to 16384 bytes, message type 1, and version 2.0 or 3.0 to 3.4 (a client
/// offering SSL 3 or TLS in the old format).
pub fn sslv2_client_hello_at(b: &[u8]) -> Option<bool> {
    let &b0 = b.first()?;
    if b0 & 0x80 == 0 {
        return Some(false);
    }
    let &b1 = b.get(1)?;
    let len = (usize::from(b0 & 0x7f) << 8) | usize::from(b1);
    if !(9..=16384).contains(&len) {
        return Some(false);
    }
    if *b.get(2)? != 1 {
        return Some(false);
    }
    let &major = b.get(3)?;
    if major != 0 && major != 3 {
        return Some(false);
    }
    let &minor = b.get(4)?;
    Some(match major {
        0 => minor == 2,
        _ => minor <= 4,
    })
}

/// TLS handshake message types a hello record is looked for by.
const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;

/// Whether `b` starts a TLS handshake record (type 22, version 3.0 to 3.4, a length a record
/// may have) whose first message is of type `msg` (`None`: `b` is shorter than the record
/// header and the message type, and what there is may start one).
pub fn hello_record_at(b: &[u8], msg: u8) -> Option<bool> {
    if *b.first()? != 0x16 {
        return Some(false);
    }
    if *b.get(1)? != 3 {
        return Some(false);
    }
    if *b.get(2)? > 4 {
        return Some(false);
    }
    let (&hi, &lo) = (b.get(3)?, b.get(4)?);
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len == 0 || len > MAX_RECORD_LEN {
        return Some(false);
    }
    Some(*b.get(5)? == msg)
}

/// Where a hello record of message type `msg` first starts in `b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HelloAt {
    /// At this offset.
    Found(usize),
    /// None complete; the bytes from this offset on (fewer than a record header and a type)
    /// may start one.
    Partial(usize),
    /// Nowhere, and no tail of `b` may start one.
    Nowhere,
}

fn find_hello(b: &[u8], msg: u8) -> HelloAt {
    let mut from = 0;
    while let Some(i) = b[from..].iter().position(|&x| x == 0x16) {
        let at = from + i;
        match hello_record_at(&b[at..], msg) {
            Some(true) => return HelloAt::Found(at),
            None => return HelloAt::Partial(at),
            Some(false) => from = at + 1,
        }
    }
    HelloAt::Nowhere
}

/// Who a direction's first bytes say sent them, for a connection whose roles were guessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// A client's first message of this service: an HTTP request, a TLS ClientHello (or an
    /// SSL 2.0 CLIENT-HELLO).
    Client(Service),
    /// A server's: an HTTP response, a TLS ServerHello.
    Server(Service),
    /// Neither, or something both ends send (an SSH banner, another TLS message).
    Neither,
    /// Too few bytes to tell.
    NeedMore,
}

/// The role the first bytes `buf` of a direction show; `last`: no more will come.
fn first_role(buf: &[u8], last: bool) -> Role {
    let head = &buf[..buf.len().min(DETECT_BYTES)];
    if head.is_empty() {
        return if last { Role::Neither } else { Role::NeedMore };
    }
    let wait = |pending: bool| {
        if pending && !last {
            Role::NeedMore
        } else {
            Role::Neither
        }
    };
    if head[0] == 0x16 {
        return match (
            hello_record_at(head, CLIENT_HELLO),
            hello_record_at(head, SERVER_HELLO),
        ) {
            (Some(true), _) => Role::Client(Service::Ssl),
            (_, Some(true)) => Role::Server(Service::Ssl),
            (None, _) | (_, None) => wait(true),
            _ => Role::Neither,
        };
    }
    let mut pending = false;
    match sslv2_client_hello_at(head) {
        Some(true) => return Role::Client(Service::Ssl),
        None => pending = true,
        Some(false) => {}
    }
    for (dir, role) in [
        (Dir::Orig, Role::Client(Service::Http)),
        (Dir::Resp, Role::Server(Service::Http)),
    ] {
        match detect(dir, head) {
            Detect::Is(Service::Http) => return role,
            Detect::NeedMore => pending = true,
            _ => {}
        }
    }
    wait(pending && head.len() < DETECT_BYTES)
}

/// The other direction.
fn flip(d: Dir) -> Dir {
    match d {
        Dir::Orig => Dir::Resp,
        Dir::Resp => Dir::Orig,
    }
}

/// One direction's detection.
#[derive(Debug, Default)]
struct Detector {
    /// The bytes kept while undecided.
    buf: Vec<u8>,
    /// Capture time of the first kept byte.
    ts_ns: u64,
    /// Bytes before `buf` that were never seen (a late start, holes).
    lost_before: u64,
    /// The direction's first byte was not seen as such.
    midstream: bool,
    /// Whether `midstream` was settled (at the direction's first piece).
    settled: bool,
    /// This direction is none of the protocols.
    unknown: bool,
}

impl Detector {
    fn limit(&self) -> usize {
        if self.midstream {
            MIDSTREAM_SCAN
        } else {
            DETECT_BYTES
        }
    }
}

/// A connection's protocol side: detection, then its parser.
#[derive(Default)]
struct Proto {
    /// The streams are still read.
    reading: bool,
    /// Detection is under way (at the start, and again once an HTTP tunnel opened).
    detecting: bool,
    /// An HTTP `CONNECT` or protocol switch was answered: detection started again on what
    /// followed.
    tunneled: bool,
    /// Per direction (0: orig, 1: resp).
    det: [Detector; 2],
    /// The parser, once the service is known and its log wanted.
    parser: Option<Box<dyn Parser>>,
    /// The roles were guessed the wrong way round: the parser's client is the sensor's
    /// server (its `Dir::Orig` is the sensor's `Dir::Resp`), and protocol records name the
    /// ends that way.
    swapped: bool,
    /// No direction opened with a protocol mos parses: the watch for a TLS hello further on.
    hunt: Option<Box<Hunt>>,
    /// Per side ([`Side::index`]): where the reader is.
    cursors: [Cursor; 2],
}

impl Proto {
    /// The parser's direction for the sensor's direction `dir` (and back).
    fn role(&self, dir: Dir) -> Dir {
        if self.swapped {
            flip(dir)
        } else {
            dir
        }
    }
}

/// Bytes of each direction (from its start, holes included) watched for a TLS hello when the
/// connection's first bytes were none of the protocols.
pub const HUNT_BYTES: u64 = 64 * 1024;

/// The watch of one direction for its TLS hello (the client's ClientHello, the server's
/// ServerHello).
#[derive(Debug, Default)]
struct HuntSide {
    /// Bytes of the direction gone by, from its start (holes included).
    seen: u64,
    /// The end of the bytes looked at, which a hello record's header may start in.
    carry: Vec<u8>,
    /// The hello was found: the bytes from it on belong to the TLS parser.
    found: bool,
    /// The server's bytes from its hello on while the client's hello is still to be found
    /// (the parser does not exist yet).
    held: Vec<u8>,
    /// [`HUNT_BYTES`] went by without a hello (or with the server's held that long): this
    /// direction is no longer read.
    over: bool,
}

/// The watch for TLS that does not start at a connection's first byte (per direction of the
/// parser, 0: the client's).
#[derive(Debug, Default)]
struct Hunt {
    sides: [HuntSide; 2],
}

impl std::fmt::Debug for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proto")
            .field("reading", &self.reading)
            .field("detecting", &self.detecting)
            .field("tunneled", &self.tunneled)
            .field("det", &self.det)
            .field("parser", &self.parser.is_some())
            .field("swapped", &self.swapped)
            .field("hunt", &self.hunt)
            .field("cursors", &self.cursors)
            .finish()
    }
}

fn dir_index(d: Dir) -> usize {
    match d {
        Dir::Orig => 0,
        Dir::Resp => 1,
    }
}

/// What is kept of one connection.
#[derive(Debug)]
struct Conn {
    uid: String,
    tuple: ConnTuple,
    /// What the slot said the last time it was read.
    info: FlowInfo,
    /// An event of the connection came since the last sweep.
    touched: bool,
    history: History,
    endpoints: Endpoints,
    /// Per side ([`Side::index`]): the furthest receive-stream tail events announced.
    tails: [u64; 2],
    /// Per side: bytes events said were lost.
    lost: [u64; 2],
    /// Per sender side: `PKT_IN` events seen.
    pkts: [u64; 2],
    /// Per receiving side: retransmitted payload bytes, conflicting bytes.
    rexmit: [u64; 2],
    conflict: [u64; 2],
    /// What detection found.
    service: Option<Service>,
    /// A parser was made for it.
    parsed: bool,
    /// Its parser produced a record other than a weird: the service is confirmed.
    confirmed: bool,
    proto: Proto,
}

/// What a run did, for the summary line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Connections seen.
    pub connections: u64,
    /// Records written per log.
    pub records: BTreeMap<&'static str, u64>,
    /// Weirds the parsers reported (written or not).
    pub weirds: u64,
    /// Connections written when the run stopped before their end.
    pub cut_short: u64,
}

/// `mos-log`'s state: the connections, the output, the counts.
pub struct Logger {
    logs: Logs,
    conn_sock: Option<SockId>,
    data_sock: Option<SockId>,
    conns: HashMap<FlowId, Conn>,
    output: Box<dyn Output>,
    scratch: Vec<u8>,
    records: Vec<Record>,
    /// What was written.
    pub totals: Totals,
    /// An output error, which stops the run loop.
    pub error: Option<anyhow::Error>,
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logger")
            .field("logs", &self.logs)
            .field("conn_sock", &self.conn_sock)
            .field("data_sock", &self.data_sock)
            .field("open", &self.conns.len())
            .field("totals", &self.totals)
            .finish()
    }
}

impl Logger {
    /// A logger writing `logs` to `output`, with the sockets [`sockets`] made.
    pub fn new(
        logs: Logs,
        output: Box<dyn Output>,
        conn_sock: Option<SockId>,
        data_sock: Option<SockId>,
    ) -> Logger {
        let mut totals = Totals::default();
        for name in logs.names() {
            totals.records.insert(name, 0);
        }
        Logger {
            logs,
            conn_sock,
            data_sock,
            conns: HashMap::new(),
            output,
            scratch: vec![0; 64 * 1024],
            records: Vec::new(),
            totals,
            error: None,
        }
    }

    /// The connections open now.
    pub fn open(&self) -> usize {
        self.conns.len()
    }

    /// Records the output dropped (a broker down or too slow).
    pub fn output_dropped(&self) -> u64 {
        self.output.dropped()
    }

    /// The connection's state, made on its first event here (`None`: its slot is gone).
    fn conn(&mut self, ctx: &Ctx<'_>, flow: FlowId) -> Option<&mut Conn> {
        if !self.conns.contains_key(&flow) {
            let info = ctx.flow_info(flow).ok()?;
            self.totals.connections += 1;
            let reading = self.data_sock.is_some();
            self.conns.insert(
                flow,
                Conn {
                    uid: uid(&info),
                    tuple: ConnTuple::new(info.client, info.server),
                    info,
                    touched: true,
                    history: History::default(),
                    endpoints: Endpoints::default(),
                    tails: [0; 2],
                    lost: [0; 2],
                    pkts: [0; 2],
                    rexmit: [0; 2],
                    conflict: [0; 2],
                    service: None,
                    parsed: false,
                    confirmed: false,
                    proto: Proto {
                        reading,
                        detecting: true,
                        ..Proto::default()
                    },
                },
            );
        }
        let c = self.conns.get_mut(&flow)?;
        c.touched = true;
        Some(c)
    }

    /// A connection-socket event: packets, retransmissions, errors.
    fn on_conn_event(&mut self, ctx: &mut Ctx<'_>, ev: &Event) {
        let (Some(flow), Some(side)) = (ev.flow, ev.side) else {
            return;
        };
        let Some(c) = self.conn(ctx, flow) else {
            return;
        };
        let i = side.index();
        c.tails[i] = c.tails[i].max(ev.tail);
        match ev.kind {
            EventKind::PktIn => {
                // At the sender's hook: `side` sent the packet; the client is the originator.
                let orig = side == Side::Cli;
                c.pkts[i] += 1;
                c.history.packet(orig, ev.tcp_flags, ev.seq, ev.payload_len);
                c.endpoints.packet(orig, ev.tcp_flags, ev.payload_len);
            }
            EventKind::Rexmit => {
                // At the receiver: the bytes are of the other end.
                c.rexmit[i] += u64::from(ev.payload_len);
                if ev.payload_len > 0 {
                    c.history.retransmission(side == Side::Svr);
                }
            }
            EventKind::Error { kind, len, .. } => match kind {
                ErrorKind::Conflict => c.conflict[i] += len,
                ErrorKind::Gap | ErrorKind::SnapTruncated | ErrorKind::Overflow => {
                    c.lost[i] += len;
                    c.history.gap(side == Side::Svr);
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// New bytes on a side of a connection (data socket).
    fn on_data(&mut self, ctx: &mut Ctx<'_>, ev: &Event) {
        let (Some(flow), Some(side), Some(sock)) = (ev.flow, ev.side, self.data_sock) else {
            return;
        };
        let Some(c) = self.conn(ctx, flow) else {
            return;
        };
        let i = side.index();
        c.tails[i] = c.tails[i].max(ev.tail);
        // A direction that is none of the protocols is not read while the other decides
        // (should the other find a service, the parser gets what is still held, after a
        // gap).
        if !c.proto.reading || side_idle(c, side) {
            return;
        }
        let more = self.read_side(ctx, sock, flow, side, ev.ts_ns, false);
        self.flush_records(flow, ev.ts_ns, ctx);
        if !more {
            self.stop_reading(ctx, flow);
        } else if self
            .conns
            .get(&flow)
            .is_some_and(|c| c.proto.hunt.is_some() && side_idle(c, side))
        {
            // The watch for this direction's TLS hello is over while the other's goes on:
            // no more of its events.
            let _ = ctx.stop_monitoring(sock, flow, side as u8);
        }
    }

    /// Reads what `side` holds past the reader into detection or the parser; `false` once
    /// the connection needs no more reading. `last`: the connection ended.
    fn read_side(
        &mut self,
        ctx: &mut Ctx<'_>,
        sock: SockId,
        flow: FlowId,
        side: Side,
        ts_ns: u64,
        last: bool,
    ) -> bool {
        let logs = self.logs;
        let Logger {
            conns,
            scratch,
            records,
            ..
        } = self;
        let Some(c) = conns.get_mut(&flow) else {
            return false;
        };
        let dir = Dir::of_side(side);
        let d = dir_index(dir);
        if !c.proto.det[d].settled {
            // Settled at the direction's first read: was its first byte seen as such?
            if let Ok(info) = ctx.flow_info(flow) {
                c.info = info;
            }
            let start_seen = match dir {
                Dir::Orig => !c.info.guessed,
                Dir::Resp => c.info.side(Side::Svr).isn.is_some(),
            };
            c.proto.det[d].midstream = !start_seen;
            c.proto.det[d].settled = true;
        }
        let mut cur = c.proto.cursors[side.index()];
        let mut wanted = true;
        let r = read_new(ctx, sock, flow, side, &mut cur, scratch, |piece| {
            wanted = feed(c, logs, dir, piece, ts_ns, records);
            wanted
        });
        c.proto.cursors[side.index()] = cur;
        if let Err(ReadStop::Failed(e)) = r {
            eprintln!("mos-log: flow {flow}: {e}");
        }
        if wanted && last {
            // Nothing more will come: decide with what was kept.
            settle(c, logs, ts_ns, records);
        }
        wanted && reading_needed(c)
    }

    /// No more reading of a connection's streams: the data socket stops monitoring it. With
    /// no connection log, nothing more is wanted of it at all.
    fn stop_reading(&mut self, ctx: &mut Ctx<'_>, flow: FlowId) {
        let Some(sock) = self.data_sock else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&flow) {
            c.proto.reading = false;
            c.proto.parser = None;
            c.proto.hunt = None;
            c.proto.det = Default::default();
        }
        let _ = ctx.stop_monitoring(sock, flow, MOS_SIDE_BOTH);
        if self.conn_sock.is_none() {
            self.conns.remove(&flow);
        }
    }

    /// Writes the records the parsers produced.
    fn flush_records(&mut self, flow: FlowId, found_ns: u64, ctx: &mut Ctx<'_>) {
        if self.records.is_empty() {
            return;
        }
        let recs = std::mem::take(&mut self.records);
        if let Some(c) = self.conns.get_mut(&flow) {
            c.confirmed |= recs.iter().any(|r| !matches!(r, Record::Weird(_)));
            let uid = c.uid.clone();
            let tuple = if c.proto.swapped {
                // The parser's client is the sensor's server.
                ConnTuple {
                    orig_h: c.tuple.resp_h,
                    orig_p: c.tuple.resp_p,
                    resp_h: c.tuple.orig_h,
                    resp_p: c.tuple.orig_p,
                }
            } else {
                c.tuple.clone()
            };
            for r in &recs {
                let log = log_of(r);
                if log == "weird" {
                    self.totals.weirds += 1;
                }
                if self.logs.wants(log) {
                    let ts = ts_secs(record_ts(r, found_ns));
                    self.write(ctx, log, &uid, &tuple, ts, r);
                }
            }
        }
        self.records = recs;
        self.records.clear();
    }

    fn write<R: Serialize>(
        &mut self,
        ctx: &mut Ctx<'_>,
        log: &'static str,
        uid: &str,
        id: &ConnTuple,
        ts: f64,
        record: &R,
    ) {
        if self.error.is_some() {
            return;
        }
        let line = Line {
            ts,
            uid,
            id,
            record,
        };
        let r = serde_json::to_string(&line)
            .map_err(anyhow::Error::from)
            .and_then(|text| self.output.record(log, uid, &text));
        match r {
            Ok(()) => *self.totals.records.entry(log).or_default() += 1,
            Err(e) => {
                self.error = Some(e);
                ctx.stop();
            }
        }
    }

    /// The connection ended (`reason`), or the run stops before its end (`None`): reads what
    /// is left, ends its parser, writes its records and its `conn` record, and forgets it.
    fn close(&mut self, ctx: &mut Ctx<'_>, flow: FlowId, reason: Option<EndReason>, ts_ns: u64) {
        if !self.conns.contains_key(&flow) {
            return;
        }
        if let Some(sock) = self.data_sock {
            // The client's bytes first (the parser's client, when the roles were the wrong
            // way round): a request comes before its response. A direction that is none of
            // the protocols is left unread.
            let swapped = self.conns.get(&flow).is_some_and(|c| c.proto.swapped);
            let order = if swapped {
                [Side::Cli, Side::Svr]
            } else {
                [Side::Svr, Side::Cli]
            };
            for side in order {
                let wanted = self
                    .conns
                    .get(&flow)
                    .is_some_and(|c| c.proto.reading && !side_idle(c, side));
                if wanted && !self.read_side(ctx, sock, flow, side, ts_ns, true) {
                    break;
                }
            }
        }
        if let Some(c) = self.conns.get_mut(&flow) {
            if let Some(p) = c.proto.parser.as_mut() {
                p.end(ts_ns, &mut self.records);
            }
        }
        self.flush_records(flow, ts_ns, ctx);
        let Some(c) = self.conns.remove(&flow) else {
            return;
        };
        if reason.is_none() {
            self.totals.cut_short += 1;
        }
        if !self.logs.conn {
            return;
        }
        let info = match ctx.flow_info(flow) {
            Ok(info) => info,
            // The slot moved on (live mode, far behind): what was seen last.
            Err(_) => {
                let mut info = c.info;
                for s in [Side::Cli, Side::Svr] {
                    let i = s.index();
                    info.sides[i].tail = info.sides[i].tail.max(c.tails[i]);
                    info.sides[i].lost = info.sides[i].lost.max(c.lost[i]);
                    info.sides[i].packets = info.sides[i].packets.max(c.pkts[i]);
                }
                info
            }
        };
        let rec = conn_record(&c, &info, reason.or(info.end_reason));
        self.write(ctx, "conn", &c.uid, &c.tuple, ts_secs(info.start_ns), &rec);
    }

    /// Writes every connection still open as far as it got (the run stops before their
    /// end); returns how many there were.
    pub fn close_open(&mut self, ctx: &mut Ctx<'_>) -> usize {
        let mut open: Vec<FlowId> = self.conns.keys().copied().collect();
        open.sort();
        for &flow in &open {
            let ts = self.conns.get(&flow).map_or(0, |c| c.info.last_ns);
            self.close(ctx, flow, None, ts);
        }
        open.len()
    }

    /// About once a second: flushes the output, and writes the connections whose slot moved
    /// on without a `CONN_END` reaching this analyzer (live mode, events dropped) with what was
    /// seen of them.
    pub fn tick(&mut self, ctx: &mut Ctx<'_>) {
        if self.error.is_none() {
            if let Err(e) = self.output.tick() {
                self.error = Some(e);
                ctx.stop();
                return;
            }
        }
        let mut gone = Vec::new();
        for (&flow, c) in &mut self.conns {
            if std::mem::take(&mut c.touched) {
                continue;
            }
            if matches!(ctx.flow_info(flow), Err(e) if e.errno() == Errno::EBADF) {
                gone.push(flow);
            }
        }
        gone.sort();
        for flow in gone {
            let ts = self.conns.get(&flow).map_or(0, |c| c.info.last_ns);
            self.close(ctx, flow, None, ts);
        }
    }

    /// The end of the run: everything written or handed over.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.output.finish()
    }
}

/// Whether the connection still needs its streams read.
fn reading_needed(c: &Conn) -> bool {
    match (&c.proto.parser, &c.proto.hunt) {
        (Some(p), _) => !p.done(),
        // The watch for a TLS hello goes on while the client's may still come.
        (None, Some(h)) => !h.sides[0].over,
        // Detection goes on while a direction may still say what the connection is.
        (None, None) if c.proto.detecting => !(c.proto.det[0].unknown && c.proto.det[1].unknown),
        // A service with no parser (its log is not wanted): known, nothing more to read.
        (None, None) => false,
    }
}

/// Whether the sensor's side `side` of a connection is left unread: detection found its
/// direction none of the protocols while the other still decides, or the watch for its TLS
/// hello is over.
fn side_idle(c: &Conn, side: Side) -> bool {
    let dir = Dir::of_side(side);
    if c.proto.detecting {
        return c.proto.det[dir_index(dir)].unknown;
    }
    match (&c.proto.hunt, &c.proto.parser) {
        (Some(h), _) => h.sides[dir_index(c.proto.role(dir))].over,
        _ => false,
    }
}

/// Whether a record is an HTTP exchange after which the connection carries another protocol:
/// a `CONNECT` answered with 2xx (a tunnel), or `101 Switching Protocols`.
fn opens_tunnel(r: &Record) -> bool {
    let Record::Http(h) = r else {
        return false;
    };
    match h.status_code {
        Some(101) => true,
        Some(200..=299) => h.method.as_deref() == Some("CONNECT"),
        _ => false,
    }
}

/// Feeds one piece of the sensor's direction `dir` to detection, the watch for a TLS hello,
/// or the parser; `false` once no more is wanted.
fn feed(
    c: &mut Conn,
    logs: Logs,
    dir: Dir,
    piece: Piece<'_>,
    ts_ns: u64,
    out: &mut Vec<Record>,
) -> bool {
    if c.proto.detecting {
        let d = dir_index(dir);
        let det = &mut c.proto.det[d];
        if det.unknown {
            // This direction said no; the other may still say what the connection is.
            return !c.proto.det[1 - d].unknown;
        }
        match piece {
            Piece::Lost { len, .. } => {
                // What was kept is before a hole: drop it, and look again after the hole
                // as at a midstream start.
                det.lost_before += det.buf.len() as u64 + len;
                det.buf.clear();
                det.midstream = true;
            }
            Piece::Data { bytes, .. } => {
                if det.buf.is_empty() {
                    det.ts_ns = ts_ns;
                }
                let room = det.limit().saturating_sub(det.buf.len());
                det.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
                let rest = &bytes[bytes.len().min(room)..];
                match judge_conn(c, dir, false) {
                    (Detect::NeedMore, _) => {}
                    (Detect::Unknown, _) => {
                        // The whole piece is kept: the bytes the direction's reader passed
                        // go to a parser should the other direction find one, or to the
                        // watch for a TLS hello.
                        let det = &mut c.proto.det[d];
                        det.unknown = true;
                        det.buf.extend_from_slice(rest);
                        if c.proto.det[1 - d].unknown {
                            start_hunt(c, logs, ts_ns, out);
                        }
                    }
                    (Detect::Is(s), swap) => {
                        decided(c, logs, s, swap, out);
                        let role = c.proto.role(dir);
                        if let Some(p) = c.proto.parser.as_mut() {
                            if !rest.is_empty() && !p.done() {
                                p.data(role, rest, ts_ns, out);
                            }
                        }
                    }
                }
            }
        }
        return reading_needed(c);
    }
    let role = c.proto.role(dir);
    if c.proto.hunt.is_some() {
        hunt(c, role, piece, ts_ns, out);
        return reading_needed(c);
    }
    let Some(p) = c.proto.parser.as_mut() else {
        return false;
    };
    let before = out.len();
    match piece {
        Piece::Data { bytes, .. } => p.data(role, bytes, ts_ns, out),
        Piece::Lost { len, .. } => p.gap(role, len, ts_ns, out),
    }
    if !p.done() {
        return true;
    }
    if !c.proto.tunneled && out[before..].iter().any(opens_tunnel) {
        // What the tunnel carries is found as at a connection's start (bytes of the piece
        // that ended the HTTP exchange, past its head, are not looked at: the next protocol
        // normally speaks in packets of its own).
        c.proto.tunneled = true;
        c.proto.parser = None;
        c.proto.detecting = true;
        for d in &mut c.proto.det {
            *d = Detector {
                settled: true,
                ..Detector::default()
            };
        }
        return true;
    }
    false
}

/// Detection's verdict on what the sensor's direction `dir` kept, and whether the roles are
/// the wrong way round. For a connection whose roles the sensor guessed, the first bytes of
/// either direction may show which end is the client (a request or hello, a response or the
/// server's hello); the roles are taken as swapped when they show the guessed client to be
/// the server (or the guessed server to be the client), and the other direction does not
/// show the same of itself. `last`: nothing more will come.
fn judge_conn(c: &Conn, dir: Dir, last: bool) -> (Detect, bool) {
    let d = dir_index(dir);
    let det = &c.proto.det[d];
    if c.info.guessed && !c.proto.tunneled {
        let mine = first_role(&det.buf, last);
        let (service, client) = match mine {
            Role::NeedMore => return (Detect::NeedMore, false),
            Role::Client(s) => (Some(s), true),
            Role::Server(s) => (Some(s), false),
            Role::Neither => (None, false),
        };
        if let Some(s) = service {
            if client == (dir == Dir::Orig) {
                return (Detect::Is(s), false);
            }
            let other = first_role(&c.proto.det[1 - d].buf, false);
            let same = match other {
                Role::Client(_) => client,
                Role::Server(_) => !client,
                Role::Neither | Role::NeedMore => false,
            };
            if !same {
                return (Detect::Is(s), true);
            }
        }
    }
    (
        judge(c.proto.role(dir), &det.buf, det.midstream, last),
        false,
    )
}

/// The service is known: make its parser (if its log is wanted) and give it what detection
/// kept of both directions, the client's first; `swap`: the roles are the wrong way round.
fn decided(c: &mut Conn, logs: Logs, service: Service, swap: bool, out: &mut Vec<Record>) {
    // The connection's service is the first found (HTTP, for a tunnel through a proxy).
    c.service.get_or_insert(service);
    c.proto.detecting = false;
    c.proto.swapped |= swap;
    let kept = std::mem::take(&mut c.proto.det);
    if logs.parses(service) {
        let midstream = c.info.guessed || kept.iter().any(|d| d.midstream);
        let mut p = new_parser(service, midstream);
        c.parsed = true;
        for role in [Dir::Orig, Dir::Resp] {
            let det = &kept[dir_index(c.proto.role(role))];
            if det.lost_before > 0 && !p.done() {
                p.gap(role, det.lost_before, det.ts_ns, out);
            }
            if !det.buf.is_empty() && !p.done() {
                p.data(role, &det.buf, det.ts_ns, out);
            }
        }
        c.proto.parser = Some(p);
    }
    // Detection is over; each direction's state stays "settled".
    for (d, k) in c.proto.det.iter_mut().zip(kept.iter()) {
        d.settled = k.settled;
        d.midstream = k.midstream;
    }
}

/// The connection ended with detection undecided: decide on what was kept, or look for a
/// TLS hello in it.
fn settle(c: &mut Conn, logs: Logs, ts_ns: u64, out: &mut Vec<Record>) {
    if !c.proto.detecting {
        return;
    }
    for dir in [Dir::Orig, Dir::Resp] {
        let det = &c.proto.det[dir_index(dir)];
        if det.unknown || det.buf.is_empty() {
            continue;
        }
        if let (Detect::Is(s), swap) = judge_conn(c, dir, true) {
            decided(c, logs, s, swap, out);
            return;
        }
    }
    start_hunt(c, logs, ts_ns, out);
}

/// Neither direction opened with a protocol mos parses: watch both for a TLS hello further
/// on (when the TLS log is wanted), starting with what detection kept.
fn start_hunt(c: &mut Conn, logs: Logs, ts_ns: u64, out: &mut Vec<Record>) {
    if !logs.parses(Service::Ssl) || c.proto.hunt.is_some() {
        return;
    }
    c.proto.detecting = false;
    c.proto.hunt = Some(Box::default());
    let kept = std::mem::take(&mut c.proto.det);
    // The client's first: its hello makes the parser the server's is given to.
    for role in [Dir::Orig, Dir::Resp] {
        let det = &kept[dir_index(c.proto.role(role))];
        if det.lost_before > 0 {
            let lost = Piece::Lost {
                offset: 0,
                len: det.lost_before,
            };
            hunt(c, role, lost, ts_ns, out);
        }
        if !det.buf.is_empty() {
            let data = Piece::Data {
                offset: det.lost_before,
                bytes: &det.buf,
            };
            hunt(c, role, data, det.ts_ns, out);
        }
    }
    for (d, k) in c.proto.det.iter_mut().zip(kept.iter()) {
        d.settled = k.settled;
        d.midstream = k.midstream;
    }
}

/// One piece of the parser's direction `role` while the connection is watched for its TLS
/// hellos: looked through for the direction's hello (within its first [`HUNT_BYTES`]), and
/// from the hello on given to the TLS parser, made at the client's hello.
fn hunt(c: &mut Conn, role: Dir, piece: Piece<'_>, ts_ns: u64, out: &mut Vec<Record>) {
    let Proto { hunt, parser, .. } = &mut c.proto;
    let Some(h) = hunt.as_mut() else {
        return;
    };
    let i = dir_index(role);
    let side = &mut h.sides[i];
    if side.over {
        return;
    }
    // The bytes from the hello on, when it is found in this piece.
    let mut from_hello: Option<Vec<u8>> = None;
    match piece {
        Piece::Lost { len, .. } => {
            side.seen = side.seen.saturating_add(len);
            side.carry.clear();
            if side.found {
                match parser.as_mut() {
                    Some(p) => p.gap(role, len, ts_ns, out),
                    None => {
                        // The server's hello held is cut: look for another.
                        side.found = false;
                        side.held = Vec::new();
                    }
                }
            }
        }
        Piece::Data { bytes, .. } => {
            let n = bytes.len() as u64;
            if side.found {
                match parser.as_mut() {
                    Some(p) => p.data(role, bytes, ts_ns, out),
                    None => side.held.extend_from_slice(bytes),
                }
            } else {
                let room = HUNT_BYTES.saturating_sub(side.seen);
                let looked = bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX));
                let mut buf = std::mem::take(&mut side.carry);
                buf.extend_from_slice(&bytes[..looked]);
                let msg = match role {
                    Dir::Orig => CLIENT_HELLO,
                    Dir::Resp => SERVER_HELLO,
                };
                match find_hello(&buf, msg) {
                    HelloAt::Found(at) => {
                        side.found = true;
                        buf.drain(..at);
                        buf.extend_from_slice(&bytes[looked..]);
                        from_hello = Some(buf);
                    }
                    HelloAt::Partial(at) => {
                        buf.drain(..at);
                        side.carry = buf;
                    }
                    HelloAt::Nowhere => {}
                }
            }
            side.seen = side.seen.saturating_add(n);
        }
    }
    if let Some(bytes) = from_hello {
        match (role, parser.as_mut()) {
            (_, Some(p)) => p.data(role, &bytes, ts_ns, out),
            (Dir::Resp, None) => side.held = bytes,
            (Dir::Orig, None) => {
                // The client's hello: TLS from here on, the server's hello (if it came
                // first) after it.
                let mut p: Box<dyn Parser> = Box::new(TlsParser::new());
                p.data(Dir::Orig, &bytes, ts_ns, out);
                let server = &mut h.sides[1];
                if server.found && !p.done() {
                    let held = std::mem::take(&mut server.held);
                    p.data(Dir::Resp, &held, ts_ns, out);
                }
                *parser = Some(p);
                c.service.get_or_insert(Service::Ssl);
                c.parsed = true;
            }
        }
    }
    let side = &mut h.sides[i];
    // Past the bytes watched: no hello, or the server's still held for want of the client's.
    if side.seen >= HUNT_BYTES && (!side.found || parser.is_none()) {
        *side = HuntSide {
            seen: side.seen,
            over: true,
            ..HuntSide::default()
        };
    }
    if parser.is_some() && h.sides.iter().all(|s| s.found) {
        // Both hellos found: the parser reads the rest as any other.
        *hunt = None;
    }
}

/// The `conn` record of a connection from its slot's account `info`.
fn conn_record(c: &Conn, info: &FlowInfo, reason: Option<EndReason>) -> ConnRecord {
    let orig_bytes = info.side(Side::Svr).tail;
    let resp_bytes = info.side(Side::Cli).tail;
    let history = c.history.as_str().to_string();
    ConnRecord {
        proto: "tcp",
        // As Zeek, a service whose parser gave up before any record of it is not one.
        service: c
            .service
            .filter(|_| c.confirmed || !c.parsed)
            .map(Service::zeek_name),
        // In whole microseconds between the two times as `ts` shows them.
        duration: (info.last_ns / 1_000).saturating_sub(info.start_ns / 1_000) as f64 / 1e6,
        orig_bytes,
        resp_bytes,
        conn_state: c.endpoints.conn_state(orig_bytes, resp_bytes, &history),
        missed_bytes: info.sides[0].lost + info.sides[1].lost,
        history,
        orig_pkts: info.side(Side::Cli).packets,
        resp_pkts: info.side(Side::Svr).packets,
        tunnel_parents: info.tunnel.iter().map(tunnel_parent).collect(),
        orig_tcp_state: info.side(Side::Cli).state.map(|s| s.name()),
        resp_tcp_state: info.side(Side::Svr).state.map(|s| s.name()),
        midstream: info.side(Side::Cli).isn.is_none(),
        roles_guessed: info.guessed,
        orig_rexmit_bytes: c.rexmit[Side::Svr.index()],
        resp_rexmit_bytes: c.rexmit[Side::Cli.index()],
        orig_conflict_bytes: c.conflict[Side::Svr.index()],
        resp_conflict_bytes: c.conflict[Side::Cli.index()],
        end_reason: reason.map(EndReason::name),
    }
}

/// The monitoring sockets `logs` needs: the connection socket (with `conn`) and the data
/// socket (with a protocol or the weird log), in that order.
pub fn sockets(mos: &mut Mos, logs: Logs) -> mos_client::Result<(Option<SockId>, Option<SockId>)> {
    let conn = if logs.conn { Some(mos.socket()?) } else { None };
    let data = if logs.reads_streams() {
        Some(mos.socket()?)
    } else {
        None
    };
    Ok((conn, data))
}

/// Registers the logger's callbacks on its sockets (see the module's description), and a
/// wall-clock timer calling [`Logger::tick`] every `tick`.
pub fn register(
    mos: &mut Mos,
    state: &Rc<RefCell<Logger>>,
    tick: Duration,
) -> mos_client::Result<()> {
    let (conn_sock, data_sock) = {
        let l = state.borrow();
        (l.conn_sock, l.data_sock)
    };
    let end = Filter {
        events: EventMask::CONN_END,
        hook: None,
        side: Some(Side::Cli),
    };
    let on_end = |s: Rc<RefCell<Logger>>| {
        move |ctx: &mut Ctx<'_>, ev: &Event| {
            if let (EventKind::ConnEnd { reason }, Some(flow)) = (ev.kind, ev.flow) {
                s.borrow_mut().close(ctx, flow, Some(reason), ev.ts_ns);
            }
        }
    };
    if let Some(sock) = conn_sock {
        let s = state.clone();
        mos.register_filtered(
            sock,
            Filter {
                events: EventMask::PKT_IN,
                hook: Some(Hook::Snd),
                side: None,
            },
            move |ctx, ev| s.borrow_mut().on_conn_event(ctx, ev),
        )?;
        let s = state.clone();
        mos.register_filtered(
            sock,
            Filter {
                events: EventMask::REXMIT | EventMask::ERROR,
                hook: None,
                side: None,
            },
            move |ctx, ev| s.borrow_mut().on_conn_event(ctx, ev),
        )?;
        mos.register_filtered(sock, end, on_end(state.clone()))?;
    }
    if let Some(sock) = data_sock {
        let s = state.clone();
        mos.register_filtered(
            sock,
            Filter {
                events: EventMask::CONN_NEW_DATA,
                hook: None,
                side: None,
            },
            move |ctx, ev| s.borrow_mut().on_data(ctx, ev),
        )?;
        if conn_sock.is_none() {
            mos.register_filtered(sock, end, on_end(state.clone()))?;
        }
    }
    let s = state.clone();
    mos.with_ctx(|ctx| every(ctx, tick, s));
    Ok(())
}

/// Ticks the logger every `period`, setting itself again.
fn every(ctx: &mut Ctx<'_>, period: Duration, state: Rc<RefCell<Logger>>) {
    ctx.settimer(0, period, move |ctx, _| {
        state.borrow_mut().tick(ctx);
        every(ctx, period, state.clone());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(packets: &[(bool, u8, u32, u32)]) -> (String, &'static str) {
        let mut h = History::default();
        let mut e = Endpoints::default();
        let (mut ob, mut rb) = (0, 0);
        for &(orig, flags, seq, len) in packets {
            h.packet(orig, flags, seq, len);
            e.packet(orig, flags, len);
            if orig {
                ob += u64::from(len);
            } else {
                rb += u64::from(len);
            }
        }
        let state = e.conn_state(ob, rb, h.as_str());
        (h.as_str().to_string(), state)
    }

    const PA: u8 = ACK | 0x08;

    #[test]
    fn a_whole_connection_is_sf() {
        let (h, s) = run(&[
            (true, SYN, 100, 0),
            (false, SYN | ACK, 500, 0),
            (true, ACK, 101, 0),
            (true, PA, 101, 20),
            (false, ACK, 501, 0),
            (false, PA, 501, 300),
            (true, FIN | ACK, 121, 0),
            (false, FIN | ACK, 801, 0),
            (true, ACK, 122, 0),
        ]);
        assert_eq!((h.as_str(), s), ("ShADadFf", "SF"));
    }

    #[test]
    fn states_of_zeek() {
        // A SYN and nothing: S0; the same SYN again adds nothing, another ISN adds an S.
        assert_eq!(
            run(&[(true, SYN, 1, 0), (true, SYN, 1, 0)]),
            ("S".into(), "S0")
        );
        assert_eq!(
            run(&[(true, SYN, 1, 0), (true, SYN, 9, 0)]),
            ("SS".into(), "S0")
        );
        // Rejected.
        assert_eq!(
            run(&[(true, SYN, 1, 0), (false, RST | ACK, 0, 0)]),
            ("Sr".into(), "REJ")
        );
        // Established, not closed.
        assert_eq!(
            run(&[
                (true, SYN, 1, 0),
                (false, SYN | ACK, 7, 0),
                (true, ACK, 2, 0)
            ]),
            ("ShA".into(), "S1")
        );
        // The originator resets an established connection.
        assert_eq!(
            run(&[
                (true, SYN, 1, 0),
                (false, SYN | ACK, 7, 0),
                (true, ACK, 2, 0),
                (true, RST, 2, 0)
            ]),
            ("ShAR".into(), "RSTO")
        );
        // The originator's SYN then its RST, no answer.
        assert_eq!(
            run(&[(true, SYN, 1, 0), (true, RST, 2, 0)]),
            ("SR".into(), "RSTOS0")
        );
        // Only the originator closed.
        assert_eq!(
            run(&[
                (true, SYN, 1, 0),
                (false, SYN | ACK, 7, 0),
                (true, FIN | ACK, 2, 0)
            ]),
            ("ShF".into(), "S2")
        );
        // Midstream data both ways: OTH; the first packet from the responder flips.
        assert_eq!(
            run(&[(false, PA, 7, 10), (true, PA, 1, 5)]),
            ("^dD".into(), "OTH")
        );
        // A SYN and a FIN with no answer: SH.
        assert_eq!(
            run(&[(true, SYN, 1, 0), (true, FIN, 2, 0)]),
            ("SF".into(), "SH")
        );
        // SYN/ACK seen, the SYN missed, then an ACK: both established.
        assert_eq!(
            run(&[(false, SYN | ACK, 7, 0), (true, ACK, 2, 0)]),
            ("^hA".into(), "S1")
        );
        // FIN and RST at once, SYN and FIN at once.
        assert_eq!(run(&[(true, FIN | RST, 1, 0)]).0, "I");
        assert_eq!(run(&[(true, SYN | FIN, 1, 0)]).0, "Q");
    }

    #[test]
    fn fin_repeats_only_at_another_number() {
        let (h, _) = run(&[
            (true, PA, 1, 10),
            (true, FIN | ACK, 11, 0),
            (true, FIN | ACK, 11, 0),
            (true, FIN | ACK, 1, 10),
            (true, FIN | ACK, 12, 0),
        ]);
        // The third FIN carries the same number after its payload: no repeat.
        assert_eq!(h, "DFF");
    }

    #[test]
    fn retransmissions_and_gaps_scale() {
        let mut h = History::default();
        h.packet(true, SYN, 1, 0);
        for _ in 0..100 {
            h.retransmission(true);
        }
        h.gap(false);
        h.gap(false);
        assert_eq!(h.as_str(), "STTTg");
        for _ in 0..8 {
            h.gap(false);
        }
        assert_eq!(h.as_str(), "STTTgg");
    }

    #[test]
    fn logs_parse() {
        assert_eq!(Logs::parse("conn,http,tls,ssh,weird"), Ok(Logs::ALL));
        let l = Logs::parse("conn, http").unwrap();
        assert!(l.conn && l.http && !l.tls && !l.ssh && !l.weird);
        assert!(l.reads_streams());
        assert!(l.parses(Service::Http) && !l.parses(Service::Ssl));
        let only_conn = Logs::parse("conn").unwrap();
        assert!(!only_conn.reads_streams());
        let weird = Logs::parse("weird").unwrap();
        assert!(weird.parses(Service::Ssl) && weird.parses(Service::Ssh));
        assert_eq!(
            Logs::parse("conn,dns"),
            Err("no log named \"dns\" (the logs are conn, http, tls, ssh, weird)".into())
        );
        assert!(Logs::parse("")
            .unwrap_err()
            .starts_with("an empty log name"));
        assert!(Logs::parse("conn,,http").is_err());
    }

    #[test]
    fn midstream_detection_finds_a_later_message() {
        let body = b"ody of the previous response\r\nGET /x HTTP/1.1\r\nHost: a\r\n";
        assert_eq!(judge(Dir::Orig, body, false, false), Detect::Unknown);
        assert_eq!(
            judge(Dir::Orig, body, true, false),
            Detect::Is(Service::Http)
        );
        let resp = b"tail of a body\nHTTP/1.1 200 OK\r\n";
        assert_eq!(
            judge(Dir::Resp, resp, true, false),
            Detect::Is(Service::Http)
        );
        // Undecided until 4 KiB, or the end.
        let junk = vec![b'x'; 100];
        assert_eq!(judge(Dir::Orig, &junk, true, false), Detect::NeedMore);
        assert_eq!(judge(Dir::Orig, &junk, true, true), Detect::Unknown);
        let junk = vec![b'x'; MIDSTREAM_SCAN];
        assert_eq!(judge(Dir::Orig, &junk, true, false), Detect::Unknown);
        // A line start past 4 KiB does not count.
        let mut late = vec![b'x'; MIDSTREAM_SCAN];
        late.extend_from_slice(b"\nGET / HTTP/1.1\r\n");
        assert_eq!(judge(Dir::Orig, &late, true, false), Detect::Unknown);
        // Seen from the start: the first bytes decide, within 16 bytes.
        assert_eq!(judge(Dir::Orig, b"GE", false, false), Detect::NeedMore);
        assert_eq!(judge(Dir::Orig, b"GE", false, true), Detect::Unknown);
        assert_eq!(
            judge(Dir::Resp, b"SSH-2.0-x\r\n", false, false),
            Detect::Is(Service::Ssh)
        );
    }

    /// An SSL 2.0 CLIENT-HELLO offering TLS 1.0 (2-byte header), as old clients send.
    const V2_HELLO: &[u8] = &[
        0x80, 0x1f, 0x01, 0x03, 0x01, 0x00, 0x06, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x2f, 0x01,
        0x00, 0x80, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
    ];

    #[test]
    fn sslv2_client_hellos_are_ssl() {
        assert_eq!(sslv2_client_hello_at(V2_HELLO), Some(true));
        assert_eq!(
            judge(Dir::Orig, V2_HELLO, false, false),
            Detect::Is(Service::Ssl)
        );
        // SSL 2.0 itself, and TLS 1.3 offered that way.
        for version in [[0x00, 0x02], [0x03, 0x00], [0x03, 0x04]] {
            let mut h = V2_HELLO.to_vec();
            h[3..5].copy_from_slice(&version);
            assert_eq!(sslv2_client_hello_at(&h), Some(true), "{version:?}");
        }
        // Undecided on fewer than 5 bytes, unless nothing more comes.
        for n in 1..5 {
            assert_eq!(sslv2_client_hello_at(&V2_HELLO[..n]), None);
            assert_eq!(
                judge(Dir::Orig, &V2_HELLO[..n], false, false),
                Detect::NeedMore
            );
            assert_eq!(
                judge(Dir::Orig, &V2_HELLO[..n], false, true),
                Detect::Unknown
            );
        }
        // Not one: another message type, version or length, a 3-byte header; only the
        // client's direction opens with it.
        for (at, b) in [(2, 4u8), (3, 2), (4, 5), (1, 8), (0, 0x40)] {
            let mut h = V2_HELLO.to_vec();
            h[at] = b;
            assert_eq!(sslv2_client_hello_at(&h), Some(false), "byte {at} = {b}");
            assert_eq!(judge(Dir::Orig, &h, false, true), Detect::Unknown);
        }
        let mut long = V2_HELLO.to_vec();
        long[0] = 0xc0;
        long[1] = 0x01;
        assert_eq!(sslv2_client_hello_at(&long), Some(false));
        assert_eq!(judge(Dir::Resp, V2_HELLO, false, true), Detect::Unknown);
    }

    #[test]
    fn hello_records_are_found_anywhere_and_across_pieces() {
        let ch = [0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00];
        let sh = [0x16, 0x03, 0x03, 0x00, 0x4a, 0x02, 0x00];
        assert_eq!(hello_record_at(&ch, CLIENT_HELLO), Some(true));
        assert_eq!(hello_record_at(&ch, SERVER_HELLO), Some(false));
        assert_eq!(hello_record_at(&sh, SERVER_HELLO), Some(true));
        assert_eq!(hello_record_at(&ch[..5], CLIENT_HELLO), None);
        // Not a record a hello travels in: version 2.x or 3.5, an empty or too long record.
        for (at, b) in [(1, 2u8), (2, 5), (3, 0x48)] {
            let mut r = ch;
            r[at] = b;
            assert_eq!(hello_record_at(&r, CLIENT_HELLO), Some(false), "{at}");
        }
        assert_eq!(
            hello_record_at(&[0x16, 3, 1, 0, 0, 1], CLIENT_HELLO),
            Some(false)
        );
        let mut text = b"AUTH TLS\r\n\x16\x03\x09".to_vec();
        assert_eq!(find_hello(&text, CLIENT_HELLO), HelloAt::Nowhere);
        text.extend_from_slice(&ch);
        assert_eq!(find_hello(&text, CLIENT_HELLO), HelloAt::Found(13));
        assert_eq!(find_hello(&text, SERVER_HELLO), HelloAt::Nowhere);
        // A header cut at the end of what was read is kept for the next piece.
        assert_eq!(
            find_hello(b"STARTTLS\r\n\x16\x03\x01", CLIENT_HELLO),
            HelloAt::Partial(10)
        );
        assert_eq!(find_hello(b"x\x16", SERVER_HELLO), HelloAt::Partial(1));
    }

    #[test]
    fn first_bytes_tell_the_roles() {
        assert_eq!(
            first_role(b"GET / HTTP/1.1\r\n", false),
            Role::Client(Service::Http)
        );
        assert_eq!(
            first_role(b"HTTP/1.1 200 OK\r\n", false),
            Role::Server(Service::Http)
        );
        assert_eq!(first_role(V2_HELLO, false), Role::Client(Service::Ssl));
        assert_eq!(
            first_role(&[0x16, 3, 1, 0, 0x40, 1], false),
            Role::Client(Service::Ssl)
        );
        assert_eq!(
            first_role(&[0x16, 3, 3, 0, 0x40, 2], false),
            Role::Server(Service::Ssl)
        );
        // A TLS record of another message, an SSH banner: both ends send them.
        assert_eq!(first_role(&[0x16, 3, 3, 0, 0x40, 11], false), Role::Neither);
        assert_eq!(first_role(b"SSH-2.0-x\r\n", false), Role::Neither);
        assert_eq!(first_role(b"220 ftp ready\r\n", false), Role::Neither);
        // Too few bytes, unless nothing more comes.
        assert_eq!(first_role(&[0x16, 3, 1], false), Role::NeedMore);
        assert_eq!(first_role(&[0x16, 3, 1], true), Role::Neither);
        assert_eq!(first_role(b"HTTP/1", false), Role::NeedMore);
        assert_eq!(first_role(b"HTTP/1", true), Role::Neither);
        assert_eq!(first_role(b"", false), Role::NeedMore);
        assert_eq!(first_role(b"", true), Role::Neither);
    }

    #[test]
    fn tunnel_ids_name_the_tunnel() {
        let mut t = TunnelData {
            kinds: 1,
            depth: 1,
            flags: tunnel_flags::OUTER,
            id_kind: 1,
            id: 42,
            ..TunnelData::default()
        };
        t.outer[0][..4].copy_from_slice(&[192, 0, 2, 1]);
        t.outer[1][..4].copy_from_slice(&[192, 0, 2, 2]);
        let a = tunnel_parent(&t);
        assert_eq!(a.len(), 18);
        assert!(a.starts_with('T'));
        assert_eq!(a, tunnel_parent(&t));
        let mut other = t;
        other.id = 43;
        assert_ne!(a, tunnel_parent(&other));
    }
}
