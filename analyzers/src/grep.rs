//! `mos-grep`'s search: many literal and regex patterns over one direction of a connection,
//! fed piece by piece as the bytes arrive, each match reported once however the stream was cut.
//!
//! [`Patterns`] compiles what the command line gave: every literal into one Aho-Corasick
//! automaton, every regex with the `regex` crate's bytes API. A [`Searcher`] follows one
//! direction of one connection: [`Searcher::data`] takes the next run of bytes,
//! [`Searcher::lost`] a hole, [`Searcher::finish`] the end of the stream, and each hands back
//! the matches it can now tell ([`Found`]).
//!
//! What counts as a match:
//! - A pattern's matches in a stream are its leftmost, non-overlapping occurrences from the
//!   start of the stream, as `grep -o` reports them on one pattern (and `str::matches` finds
//!   them): `aa` occurs twice in `aaaaa`, at offsets 0 and 2. Each pattern is matched on its
//!   own, so the matches of different patterns may overlap (`abc` and `bcd` both match in
//!   `abcd`). A pattern given twice is reported twice, once under each `pattern_id`.
//! - A literal matches wherever its bytes are, across any number of pieces: the searcher keeps
//!   the last (longest literal - 1) bytes of a direction to search with the next piece.
//! - A regex is searched in the new bytes with up to `window` bytes before them (the
//!   longest match the regexes can make, when that is shorter). A match longer than the
//!   window may be missed, or found in part. A match that reaches the last
//!   byte received so far is held until more bytes come (it could go on: `[0-9]+`), or the
//!   stream stops (its end, or a hole), so that it is reported once, whole. The regex crate's
//!   leftmost-first rule decides between alternatives with the bytes in hand: with `abc`
//!   received, `abcd|ab` reports `ab`. Empty matches are never reported. The haystack is the
//!   stream as far as it goes: `\A` and `^` (without `(?m)`) match at its first byte (after a
//!   hole, at the first byte after it), `\z` and `$` at its end.
//! - A hole (bytes lost) separates: no match spans it.

use aho_corasick::{AhoCorasick, MatchKind};
use anyhow::{bail, Context as _};
use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use std::collections::{HashMap, VecDeque};

/// The longest `--context` accepted.
pub const MAX_CONTEXT: usize = 4096;

/// The default `--regex-window`.
pub const DEFAULT_WINDOW: usize = 4096;

/// What kind of pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Bytes to find as they are (`-e`).
    Literal,
    /// A regular expression of the `regex` crate (`-E`).
    Regex,
}

/// One pattern as the user gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternSpec {
    /// Literal or regex.
    pub kind: Kind,
    /// Its text (a literal's bytes are its UTF-8 encoding).
    pub text: String,
}

impl PatternSpec {
    /// A literal.
    pub fn literal(text: impl Into<String>) -> PatternSpec {
        PatternSpec {
            kind: Kind::Literal,
            text: text.into(),
        }
    }

    /// A regex.
    pub fn regex(text: impl Into<String>) -> PatternSpec {
        PatternSpec {
            kind: Kind::Regex,
            text: text.into(),
        }
    }
}

/// The patterns of a `-f FILE`: one per line. A line ending is LF, or CR LF. Empty lines and
/// lines starting with `#` are skipped; `re:REGEX` is a regex; `lit:TEXT` is a literal taken
/// as is (for a literal that starts with `#`, `re:` or `lit:`); any other line is a literal,
/// the whole line. `name` names the file in errors (an empty pattern).
pub fn parse_pattern_file(text: &str, name: &str) -> anyhow::Result<Vec<PatternSpec>> {
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let spec = if let Some(re) = line.strip_prefix("re:") {
            PatternSpec::regex(re)
        } else if let Some(lit) = line.strip_prefix("lit:") {
            PatternSpec::literal(lit)
        } else {
            PatternSpec::literal(line)
        };
        if spec.text.is_empty() {
            bail!("{name} line {}: empty pattern", i + 1);
        }
        out.push(spec);
    }
    Ok(out)
}

