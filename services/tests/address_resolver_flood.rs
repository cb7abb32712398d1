//! Flood test of the address resolver's UDP side: 10 000 handshake attempts from fake peers
//! over loopback UDP while a real node binds, heartbeats and is resolved. The real node
//! succeeds, handshakes in flight never exceed 64, the resolver's heap stays bounded (peak
//! reported), and the service stays healthy.
//!
//! The resolver runs on its own runtime (two worker threads) whose threads a counting global
//! allocator marks, so the heap figure is the resolver's alone. Run with `--nocapture` to see
//! the figures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use skytower_layers::check::{HealthCheck, HealthStatus};
use skytower_services::address_resolver::wire::{Answer, Cookie, Datagram};
use skytower_services::address_resolver::{
    Bindings, SudphClient, SudphConfig, Transport, UdpConfig, UdpServer,
};
use skytower_services::ttl_store::MemoryTtlStore;
use skytower_transports::identity::{SecretKey, Signature};
use skytower_transports::testing::alloc;
use tokio::net::UdpSocket;

#[global_allocator]
static ALLOC: alloc::ThreadCountingAlloc = alloc::ThreadCountingAlloc;

/// Fake peers of each kind (each sends `PER_PEER` datagrams).
const PEERS: usize = 50;
const PER_PEER: usize = 50;
/// 4 kinds × 50 peers × 50 = 10 000 handshake attempts.
const ATTEMPTS: usize = 4 * PEERS * PER_PEER;

/// Hellos that are never answered: must leave no state behind.
async fn hello_only(server: SocketAddr) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let pk = SecretKey::generate().unwrap().public_key().to_bytes();
    let hello = Datagram::Hello { pk }.encode();
    for _ in 0..PER_PEER {
        let _ = sock.send_to(&hello, server).await;
    }
}

/// Junk of every shape: too long, wrong magic, wrong lengths, resolver-sent kinds.
async fn garbage(server: SocketAddr, seed: u64) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut x = seed | 1;
    for i in 0..PER_PEER {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 1400) as usize;
        let mut buf: Vec<u8> = (0..len).map(|j| (x >> (j % 8)) as u8).collect();
        if i % 2 == 0 && len >= 4 {
            buf[..3].copy_from_slice(b"AR\x01");
            buf[3] = (x % 16) as u8;
        }
        let _ = sock.send_to(&buf, server).await;
    }
}

/// Answers with cookies the resolver never issued.
async fn forged_cookies(server: SocketAddr) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let key = SecretKey::generate().unwrap();
    for i in 0..PER_PEER {
        let a = Answer::sign(&key, Cookie([i as u8; 24]), 1, vec![]).unwrap();
        let _ = sock.send_to(&Datagram::Answer(a).encode(), server).await;
    }
}

/// Full handshakes with valid cookies and bad signatures, pipelined: all hellos, then all the
/// answers at once. These are the ones that reach the handshake queue (signature check).
async fn bad_signatures(server: SocketAddr) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let key = SecretKey::generate().unwrap();
    let pk = key.public_key().to_bytes();
    let hello = Datagram::Hello { pk }.encode();
    for _ in 0..PER_PEER {
        let _ = sock.send_to(&hello, server).await;
    }
    let mut cookies = Vec::new();
    let mut buf = [0u8; 512];
    while cookies.len() < PER_PEER {
        match tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => {
                if let Ok(Datagram::Challenge { cookie }) = Datagram::decode(&buf[..n]) {
                    cookies.push(cookie);
                }
            }
            _ => break, // a lost challenge: answer what we have
        }
    }
    for cookie in cookies {
        let mut a = Answer::sign(&key, cookie, 1, vec![]).unwrap();
        let mut sig = a.sig.to_bytes();
        sig[0] ^= 0x55;
        a.sig = Signature::from_bytes(sig);
        let _ = sock.send_to(&Datagram::Answer(a).encode(), server).await;
    }
    // Drain the refusals (bad_signature or busy) so the socket buffer does not matter.
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await
    {}
}

