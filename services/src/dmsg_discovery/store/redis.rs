//! [`RedisStore`]: entries in Redis with native TTLs, shared by several discovery instances.
//!
//! Layout (prefix `P`, default `dmsgd:`; `<pk>` is the key's hex):
//!
//! | key | type | content | TTL |
//! |---|---|---|---|
//! | `P<pk>:e` | string | the entry as served (JSON) | entry TTL (`SET … PX`) |
//! | `P<pk>:m` | string | high-water mark `seq(20 digits):ts(20 digits):fingerprint` | same |
//! | `P<pk>:t` | string | tombstone: the delete's timestamp (20 digits) | tombstone TTL |
//! | `Pservers` | sorted set | server keys scored by free sessions | — |
//! | `Pclients` | set | client keys | — |
//!
//! Writes and deletes are Lua scripts, so the compare-and-set and the index updates are one
//! atomic step however many instances share the Redis. Numbers are compared as zero-padded
//! 20-digit strings (Lua numbers are doubles and would round large `u64`s). A cheap refresh
//! rewrites only the `:m` key and renews the `:e` key's TTL; it never touches the indexes.
//! Index members whose entry expired are skipped when listing and removed by
//! [`Store::purge_expired`] (a script, so a concurrent re-registration is never unindexed).
//!
//! The connection is a [`ConnectionManager`]: it reconnects by itself after a Redis restart;
//! while Redis is down every operation fails fast with [`StoreError::Unavailable`] (the API
//! answers 503).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use sha2::{Digest, Sha256};
use skytower_transports::dmsg::disc::Entry;
use skytower_transports::identity::PublicKey;

use super::{EntryJson, PutOutcome, Store, StoreConfig, StoreError, StoreFuture, StoreStats};

const PUT_SCRIPT: &str = r#"
-- KEYS: e, m, t, servers, clients
-- ARGV: pk, json, seq20, ts20, fingerprint, ttl_ms, server_score ("" if none), is_client ("1"/"")
local tomb = redis.call('GET', KEYS[3])
if tomb and ARGV[4] <= tomb then return {'deleted', tomb} end
local meta = redis.call('GET', KEYS[2])
local existed = false
if meta and redis.call('EXISTS', KEYS[1]) == 1 then
  existed = true
  local seq = string.sub(meta, 1, 20)
  local ts = string.sub(meta, 22, 41)
  local fp = string.sub(meta, 43)
  if ARGV[3] <= seq then return {'stale_seq', seq} end
  if ARGV[4] < ts then return {'old_ts', ts} end
  if ARGV[5] == fp then
    redis.call('SET', KEYS[2], ARGV[3] .. ':' .. ARGV[4] .. ':' .. fp, 'PX', ARGV[6])
    redis.call('PEXPIRE', KEYS[1], ARGV[6])
    return {'unchanged'}
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[6])
redis.call('SET', KEYS[2], ARGV[3] .. ':' .. ARGV[4] .. ':' .. ARGV[5], 'PX', ARGV[6])
if ARGV[7] ~= '' then redis.call('ZADD', KEYS[4], ARGV[7], ARGV[1]) else redis.call('ZREM', KEYS[4], ARGV[1]) end
if ARGV[8] ~= '' then redis.call('SADD', KEYS[5], ARGV[1]) else redis.call('SREM', KEYS[5], ARGV[1]) end
if tomb then redis.call('DEL', KEYS[3]) end
if existed then return {'updated'} end
return {'created'}
"#;

const DELETE_SCRIPT: &str = r#"
-- KEYS: e, m, t, servers, clients
-- ARGV: pk, ts20, tombstone_ttl_ms
local meta = redis.call('GET', KEYS[2])
if not meta or redis.call('EXISTS', KEYS[1]) == 0 then
  local tomb = redis.call('GET', KEYS[3])
  if tomb and ARGV[2] <= tomb then return {'stale', tomb} end
  return {'missing'}