/// How to match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatchOptions {
    /// Case-insensitive: ASCII letters for literals, Unicode case folding for regexes.
    pub ignore_case: bool,
    /// Bytes before the new ones a regex is searched with (at least 1).
    pub window: usize,
    /// Report this many bytes before and after each match with it (`None`: no context).
    pub context: Option<usize>,
}

impl Default for MatchOptions {
    fn default() -> Self {
        MatchOptions {
            ignore_case: false,
            window: DEFAULT_WINDOW,
            context: None,
        }
    }
}

/// The compiled patterns.
#[derive(Debug)]
pub struct Patterns {
    specs: Vec<PatternSpec>,
    /// All the distinct literals, in one automaton (`None` without literals).
    lits: Option<AhoCorasick>,
    /// For each of the automaton's patterns, the pattern ids it stands for.
    lit_ids: Vec<Vec<usize>>,
    /// The longest literal's length.
    max_lit: usize,
    /// The regexes with their pattern ids.
    regexes: Vec<(usize, Regex)>,
    /// All of them at once, to skip those that cannot match (with more than one regex).
    set: Option<RegexSet>,
    window: usize,
    context: Option<usize>,
}

/// A regex crate error on one line: the syntax error's own sentence, without the pattern
/// and caret it draws above it.
fn regex_error(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(text) => text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or_else(|| text.lines().last().unwrap_or_default())
            .trim()
            .to_string(),
        other => other.to_string().replace('\n', " "),
    }
}

/// The most bytes a match of regex `text` can span (`None`: unbounded, or not known), parsed
/// with the flags the search compiles it with.
fn longest_match(text: &str, ignore_case: bool) -> Option<usize> {
    regex_syntax::ParserBuilder::new()
        .case_insensitive(ignore_case)
        .utf8(false)
        .build()
        .parse(text)
        .ok()?
        .properties()
        .maximum_len()
}

impl Patterns {
    /// Compiles `specs` (their pattern ids are their indices). Errors: no pattern, an empty
    /// one, a window of 0, a context past [`MAX_CONTEXT`], a regex that does not compile
    /// (`bad regex "TEXT": WHY`, one line).
    pub fn new(specs: Vec<PatternSpec>, opts: &MatchOptions) -> anyhow::Result<Patterns> {
        if specs.is_empty() {
            bail!("no patterns");
        }
        if opts.window == 0 {
            bail!("the regex window must be at least 1 byte");
        }
        if opts.context.is_some_and(|n| n > MAX_CONTEXT) {
            bail!("the context is at most {MAX_CONTEXT} bytes");
        }
        let mut distinct: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut lit_bytes: Vec<&[u8]> = Vec::new();
        let mut lit_ids: Vec<Vec<usize>> = Vec::new();
        let mut regexes = Vec::new();
        for (id, s) in specs.iter().enumerate() {
            if s.text.is_empty() {
                bail!("pattern {id} is empty");
            }
            match s.kind {
                Kind::Literal => {
                    // The same literal twice (under -i, the same but for ASCII case) is one
                    // pattern of the automaton that stands for both ids.
                    let key = if opts.ignore_case {
                        s.text.to_ascii_lowercase().into_bytes()
                    } else {
                        s.text.as_bytes().to_vec()
                    };
                    match distinct.get(&key) {
                        Some(&k) => lit_ids[k].push(id),
                        None => {
                            distinct.insert(key, lit_bytes.len());
                            lit_bytes.push(s.text.as_bytes());
                            lit_ids.push(vec![id]);
                        }
                    }
                }
                Kind::Regex => {
                    let re = RegexBuilder::new(&s.text)
                        .case_insensitive(opts.ignore_case)
                        .build()
                        .map_err(|e| {
                            anyhow::anyhow!("bad regex {:?}: {}", s.text, regex_error(&e))
                        })?;
                    regexes.push((id, re));
                }
            }
        }
        // A regex whose matches are at most N bytes long needs no more than N bytes of the
        // earlier pieces to be found across a boundary: the window shrinks to the longest
        // match any of them can make, so a short regex is not searched again over 4 KiB of
        // old bytes at every segment.
        let window = regexes
            .iter()
            .map(|(id, _)| longest_match(&specs[*id].text, opts.ignore_case))
            .try_fold(1usize, |w, n| n.map(|n| w.max(n)))
            .map_or(opts.window, |longest| longest.min(opts.window));
        let max_lit = lit_bytes.iter().map(|l| l.len()).max().unwrap_or(0);
        let lits = if lit_bytes.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .ascii_case_insensitive(opts.ignore_case)
                    .build(&lit_bytes)
                    .context("building the literals' automaton")?,
            )
        };
        let set = if regexes.len() > 1 {
            Some(
                RegexSetBuilder::new(regexes.iter().map(|(_, r)| r.as_str()))
                    .case_insensitive(opts.ignore_case)
                    .build()
                    .map_err(|e| anyhow::anyhow!("the regexes together: {}", regex_error(&e)))?,
            )
        } else {
            None
        };
        Ok(Patterns {
            specs,
            lits,
            lit_ids,
            max_lit,
            regexes,
            set,
            window,
            context: opts.context,
        })
    }

    /// How many patterns.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Whether there are none (never, once compiled).
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Pattern `id` as given.
    pub fn spec(&self, id: usize) -> &PatternSpec {
        &self.specs[id]
    }

    /// A searcher for one direction of a stream, starting at offset 0.
    pub fn searcher(&self) -> Searcher {
        Searcher {
            tail: Vec::new(),
            start: 0,
            lit_next: vec![0; self.lit_ids.len()],
            re_next: vec![0; self.regexes.len()],
            re_floor: 0,
            marks: VecDeque::new(),
            pending: Vec::new(),
        }
    }

    /// Bytes a searcher keeps behind the newest one to search and give context with.
    fn keep(&self) -> u64 {
        let lit = self.max_lit.saturating_sub(1);
        // One byte more than the window, so that a regex's look-behind (`\b`, `^`) at the
        // window's first byte sees the byte before it.
        let re = if self.regexes.is_empty() {
            0
        } else {
            self.window + 1
        };
        (lit.max(re) + self.context.unwrap_or(0)) as u64
    }
}

