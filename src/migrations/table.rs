//! The three tracing tables v2 keeps in Postgres and the v3 migrations copy to ClickHouse.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Traces,
    Observations,
    Scores,
}

impl Table {
    /// In the order the copies run (by migration name).
    pub const ALL: [Table; 3] = [Table::Traces, Table::Observations, Table::Scores];

    /// The table's name, the same in Postgres and ClickHouse.
    pub fn name(self) -> &'static str {
        match self {
            Table::Traces => "traces",
            Table::Observations => "observations",
            Table::Scores => "scores",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
