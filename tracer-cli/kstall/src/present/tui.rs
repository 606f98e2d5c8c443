//! `kstall watch` on a terminal: a full-screen live view of the summary, verdict first. A header
//! says what is traced and how well (broker, Kafka version, listeners, threads per role, how
//! long, probes and the evidence this kernel lacks, lost records); the findings follow in their
//! severity's colour; then one view at a time, chosen by key: syscalls per role (hit and miss
//! rows coloured, a log2 bar each), requests per API, clients, stalls (the longest, with what
//! they delayed), cold partitions and readers, the findings in full. A footer names the keys.
//!
//! Lines never wrap: an operator's terminal over ssh is often 80 columns, and one wrapped row
//! pushes the rest of the screen down. Each table keeps its columns by priority: names
//! (threads, files, clients) shrink to a few characters with `…`, then whole columns of lower
//! priority drop out until the rest fits. ratatui draws only the cells that changed, so a
//! refresh does not flicker.
//!
//! [`Tui`] is the pure part (key -> state, summary -> frame), tested on ratatui's TestBackend;
//! [`Live`] is the small I/O shell that owns the terminal (raw mode, alternate screen, keys on a
//! thread of its own) and puts it back on exit, on a panic (hook) and on SIGTERM (the session
//! ends, and with it the view).
use std::{
    io::{self, IsTerminal, Read, Seek, SeekFrom, Write},
    os::fd::FromRawFd,
    sync::{
        Once,
        atomic::{AtomicBool, AtomicI32, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::Duration,
};

use crossterm::{
    cursor::{Hide, Show},
    event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers},
    execute,
    terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
};
use kstall_common::CacheResult;
use kstall_core::{
    listeners,
    stalls::Cause,
    finding::Severity,
    summary::Summary,
    units::{duration, plural},
};
use ratatui::{
    Frame, Terminal,
    backend::CrosstermBackend,
    layout::Rect,
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Clear, Paragraph},
};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use super::table::{self, MeasurementTable, bar_axis, log2_bar};

/// What the view shows besides the summaries, learnt once by the command.
pub struct Context {
    pub broker_pid: u32,
    /// From the broker's jar, when found.
    pub kafka_version: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Syscalls,
    Requests,
    Clients,
    Stalls,
    Cold,
    Findings,
}

impl View {
    /// In tab order; a view's key is its place here, from 1.
    pub const ALL: [View; 6] = [View::Syscalls, View::Requests, View::Clients, View::Stalls, View::Cold, View::Findings];

    pub const fn name(self) -> &'static str {
        match self {
            View::Syscalls => "syscalls",
            View::Requests => "requests",
            View::Clients => "clients",
            View::Stalls => "stalls",
            View::Cold => "cold reads",
            View::Findings => "findings",
        }
    }

    /// The orders `s` cycles through, largest first; the first is the summary's own.
    const fn sorts(self) -> &'static [&'static str] {
        match self {
            View::Syscalls => &["role", "p99", "calls", "time"],
            View::Requests => &["api", "p99", "requests"],
            View::Clients => &["busiest", "p99", "requests"],
            View::Stalls => &["took", "delay added"],
            View::Cold => &["miss time", "misses"],
            View::Findings => &["severity"],
        }
    }

    fn step(self, by: isize) -> View {
        let n = View::ALL.len() as isize;
        View::ALL[(self as isize + by).rem_euclid(n) as usize]
    }
}

/// What a key asks of the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Go,
    Quit,
}

/// The live view's state: the summary shown, the view, the order of its tables, and what the
/// user has asked for.
pub struct Tui {
    context: Context,
    shown: Option<Summary>,
    /// The newest summary, held while paused.
    held: Option<Summary>,
    view: View,
    /// Each view's order: an index into its `sorts()`.
    sort: [usize; View::ALL.len()],
    /// Body lines scrolled past; at most `max_scroll`, which the last frame measured, as it did
    /// `page` (the body's height).
    scroll: usize,
    max_scroll: usize,
    page: usize,
    paused: bool,
    help: bool,
    stopping: bool,
}

impl Tui {
    pub fn new(context: Context) -> Tui {
        Tui {
            context,
            shown: None,
            held: None,
            view: View::Syscalls,
            sort: [0; View::ALL.len()],
            scroll: 0,
            max_scroll: 0,
            page: 1,
            paused: false,
            help: false,
            stopping: false,
        }
    }

