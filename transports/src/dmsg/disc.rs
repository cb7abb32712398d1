//! DMSG discovery: signed entries, the [`Discovery`] client trait, and an in-memory
//! implementation ([`MemoryDiscovery`]) for tests and single-process networks.
//!
//! An [`Entry`] maps a public key to its servers (a client: its delegated servers) or its address
//! (a server: `host:port` and free sessions). Entries are signed over **canonical bytes**
//! ([`Entry::canonical_bytes`], documented in `docs/api/dmsg-discovery.md`), never over whatever a
//! JSON serializer emits. Deletes are signed, timestamped [`DeleteRequest`]s, so a stored entry
//! can never be replayed to delete it.
//!
//! ```
//! use skytower_transports::dmsg::disc::{Entry, ServerSection};
//! use skytower_transports::identity::SecretKey;
//!
//! let key = SecretKey::generate().unwrap();
//! let mut entry = Entry::new_server(key.public_key(), "127.0.0.1:8081", 2048);
//! entry.sign(&key);
//! assert!(entry.verify().is_ok());
//! let json = serde_json::to_string(&entry).unwrap();
//! let back: Entry = serde_json::from_str(&json).unwrap();
//! assert!(back.verify().is_ok());
//! entry.server.as_mut().unwrap().available_sessions = 1; // tampering breaks the signature
//! assert!(entry.verify().is_err());
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::replay::unix_ms_now;
use crate::identity::{PublicKey, SecretKey, Signature, contexts};

/// Version of the entry format.
pub const ENTRY_VERSION: u8 = 1;
/// Most delegated servers a client entry may list.
pub const MAX_DELEGATED_SERVERS: usize = 64;
/// Longest server address (`host:port`).
pub const MAX_ADDRESS_LEN: usize = 255;

/// The client section: the servers through which a client can be reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// Servers the client holds sessions with.
    pub delegated_servers: Vec<PublicKey>,
}

/// The server section: where a server listens and how many sessions it can still take.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// `host:port` clients connect to.
    pub address: String,
    /// Sessions the server can still accept.
    pub available_sessions: u32,
}

/// A discovery entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Format version ([`ENTRY_VERSION`]).
    pub version: u8,
    /// Increases with every update by the owner.
    pub sequence: u64,
    /// Unix time of the update, milliseconds.
    pub timestamp: u64,
    /// The owner's public key.
    #[serde(rename = "static")]
    pub static_pk: PublicKey,
    /// Present for clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientSection>,
    /// Present for servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerSection>,
    /// The owner's signature over [`Entry::canonical_bytes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

/// Why an entry is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Unknown version.
    #[error("unsupported entry version {0}")]
    Version(u8),
    /// Neither a client nor a server section.
    #[error("entry has neither a client nor a server section")]
    Empty,
    /// Too many delegated servers.
    #[error("client.delegated_servers has {0} keys (at most {MAX_DELEGATED_SERVERS})")]
    TooManyServers(usize),
    /// Bad server address.
    #[error("server.address {0:?} is not a host:port of at most {MAX_ADDRESS_LEN} bytes")]
    Address(String),
    /// No signature.
    #[error("entry is not signed")]
    Unsigned,
    /// The signature does not verify against `static`.
    #[error("entry signature does not verify")]
    BadSignature,
}

impl Entry {
    /// An unsigned server entry (sequence 0, timestamp now).
    pub fn new_server(pk: PublicKey, address: impl Into<String>, available_sessions: u32) -> Self {
        Entry {
            version: ENTRY_VERSION,
            sequence: 0,
            timestamp: unix_ms_now(),
            static_pk: pk,
            client: None,
            server: Some(ServerSection {
                address: address.into(),
                available_sessions,
            }),
            signature: None,
        }
    }

    /// An unsigned client entry (sequence 0, timestamp now).
    pub fn new_client(pk: PublicKey, delegated_servers: Vec<PublicKey>) -> Self {
        Entry {
            version: ENTRY_VERSION,
            sequence: 0,
            timestamp: unix_ms_now(),
            static_pk: pk,
            client: Some(ClientSection { delegated_servers }),
            server: None,
            signature: None,
        }
    }

