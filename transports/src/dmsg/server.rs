//! The DMSG relay server (`docs/protocol.md` §2–3): accepts sessions from clients, forwards
//! stream requests between the sessions of two clients, and bridges the accepted streams.
//!
//! Everything is bounded and owned:
//! - session handshakes run under a [`HandshakeQueueLayer`] (64 in flight, 10 s from accept,
//!   bounded wait queue; beyond it the TCP connection is dropped at once);
//! - at most `max_sessions` sessions (further clients get an authenticated `MaxSessions`
//!   refusal in handshake message 2); a second session from the same key replaces the first;
//! - at most `max_streams_per_session` relayed streams per session (`OverLimit` refusals beyond);
//! - every await on the forward path has a deadline; bridges close both streams on an error
//!   and after `bridge_idle_timeout` without traffic;
//! - every task belongs to a [`JoinSet`] of its owner (server → sessions → streams), so
//!   shutting down or losing a session ends everything under it. [`ServerStats`] exposes the
//!   counts a leak test needs.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use skytower_transports::dmsg::server::{Server, ServerConfig};
//! use skytower_transports::identity::SecretKey;
//!
//! let server = Server::bind(SecretKey::generate().unwrap(), "127.0.0.1:0".parse().unwrap(),
//!     ServerConfig::default()).await?;
//! println!("dmsg server {} on {}", server.public_key(), server.local_addr());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use skytower_layers::handshake_queue::{HandshakeQueueHandle, HandshakeQueueLayer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tower::{Layer, Service, ServiceExt};

use super::disc::{DeleteRequest, Discovery, Entry};
use super::handshake::{self, Admission, HandshakeError, RefuseReason};
use super::mux::{self, Mux, MuxConfig, MuxStream, Opener};
use super::noise::NoiseStream;
use super::replay::{ReplayError, ReplayGuard, unix_ms_now};
use super::stream::{digest, refuse, refuse_unread};
use super::wire::{self, Code, Probe, SignedRequest, SignedResponse};
use crate::identity::{PublicKey, SecretKey};
use crate::task::AbortOnDrop;

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Sessions at once. Default 2048.
    pub max_sessions: usize,
    /// Relayed streams at once per session. Default 2048.
    pub max_streams_per_session: u16,
    /// Session handshakes in flight. Default 64.
    pub handshake_concurrency: usize,
    /// Session handshakes waiting for a slot. Default 1024.
    pub handshake_queue: usize,
    /// Deadline of a session handshake, from accept. Default 10 s.
    pub handshake_timeout: Duration,
    /// Deadline of each step of the stream forward path (request read, open, response). Default 10 s.
    pub forward_timeout: Duration,
    /// A bridge with no traffic either way for this long is closed. Default 5 min.
    pub bridge_idle_timeout: Duration,
    /// Replay window. Default 30 s.
    pub replay_window: Duration,
    /// Replay guard capacity. Default 65 536.
    pub replay_capacity: usize,
    /// Copy buffer per direction of a bridge. Default 65 507 bytes
    /// ([`E2E_FRAME`](super::noise::E2E_FRAME): one end-to-end frame, so each yamux frame
    /// forwarded fills one session frame).
    pub copy_buffer: usize,
    /// yamux settings of every session.
    pub mux: MuxConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_sessions: 2048,
            max_streams_per_session: 2048,
            handshake_concurrency: 64,
            handshake_queue: 1024,
            handshake_timeout: Duration::from_secs(10),
            forward_timeout: Duration::from_secs(10),
            bridge_idle_timeout: Duration::from_secs(300),
            replay_window: Duration::from_secs(30),
            replay_capacity: 65_536,
            copy_buffer: super::noise::E2E_FRAME,
            mux: MuxConfig::default(),
        }
    }
}

/// Live counters of a server.
#[derive(Debug, Default)]
pub struct ServerStats {
    sessions: AtomicUsize,
    bridges: AtomicUsize,
    tasks: AtomicUsize,
    relayed_total: AtomicU64,
    refused_total: AtomicU64,
    sessions_refused_total: AtomicU64,
    handshake_failures_total: AtomicU64,
}

