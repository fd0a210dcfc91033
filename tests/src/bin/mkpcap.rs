//! Writes a synthetic capture and, beside it, `F.expected.tsv` with the exact streams.
//!
//! mkpcap short-flows [--conns N] [--concurrency N] [--ipv6] [--seed S] --out F
//! mkpcap http-flows [--conns N] [--concurrency N] [--ipv6] [--seed S] --out F
//!   (short-flows where each connection is one HTTP GET and its 200 response)
//! mkpcap bulk [--bytes N] [--mss N] [--conns N] [--ipv6] [--seed S] --out F
//! mkpcap idle [--conns N] [--ipv6] [--seed S] --out F   (handshakes only, left open)
//! mkpcap fragmented [--bytes N] [--mss N] [--piece N] [--conns N] [--ipv6] [--seed S] --out F
//!   (every data segment sent as shuffled IP fragments of N bytes, some twice)
//! mkpcap split --parts N --in F --out-prefix P   (P0.pcap .. P{N-1}.pcap, split by flow)
//!
//! `split` writes part `w` with the frames that `mos_sensor::dispatch::DispatchHash` gives to
//! worker `w` of `N` (both directions of a connection go to the same part), in their order in
//! `F`: a DPDK net_pcap device given one part per queue then holds what symmetric RSS would.

use anyhow::{bail, ensure, Context, Result};
use mos_sensor::capture::{CaptureBackend, FileCapture, LinkType};
use mos_sensor::dispatch::{DispatchHash, MAX_WORKERS};
use mos_tests::pcap::PcapWriter;
use mos_tests::synth::{
    bulk, expected_path, fragmented, http_flows, idle, short_flows, write_expected, BulkOptions,
    FragmentedOptions, IdleOptions, ShortFlowsOptions,
};
use std::io::BufWriter;
use std::path::PathBuf;

const USAGE: &str =
    "usage: mkpcap short-flows [--conns N] [--concurrency N] [--ipv6] [--seed S] --out F\n       \
                     mkpcap http-flows [--conns N] [--concurrency N] [--ipv6] [--seed S] --out F\n       \
                     mkpcap bulk [--bytes N] [--mss N] [--conns N] [--ipv6] [--seed S] --out F\n       \
                     mkpcap idle [--conns N] [--ipv6] [--seed S] --out F\n       \
                     mkpcap fragmented [--bytes N] [--mss N] [--piece N] [--conns N] [--ipv6] [--seed S] --out F\n       \
                     mkpcap split --parts N --in F --out-prefix P";

fn main() -> std::process::ExitCode {
    let first = std::env::args().nth(1);
    match first.as_deref() {
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return std::process::ExitCode::SUCCESS;
        }
        None => {
            eprintln!("{USAGE}");
            return std::process::ExitCode::from(2);
        }
        Some(_) => {}
    }
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkpcap: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().context(USAGE)?;
    if mode == "split" {
        return split(args);
    }
    let (mut conns, mut concurrency, mut bytes, mut mss, mut seed) =
        (None, 64usize, 1u64 << 20, 1448u16, 1u64);
    let (mut ipv6, mut out, mut piece) = (false, None, None);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--conns" => conns = Some(val()?.parse()?),
            "--concurrency" => concurrency = val()?.parse()?,
            "--bytes" => bytes = val()?.parse()?,
            "--mss" => mss = val()?.parse()?,
            "--seed" => seed = val()?.parse()?,
            "--piece" => piece = Some(val()?.parse()?),
            "--out" => out = Some(PathBuf::from(val()?)),
            "--ipv6" => ipv6 = true,
            _ => bail!("unknown argument {a:?}\n{USAGE}"),
        }
    }
    let out = out.context(USAGE)?;
    let expected = match mode.as_str() {
        "short-flows" | "http-flows" => {
            let o = ShortFlowsOptions {
                conns: conns.unwrap_or(20_000),
                concurrency,
                ipv6,
                seed,
            };
            if mode == "http-flows" {
                http_flows(&o, &out)?
            } else {
                short_flows(&o, &out)?
            }
        }
        "bulk" => bulk(
            &BulkOptions {
                bytes,
                mss,
                conns: conns.unwrap_or(1),
                ipv6,
                seed,
            },
            &out,
        )?,
        "fragmented" => fragmented(
            &FragmentedOptions {
                bytes,
                mss: if mss == 1448 { 8000 } else { mss },
                piece: piece.unwrap_or(if ipv6 { 1232 } else { 1480 }),
                conns: conns.unwrap_or(2),
                ipv6,
                seed,
            },
            &out,
        )?,
        "idle" => idle(
            &IdleOptions {
                conns: conns.unwrap_or(200_000),
                ipv6,
                seed,
            },
            &out,
        )?,
        _ => bail!("unknown mode {mode:?}\n{USAGE}"),
    };
    let exp = expected_path(&out);
    write_expected(&exp, &expected)?;
    eprintln!(
        "wrote {} ({} directions) and {}",
        out.display(),
        expected.len(),
        exp.display()
    );
    Ok(())
}

/// `mkpcap split`: one capture into `--parts` captures by the workers' dispatch hash.
fn split(mut args: impl Iterator<Item = String>) -> Result<()> {
    let (mut parts, mut input, mut prefix) = (2usize, None, None);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--parts" => parts = val()?.parse()?,
            "--in" => input = Some(PathBuf::from(val()?)),
            "--out-prefix" => prefix = Some(val()?),
            _ => bail!("unknown argument {a:?}\n{USAGE}"),
        }
    }
    let (input, prefix) = (input.context(USAGE)?, prefix.context(USAGE)?);
    ensure!(
        (1..=MAX_WORKERS).contains(&parts),
        "--parts must be between 1 and {MAX_WORKERS}"
    );
    let mut cap = FileCapture::open(&input)?;
    let paths: Vec<PathBuf> = (0..parts)
        .map(|w| PathBuf::from(format!("{prefix}{w}.pcap")))
        .collect();
    let mut outs = paths
        .iter()
        .map(|p| {
            let f =
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?;
            Ok(PcapWriter::new(BufWriter::new(f))?)
        })
        .collect::<Result<Vec<_>>>()?;
    let hash = DispatchHash::default();
    let mut counts = vec![0u64; parts];
    while let Some(pkt) = cap.next_packet()? {
        // The writer writes Ethernet frames, whole, with microsecond times (what mkpcap makes).
        ensure!(
            pkt.link == LinkType::Ethernet && pkt.orig_len as usize == pkt.data.len(),
            "{}: only whole Ethernet frames can be split (frame {})",
            input.display(),
            counts.iter().sum::<u64>()
        );
        let w = hash.worker_of(&pkt, parts);
        outs[w].packet(pkt.ts_ns / 1000, pkt.data)?;
        counts[w] += 1;
    }
    for o in outs {
        o.finish()?;
    }
    for (p, n) in paths.iter().zip(&counts) {
        eprintln!("wrote {} ({n} frames)", p.display());
    }
    Ok(())
}
