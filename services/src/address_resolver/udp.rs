//! The resolver's UDP side (SUDPH): one socket, one receive loop, the handshake queue.
//!
//! - **Receive loop** (one task): reads datagrams into a fixed buffer of
//!   [`MAX_DATAGRAM`]` + 1` bytes, decodes them ([`wire`](super::wire): length checks and copies
//!   only), and drops and counts anything malformed, oversized or going the wrong way. It never
//!   awaits a store or a peer: replies go out with `try_send_to` (a full socket buffer drops the
//!   reply, counted), so nothing a peer sends can stall it.
//! - **Hello → Challenge** is stateless (a [`CookieJar`] cookie): a flood of hellos, spoofed or
//!   not, leaves no state behind and is answered with a smaller datagram.
//! - **Answer → Bound**: an answer with a valid cookie (so from a peer that receives at its
//!   source address) is a handshake, submitted to the [`HandshakeQueue`](skytower_layers::handshake_queue::HandshakeQueue): at most
//!   `handshake_concurrency` (64) run at once, at most `handshake_queue` wait, each must finish
//!   within `handshake_timeout` (10 s) of submission, and beyond the queue it is refused at once
//!   (`Error busy`). The handshake checks the cookie was not used before, verifies the
//!   signature, checks the observed address, writes the binding and answers `Bound`.
//! - **Heartbeat / Unbind**: refresh or delete the binding when key, session and address match;
//!   at most `max_store_ops` run at once, more are dropped (the next heartbeat comes 10 s later).
//! - **Punch** notices are sent by the HTTP `resolve` handler through [`UdpServer::punch`].
//!
//! Counters: [`UdpStats`] (exposed in `/health` and to tests).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use skytower_layers::check::{CheckFuture, CheckReport, HealthCheck};
use skytower_layers::handshake_queue::{
    HandshakeQueueHandle, HandshakeQueueLayer, HandshakeTimeout, Overloaded,
};
use skytower_transports::dmsg::replay::{ReplayError, ReplayGuard};
use skytower_transports::identity::PublicKey;
use skytower_transports::task::AbortOnDrop;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::{Layer, Service, ServiceExt};

use super::bindings::{Binding, Bindings, Refresh, Transport};
use super::cookie::CookieJar;
use super::wire::{
    Answer, AnswerError, Datagram, ErrorCode, MAX_DATAGRAM, SessionId, canonical_addr,
};

/// Settings of the UDP side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpConfig {
    /// Most handshakes running at once (default 64).
    pub handshake_concurrency: usize,
    /// Most handshakes waiting for a slot (default 256); beyond, refused at once.
    pub handshake_queue: usize,
    /// Time limit of a handshake from submission, and lifetime of a challenge (default 10 s).
    pub handshake_timeout: Duration,
    /// Accept non-public observed addresses (loopback, private, link-local: local networks and
    /// tests).
    pub allow_loopback: bool,
    /// Most heartbeat/unbind store operations at once (default 256); more are dropped.
    pub max_store_ops: usize,
    /// Most remembered used challenges (replay protection, default 65 536).
    pub replay_capacity: usize,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            handshake_concurrency: 64,
            handshake_queue: 256,
            handshake_timeout: Duration::from_secs(10),
            allow_loopback: false,
            max_store_ops: 256,
            replay_capacity: 65_536,
        }
    }
}

