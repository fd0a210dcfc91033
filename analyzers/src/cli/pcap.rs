//! `mos-pcap`'s command line.

use crate::pcapout::{Format, MAX_SNAPLEN};
use crate::AttachArgs;
use std::path::PathBuf;
use std::time::Duration;

/// Writes the packets of the connections whose first packet matches --filter (all of them
/// without it) to a pcap or pcapng file, as the sensor captured them (link header first), read
/// from the sensor's packet log. With --matches, only the connections that the given lines
/// name by "uid" (mos-grep's matches, or any record of mos-log) are written: mos-pcap holds
/// each watched connection's packets in its own memory (--buffer-mib) until a line names it,
/// then writes them and the connection's later packets as they come, so a connection named
/// after some of its packets went by is still written from its start (the file is then in
/// capture order within each connection, not across connections). A connection that ended
/// unnamed is let go --linger seconds after its end.
///
/// At exit it prints on stderr the packets and connections written, the packets it could no
/// longer get from the sensor's packet log (in live mode the log may overwrite a frame before
/// mos-pcap reads it), and with --matches the packets dropped from its own buffer when it was
/// full and the named connections it never saw. Files are created with mode 0640 less the
/// umask (packets carry payloads: the owner and its group only); an existing file is
/// overwritten. Output is
/// flushed every second and at exit. Exits 0 when the sensor's input ends, 130 when stopped by
/// SIGINT or SIGTERM, 1 on an error or when the sensor goes away (after writing what it has).
///
/// For example, the connections in whose streams mos-grep finds "passwd" (mos-grep writes its
/// matches to stdout): mos-grep -e passwd | mos-pcap --matches - --out hits.pcapng
#[derive(clap::Parser, Debug)]
#[command(name = "mos-pcap", version = shm_layout::version!())]
pub struct Args {
    /// The file to write; - for stdout.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Add to --out rather than overwrite it: a new pcapng section after what the file holds
    /// (pcapng only; a file that is not pcapng is refused). For a service that restarts.
    #[arg(long)]
    pub append: bool,
    /// pcap (microsecond timestamps; one link type per file: the first packet's, packets of
    /// another link type are skipped and counted) or pcapng (nanosecond timestamps; one
    /// interface per link type: tshark reads a file of several, tcpdump only files of one).
    /// Default: pcapng for a FILE ending in .pcapng, else pcap.
    #[arg(long, value_name = "FORMAT", value_parser = Format::parse)]
    pub format: Option<Format>,
    /// Bytes kept of each packet, 1 to 262144 (longer packets are cut, their length on the
    /// wire kept).
    #[arg(long, value_name = "BYTES", default_value_t = MAX_SNAPLEN, value_parser = snaplen)]
    pub snaplen: u32,
    #[command(flatten)]
    pub attach: AttachArgs,
    /// JSON lines naming connections by "uid" (as mos-grep, mos-log and --list write them):
    /// only those connections are written. - reads stdin. A pipe is read as lines come (a
    /// running mos-grep's output); a regular file is read to its end before mos-pcap attaches,
    /// so nothing needs holding (to follow a file that still grows, pipe it: tail -f -n +1
    /// FILE | mos-pcap --matches - ...). Lines without a "uid" are skipped and counted.
    #[arg(long, value_name = "FILE")]
    pub matches: Option<PathBuf>,
    /// With --matches from a pipe: MiB of memory for the packets of connections not named yet,
    /// 1 to 1048576; when full, the connections that began holding packets first lose theirs
    /// first (counted).
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = buffer_mib)]
    pub buffer_mib: u64,
    /// With --matches from a pipe: seconds (wall clock, 0 to 3600) to keep the packets of a
    /// connection that ended unnamed, for a name still on its way; also how long mos-pcap
    /// waits for the last names once the sensor's input ended.
    #[arg(long, value_name = "SECS", default_value = "10", allow_hyphen_values = true,
          value_parser = linger)]
    pub linger: Duration,
    /// Writes one JSON line per connection mos-pcap sees (that --filter takes), when its first
    /// packet comes: "ts" (its start), "uid", "id.orig_h", "id.orig_p", "id.resp_h",
    /// "id.resp_p", lines that --matches takes back. - for stdout (unless --out is).
    #[arg(long, value_name = "FILE")]
    pub list: Option<PathBuf>,
}

pub fn snaplen(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=MAX_SNAPLEN).contains(&n) => Ok(n),
        _ => Err(format!("must be a whole number from 1 to {MAX_SNAPLEN}")),
    }
}

pub fn buffer_mib(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if (1..=1_048_576).contains(&n) => Ok(n),
        _ => Err("must be a whole number of MiB from 1 to 1048576".into()),
    }
}

pub fn linger(s: &str) -> Result<Duration, String> {
    let range = "between 0 and 3600 seconds";
    let x: f64 = s
        .parse()
        .map_err(|_| format!("expected a number ({range})"))?;
    match Duration::try_from_secs_f64(x) {
        Ok(d) if x <= 3600.0 => Ok(d),
        _ => Err(format!("must be {range}")),
    }
}
