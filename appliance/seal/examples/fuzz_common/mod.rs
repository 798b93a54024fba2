#![allow(dead_code)]
//! A structure-aware mutation fuzzer for the sealed format's decoders, shared by
//! `examples/fuzz_unseal.rs` (long runs, release mode) and `tests/fuzz_smoke.rs` (a bounded run on every
//! `cargo test`). Stable Rust, no coverage instrumentation: every case is derived from (seed, iteration)
//! only, so one case replays on its own.
//!
//! * **Seeds** ([`Seeds::new`]): real sealed files made with the library for both suites (AES-256-CTR and
//!   XChaCha20 keys): empty, one byte, one chunk (compressible, so deflated, and incompressible), many
//!   chunks (mixed, random, and one of zeros cut at the 64 KiB maximum), two versions of one path (they
//!   share chunks), one plaintext sealed both compressed and not; sealed names (short, long with their
//!   side file, at the bucket edges) and sealed paths.
//! * **Mutations** ([`mutate_stream`], [`mutate_name`]): bit flips, byte sets, inserted, deleted and
//!   overwritten ranges, truncation, chunk records spliced from another sealed file (the same path's
//!   other version, another path, the other suite), records duplicated, swapped and dropped, header and
//!   length and trailer fields edited, data after the trailer, the wrong path or key at open; for names,
//!   characters changed, case, padding, the wrong folder, side files swapped, dropped or edited. The input
//!   is delivered in random read sizes with `Interrupted` errors in between, and sometimes an I/O error.
//! * **Properties** ([`Harness::run`]): no panic, no hang, no single allocation above
//!   [`MAX_ALLOCATION`] and no heap growth above [`MAX_HEAP_GROWTH`] whatever sizes the input claims, and
//!   no unauthentic plaintext: every chunk [`seal::Unsealer`] releases is a chunk sealed with this key
//!   for this path (what the API promises before the trailer's verdict: docs/FORMAT.md, section 3 and
//!   "Fuzzing"); the stream ends `Ok` only when the input is byte for byte an authentic sealed file of this
//!   (key, path), with exactly its plaintext and stats; an authentic input always opens; every other error
//!   is an integrity error, and it sticks. [`seal::verify`] gives the same verdict, and
//!   [`seal::unseal_to_file`] leaves nothing behind on an error. A name or path opens only to what was
//!   sealed, and seals back to exactly the input.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use seal::format::{HEADER_LEN, LEN_LEN, TAG_LEN, TRAILER_LEN};
use seal::names::{self, SealedName};
use seal::{Keys, MasterKey, RelPath, SealError, SealOptions, Sealer, Suite, Unsealer};

// ---------------------------------------------------------------- randomness

/// splitmix64.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The generator of iteration `i` of a run with `seed`.
    pub fn for_iteration(seed: u64, i: u64) -> Self {
        let mut r = Rng(seed ^ i.wrapping_mul(0xA076_1D64_78BD_642F));
        r.next();
        r.0 ^= i;
        r
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next() % den < num
    }

    pub fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
}

// ---------------------------------------------------------------- seeds

/// Key 0: AES-256-CTR, key 1: XChaCha20 (both have seeds); key 2: another AES key, only ever used to
/// open (a wrong key).
pub const KEY_COUNT: usize = 3;

/// Paths files are sealed for (and that a case may wrongly open them with).
pub const PATHS: &[&str] = &[
    "docs/report.txt",
    "photos/2024/img_0001.raw",
    "notes/todo.md",
    "big/mixed.bin",
    "big/random.bin",
    "a",
];

/// A sealed file of the corpus.
#[derive(Debug, Clone)]
pub struct FileSeed {
    pub name: String,
    pub key: usize,
    pub path: usize,
    pub plain: Vec<u8>,
    pub sealed: Vec<u8>,
}

/// A sealed name of the corpus (in the folder `parent`).
#[derive(Debug, Clone)]
pub struct NameSeed {
    pub key: usize,
    pub parent: Vec<u8>,
    pub name: Vec<u8>,
    pub sealed: SealedName,
}

/// A sealed path of the corpus with its long-name side files (folder, file, content).
#[derive(Debug, Clone)]
pub struct PathSeed {
    pub key: usize,
    pub plain: RelPath,
    pub sealed: String,
    pub side_files: Vec<(String, String, String)>,
}

/// Everything a run needs, built once.
pub struct Seeds {
    pub keys: Vec<Keys>,
    pub paths: Vec<RelPath>,
    pub files: Vec<FileSeed>,
    /// Per (key, path): BLAKE3 of every chunk plaintext sealed with that key for that path.
    pub chunks: HashMap<(usize, usize), HashSet<[u8; 32]>>,
    /// Per (key, path): the files sealed with that key for that path.
    pub by_key_path: HashMap<(usize, usize), Vec<usize>>,
    pub names: Vec<NameSeed>,
    pub sealed_paths: Vec<PathSeed>,
}

fn text(n: usize, salt: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 64);
    let mut i = 0u32;
    while v.len() < n {
        v.extend_from_slice(
            format!("{salt}:{i} the quick brown fox jumps over the lazy dog\n").as_bytes(),
        );
        i += 1;
    }
    v.truncate(n);
    v
}

fn random(n: usize, salt: u8) -> Vec<u8> {
    let mut v = vec![0u8; n];
    blake3::Hasher::new_keyed(&[salt; 32])
        .finalize_xof()
        .fill(&mut v);
    v
}

fn mixed(n: usize, salt: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    let mut k = 0u8;
    while v.len() < n {
        if k.is_multiple_of(2) {
            v.extend_from_slice(&text(5000, u32::from(salt) * 100 + u32::from(k)));
        } else {
            v.extend_from_slice(&random(7000, salt.wrapping_add(k)));
        }
        k += 1;
    }
    v.truncate(n);
    v
}

fn seal_bytes(keys: &Keys, path: &RelPath, compress: bool, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Sealer::new(keys, path, SealOptions { compress }, plain)
        .read_to_end(&mut out)
        .expect("sealing from memory");
    out
}

/// The chunk plaintexts of an authentic sealed file, as the unsealer releases them (one `read` with a
/// buffer of a whole chunk returns exactly one chunk).
fn chunk_plaintexts(keys: &Keys, path: &RelPath, sealed: &[u8]) -> Vec<Vec<u8>> {
    let mut u = Unsealer::new(keys, path, sealed);
    let mut buf = vec![0u8; seal::chunker::MAX_CHUNK];
    let mut out = Vec::new();
    loop {
        let n = u.read(&mut buf).expect("a seed unseals");
        if n == 0 {
            return out;
        }
        out.push(buf[..n].to_vec());
    }
}

