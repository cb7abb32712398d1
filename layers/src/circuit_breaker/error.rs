//! The error a breaker returns for a call it rejects.

use std::time::Duration;

/// A call was rejected without reaching the inner service because `key`'s circuit is open (or
/// half-open with its single probe already in flight).
///
/// The key is kept typed so callers can act on it; downcast with the breaker's key type:
///
/// ```
/// # use std::time::Duration;
/// use skytower_layers::circuit_breaker::CircuitOpen;
/// use skytower_layers::BoxError;
///
/// let err: BoxError = CircuitOpen { key: "pk-a", retry_after: Duration::from_secs(5) }.into();
/// let open = err.downcast_ref::<CircuitOpen<&str>>().unwrap();
/// assert_eq!((open.key, open.retry_after), ("pk-a", Duration::from_secs(5)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("circuit open for {key:?}: retry after {retry_after:?}")]
pub struct CircuitOpen<K> {
    /// The key whose circuit is open.
    pub key: K,
    /// Time left until the open period ends and a probe call is let through. Zero while the
    /// probe is in flight (the circuit is half-open): retry once it completes.
    pub retry_after: Duration,
}
