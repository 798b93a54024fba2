//! Cost of sealing and unsealing file names (an unchanged night seals every name of the share once).
//! `cargo bench -p offsite-seal --bench names`: names per second, one thread.
use std::time::Instant;

use seal::names::{SealedName, seal_name, unseal_name};
use seal::{MasterKey, Suite};

fn main() {
    let keys = MasterKey::from_bytes([5; 32], Suite::Aes256Ctr).derive_keys();
    let n = 100_000usize;
    let names: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
        .map(|i| {
            (
                format!("d{:03}/e{}", i % 500, i % 7).into_bytes(),
                format!("file{i:06}.txt").into_bytes(),
            )
        })
        .collect();
    for _ in 0..3 {
        let t = Instant::now();
        let mut sealed = Vec::with_capacity(n);
        for (parent, name) in &names {
            match seal_name(&keys, parent, name) {
                Ok(SealedName::Short(s)) => sealed.push(s),
                other => panic!("not a short name: {other:?}"),
            }
        }
        let seal_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for ((parent, name), s) in names.iter().zip(&sealed) {
            let back = unseal_name(&keys, parent, s, None).expect("unseal");
            assert_eq!(&back, name);
        }
        let unseal_s = t.elapsed().as_secs_f64();
        println!(
            "seal_name {:>9.0} names/s ({:.2} µs each)   unseal_name {:>9.0} names/s",
            n as f64 / seal_s,
            seal_s * 1e6 / n as f64,
            n as f64 / unseal_s
        );
    }
}
