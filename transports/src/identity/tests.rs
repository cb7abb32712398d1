use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use curve25519_dalek::MontgomeryPoint;
use curve25519_dalek::edwards::CompressedEdwardsY;

use super::*;

/// RFC 8032 §7.1 TEST 1.
const RFC8032_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
/// X25519 public key of the RFC 8032 TEST 1 key under the birational map.
const RFC8032_X25519_PUBLIC: &str =
    "d85e07ec22b0ad881537c2f44d662d1a143cf830c57aca4305d85c7a90f6b62e";
/// libsodium test/default/ed25519_convert.{c,exp}.
const SODIUM_SEED: &str = "421151a459faeade3d247115f94aedae42318124095afabe4d1451a559faedee";
const SODIUM_X25519_PUBLIC: &str =
    "f1814f0e8ff1043d8a44d25babff3cedcae6c22c3edaa48f857ae70de2baae50";
/// libsodium's `crypto_sign_ed25519_sk_to_curve25519` output (already clamped).
const SODIUM_X25519_SECRET_CLAMPED: &str =
    "8052030376d47112be7f73ed7a019293dd12ad910b654455798b4667d73de166";

/// 32 bytes that are not the y-coordinate of any curve point (y = 2).
const OFF_CURVE: [u8; 32] = {
    let mut b = [0u8; 32];
    b[0] = 2;
    b
};

fn key(seed_hex: &str) -> SecretKey {
    SecretKey::from_hex(seed_hex).unwrap()
}

fn bytes32(hex_str: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_into(hex_str, &mut out, hex::Case::Lower).unwrap();
    out
}

fn clamp(mut b: [u8; 32]) -> [u8; 32] {
    b[0] &= 248;
    b[31] &= 127;
    b[31] |= 64;
    b
}

// ---------------------------------------------------------------------------------------------
// SecretKey

#[test]
fn generate_gives_distinct_keys_with_matching_public_keys() {
    let a = SecretKey::generate().unwrap();
    let b = SecretKey::generate().unwrap();
    assert_ne!(a.public_key(), b.public_key());
    assert_ne!(*a.to_hex(), *b.to_hex());
    // The public key is a pure function of the seed.
    assert_eq!(
        SecretKey::from_hex(&a.to_hex()).unwrap().public_key(),
        a.public_key()
    );
}

#[test]
fn secret_hex_is_standard_ed25519_seed() {
    let sk = key(RFC8032_SEED);
    assert_eq!(sk.public_key().to_string(), RFC8032_PUBLIC);
    assert_eq!(sk.to_hex().as_str(), RFC8032_SEED);
}

#[test]
fn secret_from_hex_accepts_uppercase_and_exports_lowercase() {
    let sk = key(&RFC8032_SEED.to_uppercase());
    assert_eq!(sk.to_hex().as_str(), RFC8032_SEED);
}

#[test]
fn secret_from_hex_errors_give_length_and_position_but_never_the_char() {
    assert_eq!(
        SecretKey::from_hex(&RFC8032_SEED[..63]).unwrap_err(),
        SecretKeyError::HexLength {
            expected: 64,
            got: 63
        }
    );
    assert_eq!(
        SecretKey::from_hex(&format!("{RFC8032_SEED}0")).unwrap_err(),
        SecretKeyError::HexLength {
            expected: 64,
            got: 65
        }
    );
    let mut bad = RFC8032_SEED.to_string();
    bad.replace_range(10..11, "q");
    let err = SecretKey::from_hex(&bad).unwrap_err();
    assert_eq!(err, SecretKeyError::InvalidHex { position: 10 });
    assert!(!err.to_string().contains('q'), "{err}");
    // Surrounding whitespace is the key file loader's job, not from_hex's.
    assert_eq!(
        SecretKey::from_hex(&format!(" {}", &RFC8032_SEED[1..])).unwrap_err(),
        SecretKeyError::InvalidHex { position: 0 }
    );
}

#[test]
fn secret_debug_is_redacted() {
    let sk = key(RFC8032_SEED);
    let debug = format!("{sk:?}");
    assert!(!debug.contains(RFC8032_SEED), "{debug}");
    assert!(!debug.contains(&RFC8032_SEED[..16]), "{debug}");
    // It still identifies the key by its public half.
    assert!(debug.contains(RFC8032_PUBLIC), "{debug}");
    let noise = format!("{:?}", sk.noise_secret());
    assert_eq!(noise, "NoiseSecret(<redacted>)");
}

