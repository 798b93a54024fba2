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
    let mut h: u64 = 0;
    let mut i = MIN_CHUNK;
    while i < normal {
        h = (h << 1).wrapping_add(gear[data[i] as usize]);
        if h & MASK_S == 0 {
            return i + 1;
        }
        i += 1;
    }
    while i < n {
        h = (h << 1).wrapping_add(gear[data[i] as usize]);
        if h & MASK_L == 0 {
            return i + 1;
        }
        i += 1;
    }
    n
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
