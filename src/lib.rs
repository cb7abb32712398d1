//! skytower facade (placeholder)
pub use skytower_layers as layers;
pub use skytower_services as services;
pub use skytower_transports as transports;
