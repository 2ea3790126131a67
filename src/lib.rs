//! langfuse-upgrade-operator: upgrades a running self-hosted Langfuse v2 to v3 with no downtime
//! and no lost data. See docs/how-it-works.md for the flow and its invariants, docs/architecture.md for where each rule lives.

pub mod analysis;
pub mod api;
pub mod catalog;
pub mod cli;
pub mod controller;
pub mod data_model;
pub mod databases;
pub mod error;
pub mod handoff;
pub mod http;
pub mod metrics;
pub mod migrations;
pub mod precision;
pub mod reading;
pub mod resources;
pub mod telemetry;
pub mod verify;
pub mod version;

#[cfg(test)]
pub(crate) mod testing;
