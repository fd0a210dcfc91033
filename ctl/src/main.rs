//! `mos-ctl`: asks a running `mos-sensor` for its state over the control socket and prints it
//! as text, JSON or Prometheus metrics, serves the metrics over HTTP
//! (`mos-ctl metrics --listen ADDR`), or shows it live in the terminal (`mos-ctl top`).

use anyhow::{Context, Result};
use clap::Parser;
use mos_ctl::cli::{Cli, Command};
use mos_ctl::query::query;
use mos_ctl::{metrics_server, top};
use shm_layout::status::{render_prometheus, render_text};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version go to stdout and succeed; usage errors fail with 1.
            let code = u8::from(e.use_stderr());
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Command::Top { interval } = cli.command {
        let opts = top::Options {
            control: cli.control.clone(),
            timeout: cli.timeout,
            interval,
        };
        return match top::run(&opts) {
            Ok(top::Exit::Quit) => ExitCode::SUCCESS,
            Ok(top::Exit::Signal(n)) => ExitCode::from(128u8.saturating_add(n as u8)),
            Err(e) => {
                eprintln!("mos-ctl: error: {e:#}");
                if e.is::<top::NotATerminal>() {
                    ExitCode::from(2)
                } else {
                    ExitCode::FAILURE
                }
            }
        };
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mos-ctl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    if let Command::Metrics {
        listen: Some(listen),
    } = cli.command
    {
        return metrics_server::serve(&metrics_server::Options {
            listen,
            control: cli.control.clone(),
            timeout: cli.timeout,
        });
    }
    let report = query(&cli.control, cli.timeout)?;
    let out = match cli.command {
        Command::Status { json: false } => render_text(&report),
        Command::Status { json: true } => status_json(&report)?,
        Command::Metrics { .. } => render_prometheus(&report),
        Command::Top { .. } => unreachable!("top runs on its own"),
    };
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")
}

/// The report as pretty JSON: each analyzer's `records_dropped` in its entry, without the
/// list that carries those numbers on the control socket.
fn status_json(report: &shm_layout::status::StatusReport) -> Result<String> {
    let mut v = serde_json::to_value(report)?;
    if let Some(o) = v.as_object_mut() {
        o.remove("analyzer_records_dropped");
    }
    let mut s = serde_json::to_string_pretty(&v)?;
    s.push('\n');
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_layout::status::{AnalyzerStatus, StatusReport};

    #[test]
    fn the_json_status_has_each_analyzers_records_dropped_in_its_entry() {
        let report = StatusReport {
            analyzers: vec![
                AnalyzerStatus {
                    id: 1,
                    name: "mos-log".into(),
                    records_dropped: 77,
                    ..AnalyzerStatus::default()
                },
                AnalyzerStatus {
                    id: 2,
                    name: "mos-grep".into(),
                    ..AnalyzerStatus::default()
                },
            ],
            ..StatusReport::default()
        };
        // As mos-ctl gets it: through the socket's encoding.
        let wire = shm_layout::control::encode(&report.clone().for_the_wire());
        let got: StatusReport = shm_layout::control::decode(&wire).unwrap();
        let got = got.from_the_wire();
        let text = status_json(&got).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["analyzers"][0]["records_dropped"], 77, "{text}");
        assert_eq!(v["analyzers"][1]["records_dropped"], 0, "{text}");
        assert!(v.get("analyzer_records_dropped").is_none(), "{text}");
        let back: StatusReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, report);
    }
}