    pub fn on_summary(&mut self, summary: Summary) {
        if self.paused {
            self.held = Some(summary);
        } else {
            self.shown = Some(summary);
        }
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Flow {
        let ctrl_c = key.modifiers.contains(KeyModifiers::CONTROL) && matches!(key.code, KeyCode::Char('c' | 'C'));
        if ctrl_c || key.code == KeyCode::Char('q') {
            self.stopping = true;
            return Flow::Quit;
        }
        // Any other key closes the help, and does what it says.
        let help_was_open = std::mem::replace(&mut self.help, false);
        match key.code {
            KeyCode::Char('?') => self.help = !help_was_open,
            KeyCode::Char(c @ '1'..='9') => {
                if let Some(&view) = View::ALL.get(c as usize - '1' as usize) {
                    self.switch(view);
                }
            }
            KeyCode::Tab | KeyCode::Right => self.switch(self.view.step(1)),
            KeyCode::BackTab | KeyCode::Left => self.switch(self.view.step(-1)),
            KeyCode::Char('s') => {
                let sort = &mut self.sort[self.view as usize];
                *sort = (*sort + 1) % self.view.sorts().len();
            }
            KeyCode::Char('p' | ' ') => {
                self.paused = !self.paused;
                if let Some(newest) = self.held.take().filter(|_| !self.paused) {
                    self.shown = Some(newest);
                }
            }
            KeyCode::Up | KeyCode::Char('k') => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => self.scroll = (self.scroll + 1).min(self.max_scroll),
            KeyCode::PageUp => self.scroll = self.scroll.saturating_sub(self.page),
            KeyCode::PageDown => self.scroll = (self.scroll + self.page).min(self.max_scroll),
            KeyCode::Home | KeyCode::Char('g') => self.scroll = 0,
            KeyCode::End | KeyCode::Char('G') => self.scroll = self.max_scroll,
            _ => {}
        }
        Flow::Go
    }

    fn switch(&mut self, view: View) {
        if view != self.view {
            self.view = view;
            self.scroll = 0;
        }
    }

    pub fn draw(&mut self, frame: &mut Frame) {
        let area = frame.area();
        let lines = self.screen(area.width as usize, area.height as usize);
        frame.render_widget(Paragraph::new(lines), area);
        if self.help {
            let (width, height) = (area.width.min(HELP_WIDTH), area.height.min(HELP.len() as u16 + 2));
            let at = Rect::new(area.x + (area.width - width) / 2, area.y + (area.height - height) / 2, width, height);
            let inner = width.saturating_sub(2) as usize;
            let bold = Style::new().add_modifier(Modifier::BOLD);
            let lines: Vec<Line> =
                HELP.iter().map(|(keys, what)| fit(vec![Span::styled(format!("{keys:<16}"), bold), Span::raw(*what)], inner)).collect();
            frame.render_widget(Clear, at);
            frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(" keys ")), at);
        }
    }

    /// The whole screen as lines, each at most `width` columns, `height` of them.
    fn screen(&mut self, width: usize, height: usize) -> Vec<Line<'static>> {
        let mut lines = match &self.shown {
            None => vec![fit(
                vec![Span::styled(" LIVE ", status_style(Color::Green)), Span::raw(format!(" tracing broker pid {}: the first summary comes after one interval", self.context.broker_pid))],
                width,
            )],
            Some(s) => {
                let mut lines = self.header(s, width);
                // A sixth of the screen (4 lines at 24): the verdict first, the evidence still in view.
                lines.extend(findings_lines(s, width, (height / 6).max(2)));
                lines
            }
        };
        lines.push(self.tabs(width));
        let body_height = height.saturating_sub(lines.len() + 1);
        let body = self.shown.as_ref().map(|s| self.body(s, width)).unwrap_or_default();
        self.page = body_height.max(1);
        self.max_scroll = body.len().saturating_sub(body_height);
        self.scroll = self.scroll.min(self.max_scroll);
        lines.extend(body.into_iter().skip(self.scroll).take(body_height));
        lines.resize(height.saturating_sub(1), Line::default());
        if height > 0 {
            lines.push(self.footer(width));
        }
        lines
    }

    fn header(&self, s: &Summary, width: usize) -> Vec<Line<'static>> {
        let (status, colour) = if self.stopping {
            ("STOPPING", Color::Magenta)
        } else if self.paused {
            ("PAUSED", Color::Yellow)
        } else {
            ("LIVE", Color::Green)
        };
        let b = &s.broker;
        let version = self.context.kafka_version.as_deref().map_or("version unknown".to_string(), |v| format!("Kafka {v}"));
        let mut threads: Vec<String> = s.roles.iter().map(|(role, tids)| format!("{} {}", role.label(), tids.len())).collect();
        if s.exited_threads > 0 {
            threads.push(format!("{} exited", s.exited_threads));
        }
        let listeners: Vec<String> = s.listeners.iter().map(listeners::label).collect();
        let missing: Vec<&str> = s.probes.evidence.iter().filter(|e| !e.available()).map(|e| e.evidence.as_str()).collect();
        let mut probes = format!("{} attached ({})", s.probes.attached.len(), s.probes.syscall_hooks.hooks.as_str());
        if !s.probes.unavailable.is_empty() {
            probes += &format!(", {} unavailable", s.probes.unavailable.len());
        }
        let (evidence, evidence_style) =
            if missing.is_empty() { ("complete".to_string(), Style::new()) } else { (format!("degraded: {}", missing.join(", ")), Style::new().fg(Color::Yellow)) };
        let lost = &s.lost;
        let calls_lost = lost.histogram_map_full + lost.in_flight_map_full;
        let (lost, lost_style) = if lost.events + calls_lost + lost.probe_runs_skipped + lost.histogram_entries_unread == 0 {
            ("none".to_string(), Style::new())
        } else {
            let mut text = format!("{} records (ring buffer full), {} calls (maps full)", lost.events, calls_lost);
            if lost.probe_runs_skipped > 0 {
                text += &format!(", {} probe runs skipped", lost.probe_runs_skipped);
            }
            if lost.histogram_entries_unread > 0 {
                text += &format!(", {} histogram entries unread", lost.histogram_entries_unread);
            }
            (text, Style::new().fg(Color::Red).add_modifier(Modifier::BOLD))
        };
        let label = |text: &'static str| Span::styled(text, Style::new().add_modifier(Modifier::BOLD));
        [
            vec![
                Span::styled(format!(" {status} "), status_style(colour)),
                Span::raw(format!(
                    " broker pid {} ({}), {version}, traced {}, thread names from {}",
                    b.pid,
                    b.main_class,
                    duration((s.elapsed_seconds * 1e9) as u64),
                    s.thread_names.as_str()
                )),
            ],
            vec![label("threads "), Span::raw(if threads.is_empty() { "none seen yet".to_string() } else { threads.join(", ") })],
            vec![label("listeners "), Span::raw(if listeners.is_empty() { "none known".to_string() } else { listeners.join("; ") })],
            vec![
                label("probes "),
                Span::raw(probes),
                label("  evidence "),
                Span::styled(evidence, evidence_style),
                label("  lost "),
                Span::styled(lost, lost_style),
            ],
        ]
        .into_iter()
        .map(|spans| fit(spans, width))
        .collect()
    }

    fn tabs(&self, width: usize) -> Line<'static> {
        let spans = View::ALL
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let style = if v == self.view { Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD) } else { Style::new().fg(Color::Gray) };
                Span::styled(format!(" {} {} ", i + 1, v.name()), style)
            })
            .collect();
        fit(spans, width)
    }

    fn footer(&self, width: usize) -> Line<'static> {
        let key = |k: &'static str| Span::styled(k, Style::new().add_modifier(Modifier::REVERSED));
        if self.stopping {
            return fit(vec![key(" STOPPING "), Span::raw(" detaching the probes, then the findings are printed")], width);
        }
        let sort = self.view.sorts()[self.sort[self.view as usize]];
        fit(
            vec![
                key("q"),
                Span::raw(" quit  "),
                key("?"),
                Span::raw(" help  "),
                key("1-6 Tab"),
                Span::raw(" view  "),
                key("s"),
                Span::raw(format!(" sort: {sort}  ")),
                key("p"),
                Span::raw(if self.paused { " resume  " } else { " pause  " }),
                key("↑↓ PgUp PgDn"),
                Span::raw(" scroll"),
            ],
            width,
        )
    }

    /// The current view's lines, before scrolling.
    fn body(&self, s: &Summary, width: usize) -> Vec<Line<'static>> {
        let sort = self.sort[self.view as usize];
        let mut out = Vec::new();
        match self.view {
            View::Syscalls => out.extend(syscall_grid(s).lines(width, sort)),
            View::Requests => {
                if s.requests.apis.is_empty() {
                    out.push(fit(vec![Span::raw(table::no_requests_line(s))], width));
                } else {
                    let keys = s.requests.apis.iter().map(|a| vec![a.total.p99_ns, a.count]);
                    out.extend(Grid::new(table::api_table(s), API_COLUMNS, false).keyed(keys).lines(width, sort));
                }
                if s.stalls.produce.requests > 0 {
                    out.push(Line::default());
                    out.extend(Grid::new(table::produce_table(s), PRODUCE_COLUMNS, true).lines(width, 0));
                }
                if let Some(t) = table::controller_table(s) {
                    out.push(Line::default());
                    out.extend(Grid::new(t, CONTROLLER_COLUMNS, true).lines(width, 0));
                }
            }
            View::Clients => {
                let keys = s.requests.clients.iter().map(|c| vec![c.total.p99_ns, c.count]);
                out.extend(Grid::new(table::client_table(s), CLIENT_COLUMNS, false).keyed(keys).lines(width, sort));
            }
            View::Stalls => {
                out.push(fit(vec![Span::raw(table::stalls_line(&s.stalls))], width));
                out.push(Line::default());
                let worst = s.stalls.worst.iter();
                out.extend(
                    Grid::new(table::worst_stalls_table(s), WORST_STALL_COLUMNS, true)
                        .styled(worst.clone().map(|w| cause_style(w.cause)))
                        .keyed(worst.map(|w| vec![w.delayed_produce_ns]))
                        .lines(width, sort),
                );
                out.push(Line::default());
                let by_thread = s.stalls.by_thread.iter().map(|t| cause_style(t.cause));
                out.extend(Grid::new(table::thread_stalls_table(s), THREAD_STALL_COLUMNS, true).styled(by_thread).lines(width, 0));
                for (t, specs) in [
                    (table::delayed_table(s), DELAYED_COLUMNS),
                    (table::replication_table(s), REPLICATION_COLUMNS),
                    (table::thread_connections_table(s), CONNECTION_COLUMNS),
                ] {
                    if !t.rows.is_empty() {
                        out.push(Line::default());
                        out.extend(Grid::new(t, specs, true).lines(width, 0));
                    }
                }
            }
            View::Cold => {
                let [partitions, readers] = table::cold_tables(s);
                for (t, rows) in [(partitions, &s.stalls.cold_partitions), (readers, &s.stalls.cold_readers)] {
                    if !out.is_empty() {
                        out.push(Line::default());
                    }
                    out.extend(Grid::new(t, COLD_COLUMNS, true).keyed(rows.iter().map(|m| vec![m.stalls])).lines(width, sort));
                }
            }
            View::Findings => {
                for f in &s.findings {
                    let w = super::words::words(f);
                    // The title after its severity label, hanging under it when wrapped.
                    let indent = LABEL_WIDTH + 1;
                    for (i, part) in wrap(&w.title, width.saturating_sub(indent)).into_iter().enumerate() {
                        let lead = if i == 0 { Span::styled(format!("{:<indent$}", f.severity.label()), severity_style(f.severity)) } else { Span::raw(" ".repeat(indent)) };
                        out.push(fit(vec![lead, Span::styled(part, Style::new().add_modifier(Modifier::BOLD))], width));
                    }
                    for text in [w.detail, format!("fix: {}", w.fix)] {
                        out.extend(wrap(&text, width.saturating_sub(2)).into_iter().map(|part| fit(vec![Span::raw(format!("  {part}"))], width)));
                    }
                    out.push(Line::default());
                }
            }
        }
        out
    }
}