// ---------------------------------------------------------------------------------------------
// PublicKey encoding

#[test]
fn public_key_display_from_str_round_trip_is_lowercase() {
    let pk = SecretKey::generate().unwrap().public_key();
    let text = pk.to_string();
    assert_eq!(text.len(), 64);
    assert!(text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    assert_eq!(text.parse::<PublicKey>().unwrap(), pk);
    assert_eq!(format!("{pk:?}"), format!("PublicKey({text})"));
    // Width/fill are honoured (pad), e.g. for tables.
    assert_eq!(format!("{pk:>66}"), format!("  {text}"));
}

#[test]
fn public_key_from_str_rejects_uppercase_with_position_and_char() {
    let upper = RFC8032_PUBLIC.replacen('a', "A", 1);
    let position = RFC8032_PUBLIC.find('a').unwrap();
    assert_eq!(
        upper.parse::<PublicKey>().unwrap_err(),
        PublicKeyError::InvalidHex {
            position,
            found: 'A'
        }
    );
    let err = format!("{}g", &RFC8032_PUBLIC[..63])
        .parse::<PublicKey>()
        .unwrap_err();
    assert_eq!(
        err,
        PublicKeyError::InvalidHex {
            position: 63,
            found: 'g'
        }
    );
    assert!(err.to_string().contains("position 63"), "{err}");
}

#[test]
fn public_key_wrong_lengths_report_expected_and_got() {
    let err = RFC8032_PUBLIC[..62].parse::<PublicKey>().unwrap_err();
    assert_eq!(
        err,
        PublicKeyError::HexLength {
            expected: 64,
            got: 62
        }
    );
    assert!(err.to_string().contains("expected 64"), "{err}");
    assert_eq!(
        "".parse::<PublicKey>().unwrap_err(),
        PublicKeyError::HexLength {
            expected: 64,
            got: 0
        }
    );
    assert_eq!(
        PublicKey::from_slice(&[7u8; 33]).unwrap_err(),
        PublicKeyError::ByteLength {
            expected: 32,
            got: 33
        }
    );
    let pk = key(RFC8032_SEED).public_key();
    assert_eq!(PublicKey::from_slice(pk.as_bytes()).unwrap(), pk);
    assert_eq!(PublicKey::try_from(pk.to_bytes()).unwrap(), pk);
}

#[test]
fn public_key_rejects_bytes_that_are_not_a_curve_point() {
    // ed25519-dalek agrees it does not decompress.
    assert!(ed25519_dalek::VerifyingKey::from_bytes(&OFF_CURVE).is_err());
    assert_eq!(
        PublicKey::from_bytes(&OFF_CURVE).unwrap_err(),
        PublicKeyError::NotOnCurve
    );
    let text = "02".to_string() + &"0".repeat(62);
    assert_eq!(
        text.parse::<PublicKey>().unwrap_err(),
        PublicKeyError::NotOnCurve
    );
}

#[test]
fn public_key_rejects_small_order_points_that_dalek_accepts() {
    let identity = {
        let mut b = [0u8; 32];
        b[0] = 1;
        b
    };
    // y = -1 (= p - 1): the point (0, -1) of order 2.
    let order_two = bytes32("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
    let order_eight = curve25519_dalek::constants::EIGHT_TORSION[1]
        .compress()
        .to_bytes();
    for bytes in [identity, order_two, order_eight] {
        // VerifyingKey::from_bytes accepts them; only is_weak() tells.
        let dalek = ed25519_dalek::VerifyingKey::from_bytes(&bytes).unwrap();
        assert!(dalek.is_weak());
        assert_eq!(
            PublicKey::from_bytes(&bytes).unwrap_err(),
            PublicKeyError::SmallOrder,
            "{bytes:02x?}"
        );
    }
}

#[test]
fn public_key_rejects_mixed_order_points() {
    // A real key plus an order-8 point: decompresses, is not weak, but has a torsion component.
    let a = CompressedEdwardsY(*key(RFC8032_SEED).public_key().as_bytes())
        .decompress()
        .unwrap();
    let mixed = (a + curve25519_dalek::constants::EIGHT_TORSION[1])
        .compress()
        .to_bytes();
    let dalek = ed25519_dalek::VerifyingKey::from_bytes(&mixed).unwrap();
    assert!(!dalek.is_weak());
    assert_eq!(
        PublicKey::from_bytes(&mixed).unwrap_err(),
        PublicKeyError::MixedOrder
    );
    // y = 3 happens to be such a point too.
    let mut y3 = [0u8; 32];
    y3[0] = 3;
    assert_eq!(
        PublicKey::from_bytes(&y3).unwrap_err(),
        PublicKeyError::MixedOrder
    );
}

#[test]
fn public_key_rejects_non_canonical_encodings() {
    // y = p + 3 encodes the same y as 3 (ZIP-215 decompression accepts it).
    let y_over_p = bytes32("f0ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
    assert!(ed25519_dalek::VerifyingKey::from_bytes(&y_over_p).is_ok());
    assert_eq!(
        PublicKey::from_bytes(&y_over_p).unwrap_err(),
        PublicKeyError::NonCanonical
    );
    // Sign bit set on x = 0 (a "negative zero" identity).
    let mut neg_zero = [0u8; 32];
    neg_zero[0] = 1;
    neg_zero[31] = 0x80;
    assert_eq!(
        PublicKey::from_bytes(&neg_zero).unwrap_err(),
        PublicKeyError::NonCanonical
    );
}

#[test]
fn public_key_eq_ord_hash_follow_bytes() {
    let keys: Vec<PublicKey> = (0..16)
        .map(|_| SecretKey::generate().unwrap().public_key())
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    let mut by_bytes = keys.clone();
    by_bytes.sort_by_key(|k| k.to_bytes());
    assert_eq!(sorted, by_bytes);
    // Lowercase hex of big-endian-compared bytes sorts the same as the bytes.
    let mut strings: Vec<String> = keys.iter().map(ToString::to_string).collect();
    strings.sort();
    assert_eq!(
        strings,
        sorted.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    let copy = keys[0];
    let reparsed: PublicKey = keys[0].to_string().parse().unwrap();
    let set: HashSet<PublicKey> = [copy, reparsed, keys[1]].into_iter().collect();
    assert_eq!(set.len(), 2);
    let tree: BTreeSet<PublicKey> = keys.iter().copied().chain(keys.iter().copied()).collect();
    assert_eq!(tree.len(), 16);
}

#[test]
fn public_key_serde_is_the_hex_string() {
    let pk = key(RFC8032_SEED).public_key();
    let json = serde_json::to_string(&pk).unwrap();
    assert_eq!(json, format!("\"{RFC8032_PUBLIC}\""));
    assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), pk);
    // Errors surface the typed error's message.
    let err = serde_json::from_str::<PublicKey>(&format!("\"{}\"", RFC8032_PUBLIC.to_uppercase()))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid character 'D' at position 0"),
        "{err}"
    );
    let err = serde_json::from_str::<PublicKey>("[1,2,3]").unwrap_err();
    assert!(
        err.to_string().contains("64-character lowercase hex"),
        "{err}"
    );
    let weak = format!("\"01{}\"", "0".repeat(62));
    let err = serde_json::from_str::<PublicKey>(&weak).unwrap_err();
    assert!(err.to_string().contains("small-order"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Signature encoding

#[test]
fn signature_display_from_str_serde_round_trip() {
    let sig = key(RFC8032_SEED).sign(contexts::DMSG_ENTRY, b"hello");
    let text = sig.to_string();
    assert_eq!(text.len(), 128);
    assert_eq!(text, text.to_lowercase());
    assert_eq!(text.parse::<Signature>().unwrap(), sig);
    let json = serde_json::to_string(&sig).unwrap();
    assert_eq!(json, format!("\"{text}\""));
    assert_eq!(serde_json::from_str::<Signature>(&json).unwrap(), sig);
    assert_eq!(Signature::from_slice(sig.as_bytes()).unwrap(), sig);
    assert_eq!(Signature::from(sig.to_bytes()), sig);
}

#[test]
fn signature_parse_errors_are_typed() {
    assert_eq!(
        "ab".parse::<Signature>().unwrap_err(),
        SignatureError::HexLength {
            expected: 128,
            got: 2
        }
    );
    let mut text = "0".repeat(128);
    text.replace_range(5..6, "Z");
    assert_eq!(
        text.parse::<Signature>().unwrap_err(),
        SignatureError::InvalidHex {
            position: 5,
            found: 'Z'
        }
    );
    assert_eq!(
        Signature::from_slice(&[0u8; 63]).unwrap_err(),
        SignatureError::ByteLength {
            expected: 64,
            got: 63
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Signing contexts and signatures

#[test]
fn signed_bytes_layout_is_prefix_length_context_message() {
    let ctx = SigningContext::new("ab");
    assert_eq!(ctx.signed_bytes(b"c"), b"skytower/v1\x02abc".to_vec());
    let other = SigningContext::new("a");
    assert_eq!(other.signed_bytes(b"bc"), b"skytower/v1\x01abc".to_vec());
    // The signature is a plain Ed25519 signature over exactly those bytes.
    let sk = key(RFC8032_SEED);
    let sig = sk.sign(ctx, b"c");
    let dalek_key = ed25519_dalek::VerifyingKey::from_bytes(&bytes32(RFC8032_PUBLIC)).unwrap();
    dalek_key
        .verify_strict(
            b"skytower/v1\x02abc",
            &ed25519_dalek::Signature::from_bytes(sig.as_bytes()),
        )
        .unwrap();
}

#[test]
fn length_prefix_separates_context_from_message() {
    let sk = key(RFC8032_SEED);
    let pk = sk.public_key();
    let ab = SigningContext::new("ab");
    let a = SigningContext::new("a");
    let sig = sk.sign(ab, b"c");
    pk.verify(ab, b"c", &sig).unwrap();
    assert_eq!(
        pk.verify(a, b"bc", &sig).unwrap_err(),
        VerifyError { context: a }
    );
}

#[test]
fn signature_for_one_context_never_verifies_under_another() {
    let sk = SecretKey::generate().unwrap();
    let pk = sk.public_key();
    let msg = b"a signed structure";
    for &signed_under in contexts::ALL {
        let sig = sk.sign(signed_under, msg);
        for &checked_under in contexts::ALL {
            let result = pk.verify(checked_under, msg, &sig);
            if signed_under == checked_under {
                assert_eq!(result, Ok(()));
            } else {
                assert_eq!(
                    result,
                    Err(VerifyError {
                        context: checked_under
                    })
                );
            }
        }
    }
}

#[test]
fn registry_contexts_are_distinct_and_named() {
    let names: HashSet<&str> = contexts::ALL.iter().map(SigningContext::as_str).collect();
    assert_eq!(names.len(), contexts::ALL.len());
    assert!(contexts::ALL.len() >= 2);
    assert_eq!(contexts::DMSG_ENTRY.as_str(), "dmsg-discovery/entry");
    assert_eq!(contexts::DMSG_ENTRY.to_string(), "dmsg-discovery/entry");
}

#[test]
#[should_panic(expected = "a-z 0-9")]
fn signing_context_rejects_bad_characters() {
    let _ = SigningContext::new("Upper Case");
}

#[test]
#[should_panic(expected = "1..=255")]
fn signing_context_rejects_empty_name() {
    let _ = SigningContext::new("");
}

#[test]
fn tampered_message_signature_or_key_fail_with_typed_error() {
    let sk = SecretKey::generate().unwrap();
    let pk = sk.public_key();
    let ctx = contexts::TRANSPORT_ENTRY;
    let msg = b"edge a->b".to_vec();
    let sig = sk.sign(ctx, &msg);
    pk.verify(ctx, &msg, &sig).unwrap();
    // Deterministic signing.
    assert_eq!(sk.sign(ctx, &msg), sig);

    let expected = Err(VerifyError { context: ctx });
    for i in 0..msg.len() {
        let mut m = msg.clone();
        m[i] ^= 0x01;
        assert_eq!(pk.verify(ctx, &m, &sig), expected);
    }
    assert_eq!(pk.verify(ctx, b"edge a->b ", &sig), expected);
    assert_eq!(pk.verify(ctx, b"", &sig), expected);
    for i in [0, 31, 32, 63] {
        let mut s = sig.to_bytes();
        s[i] ^= 0x01;
        assert_eq!(pk.verify(ctx, &msg, &Signature::from_bytes(s)), expected);
    }
    let other = SecretKey::generate().unwrap().public_key();
    let err = other.verify(ctx, &msg, &sig).unwrap_err();
    assert_eq!(err, VerifyError { context: ctx });
    assert!(
        err.to_string().contains("transport-discovery/entry"),
        "{err}"
    );
}

#[test]
fn malleated_signature_with_s_plus_l_is_rejected() {
    // l = 2^252 + 27742317777372353535851937790883648493, little endian.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let sk = key(SODIUM_SEED);
    let pk = sk.public_key();
    let ctx = contexts::SERVICE_ENTRY;
    let sig = sk.sign(ctx, b"m");
    let mut bytes = sig.to_bytes();
    let mut carry = 0u16;
    for (s, l) in bytes[32..].iter_mut().zip(L) {
        let sum = u16::from(*s) + u16::from(l) + carry;
        *s = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
    // s + l < 2^256 still satisfies the group equation; only the canonical-s check rejects it.
    assert_eq!(
        pk.verify(ctx, b"m", &Signature::from_bytes(bytes)),
        Err(VerifyError { context: ctx })
    );
}

// ---------------------------------------------------------------------------------------------
// Noise (X25519) keys

#[test]
fn noise_keys_match_libsodium_and_rfc8032_vectors() {
    let sk = key(SODIUM_SEED);
    assert_eq!(
        sk.public_key().noise_public(),
        bytes32(SODIUM_X25519_PUBLIC)
    );
    assert_eq!(
        clamp(*sk.noise_secret().as_bytes()),
        bytes32(SODIUM_X25519_SECRET_CLAMPED)
    );
    let rfc = key(RFC8032_SEED).public_key();
    assert_eq!(rfc.noise_public(), bytes32(RFC8032_X25519_PUBLIC));
}

#[test]
fn derived_noise_secret_has_the_derived_noise_public() {
    for _ in 0..8 {
        let sk = SecretKey::generate().unwrap();
        let x_public = MontgomeryPoint::mul_base_clamped(*sk.noise_secret().as_bytes());
        assert_eq!(x_public.to_bytes(), sk.public_key().noise_public());
        assert!(sk.public_key().matches_noise_key(x_public.as_bytes()));
    }
}

#[test]
fn diffie_hellman_between_two_identities_agrees_both_ways() {
    let alice = SecretKey::generate().unwrap();
    let bob = SecretKey::generate().unwrap();
    // Each side only needs the other's address.
    let ab = MontgomeryPoint(bob.public_key().noise_public())
        .mul_clamped(*alice.noise_secret().as_bytes());
    let ba = MontgomeryPoint(alice.public_key().noise_public())
        .mul_clamped(*bob.noise_secret().as_bytes());
    assert_eq!(ab, ba);
    assert_ne!(ab.to_bytes(), [0u8; 32]);
    let carol = SecretKey::generate().unwrap();
    let ac = MontgomeryPoint(carol.public_key().noise_public())
        .mul_clamped(*alice.noise_secret().as_bytes());
    assert_ne!(ab, ac);
}

#[test]
fn negated_key_maps_to_the_same_noise_key_but_another_key_does_not() {
    let pk = key(RFC8032_SEED).public_key();
    // Flipping the sign bit of x gives -A: a different, valid identity.
    let mut neg = pk.to_bytes();
    neg[31] ^= 0x80;
    let neg = PublicKey::from_bytes(&neg).unwrap();
    assert_ne!(neg, pk);
    // The Montgomery map forgets the sign: A and -A share an X25519 key (documented caveat;
    // this is why only the claimed identity is mapped forward and compared).
    assert_eq!(neg.noise_public(), pk.noise_public());
    assert!(neg.matches_noise_key(&pk.noise_public()));
    // Any unrelated identity does not match.
    let other = SecretKey::generate().unwrap().public_key();
    assert!(!other.matches_noise_key(&pk.noise_public()));
    assert!(!pk.matches_noise_key(&other.noise_public()));
    // Wrong lengths never match.
    assert!(!pk.matches_noise_key(&pk.noise_public()[..31]));
    assert!(!pk.matches_noise_key(&[]));
    // The ed25519 key itself is not its Noise key.
    assert!(!pk.matches_noise_key(pk.as_bytes()));
}

// ---------------------------------------------------------------------------------------------
// Key files

#[cfg(unix)]
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn save_and_load_round_trip_in_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    let sk = key(RFC8032_SEED);
    for (format, name) in [(KeyFormat::Hex, "k.hex"), (KeyFormat::Json, "k.json")] {
        let path = dir.path().join(name);
        sk.save(&path, format).unwrap();
        let loaded = SecretKey::load_detailed(&path).unwrap();
        assert_eq!(loaded.format, format);
        assert_eq!(loaded.key.public_key(), sk.public_key());
        assert_eq!(loaded.warnings, vec![]);
        assert_eq!(SecretKey::load(&path).unwrap().to_hex(), sk.to_hex());
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("k.hex")).unwrap(),
        format!("{RFC8032_SEED}\n")
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("k.json")).unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"public_key": RFC8032_PUBLIC, "secret_key": RFC8032_SEED})
    );
    // No temporary files are left behind.
    assert_eq!(dir_entries(dir.path()), ["k.hex", "k.json"]);
}

#[cfg(unix)]
#[test]
fn saved_files_are_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let sk = SecretKey::generate().unwrap();
    let a = dir.path().join("a");
    sk.save(&a, KeyFormat::Hex).unwrap();
    assert_eq!(mode_of(&a), 0o600);
    let b = dir.path().join("b");
    SecretKey::generate_and_save(&b, KeyFormat::Json).unwrap();
    assert_eq!(mode_of(&b), 0o600);
    // Replacing a world-readable file yields a 0600 file (a new inode, not a chmod).
    use std::os::unix::fs::PermissionsExt as _;
    let c = dir.path().join("c");
    std::fs::write(&c, "old").unwrap();
    std::fs::set_permissions(&c, std::fs::Permissions::from_mode(0o644)).unwrap();
    sk.save_replacing(&c, KeyFormat::Hex).unwrap();
    assert_eq!(mode_of(&c), 0o600);
}

#[test]
fn save_refuses_to_overwrite_and_leaves_the_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id.key");
    let first = SecretKey::generate_and_save(&path, KeyFormat::Hex).unwrap();
    let before = std::fs::read(&path).unwrap();
    let second = SecretKey::generate().unwrap();
    let err = second.save(&path, KeyFormat::Json).unwrap_err();
    assert!(
        matches!(&err, KeyFileError::AlreadyExists { path: p } if p == &path),
        "{err:?}"
    );
    let err = SecretKey::generate_and_save(&path, KeyFormat::Hex).unwrap_err();
    assert!(matches!(err, KeyFileError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(
        SecretKey::load(&path).unwrap().public_key(),
        first.public_key()
    );
    // Asked explicitly, it replaces.
    second.save_replacing(&path, KeyFormat::Json).unwrap();
    assert_eq!(
        SecretKey::load(&path).unwrap().public_key(),
        second.public_key()
    );
    assert_eq!(dir_entries(dir.path()), ["id.key"]);
}

#[test]
fn concurrent_saves_to_one_path_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..4 {
        let path = dir.path().join(format!("race-{round}"));
        let keys: Vec<SecretKey> = (0..8).map(|_| SecretKey::generate().unwrap()).collect();
        let results: Vec<Result<(), KeyFileError>> = std::thread::scope(|s| {
            let handles: Vec<_> = keys
                .iter()
                .map(|k| s.spawn(|| k.save(&path, KeyFormat::Hex)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<usize> = results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.is_ok().then_some(i))
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(matches!(e, KeyFileError::AlreadyExists { .. }), "{e:?}");
            }
        }
        // The file holds the winner's key, complete.
        assert_eq!(
            SecretKey::load(&path).unwrap().public_key(),
            keys[winners[0]].public_key()
        );
    }
    assert_eq!(dir_entries(dir.path()).len(), 4);
}

#[test]
fn load_detects_formats_and_tolerates_whitespace() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            format!("  {}\r\n\n", RFC8032_SEED.to_uppercase()),
            KeyFormat::Hex,
        ),
        (
            format!("{{\"secret_key\":\"{RFC8032_SEED}\"}}"),
            KeyFormat::Json,
        ),
        (
            format!(
                "\n{{\"secret_key\":\"{RFC8032_SEED}\",\"public_key\":\"{RFC8032_PUBLIC}\",\"comment\":1}}\n"
            ),
            KeyFormat::Json,
        ),
    ];
    for (i, (content, format)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("k{i}"));
        std::fs::write(&path, content).unwrap();
        let loaded = SecretKey::load_detailed(&path).unwrap();
        assert_eq!(loaded.format, *format, "{content}");
        assert_eq!(loaded.key.public_key().to_string(), RFC8032_PUBLIC);
    }
}

