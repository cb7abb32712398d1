//! The transport entry: what it contains, how its id is derived, the bytes both edges sign, and
//! the checks the service makes ([`SignedEntry::verify`]).
//!
//! Formats (also in `docs/api/transport-discovery.md`):
//!
//! - **Transport id** ([`TransportId::derive`]): the first 16 bytes of
//!   `SHA-256("skytower/v1 transport-id" ‖ edge_low (32) ‖ edge_high (32) ‖ type code (1))`
//!   with the UUID version nibble set to 8 (RFC 9562 "custom") and the RFC 4122 variant bits,
//!   written as a lowercase hyphenated UUID (`xxxxxxxx-xxxx-8xxx-[89ab]xxx-xxxxxxxxxxxx`). So a
//!   pair of nodes has one id per transport type, whoever dials.
//! - **Canonical bytes** ([`TransportEntry::canonical_bytes`], 82 bytes): `id (16) ‖ edge_low
//!   (32) ‖ edge_high (32) ‖ type code (1) ‖ label code (1)`; codes: `dmsg` 1, `stcpr` 2,
//!   `sudph` 3, `tcp` 4; labels `user` 1, `automatic` 2, `skycoin` 3.
//! - **Signatures**: each edge signs the canonical bytes under
//!   [`contexts::TRANSPORT_ENTRY`]; `signatures[i]` is the signature of `edges[i]`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use skytower_transports::identity::{PublicKey, SecretKey, Signature, contexts};

/// Domain string hashed in front of the edges when deriving a [`TransportId`].
pub const ID_DOMAIN: &[u8] = b"skytower/v1 transport-id";

/// Length of [`TransportEntry::canonical_bytes`].
pub const CANONICAL_LEN: usize = 16 + 32 + 32 + 1 + 1;

/// A transport id: 16 bytes derived from the edges and the type ([`TransportId::derive`]),
/// written as a lowercase hyphenated UUID. Parsing accepts exactly that form (one id, one
/// string), so the text can be used as a store key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransportId([u8; 16]);

impl TransportId {
    /// The id of the transport of type `kind` between `a` and `b` (in either order).
    #[must_use]
    pub fn derive(a: &PublicKey, b: &PublicKey, kind: TransportType) -> Self {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        let mut h = Sha256::new();
        h.update(ID_DOMAIN);
        h.update(low.as_bytes());
        h.update(high.as_bytes());
        h.update([kind.code()]);
        let digest = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        id[6] = (id[6] & 0x0f) | 0x80; // version 8
        id[8] = (id[8] & 0x3f) | 0x80; // RFC 4122 variant
        TransportId(id)
    }

    /// Wraps 16 bytes (no check that they were derived; [`SignedEntry::verify`] checks that).
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        TransportId(bytes)
    }

    /// The 16 bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for TransportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 36];
        let mut j = 0;
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                out[j] = b'-';
                j += 1;
            }
            out[j] = HEX[usize::from(b >> 4)];
            out[j + 1] = HEX[usize::from(b & 0x0f)];
            j += 2;
        }
        // Only ASCII was written.
        f.pad(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TransportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransportId({self})")
    }
}

/// A string that is not a lowercase hyphenated UUID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a transport id is a lowercase hyphenated UUID (36 characters), got {0:?}")]
pub struct TransportIdError(pub String);

impl FromStr for TransportId {
    type Err = TransportIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || {
            let shown: String = s.chars().take(64).collect();
            TransportIdError(shown)
        };
        let b = s.as_bytes();
        if b.len() != 36 {
            return Err(err());
        }
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut i = 0;
        while i < 36 {
            if matches!(i, 8 | 13 | 18 | 23) {
                if b[i] != b'-' {
                    return Err(err());
                }
                i += 1;
                continue;
            }
            let nib = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            let (Some(hi), Some(lo)) = (nib(b[i]), nib(b[i + 1])) else {
                return Err(err());
            };
            out[n] = hi << 4 | lo;
            n += 1;
            i += 2;
        }
        Ok(TransportId(out))
    }
}

