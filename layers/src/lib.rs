//! Composable tower resilience layers for skytower (placeholder crate doc; rewritten below).

#![warn(missing_docs)]

pub mod check;
pub mod circuit_breaker;
pub mod handshake_queue;
pub mod health;
pub mod key;
pub mod negative_cache;

/// The boxed error type every layer in this crate returns (tower's `BoxError`).
pub use tower::BoxError;

pub use circuit_breaker::{BreakerHandle, CircuitBreaker, CircuitBreakerLayer, CircuitOpen};
