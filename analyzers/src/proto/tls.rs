//! TLS handshakes: one [`TlsRecord`] per connection, Zeek's `ssl.log` fields plus the JA3, JA3S
//! and JA4 fingerprints and, for TLS 1.2 and older, the server's certificate chain.
//!
//! Records are framed here (a 5-byte header is all there is to it) and every length is checked
//! against its bound before anything waits for or keeps the bytes it announces; the handshake
//! messages themselves are parsed by rusticata's `tls-parser` and the certificates by
//! `x509-parser`. Handshake messages are reassembled across records (a Certificate message
//! often spans several), records across `data` calls.
//!
//! The record is emitted when the handshake is over (both sides sent ChangeCipherSpec or
//! application data; in TLS 1.3, the first encrypted record after the ServerHello), when the
//! connection ends, at a gap, or on an alert; the parser is then done.
//!
//! A client may open with an SSL 2.0 CLIENT-HELLO (RFC 6101 appendix E.1; old clients offering
//! SSL 3.0 or TLS that way, as Skype's did). Its offered version is recorded, with
//! `client_sslv2` and no JA3, JA4 or server name (it has neither extensions nor the fields
//! JA3 hashes; tshark gives none either). The server then answers in SSL 3.0/TLS records,
//! parsed as usual (the client's later records too, but client bytes that are not TLS
//! records only end the reading of the client's side: the server's answer still tells the
//! version), or with an SSL 2.0 SERVER-HELLO: version `SSLv2`, its certificate, and the cipher
//! the client's CLIENT-MASTER-KEY chooses; the rest is encrypted and the record is emitted.
//!
//! Weirds (source "TLS"): `tls_bad_record` (bytes that are not a TLS record, or a malformed
//! SSL 2.0 message), `tls_record_too_long` (a record over [`MAX_RECORD_LEN`]),
//! `tls_handshake_too_long` (a handshake message over [`MAX_HANDSHAKE_LEN`]),
//! `tls_bad_handshake` (a ClientHello or ServerHello that does not parse) and
//! `tls_bad_certificate` (a certificate that does not parse; the record is kept).

use super::{Dir, Parser, Record, Weird};
use md5::Md5;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use tls_parser::{TlsCipherKx, TlsCipherSuite, TlsExtension, TlsMessage, TlsMessageHandshake};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// The longest record body accepted: 2^14 bytes of plaintext plus the 2048 bytes of expansion
/// RFC 5246 allows a protected record.
pub const MAX_RECORD_LEN: usize = (1 << 14) + 2048;

/// The longest handshake message accepted (a long certificate chain is well under it).
pub const MAX_HANDSHAKE_LEN: usize = 256 * 1024;

/// Record content types (RFC 8446 section 5.1, RFC 6520).
const CT_CHANGE_CIPHER_SPEC: u8 = 20;
const CT_ALERT: u8 = 21;
const CT_HANDSHAKE: u8 = 22;
const CT_APPLICATION_DATA: u8 = 23;
const CT_HEARTBEAT: u8 = 24;

/// Handshake message types the parser reads.
const HS_CLIENT_HELLO: u8 = 1;
const HS_SERVER_HELLO: u8 = 2;
const HS_CERTIFICATE: u8 = 11;

/// SSL 2.0 message types (RFC 6101 appendix E, the SSL 2.0 specification).
const V2_ERROR: u8 = 0;
const V2_CLIENT_HELLO: u8 = 1;
const V2_CLIENT_MASTER_KEY: u8 = 2;
const V2_SERVER_HELLO: u8 = 4;

/// The SSL 2.0 version number.
const SSL2_VERSION: u16 = 0x0002;

/// Extension types the parser reads.
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;

/// The `random` of a ServerHello that is really a HelloRetryRequest (RFC 8446 section 4.1.3).
const HELLO_RETRY_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// One TLS handshake, as Zeek's `ssl.log` has it (fields not seen are omitted).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TlsRecord {
    /// Capture time of the first handshake message (normally the ClientHello), in nanoseconds
    /// since the epoch: the caller's `ts`.
    #[serde(skip)]
    pub ts_ns: u64,
    /// The negotiated version: "SSLv3", "TLSv10", "TLSv11", "TLSv12", "TLSv13" (from the
    /// ServerHello's supported_versions extension when present, else its version field), or
    /// "SSLv2" for an SSL 2.0 SERVER-HELLO. After an SSL 2.0 CLIENT-HELLO that no server hello
    /// answered, the version the client offered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The IANA name of the cipher suite the server chose (`unknown-N` for one not in the
    /// table).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
    /// The key-exchange group: the server's key_share (TLS 1.3) or the named curve of an ECDHE
    /// ServerKeyExchange (TLS 1.2 and older).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curve: Option<String>,
    /// The host name of the ClientHello's server_name extension (SNI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Whether the session was resumed: TLS 1.2 and older, the server echoed the client's
    /// session id or went from ServerHello to ChangeCipherSpec without a Certificate; TLS 1.3,
    /// the server accepted a pre-shared key.
    pub resumed: bool,
    /// The ALPN protocol the server chose.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_protocol: Option<String>,
    /// The ALPN protocols the client offered, in its order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub client_alpn: Vec<String>,
    /// Whether the handshake completed: ChangeCipherSpec or application data from both sides,
    /// or, in TLS 1.3, application data after the ServerHello.
    pub established: bool,
    /// JA3 of the ClientHello (MD5, lower-case hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ja3: Option<String>,
    /// JA3S of the ServerHello (MD5, lower-case hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ja3s: Option<String>,
    /// FoxIO's JA4 of the ClientHello.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ja4: Option<String>,
    /// The client opened with an SSL 2.0 CLIENT-HELLO (omitted when false).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub client_sslv2: bool,
    /// The leaf certificate's subject (RFC 4514 text), TLS 1.2 and older.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The leaf certificate's issuer (RFC 4514 text), TLS 1.2 and older.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The certificates the server sent, leaf first, as far as they parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_chain: Option<Vec<CertInfo>>,
}

/// One certificate of the server's chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// Subject, RFC 4514 text.
    pub subject: String,
    /// Issuer, RFC 4514 text.
    pub issuer: String,
    /// Serial number, upper-case hex without leading zero bytes.
    pub serial: String,
    /// Start of validity, seconds since the epoch.
    pub not_valid_before: i64,
    /// End of validity, seconds since the epoch.
    pub not_valid_after: i64,
    /// DNS names of the subjectAltName extension.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub san_dns: Vec<String>,
    /// IP addresses of the subjectAltName extension.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub san_ip: Vec<String>,
}

/// The TLS parser of one connection.
#[derive(Debug, Default)]
pub struct TlsParser {
    rec: TlsRecord,
    /// A handshake message was seen (there is something to emit).
    seen: bool,
    /// Per direction (`Orig`, `Resp`): bytes of an incomplete record.
    recbuf: [Vec<u8>; 2],
    /// Per direction: bytes of an incomplete handshake message.
    hsbuf: [Vec<u8>; 2],
    /// Per direction: the format of the first message is decided (SSL 2.0 or TLS records).
    started: [bool; 2],
    /// Per direction: its next records are SSL 2.0 records (2- or 3-byte headers).
    sslv2: [bool; 2],
    /// Per direction: its bytes were not TLS records but the other side may still tell the
    /// handshake (see `bad_bytes`), so this side is no longer read.
    ignored: [bool; 2],
    /// Per direction: ChangeCipherSpec seen, so its handshake records are encrypted.
    encrypted: [bool; 2],
    /// Per direction: ChangeCipherSpec or application data seen.
    finished: [bool; 2],
    client_hello: bool,
    client_session_id: Vec<u8>,
    server_hello: bool,
    server_session_id: Vec<u8>,
    /// The negotiated version number.
    version: Option<u16>,
    /// The chosen cipher suite.
    cipher: Option<u16>,
    /// The server sent a message of a full handshake after its ServerHello (Certificate,
    /// ServerKeyExchange, CertificateRequest, ServerHelloDone).
    server_full: bool,
    /// The server sent ChangeCipherSpec right after its ServerHello (an abbreviated
    /// handshake).
    abbreviated: bool,
    /// TLS 1.3: the server accepted a pre-shared key.
    psk_accepted: bool,
    /// TLS 1.3: the server sent a HelloRetryRequest.
    hello_retry: bool,
    done: bool,
}

impl TlsParser {
    /// A parser for a new connection.
    pub fn new() -> TlsParser {
        TlsParser::default()
    }

    fn is_tls13(&self) -> bool {
        matches!(self.version, Some(v) if v == 0x0304 || (v & 0xff00) == 0x7f00)
    }

    /// Emits what is known (if anything) and stops.
    fn finish(&mut self, out: &mut Vec<Record>) {
        if self.done {
            return;
        }
        self.done = true;
        self.recbuf = Default::default();
        self.hsbuf = Default::default();
        if !self.seen {
            return;
        }
        if self.server_hello && !self.is_tls13() {
            self.rec.resumed = self.abbreviated
                || (!self.server_session_id.is_empty()
                    && self.server_session_id == self.client_session_id);
        } else if self.is_tls13() {
            self.rec.resumed = self.psk_accepted;
        }
        out.push(Record::Tls(std::mem::take(&mut self.rec)));
    }

    /// Bytes of `dir` that are not what was expected. When the other side may still tell the
    /// handshake, only this side is no longer read: the client's bytes after an SSL 2.0
    /// CLIENT-HELLO (the server's answer still tells the version), the server's before the
    /// client's hello (a server greeting in plaintext first, as SMTP on port 465 may). Else
    /// the parser gives up.
    fn bad_bytes(&mut self, dir: Dir, name: &str, addl: String, out: &mut Vec<Record>) {
        let lenient = match dir {
            Dir::Orig => self.rec.client_sslv2,
            Dir::Resp => !self.client_hello,
        };
        let d = idx(dir);
        if lenient && !self.ignored[1 - d] {
            out.push(weird(dir, name, addl));
            self.ignored[d] = true;
            self.recbuf[d] = Vec::new();
            self.hsbuf[d] = Vec::new();
        } else {
            self.give_up(dir, name, addl, out);
        }
    }

