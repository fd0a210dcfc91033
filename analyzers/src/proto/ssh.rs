//! SSH banners and key-exchange fingerprints: one [`SshRecord`] per connection with both
//! identification strings (RFC 4253 section 4.2), both SSH_MSG_KEXINIT name-lists (section
//! 7.1) and Salesforce's HASSH fingerprints of them.
//!
//! Hand-parsed and small: a banner line is at most 255 bytes, a binary packet at most 35000
//! (the bound RFC 4253 section 6.1 sets implementations), every name-list length is checked
//! against the bytes left before it is used. The record is emitted once both KEXINITs are
//! seen, or at the end of the connection or a gap; the parser is then done.

use super::{Dir, Parser, Record, Weird};
use md5::{Digest, Md5};
use serde::Serialize;

/// The longest identification line, CR LF included (RFC 4253 section 4.2).
pub const MAX_BANNER_LEN: usize = 255;

/// The longest binary packet accepted (`packet_length` field).
pub const MAX_PACKET_LEN: usize = 35000;

/// The most bytes of other lines a server may send before its identification line.
const MAX_PRE_BANNER: usize = 8192;

/// The longest such line.
const MAX_PRE_BANNER_LINE: usize = 1024;

/// Packets before a KEXINIT that are skipped (SSH_MSG_IGNORE, SSH_MSG_DEBUG, ...) before the
/// parser gives up on finding one.
const MAX_PACKETS_BEFORE_KEXINIT: u32 = 16;

/// SSH_MSG_KEXINIT.
const MSG_KEXINIT: u8 = 20;

/// One SSH connection: banners and key-exchange fingerprints (fields not seen are omitted).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SshRecord {
    /// Capture time of the connection's first bytes (normally the first banner), nanoseconds
    /// since the epoch: the caller's `ts`.
    #[serde(skip)]
    pub ts_ns: u64,
    /// Protocol major version: 2 (`SSH-2.0-`, or `SSH-1.99-` meaning both) or 1 (`SSH-1.x-`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u8>,
    /// The client's identification line, without CR LF.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The server's identification line, without CR LF.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// HASSH: MD5 of `hassh_algorithms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hassh: Option<String>,
    /// HASSHServer: MD5 of `hassh_server_algorithms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hassh_server: Option<String>,
    /// The client's `kex;enc_c2s;mac_c2s;comp_c2s` name-lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hassh_algorithms: Option<String>,
    /// The server's `kex;enc_s2c;mac_s2c;comp_s2c` name-lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hassh_server_algorithms: Option<String>,
    /// The client's KEXINIT name-lists as received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_kex: Option<Box<KexInit>>,
    /// The server's KEXINIT name-lists as received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_kex: Option<Box<KexInit>>,
}

/// The name-lists of an SSH_MSG_KEXINIT, comma-separated as on the wire (RFC 4253 section
/// 7.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KexInit {
    /// kex_algorithms.
    pub kex_algorithms: String,
    /// server_host_key_algorithms.
    pub server_host_key_algorithms: String,
    /// encryption_algorithms_client_to_server.
    pub encryption_algorithms_client_to_server: String,
    /// encryption_algorithms_server_to_client.
    pub encryption_algorithms_server_to_client: String,
    /// mac_algorithms_client_to_server.
    pub mac_algorithms_client_to_server: String,
    /// mac_algorithms_server_to_client.
    pub mac_algorithms_server_to_client: String,
    /// compression_algorithms_client_to_server.
    pub compression_algorithms_client_to_server: String,
    /// compression_algorithms_server_to_client.
    pub compression_algorithms_server_to_client: String,
    /// languages_client_to_server.
    pub languages_client_to_server: String,
    /// languages_server_to_client.
    pub languages_server_to_client: String,
}

impl KexInit {
    /// Parses a KEXINIT payload (message number included); `None` when a name-list runs past
    /// the payload or it is not a KEXINIT.
    pub fn parse(payload: &[u8]) -> Option<KexInit> {
        let (&msg, rest) = payload.split_first()?;
        if msg != MSG_KEXINIT {
            return None;
        }
        let mut rest = rest.get(16..)?; // cookie
        let mut lists: [String; 10] = Default::default();
        for list in lists.iter_mut() {
            let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let body = rest.get(4..)?.get(..len)?;
            *list = String::from_utf8_lossy(body).into_owned();
            rest = &rest[4 + len..];
        }
        let [kex, hostkey, enc_cs, enc_sc, mac_cs, mac_sc, comp_cs, comp_sc, lang_cs, lang_sc] =
            lists;
        Some(KexInit {
            kex_algorithms: kex,
            server_host_key_algorithms: hostkey,
            encryption_algorithms_client_to_server: enc_cs,
            encryption_algorithms_server_to_client: enc_sc,
            mac_algorithms_client_to_server: mac_cs,
            mac_algorithms_server_to_client: mac_sc,
            compression_algorithms_client_to_server: comp_cs,
            compression_algorithms_server_to_client: comp_sc,
            languages_client_to_server: lang_cs,
            languages_server_to_client: lang_sc,
        })
    }

