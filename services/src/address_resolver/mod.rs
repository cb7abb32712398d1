//! address-resolver (WIP).

pub mod bindings;
pub mod cookie;
pub mod store_shim;
pub mod udp;
pub mod wire;
