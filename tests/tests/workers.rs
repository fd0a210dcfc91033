//! Workers: a capture spread over 2 or 3 workers gives the same connections and the same bytes
//! as one worker, on every corpus capture. Needs the corpus (MOS_CORPUS_DIR) and a built sensor.
//!
//! Only the stream files' names may differ (they carry the connection's serial, which each
//! worker hands out from its own series); every record of `flows.jsonl` (endpoints, ISNs,
//! times, byte counts, lost bytes, SHA-256 of each stream) must be equal, and each record's
//! files must hold the bytes its hashes name.

use anyhow::{ensure, Context, Result};
use mos_tests::locate::{corpus_dir, list_captures, sensor_bin};
use mos_tests::runner::{default_workers, parallel_map, run_sensor_dump, ScratchDir};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);

/// `flows.jsonl` of a dump as sorted records without the file names, after checking that
/// each named file hashes to its record's SHA-256.
fn normalized_flows(dir: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("flows.jsonl"))
        .with_context(|| format!("reading {}/flows.jsonl", dir.display()))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut r: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)?;
        for (file, sha) in [("c2s_file", "c2s_sha256"), ("s2c_file", "s2c_sha256")] {
            if let Some(name) = r.remove(file).and_then(|v| v.as_str().map(String::from)) {
                let bytes = std::fs::read(dir.join(&name))?;
                let got = hex::encode(Sha256::digest(&bytes));
                ensure!(
                    r.get(sha).and_then(|v| v.as_str()) == Some(got.as_str()),
                    "{name} does not hash to its record's {sha}"
                );
            }
        }
        out.push(serde_json::Value::Object(r).to_string());
    }
    out.sort();
    Ok(out)
}

fn check(pcap: &Path, name: &str) -> Result<()> {
    let work = ScratchDir::new(&format!("wk-{name}"))?;
    let sensor = sensor_bin()?;
    let mut flows = Vec::new();
    for n in [1, 2, 3] {
        let dump = work.path().join(format!("w{n}"));
        let logs = work.path().join(format!("logs{n}"));
        std::fs::create_dir_all(&logs)?;
        let workers = n.to_string();
        // A truncated capture exits 2 (the same for every worker count); that is checked by
        // comparing what each wrote, not the status.
        let r = run_sensor_dump(
            &sensor,
            pcap,
            &dump,
            &logs,
            TIMEOUT,
            &["--workers", &workers],
        );
        if let Err(e) = r {
            let err = std::fs::read_to_string(logs.join("sensor.stderr")).unwrap_or_default();
            ensure!(
                err.contains("the replay stopped there"),
                "{n} workers: {e:#}"
            );
        }
        flows.push(normalized_flows(&dump).with_context(|| format!("{n} workers"))?);
    }
    for (i, n) in [(1, 2), (2, 3)] {
        if flows[i] != flows[0] {
            let only_one: Vec<_> = flows[0].iter().filter(|r| !flows[i].contains(r)).collect();
            let only_n: Vec<_> = flows[i].iter().filter(|r| !flows[0].contains(r)).collect();
            anyhow::bail!(
                "{n} workers differ from 1: {} records, {} with 1 worker\nonly with 1: {:?}\nonly with {n}: {:?}",
                flows[i].len(),
                flows[0].len(),
                only_one.iter().take(3).collect::<Vec<_>>(),
                only_n.iter().take(3).collect::<Vec<_>>()
            );
        }
    }
    Ok(())
}

#[test]
fn two_and_three_workers_give_the_same_flows_and_bytes_as_one() -> Result<()> {
    let start = Instant::now();
    let corpus = corpus_dir()?;
    let captures = list_captures(&corpus)?;
    let results = parallel_map(&captures, default_workers(), |c| {
        check(&corpus.join("pcaps").join(c), c)
    });
    let failed: Vec<String> = captures
        .iter()
        .zip(&results)
        .filter_map(|(c, r)| r.as_ref().err().map(|e| format!("--- {c}: {e:#}")))
        .collect();
    println!(
        "{} captures with 1, 2 and 3 workers in {:.1} s",
        captures.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "{} of {} captures differ:\n{}",
        failed.len(),
        captures.len(),
        failed
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}
