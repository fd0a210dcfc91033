//! `--version` of every binary mos ships: one line, `NAME PKG_VERSION (shared-memory ABI
//! MAJOR.MINOR)`, with the workspace's package version and the ABI constants of shm-layout.
//!
//! The binaries are those deploy/install.sh installs, checked against the `[[bin]]` targets of
//! the packages that ship them, so a binary added to either is not forgotten here. Needs the
//! release binaries (`cargo build --release -p mos-sensor -p mos-ctl -p mos-analyzers --bins`).

use anyhow::{ensure, Context, Result};
use mos_tests::locate::{bin, workspace_root};
use shm_layout::layout::{ABI_MAJOR, ABI_MINOR};
use std::collections::BTreeSet;
use std::process::Command;

/// The packages whose binaries are shipped.
const SHIPPING_PACKAGES: [&str; 3] = ["sensor", "ctl", "analyzers"];

/// The names in deploy/install.sh's `binaries=(...)` line.
fn installed_binaries() -> Result<BTreeSet<String>> {
    let path = workspace_root().join("deploy/install.sh");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path:?}"))?;
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("binaries=("))
        .context("deploy/install.sh has no binaries=(...) line")?;
    let list = line
        .strip_suffix(')')
        .context("binaries=( is not closed on its line")?;
    Ok(list.split_whitespace().map(str::to_string).collect())
}

/// The `name` of every `[[bin]]` table in the shipping packages' Cargo.toml files.
fn cargo_binaries() -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for pkg in SHIPPING_PACKAGES {
        let path = workspace_root().join(pkg).join("Cargo.toml");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path:?}"))?;
        let mut in_bin = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_bin = line == "[[bin]]";
            } else if in_bin {
                if let Some(v) = line.strip_prefix("name") {
                    let name = v.trim().trim_start_matches('=').trim().trim_matches('"');
                    out.insert(name.to_string());
                }
            }
        }
    }
    Ok(out)
}

#[test]
fn install_sh_ships_every_binary_target() -> Result<()> {
    let installed = installed_binaries()?;
    let targets = cargo_binaries()?;
    ensure!(
        targets.len() >= 7,
        "found only {targets:?} as [[bin]] targets"
    );
    ensure!(
        installed == targets,
        "deploy/install.sh installs {installed:?} but the packages build {targets:?}"
    );
    Ok(())
}

#[test]
fn every_shipped_binary_reports_its_version_and_the_abi() -> Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    let mut names = installed_binaries()?;
    names.extend(cargo_binaries()?);
    for name in &names {
        let path = bin(name)?;
        let out = Command::new(&path)
            .arg("--version")
            .output()
            .with_context(|| format!("running {} --version", path.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "{name} --version exited with {}: {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let want = format!("{name} {version} (shared-memory ABI {ABI_MAJOR}.{ABI_MINOR})\n");
        ensure!(
            stdout == want,
            "{name} --version printed {stdout:?}, expected {want:?}"
        );
    }
    Ok(())
}
