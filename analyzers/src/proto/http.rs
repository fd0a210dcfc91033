//! HTTP/1.x: one [`HttpRecord`] per request/response pair, Zeek's `http.log` fields.
//!
//! Message heads are parsed by the `httparse` crate; this module frames them (it buffers a
//! head until its blank line, at most [`HEAD_MAX`] bytes and [`MAX_HEADERS`] header lines) and
//! follows the bodies without keeping them: `Content-Length`, the chunked transfer-coding
//! (sizes, extensions, trailers; the decoded length is what the record counts, as Zeek's
//! `request_body_len`/`response_body_len` do), and responses delimited by the connection's
//! close. Responses to `HEAD`, `1xx`, `204` and `304` have no body; `1xx` other than `101` are
//! interim (`info_code`/`info_msg`) before the final response. Requests are queued and paired
//! with responses in order (pipelining), each numbered by `trans_depth`.
//!
//! A head `httparse` refuses is read again leniently, as Zeek and Wireshark read what real
//! clients and servers send: a request line is a method (any token led by a capital, at most
//! [`METHOD_MAX`] bytes), a target that is everything up to the last ` HTTP/` (spaces
//! included), and a version `1.0`, `1.1`, `1.` or `0.9`; a status line is `HTTP/`, any short
//! version, a 3-digit code and a reason; header lines that are no `name: value` are skipped
//! (for a request, counted in an `http_bad_header` weird). A request line without version is
//! an HTTP/0.9 request: its head is that line (with the header lines and blank line that
//! follow, if any; if the client says nothing more, the head ends when the server answers or
//! at the end), and its answer, unless it starts with `HTTP/`, is a bare body running to the
//! close. Control bytes before a request (a keep-alive byte) are passed over.
//!
//! A request head that even the lenient reading refuses is an `http_bad_request_line` weird
//! (weirds that do not end the parse are at most [`MAX_NOTES`] per connection); a stand-in
//! takes its place in the queue (its answer is logged alone) and the originator's direction
//! skips to the next request line or past the bad head's blank line, while the responder's
//! direction goes on.
//!
//! No length field is trusted: a `Content-Length` or chunk size that does not parse or is
//! beyond [`MAX_BODY`] ends the connection's parsing with a [`Weird`], and a body is only
//! counted, never held. What the parser holds at any time is bounded (heads, one chunk-size
//! line, a resync window, the bytes a client sends after `CONNECT` while the proxy has not
//! answered, at most [`MAX_PENDING`] queued requests).
//!
//! A hole in a body of known length, or in a body that runs to the close, only counts toward
//! the body. A hole anywhere the next bytes' meaning depends on the lost ones (a head, a
//! chunk-size line, a chunk that it overruns) loses sync: the direction then scans for the next
//! line that starts a request or a status line. A request lost that way leaves a stand-in in
//! the queue (so its response is logged alone instead of pairing with the next request), a
//! response lost that way leaves its request without one; the pairs touched, and every pair
//! whose request or response comes after the loss, say `midstream: true`. A connection picked
//! up midstream is parsed with [`HttpParser::midstream`], which starts both directions that way
//! (all its records say `midstream: true`); [`HttpParser::new`] expects each direction to start
//! with a message, and garbage there is a weird (see above for the originator's).
//!
//! The parser is done after a weird that ends it (a bad status line, a bad length, a head too
//! long, too many pending requests), after a `2xx` answer to `CONNECT` (a tunnel), after
//! `101 Switching Protocols` and after `end`: it has then emitted everything it had.
//!
//! Whatever way a direction's bytes are cut into `data` calls, the records are the same (given
//! the same times): every decision is taken at a point of the byte stream (the end of a line,
//! of a head, a size bound), never at the end of a call. A record's time is that of the call
//! that brought its message's first byte.

use super::{is_tchar, Detect, Dir, Parser, Record, Service, Weird, METHOD_MAX};
use serde::Serialize;
use std::collections::VecDeque;
use std::fmt::Write as _;

/// The longest message head accepted (request or status line and header lines), in bytes.
pub const HEAD_MAX: usize = 64 * 1024;

/// The most header lines a head may have.
pub const MAX_HEADERS: usize = 128;

/// The most requests waiting for their responses (pipelined or never answered) on a
/// connection.
pub const MAX_PENDING: usize = 1000;

/// The largest body length (Content-Length, chunk size) accepted: 2^50 bytes (1 PiB); a
/// larger value is taken for garbage.
pub const MAX_BODY: u64 = 1 << 50;

/// The longest chunk-size line (size and extensions).
const CHUNK_LINE_MAX: usize = 4096;

/// The longest request or status line a resync accepts as a message start.
const START_LINE_MAX: usize = 8192;

/// The most control bytes a resync passes over before a message start.
const JUNK_MAX: usize = 8;

/// The most bytes a client may send after `CONNECT` before the proxy's answer is seen.
const HOLD_MAX: usize = 64 * 1024;

/// The most bytes of text (methods, URIs, header values) held by queued transactions.
const PENDING_TEXT_MAX: usize = 1 << 20;

/// A head is first checked once it holds this many bytes (to tell garbage early), then at the
/// end of its first line, at its blank line and at [`HEAD_MAX`].
const EARLY_CHECK: usize = 16;

/// The most weirds a connection reports without ending its parse (bad request lines skipped,
/// malformed header lines).
pub const MAX_NOTES: usize = 16;

/// The weird source of this parser.
const SOURCE: &str = "HTTP";

/// One HTTP request/response pair, as Zeek's `http.log` has it (fields not known are omitted).
///
/// The caller adds `ts`, `uid` and `id.*` around it (flattening).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HttpRecord {
    /// Capture time of the request's first byte (of the response's when no request was seen),
    /// in nanoseconds since the epoch: the caller's `ts`.
    #[serde(skip)]
    pub ts_ns: u64,
    /// The pair's position on the connection, from 1.
    pub trans_depth: u64,
    /// The request method (`GET`, `POST`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The `Host` header's value, as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The request target, as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The `Referer` header's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    /// The HTTP version, `"1.0"` or `"1.1"`: the response's (the last one's, as Zeek logs it),
    /// else the request's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The `User-Agent` header's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Length of the request body (decoded from the chunked coding), as far as it was seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_body_len: Option<u64>,
    /// Length of the response body (decoded from the chunked coding), as far as it was seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body_len: Option<u64>,
    /// The final response's status code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// The final response's reason phrase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_msg: Option<String>,
    /// The last interim (1xx) response's status code before the final one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info_code: Option<u16>,
    /// The last interim response's reason phrase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info_msg: Option<String>,
    /// The connection was picked up midstream, or a direction lost sync (a hole) before or
    /// during this pair: the pairing or the lengths may be off.
    pub midstream: bool,
}

/// One request/response pair being put together.
#[derive(Debug, Default)]
struct Txn {
    depth: u64,
    ts_ns: u64,
    method: Option<String>,
    host: Option<String>,
    uri: Option<String>,
    referrer: Option<String>,
    version: Option<String>,
    user_agent: Option<String>,
    request_body_len: Option<u64>,
    response_body_len: Option<u64>,
    status_code: Option<u16>,
    status_msg: Option<String>,
    info_code: Option<u16>,
    info_msg: Option<String>,
    midstream: bool,
    /// The request was a `HEAD` (its response has no body).
    is_head: bool,
    /// The request was a `CONNECT`.
    is_connect: bool,
    /// The request was an HTTP/0.9 simple request (no version): its answer may be a bare
    /// body running to the close.
    simple: bool,
    /// Stands for a request lost in a hole (it has no request fields).
    lost_request: bool,
    /// The request (head and body) is over.
    req_done: bool,
    /// The final response's head was seen.
    final_seen: bool,
    /// The response is over (or lost).
    resp_done: bool,
    /// Bytes of text held (for the bound on queued transactions).
    text_bytes: usize,
}

impl Txn {
    /// The record, or `None` for a lost request nothing answered.
    fn into_record(self) -> Option<HttpRecord> {
        if self.lost_request && self.status_code.is_none() && self.info_code.is_none() {
            return None;
        }
        Some(HttpRecord {
            ts_ns: self.ts_ns,
            trans_depth: self.depth,
            method: self.method,
            host: self.host,
            uri: self.uri,
            referrer: self.referrer,
            version: self.version,
            user_agent: self.user_agent,
            request_body_len: self.request_body_len,
            response_body_len: self.response_body_len,
            status_code: self.status_code,
            status_msg: self.status_msg,
            info_code: self.info_code,
            info_msg: self.info_msg,
            midstream: self.midstream,
        })
    }
}

/// Where a direction is in its byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At (or in) a message head.
    Head,
    /// In a body of known length: `left` bytes to go.
    Body { left: u64 },
    /// At a chunk-size line.
    ChunkSize,
    /// In a chunk's data.
    ChunkData { left: u64 },
    /// After a chunk's data: its CRLF (`cr`: the CR was seen).
    ChunkEnd { cr: bool },
    /// In the trailer section after the last chunk.
    Trailers,
    /// In a response body that ends with the connection.
    UntilClose,
    /// Sync lost: looking for the next request or status line (`at_line_start`: the next byte
    /// may start one).
    Resync { at_line_start: bool },
    /// The client's bytes after a `CONNECT`, held until the proxy answers.
    Hold,
}

/// One direction's framing state.
#[derive(Debug)]
struct Side {
    state: State,
    /// The head being buffered.
    head: Vec<u8>,
    /// Capture time of the head's first byte.
    head_ts: u64,
    /// The head's first line ended (it was checked then).
    head_nl: bool,
    /// Where the head's first line ends (after its LF), once `head_nl`; the capture time of
    /// the byte after it; whether that line is a request line without version (an HTTP/0.9
    /// request, whose head may end there).
    nl_end: usize,
    after_nl_ts: u64,
    simple_line: bool,
    /// The head started at a line a resync took for a message start: a parse error sends the
    /// direction back to scanning instead of ending the parse.
    head_resynced: bool,
    /// The chunk-size line being buffered.
    line: Vec<u8>,
    /// Bytes of the trailer section so far, and of its current line (CR not counted).
    trailer_len: usize,
    trailer_line: usize,
    /// A resync candidate whose line is not complete yet, and the time of its first byte.
    carry: Vec<u8>,
    carry_ts: u64,
    /// Bytes to process before the next input (a head's leftovers, a resync's find).
    replay: Vec<u8>,
    replay_ts: u64,
    /// Bytes held after a `CONNECT` (`held_lost`: some could not be kept).
    held: Vec<u8>,
    held_ts: u64,
    held_lost: bool,
    /// The transaction whose body this direction is reading.
    cur: Option<u64>,
    /// The resync skips a bad head: an empty line ends it too.
    skip_bad: bool,
}

impl Side {
    fn new(state: State) -> Side {
        Side {
            state,
            head: Vec::new(),
            head_ts: 0,
            head_nl: false,
            nl_end: 0,
            after_nl_ts: 0,
            simple_line: false,
            head_resynced: false,
            line: Vec::new(),
            trailer_len: 0,
            trailer_line: 0,
            carry: Vec::new(),
            carry_ts: 0,
            replay: Vec::new(),
            replay_ts: 0,
            held: Vec::new(),
            held_ts: 0,
            held_lost: false,
            cur: None,
            skip_bad: false,
        }
    }

    /// Starts a fresh head.
    fn start_head(&mut self) {
        self.state = State::Head;
        self.head.clear();
        self.head_nl = false;
        self.head_resynced = false;
        self.skip_bad = false;
    }

    /// Bytes held.
    fn buffered(&self) -> usize {
        self.head.len() + self.line.len() + self.carry.len() + self.replay.len() + self.held.len()
    }

    /// Lets go of every buffer (the parse is over).
    fn release(&mut self) {
        *self = Side::new(self.state);
    }
}

/// What the head of a request says.
#[derive(Debug)]
struct RequestHead {
    method: String,
    /// The target (`None`: the line had none).
    uri: Option<String>,
    /// The version as logged (`"1.1"`); `None` for a line without one (HTTP/0.9).
    version: Option<String>,
    host: Option<String>,
    user_agent: Option<String>,
    referrer: Option<String>,
    length: Length,
    /// Header lines that were skipped as malformed.
    bad_lines: usize,
    /// The first of them, printable.
    bad_line: String,
}

/// What the head of a response says.
#[derive(Debug)]
struct ResponseHead {
    /// The version as logged (`"1.1"`).
    version: String,
    code: u16,
    reason: Option<String>,
    length: Length,
}

/// How a message's body is delimited, by its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Length {
    /// Neither `Content-Length` nor `Transfer-Encoding`.
    Unstated,
    /// `Content-Length`.
    Known(u64),
    /// The chunked transfer-coding is the last one.
    Chunked,
    /// A transfer-coding other than chunked last (a response then runs to the close).
    OtherCoding,
    /// A `Content-Length` that does not parse, is absurd, or disagrees with another one
    /// (the values, printable).
    Bad(String),
}

/// The outcome of checking a head prefix.
enum Check {
    Partial,
    Complete(usize),
    Error(httparse::Error),
}

/// Where a resync scan stopped.
enum Scan {
    /// A message starts here.
    Found(usize),
    /// A message may start here: its line is not complete yet.
    Carry(usize),
    /// An empty line ends here (looked for after a bad request head: the next bytes are a
    /// head again).
    Blank(usize),
    /// Nothing.
    Nothing,
}