impl Seeds {
    pub fn new() -> Seeds {
        let keys = vec![
            MasterKey::from_bytes([0x11; 32], Suite::Aes256Ctr).derive_keys(),
            MasterKey::from_bytes([0x22; 32], Suite::XChaCha20).derive_keys(),
            MasterKey::from_bytes([0x33; 32], Suite::Aes256Ctr).derive_keys(),
        ];
        let paths: Vec<RelPath> = PATHS
            .iter()
            .map(|p| RelPath::new(*p).expect("valid path"))
            .collect();
        let mixed_v1 = mixed(24_000, 1);
        let mut mixed_v2 = mixed_v1.clone();
        mixed_v2[11_000..11_010].copy_from_slice(b"##edited##");
        mixed_v2.extend_from_slice(&text(3000, 77));
        // (name, path, plaintext, compress)
        let specs: Vec<(&str, usize, Vec<u8>, bool)> = vec![
            ("empty", 0, Vec::new(), true),
            ("one-byte", 0, b"x".to_vec(), true),
            ("one-chunk-random", 1, random(3000, 2), true),
            ("one-chunk-text-deflated", 2, text(3000, 3), true),
            ("one-chunk-text-raw", 2, text(3000, 3), false),
            ("many-chunks-mixed-v1", 3, mixed_v1, true),
            ("many-chunks-mixed-v2", 3, mixed_v2, true),
            ("many-chunks-random-raw", 4, random(16_000, 4), false),
            ("max-chunks-zeros", 5, vec![0u8; 70_000], true),
        ];
        let mut files = Vec::new();
        for (key, k) in keys.iter().enumerate().take(2) {
            for (name, path, plain, compress) in &specs {
                let sealed = seal_bytes(k, &paths[*path], *compress, plain);
                files.push(FileSeed {
                    name: format!("{}-{name}", k.suite().name()),
                    key,
                    path: *path,
                    plain: plain.clone(),
                    sealed,
                });
            }
        }
        let mut chunks: HashMap<(usize, usize), HashSet<[u8; 32]>> = HashMap::new();
        let mut by_key_path: HashMap<(usize, usize), Vec<usize>> = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            let set = chunks.entry((f.key, f.path)).or_default();
            for c in chunk_plaintexts(&keys[f.key], &paths[f.path], &f.sealed) {
                set.insert(*blake3::hash(&c).as_bytes());
            }
            by_key_path.entry((f.key, f.path)).or_default().push(i);
        }
        let name_specs: Vec<(&[u8], Vec<u8>)> = vec![
            (b"", b"report.ods".to_vec()),
            (b"photos", b"a".to_vec()),
            (b"photos", vec![b'x'; 15]),
            (b"photos", vec![b'x'; 16]),
            (b"a b", "\u{e9}t\u{e9}.txt".as_bytes().to_vec()),
            (b"", b".hidden".to_vec()),
            (b"", vec![b'y'; 127]),
            (b"d", vec![b'z'; 128]),
            (b"d/e", vec![b'w'; 255]),
            (b"docs", vec![b'q'; 200]),
        ];
        let mut name_seeds = Vec::new();
        for (key, k) in keys.iter().enumerate().take(2) {
            for (parent, name) in &name_specs {
                let sealed = names::seal_name(k, parent, name).expect("seal name");
                name_seeds.push(NameSeed {
                    key,
                    parent: parent.to_vec(),
                    name: name.clone(),
                    sealed,
                });
            }
        }
        let long = "z".repeat(200);
        let path_specs = vec![
            "docs/report.txt".to_string(),
            format!("a b/{long}/c\u{e9}.txt"),
            "x/y/z/w".to_string(),
            "q".repeat(255),
            format!("{}/{}", "m".repeat(128), "n".repeat(130)),
        ];
        let mut sealed_paths = Vec::new();
        for (key, k) in keys.iter().enumerate().take(2) {
            for p in &path_specs {
                let plain = RelPath::new(p.as_bytes()).expect("valid path");
                let sp = names::seal_path(k, &plain).expect("seal path");
                sealed_paths.push(PathSeed {
                    key,
                    plain,
                    sealed: sp.path,
                    side_files: sp.side_files,
                });
            }
        }
        Seeds {
            keys,
            paths,
            files,
            chunks,
            by_key_path,
            names: name_seeds,
            sealed_paths,
        }
    }
}

impl Default for Seeds {
    fn default() -> Self {
        Seeds::new()
    }
}

// ---------------------------------------------------------------- layout

/// A chunk record or the trailer: `[start, end)` in the sealed bytes.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    pub start: usize,
    pub end: usize,
    pub trailer: bool,
}

/// The records of `b` as far as they parse (lenient: stops at the first length that does not fit).
pub fn records(b: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    let mut pos = HEADER_LEN;
    while pos + LEN_LEN <= b.len() {
        let n = u32::from_le_bytes([b[pos], b[pos + 1], b[pos + 2], b[pos + 3]]) as usize;
        if n == 0 {
            let end = (pos + TRAILER_LEN).min(b.len());
            out.push(Record {
                start: pos,
                end,
                trailer: true,
            });
            break;
        }
        let end = pos + LEN_LEN + TAG_LEN + n;
        if end > b.len() {
            break;
        }
        out.push(Record {
            start: pos,
            end,
            trailer: false,
        });
        pos = end;
    }
    out
}

fn chunk_records(b: &[u8]) -> Vec<Record> {
    records(b).into_iter().filter(|r| !r.trailer).collect()
}

// ---------------------------------------------------------------- cases

/// How the stream is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// [`seal::Unsealer`] through `Read`.
    Unsealer,
    /// [`seal::Unsealer`] and [`seal::verify`]: same verdict.
    Verify,
    /// [`seal::Unsealer`] and [`seal::unseal_to_file`].
    ToFile,
}

/// One sealed stream to open.
#[derive(Debug, Clone)]
pub struct StreamCase {
    pub seed: usize,
    /// Key and path the stream is opened with.
    pub key: usize,
    pub path: usize,
    pub input: Vec<u8>,
    /// At most this many input bytes per `read` of the source.
    pub source_max: usize,
    /// Every this many source reads return `Interrupted` first (0: never).
    pub interrupt_every: usize,
    /// The source fails with an I/O error once this offset is reached.
    pub io_error_at: Option<usize>,
    /// Plaintext buffer size per `read` of the unsealer.
    pub dst_len: usize,
    pub api: Api,
    /// What was done to the seed, for the report.
    pub ops: Vec<String>,
}

