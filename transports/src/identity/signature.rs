//! Signatures, signing contexts and the canonical signed-bytes encoding.

use core::fmt;
use core::str::FromStr;

use super::error::SignatureError;
use super::hex::{self, Case};

/// Fixed prefix of every byte string signed by a skytower identity key.
pub const SIGNING_PREFIX: &[u8; 11] = b"skytower/v1";

/// Maximum length in bytes of a [`SigningContext`] name (it is length-prefixed with one byte).
pub const MAX_CONTEXT_LEN: usize = 255;

/// The name of a kind of signed structure, for domain separation.
///
/// Every signed structure gets its own context (see [`contexts`]), so a signature made for one
/// kind of message can never be replayed as another kind, even if the message bytes collide.
///
/// A context name is 1 to [`MAX_CONTEXT_LEN`] bytes of `a-z 0-9 - _ . /`. Contexts are built
/// with the `const fn` [`SigningContext::new`], so a bad name in a `const` is a compile error.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SigningContext(&'static str);

impl SigningContext {
    /// Creates a context from its name.
    ///
    /// # Panics
    ///
    /// If `name` is empty, longer than [`MAX_CONTEXT_LEN`] bytes or contains a character outside
    /// `a-z 0-9 - _ . /`. Used in a `const` item (as intended), this is a compile-time error.
    #[must_use]
    pub const fn new(name: &'static str) -> Self {
        let bytes = name.as_bytes();
        assert!(
            !bytes.is_empty() && bytes.len() <= MAX_CONTEXT_LEN,
            "signing context must be 1..=255 bytes"
        );
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            assert!(
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'-'
                    || b == b'_'
                    || b == b'.'
                    || b == b'/',
                "signing context may only contain a-z 0-9 - _ . /"
            );
            i += 1;
        }
        Self(name)
    }

    /// The context name.
    #[must_use]
    pub const fn as_str(&self) -> &'static str {
        self.0
    }

    /// The exact bytes that are signed for `msg` under this context:
    ///
    /// ```text
    /// "skytower/v1" (11 bytes) ‖ len(context) (1 byte) ‖ context ‖ msg
    /// ```
    ///
    /// The prefix and the length byte make the encoding injective: `("ab", "c")` and
    /// `("a", "bc")` give different bytes. Exposed for interoperable implementations and tests;
    /// [`SecretKey::sign`](super::SecretKey::sign) and [`PublicKey::verify`](super::PublicKey::verify)
    /// use it internally.
    #[must_use]
    pub fn signed_bytes(&self, msg: &[u8]) -> Vec<u8> {
        let ctx = self.0.as_bytes();
        let mut out = Vec::with_capacity(SIGNING_PREFIX.len() + 1 + ctx.len() + msg.len());
        out.extend_from_slice(SIGNING_PREFIX);
        // `new` guarantees ctx.len() <= 255.
        out.push(ctx.len() as u8);
        out.extend_from_slice(ctx);
        out.extend_from_slice(msg);
        out
    }
}

impl fmt::Debug for SigningContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningContext({:?})", self.0)
    }
}

impl fmt::Display for SigningContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.0)
    }
}

/// Registry of signing contexts: each signed structure of skytower gets its own entry here.
///
/// Rules: never reuse a context for a different structure, never change a published name (bump
/// a `/v2` suffix instead), and add every new context to [`ALL`](contexts::ALL) (a test checks
/// that they are distinct).
pub mod contexts {
    use super::SigningContext;

    /// A DMSG discovery entry (a client's or server's record: address, servers, delegated keys).
    pub const DMSG_ENTRY: SigningContext = SigningContext::new("dmsg-discovery/entry");
    /// The identity proof inside a DMSG session handshake (signature over the Noise handshake
    /// hash), when one is needed on top of the derived Noise static key.
    pub const DMSG_HANDSHAKE: SigningContext = SigningContext::new("dmsg/session-handshake");
    /// A DMSG stream request (`docs/protocol.md` §3.3).
    pub const DMSG_STREAM_REQUEST: SigningContext = SigningContext::new("dmsg/stream-request");
    /// A DMSG stream response or refusal (`docs/protocol.md` §3.4).
    pub const DMSG_STREAM_RESPONSE: SigningContext = SigningContext::new("dmsg/stream-response");
    /// A request to delete a DMSG discovery entry (fresh, timestamped; never a stored entry).
    pub const DMSG_ENTRY_DELETE: SigningContext = SigningContext::new("dmsg-discovery/delete");
    /// A transport discovery entry (a transport between two visors).
    pub const TRANSPORT_ENTRY: SigningContext = SigningContext::new("transport-discovery/entry");
    /// A service discovery entry (a service advertised by a visor).
    pub const SERVICE_ENTRY: SigningContext = SigningContext::new("service-discovery/entry");
    /// A request authenticated by a signature (nonce-based HTTP auth to discovery services).
    pub const HTTP_AUTH: SigningContext = SigningContext::new("http-auth/request");
    /// A node's answer to an address resolver's SUDPH challenge (the UDP binding handshake,
    /// `docs/api/address-resolver.md`): proves the node holds the key it binds.
    pub const AR_SUDPH: SigningContext = SigningContext::new("address-resolver/sudph");

    /// Every registered context.
    pub const ALL: &[SigningContext] = &[
        DMSG_ENTRY,
        DMSG_HANDSHAKE,
        DMSG_STREAM_REQUEST,
        DMSG_STREAM_RESPONSE,
        DMSG_ENTRY_DELETE,
        TRANSPORT_ENTRY,
        SERVICE_ENTRY,
        HTTP_AUTH,
        AR_SUDPH,
    ];
}

/// An Ed25519 signature (64 bytes: `R ‖ s`).
///
/// Text form: 128 lowercase hex characters (`Display`/`FromStr`, and serde as that string).
/// Parsing checks only the encoding; validity is checked by
/// [`PublicKey::verify`](super::PublicKey::verify).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Signature([u8; Signature::LEN]);

impl Signature {
    /// Length in bytes.
    pub const LEN: usize = 64;

    /// Wraps 64 signature bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        Self(bytes)
    }

    /// Wraps a slice that must be exactly 64 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, SignatureError> {
        <[u8; Self::LEN]>::try_from(bytes)
            .map(Self)
            .map_err(|_| SignatureError::ByteLength {
                expected: Self::LEN,
                got: bytes.len(),
            })
    }

    /// The signature bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// The signature bytes, by value.
    #[must_use]
    pub const fn to_bytes(&self) -> [u8; Self::LEN] {
        self.0
    }

    pub(crate) fn to_dalek(self) -> ed25519_dalek::Signature {
        ed25519_dalek::Signature::from_bytes(&self.0)
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex::fmt_lower::<128>(&self.0, f)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

impl FromStr for Signature {
    type Err = SignatureError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; Self::LEN];
        hex::decode_into(s, &mut bytes, Case::Lower).map_err(SignatureError::from_hex)?;
        Ok(Self(bytes))
    }
}

impl From<[u8; Signature::LEN]> for Signature {
    fn from(bytes: [u8; Signature::LEN]) -> Self {
        Self(bytes)
    }
}

impl TryFrom<&[u8]> for Signature {
    type Error = SignatureError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        Self::from_slice(bytes)
    }
}

impl serde::Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(super::FromStrVisitor::<Self>::new(
            "a 128-character lowercase hex signature",
        ))
    }
}
