//! The snapshot manifest: every entry of the snapshot with its size and a hash, sealed with the master key
//! and stored as `.offsite-manifest` in the snapshot folder.
//!
//! Sealing authenticates it (a changed byte fails) and binds it to its place: the sealed file's identity is
//! the path `<share>/.offsite-manifest` (a manifest of another share does not open), and its authenticated
//! header names the snapshot (a manifest copied into another snapshot folder is refused). Against the manifest a restore or verify detects files that were deleted, added, rolled
//! back to an older version or swapped on the target, not only bit flips. Its presence also marks the
//! snapshot as complete: it is written last.
//!
//! Plaintext layout (records as in [`crate::records`]): a [`ManifestHeader`], one [`ManifestEntry`] per
//! entry in walk order, and an end record with the count (so a truncated manifest is detected even if
//! it were not sealed).

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{record_codec, records};

/// The manifest's name in a snapshot folder.
pub const MANIFEST_NAME: &str = ".offsite-manifest";
/// Bumped when the layout changes.
pub const MANIFEST_FORMAT: u32 = 1;

/// The path a manifest is sealed under: binds it to its share. The snapshot it belongs to is in its
/// (authenticated) header and checked by [`ManifestReader::new`]. Not binding the sealed identity to the
/// snapshot keeps consecutive manifests alike byte for byte except where entries changed, so rsync sends
/// a night's manifest as a small delta against the previous one (measured: 5.0 MiB → see BENCHMARKS.md
/// for 100,000 files).
pub fn sealed_identity(share: &str) -> String {
    format!("{share}/{MANIFEST_NAME}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestHeader {
    pub format: u32,
    pub share: String,
    pub snapshot: String,
    /// Contents sealed (the entry hashes are trailer MACs) or plain (BLAKE3 of the content).
    pub encrypt: bool,
    /// Names sealed on the target.
    pub encrypt_names: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One entry of a manifest: [`ManifestEntry`] (owned, as read back) or [`ManifestEntryRef`] (borrowed,
/// as the engine writes it from what its batch holds). Both encode alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(serialize = "P: AsRef<[u8]>", deserialize = "P: Deserialize<'de>"))]
pub struct ManifestEntryOf<P> {
    /// Plaintext path relative to the share root.
    #[serde(serialize_with = "as_bytes")]
    pub path: P,
    pub kind: EntryKind,
    /// Plaintext size (files).
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub perms: u32,
    /// Size of the file on the target (sealed or plain).
    pub remote_size: u64,
    /// Files: the sealed file's trailer MAC (encrypted shares) or BLAKE3 of the content.
    pub hash: [u8; 32],
    /// Symlinks: the target.
    #[serde(serialize_with = "as_bytes")]
    pub link: P,
}

/// A manifest entry that owns its path and link.
pub type ManifestEntry = ManifestEntryOf<Vec<u8>>;

/// A manifest entry that borrows its path and link.
pub type ManifestEntryRef<'a> = ManifestEntryOf<&'a [u8]>;

impl ManifestEntry {
    /// The same entry, borrowed (what [`ManifestWriter::push`] takes).
    pub fn as_ref(&self) -> ManifestEntryRef<'_> {
        ManifestEntryOf {
            path: &self.path,
            kind: self.kind,
            size: self.size,
            mtime: self.mtime,
            mtime_nsec: self.mtime_nsec,
            perms: self.perms,
            remote_size: self.remote_size,
            hash: self.hash,
            link: &self.link,
        }
    }
}

/// Bytes written in one piece: postcard's encoding of a byte string is its length and the bytes, as for
/// a sequence of `u8` (which is how serde would write them, one call a byte).
fn as_bytes<P: AsRef<[u8]>, S: serde::Serializer>(v: &P, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(v.as_ref())
}

impl ManifestEntryRef<'_> {
    /// Appends this entry as the record `ManifestRecordOf::Entry(self)`, the bytes postcard makes of it,
    /// by hand ([`crate::record_codec`]).
    pub fn encode_record(&self, buf: &mut Vec<u8>) {
        use record_codec::{put_bytes, put_i64, put_u64};
        // The variant `Entry`, then the fields in their order.
        put_u64(buf, 0);
        put_bytes(buf, self.path);
        put_u64(
            buf,
            match self.kind {
                EntryKind::File => 0,
                EntryKind::Dir => 1,
                EntryKind::Symlink => 2,
            },
        );
        put_u64(buf, self.size);
        put_i64(buf, self.mtime);
        put_u64(buf, self.mtime_nsec.into());
        put_u64(buf, self.perms.into());
        put_u64(buf, self.remote_size);
        buf.extend_from_slice(&self.hash);
        put_bytes(buf, self.link);
    }
}

/// What follows the header: entries, then one end record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(serialize = "P: AsRef<[u8]>", deserialize = "P: Deserialize<'de>"))]
pub enum ManifestRecordOf<P> {
    Entry(ManifestEntryOf<P>),
    End { entries: u64 },
}

/// A manifest record as read back.
pub type ManifestRecord = ManifestRecordOf<Vec<u8>>;

/// Prefix of the temporary folders manifests are written in (in the state folder's `tmp`); one left by a
/// run that was killed is removed by the next ([`remove_stale`]).
pub const TEMP_PREFIX: &str = ".manifest-";

/// Writes a manifest's plaintext into a temporary file in the state folder, one entry at a time.
pub struct ManifestWriter {
    out: BufWriter<File>,
    scratch: Vec<u8>,
    entries: u64,
    /// The sealed length, learnt from the bytes as they are written: no pass over the file to size it.
    sealed: seal::SealedLenCounter,
    plain: ManifestPlain,
}

/// A manifest's plaintext on disk, named as it is sealed: its path ends with [`sealed_identity`], so that
/// it is sealed as it is sent, like a share file, with no sealed copy written first. The temporary folder
/// it is in goes when this is dropped.
pub struct ManifestPlain {
    dir: tempfile::TempDir,
    /// The plaintext file: [`ManifestPlain::folder`] joined with [`sealed_identity`].
    pub path: PathBuf,
    /// Its length, once finished.
    pub len: u64,
    /// The entries in it, once finished.
    pub entries: u64,
    /// Its length sealed without compression ([`SEAL_OPTIONS`]), once finished.
    pub sealed_len: u64,
}

/// How a manifest is sealed. Not deflated: a manifest is a third 32-byte hashes, which do not compress,
/// and deflating the rest cost an unchanged night of 100,000 files 55 ms of its ~650 ms CPU (8.0 MB sealed
/// to 5.1 MB) for 3 MB less on the target per snapshot (BENCHMARKS.md, twelfth session). Sent as a delta
/// against the previous one either way.
pub const SEAL_OPTIONS: seal::SealOptions = seal::SealOptions { compress: false };

impl ManifestWriter {
    /// Starts the manifest of `header.share` in a new temporary folder inside `dir`, to be sealed with
    /// `keys`.
    pub fn create(
        dir: &Path,
        header: &ManifestHeader,
        keys: &seal::Keys,
    ) -> io::Result<ManifestWriter> {
        std::fs::create_dir_all(dir)?;
        let temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempdir_in(dir)?;
        let path = temp.path().join(sealed_identity(&header.share));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = File::create_new(&path)?;
        let mut w = ManifestWriter {
            out: BufWriter::with_capacity(64 * 1024, file),
            scratch: Vec::new(),
            entries: 0,
            sealed: seal::SealedLenCounter::new(keys),
            plain: ManifestPlain {
                dir: temp,
                path,
                len: 0,
                entries: 0,
                sealed_len: 0,
            },
        };
        records::write(&mut w.out, header, &mut w.scratch)?;
        w.sealed.update(&w.scratch);
        Ok(w)
    }

    pub fn push(&mut self, e: ManifestEntryRef<'_>) -> io::Result<()> {
        self.entries += 1;
        records::write_with(&mut self.out, &mut self.scratch, |buf| e.encode_record(buf))?;
        self.sealed.update(&self.scratch);
        Ok(())
    }

    /// Ends the manifest and closes its file.
    pub fn finish(mut self) -> io::Result<ManifestPlain> {
        let end = ManifestRecordOf::<&[u8]>::End {
            entries: self.entries,
        };
        records::write(&mut self.out, &end, &mut self.scratch)?;
        self.sealed.update(&self.scratch);
        self.out.flush()?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        self.plain.len = file.metadata()?.len();
        self.plain.entries = self.entries;
        self.plain.sealed_len = self.sealed.sealed_len();
        Ok(self.plain)
    }
}

impl ManifestPlain {
    /// The temporary folder the plaintext is in, under the name it is sealed as.
    pub fn folder(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes what killed runs left of their manifests in `dir` (the state folder's `tmp`). Only while the
/// state folder is locked: a running backup's manifest is there too.
pub fn remove_stale(dir: &Path) -> io::Result<()> {
    let list = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in list {
        let entry = entry?;
        if !entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(TEMP_PREFIX.as_bytes())
        {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Reads a manifest's plaintext records.
pub struct ManifestReader<R> {
    input: R,
    scratch: Vec<u8>,
    pub header: ManifestHeader,
    seen: u64,
    done: bool,
}

impl<R: Read> ManifestReader<R> {
    /// Reads the header and checks it names `share` and `snapshot`.
    pub fn new(mut input: R, share: &str, snapshot: &str) -> io::Result<ManifestReader<R>> {
        let mut scratch = Vec::new();
        let header: ManifestHeader = records::read(&mut input, &mut scratch)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "empty manifest"))?;
        if header.format != MANIFEST_FORMAT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("manifest format {} is not supported", header.format),
            ));
        }
        if header.share != share || header.snapshot != snapshot {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "manifest belongs to {}/{}, not {share}/{snapshot}",
                    header.share, header.snapshot
                ),
            ));
        }
        Ok(ManifestReader {
            input,
            scratch,
            header,
            seen: 0,
            done: false,
        })
    }

    /// The next entry; `Ok(None)` after the end record, whose count must match.
    pub fn next_entry(&mut self) -> io::Result<Option<ManifestEntry>> {
        if self.done {
            return Ok(None);
        }
        let record: ManifestRecord = records::read(&mut self.input, &mut self.scratch)?
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "manifest ends without its end record",
                )
            })?;
        let entries = match record {
            ManifestRecord::Entry(e) => {
                self.seen += 1;
                return Ok(Some(e));
            }
            ManifestRecord::End { entries } => entries,
        };
        if entries != self.seen {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("manifest says {entries} entries but has {}", self.seen),
            ));
        }
        self.done = true;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_encode_by_hand_as_postcard_encodes_them() {
        let mut rnd = crate::record_codec::test_rng(0x2545_f491_4f6c_dd1d);
        for round in 0..2000 {
            let wide = |v: u64, r: u64| v >> (r % 64);
            let path: Vec<u8> = (0..rnd() % 300).map(|_| rnd() as u8).collect();
            let link: Vec<u8> = (0..rnd() % 3 * 100).map(|_| rnd() as u8).collect();
            let e = ManifestEntryRef {
                path: &path,
                kind: [EntryKind::File, EntryKind::Dir, EntryKind::Symlink][rnd() as usize % 3],
                size: wide(rnd(), rnd()),
                mtime: wide(rnd(), rnd()) as i64 * if rnd().is_multiple_of(2) { 1 } else { -1 },
                mtime_nsec: wide(rnd(), rnd()) as u32,
                perms: rnd() as u32 % 0o10000,
                remote_size: wide(rnd(), rnd()),
                hash: std::array::from_fn(|_| rnd() as u8),
                link: &link,
            };
            let (mut theirs, mut mine, mut scratch) = (Vec::new(), Vec::new(), Vec::new());
            records::write(
                &mut theirs,
                &ManifestRecordOf::Entry(e.clone()),
                &mut scratch,
            )
            .unwrap();
            records::write_with(&mut mine, &mut scratch, |b| e.encode_record(b)).unwrap();
            assert_eq!(mine, theirs, "round {round}");
        }
    }

    fn docs_header() -> ManifestHeader {
        ManifestHeader {
            format: MANIFEST_FORMAT,
            share: "docs".into(),
            snapshot: "2026-11-26T010203Z".into(),
            encrypt: true,
            encrypt_names: true,
        }
    }

    #[test]
    fn the_sealed_length_is_known_when_written() {
        let d = tempfile::tempdir().unwrap();
        let keys = seal::MasterKey::from_bytes([5; 32], seal::Suite::Aes256Ctr).derive_keys();
        for n in [0u32, 1, 3000] {
            let h = docs_header();
            let mut w = ManifestWriter::create(&d.path().join("tmp"), &h, &keys).unwrap();
            // Enough entries for many chunks in the largest case.
            for i in 0..n {
                let path = format!("a/c{i:05}");
                w.push(ManifestEntryRef {
                    path: path.as_bytes(),
                    kind: EntryKind::File,
                    size: u64::from(i),
                    mtime: 1,
                    mtime_nsec: 0,
                    perms: 0o644,
                    remote_size: 77,
                    hash: blake3::hash(path.as_bytes()).into(),
                    link: b"",
                })
                .unwrap();
            }
            let plain = w.finish().unwrap();
            let bytes = std::fs::read(&plain.path).unwrap();
            let identity = seal::RelPath::new(sealed_identity("docs").into_bytes()).unwrap();
            let mut sealed = Vec::new();
            seal::seal(&keys, &identity, SEAL_OPTIONS, &bytes[..], &mut sealed).unwrap();
            assert_eq!(plain.sealed_len, sealed.len() as u64, "{n} entries");
        }
    }

    #[test]
    fn write_then_read() {
        let d = tempfile::tempdir().unwrap();
        let h = docs_header();
        let keys = seal::MasterKey::from_bytes([5; 32], seal::Suite::Aes256Ctr).derive_keys();
        let mut w = ManifestWriter::create(&d.path().join("tmp"), &h, &keys).unwrap();
        let e = ManifestEntry {
            path: b"a/b".to_vec(),
            kind: EntryKind::File,
            size: 5,
            mtime: 1,
            mtime_nsec: 0,
            perms: 0o644,
            remote_size: 77,
            hash: [3; 32],
            link: vec![],
        };
        w.push(e.as_ref()).unwrap();
        let plain = w.finish().unwrap();
        assert_eq!(plain.entries, 1);
        let bytes = std::fs::read(&plain.path).unwrap();
        assert_eq!(bytes.len() as u64, plain.len);
        // Named as it is sealed.
        assert_eq!(plain.path, plain.folder().join(sealed_identity("docs")));
        // Its folder goes with it, and a killed run's is removed by the next.
        let folder = plain.path.parent().unwrap().parent().unwrap().to_owned();
        let left = d.path().join("tmp").join(format!("{TEMP_PREFIX}killed"));
        std::fs::create_dir_all(left.join("docs")).unwrap();
        std::fs::write(left.join("docs").join(MANIFEST_NAME), b"x").unwrap();
        std::fs::write(d.path().join("tmp").join("other"), b"kept").unwrap();
        drop(plain);
        assert!(!folder.exists());
        remove_stale(&d.path().join("tmp")).unwrap();
        assert!(!left.exists());
        assert!(d.path().join("tmp").join("other").exists());
        remove_stale(&d.path().join("nothing")).unwrap();
        let mut r = ManifestReader::new(&bytes[..], "docs", "2026-11-26T010203Z").unwrap();
        assert_eq!(r.next_entry().unwrap(), Some(e));
        assert_eq!(r.next_entry().unwrap(), None);
        assert!(ManifestReader::new(&bytes[..], "docs", "2026-11-27T010203Z").is_err());
        // Truncated before the end record.
        let mut r =
            ManifestReader::new(&bytes[..bytes.len() - 2], "docs", "2026-11-26T010203Z").unwrap();
        assert!(r.next_entry().is_ok());
        assert!(r.next_entry().is_err());
    }

    /// The layout manifests on targets were written in: serde's derive, byte strings as sequences.
    #[derive(Serialize)]
    enum FormerRecord {
        Entry {
            path: Vec<u8>,
            kind: EntryKind,
            size: u64,
            mtime: i64,
            mtime_nsec: u32,
            perms: u32,
            remote_size: u64,
            hash: [u8; 32],
            link: Vec<u8>,
        },
    }

    #[test]
    fn entries_encode_as_they_always_did() {
        for (path, link) in [
            (b"a/b".to_vec(), Vec::new()),
            (vec![b'x'; 300], b"../target".to_vec()),
            (Vec::new(), vec![0xff; 128]),
        ] {
            let e = ManifestEntry {
                path: path.clone(),
                kind: EntryKind::Symlink,
                size: 300,
                mtime: -5,
                mtime_nsec: 999_999_999,
                perms: 0o7777,
                remote_size: u64::MAX,
                hash: core::array::from_fn(|i| i as u8),
                link: link.clone(),
            };
            let former = FormerRecord::Entry {
                path,
                kind: e.kind,
                size: e.size,
                mtime: e.mtime,
                mtime_nsec: e.mtime_nsec,
                perms: e.perms,
                remote_size: e.remote_size,
                hash: e.hash,
                link,
            };
            let now = postcard::to_stdvec(&ManifestRecordOf::Entry(e.as_ref())).unwrap();
            assert_eq!(now, postcard::to_stdvec(&former).unwrap());
            assert_eq!(
                postcard::from_bytes::<ManifestRecord>(&now).unwrap(),
                ManifestRecord::Entry(e)
            );
        }
    }
}
