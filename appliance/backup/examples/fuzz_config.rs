//! The config parser's fuzzer, for long runs (docs/RELIABILITY.md):
//! `cargo run --release -p offsite-backup --example fuzz_config -- --seconds 600 [--seed N]`.
//! Prints executions, accepted inputs and the rate; exits non-zero at the first failed property (with the
//! seed and iteration to replay: `--seed N --iteration I` runs that one input and prints it).

#[path = "../tests/fuzz_config_common/mod.rs"]
mod fuzz_config_common;

use std::time::{Duration, Instant};

use fuzz_config_common::{Rng, check, mutate};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let seconds = arg("--seconds").unwrap_or(60);
    let seed = arg("--seed").unwrap_or(1);
    let only = arg("--iteration");
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    let (mut runs, mut accepted) = (0u64, 0u64);
    loop {
        let input = mutate(&mut rng);
        if only.is_none_or(|i| i == runs) {
            if only.is_some() {
                println!("{}", String::from_utf8_lossy(&input));
            }
            match std::panic::catch_unwind(|| check(&input)) {
                Ok(Ok(true)) => accepted += 1,
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    eprintln!("FAILED at seed {seed} iteration {runs}: {e}");
                    std::process::exit(1);
                }
                Err(_) => {
                    eprintln!("PANIC at seed {seed} iteration {runs}");
                    std::process::exit(1);
                }
            }
            if only.is_some() {
                return;
            }
        }
        runs += 1;
        if runs % 4096 == 0 && started.elapsed() >= Duration::from_secs(seconds) {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "config fuzzer: seed {seed}: {runs} executions, {accepted} accepted, {:.0}/s in {secs:.0} s, no failure",
        runs as f64 / secs
    );
}
