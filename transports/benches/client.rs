//! DMSG client benchmark (issue text: "time from `Client::start` to dialable, and 1000
//! concurrent dial + 64 KiB echo streams"). Discovery, one relay server S and the clients on
//! loopback in one process.
//!
//! S runs on its own OS thread with a current-thread tokio runtime, so its heap (a counting
//! global allocator that attributes bytes to the thread that allocates them, with a peak) and
//! its CPU time are measured in isolation, as in `relay.rs`. The clients share one tokio runtime
//! (`SKYTOWER_BENCH_CLIENT_THREADS` workers, default 1). Clients use `ClientConfig::default()`
//! unless a row says otherwise.
//!
//! ```text
//! cargo bench -p skytower-transports --bench client                          # full: 20 clients, 1000 streams
//! SKYTOWER_BENCH_QUICK=1 cargo bench -p skytower-transports --bench client   # quick: 2 clients, 100 streams
//! ```
//!
//! Environment: `SKYTOWER_BENCH_QUICK=1`, `SKYTOWER_BENCH_CLIENTS` (new clients timed),
//! `SKYTOWER_BENCH_STREAMS` (concurrent streams), `SKYTOWER_BENCH_CLIENT_THREADS` (client
//! runtime workers; default 1) and `SKYTOWER_BENCH_ONLY=dialable|concurrent` (one phase).

#[path = "common/mod.rs"]
mod common;
#[path = "common/dmsg.rs"]
mod dmsg;
use common::{BenchEnv, Row, percentile, print_report_and_total, row};
use dmsg::{network, start_client, wait_for, wait_published};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use skytower_transports::dmsg::client::{Client, ClientConfig, ClientDialError};
use skytower_transports::dmsg::disc::MemoryDiscovery;
use skytower_transports::dmsg::server::ServerConfig;
use skytower_transports::dmsg::wire::Addr;
use skytower_transports::identity::SecretKey;
use skytower_transports::testing::alloc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Payload echoed on each concurrent stream.
const PAYLOAD: usize = 64 * 1024;
const ECHO_PORT: u16 = 7;
const INBOUND_PORT: u16 = 8;

// ---------------------------------------------------------------------------------------------
// Heap accounting: bytes allocated minus bytes freed on the server thread, and its peak.

#[global_allocator]
static ALLOC: alloc::ThreadCountingAlloc = alloc::ThreadCountingAlloc;

// ---------------------------------------------------------------------------------------------
// Helpers.

struct Settings {
    env: BenchEnv,
    clients: usize,
    streams: usize,
}

impl Settings {
    fn from_env() -> Settings {
        let env = BenchEnv::from_env();
        Settings {
            clients: env.num("SKYTOWER_BENCH_CLIENTS", 2, 20).max(1),
            streams: env.num("SKYTOWER_BENCH_STREAMS", 100, 1000).max(1),
            env,
        }
    }
}

/// Echoes every stream accepted on `port` of `client` until the listener ends.
fn spawn_echo(client: &Client, port: u16) -> tokio::task::JoinHandle<()> {
    let mut listener = client.listen(port).unwrap();
    tokio::spawn(async move {
        while let Some(mut s) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() || s.flush().await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    })
}

