//! dmsg-discovery API tests. The `shared` suite runs against both stores (`memory::*` and
//! `redis::*`; the Redis ones start a private `redis-server` and skip loudly when it is not
//! installed); the rest are store-specific.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::StatusCode;
use skytower_services::dmsg_discovery::{
    Config, DiscoveryServer, FakeRelativeClock, KeyedRateLimit, MAX_AVAILABLE_SERVERS, Mode,
    RunError,
};
use skytower_transports::dmsg::disc::{DeleteRequest, Discovery, DiscoveryError, Entry};
use skytower_transports::dmsg::disc_http::HttpDiscovery;
use skytower_transports::identity::{PublicKey, SecretKey};

/// Runs each listed suite function against the embedded store and against Redis.
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Memory).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Redis).await
                }
            )*
        }
    };
}

both_stores!(
    every_status_code_of_the_entry_api,
    malformed_and_oversized_bodies_get_4xx_with_a_message,
    cheap_refresh_answers_unchanged_without_rewriting,
    signed_delete_and_replays_are_refused,
    available_servers_most_free_first_capped_at_512,
    concurrent_updates_keep_the_highest_sequence,
    health_reports_the_store,
);

async fn every_status_code_of_the_entry_api(kind: Kind) {
    let cfg = Config {
        allow_loopback: false,
        ..config()
    };
    let Some(b) = Backend::new(kind, &cfg).await else {
        return;
    };
    let app = b.service(&cfg).router();
    let key = SecretKey::generate().unwrap();
    let pk = key.public_key();

    // GET: 400 malformed key, 404 unknown.
    let a = send(&app, get("/dmsg-discovery/entry/nothex")).await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "bad_key"));
    assert!(!a.json["error"]["message"].as_str().unwrap().is_empty());
    let a = send(&app, get(&format!("/dmsg-discovery/entry/{pk}"))).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "not_found"));

    // POST: 200 created, then GET returns it.
    let e = server_entry(&key, "192.0.2.7:8081", 10, 1);
    let a = send(&app, post(&e)).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(a.json["result"], "created");
    let a = send(&app, get(&format!("/dmsg-discovery/entry/{pk}"))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(serde_json::from_value::<Entry>(a.json).unwrap(), e);

    // The same POST again (a replay): 422, sequence not greater.
    let a = send(&app, post(&e)).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "stale_sequence")
    );
    // An older sequence: 422 as well.
    let a = send(&app, post(&server_entry(&key, "192.0.2.7:8081", 9, 0))).await;
    assert_eq!(a.code(), "stale_sequence");
    // A newer sequence with an older timestamp: 422.
    let mut older = Entry::new_server(pk, "192.0.2.7:8081", 3);
    older.sequence = 5;
    older.timestamp = e.timestamp - 1;
    older.sign(&key);
    let a = send(&app, post(&older)).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "stale_timestamp")
    );

    // 401: tampered, forged by another key, unsigned.
    let mut tampered = server_entry(&key, "192.0.2.7:8081", 10, 7);
    tampered.server.as_mut().unwrap().available_sessions = 11;
    let a = send(&app, post(&tampered)).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNAUTHORIZED, "bad_signature")
    );
    let mut forged = server_entry(&SecretKey::generate().unwrap(), "192.0.2.7:8081", 10, 8);
    forged.static_pk = pk;
    assert_eq!(
        send(&app, post(&forged)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let mut unsigned = Entry::new_server(pk, "192.0.2.7:8081", 1);
    unsigned.sequence = 9;
    assert_eq!(
        send(&app, post(&unsigned)).await.status,
        StatusCode::UNAUTHORIZED
    );

    // 422: timestamp outside the window (either side), malformed sections, loopback address.
    let window = cfg.timestamp_window.as_millis() as u64;
    for ts in [now_ms() - window - 5_000, now_ms() + window + 5_000] {
        let mut stale = Entry::new_server(pk, "192.0.2.7:8081", 1);
        stale.sequence = 100;
        stale.timestamp = ts;
        stale.sign(&key);
        let a = send(&app, post(&stale)).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "timestamp_window")
        );
    }
    let other = SecretKey::generate().unwrap();
    for addr in ["no-port", ":80", "host:99999"] {
        let a = send(&app, post(&server_entry(&other, addr, 1, 1))).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_entry"),
            "{addr}"
        );
    }
    let mut empty = client_entry(&other, vec![], 1);
    empty.client = None;
    empty.sign(&other);
    assert_eq!(send(&app, post(&empty)).await.code(), "invalid_entry");
    for addr in [
        "127.0.0.1:8081",
        "localhost:8081",
        "[::1]:8081",
        "0.0.0.0:8081",
    ] {
        let a = send(&app, post(&server_entry(&other, addr, 1, 1))).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "loopback_address"),
            "{addr}"
        );
    }

    // Unknown route and wrong method: JSON errors too.
    let a = send(&app, get("/dmsg-discovery/nope")).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "not_found"));
    let a = send(
        &app,
        http::Request::put("/dmsg-discovery/entry")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}

