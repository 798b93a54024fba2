//! One file of a snapshot: its bytes from the target (a stream, from the network or a local copy) are
//! authenticated against the manifest entry and go to their destination only once they are proven to be
//! exactly the version the snapshot recorded.
//!
//! * Sealed files: the seal proves the content is authentic for this path (a swapped or cut file fails);
//!   the trailer MAC compared with the manifest's proves it is this snapshot's version (a rolled-back copy
//!   fails). Plain files: size and BLAKE3 are compared with the manifest.
//! * Into a folder: written to a temporary file, renamed into place after the checks ([`super::place`]).
//!   Into a tar stream: the file is first spooled to a temporary file and checked, then archived, so a
//!   tar never holds a byte of a file that failed. Check only: nothing is written.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, Write};

use seal::{Keys, RelPath, SealError, Unsealer};

use super::place::{PlaceError, Placer};
use super::problem::Problem;
use super::tar_out::TarOut;
use crate::manifest::{EntryKind, ManifestEntry};

/// Longest symlink target restored (as rsync: `PATH_MAX`).
const MAX_LINK: usize = 4096;
const BUF: usize = 64 * 1024;

/// Where verified plaintext goes.
pub enum Output<'a> {
    /// Nowhere: verify only.
    Check,
    /// Files in a destination folder.
    Dir(&'a Placer),
    /// Entries of a tar stream.
    Tar(&'a mut TarOut),
}

impl From<PlaceError> for Problem {
    fn from(e: PlaceError) -> Problem {
        match e {
            PlaceError::Exists => Problem::Exists,
            PlaceError::Io(why) => Problem::Failed(why),
        }
    }
}

fn failed(what: &str) -> impl Fn(io::Error) -> Problem + '_ {
    move |e| Problem::Failed(format!("{what}: {e}"))
}

/// A read error of an unsealing stream: the seal's verdict, or the input's own failure.
fn unseal_problem(e: io::Error) -> Problem {
    Problem::from_seal(&SealError::from_io(e, "reading the file from the target"))
}

/// Copies `from` into `to`, telling read errors (the source's) from write errors (the destination's).
fn pump(
    from: &mut dyn Read,
    to: &mut dyn Write,
    read_err: fn(io::Error) -> Problem,
) -> Result<u64, Problem> {
    let mut buf = vec![0u8; BUF];
    let mut n = 0u64;
    loop {
        let k = match from.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        to.write_all(&buf[..k]).map_err(failed("writing"))?;
        n += k as u64;
    }
}

/// BLAKE3 and length of what passes through.
struct Hashing<'r> {
    inner: &'r mut dyn Read,
    hasher: blake3::Hasher,
}

impl Read for Hashing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn input_problem(e: io::Error) -> Problem {
    Problem::Failed(format!("reading the file from the target: {e}"))
}

/// Compares a plain file's size and hash with the manifest.
fn check_plain(e: &ManifestEntry, len: u64, hash: blake3::Hash) -> Result<(), Problem> {
    if len != e.size {
        return Err(Problem::Changed(format!(
            "{len} bytes, the snapshot recorded {}",
            e.size
        )));
    }
    if *hash.as_bytes() != e.hash {
        return Err(Problem::Changed(
            "its content differs from what the snapshot recorded".into(),
        ));
    }
    Ok(())
}

/// Checks a sealed file's verified trailer against the manifest (a symlink's size is recorded as 0).
fn check_sealed(e: &ManifestEntry, stats: &seal::UnsealStats) -> Result<(), Problem> {
    let size_ok = e.kind == EntryKind::Symlink || stats.plain_len == e.size;
    if stats.mac != e.hash || !size_ok {
        return Err(Problem::RolledBack);
    }
    Ok(())
}

fn rel_path(e: &ManifestEntry) -> Result<RelPath, Problem> {
    RelPath::new(e.path.clone()).map_err(|x| Problem::Failed(x.to_string()))
}

/// Authenticates one file (or a sealed symlink) read from `input` against its manifest entry and sends
/// it to `out`. `keys` is `Some` for a sealed share. Returns the plaintext bytes.
pub fn process(
    keys: Option<&Keys>,
    e: &ManifestEntry,
    input: &mut dyn Read,
    out: &mut Output<'_>,
) -> Result<u64, Problem> {
    match (keys, e.kind) {
        (Some(k), EntryKind::Symlink) => sealed_symlink(k, e, input, out),
        (Some(k), EntryKind::File) => sealed_file(k, e, input, out),
        (None, EntryKind::File) => plain_file(e, input, out),
        _ => Err(Problem::Failed(
            "the manifest lists this entry as a file with no content".into(),
        )),
    }
}