end
local ts = string.sub(meta, 22, 41)
if ARGV[2] <= ts then return {'stale', ts} end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
return {'deleted'}
"#;

const PRUNE_SCRIPT: &str = r#"
-- KEYS: servers, clients; ARGV: prefix, members...
-- Removes members whose entry key no longer exists (checked and removed atomically).
local removed = 0
for i = 2, #ARGV do
  if redis.call('EXISTS', ARGV[1] .. ARGV[i] .. ':e') == 0 then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i]) + redis.call('SREM', KEYS[2], ARGV[i])
  end
end
return removed
"#;

/// Index members examined per purge step.
const PRUNE_CHUNK: usize = 1000;

/// Connection settings of the [`RedisStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Prepended to every key (default `dmsgd:`), so several deployments can share a Redis.
    pub prefix: String,
    /// Per-command timeout (default 2 s).
    pub response_timeout: Duration,
    /// Per-connection-attempt timeout (default 2 s).
    pub connection_timeout: Duration,
}

impl RedisConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            prefix: "dmsgd:".into(),
            response_timeout: Duration::from_secs(2),
            connection_timeout: Duration::from_secs(2),
        }
    }

    /// A reconnecting connection with these timeouts (2 retries, backoff capped at 1 s): what
    /// every Redis-backed store of this crate uses. Fails if Redis cannot be reached now (the
    /// message says whether the URL is bad); later outages are survived by reconnecting.
    pub async fn connect(&self) -> Result<ConnectionManager, String> {
        let client =
            redis::Client::open(self.url.as_str()).map_err(|e| format!("bad redis url: {e}"))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(self.response_timeout))
            .set_connection_timeout(Some(self.connection_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        ConnectionManager::new_with_config(client, manager_config)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The Redis store (the key layout is in `docs/api/dmsg-discovery.md` and this module's source docs).
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    config: StoreConfig,
    prefix: String,
    put: Script,
    delete: Script,
    prune: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn pad(n: u64) -> String {
    format!("{n:020}")
}

fn unpad(s: &str) -> Result<u64, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("not a padded number: {s:?}")))
}

/// A digest of what [`Entry::same_content`] compares (key and sections).
fn fingerprint(e: &Entry) -> Result<String, StoreError> {
    let content = serde_json::to_vec(&(&e.static_pk, &e.client, &e.server))
        .map_err(|err| StoreError::Corrupt(err.to_string()))?;
    let digest = Sha256::digest(&content);
    Ok(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
}

fn parse_entry(json: &str) -> Result<Entry, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("stored entry: {e}")))
}

impl RedisStore {
    /// Connects (failing if Redis cannot be reached now; later outages are survived).
    pub async fn connect(redis: RedisConfig, config: StoreConfig) -> Result<Self, StoreError> {
        let conn = redis.connect().await.map_err(StoreError::Unavailable)?;
        Ok(RedisStore {
            conn,
            config,
            prefix: redis.prefix,
            put: Script::new(PUT_SCRIPT),
            delete: Script::new(DELETE_SCRIPT),
            prune: Script::new(PRUNE_SCRIPT),
        })
    }

    fn key(&self, pk: &PublicKey, suffix: &str) -> String {
        format!("{}{pk}:{suffix}", self.prefix)
    }

    fn servers_key(&self) -> String {
        format!("{}servers", self.prefix)
    }

    fn clients_key(&self) -> String {
        format!("{}clients", self.prefix)
    }

    /// The stored JSON of the live entries of `pks` (expired ones skipped).
    async fn entries_of(&self, pks: &[String]) -> Result<Vec<String>, StoreError> {
        if pks.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = pks
            .iter()
            .map(|pk| format!("{}{pk}:e", self.prefix))
            .collect();
        let mut conn = self.conn.clone();
        let values: Vec<Option<String>> = conn.mget(&keys).await.map_err(unavailable)?;
        Ok(values.into_iter().flatten().collect())
    }

