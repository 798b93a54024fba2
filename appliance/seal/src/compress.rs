//! Optional per-chunk deflate, tried only where it is likely to pay (`docs/FORMAT.md`, section 5).

use crate::chunker::MAX_CHUNK;

/// Cheap, deterministic compressibility test on every fourth byte (`S` samples): the collision entropy of
/// their histogram is below ≈ 7.4 bits/byte (`512 · Σ c² ≥ 3 · S²`). Random and already-compressed data fail
/// it. Sampling keeps the test at a quarter of a pass over the chunk (`docs/FORMAT.md`, section 5).
pub(crate) fn worth_trying(data: &[u8]) -> bool {
    let (sum_sq, count) = sample_histogram(data);
    512 * sum_sq >= 3 * count * count
}

/// `(Σ c², S)` over the histogram of every fourth byte of `data` (`S` samples).
fn sample_histogram(data: &[u8]) -> (u64, u64) {
    // Four interleaved histograms (one per sample of a 16-byte step) avoid store-to-load stalls on runs of
    // equal bytes and let the four increments of a step proceed side by side.
    let mut h = [[0u32; 256]; 4];
    let mut steps = data.chunks_exact(16);
    for s in &mut steps {
        h[0][s[0] as usize] += 1;
        h[1][s[4] as usize] += 1;
        h[2][s[8] as usize] += 1;
        h[3][s[12] as usize] += 1;
    }
    for &b in steps.remainder().iter().step_by(4) {
        h[0][b as usize] += 1;
    }
    let count = data.len().div_ceil(4) as u64;
    let [h0, h1, h2, h3] = &h;
    let sum_sq: u64 = (0..256)
        .map(|v| u64::from(h0[v] + h1[v] + h2[v] + h3[v]).pow(2))
        .sum();
    (sum_sq, count)
}

/// A reusable raw-deflate compressor: libdeflate at level 1 (`docs/FORMAT.md`, section 5, says why this
/// one). Its state is only made when a chunk first passes the compressibility test (incompressible files
/// never pay for it) and is recycled when it is dropped ([`crate::spare`]). Each chunk is one
/// complete deflate stream: libdeflate keeps nothing from one call to the next.
pub(crate) struct Compressor {
    state: Option<libdeflater::Compressor>,
    out: Vec<u8>,
}

/// The format's deflate level.
const LEVEL: i32 = 1;

fn new_state() -> libdeflater::Compressor {
    libdeflater::Compressor::new(
        libdeflater::CompressionLvl::new(LEVEL).expect("libdeflate has compression level 1"),
    )
}

impl Drop for Compressor {
    fn drop(&mut self) {
        if let Some(s) = self.state.take() {
            crate::spare::give_deflate(s);
        }
        crate::spare::give_buffer(std::mem::take(&mut self.out));
    }
}

impl Compressor {
    pub(crate) fn new() -> Compressor {
        Compressor {
            state: None,
            out: Vec::new(),
        }
    }

    /// The compressed form of `data` if it is worth keeping (saves at least 1/16), else `None`.
    pub(crate) fn compress(&mut self, data: &[u8]) -> Option<&[u8]> {
        if !worth_trying(data) {
            return None;
        }
        let limit = data.len() * 15 / 16;
        let state = self
            .state
            .get_or_insert_with(|| crate::spare::take_deflate(new_state));
        if self.out.len() < MAX_CHUNK {
            // Only the bytes deflate writes are read back.
            self.out = crate::spare::take_window(MAX_CHUNK);
        }
        // libdeflate reports a stream that does not fit in `limit` bytes as an error (or as 0 bytes).
        match state.deflate_compress(data, &mut self.out[..limit]) {
            Ok(produced) if produced > 0 => Some(&self.out[..produced]),
            _ => None,
        }
    }
}

