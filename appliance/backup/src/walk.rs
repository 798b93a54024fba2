//! Walks a share depth-first in a fixed order, one folder listing in memory per level.
//!
//! The order is "component-wise byte order" ([`walk_cmp`]): a folder comes right before its contents, and
//! siblings are sorted by their name bytes. The index and the manifest are written in this order, so the
//! previous run's index can be read alongside the walk (a merge, not a lookup table in memory).
//!
//! Symlinks are recorded as links and never followed, so loops cannot happen and nothing outside the share
//! is read. Fifos, sockets and devices are reported and skipped. Entries that cannot be read are reported
//! and skipped; the walk goes on.
//!
//! Every entry of an unchanged night costs this walk and little else, so it is lean: each folder is opened
//! once and its entries are looked up relative to it (`statx` on the folder's descriptor: the kernel
//! resolves one component instead of the whole path), its names are read with `getdents64` into one buffer
//! (no allocation per name), and an entry's path relative to the share is lent from one buffer
//! ([`Walker::next_ref`]). Folders deeper than `OPEN_LEVELS` (64) are reached by their full path, so a deep
//! tree cannot run out of descriptors.

use std::cmp::Ordering;
use std::ffi::{CStr, OsStr};
use std::fs;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, RawDir, Statx, StatxFlags};

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

    /// From what `statx` found (the same fields as [`Stat::of`] takes from the standard library's).
    fn of_statx(x: &Statx) -> Stat {
        Stat {
            size: x.stx_size,
            mtime: x.stx_mtime.tv_sec,
            mtime_nsec: x.stx_mtime.tv_nsec,
            ctime: x.stx_ctime.tv_sec,
            ctime_nsec: x.stx_ctime.tv_nsec,
            ino: x.stx_ino,
            dev: rustix::fs::makedev(x.stx_dev_major, x.stx_dev_minor),
            perms: u32::from(x.stx_mode) & 0o7777,
        }
    }
}

/// One entry of the share.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the share root, `/`-separated bytes (on disk: the share's path joined with it).
    pub rel: Vec<u8>,
    pub kind: Kind,
    pub stat: Stat,
}

/// One entry of the share as [`Walker::next_ref`] lends it: its path is the walker's, valid until the
/// next step.
#[derive(Debug)]
pub struct EntryRef<'a> {
    pub rel: &'a [u8],
    pub kind: Kind,
    pub stat: Stat,
}

/// What [`Walker::next_ref`] yields.
#[derive(Debug)]
pub enum ItemRef<'a> {
    Entry(EntryRef<'a>),
    /// Not backed up, with the reason.
    Skipped {
        rel: &'a [u8],
        reason: String,
    },
}

impl ItemRef<'_> {
    /// The item with its own copy of the path.
    pub fn to_owned(self) -> Item {
        match self {
            ItemRef::Entry(e) => Item::Entry(Entry {
                rel: e.rel.to_vec(),
                kind: e.kind,
                stat: e.stat,
            }),
            ItemRef::Skipped { rel, reason } => Item::Skipped {
                rel: rel.to_vec(),
                reason,
            },
        }
    }
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

/// Folders up to this depth keep their descriptor open while their entries are walked; deeper ones are
/// reached by their full path, so a walk holds at most this many descriptors.
const OPEN_LEVELS: usize = 64;

/// What `statx` is asked for: the fields of [`Stat`] and the file type.
const STATX_WANTED: StatxFlags = StatxFlags::TYPE
    .union(StatxFlags::MODE)
    .union(StatxFlags::INO)
    .union(StatxFlags::SIZE)
    .union(StatxFlags::MTIME)
    .union(StatxFlags::CTIME);

/// Bytes read from a folder per `getdents64` call.
const LISTING_BUFFER: usize = 32 * 1024;

/// One folder being walked.
struct Frame {
    /// Its path relative to the share root.
    rel: Vec<u8>,
    /// Its path on disk: how entries are reached when `fd` is `None`.
    path: PathBuf,
    /// The open folder, for the folders within [`OPEN_LEVELS`].
    fd: Option<OwnedFd>,
    /// Its entries' names, each followed by a NUL.
    names: Vec<u8>,
    /// Where each name starts in `names` and its length, sorted descending so `pop` yields them in order.
    order: Vec<(u32, u32)>,
}