/// Counters of the UDP side (monotonic totals, plus the running handshakes and their peak).
#[derive(Debug, Default)]
pub struct UdpStats {
    /// Datagrams received.
    pub datagrams: AtomicU64,
    /// Datagrams dropped as malformed (bad magic/version/kind/length/padding, oversized, or a
    /// kind the resolver never receives).
    pub malformed: AtomicU64,
    /// Challenges sent.
    pub challenges: AtomicU64,
    /// Answers with an invalid or expired cookie (not admitted as handshakes).
    pub bad_cookies: AtomicU64,
    /// Handshakes that bound a node.
    pub handshakes_ok: AtomicU64,
    /// Handshakes that failed (bad signature, replayed cookie, refused address, store error).
    pub handshakes_failed: AtomicU64,
    /// Handshakes running in the queue's inner service right now (doing their work, not just
    /// holding a slot).
    pub running: AtomicU64,
    /// The highest `running` seen.
    pub peak_running: AtomicU64,
    /// The highest number of handshake queue slots in use seen (sampled at every admission
    /// and every start, the only moments it grows).
    pub peak_in_flight: AtomicU64,
    /// Heartbeats that refreshed a binding.
    pub heartbeats: AtomicU64,
    /// Heartbeats for no binding (wrong session or address).
    pub heartbeats_unknown: AtomicU64,
    /// Heartbeats and unbinds dropped because `max_store_ops` were running.
    pub store_ops_dropped: AtomicU64,
    /// Bindings deleted by `Unbind`.
    pub unbinds: AtomicU64,
    /// Punch notices sent.
    pub punches: AtomicU64,
    /// Replies that could not be sent (socket buffer full, or an error).
    pub send_failures: AtomicU64,
    /// Receive errors.
    pub recv_errors: AtomicU64,
}

/// A copy of [`UdpStats`] plus the handshake queue's counts, as `/health` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UdpSnapshot {
    /// Datagrams received.
    pub datagrams: u64,
    /// Malformed datagrams dropped.
    pub malformed: u64,
    /// Challenges sent.
    pub challenges: u64,
    /// Answers with a bad cookie.
    pub bad_cookies: u64,
    /// Successful handshakes.
    pub handshakes_ok: u64,
    /// Failed handshakes.
    pub handshakes_failed: u64,
    /// Handshakes in flight in the queue (holding a slot).
    pub in_flight: u64,
    /// Handshakes waiting in the queue.
    pub queued: u64,
    /// Peak of queue slots in use (handshakes in flight) at once; never above the limit.
    pub peak_in_flight: u64,
    /// Peak of handshakes doing their work at once (at most the runtime's threads).
    pub peak_running: u64,
    /// Handshakes refused because the queue was full.
    pub refused: u64,
    /// Handshakes that hit the time limit.
    pub timed_out: u64,
    /// Heartbeats that refreshed a binding.
    pub heartbeats: u64,
    /// Heartbeats for no binding.
    pub heartbeats_unknown: u64,
    /// Heartbeats/unbinds dropped under load.
    pub store_ops_dropped: u64,
    /// Unbinds.
    pub unbinds: u64,
    /// Punch notices sent.
    pub punches: u64,
    /// Replies not sent.
    pub send_failures: u64,
    /// Receive errors.
    pub recv_errors: u64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Decrements `running` when a handshake ends (however it ends).
struct Running(Arc<UdpStats>);

impl Running {
    fn start(stats: &Arc<UdpStats>, queue: &HandshakeQueueHandle) -> Self {
        let now = stats.running.fetch_add(1, Ordering::Relaxed) + 1;
        stats.peak_running.fetch_max(now, Ordering::Relaxed);
        sample_in_flight(stats, queue);
        Running(Arc::clone(stats))
    }
}

fn sample_in_flight(stats: &UdpStats, queue: &HandshakeQueueHandle) {
    stats
        .peak_in_flight
        .fetch_max(queue.in_flight() as u64, Ordering::Relaxed);
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match super::wire::canonical_ip(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 shared (CGNAT)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)) // 198.18/15 benchmarking
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

/// Whether an observed address may be bound: public, or (with `allow_loopback`) any unicast
/// address that is not unspecified.
pub fn address_allowed(ip: IpAddr, allow_loopback: bool) -> bool {
    let ip = super::wire::canonical_ip(ip);
    if is_public(ip) {
        return true;
    }
    let never = match ip {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    };
    allow_loopback && !never
}

