//! The generic TTL store on Redis: the same suite as the embedded store, with real short TTLs,
//! namespaces kept apart, and an outage reported as `Unavailable`. Each test starts its own
//! `redis-server` (skipped loudly when it is not installed, failing in CI).

mod common;

use std::time::Duration;

use common::RedisServer;
use skytower_services::ttl_store::{self, RedisConfig, StoreSpec, TtlStoreError, suite};

async fn open(redis: &RedisServer, namespace: &str) -> std::sync::Arc<dyn ttl_store::TtlStore> {
    let spec = StoreSpec::Redis(RedisConfig::new(redis.url()));
    ttl_store::open(&spec, namespace, 0).await.unwrap()
}

#[tokio::test]
async fn crud_on_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store = open(&redis, "test:").await;
    assert_eq!(store.kind(), "redis");
    suite::crud(store.as_ref()).await;
}

#[tokio::test]
async fn real_ttl_expiry_on_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store = open(&redis, "test:").await;
    suite::expiry(
        store.as_ref(),
        Duration::from_millis(800),
        tokio::time::sleep,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_puts_on_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store = open(&redis, "test:").await;
    // Redis's own clock: a real wait for the 500 ms records to expire.
    suite::bounded(store.as_ref(), tokio::time::sleep).await;
}

#[tokio::test]
async fn sampling_on_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store = open(&redis, "test:").await;
    suite::sampling(store.as_ref(), tokio::time::sleep).await;
}

#[tokio::test]
async fn namespaces_do_not_see_each_other() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = open(&redis, "a:").await;
    let b = open(&redis, "b:").await;
    let ttl = Duration::from_secs(60);
    a.put("x", b"1".to_vec(), ttl, &["i".into()]).await.unwrap();
    assert_eq!(b.get("x").await.unwrap(), None);
    assert!(b.by_index("i").await.unwrap().is_empty());
    assert_eq!(b.len().await.unwrap(), 0);
    assert_eq!(a.len().await.unwrap(), 1);
}

#[tokio::test]
async fn an_outage_is_unavailable_not_a_hang() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let store = open(&redis, "test:").await;
    redis.stop();
    let started = std::time::Instant::now();
    let err = store.get("x").await.unwrap_err();
    assert!(matches!(err, TtlStoreError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn shared_nonces_are_marked_once_per_namespace() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let memory = ttl_store::open(&StoreSpec::Memory, "x:", 10).await.unwrap();
    assert!(
        memory.shared_nonces().is_none(),
        "the embedded store shares nothing"
    );
    let a = open(&redis, "a:").await.shared_nonces().unwrap();
    let a_again = open(&redis, "a:").await.shared_nonces().unwrap();
    let b = open(&redis, "b:").await.shared_nonces().unwrap();
    let pk = skytower_transports::identity::SecretKey::generate()
        .unwrap()
        .public_key();
    let ttl = Duration::from_secs(60);
    assert_eq!(a.mark_once(&pk, &[1; 16], ttl).await, Ok(true));
    // Another connection to the same namespace (another instance) sees it.
    assert_eq!(a_again.mark_once(&pk, &[1; 16], ttl).await, Ok(false));
    assert_eq!(a.mark_once(&pk, &[2; 16], ttl).await, Ok(true));
    // Another namespace (another service) does not.
    assert_eq!(b.mark_once(&pk, &[1; 16], ttl).await, Ok(true));
}
