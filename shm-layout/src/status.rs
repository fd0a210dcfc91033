//! A running sensor's state as `mos-ctl status` and the metrics endpoint show it: the report
//! the sensor sends in answer to [`crate::control::ClientMsg::Status`], and the pure functions
//! that render it as text and as Prometheus metrics. The sensor and `mos-ctl` share them, so
//! the socket and the HTTP endpoint always say the same thing.
//!
//! Every number is an integer (milliseconds, bytes, counts), so reports compare exactly.

use crate::EventMask;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Frames, records and analyzers lost or skipped, by cause (summed over workers).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drops {
    /// Frames the capture dropped before the sensor saw them (AF_PACKET ring drops, DPDK
    /// `imissed`).
    pub capture: u64,
    /// Frames the NIC received with errors (DPDK `ierrors`).
    pub nic_errors: u64,
    /// Frames lost for want of an mbuf (DPDK `rx_nombuf`).
    pub no_mbuf: u64,
    /// Frames cut inside a header (skipped).
    pub truncated: u64,
    /// Frames with impossible header values (skipped).
    pub malformed: u64,
    /// Frames of a link type the sensor does not read (skipped).
    pub unsupported_link: u64,
    /// TCP segments with a bad checksum (kept, or dropped with `--drop-bad-checksums`).
    pub bad_checksum: u64,
    /// TCP segments whose payload the snap length cut (the rest is a gap).
    pub snap_cut: u64,
    /// IP fragments discarded (with their datagram, or on their own).
    pub fragments: u64,
    /// Events not delivered because an analyzer's ring was full (lossy mode).
    pub events: u64,
    /// Analyzers detached for making no progress.
    pub stalled_analyzers: u64,
}

/// One attached analyzer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyzerStatus {
    /// Its number for this sensor run.
    pub id: u32,
    /// The name it gave at attach.
    pub name: String,
    /// Its process id (from the socket's credentials).
    pub pid: u32,
    /// Its user id.
    pub uid: u32,
    /// Its user's name (`/etc/passwd`), or the uid as text.
    pub user: String,
    /// The events it subscribed to, by mOS name without `MOS_ON_` (empty before it
    /// subscribes).
    pub events: Vec<String>,
    /// Whether it reads packets (`getlastpkt`).
    pub packets: bool,
    /// Whether it said it is ready for events.
    pub ready: bool,
    /// Events written to its rings (summed over workers).
    pub published: u64,
    /// Events it consumed (summed over workers).
    pub delivered: u64,
    /// Events lost because its ring was full (summed over workers).
    pub dropped: u64,
    /// Events published and not consumed yet (summed over workers).
    pub lag: u64,
    /// Milliseconds since its last heartbeat (`None`: it never wrote one).
    pub heartbeat_age_ms: Option<u64>,
    /// Records the analyzer says it dropped on its own side (a broker down or too slow, a
    /// full queue of its own), as it wrote it in its page: shown, never acted on (ABI minor
    /// 3; 0 for an analyzer that does not report it).
    ///
    /// In JSON it is one of the analyzer's fields. On the control socket it travels in
    /// [`StatusReport::analyzer_records_dropped`] instead, so that an analyzer entry keeps the
    /// encoding a `mos-ctl` that predates it decodes.
    #[serde(
        default,
        serialize_with = "readable_only::serialize",
        deserialize_with = "readable_only::deserialize"
    )]
    pub records_dropped: u64,
}

/// A number that human-readable formats (JSON) carry and compact ones (bincode, the control
/// socket) leave out entirely: it encodes as nothing there, and decodes as 0.
mod readable_only {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            v.serialize(s)
        } else {
            ().serialize(s)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        if d.is_human_readable() {
            u64::deserialize(d)
        } else {
            <()>::deserialize(d).map(|()| 0)
        }
    }
}

