//! DMSG core, end to end on loopback: a relay server and clients in one process. (The 10 000
//! stream leak test, counters and heap, is `dmsg_leak_memory.rs`.)

mod common;
use common::{T, echo, eventually, send_and_read_back};
use std::time::Duration;

use sha2::{Digest, Sha256};
use skytower_transports::dmsg::handshake;
use skytower_transports::dmsg::handshake::{HandshakeError, RefuseReason};
use skytower_transports::dmsg::mux::{Mode, Mux, MuxConfig};
use skytower_transports::dmsg::server::{Server, ServerConfig};
use skytower_transports::dmsg::session::{ClientSession, Endpoint, SessionConfig, SessionError};
use skytower_transports::dmsg::stream::DialError;
use skytower_transports::dmsg::wire::{self, Addr, Code, SignedResponse, StreamRequest};
use skytower_transports::identity::SecretKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn server(config: ServerConfig) -> Server {
    Server::bind(
        SecretKey::generate().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        config,
    )
    .await
    .unwrap()
}

fn endpoint() -> Endpoint {
    Endpoint::new(SecretKey::generate().unwrap(), SessionConfig::default())
}

/// Connects `ep` to `s` and waits until the server has registered the session (the client's
/// handshake completes one step before the server registers it).
async fn session(ep: &Endpoint, s: &Server) -> ClientSession {
    let session = ep.connect(s.local_addr(), s.public_key()).await.unwrap();
    let pk = ep.public_key();
    eventually("server registered the session", || {
        s.clients().contains(&pk)
    })
    .await;
    session
}

#[tokio::test]
async fn full_listener_backlog_is_refused_with_over_limit() {
    let srv = server(ServerConfig::default()).await;
    let b_config = SessionConfig {
        listener_backlog: 2,
        ..SessionConfig::default()
    };
    let (a, b) = (
        endpoint(),
        Endpoint::new(SecretKey::generate().unwrap(), b_config),
    );
    let (sa, _sb) = (session(&a, &srv).await, session(&b, &srv).await);
    let _l = b.listen(8).unwrap(); // never accepts
    let dst = Addr::new(b.public_key(), 8);
    let _s1 = sa.dial(dst).await.unwrap();
    let _s2 = sa.dial(dst).await.unwrap();
    let err = sa.dial(dst).await.unwrap_err();
    assert!(
        matches!(err, DialError::Refused { code: Code::OverLimit, by } if by == b.public_key()),
        "{err:?}"
    );
}

#[tokio::test]
async fn large_transfer_both_ways_with_checksum() {
    let srv = server(ServerConfig::default()).await;
    let (a, b) = (endpoint(), endpoint());
    let (sa, _sb) = (session(&a, &srv).await, session(&b, &srv).await);
    let mut l = b.listen(7).unwrap();
    let size = 16 << 20;
    let data: Vec<u8> = (0..size as u32).map(|i| (i ^ (i >> 11)) as u8).collect();
    let digest = Sha256::digest(&data);
    let receiver = tokio::spawn(async move {
        let mut s = l.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        // Answer with the reversed payload (the other direction).
        let back: Vec<u8> = got.iter().rev().copied().collect();
        s.write_all(&back).await.unwrap();
        s.shutdown().await.unwrap();
        Sha256::digest(&got)
    });
    let mut s = sa.dial(Addr::new(b.public_key(), 7)).await.unwrap();
    assert_eq!(s.remote_addr(), Addr::new(b.public_key(), 7));
    assert!(s.local_addr().port >= wire::EPHEMERAL_PORTS_START);
    let back = send_and_read_back(&mut s, &data).await;
    assert_eq!(receiver.await.unwrap(), digest);
    let expected: Vec<u8> = data.iter().rev().copied().collect();
    assert_eq!(Sha256::digest(&back), Sha256::digest(&expected));
}