/// A short, stable label for a failed dial or stream (for grouping).
fn label(e: &ClientDialError) -> String {
    match e {
        ClientDialError::AllFailed { attempts, .. } => attempts
            .last()
            .map(|a| {
                a.error
                    .split(" (retry")
                    .next()
                    .unwrap_or(&a.error)
                    .to_string()
            })
            .unwrap_or_else(|| e.to_string()),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Phase 1: time from `Client::start` to dialable.

struct Dialable {
    /// `Client::start` → first session established (the session's `connected_since`).
    session: Vec<Duration>,
    /// `Client::start` → `wait_for_sessions(1)` returned.
    wait_api: Vec<Duration>,
    /// `Client::start` → its first dial to an existing echo client returned a stream and a
    /// 1-byte echo came back (outbound-dialable).
    outbound: Vec<Duration>,
    /// `Client::start` → another client's dial to it succeeded (its entry is published and it
    /// accepts: inbound-dialable). Retried every 1 ms until it works.
    inbound: Vec<Duration>,
}

async fn dialable(
    discovery: &MemoryDiscovery,
    echo: Addr,
    prober: &Client,
    config: ClientConfig,
    n: usize,
) -> Dialable {
    let mut r = Dialable {
        session: Vec::new(),
        wait_api: Vec::new(),
        outbound: Vec::new(),
        inbound: Vec::new(),
    };
    for _ in 0..n {
        let key = SecretKey::generate().unwrap();
        let wall0 = SystemTime::now();
        let t0 = Instant::now();
        let x = Client::start(key, Arc::new(discovery.clone()), config.clone());
        let mut listener = x.listen(INBOUND_PORT).unwrap();
        let x_addr = Addr::new(x.public_key(), INBOUND_PORT);
        let accept = tokio::spawn(async move {
            // Hold accepted streams until the listener goes.
            let mut held = Vec::new();
            while let Some(s) = listener.accept().await {
                held.push(s);
            }
        });
        let wait_api = async {
            x.wait_for_sessions(1, Duration::from_secs(10)).await;
            t0.elapsed()
        };
        let outbound = async {
            let mut s = x.dial(echo).await.expect("outbound dial");
            s.write_all(b"x").await.unwrap();
            s.flush().await.unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            t0.elapsed()
        };
        let inbound = async {
            loop {
                let r = prober.dial(x_addr).await;
                if let Ok(s) = r {
                    drop(s);
                    return t0.elapsed();
                }
                assert!(t0.elapsed() < Duration::from_secs(20), "inbound dial");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let (w, o, i) = tokio::join!(wait_api, outbound, inbound);
        let since = x.sessions()[0].connected_since;
        r.session
            .push(since.duration_since(wall0).unwrap_or_default());
        r.wait_api.push(w);
        r.outbound.push(o);
        r.inbound.push(i);
        x.close().await;
        accept.abort();
    }
    for v in [
        &mut r.session,
        &mut r.wait_api,
        &mut r.outbound,
        &mut r.inbound,
    ] {
        v.sort();
    }
    r
}

// ---------------------------------------------------------------------------------------------
// Phase 2: N concurrent dial + 64 KiB echo streams from one client to one echo client.

struct Concurrent {
    ok: usize,
    errors: BTreeMap<String, usize>,
    wall: Duration,
    /// Dial → echo complete, successful streams.
    stream: Vec<Duration>,
    /// Dial alone, successful streams.
    dial: Vec<Duration>,
    server_base: i64,
    server_peak: i64,
    server_cpu: Duration,
    refused: u64,
}

async fn concurrent(
    server_config: ServerConfig,
    dialer: ClientConfig,
    echo: ClientConfig,
    streams: usize,
) -> Concurrent {
    let (discovery, server) = network(server_config).await;
    let b = start_client(&discovery, echo);
    let _echo = spawn_echo(&b, ECHO_PORT);
    let a = Arc::new(start_client(&discovery, dialer));
    a.wait_for_sessions(1, Duration::from_secs(10)).await;
    wait_published(&discovery, b.public_key()).await;
    let dst = Addr::new(b.public_key(), ECHO_PORT);
    // Warm: A has B's entry cached and both sessions are up.
    drop(a.dial(dst).await.expect("warm-up dial"));
    let stats = server.stats.clone();
    wait_for("warm-up bridge closed", || stats.bridges() == 0).await;
    let refused0 = server.stats.refused_total();
    let before = server.probe(true).await;
    let payload: Arc<Vec<u8>> = Arc::new((0..PAYLOAD).map(|i| (i * 7 + i / 251) as u8).collect());
    let start = Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|_| {
            let a = a.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                let mut s = a.dial(dst).await.map_err(|e| label(&e))?;
                let dialed = t.elapsed();
                let (mut r, mut w) = tokio::io::split(&mut s);
                let write = async {
                    w.write_all(&payload).await?;
                    w.shutdown().await
                };
                let read = async {
                    let mut back = Vec::with_capacity(PAYLOAD);
                    r.read_to_end(&mut back).await.map(|_| back)
                };
                let (wr, rd) = tokio::join!(write, read);
                wr.map_err(|e| format!("write: {e}"))?;
                let back = rd.map_err(|e| format!("read: {e}"))?;
                if back[..] != payload[..] {
                    return Err(format!("echo mismatch ({} bytes back)", back.len()));
                }
                Ok::<_, String>((dialed, t.elapsed()))
            })
        })
        .collect();
    let mut out = Concurrent {
        ok: 0,
        errors: BTreeMap::new(),
        wall: Duration::ZERO,
        stream: Vec::new(),
        dial: Vec::new(),
        server_base: before.heap,
        server_peak: 0,
        server_cpu: Duration::ZERO,
        refused: 0,
    };
    for t in tasks {
        match t.await.unwrap() {
            Ok((d, s)) => {
                out.ok += 1;
                out.dial.push(d);
                out.stream.push(s);
            }
            Err(e) => {
                let e = e
                    .replace(&b.public_key().to_string(), "B")
                    .replace(&server.pk.to_string(), "S");
                *out.errors.entry(e).or_default() += 1;
            }
        }
    }
    out.wall = start.elapsed();
    let after = server.probe(false).await;
    out.server_peak = after.peak;
    out.server_cpu = after.cpu - before.cpu;
    out.refused = server.stats.refused_total() - refused0;
    out.dial.sort();
    out.stream.sort();
    drop(a);
    drop(b);
    server.shutdown().await;
    out
}

// ---------------------------------------------------------------------------------------------
// Report.

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.0} ms")
    }
}

fn p50_p99(v: &[Duration]) -> String {
    format!(
        "{} / {} (max {})",
        ms(percentile(v, 0.5)),
        ms(percentile(v, 0.99)),
        ms(v.last().copied().unwrap_or_default())
    )
}

