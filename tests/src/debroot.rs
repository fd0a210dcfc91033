//! Throwaway Debian 12 (bookworm) root file systems for the tests that need a real system: a
//! minimal base made once by `debootstrap --variant=minbase` and cached under
//! `target/nspawn/`, a fresh copy of it for each run (removed afterwards), mos installed into
//! that copy (from the Debian packages when there are some, else by `deploy/install.sh`), and
//! commands run inside it by `systemd-nspawn` used as a better chroot.
//!
//! The cache: `target/nspawn/bookworm-KEY/` is the base root and `bookworm-KEY.complete` the
//! marker written once debootstrap succeeded, holding the list of packages the root was made
//! with; KEY is a hash of that list, so roots with different packages live side by side. A
//! root without its marker (debootstrap interrupted, killed, failed) is removed and made
//! again. `target/nspawn/lock` is held (flock) while a base is checked or made, so two tests
//! never debootstrap the same root at once. `MOS_DEBIAN_MIRROR` overrides the mirror
//! (default `http://deb.debian.org/debian`).
//!
//! Needs root, `debootstrap`, `systemd-nspawn` (package systemd-container), `ldd` and `dpkg`;
//! a missing one is an error, never a skip. debootstrap needs the mirror (about a minute to
//! two); every later run copies the cached root (a second or two).

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The Debian release the roots are made of.
pub const SUITE: &str = "bookworm";

/// What every base root holds beyond minbase: an init system to boot and the system bus.
pub const BASE_PACKAGES: [&str; 3] = ["dbus", "systemd", "systemd-sysv"];

/// How long debootstrap may take before it is killed.
const DEBOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(900);

/// The Debian mirror: `MOS_DEBIAN_MIRROR`, else deb.debian.org.
pub fn mirror() -> String {
    std::env::var("MOS_DEBIAN_MIRROR")
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_string())
}

/// `target/nspawn`, made if missing: the cached roots and the copies tests run in.
pub fn cache_dir() -> Result<PathBuf> {
    let dir = crate::locate::target_dir()?.join("nspawn");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Fails unless the test runs as root with the tools a root needs on the PATH.
pub fn require_tools() -> Result<()> {
    ensure!(
        rustix::process::geteuid().is_root(),
        "making and booting a Debian root needs root (debootstrap, systemd-nspawn); run the test as root"
    );
    for (tool, package) in [
        ("debootstrap", "debootstrap"),
        ("systemd-nspawn", "systemd-container"),
        ("nsenter", "util-linux"),
        ("setpriv", "util-linux"),
        ("ldd", "libc-bin"),
        ("dpkg", "dpkg"),
    ] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        ensure!(
            found,
            "{tool} is not on the PATH: apt-get install {package} (scripts/setup.sh installs it)"
        );
    }
    Ok(())
}

/// Runs `c` to its end, or kills it after `timeout`; its standard output and error are
/// collected. Fails only when it cannot be started or waited for, or on the timeout (with
/// what it printed so far).
pub fn output_within(c: &mut Command, timeout: Duration) -> Result<Output> {
    let what = format!("{c:?}");
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {what}"))?;
    let mut out = child.stdout.take().context("no stdout pipe")?;
    let mut err = child.stderr.take().context("no stderr pipe")?;
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child
            .try_wait()
            .with_context(|| format!("waiting for {what}"))?
        {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // A grandchild holding the pipes open must not hang the test: the readers are joined
    // only once the child is gone, and a killed child's descendants are its own business.
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => bail!(
            "{what} did not finish within {timeout:?} (killed); it printed:\n{}\n{}",
            crate::procs::tail(&String::from_utf8_lossy(&stdout)),
            crate::procs::tail(&String::from_utf8_lossy(&stderr))
        ),
    }
}

