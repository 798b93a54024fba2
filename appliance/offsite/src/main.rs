//! `offsite`: the command-line face of the appliance.
//!
//! Library crates never print; this binary decides what the user sees and which exit code they get:
//! 0 success, 1 error, 2 bad usage, 3 data failed authentication (tampered, truncated, wrong key or path),
//! 4 a backup finished but some entries could not be backed up (listed in its report), or a restore could
//! not write some files here (listed on stderr).

mod cli_backup;
mod cli_bundle;
mod cli_restore;
mod cli_rsync;
mod cli_seal;
mod cli_serve;
mod tree;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Encrypted, rsync-friendly off-site backup for NAS boxes.
#[derive(Parser)]
#[command(name = "offsite", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a new config from the embedded default (and a new key, if there is none).
    Init(cli_backup::InitArgs),
    /// Back up the configured shares into new snapshots on the target.
    Backup(cli_backup::BackupArgs),
    /// Run the appliance: the nightly backups on the config's schedule (until SIGTERM).
    Serve(cli_serve::ServeArgs),
    /// List the snapshots of each share on the target (time, files, size).
    Snapshots(cli_restore::SnapshotsArgs),
    /// List a folder of a snapshot with plaintext names.
    Ls(cli_restore::LsArgs),
    /// Restore files, folders or a whole share from a snapshot (verified), into a folder or a tar stream.
    Restore(cli_restore::RestoreArgs),
    /// Prove the target is restorable: check every manifest and authenticate the contents.
    Verify(cli_restore::VerifyArgs),
    /// Decrypt a snapshot folder copied off the target, with only the key (no config, no network).
    UnsealTree(cli_restore::UnsealTreeArgs),
    /// Create a new master key file (mode 0600; an existing file is never overwritten).
    Keygen(cli_seal::KeygenArgs),
    /// Encrypt one file into the sealed format (rsync-friendly, deterministic, authenticated).
    Seal(cli_seal::SealArgs),
    /// Decrypt and verify one sealed file; nothing is written unless the whole file is authentic.
    Unseal(cli_seal::UnsealArgs),
    /// Print the sealed form of a relative path (each component encrypted).
    SealName(cli_seal::SealNameArgs),
    /// Print the plaintext form of a sealed relative path.
    UnsealName(cli_seal::UnsealNameArgs),
    /// Copy a tree like `rsync -a`, with offsite's own rsync protocol client.
    Rsync(cli_rsync::RsyncArgs),
    /// Write the config (and with --with-keys the master key and SSH key) into a passphrase-sealed bundle.
    ExportBundle(cli_bundle::ExportArgs),
    /// Check a config bundle and apply it: key files first (never replaced), the config last, atomically.
    ImportBundle(cli_bundle::ImportArgs),
}

/// Makes glibc's `malloc` use one arena for all threads, unless the environment chose (`MALLOC_ARENA_MAX`
/// or `GLIBC_TUNABLES`).
///
/// By default glibc gives each thread that allocates an arena of its own (up to eight per core). A backup's
/// threads (the walk, its sizing helper, the sealing threads, the async one) hand buffers to each other,
/// and each arena keeps its own high-water mark of freed memory. Which thread drew which arena varied
/// from run to run, and so did the initial run's anonymous memory: 7.1–10.4 MiB at 100,000 files. With one
/// arena it is 6.6–8.2 MiB, at the same CPU: `tcache` serves the small allocations without the lock
/// (docs/BENCHMARKS.md, "Update 28 Nov 2026 (nineteenth session)"). musl's allocator has no arenas.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn one_malloc_arena() {
    let tunables = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
    if std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || tunables
            .as_encoded_bytes()
            .windows(9)
            .any(|w| w == b"arena_max")
    {
        return;
    }
    // SAFETY: called first thing in `main`, before any other thread exists; `mallopt` only sets one of
    // malloc's parameters, and a value it refuses leaves the default (its result is then 0).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_malloc_arena() {}

/// `OFFSITE_LOG=error|warn|info|debug|trace` turns the libraries' tracing logs on (stderr).
fn init_logs() {
    let Ok(level) = std::env::var("OFFSITE_LOG") else {
        return;
    };
    let level = level
        .parse::<tracing_subscriber::filter::LevelFilter>()
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

/// Commands that choose their own exit status on success.
fn exit(r: anyhow::Result<ExitCode>) -> anyhow::Result<()> {
    match r {
        Ok(code) if code == ExitCode::SUCCESS => Ok(()),
        Ok(code) => Err(anyhow::Error::new(Coded(code))),
        Err(e) => Err(e),
    }
}

/// An exit status already explained on stderr.
#[derive(Debug)]
struct Coded(ExitCode);

impl std::fmt::Display for Coded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("finished with problems (listed above)")
    }
}

impl std::error::Error for Coded {}

fn main() -> ExitCode {
    one_malloc_arena();
    let cli = Cli::parse();
    init_logs();
    let result = match cli.command {
        Command::Backup(a) => match cli_backup::backup(a) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::Restore(a) => exit(cli_restore::restore(a)),
        Command::Verify(a) => exit(cli_restore::verify(a)),
        Command::UnsealTree(a) => exit(cli_restore::unseal_tree(a)),
        Command::Snapshots(a) => cli_restore::snapshots(a),
        Command::Ls(a) => cli_restore::ls(a),
        Command::Init(a) => cli_backup::init(a),
        Command::Serve(a) => cli_serve::serve(a),
        Command::Keygen(a) => cli_seal::keygen(a),
        Command::Seal(a) => cli_seal::seal(a),
        Command::Unseal(a) => cli_seal::unseal(a),
        Command::SealName(a) => cli_seal::seal_name(a),
        Command::UnsealName(a) => cli_seal::unseal_name(a),
        Command::Rsync(a) => cli_rsync::run(a),
        Command::ExportBundle(a) => cli_bundle::export(a),
        Command::ImportBundle(a) => cli_bundle::import(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(Coded(code)) = err.downcast_ref::<Coded>() {
                return *code;
            }
            eprintln!("offsite: {err:#}");
            let integrity = err.chain().any(|e| {
                e.downcast_ref::<seal::SealError>()
                    .is_some_and(|s| s.is_integrity())
                    || e.is::<cli_restore::IntegrityError>()
            });
            ExitCode::from(if integrity { 3 } else { 1 })
        }
    }
}
