//! The node's side of SUDPH: [`SudphClient`] binds a node's UDP socket at the resolver
//! (handshake), keeps the binding alive (heartbeat every 10 s), answers the resolver's punch
//! notices with a hole-punching datagram, and hands everything else that arrives on the socket
//! to the node ([`SudphEvent`]).
//!
//! The client owns the socket's receive side; the node sends its own datagrams through
//! [`SudphClient::socket`] and receives through [`SudphClient::next_event`].
//!
//! Handshake: `Hello` → `Challenge` → signed `Answer` → `Bound`, retried within
//! [`SudphConfig::handshake_deadline`]: a lost datagram (no reply within
//! [`reply_timeout`](SudphConfig::reply_timeout)) restarts from `Hello`; `busy` backs off
//! (100 ms doubling to 2 s, with jitter) and resends the answer while its challenge is valid;
//! `bad_signature` and `address_refused` are final. After the handshake, a heartbeat that the
//! resolver answers with `unknown_session`, or three unanswered heartbeats in a row, make the
//! client bind again (a [`SudphEvent::Rebound`] follows).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use skytower_services::address_resolver::sudph::{SudphClient, SudphConfig, SudphEvent};
//! use skytower_transports::identity::SecretKey;
//!
//! let key = Arc::new(SecretKey::generate()?);
//! let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
//! let mut client =
//!     SudphClient::connect(key, socket, SudphConfig::new("203.0.113.9:9093".parse()?)).await?;
//! println!("the resolver sees us at {}", client.binding().observed);
//! while let Some(event) = client.next_event().await {
//!     if let SudphEvent::PunchRequested { addr, .. } = event {
//!         println!("a peer at {addr} is about to dial us");
//!     }
//! }
//! client.close().await;
//! # Ok(()) }
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use skytower_transports::identity::SecretKey;
use skytower_transports::task::AbortOnDrop;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::wire::{Answer, Datagram, ErrorCode, SessionId, canonical_addr};

/// Settings of a [`SudphClient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SudphConfig {
    /// The resolver's UDP address.
    pub resolver: SocketAddr,
    /// Heartbeat period (default 10 s).
    pub heartbeat_interval: Duration,
    /// How long to wait for each reply of the resolver (default 1 s).
    pub reply_timeout: Duration,
    /// How long one handshake may take, retries included (default 30 s).
    pub handshake_deadline: Duration,
    /// Rebind after this many heartbeats in a row went unanswered (default 3).
    pub missed_heartbeats: u32,
    /// Local addresses to announce (for peers behind the same public IP; at most 8).
    pub local_addresses: Vec<IpAddr>,
    /// Capacity of the event queue; events beyond it are dropped and counted (default 256).
    pub events_capacity: usize,
}

impl SudphConfig {
    /// Defaults for the resolver at `resolver`.
    pub fn new(resolver: SocketAddr) -> Self {
        SudphConfig {
            resolver,
            heartbeat_interval: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(1),
            handshake_deadline: Duration::from_secs(30),
            missed_heartbeats: 3,
            local_addresses: Vec::new(),
            events_capacity: 256,
        }
    }
}

/// The node's binding as the resolver confirmed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingInfo {
    /// The session (heartbeats carry it).
    pub session: SessionId,
    /// The node's address as the resolver sees it (its public UDP mapping).
    pub observed: SocketAddr,
    /// How long the binding lives without a heartbeat.
    pub ttl: Duration,
}

