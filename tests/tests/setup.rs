//! scripts/setup.sh's Rust toolchain step, run with `--rust-only` (no apt, no hugepages) in a
//! controlled environment: with no cargo anywhere it takes the rustup branch, and with the
//! installer's address unreachable (`MOS_RUSTUP_URL`) it fails with a message and status 1,
//! leaving nothing behind; with a toolchain in `$CARGO_HOME/bin` but not on `PATH` it finds it.
//! The download itself is not tested: the test machines have no Internet access.

use anyhow::{ensure, Context, Result};
use mos_tests::locate::workspace_root;
use mos_tests::runner::ScratchDir;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// An address nothing listens on: the connection is refused at once.
const UNREACHABLE: &str = "https://127.0.0.1:1/rustup-init.sh";

fn is_executable(p: &Path) -> bool {
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// This process's `PATH` without the directories that hold a `cargo`.
fn path_without_cargo() -> Result<String> {
    let path = std::env::var_os("PATH").context("PATH is not set")?;
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .filter(|d| !is_executable(&d.join("cargo")))
        .collect();
    ensure!(
        dirs.iter().any(|d| is_executable(&d.join("curl"))),
        "curl is not on PATH (scripts/setup.sh installs it): the rustup branch needs it"
    );
    Ok(std::env::join_paths(dirs)?.to_string_lossy().into_owned())
}

/// `bash scripts/setup.sh --rust-only` with only the given variables in its environment.
fn setup(env: &[(&str, &Path)], url: Option<&str>) -> Result<Output> {
    let mut c = Command::new("bash");
    c.arg(workspace_root().join("scripts/setup.sh"))
        .arg("--rust-only")
        .env_clear()
        .env("PATH", path_without_cargo()?);
    for (k, v) in env {
        c.env(k, v);
    }
    if let Some(u) = url {
        c.env("MOS_RUSTUP_URL", u);
    }
    c.output().context("running scripts/setup.sh")
}

fn entries(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        out.push(e?.file_name().to_string_lossy().into_owned());
    }
    out.sort();
    Ok(out)
}

#[test]
fn without_cargo_it_takes_the_rustup_branch_and_fails_clearly_when_offline() -> Result<()> {
    let scratch = ScratchDir::new("setup-rustup")?;
    let home = scratch.path().join("home");
    let tmp = scratch.path().join("tmp");
    std::fs::create_dir_all(&home)?;
    std::fs::create_dir_all(&tmp)?;
    let out = setup(&[("HOME", &home), ("TMPDIR", &tmp)], Some(UNREACHABLE))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    ensure!(
        out.status.code() == Some(1),
        "exit status {}, expected 1\n{all}",
        out.status
    );
    let announced = format!(
        "cargo not found: installing Rust's stable toolchain with rustup into {}/.cargo \
         (installer from {UNREACHABLE})",
        home.display()
    );
    ensure!(stdout.contains(&announced), "no line {announced:?}\n{all}");
    // --rust-only: the toolchain step alone, no apt, no hugepages.
    ensure!(
        stdout.starts_with("== setup: Rust toolchain\n"),
        "other steps ran before the toolchain's\n{all}"
    );
    ensure!(
        !stdout.contains("system packages") && !stdout.contains("hugepages"),
        "{all}"
    );
    let first = stderr.lines().next().unwrap_or_default();
    let reason = format!("error: could not download rustup's installer from {UNREACHABLE}: curl");
    ensure!(
        first.starts_with(&reason),
        "first error line {first:?}\n{all}"
    );
    ensure!(
        stderr.contains("install\nRust's stable toolchain by other means")
            && stderr.contains(&format!("{}/.cargo/bin", home.display())),
        "the error does not say what to do instead\n{all}"
    );
    // Nothing installed or left over.
    ensure!(
        entries(&home)?.is_empty(),
        "left in HOME: {:?}",
        entries(&home)?
    );
    ensure!(
        entries(&tmp)?.is_empty(),
        "left in TMPDIR: {:?}",
        entries(&tmp)?
    );

    // CARGO_HOME, when set, is where the toolchain goes (as rustup does).
    let cargo_home = scratch.path().join("elsewhere");
    let out = setup(
        &[
            ("HOME", &home),
            ("TMPDIR", &tmp),
            ("CARGO_HOME", &cargo_home),
        ],
        Some(UNREACHABLE),
    )?;
    ensure!(out.status.code() == Some(1));
    ensure!(String::from_utf8_lossy(&out.stdout).contains(&format!(
        "with rustup into {} (installer",
        cargo_home.display()
    )));

    // Only https: the installer is not fetched in the clear.
    let plain = "http://127.0.0.1:1/rustup-init.sh";
    let out = setup(&[("HOME", &home), ("TMPDIR", &tmp)], Some(plain))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1)
            && stderr.starts_with(&format!(
                "error: could not download rustup's installer from {plain}"
            )),
        "{stderr}"
    );
    ensure!(entries(&home)?.is_empty() && entries(&tmp)?.is_empty());
    Ok(())
}

#[test]
fn a_toolchain_in_cargo_home_is_found_off_path() -> Result<()> {
    // The toolchain running this test (cargo, rustc, cargo-fmt and cargo-clippy side by side),
    // as $CARGO_HOME/bin of an otherwise empty home, as rustup leaves it after installing.
    let toolchain_bin = Path::new(env!("CARGO"))
        .parent()
        .context("cargo has no directory")?
        .to_path_buf();
    let scratch = ScratchDir::new("setup-found")?;
    let home = scratch.path().join("home");
    let cargo_home = scratch.path().join("cargo-home");
    std::fs::create_dir_all(&home)?;
    std::fs::create_dir_all(&cargo_home)?;
    std::os::unix::fs::symlink(&toolchain_bin, cargo_home.join("bin"))?;
    // When that is rustup's directory of proxies, they need rustup's own home.
    let rustup_home = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".rustup")))
        .filter(|d| d.is_dir());
    let mut env: Vec<(&str, &Path)> = vec![
        ("HOME", &home),
        ("CARGO_HOME", &cargo_home),
        ("TMPDIR", scratch.path()),
    ];
    if let Some(r) = &rustup_home {
        env.push(("RUSTUP_HOME", r));
    }
    let out = setup(&env, Some(UNREACHABLE))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success(), "{}\n{all}", out.status);
    ensure!(!stdout.contains("installing Rust"), "{all}");
    ensure!(
        stdout
            .lines()
            .any(|l| l.starts_with("cargo 1.") && l.contains("rustc 1.")),
        "{all}"
    );
    ensure!(stdout.contains("rustfmt and clippy present"), "{all}");
    Ok(())
}