impl ServerStats {
    /// Sessions currently registered.
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }
    /// Streams currently bridged.
    pub fn bridges(&self) -> usize {
        self.bridges.load(Ordering::Relaxed)
    }
    /// Tasks of this server alive now (accept loop, handshakes, sessions, streams).
    pub fn tasks(&self) -> usize {
        self.tasks.load(Ordering::Relaxed)
    }
    /// Streams accepted by their destination and bridged, since the start.
    pub fn relayed_total(&self) -> u64 {
        self.relayed_total.load(Ordering::Relaxed)
    }
    /// Stream requests refused (by this server or relayed refusals), since the start.
    pub fn refused_total(&self) -> u64 {
        self.refused_total.load(Ordering::Relaxed)
    }
    /// Sessions refused at the handshake (limit, shutdown), since the start.
    pub fn sessions_refused_total(&self) -> u64 {
        self.sessions_refused_total.load(Ordering::Relaxed)
    }
    /// Session handshakes that failed (bad peers, timeouts), since the start.
    pub fn handshake_failures_total(&self) -> u64 {
        self.handshake_failures_total.load(Ordering::Relaxed)
    }
}

/// Counts a task as alive until dropped.
struct TaskGuard(Arc<ServerStats>);

impl TaskGuard {
    fn new(stats: &Arc<ServerStats>) -> Self {
        stats.tasks.fetch_add(1, Ordering::Relaxed);
        TaskGuard(stats.clone())
    }
}

/// Spawns `fut` into `set`, counted in [`ServerStats::tasks`] from now until it ends or is
/// aborted (the count is taken before spawning, so a task not yet polled is counted too).
fn spawn_counted<T, F>(set: &mut JoinSet<T>, stats: &Arc<ServerStats>, fut: F)
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let guard = TaskGuard::new(stats);
    set.spawn(async move {
        let _guard = guard;
        fut.await
    });
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.tasks.fetch_sub(1, Ordering::Relaxed);
    }
}

struct SessionEntry {
    id: u64,
    opener: Opener,
    /// Dropping it tells the session task to end (newest-wins replacement).
    _replaced: oneshot::Sender<()>,
}

struct Shared {
    key: SecretKey,
    config: ServerConfig,
    sessions: Mutex<HashMap<PublicKey, SessionEntry>>,
    replay: ReplayGuard,
    stats: Arc<ServerStats>,
    next_id: AtomicU64,
    shutting_down: AtomicBool,
    /// The session count, for registration updates.
    session_count: watch::Sender<usize>,
}

impl Shared {
    fn new(key: SecretKey, config: ServerConfig, replay: ReplayGuard) -> Arc<Self> {
        Arc::new(Shared {
            key,
            config,
            sessions: Mutex::new(HashMap::new()),
            replay,
            stats: Arc::new(ServerStats::default()),
            next_id: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            session_count: watch::channel(0).0,
        })
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<PublicKey, SessionEntry>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_session_count(&self, n: usize) {
        self.stats.sessions.store(n, Ordering::Relaxed);
        self.session_count.send_replace(n);
    }
}

/// A running DMSG relay server. Dropping it stops everything it runs (abruptly); prefer
/// [`shutdown`](Self::shutdown).
pub struct Server {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    queue: HandshakeQueueHandle,
    accept_task: Option<AbortOnDrop>,
    registration: Option<(AbortOnDrop, Arc<dyn Discovery>)>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("pk", &self.public_key())
            .field("addr", &self.local_addr)
            .field("sessions", &self.shared.stats.sessions())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds `addr` and starts serving.
    pub async fn bind(
        key: SecretKey,
        addr: SocketAddr,
        config: ServerConfig,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Server::serve(key, listener, config))
    }

