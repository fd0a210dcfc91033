//! The manual pages and shell completions (`scripts/gendocs.sh`, `mos-docgen`): written where
//! the layout says, every page rendered by `man -l` and groff without a warning, each binary's
//! page naming every long option its `--help` lists and carrying its `--version`,
//! `mos-sensor.toml(5)` naming every configuration key, a page for every function the C
//! headers declare, and completions that bash loads and that complete.
//!
//! Needs the workspace's release binaries (`cargo build --release --bins`, which builds
//! `mos-docgen` too) and man-db and groff (Debian: man-db, groff-base). zsh is not needed: its
//! files are checked with `zsh -n` when zsh is there.

use anyhow::{ensure, Context, Result};
use mos_tests::locate::{bin, workspace_root};
use mos_tests::procs::tail;
use mos_tests::runner::ScratchDir;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use mos_tests::locate::SHIPPED_BINARIES as BINARIES;

/// Runs the generator into a fresh directory.
fn generate(scratch: &ScratchDir) -> Result<PathBuf> {
    let out = scratch.path().join("docs");
    let res = Command::new(bin("mos-docgen")?).arg(&out).output()?;
    ensure!(
        res.status.success(),
        "mos-docgen failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    Ok(out)
}

/// A page rendered by man-db as a reader sees it (UTF-8, 80 columns), failing on any warning.
/// Hyphenation at line ends is undone and hyphens and minus signs made ASCII, so that words
/// and options can be looked for in the text.
fn render(man_dir: &Path, page: &Path) -> Result<String> {
    let res = Command::new("man")
        .current_dir(man_dir)
        .env("LC_ALL", "C.UTF-8")
        .env("MANROFFSEQ", "")
        .env("MANWIDTH", "80")
        .args(["--warnings", "-E", "UTF-8", "-l"])
        .arg(page)
        .output()
        .context("running man (Debian package man-db)")?;
    let err = String::from_utf8_lossy(&res.stderr);
    ensure!(
        res.status.success() && err.trim().is_empty(),
        "man -l {}: {}\n{}",
        page.display(),
        res.status,
        tail(&err)
    );
    let text = String::from_utf8(res.stdout)?;
    ensure!(!text.trim().is_empty(), "{} renders empty", page.display());
    // Backspace overstriking (bold, underline), then hyphenation and dashes.
    let mut plain = String::new();
    for c in text.chars() {
        if c == '\u{8}' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    let mut joined = String::new();
    let mut lines = plain.lines().peekable();
    while let Some(l) = lines.next() {
        match l.strip_suffix('\u{2010}') {
            Some(head) if lines.peek().is_some() => {
                joined.push_str(head);
                let next = lines.next().unwrap_or_default();
                joined.push_str(next.trim_start());
                joined.push('\n');
            }
            _ => {
                joined.push_str(l);
                joined.push('\n');
            }
        }
    }
    Ok(joined.replace(['\u{2010}', '\u{2212}'], "-"))
}

/// groff's own check, every warning on.
fn groff_check(man_dir: &Path, page: &Path) -> Result<()> {
    let res = Command::new("groff")
        .current_dir(man_dir)
        .args(["-ww", "-man", "-z"])
        .arg(page)
        .output()
        .context("running groff (Debian package groff-base)")?;
    let err = String::from_utf8_lossy(&res.stderr);
    ensure!(
        res.status.success() && err.trim().is_empty(),
        "groff -ww -man -z {}: {}",
        page.display(),
        err
    );
    Ok(())
}

/// The long options a binary's `--help` lists (its option lines, not its prose).
fn long_options(help: &str) -> BTreeSet<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .flat_map(|l| {
            l.split([' ', ',', '='])
                .filter(|w| w.starts_with("--") && w.len() > 2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn run(program: &Path, args: &[&str]) -> Result<String> {
    let res = Command::new(program).args(args).output()?;
    ensure!(
        res.status.success(),
        "{} {args:?}: {}",
        program.display(),
        res.status
    );
    Ok(String::from_utf8(res.stdout)?)
}

/// The functions the C headers declare.
fn c_functions() -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for h in ["mos_api.h", "mtcp_api.h"] {
        let text = std::fs::read_to_string(workspace_root().join("capi/include").join(h))?;
        for line in text.lines() {
            if line.starts_with(|c: char| c.is_ascii_whitespace())
                || line.starts_with("typedef")
                || !line.contains('(')
            {
                continue;
            }
            // The identifier just before the parameter list.
            let head = &line[..line.find('(').unwrap_or(0)];
            let name: String = head
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if name.starts_with("mtcp_") {
                out.insert(name);
            }
        }
    }
    ensure!(out.len() > 20, "found only {out:?} in the headers");
    Ok(out)
}

#[test]
fn every_page_and_completion_is_written_and_renders_without_warnings() -> Result<()> {
    let scratch = ScratchDir::new("manpages")?;
    let out = generate(&scratch)?;
    let man = out.join("man");
    let mut expected: Vec<PathBuf> = Vec::new();
    for b in BINARIES {
        expected.push(man.join(format!("man1/{b}.1")));
        expected.push(out.join(format!("completions/bash/{b}")));
        expected.push(out.join(format!("completions/zsh/_{b}")));
    }
    expected.push(man.join("man5/mos-sensor.toml.5"));
    expected.push(man.join("man3/libmos.3"));
    let functions = c_functions()?;
    for f in &functions {
        expected.push(man.join(format!("man3/{f}.3")));
    }
    for p in &expected {
        ensure!(p.is_file(), "{} was not written", p.display());
    }
    // Every page renders, without a warning from man or groff; a C function's page (or the
    // page its link leads to) names it.
    let mut pages = Vec::new();
    for sect in ["man1", "man3", "man5"] {
        for e in std::fs::read_dir(man.join(sect))? {
            pages.push(PathBuf::from(sect).join(e?.file_name()));
        }
    }
    ensure!(pages.len() >= BINARIES.len() + 1 + functions.len());
    for p in &pages {
        let text = render(&man, p)?;
        groff_check(&man, p)?;
        let stem = p
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if functions.contains(&stem) {
            let name: String = text
                .lines()
                .skip_while(|l| *l != "NAME")
                .take_while(|l| *l != "SYNOPSIS")
                .collect();
            ensure!(
                name.contains(&stem),
                "{}'s NAME does not name {stem}",
                p.display()
            );
            ensure!(
                text.contains("RETURN VALUE"),
                "{} has no RETURN VALUE",
                p.display()
            );
        }
    }
    Ok(())
}

#[test]
fn each_binarys_page_has_its_options_version_and_sections() -> Result<()> {
    let scratch = ScratchDir::new("manpages-options")?;
    let out = generate(&scratch)?;
    let man = out.join("man");
    for b in BINARIES {
        let exe = bin(b)?;
        let text = render(&man, Path::new(&format!("man1/{b}.1")))?;
        let mut helps = vec![run(&exe, &["--help"])?];
        if b == "mos-ctl" {
            for c in ["status", "metrics", "top"] {
                helps.push(run(&exe, &[c, "--help"])?);
                ensure!(
                    text.contains(&format!("mos-ctl {c} [OPTIONS]")),
                    "mos-ctl.1 lacks {c}"
                );
            }
        }
        let options: BTreeSet<String> = helps.iter().flat_map(|h| long_options(h)).collect();
        ensure!(options.len() >= 3, "{b}: {options:?}");
        for o in &options {
            ensure!(text.contains(o.as_str()), "{b}.1 does not mention {o}");
        }
        // --version's line, "NAME VERSION (shared-memory ABI X.Y)", is the page's version.
        let version = run(&exe, &["--version"])?;
        let version = version
            .trim()
            .strip_prefix(b)
            .context("--version does not start with the name")?
            .trim();
        ensure!(
            text.contains(version),
            "{b}.1 does not carry version {version}"
        );
        for s in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "EXIT STATUS",
            "FILES",
            "SEE ALSO",
        ] {
            ensure!(text.lines().any(|l| l == s), "{b}.1 has no section {s}");
        }
        ensure!(
            text.contains("mos-sensor.toml(5)")
                || b == "mos-sensor" && text.contains("mos-sensor.toml")
        );
    }
    Ok(())
}

#[test]
fn the_configuration_page_lists_every_key() -> Result<()> {
    let scratch = ScratchDir::new("manpages-config")?;
    let out = generate(&scratch)?;
    let text = render(&out.join("man"), Path::new("man5/mos-sensor.toml.5"))?;
    for k in mos_sensor::config::KEYS {
        ensure!(
            text.contains(&k.path()),
            "mos-sensor.toml(5) lacks {}",
            k.path()
        );
        for f in k.flag.names() {
            ensure!(
                text.contains(f),
                "mos-sensor.toml(5) lacks {f} (for {})",
                k.path()
            );
        }
    }
    for r in mos_sensor::config::REMOVED {
        ensure!(text.contains(&format!("{}.{}", r.section, r.name)));
    }
    for (s, _) in mos_sensor::config::SECTIONS {
        ensure!(
            text.contains(&format!("[{s}]")),
            "mos-sensor.toml(5) lacks [{s}]"
        );
    }
    Ok(())
}

/// What bash's completion function for `bin` offers on `line` (words split on spaces; the
/// last, possibly empty, is being completed).
fn complete(file: &Path, bin: &str, line: &str) -> Result<Vec<String>> {
    let func = format!("_{}", bin.replace('-', "__"));
    let script = format!(
        "source {file:?} || exit 3
         complete -p {bin} | grep -q -- '-F {func} {bin}$' || exit 4
         COMP_LINE={line:?}; COMP_POINT=${{#COMP_LINE}}
         read -r -a COMP_WORDS <<< \"$COMP_LINE\"
         [[ $COMP_LINE == *' ' ]] && COMP_WORDS+=('')
         COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
         prev=''; (( COMP_CWORD > 0 )) && prev=${{COMP_WORDS[COMP_CWORD-1]}}
         {func} {bin} \"${{COMP_WORDS[COMP_CWORD]}}\" \"$prev\"
         printf '%s\\n' \"${{COMPREPLY[@]}}\""
    );
    let res = Command::new("bash").arg("-c").arg(&script).output()?;
    ensure!(
        res.status.success(),
        "{}: {} {}",
        file.display(),
        res.status,
        String::from_utf8_lossy(&res.stderr)
    );
    Ok(String::from_utf8(res.stdout)?
        .lines()
        .map(str::to_owned)
        .collect())
}

#[test]
fn completions_load_and_complete() -> Result<()> {
    let scratch = ScratchDir::new("manpages-completions")?;
    let out = generate(&scratch)?;
    for b in BINARIES {
        let file = out.join(format!("completions/bash/{b}"));
        let offered = complete(&file, b, &format!("{b} --"))?;
        ensure!(offered.iter().any(|o| o == "--help"), "{b}: {offered:?}");
        ensure!(offered.iter().any(|o| o == "--version"), "{b}: {offered:?}");
    }
    let sensor = out.join("completions/bash/mos-sensor");
    ensure!(complete(&sensor, "mos-sensor", "mos-sensor --over")? == ["--overlap"]);
    let policies = complete(&sensor, "mos-sensor", "mos-sensor --overlap ")?;
    ensure!(policies.iter().any(|p| p == "windows"), "{policies:?}");
    let ctl = complete(&out.join("completions/bash/mos-ctl"), "mos-ctl", "mos-ctl ")?;
    for c in ["status", "metrics", "top"] {
        ensure!(ctl.iter().any(|o| o == c), "mos-ctl completes {ctl:?}");
    }
    // zsh's own syntax check, where zsh is installed (it is not needed otherwise).
    let zsh = Command::new("zsh").arg("-c").arg("true").status();
    for b in BINARIES {
        let file = out.join(format!("completions/zsh/_{b}"));
        let text = std::fs::read_to_string(&file)?;
        ensure!(
            text.starts_with(&format!("#compdef {b}")),
            "{} does not start with #compdef",
            file.display()
        );
        if zsh.as_ref().is_ok_and(|s| s.success()) {
            let res = Command::new("zsh").arg("-n").arg(&file).output()?;
            ensure!(
                res.status.success(),
                "zsh -n {}: {}",
                file.display(),
                String::from_utf8_lossy(&res.stderr)
            );
        }
    }
    if zsh.is_err() {
        eprintln!("zsh is not installed: its completion files were checked for #compdef only");
    }
    Ok(())
}

#[test]
fn gendocs_writes_the_same_layout_and_refuses_a_bad_command_line() -> Result<()> {
    let script = workspace_root().join("scripts/gendocs.sh");
    let res = Command::new("bash").arg(&script).output()?;
    ensure!(
        res.status.code() == Some(2),
        "gendocs.sh without OUTDIR: {}",
        res.status
    );
    ensure!(String::from_utf8_lossy(&res.stderr).contains("Usage"));
    let res = Command::new("bash").arg(&script).arg("--help").output()?;
    ensure!(res.status.success());
    ensure!(String::from_utf8_lossy(&res.stdout).contains("OUTDIR/man/man5/mos-sensor.toml.5"));
    let res = Command::new(bin("mos-docgen")?).output()?;
    ensure!(
        res.status.code() == Some(2),
        "mos-docgen without OUTDIR: {}",
        res.status
    );
    // An OUTDIR that cannot be made is an error with a message, status 1.
    let scratch = ScratchDir::new("manpages-gendocs")?;
    let file = scratch.path().join("a-file");
    std::fs::write(&file, "")?;
    let res = Command::new(bin("mos-docgen")?)
        .arg(file.join("docs"))
        .output()?;
    ensure!(res.status.code() == Some(1), "{}", res.status);
    ensure!(String::from_utf8_lossy(&res.stderr).contains("mos-docgen: error:"));
    Ok(())
}
