//! Checksums (rsync `checksum.c`, `generator.c:sum_sizes_sqroot`).
//!
//! * the rolling "checksum1" over **signed** bytes,
//! * the strong block checksum ("checksum2") and the whole-file digest for the
//!   negotiated algorithm: xxh128, md5 (protocol >= 30) or md4 (27..=29),
//! * block length and strong-sum length choice as the generator does it.

use md4::Md4;
use md5::{Digest, Md5};
use xxhash_rust::xxh3::{Xxh3, xxh3_128_with_seed};

/// Largest block length at protocol >= 30 (`MAX_BLOCK_SIZE`).
pub const MAX_BLOCK_SIZE: u32 = 1 << 17;
/// Largest block length before protocol 30 (`OLD_MAX_BLOCK_SIZE`).
pub const OLD_MAX_BLOCK_SIZE: u32 = 8192;
/// Default block length (`BLOCK_SIZE`).
pub const BLOCK_SIZE: u32 = 700;
/// Longest strong sum (`SUM_LENGTH`).
pub const SUM_LENGTH: usize = 16;

/// Checksum algorithm used for block and file sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumKind {
    /// XXH3 128-bit (negotiated name `xxh128`).
    Xxh128,
    /// MD5 (negotiated `md5`, or implied at protocol >= 30).
    Md5,
    /// MD4 as used by protocol 27..=29.
    Md4,
}

impl ChecksumKind {
    /// The name used in negotiation.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumKind::Xxh128 => "xxh128",
            ChecksumKind::Md5 => "md5",
            ChecksumKind::Md4 => "md4",
        }
    }

    /// Parses a negotiated name we support.
    pub fn from_name(n: &str) -> Option<Self> {
        match n {
            "xxh128" => Some(ChecksumKind::Xxh128),
            "md5" => Some(ChecksumKind::Md5),
            "md4" => Some(ChecksumKind::Md4),
            _ => None,
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        16
    }
}

/// Parameters of a session's strong sums.
#[derive(Debug, Clone, Copy)]
pub struct SumParams {
    /// Algorithm.
    pub kind: ChecksumKind,
    /// The server's checksum seed.
    pub seed: i32,
    /// Whether the seed goes before the data for md5 (`CF_CHKSUM_SEED_FIX`).
    pub proper_seed_order: bool,
}

/// `get_checksum1`: the weak rolling checksum of a block (signed bytes).
pub fn checksum1(data: &[u8]) -> u32 {
    let mut s1: u32 = 0;
    let mut s2: u32 = 0;
    for &b in data {
        s1 = s1.wrapping_add(b as i8 as i32 as u32);
        s2 = s2.wrapping_add(s1);
    }
    (s1 & 0xFFFF) | (s2 << 16)
}

/// A rolling checksum over a window that can grow and shrink at its ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rolling {
    s1: u32,
    s2: u32,
    len: u32,
}

impl Rolling {
    /// Checksum of `data` as a fresh window.
    pub fn new(data: &[u8]) -> Self {
        let mut r = Rolling::default();
        for &b in data {
            r.push(b);
        }
        r
    }

    /// Adds a byte at the end of the window.
    #[inline]
    pub fn push(&mut self, b: u8) {
        self.s1 = self.s1.wrapping_add(b as i8 as i32 as u32);
        self.s2 = self.s2.wrapping_add(self.s1);
        self.len += 1;
    }

    /// Removes the first byte `b` of the window.
    #[inline]
    pub fn pop(&mut self, b: u8) {
        let x = b as i8 as i32 as u32;
        self.s1 = self.s1.wrapping_sub(x);
        self.s2 = self.s2.wrapping_sub(self.len.wrapping_mul(x));
        self.len -= 1;
    }

    /// Slides the window by one byte: `out` leaves, `inp` enters.
    #[inline]
    pub fn roll(&mut self, out: u8, inp: u8) {
        self.pop(out);
        self.push(inp);
    }