    /// The string HASSH hashes for a client: `kex;enc_c2s;mac_c2s;comp_c2s`.
    pub fn hassh_client_string(&self) -> String {
        format!(
            "{};{};{};{}",
            self.kex_algorithms,
            self.encryption_algorithms_client_to_server,
            self.mac_algorithms_client_to_server,
            self.compression_algorithms_client_to_server
        )
    }

    /// The string HASSHServer hashes for a server: `kex;enc_s2c;mac_s2c;comp_s2c`.
    pub fn hassh_server_string(&self) -> String {
        format!(
            "{};{};{};{}",
            self.kex_algorithms,
            self.encryption_algorithms_server_to_client,
            self.mac_algorithms_server_to_client,
            self.compression_algorithms_server_to_client
        )
    }
}

/// One direction's progress.
#[derive(Debug, Default)]
struct Side {
    /// Bytes not yet consumed.
    buf: Vec<u8>,
    /// The identification line, once seen.
    banner: Option<String>,
    /// Bytes of other lines before it (server side).
    pre_banner: usize,
    /// Packets skipped while waiting for the KEXINIT.
    packets: u32,
    /// How many bytes at the start of `buf` are known to hold no line end.
    scanned: usize,
    /// The KEXINIT was seen (or the direction speaks SSH 1): nothing more to read.
    complete: bool,
}

/// The SSH parser of one connection.
#[derive(Debug, Default)]
pub struct SshParser {
    rec: SshRecord,
    /// Some bytes were seen (the record has its time).
    seen: bool,
    sides: [Side; 2],
    done: bool,
}

impl SshParser {
    /// A parser for a new connection.
    pub fn new() -> SshParser {
        SshParser::default()
    }

    fn finish(&mut self, out: &mut Vec<Record>) {
        if self.done {
            return;
        }
        self.done = true;
        self.sides = Default::default();
        if self.rec.client.is_some() || self.rec.server.is_some() {
            out.push(Record::Ssh(std::mem::take(&mut self.rec)));
        }
    }

    fn give_up(&mut self, dir: Dir, name: &str, addl: String, out: &mut Vec<Record>) {
        out.push(Record::Weird(Weird {
            name: name.to_string(),
            addl,
            peer: dir,
            source: "SSH",
        }));
        self.finish(out);
    }

