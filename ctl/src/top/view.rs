//! Draws the [`Model`] with ratatui's widgets: a title line, a line about the connection to
//! the sensor, the packets/s and bit/s sparklines, flows and drops by cause side by side, and
//! the analyzers' table with a lag bar per row.

use super::model::{
    bar, bits_per_sec, lag_fraction, si, summary, window, Model, DROP_CAUSES, LAG_DECADES,
};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::symbols;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Sparkline, Table};
use ratatui::Frame;
use shm_layout::status::{human_bytes, human_duration, StatusReport};
use std::path::Path;
use std::time::Duration;

/// What the view needs besides the model.
#[derive(Debug)]
pub struct Info<'a> {
    /// The sensor's control socket.
    pub control: &'a Path,
    /// Time between two requests to the sensor.
    pub interval: Duration,
    /// Now, in seconds since `top` started (as the model's times).
    pub now: f64,
}

/// The analyzers' columns before the lag bar: title, width, numbers right-aligned.
const ANALYZER_COLUMNS: [(&str, u16, bool); 10] = [
    ("ID", 4, true),
    ("NAME", 18, false),
    ("PID", 8, true),
    ("USER", 12, false),
    ("EVENTS", 12, true),
    ("EVENTS/S", 9, true),
    ("DROPPED", 10, true),
    ("REC-DROP", 9, true),
    ("HEARTBEAT", 10, true),
    ("LAG", 10, true),
];

/// Spaces between two columns of a table.
const SPACING: u16 = 1;

/// Draws the whole screen.
pub fn draw(f: &mut Frame, m: &Model, info: &Info) {
    let n = m.report.as_ref().map_or(0, |r| r.analyzers.len()).max(1);
    let rows = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(4),
        Constraint::Min(4),
        Constraint::Length(8),
        Constraint::Length(n as u16 + 3),
    ])
    .split(f.area());
    f.render_widget(Paragraph::new(title(m, info, rows[0].width)), rows[0]);
    f.render_widget(Paragraph::new(connection(m, info)), rows[1]);
    let interval = info.interval;
    spark(
        f,
        rows[2],
        "packets/s",
        m.frames.history(),
        interval,
        Color::Cyan,
        si,
    );
    spark(
        f,
        rows[3],
        "bit/s",
        m.bits.history(),
        interval,
        Color::Green,
        bits_per_sec,
    );
    let middle = Layout::horizontal([Constraint::Length(38), Constraint::Fill(1)]).split(rows[4]);
    flows(f, middle[0], m);
    drops(f, middle[1], m);
    analyzers(f, rows[5], m);
}

/// `mos-sensor VERSION (pid N), STATE · INPUT (MODE, N workers) · up ...`, and the keys.
/// When the line is wider than `width`, the middle of the input (a long capture path, say)
/// gives way first, so the state, the uptime and the keys stay readable.
fn title(m: &Model, info: &Info, width: u16) -> Line<'static> {
    let head = Span::from(" mos-ctl top ").reversed().bold();
    let keys = format!(
        " · every {} · q quits",
        human_duration(info.interval.as_millis() as u64)
    );
    let mut spans = vec![head, Span::raw(" ")];
    if let Some(r) = &m.report {
        let sensor = format!(
            "mos-sensor {} (pid {}), {}",
            r.version, r.sensor_pid, r.state
        );
        let rest = format!(
            " ({}, {} worker{}) · up {}",
            r.mode,
            r.workers,
            if r.workers == 1 { "" } else { "s" },
            human_duration(r.uptime_ms)
        );
        let fixed = spans.iter().map(|s| s.width()).sum::<usize>()
            + sensor.chars().count()
            + " · ".chars().count()
            + rest.chars().count()
            + keys.chars().count();
        let input = elide_middle(&r.input, usize::from(width).saturating_sub(fixed));
        spans.push(sensor.bold());
        spans.push(Span::raw(format!(" · {input}{rest}")));
    }
    spans.push(keys.dark_gray());
    Line::from(spans)
}

/// `s` cut to at most `max` characters by putting `…` in place of its middle; a third of
/// what is kept comes from the start, the rest from the end (where a path's file name is).
/// Never shorter than 8 characters, so something of it always shows.
fn elide_middle(s: &str, max: usize) -> String {
    let n = s.chars().count();
    let max = max.max(8);
    if n <= max {
        return s.to_string();
    }
    let head = (max - 1) / 3;
    let tail = max - 1 - head;
    let mut out: String = s.chars().take(head).collect();
    out.push('…');
    out.extend(s.chars().skip(n - tail));
    out
}