#[test]
fn load_rejects_json_whose_public_key_does_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.json");
    let other = key(SODIUM_SEED).public_key();
    std::fs::write(
        &path,
        format!("{{\"public_key\":\"{other}\",\"secret_key\":\"{RFC8032_SEED}\"}}"),
    )
    .unwrap();
    match SecretKey::load(&path).unwrap_err() {
        KeyFileError::Mismatch {
            path: p,
            stored,
            derived,
        } => {
            assert_eq!(p, path);
            assert_eq!(*stored, other);
            assert_eq!(derived.to_string(), RFC8032_PUBLIC);
        }
        e => panic!("unexpected {e:?}"),
    }
}

#[test]
fn load_parse_errors_are_typed_and_carry_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<u8>, KeyParseError)> = vec![
        (b" \n\t".to_vec(), KeyParseError::Empty),
        (vec![0xff, 0xfe, b'a'], KeyParseError::NotUtf8),
        (
            RFC8032_SEED.as_bytes()[..60].to_vec(),
            KeyParseError::SecretKey(SecretKeyError::HexLength {
                expected: 64,
                got: 60,
            }),
        ),
        (
            // Two keys on two lines is not a key file.
            format!("{RFC8032_SEED}\n{RFC8032_SEED}").into_bytes(),
            KeyParseError::SecretKey(SecretKeyError::HexLength {
                expected: 64,
                got: 129,
            }),
        ),
        (
            format!("{{\"secret_key\":\"{}\"}}", &RFC8032_SEED[..10]).into_bytes(),
            KeyParseError::SecretKey(SecretKeyError::HexLength {
                expected: 64,
                got: 10,
            }),
        ),
        (
            format!(
                "{{\"secret_key\":\"{RFC8032_SEED}\",\"public_key\":\"{}\"}}",
                "0".repeat(64)
            )
            .into_bytes(),
            KeyParseError::PublicKey(PublicKeyError::SmallOrder),
        ),
    ];
    for (i, (content, expected)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("bad{i}"));
        std::fs::write(&path, &content).unwrap();
        match SecretKey::load(&path).unwrap_err() {
            KeyFileError::Parse { path: p, source } => {
                assert_eq!(p, path);
                assert_eq!(source, expected, "case {i}");
            }
            e => panic!("case {i}: unexpected {e:?}"),
        }
    }
    // JSON syntax and schema errors.
    for (i, content) in [
        "{\"secret_key\": ",
        "{\"public_key\":\"00\"}",
        "{\"secret_key\": 5}",
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("json{i}"));
        std::fs::write(&path, content).unwrap();
        let err = SecretKey::load(&path).unwrap_err();
        assert!(
            matches!(
                &err,
                KeyFileError::Parse {
                    source: KeyParseError::Json { .. },
                    ..
                }
            ),
            "{err:?}"
        );
    }
}

