//! The screen composed from the state and the summary: the header (what is traced and how
//! well), the findings, the tabs, the current view's body (scrolled), the footer, and the help
//! over them. Every line is built to the width: nothing here may leave a line to wrap.
use kstall_common::CacheResult;
use kstall_core::{
    listeners,
    stalls::Cause,
    finding::Severity,
    summary::Summary,
    units::{duration, plural},
};
use ratatui::{
    Frame,
    layout::Rect,
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Clear, Paragraph},
};

use super::{
    View,
    columns::SYSCALL_COLUMNS,
    grid::{Column, Grid, UNLISTED},
    state::Tui,
    text::{fit, wrap},
};
use crate::present::table::{self, Col, bar_axis, log2_bar};

impl Tui {
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
    pub(super) fn screen(&mut self, width: usize, height: usize) -> Vec<Line<'static>> {
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

    pub(super) fn header(&self, s: &Summary, width: usize) -> Vec<Line<'static>> {
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
        let (lost, lost_style) = if lost.records + calls_lost + lost.probe_runs_skipped + lost.histogram_entries_unread == 0 {
            ("none".to_string(), Style::new())
        } else {
            let mut text = format!("{} records (ring buffer full), {} calls (maps full)", lost.records, calls_lost);
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

    pub(super) fn tabs(&self, width: usize) -> Line<'static> {
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

    pub(super) fn footer(&self, width: usize) -> Line<'static> {
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
    pub(super) fn body(&self, s: &Summary, width: usize) -> Vec<Line<'static>> {
        let sort = self.sort[self.view as usize];
        let mut out = Vec::new();
        match self.view {
            View::Syscalls => out.extend(syscall_grid(s).lines(width, sort)),
            View::Requests => {
                if s.requests.apis.is_empty() {
                    out.push(fit(vec![Span::raw(table::no_requests_line(s))], width));
                } else {
                    let keys = s.requests.apis.iter().map(|a| vec![a.total.p99_ns, a.count]);
                    out.extend(Grid::new(table::api_table(s), false).keyed(keys).lines(width, sort));
                }
                if s.stalls.produce.requests > 0 {
                    out.push(Line::default());
                    out.extend(Grid::new(table::produce_table(s), true).lines(width, 0));
                }
                if let Some(t) = table::controller_table(s) {
                    out.push(Line::default());
                    out.extend(Grid::new(t, true).lines(width, 0));
                }
            }
            View::Clients => {
                let keys = s.requests.clients.iter().map(|c| vec![c.total.p99_ns, c.count]);
                out.extend(Grid::new(table::client_table(s), false).keyed(keys).lines(width, sort));
            }
            View::Stalls => {
                out.push(fit(vec![Span::raw(table::stalls_line(&s.stalls))], width));
                out.push(Line::default());
                let worst = s.stalls.worst.iter();
                out.extend(
                    Grid::new(table::worst_stalls_table(s), true)
                        .styled(worst.clone().map(|w| cause_style(w.cause)))
                        .keyed(worst.map(|w| vec![w.delayed_produce_ns]))
                        .lines(width, sort),
                );
                out.push(Line::default());
                let by_thread = s.stalls.by_thread.iter().map(|t| cause_style(t.cause));
                out.extend(Grid::new(table::thread_stalls_table(s), true).styled(by_thread).lines(width, 0));
                for t in [table::delayed_table(s), table::replication_table(s), table::thread_connections_table(s)] {
                    if !t.rows.is_empty() {
                        out.push(Line::default());
                        out.extend(Grid::new(t, true).lines(width, 0));
                    }
                }
            }
            View::Cold => {
                let [partitions, readers] = table::cold_tables(s);
                for (t, rows) in [(partitions, &s.stalls.cold_partitions), (readers, &s.stalls.cold_readers)] {
                    if !out.is_empty() {
                        out.push(Line::default());
                    }
                    out.extend(Grid::new(t, true).keyed(rows.iter().map(|m| vec![m.stalls])).lines(width, sort));
                }
            }
            View::Findings => {
                for f in &s.findings {
                    let w = crate::present::words::words(f);
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
pub(super) fn findings_lines(s: &Summary, width: usize, max: usize) -> Vec<Line<'static>> {
    let n = s.findings.len();
    if n == 0 {
        return vec![fit(vec![Span::styled("no findings yet", Style::new().fg(Color::Gray))], width)];
    }
    let shown = if n <= max { n } else { max - 1 };
    let mut lines: Vec<Line> = s
        .findings
        .iter()
        .take(shown)
        .map(|f| fit(vec![Span::styled(format!("{:<LABEL_WIDTH$} ", f.severity.label()), severity_style(f.severity)), Span::raw(crate::present::words::words(f).title)], width))
        .collect();
    if shown < n {
        let more = n - shown;
        lines.push(fit(vec![Span::styled(format!("... {more} more finding{}: press 6", plural(more as u64)), Style::new().fg(Color::Gray))], width));
    }
    lines
}

/// Width of the widest severity label, `CRITICAL`.
pub(super) const LABEL_WIDTH: usize = 8;

pub(super) fn severity_style(severity: Severity) -> Style {
    let colour = match severity {
        Severity::Critical => Color::Red,
        Severity::Warning => Color::Yellow,
        Severity::Info => Color::Cyan,
    };
    Style::new().fg(colour).add_modifier(Modifier::BOLD)
}

pub(super) fn status_style(colour: Color) -> Style {
    Style::new().fg(Color::Black).bg(colour).add_modifier(Modifier::BOLD)
}

/// Page-cache misses in red, as their syscall rows; other stalls in yellow.
pub(super) fn cause_style(cause: Cause) -> Style {
    if cause == Cause::PageCacheMiss { Style::new().fg(Color::Red) } else { Style::new().fg(Color::Yellow) }
}

pub(super) const HELP_WIDTH: u16 = 78;
/// Keys and what they do; each line fits the box at 80 columns.
pub(super) const HELP: [(&str, &str); 7] = [
    ("1-6 Tab <- ->", "switch view (the tabs above the table)"),
    ("s", "sort the view's tables by the next key (see the footer)"),
    ("p space", "pause the display (tracing goes on); again to resume"),
    ("Up Down j k", "scroll a line"),
    ("PgUp PgDn g G", "scroll a page; to the top, to the bottom"),
    ("? Esc", "open, close this help"),
    ("q Ctrl-C", "quit: the probes detach, the findings are printed"),
];


/// The syscall table with a log2 bar per row (its header the bar's axis), hits in green and
/// misses in red.
pub(super) fn syscall_grid(s: &Summary) -> Grid {
    let mut grid = Grid::new(table::syscall_table(s), false)
        .styled(s.rows.iter().map(|r| match r.cache {
            CacheResult::Hit => Style::new().fg(Color::Green),
            CacheResult::Miss => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            CacheResult::NoFileRead => Style::new(),
        }))
        .keyed(s.rows.iter().map(|r| vec![r.percentiles.p99_ns, r.count, r.hist.total_ns]));
    let priority = SYSCALL_COLUMNS.iter().find(|c| c.col == Col::Bar).map_or(UNLISTED, |c| c.priority);
    grid.columns.push(Column { title: bar_axis(), priority, cut: None, right: false });
    for (row, r) in grid.rows.iter_mut().zip(&s.rows) {
        row.cells.push(log2_bar(&r.hist));
    }
    grid
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::present::tui::{
        Context,
        fixture::{MISS_TITLE, cold_read, key, render, row_of, starting, tui},
    };
    use crossterm::event::KeyCode;

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
}
