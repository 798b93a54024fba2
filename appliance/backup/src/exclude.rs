//! Exclude patterns with rsync's meaning, matched on the box against plaintext paths.
//!
//! Matching happens here, on the bytes of each path, never through a shell or a remote command line: a
//! name with spaces, quotes, `*`, `[`, `#`, a leading dash or bytes that are not UTF-8 is just bytes.
//! The glob engine is `globset`; this module only translates rsync's rules:
//!
//! * a pattern starting with `/` is anchored at the share root, otherwise it may match at any depth;
//! * a pattern ending with `/` matches folders only;
//! * `*` and `?` stop at `/`, `**` crosses it, `[...]` is a class, `\` escapes the next character;
//! * `dir/***` matches `dir` itself and everything below it;
//! * an excluded folder is not entered, so everything below it is excluded too.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};

/// A compiled list of exclude patterns.
#[derive(Debug, Clone)]
pub struct Excludes {
    any: GlobSet,
    dirs: GlobSet,
}

impl Default for Excludes {
    fn default() -> Self {
        Excludes {
            any: GlobSet::empty(),
            dirs: GlobSet::empty(),
        }
    }
}

fn glob(pattern: &str) -> Result<globset::Glob, String> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| format!("invalid pattern {pattern:?}: {}", e.kind()))
}

impl Excludes {
    /// Compiles `patterns`; an error gives the index of the bad pattern and why.
    pub fn new(patterns: &[String]) -> Result<Excludes, (usize, String)> {
        let mut any = GlobSetBuilder::new();
        let mut dirs = GlobSetBuilder::new();
        for (i, p) in patterns.iter().enumerate() {
            let bad = |m: String| (i, m);
            if p.is_empty() || p == "/" {
                return Err(bad("an empty pattern matches nothing; remove it".into()));
            }
            if p.contains('\0') || p.contains('\n') {
                return Err(bad("a pattern cannot contain NUL or a newline".into()));
            }
            let (p, dir_only) = match p.strip_suffix('/') {
                Some(s) => (s, true),
                None => (p.as_str(), false),
            };
            let (p, anchored) = match p.strip_prefix('/') {
                Some(s) => (s, true),
                None => (p, false),
            };
            if p.is_empty() {
                return Err(bad("an empty pattern matches nothing; remove it".into()));
            }
            let (p, with_contents) = match p.strip_suffix("/***") {
                Some(s) if !s.is_empty() => (s, true),
                _ => (p, false),
            };
            let full = if anchored {
                p.to_owned()
            } else {
                format!("**/{p}")
            };
            let set = if dir_only && !with_contents {
                &mut dirs
            } else {
                &mut any
            };
            set.add(glob(&full).map_err(bad)?);
            if with_contents {
                set.add(glob(&format!("{full}/**")).map_err(bad)?);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| (0, e.to_string()));
        Ok(Excludes {
            any: build(any)?,
            dirs: build(dirs)?,
        })
    }

    /// True when `path` (relative to the share root, `/`-separated bytes) is excluded.
    pub fn is_excluded(&self, path: &[u8], is_dir: bool) -> bool {
        if self.any.is_empty() && self.dirs.is_empty() {
            return false;
        }
        let c = Candidate::new(Path::new(OsStr::from_bytes(path)));
        self.any.is_match_candidate(&c) || (is_dir && self.dirs.is_match_candidate(&c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &[&str]) -> Excludes {
        Excludes::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn rsync_meanings() {
        let e = ex(&["*.tmp", "/cache/", "logs/*.log", "a/***", "--weird name #1"]);
        assert!(e.is_excluded(b"x.tmp", false));
        assert!(e.is_excluded(b"deep/er/x.tmp", false));
        assert!(!e.is_excluded(b"x.tmpl", false));
        assert!(e.is_excluded(b"cache", true));
        assert!(!e.is_excluded(b"cache", false), "folders only");
        assert!(!e.is_excluded(b"sub/cache", true), "anchored");
        assert!(e.is_excluded(b"logs/x.log", false));
        assert!(e.is_excluded(b"srv/logs/x.log", false));
        assert!(!e.is_excluded(b"logs/old/x.log", false), "* stops at /");
        assert!(e.is_excluded(b"a", true));
        assert!(e.is_excluded(b"a/b/c", false));
        assert!(e.is_excluded(b"--weird name #1", false));
    }

    #[test]
    fn awkward_bytes() {
        let e = ex(&["[[]x*", "quote\"d 'name'", "\\*literal", "bad*"]);
        assert!(e.is_excluded(b"[x1", false));
        assert!(e.is_excluded(b"quote\"d 'name'", false));
        assert!(e.is_excluded(b"*literal", false));
        assert!(!e.is_excluded(b"xliteral", false));
        assert!(e.is_excluded(b"bad\xff\xfe", false), "not UTF-8");
        assert!(!e.is_excluded(b"good\xff", false));
    }

    #[test]
    fn bad_patterns() {
        assert_eq!(Excludes::new(&["ok".into(), "a[".into()]).unwrap_err().0, 1);
        assert!(Excludes::new(&["".into()]).is_err());
    }
}
