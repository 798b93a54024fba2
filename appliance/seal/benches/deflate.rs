//! The chunk compressor against the one the format used before it: libdeflate level 1 vs `miniz_oxide`
//! level 1, each chunk one raw stream (as in `docs/FORMAT.md`, section 5), on generated text.
//!
//! `cargo bench -p offsite-seal --bench deflate` prints MiB/s (best of three, one thread) and the compressed/plain ratio.
//! `DEFLATE_BENCH_MIB` sets the amount of text (default 64), `DEFLATE_BENCH_CHUNK` the chunk length (default
//! 8192, near the chunker's mean of ≈ 9 KiB).

use std::time::Instant;

use miniz_oxide::deflate::core::{CompressorOxide, TDEFLFlush, TDEFLStatus, compress};
use miniz_oxide::{DataFormat, deflate::CompressionLevel};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Lines of twelve words from a 5,000-word vocabulary and a number, like the backup benchmark's documents
/// (`tests/bench/backup.sh`, PART=mixed).
fn text(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let words: Vec<Vec<u8>> = (0..5000)
        .map(|_| {
            let n = 2 + (next() % 8) as usize;
            (0..n).map(|_| b'a' + (next() % 26) as u8).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(len + 200);
    while out.len() < len {
        for _ in 0..12 {
            out.extend_from_slice(&words[(next() % 5000) as usize]);
            out.push(b' ');
        }
        out.extend_from_slice(format!("{}\n", next() % 1_000_000).as_bytes());
    }
    out.truncate(len);
    out
}

/// Best wall seconds of three runs of `f`, and what it returned.
fn measure(mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut best = (f64::INFINITY, 0);
    for _ in 0..3 {
        let t = Instant::now();
        let out = f();
        best = (best.0.min(t.elapsed().as_secs_f64()), out);
    }
    best
}

fn main() {
    let data = text(env("DEFLATE_BENCH_MIB", 64) << 20);
    let chunk = env("DEFLATE_BENCH_CHUNK", 8192).max(1);
    let mib = data.len() as f64 / 1_048_576.0;
    let mut out = vec![0u8; chunk + chunk / 2 + 1024];

    let mut ld =
        libdeflater::Compressor::new(libdeflater::CompressionLvl::new(1).expect("level 1"));
    let (ld_s, ld_len) = measure(|| {
        data.chunks(chunk)
            .map(|c| ld.deflate_compress(c, &mut out).expect("fits"))
            .sum()
    });

    let mut mz = Box::new(CompressorOxide::with_format_and_level(
        DataFormat::Raw,
        CompressionLevel::BestSpeed,
    ));
    let (mz_s, mz_len) = measure(|| {
        data.chunks(chunk)
            .map(|c| {
                mz.reset();
                let (status, _, n) = compress(&mut mz, c, &mut out, TDEFLFlush::Finish);
                assert_eq!(status, TDEFLStatus::Done);
                n
            })
            .sum()
    });

    println!("{mib:.0} MiB of text in {chunk}-byte chunks, one raw deflate stream each");
    for (name, s, len) in [
        ("libdeflate level 1 (the format's)", ld_s, ld_len),
        ("miniz_oxide level 1 (before 27 Nov 2026)", mz_s, mz_len),
    ] {
        println!(
            "{name:<42} {:>7.0} MiB/s  ratio {:.3}",
            mib / s,
            len as f64 / data.len() as f64
        );
    }
    println!("libdeflate / miniz_oxide speed: {:.2}x", mz_s / ld_s);
}