    /// Consumes what it can of `side`'s buffer; returns how many bytes, or the weird that ends
    /// parsing.
    fn consume(&mut self, dir: Dir, buf: &[u8]) -> Result<usize, (&'static str, String)> {
        let d = idx(dir);
        let mut pos = 0;
        while !self.sides[d].complete {
            let b = &buf[pos..];
            if self.sides[d].banner.is_none() {
                let from = std::mem::take(&mut self.sides[d].scanned).min(b.len());
                let Some(nl) = b[from..].iter().position(|&c| c == b'\n').map(|i| from + i) else {
                    self.sides[d].scanned = b.len();
                    // An unfinished line: judged now by what a finished one would be judged
                    // by, so that where the bytes are cut into calls changes nothing.
                    if may_be_banner(b) {
                        if b.len() > MAX_BANNER_LEN {
                            return Err(("ssh_banner_too_long", format!("{} bytes", b.len())));
                        }
                    } else if dir == Dir::Orig {
                        return Err(("ssh_bad_banner", printable(b)));
                    } else if b.len() > MAX_PRE_BANNER_LINE
                        || self.sides[d].pre_banner + b.len() > MAX_PRE_BANNER
                    {
                        return Err((
                            "ssh_bad_banner",
                            format!("{} bytes before the identification line", b.len()),
                        ));
                    }
                    break;
                };
                let line = &b[..nl + 1];
                pos += nl + 1;
                if line.starts_with(b"SSH-") {
                    if line.len() > MAX_BANNER_LEN {
                        return Err(("ssh_banner_too_long", format!("{} bytes", line.len())));
                    }
                    let text = line.strip_suffix(b"\n").unwrap_or(line);
                    let text = text.strip_suffix(b"\r").unwrap_or(text);
                    let text = String::from_utf8_lossy(text).into_owned();
                    match dir {
                        Dir::Orig => self.rec.client = Some(text.clone()),
                        Dir::Resp => self.rec.server = Some(text.clone()),
                    }
                    self.sides[d].banner = Some(text);
                    self.update_version();
                    // SSH 1 (on either side) has no KEXINIT: the banners are all there is.
                    if self.rec.version == Some(1) {
                        for side in self.sides.iter_mut() {
                            side.complete |= side.banner.is_some();
                        }
                    }
                } else if dir == Dir::Resp {
                    let side = &mut self.sides[d];
                    side.pre_banner += line.len();
                    if line.len() > MAX_PRE_BANNER_LINE || side.pre_banner > MAX_PRE_BANNER {
                        return Err((
                            "ssh_bad_banner",
                            format!("{} bytes before the identification line", side.pre_banner),
                        ));
                    }
                } else {
                    return Err(("ssh_bad_banner", printable(line)));
                }
                continue;
            }
            // A binary packet: uint32 packet_length, byte padding_length, payload, padding.
            if b.len() < 5 {
                break;
            }
            let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
            if len > MAX_PACKET_LEN {
                return Err(("ssh_packet_too_long", format!("packet_length {len}")));
            }
            let pad = usize::from(b[4]);
            if len < pad + 2 {
                return Err((
                    "ssh_bad_packet",
                    format!("packet_length {len}, padding_length {pad}"),
                ));
            }
            if b.len() < 4 + len {
                break;
            }
            let payload = &b[5..4 + len - pad];
            pos += 4 + len;
            if payload[0] == MSG_KEXINIT {
                let Some(kex) = KexInit::parse(payload) else {
                    return Err((
                        "ssh_bad_kexinit",
                        format!("KEXINIT of {} bytes", payload.len()),
                    ));
                };
                match dir {
                    Dir::Orig => {
                        let s = kex.hassh_client_string();
                        self.rec.hassh = Some(md5_hex(&s));
                        self.rec.hassh_algorithms = Some(s);
                        self.rec.client_kex = Some(Box::new(kex));
                    }
                    Dir::Resp => {
                        let s = kex.hassh_server_string();
                        self.rec.hassh_server = Some(md5_hex(&s));
                        self.rec.hassh_server_algorithms = Some(s);
                        self.rec.server_kex = Some(Box::new(kex));
                    }
                }
                self.sides[d].complete = true;
            } else {
                let side = &mut self.sides[d];
                side.packets += 1;
                if side.packets > MAX_PACKETS_BEFORE_KEXINIT {
                    return Err((
                        "ssh_no_kexinit",
                        format!("{} packets without a KEXINIT", side.packets),
                    ));
                }
            }
        }
        Ok(pos)
    }

    fn update_version(&mut self) {
        let versions = [&self.rec.client, &self.rec.server]
            .into_iter()
            .flatten()
            .map(|b| banner_version(b));
        // One side speaking only SSH 1 makes the connection SSH 1.
        let mut v = None;
        for x in versions {
            v = match (v, x) {
                (_, 1) | (Some(1), _) => Some(1),
                (_, 2) => Some(2),
                (v, _) => v,
            };
        }
        self.rec.version = v;
    }
}

/// Whether the start of a line may still be an identification line ("SSH-" or a prefix of it).
fn may_be_banner(line: &[u8]) -> bool {
    let n = line.len().min(4);
    line[..n] == b"SSH-"[..n]
}

/// 2 for "SSH-2.0-" and "SSH-1.99-", 1 for other "SSH-1.", 0 for anything else.
fn banner_version(banner: &str) -> u8 {
    if banner.starts_with("SSH-2.0-") || banner.starts_with("SSH-1.99-") {
        2
    } else if banner.starts_with("SSH-1.") {
        1
    } else {
        0
    }
}

