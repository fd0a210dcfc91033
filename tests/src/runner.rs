//! Running the sensor on captures and comparing its dump with the truth.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::audit::{audit_capture, describe, Explained};
use crate::disagreements::{DisagreementRow, Reference};
use crate::flows::{read_dump, HalfStream};
use crate::frames::{scan_capture, FrameIndex};
use crate::known::{table_row, KnownDifferences, KnownEntry, RowKey, Rule, RuleEntry};
use crate::matcher::{compare, Comparison, MatchedBy, Outcome};
use crate::truth::{read_truth, TruthRow};

/// A fresh, empty directory under the system temp dir, unique within and across processes.
/// The caller removes it (see [`ScratchDir`]).
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> Result<Self> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let tag: String = tag
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .take(60)
            .collect();
        let p = std::env::temp_dir().join(format!("mos-{}-{seq}-{tag}", std::process::id()));
        // A leftover from a crashed run with a recycled pid must not leak into this one.
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(ScratchDir(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `sensor --pcap PCAP --dump DUMP [EXTRA...]` with a deadline. Output goes to files in `work`
/// rather than pipes, so a chatty sensor cannot block on a full pipe while we wait.
/// Fails on timeout (after killing it) or a non-zero exit, with the end of its stderr.
pub fn run_sensor_dump(
    sensor: &Path,
    pcap: &Path,
    dump: &Path,
    work: &Path,
    timeout: Duration,
    extra: &[&str],
) -> Result<()> {
    std::fs::create_dir_all(dump)?;
    let out_path = work.join("sensor.stdout");
    let err_path = work.join("sensor.stderr");
    let mut child = Command::new(sensor)
        .env("MOS_SENSOR_CONFIG", "")
        .arg("--pcap")
        .arg(pcap)
        .arg("--dump")
        .arg(dump)
        // The in-process dump alone, unless the caller publishes to analyzers.
        .args(if extra.contains(&"--control") {
            &[][..]
        } else {
            &["--no-publish"][..]
        })
        .args(extra)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()
        .with_context(|| format!("starting {}", sensor.display()))?;
    let start = Instant::now();
    let mut nap = Duration::from_millis(1);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "sensor timed out after {timeout:?} (killed); stderr tail:\n{}",
                tail(&err_path)
            );
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(50));
    };
    if !status.success() {
        bail!(
            "sensor exited with {status}; stderr tail:\n{}",
            tail(&err_path)
        );
    }
    Ok(())
}

