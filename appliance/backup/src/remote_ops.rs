//! What the engine asks of the target besides pushing files: list a share's snapshots, create the share's
//! folder, delete snapshots. All of it goes through the rsync protocol (there is no shell on the other
//! side to rely on: a restricted key may only allow `rsync --server`).

use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use remote::{Remote, Target};
use rsync_wire::{EntryKind, FileEntry, FilterRule, PullOptions, PushOptions};

use crate::Error;
use crate::config::TargetConfig;
use crate::manifest::MANIFEST_NAME;
use crate::snapshot::SnapshotId;

/// The `remote` crate's target for a config.
pub fn remote_target(t: &TargetConfig) -> Target {
    match &t.host {
        None => Target::Local {
            rsync_path: t.rsync_path.clone().into(),
        },
        Some(host) => {
            let mut ssh = offsite_ssh::SshTarget::new(
                host,
                t.user.clone(),
                t.identity_file.clone().unwrap_or_default(),
                t.known_hosts.clone().unwrap_or_default(),
            )
            .with_port(t.port);
            ssh.inactivity_timeout = Some(Duration::from_secs(t.timeout_secs.saturating_mul(2)));
            Target::Ssh {
                ssh: Box::new(ssh),
                rsync_path: t.rsync_path.clone(),
            }
        }
    }
}

/// Where a target is, for messages.
pub fn describe(t: &TargetConfig) -> String {
    match &t.host {
        Some(h) => format!("{}@{h}:{}", t.user, t.path),
        None => t.path.clone(),
    }
}

/// A share's folder on the target, as found.
#[derive(Debug, Clone, Default)]
pub struct ShareOnTarget {
    /// The share's folder exists.
    pub exists: bool,
    /// Snapshot folders, oldest first, with "has a manifest" (complete).
    pub snapshots: Vec<(SnapshotId, bool)>,
}

impl ShareOnTarget {
    pub fn newest_complete(&self) -> Option<SnapshotId> {
        self.snapshots.iter().rev().find(|s| s.1).map(|s| s.0)
    }
}

fn base_path(t: &TargetConfig) -> Vec<u8> {
    let mut p = t.path.as_bytes().to_vec();
    while p.len() > 1 && p.ends_with(b"/") {
        p.pop();
    }
    p
}

/// `<target.path>/<share>` (and deeper parts), as the remote sees it.
pub fn share_path(t: &TargetConfig, share: &str, rest: &[&str]) -> Vec<u8> {
    let mut p = base_path(t);
    for part in std::iter::once(share).chain(rest.iter().copied()) {
        if !p.ends_with(b"/") {
            p.push(b'/');
        }
        p.extend_from_slice(part.as_bytes());
    }
    p
}

/// The `--link-dest` argument for snapshot `id`: absolute when the target path is (a restricted key's
/// `rrsync` refuses `..` and reads a leading `/` as the root of its folder), else relative to the new
/// snapshot folder.
pub fn link_dest_path(t: &TargetConfig, share: &str, id: &SnapshotId) -> Vec<u8> {
    if t.path.starts_with('/') {
        share_path(t, share, &[&id.to_string()])
    } else {
        format!("../{id}").into_bytes()
    }
}

async fn run_list(
    remote: &Remote,
    t: &TargetConfig,
    path: &[u8],
    filters: Vec<FilterRule>,
) -> Result<Vec<FileEntry>, Error> {
    let mut opts = PullOptions {
        filters,
        ..PullOptions::default()
    };
    opts.sender.timeout_secs = Some(t.timeout_secs);
    let argv = rsync_wire::args::sender_args(&opts.sender, &[path])
        .map_err(|e| Error::new(format!("listing {}", String::from_utf8_lossy(path)), e))?;
    let session = remote
        .open(&argv)
        .await
        .map_err(|e| Error::new(format!("starting rsync on {}", remote.describe()), e))?;
    rsync_wire::list(session, &opts, &mut |_| {})
        .await
        .map_err(|e| {
            Error::new(
                format!(
                    "listing {} on {}",
                    String::from_utf8_lossy(path),
                    remote.describe()
                ),
                e,
            )
        })
}

/// Lists the snapshots of `share` (one listing of the target folder, filtered to snapshot folders and
/// their manifests).
pub async fn list_share(
    remote: &Remote,
    t: &TargetConfig,
    share: &str,
) -> Result<ShareOnTarget, Error> {
    let mut base = base_path(t);
    if !base.ends_with(b"/") {
        base.push(b'/');
    }
    let rules = vec![
        FilterRule::Include(format!("/{share}/").into_bytes()),
        FilterRule::Include(format!("/{share}/*/").into_bytes()),
        FilterRule::Include(format!("/{share}/*/{MANIFEST_NAME}").into_bytes()),
        FilterRule::Exclude(b"*".to_vec()),
    ];
    let entries = run_list(remote, t, &base, rules).await?;
    let mut found = ShareOnTarget::default();
    let prefix = format!("{share}/");
    let mut complete = std::collections::HashSet::new();
    for e in &entries {
        let name = String::from_utf8_lossy(&e.name);
        if name == share && e.is_dir() {
            found.exists = true;
        } else if let Some(rest) = name.strip_prefix(&prefix) {
            match rest.split_once('/') {
                None if e.is_dir() => {
                    if let Some(id) = SnapshotId::parse(rest) {
                        found.snapshots.push((id, false));
                    }
                }
                Some((snap, MANIFEST_NAME)) if matches!(e.kind, EntryKind::File { .. }) => {
                    if let Some(id) = SnapshotId::parse(snap) {
                        complete.insert(id);
                    }
                }
                _ => {}
            }
        }
    }
    for s in &mut found.snapshots {
        s.1 = complete.contains(&s.0);
    }
    found.snapshots.sort();
    Ok(found)
}

