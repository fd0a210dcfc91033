//! What the benchmark binaries share: the memcpy baseline over a capture's TCP payload,
//! medians and per-round ratios, the `result` lines they print for `scripts/bench.sh`, and
//! issue 18's table of targets. Timing lives in the benchmark binaries only, never in tests.

use anyhow::{ensure, Result};
use mos_sensor::capture::{CaptureBackend, FileCapture};
use mos_sensor::parse::{parse_packet, Parsed};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Size of the memcpy baseline's destination buffer (the default ring size).
pub const SCRATCH: usize = 256 * 1024;

/// Each TCP segment's captured payload as (offset, len) in `bytes`, in capture order.
///
/// `FileCapture::from_bytes` reads frames in place from the vector it is given, so a payload's
/// offset is its address minus the vector's; every slice found is checked against `bytes`.
pub fn payload_segments(name: &str, bytes: &[u8], verify: bool) -> Result<Vec<(usize, usize)>> {
    let data = bytes.to_vec();
    let base = data.as_ptr() as usize;
    let mut cap = FileCapture::from_bytes(name, data)?;
    let mut segs = Vec::new();
    while let Ok(Some(pkt)) = cap.next_packet() {
        if let Ok(Parsed::Tcp(seg)) = parse_packet(&pkt, verify) {
            if seg.payload.is_empty() {
                continue;
            }
            let off = (seg.payload.as_ptr() as usize).wrapping_sub(base);
            let len = seg.payload.len();
            ensure!(
                off.checked_add(len).is_some_and(|end| end <= bytes.len())
                    && bytes[off..off + len] == *seg.payload,
                "{name}: payload not found in place in the capture bytes"
            );
            segs.push((off, len));
        }
    }
    Ok(segs)
}

/// One memcpy run: every payload, in order, into the wrapping scratch buffer.
pub fn run_memcpy(src: &[u8], segments: &[(usize, usize)], scratch: &mut [u8]) -> Duration {
    let start = Instant::now();
    let mut pos = 0usize;
    for &(off, len) in segments {
        let len = len.min(scratch.len());
        if pos + len > scratch.len() {
            pos = 0;
        }
        scratch[pos..pos + len].copy_from_slice(&src[off..off + len]);
        pos += len;
        black_box(&mut *scratch);
    }
    let t = start.elapsed();
    black_box(scratch);
    t
}

/// Median, minimum and maximum (`v` must not be empty).
pub fn med_min_max(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (med, s[0], s[n - 1])
}

/// Millions of frames per second.
pub fn mpps(frames: u64, t: Duration) -> f64 {
    frames as f64 / t.as_secs_f64() / 1e6
}

/// Gigabits per second.
pub fn gbps(bytes: u64, t: Duration) -> f64 {
    bytes as f64 * 8.0 / t.as_secs_f64() / 1e9
}

/// A median with the smallest and largest of the values it is the median of.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub med: f64,
    pub min: f64,
    pub max: f64,
    /// How many values.
    pub n: usize,
}

impl Spread {
    /// `None` for no values.
    pub fn of(v: &[f64]) -> Option<Spread> {
        if v.is_empty() {
            return None;
        }
        let (med, min, max) = med_min_max(v);
        Some(Spread {
            med,
            min,
            max,
            n: v.len(),
        })
    }

    /// `median (min-max)` with `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        format!(
            "{:.d$} ({:.d$}-{:.d$})",
            self.med,
            self.min,
            self.max,
            d = digits
        )
    }
}

/// Round by round, `of[i] / base[i]` (rounds without both are left out).
pub fn paired_ratios(of: &[f64], base: &[f64]) -> Vec<f64> {
    of.iter().zip(base).map(|(x, b)| x / b).collect()
}

/// How the benchmark binaries hand their figures to `scripts/bench.sh`: one line per figure,
/// `result METRIC CAPTURE med=M min=A max=B n=N`, where CAPTURE is the capture's file stem.
pub const RESULT_PREFIX: &str = "result ";