fn tail(path: &Path) -> String {
    const MAX: usize = 3000;
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let cut = text.len().saturating_sub(MAX);
    let cut = (cut..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    let t = text[cut..].trim_end();
    if t.is_empty() {
        "(empty)".to_string()
    } else {
        t.to_string()
    }
}

/// Runs the sensor on one capture and returns our half-streams.
pub fn dump_capture(sensor: &Path, pcap: &Path, timeout: Duration) -> Result<Vec<HalfStream>> {
    dump_capture_with(sensor, pcap, timeout, &[])
}

/// [`dump_capture`] with extra sensor arguments.
pub fn dump_capture_with(
    sensor: &Path,
    pcap: &Path,
    timeout: Duration,
    extra: &[&str],
) -> Result<Vec<HalfStream>> {
    let name = pcap
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let work = ScratchDir::new(&name)?;
    let dump = work.path().join("dump");
    run_sensor_dump(sensor, pcap, &dump, work.path(), timeout, extra)?;
    read_dump(&dump)
}

#[derive(Debug)]
pub struct CaptureResult {
    pub capture: String,
    pub truth: Vec<TruthRow>,
    pub ours: Vec<HalfStream>,
    /// `Err` when the sensor failed or its dump or the truth could not be read.
    pub comparison: std::result::Result<Comparison, String>,
    /// The capture's rows of `reference-disagreements.tsv`.
    pub disagreements: Vec<DisagreementRow>,
    /// What the sensor's parser finds in the capture, for the known-difference rules.
    pub frames: std::result::Result<FrameIndex, String>,
    pub elapsed: Duration,
}

impl CaptureResult {
    /// The outcome of each truth row; every row of a failed capture is missing.
    pub fn outcome(&self, row: usize) -> Outcome {
        match &self.comparison {
            Ok(c) => c.outcomes[row],
            Err(_) => Outcome::Missing,
        }
    }
}

/// Runs the sensor on one capture and compares its dump with the truth; `disagreements` are
/// the capture's rows of `reference-disagreements.tsv`, kept for [`audit_capture`].
pub fn check_capture(
    corpus: &Path,
    sensor: &Path,
    capture: &str,
    timeout: Duration,
    disagreements: &[DisagreementRow],
) -> CaptureResult {
    let start = Instant::now();
    let truth_path = corpus.join("truth").join(format!("{capture}.tsv"));
    let truth = read_truth(&truth_path);
    let (truth, comparison, ours) = match truth {
        Err(e) => (Vec::new(), Err(format!("{e:#}")), Vec::new()),
        Ok(truth) => match dump_capture(sensor, &corpus.join("pcaps").join(capture), timeout) {
            Ok(ours) => {
                let c = compare(&truth, &ours);
                (truth, Ok(c), ours)
            }
            Err(e) => (truth, Err(format!("{e:#}")), Vec::new()),
        },
    };
    let frames = if comparison.is_ok() {
        scan_capture(&corpus.join("pcaps").join(capture)).map_err(|e| format!("{e:#}"))
    } else {
        Err("not scanned: the capture did not run".to_string())
    };
    CaptureResult {
        capture: capture.to_string(),
        truth,
        ours,
        comparison,
        disagreements: disagreements.to_vec(),
        frames,
        elapsed: start.elapsed(),
    }
}

/// Applies `f` to every item on `workers` threads; results keep the items' order.
pub fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.expect("every item was processed"))
        .collect()
}

pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Totals over a run, and what the conformance test asserts on.
#[derive(Debug, Default)]
pub struct Summary {
    pub captures: usize,
    pub failed: Vec<(String, String)>,
    pub rows: usize,
    pub agreeing: usize,
    pub agreeing_matched: usize,
    pub tshark_only: usize,
    pub tshark_only_matched: usize,
    pub extras: usize,
    /// Rows of `reference-disagreements.tsv` in captures that ran.
    pub disagreement_rows: usize,
    /// Of those, how many our bytes equal for each reference (a row can count for several).
    pub equal_to: [usize; 3],
    /// Of those, how many our bytes equal for no reference.
    pub equal_to_none: usize,
    /// Rows (truth or disagreement) where we recovered fewer bytes than some reference.
    pub deficit_rows: usize,
    /// Deficits per reference.
    pub deficits_by_ref: [usize; 3],
    /// Rows needing an explanation, by what explains them.
    pub explained_by_entry: usize,
    pub explained_by_rule: BTreeMap<Rule, usize>,
    /// Rows that need an explanation and have none, in captures that ran.
    pub unlisted: Vec<(RowKey, String)>,
    /// Every row that needs an explanation (a difference or a deficit), in captures that ran.
    pub differing: BTreeSet<RowKey>,
    /// Lines of the rule entries that accepted at least one row.
    pub used_rules: BTreeSet<usize>,
    /// Captures whose sensor run and comparison completed.
    pub ran: BTreeSet<String>,
}

impl Summary {
    pub fn agreeing_rate(&self) -> f64 {
        if self.agreeing == 0 {
            0.0
        } else {
            self.agreeing_matched as f64 / self.agreeing as f64
        }
    }

    pub fn stale<'a>(&self, known: &'a KnownDifferences) -> Vec<&'a KnownEntry> {
        known.stale(&self.ran, &self.differing)
    }

    pub fn stale_rules<'a>(&self, known: &'a KnownDifferences) -> Vec<&'a RuleEntry> {
        known.stale_rules(&self.ran, &self.used_rules)
    }
}

