//! Walks a share depth-first in a fixed order, one folder listing in memory per level.
//!
//! The order is "component-wise byte order" ([`walk_cmp`]): a folder comes right before its contents, and
//! siblings are sorted by their name bytes. The index and the manifest are written in this order, so the
//! previous run's index can be read alongside the walk (a merge, not a lookup table in memory).
//!
//! Symlinks are recorded as links and never followed, so loops cannot happen and nothing outside the share
//! is read. Fifos, sockets and devices are reported and skipped. Entries that cannot be read are reported
//! and skipped; the walk goes on.

use std::cmp::Ordering;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::exclude::Excludes;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink(Vec<u8>),
}

/// The metadata of one entry that the engine needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub ctime: i64,
    pub ctime_nsec: u32,
    pub ino: u64,
    pub dev: u64,
    pub perms: u32,
}

impl Stat {
    pub fn of(meta: &fs::Metadata) -> Stat {
        Stat {
            size: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
            ctime: meta.ctime(),
            ctime_nsec: u32::try_from(meta.ctime_nsec()).unwrap_or(0),
            ino: meta.ino(),
            dev: meta.dev(),
            perms: meta.mode() & 0o7777,
        }
    }
}

/// One entry of the share.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the share root, `/`-separated bytes.
    pub rel: Vec<u8>,
    /// Where it is on disk.
    pub path: PathBuf,
    pub kind: Kind,
    pub stat: Stat,
}

/// What the walk yields.
#[derive(Debug)]
pub enum Item {
    Entry(Entry),
    /// Not backed up, with the reason (unreadable, special file, ...).
    Skipped {
        rel: Vec<u8>,
        reason: String,
    },
}

struct Frame {
    rel: Vec<u8>,
    dir: PathBuf,
    /// Remaining names, sorted descending so `pop` yields them in order.
    names: Vec<OsString>,
}

/// The depth-first walk of one share.
pub struct Walker {
    excludes: Excludes,
    stack: Vec<Frame>,
    /// The share root's own attributes (it is the snapshot folder's `.`).
    pub root: Stat,
}

fn read_sorted(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for item in fs::read_dir(dir)? {
        names.push(item?.file_name());
    }
    names.sort_unstable_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
    Ok(names)
}

impl Walker {
    /// Starts at `root`, which must be a folder (a symlink to one is followed: it is the configured path).
    pub fn new(root: &Path, excludes: Excludes) -> io::Result<Walker> {
        let meta = fs::metadata(root)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "the share path is not a folder",
            ));
        }
        let names = read_sorted(root)?;
        Ok(Walker {
            excludes,
            stack: vec![Frame {
                rel: Vec::new(),
                dir: root.to_owned(),
                names,
            }],
            root: Stat::of(&meta),
        })
    }
}

impl Iterator for Walker {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        loop {
            let frame = self.stack.last_mut()?;
            let Some(name) = frame.names.pop() else {
                self.stack.pop();
                continue;
            };
            let mut rel = frame.rel.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.as_bytes());
            let path = frame.dir.join(&name);
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                // Gone between the listing and now: nothing to back up, nothing to report.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Some(Item::Skipped {
                        rel,
                        reason: e.to_string(),
                    });
                }
            };
            let ft = meta.file_type();
            let is_dir = ft.is_dir();
            if self.excludes.is_excluded(&rel, is_dir) {
                continue;
            }
            let stat = Stat::of(&meta);
            let kind = if ft.is_file() {
                Kind::File
            } else if is_dir {
                match read_sorted(&path) {
                    Ok(names) => self.stack.push(Frame {
                        rel: rel.clone(),
                        dir: path.clone(),
                        names,
                    }),
                    Err(e) => {
                        return Some(Item::Skipped {
                            rel,
                            reason: format!("cannot list the folder: {e}"),
                        });
                    }
                }
                Kind::Dir
            } else if ft.is_symlink() {
                match fs::read_link(&path) {
                    Ok(t) if !t.as_os_str().is_empty() => {
                        Kind::Symlink(t.into_os_string().into_vec())
                    }
                    Ok(_) => {
                        return Some(Item::Skipped {
                            rel,
                            reason: "symlink with an empty target".into(),
                        });
                    }
                    Err(e) => {
                        return Some(Item::Skipped {
                            rel,
                            reason: e.to_string(),
                        });
                    }
                }
            } else {
                let what = if ft.is_fifo() {
                    "a fifo"
                } else if ft.is_socket() {
                    "a socket"
                } else if ft.is_block_device() || ft.is_char_device() {
                    "a device"
                } else {
                    "a special file"
                };
                return Some(Item::Skipped {
                    rel,
                    reason: format!("{what}: not backed up"),
                });
            };
            return Some(Item::Entry(Entry {
                rel,
                path,
                kind,
                stat,
            }));
        }
    }
}

/// The walk order: paths compared component by component, each component by its bytes.
pub fn walk_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let mut x = a.split(|&c| c == b'/');
    let mut y = b.split(|&c| c == b'/');
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) => match p.cmp(q) {
                Ordering::Equal => {}
                o => return o,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_depth_first_and_matches_walk_cmp() {
        let d = tempfile::tempdir().unwrap();
        for p in ["a/b", "a-c", "a/c/d", "b", " x", "a/c/-e"] {
            let full = d.path().join(p);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(&full, p).unwrap();
        }
        std::os::unix::fs::symlink("/etc", d.path().join("link")).unwrap();
        let got: Vec<Vec<u8>> = Walker::new(d.path(), Excludes::default())
            .unwrap()
            .map(|i| match i {
                Item::Entry(e) => e.rel,
                Item::Skipped { rel, reason } => panic!("{rel:?}: {reason}"),
            })
            .collect();
        let names: Vec<&str> = got
            .iter()
            .map(|v| std::str::from_utf8(v).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                " x", "a", "a/b", "a/c", "a/c/-e", "a/c/d", "a-c", "b", "link"
            ]
        );
        for w in got.windows(2) {
            assert_eq!(walk_cmp(&w[0], &w[1]), Ordering::Less);
        }
    }
}
