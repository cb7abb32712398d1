//! HTTP over DMSG vs plain HTTP on loopback, in the same run (issue text: "HTTP requests/s and
//! p99 latency through DMSG-HTTP vs plain HTTP on loopback, same run (keep-alive, 64
//! concurrent). Target: DMSG-HTTP >= 50 % of plain HTTP requests/s.").
//!
//! Three OS threads, each with its own tokio runtime:
//! - the backend: a tiny hyper http1 service (`GET` → 5-byte body) served on a TCP listener and on
//!   a DMSG listener (`Listener::dmsg`, port 80) of DMSG client B (current-thread runtime);
//! - the relay server S (current-thread runtime), registered with an in-memory discovery;
//! - the load generator: DMSG client A and one hyper-util legacy client over `Connector`
//!   (pooled keep-alive), `SKYTOWER_BENCH_CLIENT_THREADS` workers (default 1).
//!
//! 64 concurrent workers send requests back to back for a fixed duration per run; plain and DMSG
//! runs alternate. The pool is warmed first (64 connections / DMSG streams each), so the timed
//! runs measure requests on kept-alive connections only.
//!
//! ```text
//! cargo bench -p skytower-transports --bench http                          # full: 2 rounds × 5 s each
//! SKYTOWER_BENCH_QUICK=1 cargo bench -p skytower-transports --bench http   # quick: 1 round × 1 s each
//! ```
//!
//! Environment: `SKYTOWER_BENCH_QUICK=1`, `SKYTOWER_BENCH_SECS` (seconds per run),
//! `SKYTOWER_BENCH_ROUNDS`, `SKYTOWER_BENCH_CONCURRENCY` (default 64),
//! `SKYTOWER_BENCH_CLIENT_THREADS` (load generator workers, default 1) and
//! `SKYTOWER_BENCH_ONLY=tcp|dmsg` (one transport, e.g. under `perf record`).

#[path = "common/mod.rs"]
mod common;
#[path = "common/dmsg.rs"]
mod dmsg;
use common::{BenchEnv, env_num, percentile, print_table, process_cpu};
use dmsg::{Side, network, start_client, wait_published};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use skytower_transports::connector::{Connector, Listener, Peer};
use skytower_transports::dmsg::client::ClientConfig;
use skytower_transports::dmsg::server::ServerConfig;
use skytower_transports::identity::PublicKey;

type Http = HttpClient<Connector, Empty<Bytes>>;

async fn hello(_req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"hello"))))
}

/// Serves `hello` (hyper http1, keep-alive) on every connection of `listener`.
fn serve(mut listener: Listener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((conn, _peer)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(conn), hyper::service::service_fn(hello))
                    .await;
            });
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Load.

struct Settings {
    env: BenchEnv,
    secs: f64,
    rounds: usize,
    concurrency: usize,
}

impl Settings {
    fn from_env() -> Settings {
        let env = BenchEnv::from_env();
        Settings {
            secs: env.num("SKYTOWER_BENCH_SECS", 1.0f64, 5.0).max(0.1),
            rounds: env.num("SKYTOWER_BENCH_ROUNDS", 1, 2).max(1),
            concurrency: env_num("SKYTOWER_BENCH_CONCURRENCY", 64usize).max(1),
            env,
        }
    }
}

async fn get(client: &Http, uri: &http::Uri) -> Duration {
    let t = Instant::now();
    let resp = client.get(uri.clone()).await.expect("request");
    assert!(resp.status().is_success());
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"hello");
    t.elapsed()
}

/// `concurrency` workers, each sending requests back to back until `deadline` (or, when
/// `per_worker` is set, that many requests each). Returns every latency and the wall time.
async fn load(
    client: &Http,
    uri: &http::Uri,
    concurrency: usize,
    until: Option<Duration>,
    per_worker: usize,
) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            let uri = uri.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    match until {
                        Some(d) if start.elapsed() >= d => break,
                        None if lat.len() >= per_worker => break,
                        _ => {}
                    }
                    lat.push(get(&client, &uri).await);
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let wall = start.elapsed();
    all.sort();
    (all, wall)
}

#[derive(Default)]
struct Totals {
    requests: usize,
    wall: Duration,
    lat: Vec<Duration>,
    rates: Vec<f64>,
    process_cpu: Duration,
    backend_cpu: Duration,
    relay_cpu: Duration,
}

impl Totals {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64()
    }
}

// ---------------------------------------------------------------------------------------------
// Report.

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

