//! `kstall report`: one tracing session, written as a report that explains the broker's
//! latency: findings first, then the measurements, then the context it was recorded in. HTML (one
//! self-contained file with charts), Markdown, or JSON (schema: docs/report.schema.json).
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use kstall_core::report::Report;

use super::print_stdout;
use crate::{
    present::{html, json, markdown::markdown},
    session::{Session, SessionOptions},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Html,
    Markdown,
    Json,
}

impl Format {
    /// From the output file's extension.
    pub fn of(path: &Path) -> Result<Format> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("html" | "htm") => Ok(Format::Html),
            Some("md" | "markdown") => Ok(Format::Markdown),
            Some("json") => Ok(Format::Json),
            _ => bail!("cannot tell the report format of {}: name it .html, .md or .json", path.display()),
        }
    }
}

pub struct ReportOptions {
    pub session: SessionOptions,
    /// Files to write, format by extension; none: Markdown on stdout.
    pub out: Vec<PathBuf>,
}

pub async fn run(opts: ReportOptions) -> Result<()> {
    // Check the outputs before tracing for a minute.
    let targets: Vec<(PathBuf, Format)> =
        opts.out.iter().map(|p| Format::of(p).map(|f| (p.clone(), f))).collect::<Result<_>>()?;
    for (path, _) in &targets {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
            bail!("cannot write {}: no directory {}", path.display(), dir.display());
        }
    }
    let requested = opts.session.duration;
    let session = Session::start(opts.session)?;
    let ended = session.run(|_| {}).await?;
    let report = Report::new(ended.summary, ended.timeline, ended.host, ended.broker_exited, requested.map(|d| d.as_secs_f64()));
    if targets.is_empty() {
        print_stdout(&markdown(&report))?;
    }
    for (path, format) in targets {
        let text = match format {
            Format::Html => html::report(&report),
            Format::Markdown => markdown(&report),
            Format::Json => json::report(&report),
        };
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("kstall: wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_from_extension() {
        assert_eq!(Format::of(Path::new("r.html")).unwrap(), Format::Html);
        assert_eq!(Format::of(Path::new("/tmp/r.md")).unwrap(), Format::Markdown);
        assert_eq!(Format::of(Path::new("r.json")).unwrap(), Format::Json);
        assert!(Format::of(Path::new("r.pdf")).unwrap_err().to_string().contains(".html, .md or .json"));
    }
}
