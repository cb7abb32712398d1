//! X25519 for snow, faster where a DMSG handshake spends its time (`docs/protocol.md` §2.2,
//! §3.3). The results are bit-for-bit those of snow's own X25519; only the cost changes:
//!
//! - **Base-point multiplications** (deriving our static public key from the private key, which
//!   snow does on every handshake, and generating ephemeral keys) use curve25519-dalek's
//!   precomputed Edwards basepoint table (`MontgomeryPoint::mul_base_clamped`, about 3× faster
//!   than the Montgomery ladder snow's default resolver runs).
//! - **The static-static DH** of a Noise KK stream handshake (`ss`, our static key with the
//!   peer's static key) is deterministic, so it is memoised per `(our public key, peer public
//!   key)` in a small process-wide table: a second stream between the same two identities skips
//!   one X25519 on each side. The table is bounded ([`MEMO_CAPACITY`] entries, allocated once),
//!   its secrets are zeroized when evicted or replaced, and only DH results with the peer's
//!   *static* key are kept: anything involving an ephemeral key is computed and forgotten, so
//!   the forward secrecy of the ephemeral exchanges is untouched.
//!
//! The other primitives (hash, AEAD, randomness) come from snow's usual resolvers (ring first,
//! then snow's defaults).
//!
//! ```
//! use skytower_transports::dmsg::dh::resolver;
//!
//! let params: snow::params::NoiseParams = "Noise_NN_25519_ChaChaPoly_BLAKE2s".parse().unwrap();
//! let mut i = snow::Builder::with_resolver(params.clone(), resolver(None, None)).build_initiator().unwrap();
//! let mut r = snow::Builder::with_resolver(params, resolver(None, None)).build_responder().unwrap();
//! let (mut msg, mut payload) = ([0u8; 128], [0u8; 128]);
//! let n = i.write_message(&[], &mut msg).unwrap();
//! r.read_message(&msg[..n], &mut payload).unwrap();
//! let n = r.write_message(&[], &mut msg).unwrap();
//! i.read_message(&msg[..n], &mut payload).unwrap();
//! assert_eq!(i.get_handshake_hash(), r.get_handshake_hash());
//! ```

use std::sync::{Mutex, OnceLock};

use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::montgomery::MontgomeryPoint;
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{BoxedCryptoResolver, CryptoResolver, DefaultResolver, FallbackResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::{Zeroize, Zeroizing};

/// Most static-static DH results remembered at once (one per pair of identities).
pub const MEMO_CAPACITY: usize = 256;

/// A snow resolver with the fast X25519 of this module.
///
/// - `local_static`: our static X25519 *public* key when the caller already knows it (a
///   skytower identity carries it: `PublicKey::noise_public`), so that snow's `set` of the
///   private key costs nothing. It must be the public key of the private key given to
///   `snow::Builder::local_private_key` (checked in debug builds); a wrong one makes every
///   handshake fail, it cannot make one succeed. `None` derives it.
/// - `remote_static`: the peer's static X25519 key when the pattern has one known in advance
///   (KK: both sides); DH results with it, from our static key, are memoised. `None` memoises
///   nothing.
pub fn resolver(
    local_static: Option<[u8; 32]>,
    remote_static: Option<[u8; 32]>,
) -> BoxedCryptoResolver {
    Box::new(Resolver {
        local_static,
        remote_static,
        others: FallbackResolver::new(
            Box::new(snow::resolvers::RingResolver),
            Box::new(DefaultResolver),
        ),
    })
}

struct Resolver {
    local_static: Option<[u8; 32]>,
    remote_static: Option<[u8; 32]>,
    others: FallbackResolver,
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        self.others.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519 {
                private: Zeroizing::new([0; 32]),
                public: [0; 32],
                is_static: false,
                known_public: self.local_static,
                remote_static: self.remote_static,
            })),
            #[allow(unreachable_patterns)]
            _ => self.others.resolve_dh(choice),
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        self.others.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        self.others.resolve_cipher(choice)
    }
}