impl Frame {
    /// Opens folder `path` (through `at` and `name` when the parent folder is open) and reads its names.
    fn open(
        rel: Vec<u8>,
        path: PathBuf,
        at: Option<(BorrowedFd<'_>, &CStr)>,
        keep_open: bool,
        follow: bool,
        buf: &mut [MaybeUninit<u8>],
    ) -> io::Result<Frame> {
        let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        if !follow {
            flags |= OFlags::NOFOLLOW;
        }
        let fd = match at {
            Some((dir, name)) => rustix::fs::openat(dir, name, flags, Mode::empty())?,
            None => rustix::fs::openat(CWD, &path, flags, Mode::empty())?,
        };
        let mut names = Vec::new();
        let mut order = Vec::new();
        let mut listing = RawDir::new(fd.as_fd(), buf);
        while let Some(entry) = listing.next() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let start = u32::try_from(names.len())
                .map_err(|_| io::Error::other("the folder's names take more than 4 GiB"))?;
            names.extend_from_slice(name);
            names.push(0);
            // A name from `getdents64` is at most 255 bytes.
            order.push((start, name.len() as u32));
        }
        order.sort_unstable_by(|a, b| name_at(&names, *b).cmp(name_at(&names, *a)));
        Ok(Frame {
            rel,
            path,
            fd: keep_open.then_some(fd),
            names,
            order,
        })
    }
}

fn name_at(names: &[u8], (start, len): (u32, u32)) -> &[u8] {
    &names[start as usize..][..len as usize]
}

/// The depth-first walk of one share.
pub struct Walker {
    excludes: Excludes,
    stack: Vec<Frame>,
    /// The `getdents64` buffer, shared by every folder's listing.
    buf: Vec<MaybeUninit<u8>>,
    /// The path of the entry looked at last (what [`Walker::next_ref`] lends).
    rel: Vec<u8>,
    /// False once `statx` is known to be missing (kernels before 4.11): entries are then looked up with
    /// the standard library's `lstat` by full path.
    statx: bool,
    /// The share root's own attributes (it is the snapshot folder's `.`).
    pub root: Stat,
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
        let mut buf = vec![MaybeUninit::uninit(); LISTING_BUFFER];
        let frame = Frame::open(Vec::new(), root.to_owned(), None, true, true, &mut buf)?;
        Ok(Walker {
            excludes,
            stack: vec![frame],
            buf,
            rel: Vec::new(),
            statx: true,
            root: Stat::of(&meta),
        })
    }
}

/// What looking at one name found.
enum Found {
    /// Nothing to yield (gone, or excluded).
    Nothing,
    Entry(Kind, Stat, Option<Frame>),
    Skipped(String),
}

impl Walker {
    /// Looks at the next name of the innermost folder, whose path it leaves in `self.rel`; `None` when
    /// that folder is done.
    fn step(&mut self) -> Option<Found> {
        let Walker {
            excludes,
            stack,
            buf,
            rel,
            statx,
            ..
        } = self;
        let depth = stack.len();
        let frame = stack.last_mut()?;
        let at = frame.order.pop()?;
        let name = name_at(&frame.names, at);
        rel.clear();
        rel.extend_from_slice(&frame.rel);
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name);
        let Ok(cname) = CStr::from_bytes_until_nul(&frame.names[at.0 as usize..]) else {
            return Some(Found::Skipped("a name without its end".into()));
        };
        let fd = frame.fd.as_ref().map(|fd| fd.as_fd());
        let looked = match fd.filter(|_| *statx) {
            Some(dir) => {
                match rustix::fs::statx(dir, cname, AtFlags::SYMLINK_NOFOLLOW, STATX_WANTED) {
                    Ok(x) => Ok((
                        FileType::from_raw_mode(u32::from(x.stx_mode)),
                        Stat::of_statx(&x),
                    )),
                    Err(rustix::io::Errno::NOSYS) => {
                        *statx = false;
                        lstat(&frame.path.join(OsStr::from_bytes(name)))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            None => lstat(&frame.path.join(OsStr::from_bytes(name))),
        };
        let (ft, stat) = match looked {
            Ok(found) => found,
            // Gone between the listing and now: nothing to back up, nothing to report.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(Found::Nothing),
            Err(e) => return Some(Found::Skipped(e.to_string())),
        };
        let is_dir = ft == FileType::Directory;
        if excludes.is_excluded(rel, is_dir) {
            return Some(Found::Nothing);
        }
        let (kind, below) = match ft {
            FileType::RegularFile => (Kind::File, None),
            FileType::Directory => {
                let path = frame.path.join(OsStr::from_bytes(name));
                let keep_open = depth < OPEN_LEVELS;
                match Frame::open(
                    rel.to_vec(),
                    path,
                    fd.map(|d| (d, cname)),
                    keep_open,
                    false,
                    buf,
                ) {
                    Ok(below) => (Kind::Dir, Some(below)),
                    Err(e) => {
                        return Some(Found::Skipped(format!("cannot list the folder: {e}")));
                    }
                }
            }
            FileType::Symlink => {
                let target = match fd {
                    Some(dir) => rustix::fs::readlinkat(dir, cname, Vec::new())
                        .map(|t| t.into_bytes())
                        .map_err(io::Error::from),
                    None => fs::read_link(frame.path.join(OsStr::from_bytes(name)))
                        .map(|t| t.into_os_string().into_encoded_bytes()),
                };
                match target {
                    Ok(t) if !t.is_empty() => (Kind::Symlink(t), None),
                    Ok(_) => {
                        return Some(Found::Skipped("symlink with an empty target".into()));
                    }
                    Err(e) => return Some(Found::Skipped(e.to_string())),
                }
            }
            other => {
                let what = match other {
                    FileType::Fifo => "a fifo",
                    FileType::Socket => "a socket",
                    FileType::BlockDevice | FileType::CharacterDevice => "a device",
                    _ => "a special file",
                };
                return Some(Found::Skipped(format!("{what}: not backed up")));
            }
        };
        Some(Found::Entry(kind, stat, below))
    }
}

/// The standard library's `lstat`: where `statx` is missing, and for folders beyond [`OPEN_LEVELS`].
fn lstat(path: &Path) -> io::Result<(FileType, Stat)> {
    let meta = fs::symlink_metadata(path)?;
    Ok((FileType::from_raw_mode(meta.mode()), Stat::of(&meta)))
}

impl Walker {
    /// The next entry, its path lent (no allocation a step): how the engine walks.
    pub fn next_ref(&mut self) -> Option<ItemRef<'_>> {
        loop {
            let Some(found) = self.step() else {
                // The innermost folder is done (or there is none left).
                self.stack.pop()?;
                continue;
            };
            match found {
                Found::Nothing => continue,
                Found::Skipped(reason) => {
                    return Some(ItemRef::Skipped {
                        rel: &self.rel,
                        reason,
                    });
                }
                Found::Entry(kind, stat, below) => {
                    if let Some(frame) = below {
                        self.stack.push(frame);
                    }
                    return Some(ItemRef::Entry(EntryRef {
                        rel: &self.rel,
                        kind,
                        stat,
                    }));
                }
            }
        }
    }
}

impl Iterator for Walker {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        self.next_ref().map(ItemRef::to_owned)
    }
}