/// The HTTP/1.x parser of one connection: feed it both directions (see [`Parser`]); it emits
/// one [`Record::Http`] per request/response pair, in `trans_depth` order, weirds the parse goes
/// on after (bad request lines, malformed header lines; at most [`MAX_NOTES`]), and at most
/// one [`Record::Weird`] that ends it (after which it is done).
///
/// When both directions have new bytes, feed the originator's first: a response pairs with
/// the oldest request seen without one.
#[derive(Debug)]
pub struct HttpParser {
    orig: Side,
    resp: Side,
    txns: VecDeque<Txn>,
    next_depth: u64,
    text_bytes: usize,
    /// Sync was lost at some point in the originator's direction (or the connection was
    /// picked up midstream): every request from then on is marked `midstream`.
    orig_desync: bool,
    /// Likewise in the responder's direction: every response from then on is marked.
    resp_desync: bool,
    stopped: bool,
    ended: bool,
    /// Weirds reported without ending the parse.
    notes: usize,
}

impl Default for HttpParser {
    fn default() -> Self {
        HttpParser::new()
    }
}

impl HttpParser {
    /// A parser for a connection seen from its start: each direction's first bytes must be a
    /// message (garbage there is a weird that ends the parse).
    pub fn new() -> HttpParser {
        HttpParser {
            orig: Side::new(State::Head),
            resp: Side::new(State::Head),
            txns: VecDeque::new(),
            next_depth: 1,
            text_bytes: 0,
            orig_desync: false,
            resp_desync: false,
            stopped: false,
            ended: false,
            notes: 0,
        }
    }

    /// A parser for a connection picked up midstream: each direction starts by looking for
    /// the first line that starts a request (a status line), and every record says
    /// `midstream: true`.
    pub fn midstream() -> HttpParser {
        let scan = State::Resync {
            at_line_start: true,
        };
        HttpParser {
            orig: Side::new(scan),
            resp: Side::new(scan),
            orig_desync: true,
            resp_desync: true,
            ..HttpParser::new()
        }
    }

    /// Bytes the parser holds (buffers and queued requests' text): bounded whatever the input,
    /// for the fuzz target and for accounting.
    pub fn buffered(&self) -> usize {
        self.orig.buffered()
            + self.resp.buffered()
            + self.text_bytes
            + self.txns.len() * std::mem::size_of::<Txn>()
    }

    fn side(&self, d: Dir) -> &Side {
        match d {
            Dir::Orig => &self.orig,
            Dir::Resp => &self.resp,
        }
    }

    fn side_mut(&mut self, d: Dir) -> &mut Side {
        match d {
            Dir::Orig => &mut self.orig,
            Dir::Resp => &mut self.resp,
        }
    }

    fn txn_mut(&mut self, depth: u64) -> Option<&mut Txn> {
        let front = self.txns.front()?.depth;
        let idx = usize::try_from(depth.checked_sub(front)?).ok()?;
        self.txns.get_mut(idx)
    }

    fn halted(&self) -> bool {
        self.stopped || self.ended
    }

    /// Feeds `data` (and whatever the direction must replay first) to direction `d`.
    fn push(&mut self, d: Dir, data: &[u8], ts: u64, out: &mut Vec<Record>) {
        if d == Dir::Resp && !data.is_empty() {
            self.settle_simple_request(out);
        }
        let mut input = data;
        let mut idle = 0u32;
        loop {
            if self.halted() {
                return;
            }
            if !self.side(d).replay.is_empty() {
                self.run_replay(d, out);
                continue;
            }
            if input.is_empty() {
                return;
            }
            let before = self.side(d).state;
            let n = self.step(d, input, ts, out).min(input.len());
            input = &input[n..];
            // Every step consumes bytes or changes state; a state machine that would do
            // neither is a bug, and must not become a hang.
            if n == 0 && self.side(d).replay.is_empty() && self.side(d).state == before {
                idle += 1;
                debug_assert!(idle < 4, "http parser made no progress in {before:?}");
                if idle >= 4 {
                    self.stop(d, "http_internal", "no progress".into(), out);
                    return;
                }
            } else {
                idle = 0;
            }
        }
    }

    /// Processes the direction's replay bytes (before any newer input).
    fn run_replay(&mut self, d: Dir, out: &mut Vec<Record>) {
        let side = self.side_mut(d);
        let buf = std::mem::take(&mut side.replay);
        let ts = side.replay_ts;
        let mut rest = &buf[..];
        let mut idle = 0u32;
        while !rest.is_empty() && !self.halted() {
            let before = self.side(d).state;
            let n = self.step(d, rest, ts, out).min(rest.len());
            rest = &rest[n..];
            let side = self.side_mut(d);
            if !side.replay.is_empty() {
                // A newer replay goes first, then what is left of this one.
                side.replay.extend_from_slice(rest);
                return;
            }
            if n == 0 && side.state == before {
                idle += 1;
                debug_assert!(idle < 4, "http parser made no progress in {before:?}");
                if idle >= 4 {
                    self.stop(d, "http_internal", "no progress".into(), out);
                    return;
                }
            } else {
                idle = 0;
            }
        }
    }

    /// One step of direction `d` on `input` (non-empty): returns the bytes consumed.
    fn step(&mut self, d: Dir, input: &[u8], ts: u64, out: &mut Vec<Record>) -> usize {
        match self.side(d).state {
            State::Head => self.step_head(d, input, ts, out),
            State::Body { left } => {
                let n = clamp(left, input.len());
                self.count_body(d, n as u64);
                let left = left - n as u64;
                self.side_mut(d).state = State::Body { left };
                if left == 0 {
                    self.finish_message(d, out);
                }
                n
            }
            State::ChunkSize => self.step_chunk_size(d, input, out),
            State::ChunkData { left } => {
                let n = clamp(left, input.len());
                self.count_body(d, n as u64);
                let left = left - n as u64;
                self.side_mut(d).state = if left == 0 {
                    State::ChunkEnd { cr: false }
                } else {
                    State::ChunkData { left }
                };
                n
            }
            State::ChunkEnd { cr } => match input[0] {
                b'\r' if !cr => {
                    self.side_mut(d).state = State::ChunkEnd { cr: true };
                    1
                }
                b'\n' => {
                    let side = self.side_mut(d);
                    side.state = State::ChunkSize;
                    side.line.clear();
                    1
                }
                b => {
                    let addl = format!("no CRLF after chunk data: 0x{b:02x}");
                    self.stop(d, "http_bad_chunk_size", addl, out);
                    0
                }
            },
            State::Trailers => self.step_trailers(d, input, out),
            State::UntilClose => {
                self.count_body(d, input.len() as u64);
                input.len()
            }
            State::Resync { at_line_start } => self.step_resync(d, input, ts, at_line_start),
            State::Hold => {
                let side = self.side_mut(d);
                if !side.held_lost {
                    if side.held.is_empty() {
                        side.held_ts = ts;
                    }
                    if side.held.len() + input.len() <= HOLD_MAX {
                        side.held.extend_from_slice(input);
                    } else {
                        side.held = Vec::new();
                        side.held_lost = true;
                    }
                }
                input.len()
            }
        }
    }

    /// Buffers head bytes; parses the head at the points of the stream where a decision can
    /// be taken (see [`EARLY_CHECK`]).
    fn step_head(&mut self, d: Dir, input: &[u8], ts: u64, out: &mut Vec<Record>) -> usize {
        let side = self.side_mut(d);
        let mut skipped = 0;
        if side.head.is_empty() {
            // Empty lines before a message are tolerated (RFC 9112 section 2.2), and so are
            // control bytes before a request (a keep-alive byte, padding).
            skipped = input
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n' || (d == Dir::Orig && is_junk(b)))
                .count();
            if skipped == input.len() {
                return skipped;
            }
            side.head_ts = ts;
            side.head_nl = false;
            side.simple_line = false;
        }
        let old_len = side.head.len();
        let take = (input.len() - skipped).min((HEAD_MAX + 1).saturating_sub(old_len));
        side.head.extend_from_slice(&input[skipped..skipped + take]);
        let new_len = side.head.len();

        // The prefixes of the head to check, in order: each is a point of the stream, so the
        // outcome does not depend on how the bytes were cut into calls.
        let mut points = [usize::MAX; 5];
        if old_len < EARLY_CHECK && new_len >= EARLY_CHECK {
            points[0] = EARLY_CHECK;
        }
        if !side.head_nl {
            if let Some(p) = side.head[old_len..].iter().position(|&b| b == b'\n') {
                side.head_nl = true;
                side.nl_end = old_len + p + 1;
                points[1] = side.nl_end;
                side.simple_line = d == Dir::Orig
                    && request_line(&side.head[..old_len + p]).is_some_and(|l| l.version.is_none());
            }
        }
        if side.head_nl && old_len <= side.nl_end && side.nl_end < new_len {
            side.after_nl_ts = ts;
        }
        if side.simple_line {
            // Whether header lines follow a request line without version is told by the
            // next line's first bytes: the head is checked at the byte that tells.
            if let Some(k) = simple_decision(&side.head[side.nl_end..]) {
                if side.nl_end + k > old_len {
                    points[4] = side.nl_end + k;
                }
            }
        }
        if let Some(end) = find_blank_line(&side.head, old_len.saturating_sub(2)) {
            points[2] = end;
        }
        if new_len > HEAD_MAX {
            points[3] = new_len;
        }
        points.sort_unstable();

        let mut last = 0;
        for point in points {
            if point == usize::MAX || point == last {
                continue;
            }
            last = point;
            let check = check_head(d, &self.side(d).head[..point]);
            match check {
                Check::Partial => continue,
                Check::Complete(n) => {
                    let side = self.side_mut(d);
                    let consumed = if n >= old_len {
                        skipped + (n - old_len)
                    } else {
                        // The head ended in bytes already buffered (a request line without
                        // version, when the next line turns out to be no header line): they
                        // come again, with the time of the first of them.
                        side.replay = side.head[n..old_len].to_vec();
                        side.replay_ts = if side.head_nl && n == side.nl_end {
                            side.after_nl_ts
                        } else {
                            side.head_ts
                        };
                        skipped
                    };
                    let head = std::mem::take(&mut side.head);
                    let head_ts = side.head_ts;
                    self.on_head(d, &head[..n], head_ts, out);
                    let halted = self.halted();
                    let side = self.side_mut(d);
                    if side.head.is_empty() && !halted {
                        // Keep the allocation for the next head.
                        side.head = head;
                        side.head.clear();
                    }
                    side.head_nl = false;
                    side.head_resynced = false;
                    return consumed;
                }
                Check::Error(e) => {
                    let consumed = skipped + point.saturating_sub(old_len);
                    let side = self.side_mut(d);
                    if side.head_resynced {
                        // The line a resync found was no message start after all: scan on
                        // from its second byte.
                        side.replay = side.head[1..point].to_vec();
                        side.replay_ts = side.head_ts;
                        side.head.clear();
                        side.head_nl = false;
                        side.head_resynced = false;
                        side.state = State::Resync {
                            at_line_start: false,
                        };
                    } else {
                        let bad = std::mem::take(&mut side.head);
                        let head_ts = side.head_ts;
                        side.head_nl = false;
                        let (name, addl) = head_error(d, &bad[..point], e);
                        match d {
                            // A head beyond the parser's bounds ends the parse.
                            Dir::Orig if matches!(e, httparse::Error::TooManyHeaders) => {
                                self.stop(d, name, addl, out);
                            }
                            Dir::Orig => self.bad_request(name, addl, &bad[..point], out),
                            Dir::Resp => {
                                if !self.bare_response(&bad[..point], head_ts) {
                                    self.stop(d, name, addl, out);
                                }
                            }
                        }
                    }
                    return consumed;
                }
            }
        }
        if self.side(d).head.len() > HEAD_MAX {
            let addl = format!("more than {HEAD_MAX} bytes without the end of the head");
            self.stop(d, "http_head_too_long", addl, out);
        }
        skipped + take
    }

    /// A complete head of direction `d`.
    fn on_head(&mut self, d: Dir, head: &[u8], ts: u64, out: &mut Vec<Record>) {
        match d {
            Dir::Orig => match parse_request(head) {
                Some(h) => self.on_request(h, ts, out),
                None => {
                    // Not possible after a complete check, but never end the parse for it.
                    self.bad_request("http_bad_request_line", excerpt(head), &[], out);
                }
            },
            Dir::Resp => match parse_response(head) {
                Some(h) => self.on_response(h, ts, out),
                None => self.stop(d, "http_bad_status_line", String::new(), out),
            },
        }
    }

    /// Queues a transaction, unless the queue is full (then the parse ends).
    fn queue(&mut self, d: Dir, mut txn: Txn, out: &mut Vec<Record>) -> Option<u64> {
        if self.txns.len() >= MAX_PENDING
            || self.text_bytes.saturating_add(txn.text_bytes) > PENDING_TEXT_MAX
        {
            let addl = format!("{} requests without their responses", self.txns.len());
            self.stop(d, "http_too_many_pending", addl, out);
            return None;
        }
        txn.depth = self.next_depth;
        self.next_depth = self.next_depth.saturating_add(1);
        self.text_bytes += txn.text_bytes;
        let depth = txn.depth;
        self.txns.push_back(txn);
        Some(depth)
    }