/// The findings, most severe first (the core's order), one line each; past `max` lines, the
/// last says how many more the findings view has.
fn findings_lines(s: &Summary, width: usize, max: usize) -> Vec<Line<'static>> {
    let n = s.findings.len();
    if n == 0 {
        return vec![fit(vec![Span::styled("no findings yet", Style::new().fg(Color::Gray))], width)];
    }
    let shown = if n <= max { n } else { max - 1 };
    let mut lines: Vec<Line> = s
        .findings
        .iter()
        .take(shown)
        .map(|f| fit(vec![Span::styled(format!("{:<LABEL_WIDTH$} ", f.severity.label()), severity_style(f.severity)), Span::raw(super::words::words(f).title)], width))
        .collect();
    if shown < n {
        let more = n - shown;
        lines.push(fit(vec![Span::styled(format!("... {more} more finding{}: press 6", plural(more as u64)), Style::new().fg(Color::Gray))], width));
    }
    lines
}

/// Width of the widest severity label, `CRITICAL`.
const LABEL_WIDTH: usize = 8;

fn severity_style(severity: Severity) -> Style {
    let colour = match severity {
        Severity::Critical => Color::Red,
        Severity::Warning => Color::Yellow,
        Severity::Info => Color::Cyan,
    };
    Style::new().fg(colour).add_modifier(Modifier::BOLD)
}

fn status_style(colour: Color) -> Style {
    Style::new().fg(Color::Black).bg(colour).add_modifier(Modifier::BOLD)
}

/// Page-cache misses in red, as their syscall rows; other stalls in yellow.
fn cause_style(cause: Cause) -> Style {
    if cause == Cause::PageCacheMiss { Style::new().fg(Color::Red) } else { Style::new().fg(Color::Yellow) }
}

const HELP_WIDTH: u16 = 78;
/// Keys and what they do; each line fits the box at 80 columns.
const HELP: [(&str, &str); 7] = [
    ("1-6 Tab <- ->", "switch view (the tabs above the table)"),
    ("s", "sort the view's tables by the next key (see the footer)"),
    ("p space", "pause the display (tracing goes on); again to resume"),
    ("Up Down j k", "scroll a line"),
    ("PgUp PgDn g G", "scroll a page; to the top, to the bottom"),
    ("? Esc", "open, close this help"),
    ("q Ctrl-C", "quit: the probes detach, the findings are printed"),
];

/// How a name too wide for its column is cut: most keep their start; thread names differ at
/// their end (`...-network-thread-1-PLAINTEXT-0`), so they keep both ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    End,
    Middle,
}

/// A column of a view's table, by its header: kept in order of priority (0 first) when the
/// screen is narrow. A name column (`cut`) first shrinks, down to NAME_MIN; any other is shown
/// whole or not at all.
struct Spec {
    title: &'static str,
    priority: u8,
    cut: Option<Cut>,
}

const NAME_MIN: usize = 12;

const fn col(title: &'static str, priority: u8) -> Spec {
    Spec { title, priority, cut: None }
}

const fn name(title: &'static str, priority: u8, cut: Cut) -> Spec {
    Spec { title, priority, cut: Some(cut) }
}

