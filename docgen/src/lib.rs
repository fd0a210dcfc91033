//! mos's manual pages and shell completions, generated.
//!
//! - Section 1, one page per binary, from the binary's own clap definition (`clap_mangen`):
//!   its synopsis, description (the long help), options with their defaults and values, and
//!   for `mos-ctl` each command; then what `--help` has no room for (exit status, signals,
//!   environment, files, examples, see also), written in [`man1`].
//! - Section 5, `mos-sensor.toml(5)`, from the sensor's table of configuration keys, the same
//!   table that writes `docs/CONFIG.md` ([`toml5`]).
//! - Section 3, the C API: roff sources kept in `capi/man/`, embedded here and given the
//!   version ([`man3`]).
//! - Bash and zsh completions (`clap_complete`), one file per binary.
//!
//! [`write_all`] writes them all into a directory, laid out as `scripts/gendocs.sh` documents.

pub mod man1;
pub mod man3;
pub mod roff;
pub mod toml5;

use anyhow::{Context, Result};
use clap::{Command, CommandFactory};
use std::path::{Path, PathBuf};

/// The version every page carries: the package version and the shared-memory ABI version, as
/// `--version` prints them.
pub const VERSION: &str = shm_layout::version!();

/// One binary: its name, its command line, and the one line that names it in `NAME` (the
/// `whatis` line).
#[derive(Clone, Copy, Debug)]
pub struct Binary {
    /// The executable's name.
    pub name: &'static str,
    /// Its clap definition.
    pub command: fn() -> Command,
    /// What it is, in a few words.
    pub summary: &'static str,
}

/// Every binary mos installs, with a page and completions each.
pub const BINARIES: [Binary; 7] = [
    Binary {
        name: "mos-sensor",
        command: mos_sensor::cli::Args::command,
        summary: "follow TCP connections, reassemble their streams and publish them to analyzers",
    },
    Binary {
        name: "mos-ctl",
        command: mos_ctl::cli::Cli::command,
        summary: "show a running mos-sensor's state, metrics or a live view",
    },
    Binary {
        name: "mos-flowstat",
        command: mos_analyzers::cli::flowstat::Args::command,
        summary: "live table of the connections a mos sensor follows",
    },
    Binary {
        name: "mos-dump",
        command: mos_analyzers::cli::dump::Args::command,
        summary: "write every connection's reassembled streams to files",
    },
    Binary {
        name: "mos-log",
        command: mos_analyzers::cli::log::Args::command,
        summary: "Zeek-style JSON logs of connections, HTTP, TLS and SSH",
    },
    Binary {
        name: "mos-grep",
        command: mos_analyzers::cli::grep::Args::command,
        summary: "search reassembled TCP streams for many patterns at once",
    },
    Binary {
        name: "mos-pcap",
        command: mos_analyzers::cli::pcap::Args::command,
        summary: "write chosen connections' packets to a pcap or pcapng file",
    },
];

/// The shells completions are written for.
pub const SHELLS: [clap_complete::Shell; 2] =
    [clap_complete::Shell::Bash, clap_complete::Shell::Zsh];

/// The completion script of `bin` for `shell`.
pub fn completion(bin: &Binary, shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = (bin.command)();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, bin.name, &mut out);
    out
}

/// Where a completion file goes under the output directory.
pub fn completion_path(bin: &str, shell: clap_complete::Shell) -> PathBuf {
    match shell {
        clap_complete::Shell::Zsh => Path::new("completions/zsh").join(format!("_{bin}")),
        other => Path::new("completions").join(other.to_string()).join(bin),
    }
}

/// The date pages carry: `SOURCE_DATE_EPOCH` when set (reproducible builds), else today (UTC),
/// as `YYYY-MM-DD`.
pub fn page_date() -> Result<String> {
    let secs = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse::<i64>()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    };
    Ok(shm_layout::status::civil_date(secs.div_euclid(86_400)))
}

/// Writes `bytes` to `out/rel`, making its directory.
fn put(out: &Path, rel: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let path = out.join(rel);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Writes every page and completion into `out` (created if missing), pages dated `date`:
/// `man/man1/BIN.1`, `man/man5/mos-sensor.toml.5`, `man/man3/*.3`,
/// `completions/bash/BIN`, `completions/zsh/_BIN`. Returns the files written, relative to
/// `out`.
pub fn write_all(out: &Path, date: &str) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for bin in &BINARIES {
        let rel = Path::new("man/man1").join(format!("{}.1", bin.name));
        let page = man1::page(bin, date).with_context(|| format!("{}(1)", bin.name))?;
        put(out, &rel, page.as_bytes())?;
        written.push(rel);
        for shell in SHELLS {
            let rel = completion_path(bin.name, shell);
            put(out, &rel, &completion(bin, shell))?;
            written.push(rel);
        }
    }
    let rel = PathBuf::from("man/man5/mos-sensor.toml.5");
    let page = toml5::page(date, VERSION).map_err(anyhow::Error::msg)?;
    put(out, &rel, page.as_bytes())?;
    written.push(rel);
    for (name, source) in man3::PAGES {
        let rel = Path::new("man/man3").join(name);
        put(out, &rel, man3::render(source, date).as_bytes())?;
        written.push(rel);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_calendar_dates() {
        use shm_layout::status::civil_date;
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(19_723), "2024-01-01");
        assert_eq!(civil_date(19_782), "2024-02-29");
        assert_eq!(civil_date(-1), "1969-12-31");
    }

    #[test]
    fn every_binary_is_named_as_its_command() {
        for b in &BINARIES {
            assert_eq!((b.command)().get_name(), b.name);
        }
    }
}