    /// Checks the shape (not the signature).
    pub fn validate(&self) -> Result<(), EntryError> {
        if self.version != ENTRY_VERSION {
            return Err(EntryError::Version(self.version));
        }
        if self.client.is_none() && self.server.is_none() {
            return Err(EntryError::Empty);
        }
        if let Some(c) = &self.client
            && c.delegated_servers.len() > MAX_DELEGATED_SERVERS
        {
            return Err(EntryError::TooManyServers(c.delegated_servers.len()));
        }
        if let Some(s) = &self.server {
            let ok = s.address.len() <= MAX_ADDRESS_LEN
                && s.address
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(EntryError::Address(s.address.clone()));
            }
        }
        Ok(())
    }

    /// The exact bytes that are signed (big-endian integers):
    ///
    /// ```text
    /// u8 version ‖ u64 sequence ‖ u64 timestamp ‖ [32] static ‖ u8 sections (bit 0 client, bit 1 server)
    /// [client] u16 n ‖ n × [32] delegated server
    /// [server] u16 len ‖ address (UTF-8) ‖ u32 available_sessions
    /// ```
    ///
    /// Callers must [`validate`](Self::validate) first; lengths beyond u16 are truncated here.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(self.version);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(self.static_pk.as_bytes());
        let sections = u8::from(self.client.is_some()) | (u8::from(self.server.is_some()) << 1);
        out.push(sections);
        if let Some(c) = &self.client {
            out.extend_from_slice(&(c.delegated_servers.len() as u16).to_be_bytes());
            for pk in &c.delegated_servers {
                out.extend_from_slice(pk.as_bytes());
            }
        }
        if let Some(s) = &self.server {
            out.extend_from_slice(&(s.address.len() as u16).to_be_bytes());
            out.extend_from_slice(s.address.as_bytes());
            out.extend_from_slice(&s.available_sessions.to_be_bytes());
        }
        out
    }

    /// Signs the entry with its owner's key (which must be `static_pk`'s).
    pub fn sign(&mut self, key: &SecretKey) {
        self.signature = Some(key.sign(contexts::DMSG_ENTRY, &self.canonical_bytes()));
    }

    /// Validates the shape and verifies the signature against `static_pk`.
    pub fn verify(&self) -> Result<(), EntryError> {
        self.validate()?;
        let sig = self.signature.as_ref().ok_or(EntryError::Unsigned)?;
        self.static_pk
            .verify(contexts::DMSG_ENTRY, &self.canonical_bytes(), sig)
            .map_err(|_| EntryError::BadSignature)
    }

    /// Whether `other` says the same thing (same key, sections) regardless of sequence,
    /// timestamp and signature: a refresh rather than a change.
    pub fn same_content(&self, other: &Entry) -> bool {
        self.static_pk == other.static_pk
            && self.client == other.client
            && self.server == other.server
    }
}

/// A signed request to delete the entry of `static_pk`, made fresh for each delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    /// Whose entry.
    #[serde(rename = "static")]
    pub static_pk: PublicKey,
    /// Unix time of the request, milliseconds (checked against a window by discovery).
    pub timestamp: u64,
    /// Signature by `static_pk` over `[32] static ‖ u64 timestamp`, context `dmsg-discovery/delete`.
    pub signature: Signature,
}

impl DeleteRequest {
    fn bytes(pk: &PublicKey, timestamp: u64) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[..32].copy_from_slice(pk.as_bytes());
        b[32..].copy_from_slice(&timestamp.to_be_bytes());
        b
    }

    /// A delete request signed now by `key`.
    pub fn new(key: &SecretKey) -> Self {
        let pk = key.public_key();
        let timestamp = unix_ms_now();
        DeleteRequest {
            static_pk: pk,
            timestamp,
            signature: key.sign(contexts::DMSG_ENTRY_DELETE, &Self::bytes(&pk, timestamp)),
        }
    }

    /// Verifies the signature (the timestamp window is the verifier's policy).
    pub fn verify(&self) -> Result<(), EntryError> {
        self.static_pk
            .verify(
                contexts::DMSG_ENTRY_DELETE,
                &Self::bytes(&self.static_pk, self.timestamp),
                &self.signature,
            )
            .map_err(|_| EntryError::BadSignature)
    }
}

/// Errors of a discovery client.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// No (unexpired) entry for the key.
    #[error("no discovery entry for {0}")]
    NotFound(PublicKey),
    /// The entry was rejected.
    #[error("entry rejected: {0}")]
    Rejected(String),
    /// The discovery service could not be reached or failed.
    #[error("discovery unavailable: {0}")]
    Unavailable(String),
}

/// A boxed future returned by [`Discovery`] methods.
pub type DiscoveryFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, DiscoveryError>> + Send + 'a>>;

/// What DMSG needs from a discovery service. Implemented over HTTP by the discovery client
/// (dmsg-discovery issue) and in memory by [`MemoryDiscovery`].
pub trait Discovery: Send + Sync + 'static {
    /// The entry of `pk`.
    fn entry(&self, pk: PublicKey) -> DiscoveryFuture<'_, Entry>;
    /// Stores a signed entry (create, update or refresh).
    fn post_entry(&self, entry: Entry) -> DiscoveryFuture<'_, ()>;
    /// Deletes an entry with a fresh signed request.
    fn delete_entry(&self, request: DeleteRequest) -> DiscoveryFuture<'_, ()>;
    /// Server entries with free sessions, most free first.
    fn available_servers(&self) -> DiscoveryFuture<'_, Vec<Entry>>;
}

