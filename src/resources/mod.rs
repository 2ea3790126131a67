//! Builders of the objects the operator writes. Pure: objects in, objects out.

pub mod deployments;
pub mod images;
pub mod labels;
pub mod service;
pub mod v4_env;
