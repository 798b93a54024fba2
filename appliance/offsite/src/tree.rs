//! Walks a local tree into an rsync file list, with rsync's trailing-slash rule.
//!
//! `SRC/` sends the folder's contents (its own attributes go to `.`); `SRC` sends the folder itself under
//! its name. Symlinks are sent as links, never followed. Entries that cannot be read are reported and
//! skipped, so one unreadable file does not stop the rest.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rsync_wire::FileEntry;

/// A file list and, for every entry, where its content lives on disk.
pub struct LocalTree {
    pub entries: Vec<FileEntry>,
    pub paths: Vec<PathBuf>,
    /// Entries skipped because they could not be read: (path, error).
    pub skipped: Vec<(PathBuf, io::Error)>,
}

fn entry_for(name: Vec<u8>, path: &Path, meta: &fs::Metadata) -> io::Result<Option<FileEntry>> {
    let perms = meta.mode() & 0o7777;
    let nsec = u32::try_from(meta.mtime_nsec()).unwrap_or(0);
    let ft = meta.file_type();
    let entry = if ft.is_file() {
        FileEntry::file(name, meta.len(), meta.mtime(), perms)
    } else if ft.is_dir() {
        FileEntry::dir(name, meta.mtime(), perms)
    } else if ft.is_symlink() {
        let target = fs::read_link(path)?;
        FileEntry::symlink(name, target.as_os_str().as_bytes(), meta.mtime())
    } else {
        // Devices, sockets, fifos: not backed up.
        return Ok(None);
    };
    Ok(Some(entry.with_nsec(nsec)))
}

/// Walks `src` (a file or a folder; a trailing `/` means "its contents").
pub fn walk(src: &OsStr) -> io::Result<LocalTree> {
    let bytes = src.as_bytes();
    let contents_only = bytes.len() > 1 && bytes.ends_with(b"/");
    let root = PathBuf::from(src);
    // `link/` means the folder the link points to, as in rsync; `link` is the link itself.
    let meta = if contents_only {
        fs::metadata(&root)?
    } else {
        fs::symlink_metadata(&root)?
    };
    let mut tree = LocalTree {
        entries: Vec::new(),
        paths: Vec::new(),
        skipped: Vec::new(),
    };
    if contents_only && meta.is_dir() {
        walk_dir(&root, Vec::new(), &mut tree);
        return Ok(tree);
    }
    let name = root
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "source has no file name"))?;
    if let Some(e) = entry_for(name.clone(), &root, &meta)? {
        tree.add(e, root, name);
    }
    Ok(tree)
}

impl LocalTree {
    /// Records `entry` (content at `path`) and, for a folder, everything below it.
    fn add(&mut self, entry: FileEntry, path: PathBuf, name: Vec<u8>) {
        let is_dir = entry.is_dir();
        self.entries.push(entry);
        self.paths.push(path.clone());
        if is_dir {
            walk_dir(&path, name, self);
        }
    }
}

fn walk_dir(dir: &Path, prefix: Vec<u8>, tree: &mut LocalTree) {
    let read = match fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) => {
            tree.skipped.push((dir.to_owned(), e));
            return;
        }
    };
    for item in read {
        let item = match item {
            Ok(i) => i,
            Err(e) => {
                tree.skipped.push((dir.to_owned(), e));
                continue;
            }
        };
        let path = item.path();
        let mut name = prefix.clone();
        if !name.is_empty() {
            name.push(b'/');
        }
        name.extend_from_slice(item.file_name().as_bytes());
        let entry = fs::symlink_metadata(&path).and_then(|m| entry_for(name.clone(), &path, &m));
        match entry {
            Ok(Some(e)) => tree.add(e, path, name),
            Ok(None) => {}
            Err(e) => tree.skipped.push((path, e)),
        }
    }
}

/// Serves the walked files' contents to the rsync sender.
pub struct LocalFiles<'a> {
    pub paths: &'a [PathBuf],
}

/// Files up to this size are read in one blocking call: an async file costs a thread-pool round trip for
/// the open and for every read, which dominated pushes of many small files.
const READ_WHOLE_MAX: u64 = 256 * 1024;

impl rsync_wire::ContentSource for LocalFiles<'_> {
    type Reader = std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>;

    async fn open(&mut self, index: usize, entry: &FileEntry) -> io::Result<Self::Reader> {
        let path = self
            .paths
            .get(index)
            .ok_or_else(|| io::Error::other("file index out of range"))?
            .clone();
        if entry.size() <= READ_WHOLE_MAX {
            let data = tokio::task::spawn_blocking(move || fs::read(path))
                .await
                .map_err(io::Error::other)??;
            return Ok(Box::pin(io::Cursor::new(data)));
        }
        let file = tokio::fs::File::open(path).await?;
        Ok(Box::pin(tokio::io::BufReader::with_capacity(1 << 16, file)))
    }
}
