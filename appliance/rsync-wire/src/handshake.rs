//! Protocol setup (rsync `compat.c: setup_protocol`, `negotiate_the_strings`).
//!
//! Client side: send our version (int32), read the server's, take the lower;
//! from protocol 30 read the compat flags (varint) and, when the server set
//! `CF_VARINT_FLIST_FLAGS`, exchange checksum lists (vstrings); finally read
//! the checksum seed. Nothing here is multiplexed yet.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::checksum::ChecksumKind;
use crate::codec;
use crate::error::{Error, Result};

/// Highest protocol we speak.
pub const PROTOCOL_VERSION: u32 = 31;
/// Lowest protocol we accept.
pub const MIN_PROTOCOL_VERSION: u32 = 27;

/// `CF_INC_RECURSE`.
pub const CF_INC_RECURSE: i32 = 1 << 0;
/// `CF_CHKSUM_SEED_FIX`.
pub const CF_CHKSUM_SEED_FIX: i32 = 1 << 5;
/// `CF_VARINT_FLIST_FLAGS`.
pub const CF_VARINT_FLIST_FLAGS: i32 = 1 << 7;

/// Our capability string, passed after `-e` (no `i`: no incremental recursion).
pub const CLIENT_INFO: &str = ".LsfxCIvu";

/// Outcome of the handshake.
#[derive(Debug, Clone)]
pub struct Negotiated {
    /// The protocol both sides use.
    pub protocol: u32,
    /// What the server announced.
    pub remote_protocol: u32,
    /// Compat flags (0 before protocol 30).
    pub compat_flags: i32,
    /// Block/file checksum.
    pub checksum: ChecksumKind,
    /// Checksum seed chosen by the server.
    pub seed: i32,
}

impl Negotiated {
    /// File-list flags are varints.
    pub fn varint_flist(&self) -> bool {
        self.compat_flags & CF_VARINT_FLIST_FLAGS != 0
    }

    /// md5 block sums put the seed first.
    pub fn proper_seed_order(&self) -> bool {
        self.compat_flags & CF_CHKSUM_SEED_FIX != 0
    }
}

async fn read_i32<R: AsyncRead + Unpin>(r: &mut R, what: &'static str) -> Result<i32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).await.map_err(Error::io(what))?;
    Ok(i32::from_le_bytes(b))
}

async fn read_u8<R: AsyncRead + Unpin>(r: &mut R, what: &'static str) -> Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b).await.map_err(Error::io(what))?;
    Ok(b[0])
}

