//! `kstall check`: whether kstall can run on this kernel and what it will see, without touching
//! any broker (the session's attach step, pointed at no process; see `session::check_kernel`).
use anyhow::{Result, bail};

use super::print_stdout;
use crate::{present, session};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn run(format: Format, hold: bool) -> Result<()> {
    let check = session::check_kernel(hold);
    let text = match format {
        Format::Text => present::check::text(&check),
        Format::Json => serde_json::to_string_pretty(&check)? + "\n",
    };
    print_stdout(&text)?;
    if let Some(e) = check.error {
        bail!("{e}");
    }
    Ok(())
}
