//! The commands: what each takes from the command line and where its output goes. Each runs a
//! tracing session (or, for `check`, only its attach step) and hands the analysis core's
//! summary to a presenter.
pub mod check;
pub mod export;
pub mod report;
pub mod watch;

/// Writes `text` to stdout. A reader that went away (`kstall report | head`) ends the output
/// quietly, as with other Unix tools, instead of a panic or an error.
pub fn print_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
