//! The commands: what each takes from the command line and where its output goes. Each runs a
//! tracing session (or, for `check`, only its attach step) and hands the analysis core's
//! summary to a presenter.
pub mod check;
pub mod export;
pub mod report;
pub mod watch;
