//! Round trips, every class of tampering, and the locality property that keeps rsync cheap.

use std::io::{self, Read};

use seal::{
    MasterKey, RelPath, SealError, SealOptions, Sealer, Suite, Unsealer, unseal_to_file, verify,
};

const SUITES: [Suite; 2] = [Suite::Aes256Ctr, Suite::XChaCha20];

fn keys(suite: Suite) -> seal::Keys {
    MasterKey::from_bytes([0x42; 32], suite).derive_keys()
}

fn random(len: usize, seed: u8) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new_keyed(&[seed; 32])
        .finalize_xof()
        .fill(&mut v);
    v
}

fn path(p: &str) -> RelPath {
    RelPath::new(p).unwrap()
}

fn seal_bytes(keys: &seal::Keys, p: &RelPath, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Sealer::new(keys, p, SealOptions::default(), data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn unseal_bytes(keys: &seal::Keys, p: &RelPath, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut out = Vec::new();
    Unsealer::new(keys, p, sealed)
        .read_to_end(&mut out)
        .map_err(|e| SealError::from_io(e, "test"))?;
    Ok(out)
}

/// Record boundaries of a sealed file: (offset, total length) of each chunk record, then the trailer.
fn records(sealed: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = seal::format::HEADER_LEN;
    loop {
        let n = u32::from_le_bytes(sealed[pos..pos + 4].try_into().unwrap()) as usize;
        if n == 0 {
            out.push((pos, seal::format::TRAILER_LEN));
            return out;
        }
        out.push((pos, 4 + 16 + n));
        pos += 4 + 16 + n;
    }
}

#[test]
fn roundtrip_sizes_both_suites() {
    let sizes = [
        0usize,
        1,
        2047,
        2048,
        2049,
        8191,
        65535,
        65536,
        65537,
        131_073,
        1 << 20,
    ];
    for suite in SUITES {
        let k = keys(suite);
        for &len in &sizes {
            let p = path("dir/file.bin");
            let data = random(len, len as u8);
            let sealed = seal_bytes(&k, &p, &data);
            assert_eq!(
                unseal_bytes(&k, &p, &sealed).unwrap(),
                data,
                "{suite} {len}"
            );
            // Deterministic.
            assert_eq!(seal_bytes(&k, &p, &data), sealed);
            // Random data costs about 0.3 % (header, 20 bytes a chunk, trailer).
            assert!(
                sealed.len() <= len + len / 200 + 76 + 21,
                "{len} -> {}",
                sealed.len()
            );
        }
    }
}

#[test]
fn compressible_data_shrinks_and_random_data_is_stored_raw() {
    let k = keys(Suite::XChaCha20);
    let p = path("notes.txt");
    let text: Vec<u8> = (0..40_000)
        .flat_map(|i| format!("{i} the rain in Spain stays mainly in the plain\n").into_bytes())
        .collect();
    let mut sealer = Sealer::new(&k, &p, SealOptions::default(), &text[..]);
    let mut sealed = Vec::new();
    sealer.read_to_end(&mut sealed).unwrap();
    let stats = sealer.stats();
    assert!(stats.compressed_chunks == stats.chunks, "{stats:?}");
    assert!(sealed.len() < text.len() / 3);
    assert_eq!(unseal_bytes(&k, &p, &sealed).unwrap(), text);

    let noise = random(1 << 20, 3);
    let mut sealer = Sealer::new(&k, &p, SealOptions::default(), &noise[..]);
    io::copy(&mut sealer, &mut io::sink()).unwrap();
    assert_eq!(sealer.stats().compressed_chunks, 0);
}

/// A reader that yields a sparse-file-like stream: zeros with a few islands of data, never in memory.
struct Sparse {
    len: u64,
    pos: u64,
}

impl Read for Sparse {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len - self.pos) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let at = self.pos + i as u64;
            *b = if at % (512 << 20) < 4096 {
                (at % 251) as u8
            } else {
                0
            };
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[test]
fn multi_gigabyte_sparse_stream_roundtrips_in_constant_memory() {
    let len = 2u64 << 30;
    for suite in SUITES {
        let k = keys(suite);
        let p = path("vm/disk.img");
        // Seal into a hashing sink, then stream seal → unseal → compare through a pipe of readers.
        let sealer = Sealer::new(&k, &p, SealOptions::default(), Sparse { len, pos: 0 });
        let mut unsealer = Unsealer::new(&k, &p, sealer);
        let mut expect = Sparse { len, pos: 0 };
        let mut a = vec![0u8; 1 << 16];
        let mut b = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = unsealer.read(&mut a).unwrap();
            if n == 0 {
                break;
            }
            expect.read_exact(&mut b[..n]).unwrap();
            assert!(a[..n] == b[..n], "mismatch near {total}");
            total += n as u64;
        }
        assert_eq!(total, len);
        assert_eq!(unsealer.stats().plain_len, len);
    }
}

#[test]
fn every_header_byte_is_checked() {
    let k = keys(Suite::Aes256Ctr);
    let p = path("a/b");
    let sealed = seal_bytes(&k, &p, &random(30_000, 1));
    for i in 0..seal::format::HEADER_LEN {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        let err = unseal_bytes(&k, &p, &bad).unwrap_err();
        assert!(err.is_integrity(), "byte {i}: {err}");
    }
    // Switching the suite byte to the other valid suite still fails (the header is in every tag).
    let mut bad = sealed.clone();
    bad[5] = Suite::XChaCha20.id();
    assert!(matches!(
        unseal_bytes(&k, &p, &bad),
        Err(SealError::ChunkAuth { chunk: 0, .. })
    ));
}

#[test]
fn bit_flips_in_records_and_trailer_are_detected() {
    for suite in SUITES {
        let k = keys(suite);
        let p = path("x/y.bin");
        let sealed = seal_bytes(&k, &p, &random(100_000, 2));
        let recs = records(&sealed);
        let (last_off, _) = *recs.last().unwrap();
        for &(off, len) in &recs {
            // Length prefix, first/last tag byte, first/middle/last ciphertext byte (or trailer fields).
            for delta in [0usize, 3, 4, 19, 20, len / 2, len - 1] {
                let mut bad = sealed.clone();
                bad[off + delta] ^= 0x80;
                let err = unseal_bytes(&k, &p, &bad).unwrap_err();
                assert!(err.is_integrity(), "{suite} record {off}+{delta}: {err}");
                if off != last_off && (4..20).contains(&delta) {
                    assert!(
                        matches!(err, SealError::ChunkAuth { offset, .. } if offset == off as u64)
                    );
                }
            }
        }
    }
}

#[test]
fn truncation_at_every_record_boundary_and_inside_records() {
    let k = keys(Suite::XChaCha20);
    let p = path("t");
    let sealed = seal_bytes(&k, &p, &random(50_000, 4));
    let mut cuts: Vec<usize> = vec![0, 3, 10, seal::format::HEADER_LEN];
    for (off, len) in records(&sealed) {
        cuts.extend([off, off + 2, off + 4, off + 10, off + len - 1]);
    }
    for cut in cuts {
        let err = unseal_bytes(&k, &p, &sealed[..cut]).unwrap_err();
        assert!(err.is_integrity(), "cut at {cut}: {err}");
    }
    // Stripped trailer specifically.
    let (trailer_off, _) = *records(&sealed).last().unwrap();
    assert!(matches!(
        unseal_bytes(&k, &p, &sealed[..trailer_off]),
        Err(SealError::Truncated { .. })
    ));
    // Data after the trailer.
    let mut long = sealed.clone();
    long.push(0);
    assert!(matches!(
        unseal_bytes(&k, &p, &long),
        Err(SealError::TrailingData { .. })
    ));
}

fn rebuild(sealed: &[u8], order: &[usize]) -> Vec<u8> {
    let recs = records(sealed);
    let mut out = sealed[..seal::format::HEADER_LEN].to_vec();
    for &i in order {
        let (off, len) = recs[i];
        out.extend_from_slice(&sealed[off..off + len]);
    }
    let (t, tl) = *recs.last().unwrap();
    out.extend_from_slice(&sealed[t..t + tl]);
    out
}

#[test]
fn dropped_duplicated_and_reordered_chunks_fail_the_trailer() {
    let k = keys(Suite::Aes256Ctr);
    let p = path("r");
    let sealed = seal_bytes(&k, &p, &random(80_000, 5));
    let n = records(&sealed).len() - 1;
    assert!(n >= 5);
    let identity: Vec<usize> = (0..n).collect();
    assert_eq!(rebuild(&sealed, &identity), sealed);
    let mut dropped = identity.clone();
    dropped.remove(2);
    let mut duplicated = identity.clone();
    duplicated.insert(2, 2);
    let mut swapped = identity.clone();
    swapped.swap(1, 3);
    let mut last_dropped = identity.clone();
    last_dropped.pop();
    for order in [dropped, duplicated, swapped, last_dropped] {
        let err = unseal_bytes(&k, &p, &rebuild(&sealed, &order)).unwrap_err();
        assert!(
            matches!(err, SealError::TrailerAuth { .. }),
            "{order:?}: {err}"
        );
    }
}

#[test]
fn files_and_chunks_moved_between_paths_fail() {
    let k = keys(Suite::XChaCha20);
    let a = path("docs/a.txt");
    let b = path("docs/b.txt");
    let data = random(40_000, 6);
    let sealed_a = seal_bytes(&k, &a, &data);
    let sealed_b = seal_bytes(&k, &b, &data);
    // The whole file under another name.
    assert!(matches!(
        unseal_bytes(&k, &b, &sealed_a),
        Err(SealError::WrongPath)
    ));
    // Same, with the header's path check forged: the first chunk's tag catches it.
    let mut forged = sealed_a.clone();
    forged[16..24].copy_from_slice(&sealed_b[16..24]);
    assert!(matches!(
        unseal_bytes(&k, &b, &forged),
        Err(SealError::ChunkAuth { chunk: 0, .. })
    ));
    // One chunk of b spliced into a.
    let ra = records(&sealed_a);
    let rb = records(&sealed_b);
    let mut spliced = sealed_a[..ra[1].0].to_vec();
    spliced.extend_from_slice(&sealed_b[rb[1].0..rb[1].0 + rb[1].1]);
    spliced.extend_from_slice(&sealed_a[ra[2].0..]);
    assert!(matches!(
        unseal_bytes(&k, &a, &spliced),
        Err(SealError::ChunkAuth { chunk: 1, .. })
    ));
}

#[test]
fn wrong_key_is_detected_at_the_header() {
    let p = path("k");
    let sealed = seal_bytes(&keys(Suite::Aes256Ctr), &p, b"secret");
    let other = MasterKey::from_bytes([7; 32], Suite::Aes256Ctr).derive_keys();
    let mut u = Unsealer::new(&other, &p, &sealed[..]);
    assert!(matches!(u.check_header(), Err(SealError::WrongKey { .. })));
}

#[test]
fn unseal_to_file_writes_nothing_unless_authentic() {
    let k = keys(Suite::XChaCha20);
    let p = path("f.bin");
    let data = random(200_000, 8);
    let sealed = seal_bytes(&k, &p, &data);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f.bin");

    let mut bad = sealed.clone();
    let n = bad.len();
    bad[n - 10] ^= 1; // trailer MAC: every chunk verifies, the file as a whole does not
    let err = unseal_to_file(&k, &p, &bad[..], &dest, false).unwrap_err();
    assert!(err.is_integrity(), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no file, no temp"
    );

    let stats = unseal_to_file(&k, &p, &sealed[..], &dest, false).unwrap();
    assert_eq!(stats.plain_len, data.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    // Existing files are kept unless overwrite is asked for.
    assert!(unseal_to_file(&k, &p, &sealed[..], &dest, false).is_err());
    unseal_to_file(&k, &p, &sealed[..], &dest, true).unwrap();
    assert_eq!(verify(&k, &p, &sealed[..]).unwrap().chunks, stats.chunks);
}

/// The property the whole format exists for: a 1-byte insertion in the middle of a 64 MiB file changes
/// only a few records of the sealed output (plus the trailer), so rsync re-sends only those.
#[test]
fn one_byte_insertion_changes_only_a_few_chunks() {
    for suite in SUITES {
        let k = keys(suite);
        let p = path("big.bin");
        let data = random(64 << 20, 9);
        let mut edited = data.clone();
        edited.insert(32 << 20 | 12345, 0xAB);
        let a = seal_bytes(&k, &p, &data);
        let b = seal_bytes(&k, &p, &edited);
        let set_a: std::collections::HashSet<&[u8]> =
            records(&a).iter().map(|&(o, l)| &a[o..o + l]).collect();
        let changed: Vec<(usize, usize)> = records(&b)
            .into_iter()
            .filter(|&(o, l)| !set_a.contains(&b[o..o + l]))
            .collect();
        let changed_bytes: usize = changed.iter().map(|&(_, l)| l).sum();
        // New chunk(s) around the edit, and the trailer.
        assert!(
            changed.len() <= 4,
            "{suite}: {} records changed",
            changed.len()
        );
        assert!(
            changed_bytes < 160 * 1024,
            "{suite}: {changed_bytes} bytes changed"
        );
    }
}

#[test]
fn worker_threads_produce_identical_output() {
    let text: Vec<u8> = (0..60_000)
        .flat_map(|i| format!("{i} lorem ipsum dolor sit amet\n").into_bytes())
        .collect();
    let mut mixed = random(700_000, 11);
    mixed.extend_from_slice(&text);
    mixed.extend_from_slice(&random(3, 12));
    for suite in SUITES {
        let k = keys(suite);
        let p = path("mixed.bin");
        for data in [&mixed[..], &[][..], &b"x"[..]] {
            for compress in [true, false] {
                let opts = SealOptions { compress };
                let mut inline = Vec::new();
                let mut s1 = Sealer::new(&k, &p, opts, data);
                s1.read_to_end(&mut inline).unwrap();
                for threads in [2, 3, 4] {
                    let mut pooled = Vec::new();
                    let mut s2 = Sealer::new(&k, &p, opts, data).with_threads(threads);
                    // Small reads, to interleave reading with the pipeline.
                    let mut buf = [0u8; 1000];
                    loop {
                        let n = s2.read(&mut buf).unwrap();
                        if n == 0 {
                            break;
                        }
                        pooled.extend_from_slice(&buf[..n]);
                    }
                    assert!(
                        pooled == inline,
                        "{suite} threads={threads} compress={compress}"
                    );
                    assert_eq!(s2.stats(), s1.stats());
                }
            }
        }
    }
}

/// Inputs that arrive a little at a time, with lengths around the worker threads' batch size (256 KiB
/// read per batch plus up to 64 KiB left unchunked by the one before): the batches must cut the same chunks
/// as the caller's thread alone, whatever the read sizes.
#[test]
fn worker_threads_cut_the_same_chunks_from_short_reads() {
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.step = (self.step * 7 + 3) % 9_001;
            let n = buf.len().min(self.data.len()).min(self.step + 1);
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }
    let k = keys(Suite::Aes256Ctr);
    let p = path("trickle");
    let batch = 256 * 1024 + 65_536;
    let noise = random(3 * batch, 21);
    let zeros = vec![0u8; 3 * batch];
    // Runs of equal bytes cut at the 64 KiB maximum; after a short random start, a batch's last chunk is
    // left unfinished at every phase.
    let shifted: Vec<Vec<u8>> = [5_000, 20_000, 40_000, 60_000]
        .iter()
        .map(|&n| [random(n, 22), zeros.clone()].concat())
        .collect();
    for len in [batch - 1, batch, batch + 1, 2 * batch + 65_536, 3 * batch] {
        let mut inputs = vec![&noise[..len], &zeros[..len]];
        inputs.extend(shifted.iter().map(|s| &s[..len]));
        for data in inputs {
            let mut inline = Vec::new();
            seal::seal(&k, &p, SealOptions::default(), data, &mut inline).unwrap();
            let mut pooled = Vec::new();
            let input = Trickle { data, step: len };
            seal::seal_with_threads(&k, &p, SealOptions::default(), 2, input, &mut pooled).unwrap();
            assert!(pooled == inline, "length {len}");
        }
    }
}

#[test]
fn a_failing_input_fails_the_seal_with_its_error() {
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(1);
            self.0 -= n;
            Ok(n)
        }
    }
    let k = keys(Suite::XChaCha20);
    for threads in [1, 2] {
        let mut s = Sealer::new(&k, &path("f"), SealOptions::default(), Failing(300_000))
            .with_threads(threads);
        let err = io::copy(&mut s, &mut io::sink()).unwrap_err();
        assert!(err.to_string().contains("disk on fire"));
    }
}

