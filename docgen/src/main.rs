//! `mos-docgen OUTDIR`: writes mos's manual pages and shell completions into OUTDIR (see
//! `mos_docgen::write_all` for the layout).

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: mos-docgen OUTDIR

Writes mos's manual pages and shell completions into OUTDIR (created if missing):
  OUTDIR/man/man1/BIN.1             one per binary, from its command-line definition
  OUTDIR/man/man5/mos-sensor.toml.5 the configuration file, from the sensor's table of keys
  OUTDIR/man/man3/*.3               the C API (libmos)
  OUTDIR/completions/bash/BIN       bash completions
  OUTDIR/completions/zsh/_BIN       zsh completions
Pages are dated SOURCE_DATE_EPOCH when it is set, else today. Exits 1 on an error, 2 on a
malformed command line.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.as_slice() {
        [h] if h == "-h" || h == "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        [v] if v == "-V" || v == "--version" => {
            println!("mos-docgen {}", mos_docgen::VERSION);
            return ExitCode::SUCCESS;
        }
        [dir] if !dir.starts_with('-') && !dir.is_empty() => PathBuf::from(dir),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let run = || -> anyhow::Result<usize> {
        let date = mos_docgen::page_date()?;
        Ok(mos_docgen::write_all(&out, &date)?.len())
    };
    match run() {
        Ok(n) => {
            eprintln!("mos-docgen: {n} files written to {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mos-docgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
