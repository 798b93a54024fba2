//! Integer encodings of the rsync protocol (rsync `io.c`): little-endian
//! int32/int64, `varint`, `varlong`, the protocol-dependent `varint30` /
//! `varlong30`, vstrings and the delta-coded file index (`ndx`).
//!
//! Encoders append to a `Vec<u8>`; decoders are split into "how many more bytes
//! follow this first byte" and "assemble the value" so that the byte-slice
//! decoder here and the async stream reader in [`crate::mux`] share the logic.

use crate::error::{Error, Result};

/// Index value meaning "end of phase" (`NDX_DONE`).
pub const NDX_DONE: i32 = -1;
/// Index value announcing deletion statistics (`NDX_DEL_STATS`).
pub const NDX_DEL_STATS: i32 = -3;

/// Appends a little-endian int32.
pub fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a little-endian u16 (`write_shortint`).
pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends an rsync `longint` (protocol < 30 64-bit value): an int32 when it
/// fits in 0..=0x7FFFFFFF, else `FF FF FF FF` followed by an int64.
pub fn put_longint(out: &mut Vec<u8>, v: i64) {
    if (0..=0x7FFF_FFFF).contains(&v) {
        put_i32(out, v as i32);
    } else {
        put_i32(out, -1);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Number of extra bytes that follow a varint/varlong header byte: the count
/// of its leading 1-bits.
pub fn extra_bytes(first: u8) -> usize {
    first.leading_ones() as usize
}

/// Appends a `varint` (`write_varint`).
pub fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_varlong(out, v as u32 as i64, 1);
}

/// Appends a `varlong` with at least `min_bytes` bytes (`write_varlong`).
///
/// `min_bytes` is 1 for a varint, 3 for sizes and 4 for times.
pub fn put_varlong(out: &mut Vec<u8>, v: i64, min_bytes: usize) {
    debug_assert!((1..=8).contains(&min_bytes));
    // b[1..=8] = value little endian
    let le = v.to_le_bytes();
    let mut b = [0u8; 9];
    b[1..].copy_from_slice(&le);
    // The value's bytes up to its highest non-zero one, at least `min_bytes`.
    let mut cnt = (8 - (v as u64).leading_zeros() as usize / 8).max(min_bytes);
    let bit: u32 = 1u32 << (7 + min_bytes - cnt);
    if u32::from(b[cnt]) >= bit {
        cnt += 1;
        b[0] = !((bit - 1) as u8);
    } else if cnt > min_bytes {
        b[0] = b[cnt] | !((bit * 2 - 1) as u8);
    } else {
        b[0] = b[cnt];
    }
    // All nine bytes, then cut: a copy of fixed size is two moves, one of `cnt` bytes a call to
    // `memcpy` (the file list puts three varlongs an entry: this was 3 % of an unchanged night).
    let start = out.len();
    out.extend_from_slice(&b);
    out.truncate(start + cnt);
}

/// Assembles a varlong from its first `min_bytes` bytes (`head`) and the
/// `extra_bytes(head[0])` bytes that followed.
pub fn finish_varlong(head: &[u8], extra: &[u8]) -> Result<i64> {
    let min_bytes = head.len();
    let n_extra = extra_bytes(head[0]);
    if n_extra != extra.len() || min_bytes + n_extra > 9 {
        return Err(Error::protocol(format!(
            "malformed varlong header byte {:#04x}",
            head[0]
        )));
    }
    let mut u = [0u8; 9];
    u[..min_bytes - 1].copy_from_slice(&head[1..]);
    if n_extra > 0 {
        let bit = 1u16 << (8 - n_extra);
        u[min_bytes - 1..min_bytes - 1 + n_extra].copy_from_slice(extra);
        u[min_bytes + n_extra - 1] = (u16::from(head[0]) & (bit - 1)) as u8;
    } else {
        u[min_bytes - 1] = head[0];
    }
    if u[8] != 0 {
        return Err(Error::protocol("varlong wider than 64 bits"));
    }
    Ok(i64::from_le_bytes(u[..8].try_into().expect("8 bytes")))
}

/// Assembles a varint from its first byte and the extra bytes.
pub fn finish_varint(first: u8, extra: &[u8]) -> Result<i32> {
    let n_extra = extra_bytes(first);
    if n_extra > 4 || n_extra != extra.len() {
        return Err(Error::protocol(format!(
            "malformed varint header byte {first:#04x}"
        )));
    }
    let v = finish_varlong(&[first], extra)?;
    if v > i64::from(u32::MAX) {
        return Err(Error::protocol("varint wider than 32 bits"));
    }
    Ok(v as u32 as i32)
}

/// `write_varint30`: int32 before protocol 30, varint from 30 on.
pub fn put_varint30(out: &mut Vec<u8>, v: i32, protocol: u32) {
    if protocol < 30 {
        put_i32(out, v);
    } else {
        put_varint(out, v);
    }
}

/// `write_varlong30`: longint before protocol 30, varlong from 30 on.
pub fn put_varlong30(out: &mut Vec<u8>, v: i64, min_bytes: usize, protocol: u32) {
    if protocol < 30 {
        put_longint(out, v);
    } else {
        put_varlong(out, v, min_bytes);
    }
}

/// Appends a vstring (`write_vstring`): 1-byte length, or 2 bytes with the
/// high bit set for lengths above 0x7F (max 0x7FFF).
pub fn put_vstring(out: &mut Vec<u8>, s: &[u8]) -> Result<()> {
    let len = s.len();
    if len > 0x7FFF {
        return Err(Error::InvalidInput(format!(
            "vstring too long ({len} bytes)"
        )));
    }
    if len > 0x7F {
        out.push((len >> 8) as u8 | 0x80);
    }
    out.push(len as u8);
    out.extend_from_slice(s);
    Ok(())
}

/// Per-direction state of the delta-coded file index (`write_ndx`/`read_ndx`,
/// protocol >= 30). Before 30 an index is a plain int32.
#[derive(Debug, Clone)]
pub struct NdxState {
    prev_positive: i32,
    prev_negative: i32,
}

impl Default for NdxState {
    fn default() -> Self {
        NdxState {
            prev_positive: -1,
            prev_negative: 1,
        }
    }
}

impl NdxState {
    /// Encodes `ndx` (protocol >= 30).
    pub fn encode(&mut self, out: &mut Vec<u8>, ndx: i32) {
        let (diff, value) = if ndx >= 0 {
            let d = ndx.wrapping_sub(self.prev_positive);
            self.prev_positive = ndx;
            (d, ndx)
        } else if ndx == NDX_DONE {
            out.push(0);
            return;
        } else {
            out.push(0xFF);
            let v = ndx.wrapping_neg();
            let d = v.wrapping_sub(self.prev_negative);
            self.prev_negative = v;
            (d, v)
        };
        if diff > 0 && diff < 0xFE {
            out.push(diff as u8);
        } else if !(0..=0x7FFF).contains(&diff) {
            out.push(0xFE);
            out.push(((value >> 24) as u8) | 0x80);
            out.push(value as u8);
            out.push((value >> 8) as u8);
            out.push((value >> 16) as u8);
        } else {
            out.push(0xFE);
            out.push((diff >> 8) as u8);
            out.push(diff as u8);
        }
    }

    /// Decodes one index, pulling bytes from `next`.
    pub fn decode<F>(&mut self, mut next: F) -> Result<i32>
    where
        F: FnMut() -> Result<u8>,
    {
        let mut b0 = next()?;
        let negative = if b0 == 0xFF {
            b0 = next()?;
            true
        } else if b0 == 0 {
            return Ok(NDX_DONE);
        } else {
            false
        };
        let prev = if negative {
            self.prev_negative
        } else {
            self.prev_positive
        };
        let num = if b0 == 0xFE {
            let x = next()?;
            let y = next()?;
            if x & 0x80 != 0 {
                let z = next()?;
                let w = next()?;
                i32::from_le_bytes([y, z, w, x & 0x7F])
            } else {
                ((i32::from(x) << 8) | i32::from(y)).wrapping_add(prev)
            }
        } else {
            i32::from(b0).wrapping_add(prev)
        };
        if negative {
            self.prev_negative = num;
            Ok(num.wrapping_neg())
        } else {
            self.prev_positive = num;
            Ok(num)
        }
    }
}

/// A cursor over a byte slice with the protocol's decoders (used in tests and
/// for parsing message payloads).
#[derive(Debug)]
pub struct SliceReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> SliceReader<'a> {
    /// Wraps a slice.
    pub fn new(buf: &'a [u8]) -> Self {
        SliceReader { buf, pos: 0 }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(Error::UnexpectedEof("decoding a message"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    /// Reads a little-endian int32.
    pub fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.bytes(4)?.try_into().expect("4")))
    }

    /// Reads a varint.
    pub fn varint(&mut self) -> Result<i32> {
        let first = self.u8()?;
        let extra = self.bytes(extra_bytes(first).min(8))?;
        finish_varint(first, extra)
    }

    /// Reads a varlong with `min_bytes`.
    pub fn varlong(&mut self, min_bytes: usize) -> Result<i64> {
        let head = self.bytes(min_bytes)?;
        let extra = self.bytes(extra_bytes(head[0]).min(8))?;
        finish_varlong(head, extra)
    }

    /// Reads an ndx with the given state.
    pub fn ndx(&mut self, st: &mut NdxState) -> Result<i32> {
        st.decode(|| self.u8())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varlong(v: i64, m: usize) -> Vec<u8> {
        let mut o = Vec::new();
        put_varlong(&mut o, v, m);
        o
    }

    fn varint(v: i32) -> Vec<u8> {
        let mut o = Vec::new();
        put_varint(&mut o, v);
        o
    }

    #[test]
    fn varlong_examples() {
        assert_eq!(varlong(100000, 3), [0x01, 0xA0, 0x86]);
        assert_eq!(varlong(0, 3), [0, 0, 0]);
        assert_eq!(varlong(0x7F_FFFF, 3), [0x7F, 0xFF, 0xFF]);
        // 0x80_0000 needs the extension: first byte 0x80 -> 1 extra byte.
        assert_eq!(varlong(0x80_0000, 3), [0x80, 0x00, 0x00, 0x80]);
        for &v in &[
            0i64,
            1,
            127,
            128,
            255,
            256,
            65535,
            100000,
            1 << 24,
            (1 << 31) - 1,
            1 << 32,
            1_700_000_000,
            i64::MAX,
            -1,
        ] {
            for m in [1usize, 3, 4] {
                let e = varlong(v, m);
                let mut r = SliceReader::new(&e);
                assert_eq!(r.varlong(m).unwrap(), v, "v={v} m={m}");
                assert_eq!(r.remaining(), 0);
            }
        }
    }

    /// `write_varlong` as rsync writes it, byte by byte: the fast form must give the same bytes.
    fn varlong_reference(v: i64, min_bytes: usize) -> Vec<u8> {
        let mut b = [0u8; 9];
        b[1..].copy_from_slice(&v.to_le_bytes());
        let mut cnt = 8;
        while cnt > min_bytes && b[cnt] == 0 {
            cnt -= 1;
        }
        let bit: u32 = 1u32 << (7 + min_bytes - cnt);
        if u32::from(b[cnt]) >= bit {
            cnt += 1;
            b[0] = !((bit - 1) as u8);
        } else if cnt > min_bytes {
            b[0] = b[cnt] | !((bit * 2 - 1) as u8);
        } else {
            b[0] = b[cnt];
        }
        b[..cnt].to_vec()
    }

    #[test]
    fn varlong_matches_the_byte_by_byte_form() {
        let mut out = vec![0xAA];
        for shift in 0..64 {
            for v in [
                1i64 << shift,
                (1i64 << shift).wrapping_sub(1),
                (1i64 << shift).wrapping_add(1),
                (1i64 << shift).wrapping_neg(),
            ] {
                for m in 1..=8 {
                    assert_eq!(varlong(v, m), varlong_reference(v, m), "v={v} m={m}");
                    // Appends after what the buffer holds.
                    out.truncate(1);
                    put_varlong(&mut out, v, m);
                    assert_eq!(out[0], 0xAA);
                    assert_eq!(out[1..], varlong_reference(v, m)[..]);
                }
            }
        }
    }

    #[test]
    fn varint_examples() {
        assert_eq!(varint(0), [0]);
        assert_eq!(varint(0x7F), [0x7F]);
        assert_eq!(varint(0x80), [0x80, 0x80]);
        assert_eq!(varint(0x1FE), [0x81, 0xFE]);
        assert_eq!(varint(-1), [0xF0, 0xFF, 0xFF, 0xFF, 0xFF]);
        for &v in &[
            0,
            1,
            0x7F,
            0x80,
            0x3FFF,
            0x4000,
            0x1F_FFFF,
            0x20_0000,
            i32::MAX,
            -1,
            i32::MIN,
        ] {
            let e = varint(v);
            assert_eq!(SliceReader::new(&e).varint().unwrap(), v);
        }
        assert!(SliceReader::new(&[0xF8, 0, 0, 0, 0, 0]).varint().is_err());
    }

    #[test]
    fn ndx_examples() {
        let mut st = NdxState::default();
        let mut o = Vec::new();
        // First index 0: delta 1 from the initial -1.
        st.encode(&mut o, 0);
        assert_eq!(o, [0x01]);
        o.clear();
        // Same index again: delta 0 needs the long form.
        st.encode(&mut o, 0);
        assert_eq!(o, [0xFE, 0x00, 0x00]);
        o.clear();
        st.encode(&mut o, 1);
        assert_eq!(o, [0x01]);
        o.clear();
        st.encode(&mut o, 300);
        assert_eq!(o, [0xFE, 0x01, 0x2B]);
        o.clear();
        st.encode(&mut o, 100_000);
        assert_eq!(o, [0xFE, 0x80, 0xA0, 0x86, 0x01]);
        o.clear();
        st.encode(&mut o, NDX_DONE);
        assert_eq!(o, [0x00]);
        o.clear();
        st.encode(&mut o, NDX_DEL_STATS);
        assert_eq!(o, [0xFF, 0x02]);

        let seq = [
            0,
            1,
            2,
            254,
            255,
            300,
            40_000,
            5,
            NDX_DONE,
            NDX_DEL_STATS,
            -101,
            7,
            1 << 30,
        ];
        let mut enc = NdxState::default();
        let mut bytes = Vec::new();
        for &n in &seq {
            enc.encode(&mut bytes, n);
        }
        let mut dec = NdxState::default();
        let mut r = SliceReader::new(&bytes);
        for &n in &seq {
            assert_eq!(r.ndx(&mut dec).unwrap(), n);
        }
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn vstring_and_longint() {
        let mut o = Vec::new();
        put_vstring(&mut o, b"md5").unwrap();
        assert_eq!(o, [3, b'm', b'd', b'5']);
        let long = vec![b'x'; 0x100];
        let mut o = Vec::new();
        put_vstring(&mut o, &long).unwrap();
        assert_eq!(&o[..2], &[0x81, 0x00]);
        let mut o = Vec::new();
        put_longint(&mut o, 5);
        assert_eq!(o, [5, 0, 0, 0]);
        let mut o = Vec::new();
        put_longint(&mut o, 1 << 32);
        assert_eq!(o, [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 1, 0, 0, 0]);
    }
}
