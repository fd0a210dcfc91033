//! Application protocols in reassembled streams: what `mos-log` turns into records.
//!
//! Each protocol is a [`Parser`] fed one connection's two directions in stream order, with
//! holes marked. Parsers use the field's libraries (`httparse`, `tls-parser`, `x509-parser`)
//! for the messages themselves and never trust a length field: whatever the bytes, a parser
//! returns records and [`Weird`]s, never a panic (the fuzz targets `http_records` and
//! `tls_records` hold them to it). Most weirds end the parser's work on the connection; the
//! HTTP parser goes on after a bad request line or bad header lines (at most 16 such weirds a
//! connection), as Zeek does, so that the answers are still logged.

pub mod http;
pub mod ssh;
pub mod tls;

use serde::Serialize;

/// A direction of a connection, in Zeek's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    /// From the originator (the client) to the responder: the server side's receive stream
    /// (`Side::Svr`).
    Orig,
    /// From the responder to the originator: the client side's receive stream (`Side::Cli`).
    Resp,
}

impl Dir {
    /// The side whose receive stream carries this direction.
    pub fn side(self) -> mos_client::Side {
        match self {
            Dir::Orig => mos_client::Side::Svr,
            Dir::Resp => mos_client::Side::Cli,
        }
    }

    /// The direction a side's receive stream carries.
    pub fn of_side(side: mos_client::Side) -> Dir {
        match side {
            mos_client::Side::Svr => Dir::Orig,
            mos_client::Side::Cli => Dir::Resp,
        }
    }
}

/// Something a parser could not make sense of, as Zeek's `weird.log` names it: usually the
/// connection's parsing for that protocol ends with it (see the module's documentation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Weird {
    /// A short fixed name (`http_bad_request_line`, `tls_record_too_long`, ...).
    pub name: String,
    /// Details: what was seen.
    pub addl: String,
    /// The direction it was seen in.
    pub peer: Dir,
    /// The protocol (`HTTP`, `TLS`, `SSH`).
    pub source: &'static str,
}

/// A record a parser produced.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Record {
    /// One HTTP request/response pair.
    Http(http::HttpRecord),
    /// One TLS handshake.
    Tls(tls::TlsRecord),
    /// One SSH connection's banners and key-exchange fingerprints.
    Ssh(ssh::SshRecord),
    /// A parse that ended on something malformed.
    Weird(Weird),
}

/// One protocol's parser over one connection.
///
/// The caller feeds each direction's bytes in stream order; `ts_ns` is the capture time of the
/// packet that brought them (the event's). Records go to `out` as soon as they are complete.
pub trait Parser {
    /// More bytes of direction `dir`, contiguous with what came before in that direction.
    fn data(&mut self, dir: Dir, bytes: &[u8], ts_ns: u64, out: &mut Vec<Record>);
    /// `len` bytes of `dir` that will never come (a hole in the capture, or bytes the reader
    /// lost): the next `data` of `dir` comes after them.
    fn gap(&mut self, dir: Dir, len: u64, ts_ns: u64, out: &mut Vec<Record>);
    /// The connection ended: emit what is pending (a request without its response, a
    /// handshake half seen).
    fn end(&mut self, ts_ns: u64, out: &mut Vec<Record>);
    /// The parser wants no more bytes (it is done, or it gave up with a `Weird`); the caller
    /// may stop reading the connection for it.
    fn done(&self) -> bool;
}

/// What a connection carries, found from its first bytes (not its ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// HTTP/1.x.
    Http,
    /// TLS (or SSL 3.0).
    Ssl,
    /// SSH.
    Ssh,
}

impl Service {
    /// Zeek's name for it in `conn.log`'s `service` field.
    pub fn zeek_name(self) -> &'static str {
        match self {
            Service::Http => "http",
            Service::Ssl => "ssl",
            Service::Ssh => "ssh",
        }
    }
}

/// What detection says about a direction's first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detect {
    /// This service.
    Is(Service),
    /// Not enough bytes yet to tell.
    NeedMore,
    /// None of the services mos parses.
    Unknown,
}

/// HTTP/1 request methods that start a request line (RFC 9110, WebDAV, and the few others
/// seen in the wild).
const METHODS: &[&[u8]] = &[
    b"GET",
    b"POST",
    b"HEAD",
    b"PUT",
    b"DELETE",
    b"OPTIONS",
    b"TRACE",
    b"CONNECT",
    b"PATCH",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
    b"SEARCH",
    b"REPORT",
    b"MKACTIVITY",
    b"CHECKOUT",
    b"MERGE",
    b"NOTIFY",
    b"SUBSCRIBE",
    b"UNSUBSCRIBE",
    b"M-SEARCH",
    b"PURGE",
    b"BPROPFIND",
    b"BDELETE",
    b"POLL",
    b"SOURCE",
];

