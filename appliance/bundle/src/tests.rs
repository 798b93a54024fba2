use super::*;

/// Small parameters: the rejection tests open hundreds of bundles.
const FAST: KdfParams = KdfParams {
    m_kib: 8,
    t: 1,
    p: 1,
};
const PASS: &[u8] = b"correct horse battery";

fn sample(with_keys: bool) -> Bundle {
    Bundle {
        created: 1_790_000_000,
        box_name: "nas-livingroom".into(),
        config_text: "state_dir = \"state\"\nkey_file = \"master.key\"\n[target]\npath = \"/b\"\n"
            .into(),
        key_text: with_keys.then(|| "offsite-key v1\nsuite aes\nmaster 00\n".into()),
        ssh_key: with_keys.then(|| SshKey {
            private_key:
                "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
                    .into(),
            public_key: Some("ssh-ed25519 AAAA box\n".into()),
        }),
        known_hosts: Some("[backup.example]:2222 ssh-ed25519 AAAA\n".into()),
    }
}

fn kind(e: &BundleError) -> &'static str {
    match e {
        BundleError::TooLarge { .. } => "too large",
        BundleError::Truncated { .. } => "truncated",
        BundleError::NotABundle => "not a bundle",
        BundleError::UnsupportedVersion { .. } => "version",
        BundleError::BadParameters(_) => "parameters",
        BundleError::WrongPassphraseOrTampered => "passphrase or tampered",
        BundleError::BadContent(_) => "content",
        BundleError::WeakPassphrase { .. } => "weak",
        BundleError::Random(_) => "random",
        BundleError::Kdf(_) => "kdf",
    }
}

#[test]
fn round_trip_with_keys_default_parameters() {
    let b = sample(true);
    let sealed = seal(&b, PASS).unwrap();
    assert_eq!(&sealed[..8], b"OFFSITEB");
    assert_eq!(le_u32(&sealed, 10), 65536);
    let back = open(&sealed, PASS).unwrap();
    assert_eq!(back, b);
    // Random salt and nonce: two seals of the same bundle differ.
    assert_ne!(seal_with(&b, PASS, FAST).unwrap()[22..62], sealed[22..62]);
}

#[test]
fn round_trip_without_keys() {
    let b = sample(false);
    let sealed = seal_with(&b, PASS, FAST).unwrap();
    let back = open(&sealed, PASS).unwrap();
    assert_eq!(back, b);
    assert!(back.key_text.is_none() && back.ssh_key.is_none());
    // Nothing of the plaintext shows.
    assert!(!sealed.windows(9).any(|w| w == b"state_dir"));
}

#[test]
fn debug_hides_secrets() {
    let shown = format!("{:?}", sample(true));
    assert!(
        !shown.contains("master 00") && !shown.contains("BEGIN OPENSSH"),
        "{shown}"
    );
    assert!(shown.contains("<secret>"));
}

#[test]
fn short_passphrase_is_refused() {
    for p in [&b""[..], b"short", b"       ", b"1234567"] {
        assert_eq!(
            seal_with(&sample(false), p, FAST).unwrap_err(),
            BundleError::WeakPassphrase { min: 8 }
        );
    }
}

#[test]
fn wrong_passphrase() {
    let sealed = seal_with(&sample(true), PASS, FAST).unwrap();
    for p in [
        &b"correct horse battery "[..],
        b"",
        b"Correct horse battery",
    ] {
        assert_eq!(
            open(&sealed, p).unwrap_err(),
            BundleError::WrongPassphraseOrTampered
        );
    }
}

#[test]
fn truncated_at_every_length() {
    let sealed = seal_with(&sample(true), PASS, FAST).unwrap();
    for len in 0..sealed.len() {
        let e = open(&sealed[..len], PASS).unwrap_err();
        let want = if len < HEADER_LEN + TAG_LEN {
            "truncated"
        } else {
            "passphrase or tampered"
        };
        assert_eq!(kind(&e), want, "length {len}: {e}");
    }
}

#[test]
fn oversized_is_refused_before_anything_else() {
    let mut big = seal_with(&sample(false), PASS, FAST).unwrap();
    big.resize(MAX_BUNDLE_LEN + 1, 0);
    assert_eq!(
        open(&big, PASS).unwrap_err(),
        BundleError::TooLarge {
            size: MAX_BUNDLE_LEN + 1,
            max: MAX_BUNDLE_LEN
        }
    );
    let junk = vec![0xAB; 5 << 20];
    assert_eq!(kind(&open(&junk, PASS).unwrap_err()), "too large");
    // A bundle just below the limit still opens.
    let mut b = sample(false);
    b.known_hosts = Some("x".repeat(MAX_BUNDLE_LEN - 400));
    let sealed = seal_with(&b, PASS, FAST).unwrap();
    assert_eq!(open(&sealed, PASS).unwrap(), b);
    b.known_hosts = Some("x".repeat(MAX_BUNDLE_LEN));
    assert_eq!(kind(&seal_with(&b, PASS, FAST).unwrap_err()), "too large");
}

