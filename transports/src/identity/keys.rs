//! The identity key pair and the Noise (X25519) keys derived from it.

use core::cmp::Ordering;
use core::fmt;
use core::hash::{Hash, Hasher};
use core::str::FromStr;

use ed25519_dalek::{SigningKey, VerifyingKey};
use zeroize::{Zeroize, Zeroizing};

use super::error::{PublicKeyError, RandomError, SecretKeyError, VerifyError};
use super::hex::{self, Case};
use super::signature::{Signature, SigningContext};

/// An identity secret key (an Ed25519 signing key, stored as its 32-byte seed).
///
/// * Generated from OS randomness ([`generate`](Self::generate)) or imported from hex
///   ([`from_hex`](Self::from_hex)); exported only explicitly ([`to_hex`](Self::to_hex)).
/// * Zeroized on drop (best effort: Rust moves may leave stale copies on the stack).
/// * `Debug` prints only the public key; there is no `Display`, `Serialize` or `Clone` (share it
///   with `Arc<SecretKey>`).
/// * Signs only through [`sign`](Self::sign), i.e. always domain-separated.
pub struct SecretKey {
    signing: SigningKey,
    /// The public key, derived once (its X25519 form costs a field inversion).
    public: PublicKey,
}

impl SecretKey {
    /// Length of the seed in bytes.
    pub const LEN: usize = 32;

    /// Generates a new key from the OS random number generator.
    ///
    /// # Errors
    ///
    /// [`RandomError`] if the OS generator fails (no panic).
    pub fn generate() -> Result<Self, RandomError> {
        let mut seed = Zeroizing::new([0u8; Self::LEN]);
        getrandom::fill(seed.as_mut_slice()).map_err(RandomError::new)?;
        Ok(Self::from_signing(SigningKey::from_bytes(&seed)))
    }

    /// Imports a key from the 64-hex-character encoding of its 32-byte seed.
    ///
    /// Both letter cases are accepted (a secret has no canonical-string requirement); leading
    /// or trailing whitespace is not (key files trim before calling this).
    ///
    /// # Errors
    ///
    /// [`SecretKeyError`] giving the expected/actual length or the position of the first
    /// non-hex character (never the character itself).
    pub fn from_hex(hex_seed: &str) -> Result<Self, SecretKeyError> {
        let mut seed = Zeroizing::new([0u8; Self::LEN]);
        hex::decode_into(hex_seed, seed.as_mut_slice(), Case::Any)
            .map_err(SecretKeyError::from_hex)?;
        Ok(Self::from_signing(SigningKey::from_bytes(&seed)))
    }

    /// Exports the 32-byte seed as 64 lowercase hex characters, in a string that is zeroized
    /// when dropped.
    #[must_use]
    pub fn to_hex(&self) -> Zeroizing<String> {
        let mut buf = Zeroizing::new([0u8; 2 * Self::LEN]);
        hex::encode_into(self.signing.as_bytes(), buf.as_mut_slice());
        let mut out = Zeroizing::new(String::with_capacity(2 * Self::LEN));
        // The encoder only writes ASCII hex digits.
        out.extend(buf.iter().map(|&b| char::from(b)));
        out
    }

    fn from_signing(signing: SigningKey) -> Self {
        let public = PublicKey::from_verifying_key(&signing.verifying_key());
        Self { signing, public }
    }

    /// The public key (the identity's address).
    #[must_use]
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Signs `msg` under `context`.
    ///
    /// The bytes actually signed are [`context.signed_bytes(msg)`](SigningContext::signed_bytes):
    /// `"skytower/v1" ‖ len(context) ‖ context ‖ msg`. Ed25519 signing is deterministic.
    #[must_use]
    pub fn sign(&self, context: SigningContext, msg: &[u8]) -> Signature {
        use ed25519_dalek::Signer as _;
        let bytes = context.signed_bytes(msg);
        Signature::from_bytes(self.signing.sign(&bytes).to_bytes())
    }

