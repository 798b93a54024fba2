//! The state folder's lock: two runs of one config never overlap (a nightly run, "run now", a command-line
//! backup). It is an `flock` on `<state_dir>/lock`, released by the kernel when the process holding it
//! ends in any way, so a crash or a `kill -9` cannot leave it stale.

use std::fs;
use std::path::Path;

use crate::Error;

/// Held for the duration of a run; dropping it releases the lock.
#[derive(Debug)]
pub struct StateLock {
    _file: fs::File,
}

impl StateLock {
    /// Takes the lock, or fails at once if another run holds it.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, Error> {
        let ctx = || format!("state folder {}", state_dir.display());
        fs::create_dir_all(state_dir).map_err(|e| Error::new(ctx(), e))?;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(state_dir.join("lock"))
            .map_err(|e| Error::new(ctx(), e))?;
        match file.try_lock() {
            Ok(()) => Ok(StateLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(Error::new(
                ctx(),
                "another backup with this config is running",
            )),
            Err(fs::TryLockError::Error(e)) => Err(Error::new(ctx(), e)),
        }
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
}