async fn malformed_and_oversized_bodies_get_4xx_with_a_message(kind: Kind) {
    let cfg = config();
    let Some(b) = Backend::new(kind, &cfg).await else {
        return;
    };
    let app = b.service(&cfg).router();
    let key = SecretKey::generate().unwrap();
    let good = serde_json::to_value(server_entry(&key, "192.0.2.1:1", 1, 1)).unwrap();

    let cases: Vec<(Vec<u8>, StatusCode, &str)> = vec![
        (
            b"{not json".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (b"".to_vec(), StatusCode::BAD_REQUEST, "malformed_json"),
        (
            b"[]".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "malformed_entry",
        ),
        (
            {
                let mut v = good.clone();
                v["surprise"] = 1.into();
                serde_json::to_vec(&v).unwrap()
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "malformed_entry",
        ),
        (
            {
                let mut v = good.clone();
                v["static"] = "abcd".into();
                serde_json::to_vec(&v).unwrap()
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "malformed_entry",
        ),
        (
            {
                let mut v = good.clone();
                v["server"]["available_sessions"] = (-1).into();
                serde_json::to_vec(&v).unwrap()
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "malformed_entry",
        ),
    ];
    for (body, status, code) in cases {
        let a = send(&app, post_raw(body.clone())).await;
        assert_eq!(
            (a.status, a.code()),
            (status, code),
            "{:?}",
            String::from_utf8_lossy(&body)
        );
        assert!(!a.json["error"]["message"].as_str().unwrap().is_empty());
    }

    // 413: with a Content-Length (refused by the layer) and streamed without one.
    let big = vec![b' '; cfg.max_body_bytes + 1];
    let a = send(&app, post_raw(big.clone())).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );
    let stream = futures_util::stream::iter(
        big.chunks(4096)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let a = send(&app, post_raw(axum::body::Body::from_stream(stream))).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );

    // DELETE bodies: malformed, and a key that is not the path's.
    let pk = key.public_key();
    let a = send(
        &app,
        http::Request::delete(format!("/dmsg-discovery/entry/{pk}"))
            .body(axum::body::Body::from("nope"))
            .unwrap(),
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, "malformed_json")
    );
    let other = SecretKey::generate().unwrap();
    let a = send(&app, delete(&pk, &DeleteRequest::new(&other))).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, "key_mismatch")
    );
}