pub fn result_line(metric: &str, capture: &str, s: &Spread) -> String {
    format!(
        "{RESULT_PREFIX}{metric} {capture} med={} min={} max={} n={}",
        s.med, s.min, s.max, s.n
    )
}

/// A figure read back from a [`result_line`].
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub metric: String,
    pub capture: String,
    pub spread: Spread,
}

/// `Ok(None)` for a line that is not a result line, an error for one that is but is malformed.
pub fn parse_result_line(line: &str) -> Result<Option<Figure>> {
    let Some(rest) = line.strip_prefix(RESULT_PREFIX) else {
        return Ok(None);
    };
    let mut f = rest.split_whitespace();
    let (Some(metric), Some(capture)) = (f.next(), f.next()) else {
        anyhow::bail!("result line without a metric and a capture: {line:?}");
    };
    let mut get = |key: &str| -> Result<&str> {
        let field = f
            .next()
            .ok_or_else(|| anyhow::anyhow!("result line without {key}: {line:?}"))?;
        field
            .strip_prefix(key)
            .and_then(|v| v.strip_prefix('='))
            .ok_or_else(|| anyhow::anyhow!("result line: {field:?} where {key}= was due: {line:?}"))
    };
    let num = |v: &str| -> Result<f64> {
        let x: f64 = v
            .parse()
            .map_err(|e| anyhow::anyhow!("result line: {v:?}: {e}: {line:?}"))?;
        ensure!(
            x.is_finite(),
            "result line: {v} is not a finite number: {line:?}"
        );
        Ok(x)
    };
    let (med, min, max) = (num(get("med")?)?, num(get("min")?)?, num(get("max")?)?);
    let n: usize = get("n")?
        .parse()
        .map_err(|e| anyhow::anyhow!("result line: n: {e}: {line:?}"))?;
    ensure!(
        min <= med && med <= max && n > 0,
        "result line out of order (min <= med <= max, n > 0): {line:?}"
    );
    Ok(Some(Figure {
        metric: metric.to_string(),
        capture: capture.to_string(),
        spread: Spread { med, min, max, n },
    }))
}

/// A target of issue 18: a bound on a figure's median.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    AtMost(f64),
    AtLeast(f64),
}

impl Bound {
    pub fn met(&self, v: f64) -> bool {
        match *self {
            Bound::AtMost(b) => v <= b,
            Bound::AtLeast(b) => v >= b,
        }
    }

    pub fn show(&self) -> String {
        match *self {
            Bound::AtMost(b) => format!("<= {b}"),
            Bound::AtLeast(b) => format!(">= {b}"),
        }
    }
}

/// Which capture a row of the table is measured on; `scripts/bench.sh` says which file plays
/// each role (`pub-bench --report --role short=STEM ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Many short connections (`mkpcap short-flows`).
    Short,
    /// One bulk transfer (`mkpcap bulk`).
    Bulk,
    /// Real traffic: many short HTTP connections.
    Http,
    /// Real traffic: a mix (the corpus merged).
    Mixed,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role> {
        Ok(match s {
            "short" => Role::Short,
            "bulk" => Role::Bulk,
            "http" => Role::Http,
            "mixed" => Role::Mixed,
            _ => anyhow::bail!("unknown role {s:?} (short, bulk, http, mixed)"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Short => "short",
            Role::Bulk => "bulk",
            Role::Http => "http",
            Role::Mixed => "mixed",
        }
    }
}

/// One row of issue 18's table: which figure on which capture, against which bound.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    /// The row's number in the issue's table (`2a`, `2b`: one row, two captures).
    pub id: &'static str,
    pub what: &'static str,
    pub metric: &'static str,
    pub role: Role,
    pub bound: Bound,
}

