//! The address resolver's UDP side (SUDPH) over loopback: handshakes, heartbeats, unbind,
//! punch notices, and every refusal with its specific error code and counter.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use skytower_services::address_resolver::wire::{Answer, Cookie, Datagram, ErrorCode, SessionId};
use skytower_services::address_resolver::{
    Bindings, SudphClient, SudphConfig, SudphEvent, Transport, UdpConfig, UdpServer,
};
use skytower_services::ttl_store::{
    MemoryTtlStore, PutBounds, Record, TtlStore, TtlStoreError as StoreError,
    TtlStoreFuture as StoreFuture,
};
use skytower_transports::identity::SecretKey;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

const TTL: Duration = Duration::from_secs(300);

fn loopback_config() -> UdpConfig {
    UdpConfig {
        allow_loopback: true,
        ..UdpConfig::default()
    }
}

async fn server_with(store: Arc<dyn TtlStore>, config: UdpConfig) -> (UdpServer, Bindings) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let bindings = Bindings::new(store, TTL);
    let server = UdpServer::start(socket, bindings.clone(), config).unwrap();
    (server, bindings)
}

async fn server() -> (UdpServer, Bindings) {
    server_with(Arc::new(MemoryTtlStore::new(1000)), loopback_config()).await
}

/// A raw peer speaking datagrams by hand.
struct Raw {
    sock: UdpSocket,
    server: SocketAddr,
}

impl Raw {
    async fn new(server: SocketAddr) -> Raw {
        Raw {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
        }
    }

    async fn send(&self, d: &Datagram) {
        self.send_bytes(&d.encode()).await;
    }

    async fn send_bytes(&self, b: &[u8]) {
        self.sock.send_to(b, self.server).await.unwrap();
    }