/// Which curve25519-dalek backend this process's curve arithmetic runs on: `"avx512ifma"`,
/// `"avx2"` or `"portable"`. curve25519-dalek picks it at run time from what the CPU offers and
/// what it was built with (`--cfg curve25519_dalek_backend="avx512"`, set for this workspace in
/// `.cargo/config.toml`, makes the AVX-512 IFMA code available); this mirrors that choice so
/// benchmarks and diagnostics can report it. The IFMA code makes X25519 and ed25519
/// verification about 1.5× faster (`docs/benchmarks.md`).
///
/// ```
/// let backend = skytower_transports::dmsg::dh::curve_backend();
/// assert!(["avx512ifma", "avx2", "portable"].contains(&backend));
/// ```
#[must_use]
pub fn curve_backend() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        #[cfg(curve25519_dalek_backend = "avx512")]
        if std::arch::is_x86_feature_detected!("avx512ifma")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            return "avx512ifma";
        }
        #[cfg(not(any(curve25519_dalek_backend = "serial", curve25519_dalek_backend = "fiat")))]
        if std::arch::is_x86_feature_detected!("avx2") {
            return "avx2";
        }
    }
    "portable"
}

/// One X25519 key pair in a handshake (ours: static or ephemeral).
struct X25519 {
    private: Zeroizing<[u8; 32]>,
    public: [u8; 32],
    /// Set through `set` (a static key) rather than `generate` (an ephemeral one).
    is_static: bool,
    /// The public key of the private key `set` will receive, if known.
    known_public: Option<[u8; 32]>,
    remote_static: Option<[u8; 32]>,
}

impl X25519 {
    fn derive_public(&mut self) {
        self.public = MontgomeryPoint::mul_base_clamped(*self.private).to_bytes();
    }

    /// X25519(our private key, `remote`): the u-coordinate of [clamp(k)]P for the point P with
    /// u-coordinate `remote`. For points on the curve (every honest key) this goes through the
    /// Edwards form, where curve25519-dalek's variable-base multiplication is much cheaper than
    /// the Montgomery ladder (on our EPYC with the AVX-512 IFMA backend, `.cargo/config.toml`:
    /// 22 µs against 35 µs; ~8 % with AVX2 only; a stream open does 6 of them); points on the twist
    /// (and u = -1) take the ladder, which RFC 7748 defines for them. Both paths are
    /// constant-time in the secret; which one runs depends only on the public `remote`. The
    /// results are identical (tested against the ladder on curve, twist and low-order points).
    fn shared(&self, remote: [u8; 32]) -> Zeroizing<[u8; 32]> {
        let shared = match edwards_form(remote) {
            Some(edwards) => edwards.mul_clamped(*self.private).to_montgomery(),
            None => MontgomeryPoint(remote).mul_clamped(*self.private),
        };
        Zeroizing::new(shared.to_bytes())
    }
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        32
    }

    fn priv_len(&self) -> usize {
        32
    }

    fn set(&mut self, privkey: &[u8]) {
        let n = privkey.len().min(32);
        self.private.zeroize();
        self.private[..n].copy_from_slice(&privkey[..n]);
        self.is_static = true;
        match self.known_public {
            Some(public) => {
                self.public = public;
                debug_assert_eq!(
                    public,
                    MontgomeryPoint::mul_base_clamped(*self.private).to_bytes(),
                    "known static public key does not match the private key"
                );
            }
            None => self.derive_public(),
        }
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        rng.try_fill_bytes(&mut self.private[..])?;
        self.is_static = false;
        self.derive_public();
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        &self.private[..]
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let remote: [u8; 32] = pubkey
            .get(..32)
            .and_then(|k| k.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        let shared = if self.is_static && self.remote_static == Some(remote) {
            memo_get_or_insert(self.public, remote, || self.shared(remote))
        } else {
            self.shared(remote)
        };
        out.get_mut(..32)
            .ok_or(snow::Error::Dh)?
            .copy_from_slice(&shared[..]);
        Ok(())
    }
}

/// Remote keys whose Edwards form this thread remembers ([`edwards_form`]).
const POINT_CACHE: usize = 8;

/// A remote key and its Edwards form (`None`: not on the curve).
type CachedPoint = ([u8; 32], Option<EdwardsPoint>);

