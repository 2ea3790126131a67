//! langfuse-upgrade-operator: upgrades a running self-hosted Langfuse v2 to v3 with no downtime
//! and no lost data. See DESIGN in the README for the flow and its invariants.

pub mod analysis;
pub mod api;
pub mod catalog;
pub mod cli;
pub mod controller;
pub mod databases;
pub mod error;
pub mod http;
pub mod metrics;
pub mod migrations;
pub mod precision;
pub mod resources;
pub mod telemetry;
pub mod verify;
pub mod version;

#[cfg(test)]
pub(crate) mod testing;
