//! The master key, its key file (optionally wrapped with a passphrase), and the per-purpose subkeys.
//!
//! Layout and derivations are specified in `docs/FORMAT.md`, section 1.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Result, SealError};

const CTX_KEY_ID: &str = "offsite 2026-11-26 v1 key id";
const CTX_FILE_ID: &str = "offsite 2026-11-26 v1 file id";
const CTX_CHUNK_MAC: &str = "offsite 2026-11-26 v1 chunk mac";
const CTX_ENC_AES: &str = "offsite 2026-11-26 v1 chunk enc aes256ctr";
const CTX_ENC_XCHACHA: &str = "offsite 2026-11-26 v1 chunk enc xchacha20";
const CTX_TRAILER_MAC: &str = "offsite 2026-11-26 v1 trailer mac";
const CTX_GEAR: &str = "offsite 2026-11-26 v1 chunker gear";
const CTX_NAMES: &str = "offsite 2026-11-26 v1 names aes-siv";
const CTX_LONG_NAMES: &str = "offsite 2026-11-26 v1 long names";

const KEY_FILE_MAGIC: &str = "offsite-key 1";

/// The stream cipher that encrypts chunk bodies. Chosen once, when the key is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    /// AES-256-CTR: fastest where the CPU has AES instructions.
    Aes256Ctr,
    /// XChaCha20: fast in portable code, for CPUs without AES instructions.
    XChaCha20,
}

impl Suite {
    /// The id written in sealed headers.
    pub fn id(self) -> u8 {
        match self {
            Suite::Aes256Ctr => 1,
            Suite::XChaCha20 => 2,
        }
    }

    pub fn from_id(id: u8) -> Option<Suite> {
        match id {
            1 => Some(Suite::Aes256Ctr),
            2 => Some(Suite::XChaCha20),
            _ => None,
        }
    }

    /// The name used in key files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Aes256Ctr => "aes256ctr",
            Suite::XChaCha20 => "xchacha20",
        }
    }

    /// Parses `aes256ctr`/`aes` and `xchacha20`/`chacha`; `auto` picks by CPU (see [`Suite::for_this_cpu`]).
    pub fn parse(s: &str) -> Option<Suite> {
        match s {
            "aes256ctr" | "aes" => Some(Suite::Aes256Ctr),
            "xchacha20" | "chacha" => Some(Suite::XChaCha20),
            "auto" => Some(Suite::for_this_cpu()),
            _ => None,
        }
    }

    /// AES-256-CTR when this CPU has AES instructions, XChaCha20 otherwise.
    pub fn for_this_cpu() -> Suite {
        if cpu_has_aes() {
            Suite::Aes256Ctr
        } else {
            Suite::XChaCha20
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether the CPU running us has hardware AES.
pub fn cpu_has_aes() -> bool {
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    {
        std::arch::is_x86_feature_detected!("aes")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "x86", target_arch = "aarch64")))]
    {
        // armv7 cores in NAS boxes (Cortex-A7/A9/A15) have no AES instructions, and std cannot
        // detect the rare AArch32 crypto extension at run time.
        false
    }
}

/// Argon2id parameters for wrapping a master key with a passphrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: RFC 9106's memory-constrained recommendation, fits a 256 MiB box.
    fn default() -> Self {
        KdfParams {
            m_kib: 65536,
            t: 3,
            p: 1,
        }
    }
}

