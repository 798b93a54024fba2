//! The two suites' keystreams, with the tag as IV (`docs/FORMAT.md`, section 3, "Chunk record").

use aes::cipher::{InnerIvInit, KeyInit, KeyIvInit, StreamCipher, StreamCipherCoreWrapper};

use crate::format::TAG_LEN;
use crate::keys::{KeySet, Suite};

type Aes256CtrCore = ctr::CtrCore<aes::Aes256, ctr::flavors::Ctr128BE>;

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
            ChunkCipher::Aes(aes) => {
                let core = Aes256CtrCore::inner_iv_init((**aes).clone(), &(*tag).into());
                let mut c = StreamCipherCoreWrapper::from_core(core);
                c.apply_keystream(buf);
            }
            ChunkCipher::XChaCha(key) => {
                let mut nonce = [0u8; 24];
                nonce[..TAG_LEN].copy_from_slice(tag);
                let mut c = chacha20::XChaCha20::new(&(*key).into(), &nonce.into());
                c.apply_keystream(buf);
            }
        }
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
    use aes::cipher::BlockCipherEncrypt;

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