#[tokio::test]
async fn streams_work_with_either_cipher_on_either_side() {
    use skytower_transports::dmsg::cipher::Cipher;
    let srv = server(ServerConfig::default()).await;
    for (ca, cb) in [
        (Cipher::ChaChaPoly, Cipher::AesGcm),
        (Cipher::AesGcm, Cipher::ChaChaPoly),
        (Cipher::AesGcm, Cipher::AesGcm),
    ] {
        let with = |cipher| {
            Endpoint::new(
                SecretKey::generate().unwrap(),
                SessionConfig {
                    cipher,
                    ..SessionConfig::default()
                },
            )
        };
        let (a, b) = (with(ca), with(cb));
        let (sa, _sb) = (session(&a, &srv).await, session(&b, &srv).await);
        let _echo = echo(b.listen(1).unwrap());
        let mut s = sa.dial(Addr::new(b.public_key(), 1)).await.unwrap();
        let data = vec![0x5a_u8; 300_000];
        let back = send_and_read_back(&mut s, &data).await;
        assert!(back == data, "{ca:?} -> {cb:?}");
    }
}

#[tokio::test]
async fn hundred_concurrent_streams() {
    let srv = server(ServerConfig::default()).await;
    // B's listener must hold 100 streams that arrive before its echo task gets to run.
    let b_config = SessionConfig {
        listener_backlog: 128,
        ..SessionConfig::default()
    };
    let (a, b) = (
        endpoint(),
        Endpoint::new(SecretKey::generate().unwrap(), b_config),
    );
    let (sa, _sb) = (session(&a, &srv).await, session(&b, &srv).await);
    let _echo = echo(b.listen(9).unwrap());
    let sa = std::sync::Arc::new(sa);
    let mut tasks = Vec::new();
    for i in 0..100u32 {
        let sa = sa.clone();
        let dst = Addr::new(b.public_key(), 9);
        tasks.push(tokio::spawn(async move {
            let mut s = sa.dial(dst).await.unwrap();
            let msg: Vec<u8> = (0..50_000u32).map(|j| (i * 31 + j) as u8).collect();
            let back = send_and_read_back(&mut s, &msg).await;
            assert!(back == msg, "stream {i} corrupted");
        }));
    }
    for t in tasks {
        tokio::time::timeout(T, t).await.unwrap().unwrap();
    }
    assert_eq!(srv.stats().relayed_total(), 100);
    eventually("bridges closed", || srv.stats().bridges() == 0).await;
}

#[tokio::test]
async fn refusals_are_typed_and_signed_by_who_refuses() {
    let srv = server(ServerConfig::default()).await;
    let (a, b, c) = (endpoint(), endpoint(), endpoint());
    let (sa, _sb) = (session(&a, &srv).await, session(&b, &srv).await);
    // No listener at B: refused by B.
    let err = sa.dial(Addr::new(b.public_key(), 5)).await.unwrap_err();
    assert!(
        matches!(err, DialError::Refused { code: Code::NoListener, by } if by == b.public_key()),
        "{err:?}"
    );
    // C is not connected to this server: refused by the server.
    let err = sa.dial(Addr::new(c.public_key(), 5)).await.unwrap_err();
    assert!(
        matches!(err, DialError::Refused { code: Code::NotConnected, by } if by == srv.public_key()),
        "{err:?}"
    );
    // The session still works afterwards.
    let _echo = echo(b.listen(5).unwrap());
    let mut s = sa.dial(Addr::new(b.public_key(), 5)).await.unwrap();
    let back = send_and_read_back(&mut s, b"still fine").await;
    assert_eq!(back, b"still fine");
    assert!(srv.stats().refused_total() >= 2);
}

#[tokio::test]
async fn listener_closed_while_streams_are_open() {
    let srv = server(ServerConfig::default()).await;
    let (a, b) = (endpoint(), endpoint());
    let (sa, _sb) = (session(&a, &srv).await, session(&b, &srv).await);
    let mut l = b.listen(11).unwrap();
    let mut out = sa.dial(Addr::new(b.public_key(), 11)).await.unwrap();
    let mut inb = l.accept().await.unwrap();
    l.close();
    // New dials are refused, the open stream keeps working both ways.
    let err = sa.dial(Addr::new(b.public_key(), 11)).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NoListener));
    out.write_all(b"ping").await.unwrap();
    out.flush().await.unwrap();
    let mut buf = [0u8; 4];
    inb.read_exact(&mut buf).await.unwrap();
    inb.write_all(b"pong").await.unwrap();
    inb.flush().await.unwrap();
    out.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    // The port is free again.
    drop(l);
    assert!(b.listen(11).is_ok());
}

