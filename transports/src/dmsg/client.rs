//! The DMSG client: discovery-driven sessions, the dial ladder, and the client entry.
//!
//! A [`Client`] keeps sessions to relay servers taken from discovery (at least
//! `min_sessions`, or all of them when it is 0), replaces sessions that die or stop answering
//! keep-alives, reconnects with a backoff that resets on success, and publishes its client entry
//! (its delegated servers) when that set changes (debounced) and every `reannounce` period. No
//! lock is ever held across network I/O.
//!
//! [`Client::dial`] walks the ladder sequentially, stopping at the first success: look up the
//! destination's entry (cached with a TTL, served stale while discovery is down; a failed dial
//! evicts it), then try every delegated server we already have a session with, then open new
//! sessions to the remaining ones. Each attempt goes through a [`NegativeCacheLayer`] keyed by
//! `(destination, server)` (30 s), so a known-bad pair is skipped without touching the network.
//! An optional per-destination [`CircuitBreakerLayer`] (60 s) wraps the whole dial.
//!
//! Cancel safety: every await of a dial can be dropped; the yamux stream is reset, the
//! ephemeral port freed, and nothing is left running that could close a stream after it was
//! returned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use skytower_layers::BoxError;
use skytower_layers::circuit_breaker::{BreakerHandle, CircuitBreakerLayer, CircuitOpen};
use skytower_layers::negative_cache::{KnownBad, NegativeCacheHandle, NegativeCacheLayer};
use tokio::sync::Notify;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

use super::disc::{DeleteRequest, Discovery, DiscoveryError, Entry};
use super::ports::{Listener, PortError};
use super::replay::unix_ms_now;
use super::session::{ClientSession, Endpoint, SessionConfig};
use super::stream::{DialError, DmsgStream};
use super::wire::{Addr, Code};
use crate::identity::{PublicKey, SecretKey};
use crate::task::AbortOnDrop;

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Sessions, streams and listeners.
    pub session: SessionConfig,
    /// Sessions to keep (default 1); 0 keeps one with every available server.
    pub min_sessions: usize,
    /// Open sessions in the background to meet `min_sessions` (default true). A dial-only client
    /// sets it to false: it opens sessions on demand when dialing and publishes no entry until
    /// it has sessions.
    pub auto_connect: bool,
    /// Publish the client entry (default true). A dial-only client that must stay unreachable
    /// (an ephemeral fetch client) sets it to false: it then never appears in discovery.
    pub publish: bool,
    /// Re-publish the client entry this often even when nothing changed (default 30 min;
    /// discovery keeps client entries 60 min).
    pub reannounce: Duration,
    /// Wait this long after a session change before publishing, so a burst makes one update
    /// (default 1 s).
    pub publish_debounce: Duration,
    /// How long a looked-up destination entry is reused (default 5 min).
    pub entry_cache_ttl: Duration,
    /// Most cached destination entries (default 10 000).
    pub entry_cache_max: usize,
    /// How long a failed `(destination, server)` pair is skipped (default 30 s).
    pub negative_ttl: Duration,
    /// Per-destination circuit breaker: `Some((consecutive failures, open period))`; default off.
    pub breaker: Option<(u32, Duration)>,
    /// Ping every session this often (default 30 s); a session that does not answer within
    /// `session.stream_handshake_timeout` is closed and replaced.
    pub keepalive: Duration,
    /// Reconnect backoff: first delay and cap (default 1 s, 60 s); reset on success.
    pub backoff: (Duration, Duration),
    /// How often the maintenance task wakes up to check sessions (default 1 s).
    pub maintain_interval: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            session: SessionConfig::default(),
            min_sessions: 1,
            auto_connect: true,
            publish: true,
            reannounce: Duration::from_secs(30 * 60),
            publish_debounce: Duration::from_secs(1),
            entry_cache_ttl: Duration::from_secs(300),
            entry_cache_max: 10_000,
            negative_ttl: Duration::from_secs(30),
            breaker: None,
            keepalive: Duration::from_secs(30),
            backoff: (Duration::from_secs(1), Duration::from_secs(60)),
            maintain_interval: Duration::from_secs(1),
        }
    }
}

/// One failed step of a dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The server tried.
    pub server: PublicKey,
    /// Why it failed.
    pub error: String,
    /// The signed refusal behind the failure, when it was one.
    pub refusal: Option<Refusal>,
}

