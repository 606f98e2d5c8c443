//! `kstall watch`: a live table over one tracing session, then the final table or JSON.
use std::{
    io::{IsTerminal, Write},
    time::Duration,
};

use anyhow::Result;

use kstall_core::summary::Summary;

use super::print_stdout;
use crate::{
    present::{json, table},
    session::{Session, SessionOptions},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

pub struct WatchOptions {
    pub pid: Option<u32>,
    pub interval: Duration,
    pub duration: Option<Duration>,
    pub format: Format,
    pub stall_threshold: Duration,
}

pub async fn run(opts: WatchOptions) -> Result<()> {
    let session = Session::start(SessionOptions {
        pid: opts.pid,
        interval: opts.interval,
        duration: opts.duration,
        stall_threshold: opts.stall_threshold,
    })?;
    let live_table = opts.format == Format::Table && std::io::stdout().is_terminal();
    let ended = session.run(|summary| {
        if live_table {
            draw(summary);
        }
    })
    .await?;
    let summary = ended.summary;
    match opts.format {
        // The final table replaces the live one on screen.
        Format::Table if live_table => draw(&summary),
        Format::Table => print_stdout(&table::table(&summary))?,
        Format::Json => print_stdout(&(json::summary(&summary) + "\n"))?,
    }
    Ok(())
}

fn draw(summary: &Summary) {
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "\x1b[H\x1b[2J{}", table::table(summary));
    let _ = out.flush();
}