#[test]
fn sealed_len_matches_the_real_seal_without_sealing() {
    let text: Vec<u8> = (0..30_000)
        .flat_map(|i| format!("{i} quick sizing\n").into_bytes())
        .collect();
    let mut mixed = random(500_000, 21);
    mixed.extend_from_slice(&text);
    for suite in SUITES {
        let k = keys(suite);
        let p = path("s/z");
        for data in [&mixed[..], &text[..], &[][..], &b"1"[..]] {
            for compress in [true, false] {
                let opts = SealOptions { compress };
                let mut out = Vec::new();
                Sealer::new(&k, &p, opts, data)
                    .read_to_end(&mut out)
                    .unwrap();
                assert_eq!(
                    seal::sealed_len(&k, &p, opts, data).unwrap(),
                    out.len() as u64
                );
            }
        }
    }
}

#[test]
fn a_length_counted_piece_by_piece_matches_the_real_seal() {
    // Random bytes (cut points far apart, chunks up to the largest), text (many small chunks), runs of one
    // byte (no cut point at all: every chunk the largest), and streams ending on a chunk's boundary.
    let text: Vec<u8> = (0..40_000)
        .flat_map(|i| format!("{i} counted\n").into_bytes())
        .collect();
    let mut mixed = random(300_000, 7);
    mixed.extend_from_slice(&text);
    mixed.extend_from_slice(&[9u8; 200_000]);
    let k = keys(Suite::Aes256Ctr);
    let p = path(".offsite-manifest");
    let opts = SealOptions { compress: false };
    let mut next = 0x2545_f491_4f6c_dd1du64;
    for len in [
        0,
        1,
        2048,
        2049,
        65_536,
        65_537,
        131_072,
        200_000,
        mixed.len(),
    ] {
        let data = &mixed[..len];
        let mut out = Vec::new();
        Sealer::new(&k, &p, opts, data)
            .read_to_end(&mut out)
            .unwrap();
        for piece_max in [1usize, 7, 300, 5_000, 70_000, 1 << 20] {
            let mut counter = seal::SealedLenCounter::new(&k);
            let mut rest = data;
            while !rest.is_empty() {
                next ^= next << 13;
                next ^= next >> 7;
                next ^= next << 17;
                let n = rest.len().min(1 + (next as usize) % piece_max);
                counter.update(&rest[..n]);
                rest = &rest[n..];
            }
            assert_eq!(
                counter.sealed_len(),
                out.len() as u64,
                "length {len}, pieces of at most {piece_max}"
            );
        }
    }
}

