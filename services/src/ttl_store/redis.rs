//! [`RedisTtlStore`]: records in Redis with native expiry.
//!
//! Layout (namespace `N`, e.g. `transport-discovery:`):
//!
//! | key | type | content | TTL |
//! |---|---|---|---|
//! | `Nr:<id>` | hash | `v`: the value, `ix`: the record's index names (JSON list) | the record's (`PEXPIRE`) |
//! | `Nall` | sorted set | ids scored by expiry (Redis clock, ms) | — |
//! | `Ni:<index>` | sorted set | ids scored by expiry | — |
//! | `Nindexes` | set | the index names in use | — |
//! | `Nnonce:<pk>:<nonce>` | string | empty: a signed request's nonce, seen ([`RedisNonces`]) | twice the signature window + 1 s |
//!
//! Every operation is one Lua script, reading the Redis server's clock (`TIME`), so a record and
//! its index entries change together and expiry is judged by one clock however many instances
//! share the Redis. Listing skips members whose score (expiry) has passed; purging removes them
//! (`ZREMRANGEBYSCORE`) from `Nall` and every index, and forgets empty indexes.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

use skytower_transports::identity::PublicKey;

use super::{PutBounds, Record, RedisConfig, TtlStore, TtlStoreError, TtlStoreFuture};
use crate::auth::{NonceFuture, SharedNonces};

const NOW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"#;

const PUT: &str = r#"
-- ARGV: ns, id, value, ttl_ms, indexes (JSON list)
--       [, bounded index, max in it, max records]: a record not live yet is refused beyond them
local ns, id = ARGV[1], ARGV[2]
local rkey = ns .. 'r:' .. id
local created = redis.call('EXISTS', rkey) == 0
if ARGV[6] and created then
  if redis.call('ZCOUNT', ns .. 'i:' .. ARGV[6], '(' .. now, '+inf') >= tonumber(ARGV[7]) then
    return 'index_full'
  end
  if redis.call('ZCOUNT', ns .. 'all', '(' .. now, '+inf') >= tonumber(ARGV[8]) then
    return 'full'
  end
end
local old = redis.call('HGET', rkey, 'ix')
if old then
  for _, name in ipairs(cjson.decode(old)) do redis.call('ZREM', ns .. 'i:' .. name, id) end
end
local exp = now + tonumber(ARGV[4])
redis.call('DEL', rkey)
redis.call('HSET', rkey, 'v', ARGV[3], 'ix', ARGV[5])
redis.call('PEXPIRE', rkey, ARGV[4])
redis.call('ZADD', ns .. 'all', exp, id)
for _, name in ipairs(cjson.decode(ARGV[5])) do
  redis.call('ZADD', ns .. 'i:' .. name, exp, id)
  redis.call('SADD', ns .. 'indexes', name)
end
if created then return 'created' end
return 'replaced'
"#;

const DELETE: &str = r#"
-- ARGV: ns, id
local ns, id = ARGV[1], ARGV[2]
local rkey = ns .. 'r:' .. id
local old = redis.call('HGET', rkey, 'ix')
local score = redis.call('ZSCORE', ns .. 'all', id)
redis.call('ZREM', ns .. 'all', id)
if not old then return 0 end
for _, name in ipairs(cjson.decode(old)) do redis.call('ZREM', ns .. 'i:' .. name, id) end
redis.call('DEL', rkey)
if score and tonumber(score) > now then return 1 end
return 0
"#;