/// Whether the sensor answers; while it does not, why and for how long.
fn connection(m: &Model, info: &Info) -> Line<'static> {
    match &m.outage {
        Some(o) => Line::from(vec![
            format!(
                " sensor unreachable for {}, retrying every {} ",
                human_duration(((info.now - o.since).max(0.0) * 1000.0) as u64),
                human_duration(info.interval.as_millis() as u64)
            )
            .white()
            .on_red()
            .bold(),
            format!(" {} (the numbers are from its last report)", o.reason).red(),
        ]),
        None => {
            let mut l = format!(" control socket {}", info.control.display());
            if m.restarts > 0 {
                l.push_str(&format!(
                    " · the sensor restarted {} time{} while watched",
                    m.restarts,
                    if m.restarts == 1 { "" } else { "s" }
                ));
            }
            Line::from(l.dark_gray())
        }
    }
}

/// A sparkline of one rate's history, as many intervals as the width holds, with the last,
/// mean and peak rate of that window in its title.
fn spark(
    f: &mut Frame,
    area: Rect,
    name: &str,
    history: &std::collections::VecDeque<Option<f64>>,
    interval: Duration,
    color: Color,
    fmt: fn(f64) -> String,
) {
    let width = area.width.saturating_sub(2) as usize;
    let bars = window(history, width);
    let now = history.back().copied().flatten();
    let span = interval.as_secs_f64() * bars.len() as f64;
    let mut t = vec![Span::from(format!(" {name} ")).bold()];
    t.push(Span::raw(match now {
        Some(v) => format!("now {} ", fmt(v)),
        None => "now - ".to_string(),
    }));
    let peak = match summary(&bars) {
        Some(s) => {
            t.push(Span::raw(format!(
                "· mean {} · peak {} ",
                fmt(s.mean),
                fmt(s.peak as f64)
            )));
            s.peak
        }
        None => 0,
    };
    t.push(format!("· last {} ", human_duration((span * 1000.0) as u64)).dark_gray());
    let block = Block::bordered().title(Line::from(t));
    let s = Sparkline::default()
        .block(block)
        .data(bars)
        .max(peak.max(1))
        .style(Style::default().fg(color))
        .absent_value_symbol(symbols::shade::LIGHT)
        .absent_value_style(Style::default().fg(Color::DarkGray));
    f.render_widget(s, area);
}

/// Flows and the sensor's other gauges.
fn flows(f: &mut Frame, area: Rect, m: &Model) {
    let rate = |r: Option<f64>| r.map_or_else(|| "-".to_string(), si);
    let lines: Vec<Line> = match &m.report {
        Some(r) => vec![
            kv("live", r.flows_live.to_string()),
            kv(
                "total",
                format!("{} ({}/s new)", r.flows_total, rate(m.flows.now())),
            ),
            kv("evicted", r.flows_evicted.to_string()),
            kv(
                "events",
                format!("{} ({}/s)", r.events_published, rate(m.events.now())),
            ),
            kv("waits", r.waits.to_string()),
            kv("memory", human_bytes(r.memory_rss_bytes)),
        ],
        None => Vec::new(),
    };
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" flows ".bold())),
        area,
    );
}

fn kv(k: &str, v: String) -> Line<'static> {
    Line::from(vec![format!(" {k:<9}").dark_gray(), Span::raw(v)])
}