/// The metrics the benchmark binaries print (see their `--help`):
/// - `cpu_pub2_nopub`: sensor CPU time with two `peek-sink` analyzers / with `--no-publish`;
/// - `mpps_pub2_nopub_pinned`: throughput with two analyzers / `--no-publish`, pinned;
/// - `peek_memcpy`: `peek` bandwidth / `memcpy` of the same chunks, in each analyzer;
/// - `core_mpps`: `core-bench --warm-tracker` Mpps (checksums verified);
/// - `core_memcpy`: core payload bandwidth / `memcpy` of the same payload;
/// - `cpu_nopub_nids`: `mos-sensor --no-publish` CPU time / the libnids peer's.
pub const ISSUE18_ROWS: [Row; 8] = [
    Row {
        id: "1",
        what: "sensor CPU, 2 analyzers / --no-publish",
        metric: "cpu_pub2_nopub",
        role: Role::Short,
        bound: Bound::AtMost(1.3),
    },
    Row {
        id: "2a",
        what: "Mpps, 2 analyzers / --no-publish, pinned",
        metric: "mpps_pub2_nopub_pinned",
        role: Role::Short,
        bound: Bound::AtLeast(0.7),
    },
    Row {
        id: "2b",
        what: "Mpps, 2 analyzers / --no-publish, pinned",
        metric: "mpps_pub2_nopub_pinned",
        role: Role::Bulk,
        bound: Bound::AtLeast(0.7),
    },
    Row {
        id: "3",
        what: "peek / memcpy of the same chunks",
        metric: "peek_memcpy",
        role: Role::Short,
        bound: Bound::AtLeast(0.5),
    },
    Row {
        id: "4",
        what: "core alone, Mpps, checksums verified",
        metric: "core_mpps",
        role: Role::Short,
        bound: Bound::AtLeast(8.0),
    },
    Row {
        id: "5",
        what: "core alone / memcpy of the payload",
        metric: "core_memcpy",
        role: Role::Bulk,
        bound: Bound::AtLeast(0.7),
    },
    Row {
        id: "6a",
        what: "CPU, mos-sensor --no-publish / libnids",
        metric: "cpu_nopub_nids",
        role: Role::Http,
        bound: Bound::AtMost(0.33),
    },
    Row {
        id: "6b",
        what: "CPU, mos-sensor --no-publish / libnids",
        metric: "cpu_nopub_nids",
        role: Role::Mixed,
        bound: Bound::AtMost(0.33),
    },
];

/// Issue 18's table as markdown: for each row, the figure measured on the capture that plays
/// its role (`roles`: role and capture stem), its median and range, the target and whether
/// the median meets it. A row whose role has no capture, or whose figure is missing, says so.
/// Two figures for the same metric and capture are an error (two runs would be mixed).
pub fn issue18_table(figures: &[Figure], roles: &[(Role, String)]) -> Result<Vec<String>> {
    let mut out = vec![
        "| # | what | capture | measured: median (min-max) | target | status |".to_string(),
        "|---|---|---|---:|---:|---|".to_string(),
    ];
    for row in &ISSUE18_ROWS {
        let capture = roles.iter().find(|(r, _)| *r == row.role).map(|(_, c)| c);
        let found: Vec<&Figure> = figures
            .iter()
            .filter(|f| f.metric == row.metric && Some(&f.capture) == capture)
            .collect();
        ensure!(
            found.len() <= 1,
            "{} figures of {} on {}",
            found.len(),
            row.metric,
            capture.map_or("?", String::as_str)
        );
        let (cap, measured, status) = match (capture, found.first()) {
            (None, _) => (
                format!("({} capture: none)", row.role.name()),
                "-".to_string(),
                "not measured".to_string(),
            ),
            (Some(c), None) => (c.clone(), "-".to_string(), "not measured".to_string()),
            (Some(c), Some(f)) => (
                c.clone(),
                f.spread.show(if row.metric == "core_mpps" { 2 } else { 3 }),
                if row.bound.met(f.spread.med) {
                    "met".to_string()
                } else {
                    "not met".to_string()
                },
            ),
        };
        out.push(format!(
            "| {} | {} | {cap} | {measured} | {} | {status} |",
            row.id,
            row.what,
            row.bound.show()
        ));
    }
    Ok(out)
}

