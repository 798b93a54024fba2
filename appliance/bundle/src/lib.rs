//! The config bundle: what a USB key carries to set a box up, or to restore onto a replacement after the
//! old box died. It holds the config file's text and, optionally, the master key file and the box's SSH
//! key (with its `.pub` and the `known_hosts` that says which target host to trust), serialized with
//! postcard and sealed with a passphrase: Argon2id derives a 256-bit key, XChaCha20-Poly1305 encrypts
//! the payload with the whole header as associated data.
//!
//! Layout (`docs/CONFIG.md`, "Config bundle (USB key)"), all integers little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `OFFSITEB` |
//! | 8 | 2 | format version (1) |
//! | 10 | 4 | Argon2id memory, KiB |
//! | 14 | 4 | Argon2id passes |
//! | 18 | 4 | Argon2id lanes |
//! | 22 | 16 | salt (random) |
//! | 38 | 24 | nonce (random) |
//! | 62 | n + 16 | ciphertext of the postcard payload, then the Poly1305 tag |
//!
//! [`open`] checks the size limit before it looks at anything, then the magic, the version and the KDF
//! parameters (bounded, so a crafted header cannot make the box derive with gigabytes), and only then
//! derives and decrypts. Nothing here prints; secrets are zeroized when a [`Bundle`] is dropped.

use std::fmt;

use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

/// The first eight bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"OFFSITEB";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
/// The header's length: magic, version, KDF parameters, salt, nonce.
pub const HEADER_LEN: usize = 8 + 2 + 12 + 16 + 24;
/// The Poly1305 tag after the ciphertext.
pub const TAG_LEN: usize = 16;
/// No bundle is larger (checked before anything is parsed or derived; a config with its keys is a few KiB).
pub const MAX_BUNDLE_LEN: usize = 1 << 20;
/// The shortest passphrase [`seal`] accepts, in characters.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// Argon2id parameters, stored in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane (as the key file's passphrase): RFC 9106's memory-constrained choice,
    /// a few seconds on a 256 MB ARM box.
    fn default() -> Self {
        KdfParams {
            m_kib: 65536,
            t: 3,
            p: 1,
        }
    }
}

/// The largest KDF parameters [`open_with_limits`] accepts: a header is read before it is authenticated,
/// so these bound the work a crafted bundle can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_m_kib: u32,
    pub max_t: u32,
    pub max_p: u32,
}

impl Default for Limits {
    /// 128 MiB (half of a 256 MB box), 10 passes, 4 lanes.
    fn default() -> Self {
        Limits {
            max_m_kib: 131_072,
            max_t: 10,
            max_p: 4,
        }
    }
}

/// The box's SSH identity for the target.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshKey {
    /// The private key file's text (OpenSSH format).
    pub private_key: String,
    /// The `.pub` file's text, when there is one.
    pub public_key: Option<String>,
}

impl Drop for SshKey {
    fn drop(&mut self) {
        self.private_key.zeroize();
    }
}

impl fmt::Debug for SshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshKey")
            .field("private_key", &"<secret>")
            .field("public_key", &self.public_key)
            .finish()
    }
}

/// What a bundle carries.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// When it was exported: seconds since the Unix epoch (UTC).
    pub created: i64,
    /// The exporting box's host name (shown before an import; not trusted for anything).
    pub box_name: String,
    /// The config file's text (TOML; paths of the key and SSH files relative to the config's folder).
    pub config_text: String,
    /// The master key file's text (plain or passphrase-wrapped), when exported with the keys.
    pub key_text: Option<String>,
    /// The SSH key for the target, when exported with the keys and the target is an SSH host.
    pub ssh_key: Option<SshKey>,
    /// The `known_hosts` file that trusts the target's host key (not a secret: it travels without keys too).
    pub known_hosts: Option<String>,
}

impl Drop for Bundle {
    fn drop(&mut self) {
        self.config_text.zeroize();
        self.key_text.zeroize();
    }
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("created", &self.created)
            .field("box_name", &self.box_name)
            .field("config_text", &self.config_text)
            .field("key_text", &self.key_text.as_ref().map(|_| "<secret>"))
            .field("ssh_key", &self.ssh_key)
            .field("known_hosts", &self.known_hosts)
            .finish()
    }
}