/// What the socket, the loop and the handshakes share.
struct Shared {
    socket: Arc<UdpSocket>,
    bindings: Bindings,
    jar: CookieJar,
    replay: ReplayGuard,
    stats: Arc<UdpStats>,
    queue: HandshakeQueueHandle,
    config: UdpConfig,
    ttl_secs: u32,
}

impl Shared {
    fn send(&self, datagram: &Datagram, to: SocketAddr) {
        if let Err(e) = self.socket.try_send_to(&datagram.encode(), to) {
            inc(&self.stats.send_failures);
            tracing::trace!(%to, error = %e, "reply not sent");
        }
    }

    fn error(&self, code: ErrorCode, to: SocketAddr) {
        self.send(&Datagram::Error { code }, to);
    }
}

/// One admitted handshake: an answer with a valid cookie.
struct Job {
    answer: Answer,
    from: SocketAddr,
    issued_ms: u64,
}

/// The work of one handshake, run inside the queue.
async fn handshake(shared: Arc<Shared>, job: Job) -> Result<Datagram, ErrorCode> {
    let _running = Running::start(&shared.stats, &shared.queue);
    let Job {
        answer,
        from,
        issued_ms,
    } = job;
    let pk = PublicKey::from_bytes(&answer.pk).map_err(|_| ErrorCode::BadSignature)?;
    let mut tag = [0u8; 16];
    tag.copy_from_slice(&answer.cookie.0[8..]);
    match shared
        .replay
        .check_at(&pk, &tag, issued_ms, shared.jar.now_ms())
    {
        Ok(()) => {}
        Err(ReplayError::Full) => return Err(ErrorCode::Busy),
        Err(ReplayError::Replay | ReplayError::Stale) => return Err(ErrorCode::BadCookie),
    }
    answer.verify().map_err(|e| match e {
        AnswerError::Key(_) | AnswerError::Signature(_) => ErrorCode::BadSignature,
    })?;
    if !address_allowed(from.ip(), shared.config.allow_loopback) {
        return Err(ErrorCode::AddressRefused);
    }
    let session = SessionId::random().map_err(|_| ErrorCode::StoreFailed)?;
    let binding = Binding {
        pk,
        transport: Transport::Sudph,
        remote: from,
        port: answer.local_port,
        addresses: answer.addresses,
        session: Some(session.to_hex()),
    };
    shared.bindings.put(&binding).await.map_err(|e| {
        tracing::warn!(%pk, error = %e, "storing a SUDPH binding failed");
        ErrorCode::StoreFailed
    })?;
    tracing::debug!(%pk, %from, "SUDPH bound");
    Ok(Datagram::Bound {
        session,
        ttl_secs: shared.ttl_secs,
        observed: from,
    })
}

