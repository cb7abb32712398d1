//! DMSG relay benchmark (issue 3): A, S and B on loopback in one process.
//!
//! The relay server S runs on its own OS thread with its own current-thread tokio runtime, so
//! its CPU time (`CLOCK_THREAD_CPUTIME_ID`, read on that thread) and its heap (a counting global
//! allocator that attributes bytes to the thread that allocates them) are measured in isolation.
//! The clients A and B share one tokio runtime (`SKYTOWER_BENCH_CLIENT_THREADS` workers,
//! default 1). Every ratio is against raw loopback TCP measured in the same run.
//!
//! ```text
//! cargo bench -p skytower-transports --bench relay                          # full: 1 GiB, 1000 opens
//! SKYTOWER_BENCH_QUICK=1 cargo bench -p skytower-transports --bench relay   # quick: 64 MiB, 100 opens
//! ```
//!
//! Environment: `SKYTOWER_BENCH_QUICK=1` (quick mode), `SKYTOWER_BENCH_REPS` (repetitions of the
//! throughput runs; default 3, quick 1), `SKYTOWER_BENCH_MIB` (bytes per throughput run),
//! `SKYTOWER_BENCH_CLIENT_THREADS` (client runtime workers; default 1),
//! `SKYTOWER_BENCH_ONLY=throughput|opens|memory` (one phase, e.g. under `perf record`), and
//! `SKYTOWER_BENCH_MALLOC=default` (glibc's allocator defaults instead of the tuning the
//! `skytower` binary applies, `skytower_transports::malloc::tune`).

#[path = "common/mod.rs"]
mod common;
#[path = "common/dmsg.rs"]
mod dmsg;
use common::{BenchEnv, percentile, print_report_and_total, process_cpu, row};
use dmsg::{ServerThread, wait_for};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skytower_transports::dmsg::server::ServerConfig;
use skytower_transports::dmsg::session::{ClientSession, Endpoint, SessionConfig};
use skytower_transports::dmsg::stream::DmsgStream;
use skytower_transports::dmsg::wire::Addr;
use skytower_transports::identity::SecretKey;
use skytower_transports::testing::alloc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Read and write size everywhere (TCP baseline and relayed streams).
const CHUNK: usize = 64 * 1024;
const GIB: f64 = (1u64 << 30) as f64;

// ---------------------------------------------------------------------------------------------
// Heap accounting: bytes allocated minus bytes freed on the server thread.

#[global_allocator]
static ALLOC: alloc::ThreadCountingAlloc = alloc::ThreadCountingAlloc;

// ---------------------------------------------------------------------------------------------
// Helpers.

struct Settings {
    env: BenchEnv,
    bytes: u64,
    reps: usize,
    opens: usize,
    parallel: usize,
    idle_levels: [usize; 3],
}

impl Settings {
    fn from_env() -> Settings {
        let env = BenchEnv::from_env();
        Settings {
            bytes: (env.num("SKYTOWER_BENCH_MIB", 64, 1024).max(1) as u64) << 20,
            reps: env.num("SKYTOWER_BENCH_REPS", 1, 3).max(1),
            opens: if env.quick { 100 } else { 1000 },
            parallel: 16,
            idle_levels: [0, 100, 1000],
            env,
        }
    }
}

/// Median, min and max of `v`.
fn summary(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let med = if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    (med, s[0], s[s.len() - 1])
}

fn pattern() -> Vec<u8> {
    (0..CHUNK).map(|i| (i * 31 + i / 253) as u8).collect()
}

async fn write_n<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, mut n: u64) {
    let buf = pattern();
    while n > 0 {
        let k = (n as usize).min(CHUNK);
        w.write_all(&buf[..k]).await.unwrap();
        n -= k as u64;
    }
    w.shutdown().await.unwrap();
}

async fn read_all<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> u64 {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            return total;
        }
        total += n as u64;
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements.

/// Raw loopback TCP, one connection, blocking I/O on two OS threads, `CHUNK`-sized writes and
/// reads, TCP_NODELAY: the best loopback TCP this machine does.
fn tcp_baseline(bytes: u64) -> f64 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                return (total, Instant::now());
            }
            total += n as u64;
        }
    });
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let buf = pattern();
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let k = (left as usize).min(CHUNK);
        s.write_all(&buf[..k]).unwrap();
        left -= k as u64;
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let (total, end) = reader.join().unwrap();
    assert_eq!(total, bytes);
    bytes as f64 / (end - start).as_secs_f64()
}

