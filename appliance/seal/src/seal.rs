//! Sealing: plaintext stream in, sealed stream out, in constant memory.

use std::io::{self, Read};

use crate::chunker::{MAX_CHUNK, next_chunk_len};
use crate::cipher::ChunkCipher;
use crate::compress::Compressor;
use crate::format::{
    FLAG_DEFLATE, FLAG_RAW, HEADER_LEN, LEN_LEN, MAX_BODY, TAG_LEN, file_id, header,
    prefixed_hasher,
};
use crate::keys::Keys;
use crate::path::RelPath;

/// Choices that change the sealed bytes (so they must be stable for a share).
#[derive(Clone, Copy, Debug)]
pub struct SealOptions {
    /// Deflate chunks that shrink by at least 1/16 (default on).
    pub compress: bool,
}

impl Default for SealOptions {
    fn default() -> Self {
        SealOptions { compress: true }
    }
}

/// What a finished seal produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SealStats {
    pub chunks: u64,
    pub compressed_chunks: u64,
    pub plain_len: u64,
    pub sealed_len: u64,
}

/// Reads plaintext from `R` and yields the sealed file (`docs/FORMAT.md`) through [`Read`].
///
/// Memory: about 200 KiB of buffers plus the compressor's tables, whatever the file size.
pub struct Sealer<R> {
    input: R,
    cipher: ChunkCipher,
    gear: [u64; 256],
    compressor: Option<Compressor>,
    tag_prefix: blake3::Hasher,
    trailer: blake3::Hasher,
    /// Plaintext window: `buf[start..end]` is read but not yet sealed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    input_done: bool,
    /// The record being handed out: `out[out_pos..]` is still to be read.
    out: Vec<u8>,
    out_pos: usize,
    finished: bool,
    stats: SealStats,
}

impl<R: Read> Sealer<R> {
    pub fn new(keys: &Keys, path: &RelPath, options: SealOptions, input: R) -> Sealer<R> {
        let k = &keys.0;
        let fid = file_id(k, path);
        let head = header(k.suite, k.key_id, &fid);
        let mut out = Vec::with_capacity(LEN_LEN + TAG_LEN + MAX_BODY);
        out.extend_from_slice(&head);
        Sealer {
            input,
            cipher: ChunkCipher::new(k, k.suite),
            gear: k.gear,
            compressor: options.compress.then(Compressor::new),
            tag_prefix: prefixed_hasher(&k.chunk_mac, &head, &fid),
            trailer: prefixed_hasher(&k.trailer_mac, &head, &fid),
            buf: vec![0u8; 2 * MAX_CHUNK],
            start: 0,
            end: 0,
            input_done: false,
            out,
            out_pos: 0,
            finished: false,
            stats: SealStats {
                sealed_len: HEADER_LEN as u64,
                ..SealStats::default()
            },
        }
    }

    /// Counts so far (final once `read` returned 0).
    pub fn stats(&self) -> SealStats {
        self.stats
    }

    pub fn into_inner(self) -> R {
        self.input
    }

    /// Tops the window up to at least `MAX_CHUNK` bytes, or to the end of the input.
    fn fill(&mut self) -> io::Result<()> {
        if self.end - self.start >= MAX_CHUNK || self.input_done {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end < MAX_CHUNK {
            match self.input.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.input_done = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Puts the next record (a chunk, or the trailer at the end) into `out`.
    fn next_record(&mut self) -> io::Result<()> {
        self.fill()?;
        self.out.clear();
        self.out_pos = 0;
        if self.start == self.end {
            self.write_trailer();
            return Ok(());
        }
        let n = next_chunk_len(&self.gear, &self.buf[self.start..self.end]);
        let chunk = &self.buf[self.start..self.start + n];
        self.start += n;

        self.out.resize(LEN_LEN + TAG_LEN, 0);
        let packed = self.compressor.as_mut().and_then(|c| c.compress(chunk));
        match packed {
            Some(p) => {
                self.out.push(FLAG_DEFLATE);
                self.out.extend_from_slice(p);
                self.stats.compressed_chunks += 1;
            }
            None => {
                self.out.push(FLAG_RAW);
                self.out.extend_from_slice(chunk);
            }
        }
        let body_len = self.out.len() - LEN_LEN - TAG_LEN;
        let mut tag = [0u8; TAG_LEN];
        let mut h = self.tag_prefix.clone();
        h.update(&self.out[LEN_LEN + TAG_LEN..]);
        h.finalize_xof().fill(&mut tag);
        self.cipher.apply(&tag, &mut self.out[LEN_LEN + TAG_LEN..]);
        self.out[..LEN_LEN].copy_from_slice(&(body_len as u32).to_le_bytes());
        self.out[LEN_LEN..LEN_LEN + TAG_LEN].copy_from_slice(&tag);

        self.trailer.update(&tag);
        self.stats.chunks += 1;
        self.stats.plain_len += n as u64;
        self.stats.sealed_len += self.out.len() as u64;
        Ok(())
    }

    fn write_trailer(&mut self) {
        self.trailer.update(&self.stats.chunks.to_le_bytes());
        self.trailer.update(&self.stats.plain_len.to_le_bytes());
        let mac = self.trailer.finalize();
        self.out.extend_from_slice(&0u32.to_le_bytes());
        self.out.extend_from_slice(&self.stats.chunks.to_le_bytes());
        self.out
            .extend_from_slice(&self.stats.plain_len.to_le_bytes());
        self.out.extend_from_slice(mac.as_bytes());
        self.stats.sealed_len += self.out.len() as u64;
        self.finished = true;
    }
}

impl<R: Read> Read for Sealer<R> {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        if dst.is_empty() {
            return Ok(0);
        }
        while self.out_pos == self.out.len() {
            if self.finished {
                return Ok(0);
            }
            self.next_record()?;
        }
        let n = dst.len().min(self.out.len() - self.out_pos);
        dst[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

/// Seals `input` into `output`; returns the counts.
pub fn seal(
    keys: &Keys,
    path: &RelPath,
    options: SealOptions,
    input: impl Read,
    mut output: impl io::Write,
) -> io::Result<SealStats> {
    let mut sealer = Sealer::new(keys, path, options, input);
    io::copy(&mut sealer, &mut output)?;
    Ok(sealer.stats())
}

/// The sealed length of `input` without keeping the output (one full pass: reads and seals everything).
pub fn sealed_len(
    keys: &Keys,
    path: &RelPath,
    options: SealOptions,
    input: impl Read,
) -> io::Result<u64> {
    seal(keys, path, options, input, io::sink()).map(|s| s.sealed_len)
}
