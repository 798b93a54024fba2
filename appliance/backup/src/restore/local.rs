//! `unseal-tree`: recovery without the box and without the network. The source is one snapshot folder
//! copied off the target by any means (plain rsync, scp, a USB disk); with only the key, names and
//! contents are decrypted into the destination and everything is checked against the snapshot's sealed
//! manifest: missing, extra, rolled-back, swapped and tampered files are reported by name, the others
//! restored.
//!
//! Memory: the manifest is streamed from a temporary file; finding extra files keeps a 16-byte hash per
//! expected entry (1.6 MB for 100,000 entries).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::BufReader;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use seal::Keys;

use super::catalog::Manifest;
use super::file::{self, Output};
use super::place::Placer;
use super::problem::{CheckReport, Problem};
use super::pull::{EventFn, Log, RemoteNames, SharedLog, file_ok, lock, problem};
use crate::Error;
use crate::manifest::{EntryKind, MANIFEST_NAME};

/// What `unseal-tree` works on.
pub struct TreeRequest<'a> {
    /// The snapshot folder (a copy of `<target.path>/<share>/<snapshot>/`).
    pub src: &'a Path,
    pub dst: &'a Path,
    /// The share's name (the sealed manifest is bound to it).
    pub share: &'a str,
    /// The snapshot's name (`YYYY-MM-DDTHHMMSSZ`).
    pub snapshot: &'a str,
    /// Replace existing entries in `dst`.
    pub overwrite: bool,
    /// Where the manifest's plaintext is kept while working.
    pub tmp_dir: &'a Path,
}

/// The share and snapshot names a snapshot folder's path implies (`…/<share>/<snapshot>`).
pub fn names_from_path(src: &Path) -> Option<(String, String)> {
    let abs = fs::canonicalize(src).ok()?;
    let snap = abs.file_name()?.to_str()?.to_owned();
    let share = abs.parent()?.file_name()?.to_str()?.to_owned();
    Some((share, snap))
}

fn key16(p: &[u8]) -> [u8; 16] {
    let mut k = [0u8; 16];
    k.copy_from_slice(&blake3::hash(p).as_bytes()[..16]);
    k
}

fn join(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

/// Unseals the snapshot folder `req.src` into `req.dst`.
pub fn unseal_tree(
    keys: &Keys,
    req: &TreeRequest<'_>,
    events: EventFn,
) -> Result<CheckReport, Error> {
    let mpath = req.src.join(MANIFEST_NAME);
    let mfile = File::open(&mpath).map_err(|e| {
        Error::new(
            mpath.display().to_string(),
            format!(
                "{e} (a complete snapshot folder has one; is this a copy of <share>/<snapshot>/?)"
            ),
        )
    })?;
    let mut manifest = Manifest::open(
        keys,
        req.share,
        req.snapshot,
        BufReader::new(mfile),
        req.tmp_dir,
    )?;
    let sealed = manifest.header.encrypt;
    let content_keys = sealed.then(|| keys.clone());
    let sealed_names = manifest.header.encrypt_names;
    let placer = Placer::new(req.dst, req.overwrite)
        .map_err(|e| Error::new(format!("destination {}", req.dst.display()), e))?;
    let log: SharedLog = Arc::new(Mutex::new(Log {
        report: CheckReport {
            share: req.share.to_owned(),
            snapshot: req.snapshot.to_owned(),
            ..CheckReport::default()
        },
        events,
    }));
    let mut names = RemoteNames::new(sealed_names.then(|| keys.clone()));
    let mut expected: HashSet<[u8; 16]> = HashSet::new();
    {
        let mut reader = manifest.entries()?;
        let ctx = |e| Error::new(format!("the manifest of {}/{}", req.share, req.snapshot), e);
        while let Some(e) = reader.next_entry().map_err(ctx)? {
            let remote = match names.map(&e.path) {
                Ok(r) => r,
                Err(why) => {
                    problem(&log, &e.path, Problem::Failed(why));
                    continue;
                }
            };
            expected.insert(key16(&remote));
            let at = join(req.src, &remote);
            let md = match fs::symlink_metadata(&at) {
                Ok(m) => m,
                Err(_) => {
                    problem(&log, &e.path, Problem::Missing);
                    continue;
                }
            };
            let ft = md.file_type();
            let res: Result<(), Problem> = match e.kind {
                EntryKind::Dir if ft.is_dir() => {
                    placer.dir(&e.path).map_err(Problem::from).map(|()| {
                        lock(&log).report.dirs += 1;
                    })
                }
                EntryKind::Symlink if !sealed && ft.is_symlink() => match fs::read_link(&at) {
                    Ok(t) if t.as_os_str().as_bytes() == &e.link[..] => placer
                        .symlink(&e.path, &e.link, e.mtime, e.mtime_nsec)
                        .map_err(Problem::from)
                        .map(|()| lock(&log).report.symlinks += 1),
                    Ok(_) => Err(Problem::Changed("the symlink points elsewhere".into())),
                    Err(x) => Err(Problem::Failed(x.to_string())),
                },
                EntryKind::File | EntryKind::Symlink if ft.is_file() => {
                    match fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                        .open(&at)
                    {
                        Ok(f) => {
                            let mut input = BufReader::with_capacity(64 * 1024, f);
                            let mut out = Output::Dir(&placer);
                            file::process(content_keys.as_ref(), &e, &mut input, &mut out).map(
                                |bytes| {
                                    if e.kind == EntryKind::Symlink {
                                        lock(&log).report.symlinks += 1;
                                    } else {
                                        file_ok(&log, &e, bytes);
                                    }
                                },
                            )
                        }
                        Err(x) => Err(Problem::Failed(format!("opening {}: {x}", at.display()))),
                    }
                }
                _ => Err(Problem::Tampered(format!(
                    "{} is not what the snapshot recorded (a {:?} was expected)",
                    at.display(),
                    e.kind
                ))),
            };
            if let Err(p) = res {
                problem(&log, &e.path, p);
            }
        }
    }
    // Anything else in the folder was added there.
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    let mut extras = Vec::new();
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() {
            req.src.to_path_buf()
        } else {
            join(req.src, &rel)
        };
        let rd = fs::read_dir(&dir).map_err(|e| Error::new(dir.display().to_string(), e))?;
        for ent in rd {
            let ent = ent.map_err(|e| Error::new(dir.display().to_string(), e))?;
            let name = ent.file_name();
            let name = name.as_bytes();
            let path = if rel.is_empty() {
                name.to_vec()
            } else {
                [&rel[..], b"/", name].concat()
            };
            let internal = (rel.is_empty() && name == MANIFEST_NAME.as_bytes())
                || (sealed_names
                    && name.starts_with(seal::names::LONG_NAME_SIDE_PREFIX.as_bytes()));
            if internal {
                continue;
            }
            if !expected.contains(&key16(&path)) {
                extras.push(path);
                continue;
            }
            if ent.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    extras.sort();
    for x in extras {
        problem(&log, &x, Problem::Extra);
    }
    // Folders get their permissions and mtimes last.
    let mut reader = manifest.entries()?;
    let ctx = |e| Error::new(format!("the manifest of {}/{}", req.share, req.snapshot), e);
    while let Some(e) = reader.next_entry().map_err(ctx)? {
        if e.kind == EntryKind::Dir
            && fs::symlink_metadata(join(req.dst, &e.path)).is_ok_and(|m| m.is_dir())
            && let Err(err) = placer.finish_dir(&e.path, e.perms, e.mtime, e.mtime_nsec)
        {
            problem(&log, &e.path, Problem::from(err));
        }
    }
    let report = lock(&log).report.clone();
    Ok(report)
}