fn sealed_file(
    keys: &Keys,
    e: &ManifestEntry,
    input: &mut dyn Read,
    out: &mut Output<'_>,
) -> Result<u64, Problem> {
    let rel = rel_path(e)?;
    match out {
        Output::Check => {
            let mut u = Unsealer::new(keys, &rel, input);
            pump(&mut u, &mut io::sink(), unseal_problem)?;
            check_sealed(e, &u.stats())?;
        }
        Output::Dir(placer) => {
            let mut u = Unsealer::new(keys, &rel, input);
            into_place(placer, e, &mut u, unseal_problem, |u, _| {
                check_sealed(e, &u.stats())
            })?;
        }
        Output::Tar(tar) => {
            let mut spool = tar.take_spool().map_err(failed("spooling"))?;
            pump(input, &mut spool, input_problem)?;
            let stats = verify_spooled(keys, &rel, &mut spool)?;
            check_sealed(e, &stats)?;
            rewind(&mut spool)?;
            {
                let mut u = Unsealer::new(keys, &rel, &mut spool);
                // The spool was verified: a failure now is a local one.
                tar.file(e, &mut u)
                    .map_err(failed("writing the tar stream"))?;
            }
            tar.return_spool(spool);
        }
    }
    Ok(e.size)
}

/// Writes `from` into a temporary file beside `e`'s place, runs `check` (given the reader and the length),
/// and only then renames it into place with the manifest's mode and mtime.
fn into_place<R: Read>(
    placer: &Placer,
    e: &ManifestEntry,
    from: &mut R,
    read_err: fn(io::Error) -> Problem,
    check: impl FnOnce(&R, u64) -> Result<(), Problem>,
) -> Result<(), Problem> {
    let mut pending = placer.begin_file(&e.path)?;
    let n = {
        let mut w = BufWriter::with_capacity(BUF, pending.file());
        let n = pump(from, &mut w, read_err)?;
        w.flush().map_err(failed("writing"))?;
        n
    };
    check(from, n)?;
    pending.commit(e.perms, e.mtime, e.mtime_nsec)?;
    Ok(())
}

fn rewind(f: &mut File) -> Result<(), Problem> {
    f.rewind().map_err(failed("rewinding the spool file"))
}

fn verify_spooled(
    keys: &Keys,
    rel: &RelPath,
    spool: &mut File,
) -> Result<seal::UnsealStats, Problem> {
    rewind(spool)?;
    let mut u = Unsealer::new(keys, rel, &mut *spool);
    pump(&mut u, &mut io::sink(), unseal_problem)?;
    Ok(u.stats())
}

fn plain_file(
    e: &ManifestEntry,
    input: &mut dyn Read,
    out: &mut Output<'_>,
) -> Result<u64, Problem> {
    let mut h = Hashing {
        inner: input,
        hasher: blake3::Hasher::new(),
    };
    match out {
        Output::Check => {
            let n = pump(&mut h, &mut io::sink(), input_problem)?;
            check_plain(e, n, h.hasher.finalize())?;
        }
        Output::Dir(placer) => {
            into_place(placer, e, &mut h, input_problem, |h, n| {
                check_plain(e, n, h.hasher.finalize())
            })?;
        }
        Output::Tar(tar) => {
            let mut spool = tar.take_spool().map_err(failed("spooling"))?;
            let n = pump(&mut h, &mut spool, input_problem)?;
            check_plain(e, n, h.hasher.finalize())?;
            rewind(&mut spool)?;
            tar.file(e, &mut spool)
                .map_err(failed("writing the tar stream"))?;
            tar.return_spool(spool);
        }
    }
    Ok(e.size)
}

fn sealed_symlink(
    keys: &Keys,
    e: &ManifestEntry,
    input: &mut dyn Read,
    out: &mut Output<'_>,
) -> Result<u64, Problem> {
    let rel = rel_path(e)?;
    let mut u = Unsealer::new(keys, &rel, input);
    let mut target = Vec::new();
    (&mut u)
        .take(MAX_LINK as u64 + 1)
        .read_to_end(&mut target)
        .map_err(unseal_problem)?;
    if target.len() > MAX_LINK {
        return Err(Problem::Tampered(
            "symlink target longer than 4096 bytes".into(),
        ));
    }
    check_sealed(e, &u.stats())?;
    if target != e.link {
        return Err(Problem::RolledBack);
    }
    match out {
        Output::Check => {}
        Output::Dir(placer) => placer.symlink(&e.path, &e.link, e.mtime, e.mtime_nsec)?,
        Output::Tar(tar) => tar.symlink(e).map_err(failed("writing the tar stream"))?,
    }
    Ok(0)
}