/// Like [`output_within`], failing with the command's output unless it exits 0; returns its
/// standard output.
pub fn run_within(c: &mut Command, timeout: Duration) -> Result<String> {
    let what = format!("{c:?}");
    let out = output_within(c, timeout)?;
    ensure!(
        out.status.success(),
        "{what} exited with {}:\n{}\n{}",
        out.status,
        crate::procs::tail(&String::from_utf8_lossy(&out.stdout)),
        crate::procs::tail(&String::from_utf8_lossy(&out.stderr))
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The Debian packages that hold the shared libraries `files` link (by `ldd`, looked up with
/// `dpkg -S` on this machine, which must be Debian 12 like the roots), sorted. A library no
/// package holds is an error naming it.
pub fn runtime_packages(files: &[PathBuf]) -> Result<Vec<String>> {
    let mut libs = std::collections::BTreeSet::new();
    for f in files {
        let out = run_within(Command::new("ldd").arg(f), Duration::from_secs(30))?;
        for line in out.lines() {
            // "libx.so.1 => /lib/x86_64-linux-gnu/libx.so.1 (0x...)"
            if let Some((_, rest)) = line.split_once("=> ") {
                let path = rest.split_whitespace().next().unwrap_or("");
                ensure!(
                    path.starts_with('/'),
                    "{}: ldd finds no {}",
                    f.display(),
                    line.trim()
                );
                libs.insert(PathBuf::from(path));
            }
        }
    }
    // On a merged-/usr system dpkg knows a library under one of its names: the one ldd
    // gives, the canonical one, or the canonical one without /usr. One dpkg -S for all of
    // them (it scans every package's file list once).
    let mut names: Vec<(PathBuf, Vec<PathBuf>)> = Vec::new();
    for lib in &libs {
        let mut candidates = vec![lib.clone()];
        if let Ok(c) = fs::canonicalize(lib) {
            if let Ok(rest) = c.strip_prefix("/usr") {
                candidates.push(Path::new("/").join(rest));
            }
            candidates.push(c);
        }
        names.push((lib.clone(), candidates));
    }
    let mut c = Command::new("dpkg");
    c.arg("-S");
    for (_, candidates) in &names {
        c.args(candidates);
    }
    // Exit status 1 says some name was not found, which is expected of the other names.
    let out = output_within(&mut c, Duration::from_secs(120))?;
    let mut owner: std::collections::BTreeMap<PathBuf, Vec<String>> = Default::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libpcap0.8:amd64: /usr/lib/x86_64-linux-gnu/libpcap.so.0.8"
        let Some((pkgs, path)) = line.split_once(": ") else {
            continue;
        };
        let pkgs = pkgs
            .split(", ")
            .map(|p| p.split(':').next().unwrap_or(p).trim().to_string())
            .filter(|p| !p.is_empty());
        owner
            .entry(PathBuf::from(path.trim()))
            .or_default()
            .extend(pkgs);
    }
    let mut packages = std::collections::BTreeSet::new();
    for (lib, candidates) in &names {
        let found: Vec<&String> = candidates
            .iter()
            .filter_map(|c| owner.get(c))
            .flatten()
            .collect();
        ensure!(
            !found.is_empty(),
            "no Debian package holds {} (dpkg -S {candidates:?}); install the libraries mos links from packages",
            lib.display()
        );
        packages.extend(found.into_iter().cloned());
    }
    Ok(packages.into_iter().collect())
}

/// The mount points at or under `dir` (from /proc/self/mountinfo), deepest first.
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let info =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        // Spaces and the like are written as octal escapes; a root path here has none.
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    Ok(found)
}

/// Unmounts whatever is mounted at or under `dir` (lazily: a busy one goes once it is free)
/// and checks nothing is left.
pub fn unmount_under(dir: &Path) -> Result<()> {
    for m in mounts_under(dir)? {
        let _ = Command::new("umount")
            .arg("--lazy")
            .arg(&m)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let left = mounts_under(dir)?;
    ensure!(
        left.is_empty(),
        "still mounted under {}: {left:?}",
        dir.display()
    );
    Ok(())
}

/// The pids of the `systemd-nspawn` processes running a container on `dir` (`-D DIR`, as
/// [`crate::nspawn::Booted`] and [`ScratchRoot::run`] start them): left by a run that was
/// killed before it could shut its container down.
pub fn containers_on(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_nspawn = argv.first().is_some_and(|a| a.ends_with(b"systemd-nspawn"));
        let on_dir = argv
            .windows(2)
            .any(|w| w[0] == b"-D" && Path::new(std::ffi::OsStr::from_bytes(w[1])) == dir);
        if is_nspawn && on_dir {
            pids.push(pid);
        }
    }
    pids
}

/// Kills the containers [`containers_on`] finds on `dir` (each nspawn and the init of its
/// container, whose pid namespace dies with it) and waits up to 10 s for them to go.
pub fn kill_containers_on(dir: &Path) -> Result<()> {
    let pids = containers_on(dir);
    if pids.is_empty() {
        return Ok(());
    }
    eprintln!(
        "debroot: killing the containers left running on {} (nspawn pids {pids:?})",
        dir.display()
    );
    for pid in &pids {
        let children = fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| {
                tasks
                    .flatten()
                    .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        for p in children
            .split_whitespace()
            .filter_map(|c| c.parse::<i32>().ok())
            .chain(std::iter::once(*pid as i32))
        {
            if let Some(p) = rustix::process::Pid::from_raw(p) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !containers_on(dir).is_empty() {
        ensure!(
            Instant::now() < deadline,
            "the containers on {} did not go within 10 s of SIGKILL",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Removes a root directory: first kills a container left running on it, unmounts whatever
/// is mounted under it (never following a mount into the host's files).
pub fn remove_root(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    kill_containers_on(dir)?;
    unmount_under(dir)?;
    fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

/// An exclusive lock on `target/nspawn/lock`, released when dropped.
struct CacheLock(#[allow(dead_code)] fs::File);

impl CacheLock {
    fn take(dir: &Path) -> Result<CacheLock> {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .with_context(|| format!("opening {}/lock", dir.display()))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .with_context(|| format!("locking {}/lock", dir.display()))?;
        Ok(CacheLock(f))
    }
}

/// The cached base root holding minbase, [`BASE_PACKAGES`] and `extra`: made by debootstrap
/// when it is missing or was never completed, else returned as it is. Never modify it: run
/// in a [`ScratchRoot`] copy.
pub fn base_root(extra: &[String]) -> Result<PathBuf> {
    require_tools()?;
    let mut packages: Vec<String> = BASE_PACKAGES.iter().map(|p| p.to_string()).collect();
    packages.extend(extra.iter().cloned());
    packages.sort();
    packages.dedup();
    let mirror = mirror();
    let list = format!("{SUITE} {mirror}\n{}\n", packages.join("\n"));
    let key = hex::encode(&Sha256::digest(list.as_bytes())[..6]);
    let cache = cache_dir()?;
    let root = cache.join(format!("{SUITE}-{key}"));
    let marker = cache.join(format!("{SUITE}-{key}.complete"));
    let _lock = CacheLock::take(&cache)?;
    if root.is_dir() && fs::read_to_string(&marker).ok().as_deref() == Some(list.as_str()) {
        return Ok(root);
    }
    // Whatever is there was not completed (or was made from another list): start over.
    let _ = fs::remove_file(&marker);
    remove_root(&root)?;
    let partial = cache.join(format!("{SUITE}-{key}.partial"));
    remove_root(&partial)?;
    let log = cache.join(format!("{SUITE}-{key}.log"));
    let started = Instant::now();
    eprintln!(
        "debroot: debootstrap --variant=minbase {SUITE} into {} (minbase and {} packages; log {})",
        root.display(),
        packages.len(),
        log.display()
    );
    // setpriv --pdeathsig: a test killed mid-way takes debootstrap with it, so that no
    // orphan goes on writing into the root the next run removes.
    let out = output_within(
        Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "debootstrap"])
            .arg("--variant=minbase")
            .arg(format!("--include={}", packages.join(",")))
            .arg(SUITE)
            .arg(&partial)
            .arg(&mirror),
        DEBOOTSTRAP_TIMEOUT,
    );
    let text = match &out {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("{e:#}"),
    };
    fs::write(&log, &text).with_context(|| format!("writing {}", log.display()))?;
    let ok = matches!(&out, Ok(o) if o.status.success());
    if !ok {
        // debootstrap may leave /proc and /sys mounted in a root it gave up on.
        let cleanup = remove_root(&partial);
        bail!(
            "debootstrap --variant=minbase {SUITE} {mirror} failed ({}; needs the mirror reachable); \
             its log is {}:\n{}{}",
            match &out {
                Ok(o) => o.status.to_string(),
                Err(_) => "timed out or could not run".to_string(),
            },
            log.display(),
            crate::procs::tail(&text),
            cleanup
                .err()
                .map(|e| format!("\n(and removing the partial root failed: {e:#})"))
                .unwrap_or_default()
        );
    }
    unmount_under(&partial)?;
    fs::rename(&partial, &root)
        .with_context(|| format!("renaming {} to {}", partial.display(), root.display()))?;
    fs::write(&marker, &list).with_context(|| format!("writing {}", marker.display()))?;
    eprintln!(
        "debroot: base root ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(root)
}

/// A copy of a base root to change and boot, at `target/nspawn/NAME`, removed (after
/// unmounting anything left under it) when dropped, unless `MOS_KEEP_ROOT` is set to 1. A
/// copy left by an earlier run that was killed is removed first.
#[derive(Debug)]
pub struct ScratchRoot {
    path: PathBuf,
}

impl ScratchRoot {
    pub fn copy_of(base: &Path, name: &str) -> Result<ScratchRoot> {
        let path = cache_dir()?.join(name);
        remove_root(&path)?;
        run_within(
            Command::new("cp")
                .arg("-a")
                .arg("--reflink=auto")
                .arg(base)
                .arg(&path),
            Duration::from_secs(300),
        )
        .with_context(|| format!("copying the base root {}", base.display()))?;
        Ok(ScratchRoot { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `rel` (an absolute path inside the root) as a path on the host.
    pub fn host_path(&self, rel: &str) -> PathBuf {
        self.path.join(rel.trim_start_matches('/'))
    }

    /// Writes `contents` to the file `rel` inside the root (directories made as needed),
    /// with `mode`.
    pub fn write(&self, rel: &str, contents: &[u8], mode: u32) -> Result<()> {
        let p = self.host_path(rel);
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        fs::write(&p, contents).with_context(|| format!("writing {}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {mode:o} {}", p.display()))
    }

    /// Runs `argv` inside the root (not booted: `systemd-nspawn --pipe`, with /proc, /sys,
    /// /dev set up and the host's network and resolver) with `binds` (`HOST:INSIDE`) bound
    /// in; fails with its output unless it exits 0.
    pub fn run(&self, argv: &[&str], binds: &[String], timeout: Duration) -> Result<String> {
        let mut c = Command::new("systemd-nspawn");
        c.env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .args([
                "--quiet",
                "--register=no",
                "--keep-unit",
                "--pipe",
                "--resolv-conf=replace-host",
                "--timezone=off",
                "--setenv=DEBIAN_FRONTEND=noninteractive",
                "--setenv=LANG=C.UTF-8",
                "--setenv=PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            ])
            .arg("-D")
            .arg(&self.path);
        for b in binds {
            c.arg(format!("--bind={b}"));
        }
        c.arg("--").args(argv);
        run_within(&mut c, timeout)
    }
}

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        if std::env::var("MOS_KEEP_ROOT").as_deref() == Ok("1") {
            eprintln!("debroot: kept {} (MOS_KEEP_ROOT=1)", self.path.display());
            return;
        }
        if let Err(e) = remove_root(&self.path) {
            eprintln!("debroot: could not remove {}: {e:#}", self.path.display());
        }
    }
}

/// Where the mos that goes into a root comes from.
#[derive(Debug, Clone)]
pub enum MosSource {
    /// The Debian packages in this directory (`mos_*.deb`, `libmos*.deb`), installed with
    /// `apt-get install`, which also installs what they depend on.
    Debs(Vec<PathBuf>),
    /// The workspace's release build in this directory, installed by `deploy/install.sh
    /// --destdir ROOT --prefix /usr --no-build --from DIR`, with the user and group a system
    /// install makes.
    InstallScript(PathBuf),
}

impl MosSource {
    /// The packages a base root needs beyond [`BASE_PACKAGES`] for this way of installing:
    /// none for the packages (apt-get installs their dependencies, which the test thereby
    /// checks), the runtime libraries of the binaries for the install script.
    pub fn base_packages(&self) -> Result<Vec<String>> {
        match self {
            MosSource::Debs(_) => Ok(Vec::new()),
            MosSource::InstallScript(from) => {
                let mut files: Vec<PathBuf> = crate::locate::SHIPPED_BINARIES
                    .iter()
                    .map(|b| from.join(b))
                    .collect();
                files.push(from.join("libmos.so"));
                for f in &files {
                    ensure!(
                        f.is_file(),
                        "{} is not built (cargo build --release --bins; cargo build --release -p mos-capi)",
                        f.display()
                    );
                }
                runtime_packages(&files)
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            MosSource::Debs(debs) => format!(
                "the packages {}",
                debs.iter()
                    .map(|d| d
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            MosSource::InstallScript(from) => {
                format!("deploy/install.sh --no-build --from {}", from.display())
            }
        }
    }
}

/// The .deb files of mos in `dir`: `mos_*.deb` and `libmos*.deb`.
pub fn debs_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut debs = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(debs),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for e in entries {
        let p = e?.path();
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".deb") && (name.starts_with("mos_") || name.starts_with("libmos")) {
            debs.push(p);
        }
    }
    debs.sort();
    Ok(debs)
}

/// The packages when there are some, else the install script: `MOS_DEB_DIR` when set (it
/// must hold `mos_*.deb`; taken as it is), else `target/debian` when it holds `mos_*.deb` none
/// older than the release `mos-sensor` (older ones would test old code), else the release
/// build through `deploy/install.sh`. With `require_debs`, no package or a stale one is an
/// error instead.
pub fn mos_source(require_debs: bool) -> Result<MosSource> {
    let release = crate::locate::sensor_bin()?
        .parent()
        .context("the sensor binary has no directory")?
        .to_path_buf();
    let has_mos = |debs: &[PathBuf]| {
        debs.iter().any(|d| {
            d.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("mos_"))
        })
    };
    if let Some(dir) = std::env::var_os("MOS_DEB_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        let debs = debs_in(&dir)?;
        ensure!(
            has_mos(&debs),
            "MOS_DEB_DIR={} holds no mos_*.deb (scripts/package.sh --out DIR builds them)",
            dir.display()
        );
        return Ok(MosSource::Debs(debs));
    }
    let dir = crate::locate::target_dir()?.join("debian");
    let debs = debs_in(&dir)?;
    if has_mos(&debs) {
        let built = fs::metadata(release.join("mos-sensor"))
            .and_then(|m| m.modified())
            .with_context(|| format!("{}/mos-sensor", release.display()))?;
        let mut stale = Vec::new();
        for d in &debs {
            if fs::metadata(d).and_then(|m| m.modified())? < built {
                stale.push(d.display().to_string());
            }
        }
        if stale.is_empty() {
            return Ok(MosSource::Debs(debs));
        }
        let why = format!(
            "{} older than {}/mos-sensor: scripts/package.sh must run again after the build",
            stale.join(", "),
            release.display()
        );
        ensure!(!require_debs, "{why}");
        eprintln!(
            "debroot: not installing the packages in {}: {why}",
            dir.display()
        );
    } else {
        ensure!(
            !require_debs,
            "no mos_*.deb in {} and MOS_DEB_DIR is not set: run scripts/package.sh first",
            dir.display()
        );
    }
    Ok(MosSource::InstallScript(release))
}

/// Installs mos into `root` from `source` (see [`MosSource`]). The root must have been made
/// by [`base_root`] with `source.base_packages()`.
pub fn install_mos(root: &ScratchRoot, source: &MosSource) -> Result<()> {
    match source {
        MosSource::Debs(debs) => {
            let inside = "/var/cache/mos-debs";
            let dir = root.host_path(inside);
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut argv = vec![
                "apt-get".to_string(),
                "install".into(),
                "-y".into(),
                "--no-install-recommends".into(),
            ];
            for d in debs {
                let name = d.file_name().context("a package without a name")?;
                fs::copy(d, dir.join(name)).with_context(|| format!("copying {}", d.display()))?;
                argv.push(format!("{inside}/{}", name.to_string_lossy()));
            }
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            // Downloaded packages are kept between runs.
            let archives = cache_dir()?.join("apt-archives");
            fs::create_dir_all(archives.join("partial"))?;
            let binds = [format!("{}:/var/cache/apt/archives", archives.display())];
            let timeout = Duration::from_secs(600);
            if let Err(first) = root.run(&argv, &binds, timeout) {
                // The package lists debootstrap left may have gone stale (the mirror moved
                // to a point release): fetch them again and retry once.
                eprintln!(
                    "debroot: apt-get install failed, updating the lists and retrying: {first:#}"
                );
                root.run(&["apt-get", "update"], &binds, timeout)
                    .context("apt-get update in the root")?;
                root.run(&argv, &binds, timeout)
                    .context("apt-get install of the mos packages in the root")?;
            }
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        MosSource::InstallScript(from) => {
            let script = crate::locate::workspace_root().join("deploy/install.sh");
            run_within(
                Command::new("bash")
                    .arg(&script)
                    .arg("--destdir")
                    .arg(root.path())
                    .args(["--prefix", "/usr", "--no-build", "--from"])
                    .arg(from),
                Duration::from_secs(120),
            )
            .context("deploy/install.sh --destdir")?;
            // What install.sh does itself on a system install (not with --destdir).
            let t = Duration::from_secs(60);
            root.run(&["groupadd", "--system", "mos"], &[], t)?;
            root.run(
                &[
                    "useradd",
                    "--system",
                    "--gid",
                    "mos",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    "--comment",
                    "mos sensor",
                    "mos-sensor",
                ],
                &[],
                t,
            )?;
            root.run(&["ldconfig"], &[], t)?;
        }
    }
    Ok(())
}

/// `chroot ROOT PROGRAM ARGS...`, with a plain environment (PATH of a Debian root, C locale),
/// for the checks that run a root's programs without booting it.
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

/// Runs `c` to its end (at most ten minutes); its standard output when it exits 0, else an
/// error with what it printed.
pub fn run_ok(c: &mut Command) -> Result<String> {
    run_within(c, Duration::from_secs(600))
}
