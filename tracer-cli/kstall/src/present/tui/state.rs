//! The live view's state, and what a key does to it: the view shown, each view's order, the
//! scroll position, pause and help. Drawing it is `screen`'s.
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use kstall_core::summary::Summary;

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
    pub(super) const fn sorts(self) -> &'static [&'static str] {
        match self {
            View::Syscalls => &["role", "p99", "calls", "time"],
            View::Requests => &["api", "p99", "requests"],
            View::Clients => &["busiest", "p99", "requests"],
            View::Stalls => &["took", "delay added"],
            View::Cold => &["miss time", "misses"],
            View::Findings => &["severity"],
        }
    }

    pub(super) fn step(self, by: isize) -> View {
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
    pub(super) context: Context,
    pub(super) shown: Option<Summary>,
    /// The newest summary, held while paused.
    pub(super) held: Option<Summary>,
    pub(super) view: View,
    /// Each view's order: an index into its `sorts()`.
    pub(super) sort: [usize; View::ALL.len()],
    /// Body lines scrolled past; at most `max_scroll`, which the last frame measured, as it did
    /// `page` (the body's height).
    pub(super) scroll: usize,
    pub(super) max_scroll: usize,
    pub(super) page: usize,
    pub(super) paused: bool,
    pub(super) help: bool,
    pub(super) stopping: bool,
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

    pub(super) fn switch(&mut self, view: View) {
        if view != self.view {
            self.view = view;
            self.scroll = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::present::tui::fixture::{cold_read, key, render, row_of, starting, tui};

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
}
