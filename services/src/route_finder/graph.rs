//! The transport graph and the path search.
//!
//! [`Graph`] is an immutable snapshot of the live transports: nodes are public keys, each
//! transport an undirected edge (two nodes may be linked by several transports, one per type),
//! each with a deadline after which it is never routed over, even before the next snapshot.
//!
//! [`Graph::find`] returns up to `max_paths` shortest **simple** paths (no node twice) from a
//! source to a destination with `min_hops ≤ length ≤ max_hops`, shortest first; a path is a
//! sequence of [`Hop`]s (transport, from, to), so two paths over the same nodes through
//! different transports are different paths. The search:
//!
//! 1. a breadth-first search **from the destination** over live transports gives each node its
//!    hop distance to the destination; it is extended one level at a time, only as far as the
//!    longest length asked so far (never past `max_hops`), so a query whose shortest paths
//!    suffice never scans the far side of the graph;
//! 2. for each length `L` from `max(min_hops, distance(source))` to `max_hops`, a depth-first
//!    enumeration from the source keeps only steps to nodes whose distance fits in the hops
//!    left (exact pruning: the distance is a lower bound, and every step kept lies on some walk
//!    of length `L`), skipping nodes already on the path; it stops at `max_paths`.
//!
//! The work (adjacency entries scanned, both phases) is bounded by `max_work`; when the budget
//! runs out the paths found so far are returned ([`SearchError::WorkLimit`] if none).
//!
//! ```
//! use skytower_services::route_finder::graph::{Graph, SearchOptions};
//! use skytower_services::transport_discovery::{Label, TransportEntry, TransportType};
//! use skytower_transports::identity::SecretKey;
//! use tokio::time::{Duration, Instant};
//!
//! let [a, b, c] = [(); 3].map(|_| SecretKey::generate().unwrap().public_key());
//! let alive = Instant::now() + Duration::from_secs(300);
//! let link = |x, y| (TransportEntry::new(x, y, TransportType::Dmsg, Label::User), alive);
//! let graph = Graph::build([link(a, b), link(b, c), link(a, c)]);
//!
//! let opts = SearchOptions { max_paths: 5, ..SearchOptions::default() };
//! let paths = graph.find(&a, &c, &opts, Instant::now()).unwrap();
//! assert_eq!(paths.len(), 2); // a→c, then a→b→c
//! assert_eq!(paths[0].len(), 1);
//! assert_eq!((paths[1][0].from, paths[1][0].to, paths[1][1].to), (a, b, c));
//! ```

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use skytower_transports::identity::PublicKey;
use tokio::time::Instant;

use crate::transport_discovery::{TransportEntry, TransportId};

/// One step of a route: over transport `tp_id` from `from` to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hop {
    /// The transport.
    pub tp_id: TransportId,
    /// The node the hop leaves.
    pub from: PublicKey,
    /// The node the hop reaches.
    pub to: PublicKey,
}

/// A route: hops from the source to the destination.
pub type Path = Vec<Hop>;

/// Bounds of one search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchOptions {
    /// Shortest path length wanted (in hops; 0 and 1 mean the same).
    pub min_hops: u16,
    /// Longest path length wanted.
    pub max_hops: u16,
    /// Most paths returned.
    pub max_paths: usize,
    /// Most adjacency entries scanned (BFS and enumeration together).
    pub max_work: u64,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            min_hops: 0,
            max_hops: 10,
            max_paths: 5,
            max_work: 1_000_000,
        }
    }
}

/// Why a search found no path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// The source has no live transport.
    #[error("source {0} has no live transport")]
    UnknownSource(PublicKey),
    /// The destination has no live transport.
    #[error("destination {0} has no live transport")]
    UnknownDestination(PublicKey),
    /// Source and destination are the same node.
    #[error("source and destination are the same node ({0})")]
    SameNode(PublicKey),
    /// No path within the hop range.
    #[error("no route with {min_hops} to {max_hops} hops")]
    NoPath {
        /// The range asked for.
        min_hops: u16,
        /// The range asked for.
        max_hops: u16,
    },
    /// The work budget ran out before any path was found.
    #[error("search budget of {0} steps exhausted before a route was found")]
    WorkLimit(u64),
}

