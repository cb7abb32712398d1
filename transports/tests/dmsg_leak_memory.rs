//! Leak test: after 10 000 relayed and 10 000 refused streams, the relay server's bridges and
//! tasks are back to their idle counts and its heap is back within 10 % of where it started, and
//! the dialing client holds no stream and no port. The server runs on its own thread with its own current-thread runtime,
//! and a counting global allocator attributes heap bytes to that thread, so the clients' memory
//! does not blur the figure.

mod common;
use common::eventually_within;
use std::sync::Arc;
use std::time::Duration;

use skytower_transports::dmsg::server::{Server, ServerConfig, ServerStats};
use skytower_transports::dmsg::session::{Endpoint, SessionConfig};
use skytower_transports::dmsg::wire::{Addr, Code};
use skytower_transports::identity::{PublicKey, SecretKey};
use skytower_transports::testing::alloc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[global_allocator]
static ALLOC: alloc::ThreadCountingAlloc = alloc::ThreadCountingAlloc;

/// Starts a relay on its own thread; returns its address, key, stats and a stop handle.
fn spawn_server() -> (
    std::net::SocketAddr,
    PublicKey,
    Arc<ServerStats>,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (info_tx, info_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        alloc::mark_current_thread();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = Server::bind(
                SecretKey::generate().unwrap(),
                "127.0.0.1:0".parse().unwrap(),
                ServerConfig::default(),
            )
            .await
            .unwrap();
            info_tx
                .send((
                    server.local_addr(),
                    server.public_key(),
                    server.stats().clone(),
                ))
                .unwrap();
            let _ = stop_rx.await;
            server.shutdown().await;
        });
    });
    let (addr, pk, stats) = info_rx.recv().unwrap();
    (addr, pk, stats, stop_tx, thread)
}

/// `rounds` × (one echoed stream + one refused dial) from `workers` concurrent tasks.
async fn traffic(
    sa: &Arc<skytower_transports::dmsg::session::ClientSession>,
    ok: Addr,
    refused: Addr,
    rounds: usize,
) {
    let workers = 32;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let sa = sa.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..rounds).step_by(workers) {
                let mut s = sa.dial(ok).await.unwrap();
                s.write_all(&(i as u64).to_be_bytes()).await.unwrap();
                s.shutdown().await.unwrap();
                let mut back = Vec::new();
                s.read_to_end(&mut back).await.unwrap();
                assert_eq!(back, (i as u64).to_be_bytes());
                let err = sa.dial(refused).await.unwrap_err();
                assert_eq!(err.code(), Some(Code::NoListener));
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(300), t)
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_memory_returns_within_ten_percent_after_ten_thousand_streams() {
    let (addr, server_pk, stats, stop, thread) = spawn_server();
    let config = SessionConfig::default();
    let (a, b) = (
        Endpoint::new(SecretKey::generate().unwrap(), config.clone()),
        Endpoint::new(SecretKey::generate().unwrap(), config),
    );
    let sa = Arc::new(a.connect(addr, server_pk).await.unwrap());
    let _sb = b.connect(addr, server_pk).await.unwrap();
    eventually_within(Duration::from_secs(60), "both sessions registered", || {
        stats.sessions() == 2
    })
    .await;
    let mut listener = b.listen(4).unwrap();
    let _echo = tokio::spawn(async move {
        while let Some(mut s) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(&mut s);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    let ok = Addr::new(b.public_key(), 4);
    let refused = Addr::new(b.public_key(), 44);

    // Warm up (buffers, pools, maps reach their working size), then take the baseline.
    traffic(&sa, ok, refused, 200).await;
    let quiet = |stats: &ServerStats| stats.bridges() == 0 && stats.tasks() == 3;
    eventually_within(Duration::from_secs(60), "quiet after warm-up", || {
        quiet(&stats)
    })
    .await;
    let baseline = alloc::heap();

    traffic(&sa, ok, refused, 10_000).await;
    eventually_within(Duration::from_secs(60), "quiet after the load", || {
        quiet(&stats)
    })
    .await;
    assert_eq!(stats.relayed_total(), 10_200);
    assert!(stats.refused_total() >= 10_200);
    let after = alloc::heap();
    let growth = after - baseline;
    eprintln!("server heap: baseline {baseline} B, after {after} B, growth {growth:+} B");
    assert!(
        growth * 10 <= baseline,
        "server heap grew from {baseline} to {after} bytes ({growth:+}): more than 10 %"
    );

    eventually_within(Duration::from_secs(60), "client streams closed", || {
        sa.stats().open_streams() == 0
    })
    .await;
    assert_eq!(a.ports().ephemeral_in_use(), 0);

    let _ = stop.send(());
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
}
