//! A batch's short byte strings, written into one buffer as the batch is walked and cut out of it as
//! [`Bytes`] once the batch is complete.
//!
//! An unchanged night makes two strings for every file (its path in the share and its path on the
//! target) on the walking thread, and frees them on the engine's thread once the file's batch is
//! recorded. Allocated one by one, that was ≈ 10 % of the night's CPU in `perf` (glibc's `malloc` on one
//! thread and `free` on another) and 16 bytes of the allocator's own a string. Cut one by one from shared
//! chunks as they were made, each cut's atomic reference count waited for the copy into cold memory just
//! before it (6 % of the night). Here the strings are copied into a plain buffer during the walk (spans,
//! no reference counts), and cut in one pass at the end, where the counts are a tight loop on one line.

use std::ops::Range;

use bytes::Bytes;

/// Where one string is in its [`Arena`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    at: usize,
    len: usize,
}

impl Span {
    fn range(self) -> Range<usize> {
        self.at..self.at + self.len
    }
}

/// The buffer of one batch's strings.
#[derive(Debug, Default)]
pub struct Arena {
    buf: Vec<u8>,
}

impl Arena {
    /// An empty arena with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Arena {
        Arena {
            buf: Vec::with_capacity(bytes),
        }
    }

    /// Writes the concatenation of `parts`.
    pub fn push(&mut self, parts: &[&[u8]]) -> Span {
        let at = self.buf.len();
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        Span {
            at,
            len: self.buf.len() - at,
        }
    }

    /// Writes `a` and `b` joined with a `/`, or `b` alone when `a` is empty: a path below folder `a`.
    pub fn push_child(&mut self, a: &[u8], b: &[u8]) -> Span {
        if a.is_empty() {
            self.push(&[b])
        } else {
            self.push(&[a, b"/", b])
        }
    }

    /// The string at `span`.
    pub fn get(&self, span: Span) -> &[u8] {
        &self.buf[span.range()]
    }

    /// The strings, ready to be cut ([`Cut::get`]); the buffer is trimmed to what was written.
    pub fn cut(self) -> Cut {
        let mut buf = self.buf;
        buf.shrink_to_fit();
        Cut(Bytes::from(buf))
    }
}

/// An arena's strings, shared: each cut counts a reference, and the buffer is freed with the last.
pub struct Cut(Bytes);

impl Cut {
    /// The string at `span`, sharing the buffer.
    pub fn get(&self, span: Span) -> Bytes {
        self.0.slice(span.range())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_their_parts_and_share_one_buffer() {
        let mut arena = Arena::with_capacity(4);
        let a = arena.push_child(b"", b"top");
        let b = arena.push_child(b"top", b"file name");
        let e = arena.push(&[]);
        assert_eq!(arena.get(a), b"top");
        assert_eq!(arena.get(b), b"top/file name");
        let cut = arena.cut();
        let (a, b, e) = (cut.get(a), cut.get(b), cut.get(e));
        drop(cut);
        assert_eq!(&a[..], b"top");
        assert_eq!(&b[..], b"top/file name");
        assert!(e.is_empty());
        // One buffer: the second starts where the first ends.
        assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
        drop(a);
        assert_eq!(&b[..], b"top/file name");
    }
}
