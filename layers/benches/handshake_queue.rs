//! Per-call cost of the `HandshakeQueue` layer: a bare `service_fn` vs the same service behind
//! the layer (queue not full), plus the cost of a refusal when the queue is full.
//!
//! Every call completes on its first poll (`now_or_never`), so the figures are pure overhead:
//! added ns per call = `handshake_queue/wrapped` - `handshake_queue/bare`.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use skytower_layers::HandshakeQueueLayer;
use tower::{Layer, Service, ServiceExt, service_fn};

fn echo() -> impl Service<u64, Response = u64, Error = Infallible, Future: Send> + Clone {
    service_fn(|r: u64| async move { Ok::<_, Infallible>(r) })
}

/// One ready + call, polled to completion once; panics if it does not complete at once.
fn call_now<S>(svc: &mut S, req: u64) -> Result<u64, S::Error>
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let ready = svc.ready().now_or_never().expect("ready at once");
    ready?;
    svc.call(req)
        .now_or_never()
        .expect("completes on first poll")
}

fn bench(c: &mut Criterion) {
    // The layer starts a tokio timer in `call`: enter a runtime with the time driver.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();

    let mut bare = echo();
    let mut wrapped = HandshakeQueueLayer::new().layer(echo());
    // Queue full: one admitted (never polled) call holds the only place.
    let mut full = HandshakeQueueLayer::new()
        .max_in_flight(1)
        .max_queued(0)
        .layer(echo());
    let _held = full.call(0);

    let mut group = c.benchmark_group("handshake_queue");
    group.bench_function("bare", |b| {
        b.iter(|| call_now(&mut bare, black_box(7)).expect("ok"))
    });
    group.bench_function("wrapped", |b| {
        b.iter(|| call_now(&mut wrapped, black_box(7)).expect("ok"))
    });
    group.bench_function("refused_when_full", |b| {
        b.iter(|| call_now(&mut full, black_box(7)).expect_err("refused"))
    });
    group.finish();

    // A quick same-run summary, so the added cost can be read off directly.
    const N: u32 = 200_000;
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..N {
            f();
        }
        start.elapsed() / N
    };
    let bare_ns = time(&mut || {
        black_box(call_now(&mut bare, black_box(7)).expect("ok"));
    });
    let wrapped_ns = time(&mut || {
        black_box(call_now(&mut wrapped, black_box(7)).expect("ok"));
    });
    println!(
        "handshake_queue summary ({N} calls each): bare {bare_ns:?}/call, wrapped {wrapped_ns:?}/call, added {:?}/call",
        wrapped_ns.saturating_sub(bare_ns)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