impl Serialize for TransportId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TransportId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The kind of link a transport is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportType {
    /// Relayed through DMSG servers.
    Dmsg,
    /// Direct TCP, the address found through the address resolver.
    Stcpr,
    /// UDP hole-punched through the address resolver.
    Sudph,
    /// Direct TCP to a configured address.
    Tcp,
}

impl TransportType {
    /// Every type.
    pub const ALL: [TransportType; 4] = [
        TransportType::Dmsg,
        TransportType::Stcpr,
        TransportType::Sudph,
        TransportType::Tcp,
    ];

    /// The one-byte code in the id derivation and the canonical bytes.
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            TransportType::Dmsg => 1,
            TransportType::Stcpr => 2,
            TransportType::Sudph => 3,
            TransportType::Tcp => 4,
        }
    }

    /// The JSON / text name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            TransportType::Dmsg => "dmsg",
            TransportType::Stcpr => "stcpr",
            TransportType::Sudph => "sudph",
            TransportType::Tcp => "tcp",
        }
    }
}

impl fmt::Display for TransportType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Who asked for the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// Set up by a user.
    User,
    /// Set up automatically by the node (e.g. to public nodes).
    Automatic,
    /// Set up by the network operator.
    Skycoin,
}

impl Label {
    /// The one-byte code in the canonical bytes.
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            Label::User => 1,
            Label::Automatic => 2,
            Label::Skycoin => 3,
        }
    }
}

/// A transport: a link between two nodes (the signed part of a [`SignedEntry`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportEntry {
    /// Derived from the edges and the type ([`TransportId::derive`]).
    pub id: TransportId,
    /// The two nodes, lower key first.
    pub edges: [PublicKey; 2],
    /// The kind of link.
    #[serde(rename = "type")]
    pub kind: TransportType,
    /// Who asked for it.
    pub label: Label,
}

impl TransportEntry {
    /// The entry of the transport of type `kind` between `a` and `b` (sorted, id derived).
    #[must_use]
    pub fn new(a: PublicKey, b: PublicKey, kind: TransportType, label: Label) -> Self {
        let edges = if a <= b { [a, b] } else { [b, a] };
        TransportEntry {
            id: TransportId::derive(&a, &b, kind),
            edges,
            kind,
            label,
        }
    }

    /// The bytes both edges sign (see the [module docs](self)).
    #[must_use]
    pub fn canonical_bytes(&self) -> [u8; CANONICAL_LEN] {
        let mut out = [0u8; CANONICAL_LEN];
        out[..16].copy_from_slice(self.id.as_bytes());
        out[16..48].copy_from_slice(self.edges[0].as_bytes());
        out[48..80].copy_from_slice(self.edges[1].as_bytes());
        out[80] = self.kind.code();
        out[81] = self.label.code();
        out
    }

    /// Which edge `pk` is (0 or 1), if any.
    #[must_use]
    pub fn edge_index(&self, pk: &PublicKey) -> Option<usize> {
        self.edges.iter().position(|e| e == pk)
    }

    /// The other edge than `pk`, if `pk` is an edge.
    #[must_use]
    pub fn other_edge(&self, pk: &PublicKey) -> Option<PublicKey> {
        self.edge_index(pk).map(|i| self.edges[1 - i])
    }

    /// Checks the structure: two distinct edges, lower key first, the id derived from them and
    /// the type.
    ///
    /// # Errors
    ///
    /// [`EntryError::SameEdges`], [`EntryError::EdgesNotSorted`], [`EntryError::IdMismatch`].
    pub fn validate(&self) -> Result<(), EntryError> {
        let [a, b] = &self.edges;
        if a == b {
            return Err(EntryError::SameEdges);
        }
        if a > b {
            return Err(EntryError::EdgesNotSorted);
        }
        let expected = TransportId::derive(a, b, self.kind);
        if self.id != expected {
            return Err(EntryError::IdMismatch {
                expected,
                got: self.id,
            });
        }
        Ok(())
    }