/// The bytes around a match (`--context`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// Up to N bytes before the match (fewer at the start of the stream or after a hole).
    pub before: Vec<u8>,
    /// The match.
    pub matched: Vec<u8>,
    /// Up to N bytes after it (fewer at the end of the stream or before a hole).
    pub after: Vec<u8>,
}

/// One match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Which pattern (its index).
    pub pattern_id: usize,
    /// Stream offset of the match's first byte.
    pub offset: u64,
    /// Its length.
    pub len: u64,
    /// Capture time (ns) of the piece that brought the match's last byte.
    pub ts_ns: u64,
    /// The bytes around it, with `--context`.
    pub context: Option<Context>,
}

/// The search state of one direction of one connection.
#[derive(Debug)]
pub struct Searcher {
    /// The last bytes received, kept to search with the next piece: offsets `[start, end)`.
    tail: Vec<u8>,
    /// Stream offset of `tail[0]`.
    start: u64,
    /// Per literal of the automaton: where its next match may start (the end of its last).
    lit_next: Vec<u64>,
    /// Per regex: where its next match may start.
    re_next: Vec<u64>,
    /// Where the regex search of the last piece began (its window's first byte).
    re_floor: u64,
    /// (offset, ts): from `offset` on, the bytes came at capture time `ts` (ns).
    marks: VecDeque<(u64, u64)>,
    /// Matches found whose after-context is not all in yet.
    pending: Vec<Found>,
}

/// A view of the bytes `[base, base + bytes.len())` of a stream.
#[derive(Clone, Copy)]
struct View<'a> {
    base: u64,
    bytes: &'a [u8],
}

impl View<'_> {
    fn end(&self) -> u64 {
        self.base + self.bytes.len() as u64
    }

    /// The bytes of `[from, to)` that the view holds.
    fn slice(&self, from: u64, to: u64) -> &[u8] {
        let from = from.clamp(self.base, self.end());
        let to = to.clamp(from, self.end());
        &self.bytes[(from - self.base) as usize..(to - self.base) as usize]
    }
}

impl Searcher {
    /// The stream offset one past the last byte received (or the hole skipped).
    pub fn end(&self) -> u64 {
        self.start + self.tail.len() as u64
    }

