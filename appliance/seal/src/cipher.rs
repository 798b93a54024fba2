//! The two suites' keystreams, with the tag as IV (`docs/FORMAT.md`, section 3, "Chunk record").

use aes::cipher::common::array::Array;
use aes::cipher::consts::U16;
use aes::cipher::typenum::Unsigned;
use aes::cipher::{
    BlockCipherEncBackend, BlockCipherEncClosure, BlockCipherEncrypt, BlockSizeUser, KeyInit,
    KeyIvInit, ParBlocks, StreamCipher,
};

use crate::format::TAG_LEN;
use crate::keys::{KeySet, Suite};

/// Encrypts or decrypts chunk bodies of one suite (CTR and XChaCha20 are their own inverse).
pub(crate) enum ChunkCipher {
    /// The expanded AES key, reused for every chunk.
    Aes(Box<aes::Aes256>),
    XChaCha([u8; 32]),
}

impl ChunkCipher {
    pub(crate) fn new(keys: &KeySet, suite: Suite) -> ChunkCipher {
        match suite {
            Suite::Aes256Ctr => ChunkCipher::Aes(Box::new(aes::Aes256::new(&keys.enc_aes.into()))),
            Suite::XChaCha20 => ChunkCipher::XChaCha(keys.enc_xchacha),
        }
    }

    pub(crate) fn apply(&self, tag: &[u8; TAG_LEN], buf: &mut [u8]) {
        match self {
            ChunkCipher::Aes(aes) => aes.encrypt_with_backend(CtrXor {
                counter: u128::from_be_bytes(*tag),
                buf,
            }),
            ChunkCipher::XChaCha(key) => {
                let mut nonce = [0u8; 24];
                nonce[..TAG_LEN].copy_from_slice(tag);
                let mut c = chacha20::XChaCha20::new(&(*key).into(), &nonce.into());
                c.apply_keystream(buf);
            }
        }
    }
}

/// AES-256-CTR with a 128-bit big-endian counter (the `ctr` crate's `Ctr128BE`), applied to a whole chunk
/// body in one call to the AES backend.
///
/// Written here rather than with `ctr` because of how a chunk's last blocks are encrypted. `ctr` (through
/// `cipher`'s stream wrapper) encrypts whole batches of the backend's parallel width (64 blocks, 1 KiB, with
/// VAES-512) and then the remaining 0–63 blocks one at a time, each a serial chain of 14 rounds. For 8–10 KiB
/// chunks that tail was about half of all AES time. Here the tail is one more parallel batch, of which only
/// the bytes needed are used. The key schedule is also no longer copied per chunk.
struct CtrXor<'a> {
    counter: u128,
    buf: &'a mut [u8],
}

impl BlockSizeUser for CtrXor<'_> {
    type BlockSize = U16;
}

impl BlockCipherEncClosure for CtrXor<'_> {
    #[inline(always)]
    fn call<B: BlockCipherEncBackend<BlockSize = U16>>(self, backend: &B) {
        let par = B::ParBlocksSize::USIZE;
        let mut counter = self.counter;
        let mut keystream = ParBlocks::<B>::default();
        for piece in self.buf.chunks_mut(par * 16) {
            let blocks = piece.len().div_ceil(16);
            // A short tail (under an eighth of a batch) is cheaper one block at a time.
            let batch = blocks * 8 >= par;
            let used = if batch { par } else { blocks };
            for block in keystream.iter_mut().take(used) {
                *block = counter.to_be_bytes().into();
                counter = counter.wrapping_add(1);
            }
            if batch {
                backend.encrypt_par_blocks_inplace(&mut keystream);
            } else {
                for block in keystream.iter_mut().take(blocks) {
                    backend.encrypt_block_inplace(block);
                }
            }
            let flat = Array::cast_slice_to_core(keystream.as_slice()).as_flattened();
            xor_into(piece, &flat[..piece.len()]);
        }
    }
}

/// `dst ^= src`, 64 bytes at a time where it can (the compiler turns these into vector instructions).
#[inline(always)]
fn xor_into(dst: &mut [u8], src: &[u8]) {
    let mut d = dst.chunks_exact_mut(64);
    let mut s = src.chunks_exact(64);
    for (a, b) in (&mut d).zip(&mut s) {
        for (x, y) in a.iter_mut().zip(b) {
            *x ^= y;
        }
    }
    for (x, y) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *x ^= y;
    }
}

impl Drop for ChunkCipher {
    fn drop(&mut self) {
        if let ChunkCipher::XChaCha(k) = self {
            zeroize::Zeroize::zeroize(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{MasterKey, Suite};

    /// The batched CTR gives the `ctr` crate's `Ctr128BE` keystream for every length around the batch and
    /// tail sizes, and across the counter's wrap.
    #[test]
    fn aes_ctr_matches_the_ctr_crate() {
        use aes::cipher::{InnerIvInit, StreamCipherCoreWrapper};
        type Reference = ctr::CtrCore<aes::Aes256, ctr::flavors::Ctr128BE>;
        let master = MasterKey::from_bytes([3; 32], Suite::Aes256Ctr);
        let keys = master.derive_keys();
        let cipher = ChunkCipher::new(&keys.0, Suite::Aes256Ctr);
        let aes = aes::Aes256::new(&keys.0.enc_aes.into());
        let mut lens: Vec<usize> = (0..=300).collect();
        for base in [1024, 2048, 8192, 9000, 65537] {
            lens.extend(base - 20..base + 20);
        }
        for (i, len) in lens.into_iter().enumerate() {
            let mut tag = [i as u8; TAG_LEN];
            if i % 3 == 0 {
                // Close to the wrap, so that some chunks cross it.
                tag = [0xff; TAG_LEN];
                tag[15] = 0xff - (i % 200) as u8;
            }
            let plain: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
            let mut ours = plain.clone();
            cipher.apply(&tag, &mut ours);
            let mut theirs = plain;
            let core = Reference::inner_iv_init(aes.clone(), &tag.into());
            StreamCipherCoreWrapper::from_core(core).apply_keystream(&mut theirs);
            assert_eq!(ours, theirs, "length {len}, tag {tag:02x?}");
        }
    }

    /// The AES suite's counter is the full 128-bit block: it wraps from ff..ff to 00..00.
    #[test]
    fn aes_counter_is_128_bit_big_endian() {
        let master = MasterKey::from_bytes([1; 32], Suite::Aes256Ctr);
        let keys = master.derive_keys();
        let cipher = ChunkCipher::new(&keys.0, Suite::Aes256Ctr);
        let mut buf = [0u8; 32];
        cipher.apply(&[0xff; 16], &mut buf);
        let aes = aes::Aes256::new(&keys.0.enc_aes.into());
        let mut b0 = [0xffu8; 16].into();
        aes.encrypt_block(&mut b0);
        let mut b1 = [0u8; 16].into();
        aes.encrypt_block(&mut b1);
        assert_eq!(&buf[..16], &b0[..]);
        assert_eq!(&buf[16..], &b1[..]);
    }
}
