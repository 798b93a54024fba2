//! Mutation fuzzer for everything `rsync_wire` decodes from a server
//! (handshake, multiplexed frames and messages, file lists, block-sum
//! requests, file data, statistics, goodbyes), on stable Rust.
//!
//! ```text
//! cargo run --release -p offsite-rsync --example fuzz_decoder -- \
//!     [--iterations N] [--seconds S] [--seed X] [--iteration I] \
//!     [--timeout-ms T] [--max-rss-mib M] [--findings DIR] [--record-corpus]
//! ```
//!
//! * `--seconds S` (default 60 when `--iterations` is not given) and
//!   `--iterations N`: stop at whichever comes first.
//! * `--seed X` (decimal or 0x-hex; default: from the clock): every
//!   iteration is derived from (seed, iteration number) only, so
//!   `--seed X --iteration I` reruns exactly one case and prints its result.
//! * `--findings DIR`: where failing inputs are written (default
//!   `$TMPDIR/offsite-rsync-fuzz-findings`).
//! * `--record-corpus`: re-records `tests/fuzz-corpus/` with the real
//!   `rsync` (`$RSYNC` or `rsync` on `PATH`) and exits.
//!
//! Exits 1 when anything was found (panic, hang, write outside the
//! destination, temporary file left behind, peak RSS above the limit, a
//! single allocation above 16 MiB).
//! See `tests/fuzz_common/mod.rs` for the harness.

#[path = "../tests/fuzz_common/mod.rs"]
mod fuzz_common;

use std::time::{Duration, Instant};

use fuzz_common::{Harness, Target};

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
        "usage: fuzz_decoder [--iterations N] [--seconds S] [--seed X] [--iteration I] \
         [--timeout-ms T] [--max-rss-mib M] [--findings DIR] [--record-corpus]"
    );
    std::process::exit(2)
}

fn main() {
    let mut iterations: Option<u64> = None;
    let mut seconds: Option<u64> = None;
    let mut seed: Option<u64> = None;
    let mut only: Option<u64> = None;
    let mut timeout_ms = 5000u64;
    let mut max_rss_mib = 256u64;
    let mut findings_dir = std::env::temp_dir().join("offsite-rsync-fuzz-findings");
    let mut record = false;
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
            "--max-rss-mib" => max_rss_mib = parse_u64(&val()),
            "--findings" => findings_dir = val().into(),
            "--record-corpus" => record = true,
            "-h" | "--help" => usage("fuzz_decoder: structure-aware mutation fuzzer"),
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    let dir = fuzz_common::corpus_dir();
    if record {
        let rsync = std::env::var_os("RSYNC").unwrap_or_else(|| "rsync".into());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        for (name, len) in rt.block_on(fuzz_common::record_corpus(&rsync, &dir)) {
            println!("recorded {name}.bin ({len} bytes)");
        }
        return;
    }
    let corpus = fuzz_common::load_corpus(&dir)
        .unwrap_or_else(|e| usage(&format!("reading {}: {e}", dir.display())));
    if corpus.is_empty() {
        usage(&format!(
            "no corpus in {} (run with --record-corpus)",
            dir.display()
        ));
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let mut h = Harness::new(Duration::from_millis(timeout_ms), max_rss_mib * 1024);

    if let Some(i) = only {
        let case = fuzz_common::make_case(&corpus, seed, i);
        let s = &corpus[case.seed_index];
        println!(
            "seed {seed:#x} iteration {i}: {} on {} ({} bytes, reads of at most {} bytes)",
            case.target.name(),
            s.config.name,
            case.input.len(),
            case.chunk
        );
        let path = findings_dir.join(format!("case-{seed:x}-{i}.bin"));
        if std::fs::create_dir_all(&findings_dir).is_ok()
            && std::fs::write(&path, &case.input).is_ok()
        {
            println!("input written to {}", path.display());
        }
        let label = format!("seed {seed:#x} iteration {i}");
        match h.run(case.target, &s.config, case.input, case.chunk, &label) {
            Ok(ok) => println!(
                "clean (session {})",
                if ok { "ok" } else { "failed cleanly" }
            ),
            Err(f) => {
                println!("FINDING: {}", f.what);
                drop(h); // `exit` skips destructors: the work folder goes first.
                std::process::exit(1);
            }
        }
        return;
    }

    println!(
        "corpus: {} transcripts in {}; seed {seed:#x}",
        corpus.len(),
        dir.display()
    );
    let bad = fuzz_common::replay_seeds(&mut h, &corpus);
    if !bad.is_empty() {
        for b in &bad {
            eprintln!("seed transcript does not replay cleanly: {b}");
        }
        drop(h); // `exit` skips destructors: the work folder goes first.
        std::process::exit(1);
    }
    h.counts.clear();
    let (max_iterations, deadline) = match (iterations, seconds) {
        (None, None) => (u64::MAX, Some(Instant::now() + Duration::from_secs(60))),
        (n, s) => (
            n.unwrap_or(u64::MAX),
            s.map(|s| Instant::now() + Duration::from_secs(s)),
        ),
    };
    let t0 = Instant::now();
    let mut progress = |n: u64, h: &Harness| {
        if n.is_multiple_of(50_000) {
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "{n} executions, {:.0}/s, peak RSS {} KiB, {:?}",
                n as f64 / secs,
                fuzz_common::peak_rss_kib(),
                h.counts
                    .iter()
                    .map(|(t, c)| (t.name(), c.runs))
                    .collect::<Vec<_>>()
            );
        }
    };
    let rep = fuzz_common::fuzz(
        &mut h,
        &corpus,
        seed,
        max_iterations,
        deadline,
        20,
        &mut progress,
    );
    let secs = rep.elapsed.as_secs_f64().max(1e-9);
    println!(
        "\n{} executions in {:.1} s ({:.0}/s), seed {seed:#x}, peak RSS {} KiB",
        rep.iterations,
        secs,
        rep.iterations as f64 / secs,
        fuzz_common::peak_rss_kib()
    );
    for t in [Target::Push, Target::Pull, Target::List] {
        let c = h.counts.get(&t).cloned().unwrap_or_default();
        let ts = c.time.as_secs_f64().max(1e-9);
        println!(
            "  {:4}: {:>9} executions, {:>8} sessions ended Ok, {:>7.0} exec/s of its own run time",
            t.name(),
            c.runs,
            c.ok,
            c.runs as f64 / ts
        );
    }
    if rep.findings.is_empty() {
        println!("no findings");
        return;
    }
    let _ = std::fs::create_dir_all(&findings_dir);
    for (i, name, target, f, input) in &rep.findings {
        let path = findings_dir.join(format!("finding-{seed:x}-{i}.bin"));
        let _ = std::fs::write(&path, input);
        println!(
            "FINDING at iteration {i} ({} on {name}): {}\n  input: {}\n  reproduce: cargo run --release -p offsite-rsync --example fuzz_decoder -- --seed {seed:#x} --iteration {i}",
            target.name(),
            f.what,
            path.display()
        );
    }
    drop(h); // `exit` skips destructors: the work folder goes first.
    std::process::exit(1);
}