    /// Bytes held (for memory accounting).
    pub fn held(&self) -> usize {
        self.tail.capacity()
    }

    /// The next bytes of the stream, at `offset` (normally [`Searcher::end`]; bytes before it
    /// are ignored, a jump past it is a hole), which came at capture time `ts_ns`. `work` is a
    /// scratch buffer (shared by all searchers). The matches now known are appended to `out`.
    pub fn data(
        &mut self,
        p: &Patterns,
        offset: u64,
        bytes: &[u8],
        ts_ns: u64,
        work: &mut Vec<u8>,
        out: &mut Vec<Found>,
    ) {
        let end = self.end();
        if offset > end {
            self.lost(p, end, offset - end, out);
        }
        let (offset, bytes) = if offset < end {
            let skip = end - offset;
            if skip >= bytes.len() as u64 {
                return;
            }
            (end, &bytes[skip as usize..])
        } else {
            (offset, bytes)
        };
        if bytes.is_empty() {
            return;
        }
        if self.marks.back().is_none_or(|&(_, t)| t != ts_ns) {
            self.marks.push_back((offset, ts_ns));
        }
        work.clear();
        work.extend_from_slice(&self.tail);
        work.extend_from_slice(bytes);
        let view = View {
            base: self.start,
            bytes: work,
        };
        let mut found = Vec::new();
        if let Some(ac) = &p.lits {
            // Only the matches that end in the new bytes are new; those can start at most
            // (longest literal - 1) bytes before them.
            let from = offset.saturating_sub(p.max_lit as u64 - 1).max(view.base);
            for m in ac.find_overlapping_iter(view.slice(from, view.end())) {
                let (s, e) = (from + m.start() as u64, from + m.end() as u64);
                let k = m.pattern().as_usize();
                if e <= offset || s < self.lit_next[k] {
                    continue;
                }
                self.lit_next[k] = e;
                for &id in &p.lit_ids[k] {
                    found.push(Found {
                        pattern_id: id,
                        offset: s,
                        len: e - s,
                        ts_ns,
                        context: None,
                    });
                }
            }
        }
        self.re_floor = offset.saturating_sub(p.window as u64).max(view.base);
        self.search_regexes(p, view, false, &mut found);
        self.release(p, view, found, false, out);
        // Keep what the next piece needs.
        let mut keep_from = view.end().saturating_sub(p.keep());
        if let Some(n) = p.context {
            for f in &self.pending {
                keep_from = keep_from.min(f.offset.saturating_sub(n as u64));
            }
        }
        let keep_from = keep_from.max(view.base);
        let kept = view.slice(keep_from, view.end());
        self.tail.clear();
        self.tail.extend_from_slice(kept);
        if self.tail.capacity() > 4 * self.tail.len().max(4096) {
            self.tail.shrink_to(2 * self.tail.len());
        }
        self.start = keep_from;
        while self.marks.len() >= 2 && self.marks[1].0 <= self.start {
            self.marks.pop_front();
        }
    }

    /// `len` bytes from `offset` (normally [`Searcher::end`]) that will never come: what was
    /// held for them is reported (regex matches that reached the last byte, matches waiting
    /// for their after-context), and the search starts again after the hole.
    pub fn lost(&mut self, p: &Patterns, offset: u64, len: u64, out: &mut Vec<Found>) {
        let tail = std::mem::take(&mut self.tail);
        self.flush(p, &tail, out);
        let resume = offset
            .saturating_add(len)
            .max(self.start + tail.len() as u64);
        self.tail = tail;
        self.tail.clear();
        self.start = resume;
        self.re_floor = resume;
        self.marks.clear();
    }

    /// The end of the stream: what was held is reported, as for a hole.
    pub fn finish(&mut self, p: &Patterns, out: &mut Vec<Found>) {
        let tail = std::mem::take(&mut self.tail);
        self.flush(p, &tail, out);
        self.tail = tail;
    }

    fn flush(&mut self, p: &Patterns, tail: &[u8], out: &mut Vec<Found>) {
        let view = View {
            base: self.start,
            bytes: tail,
        };
        let mut found = Vec::new();
        self.search_regexes(p, view, true, &mut found);
        self.release(p, view, found, true, out);
    }