    /// The combined 32-bit value.
    #[inline]
    pub fn value(&self) -> u32 {
        (self.s1 & 0xFFFF) | (self.s2 << 16)
    }
}

/// `get_checksum2`: the strong checksum of one block (full digest).
pub fn block_sum(p: &SumParams, data: &[u8]) -> [u8; 16] {
    let seed = p.seed.to_le_bytes();
    match p.kind {
        ChecksumKind::Xxh128 => {
            let h = xxh3_128_with_seed(data, p.seed as i64 as u64);
            let mut out = [0u8; 16];
            out[..8].copy_from_slice(&(h as u64).to_le_bytes());
            out[8..].copy_from_slice(&((h >> 64) as u64).to_le_bytes());
            out
        }
        ChecksumKind::Md5 => {
            let mut m = Md5::new();
            if p.proper_seed_order {
                if p.seed != 0 {
                    m.update(seed);
                }
                m.update(data);
            } else {
                m.update(data);
                if p.seed != 0 {
                    m.update(seed);
                }
            }
            m.finalize().into()
        }
        ChecksumKind::Md4 => {
            let mut m = Md4::new();
            m.update(data);
            if p.seed != 0 {
                m.update(seed);
            }
            m.finalize().into()
        }
    }
}

/// The whole-file digest sent after a file's delta (`sum_init`/`sum_end`).
pub enum FileHasher {
    /// xxh128 (unseeded).
    Xxh128(Box<Xxh3>),
    /// md5 (unseeded).
    Md5(Md5),
    /// md4, seeded with the little-endian seed first.
    Md4(Md4),
}

impl FileHasher {
    /// Starts a file digest.
    pub fn new(p: &SumParams) -> Self {
        match p.kind {
            ChecksumKind::Xxh128 => FileHasher::Xxh128(Box::new(Xxh3::new())),
            ChecksumKind::Md5 => FileHasher::Md5(Md5::new()),
            ChecksumKind::Md4 => {
                let mut m = Md4::new();
                m.update(p.seed.to_le_bytes());
                FileHasher::Md4(m)
            }
        }
    }

    /// Feeds data.
    pub fn update(&mut self, d: &[u8]) {
        match self {
            FileHasher::Xxh128(h) => h.update(d),
            FileHasher::Md5(h) => h.update(d),
            FileHasher::Md4(h) => h.update(d),
        }
    }

    /// The digest.
    pub fn finish(self) -> [u8; 16] {
        match self {
            FileHasher::Xxh128(h) => {
                let v = h.digest128();
                let mut out = [0u8; 16];
                out[..8].copy_from_slice(&(v as u64).to_le_bytes());
                out[8..].copy_from_slice(&((v >> 64) as u64).to_le_bytes());
                out
            }
            FileHasher::Md5(h) => h.finalize().into(),
            FileHasher::Md4(h) => h.finalize().into(),
        }
    }
}

