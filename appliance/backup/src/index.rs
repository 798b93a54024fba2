//! The local index: what the previous run learned about each file, so that an unchanged file costs one
//! `stat` and nothing else (no read, no seal).
//!
//! One file per share (`<state_dir>/index/<share>.idx`): a header, then one record per file in walk order.
//! A file's record ends with the sealed form of its name when the share seals names (a trailing field, see
//! [`IndexEntry::sealed_name`]), so that an unchanged night seals no name either.
//! A run reads the old index alongside its walk and writes the new one as it goes; the new file replaces
//! the old one atomically (temporary file, fsync, rename, fsync of the folder) at the end. The index is a
//! cache of values derived from file contents and the key; losing or corrupting it costs time (files are
//! read and sealed again), never correctness.

use std::cmp::Ordering;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::walk::{Stat, walk_cmp};
use crate::{record_codec, records};

/// Bumped when the record layout or the meaning of a field changes.
pub const INDEX_FORMAT: u32 = 1;

/// What the cached values depend on besides the file: a different key or sealing choice invalidates them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexHeader {
    pub format: u32,
    pub key_id: [u8; 8],
    pub encrypt: bool,
    pub encrypt_names: bool,
    pub compress: bool,
}

/// One file as it was last backed up: [`IndexEntry`] (owned path) or [`IndexRecord`] (borrowed path, how
/// the engine records a file from what its batch holds and how the reader decodes one without
/// allocating). Both encode alike.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntryOf<P> {
    pub path: P,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub ctime: i64,
    pub ctime_nsec: u32,
    pub ino: u64,
    /// The size of the file on the target (sealed size, or the plain size).
    pub remote_size: u64,
    /// The sealed file's trailer MAC, or BLAKE3 of the plain content.
    pub hash: [u8; 32],
    /// The file's name as sealed on the target (its last path component, which depends only on the path
    /// and the key), or empty when names are not sealed or the name is long (sealed with a side file).
    /// Stored after the record's other fields, as raw bytes to its end: indexes written before the field
    /// existed read as having no sealed names, and older readers ignore it.
    #[serde(skip)]
    pub sealed_name: Vec<u8>,
}

/// An index record that owns its path.
pub type IndexEntry = IndexEntryOf<Vec<u8>>;

/// An index record that borrows its path (its `sealed_name` is left empty: the writer takes the name
/// apart, [`IndexWriter::push`]).
pub type IndexRecord<'a> = IndexEntryOf<&'a [u8]>;

impl<'a> IndexRecord<'a> {
    /// Decodes a record's bytes as postcard does (`records::read_with_tail`), by hand
    /// ([`crate::record_codec`]): the record and what follows it (the sealed name).
    pub fn decode(bytes: &'a [u8]) -> io::Result<(IndexRecord<'a>, &'a [u8])> {
        let mut c = record_codec::Cursor::new(bytes);
        let r = IndexEntryOf {
            path: c.bytes()?,
            size: c.u64()?,
            mtime: c.i64()?,
            mtime_nsec: c.u32()?,
            ctime: c.i64()?,
            ctime_nsec: c.u32()?,
            ino: c.u64()?,
            remote_size: c.u64()?,
            hash: c.array32()?,
            sealed_name: Vec::new(),
        };
        Ok((r, c.rest))
    }

    pub fn new(path: &'a [u8], stat: &Stat, remote_size: u64, hash: [u8; 32]) -> IndexRecord<'a> {
        IndexEntryOf {
            path,
            size: stat.size,
            mtime: stat.mtime,
            mtime_nsec: stat.mtime_nsec,
            ctime: stat.ctime,
            ctime_nsec: stat.ctime_nsec,
            ino: stat.ino,
            remote_size,
            hash,
            sealed_name: Vec::new(),
        }
    }
}

impl IndexEntry {
    pub fn new(path: Vec<u8>, stat: &Stat, remote_size: u64, hash: [u8; 32]) -> IndexEntry {
        let mut e = IndexEntry::default();
        e.set(&IndexRecord::new(&[], stat, remote_size, hash), &[]);
        e.path = path;
        e
    }

    /// Makes this entry `r` with `sealed_name`, in the buffers it has.
    fn set(&mut self, r: &IndexRecord<'_>, sealed_name: &[u8]) {
        self.path.clear();
        self.path.extend_from_slice(r.path);
        self.size = r.size;
        self.mtime = r.mtime;
        self.mtime_nsec = r.mtime_nsec;
        self.ctime = r.ctime;
        self.ctime_nsec = r.ctime_nsec;
        self.ino = r.ino;
        self.remote_size = r.remote_size;
        self.hash = r.hash;
        self.sealed_name.clear();
        self.sealed_name.extend_from_slice(sealed_name);
    }