struct Ctx {
    server: ServerThread,
    b: Endpoint,
    sa: Arc<ClientSession>,
    _sb: ClientSession,
}

struct Throughput {
    mb_s: f64,
    server_cpu_per_gib: f64,
    process_cpu_per_gib: f64,
    server_allocs_per_mib: f64,
}

/// `streams` relayed streams A → S → B opened first, then `bytes` in total split evenly across
/// them, all at once; the clock runs from the first write to the last EOF at B.
async fn relay_throughput(ctx: &Ctx, port: u16, streams: usize, bytes: u64) -> Throughput {
    let mut listener = ctx.b.listen(port).unwrap();
    let dst = Addr::new(ctx.b.public_key(), port);
    let mut outs = Vec::with_capacity(streams);
    let mut ins = Vec::with_capacity(streams);
    for _ in 0..streams {
        outs.push(ctx.sa.dial(dst).await.unwrap());
        ins.push(listener.accept().await.unwrap());
    }
    let per = bytes / streams as u64;
    let before = ctx.server.probe(false).await;
    let cpu0 = process_cpu();
    let start = Instant::now();
    let readers: Vec<_> = ins
        .into_iter()
        .map(|mut s| tokio::spawn(async move { read_all(&mut s).await }))
        .collect();
    let writers: Vec<_> = outs
        .into_iter()
        .map(|mut s| tokio::spawn(async move { write_n(&mut s, per).await }))
        .collect();
    let mut total = 0;
    for r in readers {
        total += r.await.unwrap();
    }
    let elapsed = start.elapsed();
    let cpu1 = process_cpu();
    let after = ctx.server.probe(false).await;
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(total, per * streams as u64);
    let gib = total as f64 / GIB;
    Throughput {
        mb_s: total as f64 / elapsed.as_secs_f64(),
        server_cpu_per_gib: (after.cpu - before.cpu).as_secs_f64() / gib,
        process_cpu_per_gib: (cpu1 - cpu0).as_secs_f64() / gib,
        server_allocs_per_mib: (after.allocs - before.allocs) as f64 / (gib * 1024.0),
    }
}

/// Sequential dials over the existing sessions; each sample is the whole `dial` (request
/// through S to B and the signed answer back). B's listener accepts at once.
async fn open_latency(ctx: &Ctx, port: u16, samples: usize) -> Vec<Duration> {
    let mut listener = ctx.b.listen(port).unwrap();
    let acceptor = tokio::spawn(async move {
        while let Some(mut s) = listener.accept().await {
            // Hold the stream until the dialer drops it.
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf).await;
            });
        }
    });
    let dst = Addr::new(ctx.b.public_key(), port);
    for _ in 0..samples.min(50) {
        drop(ctx.sa.dial(dst).await.unwrap()); // warm-up
    }
    let mut lat = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        let s = ctx.sa.dial(dst).await.unwrap();
        lat.push(t.elapsed());
        drop(s);
    }
    acceptor.abort();
    lat.sort();
    lat
}

struct IdleLevel {
    streams: usize,
    heap: i64,
    heap_large: i64,
}

/// Opens idle relayed streams up to each level (no payload), measuring the server heap at each;
/// then closes them all and measures again.
async fn idle_memory(ctx: &Ctx, port: u16, levels: &[usize]) -> (Vec<IdleLevel>, i64) {
    let mut listener = ctx.b.listen(port).unwrap();
    let (held_tx, mut held_rx) = mpsc::unbounded_channel::<DmsgStream>();
    let acceptor = tokio::spawn(async move {
        while let Some(s) = listener.accept().await {
            if held_tx.send(s).is_err() {
                break;
            }
        }
    });
    let dst = Addr::new(ctx.b.public_key(), port);
    // Streams of the earlier phases are torn down asynchronously: start from none.
    let stats = ctx.server.stats.clone();
    wait_for("earlier bridges closed", || stats.bridges() == 0).await;
    let base_bridges = 0;
    let mut outs = Vec::new();
    let mut ins = Vec::new();
    let mut result = Vec::new();
    for &level in levels {
        while outs.len() < level {
            outs.push(ctx.sa.dial(dst).await.unwrap());
        }
        while ins.len() < level {
            ins.push(held_rx.recv().await.unwrap());
        }
        let stats = ctx.server.stats.clone();
        wait_for("bridges up", || stats.bridges() == base_bridges + level).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let p = ctx.server.probe(false).await;
        result.push(IdleLevel {
            streams: level,
            heap: p.heap,
            heap_large: p.heap_large,
        });
    }
    drop(outs);
    drop(ins);
    let stats = ctx.server.stats.clone();
    wait_for("bridges down", || stats.bridges() == base_bridges).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = ctx.server.probe(false).await.heap;
    acceptor.abort();
    (result, after)
}