    /// Signs as `key`'s edge.
    ///
    /// # Errors
    ///
    /// [`EntryError::NotAnEdge`] if `key` is neither edge.
    pub fn sign(&self, key: &SecretKey) -> Result<Signature, EntryError> {
        let pk = key.public_key();
        if self.edge_index(&pk).is_none() {
            return Err(EntryError::NotAnEdge(pk));
        }
        Ok(key.sign(contexts::TRANSPORT_ENTRY, &self.canonical_bytes()))
    }
}

/// A transport entry with the signatures of both edges: what nodes register
/// (`POST /transports`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedEntry {
    /// The transport.
    pub entry: TransportEntry,
    /// `signatures[i]` is `entry.edges[i]`'s signature over the canonical bytes.
    pub signatures: [Signature; 2],
}

impl SignedEntry {
    /// Signs `entry` with both edges' keys (in either order).
    ///
    /// # Errors
    ///
    /// [`EntryError::NotAnEdge`] if a key is not an edge, [`EntryError::SameEdges`] if both
    /// keys are the same edge.
    pub fn sign_both(
        entry: TransportEntry,
        a: &SecretKey,
        b: &SecretKey,
    ) -> Result<Self, EntryError> {
        let (ia, ib) = (
            entry
                .edge_index(&a.public_key())
                .ok_or(EntryError::NotAnEdge(a.public_key()))?,
            entry
                .edge_index(&b.public_key())
                .ok_or(EntryError::NotAnEdge(b.public_key()))?,
        );
        if ia == ib {
            return Err(EntryError::SameEdges);
        }
        let mut signatures = [Signature::from_bytes([0; 64]); 2];
        signatures[ia] = entry.sign(a)?;
        signatures[ib] = entry.sign(b)?;
        Ok(SignedEntry { entry, signatures })
    }

    /// Everything the service checks: [`TransportEntry::validate`], both signatures, and (if
    /// given) that `caller` is an edge.
    ///
    /// # Errors
    ///
    /// The structural errors of [`TransportEntry::validate`], then
    /// [`EntryError::BadSignature`] naming the first edge whose signature does not verify,
    /// then [`EntryError::CallerNotEdge`].
    pub fn verify(&self, caller: Option<&PublicKey>) -> Result<(), EntryError> {
        self.entry.validate()?;
        let bytes = self.entry.canonical_bytes();
        for (i, (pk, sig)) in self.entry.edges.iter().zip(&self.signatures).enumerate() {
            pk.verify(contexts::TRANSPORT_ENTRY, &bytes, sig)
                .map_err(|_| EntryError::BadSignature { edge: i, key: *pk })?;
        }
        if let Some(caller) = caller
            && self.entry.edge_index(caller).is_none()
        {
            return Err(EntryError::CallerNotEdge(*caller));
        }
        Ok(())
    }
}

/// Why an entry is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Both edges are the same key.
    #[error("the two edges are the same key")]
    SameEdges,
    /// `edges[0]` is not the lower key.
    #[error("edges are not sorted: the lower key (as bytes) must come first")]
    EdgesNotSorted,
    /// The id is not derived from the edges and type.
    #[error("transport id {got} is not derived from the edges and type (expected {expected})")]
    IdMismatch {
        /// The derived id.
        expected: TransportId,
        /// The id in the entry.
        got: TransportId,
    },
    /// An edge's signature does not verify.
    #[error("signature of edge {edge} ({key}) does not verify")]
    BadSignature {
        /// 0 or 1.
        edge: usize,
        /// The edge's key.
        key: PublicKey,
    },
    /// The caller (the request's signer) is neither edge.
    #[error("the caller {0} is not an edge of the transport")]
    CallerNotEdge(PublicKey),
    /// A key asked to sign is neither edge.
    #[error("{0} is not an edge of the transport")]
    NotAnEdge(PublicKey),
}

