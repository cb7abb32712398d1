//! transport-discovery: the registry of transports (links between two nodes).
//!
//! The entry model is in [`entry`]: the id derivation, the canonical bytes both edges sign, and
//! the checks the service makes.

pub mod entry;

pub use entry::{
    EntryError, Label, SignedEntry, TransportEntry, TransportId, TransportIdError, TransportType,
};