/// One sealed name to open.
#[derive(Debug, Clone)]
pub struct NameCase {
    pub key: usize,
    pub parent: Vec<u8>,
    pub component: String,
    pub side: Option<String>,
    pub ops: Vec<String>,
}

/// One sealed path to open.
#[derive(Debug, Clone)]
pub struct PathCase {
    pub key: usize,
    pub sealed: String,
    pub side_files: Vec<(String, String, String)>,
    pub ops: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum Case {
    Stream(StreamCase),
    Name(NameCase),
    Path(PathCase),
}

impl Case {
    pub fn describe(&self, s: &Seeds) -> String {
        match self {
            Case::Stream(c) => format!(
                "stream {} opened with key {} for {:?} ({} bytes, source reads ≤ {}, interrupt every {}, \
                 I/O error at {:?}, plaintext reads of {}, {:?}): {}",
                s.files[c.seed].name,
                c.key,
                PATHS[c.path],
                c.input.len(),
                c.source_max,
                c.interrupt_every,
                c.io_error_at,
                c.dst_len,
                c.api,
                c.ops.join(", ")
            ),
            Case::Name(c) => format!(
                "name {:?} in {:?} with key {} (side file {:?}): {}",
                c.component,
                String::from_utf8_lossy(&c.parent),
                c.key,
                c.side,
                c.ops.join(", ")
            ),
            Case::Path(c) => format!(
                "path {:?} with key {} ({} side files): {}",
                c.sealed,
                c.key,
                c.side_files.len(),
                c.ops.join(", ")
            ),
        }
    }
}

/// Builds iteration `i` of a run with `seed` (deterministic).
pub fn make_case(s: &Seeds, seed: u64, i: u64) -> Case {
    let mut r = Rng::for_iteration(seed, i);
    match r.below(16) {
        0 | 1 => Case::Name(make_name_case(s, &mut r)),
        2 => Case::Path(make_path_case(s, &mut r)),
        _ => Case::Stream(make_stream_case(s, &mut r)),
    }
}

fn make_stream_case(s: &Seeds, r: &mut Rng) -> StreamCase {
    let seed = r.below(s.files.len());
    let f = &s.files[seed];
    let mut c = StreamCase {
        seed,
        key: f.key,
        path: f.path,
        input: f.sealed.clone(),
        source_max: match r.below(8) {
            0 if r.chance(1, 4) => 1,
            1 => 1 + r.below(64),
            2 => 4096,
            _ => usize::MAX,
        },
        interrupt_every: if r.chance(1, 8) { 1 + r.below(4) } else { 0 },
        io_error_at: None,
        dst_len: match r.below(8) {
            0 if r.chance(1, 2) => 1 + r.below(16),
            1 => 1 + r.below(5000),
            _ => seal::chunker::MAX_CHUNK,
        },
        api: match r.below(64) {
            0 => Api::ToFile,
            1..=4 => Api::Verify,
            _ => Api::Unsealer,
        },
        ops: Vec::new(),
    };
    if r.chance(1, 32) {
        c.ops.push("none (authentic)".into());
    } else {
        let n = 1 + usize::from(r.chance(1, 2)) + usize::from(r.chance(1, 4));
        for _ in 0..n {
            mutate_stream(s, &mut c, r);
        }
    }
    if r.chance(1, 64) {
        let at = r.below(c.input.len() + 2);
        c.io_error_at = Some(at);
        c.ops.push(format!("source fails at {at}"));
    }
    c
}

const INTERESTING_U8: &[u8] = &[0, 1, 2, 0x7f, 0x80, 0xfe, 0xff];

fn donor_for(s: &Seeds, c: &StreamCase, r: &mut Rng) -> usize {
    // Half the time a file of the same key and path (another version, or the same plaintext sealed
    // another way): its chunks verify, so only order, count and the trailer can catch the splice.
    if r.chance(1, 2)
        && let Some(same) = s
            .by_key_path
            .get(&(s.files[c.seed].key, s.files[c.seed].path))
    {
        return s.pick_file(same, r);
    }
    r.below(s.files.len())
}

impl Seeds {
    fn pick_file(&self, v: &[usize], r: &mut Rng) -> usize {
        v[r.below(v.len())]
    }
}

/// Applies one random mutation to `c` (input, or the key or path it is opened with).
pub fn mutate_stream(s: &Seeds, c: &mut StreamCase, r: &mut Rng) {
    let len = c.input.len();
    let recs = chunk_records(&c.input);
    match r.below(17) {
        0 => {
            let n = 1 + r.below(4);
            for _ in 0..n {
                if c.input.is_empty() {
                    break;
                }
                let p = r.below(c.input.len());
                c.input[p] ^= 1 << r.below(8);
                c.ops.push(format!("flip a bit at {p}"));
            }
        }
        1 => {
            if len > 0 {
                let p = r.below(len);
                let v = if r.chance(1, 2) {
                    r.pick(INTERESTING_U8)
                } else {
                    r.next() as u8
                };
                c.input[p] = v;
                c.ops.push(format!("set byte {p} to {v:#04x}"));
            }
        }
        2 => {
            let p = r.below(len + 1);
            let n = 1 + r.below(64);
            let bytes: Vec<u8> = if r.chance(1, 2) && len > 0 {
                let from = r.below(len);
                c.input[from..(from + n).min(len)].to_vec()
            } else {
                (0..n).map(|_| r.next() as u8).collect()
            };
            c.ops.push(format!("insert {} bytes at {p}", bytes.len()));
            c.input.splice(p..p, bytes);
        }
        3 => {
            if len > 0 {
                let p = r.below(len);
                let max = if r.chance(1, 4) { 70_000 } else { 256 };
                let n = 1 + r.below(max);
                let end = (p + n).min(len);
                c.input.drain(p..end);
                c.ops.push(format!("delete {p}..{end}"));
            }
        }
        4 => {
            let all = records(&c.input);
            let at = if r.chance(1, 2) && !all.is_empty() {
                let rec = all[r.below(all.len())];
                let edge = if r.chance(1, 2) { rec.start } else { rec.end };
                (edge + r.below(3)).saturating_sub(1).min(len)
            } else {
                r.below(len + 1)
            };
            c.input.truncate(at);
            c.ops.push(format!("truncate at {at}"));
        }
        5 | 6 => {
            // Replace (5) a chunk record with, or insert (6), one from a donor.
            let d = donor_for(s, c, r);
            let drecs = chunk_records(&s.files[d].sealed);
            if drecs.is_empty() {
                return mutate_stream(s, c, r);
            }
            let dr = drecs[r.below(drecs.len())];
            let bytes = s.files[d].sealed[dr.start..dr.end].to_vec();
            let all = records(&c.input);
            if r.chance(1, 2) && !recs.is_empty() {
                let t = recs[r.below(recs.len())];
                c.ops.push(format!(
                    "replace record at {} with one of {}",
                    t.start, s.files[d].name
                ));
                c.input.splice(t.start..t.end, bytes);
            } else {
                let at = if all.is_empty() {
                    HEADER_LEN.min(len)
                } else {
                    all[r.below(all.len())].start
                };
                c.ops
                    .push(format!("insert at {at} a record of {}", s.files[d].name));
                c.input.splice(at..at, bytes);
            }
        }
        7 => {
            if recs.is_empty() {
                return mutate_stream(s, c, r);
            }
            let a = recs[r.below(recs.len())];
            let b = recs[r.below(recs.len())];
            let bytes = c.input[a.start..a.end].to_vec();
            let at = if r.chance(1, 2) { b.start } else { b.end };
            c.ops
                .push(format!("duplicate the record at {} to {at}", a.start));
            c.input.splice(at..at, bytes);
        }
        8 => {
            if recs.len() < 2 {
                return mutate_stream(s, c, r);
            }
            let i = r.below(recs.len() - 1);
            let j = i + 1 + r.below(recs.len() - 1 - i);
            let (a, b) = (recs[i], recs[j]);
            let mut out = c.input[..a.start].to_vec();
            out.extend_from_slice(&c.input[b.start..b.end]);
            out.extend_from_slice(&c.input[a.end..b.start]);
            out.extend_from_slice(&c.input[a.start..a.end]);
            out.extend_from_slice(&c.input[b.end..]);
            c.input = out;
            c.ops.push(format!("swap records {i} and {j}"));
        }
        9 => {
            if recs.is_empty() {
                return mutate_stream(s, c, r);
            }
            let i = r.below(recs.len());
            c.input.drain(recs[i].start..recs[i].end);
            c.ops.push(format!("drop record {i}"));
        }
        10 => {
            if len < HEADER_LEN {
                return mutate_stream(s, c, r);
            }
            let what = match r.below(8) {
                0 => {
                    let any = r.next() as u8;
                    c.input[4] = r.pick(&[0, 2, 0xff, any]);
                    "version"
                }
                1 => {
                    c.input[5] = r.pick(&[0, 1, 2, 3, 0xff]);
                    "suite"
                }
                2 => {
                    c.input[6] = r.pick(&[0, 2, 0xff]);
                    "chunker"
                }
                3 => {
                    c.input[7] = r.pick(&[1, 0x80, 0xff]);
                    "flags"
                }
                4 => {
                    let p = 8 + r.below(8);
                    c.input[p] ^= 1 << r.below(8);
                    "key id"
                }
                5 => {
                    let p = 16 + r.below(8);
                    c.input[p] ^= 1 << r.below(8);
                    "path check"
                }
                6 => {
                    let d = r.below(s.files.len());
                    c.input[..HEADER_LEN].copy_from_slice(&s.files[d].sealed[..HEADER_LEN]);
                    "the whole header (another file's)"
                }
                _ => {
                    c.input[r.below(4)] ^= 0x20;
                    "magic"
                }
            };
            c.ops.push(format!("edit the header's {what}"));
        }
        11 => {
            let all = records(&c.input);
            if all.is_empty() {
                return mutate_stream(s, c, r);
            }
            let t = all[r.below(all.len())];
            if t.start + LEN_LEN > c.input.len() {
                return;
            }
            let old = u32::from_le_bytes(
                c.input[t.start..t.start + LEN_LEN]
                    .try_into()
                    .unwrap_or([0; 4]),
            );
            let any = r.next() as u32;
            let v = r.pick(&[
                0,
                1,
                2,
                old.wrapping_sub(1),
                old.wrapping_add(1),
                65_537,
                65_538,
                0x7fff_ffff,
                u32::MAX,
                any,
            ]);
            c.input[t.start..t.start + LEN_LEN].copy_from_slice(&v.to_le_bytes());
            c.ops.push(format!("set the length at {} to {v}", t.start));
        }
        12 => {
            let Some(t) = records(&c.input).into_iter().find(|x| x.trailer) else {
                return mutate_stream(s, c, r);
            };
            if t.end - t.start < TRAILER_LEN {
                return mutate_stream(s, c, r);
            }
            let body = t.start + LEN_LEN;
            let what = match r.below(6) {
                0 | 1 => {
                    let at = body + if r.chance(1, 2) { 0 } else { 8 };
                    let old = u64::from_le_bytes(c.input[at..at + 8].try_into().unwrap_or([0; 8]));
                    let any = r.next();
                    let v = r.pick(&[old.wrapping_add(1), old.wrapping_sub(1), 0, u64::MAX, any]);
                    c.input[at..at + 8].copy_from_slice(&v.to_le_bytes());
                    if at == body { "count" } else { "plain_len" }
                }
                2 => {
                    let p = body + 16 + r.below(32);
                    c.input[p] ^= 1 << r.below(8);
                    "mac"
                }
                3 => {
                    let d = donor_for(s, c, r);
                    let ds = &s.files[d].sealed;
                    let tr = ds[ds.len() - TRAILER_LEN..].to_vec();
                    c.input.splice(t.start..t.end, tr);
                    "whole trailer (another file's)"
                }
                4 => {
                    c.input.drain(t.start..t.end);
                    "removal"
                }
                _ => {
                    let tr = c.input[t.start..t.end].to_vec();
                    c.input.splice(t.start..t.start, tr);
                    "duplication"
                }
            };
            c.ops.push(format!("trailer {what}"));
        }
        13 => {
            let bytes: Vec<u8> = match r.below(3) {
                0 => vec![0],
                1 => (0..1 + r.below(16)).map(|_| r.next() as u8).collect(),
                _ => {
                    let d = donor_for(s, c, r);
                    let drecs = records(&s.files[d].sealed);
                    let x = drecs[r.below(drecs.len())];
                    s.files[d].sealed[x.start..x.end].to_vec()
                }
            };
            c.ops.push(format!("append {} bytes", bytes.len()));
            c.input.extend_from_slice(&bytes);
        }
        14 => {
            let p = (c.path + 1 + r.below(PATHS.len() - 1)) % PATHS.len();
            c.ops
                .push(format!("open for the wrong path {:?}", PATHS[p]));
            c.path = p;
        }
        15 => {
            let k = (c.key + 1 + r.below(KEY_COUNT - 1)) % KEY_COUNT;
            c.ops.push(format!("open with the wrong key {k}"));
            c.key = k;
        }
        _ => {
            let d = r.below(s.files.len());
            let ds = &s.files[d].sealed;
            if len == 0 || ds.is_empty() {
                return mutate_stream(s, c, r);
            }
            let from = r.below(ds.len());
            let n = (1 + r.below(512)).min(ds.len() - from);
            let at = r.below(len);
            let end = (at + n).min(len);
            c.input[at..end].copy_from_slice(&ds[from..from + (end - at)]);
            c.ops.push(format!(
                "overwrite {at}..{end} with bytes of {}",
                s.files[d].name
            ));
        }
    }
}

const BASE32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";

fn make_name_case(s: &Seeds, r: &mut Rng) -> NameCase {
    let n = &s.names[r.below(s.names.len())];
    let (component, side) = match &n.sealed {
        SealedName::Short(c) => (c.clone(), None),
        SealedName::Long {
            component,
            side_content,
            ..
        } => (component.clone(), Some(side_content.clone())),
    };
    let mut c = NameCase {
        key: n.key,
        parent: n.parent.clone(),
        component,
        side,
        ops: Vec::new(),
    };
    if r.chance(1, 16) {
        c.ops.push("none (authentic)".into());
        return c;
    }
    let k = 1 + usize::from(r.chance(1, 3));
    for _ in 0..k {
        mutate_name(s, &mut c, r);
    }
    c
}

/// One random edit of a base32 string.
fn mutate_b32(v: &mut String, r: &mut Rng) -> String {
    let mut b = v.clone().into_bytes();
    let what = match r.below(9) {
        0 | 1 if !b.is_empty() => {
            let p = r.below(b.len());
            b[p] = r.pick(BASE32);
            format!("change char {p}")
        }
        2 if !b.is_empty() => {
            let p = r.below(b.len());
            b[p] = b[p].to_ascii_uppercase();
            format!("uppercase char {p}")
        }
        3 => {
            let p = r.below(b.len() + 1);
            b.insert(p, r.pick(BASE32));
            format!("insert a char at {p}")
        }
        4 if !b.is_empty() => {
            let p = r.below(b.len());
            b.remove(p);
            format!("delete char {p}")
        }
        5 => {
            let at = r.below(b.len() + 1);
            b.truncate(at);
            format!("truncate at {at}")
        }
        6 => {
            b.extend_from_slice(b"======");
            "pad with =".into()
        }
        7 if !b.is_empty() => {
            // The last character carries the trailing bits.
            let p = b.len() - 1;
            b[p] = r.pick(BASE32);
            "change the last char".into()
        }
        _ => {
            let n = r.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
            b.extend_from_slice(&bytes);
            format!("append {n} random bytes")
        }
    };
    *v = String::from_utf8_lossy(&b).into_owned();
    what
}

/// Applies one random mutation to a name case.
pub fn mutate_name(s: &Seeds, c: &mut NameCase, r: &mut Rng) {
    match r.below(9) {
        0..=2 => {
            let w = mutate_b32(&mut c.component, r);
            c.ops.push(format!("component: {w}"));
        }
        3 => match &mut c.side {
            Some(side) => {
                let w = mutate_b32(side, r);
                c.ops.push(format!("side file: {w}"));
            }
            None => {
                let other = &s.names[r.below(s.names.len())];
                c.side = Some(match &other.sealed {
                    SealedName::Long { side_content, .. } => side_content.clone(),
                    SealedName::Short(x) => x.clone(),
                });
                c.ops.push("add a side file".into());
            }
        },
        4 => {
            let other = &s.names[r.below(s.names.len())];
            match &other.sealed {
                SealedName::Long { side_content, .. } if r.chance(1, 2) => {
                    c.side = Some(side_content.clone());
                    c.ops.push("another name's side file".into());
                }
                sealed => {
                    c.component = sealed.component().to_string();
                    c.ops.push("another name's component".into());
                }
            }
        }
        5 => {
            c.side = None;
            c.ops.push("drop the side file".into());
        }
        6 => {
            let other = &s.names[r.below(s.names.len())];
            c.parent = if r.chance(1, 2) {
                other.parent.clone()
            } else {
                let mut p = c.parent.clone();
                p.extend_from_slice(if p.is_empty() { b"x" } else { b"/x" });
                p
            };
            c.ops.push(format!(
                "open in folder {:?}",
                String::from_utf8_lossy(&c.parent)
            ));
        }
        7 => {
            if let Some(rest) = c.component.strip_prefix('_') {
                // A long component's hash as if it were a short one.
                c.component = rest.to_string();
                c.ops.push("strip the _".into());
            } else {
                c.component.insert(0, '_');
                c.ops.push("prefix _".into());
            }
        }
        _ => {
            c.key = (c.key + 1 + r.below(KEY_COUNT - 1)) % KEY_COUNT;
            c.ops.push(format!("open with key {}", c.key));
        }
    }
}

fn make_path_case(s: &Seeds, r: &mut Rng) -> PathCase {
    let p = &s.sealed_paths[r.below(s.sealed_paths.len())];
    let mut c = PathCase {
        key: p.key,
        sealed: p.sealed.clone(),
        side_files: p.side_files.clone(),
        ops: Vec::new(),
    };
    if r.chance(1, 16) {
        c.ops.push("none (authentic)".into());
        return c;
    }
    let k = 1 + usize::from(r.chance(1, 3));
    for _ in 0..k {
        let mut comps: Vec<String> = c.sealed.split('/').map(str::to_string).collect();
        match r.below(7) {
            0 | 1 => {
                let i = r.below(comps.len());
                let w = mutate_b32(&mut comps[i], r);
                c.ops.push(format!("component {i}: {w}"));
            }
            2 if comps.len() > 1 => {
                let i = r.below(comps.len());
                let j = r.below(comps.len());
                comps.swap(i, j);
                c.ops.push(format!("swap components {i} and {j}"));
            }
            3 if comps.len() > 1 => {
                let i = r.below(comps.len());
                comps.remove(i);
                c.ops.push(format!("drop component {i}"));
            }
            4 => {
                let i = r.below(comps.len());
                let x = comps[i].clone();
                comps.insert(i, x);
                c.ops.push(format!("duplicate component {i}"));
            }
            5 if !c.side_files.is_empty() => {
                let i = r.below(c.side_files.len());
                if r.chance(1, 2) {
                    c.side_files.remove(i);
                    c.ops.push("drop a side file".into());
                } else {
                    let w = mutate_b32(&mut c.side_files[i].2, r);
                    c.ops.push(format!("side file: {w}"));
                }
            }
            _ => {
                let other = &s.sealed_paths[r.below(s.sealed_paths.len())];
                let oc: Vec<&str> = other.sealed.split('/').collect();
                let i = r.below(comps.len());
                comps[i] = oc[r.below(oc.len())].to_string();
                c.side_files.extend(other.side_files.iter().cloned());
                c.ops.push(format!("component {i} from another path"));
            }
        }
        c.sealed = comps.join("/");
    }
    c
}

// ---------------------------------------------------------------- memory

/// Largest single allocation a case may make: the unsealer's two 64 KiB buffers and the inflater's state
/// are the biggest legitimate ones, whatever lengths the input claims.
pub const MAX_ALLOCATION: usize = 1 << 20;
/// Most the heap may grow during a case (beyond what was live when it started).
pub const MAX_HEAP_GROWTH: usize = 4 << 20;

/// A global allocator that remembers the largest single request made on each thread and the heap's
/// high-water mark since [`TrackingAlloc::reset`] (declare it with `#[global_allocator]` in the binary
/// using the harness; without it the memory properties are not checked).
pub struct TrackingAlloc;

thread_local! {
    static LARGEST: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK_LIVE: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

impl TrackingAlloc {
    /// Clears this thread's largest request and restarts the heap peak from what is live now; returns
    /// the bytes live now.
    pub fn reset() -> usize {
        let _ = LARGEST.try_with(|c| c.set(0));
        let live = LIVE.load(Ordering::Relaxed);
        PEAK_LIVE.store(live, Ordering::Relaxed);
        live
    }

    /// Largest request on this thread since [`TrackingAlloc::reset`].
    pub fn largest() -> usize {
        LARGEST.try_with(|c| c.get()).unwrap_or(0)
    }

    /// Most bytes live at once since [`TrackingAlloc::reset`].
    pub fn peak_live() -> usize {
        PEAK_LIVE.load(Ordering::Relaxed)
    }

    /// Whether the binary installed this allocator (it has allocated through it).
    pub fn installed() -> bool {
        INSTALLED.load(Ordering::Relaxed)
    }

    fn note(size: usize) {
        let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
        PEAK_LIVE.fetch_max(live, Ordering::Relaxed);
        let _ = LARGEST.try_with(|c| {
            if size > c.get() {
                c.set(size);
            }
        });
    }
}

// SAFETY: forwards to the system allocator unchanged.
unsafe impl std::alloc::GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        INSTALLED.store(true, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        let p = unsafe { std::alloc::System.alloc(l) };
        if !p.is_null() {
            Self::note(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: std::alloc::Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { std::alloc::System.alloc_zeroed(l) };
        if !p.is_null() {
            Self::note(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let q = unsafe { std::alloc::System.realloc(p, l, new) };
        if !q.is_null() {
            LIVE.fetch_sub(l.size(), Ordering::Relaxed);
            Self::note(new);
        }
        q
    }
}

// ---------------------------------------------------------------- running

/// The sealed input from memory: at most `max` bytes per read, `Interrupted` before every
/// `interrupt_every`-th read, an I/O error once `fail_at` is reached.
struct Source<'a> {
    data: &'a [u8],
    pos: usize,
    max: usize,
    interrupt_every: usize,
    reads: usize,
    fail_at: Option<usize>,
    failed: bool,
}

impl Read for Source<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        if self.interrupt_every > 0 && self.reads.is_multiple_of(self.interrupt_every + 1) {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let mut end = self.data.len();
        if let Some(f) = self.fail_at {
            if self.pos >= f {
                self.failed = true;
                return Err(io::Error::other("injected source failure"));
            }
            end = end.min(f);
        }
        let n = (end - self.pos).min(self.max).min(buf.len());
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Something the fuzzer must report.
#[derive(Debug, Clone)]
pub struct Finding {
    pub what: String,
}

fn finding(what: impl Into<String>) -> Finding {
    Finding { what: what.into() }
}

/// Counters of a run.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub streams: u64,
    /// Streams that opened (authentic inputs, mutated back to themselves or not mutated).
    pub streams_ok: u64,
    /// Rejected streams that had released at least one chunk before the verdict.
    pub released_then_rejected: u64,
    /// ... of which what was released is not a prefix of the authentic plaintext (chunks reordered,
    /// duplicated or from another version): allowed by the API, which is why files are written to a
    /// temporary file and renamed only after the trailer verified.
    pub released_not_prefix: u64,
    pub names: u64,
    pub names_ok: u64,
    pub paths: u64,
    pub paths_ok: u64,
}

thread_local! {
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

static HOOK: std::sync::Once = std::sync::Once::new();

fn install_panic_hook() {
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = format!("{info}");
            let caught = LAST_PANIC.with(|p| {
                let mut p = p.borrow_mut();
                if p.is_some() {
                    *p = Some(msg.clone());
                    true
                } else {
                    false
                }
            });
            if !caught {
                prev(info);
            }
        }));
    });
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs cases and checks the properties.
pub struct Harness {
    pub seeds: Seeds,
    pub counts: Counts,
    /// A case slower than this is a hang (the watchdog aborts the process at 10 times it).
    pub timeout: Duration,
    work: PathBuf,
    run_started: Arc<AtomicU64>,
    run_label: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
}

impl Harness {
    pub fn new(timeout: Duration) -> Harness {
        install_panic_hook();
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let work = base.join(format!("offsite-seal-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).expect("work dir");
        let run_started = Arc::new(AtomicU64::new(0));
        let run_label = Arc::new(Mutex::new(String::new()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (started, label, stop) = (run_started.clone(), run_label.clone(), stop.clone());
            let hard = (timeout.as_millis() as u64) * 10;
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    let s = started.load(Ordering::Relaxed);
                    if s != 0 && now_ms().saturating_sub(s) > hard {
                        let l = label.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        eprintln!("FINDING (hang): {l} ran for more than {hard} ms; aborting");
                        std::process::exit(3);
                    }
                }
            });
        }
        Harness {
            seeds: Seeds::new(),
            counts: Counts::default(),
            timeout,
            work,
            run_started,
            run_label,
            stop,
        }
    }

