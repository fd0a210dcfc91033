//! `mos-grep` against the real sensor: patterns placed across segment boundaries, in
//! retransmitted and out-of-order segments, after and across a lost segment, found exactly
//! once at the right offset, side and capture time (a synthetic capture); on corpus HTTP
//! captures, every match equal to what a search of the streams `mos-sensor --dump` writes
//! finds (the test's own matcher, and `grep -o -b -a` where grep can say the pattern);
//! `--context`, `--side`, `--max-matches-per-flow`, `-i`, `-f`; bad arguments; a signal and a
//! killed sensor. Needs the release binaries (`cargo build --release -p mos-analyzers --bins`,
//! `cargo build --release -p mos-sensor`).

use anyhow::{bail, ensure, Context, Result};
use mos_tests::addr::parse_endpoint;
use mos_tests::flows::{parse_flows, FlowRecord};
use mos_tests::locate::{bin, corpus_dir, sensor_bin};
use mos_tests::pcap::{flags, tcp_frame, PcapWriter, Segment};
use mos_tests::procs::{assert_no_panic, assert_one_line, cmd, tail, wait_for_socket, Proc};
use mos_tests::runner::{default_workers, parallel_map, ScratchDir};
use mos_tests::synth::XorShift;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::BufWriter;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest any process of these tests may take.
const TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Patterns, and the test's own matcher

/// A pattern as the test gives it to `mos-grep`, with a matcher of its own (no regex engine):
/// `at(text, s)` is the length of the pattern's match at the start of `s`, if any.
#[derive(Clone, Copy)]
struct Pat {
    text: &'static str,
    regex: bool,
    at: fn(&str, &[u8]) -> Option<usize>,
    /// Whether `grep -E`/`grep -F` says the same pattern (no line break in it).
    grep: bool,
}

fn lit(text: &'static str) -> Pat {
    Pat {
        text,
        regex: false,
        at: |t, s| s.starts_with(t.as_bytes()).then_some(t.len()),
        grep: !text.contains('\n'),
    }
}

fn re(text: &'static str, at: fn(&str, &[u8]) -> Option<usize>) -> Pat {
    Pat {
        text,
        regex: true,
        at,
        grep: true,
    }
}

fn leading(s: &[u8], class: fn(&u8) -> bool) -> usize {
    s.iter().take_while(|b| class(b)).count()
}

/// `[0-9]{3} OK`
fn three_digits_ok(_: &str, s: &[u8]) -> Option<usize> {
    (s.len() >= 6 && s[..3].iter().all(u8::is_ascii_digit) && &s[3..6] == b" OK").then_some(6)
}

/// `id=[0-9]{6};`
fn id_six(_: &str, s: &[u8]) -> Option<usize> {
    (s.len() >= 10
        && s.starts_with(b"id=")
        && s[3..9].iter().all(u8::is_ascii_digit)
        && s[9] == b';')
        .then_some(10)
}

/// `X[0-9]+`
fn x_digits(_: &str, s: &[u8]) -> Option<usize> {
    let n = leading(s.get(1..)?, u8::is_ascii_digit);
    (s[0] == b'X' && n > 0).then_some(1 + n)
}

/// `SPLIT-[A-Z]{6}`
fn split_six(_: &str, s: &[u8]) -> Option<usize> {
    (s.len() >= 12 && s.starts_with(b"SPLIT-") && s[6..12].iter().all(u8::is_ascii_uppercase))
        .then_some(12)
}

/// `Content-Length: [0-9]+`
fn content_length(_: &str, s: &[u8]) -> Option<usize> {
    let p = b"Content-Length: ";
    let n = leading(s.get(p.len()..)?, u8::is_ascii_digit);
    (s.starts_with(p) && n > 0).then_some(p.len() + n)
}

/// Each pattern's leftmost non-overlapping matches in `stream`: (pattern_id, offset, len).
fn reference(pats: &[Pat], stream: &[u8]) -> Vec<(usize, u64, u64)> {
    let mut v = Vec::new();
    for (id, p) in pats.iter().enumerate() {
        let mut i = 0;
        while i < stream.len() {
            match (p.at)(p.text, &stream[i..]) {
                Some(n) if n > 0 => {
                    v.push((id, i as u64, n as u64));
                    i += n;
                }
                _ => i += 1,
            }
        }
    }
    v.sort_unstable();
    v
}

/// What `LC_ALL=C grep -o -b -a` finds of pattern `p` in `file`: (offset, len) of each match.
fn grep_matches(p: &Pat, file: &Path) -> Result<Vec<(u64, u64)>> {
    let out = std::process::Command::new("grep")
        .env("LC_ALL", "C")
        .args([
            "-o",
            "-b",
            "-a",
            if p.regex { "-E" } else { "-F" },
            "-e",
            p.text,
        ])
        .arg(file)
        .output()
        .context("running grep")?;
    // 1: no match.
    ensure!(
        out.status.code().is_some_and(|c| c <= 1),
        "grep on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v = Vec::new();
    for line in out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let colon = line.iter().position(|&b| b == b':').context("grep line")?;
        let off: u64 = std::str::from_utf8(&line[..colon])?.parse()?;
        v.push((off, (line.len() - colon - 1) as u64));
    }
    Ok(v)
}

