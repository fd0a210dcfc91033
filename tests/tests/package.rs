//! The Debian packages as an operator gets them: `mos`, `libmos0` and `libmos-dev`, made by
//! `scripts/package.sh`, pass lintian without errors, and installed with `dpkg --root` into a
//! throwaway Debian 12 system (a debootstrap minbase root, cached under target/nspawn/ by mos_tests::debroot, with
//! the packages' dependencies, systemd, gcc and make; maintainer scripts run chrooted into it as
//! dpkg does on a real host):
//!
//! - every binary runs and its `--version` is the package's version;
//! - every installed manual page renders with `man -l`, one per binary, mos-sensor.toml(5) and
//!   the C API's section 3;
//! - `systemd-analyze verify` (the root's own systemd 252) passes on the installed units;
//! - the C examples of analyzers/c build with their Makefile, that is with
//!   `pkg-config --cflags --libs libmos` against the installed files, and run; one links
//!   libmos.a statically with `pkg-config --static`;
//! - the group mos and the system user mos-sensor exist, the configuration is in conffiles, and
//!   installing again keeps them;
//! - `dpkg --purge`, after the units were enabled, state directories made and the
//!   configuration edited, leaves the file list as it was before the install and no user or
//!   group behind.
//!
//! The packages: `MOS_DEB_DIR` when set (scripts/test.sh's package stage makes them in
//! target/debian and sets it), else made now by `scripts/package.sh --no-build` into
//! target/package-test/ from the release build (`cargo build --release --bins
//! --features mos-analyzers/kafka` and `cargo build --release -p mos-capi`; a test cannot run
//! cargo itself). Needs root, debootstrap, lintian, dpkg-dev, debhelper, man-db (scripts/setup.sh
//! installs them) and, the first time, the Debian mirror (see mos_tests::debroot).

use anyhow::{anyhow, ensure, Context, Result};
use mos_tests::debroot::{base_root, chroot, run_ok, ScratchRoot};
use mos_tests::locate::{target_dir, workspace_root};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use mos_tests::locate::SHIPPED_BINARIES as BINARIES;
const PACKAGES: [&str; 3] = ["mos", "libmos0", "libmos-dev"];

/// The three .deb files, in the order of [`PACKAGES`], and their version.
#[derive(Debug)]
struct Debs {
    files: Vec<PathBuf>,
    version: String,
}

fn debs() -> Result<&'static Debs> {
    static DEBS: OnceLock<Result<Debs, String>> = OnceLock::new();
    DEBS.get_or_init(|| find_or_make_debs().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

fn find_or_make_debs() -> Result<Debs> {
    let dir = match std::env::var_os("MOS_DEB_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let out = target_dir()?.join("package-test");
            let mut c = Command::new("bash");
            c.arg(workspace_root().join("scripts/package.sh"))
                .args(["--no-build", "--out"])
                .arg(&out);
            if let Ok(target) = target_dir() {
                c.env("CARGO_TARGET_DIR", target);
            }
            run_ok(&mut c).context("making the packages with scripts/package.sh --no-build")?;
            out
        }
    };
    // The workspace version (every crate inherits it), possibly with a Debian revision.
    let upstream = env!("CARGO_PKG_VERSION");
    let mut files = Vec::new();
    let mut version = None;
    for p in PACKAGES {
        let prefix = format!("{p}_{upstream}");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| {
                f.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with(&prefix) && n.ends_with(".deb")
                })
            })
            .collect();
        ensure!(
            found.len() == 1,
            "expected one {p}_{upstream}*.deb in {}, found {found:?}",
            dir.display()
        );
        let f = found.remove(0);
        let v = field(&f, "Version")?;
        ensure!(
            v == upstream || v.starts_with(&format!("{upstream}-")),
            "{} has the version {v}, the workspace is {upstream}",
            f.display()
        );
        if let Some(prev) = &version {
            ensure!(*prev == v, "the packages' versions differ: {prev} and {v}");
        }
        version = Some(v);
        files.push(f);
    }
    Ok(Debs {
        files,
        version: version.context("no package")?,
    })
}

/// A control field of a .deb (`dpkg-deb -f`).
fn field(deb: &Path, name: &str) -> Result<String> {
    Ok(
        run_ok(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name))?
            .trim()
            .to_string(),
    )
}