/// A signed refusal of a stream: who refused and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Who signed it (the destination, or the relay server).
    pub by: PublicKey,
    /// Why.
    pub code: Code,
}

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientDialError {
    /// The destination's entry could not be found.
    #[error("looking up {0}: {1}")]
    Lookup(PublicKey, DiscoveryError),
    /// The destination lists no servers.
    #[error("{0} has no delegated servers")]
    NoServers(PublicKey),
    /// Every server was tried and failed.
    #[error("dial {dst} failed through every server: {}", fmt_attempts(.attempts))]
    AllFailed {
        /// The destination.
        dst: Addr,
        /// Each attempt and its cause, in order.
        attempts: Vec<Attempt>,
    },
    /// The destination's circuit is open.
    #[error("circuit open for {dst}: retry after {retry_after:?}")]
    CircuitOpen {
        /// The destination.
        dst: PublicKey,
        /// Time left.
        retry_after: Duration,
    },
    /// The client is closed.
    #[error("client closed")]
    Closed,
}

impl ClientDialError {
    /// The code of the refusal signed by the destination itself (no listener on the port, over
    /// a limit, ...), when that is why the dial failed: the route worked, the destination said
    /// no.
    ///
    /// ```
    /// use skytower_transports::dmsg::client::{Attempt, ClientDialError, Refusal};
    /// use skytower_transports::dmsg::wire::{Addr, Code};
    /// use skytower_transports::identity::SecretKey;
    ///
    /// let dst = SecretKey::generate().unwrap().public_key();
    /// let server = SecretKey::generate().unwrap().public_key();
    /// let err = ClientDialError::AllFailed {
    ///     dst: Addr::new(dst, 81),
    ///     attempts: vec![Attempt {
    ///         server,
    ///         error: "refused".into(),
    ///         refusal: Some(Refusal { by: dst, code: Code::NoListener }),
    ///     }],
    /// };
    /// assert_eq!(err.destination_refusal(), Some(Code::NoListener));
    /// ```
    pub fn destination_refusal(&self) -> Option<Code> {
        match self {
            ClientDialError::AllFailed { dst, attempts } => attempts
                .iter()
                .rev()
                .filter_map(|a| a.refusal)
                .find(|r| r.by == dst.pk)
                .map(|r| r.code),
            _ => None,
        }
    }
}

/// The signed refusal carried by `e`, if it is one.
fn refusal(e: &BoxError) -> Option<Refusal> {
    match e.downcast_ref::<DialError>() {
        Some(DialError::Refused { by, code }) => Some(Refusal {
            by: *by,
            code: *code,
        }),
        _ => None,
    }
}

/// What marks a `(destination, server)` pair bad: failures of the path (no session to the
/// server, the server cannot reach the destination, the session died, timeouts). A refusal
/// signed by the destination itself (no listener, over a limit, ...) proves the path works, and
/// `OverLimit` anywhere is backpressure: neither is recorded.
fn is_path_failure(e: &BoxError) -> bool {
    match e.downcast_ref::<DialError>() {
        // Of the refusals, only the server saying it cannot reach the destination blames the
        // path; the others come from the destination or are about this request.
        Some(DialError::Refused { code, .. }) => {
            matches!(code, Code::NotConnected | Code::ForwardFailed)
        }
        _ => true,
    }
}

fn fmt_attempts(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("{}: {}", a.server, a.error))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A snapshot of one session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The server.
    pub server: PublicKey,
    /// When the session was established.
    pub connected_since: SystemTime,
    /// Streams open on it now.
    pub open_streams: usize,
    /// Bytes received on the connection.
    pub bytes_in: u64,
    /// Bytes sent on the connection.
    pub bytes_out: u64,
    /// Last keep-alive round-trip time.
    pub last_rtt: Option<Duration>,
}

#[derive(Clone, Debug)]
struct AttemptReq {
    dst: Addr,
    server: PublicKey,
}

type AttemptService = BoxCloneSyncService<AttemptReq, DmsgStream, BoxError>;
type DialService = BoxCloneSyncService<Addr, DmsgStream, BoxError>;

struct Inner {
    endpoint: Endpoint,
    discovery: Arc<dyn Discovery>,
    config: ClientConfig,
    sessions: Mutex<HashMap<PublicKey, Arc<ClientSession>>>,
    connecting: Mutex<HashMap<PublicKey, Arc<tokio::sync::Mutex<()>>>>,
    entries: Mutex<HashMap<PublicKey, (Entry, tokio::time::Instant)>>,
    changed: Notify,
    /// Set by [`Client::withdraw`]: the entry is no longer published.
    withdrawn: std::sync::atomic::AtomicBool,
}

