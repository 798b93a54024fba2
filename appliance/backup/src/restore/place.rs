//! The destination folder of a restore: plaintext paths from the manifest become files, folders and
//! symlinks below it, and nothing is ever written through a symlink or outside it.
//!
//! * Paths are checked to be relative, without `.`, `..` or empty components (the manifest is
//!   authenticated, but a restore must not trust it with the rest of the disk either).
//! * Every parent below the root is checked with `lstat` to be a real folder (created when missing), so a
//!   symlink restored earlier — or one already in the destination — cannot redirect a write.
//! * Files are written to a `.offsite-tmp-*` temporary file in their folder and renamed into place only
//!   after their content verified; without `overwrite` the rename refuses to replace anything
//!   (`persist_noclobber`), and an existing entry is reported, not touched.
//! * Permission bits and mtimes come from the manifest; folders get theirs at the end
//!   ([`Placer::finish_dir`]), after everything inside was written.

use std::ffi::OsStr;
use std::fs::{self, File, FileTimes};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tempfile::NamedTempFile;

/// Why a path could not be placed.
#[derive(Debug)]
pub enum PlaceError {
    /// Something exists there and overwriting was not asked for.
    Exists,
    Io(String),
}

impl From<io::Error> for PlaceError {
    fn from(e: io::Error) -> Self {
        PlaceError::Io(e.to_string())
    }
}

/// The destination folder.
#[derive(Debug)]
pub struct Placer {
    root: PathBuf,
    overwrite: bool,
}

/// `mtime` + `nsec` as a `SystemTime`.
pub fn system_time(mtime: i64, nsec: u32) -> SystemTime {
    let nsec = Duration::from_nanos(u64::from(nsec.min(999_999_999)));
    if mtime >= 0 {
        UNIX_EPOCH + Duration::from_secs(mtime as u64) + nsec
    } else {
        UNIX_EPOCH - Duration::from_secs(mtime.unsigned_abs()) + nsec
    }
}

/// Checks that `rel` is a plain relative path (no `.`, `..`, empty components or NUL).
pub fn check_rel(rel: &[u8]) -> Result<(), PlaceError> {
    let bad = rel.is_empty()
        || rel.contains(&0)
        || rel
            .split(|&b| b == b'/')
            .any(|c| c.is_empty() || c == b"." || c == b"..");
    if bad {
        return Err(PlaceError::Io(format!(
            "refusing the path {:?}: not a plain relative path",
            String::from_utf8_lossy(rel)
        )));
    }
    Ok(())
}

impl Placer {
    /// Opens (creating it if needed) the destination folder, which must be a real folder.
    pub fn new(root: &Path, overwrite: bool) -> io::Result<Placer> {
        fs::create_dir_all(root)?;
        if !fs::symlink_metadata(root)?.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a folder",
                root.display()
            )));
        }
        Ok(Placer {
            root: root.to_path_buf(),
            overwrite,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The full path of `rel`, after making sure each of its parents is a real folder.
    fn prepare(&self, rel: &[u8]) -> Result<PathBuf, PlaceError> {
        check_rel(rel)?;
        let mut p = self.root.clone();
        let comps: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
        let (last, parents) = comps
            .split_last()
            .ok_or(PlaceError::Io("empty path".into()))?;
        for c in parents {
            p.push(OsStr::from_bytes(c));
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(PlaceError::Io(format!(
                        "{} is in the way (not a folder)",
                        p.display()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&p)?,
                Err(e) => return Err(e.into()),
            }
        }
        p.push(OsStr::from_bytes(last));
        Ok(p)
    }

    /// Creates the folder `rel` (its permissions and mtime are set by [`Placer::finish_dir`]). An
    /// existing folder is fine; anything else in its place is an error.
    pub fn dir(&self, rel: &[u8]) -> Result<(), PlaceError> {
        let p = self.prepare(rel)?;
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(PlaceError::Exists),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&p)?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sets a restored folder's permission bits and mtime (call after its contents are written).
    pub fn finish_dir(
        &self,
        rel: &[u8],
        perms: u32,
        mtime: i64,
        nsec: u32,
    ) -> Result<(), PlaceError> {
        let p = self.prepare(rel)?;
        if !fs::symlink_metadata(&p)?.is_dir() {
            return Err(PlaceError::Io(format!("{} is not a folder", p.display())));
        }
        let f = File::open(&p)?;
        f.set_times(FileTimes::new().set_modified(system_time(mtime, nsec)))?;
        f.set_permissions(fs::Permissions::from_mode(perms & 0o7777))?;
        Ok(())
    }

    /// Starts a file: a temporary file in its folder. Refuses when something exists at `rel` and
    /// overwriting was not asked for.
    pub fn begin_file(&self, rel: &[u8]) -> Result<PendingFile, PlaceError> {
        let path = self.prepare(rel)?;
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => return Err(PlaceError::Exists),
            Ok(_) if !self.overwrite => return Err(PlaceError::Exists),
            _ => {}
        }
        let tmp = seal::temp_file_beside(&path)?;
        Ok(PendingFile {
            tmp,
            path,
            overwrite: self.overwrite,
        })
    }

    /// Creates the symlink `rel` → `target` with its mtime (the link's own).
    pub fn symlink(
        &self,
        rel: &[u8],
        target: &[u8],
        mtime: i64,
        nsec: u32,
    ) -> Result<(), PlaceError> {
        let path = self.prepare(rel)?;
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() || !self.overwrite => return Err(PlaceError::Exists),
            Ok(_) => fs::remove_file(&path)?,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &path)?;
        set_symlink_mtime(&path, mtime, nsec)?;
        Ok(())
    }
}

