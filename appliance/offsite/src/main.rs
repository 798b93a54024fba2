//! `offsite`: the command-line face of the appliance.
//!
//! Library crates never print; this binary decides what the user sees and which exit code they get:
//! 0 success, 1 error, 2 bad usage, 3 data failed authentication (tampered, truncated, wrong key or path),
//! 4 a backup finished but some entries could not be backed up (listed in its report).

mod cli_backup;
mod cli_rsync;
mod cli_seal;
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
}

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs();
    let result = match cli.command {
        Command::Backup(a) => match cli_backup::backup(a) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::Init(a) => cli_backup::init(a),
        Command::Keygen(a) => cli_seal::keygen(a),
        Command::Seal(a) => cli_seal::seal(a),
        Command::Unseal(a) => cli_seal::unseal(a),
        Command::SealName(a) => cli_seal::seal_name(a),
        Command::UnsealName(a) => cli_seal::unseal_name(a),
        Command::Rsync(a) => cli_rsync::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("offsite: {err:#}");
            let integrity = err.chain().any(|e| {
                e.downcast_ref::<seal::SealError>()
                    .is_some_and(|s| s.is_integrity())
            });
            ExitCode::from(if integrity { 3 } else { 1 })
        }
    }
}