    /// The X25519 static secret for Noise, derived from this identity key.
    ///
    /// It is the first half of `SHA-512(seed)` (ed25519-dalek's `to_scalar_bytes`), the same
    /// value as libsodium's `crypto_sign_ed25519_sk_to_curve25519` before clamping; X25519 (and
    /// snow) clamp it. Its X25519 public key is [`PublicKey::noise_public`].
    #[must_use]
    pub fn noise_secret(&self) -> NoiseSecret {
        let mut scalar = self.signing.to_scalar_bytes();
        let secret = NoiseSecret { bytes: scalar };
        scalar.zeroize();
        secret
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// An X25519 static secret derived from a [`SecretKey`] (see [`SecretKey::noise_secret`]).
///
/// 32 bytes, unclamped (X25519 clamps), zeroized on drop, `Debug` redacted, not `Clone`.
pub struct NoiseSecret {
    bytes: [u8; 32],
}

impl NoiseSecret {
    /// The 32 secret bytes, e.g. for `snow::Builder::local_private_key`.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
}

impl Drop for NoiseSecret {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for NoiseSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NoiseSecret(<redacted>)")
    }
}

/// Keys that passed [`PublicKey::from_bytes`]'s validation recently, so that parsing the same
/// key again (every stream request names its source and destination, every response its signer)
/// costs a comparison instead of a decompression and a subgroup check (~30 µs).
///
/// Validation is a pure function of the 32 bytes, so a hit is exactly as valid as a fresh check;
/// only keys that passed are stored, and a hit compares all 32 bytes. Per thread (no lock) and
/// direct-mapped: `SLOTS` entries (the key and its decompressed point, ~230 bytes each), no heap.
/// Someone sending many distinct valid keys only evicts entries (costing the full check again),
/// never changes a result.
mod validated {
    use super::PublicKey;
    use ed25519_dalek::VerifyingKey;
    use std::cell::RefCell;

    const SLOTS: usize = 128;

    thread_local! {
        /// Each valid key with its decompressed point (what verification needs), so neither
        /// parsing nor verifying a recent key decompresses it again.
        static CACHE: RefCell<[Option<(PublicKey, VerifyingKey)>; SLOTS]> =
            const { RefCell::new([None; SLOTS]) };
    }

    fn slot(bytes: &[u8; 32]) -> usize {
        // Keys are attacker-chosen, so this only spreads honest keys; collisions cost a re-check.
        usize::from(u16::from_le_bytes([bytes[0], bytes[1]])) % SLOTS
    }

    fn lookup(bytes: &[u8; 32]) -> Option<(PublicKey, VerifyingKey)> {
        CACHE
            .try_with(|c| c.borrow()[slot(bytes)].filter(|(k, _)| k.bytes == *bytes))
            .ok()
            .flatten()
    }

    pub(super) fn get(bytes: &[u8; 32]) -> Option<PublicKey> {
        lookup(bytes).map(|(key, _)| key)
    }

    /// Remembers a key that passed validation, with its point.
    pub(super) fn put(key: PublicKey, point: VerifyingKey) {
        let _ = CACHE.try_with(|c| c.borrow_mut()[slot(&key.bytes)] = Some((key, point)));
    }

    /// The decompressed point of a valid key, for [`PublicKey::verify`](super::PublicKey::verify):
    /// a square root (~6 µs) saved per verification when the key was parsed or verified
    /// recently on this thread.
    pub(super) fn verifying_key(key: &PublicKey) -> Option<VerifyingKey> {
        if let Some((_, point)) = lookup(&key.bytes) {
            return Some(point);
        }
        let point = VerifyingKey::from_bytes(&key.bytes).ok()?;
        put(*key, point);
        Some(point)
    }
}

/// An identity public key (an Ed25519 verifying key): the address of a skytower node.
///
/// * Text form: exactly 64 **lowercase** hex characters. `Display` always writes lowercase and
///   `FromStr` accepts only lowercase, so the string form is canonical (one key, one string) and
///   can be used as a map key, URL path segment or database key. serde uses the same string.
/// * Only valid keys can be constructed: the bytes must be the canonical encoding of a curve
///   point of prime order; weak (small-order) and mixed-order points are rejected (see
///   [`PublicKeyError`]). Parsing costs a point decompression plus a subgroup check (tens of µs)
///   the first time; keys parsed recently on the same thread are recognised by their bytes.
/// * `Eq`/`Ord`/`Hash` follow the 32 bytes. The value is 64 bytes and `Copy`: the key bytes
///   plus its X25519 key, computed once at validation so [`noise_public`](Self::noise_public)
///   is free. [`verify`](Self::verify) needs the decompressed point (~6 µs, a third of the
///   verification itself); keys verified recently on the same thread are kept decompressed.
#[derive(Clone, Copy)]
pub struct PublicKey {
    /// Canonical compressed Edwards encoding, validated (prime order).
    bytes: [u8; 32],
    /// `bytes` mapped to Montgomery u (the Noise static public key).
    x25519: [u8; 32],
}

impl PublicKey {
    /// Length in bytes.
    pub const LEN: usize = 32;