impl Inner {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn session(&self, server: &PublicKey) -> Option<Arc<ClientSession>> {
        let mut map = Self::lock(&self.sessions);
        match map.get(server) {
            Some(s) if s.is_closed() => {
                map.remove(server);
                self.changed.notify_one();
                None
            }
            other => other.cloned(),
        }
    }

    /// A session with `server`: the existing one, or a new one (one connect per server at a
    /// time; concurrent callers wait for it instead of opening duplicates).
    async fn ensure_session(&self, server: PublicKey) -> Result<Arc<ClientSession>, BoxError> {
        if let Some(s) = self.session(&server) {
            return Ok(s);
        }
        let gate = Self::lock(&self.connecting)
            .entry(server)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        let _turn = gate.lock().await;
        if let Some(s) = self.session(&server) {
            return Ok(s);
        }
        let result = self.connect(server).await;
        Self::lock(&self.connecting).remove(&server);
        result
    }

    async fn connect(&self, server: PublicKey) -> Result<Arc<ClientSession>, BoxError> {
        let entry = self.discovery.entry(server).await?;
        let address = entry
            .server
            .as_ref()
            .map(|s| s.address.clone())
            .ok_or_else(|| format!("{server} is not a server"))?;
        let addr = tokio::net::lookup_host(&address)
            .await?
            .next()
            .ok_or_else(|| format!("{address} did not resolve"))?;
        let session = Arc::new(self.endpoint.connect(addr, server).await?);
        Self::lock(&self.sessions).insert(server, session.clone());
        self.changed.notify_one();
        tracing::debug!(%server, "session established");
        Ok(session)
    }

    async fn lookup(&self, pk: PublicKey) -> Result<Entry, ClientDialError> {
        let now = tokio::time::Instant::now();
        let cached = Self::lock(&self.entries).get(&pk).cloned();
        if let Some((entry, at)) = &cached
            && now.duration_since(*at) < self.config.entry_cache_ttl
        {
            return Ok(entry.clone());
        }
        match self.discovery.entry(pk).await {
            Ok(entry) => {
                let mut map = Self::lock(&self.entries);
                if map.len() >= self.config.entry_cache_max && !map.contains_key(&pk) {
                    let ttl = self.config.entry_cache_ttl;
                    map.retain(|_, (_, at)| now.duration_since(*at) < ttl);
                    if map.len() >= self.config.entry_cache_max
                        && let Some(oldest) =
                            map.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| *k)
                    {
                        map.remove(&oldest);
                    }
                }
                map.insert(pk, (entry.clone(), now));
                Ok(entry)
            }
            Err(e) => match (e, cached) {
                // Discovery down: a stale cached entry is better than nothing.
                (DiscoveryError::Unavailable(_), Some((entry, _))) => Ok(entry),
                (e, _) => Err(ClientDialError::Lookup(pk, e)),
            },
        }
    }

    fn evict_entry(&self, pk: &PublicKey) {
        Self::lock(&self.entries).remove(pk);
    }

    async fn ladder(
        &self,
        attempt: &AttemptService,
        dst: Addr,
    ) -> Result<DmsgStream, ClientDialError> {
        let entry = self.lookup(dst.pk).await?;
        let servers = entry
            .client
            .map(|c| c.delegated_servers)
            .filter(|s| !s.is_empty())
            .ok_or(ClientDialError::NoServers(dst.pk))?;
        // Phase 1: servers we already have a session with; phase 2: the others.
        let (phase1, phase2): (Vec<_>, Vec<_>) =
            servers.into_iter().partition(|s| self.session(s).is_some());
        let mut attempts = Vec::new();
        for server in phase1.into_iter().chain(phase2) {
            let mut svc = attempt.clone();
            let result = match svc.ready().await {
                Ok(svc) => svc.call(AttemptReq { dst, server }).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(stream) => return Ok(stream),
                Err(e) => {
                    let refusal = refusal(&e);
                    let by_destination = refusal.is_some_and(|r| r.by == dst.pk);
                    let error =
                        if let Some(kb) = e.downcast_ref::<KnownBad<(PublicKey, PublicKey)>>() {
                            format!("skipped, failed recently (retry in {:?})", kb.expires_in)
                        } else {
                            e.to_string()
                        };
                    attempts.push(Attempt {
                        server,
                        error,
                        refusal,
                    });
                    if by_destination {
                        // The destination itself answered (no listener, over a limit, ...):
                        // another server would reach the same answer. The route is fine.
                        return Err(ClientDialError::AllFailed { dst, attempts });
                    }
                }
            }
        }
        self.evict_entry(&dst.pk);
        Err(ClientDialError::AllFailed { dst, attempts })
    }

    fn snapshot(&self) -> Vec<Arc<ClientSession>> {
        Self::lock(&self.sessions).values().cloned().collect()
    }
}