    fn on_request(&mut self, h: RequestHead, ts: u64, out: &mut Vec<Record>) {
        if h.bad_lines > 0 {
            let addl = format!(
                "{} malformed header line(s) skipped: {}",
                h.bad_lines, h.bad_line
            );
            self.note(Dir::Orig, "http_bad_header", addl, out);
        }
        let text_bytes = h.method.len()
            + h.uri.as_ref().map_or(0, String::len)
            + h.host.as_ref().map_or(0, String::len)
            + h.user_agent.as_ref().map_or(0, String::len)
            + h.referrer.as_ref().map_or(0, String::len);
        let txn = Txn {
            ts_ns: ts,
            is_head: h.method == "HEAD",
            is_connect: h.method == "CONNECT",
            simple: h.version.is_none(),
            method: Some(h.method),
            uri: h.uri,
            host: h.host,
            user_agent: h.user_agent,
            referrer: h.referrer,
            version: Some(h.version.unwrap_or_else(|| "0.9".to_string())),
            request_body_len: Some(0),
            midstream: self.orig_desync || self.resp_desync,
            text_bytes,
            ..Txn::default()
        };
        let Some(depth) = self.queue(Dir::Orig, txn, out) else {
            return;
        };
        self.orig.cur = Some(depth);
        match h.length {
            Length::Chunked => self.start_chunked(Dir::Orig),
            Length::Known(n) if n > 0 => self.orig.state = State::Body { left: n },
            Length::Bad(values) => {
                self.stop(Dir::Orig, "http_bad_content_length", values, out);
            }
            // Requests have no close-delimited bodies; another coding without chunked is
            // taken as no body (the bytes that follow must then be a request).
            Length::Known(_) | Length::Unstated | Length::OtherCoding => {
                self.finish_message(Dir::Orig, out)
            }
        }
    }

    fn on_response(&mut self, h: ResponseHead, ts: u64, out: &mut Vec<Record>) {
        let waiting = self
            .txns
            .iter()
            .find(|t| !t.final_seen && !t.resp_done)
            .map(|t| t.depth);
        let depth = match waiting {
            Some(depth) => depth,
            None => {
                // A response to no request seen: a record of its own.
                let txn = Txn {
                    ts_ns: ts,
                    req_done: true,
                    midstream: self.orig_desync || self.resp_desync,
                    ..Txn::default()
                };
                match self.queue(Dir::Resp, txn, out) {
                    Some(depth) => depth,
                    None => return,
                }
            }
        };
        let desync = self.resp_desync;
        let Some(txn) = self.txn_mut(depth) else {
            return;
        };
        txn.midstream |= desync;
        if (100..200).contains(&h.code) && h.code != 101 {
            // Interim: the final response follows.
            txn.info_code = Some(h.code);
            txn.info_msg = h.reason;
            txn.version = Some(h.version);
            self.resp.start_head();
            return;
        }
        txn.final_seen = true;
        txn.status_code = Some(h.code);
        txn.status_msg = h.reason;
        txn.response_body_len = Some(0);
        txn.version = Some(h.version);
        let is_head = txn.is_head;
        let is_connect = txn.is_connect;
        self.resp.cur = Some(depth);
        if h.code == 101 {
            self.finish_message(Dir::Resp, out);
            self.stop_quietly(out);
            return;
        }
        if is_connect && (200..300).contains(&h.code) {
            self.finish_message(Dir::Resp, out);
            self.stop_quietly(out);
            return;
        }
        let no_body = is_head || h.code == 204 || h.code == 304;
        match h.length {
            _ if no_body => self.finish_message(Dir::Resp, out),
            Length::Chunked => self.start_chunked(Dir::Resp),
            Length::Known(0) => self.finish_message(Dir::Resp, out),
            Length::Known(n) => self.resp.state = State::Body { left: n },
            Length::Bad(values) => {
                self.stop(Dir::Resp, "http_bad_content_length", values, out);
                return;
            }
            Length::Unstated | Length::OtherCoding => self.resp.state = State::UntilClose,
        }
        if is_connect {
            // The proxy refused the tunnel: what the client sent meanwhile is HTTP again.
            self.release_hold(ts, out);
        }
    }

    /// Ends a `CONNECT`'s hold on the client's bytes: they are parsed as requests.
    fn release_hold(&mut self, ts: u64, out: &mut Vec<Record>) {
        if self.orig.state != State::Hold {
            return;
        }
        let held = std::mem::take(&mut self.orig.held);
        let held_ts = self.orig.held_ts;
        if std::mem::take(&mut self.orig.held_lost) {
            self.orig_desync = true;
            self.orig.state = State::Resync {
                at_line_start: false,
            };
            return;
        }
        self.orig.start_head();
        if !held.is_empty() {
            self.orig.replay = held;
            self.orig.replay_ts = held_ts;
            self.push(Dir::Orig, &[], ts, out);
        }
    }

    fn start_chunked(&mut self, d: Dir) {
        let side = self.side_mut(d);
        side.state = State::ChunkSize;
        side.line.clear();
    }

    /// Counts body bytes of direction `d`'s current message.
    fn count_body(&mut self, d: Dir, n: u64) {
        let Some(depth) = self.side(d).cur else {
            return;
        };
        if let Some(txn) = self.txn_mut(depth) {
            let len = match d {
                Dir::Orig => &mut txn.request_body_len,
                Dir::Resp => &mut txn.response_body_len,
            };
            *len = Some(len.unwrap_or(0).saturating_add(n));
        }
    }

    /// Direction `d`'s current message is over: the next one starts.
    fn finish_message(&mut self, d: Dir, out: &mut Vec<Record>) {
        let cur = self.side_mut(d).cur.take();
        let mut hold = false;
        if let Some(txn) = cur.and_then(|depth| self.txn_mut(depth)) {
            match d {
                Dir::Orig => {
                    txn.req_done = true;
                    hold = txn.is_connect && !txn.final_seen && !txn.resp_done;
                }
                Dir::Resp => txn.resp_done = true,
            }
        }
        let side = self.side_mut(d);
        side.start_head();
        side.line.clear();
        if hold {
            side.state = State::Hold;
            side.held.clear();
            side.held_lost = false;
        }
        self.emit_ready(out);
    }

    fn step_chunk_size(&mut self, d: Dir, input: &[u8], out: &mut Vec<Record>) -> usize {
        let side = self.side_mut(d);
        let room = CHUNK_LINE_MAX.saturating_sub(side.line.len());
        let (n, complete) = match input.iter().position(|&b| b == b'\n') {
            Some(p) if p < room => (p + 1, true),
            _ => (input.len().min(room), false),
        };
        side.line.extend_from_slice(&input[..n]);
        if !complete {
            if side.line.len() >= CHUNK_LINE_MAX {
                let addl = format!("chunk-size line longer than {CHUNK_LINE_MAX} bytes");
                self.stop(d, "http_bad_chunk_size", addl, out);
            }
            return n;
        }
        let size = chunk_size(&side.line);
        let excerpt = excerpt(&side.line);
        side.line.clear();
        match size {
            Some(0) => {
                side.state = State::Trailers;
                side.trailer_len = 0;
                side.trailer_line = 0;
            }
            Some(size) => side.state = State::ChunkData { left: size },
            None => self.stop(d, "http_bad_chunk_size", excerpt, out),
        }
        n
    }

    fn step_trailers(&mut self, d: Dir, input: &[u8], out: &mut Vec<Record>) -> usize {
        let side = self.side_mut(d);
        for (i, &b) in input.iter().enumerate() {
            side.trailer_len += 1;
            match b {
                b'\n' if side.trailer_line == 0 => {
                    self.finish_message(d, out);
                    return i + 1;
                }
                b'\n' => side.trailer_line = 0,
                b'\r' => {}
                _ => side.trailer_line += 1,
            }
            if side.trailer_len > HEAD_MAX {
                let addl = format!("trailers longer than {HEAD_MAX} bytes");
                self.stop(d, "http_head_too_long", addl, out);
                return i + 1;
            }
        }
        input.len()
    }

    fn step_resync(&mut self, d: Dir, input: &[u8], ts: u64, at_line_start: bool) -> usize {
        let side = self.side_mut(d);
        if !side.carry.is_empty() {
            let take = input.len().min(START_LINE_MAX);
            let mut joined = std::mem::take(&mut side.carry);
            let clen = joined.len();
            let cts = side.carry_ts;
            joined.extend_from_slice(&input[..take]);
            match scan(d, &joined, true, side.skip_bad) {
                Scan::Blank(e) => {
                    side.start_head();
                    if e < clen {
                        joined.truncate(clen);
                        joined.drain(..e);
                        side.replay = joined;
                        side.replay_ts = cts;
                        return 0;
                    }
                    return e - clen;
                }
                Scan::Found(p) if p < clen => {
                    // The message starts in the carried bytes: they come again, then this
                    // input (with its own time).
                    side.start_head();
                    side.head_resynced = true;
                    joined.truncate(clen);
                    joined.drain(..p);
                    side.replay = joined;
                    side.replay_ts = cts;
                    return 0;
                }
                Scan::Found(p) => {
                    side.start_head();
                    side.head_resynced = true;
                    return p - clen;
                }
                Scan::Carry(p) => {
                    side.carry_ts = if p < clen { cts } else { ts };
                    side.carry = joined[p..].to_vec();
                }
                Scan::Nothing => {
                    side.state = State::Resync {
                        at_line_start: joined.last() == Some(&b'\n'),
                    };
                }
            }
            return take;
        }
        match scan(d, input, at_line_start, side.skip_bad) {
            Scan::Blank(e) => {
                side.start_head();
                e
            }
            Scan::Found(p) => {
                side.start_head();
                side.head_resynced = true;
                p
            }
            Scan::Carry(p) => {
                side.carry = input[p..].to_vec();
                side.carry_ts = ts;
                input.len()
            }
            Scan::Nothing => {
                side.state = State::Resync {
                    at_line_start: input.last() == Some(&b'\n'),
                };
                input.len()
            }
        }
    }

    /// Emits the transactions at the front of the queue that are over.
    fn emit_ready(&mut self, out: &mut Vec<Record>) {
        while self.txns.front().is_some_and(|t| t.req_done && t.resp_done) {
            if let Some(txn) = self.txns.pop_front() {
                self.text_bytes = self.text_bytes.saturating_sub(txn.text_bytes);
                if let Some(rec) = txn.into_record() {
                    out.push(Record::Http(rec));
                }
            }
        }
    }

    /// Emits every queued transaction, over or not.
    fn flush(&mut self, out: &mut Vec<Record>) {
        self.text_bytes = 0;
        for txn in std::mem::take(&mut self.txns) {
            if let Some(rec) = txn.into_record() {
                out.push(Record::Http(rec));
            }
        }
    }

    /// Reports something malformed that the parse goes on after (at most [`MAX_NOTES`] per
    /// connection, so garbage cannot flood the log).
    fn note(&mut self, d: Dir, name: &str, addl: String, out: &mut Vec<Record>) {
        if self.notes >= MAX_NOTES {
            return;
        }
        self.notes += 1;
        out.push(Record::Weird(Weird {
            name: name.to_string(),
            addl,
            peer: d,
            source: SOURCE,
        }));
    }

    /// A request head that neither `httparse` nor the lenient reading accepts (its first
    /// `bad.len()` bytes were taken): a weird, a stand-in for the request (its response, if
    /// any, is logged alone), and the direction looks for the next request line. The
    /// responder's direction goes on.
    fn bad_request(&mut self, name: &str, addl: String, bad: &[u8], out: &mut Vec<Record>) {
        self.note(Dir::Orig, name, addl, out);
        let ts = self.orig.head_ts;
        self.lose_head(Dir::Orig, out);
        if self.halted() || bad.len() < 2 {
            return;
        }
        // The scan starts again at the bad bytes' next line, and ends at the next request
        // line or after the bad head's blank line.
        let side = &mut self.orig;
        side.skip_bad = true;
        side.replay = bad[1..].to_vec();
        side.replay_ts = ts;
        side.state = State::Resync {
            at_line_start: false,
        };
    }

    /// A response direction's head that is no status line, while the request it answers is
    /// an HTTP/0.9 one: the answer is a bare body running to the close (`taken`: its first
    /// bytes; empty lines before them are not counted, as before any head). `false` if that
    /// is not the case.
    fn bare_response(&mut self, taken: &[u8], ts: u64) -> bool {
        if prefix_of_status(taken) {
            return false;
        }
        let Some(txn) = self.txns.iter_mut().find(|t| !t.final_seen && !t.resp_done) else {
            return false;
        };
        if !txn.simple {
            return false;
        }
        txn.final_seen = true;
        txn.response_body_len = Some(0);
        if txn.ts_ns == 0 {
            txn.ts_ns = ts;
        }
        let depth = txn.depth;
        self.resp.cur = Some(depth);
        self.resp.start_head();
        self.resp.state = State::UntilClose;
        self.count_body(Dir::Resp, taken.len() as u64);
        true
    }

    /// An HTTP/0.9 request line whose client waits for the answer (nothing told yet whether
    /// header lines follow): when the responder speaks (or the connection ends), the request
    /// is that line alone.
    fn settle_simple_request(&mut self, out: &mut Vec<Record>) {
        if self.halted() || self.orig.state != State::Head || self.orig.head_resynced {
            return;
        }
        let Some(n) = pending_simple(&self.orig.head) else {
            return;
        };
        let head = std::mem::take(&mut self.orig.head);
        let ts = self.orig.head_ts;
        self.orig.head_nl = false;
        if n < head.len() {
            // `n` is the first line's end: the rest starts with the byte after it.
            let mut rest = head[n..].to_vec();
            rest.append(&mut self.orig.replay);
            self.orig.replay = rest;
            self.orig.replay_ts = self.orig.after_nl_ts;
        }
        self.on_head(Dir::Orig, &head[..n], ts, out);
    }

