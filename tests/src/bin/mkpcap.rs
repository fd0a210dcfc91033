//! Writes a synthetic capture and, beside it, `F.expected.tsv` with the exact streams.
//!
//! mkpcap short-flows [--conns N] [--concurrency N] [--ipv6] [--seed S] --out F
//! mkpcap bulk [--bytes N] [--mss N] [--conns N] [--ipv6] [--seed S] --out F
//! mkpcap idle [--conns N] [--ipv6] [--seed S] --out F   (handshakes only, left open)

use anyhow::{bail, Context, Result};
use mos_tests::synth::{
    bulk, expected_path, idle, short_flows, write_expected, BulkOptions, IdleOptions,
    ShortFlowsOptions,
};
use std::path::PathBuf;

const USAGE: &str =
    "usage: mkpcap short-flows [--conns N] [--concurrency N] [--ipv6] [--seed S] --out F\n       \
                     mkpcap bulk [--bytes N] [--mss N] [--conns N] [--ipv6] [--seed S] --out F\n       \
                     mkpcap idle [--conns N] [--ipv6] [--seed S] --out F";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().context(USAGE)?;
    let (mut conns, mut concurrency, mut bytes, mut mss, mut seed) =
        (None, 64usize, 1u64 << 20, 1448u16, 1u64);
    let (mut ipv6, mut out) = (false, None);
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
            "--out" => out = Some(PathBuf::from(val()?)),
            "--ipv6" => ipv6 = true,
            _ => bail!("unknown argument {a:?}\n{USAGE}"),
        }
    }
    let out = out.context(USAGE)?;
    let expected = match mode.as_str() {
        "short-flows" => short_flows(
            &ShortFlowsOptions {
                conns: conns.unwrap_or(20_000),
                concurrency,
                ipv6,
                seed,
            },
            &out,
        )?,
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