/// The resolver's UDP side. Dropping it stops the receive loop and every task it owns.
#[derive(Debug)]
pub struct UdpServer {
    socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
    stats: Arc<UdpStats>,
    queue: HandshakeQueueHandle,
    allow_loopback: bool,
    stop: CancellationToken,
    task: Option<(AbortOnDrop, tokio::task::JoinHandle<()>)>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl UdpServer {
    /// Starts serving on `socket`, writing bindings to `bindings`.
    ///
    /// # Errors
    ///
    /// When the OS has no randomness (the cookie key), or the socket has no local address.
    pub fn start(
        socket: UdpSocket,
        bindings: Bindings,
        config: UdpConfig,
    ) -> std::io::Result<UdpServer> {
        let local_addr = socket.local_addr()?;
        let socket = Arc::new(socket);
        let jar = CookieJar::new(config.handshake_timeout)
            .map_err(|e| std::io::Error::other(format!("os randomness: {e}")))?;
        let stats = Arc::new(UdpStats::default());
        let layer = HandshakeQueueLayer::new()
            .max_in_flight(config.handshake_concurrency)
            .max_queued(config.handshake_queue)
            .timeout(config.handshake_timeout);
        let queue = layer.handle();
        let ttl_secs = u32::try_from(bindings.ttl().as_secs()).unwrap_or(u32::MAX);
        let shared = Arc::new(Shared {
            socket: Arc::clone(&socket),
            bindings,
            jar,
            replay: ReplayGuard::new(config.handshake_timeout, config.replay_capacity),
            stats: Arc::clone(&stats),
            queue: queue.clone(),
            ttl_secs,
            config: config.clone(),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(receive_loop(shared, layer, stop.clone()));
        Ok(UdpServer {
            socket,
            local_addr,
            stats,
            queue,
            allow_loopback: config.allow_loopback,
            stop,
            task: Some((AbortOnDrop::new(&task), task)),
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The live counters.
    pub fn stats(&self) -> &Arc<UdpStats> {
        &self.stats
    }

    /// The handshake queue (in flight, queued, refused, timed out).
    pub fn queue(&self) -> &HandshakeQueueHandle {
        &self.queue
    }

    /// The counters and the queue's counts.
    pub fn snapshot(&self) -> UdpSnapshot {
        snapshot(&self.stats, &self.queue)
    }

    /// A health check reporting [`snapshot`](Self::snapshot): `degraded` while the handshake
    /// queue is full.
    pub fn health_check(&self) -> UdpCheck {
        UdpCheck {
            stats: Arc::clone(&self.stats),
            queue: self.queue.clone(),
            addr: self.local_addr,
        }
    }

    /// A handle sending punch notices through this server's socket (for the HTTP side).
    pub fn puncher(&self) -> Puncher {
        Puncher {
            socket: Arc::clone(&self.socket),
            stats: Arc::clone(&self.stats),
            allow_loopback: self.allow_loopback,
        }
    }

    /// See [`Puncher::punch`].
    pub fn punch(&self, target: &Binding, caller: &Binding) -> bool {
        self.puncher().punch(target, caller)
    }

    /// Stops the receive loop and every handshake and store operation it started, and waits
    /// until they are gone (the socket is closed when the last reference goes).
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some((_owner, task)) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Sends punch notices through the resolver's UDP socket. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Puncher {
    socket: Arc<UdpSocket>,
    stats: Arc<UdpStats>,
    allow_loopback: bool,
}

impl Puncher {
    /// Tells `target` (a SUDPH binding) that `caller` (another) wants to reach it, so it
    /// punches a hole towards the caller's address. Returns whether a notice was sent (not
    /// when the target has no session, the caller's address is not allowed, or the socket
    /// buffer is full).
    pub fn punch(&self, target: &Binding, caller: &Binding) -> bool {
        let Some(session) = target.session_id() else {
            return false;
        };
        if !address_allowed(caller.remote.ip(), self.allow_loopback) {
            return false;
        }
        let notice = Datagram::Punch {
            session,
            peer: caller.pk.to_bytes(),
            addr: caller.remote,
        };
        match self.socket.try_send_to(&notice.encode(), target.remote) {
            Ok(_) => {
                inc(&self.stats.punches);
                true
            }
            Err(e) => {
                inc(&self.stats.send_failures);
                tracing::debug!(to = %target.remote, error = %e, "punch notice not sent");
                false
            }
        }
    }
}

fn snapshot(stats: &UdpStats, queue: &HandshakeQueueHandle) -> UdpSnapshot {
    let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
    UdpSnapshot {
        datagrams: r(&stats.datagrams),
        malformed: r(&stats.malformed),
        challenges: r(&stats.challenges),
        bad_cookies: r(&stats.bad_cookies),
        handshakes_ok: r(&stats.handshakes_ok),
        handshakes_failed: r(&stats.handshakes_failed),
        in_flight: queue.in_flight() as u64,
        queued: queue.queued() as u64,
        peak_in_flight: r(&stats.peak_in_flight),
        peak_running: r(&stats.peak_running),
        refused: queue.refused_total(),
        timed_out: queue.timed_out_total(),
        heartbeats: r(&stats.heartbeats),
        heartbeats_unknown: r(&stats.heartbeats_unknown),
        store_ops_dropped: r(&stats.store_ops_dropped),
        unbinds: r(&stats.unbinds),
        punches: r(&stats.punches),
        send_failures: r(&stats.send_failures),
        recv_errors: r(&stats.recv_errors),
    }
}

/// The `udp` health check of the resolver (see [`UdpServer::health_check`]).
#[derive(Clone, Debug)]
pub struct UdpCheck {
    stats: Arc<UdpStats>,
    queue: HandshakeQueueHandle,
    addr: SocketAddr,
}

impl HealthCheck for UdpCheck {
    fn check(&self) -> CheckFuture<'_> {
        let snap = snapshot(&self.stats, &self.queue);
        let mut details = serde_json::to_value(&snap).unwrap_or_default();
        if let Some(map) = details.as_object_mut() {
            map.insert("addr".into(), self.addr.to_string().into());
            map.insert(
                "max_in_flight".into(),
                (self.queue.max_in_flight() as u64).into(),
            );
        }
        let report = if self.queue.is_full() {
            CheckReport::degraded(details)
        } else {
            CheckReport::ok().with_details(details)
        };
        Box::pin(std::future::ready(report))
    }
}

async fn receive_loop(shared: Arc<Shared>, layer: HandshakeQueueLayer, stop: CancellationToken) {
    let inner = {
        let shared = Arc::clone(&shared);
        tower::service_fn(move |job: Job| handshake(Arc::clone(&shared), job))
    };
    let mut queue = layer.layer(inner);
    let handle = queue.handle();
    // Admitted handshakes are at most in-flight + queued; refused ones finish on first poll and
    // are reaped every turn. The cap only guards against a bug.
    let max_tasks = handle.max_in_flight() + handle.max_queued() + 64;
    let mut handshakes: JoinSet<()> = JoinSet::new();
    let store_ops = Arc::new(Semaphore::new(shared.config.max_store_ops.max(1)));
    let mut ops: JoinSet<()> = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        while handshakes.try_join_next().is_some() {}
        while ops.try_join_next().is_some() {}
        let (n, from) = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            r = shared.socket.recv_from(&mut buf) => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // ICMP errors surface here on some systems; never fatal.
                    inc(&shared.stats.recv_errors);
                    tracing::debug!(error = %e, "UDP receive failed");
                    continue;
                }
            },
        };
        inc(&shared.stats.datagrams);
        let from = canonical_addr(from);
        let datagram = match Datagram::decode(&buf[..n]) {
            Ok(d) => d,
            Err(e) => {
                inc(&shared.stats.malformed);
                tracing::trace!(%from, error = %e, "malformed datagram dropped");
                continue;
            }
        };
        match datagram {
            Datagram::Hello { pk } => {
                let cookie = shared.jar.mint(&pk, from);
                inc(&shared.stats.challenges);
                shared.send(&Datagram::Challenge { cookie }, from);
            }
            Datagram::Answer(answer) => {
                let issued_ms = match shared.jar.check(&answer.cookie, &answer.pk, from) {
                    Ok(t) => t,
                    Err(e) => {
                        inc(&shared.stats.bad_cookies);
                        tracing::trace!(%from, error = %e, "answer refused");
                        shared.error(ErrorCode::BadCookie, from);
                        continue;
                    }
                };
                if handshakes.len() >= max_tasks {
                    inc(&shared.stats.handshakes_failed);
                    shared.error(ErrorCode::Busy, from);
                    continue;
                }
                let job = Job {
                    answer,
                    from,
                    issued_ms,
                };
                // Always ready (load-shed semantics): a full queue refuses in `call`.
                let fut = match queue.ready().await {
                    Ok(svc) => svc.call(job),
                    Err(e) => {
                        tracing::debug!(error = %e, "handshake queue unavailable");
                        continue;
                    }
                };
                sample_in_flight(&shared.stats, &handle);
                let shared = Arc::clone(&shared);
                handshakes.spawn(async move {
                    let reply = match fut.await {
                        Ok(bound) => {
                            inc(&shared.stats.handshakes_ok);
                            bound
                        }
                        Err(e) => {
                            let code = if let Some(code) = e.downcast_ref::<ErrorCode>() {
                                inc(&shared.stats.handshakes_failed);
                                *code
                            } else if e.is::<Overloaded>() {
                                ErrorCode::Busy
                            } else if e.is::<HandshakeTimeout>() {
                                ErrorCode::Timeout
                            } else {
                                inc(&shared.stats.handshakes_failed);
                                ErrorCode::StoreFailed
                            };
                            tracing::trace!(%from, %code, "handshake refused");
                            Datagram::Error { code }
                        }
                    };
                    shared.send(&reply, from);
                });
            }
            Datagram::Heartbeat { pk, session } | Datagram::Unbind { pk, session } => {
                let heartbeat = matches!(datagram, Datagram::Heartbeat { .. });
                let Ok(permit) = Arc::clone(&store_ops).try_acquire_owned() else {
                    inc(&shared.stats.store_ops_dropped);
                    continue;
                };
                let shared = Arc::clone(&shared);
                ops.spawn(async move {
                    let _permit = permit;
                    if heartbeat {
                        heartbeat_op(&shared, pk, session, from).await;
                    } else {
                        unbind_op(&shared, pk, session, from).await;
                    }
                });
            }
            Datagram::Challenge { .. }
            | Datagram::Bound { .. }
            | Datagram::Alive { .. }
            | Datagram::Punch { .. }
            | Datagram::Holepunch { .. }
            | Datagram::Error { .. } => {
                // Kinds the resolver sends, never receives.
                inc(&shared.stats.malformed);
                tracing::trace!(%from, "datagram of a resolver-sent kind dropped");
            }
        }
    }
    // Dropping the sets aborts the running handshakes and store operations.
    handshakes.shutdown().await;
    ops.shutdown().await;
}

async fn heartbeat_op(shared: &Shared, pk: [u8; 32], session: SessionId, from: SocketAddr) {
    match shared.bindings.refresh(&pk, &session, from).await {
        Ok(Refresh::Refreshed) => {
            inc(&shared.stats.heartbeats);
            shared.send(
                &Datagram::Alive {
                    session,
                    ttl_secs: shared.ttl_secs,
                },
                from,
            );
        }
        Ok(Refresh::Unknown) => {
            inc(&shared.stats.heartbeats_unknown);
            shared.error(ErrorCode::UnknownSession, from);
        }
        Err(e) => {
            tracing::debug!(error = %e, "heartbeat: store failed");
            shared.error(ErrorCode::StoreFailed, from);
        }
    }
}

async fn unbind_op(shared: &Shared, pk: [u8; 32], session: SessionId, from: SocketAddr) {
    match shared.bindings.unbind(&pk, &session, from).await {
        Ok(true) => inc(&shared.stats.unbinds),
        Ok(false) => {}
        Err(e) => tracing::debug!(error = %e, "unbind: store failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses() {
        for ip in ["8.8.8.8", "1.1.1.1", "2a00:1450::1", "::ffff:8.8.4.4"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(is_public(ip), "{ip}");
            assert!(address_allowed(ip, false));
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "0.1.2.3",
            "::1",
            "fd00::1",
            "fe80::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!is_public(ip), "{ip}");
            assert!(!address_allowed(ip, false), "{ip}");
            assert!(address_allowed(ip, true), "{ip} with --allow-loopback");
        }
        for ip in ["0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "ff02::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!address_allowed(ip, true), "{ip} is never allowed");
        }
    }
}
