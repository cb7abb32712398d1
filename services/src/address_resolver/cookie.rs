//! Stateless challenge cookies: the resolver answers a `Hello` without remembering anything,
//! and recognises its own challenge when the answer comes back from the same address.
//!
//! `cookie = stamp ‖ MAC_k(stamp ‖ pk ‖ ip ‖ port)` (8 + 16 bytes), where `stamp` is
//! `ms << 16 | seq`: `ms` the issue time in milliseconds since the jar was made (tokio time, so
//! paused-time tests work) and `seq` a wrapping 16-bit counter, so two cookies for the same key
//! and address never repeat, even within one millisecond; `k` is a random 32-byte key made at
//! start-up and the MAC keyed BLAKE2s truncated to 16 bytes. A cookie is valid for `lifetime` after `t`,
//! only for the key and the source address it was issued to; so only a peer that receives at
//! its source address (not a spoofer) and answers in time gets into the handshake queue.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use blake2::Blake2sMac;
use blake2::digest::consts::U16;
use blake2::digest::{KeyInit, Mac};
use tokio::time::Instant;

use super::wire::{COOKIE_LEN, Cookie};

type CookieMac = Blake2sMac<U16>;

/// Why a cookie was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    /// Not made by this resolver for this key and address.
    #[error("challenge cookie not issued to this key and address")]
    Invalid,
    /// Older than the lifetime.
    #[error("challenge cookie expired")]
    Expired,
}

/// Mints and checks cookies.
pub struct CookieJar {
    key: [u8; 32],
    epoch: Instant,
    lifetime: Duration,
    seq: AtomicU64,
}

impl std::fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieJar")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl CookieJar {
    /// A jar with a fresh random key; cookies live `lifetime`.
    ///
    /// # Errors
    ///
    /// When the OS has no randomness to give.
    pub fn new(lifetime: Duration) -> Result<Self, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(CookieJar {
            key,
            epoch: Instant::now(),
            lifetime,
            seq: AtomicU64::new(0),
        })
    }

    /// Milliseconds since the jar was made (the cookie clock).
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn mac(&self, stamp: u64, pk: &[u8; 32], from: SocketAddr) -> CookieMac {
        // A 32-byte key is always accepted by BLAKE2s.
        let mut mac = <CookieMac as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("BLAKE2s takes 32-byte keys"));
        mac.update(&stamp.to_be_bytes());
        mac.update(pk);
        let ip = match from.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        mac.update(&ip.octets());
        mac.update(&from.port().to_be_bytes());
        mac
    }

    /// A cookie for `pk` at `from`, issued now.
    pub fn mint(&self, pk: &[u8; 32], from: SocketAddr) -> Cookie {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) & 0xffff;
        let stamp = (self.now_ms() << 16) | seq;
        let tag = self.mac(stamp, pk, from).finalize().into_bytes();
        let mut out = [0u8; COOKIE_LEN];
        out[..8].copy_from_slice(&stamp.to_be_bytes());
        out[8..].copy_from_slice(&tag);
        Cookie(out)
    }

    /// Checks that `cookie` was minted for `pk` at `from` less than the lifetime ago; returns
    /// its issue time (ms on the jar's clock). The comparison is constant-time.
    ///
    /// # Errors
    ///
    /// [`CookieError::Invalid`] or [`CookieError::Expired`].
    pub fn check(
        &self,
        cookie: &Cookie,
        pk: &[u8; 32],
        from: SocketAddr,
    ) -> Result<u64, CookieError> {
        let mut stamp = [0u8; 8];
        stamp.copy_from_slice(&cookie.0[..8]);
        let stamp = u64::from_be_bytes(stamp);
        self.mac(stamp, pk, from)
            .verify_slice(&cookie.0[8..])
            .map_err(|_| CookieError::Invalid)?;
        let t = stamp >> 16;
        let now = self.now_ms();
        let lifetime = u64::try_from(self.lifetime.as_millis()).unwrap_or(u64::MAX);
        if t > now || now - t > lifetime {
            return Err(CookieError::Expired);
        }
        Ok(t)
    }

    /// The cookie lifetime.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PK: [u8; 32] = [7; 32];

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_cookie_is_bound_to_key_address_jar_and_time() {
        let jar = CookieJar::new(Duration::from_secs(10)).unwrap();
        let from = addr("203.0.113.1:4000");
        let c = jar.mint(&PK, from);
        assert!(jar.check(&c, &PK, from).is_ok());
        assert_eq!(jar.check(&c, &[8; 32], from), Err(CookieError::Invalid));
        assert_eq!(
            jar.check(&c, &PK, addr("203.0.113.1:4001")),
            Err(CookieError::Invalid)
        );
        assert_eq!(
            jar.check(&c, &PK, addr("203.0.113.2:4000")),
            Err(CookieError::Invalid)
        );
        let other = CookieJar::new(Duration::from_secs(10)).unwrap();
        assert_eq!(other.check(&c, &PK, from), Err(CookieError::Invalid));
        // Cookies never repeat, even within one millisecond.
        assert_ne!(jar.mint(&PK, from), jar.mint(&PK, from));
        // A forged timestamp breaks the MAC.
        let mut forged = c;
        forged.0[7] ^= 1;
        assert_eq!(jar.check(&forged, &PK, from), Err(CookieError::Invalid));
        let mut forged = c;
        forged.0[23] ^= 1;
        assert_eq!(jar.check(&forged, &PK, from), Err(CookieError::Invalid));

        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(jar.check(&c, &PK, from).is_ok(), "valid up to the lifetime");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(jar.check(&c, &PK, from), Err(CookieError::Expired));
    }

    #[tokio::test(start_paused = true)]
    async fn ipv4_and_its_mapped_form_are_the_same_address() {
        let jar = CookieJar::new(Duration::from_secs(10)).unwrap();
        let c = jar.mint(&PK, addr("198.51.100.3:9"));
        assert!(jar.check(&c, &PK, addr("[::ffff:198.51.100.3]:9")).is_ok());
    }
}