impl KdfParams {
    fn check(&self) -> std::result::Result<(), &'static str> {
        if !(8..=1_048_576).contains(&self.m_kib) {
            return Err("argon2id m must be 8..=1048576 KiB");
        }
        if !(1..=64).contains(&self.t) {
            return Err("argon2id t must be 1..=64");
        }
        if !(1..=16).contains(&self.p) {
            return Err("argon2id p must be 1..=16");
        }
        if self.m_kib < 8 * self.p {
            return Err("argon2id m must be at least 8 * p");
        }
        Ok(())
    }

    fn derive(&self, passphrase: &[u8], salt: &[u8; 16]) -> Result<Zeroizing<[u8; 32]>> {
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| SealError::Passphrase(format!("argon2 parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase, salt, out.as_mut())
            .map_err(|e| SealError::Passphrase(format!("argon2: {e}")))?;
        Ok(out)
    }
}

/// The 32-byte master key and the suite chosen for it.
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; 32]>,
    suite: Suite,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("key_id", &self.key_id_hex())
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A new random key from the operating system's CSPRNG.
    pub fn generate(suite: Suite) -> Result<MasterKey> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).map_err(|e| SealError::Random(e.to_string()))?;
        Ok(MasterKey { bytes, suite })
    }

    /// A key from known bytes (tests, vectors, recovery text).
    pub fn from_bytes(bytes: [u8; 32], suite: Suite) -> MasterKey {
        MasterKey {
            bytes: Zeroizing::new(bytes),
            suite,
        }
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The raw key, for printing a recovery text. Handle with care.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    pub fn key_id(&self) -> [u8; 8] {
        let mut id = [0u8; 8];
        derive(CTX_KEY_ID, &self.bytes[..], &mut id);
        id
    }

    pub fn key_id_hex(&self) -> String {
        hex(&self.key_id())
    }

    /// Derive the working keys (cheap; do it once per process and share the result).
    pub fn derive_keys(&self) -> Keys {
        Keys(Arc::new(KeySet::derive(self)))
    }

    /// Reads a key file; `passphrase` is required for a wrapped key and ignored for a plain one.
    pub fn load(path: &Path, passphrase: Option<&[u8]>) -> Result<MasterKey> {
        let text = std::fs::read(path)
            .map_err(|e| SealError::io(format!("reading key file {}", path.display()), e))?;
        let text = Zeroizing::new(text);
        let bad = |why: &str| SealError::KeyFile {
            path: path.to_owned(),
            why: why.to_owned(),
        };
        let text = std::str::from_utf8(&text).map_err(|_| bad("not a text file"))?;
        KeyFileText::parse(text)
            .map_err(bad)?
            .open(path, passphrase)
    }

    /// A key from the text of a key file as a person pastes it back (the printed recovery text): blank
    /// space around the lines and CRLF line ends are tolerated; the key id line is checked, so a
    /// mistyped digit is caught.
    pub fn from_key_text(text: &str, passphrase: Option<&[u8]>) -> Result<MasterKey> {
        let mut clean = Zeroizing::new(String::with_capacity(text.len()));
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            clean.push_str(line);
            clean.push('\n');
        }
        let origin = Path::new("the pasted key text");
        let bad = |why: &str| SealError::KeyFile {
            path: origin.to_owned(),
            why: why.to_owned(),
        };
        KeyFileText::parse(&clean)
            .map_err(bad)?
            .open(origin, passphrase)
    }

    /// Writes a new key file (mode 0600). Refuses to overwrite an existing file.
    ///
    /// With a passphrase the key is wrapped with Argon2id + XChaCha20-Poly1305.
    pub fn save_new(&self, path: &Path, passphrase: Option<(&[u8], KdfParams)>) -> Result<()> {
        let text = match passphrase {
            None => self.key_file_plain(),
            Some((pass, params)) => {
                let mut salt = [0u8; 16];
                let mut nonce = [0u8; 24];
                getrandom::fill(&mut salt).map_err(|e| SealError::Random(e.to_string()))?;
                getrandom::fill(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
                Zeroizing::new(self.key_file_wrapped(pass, params, salt, nonce)?)
            }
        };
        let ctx = || format!("creating key file {}", path.display());
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| SealError::io(ctx(), e))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| SealError::io(ctx(), e))?;
        Ok(())
    }

    /// The plain key file text.
    pub fn key_file_plain(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{KEY_FILE_MAGIC}\nsuite {}\nkey-id {}\nmaster {}\n",
            self.suite,
            self.key_id_hex(),
            hex(self.bytes.as_ref())
        ))
    }

    /// The wrapped key file text for a given salt and nonce (deterministic: used by tests and vectors).
    pub fn key_file_wrapped(
        &self,
        passphrase: &[u8],
        params: KdfParams,
        salt: [u8; 16],
        nonce: [u8; 24],
    ) -> Result<String> {
        if passphrase.is_empty() {
            return Err(SealError::Passphrase("empty passphrase".into()));
        }
        params
            .check()
            .map_err(|why| SealError::Passphrase(why.into()))?;
        let head = format!(
            "{KEY_FILE_MAGIC}\nsuite {}\nkey-id {}\nkdf argon2id m={} t={} p={} salt={}\n",
            self.suite,
            self.key_id_hex(),
            params.m_kib,
            params.t,
            params.p,
            hex(&salt)
        );
        let kek = params.derive(passphrase, &salt)?;
        let aead = XChaCha20Poly1305::new((&*kek).into());
        let sealed = aead
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: self.bytes.as_ref(),
                    aad: head.as_bytes(),
                },
            )
            .map_err(|_| SealError::Passphrase("wrapping failed".into()))?;
        let mut wrapped = nonce.to_vec();
        wrapped.extend_from_slice(&sealed);
        Ok(format!("{head}wrapped {}\n", hex(&wrapped)))
    }
}