async fn run(set: Settings) {
    let total_start = Instant::now();
    println!(
        "HTTP benchmark ({} mode): plain HTTP/1.1 vs HTTP/1.1 over DMSG on loopback, {} \
         concurrent keep-alive workers, {} round(s) of {:.1} s per transport; backend and relay on \
         their own threads (current-thread runtimes), load generator on a {}-worker runtime; {} CPUs",
        set.env.mode(),
        set.concurrency,
        set.rounds,
        set.secs,
        set.env.client_threads,
        common::cpus(),
    );
    // The relay S, registered with a fresh discovery.
    let (discovery, relay) = network(ServerConfig::default()).await;

    // The backend: TCP and DMSG listeners serving the same hyper service.
    let d = discovery.clone();
    let (backend, (tcp_addr, b_pk)) = Side::start("http-backend", move || async move {
        let tcp = Listener::bind_tcp("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let Ok(Peer::Tcp(tcp_addr)) = tcp.local_addr() else {
            unreachable!()
        };
        let b = start_client(&d, ClientConfig::default());
        let dmsg = Listener::dmsg(&b, 80).unwrap();
        let tasks = (serve(tcp), serve(dmsg));
        let info: (SocketAddr, PublicKey) = (tcp_addr, b.public_key());
        (info, async move { drop((b, tasks)) })
    });
    wait_published(&discovery, b_pk).await;

    // The load generator.
    let a = Arc::new(start_client(&discovery, ClientConfig::default()));
    a.wait_for_sessions(1, Duration::from_secs(10)).await;
    let client: Http = HttpClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(300))
        .build(Connector::with_dmsg(a.clone()).connect_timeout(Duration::from_secs(10)));
    let tcp_uri: http::Uri = format!("http://{tcp_addr}/").parse().unwrap();
    let dmsg_uri: http::Uri = format!("dmsg://{b_pk}:80/").parse().unwrap();
    let mut targets = Vec::new();
    if set.env.runs("tcp") {
        targets.push(("plain HTTP (TCP)", tcp_uri));
    }
    if set.env.runs("dmsg") {
        targets.push(("DMSG-HTTP", dmsg_uri));
    }

    // Warm-up: fills the pool with `concurrency` connections per target.
    let mut warm = Vec::new();
    for (_, uri) in &targets {
        let t = Instant::now();
        load(&client, uri, set.concurrency, None, 20).await;
        warm.push(t.elapsed());
    }
    let opened = a.sessions().first().map_or(0, |s| s.open_streams);

    let mut totals: Vec<Totals> = targets.iter().map(|_| Totals::default()).collect();
    let until = Some(Duration::from_secs_f64(set.secs));
    for _ in 0..set.rounds {
        for (i, (_, uri)) in targets.iter().enumerate() {
            let (p0, b0, r0) = (process_cpu(), backend.cpu().await, relay.cpu().await);
            let (lat, wall) = load(&client, uri, set.concurrency, until, 0).await;
            let (p1, b1, r1) = (process_cpu(), backend.cpu().await, relay.cpu().await);
            let t = &mut totals[i];
            t.rates.push(lat.len() as f64 / wall.as_secs_f64());
            t.requests += lat.len();
            t.wall += wall;
            t.lat.extend(lat);
            t.process_cpu += p1 - p0;
            t.backend_cpu += b1 - b0;
            t.relay_cpu += r1 - r0;
        }
    }

    let mut rows = Vec::new();
    let plain_rate = targets
        .iter()
        .position(|(n, _)| n.starts_with("plain"))
        .map(|i| totals[i].rate());
    for (i, ((name, _), t)) in targets.iter().zip(totals.iter_mut()).enumerate() {
        t.lat.sort();
        let per_req = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6 / t.requests as f64);
        let rounds = t
            .rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ");
        let (vs, met) = match plain_rate {
            Some(p) if !name.starts_with("plain") => {
                let ratio = t.rate() / p;
                (
                    format!("{:.1} %", ratio * 100.0),
                    if ratio >= 0.5 { "yes" } else { "NO" }.to_string(),
                )
            }
            Some(_) => ("100 %".to_string(), String::new()),
            None => (String::new(), String::new()),
        };
        rows.push(vec![
            name.to_string(),
            format!("{:.0} ({rounds})", t.rate()),
            vs,
            if name.starts_with("plain") {
                String::new()
            } else {
                ">= 50 %".into()
            },
            met,
            ms(percentile(&t.lat, 0.5)),
            ms(percentile(&t.lat, 0.99)),
            ms(t.lat.last().copied().unwrap_or_default()),
            t.requests.to_string(),
            per_req(t.process_cpu),
            per_req(t.backend_cpu),
            per_req(t.relay_cpu),
            format!("{:.0} ms", warm[i].as_secs_f64() * 1e3),
        ]);
    }
    drop(client);
    drop(a);
    backend.shutdown().await;
    relay.shutdown().await;

    println!();
    print_table(
        &[
            "transport",
            "req/s (per round)",
            "vs plain",
            "target",
            "met",
            "p50",
            "p99",
            "max",
            "requests",
            "process CPU/req",
            "backend CPU/req",
            "relay CPU/req",
            "warm-up",
        ],
        &rows,
    );
    println!();
    println!(
        "warm-up = {} workers × 20 requests, opening the pooled connections ({} DMSG streams open \
         on A's session after it); total bench time: {:.1} s",
        set.concurrency,
        opened,
        total_start.elapsed().as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let set = Settings::from_env();
    common::run_on_clients(set.env.client_threads, run(set));
}