/// An in-memory [`Discovery`] with the same validation rules as the service: signatures,
/// increasing sequences, fresh deletes, and per-kind TTLs (server 2 min, client 60 min by
/// default) measured with `tokio::time`. Bounded by `max_entries`.
#[derive(Clone, Debug)]
pub struct MemoryDiscovery {
    inner: Arc<Mutex<HashMap<PublicKey, (Entry, tokio::time::Instant)>>>,
    server_ttl: Duration,
    client_ttl: Duration,
    max_entries: usize,
}

impl Default for MemoryDiscovery {
    fn default() -> Self {
        MemoryDiscovery::new(Duration::from_secs(120), Duration::from_secs(3600), 100_000)
    }
}

impl MemoryDiscovery {
    /// A store with the given TTLs and bound.
    pub fn new(server_ttl: Duration, client_ttl: Duration, max_entries: usize) -> Self {
        MemoryDiscovery {
            inner: Arc::new(Mutex::new(HashMap::new())),
            server_ttl,
            client_ttl,
            max_entries: max_entries.max(1),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<PublicKey, (Entry, tokio::time::Instant)>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Unexpired entries stored now.
    pub fn len(&self) -> usize {
        let now = tokio::time::Instant::now();
        self.map().values().filter(|(_, exp)| *exp > now).count()
    }

    /// Whether no unexpired entry is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored entry of `pk`, if unexpired (synchronous, for tests).
    pub fn get(&self, pk: &PublicKey) -> Option<Entry> {
        let now = tokio::time::Instant::now();
        self.map()
            .get(pk)
            .filter(|(_, exp)| *exp > now)
            .map(|(e, _)| e.clone())
    }

    fn store(&self, entry: Entry) -> Result<(), DiscoveryError> {
        entry
            .verify()
            .map_err(|e| DiscoveryError::Rejected(e.to_string()))?;
        let now = tokio::time::Instant::now();
        let ttl = if entry.server.is_some() {
            self.server_ttl
        } else {
            self.client_ttl
        };
        let mut map = self.map();
        map.retain(|_, (_, exp)| *exp > now);
        if let Some((old, _)) = map.get(&entry.static_pk)
            && entry.sequence <= old.sequence
        {
            return Err(DiscoveryError::Rejected(format!(
                "sequence {} is not greater than the stored {}",
                entry.sequence, old.sequence
            )));
        }
        if !map.contains_key(&entry.static_pk) && map.len() >= self.max_entries {
            return Err(DiscoveryError::Unavailable("store full".into()));
        }
        map.insert(entry.static_pk, (entry, now + ttl));
        Ok(())
    }
}

impl Discovery for MemoryDiscovery {
    fn entry(&self, pk: PublicKey) -> DiscoveryFuture<'_, Entry> {
        let r = self.get(&pk).ok_or(DiscoveryError::NotFound(pk));
        Box::pin(std::future::ready(r))
    }

    fn post_entry(&self, entry: Entry) -> DiscoveryFuture<'_, ()> {
        Box::pin(std::future::ready(self.store(entry)))
    }