async fn cheap_refresh_answers_unchanged_without_rewriting(kind: Kind) {
    let cfg = config();
    let Some(b) = Backend::new(kind, &cfg).await else {
        return;
    };
    let app = b.service(&cfg).router();
    let key = SecretKey::generate().unwrap();
    let pk = key.public_key();
    let first = server_entry(&key, "192.0.2.1:8081", 5, 1);
    assert_eq!(send(&app, post(&first)).await.json["result"], "created");

    let refresh = server_entry(&key, "192.0.2.1:8081", 5, 2);
    let a = send(&app, post(&refresh)).await;
    assert_eq!(
        (a.status, &a.json["result"]),
        (StatusCode::OK, &"unchanged".into())
    );
    // Not rewritten: the served entry is still the first one.
    let served = send(&app, get(&format!("/dmsg-discovery/entry/{pk}"))).await;
    assert_eq!(serde_json::from_value::<Entry>(served.json).unwrap(), first);
    // But the high-water mark moved: replaying the refresh (or the first) is refused.
    assert_eq!(send(&app, post(&refresh)).await.code(), "stale_sequence");
    assert_eq!(send(&app, post(&first)).await.code(), "stale_sequence");

    // A content change is a real update, re-indexed.
    let changed = server_entry(&key, "192.0.2.1:8081", 9, 3);
    assert_eq!(send(&app, post(&changed)).await.json["result"], "updated");
    let served = send(&app, get(&format!("/dmsg-discovery/entry/{pk}"))).await;
    assert_eq!(
        serde_json::from_value::<Entry>(served.json).unwrap(),
        changed
    );
    let list = send(&app, get("/dmsg-discovery/available_servers")).await;
    assert_eq!(list.json[0]["server"]["available_sessions"], 9);
}

async fn signed_delete_and_replays_are_refused(kind: Kind) {
    let cfg = config();
    let Some(b) = Backend::new(kind, &cfg).await else {
        return;
    };
    let app = b.service(&cfg).router();
    let key = SecretKey::generate().unwrap();
    let pk = key.public_key();
    let path = format!("/dmsg-discovery/entry/{pk}");

    // Unknown key: 404.
    let a = send(&app, delete(&pk, &DeleteRequest::new(&key))).await;
    assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "not_found"));

    let t0 = now_ms();
    let mut e = client_entry(&key, vec![SecretKey::generate().unwrap().public_key()], 1);
    e.timestamp = t0;
    e.sign(&key);
    assert_eq!(send(&app, post(&e)).await.status, StatusCode::OK);

    // Forged (signed by another key) and out-of-window deletes: refused, entry kept.
    let mut forged = DeleteRequest::new(&SecretKey::generate().unwrap());
    forged.static_pk = pk;
    let a = send(&app, delete(&pk, &forged)).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNAUTHORIZED, "bad_signature")
    );
    let window = cfg.timestamp_window.as_millis() as u64;
    let a = send(&app, delete(&pk, &delete_at(&key, t0 - window - 1_000))).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "timestamp_window")
    );
    // A delete not newer than the entry (e.g. made before it): refused.
    let a = send(&app, delete(&pk, &delete_at(&key, t0 - 1))).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "stale_delete")
    );
    assert_eq!(send(&app, get(&path)).await.status, StatusCode::OK);

    // A fresh delete works.
    let del = delete_at(&key, t0 + 10);
    let a = send(&app, delete(&pk, &del)).await;
    assert_eq!(
        (a.status, &a.json["result"]),
        (StatusCode::OK, &"deleted".into())
    );
    assert_eq!(send(&app, get(&path)).await.status, StatusCode::NOT_FOUND);

    // Replays: the delete again, and the deleted entry (which would resurrect it).
    let a = send(&app, delete(&pk, &del)).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "stale_delete")
    );
    let a = send(&app, post(&e)).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "deleted")
    );
    assert_eq!(send(&app, get(&path)).await.status, StatusCode::NOT_FOUND);
    let listed = send(&app, get("/dmsg-discovery/entries")).await;
    assert_eq!(listed.json, serde_json::json!([]));

    // The owner can register again with a newer entry, and the replayed delete still fails.
    let mut again = client_entry(&key, vec![], 2);
    again.timestamp = t0 + 20;
    again.sign(&key);
    assert_eq!(send(&app, post(&again)).await.json["result"], "created");
    let a = send(&app, delete(&pk, &del)).await;
    assert_eq!(a.code(), "stale_delete");
    assert_eq!(send(&app, get(&path)).await.status, StatusCode::OK);
}