/// The records' spelling of bytes: printable ASCII but `\` as is, the rest as `\xNN`.
fn escape(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if (0x20..0x7f).contains(&c) && c != b'\\' {
                (c as char).to_string()
            } else {
                format!("\\x{c:02x}")
            }
        })
        .collect()
}

/// The `-e`/`-E` arguments of `pats`, in order.
fn pattern_args(pats: &[Pat]) -> Vec<String> {
    pats.iter()
        .flat_map(|p| {
            [
                if p.regex { "-E" } else { "-e" }.to_string(),
                p.text.to_string(),
            ]
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Records

/// One `match` record.
#[derive(Clone, Debug, PartialEq)]
struct Rec {
    ts: f64,
    uid: String,
    client: SocketAddr,
    server: SocketAddr,
    orig: bool,
    offset: u64,
    len: u64,
    pattern: String,
    pattern_id: usize,
    /// before, after, matched
    context: Option<[String; 3]>,
}

impl Rec {
    fn key(&self) -> (bool, usize, u64, u64) {
        (self.orig, self.pattern_id, self.offset, self.len)
    }
}

/// The records of a `match` log, each checked for the schema: the fields in order, nothing
/// else, the context all or nothing.
fn parse_records(text: &str) -> Result<Vec<Rec>> {
    const ORDER: [&str; 11] = [
        "\"ts\":",
        "\"uid\":",
        "\"id.orig_h\":",
        "\"id.orig_p\":",
        "\"id.resp_h\":",
        "\"id.resp_p\":",
        "\"side\":",
        "\"offset\":",
        "\"len\":",
        "\"pattern\":",
        "\"pattern_id\":",
    ];
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let ctx = || format!("record {}: {line}", i + 1);
        let v: serde_json::Value = serde_json::from_str(line).with_context(ctx)?;
        let o = v.as_object().with_context(ctx)?;
        let mut last = 0;
        for k in ORDER {
            let at = line.find(k).with_context(|| format!("no {k} in {line}"))?;
            ensure!(at >= last, "{k} out of order in {line}");
            last = at;
        }
        let has_ctx = ["before", "after", "matched"].map(|k| o.contains_key(k));
        ensure!(
            has_ctx == [true; 3] || has_ctx == [false; 3],
            "context fields partly there: {line}"
        );
        ensure!(
            o.len() == ORDER.len() + if has_ctx[0] { 3 } else { 0 },
            "unexpected fields in {line}"
        );
        let s = |k: &str| -> Result<String> {
            Ok(o[k]
                .as_str()
                .with_context(|| format!("{k} in {line}"))?
                .to_string())
        };
        let n =
            |k: &str| -> Result<u64> { o[k].as_u64().with_context(|| format!("{k} in {line}")) };
        let host = |k: &str| -> Result<IpAddr> { Ok(s(k)?.parse()?) };
        let side = s("side")?;
        ensure!(side == "orig" || side == "resp", "side {side:?}");
        let uid = s("uid")?;
        ensure!(
            uid.len() == 18
                && uid.starts_with('C')
                && uid[1..].bytes().all(|b| b.is_ascii_alphanumeric()),
            "uid {uid:?}"
        );
        out.push(Rec {
            ts: o["ts"].as_f64().with_context(ctx)?,
            uid,
            client: SocketAddr::new(host("id.orig_h")?, n("id.orig_p")? as u16),
            server: SocketAddr::new(host("id.resp_h")?, n("id.resp_p")? as u16),
            orig: side == "orig",
            offset: n("offset")?,
            len: n("len")?,
            pattern: s("pattern")?,
            pattern_id: n("pattern_id")? as usize,
            context: if has_ctx[0] {
                Some([s("before")?, s("after")?, s("matched")?])
            } else {
                None
            },
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Running the sensor and the analyzers

/// The sensor's `--dump` of a capture: each connection's record and its two streams
/// ([c2s, s2c], lost bytes as zeros).
struct Dump {
    flows: Vec<(FlowRecord, [Vec<u8>; 2])>,
    dir: PathBuf,
}

impl Dump {
    fn read(dir: &Path) -> Result<Dump> {
        let text = std::fs::read_to_string(dir.join("flows.jsonl"))?;
        let mut flows = Vec::new();
        for f in parse_flows(&text)? {
            let read = |name: &Option<String>| -> Result<Vec<u8>> {
                match name {
                    Some(n) => Ok(std::fs::read(dir.join(n))?),
                    None => Ok(Vec::new()),
                }
            };
            let streams = [read(&f.c2s_file)?, read(&f.s2c_file)?];
            flows.push((f, streams));
        }
        Ok(Dump {
            flows,
            dir: dir.to_path_buf(),
        })
    }

    fn endpoints(f: &FlowRecord) -> Result<(SocketAddr, SocketAddr)> {
        Ok((parse_endpoint(&f.client)?, parse_endpoint(&f.server)?))
    }
}

/// Replays `pcap` to one `mos-grep` per entry of `runs` (its arguments, `--control` added),
/// the sensor writing its own `--dump` of the streams to `work/ref`. Every process must end
/// well; returns the analyzers (their output read afterwards).
fn replay(work: &Path, pcap: &Path, runs: &[Vec<String>]) -> Result<Vec<Proc>> {
    let control = work.join("c.sock");
    let dump = work.join("ref");
    let mut c = cmd(
        &sensor_bin()?,
        &[
            &"--pcap",
            &pcap,
            &"--control",
            &control,
            &"--wait-analyzers",
            &runs.len().to_string(),
            &"--dump",
            &dump,
        ],
    );
    c.current_dir(work);
    let mut sensor = Proc::spawn("sensor", c, work)?;
    wait_for_socket(&mut sensor, &control, TIMEOUT)?;
    let mut greps = Vec::new();
    for (i, args) in runs.iter().enumerate() {
        let mut c = cmd(&bin("mos-grep")?, &[&"--control", &control]);
        c.args(args);
        greps.push(Proc::spawn(&format!("grep{i}"), c, work)?);
    }
    let deadline = Instant::now() + TIMEOUT;
    let st = sensor.wait_until(deadline)?;
    let serr = sensor.stderr();
    ensure!(
        st.code() == Some(0) || (st.code() == Some(2) && serr.contains("the replay stopped there")),
        "sensor exited with {st}; stderr:\n{}",
        tail(&serr)
    );
    for g in &mut greps {
        let st = g.wait_until(deadline)?;
        ensure!(
            st.success(),
            "{} ({:?}) exited with {st}; stderr:\n{}",
            g.name(),
            runs,
            tail(&g.stderr())
        );
        assert_no_panic(g)?;
        ensure!(
            g.stderr().contains("mos-grep: ") && g.stderr().contains(" bytes searched ("),
            "{}: no summary in {}",
            g.name(),
            g.stderr()
        );
    }
    Ok(greps)
}

/// The number in `text` just before `what` (in the summary line).
fn count_before(text: &str, what: &str) -> Result<u64> {
    let at = text
        .find(what)
        .with_context(|| format!("no {what:?} in {text}"))?;
    let digits: String = text[..at]
        .trim_end()
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Ok(digits.parse()?)
}

/// Checks the records' context against the streams: before and after as far as the stream
/// goes (not past `holes`, the lost ranges of that direction), matched the bytes at the match.
fn check_context(rec: &Rec, stream: &[u8], holes: &[(u64, u64)], n: u64) -> Result<()> {
    let [before, after, matched] = rec.context.as_ref().context("no context")?;
    let (s, e) = (rec.offset, rec.offset + rec.len);
    let mut lo = s.saturating_sub(n);
    let mut hi = (e + n).min(stream.len() as u64);
    for &(h0, h1) in holes {
        if h1 <= s {
            lo = lo.max(h1);
        }
        if h0 >= e {
            hi = hi.min(h0);
        }
    }
    let b = |x: u64, y: u64| escape(&stream[x as usize..y as usize]);
    ensure!(
        (before, matched, after) == (&b(lo, s), &b(s, e), &b(e, hi)),
        "context of {rec:?}: want before {:?} matched {:?} after {:?}",
        b(lo, s),
        b(s, e),
        b(e, hi)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (a) A synthetic capture with the patterns where reassembly is hard

/// Writes one segment (source, seq, ack, flags, payload); returns its capture time in µs.
type SendFn<'a> = dyn FnMut(SocketAddr, u32, u32, u8, &[u8]) -> Result<u64> + 'a;

/// What the synthetic capture holds, with the capture times the test expects.
struct Synthetic {
    client: SocketAddr,
    server: SocketAddr,
    /// The client's stream, the lost segment as zeros.
    orig: Vec<u8>,
    resp: Vec<u8>,
    /// The lost range of `orig`.
    hole: (u64, u64),
    /// (pattern text, orig?, offset, capture time in µs of the packet that completes it).
    placed: Vec<(&'static str, bool, u64, u64)>,
}

/// Writes the synthetic capture: one connection whose client sends its stream in segments cut
/// through the patterns, one segment twice and one partly again, one never (the server
/// acknowledges past it), one of 5 bytes inside a pattern; the server's stream has a pattern
/// across a segment sent before the one ahead of it. Sequence numbers wrap in the client's
/// stream.
fn synthetic(path: &Path) -> Result<Synthetic> {
    use flags::{ACK, FIN, PSH, SYN};
    let client: SocketAddr = "10.9.0.1:41000".parse()?;
    let server: SocketAddr = "10.9.0.2:80".parse()?;
    let mut rng = XorShift::new(17);
    let mut filler = |n: usize| -> Vec<u8> { (0..n).map(|_| b'a' + rng.below(26) as u8).collect() };
    let mut orig = filler(1800);
    let mut resp = filler(600);
    let place =
        |s: &mut Vec<u8>, at: usize, p: &str| s[at..at + p.len()].copy_from_slice(p.as_bytes());
    place(&mut orig, 200, "NEEDLE-ACROSS-SEGMENTS");
    place(&mut orig, 522, "RETRANSMITTED-NEEDLE");
    place(&mut orig, 930, "LOST-NEEDLE");
    place(&mut orig, 990, "NEEDLE-SPANNING-HOLE");
    place(&mut orig, 1040, "AFTER-THE-GAP");
    place(&mut orig, 1400, "THREE-SEGMENT-SPLIT-NEEDLE");
    place(&mut orig, 1640, "id=123456;");
    place(&mut orig, 1692, "X1234567");
    place(&mut resp, 0, "HTTP/1.1 200 OK\r\n");
    place(&mut resp, 390, "OUT-OF-ORDER-NEEDLE");
    place(&mut resp, 500, "HTTP/1.1 404 OK");

    let f = std::fs::File::create(path)?;
    let mut w = PcapWriter::new(BufWriter::new(f))?;
    let mut ts = 1_700_000_000_000_000u64;
    let (ci, si) = (0xffff_fe00u32, 77u32);
    let (c1, s1) = (ci.wrapping_add(1), si.wrapping_add(1));
    let mut send = |src: SocketAddr, seq: u32, ack: u32, fl: u8, payload: &[u8]| -> Result<u64> {
        let dst = if src == client { server } else { client };
        ts += 1000;
        let seg = Segment {
            src,
            dst,
            seq,
            ack,
            flags: fl,
            window: 65_535,
            mss: Some(1460),
            payload,
        };
        w.packet(ts, &tcp_frame(&seg))?;
        Ok(ts)
    };
    let co = |o: usize| c1.wrapping_add(o as u32);
    let so = |o: usize| s1.wrapping_add(o as u32);
    send(client, ci, 0, SYN, &[])?;
    send(server, si, c1, SYN | ACK, &[])?;
    send(client, c1, s1, ACK, &[])?;
    let mut t = BTreeMap::new();
    let cseg = |send: &mut SendFn<'_>, a: usize, b: usize| -> Result<u64> {
        send(client, co(a), s1, PSH | ACK, &orig[a..b])
    };
    t.insert("seg1", cseg(&mut send, 0, 211)?);
    t.insert("seg2", cseg(&mut send, 211, 500)?);
    t.insert("seg3", cseg(&mut send, 500, 560)?);
    t.insert("seg4", cseg(&mut send, 560, 900)?);
    cseg(&mut send, 500, 560)?; // seg3 again
    cseg(&mut send, 540, 700)?; // part of seg3 and seg4 again
                                // [900, 1000) is never sent; the server acknowledges past it once seg6 is in.
    t.insert("seg6", cseg(&mut send, 1000, 1300)?);
    t.insert("ack", send(server, s1, co(1300), ACK, &[])?);
    t.insert("seg7", cseg(&mut send, 1300, 1410)?);
    t.insert("seg8", cseg(&mut send, 1410, 1415)?);
    t.insert("seg9", cseg(&mut send, 1415, 1600)?);
    t.insert("seg10", cseg(&mut send, 1600, 1645)?);
    t.insert("seg11", cseg(&mut send, 1645, 1696)?);
    t.insert("seg12", cseg(&mut send, 1696, 1800)?);
    let mut sseg = |a: usize, b: usize| send(server, so(a), co(1800), PSH | ACK, &resp[a..b]);
    t.insert("r1", sseg(0, 5)?);
    t.insert("r2", sseg(5, 300)?);
    t.insert("r4", sseg(400, 600)?); // ahead of r3
    t.insert("r3", sseg(300, 400)?);
    send(client, co(1800), so(600), ACK, &[])?;
    send(client, co(1800), so(600), FIN | ACK, &[])?;
    send(server, so(600), co(1801), FIN | ACK, &[])?;
    send(client, co(1801), so(601), ACK, &[])?;
    w.finish()?;
    orig[900..1000].fill(0);
    let placed = vec![
        ("NEEDLE-ACROSS-SEGMENTS", true, 200, t["seg2"]),
        ("RETRANSMITTED-NEEDLE", true, 522, t["seg3"]),
        // Brought in order by the acknowledgment that declared the hole lost.
        ("AFTER-THE-GAP", true, 1040, t["ack"]),
        ("THREE-SEGMENT-SPLIT-NEEDLE", true, 1400, t["seg9"]),
        ("SPLIT-[A-Z]{6}", true, 1414, t["seg9"]),
        ("id=[0-9]{6};", true, 1640, t["seg11"]),
        // Its digits go on in seg12: held until then, reported whole.
        ("X[0-9]+", true, 1692, t["seg12"]),
        ("HTTP/1.1", false, 0, t["r2"]),
        ("[0-9]{3} OK", false, 9, t["r2"]),
        // Completed in order by r3, sent after r4: so are the matches inside r4.
        ("OUT-OF-ORDER-NEEDLE", false, 390, t["r3"]),
        ("HTTP/1.1", false, 500, t["r3"]),
        ("[0-9]{3} OK", false, 509, t["r3"]),
    ];
    Ok(Synthetic {
        client,
        server,
        orig,
        resp,
        hole: (900, 1000),
        placed,
    })
}

#[test]
fn patterns_across_segments_retransmissions_and_gaps_are_found_once() -> Result<()> {
    let work = ScratchDir::new("grep-synth")?;
    let w = work.path();
    let pcap = w.join("synthetic.pcap");
    let syn = synthetic(&pcap)?;
    // The patterns, in the order of their ids; two come from a -f file in the middle.
    let pats = [
        lit("NEEDLE-ACROSS-SEGMENTS"),
        lit("RETRANSMITTED-NEEDLE"),
        lit("LOST-NEEDLE"),
        re("SPLIT-[A-Z]{6}", split_six),
        lit("NEEDLE-SPANNING-HOLE"),
        lit("AFTER-THE-GAP"),
        lit("THREE-SEGMENT-SPLIT-NEEDLE"),
        re("id=[0-9]{6};", id_six),
        re("X[0-9]+", x_digits),
        lit("HTTP/1.1"),
        lit("OUT-OF-ORDER-NEEDLE"),
        re("[0-9]{3} OK", three_digits_ok),
        lit("NEEDLE"),
        lit("AFTER-THE-GAP"),
    ];
    let file = w.join("patterns.txt");
    std::fs::write(
        &file,
        "# two of the patterns\nLOST-NEEDLE\r\n\nre:SPLIT-[A-Z]{6}\n",
    )?;
    let mut args = pattern_args(&pats[..2]);
    args.extend(["-f".to_string(), file.display().to_string()]);
    args.extend(pattern_args(&pats[4..]));
    let out = w.join("out");
    let mut full = args.clone();
    full.extend(["--out".to_string(), out.display().to_string()]);
    let mut with_context = args.clone();
    with_context.extend(["--context".into(), "16".into()]);
    let mut capped = args.clone();
    capped.extend(["--side", "orig", "--max-matches-per-flow", "3"].map(String::from));
    let folded = ["-i", "-e", "needle-across-segments", "-e", "http/1.1"]
        .map(String::from)
        .to_vec();
    let greps = replay(w, &pcap, &[full, with_context, capped, folded])?;

    // The sensor's streams are the ones the capture was made of.
    let dump = Dump::read(&w.join("ref"))?;
    ensure!(dump.flows.len() == 1, "{} connections", dump.flows.len());
    let (flow, streams) = &dump.flows[0];
    ensure!(Dump::endpoints(flow)? == (syn.client, syn.server));
    ensure!(
        streams[0] == syn.orig,
        "the client's stream is not the one written"
    );
    ensure!(
        streams[1] == syn.resp,
        "the server's stream is not the one written"
    );
    ensure!(flow.c2s_lost == syn.hole.1 - syn.hole.0);

    let recs = parse_records(&std::fs::read_to_string(out.join("match.jsonl"))?)?;
    // Everything found is what a search of the whole streams finds, each match once.
    let mut got: Vec<_> = recs.iter().map(Rec::key).collect();
    got.sort_unstable();
    let mut want: Vec<_> = reference(&pats, &syn.orig)
        .into_iter()
        .map(|(id, o, l)| (true, id, o, l))
        .chain(
            reference(&pats, &syn.resp)
                .into_iter()
                .map(|(id, o, l)| (false, id, o, l)),
        )
        .collect();
    want.sort_unstable();
    ensure!(got == want, "matches:\n got {got:?}\nwant {want:?}");
    for r in &recs {
        ensure!((r.client, r.server) == (syn.client, syn.server), "{r:?}");
        ensure!(r.uid == recs[0].uid, "two uids for one connection");
        ensure!(r.pattern == pats[r.pattern_id].text, "{r:?}");
        ensure!(r.context.is_none());
    }
    // Each placed pattern exactly once, at its offset and side, at the time of the packet
    // that completed it.
    for &(text, orig, offset, ts_us) in &syn.placed {
        let id = pats.iter().position(|p| p.text == text).context(text)?;
        let hits: Vec<&Rec> = recs
            .iter()
            .filter(|r| r.pattern_id == id && r.orig == orig && r.offset == offset)
            .collect();
        ensure!(hits.len() == 1, "{text} at {offset}: {hits:?}");
        let want_ts = ts_us as f64 / 1e6;
        ensure!(
            (hits[0].ts - want_ts).abs() < 1e-6,
            "{text} at {offset}: ts {} instead of {want_ts}",
            hits[0].ts
        );
    }
    // The duplicate pattern is reported under both ids; none of the lost ones is.
    let count = |id: usize| recs.iter().filter(|r| r.pattern_id == id).count();
    ensure!(count(5) == 1 && count(13) == 1);
    ensure!(
        count(2) == 0 && count(4) == 0,
        "a match inside or across the hole"
    );
    // NEEDLE inside the three placed in the client's stream and OUT-OF-ORDER-NEEDLE, not
    // inside the two lost ones.
    ensure!(count(12) == 4, "NEEDLE: {}", count(12));
    let err = greps[0].stderr();
    ensure!(
        count_before(&err, "matches (")? == recs.len() as u64,
        "{err}"
    );
    ensure!(count_before(&err, "lost)")? == 100, "{err}");
    ensure!(count_before(&err, "connections,")? == 1, "{err}");

    // --context: the same matches, with the bytes around them.
    let ctx = parse_records(&greps[1].stdout())?;
    let strip = |v: &[Rec]| -> Vec<Rec> {
        let mut v: Vec<Rec> = v
            .iter()
            .map(|r| Rec {
                context: None,
                ..r.clone()
            })
            .collect();
        v.sort_by_key(Rec::key);
        v
    };
    ensure!(strip(&ctx) == strip(&recs), "--context changed the matches");
    for r in &ctx {
        let (stream, holes) = if r.orig {
            (&syn.orig, vec![syn.hole])
        } else {
            (&syn.resp, vec![])
        };
        check_context(r, stream, &holes, 16)?;
    }

    // --side orig --max-matches-per-flow 3: three of the client's matches, then no more.
    let few = parse_records(&greps[2].stdout())?;
    ensure!(few.len() == 3, "{few:?}");
    for r in &few {
        ensure!(r.orig && recs.contains(r), "{r:?} is not one of {recs:?}");
    }
    ensure!(greps[2]
        .stderr()
        .contains("1 connections stopped at --max-matches-per-flow"));

    // -i: literals found whatever their case.
    let mut folded: Vec<_> = parse_records(&greps[3].stdout())?
        .iter()
        .map(Rec::key)
        .collect();
    folded.sort_unstable();
    ensure!(
        folded == [(false, 1, 0, 8), (false, 1, 500, 8), (true, 0, 200, 22)],
        "-i: {folded:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (b) Corpus captures against grep on the dumped streams

/// Compares `mos-grep`'s records of one capture with a search of the sensor's dump.
fn corpus_capture(name: &str) -> Result<usize> {
    let pcap = corpus_dir()?.join("pcaps").join(name);
    let work = ScratchDir::new(&format!("grep-{name}"))?;
    let w = work.path();
    let pats = [
        lit("HTTP/1.1"),
        lit("Content-Type"),
        re("[0-9]{3} OK", three_digits_ok),
        re("Content-Length: [0-9]+", content_length),
        lit("GET "),
        lit("\r\n\r\n"),
    ];
    let out = w.join("out");
    let mut full = pattern_args(&pats);
    full.extend(["--out".to_string(), out.display().to_string()]);
    let mut with_context = pattern_args(&pats);
    with_context.extend(["--context".into(), "32".into()]);
    let greps = replay(w, &pcap, &[full, with_context])?;
    let dump = Dump::read(&w.join("ref"))?;
    let recs =
        parse_records(&std::fs::read_to_string(out.join("match.jsonl")).unwrap_or_default())?;

    // Per connection (its endpoints; connections that reuse them are taken together) and
    // side: the matches of a search of the dumped stream.
    type Key = (SocketAddr, SocketAddr, bool);
    let mut want: BTreeMap<Key, Vec<(usize, u64, u64)>> = BTreeMap::new();
    let mut uids: BTreeMap<(SocketAddr, SocketAddr), Vec<String>> = BTreeMap::new();
    let mut lossless: BTreeMap<Key, Option<&[u8]>> = BTreeMap::new();
    for (f, streams) in &dump.flows {
        let (c, s) = Dump::endpoints(f)?;
        for (i, orig) in [(0, true), (1, false)] {
            let found = reference(&pats, &streams[i]);
            // grep agrees with the test's own matcher (lost bytes are zeros: no pattern
            // matches across them).
            let file = if orig { &f.c2s_file } else { &f.s2c_file };
            if let Some(file) = file {
                for (id, p) in pats.iter().enumerate().filter(|(_, p)| p.grep) {
                    let g = grep_matches(p, &dump.dir.join(file))?;
                    let mine: Vec<(u64, u64)> = found
                        .iter()
                        .filter(|m| m.0 == id)
                        .map(|m| (m.1, m.2))
                        .collect();
                    ensure!(
                        g == mine,
                        "{name} {file} {}: grep {g:?}, test {mine:?}",
                        p.text
                    );
                }
            }
            want.entry((c, s, orig)).or_default().extend(found);
            let lost = if orig { f.c2s_lost } else { f.s2c_lost };
            let e = lossless
                .entry((c, s, orig))
                .or_insert(Some(&streams[i][..]));
            if lost > 0 || e.is_some_and(|x| x.as_ptr() != streams[i].as_ptr()) {
                // Lost bytes, or two connections on the same endpoints: no context check.
                *e = None;
            }
        }
        uids.entry((c, s)).or_default();
    }
    let mut got: BTreeMap<Key, Vec<(usize, u64, u64)>> = BTreeMap::new();
    for r in &recs {
        ensure!(r.pattern == pats[r.pattern_id].text, "{name}: {r:?}");
        got.entry((r.client, r.server, r.orig))
            .or_default()
            .push((r.pattern_id, r.offset, r.len));
        let u = uids
            .get_mut(&(r.client, r.server))
            .with_context(|| format!("{name}: a match on no dumped connection: {r:?}"))?;
        if !u.contains(&r.uid) {
            u.push(r.uid.clone());
        }
        // Its time lies within its connection's.
        let inside = dump.flows.iter().any(|(f, _)| {
            Dump::endpoints(f).is_ok_and(|e| e == (r.client, r.server))
                && r.ts >= f.start_ts - 1e-6
                && r.ts <= f.end_ts + 1e-6
        });
        ensure!(inside, "{name}: {r:?} outside its connection's time");
    }
    want.retain(|_, v| !v.is_empty());
    for v in want.values_mut().chain(got.values_mut()) {
        v.sort_unstable();
    }
    if got != want {
        let mut report = String::new();
        for k in want.keys().chain(got.keys()) {
            let (a, b) = (want.get(k), got.get(k));
            if a != b {
                report += &format!("{k:?}:\n want {a:?}\n  got {b:?}\n");
            }
        }
        bail!("{name}: mos-grep differs from the dumped streams:\n{report}");
    }
    // One uid per connection, different for different connections.
    let conns_per_tuple: BTreeMap<_, usize> =
        dump.flows.iter().fold(BTreeMap::new(), |mut m, (f, _)| {
            if let Ok(e) = Dump::endpoints(f) {
                *m.entry(e).or_insert(0) += 1;
            }
            m
        });
    let mut all_uids = Vec::new();
    for (t, u) in &uids {
        ensure!(
            u.len() <= conns_per_tuple[t],
            "{name}: {t:?} has uids {u:?}"
        );
        all_uids.extend(u.iter().cloned());
    }
    let n = all_uids.len();
    all_uids.sort_unstable();
    all_uids.dedup();
    ensure!(all_uids.len() == n, "{name}: one uid for two connections");

    // --context: the same matches; where the direction lost nothing, the bytes around them.
    let ctx = parse_records(&greps[1].stdout())?;
    let mut a: Vec<_> = ctx
        .iter()
        .map(|r| (r.client, r.server, r.key(), r.ts.to_bits()))
        .collect();
    let mut b: Vec<_> = recs
        .iter()
        .map(|r| (r.client, r.server, r.key(), r.ts.to_bits()))
        .collect();
    a.sort_unstable();
    b.sort_unstable();
    ensure!(a == b, "{name}: --context changed the matches");
    for r in &ctx {
        if let Some(Some(stream)) = lossless.get(&(r.client, r.server, r.orig)) {
            check_context(r, stream, &[], 32).with_context(|| name.to_string())?;
        }
    }
    Ok(recs.len())
}

#[test]
fn corpus_http_captures_give_the_matches_of_grep_on_the_dumped_streams() -> Result<()> {
    let captures = [
        "dpkt__examples__data__http.pcap",
        "wireshark__http-ooo.pcap",
        "scapy__http_chunk.pcap",
        "ndpi__http_ipv6.pcap",
        "suricata-verify__http-gap-double__input.pcap",
        "suricata-verify__tcp-stream-after-swap__http-start-from-response.pcap",
        "zeek__http__content-range-gap.pcap",
        "zeek__http__entity_gap.pcap",
        "zeek__http__1000-requests-one-dropped-response.pcap",
        "zeek__http__bro.org.pcap",
    ];
    let results = parallel_map(&captures, default_workers().min(4), |c| corpus_capture(c));
    let mut failures = String::new();
    let mut total = 0;
    for (c, r) in captures.iter().zip(results) {
        match r {
            Ok(n) => total += n,
            Err(e) => failures += &format!("{c}: {e:#}\n"),
        }
    }
    ensure!(failures.is_empty(), "{failures}");
    // The 1000 requests alone make thousands of matches: the comparison is not empty.
    ensure!(total > 5000, "only {total} matches in all");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (c) Bad arguments, signals, a sensor that goes away

/// Arguments, and the words the one line on stderr must hold.
type Case<'a> = (Vec<&'a dyn AsRef<OsStr>>, Vec<&'a str>);

fn grep_alone(w: &Path, name: &str, args: &[&dyn AsRef<OsStr>]) -> Result<Proc> {
    Proc::spawn(name, cmd(&bin("mos-grep")?, args), w)
}

#[test]
fn bad_arguments_are_one_line_and_status_1() -> Result<()> {
    let work = ScratchDir::new("grep-args")?;
    let w = work.path();
    let nosensor = w.join("none.sock");
    let empty_re = w.join("empty.txt");
    std::fs::write(&empty_re, "GET\nre:\n")?;
    let missing = w.join("missing.txt");
    let cases: Vec<Case<'_>> = vec![
        (
            vec![&"-e", &"x", &"-E", &"[0-9"],
            vec!["bad regex \"[0-9\"", "unclosed"],
        ),
        (vec![&"-E", &"(a"], vec!["bad regex \"(a\""]),
        (vec![&"-e", &""], vec!["pattern 0 is empty"]),
        (
            vec![&"-f", &empty_re],
            vec!["empty.txt line 2: empty pattern"],
        ),
        (vec![&"-f", &missing], vec!["missing.txt"]),
        (vec![&"-e", &"x", &"--context", &"4097"], vec!["--context"]),
        (
            vec![&"-e", &"x", &"--regex-window", &"0"],
            vec!["--regex-window"],
        ),
        (
            vec![&"-e", &"x", &"--max-matches-per-flow", &"0"],
            vec!["--max-matches-per-flow"],
        ),
        (
            vec![&"-e", &"x", &"--wait", &"0"],
            vec!["ENOENT", "none.sock"],
        ),
    ];
    for (i, (args, words)) in cases.into_iter().enumerate() {
        let mut all: Vec<&dyn AsRef<OsStr>> = vec![&"--control", &nosensor];
        all.extend(args);
        let mut p = grep_alone(w, &format!("bad{i}"), &all)?;
        p.expect_code(1, TIMEOUT)?;
        assert_one_line(&p, &words)?;
        ensure!(p.stdout().is_empty());
    }
    // No pattern at all: clap's usage error.
    let mut p = grep_alone(w, "nopattern", &[&"--control", &nosensor])?;
    p.expect_code(2, TIMEOUT)?;
    ensure!(p.stderr().contains("--literal"), "{}", p.stderr());
    let mut help = grep_alone(w, "help", &[&"--help"])?;
    help.expect_code(0, TIMEOUT)?;
    for opt in [
        "--literal",
        "--regex",
        "--file",
        "--ignore-case",
        "--side",
        "--context",
        "--regex-window",
        "--max-matches-per-flow",
        "--filter",
        "--out",
        "match.jsonl",
    ] {
        ensure!(help.stdout().contains(opt), "--help says nothing of {opt}");
    }
    Ok(())
}

#[test]
fn a_signal_exits_130_and_a_killed_sensor_1_each_with_its_summary() -> Result<()> {
    let work = ScratchDir::new("grep-signal")?;
    let w = work.path();
    let pcap = w.join("synthetic.pcap");
    synthetic(&pcap)?;
    let control = w.join("c.sock");
    // The sensor waits for three analyzers: with two it never starts its replay.
    let mut sensor = Proc::spawn(
        "sensor",
        cmd(
            &sensor_bin()?,
            &[
                &"--pcap",
                &pcap,
                &"--control",
                &control,
                &"--wait-analyzers",
                &"3",
            ],
        ),
        w,
    )?;
    wait_for_socket(&mut sensor, &control, TIMEOUT)?;
    let mut a = grep_alone(w, "a", &[&"--control", &control, &"-e", &"NEEDLE"])?;
    let mut b = grep_alone(w, "b", &[&"--control", &control, &"-e", &"NEEDLE"])?;
    // Both attached and running (their signal handlers set): the sensor says they are ready.
    mos_tests::procs::wait_for("two analyzers attached", TIMEOUT, || {
        let out = cmd(
            &bin("mos-ctl")?,
            &[&"--control", &control, &"status", &"--json"],
        )
        .output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        Ok(v["analyzers"]
            .as_array()
            .is_some_and(|a| a.iter().filter(|x| x["ready"] == true).count() == 2))
    })?;
    a.signal(rustix::process::Signal::INT)?;
    a.expect_code(130, TIMEOUT)?;
    let err = a.stderr();
    ensure!(
        err.contains("0 connections, 0 bytes searched") && err.contains("stopped by a signal"),
        "{err}"
    );
    assert_no_panic(&a)?;
    sensor.signal(rustix::process::Signal::KILL)?;
    sensor.wait(TIMEOUT)?;
    b.expect_code(1, TIMEOUT)?;
    assert_one_line(&b, &["the sensor went away", "bytes searched"])?;
    Ok(())
}
