//! `bundle::open` on arbitrary bytes, and on authentic bundles whose payload is arbitrary (so the postcard
//! decoder behind the AEAD is reached too). KDF parameters are held tiny: the fuzzer explores the parsing,
//! not Argon2.
#![no_main]

use bundle::{KdfParams, Limits};
use libfuzzer_sys::fuzz_target;

const PASS: &[u8] = b"fuzzing passphrase";
const PARAMS: KdfParams = KdfParams {
    m_kib: 8,
    t: 1,
    p: 1,
};
const TINY: Limits = Limits {
    max_m_kib: 64,
    max_t: 1,
    max_p: 1,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // The bytes as a bundle file.
        let _ = bundle::open_with_limits(rest, PASS, &TINY);
        return;
    }
    // The bytes as the decrypted payload of an authentic bundle.
    let Ok(sealed) = bundle::seal_payload(rest, PASS, PARAMS) else {
        return;
    };
    if let Ok(b) = bundle::open_with_limits(&sealed, PASS, &TINY) {
        // What opens seals again and opens to the same bundle (when its passphrase rule allows).
        let again = bundle::seal_with(&b, PASS, PARAMS).expect("an opened bundle seals again");
        let back = bundle::open_with_limits(&again, PASS, &TINY).expect("and opens");
        assert_eq!(back, b);
    }
});