/// A DMSG client. Dropping it stops its tasks and closes its sessions; [`Client::close`] also
/// removes its discovery entry.
pub struct Client {
    inner: Arc<Inner>,
    dial: DialService,
    negative: NegativeCacheHandle<(PublicKey, PublicKey)>,
    breaker: Option<BreakerHandle<PublicKey>>,
    _maintain: AbortOnDrop,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("pk", &self.public_key())
            .field("sessions", &Inner::lock(&self.inner.sessions).len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts a client for `key` using `discovery`; sessions are opened in the background
    /// (see [`Client::wait_for_sessions`]).
    pub fn start(key: SecretKey, discovery: Arc<dyn Discovery>, config: ClientConfig) -> Client {
        let endpoint = Endpoint::new(key, config.session.clone());
        let inner = Arc::new(Inner {
            endpoint,
            discovery,
            config: config.clone(),
            sessions: Mutex::new(HashMap::new()),
            connecting: Mutex::new(HashMap::new()),
            entries: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            withdrawn: std::sync::atomic::AtomicBool::new(false),
        });
        let negative_layer = NegativeCacheLayer::new(|r: &AttemptReq| (r.dst.pk, r.server))
            .ttl(config.negative_ttl)
            .filter(is_path_failure);
        let negative = negative_layer.handle();
        let attempt_inner = inner.clone();
        let attempt: AttemptService = BoxCloneSyncService::new(negative_layer.layer(
            tower::service_fn(move |req: AttemptReq| {
                let inner = attempt_inner.clone();
                async move {
                    let session = inner.ensure_session(req.server).await?;
                    session.dial(req.dst).await.map_err(BoxError::from)
                }
            }),
        ));
        let ladder_inner = inner.clone();
        let ladder = tower::service_fn(move |dst: Addr| {
            let inner = ladder_inner.clone();
            let attempt = attempt.clone();
            async move { inner.ladder(&attempt, dst).await.map_err(BoxError::from) }
        });
        let (dial, breaker) = match config.breaker {
            Some((threshold, open)) => {
                let layer = CircuitBreakerLayer::builder(|a: &Addr| a.pk)
                    .failure_threshold(threshold)
                    .open_duration(open)
                    .build();
                let handle = layer.handle();
                let svc = ServiceBuilder::new().layer(layer).service(ladder);
                (BoxCloneSyncService::new(svc), Some(handle))
            }
            None => (BoxCloneSyncService::new(ladder), None),
        };
        let task = tokio::spawn(maintain(inner.clone()));
        Client {
            inner,
            dial,
            negative,
            breaker,
            _maintain: AbortOnDrop::new(&task),
        }
    }

    /// Starts a client that uses the dmsg-discovery at `discovery_url` (`http://host:port`)
    /// through [`HttpDiscovery`](super::disc_http::HttpDiscovery).
    pub fn start_with_discovery_url(
        key: SecretKey,
        discovery_url: &str,
        config: ClientConfig,
    ) -> Result<Client, super::disc_http::HttpDiscoveryError> {
        let discovery = super::disc_http::HttpDiscovery::new(discovery_url)?;
        Ok(Client::start(key, Arc::new(discovery), config))
    }

    /// Our public key.
    pub fn public_key(&self) -> PublicKey {
        self.inner.endpoint.public_key()
    }

    /// The endpoint (ports, listeners).
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// Listens on `port` on every session.
    pub fn listen(&self, port: u16) -> Result<Listener, PortError> {
        self.inner.endpoint.listen(port)
    }

    /// The `(destination, server)` negative cache.
    pub fn negative_cache(&self) -> &NegativeCacheHandle<(PublicKey, PublicKey)> {
        &self.negative
    }

    /// The per-destination breaker, when configured.
    pub fn breaker(&self) -> Option<&BreakerHandle<PublicKey>> {
        self.breaker.as_ref()
    }

    /// Dials `dst` through the ladder. Cancel-safe.
    pub async fn dial(&self, dst: Addr) -> Result<DmsgStream, ClientDialError> {
        let mut svc = self.dial.clone();
        let result = match svc.ready().await {
            Ok(svc) => svc.call(dst).await,
            Err(e) => Err(e),
        };
        result.map_err(|e| match e.downcast::<ClientDialError>() {
            Ok(e) => *e,
            Err(e) => match e.downcast_ref::<CircuitOpen<PublicKey>>() {
                Some(open) => ClientDialError::CircuitOpen {
                    dst: open.key,
                    retry_after: open.retry_after,
                },
                None => ClientDialError::AllFailed {
                    dst,
                    attempts: vec![Attempt {
                        server: dst.pk,
                        error: e.to_string(),
                        refusal: refusal(&e),
                    }],
                },
            },
        })
    }

    /// Opens sessions to every available server now; returns how many sessions are up.
    pub async fn connect_all(&self) -> Result<usize, DiscoveryError> {
        let servers = self.inner.discovery.available_servers().await?;
        for entry in servers {
            if let Err(e) = self.inner.ensure_session(entry.static_pk).await {
                tracing::debug!(server = %entry.static_pk, error = %e, "connect_all: session failed");
            }
        }
        Ok(Inner::lock(&self.inner.sessions).len())
    }

    /// Opens a session with `server` now (if there is none).
    pub async fn connect(&self, server: PublicKey) -> Result<(), BoxError> {
        self.inner.ensure_session(server).await.map(drop)
    }

    /// Closes the session with `server`, if any (the maintenance task replaces it when the client
    /// is below `min_sessions`). Returns whether there was one.
    pub fn disconnect(&self, server: &PublicKey) -> bool {
        let removed = Inner::lock(&self.inner.sessions).remove(server);
        if removed.is_some() {
            self.inner.changed.notify_one();
        }
        removed.is_some()
    }

    /// A snapshot of every session.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.inner
            .snapshot()
            .into_iter()
            .filter(|s| !s.is_closed())
            .map(|s| {
                let (bytes_in, bytes_out) = s.bytes();
                SessionInfo {
                    server: s.server(),
                    connected_since: s.connected_at(),
                    open_streams: s.stats().open_streams(),
                    bytes_in,
                    bytes_out,
                    last_rtt: s.last_rtt(),
                }
            })
            .collect()
    }

