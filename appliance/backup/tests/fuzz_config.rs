//! A fixed-seed smoke run of the config parser's fuzzer (`examples/fuzz_config.rs` runs long): the seeds
//! must be accepted and round-trip, and 20,000 mutated inputs must neither panic nor break the round trip.

mod fuzz_config_common;

use fuzz_config_common::{Rng, SEEDS, check, mutate};

#[test]
fn config_parser_survives_mutated_inputs() {
    for s in SEEDS {
        assert_eq!(check(s.as_bytes()), Ok(true), "seed not accepted: {s}");
    }
    let mut rng = Rng(0xC0F1_65EE_D000_0001);
    let mut accepted = 0;
    for i in 0..20_000 {
        let input = mutate(&mut rng);
        match check(&input) {
            Ok(true) => accepted += 1,
            Ok(false) => {}
            Err(e) => panic!("iteration {i}: {e}"),
        }
    }
    // The mutations are mild enough that a good share of inputs reaches the validators and the writer.
    assert!(accepted > 300, "only {accepted} inputs were accepted");
}