    /// The same entry with the sealed form of its name (see [`IndexEntry::sealed_name`]).
    pub fn with_sealed_name(mut self, name: &[u8]) -> IndexEntry {
        self.sealed_name = name.to_vec();
        self
    }

    /// True when `stat` says the file is the one recorded: same size, mtime, ctime and inode. (ctime
    /// catches writes that put the old mtime back.)
    pub fn matches(&self, stat: &Stat) -> bool {
        self.size == stat.size
            && self.mtime == stat.mtime
            && self.mtime_nsec == stat.mtime_nsec
            && self.ctime == stat.ctime
            && self.ctime_nsec == stat.ctime_nsec
            && self.ino == stat.ino
    }
}

/// The index file of a share.
pub fn index_path(state_dir: &Path, share: &str) -> PathBuf {
    state_dir.join("index").join(format!("{share}.idx"))
}

/// Reads the previous index alongside the walk.
pub struct IndexReader {
    input: Option<BufReader<File>>,
    /// The next record (when `has_next`), read into the same buffers record after record.
    next: IndexEntry,
    has_next: bool,
    /// `next` was returned by [`IndexReader::lookup`]: the next lookup reads on first.
    returned: bool,
    scratch: Vec<u8>,
    /// Bytes of the file read so far, and where `next` is in it (see [`RecordSpan`]).
    read: u64,
    next_span: RecordSpan,
    /// Why the old index is not used (missing is not a problem and gives `None`).
    pub problem: Option<String>,
    usable: bool,
}

impl IndexReader {
    /// Opens `path`; a missing, unreadable, corrupt or foreign index reads as empty.
    pub fn open(path: &Path, expected: &IndexHeader) -> IndexReader {
        let mut r = IndexReader {
            input: None,
            next: IndexEntry::default(),
            has_next: false,
            returned: false,
            scratch: Vec::new(),
            read: 0,
            next_span: RecordSpan::default(),
            problem: None,
            usable: false,
        };
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return r,
            Err(e) => {
                r.problem = Some(format!("{}: {e}", path.display()));
                return r;
            }
        };
        // Read 64 KiB at a time, not the default 8: the index of 100,000 files is 13.7 MB, read in full
        // every night.
        let mut input = BufReader::with_capacity(64 * 1024, file);
        match records::read::<IndexHeader>(&mut input, &mut r.scratch) {
            Ok(Some(h)) if &h == expected => {
                r.read = 4 + r.scratch.len() as u64;
                r.usable = true;
                r.input = Some(input);
                r.advance();
            }
            Ok(Some(_)) => {
                r.problem = Some(format!(
                    "{}: written for another key or other share settings; files are read again",
                    path.display()
                ))
            }
            Ok(None) => {}
            Err(e) => r.problem = Some(format!("{}: {e}", path.display())),
        }
        r
    }

    /// Whether an index of this share with the expected header was found. It then describes the newest
    /// complete snapshot: it is committed right after that snapshot's manifest (a run stopped between the
    /// two leaves it one run behind, which costs time, never correctness).
    pub fn is_usable(&self) -> bool {
        self.usable
    }

    fn advance(&mut self) {
        let Some(input) = self.input.as_mut() else {
            self.has_next = false;
            return;
        };
        let record = records::read_raw(input, &mut self.scratch)
            .and_then(|raw| raw.map(IndexRecord::decode).transpose());
        match record {
            Ok(Some((r, sealed_name))) => {
                // Out of order means corrupt: stop using it rather than give wrong answers.
                if self.has_next && walk_cmp(&self.next.path, r.path) != Ordering::Less {
                    self.problem = Some("index records out of order; ignoring the rest".into());
                    self.has_next = false;
                    self.input = None;
                    return;
                }
                self.next.set(&r, sealed_name);
                self.has_next = true;
                let len = 4 + self.scratch.len() as u64;
                self.next_span = RecordSpan { at: self.read, len };
                self.read += len;
            }
            Ok(None) => {
                self.has_next = false;
                self.input = None;
            }
            Err(e) => {
                self.problem = Some(format!("index unreadable: {e}; ignoring the rest"));
                self.has_next = false;
                self.input = None;
            }
        }
    }