    /// The next datagram from the server (5 s safety limit; replies come in microseconds).
    async fn recv(&self) -> Datagram {
        let mut buf = [0u8; 512];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), self.sock.recv_from(&mut buf))
            .await
            .expect("a reply from the resolver")
            .unwrap();
        assert_eq!(from, self.server);
        Datagram::decode(&buf[..n]).unwrap()
    }

    async fn challenge(&self, key: &SecretKey) -> Cookie {
        self.send(&Datagram::Hello {
            pk: key.public_key().to_bytes(),
        })
        .await;
        match self.recv().await {
            Datagram::Challenge { cookie } => cookie,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    async fn answer(&self, key: &SecretKey, cookie: Cookie) -> Datagram {
        let a = Answer::sign(key, cookie, 4000, vec!["10.0.0.7".parse().unwrap()]).unwrap();
        self.send(&Datagram::Answer(a)).await;
        self.recv().await
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }
}

fn error(code: ErrorCode) -> Datagram {
    Datagram::Error { code }
}

#[tokio::test]
async fn a_raw_handshake_binds_the_observed_address_and_heartbeats_refresh_it() {
    let (server, bindings) = server().await;
    let key = SecretKey::generate().unwrap();
    let raw = Raw::new(server.local_addr()).await;
    let cookie = raw.challenge(&key).await;
    let Datagram::Bound {
        session,
        ttl_secs,
        observed,
    } = raw.answer(&key, cookie).await
    else {
        panic!("not bound")
    };
    assert_eq!(observed, raw.addr());
    assert_eq!(ttl_secs, 300);
    let b = bindings
        .get(Transport::Sudph, &key.public_key())
        .await
        .unwrap()
        .expect("bound");
    assert_eq!(b.remote, raw.addr());
    assert_eq!(b.port, 4000);
    assert_eq!(
        b.addresses,
        vec!["10.0.0.7".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(b.session_id(), Some(session));

    let pk = key.public_key().to_bytes();
    raw.send(&Datagram::Heartbeat { pk, session }).await;
    assert_eq!(
        raw.recv().await,
        Datagram::Alive {
            session,
            ttl_secs: 300
        }
    );
    // Wrong session, or the right one from another address: unknown.
    raw.send(&Datagram::Heartbeat {
        pk,
        session: SessionId([0; 16]),
    })
    .await;
    assert_eq!(raw.recv().await, error(ErrorCode::UnknownSession));
    let elsewhere = Raw::new(server.local_addr()).await;
    elsewhere.send(&Datagram::Heartbeat { pk, session }).await;
    assert_eq!(elsewhere.recv().await, error(ErrorCode::UnknownSession));
    // An unbind with the wrong session is ignored; with the right one it deletes.
    raw.send(&Datagram::Unbind {
        pk,
        session: SessionId([0; 16]),
    })
    .await;
    raw.send(&Datagram::Unbind { pk, session }).await;
    raw.send(&Datagram::Heartbeat { pk, session }).await;
    assert_eq!(raw.recv().await, error(ErrorCode::UnknownSession));
    assert!(
        bindings
            .get(Transport::Sudph, &key.public_key())
            .await
            .unwrap()
            .is_none()
    );
    let s = server.snapshot();
    assert_eq!(s.handshakes_ok, 1);
    assert_eq!(s.heartbeats, 1);
    assert_eq!(s.heartbeats_unknown, 3);
    assert_eq!(s.unbinds, 1);
    assert_eq!(s.peak_in_flight, 1);
    assert_eq!(s.in_flight, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_datagrams_are_dropped_and_counted_and_the_service_goes_on() {
    let (server, _) = server().await;
    let raw = Raw::new(server.local_addr()).await;
    let key = SecretKey::generate().unwrap();
    let junk: Vec<Vec<u8>> = vec![
        vec![],
        b"get_nonce".to_vec(),
        vec![0xff; 300],             // oversized
        vec![0; 1400],               // oversized
        b"AR\x02\x01".to_vec(),      // bad version
        b"AR\x01\x63".to_vec(),      // unknown kind
        b"AR\x01\x01short".to_vec(), // hello of the wrong length
        {
            let mut h = Datagram::Hello { pk: [1; 32] }.encode();
            h[63] = 1; // padding not zero
            h
        },
        // Kinds the resolver sends but never receives.
        Datagram::Challenge {
            cookie: Cookie([0; 24]),
        }
        .encode(),
        error(ErrorCode::Busy).encode(),
        Datagram::Holepunch { pk: [2; 32] }.encode(),
    ];
    for j in &junk {
        raw.send_bytes(j).await;
    }
    // Processed in order: once the challenge arrives, all the junk was counted.
    raw.challenge(&key).await;
    let s = server.snapshot();
    assert_eq!(s.malformed, junk.len() as u64);
    assert_eq!(s.datagrams, junk.len() as u64 + 1);
    assert_eq!(s.challenges, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_answers_get_the_specific_error() {
    let (server, bindings) = server().await;
    let raw = Raw::new(server.local_addr()).await;
    let key = SecretKey::generate().unwrap();
    let other = SecretKey::generate().unwrap();

    // A forged cookie.
    assert_eq!(
        raw.answer(&key, Cookie([9; 24])).await,
        error(ErrorCode::BadCookie)
    );
    // A cookie issued to another address.
    let cookie = raw.challenge(&key).await;
    let thief = Raw::new(server.local_addr()).await;
    assert_eq!(
        thief.answer(&key, cookie).await,
        error(ErrorCode::BadCookie)
    );
    // A cookie issued for another key.
    assert_eq!(
        raw.answer(&other, cookie).await,
        error(ErrorCode::BadCookie)
    );
    // The right key bytes, signed by another key.
    let mut forged = Answer::sign(&other, cookie, 1, vec![]).unwrap();
    forged.pk = key.public_key().to_bytes();
    raw.send(&Datagram::Answer(forged)).await;
    assert_eq!(raw.recv().await, error(ErrorCode::BadSignature));
    // The cookie is spent now (replay protection), even for a good answer.
    assert_eq!(raw.answer(&key, cookie).await, error(ErrorCode::BadCookie));
    // A fresh cookie binds; replaying the same answer is refused.
    let cookie = raw.challenge(&key).await;
    let good = Datagram::Answer(Answer::sign(&key, cookie, 1, vec![]).unwrap());
    raw.send(&good).await;
    let reply = raw.recv().await;
    assert!(matches!(reply, Datagram::Bound { .. }), "{reply:?}");
    raw.send(&good).await;
    assert_eq!(raw.recv().await, error(ErrorCode::BadCookie));
    // Not valid key bytes at all.
    let cookie = raw.challenge(&key).await;
    let mut bad_key = Answer::sign(&key, cookie, 1, vec![]).unwrap();
    bad_key.pk = [0xff; 32];
    raw.send(&Datagram::Answer(bad_key)).await;
    assert_eq!(
        raw.recv().await,
        error(ErrorCode::BadCookie),
        "cookie is for the real key"
    );

    let s = server.snapshot();
    assert_eq!(s.bad_cookies, 4); // forged, stolen, other key, bad key bytes
    assert_eq!(s.handshakes_failed, 3); // the forged signature, the spent cookie, the replay
    assert_eq!(s.handshakes_ok, 1);
    assert_eq!(
        bindings.list(Transport::Sudph, 10).await.unwrap(),
        vec![key.public_key()]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn loopback_addresses_are_refused_by_default() {
    let (server, bindings) = server_with(
        Arc::new(MemoryTtlStore::new(10)),
        UdpConfig::default(), // allow_loopback: false
    )
    .await;
    let raw = Raw::new(server.local_addr()).await;
    let key = SecretKey::generate().unwrap();
    let cookie = raw.challenge(&key).await;
    assert_eq!(
        raw.answer(&key, cookie).await,
        error(ErrorCode::AddressRefused)
    );
    assert!(
        bindings
            .list(Transport::Sudph, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The client reports it as a final refusal.
    let err = SudphClient::connect(
        Arc::new(key),
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        SudphConfig::new(server.local_addr()),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("refused the binding: address_refused"),
        "{err}"
    );
    server.shutdown().await;
}

/// A store whose writes wait for a permit (a slow or stuck Redis).
#[derive(Debug)]
struct GatedStore {
    inner: MemoryTtlStore,
    gate: Arc<Semaphore>,
}

impl TtlStore for GatedStore {
    fn kind(&self) -> &'static str {
        "gated"
    }
    fn all(&self) -> StoreFuture<'_, Vec<Record>> {
        self.inner.all()
    }
    fn put<'a>(
        &'a self,
        id: &'a str,
        value: Vec<u8>,
        ttl: Duration,
        indexes: &'a [String],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let permit = self
                .gate
                .acquire()
                .await
                .map_err(|_| StoreError::Unavailable("closed".into()))?;
            permit.forget();
            self.inner.put(id, value, ttl, indexes).await
        })
    }
    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        self.inner.get(id)
    }
    fn delete<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        self.inner.delete(id)
    }
    fn by_index<'a>(&'a self, index: &'a str) -> StoreFuture<'a, Vec<Record>> {
        self.inner.by_index(index)
    }
    fn sample_index<'a>(&'a self, index: &'a str, n: usize) -> StoreFuture<'a, Vec<Record>> {
        self.inner.sample_index(index, n)
    }
    fn purge_expired(&self) -> StoreFuture<'_, usize> {
        self.inner.purge_expired()
    }
    fn len(&self) -> StoreFuture<'_, usize> {
        self.inner.len()
    }
    fn put_bounded<'a>(
        &'a self,
        id: &'a str,
        value: Vec<u8>,
        ttl: Duration,
        indexes: &'a [String],
        bounds: PutBounds<'a>,
    ) -> StoreFuture<'a, bool> {
        self.inner.put_bounded(id, value, ttl, indexes, bounds)
    }
}

