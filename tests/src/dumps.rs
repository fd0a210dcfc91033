//! Comparing dump directories (what `mos-sensor --dump` and `mos-dump` write).

use anyhow::{ensure, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every file under `dir` (relative path -> bytes).
pub fn tree(dir: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) -> Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                walk(root, &p, out)?;
            } else {
                let rel = p.strip_prefix(root)?.to_path_buf();
                out.insert(rel, std::fs::read(&p)?);
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// Fails unless `got` holds exactly the files of `want`, byte for byte.
pub fn same_tree(want: &Path, got: &Path) -> Result<()> {
    let (a, b) = (tree(want)?, tree(got)?);
    ensure!(
        a.contains_key(Path::new("flows.jsonl")),
        "{} has no flows.jsonl",
        want.display()
    );
    let mut diffs = Vec::new();
    for (p, bytes) in &a {
        match b.get(p) {
            None => diffs.push(format!("missing {}", p.display())),
            Some(other) if other != bytes => diffs.push(format!(
                "{} differs ({} bytes, expected {})",
                p.display(),
                other.len(),
                bytes.len()
            )),
            Some(_) => {}
        }
    }
    for p in b.keys().filter(|p| !a.contains_key(*p)) {
        diffs.push(format!("extra {}", p.display()));
    }
    ensure!(
        diffs.is_empty(),
        "{} differs from {}:\n{}",
        got.display(),
        want.display(),
        diffs
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}