// ---------------------------------------------------------------------------------------------
// Report.

fn mb(v: f64) -> String {
    format!("{:.0} MB/s", v / 1e6)
}

fn range_mb(v: &[f64]) -> String {
    let (m, lo, hi) = summary(v);
    if v.len() > 1 {
        format!("{} ({:.0}–{:.0})", mb(m), lo / 1e6, hi / 1e6)
    } else {
        mb(m)
    }
}

fn range_f(v: &[f64], unit: &str) -> String {
    let (m, lo, hi) = summary(v);
    if v.len() > 1 {
        format!("{m:.2} {unit} ({lo:.2}–{hi:.2})")
    } else {
        format!("{m:.2} {unit}")
    }
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

async fn run(set: Settings, malloc: &'static str) {
    let total_start = Instant::now();
    let size = if set.bytes >= 1 << 30 {
        format!("{} GiB", set.bytes >> 30)
    } else {
        format!("{} MiB", set.bytes >> 20)
    };
    println!(
        "DMSG relay benchmark ({} mode): {size} per throughput run, {} rep(s) (median (min–max)), \
         {} opens; server on its own thread (current-thread runtime), clients A+B on a {}-worker \
         runtime; {} CPUs; curve arithmetic {}; allocator {malloc}; MB = 10^6 B, KB = 10^3 B",
        set.env.mode(),
        set.reps,
        set.opens,
        set.env.client_threads,
        common::cpus(),
        skytower_transports::dmsg::dh::curve_backend(),
    );

    // Sessions: A and B to S, registered before any dial.
    let server = ServerThread::start(ServerConfig::default(), None);
    let a = Endpoint::new(SecretKey::generate().unwrap(), SessionConfig::default());
    let b_config = SessionConfig {
        listener_backlog: 1024,
        ..SessionConfig::default()
    };
    let b = Endpoint::new(SecretKey::generate().unwrap(), b_config);
    let sa = a.connect(server.addr, server.pk).await.unwrap();
    let sb = b.connect(server.addr, server.pk).await.unwrap();
    let stats = server.stats.clone();
    wait_for("server registered both sessions", || stats.sessions() == 2).await;
    let ctx = Ctx {
        server,
        b,
        sa: Arc::new(sa),
        _sb: sb,
    };
    let mut rows = Vec::new();

    if set.env.runs("throughput") {
        // Raw loopback TCP, then one relayed stream, then parallel streams; a short warm-up first.
        let tcp: Vec<f64> = (0..set.reps).map(|_| tcp_baseline(set.bytes)).collect();
        let (tcp_med, _, _) = summary(&tcp);
        relay_throughput(&ctx, 99, 1, set.bytes.min(32 << 20)).await;
        let mut one = Vec::new();
        for i in 0..set.reps {
            one.push(relay_throughput(&ctx, 100 + i as u16, 1, set.bytes).await);
        }
        let mut par = Vec::new();
        for i in 0..set.reps {
            par.push(relay_throughput(&ctx, 200 + i as u16, set.parallel, set.bytes).await);
        }
        let pick =
            |v: &[Throughput], f: fn(&Throughput) -> f64| v.iter().map(f).collect::<Vec<_>>();
        let one_mb = pick(&one, |t| t.mb_s);
        let par_mb = pick(&par, |t| t.mb_s);
        let (one_med, _, _) = summary(&one_mb);
        let (par_med, _, _) = summary(&par_mb);
        let one_cpu = pick(&one, |t| t.server_cpu_per_gib);
        let par_cpu = pick(&par, |t| t.server_cpu_per_gib);
        let pct = |v: f64| format!("{:.1} %", 100.0 * v / tcp_med);
        rows.extend([
            row(format!("loopback TCP, 1 conn, {size}"), range_mb(&tcp)).vs("100 %"),
            row(format!("relay, 1 stream (e2e), {size}"), range_mb(&one_mb))
                .vs(pct(one_med))
                .go("100 MB/s (4 %)")
                .target(
                    ">= 500 MB/s and >= 15 %",
                    one_med >= 500e6 && one_med >= 0.15 * tcp_med,
                ),
            row(
                format!("relay, {} streams, {size} total", set.parallel),
                range_mb(&par_mb),
            )
            .vs(pct(par_med)),
            row(
                "server CPU per GiB, 1 stream",
                range_f(&one_cpu, "CPU-s/GiB"),
            )
            .go("~5 CPU-s/GiB")
            .target("<= 1.5 CPU-s/GiB", summary(&one_cpu).0 <= 1.5),
            row(
                format!("server CPU per GiB, {} streams", set.parallel),
                range_f(&par_cpu, "CPU-s/GiB"),
            )
            .go("~5 CPU-s/GiB")
            .target("<= 1.5 CPU-s/GiB", summary(&par_cpu).0 <= 1.5),
            row(
                "process CPU per GiB (A+S+B), 1 stream",
                range_f(&pick(&one, |t| t.process_cpu_per_gib), "CPU-s/GiB"),
            ),
            row(
                "server allocations per MiB, 1 stream",
                format!("{:.1}", summary(&pick(&one, |t| t.server_allocs_per_mib)).0),
            ),
        ]);
    }

    if set.env.runs("opens") {
        let lat = open_latency(&ctx, 300, set.opens).await;
        let p50 = percentile(&lat, 0.50);
        let p99 = percentile(&lat, 0.99);
        rows.extend([
            row(format!("stream open p50 ({} opens)", lat.len()), us(p50))
                .go("~12 ms")
                .target("<= 500 µs", p50 <= Duration::from_micros(500)),
            row(format!("stream open p99 ({} opens)", lat.len()), us(p99))
                .go("~16 ms")
                .target("<= 1500 µs", p99 <= Duration::from_micros(1500)),
            row(
                format!("stream open max ({} opens)", lat.len()),
                us(lat[lat.len() - 1]),
            ),
        ]);
    }

    if set.env.runs("memory") {
        let (idle, after_close) = idle_memory(&ctx, 400, &set.idle_levels).await;
        let base = idle[0].heap;
        let base_large = idle[0].heap_large;
        let kb = |total: i64, large: i64| {
            format!(
                "{:.1} KB ({:.1} KB in allocations >= {} KiB)",
                total as f64 / 1e3,
                large as f64 / 1e3,
                alloc::LARGE / 1024
            )
        };
        for l in &idle {
            rows.push(row(
                format!("server heap, {} idle relayed streams", l.streams),
                kb(l.heap, l.heap_large),
            ));
        }
        for l in idle.iter().filter(|l| l.streams > 0) {
            let n = l.streams as i64;
            let per = (l.heap - base) / n;
            rows.push(
                row(
                    format!("server heap per idle stream, {}", l.streams),
                    kb(per, (l.heap_large - base_large) / n),
                )
                .go("~64 KB")
                .target("<= 8 KB", per <= 8000),
            );
        }
        rows.push(row(
            "server heap after closing them (vs 0 streams)",
            format!("{:+.1} KB", (after_close - base) as f64 / 1e3),
        ));
    }

    let Ctx {
        server, sa, _sb, ..
    } = ctx;
    drop(sa);
    drop(_sb);
    server.shutdown().await;

    print_report_and_total(&rows, Some("vs TCP"), total_start);
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    // The allocator tuning the `skytower` binary applies (`malloc::tune`), unless
    // `SKYTOWER_BENCH_MALLOC=default` asks for glibc's defaults.
    let malloc = if std::env::var("SKYTOWER_BENCH_MALLOC").is_ok_and(|v| v == "default") {
        "glibc defaults"
    } else if skytower_transports::malloc::tune() {
        "tuned (malloc::tune)"
    } else {
        "defaults (malloc::tune unavailable)"
    };
    let set = Settings::from_env();
    common::run_on_clients(set.env.client_threads, run(set, malloc));
}
