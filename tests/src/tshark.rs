//! tshark as the reference for `mos-log`'s HTTP and TLS records: the HTTP requests and
//! responses and the TLS hellos Wireshark decodes in a capture, each with its `tcp.stream`,
//! frame, capture time and endpoints.
//!
//! One `tshark -T fields` run per capture reads every field with `-E occurrence=a` (all
//! occurrences, joined by an ASCII unit separator, which no decoded field holds). A frame
//! usually carries one HTTP message or one hello, and then each field's occurrences belong to
//! it. A frame with several messages (pipelined requests in one segment, several hellos in
//! one record) is split by position when every field has either one occurrence per message
//! or none; otherwise (a field missing from some of the messages only) the frame is read
//! again from tshark's JSON tree (`-T json -J "frame http tls"`), where each message is its
//! own object.
//!
//! Preferences are tshark's defaults, given explicitly so that a user's profile cannot change
//! them: TCP streams, HTTP headers and bodies and TLS records are reassembled, so a message is
//! reported in the frame that completes it.

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::procs::{tail, Proc};

/// The aggregator between a field's occurrences: the ASCII unit separator.
const AGG: char = '\u{1f}';

/// The display filter: frames with an HTTP message or a TLS ClientHello or ServerHello over
/// TCP (tshark also decodes HTTP over UDP, SSDP, which `mos-log` does not follow).
pub const DISPLAY_FILTER: &str = "tcp && (http.request || http.response || \
     tls.handshake.type == 1 || tls.handshake.type == 2)";

/// tshark's preferences for these runs (its defaults).
pub const PREFS: [&str; 4] = [
    "tcp.desegment_tcp_streams:TRUE",
    "http.desegment_headers:TRUE",
    "http.desegment_body:TRUE",
    "tls.desegment_ssl_records:TRUE",
];

/// The fields read, in column order.
pub const FIELDS: [&str; 19] = [
    "frame.number",
    "frame.time_epoch",
    "tcp.stream",
    "ip.src",
    "ipv6.src",
    "ip.dst",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "http.request.method",
    "http.request.uri",
    "http.host",
    "http.response.code",
    "tls.handshake.type",
    "tls.handshake.extensions_server_name",
    "tls.handshake.ja3",
    "tls.handshake.version",
    "tls.handshake.extensions.supported_version",
    "tls.handshake.ja3_full",
];

const F_FRAME: usize = 0;
const F_TIME: usize = 1;
const F_STREAM: usize = 2;
const F_IP_SRC: usize = 3;
const F_IP6_SRC: usize = 4;
const F_IP_DST: usize = 5;
const F_IP6_DST: usize = 6;
const F_SPORT: usize = 7;
const F_DPORT: usize = 8;
const F_METHOD: usize = 9;
const F_URI: usize = 10;
const F_HOST: usize = 11;
const F_CODE: usize = 12;
const F_HS_TYPE: usize = 13;
const F_SNI: usize = 14;
const F_JA3: usize = 15;
const F_HS_VERSION: usize = 16;
const F_SUPPORTED: usize = 17;
const F_JA3_FULL: usize = 18;

/// Where a frame went: every IP source and destination address it carries (more than one
/// inside a tunnel tshark decodes) and its TCP ports (the innermost TCP header's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// IPv4 and IPv6 source addresses, outermost first.
    pub src_addrs: Vec<IpAddr>,
    /// IPv4 and IPv6 destination addresses, outermost first.
    pub dst_addrs: Vec<IpAddr>,
    /// TCP source port.
    pub src_port: u16,
    /// TCP destination port.
    pub dst_port: u16,
}

/// What every item shares: the frame that completed it and its TCP stream.
#[derive(Debug, Clone, PartialEq)]
pub struct At {
    /// Wireshark's `tcp.stream` index.
    pub stream: u32,
    /// Frame number (1-based).
    pub frame: u64,
    /// The frame's capture time, seconds since the epoch.
    pub ts: f64,
    /// The frame's endpoints (source is the sender of the item).
    pub path: Endpoints,
}

