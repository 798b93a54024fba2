//! Unsealing: sealed stream in, verified plaintext out.
//!
//! [`Unsealer`] releases a chunk's plaintext only after its tag verified, and reports the trailer's verdict
//! (order, count, length, truncation) at the end of the stream. Plaintext read from it before that verdict
//! must not be put in its final place: [`unseal_to_file`] writes to a temporary file and renames it only
//! after the trailer verified; [`verify`] checks without writing anything.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use crate::chunker::MAX_CHUNK;
use crate::cipher::ChunkCipher;
use crate::compress::Inflater;
use crate::error::{Result, SealError};
use crate::format::{
    CHUNKER_GEAR_V1, ChunkMac, FLAG_DEFLATE, FLAG_RAW, HEADER_LEN, LEN_LEN, MAGIC, MAX_BODY,
    TAG_LEN, TAG_PREFIX_LEN, TRAILER_BODY_LEN, VERSION, file_id, prefixed_hasher, tag_prefix,
};
use crate::keys::{Keys, Suite, hex};
use crate::path::RelPath;

/// What a verified sealed file contained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnsealStats {
    pub chunks: u64,
    pub compressed_chunks: u64,
    pub plain_len: u64,
    pub sealed_len: u64,
    pub suite: Option<Suite>,
    /// The trailer MAC (the sealed file's last 32 bytes), once the trailer verified: it names this exact
    /// version of the file (a manifest records it).
    pub mac: [u8; 32],
}

enum State {
    Header,
    Records,
    Done,
    Failed,
}

/// Reads a sealed file from `R` and yields its plaintext through [`Read`], verifying as it goes.
///
/// The final `read` that returns 0 is the one that checked the trailer; an error from any `read` means the
/// file is not authentic (or the input failed): discard everything read from it.
pub struct Unsealer<R> {
    input: R,
    keys: Keys,
    file_id: [u8; 32],
    cipher: Option<ChunkCipher>,
    /// `header ‖ file_id`, once the header is read.
    tag_prefix: [u8; TAG_PREFIX_LEN],
    mac: Option<ChunkMac>,
    trailer: Option<blake3::Hasher>,
    record: Vec<u8>,
    plain: Vec<u8>,
    /// Created at the first compressed chunk.
    inflater: Option<Inflater>,
    /// The chunk being handed out is `record[plain_start..plain_end]` (a raw chunk, served where it was
    /// decrypted) or `plain[plain_start..plain_end]` (an inflated one).
    plain_start: usize,
    plain_end: usize,
    plain_in_record: bool,
    state: State,
    stats: UnsealStats,
}

impl<R> Drop for Unsealer<R> {
    fn drop(&mut self) {
        crate::spare::give_buffer(std::mem::take(&mut self.record));
        crate::spare::give_buffer(std::mem::take(&mut self.plain));
    }
}

impl<R: Read> Unsealer<R> {
    pub fn new(keys: &Keys, path: &RelPath, input: R) -> Unsealer<R> {
        Unsealer {
            input,
            keys: keys.clone(),
            file_id: file_id(&keys.0, path),
            cipher: None,
            tag_prefix: [0u8; TAG_PREFIX_LEN],
            mac: None,
            trailer: None,
            // Only bytes read or written into it are ever read back (recycled: `crate::spare`).
            record: crate::spare::take_window(TAG_PREFIX_LEN + MAX_BODY),
            // Sized at the first compressed chunk: raw chunks are served from `record`.
            plain: Vec::new(),
            inflater: None,
            plain_start: 0,
            plain_end: 0,
            plain_in_record: false,
            state: State::Header,
            stats: UnsealStats::default(),
        }
    }

    /// Counts so far; complete and verified once `read` returned 0.
    pub fn stats(&self) -> UnsealStats {
        self.stats
    }

