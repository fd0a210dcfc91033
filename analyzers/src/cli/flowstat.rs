//! `mos-flowstat`'s command line.

use crate::AttachArgs;

/// Shows one line per live connection (worker, client address and state, server address and
/// state), refreshed every interval: redrawn in place on a terminal, printed as a snapshot
/// block otherwise. At exit prints how many connections were seen and how they ended. Exits 0
/// when the sensor's input ends or on SIGINT/SIGTERM (after detaching), 1 on an error; without
/// its sensor (it went away or detached this analyzer) it prints the last table and exits 1,
/// the summary in its error line.
#[derive(clap::Parser, Debug)]
#[command(name = "mos-flowstat", version = shm_layout::version!())]
pub struct Args {
    #[command(flatten)]
    pub attach: AttachArgs,
    /// Seconds between two refreshes, 0.05 to 86400.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, allow_hyphen_values = true,
          value_parser = interval)]
    pub interval: f64,
}

/// `--interval`: from 50 ms (the printer's own tick is 20 ms, and faster redraws only flicker)
/// to a day (longer is a typing error, and would overflow the time arithmetic long before a
/// float runs out).
pub fn interval(s: &str) -> Result<f64, String> {
    const RANGE: std::ops::RangeInclusive<f64> = 0.05..=86_400.0;
    let range = format!("between {} and {} seconds", RANGE.start(), RANGE.end());
    let x: f64 = s
        .parse()
        .map_err(|_| format!("expected a number ({range})"))?;
    if RANGE.contains(&x) {
        Ok(x)
    } else {
        Err(format!("must be {range}"))
    }
}
