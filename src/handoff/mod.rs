//! The day after: the values of the official chart that reproduce the Langfuse that runs, so an
//! installation the operator upgraded can go back to the chart its team maintains (facts:
//! `official-chart-v3-v4-layout.md` §3, §4, §8). Pure: the running Deployments in, the values (or
//! what blocks them) out.

pub mod chart;
pub mod compare;
pub mod conflicts;
pub mod keep;
pub mod values;

pub use chart::ChartLine;
pub use compare::differences;
pub use conflicts::conflicts;
pub use values::{Handoff, values};

#[cfg(test)]
mod tests;