    fn delete_entry(&self, request: DeleteRequest) -> DiscoveryFuture<'_, ()> {
        let r = request
            .verify()
            .map_err(|e| DiscoveryError::Rejected(e.to_string()))
            .and_then(|()| {
                if request.timestamp.abs_diff(unix_ms_now()) > 30_000 {
                    return Err(DiscoveryError::Rejected("stale delete request".into()));
                }
                match self.map().remove(&request.static_pk) {
                    Some(_) => Ok(()),
                    None => Err(DiscoveryError::NotFound(request.static_pk)),
                }
            });
        Box::pin(std::future::ready(r))
    }

    fn available_servers(&self) -> DiscoveryFuture<'_, Vec<Entry>> {
        let now = tokio::time::Instant::now();
        let mut servers: Vec<Entry> = self
            .map()
            .values()
            .filter(|(e, exp)| {
                *exp > now && e.server.as_ref().is_some_and(|s| s.available_sessions > 0)
            })
            .map(|(e, _)| e.clone())
            .collect();
        servers.sort_by_key(|e| {
            std::cmp::Reverse(e.server.as_ref().map_or(0, |s| s.available_sessions))
        });
        servers.truncate(512);
        Box::pin(std::future::ready(Ok(servers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_bytes_layout_is_fixed() {
        let key = SecretKey::generate().unwrap();
        let mut e = Entry::new_server(key.public_key(), "h:1", 7);
        e.sequence = 2;
        e.timestamp = 3;
        let b = e.canonical_bytes();
        assert_eq!(b[0], 1);
        assert_eq!(&b[1..9], &2u64.to_be_bytes());
        assert_eq!(&b[9..17], &3u64.to_be_bytes());
        assert_eq!(&b[17..49], key.public_key().as_bytes());
        assert_eq!(b[49], 0b10);
        assert_eq!(&b[50..52], &3u16.to_be_bytes());
        assert_eq!(&b[52..55], b"h:1");
        assert_eq!(&b[55..59], &7u32.to_be_bytes());
        assert_eq!(b.len(), 59);
    }

    #[test]
    fn every_field_is_covered_by_the_signature() {
        let key = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap().public_key();
        let mut e = Entry::new_client(key.public_key(), vec![other]);
        e.sign(&key);
        assert!(e.verify().is_ok());
        type Tamper = fn(&mut Entry);
        let tamper: [Tamper; 4] = [
            |e| e.sequence += 1,
            |e| e.timestamp += 1,
            |e| {
                e.client = Some(ClientSection {
                    delegated_servers: vec![],
                })
            },
            |e| {
                e.server = Some(ServerSection {
                    address: "h:1".into(),
                    available_sessions: 1,
                })
            },
        ];
        for t in tamper {
            let mut bad = e.clone();
            t(&mut bad);
            assert_eq!(bad.verify(), Err(EntryError::BadSignature));
        }
        let mut unsigned = e.clone();
        unsigned.signature = None;
        assert_eq!(unsigned.verify(), Err(EntryError::Unsigned));
    }

    #[test]
    fn validation_errors_are_typed() {
        let pk = SecretKey::generate().unwrap().public_key();
        let mut e = Entry::new_server(pk, "no-port", 1);
        assert!(matches!(e.validate(), Err(EntryError::Address(_))));
        e.server = None;
        assert_eq!(e.validate(), Err(EntryError::Empty));
        let e = Entry::new_client(pk, vec![pk; MAX_DELEGATED_SERVERS + 1]);
        assert_eq!(e.validate(), Err(EntryError::TooManyServers(65)));
        let mut e = Entry::new_client(pk, vec![]);
        e.version = 9;
        assert_eq!(e.validate(), Err(EntryError::Version(9)));
    }

    #[test]
    fn json_uses_static_and_rejects_unknown_fields() {
        let key = SecretKey::generate().unwrap();
        let mut e = Entry::new_server(key.public_key(), "127.0.0.1:1", 3);
        e.sign(&key);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["static"], key.public_key().to_string());
        assert_eq!(v["server"]["available_sessions"], 3);
        assert!(v.get("client").is_none());
        let mut extra = v.clone();
        extra["surprise"] = 1.into();
        assert!(serde_json::from_value::<Entry>(extra).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn memory_discovery_enforces_sequence_ttl_and_signed_deletes() {
        let d = MemoryDiscovery::new(Duration::from_secs(120), Duration::from_secs(3600), 10);
        let key = SecretKey::generate().unwrap();
        let pk = key.public_key();
        let mut e = Entry::new_server(pk, "127.0.0.1:9", 5);
        e.sign(&key);
        d.post_entry(e.clone()).await.unwrap();
        // Same sequence again: rejected.
        assert!(matches!(
            d.post_entry(e.clone()).await,
            Err(DiscoveryError::Rejected(_))
        ));
        // Unsigned/tampered: rejected.
        let mut bad = e.clone();
        bad.sequence = 5;
        assert!(matches!(
            d.post_entry(bad).await,
            Err(DiscoveryError::Rejected(_))
        ));
        assert_eq!(d.available_servers().await.unwrap().len(), 1);
        // Expires exactly at the TTL.
        tokio::time::advance(Duration::from_secs(119)).await;
        assert!(d.entry(pk).await.is_ok());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(matches!(
            d.entry(pk).await,
            Err(DiscoveryError::NotFound(_))
        ));
        // Delete needs a valid signature by the owner.
        e.sequence = 1;
        e.sign(&key);
        d.post_entry(e).await.unwrap();
        let mut forged = DeleteRequest::new(&SecretKey::generate().unwrap());
        forged.static_pk = pk;
        assert!(matches!(
            d.delete_entry(forged).await,
            Err(DiscoveryError::Rejected(_))
        ));
        d.delete_entry(DeleteRequest::new(&key)).await.unwrap();
        assert!(d.is_empty());
    }
}