/// Block length and first-pass strong-sum length the generator picks for a
/// basis of `len` bytes (`sum_sizes_sqroot`, protocol >= 27, no `--block-size`).
pub fn sum_sizes_sqroot(len: u64, protocol: u32, digest_len: usize) -> (u32, usize) {
    let max_blength: u64 = if protocol < 30 {
        u64::from(OLD_MAX_BLOCK_SIZE)
    } else {
        MAX_BLOCK_SIZE as u64
    };
    let blength: u64 = if len <= u64::from(BLOCK_SIZE) * u64::from(BLOCK_SIZE) {
        u64::from(BLOCK_SIZE)
    } else {
        let mut c: u64 = 1;
        let mut l = len;
        loop {
            l >>= 2;
            if l == 0 {
                break;
            }
            c <<= 1;
        }
        if c >= max_blength {
            max_blength
        } else {
            let mut b: u64 = 0;
            loop {
                b |= c;
                if len < b * b {
                    b &= !c;
                }
                c >>= 1;
                if c < 8 {
                    break;
                }
            }
            b.max(u64::from(BLOCK_SIZE))
        }
    };
    // s2length: BLOCKSUM_BIAS + 2*floor(log2 len) - floor(log2 blength) ...
    let mut b: i64 = 10;
    let mut l = len;
    loop {
        l >>= 1;
        if l == 0 {
            break;
        }
        b += 2;
    }
    let mut c = blength;
    loop {
        c >>= 1;
        if c == 0 || b == 0 {
            break;
        }
        b -= 1;
    }
    let s2 = (b + 1 - 32 + 7) / 8;
    let s2 = s2.max(2).min(SUM_LENGTH.min(digest_len) as i64);
    (blength as u32, s2 as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_matches_fresh() {
        let data: Vec<u8> = (0..5000u32)
            .map(|i| (i * 7919 % 251) as u8 ^ 0x80)
            .collect();
        let k = 700;
        let mut r = Rolling::new(&data[..k]);
        assert_eq!(r.value(), checksum1(&data[..k]));
        for i in 0..data.len() - k {
            r.roll(data[i], data[i + k]);
            assert_eq!(r.value(), checksum1(&data[i + 1..i + 1 + k]), "at {i}");
        }
        // shrinking tail
        let n = data.len();
        let mut r = Rolling::new(&data[n - 10..]);
        for i in n - 10..n - 1 {
            r.pop(data[i]);
            assert_eq!(r.value(), checksum1(&data[i + 1..]));
        }
    }

    #[test]
    fn signed_bytes() {
        // 0xFF counts as -1.
        assert_eq!(checksum1(&[0xFF]), 0xFFFF | (0xFFFF_FFFFu32 << 16));
        assert_eq!(checksum1(&[1, 2]), 3 | (4 << 16));
    }

    #[test]
    fn block_sizes() {
        assert_eq!(sum_sizes_sqroot(0, 31, 16).0, 700);
        assert_eq!(sum_sizes_sqroot(490_000, 31, 16).0, 700);
        assert_eq!(sum_sizes_sqroot(1 << 20, 31, 16).0, 1024);
        assert_eq!(sum_sizes_sqroot(1 << 30, 31, 16).0, 32768);
        assert_eq!(sum_sizes_sqroot(16 << 30, 31, 16).0, 131072);
        assert_eq!(sum_sizes_sqroot(1 << 40, 31, 16).0, 131072);
        assert_eq!(sum_sizes_sqroot(3_000_000, 31, 16).0, 1728);
        assert_eq!(sum_sizes_sqroot(1 << 30, 29, 16).0, 8192);
        assert_eq!(sum_sizes_sqroot(1000, 31, 16).1, 2);
        let (_, s2) = sum_sizes_sqroot(1 << 30, 31, 16);
        assert!((2..=16).contains(&s2));
        assert_eq!(
            sum_sizes_sqroot(1 << 40, 31, 8).1,
            8.min(sum_sizes_sqroot(1 << 40, 31, 16).1)
        );
    }

    #[test]
    fn digests() {
        let p = SumParams {
            kind: ChecksumKind::Md5,
            seed: 0,
            proper_seed_order: true,
        };
        // MD5("abc")
        assert_eq!(block_sum(&p, b"abc")[..4], [0x90, 0x01, 0x50, 0x98]);
        let mut h = FileHasher::new(&p);
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), block_sum(&p, b"abc"));
        let p4 = SumParams {
            kind: ChecksumKind::Md4,
            seed: 0,
            proper_seed_order: true,
        };
        // MD4("abc") = a448017a...
        assert_eq!(block_sum(&p4, b"abc")[..4], [0xa4, 0x48, 0x01, 0x7a]);
        let px = SumParams {
            kind: ChecksumKind::Xxh128,
            seed: 0,
            proper_seed_order: true,
        };
        let mut h = FileHasher::new(&px);
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.finish(), block_sum(&px, b"hello world"));
    }
}