/// Detects the service from the first bytes of one direction (`dir` says which), without
/// looking at ports: an HTTP request line or status line, a TLS handshake record, an SSH
/// banner.
pub fn detect(dir: Dir, first: &[u8]) -> Detect {
    if first.is_empty() {
        return Detect::NeedMore;
    }
    // SSH: both sides open with "SSH-".
    match prefix_of(first, b"SSH-") {
        Some(true) => return Detect::Is(Service::Ssh),
        None => return Detect::NeedMore,
        Some(false) => {}
    }
    // TLS: a handshake record (type 22) of version 3.x; SSL 2 client hellos are not parsed.
    if first[0] == 0x16 {
        return match first {
            [_] => Detect::NeedMore,
            [_, 3] => Detect::NeedMore,
            [_, 3, minor, ..] if *minor <= 4 => Detect::Is(Service::Ssl),
            _ => Detect::Unknown,
        };
    }
    match dir {
        Dir::Orig => detect_request(first),
        Dir::Resp => match prefix_of(first, b"HTTP/1.") {
            Some(true) => Detect::Is(Service::Http),
            None => Detect::NeedMore,
            Some(false) => Detect::Unknown,
        },
    }
}

/// The longest request method [`detect`] takes (a token: RFC 9110 `tchar`s).
pub const METHOD_MAX: usize = 20;

/// Whether `b` may be part of a token (RFC 9110 section 5.6.2 `tchar`).
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Detection of a request line: a method (a token led by a capital, at most [`METHOD_MAX`]
/// bytes), a space, a target, and the version ` HTTP/1.x` ending the line (` HTTP/` at the
/// end of the bytes is enough). A method of [`METHODS`] is enough as soon as its space is
/// seen (the line may be longer than what detection keeps), and with one of them a line
/// `METHOD <target>` without version is an HTTP/0.9 request (Wireshark and Zeek take
/// `TRACE /x` so).
fn detect_request(first: &[u8]) -> Detect {
    if !first[0].is_ascii_uppercase() {
        return Detect::Unknown;
    }
    let Some(m) = first.iter().position(|&b| !is_tchar(b)) else {
        return if first.len() <= METHOD_MAX {
            Detect::NeedMore
        } else {
            Detect::Unknown
        };
    };
    if m > METHOD_MAX || first[m] != b' ' {
        return Detect::Unknown;
    }
    let method = &first[..m];
    let listed = METHODS.contains(&method);
    let rest = &first[m + 1..];
    let line_end = rest.iter().position(|&b| b == b'\n');
    let line = &rest[..line_end.unwrap_or(rest.len())];
    // The CR of a CR LF (or the last byte seen, when the LF is still to come).
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // A request target has no control bytes.
    if line.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Detect::Unknown;
    }
    let target_and_version = line.trim_ascii_start();
    // Where the version would start: after the last space that follows the target.
    let version = target_and_version
        .iter()
        .rposition(|&b| b == b' ')
        .map(|p| &target_and_version[p + 1..])
        .filter(|v| !v.is_empty());
    match line_end {
        Some(_) => {
            // `HTTP/1.` without its minor digit is taken as Wireshark takes it.
            let versioned = version.is_some_and(|v| {
                v.starts_with(b"HTTP/1.")
                    && (v.len() == 7 || (v.len() == 8 && v[7].is_ascii_digit()))
            });
            // Without version: an HTTP/0.9 `GET <target>`, or a line of one of the listed
            // methods (which a longer line would have been taken for anyway).
            let simple = (method == b"GET" || listed)
                && !target_and_version.is_empty()
                && !target_and_version.contains(&b' ');
            if versioned || simple {
                Detect::Is(Service::Http)
            } else {
                Detect::Unknown
            }
        }
        None if listed => Detect::Is(Service::Http),
        None => match version {
            // The window ends in what may be the version: ` HTTP/` seen, or part of it.
            Some(v) if v.len() >= 5 && prefix_of(v, b"HTTP/1.").is_none_or(|ok| ok) => {
                Detect::Is(Service::Http)
            }
            _ => Detect::NeedMore,
        },
    }
}

