//! `mos-grep`'s command line.

use crate::grep::DEFAULT_WINDOW;
use crate::output::OutputArgs;
use crate::AttachArgs;
use std::path::PathBuf;

/// Searches every connection's two reassembled byte streams for many patterns at once and
/// writes one JSON record per match (log "match": ts, uid, id.orig_h, id.orig_p, id.resp_h,
/// id.resp_p, side, offset, len, pattern, pattern_id, and with --context before, after,
/// matched), to stdout or with --out to DIR/match.jsonl.
///
/// Each pattern's matches in a direction are its leftmost non-overlapping occurrences from the
/// start of the stream, as `grep -o` counts them on one pattern; different patterns are
/// matched independently, so their matches may overlap. Matches across TCP segments are found
/// and reported once, retransmitted bytes are searched once, and no match spans bytes the
/// capture lost. `offset` is the match's first byte in its direction's stream (0 is the first
/// byte after the SYN); `ts` is the capture time of the packet that brought its last byte
/// into the reassembled stream (for bytes that came out of order, the packet that filled the
/// hole before them).
/// Within one batch of bytes, matches are written in order of offset.
///
/// Patterns, numbered from 0 in command-line order (a -f file's lines in place of the -f):
/// -e a literal, -E a regex, -f a file of them. A regex is searched in each new run of bytes
/// with up to --regex-window bytes before it (fewer when every regex's matches are shorter:
/// then as many as the longest match can span): a match longer than the window may be missed
/// or found in part. A regex match that reaches the last byte received so far is written once
/// the next bytes show where it ends (or the stream ends, or a hole follows).
///
/// Exits 0 when the sensor's input ends, 1 on an error (a bad pattern, an output that fails,
/// the sensor going away or detaching this analyzer), 130 when stopped by SIGINT or SIGTERM.
/// At the end it searches what the open connections still hold and prints a summary on
/// stderr.
#[derive(clap::Parser, Debug)]
#[command(
    name = "mos-grep",
    version = shm_layout::version!(),
    group = clap::ArgGroup::new("patterns").required(true).multiple(true)
        .args(["literal", "regex", "file"])
)]
pub struct Args {
    /// A literal pattern: these bytes, as they are (repeatable).
    #[arg(
        short = 'e',
        long = "literal",
        value_name = "PATTERN",
        allow_hyphen_values = true
    )]
    pub literal: Vec<String>,
    /// A regular expression, the Rust regex crate's syntax over bytes (repeatable). Unicode
    /// mode is on: `(?-u:.)` or `(?-u:\xff)` match any or arbitrary bytes; `.` does not
    /// match a newline; `^` and `$` match at the start and end of the stream, or with `(?m)`
    /// of each line.
    #[arg(
        short = 'E',
        long = "regex",
        value_name = "REGEX",
        allow_hyphen_values = true
    )]
    pub regex: Vec<String>,
    /// A file of patterns, one per line (LF or CR LF): a literal, or `re:REGEX` for a regex,
    /// or `lit:TEXT` for a literal that starts with `#`, `re:` or `lit:`; empty lines and
    /// lines starting with `#` are skipped (repeatable).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Vec<PathBuf>,
    /// Ignore case: ASCII letters for literals, Unicode case folding for regexes.
    #[arg(short = 'i', long)]
    pub ignore_case: bool,
    /// Which direction to search: orig (what the client sent), resp (what the server sent)
    /// or both.
    #[arg(long, value_enum, value_name = "SIDE", default_value = "both")]
    pub side: SideArg,
    /// Add the N bytes before and after each match, and the match itself, to its record
    /// (before, after, matched: printable ASCII as is, other bytes and `\` as \xNN). N is 0 to
    /// 4096. A match is then written once N bytes after it are in, or the stream stops.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u16).range(0..=crate::grep::MAX_CONTEXT as i64))]
    pub context: Option<u16>,
    /// Bytes before each new run of bytes that regexes are searched with, 1 to 16777216
    /// (per direction of each connection, kept in memory); when every regex's longest match is
    /// shorter, that length is used instead.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_WINDOW as u32,
          value_parser = clap::value_parser!(u32).range(1..=16 << 20))]
    pub regex_window: u32,
    /// After N matches in a connection (both directions together), write no more of them and
    /// stop watching it. Default: no limit.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_matches_per_flow: Option<u64>,
    #[command(flatten)]
    pub attach: AttachArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SideArg {
    Orig,
    Resp,
    Both,
}