impl EntryError {
    /// A stable snake_case code for the API.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            EntryError::SameEdges => "same_edges",
            EntryError::EdgesNotSorted => "edges_not_sorted",
            EntryError::IdMismatch { .. } => "id_mismatch",
            EntryError::BadSignature { .. } => "bad_entry_signature",
            EntryError::CallerNotEdge(_) => "caller_not_edge",
            EntryError::NotAnEdge(_) => "not_an_edge",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (SecretKey, SecretKey) {
        let a = SecretKey::generate().unwrap();
        let b = SecretKey::generate().unwrap();
        (a, b)
    }

    fn signed(a: &SecretKey, b: &SecretKey) -> SignedEntry {
        let e = TransportEntry::new(
            a.public_key(),
            b.public_key(),
            TransportType::Stcpr,
            Label::User,
        );
        SignedEntry::sign_both(e, a, b).unwrap()
    }

    #[test]
    fn id_is_symmetric_and_depends_on_type() {
        let (a, b) = keys();
        let (pa, pb) = (a.public_key(), b.public_key());
        let id = TransportId::derive(&pa, &pb, TransportType::Dmsg);
        assert_eq!(id, TransportId::derive(&pb, &pa, TransportType::Dmsg));
        assert_ne!(id, TransportId::derive(&pa, &pb, TransportType::Stcpr));
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "8", "version 8: {text}");
        assert!("89ab".contains(&text[19..20]), "variant: {text}");
        assert_eq!(text.parse::<TransportId>().unwrap(), id);
    }

    #[test]
    fn id_derivation_matches_the_documented_formula() {
        // The documented formula, computed independently.
        let low = PublicKey::from_bytes(
            &SecretKey::from_hex(&"01".repeat(32))
                .unwrap()
                .public_key()
                .to_bytes(),
        )
        .unwrap();
        let high = SecretKey::from_hex(&"02".repeat(32)).unwrap().public_key();
        let (low, high) = if low < high { (low, high) } else { (high, low) };
        let mut h = Sha256::new();
        h.update(b"skytower/v1 transport-id");
        h.update(low.as_bytes());
        h.update(high.as_bytes());
        h.update([2u8]);
        let d = h.finalize();
        let id = TransportId::derive(&high, &low, TransportType::Stcpr);
        assert_eq!(id.as_bytes()[..6], d[..6]);
        assert_eq!(id.as_bytes()[6], (d[6] & 0x0f) | 0x80);
        assert_eq!(id.as_bytes()[7], d[7]);
        assert_eq!(id.as_bytes()[8], (d[8] & 0x3f) | 0x80);
        assert_eq!(id.as_bytes()[9..], d[9..16]);
    }

    #[test]
    fn id_parsing_is_strict() {
        let good = "0123abcd-4567-89ef-8123-456789abcdef";
        assert_eq!(good.parse::<TransportId>().unwrap().to_string(), good);
        for bad in [
            "",
            "0123ABCD-4567-89ef-8123-456789abcdef",
            "0123abcd456789ef8123456789abcdef",
            "0123abcd-4567-89ef-8123-456789abcdeg",
            "0123abcd-4567-89ef-8123_456789abcdef",
            "{0123abcd-4567-89ef-8123-456789abcdef}",
            "0123abcd-4567-89ef-8123-456789abcdef0",
        ] {
            assert!(bad.parse::<TransportId>().is_err(), "{bad}");
        }
        let e = "x".repeat(1000).parse::<TransportId>().unwrap_err();
        assert!(e.0.len() <= 64);
    }

    #[test]
    fn canonical_bytes_layout() {
        let (a, b) = keys();
        let e = TransportEntry::new(
            a.public_key(),
            b.public_key(),
            TransportType::Tcp,
            Label::Skycoin,
        );
        let bytes = e.canonical_bytes();
        assert_eq!(&bytes[..16], e.id.as_bytes());
        assert_eq!(&bytes[16..48], e.edges[0].as_bytes());
        assert_eq!(&bytes[48..80], e.edges[1].as_bytes());
        assert_eq!(bytes[80], 4);
        assert_eq!(bytes[81], 3);
        assert!(e.edges[0] < e.edges[1]);
    }

    #[test]
    fn a_signed_entry_verifies_and_round_trips_json() {
        let (a, b) = keys();
        let s = signed(&a, &b);
        s.verify(Some(&a.public_key())).unwrap();
        s.verify(Some(&b.public_key())).unwrap();
        s.verify(None).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""type":"stcpr""#), "{json}");
        assert!(json.contains(r#""label":"user""#), "{json}");
        let back: SignedEntry = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn each_refusal_is_typed() {
        let (a, b) = keys();
        let s = signed(&a, &b);

        let mut unsorted = s;
        unsorted.entry.edges.swap(0, 1);
        assert_eq!(unsorted.verify(None), Err(EntryError::EdgesNotSorted));

        let mut same = s;
        same.entry.edges[1] = same.entry.edges[0];
        assert_eq!(same.verify(None), Err(EntryError::SameEdges));

        let mut wrong_type = s;
        wrong_type.entry.kind = TransportType::Dmsg;
        assert!(matches!(
            wrong_type.verify(None),
            Err(EntryError::IdMismatch { expected, got }) if got == s.entry.id && expected != got
        ));

        // The label is signed: changing it breaks both signatures (edge 0 reported first).
        let mut relabelled = s;
        relabelled.entry.label = Label::Automatic;
        assert_eq!(
            relabelled.verify(None),
            Err(EntryError::BadSignature {
                edge: 0,
                key: s.entry.edges[0]
            })
        );

        // Swapped signatures: each is the other edge's.
        let mut swapped = s;
        swapped.signatures.swap(0, 1);
        assert!(matches!(
            swapped.verify(None),
            Err(EntryError::BadSignature { edge: 0, .. })
        ));

        // Only one edge signed (the other signature made by a stranger).
        let stranger = SecretKey::generate().unwrap();
        let mut half = s;
        half.signatures[1] = stranger.sign(contexts::TRANSPORT_ENTRY, &s.entry.canonical_bytes());
        assert_eq!(
            half.verify(None),
            Err(EntryError::BadSignature {
                edge: 1,
                key: s.entry.edges[1]
            })
        );

        // Signed under another context.
        let idx = s.entry.edge_index(&a.public_key()).unwrap();
        let mut other_ctx = s;
        other_ctx.signatures[idx] = a.sign(contexts::SERVICE_ENTRY, &s.entry.canonical_bytes());
        assert!(matches!(
            other_ctx.verify(None),
            Err(EntryError::BadSignature { edge, .. }) if edge == idx
        ));

        assert_eq!(
            s.verify(Some(&stranger.public_key())),
            Err(EntryError::CallerNotEdge(stranger.public_key()))
        );
        assert_eq!(
            s.entry.sign(&stranger),
            Err(EntryError::NotAnEdge(stranger.public_key()))
        );
        assert_eq!(
            SignedEntry::sign_both(s.entry, &a, &a),
            Err(EntryError::SameEdges)
        );
    }

    #[test]
    fn json_refuses_unknown_types_and_fields() {
        let (a, b) = keys();
        let s = signed(&a, &b);
        let mut v = serde_json::to_value(s).unwrap();
        v["entry"]["type"] = "udp".into();
        assert!(serde_json::from_value::<SignedEntry>(v.clone()).is_err());
        let mut v = serde_json::to_value(s).unwrap();
        v["entry"]["extra"] = 1.into();
        assert!(serde_json::from_value::<SignedEntry>(v).is_err());
        let mut v = serde_json::to_value(s).unwrap();
        v["signatures"] = serde_json::json!([s.signatures[0]]);
        assert!(serde_json::from_value::<SignedEntry>(v).is_err());
    }
}