/// A running sensor's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The sensor's process id.
    pub sensor_pid: u32,
    /// The sensor's version.
    pub version: String,
    /// The sensor's epoch (as in the shared header).
    pub epoch: u64,
    /// What it reads: `pcap PATH`, `iface eth0 (AF_PACKET)`, `dpdk port 0 (net_pcap)`.
    pub input: String,
    /// `lossless` (waits for analyzers) or `lossy` (drops their events).
    pub mode: String,
    /// `starting`, `running`, `done` or `stopped`.
    pub state: String,
    /// Workers.
    pub workers: u32,
    /// When the sensor started, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// How long it has run, ms.
    pub uptime_ms: u64,
    /// Frames read.
    pub frames: u64,
    /// Bytes of frames read (as captured).
    pub bytes: u64,
    /// Frames per second over the last second or so.
    pub frames_per_sec: u64,
    /// Bytes per second over the last second or so.
    pub bytes_per_sec: u64,
    /// TCP segments.
    pub tcp_segments: u64,
    /// IP packets that are not TCP.
    pub other_ip: u64,
    /// Frames without IP.
    pub not_ip: u64,
    /// Losses by cause.
    pub drops: Drops,
    /// Connections tracked now.
    pub flows_live: u64,
    /// Connections tracked since start.
    pub flows_total: u64,
    /// Connections evicted for room.
    pub flows_evicted: u64,
    /// Payload bytes stored in streams.
    pub payload_bytes: u64,
    /// Events published to analyzers (all of them).
    pub events_published: u64,
    /// Times a worker waited for a slow analyzer (lossless mode).
    pub waits: u64,
    /// The sensor's resident memory (`VmRSS`), bytes.
    pub memory_rss_bytes: u64,
    /// The most memory its configuration lets it use (`--memcap` check), bytes, if known.
    pub memory_bound_bytes: Option<u64>,
    /// The analyzers attached, by id.
    pub analyzers: Vec<AnalyzerStatus>,
    /// Frames skipped as the outgoing copy on a loopback device (AF_PACKET hands each frame
    /// there to the capture twice, as sent and as received); 0 for other inputs. Last, so that
    /// a `mos-ctl` that predates it still reads the rest of the report.
    pub loopback_outgoing: u64,
    /// The stream chunk pool (after `loopback_outgoing`, for the same reason).
    pub stream: StreamStatus,
    /// On the control socket: each analyzer's [`AnalyzerStatus::records_dropped`], in the
    /// order of `analyzers` (last, for the same reason). [`StatusReport::for_the_wire`] fills
    /// it and [`StatusReport::from_the_wire`] moves it back into the analyzers' entries,
    /// leaving it empty. A decoder expects it (even empty), so it is always encoded; `mos-ctl
    /// status --json` leaves it out.
    #[serde(default)]
    pub analyzer_records_dropped: Vec<u64>,
}

impl StatusReport {
    /// The report as the sensor sends it: [`StatusReport::analyzer_records_dropped`] filled
    /// from the analyzers' entries.
    pub fn for_the_wire(mut self) -> StatusReport {
        self.analyzer_records_dropped = self.analyzers.iter().map(|a| a.records_dropped).collect();
        self
    }

    /// The report as decoded from the control socket, with each analyzer's
    /// `records_dropped` back in its entry (a sensor that predates the field sends none: they
    /// stay 0).
    pub fn from_the_wire(mut self) -> StatusReport {
        for (a, n) in self
            .analyzers
            .iter_mut()
            .zip(&self.analyzer_records_dropped)
        {
            a.records_dropped = *n;
        }
        self.analyzer_records_dropped = Vec::new();
        self
    }
}

/// The stream chunk pool, summed over workers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStatus {
    /// Chunks in the pool.
    pub chunks: u64,
    /// Chunks held by streams now.
    pub chunks_in_use: u64,
    /// Bytes per chunk.
    pub chunk_bytes: u64,
    /// Stream bytes lost for room (beyond a side's span, or no chunk or fragment slot).
    pub overflow_bytes: u64,
    /// Of those, bytes dropped because the pool was empty even after taking back history.
    pub pool_empty_bytes: u64,
    /// In-order bytes taken back from the least recently active sides' history because the
    /// pool ran empty (an analyzer still reading them sees an overrun).
    pub reclaimed_bytes: u64,
}

