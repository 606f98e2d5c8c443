//! The I/O shell around [`Tui`]: owns the terminal (raw mode, alternate screen, stderr held
//! back), reads keys and resizes on a thread of its own, and puts the terminal back on exit,
//! on a panic (hook) and when the session ends.
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
    event::{self, Event, KeyEventKind},
    execute,
    terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
};
use kstall_core::summary::Summary;
use ratatui::{Terminal, backend::CrosstermBackend};

use super::{Context, Flow, Tui};

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
