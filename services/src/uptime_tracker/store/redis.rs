//! [`RedisUptimeStore`]: heartbeats and day counters in Redis, expiring natively.
//!
//! Layout (namespace `N`, default `uptime-tracker:`):
//!
//! | key | type | content | TTL |
//! |---|---|---|---|
//! | `Nn:<pk>` | hash | `last`: Unix ms of the last heartbeat, `version` | retention (`PEXPIRE`, renewed by each heartbeat) |
//! | `Nd:<pk>` | hash | `<day number>` → milliseconds online that UTC day | same |
//! | `Nnodes` | sorted set | keys scored by their last heartbeat (ms) | — |
//!
//! Every operation is one Lua script, so a heartbeat's read-credit-write is atomic however many
//! tracker instances share the Redis (a listing reads its nodes in batches of 500, so no script
//! holds Redis for long; it is not a snapshot). Time is the tracker's (`now` is an argument), so all
//! instances must have synchronised clocks (as their signature windows already require). A
//! silent node's hashes expire natively after the retention; [`purge`](UptimeStore::purge)
//! removes it from `Nnodes` (and deletes its hashes, should they have outlived it); day
//! counters older than the retention are deleted by the node's next heartbeat.

use std::collections::BTreeMap;

use redis::Script;
use redis::aio::ConnectionManager;
use skytower_transports::identity::PublicKey;

use super::{Accounting, HeartbeatOutcome, NodeRecord, StoreFuture, UptimeStore, UptimeStoreError};
use crate::dmsg_discovery::RedisConfig;
use crate::uptime_tracker::clock::{Day, DayRange};

const HEARTBEAT: &str = r#"
-- ARGV: ns, pk, version, now, cap, retention; returns {credited_ms, first (0|1)}
local ns, pk, version = ARGV[1], ARGV[2], ARGV[3]
local now, cap, retention = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local DAY = 86400000
local nkey, dkey = ns .. 'n:' .. pk, ns .. 'd:' .. pk
local last = tonumber(redis.call('HGET', nkey, 'last'))
if last and last + retention <= now then last = nil end
local credited = 0
if not last then
  redis.call('DEL', dkey)
elseif now > last then
  local s = last
  local e = last + math.min(now - last, cap)
  while s < e do
    local day = math.floor(s / DAY)
    local pe = math.min(e, (day + 1) * DAY)
    redis.call('HINCRBY', dkey, string.format('%d', day), string.format('%d', pe - s))
    credited = credited + (pe - s)
    s = pe
  end
end
local kept = math.floor((now - retention) / DAY)
for _, d in ipairs(redis.call('HKEYS', dkey)) do
  if tonumber(d) < kept then redis.call('HDEL', dkey, d) end
end
redis.call('HSET', nkey, 'last', string.format('%d', now), 'version', version)
redis.call('PEXPIRE', nkey, retention)
if redis.call('EXISTS', dkey) == 1 then redis.call('PEXPIRE', dkey, retention) end
redis.call('ZADD', ns .. 'nodes', now, pk)
if last then return {credited, 0} end
return {credited, 1}
"#;

const LIST: &str = r#"
-- ARGV: ns, now, retention, limit; the live nodes, most recently seen first, at most limit + 1
return redis.call('ZREVRANGEBYSCORE', ARGV[1] .. 'nodes', '+inf',
  string.format('(%d', tonumber(ARGV[2]) - tonumber(ARGV[3])), 'LIMIT', 0, tonumber(ARGV[4]) + 1)
"#;