/// Each cause of loss: its total and its rate, in two groups of columns; non-zero totals in
/// yellow, causes losing now in red.
fn drops(f: &mut Frame, area: Rect, m: &Model) {
    let half = DROP_CAUSES.len().div_ceil(2);
    let cells = |i: usize| -> Vec<Cell<'static>> {
        let Some((name, get)) = DROP_CAUSES.get(i) else {
            return vec![Cell::from(""), Cell::from(""), Cell::from("")];
        };
        let total = m.report.as_ref().map_or(0, |r| get(&r.drops));
        let now = m.drops[i].now();
        let style = if now.is_some_and(|v| v > 0.0) {
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
        } else if total > 0 {
            Style::default().fg(Color::Yellow)
        } else {
            Style::default()
        };
        vec![
            Cell::from(format!(" {name}")).style(style),
            Cell::from(Line::from(total.to_string()).right_aligned()).style(style),
            Cell::from(
                Line::from(now.map_or_else(|| "-".into(), |v| format!("{}/s", si(v))))
                    .right_aligned(),
            )
            .style(style),
        ]
    };
    let rows: Vec<Row> = (0..half)
        .map(|i| {
            let mut c = cells(i);
            c.push(Cell::from(""));
            c.extend(cells(i + half));
            Row::new(c)
        })
        .collect();
    let w = [
        Constraint::Length(18),
        Constraint::Length(12),
        Constraint::Length(9),
        Constraint::Length(2),
        Constraint::Length(18),
        Constraint::Length(12),
        Constraint::Length(9),
    ];
    let t = Table::new(rows, w)
        .column_spacing(SPACING)
        .block(Block::bordered().title(Line::from(vec![
            " drops by cause ".bold(),
            "(total, per second) ".dark_gray(),
        ])));
    f.render_widget(t, area);
}

