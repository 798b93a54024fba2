//! `usb` (package `offsite-usb`): notices a USB key with a config bundle on it.
//!
//! [`watch`] looks at the file systems mounted on folders that match the configured patterns (by default
//! `/media/*`, `/mnt/usb*`, `/run/media/*/*`: where udev rules, desktop automounters and people mount
//! removable drives) for one file name, and reports each file it finds with its bytes. It reads the mount
//! table (`/proc/self/mountinfo`) once at start and again whenever the kernel says the table changed:
//! the file signals `POLLPRI` on every mount and unmount, so the watcher's thread sleeps in `poll(2)` and
//! costs nothing between mounts, yet reacts within a second.
//!
//! Only mount points are looked at (a folder that merely matches a pattern is not), each once per mount:
//! a key that stays plugged in is reported once; unplugged and plugged in again, it is reported again.
//! The file must be a regular file (not a symlink) no larger than the caller's limit; it is only read,
//! never executed. Nothing here prints: findings go to the caller's callback.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};

/// The kernel's mount table of this process's mount namespace.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One mounted file system: the kernel's mount id and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mount {
    pub id: u64,
    pub point: PathBuf,
}

/// A file found on a newly mounted file system.
#[derive(Debug)]
pub struct Found {
    pub mount_point: PathBuf,
    pub file: PathBuf,
    /// Its bytes, or why they could not be read (not a regular file, too large, unreadable).
    pub bytes: Result<Vec<u8>, String>,
}

/// What to watch for.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Absolute patterns for mount points; `*`, `?` and `[…]` match within one path component.
    pub patterns: Vec<String>,
    /// The file's name in the mount point's top folder.
    pub file_name: String,
    /// Files larger than this are reported as errors, not read whole.
    pub max_len: u64,
}

/// Parses `/proc/self/mountinfo` text: the mount id (field 1) and mount point (field 5, with the kernel's
/// octal escapes for space, tab, newline and backslash undone). Malformed lines are skipped.
pub fn parse_mountinfo(text: &[u8]) -> Vec<Mount> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut fields = line.split(|&b| b == b' ');
            let id = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
            let point = fields.nth(3)?;
            Some(Mount {
                id,
                point: PathBuf::from(OsString::from_vec(unescape(point))),
            })
        })
        .collect()
}

/// Undoes the kernel's `\ooo` escapes in a mountinfo field.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field.get(i + 1..i + 4).filter(|d| {
            field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3'
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

/// The compiled patterns; an invalid one is an error naming it.
pub fn matcher(patterns: &[String]) -> Result<globset::GlobSet, String> {
    let mut set = globset::GlobSetBuilder::new();
    for p in patterns {
        let glob = globset::GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("usb.watch: {p:?}: {e}"))?;
        set.add(glob);
    }
    set.build().map_err(|e| format!("usb.watch: {e}"))
}

/// Reads `dir/name` if it is a regular file of at most `max_len` bytes; `None` if there is no such entry.
pub fn read_candidate(dir: &Path, name: &str, max_len: u64) -> Option<Found> {
    let file = dir.join(name);
    let meta = match file.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            return Some(Found {
                mount_point: dir.to_owned(),
                bytes: Err(format!("{}: {e}", file.display())),
                file,
            });
        }
    };
    let bytes = if !meta.file_type().is_file() {
        Err(format!("{}: not a regular file", file.display()))
    } else if meta.len() > max_len {
        Err(format!(
            "{}: {} bytes, larger than the limit of {max_len}",
            file.display(),
            meta.len()
        ))
    } else {
        let mut buf = Vec::with_capacity(meta.len() as usize);
        std::fs::File::open(&file)
            .and_then(|f| f.take(max_len + 1).read_to_end(&mut buf))
            .map_err(|e| format!("{}: {e}", file.display()))
            .and_then(|n| {
                if n as u64 > max_len {
                    Err(format!(
                        "{}: larger than the limit of {max_len}",
                        file.display()
                    ))
                } else {
                    Ok(buf)
                }
            })
    };
    Some(Found {
        mount_point: dir.to_owned(),
        file,
        bytes,
    })
}

