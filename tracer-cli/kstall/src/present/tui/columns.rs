//! Which columns each evidence table keeps first when the screen is narrow: its [`Spec`]s, in
//! order of priority. At 80 columns a table shows what answers "what stalled, and what did it
//! delay" before the rest.
use super::{
    grid::{Spec, col, name},
    text::Cut,
};

/// At 80 columns: syscall, cache, calls, p99, role, the bar, p50.
pub(super) const SYSCALL_COLUMNS: &[Spec] = &[
    col("syscall", 0),
    col("cache", 1),
    col("calls", 2),
    col("p99", 3),
    name("role", 4, Cut::End),
    col(BAR, 5),
    col("p50", 6),
    col("max", 7),
    col("bytes", 8),
    col("p90", 9),
    col("p99.9", 10),
    col("pages added", 11),
];
/// The log2 bar's column, added to the syscall table here (the text table draws it too).
pub(super) const BAR: &str = "log2 histogram";
pub(super) const API_COLUMNS: &[Spec] = &[
    col("api", 0),
    col("requests", 1),
    col("p99", 2),
    col("p50", 3),
    col("max", 4),
    col("per s", 5),
    col("p99.9", 6),
    col("socket wait p99", 7),
    col("broker p99", 8),
    col("broker p50", 9),
    col("socket wait p50", 10),
];
pub(super) const CLIENT_COLUMNS: &[Spec] = &[
    name("client.id", 0, Cut::End),
    col("api", 1),
    col("requests", 2),
    col("p99", 3),
    col("p50", 4),
    col("max", 5),
    col("listener", 6),
    col("in flight max", 7),
    col("per s", 8),
    col("connections", 9),
    col("in flight mean", 10),
];
pub(super) const CONTROLLER_COLUMNS: &[Spec] = &[
    col("api", 0),
    col("listener", 1),
    col("requests", 2),
    col("p99", 3),
    col("p50", 4),
    col("max", 5),
    col("per s", 6),
    col("broker p99", 7),
    col("broker p50", 8),
];
pub(super) const PRODUCE_COLUMNS: &[Spec] = &[col("Produce", 0), col("requests", 1), col("p99", 2), col("p50", 3), col("max", 4), col("p99.9", 5)];
/// At 80 columns: how long, why, the request served, the Produce delayed, the file, the delay.
pub(super) const WORST_STALL_COLUMNS: &[Spec] = &[
    col("took", 0),
    col("cause", 1),
    name("serving", 2, Cut::End),
    col("delayed Produce", 3),
    name("file", 4, Cut::End),
    col("delay added", 5),
    col("call", 6),
    name("thread", 7, Cut::Middle),
    col("listener", 8),
];
pub(super) const THREAD_STALL_COLUMNS: &[Spec] = &[name("thread", 0, Cut::Middle), col("cause", 1), col("stalls", 2), col("stall time", 3), col("listener", 4)];
/// At 80 columns: who, which API, how many delayed and by how much.
pub(super) const DELAYED_COLUMNS: &[Spec] = &[
    col("api", 0),
    name("client.id", 1, Cut::End),
    col("delayed", 2),
    col("delay added", 3),
    col("p99 delayed", 4),
    col("p99 not", 5),
    col("requests", 6),
    col("held by replication", 7),
    col("replication added", 8),
];
pub(super) const REPLICATION_COLUMNS: &[Spec] = &[
    col("follower", 0),
    name("thread", 1, Cut::Middle),
    col("stalled", 2),
    col("delay added", 3),
    col("fetches", 4),
    col("listener", 5),
];
pub(super) const CONNECTION_COLUMNS: &[Spec] = &[
    name("thread", 0, Cut::Middle),
    col("stalled", 1),
    name("misses serving", 2, Cut::End),
    col("followers", 3),
    name("client.ids", 4, Cut::End),
    col("connections", 5),
    col("listener", 6),
];
pub(super) const COLD_COLUMNS: &[Spec] = &[name("name", 0, Cut::End), col("misses", 1), col("miss time", 2), col("pages added", 3), col("bytes", 4)];


#[cfg(test)]
mod tests {
    use super::*;
    use crate::present::{table, tui::fixture::cold_read};
    use kstall_core::listeners::Plane;

    #[test]
    fn every_spec_names_a_column_of_its_table() {
        let s = cold_read();
        let tables = [
            (table::syscall_table(&s), SYSCALL_COLUMNS),
            (table::api_table(&s), API_COLUMNS),
            (table::client_table(&s), CLIENT_COLUMNS),
            (table::controller_table(&{
                let mut s = cold_read();
                s.listeners[0].plane = Plane::Controller;
                s
            })
            .unwrap(), CONTROLLER_COLUMNS),
            (table::produce_table(&s), PRODUCE_COLUMNS),
            (table::worst_stalls_table(&s), WORST_STALL_COLUMNS),
            (table::thread_stalls_table(&s), THREAD_STALL_COLUMNS),
            (table::delayed_table(&s), DELAYED_COLUMNS),
            (table::replication_table(&s), REPLICATION_COLUMNS),
            (table::thread_connections_table(&s), CONNECTION_COLUMNS),
            (table::cold_tables(&s).into_iter().next().unwrap(), COLD_COLUMNS),
        ];
        for (t, specs) in tables {
            for spec in specs.iter().filter(|c| c.title != BAR) {
                assert!(t.header.contains(&spec.title), "{}: no column {}", t.title, spec.title);
            }
            assert_eq!(specs.len(), t.header.len() + usize::from(specs.iter().any(|c| c.title == BAR)), "{}: a column without a priority", t.title);
        }
    }
}