/// Every built-in event with its mOS name without `MOS_ON_`, in bit order.
pub const EVENT_NAMES: [(EventMask, &str); 9] = [
    (EventMask::PKT_IN, "PKT_IN"),
    (EventMask::CONN_START, "CONN_START"),
    (EventMask::CONN_NEW_DATA, "CONN_NEW_DATA"),
    (EventMask::ERROR, "ERROR"),
    (EventMask::TIMEOUT, "TIMEOUT"),
    (EventMask::TCP_STATE_CHANGE, "TCP_STATE_CHANGE"),
    (EventMask::ORPHAN, "ORPHAN"),
    (EventMask::REXMIT, "REXMIT"),
    (EventMask::CONN_END, "CONN_END"),
];

/// The names of the built-in events in `mask`, in bit order; bits without a name are shown
/// as `0x...`.
pub fn event_names(mask: u64) -> Vec<String> {
    let mut out: Vec<String> = EVENT_NAMES
        .iter()
        .filter(|(m, _)| mask & m.0 != 0)
        .map(|(_, n)| (*n).to_string())
        .collect();
    let known = EVENT_NAMES.iter().fold(0, |a, (m, _)| a | m.0);
    if mask & !known != 0 {
        out.push(format!("{:#x}", mask & !known));
    }
    out
}

/// The name of `id` in a `/etc/passwd` or `/etc/group` text (name in the first field, id in
/// the third).
pub fn id_name(db: &str, id: u32) -> Option<String> {
    db.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse() == Ok(id)).then(|| name.to_string())
    })
}

/// An analyzer's subscription in one word: event names joined by `,`, then `+packets`; `-`
/// when it has none.
pub fn subscription_text(a: &AnalyzerStatus) -> String {
    let mut s = a.events.join(",");
    if a.packets {
        s.push_str(if s.is_empty() { "packets" } else { "+packets" });
    }
    if s.is_empty() {
        s.push('-');
    }
    s
}

/// `n` bytes in binary units, one decimal (`512 B`, `1.5 KiB`, `3.0 GiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// A duration in ms as `3d 04h 05m 06s`, `04h 05m 06s`, `5m 06s` or `6.2s`.
pub fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h:02}h {m:02}m {sec:02}s")
    } else if h > 0 {
        format!("{h}h {m:02}m {sec:02}s")
    } else if m > 0 {
        format!("{m}m {sec:02}s")
    } else {
        format!("{}.{}s", sec, ms % 1000 / 100)
    }
}

