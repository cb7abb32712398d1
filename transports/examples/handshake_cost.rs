//! Measures the CPU cost of the pieces of a DMSG stream open on this machine.
//!
//! Run: `cargo run --release -p skytower-transports --example handshake_cost`
use std::time::Instant;

use skytower_transports::dmsg::dh;
use skytower_transports::identity::{PublicKey, SecretKey, contexts};

fn time<F: FnMut()>(label: &str, n: u32, mut f: F) {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    println!(
        "{label}: {:.1} µs",
        start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    );
}

fn main() {
    println!("curve arithmetic: {}", dh::curve_backend());
    let a = SecretKey::generate().expect("key");
    let b = SecretKey::generate().expect("key");
    let msg = [7u8; 200];
    let sig = a.sign(contexts::DMSG_STREAM_REQUEST, &msg);
    let pa = a.public_key();
    time("ed25519 sign", 2000, || {
        std::hint::black_box(a.sign(contexts::DMSG_STREAM_REQUEST, &msg));
    });
    time("ed25519 verify", 2000, || {
        pa.verify(contexts::DMSG_STREAM_REQUEST, &msg, &sig)
            .expect("verify");
    });
    time(
        "PublicKey::from_bytes (validated before on this thread)",
        2000,
        || {
            std::hint::black_box(PublicKey::from_bytes(pa.as_bytes()).expect("valid"));
        },
    );
    for (cipher, fast) in [("ChaChaPoly", false), ("AESGCM", false), ("AESGCM", true)] {
        let name = format!("Noise_KK_25519_{cipher}_BLAKE2s");
        let (sa, sb) = (a.noise_secret(), b.noise_secret());
        let (pka, pkb) = (a.public_key().noise_public(), b.public_key().noise_public());
        let builder = |local: [u8; 32], remote: [u8; 32]| {
            let params = name.parse().expect("name");
            if fast {
                snow::Builder::with_resolver(params, dh::resolver(Some(local), Some(remote)))
            } else {
                snow::Builder::new(params)
            }
        };
        let which = if fast {
            "dmsg::dh resolver, static-static DH memoised"
        } else {
            "snow's resolver"
        };
        time(
            &format!("KK handshake, both sides ({cipher}, {which})"),
            500,
            || {
                let mut i = builder(pka, pkb)
                    .local_private_key(sa.as_bytes())
                    .and_then(|x| x.remote_public_key(&pkb))
                    .and_then(|x| x.build_initiator())
                    .expect("initiator");
                let mut r = builder(pkb, pka)
                    .local_private_key(sb.as_bytes())
                    .and_then(|x| x.remote_public_key(&pka))
                    .and_then(|x| x.build_responder())
                    .expect("responder");
                let mut m = [0u8; 256];
                let mut p = [0u8; 256];
                let n = i.write_message(&[], &mut m).expect("m1");
                r.read_message(&m[..n], &mut p).expect("m1");
                let n = r.write_message(&[], &mut m).expect("m2");
                i.read_message(&m[..n], &mut p).expect("m2");
            },
        );
    }
}
