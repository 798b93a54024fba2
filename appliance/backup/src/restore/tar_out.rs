//! A restore as a tar stream (the `tar` crate, GNU format): entries named by their plaintext path relative
//! to the share root, with the manifest's permission bits and mtimes. Files are spooled to one temporary
//! file at a time and checked before they are archived (see [`super::file`]); memory stays one buffer.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tar::{Builder, EntryType, Header};

use crate::manifest::ManifestEntry;

pub struct TarOut {
    builder: Builder<Box<dyn Write + Send>>,
    spool: Option<File>,
    spool_dir: std::path::PathBuf,
}

fn header(e: &ManifestEntry, kind: EntryType, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(e.perms & 0o7777);
    h.set_mtime(e.mtime.max(0) as u64);
    h
}

fn path(e: &ManifestEntry) -> &Path {
    Path::new(OsStr::from_bytes(&e.path))
}

impl TarOut {
    /// Archives into `out`; files are spooled in an anonymous temporary file in `spool_dir`.
    pub fn new(out: Box<dyn Write + Send>, spool_dir: &Path) -> io::Result<TarOut> {
        std::fs::create_dir_all(spool_dir)?;
        let mut builder = Builder::new(out);
        builder.mode(tar::HeaderMode::Complete);
        Ok(TarOut {
            builder,
            spool: None,
            spool_dir: spool_dir.to_path_buf(),
        })
    }

    /// The spool file, emptied and rewound; give it back with [`TarOut::return_spool`] to reuse it.
    pub fn take_spool(&mut self) -> io::Result<File> {
        let mut f = match self.spool.take() {
            Some(f) => f,
            None => tempfile::tempfile_in(&self.spool_dir)?,
        };
        f.set_len(0)?;
        f.rewind()?;
        Ok(f)
    }

    pub fn return_spool(&mut self, f: File) {
        self.spool = Some(f);
    }

    pub fn dir(&mut self, e: &ManifestEntry) -> io::Result<()> {
        let mut h = header(e, EntryType::Directory, 0);
        self.builder.append_data(&mut h, path(e), io::empty())
    }

    pub fn symlink(&mut self, e: &ManifestEntry) -> io::Result<()> {
        let mut h = header(e, EntryType::Symlink, 0);
        self.builder
            .append_link(&mut h, path(e), Path::new(OsStr::from_bytes(&e.link)))
    }

    /// A regular file of `e.size` bytes read from `data` (already verified).
    pub fn file(&mut self, e: &ManifestEntry, data: &mut dyn Read) -> io::Result<()> {
        let mut h = header(e, EntryType::Regular, e.size);
        let mut exact = data.take(e.size);
        self.builder.append_data(&mut h, path(e), &mut exact)?;
        if exact.limit() != 0 {
            return Err(io::Error::other("the file ended early"));
        }
        Ok(())
    }

    /// Writes the end of the archive and flushes.
    pub fn finish(self) -> io::Result<()> {
        let mut out = self.builder.into_inner()?;
        out.flush()
    }
}
