//! Deterministic encryption of names, one path component at a time (`docs/FORMAT.md`, section 6).
//!
//! Each component is padded to a 16-byte bucket, sealed with AES-256-SIV with the plaintext parent folder as
//! associated data, and written in lowercase base32. Names too long for that (over 127 bytes) become a short
//! hash-named component plus a side file holding the full sealed name.

use aes_siv::siv::Aes256Siv;

use crate::error::{Result, SealError};
use crate::keys::Keys;
use crate::path::RelPath;

/// Side files that hold long sealed names start with this.
pub const LONG_NAME_SIDE_PREFIX: &str = ".offsite-longname-";
/// Longest plaintext component that seals to a short (self-contained) component.
pub const MAX_SHORT_NAME: usize = 127;
const LONG_HASH_LEN: usize = 20;
const PAD: usize = 16;

/// One sealed path component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SealedName {
    /// The component itself carries the sealed name.
    Short(String),
    /// A hash stands in the path; the sealed name lives in a side file in the same folder.
    Long {
        component: String,
        side_file: String,
        side_content: String,
    },
}

impl SealedName {
    /// The string that stands in the sealed path.
    pub fn component(&self) -> &str {
        match self {
            SealedName::Short(s) => s,
            SealedName::Long { component, .. } => component,
        }
    }
}

/// A name's length once padded: the next multiple of [`PAD`] above it (the `0x80` marker always fits).
fn padded_len(name_len: usize) -> usize {
    (name_len / PAD + 1) * PAD
}