#[tokio::test]
async fn beyond_the_queue_handshakes_are_refused_at_once_with_busy() {
    let gate = Arc::new(Semaphore::new(0));
    let store = Arc::new(GatedStore {
        inner: MemoryTtlStore::new(10),
        gate: Arc::clone(&gate),
    });
    let config = UdpConfig {
        handshake_concurrency: 1,
        handshake_queue: 1,
        ..loopback_config()
    };
    let (server, _) = server_with(store, config).await;
    let peers: Vec<(Raw, SecretKey)> = futures_util::future::join_all((0..3).map(|_| async {
        (
            Raw::new(server.local_addr()).await,
            SecretKey::generate().unwrap(),
        )
    }))
    .await;
    let mut answers = Vec::new();
    for (raw, key) in &peers {
        let cookie = raw.challenge(key).await;
        answers.push(Datagram::Answer(
            Answer::sign(key, cookie, 1, vec![]).unwrap(),
        ));
    }
    // One runs (stuck in the store), one waits, the third is refused at once.
    peers[0].0.send(&answers[0]).await;
    peers[1].0.send(&answers[1]).await;
    peers[2].0.send(&answers[2]).await;
    assert_eq!(peers[2].0.recv().await, error(ErrorCode::Busy));
    let s = server.snapshot();
    assert_eq!((s.in_flight, s.queued, s.refused), (1, 1, 1));
    assert!(server.queue().is_full());
    // Released, both finish; the refused one may resend its answer (its cookie is unspent).
    gate.add_permits(3);
    assert!(matches!(peers[0].0.recv().await, Datagram::Bound { .. }));
    assert!(matches!(peers[1].0.recv().await, Datagram::Bound { .. }));
    peers[2].0.send(&answers[2]).await;
    assert!(matches!(peers[2].0.recv().await, Datagram::Bound { .. }));
    let s = server.snapshot();
    assert_eq!((s.handshakes_ok, s.peak_in_flight, s.in_flight), (3, 1, 0));
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_handshake_stuck_in_the_store_times_out_after_10_s() {
    let store = Arc::new(GatedStore {
        inner: MemoryTtlStore::new(10),
        gate: Arc::new(Semaphore::new(0)), // never opens
    });
    let (server, _) = server_with(store, loopback_config()).await;
    let raw = Raw::new(server.local_addr()).await;
    let key = SecretKey::generate().unwrap();
    // No timeouts on the test's side: the queue's deadline is the only timer, so paused time
    // jumps straight to it.
    let mut buf = [0u8; 64];
    raw.send(&Datagram::Hello {
        pk: key.public_key().to_bytes(),
    })
    .await;
    let (n, _) = raw.sock.recv_from(&mut buf).await.unwrap();
    let Datagram::Challenge { cookie } = Datagram::decode(&buf[..n]).unwrap() else {
        panic!("no challenge")
    };
    let a = Answer::sign(&key, cookie, 1, vec![]).unwrap();
    raw.send(&Datagram::Answer(a)).await;
    let started = tokio::time::Instant::now();
    let (n, _) = raw.sock.recv_from(&mut buf).await.unwrap();
    assert_eq!(
        Datagram::decode(&buf[..n]).unwrap(),
        error(ErrorCode::Timeout)
    );
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    let s = server.snapshot();
    assert_eq!((s.timed_out, s.in_flight), (1, 0));
    server.shutdown().await;
}

async fn client(server: SocketAddr, tweak: impl FnOnce(&mut SudphConfig)) -> SudphClient {
    let mut config = SudphConfig::new(server);
    tweak(&mut config);
    SudphClient::connect(
        Arc::new(SecretKey::generate().unwrap()),
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        config,
    )
    .await
    .unwrap()
}

async fn next_event(c: &mut SudphClient) -> SudphEvent {
    tokio::time::timeout(Duration::from_secs(5), c.next_event())
        .await
        .expect("an event")
        .expect("client running")
}

#[tokio::test]
async fn the_client_binds_heartbeats_answers_punches_and_unbinds() {
    let (server, bindings) = server().await;
    let mut a = client(server.local_addr(), |c| {
        c.heartbeat_interval = Duration::from_millis(20);
    })
    .await;
    let mut b = client(server.local_addr(), |_| {}).await;
    let a_addr = a.socket().local_addr().unwrap();
    let b_addr = b.socket().local_addr().unwrap();
    assert_eq!(a.binding().observed, a_addr);

    // Heartbeats are answered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while a.stats().alive.load(Ordering::Relaxed) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no Alive answers");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(server.snapshot().heartbeats >= 2);

    // A resolves B: the resolver tells B, B punches towards A.
    let a_pk = b_pk(&bindings, a_addr).await;
    let a_binding = bindings
        .get(Transport::Sudph, &a_pk)
        .await
        .unwrap()
        .unwrap();
    let b_binding = bindings
        .get(Transport::Sudph, &b_pk(&bindings, b_addr).await)
        .await
        .unwrap()
        .unwrap();
    assert!(server.punch(&b_binding, &a_binding));
    assert_eq!(
        next_event(&mut b).await,
        SudphEvent::PunchRequested {
            peer: a_pk.to_bytes(),
            addr: a_addr
        }
    );
    assert_eq!(
        next_event(&mut a).await,
        SudphEvent::Holepunch {
            peer: b_binding.pk.to_bytes(),
            from: b_addr
        }
    );
    // The node's own traffic comes through as datagrams.
    b.socket()
        .send_to(b"transport bytes", a_addr)
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut a).await,
        SudphEvent::Datagram {
            from: b_addr,
            data: b"transport bytes".to_vec()
        }
    );
    // A punch notice with another session is ignored by B (a forgery).
    let forged = Datagram::Punch {
        session: SessionId([1; 16]),
        peer: [3; 32],
        addr: "127.0.0.1:9".parse().unwrap(),
    };
    let spoof = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    spoof.send_to(&forged.encode(), b_addr).await.unwrap();
    assert!(matches!(
        next_event(&mut b).await,
        SudphEvent::Datagram { .. }
    ));
    assert_eq!(b.stats().punches.load(Ordering::Relaxed), 1);

    // Closing unbinds.
    a.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while bindings
        .get(Transport::Sudph, &a_pk)
        .await
        .unwrap()
        .is_some()
    {
        assert!(tokio::time::Instant::now() < deadline, "not unbound");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(server.snapshot().unbinds, 1);
    server.shutdown().await;
}