/// The mount points matching `patterns` now, sorted.
pub fn mounted(patterns: &[String]) -> Result<Vec<PathBuf>, String> {
    let set = matcher(patterns)?;
    let text = std::fs::read(MOUNTINFO).map_err(|e| format!("{MOUNTINFO}: {e}"))?;
    let mut v: Vec<PathBuf> = parse_mountinfo(&text)
        .into_iter()
        .map(|m| m.point)
        .filter(|p| set.is_match(p))
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// This process may create files in `dir` (a read-only mount says no).
pub fn writable(dir: &Path) -> bool {
    rustix::fs::access(
        dir,
        rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
    )
    .is_ok()
}

/// The mount-table side of the watcher: which matching mounts are new since the last look.
pub struct Scanner {
    set: globset::GlobSet,
    seen: HashSet<Mount>,
}

impl Scanner {
    pub fn new(patterns: &[String]) -> Result<Scanner, String> {
        Ok(Scanner {
            set: matcher(patterns)?,
            seen: HashSet::new(),
        })
    }

    /// The matching mounts in `mounts` that were not there at the last call (a mount id the kernel
    /// reuses for another mount at the same point counts as new only after an unmount was seen).
    pub fn new_mounts(&mut self, mounts: Vec<Mount>) -> Vec<Mount> {
        let now: HashSet<Mount> = mounts
            .into_iter()
            .filter(|m| self.set.is_match(&m.point))
            .collect();
        let mut fresh: Vec<Mount> = now.difference(&self.seen).cloned().collect();
        fresh.sort_by(|a, b| a.point.cmp(&b.point));
        self.seen = now;
        fresh
    }
}

/// Starts a thread that reports every `file_name` found on a newly mounted matching file system to
/// `on_found`, first for what is mounted now, then after each change of the mount table. It ends when
/// `on_found` returns `false` or the mount table cannot be read any more. Returns an error at once if the
/// patterns are invalid or the mount table cannot be opened.
pub fn watch(
    opts: WatchOptions,
    on_found: impl FnMut(Found) -> bool + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, String> {
    let scanner = Scanner::new(&opts.patterns)?;
    let table = std::fs::File::open(MOUNTINFO).map_err(|e| format!("{MOUNTINFO}: {e}"))?;
    std::thread::Builder::new()
        .name("usb-watch".into())
        .spawn(move || watch_loop(opts, scanner, table, on_found))
        .map_err(|e| format!("starting the USB watcher: {e}"))
}

fn watch_loop(
    opts: WatchOptions,
    mut scanner: Scanner,
    table: std::fs::File,
    mut on_found: impl FnMut(Found) -> bool,
) {
    loop {
        let Ok(text) = std::fs::read(MOUNTINFO) else {
            return;
        };
        for m in scanner.new_mounts(parse_mountinfo(&text)) {
            if let Some(found) = read_candidate(&m.point, &opts.file_name, opts.max_len)
                && !on_found(found)
            {
                return;
            }
        }
        // At most about three looks a second, however busy the mount table is (the next look sees
        // whatever changed meanwhile; an unmount and a mount within one pause look like no change).
        std::thread::sleep(Duration::from_millis(300));
        // The first poll after opening reports the table as changed (the file's event counter starts
        // behind the namespace's); later ones block until a mount or unmount.
        let mut fds = [PollFd::new(&table, PollFlags::PRI)];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_is_parsed_with_escapes() {
        let text = b"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
            95 22 8:17 / /media/USB\\040KEY rw,nosuid shared:50 - vfat /dev/sdb1 ro\n\
            96 22 8:18 / /mnt/usb\\134x\\011y rw - vfat /dev/sdb2 ro\n\
            garbage\n";
        let m = parse_mountinfo(text);
        assert_eq!(
            m,
            vec![
                Mount {
                    id: 22,
                    point: "/".into()
                },
                Mount {
                    id: 95,
                    point: "/media/USB KEY".into()
                },
                Mount {
                    id: 96,
                    point: "/mnt/usb\\x\ty".into()
                },
            ]
        );
        assert_eq!(unescape(b"a\\0\\999\\"), b"a\\0\\999\\");
    }

    fn mount(id: u64, p: &str) -> Mount {
        Mount {
            id,
            point: p.into(),
        }
    }

    #[test]
    fn only_new_matching_mounts_are_reported() {
        let patterns: Vec<String> = ["/media/*", "/mnt/usb*", "/run/media/*/*"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut s = Scanner::new(&patterns).unwrap();
        let first = s.new_mounts(vec![
            mount(1, "/"),
            mount(2, "/media/key"),
            mount(3, "/media/a/b"),
            mount(4, "/mnt/usb1"),
            mount(5, "/mnt/data"),
            mount(6, "/run/media/ann/KEY"),
        ]);
        let points: Vec<_> = first.iter().map(|m| m.point.clone()).collect();
        assert_eq!(
            points,
            vec![
                PathBuf::from("/media/key"),
                "/mnt/usb1".into(),
                "/run/media/ann/KEY".into()
            ]
        );
        // Still mounted: nothing new. Unmounted and mounted again: new.
        assert!(s.new_mounts(vec![mount(2, "/media/key")]).is_empty());
        assert!(s.new_mounts(vec![]).is_empty());
        assert_eq!(s.new_mounts(vec![mount(2, "/media/key")]).len(), 1);
        assert!(Scanner::new(&["/media/[x".to_string()]).is_err());
    }

    #[test]
    fn candidates_must_be_small_regular_files() {
        let d = tempfile::tempdir().unwrap();
        assert!(read_candidate(d.path(), "offsite-bundle", 10).is_none());
        std::fs::write(d.path().join("offsite-bundle"), b"0123456789").unwrap();
        let f = read_candidate(d.path(), "offsite-bundle", 10).unwrap();
        assert_eq!(f.bytes.unwrap(), b"0123456789");
        let f = read_candidate(d.path(), "offsite-bundle", 9).unwrap();
        assert!(f.bytes.unwrap_err().contains("larger"));
        let e = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            d.path().join("offsite-bundle"),
            e.path().join("offsite-bundle"),
        )
        .unwrap();
        let f = read_candidate(e.path(), "offsite-bundle", 10).unwrap();
        assert!(f.bytes.unwrap_err().contains("not a regular file"));
    }

    /// A real mount (a read-only bind mount of a folder with the file) wakes the watcher. Needs
    /// CAP_SYS_ADMIN (tests run as root on CI); without it the test says so and fails.
    #[test]
    fn a_bind_mount_is_noticed_without_polling() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("key");
        let media = d.path().join("media");
        let point = media.join("usb0");
        std::fs::create_dir_all(&key).unwrap();
        std::fs::create_dir_all(&point).unwrap();
        std::fs::write(key.join("offsite-bundle"), b"bundle bytes").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let _thread = watch(
            WatchOptions {
                patterns: vec![format!("{}/*", media.display())],
                file_name: "offsite-bundle".into(),
                max_len: 1 << 20,
            },
            move |f| tx.send(f).is_ok(),
        )
        .unwrap();
        // Nothing is mounted there yet.
        std::thread::sleep(Duration::from_millis(500));
        assert!(rx.try_recv().is_err());
        let status = std::process::Command::new("mount")
            .args(["--bind", "-o", "ro"])
            .arg(&key)
            .arg(&point)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mount --bind failed: this test needs root (CAP_SYS_ADMIN)"
        );
        let found = rx.recv_timeout(Duration::from_secs(5));
        let listed = mounted(&[format!("{}/*", media.display())]);
        let (ro, rw) = (writable(&point), writable(&key));
        let _ = std::process::Command::new("umount").arg(&point).status();
        assert_eq!(listed.unwrap(), std::slice::from_ref(&point));
        assert!(!ro, "a read-only mount is not writable");
        assert!(rw);
        let found = found.expect("no report within 5 s");
        assert_eq!(found.mount_point, point);
        assert_eq!(found.bytes.unwrap(), b"bundle bytes");
    }
}
