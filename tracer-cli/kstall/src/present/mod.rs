//! Presenters: views over the analysis core's summary (terminal tables, the live full-screen
//! view, JSON, Markdown, HTML with SVG charts, Prometheus). Nothing here traces or reads /proc.
pub mod check;
pub mod html;
pub mod json;
pub mod markdown;
pub mod prometheus;
#[cfg(test)]
mod replay;
pub mod table;
pub mod tui;
pub mod words;
