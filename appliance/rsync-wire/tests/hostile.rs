//! A hostile or broken peer: random bytes after a valid handshake must end
//! in an error (never a panic or a hang), and absurd counts are refused.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rsync_wire::{Connection, FileEntry, PushOptions, RemoteEnd, RemoteOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Records the largest single allocation made on each thread since
/// [`LargestAlloc::reset`] (the sessions here run on the test's thread).
struct LargestAlloc;

thread_local! {
    static LARGEST: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl LargestAlloc {
    fn reset() {
        let _ = LARGEST.try_with(|c| c.set(0));
    }
    fn largest() -> usize {
        LARGEST.try_with(|c| c.get()).unwrap_or(0)
    }
    fn note(size: usize) {
        let _ = LARGEST.try_with(|c| c.set(c.get().max(size)));
    }
}

// SAFETY: forwards to the system allocator unchanged.
unsafe impl std::alloc::GlobalAlloc for LargestAlloc {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        Self::note(l.size());
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: std::alloc::Layout) -> *mut u8 {
        Self::note(l.size());
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        Self::note(new);
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: LargestAlloc = LargestAlloc;

struct FakeRemote;

impl RemoteEnd for FakeRemote {
    fn finish(&mut self, _: Duration) -> Pin<Box<dyn Future<Output = RemoteOutcome> + Send + '_>> {
        Box::pin(async {
            RemoteOutcome {
                exit_status: Some(0),
                stderr: String::new(),
            }
        })
    }
}

struct Bytes;

impl rsync_wire::ContentSource for Bytes {
    type Reader = std::io::Cursor<Vec<u8>>;
    async fn open(&mut self, _: usize, e: &FileEntry) -> std::io::Result<Self::Reader> {
        Ok(std::io::Cursor::new(vec![7u8; e.size() as usize]))
    }
}

fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn frame(tag: u8, payload: &[u8]) -> Vec<u8> {
    let h = ((7 + u32::from(tag)) << 24) | payload.len() as u32;
    let mut v = h.to_le_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Runs a push against a scripted server that sends `script` and then EOF.
async fn run_against(script: Vec<u8>) -> rsync_wire::Result<rsync_wire::PushStats> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (mut srv_r, mut srv_w) = tokio::io::split(server);
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = srv_r.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    let feed = tokio::spawn(async move {
        let _ = srv_w.write_all(&script).await;
        let _ = srv_w.shutdown().await;
    });
    let (r, w) = tokio::io::split(client);
    let conn = Connection {
        reader: r,
        writer: w,
        remote: Box::new(FakeRemote),
    };
    let files = vec![
        FileEntry::file("a", 5000, 1, 0o644),
        FileEntry::dir("d", 1, 0o755),
        FileEntry::file("d/b", 10, 1, 0o644),
    ];
    let opts = PushOptions {
        exit_grace: Duration::from_secs(1),
        ..PushOptions::default()
    };
    let res = tokio::time::timeout(
        Duration::from_secs(10),
        rsync_wire::push(conn, files, &mut Bytes, &opts, &mut |_| {}),
    )
    .await
    .expect("push hung on garbage input");
    feed.abort();
    drain.abort();
    res
}

fn handshake() -> Vec<u8> {
    let mut v = vec![31, 0, 0, 0, 0x81, 0xFE, 3];
    v.extend_from_slice(b"md5");
    v.extend_from_slice(&1i32.to_le_bytes());
    v
}

#[tokio::test]
async fn random_garbage_after_handshake() {
    let mut seed = 0x1234_5678_9ABC_DEF0u64;
    for round in 0..300 {
        let mut script = handshake();
        let n_frames = 1 + rng(&mut seed) % 6;
        for _ in 0..n_frames {
            let len = (rng(&mut seed) % 64) as usize;
            let payload: Vec<u8> = (0..len).map(|_| rng(&mut seed) as u8).collect();
            let pick = rng(&mut seed) % 10;
            if pick < 7 {
                script.extend(frame(0, &payload));
            } else if pick < 9 {
                let tag = [1u8, 2, 3, 4, 9, 22, 33, 42, 86, 100, 101, 102]
                    [(rng(&mut seed) % 12) as usize];
                script.extend(frame(tag, &payload));
            } else {
                script.extend(payload);
            }
        }
        let res = run_against(script).await;
        assert!(res.is_err(), "round {round}: garbage accepted: {res:?}");
    }
}

#[tokio::test]
async fn absurd_counts_are_refused() {
    // ndx 0 ("."), iflags TRANSFER, then a sum head with a huge count.
    let mut data = vec![0x01];
    data.extend_from_slice(&0x8000u16.to_le_bytes());
    let mut script = handshake();
    script.extend(frame(0, &data));
    let e = run_against(script).await.unwrap_err();
    assert!(e.to_string().contains("non-regular"), "{e}");

    // Index 1 is "a" (files sort before directories).
    let mut data = vec![0x02];
    data.extend_from_slice(&0x8000u16.to_le_bytes());
    for v in [i32::MAX, 700, 16, 0] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    let mut script = handshake();
    script.extend(frame(0, &data));
    let e = run_against(script).await.unwrap_err();
    assert!(e.to_string().contains("block-sum count"), "{e}");

    let mut data = vec![0x02];
    data.extend_from_slice(&0x8000u16.to_le_bytes());
    for v in [1i32, 1 << 20, 16, 0] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    let mut script = handshake();
    script.extend(frame(0, &data));
    let e = run_against(script).await.unwrap_err();
    assert!(e.to_string().contains("block length"), "{e}");

    let mut data = vec![0x02];
    data.extend_from_slice(&0x8000u16.to_le_bytes());
    for v in [1i32, 700, 17, 0] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    let mut script = handshake();
    script.extend(frame(0, &data));
    let e = run_against(script).await.unwrap_err();
    assert!(e.to_string().contains("strong checksum length"), "{e}");

    // Index out of range.
    let mut script = handshake();
    script.extend(frame(0, &[0x40, 0, 0x80]));
    let e = run_against(script).await.unwrap_err();
    assert!(e.to_string().contains("file index"), "{e}");
}

/// Mostly well-formed requests with random sum tables and flags: exercises
/// the delta path with whatever the peer claims.
#[tokio::test]
async fn random_plausible_requests() {
    let mut seed = 0xDEAD_BEEF_0BAD_F00Du64;
    let mut ok = 0;
    for _ in 0..300 {
        let mut data = Vec::new();
        for _ in 0..(1 + rng(&mut seed) % 3) {
            data.push(1 + (rng(&mut seed) % 3) as u8);
            let mut iflags = rng(&mut seed) as u16;
            if !rng(&mut seed).is_multiple_of(4) {
                iflags = (iflags & 0x07FF) | 0x8000;
            }
            data.extend_from_slice(&iflags.to_le_bytes());
            if iflags & 0x8000 != 0 {
                let count = (rng(&mut seed) % 5) as i32;
                let blength = 1 + (rng(&mut seed) % 3000) as i32;
                let s2 = (rng(&mut seed) % 17) as i32;
                let rem = (rng(&mut seed) % (blength as u64 + 1)) as i32;
                for v in [count, blength, s2, rem] {
                    data.extend_from_slice(&v.to_le_bytes());
                }
                for _ in 0..count {
                    // sum1 of a block of 7s, sometimes, so matches happen.
                    let s1 = if rng(&mut seed).is_multiple_of(2) {
                        rsync_wire::checksum::checksum1(&vec![7u8; blength as usize])
                    } else {
                        rng(&mut seed) as u32
                    };
                    data.extend_from_slice(&s1.to_le_bytes());
                    for _ in 0..s2 {
                        data.push(rng(&mut seed) as u8);
                    }
                }
            }
        }
        // A few NDX_DONE.
        data.extend(std::iter::repeat_n(0u8, (rng(&mut seed) % 3) as usize));
        let mut script = handshake();
        script.extend(frame(0, &data));
        if run_against(script).await.is_ok() {
            ok += 1;
        }
    }
    // A script never completes the five-phase ending, so nothing succeeds.
    assert_eq!(ok, 0);
}

/// Found by `examples/fuzz_decoder.rs`: memory reserved from a value the
/// peer merely claimed. Before protocol 30 a block length of up to 16 MiB
/// is accepted, and the delta window reserved twice that (32 MiB) even for
/// a 5000-byte file; a block-sum count of up to `max_block_sums` (4 Mi)
/// reserved 64 + 16 MiB of tables before a single sum arrived. Both now
/// grow with the data actually read or received.
#[tokio::test(flavor = "current_thread")]
async fn claimed_sizes_do_not_reserve_memory() {
    // Protocol 29: ndx and iflags, then count 1, blength 16 MiB, s2length
    // 2, remainder 0, and the one sum; then EOF while we send the delta.
    let mut script = vec![29, 0, 0, 0];
    script.extend_from_slice(&1i32.to_le_bytes());
    let mut data = 1i32.to_le_bytes().to_vec();
    data.extend_from_slice(&0x8000u16.to_le_bytes());
    for v in [1i32, 1 << 24, 2, 0, 0x1234_5678] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    data.extend_from_slice(&[0xAB, 0xCD]);
    script.extend(frame(0, &data));
    LargestAlloc::reset();
    let res = run_against(script).await;
    let largest = LargestAlloc::largest();
    assert!(res.is_err(), "{res:?}");
    assert!(
        largest < 1 << 20,
        "a 16 MiB block length reserved {largest} bytes"
    );

    // Protocol 31: a count of exactly the limit, no sums, EOF.
    let mut data = vec![0x02];
    data.extend_from_slice(&0x8000u16.to_le_bytes());
    for v in [4i32 << 20, 700, 16, 0] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    let mut script = handshake();
    script.extend(frame(0, &data));
    LargestAlloc::reset();
    let e = run_against(script).await.unwrap_err();
    let largest = LargestAlloc::largest();
    assert!(matches!(e, rsync_wire::Error::Session { .. }), "{e}");
    assert!(
        largest < 4 << 20,
        "a claimed count of 4 Mi sums reserved {largest} bytes"
    );
}