    /// Ends the parse on something malformed: what is queued, then the weird.
    fn stop(&mut self, d: Dir, name: &str, addl: String, out: &mut Vec<Record>) {
        if self.halted() {
            return;
        }
        self.stop_quietly(out);
        out.push(Record::Weird(Weird {
            name: name.to_string(),
            addl,
            peer: d,
            source: SOURCE,
        }));
    }

    /// Ends the parse (a tunnel, an upgrade, a weird): what is queued is emitted.
    fn stop_quietly(&mut self, out: &mut Vec<Record>) {
        if self.halted() {
            return;
        }
        self.flush(out);
        self.stopped = true;
        self.orig.release();
        self.resp.release();
    }

    fn set_desync(&mut self, d: Dir) {
        match d {
            Dir::Orig => self.orig_desync = true,
            Dir::Resp => self.resp_desync = true,
        }
    }

    /// Sync is lost in direction `d` at a message head: the message is gone.
    fn lose_head(&mut self, d: Dir, out: &mut Vec<Record>) {
        self.set_desync(d);
        match d {
            Dir::Orig => {
                // A request was (at least partly) lost: a stand-in keeps its response from
                // pairing with the next request.
                let txn = Txn {
                    lost_request: true,
                    req_done: true,
                    midstream: true,
                    ..Txn::default()
                };
                if self.queue(d, txn, out).is_none() {
                    return;
                }
            }
            Dir::Resp => {
                if let Some(txn) = self.txns.iter_mut().find(|t| !t.final_seen && !t.resp_done) {
                    txn.resp_done = true;
                    txn.midstream = true;
                }
            }
        }
        let side = self.side_mut(d);
        side.start_head();
        side.state = State::Resync {
            at_line_start: true,
        };
        self.emit_ready(out);
    }

    /// Sync is lost in direction `d` inside a body whose framing depended on lost bytes: the
    /// message ends with what was counted.
    fn lose_body(&mut self, d: Dir, out: &mut Vec<Record>) {
        self.set_desync(d);
        if let Some(txn) = self.side(d).cur.and_then(|depth| self.txn_mut(depth)) {
            txn.midstream = true;
        }
        self.finish_message(d, out);
        let side = self.side_mut(d);
        side.state = State::Resync {
            at_line_start: true,
        };
    }
}

impl Parser for HttpParser {
    fn data(&mut self, dir: Dir, bytes: &[u8], ts_ns: u64, out: &mut Vec<Record>) {
        self.push(dir, bytes, ts_ns, out);
    }

    fn gap(&mut self, dir: Dir, len: u64, _ts_ns: u64, out: &mut Vec<Record>) {
        if self.halted() || len == 0 {
            return;
        }
        let mut left = len;
        loop {
            match self.side(dir).state {
                State::Body { left: body } => {
                    let n = body.min(left);
                    self.count_body(dir, n);
                    left -= n;
                    self.side_mut(dir).state = State::Body { left: body - n };
                    if body == n {
                        self.finish_message(dir, out);
                    }
                    if left == 0 {
                        return;
                    }
                    // The rest of the hole is past the body: the next head is hit.
                }
                State::ChunkData { left: chunk } => {
                    if left <= chunk {
                        self.count_body(dir, left);
                        self.side_mut(dir).state = if left == chunk {
                            State::ChunkEnd { cr: false }
                        } else {
                            State::ChunkData { left: chunk - left }
                        };
                    } else {
                        self.count_body(dir, chunk);
                        self.lose_body(dir, out);
                    }
                    return;
                }
                State::UntilClose => {
                    self.count_body(dir, left);
                    return;
                }
                State::Head => {
                    self.lose_head(dir, out);
                    return;
                }
                State::ChunkSize | State::ChunkEnd { .. } | State::Trailers => {
                    self.lose_body(dir, out);
                    return;
                }
                State::Resync { .. } => {
                    let side = self.side_mut(dir);
                    side.carry.clear();
                    // The bad head's end may be in the hole: only a message start resyncs.
                    side.skip_bad = false;
                    side.state = State::Resync {
                        at_line_start: true,
                    };
                    return;
                }
                State::Hold => {
                    let side = self.side_mut(dir);
                    side.held = Vec::new();
                    side.held_lost = true;
                    return;
                }
            }
            if self.halted() {
                return;
            }
        }
    }

    fn end(&mut self, ts_ns: u64, out: &mut Vec<Record>) {
        if self.halted() {
            self.ended = true;
            return;
        }
        // A simple request the responder never answered, and what followed it.
        self.settle_simple_request(out);
        self.push(Dir::Orig, &[], ts_ns, out);
        if self.halted() {
            self.ended = true;
            return;
        }
        let mut weird = None;
        for d in [Dir::Orig, Dir::Resp] {
            match self.side(d).state {
                State::Head => {
                    if d == Dir::Resp && !self.resp.head.is_empty() && !self.resp.head_resynced {
                        let head = std::mem::take(&mut self.resp.head);
                        let head_ts = self.resp.head_ts;
                        if self.bare_response(&head, head_ts) {
                            let cur = self.resp.cur.take();
                            if let Some(txn) = cur.and_then(|depth| self.txn_mut(depth)) {
                                txn.resp_done = true;
                            }
                            continue;
                        }
                        self.resp.head = head;
                    }
                    let side = self.side(d);
                    if !side.head.is_empty() && !side.head_resynced && weird.is_none() {
                        // A head cut by the end: malformed bytes in it are still a weird.
                        if let Check::Error(e) = check_head(d, &side.head) {
                            weird = Some((d, head_error(d, &side.head, e)));
                        }
                    }
                }
                State::Body { .. }
                | State::ChunkSize
                | State::ChunkData { .. }
                | State::ChunkEnd { .. }
                | State::Trailers
                | State::UntilClose => {
                    // The body ends here: what was counted stands.
                    let cur = self.side_mut(d).cur.take();
                    if let Some(txn) = cur.and_then(|depth| self.txn_mut(depth)) {
                        match d {
                            Dir::Orig => txn.req_done = true,
                            Dir::Resp => txn.resp_done = true,
                        }
                    }
                }
                State::Resync { .. } | State::Hold => {}
            }
        }
        self.emit_ready(out);
        match weird {
            Some((d, (name, addl))) => self.stop(d, name, addl, out),
            None => self.stop_quietly(out),
        }
        self.ended = true;
    }

    fn done(&self) -> bool {
        self.halted()
    }
}

/// How many of `avail` bytes a body with `left` bytes to go takes.
fn clamp(left: u64, avail: usize) -> usize {
    usize::try_from(left).map_or(avail, |l| l.min(avail))
}

/// The end (index after it) of the first blank line in `head` at or after `from`: the end of
/// the header section.
fn find_blank_line(head: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < head.len() {
        if head[i] == b'\n' {
            match head.get(i + 1) {
                Some(b'\n') => return Some(i + 2),
                Some(b'\r') if head.get(i + 2) == Some(&b'\n') => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// httparse's settings: lenient where real servers and clients are sloppy (extra spaces in
/// the start line, folded and malformed header lines, which are skipped).
fn config() -> httparse::ParserConfig {
    let mut c = httparse::ParserConfig::default();
    c.allow_multiple_spaces_in_request_line_delimiters(true)
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .ignore_invalid_headers_in_requests(true)
        .ignore_invalid_headers_in_responses(true);
    c
}

/// Parses a head prefix of direction `d`: by `httparse`, and for a request head it refuses
/// (other than for too many header lines), by [`lenient_head`].
fn check_head(d: Dir, buf: &[u8]) -> Check {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let res = match d {
        Dir::Orig => config().parse_request(&mut httparse::Request::new(&mut headers), buf),
        Dir::Resp => config().parse_response(&mut httparse::Response::new(&mut headers), buf),
    };
    match res {
        Ok(httparse::Status::Complete(n)) => Check::Complete(n),
        Ok(httparse::Status::Partial) => Check::Partial,
        Err(httparse::Error::TooManyHeaders) => Check::Error(httparse::Error::TooManyHeaders),
        Err(e) => match lenient_head(d, buf) {
            Lenient::Complete(n) => Check::Complete(n),
            Lenient::Partial { .. } => Check::Partial,
            Lenient::Bad => Check::Error(e),
        },
    }
}

/// What the lenient reading says of a request head prefix.
#[derive(Debug, PartialEq, Eq)]
enum Lenient {
    /// It may still become a head. `simple_end`: its first line is a complete request line
    /// without version (HTTP/0.9) and whether header lines follow is not told yet; the head
    /// would end there (index after the line) if the client says no more.
    Partial { simple_end: Option<usize> },
    /// A head of that many bytes.
    Complete(usize),
    /// No request head.
    Bad,
}

/// A request line as Zeek and Wireshark take it, split.
#[derive(Debug)]
struct RequestLine<'a> {
    method: &'a [u8],
    /// Everything between the method's space and the last ` HTTP/` (the line's rest, a single
    /// word, when it has no version), spaces around it dropped.
    uri: &'a [u8],
    /// `"1.1"`, `"1.0"`, `"1."`, `"0.9"`; `None`: no version (an HTTP/0.9 request).
    version: Option<&'a str>,
}

/// A control byte (tab aside).
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// A control byte that may come before a message without being part of it (a keep-alive
/// byte, padding): not CR or LF.
fn is_junk(b: u8) -> bool {
    is_ctl(b) && b != b'\r' && b != b'\n'
}

/// Splits a request line (without its LF): a method (a token led by a capital, at most
/// [`METHOD_MAX`] bytes), then optionally spaces, a target, and ` HTTP/` with a version of
/// major 0 or 1. `None` for anything else (control bytes included).
fn request_line(line: &[u8]) -> Option<RequestLine<'_>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let m = line.iter().take_while(|&&b| is_tchar(b)).count();
    if m == 0 || m > METHOD_MAX || !line[0].is_ascii_uppercase() {
        return None;
    }
    let rest = &line[m..];
    if rest.first().is_some_and(|&b| b != b' ' && b != b'\t') || rest.iter().any(|&b| is_ctl(b)) {
        return None;
    }
    let rest = rest.trim_ascii();
    let at = rest.windows(6).rposition(|w| w == b" HTTP/");
    let (uri, version) = match at {
        Some(v) => {
            let version = match &rest[v + 6..] {
                b"1.1" => "1.1",
                b"1.0" => "1.0",
                b"1." => "1.",
                b"0.9" => "0.9",
                _ => return None,
            };
            (rest[..v].trim_ascii_end(), Some(version))
        }
        // Without a version the line is an HTTP/0.9 request only when it is just a method
        // and a target: `OPTIONS rtsp://host/ RTSP/1.0` is another protocol.
        None if !rest.iter().any(|&b| b == b' ' || b == b'\t') => (rest, None),
        None => return None,
    };
    Some(RequestLine {
        method: &line[..m],
        uri,
        version,
    })
}

/// A status line as Wireshark takes it, split: `HTTP/`, a version (any short run of
/// non-control bytes), spaces, a 3-digit code, and the reason phrase.
#[derive(Debug)]
struct StatusLine<'a> {
    version: &'a [u8],
    code: u16,
    reason: &'a [u8],
}

/// Splits a status line (without its LF); `None` if it is none (see [`StatusLine`]).
fn status_line(line: &[u8]) -> Option<StatusLine<'_>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().any(|&b| is_ctl(b)) {
        return None;
    }
    let rest = line.strip_prefix(b"HTTP/")?;
    let sp = rest.iter().position(|&b| b == b' ' || b == b'\t')?;
    let version = &rest[..sp];
    if version.is_empty() || version.len() > 8 {
        return None;
    }
    let rest = rest[sp..].trim_ascii_start();
    let digits = rest.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit)
        || rest.get(3).is_some_and(|&b| b != b' ' && b != b'\t')
    {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |n, &b| n * 10 + u16::from(b - b'0'));
    Some(StatusLine {
        version,
        code,
        reason: rest[3..].trim_ascii(),
    })
}

/// Whether an incomplete first line (no LF yet) may still become a status line.
fn plausible_status_prefix(buf: &[u8]) -> bool {
    let body = buf.strip_suffix(b"\r").unwrap_or(buf);
    prefix_of_status(body) && !body.iter().any(|&b| is_ctl(b))
}

/// Whether an incomplete first line (no LF yet) may still become a request line.
fn plausible_request_prefix(buf: &[u8]) -> bool {
    let body = buf.strip_suffix(b"\r").unwrap_or(buf);
    let m = body.iter().take_while(|&&b| is_tchar(b)).count();
    body.first().is_some_and(u8::is_ascii_uppercase)
        && m <= METHOD_MAX
        && (m == body.len()
            || ((body[m] == b' ' || body[m] == b'\t') && !body[m..].iter().any(|&b| is_ctl(b))))
}