    /// Reads and checks the header now (wrong key or wrong path are reported before any chunk).
    pub fn check_header(&mut self) -> Result<()> {
        if let State::Header = self.state {
            self.read_header()
                .inspect_err(|_| self.state = State::Failed)?;
            self.state = State::Records;
        }
        Ok(())
    }

    /// Reads `len` bytes into `record[at..]`.
    fn read_exact_or_truncated(&mut self, at: usize, len: usize, what: &'static str) -> Result<()> {
        let got = crate::read_full(&mut self.input, &mut self.record[at..at + len])
            .map_err(|e| SealError::io("reading sealed input", e))?;
        if got < len {
            return Err(SealError::Truncated {
                offset: self.stats.sealed_len + got as u64,
                what,
            });
        }
        Ok(())
    }

    fn read_header(&mut self) -> Result<()> {
        let mut head = [0u8; HEADER_LEN];
        let got = crate::read_full(&mut self.input, &mut head)
            .map_err(|e| SealError::io("reading sealed input", e))?;
        if got >= 4 && head[..4] != MAGIC {
            return Err(SealError::BadMagic);
        }
        if got < HEADER_LEN {
            return Err(SealError::Truncated {
                offset: got as u64,
                what: "the header is incomplete",
            });
        }
        if head[4] != VERSION {
            return Err(SealError::UnsupportedVersion(head[4]));
        }
        let suite = Suite::from_id(head[5]).ok_or(SealError::UnknownSuite(head[5]))?;
        if head[6] != CHUNKER_GEAR_V1 {
            return Err(SealError::UnknownChunker(head[6]));
        }
        if head[7] != 0 {
            return Err(SealError::BadHeaderFlags(head[7]));
        }
        let k = &self.keys.0;
        if head[8..16] != k.key_id {
            return Err(SealError::WrongKey {
                ours: hex(&k.key_id),
                found: hex(&head[8..16]),
            });
        }
        if head[16..24] != self.file_id[..8] {
            return Err(SealError::WrongPath);
        }
        self.cipher = Some(ChunkCipher::new(k, suite));
        self.tag_prefix = tag_prefix(&head, &self.file_id);
        self.mac = Some(ChunkMac::new(&k.chunk_mac));
        self.trailer = Some(prefixed_hasher(&k.trailer_mac, &head, &self.file_id));
        self.stats.suite = Some(suite);
        self.stats.sealed_len = HEADER_LEN as u64;
        Ok(())
    }

