//! skytower transports (placeholder crate doc).

#![warn(missing_docs)]

pub mod dmsg;
pub mod identity;