const READ: &str = r#"
-- ARGV: ns, now, retention, pk...; returns {{pk, last, version, {day, ms, ...}}, ...} for the
-- live ones
local ns = ARGV[1]
local now, retention = tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for i = 4, #ARGV do
  local pk = ARGV[i]
  local h = redis.call('HMGET', ns .. 'n:' .. pk, 'last', 'version')
  if h[1] and h[2] and tonumber(h[1]) + retention > now then
    out[#out + 1] = {pk, h[1], h[2], redis.call('HGETALL', ns .. 'd:' .. pk)}
  end
end
return out
"#;

/// Nodes read per script call when listing, so one call holds Redis for a few ms at most.
const READ_BATCH: usize = 500;

const PURGE: &str = r#"
-- ARGV: ns, now, retention; removes nodes past the retention (at most 10000 per call)
local ns = ARGV[1]
local cutoff = string.format('%d', tonumber(ARGV[2]) - tonumber(ARGV[3]))
local dead = redis.call('ZRANGEBYSCORE', ns .. 'nodes', '-inf', cutoff, 'LIMIT', 0, 10000)
for _, pk in ipairs(dead) do
  redis.call('DEL', ns .. 'n:' .. pk, ns .. 'd:' .. pk)
  redis.call('ZREM', ns .. 'nodes', pk)
end
return #dead
"#;

const LEN: &str = r#"
-- ARGV: ns, now, retention
return redis.call('ZCOUNT', ARGV[1] .. 'nodes',
  string.format('(%d', tonumber(ARGV[2]) - tonumber(ARGV[3])), '+inf')
"#;

/// The Redis [`UptimeStore`] (layout in the module docs). The connection is a
/// [`ConnectionManager`]: it reconnects by itself; while Redis is down every operation fails
/// fast with [`UptimeStoreError::Unavailable`].
#[derive(Clone)]
pub struct RedisUptimeStore {
    conn: ConnectionManager,
    namespace: String,
    accounting: Accounting,
    heartbeat: Script,
    list: Script,
    read: Script,
    purge: Script,
    len: Script,
}

impl std::fmt::Debug for RedisUptimeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisUptimeStore")
            .field("namespace", &self.namespace)
            .field("accounting", &self.accounting)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: redis::RedisError) -> UptimeStoreError {
    UptimeStoreError::Unavailable(e.to_string())
}

type RawNode = (String, String, String, Vec<String>);

impl RedisUptimeStore {
    /// Connects (failing if Redis cannot be reached now; later outages are survived). Keys start
    /// with `config.prefix`.
    pub async fn connect(
        config: &RedisConfig,
        accounting: Accounting,
    ) -> Result<Self, UptimeStoreError> {
        let conn = config
            .connect()
            .await
            .map_err(UptimeStoreError::Unavailable)?;
        Ok(RedisUptimeStore {
            conn,
            namespace: config.prefix.clone(),
            accounting,
            heartbeat: Script::new(HEARTBEAT),
            list: Script::new(LIST),
            read: Script::new(READ),
            purge: Script::new(PURGE),
            len: Script::new(LEN),
        })
    }

    async fn read(
        &self,
        keys: Option<&[PublicKey]>,
        days: DayRange,
        now_ms: u64,
        limit: usize,
    ) -> Result<(Vec<NodeRecord>, bool), UptimeStoreError> {
        let retention = self.accounting.retention_ms();
        let (ids, truncated) = match keys {
            Some(keys) => (keys.iter().map(ToString::to_string).collect(), false),
            None => {
                let mut ids: Vec<String> = self
                    .list
                    .arg(&self.namespace)
                    .arg(now_ms)
                    .arg(retention)
                    .arg(limit)
                    .invoke_async(&mut self.conn.clone())
                    .await
                    .map_err(unavailable)?;
                let truncated = ids.len() > limit;
                ids.truncate(limit);
                (ids, truncated)
            }
        };
        let kept = self.accounting.first_kept_day(now_ms);
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(READ_BATCH) {
            let mut inv = self.read.prepare_invoke();
            inv.arg(&self.namespace).arg(now_ms).arg(retention);
            for id in batch {
                inv.arg(id);
            }
            let raw: Vec<RawNode> = inv
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(unavailable)?;
            for node in raw {
                out.push(decode(node, days, kept)?);
            }
        }
        out.sort_by(|a, b| a.pk.cmp(&b.pk));
        out.dedup_by(|a, b| a.pk == b.pk);
        Ok((out, truncated))
    }
}