#[derive(Clone, Copy, Debug)]
struct Adj {
    to: u32,
    transport: u32,
}

#[derive(Clone, Copy, Debug)]
struct Link {
    id: TransportId,
    deadline: Instant,
}

/// An immutable snapshot of the transport graph (see the [module docs](self)).
#[derive(Clone, Debug, Default)]
pub struct Graph {
    keys: Vec<PublicKey>,
    index: HashMap<PublicKey, u32>,
    /// CSR: node `n`'s adjacency is `adj[offsets[n]..offsets[n + 1]]`, sorted by neighbour key
    /// then transport id (deterministic answers).
    offsets: Vec<u32>,
    adj: Vec<Adj>,
    links: Vec<Link>,
}

const UNSEEN: u16 = u16::MAX;

impl Graph {
    /// Builds a snapshot from transports and their deadlines. A transport listed twice keeps
    /// the later deadline; an entry linking a node to itself is ignored.
    pub fn build(transports: impl IntoIterator<Item = (TransportEntry, Instant)>) -> Graph {
        let mut by_id: HashMap<TransportId, (TransportEntry, Instant)> = HashMap::new();
        for (entry, deadline) in transports {
            if entry.edges[0] == entry.edges[1] {
                continue;
            }
            by_id
                .entry(entry.id)
                .and_modify(|(e, d)| {
                    if deadline > *d {
                        *e = entry;
                        *d = deadline;
                    }
                })
                .or_insert((entry, deadline));
        }
        let mut transports: Vec<_> = by_id.into_values().collect();
        transports.sort_unstable_by_key(|(e, _)| e.id);

        let mut keys: Vec<PublicKey> = transports.iter().flat_map(|(e, _)| e.edges).collect();
        keys.sort_unstable();
        keys.dedup();
        let index: HashMap<PublicKey, u32> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, i as u32))
            .collect();

        let mut degree = vec![0u32; keys.len() + 1];
        let mut links = Vec::with_capacity(transports.len());
        let mut pairs = Vec::with_capacity(transports.len());
        for (e, deadline) in &transports {
            let (a, b) = (index[&e.edges[0]], index[&e.edges[1]]);
            degree[a as usize] += 1;
            degree[b as usize] += 1;
            pairs.push((a, b));
            links.push(Link {
                id: e.id,
                deadline: *deadline,
            });
        }
        let mut offsets = Vec::with_capacity(keys.len() + 1);
        let mut sum = 0u32;
        for d in &degree[..keys.len()] {
            offsets.push(sum);
            sum += d;
        }
        offsets.push(sum);
        let mut fill = offsets.clone();
        let mut adj = vec![
            Adj {
                to: 0,
                transport: 0
            };
            sum as usize
        ];
        for (t, (a, b)) in pairs.into_iter().enumerate() {
            adj[fill[a as usize] as usize] = Adj {
                to: b,
                transport: t as u32,
            };
            fill[a as usize] += 1;
            adj[fill[b as usize] as usize] = Adj {
                to: a,
                transport: t as u32,
            };
            fill[b as usize] += 1;
        }
        for n in 0..keys.len() {
            // Keys are sorted, so index order is key order; transports are sorted by id.
            adj[offsets[n] as usize..offsets[n + 1] as usize]
                .sort_unstable_by_key(|a| (a.to, a.transport));
        }
        Graph {
            keys,
            index,
            offsets,
            adj,
            links,
        }
    }

    /// Number of nodes (keys with at least one transport, live or not).
    #[must_use]
    pub fn node_count(&self) -> usize {
        self.keys.len()
    }

    /// Number of transports (live or not).
    #[must_use]
    pub fn transport_count(&self) -> usize {
        self.links.len()
    }

    /// Number of transports still live at `now`.
    #[must_use]
    pub fn live_count(&self, now: Instant) -> usize {
        self.links.iter().filter(|l| l.deadline > now).count()
    }

    fn neighbours(&self, n: u32) -> &[Adj] {
        let n = n as usize;
        &self.adj[self.offsets[n] as usize..self.offsets[n + 1] as usize]
    }

    fn has_live_link(&self, n: u32, now: Instant) -> bool {
        self.neighbours(n)
            .iter()
            .any(|a| self.links[a.transport as usize].deadline > now)
    }

    /// Hop distance from `src` to `dst` over live transports, by a plain breadth-first search
    /// from `src` (no bound but the graph): the baseline of the benchmark.
    #[must_use]
    pub fn distance(&self, src: &PublicKey, dst: &PublicKey, now: Instant) -> Option<u16> {
        let (&s, &d) = (self.index.get(src)?, self.index.get(dst)?);
        let mut dist = vec![UNSEEN; self.keys.len()];
        let mut queue = Vec::with_capacity(self.keys.len());
        dist[s as usize] = 0;
        queue.push(s);
        let mut head = 0;
        while let Some(&u) = queue.get(head) {
            head += 1;
            if u == d {
                return Some(dist[u as usize]);
            }
            for a in self.neighbours(u) {
                if dist[a.to as usize] == UNSEEN && self.links[a.transport as usize].deadline > now
                {
                    dist[a.to as usize] = dist[u as usize] + 1;
                    queue.push(a.to);
                }
            }
        }
        None
    }

    /// Up to `opts.max_paths` shortest simple paths from `src` to `dst` over transports live at
    /// `now`, with `min_hops ≤ length ≤ max_hops`, shortest first (see the
    /// [module docs](self)).
    ///
    /// # Errors
    ///
    /// [`SearchError`] saying why no path was found.
    pub fn find(
        &self,
        src: &PublicKey,
        dst: &PublicKey,
        opts: &SearchOptions,
        now: Instant,
    ) -> Result<Vec<Path>, SearchError> {
        if src == dst {
            return Err(SearchError::SameNode(*src));
        }
        let s = match self.index.get(src) {
            Some(&s) if self.has_live_link(s, now) => s,
            _ => return Err(SearchError::UnknownSource(*src)),
        };
        let d = match self.index.get(dst) {
            Some(&d) if self.has_live_link(d, now) => d,
            _ => return Err(SearchError::UnknownDestination(*dst)),
        };
        let no_path = || SearchError::NoPath {
            min_hops: opts.min_hops,
            max_hops: opts.max_hops,
        };
        let max_hops = opts.max_hops.min(UNSEEN - 1);
        if opts.max_paths == 0 || max_hops == 0 || opts.min_hops > max_hops {
            return Err(no_path());
        }
        let mut search = Search {
            graph: self,
            now,
            dist: vec![UNSEEN; self.keys.len()],
            queue: Vec::new(),
            head: 0,
            radius: 0,
            work: 0,
            max_work: opts.max_work,
        };
        search.dist[d as usize] = 0;
        search.queue.push(d);
        // The source's distance: extend the BFS level by level until it is labelled.
        while search.dist[s as usize] == UNSEEN {
            if search.radius >= max_hops || !search.extend_to(search.radius + 1) {
                return Err(if search.out_of_work() {
                    SearchError::WorkLimit(opts.max_work)
                } else {
                    no_path()
                });
            }
        }
        let shortest = search.dist[s as usize];
        let mut paths = Vec::new();
        let mut on_path = vec![false; self.keys.len()];
        for len in shortest.max(opts.min_hops).max(1)..=max_hops {
            if !search.extend_to(len) {
                break;
            }
            search.enumerate(s, d, len, opts.max_paths, &mut on_path, &mut paths);
            if paths.len() >= opts.max_paths || search.out_of_work() {
                break;
            }
        }
        if paths.is_empty() {
            return Err(if search.out_of_work() {
                SearchError::WorkLimit(opts.max_work)
            } else {
                no_path()
            });
        }
        Ok(paths
            .into_iter()
            .map(|p| {
                p.into_iter()
                    .map(|(from, to, t)| Hop {
                        tp_id: self.links[t as usize].id,
                        from: self.keys[from as usize],
                        to: self.keys[to as usize],
                    })
                    .collect()
            })
            .collect())
    }
}