    /// Pings every session now (concurrently, each bounded by the stream handshake timeout),
    /// so [`SessionInfo::last_rtt`] is fresh; returns each server's round-trip time or why the
    /// ping failed. A session that fails is left to the keep-alive to replace.
    pub async fn ping_sessions(&self) -> Vec<(PublicKey, Result<Duration, DialError>)> {
        let sessions: Vec<_> = self
            .inner
            .snapshot()
            .into_iter()
            .filter(|s| !s.is_closed())
            .collect();
        let pings = futures_util::future::join_all(sessions.iter().map(|s| s.ping())).await;
        sessions.iter().map(|s| s.server()).zip(pings).collect()
    }

    /// Waits until at least `n` sessions are up, or `timeout` passes; returns the count.
    pub async fn wait_for_sessions(&self, n: usize, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let count = self.sessions().len();
            if count >= n || tokio::time::Instant::now() >= deadline {
                return count;
            }
            let _ = tokio::time::timeout_at(deadline, self.inner.changed_or_tick()).await;
        }
    }

    /// Stops publishing our entry and deletes it from discovery (bounded by 2 s), while the
    /// sessions stay up: what a service does first when it shuts down, so nobody dials it
    /// during its grace period. Idempotent.
    pub async fn withdraw(&self) {
        self.inner
            .withdrawn
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let request = DeleteRequest::new(self.inner.endpoint.secret());
        let delete = self.inner.discovery.delete_entry(request);
        match tokio::time::timeout(Duration::from_secs(2), delete).await {
            Ok(Ok(())) | Ok(Err(DiscoveryError::NotFound(_))) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "could not delete the client entry"),
            Err(_) => tracing::debug!("deleting the client entry timed out"),
        }
    }

    /// Removes our discovery entry and closes every session.
    pub async fn close(self) {
        self.withdraw().await;
        let sessions: Vec<_> = Inner::lock(&self.inner.sessions).drain().collect();
        drop(sessions);
    }
}

