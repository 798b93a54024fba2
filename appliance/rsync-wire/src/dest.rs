//! The local destination tree of a pull: every path the server names is
//! resolved here, and nothing is ever written through a symlink.
//!
//! * Names are checked by [`crate::flist::check_received_name`] (relative, no
//!   `..`); in addition a name is only used when its parent directory was
//!   created or checked to be a real directory (not a symlink) in this
//!   session, so a symlink inside the destination cannot redirect a write.
//! * Files are written to a temporary file created with `O_CREAT|O_EXCL`
//!   (which never follows a symlink) in the same directory, then renamed
//!   over the final name (rename replaces a symlink, it does not follow it).
//! * Attributes are set through the open file handle; a basis file is only
//!   read when `lstat` says it is a regular file and the opened handle is the
//!   same inode.
//!
//! The calls are blocking `std::fs` calls; they are short (one block or one
//! buffer at a time).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::flist::FileEntry;

/// Longest file-name component (bytes) we create.
const NAME_MAX: usize = 255;

/// The destination directory and the directories verified in this session.
#[derive(Debug)]
pub(crate) struct Dest {
    root: PathBuf,
    /// Directory names (relative, `""` = root) known to be real directories.
    dirs: HashSet<Vec<u8>>,
    counter: u64,
}

fn split(name: &[u8]) -> (&[u8], &[u8]) {
    match name.iter().rposition(|&c| c == b'/') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (&[], name),
    }
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// `mtime` + `nsec` as a `SystemTime`.
pub(crate) fn system_time(mtime: i64, nsec: u32) -> SystemTime {
    if mtime >= 0 {
        UNIX_EPOCH + Duration::new(mtime as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(mtime.unsigned_abs()) + Duration::from_nanos(nsec.into())
    }
}

/// Sets the modification time of the symlink at `p` itself, never of what
/// it points to; the access time is left alone.
// `tv_nsec` is an i64 on most targets but a 32-bit c_long on some: the
// conversion is fallible there, not here.
#[allow(clippy::unnecessary_fallible_conversions)]
fn set_symlink_mtime(p: &Path, mtime: i64, nsec: u32) -> io::Result<()> {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, UTIME_OMIT, utimensat};
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: mtime,
            // < 10^9 (checked when the list is read): fits a 32-bit c_long.
            tv_nsec: nsec
                .try_into()
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        },
    };
    utimensat(CWD, p, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(io::Error::from)
}

impl Dest {
    /// Opens (creating it if needed) the destination directory, which must
    /// be a real directory.
    pub(crate) fn new(root: &Path) -> io::Result<Dest> {
        fs::create_dir_all(root)?;
        let md = fs::symlink_metadata(root)?;
        if !md.is_dir() {
            return Err(other(format!(
                "destination {} is not a directory",
                root.display()
            )));
        }
        let mut dirs = HashSet::new();
        dirs.insert(Vec::new());
        Ok(Dest {
            root: root.to_path_buf(),
            dirs,
            counter: 0,
        })
    }

    fn path(&self, name: &[u8]) -> PathBuf {
        if name == b"." {
            self.root.clone()
        } else {
            self.root.join(OsStr::from_bytes(name))
        }
    }

    /// The parent must be a directory verified in this session.
    fn check_parent(&self, name: &[u8]) -> io::Result<()> {
        let (d, _) = split(name);
        if self.dirs.contains(d) {
            Ok(())
        } else {
            Err(other(format!(
                "parent directory of {:?} was not created by this transfer",
                String::from_utf8_lossy(name)
            )))
        }
    }

    /// Creates directory `name` (or checks an existing one). An existing
    /// non-directory (file, symlink) at that name is removed first. The
    /// directory stays owner-writable until [`Dest::finish_dir`].
    pub(crate) fn make_dir(&mut self, name: &[u8], perms: u32) -> io::Result<()> {
        let p = self.path(name);
        if name == b"." {
            // The root exists (see `new`); make it writable for the transfer.
            let md = fs::symlink_metadata(&p)?;
            if md.permissions().mode() & 0o700 != 0o700 {
                fs::set_permissions(&p, fs::Permissions::from_mode(md.mode() | 0o700))?;
            }
            return Ok(());
        }
        self.check_parent(name)?;
        match fs::symlink_metadata(&p) {
            Ok(md) if md.is_dir() => {
                if md.permissions().mode() & 0o700 != 0o700 {
                    fs::set_permissions(&p, fs::Permissions::from_mode(md.mode() | 0o700))?;
                }
            }
            Ok(_) => {
                fs::remove_file(&p)?;
                self.create_dir(&p, perms)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.create_dir(&p, perms)?,
            Err(e) => return Err(e),
        }
        let md = fs::symlink_metadata(&p)?;
        if !md.is_dir() {
            return Err(other(format!("{} is not a directory", p.display())));
        }
        self.dirs.insert(name.to_vec());
        Ok(())
    }

    fn create_dir(&self, p: &Path, perms: u32) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .mode((perms & 0o7777) | 0o700)
            .create(p)
    }

    /// True when a regular file `name` exists with this size and mtime.
    pub(crate) fn up_to_date(&self, e: &FileEntry, size: u64, with_nsec: bool) -> bool {
        if self.check_parent(&e.name).is_err() {
            return false;
        }
        match fs::symlink_metadata(self.path(&e.name)) {
            Ok(md) => {
                md.file_type().is_file()
                    && md.len() == size
                    && md.mtime() == e.mtime
                    && (!with_nsec || md.mtime_nsec() == i64::from(e.mtime_nsec))
            }
            Err(_) => false,
        }
    }

