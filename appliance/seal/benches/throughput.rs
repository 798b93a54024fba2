//! Seal/unseal throughput per suite, in MiB/s, single thread, in memory (no disk).
//!
//! `cargo bench -p offsite-seal --bench throughput` — hardware backends (AES-NI / SIMD).
//! `RUSTFLAGS='--cfg aes_backend="soft" --cfg chacha20_backend="soft"' cargo bench -p offsite-seal
//!  --features portable --bench throughput` — portable backends: what a CPU without AES or SIMD sees.
//! `tests/bench/seal.sh` runs both and the anchors (openssl, rsyncrypto) side by side.

use std::io::{self, Read};

use seal::{MasterKey, RelPath, SealOptions, Sealer, Suite, Unsealer};

fn mib_per_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

fn best_of<F: FnMut() -> f64>(runs: usize, mut f: F) -> f64 {
    (0..runs).map(|_| f()).fold(f64::INFINITY, f64::min)
}

/// CPU time of this thread: on a shared machine it is far steadier than wall time.
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Runs `f` and returns its thread CPU time.
fn cpu_time(f: impl FnOnce()) -> f64 {
    let t = thread_cpu_secs();
    f();
    thread_cpu_secs() - t
}

fn main() {
    let len: usize = std::env::var("SEAL_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
        << 20;
    let mut random = vec![0u8; len];
    blake3::Hasher::new().finalize_xof().fill(&mut random);
    let text: Vec<u8> = (0u64..)
        .flat_map(|i| {
            format!("{i:08} INFO request served in {} ms from cache\n", i % 97).into_bytes()
        })
        .take(len)
        .collect();
    let path = RelPath::new("bench/file.bin").expect("path");
    println!(
        "# {} MiB per run, best of 3, MiB per second of thread CPU time; cpu_has_aes={}",
        len >> 20,
        seal::cpu_has_aes()
    );
    println!(
        "{:<10} {:<7} {:>6} {:>10} {:>12}",
        "suite", "data", "comp", "seal MiB/s", "unseal MiB/s"
    );
    for suite in [Suite::Aes256Ctr, Suite::XChaCha20] {
        let keys = MasterKey::from_bytes([5; 32], suite).derive_keys();
        for (name, data) in [("random", &random), ("text", &text)] {
            for compress in [true, false] {
                let opts = SealOptions { compress };
                let mut sealed = Vec::with_capacity(len + len / 64);
                let seal_s = best_of(3, || {
                    sealed.clear();
                    cpu_time(|| {
                        Sealer::new(&keys, &path, opts, &data[..])
                            .read_to_end(&mut sealed)
                            .expect("seal");
                    })
                });
                let unseal_s = best_of(3, || {
                    cpu_time(|| {
                        let n = io::copy(
                            &mut Unsealer::new(&keys, &path, &sealed[..]),
                            &mut io::sink(),
                        )
                        .expect("unseal");
                        assert_eq!(n as usize, data.len());
                    })
                });
                println!(
                    "{:<10} {:<7} {:>6} {:>10.0} {:>12.0}",
                    suite.name(),
                    name,
                    if compress { "on" } else { "off" },
                    mib_per_s(len, seal_s),
                    mib_per_s(len, unseal_s)
                );
            }
        }
    }
}
