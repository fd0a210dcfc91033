//! Application protocols in reassembled streams: what `mos-log` turns into records.
//!
//! Each protocol is a [`Parser`] fed one connection's two directions in stream order, with
//! holes marked. Parsers use the field's libraries (`httparse`, `tls-parser`, `x509-parser`)
//! for the messages themselves and never trust a length field: whatever the bytes, a parser
//! returns records or a [`Weird`] that ends its work on the connection, never a panic (the
//! fuzz targets `http_records` and `tls_records` hold them to it).

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

/// Something a parser could not make sense of, as Zeek's `weird.log` names it: the
/// connection's parsing for that protocol ends with it.
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
        Dir::Orig => {
            let mut more = false;
            for m in METHODS {
                let mut line = m.to_vec();
                line.push(b' ');
                match prefix_of(first, &line) {
                    Some(true) => return Detect::Is(Service::Http),
                    None => more = true,
                    Some(false) => {}
                }
            }
            if more {
                Detect::NeedMore
            } else {
                Detect::Unknown
            }
        }
        Dir::Resp => match prefix_of(first, b"HTTP/1.") {
            Some(true) => Detect::Is(Service::Http),
            None => Detect::NeedMore,
            Some(false) => Detect::Unknown,
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
        assert_eq!(detect(Dir::Orig, b"GETX"), Detect::Unknown);
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
}