/// The walk order: paths compared component by component, each component by its bytes.
///
/// That is the byte order of the paths with `/` ranked below every other byte (a component that is a
/// prefix of another comes first, as does a path that is a prefix of another), which is how it is
/// computed: one pass to the first difference, no splitting. Called twice a file on an unchanged night.
pub fn walk_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let rank = |c: u8| if c == b'/' { 0 } else { u16::from(c) + 1 };
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => rank(a[i]).cmp(&rank(b[i])),
        None => a.len().cmp(&b.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_deeper_than_the_open_ones_are_walked_by_path() {
        let d = tempfile::tempdir().unwrap();
        let levels = OPEN_LEVELS + 6;
        let mut deep = d.path().to_path_buf();
        for i in 0..levels {
            deep.push(format!("l{i}"));
        }
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("f"), b"bottom").unwrap();
        std::os::unix::fs::symlink("f", deep.join("link")).unwrap();
        let entries: Vec<Entry> = Walker::new(d.path(), Excludes::default())
            .unwrap()
            .map(|i| match i {
                Item::Entry(e) => e,
                Item::Skipped { rel, reason } => panic!("{rel:?}: {reason}"),
            })
            .collect();
        assert_eq!(entries.len(), levels + 2);
        let file = &entries[levels];
        assert!(file.rel.ends_with(b"/f") && file.kind == Kind::File && file.stat.size == 6);
        let on_disk = fs::symlink_metadata(deep.join("f")).unwrap();
        assert_eq!(file.stat, Stat::of(&on_disk), "statx and lstat agree");
        assert_eq!(entries[levels + 1].kind, Kind::Symlink(b"f".to_vec()));
    }

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
                Item::Entry(e) => {
                    // What `statx` through the open folder found is what `lstat` finds.
                    let path = d.path().join(std::str::from_utf8(&e.rel).unwrap());
                    assert_eq!(e.stat, Stat::of(&fs::symlink_metadata(path).unwrap()));
                    e.rel
                }
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

    /// The definition: components compared one by one.
    fn by_components(a: &[u8], b: &[u8]) -> Ordering {
        a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
    }

    #[test]
    fn walk_cmp_is_the_component_order() {
        let parts: [&[u8]; 7] = [b"", b"a", b"a-c", b"a/b", b"ab", b"\xff", b"a/"];
        let mut paths: Vec<Vec<u8>> = Vec::new();
        for x in parts {
            for y in parts {
                paths.push([x, y].concat());
                paths.push([x, b"/", y].concat());
            }
        }
        for a in &paths {
            for b in &paths {
                assert_eq!(walk_cmp(a, b), by_components(a, b), "{a:?} {b:?}");
            }
        }
    }
}