#[tokio::test]
async fn server_restart_fails_open_streams_without_hanging() {
    let srv = server(ServerConfig::default()).await;
    let addr = srv.local_addr();
    let (a, b) = (endpoint(), endpoint());
    let (sa, mut sb) = (session(&a, &srv).await, session(&b, &srv).await);
    let _echo = echo(b.listen(3).unwrap());
    let mut s = sa.dial(Addr::new(b.public_key(), 3)).await.unwrap();
    s.write_all(b"x").await.unwrap();
    s.flush().await.unwrap();
    let mut one = [0u8; 1];
    s.read_exact(&mut one).await.unwrap();
    let key_bytes = srv.public_key();
    srv.shutdown().await;
    // The open stream ends (EOF or error), within the bound.
    let mut rest = Vec::new();
    let r = tokio::time::timeout(T, s.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(r.is_err() || rest.is_empty());
    tokio::time::timeout(T, sb.closed()).await.unwrap();
    assert!(sa.is_closed());
    // Dialing through the dead session fails fast with a session error.
    let err = sa.dial(Addr::new(b.public_key(), 3)).await.unwrap_err();
    assert!(
        matches!(
            err,
            DialError::Mux(_) | DialError::Io(_) | DialError::Wire(_)
        ),
        "{err:?}"
    );
    // A new server on the same address with a new key: the old key no longer authenticates.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let srv2 = Server::serve(
        SecretKey::generate().unwrap(),
        listener,
        ServerConfig::default(),
    );
    let err = a.connect(addr, key_bytes).await.unwrap_err();
    assert!(matches!(err, SessionError::Handshake(_)), "{err:?}");
    let _s2 = a.connect(addr, srv2.public_key()).await.unwrap();
}

#[tokio::test]
async fn max_sessions_is_enforced_with_a_clear_refusal() {
    let srv = server(ServerConfig {
        max_sessions: 1,
        ..ServerConfig::default()
    })
    .await;
    let (a, b) = (endpoint(), endpoint());
    let _sa = session(&a, &srv).await;
    eventually("one session", || srv.stats().sessions() == 1).await;
    let err = b
        .connect(srv.local_addr(), srv.public_key())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SessionError::Handshake(HandshakeError::Refused(RefuseReason::MaxSessions))
        ),
        "{err:?}"
    );
    assert_eq!(srv.available_sessions(), 0);
}

#[tokio::test]
async fn newest_session_from_the_same_key_wins() {
    let srv = server(ServerConfig::default()).await;
    let key = SecretKey::generate().unwrap();
    let hex = key.to_hex();
    let a1 = Endpoint::new(key, SessionConfig::default());
    let a2 = Endpoint::new(SecretKey::from_hex(&hex).unwrap(), SessionConfig::default());
    let b = endpoint();
    let mut old = session(&a1, &srv).await;
    let new = session(&a2, &srv).await;
    tokio::time::timeout(T, old.closed()).await.unwrap();
    eventually("one session for the key", || srv.stats().sessions() == 1).await;
    let _sb = session(&b, &srv).await;
    let _echo = echo(b.listen(1).unwrap());
    let mut s = new.dial(Addr::new(b.public_key(), 1)).await.unwrap();
    let back = send_and_read_back(&mut s, b"ok").await;
    assert_eq!(back, b"ok");
}

/// A raw client: a session with the server where we write arbitrary request frames.
async fn raw_session(key: &SecretKey, srv: &Server) -> Mux {
    let tcp = TcpStream::connect(srv.local_addr()).await.unwrap();
    let (transport, _) = handshake::connect(tcp, key, &srv.public_key())
        .await
        .unwrap();
    Mux::spawn(transport, Mode::Client, MuxConfig::default())
}

async fn raw_request(mux: &Mux, body: &[u8]) -> SignedResponse {
    let mut s = mux.opener().open().await.unwrap();
    wire::write_frame(&mut s, body).await.unwrap();
    let resp = tokio::time::timeout(T, wire::read_frame(&mut s))
        .await
        .unwrap()
        .unwrap();
    SignedResponse::decode(&resp).unwrap()
}

