//! A bounded run of the decoder fuzzer (`examples/fuzz_decoder.rs`) with a
//! fixed seed, so CI exercises the harness and the corpus: the recorded
//! transcripts must replay cleanly, and a few thousand mutated ones must
//! end without a panic, a hang, a write outside the destination, a leftover
//! temporary file or a memory blow-up.

mod fuzz_common;

use std::time::{Duration, Instant};

use fuzz_common::{Harness, Target};

#[global_allocator]
static ALLOC: fuzz_common::TrackingAlloc = fuzz_common::TrackingAlloc;

/// Fixed seed: a failure here reproduces with
/// `cargo run --release -p offsite-rsync --example fuzz_decoder -- --seed 0x5EED --iteration I`.
const SEED: u64 = 0x5EED;
const ITERATIONS: u64 = 3000;

#[test]
fn fuzz_decoder_smoke() {
    let corpus = fuzz_common::load_corpus(&fuzz_common::corpus_dir()).expect("corpus");
    assert!(corpus.len() >= 10, "corpus incomplete: {}", corpus.len());
    for t in [Target::Push, Target::Pull, Target::List] {
        assert!(corpus.iter().any(|s| s.config.target == t), "no {t:?} seed");
    }
    for s in &corpus {
        assert!(s.bytes.len() < 64 * 1024, "{} too big", s.config.name);
    }
    let mut h = Harness::new(Duration::from_secs(5), 256 * 1024);
    let bad = fuzz_common::replay_seeds(&mut h, &corpus);
    assert!(bad.is_empty(), "seeds do not replay cleanly: {bad:?}");
    h.counts.clear();
    // Bounded by time too, so a slow machine does not stall CI.
    let deadline = Instant::now() + Duration::from_secs(15);
    let rep = fuzz_common::fuzz(
        &mut h,
        &corpus,
        SEED,
        ITERATIONS,
        Some(deadline),
        5,
        &mut |_, _| {},
    );
    let lines: Vec<String> = rep
        .findings
        .iter()
        .map(|(i, name, t, f, _)| format!("iteration {i} ({} on {name}): {}", t.name(), f.what))
        .collect();
    assert!(
        lines.is_empty(),
        "fuzzer findings with seed {SEED:#x}:\n{}",
        lines.join("\n")
    );
    assert!(rep.iterations >= 500, "only {} iterations", rep.iterations);
    for t in [Target::Push, Target::Pull, Target::List] {
        let c = h.counts.get(&t).cloned().unwrap_or_default();
        assert!(c.runs > 0, "{t:?} never ran");
    }
    // The mutations must not all be rejected at the first byte: some
    // sessions of each kind still complete.
    let ok: u64 = h.counts.values().map(|c| c.ok).sum();
    assert!(ok > 0, "no mutated session completed: {:?}", h.counts);
}