async fn b_pk(bindings: &Bindings, addr: SocketAddr) -> skytower_transports::identity::PublicKey {
    for pk in bindings.list(Transport::Sudph, 100).await.unwrap() {
        if let Some(b) = bindings.get(Transport::Sudph, &pk).await.unwrap()
            && b.remote == addr
        {
            return pk;
        }
    }
    panic!("no binding at {addr}");
}

#[tokio::test]
async fn the_client_binds_again_when_the_resolver_forgets_it() {
    let (server, bindings) = server().await;
    let mut a = client(server.local_addr(), |c| {
        c.heartbeat_interval = Duration::from_millis(20);
    })
    .await;
    let first = a.binding();
    let pk = b_pk(&bindings, a.socket().local_addr().unwrap()).await;
    assert!(bindings.delete(Transport::Sudph, &pk).await.unwrap());
    let SudphEvent::Rebound(info) = next_event(&mut a).await else {
        panic!("expected a rebind")
    };
    assert_ne!(info.session, first.session);
    assert_eq!(a.binding(), info);
    assert_eq!(
        bindings
            .get(Transport::Sudph, &pk)
            .await
            .unwrap()
            .unwrap()
            .session_id(),
        Some(info.session)
    );
    assert_eq!(server.snapshot().handshakes_ok, 2);
    server.shutdown().await;
}