    /// Runs `case` (labelled `label` for the watchdog) and checks every property.
    pub fn run(&mut self, case: &Case, label: &str) -> Result<(), Finding> {
        *self.run_label.lock().unwrap_or_else(|p| p.into_inner()) = label.to_string();
        let t0 = Instant::now();
        self.run_started.store(now_ms(), Ordering::Relaxed);
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(String::from("(no message)")));
        let base = TrackingAlloc::reset();
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match case {
            Case::Stream(c) => self.run_stream(c),
            Case::Name(c) => self.run_name(c),
            Case::Path(c) => self.run_path(c),
        }));
        self.run_started.store(0, Ordering::Relaxed);
        let largest = TrackingAlloc::largest();
        let growth = TrackingAlloc::peak_live().saturating_sub(base);
        let panic_msg = LAST_PANIC.with(|p| p.borrow_mut().take());
        let elapsed = t0.elapsed();
        let res = match res {
            Ok(r) => r,
            Err(_) => Err(finding(format!(
                "panic: {}",
                panic_msg.unwrap_or_else(|| "(no message)".into())
            ))),
        };
        res?;
        if elapsed > self.timeout {
            return Err(finding(format!("hang: the case took {elapsed:?}")));
        }
        if TrackingAlloc::installed() {
            if largest > MAX_ALLOCATION {
                return Err(finding(format!(
                    "allocation of {largest} bytes (limit {MAX_ALLOCATION})"
                )));
            }
            if growth > MAX_HEAP_GROWTH {
                return Err(finding(format!(
                    "the heap grew by {growth} bytes (limit {MAX_HEAP_GROWTH})"
                )));
            }
        }
        Ok(())
    }

    fn run_stream(&mut self, c: &StreamCase) -> Result<(), Finding> {
        let s = &self.seeds;
        self.counts.streams += 1;
        let keys = &s.keys[c.key];
        let path = &s.paths[c.path];
        let chunks = s.chunks.get(&(c.key, c.path));
        // The authentic file the input is, byte for byte, if any.
        let authentic = s
            .by_key_path
            .get(&(c.key, c.path))
            .and_then(|v| v.iter().find(|&&i| s.files[i].sealed == c.input))
            .map(|&i| &s.files[i]);
        let mut src = Source {
            data: &c.input,
            pos: 0,
            max: c.source_max.max(1),
            interrupt_every: c.interrupt_every,
            reads: 0,
            fail_at: c.io_error_at,
            failed: false,
        };
        let mut u = Unsealer::new(keys, path, &mut src);
        let mut buf = vec![0u8; c.dst_len.max(1)];
        let mut out: Vec<u8> = Vec::new();
        let mut current: Vec<u8> = Vec::new();
        let mut released_chunks = 0u64;
        // Every chunk released must be one sealed with this key for this path.
        let check_chunk = |chunk: &[u8]| -> Result<(), Finding> {
            let h = *blake3::hash(chunk).as_bytes();
            if chunks.is_none_or(|set| !set.contains(&h)) {
                return Err(finding(format!(
                    "released {} bytes of plaintext that are no chunk sealed for this key and path",
                    chunk.len()
                )));
            }
            Ok(())
        };
        let verdict: Result<(), io::Error> = loop {
            let before = u.stats().chunks;
            match u.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    if u.stats().chunks != before {
                        if !current.is_empty() {
                            check_chunk(&current)?;
                        }
                        current.clear();
                        released_chunks += 1;
                    }
                    current.extend_from_slice(&buf[..n]);
                    out.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    return Err(finding(
                        "the unsealer returned Interrupted (read_to_end would retry)",
                    ));
                }
                Err(e) => break Err(e),
            }
        };
        if !current.is_empty() {
            check_chunk(&current)?;
        }
        let stats = u.stats();
        let sticky = match &verdict {
            Err(_) => u.read(&mut buf).ok(),
            Ok(()) => None,
        };
        drop(u);
        let io_failed = src.failed;
        match (&verdict, authentic) {
            (Ok(()), None) => {
                return Err(finding(format!(
                    "accepted a stream that is no authentic sealed file for this key and path \
                     ({} bytes of plaintext)",
                    out.len()
                )));
            }
            (Ok(()), Some(f)) => {
                if io_failed {
                    return Err(finding("accepted a stream whose source failed"));
                }
                if out != f.plain {
                    return Err(finding("authentic stream, but not its plaintext"));
                }
                let mac: [u8; 32] = f.sealed[f.sealed.len() - 32..]
                    .try_into()
                    .map_err(|_| finding("seed too short"))?;
                if stats.plain_len != f.plain.len() as u64
                    || stats.sealed_len != f.sealed.len() as u64
                    || stats.mac != mac
                    || stats.chunks != released_chunks
                {
                    return Err(finding(format!(
                        "wrong stats for an authentic file: {stats:?}"
                    )));
                }
                self.counts.streams_ok += 1;
            }
            (Err(e), _) => {
                if authentic.is_some() && !io_failed {
                    return Err(finding(format!("rejected an authentic stream: {e}")));
                }
                if let Some(n) = sticky {
                    return Err(finding(format!(
                        "a read after the error returned Ok({n}) instead of the error again"
                    )));
                }
                if !io_failed {
                    let inner = e
                        .get_ref()
                        .and_then(|x| x.downcast_ref::<SealError>())
                        .map(|se| se.is_integrity());
                    if inner != Some(true) {
                        return Err(finding(format!(
                            "a non-authentic stream failed with a non-integrity error: {e}"
                        )));
                    }
                }
                if released_chunks > 0 {
                    self.counts.released_then_rejected += 1;
                    let seed = &s.files[c.seed];
                    if !seed.plain.starts_with(&out) {
                        self.counts.released_not_prefix += 1;
                    }
                }
            }
        }
        let ok = verdict.is_ok();
        match c.api {
            Api::Unsealer => {}
            Api::Verify => {
                let v = seal::verify(
                    keys,
                    path,
                    Source {
                        data: &c.input,
                        pos: 0,
                        max: usize::MAX,
                        interrupt_every: 0,
                        reads: 0,
                        fail_at: c.io_error_at,
                        failed: false,
                    },
                );
                if v.is_ok() != ok {
                    return Err(finding(format!(
                        "verify says {:?}, the unsealer {}",
                        v.map(|_| ()),
                        if ok { "ok" } else { "not authentic" }
                    )));
                }
                if let Ok(st) = v
                    && st != stats
                {
                    return Err(finding(format!(
                        "verify's stats differ: {st:?} vs {stats:?}"
                    )));
                }
            }
            Api::ToFile => {
                let dest = self.work.join("out");
                let res = seal::unseal_to_file(
                    keys,
                    path,
                    Source {
                        data: &c.input,
                        pos: 0,
                        max: c.source_max.max(1),
                        interrupt_every: c.interrupt_every,
                        reads: 0,
                        fail_at: c.io_error_at,
                        failed: false,
                    },
                    &dest,
                    false,
                );
                let left: Vec<String> = std::fs::read_dir(&self.work)
                    .map(|rd| {
                        rd.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                let content = std::fs::read(&dest).ok();
                let _ = std::fs::remove_dir_all(&self.work);
                let _ = std::fs::create_dir_all(&self.work);
                match res {
                    Ok(_) if !ok => {
                        return Err(finding(
                            "unseal_to_file accepted what the unsealer rejected",
                        ));
                    }
                    Ok(_) => {
                        if content.as_deref() != Some(&out[..]) || left.len() != 1 {
                            return Err(finding(format!(
                                "unseal_to_file wrote something else (folder holds {left:?})"
                            )));
                        }
                    }
                    Err(e) => {
                        if ok {
                            return Err(finding(format!(
                                "unseal_to_file rejected what the unsealer accepted: {e}"
                            )));
                        }
                        if !left.is_empty() {
                            return Err(finding(format!(
                                "unseal_to_file failed ({e}) and left {left:?} behind"
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn run_name(&mut self, c: &NameCase) -> Result<(), Finding> {
        let s = &self.seeds;
        self.counts.names += 1;
        let keys = &s.keys[c.key];
        let res = names::unseal_name(keys, &c.parent, &c.component, c.side.as_deref());
        let seed = s.names.iter().find(|n| {
            n.key == c.key
                && n.parent == c.parent
                && n.sealed.component() == c.component
                && match &n.sealed {
                    SealedName::Short(_) => true,
                    SealedName::Long { side_content, .. } => {
                        c.side.as_deref() == Some(side_content.as_str())
                    }
                }
        });
        match (res, seed) {
            (Ok(name), Some(n)) => {
                if name != n.name {
                    return Err(finding(format!(
                        "opened to {:?}, sealed was {:?}",
                        String::from_utf8_lossy(&name),
                        String::from_utf8_lossy(&n.name)
                    )));
                }
                self.counts.names_ok += 1;
            }
            (Ok(name), None) => {
                return Err(finding(format!(
                    "opened a name that was not sealed so: {:?}",
                    String::from_utf8_lossy(&name)
                )));
            }
            (Err(e), Some(_)) => {
                return Err(finding(format!("rejected an authentic name: {e}")));
            }
            (Err(e), None) => {
                if !matches!(e, SealError::NameAuth { .. } | SealError::BadName { .. }) {
                    return Err(finding(format!("unexpected error kind: {e:?}")));
                }
            }
        }
        Ok(())
    }

    fn run_path(&mut self, c: &PathCase) -> Result<(), Finding> {
        let s = &self.seeds;
        self.counts.paths += 1;
        let keys = &s.keys[c.key];
        let res = names::unseal_path(keys, &c.sealed, |dir, file| {
            c.side_files
                .iter()
                .find(|(d, f, _)| d == dir && f == file)
                .map(|(_, _, content)| content.clone())
        });
        let seed = s
            .sealed_paths
            .iter()
            .find(|p| p.key == c.key && p.sealed == c.sealed);
        match res {
            Ok(plain) => {
                // Only what was sealed opens: a sealed path, or one of its folders (a prefix of whole
                // components, sealed the same way), with this key.
                let is_prefix = |p: &PathSeed| {
                    let (a, b) = (p.plain.as_bytes(), plain.as_bytes());
                    a.starts_with(b) && (a.len() == b.len() || a[b.len()] == b'/')
                };
                if !s
                    .sealed_paths
                    .iter()
                    .any(|p| p.key == c.key && is_prefix(p))
                {
                    return Err(finding(format!(
                        "opened a path that was not sealed so: {plain:?}"
                    )));
                }
                if let Some(p) = seed
                    && plain != p.plain
                {
                    return Err(finding(format!(
                        "opened to {plain:?}, sealed was {:?}",
                        p.plain
                    )));
                }
                // And it seals back to exactly the input.
                let again = names::seal_path(keys, &plain)
                    .map_err(|e| finding(format!("an opened path does not seal: {e}")))?;
                if again.path != c.sealed {
                    return Err(finding("an opened path seals to something else"));
                }
                self.counts.paths_ok += 1;
            }
            Err(e) => {
                // Authentic: the sealed path as sealed, and each side file the lookup finds (the first
                // with its folder and name) as sealed.
                let found = |d: &str, f: &str| {
                    c.side_files
                        .iter()
                        .find(|(d2, f2, _)| d2 == d && f2 == f)
                        .map(|x| &x.2)
                };
                if let Some(p) = seed
                    && p.side_files
                        .iter()
                        .all(|(d, f, content)| found(d, f) == Some(content))
                {
                    return Err(finding(format!("rejected an authentic path: {e}")));
                }
            }
        }
        Ok(())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// Result of [`fuzz`].
#[derive(Debug, Default)]
pub struct Report {
    pub iterations: u64,
    /// (iteration, case description, finding).
    pub findings: Vec<(u64, String, Finding)>,
    pub elapsed: Duration,
}

/// Runs iterations `0..` until `max_iterations` ran, `deadline` passed or `max_findings` were found.
pub fn fuzz(
    h: &mut Harness,
    seed: u64,
    max_iterations: u64,
    deadline: Option<Instant>,
    max_findings: usize,
    progress: &mut dyn FnMut(u64, &Harness),
) -> Report {
    let t0 = Instant::now();
    let mut rep = Report::default();
    let mut i = 0;
    while rep.iterations < max_iterations && rep.findings.len() < max_findings {
        if let Some(d) = deadline
            && rep.iterations.is_multiple_of(256)
            && Instant::now() >= d
        {
            break;
        }
        let case = make_case(&h.seeds, seed, i);
        if let Err(f) = h.run(&case, &format!("seed {seed:#x} iteration {i}")) {
            rep.findings.push((i, case.describe(&h.seeds), f));
        }
        rep.iterations += 1;
        i += 1;
        if rep.iterations.is_multiple_of(100_000) {
            progress(rep.iterations, h);
        }
    }
    rep.elapsed = t0.elapsed();
    rep
}
