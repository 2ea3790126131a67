//! `kubectl lfu`: the plugin's pure parts (what it shows, from the object and its Events).
//! Its I/O lives in `src/bin/kubectl-lfu/`.

pub mod data_model;
pub mod history;
pub mod list;
pub mod render;
pub mod road;
pub mod view;

#[cfg(test)]
mod tests;
