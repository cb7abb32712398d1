//! Key extraction for the keyed layers ([`CircuitBreaker`](crate::CircuitBreaker) and
//! [`NegativeCache`](crate::NegativeCache)).
//!
//! A keyed layer keeps state per key (for example per destination public key, or per
//! `(destination, server)` pair) and picks the key of each request with an [`ExtractKey`].
//! Any `Fn(&Req) -> K` closure is an extractor; [`RequestAsKey`] uses a clone of the whole
//! request.
//!
//! ```
//! use skytower_layers::key::{ExtractKey, RequestAsKey};
//!
//! // A closure: key a (destination, server, payload) request by its first two fields.
//! let by_pair = |req: &(&str, &str, u32)| (req.0.to_owned(), req.1.to_owned());
//! assert_eq!(by_pair.extract_key(&("pk-a", "srv-1", 7)), ("pk-a".to_owned(), "srv-1".to_owned()));
//!
//! // The whole request is the key.
//! assert_eq!(RequestAsKey.extract_key(&"pk-a"), "pk-a");
//! ```

/// Picks the state key of a request for a keyed layer.
///
/// Implemented for every `Fn(&Req) -> K` and for [`RequestAsKey`].
pub trait ExtractKey<Req> {
    /// The key type. Keyed layers additionally require `Clone + Eq + Hash + Send + Sync`.
    type Key;

    /// Returns the key of `req`.
    fn extract_key(&self, req: &Req) -> Self::Key;
}

impl<F, Req, K> ExtractKey<Req> for F
where
    F: Fn(&Req) -> K,
{
    type Key = K;

    fn extract_key(&self, req: &Req) -> K {
        self(req)
    }
}

/// An [`ExtractKey`] that uses a clone of the whole request as its key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestAsKey;

impl<Req: Clone> ExtractKey<Req> for RequestAsKey {
    type Key = Req;

    fn extract_key(&self, req: &Req) -> Req {
        req.clone()
    }
}
