//! Developer view of the conformance comparison: runs the sensor on all or selected
//! captures and prints every difference with our candidate half-streams.
//!
//! cargo run -p mos-tests --bin corpus-report -- [--sensor PATH] [--timeout SECS] [CAPTURE-SUBSTRING...]

use anyhow::{bail, Context, Result};
use mos_tests::disagreements::read_disagreements;
use mos_tests::known::{KnownDifferences, RowKey};
use mos_tests::locate::{corpus_dir, list_captures, sensor_bin, workspace_root};
use mos_tests::matcher::{candidates, Outcome};
use mos_tests::runner::{
    check_capture, default_workers, disagreements_of, parallel_map, summarize, unlisted_rows,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn main() -> Result<()> {
    let mut sensor = None;
    let mut timeout = Duration::from_secs(60);
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--sensor" => {
                sensor = Some(PathBuf::from(args.next().context("--sensor needs a path")?))
            }
            "--timeout" => {
                timeout =
                    Duration::from_secs(args.next().context("--timeout needs seconds")?.parse()?)
            }
            "-h" | "--help" => {
                println!("corpus-report [--sensor PATH] [--timeout SECS] [CAPTURE-SUBSTRING...]");
                return Ok(());
            }
            s if s.starts_with("--") => bail!("unknown option {s}"),
            _ => filters.push(a),
        }
    }
    let sensor = match sensor {
        Some(s) => s,
        None => sensor_bin()?,
    };
    let corpus = corpus_dir()?;
    let known =
        KnownDifferences::load(&workspace_root().join("tests").join("known-differences.md"))?;
    let captures: Vec<String> = list_captures(&corpus)?
        .into_iter()
        .filter(|c| filters.is_empty() || filters.iter().any(|f| c.contains(f.as_str())))
        .collect();
    if captures.is_empty() {
        bail!("no capture name contains any of {filters:?}");
    }
    let disagreements = read_disagreements(&corpus.join("reference-disagreements.tsv"))?;
    let start = Instant::now();
    let results = parallel_map(&captures, default_workers(), |c| {
        check_capture(
            &corpus,
            &sensor,
            c,
            timeout,
            disagreements_of(&disagreements, c),
        )
    });

    for r in &results {
        if let Err(e) = &r.comparison {
            println!("== {}: FAILED: {e}\n", r.capture);
            continue;
        }
        for (i, t) in r.truth.iter().enumerate() {
            let outcome = r.outcome(i);
            if outcome.is_match() {
                continue;
            }
            let listed = known
                .get(&RowKey::of(&r.capture, t))
                .map_or(String::new(), |e| {
                    format!(" [known, line {}: {}]", e.line, e.cause)
                });
            println!(
                "== {} stream {} {} {} -> {}: {}{listed}",
                r.capture,
                t.stream,
                t.dir,
                t.src,
                t.dst,
                outcome.name()
            );
            let isn = t.isn_src.map_or("-".to_string(), |v| v.to_string());
            println!(
                "   truth: isn {isn} bytes {} lost {} sha {} agree {}",
                t.bytes, t.lost, t.sha256, t.agree
            );
            for (oi, o) in candidates(&r.ours, t.src, t.dst) {
                let mark = if Some(oi) == outcome.ours() { "*" } else { " " };
                let isn = o.isn.map_or("-".to_string(), |v| v.to_string());
                println!(
                    "  {mark}ours:  flow {} {} isn {isn} bytes {} lost {} sha {}{}",
                    o.flow,
                    o.label,
                    o.bytes,
                    o.lost,
                    o.sha256,
                    if o.client_guessed {
                        " (roles guessed)"
                    } else {
                        ""
                    }
                );
            }
            if matches!(outcome, Outcome::Missing)
                && candidates(&r.ours, t.src, t.dst).next().is_none()
            {
                println!("   (no half-stream of ours from {} to {})", t.src, t.dst);
            }
            println!();
        }
        if let Ok(c) = &r.comparison {
            for &oi in &c.extras {
                let o = &r.ours[oi];
                println!(
                    "== {}: extra of ours: flow {} {} {} -> {} bytes {} lost {}\n",
                    r.capture, o.flow, o.label, o.src, o.dst, o.bytes, o.lost
                );
            }
        }
    }
    let summary = summarize(&results, &known);
    println!("{summary}");
    println!("elapsed: {:.1} s", start.elapsed().as_secs_f64());
    if !summary.unlisted.is_empty() {
        println!("\nunexplained rows (paste into tests/known-differences.md once explained):");
        print!("{}", unlisted_rows(&summary));
    }
    for e in summary.stale(&known) {
        println!(
            "stale known difference (line {}): now matches: {:?}",
            e.line, e.key
        );
    }
    for e in summary.stale_rules(&known) {
        println!(
            "stale rule (line {}): accepted no row: {} for {}",
            e.line,
            e.rule.name(),
            e.capture.as_deref().unwrap_or("*")
        );
    }
    Ok(())
}