/// At 80 columns: syscall, cache, calls, p99, role, the bar, p50.
const SYSCALL_COLUMNS: &[Spec] = &[
    col("syscall", 0),
    col("cache", 1),
    col("calls", 2),
    col("p99", 3),
    name("role", 4, Cut::End),
    col(BAR, 5),
    col("p50", 6),
    col("max", 7),
    col("bytes", 8),
    col("p90", 9),
    col("p99.9", 10),
    col("pages added", 11),
];
/// The log2 bar's column, added to the syscall table here (the text table draws it too).
const BAR: &str = "log2 histogram";
const API_COLUMNS: &[Spec] = &[
    col("api", 0),
    col("requests", 1),
    col("p99", 2),
    col("p50", 3),
    col("max", 4),
    col("per s", 5),
    col("p99.9", 6),
    col("socket wait p99", 7),
    col("broker p99", 8),
    col("broker p50", 9),
    col("socket wait p50", 10),
];
const CLIENT_COLUMNS: &[Spec] = &[
    name("client.id", 0, Cut::End),
    col("api", 1),
    col("requests", 2),
    col("p99", 3),
    col("p50", 4),
    col("max", 5),
    col("listener", 6),
    col("in flight max", 7),
    col("per s", 8),
    col("connections", 9),
    col("in flight mean", 10),
];
const CONTROLLER_COLUMNS: &[Spec] = &[
    col("api", 0),
    col("listener", 1),
    col("requests", 2),
    col("p99", 3),
    col("p50", 4),
    col("max", 5),
    col("per s", 6),
    col("broker p99", 7),
    col("broker p50", 8),
];
const PRODUCE_COLUMNS: &[Spec] = &[col("Produce", 0), col("requests", 1), col("p99", 2), col("p50", 3), col("max", 4), col("p99.9", 5)];
/// At 80 columns: how long, why, the request served, the Produce delayed, the file, the delay.
const WORST_STALL_COLUMNS: &[Spec] = &[
    col("took", 0),
    col("cause", 1),
    name("serving", 2, Cut::End),
    col("delayed Produce", 3),
    name("file", 4, Cut::End),
    col("delay added", 5),
    col("call", 6),
    name("thread", 7, Cut::Middle),
    col("listener", 8),
];
const THREAD_STALL_COLUMNS: &[Spec] = &[name("thread", 0, Cut::Middle), col("cause", 1), col("stalls", 2), col("stall time", 3), col("listener", 4)];
/// At 80 columns: who, which API, how many delayed and by how much.
const DELAYED_COLUMNS: &[Spec] = &[
    col("api", 0),
    name("client.id", 1, Cut::End),
    col("delayed", 2),
    col("delay added", 3),
    col("p99 delayed", 4),
    col("p99 not", 5),
    col("requests", 6),
    col("held by replication", 7),
    col("replication added", 8),
];
const REPLICATION_COLUMNS: &[Spec] = &[
    col("follower", 0),
    name("thread", 1, Cut::Middle),
    col("stalled", 2),
    col("delay added", 3),
    col("fetches", 4),
    col("listener", 5),
];
const CONNECTION_COLUMNS: &[Spec] = &[
    name("thread", 0, Cut::Middle),
    col("stalled", 1),
    name("misses serving", 2, Cut::End),
    col("followers", 3),
    name("client.ids", 4, Cut::End),
    col("connections", 5),
    col("listener", 6),
];
const COLD_COLUMNS: &[Spec] = &[name("name", 0, Cut::End), col("misses", 1), col("miss time", 2), col("pages added", 3), col("bytes", 4)];

/// Priority of a column no spec names: after every named one.
const UNLISTED: u8 = u8::MAX;

struct Column {
    title: String,
    priority: u8,
    cut: Option<Cut>,
    right: bool,
}

struct GridRow {
    cells: Vec<String>,
    style: Style,
    /// One sort key per order after the summary's own (the view's `sorts()[1..]`).
    keys: Vec<u64>,
}

/// An evidence table laid out for the screen.
struct Grid {
    title: Option<&'static str>,
    columns: Vec<Column>,
    rows: Vec<GridRow>,
}

impl Grid {
    fn new(t: MeasurementTable, specs: &[Spec], titled: bool) -> Grid {
        let columns = t
            .header
            .iter()
            .enumerate()
            .map(|(i, title)| {
                let spec = specs.iter().find(|s| s.title == *title);
                Column { title: title.to_string(), priority: spec.map_or(UNLISTED, |s| s.priority), cut: spec.and_then(|s| s.cut), right: i >= t.numeric_from }
            })
            .collect();
        let rows = t.rows.into_iter().map(|cells| GridRow { cells, style: Style::new(), keys: Vec::new() }).collect();
        Grid { title: titled.then_some(t.title), columns, rows }
    }

    fn styled(mut self, styles: impl IntoIterator<Item = Style>) -> Grid {
        for (row, style) in self.rows.iter_mut().zip(styles) {
            row.style = style;
        }
        self
    }

    fn keyed(mut self, keys: impl IntoIterator<Item = Vec<u64>>) -> Grid {
        for (row, keys) in self.rows.iter_mut().zip(keys) {
            row.keys = keys;
        }
        self
    }

    /// Which columns fit in `width`, and how wide each is, in table order.
    fn layout(&self, width: usize) -> Vec<(usize, usize)> {
        let natural: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| self.rows.iter().map(|r| r.cells[i].width()).chain([c.title.width()]).max().unwrap_or(0))
            .collect();
        let least = |i: usize| if self.columns[i].cut.is_some() { natural[i].min(NAME_MIN) } else { natural[i] };
        let mut by_priority: Vec<usize> = (0..self.columns.len()).collect();
        by_priority.sort_by_key(|&i| self.columns[i].priority);
        let mut widths: Vec<Option<usize>> = vec![None; self.columns.len()];
        let mut used = 0;
        for &i in &by_priority {
            // One space between columns.
            let need = least(i) + usize::from(used > 0);
            if used + need <= width {
                widths[i] = Some(least(i));
                used += need;
            }
        }
        // The room left widens the names kept, the most important first.
        for &i in &by_priority {
            if let Some(w) = widths[i].as_mut().filter(|_| self.columns[i].cut.is_some()) {
                let more = (natural[i] - *w).min(width - used);
                *w += more;
                used += more;
            }
        }
        widths.into_iter().enumerate().filter_map(|(i, w)| w.map(|w| (i, w))).collect()
    }

    /// Title, header and rows, each line at most `width`; rows in order `sort` (0: as given,
    /// else largest first by key `sort - 1`).
    fn lines(mut self, width: usize, sort: usize) -> Vec<Line<'static>> {
        if let Some(key) = sort.checked_sub(1) {
            self.rows.sort_by_key(|r| std::cmp::Reverse(r.keys.get(key).copied().unwrap_or(0)));
        }
        let layout = self.layout(width);
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let mut out = Vec::new();
        if let Some(title) = self.title {
            out.push(fit(vec![Span::styled(title, bold)], width));
        }
        let titles: Vec<String> = self.columns.iter().map(|c| c.title.clone()).collect();
        out.push(self.line(&titles, &layout, bold.add_modifier(Modifier::UNDERLINED)));
        if self.rows.is_empty() {
            out.push(fit(vec![Span::styled("none yet", Style::new().fg(Color::Gray))], width));
        }
        for row in &self.rows {
            out.push(self.line(&row.cells, &layout, row.style));
        }
        out
    }

    fn line(&self, cells: &[String], layout: &[(usize, usize)], style: Style) -> Line<'static> {
        let mut text = String::new();
        for (k, &(i, w)) in layout.iter().enumerate() {
            if k > 0 {
                text.push(' ');
            }
            let column = &self.columns[i];
            let cell = cut(&cells[i], w, column.cut.unwrap_or(Cut::End));
            let pad = " ".repeat(w - cell.width());
            if column.right {
                text += &pad;
                text += &cell;
            } else {
                text += &cell;
                text += &pad;
            }
        }
        Line::from(Span::styled(text, style))
    }
}

