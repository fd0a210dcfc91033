//! Debian 12 systems for tests that install mos into a machine of its own: a
//! `debootstrap --variant=minbase` root of bookworm with the packages a test asks for, made once
//! and cached under `target/debroot/`, and throwaway copies of it to install into, run commands
//! in (`chroot`) or boot.
//!
//! Needs root and debootstrap (scripts/setup.sh installs it), and the Debian mirror
//! `MOS_DEBIAN_MIRROR` (default <http://deb.debian.org/debian>) the first time a root is made:
//! about a minute for minbase, more with compilers. A root is named by what it holds (suite,
//! mirror and package list hashed into its directory name), so a test that asks for other
//! packages gets a root of its own, and `rm -rf target/debroot` starts afresh. Concurrent
//! tests wait on a lock instead of bootstrapping the same root twice.

use crate::locate::target_dir;
use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian release the package is built for and tested on.
pub const SUITE: &str = "bookworm";

const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// A cached, pristine bootstrapped root: never changed once made; tests work on copies.
#[derive(Debug, Clone)]
pub struct CachedRoot {
    path: PathBuf,
}

impl CachedRoot {
    /// The root of minbase plus `include` (Debian package names), made now if it is not
    /// cached yet. Fails with the end of debootstrap's log when it cannot be made.
    pub fn get(include: &[&str]) -> Result<Self> {
        ensure!(
            rustix::process::geteuid().is_root(),
            "a debootstrap root needs root (chroot, file ownership): run the test as root, as CI does"
        );
        ensure!(
            Command::new("debootstrap")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "debootstrap not found: apt-get install debootstrap (scripts/setup.sh installs it)"
        );
        let mirror =
            std::env::var("MOS_DEBIAN_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.to_string());
        let packages: BTreeSet<&str> = include.iter().copied().collect();
        let mut key = Sha256::new();
        key.update(format!("{SUITE}\n{mirror}\n"));
        for p in &packages {
            key.update(format!("{p}\n"));
        }
        let key = hex::encode(&key.finalize()[..8]);
        let cache = target_dir()?.join("debroot");
        std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
        let path = cache.join(format!("{SUITE}-minbase-{key}"));

        // One maker at a time, across test processes; the others find the root made.
        let lock_path = cache.join(format!("{SUITE}-minbase-{key}.lock"));
        let lock = File::create(&lock_path)
            .with_context(|| format!("creating {}", lock_path.display()))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .with_context(|| format!("locking {}", lock_path.display()))?;
        if path.join("etc/debian_version").is_file() {
            return Ok(CachedRoot { path });
        }

        // Made under another name and renamed when complete: an interrupted run leaves
        // no half root that looks whole.
        let partial = cache.join(format!("{SUITE}-minbase-{key}.partial"));
        if partial.exists() {
            std::fs::remove_dir_all(&partial)
                .with_context(|| format!("removing the leftover {}", partial.display()))?;
        }
        let log = cache.join(format!("{SUITE}-minbase-{key}.log"));
        let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut c = Command::new("debootstrap");
        c.arg("--variant=minbase");
        if !packages.is_empty() {
            c.arg(format!(
                "--include={}",
                packages.iter().copied().collect::<Vec<_>>().join(",")
            ));
        }
        c.arg(SUITE).arg(&partial).arg(&mirror);
        c.stdout(log_file.try_clone()?).stderr(log_file);
        eprintln!(
            "debroot: debootstrap --variant=minbase {SUITE} with {} packages into {} (once; log {})",
            packages.len(),
            path.display(),
            log.display()
        );
        let status = c.status().context("running debootstrap")?;
        if !status.success() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "debootstrap {SUITE} from {mirror} failed ({status}); the end of {}:\n{}",
                log.display(),
                crate::procs::tail(&text)
            );
        }
        std::fs::rename(&partial, &path)
            .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
        Ok(CachedRoot { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A copy of the root at `dest` (which must not exist), owners, modes and links kept.
    pub fn copy_to(&self, dest: &Path) -> Result<()> {
        ensure!(!dest.exists(), "{} exists already", dest.display());
        let out = Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(&self.path)
            .arg(dest)
            .output()
            .context("running cp")?;
        ensure!(
            out.status.success(),
            "cp -a {} {}: {}",
            self.path.display(),
            dest.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

/// `chroot ROOT PROGRAM ARGS...`, with a plain environment (PATH of a Debian root, C locale).
pub fn chroot(root: &Path, program: &str, args: &[&str]) -> Command {
    let mut c = Command::new("chroot");
    c.arg(root).arg(program).args(args);
    c.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LC_ALL", "C")
        .env("HOME", "/root");
    c
}

/// Runs `c` to its end; its stdout when it exits 0, else an error with its output.
pub fn run_ok(c: &mut Command) -> Result<String> {
    let what = format!("{c:?}");
    let out = c.output().with_context(|| format!("running {what}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "{what} exited with {}:\n{}{}",
        out.status,
        crate::procs::tail(&stdout),
        crate::procs::tail(&String::from_utf8_lossy(&out.stderr))
    );
    Ok(stdout)
}
