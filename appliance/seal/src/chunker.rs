//! Keyed content-defined chunking (chunker id 1): FastCDC-style gear hash with normalized chunking.
//!
//! Written here rather than taken from the `fastcdc` crate on purpose: cut points are part of the sealed
//! format forever (a dependency update that moved one would make rsync re-send every file), and the format
//! needs a fully keyed gear table, while `fastcdc` only XORs its fixed table with a 64-bit seed.
//! Specified in `docs/FORMAT.md`, section 4; golden cut points are checked by the vector tests.

/// Smallest chunk (except a file's last).
pub const MIN_CHUNK: usize = 2048;
/// The size at which the cut condition switches from hard to easy.
pub const AVG_CHUNK: usize = 8192;
/// Largest chunk.
pub const MAX_CHUNK: usize = 65536;
/// 15 top bits: the cut condition before `AVG_CHUNK` (harder).
const MASK_S: u64 = !0u64 << (64 - 15);
/// 11 top bits: the cut condition after `AVG_CHUNK` (easier).
const MASK_L: u64 = !0u64 << (64 - 11);

/// Length of the chunk that starts at `data[0]`.
///
/// `data` must hold at least `MAX_CHUNK` bytes, or everything that is left of the file.
#[inline]
pub fn next_chunk_len(gear: &[u64; 256], data: &[u8]) -> usize {
    let n = data.len().min(MAX_CHUNK);
    if n <= MIN_CHUNK {
        return n;
    }
    let normal = n.min(AVG_CHUNK);
    let (cut, h) = scan(gear, 0, &data[MIN_CHUNK..normal], MASK_S);
    if let Some(at) = cut {
        return MIN_CHUNK + at;
    }
    match scan(gear, h, &data[normal..n], MASK_L).0 {
        Some(at) => normal + at,
        None => n,
    }
}