/// The syscall table with a log2 bar per row (its header the bar's axis), hits in green and
/// misses in red.
fn syscall_grid(s: &Summary) -> Grid {
    let mut grid = Grid::new(table::syscall_table(s), SYSCALL_COLUMNS, false)
        .styled(s.rows.iter().map(|r| match r.cache {
            CacheResult::Hit => Style::new().fg(Color::Green),
            CacheResult::Miss => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            CacheResult::NoFileRead => Style::new(),
        }))
        .keyed(s.rows.iter().map(|r| vec![r.percentiles.p99_ns, r.count, r.hist.total_ns]));
    let priority = SYSCALL_COLUMNS.iter().find(|c| c.title == BAR).map_or(UNLISTED, |c| c.priority);
    grid.columns.push(Column { title: bar_axis(), priority, cut: None, right: false });
    for (row, r) in grid.rows.iter_mut().zip(&s.rows) {
        row.cells.push(log2_bar(&r.hist));
    }
    grid
}

/// Control characters (a client.id is the client's to choose) would move the cursor: shown as `?`.
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// `text` in at most `width` columns, `…` where it was cut.
fn cut(text: &str, width: usize, how: Cut) -> String {
    let text = printable(text);
    if text.width() <= width {
        return text;
    }
    if width == 0 {
        return String::new();
    }
    let take = |chars: &mut dyn Iterator<Item = char>, room: usize| {
        let mut used = 0;
        chars
            .take_while(|c| {
                used += c.width().unwrap_or(0);
                used <= room
            })
            .collect::<String>()
    };
    let room = width - 1;
    match how {
        Cut::End => take(&mut text.chars(), room) + "…",
        Cut::Middle => {
            let head = take(&mut text.chars(), room / 2);
            let tail: String = take(&mut text.chars().rev(), room - room / 2).chars().rev().collect();
            format!("{head}…{tail}")
        }
    }
}

