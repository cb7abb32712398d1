//! Helpers shared by the transports benches (included with `#[path]`; not a bench target).

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

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time (user + system) of the whole process.
pub fn process_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The `p` quantile (0–1) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Whether `SKYTOWER_BENCH_QUICK` asks for a quick run.
pub fn quick() -> bool {
    std::env::var("SKYTOWER_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A numeric setting from the environment, or `default`.
pub fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Prints a Markdown table with columns as wide as their widest cell.
pub fn print_table(head: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |c: &[String]| {
        let cells: Vec<String> = c
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s:<width$}", width = w[i]))
            .collect();
        println!("| {} |", cells.join(" | "));
    };
    line(&head.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    println!(
        "|{}|",
        w.iter()
            .map(|n| "-".repeat(n + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in rows {
        line(r);
    }
}

// ---------------------------------------------------------------------------------------------
// Threads with their own current-thread runtime, a probe and a shutdown.

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

// ---------------------------------------------------------------------------------------------
// Settings and the clients' runtime.

/// `SKYTOWER_BENCH_ONLY`: the one phase (or transport) to run; all when unset.
pub struct Only(Option<String>);

impl Only {
    pub fn from_env() -> Only {
        Only(std::env::var("SKYTOWER_BENCH_ONLY").ok())
    }

    /// Whether `phase` runs.
    pub fn runs(&self, phase: &str) -> bool {
        self.0.as_deref().is_none_or(|o| o == phase)
    }
}

/// "quick" or "full", for the header line.
pub fn mode(quick: bool) -> &'static str {
    if quick { "quick" } else { "full" }
}

/// CPUs available to this process (0 if unknown).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// Runs `bench` as a task on a multi-thread runtime of `workers` threads (the clients' side).
pub fn run_on_clients<F>(workers: usize, bench: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move { tokio::spawn(bench).await.unwrap() });
}

// ---------------------------------------------------------------------------------------------
// Report.

/// One row of a report: a measurement and its value, optionally compared with a baseline, the
/// Go figure and a target (met or not).
pub struct Row {
    what: String,
    value: String,
    vs: String,
    go: String,
    target: String,
    met: String,
}

pub fn row(what: impl Into<String>, value: impl Into<String>) -> Row {
    Row {
        what: what.into(),
        value: value.into(),
        vs: String::new(),
        go: String::new(),
        target: String::new(),
        met: String::new(),
    }
}

impl Row {
    pub fn vs(mut self, s: impl Into<String>) -> Row {
        self.vs = s.into();
        self
    }

    pub fn go(mut self, s: impl Into<String>) -> Row {
        self.go = s.into();
        self
    }

    pub fn target(mut self, s: impl Into<String>, met: bool) -> Row {
        self.target = s.into();
        self.met = if met { "yes" } else { "NO" }.into();
        self
    }
}

/// Prints `rows` as a table; `vs` heads the comparison column, which `None` leaves out.
pub fn print_report(rows: &[Row], vs: Option<&str>) {
    let mut head = vec!["measurement", "value"];
    head.extend(vs);
    head.extend(["Go", "target", "met"]);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut c = vec![r.what.clone(), r.value.clone()];
            if vs.is_some() {
                c.push(r.vs.clone());
            }
            c.extend([r.go.clone(), r.target.clone(), r.met.clone()]);
            c
        })
        .collect();
    print_table(&head, &cells);
}

/// The report after a blank line, then the bench's total time.
pub fn print_report_and_total(rows: &[Row], vs: Option<&str>, start: Instant) {
    println!();
    print_report(rows, vs);
    println!();
    println!("total bench time: {:.1} s", start.elapsed().as_secs_f64());
}
