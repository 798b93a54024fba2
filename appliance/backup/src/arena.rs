//! A batch's short byte strings, written into shared chunks as the batch is walked and cut out of them as
//! [`Bytes`] once the batch is complete.
//!
//! An unchanged night makes two strings for every file (its path in the share and its path on the
//! target) on the walking thread, and frees them on the engine's thread once the file's batch is
//! recorded. Allocated one by one, that was ≈ 9 % of the night's CPU in `perf` (glibc's `malloc` on one
//! thread and `free` on another) and 16 bytes of the allocator's own a string. Cut one by one from shared
//! chunks as they were made, each cut's atomic reference count waited for the copy into cold memory just
//! before it (6 % of the night). Here the strings are copied into plain 64 KiB chunks during the walk
//! (spans, no reference counts), and cut in one pass at the end, where the counts are a tight loop.

use bytes::Bytes;

/// Bytes a chunk holds, unless one string needs more: below glibc's smallest `mmap` threshold, so chunks
/// come from the heap and are reused batch after batch (one buffer a batch, sized for it, moved the
/// threshold and the peak RSS from run to run).
const CHUNK: usize = 64 * 1024;

/// Where one string is in its [`Arena`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    chunk: u32,
    at: u32,
    len: u32,
}

/// A string longer than 4 GiB, or an arena of more than 4 G chunks: never from a walk, but refused
/// rather than cut wrong.
#[derive(Debug)]
pub struct TooLong;

/// The buffers of one batch's strings.
#[derive(Debug, Default)]
pub struct Arena {
    chunks: Vec<Vec<u8>>,
}

impl Arena {
    /// Writes the concatenation of `parts`.
    pub fn push(&mut self, parts: &[&[u8]]) -> Result<Span, TooLong> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let full = self
            .chunks
            .last()
            .is_none_or(|c| c.capacity() - c.len() < len);
        if full {
            self.chunks.push(Vec::with_capacity(CHUNK.max(len)));
        }
        let chunk = self.chunks.len() - 1;
        let buf = &mut self.chunks[chunk];
        let at = buf.len();
        let span = Span {
            chunk: u32::try_from(chunk).map_err(|_| TooLong)?,
            at: u32::try_from(at).map_err(|_| TooLong)?,
            len: u32::try_from(len).map_err(|_| TooLong)?,
        };
        for p in parts {
            buf.extend_from_slice(p);
        }
        Ok(span)
    }

    /// Writes `a` and `b` joined with a `/`, or `b` alone when `a` is empty: a path below folder `a`.
    pub fn push_child(&mut self, a: &[u8], b: &[u8]) -> Result<Span, TooLong> {
        if a.is_empty() {
            self.push(&[b])
        } else {
            self.push(&[a, b"/", b])
        }
    }

    /// The string at `span`.
    pub fn get(&self, span: Span) -> &[u8] {
        let at = span.at as usize;
        &self.chunks[span.chunk as usize][at..at + span.len as usize]
    }

    /// The strings, ready to be cut ([`Cut::get`]).
    pub fn cut(self) -> Cut {
        Cut(self.chunks.into_iter().map(Bytes::from).collect())
    }
}

/// An arena's strings, shared: each cut counts a reference, and a chunk is freed with its last string.
pub struct Cut(Vec<Bytes>);

impl Cut {
    /// The string at `span`, sharing its chunk.
    pub fn get(&self, span: Span) -> Bytes {
        let at = span.at as usize;
        self.0[span.chunk as usize].slice(at..at + span.len as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_their_parts_and_share_chunks_until_one_is_full() {
        let mut arena = Arena::default();
        let a = arena.push_child(b"", b"top").unwrap();
        let b = arena.push_child(b"top", b"file name").unwrap();
        let e = arena.push(&[]).unwrap();
        let big = vec![7u8; CHUNK];
        let c = arena.push(&[&big]).unwrap();
        let d = arena.push(&[b"after"]).unwrap();
        assert_eq!(arena.get(c), &big[..]);
        assert_eq!(arena.get(d), b"after");
        assert_eq!(arena.get(a), b"top");
        assert_eq!(arena.get(b), b"top/file name");
        let cut = arena.cut();
        let (a, b, e, c, d) = (cut.get(a), cut.get(b), cut.get(e), cut.get(c), cut.get(d));
        assert_eq!(&c[..], &big[..]);
        assert_eq!(&d[..], b"after");
        drop(cut);
        assert_eq!(&a[..], b"top");
        assert_eq!(&b[..], b"top/file name");
        assert!(e.is_empty());
        // One chunk: the second starts where the first ends.
        assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
        drop(a);
        assert_eq!(&b[..], b"top/file name");
    }
}