#[tokio::test]
async fn malicious_requests_are_refused_and_others_keep_working() {
    let srv = server(ServerConfig::default()).await;
    let (b, c) = (endpoint(), endpoint());
    let sb = session(&b, &srv).await;
    let sc = session(&c, &srv).await;
    let _echo = echo(b.listen(2).unwrap());
    let evil = SecretKey::generate().unwrap();
    let mux = raw_session(&evil, &srv).await;
    let dst = Addr::new(b.public_key(), 2);
    let base = || StreamRequest {
        src: Addr::new(evil.public_key(), 50_000),
        dst,
        timestamp_ms: skytower_transports::dmsg::replay::unix_ms_now(),
        nonce: rand_nonce(),
        cipher: 0,
        noise: vec![0xAB; 48],
    };
    // Bad signature (one byte of the signature flipped).
    let mut bad = base().sign(&evil).unwrap().as_bytes().to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let r = raw_request(&mux, &bad).await;
    assert_eq!(r.response().code, Code::BadSignature);
    assert_eq!(r.response().signer, srv.public_key());
    // Wrong source key: signed correctly by C's key, sent on the evil session.
    let c_key = SecretKey::generate().unwrap();
    let mut req = base();
    req.src = Addr::new(c_key.public_key(), 50_000);
    let r = raw_request(&mux, req.sign(&c_key).unwrap().as_bytes()).await;
    assert_eq!(r.response().code, Code::WrongSource);
    // Garbage Noise message: forwarded, refused by B (signed by B).
    let good = base().sign(&evil).unwrap();
    let r = raw_request(&mux, good.as_bytes()).await;
    assert_eq!(r.response().code, Code::BadHandshake);
    assert_eq!(r.response().signer, b.public_key());
    // Replay of the same request: refused by the server.
    let r = raw_request(&mux, good.as_bytes()).await;
    assert_eq!(r.response().code, Code::Replay);
    // Stale timestamp.
    let mut old = base();
    old.timestamp_ms -= 120_000;
    let r = raw_request(&mux, old.sign(&evil).unwrap().as_bytes()).await;
    assert_eq!(r.response().code, Code::Stale);
    // An unknown cipher: forwarded, refused by B as malformed.
    let mut unknown = base();
    unknown.cipher = 7;
    let r = raw_request(&mux, unknown.sign(&evil).unwrap().as_bytes()).await;
    assert_eq!(r.response().code, Code::Malformed);
    assert_eq!(r.response().signer, b.public_key());
    // Pure garbage frame.
    let r = raw_request(&mux, &[0x01, 0x01, 0xff]).await;
    assert_eq!(r.response().code, Code::Malformed);
    // Everyone else is unaffected: C dials B fine, sessions alive.
    let mut s = sc.dial(dst).await.unwrap();
    let back = send_and_read_back(&mut s, b"unaffected").await;
    assert_eq!(back, b"unaffected");
    assert!(!sb.is_closed() && !sc.is_closed());
}

fn rand_nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    getrandom::fill(&mut n).unwrap();
    n
}

#[tokio::test]
async fn garbage_session_handshakes_do_not_hurt_the_server() {
    let srv = server(ServerConfig::default()).await;
    for _ in 0..20 {
        let mut tcp = TcpStream::connect(srv.local_addr()).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(T, tcp.read_to_end(&mut buf))
            .await
            .unwrap();
    }
    eventually("failures counted", || {
        srv.stats().handshake_failures_total() == 20
    })
    .await;
    let a = endpoint();
    let s = session(&a, &srv).await;
    assert!(s.ping().await.is_ok());
}

#[tokio::test]
async fn server_registers_with_discovery_and_deletes_its_entry_on_shutdown() {
    use skytower_transports::dmsg::disc::{Discovery, MemoryDiscovery};
    let discovery = MemoryDiscovery::default();
    let mut srv = server(ServerConfig {
        max_sessions: 10,
        ..ServerConfig::default()
    })
    .await;
    let pk = srv.public_key();
    let addr = srv.local_addr().to_string();
    srv.register(
        std::sync::Arc::new(discovery.clone()),
        addr.clone(),
        Duration::from_secs(60),
    );
    eventually("entry posted", || discovery.get(&pk).is_some()).await;
    let entry = discovery.entry(pk).await.unwrap();
    assert!(entry.verify().is_ok());
    let section = entry.server.unwrap();
    assert_eq!(section.address, addr);
    assert_eq!(section.available_sessions, 10);
    let listed = discovery.available_servers().await.unwrap();
    assert_eq!(listed.len(), 1);
    srv.shutdown().await;
    assert!(
        discovery.get(&pk).is_none(),
        "entry must be deleted on shutdown"
    );
}