const LIST: &str = r#"
-- ARGV: ns, set key suffix ('all' or 'i:<index>'); returns id, value, id, value, ...
local ns = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', ns .. ARGV[2], '(' .. now, '+inf')
local out = {}
for _, id in ipairs(ids) do
  local v = redis.call('HGET', ns .. 'r:' .. id, 'v')
  if v then
    out[#out + 1] = id
    out[#out + 1] = v
  end
end
return out
"#;

const SAMPLE: &str = r#"
-- ARGV: ns, index, n; returns id, value, ... for the live members of a uniform random subset
-- of the index of about 2n (ZRANDMEMBER), or of all of it when too many of those had expired.
local ns, n = ARGV[1], tonumber(ARGV[3])
local key = ns .. 'i:' .. ARGV[2]
local card = redis.call('ZCARD', key)
local draw = math.min(card, n * 2 + 8)
local function collect(ids)
  local out, live = {}, 0
  for _, id in ipairs(ids) do
    local score = redis.call('ZSCORE', key, id)
    if score and tonumber(score) > now then
      local v = redis.call('HGET', ns .. 'r:' .. id, 'v')
      if v then
        out[#out + 1] = id
        out[#out + 1] = v
        live = live + 1
      end
    end
  end
  return out, live
end
if n == 0 or draw == 0 then return {} end
local out, live = collect(redis.call('ZRANDMEMBER', key, draw))
if live < n and draw < card then
  out = collect(redis.call('ZRANGEBYSCORE', key, '(' .. now, '+inf'))
end
return out
"#;

const GET: &str = r#"
-- ARGV: ns, id
local score = redis.call('ZSCORE', ARGV[1] .. 'all', ARGV[2])
if not score or tonumber(score) <= now then return false end
return redis.call('HGET', ARGV[1] .. 'r:' .. ARGV[2], 'v')
"#;

const LEN: &str = r#"
return redis.call('ZCOUNT', ARGV[1] .. 'all', '(' .. now, '+inf')
"#;

const PURGE: &str = r#"
-- ARGV: ns; removes expired ids from `all` and every index (their hashes expire natively)
local ns = ARGV[1]
local removed = redis.call('ZREMRANGEBYSCORE', ns .. 'all', '-inf', now)
for _, name in ipairs(redis.call('SMEMBERS', ns .. 'indexes')) do
  local key = ns .. 'i:' .. name
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) == 0 then redis.call('SREM', ns .. 'indexes', name) end
end
return removed
"#;

/// The Redis [`TtlStore`] (layout in the module docs). The connection is a
/// [`ConnectionManager`]: it reconnects by itself; while Redis is down every operation fails fast
/// with [`TtlStoreError::Unavailable`].
#[derive(Clone)]
pub struct RedisTtlStore {
    conn: ConnectionManager,
    namespace: String,
    put: Script,
    delete: Script,
    list: Script,
    get: Script,
    sample: Script,
    len: Script,
    purge: Script,
}

impl std::fmt::Debug for RedisTtlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTtlStore")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: redis::RedisError) -> TtlStoreError {
    TtlStoreError::Unavailable(e.to_string())
}

fn script(body: &str) -> Script {
    Script::new(&format!("{NOW}{body}"))
}

impl RedisTtlStore {
    /// Connects (failing if Redis cannot be reached now; later outages are survived). Keys start
    /// with `config.prefix`.
    pub async fn connect(config: &RedisConfig) -> Result<Self, TtlStoreError> {
        let conn = config.connect().await.map_err(TtlStoreError::Unavailable)?;
        Ok(RedisTtlStore {
            conn,
            namespace: config.prefix.clone(),
            put: script(PUT),
            delete: script(DELETE),
            list: script(LIST),
            get: script(GET),
            sample: script(SAMPLE),
            len: script(LEN),
            purge: script(PURGE),
        })
    }

    /// The `PUT` script, with `bounds` when given; whether the record is new.
    async fn put_script(
        &self,
        id: &str,
        value: Vec<u8>,
        ttl: Duration,
        indexes: &[String],
        bounds: Option<PutBounds<'_>>,
    ) -> Result<bool, TtlStoreError> {
        let mut unique = indexes.to_vec();
        unique.sort();
        unique.dedup();
        let indexes =
            serde_json::to_string(&unique).map_err(|e| TtlStoreError::Corrupt(e.to_string()))?;
        let mut call = self.put.prepare_invoke();
        call.arg(&self.namespace)
            .arg(id)
            .arg(value)
            .arg(millis(ttl))
            .arg(indexes);
        if let Some(b) = bounds {
            call.arg(b.index).arg(b.max_in_index).arg(b.max_records);
        }
        let reply: String = call
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        match (reply.as_str(), bounds) {
            ("created", _) => Ok(true),
            ("replaced", _) => Ok(false),
            ("index_full", Some(b)) => Err(TtlStoreError::IndexFull {
                index: b.index.to_owned(),
                max: b.max_in_index,
            }),
            ("full", Some(b)) => Err(TtlStoreError::Full(b.max_records)),
            (other, _) => Err(TtlStoreError::Corrupt(format!(
                "put script replied {other:?}"
            ))),
        }
    }

    async fn list(&self, set: String) -> Result<Vec<Record>, TtlStoreError> {
        let flat: Vec<Vec<u8>> = self
            .list
            .arg(&self.namespace)
            .arg(set)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        pairs(flat)
    }

    async fn sample(&self, index: &str, n: usize) -> Result<Vec<Record>, TtlStoreError> {
        let flat: Vec<Vec<u8>> = self
            .sample
            .arg(&self.namespace)
            .arg(index)
            .arg(n)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let mut candidates = pairs(flat)?;
        // A uniform subset of the live candidates, in random order (ZRANDMEMBER's order is not).
        let amount = n.min(candidates.len());
        let picked = rand::seq::index::sample(&mut rand::rng(), candidates.len(), amount);
        Ok(picked
            .into_iter()
            .map(|i| std::mem::take(&mut candidates[i]))
            .collect())
    }
}

/// `[id, value, id, value, ...]` as records.
fn pairs(flat: Vec<Vec<u8>>) -> Result<Vec<Record>, TtlStoreError> {
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(id), Some(value)) = (it.next(), it.next()) {
        let id = String::from_utf8(id)
            .map_err(|_| TtlStoreError::Corrupt("record id is not UTF-8".into()))?;
        out.push((id, value));
    }
    Ok(out)
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl TtlStore for RedisTtlStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn shared_nonces(&self) -> Option<Arc<dyn SharedNonces>> {
        Some(Arc::new(RedisNonces::new(
            self.conn.clone(),
            format!("{}nonce:", self.namespace),
        )))
    }

    fn put<'a>(
        &'a self,
        id: &'a str,
        value: Vec<u8>,
        ttl: Duration,
        indexes: &'a [String],
    ) -> TtlStoreFuture<'a, ()> {
        Box::pin(async move {
            self.put_script(id, value, ttl, indexes, None)
                .await
                .map(drop)
        })
    }

    fn put_bounded<'a>(
        &'a self,
        id: &'a str,
        value: Vec<u8>,
        ttl: Duration,
        indexes: &'a [String],
        bounds: PutBounds<'a>,
    ) -> TtlStoreFuture<'a, bool> {
        Box::pin(self.put_script(id, value, ttl, indexes, Some(bounds)))
    }

    fn get<'a>(&'a self, id: &'a str) -> TtlStoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            self.get
                .arg(&self.namespace)
                .arg(id)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(unavailable)
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> TtlStoreFuture<'a, bool> {
        Box::pin(async move {
            let n: i64 = self
                .delete
                .arg(&self.namespace)
                .arg(id)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(unavailable)?;
            Ok(n == 1)
        })
    }

    fn by_index<'a>(&'a self, index: &'a str) -> TtlStoreFuture<'a, Vec<Record>> {
        Box::pin(self.list(format!("i:{index}")))
    }

    fn all(&self) -> TtlStoreFuture<'_, Vec<Record>> {
        Box::pin(self.list("all".to_owned()))
    }

    fn sample_index<'a>(&'a self, index: &'a str, n: usize) -> TtlStoreFuture<'a, Vec<Record>> {
        Box::pin(self.sample(index, n))
    }

    fn purge_expired(&self) -> TtlStoreFuture<'_, usize> {
        Box::pin(async move {
            let n: usize = self
                .purge
                .arg(&self.namespace)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(unavailable)?;
            Ok(n)
        })
    }

    fn len(&self) -> TtlStoreFuture<'_, usize> {
        Box::pin(async move {
            self.len
                .arg(&self.namespace)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(unavailable)
        })
    }
}

/// Nonces of signed requests in Redis, shared by every instance on it: one `SET key "" NX PX`
/// per accepted request (from [`RedisTtlStore::shared_nonces`], on the store's connection).
/// Redis holds one short key per signed request for twice the window (~150 bytes each), so its
/// memory follows the signed-request rate, which the services' per-peer rate limits bound.
#[derive(Clone)]
pub struct RedisNonces {
    conn: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for RedisNonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisNonces")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisNonces {
    /// Nonces under `prefix` (e.g. `uptime-tracker:nonce:`) on an existing connection.
    pub(crate) fn new(conn: ConnectionManager, prefix: String) -> Self {
        RedisNonces { conn, prefix }
    }
}

impl SharedNonces for RedisNonces {
    fn mark_once(&self, pk: &PublicKey, nonce: &[u8; 16], ttl: Duration) -> NonceFuture<'_> {
        let mut key = format!("{}{pk}:", self.prefix);
        for b in nonce {
            let _ = write!(key, "{b:02x}");
        }
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.conn.clone();
        Box::pin(async move {
            let set: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg("")
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .query_async(&mut conn)
                .await
                .map_err(|e| format!("redis: {e}"))?;
            Ok(set.is_some())
        })
    }
}