/// The package names of a Depends field, first alternative of each, without versions or
/// architecture qualifiers.
fn depends_names(depends: &str) -> Vec<String> {
    depends
        .split(',')
        .filter_map(|d| d.split('|').next())
        .filter_map(|d| d.split_whitespace().next())
        .map(|d| d.split(':').next().unwrap_or(d).to_string())
        .filter(|d| !d.is_empty())
        .collect()
}

#[test]
fn lintian_reports_no_errors_and_dependencies_are_computed() -> Result<()> {
    let debs = debs()?;
    let out = Command::new("lintian")
        .args(["--no-tag-display-limit"])
        .args(&debs.files)
        .output()
        .context("running lintian (apt-get install lintian; scripts/setup.sh installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E: ")).collect();
    ensure!(
        errors.is_empty() && out.status.success(),
        "lintian ({}) reports errors:\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Its own complaints (an unreadable package, a crash) are errors too.
    ensure!(
        !String::from_utf8_lossy(&out.stderr)
            .lines()
            .any(|l| l.contains("error") || l.contains("failed")),
        "lintian complained:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The dependencies come from what the binaries link (dpkg-shlibdeps), by Debian names.
    let mos = depends_names(&field(&debs.files[0], "Depends")?);
    for want in [
        "librte-eal23",
        "librte-ethdev23",
        "libpcap0.8",
        "libc6",
        "passwd",
    ] {
        ensure!(
            mos.iter().any(|d| d == want),
            "mos does not depend on {want}: {mos:?}"
        );
    }
    let lib = depends_names(&field(&debs.files[1], "Depends")?);
    ensure!(lib.iter().any(|d| d == "libpcap0.8"), "libmos0: {lib:?}");
    let dev = field(&debs.files[2], "Depends")?;
    ensure!(
        dev.contains(&format!("libmos0 (= {})", debs.version)),
        "libmos-dev must depend on this very libmos0: {dev}"
    );
    Ok(())
}

/// Every path under `root` (not following links), relative, except the pseudo and scratch
/// file systems a chroot's commands may write to (/proc, /sys, /dev, /run, /tmp, /var/tmp).
fn file_list(root: &Path) -> Result<BTreeSet<PathBuf>> {
    const SKIP: [&str; 6] = ["proc", "sys", "dev", "run", "tmp", "var/tmp"];
    let mut out = BTreeSet::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let e = e?;
            let r = rel.join(e.file_name());
            if SKIP.iter().any(|s| r == Path::new(s)) {
                continue;
            }
            if e.file_type()?.is_dir() {
                stack.push(r.clone());
            }
            out.insert(r);
        }
    }
    Ok(out)
}

/// The files a package installed (`dpkg-query -L` on the root's database).
fn installed_files(root: &Path, package: &str) -> Result<Vec<String>> {
    let admindir = root.join("var/lib/dpkg");
    let out = run_ok(
        Command::new("dpkg-query")
            .arg(format!("--admindir={}", admindir.display()))
            .args(["-L", package]),
    )?;
    Ok(out.lines().map(str::to_string).collect())
}

/// Lines of the root's `file` (/etc/passwd, /etc/group, ...) that name mos's user or group.
fn account_lines(root: &Path, file: &str) -> Result<Vec<String>> {
    let p = root.join(file);
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("mos:") || l.starts_with("mos-sensor:"))
        .map(str::to_string)
        .collect())
}