pub fn summarize(results: &[CaptureResult], known: &KnownDifferences) -> Summary {
    let mut s = Summary {
        captures: results.len(),
        ..Summary::default()
    };
    for r in results {
        s.rows += r.truth.len();
        match &r.comparison {
            Ok(c) => {
                s.extras += c.extras.len();
                s.ran.insert(r.capture.clone());
            }
            Err(e) => s.failed.push((r.capture.clone(), e.clone())),
        }
        for (i, t) in r.truth.iter().enumerate() {
            let matched = r.outcome(i).is_match();
            if t.is_agreeing() {
                s.agreeing += 1;
                s.agreeing_matched += usize::from(matched);
            } else {
                s.tshark_only += 1;
                s.tshark_only_matched += usize::from(matched);
            }
        }
        for a in audit_capture(r, known) {
            if a.disagreement.is_some() {
                s.disagreement_rows += 1;
                for (k, x) in Reference::ALL.iter().enumerate() {
                    s.equal_to[k] += usize::from(a.equals.contains(x));
                }
                s.equal_to_none += usize::from(a.equals.is_empty());
            }
            if !a.deficits.is_empty() {
                s.deficit_rows += 1;
                for (k, x) in Reference::ALL.iter().enumerate() {
                    s.deficits_by_ref[k] +=
                        usize::from(a.deficits.iter().any(|d| d.reference == *x));
                }
            }
            if !a.needs_explanation() {
                continue;
            }
            s.differing.insert(a.key.clone());
            match a.explained {
                Explained::No => s.unlisted.push((a.key.clone(), describe(r, &a))),
                Explained::Entry(_) => s.explained_by_entry += 1,
                Explained::Rule(rule, line) => {
                    *s.explained_by_rule.entry(rule).or_default() += 1;
                    s.used_rules.insert(line);
                }
            }
        }
    }
    s
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |a: usize, b: usize| {
            if b == 0 {
                0.0
            } else {
                100.0 * a as f64 / b as f64
            }
        };
        writeln!(
            f,
            "captures: {} ({} failed to run)",
            self.captures,
            self.failed.len()
        )?;
        writeln!(f, "truth rows: {}", self.rows)?;
        writeln!(
            f,
            "agreeing rows matched: {}/{} ({:.2} %)",
            self.agreeing_matched,
            self.agreeing,
            pct(self.agreeing_matched, self.agreeing)
        )?;
        writeln!(
            f,
            "tshark-only rows matched: {}/{} ({:.2} %)",
            self.tshark_only_matched,
            self.tshark_only,
            pct(self.tshark_only_matched, self.tshark_only)
        )?;
        writeln!(
            f,
            "extra half-streams of ours (not failing): {}",
            self.extras
        )?;
        writeln!(
            f,
            "reference disagreements: {} rows; ours equal tshark {}, tcpflow {}, libnids {}, none {}",
            self.disagreement_rows,
            self.equal_to[0],
            self.equal_to[1],
            self.equal_to[2],
            self.equal_to_none
        )?;
        writeln!(
            f,
            "rows where ours recovered fewer bytes than a reference: {} (than tshark {}, tcpflow {}, libnids {})",
            self.deficit_rows,
            self.deficits_by_ref[0],
            self.deficits_by_ref[1],
            self.deficits_by_ref[2]
        )?;
        let rules: Vec<String> = self
            .explained_by_rule
            .iter()
            .map(|(r, n)| format!("{} {n}", r.name()))
            .collect();
        write!(
            f,
            "rows needing an explanation: {} (row entries {}, rules: {}; unexplained {})",
            self.differing.len(),
            self.explained_by_entry,
            if rules.is_empty() {
                "none".to_string()
            } else {
                rules.join(", ")
            },
            self.unlisted.len()
        )
    }
}

/// Table lines for unlisted differences, ready to paste into known-differences.md.
pub fn unlisted_rows(s: &Summary) -> String {
    let mut out = String::new();
    for (key, what) in &s.unlisted {
        let _ = writeln!(out, "{}", table_row(key, &format!("TODO cause: {what}")));
    }
    out
}

/// The rows of `reference-disagreements.tsv` grouped by capture, and the slice for one.
pub fn disagreements_of<'a>(
    all: &'a BTreeMap<String, Vec<DisagreementRow>>,
    capture: &str,
) -> &'a [DisagreementRow] {
    all.get(capture).map_or(&[][..], Vec::as_slice)
}

