//! What `mos-ctl top` shows, computed from successive status reports and kept apart from the
//! drawing so that it can be tested: rates from counter samples, the history behind the
//! sparklines, the window of it that fits a width, and the length of an analyzer's lag bar.
//!
//! Times are seconds since `top` started (`f64`), given by the caller, so that tests can feed
//! any sequence of samples.

use shm_layout::status::{Drops, StatusReport};
use std::collections::{BTreeMap, VecDeque};

/// How long a counter may stand still after it last moved before the interval is taken as
/// idle. The sensor copies its workers' counters to the shared header about once a second, so
/// a sample taken less than this after the last movement may simply predate the next copy:
/// such an interval waits (showing the last rate) until the counter moves again, and then
/// shares that increase with it.
pub const PUBLISH_HOLD_SECS: f64 = 1.5;

/// How many intervals of history the sparklines keep (an hour at the default interval; a
/// terminal shows as many as it has columns).
pub const HISTORY: usize = 3600;

/// The rate of one counter, from successive samples of it, with a history of one rate per
/// interval (`None` where the sensor could not be asked).
#[derive(Clone, Debug)]
pub struct Rate {
    /// The last sample: (time, value).
    last: Option<(f64, u64)>,
    /// The last sample at which the counter had moved since the one before.
    moved: Option<(f64, u64)>,
    /// Whether a sample was ever taken (the first one ends no interval).
    seen: bool,
    /// Trailing intervals of `history` in which the counter stood still within
    /// [`PUBLISH_HOLD_SECS`] of its last movement (their rate is not known yet).
    pending: usize,
    /// One rate per interval, oldest first, at most `cap`.
    history: VecDeque<Option<f64>>,
    cap: usize,
}