/// Rolls the gear hash over `data` starting from state `h`; returns the length up to and including the
/// first byte where `h & mask == 0`, or `None` and the final state.
///
/// Four bytes per step: `h₄ = 16h + (8g₀ + 4g₁ + 2g₂ + g₃)`, and each intermediate `hₖ` is computed from `h`
/// directly, so the loop-carried dependency is one shift-and-add per four bytes instead of per byte. The
/// result is exactly that of the byte-at-a-time definition (wrapping arithmetic is a ring).
#[inline(always)]
fn scan(gear: &[u64; 256], mut h: u64, data: &[u8], mask: u64) -> (Option<usize>, u64) {
    let mut quads = data.chunks_exact(4);
    for (q, bytes) in (&mut quads).enumerate() {
        let g0 = gear[bytes[0] as usize];
        let g1 = gear[bytes[1] as usize];
        let g2 = gear[bytes[2] as usize];
        let g3 = gear[bytes[3] as usize];
        let h1 = (h << 1).wrapping_add(g0);
        let h2 = (h1 << 1).wrapping_add(g1);
        let t3 = (g0 << 2).wrapping_add(g1 << 1).wrapping_add(g2);
        let h3 = (h << 3).wrapping_add(t3);
        let h4 = (h << 4).wrapping_add(t3 << 1).wrapping_add(g3);
        if (h1 & mask == 0) | (h2 & mask == 0) | (h3 & mask == 0) | (h4 & mask == 0) {
            let k = if h1 & mask == 0 {
                1
            } else if h2 & mask == 0 {
                2
            } else if h3 & mask == 0 {
                3
            } else {
                4
            };
            return (Some(q * 4 + k), 0);
        }
        h = h4;
    }
    let done = data.len() - quads.remainder().len();
    for (i, &b) in quads.remainder().iter().enumerate() {
        h = (h << 1).wrapping_add(gear[b as usize]);
        if h & mask == 0 {
            return (Some(done + i + 1), 0);
        }
    }
    (None, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> [u64; 256] {
        let mut t = [0u64; 256];
        let mut bytes = [0u8; 2048];
        blake3::Hasher::new_keyed(&[7u8; 32])
            .finalize_xof()
            .fill(&mut bytes);
        for (g, b) in t.iter_mut().zip(bytes.chunks_exact(8)) {
            *g = u64::from_le_bytes(b.try_into().unwrap());
        }
        t
    }

    fn random(len: usize, seed: u8) -> Vec<u8> {
        let mut v = vec![0u8; len];
        blake3::Hasher::new_keyed(&[seed; 32])
            .finalize_xof()
            .fill(&mut v);
        v
    }

    fn cuts(gear: &[u64; 256], data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let n = next_chunk_len(gear, &data[pos..]);
            out.push(n);
            pos += n;
        }
        out
    }

    /// The specification's byte-at-a-time loop, to check the unrolled one against.
    fn reference(gear: &[u64; 256], data: &[u8]) -> usize {
        let n = data.len().min(MAX_CHUNK);
        if n <= MIN_CHUNK {
            return n;
        }
        let mut h: u64 = 0;
        for i in MIN_CHUNK..n {
            h = (h << 1).wrapping_add(gear[data[i] as usize]);
            let mask = if i < AVG_CHUNK { MASK_S } else { MASK_L };
            if h & mask == 0 {
                return i + 1;
            }
        }
        n
    }

    #[test]
    fn unrolled_matches_the_definition() {
        let g = table();
        for seed in 0..4u8 {
            let data = random(3 << 20, seed);
            let mut pos = 0;
            while pos < data.len() {
                // Every possible remainder length near the end, and odd window sizes.
                for end in [
                    data.len(),
                    (pos + 2049).min(data.len()),
                    (pos + 8195).min(data.len()),
                ] {
                    assert_eq!(
                        next_chunk_len(&g, &data[pos..end]),
                        reference(&g, &data[pos..end])
                    );
                }
                pos += next_chunk_len(&g, &data[pos..]);
            }
        }
        // Low-entropy data, where the easy mask matters.
        let text = b"abcabcabd".repeat(50_000);
        let mut pos = 0;
        while pos < text.len() {
            let n = next_chunk_len(&g, &text[pos..]);
            assert_eq!(n, reference(&g, &text[pos..]));
            pos += n;
        }
    }

    #[test]
    fn bounds_hold() {
        let g = table();
        let data = random(4 << 20, 1);
        let c = cuts(&g, &data);
        assert_eq!(c.iter().sum::<usize>(), data.len());
        for &n in &c[..c.len() - 1] {
            assert!((MIN_CHUNK + 1..=MAX_CHUNK).contains(&n), "{n}");
        }
        let mean = data.len() / c.len();
        assert!((7000..14000).contains(&mean), "mean chunk {mean}");
    }

    #[test]
    fn constant_data_cuts_at_max() {
        let g = table();
        let data = vec![0u8; 200_000];
        let c = cuts(&g, &data);
        // A run of equal bytes either always or never meets the mask; either way cuts are deterministic.
        assert_eq!(c.iter().sum::<usize>(), 200_000);
        assert_eq!(c, cuts(&g, &data));
    }

    #[test]
    fn cuts_resynchronize_after_an_insertion() {
        let g = table();
        let data = random(1 << 20, 2);
        let mut edited = data.clone();
        edited.insert(500_000, 0x42);
        let a = cuts(&g, &data);
        let b = cuts(&g, &edited);
        // Chunk boundaries as absolute offsets; after the edit they must match again (shifted by one).
        let ends = |c: &[usize]| {
            c.iter()
                .scan(0usize, |s, &n| {
                    *s += n;
                    Some(*s)
                })
                .collect::<Vec<_>>()
        };
        let ea = ends(&a);
        let eb: Vec<usize> = ends(&b)
            .into_iter()
            .map(|e| if e > 500_000 { e - 1 } else { e })
            .collect();
        let differing = eb.iter().filter(|e| !ea.contains(e)).count();
        assert!(differing <= 2, "{differing} boundaries moved");
    }
}
