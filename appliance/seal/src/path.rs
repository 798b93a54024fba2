//! Validated relative paths: the identity a sealed file is bound to.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;

use crate::error::{Result, SealError};

/// Longest relative path accepted, in bytes (Linux's PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;

/// A file's path relative to its share root, as bytes: components joined by single `/`, none of them empty,
/// `.` or `..`, no NUL, no leading or trailing `/`. See `docs/FORMAT.md`, section 2.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// Validates `bytes` as a relative path.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<RelPath> {
        let bytes = bytes.into();
        let bad = |why| SealError::BadPath {
            path: String::from_utf8_lossy(&bytes).into_owned(),
            why,
        };
        if bytes.is_empty() {
            return Err(bad("empty"));
        }
        if bytes.len() > MAX_PATH_LEN {
            return Err(bad("longer than 4096 bytes"));
        }
        if bytes.contains(&0) {
            return Err(bad("contains a NUL byte"));
        }
        if bytes.first() == Some(&b'/') {
            return Err(bad("absolute (starts with /)"));
        }
        for component in bytes.split(|&b| b == b'/') {
            match component {
                b"" => return Err(bad("empty component (// or trailing /)")),
                b"." | b".." => return Err(bad("contains a . or .. component")),
                c if c.len() > 255 => return Err(bad("a component is longer than 255 bytes")),
                _ => {}
            }
        }
        Ok(RelPath(bytes))
    }

    /// From an OS path string (e.g. a command-line argument).
    pub fn from_os(s: &OsStr) -> Result<RelPath> {
        RelPath::new(s.as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }

    /// The components, in order.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|&b| b == b'/')
    }

    /// The folder part (empty for a top-level entry) and the last component.
    pub fn split_last(&self) -> (&[u8], &[u8]) {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => (&self.0[..i], &self.0[i + 1..]),
            None => (&[], &self.0),
        }
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_paths() {
        for p in [
            &b"a"[..],
            b"a/b/c.txt",
            b"dir with space/x",
            b"\xff\xfe/\x01",
        ] {
            assert!(RelPath::new(p).is_ok(), "{p:?}");
        }
    }

    #[test]
    fn rejects_bad_paths() {
        for p in [
            &b""[..],
            b"/abs",
            b"a//b",
            b"a/",
            b"./a",
            b"a/../b",
            b"..",
            b"a\0b",
        ] {
            assert!(RelPath::new(p).is_err(), "{p:?}");
        }
        assert!(RelPath::new(vec![b'a'; 256]).is_err());
        assert!(RelPath::new(vec![b'a'; 255]).is_ok());
    }

    #[test]
    fn split_last() {
        let p = RelPath::new(&b"photos/2024/x.jpg"[..]).unwrap();
        assert_eq!(p.split_last(), (&b"photos/2024"[..], &b"x.jpg"[..]));
        let p = RelPath::new(&b"x"[..]).unwrap();
        assert_eq!(p.split_last(), (&b""[..], &b"x"[..]));
    }
}
