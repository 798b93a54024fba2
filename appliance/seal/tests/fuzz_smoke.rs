//! A bounded run of the decoder fuzzer (`examples/fuzz_unseal.rs`) with a fixed seed, so every test run
//! exercises the harness and the properties: released plaintext is always authentic, only authentic
//! streams, names and paths open (and those always do), no panic, no hang, bounded memory.

#[path = "../examples/fuzz_common/mod.rs"]
mod fuzz_common;

use std::time::{Duration, Instant};

use fuzz_common::Harness;

#[global_allocator]
static ALLOC: fuzz_common::TrackingAlloc = fuzz_common::TrackingAlloc;

/// Fixed seed: a failure here reproduces with
/// `cargo run --release -p offsite-seal --example fuzz_unseal -- --seed 0x5EA1 --iteration I`.
const SEED: u64 = 0x5EA1;
const ITERATIONS: u64 = 3000;

#[test]
fn fuzz_unseal_smoke() {
    // Generous: debug builds of the ciphers are slow, and CI machines are shared.
    let mut h = Harness::new(Duration::from_secs(20));
    assert!(
        fuzz_common::TrackingAlloc::installed(),
        "the tracking allocator is not installed"
    );
    // The seeds open as they are (the harness's own sanity).
    for (i, f) in h.seeds.files.iter().enumerate() {
        assert!(
            h.seeds.by_key_path[&(f.key, f.path)].contains(&i),
            "{} is not indexed",
            f.name
        );
    }
    // Bounded by time too, so a slow machine does not stall the tests.
    let deadline = Instant::now() + Duration::from_secs(30);
    let rep = fuzz_common::fuzz(&mut h, SEED, ITERATIONS, Some(deadline), 5, &mut |_, _| {});
    let lines: Vec<String> = rep
        .findings
        .iter()
        .map(|(i, what, f)| format!("iteration {i}: {}\n  case: {what}", f.what))
        .collect();
    assert!(
        lines.is_empty(),
        "fuzzer findings with seed {SEED:#x}:\n{}",
        lines.join("\n")
    );
    assert!(rep.iterations >= 500, "only {} iterations", rep.iterations);
    let c = &h.counts;
    // Every kind of case ran, authentic ones opened, and mutated streams released chunks before being
    // rejected (so the released-plaintext property was exercised, not only early header failures).
    assert!(c.streams > 0 && c.names > 0 && c.paths > 0, "{c:?}");
    assert!(
        c.streams_ok > 0 && c.names_ok > 0 && c.paths_ok > 0,
        "{c:?}"
    );
    assert!(c.released_then_rejected > 0, "{c:?}");
}
