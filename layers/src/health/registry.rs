//! The shared, bounded set of named health checks.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::error::TooManyChecks;
use crate::check::HealthCheck;

/// A named check as stored in the registry.
pub(crate) type NamedCheck = (Cow<'static, str>, Arc<dyn HealthCheck>);

/// A cloneable handle to the set of named checks reported by a [`Health`](super::Health)
/// service.
///
/// All clones share one set: a check registered through any clone (for example by a DMSG client
/// that starts after the HTTP stack was built) is reported by every [`Health`](super::Health)
/// service made from the layer that owns the registry, including services cloned before the
/// registration.
///
/// **Bound:** at most [`max_checks`](Self::max_checks) checks (default
/// [`DEFAULT_MAX_CHECKS`](Self::DEFAULT_MAX_CHECKS) = 64). There is no eviction: registering a
/// new name into a full registry fails with [`TooManyChecks`]; registering an existing name
/// replaces that check and always succeeds.
#[derive(Clone)]
pub struct HealthRegistry {
    shared: Arc<Shared>,
}

struct Shared {
    max: usize,
    checks: Mutex<BTreeMap<Cow<'static, str>, Arc<dyn HealthCheck>>>,
}

impl HealthRegistry {
    /// The default maximum number of registered checks.
    pub const DEFAULT_MAX_CHECKS: usize = 64;

    /// An empty registry holding at most [`DEFAULT_MAX_CHECKS`](Self::DEFAULT_MAX_CHECKS) checks.
    pub fn new() -> Self {
        Self::with_max_checks(Self::DEFAULT_MAX_CHECKS)
    }

    /// An empty registry holding at most `max` checks.
    pub fn with_max_checks(max: usize) -> Self {
        HealthRegistry {
            shared: Arc::new(Shared {
                max,
                checks: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Registers `check` under `name`, replacing any check already registered under that name.
    ///
    /// # Errors
    ///
    /// [`TooManyChecks`] if `name` is new and the registry already holds
    /// [`max_checks`](Self::max_checks) checks. Nothing is evicted.
    pub fn register(
        &self,
        name: impl Into<Cow<'static, str>>,
        check: impl HealthCheck,
    ) -> Result<(), TooManyChecks> {
        let name = name.into();
        let mut checks = self.lock();
        if checks.len() >= self.shared.max && !checks.contains_key(&name) {
            tracing::warn!(check = %name, max = self.shared.max, "health registry full");
            return Err(TooManyChecks::new(name, self.shared.max));
        }
        tracing::debug!(check = %name, "health check registered");
        checks.insert(name, Arc::new(check));
        Ok(())
    }

    /// Removes the check registered under `name`. Returns whether there was one.
    pub fn deregister(&self, name: &str) -> bool {
        let removed = self.lock().remove(name).is_some();
        if removed {
            tracing::debug!(check = %name, "health check deregistered");
        }
        removed
    }

    /// Whether a check is registered under `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// The registered check names, in the (sorted) order they are reported.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().map(|name| name.to_string()).collect()
    }

    /// The number of registered checks.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no check is registered.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The maximum number of checks this registry holds.
    pub fn max_checks(&self) -> usize {
        self.shared.max
    }

    /// A snapshot of the registered checks, sorted by name; the lock is released on return so
    /// checks never run under it.
    pub(crate) fn snapshot(&self) -> Vec<NamedCheck> {
        self.lock()
            .iter()
            .map(|(name, check)| (name.clone(), Arc::clone(check)))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Cow<'static, str>, Arc<dyn HealthCheck>>> {
        // The map is never left half-updated, so a poisoned lock is still consistent.
        self.shared
            .checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for HealthRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for HealthRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthRegistry")
            .field("max_checks", &self.shared.max)
            .field("checks", &self.names())
            .finish()
    }
}
