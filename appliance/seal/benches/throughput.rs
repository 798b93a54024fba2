//! Seal/unseal throughput per suite, in memory (no disk), in MiB/s of wall time and MiB per CPU-second.
//!
//! `cargo bench -p offsite-seal --bench throughput` — hardware backends (AES-NI / SIMD).
//! `RUSTFLAGS='--cfg aes_backend="soft" --cfg chacha20_backend="soft"' cargo bench -p offsite-seal
//!  --features portable --bench throughput` — portable backends: what a CPU without AES or SIMD sees.
//! `tests/bench/seal.sh` runs both, with the anchors (openssl, rsyncrypto) side by side.
//! On a shared machine the CPU-time figure is the steady one; wall time shows what threads buy.

use std::io::{self, Read};
use std::time::Instant;

use seal::{MasterKey, RelPath, SealOptions, Sealer, Suite, Unsealer};

fn process_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Best (wall, cpu) seconds of three runs of `f`.
fn measure(mut f: impl FnMut()) -> (f64, f64) {
    let mut best = (f64::INFINITY, f64::INFINITY);
    for _ in 0..3 {
        let (w, c) = (Instant::now(), process_cpu_secs());
        f();
        best.0 = best.0.min(w.elapsed().as_secs_f64());
        best.1 = best.1.min(process_cpu_secs() - c);
    }
    best
}

fn main() {
    let mib: usize = std::env::var("SEAL_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let len = mib << 20;
    let mut random = vec![0u8; len];
    blake3::Hasher::new().finalize_xof().fill(&mut random);
    let text: Vec<u8> = (0u64..)
        .flat_map(|i| {
            format!("{i:08} INFO request served in {} ms from cache\n", i % 97).into_bytes()
        })
        .take(len)
        .collect();
    let path = RelPath::new("bench/file.bin").expect("path");
    let rate = |secs: f64| mib as f64 / secs;
    println!(
        "# {mib} MiB per run, best of 3; cpu_has_aes={}; wall = MiB/s, cpu = MiB per CPU-second",
        seal::cpu_has_aes()
    );
    println!(
        "{:<10} {:<7} {:>4} {:>7} {:>10} {:>10} {:>11} {:>11}",
        "suite", "data", "comp", "threads", "seal wall", "seal cpu", "unseal wall", "unseal cpu"
    );
    for suite in [Suite::Aes256Ctr, Suite::XChaCha20] {
        let keys = MasterKey::from_bytes([5; 32], suite).derive_keys();
        for (name, data) in [("random", &random), ("text", &text)] {
            for (compress, threads) in [(true, 1), (false, 1), (true, 2)] {
                let opts = SealOptions { compress };
                let mut sealed = Vec::with_capacity(len + len / 64);
                let (sw, sc) = measure(|| {
                    sealed.clear();
                    Sealer::new(&keys, &path, opts, &data[..])
                        .with_threads(threads)
                        .read_to_end(&mut sealed)
                        .expect("seal");
                });
                let (uw, uc) = measure(|| {
                    let n = io::copy(
                        &mut Unsealer::new(&keys, &path, &sealed[..]),
                        &mut io::sink(),
                    )
                    .expect("unseal");
                    assert_eq!(n as usize, data.len());
                });
                println!(
                    "{:<10} {:<7} {:>4} {:>7} {:>10.0} {:>10.0} {:>11.0} {:>11.0}",
                    suite.name(),
                    name,
                    if compress { "on" } else { "off" },
                    threads,
                    rate(sw),
                    rate(sc),
                    rate(uw),
                    rate(uc)
                );
            }
        }
    }
}
