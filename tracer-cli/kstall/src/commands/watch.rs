//! `kstall watch`: one tracing session. On a terminal, the full-screen live view, then the
//! findings on the normal screen; else the final table or JSON, or one JSON line per interval.
use std::io::IsTerminal;

use anyhow::{Context, Result};

use super::print_stdout;
use crate::{
    present::{json, table, tui},
    session::{Session, SessionOptions, discover},
    stop,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The live full-screen view on a terminal; the final table when stdout is not one.
    Table,
    /// The final summary as JSON.
    Json,
    /// One compact JSON summary per interval, then the final one (JSON Lines).
    Jsonl,
}

pub struct WatchOptions {
    pub session: SessionOptions,
    pub format: Format,
}

pub async fn run(opts: WatchOptions) -> Result<()> {
    let session = Session::start(opts.session)?;
    match opts.format {
        Format::Table if std::io::stdout().is_terminal() => live(session).await,
        Format::Table | Format::Json => {
            let summary = session.run(|_| {}).await?.summary;
            let text = if opts.format == Format::Json { json::summary(&summary) + "\n" } else { table::table(&summary) };
            print_stdout(&text)?;
            Ok(())
        }
        Format::Jsonl => json_lines(session).await,
    }
}

/// The full-screen view while tracing; then, the terminal given back, the verdict stays on it.
async fn live(session: Session) -> Result<()> {
    let context = tui::Context { broker_pid: session.broker.pid, kafka_version: discover::kafka_version(&session.broker) };
    // `q` stops the session as Ctrl-C would: the probes detach and the final summary is taken.
    let view = tui::Live::start(context, stop::request).context("cannot take over the terminal for the live view")?;
    // A view that failed cannot show the trace: end it rather than trace unseen.
    let ended = session
        .run(|summary| {
            if !view.show(summary) {
                stop::request();
            }
        })
        .await;
    let closed = view.finish();
    let summary = ended?.summary;
    closed.context("the live view failed")?;
    print_stdout(&(table::title_line(&summary) + &table::findings_section(&summary)))?;
    Ok(())
}

/// One JSON line per interval and the final one. A reader that went away (`| head -3`) ends
/// the trace as Ctrl-C would, quietly.
async fn json_lines(session: Session) -> Result<()> {
    let mut reading = Ok(true);
    let ended = session
        .run(|summary| {
            if matches!(reading, Ok(true)) {
                reading = print_stdout(&json::summary_line(summary));
                if !matches!(reading, Ok(true)) {
                    stop::request();
                }
            }
        })
        .await?;
    if reading? {
        print_stdout(&json::summary_line(&ended.summary))?;
    }
    Ok(())
}
