//! The DMSG client on an in-process network: discovery + servers + clients on loopback.

mod common;
use common::{T, echo, eventually, send_and_read_back};
use std::time::Duration;

use skytower_transports::dmsg::client::{ClientConfig, ClientDialError};
use skytower_transports::dmsg::disc::Discovery;
use skytower_transports::dmsg::wire::{Addr, Code};
use skytower_transports::testing::{TestNetwork, test_client_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn round_trip(client: &skytower_transports::dmsg::Client, dst: Addr, msg: &[u8]) {
    let mut s = tokio::time::timeout(T, client.dial(dst))
        .await
        .unwrap()
        .unwrap();
    let back = send_and_read_back(&mut s, msg).await;
    assert_eq!(back, msg);
}

fn config(min_sessions: usize) -> ClientConfig {
    ClientConfig {
        min_sessions,
        ..test_client_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_through_an_existing_session_and_through_a_new_one() {
    let net = TestNetwork::start(2).await;
    // B connects to every server; A to one only.
    let b = net.client_with(config(0)).await;
    let a = net.client_with(config(1)).await;
    assert_eq!(b.sessions().len(), 2);
    assert_eq!(a.sessions().len(), 1);
    let _echo = echo(b.listen(7).unwrap());
    net.wait_published(&b).await;
    round_trip(&a, Addr::new(b.public_key(), 7), b"phase one").await;
    // A dial-only client with no session at all: the dial opens one (phase 2).
    let c = net
        .client_with(ClientConfig {
            auto_connect: false,
            ..config(1)
        })
        .await;
    assert!(c.sessions().is_empty());
    round_trip(&c, Addr::new(b.public_key(), 7), b"phase two").await;
    assert_eq!(c.sessions().len(), 1);
    let infos = a.sessions();
    assert!(infos.iter().all(|s| s.bytes_in > 0 && s.bytes_out > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_sessions_measures_every_session_now() {
    let net = TestNetwork::start(2).await;
    let a = net.client_with(config(0)).await;
    assert_eq!(a.sessions().len(), 2);
    // The keep-alive has not run yet: no round-trip time is known.
    assert!(a.sessions().iter().all(|s| s.last_rtt.is_none()));
    let pings = a.ping_sessions().await;
    assert_eq!(pings.len(), 2);
    let mut servers: Vec<_> = pings.iter().map(|(s, _)| *s).collect();
    servers.sort();
    let mut expected = net.server_keys();
    expected.sort();
    assert_eq!(servers, expected);
    for (server, rtt) in &pings {
        let rtt = rtt.as_ref().unwrap();
        let info = a
            .sessions()
            .into_iter()
            .find(|s| s.server == *server)
            .unwrap();
        assert_eq!(info.last_rtt, Some(*rtt));
    }
    // No sessions: nothing to ping.
    let c = net
        .client_with(ClientConfig {
            auto_connect: false,
            ..config(1)
        })
        .await;
    assert!(c.ping_sessions().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_server_down_dial_goes_through_the_second() {
    let mut net = TestNetwork::start(2).await;
    let b = net.client_with(config(0)).await;
    let _echo = echo(b.listen(9).unwrap());
    net.wait_published(&b).await;
    let a = net.client_with(config(0)).await;
    net.stop_server(0).await;
    round_trip(&a, Addr::new(b.public_key(), 9), b"via the second").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_bad_pair_is_skipped_without_a_network_attempt() {
    use skytower_transports::dmsg::disc::Entry;
    use skytower_transports::identity::SecretKey;
    let net = TestNetwork::start(1).await;
    let server = net.server_keys()[0];
    // C claims server S in its entry but holds no session there: S answers NotConnected, a
    // failure of the (C, S) path.
    let c = SecretKey::generate().unwrap();
    let mut entry = Entry::new_client(c.public_key(), vec![server]);
    entry.sign(&c);
    net.discovery().post_entry(entry).await.unwrap();
    let a = net.client_with(config(1)).await;
    let dst = Addr::new(c.public_key(), 5);
    let err = a.dial(dst).await.unwrap_err();
    match &err {
        ClientDialError::AllFailed { attempts, .. } => {
            assert_eq!(attempts.len(), 1);
            assert!(attempts[0].error.contains("not connected"), "{err}");
            // Refused by the server, not the destination.
            let refusal = attempts[0].refusal.expect("a signed refusal");
            assert_eq!(refusal.by, server);
            assert_eq!(refusal.code, Code::NotConnected);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.destination_refusal(), None);
    let refused = net.server(0).unwrap().stats().refused_total();
    // Second dial: skipped at once, nothing reaches the server.
    let err = a.dial(dst).await.unwrap_err();
    assert!(err.to_string().contains("skipped"), "{err}");
    assert_eq!(net.server(0).unwrap().stats().refused_total(), refused);
    assert!(a.negative_cache().is_bad(&(c.public_key(), server)));
    // The client's configured TTL (30 s) applies; expiry exactly at the TTL is proven with
    // paused time in the NegativeCache layer's own tests.
    let left = a
        .negative_cache()
        .expires_in(&(c.public_key(), server))
        .unwrap();
    assert!(
        left <= Duration::from_secs(30) && left > Duration::from_secs(25),
        "{left:?}"
    );
    // Once the pair is cleared (the TTL itself is tested with paused time in the layer's tests),
    // the dial goes out again.
    a.negative_cache().remove(&(c.public_key(), server));
    let _ = a.dial(dst).await.unwrap_err();
    assert!(net.server(0).unwrap().stats().refused_total() > refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_by_the_destination_do_not_mark_the_path_bad() {
    let net = TestNetwork::start(2).await;
    let b = net.client_with(config(0)).await;
    net.wait_published(&b).await;
    let a = net.client_with(config(0)).await;
    let dst = Addr::new(b.public_key(), 5); // nobody listens on B:5
    let err = a.dial(dst).await.unwrap_err();
    match &err {
        // B answered through the first server: no point trying the second.
        ClientDialError::AllFailed { attempts, .. } => {
            assert_eq!(attempts.len(), 1, "{err}");
            assert!(attempts[0].error.contains("no listener"), "{err}");
            let refusal = attempts[0].refusal.expect("a signed refusal");
            assert_eq!(refusal.by, b.public_key());
            assert_eq!(refusal.code, Code::NoListener);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.destination_refusal(), Some(Code::NoListener));
    assert!(a.negative_cache().is_empty());
    let _echo = echo(b.listen(5).unwrap());
    round_trip(&a, dst, b"now it listens").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_clients_reconnect_and_dials_work_again() {
    let mut net = TestNetwork::start(1).await;
    let b = net.client_with(config(1)).await;
    let _echo = echo(b.listen(3).unwrap());
    net.wait_published(&b).await;
    let a = net.client_with(config(1)).await;
    round_trip(&a, Addr::new(b.public_key(), 3), b"before").await;
    net.restart_server(0).await;
    eventually("both reconnected", || {
        a.sessions().len() == 1 && b.sessions().len() == 1
    })
    .await;
    net.wait_published(&b).await;
    round_trip(&a, Addr::new(b.public_key(), 3), b"after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_session_changes_makes_few_entry_updates() {
    let mut net = TestNetwork::start(2).await;
    let b = net
        .client_with(ClientConfig {
            publish_debounce: Duration::from_millis(500),
            ..config(0)
        })
        .await;
    net.wait_published(&b).await;
    let before = net.discovery().posts(&b.public_key());
    // 100 session changes in a burst: drop and re-open a session 50 times.
    let server = net.server_keys()[1];
    let mut changes = 0;
    while changes < 100 {
        assert!(b.disconnect(&server));
        b.connect(server).await.unwrap();
        changes += 2;
    }
    // Let the debounce settle, then count: the set ended where it started.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let posts = net.discovery().posts(&b.public_key()) - before;
    assert!(
        posts <= 2,
        "{posts} entry updates for a burst of 100 session changes"
    );
    // A real change (a server gone for good) is published.
    let expected = net.discovery().posts(&b.public_key());
    net.stop_server(0).await;
    let gone = net.server_keys()[0];
    eventually("the change is published", || {
        net.discovery().posts(&b.public_key()) > expected
            && net
                .discovery()
                .store()
                .get(&b.public_key())
                .and_then(|e| e.client)
                .is_some_and(|c| !c.delegated_servers.contains(&gone))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_removes_the_client_entry() {
    let net = TestNetwork::start(1).await;
    let b = net.client_with(config(1)).await;
    net.wait_published(&b).await;
    let pk = b.public_key();
    assert!(net.discovery().store().get(&pk).is_some());
    b.close().await;
    assert!(net.discovery().store().get(&pk).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_down_existing_sessions_work_and_cached_entries_are_used() {
    let net = TestNetwork::start(1).await;
    let b = net.client_with(config(1)).await;
    let _echo = echo(b.listen(4).unwrap());
    net.wait_published(&b).await;
    let a = net.client_with(config(1)).await;
    round_trip(&a, Addr::new(b.public_key(), 4), b"cache it").await;
    net.discovery().set_down(true);
    assert!(net.discovery().entry(b.public_key()).await.is_err());
    round_trip(&a, Addr::new(b.public_key(), 4), b"from cache").await;
    net.discovery().set_down(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_per_destination_when_configured() {
    let net = TestNetwork::start(1).await;
    let b = net.client_with(config(1)).await;
    net.wait_published(&b).await;
    let a = net
        .client_with(ClientConfig {
            breaker: Some((2, Duration::from_secs(60))),
            negative_ttl: Duration::ZERO,
            ..config(1)
        })
        .await;
    let dst = Addr::new(b.public_key(), 6);
    for _ in 0..2 {
        assert!(matches!(
            a.dial(dst).await,
            Err(ClientDialError::AllFailed { .. })
        ));
    }
    let err = a.dial(dst).await.unwrap_err();
    assert!(
        matches!(err, ClientDialError::CircuitOpen { dst: d, .. } if d == b.public_key()),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_dials_leave_nothing_behind_on_any_party() {
    let net = TestNetwork::start(1).await;
    let b = net.client_with(config(1)).await;
    let mut listener = b.listen(2).unwrap();
    net.wait_published(&b).await;
    let a = net.client_with(config(1)).await;
    let dst = Addr::new(b.public_key(), 2);
    // B's application: accept and drop whatever arrives.
    let drain = tokio::spawn(async move { while listener.accept().await.is_some() {} });
    // Warm up: entry cached, session open.
    drop(a.dial(dst).await.unwrap());
    let mut completed = 0;
    let mut seed = 0x9e37_79b9_u64;
    for _ in 0..1000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_micros(seed % 3000);
        match tokio::time::timeout(delay, a.dial(dst)).await {
            Ok(Ok(stream)) => {
                completed += 1;
                drop(stream);
            }
            Ok(Err(e)) => panic!("dial failed: {e}"),
            Err(_) => {} // cancelled mid-dial
        }
    }
    let server = net.server(0).unwrap();
    let stats = server.stats().clone();
    eventually("server bridges drained", || stats.bridges() == 0).await;
    eventually("client A has no open stream", || {
        a.sessions().iter().all(|s| s.open_streams == 0)
    })
    .await;
    eventually("client B has no open stream", || {
        b.sessions().iter().all(|s| s.open_streams == 0)
    })
    .await;
    assert_eq!(a.endpoint().ports().ephemeral_in_use(), 0);
    assert!(
        completed > 0,
        "no dial completed; the delays are too short to test anything"
    );
    assert!(
        completed < 1000,
        "no dial was cancelled; the delays are too long"
    );
    drain.abort();
}

/// A TCP proxy that can freeze its existing connections (bytes stop moving both ways, the
/// sockets stay open: a relay that hangs without closing); later connections flow normally.
struct FreezableProxy {
    addr: std::net::SocketAddr,
    /// Connections with an id below this are frozen.
    frozen_below: std::sync::Arc<std::sync::atomic::AtomicU64>,
    next_id: std::sync::Arc<std::sync::atomic::AtomicU64>,
    _task: tokio::task::JoinHandle<()>,
}

async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    id: u64,
    frozen_below: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use std::sync::atomic::Ordering;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bounded: a frozen connection is held for at most 60 s (the test ends long before).
        let mut waited = 0;
        while id < frozen_below.load(Ordering::Relaxed) && waited < 6000 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl FreezableProxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen_below = std::sync::Arc::new(AtomicU64::new(0));
        let next_id = std::sync::Arc::new(AtomicU64::new(0));
        let (fb, ids) = (frozen_below.clone(), next_id.clone());
        let task = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let Ok(up) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                tokio::spawn(pump(dr, uw, id, fb.clone()));
                tokio::spawn(pump(ur, dw, id, fb.clone()));
            }
        });
        FreezableProxy {
            addr,
            frozen_below,
            next_id,
            _task: task,
        }
    }

    fn freeze_existing(&self) {
        use std::sync::atomic::Ordering;
        self.frozen_below
            .store(self.next_id.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_session_fails_its_keep_alive_and_is_replaced() {
    use skytower_transports::dmsg::server::{Server, ServerConfig};
    use skytower_transports::identity::SecretKey;
    let discovery = std::sync::Arc::new(skytower_transports::testing::TestDiscovery::default());
    let mut server = Server::bind(
        SecretKey::generate().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        ServerConfig::default(),
    )
    .await
    .unwrap();
    let proxy = FreezableProxy::start(server.local_addr()).await;
    // Clients reach the server only through the proxy.
    server.register(
        discovery.clone(),
        proxy.addr.to_string(),
        Duration::from_secs(60),
    );
    let pk = server.public_key();
    eventually("server registered", || discovery.store().get(&pk).is_some()).await;
    let mut cfg = config(1);
    cfg.keepalive = Duration::from_millis(300);
    cfg.session.stream_handshake_timeout = Duration::from_millis(500);
    let client = skytower_transports::dmsg::Client::start(
        SecretKey::generate().unwrap(),
        discovery.clone(),
        cfg,
    );
    assert_eq!(client.wait_for_sessions(1, T).await, 1);
    let first = client.sessions()[0].connected_since;
    proxy.freeze_existing();
    // The hung session stops answering pings; the client closes it and opens a new one.
    eventually("session replaced", || {
        client
            .sessions()
            .first()
            .is_some_and(|s| s.connected_since > first && s.last_rtt.is_some())
    })
    .await;
    assert_eq!(client.sessions().len(), 1);
}