fn printable(line: &[u8]) -> String {
    let mut s = String::new();
    for &c in line.iter().take(64) {
        if (0x20..0x7f).contains(&c) {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

fn idx(dir: Dir) -> usize {
    match dir {
        Dir::Orig => 0,
        Dir::Resp => 1,
    }
}

impl Parser for SshParser {
    fn data(&mut self, dir: Dir, bytes: &[u8], ts_ns: u64, out: &mut Vec<Record>) {
        let d = idx(dir);
        if self.done || bytes.is_empty() || self.sides[d].complete {
            return;
        }
        if !self.seen {
            self.seen = true;
            self.rec.ts_ns = ts_ns;
        }
        let mut buf = std::mem::take(&mut self.sides[d].buf);
        buf.extend_from_slice(bytes);
        match self.consume(dir, &buf) {
            Ok(n) => {
                if self.sides[d].complete {
                    buf = Vec::new();
                } else {
                    buf.drain(..n);
                }
                self.sides[d].buf = buf;
                if self.sides.iter().all(|s| s.complete) {
                    self.finish(out);
                }
            }
            Err((name, addl)) => self.give_up(dir, name, addl, out),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::tls::tests::Fixture;

    // Streams of Zeek's test traces (BSD-3-Clause), cut after both KEXINITs; the `#` lines
    // hold tshark 4.0.17's `ssh.protocol`, `ssh.kex.hassh` and `ssh.kex.hasshserver`.
    const SSH_DUPS: &str = include_str!("../../tests/fixtures/ssh/zeek__tcp__ssh-dups.pcap__0.txt");
    const SSHGUESS: &str = include_str!("../../tests/fixtures/ssh/zeek__ssh__sshguess.pcap__0.txt");

    fn run(chunks: &[(Dir, Vec<u8>)]) -> Vec<Record> {
        let mut p = SshParser::new();
        let mut out = Vec::new();
        for (d, b) in chunks {
            p.data(*d, b, 3, &mut out);
        }
        p.end(4, &mut out);
        out
    }

    fn only_record(out: &[Record]) -> SshRecord {
        let recs: Vec<&SshRecord> = out
            .iter()
            .filter_map(|r| match r {
                Record::Ssh(s) => Some(s),
                _ => None,
            })
            .collect();
        assert_eq!(recs.len(), 1, "{out:?}");
        recs[0].clone()
    }

    fn weirds(out: &[Record]) -> Vec<&str> {
        out.iter()
            .filter_map(|r| match r {
                Record::Weird(w) => Some(w.name.as_str()),
                _ => None,
            })
            .collect()
    }

    /// A binary packet around `payload`, with `pad` bytes of padding.
    fn packet(payload: &[u8], pad: u8) -> Vec<u8> {
        let len = (payload.len() + usize::from(pad) + 1) as u32;
        let mut p = len.to_be_bytes().to_vec();
        p.push(pad);
        p.extend_from_slice(payload);
        p.extend(std::iter::repeat_n(0, usize::from(pad)));
        p
    }

    /// A KEXINIT payload with these ten name-lists.
    fn kexinit(lists: [&str; 10]) -> Vec<u8> {
        let mut p = vec![MSG_KEXINIT];
        p.extend_from_slice(&[0x11; 16]);
        for l in lists {
            p.extend_from_slice(&(l.len() as u32).to_be_bytes());
            p.extend_from_slice(l.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&[0; 4]);
        p
    }

    #[test]
    fn real_key_exchanges_equal_tshark() {
        for text in [SSH_DUPS, SSHGUESS] {
            let f = Fixture::parse(text);
            let get = |k: &str| {
                f.meta
                    .iter()
                    .find(|(m, _)| m == k)
                    .map(|(_, v)| v.as_str())
                    .unwrap()
            };
            let out = run(&f.chunks);
            assert!(weirds(&out).is_empty(), "{out:?}");
            let r = only_record(&out);
            assert_eq!(r.ts_ns, 3);
            assert_eq!(r.version, Some(2));
            let (client, server) = get("banners").split_once('|').unwrap();
            assert_eq!(r.client.as_deref(), Some(client));
            assert_eq!(r.server.as_deref(), Some(server));
            assert_eq!(r.hassh.as_deref(), Some(get("hassh")));
            assert_eq!(r.hassh_server.as_deref(), Some(get("hassh_server")));
            let alg = r.hassh_algorithms.as_deref().unwrap();
            assert_eq!(md5_hex(alg), get("hassh"));
            assert_eq!(alg.split(';').count(), 4);
            let ck = r.client_kex.as_ref().unwrap();
            assert!(alg.starts_with(&format!("{};", ck.kex_algorithms)));
            assert!(alg.ends_with(&format!(";{}", ck.compression_algorithms_client_to_server)));
            let sk = r.server_kex.as_ref().unwrap();
            assert_eq!(
                r.hassh_server_algorithms.as_deref(),
                Some(sk.hassh_server_string().as_str())
            );
            assert!(sk.server_host_key_algorithms.contains("ssh-"));
        }
        // OpenSSH 7.9's client fingerprint is the one the HASSH documentation lists for it.
        let r = only_record(&run(&Fixture::parse(SSH_DUPS).chunks));
        assert_eq!(r.hassh.as_deref(), Some("ec7378c1a92f5a8dde7e8b7a1ddf33d1"));
    }

    #[test]
    fn one_byte_per_call_gives_the_same_record() {
        for text in [SSH_DUPS, SSHGUESS] {
            let f = Fixture::parse(text);
            let whole = run(&f.chunks);
            let bytewise: Vec<(Dir, Vec<u8>)> = f
                .chunks
                .iter()
                .flat_map(|(d, b)| b.iter().map(move |x| (*d, vec![*x])))
                .collect();
            assert_eq!(run(&bytewise), whole);
        }
    }

    #[test]
    fn truncated_streams_emit_what_was_seen() {
        let f = Fixture::parse(SSH_DUPS);
        let full = only_record(&run(&f.chunks));
        let all: Vec<(Dir, u8)> = f
            .chunks
            .iter()
            .flat_map(|(d, b)| b.iter().map(move |x| (*d, *x)))
            .collect();
        for cut in (0..all.len()).step_by(53) {
            let mut p = SshParser::new();
            let mut out = Vec::new();
            for (d, x) in &all[..cut] {
                p.data(*d, &[*x], 1, &mut out);
            }
            p.end(2, &mut out);
            assert!(p.done() && weirds(&out).is_empty(), "cut {cut}: {out:?}");
            if cut < 10 {
                assert!(out.is_empty(), "no banner line yet");
                continue;
            }
            let r = only_record(&out);
            assert_eq!(r.client, full.client);
            if r.hassh.is_some() {
                assert_eq!(r.hassh, full.hassh);
            }
            if r.hassh_server.is_some() {
                assert_eq!(r.hassh_server, full.hassh_server);
            }
        }
    }

    #[test]
    fn hand_built_exchange() {
        let lists = [
            "curve25519-sha256,diffie-hellman-group14-sha256",
            "ssh-ed25519,rsa-sha2-512",
            "aes128-ctr,aes256-ctr",
            "aes256-gcm@openssh.com",
            "hmac-sha2-256",
            "hmac-sha2-512",
            "none",
            "zlib@openssh.com,none",
            "",
            "en",
        ];
        let mut p = SshParser::new();
        let mut out = Vec::new();
        // Lines before the server's identification are allowed (RFC 4253 section 4.2).
        p.data(
            Dir::Resp,
            b"Welcome to the lab\r\nSSH-2.0-srv_1.0\r\n",
            1,
            &mut out,
        );
        p.data(Dir::Orig, b"SSH-2.0-cli_2.0 comment\r\n", 2, &mut out);
        let mut server = packet(&[2, 0, 0, 0, 0], 4); // SSH_MSG_IGNORE first
        server.extend(packet(&kexinit(lists), 7));
        p.data(Dir::Resp, &server, 3, &mut out);
        assert!(out.is_empty() && !p.done());
        p.data(Dir::Orig, &packet(&kexinit(lists), 4), 4, &mut out);
        assert!(p.done());
        let r = only_record(&out);
        assert_eq!(r.ts_ns, 1);
        assert_eq!(r.server.as_deref(), Some("SSH-2.0-srv_1.0"));
        assert_eq!(r.client.as_deref(), Some("SSH-2.0-cli_2.0 comment"));
        let c = "curve25519-sha256,diffie-hellman-group14-sha256;aes128-ctr,aes256-ctr;hmac-sha2-256;none";
        let s = "curve25519-sha256,diffie-hellman-group14-sha256;aes256-gcm@openssh.com;hmac-sha2-512;zlib@openssh.com,none";
        assert_eq!(r.hassh_algorithms.as_deref(), Some(c));
        assert_eq!(r.hassh_server_algorithms.as_deref(), Some(s));
        assert_eq!(r.hassh, Some(md5_hex(c)));
        assert_eq!(r.hassh_server, Some(md5_hex(s)));
        assert_eq!(r.client_kex.unwrap().languages_server_to_client, "en");
        let v = serde_json::to_value(only_record(&out)).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "client",
                "client_kex",
                "hassh",
                "hassh_algorithms",
                "hassh_server",
                "hassh_server_algorithms",
                "server",
                "server_kex",
                "version"
            ]
        );
    }

    #[test]
    fn versions() {
        for (client, server, v) in [
            ("SSH-2.0-a", "SSH-1.99-b", 2),
            ("SSH-1.5-a", "SSH-1.99-b", 1),
            ("SSH-2.0-a", "SSH-1.5-b", 1),
        ] {
            let mut p = SshParser::new();
            let mut out = Vec::new();
            p.data(Dir::Orig, format!("{client}\r\n").as_bytes(), 1, &mut out);
            p.data(Dir::Resp, format!("{server}\n").as_bytes(), 1, &mut out);
            if v == 1 {
                // SSH 1 has no KEXINIT: both banners end the record.
                assert!(p.done());
            }
            p.end(2, &mut out);
            let r = only_record(&out);
            assert_eq!(r.version, Some(v));
            assert_eq!(r.server.as_deref(), Some(server));
            assert!(r.hassh.is_none());
        }
    }

    #[test]
    fn malformed_input() {
        let cases: Vec<(Dir, Vec<u8>, &str)> = vec![
            (Dir::Orig, b"GET / HTTP/1.1\r\n".to_vec(), "ssh_bad_banner"),
            (
                Dir::Orig,
                [b"SSH-2.0-".to_vec(), vec![b'x'; 300]].concat(),
                "ssh_banner_too_long",
            ),
            (
                Dir::Orig,
                [b"SSH-2.0-".to_vec(), vec![b'x'; 250], b"\r\n".to_vec()].concat(),
                "ssh_banner_too_long",
            ),
            (Dir::Resp, vec![b'x'; 2000], "ssh_bad_banner"),
            (Dir::Orig, b"HELO".to_vec(), "ssh_bad_banner"),
            (Dir::Resp, b"motd\r\n".repeat(2000), "ssh_bad_banner"),
            (
                Dir::Orig,
                [
                    b"SSH-2.0-a\r\n".to_vec(),
                    35001u32.to_be_bytes().to_vec(),
                    vec![4],
                ]
                .concat(),
                "ssh_packet_too_long",
            ),
            (
                Dir::Orig,
                [b"SSH-2.0-a\r\n".to_vec(), vec![0, 0, 0, 8, 9]].concat(),
                "ssh_bad_packet",
            ),
            (
                Dir::Orig,
                [b"SSH-2.0-a\r\n".to_vec(), packet(&[20; 20], 4)].concat(),
                "ssh_bad_kexinit",
            ),
            (
                Dir::Orig,
                [b"SSH-2.0-a\r\n".to_vec(), packet(&[2], 4).repeat(17)].concat(),
                "ssh_no_kexinit",
            ),
        ];
        for (dir, bytes, name) in cases {
            let mut p = SshParser::new();
            let mut out = Vec::new();
            p.data(dir, &bytes, 1, &mut out);
            assert!(p.done(), "{name}");
            assert_eq!(weirds(&out), [name]);
            // A banner seen before the weird is still logged.
            let banner_seen = bytes.starts_with(b"SSH-2.0-a\r\n");
            assert_eq!(out.len(), 1 + usize::from(banner_seen), "{name}: {out:?}");
        }
        // The longest banner line allowed is 255 bytes with its CR LF.
        let mut p = SshParser::new();
        let mut out = Vec::new();
        let line = [b"SSH-2.0-".to_vec(), vec![b'x'; 245], b"\r\n".to_vec()].concat();
        assert_eq!(line.len(), MAX_BANNER_LEN);
        p.data(Dir::Orig, &line, 1, &mut out);
        p.end(2, &mut out);
        assert!(weirds(&out).is_empty());
    }

    #[test]
    fn gap_emits_and_stops() {
        let mut p = SshParser::new();
        let mut out = Vec::new();
        p.data(Dir::Orig, b"SSH-2.0-a\r\n", 1, &mut out);
        p.gap(Dir::Resp, 10, 2, &mut out);
        assert!(p.done());
        assert_eq!(only_record(&out).client.as_deref(), Some("SSH-2.0-a"));
        p.data(Dir::Resp, b"SSH-2.0-b\r\n", 3, &mut out);
        p.end(4, &mut out);
        assert_eq!(out.len(), 1);
    }
}