    /// Validates and wraps 32 bytes.
    ///
    /// # Errors
    ///
    /// [`PublicKeyError::NotOnCurve`], [`NonCanonical`](PublicKeyError::NonCanonical),
    /// [`SmallOrder`](PublicKeyError::SmallOrder) or [`MixedOrder`](PublicKeyError::MixedOrder).
    pub fn from_bytes(bytes: &[u8; Self::LEN]) -> Result<Self, PublicKeyError> {
        if let Some(key) = validated::get(bytes) {
            return Ok(key);
        }
        let (key, point) = Self::validate(bytes)?;
        validated::put(key, point);
        Ok(key)
    }

    /// The full validation behind [`from_bytes`](Self::from_bytes), without the cache; the key
    /// and its decompressed point.
    fn validate(bytes: &[u8; Self::LEN]) -> Result<(Self, VerifyingKey), PublicKeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| PublicKeyError::NotOnCurve)?;
        let point = key.to_edwards();
        // ZIP-215 decompression accepts non-canonical encodings; re-encoding must round-trip.
        if point.compress().as_bytes() != bytes {
            return Err(PublicKeyError::NonCanonical);
        }
        if key.is_weak() {
            return Err(PublicKeyError::SmallOrder);
        }
        if !point.is_torsion_free() {
            return Err(PublicKeyError::MixedOrder);
        }
        Ok((Self::from_verifying_key(&key), key))
    }

    /// For keys known to be valid (validated, or derived from a signing key).
    fn from_verifying_key(key: &VerifyingKey) -> Self {
        Self {
            bytes: key.to_bytes(),
            x25519: key.to_montgomery().to_bytes(),
        }
    }

    /// Validates and wraps a slice that must be exactly 32 bytes long.
    ///
    /// # Errors
    ///
    /// [`PublicKeyError::ByteLength`], or any error of [`from_bytes`](Self::from_bytes).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, PublicKeyError> {
        let array =
            <&[u8; Self::LEN]>::try_from(bytes).map_err(|_| PublicKeyError::ByteLength {
                expected: Self::LEN,
                got: bytes.len(),
            })?;
        Self::from_bytes(array)
    }

    /// The 32 key bytes (compressed Edwards y with the sign of x).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.bytes
    }

    /// The 32 key bytes, by value.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        self.bytes
    }

    /// Verifies `sig` over `msg` under `context` (see [`SecretKey::sign`]).
    ///
    /// Uses `verify_strict`: rejects non-canonical `s` (malleated signatures), small-order `R`.
    ///
    /// # Errors
    ///
    /// [`VerifyError`] if the signature is not valid for this key, context and message.
    pub fn verify(
        &self,
        context: SigningContext,
        msg: &[u8],
        sig: &Signature,
    ) -> Result<(), VerifyError> {
        let err = VerifyError { context };
        // Cannot fail: `bytes` was validated on construction.
        let key = validated::verifying_key(self).ok_or(err)?;
        key.verify_strict(&context.signed_bytes(msg), &sig.to_dalek())
            .map_err(|_| err)
    }

    /// The X25519 public key for Noise derived from this identity key: the birational
    /// Edwards→Montgomery map `u = (1 + y) / (1 − y)` (libsodium's
    /// `crypto_sign_ed25519_pk_to_curve25519`).
    ///
    /// The map ignores the sign of x, so this key and its negation (the same bytes with the top
    /// bit flipped) have the same Noise key. Never map an X25519 key back to an identity: take
    /// the *claimed* identity and check it with [`matches_noise_key`](Self::matches_noise_key).
    #[must_use]
    pub fn noise_public(&self) -> [u8; 32] {
        self.x25519
    }

    /// Whether `noise_key` (e.g. the remote static key from a Noise handshake) is the Noise key
    /// of this identity. `false` for any slice that is not 32 bytes long.
    #[must_use]
    pub fn matches_noise_key(&self, noise_key: &[u8]) -> bool {
        noise_key == self.x25519
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for PublicKey {}

impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl Hash for PublicKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex::fmt_lower::<64>(self.as_bytes(), f)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = PublicKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; Self::LEN];
        hex::decode_into(s, &mut bytes, Case::Lower).map_err(PublicKeyError::from_hex)?;
        Self::from_bytes(&bytes)
    }
}

impl TryFrom<&[u8]> for PublicKey {
    type Error = PublicKeyError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        Self::from_slice(bytes)
    }
}

impl TryFrom<[u8; 32]> for PublicKey {
    type Error = PublicKeyError;

    fn try_from(bytes: [u8; 32]) -> Result<Self, Self::Error> {
        Self::from_bytes(&bytes)
    }
}

impl From<PublicKey> for [u8; 32] {
    fn from(key: PublicKey) -> Self {
        key.to_bytes()
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(super::FromStrVisitor::<Self>::new(
            "a 64-character lowercase hex ed25519 public key",
        ))
    }
}
