//! DMSG pieces shared by the transports benches (included with `#[path]` next to `common`):
//! threads with their own runtime, a relay server S on one, clients on a shared discovery.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use skytower_transports::dmsg::client::{Client, ClientConfig};
use skytower_transports::dmsg::disc::MemoryDiscovery;
use skytower_transports::dmsg::server::{Server, ServerConfig, ServerStats};
use skytower_transports::identity::{PublicKey, SecretKey};
use skytower_transports::testing::alloc;
use tokio::sync::{mpsc, oneshot};

use crate::common::thread_cpu;

/// What a [`Side`] thread reports: its CPU time and the counting allocator's figures (those are
/// the heap of the marked threads when the bench installs `alloc::ThreadCountingAlloc`, zero
/// otherwise).
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    pub cpu: Duration,
    pub heap: i64,
    pub peak: i64,
    pub heap_large: i64,
    pub allocs: u64,
}

enum Ctl {
    /// Reads the counters; with `true`, first restarts the peak from the current heap.
    Probe(bool, oneshot::Sender<Probe>),
    Shutdown(oneshot::Sender<()>),
}

/// An OS thread with its own current-thread tokio runtime, marked for `alloc` (its heap is the
/// one counted), answering probes until shut down.
pub struct Side {
    ctl: mpsc::UnboundedSender<Ctl>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Side {
    /// Runs `setup` on a new thread's runtime. It returns what is sent back to the caller and
    /// a future that owns what must stay alive; that future runs (tearing it down) on shutdown.
    pub fn start<I, S, F, Fut>(name: &str, setup: F) -> (Side, I)
    where
        I: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = (I, S)>,
        S: Future<Output = ()>,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                alloc::mark_current_thread();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let (info, teardown) = setup().await;
                    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
                    tx.send((info, ctl_tx)).ok().unwrap();
                    while let Some(c) = ctl_rx.recv().await {
                        match c {
                            Ctl::Probe(reset, reply) => {
                                if reset {
                                    alloc::reset_peak();
                                }
                                let _ = reply.send(Probe {
                                    cpu: thread_cpu(),
                                    heap: alloc::heap(),
                                    peak: alloc::peak(),
                                    heap_large: alloc::large_heap(),
                                    allocs: alloc::allocations(),
                                });
                            }
                            Ctl::Shutdown(reply) => {
                                teardown.await;
                                let _ = reply.send(());
                                return;
                            }
                        }
                    }
                });
            })
            .unwrap();
        let (info, ctl) = rx.recv().unwrap();
        (
            Side {
                ctl,
                thread: Some(thread),
            },
            info,
        )
    }

    /// The thread's counters; `reset_peak` first restarts the peak from the current heap.
    pub async fn probe(&self, reset_peak: bool) -> Probe {
        let (tx, rx) = oneshot::channel();
        self.ctl.send(Ctl::Probe(reset_peak, tx)).ok().unwrap();
        rx.await.unwrap()
    }

    /// The thread's CPU time.
    pub async fn cpu(&self) -> Duration {
        self.probe(false).await.cpu
    }

    /// Runs the teardown and joins the thread.
    pub async fn shutdown(mut self) {
        let (tx, rx) = oneshot::channel();
        self.ctl.send(Ctl::Shutdown(tx)).ok().unwrap();
        rx.await.unwrap();
        if let Some(t) = self.thread.take() {
            tokio::task::spawn_blocking(move || t.join().unwrap())
                .await
                .unwrap();
        }
    }
}

/// A DMSG relay server S on its own [`Side`] thread.
pub struct ServerThread {
    pub addr: SocketAddr,
    pub pk: PublicKey,
    pub stats: Arc<ServerStats>,
    pub side: Side,
}

impl ServerThread {
    /// S bound on loopback; with `discovery`, registered there.
    pub fn start(config: ServerConfig, discovery: Option<MemoryDiscovery>) -> ServerThread {
        let (side, (addr, pk, stats)) = Side::start("dmsg-server", move || async move {
            let key = SecretKey::generate().unwrap();
            let mut server = Server::bind(key, "127.0.0.1:0".parse().unwrap(), config)
                .await
                .unwrap();
            let addr = server.local_addr();
            if let Some(discovery) = discovery {
                server.register(
                    Arc::new(discovery),
                    addr.to_string(),
                    Duration::from_secs(60),
                );
            }
            let info = (addr, server.public_key(), server.stats().clone());
            (info, server.shutdown())
        });
        ServerThread {
            addr,
            pk,
            stats,
            side,
        }
    }

    /// See [`Side::probe`].
    pub async fn probe(&self, reset_peak: bool) -> Probe {
        self.side.probe(reset_peak).await
    }

    /// CPU time of S's thread.
    pub async fn cpu(&self) -> Duration {
        self.side.cpu().await
    }

    /// Shuts S down and joins its thread.
    pub async fn shutdown(self) {
        self.side.shutdown().await
    }
}

/// A fresh in-memory discovery and S on its own thread, S's entry posted.
pub async fn network(config: ServerConfig) -> (MemoryDiscovery, ServerThread) {
    let discovery = MemoryDiscovery::default();
    let server = ServerThread::start(config, Some(discovery.clone()));
    let d = discovery.clone();
    let pk = server.pk;
    wait_for("server entry posted", || d.get(&pk).is_some()).await;
    (discovery, server)
}

/// A DMSG client with a fresh key on `discovery`.
pub fn start_client(discovery: &MemoryDiscovery, config: ClientConfig) -> Client {
    Client::start(
        SecretKey::generate().unwrap(),
        Arc::new(discovery.clone()),
        config,
    )
}

/// Polls `f` every millisecond until it holds; panics after 60 s.
pub async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until client `pk`'s entry in `discovery` lists at least one server.
pub async fn wait_published(discovery: &MemoryDiscovery, pk: PublicKey) {
    let d = discovery.clone();
    wait_for("client entry published", || {
        d.get(&pk)
            .and_then(|e| e.client)
            .is_some_and(|c| !c.delegated_servers.is_empty())
    })
    .await;
}