fn check_name(name: &[u8]) -> Result<()> {
    let why = if name.is_empty() {
        Some("empty")
    } else if name == b"." || name == b".." {
        Some("is . or ..")
    } else if name.contains(&b'/') {
        Some("contains /")
    } else if name.contains(&0) {
        Some("contains a NUL byte")
    } else if name.len() > 255 {
        Some("longer than 255 bytes")
    } else {
        None
    };
    match why {
        Some(why) => Err(SealError::BadName {
            name: String::from_utf8_lossy(name).into_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// Runs `f` with the keys' name cipher (a poisoned lock still holds a usable cipher: sealing keeps no
/// state between calls).
fn with_siv<T>(keys: &Keys, f: impl FnOnce(&mut Aes256Siv) -> T) -> T {
    let mut siv = keys
        .0
        .name_cipher
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut siv)
}

fn long_hash(keys: &Keys, full: &str) -> String {
    let h = blake3::keyed_hash(&keys.0.long_names, full.as_bytes());
    data_encoding::BASE32_NOPAD
        .encode(&h.as_bytes()[..LONG_HASH_LEN])
        .to_ascii_lowercase()
}

/// Seals one component `name` that lives in the folder `parent` (plaintext relative path, empty for the
/// share root).
pub fn seal_name(keys: &Keys, parent: &[u8], name: &[u8]) -> Result<SealedName> {
    check_name(name)?;
    let padded_len = padded_len(name.len());
    let mut pt = Vec::with_capacity(padded_len);
    pt.extend_from_slice(name);
    pt.push(0x80);
    pt.resize(padded_len, 0);
    let sealed =
        with_siv(keys, |siv| siv.encrypt([parent], &pt)).map_err(|_| SealError::BadName {
            name: String::from_utf8_lossy(name).into_owned(),
            why: "cannot be sealed",
        })?;
    let full = data_encoding::BASE32_NOPAD
        .encode(&sealed)
        .to_ascii_lowercase();
    if name.len() <= MAX_SHORT_NAME {
        return Ok(SealedName::Short(full));
    }
    let hash = long_hash(keys, &full);
    Ok(SealedName::Long {
        component: format!("_{hash}"),
        side_file: format!("{LONG_NAME_SIDE_PREFIX}{hash}"),
        side_content: full,
    })
}

/// Whether `component` has the form [`seal_name`] gives a short name of `name_len` bytes: the length of
/// the base32 of the padded name and its 16-byte tag, in the lowercase base32 alphabet. A check of a sealed
/// name kept elsewhere (the backup's index caches them) against damage, not a proof that it is the name's.
pub fn is_short_form(name_len: usize, component: &[u8]) -> bool {
    if name_len == 0 || name_len > MAX_SHORT_NAME {
        return false;
    }
    let sealed_len = 16 + padded_len(name_len);
    // Every byte is looked at (no early exit), so the compiler checks 16 or 32 at a time: an unchanged
    // night checks the cached name of every file, and the byte-at-a-time loop was 1 % of its CPU.
    component.len() == (sealed_len * 8).div_ceil(5)
        && component.iter().fold(true, |ok, &b| {
            ok & ((b.wrapping_sub(b'a') < 26) | (b.wrapping_sub(b'2') < 6))
        })
}

/// For a long component (`_…`), the name of its side file; `None` for a short one.
pub fn side_file_for(component: &str) -> Option<String> {
    component
        .strip_prefix('_')
        .map(|hash| format!("{LONG_NAME_SIDE_PREFIX}{hash}"))
}

/// Opens one sealed component. For a long component, `side_content` must be the content of its side file
/// (see [`side_file_for`]); it is checked against the component's hash.
pub fn unseal_name(
    keys: &Keys,
    parent: &[u8],
    component: &str,
    side_content: Option<&str>,
) -> Result<Vec<u8>> {
    let auth = || SealError::NameAuth {
        name: component.to_owned(),
    };
    let long = component.starts_with('_');
    let full = match component.strip_prefix('_') {
        Some(hash) => {
            let content = side_content.ok_or_else(|| SealError::BadName {
                name: component.to_owned(),
                why: "long name: its .offsite-longname- side file is needed",
            })?;
            if long_hash(keys, content) != hash {
                return Err(auth());
            }
            content
        }
        None => component,
    };
    if full.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(auth());
    }
    let raw = data_encoding::BASE32_NOPAD
        .decode(full.to_ascii_uppercase().as_bytes())
        .map_err(|_| auth())?;
    if raw.len() < 2 * PAD || raw.len() % PAD != 0 {
        return Err(auth());
    }
    let mut pt = with_siv(keys, |siv| siv.decrypt([parent], &raw)).map_err(|_| auth())?;
    let end = pt.iter().rposition(|&b| b != 0).ok_or_else(auth)?;
    if pt[end] != 0x80 || pt.len() - end > PAD {
        return Err(auth());
    }
    pt.truncate(end);
    check_name(&pt)?;
    if long != (pt.len() > MAX_SHORT_NAME) {
        // Each length has exactly one form; anything else was not written by a sealer.
        return Err(auth());
    }
    Ok(pt)
}

/// A sealed relative path and the long-name side files it needs (folder, side file name, content).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedPath {
    pub path: String,
    pub side_files: Vec<(String, String, String)>,
}

/// Seals every component of `path`.
pub fn seal_path(keys: &Keys, path: &RelPath) -> Result<SealedPath> {
    let mut sealed = String::new();
    let mut parent: Vec<u8> = Vec::new();
    let mut side_files = Vec::new();
    for component in path.components() {
        let s = seal_name(keys, &parent, component)?;
        if let SealedName::Long {
            side_file,
            side_content,
            ..
        } = &s
        {
            side_files.push((sealed.clone(), side_file.clone(), side_content.clone()));
        }
        if !sealed.is_empty() {
            sealed.push('/');
        }
        sealed.push_str(s.component());
        if !parent.is_empty() {
            parent.push(b'/');
        }
        parent.extend_from_slice(component);
    }
    Ok(SealedPath {
        path: sealed,
        side_files,
    })
}

/// Opens a sealed relative path. `side` is asked for the content of a long component's side file, given
/// the sealed folder it lives in and the side file's name.
pub fn unseal_path(
    keys: &Keys,
    sealed: &str,
    mut side: impl FnMut(&str, &str) -> Option<String>,
) -> Result<RelPath> {
    let mut plain: Vec<u8> = Vec::new();
    let mut sealed_dir = String::new();
    for component in sealed.split('/') {
        let content = match side_file_for(component) {
            Some(file) => side(&sealed_dir, &file),
            None => None,
        };
        let name = unseal_name(keys, &plain, component, content.as_deref())?;
        if !plain.is_empty() {
            plain.push(b'/');
        }
        plain.extend_from_slice(&name);
        if !sealed_dir.is_empty() {
            sealed_dir.push('/');
        }
        sealed_dir.push_str(component);
    }
    RelPath::new(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{MasterKey, Suite};

    fn keys() -> Keys {
        MasterKey::from_bytes([9; 32], Suite::XChaCha20).derive_keys()
    }

    #[test]
    fn short_roundtrip_and_folder_binding() {
        let k = keys();
        let a = seal_name(&k, b"", b"report.ods").unwrap();
        let b = seal_name(&k, b"photos", b"report.ods").unwrap();
        assert_ne!(a, b);
        assert_eq!(a, seal_name(&k, b"", b"report.ods").unwrap());
        assert_eq!(
            unseal_name(&k, b"", a.component(), None).unwrap(),
            b"report.ods"
        );
        assert!(unseal_name(&k, b"photos", a.component(), None).is_err());
    }

    #[test]
    fn lengths_and_buckets() {
        let k = keys();
        for len in [1usize, 15, 16, 17, 100, 127] {
            let name = vec![b'x'; len];
            let SealedName::Short(s) = seal_name(&k, b"", &name).unwrap() else {
                panic!("{len} should be short");
            };
            assert!(s.len() <= 255);
            assert!(
                s.bytes()
                    .all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c))
            );
            assert!(is_short_form(len, s.as_bytes()), "{len}");
            assert!(!is_short_form(len, &s.as_bytes()[1..]), "{len}");
            assert!(!is_short_form(len + 16, s.as_bytes()), "{len}");
            let mut bad = s.clone().into_bytes();
            bad[3] = b'A';
            assert!(!is_short_form(len, &bad), "{len}");
            // Any byte at any place: in the alphabet is accepted, anything else refused.
            for at in [0, s.len() / 2, s.len() - 1] {
                for b in 0..=255u8 {
                    let mut one = s.clone().into_bytes();
                    one[at] = b;
                    let alphabet = b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b);
                    assert_eq!(is_short_form(len, &one), alphabet, "{len} {at} {b}");
                }
            }
            assert_eq!(unseal_name(&k, b"", &s, None).unwrap(), name);
        }
        let l15 = seal_name(&k, b"", &[b'a'; 15]).unwrap().component().len();
        let l1 = seal_name(&k, b"", b"a").unwrap().component().len();
        assert_eq!(l1, l15, "same 16-byte bucket");
    }

    #[test]
    fn long_names_use_a_side_file() {
        let k = keys();
        let name = vec![b'y'; 255];
        let s = seal_name(&k, b"d", &name).unwrap();
        let SealedName::Long {
            component,
            side_file,
            side_content,
        } = &s
        else {
            panic!("should be long")
        };
        assert_eq!(
            side_file_for(component).as_deref(),
            Some(side_file.as_str())
        );
        assert!(component.len() < 64);
        assert_eq!(
            unseal_name(&k, b"d", component, Some(side_content)).unwrap(),
            name
        );
        assert!(unseal_name(&k, b"d", component, None).is_err());
        let mut tampered = side_content.clone();
        tampered.replace_range(0..1, if tampered.starts_with('a') { "b" } else { "a" });
        assert!(unseal_name(&k, b"d", component, Some(&tampered)).is_err());
    }

    #[test]
    fn paths_roundtrip() {
        let k = keys();
        let long = "z".repeat(200);
        let p = RelPath::new(format!("a b/{long}/c\u{e9}.txt").into_bytes()).unwrap();
        let sp = seal_path(&k, &p).unwrap();
        assert_eq!(sp.side_files.len(), 1);
        let back = unseal_path(&k, &sp.path, |dir, file| {
            sp.side_files
                .iter()
                .find(|(d, f, _)| d == dir && f == file)
                .map(|(_, _, c)| c.clone())
        })
        .unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn rejects_bad_names_and_garbage() {
        let k = keys();
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0"] {
            assert!(seal_name(&k, b"", bad).is_err());
        }
        for garbage in [
            "",
            "abc",
            "AAAA",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(unseal_name(&k, b"", garbage, None).is_err());
        }
    }
}
