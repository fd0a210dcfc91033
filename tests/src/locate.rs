//! Where the corpus and the sensor binary are.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `MOS_CORPUS_DIR`, else `<workspace>/../shared/corpus`. Missing is an error, never a
/// skip: a conformance test that silently runs nothing proves nothing.
pub fn corpus_dir() -> Result<PathBuf> {
    let (dir, how) = match std::env::var_os("MOS_CORPUS_DIR") {
        Some(d) => (PathBuf::from(d), "MOS_CORPUS_DIR"),
        None => (
            workspace_root().join("..").join("shared").join("corpus"),
            "the default <workspace>/../shared/corpus",
        ),
    };
    for sub in ["pcaps", "truth"] {
        if !dir.join(sub).is_dir() {
            bail!(
                "conformance corpus not found: {} has no {sub}/ (from {how}); \
                 set MOS_CORPUS_DIR to the directory holding pcaps/ and truth/",
                dir.display()
            );
        }
    }
    Ok(dir)
}

/// Capture file names (`*.pcap`, `*.pcapng`) in `pcaps/`, sorted.
pub fn list_captures(corpus: &Path) -> Result<Vec<String>> {
    let dir = corpus.join("pcaps");
    let mut names = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".pcap") || name.ends_with(".pcapng") {
            names.push(name);
        }
    }
    names.sort();
    if names.is_empty() {
        bail!("no captures in {}", dir.display());
    }
    Ok(names)
}

/// `target/<profile>`, from the running executable: test binaries live in
/// `target/<profile>/deps/`, other binaries in `target/<profile>/`.
pub fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    let mut dir = exe
        .parent()
        .context("the executable has no parent directory")?
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    Ok(dir)
}

/// The `target` directory (parent of the profile directory), for reports.
pub fn target_dir() -> Result<PathBuf> {
    let p = profile_dir()?;
    Ok(p.parent().map(Path::to_path_buf).unwrap_or(p))
}

/// `MOS_SENSOR_BIN`, else `mos-sensor` next to this executable's profile directory.
/// A test of package mos-tests cannot get another package's binary from Cargo, so it
/// must be built beforehand.
pub fn sensor_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MOS_SENSOR_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("MOS_SENSOR_BIN={} is not a file", p.display());
        }
        return Ok(p);
    }
    let p = profile_dir()?.join(format!("mos-sensor{}", std::env::consts::EXE_SUFFIX));
    if !p.is_file() {
        bail!(
            "sensor binary not found at {}: build it with `cargo build -p mos-sensor` \
             (same profile as the tests, e.g. add --release for `cargo test --release`), \
             or set MOS_SENSOR_BIN",
            p.display()
        );
    }
    Ok(p)
}

/// A binary of the workspace built in the same profile as this executable (`mos-dump`,
/// `mos-flowstat`, the test analyzer): `MOS_BIN_DIR/<name>` when that is set, else beside the
/// sensor binary, else in this executable's profile directory.
pub fn bin(name: &str) -> Result<PathBuf> {
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let mut tried = Vec::new();
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("MOS_BIN_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(p) = std::env::var_os("MOS_SENSOR_BIN") {
        if let Some(d) = Path::new(&p).parent() {
            dirs.push(d.to_path_buf());
        }
    }
    dirs.push(profile_dir()?);
    for d in dirs {
        let p = d.join(&file);
        if p.is_file() {
            return Ok(p);
        }
        tried.push(p.display().to_string());
    }
    bail!(
        "{name} not found (tried {}): build the workspace's binaries first, e.g. \
         `cargo build --release --bins`",
        tried.join(", ")
    )
}

/// The binaries mos ships (install.sh and the `mos` package install them), in the order the
/// documents list them.
pub const SHIPPED_BINARIES: [&str; 7] = [
    "mos-sensor",
    "mos-ctl",
    "mos-flowstat",
    "mos-dump",
    "mos-log",
    "mos-grep",
    "mos-pcap",
];