#[test]
fn wrong_magic() {
    let sealed = seal_with(&sample(false), PASS, FAST).unwrap();
    for i in 0..8 {
        let mut m = sealed.clone();
        m[i] ^= 0x20;
        assert_eq!(open(&m, PASS).unwrap_err(), BundleError::NotABundle);
        // Even a short prefix that is not the magic is "not a bundle", not "truncated".
        assert_eq!(
            open(&m[..i + 1], PASS).unwrap_err(),
            BundleError::NotABundle
        );
    }
    for text in [
        &b"state_dir = \"state\"\n"[..],
        b"\x1f\x8b\x08\x00",
        b"PK\x03\x04",
    ] {
        assert_eq!(open(text, PASS).unwrap_err(), BundleError::NotABundle);
    }
}

#[test]
fn wrong_version() {
    let sealed = seal_with(&sample(false), PASS, FAST).unwrap();
    for v in [0u16, 2, 0x0100, u16::MAX] {
        let mut m = sealed.clone();
        m[8..10].copy_from_slice(&v.to_le_bytes());
        assert_eq!(
            open(&m, PASS).unwrap_err(),
            BundleError::UnsupportedVersion {
                found: v,
                supported: 1
            }
        );
        // Checked before the length of the rest.
        assert_eq!(kind(&open(&m[..12], PASS).unwrap_err()), "version");
    }
}

#[test]
fn flipped_byte_anywhere_is_rejected() {
    let sealed = seal_with(&sample(true), PASS, FAST).unwrap();
    for i in 0..sealed.len() {
        for bit in [0x01u8, 0x80] {
            let mut m = sealed.clone();
            m[i] ^= bit;
            let e = open(&m, PASS).unwrap_err();
            let ok = match i {
                0..8 => e == BundleError::NotABundle,
                8..10 => kind(&e) == "version",
                10..22 => matches!(kind(&e), "parameters" | "passphrase or tampered"),
                _ => e == BundleError::WrongPassphraseOrTampered,
            };
            assert!(ok, "byte {i} ^ {bit:#x}: {e}");
        }
    }
}

#[test]
fn crafted_kdf_parameters_are_bounded() {
    let sealed = seal_with(&sample(false), PASS, FAST).unwrap();
    for (at, v) in [
        (10, 4u32 << 20), // 4 GiB
        (10, 4),          // below 8 * p
        (14, 0),
        (14, 1000),
        (18, 0),
        (18, 64),
    ] {
        let mut m = sealed.clone();
        m[at..at + 4].copy_from_slice(&v.to_le_bytes());
        assert_eq!(kind(&open(&m, PASS).unwrap_err()), "parameters", "{at}={v}");
    }
}

#[test]
fn authentic_but_bad_content() {
    let check = |payload: &[u8]| {
        let sealed = seal_payload(payload, PASS, FAST).unwrap();
        open(&sealed, PASS).unwrap_err()
    };
    assert_eq!(kind(&check(b"")), "content");
    assert_eq!(kind(&check(&[0xff; 40])), "content");
    let mut good = postcard::to_allocvec(&sample(true)).unwrap();
    good.push(0);
    assert_eq!(kind(&check(&good)), "content");
    good.pop();
    good.truncate(good.len() - 3);
    assert_eq!(kind(&check(&good)), "content");
    let mut empty = sample(false);
    empty.config_text = " \n".into();
    let e = check(&postcard::to_allocvec(&empty).unwrap());
    assert!(e.to_string().contains("config_text"), "{e}");
    // Not UTF-8 where a string is expected.
    let mut b = postcard::to_allocvec(&sample(false)).unwrap();
    let at = b.windows(9).position(|w| w == b"state_dir").unwrap();
    b[at] = 0xff;
    assert_eq!(kind(&check(&b)), "content");
}

#[test]
fn random_inputs_never_panic() {
    // A quick stand-in for the fuzz target (appliance/bundle/fuzz): random and mutated inputs.
    let sealed = seal_with(&sample(true), PASS, FAST).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let tight = Limits {
        max_m_kib: 64,
        max_t: 1,
        max_p: 1,
    };
    for round in 0..3000 {
        let mut m = if round % 3 == 0 {
            (0..(next() % 200) as usize)
                .map(|_| next() as u8)
                .collect::<Vec<u8>>()
        } else {
            sealed.clone()
        };
        if round % 3 != 0 {
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % m.len();
                m[i] ^= (next() as u8) | 1;
            }
            if round % 5 == 0 {
                m.truncate((next() as usize) % m.len());
            }
        }
        assert!(open_with_limits(&m, PASS, &tight).is_err(), "round {round}");
    }
}
