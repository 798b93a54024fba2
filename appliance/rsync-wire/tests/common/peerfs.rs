//! Real failure conditions on the server's side, for remote-error tests:
//! small or read-only tmpfs mounts (unmounted by a Drop guard, also when a
//! test panics) and an `rsync` that runs as `nobody` (root bypasses file
//! permissions, `nobody` does not). Each helper returns `None`, after
//! printing why, only when the facility itself is missing (not root, no
//! `mount`/`setpriv`, no CAP_SYS_ADMIN in a container).

use std::path::{Path, PathBuf};
use std::process::Command;

/// True when running as root (uid 0).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A tmpfs mounted by the test; unmounted on drop.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `"1m"`) at `path` (created if needed).
    pub fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        if !is_root() {
            eprintln!("SKIPPED: mounting a tmpfs needs root");
            return None;
        }
        std::fs::create_dir_all(path).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0755"))
            .arg("tmpfs")
            .arg(path)
            .output()
            .expect("run mount");
        if !o.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// Makes the mount read-only (`mount -o remount,ro`).
    pub fn remount_ro(&self) {
        let st = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(st.success(), "remount,ro {}", self.path.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a server process on its way out): detach it.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Writes `dir/rsync-as-nobody`, a `--rsync-path` style wrapper that runs the
/// real rsync as uid/gid 65534 with no supplementary groups.
pub fn rsync_as_nobody(dir: &Path) -> Option<PathBuf> {
    if !is_root() {
        eprintln!("SKIPPED: switching the server to nobody needs root");
        return None;
    }
    let probe = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: setpriv cannot switch to uid 65534 here");
        return None;
    }
    let p = dir.join("rsync-as-nobody");
    write_script(
        &p,
        "exec setpriv --reuid=65534 --regid=65534 --clear-groups rsync \"$@\"",
    );
    Some(p)
}

/// Writes an executable `/bin/sh` script with `body`.
pub fn write_script(p: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Makes `p` and its parents up to and including `base` (the test's temp
/// dir, created 0700) traversable (`o+x`), so that a server running as
/// `nobody` can reach the paths below it. Nothing above `base` is touched.
pub fn open_path_for_others(base: &Path, p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    assert!(
        p.starts_with(base),
        "{} not under {}",
        p.display(),
        base.display()
    );
    for a in p.ancestors().take_while(|a| a.starts_with(base)) {
        let mode = std::fs::metadata(a).unwrap().permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(a, std::fs::Permissions::from_mode(mode | 0o001)).unwrap();
        }
    }
}