    /// The record of `path` as [`IndexReader::lookup`] finds it, and where it is in the old file (for
    /// [`IndexWriter::push_same`]).
    pub fn lookup_spanned(&mut self, path: &[u8]) -> Option<(&IndexEntry, RecordSpan)> {
        self.lookup(path)?;
        Some((&self.next, self.next_span))
    }

    /// The record of `path`, if the index has one. Paths must be asked in walk order (each record is read
    /// once, and the one returned is valid until the next call).
    pub fn lookup(&mut self, path: &[u8]) -> Option<&IndexEntry> {
        if self.returned {
            self.returned = false;
            self.advance();
        }
        loop {
            if !self.has_next {
                return None;
            }
            match walk_cmp(&self.next.path, path) {
                Ordering::Less => self.advance(),
                Ordering::Equal => {
                    self.returned = true;
                    return Some(&self.next);
                }
                Ordering::Greater => return None,
            }
        }
    }
}

/// Where a record is in the old index file: its first byte (of its length) and its length with that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordSpan {
    pub at: u64,
    pub len: u64,
}

/// Writes the new index; nothing replaces the old one until [`IndexWriter::commit`].
///
/// An unchanged night writes the very bytes the old index holds. So nothing is written while the records
/// equal the old file's, byte for byte, read alongside: at the first difference the equal part is copied
/// from the old file into the new one, and writing goes on from there. A night where nothing changed
/// writes and replaces nothing (measured: the index of 100,000 files is 13.7 MB, written to the state
/// folder's disk every night before).
pub struct IndexWriter {
    target: PathBuf,
    scratch: Vec<u8>,
    state: WriteState,
}

enum WriteState {
    /// Every record so far equals the old index's bytes at the same place: `same` bytes of it. `old` is
    /// read up to `same - skipped`: the records [`IndexWriter::push_same`] took are skipped when the next
    /// one is compared (one `lseek` then, not one a record).
    Same {
        old: BufReader<File>,
        same: u64,
        skipped: u64,
        old_bytes: Vec<u8>,
    },
    Writing(BufWriter<tempfile::NamedTempFile>),
}

impl IndexWriter {
    pub fn create(path: &Path, header: &IndexHeader) -> io::Result<IndexWriter> {
        let state = match File::open(path) {
            Ok(old) => WriteState::Same {
                old: BufReader::with_capacity(64 * 1024, old),
                same: 0,
                skipped: 0,
                old_bytes: Vec::new(),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                WriteState::Writing(Self::new_file(path)?)
            }
            Err(e) => return Err(e),
        };
        let mut w = IndexWriter {
            target: path.to_owned(),
            scratch: Vec::new(),
            state,
        };
        w.put(header, &[])?;
        Ok(w)
    }

    fn new_file(path: &Path) -> io::Result<BufWriter<tempfile::NamedTempFile>> {
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let tmp = tempfile::Builder::new()
            .prefix(".index-")
            .tempfile_in(dir)?;
        Ok(BufWriter::with_capacity(64 * 1024, tmp))
    }

    /// Adds a record (owned or borrowed path) with its sealed name (see [`IndexEntry::sealed_name`]; the
    /// record's own field is not read, so a borrowed record needs no copy of the name).
    pub fn push<P: Serialize>(
        &mut self,
        r: &IndexEntryOf<P>,
        sealed_name: &[u8],
    ) -> io::Result<()> {
        self.put(r, sealed_name)
    }

    /// Adds the old index's record at `span` as it is, without encoding it, when the records so far are
    /// the old file's bytes up to that record; returns false otherwise (nothing is added: the caller
    /// pushes the record). The caller vouches that the record it stands for encodes to those very bytes
    /// (same path, stat fields, target size, hash and sealed name: an unchanged file of an unchanged
    /// night, where encoding each record only to compare it was 4 % of the CPU).
    pub fn push_same(&mut self, span: RecordSpan) -> io::Result<bool> {
        let WriteState::Same { same, skipped, .. } = &mut self.state else {
            return Ok(false);
        };
        if *same != span.at {
            return Ok(false);
        }
        *same += span.len;
        *skipped += span.len;
        Ok(true)
    }

