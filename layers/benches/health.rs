//! Per-call cost of the Health layer on a pass-through request (not the health path):
//! `passthrough/bare` vs `passthrough/health` in the same run; the difference is the added cost.
//! `report/one_check` is the cost of answering `GET /health` with one check, for reference.
//!
//! Run: `cargo bench -p skytower-layers --bench health -- --warm-up-time 1 --measurement-time 3`

use std::convert::Infallible;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, Response, Uri};
use skytower_layers::check::CheckReport;
use skytower_layers::health::HealthLayer;
use tower::{Layer, Service, ServiceExt, service_fn};

fn request(uri: &'static str) -> Request<()> {
    let mut req = Request::new(());
    *req.uri_mut() = Uri::from_static(uri);
    req
}

/// One ready + call on an always-ready service whose future is immediately ready.
fn drive<S>(svc: &mut S, req: Request<()>) -> S::Response
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    match svc.ready().now_or_never() {
        Some(Ok(_)) => {}
        _ => panic!("service not ready"),
    }
    match svc.call(req).now_or_never() {
        Some(Ok(res)) => res,
        _ => panic!("call did not complete"),
    }
}

fn passthrough(c: &mut Criterion) {
    let inner = service_fn(|req: Request<()>| async move {
        black_box(req);
        Ok::<_, Infallible>(Response::new(String::new()))
    });
    let layer = HealthLayer::new("bench")
        .version("0.1.0")
        .check("db", CheckReport::ok);

    let mut group = c.benchmark_group("passthrough");
    let mut bare = inner;
    group.bench_function("bare", |b| {
        b.iter_batched(
            || request("/api/v1/sessions"),
            |req| black_box(drive(&mut bare, req)),
            BatchSize::SmallInput,
        )
    });
    let mut wrapped = layer.layer(inner);
    group.bench_function("health", |b| {
        b.iter_batched(
            || request("/api/v1/sessions"),
            |req| black_box(drive(&mut wrapped, req)),
            BatchSize::SmallInput,
        )
    });
    group.finish();

    // Answering /health needs a runtime with a timer (each check runs under a timeout).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => panic!("runtime: {err}"),
    };
    let mut group = c.benchmark_group("report");
    let mut svc = layer.layer(inner);
    group.bench_function("one_check", |b| {
        b.iter_batched(
            || request("/health"),
            |req| black_box(rt.block_on((&mut svc).oneshot(req))),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, passthrough);
criterion_main!(benches);
