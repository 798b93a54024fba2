//! Cost of each stage of sealing, in MiB/s, to see where time goes (not a format benchmark).
use std::time::Instant;

fn main() {
    let len = 256usize << 20;
    let mut data = vec![0u8; len];
    blake3::Hasher::new().finalize_xof().fill(&mut data);
    let mut gear = [0u64; 256];
    for (i, g) in gear.iter_mut().enumerate() {
        *g = blake3::hash(&[i as u8]).as_bytes()[..8]
            .iter()
            .fold(0u64, |a, &b| a << 8 | b as u64);
    }
    let t = Instant::now();
    let mut pos = 0;
    let mut n = 0;
    while pos < len {
        pos += seal::chunker::next_chunk_len(&gear, &data[pos..]);
        n += 1;
    }
    let el = t.elapsed().as_secs_f64();
    println!("chunker      {:>8.0} MiB/s ({n} chunks)", 256.0 / el);
    let key = [3u8; 32];
    let t = Instant::now();
    let mut acc = 0u8;
    for c in data.chunks(9216) {
        acc ^= blake3::keyed_hash(&key, c).as_bytes()[0];
    }
    println!(
        "blake3 9KiB  {:>8.0} MiB/s {acc}",
        256.0 / t.elapsed().as_secs_f64()
    );
    use aes::cipher::{KeyInit, KeyIvInit, StreamCipher};
    let t = Instant::now();
    let aes = aes::Aes256::new(&key.into());
    for c in data.chunks_mut(9216) {
        use aes::cipher::InnerIvInit;
        let core = ctr::CtrCore::<aes::Aes256, ctr::flavors::Ctr128BE>::inner_iv_init(
            aes.clone(),
            &[1u8; 16].into(),
        );
        aes::cipher::StreamCipherCoreWrapper::from_core(core).apply_keystream(c);
    }
    println!(
        "aes-ctr 9KiB {:>8.0} MiB/s",
        256.0 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    for c in data.chunks_mut(9216) {
        let mut x = chacha20::XChaCha20::new(&key.into(), &[1u8; 24].into());
        x.apply_keystream(c);
    }
    println!(
        "xchacha 9KiB {:>8.0} MiB/s",
        256.0 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut out = vec![0u8; len];
    out.copy_from_slice(&data);
    println!(
        "memcpy       {:>8.0} MiB/s",
        256.0 / t.elapsed().as_secs_f64()
    );
}
