//! Typed errors of the identity module.

use std::path::PathBuf;

use super::PublicKey;
use super::hex::HexError;
use super::signature::SigningContext;

/// The OS random number generator failed (see [`SecretKey::generate`](super::SecretKey::generate)).
#[derive(Debug, thiserror::Error)]
#[error("the OS random number generator failed: {source}")]
pub struct RandomError {
    source: getrandom::Error,
}

impl RandomError {
    pub(crate) fn new(source: getrandom::Error) -> Self {
        Self { source }
    }
}

/// A [`PublicKey`] could not be parsed or is not an acceptable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublicKeyError {
    /// A byte slice of the wrong length was given.
    #[error("public key has the wrong length: expected {expected} bytes, got {got}")]
    ByteLength {
        /// Always 32.
        expected: usize,
        /// Length of the input in bytes.
        got: usize,
    },
    /// A string of the wrong length was given.
    #[error("public key has the wrong length: expected {expected} hex characters, got {got}")]
    HexLength {
        /// Always 64.
        expected: usize,
        /// Length of the input in characters.
        got: usize,
    },
    /// A character that is not a lowercase hex digit (`0-9a-f`). Uppercase is rejected on
    /// purpose: the text form of a key is canonical (one key, one string).
    #[error("public key is not lowercase hex: invalid character {found:?} at position {position}")]
    InvalidHex {
        /// 0-based character position of the first invalid character.
        position: usize,
        /// The invalid character.
        found: char,
    },
    /// The 32 bytes are not the encoding of any point on the Ed25519 curve.
    #[error("public key is not a point on the ed25519 curve")]
    NotOnCurve,
    /// The bytes decode to a point, but are not its canonical encoding (y ≥ p, or a sign bit
    /// on x = 0). Rejected so that every key has exactly one byte and string form.
    #[error("public key is not canonically encoded")]
    NonCanonical,
    /// The point has small order (the identity and the other 7 torsion points): a "weak" key
    /// for which signatures can be forged. `ed25519_dalek::VerifyingKey::from_bytes` accepts
    /// these (`is_weak()` is true); we reject them at parse time.
    #[error("public key is a small-order (weak) point")]
    SmallOrder,
    /// The point is not in the prime-order subgroup (it has a torsion component). No honest
    /// key generator produces such a key.
    #[error("public key is not in the prime-order subgroup (has a torsion component)")]
    MixedOrder,
}

impl PublicKeyError {
    pub(crate) fn from_hex(e: HexError) -> Self {
        match e {
            HexError::Length { expected, got } => Self::HexLength { expected, got },
            HexError::Char { position, found } => Self::InvalidHex { position, found },
        }
    }
}

/// A [`Signature`](super::Signature) could not be parsed.
///
/// Only the encoding is checked at parse time; whether the 64 bytes are a valid signature is
/// decided by [`PublicKey::verify`](super::PublicKey::verify).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// A byte slice of the wrong length was given.
    #[error("signature has the wrong length: expected {expected} bytes, got {got}")]
    ByteLength {
        /// Always 64.
        expected: usize,
        /// Length of the input in bytes.
        got: usize,
    },
    /// A string of the wrong length was given.
    #[error("signature has the wrong length: expected {expected} hex characters, got {got}")]
    HexLength {
        /// Always 128.
        expected: usize,
        /// Length of the input in characters.
        got: usize,
    },
    /// A character that is not a lowercase hex digit (`0-9a-f`).
    #[error("signature is not lowercase hex: invalid character {found:?} at position {position}")]
    InvalidHex {
        /// 0-based character position of the first invalid character.
        position: usize,
        /// The invalid character.
        found: char,
    },
}

impl SignatureError {
    pub(crate) fn from_hex(e: HexError) -> Self {
        match e {
            HexError::Length { expected, got } => Self::HexLength { expected, got },
            HexError::Char { position, found } => Self::InvalidHex { position, found },
        }
    }
}

/// A secret key could not be imported from hex.
///
/// The offending character is deliberately *not* included (it may be a typo of a secret digit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretKeyError {
    /// The string does not have 64 characters.
    #[error("secret key has the wrong length: expected {expected} hex characters, got {got}")]
    HexLength {
        /// Always 64.
        expected: usize,
        /// Length of the input in characters.
        got: usize,
    },
    /// A character that is not a hex digit (either case is accepted for secret keys).
    #[error("secret key is not hex: invalid character at position {position}")]
    InvalidHex {
        /// 0-based character position of the first invalid character.
        position: usize,
    },
}

impl SecretKeyError {
    pub(crate) fn from_hex(e: HexError) -> Self {
        match e {
            HexError::Length { expected, got } => Self::HexLength { expected, got },
            HexError::Char { position, .. } => Self::InvalidHex { position },
        }
    }
}

/// A signature did not verify: wrong key, wrong context, altered message or altered signature
/// (deliberately not distinguished).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid signature (context {context})")]
#[non_exhaustive]
pub struct VerifyError {
    /// The context the verification was attempted under.
    pub context: SigningContext,
}

/// The content of a key file is not a valid key file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyParseError {
    /// The file contains nothing but whitespace.
    #[error("the file is empty")]
    Empty,
    /// The file is not UTF-8 text.
    #[error("the file is not UTF-8 text")]
    NotUtf8,
    /// The file starts with `{` but is not a valid JSON key object.
    #[error("invalid JSON key file: {message}")]
    Json {
        /// serde_json's description (it never contains field values: all fields are strings).
        message: String,
    },
    /// The secret key (hex line, or the JSON `secret_key` field) is invalid.
    #[error("invalid secret key: {0}")]
    SecretKey(#[source] SecretKeyError),
    /// The JSON `public_key` field is invalid.
    #[error("invalid public_key field: {0}")]
    PublicKey(#[source] PublicKeyError),
}

/// Saving or loading a key file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// An I/O operation on `path` failed.
    #[error("key file {}: {source}", path.display())]
    Io {
        /// The file (or its temporary sibling, or its directory) being accessed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The destination exists and the save was not asked to replace it.
    #[error("key file {} already exists; refusing to overwrite it", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The file is larger than any key file can be.
    #[error("key file {} is larger than {max} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The size limit ([`MAX_KEY_FILE_LEN`](super::MAX_KEY_FILE_LEN)).
        max: u64,
    },
    /// The file content is not a valid key file.
    #[error("key file {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: KeyParseError,
    },
    /// A JSON key file's `public_key` does not belong to its `secret_key`.
    #[error(
        "key file {}: public_key {stored} does not match the secret key (which gives {derived})",
        path.display()
    )]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The `public_key` written in the file (boxed to keep the error small).
        stored: Box<PublicKey>,
        /// The public key of the file's `secret_key`.
        derived: Box<PublicKey>,
    },
    /// Generating a new key failed.
    #[error(transparent)]
    Random(#[from] RandomError),
}