/// One HTTP request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Where it was seen (source: the client).
    pub at: At,
    /// `http.request.method`.
    pub method: String,
    /// `http.request.uri`.
    pub uri: String,
    /// `http.host` (absent without a Host header).
    pub host: Option<String>,
}

/// One HTTP response.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Where it was seen (source: the server).
    pub at: At,
    /// `http.response.code`.
    pub code: u16,
}

/// One TLS ClientHello.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientHello {
    /// Where it was seen (source: the client).
    pub at: At,
    /// `tls.handshake.extensions_server_name` (the first name, absent without SNI).
    pub server_name: Option<String>,
    /// `tls.handshake.ja3` (absent for an SSL 2 hello, which has none).
    pub ja3: Option<String>,
    /// `tls.handshake.ja3_full`, the string hashed into `ja3`: five comma-separated fields
    /// when tshark read the whole hello, fewer when its dissector stopped on a malformed one.
    pub ja3_full: Option<String>,
}

/// One TLS ServerHello.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerHello {
    /// Where it was seen (source: the server).
    pub at: At,
    /// The version the server chose: its `supported_versions` extension when it sent one
    /// (TLS 1.3), else the hello's version field; absent when tshark shows neither.
    pub version: Option<u16>,
}

/// Everything read from one capture, each list in frame order (and message order within a
/// frame).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// HTTP requests.
    pub requests: Vec<Request>,
    /// HTTP responses.
    pub responses: Vec<Response>,
    /// TLS ClientHellos.
    pub client_hellos: Vec<ClientHello>,
    /// TLS ServerHellos.
    pub server_hellos: Vec<ServerHello>,
    /// Frames that had to be read again from the JSON tree.
    pub reread_frames: usize,
}

/// Zeek's (and `mos-log`'s) name of a TLS version number: `SSLv3` to `TLSv13`, the TLS 1.3
/// drafts (0x7fNN) as `TLSv13-draftNN`, anything else `unknown-N` (decimal).
pub fn version_name(v: u16) -> String {
    match v {
        0x0300 => "SSLv3".to_string(),
        0x0301 => "TLSv10".to_string(),
        0x0302 => "TLSv11".to_string(),
        0x0303 => "TLSv12".to_string(),
        0x0304 => "TLSv13".to_string(),
        0x7f00..=0x7fff => format!("TLSv13-draft{}", v & 0xff),
        _ => format!("unknown-{v}"),
    }
}

fn tshark_base(pcap: &Path) -> Command {
    let mut c = Command::new("tshark");
    c.arg("-n").arg("-r").arg(pcap);
    for p in PREFS {
        c.args(["-o", p]);
    }
    c
}

/// The `tshark -T fields` command for a capture.
pub fn fields_command(pcap: &Path) -> Command {
    let mut c = tshark_base(pcap);
    c.args(["-Y", DISPLAY_FILTER, "-T", "fields"]);
    c.args(["-E", "header=n", "-E", "separator=/t", "-E", "occurrence=a"]);
    c.args(["-E", &format!("aggregator={AGG}"), "-E", "quote=n"]);
    for f in FIELDS {
        c.args(["-e", f]);
    }
    c
}

/// The `tshark -T json` command that reads `frames` of a capture again, message by message.
pub fn json_command(pcap: &Path, frames: &[u64]) -> Command {
    let list: Vec<String> = frames.iter().map(u64::to_string).collect();
    let mut c = tshark_base(pcap);
    c.args([
        "-Y",
        &format!("frame.number in {{{}}}", list.join(",")),
        "-T",
        "json",
        "--no-duplicate-keys",
        "-J",
        "frame http tls",
    ]);
    c
}

/// A started `tshark -T fields` run on one capture; [`Running::finish`] waits for it and
/// reads what it printed. Started first so that it runs beside the sensor.
#[derive(Debug)]
pub struct Running {
    proc: Proc,
    pcap: std::path::PathBuf,
    dir: std::path::PathBuf,
}