async fn push_nothing(
    remote: &Remote,
    dest: &[u8],
    opts: PushOptions,
    root_mtime: i64,
) -> Result<(), Error> {
    let argv = rsync_wire::args::server_args(&opts.server, dest)
        .map_err(|e| Error::new("building the rsync command", e))?;
    let session = remote
        .open(&argv)
        .await
        .map_err(|e| Error::new(format!("starting rsync on {}", remote.describe()), e))?;
    let flist = rsync_wire::FileList::new(vec![FileEntry::dir(".", root_mtime, 0o700)], root_mtime)
        .map_err(|e| Error::new("building a file list", e))?;
    rsync_wire::push_list(session, &flist, &mut NoContent, &opts, &mut |_| {})
        .await
        .map(|_| ())
        .map_err(|e| {
            Error::new(
                format!(
                    "writing {} on {}",
                    String::from_utf8_lossy(dest),
                    remote.describe()
                ),
                e,
            )
        })
}

/// Creates `<target.path>/<share>/` (the target path itself must exist).
pub async fn create_share_dir(
    remote: &Remote,
    t: &TargetConfig,
    share: &str,
    now: i64,
) -> Result<(), Error> {
    let mut opts = PushOptions::default();
    opts.server.timeout_secs = Some(t.timeout_secs);
    push_nothing(remote, &share_path(t, share, &[]), opts, now).await
}

/// Deletes whole snapshot folders of `share`: a push of an empty list with `--delete` and filter rules
/// that select exactly those folders (everything else is protected by `- *`).
pub async fn delete_snapshots(
    remote: &Remote,
    t: &TargetConfig,
    share: &str,
    ids: &[SnapshotId],
    now: i64,
) -> Result<(), Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut opts = PushOptions::default();
    opts.server.timeout_secs = Some(t.timeout_secs);
    opts.server.delete = true;
    opts.filters = ids
        .iter()
        .map(|id| FilterRule::Include(format!("/{id}/***").into_bytes()))
        .collect();
    opts.filters.push(FilterRule::Exclude(b"*".to_vec()));
    let mut dest = share_path(t, share, &[]);
    dest.push(b'/');
    push_nothing(remote, &dest, opts, now).await
}

/// A content source for lists without files.
struct NoContent;

impl rsync_wire::ContentSource for NoContent {
    type Reader = std::io::Cursor<Vec<u8>>;
    async fn open(&mut self, _: usize, e: &FileEntry) -> std::io::Result<Self::Reader> {
        Err(std::io::Error::other(format!(
            "no content for {}",
            std::ffi::OsStr::from_bytes(&e.name).to_string_lossy()
        )))
    }
}

/// Free bytes where the target keeps its backups, when the target tells: a folder target by `statvfs`,
/// an SSH target by running `df -Pk` there. rsync itself has no such question, and a key restricted to
/// `rrsync` may run nothing else: then `Ok(None)`.
pub async fn free_space(t: &TargetConfig) -> Result<Option<u64>, Error> {
    let Some(host) = &t.host else {
        let path = std::path::Path::new(&t.path);
        let st = rustix::fs::statvfs(path)
            .map_err(|e| Error::new(format!("free space of {}", path.display()), e))?;
        return Ok(Some(st.f_bavail.saturating_mul(st.f_frsize)));
    };
    let Target::Ssh { ssh, .. } = remote_target(t) else {
        return Ok(None);
    };
    let what = || format!("asking {host} for its free space");
    let conn = offsite_ssh::connect(&ssh)
        .await
        .map_err(|e| Error::new(what(), e))?;
    let command = format!("df -Pk -- {}", offsite_ssh::shell_quote(&t.path));
    let mut process = conn
        .exec(&command)
        .await
        .map_err(|e| Error::new(what(), e))?;
    let mut out = Vec::new();
    if let Some(mut stdout) = process.take_stdout() {
        use tokio::io::AsyncReadExt;
        // A `df` line is short; a forced command that talks on is cut off.
        let _ = (&mut stdout).take(64 * 1024).read_to_end(&mut out).await;
    }
    let status = process.wait().await.map_err(|e| Error::new(what(), e))?;
    let _ = conn.close().await;
    Ok(status.success().then(|| parse_df(&out)).flatten())
}

/// The "Available" column (KiB) of `df -Pk`'s one data line, in bytes.
fn parse_df(out: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(out).ok()?;
    let line = text.lines().nth(1)?;
    let kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

#[cfg(test)]
mod free_space_tests {
    #[test]
    fn df_output() {
        let out = b"Filesystem     1024-blocks      Used Available Capacity Mounted on\n\
                    /dev/sda1        100000000  40000000  60000000      40% /srv\n";
        assert_eq!(super::parse_df(out), Some(60_000_000 * 1024));
        assert_eq!(super::parse_df(b"rrsync: command not allowed\n"), None);
        assert_eq!(super::parse_df(b""), None);
    }
}