impl Rate {
    /// A rate keeping `cap` intervals of history (at least one).
    pub fn new(cap: usize) -> Self {
        Rate {
            last: None,
            moved: None,
            seen: false,
            pending: 0,
            history: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    fn record(&mut self, r: Option<f64>) {
        if self.history.len() == self.cap {
            self.history.pop_front();
        }
        self.history.push_back(r);
    }

    /// Sets the last `n` intervals (those pending) to `r`.
    fn settle(&mut self, n: usize, r: f64) {
        let len = self.history.len();
        for slot in self.history.range_mut(len - n.min(len)..) {
            *slot = Some(r);
        }
    }

    /// A sample of the counter, `value` at time `t`, which ends an interval (except the very
    /// first). The first sample after [`Rate::restart`] or [`Rate::gap`] ends an interval
    /// without a rate; each further one gives the rate of its interval.
    pub fn push(&mut self, t: f64, value: u64) {
        let Some((lt, lv)) = self.last else {
            if self.seen {
                self.record(None);
            }
            self.seen = true;
            self.last = Some((t, value));
            self.moved = Some((t, value));
            self.pending = 0;
            return;
        };
        if t <= lt {
            return;
        }
        if value < lv {
            // The counter went back: a sensor run this view did not notice ending. The
            // interval has no rate, the next one will.
            self.restart();
            self.last = Some((t, value));
            self.moved = Some((t, value));
            self.record(None);
            return;
        }
        let (mt, mv) = self.moved.unwrap_or((lt, lv));
        if value == mv {
            if t - mt <= PUBLISH_HOLD_SECS {
                // Perhaps not copied to the header yet: show the last rate meanwhile.
                let held = self.history.back().copied().flatten().unwrap_or(0.0);
                self.record(Some(held));
                self.pending += 1;
            } else {
                // A copy has come since and the counter did not move: idle, and so were the
                // intervals that waited.
                self.settle(self.pending, 0.0);
                self.pending = 0;
                self.record(Some(0.0));
            }
        } else {
            let rate = if self.pending > 0 {
                // The increase covers the intervals that waited and this one.
                (value - mv) as f64 / (t - mt)
            } else {
                (value - lv) as f64 / (t - lt)
            };
            self.settle(self.pending, rate);
            self.pending = 0;
            self.record(Some(rate));
            self.moved = Some((t, value));
        }
        self.last = Some((t, value));
    }

    /// An interval without a sample (the sensor could not be asked): no rate for it, and the
    /// next sample starts afresh.
    pub fn gap(&mut self) {
        self.restart();
        self.record(None);
    }

    /// Forgets the last sample (a new sensor run: its counters start again), keeping the
    /// history.
    pub fn restart(&mut self) {
        self.last = None;
        self.moved = None;
        self.pending = 0;
    }

    /// The rate of the last interval, if it has one.
    pub fn now(&self) -> Option<f64> {
        self.history.back().copied().flatten()
    }

    /// One rate per interval, oldest first.
    pub fn history(&self) -> &VecDeque<Option<f64>> {
        &self.history
    }
}

/// The last `width` intervals of `history` (all of them when fewer), as the sparkline's bars.
pub fn window(history: &VecDeque<Option<f64>>, width: usize) -> Vec<Option<u64>> {
    let from = history.len().saturating_sub(width);
    history
        .range(from..)
        .map(|r| r.map(|v| v.max(0.0).round() as u64))
        .collect()
}

/// What a sparkline's title says about its window: the mean and the peak of the intervals
/// that have a rate (`None` when none has).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub mean: f64,
    pub peak: u64,
}

/// The mean and peak of a window (see [`window`]).
pub fn summary(bars: &[Option<u64>]) -> Option<Summary> {
    let known: Vec<u64> = bars.iter().copied().flatten().collect();
    let peak = *known.iter().max()?;
    let mean = known.iter().map(|&v| v as f64).sum::<f64>() / known.len() as f64;
    Some(Summary { mean, peak })
}

/// The decades of the lag bar: it is full at 10^LAG_DECADES events behind (past the largest
/// event ring, 2^24 records), and each tenth of it is ten times more.
pub const LAG_DECADES: f64 = 7.0;

/// How much of the lag bar `lag` fills, from 0 to 1, on a logarithmic scale (0 events: empty;
/// 9: a seventh; 99: two sevenths; ten million and more: full), so that a lag of a few events
/// shows as well as one of millions.
pub fn lag_fraction(lag: u64) -> f64 {
    ((lag as f64 + 1.0).log10() / LAG_DECADES).clamp(0.0, 1.0)
}

/// The eighths of a block, empty to full.
const EIGHTHS: [char; 9] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉', '█'];

/// A bar of `width` cells filled to `fraction` (0 to 1), in eighths of a cell, padded with
/// spaces to `width`.
pub fn bar(fraction: f64, width: usize) -> String {
    let eighths = (fraction.clamp(0.0, 1.0) * width as f64 * 8.0).round() as usize;
    let (full, part) = (eighths / 8, eighths % 8);
    let mut s = String::with_capacity(width * 3);
    s.extend(std::iter::repeat_n('█', full));
    if part > 0 {
        s.push(EIGHTHS[part]);
    }
    let used = full + usize::from(part > 0);
    s.extend(std::iter::repeat_n(' ', width.saturating_sub(used)));
    s
}

/// A count or rate with an SI prefix, three significant digits (`950`, `12.3k`, `1.50M`).
pub fn si(v: f64) -> String {
    const PREFIXES: [&str; 6] = ["k", "M", "G", "T", "P", "E"];
    if !v.is_finite() || v < 0.0 {
        return "-".to_string();
    }
    if v < 999.5 {
        // Rates under 10 keep a decimal so that a slow trickle does not show as 0.
        return if v < 9.95 && v.fract() != 0.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.0}")
        };
    }
    let mut x = v / 1000.0;
    let mut p = 0;
    while x >= 999.5 && p + 1 < PREFIXES.len() {
        x /= 1000.0;
        p += 1;
    }
    let digits = if x < 9.995 {
        2
    } else if x < 99.95 {
        1
    } else {
        0
    };
    format!("{x:.digits$}{}", PREFIXES[p])
}

/// Bits per second in the unit that suits them (`640 bit/s`, `12.3 Mbit/s`, `9.41 Gbit/s`).
pub fn bits_per_sec(bps: f64) -> String {
    let s = si(bps);
    match s.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => format!("{} {c}bit/s", &s[..s.len() - 1]),
        _ => format!("{s} bit/s"),
    }
}

/// Reads one cause's counter from a report's drops.
pub type DropCounter = fn(&Drops) -> u64;

/// The causes of loss the view lists, with the report's counter for each.
pub const DROP_CAUSES: [(&str, DropCounter); 11] = [
    ("capture", |d| d.capture),
    ("NIC errors", |d| d.nic_errors),
    ("no mbuf", |d| d.no_mbuf),
    ("truncated", |d| d.truncated),
    ("malformed", |d| d.malformed),
    ("unsupported link", |d| d.unsupported_link),
    ("bad checksum", |d| d.bad_checksum),
    ("snap cut", |d| d.snap_cut),
    ("fragments", |d| d.fragments),
    ("events", |d| d.events),
    ("stalled analyzers", |d| d.stalled_analyzers),
];