    /// Whether the first message of `dir` is in SSL 2.0 format (`None`: too few bytes to
    /// tell). The client's is when it is a CLIENT-HELLO with a 2-byte header (top bit set) or
    /// a 3-byte one (top two bits clear, and not the start of a TLS record); the server's when
    /// the client's was and it is a SERVER-HELLO or an ERROR with a 2-byte header.
    fn first_is_sslv2(&self, dir: Dir, b: &[u8]) -> Option<bool> {
        let first = *b.first()?;
        if dir == Dir::Resp && !self.rec.client_sslv2 {
            return Some(false);
        }
        if first & 0x80 != 0 {
            let mtype = *b.get(2)?;
            return Some(match dir {
                Dir::Orig => mtype == V2_CLIENT_HELLO,
                Dir::Resp => mtype == V2_SERVER_HELLO || mtype == V2_ERROR,
            });
        }
        if dir == Dir::Resp {
            return Some(false);
        }
        let tls = (CT_CHANGE_CIPHER_SPEC..=CT_HEARTBEAT).contains(&first) && *b.get(1)? == 3;
        if tls {
            return Some(false);
        }
        Some(first & 0x40 == 0 && *b.get(3)? == V2_CLIENT_HELLO)
    }

    /// One SSL 2.0 message of `dir` (its record's body, padding removed; never empty).
    fn sslv2_message(&mut self, dir: Dir, msg: &[u8], ts_ns: u64, out: &mut Vec<Record>) {
        match dir {
            Dir::Orig if !self.client_hello => {
                let Some(ch) = sslv2_client_hello(msg) else {
                    self.give_up(
                        dir,
                        "tls_bad_record",
                        format!("malformed SSLv2 CLIENT-HELLO of {} bytes", msg.len()),
                        out,
                    );
                    return;
                };
                self.note_first(ts_ns);
                self.client_hello = true;
                self.client_session_id = ch.session_id.to_vec();
                self.rec.client_sslv2 = true;
                self.rec.version = Some(version_name(ch.version));
                // The server's answer decides the format of the client's next records; TLS
                // unless it answers in SSL 2.0.
                self.sslv2[0] = false;
            }
            Dir::Orig => {
                // After an SSL 2.0 SERVER-HELLO: the CLIENT-MASTER-KEY names the cipher; what
                // follows is encrypted.
                if msg[0] == V2_CLIENT_MASTER_KEY {
                    match sslv2_client_master_key(msg) {
                        Some(kind) => self.rec.cipher = Some(sslv2_cipher_name(kind)),
                        None => {
                            self.give_up(
                                dir,
                                "tls_bad_record",
                                format!("malformed SSLv2 CLIENT-MASTER-KEY of {} bytes", msg.len()),
                                out,
                            );
                            return;
                        }
                    }
                }
                self.finish(out);
            }
            Dir::Resp if self.server_hello => {} // encrypted (SERVER-VERIFY, ...)
            Dir::Resp if msg[0] == V2_SERVER_HELLO => {
                let Some(sh) = sslv2_server_hello(msg) else {
                    self.give_up(
                        dir,
                        "tls_bad_record",
                        format!("malformed SSLv2 SERVER-HELLO of {} bytes", msg.len()),
                        out,
                    );
                    return;
                };
                self.note_first(ts_ns);
                self.server_hello = true;
                self.version = Some(sh.version);
                self.rec.version = Some(version_name(sh.version));
                if sh.session_id_hit {
                    // A resumed session: the rest is encrypted.
                    self.abbreviated = true;
                    self.finish(out);
                    return;
                }
                self.server_full = true;
                // Certificate type 1 is X.509.
                if sh.certificate_type == 1 && !sh.certificate.is_empty() {
                    self.certificates(dir, std::iter::once(sh.certificate), out);
                }
                self.sslv2[0] = true;
            }
            Dir::Resp => self.finish(out), // an ERROR (no cipher in common, ...)
        }
    }

    /// Emits a weird, then what is known, and stops.
    fn give_up(&mut self, dir: Dir, name: &str, addl: String, out: &mut Vec<Record>) {
        out.push(weird(dir, name, addl));
        self.finish(out);
    }

    /// One complete record of `dir`.
    fn record(&mut self, dir: Dir, ctype: u8, body: &[u8], ts_ns: u64, out: &mut Vec<Record>) {
        let d = idx(dir);
        match ctype {
            CT_CHANGE_CIPHER_SPEC => {
                if self.is_tls13() || self.hello_retry {
                    // TLS 1.3's middlebox-compatibility ChangeCipherSpec (RFC 8446 appendix
                    // D.4) changes nothing: a second ClientHello or the ServerHello after a
                    // HelloRetryRequest may still follow in plaintext.
                    return;
                }
                self.encrypted[d] = true;
                self.finished[d] = true;
                self.hsbuf[d] = Vec::new();
                if dir == Dir::Resp && self.server_hello && !self.server_full && !self.is_tls13() {
                    self.abbreviated = true;
                }
                self.check_established(out);
            }
            CT_ALERT => {
                // A plaintext alert is level and description, two bytes (several may share a
                // record); an encrypted one is unreadable and ends the handshake.
                if self.encrypted[d] || (self.is_tls13() && dir == Dir::Resp) {
                    self.finish(out);
                } else if body.is_empty() || !body.len().is_multiple_of(2) {
                    self.give_up(
                        dir,
                        "tls_bad_record",
                        format!("alert record of {} bytes", body.len()),
                        out,
                    );
                } else if body.chunks(2).any(|a| a[0] != 1 || a[1] == 0) {
                    // A fatal alert, or close_notify: the handshake is over.
                    self.finish(out);
                }
                // A warning (unrecognized_name, ...) does not stop the handshake.
            }
            CT_HANDSHAKE => {
                if self.encrypted[d] {
                    // Finished (or a renegotiation) under the new keys: unreadable.
                    return;
                }
                self.hsbuf[d].extend_from_slice(body);
                self.handshake_messages(dir, ts_ns, out);
            }
            CT_APPLICATION_DATA => {
                self.finished[d] = true;
                if self.server_hello && self.is_tls13() {
                    self.rec.established = true;
                    self.finish(out);
                } else {
                    self.check_established(out);
                }
            }
            _ => {} // heartbeat: nothing to log
        }
    }

    fn check_established(&mut self, out: &mut Vec<Record>) {
        if self.finished[0] && self.finished[1] {
            self.rec.established = true;
            self.finish(out);
        }
    }