async fn available_servers_most_free_first_capped_at_512(kind: Kind) {
    let cfg = config();
    let Some(b) = Backend::new(kind, &cfg).await else {
        return;
    };
    let app = b.service(&cfg).router();
    let a = send(&app, get("/dmsg-discovery/available_servers")).await;
    assert_eq!(
        (a.status, a.json.clone()),
        (StatusCode::OK, serde_json::json!([]))
    );

    // 600 servers with 0..=599 free sessions, and 3 clients.
    let n = 600u32;
    for free in 0..n {
        let key = SecretKey::generate().unwrap();
        let a = send(&app, post(&server_entry(&key, "192.0.2.1:8081", free, 1))).await;
        assert_eq!(a.status, StatusCode::OK);
    }
    let mut clients = Vec::new();
    for _ in 0..3 {
        let key = SecretKey::generate().unwrap();
        clients.push(key.public_key().to_string());
        send(&app, post(&client_entry(&key, vec![], 1))).await;
    }

    let a = send(&app, get("/dmsg-discovery/available_servers")).await;
    let list: Vec<Entry> = serde_json::from_value(a.json).unwrap();
    assert_eq!(list.len(), MAX_AVAILABLE_SERVERS);
    let frees: Vec<u32> = list
        .iter()
        .map(|e| e.server.as_ref().unwrap().available_sessions)
        .collect();
    assert_eq!(frees[0], n - 1);
    assert!(frees.windows(2).all(|w| w[0] >= w[1]), "most free first");
    assert!(frees.iter().all(|f| *f > 0));

    let all: Vec<Entry> =
        serde_json::from_value(send(&app, get("/dmsg-discovery/all_servers")).await.json).unwrap();
    assert_eq!(all.len(), n as usize, "all_servers includes full servers");
    let mut keys: Vec<String> =
        serde_json::from_value(send(&app, get("/dmsg-discovery/entries")).await.json).unwrap();
    keys.sort();
    clients.sort();
    assert_eq!(keys, clients, "entries lists the client keys");
}

async fn concurrent_updates_keep_the_highest_sequence(kind: Kind) {
    let cfg = config();
    let Some(b) = Backend::new(kind, &cfg).await else {
        return;
    };
    let app = b.service(&cfg).router();
    let keys: Vec<Arc<SecretKey>> = (0..100)
        .map(|_| Arc::new(SecretKey::generate().unwrap()))
        .collect();
    // Sign everything first, then fire 100 keys × 10 updates at once.
    let mut tasks = Vec::new();
    for key in &keys {
        for seq in 1..=10u64 {
            // Distinct content per update (free sessions = sequence), so none is a refresh.
            let e = server_entry(key, "192.0.2.1:8081", seq as u32, seq);
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                let a = send(&app, post(&e)).await;
                (e.static_pk, seq, a.status, a.code().to_owned())
            }));
        }
    }
    let mut accepted: HashMap<PublicKey, Vec<u64>> = HashMap::new();
    for t in tasks {
        let (pk, seq, status, code) = t.await.unwrap();
        match status {
            StatusCode::OK => accepted.entry(pk).or_default().push(seq),
            StatusCode::UNPROCESSABLE_ENTITY => assert_eq!(code, "stale_sequence"),
            other => panic!("unexpected {other} {code}"),
        }
    }
    for key in &keys {
        let pk = key.public_key();
        let max = *accepted[&pk].iter().max().unwrap();
        let a = send(&app, get(&format!("/dmsg-discovery/entry/{pk}"))).await;
        let stored: Entry = serde_json::from_value(a.json).unwrap();
        assert_eq!(stored.sequence, max, "no lost update for {pk}");
        assert_eq!(stored.server.unwrap().available_sessions as u64, max);
        // Accepted sequences were strictly increasing in acceptance order is not observable,
        // but the highest accepted must be the last word: a later replay of it is refused.
        let replay = server_entry(key, "192.0.2.1:8081", max as u32, max);
        assert_eq!(send(&app, post(&replay)).await.code(), "stale_sequence");
    }
    // The index holds each server once, with its final free count.
    let all: Vec<Entry> =
        serde_json::from_value(send(&app, get("/dmsg-discovery/all_servers")).await.json).unwrap();
    assert_eq!(all.len(), 100);
}