    /// Capture time of the piece that brought the byte at `at`.
    fn ts_of(&self, at: u64) -> u64 {
        self.marks
            .iter()
            .rev()
            .find(|&&(o, _)| o <= at)
            .or(self.marks.front())
            .map_or(0, |&(_, t)| t)
    }

    /// Runs each regex over the view from where its next match may start (not before the
    /// window). Without `last`, a match that reaches the view's end is left for later.
    fn search_regexes(&mut self, p: &Patterns, view: View<'_>, last: bool, found: &mut Vec<Found>) {
        if p.regexes.is_empty() || view.bytes.is_empty() {
            return;
        }
        let from = |next: u64| next.max(self.re_floor).max(view.base);
        let which: Vec<usize> = match &p.set {
            Some(set) => {
                let lowest = self
                    .re_next
                    .iter()
                    .map(|&n| from(n))
                    .min()
                    .unwrap_or(view.base);
                let rel = (lowest - view.base) as usize;
                set.matches_at(view.bytes, rel).iter().collect()
            }
            None => (0..p.regexes.len()).collect(),
        };
        for i in which {
            let (id, re) = &p.regexes[i];
            let mut at = (from(self.re_next[i]) - view.base) as usize;
            while at <= view.bytes.len() {
                let Some(m) = re.find_at(view.bytes, at) else {
                    break;
                };
                if m.end() == view.bytes.len() && !last {
                    break;
                }
                if m.is_empty() {
                    at = m.end() + 1;
                    continue;
                }
                let (s, e) = (view.base + m.start() as u64, view.base + m.end() as u64);
                self.re_next[i] = e;
                found.push(Found {
                    pattern_id: *id,
                    offset: s,
                    len: e - s,
                    ts_ns: self.ts_of(e - 1),
                    context: None,
                });
                at = m.end();
            }
        }
    }

    /// Hands the new matches over, in order of offset (then pattern), or, with `--context`,
    /// each once its after-context is in (or `last`: the stream stops here).
    fn release(
        &mut self,
        p: &Patterns,
        view: View<'_>,
        mut found: Vec<Found>,
        last: bool,
        out: &mut Vec<Found>,
    ) {
        found.sort_by_key(|f| (f.offset, f.pattern_id));
        let Some(n) = p.context else {
            out.append(&mut found);
            return;
        };
        let n = n as u64;
        self.pending.append(&mut found);
        let end = view.end();
        let mut waiting = Vec::new();
        for mut f in self.pending.drain(..) {
            let stop = f.offset + f.len;
            if !last && stop + n > end {
                waiting.push(f);
                continue;
            }
            f.context = Some(Context {
                before: view.slice(f.offset.saturating_sub(n), f.offset).to_vec(),
                matched: view.slice(f.offset, stop).to_vec(),
                after: view.slice(stop, stop + n).to_vec(),
            });
            out.push(f);
        }
        self.pending = waiting;
    }
}

/// One line of the `match` log.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MatchRecord<'a> {
    /// Capture time of the piece that brought the match's last byte, seconds since the epoch.
    pub ts: f64,
    /// The connection's uid ([`crate::conn::uid`]).
    pub uid: &'a str,
    /// Its endpoints.
    #[serde(flatten)]
    pub id: &'a crate::conn::ConnTuple,
    /// Whose bytes: `orig` (client to server) or `resp`.
    pub side: &'static str,
    /// Stream offset of the match's first byte in that direction.
    pub offset: u64,
    /// Its length.
    pub len: u64,
    /// The pattern as given (a `-f` line without its `re:` or `lit:`).
    pub pattern: &'a str,
    /// Its index among the patterns, 0-based.
    pub pattern_id: usize,
    /// With `--context`: the bytes before the match, [`escape`]d.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// With `--context`: the bytes after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// With `--context`: the match itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<String>,
}

