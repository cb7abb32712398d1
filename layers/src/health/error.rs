//! Errors of the [`Health`](super::Health) layer.

use std::borrow::Cow;

/// Returned by [`HealthRegistry::register`](super::HealthRegistry::register) when the registry
/// already holds its maximum number of checks and `name` is not one of them.
///
/// The registry never evicts a check to make room: free a slot with
/// [`deregister`](super::HealthRegistry::deregister) first.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("health registry is full ({max} checks): cannot register check {name:?}")]
pub struct TooManyChecks {
    name: Cow<'static, str>,
    max: usize,
}

impl TooManyChecks {
    pub(crate) fn new(name: Cow<'static, str>, max: usize) -> Self {
        TooManyChecks { name, max }
    }

    /// The name of the check that was refused.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The registry's maximum number of checks.
    pub fn max(&self) -> usize {
        self.max
    }
}
