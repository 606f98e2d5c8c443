//! The commands: what each takes from the command line and where its output goes. Each runs a
//! tracing session (or, for `check`, only its attach step) and hands the analysis core's
//! summary to a presenter.
pub mod check;
pub mod export;
pub mod report;
pub mod watch;

/// Writes `text` to stdout; false when nobody reads it any more. A reader that went away
/// (`kstall report | head`) ends the output quietly, as with other Unix tools, instead of a
/// panic or an error; a stream of output (`watch --format jsonl`) stops there.
pub fn print_stdout(text: &str) -> std::io::Result<bool> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}
