//! `offsite snapshots`, `ls`, `restore`, `verify` and `unseal-tree`: getting files back and proving that
//! they can be.
//!
//! Exit status: 0 everything restored or verified; 3 something on the target is not what the snapshot
//! recorded (missing, added, rolled back, swapped, tampered — or the wrong key); 4 some files could not be
//! written here (they exist and `--overwrite` was not given, or a local error); 1 the command failed.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use backup::Config;
use backup::remote_ops;
use backup::restore::catalog::{self, SummaryCache};
use backup::restore::local::{self, TreeRequest};
use backup::restore::pull::{self, EventFn, Mode};
use backup::restore::{CheckEvent, CheckReport, Problem};
use backup::snapshot::SnapshotId;
use clap::Args;
use remote::Remote;
use seal::{Keys, MasterKey};

use crate::cli_backup::{human, read_passphrase, runtime};

/// Exit status: the target's data is not what the snapshot recorded.
const EXIT_INTEGRITY: u8 = 3;
/// Exit status: some files could not be written here.
const EXIT_PARTIAL: u8 = 4;

#[derive(Args)]
pub struct KeyArgs {
    /// Passphrase file, for a passphrase-protected key file.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct SnapshotsArgs {
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Only this share (repeatable; default: every share in the config).
    #[arg(long, value_name = "NAME")]
    share: Vec<String>,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    key: KeyArgs,
}

#[derive(Args)]
pub struct LsArgs {
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    #[arg(long, value_name = "NAME")]
    share: String,
    /// Snapshot (default: the newest complete one).
    #[arg(long, value_name = "ID")]
    snapshot: Option<String>,
    /// Folder to list, relative to the share root (default: the root).
    #[arg(value_name = "PATH")]
    path: Option<PathBuf>,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    key: KeyArgs,
}

#[derive(Args)]
pub struct RestoreArgs {
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    #[arg(long, value_name = "NAME")]
    share: String,
    /// Snapshot (default: the newest complete one).
    #[arg(long, value_name = "ID")]
    snapshot: Option<String>,
    /// A file or folder to restore, relative to the share root (repeatable; default: everything).
    #[arg(long, value_name = "P")]
    path: Vec<PathBuf>,
    /// Folder to restore into (created if missing).
    #[arg(long, value_name = "DIR", required_unless_present = "tar")]
    to: Option<PathBuf>,
    /// Write a tar archive to FILE (`-`: stdout) instead of files.
    #[arg(long, value_name = "FILE|-", conflicts_with = "to")]
    tar: Option<PathBuf>,
    /// Replace files that exist in DIR.
    #[arg(long)]
    overwrite: bool,
    /// Print the report as JSON (on stderr with `--tar -`).
    #[arg(long)]
    json: bool,
    /// Entries per rsync session: memory is proportional to it, not to the number of files.
    #[arg(long, value_name = "N", default_value_t = pull::BATCH_ENTRIES)]
    batch_entries: usize,
    #[command(flatten)]
    key: KeyArgs,
}

#[derive(Args)]
pub struct VerifyArgs {
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Only this share (repeatable; default: every share in the config).
    #[arg(long, value_name = "NAME")]
    share: Vec<String>,
    /// Only this snapshot (default: every snapshot's manifest and listing, the newest one's contents).
    #[arg(long, value_name = "ID")]
    snapshot: Option<String>,
    /// Authenticate the contents of this percentage of files, chosen at random (the others: sizes).
    #[arg(long, value_name = "PERCENT", default_value_t = 100.0)]
    sample: f64,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Entries per rsync session: memory is proportional to it, not to the number of files.
    #[arg(long, value_name = "N", default_value_t = pull::BATCH_ENTRIES)]
    batch_entries: usize,
    #[command(flatten)]
    key: KeyArgs,
}