impl<'a> MatchRecord<'a> {
    /// The record of match `f` of `patterns` on connection `uid`/`id`, direction `side`.
    pub fn new(
        f: &Found,
        patterns: &'a Patterns,
        uid: &'a str,
        id: &'a crate::conn::ConnTuple,
        side: &'static str,
    ) -> MatchRecord<'a> {
        let c = f.context.as_ref();
        MatchRecord {
            ts: crate::conn::ts_secs(f.ts_ns),
            uid,
            id,
            side,
            offset: f.offset,
            len: f.len,
            pattern: &patterns.spec(f.pattern_id).text,
            pattern_id: f.pattern_id,
            before: c.map(|c| escape(&c.before)),
            after: c.map(|c| escape(&c.after)),
            matched: c.map(|c| escape(&c.matched)),
        }
    }
}

/// Bytes as text for a record: printable ASCII as it is, except the backslash; every other
/// byte (and `\`) as `\xNN`, so the text reads back unambiguously.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn pats(specs: &[PatternSpec], opts: MatchOptions) -> Patterns {
        Patterns::new(specs.to_vec(), &opts).unwrap()
    }

    /// Feeds `stream` in pieces of the given lengths (cycled) and returns (id, offset, len).
    fn feed(p: &Patterns, stream: &[u8], cuts: &[usize]) -> Vec<(usize, u64, u64)> {
        let mut s = p.searcher();
        let mut work = Vec::new();
        let mut out = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < stream.len() {
            let n = cuts[i % cuts.len()].max(1).min(stream.len() - at);
            s.data(
                p,
                at as u64,
                &stream[at..at + n],
                at as u64,
                &mut work,
                &mut out,
            );
            at += n;
            i += 1;
        }
        s.finish(p, &mut out);
        let mut v: Vec<_> = out
            .iter()
            .map(|f| (f.pattern_id, f.offset, f.len))
            .collect();
        v.sort();
        v
    }

    /// What a search of the whole stream at once finds.
    fn whole(specs: &[PatternSpec], ignore_case: bool, stream: &[u8]) -> Vec<(usize, u64, u64)> {
        let mut v = Vec::new();
        for (id, s) in specs.iter().enumerate() {
            let re = match s.kind {
                Kind::Literal => regex::escape(&s.text),
                Kind::Regex => s.text.clone(),
            };
            let re = RegexBuilder::new(&re)
                .case_insensitive(ignore_case)
                .build()
                .unwrap();
            for m in re.find_iter(stream) {
                if !m.is_empty() {
                    v.push((id, m.start() as u64, m.len() as u64));
                }
            }
        }
        v.sort();
        v
    }

    #[test]
    fn non_overlapping_per_pattern_overlapping_between_patterns() {
        let specs = [
            PatternSpec::literal("aa"),
            PatternSpec::literal("abc"),
            PatternSpec::literal("bcd"),
            PatternSpec::literal("aa"),
        ];
        let p = pats(&specs, MatchOptions::default());
        let got = feed(&p, b"aaaaa abcd", &[100]);
        assert_eq!(
            got,
            vec![
                (0, 0, 2),
                (0, 2, 2),
                (1, 6, 3),
                (2, 7, 3),
                (3, 0, 2),
                (3, 2, 2)
            ]
        );
    }

    #[test]
    fn literals_across_every_cut() {
        let specs = [
            PatternSpec::literal("HTTP/1.1"),
            PatternSpec::literal("Content-Type"),
            PatternSpec::literal("xx"),
            PatternSpec::literal("T"),
        ];
        let stream = b"GET / HTTP/1.1\r\nContent-Type: text/xxxxx\r\n\r\nHTTP/1.1 200 OK xxx";
        let want = whole(&specs, false, stream);
        let p = pats(&specs, MatchOptions::default());
        for cut in 1..stream.len() {
            assert_eq!(feed(&p, stream, &[cut]), want, "pieces of {cut}");
        }
        assert_eq!(feed(&p, stream, &[1, 2, 3, 5, 7]), want);
    }

    #[test]
    fn regexes_across_random_cuts_equal_one_search() {
        let specs = [
            PatternSpec::regex("[0-9]{3} OK"),
            PatternSpec::regex("id=[0-9]+;"),
            PatternSpec::regex("[0-9]+"),
            PatternSpec::regex("a*"),
            PatternSpec::literal("OK"),
            PatternSpec::regex(r"\bword\b"),
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let alphabet = b"0123456789 OKid=;a word\n";
        for round in 0..200 {
            let len = 1 + rng.below(400) as usize;
            let stream: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                .collect();
            let want = whole(&specs, false, &stream);
            let cuts: Vec<usize> = (0..7).map(|_| 1 + rng.below(40) as usize).collect();
            // The window is longer than any match of these streams but the digit runs,
            // which the test keeps short enough.
            let p = pats(
                &specs,
                MatchOptions {
                    window: 512,
                    ..MatchOptions::default()
                },
            );
            assert_eq!(
                feed(&p, &stream, &cuts),
                want,
                "round {round}: {stream:?} {cuts:?}"
            );
        }
    }

    #[test]
    fn a_greedy_regex_is_held_until_it_can_grow_no_more() {
        let specs = [PatternSpec::regex("X[0-9]+")];
        let p = pats(&specs, MatchOptions::default());
        assert_eq!(feed(&p, b"aX12345b", &[3, 2, 2]), vec![(0, 1, 6)]);
        // At the end of the stream it is final.
        assert_eq!(feed(&p, b"aX12345", &[3]), vec![(0, 1, 6)]);
    }

    #[test]
    fn a_match_longer_than_the_window_may_be_missed() {
        let specs = [PatternSpec::regex("<[a-z]*>")];
        let p = pats(
            &specs,
            MatchOptions {
                window: 8,
                ..MatchOptions::default()
            },
        );
        let stream = b"<abcdefghijklmnopqrstuvwxyz> <ab>";
        assert_eq!(feed(&p, stream, &[10]), vec![(0, 29, 4)]);
        // In one piece it is found.
        assert_eq!(feed(&p, stream, &[100]), vec![(0, 0, 28), (0, 29, 4)]);
    }

    #[test]
    fn a_bounded_regex_searches_no_more_than_its_longest_match() {
        let specs = [
            PatternSpec::regex(r"\b[0-9]{3} OK"),
            PatternSpec::regex("(?i)k"),
        ];
        let p = pats(&specs, MatchOptions::default());
        // "ddd OK" is 6 bytes; (?i)k also matches the Kelvin sign, 3 bytes in UTF-8.
        assert_eq!(p.window, 6);
        let unbounded = pats(&[PatternSpec::regex("x[0-9]+")], MatchOptions::default());
        assert_eq!(unbounded.window, DEFAULT_WINDOW);
        let stream = "HTTP/1.1 200 OK, 1200 OK, \u{212A}k".as_bytes();
        let whole = feed(&p, stream, &[stream.len()]);
        assert_eq!(
            whole,
            vec![(0, 9, 6), (1, 14, 1), (1, 23, 1), (1, 26, 3), (1, 29, 1)],
            "1200 OK has no word boundary before 200; every K and the Kelvin sign match"
        );
        for cut in 1..stream.len() {
            assert_eq!(feed(&p, stream, &[cut]), whole, "pieces of {cut} bytes");
        }
    }

    #[test]
    fn a_hole_separates_and_resets() {
        let specs = [PatternSpec::literal("abcd"), PatternSpec::regex("x[0-9]+")];
        let p = pats(&specs, MatchOptions::default());
        let mut s = p.searcher();
        let (mut work, mut out) = (Vec::new(), Vec::new());
        s.data(&p, 0, b"..abx12", 1, &mut work, &mut out);
        assert!(out.is_empty());
        s.lost(&p, 7, 5, &mut out);
        // The held regex match is final before the hole.
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].pattern_id, out[0].offset, out[0].len), (1, 4, 3));
        assert_eq!(out[0].ts_ns, 1);
        out.clear();
        // "cd" after the hole does not complete "ab" before it.
        s.data(&p, 12, b"cd abcd", 2, &mut work, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].offset, out[0].ts_ns), (15, 2));
        assert_eq!(s.end(), 19);
    }

    #[test]
    fn bytes_received_twice_give_one_match() {
        let specs = [PatternSpec::literal("needle")];
        let p = pats(&specs, MatchOptions::default());
        let mut s = p.searcher();
        let (mut work, mut out) = (Vec::new(), Vec::new());
        s.data(&p, 0, b"a needle", 1, &mut work, &mut out);
        s.data(&p, 2, b"needle and", 2, &mut work, &mut out);
        s.data(&p, 0, b"a needle and", 3, &mut work, &mut out);
        s.finish(&p, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(s.end(), 12);
    }

    #[test]
    fn the_time_is_that_of_the_piece_with_the_last_byte() {
        let specs = [PatternSpec::regex("ab+"), PatternSpec::literal("xyz")];
        let p = pats(&specs, MatchOptions::default());
        let mut s = p.searcher();
        let (mut work, mut out) = (Vec::new(), Vec::new());
        s.data(&p, 0, b"x", 10, &mut work, &mut out);
        s.data(&p, 1, b"yzab", 20, &mut work, &mut out);
        s.data(&p, 5, b"b", 30, &mut work, &mut out);
        s.data(&p, 6, b"c", 40, &mut work, &mut out);
        let got: Vec<_> = out
            .iter()
            .map(|f| (f.pattern_id, f.offset, f.ts_ns))
            .collect();
        assert_eq!(got, vec![(1, 0, 20), (0, 3, 30)]);
    }

    #[test]
    fn context_waits_for_the_bytes_after() {
        let specs = [PatternSpec::literal("key")];
        let p = pats(
            &specs,
            MatchOptions {
                context: Some(4),
                ..MatchOptions::default()
            },
        );
        let mut s = p.searcher();
        let (mut work, mut out) = (Vec::new(), Vec::new());
        s.data(&p, 0, b"0123\r\nke", 1, &mut work, &mut out);
        s.data(&p, 8, b"y=", 2, &mut work, &mut out);
        assert!(out.is_empty());
        s.data(&p, 10, b"v\\1 tail key", 3, &mut work, &mut out);
        assert_eq!(out.len(), 1);
        let c = out[0].context.as_ref().unwrap();
        assert_eq!(
            (&c.before[..], &c.matched[..], &c.after[..]),
            (&b"23\r\n"[..], &b"key"[..], &b"=v\\1"[..])
        );
        assert_eq!(out[0].ts_ns, 2);
        // The last one gets what there is at the end.
        s.finish(&p, &mut out);
        assert_eq!(out.len(), 2);
        let c = out[1].context.as_ref().unwrap();
        assert_eq!((&c.before[..], &c.after[..]), (&b"ail "[..], &b""[..]));
        assert_eq!(escape(b"a\\b\r\n\x00\x7f~ "), r"a\x5cb\x0d\x0a\x00\x7f~ ");
    }

    #[test]
    fn ignore_case() {
        let specs = [
            PatternSpec::literal("content-type"),
            PatternSpec::regex("ok"),
        ];
        let p = pats(
            &specs,
            MatchOptions {
                ignore_case: true,
                ..MatchOptions::default()
            },
        );
        assert_eq!(
            feed(&p, b"Content-TYPE: x OK", &[5]),
            vec![(0, 0, 12), (1, 16, 2)]
        );
    }

    #[test]
    fn pattern_files_and_errors() {
        let text = "# comment\nHTTP/1.1\r\nre:[0-9]{3} OK\n\nlit:#hash\nlit:re:x\n";
        let specs = parse_pattern_file(text, "p.txt").unwrap();
        assert_eq!(
            specs,
            vec![
                PatternSpec::literal("HTTP/1.1"),
                PatternSpec::regex("[0-9]{3} OK"),
                PatternSpec::literal("#hash"),
                PatternSpec::literal("re:x"),
            ]
        );
        let e = parse_pattern_file("a\nre:\n", "p.txt").unwrap_err();
        assert_eq!(e.to_string(), "p.txt line 2: empty pattern");
        let e = Patterns::new(vec![PatternSpec::regex("[0-9")], &MatchOptions::default())
            .unwrap_err()
            .to_string();
        assert_eq!(e, r#"bad regex "[0-9": unclosed character class"#);
        assert!(Patterns::new(vec![], &MatchOptions::default()).is_err());
        assert!(Patterns::new(vec![PatternSpec::literal("")], &MatchOptions::default()).is_err());
    }
}