    /// Fixes the permission bits of an up-to-date file.
    pub(crate) fn fix_perms(&self, e: &FileEntry) -> io::Result<()> {
        if let Some(f) = self.basis(&e.name)? {
            let want = e.perms & 0o7777;
            if f.metadata()?.mode() & 0o7777 != want {
                f.set_permissions(fs::Permissions::from_mode(want))?;
            }
        }
        Ok(())
    }

    /// Opens the existing regular file `name` as a basis (never through a
    /// symlink); `None` when there is none.
    pub(crate) fn basis(&self, name: &[u8]) -> io::Result<Option<File>> {
        if self.check_parent(name).is_err() {
            return Ok(None);
        }
        let p = self.path(name);
        let md = match fs::symlink_metadata(&p) {
            Ok(md) if md.file_type().is_file() => md,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let fmd = f.metadata()?;
        if fmd.dev() != md.dev() || fmd.ino() != md.ino() || !fmd.file_type().is_file() {
            return Ok(None);
        }
        Ok(Some(f))
    }

    fn temp_name(&mut self, name: &[u8]) -> PathBuf {
        let (d, base) = split(name);
        self.counter += 1;
        let suffix = format!(".{}.{}", std::process::id(), self.counter);
        let keep = base.len().min(NAME_MAX - 1 - suffix.len());
        let mut t = Vec::with_capacity(NAME_MAX);
        t.push(b'.');
        t.extend_from_slice(&base[..keep]);
        t.extend_from_slice(suffix.as_bytes());
        let mut full = d.to_vec();
        if !full.is_empty() {
            full.push(b'/');
        }
        full.extend_from_slice(&t);
        self.path(&full)
    }

    /// Creates a new temporary file next to `name` (`O_EXCL`, mode 0600).
    pub(crate) fn temp_file(&mut self, name: &[u8]) -> io::Result<(File, PathBuf)> {
        self.check_parent(name)?;
        loop {
            let p = self.temp_name(name);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&p)
            {
                Ok(f) => return Ok((f, p)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sets mode and mtime on the finished temporary file and renames it
    /// over `name` (an existing directory there is an error).
    pub(crate) fn commit_file(&self, f: File, tmp: &Path, e: &FileEntry) -> io::Result<()> {
        let res = (|| {
            f.set_permissions(fs::Permissions::from_mode(e.perms & 0o7777))?;
            f.set_times(FileTimes::new().set_modified(system_time(e.mtime, e.mtime_nsec)))?;
            drop(f);
            self.rename_over(tmp, &e.name)
        })();
        if res.is_err() {
            let _ = fs::remove_file(tmp);
        }
        res
    }

    fn rename_over(&self, tmp: &Path, name: &[u8]) -> io::Result<()> {
        let p = self.path(name);
        if let Ok(md) = fs::symlink_metadata(&p)
            && md.is_dir()
        {
            return Err(other(format!(
                "{} is a directory in the destination",
                p.display()
            )));
        }
        fs::rename(tmp, &p)
    }

    /// Creates symlink `name` -> `target` (the target is stored as it is and
    /// never followed), replacing a file or symlink of that name, and gives
    /// the link itself mtime `mtime` + `nsec` (`utimensat` with
    /// `AT_SYMLINK_NOFOLLOW`: the target's times are never touched). The time
    /// is set on the new link before it is renamed into place, or on an
    /// existing link that already has the right target.
    pub(crate) fn make_symlink(
        &mut self,
        name: &[u8],
        target: &[u8],
        mtime: i64,
        nsec: u32,
    ) -> io::Result<()> {
        self.check_parent(name)?;
        let p = self.path(name);
        if let Ok(md) = fs::symlink_metadata(&p)
            && md.file_type().is_symlink()
            && fs::read_link(&p)?.as_os_str().as_bytes() == target
        {
            if md.mtime() != mtime || md.mtime_nsec() != i64::from(nsec) {
                set_symlink_mtime(&p, mtime, nsec)?;
            }
            return Ok(());
        }
        loop {
            let tmp = self.temp_name(name);
            match std::os::unix::fs::symlink(OsStr::from_bytes(target), &tmp) {
                Ok(()) => {
                    let r = set_symlink_mtime(&tmp, mtime, nsec)
                        .and_then(|()| self.rename_over(&tmp, name));
                    if r.is_err() {
                        let _ = fs::remove_file(&tmp);
                    }
                    return r;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sets a directory's final mode and mtime (after its contents are done).
    pub(crate) fn finish_dir(&self, e: &FileEntry) -> io::Result<()> {
        let name = if e.name[..] == b"."[..] {
            &b""[..]
        } else {
            &e.name
        };
        if !self.dirs.contains(name) {
            return Ok(());
        }
        let p = self.path(&e.name);
        let md = fs::symlink_metadata(&p)?;
        let f = File::open(&p)?;
        let fmd = f.metadata()?;
        if !md.is_dir() || fmd.dev() != md.dev() || fmd.ino() != md.ino() {
            return Err(other(format!("{} changed under us", p.display())));
        }
        f.set_times(FileTimes::new().set_modified(system_time(e.mtime, e.mtime_nsec)))?;
        if fmd.mode() & 0o7777 != e.perms & 0o7777 {
            f.set_permissions(fs::Permissions::from_mode(e.perms & 0o7777))?;
        }
        Ok(())
    }
}
