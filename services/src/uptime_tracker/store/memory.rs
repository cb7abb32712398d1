//! [`MemoryUptimeStore`]: the embedded store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use skytower_transports::identity::PublicKey;

use super::{
    Accounting, HeartbeatOutcome, NodeRecord, StoreFuture, UptimeStore, UptimeStoreError, credit,
};
use crate::uptime_tracker::clock::{Day, DayRange};

#[derive(Debug)]
struct Node {
    last_ms: u64,
    version: String,
    days: BTreeMap<Day, u64>,
}

/// The embedded [`UptimeStore`]: a map behind a mutex, at most [`Accounting::max_nodes`] nodes
/// (nodes past the retention are dropped to make room before a new node is refused with
/// [`UptimeStoreError::Full`]). Each node holds at most one counter per retained day.
#[derive(Debug)]
pub struct MemoryUptimeStore {
    accounting: Accounting,
    nodes: Mutex<HashMap<PublicKey, Node>>,
}

impl MemoryUptimeStore {
    /// An empty store with these rules.
    pub fn new(accounting: Accounting) -> Self {
        MemoryUptimeStore {
            accounting,
            nodes: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<PublicKey, Node>> {
        // Every operation leaves the map consistent, so a poisoned lock is still usable.
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn live(&self, node: &Node, now_ms: u64) -> bool {
        node.last_ms.saturating_add(self.accounting.retention_ms()) > now_ms
    }

    fn record(&self, pk: PublicKey, node: &Node, days: DayRange, now_ms: u64) -> NodeRecord {
        let kept = self.accounting.first_kept_day(now_ms);
        NodeRecord {
            pk: pk.to_string(),
            last_heartbeat_ms: node.last_ms,
            version: node.version.clone(),
            daily_ms: node
                .days
                .range(days.from.max(kept)..=days.to)
                .map(|(d, ms)| (*d, *ms))
                .collect(),
        }
    }

    fn purge_locked(&self, nodes: &mut HashMap<PublicKey, Node>, now_ms: u64) -> usize {
        let before = nodes.len();
        nodes.retain(|_, n| self.live(n, now_ms));
        let kept = self.accounting.first_kept_day(now_ms);
        for node in nodes.values_mut() {
            node.days = node.days.split_off(&kept);
        }
        before - nodes.len()
    }
}

impl UptimeStore for MemoryUptimeStore {
    fn kind(&self) -> &'static str {
        "memory"
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
        let result = (|| {
            let mut nodes = self.lock();
            let previous = nodes
                .get(pk)
                .filter(|n| self.live(n, now_ms))
                .map(|n| n.last_ms);
            if !nodes.contains_key(pk) && nodes.len() >= self.accounting.max_nodes {
                self.purge_locked(&mut nodes, now_ms);
                if nodes.len() >= self.accounting.max_nodes {
                    return Err(UptimeStoreError::Full(self.accounting.max_nodes));
                }
            }
            let kept = self.accounting.first_kept_day(now_ms);
            let node = nodes.entry(*pk).or_insert_with(|| Node {
                last_ms: now_ms,
                version: String::new(),
                days: BTreeMap::new(),
            });
            let mut credited_ms = 0;
            match previous {
                Some(last) => {
                    for (day, ms) in credit(last, now_ms, self.accounting.cap_ms()) {
                        *node.days.entry(day).or_default() += ms;
                        credited_ms += ms;
                    }
                }
                None => node.days.clear(),
            }
            if node.days.first_key_value().is_some_and(|(d, _)| *d < kept) {
                node.days = node.days.split_off(&kept);
            }
            node.last_ms = now_ms;
            version.clone_into(&mut node.version);
            Ok(HeartbeatOutcome {
                credited_ms,
                first: previous.is_none(),
            })
        })();
        Box::pin(std::future::ready(result))
    }

    fn node<'a>(
        &'a self,
        pk: &'a PublicKey,
        days: DayRange,
        now_ms: u64,
    ) -> StoreFuture<'a, Option<NodeRecord>> {
        let nodes = self.lock();
        let found = nodes
            .get(pk)
            .filter(|n| self.live(n, now_ms))
            .map(|n| self.record(*pk, n, days, now_ms));
        Box::pin(std::future::ready(Ok(found)))
    }