/// Why a bundle could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("the bundle is {size} bytes, more than the {max}-byte limit of a config bundle")]
    TooLarge { size: usize, max: usize },
    #[error("the bundle is truncated: {size} bytes, but {what} needs at least {need}")]
    Truncated {
        size: usize,
        need: usize,
        what: &'static str,
    },
    #[error("not an offsite config bundle (it does not start with {:?})", String::from_utf8_lossy(&MAGIC))]
    NotABundle,
    #[error(
        "bundle format version {found} is not supported (this offsite reads version {supported}): \
         it was written by a newer offsite, or the header is damaged"
    )]
    UnsupportedVersion { found: u16, supported: u16 },
    #[error(
        "the bundle header asks for unacceptable key derivation parameters ({0}): damaged or tampered with"
    )]
    BadParameters(String),
    #[error(
        "wrong passphrase, or the bundle was tampered with or damaged (the authenticated encryption \
         cannot tell these apart)"
    )]
    WrongPassphraseOrTampered,
    #[error("the bundle decrypted but its content is not valid: {0}")]
    BadContent(String),
    #[error("the passphrase is too short: use at least {min} characters")]
    WeakPassphrase { min: usize },
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    #[error("key derivation: {0}")]
    Kdf(String),
}

impl KdfParams {
    fn check(&self, limits: &Limits) -> Result<(), BundleError> {
        let bad = |m: String| Err(BundleError::BadParameters(m));
        if !(1..=limits.max_p).contains(&self.p) {
            return bad(format!(
                "argon2id lanes {} not in 1..={}",
                self.p, limits.max_p
            ));
        }
        if !(1..=limits.max_t).contains(&self.t) {
            return bad(format!(
                "argon2id passes {} not in 1..={}",
                self.t, limits.max_t
            ));
        }
        let min_m = 8 * self.p;
        if !(min_m..=limits.max_m_kib).contains(&self.m_kib) {
            return bad(format!(
                "argon2id memory {} KiB not in {min_m}..={} KiB",
                self.m_kib, limits.max_m_kib
            ));
        }
        Ok(())
    }

    fn derive(
        &self,
        passphrase: &[u8],
        salt: &[u8; 16],
    ) -> Result<Zeroizing<[u8; 32]>, BundleError> {
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| BundleError::BadParameters(e.to_string()))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase, salt, out.as_mut())
            .map_err(|e| BundleError::Kdf(e.to_string()))?;
        Ok(out)
    }
}

fn header(params: &KdfParams, salt: &[u8; 16], nonce: &[u8; 24]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[10..14].copy_from_slice(&params.m_kib.to_le_bytes());
    h[14..18].copy_from_slice(&params.t.to_le_bytes());
    h[18..22].copy_from_slice(&params.p.to_le_bytes());
    h[22..38].copy_from_slice(salt);
    h[38..62].copy_from_slice(nonce);
    h
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

/// Seals `bundle` with `passphrase` and the default KDF parameters.
pub fn seal(bundle: &Bundle, passphrase: &[u8]) -> Result<Vec<u8>, BundleError> {
    seal_with(bundle, passphrase, KdfParams::default())
}

/// Seals `bundle` with `passphrase` and the given KDF parameters.
pub fn seal_with(
    bundle: &Bundle,
    passphrase: &[u8],
    params: KdfParams,
) -> Result<Vec<u8>, BundleError> {
    if String::from_utf8_lossy(passphrase).trim().chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(BundleError::WeakPassphrase {
            min: MIN_PASSPHRASE_CHARS,
        });
    }
    check_content(bundle)?;
    let payload = Zeroizing::new(
        postcard::to_allocvec(bundle).map_err(|e| BundleError::BadContent(e.to_string()))?,
    );
    seal_payload(&payload, passphrase, params)
}

/// Seals any payload bytes (no check of the passphrase's length or of the content): for tests and the
/// fuzz target, which need authentic bundles with content [`open`] must reject.
#[doc(hidden)]
pub fn seal_payload(
    payload: &[u8],
    passphrase: &[u8],
    params: KdfParams,
) -> Result<Vec<u8>, BundleError> {
    let size = HEADER_LEN + payload.len() + TAG_LEN;
    if size > MAX_BUNDLE_LEN {
        return Err(BundleError::TooLarge {
            size,
            max: MAX_BUNDLE_LEN,
        });
    }
    params.check(&Limits {
        max_m_kib: u32::MAX,
        max_t: u32::MAX,
        max_p: u32::MAX,
    })?;
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut salt).map_err(|e| BundleError::Random(e.to_string()))?;
    getrandom::fill(&mut nonce).map_err(|e| BundleError::Random(e.to_string()))?;
    let head = header(&params, &salt, &nonce);
    let key = params.derive(passphrase, &salt)?;
    let aead = XChaCha20Poly1305::new((&*key).into());
    let sealed = aead
        .encrypt(
            (&nonce).into(),
            Payload {
                msg: payload,
                aad: &head,
            },
        )
        .map_err(|_| BundleError::BadContent("encryption failed".into()))?;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&head);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens a bundle with the default [`Limits`].
