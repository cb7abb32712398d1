//! Node identity: Ed25519 key pairs, domain-separated signatures, key files, and the X25519
//! (Noise) static keys derived from them.
//!
//! * A node's [`PublicKey`] is its **address**: 64 lowercase hex characters, canonical (one key,
//!   one string), validated on construction (on-curve, canonical, prime order; weak keys are
//!   rejected).
//! * [`SecretKey`] is zeroized on drop, redacted in `Debug`, and exported only explicitly
//!   ([`SecretKey::to_hex`], key files).
//! * Every signature is made over `"skytower/v1" ‖ len(context) ‖ context ‖ msg`, where the
//!   [`SigningContext`] names the kind of signed structure (registry: [`contexts`]); a signature
//!   for one context never verifies under another. Verification uses `verify_strict`.
//! * Key files ([`SecretKey::save`], [`SecretKey::load`], [`SecretKey::generate_and_save`]) are
//!   created atomically with mode `0600`, never overwritten unless asked, and format-detected
//!   on load ([`KeyFormat::Hex`] or [`KeyFormat::Json`]).
//! * The Noise static key is **derived** from the identity key (ed25519→X25519, as libsodium's
//!   `crypto_sign_ed25519_{pk,sk}_to_curve25519`): [`SecretKey::noise_secret`],
//!   [`PublicKey::noise_public`]. So a dialer computes a peer's Noise key from its address
//!   alone. The map loses the sign bit: always map the *claimed* identity forward and compare
//!   ([`PublicKey::matches_noise_key`]); never map an X25519 key back.
//!
//! The byte formats and the rationale are in `docs/identity.md`.
//!
//! # Example
//!
//! ```
//! use skytower_transports::identity::{contexts, PublicKey, SecretKey, VerifyError};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = SecretKey::generate()?;
//! let address = secret.public_key();
//!
//! // Sign a structure under its own context; it verifies only under that context.
//! let entry = br#"{"version":"0.0.1","sequence":1}"#;
//! let sig = secret.sign(contexts::DMSG_ENTRY, entry);
//! address.verify(contexts::DMSG_ENTRY, entry, &sig)?;
//! let err: VerifyError = address
//!     .verify(contexts::TRANSPORT_ENTRY, entry, &sig)
//!     .unwrap_err();
//! assert_eq!(err.context, contexts::TRANSPORT_ENTRY);
//!
//! // The address as text, and back.
//! let text = address.to_string();
//! assert_eq!(text.len(), 64);
//! assert_eq!(text.parse::<PublicKey>()?, address);
//!
//! // Signatures have a text form too.
//! let sig_text = sig.to_string();
//! assert_eq!(sig_text.parse::<skytower_transports::identity::Signature>()?, sig);
//!
//! // The peer's Noise static key follows from its address alone.
//! assert!(address.matches_noise_key(&address.noise_public()));
//! assert_eq!(secret.noise_secret().as_bytes().len(), 32);
//! # Ok(())
//! # }
//! ```

mod error;
mod hex;
mod keyfile;
mod keys;
mod signature;

pub use error::{
    KeyFileError, KeyParseError, PublicKeyError, RandomError, SecretKeyError, SignatureError,
    VerifyError,
};
pub use keyfile::{KeyFileWarning, KeyFormat, LoadedKey, MAX_KEY_FILE_LEN, permissions_too_open};
pub use keys::{NoiseSecret, PublicKey, SecretKey};
pub use signature::{MAX_CONTEXT_LEN, SIGNING_PREFIX, Signature, SigningContext, contexts};

/// serde visitor deserializing a type from a string through its `FromStr`.
struct FromStrVisitor<T> {
    expecting: &'static str,
    _marker: core::marker::PhantomData<fn() -> T>,
}

impl<T> FromStrVisitor<T> {
    fn new(expecting: &'static str) -> Self {
        Self {
            expecting,
            _marker: core::marker::PhantomData,
        }
    }
}

impl<T> serde::de::Visitor<'_> for FromStrVisitor<T>
where
    T: core::str::FromStr,
    T::Err: core::fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

#[cfg(test)]
mod tests;