/// A parsed key file, before unwrapping.
struct KeyFileText<'a> {
    suite: Suite,
    key_id: [u8; 8],
    body: KeyBody<'a>,
}

enum KeyBody<'a> {
    Plain([u8; 32]),
    Wrapped {
        head: &'a str,
        params: KdfParams,
        salt: [u8; 16],
        wrapped: Vec<u8>,
    },
}

impl Drop for KeyBody<'_> {
    fn drop(&mut self) {
        if let KeyBody::Plain(k) = self {
            k.zeroize();
        }
    }
}

impl<'a> KeyFileText<'a> {
    fn parse(text: &'a str) -> std::result::Result<KeyFileText<'a>, &'static str> {
        let mut lines = text.split_inclusive('\n');
        let mut next = |name: &'static str| -> std::result::Result<&'a str, &'static str> {
            let line = lines.next().ok_or("file ends early")?;
            let line = line.strip_suffix('\n').ok_or("last line has no newline")?;
            let (key, value) = line.split_once(' ').ok_or("malformed line")?;
            if key != name {
                return Err(
                    "unexpected line (lines must be: offsite-key, suite, key-id, master or kdf+wrapped)",
                );
            }
            Ok(value)
        };
        if next("offsite-key")? != "1" {
            return Err("unsupported key file version (expected `offsite-key 1`)");
        }
        let suite = match next("suite")? {
            "aes256ctr" => Suite::Aes256Ctr,
            "xchacha20" => Suite::XChaCha20,
            _ => return Err("unknown suite (expected aes256ctr or xchacha20)"),
        };
        let key_id: [u8; 8] = unhex_array(next("key-id")?).ok_or("key-id must be 16 hex digits")?;
        // Peek at the fourth line to pick the form.
        let rest_start = text
            .match_indices('\n')
            .nth(2)
            .map(|(i, _)| i + 1)
            .ok_or("file ends early")?;
        let rest = &text[rest_start..];
        let body = if rest.starts_with("master ") {
            let master: [u8; 32] =
                unhex_array(next("master")?).ok_or("master must be 64 hex digits")?;
            KeyBody::Plain(master)
        } else {
            let kdf = next("kdf")?;
            let head_end = text
                .match_indices('\n')
                .nth(3)
                .map(|(i, _)| i + 1)
                .ok_or("file ends early")?;
            let (params, salt) = parse_kdf(kdf)?;
            let wrapped = unhex(next("wrapped")?).ok_or("wrapped must be hex")?;
            if wrapped.len() != 24 + 32 + 16 {
                return Err("wrapped must be 72 bytes (144 hex digits)");
            }
            KeyBody::Wrapped {
                head: &text[..head_end],
                params,
                salt,
                wrapped,
            }
        };
        if lines.next().is_some() {
            return Err("unexpected lines after the key");
        }
        Ok(KeyFileText {
            suite,
            key_id,
            body,
        })
    }

    fn open(self, path: &Path, passphrase: Option<&[u8]>) -> Result<MasterKey> {
        let master = match &self.body {
            KeyBody::Plain(k) => MasterKey::from_bytes(*k, self.suite),
            KeyBody::Wrapped {
                head,
                params,
                salt,
                wrapped,
            } => {
                let pass = passphrase.ok_or_else(|| SealError::KeyFile {
                    path: path.to_owned(),
                    why: "the key is protected by a passphrase: give --passphrase-file".into(),
                })?;
                let kek = params.derive(pass, salt)?;
                let aead = XChaCha20Poly1305::new((&*kek).into());
                let (nonce, ct) = wrapped.split_at(24);
                let nonce: &[u8; 24] = nonce.try_into().map_err(|_| SealError::KeyFile {
                    path: path.to_owned(),
                    why: "bad nonce".into(),
                })?;
                let plain = Zeroizing::new(
                    aead.decrypt(
                        nonce.into(),
                        Payload {
                            msg: ct,
                            aad: head.as_bytes(),
                        },
                    )
                    .map_err(|_| SealError::WrongPassphrase {
                        path: path.to_owned(),
                    })?,
                );
                let bytes: [u8; 32] =
                    plain
                        .as_slice()
                        .try_into()
                        .map_err(|_| SealError::KeyFile {
                            path: path.to_owned(),
                            why: "wrapped key has the wrong length".into(),
                        })?;
                MasterKey::from_bytes(bytes, self.suite)
            }
        };
        if master.key_id() != self.key_id {
            return Err(SealError::KeyFile {
                path: path.to_owned(),
                why: format!(
                    "key-id {} does not match the key (computed {}): the file is corrupted",
                    hex(&self.key_id),
                    master.key_id_hex()
                ),
            });
        }
        Ok(master)
    }
}

