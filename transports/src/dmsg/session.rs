//! The client side of DMSG sessions: an [`Endpoint`] (one identity, one port table, one replay
//! guard) holds [`ClientSession`]s to relay servers, dials streams through them and accepts
//! streams on its listeners.
//!
//! Each session's yamux connection is polled by one owner task ([`Mux`]); inbound stream
//! handshakes run outside the accept loop, concurrently but bounded (`max_inbound_handshakes`),
//! each under a deadline, so one slow or malicious peer cannot stall the others, and a failed
//! inbound handshake closes only that stream.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use skytower_layers::HandshakeQueueLayer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::task::AbortOnDrop;
use tower::{Layer, Service, ServiceExt};

use super::handshake::{self, HandshakeError, SessionParams};
use super::mux::{self, Mux, MuxConfig, MuxStats, MuxStream, Opener};
use super::ports::{Listener, PortError, Ports};
use super::replay::ReplayGuard;
use super::stream::{self, DialError, DmsgStream};
use super::wire::{Addr, Code};
use crate::identity::{PublicKey, SecretKey};

/// Settings of an [`Endpoint`] and its sessions.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Bound on TCP connect + session handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// Bound on each stream handshake, dialing or accepting. Default 10 s.
    pub stream_handshake_timeout: Duration,
    /// Inbound stream handshakes in progress at once per session. Default 64.
    pub max_inbound_handshakes: usize,
    /// Inbound stream handshakes waiting for a slot per session (beyond: `OverLimit`). Default 1024.
    pub inbound_handshake_queue: usize,
    /// Accept queue of each listener. Default 256.
    pub listener_backlog: usize,
    /// Replay window for inbound requests. Default 30 s.
    pub replay_window: Duration,
    /// Entries of the replay guard. Default 65 536.
    pub replay_capacity: usize,
    /// The AEAD of sessions and of streams this endpoint dials. Default
    /// [`Cipher::Auto`](super::cipher::Cipher::Auto): AES-GCM where the CPU accelerates it.
    pub cipher: super::cipher::Cipher,
    /// yamux settings.
    pub mux: MuxConfig,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            handshake_timeout: Duration::from_secs(10),
            stream_handshake_timeout: Duration::from_secs(10),
            max_inbound_handshakes: 64,
            inbound_handshake_queue: 1024,
            listener_backlog: 256,
            replay_window: Duration::from_secs(30),
            replay_capacity: 65_536,
            cipher: super::cipher::Cipher::Auto,
            mux: MuxConfig::default(),
        }
    }
}

/// Why a session could not be established.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// TCP connect failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// The server address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The handshake failed or was refused.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// Connect + handshake took longer than `handshake_timeout`.
    #[error("session handshake timed out")]
    Timeout,
}

struct EndpointInner {
    key: SecretKey,
    ports: Ports,
    replay: ReplayGuard,
    config: SessionConfig,
}