#[test]
fn load_errors_never_print_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    // A typo ('x') in the middle of a secret.
    let mut content = RFC8032_SEED.to_string();
    content.replace_range(20..21, "x");
    std::fs::write(&path, &content).unwrap();
    let err = SecretKey::load(&path).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(&RFC8032_SEED[..20]), "{shown}");
    assert!(!shown.contains("'x'"), "{shown}");
    assert!(shown.contains("position 20"), "{shown}");
}

#[test]
fn load_missing_or_oversized_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    match SecretKey::load(&missing).unwrap_err() {
        KeyFileError::Io { path, source } => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        e => panic!("unexpected {e:?}"),
    }
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b' '; MAX_KEY_FILE_LEN as usize + 1]).unwrap();
    assert!(matches!(
        SecretKey::load(&big).unwrap_err(),
        KeyFileError::TooLarge {
            max: MAX_KEY_FILE_LEN,
            ..
        }
    ));
    // Exactly at the limit is read (and then judged on content).
    let at_limit = dir.path().join("at-limit");
    let mut content = vec![b' '; MAX_KEY_FILE_LEN as usize - 64];
    content.extend_from_slice(RFC8032_SEED.as_bytes());
    std::fs::write(&at_limit, content).unwrap();
    assert_eq!(
        SecretKey::load(&at_limit).unwrap().public_key().to_string(),
        RFC8032_PUBLIC
    );
}