/// Starts tshark on `pcap`; its output goes to files in `dir`.
pub fn start(pcap: &Path, dir: &Path) -> Result<Running> {
    let proc = Proc::spawn("tshark", fields_command(pcap), dir)?;
    Ok(Running {
        proc,
        pcap: pcap.to_path_buf(),
        dir: dir.to_path_buf(),
    })
}

impl Running {
    /// Waits up to `timeout` for tshark, then parses its output (reading ambiguous frames
    /// again from the JSON tree).
    pub fn finish(mut self, timeout: Duration) -> Result<View> {
        let st = self.proc.wait(timeout)?;
        ensure!(
            st.success(),
            "tshark exited with {st}; stderr:\n{}",
            tail(&self.proc.stderr())
        );
        let text = self.proc.stdout();
        let (mut view, ambiguous) = parse_fields(&text)?;
        if !ambiguous.is_empty() {
            let mut p = Proc::spawn(
                "tshark-json",
                json_command(&self.pcap, &ambiguous),
                &self.dir,
            )?;
            let st = p.wait(timeout)?;
            ensure!(
                st.success(),
                "tshark (JSON) exited with {st}; stderr:\n{}",
                tail(&p.stderr())
            );
            let json: Value = serde_json::from_str(&p.stdout()).context("tshark's JSON")?;
            let rows = parse_fields_rows(&text)?;
            let by_frame: BTreeMap<u64, &Row> = rows.iter().map(|r| (r.frame, r)).collect();
            let mut extra = View::default();
            for pkt in json.as_array().context("tshark's JSON is not a list")? {
                let layers = &pkt["_source"]["layers"];
                let frame: u64 = str_of(&layers["frame"]["frame.number"])
                    .context("a packet without frame.number")?
                    .parse()?;
                let row = by_frame
                    .get(&frame)
                    .with_context(|| format!("frame {frame} was not in the fields output"))?;
                split_json(row, layers, &mut extra)?;
            }
            view.reread_frames = ambiguous.len();
            merge(&mut view, extra);
        }
        Ok(view)
    }
}

/// Runs tshark on `pcap` (scratch files in `dir`) and reads its HTTP and TLS items.
pub fn read_capture(pcap: &Path, dir: &Path, timeout: Duration) -> Result<View> {
    start(pcap, dir)?.finish(timeout)
}

/// Adds `extra`'s items to `view`, keeping every list in frame order.
fn merge(view: &mut View, extra: View) {
    view.requests.extend(extra.requests);
    view.responses.extend(extra.responses);
    view.client_hellos.extend(extra.client_hellos);
    view.server_hellos.extend(extra.server_hellos);
    // Stable: messages of one frame keep their order.
    view.requests.sort_by_key(|r| r.at.frame);
    view.responses.sort_by_key(|r| r.at.frame);
    view.client_hellos.sort_by_key(|r| r.at.frame);
    view.server_hellos.sort_by_key(|r| r.at.frame);
}

/// One line of the fields output: the frame's own values, and each field's occurrences.
#[derive(Debug)]
struct Row {
    frame: u64,
    at: At,
    cols: Vec<Vec<String>>,
}

fn parse_fields_rows(text: &str) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let ctx = || format!("tshark line {}: {line:?}", i + 1);
        let cols: Vec<Vec<String>> = line
            .split('\t')
            .map(|c| {
                if c.is_empty() {
                    Vec::new()
                } else {
                    c.split(AGG).map(str::to_string).collect()
                }
            })
            .collect();
        ensure!(
            cols.len() == FIELDS.len(),
            "{}: {} columns, expected {}",
            ctx(),
            cols.len(),
            FIELDS.len()
        );
        let one = |f: usize| -> Result<&str> {
            cols[f]
                .last()
                .map(String::as_str)
                .with_context(|| format!("{}: no {}", ctx(), FIELDS[f]))
        };
        let addrs = |a: usize, b: usize| -> Result<Vec<IpAddr>> {
            cols[a]
                .iter()
                .chain(&cols[b])
                .map(|s| {
                    s.parse()
                        .with_context(|| format!("{}: address {s:?}", ctx()))
                })
                .collect()
        };
        let frame: u64 = one(F_FRAME)?.parse().with_context(ctx)?;
        let at = At {
            stream: one(F_STREAM)?.parse().with_context(ctx)?,
            frame,
            ts: one(F_TIME)?.parse().with_context(ctx)?,
            path: Endpoints {
                src_addrs: addrs(F_IP_SRC, F_IP6_SRC)?,
                dst_addrs: addrs(F_IP_DST, F_IP6_DST)?,
                src_port: one(F_SPORT)?.parse().with_context(ctx)?,
                dst_port: one(F_DPORT)?.parse().with_context(ctx)?,
            },
        };
        rows.push(Row { frame, at, cols });
    }
    Ok(rows)
}