    /// Starts serving on an already-bound listener.
    pub fn serve(key: SecretKey, listener: TcpListener, config: ServerConfig) -> Server {
        let local_addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        // Preallocated: the server's memory must not creep up with the requests it has seen.
        let replay = ReplayGuard::preallocated(config.replay_window, config.replay_capacity);
        let queue_layer = HandshakeQueueLayer::new()
            .max_in_flight(config.handshake_concurrency)
            .max_queued(config.handshake_queue)
            .timeout(config.handshake_timeout);
        let queue = queue_layer.handle();
        let shared = Shared::new(key, config, replay);
        let (stop_tx, stop_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let guard = TaskGuard::new(&shared.stats);
        let accept = accept_loop(shared.clone(), listener, queue_layer, stop_rx, done_tx);
        let task = tokio::spawn(async move {
            let _guard = guard;
            accept.await
        });
        Server {
            shared,
            local_addr,
            queue,
            accept_task: Some(AbortOnDrop::new(&task)),
            registration: None,
            stop: Some(stop_tx),
            done: Some(done_rx),
        }
    }

    /// The server's public key.
    pub fn public_key(&self) -> PublicKey {
        self.shared.key.public_key()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Live counters.
    pub fn stats(&self) -> &Arc<ServerStats> {
        &self.shared.stats
    }

    /// The session handshake queue (in-flight and queued counts, health).
    pub fn handshake_queue(&self) -> &HandshakeQueueHandle {
        &self.queue
    }

    /// Sessions free under `max_sessions` (what the server advertises in discovery).
    pub fn available_sessions(&self) -> usize {
        self.shared
            .config
            .max_sessions
            .saturating_sub(self.shared.stats.sessions())
    }

    /// Public keys of the clients connected now.
    pub fn clients(&self) -> Vec<PublicKey> {
        self.shared.sessions().keys().copied().collect()
    }

    /// Registers this server with `discovery` as reachable at `public_addr` (`host:port`), and
    /// keeps the entry fresh: re-posted every `refresh` (the discovery keeps server entries for
    /// two refresh periods) and, when the number of free sessions changes, at most once per
    /// second. The task belongs to the server; [`shutdown`](Self::shutdown) deletes the entry.
    pub fn register(
        &mut self,
        discovery: Arc<dyn Discovery>,
        public_addr: String,
        refresh: Duration,
    ) {
        let task = tokio::spawn(keep_registered(
            self.shared.clone(),
            discovery.clone(),
            public_addr,
            refresh,
        ));
        self.registration = Some((AbortOnDrop::new(&task), discovery));
    }

    /// Stops accepting, closes every session (their streams fail), and waits for every task of
    /// the server to end.
    pub async fn shutdown(mut self) {
        if let Some((task, discovery)) = self.registration.take() {
            drop(task);
            // Best effort: remove our entry so clients stop choosing this server.
            let delete = discovery.delete_entry(DeleteRequest::new(&self.shared.key));
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), delete).await {
                tracing::debug!(error = %e, "could not delete the discovery entry");
            }
        }
        self.shared.shutting_down.store(true, Ordering::Relaxed);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
        self.accept_task.take();
    }
}

