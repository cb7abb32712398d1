//! skytower services: the service binaries of the network share one "service mode" (later issues).
//!
//! The shared service mode arrives with its issue; the crate re-exports the crates every service
//! builds on.
//!
//! - [`dmsg_discovery`]: the DMSG discovery service (signed entries with TTLs, an embedded store
//!   and a Redis store, per-key rate limits; `skytower dmsg-discovery`).

#![warn(missing_docs)]

pub mod dmsg_discovery;

pub use skytower_layers as layers;
pub use skytower_transports as transports;
