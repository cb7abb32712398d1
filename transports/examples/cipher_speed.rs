//! Measures the raw speed of the two Noise ciphers on this CPU (one core, encrypt + decrypt).
//!
//! Run: `cargo run --release -p skytower-transports --example cipher_speed`
use std::time::Instant;

fn main() {
    for cipher in ["ChaChaPoly", "AESGCM"] {
        let name = format!("Noise_NN_25519_{cipher}_BLAKE2s");
        let mut i = snow::Builder::new(name.parse().expect("name"))
            .build_initiator()
            .expect("initiator");
        let mut r = snow::Builder::new(name.parse().expect("name"))
            .build_responder()
            .expect("responder");
        let mut buf = vec![0u8; 65535];
        let mut out = vec![0u8; 65535];
        let n = i.write_message(&[], &mut buf).expect("msg1");
        r.read_message(&buf[..n], &mut out).expect("msg1");
        let n = r.write_message(&[], &mut buf).expect("msg2");
        i.read_message(&buf[..n], &mut out).expect("msg2");
        let mut t = i.into_transport_mode().expect("transport");
        let mut rt = r.into_transport_mode().expect("transport");
        let payload = vec![7u8; 65519];
        let iters = 4096; // 256 MiB, each encrypted and decrypted
        let start = Instant::now();
        for _ in 0..iters {
            let n = t.write_message(&payload, &mut buf).expect("seal");
            rt.read_message(&buf[..n], &mut out).expect("open");
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{cipher}: {:.0} MB/s per pass",
            (iters as f64 * 65519.0 * 2.0) / secs / 1e6
        );
    }
    println!(
        "hardware_aes = {}",
        skytower_transports::dmsg::cipher::hardware_aes()
    );
}