/// The lenient reading of a request head prefix `httparse` refused: the request line by
/// [`request_line`], then header lines up to the blank line (malformed ones are skipped when
/// the head is parsed). A line without version is an HTTP/0.9 request: its head is that line
/// alone, unless header lines or a blank line follow it (as clients that omit the version
/// still send them).
fn lenient_head(d: Dir, buf: &[u8]) -> Lenient {
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
        let plausible = match d {
            Dir::Orig => plausible_request_prefix(buf),
            Dir::Resp => plausible_status_prefix(buf),
        };
        return if buf.len() <= START_LINE_MAX && plausible {
            Lenient::Partial { simple_end: None }
        } else {
            Lenient::Bad
        };
    };
    if lf >= START_LINE_MAX {
        return Lenient::Bad;
    }
    let headers_end = || match find_blank_line(buf, lf) {
        Some(end) => Lenient::Complete(end),
        None => Lenient::Partial { simple_end: None },
    };
    if d == Dir::Resp {
        return match status_line(&buf[..lf]) {
            Some(_) => headers_end(),
            None => Lenient::Bad,
        };
    }
    let Some(line) = request_line(&buf[..lf]) else {
        return Lenient::Bad;
    };
    if line.version.is_some() {
        return headers_end();
    }
    let first_end = lf + 1;
    let next = &buf[first_end..];
    match next {
        [] | [b'\r'] => Lenient::Partial {
            simple_end: Some(first_end),
        },
        [b'\n', ..] => Lenient::Complete(first_end + 1),
        [b'\r', b'\n', ..] => Lenient::Complete(first_end + 2),
        _ => {
            let name = next
                .iter()
                .take(NAME_MAX + 1)
                .take_while(|&&b| is_tchar(b))
                .count();
            match next.get(name) {
                _ if name > NAME_MAX => Lenient::Complete(first_end),
                Some(b':') if name > 0 => headers_end(),
                None => Lenient::Partial {
                    simple_end: Some(first_end),
                },
                _ => Lenient::Complete(first_end),
            }
        }
    }
}

/// The longest header name after a request line without version that is still taken for
/// one (a longer token there is the next request).
const NAME_MAX: usize = 256;

/// After a request line without version, how many of the next bytes tell whether header
/// lines follow (as [`lenient_head`] decides); `None` while they do not tell yet.
fn simple_decision(next: &[u8]) -> Option<usize> {
    match next {
        [] | [b'\r'] => None,
        [b'\n', ..] => Some(1),
        [b'\r', _, ..] => Some(2),
        _ => {
            let run = next
                .iter()
                .take(NAME_MAX + 1)
                .take_while(|&&b| is_tchar(b))
                .count();
            if run > NAME_MAX {
                Some(NAME_MAX + 1)
            } else if run < next.len() {
                Some(run + 1)
            } else {
                None
            }
        }
    }
}

/// Where an HTTP/0.9 request head held in `head` ends, if it is one whose end is not told
/// yet (see [`Lenient::Partial`]).
fn pending_simple(head: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let res = config().parse_request(&mut httparse::Request::new(&mut headers), head);
    if res.is_ok() {
        return None;
    }
    match lenient_head(Dir::Orig, head) {
        Lenient::Partial { simple_end } => simple_end,
        _ => None,
    }
}

/// Whether `bytes` start as a status line does (or are a beginning of `HTTP/`).
fn prefix_of_status(bytes: &[u8]) -> bool {
    let n = bytes.len().min(5);
    bytes[..n] == b"HTTP/"[..n]
}

/// Parses a complete request head `httparse` refused, leniently (see [`lenient_head`]).
fn lenient_request(head: &[u8]) -> Option<RequestHead> {
    let lf = head.iter().position(|&b| b == b'\n')?;
    let line = request_line(&head[..lf])?;
    let (headers, bad_lines, bad_line) = lenient_headers(&head[lf + 1..]);
    Some(RequestHead {
        method: text(line.method),
        uri: (!line.uri.is_empty()).then(|| text(line.uri)),
        version: line.version.map(str::to_string),
        host: header(&headers, "host"),
        user_agent: header(&headers, "user-agent"),
        referrer: header(&headers, "referer"),
        length: body_length(&headers),
        bad_lines,
        bad_line,
    })
}

/// Parses a complete response head `httparse` refused, leniently (see [`status_line`];
/// malformed header lines are skipped).
fn lenient_response(head: &[u8]) -> Option<ResponseHead> {
    let lf = head.iter().position(|&b| b == b'\n')?;
    let line = status_line(&head[..lf])?;
    let (headers, _, _) = lenient_headers(&head[lf + 1..]);
    let version = match line.version {
        b"1.0" | b"1.1" => text(line.version),
        v => excerpt(v),
    };
    Some(ResponseHead {
        version,
        code: line.code,
        reason: (!line.reason.is_empty()).then(|| text(line.reason)),
        length: body_length(&headers),
    })
}

/// The header lines of a head (after its first line), read leniently: `name: value` lines
/// up to the blank line, at most [`MAX_HEADERS`] kept; folded lines are dropped, malformed
/// ones skipped and counted (with the first of them, printable).
fn lenient_headers(lines: &[u8]) -> (Vec<httparse::Header<'_>>, usize, String) {
    let mut headers: Vec<httparse::Header<'_>> = Vec::new();
    let mut bad_lines = 0;
    let mut bad_line = String::new();
    for raw in lines.split(|&b| b == b'\n') {
        let l = raw.strip_suffix(b"\r").unwrap_or(raw);
        if l.is_empty() {
            break;
        }
        if l[0] == b' ' || l[0] == b'\t' {
            // A folded continuation line: part of the previous value, not kept.
            continue;
        }
        let n = l.iter().take_while(|&&b| is_tchar(b)).count();
        let after = l[n..].trim_ascii_start();
        match (std::str::from_utf8(&l[..n]), after.first()) {
            (Ok(name), Some(b':')) if n > 0 => {
                if headers.len() < MAX_HEADERS {
                    headers.push(httparse::Header {
                        name,
                        value: after[1..].trim_ascii(),
                    });
                }
            }
            _ => {
                if bad_lines == 0 {
                    bad_line = excerpt(l);
                }
                bad_lines += 1;
            }
        }
    }
    (headers, bad_lines, bad_line)
}

/// The weird for a head that does not parse.
fn head_error(d: Dir, head: &[u8], e: httparse::Error) -> (&'static str, String) {
    let start_line_bad = match head.iter().position(|&b| b == b'\n') {
        Some(p) => matches!(check_head(d, &head[..=p]), Check::Error(_)),
        None => true,
    };
    let name = match (e, start_line_bad, d) {
        (httparse::Error::TooManyHeaders, _, _) => "http_too_many_headers",
        (_, true, Dir::Orig) => "http_bad_request_line",
        (_, true, Dir::Resp) => "http_bad_status_line",
        (_, false, _) => "http_bad_header",
    };
    (name, format!("{e}: {}", excerpt(head)))
}