/// Why the sensor could not be asked, and since when.
#[derive(Clone, Debug, PartialEq)]
pub struct Outage {
    /// When the first failed request was made (seconds since `top` started).
    pub since: f64,
    /// The last failure, one line.
    pub reason: String,
}

/// Everything the view draws: the last report, the rates, and the state of the connection to
/// the sensor.
#[derive(Debug)]
pub struct Model {
    /// The last report the sensor gave (kept while it cannot be asked).
    pub report: Option<StatusReport>,
    /// Frames per second.
    pub frames: Rate,
    /// Bits per second (from bytes of frames).
    pub bits: Rate,
    /// New connections per second.
    pub flows: Rate,
    /// Events published per second.
    pub events: Rate,
    /// Each cause's rate, in the order of [`DROP_CAUSES`].
    pub drops: Vec<Rate>,
    /// Each attached analyzer's events consumed per second, by analyzer id.
    pub delivered: BTreeMap<u32, Rate>,
    /// While the sensor cannot be asked: why, since when.
    pub outage: Option<Outage>,
    /// Sensor runs seen after the first (a different pid or start time).
    pub restarts: u32,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

impl Model {
    pub fn new() -> Self {
        Model {
            report: None,
            frames: Rate::new(HISTORY),
            bits: Rate::new(HISTORY),
            flows: Rate::new(1),
            events: Rate::new(1),
            drops: DROP_CAUSES.iter().map(|_| Rate::new(1)).collect(),
            delivered: BTreeMap::new(),
            outage: None,
            restarts: 0,
        }
    }

    fn rates(&mut self) -> impl Iterator<Item = &mut Rate> {
        [
            &mut self.frames,
            &mut self.bits,
            &mut self.flows,
            &mut self.events,
        ]
        .into_iter()
        .chain(self.drops.iter_mut())
        .chain(self.delivered.values_mut())
    }