#[test]
fn installs_runs_and_purges_without_a_trace() -> Result<()> {
    let debs = debs()?;
    let upstream = env!("CARGO_PKG_VERSION");

    // A root with what the packages depend on (apt's work on a real host) and the tools of
    // the checks: systemd-analyze, the C toolchain, make.
    let mut include: BTreeSet<String> = ["systemd", "gcc", "libc6-dev", "make", "pkg-config"]
        .into_iter()
        .map(str::to_string)
        .collect();
    for f in &debs.files {
        for d in depends_names(&field(f, "Depends")?) {
            if !PACKAGES.contains(&d.as_str()) {
                include.insert(d);
            }
        }
    }
    let include: Vec<String> = include.into_iter().collect();
    let scratch = ScratchRoot::copy_of(&base_root(&include)?, "package-test")?;
    let root = scratch.path().to_path_buf();
    let before = file_list(&root)?;

    run_ok(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .arg("-i")
            .args(&debs.files),
    )
    .context("installing the packages")?;

    // The binaries run and report the package's version.
    for b in BINARIES {
        let out = run_ok(&mut chroot(&root, &format!("/usr/bin/{b}"), &["--version"]))?;
        let line = out.lines().next().unwrap_or_default();
        ensure!(
            line.starts_with(&format!("{b} {upstream} (shared-memory ABI ")),
            "{b} --version says {line:?}; the package is version {}",
            debs.version
        );
    }

    // The user the sensor runs as, in the group that may attach.
    let group = run_ok(&mut chroot(&root, "getent", &["group", "mos"]))?;
    let gid = group
        .trim()
        .split(':')
        .nth(2)
        .context("a group line")?
        .to_string();
    let user = run_ok(&mut chroot(&root, "getent", &["passwd", "mos-sensor"]))?;
    let fields: Vec<&str> = user.trim().split(':').collect();
    ensure!(
        fields.len() == 7 && fields[3] == gid && fields[6] == "/usr/sbin/nologin",
        "mos-sensor: {user:?} (group mos: {group:?})"
    );
    let uid: u32 = fields[2].parse()?;
    ensure!(uid < 1000, "mos-sensor is not a system user: uid {uid}");

    // The configuration is dpkg's to keep across upgrades.
    let conffiles = run_ok(
        Command::new("dpkg-query")
            .arg(format!(
                "--admindir={}",
                root.join("var/lib/dpkg").display()
            ))
            .args(["-W", "-f=${Conffiles}\n", "mos"]),
    )?;
    for f in [
        "/etc/mos/sensor.toml",
        "/etc/mos/metrics.env",
        "/etc/mos/analyzers/flowstat.env",
    ] {
        ensure!(
            conffiles
                .lines()
                .any(|l| l.split_whitespace().next() == Some(f)),
            "{f} is not a conffile: {conffiles}"
        );
    }

    // Every manual page renders; each binary has one, the configuration and the C API too.
    let mut pages = Vec::new();
    for p in ["mos", "libmos-dev"] {
        pages.extend(
            installed_files(&root, p)?
                .into_iter()
                .filter(|f| f.starts_with("/usr/share/man/") && f.ends_with(".gz")),
        );
    }
    for b in BINARIES {
        let want = format!("/usr/share/man/man1/{b}.1.gz");
        ensure!(pages.contains(&want), "no {want} in {pages:?}");
    }
    ensure!(
        pages.contains(&"/usr/share/man/man5/mos-sensor.toml.5.gz".to_string()),
        "no mos-sensor.toml(5) in {pages:?}"
    );
    ensure!(
        pages.iter().any(|p| p.starts_with("/usr/share/man/man3/")),
        "no section 3 page in {pages:?}"
    );
    for p in &pages {
        let out = Command::new("man")
            .arg("-l")
            .arg(root.join(p.trim_start_matches('/')))
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .context("running man (apt-get install man-db)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success() && text.contains("NAME") && err.trim().is_empty(),
            "man -l {p}: {}\n{text}\n{err}",
            out.status
        );
    }

    // The installed units, as the root's own systemd sees them (a template through an
    // instance).
    for unit in [
        "mos-sensor.service",
        "mos-analyzer@flowstat.service",
        "mos-metrics.service",
    ] {
        let out = chroot(&root, "systemd-analyze", &["verify", "--man=no", unit]).output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let ours: Vec<&str> = text.lines().filter(|l| l.contains("mos-")).collect();
        ensure!(
            out.status.success() && ours.is_empty(),
            "systemd-analyze verify {unit}: {}\n{text}",
            out.status
        );
    }

    // The C examples, built as their Makefile builds them: with pkg-config's libmos.pc.
    let multiarch = run_ok(&mut chroot(&root, "gcc", &["-print-multiarch"]))?;
    let libdir = run_ok(&mut chroot(
        &root,
        "pkg-config",
        &["--variable=libdir", "libmos"],
    ))?;
    ensure!(
        libdir.trim() == format!("/usr/lib/{}", multiarch.trim()),
        "libmos.pc's libdir is {libdir:?}"
    );
    let prefix = run_ok(&mut chroot(
        &root,
        "pkg-config",
        &["--variable=prefix", "libmos"],
    ))?;
    ensure!(prefix.trim() == "/usr", "libmos.pc's prefix is {prefix:?}");
    let examples = root.join("tmp/examples");
    std::fs::create_dir_all(&examples)?;
    let src = workspace_root().join("analyzers/c");
    for e in std::fs::read_dir(&src)? {
        let p = e?.path();
        let name = p
            .file_name()
            .context("a file name")?
            .to_string_lossy()
            .into_owned();
        if name == "Makefile" || name.ends_with(".c") {
            std::fs::copy(&p, examples.join(&name))?;
        }
    }
    run_ok(&mut chroot(&root, "make", &["-C", "/tmp/examples"]))
        .context("building analyzers/c against the installed libmos")?;
    for prog in ["bytecount", "conntable", "udefilter"] {
        let out = run_ok(&mut chroot(
            &root,
            &format!("/tmp/examples/{prog}"),
            &["-h"],
        ))?;
        ensure!(out.contains("usage:"), "{prog} -h printed {out:?}");
    }
    run_ok(&mut chroot(
        &root,
        "sh",
        &[
            "-c",
            "cd /tmp/examples && cc -o bytecount-static bytecount.c \
             $(pkg-config --cflags libmos) \
             $(pkg-config --static --libs libmos | sed 's/-lmos\\b/-l:libmos.a/')",
        ],
    ))
    .context("linking libmos.a with pkg-config --static")?;
    let needed = run_ok(
        Command::new("readelf")
            .arg("-d")
            .arg(examples.join("bytecount-static")),
    )?;
    ensure!(
        !needed.contains("libmos.so"),
        "the static build still needs libmos.so:\n{needed}"
    );
    let out = run_ok(&mut chroot(
        &root,
        "/tmp/examples/bytecount-static",
        &["-h"],
    ))?;
    ensure!(
        out.contains("usage:"),
        "bytecount-static -h printed {out:?}"
    );

    // Installing again (what an upgrade runs) keeps the user and the group as they are.
    run_ok(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .arg("-i")
            .arg(&debs.files[0]),
    )
    .context("installing mos again")?;
    let again = run_ok(&mut chroot(&root, "getent", &["passwd", "mos-sensor"]))?;
    ensure!(
        again == user,
        "installing again changed mos-sensor: {user:?} -> {again:?}"
    );

    // What using it leaves: enabled units, state directories, an edited configuration and a
    // file of the operator's own in it.
    run_ok(&mut chroot(
        &root,
        "systemctl",
        &[
            "enable",
            "mos-sensor.service",
            "mos-metrics.service",
            "mos-analyzer@flowstat.service",
        ],
    ))?;
    for d in ["var/lib/mos", "var/lib/private/mos/flowstat"] {
        std::fs::create_dir_all(root.join(d))?;
        std::fs::write(root.join(d).join("state"), "x")?;
    }
    let conf = root.join("etc/mos/sensor.toml");
    let mut text = std::fs::read_to_string(&conf)?;
    text.push_str("\n# edited by the operator\n");
    std::fs::write(&conf, text)?;
    std::fs::write(
        root.join("etc/mos/analyzers/mine.env"),
        "MOS_ANALYZER_ARGS=\n",
    )?;

    run_ok(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .arg("--purge")
            .args(PACKAGES),
    )
    .context("purging the packages")?;

    let after = file_list(&root)?;
    let left: Vec<&PathBuf> = after.difference(&before).collect();
    let gone: Vec<&PathBuf> = before.difference(&after).collect();
    ensure!(
        left.is_empty() && gone.is_empty(),
        "the purge did not restore the file list: left behind {left:?}, removed {gone:?}"
    );
    for f in ["etc/passwd", "etc/group", "etc/shadow", "etc/gshadow"] {
        let lines = account_lines(&root, f)?;
        ensure!(lines.is_empty(), "{f} still has {lines:?}");
    }
    Ok(())
}
