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
//!
//! The pieces: `state` (what the user asked for: view, order, scroll, pause), `screen` (the
//! summary composed into lines, header to footer), `columns` (which columns each table keeps
//! first), `grid` (a table fitted to the width by those priorities), `text` (cutting and
//! wrapping text to a width, never past it), `terminal` (the shell around the terminal).
mod columns;
#[cfg(test)]
mod fixture;
mod grid;
mod screen;
mod state;
mod terminal;
mod text;

pub use state::{Context, Flow, Tui, View};
pub use terminal::Live;
