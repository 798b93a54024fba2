//! `offsite rsync`: the native rsync client, for people who know rsync and for debugging.
//!
//! Behaves like `rsync -a` (recursive, links, permissions, times) with rsync's trailing-slash rule.
//! Exactly one of SRC and DEST may be `[USER@]HOST:PATH` (reached with the embedded SSH client); with
//! both local, a local `rsync --server` receives.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use offsite_ssh::SshTarget;
use remote::{Remote, Target};
use rsync_wire::{AltDest, Event, MessageKind, PullOptions, PushOptions};

use crate::tree::{self, LocalFiles};

#[derive(Args)]
pub struct RsyncArgs {
    /// Delete files in DEST that are not in SRC (push only).
    #[arg(long)]
    delete: bool,
    /// Hard-link files unchanged from DIR (relative to DEST, as rsync); may be repeated (up to 20).
    #[arg(long, value_name = "DIR")]
    link_dest: Vec<OsString>,
    /// SSH port.
    #[arg(long, default_value_t = 22)]
    port: u16,
    /// SSH private key (default ~/.ssh/id_ed25519).
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// OpenSSH known_hosts file (default ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE")]
    known_hosts: Option<PathBuf>,
    /// The rsync program on the remote side (or the local one, for a local copy).
    #[arg(long, value_name = "CMD", default_value = "rsync")]
    rsync_path: String,
    /// Limit the transfer rate, in KiB/s (our writes for a push; the server's for a pull).
    #[arg(long, value_name = "KBPS")]
    bwlimit: Option<u64>,
    /// Stop after this many seconds without traffic (keepalives are sent meanwhile).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Print literal and matched bytes at the end.
    #[arg(long)]
    stats: bool,
    /// Only list SRC (name, size, mtime); DEST is not used.
    #[arg(long)]
    list_only: bool,
    /// Source: a local path, or [USER@]HOST:PATH. A trailing `/` means "the folder's contents".
    src: OsString,
    /// Destination: a local path, or [USER@]HOST:PATH.
    #[arg(required_unless_present = "list_only")]
    dest: Option<OsString>,
}

/// `[USER@]HOST:PATH`, as rsync reads it: a colon before any slash.
struct RemoteSpec {
    user: Option<String>,
    host: String,
    path: Vec<u8>,
}

fn remote_spec(arg: &OsString) -> Option<RemoteSpec> {
    let bytes = arg.as_bytes();
    let colon = bytes.iter().position(|&b| b == b':')?;
    if colon == 0 || bytes[..colon].contains(&b'/') {
        return None;
    }
    let host_part = std::str::from_utf8(&bytes[..colon]).ok()?;
    let (user, host) = match host_part.split_once('@') {
        Some((u, h)) => (Some(u.to_owned()), h.to_owned()),
        None => (None, host_part.to_owned()),
    };
    let path = match &bytes[colon + 1..] {
        b"" => b".".to_vec(),
        p => p.to_vec(),
    };
    Some(RemoteSpec { user, host, path })
}

fn home_file(name: &str) -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| OsString::from("/root"));
    Path::new(&home).join(".ssh").join(name)
}

impl RsyncArgs {
    fn target_for(&self, spec: Option<&RemoteSpec>) -> Target {
        match spec {
            None => Target::Local {
                rsync_path: OsString::from(&self.rsync_path),
            },
            Some(s) => {
                let user = s
                    .user
                    .clone()
                    .or_else(|| std::env::var("USER").ok())
                    .unwrap_or_else(|| "root".into());
                let identity = self
                    .identity
                    .clone()
                    .unwrap_or_else(|| home_file("id_ed25519"));
                let known = self
                    .known_hosts
                    .clone()
                    .unwrap_or_else(|| home_file("known_hosts"));
                let mut ssh = SshTarget::new(&s.host, user, identity, known).with_port(self.port);
                if let Some(t) = self.timeout {
                    ssh.inactivity_timeout = Some(Duration::from_secs(t.max(1) * 2));
                }
                Target::Ssh {
                    ssh: Box::new(ssh),
                    rsync_path: self.rsync_path.clone(),
                }
            }
        }
    }
}

fn show_event(e: Event<'_>) {
    match e {
        Event::Message { kind, text } => match kind {
            MessageKind::Info => eprintln!("{}", text.trim_end()),
            _ => eprintln!("remote: {}", text.trim_end()),
        },
        Event::LocalError { name, error } => {
            eprintln!("offsite: {}: {error}", String::from_utf8_lossy(name));
        }
        _ => {}
    }
}

pub fn run(a: RsyncArgs) -> Result<()> {
    crate::cli_backup::runtime()?.block_on(run_async(a))
}

async fn run_async(a: RsyncArgs) -> Result<()> {
    let src = remote_spec(&a.src);
    let dest = a.dest.as_ref().and_then(remote_spec);
    if src.is_some() && dest.is_some() {
        bail!("only one of SRC and DEST may be remote");
    }
    if a.list_only {
        return list(&a, src.as_ref()).await;
    }
    let Some(dest_arg) = a.dest.clone() else {
        bail!("DEST is required");
    };
    match src {
        Some(spec) => pull(&a, &spec, &dest_arg).await,
        None => push(&a, dest.as_ref(), &dest_arg).await,
    }
}

