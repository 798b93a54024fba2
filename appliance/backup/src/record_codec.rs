//! Postcard's encoding, by hand, for the two records handled once a file every night: the old index's
//! records (read) and the manifest's entries (written).
//!
//! Through serde, postcard takes a 32-byte hash one byte at a time (a sequence element each), and every
//! varint through a generic path: decoding an index record cost about 700 instructions and encoding a
//! manifest entry about 650, together a tenth of the instructions of an unchanged night of 100,000 files.
//! The bytes are postcard's (its wire format is stable since 1.0): unsigned integers as LEB128 varints of
//! at most 10 bytes for `u64` and 5 for `u32` (the last byte holding only the bits that fit), signed ones
//! zigzagged first, byte strings as a varint length and the bytes, a fixed array as its bytes, an enum as
//! the varint of its variant's index and then its fields. The tests check every function against postcard
//! itself, which stays the codec of every other record.

use std::io;

/// Appends `v` as a varint.
pub fn put_u64(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Appends `v` zigzagged, as a varint.
pub fn put_i64(buf: &mut Vec<u8>, v: i64) {
    put_u64(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// Appends a byte string: its length, then its bytes.
pub fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_u64(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("bad record: {what}"))
}

/// Reads postcard values from the front of a record.
pub struct Cursor<'a> {
    /// What is not read yet.
    pub rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { rest: bytes }
    }

    /// A varint of at most `max` bytes whose last byte is at most `last` (postcard refuses the others).
    fn varint(&mut self, max: usize, last: u8) -> io::Result<u64> {
        let mut out = 0u64;
        for (i, &b) in self.rest.iter().take(max).enumerate() {
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i == max - 1 && b > last {
                    break;
                }
                self.rest = &self.rest[i + 1..];
                return Ok(out);
            }
        }
        Err(bad("varint too long or cut short"))
    }

    pub fn u64(&mut self) -> io::Result<u64> {
        self.varint(10, 0x01)
    }

    pub fn u32(&mut self) -> io::Result<u32> {
        // At most 5 bytes, the last holding 4 bits: the value fits.
        self.varint(5, 0x0f).map(|v| v as u32)
    }

    pub fn i64(&mut self) -> io::Result<i64> {
        let v = self.u64()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// A byte string, borrowed from the record.
    pub fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let len = self.u64()?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n <= self.rest.len())
            .ok_or_else(|| bad("byte string longer than the record"))?;
        let (b, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(b)
    }

    pub fn array32(&mut self) -> io::Result<[u8; 32]> {
        let Some((a, rest)) = self.rest.split_first_chunk::<32>() else {
            return Err(bad("cut short in a hash"));
        };
        self.rest = rest;
        Ok(*a)
    }
}

/// A xorshift generator for the tests of the hand-written codec (here and in `index`, `manifest`).
#[cfg(test)]
pub(crate) fn test_rng(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges() -> Vec<u64> {
        let mut v = vec![0, 1, 0x7f, 0x80, 0x3fff, 0x4000, u64::MAX, u64::MAX - 1];
        for s in 0..64 {
            v.push(1 << s);
            v.push((1 << s) - 1);
            v.push((1u64 << s).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        v
    }

    #[test]
    fn integers_encode_and_decode_as_postcard_does() {
        for v in edges() {
            let mut mine = Vec::new();
            put_u64(&mut mine, v);
            assert_eq!(mine, postcard::to_allocvec(&v).unwrap(), "{v}");
            assert_eq!(Cursor::new(&mine).u64().unwrap(), v);
            let s = v as i64;
            let mut mine = Vec::new();
            put_i64(&mut mine, s);
            assert_eq!(mine, postcard::to_allocvec(&s).unwrap(), "{s}");
            assert_eq!(Cursor::new(&mine).i64().unwrap(), s);
            let w = v as u32;
            let theirs = postcard::to_allocvec(&w).unwrap();
            assert_eq!(Cursor::new(&theirs).u32().unwrap(), w);
        }
    }

    #[test]
    fn malformed_varints_are_refused_like_postcard_refuses_them() {
        // The longest forms: their last byte may hold only the bits left.
        for (lead, last, ok64, ok32) in [
            (9, 0x01u8, true, false),
            (9, 0x02, false, false),
            (4, 0x0f, true, true),
            (4, 0x10, true, false),
            (10, 0x00, false, false),
        ] {
            let mut bytes = vec![0xffu8; lead];
            bytes.push(last);
            assert_eq!(Cursor::new(&bytes).u64().is_ok(), ok64, "{bytes:02x?}");
            assert_eq!(Cursor::new(&bytes).u32().is_ok(), ok32, "{bytes:02x?}");
            assert_eq!(postcard::from_bytes::<u64>(&bytes).is_ok(), ok64);
            assert_eq!(postcard::from_bytes::<u32>(&bytes).is_ok(), ok32);
        }
        // Then every sequence of up to 11 bytes drawn from a few telling values, as u64 and as u32.
        let values = [0x00u8, 0x01, 0x02, 0x0f, 0x10, 0x7f, 0x80, 0x81, 0xff];
        let mut rnd = test_rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..200_000 {
            let next = rnd();
            let len = (next % 12) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| values[((next >> (4 * i)) % values.len() as u64) as usize])
                .collect();
            let theirs = postcard::take_from_bytes::<u64>(&bytes).ok();
            let mut c = Cursor::new(&bytes);
            let mine = c.u64().ok().map(|v| (v, c.rest));
            assert_eq!(mine, theirs, "u64 {bytes:02x?}");
            let theirs = postcard::take_from_bytes::<u32>(&bytes).ok();
            let mut c = Cursor::new(&bytes);
            let mine = c.u32().ok().map(|v| (v, c.rest));
            assert_eq!(mine, theirs, "u32 {bytes:02x?}");
        }
    }

    #[test]
    fn byte_strings_and_arrays() {
        for len in [0usize, 1, 127, 128, 300] {
            let b: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut mine = Vec::new();
            put_bytes(&mut mine, &b);
            assert_eq!(
                mine,
                postcard::to_allocvec(serde_bytes_like(&b)).unwrap(),
                "{len}"
            );
            let mut c = Cursor::new(&mine);
            assert_eq!(c.bytes().unwrap(), &b[..]);
            assert!(c.rest.is_empty());
            // Cut anywhere, it is refused.
            for cut in 0..mine.len() {
                assert!(Cursor::new(&mine[..cut]).bytes().is_err(), "{len} {cut}");
            }
        }
        let a: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        let theirs = postcard::to_allocvec(&a).unwrap();
        assert_eq!(Cursor::new(&theirs).array32().unwrap(), a);
        assert!(Cursor::new(&theirs[..31]).array32().is_err());
    }

    /// `&[u8]` serializes through `serialize_bytes`, as the records' paths do.
    fn serde_bytes_like(b: &[u8]) -> &[u8] {
        b
    }
}