async fn health_reports_the_store(kind: Kind) {
    let cfg = config();
    let Some(b) = Backend::new(kind, &cfg).await else {
        return;
    };
    let app = b.service(&cfg).router();
    let key = SecretKey::generate().unwrap();
    send(&app, post(&server_entry(&key, "192.0.2.1:1", 1, 1))).await;
    let a = send(&app, get("/health")).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(a.json["service"], "dmsg-discovery");
    assert_eq!(a.json["checks"]["store"]["status"], "ok");
    assert_eq!(
        a.json["checks"]["store"]["details"]["kind"],
        if kind == Kind::Memory {
            "memory"
        } else {
            "redis"
        }
    );
    assert_eq!(a.json["checks"]["store"]["details"]["servers"], 1);
}

// ---- embedded store only ----

#[tokio::test(start_paused = true)]
async fn memory_ttl_expiry_with_paused_time() {
    let cfg = config();
    let b = Backend::new(Kind::Memory, &cfg).await.unwrap();
    let service = b.service(&cfg);
    let app = service.router();
    let server = SecretKey::generate().unwrap();
    let client = SecretKey::generate().unwrap();
    send(&app, post(&server_entry(&server, "192.0.2.1:1", 3, 1))).await;
    send(&app, post(&client_entry(&client, vec![], 1))).await;
    let server_path = format!("/dmsg-discovery/entry/{}", server.public_key());
    let client_path = format!("/dmsg-discovery/entry/{}", client.public_key());

    // Server entries live 2 min.
    tokio::time::advance(Duration::from_secs(119)).await;
    assert_eq!(send(&app, get(&server_path)).await.status, StatusCode::OK);
    // A refresh at 119 s renews the TTL without rewriting.
    let a = send(&app, post(&server_entry(&server, "192.0.2.1:1", 3, 2))).await;
    assert_eq!(a.json["result"], "unchanged");
    tokio::time::advance(Duration::from_secs(119)).await;
    assert_eq!(send(&app, get(&server_path)).await.status, StatusCode::OK);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        send(&app, get(&server_path)).await.status,
        StatusCode::NOT_FOUND
    );
    let a = send(&app, get("/dmsg-discovery/available_servers")).await;
    assert_eq!(
        a.json,
        serde_json::json!([]),
        "expired entries are never served"
    );

    // Client entries live 60 min.
    assert_eq!(send(&app, get(&client_path)).await.status, StatusCode::OK);
    tokio::time::advance(Duration::from_secs(3600 - 239)).await;
    assert_eq!(
        send(&app, get(&client_path)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&app, get("/dmsg-discovery/entries")).await.json,
        serde_json::json!([])
    );

    // The background task removes them (and ends on cancel).
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let service = service.clone();
        let stop = stop.clone();
        async move { service.maintain(stop).await }
    });
    let before = service.store().stats().await.unwrap();
    assert_eq!((before.servers, before.clients), (1, 1), "not purged yet");
    tokio::time::sleep(cfg.purge_interval + Duration::from_millis(1)).await;
    let after = service.store().stats().await.unwrap();
    assert_eq!(
        (after.servers, after.clients),
        (0, 0),
        "purged in the background"
    );
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn memory_store_is_bounded() {
    let cfg = Config {
        store_config: skytower_services::dmsg_discovery::StoreConfig {
            max_entries: 2,
            ..config().store_config
        },
        ..config()
    };
    let b = Backend::new(Kind::Memory, &cfg).await.unwrap();
    let app = b.service(&cfg).router();
    for _ in 0..2 {
        let k = SecretKey::generate().unwrap();
        assert_eq!(
            send(&app, post(&client_entry(&k, vec![], 1))).await.status,
            StatusCode::OK
        );
    }
    let k = SecretKey::generate().unwrap();
    let a = send(&app, post(&client_entry(&k, vec![], 1))).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "store_full")
    );
    assert!(a.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let cfg = config();
    let b = Backend::new(Kind::Memory, &cfg).await.unwrap();
    let clock = FakeRelativeClock::default();
    let service = b
        .service(&cfg)
        .with_rate_limit(KeyedRateLimit::with_clock(2, 3, clock.clone()));
    let app = service.router();
    let path = "/dmsg-discovery/available_servers";

    // Per peer: a burst of 3, then 429 with Retry-After and the JSON envelope.
    for _ in 0..3 {
        assert_eq!(
            send(&app, from("192.0.2.1:1000", get(path))).await.status,
            StatusCode::OK
        );
    }
    let a = send(&app, from("192.0.2.1:1001", get(path))).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(a.headers["retry-after"], "1");
    // Other peers are not affected; the peer recovers with time (governor's clock).
    assert_eq!(
        send(&app, from("192.0.2.2:1", get(path))).await.status,
        StatusCode::OK
    );
    clock.advance(Duration::from_millis(500));
    assert_eq!(
        send(&app, from("192.0.2.1:1", get(path))).await.status,
        StatusCode::OK
    );

    // Per owner key for writes, whatever the peer: the 4th write of one key in a burst is refused.
    let key = SecretKey::generate().unwrap();
    for (i, seq) in (1..=3).enumerate() {
        let peer = format!("198.51.100.{}:1", i + 1);
        let e = server_entry(&key, "192.0.2.9:1", seq as u32, seq);
        assert_eq!(
            send(&app, from(&peer, post(&e))).await.status,
            StatusCode::OK
        );
    }
    let e = server_entry(&key, "192.0.2.9:1", 4, 4);
    let a = send(&app, from("198.51.100.9:1", post(&e))).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );

    // /health is not rate-limited; idle state is pruned.
    assert_eq!(
        send(&app, from("192.0.2.1:1", get("/health"))).await.status,
        StatusCode::OK
    );
    clock.advance(Duration::from_secs(60));
    assert_eq!(service.rate_limit().prune(), 0);
}