    /// Live server entries with at least `min_free` free sessions, parsed.
    async fn servers(&self, limit: usize, min_free: &str) -> Result<Vec<Entry>, StoreError> {
        self.servers_stored(limit, min_free)
            .await?
            .iter()
            .map(|json| parse_entry(json))
            .collect()
    }

    /// The same list as [`servers`](Self::servers), as stored: each text is checked to be JSON
    /// (cheap) but not parsed into an [`Entry`], whose public-key validation would cost ~30 µs
    /// per entry (512 entries: 15 ms of CPU per `available_servers` request).
    async fn servers_json(
        &self,
        limit: usize,
        min_free: &str,
    ) -> Result<Vec<EntryJson>, StoreError> {
        self.servers_stored(limit, min_free)
            .await?
            .into_iter()
            .map(|json| {
                serde_json::value::RawValue::from_string(json)
                    .map_err(|e| StoreError::Corrupt(format!("stored entry: {e}")))
            })
            .collect()
    }

    async fn servers_stored(
        &self,
        limit: usize,
        min_free: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let page = limit.clamp(1, 1024);
        let mut offset = 0;
        // Bounded: at most 8 pages, so a set full of expired members cannot make this unbounded.
        for _ in 0..8 {
            let mut conn = self.conn.clone();
            let pks: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(self.servers_key())
                .arg("+inf")
                .arg(min_free)
                .arg("LIMIT")
                .arg(offset)
                .arg(page)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let n = pks.len();
            out.extend(self.entries_of(&pks).await?);
            if out.len() >= limit || n < page {
                break;
            }
            offset += page;
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn put_async(&self, entry: Entry) -> Result<PutOutcome, StoreError> {
        let pk = entry.static_pk;
        let json = serde_json::to_string(&entry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let ttl_ms = self.config.ttl_of(&entry).as_millis().max(1) as u64;
        let score = entry
            .server
            .as_ref()
            .map(|s| s.available_sessions.to_string())
            .unwrap_or_default();
        let is_client = if entry.client.is_some() { "1" } else { "" };
        let mut conn = self.conn.clone();
        let reply: Vec<String> = self
            .put
            .key(self.key(&pk, "e"))
            .key(self.key(&pk, "m"))
            .key(self.key(&pk, "t"))
            .key(self.servers_key())
            .key(self.clients_key())
            .arg(pk.to_string())
            .arg(json)
            .arg(pad(entry.sequence))
            .arg(pad(entry.timestamp))
            .arg(fingerprint(&entry)?)
            .arg(ttl_ms)
            .arg(score)
            .arg(is_client)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match reply.as_slice() {
            [r] if r == "created" => Ok(PutOutcome::Created),
            [r] if r == "updated" => Ok(PutOutcome::Updated),
            [r] if r == "unchanged" => Ok(PutOutcome::Unchanged),
            [r, n] if r == "deleted" => Err(StoreError::Deleted {
                deleted_at: unpad(n)?,
            }),
            [r, n] if r == "stale_seq" => Err(StoreError::StaleSequence {
                got: entry.sequence,
                stored: unpad(n)?,
            }),
            [r, n] if r == "old_ts" => Err(StoreError::OlderTimestamp {
                got: entry.timestamp,
                stored: unpad(n)?,
            }),
            other => Err(StoreError::Corrupt(format!("put script replied {other:?}"))),
        }
    }

    async fn delete_async(&self, pk: PublicKey, timestamp: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let reply: Vec<String> = self
            .delete
            .key(self.key(&pk, "e"))
            .key(self.key(&pk, "m"))
            .key(self.key(&pk, "t"))
            .key(self.servers_key())
            .key(self.clients_key())
            .arg(pk.to_string())
            .arg(pad(timestamp))
            .arg(self.config.tombstone_ttl.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match reply.as_slice() {
            [r] if r == "deleted" => Ok(()),
            [r] if r == "missing" => Err(StoreError::NotFound(pk)),
            [r, n] if r == "stale" => Err(StoreError::StaleDelete {
                got: timestamp,
                stored: unpad(n)?,
            }),
            other => Err(StoreError::Corrupt(format!(
                "delete script replied {other:?}"
            ))),
        }
    }

    async fn purge_async(&self) -> Result<usize, StoreError> {
        let mut removed = 0usize;
        let mut members: Vec<String> = Vec::new();
        let mut conn = self.conn.clone();
        let servers: Vec<String> = conn
            .zrange(self.servers_key(), 0, -1)
            .await
            .map_err(unavailable)?;
        members.extend(servers);
        let clients: Vec<String> = conn
            .smembers(self.clients_key())
            .await
            .map_err(unavailable)?;
        members.extend(clients);
        members.sort_unstable();
        members.dedup();
        for chunk in members.chunks(PRUNE_CHUNK) {
            let mut inv = self.prune.key(self.servers_key());
            inv.key(self.clients_key()).arg(&self.prefix);
            for m in chunk {
                inv.arg(m);
            }
            let n: usize = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
            removed += n;
        }
        Ok(removed)
    }

    async fn client_keys_async(&self, limit: usize) -> Result<Vec<PublicKey>, StoreError> {
        let mut conn = self.conn.clone();
        let members: Vec<String> = conn
            .smembers(self.clients_key())
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for chunk in members.chunks(PRUNE_CHUNK) {
            let keys: Vec<String> = chunk
                .iter()
                .map(|m| format!("{}{m}:m", self.prefix))
                .collect();
            let live: Vec<Option<String>> = conn.mget(&keys).await.map_err(unavailable)?;
            for (m, l) in chunk.iter().zip(live) {
                if l.is_some()
                    && let Ok(pk) = m.parse()
                {
                    out.push(pk);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn stats_async(&self) -> Result<StoreStats, StoreError> {
        let mut conn = self.conn.clone();
        let (servers, clients): (u64, u64) = redis::pipe()
            .zcard(self.servers_key())
            .scard(self.clients_key())
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(StoreStats { servers, clients })
    }
}

impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn get(&self, pk: PublicKey) -> StoreFuture<'_, Option<Entry>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let json: Option<String> = conn.get(self.key(&pk, "e")).await.map_err(unavailable)?;
            json.map(|j| parse_entry(&j)).transpose()
        })
    }

    fn put(&self, entry: Entry) -> StoreFuture<'_, PutOutcome> {
        Box::pin(self.put_async(entry))
    }

    fn delete(&self, pk: PublicKey, timestamp: u64) -> StoreFuture<'_, ()> {
        Box::pin(self.delete_async(pk, timestamp))
    }

    fn available_servers(&self, limit: usize) -> StoreFuture<'_, Vec<Entry>> {
        Box::pin(self.servers(limit, "1"))
    }

    fn all_servers(&self, limit: usize) -> StoreFuture<'_, Vec<Entry>> {
        Box::pin(self.servers(limit, "-inf"))
    }

    fn available_servers_json(&self, limit: usize) -> StoreFuture<'_, Vec<EntryJson>> {
        Box::pin(self.servers_json(limit, "1"))
    }

    fn all_servers_json(&self, limit: usize) -> StoreFuture<'_, Vec<EntryJson>> {
        Box::pin(self.servers_json(limit, "-inf"))
    }

    fn client_keys(&self, limit: usize) -> StoreFuture<'_, Vec<PublicKey>> {
        Box::pin(self.client_keys_async(limit))
    }

    fn purge_expired(&self) -> StoreFuture<'_, usize> {
        Box::pin(self.purge_async())
    }

    fn stats(&self) -> StoreFuture<'_, StoreStats> {
        Box::pin(self.stats_async())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_numbers_sort_as_numbers() {
        assert!(pad(9) < pad(10));
        assert!(pad(u64::MAX - 1) < pad(u64::MAX));
        assert_eq!(pad(u64::MAX).len(), 20);
        assert_eq!(unpad(&pad(12345)).unwrap(), 12345);
    }
}
