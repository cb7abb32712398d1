//! Per-key rate limiting with governor (GCRA token buckets in a `DashMap`).

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use skytower_transports::identity::PublicKey;

/// Who a request is charged to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// Every request over TCP, by the peer's IP address (IPv6: its /64).
    Ip(IpAddr),
    /// Every request over DMSG, by the peer's public key (a separate budget from
    /// [`RateKey::Key`]).
    Dmsg(PublicKey),
    /// Writes (POST, DELETE), additionally by the entry's owner, after its signature verified
    /// (so nobody can spend another key's budget).
    Key(PublicKey),
    /// Requests whose peer address is unknown (in-process callers).
    Unknown,
}

trait Check: Send + Sync + 'static {
    fn check(&self, key: &RateKey) -> Result<(), Duration>;
    fn prune(&self) -> usize;
}

impl<C> Check for RateLimiter<RateKey, DashMapStateStore<RateKey>, C, NoOpMiddleware<C::Instant>>
where
    C: Clock + Send + Sync + 'static,
{
    fn check(&self, key: &RateKey) -> Result<(), Duration> {
        self.check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock().now()))
    }

    fn prune(&self) -> usize {
        self.retain_recent();
        self.shrink_to_fit();
        self.len()
    }
}

/// A keyed rate limiter: `per_second` requests per second per [`RateKey`], bursts up to
/// `burst`. Cheap to clone (shared state). Its keyed state is pruned by [`prune`](Self::prune),
/// which the service calls periodically.
///
/// governor's default clock does not follow `tokio::time::pause`; tests use
/// [`with_clock`](Self::with_clock) with a [`FakeRelativeClock`](governor::clock::FakeRelativeClock).
#[derive(Clone)]
pub struct KeyedRateLimit {
    inner: Arc<dyn Check>,
}

impl fmt::Debug for KeyedRateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimit").finish_non_exhaustive()
    }
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

impl KeyedRateLimit {
    /// A limiter on the real (monotonic) clock. Zero rates are raised to 1.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self::with_clock(per_second, burst, DefaultClock::default())
    }

    /// A limiter on `clock` (tests: `FakeRelativeClock`).
    pub fn with_clock<C>(per_second: u32, burst: u32, clock: C) -> Self
    where
        C: Clock + Send + Sync + 'static,
        C::Instant: Send + Sync,
    {
        let limiter: RateLimiter<RateKey, DashMapStateStore<RateKey>, C, _> =
            RateLimiter::dashmap_with_clock(quota(per_second, burst), clock);
        KeyedRateLimit {
            inner: Arc::new(limiter),
        }
    }

    /// Charges one request to `key`; on refusal, how long until one would be allowed.
    pub fn check(&self, key: &RateKey) -> Result<(), Duration> {
        self.inner.check(key)
    }

    /// Forgets keys whose buckets are full again; returns the keys still tracked.
    pub fn prune(&self) -> usize {
        self.inner.prune()
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    #[test]
    fn burst_then_refusal_with_wait_then_recovery_and_pruning() {
        let clock = FakeRelativeClock::default();
        let lim = KeyedRateLimit::with_clock(10, 3, clock.clone());
        let a = RateKey::Ip([127, 0, 0, 1].into());
        let b = RateKey::Unknown;
        for _ in 0..3 {
            assert!(lim.check(&a).is_ok());
        }
        let wait = lim.check(&a).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert!(lim.check(&b).is_ok(), "keys are independent");
        clock.advance(Duration::from_millis(100));
        assert!(lim.check(&a).is_ok());
        assert_eq!(lim.prune(), 2);
        clock.advance(Duration::from_secs(10));
        assert_eq!(lim.prune(), 0, "idle keys are forgotten");
    }
}
