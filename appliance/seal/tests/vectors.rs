//! Known-answer tests: `tests/vectors/seal-v1.json` was produced by an independent Python implementation
//! of `docs/FORMAT.md` (`tests/vectors/seal_v1.py`). Every field is checked against this crate.

use std::io::Read;

use seal::names::{SealedName, seal_name, unseal_name};
use seal::{MasterKey, RelPath, SealOptions, Sealer, Suite, Unsealer, hex};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    format: String,
    master_key: String,
    key_id: String,
    subkeys: std::collections::BTreeMap<String, String>,
    gear_table_blake3: String,
    cutpoints: Vec<CutVector>,
    files: Vec<FileVector>,
    names: Vec<NameVector>,
    keyfiles: Vec<KeyFileVector>,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Input {
    Xof { label: String, len: usize },
    Text { len: usize },
    Hex { hex: String },
}

impl Input {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Input::Xof { label, len } => {
                let mut h = blake3::Hasher::new();
                h.update(b"offsite test input ");
                h.update(label.as_bytes());
                let mut v = vec![0u8; *len];
                h.finalize_xof().fill(&mut v);
                v
            }
            Input::Text { len } => {
                let mut v = Vec::with_capacity(*len + 64);
                let mut i = 0;
                while v.len() < *len {
                    v.extend_from_slice(
                        format!("line {i:06}: the quick brown fox jumps over the lazy dog\n")
                            .as_bytes(),
                    );
                    i += 1;
                }
                v.truncate(*len);
                v
            }
            Input::Hex { hex } => unhex(hex),
        }
    }
}

#[derive(Deserialize)]
struct CutVector {
    input: Input,
    chunk_lengths: Vec<usize>,
}

#[derive(Deserialize)]
struct FileVector {
    name: String,
    suite: String,
    path_hex: String,
    input: Input,
    sealed_len: u64,
    sealed_blake3: String,
    sealed_hex: Option<String>,
    chunk_count: u64,
}

#[derive(Deserialize)]
struct NameVector {
    parent_hex: String,
    name_hex: String,
    sealed: String,
    side_file: Option<String>,
    side_content: Option<String>,
}

#[derive(Deserialize)]
struct KeyFileVector {
    text: String,
    passphrase: Option<String>,
    master_key: String,
    suite: String,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn load() -> Vectors {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/vectors/seal-v1.json"
    );
    let text = std::fs::read_to_string(path).expect("read vectors");
    let v: Vectors = serde_json::from_str(&text).expect("parse vectors");
    assert_eq!(v.format, "offsite-seal-v1");
    v
}

fn master(v: &Vectors, suite: Suite) -> MasterKey {
    MasterKey::from_bytes(unhex(&v.master_key).try_into().unwrap(), suite)
}

#[test]
fn subkeys_and_key_id() {
    let v = load();
    let keys = master(&v, Suite::XChaCha20).derive_keys();
    assert_eq!(hex(&keys.key_id()), v.key_id);
    for (name, value) in seal::subkeys_for_vectors(&keys) {
        let expected = if name == "gear_table_blake3" {
            &v.gear_table_blake3
        } else {
            &v.subkeys[name]
        };
        assert_eq!(&hex(&value), expected, "{name}");
    }
}

#[test]
fn golden_cut_points() {
    let v = load();
    let keys = master(&v, Suite::XChaCha20).derive_keys();
    for cut in &v.cutpoints {
        let data = cut.input.bytes();
        // Seal without compression and read the chunk lengths back from the records.
        let mut sealed = Vec::new();
        Sealer::new(
            &keys,
            &RelPath::new("x").unwrap(),
            SealOptions { compress: false },
            &data[..],
        )
        .read_to_end(&mut sealed)
        .unwrap();
        let mut lengths = Vec::new();
        let mut pos = seal::format::HEADER_LEN;
        loop {
            let n = u32::from_le_bytes(sealed[pos..pos + 4].try_into().unwrap()) as usize;
            if n == 0 {
                break;
            }
            lengths.push(n - 1);
            pos += 4 + 16 + n;
        }
        assert_eq!(lengths, cut.chunk_lengths);
    }
}

#[test]
fn sealed_files_match_byte_for_byte() {
    let v = load();
    for f in &v.files {
        let suite = Suite::parse(&f.suite).unwrap();
        let keys = master(&v, suite).derive_keys();
        let path = RelPath::new(unhex(&f.path_hex)).unwrap();
        let plain = f.input.bytes();
        let mut sealed = Vec::new();
        let mut sealer = Sealer::new(&keys, &path, SealOptions { compress: false }, &plain[..]);
        sealer.read_to_end(&mut sealed).unwrap();
        assert_eq!(sealed.len() as u64, f.sealed_len, "{}", f.name);
        assert_eq!(sealer.stats().chunks, f.chunk_count, "{}", f.name);
        assert_eq!(
            hex(blake3::hash(&sealed).as_bytes()),
            f.sealed_blake3,
            "{}",
            f.name
        );
        if let Some(h) = &f.sealed_hex {
            assert_eq!(&hex(&sealed), h, "{}", f.name);
        }
        let mut back = Vec::new();
        Unsealer::new(&keys, &path, &sealed[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, plain, "{}", f.name);
    }
}

#[test]
fn sealed_names_match() {
    let v = load();
    let keys = master(&v, Suite::XChaCha20).derive_keys();
    for n in &v.names {
        let parent = unhex(&n.parent_hex);
        let name = unhex(&n.name_hex);
        let sealed = seal_name(&keys, &parent, &name).unwrap();
        match (&sealed, &n.side_file) {
            (SealedName::Short(s), None) => assert_eq!(s, &n.sealed),
            (
                SealedName::Long {
                    component,
                    side_file,
                    side_content,
                },
                Some(expected_side),
            ) => {
                assert_eq!(component, &n.sealed);
                assert_eq!(side_file, expected_side);
                assert_eq!(Some(side_content), n.side_content.as_ref());
            }
            other => panic!("form mismatch for {:?}: {other:?}", n.name_hex),
        }
        let back = unseal_name(&keys, &parent, &n.sealed, n.side_content.as_deref()).unwrap();
        assert_eq!(back, name);
    }
}

#[test]
fn key_files_load() {
    let v = load();
    let dir = tempfile::tempdir().unwrap();
    for (i, kf) in v.keyfiles.iter().enumerate() {
        let path = dir.path().join(format!("k{i}"));
        std::fs::write(&path, &kf.text).unwrap();
        let pass = kf.passphrase.as_ref().map(|p| p.as_bytes());
        let key = MasterKey::load(&path, pass).unwrap();
        assert_eq!(hex(key.expose_bytes()), kf.master_key);
        assert_eq!(key.suite().name(), kf.suite);
        if kf.passphrase.is_some() {
            assert!(MasterKey::load(&path, Some(b"wrong")).is_err());
            assert!(MasterKey::load(&path, None).is_err());
        } else {
            assert_eq!(key.key_file_plain().as_str(), kf.text);
        }
    }
}