/// A reusable raw-deflate decompressor (its state, about 11 KiB, is allocated once per file).
pub(crate) struct Inflater {
    state: Box<miniz_oxide::inflate::core::DecompressorOxide>,
}

impl Inflater {
    pub(crate) fn new() -> Inflater {
        Inflater {
            state: Box::default(),
        }
    }

    /// Inflates a raw deflate `payload` into `out`; `None` unless the payload is exactly one complete
    /// stream whose output fits in `out`.
    pub(crate) fn inflate(&mut self, payload: &[u8], out: &mut [u8]) -> Option<usize> {
        use miniz_oxide::inflate::TINFLStatus;
        use miniz_oxide::inflate::core::{decompress, inflate_flags};
        self.state.init();
        let (status, consumed, produced) = decompress(
            &mut self.state,
            payload,
            out,
            0,
            inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
        );
        (status == TINFLStatus::Done && consumed == payload.len()).then_some(produced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_matches_the_definition() {
        let mut data = vec![0u8; 70_000];
        blake3::Hasher::new().finalize_xof().fill(&mut data);
        for (i, b) in data.iter_mut().enumerate().skip(30_000) {
            *b %= 1 + (i % 40) as u8;
        }
        for len in (0..100).chain([2047, 2048, 8191, 8192, 65_536, 70_000]) {
            for start in [0, 1, 3, 30_001] {
                let d = &data[start.min(data.len() - len)..][..len];
                let mut h = [0u64; 256];
                for &b in d.iter().step_by(4) {
                    h[b as usize] += 1;
                }
                let expect = (h.iter().map(|c| c * c).sum(), d.len().div_ceil(4) as u64);
                assert_eq!(sample_histogram(d), expect, "len {len} start {start}");
            }
        }
    }

    #[test]
    fn random_is_not_worth_trying_and_text_is() {
        let mut random = vec![0u8; 8192];
        blake3::Hasher::new().finalize_xof().fill(&mut random);
        assert!(!worth_trying(&random));
        let text = b"the quick brown fox jumps over the lazy dog\n".repeat(200);
        assert!(worth_trying(&text));
    }

    fn inflate_bounded(payload: &[u8], out: &mut [u8]) -> Option<usize> {
        Inflater::new().inflate(payload, out)
    }

    #[test]
    fn roundtrip() {
        let text = b"the quick brown fox jumps over the lazy dog\n".repeat(200);
        let mut c = Compressor::new();
        let packed = c.compress(&text).expect("text compresses").to_vec();
        assert!(packed.len() < text.len() / 4);
        let mut out = vec![0u8; MAX_CHUNK];
        let n = inflate_bounded(&packed, &mut out).unwrap();
        assert_eq!(&out[..n], &text[..]);
        // Deterministic across calls (the compressor is reset).
        assert_eq!(c.compress(&text).unwrap(), &packed[..]);
    }

    #[test]
    fn inflate_is_bounded() {
        let zeros = vec![0u8; 60000];
        let mut c = Compressor::new();
        let packed = c.compress(&zeros).unwrap().to_vec();
        let mut small = vec![0u8; 1000];
        assert!(inflate_bounded(&packed, &mut small).is_none());
        assert!(inflate_bounded(b"\xff\xff\xff", &mut small).is_none());
        // Exactly one complete stream: no trailing bytes, no cut-off stream; one Inflater serves many.
        let mut inflater = Inflater::new();
        let text = b"abcdefgh".repeat(100);
        let mut packed = c.compress(&text).unwrap().to_vec();
        let mut out = vec![0u8; MAX_CHUNK];
        assert_eq!(inflater.inflate(&packed, &mut out), Some(text.len()));
        assert!(
            inflater
                .inflate(&packed[..packed.len() - 1], &mut out)
                .is_none()
        );
        assert_eq!(inflater.inflate(&packed, &mut out), Some(text.len()));
        packed.push(0);
        assert!(inflater.inflate(&packed, &mut out).is_none());
    }
}
