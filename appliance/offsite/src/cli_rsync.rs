//! `offsite rsync`: the native rsync client, for people who know rsync and for debugging.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use rsync_wire::{AltDest, Event, MessageKind, PushOptions};

use crate::tree::{self, LocalFiles};

#[derive(Args)]
pub struct RsyncArgs {
    /// Delete files in DEST that are not in SRC.
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
    /// The remote rsync command.
    #[arg(long, value_name = "CMD", default_value = "rsync")]
    rsync_path: OsString,
    /// Limit our sending rate, in KiB/s.
    #[arg(long, value_name = "KBPS")]
    bwlimit: Option<u64>,
    /// Print literal and matched bytes at the end.
    #[arg(long)]
    stats: bool,
    /// Source: a local path, or [USER@]HOST:PATH. A trailing `/` means "the folder's contents".
    src: OsString,
    /// Destination: a local path, or [USER@]HOST:PATH.
    dest: OsString,
}

/// `[USER@]HOST:PATH`, as rsync reads it: a colon before any slash.
fn remote_spec(arg: &OsString) -> Option<(Option<String>, String, OsString)> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let bytes = arg.as_bytes();
    let colon = bytes.iter().position(|&b| b == b':')?;
    if bytes[..colon].contains(&b'/') || colon == 0 {
        return None;
    }
    let host_part = std::str::from_utf8(&bytes[..colon]).ok()?;
    let path = OsString::from_vec(bytes[colon + 1..].to_vec());
    match host_part.split_once('@') {
        Some((user, host)) => Some((Some(user.to_owned()), host.to_owned(), path)),
        None => Some((None, host_part.to_owned(), path)),
    }
}

pub fn run(a: RsyncArgs) -> Result<()> {
    let remote_src = remote_spec(&a.src);
    let remote_dest = remote_spec(&a.dest);
    if remote_src.is_some() && remote_dest.is_some() {
        bail!("only one of SRC and DEST may be remote");
    }
    if remote_src.is_some() || remote_dest.is_some() {
        bail!(
            "remote (SSH) transfers are not available in this build yet; both paths must be local"
        );
    }
    if a.bwlimit.is_some() {
        bail!("--bwlimit is not available in this build yet");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(push_local(a))
}

async fn push_local(a: RsyncArgs) -> Result<()> {
    let tree =
        tree::walk(&a.src).with_context(|| format!("reading {}", a.src.to_string_lossy()))?;
    for (path, err) in &tree.skipped {
        eprintln!("offsite: skipping {}: {err}", path.display());
    }
    let mut opts = PushOptions::default();
    opts.server.delete = a.delete;
    if !a.link_dest.is_empty() {
        use std::os::unix::ffi::OsStrExt;
        opts.server.alt_dest = Some(AltDest::Link(
            a.link_dest.iter().map(|d| d.as_bytes().to_vec()).collect(),
        ));
    }
    let mut files = LocalFiles { paths: &tree.paths };
    let mut on_event = |e: Event<'_>| {
        if let Event::Message { kind, text } = e {
            match kind {
                MessageKind::Info => eprint!("{text}"),
                _ => eprint!("remote: {text}"),
            }
        }
    };
    let stats = rsync_wire::push_local(
        &a.rsync_path,
        std::path::Path::new(&a.dest),
        tree.entries,
        &mut files,
        &opts,
        &mut on_event,
    )
    .await
    .with_context(|| format!("pushing to {}", a.dest.to_string_lossy()))?;
    if a.stats {
        println!("Literal data: {} bytes", stats.literal_bytes);
        println!("Matched data: {} bytes", stats.matched_bytes);
        println!("Files transferred: {}", stats.files_transferred);
        println!("Total bytes sent: {}", stats.bytes_sent);
        println!("Total bytes received: {}", stats.bytes_received);
    }
    if !tree.skipped.is_empty() {
        bail!(
            "{} entries could not be read (see above)",
            tree.skipped.len()
        );
    }
    Ok(())
}
