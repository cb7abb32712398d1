//! The bindings table: STCPR and SUDPH bindings as JSON records in a TTL store.
//!
//! One record per `(transport, key)`, id `"<transport>:<pk hex>"`, indexed by the transport
//! name (`/transports` lists an index). Every write sets the TTL (`--binding-ttl`, default
//! 5 min); a SUDPH heartbeat rewrites the record, which refreshes it. The store drops expired
//! records by itself (Redis: native key expiry; embedded: on read and by the purge task).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skytower_transports::identity::PublicKey;

use super::wire::SessionId;
use crate::ttl_store::{TtlStore, TtlStoreError as StoreError};

/// The transports a node can bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP with a public (or forwarded) listening port, bound over HTTP.
    Stcpr,
    /// UDP hole punching, bound by the UDP handshake.
    Sudph,
}

impl Transport {
    /// `stcpr` or `sudph`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Stcpr => "stcpr",
            Transport::Sudph => "sudph",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stcpr" => Ok(Transport::Stcpr),
            "sudph" => Ok(Transport::Sudph),
            _ => Err(format!("unknown transport {s:?} (expected stcpr or sudph)")),
        }
    }
}

/// One binding as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The node.
    pub pk: PublicKey,
    /// Which transport.
    pub transport: Transport,
    /// Where the node is reached: the observed public IP with the bound TCP port (STCPR), or
    /// the observed UDP `ip:port` (SUDPH).
    pub remote: SocketAddr,
    /// The node's local listening port (STCPR: the bound port; SUDPH: its local UDP port).
    pub port: u16,
    /// The node's local addresses (given to peers behind the same public IP only).
    pub addresses: Vec<IpAddr>,
    /// The SUDPH session (hex), never shown by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl Binding {
    /// The SUDPH session id.
    pub fn session_id(&self) -> Option<SessionId> {
        self.session.as_deref().and_then(SessionId::from_hex)
    }
}

/// What a heartbeat did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresh {
    /// The binding was refreshed.
    Refreshed,
    /// No binding with this session at this address.
    Unknown,
}

/// The bindings table over a [`TtlStore`]. Cheap to clone.
#[derive(Clone)]
pub struct Bindings {
    store: Arc<dyn TtlStore>,
    ttl: Duration,
    stcpr_index: Arc<[String]>,
    sudph_index: Arc<[String]>,
}

impl std::fmt::Debug for Bindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bindings")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn id(transport: Transport, pk: &[u8; 32]) -> String {
    let mut s = String::with_capacity(6 + 64);
    s.push_str(transport.as_str());
    s.push(':');
    for b in pk {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn decode(bytes: &[u8]) -> Result<Binding, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("binding record: {e}")))
}

impl Bindings {
    /// Bindings in `store`, living `ttl` from their last write.
    pub fn new(store: Arc<dyn TtlStore>, ttl: Duration) -> Self {
        Bindings {
            store,
            ttl,
            stcpr_index: Arc::from(vec![Transport::Stcpr.as_str().to_owned()]),
            sudph_index: Arc::from(vec![Transport::Sudph.as_str().to_owned()]),
        }
    }

    /// The binding TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn TtlStore> {
        &self.store
    }

    /// Writes (or replaces) a binding, with a fresh TTL.
    ///
    /// # Errors
    ///
    /// The store's.
    pub async fn put(&self, binding: &Binding) -> Result<(), StoreError> {
        let value = serde_json::to_vec(binding)
            .map_err(|e| StoreError::Corrupt(format!("encoding a binding: {e}")))?;
        let index = match binding.transport {
            Transport::Stcpr => &self.stcpr_index,
            Transport::Sudph => &self.sudph_index,
        };
        self.store
            .put(
                &id(binding.transport, binding.pk.as_bytes()),
                value,
                self.ttl,
                index,
            )
            .await
    }

    /// The live binding of `pk` on `transport`.
    ///
    /// # Errors
    ///
    /// The store's, or a corrupt record.
    pub async fn get(
        &self,
        transport: Transport,
        pk: &PublicKey,
    ) -> Result<Option<Binding>, StoreError> {
        self.get_raw(transport, pk.as_bytes()).await
    }

    async fn get_raw(
        &self,
        transport: Transport,
        pk: &[u8; 32],
    ) -> Result<Option<Binding>, StoreError> {
        match self.store.get(&id(transport, pk)).await? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Deletes the binding of `pk` on `transport`; `true` if there was one.
    ///
    /// # Errors
    ///
    /// The store's.
    pub async fn delete(&self, transport: Transport, pk: &PublicKey) -> Result<bool, StoreError> {
        self.store.delete(&id(transport, pk.as_bytes())).await
    }

    /// Refreshes the SUDPH binding of `pk` if it has `session` and was made from `from`.
    ///
    /// # Errors
    ///
    /// The store's.
    pub async fn refresh(
        &self,
        pk: &[u8; 32],
        session: &SessionId,
        from: SocketAddr,
    ) -> Result<Refresh, StoreError> {
        match self.get_raw(Transport::Sudph, pk).await? {
            Some(b) if b.remote == from && b.session_id().as_ref() == Some(session) => {
                self.put(&b).await?;
                Ok(Refresh::Refreshed)
            }
            _ => Ok(Refresh::Unknown),
        }
    }

    /// Deletes the SUDPH binding of `pk` if it has `session` and was made from `from`.
    ///
    /// # Errors
    ///
    /// The store's.
    pub async fn unbind(
        &self,
        pk: &[u8; 32],
        session: &SessionId,
        from: SocketAddr,
    ) -> Result<bool, StoreError> {
        match self.get_raw(Transport::Sudph, pk).await? {
            Some(b) if b.remote == from && b.session_id().as_ref() == Some(session) => {
                self.store.delete(&id(Transport::Sudph, pk)).await
            }
            _ => Ok(false),
        }
    }

    /// The keys with a live binding on `transport`, sorted, at most `max`.
    ///
    /// # Errors
    ///
    /// The store's.
    pub async fn list(
        &self,
        transport: Transport,
        max: usize,
    ) -> Result<Vec<PublicKey>, StoreError> {
        let records = self.store.by_index(transport.as_str()).await?;
        let mut keys: Vec<PublicKey> = records
            .iter()
            .filter_map(|(_, bytes)| decode(bytes).ok().map(|b| b.pk))
            .collect();
        keys.sort_unstable();
        keys.truncate(max);
        Ok(keys)
    }
}
