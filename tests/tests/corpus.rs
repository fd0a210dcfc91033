//! Conformance: `mos-sensor --dump` on every capture of the shared corpus against the
//! reference reassembly. Needs the corpus (MOS_CORPUS_DIR) and a built sensor
//! (`cargo build -p mos-sensor`, or MOS_SENSOR_BIN).

use anyhow::Result;
use mos_tests::disagreements::read_disagreements;
use mos_tests::known::KnownDifferences;
use mos_tests::locate::{corpus_dir, list_captures, sensor_bin, target_dir, workspace_root};
use mos_tests::matcher::{compare, Outcome};
use mos_tests::runner::{
    check_capture, default_workers, disagreements_of, dump_capture_with, parallel_map, summarize,
    unlisted_rows, write_audit_report, write_report,
};
use mos_tests::truth::read_truth;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

const PER_CAPTURE_TIMEOUT: Duration = Duration::from_secs(60);
const MIN_AGREEING_MATCH_RATE: f64 = 0.99;
/// Failed captures shown in full; the rest are counted.
const SHOW_FAILED: usize = 10;

#[test]
fn corpus_matches_agreeing_references() -> Result<()> {
    let start = Instant::now();
    let corpus = corpus_dir()?;
    let sensor = sensor_bin()?;
    let known_path = workspace_root().join("tests").join("known-differences.md");
    let known = KnownDifferences::load(&known_path)?;
    let disagreements = read_disagreements(&corpus.join("reference-disagreements.tsv"))?;
    let captures = list_captures(&corpus)?;

    let results = parallel_map(&captures, default_workers(), |c| {
        check_capture(
            &corpus,
            &sensor,
            c,
            PER_CAPTURE_TIMEOUT,
            disagreements_of(&disagreements, c),
        )
    });
    let report = target_dir()?.join("corpus-report.tsv");
    write_report(&report, &results, &known)?;
    let audit_report = target_dir()?.join("corpus-audit.tsv");
    write_audit_report(&audit_report, &results, &known)?;
    let summary = summarize(&results, &known);
    println!("{summary}");
    println!(
        "elapsed: {:.1} s; per-row reports: {} and {}",
        start.elapsed().as_secs_f64(),
        report.display(),
        audit_report.display()
    );

    let mut failures = String::new();
    if !summary.failed.is_empty() {
        let _ = writeln!(
            failures,
            "{} of {} captures failed (sensor {}):",
            summary.failed.len(),
            summary.captures,
            sensor.display()
        );
        for (capture, err) in summary.failed.iter().take(SHOW_FAILED) {
            let _ = writeln!(failures, "--- {capture}: {err}");
        }
        if summary.failed.len() > SHOW_FAILED {
            let _ = writeln!(
                failures,
                "--- and {} more",
                summary.failed.len() - SHOW_FAILED
            );
        }
    }
    if summary.agreeing_rate() < MIN_AGREEING_MATCH_RATE {
        let _ = writeln!(
            failures,
            "agreeing rows matched {:.2} % < {:.0} %",
            100.0 * summary.agreeing_rate(),
            100.0 * MIN_AGREEING_MATCH_RATE
        );
    }
    if !summary.unlisted.is_empty() {
        let _ = writeln!(
            failures,
            "{} rows differ from the references or recovered fewer bytes than one, and \
             nothing in {} explains them (explain each, then paste):\n{}",
            summary.unlisted.len(),
            known_path.display(),
            unlisted_rows(&summary)
        );
    }
    let stale = summary.stale(&known);
    for e in &stale {
        println!(
            "warning: stale known difference at {}:{} (now matches): {} stream {} {} -> {}",
            known_path.display(),
            e.line,
            e.key.capture,
            e.key.stream,
            e.key.src,
            e.key.dst
        );
    }
    let stale_rules = summary.stale_rules(&known);
    for e in &stale_rules {
        println!(
            "warning: stale rule at {}:{} (accepted no row): {} for {}",
            known_path.display(),
            e.line,
            e.rule.name(),
            e.capture.as_deref().unwrap_or("*")
        );
    }
    let n_stale = stale.len() + stale_rules.len();
    if n_stale > 0 && std::env::var("MOS_STRICT_KNOWN").is_ok_and(|v| v == "1") {
        let _ = writeln!(
            failures,
            "{n_stale} stale known differences (MOS_STRICT_KNOWN=1)"
        );
    }
    assert!(
        failures.is_empty(),
        "corpus conformance failed:\n{failures}"
    );
    Ok(())
}

/// The corpus's one overlap difference (see `known-differences.md`): the segment that fills a
/// hole overlaps held out-of-order bytes with other bytes. Wireshark and tcpflow keep the new
/// copy there; so do `--overlap last`, `linux`, `bsd` and `windows` (the new segment starts
/// before the held data), while the default, `first`, keeps the held copy.
#[test]
fn overlap_policies_that_favour_the_hole_filler_reproduce_the_references() -> Result<()> {
    const CAPTURE: &str = "ndpi__fuzz-2006-06-26-2594.pcap";
    let corpus = corpus_dir()?;
    let sensor = sensor_bin()?;
    let truth = read_truth(&corpus.join("truth").join(format!("{CAPTURE}.tsv")))?;
    let row = truth
        .iter()
        .position(|r| {
            r.stream == 3
                && r.src.to_string() == "192.168.1.2:2720"
                && r.dst.to_string() == "147.234.1.253:21"
                && r.agree.contains('=')
        })
        .expect("the overlap row of the truth");
    for (policy, matches) in [
        ("first", false),
        ("last", true),
        ("linux", true),
        ("bsd", true),
        ("windows", true),
    ] {
        let ours = dump_capture_with(
            &sensor,
            &corpus.join("pcaps").join(CAPTURE),
            PER_CAPTURE_TIMEOUT,
            &["--overlap", policy],
        )?;
        let outcome = compare(&truth, &ours).outcomes[row];
        match outcome {
            Outcome::Match { .. } => assert!(matches, "--overlap {policy} matched"),
            Outcome::Mismatch { ours: i, .. } => {
                assert!(!matches, "--overlap {policy} differs");
                // Only the overlapped bytes differ: same length, same loss.
                assert_eq!(
                    (ours[i].bytes, ours[i].lost),
                    (truth[row].bytes, truth[row].lost)
                );
            }
            Outcome::Missing => panic!("--overlap {policy}: the stream is missing"),
        }
    }
    Ok(())
}
