//! The state folder's lock: two runs of one config never overlap (a nightly run, "run now", a command-line
//! backup). It is an `flock` on `<state_dir>/lock`, released by the kernel when the process holding it
//! ends in any way, so a crash or a `kill -9` cannot leave it stale.
//!
//! A run that finds the lock taken waits [`GRACE`] before it gives up. An `flock` belongs to the open file,
//! and a process that another thread of the holder forks (a local `rsync --server`, a test's helper) holds
//! a copy of every descriptor from the fork until its `exec` closes them: for that instant, which can last
//! milliseconds on a loaded box, a lock its holder has already dropped still looks taken.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::Error;

/// Held for the duration of a run; dropping it releases the lock.
#[derive(Debug)]
pub struct StateLock {
    _file: fs::File,
}

/// How long a run waits for a taken lock before it reports that another run holds it.
pub const GRACE: Duration = Duration::from_secs(3);

/// How often a waiting run tries again.
const RETRY: Duration = Duration::from_millis(25);

impl StateLock {
    /// Takes the lock, or fails at once if another run holds it.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, Error> {
        Self::try_acquire(state_dir)?.ok_or_else(|| Self::busy(state_dir))
    }

    /// Takes the lock, waiting up to `grace` while it is taken (see the module's note on forks).
    pub async fn acquire_within(state_dir: &Path, grace: Duration) -> Result<StateLock, Error> {
        let deadline = Instant::now() + grace;
        loop {
            if let Some(lock) = Self::try_acquire(state_dir)? {
                return Ok(lock);
            }
            if Instant::now() >= deadline {
                return Err(Self::busy(state_dir));
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// The lock, or `None` if it is taken.
    fn try_acquire(state_dir: &Path) -> Result<Option<StateLock>, Error> {
        let ctx = || format!("state folder {}", state_dir.display());
        fs::create_dir_all(state_dir).map_err(|e| Error::new(ctx(), e))?;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(state_dir.join("lock"))
            .map_err(|e| Error::new(ctx(), e))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(StateLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(Error::new(ctx(), e)),
        }
    }

    fn busy(state_dir: &Path) -> Error {
        Error::new(
            format!("state folder {}", state_dir.display()),
            "another backup with this config is running",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// Another process (locked with util-linux `flock`, the same flock(2)) holds the lock, then is killed
    /// with SIGKILL: the lock is refused while it lives and free right after.
    #[test]
    fn overlapping_runs_are_refused_and_a_killed_holder_leaves_no_stale_lock() {
        let d = tempfile::tempdir().unwrap();
        // The shell opens the lock file, locks it and becomes `sleep`: one process holds it.
        let mut holder = Command::new("sh")
            .args(["-c", "exec 9>\"$1\" && flock 9 && exec sleep 60", "sh"])
            .arg(d.path().join("lock"))
            .stdin(Stdio::null())
            .spawn()
            .expect("sh and util-linux flock");
        let deadline = Instant::now() + Duration::from_secs(10);
        let err = loop {
            match StateLock::acquire(d.path()) {
                Err(e) => break e.to_string(),
                Ok(l) if Instant::now() < deadline => {
                    drop(l);
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(_) => panic!("the holder never took the lock"),
            }
        };
        assert!(
            err.contains("another backup with this config is running"),
            "{err}"
        );
        // Two in one process overlap too.
        holder.kill().unwrap();
        holder.wait().unwrap();
        let first = StateLock::acquire(d.path()).expect("free after the holder was killed");
        assert!(StateLock::acquire(d.path()).is_err());
        drop(first);
        StateLock::acquire(d.path()).unwrap();
    }

    /// A run waits out a holder that lets go within the grace, and gives up on one that does not.
    #[test]
    fn a_waiting_run_takes_a_lock_freed_within_the_grace() {
        let d = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let held = StateLock::acquire(d.path()).unwrap();
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        let started = Instant::now();
        let lock = rt.block_on(StateLock::acquire_within(d.path(), Duration::from_secs(30)));
        assert!(lock.is_ok(), "{lock:?}");
        assert!(started.elapsed() >= Duration::from_millis(150));
        letting_go.join().unwrap();

        let started = Instant::now();
        let err = rt
            .block_on(StateLock::acquire_within(
                d.path(),
                Duration::from_millis(300),
            ))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("another backup with this config is running"),
            "{err}"
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        drop(lock);
    }
}