/// A time in ms since the Unix epoch as `YYYY-MM-DD hh:mm:ss UTC`.
pub fn utc_time(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let rem = secs % 86400;
    format!(
        "{} {:02}:{:02}:{:02} UTC",
        civil_date((secs / 86400) as i64),
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The calendar date (proleptic Gregorian) of a day counted from 1970-01-01, as
/// `YYYY-MM-DD`; days before 1970 are negative.
pub fn civil_date(days: i64) -> String {
    // Days to a civil date by 400-year eras.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The report as `mos-ctl status` prints it: a few lines about the sensor, then one line per
/// analyzer under a header line.
pub fn render_text(r: &StatusReport) -> String {
    let mut o = String::new();
    let d = &r.drops;
    let _ = writeln!(
        o,
        "mos-sensor {} (pid {}), {}, epoch {:#x}",
        r.version, r.sensor_pid, r.state, r.epoch
    );
    let _ = writeln!(
        o,
        "input:     {} ({}, {} worker{})",
        r.input,
        r.mode,
        r.workers,
        if r.workers == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        o,
        "uptime:    {} (started {})",
        human_duration(r.uptime_ms),
        utc_time(r.started_unix_ms)
    );
    let _ = writeln!(
        o,
        "frames:    {} ({}); {} frames/s, {}/s; {} TCP, {} other IP, {} not IP{}",
        r.frames,
        human_bytes(r.bytes),
        r.frames_per_sec,
        human_bytes(r.bytes_per_sec),
        r.tcp_segments,
        r.other_ip,
        r.not_ip,
        if r.loopback_outgoing > 0 {
            format!("; {} outgoing loopback copies skipped", r.loopback_outgoing)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        o,
        "flows:     {} live, {} total, {} evicted; {} of payload",
        r.flows_live,
        r.flows_total,
        r.flows_evicted,
        human_bytes(r.payload_bytes)
    );
    let st = &r.stream;
    let _ = writeln!(
        o,
        "streams:   {} of {} chunks of {} in use; {} lost for room ({} for want of chunks), {} of history taken back",
        st.chunks_in_use,
        st.chunks,
        human_bytes(st.chunk_bytes),
        human_bytes(st.overflow_bytes),
        human_bytes(st.pool_empty_bytes),
        human_bytes(st.reclaimed_bytes)
    );
    let _ = writeln!(
        o,
        "drops:     capture {}, NIC errors {}, no mbuf {}, truncated {}, malformed {}, unsupported link {}, bad checksum {}, snap cut {}, fragments {}, events {}, stalled analyzers {}",
        d.capture,
        d.nic_errors,
        d.no_mbuf,
        d.truncated,
        d.malformed,
        d.unsupported_link,
        d.bad_checksum,
        d.snap_cut,
        d.fragments,
        d.events,
        d.stalled_analyzers
    );
    let _ = writeln!(
        o,
        "events:    {} published, {} waits for slow analyzers",
        r.events_published, r.waits
    );
    let _ = writeln!(
        o,
        "memory:    {} resident{}",
        human_bytes(r.memory_rss_bytes),
        r.memory_bound_bytes
            .map(|b| format!(", at most {} by configuration", human_bytes(b)))
            .unwrap_or_default()
    );
    let _ = writeln!(o, "analyzers: {}", r.analyzers.len());
    if r.analyzers.is_empty() {
        return o;
    }
    let header = [
        "ID",
        "NAME",
        "PID",
        "USER",
        "SUBSCRIPTION",
        "DELIVERED",
        "DROPPED",
        "LAG",
        "REC-DROPPED",
        "HEARTBEAT",
    ];
    let rows: Vec<[String; 10]> = r
        .analyzers
        .iter()
        .map(|a| {
            [
                a.id.to_string(),
                a.name.clone(),
                a.pid.to_string(),
                a.user.clone(),
                subscription_text(a),
                a.delivered.to_string(),
                a.dropped.to_string(),
                a.lag.to_string(),
                a.records_dropped.to_string(),
                a.heartbeat_age_ms
                    .map_or_else(|| "-".to_string(), |ms| format!("{ms}ms ago")),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            // Numbers line up on the right, words on the left.
            if matches!(i, 0 | 2 | 5 | 6 | 7 | 8) {
                let _ = write!(l, "  {c:>w$}");
            } else {
                let _ = write!(l, "  {c:<w$}");
            }
        }
        l.truncate(l.trim_end().len());
        l.push('\n');
        l
    };
    o.push_str(&line(&header));
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        o.push_str(&line(&cells));
    }
    o
}

/// A label value in the exposition format: backslash, double quote and newline escaped.
fn label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Writes one metric family: its `HELP` and `TYPE` lines, then a sample per `(labels, value)`.
fn family(o: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(o, "{name} {v}");
        } else {
            let _ = writeln!(o, "{name}{{{labels}}} {v}");
        }
    }
}

/// One per-analyzer number (`None`: no sample for this analyzer).
type AnalyzerValue = dyn Fn(&AnalyzerStatus) -> Option<f64>;

/// The report as Prometheus metrics (text exposition format 0.0.4): sensor-wide counters and
/// gauges, then one series per analyzer for each analyzer metric, labelled `id`, `name`,
/// `user`. The names are listed in `docs/OPERATIONS.md`.
pub fn render_prometheus(r: &StatusReport) -> String {
    let mut o = String::new();
    let one = |v: u64| vec![(String::new(), v as f64)];
    let d = &r.drops;
    family(
        &mut o,
        "mos_sensor_info",
        "gauge",
        "The sensor's version, input and mode (always 1).",
        &[(
            format!(
                "version=\"{}\",input=\"{}\",mode=\"{}\",pid=\"{}\"",
                label(&r.version),
                label(&r.input),
                label(&r.mode),
                r.sensor_pid
            ),
            1.0,
        )],
    );
    family(
        &mut o,
        "mos_sensor_start_time_seconds",
        "gauge",
        "When the sensor started, seconds since the Unix epoch.",
        &[(String::new(), r.started_unix_ms as f64 / 1000.0)],
    );
    family(
        &mut o,
        "mos_sensor_uptime_seconds",
        "gauge",
        "How long the sensor has run, seconds.",
        &[(String::new(), r.uptime_ms as f64 / 1000.0)],
    );
    family(
        &mut o,
        "mos_sensor_workers",
        "gauge",
        "Workers the sensor runs.",
        &one(u64::from(r.workers)),
    );
    let counters: [(&str, &str, u64); 28] = [
        ("mos_frames_total", "Frames read.", r.frames),
        (
            "mos_frame_bytes_total",
            "Bytes of frames read, as captured.",
            r.bytes,
        ),
        ("mos_tcp_segments_total", "TCP segments.", r.tcp_segments),
        (
            "mos_other_ip_packets_total",
            "IP packets that are not TCP.",
            r.other_ip,
        ),
        ("mos_not_ip_frames_total", "Frames without IP.", r.not_ip),
        (
            "mos_loopback_outgoing_frames_total",
            "Outgoing copies of frames on a loopback device, skipped (each is captured twice there).",
            r.loopback_outgoing,
        ),
        (
            "mos_capture_drops_total",
            "Frames the capture dropped before the sensor saw them.",
            d.capture,
        ),
        (
            "mos_nic_errors_total",
            "Frames the NIC received with errors (DPDK ierrors).",
            d.nic_errors,
        ),
        (
            "mos_nic_no_mbuf_total",
            "Frames lost for want of an mbuf (DPDK rx_nombuf).",
            d.no_mbuf,
        ),
        (
            "mos_truncated_frames_total",
            "Frames cut inside a header, skipped.",
            d.truncated,
        ),
        (
            "mos_malformed_frames_total",
            "Frames with impossible header values, skipped.",
            d.malformed,
        ),
        (
            "mos_unsupported_link_frames_total",
            "Frames of an unsupported link type, skipped.",
            d.unsupported_link,
        ),
        (
            "mos_bad_checksum_segments_total",
            "TCP segments with a bad checksum.",
            d.bad_checksum,
        ),
        (
            "mos_snap_cut_segments_total",
            "TCP segments whose payload the snap length cut.",
            d.snap_cut,
        ),
        (
            "mos_fragments_dropped_total",
            "IP fragments discarded.",
            d.fragments,
        ),
        (
            "mos_events_dropped_total",
            "Events lost because an analyzer's ring was full.",
            d.events,
        ),
        (
            "mos_analyzers_stalled_total",
            "Analyzers detached for making no progress.",
            d.stalled_analyzers,
        ),
        (
            "mos_flows_total",
            "Connections tracked since start.",
            r.flows_total,
        ),
        (
            "mos_flows_evicted_total",
            "Connections evicted for room.",
            r.flows_evicted,
        ),
        (
            "mos_payload_bytes_total",
            "Payload bytes stored in streams.",
            r.payload_bytes,
        ),
        (
            "mos_events_published_total",
            "Events published to analyzers.",
            r.events_published,
        ),
        (
            "mos_waits_total",
            "Times a worker waited for a slow analyzer (lossless mode).",
            r.waits,
        ),
        ("mos_flows_live", "Connections tracked now.", r.flows_live),
        (
            "mos_stream_overflow_bytes_total",
            "Stream bytes lost for room (beyond a side's span, or no chunk or fragment slot).",
            r.stream.overflow_bytes,
        ),
        (
            "mos_stream_pool_empty_bytes_total",
            "Stream bytes dropped because the chunk pool was empty.",
            r.stream.pool_empty_bytes,
        ),
        (
            "mos_stream_reclaimed_bytes_total",
            "History bytes taken back from idle sides because the chunk pool ran empty.",
            r.stream.reclaimed_bytes,
        ),
        (
            "mos_stream_chunks",
            "Chunks in the stream chunk pool.",
            r.stream.chunks,
        ),
        (
            "mos_stream_chunks_in_use",
            "Chunks of the stream chunk pool held by streams now.",
            r.stream.chunks_in_use,
        ),
    ];
    for (name, help, v) in counters {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        family(&mut o, name, kind, help, &one(v));
    }
    family(
        &mut o,
        "mos_frames_per_second",
        "gauge",
        "Frames read per second over the last second or so.",
        &one(r.frames_per_sec),
    );
    family(
        &mut o,
        "mos_frame_bytes_per_second",
        "gauge",
        "Bytes of frames read per second over the last second or so.",
        &one(r.bytes_per_sec),
    );
    family(
        &mut o,
        "mos_memory_rss_bytes",
        "gauge",
        "The sensor's resident memory (VmRSS).",
        &one(r.memory_rss_bytes),
    );
    if let Some(b) = r.memory_bound_bytes {
        family(
            &mut o,
            "mos_memory_bound_bytes",
            "gauge",
            "The most memory the sensor's configuration lets it use.",
            &one(b),
        );
    }
    family(
        &mut o,
        "mos_analyzers",
        "gauge",
        "Analyzers attached.",
        &one(r.analyzers.len() as u64),
    );
    let ids: Vec<String> = r
        .analyzers
        .iter()
        .map(|a| {
            format!(
                "id=\"{}\",name=\"{}\",user=\"{}\"",
                a.id,
                label(&a.name),
                label(&a.user)
            )
        })
        .collect();
    let per = |f: &AnalyzerValue| -> Vec<(String, f64)> {
        r.analyzers
            .iter()
            .zip(&ids)
            .filter_map(|(a, l)| f(a).map(|v| (l.clone(), v)))
            .collect()
    };
    family(
        &mut o,
        "mos_analyzer_info",
        "gauge",
        "An attached analyzer: its pid and subscription (always 1).",
        &r.analyzers
            .iter()
            .zip(&ids)
            .map(|(a, l)| {
                (
                    format!(
                        "{l},pid=\"{}\",subscription=\"{}\"",
                        a.pid,
                        label(&subscription_text(a))
                    ),
                    1.0,
                )
            })
            .collect::<Vec<_>>(),
    );
    let analyzer_metrics: [(&str, &str, &str, &AnalyzerValue); 6] = [
        (
            "mos_analyzer_events_published_total",
            "counter",
            "Events written to the analyzer's rings.",
            &|a| Some(a.published as f64),
        ),
        (
            "mos_analyzer_events_delivered_total",
            "counter",
            "Events the analyzer consumed.",
            &|a| Some(a.delivered as f64),
        ),
        (
            "mos_analyzer_events_dropped_total",
            "counter",
            "Events lost because the analyzer's ring was full.",
            &|a| Some(a.dropped as f64),
        ),
        (
            "mos_analyzer_lag_events",
            "gauge",
            "Events published to the analyzer and not consumed yet.",
            &|a| Some(a.lag as f64),
        ),
        (
            "mos_analyzer_heartbeat_age_seconds",
            "gauge",
            "Seconds since the analyzer's last heartbeat.",
            &|a| a.heartbeat_age_ms.map(|ms| ms as f64 / 1000.0),
        ),
        (
            "mos_analyzer_records_dropped_total",
            "counter",
            "Records the analyzer says it dropped on its own side (a broker down or too slow), as it reports it.",
            &|a| Some(a.records_dropped as f64),
        ),
    ];
    for (name, kind, help, f) in analyzer_metrics {
        family(&mut o, name, kind, help, &per(f));
    }
    o
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn sample() -> StatusReport {
        StatusReport {
            sensor_pid: 4242,
            version: "0.1.0".into(),
            epoch: 0xabc,
            input: "pcap /tmp/a \"b\".pcap".into(),
            mode: "lossless".into(),
            state: "running".into(),
            workers: 2,
            started_unix_ms: 1_700_000_000_250,
            uptime_ms: 3_723_400,
            frames: 1000,
            bytes: 1_500_000,
            frames_per_sec: 10,
            bytes_per_sec: 2048,
            tcp_segments: 990,
            other_ip: 7,
            not_ip: 3,
            drops: Drops {
                capture: 1,
                nic_errors: 2,
                no_mbuf: 3,
                truncated: 4,
                malformed: 5,
                unsupported_link: 6,
                bad_checksum: 7,
                snap_cut: 8,
                fragments: 9,
                events: 10,
                stalled_analyzers: 11,
            },
            flows_live: 12,
            flows_total: 130,
            flows_evicted: 14,
            payload_bytes: 15_000,
            events_published: 700,
            waits: 16,
            memory_rss_bytes: 50 << 20,
            memory_bound_bytes: Some(3 << 30),
            loopback_outgoing: 0,
            stream: StreamStatus {
                chunks: 6144,
                chunks_in_use: 700,
                chunk_bytes: 32768,
                overflow_bytes: 3000,
                pool_empty_bytes: 2048,
                reclaimed_bytes: 1 << 20,
            },
            analyzer_records_dropped: Vec::new(),
            analyzers: vec![
                AnalyzerStatus {
                    id: 1,
                    name: "mos-flowstat".into(),
                    pid: 100,
                    uid: 0,
                    user: "root".into(),
                    events: event_names(
                        (EventMask::CONN_START | EventMask::TCP_STATE_CHANGE | EventMask::CONN_END)
                            .0,
                    ),
                    packets: false,
                    ready: true,
                    published: 400,
                    delivered: 390,
                    dropped: 0,
                    lag: 10,
                    heartbeat_age_ms: Some(1500),
                    records_dropped: 0,
                },
                AnalyzerStatus {
                    id: 2,
                    name: "odd \"name\"\\".into(),
                    pid: 101,
                    uid: 65534,
                    user: "nobody".into(),
                    events: Vec::new(),
                    packets: true,
                    ready: false,
                    published: 300,
                    delivered: 300,
                    dropped: 5,
                    lag: 0,
                    heartbeat_age_ms: None,
                    records_dropped: 123_456,
                },
            ],
        }
    }

    #[test]
    fn the_status_text_says_everything_in_fixed_lines() {
        let text = render_text(&sample());
        let expected = "\
mos-sensor 0.1.0 (pid 4242), running, epoch 0xabc
input:     pcap /tmp/a \"b\".pcap (lossless, 2 workers)
uptime:    1h 02m 03s (started 2023-11-14 22:13:20 UTC)
frames:    1000 (1.4 MiB); 10 frames/s, 2.0 KiB/s; 990 TCP, 7 other IP, 3 not IP
flows:     12 live, 130 total, 14 evicted; 14.6 KiB of payload
streams:   700 of 6144 chunks of 32.0 KiB in use; 2.9 KiB lost for room (2.0 KiB for want of chunks), 1.0 MiB of history taken back
drops:     capture 1, NIC errors 2, no mbuf 3, truncated 4, malformed 5, unsupported link 6, bad checksum 7, snap cut 8, fragments 9, events 10, stalled analyzers 11
events:    700 published, 16 waits for slow analyzers
memory:    50.0 MiB resident, at most 3.0 GiB by configuration
analyzers: 2
  ID  NAME          PID  USER    SUBSCRIPTION                          DELIVERED  DROPPED  LAG  REC-DROPPED  HEARTBEAT
   1  mos-flowstat  100  root    CONN_START,TCP_STATE_CHANGE,CONN_END        390        0   10            0  1500ms ago
   2  odd \"name\"\\   101  nobody  packets                                     300        5    0       123456  -
";
        assert_eq!(text, expected, "got:\n{text}");
        let mut none = sample();
        none.analyzers.clear();
        assert!(render_text(&none).ends_with("analyzers: 0\n"));
        let mut lo = sample();
        lo.loopback_outgoing = 17;
        assert!(
            render_text(&lo).contains("3 not IP; 17 outgoing loopback copies skipped\n"),
            "{}",
            render_text(&lo)
        );
    }

    #[test]
    fn the_metrics_are_well_formed_and_carry_every_number() {
        let mut r = sample();
        r.loopback_outgoing = 18;
        let text = render_prometheus(&r);
        let mut typed = std::collections::BTreeMap::new();
        let mut helped = std::collections::BTreeSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# HELP ") {
                helped.insert(rest.split(' ').next().unwrap().to_string());
            } else if let Some(rest) = l.strip_prefix("# TYPE ") {
                let mut f = rest.split(' ');
                typed.insert(f.next().unwrap().to_string(), f.next().unwrap().to_string());
            } else {
                let name_end = l.find(['{', ' ']).unwrap();
                let name = &l[..name_end];
                assert!(helped.contains(name) && typed.contains_key(name), "{l}");
                let value = l.rsplit(' ').next().unwrap();
                value.parse::<f64>().unwrap();
            }
        }
        for (name, kind) in &typed {
            assert_eq!(name.ends_with("_total"), kind == "counter", "{name} {kind}");
        }
        for line in [
            "mos_frames_total 1000",
            "mos_frame_bytes_total 1500000",
            "mos_loopback_outgoing_frames_total 18",
            "mos_flows_live 12",
            "mos_stream_chunks_in_use 700",
            "mos_stream_chunks 6144",
            "mos_stream_pool_empty_bytes_total 2048",
            "mos_stream_reclaimed_bytes_total 1048576",
            "mos_stream_overflow_bytes_total 3000",
            "mos_events_dropped_total 10",
            "mos_memory_bound_bytes 3221225472",
            "mos_sensor_uptime_seconds 3723.4",
            "mos_analyzers 2",
            "mos_analyzer_lag_events{id=\"1\",name=\"mos-flowstat\",user=\"root\"} 10",
            "mos_analyzer_events_dropped_total{id=\"2\",name=\"odd \\\"name\\\"\\\\\",user=\"nobody\"} 5",
            "mos_analyzer_heartbeat_age_seconds{id=\"1\",name=\"mos-flowstat\",user=\"root\"} 1.5",
            "mos_analyzer_records_dropped_total{id=\"1\",name=\"mos-flowstat\",user=\"root\"} 0",
            "mos_analyzer_records_dropped_total{id=\"2\",name=\"odd \\\"name\\\"\\\\\",user=\"nobody\"} 123456",
            "mos_sensor_info{version=\"0.1.0\",input=\"pcap /tmp/a \\\"b\\\".pcap\",mode=\"lossless\",pid=\"4242\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        // No heartbeat, no sample.
        assert!(!text.contains("mos_analyzer_heartbeat_age_seconds{id=\"2\""));
    }

    #[test]
    fn records_dropped_travels_apart_from_the_analyzer_entries() {
        // An analyzer entry as a mos-ctl that predates `records_dropped` decodes it.
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Before {
            id: u32,
            name: String,
            pid: u32,
            uid: u32,
            user: String,
            events: Vec<String>,
            packets: bool,
            ready: bool,
            published: u64,
            delivered: u64,
            dropped: u64,
            lag: u64,
            heartbeat_age_ms: Option<u64>,
        }
        let report = sample();
        let wire = crate::control::encode(&report.analyzers);
        let before: Vec<Before> = crate::control::decode(&wire).unwrap();
        assert_eq!(before.len(), 2);
        assert_eq!(before[1].name, report.analyzers[1].name);
        assert_eq!(before[1].heartbeat_age_ms, None);
        assert_eq!(before[0].heartbeat_age_ms, Some(1500));

        // Through the socket and back, the counts return to their entries.
        let sent = report.clone().for_the_wire();
        assert_eq!(sent.analyzer_records_dropped, [0, 123_456]);
        let got: StatusReport = crate::control::decode_limited(
            &crate::control::encode(&sent),
            crate::control::MAX_STATUS_MESSAGE,
        )
        .unwrap();
        assert_eq!(
            got.analyzers[1].records_dropped, 0,
            "not in the entry itself"
        );
        assert_eq!(got.clone().from_the_wire(), report);
        // A report without analyzers still decodes (the list is always encoded).
        let mut empty = sample();
        empty.analyzers.clear();
        let e = empty.clone().for_the_wire();
        let got: StatusReport = crate::control::decode(&crate::control::encode(&e)).unwrap();
        assert_eq!(got.from_the_wire(), empty);
    }

    #[test]
    fn names_and_units() {
        assert_eq!(event_names(0), Vec::<String>::new());
        assert_eq!(
            event_names(1 | 1 << 10 | 1 << 40),
            ["PKT_IN", "CONN_END", "0x10000000000"]
        );
        let db = "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n";
        assert_eq!(id_name(db, 65534).as_deref(), Some("nobody"));
        assert_eq!(id_name(db, 7), None);
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_duration(6_250), "6.2s");
        assert_eq!(human_duration(90_061_000), "1d 01h 01m 01s");
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
