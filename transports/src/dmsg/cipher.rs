//! The AEAD cipher of a Noise channel: ChaCha20-Poly1305 or AES-256-GCM (`docs/protocol.md` §2.1,
//! §3.3). Whoever starts a handshake picks (the client for a session, the dialer for a stream),
//! and every skytower build accepts both. [`Cipher::Auto`] picks AES-GCM when this CPU has
//! hardware AES and carry-less multiplication (AES-NI + PCLMULQDQ, or ARMv8 AES + PMULL), where it
//! runs several times faster than ChaCha20-Poly1305; otherwise ChaCha20-Poly1305, which is fast
//! and constant-time in software everywhere.
//!
//! ```
//! use skytower_transports::dmsg::cipher::Cipher;
//!
//! let chosen = Cipher::Auto.resolve();
//! assert_ne!(chosen, Cipher::Auto);
//! assert_eq!(Cipher::from_wire(chosen.to_wire()), Some(chosen));
//! ```

/// A Noise cipher choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// AES-GCM when the CPU accelerates it, ChaCha20-Poly1305 otherwise.
    #[default]
    Auto,
    /// ChaCha20-Poly1305.
    ChaChaPoly,
    /// AES-256-GCM.
    AesGcm,
}

impl Cipher {
    /// The concrete cipher: [`Auto`](Cipher::Auto) resolved for this CPU.
    pub fn resolve(self) -> Cipher {
        match self {
            Cipher::Auto if hardware_aes() => Cipher::AesGcm,
            Cipher::Auto => Cipher::ChaChaPoly,
            other => other,
        }
    }

    /// The cipher's name in a Noise protocol name.
    pub fn noise_name(self) -> &'static str {
        match self.resolve() {
            Cipher::AesGcm => "AESGCM",
            _ => "ChaChaPoly",
        }
    }

    /// The wire value (0 ChaCha20-Poly1305, 1 AES-GCM).
    pub fn to_wire(self) -> u8 {
        match self.resolve() {
            Cipher::AesGcm => 1,
            _ => 0,
        }
    }

    /// From the wire value; `None` for an unknown one.
    pub fn from_wire(v: u8) -> Option<Cipher> {
        match v {
            0 => Some(Cipher::ChaChaPoly),
            1 => Some(Cipher::AesGcm),
            _ => None,
        }
    }
}

/// Whether this CPU has hardware AES and carry-less multiplication.
pub fn hardware_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Builds a Noise protocol name for `pattern` (e.g. `XK`) with `cipher`.
pub(crate) fn protocol_name(pattern: &str, cipher: Cipher) -> String {
    format!("Noise_{pattern}_25519_{}_BLAKE2s", cipher.noise_name())
}