/// One DMSG identity on the client side: its key, ports and replay guard, shared by all its
/// sessions. Cheap to clone.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<EndpointInner>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("pk", &self.public_key())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint for `key`.
    pub fn new(key: SecretKey, config: SessionConfig) -> Self {
        let replay = ReplayGuard::new(config.replay_window, config.replay_capacity);
        Endpoint {
            inner: Arc::new(EndpointInner {
                key,
                ports: Ports::new(),
                replay,
                config,
            }),
        }
    }

    /// Our public key (our DMSG address without a port).
    pub fn public_key(&self) -> PublicKey {
        self.inner.key.public_key()
    }

    /// The identity key (for signing entries).
    pub(crate) fn secret(&self) -> &SecretKey {
        &self.inner.key
    }

    /// The port table (for counters).
    pub fn ports(&self) -> &Ports {
        &self.inner.ports
    }

    /// Listens on `port` (1–49151) on every session of this endpoint, with the configured
    /// backlog (`listener_backlog`).
    pub fn listen(&self, port: u16) -> Result<Listener, PortError> {
        self.listen_with_backlog(port, self.inner.config.listener_backlog)
    }

    /// Listens on `port` with an explicit accept backlog (streams waiting for `accept`; beyond
    /// it dialers get `OverLimit`).
    pub fn listen_with_backlog(&self, port: u16, backlog: usize) -> Result<Listener, PortError> {
        self.inner.ports.listen(port, backlog)
    }

    /// Connects to the server `server_pk` at `addr` over TCP (TCP_NODELAY) and runs the session
    /// handshake, all within `handshake_timeout`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server_pk: PublicKey,
    ) -> Result<ClientSession, SessionError> {
        let fut = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|source| SessionError::Connect { addr, source })?;
            let _ = tcp.set_nodelay(true);
            self.establish_inner(tcp, server_pk).await
        };
        self.within_handshake_timeout(fut).await
    }

    async fn within_handshake_timeout<F>(&self, fut: F) -> Result<ClientSession, SessionError>
    where
        F: Future<Output = Result<ClientSession, SessionError>>,
    {
        tokio::time::timeout(self.inner.config.handshake_timeout, fut)
            .await
            .map_err(|_| SessionError::Timeout)?
    }

    /// Runs the session handshake over an already-connected byte stream (any transport).
    pub async fn establish<T>(
        &self,
        io: T,
        server_pk: PublicKey,
    ) -> Result<ClientSession, SessionError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.within_handshake_timeout(self.establish_inner(io, server_pk))
            .await
    }

    async fn establish_inner<T>(
        &self,
        io: T,
        server_pk: PublicKey,
    ) -> Result<ClientSession, SessionError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = Counted {
            io,
            counters: Arc::new(IoCounters::default()),
        };
        let counters = io.counters.clone();
        let cipher = self.inner.config.cipher;
        let (transport, params) =
            handshake::connect_with(io, &self.inner.key, &server_pk, cipher).await?;
        let mut mux = Mux::spawn(transport, mux::Mode::Client, self.inner.config.mux.clone());
        let inbound = mux.take_inbound();
        let opener = mux.opener();
        let acceptor = tokio::spawn(accept_loop(self.clone(), inbound));
        tracing::debug!(server = %server_pk, "session established");
        Ok(ClientSession {
            endpoint: self.clone(),
            server: server_pk,
            params,
            opener,
            mux,
            acceptor: AbortOnDrop::new(&acceptor),
            connected_at: std::time::SystemTime::now(),
            counters,
            last_rtt: std::sync::Mutex::new(None),
        })
    }
}

