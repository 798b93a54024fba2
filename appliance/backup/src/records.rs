//! Files of postcard records: each record is a little-endian `u32` length and that many bytes of postcard.
//!
//! The index and the manifest are written and read one record at a time, in walk order, so neither has to
//! fit in memory. A record longer than [`MAX_RECORD`] is refused (a corrupt or hostile length cannot make
//! the reader allocate).

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Longest record accepted: a 4096-byte path, a 4096-byte symlink target and the fixed fields.
pub const MAX_RECORD: usize = 16 * 1024;

/// Appends one record.
pub fn write<T: Serialize>(
    out: &mut impl Write,
    value: &T,
    scratch: &mut Vec<u8>,
) -> io::Result<()> {
    scratch.clear();
    encode_with_tail(value, &[], scratch)?;
    out.write_all(scratch)
}

/// Appends to `buf` one record as [`write()`] writes it (its length, then the record) made of `value` and
/// then `tail`, raw bytes to the end of the record. A reader of `value` alone ([`read`]) does not see
/// them: postcard takes what `value` needs and no more. This is how a record gains a trailing field
/// without a new file format (the index's sealed names).
pub fn encode_with_tail<T: Serialize>(value: &T, tail: &[u8], buf: &mut Vec<u8>) -> io::Result<()> {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    postcard::to_io(value, &mut *buf).map_err(io::Error::other)?;
    buf.extend_from_slice(tail);
    let len = buf.len() - start - 4;
    if len > MAX_RECORD {
        buf.truncate(start);
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "record too large",
        ));
    }
    buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Reads the next record; `Ok(None)` at a clean end of the input.
pub fn read<T: DeserializeOwned>(
    input: &mut impl Read,
    scratch: &mut Vec<u8>,
) -> io::Result<Option<T>> {
    Ok(read_with_tail(input, scratch)?.map(|(value, _)| value))
}

/// Reads the next record and what follows its value in it (see [`encode_with_tail`]; empty for a record
/// written by [`write()`]). `Ok(None)` at a clean end of the input.
pub fn read_with_tail<'s, T: Deserialize<'s>>(
    input: &mut impl Read,
    scratch: &'s mut Vec<u8>,
) -> io::Result<Option<(T, &'s [u8])>> {
    let Some(bytes) = read_raw(input, scratch)? else {
        return Ok(None);
    };
    let (value, tail) = postcard::take_from_bytes(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad record: {e}")))?;
    Ok(Some((value, tail)))
}

/// Reads the next record's bytes (into `scratch`), for a decoder of its own
/// ([`crate::record_codec`]). `Ok(None)` at a clean end of the input.
pub fn read_raw<'s>(
    input: &mut impl Read,
    scratch: &'s mut Vec<u8>,
) -> io::Result<Option<&'s [u8]>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = input.read(&mut len[got..])?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated record length",
            ));
        }
        got += n;
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_RECORD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("record of {len} bytes is larger than {MAX_RECORD}"),
        ));
    }
    scratch.resize(len, 0);
    input.read_exact(scratch)?;
    Ok(Some(scratch))
}

/// Appends one record whose bytes `encode` appends to the buffer it is given (an encoder of its own,
/// [`crate::record_codec`]); framed and limited as [`write()`] does.
pub fn write_with(
    out: &mut impl Write,
    scratch: &mut Vec<u8>,
    encode: impl FnOnce(&mut Vec<u8>),
) -> io::Result<()> {
    scratch.clear();
    scratch.extend_from_slice(&[0; 4]);
    encode(scratch);
    let len = scratch.len() - 4;
    if len > MAX_RECORD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "record too large",
        ));
    }
    scratch[..4].copy_from_slice(&(len as u32).to_le_bytes());
    out.write_all(scratch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_limits() {
        let mut buf = Vec::new();
        let mut s = Vec::new();
        write(&mut buf, &(1u32, b"abc".to_vec()), &mut s).unwrap();
        write(&mut buf, &(2u32, Vec::<u8>::new()), &mut s).unwrap();
        let mut r = &buf[..];
        assert_eq!(
            read::<(u32, Vec<u8>)>(&mut r, &mut s).unwrap(),
            Some((1, b"abc".to_vec()))
        );
        assert_eq!(
            read::<(u32, Vec<u8>)>(&mut r, &mut s).unwrap(),
            Some((2, vec![]))
        );
        assert_eq!(read::<(u32, Vec<u8>)>(&mut r, &mut s).unwrap(), None);
        // A tail is invisible to a reader of the value alone, and comes back to one that asks.
        let mut buf = Vec::new();
        encode_with_tail(&(3u32, b"de".to_vec()), b"tail", &mut buf).unwrap();
        write(&mut buf, &(4u32, Vec::<u8>::new()), &mut s).unwrap();
        assert_eq!(
            read::<(u32, Vec<u8>)>(&mut &buf[..], &mut s).unwrap(),
            Some((3, b"de".to_vec()))
        );
        let mut r = &buf[..];
        let (v, tail) = read_with_tail::<(u32, Vec<u8>)>(&mut r, &mut s)
            .unwrap()
            .unwrap();
        assert_eq!((v, tail), ((3, b"de".to_vec()), &b"tail"[..]));
        let (v, tail) = read_with_tail::<(u32, Vec<u8>)>(&mut r, &mut s)
            .unwrap()
            .unwrap();
        assert_eq!((v, tail), ((4, vec![]), &b""[..]));
        let huge = (u32::MAX).to_le_bytes();
        assert!(read::<(u32, Vec<u8>)>(&mut &huge[..], &mut s).is_err());
        assert!(read::<(u32, Vec<u8>)>(&mut &buf[..6], &mut s).is_err());
    }
}