    /// Reads the next record; fills `plain` for a chunk, or checks the trailer and moves to `Done`.
    fn next_record(&mut self) -> Result<()> {
        let offset = self.stats.sealed_len;
        let chunk = self.stats.chunks;
        let mut len = [0u8; LEN_LEN];
        let got = crate::read_full(&mut self.input, &mut len)
            .map_err(|e| SealError::io("reading sealed input", e))?;
        if got < LEN_LEN {
            return Err(SealError::Truncated {
                offset: offset + got as u64,
                what: if got == 0 {
                    "the file ends without a trailer"
                } else {
                    "a record length is cut off"
                },
            });
        }
        let len = u32::from_le_bytes(len);
        if len == 0 {
            return self.check_trailer(offset);
        }
        if len as usize > MAX_BODY || len < 2 {
            return Err(SealError::BadRecordLength { offset, chunk, len });
        }
        let len = len as usize;
        // `tag ‖ body` lands so that the body starts at `TAG_PREFIX_LEN`; the tag is then copied out and
        // `header ‖ file_id` written in front of the body: the tag's input in one piece.
        self.read_exact_or_truncated(
            TAG_PREFIX_LEN - TAG_LEN,
            TAG_LEN + len,
            "a chunk record is cut off",
        )
        .map_err(|e| match e {
            SealError::Truncated { what, .. } => SealError::Truncated {
                offset: offset + LEN_LEN as u64,
                what,
            },
            other => other,
        })?;
        let (Some(cipher), Some(mac), Some(trailer)) = (&self.cipher, &self.mac, &mut self.trailer)
        else {
            return Err(SealError::Truncated {
                offset: 0,
                what: "no header",
            });
        };
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&self.record[TAG_PREFIX_LEN - TAG_LEN..TAG_PREFIX_LEN]);
        self.record[..TAG_PREFIX_LEN].copy_from_slice(&self.tag_prefix);
        let input = &mut self.record[..TAG_PREFIX_LEN + len];
        cipher.apply(&tag, &mut input[TAG_PREFIX_LEN..]);
        let expect = mac.tag(input);
        if !constant_time_eq::constant_time_eq_16(&expect, &tag) {
            return Err(SealError::ChunkAuth { offset, chunk });
        }
        let body = &input[TAG_PREFIX_LEN..];
        // Authentic from here on.
        let start = TAG_PREFIX_LEN + 1;
        let (n, in_record) = match body[0] {
            FLAG_RAW => (body.len() - 1, true),
            FLAG_DEFLATE => {
                let inflater = self.inflater.get_or_insert_with(Inflater::new);
                if self.plain.len() < MAX_CHUNK {
                    self.plain = crate::spare::take_window(MAX_CHUNK);
                }
                let n =
                    inflater
                        .inflate(&body[1..], &mut self.plain)
                        .ok_or(SealError::BadChunk {
                            offset,
                            chunk,
                            what: "compressed payload does not inflate to at most 64 KiB",
                        })?;
                self.stats.compressed_chunks += 1;
                (n, false)
            }
            _ => {
                return Err(SealError::BadChunk {
                    offset,
                    chunk,
                    what: "unknown body flags",
                });
            }
        };
        if n == 0 {
            return Err(SealError::BadChunk {
                offset,
                chunk,
                what: "empty chunk",
            });
        }
        trailer.update(&tag);
        self.plain_in_record = in_record;
        self.plain_start = if in_record { start } else { 0 };
        self.plain_end = self.plain_start + n;
        self.stats.chunks += 1;
        self.stats.plain_len += n as u64;
        self.stats.sealed_len += (LEN_LEN + TAG_LEN + len) as u64;
        Ok(())
    }

    fn check_trailer(&mut self, offset: u64) -> Result<()> {
        self.read_exact_or_truncated(0, TRAILER_BODY_LEN, "the trailer is cut off")
            .map_err(|e| match e {
                SealError::Truncated { what, .. } => SealError::Truncated {
                    offset: offset + LEN_LEN as u64,
                    what,
                },
                other => other,
            })?;
        let Some(mut h) = self.trailer.take() else {
            return Err(SealError::Truncated {
                offset: 0,
                what: "no header",
            });
        };
        h.update(&self.stats.chunks.to_le_bytes());
        h.update(&self.stats.plain_len.to_le_bytes());
        let expect = h.finalize();
        let stored: [u8; 32] = self.record[16..48]
            .try_into()
            .map_err(|_| SealError::TrailingData { offset })?;
        if expect != blake3::Hash::from(stored)
            || self.record[..8] != self.stats.chunks.to_le_bytes()
            || self.record[8..16] != self.stats.plain_len.to_le_bytes()
        {
            return Err(SealError::TrailerAuth {
                offset,
                found_chunks: self.stats.chunks,
                found_len: self.stats.plain_len,
            });
        }
        self.stats.sealed_len += (LEN_LEN + TRAILER_BODY_LEN) as u64;
        self.stats.mac = stored;
        let mut probe = [0u8; 1];
        let extra = crate::read_full(&mut self.input, &mut probe)
            .map_err(|e| SealError::io("reading sealed input", e))?;
        if extra != 0 {
            return Err(SealError::TrailingData {
                offset: self.stats.sealed_len,
            });
        }
        self.state = State::Done;
        Ok(())
    }

    fn step(&mut self) -> Result<()> {
        match self.state {
            State::Header => {
                self.check_header()?;
                Ok(())
            }
            State::Records => self.next_record(),
            State::Done => Ok(()),
            State::Failed => Err(SealError::io(
                "unsealing",
                io::Error::other("an earlier error already failed this file"),
            )),
        }
    }
}

