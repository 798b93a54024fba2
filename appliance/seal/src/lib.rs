//! # offsite's sealed format
//!
//! Turns (master key, relative path, plaintext stream) into a sealed stream and back, such that
//!
//! - **rsync still works**: content-defined chunks are encrypted independently of their position, so a small
//!   edit changes a small part of the sealed file and rsync's delta transfer sends little;
//! - **it is deterministic**: the same key, path and plaintext always give the same bytes, so unchanged
//!   files look unchanged on the remote;
//! - **it is authenticated**: every chunk carries a SIV tag bound to the file's path; a trailer binds their
//!   order, count and total length; tampering, truncation, reordering and moving chunks or files between
//!   paths are detected;
//! - **it streams** in constant memory (a few hundred KiB), in both directions.
//!
//! Names are sealed per path component with AES-SIV ([`names`]). The byte layout is specified in
//! `docs/FORMAT.md`; what it leaks is in `docs/SECURITY.md`.
//!
//! ```
//! use std::io::Read;
//! use seal::{MasterKey, RelPath, SealOptions, Sealer, Suite, Unsealer};
//!
//! let keys = MasterKey::generate(Suite::XChaCha20).unwrap().derive_keys();
//! let path = RelPath::new("docs/letter.txt").unwrap();
//! let mut sealed = Vec::new();
//! Sealer::new(&keys, &path, SealOptions::default(), &b"Dear Sir"[..]).read_to_end(&mut sealed).unwrap();
//! let mut plain = Vec::new();
//! Unsealer::new(&keys, &path, &sealed[..]).read_to_end(&mut plain).unwrap();
//! assert_eq!(plain, b"Dear Sir");
//! ```

pub mod chunker;
mod cipher;
mod compress;
mod error;
pub mod format;
mod keys;
pub mod names;
mod path;
mod seal;
mod spare;
mod unseal;

pub use error::{Result, SealError};
pub use keys::{KdfParams, Keys, MasterKey, Suite, cpu_has_aes, hex, subkeys_for_vectors};
pub use path::{MAX_PATH_LEN, RelPath};
pub use seal::{
    SealOptions, SealStats, SealedLenCounter, Sealer, seal, seal_with_threads, sealed_len,
    sealed_len_bound,
};
pub use unseal::{
    UnsealStats, Unsealer, temp_file_beside, unseal_to_file, unseal_verified_first, verify,
};

/// Reads until `buf` is full or the input ends; returns how much was read.
pub(crate) fn read_full(input: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
