//! `mos-ctl top`: the sensor live in the terminal. A thread asks the sensor for its status
//! every interval (the same request as `mos-ctl status`, over the control socket) and hands
//! each answer, or the reason there was none, to the drawing loop, which turns successive
//! answers into rates ([`model`]) and draws them ([`view`]) while it watches the keyboard.

mod model;
mod view;

use crate::query::query;
use anyhow::{Context, Result};
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use shm_layout::status::StatusReport;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The default of `--interval`.
pub const DEFAULT_INTERVAL: &str = "1";
/// The shortest and the longest `--interval`, seconds.
pub const INTERVAL_RANGE: (f64, f64) = (0.2, 3600.0);

/// `--interval SECONDS`: a number of seconds within [`INTERVAL_RANGE`].
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    let (lo, hi) = INTERVAL_RANGE;
    if !(secs >= lo && secs <= hi) {
        return Err(format!("must be from {lo} to {hi} seconds, not {s}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// What `top` needs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The sensor's control socket.
    pub control: PathBuf,
    /// How long one request to the sensor may take.
    pub timeout: Duration,
    /// Time between two requests.
    pub interval: Duration,
}

/// How `top` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// q, Esc or Ctrl-C.
    Quit,
    /// SIGINT, SIGTERM or SIGHUP (its number).
    Signal(i32),
}

/// Standard output is not a terminal: there is nothing to draw on.
#[derive(Debug)]
pub struct NotATerminal;

impl std::fmt::Display for NotATerminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "mos-ctl top draws on a terminal, and standard output is not one; for text, use mos-ctl status (or status --json, or metrics)",
        )
    }
}

impl std::error::Error for NotATerminal {}

/// One answer of the sensor, or why there was none, and when.
#[derive(Debug)]
struct Sample {
    at: Instant,
    answer: Result<StatusReport, String>,
}

/// Asks the sensor every `interval` (from the start of one request to the start of the next,
/// or at once when a request took longer) until `stop` is set or the receiver is gone.
fn sampler(opts: Options, first_at: Instant, tx: mpsc::Sender<Sample>, stop: Arc<AtomicBool>) {
    let mut next = first_at + opts.interval;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(100)));
            continue;
        }
        let answer = query(&opts.control, opts.timeout).map_err(|e| format!("{e:#}"));
        let at = Instant::now();
        if tx.send(Sample { at, answer }).is_err() {
            return;
        }
        next += opts.interval;
        if next < at {
            next = at;
        }
    }
}

/// Runs the live view until a key or a signal ends it. Fails before drawing anything when
/// standard output is not a terminal ([`NotATerminal`]) or the sensor does not answer the
/// first request; once drawing, a sensor that stops answering is shown and asked again every
/// interval.
pub fn run(opts: &Options) -> Result<Exit> {
    if !std::io::stdout().is_terminal() {
        return Err(NotATerminal.into());
    }
    let first = query(&opts.control, opts.timeout)?;
    let start = Instant::now();
    let mut model = model::Model::new();
    model.ingest(0.0, Ok(first));

    // Signals end the view as a key does, so that the terminal is restored.
    let signalled = Arc::new(AtomicUsize::new(0));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register_usize(sig, signalled.clone(), sig as usize)
            .context("cannot set up signal handling")?;
    }
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler_thread = {
        let (opts, stop) = (opts.clone(), stop.clone());
        std::thread::Builder::new()
            .name("sampler".into())
            .spawn(move || sampler(opts, start, tx, stop))
            .context("cannot start the sampling thread")?
    };

    // Raw mode and the alternate screen; ratatui's panic hook restores them on a panic.
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let ended = watch(&mut terminal, &mut model, opts, start, &rx, &signalled);
    let restored = ratatui::try_restore();
    let _ = crossterm::execute!(std::io::stdout(), crossterm::cursor::Show);
    stop.store(true, Ordering::Relaxed);
    // The sampler may be inside a request (bounded by --timeout): it is not waited for.
    drop(sampler_thread);
    let ended = ended?;
    restored.context("cannot restore the terminal")?;
    Ok(ended)
}

/// The drawing loop: draws on every answer and resize, reads keys in between.
fn watch(
    terminal: &mut ratatui::DefaultTerminal,
    model: &mut model::Model,
    opts: &Options,
    start: Instant,
    rx: &mpsc::Receiver<Sample>,
    signalled: &AtomicUsize,
) -> Result<Exit> {
    let since = |at: Instant| at.saturating_duration_since(start).as_secs_f64();
    let mut dirty = true;
    loop {
        let sig = signalled.load(Ordering::Relaxed);
        if sig != 0 {
            return Ok(Exit::Signal(sig as i32));
        }
        while let Ok(s) = rx.try_recv() {
            model.ingest(since(s.at), s.answer);
            dirty = true;
        }
        if dirty {
            let info = view::Info {
                control: &opts.control,
                interval: opts.interval,
                now: since(Instant::now()),
            };
            terminal
                .draw(|f| view::draw(f, model, &info))
                .context("cannot draw on the terminal")?;
            dirty = false;
        }
        if !event::poll(Duration::from_millis(100)).context("cannot read the terminal")? {
            continue;
        }
        match event::read().context("cannot read the terminal")? {
            Event::Key(k) if k.kind != KeyEventKind::Release => match k.code {
                KeyCode::Char('q' | 'Q') | KeyCode::Esc => return Ok(Exit::Quit),
                KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                    return Ok(Exit::Quit)
                }
                _ => {}
            },
            Event::Resize(..) => dirty = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_from_a_fifth_of_a_second_to_an_hour() {
        assert_eq!(parse_interval("1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("0.2"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_interval(" 3600 "), Ok(Duration::from_secs(3600)));
        for bad in ["0", "0.1", "-1", "3601", "nan", "inf", "", "1s"] {
            let e = parse_interval(bad).expect_err(bad);
            assert!(!e.contains('\n'), "{e}");
        }
        assert!(parse_interval("0")
            .unwrap_err()
            .contains("from 0.2 to 3600"));
    }
}
