//! Measures the CPU cost of the pieces of a DMSG stream open on this machine.
//!
//! Run: `cargo run --release -p skytower-transports --example handshake_cost`
use std::time::Instant;

use skytower_transports::identity::{SecretKey, contexts};

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
    for cipher in ["ChaChaPoly", "AESGCM"] {
        let name = format!("Noise_KK_25519_{cipher}_BLAKE2s");
        let (sa, sb) = (a.noise_secret(), b.noise_secret());
        let (pka, pkb) = (a.public_key().noise_public(), b.public_key().noise_public());
        time(&format!("KK handshake, both sides ({cipher})"), 500, || {
            let mut i = snow::Builder::new(name.parse().expect("name"))
                .local_private_key(sa.as_bytes())
                .and_then(|x| x.remote_public_key(&pkb))
                .and_then(|x| x.build_initiator())
                .expect("initiator");
            let mut r = snow::Builder::new(name.parse().expect("name"))
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
        });
    }
}
