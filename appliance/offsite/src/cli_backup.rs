//! `offsite init` and `offsite backup`: the nightly job from the command line.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use backup::config::{Config, DEFAULT_CONFIG, check_share_name};
use backup::progress::Counters;
use backup::{BackupOptions, Progress, ShareStatus};
use clap::Args;
use seal::{MasterKey, Suite};

/// Exit status of a backup where some entries could not be backed up (the snapshots are complete).
pub const EXIT_PARTIAL: u8 = 4;

#[derive(Args)]
pub struct InitArgs {
    /// Where to write the new config (an existing file is never overwritten).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// A share to back up, as NAME=PATH (repeatable).
    #[arg(long, value_name = "NAME=PATH")]
    share: Vec<String>,
    /// Folder on this machine that receives the backups (default: `target/` beside the config).
    #[arg(long, value_name = "DIR")]
    target: Option<PathBuf>,
}

#[derive(Args)]
pub struct BackupArgs {
    /// The config file (see docs/CONFIG.md; `offsite init` writes one).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Back up only this share (repeatable; default: all).
    #[arg(long, value_name = "NAME")]
    share: Vec<String>,
    /// Walk, compare with the index and the target, plan retention; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Passphrase file, for a passphrase-protected key file.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Print the run report as JSON on stdout at the end.
    #[arg(long)]
    json: bool,
    /// Entries per rsync session (five times as many while none is to be read): memory is
    /// proportional to it, not to the number of files.
    #[arg(long, value_name = "N", default_value_t = BackupOptions::default().batch_entries)]
    batch_entries: usize,
}

/// A TOML basic string.
pub(crate) fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(crate) fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_owned()
    } else {
        std::env::current_dir()?.join(p)
    })
}