/// What arrives on the node's SUDPH socket, besides the resolver's own traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SudphEvent {
    /// The resolver said `peer` (at `addr`) resolved this node; a `Holepunch` datagram was
    /// sent towards `addr`, so the peer's datagrams can come in.
    PunchRequested {
        /// The peer's key (raw bytes).
        peer: [u8; 32],
        /// The peer's observed UDP address.
        addr: SocketAddr,
    },
    /// A peer's hole-punching datagram arrived.
    Holepunch {
        /// The key it claims (raw bytes; unauthenticated).
        peer: [u8; 32],
        /// Where from.
        from: SocketAddr,
    },
    /// Any other datagram not from the resolver (the node's transport traffic).
    Datagram {
        /// Where from.
        from: SocketAddr,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The client bound again (after the resolver forgot it or stopped answering).
    Rebound(BindingInfo),
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum SudphError {
    /// The socket failed.
    #[error("SUDPH socket: {0}")]
    Io(#[from] std::io::Error),
    /// The resolver refused for good (`bad_signature`, `address_refused`).
    #[error("the address resolver refused the binding: {0}")]
    Refused(ErrorCode),
    /// No binding within the deadline.
    #[error("no SUDPH binding within {deadline:?} (last refusal: {last:?})")]
    Timeout {
        /// The deadline.
        deadline: Duration,
        /// The last refusal seen, if any.
        last: Option<ErrorCode>,
    },
    /// Too many local addresses.
    #[error("at most 8 local addresses")]
    TooManyAddresses,
}

/// Counters of a [`SudphClient`].
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Handshakes completed (the first and rebinds).
    pub bindings: AtomicU64,
    /// Heartbeats sent.
    pub heartbeats: AtomicU64,
    /// `Alive` answers received.
    pub alive: AtomicU64,
    /// `busy` refusals met during handshakes.
    pub busy: AtomicU64,
    /// Hole-punching datagrams sent in answer to punch notices.
    pub punches: AtomicU64,
    /// Events dropped because the queue was full.
    pub events_dropped: AtomicU64,
}

/// The node's SUDPH binding, kept alive. Dropping it stops the heartbeats (without unbinding;
/// [`close`](Self::close) unbinds).
#[derive(Debug)]
pub struct SudphClient {
    socket: Arc<UdpSocket>,
    key: Arc<SecretKey>,
    resolver: SocketAddr,
    info: watch::Receiver<BindingInfo>,
    events: mpsc::Receiver<SudphEvent>,
    stats: Arc<ClientStats>,
    stop: CancellationToken,
    task: Option<(AbortOnDrop, tokio::task::JoinHandle<()>)>,
}

impl SudphClient {
    /// Binds `socket` at the resolver (handshake), then keeps the binding alive in a task the
    /// client owns.
    ///
    /// # Errors
    ///
    /// [`SudphError`]: the socket failed, the resolver refused for good, or no binding within
    /// the deadline.
    pub async fn connect(
        key: Arc<SecretKey>,
        socket: UdpSocket,
        config: SudphConfig,
    ) -> Result<SudphClient, SudphError> {
        if config.local_addresses.len() > super::wire::MAX_LOCAL_ADDRESSES {
            return Err(SudphError::TooManyAddresses);
        }
        let socket = Arc::new(socket);
        let stats = Arc::new(ClientStats::default());
        let (events_tx, events) = mpsc::channel(config.events_capacity.max(1));
        let mut link = Link {
            socket: Arc::clone(&socket),
            key: Arc::clone(&key),
            config: SudphConfig {
                resolver: canonical_addr(config.resolver),
                ..config
            },
            stats: Arc::clone(&stats),
            events: events_tx,
            buf: vec![0u8; 65_536],
        };
        let info = link.handshake().await?;
        let (info_tx, info_rx) = watch::channel(info);
        let stop = CancellationToken::new();
        let resolver = link.config.resolver;
        let task = tokio::spawn(link.run(info, info_tx, stop.clone()));
        Ok(SudphClient {
            socket,
            key,
            resolver,
            info: info_rx,
            events,
            stats,
            stop,
            task: Some((AbortOnDrop::new(&task), task)),
        })
    }

    /// The current binding.
    pub fn binding(&self) -> BindingInfo {
        *self.info.borrow()
    }

    /// The socket, to send the node's own datagrams from the bound address.
    pub fn socket(&self) -> &Arc<UdpSocket> {
        &self.socket
    }

    /// The next event; `None` once the client stopped.
    pub async fn next_event(&mut self) -> Option<SudphEvent> {
        self.events.recv().await
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<ClientStats> {
        &self.stats
    }

    /// Stops the heartbeats and deletes the binding at the resolver (best effort: one
    /// `Unbind` datagram).
    pub async fn close(mut self) {
        self.stop.cancel();
        if let Some((_owner, task)) = self.task.take() {
            let _ = task.await;
        }
        let unbind = Datagram::Unbind {
            pk: self.key.public_key().to_bytes(),
            session: self.info.borrow().session,
        };
        if let Err(e) = self.socket.send_to(&unbind.encode(), self.resolver).await {
            tracing::debug!(error = %e, "unbind not sent");
        }
    }
}

/// The client's state while handshaking and while bound.
struct Link {
    socket: Arc<UdpSocket>,
    key: Arc<SecretKey>,
    config: SudphConfig,
    stats: Arc<ClientStats>,
    events: mpsc::Sender<SudphEvent>,
    buf: Vec<u8>,
}

/// What arrived from the resolver.
enum Reply {
    Datagram(Datagram),
    TimedOut,
}

fn jitter(d: Duration) -> Duration {
    let r = getrandom::u64().unwrap_or(0) % 1000;
    d + d.mul_f64(r as f64 / 4000.0)
}

impl Link {
    fn emit(&self, event: SudphEvent) {
        if self.events.try_send(event).is_err() {
            self.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn send(&self, d: &Datagram, to: SocketAddr) -> std::io::Result<()> {
        self.socket.send_to(&d.encode(), to).await.map(|_| ())
    }

    /// Handles a datagram not from the resolver.
    fn other(&self, from: SocketAddr, data: &[u8]) {
        let event = match Datagram::decode(data) {
            Ok(Datagram::Holepunch { pk }) => SudphEvent::Holepunch { peer: pk, from },
            _ => SudphEvent::Datagram {
                from,
                data: data.to_vec(),
            },
        };
        self.emit(event);
    }

    /// Waits until `until` for a datagram from the resolver; others become events.
    async fn recv_reply(&mut self, until: Instant) -> std::io::Result<Reply> {
        loop {
            let (n, from) =
                match tokio::time::timeout_at(until, self.socket.recv_from(&mut self.buf)).await {
                    Err(_) => return Ok(Reply::TimedOut),
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => continue,
                    Ok(r) => r?,
                };
            let from = canonical_addr(from);
            if from != self.config.resolver {
                let data = self.buf[..n].to_vec();
                self.other(from, &data);
                continue;
            }
            if let Ok(d) = Datagram::decode(&self.buf[..n]) {
                return Ok(Reply::Datagram(d));
            }
        }
    }

    async fn handshake(&mut self) -> Result<BindingInfo, SudphError> {
        let started = Instant::now();
        let deadline = started + self.config.handshake_deadline;
        let resolver = self.config.resolver;
        let pk = self.key.public_key().to_bytes();
        let local_port = self.socket.local_addr()?.port();
        let mut last = None;
        let mut backoff = Duration::from_millis(100);
        let limit = self.config.handshake_deadline;
        let timed_out = move |last| SudphError::Timeout {
            deadline: limit,
            last,
        };
        'hello: loop {
            if Instant::now() >= deadline {
                return Err(timed_out(last));
            }
            self.send(&Datagram::Hello { pk }, resolver).await?;
            let until = (Instant::now() + self.config.reply_timeout).min(deadline);
            let cookie = loop {
                match self.recv_reply(until).await? {
                    Reply::TimedOut => continue 'hello,
                    Reply::Datagram(Datagram::Challenge { cookie }) => break cookie,
                    Reply::Datagram(_) => {}
                }
            };
            let answer = Answer::sign(
                &self.key,
                cookie,
                local_port,
                self.config.local_addresses.clone(),
            )
            .map_err(|_| SudphError::TooManyAddresses)?;
            let answer = Datagram::Answer(answer);
            loop {
                self.send(&answer, resolver).await?;
                let until = (Instant::now() + self.config.reply_timeout).min(deadline);
                let code = loop {
                    match self.recv_reply(until).await? {
                        Reply::TimedOut => continue 'hello,
                        Reply::Datagram(Datagram::Bound {
                            session,
                            ttl_secs,
                            observed,
                        }) => {
                            self.stats.bindings.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%observed, elapsed = ?started.elapsed(), "SUDPH bound");
                            return Ok(BindingInfo {
                                session,
                                observed,
                                ttl: Duration::from_secs(u64::from(ttl_secs)),
                            });
                        }
                        // Stale heartbeat answers from an earlier session do not concern us.
                        Reply::Datagram(Datagram::Error {
                            code: ErrorCode::UnknownSession,
                        }) => {}
                        Reply::Datagram(Datagram::Error { code }) => break code,
                        Reply::Datagram(_) => {}
                    }
                };
                last = Some(code);
                match code {
                    ErrorCode::BadSignature | ErrorCode::AddressRefused => {
                        return Err(SudphError::Refused(code));
                    }
                    ErrorCode::Busy => {
                        self.stats.busy.fetch_add(1, Ordering::Relaxed);
                        let pause = jitter(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        if Instant::now() + pause >= deadline {
                            return Err(timed_out(last));
                        }
                        tokio::time::sleep(pause).await;
                        // The challenge is still valid (or the resolver says bad_cookie).
                    }
                    _ => {
                        let pause = jitter(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        if Instant::now() + pause >= deadline {
                            return Err(timed_out(last));
                        }
                        tokio::time::sleep(pause).await;
                        continue 'hello;
                    }
                }
            }
        }
    }

    /// Heartbeats, punch answers and event delivery until `stop`.
    async fn run(
        mut self,
        mut info: BindingInfo,
        info_tx: watch::Sender<BindingInfo>,
        stop: CancellationToken,
    ) {
        let resolver = self.config.resolver;
        let pk = self.key.public_key().to_bytes();
        let period = self.config.heartbeat_interval;
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unanswered = 0u32;
        loop {
            let rebind;
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                _ = tick.tick() => {
                    if unanswered >= self.config.missed_heartbeats {
                        rebind = true;
                    } else {
                        unanswered += 1;
                        self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                        let hb = Datagram::Heartbeat { pk, session: info.session };
                        if let Err(e) = self.send(&hb, resolver).await {
                            tracing::debug!(error = %e, "heartbeat not sent");
                        }
                        rebind = false;
                    }
                }
                r = self.socket.recv_from(&mut self.buf) => {
                    let (n, from) = match r {
                        Ok(pair) => pair,
                        Err(e) => {
                            tracing::debug!(error = %e, "SUDPH receive failed");
                            continue;
                        }
                    };
                    let from = canonical_addr(from);
                    if from != resolver {
                        let data = self.buf[..n].to_vec();
                        self.other(from, &data);
                        continue;
                    }
                    rebind = match Datagram::decode(&self.buf[..n]) {
                        Ok(Datagram::Alive { session, .. }) if session == info.session => {
                            unanswered = 0;
                            self.stats.alive.fetch_add(1, Ordering::Relaxed);
                            false
                        }
                        Ok(Datagram::Error { code: ErrorCode::UnknownSession }) => true,
                        Ok(Datagram::Punch { session, peer, addr }) if session == info.session => {
                            let punch = Datagram::Holepunch { pk };
                            match self.send(&punch, addr).await {
                                Ok(()) => {
                                    self.stats.punches.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => tracing::debug!(%addr, error = %e, "holepunch not sent"),
                            }
                            self.emit(SudphEvent::PunchRequested { peer, addr });
                            false
                        }
                        _ => false,
                    };
                }
            }
            if rebind {
                match tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    r = self.handshake() => r,
                } {
                    Ok(new) => {
                        info = new;
                        unanswered = 0;
                        let _ = info_tx.send(info);
                        self.emit(SudphEvent::Rebound(info));
                    }
                    Err(e) => tracing::warn!(error = %e, "SUDPH rebind failed; retrying"),
                }
            }
        }
    }
}