    /// Adds a record: compared with the old index while they are alike, written after.
    fn put<T: Serialize>(&mut self, value: &T, tail: &[u8]) -> io::Result<()> {
        self.scratch.clear();
        records::encode_with_tail(value, tail, &mut self.scratch)?;
        if let WriteState::Same {
            old,
            same,
            skipped,
            old_bytes,
        } = &mut self.state
        {
            skip_old(old, skipped)?;
            old_bytes.resize(self.scratch.len(), 0);
            let alike = match old.read_exact(old_bytes) {
                Ok(()) => *old_bytes == self.scratch,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => false,
                Err(e) => return Err(e),
            };
            if alike {
                *same += self.scratch.len() as u64;
                return Ok(());
            }
            self.diverge()?;
        }
        match &mut self.state {
            WriteState::Writing(out) => out.write_all(&self.scratch),
            WriteState::Same { .. } => Err(io::Error::other("index writer did not start its file")),
        }
    }

    /// Starts the new file with the part of the old one the records so far equal.
    fn diverge(&mut self) -> io::Result<()> {
        let WriteState::Same { same, .. } = self.state else {
            return Ok(());
        };
        let mut out = Self::new_file(&self.target)?;
        let copied = io::copy(&mut File::open(&self.target)?.take(same), &mut out)?;
        if copied != same {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while it was read", self.target.display()),
            ));
        }
        self.state = WriteState::Writing(out);
        Ok(())
    }

    /// Makes the new index the current one, durably. When it is the old one byte for byte, that stays.
    pub fn commit(mut self) -> io::Result<()> {
        if let WriteState::Same { old, same, .. } = &self.state {
            // Alike to the end only if the old index is as long as what it matched: not longer (then it
            // has records the run did not), not shorter (records `push_same` took past its end; `diverge`
            // reports that).
            if old.get_ref().metadata()?.len() == *same {
                return Ok(());
            }
            self.diverge()?;
        }
        let WriteState::Writing(out) = self.state else {
            return Err(io::Error::other("index writer did not start its file"));
        };
        let tmp = out.into_inner().map_err(|e| e.into_error())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.target).map_err(|e| e.error)?;
        crate::sync_dir(&self.target)
    }
}