async fn accept_loop(endpoint: Endpoint, mut inbound: mux::Inbound) {
    let cfg = &endpoint.inner.config;
    // Handshakes run in their own tasks, at most `max_inbound_handshakes` at once with a bounded
    // wait queue, each within `stream_handshake_timeout` from its arrival (HandshakeQueue).
    let queue = HandshakeQueueLayer::new()
        .max_in_flight(cfg.max_inbound_handshakes)
        .max_queued(cfg.inbound_handshake_queue)
        .timeout(cfg.stream_handshake_timeout);
    let queue_handle = queue.handle();
    let ep = endpoint.clone();
    let mut handshaker = queue.layer(tower::service_fn(move |s: MuxStream| {
        let ep = ep.clone();
        async move {
            let inner = &ep.inner;
            stream::accept(s, &inner.key, &inner.ports, &inner.replay).await
        }
    }));
    // When the queue is full, a small pool answers with a signed `OverLimit` refusal.
    let refusers = Arc::new(Semaphore::new(cfg.max_inbound_handshakes.max(1)));
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            s = inbound.accept() => {
                let Some(mut s) = s else { break };
                if !queue_handle.is_full() {
                    let Ok(svc) = handshaker.ready().await else { break };
                    let fut = svc.call(s);
                    tasks.spawn(async move {
                        if let Err(e) = fut.await {
                            tracing::debug!(error = %e, "inbound stream not delivered");
                        }
                    });
                } else if let Ok(permit) = refusers.clone().try_acquire_owned() {
                    let key = endpoint.clone();
                    let deadline = cfg.stream_handshake_timeout;
                    tasks.spawn(async move {
                        let work = stream::refuse_unread(&mut s, &key.inner.key, Code::OverLimit);
                        let _ = tokio::time::timeout(deadline, work).await;
                        drop(permit);
                    });
                } else {
                    tracing::debug!("inbound stream reset: handshake queue and refusers full");
                    drop(s);
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// A session with one relay server.
///
/// Dropping it closes the session (gracefully, bounded) and ends its tasks; streams opened
/// through it fail.
#[derive(Debug)]
pub struct ClientSession {
    endpoint: Endpoint,
    server: PublicKey,
    params: SessionParams,
    opener: Opener,
    mux: Mux,
    acceptor: AbortOnDrop,
    connected_at: std::time::SystemTime,
    counters: Arc<IoCounters>,
    last_rtt: std::sync::Mutex<Option<Duration>>,
}

impl ClientSession {
    /// The server's public key.
    pub fn server(&self) -> PublicKey {
        self.server
    }

    /// What the server announced.
    pub fn params(&self) -> SessionParams {
        self.params
    }

    /// When the session was established.
    pub fn connected_at(&self) -> std::time::SystemTime {
        self.connected_at
    }

    /// Live counters (open streams, accepted, reset).
    pub fn stats(&self) -> &Arc<MuxStats> {
        self.mux.stats()
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.opener.is_closed()
    }

    /// Opens an end-to-end encrypted stream to `dst` through this session's server, within
    /// `stream_handshake_timeout`. Cancel-safe: dropping the future leaves no stream open and no
    /// port reserved.
    pub async fn dial(&self, dst: Addr) -> Result<DmsgStream, DialError> {
        let inner = &self.endpoint.inner;
        let port = inner.ports.ephemeral()?;
        let cipher = inner.config.cipher;
        let work = stream::dial(&self.opener, &inner.key, &self.server, port, dst, cipher);
        tokio::time::timeout(inner.config.stream_handshake_timeout, work)
            .await
            .map_err(|_| DialError::Timeout)?
    }

    /// Sends a keep-alive to the server and returns the round-trip time.
    pub async fn ping(&self) -> Result<Duration, DialError> {
        let start = tokio::time::Instant::now();
        tokio::time::timeout(
            self.endpoint.inner.config.stream_handshake_timeout,
            stream::ping(&self.opener),
        )
        .await
        .map_err(|_| DialError::Timeout)??;
        let rtt = start.elapsed();
        *self
            .last_rtt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(rtt);
        Ok(rtt)
    }

    /// Bytes received and sent on the session's connection (encrypted, all streams).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.counters.read.load(Ordering::Relaxed),
            self.counters.written.load(Ordering::Relaxed),
        )
    }

    /// The round-trip time measured by the last successful [`ping`](Self::ping).
    pub fn last_rtt(&self) -> Option<Duration> {
        *self
            .last_rtt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Closes the session gracefully.
    pub async fn close(self) {
        let ClientSession { mux, acceptor, .. } = self;
        drop(acceptor);
        let _ = mux.close().await;
    }

    /// Waits until the session ends (server gone, connection broken).
    pub async fn closed(&mut self) {
        let _ = self.mux.closed().await;
    }
}

/// Byte counters of one connection.
#[derive(Debug, Default)]
struct IoCounters {
    read: AtomicU64,
    written: AtomicU64,
}

/// A byte stream that counts what crosses it.
struct Counted<T> {
    io: T,
    counters: Arc<IoCounters>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.counters.read.fetch_add(n, Ordering::Relaxed);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.counters.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