#[test]
fn sealed_len_bound_is_never_below_the_real_length() {
    let text: Vec<u8> = (0..40_000)
        .flat_map(|i| format!("{i} bound\n").into_bytes())
        .collect();
    let noise = random(300_000, 33);
    let k = keys(Suite::Aes256Ctr);
    let p = path("b/ound");
    for n in [0usize, 1, 2048, 2049, 2050, 4098, 65_536, 65_537, 300_000] {
        for data in [&noise[..n], &text[..n]] {
            for compress in [true, false] {
                let real = seal::sealed_len(&k, &p, SealOptions { compress }, data).unwrap();
                let bound = seal::sealed_len_bound(n as u64);
                assert!(real <= bound, "{n} bytes: {real} > {bound}");
                // Up to one chunk, incompressible bytes reach the bound: its constants are the format's.
                if n <= 2049 && std::ptr::eq(data.as_ptr(), noise.as_ptr()) {
                    assert_eq!(real, bound, "{n} bytes");
                }
            }
        }
    }
}

#[test]
fn stats_carry_the_trailer_mac_and_exact_length() {
    for suite in SUITES {
        let k = keys(suite);
        let p = path("docs/report.odt");
        let data = random(200_000, 7);
        let mut sealer = Sealer::new(&k, &p, SealOptions::default(), &data[..]);
        let mut out = Vec::new();
        sealer.read_to_end(&mut out).unwrap();
        let stats = sealer.stats();
        assert_eq!(stats.sealed_len, out.len() as u64);
        assert_eq!(stats.mac[..], out[out.len() - 32..]);
        assert_eq!(
            seal::sealed_len(&k, &p, SealOptions::default(), &data[..]).unwrap(),
            out.len() as u64
        );
        // Another content gives another MAC.
        let mut other = Sealer::new(&k, &p, SealOptions::default(), &data[1..]);
        io::copy(&mut other, &mut io::sink()).unwrap();
        assert_ne!(other.stats().mac, stats.mac);
    }
}
