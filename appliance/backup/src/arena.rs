//! Short byte strings cut out of shared chunks: one allocation a chunk instead of one a string.
//!
//! An unchanged night makes two strings for every file (its path in the share and its path on the
//! target), on the walking thread, and frees them on the engine's thread once the file's batch is
//! recorded. Allocated one by one, that was ≈ 10 % of the night's CPU (glibc's `malloc` on one thread and
//! `free` on another) and 16 bytes of the allocator's own a string. Cut out of 32 KiB chunks ([`Bytes`]
//! views of one buffer, counted by reference), a string costs a copy and a reference count; a chunk is
//! freed with the last string cut from it.
//!
//! A string kept long pins its whole chunk: what outlives a batch (the folders above the walk's
//! position) is copied out with [`Bytes::copy_from_slice`].

use bytes::{Bytes, BytesMut};

/// Bytes a chunk holds, unless one string needs more.
const CHUNK: usize = 32 * 1024;

/// Where strings are cut from.
#[derive(Default)]
pub struct Arena {
    chunk: BytesMut,
}

impl Arena {
    /// The concatenation of `parts`, cut from the current chunk (a new one when it is full).
    pub fn join(&mut self, parts: &[&[u8]]) -> Bytes {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        // After a cut the chunk's view is empty; its capacity is what is left of the buffer.
        if self.chunk.capacity() < len {
            self.chunk = BytesMut::with_capacity(CHUNK.max(len));
        }
        for p in parts {
            self.chunk.extend_from_slice(p);
        }
        self.chunk.split().freeze()
    }

    /// `a` and `b` joined with a `/`, or `b` alone when `a` is empty: a path below folder `a`.
    pub fn child(&mut self, a: &[u8], b: &[u8]) -> Bytes {
        if a.is_empty() {
            self.join(&[b])
        } else {
            self.join(&[a, b"/", b])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_their_parts_and_share_chunks_until_one_is_full() {
        let mut arena = Arena::default();
        let a = arena.child(b"", b"top");
        let b = arena.child(b"top", b"file name");
        assert_eq!(&a[..], b"top");
        assert_eq!(&b[..], b"top/file name");
        // Cut from one buffer: the second starts where the first ends.
        assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
        let big = vec![7u8; CHUNK + 5];
        let c = arena.join(&[&big]);
        assert_eq!(c.len(), CHUNK + 5);
        assert!(c.iter().all(|&x| x == 7));
        let d = arena.join(&[b"after"]);
        assert_eq!(&d[..], b"after");
        // Dropping some strings leaves the others as they were.
        drop(a);
        drop(c);
        assert_eq!(&b[..], b"top/file name");
        assert_eq!(arena.join(&[]).len(), 0);
    }
}
