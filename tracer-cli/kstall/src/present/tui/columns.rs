//! Which columns each evidence table keeps first when the screen is narrow: its [`Spec`]s, in
//! order of priority. At 80 columns a table shows what answers "what stalled, and what did it
//! delay" before the rest.
use super::{
    grid::{Spec, col, name},
    text::Cut,
};
use crate::present::table::{Col, TableKind};

/// A table's specs: one per column of the table (the syscall table's also one for the log2
/// bar the live view adds, [`Col::Bar`]).
pub(super) const fn specs(kind: TableKind) -> &'static [Spec] {
    match kind {
        TableKind::Syscalls => SYSCALL_COLUMNS,
        TableKind::Apis => API_COLUMNS,
        TableKind::Clients => CLIENT_COLUMNS,
        TableKind::Controller => CONTROLLER_COLUMNS,
        TableKind::Produce => PRODUCE_COLUMNS,
        TableKind::Delayed => DELAYED_COLUMNS,
        TableKind::Replication => REPLICATION_COLUMNS,
        TableKind::Connections => CONNECTION_COLUMNS,
        TableKind::Cold => COLD_COLUMNS,
        TableKind::WorstStalls => WORST_STALL_COLUMNS,
        TableKind::ThreadStalls => THREAD_STALL_COLUMNS,
    }
}

/// At 80 columns: syscall, cache, calls, p99, role, the bar, p50.
pub(super) const SYSCALL_COLUMNS: &[Spec] = &[
    col(Col::Syscall, 0),
    col(Col::Cache, 1),
    col(Col::Calls, 2),
    col(Col::P99, 3),
    name(Col::Role, 4, Cut::End),
    col(Col::Bar, 5),
    col(Col::P50, 6),
    col(Col::Max, 7),
    col(Col::Bytes, 8),
    col(Col::P90, 9),
    col(Col::P999, 10),
    col(Col::PagesAdded, 11),
];
const API_COLUMNS: &[Spec] = &[
    col(Col::Api, 0),
    col(Col::Requests, 1),
    col(Col::P99, 2),
    col(Col::P50, 3),
    col(Col::Max, 4),
    col(Col::PerS, 5),
    col(Col::P999, 6),
    col(Col::SocketWaitP99, 7),
    col(Col::BrokerP99, 8),
    col(Col::BrokerP50, 9),
    col(Col::SocketWaitP50, 10),
];
const CLIENT_COLUMNS: &[Spec] = &[
    name(Col::ClientId, 0, Cut::End),
    col(Col::Api, 1),
    col(Col::Requests, 2),
    col(Col::P99, 3),
    col(Col::P50, 4),
    col(Col::Max, 5),
    col(Col::Listener, 6),
    col(Col::InFlightMax, 7),
    col(Col::PerS, 8),
    col(Col::Connections, 9),
    col(Col::InFlightMean, 10),
];
const CONTROLLER_COLUMNS: &[Spec] = &[
    col(Col::Api, 0),
    col(Col::Listener, 1),
    col(Col::Requests, 2),
    col(Col::P99, 3),
    col(Col::P50, 4),
    col(Col::Max, 5),
    col(Col::PerS, 6),
    col(Col::BrokerP99, 7),
    col(Col::BrokerP50, 8),
];
const PRODUCE_COLUMNS: &[Spec] = &[col(Col::Produce, 0), col(Col::Requests, 1), col(Col::P99, 2), col(Col::P50, 3), col(Col::Max, 4), col(Col::P999, 5)];
/// At 80 columns: how long, why, the request served, the Produce delayed, the file, the delay.
const WORST_STALL_COLUMNS: &[Spec] = &[
    col(Col::Took, 0),
    col(Col::Cause, 1),
    name(Col::Serving, 2, Cut::End),
    col(Col::DelayedProduce, 3),
    name(Col::File, 4, Cut::End),
    col(Col::DelayAdded, 5),
    col(Col::Call, 6),
    name(Col::Thread, 7, Cut::Middle),
    col(Col::Listener, 8),
];
const THREAD_STALL_COLUMNS: &[Spec] = &[name(Col::Thread, 0, Cut::Middle), col(Col::Cause, 1), col(Col::Stalls, 2), col(Col::StallTime, 3), col(Col::Listener, 4)];
/// At 80 columns: who, which API, how many delayed and by how much.
const DELAYED_COLUMNS: &[Spec] = &[
    col(Col::Api, 0),
    name(Col::ClientId, 1, Cut::End),
    col(Col::Delayed, 2),
    col(Col::DelayAdded, 3),
    col(Col::P99Delayed, 4),
    col(Col::P99Not, 5),
    col(Col::Requests, 6),
    col(Col::HeldByReplication, 7),
    col(Col::ReplicationAdded, 8),
];
const REPLICATION_COLUMNS: &[Spec] = &[
    col(Col::Follower, 0),
    name(Col::Thread, 1, Cut::Middle),
    col(Col::Stalled, 2),
    col(Col::DelayAdded, 3),
    col(Col::Fetches, 4),
    col(Col::Listener, 5),
];
const CONNECTION_COLUMNS: &[Spec] = &[
    name(Col::Thread, 0, Cut::Middle),
    col(Col::Stalled, 1),
    name(Col::MissesServing, 2, Cut::End),
    col(Col::Followers, 3),
    name(Col::ClientIds, 4, Cut::End),
    col(Col::Connections, 5),
    col(Col::Listener, 6),
];
const COLD_COLUMNS: &[Spec] = &[name(Col::Name, 0, Cut::End), col(Col::Misses, 1), col(Col::MissTime, 2), col(Col::PagesAdded, 3), col(Col::Bytes, 4)];


#[cfg(test)]
mod tests {
    use super::*;
    use crate::present::{table, tui::fixture::cold_read};
    use kstall_core::listeners::Plane;

    /// Every table's specs name its columns, each once (and the syscall table's the bar too):
    /// a column without one would drop out first, whatever it holds.
    #[test]
    fn every_spec_names_a_column_of_its_table() {
        let mut s = cold_read();
        s.listeners[0].plane = Plane::Controller;
        let tables = table::measurement_tables(&s);
        assert_eq!(tables.len(), 12, "every table, the controller's and both cold ones included");
        for t in tables {
            let specs = specs(t.kind);
            let bar = usize::from(t.kind == TableKind::Syscalls);
            for spec in specs.iter().filter(|c| c.col != Col::Bar) {
                assert!(t.columns.contains(&spec.col), "{}: no column {:?}", t.title, spec.col);
            }
            assert_eq!(specs.iter().filter(|c| c.col == Col::Bar).count(), bar, "{}: the bar", t.title);
            assert_eq!(specs.len(), t.columns.len() + bar, "{}: a column without a priority", t.title);
        }
    }
}