impl Inner {
    async fn changed_or_tick(&self) {
        tokio::select! {
            _ = self.changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// Keeps sessions up, pings them, and publishes the client entry.
async fn maintain(inner: Arc<Inner>) {
    let cfg = inner.config.clone();
    let mut backoff = cfg.backoff.0;
    let mut next_connect = tokio::time::Instant::now();
    let mut last_ping = tokio::time::Instant::now();
    let mut published: Option<(Vec<PublicKey>, tokio::time::Instant)> = None;
    let mut dirty_since: Option<tokio::time::Instant> = None;
    let mut sequence = 0u64;
    let mut last_set: Vec<PublicKey> = Vec::new();
    loop {
        let now = tokio::time::Instant::now();
        // 1. Drop dead sessions.
        {
            let mut map = Inner::lock(&inner.sessions);
            map.retain(|_, s| !s.is_closed());
        }
        // 2. Keep-alive: ping every session; one that does not answer is closed.
        if now.duration_since(last_ping) >= cfg.keepalive {
            last_ping = now;
            let sessions = inner.snapshot();
            let pings = futures_util::future::join_all(sessions.iter().map(|s| s.ping())).await;
            for (s, ping) in sessions.iter().zip(pings) {
                if let Err(e) = ping {
                    tracing::info!(server = %s.server(), error = %e, "session failed its keep-alive; replacing it");
                    Inner::lock(&inner.sessions).remove(&s.server());
                }
            }
        }
        // 3. Enough sessions?
        let count = Inner::lock(&inner.sessions).len();
        let want_all = cfg.min_sessions == 0;
        if cfg.auto_connect
            && (want_all || count < cfg.min_sessions)
            && tokio::time::Instant::now() >= next_connect
        {
            let mut failed = false;
            match inner.discovery.available_servers().await {
                Ok(servers) => {
                    for entry in servers {
                        let have = Inner::lock(&inner.sessions).len();
                        if !want_all && have >= cfg.min_sessions {
                            break;
                        }
                        if inner.session(&entry.static_pk).is_some() {
                            continue;
                        }
                        if let Err(e) = inner.ensure_session(entry.static_pk).await {
                            tracing::debug!(server = %entry.static_pk, error = %e, "session failed");
                            failed = true;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "discovery: no servers");
                    failed = true;
                }
            }
            let have = Inner::lock(&inner.sessions).len();
            if failed && (want_all || have < cfg.min_sessions) {
                next_connect = tokio::time::Instant::now() + backoff;
                backoff = (backoff * 2).min(cfg.backoff.1);
            } else {
                backoff = cfg.backoff.0;
                next_connect = tokio::time::Instant::now()
                    + if want_all {
                        cfg.keepalive
                    } else {
                        Duration::ZERO
                    };
            }
        }
        // 4. Publish the entry when the set changed (debounced) or is due for re-announce.
        let mut set: Vec<PublicKey> = Inner::lock(&inner.sessions).keys().copied().collect();
        set.sort();
        let now = tokio::time::Instant::now();
        if set != last_set {
            last_set = set.clone();
            dirty_since = Some(now);
        }
        let changed = published.as_ref().is_none_or(|(p, _)| *p != set);
        let due = published
            .as_ref()
            .is_some_and(|(_, at)| now.duration_since(*at) >= cfg.reannounce);
        // The first entry goes out at once (nothing to merge yet); later changes are debounced.
        let settled = published.is_none()
            || dirty_since.is_none_or(|d| now.duration_since(d) >= cfg.publish_debounce);
        let withdrawn = inner.withdrawn.load(std::sync::atomic::Ordering::Relaxed);
        if cfg.publish && !withdrawn && !set.is_empty() && ((changed && settled) || due) {
            let mut entry = Entry::new_client(inner.endpoint.public_key(), set.clone());
            sequence = sequence.saturating_add(1).max(unix_ms_now());
            entry.sequence = sequence;
            entry.sign(inner.endpoint.secret());
            match inner.discovery.post_entry(entry).await {
                Ok(()) => {
                    tracing::debug!(servers = set.len(), "client entry published");
                    published = Some((set, now));
                    dirty_since = None;
                }
                Err(e) => tracing::warn!(error = %e, "could not publish the client entry"),
            }
        }
        tokio::select! {
            _ = inner.changed.notified() => {}
            _ = tokio::time::sleep(cfg.maintain_interval) => {}
        }
    }
}