#[test]
fn ten_thousand_fake_handshakes_while_a_real_node_binds_and_resolves() {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(alloc::mark_current_thread)
        .build()
        .unwrap();
    let (server, bindings) = server_rt.block_on(async {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let bindings = Bindings::new(
            Arc::new(MemoryTtlStore::new(10_000)),
            Duration::from_secs(300),
        );
        let config = UdpConfig {
            allow_loopback: true,
            ..UdpConfig::default()
        };
        // The receive loop and the handshakes run on the marked worker threads.
        let server = UdpServer::start(socket, bindings.clone(), config).unwrap();
        (server, bindings)
    });
    let addr = server.local_addr();
    assert_eq!(server.queue().max_in_flight(), 64);

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Warm up (one real handshake), then take the baseline.
    client_rt.block_on(async {
        let warm = SudphClient::connect(
            Arc::new(SecretKey::generate().unwrap()),
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            SudphConfig::new(addr),
        )
        .await
        .unwrap();
        warm.close().await;
    });
    std::thread::sleep(Duration::from_millis(100));
    let baseline = alloc::heap();
    alloc::reset_peak();

    // Sample the queue while the flood runs.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let max_seen_in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sampler = {
        let queue = server.queue().clone();
        let sampling = Arc::clone(&sampling);
        let max_seen = Arc::clone(&max_seen_in_flight);
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                max_seen.fetch_max(queue.in_flight(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };

    let started = Instant::now();
    let real_key = Arc::new(SecretKey::generate().unwrap());
    let peer_key = Arc::new(SecretKey::generate().unwrap());
    let (mut real, peer, bind_time) = client_rt.block_on(async {
        let mut flood = tokio::task::JoinSet::new();
        for i in 0..PEERS {
            flood.spawn(hello_only(addr));
            flood.spawn(garbage(addr, 0x9e37_79b9_7f4a_7c15 ^ i as u64));
            flood.spawn(forged_cookies(addr));
            flood.spawn(bad_signatures(addr));
        }
        // The real node binds in the middle of the flood.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let t = Instant::now();
        let mut config = SudphConfig::new(addr);
        config.heartbeat_interval = Duration::from_millis(50);
        let real = SudphClient::connect(
            Arc::clone(&real_key),
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            config,
        )
        .await
        .expect("the real node binds during the flood");
        let bind_time = t.elapsed();
        let peer = SudphClient::connect(
            Arc::clone(&peer_key),
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            SudphConfig::new(addr),
        )
        .await
        .expect("a second real node binds during the flood");
        while flood.join_next().await.is_some() {}
        (real, peer, bind_time)
    });
    let flood_time = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = alloc::peak();

    let snap = server.snapshot();
    println!(
        "flood: {ATTEMPTS} attempts in {flood_time:?}; real node bound in {bind_time:?} \
         (busy answers met: {}); datagrams {} malformed {} challenges {} bad_cookies {} \
         handshakes ok {} failed {} refused {} timed_out {}; peak in flight {} (sampled by a \
         thread {}), peak running {}; \
         resolver heap: baseline {} KiB, peak {} KiB (+{} KiB), now {} KiB",
        real.stats().busy.load(Ordering::Relaxed),
        snap.datagrams,
        snap.malformed,
        snap.challenges,
        snap.bad_cookies,
        snap.handshakes_ok,
        snap.handshakes_failed,
        snap.refused,
        snap.timed_out,
        snap.peak_in_flight,
        max_seen_in_flight.load(Ordering::Relaxed),
        snap.peak_running,
        baseline / 1024,
        peak / 1024,
        (peak - baseline) / 1024,
        alloc::heap() / 1024,
    );

    // What the kernel did not drop (a full socket buffer drops datagrams: UDP's own overload
    // behaviour, before the resolver sees them) was accounted for: every kind of fake reached
    // the resolver and was refused.
    println!(
        "received {} datagrams for {ATTEMPTS} flood attempts (the rest dropped by the kernel)",
        snap.datagrams
    );
    assert!(snap.malformed > 0, "{snap:?}");
    assert!(snap.bad_cookies > 0, "{snap:?}");
    assert!(snap.challenges > 0, "{snap:?}");
    assert!(
        snap.handshakes_failed + snap.refused > 0,
        "the bad signatures reached the queue: {snap:?}"
    );
    // Bounds held.
    assert!(snap.peak_in_flight <= 64, "{snap:?}");
    assert!(snap.peak_running <= snap.peak_in_flight, "{snap:?}");
    assert!(max_seen_in_flight.load(Ordering::Relaxed) <= 64);
    assert_eq!(snap.timed_out, 0, "{snap:?}");
    assert!(
        peak - baseline < 16 * 1024 * 1024,
        "heap grew by {} KiB",
        (peak - baseline) / 1024
    );

    client_rt.block_on(async {
        // The real node is bound at its address and heartbeats are answered.
        let b = bindings
            .get(Transport::Sudph, &real_key.public_key())
            .await
            .unwrap()
            .expect("the real node's binding");
        assert_eq!(b.remote, real.socket().local_addr().unwrap());
        let alive = real.stats().alive.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(5);
        while real.stats().alive.load(Ordering::Relaxed) < alive + 2 {
            assert!(Instant::now() < deadline, "heartbeats not answered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The peer resolves it: the real node is told and punches towards the peer.
        let p = bindings
            .get(Transport::Sudph, &peer_key.public_key())
            .await
            .unwrap()
            .unwrap();
        assert!(server.punch(&b, &p));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ev = tokio::time::timeout_at(deadline.into(), real.next_event())
                .await
                .expect("a punch notice")
                .unwrap();
            if let skytower_services::address_resolver::SudphEvent::PunchRequested {
                peer: pk,
                ..
            } = ev
            {
                assert_eq!(pk, peer_key.public_key().to_bytes());
                break;
            }
        }
        // Healthy: a new hello is answered, the queue is empty, the check is ok.
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(&Datagram::Hello { pk: [5; 32] }.encode(), addr)
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(
            Datagram::decode(&buf[..n]),
            Ok(Datagram::Challenge { .. })
        ));
        let report = server.health_check().check().await;
        assert_eq!(report.status, HealthStatus::Ok, "{report:?}");
        assert_eq!(server.snapshot().in_flight, 0);
        peer.close().await;
        real.close().await;
    });
    server_rt.block_on(server.shutdown());
}