#[derive(Args)]
pub struct UnsealTreeArgs {
    /// The master key file.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// A snapshot folder copied off the target (`<share>/<YYYY-MM-DDTHHMMSSZ>/`).
    #[arg(value_name = "SRC")]
    src: PathBuf,
    /// Where the plaintext goes (created if missing).
    #[arg(value_name = "DST")]
    dst: PathBuf,
    /// The share's name (default: SRC's parent folder's name).
    #[arg(long, value_name = "NAME")]
    share: Option<String>,
    /// The snapshot's name (default: SRC's folder name).
    #[arg(long, value_name = "ID")]
    snapshot: Option<String>,
    /// Replace files that exist in DST.
    #[arg(long)]
    overwrite: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Passphrase file, for a passphrase-protected key file.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

fn load_keys(key_file: &Path, passphrase_file: Option<&Path>) -> Result<Keys> {
    let passphrase = read_passphrase(passphrase_file)?;
    let key = MasterKey::load(key_file, passphrase.as_deref())
        .with_context(|| format!("key file {}", key_file.display()))?;
    Ok(key.derive_keys())
}

async fn connect(config: &Config) -> Result<Remote> {
    let target = remote_ops::remote_target(&config.target);
    Remote::connect(&target)
        .await
        .with_context(|| format!("connecting to {}", remote_ops::describe(&config.target)))
}

/// A backup error; integrity failures keep their exit status.
fn lib_err(e: backup::Error) -> anyhow::Error {
    if e.is_integrity() {
        anyhow::Error::new(IntegrityError(e.to_string()))
    } else {
        anyhow::Error::msg(e.to_string())
    }
}

/// An error that means "the data is not authentic" (exit status 3).
#[derive(Debug)]
pub struct IntegrityError(String);

impl std::fmt::Display for IntegrityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IntegrityError {}

fn share_names(config: &Config, wanted: &[String]) -> Vec<String> {
    if wanted.is_empty() {
        config.shares.iter().map(|s| s.name.clone()).collect()
    } else {
        wanted.to_vec()
    }
}

fn time_text(secs: i64) -> String {
    backup::snapshot::local_time_text(secs)
}

pub fn snapshots(a: SnapshotsArgs) -> Result<()> {
    let config = Config::load(&a.config).map_err(anyhow::Error::msg)?;
    let keys = load_keys(&config.key_file, a.key.passphrase_file.as_deref())?;
    let mut cache = SummaryCache::load(&config.state_dir);
    let rt = runtime()?;
    let mut rows = Vec::new();
    rt.block_on(async {
        let remote = connect(&config).await?;
        for share in share_names(&config, &a.share) {
            let on = catalog::snapshots(&remote, &config.target, &share)
                .await
                .map_err(lib_err)?;
            for (id, complete) in &on.snapshots {
                let summary = match (complete, cache.get(&share, id)) {
                    (false, _) => None,
                    (true, Some(s)) => Some(s),
                    (true, None) => {
                        let mut m = catalog::fetch_manifest(
                            &remote,
                            &config.target,
                            &keys,
                            &share,
                            id,
                            &config.state_dir,
                        )
                        .await
                        .map_err(lib_err)?;
                        let s = m.summary().map_err(lib_err)?;
                        cache.put(&share, id, s);
                        Some(s)
                    }
                };
                rows.push((share.clone(), *id, summary));
            }
            cache.save(&share, &on);
        }
        let _ = remote.close().await;
        anyhow::Ok(())
    })?;
    if a.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(share, id, s)| {
                serde_json::json!({
                    "share": share,
                    "snapshot": id.to_string(),
                    "time": id.timestamp().as_second(),
                    "complete": s.is_some(),
                    "summary": s,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<12} {:<20} {:<20} {:>9} {:>10}",
        "SHARE", "SNAPSHOT", "TIME", "FILES", "SIZE"
    )?;
    for (share, id, s) in rows {
        let when = time_text(id.timestamp().as_second());
        match s {
            Some(s) => writeln!(
                out,
                "{share:<12} {:<20} {when:<20} {:>9} {:>10}",
                id.to_string(),
                s.files,
                human(s.bytes)
            )?,
            None => writeln!(
                out,
                "{share:<12} {:<20} {when:<20} {:>9} {:>10}",
                id.to_string(),
                "-",
                "incomplete"
            )?,
        }
    }
    Ok(())
}

fn mode_text(kind: backup::manifest::EntryKind, perms: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        backup::manifest::EntryKind::Dir => 'd',
        backup::manifest::EntryKind::Symlink => 'l',
        backup::manifest::EntryKind::File => '-',
    });
    for shift in [6, 3, 0] {
        let b = (perms >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn path_bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

pub fn ls(a: LsArgs) -> Result<()> {
    let config = Config::load(&a.config).map_err(anyhow::Error::msg)?;
    let keys = load_keys(&config.key_file, a.key.passphrase_file.as_deref())?;
    let dir = pull::normalize_paths(&[a.path.as_deref().map(path_bytes).unwrap_or_default()])
        .map_err(lib_err)?
        .pop()
        .unwrap_or_default();
    let rt = runtime()?;
    let (snap, entries) = rt.block_on(async {
        let remote = connect(&config).await?;
        let on = catalog::snapshots(&remote, &config.target, &a.share)
            .await
            .map_err(lib_err)?;
        let snap =
            catalog::choose_snapshot(&on, &a.share, a.snapshot.as_deref()).map_err(lib_err)?;
        let mut m = catalog::fetch_manifest(
            &remote,
            &config.target,
            &keys,
            &a.share,
            &snap,
            &config.state_dir,
        )
        .await
        .map_err(lib_err)?;
        let _ = remote.close().await;
        let entries = m.list_dir(&dir).map_err(lib_err)?;
        anyhow::Ok((snap, entries))
    })?;
    let name_of = |p: &[u8]| -> Vec<u8> { p.rsplit(|&b| b == b'/').next().unwrap_or(p).to_vec() };
    if a.json {
        let v: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "name": String::from_utf8_lossy(&name_of(&e.path)),
                    "path": String::from_utf8_lossy(&e.path),
                    "kind": format!("{:?}", e.kind).to_lowercase(),
                    "size": e.size,
                    "mtime": e.mtime,
                    "perms": e.perms,
                    "link": (!e.link.is_empty()).then(|| String::from_utf8_lossy(&e.link).into_owned()),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"share": a.share, "snapshot": snap.to_string(), "entries": v})
            )?
        );
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for e in entries {
        let size = match e.kind {
            backup::manifest::EntryKind::File => human(e.size),
            _ => "-".into(),
        };
        write!(
            out,
            "{} {:>10} {} ",
            mode_text(e.kind, e.perms),
            size,
            time_text(e.mtime)
        )?;
        out.write_all(&name_of(&e.path))?;
        match e.kind {
            backup::manifest::EntryKind::Dir => out.write_all(b"/")?,
            backup::manifest::EntryKind::Symlink => {
                out.write_all(b" -> ")?;
                out.write_all(&e.link)?;
            }
            backup::manifest::EntryKind::File => {}
        }
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Prints problems on stderr as they are found (and files, with `OFFSITE_LOG`).
fn printer() -> EventFn {
    Box::new(|ev: CheckEvent<'_>| {
        if let CheckEvent::Problem(p) = ev {
            eprintln!("offsite: {p}");
        }
    })
}

fn exit_for(reports: &[CheckReport]) -> ExitCode {
    let problems = reports.iter().flat_map(|r| r.problems.iter());
    let mut partial = false;
    for p in problems {
        match p.problem {
            Problem::Exists | Problem::Failed(_) => partial = true,
            _ => return ExitCode::from(EXIT_INTEGRITY),
        }
    }
    if partial
        || reports
            .iter()
            .any(|r| r.problem_count > r.problems.len() as u64)
    {
        ExitCode::from(EXIT_PARTIAL)
    } else {
        ExitCode::SUCCESS
    }
}

fn summary_line(verb: &str, r: &CheckReport) -> String {
    let mut s = format!(
        "offsite: {}/{}: {verb} {} files ({}), {} folders, {} symlinks; {} pulled",
        r.share,
        r.snapshot,
        r.files_ok,
        human(r.bytes_ok),
        r.dirs,
        r.symlinks,
        human(r.bytes_pulled)
    );
    if r.files_not_sampled > 0 {
        s.push_str(&format!(
            "; {} files checked by size only",
            r.files_not_sampled
        ));
    }
    if r.problem_count > 0 {
        s.push_str(&format!("; {} PROBLEMS", r.problem_count));
    }
    s
}

pub fn restore(a: RestoreArgs) -> Result<ExitCode> {
    let config = Config::load(&a.config).map_err(anyhow::Error::msg)?;
    let keys = load_keys(&config.key_file, a.key.passphrase_file.as_deref())?;
    let paths: Vec<Vec<u8>> = a.path.iter().map(|p| path_bytes(p)).collect();
    let paths = pull::normalize_paths(&paths).map_err(lib_err)?;
    let to_stdout = a.tar.as_deref() == Some(Path::new("-"));
    let rt = runtime()?;
    let report = rt.block_on(async {
        let remote = connect(&config).await?;
        let on = catalog::snapshots(&remote, &config.target, &a.share)
            .await
            .map_err(lib_err)?;
        let snap =
            catalog::choose_snapshot(&on, &a.share, a.snapshot.as_deref()).map_err(lib_err)?;
        let mode = match (&a.tar, &a.to) {
            (Some(t), _) if to_stdout => {
                let _ = t;
                Mode::Tar(Box::new(std::io::BufWriter::with_capacity(
                    64 * 1024,
                    std::io::stdout(),
                )))
            }
            (Some(t), _) => {
                if t.exists() && !a.overwrite {
                    bail!(
                        "{} exists; not overwriting it (--overwrite replaces it)",
                        t.display()
                    );
                }
                let f = std::fs::File::create(t)
                    .with_context(|| format!("creating {}", t.display()))?;
                Mode::Tar(Box::new(std::io::BufWriter::with_capacity(64 * 1024, f)))
            }
            (None, Some(to)) => Mode::Dir {
                to: to.clone(),
                overwrite: a.overwrite,
            },
            (None, None) => bail!("--to DIR or --tar FILE is needed"),
        };
        let r = pull::run_snapshot(
            &remote,
            &config.target,
            &keys,
            &config.state_dir,
            &a.share,
            &snap,
            &paths,
            mode,
            a.batch_entries,
            printer(),
        )
        .await
        .map_err(lib_err)?;
        let _ = remote.close().await;
        anyhow::Ok(r)
    })?;
    eprintln!("{}", summary_line("restored", &report));
    if a.json {
        let json = serde_json::to_string_pretty(&report)?;
        if to_stdout {
            eprintln!("{json}");
        } else {
            println!("{json}");
        }
    }
    Ok(exit_for(std::slice::from_ref(&report)))
}

pub fn verify(a: VerifyArgs) -> Result<ExitCode> {
    let config = Config::load(&a.config).map_err(anyhow::Error::msg)?;
    let keys = load_keys(&config.key_file, a.key.passphrase_file.as_deref())?;
    if !(0.0..=100.0).contains(&a.sample) {
        bail!("--sample {}: a percentage from 0 to 100", a.sample);
    }
    let rt = runtime()?;
    let reports = rt.block_on(async {
        let remote = connect(&config).await?;
        let mut reports = Vec::new();
        for share in share_names(&config, &a.share) {
            let on = catalog::snapshots(&remote, &config.target, &share)
                .await
                .map_err(lib_err)?;
            let snaps: Vec<(SnapshotId, f64)> = match &a.snapshot {
                Some(_) => vec![(
                    catalog::choose_snapshot(&on, &share, a.snapshot.as_deref())
                        .map_err(lib_err)?,
                    a.sample,
                )],
                None => {
                    let newest = on.newest_complete();
                    for (id, complete) in &on.snapshots {
                        if !complete {
                            eprintln!(
                                "offsite: {share}/{id}: incomplete snapshot (no manifest), skipped"
                            );
                        }
                    }
                    on.snapshots
                        .iter()
                        .filter(|s| s.1)
                        .map(|s| (s.0, if Some(s.0) == newest { a.sample } else { 0.0 }))
                        .collect()
                }
            };
            if snaps.is_empty() {
                eprintln!("offsite: {share}: no complete snapshot on the target");
            }
            for (id, sample) in snaps {
                let r = pull::run_snapshot(
                    &remote,
                    &config.target,
                    &keys,
                    &config.state_dir,
                    &share,
                    &id,
                    &[],
                    Mode::Verify {
                        sample_percent: sample,
                    },
                    a.batch_entries,
                    printer(),
                )
                .await
                .map_err(lib_err)?;
                eprintln!("{}", summary_line("verified", &r));
                reports.push(r);
            }
        }
        let _ = remote.close().await;
        anyhow::Ok(reports)
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(exit_for(&reports))
}

pub fn unseal_tree(a: UnsealTreeArgs) -> Result<ExitCode> {
    let keys = load_keys(&a.key, a.passphrase_file.as_deref())?;
    let implied = local::names_from_path(&a.src);
    let (share, snapshot) = match (a.share, a.snapshot, implied) {
        (Some(sh), Some(sn), _) => (sh, sn),
        (sh, sn, Some((ish, isn))) => (sh.unwrap_or(ish), sn.unwrap_or(isn)),
        _ => bail!(
            "{}: cannot tell the share and snapshot from this path; give --share and --snapshot",
            a.src.display()
        ),
    };
    let tmp = tempfile::tempdir().context("a temporary folder")?;
    let req = TreeRequest {
        src: &a.src,
        dst: &a.dst,
        share: &share,
        snapshot: &snapshot,
        overwrite: a.overwrite,
        tmp_dir: tmp.path(),
    };
    let report = local::unseal_tree(&keys, &req, printer()).map_err(lib_err)?;
    eprintln!("{}", summary_line("unsealed", &report));
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(exit_for(std::slice::from_ref(&report)))
}
