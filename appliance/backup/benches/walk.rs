//! Cost of walking a share (the part of an unchanged night that every file pays: list and stat).
//! `cargo bench -p offsite-backup --bench walk [-- ROOT]`: walks ROOT (default: a generated tree of
//! 100,000 small files in a temporary folder, 500 × 7 folders, like `tests/bench/backup.sh`) five times
//! and prints entries per second and CPU per entry. Run beside `find ROOT -printf '%s'` for an anchor.
use std::time::Instant;

use backup::exclude::Excludes;
use backup::walk::{Item, Walker};

fn main() {
    let arg = std::env::args().nth(1).filter(|a| a != "--bench");
    let tmp;
    let root = match arg {
        Some(r) => std::path::PathBuf::from(r),
        None => {
            tmp = tempfile::tempdir().expect("temporary folder");
            for i in 0..100_000u32 {
                let d = tmp.path().join(format!("d{:03}/e{}", i % 500, i % 7));
                if i < 3500 {
                    std::fs::create_dir_all(&d).expect("folder");
                }
                std::fs::write(d.join(format!("file{i:06}.txt")), b"x").expect("file");
            }
            tmp.path().to_path_buf()
        }
    };
    for _ in 0..5 {
        let t = Instant::now();
        let cpu = cpu_seconds();
        let (mut entries, mut skipped) = (0u64, 0u64);
        for item in Walker::new(&root, Excludes::default()).expect("walk") {
            match item {
                Item::Entry(_) => entries += 1,
                Item::Skipped { .. } => skipped += 1,
            }
        }
        let wall = t.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu;
        println!(
            "walk {entries} entries ({skipped} skipped): {:.0} entries/s, {:.2} µs CPU each",
            entries as f64 / wall,
            cpu * 1e6 / entries as f64
        );
    }
}

/// User + system CPU of this process, from /proc/self/stat (clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = after
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // Fields after the command: state is not numeric, so utime and stime are the 11th and 12th numbers.
    f.get(10)
        .zip(f.get(11))
        .map_or(0.0, |(u, s)| (u + s) / 100.0)
}
