//! Bad input on the DMSG control path gets a typed error, never a panic and never an accepted
//! frame: seeded pseudo-random bytes, and valid frames with random mutations, truncations and
//! extensions, through every decoder a peer's bytes reach (`SignedRequest`, `SignedResponse`,
//! `Probe`, `read_frame`, `Addr`, `PublicKey`). Deterministic (fixed seeds), bounded in count.

use std::str::FromStr;

use skytower_transports::dmsg::wire::{
    Addr, Code, MAX_CONTROL_FRAME, Probe, SignedRequest, SignedResponse, StreamRequest,
    StreamResponse, WireError, read_frame,
};
use skytower_transports::identity::{PublicKey, SecretKey};

/// splitmix64: a tiny deterministic generator (no dependency needed for test inputs).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// `frame` with one random change: bytes overwritten, cut short, or extended.
    fn mutate(&mut self, frame: &[u8]) -> Vec<u8> {
        let mut m = frame.to_vec();
        match self.below(3) {
            0 => {
                for _ in 0..=self.below(4) {
                    let i = self.below(m.len());
                    m[i] ^= (self.below(255) + 1) as u8; // never a no-op
                }
            }
            1 => m.truncate(self.below(m.len())),
            _ => {
                let n = 1 + self.below(64);
                let extra = self.bytes(n);
                m.extend_from_slice(&extra);
            }
        }
        m
    }
}

fn signed_request(a: &SecretKey, b: &SecretKey, rng: &mut Rng) -> SignedRequest {
    StreamRequest {
        src: Addr::new(a.public_key(), 49_152 + rng.below(1000) as u16),
        dst: Addr::new(b.public_key(), 80),
        timestamp_ms: 1_700_000_000_000 + rng.below(1_000_000) as u64,
        nonce: rng.bytes(16).try_into().unwrap(),
        cipher: 0,
        noise: rng.bytes(48),
    }
    .sign(a)
    .unwrap()
}

#[test]
fn random_bytes_are_refused_by_every_decoder() {
    let mut rng = Rng(1);
    for round in 0..5_000 {
        let len = match round % 4 {
            0 => rng.below(16),
            1 => rng.below(300),
            2 => 150 + rng.below(100), // around a real request's size
            _ => rng.below(MAX_CONTROL_FRAME + 64),
        };
        let mut body = rng.bytes(len);
        // Half of them carry a plausible header, to get past the first checks.
        if round % 2 == 0 && body.len() >= 2 {
            body[0] = [0x01, 0x02][rng.below(2)];
            body[1] = 1;
        }
        assert!(SignedRequest::decode(&body).is_err(), "request {body:02x?}");
        assert!(
            SignedResponse::decode(&body).is_err(),
            "response {body:02x?}"
        );
        if body.len() != 9 {
            assert!(Probe::decode(&body).is_err(), "probe {body:02x?}");
        }
    }
}

#[test]
fn mutated_requests_and_responses_never_decode() {
    let mut rng = Rng(2);
    let (a, b) = (
        SecretKey::generate().unwrap(),
        SecretKey::generate().unwrap(),
    );
    for _ in 0..300 {
        let request = signed_request(&a, &b, &mut rng);
        let response = StreamResponse {
            request_hash: request.hash(),
            code: Code::Accepted,
            signer: b.public_key(),
            noise: rng.bytes(48),
        }
        .sign(&b)
        .unwrap();
        assert!(SignedRequest::decode(request.as_bytes()).is_ok());
        assert!(SignedResponse::decode(response.as_bytes()).is_ok());
        for _ in 0..4 {
            let m = rng.mutate(request.as_bytes());
            let err = SignedRequest::decode(&m).unwrap_err();
            // Each failure is one of the typed reasons (no catch-all).
            assert!(
                matches!(
                    err,
                    WireError::Truncated
                        | WireError::Trailing(_)
                        | WireError::UnexpectedType(_)
                        | WireError::Version(_)
                        | WireError::Key(_)
                        | WireError::ZeroPort
                        | WireError::NoiseTooLarge(_)
                        | WireError::BadSignature(_)
                        | WireError::TooLarge(_)
                ),
                "{err:?}"
            );
            let m = rng.mutate(response.as_bytes());
            assert!(SignedResponse::decode(&m).is_err(), "{m:02x?}");
        }
    }
}

#[tokio::test]
async fn random_byte_streams_give_bounded_frames_or_errors() {
    let mut rng = Rng(3);
    for _ in 0..2_000 {
        let n = rng.below(2 * MAX_CONTROL_FRAME);
        let stream = rng.bytes(n);
        let mut reader: &[u8] = &stream;
        // Read frames until the stream ends or is refused: each frame is within the limit.
        loop {
            match read_frame(&mut reader).await {
                Ok(body) => assert!(body.len() <= MAX_CONTROL_FRAME),
                Err(WireError::TooLarge(n)) => {
                    assert!(n > MAX_CONTROL_FRAME);
                    break;
                }
                Err(WireError::Io(e)) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
                    break;
                }
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
    }
}

#[test]
fn random_addresses_and_keys_parse_or_are_refused() {
    let mut rng = Rng(4);
    let alphabet = b"0123456789abcdefABCDEF:xyz -+";
    let valid = SecretKey::generate().unwrap().public_key();
    for _ in 0..5_000 {
        // Strings near the valid shape `<64 hex>:<port>`.
        let mut s = format!("{valid}:{}", rng.next() as u32);
        let mut bytes = s.into_bytes();
        for _ in 0..rng.below(3) {
            let i = rng.below(bytes.len());
            bytes[i] = alphabet[rng.below(alphabet.len())];
        }
        bytes.truncate(rng.below(bytes.len() + 1));
        s = String::from_utf8(bytes).unwrap();
        if let Ok(addr) = Addr::from_str(&s) {
            // Whatever parses prints back to the same address.
            assert_eq!(Addr::from_str(&addr.to_string()).unwrap(), addr);
        }
        let raw = rng.bytes(32);
        if let Ok(pk) = PublicKey::from_slice(&raw) {
            assert_eq!(pk.as_bytes().as_slice(), raw.as_slice());
        }
        let n = rng.below(64);
        let _ = PublicKey::from_slice(&rng.bytes(n));
    }
}