fn parse_kdf(value: &str) -> std::result::Result<(KdfParams, [u8; 16]), &'static str> {
    let mut fields = value.split(' ');
    if fields.next() != Some("argon2id") {
        return Err("kdf must be argon2id");
    }
    let mut get = |name: &str| -> std::result::Result<&str, &'static str> {
        let f = fields
            .next()
            .ok_or("kdf line is missing fields (m=, t=, p=, salt=)")?;
        let (k, v) = f.split_once('=').ok_or("kdf fields are name=value")?;
        if k != name {
            return Err("kdf fields must be m=, t=, p=, salt= in that order");
        }
        Ok(v)
    };
    let num = |v: &str| {
        v.parse::<u32>()
            .map_err(|_| "kdf parameter is not a number")
    };
    let params = KdfParams {
        m_kib: num(get("m")?)?,
        t: num(get("t")?)?,
        p: num(get("p")?)?,
    };
    let salt = unhex_array(get("salt")?).ok_or("salt must be 32 hex digits")?;
    params.check()?;
    Ok((params, salt))
}

/// The derived working keys. Cheap to clone (shared).
#[derive(Clone)]
pub struct Keys(pub(crate) Arc<KeySet>);

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("key_id", &hex(&self.0.key_id))
            .field("suite", &self.0.suite)
            .finish_non_exhaustive()
    }
}

impl Keys {
    pub fn key_id(&self) -> [u8; 8] {
        self.0.key_id
    }

    pub fn suite(&self) -> Suite {
        self.0.suite
    }
}

