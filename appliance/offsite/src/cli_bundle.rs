//! `offsite export-bundle` and `offsite import-bundle`: the config (and optionally the keys) sealed with a
//! passphrase for a USB key or a disaster-recovery copy (`docs/CONFIG.md`, "Config bundle (USB key)").
//! What goes in and how it is applied is `backup::bundle_io`'s, shared with the admin page.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use backup::bundle_io;
use backup::config::Config;
use clap::Args;
use zeroize::Zeroizing;

#[derive(Args)]
pub struct ExportArgs {
    /// The box's config file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Where to write the bundle (never overwritten; mode 0600).
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    /// Also carry the master key and the SSH key: the bundle then opens the backups by itself.
    #[arg(long)]
    with_keys: bool,
    /// A file whose first line is the bundle's passphrase (at least 8 characters).
    #[arg(long, value_name = "FILE")]
    passphrase_file: PathBuf,
}

#[derive(Args)]
pub struct ImportArgs {
    /// Where the imported config goes (the box's config; on a fresh box, where to create it). The key
    /// and SSH files are written beside it.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// A file whose first line is the bundle's passphrase.
    #[arg(long, value_name = "FILE")]
    passphrase_file: PathBuf,
    /// The bundle file.
    #[arg(value_name = "PATH")]
    bundle: PathBuf,
}

/// The first line of `file`, without its line ending.
fn first_line_passphrase(file: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let all = Zeroizing::new(
        std::fs::read(file)
            .with_context(|| format!("reading passphrase file {}", file.display()))?,
    );
    let line = all.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Ok(Zeroizing::new(line.to_vec()))
}

pub fn export(a: ExportArgs) -> Result<()> {
    let passphrase = first_line_passphrase(&a.passphrase_file)?;
    bundle_io::check_passphrase(&passphrase)
        .map_err(|e| anyhow!("{}: {e} (its first line)", a.passphrase_file.display()))?;
    if a.out.symlink_metadata().is_ok() {
        anyhow::bail!(
            "{}: already exists (a bundle is never overwritten)",
            a.out.display()
        );
    }
    let config = Config::load(&a.config).map_err(anyhow::Error::msg)?;
    let e = bundle_io::export(&config, a.with_keys, &passphrase).map_err(anyhow::Error::msg)?;
    bundle_io::write_bundle(&a.out, &e.bytes).map_err(anyhow::Error::msg)?;
    println!(
        "wrote {} ({} bytes): the config of {} ({}), {}",
        a.out.display(),
        e.bytes.len(),
        e.box_name,
        bundle_io::describe_target(&config),
        match (e.with_key, e.with_ssh_key) {
            (true, true) =>
                "with the master key and the SSH key: keep it as safe as the key itself",
            (true, false) => "with the master key: keep it as safe as the key itself",
            _ => "without keys",
        }
    );
    for s in &config.shares {
        println!("  share {}: {}", s.name, s.path.display());
    }
    Ok(())
}

pub fn import(a: ImportArgs) -> Result<()> {
    let dest = std::path::absolute(&a.config)
        .with_context(|| format!("{}: cannot make the path absolute", a.config.display()))?;
    let who = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self")
                .map(|m| format!("uid {}", m.uid()))
                .unwrap_or_else(|_| "?".into())
        });
    let source = a.bundle.display().to_string();
    let result = first_line_passphrase(&a.passphrase_file).and_then(|passphrase| {
        let bytes = bundle_io::read_bundle(&a.bundle).map_err(anyhow::Error::msg)?;
        bundle_io::import(&dest, &bytes, &passphrase, &source).map_err(anyhow::Error::msg)
    });
    let line = match &result {
        Ok(i) => format!("imported (command line): {}", i.changes.join("; ")),
        Err(e) => format!("rejected (command line): {e:#}"),
    };
    if let Err(e) = bundle_io::log_attempt(&dest, &who, &source, &line) {
        eprintln!("offsite: {e}");
    }
    for l in &result?.changes {
        println!("{l}");
    }
    Ok(())
}
