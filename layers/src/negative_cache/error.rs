//! Error types of the negative cache.

use std::time::Duration;

use crate::BoxError;

/// A call refused at once because its key failed recently.
///
/// The inner service was not called. The key is kept typed (not rendered to a string), so a
/// caller can downcast and read it back:
/// `err.downcast_ref::<KnownBad<(Dst, Server)>>()`; the type parameter must be the key type of
/// the layer's [`ExtractKey`](crate::key::ExtractKey).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("known bad: {key:?} failed recently, retry in {expires_in:?}")]
pub struct KnownBad<K> {
    /// The key of the refused request.
    pub key: K,
    /// How long the key stays bad (time left of its TTL when the call was refused).
    pub expires_in: Duration,
}

/// The caller gave up on the request (for example its own deadline passed).
///
/// Failures carrying a `Cancelled` anywhere in their [source](std::error::Error::source) chain
/// are not recorded by the default [`IgnoreCancelled`](super::IgnoreCancelled) filter: the
/// key did nothing wrong. A service that observes a caller-set deadline should fail with
/// `Cancelled::new()` or wrap the error it got with [`Cancelled::wrap`].
#[derive(Debug, Default, thiserror::Error)]
#[error("cancelled by the caller")]
pub struct Cancelled {
    #[source]
    source: Option<BoxError>,
}

impl Cancelled {
    /// A cancellation with no underlying error.
    pub const fn new() -> Self {
        Cancelled { source: None }
    }

    /// A cancellation caused by `source` (kept as the error's `source()`).
    pub fn wrap(source: impl Into<BoxError>) -> Self {
        Cancelled {
            source: Some(source.into()),
        }
    }

    /// The underlying error, if any.
    pub fn into_source(self) -> Option<BoxError> {
        self.source
    }
}