pub(crate) struct KeySet {
    pub(crate) suite: Suite,
    pub(crate) key_id: [u8; 8],
    pub(crate) file_id: [u8; 32],
    pub(crate) chunk_mac: [u8; 32],
    pub(crate) enc_aes: [u8; 32],
    pub(crate) enc_xchacha: [u8; 32],
    pub(crate) trailer_mac: [u8; 32],
    pub(crate) gear_key: [u8; 32],
    pub(crate) gear: [u64; 256],
    pub(crate) names: [u8; 64],
    pub(crate) long_names: [u8; 32],
    /// The name cipher, keyed once: keying AES-SIV (two AES key schedules and the CMAC subkeys) cost more
    /// than sealing a short name with it. Behind a lock because sealing a name needs `&mut`.
    pub(crate) name_cipher: std::sync::Mutex<aes_siv::siv::Aes256Siv>,
}

impl Drop for KeySet {
    fn drop(&mut self) {
        self.file_id.zeroize();
        self.chunk_mac.zeroize();
        self.enc_aes.zeroize();
        self.enc_xchacha.zeroize();
        self.trailer_mac.zeroize();
        self.gear_key.zeroize();
        self.gear.zeroize();
        self.names.zeroize();
        self.long_names.zeroize();
    }
}

impl KeySet {
    fn derive(master: &MasterKey) -> KeySet {
        let mk: &[u8; 32] = &master.bytes;
        let k32 = |ctx: &str| {
            let mut k = [0u8; 32];
            derive(ctx, mk, &mut k);
            k
        };
        let gear_key = k32(CTX_GEAR);
        let mut table = [0u8; 2048];
        blake3::Hasher::new_keyed(&gear_key)
            .finalize_xof()
            .fill(&mut table);
        let mut gear = [0u64; 256];
        for (g, bytes) in gear.iter_mut().zip(table.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(bytes);
            *g = u64::from_le_bytes(b);
        }
        table.zeroize();
        let mut names = [0u8; 64];
        derive(CTX_NAMES, mk, &mut names);
        let name_cipher = std::sync::Mutex::new(
            <aes_siv::siv::Aes256Siv as aes_siv::KeyInit>::new(&names.into()),
        );
        KeySet {
            suite: master.suite,
            key_id: master.key_id(),
            file_id: k32(CTX_FILE_ID),
            chunk_mac: k32(CTX_CHUNK_MAC),
            enc_aes: k32(CTX_ENC_AES),
            enc_xchacha: k32(CTX_ENC_XCHACHA),
            trailer_mac: k32(CTX_TRAILER_MAC),
            gear_key,
            gear,
            names,
            long_names: k32(CTX_LONG_NAMES),
            name_cipher,
        }
    }
}

/// Test-only access to derived subkeys, for the known-answer vectors.
#[doc(hidden)]
pub fn subkeys_for_vectors(keys: &Keys) -> Vec<(&'static str, Vec<u8>)> {
    let k = &keys.0;
    let mut table = Vec::with_capacity(2048);
    for g in k.gear.iter() {
        table.extend_from_slice(&g.to_le_bytes());
    }
    vec![
        ("K_fid", k.file_id.to_vec()),
        ("K_mac", k.chunk_mac.to_vec()),
        ("K_aes", k.enc_aes.to_vec()),
        ("K_xch", k.enc_xchacha.to_vec()),
        ("K_trl", k.trailer_mac.to_vec()),
        ("K_gear", k.gear_key.to_vec()),
        ("K_name", k.names.to_vec()),
        ("K_long", k.long_names.to_vec()),
        (
            "gear_table_blake3",
            blake3::hash(&table).as_bytes().to_vec(),
        ),
    ]
}

fn derive(ctx: &str, ikm: &[u8], out: &mut [u8]) {
    let mut h = blake3::Hasher::new_derive_key(ctx);
    h.update(ikm);
    h.finalize_xof().fill(out);
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    data_encoding::HEXLOWER.decode(s.as_bytes()).ok()
}

fn unhex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    unhex(s)?.try_into().ok()
}