pub fn init(a: InitArgs) -> Result<()> {
    if a.config.exists() {
        bail!("{} already exists; not overwriting it", a.config.display());
    }
    let config = absolute(&a.config)?;
    let dir = config.parent().unwrap_or(Path::new("/")).to_owned();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let target = absolute(&a.target.unwrap_or_else(|| dir.join("target")))?;
    let target_str = target
        .to_str()
        .with_context(|| format!("{}: the target path must be UTF-8", target.display()))?;
    let mut shares = String::new();
    for s in &a.share {
        let Some((name, path)) = s.split_once('=') else {
            bail!("--share {s:?}: expected NAME=PATH");
        };
        check_share_name(name).map_err(anyhow::Error::msg)?;
        let path = absolute(Path::new(path))?;
        let path = path.to_str().with_context(|| {
            format!(
                "{}: share paths must be UTF-8 in the config",
                path.display()
            )
        })?;
        shares.push_str(&format!(
            "\n[[share]]\nname = {}\npath = {}\n",
            toml_string(name),
            toml_string(path)
        ));
    }
    // The template's quotes surround the placeholder: fill it with the escaped content only.
    let quoted = toml_string(target_str);
    let text = DEFAULT_CONFIG
        .replace("\"@TARGET@\"", &quoted)
        .replace("@SHARES@", &shares);
    // Validate before writing anything.
    let parsed = Config::parse(&config, &text).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    if !parsed.key_file.exists() {
        MasterKey::generate(Suite::for_this_cpu())
            .and_then(|k| k.save_new(&parsed.key_file, None))
            .with_context(|| format!("creating the key file {}", parsed.key_file.display()))?;
        eprintln!(
            "offsite: created the master key {} — keep a copy somewhere safe: without it nothing can be restored",
            parsed.key_file.display()
        );
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&config)
        .with_context(|| format!("writing {}", config.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", config.display()))?;
    eprintln!("offsite: wrote {}", config.display());
    Ok(())
}

pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn counters_line(c: &Counters, secs: f64) -> String {
    let rate = if secs > 0.0 {
        human((c.bytes_read as f64 / secs) as u64)
    } else {
        "-".into()
    };
    format!(
        "{} files ({}), {} unchanged, {} read ({}/s), {} literal, {} matched, {} failed",
        c.files,
        human(c.bytes),
        c.unchanged,
        human(c.bytes_read),
        rate,
        human(c.literal_bytes),
        human(c.matched_bytes),
        c.failed
    )
}

/// The async runtime of the commands that talk to a target (`serve` too): one
/// thread for all the tasks (the SSH session, the rsync protocol, the engine), and at most four blocking
/// threads for the work that takes CPU (reading and sealing files, each thread keeping its buffers for the
/// next file, about 0.5 MiB); the walk has a thread of its own.
///
/// The tasks wait on one another far more than they compute: an SSH data packet went from the session's
/// task to the channel's pump to the protocol, each on whichever worker woke, and every hand-over between
/// two workers was a futex wake and a context switch. On one thread the hand-over is a queue push. Measured
/// against two workers (BENCHMARKS.md, seventeenth session): a session (one batch) costs the box 1.4 ms of
/// CPU instead of 2.2 ms, an unchanged night of 100,000 files 2-4 % less CPU and 0.7 MiB less peak RSS, and
/// an initial backup of 2 GiB less CPU and no more wall time: the SSH cipher now shares its thread with the
/// protocol, whose own work on new files is framing, while the sealing threads stay busy.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The passphrase in `file` (trailing newline and spaces removed), if a file is given.
pub(crate) fn read_passphrase(file: Option<&Path>) -> Result<Option<Vec<u8>>> {
    let Some(f) = file else {
        return Ok(None);
    };
    Ok(Some(
        std::fs::read(f)
            .with_context(|| format!("reading passphrase file {}", f.display()))?
            .trim_ascii_end()
            .to_vec(),
    ))
}

pub fn backup(a: BackupArgs) -> Result<ExitCode> {
    let config = Config::load(&a.config).map_err(anyhow::Error::msg)?;
    let passphrase = read_passphrase(a.passphrase_file.as_deref())?;
    let opts = BackupOptions {
        shares: a.share.clone(),
        dry_run: a.dry_run,
        passphrase,
        batch_entries: a.batch_entries.max(1),
        ..BackupOptions::default()
    };
    let runtime = runtime()?;
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut on_progress = |p: &Progress<'_>| {
        let mut err = std::io::stderr().lock();
        match p {
            Progress::ShareStarted { share, snapshot } => {
                let _ = match snapshot {
                    Some(s) => writeln!(err, "offsite: {share}: backing up into snapshot {s}"),
                    None => writeln!(err, "offsite: {share}: dry run"),
                };
            }
            Progress::Counters { share, counters } if tty => {
                let line = counters_line(counters, started.elapsed().as_secs_f64());
                let _ = write!(err, "\r\x1b[2K{share}: {line}");
            }
            Progress::Counters { .. } => {}
            Progress::Skipped {
                share,
                path,
                reason,
            } => {
                let clear = if tty { "\r\x1b[2K" } else { "" };
                let _ = writeln!(
                    err,
                    "{clear}offsite: {share}: skipped {}: {reason}",
                    String::from_utf8_lossy(path)
                );
            }
            Progress::Remote { share, text } => {
                // The remote's words: a hostile server must not drive the owner's terminal.
                let _ = writeln!(
                    err,
                    "offsite: {share}: remote: {}",
                    terminal_safe(text.trim_end())
                );
            }
            Progress::ShareFinished { report } => {
                let clear = if tty { "\r\x1b[2K" } else { "" };
                let status = match report.status {
                    ShareStatus::Ok => "ok",
                    ShareStatus::Partial => "partial",
                    ShareStatus::Failed => "FAILED",
                    ShareStatus::DryRun => "dry run",
                };
                let _ = writeln!(
                    err,
                    "{clear}offsite: {}: {status}: {} in {:.1} s",
                    report.share,
                    counters_line(&report.counters, report.seconds),
                    report.seconds
                );
                if let Some(e) = &report.error {
                    let _ = writeln!(err, "offsite: {}: {e}", report.share);
                }
                for n in &report.notes {
                    let _ = writeln!(err, "offsite: {}: note: {n}", report.share);
                }
                if !report.pruned.is_empty() {
                    let _ = writeln!(
                        err,
                        "offsite: {}: pruned {}",
                        report.share,
                        report.pruned.join(", ")
                    );
                }
                if !report.would_prune.is_empty() {
                    let _ = writeln!(
                        err,
                        "offsite: {}: would prune {}",
                        report.share,
                        report.would_prune.join(", ")
                    );
                }
            }
        }
    };
    let report = runtime.block_on(backup::run_backup(&config, &opts, &mut on_progress));
    if let Some(e) = &report.error {
        eprintln!("offsite: {e}");
    }
    if a.json {
        let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
        println!("{json}");
    }
    Ok(match report.status() {
        ShareStatus::Ok | ShareStatus::DryRun => ExitCode::SUCCESS,
        ShareStatus::Partial => ExitCode::from(EXIT_PARTIAL),
        ShareStatus::Failed => ExitCode::from(1),
    })
}

/// `s` with control characters (terminal escapes and the like) shown as `\u{..}` escapes; newlines and
/// tabs kept.
fn terminal_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod terminal_tests {
    #[test]
    fn escapes_do_not_reach_the_terminal() {
        assert_eq!(
            super::terminal_safe("a\x1b[2Jb\x07\tc\nd"),
            "a\\u{1b}[2Jb\\u{7}\tc\nd"
        );
    }
}