/// The first line of `bytes` (at most 64 bytes of it), printable.
fn excerpt(bytes: &[u8]) -> String {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut s = String::new();
    for &b in line.iter().take(64) {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            s.push(char::from(b));
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    if line.len() > 64 {
        s.push_str("...");
    }
    s
}

/// Header bytes as text: UTF-8 kept, other bytes as `\xNN` (as Zeek writes them).
fn text(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        s.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s
}

fn version_text(minor: u8) -> String {
    format!("1.{minor}")
}

/// The first value of header `name`.
fn header(headers: &[httparse::Header<'_>], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| text(h.value))
}

/// How the headers delimit the body.
fn body_length(headers: &[httparse::Header<'_>]) -> Length {
    let mut last_coding: Option<&[u8]> = None;
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
    {
        for coding in h.value.split(|&b| b == b',') {
            let coding = coding.trim_ascii();
            if !coding.is_empty() && !coding.eq_ignore_ascii_case(b"identity") {
                last_coding = Some(coding);
            }
        }
    }
    match last_coding {
        Some(c) if c.eq_ignore_ascii_case(b"chunked") => return Length::Chunked,
        Some(_) => return Length::OtherCoding,
        None => {}
    }
    let mut length = None;
    let lengths = || {
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    };
    for h in lengths() {
        // A list of equal values is one value (RFC 9110 section 8.6).
        for v in h.value.split(|&b| b == b',') {
            let n = content_length(v.trim_ascii());
            if n.is_none() || length.is_some_and(|l| Some(l) != n) {
                let values: Vec<String> = lengths().map(|h| excerpt(h.value)).collect();
                return Length::Bad(values.join(" / "));
            }
            length = n;
        }
    }
    length.map_or(Length::Unstated, Length::Known)
}

/// A Content-Length value: decimal digits, at most [`MAX_BODY`].
fn content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for &b in v {
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        if n > MAX_BODY {
            return None;
        }
    }
    Some(n)
}

/// The size on a chunk-size line (ending in LF or CRLF; extensions allowed), at most
/// [`MAX_BODY`].
fn chunk_size(line: &[u8]) -> Option<u64> {
    let body = line.strip_suffix(b"\n")?;
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    // httparse wants CRLF, and takes an empty line for size 0: a size needs a digit.
    if !body.first().is_some_and(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut crlf = Vec::with_capacity(body.len() + 2);
    crlf.extend_from_slice(body);
    crlf.extend_from_slice(b"\r\n");
    match httparse::parse_chunk_size(&crlf) {
        Ok(httparse::Status::Complete((n, size))) if n == crlf.len() && size <= MAX_BODY => {
            Some(size)
        }
        _ => None,
    }
}

/// Parses a complete request head: by `httparse`, else leniently.
fn parse_request(head: &[u8]) -> Option<RequestHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    if config().parse_request(&mut req, head).is_err() {
        return lenient_request(head);
    }
    Some(RequestHead {
        method: req.method?.to_string(),
        uri: Some(req.path?.to_string()),
        version: Some(version_text(req.version?)),
        host: header(req.headers, "host"),
        user_agent: header(req.headers, "user-agent"),
        referrer: header(req.headers, "referer"),
        length: body_length(req.headers),
        bad_lines: 0,
        bad_line: String::new(),
    })
}

/// Parses a complete response head: by `httparse`, else leniently.
fn parse_response(head: &[u8]) -> Option<ResponseHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    if config().parse_response(&mut resp, head).is_err() {
        return lenient_response(head);
    }
    let mut reason = resp.reason.unwrap_or("").to_string();
    if reason.is_empty() {
        // httparse gives an empty reason for one with bytes beyond ASCII: take it as sent.
        reason = raw_reason(head);
    }
    Some(ResponseHead {
        version: version_text(resp.version?),
        code: resp.code?,
        reason: (!reason.is_empty()).then_some(reason),
        length: body_length(resp.headers),
    })
}

/// The reason phrase of a status line, from its bytes ("HTTP/1.x SP code SP reason").
fn raw_reason(head: &[u8]) -> String {
    let line = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.splitn(2, |&b| b == b' ');
    let _version = parts.next();
    let rest = parts.next().unwrap_or(&[]).trim_ascii_start();
    match rest.get(3..) {
        Some(reason) => text(reason.trim_ascii()),
        None => String::new(),
    }
}

/// Looks for the start of a message in `data`: at 0 if `at_line_start`, else after a LF
/// (`blank`: an empty line there is a find too).
fn scan(d: Dir, data: &[u8], at_line_start: bool, blank: bool) -> Scan {
    let next_line = |from: usize| {
        data[from..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| from + p + 1)
    };
    let mut cand = if at_line_start { Some(0) } else { next_line(0) };
    while let Some(p) = cand {
        if p >= data.len() {
            break;
        }
        if blank {
            match data[p..] {
                [b'\n', ..] => return Scan::Blank(p + 1),
                [b'\r', b'\n', ..] => return Scan::Blank(p + 2),
                [b'\r'] => return Scan::Carry(p),
                _ => {}
            }
        }
        // A few control bytes before a message (a keep-alive byte) are passed over.
        let junk = data[p..]
            .iter()
            .take(JUNK_MAX + 1)
            .take_while(|&&b| is_junk(b))
            .count();
        let q = p + junk;
        if junk > JUNK_MAX {
            cand = next_line(p);
            continue;
        }
        if q >= data.len() {
            return Scan::Carry(p);
        }
        match start_candidate(d, &data[q..]) {
            Some(true) => return Scan::Found(q),
            None => return Scan::Carry(p),
            Some(false) => cand = next_line(p),
        }
    }
    Scan::Nothing
}

/// Whether `rest` starts with a request line (`d` = orig) or status line (resp): `None`
/// when its line is not complete yet and it still could.
fn start_candidate(d: Dir, rest: &[u8]) -> Option<bool> {
    // Cheap tests first (a resync may scan every line of a long body): a method is a short
    // token led by a capital and followed by a space; a status line starts with "HTTP/1.".
    let plausible = match d {
        Dir::Orig => {
            rest[0].is_ascii_uppercase()
                && match rest.iter().take(METHOD_MAX + 1).position(|&b| !is_tchar(b)) {
                    Some(p) => rest[p] == b' ',
                    None => rest.len() <= METHOD_MAX,
                }
        }
        Dir::Resp => rest[0] == b'H',
    };
    if !plausible {
        return Some(false);
    }
    match super::detect(d, rest) {
        Detect::Is(Service::Http) => {}
        Detect::NeedMore if !rest.contains(&b'\n') => return None,
        _ => return Some(false),
    }
    let window = &rest[..rest.len().min(START_LINE_MAX)];
    match window.iter().position(|&b| b == b'\n') {
        Some(e) => Some(valid_start_line(d, &rest[..e])),
        None if rest.len() >= START_LINE_MAX => Some(false),
        None => None,
    }
}

/// Whether a complete line (without its LF) is a request line ("METHOD SP target SP
/// HTTP/1.x") or a status line ("HTTP/1.x SP 3DIGIT ...").
fn valid_start_line(d: Dir, line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let is_version = |v: &[u8]| v == b"HTTP/1.0" || v == b"HTTP/1.1";
    match d {
        // A resync takes only lines with a version for request lines (a line of a body may
        // well look like an HTTP/0.9 request).
        Dir::Orig => request_line(line).is_some_and(|l| l.version.is_some() && !l.uri.is_empty()),
        Dir::Resp => {
            if line.len() < 8 || !is_version(&line[..8]) {
                return false;
            }
            let rest = &line[8..];
            if rest.first() != Some(&b' ') {
                return false;
            }
            let rest = rest.trim_ascii_start();
            rest.len() >= 3
                && rest[..3].iter().all(u8::is_ascii_digit)
                && rest.get(3).is_none_or(|&b| b == b' ')
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One call to the parser.
    #[derive(Clone, Copy, Debug)]
    enum Op<'a> {
        D(Dir, &'a [u8]),
        G(Dir, u64),
        E,
    }
    use Dir::{Orig as O, Resp as R};
    use Op::{D, E, G};

    fn ts_of(i: usize) -> u64 {
        1_000_000 * (i as u64 + 1)
    }

    /// Runs `ops` with every data call cut as `cut` says (`None`: whole).
    fn run_cut(mut p: HttpParser, ops: &[Op<'_>], cut: Option<usize>) -> (Vec<Record>, bool) {
        let mut out = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let ts = ts_of(i);
            match *op {
                D(d, bytes) => match cut {
                    None => p.data(d, bytes, ts, &mut out),
                    Some(0) => {
                        for b in bytes {
                            p.data(d, std::slice::from_ref(b), ts, &mut out);
                        }
                    }
                    Some(k) => {
                        let k = k.min(bytes.len());
                        p.data(d, &bytes[..k], ts, &mut out);
                        p.data(d, &bytes[k..], ts, &mut out);
                    }
                },
                G(d, len) => p.gap(d, len, ts, &mut out),
                E => p.end(ts, &mut out),
            }
            assert!(p.buffered() < 4 << 20);
        }
        (out, p.done())
    }

    /// Runs `ops` whole, one byte per call, and cut in two at every position of every data
    /// call: the records must be the same.
    fn run_with(make: fn() -> HttpParser, ops: &[Op<'_>]) -> (Vec<Record>, bool) {
        let whole = run_cut(make(), ops, None);
        let bytewise = run_cut(make(), ops, Some(0));
        assert_eq!(whole, bytewise, "one byte per call differs");
        let longest = ops
            .iter()
            .map(|op| match op {
                D(_, b) => b.len(),
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        for k in 1..longest {
            let cut = run_cut(make(), ops, Some(k));
            assert_eq!(whole, cut, "cut at {k} differs");
        }
        whole
    }

    fn run(ops: &[Op<'_>]) -> (Vec<Record>, bool) {
        run_with(HttpParser::new, ops)
    }

    fn http(recs: &[Record]) -> Vec<&HttpRecord> {
        recs.iter()
            .filter_map(|r| match r {
                Record::Http(h) => Some(h),
                _ => None,
            })
            .collect()
    }

    fn weirds(recs: &[Record]) -> Vec<&Weird> {
        recs.iter()
            .filter_map(|r| match r {
                Record::Weird(w) => Some(w),
                _ => None,
            })
            .collect()
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn get_and_response_fields() {
        let (recs, done) = run(&[
            D(
                O,
                b"GET /a%20b?x=1 HTTP/1.1\r\nHost: Example.COM:8080\r\nUser-Agent: curl/8.0\r\n\
                  Referer: http://r.example/\r\n\r\n",
            ),
            D(
                R,
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
            ),
            E,
        ]);
        assert!(done);
        assert_eq!(
            recs,
            vec![Record::Http(HttpRecord {
                ts_ns: ts_of(0),
                trans_depth: 1,
                method: s("GET"),
                host: s("Example.COM:8080"),
                uri: s("/a%20b?x=1"),
                referrer: s("http://r.example/"),
                version: s("1.1"),
                user_agent: s("curl/8.0"),
                request_body_len: Some(0),
                response_body_len: Some(5),
                status_code: Some(200),
                status_msg: s("OK"),
                info_code: None,
                info_msg: None,
                midstream: false,
            })]
        );
    }

    #[test]
    fn record_is_emitted_when_the_response_ends() {
        let mut p = HttpParser::new();
        let mut out = Vec::new();
        p.data(O, b"GET / HTTP/1.0\r\n\r\n", 1, &mut out);
        assert!(out.is_empty());
        p.data(
            R,
            b"HTTP/1.0 404 Not Found\r\nContent-Length: 3\r\n\r\nab",
            2,
            &mut out,
        );
        assert!(out.is_empty());
        p.data(R, b"c", 3, &mut out);
        let h = http(&out);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].status_code, Some(404));
        assert_eq!(h[0].status_msg, s("Not Found"));
        assert_eq!(h[0].version, s("1.0"));
        assert_eq!(h[0].response_body_len, Some(3));
        assert_eq!(h[0].host, None);
        assert!(!p.done());
    }

    #[test]
    fn version_is_the_response_s_else_the_request_s() {
        let (recs, _) = run(&[
            D(O, b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.0\r\n\r\n"),
            D(R, b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"),
            E,
        ]);
        let h = http(&recs);
        assert_eq!(h[0].version, s("1.0"));
        assert_eq!(h[1].version, s("1.0"));
        assert_eq!(h[1].status_code, None);
        let (recs, _) = run(&[
            D(O, b"GET /1 HTTP/1.0\r\n\r\n"),
            D(R, b"HTTP/1.1 204 No\r\n\r\n"),
        ]);
        assert_eq!(http(&recs)[0].version, s("1.1"));
    }

    #[test]
    fn json_names_and_omitted_fields() {
        let (recs, _) = run(&[D(O, b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"), E]);
        let v = serde_json::to_value(&recs[0]).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "trans_depth": 1, "method": "GET", "host": "h", "uri": "/x",
                "version": "1.1", "request_body_len": 0, "midstream": false
            })
        );
        let (recs, _) = run(&[
            D(
                O,
                b"POST /u HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            ),
            D(R, b"HTTP/1.1 100 Continue\r\n\r\n"),
            D(O, b"ab"),
            D(R, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
        ]);
        let v = serde_json::to_value(&recs[0]).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "trans_depth": 1, "method": "POST", "uri": "/u", "version": "1.1",
                "request_body_len": 2, "response_body_len": 0, "status_code": 201,
                "status_msg": "Created", "info_code": 100, "info_msg": "Continue",
                "midstream": false
            })
        );
    }

    #[test]
    fn head_and_304_and_204_have_no_body() {
        let (recs, done) = run(&[
            D(O, b"HEAD /a HTTP/1.1\r\nHost: h\r\n\r\n"),
            D(R, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
            D(O, b"GET /b HTTP/1.1\r\nIf-None-Match: \"x\"\r\n\r\n"),
            D(
                R,
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 77\r\n\r\n",
            ),
            D(O, b"DELETE /c HTTP/1.1\r\n\r\n"),
            D(R, b"HTTP/1.1 204 No Content\r\n\r\n"),
            D(O, b"GET /d HTTP/1.1\r\n\r\n"),
            D(R, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        ]);
        assert!(!done);
        let h = http(&recs);
        assert_eq!(h.len(), 4);
        let got: Vec<_> = h
            .iter()
            .map(|r| {
                (
                    r.trans_depth,
                    r.uri.clone().unwrap(),
                    r.status_code,
                    r.response_body_len,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "/a".into(), Some(200), Some(0)),
                (2, "/b".into(), Some(304), Some(0)),
                (3, "/c".into(), Some(204), Some(0)),
                (4, "/d".into(), Some(200), Some(2)),
            ]
        );
        assert!(weirds(&recs).is_empty());
    }

    #[test]
    fn hundred_continue_then_final_response() {
        let (recs, _) = run(&[
            D(
                O,
                b"PUT /f HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n",
            ),
            D(R, b"HTTP/1.1 100 Continue\r\n\r\n"),
            D(O, b"0123456789"),
            D(R, b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 Fine\r\nContent-Length: 4\r\n\r\nbody"),
            E,
        ]);
        let h = http(&recs);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].info_code, Some(102));
        assert_eq!(h[0].info_msg, s("Processing"));
        assert_eq!(h[0].status_code, Some(200));
        assert_eq!(h[0].status_msg, s("Fine"));
        assert_eq!(h[0].request_body_len, Some(10));
        assert_eq!(h[0].response_body_len, Some(4));
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let (recs, done) = run(&[
            D(O, b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n"),
            D(
                R,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
                  5;name=value\r\nhello\r\n\
                  1A\r\nabcdefghijklmnopqrstuvwxyz\r\n\
                  000\r\nExpires: never\r\nX-Sum: 1\r\n\r\n",
            ),
            D(O, b"GET /next HTTP/1.1\r\n\r\n"),
            D(
                R,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n",
            ),
        ]);
        assert!(!done);
        let h = http(&recs);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].response_body_len, Some(31));
        assert_eq!(h[1].uri, s("/next"));
        assert_eq!(h[1].response_body_len, Some(3));
        assert!(weirds(&recs).is_empty());
    }

    #[test]
    fn chunked_request_body() {
        let (recs, _) = run(&[
            D(
                O,
                b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n\
                  4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n",
            ),
            D(R, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ]);
        let h = http(&recs);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].request_body_len, Some(9));
    }

    #[test]
    fn pipelining_of_three() {
        let (recs, _) = run(&[
            D(
                O,
                b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n\
                  POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc\
                  HEAD /3 HTTP/1.1\r\nHost: h\r\n\r\n",
            ),
            D(
                R,
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA\
                  HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nBB\r\n0\r\n\r\n\
                  HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n",
            ),
        ]);
        let h = http(&recs);
        let got: Vec<_> = h
            .iter()
            .map(|r| {
                (
                    r.trans_depth,
                    r.method.clone().unwrap(),
                    r.uri.clone().unwrap(),
                    r.request_body_len,
                    r.status_code,
                    r.response_body_len,
                    r.ts_ns,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    1,
                    "GET".into(),
                    "/1".into(),
                    Some(0),
                    Some(200),
                    Some(1),
                    ts_of(0)
                ),
                (
                    2,
                    "POST".into(),
                    "/2".into(),
                    Some(3),
                    Some(201),
                    Some(2),
                    ts_of(0)
                ),
                (
                    3,
                    "HEAD".into(),
                    "/3".into(),
                    Some(0),
                    Some(200),
                    Some(0),
                    ts_of(0)
                ),
            ]
        );
    }

    #[test]
    fn response_delimited_by_close() {
        let (recs, done) = run(&[
            D(O, b"GET / HTTP/1.0\r\n\r\n"),
            D(
                R,
                b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>",
            ),
            D(R, b"HTTP/1.1 200 OK\r\n\r\n"),
            G(R, 100),
            D(R, b"</html>"),
            E,
        ]);
        assert!(done);
        let h = http(&recs);
        assert_eq!(h.len(), 1);
        // Everything up to the close is body, the hole included.
        assert_eq!(h[0].response_body_len, Some(6 + 19 + 100 + 7));
        assert!(!h[0].midstream);
    }

    #[test]
    fn request_without_response_and_cut_body_at_end() {
        let (recs, _) = run(&[
            D(O, b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"),
            D(R, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345"),
            E,
        ]);
        let h = http(&recs);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].status_code, Some(200));
        assert_eq!(h[0].response_body_len, Some(5));
        assert_eq!(h[1].uri, s("/2"));
        assert_eq!(h[1].status_code, None);
        assert_eq!(h[1].response_body_len, None);
        assert!(weirds(&recs).is_empty());
    }

    #[test]
    fn gap_in_body_counts_and_keeps_sync() {
        let (recs, _) = run(&[
            D(O, b"GET /big HTTP/1.1\r\n\r\n"),
            D(
                R,
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
            ),
            G(R, 60),
            D(R, b"012345678901234567890123456789"),
            D(O, b"GET /chunks HTTP/1.1\r\n\r\n"),
            D(
                R,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n0123",
            ),
            G(R, 90),
            D(R, b"456789\r\n0\r\n\r\n"),
            D(O, b"GET /last HTTP/1.1\r\n\r\n"),
            D(R, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"),
        ]);
        let h = http(&recs);
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].response_body_len, Some(100));
        assert_eq!(h[1].response_body_len, Some(100));
        assert_eq!(h[2].uri, s("/last"));
        assert!(h.iter().all(|r| !r.midstream));
    }

    #[test]
    fn gap_past_a_body_loses_the_next_head() {
        // The hole covers the end of a request body and the start of the next request.
        let (recs, _) = run(&[
            D(O, b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234"),
            G(O, 25),
            D(O, b"Host: lost\r\n\r\nGET /c HTTP/1.1\r\n\r\n"),
            D(
                R,
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n\
                  HTTP/1.1 201 B\r\nContent-Length: 0\r\n\r\n\
                  HTTP/1.1 202 C\r\nContent-Length: 0\r\n\r\n",
            ),
        ]);
        let h = http(&recs);
        let got: Vec<_> = h
            .iter()
            .map(|r| (r.trans_depth, r.uri.clone(), r.status_code, r.midstream))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, s("/a"), Some(200), false),
                (2, None, Some(201), true),
                (3, s("/c"), Some(202), true),
            ]
        );
        assert_eq!(h[0].request_body_len, Some(10));
    }

    #[test]
    fn gap_in_head_then_resync() {
        let (recs, done) = run(&[
            D(O, b"GET /a HTTP/1.1\r\nHost: h\r\nUser-Ag"),
            G(O, 40),
            D(O, b"gent\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n"),
            D(
                R,
                b"HTTP/1.1 200 A\r\nContent-Length: 2\r\n\r\naa\
                  HTTP/1.1 200 B\r\nContent-Length: 1\r\n\r\nb",
            ),
            E,
        ]);
        assert!(done);
        let h = http(&recs);
        let got: Vec<_> = h
            .iter()
            .map(|r| {
                (
                    r.trans_depth,
                    r.uri.clone(),
                    r.status_msg.clone(),
                    r.midstream,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![(1, None, s("A"), true), (2, s("/b"), s("B"), true)]
        );
        assert!(weirds(&recs).is_empty());
    }

    #[test]
    fn gap_in_response_head_skips_that_response() {
        let (recs, _) = run(&[
            D(O, b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"),
            D(R, b"HTTP/1.1 200 OK\r\nContent-"),
            G(R, 30),
            D(
                R,
                b"garbage after the hole\nHTTP/1.1 404 Nope\r\nContent-Length: 3\r\n\r\nabc",
            ),
        ]);
        let h = http(&recs);
        let got: Vec<_> = h
            .iter()
            .map(|r| {
                (
                    r.uri.clone(),
                    r.status_code,
                    r.response_body_len,
                    r.midstream,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (s("/1"), None, None, true),
                (s("/2"), Some(404), Some(3), true)
            ]
        );
    }

    #[test]
    fn gap_at_chunk_size_resyncs() {
        let (recs, _) = run(&[
            D(O, b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"),
            D(
                R,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n",
            ),
            G(R, 9),
            D(
                R,
                b"xyz\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nzz",
            ),
        ]);
        let h = http(&recs);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].response_body_len, Some(4));
        assert!(h[0].midstream);
        assert_eq!(h[1].response_body_len, Some(2));
        assert!(h[1].midstream);
    }

    #[test]
    fn gap_at_start_is_midstream() {
        let (recs, _) = run(&[
            G(O, 1000),
            D(O, b"Accept: */*\r\n\r\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n"),
            D(R, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            D(R, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            E,
        ]);
        let h = http(&recs);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].uri, None);
        assert_eq!(h[1].uri, s("/x"));
        assert!(h.iter().all(|r| r.midstream));
    }

    #[test]
    fn midstream_start() {
        let (recs, done) = run_with(
            HttpParser::midstream,
            &[
                D(O, b"dy of an earlier POST\r\nGET /x HTTP/1.1\r\nHost: m\r\n\r\n"),
                D(
                    R,
                    b"e end of a body HTTP/1.1 200 no\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
                ),
                E,
            ],
        );
        assert!(done);
        let h = http(&recs);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].uri, s("/x"));
        assert_eq!(h[0].host, s("m"));
        assert_eq!(h[0].response_body_len, Some(2));
        assert!(h[0].midstream);
        // A midstream connection whose bytes start at a message start parses all of it.
        let (recs, _) = run_with(
            HttpParser::midstream,
            &[
                D(O, b"GET /y HTTP/1.1\r\n\r\n"),
                D(R, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            ],
        );
        let h = http(&recs);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].uri, s("/y"));
        assert!(h[0].midstream);
    }

    #[test]
    fn resync_rejects_a_false_start() {
        // A line that looks like a request line but whose head does not parse: the scan goes on.
        let (recs, _) = run_with(
            HttpParser::midstream,
            &[
                D(
                    O,
                    b"x\nGET /fa\x01ke HTTP/1.1\r\n\r\nPOST /real HTTP/1.1\r\n\r\n",
                ),
                E,
            ],
        );
        let h = http(&recs);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].uri, s("/real"));
        assert!(weirds(&recs).is_empty());
        // The same with the false start's line cut across calls: the message found after it
        // has the time of its own bytes.
        let (recs, _) = run_with(
            HttpParser::midstream,
            &[
                D(O, b"x\r\nGET r: http://a/\r\x08"),
                D(
                    O,
                    b"*\r/x HTTP/1.1\r\nHost: m\r\n\r\nGET /z HTTP/1.1\r\n\r\n",
                ),
                E,
            ],
        );
        let h = http(&recs);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].uri, s("/z"));
        assert_eq!(h[0].ts_ns, ts_of(1));
    }

    #[test]
    fn response_without_request() {
        let (recs, _) = run(&[
            D(
                R,
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy",
            ),
            D(O, b"GET /later HTTP/1.1\r\n\r\n"),
            E,
        ]);
        let h = http(&recs);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].trans_depth, 1);
        assert_eq!(h[0].method, None);
        assert_eq!(h[0].request_body_len, None);
        assert_eq!(h[0].status_code, Some(503));
        assert_eq!(h[0].version, s("1.1"));
        assert_eq!(h[0].response_body_len, Some(4));
        assert_eq!(h[0].ts_ns, ts_of(0));
        assert!(!h[0].midstream);
        assert_eq!(h[1].trans_depth, 2);
        assert_eq!(h[1].uri, s("/later"));
    }

    #[test]
    fn garbage_request_is_a_weird_and_the_parse_goes_on() {
        // Garbage where a request should be: a weird, a stand-in the server's answer pairs
        // with, and the next request line is found.
        let (recs, done) = run(&[
            D(O, b"\x00\x01\x02binary stuff\r\n\r\n"),
            D(O, b"GET / HTTP/1.1\r\n\r\n"),
            D(
                R,
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad",
            ),
            D(R, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ]);
        assert!(!done);
        let w = weirds(&recs);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].name, "http_bad_request_line");
        assert_eq!(w[0].peer, Dir::Orig);
        assert_eq!(w[0].source, "HTTP");
        assert_eq!(w[0].addl, "invalid token: binary stuff");
        let h = http(&recs);
        let got: Vec<_> = h
            .iter()
            .map(|r| (r.trans_depth, r.method.clone(), r.status_code, r.midstream))
            .collect();
        assert_eq!(
            got,
            vec![(1, None, Some(400), true), (2, s("GET"), Some(200), true)]
        );
        assert_eq!(h[0].response_body_len, Some(3));

        // A method that is no token (as Wireshark, no request); its answer is still logged,
        // and so is what comes after on the connection.
        let (recs, done) = run(&[
            D(O, b"GET/ HTTP/1.1\nHost: www.google.com\n\n"),
            D(
                R,
                b"HTTP/1.0 400 Bad Request\r\nContent-Length: 2\r\n\r\nno",
            ),
            D(
                O,
                b"\xc3\x83 / HTTP/1.1\r\nHost: a\r\n\r\nGET /ok HTTP/1.1\r\n\r\n",
            ),
            D(
                R,
                b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n",
            ),
            D(R, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            E,
        ]);
        assert!(done);
        assert_eq!(weirds(&recs).len(), 2);
        assert!(weirds(&recs)
            .iter()
            .all(|w| w.name == "http_bad_request_line"));
        let got: Vec<_> = http(&recs)
            .iter()
            .map(|r| (r.method.clone(), r.uri.clone(), r.status_code))
            .collect();
        assert_eq!(
            got,
            vec![
                (None, None, Some(400)),
                (None, None, Some(405)),
                (s("GET"), s("/ok"), Some(200))
            ]
        );

        // After a complete exchange: the pair is emitted, then the weird.
        let (recs, done) = run(&[
            D(O, b"GET / HTTP/1.1\r\n\r\n"),
            D(
                R,
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n\x16\x03\x01\x00\x05hello\n",
            ),
            D(O, b"GET /after HTTP/1.1\r\n\r\n"),
        ]);
        assert!(done);
        assert_eq!(recs.len(), 2);
        assert!(matches!(&recs[0], Record::Http(h) if h.status_code == Some(200)));
        assert!(matches!(&recs[1], Record::Weird(w) if w.name == "http_bad_status_line"));

        // A head cut by the end, malformed: still a weird.
        let (recs, done) = run(&[D(O, b"GET /x HTTP/1.1\r\n\r\n"), D(O, b"G\x7fT /y"), E]);
        assert!(done);
        let w = weirds(&recs);
        assert_eq!(w.len(), 1, "{recs:?}");
        // A bad header line is skipped (lenient), a bad start line is not.
        let (recs, _) = run(&[
            D(O, b"GET / HTTP/1.1\r\nBad Header: x\r\nHost: ok\r\n\r\n"),
            E,
        ]);
        assert_eq!(http(&recs)[0].host, s("ok"));
        let (recs, _) = run(&[D(O, b"GET / HTTP/2.0\r\n\r\n")]);
        assert_eq!(weirds(&recs)[0].name, "http_bad_request_line");
    }

    #[test]
    fn absurd_content_length_is_a_weird_without_allocation() {
        for cl in [
            &b"99999999999999999999999"[..],
            b"18446744073709551616",
            b"1125899906842625",
            b"abc",
            b"-1",
            b"",
            b"5, 6",
        ] {
            let mut head = b"HTTP/1.1 200 OK\r\nContent-Length: ".to_vec();
            head.extend_from_slice(cl);
            head.extend_from_slice(b"\r\n\r\nbody");
            let mut p = HttpParser::new();
            let mut out = Vec::new();
            p.data(O, b"GET / HTTP/1.1\r\n\r\n", 1, &mut out);
            p.data(R, &head, 2, &mut out);
            assert!(p.done());
            assert!(p.buffered() < 1024);
            let w = weirds(&out);
            assert_eq!(w.len(), 1);
            assert_eq!(w[0].name, "http_bad_content_length");
            assert_eq!(w[0].addl, excerpt(cl));
            assert_eq!(w[0].peer, Dir::Resp);
            assert_eq!(http(&out).len(), 1);
        }
        // Equal values in a list, and the largest accepted, are fine.
        let (recs, done) = run(&[
            D(O, b"GET / HTTP/1.1\r\n\r\n"),
            D(R, b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc"),
            D(O, b"GET /2 HTTP/1.1\r\n\r\n"),
            D(
                R,
                b"HTTP/1.1 200 OK\r\nContent-Length: 1125899906842624\r\n\r\nabc",
            ),
            G(R, u64::MAX),
            E,
        ]);
        assert!(done);
        assert!(weirds(&recs).is_empty());
        let h = http(&recs);
        assert_eq!(h[0].response_body_len, Some(3));
        assert_eq!(h[1].response_body_len, Some(1125899906842624));
    }

    #[test]
    fn bad_chunk_sizes_are_weirds() {
        for size in [
            &b"ffffffffffffffff"[..],
            b"10000000000000000",
            b"4000000000001",
            b"zz",
            b"",
            b" 5",
            b"5 x",
        ] {
            let mut body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            body.extend_from_slice(size);
            body.extend_from_slice(b"\r\ndata\r\n");
            let (recs, done) = run(&[D(O, b"GET / HTTP/1.1\r\n\r\n"), D(R, &body)]);
            assert!(done, "{size:?}");
            let w = weirds(&recs);
            assert_eq!(w.len(), 1);
            assert_eq!(w[0].name, "http_bad_chunk_size", "{size:?}");
        }
        // Chunk data without its CRLF.
        let (recs, done) = run(&[
            D(O, b"GET / HTTP/1.1\r\n\r\n"),
            D(
                R,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
            ),
        ]);
        assert!(done);
        assert_eq!(weirds(&recs)[0].name, "http_bad_chunk_size");
        // A chunk-size line that never ends.
        let mut long = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
        long.resize(long.len() + 5000, b'x');
        let mut p = HttpParser::new();
        let mut out = Vec::new();
        p.data(O, b"GET / HTTP/1.1\r\n\r\n", 1, &mut out);
        p.data(R, &long, 2, &mut out);
        assert!(p.done());
        assert_eq!(weirds(&out)[0].name, "http_bad_chunk_size");
    }

    #[test]
    fn head_too_long_and_too_many_headers() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        while head.len() <= HEAD_MAX {
            head.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        let mut p = HttpParser::new();
        let mut out = Vec::new();
        for chunk in head.chunks(1000) {
            p.data(O, chunk, 1, &mut out);
            assert!(p.buffered() <= HEAD_MAX + 1001);
        }
        assert!(p.done());
        let w = weirds(&out);
        assert_eq!(w.len(), 1);
        // Too many header lines come first here.
        assert_eq!(w[0].name, "http_too_many_headers");

        let mut head = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        head.resize(HEAD_MAX + 10, b'a');
        let mut p = HttpParser::new();
        let mut out = Vec::new();
        p.data(O, &head, 1, &mut out);
        assert!(p.done());
        assert_eq!(weirds(&out)[0].name, "http_head_too_long");
        assert!(p.buffered() < 1024);

        // A head of exactly the maximum is fine.
        let mut head = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        head.resize(HEAD_MAX - 4, b'a');
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(head.len(), HEAD_MAX);
        let mut p = HttpParser::new();
        let mut out = Vec::new();
        p.data(O, &head, 1, &mut out);
        p.end(2, &mut out);
        assert!(weirds(&out).is_empty());
        assert_eq!(http(&out).len(), 1);
    }

    #[test]
    fn too_many_pending_requests() {
        let mut p = HttpParser::new();
        let mut out = Vec::new();
        for _ in 0..MAX_PENDING {
            p.data(O, b"GET / HTTP/1.1\r\n\r\n", 1, &mut out);
        }
        assert!(!p.done());
        assert!(out.is_empty());
        p.data(O, b"GET / HTTP/1.1\r\n\r\n", 1, &mut out);
        assert!(p.done());
        assert_eq!(http(&out).len(), MAX_PENDING);
        assert_eq!(weirds(&out)[0].name, "http_too_many_pending");
        // Long URIs reach the text bound first.
        let mut req = b"GET /".to_vec();
        req.resize(60_000, b'a');
        req.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        let mut p = HttpParser::new();
        let mut out = Vec::new();
        for _ in 0..40 {
            p.data(O, &req, 1, &mut out);
        }
        assert!(p.done());
        assert_eq!(weirds(&out)[0].name, "http_too_many_pending");
        assert!(http(&out).len() < 20);
    }

    #[test]
    fn connect_tunnel_stops() {
        let (recs, done) = run(&[
            D(
                O,
                b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            ),
            D(O, b"\x16\x03\x01\x02\x00\x01"),
            D(R, b"HTTP/1.1 200 Connection established\r\n\r\n"),
            D(R, b"\x16\x03\x03\x00\x10"),
        ]);
        assert!(done);
        let h = http(&recs);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].method, s("CONNECT"));
        assert_eq!(h[0].uri, s("example.com:443"));
        assert_eq!(h[0].status_code, Some(200));
        assert!(weirds(&recs).is_empty());
    }

    #[test]
    fn connect_refused_goes_on() {
        let (recs, done) = run(&[
            D(O, b"CONNECT h:443 HTTP/1.1\r\n\r\n"),
            D(O, b"GET /after HTTP/1.1\r\n\r\n"),
            D(
                R,
                b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 2\r\n\r\nno",
            ),
            D(R, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ]);
        assert!(!done);
        let h = http(&recs);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].status_code, Some(407));
        assert_eq!(h[1].uri, s("/after"));
        assert_eq!(h[1].status_code, Some(200));
    }

    #[test]
    fn upgrade_stops() {
        let (recs, done) = run(&[
            D(
                O,
                b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            ),
            D(
                R,
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
            ),
            D(O, b"\x81\x85garbage"),
        ]);
        assert!(done);
        let h = http(&recs);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].status_code, Some(101));
        assert_eq!(h[0].info_code, None);
        assert!(weirds(&recs).is_empty());
    }

    #[test]
    fn leading_empty_lines_bare_lf_and_non_utf8() {
        let (recs, _) = run(&[
            D(O, b"GET /1 HTTP/1.1\nHost: a\n\n\r\n\r\nGET /2 HTTP/1.1\r\nUser-Agent: \xe9t\xc3\xa9\r\n\r\n"),
            D(R, b"HTTP/1.1 200 \xc9tat\r\nContent-Length: 0\r\n\r\n\r\nHTTP/1.1 200\r\n\r\n"),
            E,
        ]);
        let h = http(&recs);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].host, s("a"));
        assert_eq!(h[0].status_msg, s("\\xc9tat"));
        assert_eq!(h[1].user_agent, s("\\xe9té"));
        assert_eq!(h[1].status_msg, None);
        // No length and HTTP/1.1: the body runs to the close.
        assert_eq!(h[1].response_body_len, Some(0));
    }

    #[test]
    fn nothing_after_done() {
        let mut p = HttpParser::new();
        let mut out = Vec::new();
        p.data(R, b"\x7f\x7f\r\n", 1, &mut out);
        assert!(p.done());
        let n = out.len();
        p.data(O, b"GET / HTTP/1.1\r\n\r\n", 2, &mut out);
        p.data(R, b"HTTP/1.1 200 OK\r\n\r\n", 3, &mut out);
        p.gap(R, 5, 4, &mut out);
        p.end(5, &mut out);
        assert_eq!(out.len(), n);
        // After end, too.
        let mut p = HttpParser::new();
        let mut out = Vec::new();
        p.data(O, b"GET / HTTP/1.1\r\n\r\n", 1, &mut out);
        assert!(!p.done());
        p.end(2, &mut out);
        assert!(p.done());
        assert_eq!(out.len(), 1);
        p.data(O, b"GET / HTTP/1.1\r\n\r\n", 3, &mut out);
        p.end(4, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn lenient_request_lines() {
        // Request lines httparse refuses, read as Zeek and Wireshark read them.
        /// A request, then the method, URI and host it gives.
        type Case = (
            &'static [u8],
            &'static str,
            Option<&'static str>,
            Option<&'static str>,
        );
        let cases: &[Case] = &[
            (b"GET / HTTP/1.\nHost: h\n\n", "GET", Some("/"), Some("h")),
            (
                b"GET /a b  c HTTP/1.1\r\nHost: h\r\n\r\n",
                "GET",
                Some("/a b  c"),
                Some("h"),
            ),
            (
                b"GET /HTTP/1.1\nHost: h\n\n",
                "GET",
                Some("/HTTP/1.1"),
                Some("h"),
            ),
            (
                b"OPTIONS HTTP/1.1\nHost: h\n\n",
                "OPTIONS",
                Some("HTTP/1.1"),
                Some("h"),
            ),
            (b"OPTIONS\nHost: h\n\n", "OPTIONS", None, Some("h")),
            (
                b"CCM_POST / HTTP/1.\nHost: www.google.com\n\n",
                "CCM_POST",
                Some("/"),
                Some("www.google.com"),
            ),
            (
                b"GET /n HTTP/1.1\r\nX-Bin: a\x00b\r\nHost: h\r\n\r\n",
                "GET",
                Some("/n"),
                Some("h"),
            ),
        ];
        for &(req, method, uri, host) in cases {
            let (recs, done) = run(&[
                D(O, req),
                D(
                    R,
                    b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 2\r\n\r\nno",
                ),
                D(O, b"GET /next HTTP/1.1\r\n\r\n"),
                D(R, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            ]);
            let what = String::from_utf8_lossy(req);
            assert!(!done, "{what}");
            assert!(weirds(&recs).is_empty(), "{what}: {recs:?}");
            let h = http(&recs);
            assert_eq!(h.len(), 2, "{what}");
            assert_eq!(h[0].method.as_deref(), Some(method), "{what}");
            assert_eq!(h[0].uri.as_deref(), uri, "{what}");
            assert_eq!(h[0].host.as_deref(), host, "{what}");
            assert_eq!(h[0].status_code, Some(405), "{what}");
            assert_eq!(h[0].response_body_len, Some(2), "{what}");
            assert!(!h[0].midstream, "{what}");
            assert_eq!(h[1].uri, s("/next"), "{what}");
        }
    }

    #[test]
    fn lenient_headers_are_skipped_and_counted() {
        let (recs, _) = run(&[
            D(
                O,
                b"GET / HTTP/1.\r\nno colon here\r\n\x01bad\r\nHost: h\r\n folded\r\n\
                  Content-Length: 3\r\n\r\nabcGET /2 HTTP/1.1\r\n\r\n",
            ),
            D(R, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            E,
        ]);
        let w = weirds(&recs);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].name, "http_bad_header");
        assert_eq!(
            w[0].addl,
            "2 malformed header line(s) skipped: no colon here"
        );
        let h = http(&recs);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].host, s("h"));
        assert_eq!(h[0].request_body_len, Some(3));
        assert_eq!(h[1].uri, s("/2"));
    }

    #[test]
    fn lenient_status_lines() {
        let (recs, done) = run(&[
            D(O, b"POST /s HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"),
            D(
                R,
                b"HTTP/1.\xc5 200 OK\r\nDate: x\r\nServerB Sun\r\nContent-LengthL 178\r\n\r\nbody",
            ),
            E,
        ]);
        assert!(done);
        assert!(weirds(&recs).is_empty(), "{recs:?}");
        let h = http(&recs);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].status_code, Some(200));
        assert_eq!(h[0].status_msg, s("OK"));
        assert_eq!(h[0].version, s("1.\\xc5"));
        // No usable length: the body runs to the close.
        assert_eq!(h[0].response_body_len, Some(4));
        // What even the lenient reading refuses ends the parse.
        for bad in [
            &b"HTTP/1.1 20 OK\r\n\r\n"[..],
            b"HTTP/1.1 2000\r\n\r\n",
            b"HTTP/ 200\r\n\r\n",
        ] {
            let (recs, done) = run(&[D(O, b"GET / HTTP/1.1\r\n\r\n"), D(R, bad)]);
            assert!(done);
            assert_eq!(weirds(&recs)[0].name, "http_bad_status_line");
        }
    }

    #[test]
    fn http_0_9_simple_requests() {
        // No version: the answer is a bare body that runs to the close.
        let (recs, done) = run(&[
            D(O, b"GET /old\r\n"),
            D(R, b"<html>old</html>\n"),
            D(R, b"more"),
            E,
        ]);
        assert!(done);
        assert!(weirds(&recs).is_empty(), "{recs:?}");
        let h = http(&recs);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].method, s("GET"));
        assert_eq!(h[0].uri, s("/old"));
        assert_eq!(h[0].version, s("0.9"));
        assert_eq!(h[0].status_code, None);
        assert_eq!(h[0].response_body_len, Some(21));
        assert_eq!(h[0].ts_ns, ts_of(0));
        // Empty lines before the answer are not counted, however the bytes come.
        let (recs, _) = run(&[D(O, b"GET /e\n"), D(R, b"\r\n\nabc\ndef"), E]);
        assert_eq!(http(&recs)[0].response_body_len, Some(7));
        // A short answer, shorter than a status line: the same.
        let (recs, _) = run(&[D(O, b"GET /\n"), D(R, b"hi"), E]);
        assert!(weirds(&recs).is_empty(), "{recs:?}");
        assert_eq!(http(&recs)[0].response_body_len, Some(2));
        // A server that answers with a status line anyway.
        let (recs, _) = run(&[
            D(O, b"GET /x\n"),
            D(R, b"HTTP/1.0 400 Bad Request\r\nContent-Length: 1\r\n\r\nx"),
        ]);
        let h = http(&recs);
        assert_eq!(h[0].uri, s("/x"));
        assert_eq!(h[0].status_code, Some(400));
        // Simple requests one after the other, the client never answered.
        let (recs, done) = run(&[D(O, b"GET /1\nGET /2\r\nPUT /3 HTTP/1.1\r\n\r\n"), E]);
        assert!(done);
        let got: Vec<_> = http(&recs).iter().map(|r| r.uri.clone()).collect();
        assert_eq!(got, vec![s("/1"), s("/2"), s("/3")]);
        // The next request's time is that of its own first byte, whichever call it came in.
        let (recs, _) = run(&[
            D(O, b"GET /1\n"),
            D(O, b"G"),
            D(O, b"ET /2 HTTP/1.1\r\n\r\n"),
            D(O, b"GET /3\n\nP"),
            D(O, b"UT /4 HTTP/1.1\r\n\r\n"),
            D(R, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            E,
        ]);
        let got: Vec<_> = http(&recs)
            .iter()
            .map(|r| (r.uri.clone(), r.ts_ns))
            .collect();
        assert_eq!(
            got,
            vec![
                (s("/1"), ts_of(0)),
                (s("/2"), ts_of(1)),
                (s("/3"), ts_of(3)),
                (s("/4"), ts_of(3))
            ]
        );
        // The line alone, then the end.
        let (recs, _) = run(&[D(O, b"GET /only\r\n"), E]);
        assert_eq!(http(&recs)[0].uri, s("/only"));
        assert!(weirds(&recs).is_empty());
    }

    #[test]
    fn junk_before_a_request_line() {
        // A keep-alive byte before the request, from the connection's start or midstream.
        for make in [HttpParser::new as fn() -> HttpParser, HttpParser::midstream] {
            let (recs, _) = run_with(
                make,
                &[
                    D(O, b"\x00GET /c HTTP/1.1\r\nHost: h\r\n\r\n"),
                    D(R, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
                    E,
                ],
            );
            assert!(weirds(&recs).is_empty(), "{recs:?}");
            let h = http(&recs);
            assert_eq!(h.len(), 1);
            assert_eq!(h[0].uri, s("/c"));
            assert_eq!(h[0].status_code, Some(200));
        }
        // Midstream, after the end of a body.
        let (recs, _) = run_with(
            HttpParser::midstream,
            &[
                D(O, b"tail of a body\r\n\x00\x00GET /d HTTP/1.1\r\n\r\n"),
                E,
            ],
        );
        assert_eq!(http(&recs)[0].uri, s("/d"));
    }

    #[test]
    fn record_time_is_the_first_byte() {
        let mut p = HttpParser::new();
        let mut out = Vec::new();
        p.data(O, b"\r\n", 5, &mut out);
        p.data(O, b"GET / HT", 10, &mut out);
        p.data(O, b"TP/1.1\r\n\r\n", 20, &mut out);
        p.data(
            R,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            30,
            &mut out,
        );
        assert_eq!(http(&out)[0].ts_ns, 10);
    }
}