    fn nodes<'a>(
        &'a self,
        keys: Option<&'a [PublicKey]>,
        days: DayRange,
        now_ms: u64,
        limit: usize,
    ) -> StoreFuture<'a, (Vec<NodeRecord>, bool)> {
        let nodes = self.lock();
        let mut live: Vec<(&PublicKey, &Node)> = match keys {
            Some(keys) => keys
                .iter()
                .filter_map(|k| nodes.get_key_value(k))
                .filter(|(_, n)| self.live(n, now_ms))
                .collect(),
            None => nodes.iter().filter(|(_, n)| self.live(n, now_ms)).collect(),
        };
        live.sort_by(|a, b| a.0.cmp(b.0));
        live.dedup_by(|a, b| a.0 == b.0);
        let truncated = live.len() > limit;
        if truncated {
            // Keep the most recently seen.
            live.sort_by(|a, b| b.1.last_ms.cmp(&a.1.last_ms).then(a.0.cmp(b.0)));
            live.truncate(limit);
            live.sort_by(|a, b| a.0.cmp(b.0));
        }
        let out = live
            .into_iter()
            .map(|(pk, n)| self.record(*pk, n, days, now_ms))
            .collect();
        Box::pin(std::future::ready(Ok((out, truncated))))
    }

    fn purge(&self, now_ms: u64) -> StoreFuture<'_, usize> {
        let removed = self.purge_locked(&mut self.lock(), now_ms);
        Box::pin(std::future::ready(Ok(removed)))
    }

    fn len(&self, now_ms: u64) -> StoreFuture<'_, usize> {
        let n = self
            .lock()
            .values()
            .filter(|n| self.live(n, now_ms))
            .count();
        Box::pin(std::future::ready(Ok(n)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use skytower_transports::identity::SecretKey;

    use super::*;
    use crate::uptime_tracker::store::suite;

    fn store(retention: Duration) -> MemoryUptimeStore {
        MemoryUptimeStore::new(suite::accounting(retention))
    }

    #[tokio::test]
    async fn accounting_rules() {
        suite::accounting_rules(&store(Duration::from_secs(30 * 86_400))).await;
    }

    #[tokio::test]
    async fn listing() {
        suite::listing(&store(Duration::from_secs(30 * 86_400))).await;
    }

    #[tokio::test(start_paused = true)]
    async fn retention() {
        suite::retention(
            &store(Duration::from_secs(3600)),
            Duration::from_secs(3600),
            tokio::time::advance,
        )
        .await;
    }

    #[tokio::test]
    async fn old_days_are_dropped() {
        suite::old_days_are_dropped(&store(Duration::from_secs(2 * 86_400))).await;
    }

    #[tokio::test]
    async fn full_store_refuses_new_nodes_but_not_known_ones_and_frees_expired_ones() {
        let s = MemoryUptimeStore::new(Accounting {
            max_nodes: 2,
            retention: Duration::from_secs(600),
            ..Accounting::default()
        });
        let keys: Vec<PublicKey> = (0..3)
            .map(|_| SecretKey::generate().unwrap().public_key())
            .collect();
        s.heartbeat(&keys[0], "v", 1_000).await.unwrap();
        s.heartbeat(&keys[1], "v", 2_000).await.unwrap();
        assert_eq!(
            s.heartbeat(&keys[2], "v", 3_000).await.unwrap_err(),
            UptimeStoreError::Full(2)
        );
        s.heartbeat(&keys[0], "v", 4_000).await.unwrap();
        // keys[1] is past the retention at 602 s: room is made for keys[2].
        s.heartbeat(&keys[2], "v", 602_000).await.unwrap();
        assert_eq!(s.len(602_000).await.unwrap(), 2);
    }
}