    /// Parses the complete handshake messages buffered for `dir`.
    fn handshake_messages(&mut self, dir: Dir, ts_ns: u64, out: &mut Vec<Record>) {
        let d = idx(dir);
        let buf = std::mem::take(&mut self.hsbuf[d]);
        let mut pos = 0;
        while !self.done && buf.len() - pos >= 4 {
            let h = &buf[pos..];
            let len = (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
            if len > MAX_HANDSHAKE_LEN {
                self.give_up(
                    dir,
                    "tls_handshake_too_long",
                    format!("handshake message type {} of {} bytes", h[0], len),
                    out,
                );
                return;
            }
            if h.len() < 4 + len {
                break;
            }
            self.handshake_message(dir, &h[..4 + len], ts_ns, out);
            pos += 4 + len;
        }
        if !self.done {
            let mut rest = buf;
            rest.drain(..pos);
            self.hsbuf[d] = rest;
        }
    }

    /// One complete handshake message (header included).
    fn handshake_message(&mut self, dir: Dir, msg: &[u8], ts_ns: u64, out: &mut Vec<Record>) {
        let mtype = msg[0];
        let parsed = match tls_parser::parse_tls_message_handshake(msg) {
            Ok((_, TlsMessage::Handshake(m))) => Some(m),
            _ => None,
        };
        let Some(m) = parsed else {
            if mtype == HS_SERVER_HELLO && dir == Dir::Resp {
                if let Some((version, cipher, ext)) = draft13_server_hello(&msg[4..]) {
                    self.note_first(ts_ns);
                    self.server_hello = true;
                    self.server_hello_fields(version, cipher, ext);
                    return;
                }
            }
            if mtype == HS_CLIENT_HELLO && dir == Dir::Orig && !self.client_hello {
                // A ClientHello was sent (tshark lists it, without JA3): a record, if empty.
                self.note_first(ts_ns);
            }
            match mtype {
                HS_CLIENT_HELLO | HS_SERVER_HELLO => self.give_up(
                    dir,
                    "tls_bad_handshake",
                    format!("malformed handshake message type {mtype}"),
                    out,
                ),
                HS_CERTIFICATE if dir == Dir::Resp && !self.is_tls13() => {
                    self.server_full = true;
                    out.push(weird(
                        dir,
                        "tls_bad_certificate",
                        "malformed Certificate message".into(),
                    ));
                }
                _ => {} // a type tls-parser does not know: not needed for the log
            }
            return;
        };
        self.note_first(ts_ns);
        match (dir, m) {
            // After a HelloRetryRequest the client says hello again: the first one is the
            // fingerprint (as tshark gives for the first ClientHello of a stream).
            (Dir::Orig, TlsMessageHandshake::ClientHello(ch)) if !self.client_hello => {
                self.client_hello = true;
                self.client_session_id = ch.session_id.unwrap_or_default().to_vec();
                let ciphers: Vec<u16> = ch.ciphers.iter().map(|c| c.0).collect();
                self.client_hello_fields(ch.version.0, &ciphers, ch.ext);
            }
            (Dir::Resp, TlsMessageHandshake::ServerHello(sh)) => {
                if sh.random == HELLO_RETRY_RANDOM {
                    self.hello_retry = true;
                    return; // a HelloRetryRequest: the real ServerHello follows
                }
                self.server_hello = true;
                self.server_session_id = sh.session_id.unwrap_or_default().to_vec();
                self.server_hello_fields(sh.version.0, sh.cipher.0, sh.ext.unwrap_or_default());
            }
            (Dir::Resp, TlsMessageHandshake::ServerHelloV13Draft18(sh)) => {
                self.server_hello = true;
                self.server_hello_fields(sh.version.0, sh.cipher.0, sh.ext.unwrap_or_default());
            }
            (Dir::Resp, TlsMessageHandshake::Certificate(c)) if !self.is_tls13() => {
                self.server_full = true;
                self.certificates(dir, c.cert_chain.iter().map(|c| c.data), out);
            }
            (Dir::Resp, TlsMessageHandshake::ServerKeyExchange(ske)) => {
                self.server_full = true;
                self.server_key_exchange(ske.parameters);
            }
            (
                Dir::Resp,
                TlsMessageHandshake::CertificateRequest(_) | TlsMessageHandshake::ServerDone(_),
            ) => self.server_full = true,
            _ => {}
        }
    }

    /// The first handshake message gives the record its time.
    fn note_first(&mut self, ts_ns: u64) {
        if !self.seen {
            self.seen = true;
            self.rec.ts_ns = ts_ns;
        }
    }

    fn client_hello_fields(&mut self, version: u16, ciphers: &[u16], ext: Option<&[u8]>) {
        let mut h = Hello {
            version,
            ciphers: ciphers.to_vec(),
            ..Hello::default()
        };
        for raw in extensions(ext.unwrap_or_default()) {
            h.extensions.push(raw.ty);
            let Ok((_, e)) = tls_parser::parse_tls_client_hello_extension(raw.whole) else {
                continue;
            };
            match e {
                TlsExtension::SNI(names) => {
                    h.sni = true;
                    if let Some((_, name)) = names.iter().find(|(t, _)| t.0 == 0) {
                        self.rec.server_name = Some(String::from_utf8_lossy(name).into_owned());
                    }
                }
                TlsExtension::ALPN(protos) => {
                    h.alpn = protos.iter().map(|p| p.to_vec()).collect();
                }
                TlsExtension::EllipticCurves(groups) => {
                    h.groups = groups.iter().map(|g| g.0).collect();
                }
                TlsExtension::EcPointFormats(f) => h.point_formats = f.to_vec(),
                TlsExtension::SignatureAlgorithms(s) => h.sig_algs = s,
                TlsExtension::SupportedVersions(v) => {
                    h.supported_versions = v.iter().map(|v| v.0).collect();
                }
                _ => {}
            }
        }
        h.sni |= h.extensions.contains(&EXT_SERVER_NAME);
        self.rec.client_alpn = h
            .alpn
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        self.rec.ja3 = Some(md5_hex(&ja3_string(&h)));
        self.rec.ja4 = Some(ja4(&h));
    }

    fn server_hello_fields(&mut self, legacy_version: u16, cipher: u16, ext: &[u8]) {
        let mut version = legacy_version;
        let mut types = Vec::new();
        for raw in extensions(ext) {
            types.push(raw.ty);
            let Ok((_, e)) = tls_parser::parse_tls_server_hello_extension(raw.whole) else {
                continue;
            };
            match e {
                TlsExtension::SupportedVersions(v) if v.len() == 1 => version = v[0].0,
                TlsExtension::ALPN(p) => {
                    self.rec.next_protocol =
                        p.first().map(|p| String::from_utf8_lossy(p).into_owned());
                }
                TlsExtension::KeyShare(ks) if ks.len() >= 2 => {
                    self.rec.curve = Some(group_name(u16::from_be_bytes([ks[0], ks[1]])));
                }
                TlsExtension::PreSharedKey(_) => self.psk_accepted = true,
                _ => {}
            }
        }
        self.version = Some(version);
        self.cipher = Some(cipher);
        self.rec.version = Some(version_name(version));
        self.rec.cipher = Some(match TlsCipherSuite::from_id(cipher) {
            Some(c) => c.name.to_string(),
            None => format!("unknown-{cipher}"),
        });
        let exts: Vec<String> = types
            .iter()
            .filter(|t| !is_grease(**t))
            .map(|t| t.to_string())
            .collect();
        let ja3s = format!("{},{},{}", legacy_version, cipher, exts.join("-"));
        self.rec.ja3s = Some(md5_hex(&ja3s));
    }

    /// The named curve of an ECDHE ServerKeyExchange (RFC 8422 section 5.4:
    /// curve_type named_curve(3), then the group).
    fn server_key_exchange(&mut self, params: &[u8]) {
        let ecdhe = self
            .cipher
            .and_then(TlsCipherSuite::from_id)
            .is_some_and(|c| matches!(c.kx, TlsCipherKx::Ecdhe));
        if ecdhe && params.len() >= 3 && params[0] == 3 {
            self.rec.curve = Some(group_name(u16::from_be_bytes([params[1], params[2]])));
        }
    }

    fn certificates<'a>(
        &mut self,
        dir: Dir,
        certs: impl Iterator<Item = &'a [u8]>,
        out: &mut Vec<Record>,
    ) {
        let mut chain = Vec::new();
        for (i, der) in certs.enumerate() {
            match X509Certificate::from_der(der) {
                Ok((_, cert)) => {
                    if i == 0 {
                        self.rec.subject = Some(cert.subject().to_string());
                        self.rec.issuer = Some(cert.issuer().to_string());
                    }
                    chain.push(cert_info(&cert));
                }
                Err(e) => out.push(weird(
                    dir,
                    "tls_bad_certificate",
                    format!("certificate {i} of the chain: {e}"),
                )),
            }
        }
        if !chain.is_empty() {
            self.rec.cert_chain = Some(chain);
        }
    }
}

impl Parser for TlsParser {
    fn data(&mut self, dir: Dir, bytes: &[u8], ts_ns: u64, out: &mut Vec<Record>) {
        if self.done || bytes.is_empty() || self.ignored[idx(dir)] {
            return;
        }
        let d = idx(dir);
        let mut buf = std::mem::take(&mut self.recbuf[d]);
        buf.extend_from_slice(bytes);
        let mut pos = 0;
        while !self.done {
            let b = &buf[pos..];
            if !self.started[d] {
                match self.first_is_sslv2(dir, b) {
                    None => break,
                    Some(v2) => {
                        self.started[d] = true;
                        self.sslv2[d] = v2;
                    }
                }
            }
            if self.sslv2[d] {
                match sslv2_record(b) {
                    V2Record::Incomplete => break,
                    V2Record::Bad(addl) => {
                        self.bad_bytes(dir, "tls_bad_record", addl, out);
                        return;
                    }
                    V2Record::Complete { body, len } => {
                        self.sslv2_message(dir, &b[body], ts_ns, out);
                        pos += len;
                        if self.ignored[d] {
                            return;
                        }
                        continue;
                    }
                }
            }
            let Ok((_, hdr)) = tls_parser::parse_tls_record_header(b) else {
                break; // fewer than 5 bytes
            };
            let ctype = hdr.record_type.0;
            if !(CT_CHANGE_CIPHER_SPEC..=CT_HEARTBEAT).contains(&ctype) || hdr.version.0 >> 8 != 3 {
                let n = b.len().min(8);
                self.bad_bytes(
                    dir,
                    "tls_bad_record",
                    format!("not a TLS record: {}", hex::encode(&b[..n])),
                    out,
                );
                return;
            }
            let len = usize::from(hdr.len);
            if len > MAX_RECORD_LEN {
                self.bad_bytes(
                    dir,
                    "tls_record_too_long",
                    format!("record type {ctype} of {len} bytes"),
                    out,
                );
                return;
            }
            if b.len() < 5 + len {
                break;
            }
            self.record(dir, ctype, &b[5..5 + len], ts_ns, out);
            pos += 5 + len;
        }
        if !self.done {
            buf.drain(..pos);
            self.recbuf[d] = buf;
        }
    }

    fn gap(&mut self, _dir: Dir, _len: u64, _ts_ns: u64, out: &mut Vec<Record>) {
        self.finish(out);
    }

    fn end(&mut self, _ts_ns: u64, out: &mut Vec<Record>) {
        self.finish(out);
    }

    fn done(&self) -> bool {
        self.done
    }
}

fn idx(dir: Dir) -> usize {
    match dir {
        Dir::Orig => 0,
        Dir::Resp => 1,
    }
}

fn weird(dir: Dir, name: &str, addl: String) -> Record {
    Record::Weird(Weird {
        name: name.to_string(),
        addl,
        peer: dir,
        source: "TLS",
    })
}

/// How an SSL 2.0 record at the start of some bytes stands.
enum V2Record {
    /// More bytes are needed.
    Incomplete,
    /// Not a well-formed record: the weird's details.
    Bad(String),
    /// A complete record: where its message is (padding excluded), its whole length.
    Complete {
        body: std::ops::Range<usize>,
        len: usize,
    },
}

/// Frames an SSL 2.0 record: a 2-byte header (top bit set, 15 bits of length) or a 3-byte one
/// (14 bits of length, then the number of padding bytes ending the record). The length is at
/// most 32767 by construction; the message must hold at least its type byte.
fn sslv2_record(b: &[u8]) -> V2Record {
    let (hdr, len, pad) = match b {
        [b0, b1, ..] if b0 & 0x80 != 0 => (2, (usize::from(b0 & 0x7f) << 8) | usize::from(*b1), 0),
        [b0, b1, b2, ..] => (
            3,
            (usize::from(b0 & 0x3f) << 8) | usize::from(*b1),
            usize::from(*b2),
        ),
        _ => return V2Record::Incomplete,
    };
    if len <= pad {
        return V2Record::Bad(format!(
            "SSLv2 record of {len} bytes with {pad} bytes of padding"
        ));
    }
    if b.len() < hdr + len {
        return V2Record::Incomplete;
    }
    V2Record::Complete {
        body: hdr..hdr + len - pad,
        len: hdr + len,
    }
}

/// The big-endian u16 at `at` of a slice known to be long enough.
fn be16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([b[at], b[at + 1]]))
}

/// The fields of an SSL 2.0 CLIENT-HELLO the record uses.
struct V2ClientHello<'a> {
    version: u16,
    session_id: &'a [u8],
}

/// An SSL 2.0 CLIENT-HELLO: type, version, the lengths of the cipher specs (3 bytes each, at
/// least one), of the session id (0 or 16) and of the challenge (16 to 32), then those, and
/// nothing more. The version is SSL 2.0's or a 3.x one (a client offering SSL 3.0 or TLS this
/// way, RFC 6101 appendix E.1).
fn sslv2_client_hello(m: &[u8]) -> Option<V2ClientHello<'_>> {
    if m.len() < 9 || m[0] != V2_CLIENT_HELLO {
        return None;
    }
    let version = u16::from_be_bytes([m[1], m[2]]);
    let (specs, sid, challenge) = (be16(m, 3), be16(m, 5), be16(m, 7));
    let ok = (version == SSL2_VERSION || version >> 8 == 3)
        && specs > 0
        && specs % 3 == 0
        && (sid == 0 || sid == 16)
        && (16..=32).contains(&challenge)
        && 9 + specs + sid + challenge == m.len();
    ok.then(|| V2ClientHello {
        version,
        session_id: &m[9 + specs..9 + specs + sid],
    })
}