/// One line per audited row (truth and disagreement rows, see [`audit_capture`]): which
/// references ours equal, the deficits, and what explains the row.
pub fn write_audit_report(
    path: &Path,
    results: &[CaptureResult],
    known: &KnownDifferences,
) -> Result<()> {
    let mut out = String::from(
        "capture\tstream\tsrc\tdst\tverdict\ttruth\tours_bytes\tours_lost\tequals\t\
         deficits\tneeds\texplained\tdetail\n",
    );
    for r in results {
        for a in audit_capture(r, known) {
            let verdict = a
                .disagreement
                .map_or("all agree", |i| r.disagreements[i].verdict.as_str());
            let truth = match a.truth_match {
                Some(true) => "match",
                Some(false) => "differs",
                None => "no row",
            };
            let (bytes, lost) = a.ours.map_or((String::new(), String::new()), |i| {
                (r.ours[i].bytes.to_string(), r.ours[i].lost.to_string())
            });
            let equals: Vec<&str> = a.equals.iter().map(|x| x.name()).collect();
            let deficits: Vec<String> = a
                .deficits
                .iter()
                .map(|d| format!("{}:{}<{}", d.reference.name(), d.ours, d.theirs))
                .collect();
            let explained = match a.explained {
                Explained::No if a.needs_explanation() => "UNEXPLAINED".to_string(),
                Explained::No => String::new(),
                Explained::Entry(line) => format!("entry line {line}"),
                Explained::Rule(rule, line) => format!("{} line {line}", rule.name()),
            };
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}\t{verdict}\t{truth}\t{bytes}\t{lost}\t{}\t{}\t{}\t{explained}\t{}",
                r.capture,
                a.key.stream,
                a.key.src,
                a.key.dst,
                equals.join("+"),
                deficits.join(" "),
                if a.needs_explanation() { "yes" } else { "" },
                describe(r, &a)
            );
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// One line per truth row (and one per extra of ours), for developers to sort and grep.
pub fn write_report(
    path: &Path,
    results: &[CaptureResult],
    known: &KnownDifferences,
) -> Result<()> {
    let mut out = String::from(
        "capture\tstream\tdir\tsrc\tdst\tagree\ttruth_isn\ttruth_bytes\ttruth_lost\toutcome\tby\t\
         our_flow\tour_label\tour_isn\tour_bytes\tour_lost\tknown\n",
    );
    let opt = |v: Option<u32>| v.map(|x| x.to_string()).unwrap_or_default();
    for r in results {
        for (i, t) in r.truth.iter().enumerate() {
            let outcome = r.outcome(i);
            let name = if r.comparison.is_err() {
                "error"
            } else {
                outcome.name()
            };
            let by = match outcome {
                Outcome::Match { by, .. } | Outcome::Mismatch { by, .. } => match by {
                    MatchedBy::Isn => "isn",
                    MatchedBy::Order => "order",
                },
                Outcome::Missing => "",
            };
            let ours = match outcome.ours() {
                Some(oi) => {
                    let o = &r.ours[oi];
                    format!(
                        "{}\t{}\t{}\t{}\t{}",
                        o.flow,
                        o.label,
                        opt(o.isn),
                        o.bytes,
                        o.lost
                    )
                }
                None => "\t\t\t\t".to_string(),
            };
            let known = known
                .get(&RowKey::of(&r.capture, t))
                .map_or("", |_| "known");
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{name}\t{by}\t{ours}\t{known}",
                r.capture,
                t.stream,
                t.dir,
                t.src,
                t.dst,
                t.agree,
                opt(t.isn_src),
                t.bytes,
                t.lost
            );
        }
        if let Ok(c) = &r.comparison {
            for &oi in &c.extras {
                let o = &r.ours[oi];
                let _ = writeln!(
                    out,
                    "{}\t\t\t{}\t{}\t\t\t\t\textra\t\t{}\t{}\t{}\t{}\t{}\t",
                    r.capture,
                    o.src,
                    o.dst,
                    o.flow,
                    o.label,
                    opt(o.isn),
                    o.bytes,
                    o.lost
                );
            }
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}
