//! Untrusted stream bytes through `mos-log`'s HTTP parser: the input decodes into a sequence
//! of calls (a direction's data, a hole, the end), fed to an `HttpParser`. Checked after every
//! call: no panic; every record serializes to JSON; `trans_depth` grows from record to record;
//! once `done()` is true no record comes any more (and after `end`, it is true); what the parser
//! holds stays bounded. The same calls are then fed again with every data call cut into one-byte
//! calls: the records must be the same (the parser decides at points of the stream, never at
//! the end of a call).
//!
//! The input: byte 0 bit 0 picks the constructor (`new`, `midstream`); then operations, each a
//! control byte `c`: `c & 1` the direction (0 orig, 1 resp), `(c >> 1) & 3` the kind:
//! 0: data, length in the next two bytes (little-endian), the bytes follow (cut at the input's
//! end), and if `c & 0x80` one more byte `r`: the bytes are repeated `r + 1` times (at most
//! [`MAX_REPEATED`] bytes in all; long heads, many pipelined requests); 1: data, length
//! `(c >> 3) + 1`, the bytes follow; 2: a hole, length in the next two bytes (little-endian),
//! times 2^20 if `c & 0x80`; 3: the end (the rest of the input is ignored).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mos_analyzers::proto::http::HttpParser;
use mos_analyzers::proto::{Dir, Parser, Record};
use std::borrow::Cow;

/// The most the parser may hold (heads, lines, held bytes, queued requests): far above what
/// its own bounds add up to, far below what an unbounded buffer would reach.
const MAX_BUFFERED: usize = 4 << 20;

/// The most bytes a repeated data operation makes.
const MAX_REPEATED: usize = 80 * 1024;

enum Op<'a> {
    Data(Dir, Cow<'a, [u8]>),
    Gap(Dir, u64),
    End,
}

fn decode(data: &[u8]) -> (bool, Vec<Op<'_>>) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return (false, Vec::new());
    };
    let mut ops = Vec::new();
    let u16_le = |rest: &mut &[u8]| -> usize {
        let lo = rest.first().copied().unwrap_or(0);
        let hi = rest.get(1).copied().unwrap_or(0);
        *rest = rest.get(2..).unwrap_or(&[]);
        usize::from(u16::from_le_bytes([lo, hi]))
    };
    while let Some((&c, tail)) = rest.split_first() {
        rest = tail;
        let dir = if c & 1 == 0 { Dir::Orig } else { Dir::Resp };
        match (c >> 1) & 3 {
            0 | 1 => {
                let len = if (c >> 1) & 3 == 0 {
                    u16_le(&mut rest)
                } else {
                    usize::from(c >> 3) + 1
                };
                let len = len.min(rest.len());
                let bytes = &rest[..len];
                rest = &rest[len..];
                if (c >> 1) & 3 == 0 && c & 0x80 != 0 && !bytes.is_empty() {
                    let times = usize::from(rest.first().copied().unwrap_or(0)) + 1;
                    rest = rest.get(1..).unwrap_or(&[]);
                    let total = (bytes.len() * times).min(MAX_REPEATED);
                    let repeated: Vec<u8> = bytes.iter().copied().cycle().take(total).collect();
                    ops.push(Op::Data(dir, Cow::Owned(repeated)));
                } else {
                    ops.push(Op::Data(dir, Cow::Borrowed(bytes)));
                }
            }
            2 => {
                let len = u16_le(&mut rest) as u64;
                let len = if c & 0x80 != 0 { len << 20 } else { len };
                ops.push(Op::Gap(dir, len));
            }
            _ => {
                ops.push(Op::End);
                break;
            }
        }
    }
    (mode & 1 == 1, ops)
}

/// Feeds `ops` (data calls cut into one-byte calls if `bytewise`), checking the invariants;
/// returns every record and the final `done()`.
fn run(midstream: bool, ops: &[Op<'_>], bytewise: bool) -> (Vec<Record>, bool) {
    let mut p = if midstream {
        HttpParser::midstream()
    } else {
        HttpParser::new()
    };
    let mut all = Vec::new();
    let mut depth = 0u64;
    for (i, op) in ops.iter().enumerate() {
        let ts = 1_000 * (i as u64 + 1);
        let was_done = p.done();
        let mut out = Vec::new();
        match op {
            Op::Data(d, bytes) if bytewise => {
                for b in bytes.iter() {
                    p.data(*d, std::slice::from_ref(b), ts, &mut out);
                }
            }
            Op::Data(d, bytes) => p.data(*d, bytes, ts, &mut out),
            Op::Gap(d, len) => p.gap(*d, *len, ts, &mut out),
            Op::End => {
                p.end(ts, &mut out);
                assert!(p.done(), "not done after end");
            }
        }
        assert!(!was_done || out.is_empty(), "records after done(): {out:?}");
        assert!(p.buffered() <= MAX_BUFFERED, "holds {} bytes", p.buffered());
        for r in &out {
            serde_json::to_string(r).expect("a record serializes");
            if let Record::Http(h) = r {
                assert!(
                    h.trans_depth > depth,
                    "trans_depth {} after {depth}",
                    h.trans_depth
                );
                depth = h.trans_depth;
                assert!(
                    h.midstream || !midstream,
                    "a midstream parser's record says otherwise"
                );
            }
        }
        all.extend(out);
    }
    (all, p.done())
}

fuzz_target!(|data: &[u8]| {
    let (midstream, ops) = decode(data);
    let whole = run(midstream, &ops, false);
    let bytewise = run(midstream, &ops, true);
    assert_eq!(whole, bytewise, "records depend on how the bytes were cut");
});
