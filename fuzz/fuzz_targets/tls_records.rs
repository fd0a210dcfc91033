//! Untrusted stream bytes through `mos-log`'s TLS and SSH parsers: the input decodes into a
//! sequence of operations on one connection (a chunk of bytes for a direction, a gap, the
//! end), applied to a `TlsParser` and an `SshParser` alike. Neither may panic, every record
//! must serialize to one JSON object, a parser emits at most one record of its protocol and
//! nothing once it says it is done. The same operations are then applied with every chunk cut
//! into one-byte calls: the records (and the weirds' names) must be the same.
//!
//! Operation byte `op`: bit 0 the direction (orig, resp); bits 1-2 the kind (0 and 1: data,
//! 2: gap, 3: end); for data, bits 3-7 are the chunk length minus one, except 31, which takes
//! the length from the next two bytes (big-endian). The chunk is the input's next bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mos_analyzers::proto::ssh::SshParser;
use mos_analyzers::proto::tls::TlsParser;
use mos_analyzers::proto::{Dir, Parser, Record};

/// One operation on the connection.
enum Op<'a> {
    Data(Dir, &'a [u8]),
    Gap(Dir, u64),
    End,
}

/// Decodes the next operation, `None` at the end of the input.
fn next_op<'a>(input: &mut &'a [u8]) -> Option<Op<'a>> {
    let (&op, rest) = input.split_first()?;
    *input = rest;
    let dir = if op & 1 == 0 { Dir::Orig } else { Dir::Resp };
    match (op >> 1) & 3 {
        2 => Some(Op::Gap(dir, u64::from(op >> 3) + 1)),
        3 => Some(Op::End),
        _ => {
            let mut len = usize::from(op >> 3) + 1;
            if len == 32 {
                if input.len() < 2 {
                    return None;
                }
                len = usize::from(u16::from_be_bytes([input[0], input[1]]));
                *input = &input[2..];
            }
            let (chunk, rest) = input.split_at(len.min(input.len()));
            *input = rest;
            Some(Op::Data(dir, chunk))
        }
    }
}

/// The records a parser produced so far, checked as they come.
struct Checked {
    /// Records of the parser's own protocol.
    own: usize,
    /// The parser reported itself done.
    done: bool,
}

impl Checked {
    fn take(&mut self, p: &dyn Parser, out: &mut Vec<Record>, source: &str) {
        if self.done {
            assert!(out.is_empty(), "{source}: records after done(): {out:?}");
        }
        for r in out.drain(..) {
            match &r {
                Record::Tls(_) | Record::Ssh(_) => self.own += 1,
                Record::Weird(w) => assert_eq!(w.source, source),
                Record::Http(_) => panic!("{source}: an HTTP record"),
            }
            let line = serde_json::to_string(&r).expect("a record serializes");
            assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
            assert!(!line.contains('\n'));
        }
        assert!(self.own <= 1, "{source}: {} records", self.own);
        self.done |= p.done();
    }
}

/// Applies the operations of `input` (each data chunk cut into one-byte calls if `bytewise`),
/// checking after every call; returns what was emitted, weirds by name only (their details may
/// say how many bytes were at hand).
fn run(p: &mut dyn Parser, mut input: &[u8], source: &str, bytewise: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    let mut check = Checked {
        own: 0,
        done: false,
    };
    let mut ts = 0;
    let keep = |out: &Vec<Record>, seen: &mut Vec<String>| {
        for r in out {
            seen.push(match r {
                Record::Weird(w) => format!("weird {}", w.name),
                r => serde_json::to_string(r).expect("a record serializes"),
            });
        }
    };
    while let Some(op) = next_op(&mut input) {
        ts += 1_000;
        match op {
            Op::Data(dir, bytes) if bytewise => {
                for b in bytes.chunks(1) {
                    p.data(dir, b, ts, &mut out);
                    keep(&out, &mut seen);
                    check.take(p, &mut out, source);
                }
            }
            Op::Data(dir, bytes) => p.data(dir, bytes, ts, &mut out),
            Op::Gap(dir, len) => p.gap(dir, len, ts, &mut out),
            Op::End => p.end(ts, &mut out),
        }
        keep(&out, &mut seen);
        check.take(p, &mut out, source);
    }
    p.end(ts + 1, &mut out);
    keep(&out, &mut seen);
    check.take(p, &mut out, source);
    assert!(p.done(), "{source}: not done after end()");
    seen
}

fuzz_target!(|data: &[u8]| {
    // Where the bytes are cut into calls must not matter.
    let whole = run(&mut TlsParser::new(), data, "TLS", false);
    assert_eq!(whole, run(&mut TlsParser::new(), data, "TLS", true));
    let whole = run(&mut SshParser::new(), data, "SSH", false);
    assert_eq!(whole, run(&mut SshParser::new(), data, "SSH", true));
});
