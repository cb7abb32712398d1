//! skytower services: the service binaries of the network share one "service mode" (later issues).
//!
//! This crate is empty until the service-mode issue lands; it already re-exports the crates every
//! service builds on.

#![warn(missing_docs)]

pub use skytower_layers as layers;
pub use skytower_transports as transports;