/// One row per analyzer, its lag as a bar in the width left by the other columns.
fn analyzers(f: &mut Frame, area: Rect, m: &Model) {
    let list = m
        .report
        .as_ref()
        .map_or(&[][..], |r: &StatusReport| &r.analyzers[..]);
    let fixed: u16 = ANALYZER_COLUMNS.iter().map(|c| c.1 + SPACING).sum();
    let bar_w = area.width.saturating_sub(2 + fixed);
    let header = Row::new(
        ANALYZER_COLUMNS
            .iter()
            .map(|(name, _, right)| {
                let l = Line::from(*name);
                Cell::from(if *right { l.right_aligned() } else { l })
            })
            .chain([Cell::from("LAG (log scale)")]),
    )
    .bold()
    .underlined();
    let rows: Vec<Row> = if list.is_empty() {
        vec![Row::new([Cell::from("")
            .content("no analyzer attached")
            .dark_gray()
            .column_span(ANALYZER_COLUMNS.len() as u16 + 1)])]
    } else {
        list.iter()
            .map(|a| {
                let frac = lag_fraction(a.lag);
                let color = if frac < 3.0 / LAG_DECADES {
                    Color::Green
                } else if frac < 5.0 / LAG_DECADES {
                    Color::Yellow
                } else {
                    Color::Red
                };
                let rate = m
                    .delivered
                    .get(&a.id)
                    .and_then(|r| r.now())
                    .map_or_else(|| "-".to_string(), si);
                let cells = [
                    a.id.to_string(),
                    a.name.clone(),
                    a.pid.to_string(),
                    a.user.clone(),
                    a.delivered.to_string(),
                    rate,
                    a.dropped.to_string(),
                    a.records_dropped.to_string(),
                    a.heartbeat_age_ms
                        .map_or_else(|| "-".to_string(), human_duration),
                    a.lag.to_string(),
                ];
                let mut row: Vec<Cell> = cells
                    .into_iter()
                    .zip(ANALYZER_COLUMNS)
                    .map(|(text, (_, _, right))| {
                        let l = Line::from(text);
                        Cell::from(if right { l.right_aligned() } else { l })
                    })
                    .collect();
                if a.dropped > 0 {
                    row[6] = row[6].clone().red();
                }
                row.push(
                    Cell::from(bar(frac, bar_w as usize))
                        .fg(color)
                        .on_dark_gray(),
                );
                Row::new(row)
            })
            .collect()
    };
    let widths = ANALYZER_COLUMNS
        .iter()
        .map(|c| Constraint::Length(c.1))
        .chain([Constraint::Length(bar_w)]);
    let t = Table::new(rows, widths)
        .header(header)
        .column_spacing(SPACING)
        .block(Block::bordered().title(Line::from(vec![
            format!(" analyzers ({}) ", list.len()).bold(),
            "lag: events published to it and not read yet; the bar grows a seventh per tenfold, full at 10M "
                .dark_gray(),
        ])));
    f.render_widget(t, area);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use shm_layout::status::AnalyzerStatus;

    fn screen(m: &Model, now: f64, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        let info = Info {
            control: Path::new("/run/mos/control.sock"),
            interval: Duration::from_secs(1),
            now,
        };
        t.draw(|f| draw(f, m, &info)).unwrap();
        let buf = t.backend().buffer();
        let mut s = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                s.push_str(buf[(x, y)].symbol());
            }
            s.push('\n');
        }
        s
    }

    fn report(frames: u64, lag: u64) -> StatusReport {
        StatusReport {
            sensor_pid: 4242,
            version: "0.1.0".into(),
            input: "pcap /tmp/x.pcap".into(),
            mode: "lossless".into(),
            state: "running".into(),
            workers: 2,
            frames,
            bytes: frames * 1000,
            flows_live: 17,
            flows_total: 90,
            analyzers: vec![AnalyzerStatus {
                id: 3,
                name: "mos-flowstat".into(),
                pid: 5151,
                user: "mos-a".into(),
                delivered: frames,
                dropped: 2,
                lag,
                ..AnalyzerStatus::default()
            }],
            ..StatusReport::default()
        }
    }

    #[test]
    fn the_screen_shows_rates_flows_drops_and_a_row_per_analyzer() {
        let mut m = Model::new();
        m.ingest(0.0, Ok(report(0, 0)));
        m.ingest(1.0, Ok(report(12_000, 999)));
        let s = screen(&m, 1.0, 160, 48);
        assert!(s.contains("mos-sensor 0.1.0 (pid 4242), running"), "{s}");
        assert!(s.contains("packets/s now 12.0k"), "{s}");
        assert!(s.contains("bit/s now 96.0 Mbit/s"), "{s}");
        assert!(s.contains("live     17"), "{s}");
        assert!(s.contains("stalled analyzers"), "{s}");
        assert!(s.contains("analyzers (1)"), "{s}");
        let row = s
            .lines()
            .find(|l| l.contains("mos-flowstat"))
            .unwrap_or_else(|| panic!("no analyzer row:\n{s}"));
        for cell in ["5151", "mos-a", "12000", "12.0k", "999"] {
            assert!(row.contains(cell), "{cell} not in {row}");
        }
        // 999 events behind: three decades of seven, in a bar that reaches the border.
        let bar: String = row
            .chars()
            .rev()
            .skip(1)
            .take_while(|c| *c == ' ' || *c == '█' || ('▉'..='▏').contains(c))
            .collect();
        let filled = bar.chars().filter(|c| *c != ' ').count();
        let width = bar.chars().count();
        assert!(width > 20, "bar of {width} cells in {row}");
        let want = width * 3 / 7;
        assert!(
            filled.abs_diff(want) <= 1,
            "{filled} of {width} cells filled for 999 events: {row}"
        );
    }

    #[test]
    fn a_long_input_path_gives_way_in_its_middle_so_the_keys_stay_on_the_title_line() {
        let mut m = Model::new();
        let mut r = report(0, 0);
        r.input = format!("pcap /{}/trace-of-tuesday.pcapng", "deep/".repeat(40));
        m.ingest(0.0, Ok(r));
        let s = screen(&m, 0.0, 160, 48);
        let title = s.lines().next().unwrap();
        assert!(title.contains("every 1.0s · q quits"), "{title}");
        assert!(title.contains("pcap /deep/"), "{title}");
        assert!(title.contains("…"), "{title}");
        assert!(
            title.contains("trace-of-tuesday.pcapng (lossless, 2 workers)"),
            "{title}"
        );
        // A short input is shown whole.
        let s = screen(&m, 0.0, 400, 48);
        assert!(s.contains("trace-of-tuesday") && !s.lines().next().unwrap().contains('…'));
        assert_eq!(elide_middle("abcdefghijkl", 10), "abc…ghijkl");
        assert_eq!(elide_middle("abc", 1), "abc");
    }

    #[test]
    fn an_unreachable_sensor_is_said_with_its_reason_and_a_small_terminal_still_draws() {
        let mut m = Model::new();
        m.ingest(0.0, Ok(report(0, 0)));
        m.ingest(
            2.0,
            Err("no sensor listening at /x: is mos-sensor running?".into()),
        );
        let s = screen(&m, 7.5, 160, 48);
        assert!(
            s.contains(
                "sensor unreachable for 5.5s, retrying every 1.0s  no sensor listening at /x"
            ),
            "{s}"
        );
        // The last report stays on screen.
        assert!(s.contains("mos-flowstat"), "{s}");
        // Tiny and empty terminals do not panic.
        for (w, h) in [(20, 5), (1, 1), (80, 24), (0, 0)] {
            let _ = screen(&m, 8.0, w, h);
        }
        let _ = screen(&Model::new(), 0.0, 80, 24);
    }
}
