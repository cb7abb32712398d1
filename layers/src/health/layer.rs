//! [`HealthLayer`]: configuration of the `/health` endpoint.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tower_layer::Layer;

use super::registry::HealthRegistry;
use super::service::Health;
use crate::check::HealthCheck;

/// Applies [`Health`] to a service: answers `GET`/`HEAD` on the health path with a JSON report
/// and passes every other request through.
///
/// Defaults: path `/health`, no version, no commit, check timeout 2 s, a fresh
/// [`HealthRegistry`] holding at most 64 checks. The start time reported as `started_at` /
/// `uptime_secs` is taken when the layer is created ([`new`](Self::new) or
/// [`with_registry`](Self::with_registry)).
///
/// The layer is cheap to clone; clones, and every service made from them, share one
/// configuration and one registry.
///
/// Binaries pass their own version and commit, e.g.
/// `.version(env!("CARGO_PKG_VERSION")).commit(env!("GIT_COMMIT"))` with `GIT_COMMIT` set by
/// their build script (`cargo:rustc-env=GIT_COMMIT=...`); this crate has no build script.
#[derive(Clone, Debug)]
pub struct HealthLayer {
    pub(crate) config: Arc<HealthConfig>,
    pub(crate) registry: HealthRegistry,
}

/// The layer's configuration, shared by every service it makes.
#[derive(Clone, Debug)]
pub(crate) struct HealthConfig {
    pub(crate) service: Cow<'static, str>,
    pub(crate) version: Option<Cow<'static, str>>,
    pub(crate) commit: Option<Cow<'static, str>>,
    pub(crate) path: Cow<'static, str>,
    pub(crate) check_timeout: Duration,
    /// `started_at`, already formatted as RFC 3339 (UTC, whole seconds).
    pub(crate) started_at: String,
    /// The (tokio) instant `uptime_secs` is measured from.
    pub(crate) started: Instant,
}

impl HealthLayer {
    /// The default health path.
    pub const DEFAULT_PATH: &'static str = "/health";
    /// The default per-check timeout.
    pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

    /// A layer reporting `service` as the service name, with the defaults listed on
    /// [`HealthLayer`] and a new, empty registry.
    pub fn new(service: impl Into<Cow<'static, str>>) -> Self {
        Self::with_registry(service, HealthRegistry::new())
    }

    /// Like [`new`](Self::new), but reporting the checks of an existing `registry` (for example
    /// one made with [`HealthRegistry::with_max_checks`], or shared by two listeners).
    pub fn with_registry(service: impl Into<Cow<'static, str>>, registry: HealthRegistry) -> Self {
        let now = SystemTime::now();
        // `humantime` panics on times before the epoch: report the epoch for a broken clock.
        let now = if now < SystemTime::UNIX_EPOCH {
            SystemTime::UNIX_EPOCH
        } else {
            now
        };
        HealthLayer {
            config: Arc::new(HealthConfig {
                service: service.into(),
                version: None,
                commit: None,
                path: Cow::Borrowed(Self::DEFAULT_PATH),
                check_timeout: Self::DEFAULT_CHECK_TIMEOUT,
                started_at: humantime::format_rfc3339_seconds(now).to_string(),
                started: Instant::now(),
            }),
            registry,
        }
    }

    /// Sets the reported version (default: none, omitted from the JSON). Binaries pass
    /// `env!("CARGO_PKG_VERSION")`.
    pub fn version(mut self, version: impl Into<Cow<'static, str>>) -> Self {
        Arc::make_mut(&mut self.config).version = Some(version.into());
        self
    }

    /// Sets the reported git commit (default: none, omitted from the JSON). Binaries pass a
    /// value set by their build script.
    pub fn commit(mut self, commit: impl Into<Cow<'static, str>>) -> Self {
        Arc::make_mut(&mut self.config).commit = Some(commit.into());
        self
    }

    /// Sets the health path (default `/health`). It is matched exactly against the request
    /// URI's path; the query string is ignored. A missing leading `/` is added.
    pub fn path(mut self, path: impl Into<Cow<'static, str>>) -> Self {
        let path = path.into();
        let path = if path.starts_with('/') {
            path
        } else {
            Cow::Owned(format!("/{path}"))
        };
        Arc::make_mut(&mut self.config).path = path;
        self
    }

    /// Sets how long each check may run (default 2 s). A check still running then is reported
    /// `down` with details `{"error": "timed out", "timeout_ms": ..}`.
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        Arc::make_mut(&mut self.config).check_timeout = timeout;
        self
    }

    /// Registers `check` under `name` in the layer's registry (replacing a check of the same
    /// name). For checks known when the stack is built; later ones go through
    /// [`registry`](Self::registry).
    ///
    /// # Panics
    ///
    /// If the registry is full (see [`HealthRegistry::register`], which returns the error
    /// instead). This is a configuration mistake, not a runtime condition.
    pub fn check(self, name: impl Into<Cow<'static, str>>, check: impl HealthCheck) -> Self {
        if let Err(err) = self.registry.register(name, check) {
            panic!("HealthLayer::check: {err}");
        }
        self
    }

    /// A handle to the layer's registry, shared by all clones of the layer and all services it
    /// made: use it to register or deregister checks at runtime.
    pub fn registry(&self) -> HealthRegistry {
        self.registry.clone()
    }
}

impl<S> Layer<S> for HealthLayer {
    type Service = Health<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Health::new(inner, self)
    }
}
