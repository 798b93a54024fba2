//! Per-thread recycling of the large buffers a seal needs.
//!
//! A backup seals many small files one after another on the same few threads. Allocating a fresh 128 KiB
//! window, a record buffer and a deflate state (hundreds of KiB) for each of them made the
//! kernel's page-fault and `madvise` work dominate (measured: 7× the time of a plain copy of 2,000 small
//! files). Buffers and deflate states are therefore handed back here when a sealer is dropped and reused
//! by the next one on the same thread. Reuse cannot change output: every user resets what it takes (a
//! libdeflate compressor has nothing to reset: each call starts afresh).

use std::cell::RefCell;

/// Buffers kept per thread (a sealer uses four: window, record, chunk work and deflate output; an
/// unsealer two: record and inflate output).
const KEEP: usize = 4;

thread_local! {
    static BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static DEFLATE: RefCell<Option<libdeflater::Compressor>> = const { RefCell::new(None) };
}

/// A zero-length buffer with at least `capacity` bytes of capacity.
pub(crate) fn take_buffer(capacity: usize) -> Vec<u8> {
    let reused = BUFFERS
        .try_with(|b| {
            let mut b = b.borrow_mut();
            let i = b.iter().position(|v| v.capacity() >= capacity)?;
            Some(b.swap_remove(i))
        })
        .ok()
        .flatten();
    match reused {
        Some(mut v) => {
            v.clear();
            v
        }
        None => Vec::with_capacity(capacity),
    }
}

/// A buffer of exactly `len` bytes, for a caller that only ever reads back what it wrote into it: a
/// recycled buffer keeps its old bytes (zero-filling 128 KiB per small file was measured at a tenth of a
/// backup's CPU); a new one is zeroed.
pub(crate) fn take_window(len: usize) -> Vec<u8> {
    let reused = BUFFERS
        .try_with(|b| {
            let mut b = b.borrow_mut();
            let i = b.iter().position(|v| v.len() >= len)?;
            Some(b.swap_remove(i))
        })
        .ok()
        .flatten();
    match reused {
        Some(mut v) => {
            v.truncate(len);
            v
        }
        None => vec![0u8; len],
    }
}

/// Gives a buffer back for reuse on this thread.
pub(crate) fn give_buffer(v: Vec<u8>) {
    if v.capacity() == 0 {
        return;
    }
    let _ = BUFFERS.try_with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < KEEP {
            b.push(v);
        }
    });
}

/// A deflate state: this thread's spare one, or a new one.
pub(crate) fn take_deflate(
    make: impl FnOnce() -> libdeflater::Compressor,
) -> libdeflater::Compressor {
    DEFLATE
        .try_with(|d| d.borrow_mut().take())
        .ok()
        .flatten()
        .unwrap_or_else(make)
}

pub(crate) fn give_deflate(d: libdeflater::Compressor) {
    let _ = DEFLATE.try_with(|s| *s.borrow_mut() = Some(d));
}
