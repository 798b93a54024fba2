//! Mutation fuzzer for the sealed format's decoders (`Unsealer`, `verify`, `unseal_to_file`,
//! `names::unseal_name`, `names::unseal_path`), on stable Rust.
//!
//! ```text
//! cargo run --release -p offsite-seal --example fuzz_unseal -- \
//!     [--seconds S] [--iterations N] [--seed X] [--iteration I] [--timeout-ms T]
//! ```
//!
//! * `--seconds S` (default 60 when `--iterations` is not given) and `--iterations N`: stop at whichever
//!   comes first.
//! * `--seed X` (decimal or 0x-hex; default: from the clock): every case is derived from (seed, iteration
//!   number) only, so `--seed X --iteration I` reruns exactly one case, describes it and prints its result.
//! * `--timeout-ms T`: a case slower than this is a hang (default 2000; the watchdog aborts at 10 times it).
//!
//! Prints executions, the rate and what the cases did; exits 1 when anything was found (a panic, a hang, a
//! big allocation or heap growth, released plaintext that is not an authentic chunk, an unauthentic stream
//! or name accepted, an authentic one rejected, a wrong verdict or leftover file from `verify` or
//! `unseal_to_file`). See `examples/fuzz_common/mod.rs` for the cases and the properties.

#[path = "fuzz_common/mod.rs"]
mod fuzz_common;

use std::time::{Duration, Instant};

use fuzz_common::Harness;

#[global_allocator]
static ALLOC: fuzz_common::TrackingAlloc = fuzz_common::TrackingAlloc;

fn parse_u64(s: &str) -> u64 {
    let r = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.unwrap_or_else(|_| usage(&format!("not a number: {s}")))
}

fn usage(msg: &str) -> ! {
    eprintln!("{msg}");
    eprintln!(
        "usage: fuzz_unseal [--seconds S] [--iterations N] [--seed X] [--iteration I] [--timeout-ms T]"
    );
    std::process::exit(2)
}

fn main() {
    let mut iterations: Option<u64> = None;
    let mut seconds: Option<u64> = None;
    let mut seed: Option<u64> = None;
    let mut only: Option<u64> = None;
    let mut timeout_ms = 2000u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--iterations" => iterations = Some(parse_u64(&val())),
            "--seconds" => seconds = Some(parse_u64(&val())),
            "--seed" => seed = Some(parse_u64(&val())),
            "--iteration" => only = Some(parse_u64(&val())),
            "--timeout-ms" => timeout_ms = parse_u64(&val()),
            "-h" | "--help" => usage("fuzz_unseal: mutation fuzzer for the sealed format"),
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let mut h = Harness::new(Duration::from_millis(timeout_ms));

    if let Some(i) = only {
        let case = fuzz_common::make_case(&h.seeds, seed, i);
        println!("seed {seed:#x} iteration {i}: {}", case.describe(&h.seeds));
        match h.run(&case, &format!("seed {seed:#x} iteration {i}")) {
            Ok(()) => println!("clean ({:?})", h.counts),
            Err(f) => {
                println!("FINDING: {}", f.what);
                // `exit` skips destructors: remove the work folder first.
                drop(h);
                std::process::exit(1);
            }
        }
        return;
    }

    println!(
        "seeds: {} sealed files, {} sealed names, {} sealed paths; seed {seed:#x}",
        h.seeds.files.len(),
        h.seeds.names.len(),
        h.seeds.sealed_paths.len()
    );
    let (max_iterations, deadline) = match (iterations, seconds) {
        (None, None) => (u64::MAX, Some(Instant::now() + Duration::from_secs(60))),
        (n, s) => (
            n.unwrap_or(u64::MAX),
            s.map(|s| Instant::now() + Duration::from_secs(s)),
        ),
    };
    let t0 = Instant::now();
    let mut progress = |n: u64, _: &Harness| {
        if n.is_multiple_of(1_000_000) {
            let secs = t0.elapsed().as_secs_f64();
            println!("{n} executions, {:.0}/s", n as f64 / secs);
        }
    };
    let rep = fuzz_common::fuzz(&mut h, seed, max_iterations, deadline, 20, &mut progress);
    let secs = rep.elapsed.as_secs_f64().max(1e-9);
    let c = &h.counts;
    println!(
        "\n{} executions in {:.1} s ({:.0}/s), seed {seed:#x}, peak RSS {} KiB",
        rep.iterations,
        secs,
        rep.iterations as f64 / secs,
        peak_rss_kib()
    );
    println!(
        "  streams: {:>10} ({} opened: authentic or mutated back to it; {} rejected after releasing \
         chunks, {} of them not a prefix of the plaintext)",
        c.streams, c.streams_ok, c.released_then_rejected, c.released_not_prefix
    );
    println!("  names:   {:>10} ({} opened)", c.names, c.names_ok);
    println!("  paths:   {:>10} ({} opened)", c.paths, c.paths_ok);
    if rep.findings.is_empty() {
        println!("no findings");
        return;
    }
    for (i, what, f) in &rep.findings {
        println!(
            "FINDING at iteration {i}: {}\n  case: {what}\n  reproduce: cargo run --release -p offsite-seal \
             --example fuzz_unseal -- --seed {seed:#x} --iteration {i}",
            f.what
        );
    }
    drop(h);
    std::process::exit(1);
}

/// Peak resident set size of this process in KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