/// A file being restored: written to its temporary file, then [`PendingFile::commit`]ed.
pub struct PendingFile {
    tmp: NamedTempFile,
    path: PathBuf,
    overwrite: bool,
}

impl PendingFile {
    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Sets permissions and mtime and renames the file into place. Dropping a `PendingFile` instead
    /// removes the temporary file.
    pub fn commit(self, perms: u32, mtime: i64, nsec: u32) -> Result<(), PlaceError> {
        let f = self.tmp.as_file();
        f.set_times(FileTimes::new().set_modified(system_time(mtime, nsec)))?;
        f.set_permissions(fs::Permissions::from_mode(perms & 0o7777))?;
        let res = if self.overwrite {
            self.tmp.persist(&self.path).map(|_| ())
        } else {
            self.tmp.persist_noclobber(&self.path).map(|_| ())
        };
        res.map_err(|e| {
            if e.error.kind() == io::ErrorKind::AlreadyExists {
                PlaceError::Exists
            } else {
                PlaceError::Io(e.error.to_string())
            }
        })
    }
}

/// Sets the modification time of the symlink at `p` itself, never of what it points to (the access time
/// gets the same value: nothing reads it).
fn set_symlink_mtime(p: &Path, mtime: i64, nsec: u32) -> io::Result<()> {
    let t = filetime::FileTime::from_unix_time(mtime, nsec.min(999_999_999));
    filetime::set_symlink_file_times(p, t, t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_through_a_symlink_and_never_over_a_file() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let p = Placer::new(d.path(), false).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("link")).unwrap();
        assert!(matches!(p.begin_file(b"link/x"), Err(PlaceError::Io(_))));
        assert!(
            check_rel(b"../x").is_err() && check_rel(b"a//b").is_err() && check_rel(b"/a").is_err()
        );
        let mut f = p.begin_file(b"a/b/file").unwrap();
        io::Write::write_all(f.file(), b"hi").unwrap();
        f.commit(0o640, 1_000_000, 5).unwrap();
        let m = fs::metadata(d.path().join("a/b/file")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o640);
        assert_eq!(m.modified().unwrap(), system_time(1_000_000, 5));
        assert!(matches!(p.begin_file(b"a/b/file"), Err(PlaceError::Exists)));
        // Created while a restore ran: the rename still refuses to replace it.
        let g = p.begin_file(b"a/late").unwrap();
        fs::write(d.path().join("a/late"), b"mine").unwrap();
        assert!(matches!(g.commit(0o600, 0, 0), Err(PlaceError::Exists)));
        assert_eq!(fs::read(d.path().join("a/late")).unwrap(), b"mine");
        assert_eq!(
            fs::read_dir(d.path().join("a")).unwrap().count(),
            2,
            "no temp file left"
        );
        p.symlink(b"a/s", b"../x", 42, 0).unwrap();
        assert_eq!(
            fs::read_link(d.path().join("a/s")).unwrap(),
            Path::new("../x")
        );
        assert!(matches!(
            p.symlink(b"a/s", b"y", 0, 0),
            Err(PlaceError::Exists)
        ));
        assert!(fs::read_dir(outside.path()).unwrap().next().is_none());
    }
}