/// Posts the server entry now, then on every `refresh` tick and (debounced to one per second)
/// when the free-session count changes. Failures are retried at the next tick or change.
async fn keep_registered(
    shared: Arc<Shared>,
    discovery: Arc<dyn Discovery>,
    address: String,
    refresh: Duration,
) {
    let mut counts = shared.session_count.subscribe();
    let mut sequence = 0u64;
    let mut ticker = tokio::time::interval(refresh.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate
    let mut last_posted: Option<u32> = None;
    loop {
        let available = shared
            .config
            .max_sessions
            .saturating_sub(*counts.borrow_and_update());
        let available = u32::try_from(available).unwrap_or(u32::MAX);
        let mut entry = Entry::new_server(shared.key.public_key(), address.clone(), available);
        // Sequences survive restarts: they follow the clock, and always increase.
        sequence = sequence.saturating_add(1).max(unix_ms_now());
        entry.sequence = sequence;
        entry.sign(&shared.key);
        match discovery.post_entry(entry).await {
            Ok(()) => {
                last_posted = Some(available);
                tracing::debug!(available, "server entry posted");
            }
            Err(e) => tracing::warn!(error = %e, "could not post the server entry"),
        }
        loop {
            tokio::select! {
                _ = ticker.tick() => break,
                changed = counts.changed() => {
                    if changed.is_err() {
                        return; // the server is gone
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let now = shared.config.max_sessions.saturating_sub(*counts.borrow());
                    if last_posted != Some(u32::try_from(now).unwrap_or(u32::MAX)) {
                        break;
                    }
                }
            }
        }
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    queue: HandshakeQueueLayer,
    mut stop: oneshot::Receiver<()>,
    done: oneshot::Sender<()>,
) {
    let handshaker = {
        let shared = shared.clone();
        tower::service_fn(move |tcp: TcpStream| {
            let shared = shared.clone();
            async move {
                let admit = || {
                    if shared.shutting_down.load(Ordering::Relaxed) {
                        Admission::Refuse(RefuseReason::ShuttingDown)
                    } else if shared.stats.sessions() >= shared.config.max_sessions {
                        Admission::Refuse(RefuseReason::MaxSessions)
                    } else {
                        Admission::Accept {
                            max_streams: shared.config.max_streams_per_session,
                        }
                    }
                };
                handshake::accept(tcp, &shared.key, admit).await
            }
        })
    };
    let mut handshaker = queue.layer(handshaker);
    let mut handshakes = JoinSet::new();
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Per-connection errors (e.g. the peer reset before accept) are not fatal.
                        tracing::debug!(error = %e, "accept failed");
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let fut = match handshaker.ready().await {
                    Ok(svc) => svc.call(tcp),
                    Err(e) => {
                        tracing::debug!(error = %e, "handshake queue unavailable");
                        continue;
                    }
                };
                spawn_counted(&mut handshakes, &shared.stats, async move { (peer, fut.await) });
            }
            Some(joined) = handshakes.join_next(), if !handshakes.is_empty() => {
                let Ok((peer, result)) = joined else { continue };
                match result {
                    Ok((transport, client)) => {
                        start_session(&shared, &mut sessions, transport, client);
                    }
                    Err(e) => {
                        let refused = e
                            .downcast_ref::<HandshakeError>()
                            .is_some_and(|h| matches!(h, HandshakeError::Refused(_)));
                        if refused {
                            shared.stats.sessions_refused_total.fetch_add(1, Ordering::Relaxed);
                        } else {
                            shared.stats.handshake_failures_total.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::debug!(%peer, error = %e, "session handshake failed");
                    }
                }
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    drop(listener);
    handshakes.shutdown().await;
    // Ask every session to close gracefully (bounded by the mux close timeout), then wait.
    {
        let mut map = shared.sessions();
        map.clear();
        shared.set_session_count(0);
    }
    let close_bound = shared.config.mux.close_timeout + Duration::from_secs(1);
    if tokio::time::timeout(close_bound, async {
        while sessions.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        sessions.shutdown().await;
    }
    let _ = done.send(());
}

fn start_session(
    shared: &Arc<Shared>,
    sessions: &mut JoinSet<()>,
    transport: NoiseStream<TcpStream>,
    client: PublicKey,
) {
    let mux = Mux::spawn(transport, mux::Mode::Server, shared.config.mux.clone());
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (replaced_tx, replaced_rx) = oneshot::channel();
    let previous = {
        let mut map = shared.sessions();
        let previous = map.insert(
            client,
            SessionEntry {
                id,
                opener: mux.opener(),
                _replaced: replaced_tx,
            },
        );
        shared.set_session_count(map.len());
        previous
    };
    if previous.is_some() {
        // Dropping the old entry's sender tells the old session to close (newest wins).
        tracing::info!(%client, "new session replaces the previous one");
    }
    drop(previous);
    let session = run_session(shared.clone(), mux, client, id, replaced_rx);
    spawn_counted(sessions, &shared.stats, session);
}

async fn run_session(
    shared: Arc<Shared>,
    mut mux: Mux,
    client: PublicKey,
    id: u64,
    mut replaced: oneshot::Receiver<()>,
) {
    tracing::debug!(%client, "session open");
    let cfg = &shared.config;
    let slots = Arc::new(Semaphore::new(
        usize::from(cfg.max_streams_per_session).max(1),
    ));
    let refusers = Arc::new(Semaphore::new(64));
    let mut streams = JoinSet::new();
    let mut inbound = mux.take_inbound();
    loop {
        tokio::select! {
            _ = &mut replaced => break,
            s = inbound.accept() => {
                let Some(mut s) = s else { break };
                if let Ok(permit) = slots.clone().try_acquire_owned() {
                    let shared2 = shared.clone();
                    spawn_counted(&mut streams, &shared.stats, async move {
                        relay(&shared2, client, s).await;
                        drop(permit);
                    });
                } else if let Ok(permit) = refusers.clone().try_acquire_owned() {
                    let shared2 = shared.clone();
                    spawn_counted(&mut streams, &shared.stats, async move {
                        let shared = shared2;
                        let deadline = shared.config.forward_timeout;
                        let work = refuse_unread(&mut s, &shared.key, Code::OverLimit);
                        let _ = tokio::time::timeout(deadline, work).await;
                        shared.stats.refused_total.fetch_add(1, Ordering::Relaxed);
                        drop(permit);
                    });
                } else {
                    drop(s); // reset: both pools are full
                }
            }
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
    // Unregister (only if this session is still the registered one), then close.
    {
        let mut map = shared.sessions();
        if map.get(&client).is_some_and(|e| e.id == id) {
            map.remove(&client);
        }
        shared.set_session_count(map.len());
    }
    streams.shutdown().await;
    let _ = mux.close().await;
    tracing::debug!(%client, "session closed");
}

/// Handles one stream opened by `client`: verify, forward, bridge. Every step has a deadline;
/// every refusal is signed by this server and written before the stream is closed.
async fn relay(shared: &Arc<Shared>, client: PublicKey, mut a: MuxStream) {
    let deadline = shared.config.forward_timeout;
    let outcome = tokio::time::timeout(deadline, forward(shared, client, &mut a)).await;
    let b = match outcome {
        Ok(Ok(Some(b))) => b,
        Ok(Ok(None)) => return, // answered (pong or refusal)
        Ok(Err(e)) => {
            tracing::debug!(%client, error = %e, "stream forward failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%client, "stream forward timed out");
            shared.stats.refused_total.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    shared.stats.relayed_total.fetch_add(1, Ordering::Relaxed);
    shared.stats.bridges.fetch_add(1, Ordering::Relaxed);
    bridge(
        a,
        b,
        shared.config.bridge_idle_timeout,
        shared.config.copy_buffer,
    )
    .await;
    shared.stats.bridges.fetch_sub(1, Ordering::Relaxed);
}

/// Reads and checks the request; returns the destination stream when the destination accepted.
async fn forward(
    shared: &Arc<Shared>,
    client: PublicKey,
    a: &mut MuxStream,
) -> Result<Option<MuxStream>, wire::WireError> {
    let body = wire::read_frame(a).await?;
    if wire::frame_type(&body) == Some(0x03) {
        if let Probe::Ping(n) = Probe::decode(&body)? {
            wire::write_frame(a, &Probe::Pong(n).encode()).await?;
            a.shutdown().await?;
        }
        return Ok(None);
    }
    let hash = digest(&body);
    let refuse_with = |code: Code| {
        shared.stats.refused_total.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%client, %code, "stream request refused");
        code
    };
    let request = match SignedRequest::decode(&body) {
        Ok(r) => r,
        Err(e) => {
            let code = match e {
                wire::WireError::BadSignature(_) => Code::BadSignature,
                _ => Code::Malformed,
            };
            refuse(a, &shared.key, hash, refuse_with(code)).await?;
            return Ok(None);
        }
    };
    let req = request.request();
    let check = if req.src.pk != client {
        Err(Code::WrongSource)
    } else if shared.shutting_down.load(Ordering::Relaxed) {
        Err(Code::ShuttingDown)
    } else {
        shared
            .replay
            .check(&req.src.pk, &req.nonce, req.timestamp_ms)
            .map_err(|e| match e {
                ReplayError::Stale => Code::Stale,
                ReplayError::Replay => Code::Replay,
                ReplayError::Full => Code::OverLimit,
            })
    };
    if let Err(code) = check {
        refuse(a, &shared.key, hash, refuse_with(code)).await?;
        return Ok(None);
    }
    // Clone the destination's opener and release the lock before any I/O.
    let opener = shared.sessions().get(&req.dst.pk).map(|e| e.opener.clone());
    let Some(opener) = opener else {
        refuse(a, &shared.key, hash, refuse_with(Code::NotConnected)).await?;
        return Ok(None);
    };
    let forwarded = async {
        let mut b = opener.open().await.map_err(io::Error::other)?;
        wire::write_frame(&mut b, request.as_bytes()).await?;
        let body = wire::read_frame(&mut b).await?;
        // B's session is authenticated and A verifies B's signature: no need to verify here.
        let response = SignedResponse::decode_unverified(&body)?;
        Ok::<_, wire::WireError>((b, response, body))
    }
    .await;
    let (b, response, raw) = match forwarded {
        Ok(ok) => ok,
        Err(e) => {
            tracing::debug!(%client, dst = %req.dst, error = %e, "forward to destination failed");
            refuse(a, &shared.key, hash, refuse_with(Code::ForwardFailed)).await?;
            return Ok(None);
        }
    };
    let r = response.response();
    if r.signer != req.dst.pk || r.request_hash != hash {
        refuse(a, &shared.key, hash, refuse_with(Code::ForwardFailed)).await?;
        return Ok(None);
    }
    wire::write_frame(a, &raw).await?;
    if r.code != Code::Accepted {
        shared.stats.refused_total.fetch_add(1, Ordering::Relaxed);
        a.shutdown().await?;
        return Ok(None);
    }
    Ok(Some(b))
}

/// Copies both ways until both directions end (a half-close is forwarded), an error on either
/// side, or `idle` without a byte moving; then both streams are dropped.
async fn bridge(a: MuxStream, b: MuxStream, idle: Duration, buffer: usize) {
    let start = tokio::time::Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut a = Tracked {
        io: a,
        start,
        last: last.clone(),
    };
    let mut b = Tracked {
        io: b,
        start,
        last: last.clone(),
    };
    // Buffers exist only while data flows: an idle bridge holds none.
    let copy = super::copy::copy_bidirectional_lazy(&mut a, &mut b, buffer);
    let watchdog = async {
        loop {
            let seen = Duration::from_millis(last.load(Ordering::Relaxed));
            let due = start + seen + idle;
            if tokio::time::Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    };
    tokio::select! {
        r = copy => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "bridge ended with an error");
            }
        }
        _ = watchdog => tracing::debug!("bridge idle timeout"),
    }
}

/// A stream that records when it last moved bytes (either way).
struct Tracked {
    io: MuxStream,
    start: tokio::time::Instant,
    last: Arc<AtomicU64>,
}

impl Tracked {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dmsg::disc::MemoryDiscovery;

    fn shared(max_sessions: usize) -> Arc<Shared> {
        let config = ServerConfig {
            max_sessions,
            ..ServerConfig::default()
        };
        let replay = ReplayGuard::new(Duration::from_secs(30), 16);
        Shared::new(SecretKey::generate().unwrap(), config, replay)
    }

    fn available(d: &MemoryDiscovery, pk: &PublicKey) -> Option<(u32, u64)> {
        d.get(pk)
            .and_then(|e| e.server.map(|s| (s.available_sessions, e.sequence)))
    }

    #[tokio::test(start_paused = true)]
    async fn registration_posts_at_once_then_on_changes_and_refresh() {
        let shared = shared(100);
        let pk = shared.key.public_key();
        let d = MemoryDiscovery::default();
        let task = tokio::spawn(keep_registered(
            shared.clone(),
            Arc::new(d.clone()),
            "127.0.0.1:9".into(),
            Duration::from_secs(60),
        ));
        tokio::task::yield_now().await;
        let (free, seq0) = available(&d, &pk).unwrap();
        assert_eq!(free, 100);
        // A change is posted after the 1 s debounce, not before.
        shared.set_session_count(5);
        tokio::time::sleep(Duration::from_millis(999)).await;
        assert_eq!(available(&d, &pk).unwrap().0, 100);
        tokio::time::sleep(Duration::from_millis(2)).await;
        let (free, seq1) = available(&d, &pk).unwrap();
        assert_eq!(free, 95);
        assert!(seq1 > seq0);
        // A burst of changes that ends where it started posts nothing.
        shared.set_session_count(6);
        shared.set_session_count(5);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(available(&d, &pk).unwrap().1, seq1);
        // The refresh re-posts unchanged content with a higher sequence.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let (free, seq2) = available(&d, &pk).unwrap();
        assert_eq!(free, 95);
        assert!(seq2 > seq1);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn registration_survives_discovery_rejections() {
        let shared = shared(10);
        let pk = shared.key.public_key();
        let d = MemoryDiscovery::default();
        // An entry from a "previous run" with a far-future sequence blocks our posts...
        let mut stale = Entry::new_server(pk, "127.0.0.1:9", 1);
        stale.sequence = u64::MAX;
        stale.sign(&shared.key);
        d.post_entry(stale).await.unwrap();
        let task = tokio::spawn(keep_registered(
            shared.clone(),
            Arc::new(d.clone()),
            "127.0.0.1:9".into(),
            Duration::from_secs(60),
        ));
        tokio::time::sleep(Duration::from_secs(61)).await;
        // ...the loop keeps running (logs and retries) instead of dying.
        assert!(!task.is_finished());
        // Once the stale entry expires, the next refresh registers us.
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(available(&d, &pk).unwrap().0, 10);
        task.abort();
    }
}
