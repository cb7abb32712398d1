//! Where the transports come from: [`TransportSource`], with the transport discovery's API
//! ([`ApiSource`]) or its store read directly ([`StoreSource`]).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::transport_discovery::{TpdClient, TransportEntry, TransportRecord};
use crate::ttl_store::Records;

/// A live transport and the time it has left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveTransport {
    /// The transport.
    pub entry: TransportEntry,
    /// Time before it expires (from the fetch).
    pub remaining: Duration,
}

/// The future of [`TransportSource::fetch`].
pub type FetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<LiveTransport>, SourceError>> + Send + 'a>>;

/// Reading the transports failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("reading the transports failed: {0}")]
pub struct SourceError(pub String);

/// Something that lists the live transports.
pub trait TransportSource: Send + Sync + std::fmt::Debug {
    /// Every live transport with its remaining lifetime.
    fn fetch(&self) -> FetchFuture<'_>;
}

fn live(records: impl IntoIterator<Item = TransportRecord>) -> Vec<LiveTransport> {
    let now = crate::transport_discovery::http::clock_ms();
    records
        .into_iter()
        .filter_map(|r| {
            let remaining = r.remaining(now);
            (!remaining.is_zero()).then_some(LiveTransport {
                entry: r.entry,
                remaining,
            })
        })
        .collect()
}

/// Reads `GET /all-transports` of a transport discovery. Remaining lifetimes come from the
/// records' `expires_at` against this machine's clock (keep clocks in sync, as for the
/// signed requests' timestamp window).
#[derive(Clone, Debug)]
pub struct ApiSource(pub TpdClient);

impl TransportSource for ApiSource {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let records = self.0.all().await.map_err(|e| SourceError(e.to_string()))?;
            Ok(live(records))
        })
    }
}

/// Reads the transport discovery's store directly (a shared Redis, or in-process the same
/// store object).
#[derive(Clone, Debug)]
pub struct StoreSource(pub Records<TransportRecord>);

impl TransportSource for StoreSource {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let records = self.0.all().await.map_err(|e| SourceError(e.to_string()))?;
            Ok(live(records.into_iter().map(|(_, r)| r)))
        })
    }
}
