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

/// A hasher keyed with `key` that has already absorbed `header ‖ file_id`: the common prefix of every
/// chunk tag and of the trailer MAC.
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