    /// One answer (or failure) of the sensor, at time `t`.
    pub fn ingest(&mut self, t: f64, answer: Result<StatusReport, String>) {
        let r = match answer {
            Ok(r) => r,
            Err(reason) => {
                let since = self.outage.as_ref().map_or(t, |o| o.since);
                self.outage = Some(Outage { since, reason });
                self.rates().for_each(Rate::gap);
                return;
            }
        };
        self.outage = None;
        let same_run = self
            .report
            .as_ref()
            .is_none_or(|p| (p.sensor_pid, p.started_unix_ms) == (r.sensor_pid, r.started_unix_ms));
        if !same_run {
            self.restarts += 1;
            self.rates().for_each(Rate::restart);
            // Analyzer ids are the run's own.
            self.delivered.clear();
        }
        self.frames.push(t, r.frames);
        self.bits.push(t, r.bytes.saturating_mul(8));
        self.flows.push(t, r.flows_total);
        self.events.push(t, r.events_published);
        for (rate, (_, get)) in self.drops.iter_mut().zip(DROP_CAUSES) {
            rate.push(t, get(&r.drops));
        }
        self.delivered
            .retain(|id, _| r.analyzers.iter().any(|a| a.id == *id));
        for a in &r.analyzers {
            self.delivered
                .entry(a.id)
                .or_insert_with(|| Rate::new(1))
                .push(t, a.delivered);
        }
        self.report = Some(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_layout::status::AnalyzerStatus;

    fn rates(r: &Rate) -> Vec<Option<f64>> {
        r.history().iter().copied().collect()
    }

    #[test]
    fn a_rate_is_the_increase_over_the_time_between_two_samples() {
        let mut r = Rate::new(10);
        r.push(0.0, 100);
        assert_eq!(r.now(), None, "one sample has no rate");
        r.push(1.0, 1100);
        r.push(3.0, 2100);
        r.push(3.5, 2600);
        assert_eq!(
            rates(&r),
            [Some(1000.0), Some(500.0), Some(1000.0)],
            "per interval, over its own length"
        );
        // A sample no later than the last one is ignored.
        r.push(3.5, 9999);
        r.push(3.0, 9999);
        assert_eq!(r.history().len(), 3);
        assert_eq!(r.now(), Some(1000.0));
    }

    #[test]
    fn a_counter_copied_to_the_header_late_is_shared_over_the_intervals_that_waited() {
        // The sensor copies counters about once a second; top samples every second, so
        // one interval may see no copy and the next two: 1000 frames/s throughout.
        let mut r = Rate::new(10);
        r.push(0.0, 0);
        r.push(1.0, 1000);
        r.push(2.0, 1000); // no copy in this interval yet: the last rate is shown
        assert_eq!(r.now(), Some(1000.0));
        r.push(3.0, 3000); // two seconds' worth, over the two intervals
        assert_eq!(rates(&r), [Some(1000.0), Some(1000.0), Some(1000.0)]);
        // A slowdown that arrives late is shared as well.
        r.push(4.0, 3000);
        r.push(5.0, 3400);
        assert_eq!(
            r.history().range(3..).copied().collect::<Vec<_>>(),
            [Some(200.0), Some(200.0)]
        );
    }

    #[test]
    fn a_counter_that_stays_still_past_the_next_copy_is_idle_and_so_were_the_waiting_intervals() {
        let mut r = Rate::new(10);
        r.push(0.0, 0);
        r.push(1.0, 500);
        r.push(2.0, 500); // held at 500 for now
        assert_eq!(r.now(), Some(500.0));
        r.push(3.0, 500); // 2 s without a movement: the traffic stopped
        assert_eq!(rates(&r), [Some(500.0), Some(0.0), Some(0.0)]);
        // It starts again: the increase belongs to the last interval alone.
        r.push(4.0, 800);
        assert_eq!(r.now(), Some(300.0));
        // With an interval longer than the hold, a still counter is idle at once.
        let mut slow = Rate::new(10);
        slow.push(0.0, 0);
        slow.push(2.0, 10);
        slow.push(4.0, 10);
        assert_eq!(rates(&slow), [Some(5.0), Some(0.0)]);
    }

    #[test]
    fn gaps_and_restarts_give_no_rate_for_their_interval() {
        let mut r = Rate::new(10);
        r.push(0.0, 0);
        r.push(1.0, 100);
        r.gap();
        r.gap();
        r.push(4.0, 400); // first sample after the outage: a new start, no rate yet
        assert_eq!(r.history().len(), 4);
        assert_eq!(r.now(), None);
        r.push(5.0, 500);
        assert_eq!(rates(&r), [Some(100.0), None, None, None, Some(100.0)]);
        // A counter that goes back belongs to a new run.
        r.push(6.0, 7);
        assert_eq!(r.now(), None);
        r.push(7.0, 57);
        assert_eq!(r.now(), Some(50.0));
    }

    #[test]
    fn the_history_keeps_its_capacity_and_the_window_its_width() {
        let mut r = Rate::new(4);
        r.push(0.0, 0);
        for i in 1..=10u64 {
            r.push(i as f64, i * i * 10);
        }
        // Rates 10, 30, 50, ..., 190: the last four kept.
        assert_eq!(
            rates(&r),
            [Some(130.0), Some(150.0), Some(170.0), Some(190.0)]
        );
        assert_eq!(window(r.history(), 2), [Some(170), Some(190)]);
        assert_eq!(window(r.history(), 100).len(), 4);
        assert_eq!(window(r.history(), 0), Vec::<Option<u64>>::new());
        let h: VecDeque<Option<f64>> = [Some(0.4), None, Some(2.6), Some(-1.0)].into();
        assert_eq!(window(&h, 4), [Some(0), None, Some(3), Some(0)]);
    }

    #[test]
    fn a_window_summary_leaves_out_intervals_without_a_rate() {
        assert_eq!(summary(&[]), None);
        assert_eq!(summary(&[None, None]), None);
        assert_eq!(
            summary(&[Some(10), None, Some(30), Some(20)]),
            Some(Summary {
                mean: 20.0,
                peak: 30
            })
        );
    }

    #[test]
    fn the_lag_bar_grows_a_seventh_per_decade_and_is_full_at_ten_million() {
        assert_eq!(lag_fraction(0), 0.0);
        assert!((lag_fraction(9) - 1.0 / 7.0).abs() < 1e-9);
        assert!((lag_fraction(999) - 3.0 / 7.0).abs() < 1e-9);
        assert!((lag_fraction(9_999_999) - 1.0).abs() < 1e-9);
        assert_eq!(lag_fraction(u64::MAX), 1.0);
        let mut prev = 0.0;
        for lag in [1, 5, 50, 65_536, 1 << 24] {
            let f = lag_fraction(lag);
            assert!(f > prev, "{lag}");
            prev = f;
        }
    }

    #[test]
    fn bars_fill_in_eighths_and_keep_their_width() {
        assert_eq!(bar(0.0, 4), "    ");
        assert_eq!(bar(1.0, 4), "████");
        assert_eq!(bar(0.5, 4), "██  ");
        assert_eq!(bar(1.0 / 32.0, 4), "▏   ");
        assert_eq!(bar(0.3, 4), "█▎  "); // 9.6 eighths, rounded to 10: one cell and a quarter
        assert_eq!(bar(2.0, 3), "███");
        assert_eq!(bar(-1.0, 3), "   ");
        assert_eq!(bar(0.5, 0), "");
        for f in [0.0, 0.01, 0.33, 0.5, 0.99, 1.0] {
            assert_eq!(bar(f, 17).chars().count(), 17, "{f}");
        }
    }

    #[test]
    fn numbers_get_an_si_prefix_and_bits_a_unit() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(0.25), "0.2");
        assert_eq!(si(7.0), "7");
        assert_eq!(si(950.0), "950");
        assert_eq!(si(999.4), "999");
        assert_eq!(si(999.6), "1.00k");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(si(123_456.0), "123k");
        assert_eq!(si(1_500_000.0), "1.50M");
        assert_eq!(si(9.41e9), "9.41G");
        assert_eq!(si(f64::NAN), "-");
        assert_eq!(bits_per_sec(640.0), "640 bit/s");
        assert_eq!(bits_per_sec(12.3e6), "12.3 Mbit/s");
        assert_eq!(bits_per_sec(9.41e9), "9.41 Gbit/s");
    }