fn parse_u16(s: &str) -> Result<u16> {
    let s = s.trim();
    Ok(match s.strip_prefix("0x") {
        Some(h) => u16::from_str_radix(h, 16)?,
        None => s.parse()?,
    })
}

/// Whether a field with `n` occurrences can be split among `k` messages by position.
fn aligned(n: usize, k: usize) -> bool {
    n == 0 || n == k
}

/// Parses the fields output. Returns the view of the frames that split by position, and the
/// frames that do not (to read again from the JSON tree).
pub fn parse_fields(text: &str) -> Result<(View, Vec<u64>)> {
    let mut view = View::default();
    let mut ambiguous = Vec::new();
    for row in parse_fields_rows(text)? {
        if !split_row(&row, &mut view)? {
            ambiguous.push(row.frame);
        }
    }
    Ok((view, ambiguous))
}

/// Splits one row into its messages; `false` (and nothing added) when the occurrences do not
/// split by position.
fn split_row(row: &Row, view: &mut View) -> Result<bool> {
    let c = &row.cols;
    let (nreq, nresp) = (c[F_METHOD].len(), c[F_CODE].len());
    let types: Vec<u8> = c[F_HS_TYPE]
        .iter()
        .map(|t| {
            t.parse::<u8>()
                .with_context(|| format!("handshake type {t:?}"))
        })
        .collect::<Result<_>>()?;
    let nch = types.iter().filter(|&&t| t == 1).count();
    let nsh = types.iter().filter(|&&t| t == 2).count();
    let kinds = [nreq > 0, nresp > 0, nch > 0, nsh > 0]
        .iter()
        .filter(|&&b| b)
        .count();
    let ok = kinds <= 1
        && (c[F_URI].len() == nreq && aligned(c[F_HOST].len(), nreq))
        && (nch == 0
            || (aligned(c[F_SNI].len(), nch)
                && aligned(c[F_JA3].len(), nch)
                && aligned(c[F_JA3_FULL].len(), nch)))
        && (nsh <= 1);
    if !ok {
        return Ok(false);
    }
    let at = || row.at.clone();
    for i in 0..nreq {
        view.requests.push(Request {
            at: at(),
            method: c[F_METHOD][i].clone(),
            uri: c[F_URI][i].clone(),
            host: c[F_HOST].get(i).cloned(),
        });
    }
    for code in &c[F_CODE] {
        view.responses.push(Response {
            at: at(),
            code: code
                .parse()
                .with_context(|| format!("response code {code:?}"))?,
        });
    }
    for i in 0..nch {
        view.client_hellos.push(ClientHello {
            at: at(),
            server_name: c[F_SNI].get(i).cloned(),
            ja3: c[F_JA3].get(i).cloned(),
            ja3_full: c[F_JA3_FULL].get(i).cloned(),
        });
    }
    if nsh == 1 {
        // One hello in the frame: its supported_versions extension holds one version (the
        // chosen one) when present.
        let version = match (c[F_SUPPORTED].as_slice(), c[F_HS_VERSION].as_slice()) {
            ([v], _) => Some(parse_u16(v)?),
            ([], [v]) => Some(parse_u16(v)?),
            _ => None,
        };
        view.server_hellos.push(ServerHello { at: at(), version });
    }
    Ok(true)
}

fn str_of(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Array(a) => a.first().and_then(str_of),
        _ => None,
    }
}