/// Moves `old` on by the `skipped` bytes [`IndexWriter::push_same`] took. Past the end of a file that
/// shrank meanwhile, the next comparison fails (or `commit` finds the length short) and `diverge` reports
/// it.
fn skip_old(old: &mut BufReader<File>, skipped: &mut u64) -> io::Result<()> {
    if *skipped > 0 {
        let by = i64::try_from(*skipped).map_err(io::Error::other)?;
        old.seek_relative(by)?;
        *skipped = 0;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(size: u64) -> Stat {
        Stat {
            size,
            mtime: 1,
            mtime_nsec: 2,
            ctime: 3,
            ctime_nsec: 4,
            ino: 5,
            dev: 6,
            perms: 0o644,
        }
    }

    fn header() -> IndexHeader {
        IndexHeader {
            format: INDEX_FORMAT,
            key_id: [1; 8],
            encrypt: true,
            encrypt_names: true,
            compress: true,
        }
    }

    #[test]
    fn an_unchanged_index_is_not_rewritten_and_a_changed_one_is_exact() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let h = header();
        let write = |p: &Path, h: &IndexHeader, names: &[&str], size: u64| {
            let mut w = IndexWriter::create(p, h).unwrap();
            for name in names {
                let size = if *name == "b" { size } else { 7 };
                let e =
                    IndexEntry::new((*name).into(), &stat(size), 9, [9; 32]).with_sealed_name(b"x");
                w.push(&e, &e.sealed_name).unwrap();
            }
            w.commit().unwrap();
        };
        // What a writer with no old index to compare with writes.
        let fresh = |h: &IndexHeader, names: &[&str], size: u64| {
            let p = d.path().join("fresh").join("s.idx");
            let _ = fs::remove_file(&p);
            write(&p, h, names, size);
            fs::read(&p).unwrap()
        };
        let p = index_path(d.path(), "s");
        write(&p, &h, &["a", "b", "c"], 7);
        assert_eq!(fs::read(&p).unwrap(), fresh(&h, &["a", "b", "c"], 7));
        let ino = fs::metadata(&p).unwrap().ino();
        write(&p, &h, &["a", "b", "c"], 7);
        assert_eq!(
            fs::metadata(&p).unwrap().ino(),
            ino,
            "rewritten though alike"
        );
        assert_eq!(fs::read(&p).unwrap(), fresh(&h, &["a", "b", "c"], 7));
        let cases: [(&[&str], u64); 5] = [
            (&["a", "b", "c"], 8),      // a record in the middle differs
            (&["a", "b"], 8),           // the end is gone
            (&["a", "b", "c", "d"], 8), // one more at the end
            (&["a", "b", "c", "d"], 8), // alike again
            (&[], 8),                   // empty
        ];
        for (names, size) in cases {
            write(&p, &h, names, size);
            assert_eq!(fs::read(&p).unwrap(), fresh(&h, names, size), "{names:?}");
        }
        let other = IndexHeader {
            compress: false,
            ..h.clone()
        };
        write(&p, &other, &["a"], 7);
        assert_eq!(fs::read(&p).unwrap(), fresh(&other, &["a"], 7));
        assert_eq!(
            fs::read_dir(p.parent().unwrap()).unwrap().count(),
            1,
            "temporary files left"
        );
    }

    #[test]
    fn records_kept_as_they_are_give_what_a_fresh_writer_writes() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let h = header();
        let entry = |name: &str, size: u64| {
            IndexEntry::new(name.into(), &stat(size), 9, [9; 32]).with_sealed_name(b"x")
        };
        let fresh = |names: &[(&str, u64)]| {
            let p = d.path().join("fresh").join("s.idx");
            let _ = fs::remove_file(&p);
            let mut w = IndexWriter::create(&p, &h).unwrap();
            for (name, size) in names {
                let e = entry(name, *size);
                w.push(&e, &e.sealed_name).unwrap();
            }
            w.commit().unwrap();
            fs::read(&p).unwrap()
        };
        let p = index_path(d.path(), "s");
        let old: &[(&str, u64)] = &[("a", 7), ("b", 7), ("c", 7), ("d", 7)];
        // Writes `new` over the index, keeping each record whose entry is the old one as it is (as the
        // engine does for unchanged files); returns how many `push_same` took.
        let rewrite = |new: &[(&str, u64)]| -> usize {
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, fresh(old)).unwrap();
            let mut r = IndexReader::open(&p, &h);
            let mut w = IndexWriter::create(&p, &h).unwrap();
            let mut kept = 0;
            for (name, size) in new {
                let e = entry(name, *size);
                let same = r
                    .lookup_spanned(name.as_bytes())
                    .filter(|(o, _)| **o == e)
                    .map(|(_, span)| span);
                if let Some(span) = same
                    && w.push_same(span).unwrap()
                {
                    kept += 1;
                    continue;
                }
                w.push(&e, &e.sealed_name).unwrap();
            }
            w.commit().unwrap();
            kept
        };
        assert_eq!(rewrite(old), 4);
        let ino = fs::metadata(&p).unwrap().ino();
        // Kept alive by a second name, so that no later file can get its inode number.
        fs::hard_link(&p, d.path().join("pinned")).unwrap();
        assert_eq!(fs::read(&p).unwrap(), fresh(old));
        let cases: [(&[(&str, u64)], usize); 5] = [
            (&[("a", 7), ("b", 8), ("c", 7), ("d", 7)], 1), // a change in the middle: written after
            (&[("b", 7), ("c", 7), ("d", 7)], 0), // the first is gone: b is not at a's place
            (&[("a", 7), ("c", 7), ("d", 7)], 1), // one in the middle is gone
            (&[("a", 7), ("b", 7)], 2),           // the end is gone
            (&[("a", 7), ("b", 7), ("c", 7), ("d", 7), ("e", 7)], 4), // one more at the end
        ];
        for (new, kept) in cases {
            assert_eq!(rewrite(new), kept, "{new:?}");
            assert_eq!(fs::read(&p).unwrap(), fresh(new), "{new:?}");
        }
        assert_ne!(fs::metadata(&p).unwrap().ino(), ino);
    }

    #[test]
    fn records_kept_past_the_end_of_a_shrunk_index_fail_the_commit() {
        let d = tempfile::tempdir().unwrap();
        let h = header();
        let p = index_path(d.path(), "s");
        let mut w = IndexWriter::create(&p, &h).unwrap();
        for name in ["a", "b", "c"] {
            let e = IndexEntry::new(name.into(), &stat(7), 9, [9; 32]);
            w.push(&e, &e.sealed_name).unwrap();
        }
        w.commit().unwrap();
        let bytes = fs::read(&p).unwrap();
        let mut r = IndexReader::open(&p, &h);
        let mut w = IndexWriter::create(&p, &h).unwrap();
        for name in ["a", "b", "c"] {
            let (_, span) = r.lookup_spanned(name.as_bytes()).unwrap();
            assert!(w.push_same(span).unwrap());
        }
        // Shrunk while the run went on: the commit says so and leaves the file as it is.
        fs::write(&p, &bytes[..bytes.len() - 5]).unwrap();
        assert!(w.commit().is_err());
        assert_eq!(fs::read(&p).unwrap(), &bytes[..bytes.len() - 5]);
    }

    #[test]
    fn a_borrowed_record_encodes_as_an_entry() {
        let e = IndexEntry::new(b"a/b c".to_vec(), &stat(7), 99, [9; 32]).with_sealed_name(b"xyz");
        let (mut owned, mut borrowed) = (Vec::new(), Vec::new());
        records::encode_with_tail(&e, &e.sealed_name, &mut owned).unwrap();
        let r = IndexRecord::new(&e.path, &stat(7), 99, [9; 32]);
        records::encode_with_tail(&r, b"xyz", &mut borrowed).unwrap();
        assert_eq!(owned, borrowed);
    }

    #[test]
    fn records_decode_by_hand_as_postcard_decodes_them() {
        let mut rnd = crate::record_codec::test_rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..2000 {
            // Values of every width, negative times, paths and tails of any length (none too).
            let wide = |v: u64, r: u64| v >> (r % 64);
            let path: Vec<u8> = (0..rnd() % 300).map(|_| rnd() as u8).collect();
            let e = IndexEntry {
                path,
                size: wide(rnd(), rnd()),
                mtime: wide(rnd(), rnd()) as i64,
                mtime_nsec: rnd() as u32 % 1_000_000_000,
                ctime: -(wide(rnd(), rnd()) as i64),
                ctime_nsec: wide(rnd(), rnd()) as u32,
                ino: wide(rnd(), rnd()),
                remote_size: wide(rnd(), rnd()),
                hash: std::array::from_fn(|_| rnd() as u8),
                sealed_name: (0..rnd() % 3 * 40).map(|_| rnd() as u8).collect(),
            };
            let mut framed = Vec::new();
            records::encode_with_tail(&e, &e.sealed_name, &mut framed).unwrap();
            let bytes = &framed[4..];
            let (r, tail) = IndexRecord::decode(bytes).unwrap();
            let mut got = IndexEntry::default();
            got.set(&r, tail);
            assert_eq!(got, e, "round {round}");
            // Cut short anywhere inside the fixed fields, both refuse it.
            let fixed = bytes.len() - e.sealed_name.len();
            let cut = (rnd() as usize) % fixed;
            assert!(IndexRecord::decode(&bytes[..cut]).is_err(), "round {round}");
            assert!(postcard::take_from_bytes::<IndexRecord>(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn merge_lookup_and_header_check() {
        let d = tempfile::tempdir().unwrap();
        let p = index_path(d.path(), "s");
        let h = header();
        let mut w = IndexWriter::create(&p, &h).unwrap();
        for name in ["a", "a/b", "a-c", "z"] {
            let e = IndexEntry::new(name.into(), &stat(7), 99, [9; 32]);
            let e = if name == "a/b" {
                e.with_sealed_name(b"sealedb")
            } else {
                e
            };
            w.push(&e, &e.sealed_name).unwrap();
        }
        w.commit().unwrap();
        let mut r = IndexReader::open(&p, &h);
        assert!(r.problem.is_none());
        assert!(r.lookup(b" first").is_none());
        let ab = r.lookup(b"a/b").unwrap();
        assert_eq!((ab.remote_size, &ab.sealed_name[..]), (99, &b"sealedb"[..]));
        assert!(r.lookup(b"a/c").is_none());
        let ac = r.lookup(b"a-c").unwrap();
        assert!(ac.matches(&stat(7)) && ac.sealed_name.is_empty());
        assert!(!r.lookup(b"z").unwrap().matches(&stat(8)));
        assert!(r.lookup(b"zz").is_none());
        let other = IndexHeader {
            key_id: [2; 8],
            ..h.clone()
        };
        let mut r = IndexReader::open(&p, &other);
        assert!(r.problem.is_some());
        assert!(r.lookup(b"a").is_none());
        // A truncated file is used up to the damage.
        let bytes = fs::read(&p).unwrap();
        fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        let mut r = IndexReader::open(&p, &h);
        assert!(r.lookup(b"a-c").is_some());
        assert!(r.lookup(b"z").is_none());
        assert!(r.problem.is_some());
    }
}