/// What a machine with a CPU for every analyzer would give, from the pinned runs of this one:
/// with `--pin`, `pub1`'s one analyzer has a CPU to itself, so its cost to the sensor over
/// `pub0` (publishing to no analyzer) is what each analyzer adds when none shares the sensor's
/// CPU or another analyzer's. For each of the short and bulk captures: the measured sensor CPU
/// and throughput of `pub0` and `pub1` over `--no-publish`, and the figures projected for two
/// analyzers on CPUs of their own (`pub0 + 2 x (pub1 - pub0)`, on CPU time and on time per
/// packet), beside rows 1 and 2's targets. The projection leans high: the work done once for
/// all analyzers (building the events, the lossless check before each packet) is in `pub1`
/// and so counted twice. A capture without the four figures is left out; no capture with
/// them gives no table.
pub fn more_cpus_table(figures: &[Figure], roles: &[(Role, String)]) -> Vec<String> {
    let get = |metric: &str, capture: &str| {
        figures
            .iter()
            .find(|f| f.metric == metric && f.capture == capture)
            .map(|f| f.spread.med)
    };
    let mut out = Vec::new();
    for role in [Role::Short, Role::Bulk] {
        let Some((_, c)) = roles.iter().find(|(r, _)| *r == role) else {
            continue;
        };
        let (Some(c0), Some(c1), Some(m0), Some(m1)) = (
            get("cpu_pub0_nopub_pinned", c),
            get("cpu_pub1_nopub_pinned", c),
            get("mpps_pub0_nopub_pinned", c),
            get("mpps_pub1_nopub_pinned", c),
        ) else {
            continue;
        };
        if out.is_empty() {
            out.push(
                "| capture | sensor CPU / --no-publish: no analyzer, one on its own CPU, two projected (target <= 1.3) | Mpps / --no-publish: no analyzer, one on its own CPU, two projected (target >= 0.7) |"
                    .to_string(),
            );
            out.push("|---|---:|---:|".to_string());
        }
        let cpu2 = c0 + 2.0 * (c1 - c0);
        // Throughput ratios are --no-publish's time over the mode's: add the times.
        let mpps2 = if m0 > 0.0 && m1 > 0.0 {
            1.0 / (1.0 / m0 + 2.0 * (1.0 / m1 - 1.0 / m0))
        } else {
            f64::NAN
        };
        out.push(format!(
            "| {c} | {c0:.3}, {c1:.3}, {cpu2:.3} | {m0:.3}, {m1:.3}, {mpps2:.3} |"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_and_paired_ratios() {
        assert_eq!(Spread::of(&[]), None);
        let s = Spread::of(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.med, s.min, s.max, s.n), (2.5, 1.0, 10.0, 4));
        assert_eq!(s.show(1), "2.5 (1.0-10.0)");
        assert_eq!(paired_ratios(&[2.0, 9.0, 5.0], &[1.0, 3.0]), vec![2.0, 3.0]);
    }

    #[test]
    fn result_lines_round_trip() {
        let s = Spread {
            med: 0.412_345_678_9,
            min: 0.1,
            max: 1.25,
            n: 5,
        };
        let line = result_line("cpu_nopub_nids", "alexa-app", &s);
        let f = parse_result_line(&line).unwrap().unwrap();
        assert_eq!(f.metric, "cpu_nopub_nids");
        assert_eq!(f.capture, "alexa-app");
        assert_eq!(f.spread, s);
        assert_eq!(parse_result_line("raw short20k run 0: ...").unwrap(), None);
    }

    #[test]
    fn malformed_result_lines_are_errors() {
        for bad in [
            "result cpu_pub2_nopub",
            "result cpu_pub2_nopub short20k med=1 min=0.5",
            "result cpu_pub2_nopub short20k med=1 max=2 min=0.5 n=3",
            "result cpu_pub2_nopub short20k med=x min=0.5 max=2 n=3",
            "result cpu_pub2_nopub short20k med=inf min=0.5 max=2 n=3",
            "result cpu_pub2_nopub short20k med=3 min=0.5 max=2 n=3",
            "result cpu_pub2_nopub short20k med=1 min=0.5 max=2 n=0",
        ] {
            assert!(parse_result_line(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bounds() {
        assert!(Bound::AtMost(1.3).met(1.3) && !Bound::AtMost(1.3).met(1.31));
        assert!(Bound::AtLeast(0.7).met(0.7) && !Bound::AtLeast(0.7).met(0.69));
        assert_eq!(Bound::AtMost(0.33).show(), "<= 0.33");
        assert_eq!(Role::parse("mixed").unwrap(), Role::Mixed);
        assert!(Role::parse("long").is_err());
    }

    fn fig(metric: &str, capture: &str, med: f64) -> Figure {
        Figure {
            metric: metric.into(),
            capture: capture.into(),
            spread: Spread {
                med,
                min: med / 2.0,
                max: med * 2.0,
                n: 3,
            },
        }
    }

    #[test]
    fn the_table_maps_roles_to_captures() {
        let figures = [
            fig("cpu_pub2_nopub", "short20k", 2.0),
            // Another capture's figure for the same metric is not this row's.
            fig("cpu_pub2_nopub", "bulk100m", 1.0),
            fig("mpps_pub2_nopub_pinned", "bulk100m", 0.8),
            fig("core_mpps", "short20k", 9.0),
            fig("cpu_nopub_nids", "alexa-app", 0.3),
        ];
        let roles = [
            (Role::Short, "short20k".to_string()),
            (Role::Bulk, "bulk100m".to_string()),
            (Role::Http, "alexa-app".to_string()),
        ];
        let t = issue18_table(&figures, &roles).unwrap();
        assert_eq!(t.len(), 2 + ISSUE18_ROWS.len());
        assert!(
            t[2].contains("short20k") && t[2].ends_with("| <= 1.3 | not met |"),
            "{}",
            t[2]
        );
        assert!(t[3].ends_with("| >= 0.7 | not measured |"), "{}", t[3]);
        assert!(
            t[4].contains("bulk100m") && t[4].ends_with("| met |"),
            "{}",
            t[4]
        );
        assert!(
            t[6].contains("9.00 (4.50-18.00)") && t[6].ends_with("| met |"),
            "{}",
            t[6]
        );
        assert!(
            t[8].contains("alexa-app") && t[8].ends_with("| met |"),
            "{}",
            t[8]
        );
        assert!(
            t[9].starts_with("| 6b |") && t[9].contains("(mixed capture: none)"),
            "{}",
            t[9]
        );
        let twice = [
            fig("core_mpps", "short20k", 9.0),
            fig("core_mpps", "short20k", 7.0),
        ];
        assert!(issue18_table(&twice, &roles).is_err());
    }

    #[test]
    fn more_cpus_projects_two_analyzers_from_one() {
        let roles = [
            (Role::Short, "short20k".to_string()),
            (Role::Bulk, "bulk100m".to_string()),
        ];
        let figures = [
            fig("cpu_pub0_nopub_pinned", "short20k", 1.2),
            fig("cpu_pub1_nopub_pinned", "short20k", 1.4),
            fig("mpps_pub0_nopub_pinned", "short20k", 0.8),
            fig("mpps_pub1_nopub_pinned", "short20k", 0.5),
            // The bulk capture lacks pub1's throughput: no row for it.
            fig("cpu_pub0_nopub_pinned", "bulk100m", 1.1),
            fig("cpu_pub1_nopub_pinned", "bulk100m", 1.2),
            fig("mpps_pub0_nopub_pinned", "bulk100m", 0.9),
        ];
        let t = more_cpus_table(&figures, &roles);
        assert_eq!(t.len(), 3, "{t:?}");
        // 1.2 + 2 x 0.2 = 1.6; times 1.25 and 2.0: 1.25 + 2 x 0.75 = 2.75, 1 / 2.75 = 0.364.
        assert_eq!(
            t[2], "| short20k | 1.200, 1.400, 1.600 | 0.800, 0.500, 0.364 |",
            "{t:?}"
        );
        assert!(more_cpus_table(&figures[4..], &roles).is_empty());
    }
}