/// Whether `bytes` starts with `want` (`None`: `bytes` is a proper prefix of it, so more bytes
/// could still make it so).
fn prefix_of(bytes: &[u8], want: &[u8]) -> Option<bool> {
    if bytes.len() >= want.len() {
        Some(&bytes[..want.len()] == want)
    } else if want.starts_with(bytes) {
        None
    } else {
        Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_content_not_port() {
        assert_eq!(
            detect(Dir::Orig, b"GET / HTTP/1.1\r\n"),
            Detect::Is(Service::Http)
        );
        assert_eq!(
            detect(Dir::Orig, b"M-SEARCH * HTTP/1.1"),
            Detect::Is(Service::Http)
        );
        assert_eq!(
            detect(Dir::Resp, b"HTTP/1.0 200 OK"),
            Detect::Is(Service::Http)
        );
        assert_eq!(detect(Dir::Orig, b"GE"), Detect::NeedMore);
        assert_eq!(detect(Dir::Orig, b"GETX"), Detect::NeedMore);
        assert_eq!(detect(Dir::Orig, b"GET\x01"), Detect::Unknown);
        assert_eq!(
            detect(Dir::Orig, b"\x16\x03\x01\x02\x00"),
            Detect::Is(Service::Ssl)
        );
        assert_eq!(detect(Dir::Resp, b"\x16\x03\x03"), Detect::Is(Service::Ssl));
        assert_eq!(detect(Dir::Orig, b"\x16\x03"), Detect::NeedMore);
        assert_eq!(detect(Dir::Orig, b"\x16\x04\x01"), Detect::Unknown);
        assert_eq!(
            detect(Dir::Orig, b"SSH-2.0-OpenSSH_9.2\r\n"),
            Detect::Is(Service::Ssh)
        );
        assert_eq!(detect(Dir::Resp, b"SS"), Detect::NeedMore);
        assert_eq!(detect(Dir::Resp, b"220 smtp ready"), Detect::Unknown);
        assert_eq!(detect(Dir::Orig, b""), Detect::NeedMore);
    }

    #[test]
    fn any_token_method_with_a_version() {
        for line in [
            &b"CCM_POST / HTTP/1.1\r\n"[..],
            b"CCM_POST / HTTP/1.\n",
            b"CCM_POST / HTTP/",
            b"X-MS-ENUMATTS /a HTTP/1.0\r\n",
            b"GET /old\r\n",
            b"OPTIONS * HTTP/1.1",
            b"NOTIFY * HTTP/1.1\r\n",
            b"TRACE /HTTP/1.1\n",
        ] {
            let what = String::from_utf8_lossy(line);
            assert_eq!(detect(Dir::Orig, line), Detect::Is(Service::Http), "{what}");
        }
        // A token method whose line is not over may still be one.
        assert_eq!(detect(Dir::Orig, b"CCM_POST /abcd"), Detect::NeedMore);
        assert_eq!(detect(Dir::Orig, b"CCM_POST / HTT"), Detect::NeedMore);
        assert_eq!(detect(Dir::Orig, b"A_LONG_METHOD_NAME_20"), Detect::Unknown);
        // Without version, only a listed method.
        assert_eq!(detect(Dir::Orig, b"CCM_POST /HTTP/1\n"), Detect::Unknown);
    }

    #[test]
    fn other_protocols_are_not_http() {
        for first in [
            &b"EHLO mail.example.org\r\n"[..],
            b"HELO x\r\n",
            b"USER anonymous\r\n",
            b"USER\r\n",
            b"PASS secret\r\n",
            b"a001 LOGIN user pass\r\n",
            b"A001 LOGIN user pass\r\n",
            b"MAIL FROM:<a@b>\r\n",
            b"CCM_POST / HTTP/2.0\r\n",
            b"OPTIONS rtsp://h/ RTSP/1.0\r\n",
            b"GET /a b\r\n",
            b"GET\r\n",
            b"get / HTTP/1.1\r\n",
            b"220 ftp ready\r\n",
        ] {
            let what = String::from_utf8_lossy(first);
            assert_eq!(detect(Dir::Orig, first), Detect::Unknown, "{what}");
        }
        // As detection sees them (its first 16 bytes), undecided: the caller then says no.
        assert_eq!(detect(Dir::Orig, b"EHLO mail.exampl"), Detect::NeedMore);
        assert_eq!(detect(Dir::Orig, b"USER anonymous"), Detect::NeedMore);
        assert_eq!(prefix_of(b"HT", b"HTTP/"), None);
    }
}
