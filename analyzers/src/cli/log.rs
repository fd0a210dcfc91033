//! `mos-log`'s command line.

use crate::log::Logs;
use crate::output::OutputArgs;
use crate::AttachArgs;

/// Writes one JSON object per line, with Zeek's field names: conn (one record per connection
/// when it ends: bytes and packets each way, Zeek's conn_state and history, both sides' final
/// TCP states, retransmitted and conflicting bytes, why it ended), http (one per
/// request/response pair), tls (one per handshake: version, cipher, SNI, ALPN, JA3, JA3S,
/// JA4, the certificate chain up to TLS 1.2), ssh (banners and HASSH fingerprints) and weird
/// (what a parser could not make sense of). The protocol is found from each connection's
/// first bytes, not its ports; TLS that starts later (after STARTTLS, FTP's AUTH TLS, LDAP's
/// StartTLS, MySQL's SSL request) is found by its hellos within the first 64 KiB of each
/// direction. Every record starts with ts (capture time, seconds), uid (the connection's id,
/// the same in every analyzer attached to the sensor) and id.orig_h, id.orig_p, id.resp_h,
/// id.resp_p (client and server; when the sensor guessed the roles of a connection picked up
/// midstream and its first bytes show them the other way round, the http, tls and weird
/// records name the real client as orig, while its conn record keeps the sensor's roles
/// with roles_guessed true). The records go to stdout, or to
/// DIR/LOG.jsonl with --out, and to Redis Streams or Kafka with --redis or --kafka. Exits 0
/// when the sensor's input ends, 1 on an error, 130 when stopped by SIGINT or SIGTERM.
/// Stopped, or without its sensor (it went away or detached this analyzer: exit 1), it still
/// writes the connections open then, as far as they got (their conn records have no
/// end_reason). At the end, a summary on stderr: connections, records per log, weirds, events
/// taken and dropped by the sensor, records the output dropped.
#[derive(clap::Parser, Debug)]
#[command(name = "mos-log", version = shm_layout::version!())]
pub struct Args {
    /// The logs to write, comma-separated, from conn, http, tls, ssh, weird. Without http,
    /// tls, ssh and weird no stream is read (conn records then have no service); weird alone
    /// runs every parser and writes only their weirds.
    #[arg(long, value_name = "LIST", default_value = "conn,http,tls,ssh,weird",
          value_parser = crate::log::parse_logs)]
    pub logs: Logs,
    #[command(flatten)]
    pub attach: AttachArgs,
    /// The name the sensor shows for this analyzer (its log, mos-ctl status).
    #[arg(long, value_name = "NAME", default_value = "mos-log")]
    pub name: String,
    #[command(flatten)]
    pub output: OutputArgs,
}