/// Each element of `v` if it is a list (`--no-duplicate-keys` makes repeated keys a list),
/// else `v` itself.
fn each(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// The first value of `key` anywhere under `v` (depth first).
fn find<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => {
            if let Some(x) = m.get(key) {
                return Some(x);
            }
            m.values().find_map(|x| find(x, key))
        }
        Value::Array(a) => a.iter().find_map(|x| find(x, key)),
        _ => None,
    }
}

/// Every object under `v` (depth first, lists in order) that is the value of `key`.
fn find_all<'a>(v: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == key {
                    out.extend(each(x));
                } else {
                    find_all(x, key, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| find_all(x, key, out)),
        _ => {}
    }
}

/// Splits one frame's JSON tree into its messages.
fn split_json(row: &Row, layers: &Value, view: &mut View) -> Result<()> {
    let at = || row.at.clone();
    let text = |v: &Value, key: &str| find(v, key).and_then(str_of).map(str::to_string);
    for http in each(&layers["http"]) {
        if let Some(method) = text(http, "http.request.method") {
            view.requests.push(Request {
                at: at(),
                method,
                uri: text(http, "http.request.uri").unwrap_or_default(),
                host: text(http, "http.host"),
            });
        } else if let Some(code) = text(http, "http.response.code") {
            view.responses.push(Response {
                at: at(),
                code: code
                    .parse()
                    .with_context(|| format!("response code {code:?}"))?,
            });
        }
    }
    let mut handshakes = Vec::new();
    find_all(&layers["tls"], "tls.handshake", &mut handshakes);
    for hs in handshakes {
        match text(hs, "tls.handshake.type").as_deref() {
            Some("1") => view.client_hellos.push(ClientHello {
                at: at(),
                server_name: text(hs, "tls.handshake.extensions_server_name"),
                ja3: text(hs, "tls.handshake.ja3"),
                ja3_full: text(hs, "tls.handshake.ja3_full"),
            }),
            Some("2") => {
                let version = match text(hs, "tls.handshake.extensions.supported_version")
                    .or_else(|| text(hs, "tls.handshake.version"))
                {
                    Some(v) => Some(parse_u16(&v)?),
                    None => None,
                };
                view.server_hellos.push(ServerHello { at: at(), version });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Fails unless tshark runs (the comparison needs it; a missing tool is an error, never a
/// skip).
pub fn check_installed() -> Result<String> {
    let out = Command::new("tshark")
        .arg("-v")
        .output()
        .context("running tshark -v (install tshark: scripts/setup.sh)")?;
    if !out.status.success() {
        bail!("tshark -v exited with {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fields line; missing trailing columns are empty.
    fn line(cols: &[&str]) -> String {
        assert!(cols.len() <= FIELDS.len());
        let mut v = cols.to_vec();
        v.resize(FIELDS.len(), "");
        v.join("\t")
    }

    #[test]
    fn one_request_and_one_response() {
        let u = "\u{1f}";
        let req = line(&[
            "4", "1.5", "0", "10.0.0.1", "", "10.0.0.2", "", "1234", "80", "GET", "/a,b", "h", "",
            "", "", "", "", "",
        ]);
        let resp = line(&[
            "6", "1.75", "0", "10.0.0.2", "", "10.0.0.1", "", "80", "1234", "", "", "", "200", "",
            "", "", "", "",
        ]);
        let two = line(&[
            "7",
            "2",
            "3",
            "",
            "::1",
            "",
            "::2",
            "5",
            "80",
            &format!("GET{u}HEAD"),
            &format!("/1{u}/2"),
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ]);
        let (v, amb) = parse_fields(&format!("{req}\n{resp}\n{two}\n")).unwrap();
        assert!(amb.is_empty());
        assert_eq!(v.requests.len(), 3);
        assert_eq!(v.requests[0].uri, "/a,b");
        assert_eq!(v.requests[0].host.as_deref(), Some("h"));
        assert_eq!(v.requests[0].at.path.src_port, 1234);
        assert_eq!(v.requests[2].method, "HEAD");
        assert_eq!(v.requests[2].host, None);
        assert_eq!(
            v.requests[2].at.path.src_addrs,
            ["::1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(v.responses[0].code, 200);
        assert_eq!(v.responses[0].at.ts, 1.75);
    }

    #[test]
    fn a_host_missing_from_one_of_two_requests_is_ambiguous() {
        let u = "\u{1f}";
        let two = line(&[
            "7",
            "2",
            "3",
            "1.1.1.1",
            "",
            "2.2.2.2",
            "",
            "5",
            "80",
            &format!("GET{u}GET"),
            &format!("/1{u}/2"),
            "only-one",
            "",
            "",
            "",
            "",
            "",
            "",
        ]);
        let (v, amb) = parse_fields(&two).unwrap();
        assert_eq!(amb, [7]);
        assert!(v.requests.is_empty());
    }

    #[test]
    fn hellos_and_versions() {
        let u = "\u{1f}";
        let ch = line(&[
            "1",
            "1",
            "0",
            "1.1.1.1",
            "",
            "2.2.2.2",
            "",
            "5",
            "443",
            "",
            "",
            "",
            "",
            "1",
            "example.com",
            "abc",
            "0x0303",
            &format!("0x0304{u}0x0303"),
        ]);
        let sh13 = line(&[
            "2", "1", "0", "2.2.2.2", "", "1.1.1.1", "", "443", "5", "", "", "", "", "2", "", "",
            "0x0303", "0x0304",
        ]);
        let sh12 = line(&[
            "3",
            "1",
            "1",
            "2.2.2.2",
            "",
            "1.1.1.1",
            "",
            "443",
            "6",
            "",
            "",
            "",
            "",
            &format!("2{u}11{u}14"),
            "",
            "",
            "0x0303",
            "",
        ]);
        let (v, amb) = parse_fields(&format!("{ch}\n{sh13}\n{sh12}")).unwrap();
        assert!(amb.is_empty());
        assert_eq!(
            v.client_hellos[0].server_name.as_deref(),
            Some("example.com")
        );
        assert_eq!(v.client_hellos[0].ja3.as_deref(), Some("abc"));
        assert_eq!(v.server_hellos[0].version, Some(0x0304));
        assert_eq!(v.server_hellos[1].version, Some(0x0303));
        assert_eq!(version_name(0x0304), "TLSv13");
        assert_eq!(version_name(0x7f1c), "TLSv13-draft28");
        assert_eq!(version_name(0xfb1a), "unknown-64282");
    }

    #[test]
    fn json_tree_splits_messages() {
        let row = Row {
            frame: 9,
            at: At {
                stream: 1,
                frame: 9,
                ts: 0.0,
                path: Endpoints {
                    src_addrs: vec![],
                    dst_addrs: vec![],
                    src_port: 1,
                    dst_port: 2,
                },
            },
            cols: vec![],
        };
        let layers: Value = serde_json::json!({
            "frame": {"frame.number": "9"},
            "http": [
                {"GET /1 HTTP/1.1\\r\\n": {"http.request.method": "GET", "http.request.uri": "/1"},
                 "http.host": "a"},
                {"GET /2 HTTP/1.1\\r\\n": {"http.request.method": "GET", "http.request.uri": "/2"}}
            ],
            "tls": {"tls.record": {"tls.handshake": [
                {"tls.handshake.type": "1", "tls.handshake.ja3": "x"},
                {"tls.handshake.type": "1", "tls.handshake.ja3": "y",
                 "Extension: server_name": {"tls.handshake.extensions_server_name": "s"}}
            ]}}
        });
        let mut v = View::default();
        split_json(&row, &layers, &mut v).unwrap();
        assert_eq!(v.requests.len(), 2);
        assert_eq!(v.requests[0].host.as_deref(), Some("a"));
        assert_eq!(v.requests[1].host, None);
        assert_eq!(v.requests[1].uri, "/2");
        assert_eq!(v.client_hellos.len(), 2);
        assert_eq!(v.client_hellos[0].server_name, None);
        assert_eq!(v.client_hellos[1].server_name.as_deref(), Some("s"));
    }
}