fn concurrent_rows(rows: &mut Vec<Row>, name: &str, c: &Concurrent, streams: usize) {
    let errors = if c.errors.is_empty() {
        "none".to_string()
    } else {
        c.errors
            .iter()
            .map(|(e, n)| format!("{n} × {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let all_ok = c.ok == streams;
    rows.push(
        row(
            format!("{name}: wall time, {streams} streams"),
            format!("{} ({} ok)", ms(c.wall), c.ok),
        )
        .go("~9 s")
        .target("<= 1 s, all ok", all_ok && c.wall <= Duration::from_secs(1)),
    );
    rows.push(row(format!("{name}: failures"), errors));
    rows.push(row(
        format!("{name}: per stream p50 / p99 (dial + echo)"),
        p50_p99(&c.stream),
    ));
    rows.push(row(format!("{name}: dial p50 / p99"), p50_p99(&c.dial)));
    rows.push(
        row(
            format!("{name}: server peak heap (base)"),
            format!(
                "{:.1} MB ({:.1} MB)",
                c.server_peak as f64 / 1e6,
                c.server_base as f64 / 1e6
            ),
        )
        .go("~128 MB")
        .target("<= 32 MB", c.server_peak <= 32_000_000),
    );
    rows.push(row(
        format!("{name}: server CPU, refusals by S"),
        format!("{:.2} CPU-s, {}", c.server_cpu.as_secs_f64(), c.refused),
    ));
}

async fn run(set: Settings) {
    let total_start = Instant::now();
    println!(
        "DMSG client benchmark ({} mode): {} new clients, {} concurrent {} KiB echo streams; server \
         on its own thread (current-thread runtime), clients on a {}-worker runtime; {} CPUs; \
         MB = 10^6 B",
        set.env.mode(),
        set.clients,
        set.streams,
        PAYLOAD / 1024,
        set.env.client_threads,
        common::cpus(),
    );
    let mut rows = Vec::new();

    if set.env.runs("dialable") {
        let (discovery, server) = network(ServerConfig::default()).await;
        let echo = start_client(&discovery, ClientConfig::default());
        let _echo_task = spawn_echo(&echo, ECHO_PORT);
        let prober = start_client(&discovery, ClientConfig::default());
        prober.wait_for_sessions(1, Duration::from_secs(10)).await;
        wait_published(&discovery, echo.public_key()).await;
        let echo_addr = Addr::new(echo.public_key(), ECHO_PORT);
        // Warm-up client (first-use costs: lazy statics, allocator arenas), fast debounce.
        let fast = ClientConfig {
            publish_debounce: Duration::ZERO,
            ..ClientConfig::default()
        };
        dialable(&discovery, echo_addr, &prober, fast.clone(), 1).await;
        let n = set.clients;
        let d = dialable(&discovery, echo_addr, &prober, ClientConfig::default(), n).await;
        let f = dialable(&discovery, echo_addr, &prober, fast, n).await;
        let p50 = |v: &[Duration]| percentile(v, 0.5);
        let p99 = |v: &[Duration]| percentile(v, 0.99);
        let pair =
            |what: &str, v: &[Duration]| row(what, format!("{} / {}", ms(p50(v)), ms(p99(v))));
        let outbound = "start → dialable outbound (dial + 1-byte echo ok), p50 / p99";
        let inbound = "start → dialable inbound (published; another client's dial ok), p50 / p99";
        rows.extend([
            pair(
                &format!("start → session up, p50 / p99 ({n} clients)"),
                &d.session,
            ),
            pair(
                "start → wait_for_sessions(1) returns, p50 / p99",
                &d.wait_api,
            ),
            pair(outbound, &d.outbound)
                .go("~24 ms")
                .target("p50 <= 5 ms", p50(&d.outbound) <= Duration::from_millis(5)),
            pair(inbound, &d.inbound),
            pair("  same, publish_debounce = 0 (knob), p50 / p99", &f.inbound),
            pair(
                "  outbound with publish_debounce = 0, p50 / p99",
                &f.outbound,
            ),
        ]);
        drop(echo);
        drop(prober);
        server.shutdown().await;
    }

    if set.env.runs("concurrent") {
        let n = set.streams;
        let d = concurrent(
            ServerConfig::default(),
            ClientConfig::default(),
            ClientConfig::default(),
            n,
        )
        .await;
        concurrent_rows(&mut rows, "defaults", &d, n);
        // The knobs that bound concurrency on this path, raised past N.
        let big = n.max(1024);
        let mut server_config = ServerConfig::default();
        server_config.mux.open_queue = big;
        let mut dialer = ClientConfig::default();
        dialer.session.mux.open_queue = big;
        let mut echo = ClientConfig::default();
        echo.session.listener_backlog = big;
        echo.session.mux.open_queue = big;
        let t = concurrent(server_config, dialer, echo, n).await;
        concurrent_rows(
            &mut rows,
            &format!("open_queue {big} (A, S), backlog {big} (B)"),
            &t,
            n,
        );
    }

    print_report_and_total(&rows, None, total_start);
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let set = Settings::from_env();
    common::run_on_clients(set.env.client_threads, run(set));
}