/// The state of one search: the lazily extended BFS from the destination and the budget.
struct Search<'g> {
    graph: &'g Graph,
    now: Instant,
    dist: Vec<u16>,
    queue: Vec<u32>,
    head: usize,
    /// Every node within this many hops of the destination is labelled.
    radius: u16,
    work: u64,
    max_work: u64,
}

type RawPath = Vec<(u32, u32, u32)>;

impl Search<'_> {
    fn out_of_work(&self) -> bool {
        self.work >= self.max_work
    }

    fn live(&self, a: &Adj) -> bool {
        self.graph.links[a.transport as usize].deadline > self.now
    }

    /// Extends the BFS so that every node within `radius` hops is labelled. Returns `false`
    /// when the budget ran out or the BFS has nothing left to reach (the radius stays put).
    fn extend_to(&mut self, radius: u16) -> bool {
        while self.radius < radius {
            let level_start = self.queue.len();
            while let Some(&u) = self.queue.get(self.head) {
                if self.dist[u as usize] > self.radius {
                    break;
                }
                self.head += 1;
                let next = self.dist[u as usize] + 1;
                for a in self.graph.neighbours(u) {
                    self.work += 1;
                    if self.dist[a.to as usize] == UNSEEN && self.live(a) {
                        self.dist[a.to as usize] = next;
                        self.queue.push(a.to);
                    }
                }
                if self.out_of_work() {
                    return false;
                }
            }
            if self.queue.len() == level_start && self.head == self.queue.len() {
                // Nothing new: the component is exhausted; larger radii change nothing.
                self.radius = radius;
                return true;
            }
            self.radius += 1;
        }
        true
    }

    /// Appends the simple paths of exactly `len` hops from `s` to `d` (at most `max` paths in
    /// total), in adjacency order.
    fn enumerate(
        &mut self,
        s: u32,
        d: u32,
        len: u16,
        max: usize,
        on_path: &mut [bool],
        out: &mut Vec<RawPath>,
    ) {
        // Explicit stack: (node, next adjacency position); `hops` is the path so far.
        let mut stack: Vec<(u32, usize)> = vec![(s, 0)];
        let mut hops: RawPath = Vec::with_capacity(len as usize);
        on_path[s as usize] = true;
        while let Some(&mut (u, ref mut pos)) = stack.last_mut() {
            let adj = self.graph.neighbours(u);
            let left = len - hops.len() as u16; // hops still to make from u (≥ 1)
            let mut pushed = None;
            while *pos < adj.len() {
                let a = adj[*pos];
                *pos += 1;
                self.work += 1;
                let v = a.to;
                if on_path[v as usize] || !self.live(&a) {
                    continue;
                }
                if v == d {
                    if left == 1 {
                        hops.push((u, v, a.transport));
                        out.push(hops.clone());
                        hops.pop();
                        if out.len() >= max {
                            break;
                        }
                    }
                    continue;
                }
                let dv = self.dist[v as usize];
                if left >= 2 && dv != UNSEEN && dv < left {
                    pushed = Some((v, a.transport));
                    break;
                }
            }
            if out.len() >= max || self.out_of_work() {
                break;
            }
            match pushed {
                Some((v, t)) => {
                    hops.push((u, v, t));
                    on_path[v as usize] = true;
                    stack.push((v, 0));
                }
                None => {
                    stack.pop();
                    on_path[u as usize] = false;
                    hops.pop();
                }
            }
        }
        for (u, _) in stack {
            on_path[u as usize] = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use skytower_transports::identity::SecretKey;

    use super::*;
    use crate::transport_discovery::{Label, TransportType};

    fn nodes(n: usize) -> Vec<PublicKey> {
        (0..n)
            .map(|i| {
                let seed = format!("{:064x}", i + 1);
                SecretKey::from_hex(&seed).unwrap().public_key()
            })
            .collect()
    }

    fn link(
        a: PublicKey,
        b: PublicKey,
        kind: TransportType,
        deadline: Instant,
    ) -> (TransportEntry, Instant) {
        (TransportEntry::new(a, b, kind, Label::User), deadline)
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(300)
    }

    fn opts(min: u16, max: u16, paths: usize) -> SearchOptions {
        SearchOptions {
            min_hops: min,
            max_hops: max,
            max_paths: paths,
            ..SearchOptions::default()
        }
    }

    /// The hops form a simple path from src to dst over the graph's live transports.
    fn check_path(g: &Graph, p: &Path, src: PublicKey, dst: PublicKey, now: Instant) {
        assert_eq!(p.first().unwrap().from, src);
        assert_eq!(p.last().unwrap().to, dst);
        let mut seen = HashSet::from([src]);
        for w in p.windows(2) {
            assert_eq!(w[0].to, w[1].from);
        }
        for h in p {
            assert!(seen.insert(h.to), "node repeated in {p:?}");
            let t = g
                .links
                .iter()
                .find(|l| l.id == h.tp_id)
                .expect("known transport");
            assert!(t.deadline > now);
            let (a, b) = (h.from.min(h.to), h.from.max(h.to));
            let tp = g.links.iter().position(|l| l.id == h.tp_id).unwrap();
            let ends: HashSet<_> = g
                .adj
                .iter()
                .filter(|x| x.transport as usize == tp)
                .map(|x| g.keys[x.to as usize])
                .collect();
            assert_eq!(ends, HashSet::from([a, b]));
        }
    }

    #[test]
    fn line_graph_and_hop_bounds() {
        let k = nodes(4);
        let t = later();
        let g = Graph::build((0..3).map(|i| link(k[i], k[i + 1], TransportType::Dmsg, t)));
        let now = Instant::now();
        let p = g.find(&k[0], &k[3], &opts(0, 10, 5), now).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].len(), 3);
        check_path(&g, &p[0], k[0], k[3], now);
        // And the other way round.
        let back = g.find(&k[3], &k[0], &opts(0, 10, 5), now).unwrap();
        assert_eq!(
            back[0].iter().map(|h| h.to).collect::<Vec<_>>(),
            vec![k[2], k[1], k[0]]
        );
        let no = SearchError::NoPath {
            min_hops: 0,
            max_hops: 2,
        };
        assert_eq!(g.find(&k[0], &k[3], &opts(0, 2, 5), now), Err(no));
        assert!(matches!(
            g.find(&k[0], &k[3], &opts(4, 10, 5), now),
            Err(SearchError::NoPath { min_hops: 4, .. })
        ));
        assert_eq!(g.distance(&k[0], &k[3], now), Some(3));
    }

    #[test]
    fn unknown_and_same_nodes() {
        let k = nodes(3);
        let g = Graph::build([link(k[0], k[1], TransportType::Dmsg, later())]);
        let now = Instant::now();
        let o = opts(0, 5, 5);
        assert_eq!(
            g.find(&k[2], &k[0], &o, now),
            Err(SearchError::UnknownSource(k[2]))
        );
        assert_eq!(
            g.find(&k[0], &k[2], &o, now),
            Err(SearchError::UnknownDestination(k[2]))
        );
        assert_eq!(
            g.find(&k[0], &k[0], &o, now),
            Err(SearchError::SameNode(k[0]))
        );
        // Disconnected components.
        let g = Graph::build([
            link(k[0], k[1], TransportType::Dmsg, later()),
            link(k[2], nodes(4)[3], TransportType::Dmsg, later()),
        ]);
        assert!(matches!(
            g.find(&k[0], &k[2], &o, now),
            Err(SearchError::NoPath { .. })
        ));
    }

    #[test]
    fn parallel_transports_are_distinct_paths() {
        let k = nodes(3);
        let t = later();
        let g = Graph::build([
            link(k[0], k[1], TransportType::Dmsg, t),
            link(k[0], k[1], TransportType::Stcpr, t),
            link(k[1], k[2], TransportType::Sudph, t),
        ]);
        let now = Instant::now();
        let p = g.find(&k[0], &k[2], &opts(0, 5, 5), now).unwrap();
        assert_eq!(p.len(), 2);
        assert_ne!(p[0][0].tp_id, p[1][0].tp_id);
        assert_eq!(p[0][1], p[1][1]);
        for path in &p {
            check_path(&g, path, k[0], k[2], now);
        }
    }

    #[test]
    fn expired_transports_are_never_routed_over() {
        let k = nodes(4);
        let soon = Instant::now() + Duration::from_secs(10);
        let t = later();
        // 0-3 direct (expiring), 0-1-2-3 (live).
        let g = Graph::build([
            link(k[0], k[3], TransportType::Dmsg, soon),
            link(k[0], k[1], TransportType::Dmsg, t),
            link(k[1], k[2], TransportType::Dmsg, t),
            link(k[2], k[3], TransportType::Dmsg, t),
        ]);
        let now = Instant::now();
        let p = g.find(&k[0], &k[3], &opts(0, 5, 5), now).unwrap();
        assert_eq!(p.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 3]);
        let after = soon + Duration::from_millis(1);
        let p = g.find(&k[0], &k[3], &opts(0, 5, 5), after).unwrap();
        assert_eq!(p.iter().map(Vec::len).collect::<Vec<_>>(), vec![3]);
        assert_eq!(g.live_count(after), 3);
        assert_eq!(g.distance(&k[0], &k[3], after), Some(3));
        // A node whose only transport expired is unknown.
        let g = Graph::build([
            link(k[0], k[1], TransportType::Dmsg, soon),
            link(k[1], k[2], TransportType::Dmsg, t),
        ]);
        assert_eq!(
            g.find(&k[0], &k[2], &opts(0, 5, 5), after),
            Err(SearchError::UnknownSource(k[0]))
        );
    }

    #[test]
    fn duplicate_transports_keep_the_later_deadline_and_self_links_are_ignored() {
        let k = nodes(2);
        let soon = Instant::now() + Duration::from_secs(1);
        let t = later();
        let g = Graph::build([
            link(k[0], k[1], TransportType::Dmsg, t),
            link(k[1], k[0], TransportType::Dmsg, soon),
            (
                TransportEntry {
                    edges: [k[0], k[0]],
                    ..TransportEntry::new(k[0], k[1], TransportType::Tcp, Label::User)
                },
                t,
            ),
        ]);
        assert_eq!(g.transport_count(), 1);
        assert_eq!(g.live_count(soon + Duration::from_secs(1)), 1);
    }

    #[test]
    fn min_hops_skips_shorter_paths_and_max_paths_caps() {
        let k = nodes(3);
        let t = later();
        let g = Graph::build([
            link(k[0], k[2], TransportType::Dmsg, t),
            link(k[0], k[1], TransportType::Dmsg, t),
            link(k[1], k[2], TransportType::Dmsg, t),
        ]);
        let now = Instant::now();
        let p = g.find(&k[0], &k[2], &opts(2, 5, 5), now).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].iter().map(|h| h.to).collect::<Vec<_>>(),
            vec![k[1], k[2]]
        );
        let p = g.find(&k[0], &k[2], &opts(0, 5, 1), now).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].len(), 1);
        assert!(matches!(
            g.find(&k[0], &k[2], &opts(0, 5, 0), now),
            Err(SearchError::NoPath { .. })
        ));
        assert!(matches!(
            g.find(&k[0], &k[2], &opts(3, 2, 5), now),
            Err(SearchError::NoPath { .. })
        ));
    }

    #[test]
    fn the_work_budget_bounds_the_search() {
        let k = nodes(30);
        let t = later();
        // A long line: the BFS alone needs ~2 steps per node.
        let g = Graph::build((0..29).map(|i| link(k[i], k[i + 1], TransportType::Dmsg, t)));
        let now = Instant::now();
        let o = SearchOptions {
            max_hops: 100,
            max_work: 10,
            ..SearchOptions::default()
        };
        assert_eq!(
            g.find(&k[0], &k[29], &o, now),
            Err(SearchError::WorkLimit(10))
        );
        let o = SearchOptions {
            max_hops: 100,
            ..SearchOptions::default()
        };
        assert_eq!(g.find(&k[0], &k[29], &o, now).unwrap()[0].len(), 29);
    }

    /// Every simple path from `s` to `d` up to `max` hops, by plain DFS (no pruning).
    fn brute_force(g: &Graph, s: u32, d: u32, max: usize) -> Vec<Vec<u32>> {
        fn go(
            g: &Graph,
            u: u32,
            d: u32,
            max: usize,
            on: &mut Vec<u32>,
            path: &mut Vec<u32>,
            out: &mut Vec<Vec<u32>>,
        ) {
            if u == d {
                out.push(path.clone());
                return;
            }
            if path.len() == max {
                return;
            }
            for a in g.neighbours(u) {
                if on.contains(&a.to) {
                    continue;
                }
                on.push(a.to);
                path.push(a.transport);
                go(g, a.to, d, max, on, path, out);
                path.pop();
                on.pop();
            }
        }
        let mut out = Vec::new();
        go(g, s, d, max, &mut vec![s], &mut Vec::new(), &mut out);
        out
    }

    #[test]
    fn agrees_with_brute_force_on_random_graphs() {
        let k = nodes(12);
        let t = later();
        let now = Instant::now();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..40 {
            let edges = 10 + round % 15;
            let g = Graph::build((0..edges).map(|_| {
                let a = (next() % 12) as usize;
                let b = (next() % 12) as usize;
                let kind = TransportType::ALL[(next() % 2) as usize];
                link(k[a], k[if a == b { (b + 1) % 12 } else { b }], kind, t)
            }));
            for _ in 0..5 {
                let (s, d) = (k[(next() % 12) as usize], k[(next() % 12) as usize]);
                let min = (next() % 3) as u16;
                let max = 1 + (next() % 5) as u16;
                let n = 1 + (next() % 6) as usize;
                let o = opts(min, max, n);
                let got = g.find(&s, &d, &o, now);
                let (Some(&si), Some(&di)) = (g.index.get(&s), g.index.get(&d)) else {
                    assert!(got.is_err());
                    continue;
                };
                if s == d {
                    assert_eq!(got, Err(SearchError::SameNode(s)));
                    continue;
                }
                let mut all: Vec<usize> = brute_force(&g, si, di, max as usize)
                    .into_iter()
                    .map(|p| p.len())
                    .filter(|&l| l >= min.max(1) as usize)
                    .collect();
                all.sort_unstable();
                all.truncate(n);
                match got {
                    Ok(paths) => {
                        let lens: Vec<usize> = paths.iter().map(Vec::len).collect();
                        assert_eq!(lens, all, "round {round}");
                        let distinct: HashSet<_> = paths.iter().collect();
                        assert_eq!(distinct.len(), paths.len());
                        for p in &paths {
                            check_path(&g, p, s, d, now);
                        }
                    }
                    Err(e) => {
                        assert!(all.is_empty(), "round {round}: {e} but {all:?}");
                        assert!(matches!(e, SearchError::NoPath { .. }), "{e}");
                    }
                }
            }
        }
    }
}