async fn connect(a: &RsyncArgs, spec: Option<&RemoteSpec>) -> Result<Remote> {
    let target = a.target_for(spec);
    Remote::connect(&target).await.with_context(|| match spec {
        Some(s) => format!("connecting to {}:{}", s.host, a.port),
        None => "starting the local rsync".into(),
    })
}

async fn push(a: &RsyncArgs, spec: Option<&RemoteSpec>, dest_arg: &OsString) -> Result<()> {
    let tree =
        tree::walk(&a.src).with_context(|| format!("reading {}", a.src.to_string_lossy()))?;
    for (path, err) in &tree.skipped {
        eprintln!("offsite: skipping {}: {err}", path.display());
    }
    let mut opts = PushOptions::default();
    opts.server.delete = a.delete;
    opts.server.timeout_secs = a.timeout;
    if !a.link_dest.is_empty() {
        opts.server.alt_dest = Some(AltDest::Link(
            a.link_dest.iter().map(|d| d.as_bytes().to_vec()).collect(),
        ));
    }
    let dest_path = spec.map_or_else(|| dest_arg.as_bytes().to_vec(), |s| s.path.clone());
    let argv = rsync_wire::args::server_args(&opts.server, &dest_path)?;
    let remote = connect(a, spec).await?;
    let session = remote
        .open(&argv)
        .await
        .with_context(|| format!("starting rsync on {}", remote.describe()))?;
    let mut files = LocalFiles { paths: &tree.paths };
    let what = || format!("pushing to {}", dest_arg.to_string_lossy());
    let session = remote::limit_rate(session, a.bwlimit);
    let stats = rsync_wire::push(session, tree.entries, &mut files, &opts, &mut show_event)
        .await
        .with_context(what)?;
    remote.close().await.ok();
    if a.stats {
        print_stats(
            stats.literal_bytes,
            stats.matched_bytes,
            stats.files_transferred,
            stats.bytes_sent,
            stats.bytes_received,
        );
    }
    if !tree.skipped.is_empty() {
        bail!(
            "{} entries could not be read (see above)",
            tree.skipped.len()
        );
    }
    Ok(())
}

/// The `--stats` lines, named as rsync names them.
fn print_stats(literal: u64, matched: u64, files: u64, sent: u64, received: u64) {
    println!("Literal data: {literal} bytes");
    println!("Matched data: {matched} bytes");
    println!("Files transferred: {files}");
    println!("Total bytes sent: {sent}");
    println!("Total bytes received: {received}");
}

fn pull_options(a: &RsyncArgs) -> PullOptions {
    let mut opts = PullOptions::default();
    opts.sender.timeout_secs = a.timeout;
    if let Some(kbps) = a.bwlimit {
        opts.sender.extra.push(format!("--bwlimit={kbps}").into());
    }
    opts
}

async fn pull(a: &RsyncArgs, spec: &RemoteSpec, dest_arg: &OsString) -> Result<()> {
    if a.delete || !a.link_dest.is_empty() {
        bail!("--delete and --link-dest are supported for pushes only");
    }
    let opts = pull_options(a);
    let argv = rsync_wire::args::sender_args(&opts.sender, &[&spec.path])?;
    let remote = connect(a, Some(spec)).await?;
    let session = remote
        .open(&argv)
        .await
        .with_context(|| format!("starting rsync on {}", remote.describe()))?;
    let dest = PathBuf::from(dest_arg);
    let stats = rsync_wire::pull(session, &dest, &opts, &mut show_event)
        .await
        .with_context(|| format!("pulling into {}", dest.display()))?;
    remote.close().await.ok();
    if a.stats {
        print_stats(
            stats.literal_bytes,
            stats.matched_bytes,
            stats.files_transferred,
            stats.bytes_sent,
            stats.bytes_received,
        );
    }
    Ok(())
}

async fn list(a: &RsyncArgs, spec: Option<&RemoteSpec>) -> Result<()> {
    let opts = pull_options(a);
    let path = spec.map_or_else(|| a.src.as_bytes().to_vec(), |s| s.path.clone());
    let argv = rsync_wire::args::sender_args(&opts.sender, &[&path])?;
    let remote = connect(a, spec).await?;
    let session = remote.open(&argv).await?;
    let entries = rsync_wire::list(session, &opts, &mut show_event)
        .await
        .with_context(|| format!("listing {}", a.src.to_string_lossy()))?;
    remote.close().await.ok();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for e in entries {
        use std::io::Write;
        let kind = match &e.kind {
            rsync_wire::EntryKind::Dir => 'd',
            rsync_wire::EntryKind::Symlink { .. } => 'l',
            rsync_wire::EntryKind::File { .. } => '-',
        };
        write!(out, "{kind}{:04o} {:>14} {} ", e.perms, e.size(), e.mtime)?;
        out.write_all(&e.name)?;
        if let rsync_wire::EntryKind::Symlink { target } = &e.kind {
            out.write_all(b" -> ")?;
            out.write_all(target)?;
        }
        out.write_all(b"\n")?;
    }
    Ok(())
}