fn corrupt(what: &str, value: &str) -> UptimeStoreError {
    UptimeStoreError::Corrupt(format!("{what} {value:?}"))
}

fn decode(
    (pk, last, version, flat): RawNode,
    days: DayRange,
    kept: Day,
) -> Result<NodeRecord, UptimeStoreError> {
    if pk.len() != 64 || !pk.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(corrupt("node key", &pk));
    }
    let last_heartbeat_ms = last.parse().map_err(|_| corrupt("heartbeat time", &last))?;
    let mut daily_ms = BTreeMap::new();
    for pair in flat.chunks_exact(2) {
        let day = Day(pair[0].parse().map_err(|_| corrupt("day", &pair[0]))?);
        let ms: u64 = pair[1]
            .parse()
            .map_err(|_| corrupt("day counter", &pair[1]))?;
        if days.contains(day) && day >= kept {
            daily_ms.insert(day, ms);
        }
    }
    Ok(NodeRecord {
        pk,
        last_heartbeat_ms,
        version,
        daily_ms,
    })
}

impl UptimeStore for RedisUptimeStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn shared_nonces(&self) -> Option<std::sync::Arc<dyn crate::auth::SharedNonces>> {
        Some(std::sync::Arc::new(crate::ttl_store::RedisNonces::new(
            self.conn.clone(),
            format!("{}nonce:", self.namespace),
        )))
    }

    fn accounting(&self) -> &Accounting {
        &self.accounting
    }

    fn heartbeat<'a>(
        &'a self,
        pk: &'a PublicKey,
        version: &'a str,
        now_ms: u64,
    ) -> StoreFuture<'a, HeartbeatOutcome> {
        Box::pin(async move {
            let (credited_ms, first): (u64, i64) = self
                .heartbeat
                .arg(&self.namespace)
                .arg(pk.to_string())
                .arg(version)
                .arg(now_ms)
                .arg(self.accounting.cap_ms())
                .arg(self.accounting.retention_ms())
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(unavailable)?;
            Ok(HeartbeatOutcome {
                credited_ms,
                first: first == 1,
            })
        })
    }

    fn node<'a>(
        &'a self,
        pk: &'a PublicKey,
        days: DayRange,
        now_ms: u64,
    ) -> StoreFuture<'a, Option<NodeRecord>> {
        Box::pin(async move {
            let (mut nodes, _) = self
                .read(Some(std::slice::from_ref(pk)), days, now_ms, 1)
                .await?;
            Ok(nodes.pop())
        })
    }

    fn nodes<'a>(
        &'a self,
        keys: Option<&'a [PublicKey]>,
        days: DayRange,
        now_ms: u64,
        limit: usize,
    ) -> StoreFuture<'a, (Vec<NodeRecord>, bool)> {
        Box::pin(async move {
            let (mut nodes, mut truncated) = self.read(keys, days, now_ms, limit).await?;
            if nodes.len() > limit {
                // Explicit keys: keep the most recently seen.
                nodes.sort_by_key(|r| std::cmp::Reverse(r.last_heartbeat_ms));
                nodes.truncate(limit);
                nodes.sort_by(|a, b| a.pk.cmp(&b.pk));
                truncated = true;
            }
            Ok((nodes, truncated))
        })
    }

    fn purge(&self, now_ms: u64) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            self.purge
                .arg(&self.namespace)
                .arg(now_ms)
                .arg(self.accounting.retention_ms())
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(unavailable)
        })
    }

    fn len(&self, now_ms: u64) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            self.len
                .arg(&self.namespace)
                .arg(now_ms)
                .arg(self.accounting.retention_ms())
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(unavailable)
        })
    }
}