thread_local! {
    /// The last few remote keys this thread multiplied, with their Edwards forms (`None`: not
    /// on the curve). Public data only, compared in full; a pure function of the key bytes.
    static POINTS: std::cell::RefCell<[Option<CachedPoint>; POINT_CACHE]> =
        const { std::cell::RefCell::new([None; POINT_CACHE]) };
    /// Where the next new entry of [`POINTS`] goes (round robin).
    static POINTS_NEXT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The Edwards form of the Montgomery point `remote` (`None` if it is not on the curve), from
/// a small per-thread cache. Decompressing costs a square root (~6 µs), and a stream handshake
/// multiplies each remote key more than once: both sides use the peer's ephemeral key twice
/// (`es`/`se` and `ee`, one right after the other) and the peer's static key on every stream,
/// so this turns six decompressions per stream open into two.
fn edwards_form(remote: [u8; 32]) -> Option<EdwardsPoint> {
    let cached = POINTS.with_borrow(|points| {
        points
            .iter()
            .flatten()
            .find(|(key, _)| *key == remote)
            .map(|(_, point)| *point)
    });
    if let Some(point) = cached {
        return point;
    }
    let point = MontgomeryPoint(remote).to_edwards(0);
    let slot = POINTS_NEXT.get();
    POINTS_NEXT.set((slot + 1) % POINT_CACHE);
    POINTS.with_borrow_mut(|points| points[slot] = Some((remote, point)));
    point
}

/// `(our public key, their public key)`.
type Pair = ([u8; 32], [u8; 32]);

/// The static-static DH results: `(our public, their public) → shared secret`, at most
/// `capacity` of them, in a fixed table of slots (direct-mapped by a keyed hash of the pair).
/// The table is allocated once and never moves, so a secret only ever lives in its slot and is
/// zeroized when replaced or dropped; a collision just replaces the older entry.
struct Memo {
    slots: Vec<Option<(Pair, Zeroizing<[u8; 32]>)>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Memo {
    fn new(capacity: usize) -> Memo {
        let mut slots = Vec::with_capacity(capacity.max(1));
        slots.resize_with(capacity.max(1), || None);
        Memo {
            slots,
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn slot(&self, key: &Pair) -> usize {
        use std::hash::BuildHasher;
        // Keyed (random per process), so peers cannot aim their keys at one slot.
        (self.hasher.hash_one(key) % self.slots.len() as u64) as usize
    }

    fn get(&self, key: &Pair) -> Option<Zeroizing<[u8; 32]>> {
        match &self.slots[self.slot(key)] {
            Some((k, shared)) if k == key => Some(shared.clone()),
            _ => None,
        }
    }

    fn insert(&mut self, key: Pair, shared: Zeroizing<[u8; 32]>) {
        let i = self.slot(&key);
        // The previous entry (if any) is dropped here: its secret is zeroized.
        self.slots[i] = Some((key, shared));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    #[cfg(test)]
    fn keys(&self) -> Vec<Pair> {
        self.slots.iter().flatten().map(|(k, _)| *k).collect()
    }
}

fn memo() -> &'static Mutex<Memo> {
    static MEMO: OnceLock<Mutex<Memo>> = OnceLock::new();
    MEMO.get_or_init(|| Mutex::new(Memo::new(MEMO_CAPACITY)))
}

fn memo_get_or_insert(
    ours: [u8; 32],
    theirs: [u8; 32],
    compute: impl FnOnce() -> Zeroizing<[u8; 32]>,
) -> Zeroizing<[u8; 32]> {
    let key = (ours, theirs);
    if let Some(shared) = memo().lock().ok().and_then(|m| m.get(&key)) {
        return shared;
    }
    // Computed outside the lock (tens of µs). A poisoned lock only disables the memo.
    let shared = compute();
    if let Ok(mut memo) = memo().lock() {
        memo.insert(key, shared.clone());
    }
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    const KK: &str = "Noise_KK_25519_ChaChaPoly_BLAKE2s";

    struct Keys {
        private: [u8; 32],
        public: [u8; 32],
    }

    fn keypair() -> Keys {
        let kp = snow::Builder::new(KK.parse().unwrap())
            .generate_keypair()
            .unwrap();
        Keys {
            private: kp.private.try_into().unwrap(),
            public: kp.public.try_into().unwrap(),
        }
    }

    /// `me`'s side of KK with `remote` as the peer's static key, through `resolver` (snow's
    /// own when `None`).
    fn kk_side(
        resolver: Option<BoxedCryptoResolver>,
        me: &Keys,
        remote: &[u8; 32],
        initiator: bool,
    ) -> snow::HandshakeState {
        let params: snow::params::NoiseParams = KK.parse().unwrap();
        let builder = match resolver {
            Some(r) => snow::Builder::with_resolver(params, r),
            None => snow::Builder::new(params),
        }
        .local_private_key(&me.private)
        .unwrap()
        .remote_public_key(remote)
        .unwrap();
        if initiator {
            builder.build_initiator()
        } else {
            builder.build_responder()
        }
        .unwrap()
    }

    /// Runs KK between `a` (initiator) and `b`, each side with either resolver; returns both
    /// handshake hashes and a transport message from a to b decrypted by b.
    fn kk(a: &Keys, b: &Keys, fast_a: bool, fast_b: bool) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let fast = |yes: bool, peer: &Keys| yes.then(|| resolver(None, Some(peer.public)));
        let mut i = kk_side(fast(fast_a, b), a, &b.public, true);
        let mut r = kk_side(fast(fast_b, a), b, &a.public, false);
        let (mut msg, mut payload) = ([0u8; 256], [0u8; 256]);
        let n = i.write_message(b"one", &mut msg).unwrap();
        r.read_message(&msg[..n], &mut payload).unwrap();
        let n = r.write_message(b"two", &mut msg).unwrap();
        i.read_message(&msg[..n], &mut payload).unwrap();
        let (hi, hr) = (
            i.get_handshake_hash().to_vec(),
            r.get_handshake_hash().to_vec(),
        );
        let mut ti = i.into_transport_mode().unwrap();
        let mut tr = r.into_transport_mode().unwrap();
        let n = ti.write_message(b"transport", &mut msg).unwrap();
        let m = tr.read_message(&msg[..n], &mut payload).unwrap();
        (hi, hr, payload[..m].to_vec())
    }

    #[test]
    fn interoperates_with_snows_own_x25519_in_every_combination() {
        let (a, b) = (keypair(), keypair());
        for (fa, fb) in [(true, true), (true, false), (false, true), (false, false)] {
            let (hi, hr, got) = kk(&a, &b, fa, fb);
            assert_eq!(hi, hr, "fast a {fa}, fast b {fb}");
            assert_eq!(got, b"transport");
        }
    }

    #[test]
    fn public_keys_and_dh_match_the_montgomery_ladder() {
        let k = keypair();
        let mut dh = X25519 {
            private: Zeroizing::new([0; 32]),
            public: [0; 32],
            is_static: false,
            known_public: None,
            remote_static: None,
        };
        dh.set(&k.private);
        assert_eq!(dh.pubkey(), k.public);
        let peer = keypair();
        let mut out = [0u8; 32];
        dh.dh(&peer.public, &mut out).unwrap();
        let expected = MontgomeryPoint(peer.public)
            .mul_clamped(k.private)
            .to_bytes();
        assert_eq!(out, expected);
        // A short public key is a DH error, not a panic.
        assert!(matches!(dh.dh(&[9u8; 31], &mut out), Err(snow::Error::Dh)));
    }

    fn dh_with(private: [u8; 32]) -> X25519 {
        X25519 {
            private: Zeroizing::new(private),
            public: [0; 32],
            is_static: false,
            known_public: None,
            remote_static: None,
        }
    }

    #[test]
    fn shared_secrets_equal_the_ladder_for_curve_twist_and_edge_points() {
        let mut remotes: Vec<[u8; 32]> = Vec::new();
        // Honest keys (on the curve) and arbitrary strings (about half on the twist).
        for _ in 0..64 {
            remotes.push(keypair().public);
            let mut r = [0u8; 32];
            getrandom::fill(&mut r).unwrap();
            remotes.push(r);
        }
        // Edge cases (little-endian u): 0, 1, p - 1 (= -1, the exceptional point), p
        // (non-canonical 0), p + 1, 2^255 - 1, two order-8 points, each also with the top bit
        // (which X25519 ignores) set.
        let mut le = |last: u8, first: u8, fill: u8| {
            let mut u = [fill; 32];
            u[0] = first;
            u[31] = last;
            remotes.push(u);
            u[31] |= 0x80;
            remotes.push(u);
        };
        le(0, 0, 0);
        le(0, 1, 0);
        le(0x7f, 0xec, 0xff);
        le(0x7f, 0xed, 0xff);
        le(0x7f, 0xee, 0xff);
        le(0x7f, 0xff, 0xff);
        for order8 in [
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
            "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        ] {
            let mut u = [0u8; 32];
            for (i, b) in u.iter_mut().enumerate() {
                *b = u8::from_str_radix(&order8[2 * i..2 * i + 2], 16).unwrap();
            }
            remotes.push(u);
            u[31] |= 0x80;
            remotes.push(u);
        }
        let on_curve = remotes
            .iter()
            .filter(|r| MontgomeryPoint(**r).to_edwards(0).is_some())
            .count();
        assert!(on_curve > 64 && on_curve < remotes.len(), "{on_curve}");
        for _ in 0..8 {
            let mut private = [0u8; 32];
            getrandom::fill(&mut private).unwrap();
            let dh = dh_with(private);
            for remote in &remotes {
                let ladder = MontgomeryPoint(*remote).mul_clamped(private).to_bytes();
                assert_eq!(*dh.shared(*remote), ladder, "remote {remote:02x?}");
            }
        }
    }

    #[test]
    fn cached_edwards_forms_give_the_ladders_results() {
        // Each remote key used by several private keys in a row (cache hits), interleaved with
        // more keys than the cache holds (evictions), on and off the curve.
        let mut remotes: Vec<[u8; 32]> = (0..3 * POINT_CACHE).map(|_| keypair().public).collect();
        let mut twist = [0u8; 32];
        while MontgomeryPoint(twist).to_edwards(0).is_some() {
            getrandom::fill(&mut twist).unwrap();
        }
        remotes.insert(POINT_CACHE / 2, twist);
        let privates: Vec<[u8; 32]> = (0..3).map(|_| keypair().private).collect();
        for round in 0..2 {
            for remote in &remotes {
                for private in &privates {
                    let ladder = MontgomeryPoint(*remote).mul_clamped(*private).to_bytes();
                    let dh = dh_with(*private);
                    assert_eq!(*dh.shared(*remote), ladder, "round {round}");
                }
                let cached = POINTS.with_borrow(|p| p.iter().flatten().any(|(k, _)| k == remote));
                assert!(cached, "the last remote key is cached");
            }
        }
        // The cache keeps its size, whatever went through it.
        let entries = POINTS.with_borrow(|p| p.iter().flatten().count());
        assert_eq!(entries, POINT_CACHE);
    }

    #[test]
    fn shared_secret_matches_rfc_7748() {
        // RFC 7748 §5.2, first test vector (byte strings as printed there).
        let bytes = |hex: &str| {
            let mut out = [0u8; 32];
            for (i, b) in out.iter_mut().enumerate() {
                *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
            }
            out
        };
        let scalar = bytes("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
        let u = bytes("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c");
        let expected = bytes("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
        assert_eq!(*dh_with(scalar).shared(u), expected);
    }

    #[test]
    fn only_static_static_results_are_memoised_and_they_are_right() {
        let (a, b) = (keypair(), keypair());
        let first = kk(&a, &b, true, true);
        let entry = |ours: [u8; 32], theirs: [u8; 32]| memo().lock().unwrap().get(&(ours, theirs));
        // Each side memoised the pair's static-static secret: the same secret, and the right one.
        let expected = MontgomeryPoint(b.public).mul_clamped(a.private).to_bytes();
        assert_eq!(entry(a.public, b.public).as_deref(), Some(&expected));
        assert_eq!(entry(b.public, a.public).as_deref(), Some(&expected));
        // Nothing keyed by either side's ephemeral keys: every entry with `a` as ours is for `b`.
        let keys = memo().lock().unwrap().keys();
        assert!(
            keys.iter()
                .filter(|(ours, _)| *ours == a.public)
                .all(|(_, theirs)| *theirs == b.public)
        );
        // Memoised handshakes still agree with a side that computes everything.
        let (hi, hr, got) = kk(&a, &b, true, false);
        assert_eq!(hi, hr);
        assert_eq!(got, b"transport");
        // Fresh ephemerals: the handshake hash differs from the first run.
        assert_ne!(first.0, hi);
    }

    #[test]
    fn the_memo_is_bounded_and_replaces_entries() {
        let mut memo = Memo::new(8);
        let ours = [1u8; 32];
        for i in 0..40u8 {
            memo.insert((ours, [i; 32]), Zeroizing::new([i; 32]));
            assert!(memo.len() <= 8);
            // The newest entry is always there, with its own secret.
            assert_eq!(memo.get(&(ours, [i; 32])).as_deref(), Some(&[i; 32]));
        }
        // Every entry still held maps to its own secret, never another pair's.
        for (o, t) in memo.keys() {
            assert_eq!(memo.get(&(o, t)).as_deref(), Some(&t));
        }
        assert_eq!(memo.get(&(ours, [200; 32])), None);
    }

    #[test]
    fn a_wrong_remote_static_is_not_memoised_under_the_right_key() {
        // The memo key includes the peer's public key: a handshake against another key computes
        // (and fails) rather than reusing the pair's secret.
        let (a, b, c) = (keypair(), keypair(), keypair());
        let _ = kk(&a, &b, true, true);
        // a believes it talks to b, but c answers with its own static key.
        let a_memo = resolver(Some(a.public), Some(b.public));
        let mut i = kk_side(Some(a_memo), &a, &b.public, true);
        let mut r = kk_side(Some(resolver(None, Some(a.public))), &c, &a.public, false);
        let (mut msg, mut payload) = ([0u8; 256], [0u8; 256]);
        let n = i.write_message(&[], &mut msg).unwrap();
        assert!(r.read_message(&msg[..n], &mut payload).is_err());
    }
}