    fn report(pid: u32, frames: u64, analyzers: &[(u32, u64)]) -> StatusReport {
        StatusReport {
            sensor_pid: pid,
            started_unix_ms: u64::from(pid) * 1000,
            frames,
            bytes: frames * 100,
            flows_total: frames / 10,
            drops: Drops {
                events: frames / 100,
                ..Drops::default()
            },
            analyzers: analyzers
                .iter()
                .map(|&(id, delivered)| AnalyzerStatus {
                    id,
                    delivered,
                    ..AnalyzerStatus::default()
                })
                .collect(),
            ..StatusReport::default()
        }
    }

    #[test]
    fn the_model_follows_the_sensor_through_outages_restarts_and_analyzers_leaving() {
        let mut m = Model::new();
        m.ingest(0.0, Ok(report(7, 0, &[(1, 0)])));
        m.ingest(1.0, Ok(report(7, 1000, &[(1, 50), (2, 0)])));
        assert_eq!(m.frames.now(), Some(1000.0));
        assert_eq!(m.bits.now(), Some(800_000.0));
        assert_eq!(m.flows.now(), Some(100.0));
        let events = DROP_CAUSES
            .iter()
            .position(|(n, _)| *n == "events")
            .unwrap();
        assert_eq!(m.drops[events].now(), Some(10.0));
        assert_eq!(m.delivered[&1].now(), Some(50.0));
        assert_eq!(m.delivered[&2].now(), None, "just attached");
        // Analyzer 1 leaves.
        m.ingest(2.0, Ok(report(7, 3000, &[(2, 40)])));
        assert_eq!(m.delivered.keys().copied().collect::<Vec<_>>(), [2]);
        assert_eq!(m.delivered[&2].now(), Some(40.0));
        // The sensor goes away: the last report stays, the rates have gaps.
        m.ingest(3.0, Err("no sensor listening".into()));
        m.ingest(4.0, Err("still none".into()));
        assert_eq!(
            m.outage,
            Some(Outage {
                since: 3.0,
                reason: "still none".into()
            })
        );
        assert_eq!(m.report.as_ref().unwrap().frames, 3000);
        assert_eq!(m.frames.now(), None);
        // A new run (another pid) with more frames than the old one had: no rate across.
        m.ingest(5.0, Ok(report(8, 5000, &[(1, 5)])));
        assert_eq!(m.outage, None);
        assert_eq!(m.restarts, 1);
        assert_eq!(m.frames.now(), None);
        m.ingest(6.0, Ok(report(8, 5200, &[(1, 25)])));
        assert_eq!(m.frames.now(), Some(200.0));
        assert_eq!(m.delivered[&1].now(), Some(20.0));
        assert_eq!(
            window(m.frames.history(), 10),
            [Some(1000), Some(2000), None, None, None, Some(200)]
        );
    }
}