/// The fields of an SSL 2.0 SERVER-HELLO the record uses.
struct V2ServerHello<'a> {
    session_id_hit: bool,
    certificate_type: u8,
    version: u16,
    certificate: &'a [u8],
}

/// An SSL 2.0 SERVER-HELLO: type, session-id-hit, certificate type, version, the lengths of
/// the certificate, of the cipher specs (3 bytes each) and of the connection id (16 to 32),
/// then those, and nothing more.
fn sslv2_server_hello(m: &[u8]) -> Option<V2ServerHello<'_>> {
    if m.len() < 11 || m[0] != V2_SERVER_HELLO {
        return None;
    }
    let (cert, specs, conn_id) = (be16(m, 5), be16(m, 7), be16(m, 9));
    let ok =
        specs % 3 == 0 && (16..=32).contains(&conn_id) && 11 + cert + specs + conn_id == m.len();
    ok.then(|| V2ServerHello {
        session_id_hit: m[1] != 0,
        certificate_type: m[2],
        version: u16::from_be_bytes([m[3], m[4]]),
        certificate: &m[11..11 + cert],
    })
}

/// The cipher kind an SSL 2.0 CLIENT-MASTER-KEY chooses: type, cipher kind (3 bytes), the
/// lengths of the clear key, of the encrypted key and of the key argument, then those, and
/// nothing more.
fn sslv2_client_master_key(m: &[u8]) -> Option<u32> {
    if m.len() < 10 || m[0] != V2_CLIENT_MASTER_KEY {
        return None;
    }
    let kind = u32::from_be_bytes([0, m[1], m[2], m[3]]);
    (10 + be16(m, 4) + be16(m, 6) + be16(m, 8) == m.len()).then_some(kind)
}

/// Zeek's name of an SSL 2.0 cipher kind (`unknown-N` for one not in the specification).
fn sslv2_cipher_name(kind: u32) -> String {
    let name = match kind {
        0x01_0080 => "SSLv20_CK_RC4_128_WITH_MD5",
        0x02_0080 => "SSLv20_CK_RC4_128_EXPORT40_WITH_MD5",
        0x03_0080 => "SSLv20_CK_RC2_128_CBC_WITH_MD5",
        0x04_0080 => "SSLv20_CK_RC2_128_CBC_EXPORT40_WITH_MD5",
        0x05_0080 => "SSLv20_CK_IDEA_128_CBC_WITH_MD5",
        0x06_0040 => "SSLv20_CK_DES_64_CBC_WITH_MD5",
        0x07_00c0 => "SSLv20_CK_DES_192_EDE3_CBC_WITH_MD5",
        k => return format!("unknown-{k}"),
    };
    name.to_string()
}

/// A ServerHello of a TLS 1.3 draft (version 0x7fNN) that `tls-parser` does not know: version,
/// random, cipher suite, extensions, without session id or compression (draft-ietf-tls-tls13
/// before draft 22). Returns the version, the cipher and the extension block.
fn draft13_server_hello(body: &[u8]) -> Option<(u16, u16, &[u8])> {
    let version = u16::from_be_bytes([*body.first()?, *body.get(1)?]);
    if version >> 8 != 0x7f || body.len() < 38 {
        return None;
    }
    let cipher = u16::from_be_bytes([body[34], body[35]]);
    let ext_len = usize::from(u16::from_be_bytes([body[36], body[37]]));
    let ext = body.get(38..38 + ext_len)?;
    Some((version, cipher, ext))
}

/// One extension of a hello, as it is on the wire.
struct RawExt<'a> {
    ty: u16,
    /// Type, length and data.
    whole: &'a [u8],
}

/// The extensions of a hello's extension block, in order, up to the first one whose length
/// runs past the block.
fn extensions(mut block: &[u8]) -> impl Iterator<Item = RawExt<'_>> {
    std::iter::from_fn(move || {
        if block.len() < 4 {
            return None;
        }
        let ty = u16::from_be_bytes([block[0], block[1]]);
        let len = usize::from(u16::from_be_bytes([block[2], block[3]]));
        if block.len() < 4 + len {
            return None;
        }
        let (whole, rest) = block.split_at(4 + len);
        block = rest;
        Some(RawExt { ty, whole })
    })
}

/// What the client fingerprints are made of.
#[derive(Debug, Default)]
struct Hello {
    version: u16,
    ciphers: Vec<u16>,
    /// Extension types in wire order.
    extensions: Vec<u16>,
    groups: Vec<u16>,
    point_formats: Vec<u8>,
    sig_algs: Vec<u16>,
    alpn: Vec<Vec<u8>>,
    supported_versions: Vec<u16>,
    sni: bool,
}

/// GREASE values (RFC 8701): 0x?a?a with both bytes equal, as Wireshark tests them.
fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

fn join_dec<T: ToString>(v: impl Iterator<Item = T>) -> String {
    v.map(|x| x.to_string()).collect::<Vec<_>>().join("-")
}

/// The JA3 string: version, ciphers, extensions, groups, point formats, decimal, GREASE
/// left out; a hello without extensions still has all five fields (`769,47-53,,,`).
fn ja3_string(h: &Hello) -> String {
    format!(
        "{},{},{},{},{}",
        h.version,
        join_dec(h.ciphers.iter().filter(|c| !is_grease(**c))),
        join_dec(h.extensions.iter().filter(|c| !is_grease(**c))),
        join_dec(h.groups.iter().filter(|c| !is_grease(**c))),
        join_dec(h.point_formats.iter()),
    )
}

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// The first 12 hex digits of the SHA-256 of `s`, or twelve zeros when the list was empty.
fn sha12(s: &str, empty: bool) -> String {
    if empty {
        "000000000000".to_string()
    } else {
        hex::encode(Sha256::digest(s.as_bytes()))[..12].to_string()
    }
}