/// Spans cut to `width` columns: a line that never wraps.
fn fit(spans: Vec<Span<'static>>, width: usize) -> Line<'static> {
    let mut room = width;
    let mut out = Vec::new();
    for span in spans {
        let text = printable(&span.content);
        if text.width() <= room {
            room -= text.width();
            out.push(Span::styled(text, span.style));
        } else {
            out.push(Span::styled(cut(&text, room, Cut::End), span.style));
            break;
        }
    }
    Line::from(out)
}

/// Prose in lines of at most `width` columns, broken at spaces (a word longer than a line is
/// cut into pieces).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in printable(text).split_whitespace() {
        let mut word = word.to_string();
        while word.width() > width {
            // Where the first character past the line starts (the first character whatever
            // its width, so that the loop moves on).
            let mut used = 0;
            let at = word.char_indices().find(|&(_, c)| {
                used += c.width().unwrap_or(0);
                used > width
            });
            let at = at.map_or(word.len(), |(i, _)| i).max(word.chars().next().map_or(0, char::len_utf8));
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            lines.push(word[..at].to_string());
            word = word[at..].to_string();
        }
        if !line.is_empty() && line.width() + 1 + word.width() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line += &word;
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// How long the view waits for a key before it looks for a new summary.
const POLL: Duration = Duration::from_millis(50);

/// The live view on a thread of its own, holding the terminal until [`Live::finish`].
pub struct Live {
    summaries: mpsc::Sender<Summary>,
    thread: JoinHandle<io::Result<()>>,
}

impl Live {
    /// Takes the terminal over. `on_quit` runs when the user asks to quit (`q`, or Ctrl-C, which
    /// raw mode turns into a key instead of a SIGINT).
    pub fn start(context: Context, on_quit: fn()) -> io::Result<Live> {
        enter()?;
        let (summaries, received) = mpsc::channel();
        let thread = std::thread::Builder::new().name("kstall-view".into()).spawn(move || view_loop(Tui::new(context), &received, on_quit));
        match thread {
            Ok(thread) => Ok(Live { summaries, thread }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }

    /// Shows this summary next; false when the view is gone (it failed).
    pub fn show(&self, summary: &Summary) -> bool {
        self.summaries.send(summary.clone()).is_ok()
    }

    /// Closes the view and puts the terminal back as it was.
    pub fn finish(self) -> io::Result<()> {
        drop(self.summaries);
        let shown = self.thread.join();
        restore();
        shown.unwrap_or_else(|_| Err(io::Error::other("the live view panicked")))
    }
}

/// The view's loop: new summaries, keys and resizes in, frames out, until the summaries end.
fn view_loop(mut tui: Tui, summaries: &mpsc::Receiver<Summary>, on_quit: fn()) -> io::Result<()> {
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    let mut changed = true;
    loop {
        loop {
            match summaries.try_recv() {
                Ok(summary) => {
                    tui.on_summary(summary);
                    changed = true;
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return Ok(()),
            }
        }
        // A panic elsewhere put the terminal back: draw nothing over the normal screen.
        if !HELD.load(Ordering::SeqCst) {
            return Ok(());
        }
        if changed {
            terminal.draw(|frame| tui.draw(frame))?;
            changed = false;
        }
        if event::poll(POLL)? {
            match event::read()? {
                Event::Key(key) if key.kind != KeyEventKind::Release => {
                    if tui.on_key(key) == Flow::Quit {
                        on_quit();
                    }
                    changed = true;
                }
                Event::Resize(..) => changed = true,
                _ => {}
            }
        }
    }
}

/// The view holds the terminal: raw mode, the alternate screen, stderr held back.
static HELD: AtomicBool = AtomicBool::new(false);
/// While held: the terminal's own stderr (a dup), and the memfd that fd 2 writes to instead.
static STDERR_SAVED: AtomicI32 = AtomicI32::new(-1);
static STDERR_HELD: AtomicI32 = AtomicI32::new(-1);

fn enter() -> io::Result<()> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // A panic anywhere puts the terminal back before its message is printed.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
    HELD.store(true, Ordering::SeqCst);
    let entered = hold_stderr().and_then(|()| enable_raw_mode()).and_then(|()| execute!(io::stdout(), EnterAlternateScreen, Hide));
    if entered.is_err() {
        restore();
    }
    entered
}

/// Leaves raw mode and the alternate screen, then writes out what went to stderr meanwhile.
/// Once, whoever calls first: the command at the end, or the panic hook.
fn restore() {
    if HELD.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
    }
    release_stderr();
}

/// While the view is up, a line on stderr (the session's notes, a warning) would land in the
/// middle of the frame and stay there, since ratatui redraws only the cells it changed: fd 2
/// goes to a memfd instead, written out by [`restore`].
fn hold_stderr() -> io::Result<()> {
    if !io::stderr().is_terminal() {
        return Ok(());
    }
    // SAFETY: fd syscalls on fds this function opens; on failure it closes what it opened.
    unsafe {
        let held = libc::memfd_create(c"kstall-stderr".as_ptr(), libc::MFD_CLOEXEC);
        if held < 0 {
            return Err(io::Error::last_os_error());
        }
        let saved = libc::fcntl(libc::STDERR_FILENO, libc::F_DUPFD_CLOEXEC, 0);
        if saved < 0 || libc::dup2(held, libc::STDERR_FILENO) < 0 {
            let e = io::Error::last_os_error();
            libc::close(held);
            if saved >= 0 {
                libc::close(saved);
            }
            return Err(e);
        }
        STDERR_SAVED.store(saved, Ordering::SeqCst);
        STDERR_HELD.store(held, Ordering::SeqCst);
    }
    Ok(())
}

fn release_stderr() {
    let (saved, held) = (STDERR_SAVED.swap(-1, Ordering::SeqCst), STDERR_HELD.swap(-1, Ordering::SeqCst));
    if saved < 0 {
        return;
    }
    // SAFETY: `saved` and `held` are the fds hold_stderr opened, owned from here on (the swaps
    // above hand them to one caller only).
    let mut file = unsafe {
        libc::dup2(saved, libc::STDERR_FILENO);
        libc::close(saved);
        std::fs::File::from_raw_fd(held)
    };
    let mut text = Vec::new();
    if file.seek(SeekFrom::Start(0)).and_then(|_| file.read_to_end(&mut text)).is_ok() {
        let _ = io::stderr().write_all(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kstall_common::Syscall;
    use kstall_core::{
        hist::{Percentiles, kernel_hist},
        listeners::{ListenerInfo, Plane, SecurityProtocol},
        requests::{ApiRow, ClientRow},
        roles::{Role, RoleSource},
        stalls::{MissTotals, RequestRef, Stall, ThreadStalls},
        finding::{Figures, Finding, MissStalls, SyncProducerFigures, TlsListeners},
        summary::{Row, RowKey, ThreadInfo, empty_summary},
    };
    use ratatui::backend::TestBackend;

    const MISS_TITLE: &str = "Produce requests wait behind page-cache misses of Fetch sendfile on network threads";
    const THREAD: &str = "data-plane-kafka-network-thread-1-PLAINTEXT-PLAINTEXT-0";

    fn ms(n: u64) -> u64 {
        n * 1_000_000
    }

    fn row(role: Role, listener: Option<&str>, syscall: Syscall, cache: CacheResult, latencies: &[u64]) -> Row {
        Row::new(RowKey { role, listener: listener.map(String::from), syscall, cache }, kernel_hist(latencies))
    }

    fn percentiles(p50_ns: u64, max_ns: u64) -> Percentiles {
        Percentiles { p50_ns, p90_ns: max_ns, p99_ns: max_ns, p999_ns: max_ns, max_ns }
    }


    /// The demo's case, by hand: a cold reader's sendfile misses on the PLAINTEXT network
    /// thread, Produce delayed behind them.
    fn cold_read() -> Summary {
        let mut s = empty_summary();
        s.broker.pid = 21140;
        s.elapsed_seconds = 30.3;
        s.roles.insert(Role::Network, vec![11, 12]);
        s.roles.insert(Role::RequestHandler, (20..28).collect());
        s.roles.insert(Role::Other, (30..90).collect());
        s.listeners.push(ListenerInfo {
            name: "PLAINTEXT".into(),
            security_protocol: Some(SecurityProtocol::Plaintext),
            plane: Plane::Data,
            encrypted: false,
            address: Some("127.0.0.1:39595".into()),
            network_threads: 1,
        });
        let hits: Vec<u64> = (0..1300).map(|i| 20_000 + i * 30).collect();
        s.rows = vec![
            row(Role::Network, Some("PLAINTEXT"), Syscall::Sendfile, CacheResult::Hit, &hits),
            row(Role::Network, Some("PLAINTEXT"), Syscall::Sendfile, CacheResult::Miss, &[ms(65); 405]),
            row(Role::Network, Some("PLAINTEXT"), Syscall::EpollWait, CacheResult::NoFileRead, &[ms(2); 3000]),
            row(Role::RequestHandler, None, Syscall::Fdatasync, CacheResult::NoFileRead, &[ms(3); 40]),
            row(Role::Other, None, Syscall::Pwrite64, CacheResult::NoFileRead, &[9_000; 500]),
        ];
        s.requests.apis = vec![
            ApiRow { api: "Produce", api_key: 0, count: 1260, rate_per_s: 41.6, total: percentiles(ms(1), ms(131)), broker: percentiles(ms(1), ms(69)), socket_wait: percentiles(58_000, ms(67)), socket_wait_unknown: 1, buckets: Vec::new() },
            ApiRow { api: "Fetch", api_key: 1, count: 400, rate_per_s: 13.2, total: percentiles(ms(65), ms(103)), broker: percentiles(ms(65), ms(103)), socket_wait: Percentiles::default(), socket_wait_unknown: 400, buckets: Vec::new() },
        ];
        s.requests.clients = ["sync-producer", "analytics-backfill"]
            .into_iter()
            .map(|client_id| ClientRow {
                client_id: client_id.into(),
                listener: Some("PLAINTEXT".into()),
                api: if client_id == "sync-producer" { "Produce" } else { "Fetch" },
                count: 700,
                rate_per_s: 23.1,
                total: percentiles(ms(1), ms(100)),
                connections: 1,
                max_in_flight: 1,
                mean_in_flight: 1.0,
                buckets: Vec::new(),
                sum_ns: 0,
            })
            .collect();
        s.threads.push(ThreadInfo { tid: 12, comm: "data-plane-kafk".into(), jvm_name: Some(THREAD.into()), role: Role::Network, role_source: RoleSource::JvmName, listener: None });
        let p = &mut s.stalls.produce;
        (p.requests, p.stalled_requests, p.stalled_by_miss) = (1260, 327, 327);
        (p.all, p.stalled, p.not_stalled) = (percentiles(ms(1), ms(147)), percentiles(ms(65), ms(147)), percentiles(ms(1), ms(7)));
        s.stalls.threshold_ns = ms(1);
        s.stalls.by_thread.push(ThreadStalls { tid: 12, listener: Some("PLAINTEXT".into()), cause: Cause::PageCacheMiss, stalls: 405, stall_ns: ms(25_100), top_reader: Some("analytics-backfill".into()), top_partition: Some("cold-0".into()) });
        s.stalls.worst = (0..10)
            .map(|i| Stall {
                tid: 12,
                listener: Some("PLAINTEXT".into()),
                syscall: Some(Syscall::Sendfile),
                cache: Some(CacheResult::Miss),
                cause: Cause::PageCacheMiss,
                start_ns: i,
                duration_ns: ms(103 - i),
                off_cpu_ns: 0,
                blocked_ns: ms(100),
                pages_added: 256,
                bytes: 1 << 20,
                file: None,
                topic_partition: Some("cold-0".into()),
                segment: Some("00000000000000000000.log".into()),
                file_range: None,
                request: Some(RequestRef { api: "Fetch", correlation_id: 5 + i as i32, client_id: "analytics-backfill".into() }),
                delayed_requests: 2 * i,
                delayed_replication: 0,
                delayed_produce: i,
                delayed_produce_ns: ms(i),
                delayed_produce_known: true,
            })
            .collect();
        let cold = |name: &str, stalls| MissTotals { name: name.into(), stalls, stall_ns: ms(stalls * 60), bytes: stalls << 20, pages_added: stalls * 256 };
        s.stalls.cold_partitions = vec![cold("cold-0", 404), cold("hot-0", 1)];
        s.stalls.cold_readers = vec![cold("analytics-backfill", 404)];
        s.findings = vec![
            Finding::new(Severity::Critical, Figures::ProduceStalledByPageCacheMiss(MissStalls { requests: 2000, stalled_by_miss: 404, ..Default::default() })),
            Finding::new(Severity::Warning, Figures::SynchronousProducer(SyncProducerFigures { client_id: "sync-producer".into(), ..Default::default() })),
            Finding::new(Severity::Warning, Figures::NetworkThreadsSaturated { busy_share: 0.75, traced_seconds: 30.3 }),
            Finding::new(Severity::Info, Figures::TlsListener(TlsListeners { listeners: Vec::new(), tls_connections: 1 })),
            Finding::new(Severity::Info, Figures::EventsLost { events: 3 }),
        ];
        s
    }

    fn tui(summary: Summary) -> Tui {
        let mut tui = Tui::new(Context { broker_pid: summary.broker.pid, kafka_version: Some("4.4.0".into()) });
        tui.on_summary(summary);
        tui
    }

    /// The frame as text, one string per row, as a terminal of this size shows it.
    fn render(tui: &mut Tui, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| tui.draw(frame)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..height).map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect::<String>().trim_end().to_string()).collect()
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::from(code)
    }

    fn row_of<'a>(screen: &'a [String], needle: &str) -> Option<(usize, &'a String)> {
        screen.iter().enumerate().find(|(_, l)| l.contains(needle))
    }

    /// The first row that starts with `prefix`: a table's row by its first cell.
    fn starting<'a>(screen: &'a [String], prefix: &str) -> (usize, &'a String) {
        screen.iter().enumerate().find(|(_, l)| l.starts_with(prefix)).unwrap_or_else(|| panic!("no row starts with {prefix:?}: {screen:#?}"))
    }

    /// Every view at 80x24 and 200x50: its lines fit (the frame is built to the width, so a
    /// line cut by the terminal would be a line this code let overflow), the critical finding
    /// is on the first screen right under the header, and the footer is the last line.
    #[test]
    fn every_view_fits_80x24_and_200x50() {
        for (width, height) in [(80u16, 24u16), (200, 50)] {
            let mut t = tui(cold_read());
            for view in View::ALL {
                t.switch(view);
                let lines = t.screen(width as usize, height as usize);
                assert_eq!(lines.len(), height as usize, "{view:?} at {width}x{height}");
                for line in &lines {
                    assert!(line.width() <= width as usize, "{view:?} at {width}: {} columns: {line}", line.width());
                }
                let screen = render(&mut t, width, height);
                let (at, line) = row_of(&screen, "CRITICAL").unwrap_or_else(|| panic!("{view:?}: {screen:#?}"));
                assert_eq!(at, 4, "the first finding comes right after the 4 header lines: {screen:#?}");
                assert!(line.contains(&MISS_TITLE[..60]), "{line}");
                assert!(screen[height as usize - 1].contains("q quit"), "{view:?}: footer {:?}", screen[height as usize - 1]);
            }
        }
    }

    #[test]
    fn header_names_the_broker_its_listeners_and_threads() {
        let screen = render(&mut tui(cold_read()), 200, 50);
        assert!(screen[0].starts_with(" LIVE  broker pid 21140 (kafka.Kafka), Kafka 4.4.0, traced 30.3s"), "{}", screen[0]);
        assert!(screen[1].contains("network 2, request-handler 8, other 60"), "{}", screen[1]);
        assert!(screen[2].contains("PLAINTEXT (data plane, 127.0.0.1:39595, 1 network thread)"), "{}", screen[2]);
        assert!(screen[3].contains("evidence complete") && screen[3].contains("lost none"), "{}", screen[3]);
    }

    /// At 80x24 only 4 findings fit: 3 and a line that says where the rest are.
    #[test]
    fn findings_past_a_sixth_of_the_screen_are_counted() {
        let screen = render(&mut tui(cold_read()), 80, 24);
        assert!(screen[6].contains("network_threads_saturated") || screen[6].contains("Network threads are busy"), "{screen:#?}");
        assert_eq!(screen[7], "... 2 more findings: press 6");
        let tall = render(&mut tui(cold_read()), 200, 50);
        assert!(row_of(&tall, "records were lost").is_some() && row_of(&tall, "more finding").is_none(), "{tall:#?}");
    }

    /// The syscall table keeps its columns by priority: at 80 the bar and p50 stay, p99.9 and
    /// bytes go; at 200 everything is there.
    #[test]
    fn narrow_screens_drop_low_priority_columns_not_lines() {
        let narrow = render(&mut tui(cold_read()), 80, 24);
        let (_, header) = starting(&narrow, "role");
        for kept in ["role", "syscall", "cache", "calls", "p50", "p99", "1us"] {
            assert!(header.contains(kept), "{kept} at 80: {header}");
        }
        for dropped in ["p99.9", "bytes", "pages added"] {
            assert!(!header.contains(dropped), "{dropped} at 80: {header}");
        }
        let (_, miss) = row_of(&narrow, " miss ").unwrap_or_else(|| panic!("{narrow:#?}"));
        assert!(miss.contains("network PLA") && miss.contains("405") && miss.contains('█'), "{miss}");
        let wide = render(&mut tui(cold_read()), 200, 50);
        let (_, header) = starting(&wide, "role");
        for all in ["p90", "p99.9", "max", "bytes", "pages added"] {
            assert!(header.contains(all), "{all} at 200: {header}");
        }
        assert!(row_of(&wide, "network PLAINTEXT sendfile").is_some(), "{wide:#?}");
    }

    #[test]
    fn keys_switch_views() {
        let mut t = tui(cold_read());
        assert!(row_of(&render(&mut t, 80, 24), "sendfile").is_some());
        assert_eq!(t.on_key(key(KeyCode::Char('5'))), Flow::Go);
        let cold = render(&mut t, 80, 24);
        assert!(row_of(&cold, "cold-0").is_some() && row_of(&cold, "analytics-backfill").is_some(), "{cold:#?}");
        assert!(row_of(&cold, "epoll_wait").is_none(), "{cold:#?}");
        t.on_key(key(KeyCode::Tab));
        assert_eq!(t.view, View::Findings);
        t.on_key(key(KeyCode::Tab));
        assert_eq!(t.view, View::Syscalls);
        t.on_key(key(KeyCode::BackTab));
        assert_eq!(t.view, View::Findings);
        let findings = render(&mut t, 80, 24);
        assert!(row_of(&findings, "  fix: A network thread serves Fetch with sendfile").is_some(), "{findings:#?}");
        t.on_key(key(KeyCode::Char('4')));
        let stalls = render(&mut t, 80, 24);
        let (_, worst) = row_of(&stalls, "103ms").unwrap_or_else(|| panic!("{stalls:#?}"));
        assert!(worst.contains("page-cache miss") && worst.contains("Fetch analytics"), "{worst}");
        t.on_key(key(KeyCode::End));
        let end = render(&mut t, 80, 24);
        let (_, thread) = starting(&end, "data-plane-");
        assert!(thread.contains('…') && thread.contains("-PLAINTEXT-0 ") && thread.contains("page-cache miss"), "both ends of the name: {thread}");
        t.on_key(key(KeyCode::Char('?')));
        assert!(row_of(&render(&mut t, 80, 24), "pause the display").is_some());
        t.on_key(key(KeyCode::Esc));
        assert!(row_of(&render(&mut t, 80, 24), "pause the display").is_none());
    }

    #[test]
    fn q_and_ctrl_c_quit_and_say_so() {
        let mut t = tui(cold_read());
        assert_eq!(t.on_key(key(KeyCode::Char('x'))), Flow::Go);
        assert_eq!(t.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Flow::Quit);
        assert!(render(&mut t, 80, 24)[0].starts_with(" STOPPING "));
        assert_eq!(tui(cold_read()).on_key(key(KeyCode::Char('q'))), Flow::Quit);
    }

    /// `s` orders the syscall rows by p99: the misses first.
    #[test]
    fn sort_key_orders_rows_largest_first() {
        let mut t = tui(cold_read());
        let first_row = |t: &mut Tui| {
            let screen = render(t, 200, 50);
            let (at, _) = starting(&screen, "role");
            screen[at + 1].clone()
        };
        assert!(first_row(&mut t).contains("hit"), "the summary's order first");
        t.on_key(key(KeyCode::Char('s')));
        assert!(render(&mut t, 200, 50)[49].contains("sort: p99"));
        assert!(first_row(&mut t).contains("miss"), "{}", first_row(&mut t));
        t.on_key(key(KeyCode::Char('s')));
        assert!(first_row(&mut t).contains("epoll_wait"), "by calls: {}", first_row(&mut t));
    }

    #[test]
    fn pause_holds_the_summary_shown_until_resumed() {
        let mut t = tui(cold_read());
        t.on_key(key(KeyCode::Char('p')));
        let mut newer = cold_read();
        newer.elapsed_seconds = 31.3;
        t.on_summary(newer);
        let paused = render(&mut t, 80, 24);
        assert!(paused[0].starts_with(" PAUSED ") && paused[0].contains("traced 30.3s"), "{}", paused[0]);
        t.on_key(key(KeyCode::Char('p')));
        assert!(render(&mut t, 80, 24)[0].contains("traced 31.3s"));
    }

    #[test]
    fn scrolling_stops_at_the_last_line() {
        let mut t = tui(cold_read());
        t.on_key(key(KeyCode::Char('6')));
        render(&mut t, 80, 24);
        assert!(t.max_scroll > 0, "the findings in full are longer than a screen");
        t.on_key(key(KeyCode::End));
        assert_eq!(t.scroll, t.max_scroll);
        t.on_key(key(KeyCode::Down));
        assert_eq!(t.scroll, t.max_scroll);
        t.on_key(key(KeyCode::PageUp));
        assert_eq!(t.scroll, t.max_scroll.saturating_sub(t.page));
    }

    /// Before the first summary: a line saying what kstall waits for, and the footer.
    #[test]
    fn waiting_for_the_first_interval() {
        let mut t = Tui::new(Context { broker_pid: 7, kafka_version: None });
        let screen = render(&mut t, 80, 24);
        assert!(screen[0].contains("tracing broker pid 7"), "{}", screen[0]);
        assert!(screen[23].contains("q quit"));
    }

    /// An empty set reads `-`, not `0ns`.
    #[test]
    fn empty_sets_show_a_dash() {
        let mut s = cold_read();
        s.stalls.produce.stalled_requests = 0;
        s.stalls.produce.stalled_by_miss = 0;
        let mut t = tui(s);
        t.on_key(key(KeyCode::Char('2')));
        let screen = render(&mut t, 80, 24);
        let (_, stalled) = starting(&screen, "stalled");
        assert_eq!(stalled.split_whitespace().collect::<Vec<_>>(), ["stalled", "0", "-", "-", "-", "-"]);
        let (_, fetch) = starting(&screen, "Fetch");
        assert!(fetch.trim_end().ends_with('-'), "Fetch has no socket wait: {fetch}");
    }

    #[test]
    fn every_spec_names_a_column_of_its_table() {
        let s = cold_read();
        let tables = [
            (table::syscall_table(&s), SYSCALL_COLUMNS),
            (table::api_table(&s), API_COLUMNS),
            (table::client_table(&s), CLIENT_COLUMNS),
            (table::controller_table(&{
                let mut s = cold_read();
                s.listeners[0].plane = Plane::Controller;
                s
            })
            .unwrap(), CONTROLLER_COLUMNS),
            (table::produce_table(&s), PRODUCE_COLUMNS),
            (table::worst_stalls_table(&s), WORST_STALL_COLUMNS),
            (table::thread_stalls_table(&s), THREAD_STALL_COLUMNS),
            (table::delayed_table(&s), DELAYED_COLUMNS),
            (table::replication_table(&s), REPLICATION_COLUMNS),
            (table::thread_connections_table(&s), CONNECTION_COLUMNS),
            (table::cold_tables(&s).into_iter().next().unwrap(), COLD_COLUMNS),
        ];
        for (t, specs) in tables {
            for spec in specs.iter().filter(|c| c.title != BAR) {
                assert!(t.header.contains(&spec.title), "{}: no column {}", t.title, spec.title);
            }
            assert_eq!(specs.len(), t.header.len() + usize::from(specs.iter().any(|c| c.title == BAR)), "{}: a column without a priority", t.title);
        }
    }

    #[test]
    fn names_are_cut_with_an_ellipsis() {
        assert_eq!(cut(THREAD, 12, Cut::Middle), "data-…TEXT-0");
        assert_eq!(cut("analytics-backfill", 12, Cut::End), "analytics-b…");
        assert_eq!(cut("short", 12, Cut::End), "short");
        assert_eq!(cut("日本語のクライアント", 7, Cut::End), "日本語…");
        assert_eq!(cut("evil\x1b[2Jid", 20, Cut::End), "evil?[2Jid");
        for line in wrap(&format!("{} {THREAD} end", "word ".repeat(30)), 20) {
            assert!(line.width() <= 20, "{line}");
        }
        assert_eq!(wrap("a bb ccc", 4), ["a bb", "ccc"]);
        assert_eq!(wrap("abcdef", 4), ["abcd", "ef"]);
        assert_eq!(wrap("日本", 1), ["日", "本"]);
    }
}