/// Performs the client side of the handshake.
pub async fn client_handshake<R, W>(
    r: &mut R,
    w: &mut W,
    our_protocol: u32,
    choices: &[ChecksumKind],
) -> Result<Negotiated>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let ctx = "exchanging protocol versions";
    w.write_all(&(our_protocol as i32).to_le_bytes())
        .await
        .map_err(Error::io(ctx))?;
    w.flush().await.map_err(Error::io(ctx))?;
    let raw = read_i32(r, ctx).await? as u32;
    if !(20..=40).contains(&raw) {
        return Err(Error::VersionMismatch { remote: raw });
    }
    let protocol = raw.min(our_protocol);
    if protocol < MIN_PROTOCOL_VERSION {
        return Err(Error::UnsupportedProtocol {
            remote: protocol,
            min: MIN_PROTOCOL_VERSION,
        });
    }
    let mut compat_flags = 0;
    let checksum;
    if protocol >= 30 {
        let ctx = "reading compat flags";
        let first = read_u8(r, ctx).await?;
        let n = codec::extra_bytes(first);
        if n > 4 {
            return Err(Error::protocol(format!(
                "bad compat flags byte {first:#04x}"
            )));
        }
        let mut extra = [0u8; 4];
        r.read_exact(&mut extra[..n])
            .await
            .map_err(Error::io(ctx))?;
        compat_flags = codec::finish_varint(first, &extra[..n])?;
        if compat_flags & CF_INC_RECURSE != 0 {
            return Err(Error::protocol(
                "server enabled incremental recursion, which we did not offer",
            ));
        }
        if compat_flags & CF_VARINT_FLIST_FLAGS != 0 {
            let ctx = "negotiating checksums";
            let ours: Vec<&str> = choices.iter().map(|c| c.name()).collect();
            let mut msg = Vec::new();
            codec::put_vstring(&mut msg, ours.join(" ").as_bytes())?;
            w.write_all(&msg).await.map_err(Error::io(ctx))?;
            w.flush().await.map_err(Error::io(ctx))?;
            let mut len = usize::from(read_u8(r, ctx).await?);
            if len & 0x80 != 0 {
                len = ((len & 0x7F) << 8) | usize::from(read_u8(r, ctx).await?);
            }
            if len > 1024 {
                return Err(Error::range("checksum list length", len as i64, "<= 1024"));
            }
            let mut list = vec![0u8; len];
            r.read_exact(&mut list).await.map_err(Error::io(ctx))?;
            let list = String::from_utf8_lossy(&list).into_owned();
            let theirs: Vec<&str> = list.split_ascii_whitespace().collect();
            checksum = choices
                .iter()
                .copied()
                .find(|c| theirs.contains(&c.name()))
                .ok_or(Error::NoCommonChecksum {
                    server: list.clone(),
                })?;
        } else {
            checksum = ChecksumKind::Md5;
        }
    } else {
        checksum = ChecksumKind::Md4;
    }
    let seed = read_i32(r, "reading the checksum seed").await?;
    Ok(Negotiated {
        protocol,
        remote_protocol: raw,
        compat_flags,
        checksum,
        seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn noisy_shell_is_a_version_mismatch() {
        let mut input: &[u8] = b"Welcome to the NAS!\n";
        let mut out = Vec::new();
        let e = client_handshake(&mut input, &mut out, 31, &[ChecksumKind::Md5])
            .await
            .unwrap_err();
        assert!(matches!(e, Error::VersionMismatch { .. }), "{e}");
        assert!(e.to_string().contains("shell clean"));
        assert_eq!(out, [31, 0, 0, 0]);
    }

    #[tokio::test]
    async fn negotiates_first_common_checksum() {
        // Server: version 32, compat flags 0x1FE, list, seed 1.
        let mut input = vec![32, 0, 0, 0, 0x81, 0xFE];
        codec::put_vstring(&mut input, b"xxh3 md5 md4").unwrap();
        input.extend_from_slice(&1i32.to_le_bytes());
        let mut r: &[u8] = &input;
        let mut out = Vec::new();
        let n = client_handshake(
            &mut r,
            &mut out,
            31,
            &[ChecksumKind::Xxh128, ChecksumKind::Md5],
        )
        .await
        .unwrap();
        assert_eq!(n.protocol, 31);
        assert_eq!(n.remote_protocol, 32);
        assert_eq!(n.checksum, ChecksumKind::Md5);
        assert_eq!(n.seed, 1);
        assert!(n.varint_flist() && n.proper_seed_order());
        let mut expect = vec![31, 0, 0, 0];
        codec::put_vstring(&mut expect, b"xxh128 md5").unwrap();
        assert_eq!(out, expect);
    }

    #[tokio::test]
    async fn old_protocols() {
        let mut input = vec![29, 0, 0, 0];
        input.extend_from_slice(&7i32.to_le_bytes());
        let mut r: &[u8] = &input;
        let n = client_handshake(&mut r, &mut Vec::new(), 31, &[ChecksumKind::Md5])
            .await
            .unwrap();
        assert_eq!((n.protocol, n.checksum, n.seed), (29, ChecksumKind::Md4, 7));
        let mut r: &[u8] = &[26, 0, 0, 0];
        let e = client_handshake(&mut r, &mut Vec::new(), 31, &[ChecksumKind::Md5])
            .await
            .unwrap_err();
        assert!(matches!(e, Error::UnsupportedProtocol { .. }), "{e}");
    }
}