/// FoxIO's JA4 of a ClientHello over TCP.
fn ja4(h: &Hello) -> String {
    let version = h
        .supported_versions
        .iter()
        .copied()
        .filter(|v| !is_grease(*v))
        .max()
        .unwrap_or(h.version);
    let version = match version {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    };
    let mut ciphers: Vec<u16> = h
        .ciphers
        .iter()
        .copied()
        .filter(|c| !is_grease(*c))
        .collect();
    let exts: Vec<u16> = h
        .extensions
        .iter()
        .copied()
        .filter(|c| !is_grease(*c))
        .collect();
    let alpn = match h.alpn.first() {
        Some(p) if !p.is_empty() => {
            let (first, last) = (p[0], p[p.len() - 1]);
            if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
                format!("{}{}", first as char, last as char)
            } else {
                let x = hex::encode(p);
                let x = x.as_bytes();
                format!("{}{}", x[0] as char, x[x.len() - 1] as char)
            }
        }
        _ => "00".to_string(),
    };
    let a = format!(
        "t{}{}{:02}{:02}{}",
        version,
        if h.sni { 'd' } else { 'i' },
        ciphers.len().min(99),
        exts.len().min(99),
        alpn
    );
    ciphers.sort_unstable();
    let hex_list = |v: &[u16]| {
        v.iter()
            .map(|x| format!("{x:04x}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let b = sha12(&hex_list(&ciphers), ciphers.is_empty());
    let mut sorted: Vec<u16> = exts
        .into_iter()
        .filter(|e| *e != EXT_SERVER_NAME && *e != EXT_ALPN)
        .collect();
    sorted.sort_unstable();
    let mut c_in = hex_list(&sorted);
    let sigs: Vec<u16> = h
        .sig_algs
        .iter()
        .copied()
        .filter(|s| !is_grease(*s))
        .collect();
    if !sigs.is_empty() {
        c_in.push('_');
        c_in.push_str(&hex_list(&sigs));
    }
    let c = sha12(&c_in, sorted.is_empty());
    format!("{a}_{b}_{c}")
}

/// Zeek's name of a protocol version.
fn version_name(v: u16) -> String {
    match v {
        SSL2_VERSION => "SSLv2".into(),
        0x0300 => "SSLv3".into(),
        0x0301 => "TLSv10".into(),
        0x0302 => "TLSv11".into(),
        0x0303 => "TLSv12".into(),
        0x0304 => "TLSv13".into(),
        v if v >> 8 == 0x7f => format!("TLSv13-draft{}", v & 0xff),
        v => format!("unknown-{v}"),
    }
}

/// The IANA name of a supported group, as Zeek's `curve` gives it.
fn group_name(g: u16) -> String {
    let name = match g {
        1..=22 => {
            const OLD: [&str; 22] = [
                "sect163k1",
                "sect163r1",
                "sect163r2",
                "sect193r1",
                "sect193r2",
                "sect233k1",
                "sect233r1",
                "sect239k1",
                "sect283k1",
                "sect283r1",
                "sect409k1",
                "sect409r1",
                "sect571k1",
                "sect571r1",
                "secp160k1",
                "secp160r1",
                "secp160r2",
                "secp192k1",
                "secp192r1",
                "secp224k1",
                "secp224r1",
                "secp256k1",
            ];
            OLD[usize::from(g - 1)]
        }
        23 => "secp256r1",
        24 => "secp384r1",
        25 => "secp521r1",
        26 => "brainpoolP256r1",
        27 => "brainpoolP384r1",
        28 => "brainpoolP512r1",
        29 => "x25519",
        30 => "x448",
        256 => "ffdhe2048",
        257 => "ffdhe3072",
        258 => "ffdhe4096",
        259 => "ffdhe6144",
        260 => "ffdhe8192",
        0x11ec => "X25519MLKEM768",
        0x6399 => "X25519Kyber768Draft00",
        _ => return format!("unknown-{g}"),
    };
    name.to_string()
}

fn cert_info(cert: &X509Certificate<'_>) -> CertInfo {
    let raw = cert.raw_serial();
    let first = raw
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    let mut serial = String::new();
    for b in &raw[first..] {
        let _ = write!(serial, "{b:02X}");
    }
    let mut san_dns = Vec::new();
    let mut san_ip = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => san_dns.push(n.to_string()),
                GeneralName::IPAddress(a) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*a) {
                        san_ip.push(IpAddr::V4(Ipv4Addr::from(v4)).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*a) {
                        san_ip.push(IpAddr::V6(Ipv6Addr::from(v6)).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    let validity = cert.validity();
    CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial,
        not_valid_before: validity.not_before.timestamp(),
        not_valid_after: validity.not_after.timestamp(),
        san_dns,
        san_ip,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A stream of a corpus capture, as `tests/fixtures/{tls,ssh}/*.txt` keep it: `# key=value`
    /// lines (tshark's fields), then `O hex` / `R hex` chunks in capture order.
    pub(crate) struct Fixture {
        pub(crate) meta: Vec<(String, String)>,
        pub(crate) chunks: Vec<(Dir, Vec<u8>)>,
    }

    impl Fixture {
        pub(crate) fn parse(text: &str) -> Fixture {
            let mut f = Fixture {
                meta: Vec::new(),
                chunks: Vec::new(),
            };
            for line in text.lines() {
                if let Some(kv) = line.strip_prefix("# ") {
                    // `capture=F stream=N`, else one `key=value` (the value may hold spaces).
                    let parts: Vec<&str> = if kv.starts_with("capture=") {
                        kv.split(' ').collect()
                    } else {
                        vec![kv]
                    };
                    for part in parts {
                        if let Some((k, v)) = part.split_once('=') {
                            f.meta.push((k.to_string(), v.to_string()));
                        }
                    }
                } else if let Some(h) = line.strip_prefix("O ") {
                    f.chunks.push((Dir::Orig, hex::decode(h).expect("hex")));
                } else if let Some(h) = line.strip_prefix("R ") {
                    f.chunks.push((Dir::Resp, hex::decode(h).expect("hex")));
                }
            }
            f
        }

        /// Field `i` of the `|`-separated meta value `key` ("" when absent).
        pub(crate) fn field(&self, key: &str, i: usize) -> &str {
            self.meta
                .iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.split('|').nth(i))
                .unwrap_or("")
        }
    }

    // Streams of Zeek's test traces (BSD-3-Clause), cut after the handshake; the `# ch=` and
    // `# sh=` lines hold tshark 4.0.17's SNI, JA3, JA3S, cipher and version of them.
    const MISSING_INTERMEDIATE_0: &str =
        include_str!("../../tests/fixtures/tls/zeek__tls__missing-intermediate.pcap__0.txt");
    const MISSING_INTERMEDIATE_1: &str =
        include_str!("../../tests/fixtures/tls/zeek__tls__missing-intermediate.pcap__1.txt");
    const TLS13_PSK: &str =
        include_str!("../../tests/fixtures/tls/zeek__tls__tls13_psk_succesfull.pcap__0.txt");
    const TLS13_ECH: &str =
        include_str!("../../tests/fixtures/tls/zeek__tls__tls13-ech.pcap__1.txt");
    const TLS12_KEYLOG: &str =
        include_str!("../../tests/fixtures/tls/zeek__tls__tls-1.2-stream-keylog.pcap__0.txt");
    const SSLV2: &str = include_str!("../../tests/fixtures/tls/zeek__tls__ssl-v2.pcap__0.txt");
    // Streams of nDPI's test traces (LGPL-3.0) opening with an SSL 2.0 CLIENT-HELLO.
    const SSLV2_SKYPE: &str = include_str!("../../tests/fixtures/tls/ndpi__skype.pcap__28.txt");
    const SSLV2_GOOGLE: &str =
        include_str!("../../tests/fixtures/tls/ndpi__google_ssl.pcap__0.txt");

    const HANDSHAKES: [&str; 5] = [
        MISSING_INTERMEDIATE_0,
        MISSING_INTERMEDIATE_1,
        TLS13_PSK,
        TLS13_ECH,
        TLS12_KEYLOG,
    ];

    fn feed(p: &mut TlsParser, chunks: &[(Dir, Vec<u8>)], out: &mut Vec<Record>) {
        for (d, b) in chunks {
            p.data(*d, b, 7, out);
        }
    }

    fn run(chunks: &[(Dir, Vec<u8>)]) -> Vec<Record> {
        let mut p = TlsParser::new();
        let mut out = Vec::new();
        feed(&mut p, chunks, &mut out);
        p.end(9, &mut out);
        out
    }

    fn tls_records(out: &[Record]) -> Vec<&TlsRecord> {
        out.iter()
            .filter_map(|r| match r {
                Record::Tls(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    fn weirds(out: &[Record]) -> Vec<&str> {
        out.iter()
            .filter_map(|r| match r {
                Record::Weird(w) => Some(w.name.as_str()),
                _ => None,
            })
            .collect()
    }

    fn only_record(out: &[Record]) -> TlsRecord {
        let t = tls_records(out);
        assert_eq!(t.len(), 1, "{out:?}");
        t[0].clone()
    }

    /// tshark's value of a hex field ("0x0303") as our name.
    fn tshark_version(f: &Fixture) -> String {
        let v = if f.field("sh", 3).is_empty() {
            f.field("sh", 4)
        } else {
            f.field("sh", 3)
        };
        version_name(u16::from_str_radix(v.trim_start_matches("0x"), 16).expect("hex version"))
    }

    fn tshark_cipher(f: &Fixture) -> &'static str {
        let id = u16::from_str_radix(f.field("sh", 2).trim_start_matches("0x"), 16).expect("hex");
        TlsCipherSuite::from_id(id).expect("known suite").name
    }

    #[test]
    fn real_handshakes_equal_tshark() {
        for text in HANDSHAKES {
            let f = Fixture::parse(text);
            let out = run(&f.chunks);
            assert!(weirds(&out).is_empty(), "{out:?}");
            let r = only_record(&out);
            assert_eq!(r.ts_ns, 7);
            assert_eq!(r.server_name.as_deref().unwrap_or(""), f.field("ch", 0));
            assert_eq!(r.ja3.as_deref(), Some(f.field("ch", 1)));
            assert_eq!(md5_hex(f.field("ch", 2)), f.field("ch", 1));
            assert_eq!(r.ja3s.as_deref(), Some(f.field("sh", 0)));
            assert_eq!(r.version.as_deref(), Some(tshark_version(&f).as_str()));
            assert_eq!(r.cipher.as_deref(), Some(tshark_cipher(&f)));
            assert!(r.established, "{r:?}");
        }
    }

    #[test]
    fn tls12_certificate_chain() {
        let r = only_record(&run(&Fixture::parse(MISSING_INTERMEDIATE_1).chunks));
        assert_eq!(r.version.as_deref(), Some("TLSv12"));
        assert_eq!(r.curve.as_deref(), Some("secp256r1"));
        assert!(!r.resumed);
        let chain = r.cert_chain.as_ref().expect("chain");
        assert_eq!(chain.len(), 3);
        // The values tshark shows for the same certificates (x509af.serialNumber,
        // x509af.utcTime, x509ce.dNSName).
        assert_eq!(chain[0].serial, "195736");
        assert_eq!(chain[1].serial, "07");
        assert_eq!(chain[2].serial, "00");
        assert_eq!(chain[0].not_valid_before, 1_396_335_600); // 2014-04-01 07:00:00
        assert_eq!(chain[0].not_valid_after, 1_459_494_000); // 2016-04-01 07:00:00
        assert_eq!(chain[2].not_valid_after, 2_145_916_799); // 2037-12-31 23:59:59
        assert_eq!(chain[0].san_dns, ["valid.sfig2.catest.starfieldtech.com"]);
        assert!(chain[1].san_dns.is_empty() && chain[0].san_ip.is_empty());
        assert_eq!(r.subject.as_deref(), Some(chain[0].subject.as_str()));
        assert_eq!(r.issuer.as_deref(), Some(chain[0].issuer.as_str()));
        assert!(chain[0]
            .subject
            .ends_with("CN=valid.sfig2.catest.starfieldtech.com"));
        assert_eq!(chain[0].issuer, chain[1].subject);
        assert_eq!(chain[1].issuer, chain[2].subject);
        assert_eq!(chain[2].issuer, chain[2].subject);
    }

    #[test]
    fn tls13_fields() {
        let r = only_record(&run(&Fixture::parse(TLS13_PSK).chunks));
        assert_eq!(r.version.as_deref(), Some("TLSv13"));
        assert!(r.resumed, "the server accepted the pre-shared key");
        assert_eq!(r.curve.as_deref(), Some("x25519"));
        assert!(r.cert_chain.is_none() && r.subject.is_none());

        let r = only_record(&run(&Fixture::parse(TLS13_ECH).chunks));
        assert!(!r.resumed);
        assert_eq!(r.server_name.as_deref(), Some("cloudflare-ech.com"));
        assert_eq!(r.client_alpn, ["h2", "http/1.1"]);
        // This Chrome ClientHello carries GREASE ciphers and extensions: JA3 leaves them out
        // (tshark agrees, above); JA4 counts 15 ciphers and 17 extensions without them.
        assert!(
            r.ja4.as_deref().unwrap().starts_with("t13d1517h2_"),
            "{r:?}"
        );

        let r = only_record(&run(&Fixture::parse(TLS12_KEYLOG).chunks));
        assert_eq!(r.next_protocol.as_deref(), Some("http/1.1"));
        assert_eq!(r.client_alpn, ["http/1.1"]);
        assert_eq!(r.server_name.as_deref(), Some("www.heise.de"));
    }

    #[test]
    fn json_has_the_schema_names_and_no_nulls() {
        let r = only_record(&run(&Fixture::parse(MISSING_INTERMEDIATE_1).chunks));
        let v = serde_json::to_value(&r).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let schema = [
            "version",
            "cipher",
            "curve",
            "server_name",
            "resumed",
            "next_protocol",
            "client_alpn",
            "established",
            "ja3",
            "ja3s",
            "ja4",
            "subject",
            "issuer",
            "cert_chain",
        ];
        for k in &keys {
            assert!(schema.contains(k), "{k}");
        }
        // No SNI or ALPN in this handshake: omitted, not null.
        assert!(!keys.contains(&"server_name") && !keys.contains(&"client_alpn"));
        assert!(!v.to_string().contains("null"));
        let cert = &v["cert_chain"][1];
        let mut ck: Vec<&str> = cert
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        ck.sort_unstable();
        assert_eq!(
            ck,
            [
                "issuer",
                "not_valid_after",
                "not_valid_before",
                "serial",
                "subject"
            ]
        );
    }

    #[test]
    fn one_byte_per_call_gives_the_same_record() {
        for text in HANDSHAKES {
            let f = Fixture::parse(text);
            let whole = run(&f.chunks);
            let mut bytewise = Vec::new();
            for (d, b) in &f.chunks {
                for &x in b {
                    bytewise.push((*d, vec![x]));
                }
            }
            assert_eq!(run(&bytewise), whole);
        }
    }

    /// Cuts every plaintext handshake record into records of at most `n` bytes of body, as a
    /// sender may (RFC 5246 section 6.2.1), so that every handshake message longer than `n`
    /// spans records. Chunks keep their order.
    fn refragment(chunks: &[(Dir, Vec<u8>)], n: usize) -> Vec<(Dir, Vec<u8>)> {
        let mut pending: [Vec<u8>; 2] = Default::default();
        let mut plaintext = [true, true];
        let mut out = Vec::new();
        for (d, b) in chunks {
            let i = idx(*d);
            pending[i].extend_from_slice(b);
            let mut chunk = Vec::new();
            loop {
                let p = &pending[i];
                if p.len() < 5 {
                    break;
                }
                let len = usize::from(u16::from_be_bytes([p[3], p[4]]));
                if p.len() < 5 + len {
                    break;
                }
                let (hdr, body) = (&p[..5], &p[5..5 + len]);
                if hdr[0] == CT_CHANGE_CIPHER_SPEC {
                    plaintext[i] = false;
                }
                if hdr[0] == CT_HANDSHAKE && plaintext[i] {
                    for piece in body.chunks(n) {
                        chunk.extend_from_slice(&hdr[..3]);
                        chunk.extend_from_slice(&(piece.len() as u16).to_be_bytes());
                        chunk.extend_from_slice(piece);
                    }
                } else {
                    chunk.extend_from_slice(&p[..5 + len]);
                }
                pending[i].drain(..5 + len);
            }
            out.push((*d, chunk));
        }
        out
    }

    #[test]
    fn handshake_messages_spanning_records() {
        for text in HANDSHAKES {
            let f = Fixture::parse(text);
            let whole = run(&f.chunks);
            for n in [1, 7, 300] {
                let cut = refragment(&f.chunks, n);
                assert_ne!(cut, f.chunks);
                assert_eq!(run(&cut), whole, "records of {n} bytes");
            }
        }
        // The Certificate message (three certificates, about 4 KB) in records of 300 bytes.
        let f = Fixture::parse(MISSING_INTERMEDIATE_1);
        let r = only_record(&run(&refragment(&f.chunks, 300)));
        assert_eq!(r.cert_chain.map(|c| c.len()), Some(3));
    }

    #[test]
    fn truncated_handshakes_emit_what_was_seen() {
        for text in HANDSHAKES {
            let f = Fixture::parse(text);
            let full = only_record(&run(&f.chunks));
            let all: Vec<(Dir, u8)> = f
                .chunks
                .iter()
                .flat_map(|(d, b)| b.iter().map(move |x| (*d, *x)))
                .collect();
            for cut in (0..all.len()).step_by(97) {
                let mut p = TlsParser::new();
                let mut out = Vec::new();
                for (d, x) in &all[..cut] {
                    p.data(*d, &[*x], 7, &mut out);
                }
                p.end(9, &mut out);
                assert!(p.done());
                assert!(weirds(&out).is_empty(), "cut at {cut}: {out:?}");
                let recs = tls_records(&out);
                assert!(recs.len() <= 1);
                if let Some(r) = recs.first() {
                    // Whatever was seen is what the whole handshake says.
                    assert_eq!(r.ja3, full.ja3);
                    assert_eq!(r.server_name, full.server_name);
                    if r.ja3s.is_some() {
                        assert_eq!(r.ja3s, full.ja3s);
                        assert_eq!(r.cipher, full.cipher);
                    }
                }
            }
        }
    }

    #[test]
    fn gap_emits_and_stops() {
        let f = Fixture::parse(MISSING_INTERMEDIATE_1);
        let mut p = TlsParser::new();
        let mut out = Vec::new();
        p.data(Dir::Orig, &f.chunks[0].1, 5, &mut out);
        assert!(out.is_empty() && !p.done());
        p.gap(Dir::Resp, 100, 6, &mut out);
        assert!(p.done());
        let r = only_record(&out);
        assert_eq!(r.ja3.as_deref(), Some(f.field("ch", 1)));
        assert!(r.version.is_none() && !r.established);
        p.data(Dir::Resp, &f.chunks[1].1, 7, &mut out);
        p.end(8, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn nothing_seen_nothing_emitted() {
        let mut p = TlsParser::new();
        let mut out = Vec::new();
        p.data(Dir::Orig, b"\x16\x03\x01", 1, &mut out);
        p.end(2, &mut out);
        assert!(out.is_empty() && p.done());
    }

    #[test]
    fn record_too_long() {
        let mut p = TlsParser::new();
        let mut out = Vec::new();
        // The longest record allowed just waits for its body ...
        let len = MAX_RECORD_LEN as u16;
        p.data(
            Dir::Orig,
            &[22, 3, 1, (len >> 8) as u8, len as u8],
            1,
            &mut out,
        );
        assert!(out.is_empty() && !p.done());
        // ... one byte more is refused before any of it comes.
        let mut p = TlsParser::new();
        let len = len + 1;
        p.data(
            Dir::Orig,
            &[22, 3, 1, (len >> 8) as u8, len as u8],
            1,
            &mut out,
        );
        assert!(p.done());
        assert_eq!(weirds(&out), ["tls_record_too_long"]);
    }

    #[test]
    fn handshake_message_too_long() {
        let mut p = TlsParser::new();
        let mut out = Vec::new();
        let len = MAX_HANDSHAKE_LEN + 1;
        let body = [1, (len >> 16) as u8, (len >> 8) as u8, len as u8];
        p.data(Dir::Orig, &[22, 3, 1, 0, 4], 1, &mut out);
        p.data(Dir::Orig, &body, 1, &mut out);
        assert!(p.done());
        assert_eq!(weirds(&out), ["tls_handshake_too_long"]);
        assert!(tls_records(&out).is_empty());
    }

    #[test]
    fn garbage_is_a_bad_record() {
        for garbage in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x05\x01\x00\x10",
            b"\x63\x03\x03\x00\x01",
        ] {
            let mut p = TlsParser::new();
            let mut out = Vec::new();
            p.data(Dir::Orig, garbage, 1, &mut out);
            assert!(p.done());
            assert_eq!(weirds(&out), ["tls_bad_record"]);
            p.data(Dir::Resp, b"\x16\x03\x03\x00\x00", 1, &mut out);
            p.end(1, &mut out);
            assert_eq!(out.len(), 1);
        }
        // A malformed ClientHello inside a good record.
        let mut p = TlsParser::new();
        let mut out = Vec::new();
        p.data(
            Dir::Orig,
            b"\x16\x03\x01\x00\x06\x01\x00\x00\x02\x03\x03",
            1,
            &mut out,
        );
        assert_eq!(weirds(&out), ["tls_bad_handshake"]);
        assert!(p.done());
        // The ClientHello was sent: a record, without fingerprints (tshark gives no JA3
        // either).
        let r = only_record(&out);
        assert_eq!(r.ts_ns, 1);
        assert!(r.ja3.is_none() && r.ja4.is_none() && r.version.is_none());
    }

    /// The client's first record in each SSL 2.0 fixture.
    const SSLV2_STREAMS: [&str; 3] = [SSLV2, SSLV2_SKYPE, SSLV2_GOOGLE];

    /// The record and weirds of a stream fed whole, one byte per call, and in pieces of 2, 3
    /// and 5 bytes: all the same (a weird's details may say how many bytes were at hand).
    fn run_every_cut(chunks: &[(Dir, Vec<u8>)]) -> Vec<Record> {
        let gist = |out: &[Record]| -> Vec<String> {
            out.iter()
                .map(|r| match r {
                    Record::Weird(w) => format!("{} {:?}", w.name, w.peer),
                    r => format!("{r:?}"),
                })
                .collect()
        };
        let whole = run(chunks);
        for n in [1, 2, 3, 5] {
            let cut: Vec<(Dir, Vec<u8>)> = chunks
                .iter()
                .flat_map(|(d, b)| b.chunks(n).map(move |p| (*d, p.to_vec())))
                .collect();
            assert_eq!(gist(&run(&cut)), gist(&whole), "pieces of {n} bytes");
        }
        whole
    }

    #[test]
    fn sslv2_hello_answered_in_tls() {
        // Skype: an SSL 2.0 CLIENT-HELLO offering TLS 1.0, 54 bytes that are no TLS record,
        // then the server's ServerHello, which tshark decodes.
        let f = Fixture::parse(SSLV2_SKYPE);
        let out = run_every_cut(&f.chunks);
        let r = only_record(&out);
        assert_eq!(weirds(&out), ["tls_bad_record"]);
        let Record::Weird(w) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(w.peer, Dir::Orig);
        assert!(r.client_sslv2);
        assert_eq!(r.ts_ns, 7);
        assert_eq!(r.version, Some(tshark_version(&f)));
        assert_eq!(r.version.as_deref(), Some("TLSv10"));
        assert_eq!(r.ja3s.as_deref(), Some(f.field("sh", 0)));
        assert_eq!(r.cipher.as_deref(), Some(tshark_cipher(&f)));
        // As tshark: no JA3 and no server name; no JA4 either.
        assert_eq!(f.field("ch", 0), "");
        assert_eq!(f.field("ch", 1), "");
        assert!(r.ja3.is_none() && r.ja4.is_none() && r.server_name.is_none());
        assert!(!r.established);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["client_sslv2"], serde_json::Value::Bool(true));
        assert_eq!(v["version"], "TLSv10");
        assert!(v.get("ja3").is_none() && v.get("ja4").is_none());
    }

    #[test]
    fn sslv2_hello_then_full_tls_handshake() {
        // Google: the SSL 2.0 CLIENT-HELLO, then TLS 1.0 records both ways, certificate chain,
        // ChangeCipherSpec from both: established.
        let f = Fixture::parse(SSLV2_GOOGLE);
        let out = run_every_cut(&f.chunks);
        assert!(weirds(&out).is_empty(), "{out:?}");
        let r = only_record(&out);
        assert!(r.client_sslv2 && r.established && !r.resumed);
        assert_eq!(r.version.as_deref(), Some("TLSv10"));
        assert_eq!(r.cipher.as_deref(), Some("TLS_RSA_WITH_RC4_128_SHA"));
        assert!(r.ja3s.is_some());
        assert!(r.ja3.is_none() && r.server_name.is_none());
        let chain = r.cert_chain.expect("the server's certificates");
        assert!(chain.len() >= 2, "{chain:?}");
        assert!(chain[0].subject.contains("google"), "{}", chain[0].subject);
        // The handshake is complete before the connection ends.
        let mut p = TlsParser::new();
        let mut out = Vec::new();
        feed(&mut p, &f.chunks, &mut out);
        assert!(p.done());
    }

    #[test]
    fn sslv2_handshake() {
        // Zeek's ssl-v2 trace: CLIENT-HELLO, SERVER-HELLO with the certificate, then the
        // CLIENT-MASTER-KEY choosing DES-EDE3 (0x0700c0, as tshark decodes it).
        let f = Fixture::parse(SSLV2);
        let out = run_every_cut(&f.chunks);
        assert!(weirds(&out).is_empty(), "{out:?}");
        let r = only_record(&out);
        assert!(r.client_sslv2 && !r.resumed && !r.established);
        assert_eq!(r.version.as_deref(), Some("SSLv2"));
        assert_eq!(
            r.cipher.as_deref(),
            Some("SSLv20_CK_DES_192_EDE3_CBC_WITH_MD5")
        );
        assert!(r.ja3.is_none() && r.ja3s.is_none() && r.ja4.is_none());
        assert_eq!(r.cert_chain.map(|c| c.len()), Some(1));
        assert!(r.subject.is_some() && r.issuer.is_some());
        // Done at the CLIENT-MASTER-KEY: what follows is encrypted.
        let mut p = TlsParser::new();
        let mut out = Vec::new();
        feed(&mut p, &f.chunks, &mut out);
        assert!(p.done());
        assert_eq!(out.len(), 1);
        // Without the server's answer, the version is the one the client offered.
        let r = only_record(&run(&f.chunks[..1]));
        assert!(r.client_sslv2);
        assert_eq!(r.version.as_deref(), Some("SSLv2"));
        assert!(r.cipher.is_none());
        let r = only_record(&run(&Fixture::parse(SSLV2_SKYPE).chunks[..1]));
        assert_eq!(r.version.as_deref(), Some("TLSv10"));
    }

    #[test]
    fn sslv2_truncated_anywhere() {
        for text in SSLV2_STREAMS {
            let f = Fixture::parse(text);
            let full = only_record(&run(&f.chunks));
            let all: Vec<(Dir, u8)> = f
                .chunks
                .iter()
                .flat_map(|(d, b)| b.iter().map(move |x| (*d, *x)))
                .collect();
            for cut in (0..all.len()).step_by(13) {
                let mut p = TlsParser::new();
                let mut out = Vec::new();
                for (d, x) in &all[..cut] {
                    p.data(*d, &[*x], 7, &mut out);
                }
                p.end(9, &mut out);
                assert!(p.done());
                let recs = tls_records(&out);
                assert!(recs.len() <= 1);
                // A record once the CLIENT-HELLO (a 2-byte header here) is whole.
                let h = &f.chunks[0].1;
                let hello = 2 + ((usize::from(h[0] & 0x7f) << 8) | usize::from(h[1]));
                assert_eq!(recs.len(), usize::from(cut >= hello), "cut at {cut}");
                if let Some(r) = recs.first() {
                    assert!(r.client_sslv2);
                    if r.ja3s.is_some() {
                        assert_eq!(r.ja3s, full.ja3s);
                    }
                }
            }
        }
    }

    /// An SSL 2.0 CLIENT-HELLO with a 2-byte header: version, cipher specs, session id and
    /// challenge as given.
    fn v2_hello(version: u16, specs: &[u8], sid: &[u8], challenge: &[u8]) -> Vec<u8> {
        let mut m = vec![V2_CLIENT_HELLO];
        m.extend_from_slice(&version.to_be_bytes());
        for part in [specs, sid, challenge] {
            m.extend_from_slice(&(part.len() as u16).to_be_bytes());
        }
        for part in [specs, sid, challenge] {
            m.extend_from_slice(part);
        }
        let mut r = ((m.len() as u16) | 0x8000).to_be_bytes().to_vec();
        r.extend_from_slice(&m);
        r
    }

    const SPECS: [u8; 6] = [0x01, 0x00, 0x80, 0x00, 0x00, 0x05];

    #[test]
    fn sslv2_headers_and_lengths() {
        let good = v2_hello(0x0301, &SPECS, &[], &[7; 16]);
        let r = only_record(&run(&[(Dir::Orig, good.clone())]));
        assert!(r.client_sslv2);
        assert_eq!(r.version.as_deref(), Some("TLSv10"));
        // The same message in a 3-byte header with 3 bytes of padding.
        let m = &good[2..];
        let len = m.len() + 3;
        let mut padded = vec![(len >> 8) as u8, len as u8, 3];
        padded.extend_from_slice(m);
        padded.extend_from_slice(&[0, 0, 0]);
        assert_eq!(only_record(&run(&[(Dir::Orig, padded)])), r);
        // A 16-byte session id and a 32-byte challenge are allowed.
        let r = only_record(&run(&[(
            Dir::Orig,
            v2_hello(0x0002, &SPECS, &[1; 16], &[2; 32]),
        )]));
        assert_eq!(r.version.as_deref(), Some("SSLv2"));

        let bad = [
            ("version 4.0", v2_hello(0x0400, &SPECS, &[], &[7; 16])),
            (
                "specs not in 3s",
                v2_hello(0x0301, &SPECS[..5], &[], &[7; 16]),
            ),
            ("no specs", v2_hello(0x0301, &[], &[], &[7; 16])),
            (
                "session id of 5",
                v2_hello(0x0301, &SPECS, &[1; 5], &[7; 16]),
            ),
            ("challenge of 15", v2_hello(0x0301, &SPECS, &[], &[7; 15])),
            ("challenge of 33", v2_hello(0x0301, &SPECS, &[], &[7; 33])),
            ("record length 0", vec![0x80, 0x00, 0x01, 0x03, 0x01]),
            ("record of the type only", vec![0x80, 0x01, 0x01]),
            (
                "padding as long as the record",
                vec![0x00, 0x04, 0x04, 0x01, 3, 1, 0],
            ),
        ];
        for (what, mut bytes) in bad {
            for extra in [false, true] {
                if extra {
                    // A byte more than the lengths say, inside the record.
                    let n = u16::from_be_bytes([bytes[0] & 0x7f, bytes[1]]) + 1;
                    if bytes[0] & 0x80 == 0 || n < 10 {
                        continue;
                    }
                    bytes[..2].copy_from_slice(&(n | 0x8000).to_be_bytes());
                    bytes.push(0);
                }
                let out = run_every_cut(&[(Dir::Orig, bytes.clone())]);
                assert_eq!(weirds(&out), ["tls_bad_record"], "{what} {extra}: {out:?}");
                assert!(tls_records(&out).is_empty(), "{what} {extra}");
            }
        }
        // The lengths disagree with the record's: one byte less.
        let mut short = good.clone();
        short[1] -= 1;
        short.pop();
        let out = run(&[(Dir::Orig, short)]);
        assert_eq!(weirds(&out), ["tls_bad_record"]);
    }

    #[test]
    fn sslv2_server_answers() {
        let hello = v2_hello(0x0002, &SPECS, &[], &[7; 16]);
        let server_hello = |specs: &[u8], conn_id: usize, hit: u8| {
            let mut m = vec![V2_SERVER_HELLO, hit, 1, 0, 2, 0, 0];
            m.extend_from_slice(&(specs.len() as u16).to_be_bytes());
            m.extend_from_slice(&(conn_id as u16).to_be_bytes());
            m.extend_from_slice(specs);
            m.extend(std::iter::repeat_n(9, conn_id));
            let mut r = ((m.len() as u16) | 0x8000).to_be_bytes().to_vec();
            r.extend_from_slice(&m);
            r
        };
        // A resumed session: done at the SERVER-HELLO.
        let mut p = TlsParser::new();
        let mut out = Vec::new();
        p.data(Dir::Orig, &hello, 1, &mut out);
        p.data(Dir::Resp, &server_hello(&[], 16, 1), 2, &mut out);
        assert!(p.done());
        let r = only_record(&out);
        assert!(r.resumed && r.client_sslv2);
        assert_eq!(r.version.as_deref(), Some("SSLv2"));
        // A CLIENT-MASTER-KEY with an unknown cipher kind.
        let master = [
            0x80,
            0x0a,
            V2_CLIENT_MASTER_KEY,
            0x09,
            0x00,
            0x01,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        let out = run(&[
            (Dir::Orig, hello.clone()),
            (Dir::Resp, server_hello(&SPECS, 16, 0)),
            (Dir::Orig, master.to_vec()),
        ]);
        assert!(weirds(&out).is_empty(), "{out:?}");
        let r = only_record(&out);
        assert!(!r.resumed);
        assert_eq!(r.cipher.as_deref(), Some("unknown-589825"));
        // Its lengths disagreeing with the record's.
        let mut bad_master = master;
        bad_master[7] = 1;
        let out = run(&[
            (Dir::Orig, hello.clone()),
            (Dir::Resp, server_hello(&SPECS, 16, 0)),
            (Dir::Orig, bad_master.to_vec()),
        ]);
        assert_eq!(weirds(&out), ["tls_bad_record"]);
        assert_eq!(only_record(&out).version.as_deref(), Some("SSLv2"));
        // A malformed SERVER-HELLO (connection id of 8 bytes): the client's side is kept.
        let out = run(&[
            (Dir::Orig, hello.clone()),
            (Dir::Resp, server_hello(&SPECS, 8, 0)),
        ]);
        assert_eq!(weirds(&out), ["tls_bad_record"]);
        let r = only_record(&out);
        assert!(r.client_sslv2 && r.cipher.is_none());
        // An SSL 2.0 ERROR (no cipher in common): done, no weird.
        let mut p = TlsParser::new();
        let mut out = Vec::new();
        p.data(Dir::Orig, &hello, 1, &mut out);
        p.data(Dir::Resp, &[0x80, 0x03, V2_ERROR, 0x00, 0x01], 2, &mut out);
        assert!(p.done() && weirds(&out).is_empty());
        assert_eq!(only_record(&out).version.as_deref(), Some("SSLv2"));
        // An SSL 2.0 SERVER-HELLO after a TLS ClientHello is no TLS record.
        let f = Fixture::parse(MISSING_INTERMEDIATE_1);
        let out = run(&[
            f.chunks[0].clone(),
            (Dir::Resp, server_hello(&SPECS, 16, 0)),
        ]);
        assert_eq!(weirds(&out), ["tls_bad_record"]);
        assert!(!only_record(&out).client_sslv2);
        // A server opening with an SSL 2.0 CLIENT-HELLO is no TLS either (its side is no
        // longer read; the client's hello is still to come).
        let mut p = TlsParser::new();
        let mut out = Vec::new();
        p.data(Dir::Resp, &hello, 1, &mut out);
        assert!(!p.done());
        assert_eq!(weirds(&out), ["tls_bad_record"]);
        p.data(Dir::Orig, &hello, 2, &mut out);
        p.end(3, &mut out);
        assert_eq!(only_record(&out).version.as_deref(), Some("SSLv2"));
    }

    #[test]
    fn server_greeting_before_the_client_hello() {
        // SMTP over TLS on port 465 with a server that greets in plaintext first (as in
        // Suricata's smtp-errors trace): the server's side is dropped, the ClientHello read.
        let f = Fixture::parse(MISSING_INTERMEDIATE_1);
        let banner = b"220 mail.example.org ESMTP\r\n".to_vec();
        let chunks = [
            (Dir::Resp, banner.clone()),
            f.chunks[0].clone(),
            (
                Dir::Resp,
                b"402 4.5.2 Error: command not recognized\r\n".to_vec(),
            ),
        ];
        let out = run_every_cut(&chunks);
        assert_eq!(weirds(&out), ["tls_bad_record"]);
        let r = only_record(&out);
        assert_eq!(r.ja3.as_deref(), Some(f.field("ch", 1)));
        assert!(r.version.is_none());
        // After the ClientHello, the server's bytes that are no TLS end the parse.
        let mut p = TlsParser::new();
        let mut out = Vec::new();
        feed(
            &mut p,
            &[f.chunks[0].clone(), (Dir::Resp, banner)],
            &mut out,
        );
        assert!(p.done());
        assert_eq!(weirds(&out), ["tls_bad_record"]);
        assert_eq!(only_record(&out).ja3.as_deref(), Some(f.field("ch", 1)));
    }

    #[test]
    fn bytes_after_a_tls_hello_still_end_the_parse() {
        // The leniency for the client's side is for SSL 2.0 hellos only.
        let f = Fixture::parse(MISSING_INTERMEDIATE_1);
        let mut p = TlsParser::new();
        let mut out = Vec::new();
        p.data(Dir::Orig, &f.chunks[0].1, 1, &mut out);
        p.data(Dir::Orig, b"\x4c\xc0\x07\xd5\x22", 1, &mut out);
        assert!(p.done());
        assert_eq!(weirds(&out), ["tls_bad_record"]);
    }

    #[test]
    fn bad_certificate_keeps_the_record() {
        let f = Fixture::parse(MISSING_INTERMEDIATE_1);
        // Break the first certificate's DER (its outer SEQUENCE tag) in the server's bytes.
        let mut chunks = f.chunks.clone();
        let resp = chunks_with_certificate(&mut chunks);
        let at = certificate_der_offset(resp).expect("a Certificate message");
        resp[at] = 0x31;
        let out = run(&chunks);
        assert_eq!(weirds(&out), ["tls_bad_certificate"]);
        let r = only_record(&out);
        assert_eq!(r.cert_chain.map(|c| c.len()), Some(2));
        assert!(r.subject.is_none());
        assert_eq!(r.ja3s.as_deref(), Some(f.field("sh", 0)));
        assert!(r.established);
    }

    /// The server chunk holding the start of the Certificate message.
    fn chunks_with_certificate(chunks: &mut [(Dir, Vec<u8>)]) -> &mut Vec<u8> {
        &mut chunks
            .iter_mut()
            .find(|(d, b)| *d == Dir::Resp && certificate_der_offset(b).is_some())
            .expect("a chunk with the Certificate message")
            .1
    }

    /// Where the first certificate's DER starts in a chunk that holds a Certificate message
    /// (handshake type 11, 3-byte length, 3-byte list length, 3-byte certificate length).
    fn certificate_der_offset(chunk: &[u8]) -> Option<usize> {
        (0..chunk.len().saturating_sub(11))
            .find(|&i| {
                chunk[i] == 11
                    && chunk[i + 10] == 0x30
                    && chunk[i + 11] == 0x82
                    && u32::from_be_bytes([0, chunk[i + 1], chunk[i + 2], chunk[i + 3]])
                        == u32::from_be_bytes([0, chunk[i + 4], chunk[i + 5], chunk[i + 6]]) + 3
            })
            .map(|i| i + 10)
    }

    #[test]
    fn alerts() {
        let f = Fixture::parse(MISSING_INTERMEDIATE_1);
        // A warning (unrecognized_name) before the ServerHello does not stop the handshake.
        let mut chunks = f.chunks.clone();
        chunks.insert(1, (Dir::Resp, vec![21, 3, 3, 0, 2, 1, 112]));
        assert_eq!(run(&chunks), run(&f.chunks));
        // A fatal alert ends it: the record is emitted with what was seen.
        let mut p = TlsParser::new();
        let mut out = Vec::new();
        p.data(Dir::Orig, &f.chunks[0].1, 1, &mut out);
        p.data(Dir::Resp, &[21, 3, 3, 0, 2, 2, 40], 2, &mut out);
        assert!(p.done());
        let r = only_record(&out);
        assert!(!r.established && r.ja3.is_some());
        // A plaintext alert of odd length is malformed.
        let mut p = TlsParser::new();
        let mut out = Vec::new();
        p.data(Dir::Orig, &f.chunks[0].1, 1, &mut out);
        p.data(Dir::Resp, &[21, 3, 3, 0, 3, 2, 40, 0], 2, &mut out);
        assert_eq!(weirds(&out), ["tls_bad_record"]);
        assert_eq!(tls_records(&out).len(), 1);
    }

    #[test]
    fn hello_retry_request() {
        let f = Fixture::parse(TLS13_ECH);
        let whole = only_record(&run(&f.chunks));
        // A HelloRetryRequest (a ServerHello with the special random: TLS 1.3, x448 wanted)
        // and the compatibility ChangeCipherSpec, then the client's ChangeCipherSpec and its
        // second ClientHello (here the same bytes), then the real exchange.
        let mut body = vec![3, 3];
        body.extend_from_slice(&HELLO_RETRY_RANDOM);
        body.extend_from_slice(&[0, 0x13, 0x01, 0]); // no session id, cipher, compression
        body.extend_from_slice(&[0, 12, 0, 43, 0, 2, 3, 4, 0, 51, 0, 2, 0, 30]);
        let mut hrr = vec![22, 3, 3, 0, body.len() as u8 + 4, 2, 0, 0, body.len() as u8];
        hrr.extend_from_slice(&body);
        hrr.extend_from_slice(&[20, 3, 3, 0, 1, 1]);
        let mut second = vec![20, 3, 3, 0, 1, 1];
        second.extend_from_slice(&f.chunks[0].1);
        let mut chunks = vec![f.chunks[0].clone(), (Dir::Resp, hrr), (Dir::Orig, second)];
        chunks.extend_from_slice(&f.chunks[1..]);
        let r = only_record(&run(&chunks));
        assert_eq!(r, whole);
        assert_eq!(r.curve.as_deref(), Some("x25519"));
    }

    #[test]
    fn ja4_of_the_specification_example() {
        // The example of FoxIO's JA4 description (technical_details/JA4.md).
        let mut h = Hello {
            version: 0x0303,
            ciphers: vec![
                0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
                0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
            ],
            extensions: vec![
                0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005, 0x0023,
                0x0012, 0x002b, 0xff01, 0x000b, 0x000a, 0x0015,
            ],
            sig_algs: vec![
                0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
            ],
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            supported_versions: vec![0x0304, 0x0303],
            sni: true,
            ..Hello::default()
        };
        assert_eq!(ja4(&h), "t13d1516h2_8daaf6152771_e5627efa2ab1");
        // GREASE anywhere changes nothing.
        h.ciphers.insert(0, 0x3a3a);
        h.extensions.insert(3, 0xdada);
        h.supported_versions.insert(0, 0x6a6a);
        h.sig_algs.push(0x0a0a);
        assert_eq!(ja4(&h), "t13d1516h2_8daaf6152771_e5627efa2ab1");
        // Without signature algorithms the extension list alone is hashed.
        h.sig_algs.clear();
        assert_eq!(ja4(&h), "t13d1516h2_8daaf6152771_6d807ffa2a79");
        // No ciphers, no extensions but SNI/ALPN: zeros, not the hash of nothing.
        let h = Hello {
            version: 0x0301,
            extensions: vec![0x0000],
            sni: true,
            ..Hello::default()
        };
        assert_eq!(ja4(&h), "t10d000100_000000000000_000000000000");
    }

    #[test]
    fn ja4_alpn_characters() {
        let alpn = |p: &[u8]| {
            let h = Hello {
                alpn: vec![p.to_vec()],
                ..Hello::default()
            };
            ja4(&h)[8..10].to_string()
        };
        assert_eq!(alpn(b"http/1.1"), "h1");
        assert_eq!(alpn(b"x"), "xx");
        assert_eq!(alpn(&[0xab]), "ab");
        assert_eq!(alpn(&[0xab, 0xcd]), "ad");
        assert_eq!(alpn(&[0x30, 0xab]), "3b");
        assert_eq!(alpn(&[0x30, 0xab, 0xcd, 0x31]), "01");
        assert_eq!(alpn(b""), "00");
    }

    #[test]
    fn grease_and_names() {
        assert!(is_grease(0x0a0a) && is_grease(0xfafa) && is_grease(0x3a3a));
        assert!(!is_grease(0x0a1a) && !is_grease(0x1301) && !is_grease(0x000a));
        assert_eq!(version_name(0x0300), "SSLv3");
        assert_eq!(version_name(0x0302), "TLSv11");
        assert_eq!(version_name(0x7f1c), "TLSv13-draft28");
        assert_eq!(group_name(29), "x25519");
        assert_eq!(group_name(5), "sect193r2");
        assert_eq!(group_name(0xfe00), "unknown-65024");
        let h = Hello {
            version: 769,
            ciphers: vec![47, 0x2a2a, 53],
            ..Hello::default()
        };
        assert_eq!(ja3_string(&h), "769,47-53,,,");
    }
}
