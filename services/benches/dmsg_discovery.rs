//! dmsg-discovery load benchmark: a loopback load generator against a real server.
//!
//! `cargo bench -p skytower-services --bench dmsg_discovery`
//!
//! The server runs on its own single-worker runtime (one core), the load generator on another.
//! It fills the store with `BENCH_ENTRIES` signed server entries (default 100 000; memory is
//! reported as the process RSS growth, which includes the generator's copies), then runs
//! `GET /entry/{pk}` and `POST /entry` (pre-signed content changes) with `BENCH_CONNS`
//! connections (default 32) for `BENCH_SECS` seconds each (default 5), reporting requests/s and
//! p50/p99 latency. The same runs against Redis when `redis-server` is installed (with
//! `BENCH_REDIS_ENTRIES`, default 20 000).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use skytower_services::dmsg_discovery::{
    Config, DiscoveryServer, RedisConfig, StoreConfig, StoreSpec,
};
use skytower_transports::dmsg::disc::Entry;
use skytower_transports::identity::SecretKey;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn entry(key: &SecretKey, free: u32, sequence: u64) -> Entry {
    let mut e = Entry::new_server(key.public_key(), "192.0.2.1:8081", free);
    e.sequence = sequence;
    e.sign(key);
    e
}

/// Starts a server on its own one-worker runtime; returns its address and a stop handle.
fn start_server(
    store: StoreSpec,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let config = Config {
                addr: "127.0.0.1:0".parse().expect("addr"),
                store,
                store_config: StoreConfig {
                    max_entries: 1_000_000,
                    ..StoreConfig::default()
                },
                rate_per_second: u32::MAX,
                rate_burst: u32::MAX,
                max_in_flight: 100_000,
                ..Config::default()
            };
            let server = DiscoveryServer::bind(config).await.expect("bind");
            addr_tx
                .send(server.local_addr().expect("addr"))
                .expect("send addr");
            server
                .serve(async {
                    let _ = stop_rx.await;
                })
                .await
                .expect("serve");
        });
    });
    let addr = addr_rx.recv().expect("server address");
    (addr, stop_tx, thread)
}

fn client() -> HttpClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(c)
}

async fn request(client: &HttpClient, req: Request<Full<Bytes>>) -> bool {
    match client.request(req).await {
        Ok(res) => {
            let ok = res.status().is_success();
            ok & res.into_body().collect().await.is_ok()
        }
        Err(_) => false,
    }
}

fn post_req(base: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::post(format!("{base}/dmsg-discovery/entry"))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("request")
}

/// Runs `conns` workers for `secs`, each sending `make(worker, i)` in a loop.
async fn load<F>(name: &str, client: &HttpClient, conns: usize, secs: u64, make: F)
where
    F: Fn(usize, usize) -> Request<Full<Bytes>> + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conns {
        let (client, make, stop) = (client.clone(), make.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if request(&client, make(w, i)).await {
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                }
                i += 1;
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.expect("worker");
        all.extend(lat);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{name:<28} {:>9.0} req/s  p50 {:>8.3} ms  p99 {:>8.3} ms  ({} ok, {errors} errors, {conns} conns)",
        all.len() as f64 / elapsed,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        all.len(),
    );
}

fn bench(label: &str, store: StoreSpec, entries: usize, conns: usize, secs: u64) {
    let rss_before = rss_kib();
    let (addr, stop, server) = start_server(store);
    let base = format!("http://{addr}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("client runtime");
    rt.block_on(async {
        let client = client();
        // Fill: pre-signed entries, posted with bounded concurrency.
        let keys: Arc<Vec<SecretKey>> = Arc::new(
            (0..entries)
                .map(|_| SecretKey::generate().expect("key"))
                .collect(),
        );
        let t = Instant::now();
        let mut fill = Vec::new();
        for w in 0..conns {
            let (client, keys, base) = (client.clone(), keys.clone(), base.clone());
            fill.push(tokio::spawn(async move {
                for i in (w..keys.len()).step_by(conns) {
                    let body = serde_json::to_vec(&entry(&keys[i], (i % 2048) as u32 + 1, 1))
                        .expect("json");
                    assert!(request(&client, post_req(&base, body.into())).await, "fill");
                }
            }));
        }
        for f in fill {
            f.await.expect("fill");
        }
        println!(
            "[{label}] filled {entries} entries in {:.1} s; RSS +{} MiB (server and generator)",
            t.elapsed().as_secs_f64(),
            rss_kib().saturating_sub(rss_before) / 1024
        );

        let paths: Arc<Vec<String>> = Arc::new(
            keys.iter()
                .map(|k| format!("{base}/dmsg-discovery/entry/{}", k.public_key()))
                .collect(),
        );
        let n = paths.len();
        load(
            &format!("[{label}] GET entry"),
            &client,
            conns,
            secs,
            move |w, i| {
                Request::get(&paths[(w * 7919 + i * 104_729) % n])
                    .body(Full::default())
                    .expect("request")
            },
        )
        .await;

        // POST: pre-signed content changes (sequence 2, 3, ...) on a subset of keys, so the
        // generator does not spend the run signing.
        let per_worker = 2_000usize;
        let bodies: Arc<Vec<Vec<Bytes>>> = Arc::new(
            (0..conns)
                .map(|w| {
                    (0..per_worker)
                        .map(|i| {
                            let key = &keys[(w + conns * (i % 50)) % n];
                            let seq = 2 + (i / 50) as u64;
                            Bytes::from(
                                serde_json::to_vec(&entry(key, (seq % 2048) as u32 + 1, seq))
                                    .expect("json"),
                            )
                        })
                        .collect()
                })
                .collect(),
        );
        let base2 = base.clone();
        load(
            &format!("[{label}] POST entry (update)"),
            &client,
            conns,
            secs,
            move |w, i| {
                let b = &bodies[w];
                // Past the pre-signed updates, replays are refused (422): counted as errors.
                post_req(&base2, b[i.min(b.len() - 1)].clone())
            },
        )
        .await;
        let avail = format!("{base}/dmsg-discovery/available_servers");
        load(
            &format!("[{label}] GET available_servers"),
            &client,
            conns.min(8),
            secs.min(2),
            move |_, _| Request::get(&avail).body(Full::default()).expect("request"),
        )
        .await;
    });
    let _ = stop.send(());
    let _ = server.join();
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing: stay quick then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs = env("BENCH_SECS", if quick { 1 } else { 5 }) as u64;
    let conns = env("BENCH_CONNS", 32);
    let entries = env("BENCH_ENTRIES", if quick { 1_000 } else { 100_000 });
    bench("memory", StoreSpec::Memory, entries, conns, secs);

    let installed = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        println!("[redis] skipped: redis-server is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let mut redis: Child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let redis_entries = env("BENCH_REDIS_ENTRIES", if quick { 1_000 } else { 20_000 });
    bench(
        "redis",
        StoreSpec::Redis(RedisConfig::new(format!("redis://127.0.0.1:{port}"))),
        redis_entries,
        conns,
        secs,
    );
    let _ = redis.kill();
    let _ = redis.wait();
}
