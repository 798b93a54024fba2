//! Constants and the fixed-size parts of the sealed layout (`docs/FORMAT.md`, section 3).

use crate::keys::{KeySet, Suite};
use crate::path::RelPath;

pub const MAGIC: [u8; 4] = *b"OFSL";
pub const VERSION: u8 = 1;
pub const CHUNKER_GEAR_V1: u8 = 1;
pub const HEADER_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Record length prefix.
pub const LEN_LEN: usize = 4;
/// Largest encrypted body: one flags byte plus the largest chunk.
pub const MAX_BODY: usize = 1 + crate::chunker::MAX_CHUNK;
/// `count ‖ plain_len ‖ mac`, after the zero length prefix.
pub const TRAILER_BODY_LEN: usize = 8 + 8 + 32;
pub const TRAILER_LEN: usize = LEN_LEN + TRAILER_BODY_LEN;

pub const FLAG_RAW: u8 = 0;
pub const FLAG_DEFLATE: u8 = 1;

/// `H(K_fid, path)`.
pub(crate) fn file_id(keys: &KeySet, path: &RelPath) -> [u8; 32] {
    *blake3::keyed_hash(&keys.file_id, path.as_bytes()).as_bytes()
}

pub(crate) fn header(suite: Suite, key_id: [u8; 8], file_id: &[u8; 32]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4] = VERSION;
    h[5] = suite.id();
    h[6] = CHUNKER_GEAR_V1;
    h[7] = 0;
    h[8..16].copy_from_slice(&key_id);
    h[16..24].copy_from_slice(&file_id[..8]);
    h
}

/// Bytes of a chunk tag's input before the body: `header ‖ file_id`.
pub(crate) const TAG_PREFIX_LEN: usize = HEADER_LEN + 32;

/// The chunk tag's input up to the body (`header ‖ file_id`): the first [`TAG_PREFIX_LEN`] bytes of every
/// buffer handed to [`ChunkMac::tag`].
pub(crate) fn tag_prefix(header: &[u8; HEADER_LEN], file_id: &[u8; 32]) -> [u8; TAG_PREFIX_LEN] {
    let mut p = [0u8; TAG_PREFIX_LEN];
    p[..HEADER_LEN].copy_from_slice(header);
    p[HEADER_LEN..].copy_from_slice(file_id);
    p
}

/// The chunk tag `H(K_mac, header ‖ file_id ‖ body)[..16]`, computed over one contiguous buffer.
///
/// Why contiguous: BLAKE3 hashes the full 1 KiB chunks of one `update` side by side with SIMD (eight at a
/// time with AVX2). A hasher that had absorbed the 56-byte prefix first must finish the first 1 KiB chunk
/// alone and can then take only subtrees of 1, 2 and 4 chunks, as its counter allows: for 8 KiB bodies that
/// was most of the sealing time spent in the MAC (`docs/BENCHMARKS.md`, "Sealed format: throughput").
#[derive(Clone)]
pub(crate) struct ChunkMac {
    key: [u8; 32],
}

impl ChunkMac {
    pub(crate) fn new(key: &[u8; 32]) -> ChunkMac {
        ChunkMac { key: *key }
    }

    /// `input` is `header ‖ file_id ‖ body`.
    pub(crate) fn tag(&self, input: &[u8]) -> [u8; TAG_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(input);
        let mut tag = [0u8; TAG_LEN];
        h.finalize_xof().fill(&mut tag);
        tag
    }
}

/// A hasher keyed with `key` that has already absorbed `header ‖ file_id`: the prefix of the trailer MAC.
pub(crate) fn prefixed_hasher(
    key: &[u8; 32],
    header: &[u8; HEADER_LEN],
    file_id: &[u8; 32],
) -> blake3::Hasher {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(header);
    h.update(file_id);
    h
}