#[test]
fn save_into_missing_directory_is_an_io_error_with_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("k");
    let err = key(RFC8032_SEED).save(&path, KeyFormat::Hex).unwrap_err();
    match err {
        KeyFileError::Io { path: p, source } => {
            assert!(p.starts_with(dir.path().join("no-such-dir")), "{p:?}");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        e => panic!("unexpected {e:?}"),
    }
}

#[test]
fn permissions_too_open_flags_any_group_or_other_bit() {
    for mode in [0o600, 0o400, 0o700, 0o200] {
        assert!(!permissions_too_open(mode), "{mode:o}");
    }
    for mode in [
        0o640, 0o604, 0o644, 0o620, 0o602, 0o601, 0o610, 0o666, 0o777,
    ] {
        assert!(permissions_too_open(mode), "{mode:o}");
    }
}

#[cfg(unix)]
#[test]
fn loading_a_group_or_world_readable_file_warns() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    key(RFC8032_SEED).save(&path, KeyFormat::Hex).unwrap();
    assert_eq!(SecretKey::load_detailed(&path).unwrap().warnings, vec![]);
    for mode in [0o640, 0o604] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let loaded = SecretKey::load_detailed(&path).unwrap();
        assert_eq!(
            loaded.warnings,
            vec![KeyFileWarning::PermissionsTooOpen { mode }]
        );
        // The key is still loaded.
        assert_eq!(loaded.key.public_key().to_string(), RFC8032_PUBLIC);
    }
}