pub fn open(bytes: &[u8], passphrase: &[u8]) -> Result<Bundle, BundleError> {
    open_with_limits(bytes, passphrase, &Limits::default())
}

/// Checks what can be checked without the passphrase (size, magic, version, KDF parameters) with the
/// default [`Limits`]: a file that fails here is not worth asking a passphrase for.
pub fn check_header(bytes: &[u8]) -> Result<KdfParams, BundleError> {
    check_header_with_limits(bytes, &Limits::default())
}

fn check_header_with_limits(bytes: &[u8], limits: &Limits) -> Result<KdfParams, BundleError> {
    let size = bytes.len();
    if size > MAX_BUNDLE_LEN {
        return Err(BundleError::TooLarge {
            size,
            max: MAX_BUNDLE_LEN,
        });
    }
    let seen = size.min(MAGIC.len());
    if bytes[..seen] != MAGIC[..seen] {
        return Err(BundleError::NotABundle);
    }
    let truncated = |need: usize, what: &'static str| BundleError::Truncated { size, need, what };
    if size < 10 {
        return Err(truncated(10, "the magic and version"));
    }
    let found = u16::from_le_bytes([bytes[8], bytes[9]]);
    if found != VERSION {
        return Err(BundleError::UnsupportedVersion {
            found,
            supported: VERSION,
        });
    }
    if size < HEADER_LEN {
        return Err(truncated(HEADER_LEN, "the header"));
    }
    if size < HEADER_LEN + TAG_LEN {
        return Err(truncated(HEADER_LEN + TAG_LEN, "the header and the tag"));
    }
    let params = KdfParams {
        m_kib: le_u32(bytes, 10),
        t: le_u32(bytes, 14),
        p: le_u32(bytes, 18),
    };
    params.check(limits)?;
    Ok(params)
}

/// Opens a bundle: size, magic, version and KDF parameters are checked before the key is derived; the
/// header is authenticated with the payload; the payload must decode completely.
pub fn open_with_limits(
    bytes: &[u8],
    passphrase: &[u8],
    limits: &Limits,
) -> Result<Bundle, BundleError> {
    let params = check_header_with_limits(bytes, limits)?;
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&bytes[22..38]);
    let mut nonce = [0u8; 24];
    nonce.copy_from_slice(&bytes[38..62]);
    let key = params.derive(passphrase, &salt)?;
    let aead = XChaCha20Poly1305::new((&*key).into());
    let plain = Zeroizing::new(
        aead.decrypt(
            (&nonce).into(),
            Payload {
                msg: &bytes[HEADER_LEN..],
                aad: &bytes[..HEADER_LEN],
            },
        )
        .map_err(|_| BundleError::WrongPassphraseOrTampered)?,
    );
    let (bundle, rest): (Bundle, &[u8]) =
        postcard::take_from_bytes(&plain).map_err(|e| BundleError::BadContent(e.to_string()))?;
    if !rest.is_empty() {
        return Err(BundleError::BadContent(format!(
            "{} bytes after the payload",
            rest.len()
        )));
    }
    check_content(&bundle)?;
    Ok(bundle)
}

fn check_content(b: &Bundle) -> Result<(), BundleError> {
    let bad = |m: &str| Err(BundleError::BadContent(m.into()));
    if b.config_text.trim().is_empty() {
        return bad("config_text: the config is empty");
    }
    if b.key_text.as_ref().is_some_and(|k| k.trim().is_empty()) {
        return bad("key_text: the key file is empty");
    }
    if b.ssh_key
        .as_ref()
        .is_some_and(|k| k.private_key.trim().is_empty())
    {
        return bad("ssh_key.private_key: the SSH key is empty");
    }
    if b.box_name.chars().any(char::is_control) || b.box_name.len() > 255 {
        return bad("box_name: not a host name");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
