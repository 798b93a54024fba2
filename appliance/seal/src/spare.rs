//! Process-wide recycling of the large buffers a seal needs.
//!
//! A backup seals many small files one after another. Allocating a fresh 128 KiB window, a record buffer
//! and a deflate state (hundreds of KiB) for each of them made the kernel's page-fault and `madvise` work
//! dominate (measured: 7× the time of a plain copy of 2,000 small files). Buffers and deflate states are
//! therefore handed back here when a sealer is dropped and reused by the next one.
//!
//! The pool is shared by all threads and bounded. It was per thread at first, but a backup seals on
//! whichever thread of tokio's blocking pool is free, so every one of them ended up holding its own
//! spares (measured: 1.8 MiB of windows and 1.2 MiB of deflate states at the peak of an initial backup of
//! 100,000 small files, several times what the two or three sealers alive at once need). A lock per
//! sealer (not per chunk) costs nothing next to sealing a file.
//!
//! Reuse cannot change output: every user resets what it takes (a libdeflate compressor has nothing to
//! reset: each call starts afresh).

use std::sync::{Mutex, MutexGuard};

/// A bounded list of things kept for reuse, shared by all threads.
pub(crate) struct Kept<T> {
    list: Mutex<Vec<T>>,
    cap: usize,
}

impl<T> Kept<T> {
    pub(crate) const fn new(cap: usize) -> Kept<T> {
        Kept {
            list: Mutex::new(Vec::new()),
            cap,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<T>> {
        // A poisoned lock only means another thread panicked while holding it: the list is still whole.
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last one kept, if any.
    pub(crate) fn take(&self) -> Option<T> {
        self.lock().pop()
    }

    /// Keeps what there is room for; the rest is dropped.
    pub(crate) fn give(&self, things: impl IntoIterator<Item = T>) {
        let mut kept = self.lock();
        let room = self.cap.saturating_sub(kept.len());
        kept.extend(things.into_iter().take(room));
    }
}

/// Buffers kept: four per sealer (window, record, chunk work, deflate output), for about two sealers at
/// once (an unsealer uses two: record and inflate output).
static BUFFERS: Kept<Vec<u8>> = Kept::new(8);
/// Deflate states kept (about 200 KiB each).
static DEFLATE: Kept<libdeflater::Compressor> = Kept::new(2);

/// Where in `kept` the smallest buffer that `fits` is.
fn best_fit(kept: &[Vec<u8>], fits: impl Fn(&Vec<u8>) -> bool) -> Option<usize> {
    kept.iter()
        .enumerate()
        .filter(|(_, v)| fits(v))
        .min_by_key(|(_, v)| v.capacity())
        .map(|(i, _)| i)
}

/// The smallest kept buffer that `fits`, taken out of the pool.
fn take_fitting(fits: impl Fn(&Vec<u8>) -> bool) -> Option<Vec<u8>> {
    let mut kept = BUFFERS.lock();
    let i = best_fit(&kept, fits)?;
    Some(kept.swap_remove(i))
}

/// A zero-length buffer with at least `capacity` bytes of capacity.
pub(crate) fn take_buffer(capacity: usize) -> Vec<u8> {
    match take_fitting(|v| v.capacity() >= capacity) {
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
    match take_fitting(|v| v.len() >= len) {
        Some(mut v) => {
            v.truncate(len);
            v
        }
        None => vec![0u8; len],
    }
}

/// Gives a buffer back for reuse (dropped when the pool is full).
pub(crate) fn give_buffer(v: Vec<u8>) {
    if v.capacity() > 0 {
        BUFFERS.give([v]);
    }
}

/// A kept deflate state, or a new one.
pub(crate) fn take_deflate(
    make: impl FnOnce() -> libdeflater::Compressor,
) -> libdeflater::Compressor {
    DEFLATE.take().unwrap_or_else(make)
}

/// Gives a deflate state back for reuse (dropped when the pool is full).
pub(crate) fn give_deflate(d: libdeflater::Compressor) {
    DEFLATE.give([d]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_fitting_buffer_is_chosen() {
        let kept = vec![
            Vec::<u8>::with_capacity(1 << 20),
            Vec::with_capacity(1 << 10),
            Vec::with_capacity(3 << 16),
        ];
        assert_eq!(best_fit(&kept, |v| v.capacity() >= 1 << 16), Some(2));
        assert_eq!(best_fit(&kept, |v| v.capacity() >= 1 << 21), None);
    }

    #[test]
    fn the_pool_stays_bounded() {
        let kept = Kept::new(3);
        kept.give(0..2);
        kept.give(10..20);
        assert_eq!(*kept.lock(), [0, 1, 10]);
        assert_eq!(kept.take(), Some(10));
    }
}