// ---- a real server, over TCP, through the HTTP client ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_client_against_a_real_server_and_graceful_shutdown() {
    let server = DiscoveryServer::bind(config()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    let disc = HttpDiscovery::new(&format!("http://{addr}")).unwrap();

    let key = SecretKey::generate().unwrap();
    let pk = key.public_key();
    assert!(matches!(disc.entry(pk).await, Err(DiscoveryError::NotFound(k)) if k == pk));
    let e = server_entry(&key, "127.0.0.1:8081", 7, 1);
    disc.post_entry(e.clone()).await.unwrap();
    assert_eq!(disc.entry(pk).await.unwrap(), e);
    match disc.post_entry(e.clone()).await {
        Err(DiscoveryError::Rejected(m)) => assert!(m.starts_with("stale_sequence"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(disc.available_servers().await.unwrap(), vec![e]);
    disc.delete_entry(DeleteRequest::new(&key)).await.unwrap();
    assert!(matches!(
        disc.delete_entry(DeleteRequest::new(&key)).await,
        Err(DiscoveryError::NotFound(_) | DiscoveryError::Rejected(_))
    ));

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("shuts down within the grace period")
        .unwrap()
        .unwrap();
    assert!(matches!(
        disc.available_servers().await,
        Err(DiscoveryError::Unavailable(_))
    ));
}

#[tokio::test]
async fn dmsg_mode_and_keyless_dual_mode_are_refused_at_start_up() {
    let err = DiscoveryServer::bind(Config {
        mode: Mode::Dmsg,
        ..config()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, RunError::DmsgOnly));
    assert!(
        err.to_string()
            .contains("must stay reachable over plain HTTP")
    );
    // dual is served through the service mode, which needs a key (same message as every
    // service).
    let err = DiscoveryServer::bind(Config {
        mode: Mode::Dual,
        ..config()
    })
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("--mode dual needs a DMSG key"),
        "{err}"
    );
}