impl<R: Read> Read for Unsealer<R> {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        if dst.is_empty() {
            return Ok(0);
        }
        while self.plain_start == self.plain_end {
            if let State::Done = self.state {
                return Ok(0);
            }
            if let Err(e) = self.step() {
                self.state = State::Failed;
                return Err(e.into_io());
            }
        }
        let n = dst.len().min(self.plain_end - self.plain_start);
        let from = if self.plain_in_record {
            &self.record
        } else {
            &self.plain
        };
        dst[..n].copy_from_slice(&from[self.plain_start..self.plain_start + n]);
        self.plain_start += n;
        Ok(n)
    }
}

/// Drives `unsealer` to the end, writing plaintext to `out`; maps errors back to [`SealError`].
fn drain<R: Read>(mut unsealer: Unsealer<R>, mut out: impl Write) -> Result<UnsealStats> {
    unsealer.check_header()?;
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        let n = match unsealer.read(&mut buf) {
            Ok(0) => return Ok(unsealer.stats()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SealError::from_io(e, "reading sealed input")),
        };
        out.write_all(&buf[..n])
            .map_err(|e| SealError::io("writing plaintext", e))?;
    }
}

/// Verifies a sealed stream completely without keeping any plaintext.
pub fn verify(keys: &Keys, path: &RelPath, input: impl Read) -> Result<UnsealStats> {
    drain(Unsealer::new(keys, path, input), io::sink())
}

/// Unseals into `dest` through a temporary file in the same folder, renamed into place only after the
/// whole file verified. With `overwrite` false an existing `dest` is left alone and reported.
pub fn unseal_to_file(
    keys: &Keys,
    path: &RelPath,
    input: impl Read,
    dest: &Path,
    overwrite: bool,
) -> Result<UnsealStats> {
    let ctx = |what: &str| format!("{what} {}", dest.display());
    if !overwrite && dest.symlink_metadata().is_ok() {
        return Err(SealError::io(
            ctx("not overwriting"),
            io::Error::from(io::ErrorKind::AlreadyExists),
        ));
    }
    let mut tmp = temp_file_beside(dest)
        .map_err(|e| SealError::io(ctx("creating a temporary file for"), e))?;
    let stats = drain(
        Unsealer::new(keys, path, input),
        io::BufWriter::with_capacity(1 << 16, tmp.as_file_mut()),
    )?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| SealError::io(ctx("syncing"), e))?;
    let persisted = if overwrite {
        tmp.persist(dest).map(|_| ())
    } else {
        tmp.persist_noclobber(dest).map(|_| ())
    };
    persisted.map_err(|e| SealError::io(ctx("renaming into"), e.error))?;
    Ok(stats)
}

/// A temporary file in `dest`'s folder (so a rename into place is atomic), named `.offsite-tmp-*` and
/// removed if dropped before it is persisted. Everything offsite writes for a user goes through one.
pub fn temp_file_beside(dest: &Path) -> io::Result<tempfile::NamedTempFile> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(".offsite-tmp-")
        .tempfile_in(dir)
}

/// Unseals a whole file in memory-bounded two passes: verify first, then write. For outputs that cannot be
/// renamed into place (a pipe): nothing is written unless the whole file is authentic. `input` is read
/// from its start, twice.
pub fn unseal_verified_first(
    keys: &Keys,
    path: &RelPath,
    input: &mut File,
    out: impl Write,
) -> Result<UnsealStats> {
    use std::io::{Seek, SeekFrom};
    let rewind = |f: &mut File| {
        f.seek(SeekFrom::Start(0))
            .map_err(|e| SealError::io("rewinding sealed input", e))
    };
    rewind(input)?;
    verify(keys, path, &mut *input)?;
    rewind(input)?;
    drain(Unsealer::new(keys, path, input), out)
}