#[test]
fn parsing_a_key_again_gives_the_first_result_and_invalid_keys_stay_invalid() {
    // `from_bytes` remembers keys that passed validation (per thread, by their bytes). A hit must
    // be the same key, and an invalid key must never be answered from another key's entry.
    let mut y3 = [0u8; 32];
    y3[0] = 3;
    // A valid key whose cache slot (first two bytes) is that of `y3`.
    let same_slot = (0..100_000)
        .map(|_| SecretKey::generate().unwrap().public_key())
        .find(|k| u16::from_le_bytes([k.as_bytes()[0], k.as_bytes()[1]]) % 128 == 3)
        .expect("a key in slot 3");
    for _ in 0..3 {
        let parsed = PublicKey::from_bytes(same_slot.as_bytes()).unwrap();
        assert_eq!(parsed, same_slot);
        assert_eq!(parsed.noise_public(), same_slot.noise_public());
        assert_eq!(
            PublicKey::from_bytes(&y3).unwrap_err(),
            PublicKeyError::MixedOrder
        );
    }
}

#[test]
fn verifications_through_the_decompressed_key_cache_stay_exact() {
    // More keys than the per-thread memo has slots (128), verified in two interleaved rounds (hits,
    // misses and evictions); each signature verifies under its own key only.
    let ctx = contexts::DMSG_STREAM_REQUEST;
    let keys: Vec<SecretKey> = (0..200).map(|_| SecretKey::generate().unwrap()).collect();
    let sigs: Vec<Signature> = keys.iter().map(|k| k.sign(ctx, b"msg")).collect();
    for _round in 0..2 {
        for (i, (k, sig)) in keys.iter().zip(&sigs).enumerate() {
            let pk = k.public_key();
            pk.verify(ctx, b"msg", sig).unwrap();
            assert!(pk.verify(ctx, b"msh", sig).is_err());
            let other = keys[(i + 1) % keys.len()].public_key();
            assert_eq!(
                other.verify(ctx, b"msg", sig).unwrap_err(),
                VerifyError { context: ctx }
            );
            pk.verify(ctx, b"msg", sig).unwrap();
        }
    }
}
